//! The counters every agent keeps about itself: messages in and out, mailbox depth, peak
//! memory, CPU ticks, metered compute and handle latency. Only the agent's own task writes them
//! (plain loads and stores, about a nanosecond each); readers (the telemetry exporter, and
//! anyone inspecting a live agent) load them at any time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Latency buckets: under 64 ns, then four per power of two up to 2^36 ns (69 s); each is at
/// most 25% wide, so a reported quantile is within 12.5% of the true one.
pub const LATENCY_BUCKETS: usize = 1 + 30 * 4;

pub fn latency_bucket(nanos: u64) -> usize {
    if nanos < 64 {
        return 0;
    }
    let octave = 63 - nanos.leading_zeros() as usize;
    let quarter = (nanos >> (octave - 2)) as usize & 3;
    ((octave - 6) * 4 + quarter + 1).min(LATENCY_BUCKETS - 1)
}

/// The middle of a bucket, in seconds.
pub fn latency_midpoint(bucket: usize) -> f64 {
    if bucket == 0 {
        return 32e-9;
    }
    let (octave, quarter) = ((bucket - 1) / 4 + 6, (bucket - 1) % 4);
    let lower = ((4 + quarter as u64) << (octave - 2)) as f64;
    (lower * 1.125) * 1e-9
}

/// A value written by one agent's task only: a plain load and store, no read-modify-write.
#[derive(Default)]
pub struct Cell(AtomicU64);

impl Cell {
    #[inline]
    fn add(&self, n: u64) {
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed)
    }

    #[inline]
    fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed)
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One agent incarnation's counters.
pub struct AgentStats {
    pub messages_in: Cell,
    /// Of those, the ones handed out within a batch, after its first (handled without a guest
    /// entry of their own).
    pub batched: Cell,
    pub messages_out: Cell,
    pub mailbox_depth: Cell,
    pub memory_peak: Cell,
    pub cpu_ticks: Cell,
    /// Metered compute (with `[economics] compute_price`): fuel burned, credits charged.
    pub fuel: Cell,
    pub charged: Cell,
    pub latency: [Cell; LATENCY_BUCKETS],
    /// What the agent is doing ([`Phase`]), for operators.
    pub phase: Cell,
    /// When it last went idle ([`super::live_set::now_stamp`]), for the least-recently-used
    /// choice of whom to hibernate; kept only for agents that can hibernate.
    pub last_used: AtomicU64,
    /// The (interface, grant) pairs this agent was denied, each explained once in the log.
    denials: std::sync::Mutex<Vec<(&'static str, &'static str)>>,
}

impl Default for AgentStats {
    fn default() -> Self {
        AgentStats {
            messages_in: Cell::default(),
            batched: Cell::default(),
            messages_out: Cell::default(),
            mailbox_depth: Cell::default(),
            memory_peak: Cell::default(),
            cpu_ticks: Cell::default(),
            fuel: Cell::default(),
            charged: Cell::default(),
            latency: std::array::from_fn(|_| Cell::default()),
            phase: Cell::default(),
            last_used: AtomicU64::new(0),
            denials: std::sync::Mutex::default(),
        }
    }
}

/// What an agent is doing, as `AgentStats::phase` holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Phase {
    /// Started, not yet waiting for a message.
    Starting = 0,
    /// Waiting for its next message.
    Idle = 1,
    /// Working through its mailbox.
    Busy = 2,
    /// Held by a gate (its wallet cannot pay, say).
    Held = 3,
    /// Its code is being upgraded.
    Upgrading = 4,
    /// Hibernated: no instance, its state taken; the next message wakes it.
    Hibernated = 5,
    /// Being woken: a fresh instance is restoring its state.
    Waking = 6,
}

impl Phase {
    pub const ALL: [Phase; 7] =
        [Phase::Starting, Phase::Idle, Phase::Busy, Phase::Held, Phase::Upgrading, Phase::Hibernated, Phase::Waking];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Idle => "idle",
            Phase::Busy => "busy",
            Phase::Held => "held",
            Phase::Upgrading => "upgrading",
            Phase::Hibernated => "hibernated",
            Phase::Waking => "waking",
        }
    }

    fn from(value: u64) -> Phase {
        match value {
            1 => Phase::Idle,
            2 => Phase::Busy,
            3 => Phase::Held,
            4 => Phase::Upgrading,
            5 => Phase::Hibernated,
            6 => Phase::Waking,
            _ => Phase::Starting,
        }
    }
}

impl AgentStats {
    pub fn phase(&self) -> Phase {
        Phase::from(self.phase.get())
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.set(phase as u64);
    }

    /// Record a denial; true the first time for this interface.
    pub fn note_denial(&self, interface: &'static str, grant: &'static str) -> bool {
        let mut denials = self.denials.lock().unwrap_or_else(|p| p.into_inner());
        let new = !denials.iter().any(|(i, _)| *i == interface);
        if new {
            denials.push((interface, grant));
        }
        new
    }

    /// The denials so far, as the fix they call for: `"messaging" (messaging), ...`.
    pub fn denied_grants(&self) -> Option<String> {
        let denials = self.denials.lock().unwrap_or_else(|p| p.into_inner());
        let listed: Vec<String> =
            denials.iter().map(|(interface, grant)| format!("\"{grant}\" ({interface})")).collect();
        (!listed.is_empty()).then(|| listed.join(", "))
    }

    /// Count one handled message. The mailbox depth is read every 64th message only: the
    /// queue's tail is a cache line the senders write, and the agent going idle records the
    /// depth (zero) anyway.
    #[inline]
    pub fn handled(&self, took: Duration, queued: impl FnOnce() -> usize, memory_peak: usize, cpu_ticks: u64) {
        let handled = self.messages_in.get().wrapping_add(1);
        self.messages_in.set(handled);
        self.latency[latency_bucket(took.as_nanos() as u64)].add(1);
        if handled.is_multiple_of(64) {
            self.mailbox_depth.set(queued() as u64);
        }
        self.memory_peak.set(memory_peak as u64);
        if cpu_ticks > 0 {
            self.cpu_ticks.add(cpu_ticks);
        }
    }

    /// An item handled within a batch after its first ([`super::batch`]).
    #[inline]
    pub fn batched_one(&self) {
        self.batched.add(1);
    }

    /// The agent waits for its next message: its mailbox is empty.
    #[inline]
    pub fn idle(&self) {
        self.mailbox_depth.set(0);
        self.phase.set(Phase::Idle as u64);
    }

    /// Record the memory an agent has once it is initialized.
    pub fn initialized(&self, memory_peak: usize) {
        self.memory_peak.set(memory_peak as u64);
    }

    /// The agent's metered compute so far: fuel burned, and credits charged for it.
    #[inline]
    pub fn compute(&self, fuel: u64, charged: u64) {
        self.fuel.set(fuel);
        self.charged.set(charged);
    }

    /// Count one message sent, called or published.
    #[inline]
    pub fn sent(&self) {
        self.messages_out.add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_ordered_and_tight() {
        let mut previous = 0;
        for nanos in [0u64, 63, 64, 80, 96, 127, 128, 1_000, 123_456, 10_000_000, 60_000_000_000] {
            let bucket = latency_bucket(nanos);
            assert!(bucket >= previous, "{nanos}");
            previous = bucket;
            if nanos >= 64 {
                let mid = latency_midpoint(bucket) * 1e9;
                assert!((mid - nanos as f64).abs() / (nanos as f64) < 0.15, "{nanos} -> {mid}");
            }
        }
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
    }
}
