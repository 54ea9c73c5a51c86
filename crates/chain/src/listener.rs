//! The API's listener: how many connections it holds, how many from one
//! address, and how long one may sit without a byte either way.
//!
//! axum's `serve` sets no timeouts (hyper's header timeout needs a timer
//! it is not given) and no cap: a client that sent half a request head
//! kept its connection, task and descriptor for good, and a few hundred
//! of them took the node's descriptors, so that nobody else reached the
//! API. Here every connection holds a slot of [`ApiLimits::max_connections`]
//! (at the limit, new ones wait in the kernel's backlog), an address holds
//! at most [`ApiLimits::max_per_ip`] (beyond, a new one is closed at once),
//! and a connection with no progress for [`ApiLimits::idle`] is closed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tollway_types::admission::{client_key, AddressSlot, PerAddress};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiLimits {
    /// Connections at once.
    pub max_connections: usize,
    /// Connections at once from one address (an IPv6 client's /64, which a
    /// host can pick any address in): a quarter of all, so that a
    /// gateway on one address (a wallet service, the `chain` benchmark's
    /// 70 load and probe threads) fits, and one address cannot hold the
    /// rest.
    pub max_per_ip: usize,
    /// A connection with no byte read or written for this long is closed:
    /// longer than the longest wait a request may ask for (`timeout_ms`,
    /// at most 60 s) and the event stream's keep-alive (15 s).
    pub idle: Duration,
}

impl Default for ApiLimits {
    fn default() -> ApiLimits {
        ApiLimits { max_connections: 1024, max_per_ip: 256, idle: Duration::from_secs(75) }
    }
}

/// A TCP listener with [`ApiLimits`], for `axum::serve`.
pub struct GuardedListener {
    inner: TcpListener,
    limits: ApiLimits,
    slots: Arc<Semaphore>,
    per_ip: Arc<PerAddress>,
}

impl GuardedListener {
    pub fn new(inner: TcpListener, limits: ApiLimits) -> GuardedListener {
        GuardedListener { inner, limits, slots: Arc::new(Semaphore::new(limits.max_connections)), per_ip: PerAddress::new(limits.max_per_ip) }
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Guarded, SocketAddr) {
        loop {
            // The slot first: at the limit, connections wait in the
            // backlog rather than hold a descriptor here each.
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                // The semaphore is never closed.
                std::future::pending::<()>().await;
                continue;
            };
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of descriptors (EMFILE) the connection stays
                    // queued: a pause, not a spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(ip_slot) = self.per_ip.admit(client_key(addr.ip())) else {
                // Closed at once: this address holds its share.
                continue;
            };
            let _ = stream.set_nodelay(true);
            let idle = self.limits.idle;
            let now = Instant::now();
            let guarded =
                Guarded { io: stream, idle, last_progress: now, timer: Box::pin(tokio::time::sleep_until(now + idle)), _slot: slot, _ip_slot: ip_slot };
            return (guarded, addr);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection: its slots, and when a byte last went either
/// way.
pub struct Guarded {
    io: TcpStream,
    idle: Duration,
    last_progress: Instant,
    /// Armed at the idle deadline when an operation waits; moved only
    /// then, so that a busy connection pays a clock read per operation,
    /// not a timer reset.
    timer: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
    _ip_slot: AddressSlot,
}

impl Guarded {
    fn progressed(&mut self) {
        self.last_progress = Instant::now();
    }

    /// For an operation that is pending: an error once the connection has
    /// been idle for too long (the caller then drops it).
    fn idle_for_too_long<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let deadline = self.last_progress + self.idle;
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no byte either way for too long"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.idle_for_too_long(cx),
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.progressed();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.idle_for_too_long(cx),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Pending => self.idle_for_too_long(cx),
            done => done,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
