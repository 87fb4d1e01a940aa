//! An agent's stdout and stderr: forwarded to the host log line by line, and the last few KiB
//! kept so that a crash report can quote what the guest printed (a Rust panic message, say).
//!
//! A guest must not be able to flood the host's log: a line is logged up to `MAX_LINE` bytes
//! (the rest is cut, and the cut said), and each stream logs at most `LINES_PER_SECOND` lines
//! and `BYTES_PER_SECOND` bytes a second. What is dropped is counted
//! (`agora_agent_output_dropped_bytes_total`) and reported once per second in which it happened
//! (`agent_output_dropped`).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

const TAIL_BYTES: usize = 4096;
/// The longest line logged; the rest of a longer one is cut.
pub const MAX_LINE: usize = 1024;
/// Per stream and second, at most this many lines and bytes reach the log.
pub const LINES_PER_SECOND: u32 = 100;
pub const BYTES_PER_SECOND: usize = 64 << 10;

/// Guest output bytes that never reached the log (cut lines, over the rate), host-wide.
pub static DROPPED_BYTES: AtomicU64 = AtomicU64::new(0);

/// One guest output stream. Cloning shares the buffer.
#[derive(Clone)]
pub struct GuestOutput {
    agent: Arc<str>,
    stream: &'static str,
    buffer: Arc<Mutex<Buffer>>,
}

struct Buffer {
    /// Bytes of the line being written, not yet logged (at most `MAX_LINE`).
    partial: Vec<u8>,
    /// Bytes of the current line cut so far (beyond `MAX_LINE`).
    cut: usize,
    /// The most recent output, at most `TAIL_BYTES`.
    tail: Vec<u8>,
    window: Window,
}

/// The current one-second window of the rate limit.
struct Window {
    started: Instant,
    lines: u32,
    bytes: usize,
    dropped_lines: u32,
    dropped_bytes: usize,
}

impl Default for Buffer {
    fn default() -> Self {
        let window = Window { started: Instant::now(), lines: 0, bytes: 0, dropped_lines: 0, dropped_bytes: 0 };
        Buffer { partial: Vec::new(), cut: 0, tail: Vec::new(), window }
    }
}

impl GuestOutput {
    pub fn new(agent: Arc<str>, stream: &'static str) -> Self {
        GuestOutput { agent, stream, buffer: Arc::default() }
    }

    /// The last lines the guest wrote, for crash reports.
    pub fn tail(&self) -> String {
        let buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&buffer.tail).trim_end().to_string()
    }

    fn append(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let tail_from = bytes.len().saturating_sub(TAIL_BYTES);
        buffer.tail.extend_from_slice(&bytes[tail_from..]);
        if buffer.tail.len() > TAIL_BYTES {
            let excess = buffer.tail.len() - TAIL_BYTES;
            buffer.tail.drain(..excess);
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let (chunk, ended) = match rest.iter().position(|b| *b == b'\n') {
                Some(end) => (&rest[..end], true),
                None => (rest, false),
            };
            rest = &rest[(chunk.len() + usize::from(ended)).min(rest.len())..];
            let room = MAX_LINE - buffer.partial.len();
            let kept = chunk.len().min(room);
            buffer.partial.extend_from_slice(&chunk[..kept]);
            buffer.cut += chunk.len() - kept;
            if ended {
                self.emit(&mut buffer);
            }
        }
    }

    /// Log the buffered line, within the stream's rate.
    fn emit(&self, buffer: &mut Buffer) {
        let line = std::mem::take(&mut buffer.partial);
        let cut = std::mem::take(&mut buffer.cut);
        DROPPED_BYTES.fetch_add(cut as u64, Ordering::Relaxed);
        if cut == 0 && line.iter().all(u8::is_ascii_whitespace) {
            // A blank line says nothing in a log where every line is stamped and named (a Rust
            // panic starts with one); the crash report's tail still has it.
            return;
        }
        let now = Instant::now();
        let window = &mut buffer.window;
        if now.duration_since(window.started) >= Duration::from_secs(1) {
            if window.dropped_lines > 0 {
                tracing::warn!(target: "agora::agent", event = "agent_output_dropped", agent = %self.agent,
                    stream = self.stream, lines = window.dropped_lines, bytes = window.dropped_bytes,
                    "{} lines ({} bytes) of {} output over {LINES_PER_SECOND} lines or {BYTES_PER_SECOND} bytes a second were dropped",
                    window.dropped_lines, window.dropped_bytes, self.stream);
            }
            *window = Window { started: now, lines: 0, bytes: 0, dropped_lines: 0, dropped_bytes: 0 };
        }
        if window.lines >= LINES_PER_SECOND || window.bytes + line.len() > BYTES_PER_SECOND {
            window.dropped_lines += 1;
            window.dropped_bytes += line.len();
            DROPPED_BYTES.fetch_add(line.len() as u64, Ordering::Relaxed);
            return;
        }
        window.lines += 1;
        window.bytes += line.len();
        let text = String::from_utf8_lossy(&line);
        if cut > 0 {
            tracing::info!(target: "agora::agent", event = "agent_output", agent = %self.agent, stream = self.stream,
                cut, "{text} [{cut} more bytes cut]");
        } else {
            tracing::info!(target: "agora::agent", event = "agent_output", agent = %self.agent, stream = self.stream, "{text}");
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, bytes: &[u8]) -> Poll<std::io::Result<usize>> {
        self.append(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
