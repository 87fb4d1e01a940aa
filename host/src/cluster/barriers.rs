//! Cluster-wide barriers: parties on any node meet at one barrier name.
//!
//! Each barrier is a key of the barriers bucket: its party count, its round number, who waits
//! (with their nodes' incarnations) and what ended the last few waits. An arrival is a
//! compare-and-swap that adds the party; the one that fills the round writes its release
//! instead (the waiting list emptied, the round number raised), so all parties of a round are
//! released by one write and none slips into the next. Each write that ends a wait advances the
//! barrier's epoch and records why (released in round n, or broken by a lost party); a waiter
//! knows the epoch it arrived in, and its wait ends with the first outcome after it.
//!
//! A party lost while waiting (its agent exited, or its node went down) breaks the round for the
//! others, as on a host alone; a party that times out leaves quietly. Unlike a host alone, a
//! barrier nobody waits at may be opened again for another number of parties at once (a host
//! alone forgets idle barriers every few seconds).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Cluster;
use crate::capabilities::coordination::barriers::BarrierError;
use crate::messaging::AgentId;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Party {
    pub agent: AgentId,
    pub name: String,
    pub node: String,
    pub incarnation: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Ended {
    Released(u64),
    Lost(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BarrierRecord {
    pub parties: u32,
    pub round: u64,
    pub waiting: Vec<Party>,
    pub epoch: u64,
    /// The last outcomes, by epoch (a waiter slow to look still finds its own).
    pub ended: Vec<(u64, Ended)>,
}

/// How many past outcomes a barrier keeps.
const HISTORY: usize = 16;
const RACES: usize = 64;

impl BarrierRecord {
    fn new(parties: u32) -> BarrierRecord {
        BarrierRecord { parties, round: 1, waiting: Vec::new(), epoch: 0, ended: Vec::new() }
    }

    /// End the current wait for everyone in it.
    fn end(&mut self, how: Ended) {
        self.waiting.clear();
        self.epoch += 1;
        self.ended.push((self.epoch, how));
        if self.ended.len() > HISTORY {
            self.ended.remove(0);
        }
    }

    /// How the wait that began in `epoch` ended, if it did.
    fn outcome_since(&self, epoch: u64) -> Option<Result<u64, BarrierError>> {
        if self.epoch <= epoch {
            return None;
        }
        let ended = self.ended.iter().find(|(e, _)| *e == epoch + 1).map(|(_, how)| how);
        Some(match ended {
            Some(Ended::Released(round)) => Ok(*round),
            Some(Ended::Lost(party)) => Err(BarrierError::PartyLost(party.clone())),
            // Too far back to tell: the round it waited in is over either way.
            None => Err(BarrierError::Timeout),
        })
    }
}

pub(super) type BarrierTable = std::collections::HashMap<String, (BarrierRecord, u64)>;

fn barrier_key(name: &str) -> String {
    format!("b.{}", super::hex(name))
}

fn key_barrier(key: &str) -> Option<String> {
    super::unhex(key.strip_prefix("b.")?)
}

fn unreachable(error: impl std::fmt::Display) -> BarrierError {
    // WIT 0.3's barrier error has no case for it: reported as a timeout of this party's wait.
    tracing::warn!(event = "cluster_unreachable", what = "barriers", %error);
    BarrierError::Timeout
}

/// Ends a wait that was dropped (its agent killed) by breaking its round, in the background.
struct Waiting<'a> {
    cluster: &'a Arc<Cluster>,
    barrier: &'a str,
    agent: AgentId,
    epoch: u64,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.done {
            let (cluster, barrier, agent, epoch) =
                (self.cluster.clone(), self.barrier.to_string(), self.agent, self.epoch);
            tokio::spawn(async move { cluster.barrier_leave(&barrier, agent, epoch, true).await });
        }
    }
}

impl Cluster {
    async fn read_barrier(&self, key: &str) -> Result<(Option<BarrierRecord>, u64), BarrierError> {
        match self.barriers.entry(key).await.map_err(unreachable)? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                Ok((serde_json::from_slice(&entry.value).ok(), entry.revision))
            }
            Some(entry) => Ok((None, entry.revision)),
            None => Ok((None, 0)),
        }
    }

    async fn write_barrier(&self, key: &str, record: &BarrierRecord, revision: u64) -> Result<bool, BarrierError> {
        let value = Bytes::from(serde_json::to_vec(record).expect("a barrier serializes"));
        match super::put_expecting(&self.js, &self.barriers, key, value, revision, None).await {
            Ok(_) => Ok(true),
            Err(super::PutError::Conflict) => Ok(false),
            Err(super::PutError::Failed(error)) => Err(unreachable(error)),
        }
    }

    /// Parties of nodes that are down are lost: their round breaks.
    fn break_for_gone(&self, record: &mut BarrierRecord) -> bool {
        let gone = record.waiting.iter().find(|p| !self.is_live(&p.node, p.incarnation)).map(|p| p.name.clone());
        if let Some(party) = gone {
            record.end(Ended::Lost(party));
            return true;
        }
        false
    }

    /// Arrive at `barrier` and wait for the round to fill.
    pub async fn barrier_arrive(
        self: &Arc<Self>,
        barrier: &str,
        agent: AgentId,
        name: &str,
        parties: u32,
        timeout: Duration,
    ) -> Result<u64, BarrierError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let key = barrier_key(barrier);
        let me =
            Party { agent, name: name.to_string(), node: self.settings.node.clone(), incarnation: self.incarnation };
        let mut arrived = None;
        for _ in 0..RACES {
            let (record, revision) = self.read_barrier(&key).await?;
            let mut record = record.unwrap_or_else(|| BarrierRecord::new(parties));
            self.break_for_gone(&mut record);
            if record.waiting.is_empty() {
                record.parties = parties;
            } else if record.parties != parties {
                return Err(BarrierError::Mismatch(record.parties));
            }
            record.waiting.retain(|p| p.agent != agent);
            record.waiting.push(me.clone());
            let epoch = record.epoch;
            let filled = record.waiting.len() as u32 == parties;
            let round = record.round;
            if filled {
                record.round += 1;
                record.end(Ended::Released(round));
            }
            if self.write_barrier(&key, &record, revision).await? {
                if filled {
                    return Ok(round);
                }
                arrived = Some(epoch);
                break;
            }
        }
        let Some(epoch) = arrived else { return Err(unreachable("the barrier kept changing")) };
        let mut waiting = Waiting { cluster: self, barrier, agent, epoch, done: false };
        loop {
            let changed = self.barrier_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let seen = self.barrier_table.lock().expect("barriers").get(&key).map(|(r, _)| r.clone());
            if let Some(outcome) = seen.as_ref().and_then(|r| r.outcome_since(epoch)) {
                waiting.done = true;
                return outcome;
            }
            if seen.is_some_and(|r| r.waiting.iter().any(|p| !self.is_live(&p.node, p.incarnation))) {
                // A party's node went down: break the round (by compare-and-swap, once).
                let _ = self.barrier_leave(barrier, 0, epoch, true).await;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                waiting.done = true;
                // Leaving quietly, unless the round ended first (then that is the outcome).
                return match self.barrier_leave(barrier, agent, epoch, false).await {
                    Some(outcome) => outcome,
                    None => Err(BarrierError::Timeout),
                };
            }
            let wake = deadline.min(now + self.settings.heartbeat);
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Take `agent` out of the wait that began in `epoch`: quietly (a timeout), or breaking the
    /// round for the others (`lost`; agent 0: whichever party's node is gone). If that wait
    /// ended already, its outcome.
    async fn barrier_leave(
        &self,
        barrier: &str,
        agent: AgentId,
        epoch: u64,
        lost: bool,
    ) -> Option<Result<u64, BarrierError>> {
        let key = barrier_key(barrier);
        for _ in 0..RACES {
            let (Some(mut record), revision) = self.read_barrier(&key).await.ok()? else { return None };
            if let Some(outcome) = record.outcome_since(epoch) {
                return Some(outcome);
            }
            let changed = if agent == 0 {
                self.break_for_gone(&mut record)
            } else {
                let at = record.waiting.iter().position(|p| p.agent == agent)?;
                let party = record.waiting.remove(at);
                if lost {
                    record.end(Ended::Lost(party.name));
                }
                true
            };
            if !changed {
                return None;
            }
            match self.write_barrier(&key, &record, revision).await {
                Ok(true) => return None,
                Ok(false) => continue,
                Err(_) => return None,
            }
        }
        None
    }

    /// The names of the parties waiting at `barrier`, as followed.
    pub fn barrier_waiting(&self, barrier: &str) -> Vec<String> {
        let table = self.barrier_table.lock().expect("barriers");
        table
            .get(&barrier_key(barrier))
            .map_or_else(Vec::new, |(r, _)| r.waiting.iter().map(|p| p.name.clone()).collect())
    }

    /// Barriers with parties of nodes that are down: broken (by the leader).
    pub(super) async fn break_dead_barriers(&self) {
        let stale: Vec<(String, u64)> = {
            let table = self.barrier_table.lock().expect("barriers");
            table
                .iter()
                .filter(|(_, (r, _))| r.waiting.iter().any(|p| !self.is_live(&p.node, p.incarnation)))
                .filter_map(|(key, (r, _))| Some((key_barrier(key)?, r.epoch)))
                .collect()
        };
        for (barrier, epoch) in stale {
            self.barrier_leave(&barrier, 0, epoch, true).await;
        }
    }

    pub(super) fn apply_barrier(&self, entry: kv::Entry) {
        {
            let mut table = self.barrier_table.lock().expect("barriers");
            match entry.operation {
                kv::Operation::Put => {
                    if let Ok(record) = serde_json::from_slice(&entry.value) {
                        table.insert(entry.key, (record, entry.revision));
                    }
                }
                kv::Operation::Delete | kv::Operation::Purge => {
                    table.remove(&entry.key);
                }
            }
        }
        self.barrier_changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_ends_with_the_first_outcome_after_its_arrival() {
        let mut record = BarrierRecord::new(2);
        assert_eq!(record.outcome_since(0), None);
        record.end(Ended::Released(1));
        record.end(Ended::Lost("x".into()));
        assert_eq!(record.outcome_since(0), Some(Ok(1)));
        assert_eq!(record.outcome_since(1), Some(Err(BarrierError::PartyLost("x".into()))));
        assert_eq!(record.outcome_since(2), None);
        for _ in 0..HISTORY {
            record.end(Ended::Released(9));
        }
        assert_eq!(record.outcome_since(0), Some(Err(BarrierError::Timeout)), "too old to tell");
        assert_eq!(record.ended.len(), HISTORY);
    }
}
