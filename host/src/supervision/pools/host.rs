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
    pools: DashMap<String, Listed>,
}

/// A running pool as the directory lists it.
#[derive(Clone)]
struct Listed {
    requests: mpsc::UnboundedSender<Request>,
    /// Its `checkout_timeout`, for a checkout that names none.
    timeout: Duration,
}

impl PoolDirectory {
    pub(super) fn open(&self, name: &str, requests: mpsc::UnboundedSender<Request>, timeout: Duration) {
        self.pools.insert(name.to_string(), Listed { requests, timeout });
    }

    pub(super) fn close(&self, name: &str) {
        self.pools.remove(name);
    }

    fn pool(&self, name: &str) -> Result<Listed, PoolError> {
        self.pools.get(name).map(|p| p.clone()).ok_or(PoolError::NotFound)
    }

    /// Ask `pool` and wait for its answer; a pool that stops meanwhile answers `stopped`.
    async fn ask<T>(pool: &Listed, request: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, PoolError> {
        let (reply, answer) = oneshot::channel();
        pool.requests.send(request(reply)).map_err(|_| PoolError::Stopped)?;
        answer.await.map_err(|_| PoolError::Stopped)
    }

    /// The status of pool `name`.
    pub async fn status(&self, name: &str) -> Result<PoolStatus, PoolError> {
        Self::ask(&self.pool(name)?, |reply| Request::Status { reply }).await
    }

    /// Every running pool's status, by name; a pool that does not answer within `patience`
    /// is left out (its task is busy or stopping), so that a reader never waits on one.
    pub async fn statuses(&self, patience: Duration) -> Vec<(String, PoolStatus)> {
        let pools: Vec<(String, Listed)> = self.pools.iter().map(|p| (p.key().clone(), p.value().clone())).collect();
        let mut all = Vec::with_capacity(pools.len());
        for (name, pool) in pools {
            let asked = Self::ask(&pool, |reply| Request::Status { reply });
            if let Ok(Ok(status)) = tokio::time::timeout(patience, asked).await {
                all.push((name, status));
            }
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
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
                let _ = pool.requests.send(Request::HolderExited { holder: agent.id });
            }
        }
    }
}

impl Hooks for Pooling {}

crate::capabilities::denied_is_denied!(PoolError => "pools");

impl pools::Host for View<'_, Pooling> {
    async fn checkout(&mut self, pool: String, timeout_ms: Option<u32>) -> Result<AgentId, PoolError> {
        self.require()?;
        let listed = self.shared.pool(&pool)?;
        let timeout = timeout_ms.map_or(listed.timeout, |ms| Duration::from_millis(u64::from(ms)));
        // Named before the request goes: an exit from here on returns whatever it is lent.
        if !self.state.pools.contains(&pool) {
            self.state.pools.push(pool);
        }
        let holder = self.id;
        PoolDirectory::ask(&listed, |reply| Request::Checkout { holder, timeout, reply }).await?
    }

    async fn checkin(&mut self, pool: String, worker: AgentId) -> Result<(), PoolError> {
        self.require()?;
        let holder = self.id;
        PoolDirectory::ask(&self.shared.pool(&pool)?, |reply| Request::Checkin { holder, worker, reply }).await?
    }

    async fn status(&mut self, pool: String) -> Result<PoolStatus, PoolError> {
        self.require()?;
        self.shared.status(&pool).await
    }
}
