#!/usr/bin/env bash
# After `vicugna train` has written vicugna-zh-chat into OUT (make zh-adapter): copy the adapter
# (PEFT directory + GGUF LoRA) and its training log into eval/vicugna-zh-chat, and plot the loss
# curve into eval/loss.png (matplotlib in a cached virtual environment).
#
#   scripts/zh-adapter-finish.sh [OUT]     default OUT: target/vicugna-zh-chat
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/vicugna-zh-chat}"
dst=eval/vicugna-zh-chat
for f in adapter_config.json adapter_model.safetensors vicugna-zh-chat.gguf; do
  [ -f "$out/$f" ] || { echo "zh-adapter-finish: $out/$f is missing (has training finished?)" >&2; exit 1; }
done
mkdir -p "$dst"
cp "$out/adapter_config.json" "$out/adapter_model.safetensors" "$dst/"
cp "$out/vicugna-zh-chat.gguf" "$dst/"
cp "$out/log.jsonl" eval/train-log.jsonl
bash scripts/plot-loss.sh eval/train-log.jsonl eval/loss.png
echo "zh-adapter-finish: $dst, eval/train-log.jsonl, eval/loss.png" >&2
