//! Hibernation: what a hibernated agent costs, how fast agents hibernate and wake.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Report, spec};
use crate::manifest::ByteSize;
use crate::runtime::Runtime;
use crate::runtime::agent;
use crate::runtime::modules::Module;
use crate::runtime::stats::Phase;

pub(super) async fn hibernated(
    runtime: &Arc<Runtime>,
    counter: &Module,
    count: usize,
    batch: usize,
    report: &Report,
) -> anyhow::Result<()> {
    let (exits, _keep) = mpsc::unbounded_channel();
    let before = crate::infra::resident_bytes();
    let started = Instant::now();
    let mut agents = Vec::with_capacity(count);
    let mut stats = Vec::with_capacity(batch);
    for i in 0..count {
        let mut spec = spec(format!("sleeper-{i}"), "counter", &[], ByteSize(1 << 20));
        spec.hibernate_after = Some(Duration::from_millis(5));
        let spec = Arc::new(spec);
        let agent = agent::start(runtime, &spec, counter, exits.clone(), 0).await?;
        stats.push(runtime.directory.get(agent.id).expect("listed").stats.clone());
        agents.push(agent);
        if stats.len() == batch || i + 1 == count {
            while !stats.iter().all(|s| s.phase() == Phase::Hibernated) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            stats.clear();
        }
    }
    let took = started.elapsed();
    let after = crate::infra::resident_bytes();
    let per_agent = after.saturating_sub(before) as f64 / count as f64;
    let note =
        format!("({count} hibernated in {:.1}s; RSS {} MiB -> {} MiB)", took.as_secs_f64(), before >> 20, after >> 20);
    report.figure("hibernated_rss_per_agent", per_agent / 1024.0, "KiB", None, &note);
    super::stop_all(agents).await;
    Ok(())
}
