//! Benchmarks of the host services, each next to its baseline:
//!
//! - `rate_limit`: one limiter check (shared, and keyed over 1,024 keys) against governor's own
//!   direct check.
//! - `metric`: a per-message counter update on the host path (the agent's own cell) against a
//!   held `metrics` counter handle, and naming the metric per call.
//! - `event_append`: durable appends from many concurrent appenders (group commit) against one
//!   appender waiting for each commit (an fsync per event).
//! - `config_read`: `config.get` from a guest against the same host call when it is denied (the
//!   bare cost of a host call with a string argument).

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{Quota, RateLimiter};
use tokio::sync::mpsc;

use super::{Report, spec};
use crate::capabilities::Grants;
use crate::capabilities::events::{EventsService, EventsSettings, NewEvent};
use crate::capabilities::rate_limits::Limiter;
use crate::manifest::ByteSize;
use crate::runtime::Runtime;
use crate::runtime::agent;
use crate::runtime::modules::Module;

fn per_op(started: Instant, ops: u64) -> f64 {
    started.elapsed().as_nanos() as f64 / ops as f64
}

pub fn rate_limit(report: &Report) {
    const CHECKS: u64 = 20_000_000;
    // Never limiting, so that every check takes the same (passing) path.
    let quota = Quota::with_period(Duration::from_nanos(1)).unwrap().allow_burst(NonZeroU32::MAX);
    let raw = RateLimiter::direct(quota);
    let started = Instant::now();
    for _ in 0..CHECKS {
        black_box(raw.check().is_ok());
    }
    let baseline = per_op(started, CHECKS);

    let shared: Limiter<()> = Limiter::new(quota, false);
    let started = Instant::now();
    for _ in 0..CHECKS {
        black_box(shared.check(&()).is_ok());
    }
    report.figure(
        "rate_limit_check",
        per_op(started, CHECKS),
        "ns",
        Some(baseline),
        "(shared limiter; baseline: governor direct check)",
    );

    // As an agent's check runs: hash the agent's key, then check that key's budget.
    let keyed: Limiter<u64> = Limiter::new(quota, true);
    let hasher = foldhash::quality::RandomState::default();
    let keys: Vec<String> = (0..1024).map(|i| format!("client-{i}")).collect();
    let started = Instant::now();
    for i in 0..CHECKS {
        let key = crate::capabilities::rate_limits::key_of(&hasher, &keys[i as usize & 1023]);
        black_box(keyed.check(&key).is_ok());
    }
    report.figure(
        "rate_limit_check_keyed",
        per_op(started, CHECKS),
        "ns",
        Some(baseline),
        "(1,024 keys; baseline: governor direct check)",
    );
}

pub fn metric(runtime: &Runtime, report: &Report) {
    const INCREMENTS: u64 = 50_000_000;
    let _ = runtime;
    let agent = crate::runtime::stats::AgentStats::default();
    let started = Instant::now();
    for _ in 0..INCREMENTS {
        black_box(&agent).sent();
    }
    let cell_ns = per_op(started, INCREMENTS);
    let held = metrics::counter!("agora_bench_increments_total", "agent" => "bench");
    let started = Instant::now();
    for _ in 0..INCREMENTS {
        held.increment(black_box(1));
    }
    let held_ns = per_op(started, INCREMENTS);
    const LOOKUPS: u64 = 2_000_000;
    let started = Instant::now();
    for _ in 0..LOOKUPS {
        metrics::counter!("agora_bench_increments_total", "agent" => "bench").increment(black_box(1));
    }
    let lookup_ns = per_op(started, LOOKUPS);
    let note = format!(
        "(the message path's per-agent cell; baseline: a held `metrics` counter; naming it per call: {lookup_ns:.1} ns)"
    );
    report.figure("metric_increment", cell_ns, "ns", Some(held_ns), &note);
}

pub async fn event_append(runtime: &Runtime, report: &Report) -> anyhow::Result<()> {
    const APPENDERS: usize = 4096;
    const EVENTS: usize = 800_000;
    let dir = runtime.settings.data_dir.join("bench-events");
    let _ = std::fs::remove_dir_all(&dir);
    // Opened as the host opens its own, subscription hook included.
    let settings = EventsSettings { retain_events: None, ..EventsSettings::default() };
    let store = Arc::new(EventsService::open(&settings, &dir, runtime.router.clone())?);
    let names: Vec<Arc<str>> = (0..APPENDERS).map(|i| format!("appender-{i}").into()).collect();
    let event = |i: usize| NewEvent {
        kind: "bench".into(),
        agent: Some(names[i % APPENDERS].clone()),
        correlation: None,
        payload: vec![b'x'; 100],
    };

    // Baseline: one appender, so every event waits for a commit of its own.
    let started = Instant::now();
    let mut single = 0usize;
    while started.elapsed() < Duration::from_secs(2) {
        store.store.append(event(single)).await?;
        single += 1;
    }
    let baseline = single as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut tasks = Vec::with_capacity(APPENDERS);
    for appender in 0..APPENDERS {
        let store = store.clone();
        let events: Vec<NewEvent> = (0..EVENTS / APPENDERS).map(|i| event(appender + i * APPENDERS)).collect();
        tasks.push(tokio::spawn(async move {
            for event in events {
                store.store.append(event).await?;
            }
            Ok::<_, crate::capabilities::events::StoreError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let rate = (EVENTS / APPENDERS * APPENDERS) as f64 / started.elapsed().as_secs_f64();
    let note = format!(
        "({APPENDERS} concurrent appenders, 100-byte payloads, each acknowledged once durable; baseline: one appender)"
    );
    report.figure("event_append_durable", rate, "events/s", Some(baseline), &note);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Time a probe agent that runs `script` (`ops` operations) in its `init`; the time per operation.
pub(super) async fn probe_loop(
    runtime: &Arc<Runtime>,
    probe: &Module,
    script: String,
    ops: u64,
    grants: Grants,
    name: &str,
) -> anyhow::Result<f64> {
    let (exits, _keep) = mpsc::unbounded_channel();
    let mut spec =
        spec(name.into(), &probe.name, &[("script", script), ("run_in_init", "true".into())], ByteSize::mib(16));
    spec.grants = grants;
    if runtime.services.economics.pricing().is_some() {
        // Enough to pay for any benchmark's compute.
        spec.wallet = 1 << 50;
    }
    spec.limits.budget = Duration::from_secs(600);
    let spec = Arc::new(spec);
    let started = Instant::now();
    let running = agent::start(runtime, &spec, probe, exits, 0).await?;
    let took = per_op(started, ops);
    running.stop(crate::manifest::Shutdown::Infinity).await;
    Ok(took)
}

pub async fn config_read(runtime: &Arc<Runtime>, probe: &Module, report: &Report) -> anyhow::Result<()> {
    const READS: u64 = 500_000;
    let with_logging = Grants::NONE.with(crate::capabilities::Grant::of::<crate::capabilities::logging::Logging>());
    let script = || format!("repeat {READS} config-get bench.value");
    let baseline = probe_loop(runtime, probe, script(), READS, with_logging, "bench-config-denied").await?;
    let granted = with_logging.with(crate::capabilities::Grant::of::<crate::capabilities::config::Config>());
    let read = probe_loop(runtime, probe, script(), READS, granted, "bench-config").await?;
    let note = "(guest config.get of a 2-byte value, guest loop included; baseline: the same call, denied)";
    report.figure("config_read", read, "ns", Some(baseline), note);
    Ok(())
}

/// Per-core cycles/s of one agent per core, each cycling over `per_agent` locks of its own.
async fn lock_cycles_per_core(
    runtime: &Arc<Runtime>,
    probe: &Module,
    prefix: &str,
    per_agent: u32,
    cycles: u64,
    grants: Grants,
) -> anyhow::Result<f64> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    let mut agents = Vec::new();
    for core in 0..cores {
        let (runtime, probe) = (runtime.clone(), probe.clone());
        let script = format!("lock-cycle {prefix}-{core} {per_agent} {cycles}");
        let name = format!("bench-{prefix}-{core}");
        agents.push(tokio::spawn(async move { probe_loop(&runtime, &probe, script, cycles, grants, &name).await }));
    }
    for agent in agents {
        agent.await??;
    }
    Ok((cycles * cores as u64) as f64 / started.elapsed().as_secs_f64() / cores as f64)
}

pub async fn locks(runtime: &Arc<Runtime>, probe: &Module, report: &Report) -> anyhow::Result<()> {
    const CYCLES: u64 = 300_000;
    let logging = Grants::NONE.with(crate::capabilities::Grant::of::<crate::capabilities::logging::Logging>());
    let granted = logging.with(crate::capabilities::Grant::of::<crate::capabilities::coordination::Coordination>());
    // Baseline: two bare host calls (denied `config.get`s) per cycle.
    let bare = format!("repeat {} config-get x", 2 * CYCLES);
    let denied = probe_loop(runtime, probe, bare, CYCLES, logging, "bench-lock-bare").await?;
    let script = format!("lock-cycle solo 1 {CYCLES}");
    let single = probe_loop(runtime, probe, script, CYCLES, granted, "bench-lock").await?;
    let note = "(guest try-acquire + release of a free lock; baseline: two bare host calls from the same loop)";
    report.figure("lock_uncontended", single, "ns", Some(denied), note);

    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Long enough (~1 s) that creating the 10,000 entries on the first pass is not the figure.
    const THROUGHPUT_CYCLES: u64 = 3_000_000;
    let few = lock_cycles_per_core(runtime, probe, "few", 1, THROUGHPUT_CYCLES, granted).await?;
    let per_agent = (10_000 / cores) as u32;
    let many = lock_cycles_per_core(runtime, probe, "many", per_agent, THROUGHPUT_CYCLES, granted).await?;
    let note = format!(
        "({cores} agents at once, one per core, over 10,000 locks: {:.2}x; baseline: the same agents over one lock each)",
        many / few
    );
    report.figure("lock_throughput_10k_locks", many, "cycles/s per core", Some(few), &note);
    Ok(())
}

/// Start `count` probe agents that join `group` (voting `vote` on consensus requests).
async fn members(
    runtime: &Arc<Runtime>,
    probe: &Module,
    group: &str,
    count: usize,
    vote: &str,
) -> anyhow::Result<Vec<crate::runtime::agent::RunningAgent>> {
    let (exits, _keep) = mpsc::unbounded_channel();
    let grants = Grants::NONE
        .with(crate::capabilities::Grant::of::<crate::capabilities::logging::Logging>())
        .with(crate::capabilities::Grant::of::<crate::messaging::host::Messaging>())
        .with(crate::capabilities::Grant::of::<crate::capabilities::coordination::Coordination>());
    let mut agents = Vec::new();
    for i in 0..count {
        let config = [("script", format!("join {group}")), ("run_in_init", "true".into()), ("vote", vote.into())];
        let mut spec = spec(format!("bench-{group}-{i}"), &probe.name, &config, ByteSize::mib(16));
        spec.grants = grants;
        agents.push(agent::start(runtime, &Arc::new(spec), probe, exits.clone(), 0).await?);
    }
    Ok(agents)
}

pub async fn coordination(runtime: &Arc<Runtime>, probe: &Module, report: &Report) -> anyhow::Result<()> {
    // Consensus: a proposer's rounds among 5 members that accept, majority quorum.
    const ROUNDS: u64 = 2_000;
    let voters = members(runtime, probe, "bench-council", 5, "accept").await?;
    let grants = Grants::NONE
        .with(crate::capabilities::Grant::of::<crate::capabilities::logging::Logging>())
        .with(crate::capabilities::Grant::of::<crate::capabilities::coordination::Coordination>());
    let script = format!("repeat {ROUNDS} propose bench-council majority 5000 value");
    let round = probe_loop(runtime, probe, script, ROUNDS, grants, "bench-proposer").await?;
    let call = super::run_pairs(runtime, &probe_ping_pong(runtime)?, 1, 20_000, "call").await?;
    let call_us = call.as_secs_f64() * 1e6 / 20_000.0;
    let note = "(5 members voting accept, majority; decided at the 3rd accept and recorded durably; baseline: one agent-to-agent call)";
    report.figure("consensus_round", round / 1000.0, "us", Some(call_us), note);
    for voter in voters {
        voter.stop(crate::manifest::Shutdown::BrutalKill).await;
    }

    // Failover: kill the leader of a group of 5; the next member leads as soon as its exit is
    // cleaned up. Timed from the kill to the new leadership, 200 times.
    let mut times = Vec::new();
    for i in 0..200 {
        let group = format!("bench-failover-{i}");
        let mut group_members = members(runtime, probe, &group, 5, "ignore").await?;
        let before = runtime.services.coordination.elections.leadership(&group);
        let leader = group_members.remove(0);
        let started = Instant::now();
        leader.stop(crate::manifest::Shutdown::BrutalKill).await;
        while runtime.services.coordination.elections.leadership(&group).term == before.term {
            tokio::task::yield_now().await;
        }
        times.push(started.elapsed());
        for member in group_members {
            member.stop(crate::manifest::Shutdown::BrutalKill).await;
        }
    }
    times.sort();
    let note = "(kill the leader of 5 to the next one leading, members told; p50, 200 failovers)";
    report.figure("leader_failover_p50", super::percentile(&times, 0.5), "us", None, note);
    report.figure("leader_failover_p99", super::percentile(&times, 0.99), "us", None, "");
    Ok(())
}

fn probe_ping_pong(runtime: &Runtime) -> anyhow::Result<Module> {
    runtime.module("ping-pong").ok_or_else(|| anyhow::anyhow!("the ping-pong module is not loaded"))
}

/// A pooled worker borrowed for one call (poolboy's `transaction`), against the call alone.
pub async fn pool_checkout(
    runtime: &Arc<Runtime>,
    probe: &Module,
    echo: &Module,
    report: &Report,
) -> anyhow::Result<()> {
    use crate::manifest::{PoolSpec, PoolStrategy, Restart, Shutdown};
    const ROUNDS: u64 = 50_000;
    let worker = Arc::new(spec("bench-pool".into(), &echo.name, &[], ByteSize::mib(2)));
    let pool = Arc::new(PoolSpec {
        name: "bench-pool".into(),
        worker,
        size: 1,
        overflow: 0,
        checkout_timeout: Duration::from_secs(5),
        strategy: PoolStrategy::Lifo,
        restart: Restart::Temporary,
        shutdown: Shutdown::Infinity,
    });
    let (exits, _keep) = mpsc::unbounded_channel();
    let running = crate::supervision::pools::start_pool(runtime, &pool, exits).await?;
    let call = format!("repeat {ROUNDS} call bench-pool.1 x 5000");
    let alone = probe_loop(runtime, probe, call, ROUNDS, Grants::all(), "bench-pool-caller").await;
    let cycle = format!("pool-cycle bench-pool {ROUNDS} x");
    let pooled = probe_loop(runtime, probe, cycle, ROUNDS, Grants::all(), "bench-pool-user").await;
    running.stop(Shutdown::Infinity).await;
    let note = "(guest checkout + call + checkin of an echo worker; baseline: the same call to it, not checked out)";
    let per_second = |ns: f64| 1e9 / ns;
    report.figure("pool_checkout", per_second(pooled?), "cycles/s", Some(per_second(alone?)), note);
    Ok(())
}
