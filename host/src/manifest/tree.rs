//! The supervision tree as the manifest declares it.
//!
//! `[supervisor]` is the root; `[[supervisor.children]]` are its children, each an agent (it
//! has a `module`) or a supervisor (it has none, and may have `children` of its own). Top-level
//! `[[agent]]` tables are shorthand for children of the root. Defaults follow OTP: strategy
//! `one_for_one`, intensity 1 restart per period of 5s, children `permanent`, agents shut down
//! within 5s, supervisors given all the time their children need.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{AgentSpec, ByteSize, HostSettings, Limits, Locator, ManifestError, Span};
use crate::capabilities::{Grants, ServiceSections};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Restart only the child that exited.
    OneForOne,
    /// Stop all other children (in reverse start order), then restart all.
    OneForAll,
    /// Stop the children started after the one that exited, then restart it and them.
    RestForOne,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always restarted.
    #[default]
    Permanent,
    /// Restarted only after an abnormal exit (not `normal` or `shutdown`).
    Transient,
    /// Never restarted.
    Temporary,
}

/// How long a child may take to `terminate` when its supervisor stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Killed at once, without `terminate`.
    BrutalKill,
    /// Killed if it has not exited within this time.
    Timeout(Duration),
    /// Waited for as long as it takes (the default for supervisors).
    Infinity,
}

impl<'de> Deserialize<'de> for Shutdown {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.as_str() {
            "brutal_kill" => Ok(Shutdown::BrutalKill),
            "infinity" => Ok(Shutdown::Infinity),
            other => super::units::parse_span(other).map(Shutdown::Timeout).map_err(|e| {
                serde::de::Error::custom(format!("invalid shutdown: {e}; or use \"infinity\" or \"brutal_kill\""))
            }),
        }
    }
}

/// OTP 24's `auto_shutdown`: whether a supervisor ends by itself once its significant children
/// have exited for good. Never, by default: a supervisor without running children stays up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AutoShutdown {
    #[default]
    Never,
    /// When any significant child exits and is not restarted.
    AnySignificant,
    /// When every significant child has exited and none will be restarted.
    AllSignificant,
}

/// Agora's extension: wait before a restart, doubling from `initial` up to `max` while the child
/// keeps failing. Off unless configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

#[derive(Debug, Clone)]
pub struct SupervisorSpec {
    pub name: String,
    pub strategy: Strategy,
    /// At most `intensity` restarts within `period`; one more and the supervisor gives up.
    pub intensity: u32,
    pub period: Duration,
    pub backoff: Option<Backoff>,
    /// How its own parent treats it.
    pub restart: Restart,
    pub shutdown: Shutdown,
    pub children: Vec<ChildSpec>,
    /// Set for a dynamic supervisor: children are spawned at runtime, at most this many at once.
    pub max_children: Option<u32>,
    pub auto_shutdown: AutoShutdown,
    /// Its exit for good counts towards its parent's `auto_shutdown`.
    pub significant: bool,
}

#[derive(Debug, Clone)]
pub enum ChildSpec {
    /// Shared with every incarnation's store: a start does not copy it.
    Agent(std::sync::Arc<AgentSpec>),
    Supervisor(SupervisorSpec),
    /// A worker pool (`[pools.<name>]`): a child of the root, started before the others.
    Pool(std::sync::Arc<PoolSpec>),
}

/// `[pools.<name>]`: poolboy's pool of `size` workers of one module, and up to `overflow` more
/// while all are checked out.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub name: String,
    /// What each worker runs as: its module, config, limits and grants; its name is the pool's,
    /// and each worker is registered as `<pool>.<n>`.
    pub worker: std::sync::Arc<AgentSpec>,
    pub size: u32,
    pub overflow: u32,
    /// How long a checkout waits for a worker when it does not say.
    pub checkout_timeout: Duration,
    pub strategy: PoolStrategy,
    /// How its supervisor treats the pool itself (permanent unless said).
    pub restart: Restart,
    /// How long the pool may take to stop its workers (each by its own `worker_shutdown`).
    pub shutdown: Shutdown,
}

/// Which free worker a checkout gets: the one returned last (`lifo`, poolboy's default: a few
/// warm workers do the work) or the one free longest (`fifo`: the work is spread evenly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PoolStrategy {
    #[default]
    Lifo,
    Fifo,
}

/// A `[pools.<name>]` table as written: the pool's keys, and the keys an `[[agent]]` takes for
/// what its workers run as.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    module: Option<Spanned<String>>,
    size: Option<Spanned<u32>>,
    overflow: Option<Spanned<u32>>,
    checkout_timeout: Option<Spanned<Span>>,
    strategy: Option<PoolStrategy>,
    restart: Option<Spanned<Restart>>,
    shutdown: Option<Shutdown>,
    // Each worker's.
    config: Option<Spanned<toml::Table>>,
    capabilities: Option<Spanned<Vec<String>>>,
    memory: Option<Spanned<ByteSize>>,
    mailbox: Option<Spanned<u32>>,
    budget: Option<Spanned<Span>>,
    grants: Option<Vec<Spanned<String>>>,
    outbound: Option<Vec<Spanned<String>>>,
    worker_shutdown: Option<Shutdown>,
}

/// A pool holds at most this many workers with its overflow: each is a live agent.
pub const MAX_POOL_WORKERS: u32 = 100_000;

impl ChildSpec {
    pub fn name(&self) -> &str {
        match self {
            ChildSpec::Agent(agent) => &agent.name,
            ChildSpec::Supervisor(supervisor) => &supervisor.name,
            ChildSpec::Pool(pool) => &pool.name,
        }
    }

    pub fn restart(&self) -> Restart {
        match self {
            ChildSpec::Agent(agent) => agent.restart,
            ChildSpec::Supervisor(supervisor) => supervisor.restart,
            ChildSpec::Pool(pool) => pool.restart,
        }
    }

    pub fn significant(&self) -> bool {
        match self {
            ChildSpec::Agent(agent) => agent.significant,
            ChildSpec::Supervisor(supervisor) => supervisor.significant,
            ChildSpec::Pool(_) => false,
        }
    }

    /// How its supervisor stops it.
    pub fn shutdown(&self) -> Shutdown {
        match self {
            ChildSpec::Agent(agent) => agent.shutdown,
            ChildSpec::Supervisor(supervisor) => supervisor.shutdown,
            ChildSpec::Pool(pool) => pool.shutdown,
        }
    }
}

impl SupervisorSpec {
    pub fn is_dynamic(&self) -> bool {
        self.max_children.is_some()
    }

    /// Every agent in the tree, depth first in start order.
    pub fn agents(&self) -> Vec<&AgentSpec> {
        let mut agents = Vec::new();
        for child in &self.children {
            match child {
                ChildSpec::Agent(agent) => agents.push(&**agent),
                ChildSpec::Supervisor(supervisor) => agents.extend(supervisor.agents()),
                ChildSpec::Pool(pool) => agents.push(&*pool.worker),
            }
        }
        agents
    }
}

/// A child table: an agent or a supervisor. One struct for both, so that a typo in either is an
/// unknown-key error with its line, and mixing the two kinds is caught with a clear message.
/// The keys of a child table that agents and supervisors share, and each one's own: for error
/// messages that list only what applies.
pub(super) const CHILD_KEYS: &[&str] = &["name", "restart", "shutdown", "significant", "node", "nodes", "placement"];
pub(super) const AGENT_KEYS: &[&str] = &[
    "module",
    "config",
    "capabilities",
    "memory",
    "mailbox",
    "budget",
    "grants",
    "outbound",
    "wallet",
    "hibernate_after",
    "stateless",
    "durable",
    "persist",
];
pub(super) const SUPERVISOR_KEYS: &[&str] =
    &["strategy", "intensity", "period", "backoff", "children", "dynamic", "max_children", "auto_shutdown"];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChild {
    name: Option<Spanned<String>>,
    restart: Option<Spanned<Restart>>,
    shutdown: Option<Shutdown>,
    significant: Option<Spanned<bool>>,
    // Where a root child runs in a cluster.
    node: Option<Spanned<String>>,
    nodes: Option<Spanned<Vec<String>>>,
    placement: Option<Spanned<String>>,
    // Agents.
    module: Option<Spanned<String>>,
    config: Option<Spanned<toml::Table>>,
    capabilities: Option<Spanned<Vec<String>>>,
    memory: Option<Spanned<ByteSize>>,
    mailbox: Option<Spanned<u32>>,
    budget: Option<Spanned<Span>>,
    grants: Option<Vec<Spanned<String>>>,
    outbound: Option<Vec<Spanned<String>>>,
    wallet: Option<Spanned<u64>>,
    hibernate_after: Option<Spanned<Span>>,
    stateless: Option<Spanned<bool>>,
    durable: Option<Spanned<bool>>,
    persist: Option<Spanned<super::Persist>>,
    // Supervisors.
    strategy: Option<Spanned<Strategy>>,
    intensity: Option<Spanned<u32>>,
    period: Option<Spanned<Span>>,
    backoff: Option<RawBackoff>,
    children: Option<Vec<RawChild>>,
    dynamic: Option<bool>,
    max_children: Option<Spanned<u32>>,
    auto_shutdown: Option<Spanned<AutoShutdown>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    initial: Span,
    max: Span,
}

/// `[defaults]`: inherited by every agent.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub memory: Option<Spanned<ByteSize>>,
    pub mailbox: Option<Spanned<u32>>,
    pub budget: Option<Spanned<Span>>,
    pub grants: Option<Vec<Spanned<String>>>,
    pub outbound: Option<Vec<Spanned<String>>>,
    wallet: Option<u64>,
    hibernate_after: Option<Span>,
    stateless: Option<bool>,
    restart: Option<Restart>,
    shutdown: Option<Shutdown>,
    /// Agora's shorthand: every agent that does not say otherwise is significant.
    significant: Option<Spanned<bool>>,
}

use crate::cluster::placement::Placement;

const AGENT_SHUTDOWN: Shutdown = Shutdown::Timeout(Duration::from_secs(5));

/// Resolves raw child tables into specs, checking names, modules and values as it goes.
pub(super) struct TreeBuilder<'a> {
    pub locate: &'a Locator<'a>,
    pub host: &'a HostSettings,
    pub modules: &'a BTreeMap<String, std::path::PathBuf>,
    pub limits: Limits,
    pub grants: Grants,
    pub outbound: Vec<String>,
    pub services: &'a ServiceSections,
    pub defaults: &'a RawDefaults,
    /// Every name in the tree, with where it was first declared.
    pub names: BTreeMap<String, usize>,
    /// Where each root child may run in a cluster.
    pub placement: BTreeMap<String, Placement>,
}

impl TreeBuilder<'_> {
    pub fn root(&mut self, raw: Option<RawChild>, agents: Vec<RawChild>) -> Result<SupervisorSpec, ManifestError> {
        let mut raw = raw.unwrap_or_default();
        if let Some(module) = &raw.module {
            return Err(self.error(module.span(), "supervisor.module", "the root is a supervisor"));
        }
        if !agents.is_empty() && raw.children.as_ref().is_some_and(|c| !c.is_empty()) {
            // At the first [[agent]]'s name: the root has no table of its own to point at.
            let span = agents.iter().find_map(|a| a.name.as_ref()).map_or(0..0, |n| n.span());
            return Err(self.error(
                span,
                "agent",
                "declare children either as [[agent]] tables or as [[supervisor.children]], not both",
            ));
        }
        // Errors in `[[agent]]` tables name them as such.
        let children_key = if agents.is_empty() { "supervisor.children" } else { "agent" };
        if !agents.is_empty() {
            raw.children = Some(agents);
        }
        let name = raw.name.take().map_or_else(|| "root".to_string(), Spanned::into_inner);
        self.names.insert(name.clone(), 0);
        for (index, child) in raw.children.iter_mut().flatten().enumerate() {
            let placement = self.placement(child, &format!("{children_key}[{index}]"))?;
            if let Some(name) = &child.name {
                self.placement.insert(name.get_ref().clone(), placement);
            }
        }
        // Pools first: they start before the agents that check workers out, and stop after them.
        let pools = self.pools()?;
        let mut root = self.supervisor(name, raw, "supervisor", children_key)?;
        root.children.splice(0..0, pools);
        Ok(root)
    }

    /// A root child's `node`, `nodes` or `placement` (at most one of them), taken out of it.
    fn placement(&self, raw: &mut RawChild, scope: &str) -> Result<Placement, ManifestError> {
        let (node, nodes, any) = (raw.node.take(), raw.nodes.take(), raw.placement.take());
        let given = [node.as_ref().map(|n| n.span()), nodes.as_ref().map(|n| n.span()), any.as_ref().map(|n| n.span())];
        let mut spans = given.into_iter().flatten();
        if let (Some(_), Some(second)) = (spans.next(), spans.next()) {
            return Err(self.error(second, &format!("{scope}.node"), "say one of `node`, `nodes` and `placement`"));
        }
        let check = |name: &str, span: std::ops::Range<usize>, key: &str| {
            crate::cluster::settings::check_cluster_name("node name", name)
                .map_err(|why| self.error(span, &format!("{scope}.{key}"), why))
        };
        if let Some(node) = node {
            check(node.get_ref(), node.span(), "node")?;
            return Ok(Placement::Node(node.into_inner()));
        }
        if let Some(nodes) = nodes {
            if nodes.get_ref().is_empty() {
                return Err(self.error(nodes.span(), &format!("{scope}.nodes"), "name at least one node"));
            }
            for name in nodes.get_ref() {
                check(name, nodes.span(), "nodes")?;
            }
            return Ok(Placement::Nodes(nodes.into_inner()));
        }
        match any {
            Some(any) if any.get_ref() != "any" => Err(self.error(
                any.span(),
                &format!("{scope}.placement"),
                format!("{:?}: the only placement is \"any\" (or say `node` or `nodes`)", any.get_ref()),
            )),
            _ => Ok(Placement::Any),
        }
    }

    /// `[pools.<name>]`, as children of the root.
    fn pools(&mut self) -> Result<Vec<ChildSpec>, ManifestError> {
        let mut pools = Vec::new();
        for (name, raw) in &self.services.pools {
            let scope = format!("pools.{name}");
            let at = raw.module.as_ref().map_or(0..0, |m| m.span());
            if let Err(why) = check_name(name) {
                return Err(self.error(at, &scope, why));
            }
            if let Some(first) = self.names.insert(name.clone(), at.start) {
                let message =
                    format!("duplicate name {name:?} (first declared on line {})", self.locate.line_of(first));
                return Err(self.error(at, &scope, message));
            }
            let Some(module) = raw.module.clone() else {
                return Err(self.locate.section_error(
                    &scope,
                    &format!("{scope}.module"),
                    "a pool needs the `module` its workers run".into(),
                ));
            };
            let size = raw.size.as_ref().map_or(5, |size| *size.get_ref());
            let overflow = raw.overflow.as_ref().map_or(10, |overflow| *overflow.get_ref());
            let most = u64::from(size) + u64::from(overflow);
            if most == 0 || most > u64::from(MAX_POOL_WORKERS) {
                let span = raw.size.as_ref().or(raw.overflow.as_ref()).map_or(at.clone(), |n| n.span());
                let message = format!("size + overflow must be 1..={MAX_POOL_WORKERS} (each worker is a live agent)");
                return Err(self.error(span, &format!("{scope}.size"), message));
            }
            let checkout_timeout =
                raw.checkout_timeout.as_ref().map_or(Duration::from_secs(5), |t| t.get_ref().duration());
            if checkout_timeout > Duration::from_millis(u64::from(u32::MAX)) {
                let span = raw.checkout_timeout.as_ref().map_or(at.clone(), |t| t.span());
                return Err(self.error(span, &format!("{scope}.checkout_timeout"), "must be at most 49 days"));
            }
            let restart = raw.restart.as_ref().map(|r| *r.get_ref()).unwrap_or_default();
            let worker = RawChild {
                config: raw.config.clone(),
                capabilities: raw.capabilities.clone(),
                memory: raw.memory.clone(),
                mailbox: raw.mailbox.clone(),
                budget: raw.budget.clone(),
                grants: raw.grants.clone(),
                outbound: raw.outbound.clone(),
                shutdown: raw.worker_shutdown,
                ..RawChild::default()
            };
            let mut worker = self.agent(name.clone(), module, worker, &scope)?;
            // The pool replaces its workers itself, as poolboy does; no supervisor restarts one.
            worker.restart = Restart::Temporary;
            worker.significant = false;
            pools.push(ChildSpec::Pool(std::sync::Arc::new(PoolSpec {
                name: name.clone(),
                worker: worker.into(),
                size,
                overflow,
                checkout_timeout,
                strategy: raw.strategy.unwrap_or_default(),
                restart,
                shutdown: raw.shutdown.unwrap_or(Shutdown::Infinity),
            })));
        }
        Ok(pools)
    }

    fn error(&self, span: std::ops::Range<usize>, key: &str, message: impl Into<String>) -> ManifestError {
        self.locate.at(span, Some(key.to_string()), message.into())
    }

    fn supervisor(
        &mut self,
        name: String,
        raw: RawChild,
        scope: &str,
        children_key: &str,
    ) -> Result<SupervisorSpec, ManifestError> {
        let agent_only = [
            ("config", raw.config.as_ref().map(|c| c.span())),
            ("capabilities", raw.capabilities.as_ref().map(|c| c.span())),
            ("memory", raw.memory.as_ref().map(|c| c.span())),
            ("mailbox", raw.mailbox.as_ref().map(|c| c.span())),
            ("budget", raw.budget.as_ref().map(|c| c.span())),
            ("grants", raw.grants.as_ref().and_then(|g| g.first()).map(|c| c.span())),
            ("outbound", raw.outbound.as_ref().and_then(|g| g.first()).map(|c| c.span())),
            ("wallet", raw.wallet.as_ref().map(|c| c.span())),
            ("hibernate_after", raw.hibernate_after.as_ref().map(|c| c.span())),
            ("stateless", raw.stateless.as_ref().map(|c| c.span())),
            ("durable", raw.durable.as_ref().map(|c| c.span())),
            ("persist", raw.persist.as_ref().map(|c| c.span())),
        ];
        if let Some((key, Some(span))) = agent_only.into_iter().find(|(_, span)| span.is_some()) {
            return Err(self.error(
                span,
                &format!("{scope}.{key}"),
                format!("{name:?} has no `module`, so it is a supervisor, and `{key}` belongs to agents"),
            ));
        }
        let intensity = raw.intensity.map_or(1, Spanned::into_inner);
        let period = match raw.period {
            Some(period) if period.get_ref().duration().is_zero() => {
                return Err(self.error(period.span(), &format!("{scope}.period"), "must be longer than 0s"));
            }
            Some(period) => period.into_inner().duration(),
            None => Duration::from_secs(5),
        };
        let backoff = match raw.backoff {
            Some(RawBackoff { initial, max })
                if initial.duration() > max.duration() || initial.duration().is_zero() =>
            {
                let span = raw.name.as_ref().map_or(0..0, |n| n.span());
                return Err(self.error(span, &format!("{scope}.backoff"), "needs 0 < initial <= max"));
            }
            Some(RawBackoff { initial, max }) => Some(Backoff { initial: initial.duration(), max: max.duration() }),
            None => None,
        };
        let span = raw.name.as_ref().map_or(0..0, |n| n.span());
        let max_children = match (raw.dynamic.unwrap_or(false), raw.max_children) {
            (false, None) => None,
            (false, Some(max)) => {
                return Err(self.error(max.span(), &format!("{scope}.max_children"), "needs `dynamic = true`"));
            }
            (true, _) if raw.children.as_ref().is_some_and(|c| !c.is_empty()) => {
                return Err(self.error(
                    span,
                    &format!("{scope}.children"),
                    "a dynamic supervisor starts with no children",
                ));
            }
            (true, _) if raw.strategy.as_ref().is_some_and(|s| *s.get_ref() != Strategy::OneForOne) => {
                return Err(self.error(span, &format!("{scope}.strategy"), "a dynamic supervisor is one_for_one"));
            }
            (true, max) => Some(max.map_or(u32::MAX, Spanned::into_inner)),
        };
        let auto_shutdown = match raw.auto_shutdown {
            Some(auto) if max_children.is_some() && *auto.get_ref() != AutoShutdown::Never => {
                return Err(self.error(
                    auto.span(),
                    &format!("{scope}.auto_shutdown"),
                    "a dynamic supervisor's children are spawned at runtime and are never significant",
                ));
            }
            Some(auto) => auto.into_inner(),
            None => AutoShutdown::Never,
        };
        let restart = raw.restart.as_ref().map(|r| *r.get_ref()).unwrap_or_default();
        let significant = self.significant(&raw.significant, restart, scope)?;
        let mut children = Vec::new();
        for (index, child) in raw.children.unwrap_or_default().into_iter().enumerate() {
            children.push(self.child(child, &format!("{children_key}[{index}]"))?);
        }
        Ok(SupervisorSpec {
            name,
            strategy: raw.strategy.map_or(Strategy::OneForOne, Spanned::into_inner),
            intensity,
            period,
            backoff,
            restart,
            shutdown: raw.shutdown.unwrap_or(Shutdown::Infinity),
            children,
            max_children,
            auto_shutdown,
            significant,
        })
    }

    /// `significant`, refused on a permanent child as OTP refuses it (it never exits for good).
    fn significant(&self, flag: &Option<Spanned<bool>>, restart: Restart, scope: &str) -> Result<bool, ManifestError> {
        match flag {
            Some(flag) if *flag.get_ref() && restart == Restart::Permanent => Err(self.error(
                flag.span(),
                &format!("{scope}.significant"),
                "a permanent child is always restarted, so it cannot be significant: make it transient or temporary",
            )),
            Some(flag) => Ok(*flag.get_ref()),
            None => Ok(false),
        }
    }

    fn child(&mut self, mut raw: RawChild, scope: &str) -> Result<ChildSpec, ManifestError> {
        let placed = [
            ("node", raw.node.as_ref().map(|n| n.span())),
            ("nodes", raw.nodes.as_ref().map(|n| n.span())),
            ("placement", raw.placement.as_ref().map(|n| n.span())),
        ];
        if let Some((key, Some(span))) = placed.into_iter().find(|(_, span)| span.is_some()) {
            return Err(self.error(
                span,
                &format!("{scope}.{key}"),
                "only the root supervisor's children are placed on cluster nodes; a nested child runs beside its supervisor",
            ));
        }
        let Some(name) = raw.name.take() else {
            let span = raw.module.as_ref().map_or(0..0, |m| m.span());
            return Err(self.error(span, &format!("{scope}.name"), "every child needs a `name`"));
        };
        if let Err(why) = check_name(name.get_ref()) {
            return Err(self.error(name.span(), &format!("{scope}.name"), why));
        }
        if let Some(first) = self.names.insert(name.get_ref().clone(), name.span().start) {
            let message =
                format!("duplicate name {:?} (first declared on line {})", name.get_ref(), self.locate.line_of(first));
            return Err(self.error(name.span(), &format!("{scope}.name"), message));
        }
        let span = name.span();
        let name = name.into_inner();
        match raw.module.take() {
            // Under [[agent]] a table is an agent: one without a module is a mistake, not a
            // supervisor (those are written as [[supervisor.children]]).
            None if scope.starts_with("agent[") => {
                let known: Vec<&str> = self.modules.keys().map(String::as_str).collect();
                let message = format!(
                    "agent {name:?} has no `module` (one of [modules]: {}); a nested supervisor is written as \
                     [[supervisor.children]] with `children`",
                    known.join(", ")
                );
                Err(self.error(span, &format!("{scope}.module"), message))
            }
            None => Ok(ChildSpec::Supervisor(self.supervisor(name, raw, scope, &format!("{scope}.children"))?)),
            Some(module) => {
                let supervisor_only = [
                    ("strategy", raw.strategy.as_ref().map(|s| s.span())),
                    ("intensity", raw.intensity.as_ref().map(|s| s.span())),
                    ("period", raw.period.as_ref().map(|s| s.span())),
                    ("backoff", raw.backoff.as_ref().map(|_| span.clone())),
                    ("children", raw.children.as_ref().map(|_| span.clone())),
                    ("dynamic", raw.dynamic.as_ref().map(|_| span.clone())),
                    ("max_children", raw.max_children.as_ref().map(|m| m.span())),
                    ("auto_shutdown", raw.auto_shutdown.as_ref().map(|m| m.span())),
                ];
                if let Some((key, Some(at))) = supervisor_only.into_iter().find(|(_, s)| s.is_some()) {
                    return Err(self.error(
                        at,
                        &format!("{scope}.{key}"),
                        format!("{name:?} has a `module`, so it is an agent, and `{key}` belongs to supervisors"),
                    ));
                }
                Ok(ChildSpec::Agent(self.agent(name, module, raw, scope)?.into()))
            }
        }
    }

    fn agent(
        &self,
        name: String,
        module: Spanned<String>,
        raw: RawChild,
        scope: &str,
    ) -> Result<AgentSpec, ManifestError> {
        if !self.modules.contains_key(module.get_ref()) {
            let known: Vec<&str> = self.modules.keys().map(String::as_str).collect();
            let message = format!("unknown module {:?}; [modules] declares: {}", module.get_ref(), known.join(", "));
            return Err(self.error(module.span(), &format!("{scope}.module"), message));
        }
        let limits = super::resolve_limits(
            self.locate,
            self.host,
            self.limits,
            (&raw.memory, &raw.mailbox, &raw.budget),
            scope,
        )?;
        let restart = raw.restart.as_ref().map(|r| *r.get_ref()).or(self.defaults.restart).unwrap_or_default();
        let significant = match &raw.significant {
            Some(_) => self.significant(&raw.significant, restart, scope)?,
            None => self.significant(&self.defaults.significant, restart, "defaults").map_err(|mut e| {
                e.message = format!("{} (agent {name:?} inherits it)", e.message);
                e
            })?,
        };
        let config = raw.config.map(Spanned::into_inner).unwrap_or_default();
        let stateless = raw.stateless.map(Spanned::into_inner).or(self.defaults.stateless).unwrap_or(false);
        let durable = self.durable(&raw.durable, &raw.persist, stateless, scope)?;
        Ok(AgentSpec {
            name,
            module: module.into_inner(),
            config: config.iter().map(|(k, v)| (k.clone(), render_value(v))).collect(),
            limits,
            capabilities: raw.capabilities.map(Spanned::into_inner).unwrap_or_default(),
            grants: super::resolve_grants(self.locate, raw.grants.as_deref(), scope, self.grants)?,
            outbound: super::resolve_outbound(
                self.locate,
                raw.outbound.as_deref(),
                scope,
                self.services,
                &self.outbound,
            )?,
            restart,
            significant,
            shutdown: raw.shutdown.or(self.defaults.shutdown).unwrap_or(AGENT_SHUTDOWN),
            wallet: raw.wallet.map(Spanned::into_inner).or(self.defaults.wallet).unwrap_or(0),
            hibernate_after: raw
                .hibernate_after
                .map(|span| span.into_inner().duration())
                .or(self.defaults.hibernate_after.map(|span| span.duration()))
                .filter(|after| !after.is_zero()),
            stateless,
            durable,
        })
    }

    /// `durable = true` and its `persist` policy (`idle` unless given); `persist` alone, or a
    /// durable agent said to be stateless, is a mistake worth pointing at.
    fn durable(
        &self,
        durable: &Option<Spanned<bool>>,
        persist: &Option<Spanned<super::Persist>>,
        stateless: bool,
        scope: &str,
    ) -> Result<Option<super::Persist>, ManifestError> {
        let is_durable = durable.as_ref().is_some_and(|d| *d.get_ref());
        if let (false, Some(persist)) = (is_durable, persist) {
            let message = "`persist` says when a durable agent's state is written: add `durable = true`, or drop it";
            return Err(self.error(persist.span(), &format!("{scope}.persist"), message));
        }
        if let (true, true, Some(durable)) = (is_durable, stateless, durable) {
            let message = "a durable agent keeps its state across restarts, a stateless one has none: choose one";
            return Err(self.error(durable.span(), &format!("{scope}.durable"), message));
        }
        Ok(is_durable.then(|| persist.as_ref().map_or_else(super::Persist::default, |p| *p.get_ref())))
    }
}

/// Names of agents and supervisors: also checked for children spawned at runtime.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid { Ok(()) } else { Err(format!("invalid name {name:?}: use 1-128 of A-Z a-z 0-9 - _ .")) }
}

/// A TOML value as an agent sees it: strings verbatim, anything else as TOML.
pub fn render_value(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
