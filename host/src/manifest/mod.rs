//! The manifest: which modules exist, which agents run, and with what limits and grants.
//!
//! Parsing is strict (`deny_unknown_fields` everywhere) and every error names the file, the
//! line and column, and the key, because a typo in a manifest should never silently become a
//! default. Paths are resolved against the manifest's own directory.

mod tree;
pub mod units;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::capabilities::{Grant, Grants, ServiceSections};
pub use tree::{
    AutoShutdown, Backoff, ChildSpec, MAX_POOL_WORKERS, PoolSpec, PoolStrategy, RawPool, Restart, Shutdown, Strategy,
    SupervisorSpec, check_name, render_value,
};
pub use units::{ByteSize, Span};

/// A manifest that parsed and validated: every module it names exists and every value is in range.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    pub host: HostSettings,
    pub modules: BTreeMap<String, PathBuf>,
    /// The `version` labels of `[modules]` entries that have one.
    pub module_versions: BTreeMap<String, String>,
    /// The `warm` counts of `[modules]` entries that have one.
    pub module_warm: BTreeMap<String, u32>,
    /// The root supervisor and, below it, every agent.
    pub root: SupervisorSpec,
    /// `[defaults]`, resolved: what agents spawned at runtime start from.
    pub defaults: Limits,
    /// The host services' sections: `[config]`, `[events]`, `[telemetry]`, `[rate_limits.*]`,
    /// `[outbound.*]`.
    pub services: ServiceSections,
    /// `[cluster]`, as written (`agora run --cluster/--node` may complete it).
    pub cluster: Option<crate::cluster::RawClusterSettings>,
    /// Where each of the root's children may run in a cluster (by name; pools run anywhere).
    pub placement: BTreeMap<String, crate::cluster::placement::Placement>,
}

/// Process-wide settings: they size the engine and its instance pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostSettings {
    /// Event store and compiled-module cache; relative to the manifest.
    pub data_dir: PathBuf,
    /// Instance-pool slots: the most agents alive at once.
    pub max_agents: u32,
    /// Slots of the second pool, for components that bundle an interpreter (Python,
    /// JavaScript): the most such agents alive at once.
    pub interpreter_agents: u32,
    /// The largest memory cap any agent may be given (the pool's slot size).
    pub max_memory: ByteSize,
    /// Virtual address space reserved per memory slot. Smaller values fit more agents in one
    /// process at the price of explicit bounds checks; see README "Density".
    pub memory_reservation: Option<ByteSize>,
    /// Guard region after each memory slot (with the reservation, it lets wasmtime elide checks).
    pub memory_guard: Option<ByteSize>,
    /// Largest message payload accepted by send, call, reply and publish.
    pub max_message: ByteSize,
    /// The most payload bytes one mailbox holds; a send beyond is `mailbox-full`.
    pub mailbox_bytes: ByteSize,
    /// Epoch tick: the CPU time slice after which a running agent yields to others.
    pub tick: Span,
    /// Directories (relative to the manifest; canonical once parsed) whose components agents may
    /// spawn or run as isolated jobs by path, besides the modules declared in `[modules]`.
    pub spawn_paths: Vec<PathBuf>,
    /// The admin HTTP endpoint (`/metrics` for Prometheus, `/config` for live updates, `/v1`
    /// the API, behind its token); off unless set. `unix:<path>` serves it on a Unix socket
    /// (mode 0600; the path relative to the manifest). Bind it to loopback or a private network:
    /// `/metrics` and `/config` need no token.
    pub admin: Option<crate::admin::Address>,
    /// An admin connection that moves no bytes for this long is closed.
    pub admin_idle_timeout: Span,
    /// Admin connections served at once; more are closed at once (and counted).
    pub admin_max_connections: u32,
    /// A fixed API token, read from this file (relative to the manifest; readable by its owner
    /// only), instead of a new one written to `<data_dir>/admin.token` at each start.
    pub admin_token_file: Option<PathBuf>,
    /// Instances of every module kept instantiated ahead (a module's own `warm` overrides it):
    /// a start takes one and calls `init`. Off (0) unless set.
    pub warm: u32,
    /// The most mailbox items an agent handles in one guest entry (`handle-batch`); 1 hands
    /// each message to `handle` alone.
    pub max_batch: u32,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            data_dir: PathBuf::from(".agora"),
            max_agents: 10_000,
            interpreter_agents: 256,
            max_memory: ByteSize::mib(64),
            memory_reservation: None,
            memory_guard: None,
            max_message: ByteSize::mib(1),
            mailbox_bytes: ByteSize(crate::messaging::DEFAULT_MAILBOX_BYTES as u64),
            tick: Span(Duration::from_millis(10)),
            spawn_paths: Vec::new(),
            admin: None,
            admin_idle_timeout: Span(Duration::from_secs(30)),
            admin_max_connections: 64,
            admin_token_file: None,
            warm: 0,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// Items per batch by default: enough to spread one entry's cost thin, few enough that an
/// agent with a deep mailbox lets the other tasks on its worker thread run between batches
/// (within one, a long item still yields at each tick).
pub const DEFAULT_MAX_BATCH: u32 = 64;
/// The most `host.max_batch` may be.
pub const MAX_BATCH: u32 = 4096;

/// The most instances one module (or `[host] warm`) may keep warm.
pub const MAX_WARM: u32 = 4096;

/// The `[host]` values serde cannot check, each refused at its own line.
fn check_host(locate: &Locator<'_>, host: &HostSettings) -> Result<(), ManifestError> {
    let error = |key: &str, message: String| Err(locate.toml_key_error(key, message));
    for (key, slots, most) in
        [("max_agents", host.max_agents, MAX_POOL_SLOTS), ("interpreter_agents", host.interpreter_agents, 100_000)]
    {
        if !(1..=most).contains(&slots) {
            return error(key, format!("{slots} is outside 1..={most} (each slot reserves address space at start)"));
        }
    }
    if host.max_memory < ByteSize(64 << 10) {
        return error("max_memory", format!("{} is below one wasm page (64KiB)", host.max_memory));
    }
    if let Some(reservation) = host.memory_reservation.filter(|r| *r < host.max_memory) {
        return error("max_memory", format!("{} exceeds host.memory_reservation ({reservation})", host.max_memory));
    }
    if host.max_message.bytes() == 0 {
        return error("max_message", "must be at least 1B: no message could be sent".into());
    }
    if host.mailbox_bytes < host.max_message {
        let message = format!(
            "host.mailbox_bytes ({}) is less than host.max_message ({}): a largest message could never be delivered",
            host.mailbox_bytes, host.max_message
        );
        let key = if locate.source.contains("mailbox_bytes") { "mailbox_bytes" } else { "max_message" };
        return error(key, message);
    }
    if host.admin_max_connections == 0 {
        return error("admin_max_connections", "must be at least 1".into());
    }
    if !(1..=MAX_BATCH).contains(&host.max_batch) {
        return error(
            "max_batch",
            format!("{} is outside 1..={MAX_BATCH} (1 delivers each message alone)", host.max_batch),
        );
    }
    if host.warm > MAX_WARM {
        return error("warm", format!("{} is above {MAX_WARM} (each warm instance holds a pool slot)", host.warm));
    }
    if let Some(file) = &host.admin_token_file
        && let Err(why) = crate::admin::v1::read_token_file(file)
    {
        return error("admin_token_file", why);
    }
    if host.admin_idle_timeout.duration() < Duration::from_millis(100) {
        return error("admin_idle_timeout", "must be at least 100ms".into());
    }
    if !(Duration::from_millis(1)..=Duration::from_secs(1)).contains(&host.tick.duration()) {
        return error("tick", format!("{} is outside 1ms..=1s", host.tick));
    }
    // The data directory must be one, or be makeable: not a file, not under one.
    let mut ancestor = Some(host.data_dir.as_path());
    while let Some(dir) = ancestor {
        if dir.exists() {
            if !dir.is_dir() {
                let message = if dir == host.data_dir {
                    format!("{} is a file, not a directory", host.data_dir.display())
                } else {
                    format!("{} is inside {}, which is a file", host.data_dir.display(), dir.display())
                };
                return error("data_dir", message);
            }
            break;
        }
        ancestor = dir.parent();
    }
    Ok(())
}

/// The most instance-pool slots a host reserves.
const MAX_POOL_SLOTS: u32 = 1_000_000;

/// Per-agent limits; `[defaults]` sets them for all, an agent entry may override each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear-memory cap; growing past it traps the agent.
    pub memory: ByteSize,
    /// Mailbox capacity in messages.
    pub mailbox: u32,
    /// CPU time one callback (init, handle, terminate) may use before it is interrupted.
    pub budget: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory: ByteSize::mib(16), mailbox: 1024, budget: Duration::from_secs(1) }
    }
}

#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub name: String,
    pub module: String,
    /// The `config` table, values rendered as strings (strings verbatim, others as TOML).
    pub config: Vec<(String, String)>,
    pub limits: Limits,
    /// Capabilities advertised in the registry from the start.
    pub capabilities: Vec<String>,
    pub grants: Grants,
    /// The `[outbound]` targets it may send HTTP requests to.
    pub outbound: Vec<String>,
    pub restart: Restart,
    /// Its exit for good counts towards its supervisor's `auto_shutdown`.
    pub significant: bool,
    pub shutdown: Shutdown,
    /// The wallet's first budget (`[economics]`), minted when the wallet is new.
    pub wallet: u64,
    /// Idle this long, it hibernates: its state is taken (`snapshot`), its instance dropped, and
    /// the next message wakes it (`restore`). Off unless set.
    pub hibernate_after: Option<Duration>,
    /// It keeps no state worth carrying: without the state interface it may still hibernate
    /// (it is woken by `init`).
    pub stateless: bool,
    /// `durable = true`: its state is written to disk under `data_dir` (when, by the policy),
    /// and it comes back with it when the host restarts. None for an ordinary agent.
    pub durable: Option<Persist>,
}

/// When a durable agent's state is written (`persist = ...`), besides at hibernation and at a
/// graceful stop, which every durable agent's is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Persist {
    /// Only at hibernation and at a graceful stop.
    Shutdown,
    /// Also whenever it goes idle (its mailbox empty) having handled a message since the last
    /// write.
    #[default]
    Idle,
    /// Also after every message, before its reply is released.
    EveryMessage,
}

impl AgentSpec {
    /// An entry with nothing granted, no config and OTP's defaults (permanent, 5 s to shut down),
    /// for agents the host makes itself (spawned children, isolated jobs): they set what they
    /// need with struct update, so a new capability's field needs no change there.
    pub fn new(name: impl Into<String>, module: impl Into<String>, limits: Limits) -> AgentSpec {
        AgentSpec {
            name: name.into(),
            module: module.into(),
            config: Vec::new(),
            limits,
            capabilities: Vec::new(),
            grants: Grants::NONE,
            outbound: Vec::new(),
            restart: Restart::Permanent,
            significant: false,
            shutdown: Shutdown::Timeout(Duration::from_secs(5)),
            wallet: 0,
            hibernate_after: None,
            stateless: false,
            durable: None,
        }
    }
}

/// A manifest error, located in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ManifestError {}

/// The core's keys; the capabilities' sections are parsed beside them ([`ServiceSections`]).
const CORE_KEYS: &[&str] = &["host", "defaults", "modules", "supervisor", "agent", "cluster"];

#[derive(Deserialize, Default)]
struct RawManifest {
    #[serde(default)]
    host: HostSettings,
    #[serde(default)]
    defaults: tree::RawDefaults,
    #[serde(default)]
    modules: BTreeMap<String, Spanned<toml::Value>>,
    supervisor: Option<tree::RawChild>,
    #[serde(default, rename = "agent")]
    agents: Vec<tree::RawChild>,
    cluster: Option<crate::cluster::RawClusterSettings>,
}

fn read(path: &Path) -> Result<String, ManifestError> {
    std::fs::read_to_string(path).map_err(|e| ManifestError {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        key: None,
        message: format!("cannot read the manifest: {e}"),
    })
}

/// One `[modules]` entry: `name = "path"`, or `[modules.name]` with `path` and `build`.
pub struct ModuleEntry {
    pub name: String,
    /// As written (relative to the manifest's directory unless absolute).
    pub path: String,
    /// The command `agora build` runs, in the manifest's directory, to make `path`.
    pub build: Option<String>,
    /// A label for this build (`version = "1.2"`), shown with its content hash.
    pub version: Option<String>,
    /// Instances kept instantiated ahead (`warm = 4`).
    pub warm: Option<u32>,
    span: std::ops::Range<usize>,
}

fn module_entries(
    locate: &Locator<'_>,
    raw: &BTreeMap<String, Spanned<toml::Value>>,
) -> Result<Vec<ModuleEntry>, ManifestError> {
    let mut entries = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let (span, key) = (value.span(), Some(format!("modules.{name}")));
        let wrong = |message: &str| locate.at(span.clone(), key.clone(), message.to_string());
        let (path, build, version, warm) = match value.get_ref() {
            toml::Value::String(path) => (path.clone(), None, None, None),
            toml::Value::Table(table) => {
                if let Some(unknown) =
                    table.keys().find(|k| !["path", "build", "version", "warm"].contains(&k.as_str()))
                {
                    return Err(wrong(&format!(
                        "unknown key `{unknown}`; a module table has `path`, `build`, `version` and `warm`"
                    )));
                }
                let path = match table.get("path") {
                    Some(toml::Value::String(path)) => path.clone(),
                    _ => return Err(wrong("a module table needs `path = \"<file>.wasm\"`")),
                };
                let build = match table.get("build") {
                    None => None,
                    Some(toml::Value::String(command)) if !command.trim().is_empty() => Some(command.clone()),
                    Some(_) => return Err(wrong("`build` is a shell command, as a non-empty string")),
                };
                let version = match table.get("version") {
                    None => None,
                    Some(toml::Value::String(label)) => {
                        Some(crate::runtime::catalog::check_label(label).map_err(|why| wrong(&why))?.to_string())
                    }
                    Some(_) => return Err(wrong("`version` is a label, as a string (\"1.2\")")),
                };
                let warm = match table.get("warm") {
                    None => None,
                    Some(toml::Value::Integer(n)) if (0..=i64::from(MAX_WARM)).contains(n) => Some(*n as u32),
                    Some(_) => {
                        return Err(wrong(&format!(
                            "`warm` is how many instances to keep ready, 0..={MAX_WARM} (each holds a pool slot)"
                        )));
                    }
                };
                (path, build, version, warm)
            }
            _ => return Err(wrong("a module is a path, or a table with `path` and `build`")),
        };
        entries.push(ModuleEntry { name: name.clone(), path, build, version, warm, span });
    }
    Ok(entries)
}

impl Manifest {
    /// The `[modules]` of a manifest, read without checking that their files exist yet (for
    /// `agora build`, which makes them).
    pub fn modules_of(path: &Path) -> Result<Vec<ModuleEntry>, ManifestError> {
        let source = read(path)?;
        let locate = Locator { file: path, source: &source };
        let raw: RawManifest = toml::from_str(&source).map_err(|e| locate.toml_error(&e))?;
        module_entries(&locate, &raw.modules)
    }

    /// Read, parse and validate a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let source = read(path)?;
        Self::parse(path, &source)
    }

    /// Parse and validate manifest text; `path` locates errors and anchors relative paths.
    pub fn parse(path: &Path, source: &str) -> Result<Manifest, ManifestError> {
        let locate = Locator { file: path, source };
        let raw: RawManifest = toml::from_str(source).map_err(|e| locate.toml_error(&e))?;
        let mut services: ServiceSections = toml::from_str(source).map_err(|e| locate.toml_error(&e))?;
        locate.check_top_level(source)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &Path| {
            if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
        };

        let mut host = raw.host;
        host.data_dir = resolve(&host.data_dir);
        host.admin_token_file = host.admin_token_file.as_deref().map(resolve);
        if let Some(crate::admin::Address::Unix(socket)) = &mut host.admin {
            *socket = resolve(socket);
        }
        // Canonical once here, so that checking a spawned path against them needs no I/O.
        let mut spawn_paths = Vec::with_capacity(host.spawn_paths.len());
        for dir in &host.spawn_paths {
            let dir = resolve(dir);
            match dir.canonicalize() {
                Ok(canonical) if canonical.is_dir() => spawn_paths.push(canonical),
                _ => {
                    let message = format!("{} is not a directory", dir.display());
                    return Err(locate.toml_key_error("spawn_paths", message));
                }
            }
        }
        host.spawn_paths = spawn_paths;
        check_host(&locate, &host)?;

        let mut modules = BTreeMap::new();
        let mut module_versions = BTreeMap::new();
        let mut module_warm = BTreeMap::new();
        for entry in module_entries(&locate, &raw.modules)? {
            let resolved = resolve(Path::new(&entry.path));
            if !resolved.is_file() {
                let why = if resolved.exists() { "is not a regular file" } else { "not found" };
                let hint = if entry.build.is_some() { " (build it with `agora build`)" } else { "" };
                return Err(locate.at(
                    entry.span,
                    Some(format!("modules.{}", entry.name)),
                    format!("module file {why}: {}{hint}", resolved.display()),
                ));
            }
            if let Some(label) = entry.version {
                module_versions.insert(entry.name.clone(), label);
            }
            if let Some(warm) = entry.warm {
                module_warm.insert(entry.name.clone(), warm);
            }
            modules.insert(entry.name, resolved);
        }

        let defaults = &raw.defaults;
        let limits = resolve_limits(
            &locate,
            &host,
            Limits::default(),
            (&defaults.memory, &defaults.mailbox, &defaults.budget),
            "defaults",
        )?;
        let grants = resolve_grants(&locate, defaults.grants.as_deref(), "defaults", Grants::NONE)?;
        services.resolve_paths(&base);
        if let Err(error) = services.validate() {
            return Err(match error.span {
                Some(span) => locate.at(span, Some(error.key), error.message),
                None => locate.section_error(&error.section, &error.key, error.message),
            });
        }
        let outbound = resolve_outbound(&locate, defaults.outbound.as_deref(), "defaults", &services, &[])?;
        let mut builder = tree::TreeBuilder {
            locate: &locate,
            host: &host,
            modules: &modules,
            limits,
            grants,
            outbound,
            services: &services,
            defaults,
            names: BTreeMap::new(),
            placement: BTreeMap::new(),
        };
        let root = builder.root(raw.supervisor, raw.agents)?;
        let placement = std::mem::take(&mut builder.placement);
        let mut cluster = raw.cluster;
        if let Some(section) = &mut cluster {
            section.credentials = section.credentials.as_deref().map(resolve);
            // What --cluster and --node may still give is not asked of the file.
            let url = section.url.clone().or(Some("nats://127.0.0.1:4222".into()));
            let node = section.node.clone().or(Some("node".into()));
            if let Err((key, message)) = crate::cluster::RawClusterSettings::resolve(Some(section), url, node) {
                return Err(locate.section_error("cluster", &format!("cluster.{key}"), message));
            }
        }
        Ok(Manifest {
            path: path.to_path_buf(),
            host,
            modules,
            module_versions,
            module_warm,
            root,
            defaults: limits,
            services,
            cluster,
            placement,
        })
    }

    /// Every agent in the tree, in start order.
    pub fn agents(&self) -> Vec<&AgentSpec> {
        self.root.agents()
    }

    /// The manifest's directory; relative paths in it are resolved from here.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

type RawLimits<'a> = (&'a Option<Spanned<ByteSize>>, &'a Option<Spanned<u32>>, &'a Option<Spanned<Span>>);

fn resolve_limits(
    locate: &Locator,
    host: &HostSettings,
    inherited: Limits,
    (memory, mailbox, budget): RawLimits,
    scope: &str,
) -> Result<Limits, ManifestError> {
    let mut limits = inherited;
    if let Some(memory) = memory {
        let value = *memory.get_ref();
        let bounds = ByteSize(64 << 10)..=host.max_memory;
        if !bounds.contains(&value) {
            return Err(locate.at(
                memory.span(),
                Some(format!("{scope}.memory")),
                format!("{value} is outside 64KiB..={} (raise host.max_memory to allow more)", host.max_memory),
            ));
        }
        limits.memory = value;
    }
    if let Some(mailbox) = mailbox {
        if *mailbox.get_ref() == 0 {
            return Err(locate.at(mailbox.span(), Some(format!("{scope}.mailbox")), "must be at least 1".into()));
        }
        limits.mailbox = *mailbox.get_ref();
    }
    if let Some(budget) = budget {
        let value = budget.get_ref().duration();
        if value < host.tick.duration() {
            return Err(locate.at(
                budget.span(),
                Some(format!("{scope}.budget")),
                format!("{} is shorter than one tick (host.tick = {})", budget.get_ref(), host.tick),
            ));
        }
        limits.budget = value;
    }
    Ok(limits)
}

fn resolve_grants(
    locate: &Locator,
    raw: Option<&[Spanned<String>]>,
    scope: &str,
    inherited: Grants,
) -> Result<Grants, ManifestError> {
    let Some(raw) = raw else { return Ok(inherited) };
    let mut grants = Grants::NONE;
    for grant in raw {
        match grant.get_ref().parse::<Grant>() {
            Ok(g) => grants = grants.with(g),
            Err(why) => return Err(locate.at(grant.span(), Some(format!("{scope}.grants")), why)),
        }
    }
    Ok(grants)
}

fn resolve_outbound(
    locate: &Locator,
    raw: Option<&[Spanned<String>]>,
    scope: &str,
    services: &ServiceSections,
    inherited: &[String],
) -> Result<Vec<String>, ManifestError> {
    let Some(raw) = raw else { return Ok(inherited.to_vec()) };
    let mut targets = Vec::new();
    for target in raw {
        if !services.outbound.contains_key(target.get_ref()) {
            let known: Vec<&str> = services.outbound.keys().map(String::as_str).collect();
            let message =
                format!("unknown outbound target {:?}; [outbound] declares: {}", target.get_ref(), known.join(", "));
            return Err(locate.at(target.span(), Some(format!("{scope}.outbound")), message));
        }
        targets.push(target.get_ref().clone());
    }
    Ok(targets)
}

/// Turns byte offsets into file:line:column errors.
struct Locator<'a> {
    file: &'a Path,
    source: &'a str,
}

impl Locator<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.source[..offset.min(self.source.len())].matches('\n').count() + 1
    }

    fn at(&self, span: Range<usize>, key: Option<String>, message: String) -> ManifestError {
        let offset = span.start.min(self.source.len());
        let line_start = self.source[..offset].rfind('\n').map_or(0, |i| i + 1);
        ManifestError {
            file: self.file.to_path_buf(),
            line: self.line_of(offset),
            column: self.source[line_start..offset].chars().count() + 1,
            key,
            message,
        }
    }

    /// Refuse a top-level key that is neither the core's nor a capability's section.
    fn check_top_level(&self, source: &str) -> Result<(), ManifestError> {
        let table: toml::Table = toml::from_str(source).map_err(|e| self.toml_error(&e))?;
        let known = || CORE_KEYS.iter().chain(crate::capabilities::SECTIONS);
        match table.keys().find(|key| !known().any(|k| k == key)) {
            None => Ok(()),
            Some(key) => {
                let expected: Vec<String> = known().map(|k| format!("`{k}`")).collect();
                let message = format!("unknown field `{key}`, expected one of {}", expected.join(", "));
                let header = format!("[{key}");
                let offset = self.source.find(&header).map(|at| at + 1).or_else(|| self.source.find(key.as_str()));
                let message = self.explain_unknown_field(&message, offset.unwrap_or(0)).unwrap_or(message);
                Ok(self.at(offset.map_or(0..0, |at| at..at), None, message)).and_then(Err)
            }
        }
    }

    /// An error about a section parsed without spans: located at its `[section]` header, or at
    /// the first mention of its name.
    fn section_error(&self, section: &str, key: &str, message: String) -> ManifestError {
        let header = format!("[{section}]");
        let offset = self.source.find(&header).or_else(|| self.source.find(section)).unwrap_or(0);
        self.at(offset..offset, Some(key.to_string()), message)
    }

    /// An error about a `[host]` key, which is parsed without spans: located at the key's line
    /// in the `[host]` table (or the table's header when the key is not written there).
    fn toml_key_error(&self, key: &str, message: String) -> ManifestError {
        let table = self.source.find("[host]").map(|at| at + "[host]".len());
        let end = table
            .map_or(0, |start| self.source[start..].find("\n[").map_or(self.source.len(), |next| start + next + 1));
        let written = table.and_then(|start| {
            self.source[start..end].match_indices(key).map(|(at, _)| start + at).find(|at| {
                let line_start = self.source[..*at].rfind('\n').map_or(0, |i| i + 1);
                self.source[line_start..*at].trim().is_empty()
                    && self.source[*at + key.len()..].trim_start().starts_with('=')
            })
        });
        let offset = written.or(table.map(|at| at - "[host]".len())).unwrap_or(0);
        self.at(offset..offset, Some(format!("host.{key}")), message)
    }

    /// A parser error carries a span but not the key; recover the key from the source line
    /// (`key = value`), so that "invalid type" errors say which setting is wrong.
    fn toml_error(&self, error: &toml::de::Error) -> ManifestError {
        let span = error.span().unwrap_or(0..0);
        let offset = span.start.min(self.source.len());
        let line_start = self.source[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.source[offset..].find('\n').map_or(self.source.len(), |i| offset + i);
        let line = &self.source[line_start..line_end];
        let key = line
            .split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"').to_string())
            .filter(|k| !k.is_empty() && !k.starts_with('['));
        let message = error.message().trim().to_string();
        let message = self.explain_unknown_field(&message, offset).unwrap_or(message);
        self.at(span, key, message)
    }

    /// serde's "unknown field `memroy`, expected one of `name`, `module`, ..." as a person needs
    /// it: the likely key first, then only the keys of this kind of table (an agent's or a
    /// supervisor's, for a child of the tree).
    fn explain_unknown_field(&self, message: &str, offset: usize) -> Option<String> {
        let rest = message.strip_prefix("unknown field `")?;
        let (unknown, rest) = rest.split_once('`')?;
        if !rest.starts_with(", expected") {
            return None;
        }
        let mut expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
        if expected.contains(&"module") && expected.contains(&"strategy") {
            // The table's own text: from its header to the next one.
            let start = self.source[..offset].rfind("\n[").map_or(0, |i| i + 1);
            let end = self.source[offset..].find("\n[").map_or(self.source.len(), |i| offset + i);
            let is_agent = self.source[start..end].lines().any(|l| l.trim_start().starts_with("module"));
            let own: &[&str] = if is_agent { tree::AGENT_KEYS } else { tree::SUPERVISOR_KEYS };
            expected.retain(|key| own.contains(key) || tree::CHILD_KEYS.contains(key));
        }
        let closest = expected
            .iter()
            .map(|key| (edit_distance(unknown, key), *key))
            .filter(|(distance, key)| *distance <= 2.max(key.len() / 3))
            .min();
        let listed: Vec<String> = expected.iter().map(|k| format!("`{k}`")).collect();
        Some(match closest {
            Some((_, key)) => {
                format!("unknown key `{unknown}`: did you mean `{key}`? (keys here: {})", listed.join(", "))
            }
            None => format!("unknown key `{unknown}` (keys here: {})", listed.join(", ")),
        })
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(source: &str) -> Result<Manifest, ManifestError> {
        let dir = std::env::temp_dir().join(format!("agora-manifest-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.wasm"), b"\0asm").unwrap();
        Manifest::parse(&dir.join("m.toml"), source)
    }

    #[test]
    fn defaults_and_overrides_apply() {
        let m = parse(
            "[defaults]\nmemory = \"8MiB\"\ngrants = [\"logging\"]\n[modules]\na = \"a.wasm\"\n\
             [[agent]]\nname = \"x\"\nmodule = \"a\"\n\
             [[agent]]\nname = \"y\"\nmodule = \"a\"\nmemory = \"2MiB\"\nmailbox = 4\ngrants = [\"messaging\"]\nconfig = { n = 3, s = \"t\" }\n",
        )
        .unwrap();
        assert_eq!(m.agents()[0].limits.memory, ByteSize::mib(8));
        assert!(m.agents()[0].grants.allows("logging".parse().unwrap()));
        assert_eq!(m.agents()[1].limits.memory, ByteSize::mib(2));
        assert_eq!(m.agents()[1].limits.mailbox, 4);
        assert!(!m.agents()[1].grants.allows("logging".parse().unwrap()));
        assert!(m.agents()[1].grants.allows("messaging".parse().unwrap()));
        assert_eq!(m.agents()[1].config, vec![("n".into(), "3".into()), ("s".into(), "t".into())]);
    }

    #[test]
    fn errors_name_line_and_key() {
        let e = parse("[modules]\na = \"a.wasm\"\n[[agent]]\nname = \"x\"\nmodule = \"a\"\nmemroy = \"1MiB\"\n")
            .unwrap_err();
        assert_eq!(e.line, 6, "{e}");
        assert!(e.message.contains("unknown key `memroy`: did you mean `memory`?"), "{e}");
        // Only an agent's keys (and those every child has), not a supervisor's.
        assert!(e.message.contains("`wallet`") && !e.message.contains("`strategy`"), "{e}");

        let e = parse("[modules]\na = \"a.wasm\"\n[[agent]]\nname = \"x\"\nmodule = \"a\"\nmemory = \"12XB\"\n")
            .unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (6, Some("memory")), "{e}");

        let e = parse("[modules]\na = \"a.wasm\"\n[[agent]]\nname = \"x\"\nmodule = \"a\"\n[[agent]]\nname = \"x\"\nmodule = \"a\"\n")
            .unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (7, Some("agent[1].name")), "{e}");
        assert!(e.message.contains("duplicate"), "{e}");

        let e = parse("[modules]\na = \"missing.wasm\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (2, Some("modules.a")), "{e}");

        let e = parse("[modules]\na = \"a.wasm\"\n[[agent]]\nname = \"x\"\nmodule = \"b\"\n").unwrap_err();
        assert!(e.message.contains("unknown module \"b\""), "{e}");

        let e = parse("[modules]\na = \"a.wasm\"\n[[agent]]\nname = \"x\"\nmodule = \"a\"\ngrants = [\"network\"]\n")
            .unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (6, Some("agent[0].grants")), "{e}");

        let e = parse("[defaults]\nbudget = \"1us\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("defaults.budget"), "{e}");

        // A top-level key that is neither the core's nor a capability's section.
        let e = parse("[modules]\na = \"a.wasm\"\n[evnts]\ndurable = false\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("unknown key `evnts`: did you mean `events`? (keys here: `host`"), "{e}");
        assert!(e.message.contains("`events`") && e.message.contains("`economics`"), "{e}");
        let e = parse("telemetri = 1\n").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
        // A capability without settings takes an empty table and nothing else.
        parse("[messaging]\n").unwrap();
        let e = parse("[modules]\na = \"a.wasm\"\n[messaging]\nmailbox = 3\n").unwrap_err();
        assert!(e.message.contains("unknown field `mailbox`: this section takes no settings"), "{e}");
        assert_eq!(e.line, 3, "located at its section: {e}");
    }

    #[test]
    fn pools_are_children_of_the_root_started_first_and_checked() {
        let m = parse(
            "[defaults]\nmemory = \"8MiB\"\n[modules]\na = \"a.wasm\"\n[[agent]]\nname = \"x\"\nmodule = \"a\"\n\
             [pools.db]\nmodule = \"a\"\nsize = 3\noverflow = 2\ncheckout_timeout = \"1s\"\nstrategy = \"fifo\"\n\
             memory = \"2MiB\"\ngrants = [\"messaging\"]\nconfig = { dsn = \"x\" }\n[pools.cache]\nmodule = \"a\"\n",
        )
        .unwrap();
        let names: Vec<&str> = m.root.children.iter().map(ChildSpec::name).collect();
        assert_eq!(names, ["cache", "db", "x"], "pools first, in name order");
        let ChildSpec::Pool(db) = &m.root.children[1] else { panic!("db is a pool") };
        assert_eq!((db.size, db.overflow, db.strategy), (3, 2, PoolStrategy::Fifo));
        assert_eq!(db.checkout_timeout, Duration::from_secs(1));
        assert_eq!(db.worker.limits.memory, ByteSize::mib(2));
        assert!(db.worker.grants.allows("messaging".parse().unwrap()));
        assert_eq!(db.worker.config, vec![("dsn".into(), "x".into())]);
        assert_eq!(db.worker.restart, Restart::Temporary, "the pool replaces its workers, no supervisor does");
        let ChildSpec::Pool(cache) = &m.root.children[0] else { panic!("cache is a pool") };
        // poolboy's defaults.
        assert_eq!((cache.size, cache.overflow, cache.strategy), (5, 10, PoolStrategy::Lifo));
        assert_eq!(cache.checkout_timeout, Duration::from_secs(5));
        assert_eq!(cache.worker.limits.memory, ByteSize::mib(8), "[defaults] apply to workers");

        let modules = "[modules]\na = \"a.wasm\"\n";
        let e = parse(&format!("{modules}[pools.db]\nsize = 2\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (3, Some("pools.db.module")), "{e}");
        let e = parse(&format!("{modules}[pools.db]\nmodule = \"a\"\nsizes = 2\n")).unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert!(e.message.contains("sizes"), "{e}");
        let e = parse(&format!("{modules}[pools.db]\nmodule = \"a\"\nsize = 0\noverflow = 0\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (5, Some("pools.db.size")), "{e}");
        let e = parse(&format!("{modules}[pools.db]\nmodule = \"b\"\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (4, Some("pools.db.module")), "{e}");
        let e = parse(&format!("{modules}[pools.db]\nmodule = \"a\"\nmemory = \"12XB\"\n")).unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        let e = parse(&format!("{modules}[pools.db]\nmodule = \"a\"\nstrategy = \"random\"\n")).unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        let e = parse(&format!("{modules}[pools.x]\nmodule = \"a\"\n[[agent]]\nname = \"x\"\nmodule = \"a\"\n"))
            .unwrap_err();
        assert!(e.message.contains("duplicate name \"x\""), "{e}");
    }

    #[test]
    fn service_sections_are_checked_and_located() {
        let agent = "[modules]\na = \"a.wasm\"\n[[agent]]\nname = \"x\"\nmodule = \"a\"\n";
        let m = parse(&format!(
            "{agent}grants = [\"config\", \"events\", \"telemetry\", \"rate-limits\"]\noutbound = [\"api\"]\n\
             [outbound.api]\nurl = \"http://127.0.0.1:8080/v1\"\nbreaker = {{ failures = 3 }}\n\
             [rate_limits.r]\nlimit = 5\nkeyed = true\n[config]\nupdatable = [\"a.b\"]\n[config.values]\na = {{ b = 1 }}\n"
        ))
        .unwrap();
        assert_eq!(m.agents()[0].outbound, vec!["api".to_string()]);
        assert!(m.agents()[0].grants.allows("rate-limits".parse().unwrap()));
        assert_eq!(m.services.rate_limits["r"].limit.get(), 5);

        let e = parse(&format!("{agent}outbound = [\"nope\"]\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (6, Some("agent[0].outbound")), "{e}");
        assert!(e.message.contains("unknown outbound target \"nope\""), "{e}");

        let e = parse(&format!("{agent}[outbound.api]\nurl = \"ftp://example.com\"\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (6, Some("outbound.api")), "{e}");
        assert!(e.message.contains("must start with http:// or https://"), "{e}");
        let e = parse(&format!("{agent}[outbound.api]\nurl = \"http://example.com\"\nca_bundle = \"ca.pem\"\n"))
            .unwrap_err();
        assert!(e.message.contains("ca_bundle applies to https targets only"), "{e}");
        let e = parse(&format!("{agent}[outbound.api]\nurl = \"https://example.com\"\nca_bundle = \"no-such.pem\"\n"))
            .unwrap_err();
        assert!(e.message.contains("no-such.pem") && e.message.contains("ca_bundle"), "{e}");

        let breaker = "[outbound.api]\nurl = \"http://127.0.0.1:1\"\nbreaker = { failures = 3, success_rate = 0.5 }\n";
        let e = parse(&format!("{agent}{breaker}")).unwrap_err();
        assert!(e.message.contains("exactly one of `failures` and `success_rate`"), "{e}");

        let e = parse(&format!("{agent}[config]\nupdatable = [\"ok\", \"bad path\"]\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (7, Some("config.updatable[1]")), "{e}");

        let e = parse(&format!("{agent}[events]\nretain_evnts = 5\n")).unwrap_err();
        assert_eq!(e.line, 7, "{e}");
        assert!(e.message.contains("unknown key `retain_evnts`: did you mean `retain_events`?"), "{e}");

        let e = parse(&format!("{agent}[rate_limits.r]\nlimit = 0\n")).unwrap_err();
        assert_eq!(e.line, 7, "{e}");
    }

    #[test]
    fn wallets_and_the_economics_section_are_checked_and_located() {
        let agent = "[modules]\na = \"a.wasm\"\n[[agent]]\nname = \"x\"\nmodule = \"a\"\n";
        let m =
            parse(&format!("[defaults]\nwallet = 5\n{agent}[[agent]]\nname = \"y\"\nmodule = \"a\"\nwallet = 70\n"))
                .unwrap();
        let wallets: Vec<u64> = m.agents().iter().map(|a| a.wallet).collect();
        assert_eq!(wallets, [5, 70], "[defaults] gives a budget, an agent overrides it");
        assert!(!m.services.economics.meters_compute(), "compute is free unless priced");

        let e = parse(&format!("{agent}wallet = -3\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (6, Some("wallet")), "{e}");
        assert!(e.message.contains("expected u64"), "{e}");
        let e = parse(&format!("{agent}[economics]\ncompute_price = 2\ncompute_unit = 0\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (6, Some("economics.compute_unit")), "{e}");
        let e = parse(&format!("{agent}[economics]\nunpaid = \"ignore\"\n")).unwrap_err();
        assert_eq!(e.line, 7, "{e}");
        assert!(e.message.contains("unknown variant `ignore`"), "{e}");
        let supervisor = "[supervisor]\nname = \"top\"\n[[supervisor.children]]\nname = \"s\"\nwallet = 1\n";
        let e = parse(&format!("[modules]\na = \"a.wasm\"\n{supervisor}")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("supervisor.children[0].wallet"), "{e}");
    }
}
