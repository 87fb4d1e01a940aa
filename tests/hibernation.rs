//! Hibernation and durable agents through the real binary: an idle counter hibernates (no
//! instance, its state taken) and the next messages wake it with its count intact, in order; a
//! stateless agent is woken by `init`; a hibernated agent's monitors and links fire when it
//! later crashes; a wake that fails is a crash for its supervisor; a full pool hibernates the
//! least recently used idle agent, and refuses a start only when none can; a durable counter
//! comes back after a graceful restart, and after a SIGKILL under load with every acknowledged
//! reply's state.

use crate::common;

use std::time::{Duration, Instant};

use common::{Lines, Scenario, api, terminate, until_admin_listens, wait_for_event, wait_for_seen};
use serde_json::Value;

/// The agent's state as the listing shows it (asking the agent itself would wake it).
fn state(address: &str, token: &str, name: &str) -> String {
    let (_, listed) = api(address, token, "GET", &format!("/v1/agents?name={name}"), "");
    listed["agents"][0]["state"].as_str().unwrap_or("").to_string()
}

fn until_state(address: &str, token: &str, name: &str, wanted: &str) {
    let deadline = Instant::now() + common::RUN_TIMEOUT;
    while state(address, token, name) != wanted {
        assert!(Instant::now() < deadline, "{name} never became {wanted}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_idle_agent_hibernates_and_wakes_with_its_state_and_its_messages_in_order() {
    let agents = "[[agent]]\nname = \"counter\"\nmodule = \"counter\"\ngrants = [\"messaging\", \"logging\"]\nhibernate_after = \"100ms\"\n\
                  [[agent]]\nname = \"echo\"\nmodule = \"echo\"\ngrants = [\"messaging\"]\nhibernate_after = \"100ms\"\nstateless = true\n";
    let scenario = Scenario::agents("admin = \"127.0.0.1:0\"", agents);
    let (child, mut lines, mut seen, address) = until_admin_listens(scenario.spawn());
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_started" && e["agent"] == "echo");
    let token = std::fs::read_to_string(scenario.dir.path().join("data/admin.token")).unwrap();
    let call = |name: &str, payload: &str| {
        let (status, body) =
            api(&address, &token, "POST", &format!("/v1/agents/{name}/call?timeout_ms=10000"), payload);
        assert_eq!(status, 200, "{body}");
        body["reply"].as_str().unwrap().to_string()
    };
    assert_eq!(call("counter", "add 5"), "5");
    until_state(&address, &token, "counter", "hibernated");
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_hibernated" && e["agent"] == "counter");
    // Its details are answered by the sleeping agent, which stays asleep.
    let (status, detail) = api(&address, &token, "GET", "/v1/agents/counter", "");
    assert_eq!(status, 200, "{detail}");
    assert!(detail["holdings"].is_object(), "{detail}");
    assert_eq!(state(&address, &token, "counter"), "hibernated");
    // Three casts while it sleeps, then a call: all of them, in order, on the restored count.
    for _ in 0..3 {
        assert_eq!(api(&address, &token, "POST", "/v1/agents/counter/send", "inc").0, 202);
    }
    assert_eq!(call("counter", "get"), "8");
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_woken" && e["agent"] == "counter");
    // Both are in the event store too.
    // (Host records are committed in batches, within 50 ms.)
    for kind in ["agent_hibernated", "agent_woken"] {
        let deadline = Instant::now() + common::RUN_TIMEOUT;
        loop {
            let (status, page) = api(&address, &token, "GET", &format!("/v1/events?kind={kind}&agent=counter"), "");
            assert_eq!(status, 200, "{page}");
            if !page["events"].as_array().unwrap().is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "no {kind} in the event store: {page}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // It hibernates again, and again wakes with its state.
    until_state(&address, &token, "counter", "hibernated");
    assert_eq!(call("counter", "inc"), "9");
    // A stateless agent without the state interface hibernates too, and `init` wakes it.
    until_state(&address, &token, "echo", "hibernated");
    assert_eq!(call("echo", "still here"), "still here");
    terminate(&child);
}

/// A host of `scenario` with its admin endpoint up: the process, its output, the events seen,
/// the address and the token.
fn host(scenario: &Scenario) -> (std::process::Child, Lines, Vec<Value>, String, String) {
    let (child, lines, seen, address) = until_admin_listens(scenario.spawn());
    let token = std::fs::read_to_string(scenario.dir.path().join("data/admin.token")).unwrap();
    (child, lines, seen, address, token)
}

fn call(address: &str, token: &str, name: &str, payload: &str) -> (u16, Value) {
    api(address, token, "POST", &format!("/v1/agents/{name}/call?timeout_ms=10000"), payload)
}

fn reply(address: &str, token: &str, name: &str, payload: &str) -> String {
    let (status, body) = call(address, token, name, payload);
    assert_eq!(status, 200, "{name} <- {payload}: {body}");
    body["reply"].as_str().unwrap().to_string()
}

fn counter_v2() -> String {
    format!("counter-v2 = {:?}\n", common::agent("counter_v2").display().to_string())
}

#[test]
fn a_hibernated_agents_monitors_and_links_fire_when_it_later_crashes() {
    // counter-v2 with `trap_first` panics in its first message after a restore: after a wake.
    let manifest = format!(
        "{}{}\n[[agent]]\nname = \"victim\"\nmodule = \"counter-v2\"\nrestart = \"temporary\"\n\
         grants = [\"messaging\"]\nhibernate_after = \"100ms\"\nconfig = {{ trap_first = \"true\" }}\n\
         [[agent]]\nname = \"watcher\"\nmodule = \"probe\"\ngrants = [\"messaging\", \"registry\", \"supervision\", \"logging\"]\n\
         config = {{ report_messages = \"true\", script = \"trap-exits on; monitor victim; link victim\" }}\n",
        common::header("admin = \"127.0.0.1:0\""),
        counter_v2()
    );
    let scenario = Scenario::new(&manifest);
    let (child, mut lines, mut seen, address, token) = host(&scenario);
    let logged = |e: &Value, text: &str| {
        e["event"] == "agent_log"
            && e["agent"] == "watcher"
            && e["message"].as_str().is_some_and(|m| m.starts_with(text))
    };
    wait_for_event(&mut lines, &mut seen, |e| logged(e, "probe: link victim =>"));
    until_state(&address, &token, "victim", "hibernated");
    // The message wakes it (its state restored), and it panics handling it.
    let (status, _) = call(&address, &token, "victim", "inc");
    assert_ne!(status, 200);
    // The watcher may log its notices before the host logs the exit: in any order.
    wait_for_seen(&mut lines, &mut seen, |e| {
        e["event"] == "agent_exited" && e["agent"] == "victim" && e["reason"] == "panic"
    });
    wait_for_seen(&mut lines, &mut seen, |e| logged(e, "probe got [agora:down]"));
    wait_for_seen(&mut lines, &mut seen, |e| logged(e, "probe got [agora:exit]"));
    let told: Vec<&str> =
        seen.iter().filter(|e| logged(e, "probe got")).filter_map(|e| e["message"].as_str()).collect();
    assert!(told.iter().all(|t| t.contains("panic")), "the notices carry the crash: {told:#?}");
    terminate(&child);
}

#[test]
fn a_wake_that_fails_is_a_crash_that_its_supervisor_restarts() {
    let manifest = format!(
        "{}{}\n[[agent]]\nname = \"sleepy\"\nmodule = \"counter-v2\"\ngrants = [\"messaging\"]\n\
         hibernate_after = \"100ms\"\nconfig = {{ refuse_restore = \"true\" }}\n",
        common::header("admin = \"127.0.0.1:0\""),
        counter_v2()
    );
    let scenario = Scenario::new(&manifest);
    let (child, mut lines, mut seen, address, token) = host(&scenario);
    let first = reply(&address, &token, "sleepy", "add 5");
    until_state(&address, &token, "sleepy", "hibernated");
    // The wake's restore refuses: a crash; the call that woke it fails, and nothing hangs.
    let (status, body) = call(&address, &token, "sleepy", "get");
    assert_ne!(status, 200, "{body}");
    wait_for_event(&mut lines, &mut seen, |e| {
        e["event"] == "agent_exited" && e["agent"] == "sleepy" && e["reason"] == "init_failed"
    });
    let crash = seen.last().unwrap();
    assert!(crash["detail"].as_str().unwrap().contains("waking"), "{crash}");
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_restarted" && e["agent"] == "sleepy");
    // Restarted by `init` (it is not durable): a fresh count.
    let again = reply(&address, &token, "sleepy", "add 1");
    assert_ne!(first, again);
    assert!(again.contains('1'), "{again}");
    terminate(&child);
}

#[test]
fn a_full_pool_hibernates_the_least_recently_used_idle_agent_first() {
    let agents: String = (1..=4)
        .map(|i| format!("[[agent]]\nname = \"c{i}\"\nmodule = \"counter\"\ngrants = [\"messaging\"]\n"))
        .collect();
    // Three slots for four counters: the fourth start hibernates c1, the oldest idle one.
    let scenario = Scenario::agents("admin = \"127.0.0.1:0\"\nmax_agents = 3", &agents);
    let (child, mut lines, mut seen, address, token) = host(&scenario);
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_started" && e["agent"] == "c4");
    let states = || (1..=4).map(|i| state(&address, &token, &format!("c{i}"))).collect::<Vec<_>>();
    assert_eq!(states(), ["hibernated", "idle", "idle", "idle"]);
    assert_eq!(reply(&address, &token, "c2", "add 2"), "2");
    assert_eq!(reply(&address, &token, "c3", "add 3"), "3");
    // c1 wakes; c4 (idle since its start) is now the least recently used.
    // (A reply can reach the caller a moment before its agent's turn ends: wait for it to idle.)
    assert_eq!(reply(&address, &token, "c1", "add 1"), "1");
    until_state(&address, &token, "c1", "idle");
    assert_eq!(states(), ["idle", "idle", "idle", "hibernated"]);
    assert_eq!(reply(&address, &token, "c4", "add 4"), "4");
    until_state(&address, &token, "c4", "idle");
    assert_eq!(states(), ["idle", "hibernated", "idle", "idle"]);
    // Every count survived its agent's eviction.
    for i in 1..=4 {
        assert_eq!(reply(&address, &token, &format!("c{i}"), "get"), i.to_string());
    }
    let (_, metrics) = {
        let body = reqwest_free_get(&address, "/metrics");
        (0, body)
    };
    assert!(metrics.contains("agora_agents{state=\"hibernated\"} 1"), "{metrics}");
    terminate(&child);
}

/// A GET without a token (for `/metrics`), its body as text.
fn reqwest_free_get(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
}

#[test]
fn a_start_that_finds_the_pool_full_of_agents_that_cannot_hibernate_is_refused_with_the_key_to_raise() {
    let agents: String =
        (1..=3).map(|i| format!("[[agent]]\nname = \"e{i}\"\nmodule = \"echo\"\ngrants = [\"messaging\"]\n")).collect();
    let scenario = Scenario::agents("max_agents = 2", &agents);
    let run = scenario.run();
    run.assert_failure();
    let failed = run.events("agent_start_failed", Some("e3"));
    let detail = failed.first().map(|e| e["detail"].to_string()).unwrap_or_else(|| format!("{:#?}", run.events));
    assert!(detail.contains("no idle agent can hibernate") && detail.contains("host.max_agents"), "{detail}");
}

fn durable_counter(persist: &str) -> String {
    format!(
        "[[agent]]\nname = \"kept\"\nmodule = \"counter\"\ngrants = [\"messaging\"]\ndurable = true\npersist = \"{persist}\"\n\
         [[agent]]\nname = \"sleeper\"\nmodule = \"counter\"\ngrants = [\"messaging\"]\ndurable = true\nhibernate_after = \"100ms\"\n"
    )
}

#[test]
fn a_durable_counter_comes_back_after_a_graceful_restart_awake_or_hibernated() {
    let scenario = Scenario::agents("admin = \"127.0.0.1:0\"", &durable_counter("idle"));
    let (child, mut lines, mut seen, address, token) = host(&scenario);
    assert_eq!(reply(&address, &token, "kept", "add 7"), "7");
    assert_eq!(reply(&address, &token, "sleeper", "add 3"), "3");
    until_state(&address, &token, "sleeper", "hibernated");
    terminate(&child);
    let mut child = child;
    assert!(child.wait().unwrap().success());
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "run_finished");
    // The same manifest and data: both come back with their counts, restored, not initialised.
    let (child, mut lines, mut seen, address, token) = host(&scenario);
    for agent in ["kept", "sleeper"] {
        wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_restored" && e["agent"] == agent);
    }
    assert_eq!(reply(&address, &token, "kept", "inc"), "8");
    assert_eq!(reply(&address, &token, "sleeper", "inc"), "4");
    // Its state is forgotten only while it does not run; then it starts again by `init`.
    let (status, body) = api(&address, &token, "DELETE", "/v1/agents/kept/state", "");
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("agent-running")), "{body}");
    assert_eq!(api(&address, &token, "POST", "/v1/agents/kept/stop", "").0, 200);
    let forgot = common::run_agora(&["forget", scenario.manifest.to_str().unwrap(), "kept"]);
    forgot.assert_success();
    let (status, body) = api(&address, &token, "DELETE", "/v1/agents/kept/state", "");
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("no-state")), "{body}");
    assert_eq!(api(&address, &token, "POST", "/v1/agents/kept/restart", "").0, 200);
    assert_eq!(reply(&address, &token, "kept", "get"), "0");
    terminate(&child);
}

#[test]
fn a_durable_counter_keeps_every_acknowledged_increment_through_a_sigkill_under_load() {
    let scenario = Scenario::agents("admin = \"127.0.0.1:0\"", &durable_counter("every-message"));
    let (mut child, _lines, _seen, address, token) = host(&scenario);
    // Four callers increment as fast as they can; each remembers the highest count it was told.
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (address, token, acked, sent) = (address.clone(), token.clone(), acked.clone(), sent.clone());
            std::thread::spawn(move || {
                loop {
                    sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let outcome = std::panic::catch_unwind(|| call(&address, &token, "kept", "inc"));
                    match outcome {
                        Ok((200, body)) => {
                            let value: i64 = body["reply"].as_str().unwrap().parse().unwrap();
                            acked.fetch_max(value, std::sync::atomic::Ordering::SeqCst);
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    while acked.load(std::sync::atomic::Ordering::SeqCst) < 300 {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for caller in callers {
        let _ = caller.join();
    }
    let (acked, sent) =
        (acked.load(std::sync::atomic::Ordering::SeqCst), sent.load(std::sync::atomic::Ordering::SeqCst));
    let (child, mut lines, mut seen, address, token) = host(&scenario);
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_restored" && e["agent"] == "kept");
    let after: i64 = reply(&address, &token, "kept", "get").parse().unwrap();
    // Every increment a caller was told of is there; at most the ones in flight beyond it.
    assert!(after >= acked && after <= sent, "acknowledged {acked}, sent {sent}, found {after}");
    terminate(&child);
}

#[test]
fn durable_without_the_state_interface_and_persist_without_durable_are_refused_where_they_are_written() {
    let scenario = Scenario::agents("", "[[agent]]\nname = \"e\"\nmodule = \"echo\"\npersist = \"idle\"\n");
    let run = common::run_agora(&["check", scenario.manifest.to_str().unwrap()]);
    run.assert_failure();
    assert!(run.stderr.contains(".persist`") && run.stderr.contains("durable = true"), "{}", run.stderr);
    let scenario = Scenario::agents("", "[[agent]]\nname = \"e\"\nmodule = \"echo\"\ndurable = true\n");
    let run = common::run_agora(&["check", scenario.manifest.to_str().unwrap()]);
    run.assert_failure();
    assert!(run.stderr.contains("durable") && run.stderr.contains("state interface"), "{}", run.stderr);
}

#[test]
fn a_durable_agent_whose_state_cannot_be_written_crashes_and_its_caller_gets_no_reply() {
    let agents = "[[agent]]\nname = \"stubborn\"\nmodule = \"counter\"\nrestart = \"temporary\"\ngrants = [\"messaging\"]\n\
                  durable = true\npersist = \"every-message\"\nconfig = { refuse_snapshot = \"true\" }\n";
    let scenario = Scenario::agents("admin = \"127.0.0.1:0\"", agents);
    let (child, mut lines, mut seen, address, token) = host(&scenario);
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_started" && e["agent"] == "stubborn");
    // The increment ran, but its state cannot be written: the reply is never released.
    let (status, body) = call(&address, &token, "stubborn", "inc");
    assert_ne!(status, 200, "{body}");
    wait_for_event(&mut lines, &mut seen, |e| {
        e["event"] == "agent_exited" && e["agent"] == "stubborn" && e["reason"] == "persist_failed"
    });
    let exit = seen.last().unwrap();
    assert!(exit["detail"].as_str().unwrap().contains("snapshot refused"), "{exit}");
    terminate(&child);
}
