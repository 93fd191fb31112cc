#!/usr/bin/env python3
"""The registry's metrics for vicugna-zh-chat, taken from `vicugna eval`'s REPORT.json:
held-out loss of the base and of the adapter, and the adapter's prompt-suite measures.

    scripts/zh-metrics.py eval/REPORT.json eval/vicugna-zh-chat/metrics.json
"""
import json
import sys

report, out = json.load(open(sys.argv[1], encoding="utf-8")), sys.argv[2]
base, ad = report["runs"][0], report["runs"][1]
n = len(ad["answers"])


def count(run, f):
    return sum(1 for a in run["answers"] if f(a["stats"]))


m = {
    "heldout_loss": round(ad["loss"]["loss"], 4),
    "heldout_loss_base": round(base["loss"]["loss"], 4),
    "heldout_records": ad["loss"]["records"],
    "suite_mostly_chinese": f'{count(ad, lambda s: s["cjk_share"] is None or s["cjk_share"] >= 0.5)}/{n}',
    "suite_ended_on_eos": f'{count(ad, lambda s: s["ended_on_eos"])}/{n}',
}
with open(out, "w", encoding="utf-8") as f:
    json.dump(m, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(json.dumps(m, ensure_ascii=False))
