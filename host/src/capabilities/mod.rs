//! Host capabilities an agent can be granted, one module per capability.
//!
//! Deny by default: an agent reaches an interface only when its manifest entry lists the grant.
//! A denied call returns `error.denied` and changes nothing. Messaging, the registry and
//! supervision are capabilities too, but large enough to have their own top-level modules.
//!
//! Each service module pairs its WIT interface (the `Host` impl for the agent's store), its
//! manifest section, and its shared state; [`Services`] holds the shared state of one host.

pub mod config;
pub mod coordination;
pub mod durable;
pub mod economics;
pub mod events;
pub mod lifecycle;
pub mod logging;
pub mod outbound;
pub mod rate_limits;
pub mod telemetry;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// One grantable interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Grant {
    Messaging,
    Registry,
    Logging,
    Supervision,
    Config,
    Events,
    Telemetry,
    RateLimits,
    Coordination,
    Economics,
}

impl Grant {
    pub const ALL: [Grant; 10] = [
        Grant::Messaging,
        Grant::Registry,
        Grant::Logging,
        Grant::Supervision,
        Grant::Config,
        Grant::Events,
        Grant::Telemetry,
        Grant::RateLimits,
        Grant::Coordination,
        Grant::Economics,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Grant::Messaging => "messaging",
            Grant::Registry => "registry",
            Grant::Logging => "logging",
            Grant::Supervision => "supervision",
            Grant::Config => "config",
            Grant::Events => "events",
            Grant::Telemetry => "telemetry",
            Grant::RateLimits => "rate-limits",
            Grant::Coordination => "coordination",
            Grant::Economics => "economics",
        }
    }
}

impl FromStr for Grant {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Grant::ALL.into_iter().find(|g| g.name() == name).ok_or_else(|| {
            let known: Vec<&str> = Grant::ALL.iter().map(|g| g.name()).collect();
            format!("unknown grant {name:?}; grantable interfaces: {}", known.join(", "))
        })
    }
}

/// The set of interfaces an agent may call.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Grants(u32);

impl Grants {
    pub const NONE: Grants = Grants(0);

    pub fn all() -> Grants {
        Grant::ALL.into_iter().fold(Grants::NONE, Grants::with)
    }

    pub fn with(self, grant: Grant) -> Grants {
        Grants(self.0 | 1 << grant as u8)
    }

    pub fn allows(self, grant: Grant) -> bool {
        self.0 & (1 << grant as u8) != 0
    }
}

impl fmt::Debug for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(Grant::ALL.iter().filter(|g| self.allows(**g)).map(|g| g.name())).finish()
    }
}

/// The manifest sections of the host services.
#[derive(Debug, Clone, Default)]
pub struct ServiceSections {
    pub config: config::ConfigSection,
    pub events: events::EventsSettings,
    pub telemetry: telemetry::TelemetrySettings,
    pub rate_limits: std::collections::BTreeMap<String, rate_limits::LimiterSpec>,
    pub outbound: std::collections::BTreeMap<String, outbound::TargetSpec>,
    pub economics: economics::EconomicsSettings,
}

/// The shared state of every host service, built once per host.
pub struct Services {
    pub config: config::ConfigService,
    pub events: events::EventsService,
    pub telemetry: telemetry::Telemetry,
    pub rate_limits: rate_limits::RateLimits,
    pub outbound: outbound::Outbound,
    pub locks: Arc<coordination::locks::Locks>,
    pub barriers: Arc<coordination::barriers::Barriers>,
    pub elections: coordination::election::Elections,
    pub consensus: coordination::consensus::Consensus,
    pub economics: economics::Economics,
}

impl Services {
    /// `durable_events = false` keeps the event store and the ledger in memory whatever the
    /// manifest says (`agora check` must not lock the files of a running host).
    pub fn start(
        sections: &ServiceSections,
        data_dir: &std::path::Path,
        router: &std::sync::Arc<crate::messaging::Router>,
        durable_events: bool,
    ) -> anyhow::Result<Services> {
        let mut events = sections.events.clone();
        events.durable &= durable_events;
        Ok(Services {
            config: config::ConfigService::new(&sections.config, router.clone()),
            events: events::EventsService::open(&events, data_dir, router.clone())?,
            telemetry: telemetry::Telemetry::install(&sections.telemetry)?,
            rate_limits: rate_limits::RateLimits::new(&sections.rate_limits),
            outbound: outbound::Outbound::new(&sections.outbound)?,
            locks: coordination::locks::Locks::start(),
            barriers: coordination::barriers::Barriers::start(),
            elections: coordination::election::Elections::new(router.clone()),
            consensus: coordination::consensus::Consensus::new(router.clone()),
            economics: economics::Economics::open(&sections.economics, data_dir, durable_events, router)?,
        })
    }
}
