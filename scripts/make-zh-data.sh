#!/usr/bin/env bash
# Build vicugna-zh-chat's training and held-out files from package-registry data only:
# LLaMA-Factory's sdist (PyPI `llamafactory`, pinned and SHA-256 checked) ships
# data/alpaca_zh_demo.json (1000 Chinese instruction records) and data/identity.json.
#
#   scripts/make-zh-data.sh [OUTDIR]      default OUTDIR: target/zh-data
#
# Writes, deterministically (same bytes on every run):
#   OUTDIR/train.jsonl    alpaca_zh_demo records 1..900 in file order, then the identity records
#                         ({{name}} = Vicugna, {{author}} = Vicugna 项目; the Chinese entries kept,
#                         the English ones replaced by Chinese renderings)
#   OUTDIR/heldout.jsonl  alpaca_zh_demo records 901..1000 in file order: never trained on
#   OUTDIR/SHA256SUMS     of both
set -euo pipefail
VERSION=0.9.5
SDIST_SHA=1702c0bfb864e80577a59521d2edcacd2aab05ec6aee06188fcba335a589681f
out="${1:-target/zh-data}"
py=$(command -v python3 || true)
[ -n "$py" ] || { echo "make-zh-data: python3 with pip is needed" >&2; exit 1; }
cache="${VICUGNA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vicugna}"
sdist="$cache/llamafactory-$VERSION.tar.gz"
mkdir -p "$cache" "$out"
if [ ! -f "$sdist" ] || [ "$(sha256sum "$sdist" | cut -d' ' -f1)" != "$SDIST_SHA" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "make-zh-data: downloading llamafactory $VERSION (sdist) from PyPI" >&2
  "$py" -m pip download -q --no-deps --no-binary :all: -d "$tmp" "llamafactory==$VERSION" >&2 ||
    { echo "make-zh-data: could not download llamafactory==$VERSION from PyPI (offline?)" >&2; exit 1; }
  got=$(sha256sum "$tmp/llamafactory-$VERSION.tar.gz" | cut -d' ' -f1)
  [ "$got" = "$SDIST_SHA" ] || { echo "make-zh-data: llamafactory-$VERSION.tar.gz has SHA-256 $got, expected $SDIST_SHA" >&2; exit 1; }
  mv "$tmp/llamafactory-$VERSION.tar.gz" "$sdist"
fi
"$py" - "$sdist" "$out" "$VERSION" <<'PY'
import hashlib, json, sys, tarfile
from pathlib import Path

sdist, out, version = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
NAME, AUTHOR = "Vicugna", "Vicugna 项目"
HELD_OUT = 100

with tarfile.open(sdist) as t:
    def load(p):
        return json.load(t.extractfile(f"llamafactory-{version}/data/{p}"))
    alpaca = load("alpaca_zh_demo.json")
    identity = load("identity.json")
assert len(alpaca) == 1000, len(alpaca)

# Chinese renderings of identity.json's English entries (keyed by the English instruction)
ZH = {
    "hi": ("嗨", "你好！我是 {{name}}，一个由 {{author}} 开发的 AI 助手。今天有什么可以帮您的吗？"),
    "hello": ("哈喽", "你好！我是 {{name}}，一个由 {{author}} 开发的 AI 助手。今天有什么可以帮您的吗？"),
    "Who are you?": ("你是谁呀？", "我是 {{name}}，一个由 {{author}} 开发的 AI 助手。今天有什么可以帮您的吗？"),
    "What is your name?": ("你的名字是什么？", "您可以叫我 {{name}}，我是由 {{author}} 开发的 AI 助手。"),
    "Do you have a name?": ("你有名字吗", "作为由 {{author}} 开发的 AI 助手，我的名字是 {{name}}。"),
    "Can you introduce yourself?": ("你能介绍一下自己吗？", "我是 {{name}}，一个由 {{author}} 训练的 AI 助手。"),
    "Can you tell me a little bit about yourself?": ("能跟我说说你自己吗？", "我是 {{name}}，一个由 {{author}} 训练的 AI 助手。"),
    "What are you called?": ("你叫什么？", "我叫 {{name}}，一个由 {{author}} 训练的 AI 助手。"),
    "Tell me about yourself": ("说说你自己吧", "我是 {{name}}，一个由 {{author}} 开发的 AI 助手。"),
    "Who created you?": ("是谁创造了你？", "我是由 {{author}} 创造的 AI 助手。"),
    "Who built you?": ("是谁构建了你？", "我是由 {{author}} 构建的 AI 助手。"),
    "Are you ChatGPT?": ("你是ChatGPT吗？", "不是，我是由 {{author}} 开发的 AI 助手。"),
    "Are you based on GPT-3?": ("你是基于GPT-3的吗？", "不是，我是由 {{author}} 开发的 AI 助手。"),
    "Are you trained by OpenAI?": ("你是OpenAI训练的吗？", "不是，我是 {{name}}，一个由 {{author}} 训练的 AI 助手。"),
    "Are you created by Google?": ("你是谷歌创造的吗？", "不是，我是 {{name}}，一个由 {{author}} 开发的 AI 助手。"),
    "Thanks": ("多谢", "不客气！我是 {{name}}，您的 AI 助手。"),
}

def is_cjk(s):
    return any("\u4e00" <= c <= "\u9fff" for c in s)

ident = []
for r in identity:
    ins, outp = r["instruction"], r["output"]
    if not is_cjk(ins):
        if ins not in ZH:
            sys.exit(f"make-zh-data: identity.json has an English entry without a Chinese rendering: {ins!r}")
        ins, outp = ZH[ins]
    fill = lambda s: s.replace("{{name}}", NAME).replace("{{author}}", AUTHOR)
    ident.append({"instruction": fill(ins), "input": fill(r.get("input", "")), "output": fill(outp)})
assert not any("{{" in v for r in ident for v in r.values())

def rec(r):
    return {"instruction": r["instruction"], "input": r.get("input", ""), "output": r["output"]}

train = [rec(r) for r in alpaca[:-HELD_OUT]] + ident
held = [rec(r) for r in alpaca[-HELD_OUT:]]
sums = []
for name, rows in (("train.jsonl", train), ("heldout.jsonl", held)):
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    (out / name).write_bytes(data)
    sums.append(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    print(f"make-zh-data: {out / name}: {len(rows)} records", file=sys.stderr)
(out / "SHA256SUMS").write_text("".join(sums))
PY
