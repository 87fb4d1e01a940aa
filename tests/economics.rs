//! Economics through the manifest and the WIT contract: wallets, transfers and holds, compute
//! billed in fuel with each unpaid policy, and the ledger across a host restart.

use crate::common;

use common::Scenario;

fn probe(name: &str, wallet: u64, script: &str) -> String {
    format!(
        "[[agent]]\nname = \"{name}\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\nbudget = \"1h\"\nwallet = {wallet}\n\
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
const COUNTER: &str =
    "[[agent]]\nname = \"counter\"\nmodule = \"counter\"\nrestart = \"temporary\"\nsignificant = true\nwallet = 5500\n";

#[test]
fn transfers_and_holds_move_money_and_survive_a_restart() {
    let alice = probe(
        "alice",
        100,
        "await bob 10000; pay bob 30; pay bob 500; pay nobody 1; hold 50; wallet; capture bob 20; wallet; \
         hold 10; release-hold; release-hold; wallet; stop",
    );
    let bob = probe("bob", 0, "register bob; await-gone alice 30000; wallet; stop");
    // Deny by default: without the grant, no wallet call reaches the ledger.
    let outsider = "[[agent]]\nname = \"outsider\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n\
                    grants = [\"messaging\", \"logging\"]\nconfig = { script = \"wallet; pay alice 1; stop\" }\n";
    let scenario = Scenario::agents("", &format!("{alice}{bob}{outsider}"));
    let run = scenario.run_until_exit_of_all(&["alice", "bob", "outsider"]);
    assert_eq!(run.outcome("outsider", "wallet"), "error LedgerError::Denied");
    assert_eq!(run.outcome("outsider", "pay alice 1"), "error LedgerError::Denied");
    assert_eq!(run.outcome("bob", "wallet"), "balance 50 held 0", "paid 30, then 20 captured from a hold");
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
        "count 600 call counter inc 5000; pay counter 100000; until 10000 call counter get 5000; usage; stop",
    );
    let scenario = Scenario::agents(TICK, &format!("{}{COUNTER}{client}", priced("refuse")));
    let run = scenario.run_until_exit_of("client");
    let counted = run.outcome("client", "count 600 call counter inc 5000");
    let value: u64 =
        run.outcome("client", "until 10000 call counter get 5000").strip_prefix("reply ").unwrap().parse().unwrap();
    // Every increment the counter made was answered, and every other call refused: none lost.
    assert_eq!(counted, format!("counted [reply:{value},error unpaid:{}]", 600 - value), "counter at {value}");
    assert!(value > 0, "some increments were paid for");
    assert!(!run.events("agent_unpaid", Some("counter")).is_empty());
    assert!(!run.events("agent_funded", Some("counter")).is_empty());
    let usage = run.outcome("client", "usage");
    // `fuel F charged C`: F is what its earlier callbacks burned, C what it paid so far (this
    // callback's purchase ahead included): every unit burned was paid for, at 1 credit each.
    let words: Vec<u64> = usage.split(' ').filter_map(|w| w.parse().ok()).collect();
    let (fuel, charged) = (words[0], words[1]);
    assert!(fuel > 0, "{usage}");
    assert!(charged >= fuel.div_ceil(1000), "the client pays for its own compute: {usage}");
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
fn a_long_callback_with_money_buys_compute_as_it_goes() {
    // ~600 M fuel in one callback, bought at ticks while the loop runs (compiled code only sees
    // a top-up through the store's reserve; see billing::chunk).
    let spender = probe("spender", 10_000_000, "spin 50000000; stop");
    // A slice of 100 M fuel carries the loop well past its first 1 ms tick.
    let economics = priced("refuse").replace("compute_slice = 10000", "compute_slice = 100000");
    let scenario = Scenario::agents(TICK, &format!("{economics}{spender}"));
    let run = scenario.run_until_exit_of("spender");
    assert_eq!(run.exit("spender")["reason"], "normal", "{}", run.exit("spender"));
    assert!(run.outcome("spender", "spin 50000000").starts_with("spun"));
}

#[test]
fn an_isolated_job_is_paid_by_its_caller() {
    let grants = "[\"messaging\", \"logging\", \"economics\", \"supervision\"]";
    let caller = |name: &str, wallet: u64| {
        format!(
            "[[agent]]\nname = \"{name}\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\nwallet = {wallet}\n\
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

/// A probe that offers the capability `render` in the registry.
fn contractor(name: &str, script: &str) -> String {
    format!("{}capabilities = [\"render\"]\n", probe(name, 0, script))
}

#[test]
fn auctions_through_the_contract_settle_in_escrow() {
    // A Vickrey auction (winner pays the second price), then a Dutch clock held at 100 for an
    // hour: the first taker pays the clock, not its offer.
    let seller = probe(
        "seller",
        0,
        "auction-open vickrey 10 1500; bid 1 5; auction-wait 1 10000; auction-open dutch 10 5000 100 1 3600000; \
         auction-wait 2 10000; auction-cancel 2; wallet; stop",
    );
    let ann = probe("ann", 100, "until 5000 bid 1 70; wallet; auction-wait 1 10000; wallet; stop");
    let bob = probe("bob", 100, "until 5000 bid 1 40; auction-wait 1 10000; until 10000 bid 2 150; wallet; stop");
    let outsider = "[[agent]]\nname = \"outsider\"\nmodule = \"probe\"\nrestart = \"temporary\"\nsignificant = true\n\
                    grants = [\"messaging\", \"logging\"]\nconfig = { script = \"auction-open sealed 0 100; stop\" }\n";
    let run = Scenario::agents("", &format!("{seller}{ann}{bob}{outsider}"))
        .run_until_exit_of_all(&["seller", "ann", "bob", "outsider"]);
    assert_eq!(run.outcome("outsider", "auction-open sealed 0 100"), "error AuctionError::Denied");
    assert_eq!(run.outcome("seller", "auction-open vickrey 10 1500"), "auction 1");
    assert_eq!(run.outcome("seller", "bid 1 5"), "error AuctionError::OwnAuction");
    assert_eq!(run.outcome("ann", "until 5000 bid 1 70"), "bid 70");
    assert_eq!(run.outcome("ann", "wallet"), "balance 30 held 70", "a bid is held in escrow");
    assert_eq!(run.outcome("seller", "auction-wait 1 10000"), "sold ann 40", "the second price");
    let ann_after: Vec<String> = run.logs("ann").into_iter().filter(|l| l.starts_with("probe: wallet")).collect();
    assert_eq!(ann_after[1], "probe: wallet => balance 60 held 0", "paid 40, the rest of the escrow returned");
    assert_eq!(run.outcome("bob", "until 10000 bid 2 150"), "bid 100");
    assert_eq!(run.outcome("seller", "auction-wait 2 10000"), "sold bob 100");
    assert_eq!(run.outcome("seller", "auction-cancel 2"), "error AuctionError::Closed");
    assert_eq!(run.outcome("seller", "wallet"), "balance 140 held 0");
    assert_eq!(run.outcome("bob", "wallet"), "balance 0 held 0");
}

#[test]
fn the_task_market_pays_on_completion_and_refunds_failure_and_timeout() {
    // Task 1 goes to the lower price and is delivered; task 2 is given up; task 3 is never
    // reported and times out. Bidding windows are long next to a proposal's few milliseconds.
    let boss = probe(
        "boss",
        1000,
        "announce render 100 1000 5000 lowest; task-wait 1 10000; wallet; \
         announce render 100 1000 5000 lowest; task-wait 2 10000; \
         announce render 100 500 1500 lowest; task-wait 3 10000; wallet; await-gone cheap 30000; reputation cheap; stop",
    );
    let cheap = contractor(
        "cheap",
        "until 10000 offer 1 40 100; until 10000 complete 1 rendered; until 10000 offer 2 40 100; \
         until 10000 give-up 2 broken; until 10000 offer 3 40 100; wallet; panic",
    );
    let dear = contractor("dear", "until 10000 offer 1 60 100; task-wait 1 10000; complete 1 late; stop");
    let run = Scenario::agents("", &format!("{cheap}{dear}{boss}")).run_until_exit_of_all(&["boss", "cheap", "dear"]);
    assert_eq!(run.outcome("boss", "announce render 100 1000 5000 lowest"), "task 1");
    assert_eq!(run.outcome("cheap", "until 10000 complete 1 rendered"), "paid 40");
    assert_eq!(run.outcome("boss", "task-wait 1 10000"), "completed cheap 40 rendered");
    assert_eq!(run.outcome("dear", "complete 1 late"), "error MarketError::NotContractor");
    assert_eq!(
        run.outcome("boss", "task-wait 2 10000"),
        "TaskState::Failed(Failure { contractor: \"cheap\", reason: \"broken\" })"
    );
    assert_eq!(run.outcome("boss", "task-wait 3 10000"), "TaskState::TimedOut(\"cheap\")");
    let wallets: Vec<String> = run.logs("boss").into_iter().filter(|l| l.starts_with("probe: wallet")).collect();
    assert_eq!(
        wallets,
        ["probe: wallet => balance 960 held 0", "probe: wallet => balance 960 held 0"],
        "paid 40 for task 1; the escrow of tasks 2 and 3 came back"
    );
    assert_eq!(run.outcome("cheap", "wallet"), "balance 40 held 0");
    // One delivery, two failures: (1 + 1) / (1 + 2 + 2); the record outlives the instance that
    // earned it (cheap crashed at the end), as it is kept by name.
    assert_eq!(run.exit("cheap")["reason"], "panic");
    assert_eq!(run.outcome("boss", "await-gone cheap 30000"), "gone");
    assert_eq!(run.outcome("boss", "reputation cheap"), "score 0.400 completed 1 failed 2");
}

/// The market demo: clients, a seller and contractors trade under supervision until the clients
/// and the seller are done; the summary accounts for every task and auction, and for the money.
#[test]
fn the_market_example_runs_and_conserves_money() {
    common::agent("trader");
    let example = common::workspace().join("examples/market.toml");
    let run = common::run_agora(&["run", example.to_str().unwrap()]);
    run.assert_success();
    let summary = &run.stdout;
    // How many sell, and at what price, depends on the bidders' wallets by then; that all end does not.
    assert!(summary.contains(" 4 auctions (") && summary.contains(", 16 tasks ("), "{summary}");
    assert!(summary.contains("money: 3000 minted, 3000 in wallets and holds (conserved)"), "{summary}");
    for client in ["alice", "bob"] {
        assert!(run.stderr.contains(&format!("{client}: all 8 tasks ended")), "{client} finished: {}", run.stderr);
    }
}

/// A probe that logs every notice it is sent (`report_messages`), and stays up after its script.
fn listening(name: &str, wallet: u64, extra: &str, script: &str) -> String {
    format!(
        "[[agent]]\nname = \"{name}\"\nmodule = \"probe\"\nrestart = \"temporary\"\nbudget = \"1h\"\nwallet = {wallet}\n{extra}\
         grants = [\"messaging\", \"logging\", \"registry\", \"economics\"]\n\
         config = {{ script = \"{script}\", report_messages = \"true\" }}\n"
    )
}

#[test]
fn bidders_sellers_contractors_and_announcers_are_told_by_notices() {
    // An English auction: bob bids 20, ann outbids him with 30 and wins at her bid.
    let seller = listening("seller", 0, "", "auction-open english 10 1500 5; register opened; log opened");
    let bob = listening("bob", 100, "", "await opened 10000; bid 1 20; register bob-bid");
    let ann = listening("ann", 100, "", "await bob-bid 10000; bid 1 30");
    // A task for "render": two contractors propose, the cheaper wins and delivers.
    let boss =
        listening("boss", 1000, "", "await cheap-up 10000; await dear-up 10000; announce render 100 500 5000 lowest");
    let capable = "capabilities = [\"render\"]\n";
    let cheap =
        listening("cheap", 0, capable, "register cheap-up; until 10000 offer 1 40 100; until 10000 complete 1 done");
    let dear = listening("dear", 0, capable, "register dear-up; until 10000 offer 1 60 100");
    let told = |run: &common::Run, agent: &str| -> Vec<String> {
        run.logs(agent).into_iter().filter(|l| l.starts_with("probe got [agora:")).collect()
    };
    let scenario = Scenario::agents("", &format!("{seller}{bob}{ann}{boss}{cheap}{dear}"));
    // Until the boss heard the task completed and every party of the auction heard it sold.
    let seen = std::cell::Cell::new(0u8);
    let run = scenario.run_until(|e| {
        let message = e["message"].as_str().unwrap_or_default();
        let bit = match e["agent"].as_str() {
            Some("boss") if message.starts_with("probe got [agora:market] MarketNotice::Completed") => 1,
            Some("seller") if message.contains("AuctionNotice::Sold") => 2,
            Some("bob") if message.contains("AuctionNotice::Sold") => 4,
            Some("ann") if message.contains("AuctionNotice::Sold") => 8,
            _ => 0,
        };
        seen.set(seen.get() | bit);
        seen.get() == 15
    });
    let sold = "probe got [agora:auction] AuctionNotice::Sold(AuctionSold { auction: 1, winner: \"ann\", price: 30 })";
    assert!(told(&run, "seller").contains(&sold.to_string()), "{:#?}", told(&run, "seller"));
    let bob_told = told(&run, "bob");
    assert_eq!(
        bob_told.first().map(String::as_str),
        Some("probe got [agora:auction] AuctionNotice::Outbid(Outbid { auction: 1, by: 30 })")
    );
    assert!(bob_told.contains(&sold.to_string()), "{bob_told:#?}");
    assert!(told(&run, "ann").contains(&sold.to_string()), "{:#?}", told(&run, "ann"));
    assert!(told(&run, "ann").iter().all(|l| !l.contains("Outbid")), "the leader is never outbid");

    let cheap_told = told(&run, "cheap");
    assert_eq!(
        cheap_told[..2],
        [
            "probe got [agora:market] MarketNotice::CallForProposals(1)",
            "probe got [agora:market] MarketNotice::Awarded(1)"
        ]
    );
    assert_eq!(
        told(&run, "dear"),
        [
            "probe got [agora:market] MarketNotice::CallForProposals(1)",
            "probe got [agora:market] MarketNotice::Lost(1)"
        ]
    );
    let boss_told = told(&run, "boss");
    assert_eq!(boss_told.len(), 1, "{boss_told:#?}");
    assert!(boss_told[0].contains("contractor: \"cheap\"") && boss_told[0].contains("price: 40"), "{boss_told:#?}");
}
