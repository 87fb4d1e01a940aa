//! Agents in each language: the `polyglot` sample agent built by each toolchain (Rust, C with
//! wasi-libc, Python with componentize-py, JavaScript with componentize-js). Per language: the
//! component's size, its first compile (into an empty cache), a warm load (from the cache), the
//! start of an agent (instantiate + init), and a call round trip from a Rust probe. Rust is the
//! baseline of every figure.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::services::probe_loop;
use super::{Report, spec};
use crate::capabilities::Grants;
use crate::manifest::{ByteSize, Shutdown};
use crate::runtime::Runtime;
use crate::runtime::agent;
use crate::runtime::modules::{Module, ModuleLoader};

struct Figures {
    size_kib: f64,
    cold_ms: f64,
    warm_ms: f64,
    start_ms: f64,
    call_us: f64,
}

async fn measure(runtime: &Arc<Runtime>, probe: &Module, language: &str, path: &Path) -> anyhow::Result<Figures> {
    const CALLS: u64 = 5_000;
    let size_kib = std::fs::metadata(path)?.len() as f64 / 1024.0;
    let cache = runtime.settings.data_dir.join(format!("bench-languages-{language}"));
    let _ = std::fs::remove_dir_all(&cache);
    let loader = ModuleLoader::new(&runtime.engines, cache.clone(), runtime.settings.max_memory.bytes())?;
    let name = format!("polyglot-{language}");
    let started = Instant::now();
    loader.load(&name, path, None)?;
    let cold_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let module: Module = Arc::new(loader.load(&name, path, None)?);
    let warm_ms = started.elapsed().as_secs_f64() * 1e3;

    let (exits, _keep) = mpsc::unbounded_channel();
    let agent_spec = Arc::new(spec(name.clone(), &name, &[], ByteSize::mib(64)));
    let started = Instant::now();
    let running = agent::start(runtime, &agent_spec, &module, exits, 0).await?;
    let start_ms = started.elapsed().as_secs_f64() * 1e3;
    let grants = Grants::NONE
        .with(crate::capabilities::Grant::of::<crate::capabilities::logging::Logging>())
        .with(crate::capabilities::Grant::of::<crate::messaging::host::Messaging>());
    let script = format!("repeat {CALLS} call {name} ping 5000");
    let call_us = probe_loop(runtime, probe, script, CALLS, grants, &format!("bench-caller-{language}")).await? / 1e3;
    running.stop(Shutdown::Infinity).await;
    let _ = std::fs::remove_dir_all(&cache);
    Ok(Figures { size_kib, cold_ms, warm_ms, start_ms, call_us })
}

pub async fn languages(
    runtime: &Arc<Runtime>,
    probe: &Module,
    agents: &Path,
    guests: &Path,
    report: &Report,
) -> anyhow::Result<()> {
    let components: [(&str, PathBuf); 4] = [
        ("rust", agents.join("polyglot.wasm")),
        ("c", guests.join("polyglot_c.wasm")),
        ("python", guests.join("polyglot_py.wasm")),
        ("javascript", guests.join("polyglot_js.wasm")),
    ];
    let mut rust: Option<Figures> = None;
    for (language, path) in components {
        if !path.is_file() {
            println!("{language}: {} is missing (make guests); skipped", path.display());
            continue;
        }
        let figures = measure(runtime, probe, language, &path).await?;
        let base = rust.as_ref();
        let baseline = |pick: fn(&Figures) -> f64| base.map(pick);
        let note = if base.is_some() { "(baseline: the Rust agent)" } else { "" };
        report.figure(&format!("{language}_component_size"), figures.size_kib, "KiB", baseline(|f| f.size_kib), note);
        report.figure(&format!("{language}_cold_compile"), figures.cold_ms, "ms", baseline(|f| f.cold_ms), note);
        let warm = figures.warm_ms + figures.start_ms;
        let note_warm =
            format!("(cached load {:.1} ms + instantiate and init {:.1} ms)", figures.warm_ms, figures.start_ms);
        report.figure(&format!("{language}_warm_start"), warm, "ms", baseline(|f| f.warm_ms + f.start_ms), &note_warm);
        report.figure(&format!("{language}_start"), figures.start_ms, "ms", baseline(|f| f.start_ms), note);
        let note_call = "(a Rust probe calls it: request and reply)";
        report.figure(&format!("{language}_call"), figures.call_us, "us", baseline(|f| f.call_us), note_call);
        if language == "rust" {
            rust = Some(figures);
        }
    }
    Ok(())
}
