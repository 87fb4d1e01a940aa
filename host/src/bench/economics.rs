//! Benchmarks of the economy, each next to its baseline:
//!
//! - `ledger_transfer`: durable transfers from many concurrent payers (group commit) against
//!   one payer waiting for each commit.
//! - `auction_bids_10k`: English bids per second per core over 10,000 open auctions against
//!   the same bidders over one auction per bidder pair: nothing shared between auctions may
//!   slow bidding down as they multiply. In-memory ledger, so that the journal's fsync does not
//!   hide the auctions' own cost.
//! - `metering_overhead`: a CPU-bound guest loop with compute billed in fuel against the same
//!   loop on an engine without fuel.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Report;
use super::services::probe_loop;
use crate::capabilities::economics::auctions::{Auctions, Format, Party, Terms};
use crate::capabilities::economics::ledger::Ledger;
use crate::capabilities::{Grants, ServiceSections};
use crate::runtime::Runtime;
use crate::runtime::modules::Module;

pub async fn transfers(runtime: &Runtime, report: &Report) -> anyhow::Result<()> {
    const PAYERS: usize = 256;
    const TRANSFERS: usize = 200_000;
    let dir = runtime.settings.data_dir.join("bench-ledger");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let ledger = Arc::new(Ledger::open(Some(&dir.join("ledger.redb")))?);
    let names: Vec<String> = (0..PAYERS * 2).map(|i| format!("wallet-{i}")).collect();
    for name in &names {
        ledger.open_wallet(name, 1 << 40).await?;
    }

    let started = Instant::now();
    let mut single = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        ledger.transfer(&names[0], &names[1], 1, "bench").await?;
        single += 1;
    }
    let baseline = single as f64 / started.elapsed().as_secs_f64();

    let names = Arc::new(names);
    let started = Instant::now();
    let payers: Vec<_> = (0..PAYERS)
        .map(|payer| {
            let (ledger, names) = (ledger.clone(), names.clone());
            tokio::spawn(async move {
                for _ in 0..TRANSFERS / PAYERS {
                    ledger.transfer(&names[2 * payer], &names[2 * payer + 1], 1, "bench").await?;
                }
                Ok::<_, crate::capabilities::economics::ledger::LedgerError>(())
            })
        })
        .collect();
    for payer in payers {
        payer.await??;
    }
    let rate = (TRANSFERS / PAYERS * PAYERS) as f64 / started.elapsed().as_secs_f64();
    let (total, minted) = ledger.totals();
    anyhow::ensure!(total == minted, "money was not conserved: {total} against {minted}");
    let note = format!("({PAYERS} concurrent payers, each transfer acknowledged once durable; baseline: one payer)");
    report.figure("ledger_transfer", rate, "transfers/s", Some(baseline), &note);
    drop(ledger);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Bids/s per core: `BIDDERS_PER_CORE` tasks per core, each driving its share of `auctions`
/// with a pair of wallets that take turns outbidding each other by 1.
async fn bids_per_core(auctions_count: usize, bids: u64) -> anyhow::Result<f64> {
    const BIDDERS_PER_CORE: usize = 16;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let tasks = BIDDERS_PER_CORE * cores;
    let ledger = Arc::new(Ledger::open(None)?);
    let auctions = Auctions::new(ledger.clone(), Arc::new(crate::messaging::Router::new(1 << 20)));
    let seller = Party { id: u64::MAX, name: "seller".into() };
    ledger.open_wallet(&seller.name, 0).await?;
    let terms = Terms {
        item: "slot".into(),
        format: Format::English { min_increment: 1, soft_close: Duration::ZERO },
        reserve: 0,
        duration: Duration::from_secs(3600),
    };
    let mut work = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let pair: [Party; 2] = std::array::from_fn(|side| Party {
            id: (task * 2 + side) as u64,
            name: format!("bidder-{task}-{side}").into(),
        });
        for party in &pair {
            ledger.open_wallet(&party.name, 1 << 50).await?;
        }
        let own = (auctions_count / tasks).max(1);
        let ids: Vec<u64> = (0..own).map(|_| auctions.open(seller.clone(), terms.clone())).collect::<Result<_, _>>()?;
        work.push((pair, ids));
    }
    let per_task = bids / tasks as u64;
    let started = Instant::now();
    let bidders: Vec<_> = work
        .into_iter()
        .map(|(pair, ids)| {
            let auctions = auctions.clone();
            tokio::spawn(async move {
                for bid in 0..per_task {
                    let (round, at) = (bid / ids.len() as u64, bid as usize % ids.len());
                    auctions.bid(ids[at], &pair[(round % 2) as usize], round + 1).await?;
                }
                Ok::<_, crate::capabilities::economics::auctions::AuctionError>(())
            })
        })
        .collect();
    for bidder in bidders {
        bidder.await??;
    }
    Ok((per_task * tasks as u64) as f64 / started.elapsed().as_secs_f64() / cores as f64)
}

pub async fn auction_bids(report: &Report) -> anyhow::Result<()> {
    const BIDS: u64 = 400_000;
    let few = bids_per_core(0, BIDS).await?;
    let many = bids_per_core(10_000, BIDS).await?;
    let note = format!(
        "(English bids over 10,000 open auctions: {:.2}x; baseline: the same bidders, one auction per pair)",
        many / few
    );
    report.figure("auction_bids_10k", many, "bids/s per core", Some(few), &note);
    Ok(())
}

pub async fn metering(runtime: &Arc<Runtime>, probe_path: &Path, report: &Report) -> anyhow::Result<()> {
    const ROUNDS: u64 = 200_000_000;
    let grants = Grants::NONE.with(crate::capabilities::Grant::of::<crate::capabilities::logging::Logging>());
    let script = format!("spin {ROUNDS}");
    let probe = runtime.module("probe").ok_or_else(|| anyhow::anyhow!("the probe module is not loaded"))?;
    let free = probe_loop(runtime, &probe, script.clone(), ROUNDS, grants, "bench-unmetered").await?;

    // An engine that counts fuel, and a price for it: a small pool, its own data directory.
    let mut sections = ServiceSections::default();
    sections.economics.compute_price = 1;
    sections.economics.durable = false;
    let settings = crate::manifest::HostSettings {
        data_dir: runtime.settings.data_dir.join("bench-metered"),
        max_agents: 16,
        ..crate::manifest::HostSettings::default()
    };
    let mut metered = Runtime::with_services(settings, &sections, false)?;
    let metered_probe: Module = metered.add_module("probe", probe_path)?;
    let metered = Arc::new(metered);
    let billed = probe_loop(&metered, &metered_probe, script, ROUNDS, grants, "bench-metered").await?;
    let charged = metered.services.economics.ledger.funds("host:compute").map_or(0, |funds| funds.balance);
    anyhow::ensure!(charged > 0, "the metered loop was not billed");
    let note = format!(
        "(guest arithmetic loop, ns per round, compute billed at 1 credit per 1 M fuel: {:.2}x; baseline: an engine without fuel)",
        billed / free
    );
    report.figure("metering_overhead", billed, "ns", Some(free), &note);
    Ok(())
}
