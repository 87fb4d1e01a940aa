//! Per-agent limits enforced inside the store: the memory cap and the CPU budget.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::ResourceLimiter;

/// The memory cap. Growing past it traps at once with [`MemoryCapExceeded`] (rather than letting
/// `memory.grow` return -1), so a crash report can say "memory cap" instead of a generic abort.
pub struct MemoryCap {
    cap: usize,
    peak: usize,
}

/// Why a store trapped in `memory.grow`.
#[derive(Debug, Clone, Copy)]
pub struct MemoryCapExceeded {
    pub cap: usize,
    pub requested: usize,
}

impl fmt::Display for MemoryCapExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let readable = |bytes: usize| crate::manifest::units::readable(bytes as u64);
        write!(f, "memory cap of {} exceeded (the agent asked for {})", readable(self.cap), readable(self.requested))
    }
}

impl std::error::Error for MemoryCapExceeded {}

impl MemoryCap {
    pub fn new(cap: u64) -> Self {
        MemoryCap { cap: usize::try_from(cap).unwrap_or(usize::MAX), peak: 0 }
    }

    /// The largest linear memory this store has reached.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// Count what the store reached under an earlier cap (a warm instance's, before its
    /// agent took it).
    pub fn continue_from(&mut self, earlier: &MemoryCap) {
        self.peak = self.peak.max(earlier.peak);
    }
}

/// Tables are bounded by the instance pool; the store only forbids runaway growth.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.cap {
            return Err(wasmtime::Error::new(MemoryCapExceeded { cap: self.cap, requested: desired }));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// The CPU budget of one callback: the CPU time the agent itself used, never time it spent
/// descheduled, waiting inside a host call, or queued behind other agents.
///
/// How it is measured, cheaply: each poll of a callback is one segment (the wrapper in
/// `invoke::metered` marks its start). Within a poll the epoch callback fires once a tick has
/// passed; there it charges the segment so far and yields. A segment that resumes after such a
/// yield knows the thread's CPU clock at its start (read once per tick, ~1 µs), so long-running
/// compute is charged exactly in CPU time. Other segments (the first poll of a callback, a
/// resume after a host call) are charged their wall-clock length, at most one tick each:
/// reading the CPU clock at every poll would cost more than a message does.
pub struct Budget {
    pub allowed: Duration,
    /// Epoch ticks that fired while this callback ran (for the stats).
    pub ticks: u64,
    pub meter: Arc<CpuMeter>,
}

impl Budget {
    pub fn new(allowed: Duration) -> Budget {
        Budget { allowed, ticks: 0, meter: Arc::default() }
    }
}

/// One callback's CPU time so far, shared by the poll wrapper and the epoch callback (both run
/// on the agent's task, one after the other; atomics only make the sharing `Sync`).
#[derive(Default)]
pub struct CpuMeter {
    used_ns: AtomicU64,
    /// The TSC reading where the current segment started.
    segment_start: AtomicU64,
    /// The thread's CPU clock where the current segment started, when known (0: not known).
    segment_cpu: AtomicU64,
}

/// The TSC clock (a few ns a read), as quanta's raw counter.
fn now_raw() -> u64 {
    clock().raw()
}

fn clock() -> &'static quanta::Clock {
    static CLOCK: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

/// This thread's CPU time, in ns (at least 1, so that 0 can mean "not known").
fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to write; the clock id is a constant the kernel knows.
    let read = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if read != 0 {
        return 1;
    }
    (now.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(now.tv_nsec as u64).max(1)
}

impl CpuMeter {
    /// A callback starts: nothing used yet.
    pub fn reset(&self) {
        self.used_ns.store(0, Ordering::Relaxed);
    }

    pub fn used(&self) -> Duration {
        Duration::from_nanos(self.used_ns.load(Ordering::Relaxed))
    }

    /// Only the agent's own task writes the meter, so a load and a store do (no locked
    /// read-modify-write on the message path).
    fn charge(&self, ns: u64) {
        self.used_ns.store(self.used_ns.load(Ordering::Relaxed) + ns, Ordering::Relaxed);
    }

    /// A poll of the callback begins: a segment whose CPU start is not known.
    #[inline]
    pub fn poll_started(&self) {
        self.segment_start.store(now_raw(), Ordering::Relaxed);
        self.segment_cpu.store(0, Ordering::Relaxed);
    }

    /// A poll ends: charge what ran since the segment started, by the wall clock (the tail
    /// after a tick, or a whole short poll).
    #[inline]
    pub fn poll_ended(&self, tick: Duration) {
        let wall = clock().delta_as_nanos(self.segment_start.load(Ordering::Relaxed), now_raw());
        // Longer than a tick without one firing: the thread was descheduled (or in host code,
        // which no tick interrupts); charge what a tick-long segment would cost.
        self.charge(wall.min(tick.as_nanos() as u64));
    }

    /// At an epoch tick, on the thread running the callback: charge the segment so far (its CPU
    /// time when its start is known, else its wall time, at most `tick`), and start a new one.
    pub fn ticked(&self, tick: Duration) -> Duration {
        let cpu_start = self.segment_cpu.load(Ordering::Relaxed);
        let charged = if cpu_start != 0 {
            thread_cpu_ns().saturating_sub(cpu_start)
        } else {
            let wall = clock().delta_as_nanos(self.segment_start.load(Ordering::Relaxed), now_raw());
            wall.min(tick.as_nanos() as u64)
        };
        self.charge(charged);
        self.segment_start.store(now_raw(), Ordering::Relaxed);
        self.segment_cpu.store(0, Ordering::Relaxed);
        self.used()
    }

    /// The callback resumes after the yield at a tick, on whichever thread polls it now.
    pub fn resumed(&self) {
        self.segment_start.store(now_raw(), Ordering::Relaxed);
        self.segment_cpu.store(thread_cpu_ns(), Ordering::Relaxed);
    }
}

/// Why a store was interrupted in the epoch callback.
#[derive(Debug, Clone, Copy)]
pub struct BudgetExceeded {
    pub allowed: Duration,
    pub used: Duration,
}

impl fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CPU budget of {:?} exhausted ({:?} of CPU time in one callback)", self.allowed, self.used)
    }
}

impl std::error::Error for BudgetExceeded {}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(10);

    /// Burn this thread's CPU for `cpu`, by its own CPU clock.
    fn burn(cpu: Duration) {
        let start = thread_cpu_ns();
        while thread_cpu_ns() - start < cpu.as_nanos() as u64 {
            std::hint::black_box(0u64.wrapping_add(1));
        }
    }

    #[test]
    fn growing_past_the_cap_traps_with_the_sizes_and_the_peak_is_kept() {
        let mut cap = MemoryCap::new(1 << 20);
        assert!(cap.memory_growing(0, 1 << 19, None).unwrap());
        assert!(cap.memory_growing(1 << 19, 1 << 20, None).unwrap(), "up to the cap is allowed");
        let error = cap.memory_growing(1 << 20, (1 << 20) + 65_536, None).unwrap_err();
        let exceeded = error.downcast_ref::<MemoryCapExceeded>().expect("a typed error");
        assert_eq!((exceeded.cap, exceeded.requested), (1 << 20, (1 << 20) + 65_536));
        assert_eq!(cap.peak(), 1 << 20, "a refused growth is not a peak");
        assert!(!cap.table_growing(0, MAX_TABLE_ELEMENTS + 1, None).unwrap());
    }

    #[test]
    fn a_resumed_segment_is_charged_its_cpu_time_not_its_wall_time() {
        let meter = CpuMeter::default();
        meter.resumed();
        burn(Duration::from_millis(30));
        let used = meter.ticked(TICK);
        assert!(used >= Duration::from_millis(30), "compute is charged in full: {used:?}");

        meter.reset();
        meter.resumed();
        std::thread::sleep(Duration::from_millis(200));
        let used = meter.ticked(TICK);
        assert!(used < Duration::from_millis(50), "time asleep (descheduled) is not charged: {used:?}");
    }

    #[test]
    fn a_segment_of_unknown_cpu_start_is_charged_at_most_a_tick() {
        let meter = CpuMeter::default();
        meter.poll_started();
        std::thread::sleep(Duration::from_millis(50));
        meter.poll_ended(TICK);
        assert_eq!(meter.used(), TICK, "a long poll without a tick was descheduled or in host code");
        meter.poll_started();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(meter.ticked(TICK), 2 * TICK);
        meter.reset();
        assert_eq!(meter.used(), Duration::ZERO, "each callback starts at zero");
    }
}
