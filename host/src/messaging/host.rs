//! The `messaging` interface as the guest sees it. Grant: "messaging" (`self-id` is always allowed).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{AgentId, Message};
use crate::capabilities::Grant;
use crate::runtime::bindings::{Address, Error, PublishReport, messaging};
use crate::runtime::state::AgentState;

impl AgentState {
    fn resolve(&self, to: &Address) -> Result<AgentId, Error> {
        match to {
            Address::Id(id) => Ok(*id),
            Address::Name(name) => self.runtime.registry.lookup(name).ok_or(Error::NotFound),
        }
    }

    /// The checks every outbound message passes: grant, size, known target.
    fn outbound(&self, to: &Address, payload: &[u8]) -> Result<AgentId, Error> {
        self.require(Grant::Messaging)?;
        self.runtime.router.check_size(payload.len())?;
        let target = self.resolve(to)?;
        self.metrics.sent();
        Ok(target)
    }
}

fn millis(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

impl messaging::Host for AgentState {
    fn self_id(&mut self) -> AgentId {
        self.id
    }

    fn send(&mut self, to: Address, payload: Vec<u8>) -> Result<(), Error> {
        let target = self.outbound(&to, &payload)?;
        self.runtime.router.try_deliver(target, Message::cast(Some(self.id), payload))
    }

    async fn send_timeout(&mut self, to: Address, payload: Vec<u8>, timeout_ms: u32) -> Result<(), Error> {
        let target = self.outbound(&to, &payload)?;
        let message = Message::cast(Some(self.id), payload);
        self.runtime.router.deliver_timeout(target, message, millis(timeout_ms)).await
    }

    async fn call(&mut self, to: Address, payload: Vec<u8>, timeout_ms: u32) -> Result<Vec<u8>, Error> {
        let target = self.outbound(&to, &payload)?;
        if target == self.id {
            return Err(Error::Invalid("an agent cannot call itself: it handles one message at a time".into()));
        }
        let (reply, answer) = oneshot::channel();
        let message = Message { sender: Some(self.id), topic: None, payload, reply: Some(reply) };
        self.runtime.router.try_deliver(target, message)?;
        match tokio::time::timeout(millis(timeout_ms), answer).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout),
        }
    }

    fn reply(&mut self, correlation: u64, payload: Vec<u8>) -> Result<(), Error> {
        self.require(Grant::Messaging)?;
        self.runtime.router.check_size(payload.len())?;
        self.messaging.answer(correlation, Ok(payload))
    }

    fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<PublishReport, Error> {
        self.require(Grant::Messaging)?;
        self.runtime.router.check_size(payload.len())?;
        let (delivered, mailbox_full) = self.runtime.router.publish(self.id, &topic, &payload);
        self.metrics.sent();
        Ok(PublishReport { delivered, mailbox_full })
    }

    fn subscribe(&mut self, topic: String) -> Result<(), Error> {
        self.require(Grant::Messaging)?;
        if topic.is_empty() || topic.starts_with("agora:") {
            return Err(Error::Invalid(format!("topic {topic:?}: empty, or in the host's reserved `agora:` space")));
        }
        let topic: Arc<str> = topic.into();
        if self.runtime.router.subscribe(self.id, &topic) {
            self.messaging.topics.push(topic);
        }
        Ok(())
    }

    fn unsubscribe(&mut self, topic: String) -> Result<(), Error> {
        self.require(Grant::Messaging)?;
        if self.runtime.router.unsubscribe(self.id, &topic) {
            self.messaging.topics.retain(|t| **t != *topic);
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }
}

impl crate::runtime::bindings::types::Host for AgentState {}
