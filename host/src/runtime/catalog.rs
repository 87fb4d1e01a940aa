//! The modules a host serves, by name: the current version (what a start, a restart or a spawn
//! runs) and, while agents still run it, the version before. As in OTP, at most two versions of
//! a module serve agents at once; where OTP purges the oldest by killing the processes that run
//! it, Agora refuses a third version until the agents on the old one are upgraded or stopped
//! (nothing is lost by loading code).
//!
//! Modules come from the manifest's `[modules]`, from components spawned by path under
//! `host.spawn_paths` (named by their canonical path), and from the operator (`agora load`),
//! compiled in the background ([`Loads`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use super::modules::{CacheOutcome, Module};

/// A module's versions.
#[derive(Clone)]
pub struct Versions {
    pub current: Module,
    /// The version before, while agents may still run it.
    pub old: Option<Module>,
}

/// What installing a version did.
pub enum Installed {
    /// The first version of this name.
    New,
    /// The same bytes as the current version: nothing changed (not even its label).
    Unchanged,
    /// It is current now; `old` is the version agents still run until they are upgraded.
    Replaced { old: Module },
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "module {name:?} already serves two versions ({current} and {old}, run by {agents} agent(s)); \
         upgrade or stop the agents on {old} before loading a third"
    )]
    TwoVersions { name: String, current: String, old: String, agents: usize },
}

#[derive(Default)]
pub struct Catalog {
    names: RwLock<BTreeMap<String, Versions>>,
}

impl Catalog {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Versions>> {
        self.names.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Versions>> {
        self.names.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current version of `name`.
    pub fn current(&self, name: &str) -> Option<Module> {
        self.read().get(name).map(|versions| versions.current.clone())
    }

    /// Add a module under its name unless one is there; the one that is there wins (two spawns
    /// that loaded the same path at once share one).
    pub fn insert_new(&self, module: Module) -> Module {
        let mut names = self.write();
        let versions = names.entry(module.name.clone()).or_insert(Versions { current: module, old: None });
        versions.current.clone()
    }

    /// Make `module` the current version of its name. `running_on` counts the agents that run
    /// a version: an old version nobody runs is dropped first.
    pub fn install(&self, module: Module, running_on: impl Fn(&Module) -> usize) -> Result<Installed, InstallError> {
        let mut names = self.write();
        let Some(versions) = names.get_mut(&module.name) else {
            names.insert(module.name.clone(), Versions { current: module, old: None });
            return Ok(Installed::New);
        };
        if versions.current.version.hash == module.version.hash {
            // The same code: its agents run it already, under the version they were given.
            return Ok(Installed::Unchanged);
        }
        if let Some(old) = &versions.old {
            let agents = running_on(old);
            if agents > 0 {
                return Err(InstallError::TwoVersions {
                    name: module.name.clone(),
                    current: versions.current.version.to_string(),
                    old: old.version.to_string(),
                    agents,
                });
            }
        }
        let old = std::mem::replace(&mut versions.current, module);
        versions.old = Some(old.clone());
        Ok(Installed::Replaced { old })
    }

    /// Forget old versions that no agent runs any more.
    pub fn purge(&self, running_on: impl Fn(&Module) -> usize) {
        for versions in self.write().values_mut() {
            if versions.old.as_ref().is_some_and(|old| running_on(old) == 0) {
                versions.old = None;
            }
        }
    }

    /// Every module, by name.
    pub fn list(&self) -> Vec<(String, Versions)> {
        self.read().iter().map(|(name, versions)| (name.clone(), versions.clone())).collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }
}

/// Modules being loaded by the operator, compiled off the async threads.
#[derive(Default)]
pub struct Loads {
    next: AtomicU64,
    jobs: Mutex<BTreeMap<u64, Arc<Load>>>,
}

/// One load, as the API reports it.
pub struct Load {
    pub id: u64,
    pub name: String,
    pub path: std::path::PathBuf,
    pub label: Option<String>,
    pub started: Instant,
    pub outcome: Mutex<LoadOutcome>,
}

#[derive(Clone)]
pub enum LoadOutcome {
    Compiling,
    Ready { version: String, cache: CacheOutcome, replaced: Option<String>, millis: f64 },
    Failed { error: String, code: &'static str },
}

/// Finished loads kept for the operator to read; older ones are forgotten.
const KEPT: usize = 64;

impl Loads {
    pub fn begin(&self, name: &str, path: std::path::PathBuf, label: Option<String>) -> Arc<Load> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let load = Arc::new(Load {
            id,
            name: name.to_string(),
            path,
            label,
            started: Instant::now(),
            outcome: Mutex::new(LoadOutcome::Compiling),
        });
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.insert(id, load.clone());
        while jobs.len() > KEPT {
            let finished = jobs
                .iter()
                .find(|(_, job)| {
                    !matches!(*job.outcome.lock().unwrap_or_else(|p| p.into_inner()), LoadOutcome::Compiling)
                })
                .map(|(id, _)| *id);
            match finished {
                Some(id) => drop(jobs.remove(&id)),
                None => break,
            }
        }
        load
    }

    pub fn get(&self, id: u64) -> Option<Arc<Load>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Load>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}

impl Load {
    pub fn outcome(&self) -> LoadOutcome {
        self.outcome.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn finish(&self, outcome: LoadOutcome) {
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = outcome;
    }
}

/// A version label: 1 to 64 characters of letters, digits and `.`, `-`, `_`, `+` (semver
/// fits), so that it reads well in `module@version`.
pub fn check_label(label: &str) -> Result<&str, String> {
    let fine = |c: char| c.is_ascii_alphanumeric() || ".-_+".contains(c);
    if label.is_empty() || label.len() > 64 || !label.chars().all(fine) {
        return Err(format!(
            "version label {label:?}: 1 to 64 letters, digits and `.`, `-`, `_`, `+` (\"1.2.0\", \"v2\")"
        ));
    }
    Ok(label)
}

/// A module name given by the operator: as a manifest key would be.
pub fn check_name(name: &str) -> Result<&str, String> {
    let fine = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(fine) {
        return Err(format!("module name {name:?}: 1 to 64 letters, digits and `-`, `_`, `.`"));
    }
    Ok(name)
}
