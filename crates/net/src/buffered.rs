//! [`BufferedTcp`]: the TCP socket under a TLS connection, read through a
//! buffer, and able to move to another runtime with what it buffered.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The read buffer: a few TLS records.
pub(crate) const TCP_READ_BUFFER_BYTES: usize = 64 * 1024;

/// TCP under TLS, read through a buffer: rustls asks for 4 KiB at a time,
/// and one `read` system call per 4 KiB costs bulk transfers dearly (ADR
/// 0007). Writes pass straight through.
///
/// Unlike `tokio::io::BufReader`, the socket can leave the runtime it is
/// registered with and join another, keeping the bytes it has buffered
/// ([`BufferedTcp::detach`], [`BufferedTcp::attach`]): a node moves a port
/// hop's new connection to the shard its session runs on (ADR 0009).
pub(crate) struct BufferedTcp {
    socket: Socket,
    buf: Box<[u8]>,
    /// `buf[pos..end]` is read and not yet handed out.
    pos: usize,
    end: usize,
}

enum Socket {
    Registered(TcpStream),
    /// Between two runtimes (`detach` → `attach`): no I/O.
    Detached(std::net::TcpStream),
    /// A move failed half-way; the connection is lost.
    Gone,
}

fn not_registered() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the socket is between two runtimes")
}

impl BufferedTcp {
    pub(crate) fn new(tcp: TcpStream) -> BufferedTcp {
        // Zeroed memory from the allocator: a quiet connection's buffer
        // pages are not touched, so they cost no resident memory.
        BufferedTcp { socket: Socket::Registered(tcp), buf: vec![0; TCP_READ_BUFFER_BYTES].into_boxed_slice(), pos: 0, end: 0 }
    }

    fn registered(&mut self) -> io::Result<&mut TcpStream> {
        match &mut self.socket {
            Socket::Registered(tcp) => Ok(tcp),
            _ => Err(not_registered()),
        }
    }

    /// Takes the socket off its runtime's reactor. The buffered bytes stay.
    pub(crate) fn detach(&mut self) -> io::Result<()> {
        match std::mem::replace(&mut self.socket, Socket::Gone) {
            Socket::Registered(tcp) => {
                self.socket = Socket::Detached(tcp.into_std()?);
                Ok(())
            }
            other => {
                self.socket = other;
                Err(not_registered())
            }
        }
    }

    /// Registers a detached socket with the runtime this runs in.
    pub(crate) fn attach(&mut self) -> io::Result<()> {
        match std::mem::replace(&mut self.socket, Socket::Gone) {
            Socket::Detached(tcp) => {
                self.socket = Socket::Registered(TcpStream::from_std(tcp)?);
                Ok(())
            }
            other => {
                self.socket = other;
                Err(not_registered())
            }
        }
    }
}

impl AsyncRead for BufferedTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.pos == me.end {
            // Nothing buffered and a read at least as large as the buffer:
            // straight into the caller's memory.
            if out.remaining() >= me.buf.len() {
                return Pin::new(me.registered()?).poll_read(cx, out);
            }
            let tcp = match &mut me.socket {
                Socket::Registered(tcp) => tcp,
                _ => return Poll::Ready(Err(not_registered())),
            };
            let mut into = ReadBuf::new(&mut me.buf);
            ready!(Pin::new(tcp).poll_read(cx, &mut into))?;
            (me.pos, me.end) = (0, into.filled().len());
        }
        let n = out.remaining().min(me.end - me.pos);
        out.put_slice(&me.buf[me.pos..me.pos + n]);
        me.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for BufferedTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().registered()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().registered()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().registered()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().registered()?).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Bytes buffered before a move are read after it, then the socket's
    /// own, in order, on the other runtime; writes work there too.
    #[test]
    fn a_socket_moves_to_another_runtime_with_its_buffered_bytes() {
        let first = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let second = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (mut tcp, peer) = first.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let connect = TcpStream::connect(listener.local_addr().unwrap());
            let (accepted, connected) = tokio::join!(listener.accept(), connect);
            let mut tcp = BufferedTcp::new(connected.unwrap());
            let mut peer = accepted.unwrap().0;
            peer.write_all(b"hello, world").await.unwrap();
            let mut five = [0u8; 5];
            tcp.read_exact(&mut five).await.unwrap();
            assert_eq!(&five, b"hello");
            tcp.detach().unwrap();
            // Detached: no I/O, and a second detach is refused.
            assert!(tcp.write_all(b"x").await.is_err());
            assert!(tcp.detach().is_err());
            peer.write_all(b"; again").await.unwrap();
            (tcp, peer.into_std().unwrap())
        });
        drop(first);
        second.block_on(async {
            let mut peer = TcpStream::from_std(peer).unwrap();
            tcp.attach().unwrap();
            let mut rest = [0u8; 14];
            tcp.read_exact(&mut rest).await.unwrap();
            assert_eq!(&rest, b", world; again");
            tcp.write_all(b"back").await.unwrap();
            let mut back = [0u8; 4];
            peer.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, b"back");
        });
    }
}
