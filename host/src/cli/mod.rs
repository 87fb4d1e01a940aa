//! The `agora` command line.

mod build;
mod doctor;
mod logging;
mod new;
mod operate;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::capabilities::events::lifecycle as events;
use crate::infra::host_lock::HostLock;
use crate::manifest::{HostSettings, Manifest};
use crate::runtime::Runtime;
use crate::runtime::modules::ModuleLoader;
use crate::{admin, bench, supervision};

#[derive(Parser)]
#[command(name = "agora", version, about = "Run supervised, sandboxed WebAssembly agents from a manifest")]
struct Cli {
    /// Log as text on stderr, or as one JSON object per line on stdout.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Colour the text log: on a terminal only (auto), always, or never.
    #[arg(long, global = true, value_enum, default_value_t = logging::Color::Auto)]
    color: logging::Color,
    /// Warnings and errors only.
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Debug lines too, each with its fields; a crash's backtrace and output under it.
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print one value, or (without a path) every value as JSON.
    Get { manifest: PathBuf, path: Option<String> },
    /// Set the value at a path the manifest marks updatable; subscribed agents are notified.
    Set { manifest: PathBuf, path: String, value: String },
    /// Remove the value at an updatable path.
    Unset { manifest: PathBuf, path: String },
}

#[derive(Subcommand)]
enum Command {
    /// Run a manifest until every agent has stopped, or until Ctrl-C / SIGTERM.
    Run {
        /// The manifest (default: `agora.toml` in this directory).
        manifest: Option<PathBuf>,
        /// Serve the admin endpoint here instead of at the manifest's `host.admin`.
        #[arg(long)]
        admin: Option<crate::admin::Address>,
        /// Once the agents have started, call NAME with TEXT and print the reply; repeatable, in
        /// order. The host then stops as on Ctrl-C (exit 1 if a call failed).
        #[arg(long, value_name = "NAME=TEXT", value_parser = parse_call)]
        call: Vec<(String, String)>,
        /// How long each `--call` waits for its reply.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
        call_timeout: std::time::Duration,
        /// Join the cluster whose NATS server is here (`nats://HOST:PORT`), over `[cluster] url`.
        #[arg(long, value_name = "URL")]
        cluster: Option<String>,
        /// This host's node name in the cluster, over `[cluster] node`.
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
        /// Keep this host's data here instead of at `host.data_dir` (several hosts of one
        /// manifest on one machine need one each).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Read or change the config of a running host, through its admin endpoint.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// List the running host's agents.
    Ps {
        /// The manifest (default: `agora.toml` in this directory).
        manifest: Option<PathBuf>,
        /// Order by name, or largest first by memory, mailbox, restarts, cpu or uptime.
        #[arg(long, default_value = "name")]
        sort: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        reach: operate::Reach,
    },
    /// Call an agent of the running host and print its reply: `agora call [manifest] NAME PAYLOAD`
    /// (PAYLOAD: text, @file, or - for stdin).
    Call {
        #[arg(num_args = 2..=3, value_name = "[MANIFEST] NAME PAYLOAD")]
        words: Vec<String>,
        /// How long to wait for the reply.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
        timeout: std::time::Duration,
        #[command(flatten)]
        reach: operate::Reach,
    },
    /// Send an agent of the running host a message: `agora send [manifest] NAME PAYLOAD`.
    Send {
        #[arg(num_args = 2..=3, value_name = "[MANIFEST] NAME PAYLOAD")]
        words: Vec<String>,
        #[command(flatten)]
        reach: operate::Reach,
    },
    /// Stop an agent through its supervisor and keep it down (OTP's `terminate_child`):
    /// `agora stop [manifest] NAME`.
    Stop {
        #[arg(num_args = 1..=2, value_name = "[MANIFEST] NAME")]
        words: Vec<String>,
        #[command(flatten)]
        reach: operate::Reach,
    },
    /// Forget a durable agent's persisted state, so that its next start is by `init`:
    /// `agora forget [manifest] NAME` (stop it first).
    Forget {
        #[arg(num_args = 1..=2, value_name = "[MANIFEST] NAME")]
        words: Vec<String>,
        #[command(flatten)]
        reach: operate::Reach,
    },
    /// Stop an agent if it runs, then start it again: `agora restart [manifest] NAME`.
    Restart {
        #[arg(num_args = 1..=2, value_name = "[MANIFEST] NAME")]
        words: Vec<String>,
        #[command(flatten)]
        reach: operate::Reach,
    },
    /// Show the running host's supervision tree.
    Tree {
        /// The manifest (default: `agora.toml` in this directory).
        manifest: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        reach: operate::Reach,
    },
    /// The running host's cluster: its nodes (up or down), the leader, and which node runs each
    /// of the root's children.
    Cluster {
        /// The manifest (default: `agora.toml` in this directory).
        manifest: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        reach: operate::Reach,
    },
    /// Kill an agent of the running host, as Erlang's `exit(Pid, kill)`: its supervisor decides
    /// what follows. `agora kill [manifest] NAME`.
    Kill {
        #[arg(num_args = 1..=2, value_name = "[MANIFEST] NAME")]
        words: Vec<String>,
        #[command(flatten)]
        reach: operate::Reach,
    },
    /// Query the running host's event store: `agora events [manifest] [--kind K] [--agent A] ...`.
    Events {
        /// The manifest (default: `agora.toml` in this directory).
        manifest: Option<PathBuf>,
        #[command(flatten)]
        filter: operate::EventFilter,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        reach: operate::Reach,
    },
    /// Print the running host's recent log lines (`agora logs [manifest] [NAME]`: one agent's),
    /// and with `-f` every new one until interrupted.
    Logs {
        #[arg(num_args = 0..=2, value_name = "[MANIFEST] [NAME]")]
        words: Vec<String>,
        #[arg(short, long)]
        follow: bool,
        /// How many recent lines to print first.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        reach: operate::Reach,
    },
    /// Make the running host re-read its manifest and apply the difference (as SIGHUP does):
    /// modules loaded or upgraded, agents started, stopped or restarted, config values changed.
    Reload {
        /// The manifest (default: `agora.toml` in this directory).
        manifest: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        reach: operate::Reach,
    },
    /// List the running host's modules and their versions (at most two each).
    Modules {
        /// The manifest (default: `agora.toml` in this directory).
        manifest: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        reach: operate::Reach,
    },
    /// Load a version of a module into the running host: `agora load [manifest] NAME PATH`. It
    /// becomes the module's current version (what starts, restarts and spawns run).
    Load {
        #[arg(num_args = 2..=3, value_name = "[MANIFEST] NAME PATH")]
        words: Vec<String>,
        /// A label for this version ("1.2.0"), shown with its content hash.
        #[arg(long = "version", value_name = "LABEL")]
        label: Option<String>,
        /// Then upgrade every agent of the module to it.
        #[arg(long)]
        upgrade: bool,
        /// How long an upgraded agent's first message may take to arrive to count as its trial.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
        trial: std::time::Duration,
        #[command(flatten)]
        reach: operate::Reach,
    },
    /// Upgrade an agent to its module's current version, carrying its state (OTP's
    /// `code_change`), with rollback: `agora upgrade [manifest] NAME`, or `--module M` for all.
    Upgrade {
        #[arg(num_args = 0..=2, value_name = "[MANIFEST] NAME")]
        words: Vec<String>,
        /// Every agent of this module that runs an older version, one at a time.
        #[arg(long)]
        module: Option<String>,
        /// How long to wait for the first message, which runs on the new code while the old is kept.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
        trial: std::time::Duration,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        reach: operate::Reach,
    },
    /// Start an agent under a dynamic supervisor: `agora spawn [manifest] SUPERVISOR NAME MODULE`.
    Spawn {
        #[arg(num_args = 3..=4, value_name = "[MANIFEST] SUPERVISOR NAME MODULE")]
        words: Vec<String>,
        /// A config value, `KEY=VALUE`; repeatable.
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_call)]
        config: Vec<(String, String)>,
        /// A grant (messaging, registry, logging, ...); repeatable.
        #[arg(long)]
        grant: Vec<String>,
        /// permanent, transient or temporary.
        #[arg(long, default_value = "permanent")]
        restart: String,
        #[command(flatten)]
        reach: operate::Reach,
    },
    /// Write a new agent project (source, SDK, WIT contract, agora.toml) into directory NAME.
    New {
        name: String,
        #[arg(long, value_enum)]
        lang: new::Lang,
        /// Write it here instead of ./NAME.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check this machine for what building and running agents needs, and say how to fix it.
    Doctor {
        /// The manifest whose languages and limits to check (default: `agora.toml` here, if any).
        manifest: Option<PathBuf>,
    },
    /// Build the manifest's modules with their `build` commands.
    Build {
        /// The manifest (default: `agora.toml` in this directory).
        manifest: Option<PathBuf>,
    },
    /// Validate a manifest and its modules without running anything.
    Check {
        /// The manifest (default: `agora.toml` in this directory).
        manifest: Option<PathBuf>,
    },
    /// Compile components into the module cache so that the next start does not.
    Compile {
        /// Use this manifest's host settings (data_dir, pool) for the engine and the cache.
        #[arg(long)]
        manifest: Option<PathBuf>,
        #[arg(required = true)]
        modules: Vec<PathBuf>,
    },
    /// Run the benchmarks and print their figures.
    Bench(bench::BenchArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::infra::panics::install();
    // Benchmarks start thousands of agents; their lifecycle lines would drown the figures.
    let default_filter = if matches!(cli.command, Command::Bench(_)) { "warn" } else { "info" };
    let detail = match (cli.quiet, cli.verbose) {
        (true, _) => logging::Detail::Quiet,
        (_, true) => logging::Detail::Verbose,
        _ => logging::Detail::Normal,
    };
    logging::init(cli.log_format, detail, cli.color, default_filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    // The command runs as a task on a worker thread, not on the blocking main thread: agents it
    // spawns then start on the same worker's queue instead of waking a parked thread per spawn.
    let command = runtime.spawn(async move {
        match cli.command {
            Command::Run { manifest, admin, call, call_timeout, cluster, node, data_dir } => {
                let calls = Calls { calls: call, timeout: call_timeout };
                let place = Placement { cluster, node, data_dir };
                run(manifest_path(manifest)?, admin, calls, place, cli.log_format).await
            }
            Command::Config { action } => config(action).await,
            Command::New { name, lang, dir } => new::new(&name, lang, dir),
            Command::Ps { manifest, sort, json, reach } => operated(operate::ps(manifest, &reach, &sort, json).await),
            Command::Call { words, timeout, reach } => {
                operated(operate::call(words, &reach, timeout.as_millis() as u64).await)
            }
            Command::Send { words, reach } => operated(operate::send(words, &reach).await),
            Command::Kill { words, reach } => operated(operate::kill(words, &reach).await),
            Command::Stop { words, reach } => operated(operate::stop(words, &reach, false).await),
            Command::Restart { words, reach } => operated(operate::stop(words, &reach, true).await),
            Command::Forget { words, reach } => operated(operate::forget(words, &reach).await),
            Command::Tree { manifest, json, reach } => operated(operate::tree(manifest, &reach, json).await),
            Command::Cluster { manifest, json, reach } => operated(operate::cluster(manifest, &reach, json).await),
            Command::Events { manifest, filter, json, reach } => {
                operated(operate::events(manifest, &reach, &filter, json).await)
            }
            Command::Logs { words, follow, lines, json, reach } => {
                operated(operate::logs(words, &reach, follow, lines, json).await)
            }
            Command::Reload { manifest, json, reach } => operated(operate::reload(manifest, &reach, json).await),
            Command::Modules { manifest, json, reach } => operated(operate::modules(manifest, &reach, json).await),
            Command::Load { words, label, upgrade, trial, reach } => {
                operated(operate::load(words, &reach, label, upgrade, trial.as_millis() as u64).await)
            }
            Command::Upgrade { words, module, trial, json, reach } => {
                operated(operate::upgrade(words, &reach, module, trial.as_millis() as u64, json).await)
            }
            Command::Spawn { words, config, grant, restart, reach } => {
                operated(operate::spawn(words, &reach, config, grant, restart).await)
            }
            Command::Doctor { manifest } => {
                doctor::doctor(manifest.or_else(|| Some(PathBuf::from(PROJECT_MANIFEST)).filter(|p| p.is_file())))
            }
            Command::Build { manifest } => build::build(&manifest_path(manifest)?),
            Command::Check { manifest } => check(manifest_path(manifest)?, cli.log_format),
            Command::Compile { manifest, modules } => compile(manifest, modules),
            Command::Bench(args) => bench::run(args).await,
        }
    });
    match runtime.block_on(command) {
        Ok(Ok(code)) => code,
        Ok(Err(error)) => fail(format!("{error:#}")),
        Err(panic) => fail(format!("the command panicked: {panic}")),
    }
}

/// An operation's outcome, with its documented exit code: 1 when the host refused, 2 when it
/// could not be reached or asked.
fn operated(outcome: anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    outcome.or_else(|error| {
        eprintln!("agora: error: {error:#}");
        Ok(operate::exit_code(&error))
    })
}

fn fail(message: String) -> ExitCode {
    eprintln!("agora: error: {message}");
    ExitCode::FAILURE
}

/// The manifest given, or the project's `agora.toml` in this directory (as `spin` finds
/// `spin.toml`).
fn manifest_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path);
    }
    let here = PathBuf::from(PROJECT_MANIFEST);
    if here.is_file() {
        return Ok(here);
    }
    anyhow::bail!(
        "no manifest given and no {PROJECT_MANIFEST} in this directory: name one (`agora run app.toml`), or start a \
         project with `agora new NAME`"
    )
}

/// The manifest a project directory holds.
pub const PROJECT_MANIFEST: &str = "agora.toml";

fn parse_call(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, payload)) if !name.is_empty() => Ok((name.to_string(), payload.to_string())),
        _ => Err(format!("{text:?}: expected NAME=TEXT, as in `--call greeter=world`")),
    }
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::manifest::units::parse_span(text)
}

/// `agora run --call`: what to ask once the tree is up.
struct Calls {
    calls: Vec<(String, String)>,
    timeout: std::time::Duration,
}

impl Calls {
    /// Make each call in order, printing each reply (or why there is none) on stdout. True
    /// when every call was answered.
    async fn make(self, runtime: &Runtime) -> bool {
        let mut all_answered = true;
        for (name, payload) in self.calls {
            match runtime.call(&name, payload.into_bytes(), self.timeout).await {
                Ok(reply) => println!("{name}: {}", String::from_utf8_lossy(&reply)),
                Err(error) => {
                    all_answered = false;
                    use crate::bindings::Error;
                    let why = match error {
                        Error::NotFound => format!("no agent is registered as {name:?}"),
                        Error::Timeout => format!("no reply within {:?} (--call-timeout)", self.timeout),
                        Error::MailboxFull => "its mailbox is full".into(),
                        Error::Stopped => "it exited before it replied".into(),
                        Error::Failed(why) => format!("it refused the message: {why}"),
                        Error::TooLarge(limit) => format!("the text is over host.max_message ({limit} bytes)"),
                        other => format!("{other:?}"),
                    };
                    println!("{name}: call failed: {why}");
                }
            }
        }
        all_answered
    }
}

/// `agora run`'s flags that say where this host runs: its cluster, node and data.
struct Placement {
    cluster: Option<String>,
    node: Option<String>,
    data_dir: Option<PathBuf>,
}

async fn run(
    path: PathBuf,
    admin: Option<crate::admin::Address>,
    calls: Calls,
    place: Placement,
    format: LogFormat,
) -> anyhow::Result<ExitCode> {
    let mut manifest = Manifest::load(&path)?;
    if let Some(dir) = place.data_dir {
        manifest.host.data_dir = dir;
    }
    let cluster = crate::cluster::RawClusterSettings::resolve(manifest.cluster.as_ref(), place.cluster, place.node)
        .map_err(|(key, message)| anyhow::anyhow!("{}: `cluster.{key}`: {message}", path.display()))?;
    // Before any store opens: a second host on the same data is refused, naming the first.
    let mut lock = HostLock::acquire(&manifest.host.data_dir, &path)?;
    let runtime = Arc::new(Runtime::for_manifest(&manifest)?);
    let signal = stop_signal(runtime.clone())?;
    let admin = admin.or(manifest.host.admin.clone());
    if let Some(address) = &admin {
        let bound = admin::start(runtime.clone(), address.clone()).await?;
        // For people only: the link carries the token (after `#`, so it never reaches a server
        // log), and JSON logs are for machines that may keep them.
        if let (admin::Address::Tcp(socket), LogFormat::Text) = (&bound, format)
            && let Ok(token) = admin::v1::token_for(&runtime.settings)
        {
            eprintln!("dashboard: http://{socket}/#token={token}");
        }
        lock.record_admin(bound)?;
    }
    // The stop future is first polled once every agent has started: the calls go then, and
    // their end stops the host.
    let answered = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let stop = {
        let (runtime, answered) = (runtime.clone(), answered.clone());
        async move {
            if calls.calls.is_empty() {
                return signal.await;
            }
            tokio::select! {
                () = signal => {}
                all = calls.make(&runtime) => answered.store(all, std::sync::atomic::Ordering::SeqCst),
            }
        }
    };
    crate::runtime::warm::WarmPools::fill_now(&runtime).await;
    let outcome = match cluster {
        None => supervision::run(runtime.clone(), &manifest.root, stop).await,
        Some(settings) => {
            let cluster = runtime.join_cluster(settings, crate::cluster::placed_children(&manifest)).await?;
            cluster.set_admin(admin.as_ref().map(ToString::to_string));
            // The root starts with the children placed here now; the rest follow the placement.
            let mut root = manifest.root.clone();
            root.children = cluster.placed_here();
            // Once the root has registered (as it starts), its children follow the placement.
            let placed = {
                let (runtime, cluster, name) = (runtime.clone(), cluster.clone(), root.name.clone());
                async move {
                    while !runtime.supervisors.contains_key(&name) {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    crate::cluster::keep_placed(runtime, cluster, name).await;
                }
            };
            let placed = tokio::spawn(placed);
            let outcome = supervision::run(runtime.clone(), &root, stop).await;
            placed.abort();
            cluster.leave().await;
            outcome
        }
    };
    // Each warm store holds the runtime; nothing will take them now.
    runtime.warm.clear();
    let reason = match &outcome {
        Ok(supervision::RunEnd::Interrupted) => "interrupted",
        Ok(supervision::RunEnd::Finished) => "finished",
        Err(_) => "failed",
    };
    events::run_finished(reason, &runtime.tally);
    // For people; a log reader gets it as an event (JSON logs own stdout).
    match (runtime.services.economics.summary(), format) {
        (Some(summary), LogFormat::Text) => print!("{summary}"),
        (Some(summary), LogFormat::Json) => tracing::info!(event = "economy_summary", %summary),
        (None, _) => {}
    }
    if let Some(admin::Address::Unix(socket)) = &admin {
        // No one will accept on it again.
        let _ = std::fs::remove_file(socket);
    }
    drop(lock);
    outcome?;
    Ok(if answered.load(std::sync::atomic::Ordering::SeqCst) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn config(action: ConfigAction) -> anyhow::Result<ExitCode> {
    let (manifest, method, path, body) = match action {
        ConfigAction::Get { manifest, path } => (manifest, http::Method::GET, path.unwrap_or_default(), None),
        ConfigAction::Set { manifest, path, value } => (manifest, http::Method::PUT, path, Some(value)),
        ConfigAction::Unset { manifest, path } => (manifest, http::Method::DELETE, path, None),
    };
    let manifest = Manifest::load(&manifest)?;
    let address = operate::admin_address(&manifest.host.data_dir)?;
    let token = admin::v1::token_for(&manifest.host)?;
    let (status, body) =
        admin::request(&address, Some(&token), method, &format!("/config/{path}"), body.unwrap_or_default()).await?;
    if status.is_success() {
        print!("{body}");
        if !body.ends_with('\n') {
            println!();
        }
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!("{} ({status})", body.trim_end())
    }
}

fn check(path: PathBuf, format: LogFormat) -> anyhow::Result<ExitCode> {
    let manifest = Manifest::load(&path)?;
    // Loading compiles (or finds in the cache) and links every module, so a component of the
    // wrong world fails here rather than at run time.
    let runtime = Runtime::for_check(&manifest)?;
    // What each start would refuse, refused here with the same words.
    for spec in manifest.agents() {
        if let Some(module) = runtime.module(&spec.module)
            && let Err(why) = crate::runtime::agent::fits(&module, spec)
                .and_then(|()| crate::runtime::agent::durable_fits(&module, spec))
        {
            anyhow::bail!("{}: agent {:?}: {why}", path.display(), spec.name);
        }
    }
    let (modules, agents) = (manifest.modules.len(), manifest.agents().len());
    match format {
        LogFormat::Text => println!("{}: ok ({modules} modules, {agents} agents)", path.display()),
        // JSON owns stdout: the verdict is one more object.
        LogFormat::Json => tracing::info!(event = "check_passed", manifest = %path.display(), modules, agents,
            "{}: ok", path.display()),
    }
    Ok(ExitCode::SUCCESS)
}

fn compile(manifest: Option<PathBuf>, modules: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    let (settings, meter_fuel) = match manifest {
        Some(path) => {
            let manifest = Manifest::load(&path)?;
            (manifest.host, manifest.services.economics.meters_compute())
        }
        None => (HostSettings::default(), false),
    };
    let engines = crate::runtime::engine::Engines::build(&settings, meter_fuel)?;
    let loader = ModuleLoader::new(&engines, settings.data_dir.join("cache"), settings.max_memory.bytes())?;
    for module in modules {
        let (artifact, outcome) = loader.precompile(&module)?;
        println!("{} -> {} ({})", module.display(), artifact.display(), outcome.as_str());
    }
    Ok(ExitCode::SUCCESS)
}

/// Signals that arrive within this of the first are the same request: GNU `timeout` (and a
/// shell's process-group kill) delivers SIGTERM twice at once.
const SAME_SIGNAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Resolves on Ctrl-C or SIGTERM; another one during the graceful shutdown (later than
/// [`SAME_SIGNAL`] after the first) exits at once. SIGHUP reloads the manifest (`agora reload`),
/// as daemons do; the host keeps running when its terminal goes. The handlers are installed before this returns, so a signal
/// that arrives while agents are still starting is not lost to the default action (which would
/// kill the process).
fn stop_signal(runtime: Arc<Runtime>) -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!(event = "reload_requested", signal = "SIGHUP", "SIGHUP: reloading the manifest");
            if let Err(error) = crate::runtime::reload::reload(&runtime).await {
                tracing::error!(event = "reload_failed", %error, "reload refused: {error}");
            }
        }
    });
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        let first = tokio::time::Instant::now();
        tracing::info!(
            event = "shutdown_requested",
            "stopping agents in reverse start order (signal again to exit without waiting)"
        );
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                if first.elapsed() >= SAME_SIGNAL {
                    break;
                }
            }
            eprintln!("agora: second signal, exiting without waiting for agents");
            std::process::exit(130);
        });
    })
}
