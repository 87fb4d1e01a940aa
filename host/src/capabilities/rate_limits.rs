//! The `rate-limits` capability: named GCRA rate limiters (governor) that agents check or wait
//! on with their own keys. The outbound capability uses the same [`Limiter`] per target.
//!
//! ```toml
//! [rate_limits.search]
//! limit = 100        # cells per `per`
//! per = "1s"
//! burst = 20         # at most this many at once (default: limit)
//! keyed = true       # one budget per key; false: one budget shared by every key
//! ```
//!
//! A check is lock-free (one compare-and-swap on the key's state): no central actor, and it
//! fails closed. Keyed limiters remember every key they have seen, so a housekeeping thread
//! drops the keys whose budget has fully refilled (they are indistinguishable from new ones),
//! and millions of one-off keys do not stay resident.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::DefaultClock;
use governor::clock::{Clock, QuantaClock};
use governor::state::keyed::DashMapStateStore;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

use super::hooks::Hooks;
use super::{Capability, Entering, Getter, SectionError, Served, Startup, View};
use crate::bindings::rate_limits::{self, LimitError};
use crate::manifest::Span;
use crate::runtime::state::AgentState;

/// One limiter as the manifest declares it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimiterSpec {
    pub limit: NonZeroU32,
    #[serde(default = "one_second")]
    pub per: Span,
    pub burst: Option<NonZeroU32>,
    #[serde(default)]
    pub keyed: bool,
}

fn one_second() -> Span {
    Span(Duration::from_secs(1))
}

impl LimiterSpec {
    /// `limit` cells per `per`, refilled one at a time, at most `burst` at once.
    pub fn quota(&self) -> Option<Quota> {
        let interval = self.per.duration() / self.limit.get();
        Some(Quota::with_period(interval)?.allow_burst(self.burst.unwrap_or(self.limit)))
    }
}

/// Why a check did not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the limit; it may pass after this long.
    Limited(Duration),
    /// More cells than the burst: it never passes.
    ExceedsBurst(u32),
}

/// A keyed limiter's state: a dashmap with a fast hasher (SipHash, the default, made a keyed
/// check cost half again as much). Keys come from agents, so the hasher is seeded per process.
type KeyedState<K> = DashMapStateStore<K, foldhash::fast::RandomState>;

/// A direct or keyed limiter.
pub enum Limiter<K: std::hash::Hash + Eq + Clone> {
    Shared(DefaultDirectRateLimiter),
    Keyed(RateLimiter<K, KeyedState<K>, DefaultClock>),
}

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    pub fn new(quota: Quota, keyed: bool) -> Limiter<K> {
        if keyed {
            Limiter::Keyed(RateLimiter::dashmap_with_hasher(quota, Default::default()))
        } else {
            Limiter::Shared(RateLimiter::direct(quota))
        }
    }

    /// Take one cell for `key`, or say when one may be free.
    #[inline]
    pub fn check(&self, key: &K) -> Result<(), Refusal> {
        let outcome = match self {
            Limiter::Shared(limiter) => limiter.check(),
            Limiter::Keyed(limiter) => limiter.check_key(key),
        };
        outcome.map_err(|not_until| Refusal::Limited(not_until.wait_time_from(QuantaClock::default().now())))
    }

    /// Take `cost` cells at once (all or none).
    pub fn check_n(&self, key: &K, cost: NonZeroU32) -> Result<(), Refusal> {
        if cost.get() == 1 {
            return self.check(key);
        }
        let outcome = match self {
            Limiter::Shared(limiter) => limiter.check_n(cost),
            Limiter::Keyed(limiter) => limiter.check_key_n(key, cost),
        };
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Refusal::Limited(not_until.wait_time_from(QuantaClock::default().now()))),
            Err(_) => Err(Refusal::ExceedsBurst(cost.get())),
        }
    }

    /// Wait (on tokio's timer) until `cost` cells are taken, unless that takes past `timeout`.
    pub async fn wait(&self, key: &K, cost: NonZeroU32, timeout: Duration) -> Result<(), Refusal> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.check_n(key, cost) {
                Err(Refusal::Limited(after)) => {
                    if tokio::time::Instant::now() + after > deadline {
                        return Err(Refusal::Limited(after));
                    }
                    tokio::time::sleep(after).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// Forget keys whose budget has refilled; returns how many keys remain.
    pub fn housekeep(&self) -> usize {
        match self {
            Limiter::Shared(_) => 0,
            Limiter::Keyed(limiter) => {
                limiter.retain_recent();
                limiter.shrink_to_fit();
                limiter.len()
            }
        }
    }
}

/// The named limiters of one host. Agents' keys are kept as 64-bit hashes (seeded per process,
/// so that no agent can aim two keys at one budget): a key then costs no allocation when it
/// is first seen and no string comparison later.
pub struct RateLimits {
    limiters: Arc<BTreeMap<String, Limiter<u64>>>,
    keys: foldhash::quality::RandomState,
}

/// A limiter key as the named limiters keep it.
pub fn key_of(keys: &foldhash::quality::RandomState, key: &str) -> u64 {
    use std::hash::BuildHasher;
    keys.hash_one(key)
}

/// How often tables that forget idle entries (keyed limiters, lock leases, barriers) are swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl RateLimits {
    pub fn new(specs: &BTreeMap<String, LimiterSpec>) -> RateLimits {
        let limiters: BTreeMap<String, Limiter<u64>> = specs
            .iter()
            .filter_map(|(name, spec)| Some((name.clone(), Limiter::new(spec.quota()?, spec.keyed))))
            .collect();
        let limiters = Arc::new(limiters);
        if limiters.values().any(|l| matches!(l, Limiter::Keyed(_))) {
            crate::infra::housekeeping::global().sweep(SWEEP_EVERY, Arc::downgrade(&limiters), |limiters| {
                limiters.values().map(Limiter::housekeep).sum::<usize>();
            });
        }
        RateLimits { limiters, keys: Default::default() }
    }

    pub fn get(&self, name: &str) -> Option<&Limiter<u64>> {
        self.limiters.get(name)
    }

    pub fn key(&self, key: &str) -> u64 {
        key_of(&self.keys, key)
    }

    /// Sweep every keyed limiter now (the housekeeping thread does this periodically).
    pub fn housekeep(&self) -> usize {
        self.limiters.values().map(Limiter::housekeep).sum()
    }
}

fn refusal(refusal: Refusal) -> LimitError {
    match refusal {
        Refusal::Limited(after) => LimitError::Limited(after.as_millis().max(1) as u64),
        Refusal::ExceedsBurst(cost) => LimitError::ExceedsBurst(cost),
    }
}

impl Capability for RateLimits {
    const GRANT: Option<&'static str> = Some("rate-limits");
    /// `[rate_limits.<name>]`.
    type Section = BTreeMap<String, LimiterSpec>;
    type Shared = RateLimits;
    type Agent = ();

    fn validate(section: &Self::Section) -> Result<(), SectionError> {
        for (name, limiter) in section {
            if limiter.quota().is_none() {
                let message = format!("{} per {} is finer than 1ns per cell", limiter.limit, limiter.per);
                let key = format!("rate_limits.{name}");
                return Err(SectionError::new(key.clone(), key, message));
            }
        }
        Ok(())
    }

    fn start(section: &Self::Section, _host: &Startup<'_>) -> anyhow::Result<RateLimits> {
        Ok(RateLimits::new(section))
    }

    fn link(linker: &mut wasmtime::component::Linker<AgentState>, get: Getter<Self>) -> wasmtime::Result<()> {
        rate_limits::add_to_linker::<_, Served<Self>>(linker, get)
    }

    fn enter(_limits: &RateLimits, _agent: &Entering<'_>) {}
}

impl Hooks for RateLimits {}

crate::capabilities::denied_is_denied!(LimitError => "rate-limits");

impl View<'_, RateLimits> {
    fn limiter(&self, name: &str, cost: u32) -> Result<(&Limiter<u64>, NonZeroU32), LimitError> {
        self.require()?;
        let limiter = self.shared.get(name).ok_or(LimitError::NotFound)?;
        Ok((limiter, NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN)))
    }
}

impl rate_limits::Host for View<'_, RateLimits> {
    fn check(&mut self, limiter: String, key: String, cost: u32) -> Result<(), LimitError> {
        let (limiter, cost) = self.limiter(&limiter, cost)?;
        limiter.check_n(&self.shared.key(&key), cost).map_err(refusal)
    }

    async fn wait(&mut self, limiter: String, key: String, cost: u32, timeout_ms: u32) -> Result<(), LimitError> {
        let (limiter, cost) = self.limiter(&limiter, cost)?;
        let key = self.shared.key(&key);
        match limiter.wait(&key, cost, Duration::from_millis(timeout_ms.into())).await {
            Ok(()) => Ok(()),
            Err(Refusal::Limited(_)) => Err(LimitError::Timeout),
            Err(other) => Err(refusal(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(limit: u32, per: Duration, keyed: bool) -> LimiterSpec {
        LimiterSpec { limit: NonZeroU32::new(limit).unwrap(), per: Span(per), burst: None, keyed }
    }

    #[test]
    fn keyed_budgets_are_separate_and_swept() {
        let limiter: Limiter<String> = Limiter::new(spec(2, Duration::from_millis(20), true).quota().unwrap(), true);
        assert_eq!(limiter.check(&"a".into()), Ok(()));
        assert_eq!(limiter.check(&"a".into()), Ok(()));
        assert!(matches!(limiter.check(&"a".into()), Err(Refusal::Limited(_))));
        assert_eq!(limiter.check(&"b".into()), Ok(()));
        assert_eq!(limiter.check_n(&"c".into(), NonZeroU32::new(3).unwrap()), Err(Refusal::ExceedsBurst(3)));
        for key in 0..1_000_000 {
            let _ = limiter.check(&format!("k{key}"));
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(limiter.housekeep(), 0, "a million refilled keys are forgotten");
    }
}
