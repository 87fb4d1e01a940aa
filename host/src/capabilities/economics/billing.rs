//! Compute billed in fuel: wasmtime counts the fuel each instance burns, and its wallet pays.
//!
//! The store's fuel is what the wallet has paid for and not burned yet. A callback starts by
//! buying whole units ahead: a slice (`compute_slice` units), or three ticks' burn of an agent
//! that once ran busy, as far as the wallet goes; it starts only with at least half a slice,
//! otherwise the unpaid policy applies. At each epoch tick of a long callback the store buys
//! again what it burned since the last, holding eight times that ahead.
//! A callback that burns through all its wallet can pay for traps (`out of fuel`) and is
//! reported as `unpaid`. When the agent goes idle, and at exit, the whole units left unburned go
//! back to the wallet. A charge leaves the balance the moment it is taken, so no agent ever runs
//! on money it does not have; while a callback runs, what it bought ahead is set aside.
//!
//! What a callback buys at its start must carry it to its first tick: the slice must cover a
//! tick of the agent's fastest compute. A top-up at a tick reaches running code only through
//! the store's fuel reserve (see [`chunk`]).

use std::sync::Arc;

use wasmtime::{AsContextMut, StoreContextMut};

use super::{Economics, UnpaidPolicy};
use crate::bindings::Error;
use crate::capabilities::Member;
use crate::capabilities::hooks::Gate;
use crate::runtime::agent::FaultKind;
use crate::runtime::state::AgentState;

/// The store's meter, when compute has a price.
#[inline]
pub fn meter<'a>(store: &'a StoreContextMut<'_, AgentState>) -> Option<&'a Meter> {
    store.data().capabilities.economics.meter.as_ref()
}

/// The meter and the economy of a store, borrowed side by side.
fn parts(state: &mut AgentState) -> (&Economics, Option<&mut Meter>) {
    (Economics::shared(&state.runtime.services), Economics::state(&mut state.capabilities).meter.as_mut())
}

/// What one store has bought and burned.
pub struct Meter {
    /// The wallet that pays: the agent's own, or the caller's for an isolated job.
    pub payer: Arc<str>,
    /// Fuel put into the store so far.
    given: u64,
    /// Credits taken from the wallet so far (less paybacks).
    pub charged: u64,
    /// `charged` as of the last settlement, once the unburned units went back: what the
    /// agent's counters report, so that a scrape between a purchase and its payback never
    /// counts credits that come back.
    settled: u64,
    last_settle: quanta::Instant,
    /// The store's fuel when last armed, and the most it burned between two ticks: a busy
    /// agent buys ahead three times that, so that its reserve outlasts a late tick.
    at_last_arm: u64,
    per_tick: u64,
}

/// How often a busy agent's charges are journaled (an idle one's at once).
const SETTLE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl Meter {
    pub fn new(payer: Arc<str>) -> Meter {
        Meter {
            payer,
            given: 0,
            charged: 0,
            settled: 0,
            last_settle: quanta::Instant::now(),
            at_last_arm: 0,
            per_tick: 0,
        }
    }
}

/// Fuel handed to running code at a time. A top-up during a long callback (from the epoch
/// callback) can only reach the store's reserve: compiled code keeps the fuel of the chunk it is
/// running in a register and writes it back over whatever the host set, so the chunk's own
/// count is not known then. Between two chunks code stops (out of gas, refilled from the
/// reserve, and yields), so a small chunk makes top-ups take effect at once; what a top-up
/// cannot credit exactly is at most one chunk, and it is never in the agent's favour.
pub fn chunk(pricing: &super::Pricing) -> u64 {
    (pricing.slice_fuel() / 16).clamp(1, 1_000_000)
}

/// Fuel burned so far by this store.
pub fn fuel_used(store: &mut impl AsContextMut<Data = AgentState>) -> u64 {
    let store = store.as_context_mut();
    let left = store.get_fuel().unwrap_or(0);
    meter(&store).map_or(0, |meter| meter.given.saturating_sub(left))
}

/// After a callback: what the store has burned, for the agent's usage and its counters.
pub fn count_fuel(mut store: StoreContextMut<'_, AgentState>) {
    if meter(&store).is_none() {
        return;
    }
    let used = fuel_used(&mut store);
    let state = store.data_mut();
    let economics = Economics::state(&mut state.capabilities);
    economics.fuel_used = used;
    state.stats.compute(used, economics.meter.as_ref().map_or(0, |meter| meter.settled));
}

/// The wallet cannot pay for the next callback: hold the agent until it is funded, refusing
/// its messages meanwhile (`unpaid = "refuse"`) or keeping them queued (`"suspend"`).
pub fn unpaid_gate(store: StoreContextMut<'_, AgentState>) -> Gate {
    let state = store.data();
    let economics = Economics::shared(&state.runtime.services);
    let payer = meter(&store).map_or_else(|| state.name.clone(), |meter| meter.payer.clone());
    let mut gate = Gate::new(FaultKind::Unpaid, format!("wallet {payer:?} cannot pay for the agent's compute"));
    (gate.refuses, gate.error) = (economics.settings.unpaid == UnpaidPolicy::Refuse, Error::Unpaid);
    // A metered agent's wallet is opened at its start; without one nothing can pay.
    gate.reopened = economics.ledger.funded_signal(&payer);
    (gate.held_event, gate.released_event) = ("agent_unpaid", "agent_funded");
    gate
}

/// How many slices (or three-tick burns) a running callback holds ahead.
const AHEAD: u64 = 8;

/// Buy fuel ahead. At the start of a callback, when the store holds less than half of it: a
/// slice, or three ticks' burn of a busy agent if that is more. At a tick (`at_tick`, from the
/// epoch callback): eight times that, buying again what was burned since the last tick. False
/// when it still holds less than half a slice (its wallet could not pay): the caller applies
/// the unpaid policy. Always true when compute is free.
pub fn arm(mut store: StoreContextMut<'_, AgentState>, at_tick: bool) -> bool {
    let left = store.get_fuel().unwrap_or(0);
    // Borrowed field by field: no clone of the shared runtime handle on the message path.
    let (economics, meter) = parts(store.data_mut());
    let (Some(pricing), Some(meter)) = (economics.pricing(), meter) else { return true };
    if at_tick {
        meter.per_tick = meter.per_tick.max(meter.at_last_arm.saturating_sub(left));
    }
    let Some(wanted) = to_buy(&pricing, left, meter.per_tick, at_tick) else {
        meter.at_last_arm = left;
        return true;
    };
    let ledger = &economics.ledger;
    let units = ledger.buy_compute(&meter.payer, pricing.price, wanted);
    meter.charged += units * pricing.price;
    let bought = units * pricing.unit;
    meter.given += bought;
    if meter.last_settle.elapsed() >= SETTLE_EVERY {
        meter.last_settle = quanta::Instant::now();
        ledger.settle_compute(&meter.payer);
    }
    let fuel = left + bought;
    meter.at_last_arm = fuel;
    // Fuel can only be set, so the store's counter restarts from `fuel` here.
    let _ = store.set_fuel(fuel);
    fuel >= pricing.slice_fuel() / 2
}

/// How many units a store holding `left` fuel buys now, if any. A running callback (`at_tick`)
/// stays well ahead of the next tick, which may come late on a loaded host; a start buys less,
/// as what it buys is set aside from the agent's own spending.
fn to_buy(pricing: &super::Pricing, left: u64, per_tick: u64, at_tick: bool) -> Option<u64> {
    let ahead = if at_tick { AHEAD } else { 1 };
    let target = pricing.slice_fuel().max(per_tick.saturating_mul(3)).saturating_mul(ahead);
    let enough = if at_tick { target } else { target / 2 };
    (left < enough).then(|| (target - left).div_ceil(pricing.unit))
}

/// What goes back of `left` unburned fuel: the whole units (their count), and the fuel that
/// stays in the store (less than a unit, already paid for).
fn unburned(pricing: &super::Pricing, left: u64) -> (u64, u64) {
    (left / pricing.unit, left % pricing.unit)
}

/// The agent went idle: give back the whole units it did not burn, and journal its charges.
pub fn settle(mut store: StoreContextMut<'_, AgentState>) {
    if meter(&store).is_none() {
        return;
    }
    let left = store.get_fuel().unwrap_or(0);
    let (economics, meter) = parts(store.data_mut());
    let (Some(pricing), Some(meter)) = (economics.pricing(), meter) else { return };
    let ledger = &economics.ledger;
    let (unused, fuel) = unburned(&pricing, left);
    if unused > 0 {
        let payback = unused * pricing.price;
        meter.given -= unused * pricing.unit;
        meter.charged -= payback;
        ledger.pay_back_compute(&meter.payer, payback);
    }
    meter.last_settle = quanta::Instant::now();
    meter.settled = meter.charged;
    ledger.settle_compute(&meter.payer);
    meter.at_last_arm = fuel;
    let used = meter.given.saturating_sub(fuel);
    let settled = meter.settled;
    let _ = store.set_fuel(fuel);
    store.data().stats.compute(used, settled);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::economics::Pricing;

    /// 2 credits per 1,000 fuel, bought 10 units (10,000 fuel) at a time.
    const PRICING: Pricing = Pricing { price: 2, unit: 1_000, slice: 10 };

    #[test]
    fn a_callback_starts_with_a_slice_unless_it_holds_half_of_one() {
        assert_eq!(to_buy(&PRICING, 0, 0, false), Some(10), "an empty store buys a whole slice");
        assert_eq!(to_buy(&PRICING, 4_999, 0, false), Some(6), "tops up to the slice, in whole units");
        assert_eq!(to_buy(&PRICING, 5_000, 0, false), None, "half a slice is enough to start");
    }

    #[test]
    fn a_busy_callback_holds_eight_times_its_burn_per_tick_ahead() {
        // Burning 20,000 fuel a tick: three ticks' burn (60,000) beats a slice, eight times over.
        assert_eq!(to_buy(&PRICING, 0, 20_000, true), Some(480));
        assert_eq!(to_buy(&PRICING, 479_999, 20_000, true), Some(1), "rounded up to a whole unit");
        assert_eq!(to_buy(&PRICING, 480_000, 20_000, true), None);
        // A slow burner still holds eight slices at a tick, and one at a start.
        assert_eq!(to_buy(&PRICING, 0, 10, true), Some(80));
        assert_eq!(to_buy(&PRICING, 0, 10, false), Some(10));
    }

    #[test]
    fn only_whole_units_go_back_and_the_rest_stays_paid_for() {
        assert_eq!(unburned(&PRICING, 0), (0, 0));
        assert_eq!(unburned(&PRICING, 999), (0, 999));
        assert_eq!(unburned(&PRICING, 12_345), (12, 345));
    }

    #[test]
    fn the_running_chunk_is_a_sixteenth_of_a_slice_within_bounds() {
        assert_eq!(chunk(&PRICING), 625);
        assert_eq!(chunk(&Pricing { price: 1, unit: 1, slice: 1 }), 1);
        assert_eq!(chunk(&Pricing { price: 1, unit: 1_000_000, slice: 1_000 }), 1_000_000);
    }
}
