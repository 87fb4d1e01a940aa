//! Consensus rounds among members of a cluster-wide group: the proposer's node holds the round
//! (its number carries that node's index, as agent ids do), vote requests travel to members of
//! other nodes as signals, and each vote comes back as a request answered with the local
//! outcome (`not-found`, `not-a-voter`), so a remote vote fails as a local one would. A member
//! that exits before voting is reported missing by its node; the members of a node that goes
//! down are missing at once.

use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::signals::Signal;
use super::{Cluster, NODE_SHIFT, index_of};
use crate::bindings::types::VoteRequest;
use crate::capabilities::coordination::consensus::{ConsensusError, RemoteRounds};
use crate::messaging::AgentId;

#[derive(Debug, Serialize, Deserialize)]
struct Vote {
    round: u64,
    voter: AgentId,
    accept: bool,
}

#[derive(Debug, Serialize, Deserialize)]
enum Voted {
    Ok,
    NotFound,
    NotAVoter,
    Invalid(String),
}

/// This node's end of other nodes' rounds.
pub struct Votes {
    cluster: Arc<Cluster>,
}

impl Cluster {
    fn vote_subject(&self, index: u64) -> String {
        format!("agora.{}.vote.{index}", self.settings.name)
    }

    /// Number this node's rounds and reach other nodes' through `consensus`; answer votes in
    /// this node's rounds.
    pub async fn serve_votes(self: &Arc<Self>, runtime: &Arc<crate::runtime::Runtime>) -> anyhow::Result<()> {
        let consensus = &runtime.services.coordination.consensus;
        consensus.share((self.index << NODE_SHIFT) | 1, Arc::new(Votes { cluster: self.clone() }));
        let mut votes = self.client.subscribe(self.vote_subject(self.index)).await?;
        let (weak, client) = (Arc::downgrade(runtime), self.client.clone());
        tokio::spawn(async move {
            while let Some(message) = votes.next().await {
                let Some(runtime) = weak.upgrade() else { return };
                let voted = match serde_json::from_slice::<Vote>(&message.payload) {
                    Ok(vote) => match runtime.services.coordination.consensus.vote(vote.round, vote.voter, vote.accept)
                    {
                        Ok(()) => Voted::Ok,
                        Err(ConsensusError::NotFound) => Voted::NotFound,
                        Err(ConsensusError::NotAVoter) => Voted::NotAVoter,
                        Err(ConsensusError::Invalid(why)) => Voted::Invalid(why),
                    },
                    Err(error) => Voted::Invalid(format!("a vote that does not decode: {error}")),
                };
                if let Some(reply) = message.reply {
                    let body = serde_json::to_vec(&voted).expect("an answer serializes");
                    let _ = client.publish(reply, body.into()).await;
                }
            }
        });
        Ok(())
    }
}

impl RemoteRounds for Votes {
    fn ask(&self, member: AgentId, request: &VoteRequest) -> bool {
        if !self.cluster.is_remote(member) || !self.cluster.index_up(member) {
            return false;
        }
        self.cluster.signal(
            member,
            Signal::VoteRequest {
                to: member,
                group: request.group.clone(),
                round: request.round,
                proposer: request.proposer,
                value: request.value.clone(),
            },
        );
        true
    }

    fn is_remote(&self, round: u64) -> bool {
        index_of(round) != self.cluster.index
    }

    fn vote(&self, round: u64, voter: AgentId, accept: bool) -> Result<(), ConsensusError> {
        let subject = self.cluster.vote_subject(index_of(round));
        let body = serde_json::to_vec(&Vote { round, voter, accept }).expect("a vote serializes");
        let (client, timeout) = (self.cluster.client.clone(), self.cluster.settings.node_timeout);
        let asked = super::remote::in_place(async move {
            tokio::time::timeout(timeout, client.request(subject, body.into())).await
        });
        let unreachable = |why: String| ConsensusError::Invalid(format!("unreachable: the round's node: {why}"));
        match asked {
            None => Err(unreachable("needs the multi-threaded runtime".into())),
            Some(Err(_)) => Err(unreachable("no answer in time".into())),
            // No node answers on that subject: the round's node is gone, and its rounds with it.
            Some(Ok(Err(error))) if error.kind() == async_nats::RequestErrorKind::NoResponders => {
                Err(ConsensusError::NotFound)
            }
            Some(Ok(Err(error))) => Err(unreachable(error.to_string())),
            Some(Ok(Ok(answer))) => match serde_json::from_slice::<Voted>(&answer.payload) {
                Ok(Voted::Ok) => Ok(()),
                Ok(Voted::NotFound) => Err(ConsensusError::NotFound),
                Ok(Voted::NotAVoter) => Err(ConsensusError::NotAVoter),
                Ok(Voted::Invalid(why)) => Err(ConsensusError::Invalid(why)),
                Err(error) => Err(unreachable(error.to_string())),
            },
        }
    }

    fn lost(&self, round: u64, voter: AgentId) {
        let proposer_node = (index_of(round)) << NODE_SHIFT;
        self.cluster.signal(proposer_node, Signal::VoterLost { round, voter });
    }
}
