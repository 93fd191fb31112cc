#!/usr/bin/env bash
# The learning-rate sweep behind vicugna-zh-chat's --lr (make zh-sweep): for each rate, 24
# optimizer steps of the zh-adapter recipe (10 warm-up steps, linear decay to 0 at step 24), then
# the held-out loss on the 100 held-out records. Prints one line per rate, lowest loss wins.
# ~8–10 min per rate on one core.
#
#   scripts/zh-lr-sweep.sh [RATE ...]      default: 3e-4 1e-3 2e-3
set -euo pipefail
cd "$(dirname "$0")/.."
data=target/zh-data
[ -f $data/train.jsonl ] || bash scripts/make-zh-data.sh $data
model=$(bash scripts/fetch-gemma.sh)
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(3e-4 1e-3 2e-3)
for lr in "${rates[@]}"; do
  out=target/zh-sweep/lr$lr
  rm -rf "$out" && mkdir -p "$out"
  start=$(date +%s)
  ./target/release/vicugna train --model "$model" --data $data/train.jsonl --val-data $data/heldout.jsonl \
    --template chat --target-modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \
    --lora-r 8 --lora-alpha 16 --lora-dropout 0.05 --cutoff-len 256 \
    --lr "$lr" --warmup-steps 10 --batch 8 --micro-batch 4 --epochs 1 --max-steps 24 --eval-steps 24 --seed 42 \
    --out "$out" --log-json "$out/log.jsonl" --quiet >/dev/null
  loss=$(python3 -c 'import json,sys; print([json.loads(l)["eval_loss"] for l in open(sys.argv[1]) if "eval_loss" in l][-1])' "$out/log.jsonl")
  echo "lr $lr: held-out loss $loss after 24 steps ($(( $(date +%s) - start )) s)"
done
