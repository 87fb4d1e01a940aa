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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    const SPEC: PoolSpec = PoolSpec {
        size: 1,
        overflow: 1,
        checkout_timeout: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(300),
    };

    /// A loopback listener with an accept queue of one that nobody accepts from, filled up: the
    /// kernel drops further SYNs, so a connect to it hangs as one to a dead host does.
    fn full_listener() -> (std::net::TcpListener, Vec<std::net::TcpStream>) {
        // SAFETY: plain socket calls on a descriptor this function owns; `sockaddr_in` is
        // written whole before it is read.
        let listener = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            let mut address: libc::sockaddr_in = std::mem::zeroed();
            address.sin_family = libc::AF_INET as libc::sa_family_t;
            address.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let size = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            assert_eq!(libc::bind(fd, (&raw const address).cast(), size), 0);
            assert_eq!(libc::listen(fd, 0), 0);
            std::net::TcpListener::from_raw_fd(fd)
        };
        let target = listener.local_addr().unwrap();
        let mut held = Vec::new();
        while let Ok(stream) = std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)) {
            held.push(stream);
            assert!(held.len() < 64, "the accept queue never filled");
        }
        (listener, held)
    }

    #[tokio::test]
    async fn a_connect_that_hangs_fails_at_the_connect_timeout() {
        let (listener, _held) = full_listener();
        let pool = Arc::new(Pool::new(listener.local_addr().unwrap(), SPEC, None));
        let started = std::time::Instant::now();
        let failed = pool.checkout().await.err().expect("nobody accepts");
        assert!(matches!(failed, CheckoutError::Connect(HttpError::ConnectionTimeout)), "{failed:?}");
        assert!(started.elapsed() >= SPEC.connect_timeout);
        assert_eq!(pool.in_use(), 0, "a failed connect gives its slot back");
    }

    #[tokio::test]
    async fn a_tls_handshake_that_never_answers_fails_at_the_connect_timeout() {
        // Accepted, then silent: the TCP connect succeeds and the handshake waits for ever.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
        let tls = Tls::new("127.0.0.1", None).unwrap();
        let pool = Arc::new(Pool::new(address, SPEC, Some(tls)));
        let failed = pool.checkout().await.err().expect("the server never speaks");
        assert!(matches!(failed, CheckoutError::Connect(HttpError::ConnectionTimeout)), "{failed:?}");
        drop(accepted.join().unwrap());
    }

    #[tokio::test]
    async fn overflow_is_opened_when_all_are_busy_and_the_checkout_waits_no_longer_than_its_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepting = tokio::spawn(async move {
            let mut streams = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                streams.push(stream);
            }
        });
        let pool = Arc::new(Pool::new(address, SPEC, None));
        let first = pool.checkout().await.unwrap();
        let overflow = pool.checkout().await.unwrap();
        assert_eq!((pool.in_use(), pool.capacity()), (2, 2));
        let started = std::time::Instant::now();
        assert!(matches!(pool.checkout().await, Err(CheckoutError::Timeout)), "size + overflow are taken");
        assert!(started.elapsed() >= SPEC.checkout_timeout);
        drop(overflow);
        assert_eq!(pool.in_use(), 1);
        let again = pool.checkout().await.expect("a returned slot is free again");
        drop((first, again));
        assert_eq!(pool.in_use(), 0);
        accepting.abort();
    }
}
