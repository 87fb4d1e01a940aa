//! The `logging` interface: guest log lines become host `tracing` events (`event=agent_log`),
//! filtered by `RUST_LOG` like the host's own. Grant: "logging".

use super::hooks::Hooks;
use super::{Capability, Entering, Getter, NoSection, Served, Startup, View};
use crate::bindings::logging::{self, Level};
use crate::runtime::state::AgentState;

/// Longer lines are cut: a log line is not a data channel.
const MAX_LINE: usize = 8 * 1024;

#[derive(Default)]
pub struct AgentLogging {
    /// Ungranted lines are dropped; the host says so once per agent instead of per line.
    warned_denied: bool,
}

/// The capability (grant "logging").
pub struct Logging;

impl Capability for Logging {
    const GRANT: Option<&'static str> = Some("logging");
    type Section = NoSection;
    type Shared = ();
    type Agent = AgentLogging;

    fn start(_section: &NoSection, _host: &Startup<'_>) -> anyhow::Result<()> {
        Ok(())
    }

    fn link(linker: &mut wasmtime::component::Linker<AgentState>, get: Getter<Self>) -> wasmtime::Result<()> {
        logging::add_to_linker::<_, Served<Self>>(linker, get)
    }

    fn enter(_shared: &(), _agent: &Entering<'_>) -> AgentLogging {
        AgentLogging::default()
    }
}

impl Hooks for Logging {}

impl logging::Host for View<'_, Logging> {
    fn log(&mut self, level: Level, message: String) {
        if !self.has_grant() {
            if !self.state.warned_denied {
                self.state.warned_denied = true;
                tracing::warn!(event = "log_denied", agent = %self.name,
                    "agent logs without the \"logging\" grant; its log lines are dropped");
            }
            return;
        }
        let mut message = message;
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [cut]");
        }
        let agent = &**self.name;
        match level {
            Level::Trace => {
                tracing::trace!(target: "agora::agent", event = "agent_log", agent, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "agora::agent", event = "agent_log", agent, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "agora::agent", event = "agent_log", agent, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "agora::agent", event = "agent_log", agent, "{message}")
            }
            Level::Error => {
                tracing::error!(target: "agora::agent", event = "agent_log", agent, "{message}")
            }
        }
    }
}
