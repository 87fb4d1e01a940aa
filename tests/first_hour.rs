//! What a new user meets first: a message from outside (`run --call`), denials that say what
//! to grant, `check` refusing what `run` would, human logs, and a host that behaves as a
//! process should (one per data directory, SIGHUP survived, a doubled SIGTERM taken as one).

use crate::common;

use std::time::{Duration, Instant};

use common::{Scenario, lines_of, run_agora, terminate, wait_for_event};

const ECHO: &str =
    "[[agent]]\nname = \"echo\"\nmodule = \"echo\"\ngrants = [\"messaging\", \"registry\", \"logging\"]\n";

fn manifest(scenario: &Scenario) -> &str {
    scenario.manifest.to_str().unwrap()
}

#[test]
fn run_calls_agents_from_outside_prints_the_replies_and_stops() {
    let scenario = Scenario::agents("", ECHO);
    let run = run_agora(&[
        "run",
        "--log-format",
        "json",
        "--call",
        "echo=world",
        "--call",
        "echo=again",
        manifest(&scenario),
    ]);
    run.assert_success();
    let replies: Vec<&str> = run.stdout.lines().filter(|l| !l.starts_with('{')).collect();
    assert_eq!(replies, ["echo: world", "echo: again"], "{}", run.stdout);
    assert_eq!(run.events("run_finished", None)[0]["reason"], "interrupted", "stopped as on Ctrl-C");
    assert_eq!(run.exit("echo")["reason"], "shutdown");

    let run = run_agora(&["run", "--call", "nobody=x", "--call", "echo=still", manifest(&scenario)]);
    assert!(!run.status.success(), "a failed call fails the run");
    assert_eq!(run.stdout, "nobody: call failed: no agent is registered as \"nobody\"\necho: still\n");
    let run = run_agora(&["run", "--call", "no-equals-sign", manifest(&scenario)]);
    assert!(run.stderr.contains("expected NAME=TEXT"), "{}", run.stderr);
}

#[test]
fn a_denied_call_names_the_grant_to_add_once_per_interface_and_in_the_init_failure() {
    // The probe posts itself its script over messaging: without the grant, init fails.
    let denied = "[[agent]]\nname = \"bare\"\nmodule = \"probe\"\nrestart = \"temporary\"\ngrants = [\"logging\"]\n\
                  config = { script = \"log hi\" }\n";
    let run = Scenario::agents("", denied).run();
    run.assert_failure();
    let told = run.events("grant_denied", Some("bare"));
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!((told[0]["interface"].as_str(), told[0]["grant"].as_str()), (Some("messaging"), Some("messaging")));
    assert!(told[0]["message"].as_str().unwrap().contains("add \"messaging\" to its `grants`"), "{}", told[0]);
    let failed = &run.events("agent_start_failed", Some("bare"))[0];
    assert!(
        failed["detail"].as_str().unwrap().contains("the manifest must grant \"messaging\" (messaging)"),
        "{failed}"
    );
    assert!(run.stderr.contains("failed to start"), "{}", run.stderr);

    // Repeated denials of one interface are told once; another interface is told too.
    let repeat = "[[agent]]\nname = \"tries\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n\
                  grants = [\"logging\", \"messaging\"]\n\
                  config = { script = \"count 5 lock-try k exclusive 100; barrier b 2 10; count 3 lookup x; stop\" }\n";
    let run = Scenario::finite("", repeat).run();
    run.assert_success();
    let interfaces: Vec<&str> =
        run.events("grant_denied", Some("tries")).iter().filter_map(|e| e["interface"].as_str()).collect();
    assert_eq!(interfaces, ["locks", "barriers", "registry"]);
    let grants: Vec<&str> =
        run.events("grant_denied", Some("tries")).iter().filter_map(|e| e["grant"].as_str()).collect();
    assert_eq!(grants, ["coordination", "coordination", "registry"]);
}

#[test]
fn check_refuses_what_run_would_with_the_same_words() {
    // An [[agent]] without a module is a mistake, not an empty supervisor.
    let scenario = Scenario::agents("", "[[agent]]\nname = \"lost\"\n");
    for command in ["check", "run"] {
        let run = run_agora(&[command, manifest(&scenario)]);
        run.assert_failure();
        assert!(run.stderr.contains("`agent[0].module`: agent \"lost\" has no `module`"), "{command}: {}", run.stderr);
    }
    // A memory cap below the module's memory at start.
    let python = common::workspace().join("target/guests/polyglot_py.wasm");
    let scenario = Scenario::new(&format!(
        "[host]\ndata_dir = \"data\"\n[modules]\npy = {python:?}\n[[agent]]\nname = \"py\"\nmodule = \"py\"\nmemory = \"8MiB\"\n"
    ));
    let checked = run_agora(&["check", manifest(&scenario)]);
    checked.assert_failure();
    let ran = run_agora(&["run", manifest(&scenario)]);
    ran.assert_failure();
    let words = "MiB of memory at start, above its memory cap of 8.0 MiB (raise `memory`)";
    assert!(checked.stderr.contains(words) && checked.stderr.contains("agent \"py\""), "{}", checked.stderr);
    assert!(ran.stderr.contains(words), "{}", ran.stderr);
}

#[test]
fn check_with_json_logs_writes_only_json_and_text_logs_are_plain_off_a_terminal() {
    let scenario = Scenario::agents("", ECHO);
    let run = run_agora(&["check", "--log-format", "json", manifest(&scenario)]);
    run.assert_success();
    for line in run.stdout.lines() {
        assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "not JSON: {line}");
    }
    assert_eq!(run.events("check_passed", None).len(), 1);

    let text = run_agora(&["run", "--call", "echo=hi", manifest(&scenario)]);
    text.assert_success();
    assert!(!text.stderr.contains('\x1b'), "no colour into a pipe: {:?}", text.stderr);
    assert!(text.stderr.lines().any(|l| l.ends_with(" INFO agent echo started")), "{}", text.stderr);
    let coloured = run_agora(&["run", "--color", "always", "--call", "echo=hi", manifest(&scenario)]);
    assert!(coloured.stderr.contains("\x1b[32m"), "{}", coloured.stderr);
    let quiet = run_agora(&["run", "--quiet", "--call", "echo=hi", manifest(&scenario)]);
    assert!(quiet.stderr.is_empty(), "--quiet shows warnings only: {}", quiet.stderr);
    assert_eq!(quiet.stdout, "echo: hi\n");
}

#[test]
fn a_second_host_on_the_same_data_is_refused_naming_the_first() {
    let scenario = Scenario::agents("admin = \"127.0.0.1:0\"", ECHO);
    let (first, _lines, _seen, address) = common::until_admin_listens(scenario.spawn());
    let second = run_agora(&["run", manifest(&scenario)]);
    second.assert_failure();
    let expected = format!(
        "is in use by another agora host (pid {}, running {}, admin {address})",
        first.id(),
        manifest(&scenario)
    );
    assert!(second.stderr.contains(&expected), "{}", second.stderr);
    // `agora config` finds the running host through the same record.
    let config = run_agora(&["config", "get", manifest(&scenario)]);
    config.assert_success();
    terminate(&first);
    let mut first = first;
    assert!(first.wait().unwrap().success());
    // The record outlives the host, and is not trusted.
    assert!(scenario.dir.path().join("data/host.lock").exists());
    let stale = run_agora(&["config", "get", manifest(&scenario)]);
    stale.assert_failure();
    assert!(stale.stderr.contains("no host is running on"), "{}", stale.stderr);
}

#[test]
fn sighup_reloads_the_manifest_and_a_doubled_sigterm_stops_gracefully() {
    let scenario = Scenario::agents("", ECHO);
    let mut child = scenario.spawn();
    let mut lines = lines_of(&mut child);
    let mut seen = Vec::new();
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "agent_started" && e["agent"] == "echo");
    let signal = |name: &str| {
        assert!(std::process::Command::new("kill").args([name, &child.id().to_string()]).status().unwrap().success())
    };
    // SIGHUP reloads the manifest (unchanged here: the host keeps running as it was).
    signal("-HUP");
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "reloaded");
    // As GNU `timeout` does: the same signal twice, at once.
    signal("-TERM");
    signal("-TERM");
    let deadline = Instant::now() + common::RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the host did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    seen.extend(lines.filter_map(|l| serde_json::from_str(&l).ok()));
    assert_eq!(status.code(), Some(0), "one graceful stop, not the second signal's exit 130");
    assert!(seen.iter().any(|e| e["event"] == "agent_exited" && e["agent"] == "echo" && e["reason"] == "shutdown"));
}

/// Unsigned LEB128, as wasm sizes are written.
fn leb128(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[test]
fn a_small_agent_with_megabytes_of_debug_info_stays_in_the_compact_pool() {
    // A debug build is mostly DWARF, in custom sections: 5 MiB of it on the echo agent.
    let mut component = std::fs::read(common::agent("echo")).unwrap();
    let name = b".debug_info";
    let mut body = leb128(name.len());
    body.extend_from_slice(name);
    body.extend(std::iter::repeat_n(0u8, 5 << 20));
    component.push(0);
    component.extend(leb128(body.len()));
    component.extend(body);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("debug.wasm");
    std::fs::write(&path, &component).unwrap();
    let scenario = Scenario::new(&format!(
        "[host]\ndata_dir = \"data\"\n[modules]\ndebug = {:?}\n[[agent]]\nname = \"echo\"\nmodule = \"debug\"\n\
         grants = [\"messaging\", \"registry\", \"logging\"]\n",
        path.display().to_string()
    ));
    let run = run_agora(&["run", "--log-format", "json", "--call", "echo=debug", manifest(&scenario)]);
    run.assert_success();
    let loaded = &run.events("module_loaded", None)[0];
    assert_eq!(loaded["class"], "compact", "{loaded}");
    assert!(run.stdout.contains("echo: debug"), "{}", run.stdout);
}
