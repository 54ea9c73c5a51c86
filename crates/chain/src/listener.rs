//! The API's listener: how many connections it holds, how many from one
//! address, how long one may sit without a byte either way, and how long
//! a request's head and body may take to arrive.
//!
//! axum's `serve` sets no timeouts (hyper's header timeout needs a timer
//! it is not given) and no cap: a client that sent half a request head
//! kept its connection, task and descriptor for good, and a few hundred
//! of them took the node's descriptors, so that nobody else reached the
//! API. Here every connection holds a slot of [`ApiLimits::max_connections`]
//! (at the limit, new ones wait in the kernel's backlog), an address holds
//! at most [`ApiLimits::max_per_ip`] (beyond, a new one is closed at once),
//! and a connection with no progress for [`ApiLimits::idle`] is closed.
//!
//! Progress alone is cheap: a head or a body sent a byte a minute never
//! let the idle timeout fire, and four addresses' worth of such
//! connections held every place for good. So [`GuardedListener::serve`]
//! runs hyper itself, with a timer, and a head must be whole within
//! [`ApiLimits::head_timeout`] (hyper's `header_read_timeout`), a body
//! within [`ApiLimits::body_timeout`] ([`BodyDeadline`]), however they
//! trickle. Event streams, which hold a connection by design, are capped
//! apart, and so are long-polls, which hold one for up to 60 s without a
//! byte (`api::Places`).

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
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
    /// A request head must arrive whole within this long of the
    /// connection's starting to wait for it: when it opens, and after each
    /// answer (so this is also how long a kept-alive connection may sit
    /// between requests; clients reconnect, and ureq checks a pooled
    /// connection before it reuses one). A head is a few hundred bytes,
    /// sent at once by every client; 10 s is a slow link's round trips
    /// many times over.
    pub head_timeout: Duration,
    /// A request body must arrive whole within this long of its head, or
    /// the request is answered 408 and the connection closed: the largest
    /// body read (4 MiB) at 560 kbit/s.
    pub body_timeout: Duration,
    /// Event streams (`/v1/events`) at once. A stream holds its connection
    /// for as long as its client likes, and its keep-alive is progress, so
    /// streams are capped apart, at a quarter of the connections: however
    /// many are held, three quarters of the places are left for requests.
    pub max_event_streams: usize,
    /// Event streams at once from one address (`client_key`): a wallet or
    /// explorer needs one, a gateway running a few services on one
    /// address several; 8 leaves room for them, and it takes 32 addresses
    /// to hold every stream. There is no cap on a stream's life: the events
    /// carry no id to resume from, so a forced reconnect would lose
    /// events, and it would free no place from a client that reconnects
    /// at once; a client that is gone is found at a write that fails (a
    /// block, a keep-alive each 15 s) or by the idle timeout.
    pub max_event_streams_per_ip: usize,
    /// Long-polls at once: requests waiting for a tx's block
    /// (`GET /v1/txs/{id}/wait`, and `wait=commit` on the submit routes),
    /// each holding its connection up to 60 s with no byte either way, so
    /// that neither the idle timeout nor the head deadline closes it.
    /// Uncapped, waits from four addresses on a tx that stays pending
    /// (one behind a nonce gap) held all the connections with about 17
    /// requests a second. Capped apart as event streams are, at a quarter
    /// of the connections: with both full, half the places are left for
    /// requests that are answered at once.
    pub max_waits: usize,
    /// Long-polls at once from one address (`client_key`): a wallet waits
    /// for one tx at a time, a gateway or a benchmark's probes for a few;
    /// 8 leaves room for them, and it takes 32 addresses to hold every
    /// place. Beyond, `GET /v1/txs/{id}/wait` is refused (429), and a
    /// submission with `wait=commit` is still submitted and answered at
    /// once, not waited for (`api::submit_inner`).
    pub max_waits_per_ip: usize,
}

impl Default for ApiLimits {
    fn default() -> ApiLimits {
        ApiLimits {
            max_connections: 1024,
            max_per_ip: 256,
            idle: Duration::from_secs(75),
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            max_event_streams: 256,
            max_event_streams_per_ip: 8,
            max_waits: 256,
            max_waits_per_ip: 8,
        }
    }
}

/// Which client sent a request: its `client_key` (IPv4 address, IPv6
/// /64). Every request served by [`GuardedListener::serve`] carries one
/// as an extension, for limits counted per client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientKey(pub IpAddr);

/// A TCP listener with [`ApiLimits`].
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

    /// Serves `app` on every connection, HTTP/1.1, and never returns.
    pub async fn serve(mut self, app: axum::Router) {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(self.limits.head_timeout);
        let body_timeout = self.limits.body_timeout;
        loop {
            let (io, addr) = self.accept().await;
            let client = ClientKey(client_key(addr.ip()));
            let app = app.clone();
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let mut request = request.map(|body| BodyDeadline::new(body, body_timeout));
                request.extensions_mut().insert(client);
                // A router is always ready: no `poll_ready` first.
                tower_service::Service::call(&mut app.clone(), request)
            });
            let connection = http.serve_connection(TokioIo::new(io), service);
            tokio::spawn(async move {
                // An error ends the connection (closed, reset, a deadline
                // passed): there is no one to tell.
                let _ = connection.await;
            });
        }
    }

    /// The next connection, once it holds its slots.
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

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A request body that must be whole by a deadline
/// ([`ApiLimits::body_timeout`] after its head): past it, a read that
/// waits is a [`BodyTooSlow`] error, the handler answers 408, and hyper
/// closes the connection (the rest of the body never came).
pub struct BodyDeadline {
    body: Incoming,
    deadline: Instant,
    limit: Duration,
    /// Made when a read first waits: most bodies are whole at once, and
    /// most requests have none.
    timer: Option<Pin<Box<Sleep>>>,
}

impl BodyDeadline {
    fn new(body: Incoming, limit: Duration) -> BodyDeadline {
        BodyDeadline { body, deadline: Instant::now() + limit, limit, timer: None }
    }
}

/// The error of a [`BodyDeadline`] that passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive whole within {} s of its head", limit.as_secs_f64())]
pub struct BodyTooSlow {
    pub limit: Duration,
}

impl Body for BodyDeadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTooSlow { limit: this.limit })))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // The length limit checks it before reading a byte.
        self.body.size_hint()
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
