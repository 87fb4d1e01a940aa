//! The integration tests, one module per area, in one binary. Each drives the real `agora`
//! binary (or the host's Rust API) on real sample agents; `common` is their shared harness.
//! Run one area with a filter: `cargo test --release -p agora-host --test integration -- warm::`.

mod common;

mod admin;
mod batches;
mod chaos;
mod cli;
mod cluster;
mod coordination;
mod crash;
mod dashboard;
mod economics;
mod first_hour;
mod fuzz_corpus;
mod guest_sdks;
mod hibernation;
mod languages;
mod limits;
mod messaging;
mod new_project;
mod operate;
mod outbound;
mod pools;
mod readme;
mod registry;
mod services;
mod soak;
mod supervision;
mod upgrade;
mod warm;
