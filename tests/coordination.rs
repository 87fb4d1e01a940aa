//! Coordination through the WIT contract: locks under real concurrency, holder crashes and
//! lease expiry.

use crate::common;

use common::Scenario;

fn probe(name: &str, grants: &str, script: &str) -> String {
    format!(
        "[[agent]]\nname = \"{name}\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\nbudget = \"1h\"\n\
         grants = [{grants}]\nconfig = {{ script = \"{script}\" }}\n"
    )
}

const GRANTS: &str = "\"messaging\", \"logging\", \"registry\", \"coordination\"";

#[test]
fn a_lock_keeps_concurrent_read_modify_writes_exact() {
    let bank = "[[agent]]\nname = \"bank\"\nmodule = \"counter\"\nrestart = \"temporary\"\nsignificant = true\n";
    let workers: String = (0..4)
        .map(|i| probe(&format!("worker-{i}"), GRANTS, "locked-inc bank bank-lock 50; call bank get 10000; stop"))
        .collect();
    let run = Scenario::agents("", &format!("{bank}{workers}"))
        .run_until_exit_of_all(&["worker-0", "worker-1", "worker-2", "worker-3"]);
    let mut finals = Vec::new();
    for i in 0..4 {
        let worker = format!("worker-{i}");
        assert_eq!(run.outcome(&worker, "locked-inc bank bank-lock 50"), "done tokens-increasing true");
        let read = run.outcome(&worker, "call bank get 10000");
        finals.push(read.strip_prefix("reply ").unwrap().parse::<u64>().unwrap());
    }
    assert_eq!(finals.iter().max(), Some(&200), "200 increments under the lock, none lost: {finals:?}");
}

#[test]
fn locks_are_released_when_their_holder_stops_or_is_killed() {
    // `quitter` stops while holding; `stuck` (temporary: not started again) is killed
    // mid-callback when its permanent one_for_all sibling crashes and its 100 ms shutdown runs out. Each waiter gets its lock long before
    // the 60 s lease ends.
    let quitter =
        probe("quitter", GRANTS, "lock-try q exclusive 60000; register holding-q; await waiting-q 10000; stop");
    let after_stop =
        probe("after-stop", GRANTS, "await holding-q 10000; register waiting-q; lock q exclusive 60000 30000; stop");
    let group = format!(
        "[[supervisor.children]]\nname = \"pair\"\nstrategy = \"one_for_all\"\nrestart = \"temporary\"\nintensity = 5\n\
         [[supervisor.children.children]]\nname = \"stuck\"\nmodule = \"probe\"\nrestart = \"temporary\"\nshutdown = \"100ms\"\n\
         budget = \"1h\"\ngrants = [{GRANTS}]\nconfig = {{ script = \"lock-try k exclusive 60000; register holding-k; sleep 600000\" }}\n\
         [[supervisor.children.children]]\nname = \"sibling\"\nmodule = \"misbehave\"\n"
    );
    let after_kill =
        probe("after-kill", GRANTS, "await holding-k 10000; send sibling panic; lock k exclusive 60000 30000; stop")
            .replace("[[agent]]", "[[supervisor.children]]");
    let children = format!("{quitter}{after_stop}").replace("[[agent]]", "[[supervisor.children]]");
    let run = Scenario::agents("", &format!("{children}{after_kill}{group}")).run_until_exit_of_all(&[
        "quitter",
        "after-stop",
        "after-kill",
    ]);
    assert_eq!(run.exit("quitter")["reason"], "normal");
    assert!(run.outcome("after-stop", "lock q exclusive 60000 30000").starts_with("token "));
    assert_eq!(run.exit("stuck")["reason"], "killed");
    assert!(run.outcome("after-kill", "lock k exclusive 60000 30000").starts_with("token "));
}

#[test]
fn readers_share_writers_exclude_and_leases_and_crashes_release() {
    // Two agents each hold `rw` shared at once, and a third's exclusive try meanwhile is busy;
    // each waits on the others' registered names, not on time.
    let sharer = probe(
        "sharer",
        GRANTS,
        "lock-try rw shared 60000; register sharing-1; await sharing-2 10000; await tried 10000; \
         lock-try other exclusive 60000; lock-release other; lock-release other; lock-renew other 1000; stop",
    );
    let second_sharer = probe(
        "sharer-2",
        GRANTS,
        "await sharing-1 10000; lock-try rw shared 60000; register sharing-2; await tried 10000; \
         await-gone sharer 30000; stop",
    );
    // Each awaited name stays registered until its awaiters are done with it (`await-gone`).
    let writer = probe(
        "writer",
        GRANTS,
        "await sharing-2 10000; lock-try rw exclusive 60000; register tried; await-gone sharer 30000; \
         await-gone sharer-2 30000; stop",
    );
    // Holds a lock, then crashes; the waiter (waiting by then, or trying just after) gets it long
    // before the lease (60 s) ends: the heir's own wait (30 s) is shorter than the lease.
    let crasher =
        probe("crasher", GRANTS, "lock-try crashy exclusive 60000; register holding; await heir-ready 30000; panic");
    let heir =
        probe("heir", GRANTS, "await holding 30000; register heir-ready; lock crashy exclusive 60000 30000; stop");
    // Holds a lock with a short lease and stays alive; the waiter gets it when the lease ends.
    let lapser = probe(
        "lapser",
        GRANTS,
        "lock-try leased exclusive 300; register leasing; await took-leased 30000; lock-renew leased 1000; \
         lock-release leased; stop",
    );
    let taker = probe(
        "taker",
        GRANTS,
        "await leasing 10000; lock leased exclusive 60000 30000; register took-leased; await-gone lapser 30000; \
         lock-release leased; stop",
    );
    let patient = probe("patient", GRANTS, "await blocking 10000; lock crashy2 exclusive 1000 200; stop");
    let outsider = probe("outsider", "\"messaging\", \"logging\"", "lock-try rw shared 1000; stop");
    let blocker =
        probe("blocker", GRANTS, "lock-try crashy2 exclusive 60000; register blocking; await-gone patient 30000; stop");
    let scenario = Scenario::agents(
        "",
        &format!("{sharer}{second_sharer}{writer}{crasher}{heir}{lapser}{taker}{blocker}{patient}{outsider}"),
    );
    let run = scenario.run_until_exit_of_all(&[
        "sharer", "sharer-2", "writer", "heir", "taker", "patient", "outsider", "lapser", "blocker",
    ]);

    let missed: Vec<&str> = run
        .events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.starts_with("probe: await") && m.contains("=> error"))
        .collect();
    assert!(missed.is_empty(), "every wait saw what it waited for: {missed:?}");
    let first = token(&run.outcome("sharer", "lock-try rw shared 60000"));
    let second = token(&run.outcome("sharer-2", "lock-try rw shared 60000"));
    assert!(second > first, "two readers hold it at once, with increasing tokens");
    assert_eq!(run.outcome("writer", "lock-try rw exclusive 60000"), "error LockError::Busy");
    assert_eq!(run.outcome("outsider", "lock-try rw shared 1000"), "error LockError::Denied");
    let logs = run.logs("sharer");
    let releases: Vec<&String> = logs.iter().filter(|l| l.starts_with("probe: lock-release other")).collect();
    assert_eq!(releases.len(), 2);
    assert!(releases[0].ends_with("=> ok") && releases[1].ends_with("=> error LockError::NotHeld"), "{releases:?}");
    assert_eq!(run.outcome("sharer", "lock-renew other 1000"), "error LockError::NotHeld");

    let crashed_token: u64 = token(&run.outcome("crasher", "lock-try crashy exclusive 60000"));
    assert_eq!(run.exit("crasher")["reason"], "panic");
    let inherited = token(&run.outcome("heir", "lock crashy exclusive 60000 30000"));
    assert!(inherited > crashed_token, "a later grant carries a larger fencing token");

    let taken = token(&run.outcome("taker", "lock leased exclusive 60000 30000"));
    assert!(taken > token(&run.outcome("lapser", "lock-try leased exclusive 300")));
    assert_eq!(run.outcome("lapser", "lock-renew leased 1000"), "error LockError::NotHeld", "the lease ran out");
    assert_eq!(run.outcome("patient", "lock crashy2 exclusive 1000 200"), "error LockError::Timeout");
}

fn token(outcome: &str) -> u64 {
    outcome.strip_prefix("token ").unwrap_or_else(|| panic!("not a grant: {outcome}")).parse().unwrap()
}

#[test]
fn barriers_release_together_time_out_and_report_a_lost_party() {
    // Three parties meet twice at "meet"; the round numbers say they left together.
    let parties: String = (0..3)
        .map(|i| probe(&format!("party-{i}"), GRANTS, "barrier meet 3 30000; barrier meet 3 30000; stop"))
        .collect();
    // Alone at a barrier for two: its deadline passes.
    let lonely = probe("lonely", GRANTS, "barrier empty 2 200; barrier meet 4 1000; stop");
    // "doomed" waits at "fragile" linked to "fuse", which crashes: doomed dies while waiting, and
    // "steady", waiting there too, is told who was lost.
    let fuse = probe(
        "fuse",
        GRANTS,
        "register fuse; await-outcome 10000 barrier-waiting fragile => waiting [doomed,steady]; panic",
    );
    let doomed = probe(
        "doomed",
        &format!("{GRANTS}, \"supervision\""),
        "await fuse 10000; link fuse; barrier fragile 3 30000; stop",
    );
    let steady = probe("steady", GRANTS, "barrier fragile 3 30000; stop");
    let outsider = probe("outsider", "\"messaging\", \"logging\"", "barrier meet 3 100; barrier-waiting meet; stop");
    let run = Scenario::agents("", &format!("{parties}{lonely}{fuse}{doomed}{steady}{outsider}"))
        .run_until_exit_of_all(&["party-0", "party-1", "party-2", "lonely", "steady", "outsider", "doomed", "fuse"]);
    for i in 0..3 {
        let logs = run.logs(&format!("party-{i}"));
        let rounds: Vec<&str> = logs.iter().filter_map(|l| l.strip_prefix("probe: barrier meet 3 30000 => ")).collect();
        assert_eq!(rounds, ["round 1", "round 2"], "party-{i}");
    }
    assert_eq!(run.outcome("lonely", "barrier empty 2 200"), "error BarrierError::Timeout");
    assert_eq!(run.outcome("lonely", "barrier meet 4 1000"), "error BarrierError::Mismatch(3)");
    assert_eq!(run.outcome("steady", "barrier fragile 3 30000"), "error BarrierError::PartyLost(\"doomed\")");
    let both = "await-outcome 10000 barrier-waiting fragile => waiting [doomed,steady]";
    assert_eq!(run.outcome("fuse", both), "waiting [doomed,steady]", "the fuse went off with both waiting");
    assert_eq!(run.exit("doomed")["reason"], "linked");
    assert_eq!(run.outcome("outsider", "barrier meet 3 100"), "error BarrierError::Denied");
    assert_eq!(run.outcome("outsider", "barrier-waiting meet"), "error BarrierError::Denied");
}

#[test]
fn a_dead_leader_is_replaced_under_a_new_term_and_members_are_told() {
    let member = |name: &str, script: &str| {
        format!(
            "[[agent]]\nname = \"{name}\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\nbudget = \"1h\"\n\
             grants = [{GRANTS}]\nconfig = {{ script = \"{script}\", report_messages = \"true\" }}\n"
        )
    };
    let first = member("first", "join g; register first-in; await third-in 10000; panic");
    let second = member(
        "second",
        // A name leaves the registry only after the agent's leaderships are gone: once `first-in`
        // is gone, the next term has begun.
        "await first-in 10000; join g; register second-in; await third-in 10000; await-gone first-in 10000; \
         leader g; leave g; leave g",
    );
    let third = member("third", "await second-in 10000; join g; register third-in");
    let outsider = probe("outsider", "\"messaging\", \"logging\"", "join g; stop");
    let scenario = Scenario::agents("", &format!("{first}{second}{third}{outsider}"));
    let mut child = scenario.spawn();
    let mut lines = common::lines_of(&mut child);
    let mut seen = Vec::new();
    common::wait_for_event(&mut lines, &mut seen, |e| {
        e["agent"] == "third" && e["message"].as_str().is_some_and(|m| m.contains("[agora:leader/g] term=3"))
    });
    if !seen.iter().any(|e| e["message"] == "probe: leave g => error ElectionError::NotMember") {
        common::wait_for_event(&mut lines, &mut seen, |e| {
            e["message"] == "probe: leave g => error ElectionError::NotMember"
        });
    }
    common::terminate(&child);
    let _ = child.wait();
    let logs = |agent: &str| -> Vec<String> {
        seen.iter()
            .filter(|e| e["event"] == "agent_log" && e["agent"] == agent)
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    };
    let outcome = |agent: &str, step: &str| {
        let prefix = format!("probe: {step} => ");
        logs(agent).iter().find_map(|l| l.strip_prefix(&prefix).map(str::to_string)).unwrap()
    };
    // "term 1 leader 5 me 5" → (term, leader, me)
    let parse = |text: &str| {
        let words: Vec<&str> = text.split(' ').collect();
        (words[1].parse::<u64>().unwrap(), words[3].to_string(), words[5].to_string())
    };
    let (term, leader, first_id) = parse(&outcome("first", "join g"));
    assert_eq!((term, &leader), (1, &first_id), "the first member leads term 1");
    let (term, leader, second_id) = parse(&outcome("second", "join g"));
    assert_eq!((term, &leader), (1, &first_id));
    let (_, _, third_id) = parse(&outcome("third", "join g"));
    let (term, leader, _) = parse(&outcome("second", "leader g"));
    assert_eq!((term, &leader), (2, &second_id), "the next member leads term 2 after the leader died");
    assert_eq!(
        logs("second").iter().filter(|l| l.starts_with("probe: leave g => ")).cloned().collect::<Vec<_>>(),
        ["probe: leave g => ok", "probe: leave g => error ElectionError::NotMember"]
    );
    let told: Vec<String> = logs("third").into_iter().filter(|l| l.starts_with("probe got [agora:leader/g]")).collect();
    assert_eq!(
        told,
        [
            format!("probe got [agora:leader/g] term=2 leader={second_id}"),
            format!("probe got [agora:leader/g] term=3 leader={third_id}")
        ],
        "one leader per term, terms increasing, every change told"
    );
    assert!(seen.iter().any(|e| e["event"] == "agent_exited" && e["agent"] == "first" && e["reason"] == "panic"));
    assert_eq!(outcome("outsider", "join g"), "error ElectionError::Denied");
}

#[test]
fn consensus_commits_only_with_the_votes_and_records_every_round() {
    let voter = |name: &str, group: &str, vote: &str| {
        format!(
            "[[agent]]\nname = \"{name}\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\nbudget = \"1h\"\n\
             grants = [{GRANTS}]\nconfig = {{ script = \"join {group}; register {name}-in\", vote = \"{vote}\" }}\n"
        )
    };
    let members = [
        ("maj-1", "maj", "accept"),
        ("maj-2", "maj", "accept"),
        ("maj-3", "maj", "accept"),
        ("maj-4", "maj", "reject"),
        ("maj-5", "maj", "reject"),
        ("all-1", "all", "accept"),
        ("all-2", "all", "reject"),
        ("slow-1", "slow", "accept"),
        ("slow-2", "slow", "ignore"),
        ("crash-1", "crash", "accept"),
        ("crash-2", "crash", "crash"),
    ];
    let voters: String = members.iter().map(|(name, group, vote)| voter(name, group, vote)).collect();
    let awaits: Vec<String> = members.iter().map(|(name, _, _)| format!("await {name}-in 10000")).collect();
    let script = format!(
        "{}; propose maj majority 10000 raise; propose all all 10000 merge; propose slow 2 300 wait; \
         propose crash all 10000 risky; propose nobody majority 1000 x; event-all 100 kind=consensus_round; stop",
        awaits.join("; ")
    );
    let proposer = probe("proposer", &format!("{GRANTS}, \"events\""), &script);
    let run = Scenario::agents("", &format!("{voters}{proposer}")).run_until_exit_of("proposer");

    let outcome = |step: &str| run.outcome("proposer", step);
    let majority = outcome("propose maj majority 10000 raise");
    assert!(majority.starts_with("Verdict::Committed voters 5 accepted 3 "), "{majority}");
    assert!(majority.ends_with("missing 0"), "{majority}");
    let all = outcome("propose all all 10000 merge");
    assert!(all.starts_with("Verdict::Rejected voters 2 "), "{all}");
    assert!(all.contains("rejected 1"), "{all}");
    assert_eq!(outcome("propose slow 2 300 wait"), "Verdict::TimedOut voters 2 accepted 1 rejected 0 missing 0");
    let crash = outcome("propose crash all 10000 risky");
    assert!(crash.starts_with("Verdict::Rejected voters 2 "), "{crash}");
    assert!(crash.ends_with("missing 1"), "a voter that crashed counts as no vote: {crash}");
    assert_eq!(run.exit("crash-2")["reason"], "panic");
    assert_eq!(outcome("propose nobody majority 1000 x"), "error ConsensusError::NotFound");
    let recorded = outcome("event-all 100 kind=consensus_round");
    assert!(recorded.starts_with("pages [4] "), "{recorded}");
    for verdict in ["\\\"committed\\\"", "\\\"rejected\\\"", "\\\"timedout\\\""] {
        assert!(recorded.contains(&verdict.replace('\\', "")), "{verdict} in {recorded}");
    }
}
