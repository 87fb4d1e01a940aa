//! `agora reload` (and SIGHUP): re-read the manifest the host runs and apply the difference, as
//! an OTP release upgrade does. In order:
//!
//! 1. The manifest is read and checked whole, and every new or changed module compiled; any
//!    error here changes nothing.
//! 2. New modules join the catalog; changed ones get a new current version (refused, and
//!    reported, while two versions already serve agents).
//! 3. Each supervisor of the new tree that runs reconciles its children: new ones start, removed
//!    ones stop, agents whose entry changed restart on the new entry.
//! 4. The agents of changed modules are upgraded, one at a time, with their state.
//! 5. `[config]` values take the new manifest's, and their subscribers are told.
//!
//! `host.max_batch` applies at once (each batch reads it as it goes); the other `[host]`
//! settings and the other service sections apply at the next start, and the report says when
//! they differ. Modules gone from the manifest stay loaded while agents may run them.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Runtime;
use super::catalog::Installed;
use crate::manifest::{ChildSpec, Manifest, SupervisorSpec};
use crate::supervision::{Operate, Reconciled};

/// What a reload did.
#[derive(Debug, Serialize)]
pub struct Reloaded {
    pub modules: Vec<Value>,
    pub children: Vec<Reconciled>,
    pub upgrades: Vec<Value>,
    pub config: Vec<Value>,
    /// `[host]` settings applied at once: `{ "key", "value" }`.
    pub host: Vec<Value>,
    /// Parts of the manifest that changed but apply only at the next start.
    pub deferred: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("this host was not started from a manifest file")]
    NoManifest,
    #[error("{0}; nothing was changed")]
    Invalid(String),
}

/// How long an upgraded agent's first message may take to arrive, during a reload.
const TRIAL: Duration = Duration::from_millis(200);

pub async fn reload(runtime: &Arc<Runtime>) -> Result<Reloaded, ReloadError> {
    let path = runtime.manifest_path.clone().ok_or(ReloadError::NoManifest)?;
    let _one_at_a_time = runtime.reloading.lock().await;
    let manifest = Manifest::load(&path).map_err(|e| ReloadError::Invalid(e.to_string()))?;

    // 1. Compile what is new or changed before anything changes.
    let mut compiled = Vec::new();
    for (name, file) in &manifest.modules {
        let bytes = std::fs::read(file).map_err(|e| ReloadError::Invalid(format!("{}: {e}", file.display())))?;
        let hash: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        if runtime.module(name).is_some_and(|current| current.version.hash == hash) {
            continue;
        }
        let (loader_runtime, name, file) = (runtime.clone(), name.clone(), file.clone());
        let label = manifest.module_versions.get(&name).cloned();
        let loaded = tokio::task::spawn_blocking(move || loader_runtime.loader.load(&name, &file, label.as_deref()))
            .await
            .map_err(|e| ReloadError::Invalid(format!("compiling was interrupted: {e}")))?
            .map_err(|e| ReloadError::Invalid(e.to_string()))?;
        compiled.push(Arc::new(loaded));
    }
    // A module the new tree needs must be there after this reload.
    let mut modules = Vec::new();
    let mut changed = Vec::new();
    for module in compiled {
        let (name, version) = (module.name.clone(), module.version.to_string());
        match runtime.catalog.install(module, |m| runtime.running_on(m)) {
            Ok(Installed::New) => modules.push(json!({ "name": name, "action": "loaded", "version": version })),
            Ok(Installed::Unchanged) => {}
            Ok(Installed::Replaced { old }) => {
                modules.push(
                    json!({ "name": name, "action": "replaced", "version": version, "old": old.version.to_string() }),
                );
                changed.push(name);
            }
            Err(error) => modules.push(json!({ "name": name, "action": "failed", "detail": error.to_string() })),
        }
    }

    // 3. The tree, supervisor by supervisor.
    let mut children = Vec::new();
    let mut supervisors = Vec::new();
    walk(&manifest.root, &mut supervisors);
    for supervisor in supervisors {
        let Some(operators) = runtime.supervisors.get(&supervisor.name).map(|o| o.clone()) else { continue };
        let (reply, answer) = tokio::sync::oneshot::channel();
        // In a cluster the root runs only the children placed on this node: the new ones are
        // placed by the leader, and come here if they are assigned here.
        let wanted = match runtime.cluster.get() {
            Some(cluster) if supervisor.name == manifest.root.name => {
                cluster.set_children(crate::cluster::placed_children(&manifest));
                cluster.placed_here()
            }
            _ => supervisor.children.clone(),
        };
        if operators.send(Operate::Reconcile { children: wanted, reply }).is_ok()
            && let Ok(done) = answer.await
        {
            children.extend(done);
        }
    }

    // 4. The agents of changed modules, onto their new code.
    let mut upgrades = Vec::new();
    for name in &changed {
        let Some(current) = runtime.module(name) else { continue };
        let behind: Vec<_> = runtime
            .directory
            .list()
            .into_iter()
            .filter(|listed| listed.module.name == *name && !Arc::ptr_eq(&listed.module, &current))
            .collect();
        for listed in behind {
            let outcome = super::upgrade::upgrade(runtime, &listed, TRIAL).await;
            upgrades.push(match outcome {
                Ok(done) => json!({ "agent": &*listed.name, "upgraded": done }),
                Err(error) => json!({ "agent": &*listed.name, "failed": error.to_string() }),
            });
        }
    }

    // 5. Config values.
    let config = match runtime.services.config.reload(&manifest.services.config) {
        Ok(changes) => changes
            .into_iter()
            .map(|(path, value)| {
                let shown =
                    if runtime.services.config.is_secret(&path) { value.map(|_| "<secret>".into()) } else { value };
                json!({ "path": path, "value": shown })
            })
            .collect(),
        Err(error) => vec![json!({ "failed": error.to_string() })],
    };

    let mut host = Vec::new();
    let max_batch = manifest.host.max_batch;
    if runtime.max_batch.swap(max_batch, std::sync::atomic::Ordering::Relaxed) != max_batch {
        host.push(json!({ "key": "max_batch", "value": max_batch }));
    }
    let mut deferred = Vec::new();
    // Compared without the settings that applied at once.
    let later = crate::manifest::HostSettings { max_batch: runtime.settings.max_batch, ..manifest.host.clone() };
    if format!("{later:?}") != format!("{:?}", runtime.settings) {
        deferred.push("[host]".to_string());
    }
    if format!("{:?}", manifest.defaults) != format!("{:?}", runtime.defaults) {
        deferred.push("[defaults]".to_string());
    }
    let report = Reloaded { modules, children, upgrades, config, host, deferred };
    tracing::info!(event = "reloaded", report = %serde_json::to_string(&report).unwrap_or_default(),
        "manifest reloaded: {} module change(s), {} child change(s), {} upgrade(s), {} config change(s)",
        report.modules.len(), report.children.len(), report.upgrades.len(), report.config.len());
    Ok(report)
}

/// Every supervisor of a tree, parents before their children.
fn walk<'a>(supervisor: &'a SupervisorSpec, into: &mut Vec<&'a SupervisorSpec>) {
    into.push(supervisor);
    for child in &supervisor.children {
        if let ChildSpec::Supervisor(nested) = child {
            walk(nested, into);
        }
    }
}
