//! Agora: a host for fault-tolerant multi-agent systems in which every agent is a sandboxed
//! WebAssembly component.
//!
//! # Architecture
//!
//! The modules follow the path of the work: the [`manifest`] says what runs; the [`runtime`]
//! compiles modules and runs each agent as a component instance in its own store and task;
//! [`messaging`] carries messages between mailboxes; the [`registry`] names agents;
//! [`supervision`] runs the supervision trees, links, monitors and isolated jobs; [`admin`] is
//! the host's HTTP endpoint (metrics, config updates); [`cli`] is the `agora` command and
//! [`bench`] its benchmarks; [`infra`] holds what they share and no capability owns (the durable
//! stores' plumbing, the hashers, the housekeeping thread); [`bindings`] is the host's side of the
//! WIT contract.
//!
//! Every host service an agent reaches through WIT is a **capability** ([`capabilities`]): one
//! type implementing [`capabilities::Capability`] (its grant, its manifest section, its shared
//! state built at start, its per-agent state built when an agent enters and ended when it
//! leaves, the interfaces it links) and [`capabilities::hooks::Hooks`] (the callback hooks
//! billing uses, the lifecycle events the event store and telemetry observe). One list,
//! `compose!` in `capabilities/mod.rs`, turns them into the host's `Services`, each agent's
//! `AgentCapabilities`, the manifest's `ServiceSections`, the grant names, the linker, the
//! cleanup at exit and the hooks. The interfaces are served on small views
//! ([`capabilities::View`]) that borrow only the caller's identity, the host, and the
//! capability's own state, as wasmtime-wasi does.
//!
//! The dependencies point one way: capabilities use the core (runtime, messaging, registry,
//! supervision); the core reaches capabilities only through the composed list and its hooks,
//! and names none of them. Adding a capability is a folder under `capabilities/` and a line in
//! the list (the README's "Adding a capability" has the steps).

pub mod admin;
pub mod bench;
pub mod bindings;
pub mod capabilities;
pub mod cli;
pub mod cluster;
#[doc(hidden)]
pub mod fuzzing;
pub mod infra;
pub mod manifest;
pub mod messaging;
pub mod registry;
pub mod runtime;
pub mod supervision;
