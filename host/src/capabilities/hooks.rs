//! The hooks through which a capability takes part in every agent's life without the core
//! knowing it: the callback hooks (before a callback, at each epoch tick while it runs, after
//! it, when the agent goes idle, at its exit), the admission of an agent before it starts, and
//! the host's lifecycle events. Billing implements the callback hooks (it meters fuel), the
//! event store and telemetry observe the lifecycle events.
//!
//! Every hook has an empty default, and the composed list calls them statically: a capability
//! without hooks costs nothing on the message path.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store, StoreContextMut};

use crate::bindings::Error;
use crate::manifest::AgentSpec;
use crate::messaging::AgentId;
use crate::runtime::agent::{ExitReason, Fault, FaultKind};
use crate::runtime::state::AgentState;

pub trait Hooks: super::Capability {
    /// Whether its section needs the engines to count fuel (fixed for the host's life).
    fn meters_fuel(_section: &Self::Section) -> bool {
        false
    }

    /// A store was made for an agent or an isolated job (set its fuel policy, say).
    fn setup(_store: &mut Store<AgentState>) {}

    /// Before an agent starts (before its name is registered): refuse it with a reason.
    fn admit(_shared: &Self::Shared, _spec: &AgentSpec) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }

    /// Before each callback (`init`, `handle`, `terminate`, an isolated job's calls): a
    /// [`Gate`] keeps the callback from running until it opens.
    #[inline]
    fn before(_store: StoreContextMut<'_, AgentState>) -> Result<(), Box<Gate>> {
        Ok(())
    }

    /// At each epoch tick of a running callback.
    #[inline]
    fn tick(_store: StoreContextMut<'_, AgentState>) {}

    /// After each callback, whatever its outcome.
    #[inline]
    fn after(_store: StoreContextMut<'_, AgentState>) {}

    /// The agent's mailbox is empty and it waits for the next message.
    #[inline]
    fn idle(_store: StoreContextMut<'_, AgentState>) {}

    /// The agent (or job) is leaving: its last callback has returned (settle its account).
    fn exit(_store: StoreContextMut<'_, AgentState>) {}

    /// A host lifecycle event.
    fn observe(_shared: &Self::Shared, _event: &HostEvent<'_>) {}
}

/// Why a callback cannot run now, and when to try again.
pub struct Gate {
    /// How a start that meets the gate fails.
    pub fault: Fault,
    /// Whether messages are refused until the gate opens (queued ones too); otherwise they are
    /// held in the mailbox.
    pub refuses: bool,
    /// What a refused caller gets.
    pub error: Error,
    /// Notified when the gate may have opened; `None` when it never will.
    pub reopened: Option<Arc<tokio::sync::Notify>>,
    /// The log events that say the agent is held and released (`agent_unpaid`, ...).
    pub held_event: &'static str,
    pub released_event: &'static str,
}

impl Gate {
    pub fn new(kind: FaultKind, detail: impl Into<String>) -> Gate {
        Gate {
            fault: Fault::new(kind, detail),
            refuses: false,
            error: Error::Stopped,
            reopened: None,
            held_event: "agent_held",
            released_event: "agent_released",
        }
    }
}

/// What the host tells the capabilities about its agents and supervisors.
pub enum HostEvent<'a> {
    AgentStarted {
        agent: &'a str,
        id: AgentId,
        module: &'a str,
        took: Duration,
        restarts: u32,
        /// Its instance was a warm one, instantiated ahead.
        warm: bool,
    },
    AgentStartFailed {
        agent: &'a str,
        fault: &'a Fault,
    },
    AgentExited(&'a ExitReport<'a>),
    ChildRestarted {
        agent: &'a str,
        id: AgentId,
        restarts: u32,
        after: &'a str,
    },
    SupervisorStarted {
        supervisor: &'a str,
        id: AgentId,
        children: usize,
    },
    SupervisorFailed {
        supervisor: &'a str,
        id: AgentId,
        fault: &'a Fault,
    },
    SupervisorExited {
        supervisor: &'a str,
        id: AgentId,
        reason: &'a ExitReason,
    },
    /// An upgrade of an agent's code ended: done (`ok`) or rolled back; `report` says how.
    AgentUpgrade {
        agent: &'a str,
        id: AgentId,
        report: &'a serde_json::Value,
        ok: bool,
    },
    /// An idle agent hibernated: its instance is gone, its state kept (in memory, or on disk
    /// for a durable one).
    AgentHibernated {
        agent: &'a str,
        id: AgentId,
        state_bytes: usize,
        durable: bool,
    },
    /// A hibernated agent woke for a message, in `micros`.
    AgentWoken {
        agent: &'a str,
        id: AgentId,
        micros: u64,
    },
    /// The cluster changed: `node_up`, `node_down`, `leader_elected`, `child_assigned`.
    Cluster {
        kind: &'static str,
        detail: &'a serde_json::Value,
    },
}

/// What is known about an agent when it exits.
pub struct ExitReport<'a> {
    pub agent: &'a str,
    pub id: AgentId,
    /// How many times its supervisor had restarted it before this incarnation.
    pub restarts: u32,
    /// Messages accepted into its mailbox and never handled.
    pub undelivered: usize,
    /// Messages (and notices) this incarnation handled, and of those how many within a batch
    /// after its first item.
    pub handled: u64,
    pub batched: u64,
    pub peak_memory: usize,
    pub reason: &'a ExitReason,
}
