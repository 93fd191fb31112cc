#!/usr/bin/env python3
"""Gemma-3 270M reference fixtures from llama.cpp (tests/fixtures/gemma3/reference.json).

Needs: the model (scripts/fetch-gemma.sh), numpy, gguf, and llama-cpp-python built from its
sdist (scripts/fixtures-env.sh builds it). No torch. Run:

    python scripts/gen_gemma_fixtures.py [MODEL.gguf]

Two llama.cpp runs over the same prompts:
  A  the real Q4_K_M file with llama.cpp's defaults (what a llama.cpp user gets): the quantised
     matrix products round activations to Q8_0/Q8_K, the KV cache is F16;
  B  the same weights dequantised to F32 (gguf-py, bit-identical with ggml) with an F32 KV cache
     and no flash attention: llama.cpp's arithmetic without its activation rounding (its GELU
     still goes through ggml's f16 table).
B checks our architecture; A - B is llama.cpp's own rounding, the yardstick for comparing with A.
Both record, per prompt, llama.cpp's token ids and at every position the top-K token ids of A with
A's and B's logits there; A's and B's greedy continuations of some prompts are recorded too.
"""
import json, os, sys, tempfile
from pathlib import Path

import numpy as np
import gguf
import llama_cpp

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "gemma3" / "reference.json"
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
PROMPTS = [
    "中国的首都是",
    "The capital of France is",
    "Once upon a time, there was a little girl named",
    "请用中文介绍一下长城。",
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n写一首关于春天的诗\n\n### Response:",
]
TOP_K = 24
GREEDY = {0: 32, 1: 32, 3: 32}  # prompt index -> new tokens


def dequantised_copy(src: Path, dst: Path):
    """The GGUF at src with every tensor dequantised to F32 by gguf-py, metadata unchanged."""
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch=arch)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vtype = f.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(name, f.contents(), vtype, sub_type=f.types[-1])
        else:
            w.add_key_value(name, f.contents(), vtype)
    for t in r.tensors:
        if t.tensor_type == gguf.GGMLQuantizationType.F32:
            data = np.array(t.data, dtype=np.float32)
        else:
            data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(t.shape)]
        w.add_tensor(t.name, data.reshape(shape), raw_dtype=gguf.GGMLQuantizationType.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def run(model: Path, **kw):
    llm = llama_cpp.Llama(model_path=str(model), n_ctx=256, n_batch=256, n_threads=os.cpu_count(),
                          logits_all=True, verbose=False, seed=0, **kw)
    out = []
    for i, p in enumerate(PROMPTS):
        ids = llm.tokenize(p.encode("utf-8"), add_bos=True, special=False)
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
        greedy = []
        for _ in range(GREEDY.get(i, 0)):
            t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            greedy.append(t)
            llm.eval([t])
        out.append((ids, logits, greedy))
    return out


def main():
    model = Path(sys.argv[1] if len(sys.argv) > 1 else
                 os.path.expanduser("~/.cache/vicugna/gemma-3-270m-q4_k_m.gguf"))
    a = run(model)
    with tempfile.TemporaryDirectory() as d:
        f32 = Path(d) / "gemma-f32.gguf"
        dequantised_copy(model, f32)
        b = run(f32, type_k=0, type_v=0, flash_attn=False)  # GGML_TYPE_F32 KV cache
    prompts = []
    for text, (ids, la, greedy), (ids_b, lb, greedy_b) in zip(PROMPTS, a, b):
        assert ids == ids_b
        positions = []
        for t in range(len(ids)):
            top = np.argsort(-la[t], kind="stable")[:TOP_K]
            positions.append({
                "top_ids": [int(i) for i in top],
                "a": [float(la[t][i]) for i in top],
                "b": [float(lb[t][i]) for i in top],
                "b_top1": int(np.argmax(lb[t])),
            })
        # llama.cpp's own rounding over this prompt: max |A - B| over the whole vocabulary
        prompts.append({"text": text, "ids": [int(i) for i in ids], "positions": positions,
                        "max_abs_a_minus_b": float(np.max(np.abs(la - lb))), "greedy_a": greedy,
                        "greedy_b": greedy_b})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "model": "gemma-3-270m-q4_k_m.gguf", "model_sha256": SHA256,
        "llama_cpp_python": llama_cpp.__version__, "top_k": TOP_K, "prompts": prompts,
    }, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {OUT}")
    for p in prompts:
        print(f"{p['text'][:24]!r}: {len(p['ids'])} tokens, max|A-B| {p['max_abs_a_minus_b']:.4f}, "
              f"greedy A {p['greedy_a'][:6]} B {p['greedy_b'][:6]}")


if __name__ == "__main__":
    main()
