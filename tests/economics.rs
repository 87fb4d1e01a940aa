//! Economics through the manifest and the WIT contract: wallets, transfers and holds, compute
//! billed in fuel with each unpaid policy, and the ledger across a host restart.

mod common;

use common::Scenario;

fn probe(name: &str, wallet: u64, script: &str) -> String {
    format!(
        "[[agent]]\nname = \"{name}\"\nmodule = \"probe\"\nrestart = \"temporary\"\nbudget = \"1h\"\nwallet = {wallet}\n\
         grants = [\"messaging\", \"logging\", \"registry\", \"economics\"]\nconfig = {{ script = \"{script}\" }}\n"
    )
}

/// Compute at 1 credit per 1,000 fuel, in slices of 10,000 units (10 M fuel, more than a 1 ms
/// tick burns): a callback starts only if its wallet holds half a slice (5,000 credits).
fn priced(unpaid: &str) -> String {
    format!("[economics]\ncompute_price = 1\ncompute_unit = 1000\ncompute_slice = 10000\nunpaid = \"{unpaid}\"\n")
}

const TICK: &str = "tick = \"1ms\"";

/// A counter whose wallet pays for half a slice and a little more: its first 500,000 fuel.
const COUNTER: &str = "[[agent]]\nname = \"counter\"\nmodule = \"counter\"\nrestart = \"temporary\"\nwallet = 5500\n";

#[test]
fn transfers_and_holds_move_money_and_survive_a_restart() {
    let alice = probe(
        "alice",
        100,
        "await bob 10000; pay bob 30; pay bob 500; pay nobody 1; hold 50; wallet; capture bob 20; wallet; \
         hold 10; release-hold; release-hold; wallet; stop",
    );
    let bob = probe("bob", 0, "register bob; sleep 200; wallet; stop");
    // Deny by default: without the grant, no wallet call reaches the ledger.
    let outsider = "[[agent]]\nname = \"outsider\"\nmodule = \"probe\"\nrestart = \"temporary\"\n\
                    grants = [\"messaging\", \"logging\"]\nconfig = { script = \"wallet; pay alice 1; stop\" }\n";
    let scenario = Scenario::agents("", &format!("{alice}{bob}{outsider}"));
    let run = scenario.run_until_exit_of_all(&["alice", "bob", "outsider"]);
    assert_eq!(run.outcome("outsider", "wallet"), "error LedgerError::Denied");
    assert_eq!(run.outcome("outsider", "pay alice 1"), "error LedgerError::Denied");
    assert!(run.outcome("alice", "pay bob 30").starts_with("paid seq "));
    assert_eq!(
        run.outcome("alice", "pay bob 500"),
        "error LedgerError::InsufficientFunds(Funds { balance: 70, held: 0 })"
    );
    assert_eq!(run.outcome("alice", "pay nobody 1"), "error LedgerError::NotFound");
    let wallets: Vec<String> = run.logs("alice").into_iter().filter(|l| l.starts_with("probe: wallet")).collect();
    assert_eq!(
        wallets,
        [
            "probe: wallet => balance 20 held 50",
            "probe: wallet => balance 50 held 0",
            "probe: wallet => balance 50 held 0"
        ],
        "a capture of 20 from a hold of 50 pays 20 and returns 30"
    );
    let releases: Vec<String> =
        run.logs("alice").into_iter().filter(|l| l.starts_with("probe: release-hold")).collect();
    assert_eq!(releases, ["probe: release-hold => ok", "probe: release-hold => error LedgerError::NotFound"]);

    // The same manifest again, on the same ledger: budgets are not minted twice, balances stand.
    let again = probe("alice", 100, "wallet; stop");
    let bob_again = probe("bob", 0, "wallet; stop");
    std::fs::write(&scenario.manifest, format!("{}\n{again}{bob_again}", common::header(""))).unwrap();
    let rerun = scenario.run_until_exit_of_all(&["alice", "bob"]);
    assert_eq!(rerun.outcome("alice", "wallet"), "balance 50 held 0");
    assert_eq!(rerun.outcome("bob", "wallet"), "balance 50 held 0");
}

#[test]
fn a_hold_left_open_is_released_when_the_host_starts_again() {
    let holder = probe("holder", 100, "hold 60; wallet; stop");
    let scenario = Scenario::agents("", &holder);
    let run = scenario.run_until_exit_of("holder");
    assert_eq!(run.outcome("holder", "wallet"), "balance 40 held 60");
    std::fs::write(&scenario.manifest, format!("{}\n{}", common::header(""), probe("holder", 100, "wallet; stop")))
        .unwrap();
    let rerun = scenario.run_until_exit_of("holder");
    assert_eq!(rerun.outcome("holder", "wallet"), "balance 100 held 0");
}

#[test]
fn compute_drains_a_wallet_and_refuse_turns_callers_away_until_it_is_funded() {
    // The counter pays for every message it handles: past its first 500,000 fuel its wallet
    // holds less than half a slice, well within 600 calls.
    let client = probe(
        "client",
        1_000_000,
        "repeat 600 call counter inc 5000; pay counter 100000; until 10000 call counter get 5000; usage; stop",
    );
    let scenario = Scenario::agents(TICK, &format!("{}{COUNTER}{client}", priced("refuse")));
    let run = scenario.run_until_exit_of("client");
    assert_eq!(run.outcome("client", "repeat 600 call counter inc 5000"), "error unpaid");
    let value: u64 =
        run.outcome("client", "until 10000 call counter get 5000").strip_prefix("reply ").unwrap().parse().unwrap();
    assert!(value > 0 && value < 600, "some increments were paid for, then callers were refused: {value}");
    assert!(!run.events("agent_unpaid", Some("counter")).is_empty());
    assert!(!run.events("agent_funded", Some("counter")).is_empty());
    let usage = run.outcome("client", "usage");
    let charged: u64 = usage.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(charged > 0, "the client pays for its own compute: {usage}");
}

#[test]
fn suspend_holds_messages_until_the_wallet_is_funded() {
    let client = probe(
        "client",
        1_000_000,
        "repeat 800 send counter inc; call counter get 300; pay counter 100000; call counter get 10000; stop",
    );
    let scenario = Scenario::agents(TICK, &format!("{}{COUNTER}{client}", priced("suspend")));
    let run = scenario.run_until_exit_of("client");
    assert_eq!(run.outcome("client", "repeat 800 send counter inc"), "ok", "nothing is refused");
    assert_eq!(run.outcome("client", "call counter get 300"), "error timeout", "the counter waits for money");
    assert_eq!(run.outcome("client", "call counter get 10000"), "reply 800", "every held message is handled");
}

#[test]
fn a_callback_that_outruns_its_wallet_ends_unpaid() {
    // Slices of 10 M fuel, topped up every 1 ms tick: the spin (hundreds of millions of fuel)
    // runs until its 20,000 credits (20 M fuel) are spent.
    let spender = probe("spender", 20_000, "spin 1000000000; stop");
    let scenario = Scenario::agents(TICK, &format!("{}{spender}", priced("refuse")));
    let run = scenario.run_until_exit_of("spender");
    assert_eq!(run.exit("spender")["reason"], "unpaid");
    assert!(run.exit("spender")["detail"].as_str().unwrap_or_default().contains("fuel"), "{}", run.exit("spender"));
}

#[test]
fn an_isolated_job_is_paid_by_its_caller() {
    let grants = "[\"messaging\", \"logging\", \"economics\", \"supervision\"]";
    let caller = |name: &str, wallet: u64| {
        format!(
            "[[agent]]\nname = \"{name}\"\nmodule = \"probe\"\nrestart = \"temporary\"\nwallet = {wallet}\n\
             grants = {grants}\nconfig = {{ script = \"wallet; isolated echo hello 1048576 1000; wallet; stop\" }}\n"
        )
    };
    // The poor caller's start buys all its 6,000 credits of fuel: nothing is left for a job.
    let agents = format!("{}{}{}", priced("refuse"), caller("rich", 1_000_000), caller("poor", 6_000));
    let run = Scenario::agents(TICK, &agents).run_until_exit_of_all(&["rich", "poor"]);
    assert_eq!(run.outcome("rich", "isolated echo hello 1048576 1000"), "output hello");
    let balances: Vec<u64> = run
        .logs("rich")
        .iter()
        .filter_map(|l| l.strip_prefix("probe: wallet => balance "))
        .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        balances.len() == 2 && balances[1] < balances[0],
        "the job's fuel came out of its caller's wallet: {balances:?}"
    );
    let refused = run.outcome("poor", "isolated echo hello 1048576 1000");
    assert!(refused.starts_with("error JobError::Failed(\"unpaid:"), "{refused}");
}
