//! The `logging` interface: guest log lines become host `tracing` events (`event=agent_log`),
//! filtered by `RUST_LOG` like the host's own. Grant: "logging".

use crate::capabilities::Grant;
use crate::runtime::bindings::logging::{self, Level};
use crate::runtime::state::AgentState;

/// Longer lines are cut: a log line is not a data channel.
const MAX_LINE: usize = 8 * 1024;

#[derive(Default)]
pub struct AgentLogging {
    /// Ungranted lines are dropped; the host says so once per agent instead of per line.
    warned_denied: bool,
}

impl logging::Host for AgentState {
    fn log(&mut self, level: Level, message: String) {
        if !self.grants.allows(Grant::Logging) {
            if !self.logging.warned_denied {
                self.logging.warned_denied = true;
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
        let agent = &*self.name;
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
