//! Write Agora agents in Rust.
//!
//! An agent is a plain struct that implements [`Agent`]; [`export_agent!`] turns it into the
//! component the host runs. The host creates the struct once through [`Agent::init`], hands it
//! one message at a time through [`Agent::handle`] (and each host notice, in mailbox order,
//! through [`Agent::notify`]), and calls [`Agent::terminate`] before a graceful exit. A trap or a panic ends the instance; the state goes with it.
//!
//! ```no_run
//! use agora_guest::{Agent, Config, HandleError, Message, messaging, log};
//!
//! struct Greeter {
//!     greeting: String,
//!     greeted: u64,
//! }
//!
//! impl Agent for Greeter {
//!     fn init(config: Config) -> Result<Self, String> {
//!         let greeting = config.get("greeting").unwrap_or("hello").to_string();
//!         messaging::subscribe("greetings").map_err(|e| e.to_string())?;
//!         Ok(Greeter { greeting, greeted: 0 })
//!     }
//!
//!     fn handle(&mut self, message: Message) -> Result<Option<Vec<u8>>, HandleError> {
//!         self.greeted += 1;
//!         let who = String::from_utf8_lossy(&message.payload);
//!         log::info(&format!("greeting {who} (#{})", self.greeted));
//!         // A reply answers a `call`; for a plain `send` it is ignored.
//!         Ok(Some(format!("{}, {who}", self.greeting).into_bytes()))
//!     }
//! }
//!
//! agora_guest::export_agent!(Greeter);
//! ```
//!
//! Every import is denied unless the agent's manifest entry grants it (`grants = ["messaging",
//! "registry", "logging", "supervision", "config", "events", "telemetry", "rate-limits", "coordination",
//! "economics", "pools"]`); a
//! denied call returns [`Error::Denied`]. Outbound HTTP goes through the standard
//! `wasi:http/outgoing-handler` to the targets listed in the agent's `outbound`.
//!
//! The host's notifications (a monitored agent's exit, a config change, a committed event, a
//! new leader, a vote request, auction and market news) arrive typed, as a [`Notice`] handed to
//! [`Agent::notify`]:
//!
//! ```no_run
//! # use agora_guest::{HandleError, Notice, log};
//! fn notify(notice: Notice) -> Result<(), HandleError> {
//!     match notice {
//!         Notice::Down(down) => log::warn(&format!("agent {} exited: {}", down.agent, down.reason)),
//!         Notice::ConfigChanged(change) => log::info(&format!("{} is now {:?}", change.path, change.value)),
//!         _ => {}
//!     }
//!     Ok(())
//! }
//! ```

#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // generated code
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "agent",
        pub_export_macro: true,
        export_macro_name: "__export_agent_world",
        default_bindings_module: "agora_guest::bindings",
    });
}

/// The `stateful-agent` world: the same imports (shared with [`bindings`]), and the `state`
/// export besides the agent's own. Used by `export_agent!(T, state)`.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // generated code
pub mod stateful_bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "stateful-agent",
        pub_export_macro: true,
        export_macro_name: "__export_stateful_agent_world",
        default_bindings_module: "agora_guest::stateful_bindings",
        with: {
            "agora:agent/types@0.3.2": crate::bindings::agora::agent::types,
            "agora:agent/messaging@0.3.2": crate::bindings::agora::agent::messaging,
            "agora:agent/registry@0.3.2": crate::bindings::agora::agent::registry,
            "agora:agent/logging@0.3.2": crate::bindings::agora::agent::logging,
            "agora:agent/lifecycle@0.3.2": crate::bindings::agora::agent::lifecycle,
            "agora:agent/supervision@0.3.2": crate::bindings::agora::agent::supervision,
            "agora:agent/config@0.3.2": crate::bindings::agora::agent::config,
            "agora:agent/events@0.3.2": crate::bindings::agora::agent::events,
            "agora:agent/telemetry@0.3.2": crate::bindings::agora::agent::telemetry,
            "agora:agent/rate-limits@0.3.2": crate::bindings::agora::agent::rate_limits,
            "agora:agent/outbound@0.3.2": crate::bindings::agora::agent::outbound,
            "agora:agent/locks@0.3.2": crate::bindings::agora::agent::locks,
            "agora:agent/barriers@0.3.2": crate::bindings::agora::agent::barriers,
            "agora:agent/election@0.3.2": crate::bindings::agora::agent::election,
            "agora:agent/consensus@0.3.2": crate::bindings::agora::agent::consensus,
            "agora:agent/ledger@0.3.2": crate::bindings::agora::agent::ledger,
            "agora:agent/auctions@0.3.2": crate::bindings::agora::agent::auctions,
            "agora:agent/market@0.3.2": crate::bindings::agora::agent::market,
            "agora:agent/pools@0.3.2": crate::bindings::agora::agent::pools,
            "agora:agent/batch@0.3.2": crate::bindings::agora::agent::batch,
        },
    });
}

use std::cell::RefCell;
use std::fmt;

pub use bindings::agora::agent::types::{
    Address, AgentId, AuctionNotice, AuctionSold, CommittedEvent, ConfigChange, Down, Envelope as Message, Error,
    HandleError, LeaderChange, LinkedExit, MarketNotice, Notice, Outbid, PublishReport, TaskCompleted, TaskEnded,
    VoteRequest,
};

/// The manifest's `config` table for this agent, values rendered as strings.
#[derive(Debug, Clone, Default)]
pub struct Config(Vec<(String, String)>);

impl Config {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Parse a value, with the key named in the error so that a failed `init` says what is wrong.
    pub fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, String>
    where
        T::Err: fmt::Display,
    {
        self.get(key).map(|v| v.parse::<T>().map_err(|e| format!("config `{key}` = {v:?}: {e}"))).transpose()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// What an agent is. One instance of the implementing type lives per running agent.
pub trait Agent: Sized + 'static {
    /// Build the agent's state. An error fails the start and is reported with the agent's name.
    fn init(config: Config) -> Result<Self, String>;

    /// Handle one message. `Ok(Some(reply))` answers a waiting `call`.
    fn handle(&mut self, message: Message) -> Result<Option<Vec<u8>>, HandleError>;

    /// Handle one notice from the host, in mailbox order with the messages. A fatal error ends
    /// the instance, as from `handle`. By default notices are ignored.
    fn notify(&mut self, _notice: Notice) -> Result<(), HandleError> {
        Ok(())
    }

    /// Called once before a graceful exit ("normal" or "shutdown").
    fn terminate(&mut self, _reason: &str) {}
}

/// An agent whose state outlives its instance: across an upgrade of its code (OTP's
/// `code_change`) and, with hibernation, across idle periods. Export it with
/// `export_agent!(MyAgent, state)`; an agent exported without it is upgraded by a fresh `init`.
///
/// The bytes are the agent's own format. With the `serde` feature, [`state::encode`] and
/// [`state::decode`] write and read JSON:
///
/// ```ignore
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Counter { value: i64 }
///
/// impl agora_guest::Stateful for Counter {
///     fn snapshot(&self) -> Result<Vec<u8>, String> {
///         agora_guest::state::encode(self)
///     }
///     fn restore(_config: Config, state: &[u8], _from_version: &str) -> Result<Self, String> {
///         agora_guest::state::decode(state)
///     }
/// }
/// agora_guest::export_agent!(Counter, state);
/// ```
pub trait Stateful: Agent {
    /// The whole state, between two messages. An error refuses the upgrade; the agent carries on.
    fn snapshot(&self) -> Result<Vec<u8>, String>;

    /// Rebuild the agent from an earlier instance's snapshot, instead of [`Agent::init`].
    /// `from_version` is that instance's module version (a label, or `sha256:` and 12 hex
    /// digits): convert older formats here. Its registrations, subscriptions and holdings are
    /// still the agent's; do not make them again. An error rolls an upgrade back.
    fn restore(config: Config, state: &[u8], from_version: &str) -> Result<Self, String>;
}

/// Encode and decode a [`Stateful`] agent's state as JSON (feature `serde`).
#[cfg(feature = "serde")]
pub mod state {
    /// The state as JSON bytes.
    pub fn encode<T: serde::Serialize>(state: &T) -> Result<Vec<u8>, String> {
        serde_json::to_vec(state).map_err(|e| format!("cannot encode the state: {e}"))
    }

    /// Read JSON bytes written by [`encode`] (of this or an earlier version: add fields with
    /// `#[serde(default)]` to read older snapshots).
    pub fn decode<T: serde::de::DeserializeOwned>(state: &[u8]) -> Result<T, String> {
        serde_json::from_slice(state).map_err(|e| format!("cannot read the state: {e}"))
    }
}

impl HandleError {
    /// Reject this message only; the agent keeps running and a caller gets `Error::Failed`.
    pub fn reject(message: impl Into<String>) -> Self {
        HandleError { fatal: false, message: message.into() }
    }

    /// End this instance; its supervisor decides what happens next.
    pub fn fatal(message: impl Into<String>) -> Self {
        HandleError { fatal: true, message: message.into() }
    }
}

impl From<&str> for Address {
    fn from(name: &str) -> Self {
        Address::Name(name.to_string())
    }
}

impl From<String> for Address {
    fn from(name: String) -> Self {
        Address::Name(name)
    }
}

impl From<AgentId> for Address {
    fn from(id: AgentId) -> Self {
        Address::Id(id)
    }
}

// `Error` implements `Display` and `std::error::Error` through the generated bindings.

/// Messaging: bounded mailboxes, calls with timeouts, topics. Grant: "messaging".
pub mod messaging {
    use super::{Address, AgentId, Error, PublishReport};
    use crate::bindings::agora::agent::messaging as wit;
    use std::time::Duration;

    fn millis(timeout: Duration) -> u32 {
        timeout.as_millis().min(u32::MAX as u128) as u32
    }

    pub fn self_id() -> AgentId {
        wit::self_id()
    }

    pub fn send(to: impl Into<Address>, payload: &[u8]) -> Result<(), Error> {
        wit::send(&to.into(), payload)
    }

    pub fn send_timeout(to: impl Into<Address>, payload: &[u8], timeout: Duration) -> Result<(), Error> {
        wit::send_timeout(&to.into(), payload, millis(timeout))
    }

    pub fn call(to: impl Into<Address>, payload: &[u8], timeout: Duration) -> Result<Vec<u8>, Error> {
        wit::call(&to.into(), payload, millis(timeout))
    }

    pub fn reply(correlation: u64, payload: &[u8]) -> Result<(), Error> {
        wit::reply(correlation, payload)
    }

    pub fn publish(topic: &str, payload: &[u8]) -> Result<PublishReport, Error> {
        wit::publish(topic, payload)
    }

    pub fn subscribe(topic: &str) -> Result<(), Error> {
        wit::subscribe(topic)
    }

    pub fn unsubscribe(topic: &str) -> Result<(), Error> {
        wit::unsubscribe(topic)
    }
}

/// Registry: unique names, metadata, capabilities. Grant: "registry".
pub mod registry {
    pub use crate::bindings::agora::agent::registry::*;
}

/// Supervision from inside: dynamic children, monitors, links, isolated jobs. Grant:
/// "supervision".
pub mod supervision {
    pub use crate::bindings::agora::agent::supervision::*;

    /// Limits that take every value from the manifest's `[defaults]`.
    pub fn default_limits() -> Limits {
        Limits { memory_bytes: None, budget_ms: None, mailbox: None }
    }
}

/// The host's live `[config]` tree. Grant: "config".
pub mod config {
    pub use crate::bindings::agora::agent::config::*;
}

/// The durable event store. Grant: "events".
pub mod events {
    pub use crate::bindings::agora::agent::events::*;

    /// A filter that matches everything, for struct-update syntax.
    pub fn all(limit: u32) -> Filter {
        Filter {
            kind: None,
            agent: None,
            correlation: None,
            since_ms: None,
            until_ms: None,
            after: None,
            limit,
            newest_first: false,
        }
    }
}

/// The agent's own metrics on the host's Prometheus endpoint. Grant: "telemetry".
pub mod telemetry {
    pub use crate::bindings::agora::agent::telemetry::*;
}

/// Named rate limiters. Grant: "rate-limits".
pub mod rate_limits {
    pub use crate::bindings::agora::agent::rate_limits::*;
}

/// The host's protection on outbound HTTP targets. Requests themselves go through
/// `wasi:http/outgoing-handler` (any WASI HTTP client); these helpers read the host's answers.
pub mod outbound {
    pub use crate::bindings::agora::agent::outbound::*;

    /// Why the host answered in the target's place (`agora-rejected` header).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Rejection {
        /// `503`: the target's breaker is open (or its half-open probes are all in flight).
        CircuitOpen { retry_after_ms: u64 },
        /// `429`: over the target's rate limit.
        RateLimited { retry_after_ms: u64 },
    }

    /// Classify a response by its `agora-rejected` and `agora-retry-after-ms` headers.
    pub fn rejection(header: impl Fn(&str) -> Option<String>) -> Option<Rejection> {
        let retry_after_ms = header("agora-retry-after-ms").and_then(|v| v.parse().ok()).unwrap_or(0);
        match header("agora-rejected")?.as_str() {
            "circuit-open" => Some(Rejection::CircuitOpen { retry_after_ms }),
            "rate-limited" => Some(Rejection::RateLimited { retry_after_ms }),
            _ => None,
        }
    }
}

#[cfg(feature = "http")]
pub mod http;

/// Named locks with leases and fencing tokens. Grant: "coordination".
pub mod locks {
    pub use crate::bindings::agora::agent::locks::*;
}

/// Named, reusable barriers. Grant: "coordination".
pub mod barriers {
    pub use crate::bindings::agora::agent::barriers::*;
}

/// Quorum consensus among a group's members. Grant: "coordination".
pub mod consensus {
    pub use crate::bindings::agora::agent::consensus::*;
}

/// Leader election in named groups. Grant: "coordination".
pub mod election {
    pub use crate::bindings::agora::agent::election::*;
}

/// This agent's wallet: balance, transfers, holds (escrow), and what its compute has cost.
/// Grant: "economics".
pub mod ledger {
    pub use crate::bindings::agora::agent::ledger::*;
}

/// Auctions with bids in escrow. Grant: "economics".
pub mod auctions {
    pub use crate::bindings::agora::agent::auctions::*;

    /// A host notice about an auction this agent sells or bid in ([`crate::Notice::Auction`]).
    pub use crate::AuctionNotice as Notice;
}

/// The contract-net task market. Grant: "economics".
pub mod market {
    pub use crate::bindings::agora::agent::market::*;

    /// A host notice about a task this agent announced, was invited to, or won
    /// ([`crate::Notice::Market`]).
    pub use crate::MarketNotice as Notice;
}

/// Worker pools (`[pools.<name>]` in the manifest), with poolboy's semantics: borrow a worker
/// for this agent alone, give it back. Grant: "pools".
pub mod pools {
    pub use crate::bindings::agora::agent::pools::*;

    /// poolboy's `transaction`: check a worker out (waiting up to `timeout`, or the pool's
    /// `checkout_timeout` when none), run `work` with it, and check it in again, whatever
    /// `work` returned. A worker that exits meanwhile has ended the checkout already; its
    /// `not-checked-out` is not an error here.
    pub fn transaction<T>(
        pool: &str,
        timeout: Option<std::time::Duration>,
        work: impl FnOnce(crate::AgentId) -> T,
    ) -> Result<T, PoolError> {
        let timeout = timeout.map(|t| t.as_millis().min(u128::from(u32::MAX)) as u32);
        let worker = checkout(pool, timeout)?;
        let done = work(worker);
        match checkin(pool, worker) {
            Ok(()) | Err(PoolError::NotCheckedOut) => Ok(done),
            Err(error) => Err(error),
        }
    }
}

/// Logging into the host's log. Grant: "logging".
pub mod log {
    use crate::bindings::agora::agent::logging::{Level, log};

    pub fn trace(message: &str) {
        log(Level::Trace, message)
    }
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// Ask the host to end this agent normally once the current callback returns. In `init`,
/// the agent is ignored (OTP's `ignore`): its supervisor does not restart it.
pub fn stop() {
    bindings::agora::agent::lifecycle::stop()
}

pub use bindings::agora::agent::lifecycle::ExitReason;

/// End this agent with `reason` once the current callback returns (`terminate` first), as
/// `erlang:exit/1`: `ExitReason::Custom(..)` is abnormal (a transient agent is restarted, and
/// linked agents end with the same reason). `Invalid` for an empty, over-long or reserved reason.
pub fn exit(reason: &ExitReason) -> Result<(), Error> {
    bindings::agora::agent::lifecycle::exit(reason)
}

#[doc(hidden)]
pub mod __private {
    use super::*;
    pub use crate::bindings::agora::agent::batch::Item;

    thread_local! {
        // A component instance is single-threaded; the state lives as long as the instance.
        static STATE: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
    }

    fn with_agent<A: Agent, R>(f: impl FnOnce(&mut A) -> R) -> R {
        STATE.with(|cell| {
            let mut slot = cell.borrow_mut();
            let agent = slot
                .as_mut()
                .and_then(|state| state.downcast_mut::<A>())
                .expect("agora: a message arrived before init succeeded");
            f(agent)
        })
    }

    pub fn init<A: Agent>(config: Vec<(String, String)>) -> Result<(), String> {
        let agent = A::init(Config(config))?;
        STATE.with(|cell| *cell.borrow_mut() = Some(Box::new(agent)));
        Ok(())
    }

    pub fn handle<A: Agent>(message: Message) -> Result<Option<Vec<u8>>, HandleError> {
        with_agent::<A, _>(|agent| agent.handle(message))
    }

    pub fn notify<A: Agent>(notice: Notice) -> Result<(), HandleError> {
        with_agent::<A, _>(|agent| agent.notify(notice))
    }

    /// `handle-batch`: each item handled as `handle` or `notify` would handle it, its outcome
    /// reported before the host hands out the next (so a reply leaves at once, and a trap
    /// loses only the item in progress).
    pub fn handle_batch<A: Agent>(first: Item) {
        let mut item = first;
        loop {
            let outcome = match item {
                Item::Message(message) => handle::<A>(message),
                Item::Notice(notice) => notify::<A>(notice).map(|()| None),
            };
            match crate::bindings::agora::agent::batch::next(&outcome) {
                Some(next) => item = next,
                None => return,
            }
        }
    }

    pub fn terminate<A: Agent>(reason: String) {
        with_agent::<A, _>(|agent| agent.terminate(&reason))
    }

    pub fn snapshot<A: Stateful>() -> Result<Vec<u8>, String> {
        with_agent::<A, _>(|agent| agent.snapshot())
    }

    pub fn restore<A: Stateful>(
        config: Vec<(String, String)>,
        state: Vec<u8>,
        from_version: String,
    ) -> Result<(), String> {
        let agent = A::restore(Config(config), &state, &from_version)?;
        STATE.with(|cell| *cell.borrow_mut() = Some(Box::new(agent)));
        Ok(())
    }
}

/// Export a type implementing [`Agent`] as this component's agent; `export_agent!(T, state)`
/// also exports its [`Stateful`] implementation (the `stateful-agent` world).
#[macro_export]
macro_rules! export_agent {
    ($agent:ty) => {
        $crate::__agent_guest!($agent, bindings);
        $crate::bindings::__export_agent_world!(__AgoraAgentExport with_types_in $crate::bindings);
    };
    ($agent:ty, state) => {
        $crate::__agent_guest!($agent, stateful_bindings);

        impl $crate::stateful_bindings::exports::agora::agent::state::Guest for __AgoraAgentExport {
            fn snapshot() -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                $crate::__private::snapshot::<$agent>()
            }
            fn restore(
                config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                state: ::std::vec::Vec<u8>,
                from_version: ::std::string::String,
            ) -> ::std::result::Result<(), ::std::string::String> {
                $crate::__private::restore::<$agent>(config, state, from_version)
            }
        }

        $crate::stateful_bindings::__export_stateful_agent_world!(__AgoraAgentExport with_types_in $crate::stateful_bindings);
    };
}

/// The world-level exports, for either world's bindings.
#[doc(hidden)]
#[macro_export]
macro_rules! __agent_guest {
    ($agent:ty, $bindings:ident) => {
        #[doc(hidden)]
        struct __AgoraAgentExport;

        impl $crate::$bindings::Guest for __AgoraAgentExport {
            fn init(
                config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::std::result::Result<(), ::std::string::String> {
                $crate::__private::init::<$agent>(config)
            }
            fn handle(
                message: $crate::Message,
            ) -> ::std::result::Result<::std::option::Option<::std::vec::Vec<u8>>, $crate::HandleError> {
                $crate::__private::handle::<$agent>(message)
            }
            fn notify(notice: $crate::Notice) -> ::std::result::Result<(), $crate::HandleError> {
                $crate::__private::notify::<$agent>(notice)
            }
            fn terminate(reason: ::std::string::String) {
                $crate::__private::terminate::<$agent>(reason)
            }
            fn handle_batch(first: $crate::__private::Item) {
                $crate::__private::handle_batch::<$agent>(first)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        Config(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn config_values_parse_with_the_key_named_in_the_error() {
        let config = config(&[("peers", "3"), ("rate", "fast")]);
        assert_eq!(config.get("peers"), Some("3"));
        assert_eq!(config.parse::<u32>("peers"), Ok(Some(3)));
        assert_eq!(config.parse::<u32>("absent"), Ok(None), "a missing key is not an error");
        let error = config.parse::<u32>("rate").unwrap_err();
        assert!(error.starts_with("config `rate` = \"fast\": "), "{error}");
        assert_eq!(config.iter().collect::<Vec<_>>(), [("peers", "3"), ("rate", "fast")]);
    }

    #[test]
    fn rejections_are_read_from_the_hosts_headers() {
        use outbound::{Rejection, rejection};
        let headers = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let limited = headers(&[("agora-rejected", "rate-limited"), ("agora-retry-after-ms", "250")]);
        assert_eq!(rejection(limited), Some(Rejection::RateLimited { retry_after_ms: 250 }));
        let open = headers(&[("agora-rejected", "circuit-open"), ("agora-retry-after-ms", "x")]);
        assert_eq!(rejection(open), Some(Rejection::CircuitOpen { retry_after_ms: 0 }), "an unreadable delay is 0");
        assert_eq!(rejection(headers(&[("retry-after", "1")])), None, "the target's own 429 is not the host's");
        assert_eq!(rejection(headers(&[("agora-rejected", "other")])), None);
    }
}
