//! The cluster's ledger journal: every movement of money of every node, in one JetStream stream
//! (`agora_<cluster>_ledger`) that every node follows into its own wallets.
//!
//! Why a shared journal rather than one node owning the ledger: an owner would be a single
//! point of failure that must hand its state over when it dies, and that state would have to be
//! somewhere the next owner can read, which is what the stream is. With the stream, any node
//! serves its agents' movements, a killed node loses nothing the server acknowledged, and a
//! restarted one rebuilds every wallet by replaying it.
//!
//! Why movements stay valid without a global lock: a wallet is debited only by the node its
//! agent runs on (names are cluster-wide, so one node at a time), and credits only ever add. So
//! a node checks a debit against its own view (every debit of that wallet is its own, and
//! credits it has not seen yet can only make more room) and publishes it on the wallet's own
//! subject (`agora.<cluster>.ledger.<hex wallet>`), expecting the subject's last sequence to be
//! the one it knows. If another node wrote there meanwhile (the agent moved, a previous run's
//! record landed late), the write is refused: the node catches up and checks again. Each
//! movement is one message (a capture and the release of its rest cannot be split), with a
//! message id, so a publish whose acknowledgement was lost is retried without applying twice.
//!
//! Compute is paid to each node's own house wallet (`host:compute:<node>`): charges and their
//! refunds then have one writer too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::capabilities::economics::journal::{Kind, Record};

/// A record as the stream carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireRecord {
    kind: u8,
    debit: String,
    credit: String,
    amount: u64,
    hold: u64,
    memo: String,
}

fn to_wire(record: &Record) -> WireRecord {
    WireRecord {
        kind: record.kind as u8,
        debit: record.debit.to_string(),
        credit: record.credit.to_string(),
        amount: record.amount,
        hold: record.hold,
        memo: record.memo.clone(),
    }
}

fn from_wire(wire: WireRecord) -> Option<Record> {
    Some(Record {
        kind: Kind::from_u8(wire.kind)?,
        debit: wire.debit.into(),
        credit: wire.credit.into(),
        amount: wire.amount,
        hold: wire.hold,
        memo: wire.memo,
    })
}

/// What applying a movement of this node's does to the wallets once it is in the stream.
#[derive(Debug, Clone)]
pub struct Effect {
    pub records: Vec<Record>,
    /// The debit side was taken already (compute, charged as it is burned): credit only.
    pub credit_only: bool,
}

/// How the wallets take a movement: its records, and whether only their credit sides apply.
pub type Apply = Box<dyn Fn(&[Record], bool) + Send + Sync>;

/// A movement of this node's, published and not both acknowledged and followed yet.
enum Pending {
    /// Not applied yet: whichever of the acknowledgement and the follower comes first applies it.
    Waiting(Effect),
    /// Applied; the other of the two has yet to come by.
    Applied,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another node (or a previous run) wrote to the wallet's subject since this node last
    /// read it: catch up and check again.
    #[error("the wallet moved elsewhere meanwhile")]
    Conflict,
    /// The server did not acknowledge it in time. The movement is in doubt: applied, once, if
    /// it reached the stream.
    #[error("unreachable: the cluster's ledger did not acknowledge the movement: {0}")]
    InDoubt(String),
    #[error("unreachable: the cluster's ledger: {0}")]
    Failed(String),
}

/// This node's end of the cluster's ledger journal.
pub struct SharedJournal {
    js: jetstream::Context,
    stream: String,
    subjects: String,
    /// This node's house wallet for compute.
    pub compute_account: Arc<str>,
    origin: String,
    next_id: AtomicU64,
    /// Each subject's last sequence as followed or acknowledged: what a wallet's next debit
    /// expects.
    last_of: Mutex<HashMap<String, u64>>,
    pending: Mutex<HashMap<String, Pending>>,
    /// The last stream sequence followed.
    followed: tokio::sync::watch::Sender<u64>,
    /// One movement at a time per wallet debited from this node.
    writers: Mutex<HashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>>>,
    apply: OnceLock<Apply>,
    /// How long a publish is retried before the movement is reported in doubt.
    patience: Duration,
}

impl SharedJournal {
    /// Open (or create) the cluster's ledger stream.
    pub async fn open(cluster: &super::Cluster) -> anyhow::Result<Arc<SharedJournal>> {
        let name = format!("agora_{}_ledger", cluster.settings.name);
        let subjects = format!("agora.{}.ledger", cluster.settings.name);
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![format!("{subjects}.>")],
            storage: stream::StorageType::File,
            // Retried publishes of one movement are recognised within this window.
            duplicate_window: Duration::from_secs(300),
            ..Default::default()
        };
        cluster.js.get_or_create_stream(config).await.with_context(|| format!("cannot open stream {name}"))?;
        Ok(Arc::new(SharedJournal {
            js: cluster.js.clone(),
            stream: name,
            subjects,
            compute_account: format!("host:compute:{}", cluster.settings.node).into(),
            origin: format!("{}-{}", cluster.settings.node, cluster.incarnation),
            next_id: AtomicU64::new(1),
            last_of: Default::default(),
            pending: Default::default(),
            followed: tokio::sync::watch::channel(0).0,
            writers: Default::default(),
            apply: OnceLock::new(),
            patience: (cluster.settings.node_timeout * 2).max(Duration::from_secs(5)),
        }))
    }

    fn subject(&self, wallet: &str) -> String {
        format!("{}.{}", self.subjects, super::hex(wallet))
    }

    /// The turn of movements debiting `wallet` from this node.
    pub fn writer(&self, wallet: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.writers.lock().expect("writers").entry(wallet.into()).or_default().clone()
    }

    /// Follow the stream from its start into the wallets through `apply`; returns once every
    /// movement the stream held when called is applied.
    pub async fn follow(self: &Arc<Self>, apply: Apply) -> anyhow::Result<()> {
        use futures_util::StreamExt;
        let _ = self.apply.set(apply);
        let stream = self.js.get_stream(&self.stream).await.context("reading the ledger stream")?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .context("following the ledger stream")?;
        let mut messages = consumer.messages().await.context("following the ledger stream")?;
        let journal = self.clone();
        tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                match message {
                    Ok(message) => journal.take(&message),
                    Err(error) => tracing::warn!(event = "ledger_follow_error", %error),
                }
            }
            tracing::error!(event = "ledger_follow_ended", "the ledger stream is no longer followed");
        });
        self.catch_up().await
    }

    /// One message of the stream, in order: apply it unless it is this node's and applied.
    fn take(&self, message: &jetstream::Message) {
        let Ok(info) = message.info() else { return };
        let seq = info.stream_sequence;
        {
            let mut last_of = self.last_of.lock().expect("last_of");
            let last = last_of.entry(message.subject.to_string()).or_default();
            *last = (*last).max(seq);
        }
        let id =
            message.headers.as_ref().and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID)).map(|v| v.to_string());
        let own = id.and_then(|id| {
            let mut pending = self.pending.lock().expect("pending");
            match pending.remove(&id)? {
                Pending::Applied => Some(None),
                Pending::Waiting(effect) => {
                    pending.insert(id, Pending::Applied);
                    Some(Some(effect))
                }
            }
        });
        let apply = self.apply.get().expect("following applies");
        match own {
            Some(None) => {}
            Some(Some(effect)) => apply(&effect.records, effect.credit_only),
            None => match serde_json::from_slice::<Vec<WireRecord>>(&message.payload) {
                Ok(wire) => {
                    let records: Option<Vec<Record>> = wire.into_iter().map(from_wire).collect();
                    match records {
                        Some(records) => apply(&records, false),
                        None => tracing::error!(event = "ledger_bad_record", seq, "a record of unknown kind"),
                    }
                }
                Err(error) => tracing::error!(event = "ledger_bad_record", seq, %error),
            },
        }
        self.followed.send_replace(seq);
    }

    /// Wait until every movement in the stream now is applied here.
    pub async fn catch_up(&self) -> anyhow::Result<()> {
        let last = self.js.get_stream(&self.stream).await.context("reading the ledger stream")?;
        let last = last.get_info().await.context("reading the ledger stream")?.state.last_sequence;
        let mut followed = self.followed.subscribe();
        tokio::time::timeout(self.patience, followed.wait_for(|seq| *seq >= last))
            .await
            .context("the ledger stream was not followed in time")?
            .context("the ledger stream is no longer followed")?;
        Ok(())
    }

    /// Publish a movement debiting `wallet` (the house wallet's refunds: without expecting its
    /// subject's sequence, as every refund is covered by charges of the same agent); applied
    /// here once acknowledged. Hold the wallet's [`writer`](Self::writer) turn.
    pub async fn append(&self, wallet: &str, effect: Effect) -> Result<u64, AppendError> {
        use async_nats::header::{self, HeaderValue};
        let subject = self.subject(wallet);
        let id = format!("{}-{}", self.origin, self.next_id.fetch_add(1, Ordering::Relaxed));
        let wire: Vec<WireRecord> = effect.records.iter().map(to_wire).collect();
        let payload = Bytes::from(serde_json::to_vec(&wire).expect("records serialize"));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(header::NATS_MESSAGE_ID, HeaderValue::from(id.as_str()));
        if *wallet != *self.compute_account {
            let expected = self.last_of.lock().expect("last_of").get(&subject).copied().unwrap_or(0);
            headers.insert(header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, HeaderValue::from(expected));
        }
        self.pending.lock().expect("pending").insert(id.clone(), Pending::Waiting(effect));
        let deadline = tokio::time::Instant::now() + self.patience;
        let mut last_error = String::new();
        while tokio::time::Instant::now() < deadline {
            let published = match self.js.publish_with_headers(subject.clone(), headers.clone(), payload.clone()).await
            {
                Ok(ack) => ack.await,
                Err(error) => {
                    last_error = error.to_string();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match published {
                Ok(ack) => {
                    {
                        let mut last_of = self.last_of.lock().expect("last_of");
                        let last = last_of.entry(subject).or_default();
                        *last = (*last).max(ack.sequence);
                    }
                    self.applied_here(&id);
                    return Ok(ack.sequence);
                }
                Err(error) if error.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                    self.pending.lock().expect("pending").remove(&id);
                    return Err(AppendError::Conflict);
                }
                Err(error)
                    if matches!(
                        error.kind(),
                        jetstream::context::PublishErrorKind::TimedOut
                            | jetstream::context::PublishErrorKind::BrokenPipe
                    ) =>
                {
                    last_error = error.to_string();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => {
                    self.pending.lock().expect("pending").remove(&id);
                    return Err(AppendError::Failed(error.to_string()));
                }
            }
        }
        // Left pending: if it reached the stream, the follower applies it when it comes by.
        tracing::error!(event = "ledger_in_doubt", wallet, id = %id, error = %last_error,
            "a movement of {wallet} was not acknowledged in time: applied if it reached the ledger");
        Err(AppendError::InDoubt(last_error))
    }

    /// The acknowledgement came: apply the movement unless the follower did.
    fn applied_here(&self, id: &str) {
        let effect = {
            let mut pending = self.pending.lock().expect("pending");
            match pending.remove(id) {
                Some(Pending::Waiting(effect)) => {
                    pending.insert(id.to_string(), Pending::Applied);
                    Some(effect)
                }
                // The follower applied it first.
                Some(Pending::Applied) | None => None,
            }
        };
        if let Some(effect) = effect {
            (self.apply.get().expect("following applies"))(&effect.records, effect.credit_only);
        }
    }

    /// What this node's movements in flight carry that no wallet shows: compute charges taken
    /// and not yet credited.
    pub fn in_flight(&self) -> u128 {
        self.pending
            .lock()
            .expect("pending")
            .values()
            .map(|p| match p {
                Pending::Waiting(effect) if effect.credit_only => {
                    effect.records.iter().map(|r| r.amount as u128).sum::<u128>()
                }
                _ => 0,
            })
            .sum()
    }
}
