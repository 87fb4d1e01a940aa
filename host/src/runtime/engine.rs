//! The one wasmtime engine of a host process, and the epoch ticker that drives CPU control.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::manifest::HostSettings;

/// Wasm stack a guest may use before it traps with a stack overflow.
const MAX_WASM_STACK: usize = 512 << 10;
/// Native stack of the fiber an agent runs on: its wasm stack plus room for host functions.
const ASYNC_STACK: usize = 1 << 20;
/// What one pool slot holds for a component. Core instances: a Rust agent needs a handful,
/// toolchains that bundle an interpreter (Python, JavaScript) need more, and larger tables.
pub struct SlotLimits {
    pub core_instances: u32,
    pub memories: u32,
    pub tables: u32,
    pub table_elements: usize,
}

pub const POOL: SlotLimits = SlotLimits { core_instances: 32, memories: 4, tables: 8, table_elements: 20_000 };
/// Memory kept resident in a freed pool slot, so that the next instantiation does not fault it in.
const KEEP_RESIDENT: usize = 256 << 10;

/// Build the engine: async (agents run as tokio tasks), epoch interruption (CPU control) and a
/// pooling allocator sized by the manifest (fast instantiation, bounded virtual memory).
/// `meter_fuel` compiles fuel counting into every function (compute billing).
pub fn build(settings: &HostSettings, meter_fuel: bool) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.consume_fuel(meter_fuel);
    config.max_wasm_stack(MAX_WASM_STACK);
    config.async_stack_size(ASYNC_STACK);
    // A copy-on-write data image maps the module file into every slot that ever ran it, and the
    // split mappings outlive the instance: with 10,000 slots that alone reaches the kernel's
    // 65,530-mapping limit. Copying a Rust agent's few KiB of data costs a few microseconds.
    config.memory_init_cow(false);
    if let Some(reservation) = settings.memory_reservation {
        config.memory_reservation(reservation.bytes());
        config.memory_reservation_for_growth(0);
    }
    if let Some(guard) = settings.memory_guard {
        config.memory_guard_size(guard.bytes());
        config.guard_before_linear_memory(guard.bytes() > 0);
    }

    let slots = settings.max_agents;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(POOL.core_instances).min(1 << 20))
        .max_core_instances_per_component(POOL.core_instances)
        .total_memories(slots.saturating_mul(2))
        .max_memories_per_component(POOL.memories)
        .total_tables(slots.saturating_mul(2))
        .max_tables_per_component(POOL.tables)
        .table_elements(POOL.table_elements)
        .max_memory_size(settings.max_memory.bytes() as usize)
        .total_stacks(slots)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .async_stack_keep_resident(KEEP_RESIDENT);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| anyhow::anyhow!("cannot create the wasm engine: {e}"))
}

/// Advances the engine's epoch every tick until dropped. It holds only a weak reference, so it
/// never keeps an engine alive.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub fn start(engine: &Engine, tick: Duration) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        // Tests set AGORA_INJECT_FAULT=epoch-ticker to prove that a panicking ticker is restarted.
        let mut inject_panic = std::env::var("AGORA_INJECT_FAULT").is_ok_and(|v| v == "epoch-ticker");
        std::thread::Builder::new()
            .name("agora-epoch".into())
            .spawn(move || {
                // Without ticks no agent could be interrupted or made to yield: a panic here is
                // logged and the loop restarted, never left as a silent hole.
                let mut restarts = 0u32;
                loop {
                    let ticking = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        while !flag.load(Ordering::Relaxed) {
                            std::thread::sleep(tick);
                            let Some(engine) = weak.upgrade() else { return };
                            engine.increment_epoch();
                            if std::mem::take(&mut inject_panic) {
                                panic!("injected fault");
                            }
                        }
                    }));
                    match ticking {
                        Ok(()) => return,
                        Err(panic) => {
                            restarts += 1;
                            let message = crate::runtime::agent::panic_message(&*panic);
                            tracing::error!(
                                event = "host_task_restarted",
                                task = "epoch_ticker",
                                restarts,
                                "the epoch ticker panicked ({message}); restarting it"
                            );
                        }
                    }
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
