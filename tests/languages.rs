//! Agents in Python, JavaScript, C and Rust in one manifest (examples/languages.toml): the same
//! `polyglot` agent in each language (sample-agents/<language>/polyglot) answers calls, calls
//! the next one in a ring, reports the host's typed errors, reads the host's typed notices, uses
//! the registry, config and telemetry, and crashes and blows its memory cap on request, to be restarted by its supervisor.

use crate::common;

use std::path::PathBuf;

use common::Scenario;

/// A component built by `make guests` (each language's own toolchain).
fn guest(file: &str) -> PathBuf {
    let path = common::workspace().join("target/guests").join(file);
    assert!(path.is_file(), "{} is missing: build it with `make guests`", path.display());
    path
}

/// (agent name, language as the agent says it, component).
fn polyglots() -> [(&'static str, &'static str, PathBuf); 4] {
    [
        ("py", "python", guest("polyglot_py.wasm")),
        ("js", "javascript", guest("polyglot_js.wasm")),
        ("c", "c", guest("polyglot_c.wasm")),
        ("rs", "rust", common::agent("polyglot")),
    ]
}

/// examples/languages.toml: its driver runs every step below against each agent, in turn.
#[test]
fn agents_in_four_languages_talk_fail_and_recover_alike() {
    let agents = polyglots();
    let example = common::workspace().join("examples/languages.toml");
    let run =
        Scenario { dir: tempfile::tempdir().unwrap(), manifest: example, env: Vec::new() }.run_until_exit_of("driver");
    let driver = run.logs("driver");
    let outcomes = |step: &str| -> Vec<String> {
        let prefix = format!("probe: {step} => ");
        driver.iter().filter_map(|line| line.strip_prefix(&prefix).map(str::to_string)).collect()
    };
    for (at, (name, language, _)) in agents.iter().enumerate() {
        let (next, next_language) = (agents[(at + 1) % agents.len()].0, agents[(at + 1) % agents.len()].1);
        let call = |step: &str| format!("call {name} {step} 10000");
        assert_eq!(outcomes(&call("ping"))[0], format!("reply pong from {language}"));
        assert_eq!(outcomes(&call("missing")), ["reply error not-found"], "{language}: a typed host error");
        assert_eq!(outcomes(&call("monitor:999999")), ["reply monitoring 999999"], "{language}");
        assert_eq!(
            outcomes(&call("notices")),
            [format!("reply {language} saw 999999 down: noproc")],
            "{language}: the host's notice arrives typed"
        );
        assert_eq!(outcomes(&call("count")), ["reply 1", "reply 2"], "{language}");
        assert_eq!(outcomes(&call("config:motto")), ["reply one runtime, four languages"], "{language}");
        assert_eq!(
            outcomes(&call(&format!("ask:{next}:ping"))),
            [format!("reply {language} heard: pong from {next_language}")],
            "{language} calls {next_language}"
        );
        assert!(outcomes(&call("bogus"))[0].starts_with("error failed("), "{language}: a rejected message");
        assert_eq!(outcomes(&call("crash")), ["error stopped"], "{language}");
        assert_eq!(
            outcomes(&format!("until 20000 call {name} count 10000")),
            ["reply 1", "reply 1"],
            "{language}: a new instance, after the crash and after the exit"
        );
        assert_eq!(outcomes(&call("exit:panic")), ["reply error invalid"], "{language}: a reserved reason");
        assert_eq!(outcomes(&call("exit:out-of-stock")), ["reply exiting out-of-stock"], "{language}");
        assert_eq!(outcomes(&call("alloc:200000000")), ["error stopped"], "{language}");
        assert_eq!(outcomes(&format!("until 20000 call {name} ping 10000")), [format!("reply pong from {language}")]);

        let exits: Vec<&str> =
            run.events("agent_exited", Some(name)).iter().filter_map(|e| e["reason"].as_str()).collect();
        // Each language's SDK turns an uncaught error into its own fault: Python and JavaScript
        // exceptions become fatal handler errors (with the exception's text), a C `abort` traps,
        // a Rust panic is recognised by its message.
        let crash = match *language {
            "python" | "javascript" => "handler_fatal",
            "c" => "trap",
            _ => "panic",
        };
        assert_eq!(exits.first(), Some(&crash), "{language}: the crash is a fault: {exits:?}");
        assert_eq!(exits.get(1), Some(&"memory_cap"), "{language}: the cap stops the allocation: {exits:?}");
        assert_eq!(exits.get(2), Some(&"out-of-stock"), "{language}: its own exit reason: {exits:?}");
        assert_eq!(run.events("agent_restarted", Some(name)).len(), 3, "{language}: restarted thrice");
    }
    // Each module is compiled for the engine of its class, and its agents live in that pool.
    for (module, class) in [("py", "interpreter"), ("js", "interpreter"), ("c", "compact"), ("rs", "compact")] {
        let loaded = run.events.iter().find(|e| e["event"] == "module_loaded" && e["module"] == module);
        assert_eq!(loaded.map(|e| e["class"].clone()), Some(class.into()), "{module}");
    }
    let found = &outcomes("find polyglot")[0];
    let mut names: Vec<&str> =
        found.strip_prefix("found [").and_then(|f| f.strip_suffix(']')).unwrap_or_default().split(',').collect();
    names.sort_unstable();
    assert_eq!(names, ["c", "js", "py", "rs"], "all four registered the capability, by name: {found}");
}

/// The refusals an interpreter agent can meet, each with its reason: a memory cap below the
/// interpreter's starting memory, and a full interpreter pool. The first run compiles the
/// component into an empty cache, and says so while it does.
#[test]
fn interpreter_agents_that_do_not_fit_are_refused_with_the_reason() {
    let python = guest("polyglot_py.wasm").display().to_string();
    let agent = |name: &str, memory: &str| {
        format!(
            "[[agent]]\nname = \"{name}\"\nmodule = \"py\"\nmemory = \"{memory}\"\ngrants = [\"registry\", \"logging\"]\n"
        )
    };
    let header = |host: &str| format!("[host]\ndata_dir = \"data\"\n{host}\n[modules]\npy = {python:?}\n");
    let scenario = Scenario::new(&format!("{}{}", header(""), agent("small", "8MiB")));
    let run = scenario.run();
    run.assert_failure();
    let compiling = run.events("module_compiling", None);
    assert!(
        compiling.first().is_some_and(|e| e["path"].as_str().unwrap_or_default().ends_with("polyglot_py.wasm")),
        "a first compile of a large component is announced: {compiling:?}"
    );
    let detail = |run: &common::Run, name: &str| {
        let failed = run.events("agent_start_failed", Some(name));
        failed.first().and_then(|e| e["detail"].as_str()).unwrap_or_default().to_string()
    };
    let small = detail(&run, "small");
    assert!(small.contains("MiB of memory at start, above its memory cap of 8.0 MiB"), "{small}");

    // The same data directory: the component now comes from the cache.
    let one_slot =
        format!("{}{}{}", header("interpreter_agents = 1"), agent("first", "64MiB"), agent("second", "64MiB"));
    std::fs::write(&scenario.manifest, one_slot).unwrap();
    let run = scenario.run();
    run.assert_failure();
    assert!(run.events("module_compiling", None).is_empty(), "loaded from the cache");
    let second = detail(&run, "second");
    assert!(
        second.contains("the pool of interpreter components is full")
            && second.contains("raise host.interpreter_agents"),
        "{second}: {}",
        run.stderr
    );
}
