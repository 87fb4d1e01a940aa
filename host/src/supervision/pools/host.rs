//! The `pools` interface as the guest sees it, served as a capability. Grant: "pools". The
//! capability owns `[pools.<name>]` (its tables become children of the root supervisor, see
//! `manifest::tree`); its shared state is the directory of running pools, and per agent it
//! keeps the pools it checked out from, so that its exit returns what it holds.

use std::collections::BTreeMap;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};

use super::Request;
use crate::bindings::pools::{self, PoolError, PoolStatus};
use crate::capabilities::hooks::Hooks;
use crate::capabilities::{Capability, Entering, Getter, Leaving, Served, Startup, View};
use crate::manifest::RawPool;
use crate::messaging::AgentId;
use crate::runtime::state::AgentState;

/// Worker pools as a capability.
pub struct Pooling;

/// The running pools, by name.
#[derive(Default)]
pub struct PoolDirectory {
    pools: DashMap<String, mpsc::UnboundedSender<Request>>,
    /// Each pool's `checkout_timeout`, for a checkout that names none.
    timeouts: DashMap<String, Duration>,
}

impl PoolDirectory {
    pub(super) fn open(&self, name: &str, requests: mpsc::UnboundedSender<Request>, timeout: Duration) {
        self.timeouts.insert(name.to_string(), timeout);
        self.pools.insert(name.to_string(), requests);
    }

    pub(super) fn close(&self, name: &str) {
        self.pools.remove(name);
        self.timeouts.remove(name);
    }

    fn pool(&self, name: &str) -> Result<mpsc::UnboundedSender<Request>, PoolError> {
        self.pools.get(name).map(|p| p.clone()).ok_or(PoolError::NotFound)
    }

    /// Ask pool `name` and wait for its answer; a pool that stops meanwhile answers `stopped`.
    pub async fn ask<T>(
        &self,
        name: &str,
        request: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, PoolError> {
        let pool = self.pool(name)?;
        let (reply, answer) = oneshot::channel();
        pool.send(request(reply)).map_err(|_| PoolError::Stopped)?;
        answer.await.map_err(|_| PoolError::Stopped)
    }

    /// The status of pool `name` (for operators and the Rust API).
    pub async fn status(&self, name: &str) -> Result<PoolStatus, PoolError> {
        self.ask(name, |reply| Request::Status { reply }).await
    }

    /// The pools running now, by name.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.pools.iter().map(|p| p.key().clone()).collect();
        names.sort();
        names
    }
}

/// The pools an agent has checked out from (each named once).
#[derive(Default)]
pub struct Borrower {
    pools: Vec<String>,
}

impl Capability for Pooling {
    const GRANT: Option<&'static str> = Some("pools");
    type Section = BTreeMap<String, RawPool>;
    type Shared = PoolDirectory;
    type Agent = Borrower;

    fn start(_section: &Self::Section, _host: &Startup<'_>) -> anyhow::Result<PoolDirectory> {
        // The pools themselves start with the supervision tree, as children of its root.
        Ok(PoolDirectory::default())
    }

    fn link(linker: &mut wasmtime::component::Linker<AgentState>, get: Getter<Self>) -> wasmtime::Result<()> {
        pools::add_to_linker::<_, Served<Self>>(linker, get)
    }

    fn enter(_shared: &PoolDirectory, _agent: &Entering<'_>) -> Borrower {
        Borrower::default()
    }

    /// Its checkouts go back, and its waiting checkouts end (poolboy's monitor of the caller).
    fn leave(shared: &PoolDirectory, state: &mut Borrower, agent: &Leaving<'_>) {
        for name in std::mem::take(&mut state.pools) {
            if let Ok(pool) = shared.pool(&name) {
                let _ = pool.send(Request::HolderExited { holder: agent.id });
            }
        }
    }
}

impl Hooks for Pooling {}

crate::capabilities::denied_is_denied!(PoolError => "pools");

impl pools::Host for View<'_, Pooling> {
    async fn checkout(&mut self, pool: String, timeout_ms: Option<u32>) -> Result<AgentId, PoolError> {
        self.require()?;
        let timeout = match timeout_ms {
            Some(ms) => Duration::from_millis(u64::from(ms)),
            None => self.shared.timeouts.get(&pool).map(|t| *t).ok_or(PoolError::NotFound)?,
        };
        // Named before the request goes: an exit from here on returns whatever it is lent.
        if !self.state.pools.contains(&pool) {
            self.state.pools.push(pool.clone());
        }
        let holder = self.id;
        self.shared.ask(&pool, |reply| Request::Checkout { holder, timeout, reply }).await?
    }

    async fn checkin(&mut self, pool: String, worker: AgentId) -> Result<(), PoolError> {
        self.require()?;
        let holder = self.id;
        self.shared.ask(&pool, |reply| Request::Checkin { holder, worker, reply }).await?
    }

    async fn status(&mut self, pool: String) -> Result<PoolStatus, PoolError> {
        self.require()?;
        self.shared.status(&pool).await
    }
}
