//! The host's recent log lines, for `agora logs [-f]` and the admin API: a tracing layer keeps
//! the last [`KEPT`] lines the log shows (what passes the log filter) in memory, and hands each
//! new one to the followers. Bounded both ways: the backlog drops its oldest line, and a follower
//! that reads too slowly loses lines (it is told how many) instead of holding the host's memory.
//!
//! One per process, because the tracing subscriber is.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;

/// Lines kept for a late reader.
pub const KEPT: usize = 10_000;
/// Lines buffered for each follower before it starts losing them.
const FOLLOWER_LAG: usize = 4096;
/// The longest line kept, in bytes (a crash's captured output can be long).
const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub seq: u64,
    pub time_ms: u64,
    pub level: &'static str,
    /// The agent the line is about (an agent's own log line, its output, its lifecycle).
    pub agent: Option<String>,
    /// The event code (`agent_started`, `guest_log`, ...), when the line has one.
    pub event: Option<String>,
    pub message: String,
}

pub struct LogTail {
    lines: Mutex<(u64, VecDeque<Arc<LogLine>>)>,
    live: broadcast::Sender<Arc<LogLine>>,
}

impl LogTail {
    fn new() -> LogTail {
        LogTail { lines: Mutex::new((0, VecDeque::new())), live: broadcast::channel(FOLLOWER_LAG).0 }
    }

    fn push(&self, mut line: LogLine) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.0 += 1;
        line.seq = lines.0;
        let line = Arc::new(line);
        if lines.1.len() == KEPT {
            lines.1.pop_front();
        }
        lines.1.push_back(line.clone());
        // Sent under the lock, so that a follower's backlog and its live lines never overlap
        // or leave a gap.
        let _ = self.live.send(line);
    }

    /// The last `limit` lines that `keep` accepts, oldest first, and a receiver of the lines
    /// that come after them.
    pub fn follow(
        &self,
        limit: usize,
        keep: impl Fn(&LogLine) -> bool,
    ) -> (Vec<Arc<LogLine>>, broadcast::Receiver<Arc<LogLine>>) {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let mut backlog: Vec<Arc<LogLine>> = lines.1.iter().rev().filter(|l| keep(l)).take(limit).cloned().collect();
        backlog.reverse();
        (backlog, self.live.subscribe())
    }
}

/// The process's log tail.
pub fn tail() -> &'static LogTail {
    static TAIL: OnceLock<LogTail> = OnceLock::new();
    TAIL.get_or_init(LogTail::new)
}

/// The layer that feeds [`tail`].
pub struct TailLayer;

impl<S: Subscriber> tracing_subscriber::Layer<S> for TailLayer {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64);
        let mut message = fields.message;
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        tail().push(LogLine {
            seq: 0,
            time_ms,
            level: event.metadata().level().as_str(),
            agent: fields.agent,
            event: fields.event,
            message,
        });
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    agent: Option<String>,
    event: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "agent" => self.agent = Some(value.to_string()),
            "event" => self.event = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "agent" => self.agent = Some(format!("{value:?}").trim_matches('"').to_string()),
            "event" => self.event = Some(format!("{value:?}").trim_matches('"').to_string()),
            _ => {}
        }
    }
}
