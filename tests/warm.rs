//! Warm instances (`warm = N` on a module, `[host] warm`): starts and restarts take an instance
//! instantiated ahead, each agent still gets a fresh one, warm instances give their pool slots
//! to agents, and a module that runs code at instantiation is refused.

use crate::common;

use common::{Scenario, agent};

/// The shared header, with `misbehave` as a module table of its own kept `warm`.
fn warm_header(host_extra: &str, warm: u32) -> String {
    let header = common::header(host_extra);
    let misbehave = format!("misbehave = {:?}\n", agent("misbehave").display().to_string());
    assert!(header.contains(&misbehave));
    let table = format!("[modules.misbehave]\npath = {:?}\nwarm = {warm}\n", agent("misbehave").display().to_string());
    // The table must come after every `name = "path"` entry of `[modules]`.
    format!("{}\n{table}", header.replace(&misbehave, ""))
}

const GRANTS: &str = "\"messaging\", \"logging\", \"registry\", \"supervision\"";

#[test]
fn starts_spawns_and_restarts_take_warm_instances_and_each_agent_starts_fresh() {
    // Four warm instances are filled before the tree starts, so the three starts below (the
    // crasher's, the spawn, the restart) all find one whatever the refills do meanwhile.
    let manifest = format!(
        "{}\n[[agent]]\nname = \"crasher\"\nmodule = \"misbehave\"\n\
         [[agent]]\nname = \"jobs\"\ndynamic = true\n\
         [[agent]]\nname = \"probe\"\nmodule = \"probe\"\nrestart = \"temporary\"\ngrants = [{GRANTS}]\n\
         config = {{ script = \"call crasher tick 5000; call crasher tick 5000; lookup crasher; send crasher panic; \
         await-new crasher 10000; call crasher tick 5000; spawn jobs job misbehave temporary; call job tick 5000; stop\" }}\n",
        warm_header("", 4)
    )
    .replace("[[agent]]", "[[supervisor.children]]");
    let run = Scenario::new(&manifest).run_until_exit_of("probe");
    assert_eq!(run.exit("probe")["reason"], "normal", "{:#?}", run.logs("probe"));
    assert_eq!(
        run.outcomes("probe", "call crasher tick 5000"),
        ["reply 1", "reply 2", "reply 1"],
        "the restarted crasher starts from nothing: its warm instance never held the old one's state"
    );
    assert_eq!(run.outcome("probe", "call job tick 5000"), "reply 1");
    let started = |agent: &str| -> Vec<(u64, bool)> {
        run.events("agent_started", Some(agent))
            .iter()
            .map(|e| (e["restarts"].as_u64().unwrap(), e["warm"].as_bool().unwrap()))
            .collect()
    };
    assert_eq!(started("crasher"), [(0, true), (1, true)], "its start and its restart were warm");
    assert_eq!(started("job"), [(0, true)], "the spawn was warm");
    assert_eq!(started("probe"), [(0, false)], "a module without `warm` starts cold");
}

#[test]
fn warm_instances_give_their_slots_to_agents() {
    // Four slots, two held by warm instances of `misbehave`: four agents of another module (echo, which cannot hibernate to make room)
    // still start, each of the last two in the slot of a warm instance dropped for it.
    let agents: String =
        (0..4).map(|i| format!("[[agent]]\nname = \"c{i}\"\nmodule = \"echo\"\nrestart = \"temporary\"\n")).collect();
    let manifest = format!("{}\n{agents}", warm_header("max_agents = 4", 2));
    let scenario = Scenario::new(&manifest);
    let run = scenario.run_until(|e| e["event"] == "supervisor_started" || e["event"] == "agent_start_failed");
    assert!(run.events("agent_start_failed", None).is_empty(), "{:#?}", run.events);
    assert_eq!(run.events("agent_started", None).len(), 4);
    // Without them, the same four agents do not fit (the test shows the slots were the warm ones').
    let crowded =
        format!("{}\n{agents}[[agent]]\nname = \"c4\"\nmodule = \"echo\"\n", warm_header("max_agents = 4", 2));
    let run = Scenario::new(&crowded).run_until(|e| e["event"] == "agent_start_failed");
    let failed = run.events("agent_start_failed", Some("c4"));
    assert!(failed[0]["detail"].as_str().unwrap().contains("host.max_agents"), "{failed:#?}");
}

#[test]
fn bad_warm_settings_are_refused_with_the_key() {
    let agent = "[[agent]]\nname = \"a\"\nmodule = \"misbehave\"\n";
    let check = |manifest: String| common::run_agora(&["check", Scenario::new(&manifest).manifest.to_str().unwrap()]);
    let manifest = format!("{}{agent}", warm_header("", 0)).replace("warm = 0", "warm = \"lots\"");
    let run = check(manifest);
    run.assert_failure();
    assert!(run.stderr.contains("`modules.misbehave`") && run.stderr.contains("`warm` is how many"), "{}", run.stderr);

    let run = check(format!("{}{agent}", warm_header("max_agents = 10", 6)));
    run.assert_failure();
    assert!(
        run.stderr.contains("more than half of the 10 slots") && run.stderr.contains("host.max_agents"),
        "{}",
        run.stderr
    );

    let run = check(format!("{}{agent}", warm_header("warm = 5000", 0)));
    run.assert_failure();
    assert!(run.stderr.contains("`host.warm`") || run.stderr.contains("warm"), "{}", run.stderr);
}

#[test]
fn a_module_that_runs_code_when_instantiated_cannot_be_warm() {
    // A C agent's component starts its libc (`_initialize`) from a start function.
    let c = common::workspace().join("target/guests/polyglot_c.wasm");
    assert!(c.is_file(), "{} is missing: build it with `make guests`", c.display());
    let manifest = format!(
        "[host]\ndata_dir = \"data\"\n[modules.c]\npath = {:?}\nwarm = 1\n[[agent]]\nname = \"c\"\nmodule = \"c\"\n",
        c.display().to_string()
    );
    let run = common::run_agora(&["check", Scenario::new(&manifest).manifest.to_str().unwrap()]);
    run.assert_failure();
    assert!(
        run.stderr.contains("`modules.c.warm`") && run.stderr.contains("runs guest code when it is instantiated"),
        "{}",
        run.stderr
    );
    // Host-wide, such a module is left cold (and said so) rather than refused.
    let manifest =
        manifest.replace("warm = 1\n", "").replace("data_dir = \"data\"\n", "data_dir = \"data\"\nwarm = 1\n");
    let run = common::run_agora(&["check", Scenario::new(&manifest).manifest.to_str().unwrap()]);
    run.assert_success();
}
