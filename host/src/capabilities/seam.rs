//! The seam every host service plugs into: the [`Capability`] trait, the [`View`] its WIT
//! interfaces are served on, and the grants that open them.
//!
//! A capability owns five things: its grant name, its manifest section, the state it shares
//! among all agents of one host (built at start), the state it keeps per agent (built when an
//! agent enters, ended when it leaves), and the WIT interfaces it links. It may also hook the
//! callbacks of every agent (see [`Hooks`]). The list in [`super`] composes them; nothing in
//! `runtime/`, `messaging/` or `supervision/` names one capability.
//!
//! The interfaces follow wasmtime-wasi's pattern: bindgen generates one `Host` trait per
//! interface, and each is implemented on a small view ([`View`]) that borrows only the calling
//! agent's identity, the host, and the capability's own shared and per-agent state. A host
//! function therefore never clones the runtime to get around a borrow of the whole store.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{Deserialize, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, Visitor};
use wasmtime::component::{HasData, Linker};

use crate::manifest::AgentSpec;
use crate::messaging::{AgentId, Router};
use crate::runtime::Runtime;
use crate::runtime::state::{AgentState, AgentStats};

/// One host service: its grant, manifest section, shared and per-agent state, and interfaces.
pub trait Capability: Sized + Send + Sync + 'static {
    /// The grant that opens its interfaces (`grants = [...]` in the manifest); `None` when
    /// every agent has it.
    const GRANT: Option<&'static str>;

    /// Its manifest section (`[name]` or `[name.*]`); [`NoSection`] when it has none.
    type Section: Default + Clone + fmt::Debug + DeserializeOwned + Send + Sync;
    /// What all agents of one host share, built once at start.
    type Shared: Send + Sync + 'static;
    /// What it keeps for one agent, from the agent's entry to its exit.
    /// `Default`: what a warm instance's store holds until an agent takes it (nothing).
    type Agent: Default + Send + 'static;

    /// Make the section's file paths absolute, from the manifest's directory; before `validate`.
    fn resolve_paths(_section: &mut Self::Section, _base_dir: &std::path::Path) {}

    /// Check the manifest section; the error names the key (`section.key`) and why.
    fn validate(_section: &Self::Section) -> Result<(), SectionError> {
        Ok(())
    }

    /// Build the shared state for one host.
    fn start(section: &Self::Section, host: &Startup<'_>) -> anyhow::Result<Self::Shared>;

    /// Add its interfaces to the linker, each served on the view `get` returns.
    fn link(linker: &mut Linker<AgentState>, get: Getter<Self>) -> wasmtime::Result<()>;

    /// The per-agent state of an agent entering the host.
    fn enter(shared: &Self::Shared, agent: &Entering<'_>) -> Self::Agent;

    /// The agent leaves (it exited, was killed, or is being restarted): end what it holds.
    /// Called once per agent, before its names leave the registry, so that whoever sees the
    /// name gone sees its holdings gone too.
    fn leave(_shared: &Self::Shared, _state: &mut Self::Agent, _agent: &Leaving<'_>) {}
}

/// What a capability's `start` may use of the host being built.
pub struct Startup<'a> {
    pub data_dir: &'a std::path::Path,
    pub router: &'a Arc<Router>,
    /// False keeps durable stores in memory whatever the manifest says (`agora check` must not
    /// lock the files of a running host).
    pub durable: bool,
}

/// The agent entering: its id and name, and the manifest entry it runs under.
pub struct Entering<'a> {
    pub id: AgentId,
    pub name: &'a Arc<str>,
    pub spec: &'a AgentSpec,
    /// The counters the agent keeps (for an exporter to read while it lives).
    pub stats: &'a Arc<AgentStats>,
    /// The agent an isolated job works for (its wallet pays for the job, say); none for an agent.
    pub acting_for: Option<&'a Arc<str>>,
}

/// The agent leaving.
pub struct Leaving<'a> {
    pub id: AgentId,
    pub name: &'a Arc<str>,
    pub host: &'a Runtime,
}

/// A manifest section's error: the dotted key and why.
#[derive(Debug)]
pub struct SectionError {
    /// The table the error is in (`economics`, `rate_limits.api`): where to point.
    pub section: String,
    /// The offending key (`economics.compute_unit`).
    pub key: String,
    pub message: String,
    /// Where in the manifest, when the section kept spans.
    pub span: Option<std::ops::Range<usize>>,
}

impl SectionError {
    pub fn new(section: impl Into<String>, key: impl Into<String>, message: impl Into<String>) -> SectionError {
        SectionError { section: section.into(), key: key.into(), message: message.into(), span: None }
    }
}

/// The section of a capability that has none: only an empty table is accepted.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSection;

impl<'de> Deserialize<'de> for NoSection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Empty;
        impl<'de> Visitor<'de> for Empty {
            type Value = NoSection;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an empty table (this capability has no settings)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NoSection, A::Error> {
                match map.next_key::<String>()? {
                    None => Ok(NoSection),
                    Some(key) => {
                        let _: IgnoredAny = map.next_value()?;
                        Err(serde::de::Error::custom(format!("unknown field `{key}`: this section takes no settings")))
                    }
                }
            }
        }
        deserializer.deserialize_map(Empty)
    }
}

/// A capability's place in the composed list: where its shared and per-agent state live, and
/// which grant bit is its own. Implemented by the list in [`super`], never by hand.
pub trait Member: Capability {
    /// Its grant's bit in [`Grants`], when it has a grant.
    const BIT: Option<u8>;
    fn shared(services: &super::Services) -> &Self::Shared;
    fn state(agent: &mut super::AgentCapabilities) -> &mut Self::Agent;
}

/// How the linker reaches a capability's view of an agent's store.
pub type Getter<C> = for<'a> fn(&'a mut AgentState) -> View<'a, C>;

/// The [`HasData`] of a capability's interfaces: their host traits are implemented on
/// [`View`]`<'_, C>`.
pub struct Served<C>(PhantomData<fn() -> C>);

impl<C: Capability> HasData for Served<C> {
    type Data<'a> = View<'a, C>;
}

/// What one interface call sees: the calling agent, the host, and the capability's own state.
pub struct View<'a, C: Capability> {
    pub id: AgentId,
    pub name: &'a Arc<str>,
    /// The manifest entry the agent runs under (grants, outbound targets, wallet).
    pub spec: &'a AgentSpec,
    pub host: &'a Arc<Runtime>,
    /// The counters every agent keeps (messages in and out, memory, CPU).
    pub stats: &'a AgentStats,
    pub shared: &'a C::Shared,
    pub state: &'a mut C::Agent,
}

/// The view of capability `C` on an agent's store.
pub fn view<C: Member>(agent: &mut AgentState) -> View<'_, C> {
    View {
        id: agent.id,
        name: &agent.name,
        spec: &agent.spec,
        host: &agent.runtime,
        stats: &agent.stats,
        shared: C::shared(&agent.runtime.services),
        state: C::state(&mut agent.capabilities),
    }
}

impl<C: Member> View<'_, C> {
    /// Deny by default: the one grant check, at the top of every granted host function. Each
    /// interface's error type says `denied` its own way ([`Denied`]).
    #[inline]
    pub fn require<E: Denied>(&self) -> Result<(), E> {
        if Grants::allow::<C>(self.spec.grants) {
            Ok(())
        } else {
            self.explain_denial(if E::INTERFACE.is_empty() { Grant::of::<C>().name() } else { E::INTERFACE });
            Err(E::denied())
        }
    }

    /// Say in the log, once per agent and interface, what the manifest must grant.
    #[cold]
    fn explain_denial(&self, interface: &'static str) {
        let grant = Grant::of::<C>().name();
        if self.stats.note_denial(interface, grant) {
            tracing::warn!(
                event = "grant_denied",
                agent = %self.name,
                interface,
                grant,
                "agent {} called the {interface} interface without the grant: add \"{grant}\" to its `grants` \
                 in the manifest (an agent holds only the grants its manifest entry or [defaults] name)",
                self.name
            );
        }
    }

    /// Whether the agent holds this capability's grant.
    pub fn has_grant(&self) -> bool {
        Grants::allow::<C>(self.spec.grants)
    }
}

/// An interface error type's `denied` case.
pub trait Denied {
    /// The WIT interface whose calls fail with this type; empty for the shared `types.error`,
    /// whose capabilities each serve the one interface their grant is named after.
    const INTERFACE: &'static str = "";
    fn denied() -> Self;
}

/// One grantable capability, by its bit in the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant(pub(super) u8);

impl Grant {
    /// The grant of capability `C`. Panics for a capability every agent has (no grant).
    pub fn of<C: Member>() -> Grant {
        Grant(C::BIT.expect("this capability has no grant"))
    }

    pub fn name(self) -> &'static str {
        super::GRANTS[self.0 as usize]
    }

    /// Every grant, in the list's order.
    pub fn all() -> impl Iterator<Item = Grant> {
        (0..super::GRANTS.len() as u8).map(Grant)
    }
}

impl std::str::FromStr for Grant {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match super::GRANTS.iter().position(|g| *g == name) {
            Some(bit) => Ok(Grant(bit as u8)),
            None => Err(format!("unknown grant {name:?}; grantable interfaces: {}", super::GRANTS.join(", "))),
        }
    }
}

/// The set of interfaces an agent may call.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Grants(u32);

impl Grants {
    pub const NONE: Grants = Grants(0);

    pub fn all() -> Grants {
        Grant::all().fold(Grants::NONE, Grants::with)
    }

    pub fn with(self, grant: Grant) -> Grants {
        Grants(self.0 | 1 << grant.0)
    }

    /// Grants by name, for the host's own agents (benchmarks, tests); panics on a name that
    /// is no grant.
    pub fn named(names: &[&str]) -> Grants {
        names.iter().map(|name| name.parse::<Grant>().expect("a grant")).fold(Grants::NONE, Grants::with)
    }

    pub fn allows(self, grant: Grant) -> bool {
        self.0 & (1 << grant.0) != 0
    }

    /// Whether these grants open capability `C` (always, for one without a grant).
    #[inline]
    pub fn allow<C: Member>(self) -> bool {
        C::BIT.is_none_or(|bit| self.0 & (1 << bit) != 0)
    }
}

impl fmt::Debug for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(Grant::all().filter(|g| self.allows(*g)).map(Grant::name)).finish()
    }
}

/// [`Denied`] for interface error types whose `denied` case is the unit variant `Denied` (all of
/// them, so far).
macro_rules! denied_is_denied {
    ($($error:ty $(=> $interface:literal)?),* $(,)?) => {
        $(impl $crate::capabilities::Denied for $error {
            $(const INTERFACE: &'static str = $interface;)?
            fn denied() -> Self {
                Self::Denied
            }
        })*
    };
}
pub(crate) use denied_is_denied;

denied_is_denied!(crate::bindings::Error);
