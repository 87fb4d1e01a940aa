# The entry points a user needs. Each target installs what it needs first (the wasm target).

CARGO ?= cargo
AGENTS := echo ping-pong counter misbehave probe replica worker trader not-an-agent
AGENT_FLAGS := --profile agent --target wasm32-wasip2 $(addprefix -p ,$(AGENTS))
AGORA := target/release/agora

.PHONY: setup build agents run test bench lint clean-cache

setup:
	@rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

build: setup
	$(CARGO) build --release -p agora-host

agents: setup
	$(CARGO) build $(AGENT_FLAGS)

# The tour of the runtime, then the market. ADMIN=127.0.0.1:9464 serves /metrics and /config
# while the tour runs.
run: build agents
	$(AGORA) run $(if $(ADMIN),--admin $(ADMIN)) examples/demo.toml
	$(AGORA) run examples/market.toml

# Lint first: formatting and clippy are part of what CI enforces.
test: setup agents lint
	$(CARGO) test --release -p agora-host -- --test-threads 2

bench: build agents
	$(AGORA) bench

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release -p agora-host --all-targets -- -D warnings
	$(CARGO) clippy $(AGENT_FLAGS) -p agora-guest -- -D warnings

clean-cache:
	rm -rf .agora
