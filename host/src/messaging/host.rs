//! The `messaging` interface as the guest sees it, served as a capability. Grant: "messaging"
//! (`self-id` is always allowed). Its per-agent state is the agent's reply slots and topics.

use std::sync::Arc;
use std::time::Duration;

use super::{AgentId, AgentMessaging, Message};
use crate::bindings::{Address, Error, PublishReport, messaging};
use crate::capabilities::hooks::Hooks;
use crate::capabilities::{Capability, Entering, Getter, Leaving, NoSection, Served, Startup, View};
use crate::cluster::remote::Kind;
use crate::runtime::state::AgentState;

/// Messaging as a capability: the router is the core's, the reply slots and topics are each
/// agent's.
pub struct Messaging;

impl Capability for Messaging {
    const GRANT: Option<&'static str> = Some("messaging");
    type Section = NoSection;
    type Shared = ();
    type Agent = AgentMessaging;

    fn start(_section: &NoSection, _host: &Startup<'_>) -> anyhow::Result<()> {
        Ok(())
    }

    fn link(linker: &mut wasmtime::component::Linker<AgentState>, get: Getter<Self>) -> wasmtime::Result<()> {
        messaging::add_to_linker::<_, Served<Self>>(linker, get)
    }

    fn enter(_shared: &(), _agent: &Entering<'_>) -> AgentMessaging {
        AgentMessaging::default()
    }

    /// Its topics are left when its mailbox closes (`Router::close`), with the mailbox.
    fn leave(_shared: &(), _state: &mut AgentMessaging, _agent: &Leaving<'_>) {}
}

impl Hooks for Messaging {}

impl View<'_, Messaging> {
    /// The target's id: a name is looked up here, then (in a cluster) across the cluster.
    async fn resolve(&self, to: &Address) -> Result<AgentId, Error> {
        match to {
            Address::Id(id) => Ok(*id),
            Address::Name(name) => match self.host.registry.lookup(name) {
                Some(id) => Ok(id),
                None => match self.host.cluster.get() {
                    Some(cluster) => cluster.lookup(name).await.ok_or(Error::NotFound),
                    None => Err(Error::NotFound),
                },
            },
        }
    }

    /// The checks every outbound message passes: grant, size, known target.
    async fn outbound(&self, to: &Address, payload: &[u8]) -> Result<AgentId, Error> {
        self.require()?;
        self.host.router.check_size(payload.len())?;
        let target = self.resolve(to).await?;
        self.stats.sent();
        Ok(target)
    }

    /// The cluster, when `target` is an agent of another node.
    fn remote(&self, target: AgentId) -> Option<&std::sync::Arc<crate::cluster::Cluster>> {
        self.host.cluster.get().filter(|cluster| cluster.is_remote(target))
    }
}

fn millis(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

impl messaging::Host for View<'_, Messaging> {
    fn self_id(&mut self) -> AgentId {
        self.id
    }

    /// Synchronous, for the local path's sake: a target found here is delivered to at once;
    /// one of another node (or a name this node does not hold) waits in place for the cluster.
    fn send(&mut self, to: Address, payload: Vec<u8>) -> Result<(), Error> {
        self.require()?;
        self.host.router.check_size(payload.len())?;
        let local = match &to {
            Address::Id(id) => Some(*id).filter(|id| self.remote(*id).is_none()),
            Address::Name(name) => self.host.registry.lookup(name),
        };
        if let Some(target) = local {
            self.stats.sent();
            return self.host.router.try_deliver(target, Message::cast(Some(self.id), payload));
        }
        let Some(cluster) = self.host.cluster.get().cloned() else {
            return Err(Error::NotFound);
        };
        let sender = self.id;
        let target = crate::cluster::remote::wait_in_place(async {
            match &to {
                Address::Id(id) => Ok(*id),
                Address::Name(name) => cluster.lookup(name).await.ok_or(Error::NotFound),
            }
        })??;
        self.stats.sent();
        let zero = std::time::Duration::ZERO;
        crate::cluster::remote::wait_in_place(cluster.deliver(Kind::Send, Some(sender), target, &payload, zero))?
            .map(drop)
    }

    async fn send_timeout(&mut self, to: Address, payload: Vec<u8>, timeout_ms: u32) -> Result<(), Error> {
        let target = self.outbound(&to, &payload).await?;
        if let Some(cluster) = self.remote(target) {
            let timeout = millis(timeout_ms);
            return cluster.deliver(Kind::SendTimeout, Some(self.id), target, &payload, timeout).await.map(drop);
        }
        let message = Message::cast(Some(self.id), payload);
        self.host.router.deliver_timeout(target, message, millis(timeout_ms)).await
    }

    async fn call(&mut self, to: Address, payload: Vec<u8>, timeout_ms: u32) -> Result<Vec<u8>, Error> {
        let target = self.outbound(&to, &payload).await?;
        if target == self.id {
            return Err(Error::Invalid("an agent cannot call itself: it handles one message at a time".into()));
        }
        if let Some(cluster) = self.remote(target) {
            return cluster.deliver(Kind::Call, Some(self.id), target, &payload, millis(timeout_ms)).await;
        }
        self.host
            .router
            .call_timed(Some(self.id), target, payload, millis(timeout_ms), &mut self.state.call_timer)
            .await
    }

    fn reply(&mut self, correlation: u64, payload: Vec<u8>) -> Result<(), Error> {
        self.require()?;
        self.host.router.check_size(payload.len())?;
        self.state.answer(correlation, Ok(payload))
    }

    fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<PublishReport, Error> {
        self.require()?;
        self.host.router.check_size(payload.len())?;
        let (mut delivered, mut mailbox_full) = self.host.router.publish(self.id, &topic, &payload);
        if let Some(cluster) = self.host.cluster.get()
            && cluster.has_remote_subscribers(&topic)
        {
            // Other nodes' subscribers too: waited for in place, as a send to another node is.
            let remote = crate::cluster::remote::in_place(cluster.publish_remote(self.id, &topic, &payload));
            if let Some(remote) = remote {
                delivered += remote.delivered;
                mailbox_full.extend(remote.mailbox_full);
            }
        }
        self.stats.sent();
        Ok(PublishReport { delivered, mailbox_full })
    }

    fn subscribe(&mut self, topic: String) -> Result<(), Error> {
        self.require()?;
        if topic.is_empty() || topic.starts_with("agora:") {
            return Err(Error::Invalid(format!("topic {topic:?}: empty, or in the host's reserved `agora:` space")));
        }
        let topic: Arc<str> = topic.into();
        if self.host.router.subscribe(self.id, &topic) {
            self.state.topics.push(topic);
        }
        Ok(())
    }

    fn unsubscribe(&mut self, topic: String) -> Result<(), Error> {
        self.require()?;
        if self.host.router.unsubscribe(self.id, &topic) {
            self.state.topics.retain(|t| **t != *topic);
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }
}
