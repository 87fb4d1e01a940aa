//! Agora: a host for fault-tolerant multi-agent systems in which every agent is a sandboxed
//! WebAssembly component.
//!
//! The modules follow the path of the work: the [`manifest`] says what runs; the [`runtime`]
//! compiles modules and runs each agent as a component instance in its own store and task;
//! [`messaging`] carries messages between mailboxes; the [`registry`] names agents;
//! [`capabilities`] holds the grants and the host services (config, events, telemetry, rate
//! limits, outbound HTTP), each pairing its WIT interface, its manifest section and its state;
//! [`supervision`] runs the supervision trees, links, monitors and isolated jobs (and serves
//! the `supervision` interface); [`admin`] is the host's HTTP endpoint (metrics, config
//! updates); [`cli`] is the `agora` command and [`bench`] its benchmarks.

pub mod admin;
pub mod bench;
pub mod capabilities;
pub mod cli;
pub mod manifest;
pub mod messaging;
pub mod registry;
pub mod runtime;
pub mod supervision;
