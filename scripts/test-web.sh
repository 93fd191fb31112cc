#!/usr/bin/env bash
# The browser tests, in headless Chromium with WebGPU on SwiftShader:
#  1. wasm-bindgen-test: the WebGPU backend against the CPU reference inside a dedicated worker;
#  2. the end-to-end chat suite (web/e2e, playwright-core) against the real server and web/dist.
# Needs target/debug/{vicugna,vicugna-server} (`cargo test --workspace --all-targets` builds them).
# Prints cargo-style "test result:" lines so scripts/test.sh counts these tests with the rest.
set -uo pipefail
cd "$(dirname "$0")/.."
export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-900}"
rc=0
bash scripts/build-web.sh || exit 1
cargo test -p vicugna-web --target wasm32-unknown-unknown --test browser -- --nocapture || rc=1
( cd web/e2e && npm ci --no-audit --no-fund --loglevel=error ) || exit 1
log=$(mktemp)
node --test --test-concurrency=1 --test-reporter=spec web/e2e/ 2>&1 | tee "$log"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
pass=$(sed -n 's/^ℹ pass \([0-9]*\)$/\1/p' "$log" | tail -1)
fail=$(sed -n 's/^ℹ fail \([0-9]*\)$/\1/p' "$log" | tail -1)
rm -f "$log"
echo "test result: e2e. ${pass:-0} passed; ${fail:-1} failed"
exit $rc
