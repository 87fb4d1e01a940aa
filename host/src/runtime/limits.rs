//! Per-agent limits enforced inside the store: the memory cap and the CPU budget.

use std::fmt;

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
        write!(f, "memory cap of {} bytes exceeded (the agent asked for {} bytes)", self.cap, self.requested)
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

/// The CPU budget of one callback, counted in epoch ticks during which the agent was running.
///
/// Ticks spent waiting in a host call (a `call` waiting for its reply, say) cost at most one,
/// because the deadline is only checked while wasm runs; the budget therefore approximates CPU
/// time, not wall time.
pub struct Budget {
    pub ticks_allowed: u64,
    pub ticks_used: u64,
}

/// Why a store was interrupted in the epoch callback.
#[derive(Debug, Clone, Copy)]
pub struct BudgetExceeded {
    pub ticks: u64,
}

impl fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CPU budget exhausted after {} ticks in one callback", self.ticks)
    }
}

impl std::error::Error for BudgetExceeded {}
