//! Chaos through the Rust API: 1,000 supervised agents, random crashes injected for a bounded
//! time; afterwards every permanent agent runs again, the registry holds exactly the live agents,
//! and once the tree is shut down no mailbox, registry entry or pool slot is left behind.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use agora_host::manifest::{Manifest, Shutdown};
use agora_host::messaging::Message;
use agora_host::runtime::Runtime;
use agora_host::supervision;

const AGENTS: usize = 1000;
const SUPERVISORS: usize = 11;
const CHAOS: Duration = Duration::from_secs(3);

/// A small deterministic generator: the same crashes every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_crashes_leave_a_consistent_tree_and_no_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!(
        "{}\n[defaults]\ngrants = [\"logging\"]\nmemory = \"1MiB\"\n\
         [supervisor]\nintensity = 1000000\nperiod = \"1s\"\n",
        common::header("max_agents = 2000")
    );
    for group in 0..10 {
        let strategy = ["one_for_one", "one_for_all", "rest_for_one"][group % 3];
        text.push_str(&format!(
            "[[supervisor.children]]\nname = \"group-{group}\"\nstrategy = \"{strategy}\"\nintensity = 1000000\nperiod = \"1s\"\n"
        ));
        for index in 0..AGENTS / 10 {
            let restart = if index % 10 == 9 { "transient" } else { "permanent" };
            text.push_str(&format!(
                "[[supervisor.children.children]]\nname = \"agent-{group}-{index}\"\nmodule = \"misbehave\"\nrestart = \"{restart}\"\n"
            ));
        }
    }
    let manifest_path = dir.path().join("chaos.toml");
    std::fs::write(&manifest_path, &text).unwrap();
    let manifest = Manifest::load(&manifest_path).unwrap();
    let runtime = Arc::new(Runtime::for_manifest(&manifest).unwrap());
    let names: Vec<String> = manifest.agents().iter().map(|a| a.name.clone()).collect();

    let (exits, mut root_exit) = tokio::sync::mpsc::unbounded_channel();
    let root = supervision::start_supervisor(&runtime, &manifest.root, exits).await.unwrap();
    // Supervisors are registered too: the root and its ten groups.
    assert_eq!(runtime.registry.live_entries(), AGENTS + SUPERVISORS);

    // Crash random agents (by name, so that restarted ones are hit too) while the tree repairs.
    let mut random = XorShift(0x2545_f491_4f6c_dd1d);
    let started = Instant::now();
    let mut injected = 0;
    while started.elapsed() < CHAOS {
        let name = &names[random.next(names.len())];
        if let Some(id) = runtime.registry.lookup(name) {
            let how = if random.next(4) == 0 { "fatal" } else { "panic" };
            if runtime.router.try_deliver(id, Message::cast(None, how.as_bytes().to_vec())).is_ok() {
                injected += 1;
            }
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    // Timer granularity and load decide how many land; hundreds are plenty to churn the tree.
    assert!(injected >= 300, "only {injected} crashes injected");

    // Quiesce: every agent (all of them are restarted after a crash) is back under its name.
    let deadline = Instant::now() + Duration::from_secs(60);
    while names.iter().any(|n| runtime.registry.lookup(n).is_none()) {
        assert!(Instant::now() < deadline, "agents did not come back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every name is back; an instance being dropped may still hold its slot for a moment, so
    // wait (with a deadline) for the counts to settle rather than for a fixed time.
    let settled = || {
        (
            runtime.registry.live_entries(),
            runtime.router.live_mailboxes(),
            runtime.live_instances.load(Ordering::Relaxed),
        )
    };
    while settled() != (AGENTS + SUPERVISORS, AGENTS, AGENTS) {
        assert!(Instant::now() < deadline, "the tree did not settle: {:?}", settled());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(runtime.registry.live_entries(), AGENTS + SUPERVISORS, "the registry holds exactly the live processes");
    assert_eq!(runtime.router.live_mailboxes(), AGENTS);
    assert_eq!(runtime.live_instances.load(Ordering::Relaxed), AGENTS, "one pool slot per live agent");
    for name in &names {
        let id = runtime.registry.lookup(name).unwrap();
        assert!(runtime.router.is_open(id), "{name} is registered but has no mailbox");
    }
    assert!(root_exit.try_recv().is_err(), "the root supervisor must have survived");

    root.stop(Shutdown::Infinity).await;
    assert!(root_exit.recv().await.is_some());
    // Each injected message either crashed its agent, or was still queued when a sibling's
    // crash (one_for_all, rest_for_one) or the final shutdown stopped it, and was counted as
    // undelivered; nothing else crashes anything, and nothing is lost.
    let crashed = runtime.tally.crashed.load(Ordering::Relaxed);
    let undelivered = runtime.tally.undelivered.load(Ordering::Relaxed);
    assert_eq!(
        crashed + undelivered,
        injected,
        "{crashed} crashes and {undelivered} undelivered for {injected} injected"
    );
    assert!(crashed > 0);
    assert_eq!(runtime.registry.live_entries(), 0);
    assert_eq!(runtime.router.live_mailboxes(), 0);
    assert_eq!(runtime.live_instances.load(Ordering::Relaxed), 0, "pool slots leaked");
}
