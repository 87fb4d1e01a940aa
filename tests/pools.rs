//! Worker pools (`[pools.<name>]`, the `pools` interface) with poolboy's semantics, through
//! the manifest and the WIT contract: lend order, overflow, waiting, timeouts, workers that
//! crash while checked out, holders that exit, and what is refused.

use crate::common;

use common::Scenario;

const GRANTS: &str = "\"messaging\", \"logging\", \"registry\", \"pools\"";

fn probe(name: &str, grants: &str, script: &str) -> String {
    format!(
        "[[agent]]\nname = \"{name}\"\nmodule = \"probe\"\nrestart = \"temporary\"\nbudget = \"1h\"\n\
         grants = [{grants}]\nconfig = {{ script = \"{script}\" }}\n"
    )
}

fn pool(name: &str, size: u32, overflow: u32, extra: &str) -> String {
    format!("[pools.{name}]\nmodule = \"misbehave\"\nsize = {size}\noverflow = {overflow}\n{extra}\n")
}

#[test]
fn lifo_lends_the_last_returned_fifo_the_longest_free_and_overflow_comes_and_goes() {
    let lifo_script = "checkout lifo 0; checkout lifo 0; pool-status lifo; checkout lifo 0; pool-status lifo; \
        checkout lifo 0; checkin lifo lifo.1; await-gone lifo.1 10000; pool-status lifo; checkin lifo lifo.2; \
        checkin lifo lifo.3; checkout lifo 0; pool-status lifo; worker-call lifo tick 5000; stop";
    let fifo_script = "checkout fifo 0; checkin fifo; checkout fifo 0; checkout fifo 0; pool-status fifo; \
        checkout fifo 0; stop";
    let manifest = format!(
        "{}{}{}{}",
        pool("lifo", 2, 1, ""),
        pool("fifo", 2, 0, "strategy = \"fifo\""),
        probe("user", GRANTS, lifo_script),
        probe("fifo-user", GRANTS, fifo_script),
    );
    let run = Scenario::agents("", &manifest).run_until_exit_of_all(&["user", "fifo-user"]);
    assert_eq!(run.exit("user")["reason"], "normal", "{:#?}", run.logs("user"));

    assert_eq!(
        run.outcomes("user", "checkout lifo 0"),
        ["worker lifo.1", "worker lifo.2", "worker lifo.3", "error full", "worker lifo.3"],
        "two workers, one overflow worker, then full; after the checkins the last one returned"
    );
    assert_eq!(
        run.outcomes("user", "pool-status lifo"),
        [
            "overflow available 0 overflow 0 out 2 waiting 0",
            "full available 0 overflow 1 out 3 waiting 0",
            "overflow available 0 overflow 0 out 2 waiting 0",
            "ready available 1 overflow 0 out 1 waiting 0",
        ]
    );
    // poolboy dismisses the worker that comes back while overflow workers run, whichever it is.
    assert_eq!(run.outcome("user", "checkin lifo lifo.1"), "ok");
    assert_eq!(run.exit("lifo.1")["reason"], "shutdown");
    let user_exit = run.position(|e| e["event"] == "agent_exited" && e["agent"] == "user").unwrap();
    for kept in ["lifo.2", "lifo.3"] {
        let exit = run.position(|e| e["event"] == "agent_exited" && e["agent"] == kept);
        assert!(exit.is_none_or(|at| at > user_exit), "{kept} is kept while the host runs");
    }
    assert_eq!(run.outcome("user", "worker-call lifo tick 5000"), "reply 1", "a worker is a live agent");

    assert_eq!(
        run.outcomes("fifo-user", "checkout fifo 0"),
        ["worker fifo.1", "worker fifo.2", "worker fifo.1", "error full"],
        "fifo lends the worker free longest; without overflow a checkout that does not wait is full"
    );
    assert_eq!(run.outcome("fifo-user", "pool-status fifo"), "full available 0 overflow 0 out 2 waiting 0");
    assert_eq!(run.events("pool_started", None).len(), 2);
}

#[test]
fn waiters_are_served_first_come_first_served_and_a_wait_times_out() {
    // `holder` keeps the only worker; its own second checkout times out and its third does
    // not wait. `first` queues, then `second` queues once the pool shows one waiter; the
    // worker counts the calls it answers, so its replies show who got it first.
    let holder = probe(
        "holder",
        GRANTS,
        "checkout one 0; checkout one 200; checkout one 0; register holding; \
         await-outcome 10000 pool-status one => full available 0 overflow 0 out 1 waiting 2; checkin one; stop",
    );
    let first = probe(
        "first",
        GRANTS,
        "await holding 10000; register first-queued; checkout one 30000; worker-call one tick 5000; checkin one; stop",
    );
    let second = probe(
        "second",
        GRANTS,
        "await first-queued 10000; \
         await-outcome 10000 pool-status one => full available 0 overflow 0 out 1 waiting 1; \
         checkout one 30000; worker-call one tick 5000; checkin one; pool-status one; stop",
    );
    let manifest = format!("{}{holder}{first}{second}", pool("one", 1, 0, "checkout_timeout = \"50ms\""));
    let run = Scenario::agents("", &manifest).run_until_exit_of_all(&["holder", "first", "second"]);
    assert_eq!(run.outcome("holder", "checkout one 0"), "worker one.1");
    assert_eq!(run.outcome("holder", "checkout one 200"), "error timeout");
    assert_eq!(run.outcomes("holder", "checkout one 0")[1], "error full");
    assert_eq!(run.outcome("holder", "checkin one"), "ok");
    assert_eq!(run.outcome("first", "checkout one 30000"), "worker one.1");
    assert_eq!(run.outcome("first", "worker-call one tick 5000"), "reply 1", "the first waiter was served first");
    assert_eq!(run.outcome("second", "checkout one 30000"), "worker one.1");
    assert_eq!(run.outcome("second", "worker-call one tick 5000"), "reply 2");
    assert_eq!(run.outcome("second", "pool-status one"), "ready available 1 overflow 0 out 0 waiting 0");
}

#[test]
fn the_pools_checkout_timeout_is_the_default_wait() {
    let holder = probe("holder", GRANTS, "checkout one 0; register holding; await done 10000; stop");
    let waiter = probe("waiter", GRANTS, "await holding 10000; checkout one default; register done; stop");
    let manifest = format!("{}{holder}{waiter}", pool("one", 1, 0, "checkout_timeout = \"100ms\""));
    let run = Scenario::agents("", &manifest).run_until_exit_of_all(&["holder", "waiter"]);
    assert_eq!(run.outcome("waiter", "checkout one default"), "error timeout");
}

#[test]
fn a_worker_that_crashes_while_checked_out_is_replaced_and_that_checkout_ends() {
    let user = probe(
        "user",
        GRANTS,
        "checkout crashy 0; worker-call crashy panic 5000; \
         await-outcome 10000 pool-status crashy => ready available 1 overflow 0 out 0 waiting 0; \
         checkin crashy; checkout crashy 0; worker-call crashy tick 5000; stop",
    );
    let manifest = format!("{}{user}", pool("crashy", 1, 0, ""));
    let run = Scenario::agents("", &manifest).run_until_exit_of("user");
    assert_eq!(run.outcome("user", "checkout crashy 0"), "worker crashy.1");
    assert!(run.outcome("user", "worker-call crashy panic 5000").starts_with("error"));
    assert_eq!(run.exit("crashy.1")["reason"], "panic");
    assert_eq!(run.outcome("user", "checkin crashy"), "error not-checked-out", "the crash ended the checkout");
    assert_eq!(run.outcomes("user", "checkout crashy 0")[1], "worker crashy.2", "a fresh replacement");
    assert_eq!(run.outcome("user", "worker-call crashy tick 5000"), "reply 1");
    let replaced = run.events("pool_worker_replaced", None);
    assert_eq!(replaced.len(), 1, "{replaced:#?}");
    assert_eq!(replaced[0]["lent"], true);
}

#[test]
fn a_holder_that_exits_returns_its_worker_and_a_waiter_that_dies_stops_waiting() {
    // `stuck` waits for the worker `holder` keeps, and is killed meanwhile (its one_for_all
    // sibling crashes); the pool no longer counts it. Then `holder` crashes holding the
    // worker, and `taker` gets it.
    let group = format!(
        "[[supervisor.children]]\nname = \"pair\"\nstrategy = \"one_for_all\"\nrestart = \"temporary\"\nintensity = 5\n\
         [[supervisor.children.children]]\nname = \"stuck\"\nmodule = \"probe\"\nrestart = \"temporary\"\nshutdown = \"100ms\"\n\
         budget = \"1h\"\ngrants = [{GRANTS}]\nconfig = {{ script = \"await held 10000; checkout p 60000\" }}\n\
         [[supervisor.children.children]]\nname = \"sibling\"\nmodule = \"misbehave\"\n"
    );
    let holder = probe(
        "holder",
        GRANTS,
        "checkout p 0; register held; \
         await-outcome 10000 pool-status p => full available 0 overflow 0 out 1 waiting 1; send sibling panic; \
         await-gone stuck 10000; pool-status p; register dropped; await go 10000; panic",
    );
    let taker =
        probe("taker", GRANTS, "await dropped 10000; checkout p 0; register go; checkout p 10000; pool-status p; stop");
    let children = format!("{holder}{taker}").replace("[[agent]]", "[[supervisor.children]]");
    let manifest = format!("{}{children}{group}", pool("p", 1, 0, ""));
    let run = Scenario::agents("", &manifest).run_until_exit_of_all(&["holder", "taker", "stuck"]);
    assert_eq!(run.exit("stuck")["reason"], "killed");
    assert_eq!(run.outcome("holder", "pool-status p"), "full available 0 overflow 0 out 1 waiting 0");
    assert_eq!(run.outcome("taker", "checkout p 0"), "error full");
    assert_eq!(run.exit("holder")["reason"], "panic");
    assert_eq!(run.outcome("taker", "checkout p 10000"), "worker p.1", "the crashed holder's worker came back");
    assert_eq!(run.outcome("taker", "pool-status p"), "full available 0 overflow 0 out 1 waiting 0");
    assert!(run.events("pool_worker_replaced", None).is_empty(), "the worker itself never stopped");
}

#[test]
fn pools_are_denied_without_the_grant_and_unknown_pools_are_not_found() {
    let denied = probe("denied", "\"messaging\", \"logging\", \"registry\"", "checkout p 0; pool-status p; stop");
    let user = probe(
        "user",
        GRANTS,
        "checkout nope 0; checkout nope default; pool-status nope; checkin p p.1; checkout p 0; checkin p; checkin p p.1; stop",
    );
    let manifest = format!("{}{denied}{user}", pool("p", 1, 0, ""));
    let run = Scenario::agents("", &manifest).run_until_exit_of_all(&["denied", "user"]);
    assert_eq!(run.outcome("denied", "checkout p 0"), "error denied");
    assert_eq!(run.outcome("denied", "pool-status p"), "error denied");
    assert_eq!(run.outcome("user", "checkout nope 0"), "error not-found");
    assert_eq!(run.outcome("user", "checkout nope default"), "error not-found");
    assert_eq!(run.outcome("user", "pool-status nope"), "error not-found");
    assert_eq!(run.outcomes("user", "checkin p p.1"), ["error not-checked-out", "error not-checked-out"]);
    assert_eq!(run.outcome("user", "checkin p"), "ok");
}

#[test]
fn a_pool_that_fails_is_restarted_by_the_root_with_fresh_workers() {
    // AGORA_INJECT_FAULT=pool:p makes the pool's own host code panic once, on its first event.
    let user = probe(
        "user",
        GRANTS,
        "lookup p; checkout p 0; await-new p 10000; \
         await-outcome 10000 pool-status p => ready available 2 overflow 0 out 0 waiting 0; checkout p 0; stop",
    );
    let manifest = format!("{}{user}", pool("p", 2, 0, ""));
    let run = Scenario::agents("", &manifest).env("AGORA_INJECT_FAULT", "pool:p").run_until_exit_of("user");
    let failed = run.events("supervisor_failed", None);
    assert!(failed.iter().any(|e| e["supervisor"] == "p" && e["reason"] == "host_panic"), "{failed:#?}");
    assert_eq!(run.events("pool_started", None).len(), 2, "started, failed, started again");
    assert_eq!(run.outcome("user", "checkout p 0"), "error stopped", "the checkout the failing pool was serving");
    for worker in ["p.1", "p.2"] {
        let exits = run.events("agent_exited", Some(worker));
        assert_eq!(
            exits.first().map(|e| &e["reason"]),
            Some(&"shutdown".into()),
            "{worker}: the failed pool stopped it"
        );
        assert_eq!(run.events("agent_started", Some(worker)).len(), 2, "{worker} started again with the new pool");
    }
    assert_eq!(run.outcomes("user", "checkout p 0")[1], "worker p.1");
}

#[test]
fn metrics_show_each_pools_workers_by_state() {
    // One worker of two checked out and held while /metrics is read.
    let manifest = format!(
        "{}\n{}{}",
        common::header("admin = \"127.0.0.1:0\""),
        pool("held", 2, 1, ""),
        probe("holder", GRANTS, "checkout held 0; sleep 60000; stop"),
    );
    let (mut child, mut lines, mut seen, address) = common::until_admin_listens(Scenario::new(&manifest).spawn());
    common::wait_for_event(&mut lines, &mut seen, |e| {
        e["event"] == "agent_log"
            && e["message"].as_str().is_some_and(|m| m.starts_with("probe: checkout held 0 => worker "))
    });
    let metrics = common::metrics(&address);
    common::terminate(&child);
    child.wait().unwrap();
    for line in [
        "agora_pool_workers{pool=\"held\",state=\"available\"} 1",
        "agora_pool_workers{pool=\"held\",state=\"checked_out\"} 1",
        "agora_pool_overflow{pool=\"held\"} 0",
        "agora_pool_waiting{pool=\"held\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line:?} in:\n{metrics}");
    }
}
