#!/usr/bin/env bash
# Single-thread LoRA training throughput and peak memory: `vicugna bench-train` beside PyTorch +
# PEFT (scripts/bench_train_torch.py) on the same shapes, each configuration in its own process.
# PYTHON must have torch, transformers and peft (scripts/fixtures-env.sh makes one).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-/tmp/vicugna-fixtures/venv/bin/python}
STEPS=${STEPS:-3}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
cargo build --release -q -p vicugna-cli --bin vicugna
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), 1 thread, seq 256, LoRA r=8 on q_proj,v_proj"
printf '%-12s %-6s %12s %12s %10s %10s\n' shape base "ours tok/s" "torch tok/s" ratio "MiB ours/torch"
for shape in stories15M stories110M; do
  t=$("$PY" scripts/bench_train_torch.py --shape $shape --steps "$STEPS" 2>/dev/null | tail -1)
  for base in f32 q8_0 q4_0; do
    o=$(./target/release/vicugna bench-train --shape $shape --base $base --steps "$STEPS")
    python3 - "$o" "$t" <<'PY'
import json, sys
o, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{o['shape']:<12} {o['base']:<6} {o['tokens_per_s']:12.0f} {t['tokens_per_s']:12.0f} {o['tokens_per_s']/t['tokens_per_s']:10.2f} "
      f"{o['peak_rss_mib']:6.0f}/{t['peak_rss_mib']:.0f}")
PY
  done
done
