//! Host-side bindings of the `agora:agent` world.
//!
//! Imports are synchronous except the two that wait (`call`, `send-timeout`): a synchronous host
//! function costs less per call, and most messaging calls never wait.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "agent",
    imports: {
        "agora:agent/messaging.call": async,
        "agora:agent/messaging.send-timeout": async,
        "agora:agent/supervision.spawn": async,
        "agora:agent/supervision.stop-child": async,
        "agora:agent/supervision.list-children": async,
        "agora:agent/supervision.run-isolated": async,
    },
    exports: { default: async },
    additional_derives: [PartialEq],
});

pub use agora::agent::types::{Address, Error, PublishReport};
pub use agora::agent::{lifecycle, logging, messaging, registry, supervision, types};
