//! A connection pool with poolboy's semantics: `size` connections are kept, up to `overflow`
//! more are opened when all are busy and closed when returned, and a checkout waits at most
//! `checkout_timeout` for a connection before it fails.
//!
//! A connection is an HTTP/1.1 client connection (hyper); its I/O runs on a task of its own.
//! It is checked out for a whole exchange, request through the end of the response body,
//! because HTTP/1.1 carries one exchange at a time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use super::tls::Tls;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSpec {
    pub size: u32,
    pub overflow: u32,
    pub checkout_timeout: Duration,
    pub connect_timeout: Duration,
}

/// How long an idle connection may take to become ready before a fresh one replaces it.
const READY_WAIT: Duration = Duration::from_millis(50);

pub struct Pool {
    address: SocketAddr,
    spec: PoolSpec,
    /// For an `https` target.
    tls: Option<Tls>,
    /// One permit per connection that may exist: size + overflow.
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<SendRequest<WasiBody>>>,
}

/// Why a checkout failed.
#[derive(Debug)]
pub enum CheckoutError {
    /// No connection came free within the checkout timeout.
    Timeout,
    Connect(HttpError),
}

/// A checked-out connection; returned to the pool when dropped.
pub struct Checkout {
    pool: Arc<Pool>,
    pub sender: Option<SendRequest<WasiBody>>,
    _slot: OwnedSemaphorePermit,
}

impl Pool {
    pub fn new(address: SocketAddr, spec: PoolSpec, tls: Option<Tls>) -> Pool {
        let capacity = (spec.size + spec.overflow).max(1) as usize;
        Pool { address, spec, tls, slots: Arc::new(Semaphore::new(capacity)), idle: Mutex::new(Vec::new()) }
    }

    pub fn capacity(&self) -> u32 {
        (self.spec.size + self.spec.overflow).max(1)
    }

    pub fn in_use(&self) -> u32 {
        self.capacity() - self.slots.available_permits() as u32
    }

    pub async fn checkout(self: &Arc<Self>) -> Result<Checkout, CheckoutError> {
        let slot = tokio::time::timeout(self.spec.checkout_timeout, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| CheckoutError::Timeout)?
            .map_err(|_| CheckoutError::Timeout)?;
        let reused = loop {
            let candidate = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some(mut sender) = candidate else { break None };
            // A connection is ready again a moment after its last response body ended; one
            // closed by the server, or abandoned mid-body, never is.
            if !sender.is_closed() && matches!(tokio::time::timeout(READY_WAIT, sender.ready()).await, Ok(Ok(()))) {
                break Some(sender);
            }
        };
        let sender = match reused {
            Some(sender) => sender,
            None => self.connect().await.map_err(CheckoutError::Connect)?,
        };
        Ok(Checkout { pool: self.clone(), sender: Some(sender), _slot: slot })
    }

    async fn connect(&self) -> Result<SendRequest<WasiBody>, HttpError> {
        let timeout = self.spec.connect_timeout;
        let stream = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(self.address)).await {
            Ok(stream) => stream.map_err(HttpError::Connect)?,
            Err(_) => return Err(HttpError::ConnectionTimeout),
        };
        let _ = stream.set_nodelay(true);
        // The connect timeout covers the whole setup: TCP, the TLS handshake and HTTP's.
        let setup = async {
            match &self.tls {
                Some(tls) => {
                    let secured = tls.connect(stream).await?;
                    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(secured)).await?;
                    tokio::spawn(drive(connection));
                    Ok::<_, HttpError>(sender)
                }
                None => {
                    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                    tokio::spawn(drive(connection));
                    Ok(sender)
                }
            }
        };
        let sender = tokio::time::timeout(timeout, setup).await.map_err(|_| HttpError::ConnectionTimeout)??;
        Ok(sender)
    }
}

/// Runs one connection's I/O until it closes.
async fn drive<T>(connection: hyper::client::conn::http1::Connection<T, WasiBody>)
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    if let Err(error) = connection.await {
        tracing::debug!(%error, "outbound connection closed");
    }
}

impl Drop for Checkout {
    /// Keep the connection if it can carry another exchange and the pool keeps fewer than
    /// `size`; overflow connections are closed.
    fn drop(&mut self) {
        let Some(sender) = self.sender.take() else { return };
        if sender.is_closed() {
            return;
        }
        let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        if (idle.len() as u32) < self.pool.spec.size {
            idle.push(sender);
        }
    }
}
