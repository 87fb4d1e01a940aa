//! The one wasmtime engine of a host process, and the epoch ticker that drives CPU control.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::manifest::HostSettings;

/// Wasm stack a guest may use before it traps with a stack overflow.
const MAX_WASM_STACK: usize = 512 << 10;
/// Native stack of the fiber an agent runs on: its wasm stack plus room for host functions.
const ASYNC_STACK: usize = 1 << 20;
/// What one pool slot holds for a component.
pub struct SlotLimits {
    pub core_instances: u32,
    pub memories: u32,
    pub tables: u32,
    pub table_elements: usize,
}

/// Components fall in two classes, each with its own engine and instance pool. Compact ones
/// (Rust, C: tens of KiB) are many and small. Interpreter ones (Python, JavaScript: an
/// interpreter bundled in 10-20 MB, starting with ~12 MB of memory) are few and large: they need
/// more core instances and larger tables, and their slots map the data image copy-on-write, so
/// that instances share the interpreter's initial memory instead of each copying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Compact,
    Interpreter,
}

/// A component whose code and data are this large bundles an interpreter.
pub const INTERPRETER_SIZE: usize = 4 << 20;

/// The bytes of a component that are code and data: all but its custom sections (debug info,
/// names, producers), so that a debug build of a small agent is not taken for an interpreter.
pub fn payload_bytes(component: &[u8]) -> usize {
    let custom: usize = wasmparser::Parser::new(0)
        .parse_all(component)
        .map_while(Result::ok)
        .filter_map(|payload| match payload {
            wasmparser::Payload::CustomSection(section) => Some(section.data().len()),
            _ => None,
        })
        .sum();
    component.len().saturating_sub(custom)
}

/// Whether instantiating the component runs any of its code: a start function in one of its
/// core modules, or a component-level start. (Rust and C agents built by this workspace's
/// toolchains have none: their constructors run at the first export call, `init`.)
pub fn has_start_function(component: &[u8]) -> bool {
    wasmparser::Parser::new(0).parse_all(component).any(|payload| {
        matches!(
            payload,
            Ok(wasmparser::Payload::StartSection { .. } | wasmparser::Payload::ComponentStartSection { .. })
        )
    })
}

impl Class {
    /// The class of a component, by its code and data.
    pub fn of(component: &[u8]) -> Class {
        if payload_bytes(component) >= INTERPRETER_SIZE { Class::Interpreter } else { Class::Compact }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Compact => "compact",
            Class::Interpreter => "interpreter",
        }
    }

    pub fn limits(self) -> SlotLimits {
        match self {
            Class::Compact => SlotLimits { core_instances: 32, memories: 4, tables: 8, table_elements: 20_000 },
            Class::Interpreter => SlotLimits { core_instances: 64, memories: 8, tables: 16, table_elements: 200_000 },
        }
    }

    /// The manifest key that sizes the class's pool.
    pub fn slots_key(self) -> &'static str {
        match self {
            Class::Compact => "host.max_agents",
            Class::Interpreter => "host.interpreter_agents",
        }
    }

    fn slots(self, settings: &HostSettings) -> u32 {
        match self {
            Class::Compact => settings.max_agents,
            Class::Interpreter => settings.interpreter_agents,
        }
    }
}

/// One engine per class. A module is compiled for its class's engine, and its instances live
/// in that engine's pool.
#[derive(Clone)]
pub struct Engines {
    pub compact: Engine,
    pub interpreter: Engine,
}

impl Engines {
    pub fn build(settings: &HostSettings, meter_fuel: bool) -> anyhow::Result<Engines> {
        Ok(Engines {
            compact: build(settings, meter_fuel, Class::Compact)?,
            interpreter: build(settings, meter_fuel, Class::Interpreter)?,
        })
    }

    pub fn of(&self, class: Class) -> &Engine {
        match class {
            Class::Compact => &self.compact,
            Class::Interpreter => &self.interpreter,
        }
    }
}
/// Memory kept resident in a freed pool slot, so that the next instantiation does not fault it in.
const KEEP_RESIDENT: usize = 256 << 10;

/// Build the engine of a class: async (agents run as tokio tasks), epoch interruption (CPU
/// control) and a pooling allocator sized by the manifest (fast instantiation, bounded virtual
/// memory). `meter_fuel` compiles fuel counting into every function (compute billing).
fn build(settings: &HostSettings, meter_fuel: bool, class: Class) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.consume_fuel(meter_fuel);
    config.max_wasm_stack(MAX_WASM_STACK);
    config.async_stack_size(ASYNC_STACK);
    // A copy-on-write data image maps the module file into every slot that ever ran it, and the
    // split mappings outlive the instance: with 10,000 slots that alone reaches the kernel's
    // 65,530-mapping limit. Copying a Rust agent's few KiB of data costs a few microseconds; an
    // interpreter's 12 MB, in its few slots, is worth sharing.
    config.memory_init_cow(class == Class::Interpreter);
    if let Some(reservation) = settings.memory_reservation {
        config.memory_reservation(reservation.bytes());
        config.memory_reservation_for_growth(0);
    }
    if let Some(guard) = settings.memory_guard {
        config.memory_guard_size(guard.bytes());
        config.guard_before_linear_memory(guard.bytes() > 0);
    }

    let slots = class.slots(settings);
    let limits = class.limits();
    // A compact component has one or two memories and tables; an interpreter one, up to its limit.
    let per_slot = if class == Class::Compact { 2 } else { limits.memories };
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(limits.core_instances).min(1 << 20))
        .max_core_instances_per_component(limits.core_instances)
        .total_memories(slots.saturating_mul(per_slot))
        .max_memories_per_component(limits.memories)
        .total_tables(slots.saturating_mul(per_slot))
        .max_tables_per_component(limits.tables)
        .table_elements(limits.table_elements)
        .max_memory_size(settings.max_memory.bytes() as usize)
        .total_stacks(slots)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .async_stack_keep_resident(KEEP_RESIDENT)
        // Where the kernel has PAGEMAP_SCAN (Linux 6.7+), a freed slot resets only the pages its
        // instance dirtied, and keeps only those: without it the first `KEEP_RESIDENT` bytes of
        // every slot ever used are zeroed by `memset`, so each one stays fully resident (a
        // Rust agent's whole 128 KiB memory, where it dirtied 16 KiB), which made a pool slot
        // that a hibernated agent gave back cost 8 times what it cost in use.
        .pagemap_scan(Enabled::Auto);
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
                            // AGORA_INJECT_FAULT=epoch-ticker: a panicking ticker is restarted.
                            if crate::infra::faults::fires("epoch-ticker", "") {
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
