//! Batched delivery (`handle-batch`): the messages that queue while an agent works are handed
//! to it in one guest entry, one at a time, in order, each answered as it is reported; a trap,
//! a kill or a budget overrun in the middle of a batch loses only the message in progress and
//! leaves the rest undelivered, a full mailbox stays full until the batch takes from it, and
//! `host.max_batch = 1` delivers each message alone with the same outcomes.
//!
//! `slow` (misbehave) is held in a first message (`sleep:<ms>`, which says so in its metadata;
//! nothing waits behind it when it is taken, so it is delivered alone) while the probe queues
//! more: the first of those begins a batch, which hands out the rest.

use crate::common;

use common::Scenario;

const GRANTS: &str = "grants = [\"messaging\", \"registry\", \"logging\", \"supervision\"]";

/// `slow` (mailbox `mailbox`, CPU budget `budget`, never restarted) and a probe running `script`.
fn scenario(host_extra: &str, mailbox: u32, budget: &str, script: &str) -> Scenario {
    Scenario::agents(
        host_extra,
        &format!(
            "[defaults]\n{GRANTS}\n\
             [[agent]]\nname = \"slow\"\nmodule = \"misbehave\"\nmailbox = {mailbox}\nbudget = \"{budget}\"\n\
             restart = \"temporary\"\nshutdown = \"brutal_kill\"\n\
             [[agent]]\nname = \"probe\"\nmodule = \"probe\"\nrestart = \"temporary\"\n\
             config = {{ script = \"{script}\" }}\n"
        ),
    )
}

fn count(value: &serde_json::Value, key: &str) -> u64 {
    value[key].as_u64().unwrap_or_else(|| panic!("no {key} in {value}"))
}

/// The ticks `slow` logged, in order.
fn ticks(run: &common::Run) -> Vec<String> {
    run.logs("slow").into_iter().filter(|line| line.starts_with("tick ")).collect()
}

const QUEUE_BEHIND_A_SLEEP: &str = "send slow sleep:1500; await-meta slow state sleep-1500 20000; burst slow 10; call slow tick 5000; \
     send slow stop; stop";

#[test]
fn queued_messages_are_handed_out_in_one_batch_in_order_and_each_is_answered() {
    let run = scenario("", 100, "5s", QUEUE_BEHIND_A_SLEEP).run_until_exit_of_all(&["probe", "slow"]);
    assert_eq!(run.outcome("probe", "burst slow 10"), "accepted 10 first-error none");
    // The call, queued behind the ten casts, is answered from inside the batch, after them.
    assert_eq!(run.outcome("probe", "call slow tick 5000"), "reply 11");
    let expected: Vec<String> = (1..=11).map(|n| format!("tick {n}")).collect();
    assert_eq!(ticks(&run), expected);
    let exit = run.exit("slow");
    assert_eq!(exit["reason"], "normal");
    assert_eq!(count(exit, "handled"), 13, "sleep, ten ticks, the call and stop: {exit}");
    // The ten casts and the call queued while the sleep ran: the first cast began a batch that
    // handed out the other ten.
    assert!(count(exit, "batched") >= 10, "{exit}");
    assert_eq!(count(exit, "undelivered"), 0);
}

#[test]
fn with_max_batch_1_each_message_is_delivered_alone_with_the_same_outcomes() {
    let run = scenario("max_batch = 1", 100, "5s", QUEUE_BEHIND_A_SLEEP).run_until_exit_of_all(&["probe", "slow"]);
    assert_eq!(run.outcome("probe", "call slow tick 5000"), "reply 11");
    assert_eq!(ticks(&run).len(), 11);
    let exit = run.exit("slow");
    assert_eq!((count(exit, "handled"), count(exit, "batched")), (13, 0), "{exit}");
}

#[test]
fn a_batch_holds_at_most_max_batch_items() {
    let run = scenario("max_batch = 4", 100, "5s", QUEUE_BEHIND_A_SLEEP).run_until_exit_of_all(&["probe", "slow"]);
    assert_eq!(run.outcome("probe", "call slow tick 5000"), "reply 11");
    // Eleven queued behind the sleep: batches of four take three entries (4 + 4 + 3), so
    // 3 + 3 + 2 come after a batch's first; `stop`, sent once the call (the last of the third
    // batch) is answered, comes alone.
    let exit = run.exit("slow");
    assert_eq!(count(exit, "handled"), 13);
    assert_eq!(count(exit, "batched"), 8, "{exit}");
}

#[test]
fn a_trap_in_the_middle_of_a_batch_leaves_the_rest_undelivered() {
    let run = scenario(
        "",
        100,
        "5s",
        "send slow sleep:1500; await-meta slow state sleep-1500 20000; burst slow 3; send slow panic; \
         burst slow 4; stop",
    )
    .run_until_exit_of_all(&["probe", "slow"]);
    assert_eq!(ticks(&run), ["tick 1", "tick 2", "tick 3"]);
    let exit = run.exit("slow");
    assert_eq!(exit["reason"], "panic", "{exit}");
    // The sleep and three ticks were handled (the ticks in one batch, the first of them
    // beginning it); the panic's message was lost with the instance; the four behind it were
    // never taken out.
    assert_eq!((count(exit, "handled"), count(exit, "batched")), (4, 2), "{exit}");
    assert_eq!(count(exit, "undelivered"), 4, "{exit}");
    assert!(exit["detail"].as_str().unwrap().contains("(in handle)"), "{exit}");
}

#[test]
fn a_kill_in_the_middle_of_a_batch_leaves_the_rest_undelivered() {
    let run = scenario(
        "",
        100,
        "5s",
        "send slow sleep:1500; await-meta slow state sleep-1500 20000; send slow tick; send slow tick; \
         send slow sleep:30000; await-meta slow state sleep-30000 20000; burst slow 3; stop",
    )
    // Then the host is told to stop: `slow`'s shutdown is `brutal_kill`.
    .run_until_exit_of("probe");
    assert_eq!(ticks(&run), ["tick 1", "tick 2"]);
    let exit = run.exit("slow");
    assert_eq!(exit["reason"], "killed", "{exit}");
    // Killed in the second sleep, handed out by the batch the first tick began.
    assert_eq!((count(exit, "handled"), count(exit, "batched")), (3, 1), "{exit}");
    assert_eq!(count(exit, "undelivered"), 3, "{exit}");
}

#[test]
fn each_item_of_a_batch_has_its_own_cpu_budget_and_an_overrun_ends_the_batch() {
    // 300 ms of CPU each: three spins of 200 ms in one batch pass (600 ms in all); the loop
    // after them runs out of its own budget, and the two ticks behind it are undelivered.
    let run = scenario(
        "",
        100,
        "300ms",
        "send slow sleep:1500; await-meta slow state sleep-1500 20000; send slow spin:200; send slow spin:200; \
         send slow spin:200; send slow tick; send slow loop; burst slow 2; stop",
    )
    .run_until_exit_of_all(&["probe", "slow"]);
    assert_eq!(ticks(&run), ["tick 1"]);
    let exit = run.exit("slow");
    assert_eq!(exit["reason"], "cpu_budget", "{exit}");
    // The first spin began the batch: two spins and the tick came after it.
    assert_eq!((count(exit, "handled"), count(exit, "batched")), (5, 3), "{exit}");
    assert_eq!(count(exit, "undelivered"), 2, "{exit}");
}

#[test]
fn a_full_mailbox_stays_full_until_the_batch_takes_from_it() {
    // Three slots: the sleeping message holds none of them, and the batch takes the next only
    // when it hands it out, so a burst of five while it sleeps gets three in; a sender that
    // waits for room gets in once the batch starts taking.
    let run = scenario(
        "",
        3,
        "5s",
        "send slow sleep:1500; await-meta slow state sleep-1500 20000; burst slow 5; \
         send-timeout slow 20000 tick; send-timeout slow 20000 tick; send-timeout slow 20000 stop; stop",
    )
    .run_until_exit_of_all(&["probe", "slow"]);
    assert_eq!(run.outcome("probe", "burst slow 5"), "accepted 3 first-error mailbox-full");
    assert_eq!(run.outcomes("probe", "send-timeout slow 20000 tick"), ["ok", "ok"]);
    let expected: Vec<String> = (1..=5).map(|n| format!("tick {n}")).collect();
    assert_eq!(ticks(&run), expected);
    let exit = run.exit("slow");
    assert_eq!(exit["reason"], "normal", "{exit}");
    assert_eq!((count(exit, "handled"), count(exit, "undelivered")), (7, 0), "{exit}");
    // The three that waited behind the sleep came out in one batch (the first beginning it).
    assert!(count(exit, "batched") >= 2, "{exit}");
}
