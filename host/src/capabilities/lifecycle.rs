//! The `lifecycle` interface: an agent asks to end normally. Always granted: an agent may always
//! stop itself.

use crate::runtime::bindings::lifecycle;
use crate::runtime::state::AgentState;

#[derive(Default)]
pub struct AgentLifecycle {
    /// Set by `stop`; the agent loop ends after the current callback.
    pub stop_requested: bool,
}

impl lifecycle::Host for AgentState {
    fn stop(&mut self) {
        self.lifecycle.stop_requested = true;
    }
}
