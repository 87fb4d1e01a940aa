//! The entry points of the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer) and of the test
//! that replays their committed corpora on every `make test`. Each takes the fuzzer's bytes;
//! a panic, or a broken property checked here, is a bug. Bad input must end in an error.
//!
//! - [`manifest`]: the manifest parser and validator, on any text.
//! - [`module`]: loading a component (`Component::new`, then every check a load makes).
//! - [`host_calls`]: the host side of every WIT import that takes guest bytes or strings, called
//!   with structured input (`arbitrary`) on the store state of one agent holding every grant,
//!   as the canonical ABI would hand them over.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arbitrary::{Arbitrary, Unstructured};

use crate::bindings::{self, Address};
use crate::capabilities::seam::{Grants, view};
use crate::capabilities::{config, coordination, economics, events, logging, outbound, rate_limits, telemetry};
use crate::manifest::{AgentSpec, Limits, Manifest};
use crate::messaging::host::Messaging;
use crate::registry::host::Naming;
use crate::runtime::Runtime;
use crate::runtime::modules::ModuleLoader;
use crate::runtime::state::AgentState;
use crate::supervision::host::Supervising;

/// A directory that outlives every input: a module file for manifests to name, a data dir.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("agora-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).expect("a scratch directory");
        // Manifests only check that a module is a file; `agent.wasm` lets them get past it.
        std::fs::write(dir.join("agent.wasm"), b"\0asm\x0d\0\x01\0").expect("a module file");
        dir
    })
}

/// The manifest parser and validator: any text ends in a manifest or an error that points
/// inside the text.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = scratch().join("manifest.toml");
    if let Err(error) = Manifest::parse(&path, text) {
        let lines = text.split('\n').count();
        assert!(
            (1..=lines).contains(&error.line) && error.column >= 1,
            "error at {}:{} outside a text of {lines} lines: {error}",
            error.line,
            error.column
        );
        assert!(!error.message.is_empty());
    }
}

/// Loading a component: any bytes end in a module or a typed error.
pub fn module(data: &[u8]) {
    let _ = load_module(data);
}

/// What [`module`] makes of the bytes: the component's initial memory, or why it is refused.
pub fn load_module(data: &[u8]) -> Result<u64, crate::runtime::modules::ModuleError> {
    static LOADER: OnceLock<ModuleLoader> = OnceLock::new();
    let loader = LOADER.get_or_init(|| {
        // A small pool: the fuzzers (and the replay test) hold few instances at once.
        let settings = crate::manifest::HostSettings { max_agents: 16, ..Default::default() };
        let engines = crate::runtime::engine::Engines::build(&settings, false).expect("engines");
        ModuleLoader::new(&engines, scratch().join("cache"), settings.max_memory.bytes()).expect("a loader")
    });
    loader.check_bytes(data)
}

/// Every service configured, so that each call reaches its service's own checks.
const HOST_MANIFEST: &str = r#"
[host]
data_dir = "data"
max_agents = 16
max_message = "64KiB"

[config]
updatable = ["greeting"]
[config.values]
greeting = "hello"
limits = { rate = 5 }

[events]
max_payload = "4KiB"

[rate_limits.api]
limit = 10
per = "1s"

[outbound.api]
url = "http://127.0.0.1:9/api"

[economics]
currency = "credits"
"#;

/// One agent's store state on a host with every service, built once: the services keep
/// state across inputs (registered names, held locks), as a long-lived host does.
struct Host {
    executor: tokio::runtime::Runtime,
    agent: std::sync::Mutex<AgentState>,
}

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        let executor = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("an executor");
        let agent = executor.block_on(async {
            let manifest =
                Manifest::parse(&scratch().join("host.toml"), HOST_MANIFEST).expect("the fuzz host manifest");
            let runtime = Arc::new(Runtime::for_check(&manifest).expect("the fuzz host"));
            let mut spec = AgentSpec::new("fuzzed", "none", Limits::default());
            spec.grants = Grants::all();
            spec.outbound = vec!["api".into()];
            spec.wallet = 1_000;
            AgentState::new(runtime.clone(), runtime.next_id(), "fuzzed".into(), Arc::new(spec), None)
        });
        Host { executor, agent: std::sync::Mutex::new(agent) }
    })
}

/// A WIT string: any Unicode, as the canonical ABI only ever hands over valid UTF-8.
type Text = String;

#[derive(Debug, Arbitrary)]
enum Target {
    Id(u64),
    Name(Text),
}

impl From<Target> for Address {
    fn from(target: Target) -> Address {
        match target {
            Target::Id(id) => Address::Id(id),
            Target::Name(name) => Address::Name(name),
        }
    }
}

/// One import call; the timeouts are cut to a few milliseconds so that an input runs fast.
#[derive(Debug, Arbitrary)]
enum Call {
    Send(Target, Vec<u8>),
    SendTimeout(Target, Vec<u8>, u8),
    Request(Target, Vec<u8>, u8),
    Reply(u64, Vec<u8>),
    Publish(Text, Vec<u8>),
    Subscribe(Text),
    Unsubscribe(Text),
    Register(Text),
    Unregister(Text),
    Lookup(Text),
    SetMetadata(Text, Option<Text>),
    GetMetadata(u64, Text),
    AddCapability(Text),
    FindByCapability(Text),
    NameOf(u64),
    Log(u8, Text),
    Spawn { supervisor: Text, name: Text, module: Text, config: Vec<(Text, Text)>, memory: Option<u64> },
    StopChild(Text, Text),
    ListChildren(Text),
    RunIsolated(Text, Vec<u8>),
    ConfigGet(Text),
    ConfigEntries(Text),
    ConfigSubscribe(Text),
    ConfigUnsubscribe(Text),
    Append(Text, Vec<u8>, Option<Text>),
    Query { kind: Option<Text>, agent: Option<Text>, correlation: Option<Text>, limit: u32, newest_first: bool },
    EventsSubscribe(Text),
    EventsUnsubscribe(Text),
    CounterAdd(Text, u64),
    GaugeSet(Text, f64),
    HistogramRecord(Text, f64),
    RateCheck(Text, Text, u32),
    RateWait(Text, Text, u32, u8),
    OutboundStatus(Text),
    Acquire(Text, bool, u32, u8),
    TryAcquire(Text, bool, u32),
    Renew(Text, u64, u32),
    Release(Text, u64),
    Arrive(Text, u32, u8),
    Waiting(Text),
    Join(Text),
    Leave(Text),
    Leader(Text),
    Propose(Text, Vec<u8>, u8, u8),
    Transfer(Text, u64, Text),
    Hold(u64, Text),
    Capture(u64, Text, u64),
    Open { item: Text, reserve: u64, duration: u8, format: u8 },
    Announce { kind: Text, capabilities: Vec<Text>, budget: u64, payload: Vec<u8> },
    Complete(u64, Vec<u8>),
    Fail(u64, Text),
    Reputation(Text),
}

/// The host side of the WIT imports: each call ends in a value or a typed error.
pub fn host_calls(data: &[u8]) {
    let Ok(calls) = Unstructured::new(data).arbitrary::<Vec<Call>>() else { return };
    let host = host();
    let mut agent = host.agent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    host.executor.block_on(async {
        for call in calls.into_iter().take(64) {
            perform(&mut agent, call).await;
        }
    });
}

fn ms(timeout: u8) -> u32 {
    u32::from(timeout % 4)
}

async fn perform(agent: &mut AgentState, call: Call) {
    use bindings::{
        auctions::Host as _, barriers::Host as _, config::Host as _, consensus::Host as _, election::Host as _,
        events::Host as _, ledger::Host as _, locks::Host as _, logging::Host as _, market::Host as _,
        messaging::Host as _, outbound::Host as _, rate_limits::Host as _, registry::Host as _, supervision::Host as _,
        telemetry::Host as _,
    };
    let mode = |shared: bool| if shared { bindings::locks::Mode::Shared } else { bindings::locks::Mode::Exclusive };
    match call {
        Call::Send(to, payload) => ignore(view::<Messaging>(agent).send(to.into(), payload)),
        Call::SendTimeout(to, payload, t) => {
            ignore(view::<Messaging>(agent).send_timeout(to.into(), payload, ms(t)).await)
        }
        Call::Request(to, payload, t) => ignore(view::<Messaging>(agent).call(to.into(), payload, ms(t)).await),
        Call::Reply(correlation, payload) => ignore(view::<Messaging>(agent).reply(correlation, payload)),
        Call::Publish(topic, payload) => ignore(view::<Messaging>(agent).publish(topic, payload)),
        Call::Subscribe(topic) => ignore(view::<Messaging>(agent).subscribe(topic)),
        Call::Unsubscribe(topic) => ignore(view::<Messaging>(agent).unsubscribe(topic)),
        Call::Register(name) => ignore(view::<Naming>(agent).register(name)),
        Call::Unregister(name) => ignore(view::<Naming>(agent).unregister(name)),
        Call::Lookup(name) => ignore(view::<Naming>(agent).lookup(name)),
        Call::SetMetadata(key, value) => ignore(view::<Naming>(agent).set_metadata(key, value)),
        Call::GetMetadata(id, key) => ignore(view::<Naming>(agent).get_metadata(id, key)),
        Call::AddCapability(capability) => ignore(view::<Naming>(agent).add_capability(capability)),
        Call::FindByCapability(capability) => ignore(view::<Naming>(agent).find_by_capability(capability)),
        Call::NameOf(id) => ignore(view::<Naming>(agent).name_of(id)),
        Call::Log(level, message) => {
            use bindings::logging::Level;
            let level = [Level::Trace, Level::Debug, Level::Info, Level::Warn, Level::Error][usize::from(level % 5)];
            view::<logging::Logging>(agent).log(level, message);
        }
        Call::Spawn { supervisor, name, module, config, memory } => {
            use bindings::supervision::{Child, Limits as ChildLimits, Restart};
            let limits = ChildLimits { memory_bytes: memory, budget_ms: Some(10), mailbox: Some(4) };
            let child = Child { name, module, config, limits, restart: Restart::Temporary };
            ignore(view::<Supervising>(agent).spawn(supervisor, child).await);
        }
        Call::StopChild(supervisor, name) => ignore(view::<Supervising>(agent).stop_child(supervisor, name).await),
        Call::ListChildren(supervisor) => ignore(view::<Supervising>(agent).list_children(supervisor).await),
        Call::RunIsolated(module, input) => {
            let limits = bindings::supervision::Limits { memory_bytes: None, budget_ms: Some(10), mailbox: None };
            ignore(view::<Supervising>(agent).run_isolated(module, input, limits).await);
        }
        Call::ConfigGet(path) => ignore(view::<config::Config>(agent).get(path)),
        Call::ConfigEntries(prefix) => ignore(view::<config::Config>(agent).entries(prefix)),
        Call::ConfigSubscribe(prefix) => ignore(view::<config::Config>(agent).subscribe(prefix)),
        Call::ConfigUnsubscribe(prefix) => ignore(view::<config::Config>(agent).unsubscribe(prefix)),
        Call::Append(kind, payload, correlation) => {
            ignore(view::<events::Events>(agent).append(kind, payload, correlation).await)
        }
        Call::Query { kind, agent: of, correlation, limit, newest_first } => {
            let filter = bindings::events::Filter {
                kind,
                agent: of,
                correlation,
                since_ms: None,
                until_ms: None,
                after: None,
                limit,
                newest_first,
            };
            if let Ok(page) = view::<events::Events>(agent).query(filter) {
                assert!(page.events.len() <= 1000, "a page holds at most 1000 events");
            }
        }
        Call::EventsSubscribe(kind) => ignore(view::<events::Events>(agent).subscribe(kind)),
        Call::EventsUnsubscribe(kind) => ignore(view::<events::Events>(agent).unsubscribe(kind)),
        Call::CounterAdd(name, value) => ignore(view::<telemetry::Telemetry>(agent).counter_add(name, value)),
        Call::GaugeSet(name, value) => ignore(view::<telemetry::Telemetry>(agent).gauge_set(name, value)),
        Call::HistogramRecord(name, value) => ignore(view::<telemetry::Telemetry>(agent).histogram_record(name, value)),
        Call::RateCheck(limiter, key, cost) => ignore(view::<rate_limits::RateLimits>(agent).check(limiter, key, cost)),
        Call::RateWait(limiter, key, cost, t) => {
            ignore(view::<rate_limits::RateLimits>(agent).wait(limiter, key, cost, ms(t)).await)
        }
        Call::OutboundStatus(target) => ignore(view::<outbound::Outbound>(agent).status(target)),
        Call::Acquire(name, shared, ttl, t) => {
            ignore(view::<coordination::Coordination>(agent).acquire(name, mode(shared), ttl, ms(t)).await)
        }
        Call::TryAcquire(name, shared, ttl) => {
            ignore(view::<coordination::Coordination>(agent).try_acquire(name, mode(shared), ttl))
        }
        Call::Renew(name, token, ttl) => ignore(view::<coordination::Coordination>(agent).renew(name, token, ttl)),
        Call::Release(name, token) => {
            ignore(bindings::locks::Host::release(&mut view::<coordination::Coordination>(agent), name, token))
        }
        Call::Arrive(name, parties, t) => {
            ignore(view::<coordination::Coordination>(agent).arrive(name, parties, ms(t)).await)
        }
        Call::Waiting(name) => ignore(view::<coordination::Coordination>(agent).waiting(name)),
        Call::Join(group) => ignore(view::<coordination::Coordination>(agent).join(group)),
        Call::Leave(group) => ignore(view::<coordination::Coordination>(agent).leave(group)),
        Call::Leader(group) => ignore(view::<coordination::Coordination>(agent).leader(group)),
        Call::Propose(group, value, quorum, t) => {
            use bindings::consensus::Quorum;
            let quorum = match quorum % 3 {
                0 => Quorum::Majority,
                1 => Quorum::All,
                n => Quorum::AtLeast(u32::from(n)),
            };
            ignore(view::<coordination::Coordination>(agent).propose(group, value, quorum, ms(t)).await)
        }
        Call::Transfer(to, amount, memo) => {
            ignore(view::<economics::Economics>(agent).transfer(to, amount, memo).await)
        }
        Call::Hold(amount, memo) => ignore(view::<economics::Economics>(agent).hold(amount, memo).await),
        Call::Capture(hold, to, amount) => ignore(view::<economics::Economics>(agent).capture(hold, to, amount).await),
        Call::Open { item, reserve, duration, format } => {
            use bindings::auctions::{Format, Terms};
            let format = match format % 2 {
                0 => Format::SealedFirstPrice,
                _ => Format::Vickrey,
            };
            let terms = Terms { item, format, reserve, duration_ms: ms(duration) };
            ignore(view::<economics::Economics>(agent).open(terms))
        }
        Call::Announce { kind, capabilities, budget, payload } => {
            use bindings::market::{AwardRule, Task};
            let task = Task {
                kind,
                capabilities,
                budget,
                bidding_ms: 1,
                deadline_ms: 2,
                rule: AwardRule::LowestPrice,
                payload,
            };
            ignore(view::<economics::Economics>(agent).announce(task).await)
        }
        Call::Complete(task, output) => ignore(view::<economics::Economics>(agent).complete(task, output).await),
        Call::Fail(task, reason) => ignore(view::<economics::Economics>(agent).fail(task, reason).await),
        Call::Reputation(of) => ignore(view::<economics::Economics>(agent).reputation(of)),
    }
}

/// Whatever a call answers is fine: the property is that it answers.
fn ignore<T>(_answer: T) {}
