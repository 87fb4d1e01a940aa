//! Memory caps, CPU budgets and crashes: a misbehaving agent ends with a precise report while the
//! others keep working.

use crate::common;

use common::Scenario;

/// Every interface granted; no restarts, so that each scenario ends when its agents stop.
const GRANT_ALL: &str =
    "grants = [\"messaging\", \"registry\", \"logging\"]\nrestart = \"temporary\"\nsignificant = true";

#[test]
fn memory_hog_is_stopped_at_its_cap_and_others_keep_working() {
    let run = Scenario::finite(
        "",
        &format!(
            "[defaults]\n{GRANT_ALL}\n\
             [[agent]]\nname = \"hog\"\nmodule = \"misbehave\"\nmemory = \"2MiB\"\n\
             [[agent]]\nname = \"counter\"\nmodule = \"counter\"\n\
             [[agent]]\nname = \"probe\"\nmodule = \"probe\"\n\
             config = {{ script = \"call hog hog 10000; call counter inc 5000; send counter stop; stop\" }}\n"
        ),
    )
    .run();
    run.assert_success();
    // The caller learns that its target died.
    assert_eq!(run.outcome("probe", "call hog hog 10000"), "error stopped");
    assert_eq!(run.outcome("probe", "call counter inc 5000"), "reply 1");
    let exit = run.exit("hog");
    assert_eq!(exit["reason"], "memory_cap");
    assert_eq!(exit["level"], "ERROR");
    assert!(exit["detail"].as_str().unwrap().contains("memory cap of 2.0 MiB exceeded"), "{exit}");
    assert!(exit["peak_memory"].as_u64().unwrap() <= 2 << 20);
    assert_eq!(run.exit("counter")["reason"], "normal");
}

#[test]
fn looping_agents_are_interrupted_while_others_make_progress() {
    // Three agents spin on two cores; the probe still completes its calls long before the
    // spinners' budgets run out, because a spinning agent yields at every epoch tick.
    let run = Scenario::finite(
        "",
        &format!(
            "[defaults]\n{GRANT_ALL}\n\
             [[agent]]\nname = \"spin-1\"\nmodule = \"misbehave\"\nbudget = \"5s\"\n\
             [[agent]]\nname = \"spin-2\"\nmodule = \"misbehave\"\nbudget = \"5s\"\n\
             [[agent]]\nname = \"spin-3\"\nmodule = \"misbehave\"\nbudget = \"5s\"\n\
             [[agent]]\nname = \"counter\"\nmodule = \"counter\"\n\
             [[agent]]\nname = \"probe\"\nmodule = \"probe\"\n\
             config = {{ script = \"send spin-1 loop; send spin-2 loop; send spin-3 loop; repeat 20 call counter inc 30000; send counter stop; stop\" }}\n"
        ),
    )
    .run();
    run.assert_success();
    assert_eq!(run.outcome("probe", "repeat 20 call counter inc 30000"), "reply 20");
    let progress = run.position(|e| e["message"] == "probe: repeat 20 call counter inc 30000 => reply 20").unwrap();
    for spinner in ["spin-1", "spin-2", "spin-3"] {
        let exit = run.exit(spinner);
        assert_eq!(exit["reason"], "cpu_budget", "{exit}");
        let interrupted = run.position(|e| e["event"] == "agent_exited" && e["agent"] == spinner).unwrap();
        assert!(progress < interrupted, "{spinner} was interrupted before the probe made progress");
    }
}

#[test]
fn waiting_and_queueing_cost_no_cpu_budget() {
    // The probe may use 200 ms of CPU in one callback. It spends far longer than that waiting:
    // 300 sleeps of 1 ms, then 1,000 calls queued behind three spinners that keep both worker
    // threads busy. Its own compute is a few milliseconds, so its budget must not run out (it
    // did when the budget counted every tick that passed while the callback was suspended).
    let run = Scenario::finite(
        "",
        &format!(
            "[defaults]\n{GRANT_ALL}\n\
             [[agent]]\nname = \"spin-1\"\nmodule = \"misbehave\"\nbudget = \"1s\"\n\
             [[agent]]\nname = \"spin-2\"\nmodule = \"misbehave\"\nbudget = \"1s\"\n\
             [[agent]]\nname = \"spin-3\"\nmodule = \"misbehave\"\nbudget = \"1s\"\n\
             [[agent]]\nname = \"counter\"\nmodule = \"counter\"\n\
             [[agent]]\nname = \"probe\"\nmodule = \"probe\"\nbudget = \"200ms\"\n\
             config = {{ script = \"await nobody 300; send spin-1 loop; send spin-2 loop; send spin-3 loop; \
             repeat 1000 call counter inc 30000; send counter stop; stop\" }}\n"
        ),
    )
    .run();
    run.assert_success();
    assert_eq!(run.outcome("probe", "await nobody 300"), "error timeout");
    assert_eq!(run.outcome("probe", "repeat 1000 call counter inc 30000"), "reply 1000");
    assert_eq!(run.exit("probe")["reason"], "normal");
    for spinner in ["spin-1", "spin-2", "spin-3"] {
        assert_eq!(run.exit(spinner)["reason"], "cpu_budget");
    }
}

#[test]
fn a_guest_cannot_flood_the_host_log() {
    // 10 MB as one line, then 10 MB as 100,000 lines: the log gets at most a second's worth of
    // lines (100 lines, 64 KiB) per burst, a long line cut at 1 KiB, and the drops reported.
    let run = Scenario::finite(
        "",
        &format!(
            "[defaults]\n{GRANT_ALL}\n\
             [[agent]]\nname = \"loud\"\nmodule = \"misbehave\"\nbudget = \"60s\"\nmemory = \"32MiB\"\n\
             [[agent]]\nname = \"probe\"\nmodule = \"probe\"\nbudget = \"60s\"\n\
             config = {{ script = \"call loud spew-line 60000; call loud spew-lines 60000; send loud stop; stop\" }}\n"
        ),
    )
    .run();
    run.assert_success();
    assert_eq!(run.outcome("probe", "call loud spew-line 60000"), "reply spew-line");
    let output: Vec<&serde_json::Value> = run.events("agent_output", Some("loud"));
    let logged: usize = output.iter().map(|e| e["message"].as_str().unwrap().len()).sum();
    assert!(output.len() <= 2 * 100 + 1, "{} lines logged", output.len());
    assert!(logged <= 2 * (64 << 10) + 2048, "{logged} bytes logged");
    let cut = output.iter().find(|e| e["message"].as_str().unwrap().starts_with('y')).expect("the long line, cut");
    assert!(cut["message"].as_str().unwrap().ends_with(&format!("[{} more bytes cut]", (10 << 20) - 1024)), "{cut}");
    assert!(run.stdout.len() < 2 << 20, "the whole log is {} bytes", run.stdout.len());
}

#[test]
fn a_panic_is_reported_with_its_message_and_backtrace() {
    let run = Scenario::finite(
        "",
        &format!(
            "[defaults]\n{GRANT_ALL}\n\
             [[agent]]\nname = \"fragile\"\nmodule = \"misbehave\"\n\
             [[agent]]\nname = \"fatal\"\nmodule = \"misbehave\"\n\
             [[agent]]\nname = \"deep\"\nmodule = \"misbehave\"\n\
             [[agent]]\nname = \"probe\"\nmodule = \"probe\"\n\
             config = {{ script = \"call fragile tick 5000; call fragile panic 5000; call fatal fatal 5000; call deep recurse 5000; stop\" }}\n"
        ),
    )
    .run();
    run.assert_success();
    assert_eq!(run.outcome("probe", "call fragile tick 5000"), "reply 1");
    assert_eq!(run.outcome("probe", "call fragile panic 5000"), "error stopped");
    let exit = run.exit("fragile");
    assert_eq!(exit["reason"], "panic", "{exit}");
    assert!(exit["output"].as_str().unwrap().contains("misbehave: asked to panic"), "{exit}");
    // The crash line names the panic's message and place, not only the trap it ended in.
    let detail = exit["detail"].as_str().unwrap();
    assert!(detail.starts_with("misbehave: asked to panic (panicked at sample-agents/rust/misbehave/src/"), "{exit}");
    assert!(exit["backtrace"].as_str().unwrap().contains("misbehave"), "{exit}");
    let exit = run.exit("fatal");
    assert_eq!(exit["reason"], "handler_fatal", "{exit}");
    assert_eq!(exit["detail"], "misbehave: asked to fail fatally");
    let exit = run.exit("deep");
    assert_eq!(exit["reason"], "stack_overflow", "{exit}");
    assert!(exit["backtrace"].as_str().unwrap().contains("recurse"), "{exit}");
}

#[test]
fn an_init_error_fails_the_start_and_the_run() {
    for (config, reason) in [("on_init = \"error\"", "init_failed"), ("on_init = \"hog\"", "memory_cap")] {
        let run = Scenario::finite(
            "",
            &format!(
                "[defaults]\n{GRANT_ALL}\nmemory = \"2MiB\"\n\
                 [[agent]]\nname = \"fine\"\nmodule = \"echo\"\n\
                 [[agent]]\nname = \"broken\"\nmodule = \"misbehave\"\nconfig = {{ {config} }}\n"
            ),
        )
        .run();
        run.assert_failure();
        assert!(run.stderr.contains(&format!("agent \"broken\" failed to start: {reason}")), "{}", run.stderr);
        assert_eq!(run.events("agent_start_failed", Some("broken"))[0]["reason"], reason);
        assert_eq!(run.exit("fine")["reason"], "shutdown");
    }
}

#[test]
fn a_panicking_host_service_is_restarted_and_logged() {
    // The epoch ticker drives CPU control; the fault hook makes it panic once. It must come back,
    // or the looping agent below would never be interrupted.
    let scenario = Scenario::finite(
        "",
        &format!(
            "[defaults]\n{GRANT_ALL}\n\
             [[agent]]\nname = \"spin\"\nmodule = \"misbehave\"\nbudget = \"500ms\"\n\
             [[agent]]\nname = \"probe\"\nmodule = \"probe\"\nconfig = {{ script = \"send spin loop; stop\" }}\n"
        ),
    );
    let output = common::agora()
        .args(["run", "--log-format", "json", scenario.manifest.to_str().unwrap()])
        .env("AGORA_INJECT_FAULT", "epoch-ticker")
        .output()
        .unwrap();
    assert!(output.status.success());
    let events = common::parse_events(&String::from_utf8_lossy(&output.stdout));
    let restarted = events.iter().find(|e| e["event"] == "host_task_restarted").expect("a restart event");
    assert_eq!(restarted["task"], "epoch_ticker");
    let spin = events.iter().find(|e| e["event"] == "agent_exited" && e["agent"] == "spin").unwrap();
    assert_eq!(spin["reason"], "cpu_budget");
}
