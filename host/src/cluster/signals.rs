//! Monitors and links between agents of different nodes, as Erlang's distribution carries
//! them: signals, sent one way (`agora.<cluster>.signal.<index>`) and in order between two
//! nodes, each applied to the receiving node's half of the link table
//! ([`crate::supervision::links::Links`]). A signal lost with its node is made good by the node's
//! going down: every monitor of an agent there fires with `noconnection`, every link to one is
//! an exit signal `noconnection`.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Cluster, index_of};
use crate::bindings::types::{Down, LinkedExit};
use crate::messaging::{AgentId, Body, Message, Notice};
use crate::runtime::Runtime;
use crate::runtime::agent::{ExitReason, Fault, FaultKind};
use crate::supervision::links::{DOWN_TOPIC, EXIT_TOPIC};

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Signal {
    /// `watcher` (of the sender's node) monitors `target` (of the receiver's).
    Monitor {
        watcher: AgentId,
        target: AgentId,
        reference: u64,
    },
    Demonitor {
        target: AgentId,
        reference: u64,
    },
    /// `from` (sender's node) links to `to` (receiver's).
    Link {
        from: AgentId,
        to: AgentId,
    },
    Unlink {
        from: AgentId,
        to: AgentId,
    },
    /// `from` exited, and `to` was linked to it.
    Exit {
        from: AgentId,
        to: AgentId,
        reason: String,
        crashed: Option<String>,
    },
    /// A monitor of `to`'s on `about` fired.
    Down {
        to: AgentId,
        about: AgentId,
        reference: u64,
        reason: String,
    },
    /// A trapped exit for `to`.
    ExitNotice {
        to: AgentId,
        about: AgentId,
        reason: String,
    },
    /// `to` is asked to vote in `round` of the sender's node ([`super::votes`]).
    VoteRequest {
        to: AgentId,
        group: String,
        round: u64,
        proposer: AgentId,
        value: Vec<u8>,
    },
    /// `voter` cannot vote in `round` (of the receiver's node): it exited, or the request found
    /// no room.
    VoterLost {
        round: u64,
        voter: AgentId,
    },
}

impl Cluster {
    fn signal_subject(&self, index: u64) -> String {
        format!("agora.{}.signal.{index}", self.settings.name)
    }

    /// Send `signal` to the node of `to`, in the background.
    pub(super) fn signal(&self, to: AgentId, signal: Signal) {
        let subject = self.signal_subject(index_of(to));
        let Ok(body) = serde_json::to_vec(&signal) else { return };
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Err(error) = client.publish(subject, Bytes::from(body)).await {
                tracing::warn!(event = "cluster_signal_lost", %error, "a monitor or link signal was not sent: {error}");
            }
        });
    }

    /// Local `watcher` monitors `target` of another node; `down` comes from there, or as
    /// `noconnection` when its node is (or goes) down.
    pub fn monitor(&self, runtime: &Runtime, watcher: AgentId, target: AgentId) -> u64 {
        let reference = runtime.links.new_reference();
        if !self.index_up(target) {
            let down = Down { reference, agent: target, reason: "noconnection".into() };
            let _ = runtime
                .router
                .try_deliver(watcher, Message::notice(Some(target), DOWN_TOPIC.into(), Notice::Down(down)));
            return reference;
        }
        runtime.links.watch_remote(watcher, reference, target);
        self.signal(target, Signal::Monitor { watcher, target, reference });
        reference
    }

    pub fn demonitor(&self, target: AgentId, reference: u64) {
        self.signal(target, Signal::Demonitor { target, reference });
    }

    /// Local `a` links to `b` of another node.
    pub fn link(&self, runtime: &Runtime, a: AgentId, b: AgentId) {
        if !self.index_up(b) {
            runtime.links.exit_signal(&runtime.router, b, a, &ExitReason::Custom("noconnection".into()));
            return;
        }
        if runtime.links.link_remote(a, b) {
            self.signal(b, Signal::Link { from: a, to: b });
        }
    }

    pub fn unlink(&self, a: AgentId, b: AgentId) {
        self.signal(b, Signal::Unlink { from: a, to: b });
    }

    /// A host notice for an agent of another node (a monitor's `down`, a trapped exit).
    fn forward(&self, to: AgentId, message: Message) {
        if !self.is_remote(to) {
            return;
        }
        let about = message.sender.unwrap_or(0);
        let signal = match message.body {
            Body::Notice(notice) => match *notice {
                Notice::Down(down) => Signal::Down { to, about, reference: down.reference, reason: down.reason },
                Notice::Exit(exit) => Signal::ExitNotice { to, about, reason: exit.reason },
                _ => return,
            },
            Body::Bytes(_) => return,
        };
        self.signal(to, signal);
    }

    /// An exit reaching a linked agent of another node.
    fn exit(&self, from: AgentId, to: AgentId, reason: &ExitReason) {
        let crashed = match reason {
            ExitReason::Crashed(fault) => Some(format!("{}: {}", fault.kind.code(), fault.detail)),
            _ => None,
        };
        self.signal(to, Signal::Exit { from, to, reason: reason.code().to_string(), crashed });
    }

    /// Wire this node's link table and router to the others, and apply their signals.
    pub async fn serve_signals(self: &Arc<Self>, runtime: &Arc<Runtime>) -> anyhow::Result<()> {
        let cluster = self.clone();
        let _ = runtime.router.remote.set(Box::new(move |to, message| cluster.forward(to, message)));
        let cluster = self.clone();
        let _ = runtime.links.remote_exit.set(Box::new(move |from, to, reason| cluster.exit(from, to, reason)));
        let weak: Weak<Runtime> = Arc::downgrade(runtime);
        let _ = self.node_down_hook.set(Box::new(move |index| {
            if let Some(runtime) = weak.upgrade() {
                runtime.links.node_down(&runtime.router, |id| index_of(id) == index);
                runtime.services.coordination.consensus.lose_voters(|id| index_of(id) == index);
            }
        }));
        let mut signals = self.client.subscribe(self.signal_subject(self.index)).await?;
        let weak = Arc::downgrade(runtime);
        tokio::spawn(async move {
            while let Some(message) = signals.next().await {
                let Some(runtime) = weak.upgrade() else { return };
                match serde_json::from_slice::<Signal>(&message.payload) {
                    Ok(signal) => apply(&runtime, signal),
                    Err(error) => tracing::warn!(event = "cluster_bad_signal", %error),
                }
            }
        });
        Ok(())
    }
}

fn apply(runtime: &Runtime, signal: Signal) {
    let (links, router) = (&runtime.links, &runtime.router);
    match signal {
        Signal::Monitor { watcher, target, reference } => {
            if !links.add_remote_watcher(target, reference, watcher) {
                // Gone already: Erlang's `noproc`, back to the watcher's node.
                let down = Down { reference, agent: target, reason: "noproc".into() };
                router.forward(watcher, Message::notice(Some(target), DOWN_TOPIC.into(), Notice::Down(down)));
            }
        }
        Signal::Demonitor { target, reference } => links.drop_remote_watcher(target, reference),
        Signal::Link { from, to } => {
            if !links.link_remote(to, from) {
                // Gone already: an exit signal `noproc` to the linking agent.
                let reason = ExitReason::Custom("noproc".into());
                if let Some(remote) = links.remote_exit.get() {
                    remote(to, from, &reason);
                }
            }
        }
        Signal::Unlink { from, to } => links.unlink(to, from),
        Signal::Exit { from, to, reason, crashed } => {
            let reason = match (reason.as_str(), crashed) {
                (_, Some(detail)) => ExitReason::Crashed(Fault::new(FaultKind::Linked, detail)),
                ("normal", None) => ExitReason::Normal,
                ("shutdown", None) => ExitReason::Shutdown,
                ("killed", None) => ExitReason::Killed,
                (other, None) => ExitReason::Custom(other.into()),
            };
            links.exit_signal(router, from, to, &reason);
        }
        Signal::Down { to, about, reference, reason } => {
            links.watched_down(to, reference);
            let down = Down { reference, agent: about, reason };
            let _ = router.try_deliver(to, Message::notice(Some(about), DOWN_TOPIC.into(), Notice::Down(down)));
        }
        Signal::ExitNotice { to, about, reason } => {
            let exit = LinkedExit { agent: about, reason };
            let _ = router.try_deliver(to, Message::notice(Some(about), EXIT_TOPIC.into(), Notice::Exit(exit)));
        }
        Signal::VoteRequest { to, group, round, proposer, value } => {
            let topic: Arc<str> =
                format!("{}{group}", crate::capabilities::coordination::consensus::TOPIC_PREFIX).into();
            let request = crate::bindings::types::VoteRequest { group, round, proposer, value };
            let message = Message::notice(Some(proposer), topic, Notice::VoteRequested(request));
            let consensus = &runtime.services.coordination.consensus;
            match router.try_deliver(to, message) {
                Ok(()) => consensus.asked_remotely(to, round),
                Err(_) => {
                    if let Some(cluster) = runtime.cluster.get() {
                        cluster.signal(
                            round >> super::NODE_SHIFT << super::NODE_SHIFT,
                            Signal::VoterLost { round, voter: to },
                        );
                    }
                }
            }
        }
        Signal::VoterLost { round, voter } => runtime.services.coordination.consensus.lose_voter(round, voter),
    }
}
