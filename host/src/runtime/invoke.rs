//! The one way a guest callback runs, for agents and isolated jobs alike: arm the store (the
//! full CPU budget, counted from one epoch tick away, then every capability's `before` hook,
//! which may hold the callback behind a [`Gate`]), call, run the `after` hooks whatever the
//! outcome, and classify a failure as a [`Fault`].

use wasmtime::{AsContextMut, Store};

use super::agent::Fault;
use super::state::AgentState;
use crate::capabilities::{AllHooks, Gate};

/// Ready the store for one callback.
#[inline]
pub fn arm(store: &mut Store<AgentState>) -> Result<(), Box<Gate>> {
    let state = store.data_mut();
    state.budget.ticks_used = 0;
    store.set_epoch_deadline(1);
    AllHooks::before(store.as_context_mut())
}

/// After a callback, whatever its outcome: the `after` hooks, then a failure classified.
#[inline]
pub fn finish<T>(store: &mut Store<AgentState>, outcome: wasmtime::Result<T>, during: &str) -> Result<T, Fault> {
    AllHooks::after(store.as_context_mut());
    outcome.map_err(|error| Fault::from_error(&error, store.data(), during))
}

/// Why a callback did not complete.
pub enum Failed {
    /// A gate kept it from running.
    Held(Box<Gate>),
    /// It trapped, ran out of budget or hit its memory cap.
    Fault(Fault),
}

/// Run one callback (`during` names it in a fault): arm, call, hooks, classification.
pub async fn run<T>(
    store: &mut Store<AgentState>,
    during: &str,
    call: impl AsyncFnOnce(&mut Store<AgentState>) -> wasmtime::Result<T>,
) -> Result<T, Failed> {
    arm(store).map_err(Failed::Held)?;
    let outcome = call(store).await;
    finish(store, outcome, during).map_err(Failed::Fault)
}
