#!/usr/bin/env bash
# `make bench-llamacpp`: llama.cpp's llama-bench and `vicugna bench` on the same model files in the
# same run, one thread each (taskset -c 0 where available), printing tok/s and our/llama.cpp ratios.
#
# llama.cpp comes from the llama-cpp-python sdist on PyPI (the version the fixtures use), built once
# into $VICUGNA_CACHE/llama.cpp-<version> (default ~/.cache/vicugna): a CPU build with explicit
# AVX2/AVX-512/VNNI flags — GGML_NATIVE builds die with SIGILL on some of these VMs (AMX). About 9
# minutes on 2 cores the first time. Needs cmake (pip install cmake ninja) and a C++ compiler.
#
# Models: Gemma-3 270M Q4_K_M (scripts/fetch-gemma.sh), random-weight TinyStories-110M shapes in Q4_0,
# Q8_0 and F16 (made once by `vicugna bench --write-hf` + `vicugna convert` into $VICUGNA_CACHE/bench-models),
# and any extra GGUF paths given as arguments. The read bandwidth is measured once, in the same run.
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
# random-weight TinyStories-110M shapes (llama2.c's stories110M with the LLaMA-2 vocabulary of the
# fixtures), written as an HF directory and converted by `vicugna convert`: the files llama.cpp
# loads are the ones our converter writes
MODELS="$CACHE/bench-models"
if [ ! -f "$MODELS/stories110M-q8_0.gguf" ] || [ ! -f "$MODELS/stories110M-f16.gguf" ]; then
  mkdir -p "$MODELS"
  rm -rf "$MODELS/stories110M-hf"
  "$VICUGNA_BIN" bench --write-hf "$MODELS/stories110M-hf" --shape stories110M >&2
  cp tests/fixtures/tiny-llama/tokenizer.json "$MODELS/stories110M-hf/"
  for t in q4_0 q8_0 f16; do
    "$VICUGNA_BIN" convert --model "$MODELS/stories110M-hf" --type "$t" --out "$MODELS/stories110M-$t.gguf"
  done
  rm -rf "$MODELS/stories110M-hf"
fi
models=("$(bash scripts/fetch-gemma.sh)" "$MODELS/stories110M-q4_0.gguf" "$MODELS/stories110M-q8_0.gguf" "$MODELS/stories110M-f16.gguf" "$@")
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); 1 thread; prompt $PROMPT, gen $GEN"
printf '%-34s %14s %14s %14s %14s %8s %8s\n' model "ours prefill" "llama prefill" "ours decode" "llama decode" prefill decode
bw=--bandwidth # the first model's run measures it
BW_FILE=$(mktemp); trap 'rm -f "$BW_FILE"' EXIT
for m in "${models[@]}"; do
  ours=$("${pin[@]}" "$VICUGNA_BIN" bench --model "$m" --threads 1 --prompt-len "$PROMPT" --gen "$GEN" $bw --json | tail -1)
  bw=""
  theirs=$("${pin[@]}" "$BENCH" -m "$m" -t 1 -p "$PROMPT" -n "$GEN" -r 2 -o json 2>/dev/null)
  READ_BW=$(cat "$BW_FILE" 2>/dev/null || echo 0) BW_FILE="$BW_FILE" python3 - "$m" "$ours" "$theirs" "$PROMPT" "$GEN" <<'EOF'
import json, os, sys
m, ours, theirs, p, g = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
tps = {(r["n_prompt"], r["n_gen"]): r["avg_ts"] for r in theirs}
lp, ld = tps[(p, 0)], tps[(0, g)]
op, od = ours["prefill_tok_s"], ours["decode_tok_s"]
print(f"{os.path.basename(m):<34} {op:>14.1f} {lp:>14.1f} {od:>14.2f} {ld:>14.2f} {op / lp:>7.2f}x {od / ld:>7.2f}x")
bw = ours.get("read_bandwidth_gb_s") or float(os.environ.get("READ_BW", "0"))
if ours.get("read_bandwidth_gb_s"):
    print(f"  read bandwidth (1 thread, 1 GiB sum): {bw:.1f} GB/s")
    open(os.environ["BW_FILE"], "w").write(str(bw))
if bw:
    gbs = ours["decode_weight_gb_s"]
    print(f"  decode reads {gbs:.2f} GB/s of weights (ours), {gbs / od * ld:.2f} GB/s (llama.cpp): {100 * gbs / bw:.0f}% / {100 * gbs / od * ld / bw:.0f}% of the read bandwidth")
EOF
done
