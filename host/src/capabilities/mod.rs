//! Host capabilities an agent can be granted, one module per capability.
//!
//! Deny by default: an agent reaches an interface only when its manifest entry lists the grant.
//! A denied call returns `error.denied` and changes nothing. Messaging, the registry and
//! supervision are capabilities too, but large enough to have their own top-level modules.

pub mod lifecycle;
pub mod logging;

use std::fmt;
use std::str::FromStr;

/// One grantable interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Grant {
    Messaging,
    Registry,
    Logging,
    Supervision,
}

impl Grant {
    pub const ALL: [Grant; 4] = [Grant::Messaging, Grant::Registry, Grant::Logging, Grant::Supervision];

    pub fn name(self) -> &'static str {
        match self {
            Grant::Messaging => "messaging",
            Grant::Registry => "registry",
            Grant::Logging => "logging",
            Grant::Supervision => "supervision",
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
