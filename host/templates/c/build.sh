#!/bin/sh
# Builds {{name}}.wasm: C bindings for the agent world (wit-bindgen), a wasm32-wasi reactor
# (clang and wasi-libc), then a component (wasm-tools, with the WASI preview 1 adapter beside).
set -e
CLANG=${CLANG:-clang-19}
mkdir -p gen
wit-bindgen c wit --world agent --out-dir gen >/dev/null
"$CLANG" --target=wasm32-wasi --sysroot="${WASI_SYSROOT:-/usr}" -O2 -Wall -Werror -mexec-model=reactor \
  -Wl,--export=cabi_realloc -Wl,-zstack-size=65536 -Wl,--strip-debug \
  -I gen -I . -o gen/{{name}}.core.wasm agent.c gen/agent.c gen/agent_component_type.o
wasm-tools component new gen/{{name}}.core.wasm \
  --adapt wasi_snapshot_preview1=wasi_snapshot_preview1.reactor.wasm -o {{name}}.wasm
