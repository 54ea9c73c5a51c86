//! The byte streams handed to the tunnel layer: [`Connection`] (a socket
//! of either transport) and [`SecureStream`] (TLS inside any stream).

use crate::buffered::BufferedTcp;
use crate::quic::{LivePath, PathMemory};
use crate::shards::{Home, ShardLoad};
use crate::Transport;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a dropped QUIC connection keeps delivering what was written
/// before it closes (TCP delivers after `close` too; QUIC would not).
const QUIC_LINGER: Duration = Duration::from_secs(10);

/// TLS 1.3 inside a byte stream `S` (a TCP socket, or a stream forwarded by
/// a relay). A byte stream itself, with the session's channel binding.
pub struct SecureStream<S> {
    pub(crate) stream: tokio_rustls::TlsStream<S>,
    pub(crate) channel_binding: [u8; 32],
    pub(crate) alpn: Vec<u8>,
}

impl<S> SecureStream<S> {
    /// 32 bytes exported from this TLS session (label
    /// [`crate::CHANNEL_BINDING_LABEL`], no context): equal on both ends,
    /// different for every session.
    pub fn channel_binding(&self) -> [u8; 32] {
        self.channel_binding
    }

    /// The negotiated ALPN protocol id (`h2`).
    pub fn alpn(&self) -> &[u8] {
        &self.alpn
    }

    /// The negotiated TLS 1.3 cipher suite, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub fn cipher_suite(&self) -> Option<String> {
        self.stream.get_ref().1.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite()))
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &S {
        self.stream.get_ref().0
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for SecureStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for SecureStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    /// All the slices in as few records and one write to the stream
    /// underneath: without it, the default wrote only the first slice, so
    /// a gathered write was a record and a system call per slice.
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    /// Sends TLS close_notify, then shuts the stream's write half.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// One encrypted connection between a client and a node, over either
/// transport: a byte stream (`AsyncRead + AsyncWrite`), its addresses, and
/// the channel binding.
pub struct Connection {
    stream: Stream,
    peer_addr: SocketAddr,
    local_addr: SocketAddr,
    /// The runtime whose reactor the socket is registered with: tasks that
    /// use the connection belong there (see [`crate::Shards`]).
    runtime: tokio::runtime::Handle,
    /// On a sharded node, counts this connection against its shard.
    shard_load: Option<ShardLoad>,
}

enum Stream {
    Tls(Box<SecureStream<BufferedTcp>>),
    Quic(Box<QuicStream>),
}

/// QUIC's one bidirectional stream, joined, with what keeps it alive.
pub(crate) struct QuicStream {
    /// `None` only during drop.
    pub(crate) send: Option<quinn::SendStream>,
    pub(crate) recv: quinn::RecvStream,
    pub(crate) connection: quinn::Connection,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) channel_binding: [u8; 32],
    pub(crate) alpn: Vec<u8>,
    /// A node's: where this connection is its client address's newest, for
    /// a port hop's next connection to start from (`quic::PathMemory`).
    pub(crate) remembered: Option<Arc<PathMemory>>,
    /// A node's: its client's address as last seen, to notice it move (on
    /// a client's side, the node's, and unused).
    pub(crate) client_ip: std::net::IpAddr,
}

impl QuicStream {
    /// A node's side: if the client has moved to another address since
    /// last seen (connection migration), files the connection there in the
    /// node's path memory, so that a hop's connection from there starts
    /// from its congestion state (`quic::PathMemory`). One look at quinn's
    /// state per read, the memory's lock only when it moved. Reads only: a
    /// session reads from its client all along (a receipt every MiB of a
    /// download, or the upload itself), so a download's writes, the hot
    /// path, need not look.
    fn note_client_address(&mut self) {
        let Some(memory) = &self.remembered else { return };
        let now_at = self.connection.remote_address().ip();
        if now_at != self.client_ip {
            self.client_ip = now_at;
            memory.moved(&self.connection, now_at);
        }
    }
}

impl Drop for QuicStream {
    fn drop(&mut self) {
        if let Some(memory) = self.remembered.take() {
            memory.forget(&self.connection);
        }
        // Finish the stream and let the written bytes drain (bounded) before
        // the connection closes, as TCP would after close.
        let Some(mut send) = self.send.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let connection = self.connection.clone();
        let endpoint = self.endpoint.clone();
        runtime.spawn(async move {
            let _ = send.finish();
            let _ = tokio::time::timeout(QUIC_LINGER, send.stopped()).await;
            connection.close(0u32.into(), b"");
            drop(endpoint);
        });
    }
}

impl Connection {
    /// Both are built inside the runtime their socket is registered with.
    pub(crate) fn tls(stream: SecureStream<BufferedTcp>, peer_addr: SocketAddr, local_addr: SocketAddr) -> Connection {
        Connection::new(Stream::Tls(Box::new(stream)), peer_addr, local_addr)
    }

    pub(crate) fn quic(stream: QuicStream, peer_addr: SocketAddr, local_addr: SocketAddr) -> Connection {
        Connection::new(Stream::Quic(Box::new(stream)), peer_addr, local_addr)
    }

    fn new(stream: Stream, peer_addr: SocketAddr, local_addr: SocketAddr) -> Connection {
        let runtime = tokio::runtime::Handle::current();
        Connection { stream, peer_addr, local_addr, runtime, shard_load: None }
    }

    pub(crate) fn on_shard(mut self, load: ShardLoad) -> Connection {
        self.shard_load = Some(load);
        self
    }

    /// Where this connection is served (see [`Home`]).
    pub fn home(&self) -> Home {
        Home::new(self.runtime.clone(), self.shard_load.as_ref())
    }

    /// Moves the connection to `home`: its socket to that runtime's
    /// reactor (with the bytes read ahead and the TLS state), and its
    /// count to that shard. A QUIC connection (its endpoint's one UDP
    /// socket serves it), one already there and any off shards stay.
    /// On an error the connection is lost.
    pub async fn move_home(mut self, home: &Home) -> io::Result<Connection> {
        if home.shard.is_none() || self.home().is(home) {
            return Ok(self);
        }
        let Stream::Tls(tls) = &mut self.stream else { return Ok(self) };
        tls.stream.get_mut().0.detach()?;
        self.shard_load = None;
        let (moved_tx, moved) = tokio::sync::oneshot::channel();
        let there = home.clone();
        home.runtime.spawn(async move {
            let attached = match &mut self.stream {
                Stream::Tls(tls) => tls.stream.get_mut().0.attach(),
                Stream::Quic(_) => Ok(()),
            };
            self.runtime = there.runtime.clone();
            self.shard_load = there.load();
            let _ = moved_tx.send(attached.map(|()| self));
        });
        moved.await.map_err(|_| io::Error::other("the connection's new runtime has stopped"))?
    }

    /// The runtime this connection's socket is registered with. On a
    /// sharded node ([`crate::Shards`]) that is its shard: spawn the tasks
    /// that serve the connection there, so its I/O never changes thread.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    pub fn transport(&self) -> Transport {
        match self.stream {
            Stream::Tls(_) => Transport::Tls,
            Stream::Quic(_) => Transport::Quic,
        }
    }

    /// A handle on this QUIC connection that outlives handing it away: a
    /// port hop's next connection starts from where it got to
    /// ([`crate::connect_after`]). It keeps quinn's record of the
    /// connection, not the connection: that still closes when dropped.
    /// `None` over TLS.
    pub fn live_path(&self) -> Option<LivePath> {
        match &self.stream {
            Stream::Tls(_) => None,
            Stream::Quic(q) => Some(LivePath::new(q.connection.clone())),
        }
    }

    /// The client's QUIC endpoint (tests: to move the client to another
    /// address).
    #[cfg(test)]
    pub(crate) fn quic_endpoint(&self) -> Option<&quinn::Endpoint> {
        match &self.stream {
            Stream::Tls(_) => None,
            Stream::Quic(q) => Some(&q.endpoint),
        }
    }

    /// QUIC's congestion window on this connection now, in bytes: how much
    /// it may have in flight. `None` over TLS (the kernel's TCP keeps it).
    pub fn congestion_window_bytes(&self) -> Option<u64> {
        match &self.stream {
            Stream::Tls(_) => None,
            Stream::Quic(q) => Some(q.connection.stats().path.cwnd),
        }
    }

    /// The other end's address. For QUIC, the current one: a client may
    /// migrate to another address without a new connection.
    pub fn peer_addr(&self) -> SocketAddr {
        match &self.stream {
            Stream::Tls(_) => self.peer_addr,
            Stream::Quic(q) => q.connection.remote_address(),
        }
    }

    /// This end's socket address. On a node: the address (and port of the
    /// range) the connection arrived on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The port this connection arrived on (node) or left from (client).
    pub fn local_port(&self) -> u16 {
        self.local_addr.port()
    }

    /// 32 bytes exported from the TLS session (label
    /// [`crate::CHANNEL_BINDING_LABEL`], no context): equal on both ends,
    /// different for every connection. The tunnel handshake signs it.
    pub fn channel_binding(&self) -> [u8; 32] {
        match &self.stream {
            Stream::Tls(s) => s.channel_binding,
            Stream::Quic(q) => q.channel_binding,
        }
    }

    /// The negotiated ALPN protocol id: `h2` for TLS, `h3` for QUIC.
    pub fn alpn(&self) -> &[u8] {
        match &self.stream {
            Stream::Tls(s) => &s.alpn,
            Stream::Quic(q) => &q.alpn,
        }
    }

    /// The negotiated cipher suite (TLS over TCP; `None` for QUIC, whose
    /// suite quinn does not report).
    pub fn cipher_suite(&self) -> Option<String> {
        match &self.stream {
            Stream::Tls(s) => s.cipher_suite(),
            Stream::Quic(_) => None,
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("transport", &self.transport())
            .field("peer_addr", &self.peer_addr())
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

fn closed_stream() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the QUIC stream is closed")
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Stream::Quic(q) => {
                q.note_client_address();
                Pin::new(&mut q.recv).poll_read(cx, buf)
            }
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Stream::Quic(q) => match q.send.as_mut() {
                Some(send) => AsyncWrite::poll_write(Pin::new(send), cx, buf),
                None => Poll::Ready(Err(closed_stream())),
            },
        }
    }

    /// TLS: see [`SecureStream::poll_write_vectored`].
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
            Stream::Quic(q) => match q.send.as_mut() {
                Some(send) => AsyncWrite::poll_write_vectored(Pin::new(send), cx, bufs),
                None => Poll::Ready(Err(closed_stream())),
            },
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Tls(s) => s.is_write_vectored(),
            Stream::Quic(q) => q.send.as_ref().is_some_and(AsyncWrite::is_write_vectored),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            Stream::Quic(q) => match q.send.as_mut() {
                Some(send) => AsyncWrite::poll_flush(Pin::new(send), cx),
                None => Poll::Ready(Err(closed_stream())),
            },
        }
    }

    /// TLS: close_notify and a TCP half-close. QUIC: finishes the stream.
    /// Either way the peer reads end-of-stream after the last byte.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            Stream::Quic(q) => match q.send.as_mut() {
                Some(send) => AsyncWrite::poll_shutdown(Pin::new(send), cx),
                None => Poll::Ready(Err(closed_stream())),
            },
        }
    }
}
