//! The soak: steady messaging (a ping-pong pair, calls to a counter) beside a restart storm (a
//! permanent agent crashed without pause by two agents in tight send loops: one makes it
//! panic, one makes it pass its memory cap). The host's RSS, file descriptors, memory
//! mappings and live instances (pool slots) are sampled at even intervals, with each sender's
//! progress.
//!
//! `make soak` runs it for `SOAK_SECS` (default 600) and checks that the figures stay flat;
//! `make test` runs a 30-second smoke pass of the same workload, which checks what does not
//! depend on the machine's speed: every sender progresses in every interval, descriptors and
//! slots stay put, and the host stops gracefully, every agent that can be within its shutdown
//! timeout.

use crate::common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Scenario, until_admin_listens};
use serde_json::Value;

/// The agents that send, and must keep sending.
const SENDERS: [&str; 4] = ["panicker", "hogger", "caller", "ping"];
/// Every agent of the workload: seven instances when all are up.
const AGENTS: usize = 7;

fn workload() -> Scenario {
    // A sender's whole script is one endless callback: nothing to stop it gracefully at (OTP
    // kills a busy worker when its shutdown timeout runs out), so it is killed at once.
    let forever = |name: &str, script: &str| {
        format!(
            "[[agent]]\nname = \"{name}\"\nmodule = \"probe\"\nrestart = \"temporary\"\nbudget = \"1h\"\n\
             shutdown = \"brutal_kill\"\nconfig = {{ script = \"{script}\" }}\n"
        )
    };
    let agents = format!(
        "[defaults]\ngrants = [\"messaging\", \"registry\", \"logging\"]\n\
         [supervisor]\nintensity = 100000000\nperiod = \"1s\"\n\
         [[agent]]\nname = \"victim\"\nmodule = \"misbehave\"\nmemory = \"4MiB\"\n\
         [[agent]]\nname = \"counter\"\nmodule = \"counter\"\n\
         [[agent]]\nname = \"pong\"\nmodule = \"ping-pong\"\nconfig = {{ role = \"pong\" }}\n\
         [[agent]]\nname = \"ping\"\nmodule = \"ping-pong\"\n\
         config = {{ role = \"ping\", peer = \"pong\", rounds = 1000000000000 }}\n\
         {}{}{}",
        forever("panicker", "repeat 1000000000000000 send victim panic"),
        forever("hogger", "repeat 1000000000000000 send victim hog"),
        forever("caller", "repeat 1000000000000000 call counter inc 1000"),
    );
    Scenario::agents("admin = \"127.0.0.1:0\"", &agents)
}

#[derive(Debug, Clone)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    mappings: usize,
    live: u64,
    sent: Vec<u64>,
    restarts: u64,
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn metrics(address: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nhost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// A series' value in the Prometheus text: `name` with exactly these labels (`""` for none).
fn series(text: &str, name: &str, labels: &str) -> u64 {
    let key = if labels.is_empty() { name.to_string() } else { format!("{name}{{{labels}}}") };
    text.lines()
        .find_map(|l| l.strip_prefix(&key).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

fn sample(pid: u32, address: &str, started: Instant) -> Sample {
    let text = metrics(address);
    Sample {
        at: started.elapsed(),
        rss_kib: proc_status_kib(pid, "VmRSS:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count(),
        mappings: std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap().lines().count(),
        live: series(&text, "agora_live_instances", ""),
        sent: SENDERS
            .iter()
            .map(|agent| series(&text, "agora_messages_out_total", &format!("agent=\"{agent}\"")))
            .collect(),
        restarts: series(&text, "agora_restarts_total", "agent=\"victim\""),
    }
}

fn soak(total: Duration, intervals: u32) -> Vec<Sample> {
    let scenario = workload();
    let (mut child, lines, _, address) = until_admin_listens(scenario.spawn());
    // Drain the host's output on a thread, keeping only the exits seen at shutdown.
    let exits = std::thread::spawn(move || {
        lines
            .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
            .filter(|e| e["event"] == "agent_exited" || e["event"] == "run_finished")
            .collect::<Vec<Value>>()
    });
    let pid = child.id();
    let started = Instant::now();
    let every = total / intervals;
    let mut samples = vec![];
    for i in 0..=intervals {
        let next = started + every * i;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let sample = sample(pid, &address, started);
        eprintln!("{sample:?}");
        samples.push(sample);
    }
    common::terminate(&child);
    let status = child.wait().unwrap();
    let exits = exits.join().unwrap();
    assert!(status.success(), "the host stops gracefully: {status}");
    // (The victim may still crash on messages queued before its senders were killed.)
    for agent in ["counter", "ping", "pong"] {
        let exit = exits.iter().rev().find(|e| e["event"] == "agent_exited" && e["agent"] == agent);
        let reason = exit.map(|e| e["reason"].clone());
        assert_eq!(reason, Some("shutdown".into()), "{agent} stopped within its shutdown timeout: {exit:?}");
    }
    // The first sample is taken as the workload starts; progress is checked from the second.
    for pair in samples[1..].windows(2) {
        for (index, sender) in SENDERS.iter().enumerate() {
            assert!(
                pair[1].sent[index] > pair[0].sent[index],
                "{sender} sent nothing between {:?} and {:?}: {pair:#?}",
                pair[0].at,
                pair[1].at
            );
        }
        assert!(pair[1].restarts > pair[0].restarts, "the storm goes on: {pair:#?}");
    }
    let fds: Vec<usize> = samples[1..].iter().map(|s| s.fds).collect();
    let (low, high) = (fds.iter().min().unwrap(), fds.iter().max().unwrap());
    assert!(high - low <= 4, "file descriptors stay put: {fds:?}");
    for s in &samples[1..] {
        // The victim is between two lives at times; every other agent is always up.
        assert!((AGENTS as u64 - 1..=AGENTS as u64).contains(&s.live), "live instances: {s:#?}");
    }
    samples
}

#[test]
fn a_short_soak_keeps_every_sender_going_and_descriptors_and_slots_flat() {
    soak(Duration::from_secs(30), 6);
}

#[test]
#[ignore = "a campaign: run with `make soak`"]
fn a_long_soak_stays_flat() {
    let seconds: u64 = std::env::var("SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(600);
    let samples = soak(Duration::from_secs(seconds), 10);
    let half = samples.len() / 2;
    // Warmed up by the second sample; the second half sets no new high beyond 10%.
    let first_half = &samples[1..=half];
    let peak = |f: fn(&Sample) -> u64, of: &[Sample]| of.iter().map(f).max().unwrap();
    let last = samples.last().unwrap();
    let (rss, maps) = (|s: &Sample| s.rss_kib, |s: &Sample| s.mappings as u64);
    assert!(peak(rss, &samples[half..]) <= peak(rss, first_half) * 11 / 10 + 2048, "RSS keeps growing: {samples:#?}");
    assert!(
        peak(maps, &samples[half..]) <= peak(maps, first_half) * 11 / 10 + 8,
        "mappings keep growing: {samples:#?}"
    );
    println!("soak over {seconds} s, sampled every {} s:", seconds / 10);
    println!("{:>6} {:>9} {:>5} {:>6} {:>5} {:>10}", "s", "RSS MiB", "fds", "maps", "live", "restarts");
    for s in &samples {
        println!(
            "{:>6} {:>9.1} {:>5} {:>6} {:>5} {:>10}",
            s.at.as_secs(),
            s.rss_kib as f64 / 1024.0,
            s.fds,
            s.mappings,
            s.live,
            s.restarts
        );
    }
    println!("last: {last:?}");
}
