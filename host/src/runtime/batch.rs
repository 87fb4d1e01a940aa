//! Batched delivery: the items waiting in an agent's mailbox handled in one guest entry.
//!
//! An agent built for 0.3.2 exports `handle-batch`. The host calls it with the first item (a
//! message or a notice); the guest handles it as `handle` or `notify` would, then calls the
//! `batch.next` import with the outcome, which settles that item exactly as the end of a
//! `handle` call would (the caller answered, the after-hooks run, the counters updated) and
//! hands out the next item, armed like a fresh callback (its own full CPU budget, the
//! before-hooks, a gate that holds it). The batch ends (`next` hands out none) when the
//! mailbox is empty, when the host has work between callbacks (a stop, a kill, a control such
//! as an upgrade or a hibernation, an exit the agent asked for), when a gate would hold the
//! next callback, after a fatal error, and after `host.max_batch` items, so that one busy agent
//! does not keep its worker thread from the others.
//!
//! Items are taken from the mailbox only when `next` hands them out, so a trap, a budget
//! overrun or a kill in the middle of a batch leaves the rest in the mailbox, where the agent's
//! exit counts them as undelivered, as it would have without batching; every item handed out
//! before was answered when it was reported. Senders see the mailbox drain one item at a time,
//! so `mailbox-full` means what it meant.
//!
//! What a batch saves per item: the guest entry (a fiber for the async call, the export's
//! lookup, the trap handler's setup) and a turn of the agent task's loop; what it keeps: the
//! lowering of each item into the guest's memory and the lifting of its outcome.

use wasmtime::component::{Linker, TypedFunc};
use wasmtime::{AsContextMut, StoreContextMut};

use super::agent::{Delivery, Fault};
use super::state::AgentState;
use crate::bindings::agora::agent::batch::{Item, Outcome};
use crate::capabilities::AllHooks;
use crate::messaging::Inbox;

/// The `batch` interface, as the linker names it.
const INTERFACE: &str = "agora:agent/batch@0.3.2";

/// The guest's `handle-batch` export.
pub type HandleBatch = TypedFunc<(Item,), ()>;

/// What the store keeps about the batch in progress, for the `next` import.
#[derive(Default)]
pub struct Batch {
    /// The agent's mailbox, lent to the store while a batch runs (its instance holds it
    /// otherwise).
    pub(super) inbox: Option<Inbox>,
    /// The item the guest is handling now.
    current: Option<Current>,
    /// Items handed out in this batch, the first included.
    handed_out: u32,
    /// How many were left in the mailbox behind the last item taken (more may have come
    /// since; none can have gone, since only this agent takes from its mailbox).
    left: usize,
    /// The before-hooks ran for the current item and its after-hooks have not yet.
    pub(super) armed: bool,
    /// A reported outcome that ends the agent (a fatal error, a reply it may not send).
    pub(super) fault: Option<Fault>,
}

/// The item being handled: whom to answer, and since when it runs (for the counters).
struct Current {
    /// A message's caller, when it has one (a notice's is `None` too).
    correlation: Option<u64>,
    notice: bool,
    /// Handed out by `next`, not the batch's first.
    batched: bool,
    started: quanta::Instant,
}

impl Batch {
    /// A batch starts with `first` (armed by the caller), `left` waiting behind it, and the
    /// mailbox lent to it.
    pub(super) fn begin(&mut self, first: &Delivery, left: usize, inbox: Inbox) {
        self.inbox = Some(inbox);
        self.left = left;
        self.current = Some(Current::of(first, false, quanta::Instant::now()));
        self.handed_out = 1;
        self.armed = true;
        self.fault = None;
    }

    /// The batch is over: the mailbox back, and the callback the guest was in (`handle` or
    /// `notify`) if it left an item unreported (it trapped, or returned, while handling it).
    pub(super) fn end(&mut self) -> (Option<Inbox>, Option<&'static str>) {
        let unreported = self.current.take().map(|current| if current.notice { "notify" } else { "handle" });
        (self.inbox.take(), unreported)
    }
}

impl Current {
    fn of(delivery: &Delivery, batched: bool, started: quanta::Instant) -> Current {
        let (correlation, notice) = match delivery {
            Delivery::Envelope(envelope) => (envelope.correlation, false),
            Delivery::Notice(_) => (None, true),
        };
        Current { correlation, notice, batched, started }
    }
}

/// A prepared delivery as `handle-batch` and `next` pass it.
pub(super) fn item(delivery: Delivery) -> Item {
    match delivery {
        Delivery::Envelope(envelope) => Item::Message(envelope),
        Delivery::Notice(notice) => Item::Notice(*notice),
    }
}

/// Add the `batch` interface to a linker. Not a capability: it is part of delivery, which
/// every agent has.
pub fn link(linker: &mut Linker<AgentState>) -> wasmtime::Result<()> {
    linker
        .instance(INTERFACE)?
        .func_wrap("next", |store: StoreContextMut<'_, AgentState>, (done,): (Outcome,)| Ok((next(store, done),)))
}

/// `batch.next`: settle the current item with `done`, then hand out the next one, if any.
/// Outside a batch (a guest calling it from `init` or `handle`) it hands out nothing.
fn next(mut store: StoreContextMut<'_, AgentState>, done: Outcome) -> Option<Item> {
    let current = store.data_mut().batch.current.take()?;
    if std::mem::take(&mut store.data_mut().batch.armed) {
        AllHooks::after(store.as_context_mut());
    }
    let state = store.data_mut();
    // One clock read per item: this one's end is the next one's start.
    let now = quanta::Instant::now();
    super::agent::record_handle(state, now.saturating_duration_since(current.started), state.batch.inbox.as_ref());
    if current.batched {
        state.stats.batched_one();
    }
    // Settled as the end of its own `handle` or `notify` call would settle it.
    let settled = if current.notice {
        super::agent::notice_outcome(done).map(|()| None)
    } else {
        super::agent::answer_of(state, current.correlation, done)
    };
    match settled {
        // A caller that gave up is no error of this agent's.
        Ok(Some((correlation, reply))) => {
            let _ = state.capabilities.messaging.answer(correlation, reply);
        }
        Ok(None) => {}
        Err(fault) => {
            state.batch.fault = Some(fault);
            return None;
        }
    }
    if !may_go_on(state) {
        return None;
    }
    // Armed before the item is taken: a gate that would hold it leaves it in the mailbox, for
    // the agent's loop to hold as it holds any callback.
    if super::invoke::arm_next(store.as_context_mut()).is_err() {
        return None;
    }
    let state = store.data_mut();
    state.batch.armed = true;
    let (message, left) = match state.batch.inbox.as_mut()?.try_recv_counted() {
        Ok(taken) => taken,
        // Checked non-empty above, and only this agent takes from its mailbox.
        Err(_) => return None,
    };
    state.batch.left = left;
    let delivery = super::agent::prepare(state, message);
    state.batch.current = Some(Current::of(&delivery, true, now));
    state.batch.handed_out += 1;
    Some(item(delivery))
}

/// Whether another item may follow in this entry.
fn may_go_on(state: &AgentState) -> bool {
    let batch = &state.batch;
    batch.handed_out < state.runtime.max_batch.load(std::sync::atomic::Ordering::Relaxed)
        && (batch.left > 0 || batch.inbox.as_ref().is_some_and(|inbox| !inbox.is_empty()))
        && state.stop.undisturbed()
        && state.exit_requested.is_none()
}

/// Hand what `inbox` holds to the instance in `store` in `handle-batch` entries, as an agent's
/// task would, without the task: the benchmarks' floor under batched delivery. Returns the
/// mailbox and how many entries it took.
pub async fn drain(
    store: &mut wasmtime::Store<AgentState>,
    handle_batch: &HandleBatch,
    mut inbox: Inbox,
) -> wasmtime::Result<(Inbox, u64)> {
    let mut entries = 0;
    while let Ok((message, left)) = inbox.try_recv_counted() {
        super::invoke::arm(store).map_err(|gate| wasmtime::Error::msg(gate.fault.detail))?;
        let delivery = super::agent::prepare(store.data_mut(), message);
        store.data_mut().batch.begin(&delivery, left, inbox);
        let outcome = handle_batch.call_async(&mut *store, (item(delivery),)).await;
        let (lent, _) = store.data_mut().batch.end();
        inbox = lent.expect("the batch gives the mailbox back");
        outcome?;
        entries += 1;
    }
    Ok((inbox, entries))
}
