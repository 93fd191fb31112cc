#!/usr/bin/env bash
# Plot a `vicugna train --log-json` file: training loss per step and held-out (eval) loss.
#
#   scripts/plot-loss.sh LOG.jsonl OUT.png [BASE_LOSS]
#
# BASE_LOSS (optional) draws the base model's held-out loss as a horizontal line.
# matplotlib comes from PyPI into a cached virtual environment (${VICUGNA_CACHE:-~/.cache/vicugna}/plot-venv).
set -euo pipefail
log="$1" png="$2" base="${3:-}"
cache="${VICUGNA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vicugna}"
venv="$cache/plot-venv"
if ! "$venv/bin/python" -c "import matplotlib" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "matplotlib>=3.8"
fi
"$venv/bin/python" - "$log" "$png" "$base" <<'PY'
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

log, png, base = sys.argv[1], sys.argv[2], sys.argv[3]
train, held = [], []
for line in open(log, encoding="utf-8"):
    r = json.loads(line)
    if "loss" in r:
        train.append((r["step"], r["loss"]))
    if "eval_loss" in r:
        held.append((r["step"], r["eval_loss"]))
fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
ax.plot(*zip(*train), label="training loss (per optimizer step)", lw=1.2)
if held:
    ax.plot(*zip(*held), "o-", label="held-out loss (100 alpaca_zh records)", lw=1.5)
if base:
    ax.axhline(float(base), color="gray", ls="--", lw=1, label=f"base model, held-out ({float(base):.3f})")
ax.set_xlabel("optimizer step")
ax.set_ylabel("token-mean cross-entropy (response tokens)")
ax.set_title("vicugna-zh-chat: LoRA r=8 on Gemma-3 270M (Q4_K_M base)")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(png)
print(f"plot-loss: {png}", file=sys.stderr)
PY
