//! OTP supervisor behaviour, through manifests and the real binary: strategies, restart types,
//! intensity and escalation, shutdown order and timeouts, names kept across restarts.
//!
//! Each scenario puts the supervisor under test (`sup`) beside a `probe` that drives it, then
//! stops the host with SIGTERM once the probe is done, and reads the lifecycle events.

mod common;

use common::{Run, Scenario};
use serde_json::Value;

const GRANTS: &str = "grants = [\"messaging\", \"registry\", \"logging\"]";

/// A manifest: `sup` with the given settings and misbehave children, then a temporary probe
/// (with a budget for scripts that wait: every tick that passes while it polls costs one).
fn scenario(sup_settings: &str, children: &[(&str, &str)], script: &str) -> Scenario {
    let mut text = format!("[defaults]\n{GRANTS}\n[supervisor]\nintensity = 5\n");
    text.push_str(&format!("[[supervisor.children]]\nname = \"sup\"\n{sup_settings}\n"));
    for (name, extra) in children {
        text.push_str(&format!(
            "[[supervisor.children.children]]\nname = \"{name}\"\nmodule = \"misbehave\"\n{extra}\n"
        ));
    }
    text.push_str(&format!(
        "[[supervisor.children]]\nname = \"probe\"\nmodule = \"probe\"\nrestart = \"temporary\"\nbudget = \"30s\"\nconfig = {{ script = \"{script}\" }}\n"
    ));
    Scenario::agents("", &text)
}

/// The lifecycle events after the first one matching `from`, as (event, agent, reason) triples,
/// up to the probe's exit.
fn after(run: &Run, from: impl Fn(&Value) -> bool) -> Vec<(&str, &str, &str)> {
    let start = run.position(from).expect("the starting event");
    run.events[start + 1..]
        .iter()
        .take_while(|e| !(e["event"] == "agent_exited" && e["agent"] == "probe"))
        .filter(|e| matches!(e["event"].as_str(), Some("agent_started" | "agent_exited" | "agent_restarted")))
        .filter(|e| e["agent"] != "probe")
        .map(|e| (e["event"].as_str().unwrap(), e["agent"].as_str().unwrap(), e["reason"].as_str().unwrap_or("")))
        .collect()
}

fn crash_of(agent: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["event"] == "agent_exited" && e["agent"] == agent && e["reason"] == "panic"
}

#[test]
fn one_for_one_restarts_only_the_crashed_child() {
    let run = scenario(
        "strategy = \"one_for_one\"",
        &[("a", ""), ("b", ""), ("c", "")],
        "call b panic 5000; await b 5000; call b tick 5000; stop",
    )
    .run_until_exit_of("probe");
    assert_eq!(run.outcome("probe", "call b tick 5000"), "reply 1");
    assert_eq!(
        after(&run, crash_of("b")),
        vec![("agent_started", "b", ""), ("agent_restarted", "b", "panic")],
        "{:#?}",
        run.events
    );
}

#[test]
fn one_for_all_stops_the_others_in_reverse_and_restarts_all_in_order() {
    let run = scenario(
        "strategy = \"one_for_all\"",
        &[("a", ""), ("b", ""), ("c", "")],
        "lookup c; call b panic 5000; await-new c 5000; call a tick 5000; call c tick 5000; stop",
    )
    .run_until_exit_of("probe");
    assert_eq!(run.outcome("probe", "call c tick 5000"), "reply 1");
    assert_eq!(
        after(&run, crash_of("b")),
        vec![
            ("agent_exited", "c", "shutdown"),
            ("agent_exited", "a", "shutdown"),
            ("agent_started", "a", ""),
            ("agent_restarted", "a", "sibling_restart"),
            ("agent_started", "b", ""),
            ("agent_restarted", "b", "panic"),
            ("agent_started", "c", ""),
            ("agent_restarted", "c", "sibling_restart"),
        ]
    );
}

#[test]
fn rest_for_one_restarts_the_crashed_child_and_those_started_after_it() {
    let run = scenario(
        "strategy = \"rest_for_one\"",
        &[("a", ""), ("b", ""), ("c", ""), ("d", "")],
        "lookup d; call b panic 5000; await-new d 5000; call d tick 5000; stop",
    )
    .run_until_exit_of("probe");
    assert_eq!(
        after(&run, crash_of("b")),
        vec![
            ("agent_exited", "d", "shutdown"),
            ("agent_exited", "c", "shutdown"),
            ("agent_started", "b", ""),
            ("agent_restarted", "b", "panic"),
            ("agent_started", "c", ""),
            ("agent_restarted", "c", "sibling_restart"),
            ("agent_started", "d", ""),
            ("agent_restarted", "d", "sibling_restart"),
        ]
    );
}

#[test]
fn restart_types_decide_after_normal_and_abnormal_exits() {
    let run = scenario(
        "strategy = \"one_for_one\"\nintensity = 5",
        &[
            ("perm", "restart = \"permanent\""),
            ("trans", "restart = \"transient\""),
            ("temp", "restart = \"temporary\""),
            ("trans2", "restart = \"transient\""),
        ],
        "call perm stop 5000; await perm 5000; call trans stop 5000; call temp panic 5000; \
         call trans2 panic 5000; await trans2 5000; call trans2 tick 5000; lookup trans; lookup temp; stop",
    )
    .run_until_exit_of("probe");
    // A permanent child comes back even after a normal exit.
    assert!(run.outcome("probe", "await perm 5000").starts_with("id "));
    // A transient one only after a crash; a temporary one never.
    assert_eq!(run.outcome("probe", "call trans2 tick 5000"), "reply 1");
    assert_eq!(run.outcome("probe", "lookup trans"), "error not-found");
    assert_eq!(run.outcome("probe", "lookup temp"), "error not-found");
    let restarted: Vec<&str> =
        run.events("agent_restarted", None).iter().map(|e| e["agent"].as_str().unwrap()).collect();
    assert_eq!(restarted, vec!["perm", "trans2"]);
}

#[test]
fn too_many_restarts_escalate_up_the_tree_and_fail_the_run() {
    // `sup` allows 2 restarts in 30s; the root allows none, so sup's failure ends the run.
    let text = format!(
        "[defaults]\n{GRANTS}\n[supervisor]\nintensity = 0\n\
         [[supervisor.children]]\nname = \"sup\"\nintensity = 2\nperiod = \"30s\"\n\
         [[supervisor.children.children]]\nname = \"a\"\nmodule = \"misbehave\"\n\
         [[supervisor.children.children]]\nname = \"flaky\"\nmodule = \"misbehave\"\n\
         [[supervisor.children]]\nname = \"probe\"\nmodule = \"probe\"\nrestart = \"temporary\"\n\
         config = {{ script = \"call flaky panic 5000; await flaky 5000; call flaky panic 5000; await flaky 5000; call flaky panic 5000; stop\" }}\n"
    );
    let run = Scenario::agents("", &text).run();
    run.assert_failure();
    let failures: Vec<(&str, &str)> = run
        .events("supervisor_failed", None)
        .iter()
        .map(|e| (e["supervisor"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(failures, vec![("sup", "max_restart_intensity"), ("root", "max_restart_intensity")]);
    assert_eq!(run.events("agent_restarted", Some("flaky")).len(), 2);
    // Each crash report carries how often the agent had been restarted before it.
    let crash_restarts: Vec<u64> =
        run.events("agent_exited", Some("flaky")).iter().map(|e| e["restarts"].as_u64().unwrap()).collect();
    assert_eq!(crash_restarts, vec![0, 1, 2]);
    // The failing supervisor stopped its remaining child before failing.
    assert_eq!(run.exit("a")["reason"], "shutdown");
    assert!(run.stderr.contains("supervisor \"root\" failed: max_restart_intensity"), "{}", run.stderr);
    assert_eq!(run.events("run_finished", None)[0]["reason"], "failed");
}

#[test]
fn a_child_that_fails_to_start_fails_its_supervisor_start() {
    let text = format!(
        "[defaults]\n{GRANTS}\n\
         [[supervisor.children]]\nname = \"first\"\nmodule = \"misbehave\"\n\
         [[supervisor.children]]\nname = \"broken\"\nmodule = \"misbehave\"\nconfig = {{ on_init = \"error\" }}\n\
         [[supervisor.children]]\nname = \"never\"\nmodule = \"misbehave\"\n"
    );
    let run = Scenario::agents("", &text).run();
    run.assert_failure();
    assert_eq!(run.exit("first")["reason"], "shutdown");
    assert!(run.events("agent_started", Some("never")).is_empty());
}

#[test]
fn shutdown_stops_in_reverse_order_and_kills_past_the_timeout() {
    let text = format!(
        "[defaults]\n{GRANTS}\n\
         [[supervisor.children]]\nname = \"first\"\nmodule = \"misbehave\"\n\
         [[supervisor.children]]\nname = \"stuck\"\nmodule = \"misbehave\"\nbudget = \"60s\"\nshutdown = \"300ms\"\n\
         [[supervisor.children]]\nname = \"group\"\n\
         [[supervisor.children.children]]\nname = \"inner-1\"\nmodule = \"misbehave\"\n\
         [[supervisor.children.children]]\nname = \"inner-2\"\nmodule = \"misbehave\"\n\
         [[supervisor.children]]\nname = \"probe\"\nmodule = \"probe\"\nrestart = \"temporary\"\n\
         config = {{ script = \"send stuck loop; stop\" }}\n"
    );
    let run = Scenario::agents("", &text).run_until_exit_of("probe");
    assert!(run.status.success(), "{}", run.stderr);
    let exits: Vec<(&str, &str)> = run
        .events("agent_exited", None)
        .iter()
        .map(|e| (e["agent"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        exits,
        vec![
            ("probe", "normal"),
            ("inner-2", "shutdown"),
            ("inner-1", "shutdown"),
            ("stuck", "killed"),
            ("first", "shutdown"),
        ]
    );
}

#[test]
fn restart_backoff_delays_restarts() {
    let run = scenario(
        "backoff = { initial = \"2s\", max = \"4s\" }",
        &[("a", "")],
        "call a panic 5000; await a 100; await a 5000; stop",
    )
    .run_until_exit_of("probe");
    // Not back within the first 100 ms (far inside the 2 s delay, even on a loaded machine), back
    // within the next seconds.
    assert_eq!(run.outcome("probe", "await a 100"), "error timeout");
    assert!(run.outcome("probe", "await a 5000").starts_with("id "));
}

const ALL_GRANTS: &str = "grants = [\"messaging\", \"registry\", \"logging\", \"supervision\"]";

#[test]
fn dynamic_children_are_spawned_listed_restarted_under_their_name_and_stopped() {
    let text = format!(
        "[defaults]\n{ALL_GRANTS}\n\
         [[supervisor.children]]\nname = \"pool\"\ndynamic = true\nmax_children = 2\nintensity = 5\n\
         [[supervisor.children]]\nname = \"probe\"\nmodule = \"probe\"\nrestart = \"temporary\"\n\
         config = {{ script = \"spawn pool w1 misbehave permanent; spawn pool w2 counter temporary; \
         spawn pool w3 echo temporary; spawn pool w1 echo temporary; spawn nowhere x echo temporary; \
         spawn pool w4 nomodule temporary; spawn pool bad/name echo temporary; \
         call w1 panic 5000; await w1 5000; call w1 tick 5000; children pool; \
         stop-child pool w1; lookup w1; children pool; spawn pool w3 echo temporary; call w3 hi 5000; \
         stop-child pool ghost; stop\" }}\n"
    );
    let run = Scenario::agents("", &text).run_until_exit_of("probe");
    assert!(run.outcome("probe", "spawn pool w1 misbehave permanent").starts_with("id "));
    assert!(run.outcome("probe", "spawn pool w2 counter temporary").starts_with("id "));
    assert_eq!(run.outcome("probe", "spawn pool w3 echo temporary"), "error SpawnError::MaxChildren(2)");
    assert_eq!(run.outcome("probe", "spawn pool w1 echo temporary"), "error SpawnError::MaxChildren(2)");
    assert!(run.outcome("probe", "spawn nowhere x echo temporary").starts_with("error SpawnError::NotFound("));
    assert!(run.outcome("probe", "spawn pool w4 nomodule temporary").starts_with("error SpawnError::NotFound("));
    assert!(run.outcome("probe", "spawn pool bad/name echo temporary").starts_with("error SpawnError::Invalid("));
    // The restarted child is reachable under the same name.
    assert_eq!(run.outcome("probe", "call w1 tick 5000"), "reply 1");
    assert_eq!(run.outcome("probe", "stop-child pool w1"), "ok");
    assert_eq!(run.outcome("probe", "lookup w1"), "error not-found");
    let lists: Vec<String> = run.logs("probe").into_iter().filter(|l| l.starts_with("probe: children pool")).collect();
    assert_eq!(lists, vec!["probe: children pool => children [w1:1,w2:0]", "probe: children pool => children [w2:0]"]);
    // A stopped child frees its place.
    assert_eq!(run.outcome("probe", "call w3 hi 5000"), "reply hi");
    assert_eq!(run.outcome("probe", "stop-child pool ghost"), "error not-found");
    assert_eq!(run.exit("w1")["reason"], "panic");
}

#[test]
fn spawning_needs_the_supervision_grant_and_a_child_gets_no_more_than_its_parent() {
    let text = format!(
        "[defaults]\n{GRANTS}\n\
         [[supervisor.children]]\nname = \"pool\"\ndynamic = true\n\
         [[supervisor.children]]\nname = \"plain\"\nmodule = \"probe\"\nrestart = \"temporary\"\n\
         config = {{ run_in_init = \"true\", script = \"spawn pool x echo temporary; monitor plain; isolated echo hi 1048576 1000\" }}\n\
         [[supervisor.children]]\nname = \"parent\"\nmodule = \"probe\"\nrestart = \"temporary\"\n{ALL_GRANTS}\n\
         config = {{ run_in_init = \"true\", script = \"spawn pool kid probe temporary; stop\" }}\n"
    );
    let run = Scenario::agents("", &text).run_until_exit_of("parent");
    assert_eq!(run.outcome("plain", "spawn pool x echo temporary"), "error SpawnError::Denied");
    assert_eq!(run.outcome("plain", "monitor plain"), "error denied");
    assert_eq!(run.outcome("plain", "isolated echo hi 1048576 1000"), "error JobError::Denied");
    assert!(run.outcome("parent", "spawn pool kid probe temporary").starts_with("id "));
}

#[test]
fn monitors_deliver_down_messages_with_the_reason() {
    let text = format!(
        "[defaults]\n{ALL_GRANTS}\nrestart = \"temporary\"\n\
         [[supervisor.children]]\nname = \"target\"\nmodule = \"misbehave\"\n\
         [[supervisor.children]]\nname = \"calm\"\nmodule = \"misbehave\"\n\
         [[supervisor.children]]\nname = \"watcher\"\nmodule = \"probe\"\n\
         config = {{ report_messages = \"true\", run_in_init = \"true\", script = \"monitor target; monitor calm; monitor #999999\" }}\n\
         [[supervisor.children]]\nname = \"probe\"\nmodule = \"probe\"\n\
         config = {{ script = \"call target panic 5000; call calm stop 5000; call watcher sync 5000; stop\" }}\n"
    );
    let run = Scenario::agents("", &text).run_until_exit_of("probe");
    let target = run.events("agent_started", Some("target"))[0]["id"].as_u64().unwrap();
    let calm = run.events("agent_started", Some("calm"))[0]["id"].as_u64().unwrap();
    let got: Vec<String> =
        run.logs("watcher").into_iter().filter(|l| l.starts_with("probe got [agora:down]")).collect();
    assert_eq!(
        got,
        vec![
            "probe got [agora:down] ref=3 id=999999 reason=noproc".to_string(),
            format!("probe got [agora:down] ref=1 id={target} reason=panic"),
            format!("probe got [agora:down] ref=2 id={calm} reason=normal"),
        ]
    );
}

#[test]
fn links_take_partners_down_unless_they_trap_exits() {
    let text = format!(
        "[defaults]\n{ALL_GRANTS}\nrestart = \"temporary\"\n\
         [[supervisor.children]]\nname = \"doomed\"\nmodule = \"misbehave\"\n\
         [[supervisor.children]]\nname = \"graceful\"\nmodule = \"misbehave\"\n\
         [[supervisor.children]]\nname = \"partner\"\nmodule = \"probe\"\n\
         config = {{ run_in_init = \"true\", script = \"link doomed; link graceful\" }}\n\
         [[supervisor.children]]\nname = \"trapper\"\nmodule = \"probe\"\n\
         config = {{ report_messages = \"true\", run_in_init = \"true\", script = \"trap-exits on; link doomed\" }}\n\
         [[supervisor.children]]\nname = \"bystander\"\nmodule = \"probe\"\n\
         config = {{ run_in_init = \"true\", script = \"link graceful\" }}\n\
         [[supervisor.children]]\nname = \"probe\"\nmodule = \"probe\"\n\
         config = {{ script = \"call graceful stop 5000; call bystander alive 5000; call doomed panic 5000; call trapper sync 5000; stop\" }}\n"
    );
    let run = Scenario::agents("", &text).run_until_exit_of("probe");
    // A normal exit does not propagate.
    assert_eq!(run.outcome("probe", "call bystander alive 5000"), "reply alive");
    // An abnormal one kills the non-trapping partner, and reaches the trapping one as a message.
    let partner = run.exit("partner");
    assert_eq!(partner["reason"], "linked");
    let doomed = run.events("agent_started", Some("doomed"))[0]["id"].as_u64().unwrap();
    assert_eq!(partner["detail"], format!("linked agent {doomed} exited: panic"));
    assert!(run.logs("trapper").contains(&format!("probe got [agora:exit] id={doomed} reason=panic")));
    assert_eq!(run.outcome("probe", "call trapper sync 5000"), "reply sync");
}

#[test]
fn isolated_jobs_return_output_or_a_typed_error() {
    let text = format!(
        "[defaults]\n{ALL_GRANTS}\n\
         [[supervisor.children]]\nname = \"probe\"\nmodule = \"probe\"\nrestart = \"temporary\"\n\
         config = {{ script = \"isolated echo hello 1048576 1000; isolated misbehave hog 2097152 1000; \
         isolated misbehave loop 4194304 200; isolated misbehave panic 1048576 1000; isolated misbehave reject 1048576 1000; \
         isolated nothing x 1048576 1000; isolated echo again 1048576 1000; stop\" }}\n"
    );
    let run = Scenario::agents("", &text).run();
    run.assert_success();
    assert_eq!(run.outcome("probe", "isolated echo hello 1048576 1000"), "output hello");
    assert_eq!(run.outcome("probe", "isolated misbehave hog 2097152 1000"), "error JobError::MemoryCap(2097152)");
    assert_eq!(run.outcome("probe", "isolated misbehave loop 4194304 200"), "error JobError::CpuBudget");
    assert!(run.outcome("probe", "isolated misbehave panic 1048576 1000").starts_with("error JobError::Trap(\"panic:"));
    assert_eq!(
        run.outcome("probe", "isolated misbehave reject 1048576 1000"),
        "error JobError::Failed(\"misbehave: asked to reject\")"
    );
    assert!(run.outcome("probe", "isolated nothing x 1048576 1000").starts_with("error JobError::NotFound("));
    assert_eq!(run.outcome("probe", "isolated echo again 1048576 1000"), "output again");
    // The jobs were never agents: nothing was started or registered for them.
    assert_eq!(run.events("agent_started", None).len(), 1);
}

#[test]
fn components_under_spawn_paths_can_be_spawned_and_run_by_path_others_not() {
    let text = format!(
        "[defaults]\n{ALL_GRANTS}\n\
         [[supervisor.children]]\nname = \"pool\"\ndynamic = true\n\
         [[supervisor.children]]\nname = \"probe\"\nmodule = \"probe\"\nrestart = \"temporary\"\n\
         config = {{ script = \"spawn pool p1 plugins/echo.wasm temporary; call p1 hi 5000; \
         spawn pool p2 outside.wasm temporary; spawn pool p3 plugins/missing.wasm temporary; \
         isolated plugins/echo.wasm hey 1048576 1000; isolated outside.wasm hey 1048576 1000; stop\" }}\n"
    );
    let scenario = Scenario::agents("spawn_paths = [\"plugins\"]", &text);
    let plugins = scenario.dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(common::agent("echo"), plugins.join("echo.wasm")).unwrap();
    std::fs::copy(common::agent("echo"), scenario.dir.path().join("outside.wasm")).unwrap();
    let run = scenario.run_until_exit_of("probe");
    assert!(run.outcome("probe", "spawn pool p1 plugins/echo.wasm temporary").starts_with("id "));
    assert_eq!(run.outcome("probe", "call p1 hi 5000"), "reply hi");
    assert_eq!(run.outcome("probe", "spawn pool p2 outside.wasm temporary"), "error SpawnError::Denied");
    assert!(
        run.outcome("probe", "spawn pool p3 plugins/missing.wasm temporary").starts_with("error SpawnError::NotFound(")
    );
    assert_eq!(run.outcome("probe", "isolated plugins/echo.wasm hey 1048576 1000"), "output hey");
    assert_eq!(run.outcome("probe", "isolated outside.wasm hey 1048576 1000"), "error JobError::Denied");
}
