//! The bounded live set: each engine class has a pool of instance slots (`host.max_agents`,
//! `host.interpreter_agents`), and a start or a wake that finds the pool full first hibernates
//! the least recently used idle agent that can hibernate (Golem's admission rule), then tries
//! again. Only when no agent can make room is the start refused, naming the key to raise.
//!
//! An agent can hibernate when its module exports the state interface or its manifest entry
//! says `stateless = true`, whether or not it has a `hibernate_after`. Such an agent is in its
//! class's candidate set while it has an instance, with the time it last went idle.
//!
//! Finding the least recently used is a scan of the candidates; to keep that off most
//! admissions, one scan keeps the oldest 1/64th (at least 16) in order, and each admission takes
//! the next of those that has not been used since. Stamps only grow, so what was older than
//! every other candidate at the scan still is, unless it was used since: the order is exact.

use std::sync::{Arc, LazyLock, Mutex};

use dashmap::DashMap;
use tokio::sync::oneshot;

use super::agent::StopSignal;
use super::control::Control;
use super::engine::Class;
use super::stats::{AgentStats, Phase};
use crate::infra::hashers::IdHasher;
use crate::messaging::AgentId;

/// A live agent that could hibernate: its counters (phase and last use) and how to ask it.
struct Candidate {
    stats: Arc<AgentStats>,
    stop: StopSignal,
}

#[derive(Default)]
struct ClassSet {
    candidates: DashMap<AgentId, Candidate, IdHasher>,
    /// The oldest idle candidates found by the last scan, the oldest last, with their stamps.
    oldest: Mutex<Vec<(u64, AgentId)>>,
}

#[derive(Default)]
pub struct LiveSet {
    compact: ClassSet,
    interpreter: ClassSet,
}

/// The clock of last uses: nanoseconds since the first use, from the TSC (a few ns to read).
static CLOCK_BASE: LazyLock<quanta::Instant> = LazyLock::new(quanta::Instant::now);

/// A stamp for "used now".
pub fn now_stamp() -> u64 {
    quanta::Instant::now().duration_since(*CLOCK_BASE).as_nanos() as u64
}

impl LiveSet {
    fn class(&self, class: Class) -> &ClassSet {
        match class {
            Class::Compact => &self.compact,
            Class::Interpreter => &self.interpreter,
        }
    }

    /// The agent has an instance and may be asked to hibernate.
    pub fn enter(&self, class: Class, id: AgentId, stats: &Arc<AgentStats>, stop: &StopSignal) {
        stats.last_used.store(now_stamp(), std::sync::atomic::Ordering::Relaxed);
        self.class(class).candidates.insert(id, Candidate { stats: stats.clone(), stop: stop.clone() });
    }

    /// The agent hibernated, exited or cannot hibernate any more.
    pub fn leave(&self, class: Class, id: AgentId) {
        self.class(class).candidates.remove(&id);
    }

    /// Hibernate the least recently used idle candidate of `class`, and wait until its slot is
    /// free. False when no candidate could.
    pub async fn make_room(&self, class: Class, asking: AgentId) -> bool {
        let set = self.class(class);
        loop {
            let Some((stamp, id)) = self.next_oldest(set, asking) else { return false };
            // Claimed by taking it out: no two admissions ask the same agent.
            let Some((_, candidate)) = set.candidates.remove(&id) else { continue };
            let unchanged = candidate.stats.last_used.load(std::sync::atomic::Ordering::Relaxed) == stamp;
            if !unchanged || candidate.stats.phase() != Phase::Idle {
                // Used since the scan: it is not the least recently used any more.
                set.candidates.insert(id, candidate);
                continue;
            }
            let (reply, hibernated) = oneshot::channel();
            candidate.stop.control(Control::Hibernate { reply });
            // Its task answers once its store is gone (true), or that it could not (it got a
            // message meanwhile, its snapshot refused), having put itself back. A request
            // dropped unanswered means the agent ended: its slot is freed, so try again.
            match hibernated.await {
                Ok(true) => {
                    tracing::debug!(event = "agent_evicted", id, class = class.as_str(), "hibernated to make room");
                    return true;
                }
                Ok(false) => {}
                Err(_) => return true,
            }
        }
    }

    /// The next of the oldest idle candidates (not `asking`), scanning again when none is left.
    fn next_oldest(&self, set: &ClassSet, asking: AgentId) -> Option<(u64, AgentId)> {
        let mut oldest = set.oldest.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(next) = oldest.pop() {
            return Some(next);
        }
        let mut idle: Vec<(u64, AgentId)> = set
            .candidates
            .iter()
            .filter(|entry| *entry.key() != asking && entry.value().stats.phase() == Phase::Idle)
            .map(|entry| (entry.value().stats.last_used.load(std::sync::atomic::Ordering::Relaxed), *entry.key()))
            .collect();
        let keep = (idle.len() / 64).max(16).min(idle.len());
        if keep == 0 {
            return None;
        }
        if keep < idle.len() {
            idle.select_nth_unstable(keep - 1);
            idle.truncate(keep);
        }
        // The oldest last, for `pop`.
        idle.sort_unstable_by(|a, b| b.cmp(a));
        let next = idle.pop();
        *oldest = idle;
        next
    }
}
