//! `agora doctor`: what this machine lacks to build and run agents, each problem with what to
//! do about it. It checks the Rust wasm target, each language's toolchain, the kernel's mapping
//! limit against the manifest's `max_agents`, and the data directory. Missing toolchains of
//! languages a project does not use are notes, not failures.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use super::new::{Lang, toolchain};
use crate::infra::host_lock;
use crate::manifest::{HostSettings, Manifest};

/// Memory mappings one live agent may need: its pool slot's and its fiber stack's.
const MAPPINGS_PER_AGENT: u64 = 4;

#[derive(PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Verdict {
    Ok,
    Note,
    Problem,
}

struct Report {
    worst: Verdict,
}

impl Report {
    fn say(&mut self, verdict: Verdict, what: &str, fix: Option<String>) {
        self.worst = self.worst.max(verdict);
        let mark = match verdict {
            Verdict::Ok => "ok     ",
            Verdict::Note => "note   ",
            Verdict::Problem => "problem",
        };
        println!("{mark} {what}");
        if let Some(fix) = fix {
            println!("        -> {fix}");
        }
    }
}

/// `tool` as found on PATH.
fn on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(tool)).find(|candidate| candidate.is_file())
}

/// The languages a manifest's build commands use, by their tools.
fn languages_used(manifest: &Path) -> Vec<Lang> {
    let commands: Vec<String> = Manifest::modules_of(manifest)
        .map(|modules| modules.into_iter().filter_map(|m| m.build).collect())
        .unwrap_or_default();
    let uses = |word: &str| commands.iter().any(|c| c.contains(word));
    let mut used = Vec::new();
    for (lang, word) in [(Lang::Rust, "cargo"), (Lang::Python, "componentize-py"), (Lang::Js, "componentize-js")] {
        if uses(word) {
            used.push(lang);
        }
    }
    // A C project's build script is where its tools are named.
    if uses("build.sh") && manifest.parent().is_some_and(|dir| dir.join("agent.c").is_file()) {
        used.push(Lang::C);
    }
    used
}

pub fn doctor(manifest: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let mut report = Report { worst: Verdict::Ok };
    let (settings, used) = match &manifest {
        Some(path) => {
            println!("checking for {}", path.display());
            let settings = match Manifest::load(path) {
                Ok(manifest) => manifest.host,
                // Modules not built yet are expected here; any other error is the manifest's own.
                Err(error) => {
                    let unbuilt = error.message.contains("build it with `agora build`");
                    let (verdict, fix) = if unbuilt {
                        (Verdict::Note, "agora build")
                    } else {
                        (Verdict::Problem, "fix the manifest where the error points")
                    };
                    report.say(verdict, &format!("the manifest does not check: {error}"), Some(fix.into()));
                    HostSettings::default()
                }
            };
            (settings, Some(languages_used(path)))
        }
        None => (HostSettings::default(), None),
    };

    // Rust agents build for wasm32-wasip2.
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    let rust_used = used.as_ref().is_none_or(|u| u.contains(&Lang::Rust));
    let miss = if rust_used { Verdict::Problem } else { Verdict::Note };
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == "wasm32-wasip2") => {
            report.say(Verdict::Ok, "Rust target wasm32-wasip2 is installed", None)
        }
        Ok(_) => {
            report.say(miss, "Rust target wasm32-wasip2 is missing", Some("rustup target add wasm32-wasip2".into()))
        }
        Err(_) => {
            report.say(miss, "rustup is not on PATH", Some("install Rust with rustup (https://rustup.rs)".into()))
        }
    }

    for lang in [Lang::Rust, Lang::Python, Lang::Js, Lang::C] {
        let needed = used.as_ref().is_none_or(|u| u.contains(&lang));
        for (tool, install) in toolchain(lang) {
            match on_path(tool) {
                Some(found) => report.say(Verdict::Ok, &format!("{tool} is {}", found.display()), None),
                None => {
                    let verdict = if needed && used.is_some() { Verdict::Problem } else { Verdict::Note };
                    report.say(
                        verdict,
                        &format!("{tool} is not on PATH ({} agents)", name(lang)),
                        Some(install.to_string()),
                    )
                }
            }
        }
    }

    // Every live agent holds memory mappings; the kernel caps them per process.
    let limit = std::fs::read_to_string("/proc/sys/vm/max_map_count").ok().and_then(|v| v.trim().parse::<u64>().ok());
    let wanted = u64::from(settings.max_agents) * MAPPINGS_PER_AGENT + 10_000;
    match limit {
        Some(limit) if limit >= wanted => report.say(
            Verdict::Ok,
            &format!("vm.max_map_count = {limit}: enough for max_agents = {}", settings.max_agents),
            None,
        ),
        Some(limit) => report.say(
            Verdict::Problem,
            &format!(
                "vm.max_map_count = {limit}: too few for max_agents = {} (about {wanted} needed)",
                settings.max_agents
            ),
            Some(format!("sudo sysctl -w vm.max_map_count={wanted}, or lower host.max_agents")),
        ),
        None => report.say(Verdict::Note, "vm.max_map_count cannot be read (not Linux?)", None),
    }

    let data = &settings.data_dir;
    match host_lock::running(data) {
        Some(host) => report.say(
            Verdict::Note,
            &format!("data_dir {} is in use by a running host (pid {})", data.display(), host.pid),
            Some("stop it before starting another host on this data_dir".into()),
        ),
        None => match writable(data) {
            Ok(()) => report.say(Verdict::Ok, &format!("data_dir {} is writable", data.display()), None),
            Err(why) => report.say(
                Verdict::Problem,
                &format!("data_dir {} is not usable: {why}", data.display()),
                Some("point host.data_dir at a directory this user can write".into()),
            ),
        },
    }
    Ok(if report.worst == Verdict::Problem { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn name(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
        Lang::Js => "JavaScript",
        Lang::C => "C",
    }
}

/// Whether the data directory exists as a directory (or can be made) and takes a file.
fn writable(dir: &Path) -> Result<(), String> {
    if dir.exists() && !dir.is_dir() {
        return Err("it is not a directory".into());
    }
    let existed = dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let probe = dir.join(".agora-doctor");
    let written = std::fs::write(&probe, b"").map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&probe);
    if !existed {
        let _ = std::fs::remove_dir(dir);
    }
    written
}
