//! Messaging: bounded mailboxes, one per agent, and topics.
//!
//! The path of one message: guest `send` → `host` import → [`Router::try_deliver`] into the
//! target's bounded mailbox → the target's agent task (`runtime::agent`) → guest `handle` → the
//! reply travels back on the message's own one-shot channel. No task sits in the middle: the
//! router is a sharded map from agent id to mailbox sender.
//!
//! Nothing accepted is lost silently: a full mailbox refuses at once (`mailbox-full`); a message
//! still queued when its target exits is counted in the exit report, and a caller waiting on one
//! gets `stopped`.

pub mod host;
pub mod mailbox;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::oneshot;

use mailbox::{Empty, SendError};

use crate::bindings::Error;
use crate::infra::hashers::{IdHasher, NameHasher};

/// The most payload bytes one mailbox holds unless `host.mailbox_bytes` says otherwise.
pub const DEFAULT_MAILBOX_BYTES: usize = 64 << 20;
/// Payloads this small are not counted against `mailbox_bytes`.
const UNCOUNTED: usize = 256;

/// Agent ids: bits 40-52 name the node's incarnation in a cluster (0 on a host alone; see
/// [`crate::cluster::node_index`]), the low 40 bits are a per-incarnation serial.
pub type AgentId = u64;

/// The answer to a call: the reply payload, or why there is none.
pub type Reply = Result<Vec<u8>, Error>;

pub use crate::bindings::types::Notice;

/// One message in a mailbox. Mailboxes hold messages by value, so its size is on every
/// message's path: a test keeps it at 72 bytes.
pub struct Message {
    pub sender: Option<AgentId>,
    pub topic: Option<Arc<str>>,
    pub body: Body,
    /// Present when the sender waits in `call`.
    pub reply: Option<oneshot::Sender<Reply>>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message").field("sender", &self.sender).field("topic", &self.topic).finish_non_exhaustive()
    }
}

/// What a message carries: an agent's bytes, or a notice from the host (boxed, and in the
/// payload's place, so that it costs a message nothing).
pub enum Body {
    Bytes(Vec<u8>),
    Notice(Box<Notice>),
}

impl Message {
    pub fn cast(sender: Option<AgentId>, payload: Vec<u8>) -> Self {
        Message { sender, topic: None, body: Body::Bytes(payload), reply: None }
    }

    /// A host notice, on the host's reserved topic for its kind (subscribers are found by it).
    pub fn notice(sender: Option<AgentId>, topic: Arc<str>, notice: Notice) -> Self {
        Message { sender, topic: Some(topic), body: Body::Notice(Box::new(notice)), reply: None }
    }

    /// The payload bytes it is counted for in a mailbox. Payloads up to `UNCOUNTED` bytes (and
    /// notices) are not counted: the slot bound already bounds them (1,024 slots hold at most
    /// 256 KiB of them), and counting would add a shared atomic to every small message's path.
    fn held_bytes(&self) -> usize {
        match &self.body {
            Body::Bytes(payload) if payload.len() > UNCOUNTED => payload.len(),
            _ => 0,
        }
    }

    /// The notice, when the message is one.
    pub fn into_notice(self) -> Option<Notice> {
        match self.body {
            Body::Notice(notice) => Some(*notice),
            Body::Bytes(_) => None,
        }
    }
}

/// An agent's end of its mailbox. It gives back the bytes of each message it takes out.
pub struct Inbox {
    receiver: mailbox::Receiver,
}

impl Inbox {
    fn taken(&self, message: &Message) {
        let held = message.held_bytes();
        if held > 0 {
            self.receiver.bytes().fetch_sub(held, Ordering::Relaxed);
        }
    }

    pub fn try_recv(&mut self) -> Result<Message, Empty> {
        self.try_recv_counted().map(|(message, _)| message)
    }

    pub async fn recv(&mut self) -> Option<Message> {
        self.recv_counted().await.map(|(message, _)| message)
    }

    /// As [`Inbox::try_recv`], with how many messages wait behind the one taken.
    pub fn try_recv_counted(&mut self) -> Result<(Message, usize), Empty> {
        let (message, left) = self.receiver.try_recv_counted()?;
        self.taken(&message);
        Ok((message, left))
    }

    /// As [`Inbox::recv`], with how many messages wait behind the one taken.
    pub async fn recv_counted(&mut self) -> Option<(Message, usize)> {
        let (message, left) = self.receiver.recv_counted().await?;
        self.taken(&message);
        Some((message, left))
    }

    pub fn len(&self) -> usize {
        self.receiver.len()
    }

    pub fn is_empty(&self) -> bool {
        self.receiver.is_empty()
    }

    pub fn close(&mut self) {
        self.receiver.close();
    }

    /// Give back a drained mailbox's buffer (before the agent sleeps).
    pub fn compact(&mut self) {
        self.receiver.compact();
    }
}

/// Every live mailbox and topic subscription of this host.
pub struct Router {
    /// Each agent's mailbox sender, which also counts the payload bytes queued, bounded by
    /// `mailbox_bytes` as the queue bounds the messages (1,024 messages of 1 MiB each would
    /// otherwise park a GiB in one mailbox).
    mailboxes: DashMap<AgentId, mailbox::Sender, IdHasher>,
    /// Agents held behind a gate that refuses their messages (a wallet that cannot pay, under
    /// `[economics] unpaid = "refuse"`), with the error senders get; the count spares every
    /// delivery a lookup while there are none.
    refusing: DashMap<AgentId, Error, IdHasher>,
    refusing_count: std::sync::atomic::AtomicUsize,
    topics: DashMap<Arc<str>, Vec<AgentId>, NameHasher>,
    max_message: usize,
    /// The most payload bytes one mailbox holds.
    mailbox_bytes: usize,
    /// In a cluster, where host notices for agents of other nodes go.
    pub remote: std::sync::OnceLock<Forward>,
    /// In a cluster, told of each topic that gained its first subscriber here or lost its last.
    pub topic_changed: std::sync::OnceLock<TopicChanged>,
}

/// Carries a host notice to an agent of another node.
pub type Forward = Box<dyn Fn(AgentId, Message) + Send + Sync>;

/// Told of a topic whose local subscribers went from none to some, or back.
pub type TopicChanged = Box<dyn Fn(&Arc<str>) + Send + Sync>;

impl Router {
    pub fn new(max_message: usize) -> Self {
        Self::with_mailbox_bytes(max_message, DEFAULT_MAILBOX_BYTES)
    }

    pub fn with_mailbox_bytes(max_message: usize, mailbox_bytes: usize) -> Self {
        Router {
            mailboxes: DashMap::default(),
            topics: DashMap::default(),
            max_message,
            mailbox_bytes,
            refusing: Default::default(),
            refusing_count: Default::default(),
            remote: Default::default(),
            topic_changed: Default::default(),
        }
    }

    /// Hand a host notice for an agent not here to the cluster, if this host is in one.
    pub fn forward(&self, to: AgentId, message: Message) {
        if let Some(forward) = self.remote.get() {
            forward(to, message);
        }
    }

    pub fn check_size(&self, len: usize) -> Result<(), Error> {
        if len > self.max_message { Err(Error::TooLarge(self.max_message as u64)) } else { Ok(()) }
    }

    /// Open the mailbox of a new agent.
    pub fn open(&self, id: AgentId, capacity: u32) -> Inbox {
        let (sender, receiver) = mailbox::mailbox(capacity as usize);
        self.mailboxes.insert(id, sender);
        Inbox { receiver }
    }

    /// Close an agent's mailbox and drop its subscriptions. Returns how many queued messages
    /// were never handled; their callers get `stopped`.
    pub fn close(&self, id: AgentId, topics: &[Arc<str>], inbox: &mut Inbox) -> usize {
        self.mailboxes.remove(&id);
        self.accept(id);
        for topic in topics {
            self.unsubscribe(id, topic);
        }
        inbox.close();
        let mut undelivered = 0;
        while let Ok(message) = inbox.try_recv() {
            undelivered += 1;
            if let Some(reply) = message.reply {
                let _ = reply.send(Err(Error::Stopped));
            }
        }
        undelivered
    }

    /// A clone of an agent's mailbox sender, for a host notice that waits outside the router
    /// (notices hold no payload bytes).
    pub fn sender(&self, id: AgentId) -> Option<mailbox::Sender> {
        self.mailboxes.get(&id).map(|sender| sender.clone())
    }

    pub fn is_open(&self, id: AgentId) -> bool {
        self.mailboxes.contains_key(&id)
    }

    /// Refuse deliveries to `id` with `error` until [`Router::accept`].
    pub fn refuse(&self, id: AgentId, error: Error) {
        if self.refusing.insert(id, error).is_none() {
            self.refusing_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    pub fn accept(&self, id: AgentId) {
        if self.refusing.remove(&id).is_some() {
            self.refusing_count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn check_refusing(&self, to: AgentId) -> Result<(), Error> {
        if self.refusing_count.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return Ok(());
        }
        match self.refusing.get(&to) {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    /// Deliver `payload` to `to` as a call from `sender` (none: from outside any agent) and
    /// wait up to `timeout` for its reply.
    #[inline]
    pub async fn call(&self, sender: Option<AgentId>, to: AgentId, payload: Vec<u8>, timeout: Duration) -> Reply {
        let (reply, answer) = oneshot::channel();
        let message = Message { sender, topic: None, body: Body::Bytes(payload), reply: Some(reply) };
        self.try_deliver(to, message)?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// As [`Router::call`], timed by the calling agent's own `timer`, kept from one call to
    /// the next: a later deadline only moves the registered timer's expiry (an atomic store),
    /// where a new timeout per call takes the runtime's handle, allocates, and inserts into and
    /// removes from the timer wheel, waking the worker parked on it whenever the wheel was
    /// empty. Its last deadline stays registered after the call; when it passes, the agent's
    /// task is polled once for nothing.
    pub async fn call_timed(
        &self,
        sender: Option<AgentId>,
        to: AgentId,
        payload: Vec<u8>,
        timeout: Duration,
        timer: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    ) -> Reply {
        let (reply, answer) = oneshot::channel();
        let message = Message { sender, topic: None, body: Body::Bytes(payload), reply: Some(reply) };
        self.try_deliver(to, message)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let timer = match timer {
            Some(timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        tokio::select! {
            biased;
            reply = answer => reply.unwrap_or(Err(Error::Stopped)),
            () = timer.as_mut() => Err(Error::Timeout),
        }
    }

    /// Enqueue without waiting.
    pub fn try_deliver(&self, to: AgentId, message: Message) -> Result<(), Error> {
        self.check_refusing(to)?;
        let mailbox = self.mailboxes.get(&to).ok_or(Error::NotFound)?;
        let held = message.held_bytes();
        let bytes = mailbox.bytes();
        self.reserve(bytes, held)?;
        mailbox.try_send(message).map_err(|e| {
            bytes.fetch_sub(held, Ordering::Relaxed);
            match e {
                SendError::Full(_) => Error::MailboxFull,
                SendError::Closed(_) => Error::NotFound,
            }
        })
    }

    /// Count `held` bytes into a mailbox, or refuse when they do not fit.
    fn reserve(&self, bytes: &AtomicUsize, held: usize) -> Result<(), Error> {
        if held == 0 {
            return Ok(());
        }
        let before = bytes.fetch_add(held, Ordering::Relaxed);
        if before + held > self.mailbox_bytes {
            bytes.fetch_sub(held, Ordering::Relaxed);
            return Err(Error::MailboxFull);
        }
        Ok(())
    }

    /// Enqueue, waiting up to `timeout` for room (a free slot, and room for its bytes).
    pub async fn deliver_timeout(&self, to: AgentId, message: Message, timeout: Duration) -> Result<(), Error> {
        self.check_refusing(to)?;
        let mailbox = self.mailboxes.get(&to).map(|m| m.clone()).ok_or(Error::NotFound)?;
        let held = message.held_bytes();
        let deadline = tokio::time::Instant::now() + timeout;
        // Bytes are given back as messages are taken; a full mailbox is looked at again each
        // millisecond (the wait is the rare path; the slot wait below is the channel's own).
        let bytes = mailbox.bytes();
        while self.reserve(bytes, held).is_err() {
            if tokio::time::Instant::now() >= deadline || mailbox.is_closed() {
                return Err(if mailbox.is_closed() { Error::NotFound } else { Error::MailboxFull });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        mailbox.send_timeout(message, left).await.map_err(|e| {
            bytes.fetch_sub(held, Ordering::Relaxed);
            match e {
                SendError::Full(_) => Error::MailboxFull,
                SendError::Closed(_) => Error::NotFound,
            }
        })
    }

    /// Returns false when the agent already was subscribed.
    pub fn subscribe(&self, id: AgentId, topic: &Arc<str>) -> bool {
        let first = {
            let mut subscribers = self.topics.entry(topic.clone()).or_default();
            if subscribers.contains(&id) {
                return false;
            }
            subscribers.push(id);
            subscribers.len() == 1
        };
        if first && let Some(changed) = self.topic_changed.get() {
            changed(topic);
        }
        true
    }

    pub fn unsubscribe(&self, id: AgentId, topic: &str) -> bool {
        let removed = match self.topics.get_mut(topic) {
            Some(mut subscribers) => {
                let before = subscribers.len();
                subscribers.retain(|s| *s != id);
                before != subscribers.len()
            }
            None => false,
        };
        if let Some((topic, _)) = self.topics.remove_if(topic, |_, subscribers| subscribers.is_empty())
            && let Some(changed) = self.topic_changed.get()
        {
            changed(&topic);
        }
        removed
    }

    /// Deliver a host notification (no sender) on `topic` to each of `agents`; returns how many
    /// got it. Notifications are best effort: a full mailbox drops one with a
    /// `notification_dropped` warning, and the agent can read the state it announces itself.
    pub fn notify(&self, agents: impl IntoIterator<Item = AgentId>, topic: &Arc<str>, notice: &Notice) -> usize {
        let mut notified = 0;
        for agent in agents {
            let message = Message::notice(None, topic.clone(), notice.clone());
            match self.try_deliver(agent, message) {
                Ok(()) => notified += 1,
                Err(Error::MailboxFull) => {
                    tracing::warn!(event = "notification_dropped", topic = %topic, agent,
                        "host notification not delivered: the agent's mailbox is full");
                }
                // Exited meanwhile: nobody to tell.
                Err(_) => {}
            }
        }
        notified
    }

    /// The agents subscribed to `topic` now.
    pub fn subscribers(&self, topic: &str) -> Vec<AgentId> {
        self.topics.get(topic).map(|s| s.value().clone()).unwrap_or_default()
    }

    /// Deliver a copy to every subscriber; report whose mailbox was full.
    pub fn publish(&self, sender: AgentId, topic: &str, payload: &[u8]) -> (u32, Vec<AgentId>) {
        let Some(entry) = self.topics.get(topic) else {
            return (0, Vec::new());
        };
        let topic: Arc<str> = entry.key().clone();
        let subscribers = entry.value().clone();
        drop(entry);
        let mut delivered = 0;
        let mut full = Vec::new();
        for subscriber in subscribers {
            let message = Message {
                sender: Some(sender),
                topic: Some(topic.clone()),
                body: Body::Bytes(payload.to_vec()),
                reply: None,
            };
            match self.try_deliver(subscriber, message) {
                Ok(()) => delivered += 1,
                Err(Error::MailboxFull) => full.push(subscriber),
                // Exited between the snapshot and the send: it is no longer a subscriber.
                Err(_) => {}
            }
        }
        (delivered, full)
    }

    pub fn live_mailboxes(&self) -> usize {
        self.mailboxes.len()
    }
}

/// Per-agent messaging state.
#[derive(Default)]
pub struct AgentMessaging {
    /// Calls this agent received and has not answered yet, by the correlation id it was shown.
    pending_replies: HashMap<u64, oneshot::Sender<Reply>>,
    next_correlation: u64,
    /// Topics to leave when the agent exits.
    pub topics: Vec<Arc<str>>,
    /// The timer of this agent's calls, made at its first ([`Router::call_timed`]).
    pub call_timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

/// Above this many unanswered calls, forget those whose callers have stopped waiting.
const PENDING_PRUNE_THRESHOLD: usize = 1024;

impl AgentMessaging {
    /// Remember a call's reply channel; the returned id goes to the guest in the envelope.
    pub fn expect_reply(&mut self, reply: oneshot::Sender<Reply>) -> u64 {
        if self.pending_replies.len() >= PENDING_PRUNE_THRESHOLD {
            self.pending_replies.retain(|_, waiting| !waiting.is_closed());
        }
        self.next_correlation += 1;
        self.pending_replies.insert(self.next_correlation, reply);
        self.next_correlation
    }

    /// Answer a pending call. `not-found` if there is no such call; `timeout` if the caller gave up.
    pub fn answer(&mut self, correlation: u64, reply: Reply) -> Result<(), Error> {
        let waiting = self.pending_replies.remove(&correlation).ok_or(Error::NotFound)?;
        waiting.send(reply).map_err(|_| Error::Timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mailboxes hold messages by value: a notice field beside the payload made every message
    /// 80 bytes instead of 72, and the message path measurably slower; a notice takes the
    /// payload's place instead.
    #[test]
    fn a_message_is_no_larger_than_before_notices() {
        use std::mem::size_of;
        let parts = (size_of::<Body>(), size_of::<Option<oneshot::Sender<Reply>>>(), size_of::<Option<Arc<str>>>());
        assert!(size_of::<Message>() <= 72, "{} bytes (body, reply, topic: {parts:?})", size_of::<Message>());
    }
}
