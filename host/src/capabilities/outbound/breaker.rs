//! A circuit breaker: failsafe's state machine and failure policies, wrapped so that the
//! half-open state admits only a limited number of probe calls (failsafe lets every call
//! through) and so that the state and the time until the next probe can be read.
//!
//! The wrapper learns the state from failsafe's instrument callbacks and the open delay from
//! the failure policy's answer, both of which failsafe reports synchronously. The open delay
//! comes from our own equal-jitter backoff: failsafe's counts whole seconds (a 1s start jitters
//! down to 0s) and panics below 1s.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use failsafe::failure_policy::{ConsecutiveFailures, FailurePolicy, SuccessRateOverTimeWindow};
use failsafe::{Instrument, StateMachine};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    Open,
    HalfOpen,
}

/// When the breaker opens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trip {
    /// After this many failures in a row.
    ConsecutiveFailures(u32),
    /// When the success rate over `window` falls below `rate`, once `minimum` calls were seen.
    SuccessRate { rate: f64, minimum: u32, window: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSpec {
    pub trip: Trip,
    /// Open for a jittered delay that starts near `backoff_initial` and doubles up to
    /// `backoff_max` while probes keep failing.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Calls admitted at once while half-open.
    pub probes: u32,
}

/// The two failsafe policies behind one type.
enum Policy {
    Consecutive(ConsecutiveFailures<Jittered>),
    SuccessRate(SuccessRateOverTimeWindow<Jittered>),
}

/// Exponential backoff with equal jitter: the n-th delay is `d/2 + random(0..=d/2)` where
/// `d = min(initial * 2^n, max)`. Failsafe restarts the sequence when the breaker closes.
#[derive(Clone)]
struct Jittered {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Iterator for Jittered {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let full = self.initial.saturating_mul(1 << self.attempt.min(30)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = full / 2;
        let jitter = rand::random_range(0..=half.as_nanos() as u64);
        Some(half + Duration::from_nanos(jitter))
    }
}

/// Shared between the wrapper, the instrument and the policy.
struct Track {
    circuit: AtomicU8,
    /// Nanoseconds after `epoch` at which an open breaker admits probes.
    open_until: AtomicU64,
    /// The delay the policy chose when it last tripped.
    last_delay: AtomicU64,
    probes_in_flight: AtomicU32,
    /// Bumped on each state change, so that a probe from an earlier half-open period does
    /// not release a slot of the current one.
    generation: AtomicU32,
    epoch: Instant,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

struct TrackingPolicy {
    policy: Policy,
    track: Arc<Track>,
}

impl FailurePolicy for TrackingPolicy {
    fn record_success(&mut self) {
        match &mut self.policy {
            Policy::Consecutive(p) => p.record_success(),
            Policy::SuccessRate(p) => p.record_success(),
        }
    }

    fn mark_dead_on_failure(&mut self) -> Option<Duration> {
        let delay = match &mut self.policy {
            Policy::Consecutive(p) => p.mark_dead_on_failure(),
            Policy::SuccessRate(p) => p.mark_dead_on_failure(),
        };
        if let Some(delay) = delay {
            self.track.last_delay.store(delay.as_nanos() as u64, Ordering::SeqCst);
        }
        delay
    }

    fn revived(&mut self) {
        match &mut self.policy {
            Policy::Consecutive(p) => p.revived(),
            Policy::SuccessRate(p) => p.revived(),
        }
    }
}

#[derive(Clone)]
struct Tracker(Arc<Track>);

impl Tracker {
    fn enter(&self, circuit: u8) {
        let track = &self.0;
        track.circuit.store(circuit, Ordering::SeqCst);
        track.generation.fetch_add(1, Ordering::SeqCst);
        track.probes_in_flight.store(0, Ordering::SeqCst);
    }
}

impl Instrument for Tracker {
    fn on_call_rejected(&self) {}

    fn on_open(&self) {
        let track = &self.0;
        let until = track.epoch.elapsed().as_nanos() as u64 + track.last_delay.load(Ordering::SeqCst);
        track.open_until.store(until, Ordering::SeqCst);
        self.enter(OPEN);
    }

    fn on_half_open(&self) {
        self.enter(HALF_OPEN);
    }

    fn on_closed(&self) {
        self.enter(CLOSED);
    }
}

pub struct Breaker {
    machine: StateMachine<TrackingPolicy, Tracker>,
    track: Arc<Track>,
    probes: u32,
}

/// Leave to call; report the call's outcome with [`Permit::record`]. Dropped unrecorded (the
/// call was abandoned), it only frees its probe slot.
pub struct Permit<'a> {
    breaker: &'a Breaker,
    /// The half-open generation whose probe slot this permit holds.
    probe: Option<u32>,
}

impl Breaker {
    pub fn new(spec: &BreakerSpec) -> Breaker {
        let track = Arc::new(Track {
            circuit: AtomicU8::new(CLOSED),
            open_until: AtomicU64::new(0),
            last_delay: AtomicU64::new(0),
            probes_in_flight: AtomicU32::new(0),
            generation: AtomicU32::new(0),
            epoch: Instant::now(),
        });
        let backoff = Jittered { initial: spec.backoff_initial, max: spec.backoff_max, attempt: 0 };
        let policy = match spec.trip {
            Trip::ConsecutiveFailures(n) => {
                Policy::Consecutive(failsafe::failure_policy::consecutive_failures(n, backoff))
            }
            Trip::SuccessRate { rate, minimum, window } => Policy::SuccessRate(
                failsafe::failure_policy::success_rate_over_time_window(rate, minimum, window, backoff),
            ),
        };
        let machine = failsafe::Config::new()
            .failure_policy(TrackingPolicy { policy, track: track.clone() })
            .instrument(Tracker(track.clone()))
            .build();
        Breaker { machine, track, probes: spec.probes.max(1) }
    }

    pub fn circuit(&self) -> Circuit {
        match self.track.circuit.load(Ordering::SeqCst) {
            OPEN => Circuit::Open,
            HALF_OPEN => Circuit::HalfOpen,
            _ => Circuit::Closed,
        }
    }

    /// While open: how long until probes are admitted.
    pub fn retry_after(&self) -> Option<Duration> {
        (self.circuit() == Circuit::Open).then(|| {
            let now = self.track.epoch.elapsed().as_nanos() as u64;
            Duration::from_nanos(self.track.open_until.load(Ordering::SeqCst).saturating_sub(now))
        })
    }

    pub fn probes_in_flight(&self) -> u32 {
        self.track.probes_in_flight.load(Ordering::SeqCst)
    }

    /// Ask to call. Refused (with the time until a retry may pass) while open, and while
    /// half-open once the probe limit is in flight.
    pub fn permit(&self) -> Result<Permit<'_>, Duration> {
        if !self.machine.is_call_permitted() {
            return Err(self.retry_after().unwrap_or_default());
        }
        if self.circuit() != Circuit::HalfOpen {
            return Ok(Permit { breaker: self, probe: None });
        }
        let generation = self.track.generation.load(Ordering::SeqCst);
        let taken = self
            .track
            .probes_in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < self.probes).then_some(n + 1))
            .is_ok();
        if taken {
            Ok(Permit { breaker: self, probe: Some(generation) })
        } else {
            // The probes decide soon; a retry then either passes or meets an open breaker.
            Err(Duration::from_millis(1))
        }
    }
}

impl Permit<'_> {
    pub fn record(self, success: bool) {
        if success {
            self.breaker.machine.on_success();
        } else {
            self.breaker.machine.on_error();
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(generation) = self.probe {
            let track = &self.breaker.track;
            if track.generation.load(Ordering::SeqCst) == generation {
                let _ = track.probes_in_flight.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(probes: u32) -> Breaker {
        Breaker::new(&BreakerSpec {
            trip: Trip::ConsecutiveFailures(3),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(100),
            probes,
        })
    }

    #[test]
    fn opens_rejects_probes_and_closes() {
        let breaker = breaker(2);
        for _ in 0..3 {
            breaker.permit().unwrap().record(false);
        }
        assert_eq!(breaker.circuit(), Circuit::Open);
        let retry = breaker.permit().err().expect("open rejects");
        assert!(retry <= Duration::from_millis(100), "{retry:?}");
        std::thread::sleep(Duration::from_millis(110));
        let first = breaker.permit().expect("first probe");
        assert_eq!(breaker.circuit(), Circuit::HalfOpen);
        let second = breaker.permit().expect("second probe");
        assert!(breaker.permit().is_err(), "a third call while two probes run is refused");
        drop(second);
        let third = breaker.permit().expect("a slot freed by an abandoned probe");
        first.record(true);
        assert_eq!(breaker.circuit(), Circuit::Closed);
        drop(third);
        assert!(breaker.permit().is_ok());
    }

    #[test]
    fn a_low_success_rate_opens_once_the_window_has_passed() {
        let breaker = Breaker::new(&BreakerSpec {
            trip: Trip::SuccessRate { rate: 0.5, minimum: 4, window: Duration::from_secs(1) },
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(100),
            probes: 1,
        });
        // Failsafe judges the rate only once a whole window has passed.
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(1100) {
            breaker.permit().unwrap().record(true);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(breaker.circuit(), Circuit::Closed);
        // The rate is a moving average weighted by time: failures must be spread out to move it.
        for _ in 0..300 {
            if breaker.circuit() == Circuit::Open {
                break;
            }
            breaker.permit().unwrap().record(false);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(breaker.circuit(), Circuit::Open, "mostly failures trip it");
    }

    fn delay(breaker: &Breaker) -> Duration {
        Duration::from_nanos(breaker.track.last_delay.load(Ordering::SeqCst))
    }

    /// Wait out the open period, by the breaker's own account of it.
    fn until_half_open(breaker: &Breaker) {
        while let Some(left) = breaker.retry_after().filter(|left| !left.is_zero()) {
            std::thread::sleep(left);
        }
    }

    #[test]
    fn the_open_delay_doubles_while_probes_fail_up_to_the_cap_and_starts_over_once_closed() {
        let ms = Duration::from_millis;
        let breaker = Breaker::new(&BreakerSpec {
            trip: Trip::ConsecutiveFailures(1),
            backoff_initial: ms(8),
            backoff_max: ms(32),
            probes: 1,
        });
        breaker.permit().unwrap().record(false);
        // Equal jitter: the n-th delay lies in [d/2, d] for d = min(8 ms * 2^n, 32 ms).
        for full in [8, 16, 32, 32, 32] {
            let chosen = delay(&breaker);
            assert!(chosen >= ms(full) / 2 && chosen <= ms(full), "{chosen:?} outside [{full}/2, {full}] ms");
            assert!(breaker.retry_after().unwrap() <= chosen, "retry-after counts down from the delay");
            until_half_open(&breaker);
            breaker.permit().expect("a probe once the delay has passed").record(false);
            assert_eq!(breaker.circuit(), Circuit::Open);
        }
        until_half_open(&breaker);
        breaker.permit().unwrap().record(true);
        assert_eq!(breaker.circuit(), Circuit::Closed);
        assert_eq!(breaker.retry_after(), None, "a closed breaker has no retry-after");
        breaker.permit().unwrap().record(false);
        let chosen = delay(&breaker);
        assert!(chosen >= ms(4) && chosen <= ms(8), "closing starts the sequence over: {chosen:?}");
    }

    #[test]
    fn a_failed_probe_reopens() {
        let breaker = breaker(1);
        for _ in 0..3 {
            breaker.permit().unwrap().record(false);
        }
        std::thread::sleep(Duration::from_millis(110));
        breaker.permit().unwrap().record(false);
        assert_eq!(breaker.circuit(), Circuit::Open);
    }
}
