//! The host's capabilities: every service an agent can reach through a WIT interface, composed
//! in one list.
//!
//! Deny by default: an agent reaches a capability's interfaces only when its manifest entry
//! lists the grant; a denied call returns `denied` and changes nothing. Each capability
//! implements [`Capability`] (see [`seam`]); the list below composes them into the host's
//! [`Services`] (shared state), each agent's [`AgentCapabilities`] (per-agent state), the
//! manifest's [`ServiceSections`], the grant names ([`GRANTS`]), the linker, the cleanup at an
//! agent's exit, and the callback and lifecycle [`hooks`]. Messaging, the registry and
//! supervision are part of the core, but serve their interfaces as capabilities too; the
//! `lifecycle` interface (an agent stopping itself) and the shared `types` are the core's own.

pub mod config;
pub mod coordination;
pub mod economics;
pub mod events;
pub mod hooks;
pub mod logging;
pub mod outbound;
pub mod rate_limits;
pub mod seam;
pub mod telemetry;

pub use hooks::{Gate, HostEvent};
pub(crate) use seam::denied_is_denied;
pub use seam::{
    Capability, Denied, Entering, Getter, Grant, Grants, Leaving, Member, NoSection, SectionError, Served, Startup,
    View,
};

/// Compose the capabilities: one line each, `field: Type`. The field names the capability's
/// shared state in [`Services`], its per-agent state in [`AgentCapabilities`] and its manifest
/// section in [`ServiceSections`] (`[field]`); the order is the order of grants in messages,
/// of linking, of hooks and of cleanup.
macro_rules! compose {
    ($($field:ident: $capability:ty),* $(,)?) => {
        /// The shared state of every capability, built once per host.
        pub struct Services {
            $(pub $field: <$capability as Capability>::Shared,)*
        }

        /// The per-agent state of every capability, in the agent's store (by default: none,
        /// what a warm instance holds before an agent takes it).
        #[derive(Default)]
        pub struct AgentCapabilities {
            $(pub $field: <$capability as Capability>::Agent,)*
        }

        /// The capabilities' manifest sections. Parsed from the whole manifest beside its core
        /// keys (which it ignores); the manifest refuses top-level keys that neither knows.
        #[derive(Debug, Clone, Default, serde::Deserialize)]
        pub struct ServiceSections {
            $(#[serde(default)] pub $field: <$capability as Capability>::Section,)*
        }

        /// The top-level manifest keys of the sections.
        pub const SECTIONS: &[&str] = &[$(stringify!($field)),*];

        /// The names of the grants, in the list's order (a capability without one is left out).
        pub const GRANTS: &[&str] = {
            const ALL: [Option<&str>; [$(stringify!($field)),*].len()] = [$(<$capability as Capability>::GRANT),*];
            const N: usize = { let mut n = 0; let mut i = 0; while i < ALL.len() { if ALL[i].is_some() { n += 1; } i += 1; } n };
            const NAMES: [&str; N] = {
                let mut names = [""; N];
                let (mut i, mut n) = (0, 0);
                while i < ALL.len() {
                    if let Some(name) = ALL[i] { names[n] = name; n += 1; }
                    i += 1;
                }
                names
            };
            &NAMES
        };

        compose!(@members 0u8, $($field: $capability,)*);

        impl Services {
            /// Build every capability's shared state.
            pub fn start(sections: &ServiceSections, host: &Startup<'_>) -> anyhow::Result<Services> {
                Ok(Services { $($field: <$capability as Capability>::start(&sections.$field, host)?,)* })
            }

            /// A new agent's per-agent state of every capability.
            pub fn enter(&self, agent: &Entering<'_>) -> AgentCapabilities {
                AgentCapabilities { $($field: <$capability as Capability>::enter(&self.$field, agent),)* }
            }

            /// End what an agent holds in every capability.
            pub fn leave(&self, state: &mut AgentCapabilities, agent: &Leaving<'_>) {
                $(<$capability as Capability>::leave(&self.$field, &mut state.$field, agent);)*
            }

            /// Tell every capability of a host event.
            pub fn observe(&self, event: &HostEvent<'_>) {
                $(<$capability as hooks::Hooks>::observe(&self.$field, event);)*
            }
        }

        impl ServiceSections {
            /// Make every section's file paths absolute, from the manifest's directory.
            pub fn resolve_paths(&mut self, base_dir: &std::path::Path) {
                $(<$capability as Capability>::resolve_paths(&mut self.$field, base_dir);)*
            }

            /// Check every section.
            pub fn validate(&self) -> Result<(), SectionError> {
                $(<$capability as Capability>::validate(&self.$field)?;)*
                Ok(())
            }

            /// Whether any section needs the engines to count fuel.
            pub fn meters_fuel(&self) -> bool {
                false $(|| <$capability as hooks::Hooks>::meters_fuel(&self.$field))*
            }
        }

        /// Add every capability's interfaces to a linker.
        pub fn link(linker: &mut wasmtime::component::Linker<crate::runtime::state::AgentState>) -> wasmtime::Result<()> {
            $(<$capability as Capability>::link(linker, seam::view::<$capability>)?;)*
            Ok(())
        }

        /// The callback hooks of every capability, run in the list's order.
        pub struct AllHooks;

        impl AllHooks {
            pub fn setup(store: &mut wasmtime::Store<crate::runtime::state::AgentState>) {
                $(<$capability as hooks::Hooks>::setup(store);)*
            }
            pub async fn admit(host: &crate::runtime::Runtime, spec: &crate::manifest::AgentSpec) -> Result<(), String> {
                $(<$capability as hooks::Hooks>::admit(&host.services.$field, spec).await?;)*
                Ok(())
            }
            #[inline]
            pub fn before(mut store: wasmtime::StoreContextMut<'_, crate::runtime::state::AgentState>) -> Result<(), Box<Gate>> {
                $(<$capability as hooks::Hooks>::before(store.as_context_mut())?;)*
                Ok(())
            }
            #[inline]
            pub fn tick(mut store: wasmtime::StoreContextMut<'_, crate::runtime::state::AgentState>) {
                $(<$capability as hooks::Hooks>::tick(store.as_context_mut());)*
            }
            #[inline]
            pub fn after(mut store: wasmtime::StoreContextMut<'_, crate::runtime::state::AgentState>) {
                $(<$capability as hooks::Hooks>::after(store.as_context_mut());)*
            }
            pub fn exit(mut store: wasmtime::StoreContextMut<'_, crate::runtime::state::AgentState>) {
                $(<$capability as hooks::Hooks>::exit(store.as_context_mut());)*
            }
            #[inline]
            pub fn idle(mut store: wasmtime::StoreContextMut<'_, crate::runtime::state::AgentState>) {
                $(<$capability as hooks::Hooks>::idle(store.as_context_mut());)*
            }
        }
    };
    (@members $bit:expr, ) => {};
    (@members $bit:expr, $field:ident: $capability:ty, $($rest:tt)*) => {
        impl Member for $capability {
            const BIT: Option<u8> = match <$capability as Capability>::GRANT { Some(_) => Some($bit), None => None };
            fn shared(services: &Services) -> &Self::Shared {
                &services.$field
            }
            fn state(agent: &mut AgentCapabilities) -> &mut Self::Agent {
                &mut agent.$field
            }
        }
        compose!(@members $bit + (<$capability as Capability>::GRANT.is_some() as u8), $($rest)*);
    };
}

use wasmtime::AsContextMut as _;

compose! {
    messaging: crate::messaging::host::Messaging,
    registry: crate::registry::host::Naming,
    logging: logging::Logging,
    supervision: crate::supervision::host::Supervising,
    config: config::Config,
    events: events::Events,
    telemetry: telemetry::Telemetry,
    rate_limits: rate_limits::RateLimits,
    outbound: outbound::Outbound,
    coordination: coordination::Coordination,
    economics: economics::Economics,
    pools: crate::supervision::pools::host::Pooling,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quoted or backticked words of `text` between `start` and the next `end`.
    fn listed(text: &str, start: &str, end: char) -> Vec<String> {
        let from = text.find(start).unwrap_or_else(|| panic!("{start:?} is gone; update this test")) + start.len();
        let list = &text[from..from + text[from..].find(end).expect("the list ends")];
        list.split(['"', '`']).skip(1).step_by(2).map(str::to_string).collect()
    }

    #[test]
    fn every_list_of_grants_is_the_hosts() {
        let hosts: Vec<String> = GRANTS.iter().map(|g| g.to_string()).collect();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap();
        let readme = read("README.md");
        let sdk = read("guest-sdk/src/lib.rs");
        let mut example = listed(&readme, "grants = [", ']');
        example.extend(listed(&readme, "# also ", '\n'));
        for (place, names) in [
            ("README.md, the model", listed(&readme, "grants it (grants: ", ')')),
            ("README.md, the manifest example", example),
            ("guest-sdk/src/lib.rs", listed(&sdk, "grants it (`grants = [", ']')),
        ] {
            assert_eq!(names, hosts, "{place} lists other grants than the host");
        }
    }

    #[test]
    fn grants_parse_by_name_and_say_what_exists() {
        for name in GRANTS {
            assert_eq!(name.parse::<Grant>().unwrap().name(), *name);
        }
        let error = "nope".parse::<Grant>().unwrap_err();
        assert!(error.contains(&GRANTS.join(", ")), "{error}");
        assert!(Grants::allow::<outbound::Outbound>(Grants::NONE), "outbound has no grant: its targets decide");
        assert!(!Grants::allow::<economics::Economics>(Grants::NONE));
        assert!(Grants::allow::<economics::Economics>(Grants::named(&["economics"])));
    }
}
