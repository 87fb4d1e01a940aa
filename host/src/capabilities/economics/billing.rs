//! Compute billed in fuel: wasmtime counts the fuel each instance burns, and its wallet pays.
//!
//! The store's fuel is what the wallet has paid for and not burned yet. Before each callback,
//! and at each epoch tick of a long one, a store below half a slice (`compute_slice` units)
//! buys whole units from its wallet, at once, to fill the slice. A callback starts only with at
//! least half a slice; otherwise the wallet cannot pay and the unpaid policy applies. A long
//! callback that burns through all its wallet can pay for traps (`out of fuel`) and is reported
//! as `unpaid`. The slice must outlast an epoch tick of compute, or a busy callback runs dry
//! between two top-ups.
//! At exit the whole units left unburned are paid back. A charge leaves the balance the moment
//! it is taken, so no agent ever runs on money it does not have.

use std::sync::Arc;

use wasmtime::{AsContextMut, StoreContextMut};

use crate::runtime::state::AgentState;

/// What one store has bought and burned.
pub struct Meter {
    /// The wallet that pays: the agent's own, or the caller's for an isolated job.
    pub payer: Arc<str>,
    /// Fuel put into the store so far.
    given: u64,
    /// Credits taken from the wallet so far (less paybacks).
    pub charged: u64,
    last_settle: quanta::Instant,
}

/// How often a busy agent's charges are journaled (an idle one's at once).
const SETTLE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl Meter {
    pub fn new(payer: Arc<str>) -> Meter {
        Meter { payer, given: 0, charged: 0, last_settle: quanta::Instant::now() }
    }
}

/// Fuel burned so far by this store.
pub fn fuel_used(store: &mut impl AsContextMut<Data = AgentState>) -> u64 {
    let store = store.as_context_mut();
    let left = store.get_fuel().unwrap_or(0);
    store.data().meter.as_ref().map_or(0, |meter| meter.given.saturating_sub(left))
}

/// Fill the store's fuel up to a slice when it is below half of one. False when it is still
/// below half a slice (its wallet could not pay): the caller applies the unpaid policy. Always
/// true when compute is free.
pub fn arm(mut store: StoreContextMut<'_, AgentState>) -> bool {
    let Some(pricing) = store.data().runtime.services.economics.pricing() else { return true };
    let left = store.get_fuel().unwrap_or(0);
    let half = pricing.slice_fuel() / 2;
    if left >= half {
        return true;
    }
    // Borrowed field by field: no clone of the shared runtime handle on the message path.
    let AgentState { runtime, meter, .. } = store.data_mut();
    let Some(meter) = meter.as_mut() else { return true };
    let ledger = &runtime.services.economics.ledger;
    let wanted = (pricing.slice_fuel() - left).div_ceil(pricing.unit);
    let units = ledger.buy_compute(&meter.payer, pricing.price, wanted);
    meter.charged += units * pricing.price;
    let bought = units * pricing.unit;
    meter.given += bought;
    if meter.last_settle.elapsed() >= SETTLE_EVERY {
        meter.last_settle = quanta::Instant::now();
        ledger.settle_compute(&meter.payer);
    }
    let fuel = left + bought;
    // Fuel can only be set, so the store's counter restarts from `fuel` here.
    let _ = store.set_fuel(fuel);
    fuel >= half
}

/// Journal the charges taken so far (the agent went idle).
pub fn settle(state: &mut AgentState) {
    if let Some(meter) = state.meter.as_mut() {
        meter.last_settle = quanta::Instant::now();
        state.runtime.services.economics.ledger.settle_compute(&meter.payer);
    }
}

/// The store is done: journal its charges and pay back the whole units it did not burn.
pub fn close(mut store: StoreContextMut<'_, AgentState>) {
    let left = store.get_fuel().unwrap_or(0);
    let runtime = store.data().runtime.clone();
    let Some(pricing) = runtime.services.economics.pricing() else { return };
    let Some(meter) = store.data_mut().meter.as_mut() else { return };
    let ledger = &runtime.services.economics.ledger;
    ledger.settle_compute(&meter.payer);
    let unused = left / pricing.unit;
    if unused > 0 {
        let payback = unused * pricing.price;
        meter.given -= unused * pricing.unit;
        meter.charged -= payback;
        ledger.pay_back_compute(&meter.payer, payback);
    }
    let _ = store.set_fuel(left % pricing.unit);
}
