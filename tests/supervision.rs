//! OTP supervisor behaviour, through manifests and the real binary: strategies, restart types,
//! intensity and escalation, shutdown order and timeouts, names kept across restarts.
//!
//! Each scenario puts the supervisor under test (`sup`) beside a `probe` that drives it, then
//! stops the host with SIGTERM once the probe is done, and reads the lifecycle events.

use crate::common;

use common::{Run, Scenario};
use std::time::Duration;

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
        "[[supervisor.children]]\nname = \"probe\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\nbudget = \"30s\"\nconfig = {{ script = \"{script}\" }}\n"
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
            ("temp", "restart = \"temporary\"\nsignificant = true"),
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
         [[supervisor.children]]\nname = \"probe\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n\
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
    let run = Scenario::finite("", &text).run();
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
         [[supervisor.children]]\nname = \"probe\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n\
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
fn brutal_kill_skips_terminate_and_infinity_waits_for_the_callback_to_end() {
    // The host is stopped while both probes sleep inside their one long callback.
    let text = format!(
        "[defaults]\n{GRANTS}\n\
         [[agent]]\nname = \"brutal\"\nmodule = \"echo\"\nshutdown = \"brutal_kill\"\n\
         [[agent]]\nname = \"gentle\"\nmodule = \"echo\"\n\
         [[agent]]\nname = \"patient\"\nmodule = \"probe\"\nshutdown = \"infinity\"\n\
         config = {{ script = \"log sleeping; sleep 6000; log woke\" }}\n\
         [[agent]]\nname = \"hasty\"\nmodule = \"probe\"\nshutdown = \"1s\"\n\
         config = {{ script = \"log dozing; sleep 6000; log awake\" }}\n"
    );
    let scenario = Scenario::agents("", &text);
    let mut child = scenario.spawn();
    let mut lines = common::lines_of(&mut child);
    let mut seen = Vec::new();
    let logged = |seen: &[Value], agent: &str, message: &str| {
        seen.iter().any(|e| e["agent"] == agent && e["message"].as_str().is_some_and(|m| m.starts_with(message)))
    };
    common::wait_for_event(&mut lines, &mut seen, |e| {
        e["agent"] == "patient" && e["message"] == "probe: log sleeping => sleeping"
    });
    if !logged(&seen, "hasty", "probe: log dozing") {
        common::wait_for_event(&mut lines, &mut seen, |e| {
            e["agent"] == "hasty" && e["message"] == "probe: log dozing => dozing"
        });
    }
    common::terminate(&child);
    seen.extend(lines.filter_map(|l| serde_json::from_str::<Value>(&l).ok()));
    assert!(child.wait().unwrap().success());
    let reason = |agent: &str| {
        let exit = seen.iter().find(|e| e["event"] == "agent_exited" && e["agent"] == agent);
        exit.unwrap_or_else(|| panic!("{agent} never exited: {seen:#?}"))["reason"].as_str().unwrap().to_string()
    };
    assert_eq!(reason("brutal"), "killed");
    assert!(!logged(&seen, "brutal", "echo terminating"), "brutal_kill calls no terminate");
    assert_eq!(reason("gentle"), "shutdown");
    assert!(logged(&seen, "gentle", "echo terminating (shutdown)"));
    assert_eq!(reason("patient"), "shutdown", "infinity waits however long the callback takes");
    assert!(logged(&seen, "patient", "probe: log woke"), "its callback ran to the end");
    assert_eq!(reason("hasty"), "killed", "killed when its 1s ran out");
    assert!(!logged(&seen, "hasty", "probe: log awake"));
}

#[test]
fn restart_backoff_doubles_up_to_its_cap() {
    let crash = "lookup a; call a panic 5000; await-new a 10000";
    let run = scenario(
        "intensity = 10\nbackoff = { initial = \"300ms\", max = \"700ms\" }",
        &[("a", "")],
        &format!("{crash}; {crash}; {crash}; {crash}; stop"),
    )
    .run_until_exit_of("probe");
    let at = |event: &Value| humantime::parse_rfc3339(event["timestamp"].as_str().unwrap()).unwrap();
    let crashes: Vec<&Value> =
        run.events("agent_exited", Some("a")).into_iter().filter(|e| e["reason"] == "panic").collect();
    let starts = run.events("agent_started", Some("a"));
    assert_eq!((crashes.len(), starts.len()), (4, 5), "{:#?}", run.events);
    let delays: Vec<Duration> =
        crashes.iter().zip(&starts[1..]).map(|(crash, start)| at(start).duration_since(at(crash)).unwrap()).collect();
    // Each wait is at least the backoff (300, 600, then the 700 ms cap twice); the cap holds it
    // well under the 1.2 s an uncapped doubling would reach by the third.
    for (delay, least) in delays.iter().zip([300, 600, 700, 700]) {
        assert!(*delay >= Duration::from_millis(least), "{delays:?}");
    }
    for delay in &delays[2..] {
        assert!(*delay < Duration::from_millis(1200), "capped at 700 ms: {delays:?}");
    }
}

const ALL_GRANTS: &str = "grants = [\"messaging\", \"registry\", \"logging\", \"supervision\"]";

#[test]
fn dynamic_children_are_spawned_listed_restarted_under_their_name_and_stopped() {
    let text = format!(
        "[defaults]\n{ALL_GRANTS}\n\
         [[supervisor.children]]\nname = \"pool\"\ndynamic = true\nmax_children = 2\nintensity = 5\n\
         [[supervisor.children]]\nname = \"probe\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n\
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
fn a_spawn_under_a_taken_name_is_already_exists_and_a_failing_init_is_start_failed() {
    let text = format!(
        "[defaults]\n{ALL_GRANTS}\n\
         [[supervisor.children]]\nname = \"pool\"\ndynamic = true\nmax_children = 10\n\
         [[supervisor.children]]\nname = \"resident\"\nmodule = \"echo\"\n\
         [[supervisor.children]]\nname = \"probe\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n\
         config = {{ script = \"spawn pool w1 echo temporary; spawn pool w1 echo temporary; \
         spawn pool resident echo temporary; spawn pool doomed probe temporary - panic; \
         children pool; call resident hi 5000; stop\" }}\n"
    );
    let run = Scenario::agents("", &text).run_until_exit_of("probe");
    let step = |s: &str| run.outcome("probe", s);
    assert!(step("spawn pool w1 echo temporary").starts_with("id "));
    let again: Vec<String> =
        run.logs("probe").into_iter().filter(|l| l.starts_with("probe: spawn pool w1 echo temporary")).collect();
    assert_eq!(again[1], "probe: spawn pool w1 echo temporary => error SpawnError::AlreadyExists");
    assert_eq!(step("spawn pool resident echo temporary"), "error SpawnError::AlreadyExists", "a static agent's name");
    let doomed = step("spawn pool doomed probe temporary - panic");
    assert!(doomed.starts_with("error SpawnError::StartFailed(") && doomed.contains("panic"), "{doomed}");
    assert_eq!(step("children pool"), "children [w1:0]", "a child that failed to start is not kept");
    assert_eq!(step("call resident hi 5000"), "reply hi", "the resident was not disturbed");
    assert_eq!(run.events("agent_start_failed", Some("doomed")).len(), 1);
}

#[test]
fn spawning_needs_the_supervision_grant_and_a_child_gets_no_more_than_its_parent() {
    let text = format!(
        "[defaults]\n{GRANTS}\n\
         [[supervisor.children]]\nname = \"pool\"\ndynamic = true\n\
         [[supervisor.children]]\nname = \"plain\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n\
         config = {{ run_in_init = \"true\", script = \"spawn pool x echo temporary; monitor plain; isolated echo hi 1048576 1000\" }}\n\
         [[supervisor.children]]\nname = \"parent\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n{ALL_GRANTS}\n\
         config = {{ run_in_init = \"true\", script = \"spawn pool kid probe temporary - config-get greeting; \
         spawn pool kid2 probe temporary - lookup parent; spawn pool big probe temporary 99999999999; stop\" }}\n\
         [config.values]\ngreeting = \"hi\"\n"
    );
    let run = Scenario::agents("", &text).run_until_exit_of("parent");
    assert_eq!(run.outcome("plain", "spawn pool x echo temporary"), "error SpawnError::Denied");
    assert_eq!(run.outcome("plain", "monitor plain"), "error denied");
    assert_eq!(run.outcome("plain", "isolated echo hi 1048576 1000"), "error JobError::Denied");
    assert!(run.outcome("parent", "spawn pool kid probe temporary - config-get greeting").starts_with("id "));
    // The child holds its parent's grants and no more: `config` is denied to it, `registry` not.
    assert_eq!(run.outcome("kid", "config-get greeting"), "error denied");
    let parent = run.events("agent_started", Some("parent"))[0]["id"].as_u64().unwrap();
    assert_eq!(run.outcome("kid2", "lookup parent"), format!("id {parent}"));
    // Limits above the host's bounds are refused.
    let big = run.outcome("parent", "spawn pool big probe temporary 99999999999");
    assert!(big.starts_with("error SpawnError::Invalid(\"memory 99999999999 is outside"), "{big}");
}

#[test]
fn monitors_deliver_down_messages_with_the_reason() {
    let text = format!(
        "[defaults]\n{ALL_GRANTS}\nrestart = \"temporary\"\nsignificant = true\n\
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
        "[defaults]\n{ALL_GRANTS}\nrestart = \"temporary\"\nsignificant = true\n\
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
    let detail = partner["detail"].as_str().unwrap();
    assert!(detail.starts_with(&format!("linked agent {doomed} exited: panic: ")), "{detail}");
    assert!(run.logs("trapper").contains(&format!("probe got [agora:exit] id={doomed} reason=panic")));
    assert_eq!(run.outcome("probe", "call trapper sync 5000"), "reply sync");
}

#[test]
fn isolated_jobs_return_output_or_a_typed_error() {
    let text = format!(
        "[defaults]\n{ALL_GRANTS}\n\
         [[supervisor.children]]\nname = \"probe\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n\
         config = {{ script = \"isolated echo hello 1048576 1000; isolated misbehave hog 2097152 1000; \
         isolated misbehave loop 4194304 200; isolated misbehave panic 1048576 1000; isolated misbehave reject 1048576 1000; \
         isolated nothing x 1048576 1000; isolated echo again 1048576 1000; stop\" }}\n"
    );
    let run = Scenario::finite("", &text).run();
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
         [[supervisor.children]]\nname = \"probe\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n\
         config = {{ script = \"spawn pool p1 plugins/echo.wasm temporary; call p1 hi 5000; \
         spawn pool p2 outside.wasm temporary; spawn pool p3 plugins/missing.wasm temporary; \
         spawn pool p4 missing-outside.wasm temporary; spawn pool p5 plugins/../outside.wasm temporary; \
         spawn pool p6 /etc/hostname temporary; spawn pool p7 plugins/not-wasm.txt temporary; \
         isolated plugins/echo.wasm hey 1048576 1000; isolated outside.wasm hey 1048576 1000; stop\" }}\n"
    );
    let scenario = Scenario::agents("spawn_paths = [\"plugins\"]", &text);
    let plugins = scenario.dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(common::agent("echo"), plugins.join("echo.wasm")).unwrap();
    std::fs::copy(common::agent("echo"), scenario.dir.path().join("outside.wasm")).unwrap();
    std::fs::write(plugins.join("not-wasm.txt"), "hello").unwrap();
    let run = scenario.run_until_exit_of("probe");
    // Outside the spawn paths, a file that exists and one that does not get the same answer.
    for step in ["p4 missing-outside.wasm", "p5 plugins/../outside.wasm", "p6 /etc/hostname"] {
        assert_eq!(run.outcome("probe", &format!("spawn pool {step} temporary")), "error SpawnError::Denied", "{step}");
    }
    // No answer shows where the host keeps its files.
    let host_dir = scenario.dir.path().canonicalize().unwrap().display().to_string();
    let invalid = run.outcome("probe", "spawn pool p7 plugins/not-wasm.txt temporary");
    assert!(invalid.starts_with("error SpawnError::Invalid(") && invalid.contains("plugins/not-wasm.txt"), "{invalid}");
    for line in run.logs("probe") {
        assert!(!line.contains(&host_dir), "a host path reached the guest: {line}");
    }
    assert!(run.outcome("probe", "spawn pool p1 plugins/echo.wasm temporary").starts_with("id "));
    assert_eq!(run.outcome("probe", "call p1 hi 5000"), "reply hi");
    assert_eq!(run.outcome("probe", "spawn pool p2 outside.wasm temporary"), "error SpawnError::Denied");
    assert!(
        run.outcome("probe", "spawn pool p3 plugins/missing.wasm temporary").starts_with("error SpawnError::NotFound(")
    );
    assert_eq!(run.outcome("probe", "isolated plugins/echo.wasm hey 1048576 1000"), "output hey");
    assert_eq!(run.outcome("probe", "isolated outside.wasm hey 1048576 1000"), "error JobError::Denied");
}

/// The id an agent (or supervisor) was started with.
fn started_id(run: &Run, event: &str, key: &str, name: &str) -> u64 {
    let found = run.events.iter().find(|e| e["event"] == event && e[key] == name);
    found.unwrap_or_else(|| panic!("no {event} for {name}: {:#?}", run.events))["id"].as_u64().unwrap()
}

#[test]
fn a_dynamic_supervisor_forgets_children_that_will_not_be_restarted() {
    // OTP deletes a transient child that exited normally and any temporary child: it no longer
    // counts toward max_children, its name can be spawned again, and stop-child cannot find it.
    let text = format!(
        "[defaults]\n{ALL_GRANTS}\n\
         [[supervisor.children]]\nname = \"pool\"\ndynamic = true\nmax_children = 1\nintensity = 5\n\
         [[supervisor.children]]\nname = \"probe\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n\
         config = {{ script = \"spawn pool t1 misbehave transient; call t1 stop 5000; await-children pool 5000 []; \
         spawn pool t1 echo temporary; children pool; stop-child pool t1; \
         spawn pool t2 misbehave temporary; call t2 panic 5000; await-children pool 5000 []; stop-child pool t2; \
         spawn pool t3 misbehave transient; call t3 exit:shutdown 5000; await-children pool 5000 []; \
         spawn pool t4 echo temporary; stop\" }}\n"
    );
    let run = Scenario::finite("", &text).run();
    run.assert_success();
    let outcomes: Vec<String> = [
        "await-children pool 5000 []",
        "spawn pool t1 echo temporary",
        "children pool",
        "stop-child pool t1",
        "stop-child pool t2",
        "spawn pool t4 echo temporary",
    ]
    .iter()
    .map(|step| run.outcome("probe", step).split(' ').next().unwrap().to_string())
    .collect();
    assert_eq!(outcomes, ["children", "id", "children", "ok", "error", "id"], "{:#?}", run.logs("probe"));
    assert_eq!(run.outcome("probe", "await-children pool 5000 []"), "children []");
    assert_eq!(run.outcome("probe", "children pool"), "children [t1:0]");
    assert_eq!(run.outcome("probe", "stop-child pool t2"), "error not-found");
}

#[test]
fn a_supervisor_without_running_children_stays_up_and_a_one_shot_job_runs_once() {
    // `empty` has no children and `batch` outlives its one temporary job: in OTP both stay up, so
    // neither is restarted and the run ends only when the significant driver is done.
    let text = format!(
        "[defaults]\n{ALL_GRANTS}\n\
         [[supervisor.children]]\nname = \"empty\"\n\
         [[supervisor.children]]\nname = \"batch\"\n\
         [[supervisor.children.children]]\nname = \"job\"\nmodule = \"misbehave\"\nrestart = \"temporary\"\n\
         config = {{ on_init = \"stop\" }}\n\
         [[supervisor.children]]\nname = \"driver\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n\
         config = {{ script = \"lookup empty; lookup batch; stop\" }}\n"
    );
    let run = Scenario::finite("", &text).run();
    run.assert_success();
    assert!(run.outcome("driver", "lookup empty").starts_with("id "), "supervisors are registered");
    assert!(run.outcome("driver", "lookup batch").starts_with("id "));
    assert_eq!(run.events("agent_started", Some("job")).len(), 1);
    assert!(run.events("supervisor_failed", None).is_empty(), "{:#?}", run.events);
    assert!(run.events("agent_restarted", None).is_empty(), "{:#?}", run.events);
    // The run ended by the root's auto shutdown: both supervisors were stopped, not exited.
    let exits: Vec<(&str, &str)> = run
        .events("supervisor_exited", None)
        .iter()
        .map(|e| (e["supervisor"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(exits, [("batch", "shutdown"), ("empty", "shutdown"), ("root", "shutdown")]);
    assert_eq!(run.events("run_finished", None)[0]["reason"], "finished");
}

#[test]
fn auto_shutdown_ends_a_supervisor_once_its_significant_children_are_done() {
    // `pair` ends when its significant worker exits normally (any_significant), stopping its
    // permanent helper; transient, it is not restarted.
    let text = format!(
        "[defaults]\n{ALL_GRANTS}\n\
         [[supervisor.children]]\nname = \"pair\"\nrestart = \"transient\"\nauto_shutdown = \"any_significant\"\n\
         [[supervisor.children.children]]\nname = \"worker\"\nmodule = \"misbehave\"\nrestart = \"transient\"\nsignificant = true\n\
         [[supervisor.children.children]]\nname = \"helper\"\nmodule = \"misbehave\"\n\
         [[supervisor.children]]\nname = \"driver\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n\
         config = {{ script = \"call worker stop 5000; await-gone pair 5000; lookup helper; stop\" }}\n"
    );
    let run = Scenario::finite("", &text).run();
    run.assert_success();
    assert_eq!(run.outcome("driver", "await-gone pair 5000"), "gone");
    assert_eq!(run.outcome("driver", "lookup helper"), "error not-found");
    assert_eq!(run.exit("helper")["reason"], "shutdown");
    assert_eq!(run.exit("worker")["reason"], "normal");
    assert!(run.events("agent_restarted", None).is_empty(), "{:#?}", run.events);
}

#[test]
fn significant_permanent_children_and_dynamic_auto_shutdown_are_refused() {
    for (manifest, expected) in [
        (
            "[[supervisor.children]]\nname = \"a\"\nmodule = \"echo\"\nsignificant = true\n",
            "`supervisor.children[0].significant`: a permanent child is always restarted",
        ),
        (
            "[defaults]\nsignificant = true\n[[agent]]\nname = \"a\"\nmodule = \"echo\"\n",
            "`defaults.significant`: a permanent child is always restarted",
        ),
        (
            "[[supervisor.children]]\nname = \"pool\"\ndynamic = true\nauto_shutdown = \"any_significant\"\n",
            "`supervisor.children[0].auto_shutdown`: a dynamic supervisor's children",
        ),
    ] {
        let scenario = Scenario::agents("", manifest);
        let run = common::run_agora(&["check", scenario.manifest.to_str().unwrap()]);
        run.assert_failure();
        assert!(run.stderr.contains(expected), "{manifest}: {}", run.stderr);
    }
}

#[test]
fn stopping_in_init_is_ignore_and_exiting_otherwise_fails_the_start() {
    // A permanent child that stops in init (or calls WASI exit(0)) is kept but never restarted.
    let text = format!(
        "[defaults]\n{ALL_GRANTS}\n\
         [[supervisor.children]]\nname = \"quiet\"\nmodule = \"misbehave\"\nconfig = {{ on_init = \"stop\" }}\n\
         [[supervisor.children]]\nname = \"done\"\nmodule = \"misbehave\"\nconfig = {{ on_init = \"exit:normal\" }}\n\
         [[supervisor.children]]\nname = \"gone\"\nmodule = \"misbehave\"\nconfig = {{ on_init = \"wasi-exit:0\" }}\n\
         [[supervisor.children]]\nname = \"driver\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n\
         config = {{ script = \"lookup quiet; stop\" }}\n"
    );
    let run = Scenario::finite("", &text).run();
    run.assert_success();
    for agent in ["quiet", "done", "gone"] {
        assert_eq!(run.events("agent_started", Some(agent)).len(), 1, "{agent}: {:#?}", run.events);
        assert_eq!(run.exit(agent)["reason"], "normal");
    }
    assert!(run.events("agent_restarted", None).is_empty(), "{:#?}", run.events);
    assert_eq!(run.outcome("driver", "lookup quiet"), "error not-found");
    // Any other reason is OTP's `{stop, Reason}`: the start fails, and with it the run.
    let text = format!(
        "[defaults]\n{ALL_GRANTS}\n\
         [[supervisor.children]]\nname = \"bad\"\nmodule = \"misbehave\"\nconfig = {{ on_init = \"exit:oops\" }}\n"
    );
    let run = Scenario::finite("", &text).run();
    run.assert_failure();
    assert!(run.stderr.contains("init asked to exit with reason \"oops\""), "{}", run.stderr);
    assert_eq!(run.events("agent_start_failed", Some("bad"))[0]["reason"], "init_failed");
}

#[test]
fn exit_reasons_reach_events_monitors_links_and_restart_decisions() {
    let text = format!(
        "[defaults]\n{ALL_GRANTS}\n[supervisor]\nintensity = 10\nauto_shutdown = \"all_significant\"\n\
         [[supervisor.children]]\nname = \"custom\"\nmodule = \"misbehave\"\nrestart = \"transient\"\n\
         [[supervisor.children]]\nname = \"down\"\nmodule = \"misbehave\"\nrestart = \"transient\"\n\
         [[supervisor.children]]\nname = \"clean\"\nmodule = \"misbehave\"\nrestart = \"transient\"\n\
         [[supervisor.children]]\nname = \"status\"\nmodule = \"misbehave\"\nrestart = \"transient\"\n\
         [[supervisor.children]]\nname = \"watcher\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n\
         config = {{ report_messages = \"true\", run_in_init = \"true\", script = \"monitor custom; monitor down; monitor clean; monitor status\" }}\n\
         [[supervisor.children]]\nname = \"driver\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n\
         config = {{ script = \"lookup custom; lookup status; call custom exit:panic 5000; call custom exit:{long} 5000; \
         call custom exit:out-of-stock 5000; await-new custom 5000; call down exit:shutdown 5000; \
         call clean wasi-exit:0 5000; call status wasi-exit:3 5000; await-new status 5000; \
         call watcher sync 5000; call watcher stop 5000; stop\" }}\n",
        long = "x".repeat(257),
    );
    let run = Scenario::agents("", &text).run();
    run.assert_success();
    // Reserved and over-long reasons are refused, and the agent goes on.
    for step in ["call custom exit:panic 5000".to_string(), format!("call custom exit:{} 5000", "x".repeat(257))] {
        let outcome = run.outcome("driver", &step);
        assert!(outcome.starts_with("reply error Error::Invalid("), "{step}: {outcome}");
    }
    let exit = |agent: &str| run.events("agent_exited", Some(agent))[0]["reason"].as_str().unwrap().to_string();
    assert_eq!(exit("custom"), "out-of-stock");
    assert_eq!(exit("down"), "shutdown");
    assert_eq!(exit("clean"), "normal");
    assert_eq!(exit("status"), "exit_status");
    // Custom reasons and non-zero statuses are abnormal: the transient agents came back; the
    // others did not.
    let restarted: Vec<&str> =
        run.events("agent_restarted", None).iter().map(|e| e["agent"].as_str().unwrap()).collect();
    assert_eq!(restarted, ["custom", "status"]);
    let ids: Vec<u64> =
        ["custom", "down", "clean", "status"].iter().map(|a| started_id(&run, "agent_started", "agent", a)).collect();
    let downs: Vec<String> =
        run.logs("watcher").into_iter().filter(|l| l.starts_with("probe got [agora:down]")).collect();
    assert_eq!(
        downs,
        [
            format!("probe got [agora:down] ref=1 id={} reason=out-of-stock", ids[0]),
            format!("probe got [agora:down] ref=2 id={} reason=shutdown", ids[1]),
            format!("probe got [agora:down] ref=3 id={} reason=normal", ids[2]),
            format!("probe got [agora:down] ref=4 id={} reason=exit_status", ids[3]),
        ]
    );
}

#[test]
fn links_pass_on_every_reason_but_normal_and_report_noproc() {
    let text = format!(
        "[defaults]\n{ALL_GRANTS}\nrestart = \"temporary\"\nsignificant = true\n\
         [[supervisor.children]]\nname = \"a\"\nmodule = \"misbehave\"\n\
         [[supervisor.children]]\nname = \"b\"\nmodule = \"misbehave\"\n\
         [[supervisor.children]]\nname = \"partner-a\"\nmodule = \"probe\"\n\
         config = {{ run_in_init = \"true\", script = \"link a\" }}\n\
         [[supervisor.children]]\nname = \"partner-b\"\nmodule = \"probe\"\n\
         config = {{ run_in_init = \"true\", script = \"link b\" }}\n\
         [[supervisor.children]]\nname = \"trapper\"\nmodule = \"probe\"\n\
         config = {{ report_messages = \"true\", run_in_init = \"true\", script = \"trap-exits on; link b; link #999999; link trapper\" }}\n\
         [[supervisor.children]]\nname = \"plain\"\nmodule = \"probe\"\n\
         config = {{ run_in_init = \"true\", script = \"link #999999; stop\" }}\n\
         [[supervisor.children]]\nname = \"driver\"\nmodule = \"probe\"\n\
         config = {{ script = \"call a exit:shutdown 5000; await-gone partner-a 5000; call b exit:out-of-stock 5000; \
         await-gone partner-b 5000; call trapper sync 5000; call trapper stop 5000; stop\" }}\n"
    );
    let run = Scenario::finite("", &text).run();
    run.assert_success();
    // `shutdown` is not `normal`: a non-trapping partner ends with it (as OTP's does).
    assert_eq!(run.outcome("driver", "await-gone partner-a 5000"), "gone");
    assert_eq!(run.exit("partner-a")["reason"], "shutdown");
    // A custom reason is passed on unchanged, and reaches a trapping partner as given.
    assert_eq!(run.exit("partner-b")["reason"], "out-of-stock");
    let b = started_id(&run, "agent_started", "agent", "b");
    let notices: Vec<String> =
        run.logs("trapper").into_iter().filter(|l| l.starts_with("probe got [agora:exit]")).collect();
    assert_eq!(
        notices,
        [
            "probe got [agora:exit] id=999999 reason=noproc".to_string(),
            format!("probe got [agora:exit] id={b} reason=out-of-stock")
        ]
    );
    // OTP: linking to a process that is gone fails with noproc unless the caller traps exits,
    // and linking to oneself does nothing.
    assert_eq!(run.outcome("trapper", "link #999999"), "ok");
    assert_eq!(run.outcome("trapper", "link trapper"), "ok");
    assert_eq!(run.outcome("plain", "link #999999"), "error not-found");
}

#[test]
fn a_supervisor_that_gives_up_exits_shutdown_and_its_restart_type_decides() {
    // `sup` is transient: after its intensity it exits `shutdown` (as OTP's supervisor does), so
    // the root does not restart it and the run goes on.
    let text = format!(
        "[defaults]\n{ALL_GRANTS}\n\
         [[supervisor.children]]\nname = \"sup\"\nrestart = \"transient\"\nintensity = 1\nperiod = \"30s\"\n\
         [[supervisor.children.children]]\nname = \"flaky\"\nmodule = \"misbehave\"\n\
         [[supervisor.children]]\nname = \"watcher\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n\
         config = {{ report_messages = \"true\", run_in_init = \"true\", script = \"monitor sup\" }}\n\
         [[supervisor.children]]\nname = \"driver\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n\
         config = {{ script = \"call flaky panic 5000; await flaky 5000; call flaky panic 5000; await-gone sup 5000; \
         call watcher sync 5000; call watcher stop 5000; stop\" }}\n"
    );
    let run = Scenario::finite("", &text).run();
    run.assert_success();
    let failed: Vec<&Value> =
        run.events("supervisor_failed", None).into_iter().filter(|e| e["supervisor"] == "sup").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["reason"], "max_restart_intensity");
    let sup = started_id(&run, "supervisor_started", "supervisor", "sup");
    let exited = run.events.iter().find(|e| e["event"] == "supervisor_exited" && e["supervisor"] == "sup").unwrap();
    assert_eq!(exited["reason"], "shutdown");
    assert!(run.events("agent_restarted", Some("sup")).is_empty());
    // Supervisors can be monitored like agents.
    assert!(
        run.logs("watcher").contains(&format!("probe got [agora:down] ref=1 id={sup} reason=shutdown")),
        "{:#?}",
        run.logs("watcher")
    );
}

#[test]
fn a_restart_that_cannot_start_is_reported_and_retried() {
    // While `x` waits out its backoff, the driver takes its name: the restart fails, leaves an
    // `agent_start_failed` event, and counts as a crash.
    let text = format!(
        "[defaults]\n{ALL_GRANTS}\n\
         [[supervisor.children]]\nname = \"sup\"\nintensity = 5\nbackoff = {{ initial = \"2s\", max = \"2s\" }}\n\
         [[supervisor.children.children]]\nname = \"x\"\nmodule = \"misbehave\"\n\
         [[supervisor.children]]\nname = \"driver\"\nmodule = \"probe\"\nrestart = \"temporary\"\n\
         config = {{ script = \"call x panic 5000; await-gone x 5000; register x\" }}\n"
    );
    let run = Scenario::agents("", &text).run_until(|e| e["event"] == "agent_start_failed" && e["agent"] == "x");
    assert_eq!(run.outcome("driver", "register x"), "ok");
    let failed = &run.events("agent_start_failed", Some("x"))[0];
    assert_eq!(failed["reason"], "start_failed");
    assert!(failed["detail"].as_str().unwrap().contains("registered by another agent"), "{failed}");
}

/// Run `text` with `AGORA_INJECT_FAULT` set, until the probe exits.
fn run_with_fault(fault: &str, text: &str) -> Run {
    Scenario::agents("", text).env("AGORA_INJECT_FAULT", fault).run_until_exit_of("probe")
}

#[test]
fn a_panic_in_an_agent_task_is_a_host_panic_crash_and_the_agent_is_restarted() {
    let text = format!(
        "[defaults]\n{GRANTS}\n\
         [[agent]]\nname = \"victim\"\nmodule = \"misbehave\"\n\
         [[agent]]\nname = \"probe\"\nmodule = \"probe\"\nrestart = \"temporary\"\n\
         config = {{ script = \"lookup victim; call victim tick 2000; await-new victim 10000; call victim tick 5000; stop\" }}\n"
    );
    let run = run_with_fault("agent-task:victim", &text);
    assert!(run.status.success());
    let exits = run.events("agent_exited", Some("victim"));
    assert_eq!(exits[0]["reason"], "host_panic", "{exits:#?}");
    assert!(exits[0]["detail"].as_str().unwrap_or_default().contains("injected fault"), "{exits:#?}");
    assert_eq!(run.events("agent_restarted", Some("victim")).len(), 1);
    assert_eq!(run.outcome("probe", "call victim tick 2000"), "error stopped", "the caller learns its callee died");
    assert_eq!(run.outcome("probe", "call victim tick 5000"), "reply 1", "a fresh instance serves");
}

#[test]
fn a_panic_in_a_supervisor_fails_it_with_host_panic_and_its_parent_restarts_it() {
    let text = format!(
        "[defaults]\n{GRANTS}\n\
         [[supervisor.children]]\nname = \"sup\"\nintensity = 5\n\
         [[supervisor.children.children]]\nname = \"worker\"\nmodule = \"misbehave\"\n\
         [[supervisor.children]]\nname = \"probe\"\nmodule = \"probe\"\nrestart = \"temporary\"\n\
         config = {{ script = \"lookup worker; call worker panic 2000; await-new worker 10000; call worker tick 5000; stop\" }}\n"
    );
    let run = run_with_fault("supervisor:sup", &text);
    assert!(run.status.success());
    let failed = run.events("supervisor_failed", None);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!((failed[0]["supervisor"].as_str(), failed[0]["reason"].as_str()), (Some("sup"), Some("host_panic")));
    assert!(!run.events("agent_started", Some("worker")).is_empty());
    assert_eq!(run.outcome("probe", "call worker tick 5000"), "reply 1", "the restarted subtree serves");
    assert!(run.events("supervisor_failed", None).iter().all(|e| e["supervisor"] != "root"), "the root held");
}
