//! An agent's stdout and stderr: forwarded to the host log line by line, and the last few KiB
//! kept so that a crash report can quote what the guest printed (a Rust panic message, say).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

const TAIL_BYTES: usize = 4096;

/// One guest output stream. Cloning shares the buffer.
#[derive(Clone)]
pub struct GuestOutput {
    agent: Arc<str>,
    stream: &'static str,
    buffer: Arc<Mutex<Buffer>>,
}

#[derive(Default)]
struct Buffer {
    /// Bytes of the line being written, not yet logged.
    partial: Vec<u8>,
    /// The most recent output, at most `TAIL_BYTES`.
    tail: Vec<u8>,
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
        buffer.tail.extend_from_slice(bytes);
        if buffer.tail.len() > TAIL_BYTES {
            let excess = buffer.tail.len() - TAIL_BYTES;
            buffer.tail.drain(..excess);
        }
        buffer.partial.extend_from_slice(bytes);
        while let Some(end) = buffer.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]);
            tracing::info!(target: "agora::agent", event = "agent_output", agent = %self.agent, stream = self.stream, "{line}");
        }
        if buffer.partial.len() > TAIL_BYTES {
            let line = String::from_utf8_lossy(&buffer.partial).into_owned();
            buffer.partial.clear();
            tracing::info!(target: "agora::agent", event = "agent_output", agent = %self.agent, stream = self.stream, "{line}");
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
