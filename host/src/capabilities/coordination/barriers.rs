//! Named, reusable barriers.
//!
//! A barrier's state is its own dashmap entry; the N-th arrival releases the round from inside
//! that entry's shard lock, so every party of a round is released together and none can slip
//! into the next round early. A waiting party holds a guard: if its wait is dropped without an
//! outcome (its agent was killed or crashed meanwhile), the guard breaks the round for everyone
//! still waiting, naming the lost party. Idle barriers are swept every 10 s; round numbers keep
//! increasing across a sweep.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::oneshot;

use crate::infra::hashers::NameHasher;
use crate::messaging::AgentId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BarrierError {
    Timeout,
    /// The named party died while waiting.
    PartyLost(String),
    /// The barrier is open for this many parties.
    Mismatch(u32),
}

struct Party {
    agent: AgentId,
    name: Arc<str>,
    outcome: oneshot::Sender<Result<u64, BarrierError>>,
}

struct Round {
    parties: u32,
    round: u64,
    waiting: Vec<Party>,
}

#[derive(Default)]
pub struct Barriers {
    table: DashMap<String, Round, NameHasher>,
    /// Above every round number a swept barrier reached, so round numbers only increase.
    floor: AtomicU64,
}

/// Breaks the round if the wait ends without an outcome.
struct Waiting<'a> {
    barriers: &'a Barriers,
    barrier: &'a str,
    agent: AgentId,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.barriers.lose(self.barrier, self.agent);
        }
    }
}

impl Barriers {
    /// Arrive at `barrier` and wait (suspending only the caller) for the round to fill.
    pub async fn arrive(
        &self,
        barrier: &str,
        agent: AgentId,
        name: Arc<str>,
        parties: u32,
        timeout: Duration,
    ) -> Result<u64, BarrierError> {
        let (outcome, mut released) = oneshot::channel();
        {
            let mut round = self.table.entry(barrier.to_string()).or_insert_with(|| Round {
                parties,
                round: 1,
                waiting: Vec::new(),
            });
            if round.parties != parties {
                return Err(BarrierError::Mismatch(round.parties));
            }
            round.waiting.retain(|party| !party.outcome.is_closed());
            round.waiting.push(Party { agent, name, outcome });
            if round.waiting.len() as u32 == parties {
                let number = round.round;
                round.round += 1;
                for party in round.waiting.drain(..) {
                    let _ = party.outcome.send(Ok(number));
                }
            }
        }
        let mut waiting = Waiting { barriers: self, barrier, agent, done: false };
        let outcome = tokio::select! {
            outcome = &mut released => outcome.unwrap_or(Err(BarrierError::Timeout)),
            _ = tokio::time::sleep(timeout) => {
                // Closing first: the round either released this party before (taken now) or
                // will not count it.
                released.close();
                released.try_recv().unwrap_or(Err(BarrierError::Timeout))
            }
        };
        waiting.done = true;
        outcome
    }

    /// The names of the parties waiting at `barrier`, in arrival order.
    pub fn waiting(&self, barrier: &str) -> Vec<Arc<str>> {
        self.table.get(barrier).map_or_else(Vec::new, |round| {
            round.waiting.iter().filter(|party| !party.outcome.is_closed()).map(|party| party.name.clone()).collect()
        })
    }

    /// A party died while waiting: everyone else waiting in the round hears who, and the round
    /// starts over.
    fn lose(&self, barrier: &str, agent: AgentId) {
        if let Some(mut round) = self.table.get_mut(barrier) {
            let Some(at) = round.waiting.iter().position(|party| party.agent == agent) else { return };
            let lost = round.waiting.remove(at).name.to_string();
            for party in round.waiting.drain(..) {
                let _ = party.outcome.send(Err(BarrierError::PartyLost(lost.clone())));
            }
        }
    }

    /// A barrier table, swept by the housekeeping thread while it lives.
    pub fn start() -> Arc<Barriers> {
        let barriers = Arc::new(Barriers::default());
        let every = crate::capabilities::rate_limits::SWEEP_EVERY;
        crate::infra::housekeeping::global().sweep(every, Arc::downgrade(&barriers), Barriers::sweep);
        barriers
    }

    /// Forget the barriers nobody waits at, remembering how far their rounds went. A barrier
    /// that comes back takes up the count there, and may be opened for another number of parties.
    pub fn sweep(&self) {
        self.table.retain(|_, round| {
            round.waiting.retain(|party| !party.outcome.is_closed());
            let idle = round.waiting.is_empty();
            if idle {
                self.floor.fetch_max(round.round - 1, Ordering::SeqCst);
            }
            !idle
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn rounds_release_together_and_time_out_alone() {
        let barriers = Arc::new(Barriers::default());
        let arrive = |agent: AgentId, timeout: Duration| {
            let barriers = barriers.clone();
            tokio::spawn(async move { barriers.arrive("b", agent, format!("a{agent}").into(), 3, timeout).await })
        };
        let (first, second) = (arrive(1, LONG), arrive(2, LONG));
        tokio::task::yield_now().await;
        assert_eq!(barriers.arrive("b", 9, "x".into(), 4, LONG).await, Err(BarrierError::Mismatch(3)));
        let third = arrive(3, LONG);
        for party in [first, second, third] {
            assert_eq!(party.await.unwrap(), Ok(1));
        }
        assert_eq!(
            barriers.arrive("c", 1, "a1".into(), 2, Duration::from_millis(50)).await,
            Err(BarrierError::Timeout)
        );
    }

    #[tokio::test]
    async fn a_party_lost_while_waiting_breaks_the_round() {
        let barriers = Arc::new(Barriers::default());
        let waiter = {
            let barriers = barriers.clone();
            tokio::spawn(async move { barriers.arrive("b", 1, "steady".into(), 3, LONG).await })
        };
        let doomed = {
            let barriers = barriers.clone();
            tokio::spawn(async move { barriers.arrive("b", 2, "doomed".into(), 3, LONG).await })
        };
        while barriers.waiting("b").len() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(barriers.waiting("b"), [Arc::from("steady"), Arc::from("doomed")], "in arrival order");
        doomed.abort();
        assert_eq!(waiter.await.unwrap(), Err(BarrierError::PartyLost("doomed".into())));
        assert!(barriers.waiting("b").is_empty(), "a broken round starts over empty");
        assert!(barriers.waiting("never").is_empty());
    }
}
