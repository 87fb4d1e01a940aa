//! One half of a ping-pong pair. `role = "ping"` starts the exchange with `peer` and stops both
//! after `rounds` round trips; `role = "pong"` answers. With `mode = "call"` the ping side uses
//! request/reply (`call`) instead of two one-way sends through the mailboxes. With
//! `autostart = "false"` the ping side waits for a `start` message (the benchmarks use this to
//! start many pairs at once). With `payload = N` each message carries N bytes (at least the 8 of
//! the round's number). With `peers = N` the pong side serves N pings (a fan-in) and stops after
//! the last one's `stop`.
use std::time::Duration;

use agora_guest::{Agent, Config, Error, HandleError, Message, log, messaging};

enum Mode {
    Send,
    Call,
}

struct PingPong {
    ping: bool,
    peer: String,
    rounds: u64,
    done: u64,
    mode: Mode,
    /// What the ping side sends: the round's number in the first 8 bytes, zeros after.
    payload: Vec<u8>,
    /// Pong: the pings it serves, each of which sends `stop` when done.
    peers: u64,
}

const STOP: &[u8] = b"stop";
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The payload of a round: its number in the first 8 bytes.
fn stamp(payload: &mut [u8], round: u64) -> &[u8] {
    payload[..8].copy_from_slice(&round.to_le_bytes());
    payload
}

impl PingPong {
    fn finish(&mut self) -> Result<Option<Vec<u8>>, HandleError> {
        log::info(&format!("ping-pong finished {} round trips", self.done));
        messaging::send(self.peer.as_str(), STOP).map_err(|e| HandleError::fatal(e.to_string()))?;
        agora_guest::stop();
        Ok(None)
    }

    fn serve_calls(&mut self) -> Result<Option<Vec<u8>>, HandleError> {
        while self.done < self.rounds {
            let reply = messaging::call(self.peer.as_str(), stamp(&mut self.payload, self.done), CALL_TIMEOUT)
                .map_err(|e| HandleError::fatal(format!("call {}: {e}", self.peer)))?;
            if reply.len() != self.payload.len() || reply[..8] != self.done.to_le_bytes() {
                return Err(HandleError::fatal("pong answered the wrong round"));
            }
            self.done += 1;
        }
        self.finish()
    }
}

impl Agent for PingPong {
    fn init(config: Config) -> Result<Self, String> {
        let ping = match config.get("role") {
            Some("ping") => true,
            Some("pong") => false,
            other => {
                return Err(format!("config `role` must be \"ping\" or \"pong\", not {other:?}"));
            }
        };
        let mode = match config.get("mode").unwrap_or("send") {
            "send" => Mode::Send,
            "call" => Mode::Call,
            other => {
                return Err(format!("config `mode` must be \"send\" or \"call\", not {other:?}"));
            }
        };
        let agent = PingPong {
            ping,
            peer: config.get("peer").unwrap_or_default().to_string(),
            rounds: config.parse("rounds")?.unwrap_or(1000),
            done: 0,
            mode,
            payload: vec![0; config.parse::<usize>("payload")?.unwrap_or(8).max(8)],
            peers: config.parse("peers")?.unwrap_or(1),
        };
        if ping && config.get("autostart") != Some("false") {
            // Start in our own first message, so that init returns and the peer can be reached.
            messaging::send(messaging::self_id(), b"start").map_err(|e| e.to_string())?;
        }
        Ok(agent)
    }

    fn handle(&mut self, message: Message) -> Result<Option<Vec<u8>>, HandleError> {
        if message.payload == STOP {
            self.peers = self.peers.saturating_sub(1);
            if self.ping || self.peers == 0 {
                agora_guest::stop();
            }
            return Ok(None);
        }
        if !self.ping {
            // Pong: answer a call with a reply, a plain send with a send back.
            if message.correlation.is_some() {
                return Ok(Some(message.payload));
            }
            let sender = message.sender.ok_or_else(|| HandleError::reject("no sender"))?;
            return match messaging::send(sender, &message.payload) {
                // As a send to a dead process in Erlang: a peer that has exited (its host
                // shutting down, say) is not this agent's failure.
                Ok(()) | Err(Error::NotFound) => Ok(None),
                Err(e) => Err(HandleError::fatal(e.to_string())),
            };
        }
        match self.mode {
            Mode::Call => self.serve_calls(),
            Mode::Send => {
                if message.payload != b"start" {
                    self.done += 1;
                }
                if self.done == self.rounds {
                    return self.finish();
                }
                match messaging::send(self.peer.as_str(), stamp(&mut self.payload, self.done)) {
                    Ok(()) | Err(Error::NotFound) => Ok(None),
                    Err(e) => Err(HandleError::fatal(format!("send {}: {e}", self.peer))),
                }
            }
        }
    }
}

agora_guest::export_agent!(PingPong);
