//! Messaging through the real binary and real agents: send, call, publish, and every refusal.

use crate::common;

use common::Scenario;

/// Every interface granted; no restarts, so that each scenario ends when its agents stop.
const GRANT_ALL: &str =
    "grants = [\"messaging\", \"registry\", \"logging\"]\nrestart = \"temporary\"\nsignificant = true";

#[test]
fn ping_pong_completes_its_round_trips_and_both_exit_normally() {
    for mode in ["send", "call"] {
        let run = Scenario::finite(
            "",
            &format!(
                "[defaults]\n{GRANT_ALL}\n\
                 [[agent]]\nname = \"pong\"\nmodule = \"ping-pong\"\nconfig = {{ role = \"pong\" }}\n\
                 [[agent]]\nname = \"ping\"\nmodule = \"ping-pong\"\nconfig = {{ role = \"ping\", peer = \"pong\", rounds = 500, mode = \"{mode}\" }}\n"
            ),
        )
        .run();
        run.assert_success();
        assert_eq!(run.logs("ping"), vec!["ping-pong finished 500 round trips"], "mode {mode}");
        assert_eq!(run.exit("ping")["reason"], "normal");
        assert_eq!(run.exit("pong")["reason"], "normal");
        assert_eq!(run.events("agent_started", None).len(), 2);
        let finished = &run.events("run_finished", None)[0];
        assert_eq!((finished["normal"].as_u64(), finished["crashed"].as_u64()), (Some(2), Some(0)));
    }
}

#[test]
fn call_gets_the_reply_and_state_persists_between_messages() {
    let run = Scenario::finite(
        "",
        &format!(
            "[defaults]\n{GRANT_ALL}\n\
             [[agent]]\nname = \"counter\"\nmodule = \"counter\"\nconfig = {{ start = 40 }}\n\
             [[agent]]\nname = \"probe\"\nmodule = \"probe\"\n\
             config = {{ script = \"send counter inc; call counter inc 5000; call counter get 5000; call counter bogus 5000; call counter hold 5000; send counter stop; stop\" }}\n"
        ),
    )
    .run();
    run.assert_success();
    assert_eq!(run.outcome("probe", "call counter inc 5000"), "reply 42");
    assert_eq!(run.outcome("probe", "call counter get 5000"), "reply 42");
    // A non-fatal handler error reaches the caller as `failed` and the agent keeps running.
    assert_eq!(run.outcome("probe", "call counter bogus 5000"), "error failed(unknown command \"bogus\")");
    // A reply deferred past `handle` still reaches the caller; a second one finds no such call.
    assert_eq!(run.outcome("probe", "call counter hold 5000"), "reply released 42");
    assert_eq!(run.logs("counter")[0], "second reply: Err(Error::NotFound)");
    assert_eq!(run.exit("counter")["reason"], "normal");
}

#[test]
fn publish_reaches_every_subscriber() {
    let run = Scenario::finite(
        "",
        &format!(
            "[defaults]\n{GRANT_ALL}\n\
             [[agent]]\nname = \"a\"\nmodule = \"echo\"\nconfig = {{ topics = \"news,sports\" }}\n\
             [[agent]]\nname = \"b\"\nmodule = \"echo\"\nconfig = {{ topics = \"news\" }}\n\
             [[agent]]\nname = \"probe\"\nmodule = \"probe\"\n\
             config = {{ script = \"publish news extra; publish sports goal; publish weather rain; call a sync 5000; call b sync 5000; send a stop; send b stop; stop\" }}\n"
        ),
    )
    .run();
    run.assert_success();
    assert_eq!(run.outcome("probe", "publish news extra"), "delivered 2 full 0");
    assert_eq!(run.outcome("probe", "publish sports goal"), "delivered 1 full 0");
    assert_eq!(run.outcome("probe", "publish weather rain"), "delivered 0 full 0");
    assert_eq!(run.logs("a")[..2], ["echo got news: extra", "echo got sports: goal"]);
    assert_eq!(run.logs("b")[0], "echo got news: extra");
}

#[test]
fn full_mailbox_refuses_at_once_and_queued_messages_are_accounted_for() {
    // `slow` says when it is busy in its long loop; from then on its 3-slot mailbox cannot drain.
    let run = Scenario::finite(
        "",
        &format!(
            "[defaults]\n{GRANT_ALL}\n\
             [[agent]]\nname = \"slow\"\nmodule = \"misbehave\"\nmailbox = 3\nbudget = \"3s\"\n\
             [[agent]]\nname = \"probe\"\nmodule = \"probe\"\n\
             config = {{ script = \"send slow loop; await-meta slow state looping 20000; burst slow 10; \
             send-timeout slow 200 late; stop\" }}\n"
        ),
    )
    .run();
    run.assert_success();
    assert_eq!(run.outcome("probe", "await-meta slow state looping 20000"), "value looping");
    assert_eq!(run.outcome("probe", "burst slow 10"), "accepted 3 first-error mailbox-full");
    // Waiting does not help: no room appears while it loops.
    assert_eq!(run.outcome("probe", "send-timeout slow 200 late"), "error mailbox-full");
    let exit = run.exit("slow");
    assert_eq!(exit["reason"], "cpu_budget");
    // Accepted but never handled: reported, not silently lost.
    assert_eq!(exit["undelivered"].as_u64(), Some(3));
}

#[test]
fn a_mailbox_holds_a_bounded_number_of_bytes() {
    // 100 slots, but at most 1 MiB of payloads: two 400 KB messages fit, a third does not, a
    // small one still does, and waiting for room does not help while nothing is taken out.
    let run = Scenario::finite(
        "max_message = \"512KiB\"\nmailbox_bytes = \"1MiB\"",
        &format!(
            "[defaults]\n{GRANT_ALL}\n\
             [[agent]]\nname = \"slow\"\nmodule = \"misbehave\"\nmailbox = 100\nbudget = \"3s\"\n\
             [[agent]]\nname = \"probe\"\nmodule = \"probe\"\n\
             config = {{ script = \"send slow loop; await-meta slow state looping 20000; big slow 400000; \
             big slow 400000; big slow 400000; send-timeout slow 200 small; stop\" }}\n"
        ),
    )
    .run();
    run.assert_success();
    let outcomes: Vec<String> = run
        .logs("probe")
        .iter()
        .filter_map(|l| l.strip_prefix("probe: big slow 400000 => ").map(str::to_string))
        .collect();
    assert_eq!(outcomes, ["ok", "ok", "error mailbox-full"]);
    assert_eq!(run.outcome("probe", "send-timeout slow 200 small"), "ok");
    assert_eq!(run.exit("slow")["undelivered"].as_u64(), Some(3));
}

#[test]
fn call_times_out_when_no_reply_comes() {
    let run = Scenario::finite(
        "",
        &format!(
            "[defaults]\n{GRANT_ALL}\n\
             [[agent]]\nname = \"mute\"\nmodule = \"misbehave\"\n\
             [[agent]]\nname = \"probe\"\nmodule = \"probe\"\n\
             config = {{ script = \"call mute ignore 300; call mute tick 5000; call nobody x 300; send mute stop; stop\" }}\n"
        ),
    )
    .run();
    run.assert_success();
    assert_eq!(run.outcome("probe", "call mute ignore 300"), "error timeout");
    // The agent that did not answer is alive and answers the next call.
    assert_eq!(run.outcome("probe", "call mute tick 5000"), "reply 1");
    assert_eq!(run.outcome("probe", "call nobody x 300"), "error not-found");
}

#[test]
fn each_call_times_out_after_its_own_timeout_after_a_longer_one() {
    // An agent's calls share one timer, moved at each call: a short timeout after a long one
    // must still end the short call in time (`slow` would answer after a second).
    let run = Scenario::finite(
        "",
        &format!(
            "[defaults]\n{GRANT_ALL}\n\
             [[agent]]\nname = \"slow\"\nmodule = \"misbehave\"\n\
             [[agent]]\nname = \"probe\"\nmodule = \"probe\"\n\
             config = {{ script = \"call slow tick 30000; call slow sleep:1000 200; call slow tick 5000; \
             call slow ignore 300; send slow stop; stop\" }}\n"
        ),
    )
    .run();
    run.assert_success();
    assert_eq!(run.outcome("probe", "call slow tick 30000"), "reply 1");
    assert_eq!(run.outcome("probe", "call slow sleep:1000 200"), "error timeout");
    // Answered once the sleep is over; then a timeout again after a longer call.
    assert_eq!(run.outcome("probe", "call slow tick 5000"), "reply 2");
    assert_eq!(run.outcome("probe", "call slow ignore 300"), "error timeout");
}

#[test]
fn oversized_messages_are_refused_with_the_limit() {
    // Sends, calls, replies (returned or through the `reply` import) and publishes alike.
    let big = "x".repeat(1025);
    let script = format!(
        "big echo 1024; big echo 1025; call echo {big} 5000; publish news {big}; call mb big-reply:1024 5000; \
         call mb big-reply:1025 5000; call mb reply-import:1024 5000; call mb reply-import:1025 5000; \
         call mb tick 5000; send echo stop; send mb stop; stop"
    );
    let run = Scenario::finite(
        "max_message = \"1KiB\"",
        &format!(
            "[defaults]\n{GRANT_ALL}\n\
             [[agent]]\nname = \"echo\"\nmodule = \"echo\"\n\
             [[agent]]\nname = \"mb\"\nmodule = \"misbehave\"\n\
             [[agent]]\nname = \"probe\"\nmodule = \"probe\"\nsignificant = true\nrestart = \"transient\"\n\
             config = {{ script = \"{script}\" }}\n"
        ),
    )
    .run();
    run.assert_success();
    let outcome = |step: &str| run.outcome("probe", step);
    assert_eq!(outcome("big echo 1024"), "ok");
    assert_eq!(outcome("big echo 1025"), "error too-large(1024)");
    assert_eq!(outcome(&format!("call echo {big} 5000")), "error too-large(1024)");
    assert_eq!(outcome(&format!("publish news {big}")), "error too-large(1024)");
    assert_eq!(outcome("call mb big-reply:1024 5000"), format!("reply {}", "x".repeat(1024)));
    assert_eq!(outcome("call mb big-reply:1025 5000"), "error too-large(1024)", "a returned reply over the limit");
    assert_eq!(outcome("call mb reply-import:1024 5000"), format!("reply {}", "x".repeat(1024)));
    assert_eq!(
        outcome("call mb reply-import:1025 5000"),
        "reply reply-import error Error::TooLarge(1024)",
        "the reply import refuses it, and the agent learns why"
    );
    assert_eq!(outcome("call mb tick 5000"), "reply 1", "refusals are no faults: mb is still its first instance");
}

#[test]
fn ungranted_interfaces_are_denied() {
    let run = Scenario::agents(
        "",
        "[[agent]]\nname = \"target\"\nmodule = \"echo\"\n\
         [[agent]]\nname = \"probe\"\nmodule = \"probe\"\ngrants = [\"logging\"]\nrestart = \"temporary\"\nsignificant = true\n\
         config = { run_in_init = \"true\", script = \"send target hi; call target hi 100; publish t x; subscribe t; register other; lookup target; stop\" }\n",
    )
    .run_until_exit_of("probe");
    for step in
        ["send target hi", "call target hi 100", "publish t x", "subscribe t", "register other", "lookup target"]
    {
        assert_eq!(run.outcome("probe", step), "error denied", "{step}");
    }
    // `target` has no grants at all: the line its `terminate` logs is dropped, and said so once.
    assert!(run.logs("target").is_empty());
    assert_eq!(run.events("log_denied", Some("target")).len(), 1, "{:#?}", run.events);
}
