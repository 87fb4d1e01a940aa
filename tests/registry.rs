//! The registry through the WIT contract: unique names, lookup, metadata, capabilities, and
//! entries that disappear with their agent.

use crate::common;

use common::Scenario;

#[test]
fn names_metadata_and_capabilities() {
    let run = Scenario::agents(
        "",
        "[defaults]\ngrants = [\"messaging\", \"registry\", \"logging\"]\nrestart = \"temporary\"\nsignificant = true\n\
         [[agent]]\nname = \"first\"\nmodule = \"probe\"\ncapabilities = [\"translate\"]\n\
         config = { run_in_init = \"true\", script = \"register leader; meta region eu; capability summarize\" }\n\
         [[agent]]\nname = \"second\"\nmodule = \"probe\"\ncapabilities = [\"translate\"]\n\
         config = { run_in_init = \"true\", script = \"register leader; register first; lookup leader; lookup first; get-meta leader region; get-meta leader missing; find translate; find summarize; find nothing; stop\" }\n",
    )
    .run_until_exit_of("second");
    assert_eq!(run.outcome("first", "register leader"), "ok");
    // A second claimant gets an error, also for another agent's instance name.
    assert_eq!(run.outcome("second", "register leader"), "error already-exists");
    assert_eq!(run.outcome("second", "register first"), "error already-exists");
    let first_id = run.events("agent_started", Some("first"))[0]["id"].as_u64().unwrap();
    assert_eq!(run.outcome("second", "lookup leader"), format!("id {first_id}"));
    assert_eq!(run.outcome("second", "lookup first"), format!("id {first_id}"));
    assert_eq!(run.outcome("second", "get-meta leader region"), "value eu");
    assert_eq!(run.outcome("second", "get-meta leader missing"), "value none");
    assert_eq!(run.outcome("second", "find translate"), "found [first,second]");
    assert_eq!(run.outcome("second", "find summarize"), "found [first]");
    assert_eq!(run.outcome("second", "find nothing"), "found []");
}

#[test]
fn entries_disappear_when_their_agent_exits() {
    // `gone` registers a name and a capability, then stops; `watcher` looks for them afterwards.
    let run = Scenario::finite(
        "",
        "[defaults]\ngrants = [\"messaging\", \"registry\", \"logging\"]\nrestart = \"temporary\"\nsignificant = true\n\
         [[agent]]\nname = \"gone\"\nmodule = \"probe\"\ncapabilities = [\"ephemeral\"]\n\
         config = { run_in_init = \"true\", script = \"register alias; meta k v; stop\" }\n\
         [[agent]]\nname = \"watcher\"\nmodule = \"probe\"\n\
         config = { script = \"lookup gone; lookup alias; find ephemeral; send gone hi; register alias; stop\" }\n",
    )
    .run();
    run.assert_success();
    assert_eq!(run.exit("gone")["reason"], "normal");
    let gone_exit = run.position(|e| e["event"] == "agent_exited" && e["agent"] == "gone").unwrap();
    let first_lookup = run.position(|e| e["message"] == "probe: lookup gone => error not-found").unwrap();
    assert!(gone_exit < first_lookup);
    assert_eq!(run.outcome("watcher", "lookup alias"), "error not-found");
    assert_eq!(run.outcome("watcher", "find ephemeral"), "found []");
    assert_eq!(run.outcome("watcher", "send gone hi"), "error not-found");
    // The name is free again.
    assert_eq!(run.outcome("watcher", "register alias"), "ok");
}

#[test]
fn an_instance_name_taken_at_runtime_fails_the_later_start() {
    let run = Scenario::finite(
        "",
        "[defaults]\ngrants = [\"messaging\", \"registry\", \"logging\"]\nrestart = \"temporary\"\nsignificant = true\n\
         [[agent]]\nname = \"squatter\"\nmodule = \"probe\"\nconfig = { run_in_init = \"true\", script = \"register late\" }\n\
         [[agent]]\nname = \"late\"\nmodule = \"echo\"\n",
    )
    .run();
    run.assert_failure();
    assert!(run.stderr.contains("agent \"late\": the name is already registered"), "{}", run.stderr);
    // The agent started before it is shut down, in reverse order, not abandoned.
    assert_eq!(run.exit("squatter")["reason"], "shutdown");
}
