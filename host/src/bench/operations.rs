//! What operating a host costs: an upgrade's pause against a restart of the same agent, and the
//! admin API's agent listing with many agents against its cheapest route.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Report, percentile, spec};
use crate::manifest::{Limits, Shutdown};
use crate::runtime::Runtime;
use crate::runtime::agent;

/// `upgrade_pause_p50/p99`: how long a small Rust agent takes no message while its code is
/// upgraded with its state (snapshot, a new instance, restore), alternating between the counter
/// and counter-v2; baseline: a restart of the same agent on the same code (its `terminate`, then
/// instantiate and `init`), which loses its state.
pub async fn upgrade(
    runtime: &Arc<Runtime>,
    agents: &std::path::Path,
    rounds: usize,
    report: &Report,
) -> anyhow::Result<()> {
    let first = Arc::new(runtime.loader.load("counter", &agents.join("counter.wasm"), Some("1"))?);
    let second = Arc::new(runtime.loader.load("counter", &agents.join("counter_v2.wasm"), Some("2"))?);
    runtime.catalog.insert_new(first.clone());
    let (exits, _keep) = mpsc::unbounded_channel();
    let counter = Arc::new(spec("upgraded".into(), "counter", &[], Limits::default().memory));
    let running = agent::start(runtime, &counter, &first, exits.clone(), 0).await?;
    runtime.send("upgraded", b"add 5".to_vec()).await.map_err(super::error)?;
    let mut pauses = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let to = if round % 2 == 0 { second.clone() } else { first.clone() };
        runtime.catalog.install(to, |m| runtime.running_on(m))?;
        let listed = runtime.directory.get(running.id).ok_or_else(|| anyhow::anyhow!("the agent is gone"))?;
        let done = crate::runtime::upgrade::upgrade(runtime, &listed, Duration::ZERO).await?;
        anyhow::ensure!(done.handoff == "state", "an upgrade that did not hand its state over: {done:?}");
        pauses.push(Duration::from_micros(done.paused_us));
    }
    let value = runtime.call("upgraded", b"get".to_vec(), Duration::from_secs(5)).await.map_err(super::error)?;
    anyhow::ensure!(value == b"5", "the state did not survive {rounds} upgrades: {value:?}");
    running.stop(Shutdown::Infinity).await;

    // Restarts of the same agent: stop it, start it again.
    let restarted = Arc::new(spec("restarted".into(), "counter", &[], Limits::default().memory));
    let module = runtime.module("counter").ok_or_else(|| anyhow::anyhow!("counter is not loaded"))?;
    let mut running = agent::start(runtime, &restarted, &module, exits.clone(), 0).await?;
    let mut restarts = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        running.stop(Shutdown::Infinity).await;
        running = agent::start(runtime, &restarted, &module, exits.clone(), 0).await?;
        restarts.push(started.elapsed());
    }
    running.stop(Shutdown::Infinity).await;
    super::report_percentiles(report, "upgrade_pause", &mut pauses, &mut restarts, |ratio| {
        format!("({ratio:.2}x a restart, {rounds} upgrades with state)")
    });
    Ok(())
}

/// `api_ps_p50/p99`: `GET /v1/agents` over loopback HTTP with `count` live agents; baseline:
/// `GET /v1/status` on the same connection setup (token check, routing, no listing).
pub async fn api_ps(
    runtime: &Arc<Runtime>,
    echo: &crate::runtime::modules::Module,
    count: usize,
    requests: usize,
    report: &Report,
) -> anyhow::Result<()> {
    let (exits, _keep) = mpsc::unbounded_channel();
    let mut agents = Vec::with_capacity(count);
    for i in 0..count {
        let spec = Arc::new(spec(format!("listed-{i}"), "echo", &[], Limits::default().memory));
        match agent::start(runtime, &spec, echo, exits.clone(), 0).await {
            Ok(agent) => agents.push(agent),
            Err(e) => {
                tracing::warn!("api_ps: stopped at {i} live agents: {e}");
                break;
            }
        }
    }
    let address = crate::admin::start(runtime.clone(), "127.0.0.1:0".parse().map_err(anyhow::Error::msg)?).await?;
    let token = crate::admin::v1::token_for(&runtime.settings)?;
    let time = async |path: &str| -> anyhow::Result<Vec<Duration>> {
        let mut times = Vec::with_capacity(requests);
        for _ in 0..requests {
            let started = Instant::now();
            let (status, body) =
                crate::admin::request(&address, Some(&token), http::Method::GET, path, bytes::Bytes::new()).await?;
            times.push(started.elapsed());
            anyhow::ensure!(status.is_success(), "{path}: {status} {body}");
        }
        times.sort();
        Ok(times)
    };
    let listed = time("/v1/agents?sort=memory").await?;
    let status = time("/v1/status").await?;
    for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
        let note = format!("({} agents listed and sorted; baseline GET /v1/status)", agents.len());
        report.figure(
            &format!("api_ps_{label}"),
            percentile(&listed, p) / 1e3,
            "ms",
            Some(percentile(&status, p) / 1e3),
            &note,
        );
    }
    super::stop_all(agents).await;
    Ok(())
}

/// `messaging_watched`: the messaging benchmark's pairs with the dashboard's live stream open (a
/// viewer reading every tick and event over loopback HTTP), against the same pairs unwatched,
/// alternating, the best of three each.
pub async fn watched(
    runtime: &Arc<Runtime>,
    ping_pong: &crate::runtime::modules::Module,
    pairs: usize,
    rounds: u64,
    report: &Report,
) -> anyhow::Result<()> {
    let address = crate::admin::start(runtime.clone(), "127.0.0.1:0".parse().map_err(anyhow::Error::msg)?).await?;
    let token = crate::admin::v1::token_for(&runtime.settings)?;
    let messages = (pairs as u64 * rounds * 2) as f64;
    let (mut watched, mut unwatched) = (0f64, 0f64);
    for _ in 0..3 {
        let elapsed = super::run_pairs(runtime, ping_pong, pairs, rounds, "send").await?;
        unwatched = unwatched.max(messages / elapsed.as_secs_f64());
        let (address, token) = (address.clone(), token.clone());
        let lines = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = lines.clone();
        let viewer = tokio::spawn(async move {
            crate::admin::stream(&address, &token, "/v1/live", |_| {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
            .await
        });
        // The viewer has its snapshot before the pairs start.
        while lines.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = super::run_pairs(runtime, ping_pong, pairs, rounds, "send").await?;
        watched = watched.max(messages / elapsed.as_secs_f64());
        viewer.abort();
    }
    let note = format!("({:.3}x unwatched; {pairs} pairs, a live viewer sampling every second)", watched / unwatched);
    report.figure("messaging_watched", watched, "msgs/s", Some(unwatched), &note);
    Ok(())
}
