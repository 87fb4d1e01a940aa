//! The `config` capability: the manifest's `[config]` tree, readable by agents, changeable while
//! the host runs at the paths the manifest marks updatable.
//!
//! ```toml
//! [config]
//! updatable = ["pricing", "features.beta"]   # these paths and everything under them
//! secret = ["db.password"]                   # never served by the admin endpoint, never logged
//! max_entries = 10000                        # the live config's bounds (updates beyond: refused)
//! max_bytes = "16MiB"
//! [config.values]
//! greeting = "hello"
//! pricing = { rate = 3, currency = "EUR" }
//! ```
//!
//! Values are kept flat, by dotted path, in a sorted map behind a read-write lock: reads vastly
//! outnumber writes, and a prefix listing is a range scan. A change is published to the agents
//! subscribed to any prefix of its path, each once, and journaled as a `config_changed` event.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use serde::Deserialize;

use super::hooks::Hooks;
use super::{Capability, Entering, Getter, Leaving, SectionError, Served, Startup, View};
use crate::bindings::{Error, config};
use crate::messaging::{AgentId, Router};
use crate::runtime::state::AgentState;

/// The topic every change notification arrives on.
pub const CONFIG_TOPIC: &str = "agora:config";

/// `[config]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigSection {
    pub updatable: Vec<toml::Spanned<String>>,
    /// Paths (and everything under them) whose values agents may read but the admin endpoint
    /// never serves, and no log line or event shows.
    pub secret: Vec<toml::Spanned<String>>,
    /// At most this many values, and this many bytes of paths and values, live at once: an
    /// update beyond either is refused (the manifest's own values count too).
    pub max_entries: toml::Spanned<usize>,
    pub max_bytes: toml::Spanned<crate::manifest::ByteSize>,
    pub values: toml::Table,
}

impl Default for ConfigSection {
    fn default() -> Self {
        ConfigSection {
            updatable: Vec::new(),
            secret: Vec::new(),
            max_entries: toml::Spanned::new(0..0, 10_000),
            max_bytes: toml::Spanned::new(0..0, crate::manifest::ByteSize::mib(16)),
            values: toml::Table::new(),
        }
    }
}

/// Why an update was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpdateError {
    #[error("config path {0:?} is not updatable; the manifest's [config] updatable list allows: {1}")]
    NotUpdatable(String, String),
    #[error("invalid config path {0:?}: use dotted segments of A-Z a-z 0-9 - _")]
    InvalidPath(String),
    #[error("config path {0:?} names a table; update its values one by one")]
    IsTable(String),
    #[error("the live config is full ({0}); the manifest's [config] max_entries and max_bytes bound it")]
    Full(String),
}

/// The live config of one host.
pub struct ConfigService {
    values: RwLock<Values>,
    updatable: Vec<String>,
    secret: Vec<String>,
    max_entries: usize,
    max_bytes: u64,
    /// Updates refused because the config was full.
    pub refused: std::sync::atomic::AtomicU64,
    /// Subscribers by prefix ("" = everything).
    subscribers: RwLock<BTreeMap<String, BTreeSet<AgentId>>>,
    router: Arc<Router>,
}

impl ConfigService {
    pub fn new(section: &ConfigSection, router: Arc<Router>) -> ConfigService {
        let mut values = BTreeMap::new();
        flatten("", &section.values, &mut values);
        let bytes = values.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
        ConfigService {
            values: RwLock::new(Values { map: values, bytes }),
            updatable: section.updatable.iter().map(|p| p.get_ref().clone()).collect(),
            secret: section.secret.iter().map(|p| p.get_ref().clone()).collect(),
            max_entries: *section.max_entries.get_ref(),
            max_bytes: section.max_bytes.get_ref().bytes(),
            refused: Default::default(),
            subscribers: RwLock::default(),
            router,
        }
    }

    /// Whether `path` is secret: agents read it, the admin endpoint and the logs never show it.
    pub fn is_secret(&self, path: &str) -> bool {
        self.secret.iter().any(|secret| is_under(path, secret))
    }

    pub fn get(&self, path: &str) -> Result<Option<String>, Error> {
        let values = self.values.read().unwrap_or_else(|p| p.into_inner());
        let values = &values.map;
        if let Some(value) = values.get(path) {
            return Ok(Some(value.clone()));
        }
        if !path.is_empty() && values.range(format!("{path}.")..).next().is_some_and(|(k, _)| is_under(k, path)) {
            return Err(Error::Invalid(format!("config path {path:?} names a table; use `entries`")));
        }
        Ok(None)
    }

    pub fn list(&self, prefix: &str) -> Vec<(String, String)> {
        let values = self.values.read().unwrap_or_else(|p| p.into_inner());
        values
            .map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| is_under(k, prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Change (or with `None`, remove) the value at `path`, if the manifest allows it; returns the
    /// number of agents notified.
    pub fn update(&self, path: &str, value: Option<String>) -> Result<usize, UpdateError> {
        if !is_valid_path(path) {
            return Err(UpdateError::InvalidPath(path.to_string()));
        }
        if !self.updatable.iter().any(|allowed| is_under(path, allowed)) {
            let allowed = if self.updatable.is_empty() { "nothing".to_string() } else { self.updatable.join(", ") };
            return Err(UpdateError::NotUpdatable(path.to_string(), allowed));
        }
        {
            let mut values = self.values.write().unwrap_or_else(|p| p.into_inner());
            if values.map.range(format!("{path}.")..).next().is_some_and(|(k, _)| is_under(k, path)) {
                return Err(UpdateError::IsTable(path.to_string()));
            }
            let old = values.map.get(path).map(|v| (path.len() + v.len()) as u64);
            match &value {
                Some(value) => {
                    let entries = values.map.len() + usize::from(old.is_none());
                    let bytes = values.bytes - old.unwrap_or(0) + (path.len() + value.len()) as u64;
                    if entries > self.max_entries || bytes > self.max_bytes {
                        self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let held = format!("{} values, {} bytes", values.map.len(), values.bytes);
                        return Err(UpdateError::Full(held));
                    }
                    values.map.insert(path.to_string(), value.clone());
                    values.bytes = bytes;
                }
                None => {
                    if values.map.remove(path).is_some() {
                        values.bytes -= old.unwrap_or(0);
                    }
                }
            }
        }
        Ok(self.notify(path, value))
    }

    /// Take the values of a reloaded manifest's `[config]`: every path whose value differs is
    /// set (or removed) and its subscribers notified, as an update would; the lists of updatable
    /// and secret paths and the bounds stay those the host started with. A table that would
    /// exceed the bounds changes nothing. Returns the changed paths and their new values.
    pub fn reload(&self, section: &ConfigSection) -> Result<Vec<(String, Option<String>)>, UpdateError> {
        let mut wanted = BTreeMap::new();
        flatten("", &section.values, &mut wanted);
        let bytes: u64 = wanted.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
        if wanted.len() > self.max_entries || bytes > self.max_bytes {
            return Err(UpdateError::Full(format!("{} values, {bytes} bytes", wanted.len())));
        }
        let changes: Vec<(String, Option<String>)> = {
            let mut values = self.values.write().unwrap_or_else(|p| p.into_inner());
            let mut changes: Vec<(String, Option<String>)> =
                values.map.keys().filter(|path| !wanted.contains_key(*path)).map(|path| (path.clone(), None)).collect();
            changes.extend(
                wanted
                    .iter()
                    .filter(|(path, value)| values.map.get(*path) != Some(value))
                    .map(|(path, value)| (path.clone(), Some(value.clone()))),
            );
            values.map = wanted;
            values.bytes = bytes;
            changes
        };
        for (path, value) in &changes {
            self.notify(path, value.clone());
        }
        Ok(changes)
    }

    fn notify(&self, path: &str, value: Option<String>) -> usize {
        let watchers: BTreeSet<AgentId> = {
            let subscribers = self.subscribers.read().unwrap_or_else(|p| p.into_inner());
            subscribers
                .iter()
                .filter(|(prefix, _)| is_under(path, prefix))
                .flat_map(|(_, ids)| ids.iter().copied())
                .collect()
        };
        let topic: Arc<str> = CONFIG_TOPIC.into();
        let change = crate::bindings::types::ConfigChange { path: path.to_string(), value };
        self.router.notify(watchers, &topic, &crate::messaging::Notice::ConfigChanged(change))
    }

    fn subscribe(&self, id: AgentId, prefix: &str) {
        let mut subscribers = self.subscribers.write().unwrap_or_else(|p| p.into_inner());
        subscribers.entry(prefix.to_string()).or_default().insert(id);
    }

    fn unsubscribe(&self, id: AgentId, prefix: &str) -> bool {
        let mut subscribers = self.subscribers.write().unwrap_or_else(|p| p.into_inner());
        let Some(ids) = subscribers.get_mut(prefix) else { return false };
        let removed = ids.remove(&id);
        if ids.is_empty() {
            subscribers.remove(prefix);
        }
        removed
    }

    /// Drop an exited agent's subscriptions.
    pub fn forget(&self, id: AgentId, prefixes: &[String]) {
        for prefix in prefixes {
            self.unsubscribe(id, prefix);
        }
    }
}

/// The flat values, with what their paths and values weigh together.
struct Values {
    map: BTreeMap<String, String>,
    bytes: u64,
}

/// `path` is `prefix` or below it ("" is above everything).
fn is_under(path: &str, prefix: &str) -> bool {
    prefix.is_empty() || path == prefix || (path.starts_with(prefix) && path.as_bytes()[prefix.len()] == b'.')
}

/// Dotted segments of A-Z a-z 0-9 - _.
pub fn is_valid_path(path: &str) -> bool {
    let segment_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    path.split('.').all(segment_ok)
}

fn flatten(prefix: &str, table: &toml::Table, into: &mut BTreeMap<String, String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::Table(inner) => flatten(&path, inner, into),
            other => {
                into.insert(path, crate::manifest::render_value(other));
            }
        }
    }
}

/// Per-agent state: the prefixes to drop from the subscriber lists when the agent exits.
#[derive(Default)]
pub struct AgentConfig {
    pub subscriptions: Vec<String>,
}

/// Change a config value (from the admin endpoint): notify subscribers, journal it (a secret's
/// value as `null`, with `"secret": true`).
pub fn update(host: &crate::runtime::Runtime, path: &str, value: Option<String>) -> Result<usize, UpdateError> {
    let config = &host.services.config;
    let notified = config.update(path, value.clone()).inspect_err(|error| {
        if matches!(error, UpdateError::Full(_)) {
            tracing::warn!(event = "config_full", path, "config update refused: {error}");
        }
    })?;
    let secret = config.is_secret(path);
    let shown = if secret { None } else { value.as_deref() };
    super::events::lifecycle::config_changed(&host.services.events.store, path, shown, secret, notified);
    Ok(notified)
}

/// The capability (grant "config"); its shared state is the host's live config.
pub type Config = ConfigService;

impl Capability for ConfigService {
    const GRANT: Option<&'static str> = Some("config");
    type Section = ConfigSection;
    type Shared = ConfigService;
    type Agent = AgentConfig;

    fn validate(section: &ConfigSection) -> Result<(), SectionError> {
        let lists = [("updatable", &section.updatable), ("secret", &section.secret)];
        for (list, paths) in lists {
            for (index, path) in paths.iter().enumerate() {
                if !is_valid_path(path.get_ref()) {
                    let message = format!("invalid path {:?}: use dotted segments of A-Z a-z 0-9 - _", path.get_ref());
                    let key = format!("config.{list}[{index}]");
                    return Err(SectionError { span: Some(path.span()), ..SectionError::new("config", key, message) });
                }
            }
        }
        let mut values = BTreeMap::new();
        flatten("", &section.values, &mut values);
        let bytes: u64 = values.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
        let (max_entries, max_bytes) = (&section.max_entries, &section.max_bytes);
        if *max_entries.get_ref() < values.len().max(1) {
            let message = format!("must be at least 1, and hold the {} values [config.values] sets", values.len());
            let span = Some(max_entries.span()).filter(|s| !s.is_empty());
            return Err(SectionError { span, ..SectionError::new("config", "config.max_entries", message) });
        }
        if max_bytes.get_ref().bytes() < bytes.max(1) {
            let message = format!("must be at least 1B, and hold the {bytes} bytes [config.values] sets");
            let span = Some(max_bytes.span()).filter(|s| !s.is_empty());
            return Err(SectionError { span, ..SectionError::new("config", "config.max_bytes", message) });
        }
        Ok(())
    }

    fn start(section: &ConfigSection, host: &Startup<'_>) -> anyhow::Result<ConfigService> {
        Ok(ConfigService::new(section, host.router.clone()))
    }

    fn link(linker: &mut wasmtime::component::Linker<AgentState>, get: Getter<Self>) -> wasmtime::Result<()> {
        config::add_to_linker::<_, Served<Self>>(linker, get)
    }

    fn enter(_config: &ConfigService, _agent: &Entering<'_>) -> AgentConfig {
        AgentConfig::default()
    }

    fn leave(config: &ConfigService, state: &mut AgentConfig, agent: &Leaving<'_>) {
        config.forget(agent.id, &std::mem::take(&mut state.subscriptions));
    }
}

impl Hooks for ConfigService {}

impl config::Host for View<'_, ConfigService> {
    fn get(&mut self, path: String) -> Result<Option<String>, Error> {
        self.require()?;
        self.shared.get(&path)
    }

    fn entries(&mut self, prefix: String) -> Result<Vec<(String, String)>, Error> {
        self.require()?;
        Ok(self.shared.list(&prefix))
    }

    fn subscribe(&mut self, prefix: String) -> Result<(), Error> {
        self.require()?;
        if !prefix.is_empty() && !is_valid_path(&prefix) {
            return Err(Error::Invalid(UpdateError::InvalidPath(prefix).to_string()));
        }
        if !self.state.subscriptions.contains(&prefix) {
            self.shared.subscribe(self.id, &prefix);
            self.state.subscriptions.push(prefix);
        }
        Ok(())
    }

    fn unsubscribe(&mut self, prefix: String) -> Result<(), Error> {
        self.require()?;
        if self.shared.unsubscribe(self.id, &prefix) {
            self.state.subscriptions.retain(|p| *p != prefix);
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(source: &str) -> ConfigService {
        let section: ConfigSection = toml::from_str(source).unwrap();
        ConfigService::new(&section, Arc::new(Router::new(1024)))
    }

    #[test]
    fn reads_updates_and_refusals() {
        let config = service("updatable = [\"pricing\"]\n[values]\ngreeting = \"hi\"\npricing = { rate = 3 }\n");
        assert_eq!(config.get("greeting"), Ok(Some("hi".into())));
        assert_eq!(config.get("pricing.rate"), Ok(Some("3".into())));
        assert!(matches!(config.get("pricing"), Err(Error::Invalid(_))));
        assert_eq!(config.get("nope"), Ok(None));
        assert_eq!(config.list("pricing"), vec![("pricing.rate".into(), "3".into())]);
        assert_eq!(config.list("").len(), 2);

        assert_eq!(config.update("pricing.rate", Some("4".into())), Ok(0));
        assert_eq!(config.get("pricing.rate"), Ok(Some("4".into())));
        assert_eq!(config.update("pricing.fee", Some("1".into())), Ok(0));
        assert!(matches!(config.update("greeting", Some("x".into())), Err(UpdateError::NotUpdatable(..))));
        assert!(matches!(config.update("pricingx", Some("x".into())), Err(UpdateError::NotUpdatable(..))));
        assert!(matches!(config.update("pricing", Some("x".into())), Err(UpdateError::IsTable(_))));
        assert!(matches!(config.update("pricing..x", None), Err(UpdateError::InvalidPath(_))));
        assert_eq!(config.get("greeting"), Ok(Some("hi".into())));
    }

    #[test]
    fn each_subscriber_hears_of_a_change_once() {
        let router = Arc::new(Router::new(1024));
        let section: ConfigSection = toml::from_str("updatable = [\"pricing\"]\n").unwrap();
        let config = ConfigService::new(&section, router.clone());
        let (mut everything, mut rate_only) = (router.open(1, 8), router.open(2, 8));
        config.subscribe(1, "");
        config.subscribe(1, "pricing");
        config.subscribe(2, "pricing.rate");
        assert_eq!(config.update("pricing.rate", Some("5".into())), Ok(2));
        assert_eq!(config.update("pricing.fee", Some("1".into())), Ok(1));
        assert_eq!(config.update("pricing.rate", None), Ok(2));
        let received = |inbox: &mut crate::messaging::Inbox| {
            std::iter::from_fn(|| inbox.try_recv().ok())
                .map(|m| {
                    let topic = m.topic.as_deref().map(str::to_string);
                    let Some(crate::messaging::Notice::ConfigChanged(change)) = m.into_notice() else {
                        panic!("a config change, typed")
                    };
                    (topic, format!("{}={}", change.path, change.value.unwrap_or_default()))
                })
                .collect::<Vec<_>>()
        };
        let topic = Some(CONFIG_TOPIC.to_string());
        assert_eq!(
            received(&mut everything),
            vec![
                (topic.clone(), "pricing.rate=5".into()),
                (topic.clone(), "pricing.fee=1".into()),
                (topic.clone(), "pricing.rate=".into())
            ]
        );
        assert_eq!(
            received(&mut rate_only),
            vec![(topic.clone(), "pricing.rate=5".into()), (topic, "pricing.rate=".into())]
        );
        config.forget(1, &["".into(), "pricing".into()]);
        assert_eq!(config.update("pricing.fee", Some("2".into())), Ok(0));
    }
}
