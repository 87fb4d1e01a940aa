//! The command line: run, check, compile, bad input, the module cache and graceful shutdown.

use crate::common;

use common::{Scenario, agent, header, run_agora};

fn check(scenario: &Scenario) -> common::Run {
    run_agora(&["check", scenario.manifest.to_str().unwrap()])
}

#[test]
fn malformed_and_foreign_wasm_files_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("garbage.wasm", b"this is not wasm".to_vec(), "is not a WebAssembly file"),
        ("core.wasm", b"\0asm\x01\0\0\0".to_vec(), "is a core wasm module, not a component"),
        ("truncated.wasm", b"\0asm\x0d\0\x01\0\x01\x05".to_vec(), "is not a valid component"),
    ];
    for (file, bytes, expected) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        let scenario = Scenario::new(&format!(
            "[host]\ndata_dir = \"data\"\n[modules]\nbad = {:?}\n[[agent]]\nname = \"a\"\nmodule = \"bad\"\n",
            path.display().to_string()
        ));
        for run in [check(&scenario), scenario.run()] {
            run.assert_failure();
            assert!(run.stderr.contains(expected), "{file}: {}", run.stderr);
            assert!(run.stderr.contains(file), "{file}: {}", run.stderr);
        }
        let compiled = run_agora(&["compile", path.to_str().unwrap()]);
        compiled.assert_failure();
        assert!(compiled.stderr.contains(expected), "{}", compiled.stderr);
    }
}

#[test]
fn a_component_of_the_wrong_world_names_the_missing_export() {
    let command = agent("not_an_agent");
    let scenario = Scenario::new(&format!(
        "[host]\ndata_dir = \"data\"\n[modules]\ncmd = {:?}\n[[agent]]\nname = \"a\"\nmodule = \"cmd\"\n",
        command.display().to_string()
    ));
    let run = check(&scenario);
    run.assert_failure();
    assert!(run.stderr.contains("does not implement the world agora:agent/agent@0.3.2"), "{}", run.stderr);
    assert!(run.stderr.contains("missing export `init`"), "{}", run.stderr);
    assert!(run.stderr.contains("wasi:cli/run"), "{}", run.stderr);
    // `agora compile` checks the world as a load does, and caches nothing it refused: the second
    // attempt is refused too, not a cache hit.
    for attempt in 0..2 {
        let compiled =
            run_agora(&["compile", "--manifest", scenario.manifest.to_str().unwrap(), command.to_str().unwrap()]);
        compiled.assert_failure();
        assert!(compiled.stderr.contains("missing export `init`"), "attempt {attempt}: {}", compiled.stderr);
    }
    let cache = scenario.dir.path().join("data/cache");
    let cached = std::fs::read_dir(&cache).map(|entries| entries.count()).unwrap_or(0);
    assert_eq!(cached, 0, "nothing refused is cached in {}", cache.display());
}

/// An agent built for the 0.2 world (notices as text) is refused at load, naming both worlds.
/// The fixture is this repository's echo agent built at 0.2.1 (commit a74dae6).
#[test]
fn an_agent_of_the_old_world_is_refused_with_both_versions() {
    let old = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/echo-agora-agent-0.2.1.wasm");
    let scenario = Scenario::new(&format!(
        "[host]\ndata_dir = \"data\"\n[modules]\nold = {:?}\n[[agent]]\nname = \"a\"\nmodule = \"old\"\n",
        old.display().to_string()
    ));
    for run in [check(&scenario), scenario.run()] {
        run.assert_failure();
        assert!(run.stderr.contains("does not implement the world agora:agent/agent@0.3.2"), "{}", run.stderr);
        assert!(run.stderr.contains("built for agora:agent@0.2.1"), "{}", run.stderr);
    }
}

/// An agent built for an earlier 0.3.x world runs on this host, its `state` export found (wasmtime
/// resolves names semver-compatibly): the fixture is this repository's counter built at 0.3.0
/// (commit 57d21d6), run durable, so that the host must take its state through that export.
#[test]
fn an_agent_of_an_earlier_0_3_world_runs_and_keeps_its_state_interface() {
    let old = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/counter-agora-agent-0.3.0.wasm");
    let manifest = format!(
        "{}old = {:?}\n[[agent]]\nname = \"c\"\nmodule = \"old\"\ndurable = true\n\
         [[agent]]\nname = \"probe\"\nmodule = \"probe\"\nrestart = \"temporary\"\n\
         grants = [\"messaging\", \"logging\", \"registry\"]\nconfig = {{ script = \"call c inc 5000; call c inc 5000; stop\" }}\n",
        header(""),
        old.display().to_string()
    );
    let scenario = Scenario::new(&manifest);
    check(&scenario).assert_success();
    let run = scenario.run_until_exit_of("probe");
    assert_eq!(run.outcomes("probe", "call c inc 5000"), ["reply 1", "reply 2"]);
    // Written at its graceful shutdown, through the 0.3.0 `snapshot`.
    let again = scenario.run_until(|e| e["event"] == "agent_restored" && e["agent"] == "c");
    assert!(again.events("agent_restored", Some("c")).len() == 1, "{:#?}", again.events);
}

#[test]
fn bad_manifests_name_file_line_and_key() {
    let agents = "[[agent]]\nname = \"a\"\nmodule = \"echo\"\n";
    let header = header("");
    let header_lines = header.lines().count();
    let cases = [
        // (manifest, expected line, expected text)
        (
            format!("{header}{agents}memroy = \"1MiB\"\n"),
            header_lines + 4,
            "unknown key `memroy`: did you mean `memory`?",
        ),
        (format!("{header}{agents}memory = \"12XB\"\n"), header_lines + 4, "`memory`: invalid size \"12XB\""),
        (format!("{header}{agents}budget = \"soon\"\n"), header_lines + 4, "`budget`: invalid duration \"soon\""),
        (format!("{header}{agents}mailbox = 0\n"), header_lines + 4, "`agent[0].mailbox`: must be at least 1"),
        (format!("{header}{agents}{agents}"), header_lines + 5, "`agent[1].name`: duplicate name \"a\""),
        (format!("{header}[[agent]]\nname = \"a\"\nmodule = \"nope\"\n"), header_lines + 3, "unknown module \"nope\""),
        (format!("{header}gone = \"missing.wasm\"\n"), header_lines + 1, "`modules.gone`: module file not found"),
        (format!("{header}{agents}grants = [\"net\"]\n"), header_lines + 4, "unknown grant \"net\""),
        ("[host]\nmax_agents = \"many\"\n".to_string(), 2, "`max_agents`: invalid type"),
        ("[host]\nspawn_paths = [\"nowhere\"]\n".to_string(), 2, "`host.spawn_paths`: "),
        ("[host]\ninterpreter_agents = 0\n".to_string(), 2, "`host.interpreter_agents`: 0 is outside 1..=100000"),
        (
            "[host]\ntick = \"5ms\"\nmax_agents = 4000000000\n".to_string(),
            3,
            "`host.max_agents`: 4000000000 is outside",
        ),
        ("# a comment\n[host]\nmax_message = \"0B\"\n".to_string(), 3, "`host.max_message`: must be at least 1B"),
        ("[host]\ndata_dir = \"manifest.toml/cache\"\n".to_string(), 2, "which is a file"),
        (
            format!("{header}zero = \"/dev/zero\"\n"),
            header_lines + 1,
            "`modules.zero`: module file is not a regular file",
        ),
        // Absurd durations and sizes are refused where they are written, not found at run time.
        (
            format!("{header}[supervisor]\nbackoff = {{ initial = \"1s\", max = \"500000000years\" }}\n{agents}"),
            header_lines + 2,
            "above the longest any setting takes",
        ),
        (format!("{header}{agents}shutdown = \"9999999days\"\n"), header_lines + 4, "`shutdown`: invalid shutdown"),
        (format!("{header}{agents}memory = \"2000GiB\"\n"), header_lines + 4, "above the most any setting takes"),
    ];
    for (manifest, line, expected) in cases {
        let scenario = Scenario::new(&manifest);
        for run in [check(&scenario), scenario.run()] {
            run.assert_failure();
            let location = format!("{}:{line}:", scenario.manifest.display());
            assert!(run.stderr.contains(&location), "expected {location} in: {}", run.stderr);
            assert!(run.stderr.contains(expected), "expected {expected:?} in: {}", run.stderr);
        }
    }
    let missing = run_agora(&["check", "/nonexistent/manifest.toml"]);
    missing.assert_failure();
    assert!(missing.stderr.contains("cannot read the manifest"), "{}", missing.stderr);
}

#[test]
fn a_second_start_reuses_the_compiled_module() {
    let scenario = Scenario::agents("", "");
    let loads = |run: &common::Run| -> Vec<String> {
        run.events("module_loaded", None).iter().map(|e| e["cache"].as_str().unwrap().to_string()).collect()
    };
    let manifest = scenario.manifest.to_str().unwrap();
    let first = run_agora(&["check", "--log-format", "json", manifest]);
    first.assert_success();
    assert_eq!(loads(&first), vec!["miss"; 5]);
    let second = run_agora(&["check", "--log-format", "json", manifest]);
    second.assert_success();
    assert_eq!(loads(&second), vec!["hit"; 5]);

    // `agora compile` fills the same cache that `run` reads.
    let fresh = Scenario::agents("", "");
    let echo = agent("echo");
    let compiled = run_agora(&["compile", "--manifest", fresh.manifest.to_str().unwrap(), echo.to_str().unwrap()]);
    compiled.assert_success();
    assert!(compiled.stdout.contains("(miss)"), "{}", compiled.stdout);
    let run = run_agora(&["check", "--log-format", "json", fresh.manifest.to_str().unwrap()]);
    let echo_load = run.events("module_loaded", None).into_iter().find(|e| e["module"] == "echo").unwrap().clone();
    assert_eq!(echo_load["cache"], "hit");
}

#[test]
fn sigterm_and_ctrl_c_stop_agents_gracefully_in_reverse_order() {
    for signal in ["-TERM", "-INT"] {
        let scenario = Scenario::agents(
            "",
            "[defaults]\ngrants = [\"logging\"]\n\
             [[agent]]\nname = \"first\"\nmodule = \"echo\"\n\
             [[agent]]\nname = \"second\"\nmodule = \"counter\"\n",
        );
        let mut child = scenario.spawn();
        let mut lines = common::lines_of(&mut child);
        let mut events = Vec::new();
        common::wait_for_event(&mut lines, &mut events, |e| e["event"] == "agent_started" && e["agent"] == "second");
        let status = std::process::Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
        assert!(status.success());
        events.extend(lines.filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok()));
        assert!(child.wait().unwrap().success(), "{signal}");
        let exits: Vec<(&str, &str)> = events
            .iter()
            .filter(|e| e["event"] == "agent_exited")
            .map(|e| (e["agent"].as_str().unwrap(), e["reason"].as_str().unwrap()))
            .collect();
        assert_eq!(exits, vec![("second", "shutdown"), ("first", "shutdown")], "{signal}");
        // `terminate` ran in each agent before it exited.
        let said = |agent: &str, text: &str| events.iter().any(|e| e["agent"] == agent && e["message"] == text);
        assert!(said("first", "echo terminating (shutdown) after 0 messages"), "{events:#?}");
        assert!(said("second", "counter terminating (shutdown) at 0"), "{events:#?}");
        let finished = events.iter().find(|e| e["event"] == "run_finished").unwrap();
        assert_eq!(finished["reason"], "interrupted");
    }
}

#[test]
fn json_log_lines_carry_event_agent_and_reason() {
    let run = Scenario::finite(
        "",
        // Not in `init`: an agent that stops there is ignored (OTP), and its exit ends nothing.
        "[[agent]]\nname = \"quick\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n\
         grants = [\"messaging\"]\nconfig = { script = \"stop\" }\n",
    )
    .run();
    run.assert_success();
    assert!(!run.stdout.is_empty());
    for line in run.stdout.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(event["event"].is_string(), "{line}");
    }
    let exit = run.exit("quick");
    assert_eq!((exit["event"].as_str(), exit["reason"].as_str()), (Some("agent_exited"), Some("normal")));
}

#[test]
fn the_demo_manifest_runs_to_completion() {
    agent("probe");
    let demo = common::workspace().join("examples/demo.toml");
    let run = run_agora(&["run", "--log-format", "json", demo.to_str().unwrap()]);
    run.assert_success();
    assert_eq!(run.events("run_finished", None)[0]["reason"], "finished");
    assert_eq!(run.events("agent_restarted", Some("crasher"))[0]["reason"], "memory_cap");
    assert_eq!(run.logs("ping"), vec!["ping-pong finished 10000 round trips"]);
    // The driver narrates: only its `say` lines, each with the outcome of the step before.
    let expected = [
        "1. I read the live config (greeting: value welcome to the Agora demo)",
        "2. I ask crasher to allocate past its 1 MiB memory cap, and my call ends with 'error stopped' ...",
        "   ... and its supervisor has restarted it under the same name (id ",
        "   The new crasher answers: reply 1",
        "3. I send counter three increments, then call it: reply 3",
        "4. I publish on topic news: delivered 1 full 0",
        "   The registry finds agents by capability: found [echo]",
        "   and echo answers my call: reply ping",
        "5. A throwaway instance of echo (1 MiB, 500 ms at most) runs one job: output an-isolated-job",
        "6. I count a metric and append an event to the durable store: seq ",
        "   The store has kept crasher's crash, reason memory_cap",
        "7. I stop the others and then myself. The ping-pong game ends on its own, and the run with it.",
    ];
    run.assert_logs_start_with("driver", &expected);
}

#[test]
fn the_coordination_example_runs() {
    agent("probe");
    let example = common::workspace().join("examples/coordination.toml");
    let run = common::Scenario { dir: tempfile::tempdir().unwrap(), manifest: example, env: Vec::new() }
        .run_until_exit_of("coordinator");
    for worker in 1..=4 {
        assert_eq!(run.logs(&format!("worker-{worker}")), ["worker finished 250 locked increments"]);
    }
    assert_eq!(run.outcome("coordinator", "call ledger get 5000"), "reply 1000", "4 x 250 increments, none lost");
    let leaders: Vec<String> = run
        .logs("coordinator")
        .iter()
        .filter_map(|l| l.strip_prefix("probe: leader replicas => ").map(str::to_string))
        .collect();
    assert!(leaders[0].starts_with("term 1 "), "{leaders:?}");
    assert!(leaders[1].starts_with("term 2 "), "the crashed leader was replaced: {leaders:?}");
    assert_eq!(run.exit("doomed-leader")["reason"], "panic");
    assert!(
        run.logs("replica-a").iter().any(|l| l.starts_with("I lead replicas (term 2)")),
        "{:?}",
        run.logs("replica-a")
    );
    let yes = run.outcome("coordinator", "propose replicas all 5000 deploy-v2");
    assert_eq!(yes, "Verdict::Committed voters 2 accepted 2 rejected 0 missing 0");
    let no = run.outcome("coordinator", "propose replicas all 5000 deploy-on-friday");
    assert!(no.starts_with("Verdict::Rejected voters 2 "), "{no}");
    let recorded = run.outcome("coordinator", "event-query kind=consensus_round newest=true limit=2");
    assert!(recorded.contains("deploy-on-friday") && recorded.contains("deploy-v2"), "{recorded}");
}
