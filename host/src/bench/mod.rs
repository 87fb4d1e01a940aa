//! Benchmarks (`agora bench`): each figure is printed next to a baseline measured in the same
//! run, so that the runtime's own overhead is visible, not just the machine's speed.
//!
//! - `density`: idle agents alive at once, and resident memory per agent (run first, because the
//!   others leave pool slots resident).
//! - `spawn`: agent start (registry entry, mailbox, instantiate, init, task) against raw
//!   `InstancePre` instantiate + init of the same component in an identical store.
//! - `messaging`: many ping-pong pairs exchanging messages through their mailboxes, against a
//!   raw host-to-guest `handle` call loop on one store.
//! - `call`: request/reply between two agents.
//! - `hibernation`: hibernate and wake latency against a spawn, what a hibernated agent costs,
//!   and durable agents' persist rate (see [`hibernation`]).
//! - `rate-limit`, `metric`, `events`, `config`, `locks`, `coordination`: the host services (see
//!   [`services`]).
//! - `ledger`, `auctions`, `metering`: the economy (see [`economics`]).
//! - `languages`: the same agent built from Rust, C, Python and JavaScript (see [`languages`]).
//! - `watched`: messaging with the dashboard's live stream open, against the same without.
//! - `upgrade`, `api`: operating a host: an upgrade's pause against a restart, and the admin
//!   API's agent listing with many agents (see [`operations`]).

mod beam;
mod cluster;
mod economics;
mod hibernation;
mod languages;
mod operations;
mod services;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};

use crate::bindings::Envelope;
use crate::capabilities::{Grants, ServiceSections};
use crate::manifest::{AgentSpec, ByteSize, HostSettings, Limits, Restart, Shutdown};
use crate::messaging::{Body, Message};
use crate::runtime::Runtime;
use crate::runtime::agent::{self, Exit, ExitReason, RunningAgent};
use crate::runtime::modules::Module;
use crate::runtime::state::AgentState;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Print one JSON object per line: {"bench", "value", "unit", "baseline"}.
    #[arg(long)]
    json: bool,
    /// Where the sample agents were built (`make agents`).
    #[arg(long, default_value = "target/wasm32-wasip2/agent")]
    agents: PathBuf,
    /// Where the Python, JavaScript and C agents were built (`make guests`).
    #[arg(long, default_value = "target/guests")]
    guests: PathBuf,
    /// Agents started for the spawn benchmark.
    #[arg(long, default_value_t = 5_000)]
    spawns: usize,
    /// Ping-pong pairs for the messaging benchmark.
    #[arg(long, default_value_t = 1_000)]
    pairs: usize,
    /// Round trips per pair.
    #[arg(long, default_value_t = 2_000)]
    rounds: u64,
    /// Crashes (each followed by its restart) for the restart benchmark.
    #[arg(long, default_value_t = 1_000)]
    restarts: usize,
    /// Calls for the call benchmark.
    #[arg(long, default_value_t = 200_000)]
    calls: u64,
    /// Idle agents for the density benchmark (at most the pool size, `--max-agents`).
    #[arg(long, default_value_t = 10_000)]
    density: usize,
    /// Pool slots (host.max_agents).
    #[arg(long, default_value_t = 10_000)]
    max_agents: u32,
    /// Address space reserved per memory slot (host.memory_reservation); wasmtime's default if unset.
    #[arg(long)]
    memory_reservation: Option<ByteSize>,
    /// Guard region per memory slot (host.memory_guard).
    #[arg(long)]
    memory_guard: Option<ByteSize>,
    /// Memory cap of each agent in the density benchmark.
    #[arg(long, default_value = "16MiB")]
    density_memory: ByteSize,
    /// Upgrades (and restarts, its baseline) for the upgrade benchmark.
    #[arg(long, default_value_t = 400)]
    upgrades: usize,
    /// Agents registered for the hibernation benchmark's memory figure (the pool, `--max-agents`,
    /// hibernates all but its size).
    #[arg(long, default_value_t = 50_000)]
    registered: usize,
    /// Agents spawned, hibernated and woken for the hibernation benchmark's latency figures.
    #[arg(long, default_value_t = 2_000)]
    wakes: usize,
    /// Then run Erlang/OTP's baseline script (`../shared/reference/beam/beam_baseline.escript`,
    /// with `escript` from Debian's `erlang-nox`) with the same pairs and round trips, and print
    /// messaging, call and spawn next to BEAM's figures from this sitting.
    #[arg(long, value_name = "SCRIPT")]
    beam: Option<PathBuf>,
    /// The NATS server the cluster benchmark starts (2.11 or later; `make nats` installs this one).
    #[arg(long, default_value = ".toolchains/python/bin/nats-server")]
    nats_server: PathBuf,
    /// Calls (one at a time) for the cluster benchmark; four times as many sends.
    #[arg(long, default_value_t = 5_000)]
    cluster_calls: usize,
    /// Run only these benchmarks (density, hibernation, spawn, messaging, fan-in, batch, call, restart, rate-limit, metric, events,
    /// config, locks, coordination, pools, ledger, auctions, metering, watched, upgrade, api, languages,
    /// cluster); all when empty (cluster only when its NATS server is there).
    only: Vec<String>,
}

pub(crate) struct Report {
    json: bool,
    /// Each figure printed so far, for those printed again next to another runtime's (`--beam`).
    recorded: std::sync::Mutex<Vec<(String, f64)>>,
}

impl Report {
    pub(crate) fn figure(&self, bench: &str, value: f64, unit: &str, baseline: Option<f64>, note: &str) {
        self.recorded.lock().unwrap_or_else(|p| p.into_inner()).push((bench.to_string(), value));
        if self.json {
            let mut line = serde_json::json!({ "bench": bench, "value": round(value), "unit": unit });
            if let Some(baseline) = baseline {
                line["baseline"] = serde_json::json!(round(baseline));
            }
            println!("{line}");
        } else {
            let baseline = baseline.map(|b| format!("   baseline {} {unit}", round(b))).unwrap_or_default();
            println!("{bench:<24} {:>12} {unit}{baseline}   {note}", round(value));
        }
    }

    /// A figure printed earlier in this run.
    pub(crate) fn recorded(&self, bench: &str) -> Option<f64> {
        let recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        recorded.iter().rev().find(|(name, _)| name == bench).map(|(_, value)| *value)
    }
}

fn round(value: f64) -> f64 {
    if value >= 100.0 { value.round() } else { (value * 100.0).round() / 100.0 }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let report = Report { json: args.json, recorded: Default::default() };
    let wants = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let defaults = HostSettings::default();
    let settings = HostSettings {
        data_dir: PathBuf::from(".agora"),
        max_agents: args.max_agents,
        memory_reservation: args.memory_reservation,
        memory_guard: args.memory_guard,
        // A slot cannot be larger than the address space reserved for it.
        max_memory: args.memory_reservation.map_or(defaults.max_memory, |r| r.min(defaults.max_memory)),
        ..defaults
    };
    let mut sections = ServiceSections::default();
    sections.config.values = toml::from_str("[bench]\nvalue = \"42\"\n")?;
    let mut runtime = Runtime::with_services(settings, &sections, true)?;
    let echo = runtime.add_module("echo", &args.agents.join("echo.wasm"))?;
    let ping_pong = runtime.add_module("ping-pong", &args.agents.join("ping_pong.wasm"))?;
    let probe = runtime.add_module("probe", &args.agents.join("probe.wasm"))?;
    let counter = runtime.add_module("counter", &args.agents.join("counter.wasm"))?;
    let misbehave = runtime.add_module("misbehave", &args.agents.join("misbehave.wasm"))?;
    let runtime = Arc::new(runtime);
    if wants("density") {
        density(&runtime, &echo, args.density, args.density_memory, &report).await?;
    }
    if wants("hibernation") {
        let sizes = hibernation::Sizes { sample: args.wakes, registered: args.registered, durable: 64, calls: 200 };
        hibernation::hibernation(&runtime, &counter, sizes, &report).await?;
    }
    if wants("spawn") {
        spawn(&runtime, &echo, args.spawns, false, &report).await?;
        spawn(&runtime, &echo, args.spawns, true, &report).await?;
    }
    if wants("messaging") {
        messaging(&runtime, &ping_pong, &echo, args.pairs, args.rounds, &report).await?;
    }
    if wants("fan-in") {
        fan_in(&runtime, &ping_pong, 1000, args.rounds / 10, &report).await?;
    }
    if wants("batch") {
        batch_raw(&runtime, &echo, &report).await?;
    }
    if wants("call") {
        call(&runtime, &ping_pong, args.calls, &report).await?;
    }
    if wants("restart") {
        restart(&runtime, &misbehave, args.restarts, false, &report).await?;
        restart(&runtime, &misbehave, args.restarts, true, &report).await?;
    }
    if wants("watched") {
        operations::watched(&runtime, &ping_pong, args.pairs, args.rounds, &report).await?;
    }
    if wants("rate-limit") {
        services::rate_limit(&report);
    }
    if wants("metric") {
        services::metric(&runtime, &report);
    }
    if wants("events") {
        services::event_append(&runtime, &report).await?;
    }
    if wants("config") {
        services::config_read(&runtime, &probe, &report).await?;
    }
    if wants("locks") {
        services::locks(&runtime, &probe, &report).await?;
    }
    if wants("coordination") {
        services::coordination(&runtime, &probe, &report).await?;
    }
    if wants("pools") {
        services::pool_checkout(&runtime, &probe, &echo, &report).await?;
    }
    if wants("ledger") {
        economics::transfers(&runtime, &report).await?;
    }
    if wants("auctions") {
        economics::auction_bids(&report).await?;
    }
    if wants("metering") {
        economics::metering(&runtime, &args.agents.join("probe.wasm"), &report).await?;
    }
    if wants("upgrade") {
        operations::upgrade(&runtime, &args.agents, args.upgrades, &report).await?;
    }
    if wants("api") {
        operations::api_ps(&runtime, &echo, args.density, 100, &report).await?;
    }
    if wants("languages") {
        languages::languages(&runtime, &probe, &args.agents, &args.guests, &report).await?;
    }
    if wants("cluster") {
        if args.nats_server.is_file() {
            let echo = args.agents.join("echo.wasm");
            cluster::cluster(&args.nats_server, &echo, args.cluster_calls, &report).await?;
        } else if !args.only.is_empty() {
            anyhow::bail!("{} is missing: `make nats` installs it (or --nats-server PATH)", args.nats_server.display());
        } else {
            eprintln!("cluster: skipped, {} is missing (`make nats`)", args.nats_server.display());
        }
    }
    if let Some(script) = &args.beam {
        // Agora's agents are stopped: BEAM has the machine to itself.
        beam::beam(script, BEAM_SPAWNS, args.pairs, args.rounds, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

const BENCH_BUDGET: Duration = Duration::from_secs(3600);
/// Idle processes BEAM spawns for its spawn figure (the script's own default).
const BEAM_SPAWNS: usize = 100_000;

pub(crate) fn spec(name: String, module: &str, config: &[(&str, String)], memory: ByteSize) -> AgentSpec {
    AgentSpec {
        config: config.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        grants: Grants::all(),
        restart: Restart::Temporary,
        shutdown: Shutdown::Infinity,
        // A benchmark's callback runs for as long as its batch takes, which depends on the
        // machine: the budget must not be what ends it.
        ..AgentSpec::new(name, module, Limits { memory, budget: BENCH_BUDGET, ..Limits::default() })
    }
}

/// `<name>_p50` and `<name>_p99` of `times` (µs), each next to the same percentile of
/// `baseline`; `note` words the ratio.
pub(crate) fn report_percentiles(
    report: &Report,
    name: &str,
    times: &mut [Duration],
    baseline: &mut [Duration],
    note: impl Fn(f64) -> String,
) {
    times.sort();
    baseline.sort();
    for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (value, base) = (percentile(times, p), percentile(baseline, p));
        report.figure(&format!("{name}_{label}"), value, "us", Some(base), &note(value / base));
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[index].as_secs_f64() * 1e6
}

pub(crate) fn error(e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}

/// Warm instances kept of a module for the `_warm` benchmarks.
const BENCH_WARM: u32 = 32;

/// Until the warmer has filled `module`'s shelf (and so sits idle), so that a timed start takes a
/// warm instance and shares the machine with no refill.
async fn until_warm(runtime: &Arc<Runtime>, module: &Module) -> anyhow::Result<()> {
    let started = Instant::now();
    crate::runtime::warm::WarmPools::fill_all(runtime);
    while !runtime.warm.is_full(&module.name) {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "{}'s warm instances did not fill within 10 s (is the pool full? --max-agents)",
            module.name
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(())
}

/// Spawns, cold (`warm` false: named `spawn`) or from a warm pool (`spawn_warm`), each next to
/// a raw `InstancePre` instantiate + init of the same component.
async fn spawn(
    runtime: &Arc<Runtime>,
    module: &Module,
    count: usize,
    warm: bool,
    report: &Report,
) -> anyhow::Result<()> {
    // Each start is kept running, next to its raw store: with the warm instances, all must fit.
    let count = if warm {
        runtime.warm.configure(&module.name, BENCH_WARM);
        count.min((runtime.settings.max_agents as usize).saturating_sub(2 * BENCH_WARM as usize) / 2)
    } else {
        count
    };
    let (exits, _keep) = mpsc::unbounded_channel();
    let mut raw_times = Vec::with_capacity(count);
    let mut agora_times = Vec::with_capacity(count);
    let mut raw_stores = Vec::with_capacity(count);
    let mut agents = Vec::with_capacity(count);
    let raw_spec = Arc::new(spec("raw".into(), &module.name, &[], Limits::default().memory));
    // Interleaved, so that both see the same pool occupancy and machine state.
    for i in 0..count {
        let started = Instant::now();
        let state = AgentState::new(runtime.clone(), u64::MAX - i as u64, "raw".into(), raw_spec.clone(), None);
        let mut store = agent::new_store(module.pre.engine(), state);
        store.set_epoch_deadline(1);
        let instance = module.pre.instantiate_async(&mut store).await?;
        instance.call_init(&mut store, &[]).await?.map_err(anyhow::Error::msg)?;
        raw_times.push(started.elapsed());
        raw_stores.push(store);

        let spec = Arc::new(spec(format!("spawn-{i}"), "echo", &[], Limits::default().memory));
        if warm {
            until_warm(runtime, module).await?;
        }
        let started = Instant::now();
        let agent = agent::start(runtime, &spec, module, exits.clone(), 0).await?;
        agora_times.push(started.elapsed());
        agents.push(agent);
    }
    let (name, how) = if warm { ("spawn_warm", "from a warm pool") } else { ("spawn", "cold") };
    report_percentiles(report, name, &mut agora_times, &mut raw_times, |ratio| {
        format!("({ratio:.2}x raw, {count} starts, {how})")
    });
    drop(raw_stores);
    stop_all(agents).await;
    if warm {
        runtime.warm.configure(&module.name, 0);
    }
    Ok(())
}

pub(crate) async fn stop_all(agents: Vec<RunningAgent>) {
    for agent in &agents {
        agent.request_shutdown();
    }
    for agent in agents {
        agent.stop(Shutdown::Infinity).await;
    }
}

/// Start pairs of ping-pong agents (ping waiting for a start message), fire them all, and wait
/// until every agent has finished. Returns the elapsed time.
pub(crate) async fn run_pairs(
    runtime: &Arc<Runtime>,
    module: &Module,
    pairs: usize,
    rounds: u64,
    mode: &str,
) -> anyhow::Result<Duration> {
    run_pairs_carrying(runtime, module, pairs, rounds, mode, 8).await
}

/// [`run_pairs`] with messages of `payload` bytes.
async fn run_pairs_carrying(
    runtime: &Arc<Runtime>,
    module: &Module,
    pairs: usize,
    rounds: u64,
    mode: &str,
    payload: usize,
) -> anyhow::Result<Duration> {
    let (exits, mut exited) = mpsc::unbounded_channel::<Exit>();
    let mut pings = Vec::with_capacity(pairs);
    let mut agents = Vec::with_capacity(pairs * 2);
    for i in 0..pairs {
        let pong = spec(format!("{mode}-pong-{i}"), "ping-pong", &[("role", "pong".into())], ByteSize::mib(16));
        agents.push(agent::start(runtime, &Arc::new(pong.clone()), module, exits.clone(), 0).await?);
        let config = [
            ("role", "ping".into()),
            ("peer", pong.name.clone()),
            ("rounds", rounds.to_string()),
            ("mode", mode.into()),
            ("autostart", "false".into()),
            ("payload", payload.to_string()),
        ];
        let mut ping = spec(format!("{mode}-ping-{i}"), "ping-pong", &config, ByteSize::mib(16));
        // A pinger makes all its round trips in one callback, and each `call` that waits across
        // an epoch tick is charged that tick: on a slow machine the default 1 s budget would end
        // the run (`cpu_budget`) instead of measuring it.
        ping.limits.budget = Duration::from_secs(3600);
        let agent = agent::start(runtime, &Arc::new(ping), module, exits.clone(), 0).await?;
        pings.push(agent.id);
        agents.push(agent);
    }
    let started = Instant::now();
    for ping in &pings {
        runtime.router.try_deliver(*ping, Message::cast(None, b"start".to_vec())).map_err(error)?;
    }
    for _ in 0..pairs * 2 {
        let exit = exited.recv().await.expect("agents report their exits");
        anyhow::ensure!(matches!(exit.reason, ExitReason::Normal), "{} exited: {:?}", exit.name, exit.reason);
    }
    Ok(started.elapsed())
}

/// Raw host-to-guest `handle` calls on one store: the floor under any message delivery.
async fn raw_handle_rate(runtime: &Arc<Runtime>, module: &Module, calls: u64, payload: usize) -> anyhow::Result<f64> {
    let raw_spec = Arc::new(spec("raw".into(), &module.name, &[], Limits::default().memory));
    let state = AgentState::new(runtime.clone(), u64::MAX, "raw".into(), raw_spec, None);
    let mut store = agent::new_store(module.pre.engine(), state);
    store.set_epoch_deadline(1);
    let instance = module.pre.instantiate_async(&mut store).await?;
    instance.call_init(&mut store, &[]).await?.map_err(anyhow::Error::msg)?;
    let mut bytes = vec![0; payload.max(8)];
    bytes[..8].copy_from_slice(&7u64.to_le_bytes());
    let envelope = Envelope { sender: Some(1), correlation: None, topic: None, payload: bytes };
    let started = Instant::now();
    for _ in 0..calls {
        store.set_epoch_deadline(1);
        instance.call_handle(&mut store, &envelope).await?.map_err(error)?;
    }
    Ok(calls as f64 / started.elapsed().as_secs_f64())
}

/// Raw batched delivery on one store: `calls` casts queued in a mailbox, then handed to the
/// instance in `handle-batch` entries of up to `host.max_batch` (the floor under batched
/// delivery, next to [`raw_handle_rate`]'s). Items per second.
async fn raw_batch_rate(runtime: &Arc<Runtime>, module: &Module, calls: u64) -> anyhow::Result<f64> {
    let raw_spec = Arc::new(spec("raw-batch".into(), &module.name, &[], Limits::default().memory));
    let id = u64::MAX - 1;
    let state = AgentState::new(runtime.clone(), id, "raw-batch".into(), raw_spec, None);
    let mut store = agent::new_store(module.pre.engine(), state);
    store.set_epoch_deadline(1);
    let instance = module.pre.instance_pre().instantiate_async(&mut store).await?;
    let index = module.batch.context("the module has no handle-batch export")?;
    let handle_batch: crate::runtime::batch::HandleBatch = instance.get_typed_func(&mut store, index)?;
    let agent = module.indices.load(&mut store, &instance)?;
    agent.call_init(&mut store, &[]).await?.map_err(anyhow::Error::msg)?;
    let mut inbox = runtime.router.open(id, 100_000);
    let mut payload = vec![0; 8];
    payload.copy_from_slice(&7u64.to_le_bytes());
    let mut elapsed = Duration::ZERO;
    let mut done = 0;
    while done < calls {
        let round = (calls - done).min(10_000);
        for _ in 0..round {
            runtime.router.try_deliver(id, Message::cast(Some(1), payload.clone())).map_err(error)?;
        }
        let started = Instant::now();
        let (back, _) = crate::runtime::batch::drain(&mut store, &handle_batch, inbox).await?;
        elapsed += started.elapsed();
        inbox = back;
        done += round;
    }
    runtime.router.close(id, &[], &mut inbox);
    Ok(calls as f64 / elapsed.as_secs_f64())
}

async fn messaging(
    runtime: &Arc<Runtime>,
    ping_pong: &Module,
    echo: &Module,
    pairs: usize,
    rounds: u64,
    report: &Report,
) -> anyhow::Result<()> {
    let baseline = raw_handle_rate(runtime, echo, 1_000_000, 8).await?;
    let elapsed = run_pairs(runtime, ping_pong, pairs, rounds, "send").await?;
    let messages = (pairs as u64 * rounds * 2) as f64;
    let note = format!("({pairs} pairs x {rounds} round trips; baseline: raw handle calls/s on one store)");
    report.figure("messaging", messages / elapsed.as_secs_f64(), "msgs/s", Some(baseline), &note);

    // One pair: every message wakes the other agent's task, none finds it already running.
    let rounds_1 = rounds * 50;
    let elapsed = run_pairs(runtime, ping_pong, 1, rounds_1, "send").await?;
    let note = format!("(1 pair x {rounds_1} round trips; baseline: raw handle calls/s on one store)");
    report.figure("messaging_1_pair", (rounds_1 * 2) as f64 / elapsed.as_secs_f64(), "msgs/s", Some(baseline), &note);

    // Payloads that must be copied: out of the sender's memory, through the mailbox, into the
    // receiver's; the baseline copies them once, into the guest.
    for (bench, payload, pairs, rounds) in
        [("messaging_4k", 4 << 10, 100, 2_000), ("messaging_64k", 64 << 10, 100, 200)]
    {
        let baseline = raw_handle_rate(runtime, echo, 100_000, payload).await?;
        let elapsed = run_pairs_carrying(runtime, ping_pong, pairs, rounds, "send", payload).await?;
        let messages = (pairs as u64 * rounds * 2) as f64;
        let note = format!(
            "({pairs} pairs x {rounds} round trips of {} KiB; baseline: raw handle calls/s with that payload)",
            payload >> 10
        );
        report.figure(bench, messages / elapsed.as_secs_f64(), "msgs/s", Some(baseline), &note);
    }
    Ok(())
}

/// Fan-in: `pings` agents each make `rounds` round trips with one shared pong, whose mailbox
/// holds one message from each ping at a time, so batched delivery hands them out several per
/// guest entry. The baseline is the same run with each message delivered alone
/// (`host.max_batch = 1`).
async fn fan_in(
    runtime: &Arc<Runtime>,
    module: &Module,
    pings: usize,
    rounds: u64,
    report: &Report,
) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    let batched = runtime.max_batch.load(Ordering::Relaxed);
    let mut rates = Vec::new();
    for (mode, max_batch) in [("fanin-alone", 1), ("fanin", batched)] {
        runtime.max_batch.store(max_batch, Ordering::Relaxed);
        let run = fan_in_once(runtime, module, pings, rounds, mode).await;
        runtime.max_batch.store(batched, Ordering::Relaxed);
        let (elapsed, pong_batched) = run?;
        rates.push(((pings as u64 * rounds * 2) as f64 / elapsed.as_secs_f64(), pong_batched));
    }
    let (alone, _) = rates[0];
    let (batched_rate, pong_batched) = rates[1];
    let share = pong_batched as f64 / (pings as u64 * rounds) as f64;
    let note = format!(
        "({pings} pings x {rounds} round trips with one pong; {:.0}% of the pong's messages came in a batch; \
         baseline: the same with host.max_batch = 1)",
        share * 100.0
    );
    report.figure("messaging_fan_in", batched_rate, "msgs/s", Some(alone), &note);
    Ok(())
}

/// The floor under batched delivery: one store, no tasks, no senders.
async fn batch_raw(runtime: &Arc<Runtime>, echo: &Module, report: &Report) -> anyhow::Result<()> {
    let raw = raw_handle_rate(runtime, echo, 1_000_000, 8).await?;
    let batch_raw = raw_batch_rate(runtime, echo, 1_000_000).await?;
    let most = runtime.max_batch.load(std::sync::atomic::Ordering::Relaxed);
    let note =
        format!("(1,000,000 casts on one store in handle-batch entries of up to {most}; baseline: raw handle calls/s)");
    report.figure("batch_raw", batch_raw, "msgs/s", Some(raw), &note);
    Ok(())
}

/// One fan-in run: the time until every agent has finished, and how many of the pong's
/// messages were handed out within a batch.
async fn fan_in_once(
    runtime: &Arc<Runtime>,
    module: &Module,
    pings: usize,
    rounds: u64,
    mode: &str,
) -> anyhow::Result<(Duration, u64)> {
    let (exits, mut exited) = mpsc::unbounded_channel::<Exit>();
    let pong_config = [("role", "pong".into()), ("peers", pings.to_string())];
    let mut pong = spec(format!("{mode}-pong"), "ping-pong", &pong_config, ByteSize::mib(16));
    pong.limits.mailbox = pong.limits.mailbox.max(pings as u32 * 2);
    let pong = agent::start(runtime, &Arc::new(pong), module, exits.clone(), 0).await?;
    let pong_stats = runtime.directory.get(pong.id).map(|listed| listed.stats.clone());
    let mut agents = vec![pong];
    for i in 0..pings {
        let config = [
            ("role", "ping".into()),
            ("peer", format!("{mode}-pong")),
            ("rounds", rounds.to_string()),
            ("autostart", "false".into()),
        ];
        let mut ping = spec(format!("{mode}-ping-{i}"), "ping-pong", &config, ByteSize::mib(16));
        ping.limits.budget = BENCH_BUDGET;
        agents.push(agent::start(runtime, &Arc::new(ping), module, exits.clone(), 0).await?);
    }
    let started = Instant::now();
    for ping in &agents[1..] {
        runtime.router.try_deliver(ping.id, Message::cast(None, b"start".to_vec())).map_err(error)?;
    }
    for _ in 0..=pings {
        let exit = exited.recv().await.expect("agents report their exits");
        anyhow::ensure!(matches!(exit.reason, ExitReason::Normal), "{} exited: {:?}", exit.name, exit.reason);
    }
    let elapsed = started.elapsed();
    drop(agents);
    Ok((elapsed, pong_stats.map_or(0, |stats| stats.batched.get())))
}

/// Restart after a crash: a permanent child of a one-for-one supervisor panics, and the time
/// until its successor (found by its name) has answered a call is measured, against a cold
/// start of the same module and its first answer.
/// `warm`: both the restarts and the baseline starts take warm instances (`restart_warm`).
async fn restart(
    runtime: &Arc<Runtime>,
    module: &Module,
    count: usize,
    warm: bool,
    report: &Report,
) -> anyhow::Result<()> {
    use crate::manifest::{AutoShutdown, ChildSpec, Strategy, SupervisorSpec};
    if warm {
        runtime.warm.configure(&module.name, BENCH_WARM);
    }
    const ANSWER: Duration = Duration::from_secs(10);
    let crasher = Arc::new(AgentSpec {
        restart: Restart::Permanent,
        ..spec("restart-crasher".into(), &module.name, &[], Limits::default().memory)
    });
    let tree = SupervisorSpec {
        name: "restart-bench".into(),
        strategy: Strategy::OneForOne,
        // Every crash is restarted: the intensity is not what is measured.
        intensity: u32::MAX,
        period: Duration::from_secs(1),
        backoff: None,
        restart: Restart::Permanent,
        shutdown: Shutdown::Infinity,
        children: vec![ChildSpec::Agent(crasher.clone())],
        max_children: None,
        auto_shutdown: AutoShutdown::Never,
        significant: false,
    };
    let (exits, _keep) = mpsc::unbounded_channel();
    let supervisor = crate::supervision::start_supervisor(runtime, &tree, exits.clone()).await.map_err(error)?;
    let mut restarts = Vec::with_capacity(count);
    let mut starts = Vec::with_capacity(count);
    for i in 0..count {
        let crashed = runtime.registry.lookup(&crasher.name).context("the crasher is registered")?;
        if warm {
            until_warm(runtime, module).await?;
        }
        let started = Instant::now();
        runtime.router.try_deliver(crashed, Message::cast(None, b"panic".to_vec())).map_err(error)?;
        let successor = loop {
            match runtime.registry.lookup(&crasher.name) {
                Some(id) if id != crashed => break id,
                _ => tokio::task::yield_now().await,
            }
        };
        runtime.router.call(None, successor, b"tick".to_vec(), ANSWER).await.map_err(error)?;
        restarts.push(started.elapsed());

        let cold = Arc::new(spec(format!("restart-baseline-{i}"), &module.name, &[], Limits::default().memory));
        if warm {
            until_warm(runtime, module).await?;
        }
        let started = Instant::now();
        let agent = agent::start(runtime, &cold, module, exits.clone(), 0).await?;
        runtime.router.call(None, agent.id, b"tick".to_vec(), ANSWER).await.map_err(error)?;
        starts.push(started.elapsed());
        stop_all(vec![agent]).await;
    }
    let (name, how) = if warm { ("restart_warm", "warm") } else { ("restart", "cold") };
    report_percentiles(report, name, &mut restarts, &mut starts, |ratio| {
        format!("({ratio:.2}x a {how} start and first answer; {count} panics of a permanent child)")
    });
    supervisor.stop(Shutdown::Infinity).await;
    if warm {
        runtime.warm.configure(&module.name, 0);
    }
    Ok(())
}

async fn call(runtime: &Arc<Runtime>, ping_pong: &Module, calls: u64, report: &Report) -> anyhow::Result<()> {
    let single = run_pairs(runtime, ping_pong, 1, calls, "call").await?;
    let send = run_pairs(runtime, ping_pong, 1, calls, "send").await?;
    let note = "(one caller, one callee; baseline: the same pair with two one-way sends per round trip)";
    report.figure(
        "call",
        calls as f64 / single.as_secs_f64(),
        "calls/s",
        Some(calls as f64 / send.as_secs_f64()),
        note,
    );
    let pairs = 100;
    let per_pair = calls / pairs as u64;
    let many = run_pairs(runtime, ping_pong, pairs, per_pair, "call").await?;
    let rate = (per_pair * pairs as u64) as f64 / many.as_secs_f64();
    report.figure("call_100_pairs", rate, "calls/s", None, "(100 caller/callee pairs)");
    Ok(())
}

/// Memory mappings of this process: wasmtime's pool splits them per slot, and the kernel caps
/// them at `vm.max_map_count`.
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |maps| maps.lines().count())
}

use crate::infra::resident_bytes;

async fn density(
    runtime: &Arc<Runtime>,
    module: &Module,
    count: usize,
    memory: ByteSize,
    report: &Report,
) -> anyhow::Result<()> {
    let (exits, _keep) = mpsc::unbounded_channel();
    let before = resident_bytes();
    let started = Instant::now();
    let mut agents = Vec::with_capacity(count);
    for i in 0..count {
        let spec = Arc::new(spec(format!("idle-{i}"), "echo", &[], memory));
        match agent::start(runtime, &spec, module, exits.clone(), 0).await {
            Ok(agent) => agents.push(agent),
            Err(e) => {
                tracing::warn!("density: stopped at {i} live agents: {e}");
                break;
            }
        }
    }
    let took = started.elapsed();
    let live = agents.len();
    // Every agent must be alive and answer, not just be allocated.
    let mut answers = Vec::with_capacity(live);
    for agent in &agents {
        let (reply, answer) = oneshot::channel();
        let message = Message { sender: None, topic: None, body: Body::Bytes(b"ping".to_vec()), reply: Some(reply) };
        runtime.router.try_deliver(agent.id, message).map_err(error)?;
        answers.push(answer);
    }
    for answer in answers {
        let reply = answer.await?.map_err(error)?;
        anyhow::ensure!(reply == b"ping", "an idle agent answered {reply:?}");
    }
    let after = resident_bytes();
    let per_agent = after.saturating_sub(before) as f64 / live.max(1) as f64;
    report.figure(
        "density_live_agents",
        live as f64,
        "agents",
        None,
        &format!("(started in {:.2}s)", took.as_secs_f64()),
    );
    let note = format!("(RSS {} MiB -> {} MiB, all answering)", before >> 20, after >> 20);
    report.figure("density_rss_per_agent", per_agent / 1024.0, "KiB", None, &note);
    let live_mappings = mappings();
    stop_all(agents).await;
    let limit = std::fs::read_to_string("/proc/sys/vm/max_map_count").unwrap_or_default();
    let note = format!("({} after they stopped; vm.max_map_count = {})", mappings(), limit.trim());
    report.figure("density_mappings", live_mappings as f64, "maps", None, &note);
    Ok(())
}
