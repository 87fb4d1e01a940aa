//! The `agora` command line.

mod logging;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::capabilities::events::lifecycle as events;
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
        manifest: PathBuf,
        /// Serve the admin endpoint here instead of at the manifest's `host.admin`.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
    },
    /// Read or change the config of a running host, through its admin endpoint.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Validate a manifest and its modules without running anything.
    Check { manifest: PathBuf },
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
    // Benchmarks start thousands of agents; their lifecycle lines would drown the figures.
    let default_filter = if matches!(cli.command, Command::Bench(_)) { "warn" } else { "info" };
    logging::init(cli.log_format, default_filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    // The command runs as a task on a worker thread, not on the blocking main thread: agents it
    // spawns then start on the same worker's queue instead of waking a parked thread per spawn.
    let command = runtime.spawn(async move {
        match cli.command {
            Command::Run { manifest, admin } => run(manifest, admin, cli.log_format).await,
            Command::Config { action } => config(action).await,
            Command::Check { manifest } => check(manifest),
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

fn fail(message: String) -> ExitCode {
    eprintln!("agora: error: {message}");
    ExitCode::FAILURE
}

async fn run(path: PathBuf, admin: Option<std::net::SocketAddr>, format: LogFormat) -> anyhow::Result<ExitCode> {
    let manifest = Manifest::load(&path)?;
    let runtime = Arc::new(Runtime::for_manifest(&manifest)?);
    let stop = stop_signal()?;
    if let Some(address) = admin.or(manifest.host.admin) {
        admin::start(runtime.clone(), address).await?;
    }
    let outcome = supervision::run(runtime.clone(), &manifest.root, stop).await;
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
    let _ = std::fs::remove_file(admin::address_file(&runtime.settings.data_dir));
    outcome?;
    Ok(ExitCode::SUCCESS)
}

async fn config(action: ConfigAction) -> anyhow::Result<ExitCode> {
    let (manifest, method, path, body) = match action {
        ConfigAction::Get { manifest, path } => (manifest, http::Method::GET, path.unwrap_or_default(), None),
        ConfigAction::Set { manifest, path, value } => (manifest, http::Method::PUT, path, Some(value)),
        ConfigAction::Unset { manifest, path } => (manifest, http::Method::DELETE, path, None),
    };
    let manifest = Manifest::load(&manifest)?;
    let recorded = std::fs::read_to_string(admin::address_file(&manifest.host.data_dir)).ok();
    let address = match recorded.and_then(|a| a.trim().parse().ok()).or(manifest.host.admin) {
        Some(address) => address,
        None => anyhow::bail!("no running host found: the manifest sets no host.admin and no host recorded one"),
    };
    let (status, body) = admin::request(address, method, &format!("/config/{path}"), body).await?;
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

fn check(path: PathBuf) -> anyhow::Result<ExitCode> {
    let manifest = Manifest::load(&path)?;
    // Loading compiles (or finds in the cache) and links every module, so a component of the
    // wrong world fails here rather than at run time.
    Runtime::for_check(&manifest)?;
    println!("{}: ok ({} modules, {} agents)", path.display(), manifest.modules.len(), manifest.agents().len());
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

/// Resolves on Ctrl-C or SIGTERM; a second signal during the graceful shutdown exits at once.
/// The handlers are installed before this returns, so a signal that arrives while agents are
/// still starting is not lost to the default action (which would kill the process).
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!(event = "shutdown_requested", "stopping agents in reverse start order");
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            eprintln!("agora: second signal, exiting without waiting for agents");
            std::process::exit(130);
        });
    })
}
