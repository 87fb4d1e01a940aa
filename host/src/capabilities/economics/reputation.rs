//! Reputation: how reliably an agent has delivered the contracts it won.
//!
//! Each outcome counts 1, and counts fade with a half-life, so an agent that failed long ago and
//! has delivered since is trusted again. The score is the Laplace estimate of the chance of
//! delivering, (completed + 1) / (completed + failed + 2): an agent nobody has seen work scores
//! 0.5, one that always delivered approaches 1. Scores are keyed by agent name, so a restarted
//! agent keeps its record; they live in memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::infra::hashers::NameHasher;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    /// In (0, 1); 0.5 for an agent without a record.
    pub score: f64,
    /// Outcomes ever recorded, without decay.
    pub completed: u64,
    pub failed: u64,
}

struct Record {
    /// Decayed counts as of `at`.
    completed: f64,
    failed: f64,
    at: Instant,
    total_completed: u64,
    total_failed: u64,
}

impl Record {
    fn decay_to(&mut self, now: Instant, half_life: Duration) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let factor = 0.5f64.powf(elapsed / half_life.as_secs_f64());
        self.completed *= factor;
        self.failed *= factor;
        self.at = now;
    }

    fn standing(&self) -> Standing {
        Standing {
            score: (self.completed + 1.0) / (self.completed + self.failed + 2.0),
            completed: self.total_completed,
            failed: self.total_failed,
        }
    }
}

pub struct Reputation {
    half_life: Duration,
    records: DashMap<Arc<str>, Record, NameHasher>,
}

impl Reputation {
    pub fn new(half_life: Duration) -> Reputation {
        Reputation { half_life: half_life.max(Duration::from_millis(1)), records: DashMap::default() }
    }

    /// Count one contract outcome for `agent`.
    pub fn record(&self, agent: &Arc<str>, delivered: bool) {
        let now = Instant::now();
        let mut record = self.records.entry(agent.clone()).or_insert_with(|| Record {
            completed: 0.0,
            failed: 0.0,
            at: now,
            total_completed: 0,
            total_failed: 0,
        });
        record.decay_to(now, self.half_life);
        if delivered {
            record.completed += 1.0;
            record.total_completed += 1;
        } else {
            record.failed += 1.0;
            record.total_failed += 1;
        }
    }

    pub fn standing(&self, agent: &str) -> Standing {
        self.standing_at(agent, Instant::now())
    }

    fn standing_at(&self, agent: &str, now: Instant) -> Standing {
        match self.records.get_mut(agent) {
            Some(mut record) => {
                record.decay_to(now, self.half_life);
                record.standing()
            }
            None => Standing { score: 0.5, completed: 0, failed: 0 },
        }
    }

    /// Every agent with a record, by name.
    pub fn all(&self) -> Vec<(Arc<str>, Standing)> {
        let now = Instant::now();
        let mut all: Vec<_> = self.records.iter().map(|entry| entry.key().clone()).collect();
        all.sort();
        all.into_iter()
            .map(|name| {
                let standing = self.standing_at(&name, now);
                (name, standing)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_move_the_score_and_fade_with_the_half_life() {
        let reputation = Reputation::new(Duration::from_secs(100));
        let (good, bad): (Arc<str>, Arc<str>) = ("good".into(), "bad".into());
        assert_eq!(reputation.standing("good").score, 0.5);
        for _ in 0..8 {
            reputation.record(&good, true);
            reputation.record(&bad, false);
        }
        reputation.record(&bad, true);
        let now = Instant::now();
        let (g, b) = (reputation.standing_at("good", now), reputation.standing_at("bad", now));
        assert!((g.score - 0.9).abs() < 1e-6, "{g:?}");
        assert!((b.score - 2.0 / 11.0).abs() < 1e-6, "{b:?}");
        assert_eq!((b.completed, b.failed), (1, 8));
        // One half-life on, the counts have halved: the score drifts back towards 0.5.
        let later = reputation.standing_at("good", now + Duration::from_secs(100));
        assert!((later.score - 5.0 / 6.0).abs() < 1e-6, "{later:?}");
        let much_later = reputation.standing_at("bad", now + Duration::from_secs(100 * 40));
        assert!((much_later.score - 0.5).abs() < 1e-6);
        assert_eq!(much_later.failed, 8, "totals do not fade");
    }
}
