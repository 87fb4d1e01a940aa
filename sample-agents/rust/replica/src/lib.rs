//! A member of a replicated group: it joins the election group named by config `group`, logs
//! every change of leader (and whether it now leads), and votes on the group's proposals:
//! accept, unless the value contains its config `veto` word.
use agora_guest::{Agent, Config, HandleError, Message, Notice, VoteRequest, consensus, election, log, messaging};

struct Replica {
    group: String,
    veto: Option<String>,
}

impl Replica {
    fn report(&self, leadership: election::Leadership) {
        let me = messaging::self_id();
        match leadership.leader {
            Some(leader) if leader == me => log::info(&format!("I lead {} (term {})", self.group, leadership.term)),
            Some(leader) => log::info(&format!("{} is led by {leader} (term {})", self.group, leadership.term)),
            None => log::info(&format!("{} has no leader (term {})", self.group, leadership.term)),
        }
    }
}

impl Agent for Replica {
    fn init(config: Config) -> Result<Self, String> {
        let group = config.get("group").ok_or("config `group` is required")?.to_string();
        let replica = Replica { group, veto: config.get("veto").map(str::to_string) };
        let now = election::join(&replica.group).map_err(|e| format!("joining {}: {e:?}", replica.group))?;
        replica.report(now);
        Ok(replica)
    }

    fn handle(&mut self, _message: Message) -> Result<Option<Vec<u8>>, HandleError> {
        Ok(None)
    }

    fn notify(&mut self, notice: Notice) -> Result<(), HandleError> {
        match notice {
            Notice::LeaderChanged(change) => {
                self.report(election::Leadership { leader: change.leader, term: change.term })
            }
            Notice::VoteRequested(VoteRequest { group, round, value, .. }) => {
                let value = String::from_utf8_lossy(&value);
                let accept = self.veto.as_deref().is_none_or(|veto| !value.contains(veto));
                let voted = consensus::vote(&group, round, accept);
                log::info(&format!(
                    "voted {} on {value:?} (round {round}): {voted:?}",
                    if accept { "yes" } else { "no" }
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

agora_guest::export_agent!(Replica);
