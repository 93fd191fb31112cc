#!/usr/bin/env bash
# Run the whole test suite and close with one summary line over every test binary
# ("tests: N passed, N failed"), so the result is not read off the last, possibly empty, binary.
set -uo pipefail
# the demo model for the Gemma-3 golden tests and the browser's Gemma test (cached after the first
# download; without it those tests say `skipped:`, and fail under CI=true)
if g=$(bash "$(dirname "$0")/fetch-gemma.sh"); then
  export VICUGNA_GEMMA="$g"
else
  echo "Gemma-3 270M could not be fetched: its tests will be skipped"
fi
log=$(mktemp)
cargo test --workspace --all-targets "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
# the browser app in headless Chromium (WebGPU on SwiftShader): wasm-bindgen-test and the e2e suite
bash scripts/test-web.sh 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
passed=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i+1) ~ /^passed/) s += $i } END { print s + 0 }' "$log")
failed=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i+1) ~ /^failed/) s += $i } END { print s + 0 }' "$log")
rm -f "$log"
echo "tests: ${passed:-0} passed, ${failed:-0} failed"
exit "$rc"
