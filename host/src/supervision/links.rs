//! Monitors and links between agents, with Erlang's semantics.
//!
//! A monitor is one-way and one-shot: the watcher gets a `down` notice when the target exits,
//! whatever the reason. A link is two-way: when one side exits with any reason but `normal`, the
//! other ends at once with that reason (a crash reaches it as `linked`, naming the crash),
//! unless it traps exits, in which case it gets an `exit` notice instead; a `normal` exit
//! reaches only a side that traps exits. Supervisors are in the table too, trapping exits as
//! OTP's do, so that they can be monitored and linked. The table is sharded by agent, and an exit
//! touches only the entries of the agents it concerns.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;

use crate::bindings::Error;
use crate::bindings::types::{Down, LinkedExit};
use crate::infra::hashers::IdHasher;
use crate::messaging::{AgentId, Message, Notice, Router};
use crate::runtime::agent::{ExitReason, Fault, FaultKind, StopSignal};

pub const DOWN_TOPIC: &str = "agora:down";
pub const EXIT_TOPIC: &str = "agora:exit";
/// How long a notification may wait for room in a full mailbox before it is reported lost.
const NOTIFY_PATIENCE: Duration = Duration::from_secs(30);

/// The reason a link passed on to a killed agent; read by its task when its kill token fires.
pub type KillCause = Arc<Mutex<Option<ExitReason>>>;

#[derive(Default)]
pub struct Links {
    agents: DashMap<AgentId, Entry, IdHasher>,
    next_ref: std::sync::atomic::AtomicU64,
    /// In a cluster, how an exit reaches a linked agent of another node (`from`, `to`, why).
    pub remote_exit: std::sync::OnceLock<RemoteExit>,
}

/// Sends an exit signal to an agent of another node.
pub type RemoteExit = Box<dyn Fn(AgentId, AgentId, &ExitReason) + Send + Sync>;

struct Entry {
    stop: StopSignal,
    cause: KillCause,
    trap_exits: bool,
    links: HashSet<AgentId>,
    /// Who watches this agent: (monitor ref, watcher).
    watchers: Vec<(u64, AgentId)>,
    /// Whom this agent watches, to clean up when it exits first: (monitor ref, target).
    watching: Vec<(u64, AgentId)>,
}

/// An agent's links and monitors, for operators.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Relations {
    pub links: Vec<AgentId>,
    /// Agents it monitors.
    pub monitoring: Vec<AgentId>,
    /// Agents that monitor it.
    pub monitored_by: Vec<AgentId>,
    pub trap_exits: bool,
}

impl Links {
    pub fn relations(&self, id: AgentId) -> Option<Relations> {
        let entry = self.agents.get(&id)?;
        let mut links: Vec<AgentId> = entry.links.iter().copied().collect();
        links.sort_unstable();
        Some(Relations {
            links,
            monitoring: entry.watching.iter().map(|(_, target)| *target).collect(),
            monitored_by: entry.watchers.iter().map(|(_, watcher)| *watcher).collect(),
            trap_exits: entry.trap_exits,
        })
    }

    pub fn enter(&self, id: AgentId, stop: StopSignal, cause: KillCause) {
        self.enter_trapping(id, stop, cause, false);
    }

    /// Enter a supervisor: it traps exits (a linked agent's exit never ends it; it has no
    /// mailbox, so the notice is dropped, as OTP's supervisor drops an unknown `'EXIT'`).
    pub fn enter_supervisor(&self, id: AgentId, stop: StopSignal) {
        self.enter_trapping(id, stop, KillCause::default(), true);
    }

    fn enter_trapping(&self, id: AgentId, stop: StopSignal, cause: KillCause, trap_exits: bool) {
        let entry =
            Entry { stop, cause, trap_exits, links: HashSet::new(), watchers: Vec::new(), watching: Vec::new() };
        self.agents.insert(id, entry);
    }

    pub fn set_trap_exits(&self, id: AgentId, enabled: bool) {
        if let Some(mut entry) = self.agents.get_mut(&id) {
            entry.trap_exits = enabled;
        }
    }

    /// Returns the monitor's ref. A target that is gone already yields an immediate `noproc`.
    pub fn monitor(&self, router: &Router, watcher: AgentId, target: AgentId) -> u64 {
        let reference = self.next_ref.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let alive = match self.agents.get_mut(&target) {
            Some(mut entry) if target != watcher => {
                entry.watchers.push((reference, watcher));
                true
            }
            _ => false,
        };
        if alive {
            if let Some(mut entry) = self.agents.get_mut(&watcher) {
                entry.watching.push((reference, target));
            }
        } else {
            let down = Down { reference, agent: target, reason: "noproc".into() };
            notify(router, watcher, target, DOWN_TOPIC, Notice::Down(down));
        }
        reference
    }

    /// Returns the target it watched.
    pub fn demonitor(&self, watcher: AgentId, reference: u64) -> Result<AgentId, Error> {
        let target = {
            let mut entry = self.agents.get_mut(&watcher).ok_or(Error::NotFound)?;
            let index = entry.watching.iter().position(|(r, _)| *r == reference).ok_or(Error::NotFound)?;
            entry.watching.swap_remove(index).1
        };
        if let Some(mut entry) = self.agents.get_mut(&target) {
            entry.watchers.retain(|(r, _)| *r != reference);
        }
        Ok(target)
    }

    /// Link `a` (the caller) to `b`. A `b` that is gone already is OTP's `noproc`: a caller that
    /// traps exits gets an `exit` notice with that reason; one that does not gets `not-found`
    /// (OTP's `link/1` fails with `noproc` for a local process).
    pub fn link(&self, router: &Router, a: AgentId, b: AgentId) -> Result<(), Error> {
        if a == b {
            // OTP: linking to oneself does nothing.
            return Ok(());
        }
        // Insert on the target first: if it is gone, nothing changes.
        let Some(mut target) = self.agents.get_mut(&b) else {
            let traps = self.agents.get(&a).is_some_and(|entry| entry.trap_exits);
            if !traps {
                return Err(Error::NotFound);
            }
            notify(router, a, b, EXIT_TOPIC, Notice::Exit(LinkedExit { agent: b, reason: "noproc".into() }));
            return Ok(());
        };
        target.links.insert(a);
        drop(target);
        match self.agents.get_mut(&a) {
            Some(mut entry) => {
                entry.links.insert(b);
                Ok(())
            }
            None => {
                self.unlink(b, a);
                Err(Error::NotFound)
            }
        }
    }

    pub fn unlink(&self, a: AgentId, b: AgentId) {
        if let Some(mut entry) = self.agents.get_mut(&a) {
            entry.links.remove(&b);
        }
        if let Some(mut entry) = self.agents.get_mut(&b) {
            entry.links.remove(&a);
        }
    }

    /// An agent exited: tell its watchers, propagate along its links, forget it.
    pub fn exit(&self, router: &Router, id: AgentId, reason: &ExitReason) {
        let Some((_, entry)) = self.agents.remove(&id) else { return };
        let code = reason.code();
        for (reference, watcher) in entry.watchers {
            if let Some(mut watcher_entry) = self.agents.get_mut(&watcher) {
                watcher_entry.watching.retain(|(r, _)| *r != reference);
            }
            let down = Down { reference, agent: id, reason: code.into() };
            notify(router, watcher, id, DOWN_TOPIC, Notice::Down(down));
        }
        for (reference, target) in entry.watching {
            if let Some(mut target_entry) = self.agents.get_mut(&target) {
                target_entry.watchers.retain(|(r, _)| *r != reference);
            }
        }
        for linked in entry.links {
            let Some(mut other) = self.agents.get_mut(&linked) else {
                // Not here: an agent of another node, if any (a local one that is gone has
                // already left the table).
                if let Some(remote) = self.remote_exit.get() {
                    remote(id, linked, reason);
                }
                continue;
            };
            other.links.remove(&id);
            if other.trap_exits {
                drop(other);
                notify(router, linked, id, EXIT_TOPIC, Notice::Exit(LinkedExit { agent: id, reason: code.into() }));
            } else if !matches!(reason, ExitReason::Normal) {
                *other.cause.lock().unwrap_or_else(|p| p.into_inner()) = Some(passed_on(id, reason));
                other.stop.kill();
            }
        }
    }
}

/// Monitors and links with agents of other nodes (a cluster). The other node holds its half:
/// a watcher or a link partner whose id is not in this table is of another node, and what it
/// must hear (a `down` notice, an exit signal) travels there ([`crate::cluster::signals`]).
impl Links {
    pub fn new_reference(&self) -> u64 {
        self.next_ref.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    /// Local `watcher` monitors `target` of another node under `reference`.
    pub fn watch_remote(&self, watcher: AgentId, reference: u64, target: AgentId) {
        if let Some(mut entry) = self.agents.get_mut(&watcher) {
            entry.watching.push((reference, target));
        }
    }

    /// `watcher` of another node monitors local `target`; false when the target is gone.
    pub fn add_remote_watcher(&self, target: AgentId, reference: u64, watcher: AgentId) -> bool {
        match self.agents.get_mut(&target) {
            Some(mut entry) => {
                entry.watchers.push((reference, watcher));
                true
            }
            None => false,
        }
    }

    pub fn drop_remote_watcher(&self, target: AgentId, reference: u64) {
        if let Some(mut entry) = self.agents.get_mut(&target) {
            entry.watchers.retain(|(r, _)| *r != reference);
        }
    }

    /// A monitor of `watcher` ended (its `down` came from the other node).
    pub fn watched_down(&self, watcher: AgentId, reference: u64) {
        if let Some(mut entry) = self.agents.get_mut(&watcher) {
            entry.watching.retain(|(r, _)| *r != reference);
        }
    }

    /// Link local `a` to `b` of another node (this node's half); false when `a` is gone.
    pub fn link_remote(&self, a: AgentId, b: AgentId) -> bool {
        match self.agents.get_mut(&a) {
            Some(mut entry) => {
                entry.links.insert(b);
                true
            }
            None => false,
        }
    }

    /// An exit signal from `from` (an agent of another node) to local `to`, as a local exit
    /// reaches a linked agent: a notice if it traps exits, else its end unless `normal`.
    pub fn exit_signal(&self, router: &Router, from: AgentId, to: AgentId, reason: &ExitReason) {
        let Some(mut entry) = self.agents.get_mut(&to) else { return };
        entry.links.remove(&from);
        if entry.trap_exits {
            drop(entry);
            let notice = Notice::Exit(LinkedExit { agent: from, reason: reason.code().into() });
            notify(router, to, from, EXIT_TOPIC, notice);
        } else if !matches!(reason, ExitReason::Normal) {
            *entry.cause.lock().unwrap_or_else(|p| p.into_inner()) = Some(passed_on(from, reason));
            entry.stop.kill();
        }
    }

    /// A node went down (`of_node` tells its agents' ids): monitors of its agents fire with
    /// `noconnection`, links to them are exit signals `noconnection`, and its agents' monitors
    /// of ours are forgotten, as Erlang does when a node connection goes down.
    pub fn node_down(&self, router: &Router, of_node: impl Fn(AgentId) -> bool) {
        let reason = ExitReason::Custom("noconnection".into());
        let mut downs = Vec::new();
        let mut signals = Vec::new();
        for mut entry in self.agents.iter_mut() {
            let id = *entry.key();
            entry.watchers.retain(|(_, watcher)| !of_node(*watcher));
            entry.watching.retain(|(reference, target)| {
                let gone = of_node(*target);
                if gone {
                    downs.push((id, *reference, *target));
                }
                !gone
            });
            let lost: Vec<AgentId> = entry.links.iter().copied().filter(|b| of_node(*b)).collect();
            for b in lost {
                entry.links.remove(&b);
                signals.push((b, id));
            }
        }
        for (watcher, reference, target) in downs {
            let down = Down { reference, agent: target, reason: "noconnection".into() };
            notify(router, watcher, target, DOWN_TOPIC, Notice::Down(down));
        }
        for (from, to) in signals {
            self.exit_signal(router, from, to, &reason);
        }
    }
}

/// The reason a non-trapping partner of `id` ends with. OTP passes the reason on unchanged;
/// Agora does so for `shutdown`, `killed` and custom reasons, but a crash reaches the partner
/// as `linked` (the detail names the crash): its own report must not claim a trap it never had.
fn passed_on(id: AgentId, reason: &ExitReason) -> ExitReason {
    match reason {
        ExitReason::Crashed(fault) => ExitReason::Crashed(Fault::new(
            FaultKind::Linked,
            format!("linked agent {id} exited: {}: {}", fault.kind.code(), fault.detail),
        )),
        ExitReason::GaveUp(_) => ExitReason::Shutdown,
        other => other.clone(),
    }
}

/// Deliver a host notification. A full mailbox gets a bounded wait, and a notification that
/// still cannot be delivered is reported, never dropped silently.
fn notify(router: &Router, to: AgentId, about: AgentId, topic: &'static str, notice: Notice) {
    let message = || Message::notice(Some(about), topic.into(), notice.clone());
    match router.try_deliver(to, message()) {
        Ok(()) => {}
        // Not here: an agent of another node hears it there (or a gone one never does).
        Err(Error::NotFound) => router.forward(to, message()),
        Err(_) => {
            let mailbox = router.sender(to);
            let message = message();
            tokio::spawn(async move {
                let delivered = match mailbox {
                    Some(mailbox) => mailbox.send_timeout(message, NOTIFY_PATIENCE).await.is_ok(),
                    None => true,
                };
                if !delivered {
                    tracing::error!(
                        event = "notification_lost",
                        to,
                        about,
                        topic,
                        "a {topic} notification found the mailbox full for {NOTIFY_PATIENCE:?}"
                    );
                }
            });
        }
    }
}
