//! Host-side bindings of the `agora:agent` world: of `agent-core`, the `agent` world without
//! the optional `handle-batch` export (looked up by [`crate::runtime::batch`] where it exists),
//! so that agents built before 0.3.2 load.
//!
//! Imports are synchronous except those that wait (`call`, `send-timeout`, the registry's
//! names, which may go to another node of a cluster; the supervision
//! calls that start or stop agents, a durable `events.append` or ledger movement, a rate-limit `wait`): a
//! synchronous host function costs less per call, and most calls never wait. `send` stays
//! synchronous (an asynchronous one made 1,000 pairs' messaging ~20% slower); a send to
//! another node waits in place ([`crate::cluster::remote::wait_in_place`]).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "agent-core",
    imports: {
        "agora:agent/messaging.call": async,
        "agora:agent/messaging.send-timeout": async,
        "agora:agent/registry.register": async,
        "agora:agent/registry.unregister": async,
        "agora:agent/registry.lookup": async,
        "agora:agent/supervision.spawn": async,
        "agora:agent/supervision.stop-child": async,
        "agora:agent/supervision.list-children": async,
        "agora:agent/supervision.run-isolated": async,
        "agora:agent/events.append": async,
        "agora:agent/rate-limits.wait": async,
        "agora:agent/locks.acquire": async,
        "agora:agent/barriers.arrive": async,
        "agora:agent/consensus.propose": async,
        "agora:agent/ledger.transfer": async,
        "agora:agent/ledger.hold": async,
        "agora:agent/ledger.release": async,
        "agora:agent/ledger.capture": async,
        "agora:agent/auctions.bid": async,
        "agora:agent/auctions.cancel": async,
        "agora:agent/auctions.wait": async,
        "agora:agent/market.announce": async,
        "agora:agent/market.complete": async,
        "agora:agent/market.fail": async,
        "agora:agent/market.wait": async,
        "agora:agent/pools.checkout": async,
        "agora:agent/pools.checkin": async,
        "agora:agent/pools.status": async,
    },
    exports: { default: async },
    additional_derives: [PartialEq],
});

/// The `agent` world's required exports, by the names the rest of the host uses.
pub use AgentCore as Agent;
pub use AgentCoreIndices as AgentIndices;
pub use AgentCorePre as AgentPre;
pub use agora::agent::types::{Address, Error, PublishReport};
pub use agora::agent::{
    auctions, barriers, batch, config, consensus, election, events, ledger, lifecycle, locks, logging, market,
    messaging, outbound, pools, rate_limits, registry, supervision, telemetry, types,
};
