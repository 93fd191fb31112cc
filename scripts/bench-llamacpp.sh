#!/usr/bin/env bash
# `make bench-llamacpp`: llama.cpp's llama-bench and `vicugna bench` on the same model files in the
# same run, one thread each (taskset -c 0 where available), printing tok/s and our/llama.cpp ratios.
#
# llama.cpp comes from the llama-cpp-python sdist on PyPI (the version the fixtures use), built once
# into $VICUGNA_CACHE/llama.cpp-<version> (default ~/.cache/vicugna): a CPU build with explicit
# AVX2/AVX-512/VNNI flags — GGML_NATIVE builds die with SIGILL on some of these VMs (AMX). About 9
# minutes on 2 cores the first time. Needs cmake (pip install cmake ninja) and a C++ compiler.
#
# Models: Gemma-3 270M Q4_K_M (scripts/fetch-gemma.sh), and any extra GGUF paths given as arguments.
# Set PROMPT (default 64) and GEN (default 32); VICUGNA_BIN to measure a binary built elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.3.36
CACHE="${VICUGNA_CACHE:-$HOME/.cache/vicugna}"
DIR="$CACHE/llama.cpp-$VERSION"
BENCH="$DIR/build/bin/llama-bench"
PROMPT="${PROMPT:-64}"
GEN="${GEN:-32}"

if [ ! -x "$BENCH" ]; then
  command -v cmake >/dev/null || { echo "bench-llamacpp: cmake not found (pip install cmake ninja)" >&2; exit 1; }
  mkdir -p "$DIR"
  if [ ! -f "$DIR/src/CMakeLists.txt" ]; then
    url=$(python3 - "$VERSION" <<'EOF'
import re, sys, urllib.request
v = sys.argv[1]
page = urllib.request.urlopen("https://pypi.org/simple/llama-cpp-python/").read().decode()
m = re.search(r'href="([^"]*llama_cpp_python-%s\.tar\.gz)[^"]*"' % re.escape(v), page)
if not m:
    sys.exit("llama-cpp-python %s: no sdist on PyPI's index" % v)
print(m.group(1))
EOF
)
    echo "bench-llamacpp: downloading $url" >&2
    curl -sSfL "$url" -o "$DIR/sdist.tar.gz"
    tar -xzf "$DIR/sdist.tar.gz" -C "$DIR"
    mv "$DIR/llama_cpp_python-$VERSION/vendor/llama.cpp" "$DIR/src"
    rm -rf "$DIR/llama_cpp_python-$VERSION" "$DIR/sdist.tar.gz"
  fi
  gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
  cmake -S "$DIR/src" -B "$DIR/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
    -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON \
    -DGGML_AVX512_BF16=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
  cmake --build "$DIR/build" --target llama-bench -j "$(nproc)" >&2
fi

if [ -z "${VICUGNA_BIN:-}" ]; then
  cargo build --release -q -p vicugna-cli
  VICUGNA_BIN=target/release/vicugna
fi
pin=(); command -v taskset >/dev/null && pin=(taskset -c 0)
models=("$(bash scripts/fetch-gemma.sh)" "$@")
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); 1 thread; prompt $PROMPT, gen $GEN"
printf '%-34s %14s %14s %14s %14s %8s %8s\n' model "ours prefill" "llama prefill" "ours decode" "llama decode" prefill decode
for m in "${models[@]}"; do
  ours=$("${pin[@]}" "$VICUGNA_BIN" bench --model "$m" --threads 1 --prompt-len "$PROMPT" --gen "$GEN" --json | tail -1)
  theirs=$("${pin[@]}" "$BENCH" -m "$m" -t 1 -p "$PROMPT" -n "$GEN" -r 2 -o json 2>/dev/null)
  python3 - "$m" "$ours" "$theirs" "$PROMPT" "$GEN" <<'EOF'
import json, os, sys
m, ours, theirs, p, g = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
tps = {(r["n_prompt"], r["n_gen"]): r["avg_ts"] for r in theirs}
lp, ld = tps[(p, 0)], tps[(0, g)]
op, od = ours["prefill_tok_s"], ours["decode_tok_s"]
print(f"{os.path.basename(m):<34} {op:>14.1f} {lp:>14.1f} {od:>14.2f} {ld:>14.2f} {op / lp:>7.2f}x {od / ld:>7.2f}x")
EOF
done
