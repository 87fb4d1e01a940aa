//! Modules loaded into a running host and agents upgraded live, through the real binary:
//! `agora load`, `agora upgrade`, `agora modules`, `agora spawn`. The counter (version 1) and
//! counter-v2 carry their state across (`wit/state.wit`); counter-v2 can be told by config to
//! refuse the state or to trap in its first message, for the rollback paths.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Run, Scenario, agent, agora, api, run_command, terminate, until_admin_listens, wait_for_event};
use serde_json::Value;

struct Host {
    scenario: Scenario,
    child: std::process::Child,
    address: String,
    token: String,
    /// The host's log events, as they come.
    seen: Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Host {
    fn start(agents: &str) -> Host {
        Host::start_manifest(&format!("{}\n{agents}", common::header("admin = \"127.0.0.1:0\"")))
    }

    fn start_manifest(manifest: &str) -> Host {
        let scenario = Scenario::new(manifest);
        let (child, mut lines, mut seen, address) = until_admin_listens(scenario.spawn());
        wait_for_event(&mut lines, &mut seen, |e| e["event"] == "supervisor_started" && e["supervisor"] == "root");
        // Keep the pipe drained so that the host never blocks, and the events for `wait_for`.
        let seen = Arc::new(std::sync::Mutex::new(seen));
        let collected = seen.clone();
        std::thread::spawn(move || {
            for line in lines {
                if let Ok(event) = serde_json::from_str(&line) {
                    collected.lock().unwrap().push(event);
                }
            }
        });
        let token = std::fs::read_to_string(scenario.dir.path().join("data/admin.token")).unwrap();
        Host { scenario, child, address, token, seen }
    }

    /// Wait for a log event of the host's that matches.
    fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + common::RUN_TIMEOUT;
        loop {
            if let Some(event) = self.seen.lock().unwrap().iter().find(|e| pred(e)) {
                return event.clone();
            }
            assert!(std::time::Instant::now() < deadline, "no {what} event");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn cli(&self, args: &[&str]) -> Run {
        let mut all: Vec<&str> = vec![args[0], self.scenario.manifest.to_str().unwrap()];
        all.extend(&args[1..]);
        run_command(agora(), &all)
    }

    fn call(&self, agent: &str, payload: &str) -> (u16, Value) {
        api(&self.address, &self.token, "POST", &format!("/v1/agents/{agent}/call?timeout_ms=10000"), payload)
    }

    fn reply(&self, agent: &str, payload: &str) -> String {
        let (status, body) = self.call(agent, payload);
        assert_eq!(status, 200, "{agent} <- {payload}: {body}");
        body["reply"].as_str().unwrap().to_string()
    }

    fn version_of(&self, agent: &str) -> String {
        let (status, body) = api(&self.address, &self.token, "GET", &format!("/v1/agents/{agent}"), "");
        assert_eq!(status, 200, "{body}");
        body["version"].as_str().unwrap().to_string()
    }

    /// The payloads of the events of `kind`, once there are `count` (journal writes are
    /// asynchronous: poll for them).
    fn events(&self, kind: &str, count: usize) -> Vec<Value> {
        for _ in 0..100 {
            let (status, page) = api(&self.address, &self.token, "GET", &format!("/v1/events?kind={kind}"), "");
            assert_eq!(status, 200, "{page}");
            let events = page["events"].as_array().cloned().unwrap_or_default();
            if events.len() >= count {
                return events.iter().map(|e| serde_json::from_str(e["payload"].as_str().unwrap()).unwrap()).collect();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("fewer than {count} {kind} events");
    }

    fn v2(&self) -> String {
        agent("counter_v2").display().to_string()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        terminate(&self.child);
        let _ = self.child.wait();
    }
}

const COUNTER: &str =
    "[[supervisor.children]]\nname = \"counter\"\nmodule = \"counter\"\ngrants = [\"messaging\", \"logging\"]\n";

#[test]
fn a_counter_upgraded_under_a_stream_of_calls_keeps_its_count_and_answers_each_call_once() {
    let host = Arc::new(Host::start(COUNTER));
    // A client calls `inc` back to back and records every reply.
    let done = Arc::new(AtomicBool::new(false));
    let client = {
        let (host, done) = (host.clone(), done.clone());
        std::thread::spawn(move || {
            let mut replies = Vec::new();
            while !done.load(Ordering::SeqCst) {
                replies.push(host.reply("counter", "inc").parse::<u64>().unwrap());
            }
            replies
        })
    };
    while host.reply("counter", "get").parse::<u64>().unwrap() < 50 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let loaded = host.cli(&["load", "counter", &host.v2(), "--version", "2", "--upgrade"]);
    loaded.assert_success();
    assert!(loaded.stdout.contains("loaded counter@2"), "{}", loaded.stdout);
    assert!(loaded.stdout.contains("upgraded counter from sha256:"), "{}", loaded.stdout);
    assert!(loaded.stdout.contains("state handed over") && loaded.stdout.contains("trial passed"), "{}", loaded.stdout);
    assert!(loaded.stdout.contains("1 upgraded, 0 failed"), "{}", loaded.stdout);
    // Keep calling a little on the new code, then stop the client.
    let upgraded_at = host.reply("counter", "get").parse::<u64>().unwrap();
    while host.reply("counter", "get").parse::<u64>().unwrap() < upgraded_at + 50 {
        std::thread::sleep(Duration::from_millis(5));
    }
    done.store(true, Ordering::SeqCst);
    let replies = client.join().unwrap();
    // Every call answered once, in order, and the count went on across the upgrade.
    let expected: Vec<u64> = (1..=replies.len() as u64).collect();
    assert_eq!(replies, expected, "replies skipped or repeated a count");
    assert_eq!(host.reply("counter", "get"), replies.len().to_string());
    assert_eq!(host.reply("counter", "version"), "2", "the new code answers");
    assert_eq!(host.reply("counter", "upgrades"), "1", "its restore ran once");
    assert_eq!(host.version_of("counter"), "2");
    // The upgrade is an event in the store, with its pause.
    let payload = host.events("agent_upgraded", 1).remove(0);
    assert_eq!((payload["to"].as_str(), payload["handoff"].as_str()), (Some("2"), Some("state")), "{payload}");
    assert!(payload["paused_us"].as_u64().is_some(), "{payload}");
    // Nothing runs the first version any more: the listing forgets it.
    let modules = host.cli(&["modules", "--json"]);
    let listed: Value = serde_json::from_str(&modules.stdout).unwrap();
    let counter = listed["modules"].as_array().unwrap().iter().find(|m| m["name"] == "counter").unwrap().clone();
    assert_eq!(counter["versions"].as_array().unwrap().len(), 1, "{counter}");
    assert_eq!(counter["versions"][0]["version"], "2");
}

#[test]
fn a_failed_upgrade_rolls_back_to_the_old_instance_with_its_state() {
    let agents = format!(
        "{COUNTER}[supervisor.children.config]\nrefuse_restore = \"true\"\n\
         [[supervisor.children]]\nname = \"trapper\"\nmodule = \"counter\"\ngrants = [\"messaging\", \"logging\"]\n\
         [supervisor.children.config]\ntrap_first = \"true\"\n"
    );
    let host = Host::start(&agents);
    assert_eq!(host.reply("counter", "add 7"), "7");
    assert_eq!(host.reply("trapper", "add 3"), "3");
    let loaded = host.cli(&["load", "counter", &host.v2(), "--version", "2"]);
    loaded.assert_success();
    let first = host.version_of("counter");

    // The new code refuses the state: the old instance serves on, count intact.
    let refused = host.cli(&["upgrade", "counter"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("failed at restore") && refused.stderr.contains("refuse_restore"),
        "{}",
        refused.stderr
    );
    assert_eq!(host.version_of("counter"), first);
    assert_eq!(host.reply("counter", "inc"), "8");

    // The new code traps in its first message: rolled back, and the message is answered by
    // the old instance instead of being lost.
    let upgrading = {
        let manifest = host.scenario.manifest.clone();
        std::thread::spawn(move || {
            run_command(agora(), &["upgrade", manifest.to_str().unwrap(), "trapper", "--trial", "20s", "--json"])
        })
    };
    // The upgrade waits for the first message; this call is it.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(host.reply("trapper", "inc"), "4", "the trial message, answered by the old code");
    let trapped = upgrading.join().unwrap();
    assert_eq!(trapped.status.code(), Some(1), "{trapped:?}");
    assert!(
        trapped.stderr.contains("failed at first_message") && trapped.stderr.contains("panic"),
        "{}",
        trapped.stderr
    );
    assert_eq!(host.version_of("trapper"), first);
    assert_eq!(host.reply("trapper", "get"), "4");

    // Two versions serve agents: a third is refused, and nothing changes.
    let third = host.cli(&["load", "counter", &agent("echo").display().to_string()]);
    assert_eq!(third.status.code(), Some(1), "{third:?}");
    assert!(third.stderr.contains("two versions") && third.stderr.contains("two_versions"), "{}", third.stderr);
    assert_eq!(host.reply("counter", "get"), "8");
    let stages: Vec<String> =
        host.events("agent_upgrade_failed", 2).iter().map(|e| e["stage"].as_str().unwrap().to_string()).collect();
    assert_eq!(stages, ["restore", "first_message"]);
}

#[test]
fn an_agent_without_the_state_interface_restarts_on_the_new_code_and_bad_loads_change_nothing() {
    let agents = "[[supervisor.children]]\nname = \"echo\"\nmodule = \"echo\"\ngrants = [\"messaging\"]\n\
                  [[supervisor.children]]\nname = \"small\"\nmodule = \"counter\"\nmemory = \"1MiB\"\ngrants = [\"messaging\"]\n";
    let host = Host::start(agents);
    assert_eq!(host.reply("echo", "hi"), "hi");
    // echo has no state interface: the counter's code starts fresh with `init`.
    host.cli(&["load", "echo", &agent("counter").display().to_string()]).assert_success();
    let upgraded = host.cli(&["upgrade", "echo", "--json"]);
    upgraded.assert_success();
    let report: Value = serde_json::from_str(&upgraded.stdout).unwrap();
    assert_eq!(report["upgraded"]["handoff"], "init", "{report}");
    assert_eq!(host.reply("echo", "get"), "0", "the new code runs, from init");

    // A file that is not a component: the load fails, the module is as it was.
    let junk = host.scenario.dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let failed = host.cli(&["load", "counter", junk.to_str().unwrap()]);
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    assert!(
        failed.stderr.contains("not a WebAssembly file") && failed.stderr.contains("invalid_module"),
        "{}",
        failed.stderr
    );
    let missing = host.cli(&["load", "counter", "/nonexistent.wasm"]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert_eq!(host.reply("small", "add 2"), "2");

    // A version whose start does not fit the agent's memory cap is refused before it runs.
    let python = common::workspace().join("target/guests/polyglot_py.wasm");
    assert!(python.is_file(), "make guests builds {}", python.display());
    host.cli(&["load", "counter", python.to_str().unwrap(), "--version", "py"]).assert_success();
    let refused = host.cli(&["upgrade", "small"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("failed at instantiate") && refused.stderr.contains("memory cap"),
        "{}",
        refused.stderr
    );
    assert_eq!(host.reply("small", "get"), "2", "the old instance, untouched");
}

#[test]
fn every_agent_of_a_module_is_upgraded_one_at_a_time_and_spawned_ones_run_the_current_version() {
    let agents = "[[supervisor.children]]\nname = \"pool\"\ndynamic = true\n";
    let host = Host::start(agents);
    for i in 0..12 {
        let name = format!("c{i}");
        let spawned =
            host.cli(&["spawn", "pool", &name, "counter", "--grant", "messaging", "--config", &format!("start={i}")]);
        spawned.assert_success();
        assert!(spawned.stdout.contains(&format!("spawned {name}")), "{}", spawned.stdout);
    }
    assert_eq!(host.reply("c5", "inc"), "6", "config reached the spawned agent");
    let loaded = host.cli(&["load", "counter", &host.v2(), "--version", "2", "--upgrade", "--trial", "0s"]);
    loaded.assert_success();
    assert!(loaded.stdout.contains("12 upgraded, 0 failed"), "{}", loaded.stdout);
    for i in 0..12 {
        let name = format!("c{i}");
        let expected = if i == 5 { 6 } else { i };
        assert_eq!(host.reply(&name, "get"), expected.to_string(), "{name} kept its count");
        assert_eq!(host.reply(&name, "version"), "2");
    }
    // A spawn now runs the current version; a restart too.
    host.cli(&["spawn", "pool", "fresh", "counter", "--grant", "messaging"]).assert_success();
    assert_eq!(host.version_of("fresh"), "2");
    // Refusals of spawn: a taken name, an unknown module, an unknown supervisor, a bad grant.
    let taken = host.cli(&["spawn", "pool", "fresh", "counter"]);
    assert_eq!(taken.status.code(), Some(1));
    assert!(taken.stderr.contains("already-exists"), "{}", taken.stderr);
    let unknown = host.cli(&["spawn", "pool", "x", "nothing"]);
    assert!(unknown.stderr.contains("invalid-module"), "{}", unknown.stderr);
    let nobody = host.cli(&["spawn", "nobody", "x", "counter"]);
    assert!(nobody.stderr.contains("no dynamic supervisor"), "{}", nobody.stderr);
    let grant = host.cli(&["spawn", "pool", "x", "counter", "--grant", "network"]);
    assert!(grant.stderr.contains("unknown grant"), "{}", grant.stderr);
    let ps = host.cli(&["ps"]);
    assert!(ps.stdout.contains("counter@2"), "{}", ps.stdout);
}

#[test]
fn state_crosses_languages_in_every_direction_the_sdks_allow() {
    let python = common::workspace().join("target/guests/counter_py.wasm");
    let js = common::workspace().join("target/guests/counter_js.wasm");
    let c = common::workspace().join("target/guests/counter_c.wasm");
    for guest in [&python, &js, &c] {
        assert!(guest.is_file(), "make guests builds {}", guest.display());
    }
    let agents = format!(
        "pycounter = {:?}\njscounter = {:?}\nccounter = {:?}\n\
         [[supervisor.children]]\nname = \"c\"\nmodule = \"ccounter\"\nmemory = \"2MiB\"\ngrants = [\"messaging\"]\n\
         [[supervisor.children]]\nname = \"js\"\nmodule = \"jscounter\"\nmemory = \"64MiB\"\ngrants = [\"messaging\", \"logging\"]\n\
         [[supervisor.children]]\nname = \"py\"\nmodule = \"pycounter\"\nmemory = \"64MiB\"\ngrants = [\"messaging\", \"logging\"]\n\
         [[supervisor.children]]\nname = \"rs\"\nmodule = \"counter\"\nmemory = \"64MiB\"\ngrants = [\"messaging\", \"logging\"]\n",
        python.display().to_string(),
        js.display().to_string(),
        c.display().to_string()
    );
    let host = Host::start(&agents);
    // C's snapshot, Rust's restore.
    assert_eq!(host.reply("c", "add 11"), "11");
    assert_eq!(host.reply("c", "version"), "c");
    host.cli(&["load", "ccounter", &host.v2()]).assert_success();
    host.cli(&["upgrade", "c", "--trial", "0s"]).assert_success();
    assert_eq!((host.reply("c", "inc"), host.reply("c", "version")), ("12".into(), "2".into()));
    // JavaScript's snapshot, Rust's restore.
    assert_eq!(host.reply("js", "add 6"), "6");
    assert_eq!(host.reply("js", "version"), "js");
    host.cli(&["load", "jscounter", &host.v2()]).assert_success();
    host.cli(&["upgrade", "js", "--trial", "0s"]).assert_success();
    assert_eq!(host.reply("js", "inc"), "7");
    assert_eq!(host.reply("js", "version"), "2");

    assert_eq!(host.reply("py", "add 41"), "41");
    assert_eq!(host.reply("py", "version"), "python");
    assert_eq!(host.reply("rs", "add 9"), "9");

    // Python's snapshot, Rust's restore.
    host.cli(&["load", "pycounter", &host.v2(), "--version", "rust-2"]).assert_success();
    let upgraded = host.cli(&["upgrade", "py", "--trial", "0s", "--json"]);
    upgraded.assert_success();
    let report: Value = serde_json::from_str(&upgraded.stdout).unwrap();
    assert_eq!(report["upgraded"]["handoff"], "state", "{report}");
    assert_eq!(host.reply("py", "inc"), "42");
    assert_eq!(host.reply("py", "version"), "2");

    // Rust's snapshot, Python's restore.
    host.cli(&["load", "counter", python.to_str().unwrap(), "--version", "py-1"]).assert_success();
    host.cli(&["upgrade", "rs", "--trial", "0s"]).assert_success();
    assert_eq!(host.reply("rs", "version"), "python");
    assert_eq!(host.reply("rs", "inc"), "10");
    assert_eq!(host.version_of("rs"), "py-1");

    // Python's snapshot, C's restore.
    host.cli(&["load", "counter", c.to_str().unwrap(), "--version", "c-1"]).assert_success();
    host.cli(&["upgrade", "rs", "--trial", "0s"]).assert_success();
    assert_eq!((host.reply("rs", "inc"), host.reply("rs", "version")), ("11".into(), "c".into()));
}

#[test]
fn reload_applies_a_changed_manifest_and_an_invalid_one_changes_nothing() {
    let agents =
        format!("{COUNTER}[[supervisor.children]]\nname = \"echo\"\nmodule = \"echo\"\ngrants = [\"messaging\"]\n");
    let host = Host::start(&agents);
    assert_eq!(host.reply("counter", "add 4"), "4");
    let unchanged = host.cli(&["reload"]);
    unchanged.assert_success();
    assert_eq!(unchanged.stdout.trim(), "nothing to change");

    // The new manifest: counter's code is version 2, echo is gone, echo2 and a config value are new.
    let original = std::fs::read_to_string(&host.scenario.manifest).unwrap();
    let v1 = agent("counter").display().to_string();
    let changed = original
        .replace(&format!("{v1:?}"), &format!("{{ path = {:?}, version = \"2\" }}", host.v2()))
        .replace("name = \"echo\"\nmodule = \"echo\"", "name = \"echo2\"\nmodule = \"echo\"")
        .replacen("[host]\n", "[host]\nmax_batch = 8\n", 1)
        + "\n[config.values]\ngreeting = \"hi\"\n";
    assert_ne!(changed, original);
    std::fs::write(&host.scenario.manifest, &changed).unwrap();
    let reloaded = host.cli(&["reload"]);
    reloaded.assert_success();
    for said in [
        "module counter: replaced 2",
        "echo2 under root: started",
        "echo under root: stopped",
        "upgraded counter from sha256:",
        "config greeting = hi",
        "host.max_batch = 8 (applied now)",
    ] {
        assert!(reloaded.stdout.contains(said), "{said:?} in {}", reloaded.stdout);
    }
    assert_eq!(host.reply("counter", "get"), "4", "the count came across");
    assert_eq!(host.reply("counter", "version"), "2");
    assert_eq!(host.reply("echo2", "yo"), "yo");
    assert_eq!(host.call("echo", "yo").0, 404, "echo was stopped");
    let config = run_command(agora(), &["config", "get", host.scenario.manifest.to_str().unwrap(), "greeting"]);
    assert_eq!(config.stdout.trim(), "hi");

    // SIGHUP with a manifest that does not hold: refused with where, and nothing changes.
    let broken = changed.replace("module = \"echo\"", "module = \"nowhere\"");
    std::fs::write(&host.scenario.manifest, broken).unwrap();
    let hup = std::process::Command::new("kill").args(["-HUP", &host.child.id().to_string()]).status().unwrap();
    assert!(hup.success());
    let failed = host.wait_for("reload_failed", |e| e["event"] == "reload_failed");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("unknown module \"nowhere\"") && error.contains("nothing was changed"), "{error}");
    assert_eq!(host.reply("echo2", "still"), "still");
    assert_eq!(host.reply("counter", "get"), "4");
}

#[test]
fn logs_show_the_recent_lines_and_follow_new_ones() {
    let host = Host::start(COUNTER);
    let recent = host.cli(&["logs", "-n", "50"]);
    recent.assert_success();
    assert!(recent.stdout.contains("counter: agent counter started"), "{}", recent.stdout);
    let json = host.cli(&["logs", "counter", "--json"]);
    let lines: Vec<Value> = json.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!lines.is_empty() && lines.iter().all(|l| l["agent"] == "counter"), "{}", json.stdout);

    // Follow one agent's lines while it stops and is restarted.
    let mut follower = agora()
        .args(["logs", host.scenario.manifest.to_str().unwrap(), "counter", "-f", "-n", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = common::lines_of(&mut follower);
    // Its one line of backlog says it follows: the backlog and the live lines join without a gap.
    let deadline = std::time::Instant::now() + common::RUN_TIMEOUT;
    let first = lines.next_before(deadline).expect("the backlog line");
    assert!(first.contains("counter: agent counter started"), "{first}");
    assert_eq!(host.call("counter", "stop").0, 200);
    let mut followed = Vec::new();
    while !followed.iter().any(|l: &String| l.contains("restarted after normal")) {
        match lines.next_before(deadline) {
            Some(line) => followed.push(line),
            None => panic!("the follower saw no restart: {followed:?}"),
        }
    }
    assert!(followed.iter().any(|l| l.contains("counter terminating (normal)")), "{followed:?}");
    assert!(followed.iter().all(|l| l.contains("counter:")), "only the counter's lines: {followed:?}");
    let _ = follower.kill();
    let _ = follower.wait();
    let bad = host.cli(&["logs", "-n", "999999"]);
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn a_hibernated_agent_is_woken_to_be_upgraded_and_keeps_its_state() {
    let host = Host::start(&format!("{COUNTER}hibernate_after = \"100ms\"\n"));
    assert_eq!(host.reply("counter", "add 5"), "5");
    host.wait_for("agent_hibernated", |e| e["event"] == "agent_hibernated" && e["agent"] == "counter");
    let before = host.version_of("counter");
    // An upgrade needs an instance: the sleeper wakes for it, from its snapshot, then moves.
    let loaded = host.cli(&["load", "counter", &host.v2(), "--version", "2", "--upgrade"]);
    loaded.assert_success();
    assert!(loaded.stdout.contains("1 upgraded, 0 failed"), "{}", loaded.stdout);
    host.wait_for("agent_woken", |e| e["event"] == "agent_woken" && e["agent"] == "counter");
    assert_ne!(host.version_of("counter"), before);
    assert_eq!(host.reply("counter", "get"), "5", "the count survived the sleep and the upgrade");
}

/// Warm instances are of the module's current version: after a load, a restart does not take
/// one of the old version's (it starts cold, on the new one), and the new version is kept warm.
#[test]
fn after_a_load_the_old_versions_warm_instances_are_dropped_and_the_new_one_is_kept_warm() {
    let counter = format!("counter = {:?}\n", agent("counter").display().to_string());
    let header = common::header("admin = \"127.0.0.1:0\"").replace(&counter, "");
    let table = format!("[modules.counter]\npath = {:?}\nwarm = 2\n", agent("counter").display().to_string());
    let host = Host::start_manifest(&format!("{header}\n{table}{COUNTER}"));
    let warm = |host: &Host| {
        let listed: Value = serde_json::from_str(&host.cli(&["modules", "--json"]).stdout).unwrap();
        listed["modules"].as_array().unwrap().iter().find(|m| m["name"] == "counter").unwrap()["warm"].clone()
    };
    let started = host.wait_for("agent_started", |e| e["event"] == "agent_started" && e["agent"] == "counter");
    assert_eq!(started["warm"], true, "filled before the tree started: {started}");
    host.reply("counter", "inc");
    let loaded = host.cli(&["load", "counter", &host.v2(), "--version", "2"]);
    loaded.assert_success();
    let (status, body) = api(&host.address, &host.token, "POST", "/v1/agents/counter/restart", "");
    assert_eq!(status, 200, "{body}");
    let restarted = host.wait_for("restart", |e| {
        e["event"] == "agent_started" && e["agent"] == "counter" && e["restarts"].as_u64() > Some(0)
    });
    assert_eq!(restarted["warm"], false, "the warm instances were of version 1: {restarted}");
    assert_eq!(host.version_of("counter"), "2");
    assert_eq!(host.reply("counter", "version"), "2");
    // Refilled with the new version behind the restart.
    let deadline = std::time::Instant::now() + common::RUN_TIMEOUT;
    while warm(&host) != serde_json::json!({ "ready": 2, "target": 2 }) {
        assert!(std::time::Instant::now() < deadline, "not refilled: {}", warm(&host));
        std::thread::sleep(Duration::from_millis(20));
    }
    // The same, for Prometheus.
    let metrics = common::metrics(&host.address);
    for line in ["agora_warm_instances{module=\"counter\"} 2", "agora_warm_target{module=\"counter\"} 2"] {
        assert!(metrics.lines().any(|l| l == line), "{line:?} in:\n{metrics}");
    }
}
