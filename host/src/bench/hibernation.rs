//! Hibernation and durable agents: what a hibernated agent costs, how fast agents hibernate and
//! wake (against a spawn of the same counter, in the same run), and how fast durable agents
//! persist their state (against the same calls to ordinary agents).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::{Report, error, spec, stop_all};
use crate::manifest::{ByteSize, Persist};
use crate::messaging::{Body, Message};
use crate::runtime::Runtime;
use crate::runtime::agent::{self, Exit, RunningAgent};
use crate::runtime::control::Control;
use crate::runtime::modules::Module;

/// Each counter's memory cap: a counter needs 128 KiB.
const COUNTER_MEMORY: ByteSize = ByteSize(1 << 20);

pub(super) struct Sizes {
    /// Agents for the spawn / hibernate / wake figures (at most the pool).
    pub sample: usize,
    /// Agents registered for the memory figure (the pool hibernates all but its size).
    pub registered: usize,
    /// Durable agents, and calls to each, for the persist figure.
    pub durable: usize,
    pub calls: usize,
}

pub(super) async fn hibernation(
    runtime: &Arc<Runtime>,
    counter: &Module,
    sizes: Sizes,
    report: &Report,
) -> anyhow::Result<()> {
    // One exits channel for all, as a supervisor's children share their supervisor's: a channel
    // each would add its first block to every agent's cost.
    let (exits, _keep) = mpsc::unbounded_channel();
    let counters = Counters { runtime, module: counter, exits };
    wake_and_hibernate(&counters, sizes.sample, report).await?;
    registered(&counters, sizes.registered, report).await?;
    persist(runtime, counter, sizes.durable, sizes.calls, report).await
}

/// Counters started as a supervisor's children are: one exits channel for all.
struct Counters<'a> {
    runtime: &'a Arc<Runtime>,
    module: &'a Module,
    exits: mpsc::UnboundedSender<Exit>,
}

impl Counters<'_> {
    async fn start(&self, name: String) -> anyhow::Result<RunningAgent> {
        let spec = Arc::new(spec(name, "counter", &[], COUNTER_MEMORY));
        Ok(agent::start(self.runtime, &spec, self.module, self.exits.clone(), 0).await?)
    }
}

async fn call(runtime: &Runtime, id: u64, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (reply, answer) = oneshot::channel();
    let message = Message { sender: None, topic: None, body: Body::Bytes(payload.to_vec()), reply: Some(reply) };
    runtime.router.try_deliver(id, message).map_err(error)?;
    answer.await?.map_err(error)
}

/// Ask every agent to hibernate at once; returns when each has let go of its instance.
async fn hibernate_all(runtime: &Runtime, agents: &[RunningAgent]) -> anyhow::Result<usize> {
    let mut answers = Vec::with_capacity(agents.len());
    for agent in agents {
        let listed = runtime.directory.get(agent.id).ok_or_else(|| anyhow::anyhow!("agent {} is gone", agent.id))?;
        let (reply, hibernated) = oneshot::channel();
        listed.stop.control(Control::Hibernate { reply });
        answers.push(hibernated);
    }
    let mut done = 0;
    for answer in answers {
        done += usize::from(answer.await.unwrap_or(false));
    }
    Ok(done)
}

async fn wake_and_hibernate(counters: &Counters<'_>, count: usize, report: &Report) -> anyhow::Result<()> {
    let runtime = counters.runtime;
    // Spawns, one at a time: the baseline of a wake (both instantiate the same counter).
    let mut spawn_times = Vec::with_capacity(count);
    let mut agents = Vec::with_capacity(count);
    let started = Instant::now();
    for i in 0..count {
        let begun = Instant::now();
        agents.push(counters.start(format!("wake-{i}")).await?);
        spawn_times.push(begun.elapsed());
    }
    let spawn_rate = count as f64 / started.elapsed().as_secs_f64();
    for agent in &agents {
        call(runtime, agent.id, b"add 41").await?;
    }
    let begun = Instant::now();
    let hibernated = hibernate_all(runtime, &agents).await?;
    anyhow::ensure!(hibernated == count, "{} of {count} agents hibernated", hibernated);
    let rate = count as f64 / begun.elapsed().as_secs_f64();
    let note = format!("({count} asked at once; baseline: spawns of the same counter, one at a time)");
    report.figure("hibernate_rate", rate, "agents/s", Some(spawn_rate), &note);

    // Wakes, one at a time: a call to a hibernated counter, restored with its count.
    let mut wake_times = Vec::with_capacity(count);
    for agent in &agents {
        let begun = Instant::now();
        let reply = call(runtime, agent.id, b"inc").await?;
        wake_times.push(begun.elapsed());
        anyhow::ensure!(reply == b"42", "a woken counter answered {:?}", String::from_utf8_lossy(&reply));
    }
    super::report_percentiles(report, "wake", &mut wake_times, &mut spawn_times, |ratio| {
        format!("({ratio:.2}x a spawn; a call that wakes the agent, restores it and is answered)")
    });
    stop_all(agents).await;
    Ok(())
}

/// Register `count` counters, hibernated in rounds: the first fills the pool, the others take
/// half of it (so that each round's starts find free slots, warm from the rounds before); then as many again started into a full
/// pool, where each start hibernates the least recently used. The memory figure is the
/// marginal cost of a hibernated agent, measured past the first round (whose slots stay
/// resident once touched).
async fn registered(counters: &Counters<'_>, count: usize, report: &Report) -> anyhow::Result<()> {
    let runtime = counters.runtime;
    let pool = runtime.settings.max_agents as usize;
    let round = (pool / 2).max(1);
    let before = crate::infra::resident_bytes();
    let mut agents = Vec::with_capacity(count + pool);
    let mut after_first = None;
    let started = Instant::now();
    while agents.len() < count {
        let first = agents.len();
        // The first round fills the pool, so that every slot is warm before the measure starts.
        let size = if first == 0 { pool } else { round };
        for i in first..(first + size).min(count) {
            agents.push(counters.start(format!("registered-{i}")).await?);
        }
        let hibernated = hibernate_all(runtime, &agents[first..]).await?;
        anyhow::ensure!(hibernated == agents.len() - first, "only {hibernated} agents of a round hibernated");
        if after_first.is_none() {
            after_first = Some((crate::infra::resident_bytes(), agents.len()));
        }
    }
    let took = started.elapsed();
    let after = crate::infra::resident_bytes();
    let (warm, warm_count) = after_first.unwrap_or((before, 0));
    let per_agent = after.saturating_sub(warm) as f64 / (count - warm_count).max(1) as f64;
    let note = format!(
        "({count} registered and hibernated in {:.1}s; RSS {} MiB -> {} MiB, {:.0} MiB past the first round)",
        took.as_secs_f64(),
        before >> 20,
        after >> 20,
        after.saturating_sub(warm) as f64 / (1 << 20) as f64
    );
    report.figure("hibernated_rss_per_agent", per_agent / 1024.0, "KiB", None, &note);

    // Into a full pool: every start hibernates the least recently used live agent first.
    let live = pool.min(count);
    let begun = Instant::now();
    for i in 0..live + pool {
        agents.push(counters.start(format!("admitted-{i}")).await?);
    }
    let evicting = (live + pool) as f64 / begun.elapsed().as_secs_f64();
    let note = format!(
        "({} starts into a pool of {pool}, the last {pool} each hibernating the least recently used)",
        live + pool
    );
    report.figure("admission_rate", evicting, "starts/s", None, &note);
    stop_all(agents).await;
    Ok(())
}

/// Durable counters with `persist = "every-message"`: each call's reply waits for the state on
/// disk. Many agents at once share commits (group commit).
async fn persist(
    runtime: &Arc<Runtime>,
    counter: &Module,
    agents: usize,
    calls: usize,
    report: &Report,
) -> anyhow::Result<()> {
    let mut rates = Vec::new();
    for durable in [false, true] {
        let (exits, _keep) = mpsc::unbounded_channel();
        let mut running = Vec::with_capacity(agents);
        let run = std::process::id();
        for i in 0..agents {
            let mut spec = spec(format!("persist-{run}-{durable}-{i}"), "counter", &[], COUNTER_MEMORY);
            spec.durable = durable.then_some(Persist::EveryMessage);
            running.push(agent::start(runtime, &Arc::new(spec), counter, exits.clone(), 0).await?);
        }
        let begun = Instant::now();
        let callers = running.iter().map(|agent| {
            let (runtime, id) = (runtime.clone(), agent.id);
            tokio::spawn(async move {
                for _ in 0..calls {
                    call(&runtime, id, b"inc").await?;
                }
                Ok::<_, anyhow::Error>(())
            })
        });
        for caller in futures_util::future::join_all(callers.collect::<Vec<_>>()).await {
            caller??;
        }
        rates.push((agents * calls) as f64 / begun.elapsed().as_secs_f64());
        stop_all(running).await;
    }
    let note = format!(
        "({agents} durable counters, persist = \"every-message\", {calls} calls each; baseline: the same calls to ordinary counters)"
    );
    report.figure("persist_rate", rates[1], "snapshots/s", Some(rates[0]), &note);
    Ok(())
}
