#!/usr/bin/env bash
# Build the browser chat app into web/dist: the wasm module (cargo profile `web`), its JS glue
# (wasm-bindgen, `--target web`), the static files, and gzip copies the server sends to browsers
# that accept them. Installs the wasm32 target and the wasm-bindgen CLI matching Cargo.lock if
# missing. Prints the gzipped size of what a browser downloads.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
want=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$want" ]; then
  echo "installing wasm-bindgen-cli $want (found: ${have:-none})"
  cargo install wasm-bindgen-cli --version "$want"
fi
cargo build --profile web --target wasm32-unknown-unknown -p vicugna-web
out=web/dist
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section --out-dir "$out.tmp" target/wasm32-unknown-unknown/web/vicugna_web.wasm
cp web/static/* "$out.tmp/"
for f in "$out.tmp"/*.wasm "$out.tmp"/*.js "$out.tmp"/*.html "$out.tmp"/*.css; do
  gzip -9 -k -n -f "$f"
done
rm -rf "$out"
mv "$out.tmp" "$out"
wasm=$(stat -c %s "$out"/vicugna_web_bg.wasm.gz)
js=$(cat "$out"/*.js.gz | wc -c)
rest=$(cat "$out"/*.html.gz "$out"/*.css.gz | wc -c)
echo "web bundle (gzip): wasm $wasm B, js $js B, html+css $rest B, total $((wasm + js + rest)) B (raw wasm $(stat -c %s "$out"/vicugna_web_bg.wasm) B)"
