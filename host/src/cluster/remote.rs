//! Messages to agents on other nodes: a request on the target node's subject
//! (`agora.<cluster>.deliver.<index>`, the index an agent id carries), answered by that node once
//! its router has taken the message (a send) or the agent has replied (a call). So a remote send
//! knows what a local one knows (`mailbox-full`, `not-found`, `too-large`), and nothing is
//! accepted without an answer: when the transport fails, the sender gets an error at once
//! ([`transport_error`]), never a silent loss.

use std::sync::Arc;
use std::time::Duration;

use async_nats::RequestErrorKind;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;

use super::{Cluster, index_of};
use crate::bindings::Error;
use crate::messaging::{AgentId, Message, Reply, Router};

/// What a remote request asks of the target's router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `send`: enqueue or refuse at once.
    Send,
    /// `send-timeout`: wait up to the timeout for room.
    SendTimeout,
    /// `call`: enqueue, then wait up to the timeout for the reply.
    Call,
}

/// Bytes of the request's header: kind, has-sender, sender, target, timeout.
const HEADER: usize = 1 + 1 + 8 + 8 + 4;

struct Request {
    kind: Kind,
    sender: Option<AgentId>,
    to: AgentId,
    timeout: Duration,
    payload: Vec<u8>,
}

fn encode(kind: Kind, sender: Option<AgentId>, to: AgentId, timeout: Duration, payload: &[u8]) -> Bytes {
    let mut bytes = BytesMut::with_capacity(HEADER + payload.len());
    bytes.put_u8(match kind {
        Kind::Send => 0,
        Kind::SendTimeout => 1,
        Kind::Call => 2,
    });
    bytes.put_u8(u8::from(sender.is_some()));
    bytes.put_u64(sender.unwrap_or(0));
    bytes.put_u64(to);
    bytes.put_u32(timeout.as_millis().min(u128::from(u32::MAX)) as u32);
    bytes.put_slice(payload);
    bytes.freeze()
}

fn decode(bytes: &[u8]) -> Option<Request> {
    if bytes.len() < HEADER {
        return None;
    }
    let kind = match bytes[0] {
        0 => Kind::Send,
        1 => Kind::SendTimeout,
        2 => Kind::Call,
        _ => return None,
    };
    let word = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let sender = (bytes[1] == 1).then(|| word(2));
    let to = word(10);
    let timeout = Duration::from_millis(u64::from(u32::from_be_bytes(bytes[18..22].try_into().expect("4 bytes"))));
    Some(Request { kind, sender, to, timeout, payload: bytes[HEADER..].to_vec() })
}

/// A reply: 0 and the payload, or an error's code and its text.
fn encode_reply(reply: &Reply) -> Bytes {
    let (code, text): (u8, String) = match reply {
        Ok(payload) => {
            let mut bytes = BytesMut::with_capacity(1 + payload.len());
            bytes.put_u8(0);
            bytes.put_slice(payload);
            return bytes.freeze();
        }
        Err(Error::NotFound) => (1, String::new()),
        Err(Error::MailboxFull) => (2, String::new()),
        Err(Error::Timeout) => (3, String::new()),
        Err(Error::Denied) => (4, String::new()),
        Err(Error::Invalid(why)) => (5, why.clone()),
        Err(Error::TooLarge(limit)) => (6, limit.to_string()),
        Err(Error::AlreadyExists) => (7, String::new()),
        Err(Error::Stopped) => (8, String::new()),
        Err(Error::Failed(why)) => (9, why.clone()),
        Err(Error::Unpaid) => (10, String::new()),
    };
    let mut bytes = BytesMut::with_capacity(1 + text.len());
    bytes.put_u8(code);
    bytes.put_slice(text.as_bytes());
    bytes.freeze()
}

fn decode_reply(bytes: &[u8]) -> Reply {
    let Some((&code, rest)) = bytes.split_first() else {
        return Err(Error::Failed("a malformed reply from another node".into()));
    };
    let text = || String::from_utf8_lossy(rest).into_owned();
    Err(match code {
        0 => return Ok(rest.to_vec()),
        1 => Error::NotFound,
        2 => Error::MailboxFull,
        3 => Error::Timeout,
        4 => Error::Denied,
        5 => Error::Invalid(text()),
        6 => Error::TooLarge(text().parse().unwrap_or(0)),
        7 => Error::AlreadyExists,
        8 => Error::Stopped,
        9 => Error::Failed(text()),
        10 => Error::Unpaid,
        _ => Error::Failed("a malformed reply from another node".into()),
    })
}

async fn respond(client: async_nats::Client, reply_to: async_nats::Subject, reply: Reply) {
    if let Err(error) = client.publish(reply_to, encode_reply(&reply)).await {
        tracing::warn!(event = "cluster_reply_lost", %error, "a reply to another node could not be sent: {error}");
    }
}

/// A transport failure, as a guest sees it. WIT 0.3 has no `unreachable` case (adding one would
/// break every agent built against 0.3), so it is `timeout`: the answer did not come, at once
/// rather than at the caller's deadline; the log says why.
pub fn transport_error(why: impl std::fmt::Display) -> Error {
    tracing::warn!(event = "cluster_unreachable", error = %why, "a message to another node failed in transport: {why}");
    Error::Timeout
}

/// Wait for `future` inside a synchronous host call (a guest's `send` to another node): the
/// worker thread hands its other tasks to a new one and blocks here, so that the local `send`
/// stays a synchronous call, which costs less. Needs the multi-threaded runtime that `agora run`
/// uses; on another, the send fails as a transport failure would.
pub fn wait_in_place<F: std::future::Future>(future: F) -> Result<F::Output, Error> {
    in_place(future).ok_or_else(|| transport_error("a send to another node needs the multi-threaded runtime"))
}

/// Run `future` to its end on this worker thread, inside a synchronous host call (see
/// [`wait_in_place`]); `None` on a runtime that is not multi-threaded.
pub fn in_place<F: std::future::Future>(future: F) -> Option<F::Output> {
    let handle = tokio::runtime::Handle::current();
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return None;
    }
    Some(tokio::task::block_in_place(|| handle.block_on(future)))
}

impl Cluster {
    fn deliver_subject(&self, index: u64) -> String {
        format!("agora.{}.deliver.{index}", self.settings.name)
    }

    /// Whether `id` names an agent of another node.
    pub fn is_remote(&self, id: AgentId) -> bool {
        index_of(id) != self.index
    }

    /// Whether a node that carries `id`'s index is up now.
    pub(super) fn index_up(&self, id: AgentId) -> bool {
        let index = index_of(id);
        self.members.lock().expect("members").values().any(|m| m.up && m.record.index == index)
    }

    /// Deliver to an agent of another node, as the local router would: a send answers once the
    /// message is in the target's mailbox, a call once its reply came.
    pub async fn deliver(
        &self,
        kind: Kind,
        sender: Option<AgentId>,
        to: AgentId,
        payload: &[u8],
        timeout: Duration,
    ) -> Reply {
        // Its node is down: the agent is gone, as an exited local one is.
        if !self.index_up(to) {
            return Err(Error::NotFound);
        }
        // Cut off from the server, a request would wait out its timeout in the client's buffer.
        let mut connected = self.connected.clone();
        if !*connected.borrow() || self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(transport_error("this node is not connected to the cluster's NATS server"));
        }
        let most = self.client.server_info().max_payload.saturating_sub(HEADER);
        if payload.len() > most {
            return Err(Error::TooLarge(most as u64));
        }
        let body = encode(kind, sender, to, timeout, payload);
        // The target answers within the caller's timeout; the margin is for the way there and back.
        let wait = match kind {
            Kind::Send => self.settings.node_timeout,
            Kind::SendTimeout | Kind::Call => timeout + self.settings.node_timeout,
        };
        let request = async_nats::Request::new().payload(body).timeout(Some(wait));
        let answer = tokio::select! {
            answer = self.client.send_request(self.deliver_subject(index_of(to)), request) => answer,
            _ = connected.wait_for(|up| !*up) => {
                return Err(transport_error("the connection to the cluster's NATS server dropped while waiting"));
            }
        };
        match answer {
            Ok(message) => decode_reply(&message.payload),
            Err(error) => match error.kind() {
                // No host serves that index now: its node is gone.
                RequestErrorKind::NoResponders => Err(Error::NotFound),
                RequestErrorKind::TimedOut if kind != Kind::Send => Err(Error::Timeout),
                RequestErrorKind::MaxPayloadExceeded => Err(Error::TooLarge(most as u64)),
                _ => Err(transport_error(error)),
            },
        }
    }

    /// Serve the requests for this node's agents, until the connection closes.
    pub(super) async fn serve_deliveries(self: Arc<Self>, router: Arc<Router>) -> anyhow::Result<()> {
        let mut requests = self.client.subscribe(self.deliver_subject(self.index)).await?;
        tokio::spawn(async move {
            while let Some(message) = requests.next().await {
                let Some(reply_to) = message.reply.clone() else { continue };
                let client = self.client.clone();
                let Some(request) = decode(&message.payload) else {
                    respond(client, reply_to, Err(Error::Invalid("a malformed request from another node".into())))
                        .await;
                    continue;
                };
                if let Err(error) = router.check_size(request.payload.len()) {
                    respond(client, reply_to, Err(error)).await;
                    continue;
                }
                if self.is_remote(request.to) {
                    respond(client, reply_to, Err(Error::NotFound)).await;
                    continue;
                }
                let message = Message::cast(request.sender, request.payload);
                match request.kind {
                    Kind::Send => {
                        let delivered = router.try_deliver(request.to, message);
                        respond(client, reply_to, delivered.map(|()| Vec::new())).await;
                    }
                    // These wait: each on a task of its own, so that one slow target holds up no other.
                    Kind::SendTimeout => {
                        let router = router.clone();
                        tokio::spawn(async move {
                            let delivered = router.deliver_timeout(request.to, message, request.timeout).await;
                            respond(client, reply_to, delivered.map(|()| Vec::new())).await;
                        });
                    }
                    Kind::Call => {
                        let router = router.clone();
                        tokio::spawn(async move {
                            let Message { sender, body, .. } = message;
                            let payload = match body {
                                crate::messaging::Body::Bytes(payload) => payload,
                                crate::messaging::Body::Notice(_) => Vec::new(),
                            };
                            let reply = router.call(sender, request.to, payload, request.timeout).await;
                            respond(client, reply_to, reply).await;
                        });
                    }
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip() {
        let bytes = encode(Kind::Call, Some(7 << 40 | 3), 9 << 40 | 1, Duration::from_millis(1500), b"hello");
        let request = decode(&bytes).unwrap();
        assert_eq!(
            (request.kind, request.sender, request.to, request.timeout, request.payload.as_slice()),
            (Kind::Call, Some(7 << 40 | 3), 9 << 40 | 1, Duration::from_millis(1500), &b"hello"[..])
        );
        assert!(decode(&bytes[..HEADER - 1]).is_none());
        for reply in [
            Ok(b"answer".to_vec()),
            Err(Error::MailboxFull),
            Err(Error::TooLarge(1024)),
            Err(Error::Failed("no".into())),
            Err(Error::Invalid("bad".into())),
            Err(Error::Stopped),
        ] {
            assert_eq!(decode_reply(&encode_reply(&reply)), reply);
        }
    }
}
