#!/usr/bin/env bash
# Prepare the Python environment for scripts/gen_fixtures.py (everything from PyPI):
# torch, transformers, peft, gguf, sentencepiece, protobuf, and llama-cpp-python built from its
# sdist, whose vendored llama.cpp provides the converters, tokenizer vectors and reference logits.
set -euo pipefail
D=/tmp/vicugna-fixtures
mkdir -p "$D"
[ -x "$D/venv/bin/python" ] || python3 -m venv "$D/venv"
"$D/venv/bin/pip" install -q numpy safetensors sentencepiece protobuf gguf transformers peft torch
V=0.3.36
if [ ! -d "$D/llama_cpp_python-$V" ]; then
  j=https://pypi.org/pypi/llama-cpp-python/json
  url=$(curl -sf "$j" | python3 -c "import json,sys,urllib.parse as u; print(u.urljoin('$j', [x['url'] for x in json.load(sys.stdin)['releases']['$V'] if x['packagetype']=='sdist'][0]))")
  curl -sfL -o "$D/llama.tar.gz" "$url"
  tar -xzf "$D/llama.tar.gz" -C "$D"
fi
"$D/venv/bin/python" -c "import llama_cpp" 2>/dev/null || CMAKE_BUILD_PARALLEL_LEVEL=2 "$D/venv/bin/pip" install "$D/llama.tar.gz"
echo "export LLAMA_CPP_DIR=$D/llama_cpp_python-$V/vendor/llama.cpp"
