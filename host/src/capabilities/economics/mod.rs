//! The economics capability (grant "economics"): money that is conserved and compute that is
//! paid for. Each agent has a wallet in the [`ledger`] (an integer balance and holds, moved only
//! by durable double-entry records in the [`journal`]); with `compute_price` set, every
//! instance's fuel is metered and its wallet pays for it ([`billing`]).

pub mod auctions;
pub mod billing;
pub mod journal;
pub mod ledger;
pub mod market;
pub mod reputation;

use std::path::Path;

use serde::Deserialize;

use crate::capabilities::Grant;
use crate::runtime::bindings::ledger::{self as wit, ComputeUsage, Funds as WitFunds, LedgerError as WitError};
use crate::runtime::state::AgentState;
use ledger::{HoldId, Ledger, LedgerError};

/// What happens to messages for an agent whose wallet cannot pay for its compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UnpaidPolicy {
    /// Refuse them with the typed error `unpaid` (queued ones too) until it is funded.
    #[default]
    Refuse,
    /// Keep them queued (the mailbox bound still applies) until it is funded.
    Suspend,
}

/// `[economics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EconomicsSettings {
    /// The currency's name, for people.
    pub currency: String,
    /// Credits per `compute_unit` of fuel; 0 leaves compute free and unmetered.
    pub compute_price: u64,
    pub compute_unit: u64,
    /// Units a store fills up to at a time. A slice must outlast an epoch tick of busy compute
    /// (the default, 100 M fuel, lasts ~50 ms of a tight loop here; a tick is 10 ms).
    pub compute_slice: u64,
    pub unpaid: UnpaidPolicy,
    /// Keep the ledger in `<data_dir>/ledger.redb` (else in memory, gone at exit).
    pub durable: bool,
}

impl Default for EconomicsSettings {
    fn default() -> Self {
        EconomicsSettings {
            currency: "credits".into(),
            compute_price: 0,
            compute_unit: 1_000_000,
            compute_slice: 100,
            unpaid: UnpaidPolicy::Refuse,
            durable: true,
        }
    }
}

impl EconomicsSettings {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.compute_unit == 0 {
            return Err(("economics.compute_unit", "must be at least 1 (fuel)".into()));
        }
        if self.compute_slice == 0 {
            return Err(("economics.compute_slice", "must be at least 1 (unit)".into()));
        }
        Ok(())
    }

    /// Whether instances burn fuel (an engine setting, fixed for the host's life).
    pub fn meters_compute(&self) -> bool {
        self.compute_price > 0
    }
}

/// The price of compute, when it has one.
#[derive(Debug, Clone, Copy)]
pub struct Pricing {
    pub price: u64,
    pub unit: u64,
    pub slice: u64,
}

impl Pricing {
    pub fn slice_fuel(&self) -> u64 {
        self.unit.saturating_mul(self.slice)
    }
}

pub struct Economics {
    pub ledger: Ledger,
    pub settings: EconomicsSettings,
}

impl Economics {
    /// `durable = false` keeps the ledger in memory whatever the settings say (`agora check`).
    pub fn open(settings: &EconomicsSettings, data_dir: &Path, durable: bool) -> Result<Economics, LedgerError> {
        let path = data_dir.join("ledger.redb");
        let ledger = Ledger::open((settings.durable && durable).then_some(path.as_path()))?;
        Ok(Economics { ledger, settings: settings.clone() })
    }

    pub fn pricing(&self) -> Option<Pricing> {
        let s = &self.settings;
        s.meters_compute().then_some(Pricing { price: s.compute_price, unit: s.compute_unit, slice: s.compute_slice })
    }
}

fn error(error: LedgerError) -> WitError {
    match error {
        LedgerError::NoWallet(_) | LedgerError::NoHold(_) => WitError::NotFound,
        LedgerError::InsufficientFunds { needed: _, available } => {
            WitError::InsufficientFunds(WitFunds { balance: available, held: 0 })
        }
        LedgerError::Invalid(why) => WitError::Invalid(why),
        LedgerError::Journal(why) => WitError::Unavailable(why.to_string()),
    }
}

impl AgentState {
    fn require_economics(&self) -> Result<(), WitError> {
        if self.grants.allows(Grant::Economics) { Ok(()) } else { Err(WitError::Denied) }
    }

    fn own_hold(&self, number: u64) -> HoldId {
        HoldId { owner: self.name.clone(), number }
    }
}

fn memo(memo: &str) -> Result<&str, WitError> {
    if memo.len() > 256 { Err(WitError::Invalid("a memo is at most 256 bytes".into())) } else { Ok(memo) }
}

impl wit::Host for AgentState {
    fn wallet(&mut self) -> Result<WitFunds, WitError> {
        self.require_economics()?;
        let funds = self.runtime.services.economics.ledger.funds(&self.name).ok_or(WitError::NotFound)?;
        Ok(WitFunds { balance: funds.balance, held: funds.held })
    }

    async fn transfer(&mut self, to: String, amount: u64, note: String) -> Result<u64, WitError> {
        self.require_economics()?;
        let runtime = self.runtime.clone();
        let ledger = &runtime.services.economics.ledger;
        ledger.transfer(&self.name, &to, amount, memo(&note)?).await.map_err(error)
    }

    async fn hold(&mut self, amount: u64, note: String) -> Result<u64, WitError> {
        self.require_economics()?;
        let runtime = self.runtime.clone();
        let hold = runtime.services.economics.ledger.hold(&self.name, amount, memo(&note)?).await.map_err(error)?;
        Ok(hold.number)
    }

    async fn release(&mut self, hold: u64) -> Result<(), WitError> {
        self.require_economics()?;
        let runtime = self.runtime.clone();
        runtime
            .services
            .economics
            .ledger
            .release(&self.own_hold(hold), "released by its owner")
            .await
            .map_err(error)?;
        Ok(())
    }

    async fn capture(&mut self, hold: u64, to: String, amount: u64) -> Result<(), WitError> {
        self.require_economics()?;
        let runtime = self.runtime.clone();
        let ledger = &runtime.services.economics.ledger;
        ledger.capture(&self.own_hold(hold), &to, amount, "captured by its owner").await.map_err(error)?;
        Ok(())
    }

    fn usage(&mut self) -> ComputeUsage {
        let charged = self.meter.as_ref().map_or(0, |meter| meter.charged);
        ComputeUsage { fuel: self.fuel_used, charged }
    }
}
