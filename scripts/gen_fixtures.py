#!/usr/bin/env python3
"""Generate Vicugna's golden test fixtures from the real reference implementations.

Run once offline (`make fixtures`); the outputs under tests/fixtures/ are committed so CI never
needs torch. Requirements (all from PyPI): torch, transformers, peft, safetensors, sentencepiece,
gguf, numpy, and llama-cpp-python built from its sdist (its vendored llama.cpp supplies the
HF->GGUF converters, the tokenizer test vectors and the reference CPU inference).

Stages:
  tokenizer  llama-spm vocab (llama.cpp's ggml-vocab-llama-spm.gguf) -> sentencepiece model -> HF tokenizer.json
  model      random-weight LLaMA with grouped-query attention + two PEFT adapters, HF reference logits,
             greedy / repetition-penalty / bad-words / beam-search continuations, logits-processor vectors
  tied       a second tiny model: tied embeddings + llama3 rope scaling, HF logits
  quant      gguf-py quantisation vectors (bit-exact) and K-quant dequantisation vectors
  llamacpp   llama.cpp conversion to GGUF F32/Q8_0/Q4_0 + GGUF LoRA, llama.cpp's own logits
  vocab      copy llama.cpp's tokenizer test vectors
  train      PEFT fine-tuning reference (per-step losses, final adapter) and PEFT logits of our adapter
"""
import argparse, json, os, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
LLAMA_CPP = Path(os.environ.get("LLAMA_CPP_DIR", "/tmp/vicugna-fixtures/llama_cpp_python-0.3.36/vendor/llama.cpp"))

PROMPT = "Below is an instruction. 中国的首都是北京，上海在东边。Hello world!"

# fixture model shape: small enough to commit, GQA (4 query heads over 2 kv heads), rows divisible by 32
CFG = dict(vocab_size=32000, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
           rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
           bos_token_id=1, eos_token_id=2, pad_token_id=0)


def init_random(model, seed, lm_std=0.15):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif "lm_head" in name:
                p.copy_(lm_std * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def save_tensors(path, tensors):
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))


def stage_tokenizer():
    import gguf
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2
    out = FIX / "tiny-llama"
    out.mkdir(parents=True, exist_ok=True)
    r = gguf.GGUFReader(str(LLAMA_CPP / "models" / "ggml-vocab-llama-spm.gguf"))
    f = r.fields
    tokens = [bytes(f["tokenizer.ggml.tokens"].parts[i]).decode() for i in f["tokenizer.ggml.tokens"].data]
    scores = [float(f["tokenizer.ggml.scores"].parts[i][0]) for i in f["tokenizer.ggml.scores"].data]
    types = [int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data]
    m = sp_pb2.ModelProto()
    m.trainer_spec.model_type = sp_pb2.TrainerSpec.BPE
    m.trainer_spec.vocab_size = len(tokens)
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.unk_id, m.trainer_spec.bos_id, m.trainer_spec.eos_id, m.trainer_spec.pad_id = 0, 1, 2, -1
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = True
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    for t, s, ty in zip(tokens, scores, types):
        p = m.pieces.add()
        p.piece, p.score, p.type = t, s, ty
    (out / "tokenizer.model").write_bytes(m.SerializeToString())
    # HF's classic LLaMA tokenizer.json: BPE with byte fallback, merges ranked by piece score
    from tokenizers import Tokenizer, models, normalizers, decoders, processors, AddedToken
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for piece, score in zip(tokens, scores):
        for i in range(1, len(piece)):
            l, r = piece[:i], piece[i:]
            if l in vocab and r in vocab:
                merges.append((score, vocab[l], vocab[r], l, r))
    merges.sort(key=lambda m: (-m[0], m[1], m[2]))
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[(m[3], m[4]) for m in merges], unk_token="<unk>",
                              byte_fallback=True, fuse_unk=True))
    tk.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ["<unk>", "<s>", "</s>"]])
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    tk.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>",
        "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False,
        "clean_up_tokenization_spaces": False, "legacy": True}, indent=1))
    # sentencepiece itself is the ground truth for this vocabulary: record its ids for some texts
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    texts = [PROMPT, "", " ", "  leading spaces", "tab\there\nnewline", "中文测试：你好，世界！", "emoji 🦙 and ü",
             "User:你好\n\nAssistant:", "a    b", "Hello, how are you?"]
    vec = [{"text": t, "ids": sp.encode(t)} for t in texts]
    hf = Tokenizer.from_file(str(out / "tokenizer.json"))
    for v in vec:  # our tokenizer.json must agree with sentencepiece before it serves as a fixture
        got = hf.encode(v["text"], add_special_tokens=False).ids
        assert got == v["ids"], (v["text"], got, v["ids"])
    (FIX / "spm_vectors.json").write_text(json.dumps(vec, ensure_ascii=False, indent=1))
    (out / "tokenizer.model").unlink()


def tok():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(FIX / "tiny-llama"))


def apply_procs(scores, ids, procs):
    s = torch.tensor(scores)[None]
    i = torch.tensor(ids)[None]
    for p in procs:
        s = p(i, s)
    return s[0].numpy()


def stage_model():
    from transformers import LlamaConfig, LlamaForCausalLM, GenerationConfig
    from transformers import generation as G
    from peft import LoraConfig, get_peft_model, PeftModel
    torch.manual_seed(0)
    out = FIX / "tiny-llama"
    cfg = LlamaConfig(**CFG, torch_dtype="float32")
    model = LlamaForCausalLM(cfg).eval()
    init_random(model, 1)
    model.save_pretrained(str(out), safe_serialization=True)
    ids = tok()(PROMPT)["input_ids"]
    T = len(ids)
    ref = {"tokens": np.array(ids, dtype=np.int32)}
    with torch.no_grad():
        ref["hf_base"] = model(torch.tensor([ids])).logits[0].numpy()

    def lora(targets, seed, **kw):
        lc = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets, init_lora_weights=True, **kw)
        base = LlamaForCausalLM.from_pretrained(str(out)).eval()
        pm = get_peft_model(base, lc)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_" in n:
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
        return pm.eval()

    seven = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    pa = lora(seven, 2)
    pa.save_pretrained(str(FIX / "lora-a"))
    pb = lora(["q_proj", "v_proj", "down_proj"], 3, use_rslora=True,
              rank_pattern={"layers.1.self_attn.v_proj": 4, "down_proj": 2},
              alpha_pattern={"v_proj": 32})
    pb.save_pretrained(str(FIX / "lora-b"))
    for d in ["lora-a", "lora-b"]:  # stable, machine-independent configs
        cp = FIX / d / "adapter_config.json"
        c = json.loads(cp.read_text())
        c["base_model_name_or_path"] = "tiny-llama"
        c["target_modules"] = sorted(c["target_modules"])
        cp.write_text(json.dumps(c, indent=2) + "\n")  # key order kept: PEFT patterns match first-come
    with torch.no_grad():
        ref["hf_lora_a"] = pa(torch.tensor([ids])).logits[0].numpy()
        ref["hf_lora_b"] = pb(torch.tensor([ids])).logits[0].numpy()
        merged = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(str(out)), str(FIX / "lora-a")).merge_and_unload().eval()
        ref["hf_lora_a_merged"] = merged(torch.tensor([ids])).logits[0].numpy()
        # several adapters at once with weights: PEFT's exact "cat" combination
        mix = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(str(out)), str(FIX / "lora-a"), adapter_name="a")
        mix.load_adapter(str(FIX / "lora-b"), adapter_name="b")
        mix.add_weighted_adapter(["a", "b"], [0.7, 0.5], "mix", combination_type="cat")
        mix.set_adapter("mix")
        ref["hf_mix_a0.7_b0.5"] = mix.eval()(torch.tensor([ids])).logits[0].numpy()

    gens = []
    def gen(name, m, **kw):
        g = m.generate(torch.tensor([ids]), attention_mask=torch.ones(1, T, dtype=torch.long), do_sample=False,
                       pad_token_id=0, **kw)
        gens.append({"name": name, "settings": {k: v for k, v in kw.items()}, "ids": g[0, T:].tolist()})
        return g[0, T:].tolist()
    with torch.no_grad():
        greedy = gen("greedy_base", model, max_new_tokens=24)
        gen("greedy_lora_a", pa, max_new_tokens=24)
        gen("greedy_rep1.3", model, max_new_tokens=24, repetition_penalty=1.3)
        # < 1 rewards tokens already seen: the random model then repeats, exercising both signs
        gen("greedy_rep0.5", model, max_new_tokens=24, repetition_penalty=0.5)
        gen("greedy_lora_a_rep1.5", pa, max_new_tokens=24, repetition_penalty=1.5)
        gen("greedy_bad_words", model, max_new_tokens=24, bad_words_ids=[[greedy[1]], [greedy[3], greedy[4]]])
        eos = greedy[5]
        gen("greedy_min_new_eos", model, max_new_tokens=24, min_new_tokens=8, eos_token_id=eos)
        gen("greedy_stop_eos", model, max_new_tokens=24, eos_token_id=eos)
        # an EOS that beams actually reach, so finished-hypothesis bookkeeping is exercised
        beam = gen("beam3_lp1.0_esTrue_eos2", model, max_new_tokens=10, num_beams=3, length_penalty=1.0, early_stopping=True, eos_token_id=2)
        for e in [beam[3], beam[6]]:
            for nb, lp, es in [(3, 1.0, True), (4, 0.5, False), (3, 2.0, "never"), (2, -1.0, True)]:
                gen(f"beam{nb}_lp{lp}_es{es}_eos{e}", model, max_new_tokens=10, num_beams=nb, length_penalty=lp,
                    early_stopping=es, eos_token_id=e)
    # logits processors on one row (transformers semantics for temperature, top-k, top-p, repetition penalty)
    row = ref["hf_base"][-1].astype(np.float32)
    hist = ids[:8]
    procs = {
        "rep1.5": [G.RepetitionPenaltyLogitsProcessor(1.5)],
        "temp0.7": [G.TemperatureLogitsWarper(0.7)],
        "topk40": [G.TopKLogitsWarper(40)],
        "topp0.9": [G.TopPLogitsWarper(0.9)],
        "rep1.3_temp0.8_topk50_topp0.95": [G.RepetitionPenaltyLogitsProcessor(1.3), G.TemperatureLogitsWarper(0.8),
                                           G.TopKLogitsWarper(50), G.TopPLogitsWarper(0.95)],
    }
    ref["proc_input"] = row
    ref["proc_history"] = np.array(hist, dtype=np.int32)
    for k, p in procs.items():
        ref["proc_" + k] = apply_procs(row, hist, p)
    save_tensors(FIX / "reference.safetensors", ref)
    (FIX / "generations.json").write_text(json.dumps({"prompt": PROMPT, "tokens": ids, "generations": gens}, indent=1))


def stage_tied():
    from transformers import LlamaConfig, LlamaForCausalLM
    out = FIX / "tiny-llama3-tied"
    cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=8,
                      num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=True,
                      rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                      bos_token_id=1, eos_token_id=2, torch_dtype="float32")
    model = LlamaForCausalLM(cfg).eval()
    init_random(model, 5)
    model.save_pretrained(str(out), safe_serialization=True)
    # 80 positions, past original_max_position_embeddings, so every frequency band matters
    ids = [1] + [(7 * i) % 509 + 3 for i in range(79)]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].numpy()
    save_tensors(out / "reference.safetensors", {"tokens": np.array(ids, dtype=np.int32), "logits": logits})


def stage_quant():
    import gguf
    from gguf import quants, GGMLQuantizationType as Q
    rng = np.random.default_rng(7)
    t = {}
    x = rng.standard_normal((16, 256)).astype(np.float32) * rng.uniform(0.01, 10, (16, 1)).astype(np.float32)
    x[3, :32] = 0.0  # all-zero block
    x[4, 5] = 1e4  # outlier
    x[5, :32] = 0.25  # ties
    t["input"] = x
    for q in [Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1]:
        t["q_" + q.name] = quants.quantize(x, q).reshape(-1).view(np.uint8)
    for q in [Q.Q4_K, Q.Q5_K, Q.Q6_K]:
        nb = 8
        bs = gguf.GGML_QUANT_SIZES[q][1]
        raw = rng.integers(0, 256, (nb, bs), dtype=np.uint8)
        # valid, finite f16 scales
        d = (rng.uniform(0.001, 0.1, (nb, 2))).astype(np.float16).view(np.uint8).reshape(nb, 4)
        if q == Q.Q6_K:
            raw[:, bs - 2:] = d[:, :2]
        else:
            raw[:, :4] = d
        t["k_" + q.name] = raw.reshape(-1)
        t["k_" + q.name + "_deq"] = quants.dequantize(raw.reshape(-1), q).reshape(-1).astype(np.float32)
    save_tensors(FIX / "quant_vectors.safetensors", t)


def run(cmd):
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(list(map(str, cmd)), check=True)


def stage_llamacpp():
    from llama_cpp import Llama
    import llama_cpp
    src = FIX / "tiny-llama"
    conv = LLAMA_CPP / "convert_hf_to_gguf.py"
    f32 = FIX / "tiny-llama-f32.gguf"
    run([sys.executable, conv, src, "--outtype", "f32", "--outfile", f32])
    run([sys.executable, conv, src, "--outtype", "q8_0", "--outfile", FIX / "tiny-llama-q8_0.gguf"])
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    rc = llama_cpp.llama_model_quantize(str(f32).encode(), str(FIX / "tiny-llama-q4_0.gguf").encode(), p)
    assert rc == 0, rc
    run([sys.executable, LLAMA_CPP / "convert_lora_to_gguf.py", FIX / "lora-a", "--base", src, "--outtype", "f32",
         "--outfile", FIX / "lora-a.gguf"])
    ids = json.loads((FIX / "generations.json").read_text())["tokens"]
    ref = {}
    for name, path, lora in [("f32", f32, None), ("q8_0", FIX / "tiny-llama-q8_0.gguf", None),
                             ("q4_0", FIX / "tiny-llama-q4_0.gguf", None), ("f32_lora_a", f32, FIX / "lora-a.gguf")]:
        kw = dict(model_path=str(path), logits_all=True, n_ctx=64, n_batch=64, n_threads=1, verbose=False,
                  type_k=0, type_v=0)  # F32 KV cache: llama.cpp defaults to F16, which would blur the comparison
        if lora:
            kw["lora_path"] = str(lora)
        llm = Llama(**kw)
        llm.eval(ids)
        ref["llamacpp_" + name] = np.array(llm.scores[: len(ids)], dtype=np.float32)
        del llm
    save_tensors(FIX / "llamacpp_reference.safetensors", ref)


def stage_vocab():
    d = FIX / "vocab"
    d.mkdir(exist_ok=True)
    for v in ["llama-spm", "qwen2", "llama-bpe"]:
        for ext in ["", ".inp", ".out"]:
            shutil.copy(LLAMA_CPP / "models" / f"ggml-vocab-{v}.gguf{ext}", d)


# Chinese-Vicuna's instruct templates (core/src/prompt.rs)
INSTRUCT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n### Instruction:\n{instruction}\n\n### Response:")
INSTRUCT_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                  "Write a response that appropriately completes the request.\n\n### Instruction:{instruction}"
                  "\n\n### Input:{input}\n\n### Response:")
TRAIN = dict(cutoff=100, micro=2, batch=4, epochs=2, lr=1e-3, warmup=1, max_grad_norm=1.0)


def stage_train():
    """PEFT fine-tuning reference: fp32, AdamW, no dropout, file order, micro-batches of 2 padded on
    the right with gradient accumulation to 4, starting from lora-a; loss = token-mean over each
    optimizer step (Trainer's num_items_in_batch). Then PEFT loads the adapter `vicugna train`
    makes with the same settings and records its logits."""
    import math
    from transformers import LlamaForCausalLM, get_linear_schedule_with_warmup
    from peft import PeftModel
    import torch.nn.functional as F
    d = FIX / "train"
    tk = tok()
    recs = json.loads((d / "alpaca_tiny.json").read_text())
    S = TRAIN
    examples = []
    for r in recs:
        t = INSTRUCT_INPUT if r["input"] else INSTRUCT
        p = t.replace("{instruction}", r["instruction"]).replace("{input}", r["input"])
        ids = [1] + tk(p + r["output"], add_special_tokens=False).input_ids + [2]
        n_prompt = 1 + len(tk(p, add_special_tokens=False).input_ids)
        ids = ids[: S["cutoff"]]
        labels = [-100] * min(n_prompt, len(ids)) + ids[n_prompt:]
        examples.append((ids, labels))
    torch.manual_seed(0)
    base = LlamaForCausalLM.from_pretrained(str(FIX / "tiny-llama"), dtype=torch.float32)
    pm = PeftModel.from_pretrained(base, str(FIX / "lora-a"), is_trainable=True)
    pm.train()
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=S["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    n, micro = len(examples), S["micro"]
    accum = S["batch"] // micro
    spe = math.ceil(math.ceil(n / micro) / accum)
    total = spe * S["epochs"]
    sched = get_linear_schedule_with_warmup(opt, S["warmup"], total)
    log = []
    for step in range(total):
        k = step % spe
        batch = examples[k * accum * micro: min((k + 1) * accum * micro, n)]
        n_tok = sum(sum(1 for l in lab[1:] if l != -100) for _, lab in batch)
        opt.zero_grad()
        total_loss = 0.0
        for m0 in range(0, len(batch), micro):
            mb = batch[m0: m0 + micro]
            L = max(len(i) for i, _ in mb)
            ids = torch.tensor([i + [0] * (L - len(i)) for i, _ in mb])
            att = torch.tensor([[1] * len(i) + [0] * (L - len(i)) for i, _ in mb])
            lab = torch.tensor([l + [-100] * (L - len(l)) for _, l in mb])
            logits = pm(input_ids=ids, attention_mask=att).logits
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1),
                                   ignore_index=-100, reduction="sum") / n_tok
            loss.backward()
            total_loss += loss.item()
        gn = torch.nn.utils.clip_grad_norm_(params, S["max_grad_norm"]).item()
        lr = sched.get_last_lr()[0]
        opt.step()
        sched.step()
        log.append(dict(step=step + 1, loss=total_loss, grad_norm=gn, lr=lr))
        print(log[-1])
    out = d / "peft-trained"
    pm.save_pretrained(str(out))
    cfgp = out / "adapter_config.json"
    c = json.loads(cfgp.read_text())
    c["peft_version"] = "fixture"
    cfgp.write_text(json.dumps(c, indent=2, sort_keys=True))
    # our trainer with the same settings, then PEFT loads its adapter
    ours = d / "vicugna-trained"
    shutil.rmtree(ours, ignore_errors=True)
    run(["cargo", "run", "--release", "-q", "-p", "vicugna-cli", "--bin", "vicugna", "--", "train",
         "--model", FIX / "tiny-llama", "--data", d / "alpaca_tiny.json", "--out", ours,
         "--init-adapter", FIX / "lora-a", "--lora-dropout", "0", "--cutoff-len", str(S["cutoff"]),
         "--micro-batch", str(micro), "--batch", str(S["batch"]), "--epochs", str(S["epochs"]),
         "--lr", str(S["lr"]), "--warmup-steps", str(S["warmup"]), "--max-grad-norm", str(S["max_grad_norm"]),
         "--no-shuffle", "--save-total-limit", "1", "--quiet"])
    for cp in ours.glob("checkpoint-*"):
        shutil.rmtree(cp)
    check = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(str(FIX / "tiny-llama"), dtype=torch.float32),
                                      str(ours)).eval()
    probe = examples[4][0]
    with torch.no_grad():
        ours_logits = check(torch.tensor([probe])).logits[0].numpy()
    save_tensors(d / "reference.safetensors", {"peft_logits_of_vicugna_adapter": ours_logits,
                                               "probe_ids": np.array(probe, dtype=np.int64)})
    (d / "reference.json").write_text(json.dumps(dict(settings=S, examples=[dict(ids=i, labels=l) for i, l in examples],
                                                      steps=log), indent=1))


STAGES = {"tokenizer": stage_tokenizer, "model": stage_model, "tied": stage_tied, "quant": stage_quant,
          "llamacpp": stage_llamacpp, "vocab": stage_vocab,
          "train": stage_train}

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("stages", nargs="*", default=list(STAGES))
    a = ap.parse_args()
    FIX.mkdir(parents=True, exist_ok=True)
    for s in a.stages:
        print(f"== {s}", flush=True)
        STAGES[s]()
