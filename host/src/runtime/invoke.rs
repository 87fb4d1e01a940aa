//! The one way a guest callback runs, for agents and isolated jobs alike: arm the store (the
//! full CPU budget, counted from one epoch tick away, then every capability's `before` hook,
//! which may hold the callback behind a [`Gate`]), call, run the `after` hooks whatever the
//! outcome, and classify a failure as a [`Fault`].

use std::time::Duration;

use wasmtime::{AsContextMut, Store, StoreContextMut};

use super::agent::Fault;
use super::limits::CpuMeter;
use super::state::AgentState;
use crate::capabilities::{AllHooks, Gate};

/// Ready the store for one callback.
#[inline]
pub fn arm(store: &mut Store<AgentState>) -> Result<(), Box<Gate>> {
    arm_context(store.as_context_mut())
}

/// [`arm`], on a store's context (a host function has no more).
#[inline]
fn arm_context(mut store: StoreContextMut<'_, AgentState>) -> Result<(), Box<Gate>> {
    let state = store.data_mut();
    state.budget.ticks = 0;
    state.budget.meter.reset();
    store.set_epoch_deadline(1);
    AllHooks::before(store)
}

/// After a callback, whatever its outcome: the `after` hooks, then a failure classified.
#[inline]
pub fn finish<T>(store: &mut Store<AgentState>, outcome: wasmtime::Result<T>, during: &str) -> Result<T, Fault> {
    AllHooks::after(store.as_context_mut());
    classify(store, outcome, during)
}

/// The next item of a batch ([`super::batch`]) is a callback of its own: the full CPU budget
/// from now, a deadline one tick away, the `before` hooks.
#[inline]
pub fn arm_next(store: StoreContextMut<'_, AgentState>) -> Result<(), Box<Gate>> {
    // Within one poll of the batch's call: the CPU meter's segment starts again here too.
    store.data().budget.meter.poll_started();
    arm_context(store)
}

/// A callback's failure classified as a fault (`during`: the callback, for its message).
#[inline]
pub fn classify<T>(store: &mut Store<AgentState>, outcome: wasmtime::Result<T>, during: &str) -> Result<T, Fault> {
    outcome.map_err(|error| {
        if error.downcast_ref::<wasmtime_wasi::I32Exit>().is_some_and(|exit| exit.0 == 0) {
            // WASI `exit(0)`: a normal exit, though the instance unwound like a trap.
            store.data_mut().exited_cleanly = true;
        }
        Fault::from_error(&error, store.data(), during)
    })
}

/// A callback's future, each poll marked on the CPU meter (see [`Budget`](super::limits::Budget)).
pub async fn metered<F: std::future::Future>(meter: &CpuMeter, tick: Duration, callback: F) -> F::Output {
    let mut callback = std::pin::pin!(callback);
    std::future::poll_fn(|context| {
        meter.poll_started();
        let polled = callback.as_mut().poll(context);
        meter.poll_ended(tick);
        polled
    })
    .await
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
    let meter = store.data().budget.meter.clone();
    let tick = store.data().runtime.settings.tick.duration();
    let outcome = metered(&meter, tick, call(store)).await;
    finish(store, outcome, during).map_err(Failed::Fault)
}
