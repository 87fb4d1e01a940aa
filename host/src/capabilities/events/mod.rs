//! The `events` capability: a durable, queryable event store that the host and the agents
//! append to, with subscriptions by kind and automatic retention.
//!
//! ```toml
//! [events]
//! durable = true          # false: kept in memory only, gone when the host exits
//! retain_events = 1000000 # keep at most this many (oldest go first)
//! retain_for = "7d"       # and nothing older
//! retain_bytes = "256MiB" # and at most this much (payloads, names and a row's overhead)
//! ```

pub mod lifecycle;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::hooks::{Hooks, HostEvent};
use super::{Capability, Entering, Getter, Leaving, SectionError, Served, Startup, View};
use crate::bindings::{Error, events};
use crate::manifest::{ByteSize, Span};
use crate::messaging::Router;
use crate::runtime::state::AgentState;
pub use store::{Committed, Event, EventStore, NewEvent, Page, Query, Retention, StoreError};

/// Subscribers of kind `k` listen on `agora:event/k`.
pub const TOPIC_PREFIX: &str = "agora:event/";

/// `[events]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSettings {
    pub durable: bool,
    pub retain_events: Option<u64>,
    pub retain_for: Option<Span>,
    /// The most the stored events may take: crash reports carry backtraces, so a count alone
    /// would let a restart storm fill the memory of an in-memory store, or the disk.
    pub retain_bytes: Option<ByteSize>,
    /// Largest payload an agent may append.
    pub max_payload: ByteSize,
}

impl Default for EventsSettings {
    fn default() -> Self {
        EventsSettings {
            durable: true,
            retain_events: Some(1_000_000),
            retain_for: None,
            retain_bytes: Some(ByteSize(256 << 20)),
            max_payload: ByteSize(64 << 10),
        }
    }
}

/// The store, opened for one host.
pub struct EventsService {
    pub store: EventStore,
    max_payload: usize,
}

impl EventsService {
    /// Open `<data_dir>/events.redb` (or an in-memory store) and publish each commit to the
    /// agents subscribed to its kinds.
    pub fn open(
        settings: &EventsSettings,
        data_dir: &std::path::Path,
        router: Arc<Router>,
    ) -> Result<Self, StoreError> {
        let retention = Retention {
            max_events: settings.retain_events,
            max_age: settings.retain_for.map(Span::duration),
            max_bytes: settings.retain_bytes.map(|b| b.bytes()),
            check_every: Duration::from_secs(1),
        };
        let hook: store::CommitHook = Arc::new(move |committed: Committed<'_>| publish(&router, committed));
        let store = if settings.durable {
            EventStore::open(&data_dir.join("events.redb"), retention, Some(hook))?
        } else {
            EventStore::open_in_memory(retention, Some(hook))?
        };
        Ok(EventsService { store, max_payload: settings.max_payload.bytes() as usize })
    }
}

/// The capability (grant "events"); its shared state is the host's open store.
pub type Events = EventsService;

impl Capability for EventsService {
    const GRANT: Option<&'static str> = Some("events");
    type Section = EventsSettings;
    type Shared = EventsService;
    type Agent = AgentEvents;

    fn validate(section: &EventsSettings) -> Result<(), SectionError> {
        if section.retain_events == Some(0) {
            return Err(SectionError::new("events", "events.retain_events", "must be at least 1"));
        }
        Ok(())
    }

    fn start(section: &EventsSettings, host: &Startup<'_>) -> anyhow::Result<EventsService> {
        let mut settings = section.clone();
        settings.durable &= host.durable;
        Ok(EventsService::open(&settings, host.data_dir, host.router.clone())?)
    }

    fn link(linker: &mut wasmtime::component::Linker<AgentState>, get: Getter<Self>) -> wasmtime::Result<()> {
        events::add_to_linker::<_, Served<Self>>(linker, get)
    }

    fn enter(_events: &EventsService, _agent: &Entering<'_>) -> AgentEvents {
        AgentEvents::default()
    }

    fn leave(_events: &EventsService, state: &mut AgentEvents, agent: &Leaving<'_>) {
        for topic in state.topics.drain(..) {
            agent.host.router.unsubscribe(agent.id, &topic);
        }
    }
}

/// The host's lifecycle events are journaled here (and logged).
impl Hooks for EventsService {
    fn observe(service: &EventsService, event: &HostEvent<'_>) {
        let store = &service.store;
        match *event {
            HostEvent::AgentStarted { agent, id, module, took, restarts, warm } => {
                lifecycle::agent_started(store, agent, id, module, took, restarts, warm)
            }
            HostEvent::AgentStartFailed { agent, fault } => lifecycle::agent_start_failed(store, agent, fault),
            HostEvent::AgentExited(report) => lifecycle::agent_exited(store, report),
            HostEvent::ChildRestarted { agent, id, restarts, after } => {
                lifecycle::child_restarted(store, agent, id, restarts, after)
            }
            HostEvent::SupervisorStarted { supervisor, id, children } => {
                lifecycle::supervisor_started(supervisor, id, children)
            }
            HostEvent::SupervisorFailed { supervisor, id, fault } => {
                lifecycle::supervisor_failed(store, supervisor, id, fault)
            }
            HostEvent::SupervisorExited { supervisor, id, reason } => {
                lifecycle::supervisor_exited(supervisor, id, reason)
            }
            HostEvent::AgentUpgrade { agent, id, report, ok } => lifecycle::agent_upgrade(store, agent, id, report, ok),
            HostEvent::AgentHibernated { agent, id, state_bytes, durable } => {
                lifecycle::agent_hibernated(store, agent, id, state_bytes, durable)
            }
            HostEvent::AgentWoken { agent, id, micros } => lifecycle::agent_woken(store, agent, id, micros),
            HostEvent::Cluster { kind, detail } => lifecycle::cluster(store, kind, detail),
        }
    }
}

/// Per-agent state: the event topics it subscribed to, to leave at its exit.
#[derive(Default)]
pub struct AgentEvents {
    topics: Vec<Arc<str>>,
}

/// Deliver each committed event to the subscribers of its kind. The topic is built in one
/// reused buffer: most commits meet no subscriber, and then cost a lookup per event.
fn publish(router: &Router, committed: Committed<'_>) {
    let mut topic = String::from(TOPIC_PREFIX);
    for (seq, time_ms, event) in committed.iter() {
        topic.truncate(TOPIC_PREFIX.len());
        topic.push_str(&event.kind);
        let subscribers = router.subscribers(&topic);
        if subscribers.is_empty() {
            continue;
        }
        let committed = crate::bindings::types::CommittedEvent {
            seq,
            time_ms,
            kind: event.kind.clone(),
            agent: event.agent.as_deref().map(str::to_string),
            correlation: event.correlation.clone(),
            payload: event.payload.clone(),
        };
        router.notify(subscribers, &topic.as_str().into(), &crate::messaging::Notice::Event(committed));
    }
}

fn check_kind(kind: &str) -> Result<(), Error> {
    let valid = !kind.is_empty()
        && kind.len() <= 128
        && kind.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'));
    if valid { Ok(()) } else { Err(Error::Invalid(format!("event kind {kind:?}: use 1-128 of A-Z a-z 0-9 - _ . : /"))) }
}

fn store_error(error: StoreError) -> Error {
    Error::Failed(error.to_string())
}

impl events::Host for View<'_, EventsService> {
    async fn append(&mut self, kind: String, payload: Vec<u8>, correlation: Option<String>) -> Result<u64, Error> {
        self.require()?;
        check_kind(&kind)?;
        let service = self.shared;
        if payload.len() > service.max_payload {
            return Err(Error::TooLarge(service.max_payload as u64));
        }
        if correlation.as_ref().is_some_and(|c| c.is_empty() || c.len() > 256) {
            return Err(Error::Invalid("correlation: 1-256 bytes".into()));
        }
        let event = NewEvent { kind, agent: Some(self.name.clone()), correlation, payload };
        service.store.append(event).await.map_err(store_error)
    }

    fn query(&mut self, filter: events::Filter) -> Result<events::Page, Error> {
        self.require()?;
        let query = Query {
            kind: filter.kind,
            agent: filter.agent,
            correlation: filter.correlation,
            since_ms: filter.since_ms,
            until_ms: filter.until_ms,
            after: filter.after,
            limit: filter.limit,
            newest_first: filter.newest_first,
        };
        let page = self.shared.store.query(&query).map_err(store_error)?;
        Ok(events::Page {
            events: page
                .events
                .into_iter()
                .map(|e| events::Event {
                    seq: e.seq,
                    time_ms: e.time_ms,
                    kind: e.kind,
                    agent: e.agent,
                    correlation: e.correlation,
                    payload: e.payload,
                })
                .collect(),
            next: page.next,
        })
    }

    fn subscribe(&mut self, kind: String) -> Result<(), Error> {
        self.require()?;
        check_kind(&kind)?;
        let topic: Arc<str> = format!("{TOPIC_PREFIX}{kind}").into();
        if self.host.router.subscribe(self.id, &topic) {
            self.state.topics.push(topic);
        }
        Ok(())
    }

    fn unsubscribe(&mut self, kind: String) -> Result<(), Error> {
        self.require()?;
        let topic = format!("{TOPIC_PREFIX}{kind}");
        if self.host.router.unsubscribe(self.id, &topic) {
            self.state.topics.retain(|t| **t != *topic);
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }
}
