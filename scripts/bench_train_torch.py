#!/usr/bin/env python3
"""PyTorch + PEFT beside `vicugna bench-train`: the same TinyStories shape, random weights, one
sequence of SEQ tokens with a loss on every position, LoRA r=8 alpha=16 dropout 0.05 on
q_proj/v_proj, AdamW, fp32, one thread. Prints one JSON object (tokens/s, peak RSS)."""
import argparse, json, resource, time

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, get_peft_model

SHAPES = {"stories15M": (288, 768, 6, 6), "stories110M": (768, 2048, 12, 12)}

ap = argparse.ArgumentParser()
ap.add_argument("--shape", default="stories15M")
ap.add_argument("--seq", type=int, default=256)
ap.add_argument("--steps", type=int, default=3)
a = ap.parse_args()
torch.set_num_threads(1)
dim, hidden, layers, heads = SHAPES[a.shape]
cfg = LlamaConfig(vocab_size=32000, hidden_size=dim, intermediate_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=1024,
                  tie_word_embeddings=True, rms_norm_eps=1e-5)
torch.manual_seed(0)
model = LlamaForCausalLM(cfg).float()
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"]))
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
ids = torch.tensor([[(i * 7919) % 31997 + 3 for i in range(a.seq + 1)]])
x, y = ids[:, :-1], ids[:, 1:]


def step():
    opt.zero_grad()
    logits = model(input_ids=x).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    loss.backward()
    opt.step()
    return loss.item()


step()  # warm-up
t0 = time.perf_counter()
for _ in range(a.steps):
    loss = step()
secs = (time.perf_counter() - t0) / a.steps
print(json.dumps({"impl": "pytorch+peft", "torch": torch.__version__, "shape": a.shape, "base": "f32", "seq": a.seq,
                  "threads": torch.get_num_threads(), "step_s": secs, "tokens_per_s": a.seq / secs,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "loss": loss}))
