//! The local front end: SOCKS5 (RFC 1928/1929, CONNECT; IPv4, IPv6 and
//! names, which the exit resolves so DNS never leaks) and an HTTP proxy
//! (CONNECT, and plain-HTTP URLs forwarded, several requests per
//! connection) on one port, so any ordinary program works through the
//! tunnel. Parsing is `tollway-socks` (pure); this is only its driver.

use crate::pool::{BeforeReply, ClientError, IfUnanswered, OpenedOn, RoutePool};
use std::io;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tollway_socks as socks;
use tollway_socks::{AuthPolicy, BodyEnd, Credentials, ForwardRequest, HttpReply, HttpRequest, ParseError, Protocol, ReplyCode};
use tollway_net::driver::{spawn_boxed, ByteStream, EarlySocket, OnRefused};
use tollway_tunnel::{Dest, ErrorCode, Host};

/// `FrontConfig::first_bytes_wait` by default: a program that has its
/// request ready sends it within microseconds of the reply.
pub const FIRST_BYTES_WAIT_DEFAULT: Duration = Duration::from_millis(2);

/// The most of a program's first bytes that travel with the open: one
/// TLS record's worth.
const FIRST_BYTES_MAX: usize = 16 * 1024;

/// The read size of a forwarded request's body and of its response.
const RELAY_CHUNK_BYTES: usize = 16 * 1024;

/// What a request head is read in, at least, per read.
const READ_STEP_BYTES: usize = 1024;

/// The in-process pipe between a forwarded request's stream and the front
/// end's relay of it, each way: a stream's read (64 KiB) in one piece.
const FORWARD_PIPE_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct FrontConfig {
    /// Username and password, when the front end requires them.
    pub credentials: Option<Credentials>,
    /// A client must finish its request in this time (slowloris).
    pub handshake_timeout: Duration,
    /// Local connections at once, each counted from its accept until it
    /// has ended both ways (a tunnel's until the session's pumps are done
    /// with it). At the limit, the next programs wait in the listener's
    /// backlog, unanswered, until one ends.
    pub max_clients: usize,
    /// Answer a CONNECT only once the exit has connected the destination,
    /// so a refusal (policy, DNS, refused) reaches the program as a SOCKS /
    /// HTTP error code. Off by default: the proxy answers at once and the
    /// program's first bytes travel with the open (a round trip less to
    /// the first byte, as shadowsocks and Tor's optimistic data do); a
    /// refusal then closes the connection instead, but for an IP address
    /// the exit's hello says it refuses, which is refused before the
    /// answer (`RoutePool::before_reply`).
    pub wait_for_exit: bool,
    /// Optimistic CONNECT: how long to wait, after the reply, for the
    /// program's first bytes, so that they travel with the open in one
    /// record (one wake-up of the exit instead of two, as ss-local does).
    /// A program sends its request at once; one whose server speaks first
    /// (SMTP, FTP) waits this long more for its banner. Zero: never wait.
    pub first_bytes_wait: Duration,
    /// Told each connection the tunnel could not make, as one line
    /// (`refused host:port: why`): after an optimistic answer the program
    /// itself only sees its connection close, so `tollway connect` prints
    /// these.
    pub on_refusal: Option<fn(&str)>,
    /// A plain-HTTP program connection kept open after a response waits
    /// this long for its next request, then closes.
    pub keep_alive_idle: Duration,
    /// A stream to an origin that no program connection holds is closed
    /// after this long (many origins close theirs after 5–60 s, and each
    /// holds a stream at the exit).
    pub origin_idle: Duration,
}

/// As many program connections as one session carries streams, less the
/// idle origin streams it may hold besides and as many again for streams
/// just reset (they count until the exit has the reset): 1,984. At 4,096,
/// with sessions of 1,024 streams, the connections past those were
/// answered and then closed ("a limit was reached"), 976 of 2,000 held at
/// once; now they wait in the listener's backlog until one ends.
const MAX_CLIENTS_DEFAULT: usize = tollway_tunnel::session::DEFAULT_MAX_STREAMS as usize - 2 * IDLE_ORIGINS_MAX;

impl Default for FrontConfig {
    fn default() -> FrontConfig {
        FrontConfig {
            credentials: None,
            handshake_timeout: Duration::from_secs(10),
            max_clients: MAX_CLIENTS_DEFAULT,
            wait_for_exit: false,
            first_bytes_wait: FIRST_BYTES_WAIT_DEFAULT,
            on_refusal: None,
            keep_alive_idle: Duration::from_secs(60),
            origin_idle: Duration::from_secs(30),
        }
    }
}

/// Serves the front end on `listener` until the task is dropped.
///
/// The accept loop runs as a task of its own on the runtime's workers, not
/// on whatever thread polls this future: under `block_on` that is the main
/// thread, and every new connection then hopped main thread → worker
/// (a futex wake and a wake of the I/O driver each), which cost about a
/// tenth of a millisecond per SOCKS handshake. Accepted on a worker, a
/// connection's task starts on that same worker.
pub async fn serve_front(listener: TcpListener, pool: Arc<RoutePool>, config: FrontConfig) {
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut accept = AbortOnDrop(tokio::spawn(accept_loop(listener, pool, config)));
    let _ = (&mut accept.0).await;
}

/// How long the front end waits after a failed accept.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

async fn accept_loop(listener: TcpListener, pool: Arc<RoutePool>, config: FrontConfig) {
    let slots = Arc::new(Semaphore::new(config.max_clients));
    let config = Arc::new(config);
    let idle = Arc::new(IdleOrigins { streams: Mutex::default(), idle_for: config.origin_idle });
    tokio::spawn(IdleOrigins::sweep(Arc::downgrade(&idle), Arc::downgrade(&pool)));
    loop {
        // The slot first: at the limit, programs wait in the kernel's
        // backlog rather than hold a descriptor here each.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(_) => {
                // Out of descriptors (EMFILE) the connection stays queued
                // and the listener readable: without a pause this loop
                // spun a core until one was freed.
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let (pool, config, idle) = (pool.clone(), config.clone(), idle.clone());
        spawn_boxed(async move {
            let _ = socket.set_nodelay(true);
            let _ = serve_client(Counted { io: socket, _slot: slot }, &pool, &config, &idle).await;
        });
    }
}

/// A program's connection with its slot among `FrontConfig::max_clients`,
/// which goes back when the connection is dropped: when its task ends,
/// or, once a tunnel's session holds it, when the session's pumps are done
/// with it both ways. (Dropped once the tunnel was set up instead, the
/// slot let any number of tunnels live at once.) It derefs to the socket,
/// which the front end reads and writes as the `TcpStream` it is.
struct Counted<S> {
    io: S,
    _slot: OwnedSemaphorePermit,
}

impl<S> std::ops::Deref for Counted<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.io
    }
}

impl<S> std::ops::DerefMut for Counted<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.io
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    // Passed on: the session's stream writer gathers its chunks in one
    // vectored write.
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Which reply the client gets for a tunnel error.
fn socks_code(code: ErrorCode) -> ReplyCode {
    match code {
        ErrorCode::PolicyDenied => ReplyCode::NotAllowedByRuleset,
        ErrorCode::DnsFailed => ReplyCode::HostUnreachable,
        ErrorCode::ConnectionRefused => ReplyCode::ConnectionRefused,
        ErrorCode::Timeout => ReplyCode::TtlExpired,
        ErrorCode::Unreachable => ReplyCode::NetworkUnreachable,
        _ => ReplyCode::GeneralFailure,
    }
}

fn http_reply(code: ErrorCode) -> HttpReply {
    match code {
        ErrorCode::PolicyDenied => HttpReply::Forbidden,
        ErrorCode::Timeout => HttpReply::GatewayTimeout,
        ErrorCode::Limit => HttpReply::ServiceUnavailable,
        _ => HttpReply::BadGateway,
    }
}

fn dest_of(target: &socks::Target) -> Dest {
    let host = match &target.host {
        socks::Host::Ip(ip) => Host::Ip(*ip),
        socks::Host::Domain(name) => Host::Domain(name.as_str().to_string()),
    };
    Dest::new(host, target.port)
}

/// Reads until `parse` has a whole message (bounded by the parser's own
/// limits), returning it and the bytes after it.
async fn read_message<T>(
    socket: &mut TcpStream,
    buf: &mut Vec<u8>,
    parse: impl Fn(&[u8]) -> Result<(T, usize), ParseError>,
) -> io::Result<Result<T, ParseError>> {
    loop {
        match parse(buf) {
            Err(ParseError::Incomplete) => {}
            Ok((value, used)) => {
                buf.drain(..used);
                return Ok(Ok(value));
            }
            Err(e) => return Ok(Err(e)),
        }
        // Into the buffer's spare room: no copy, and no buffer held in
        // the connection's task across the wait.
        buf.reserve(READ_STEP_BYTES);
        if socket.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// What a local client asked for.
enum Wanted {
    /// A tunnel to `target`, answered in `protocol` (SOCKS5 or CONNECT).
    Tunnel(Protocol, socks::Target),
    /// One plain-HTTP request to send to its URL's host.
    Forward(Box<ForwardRequest>),
}

async fn serve_client(
    mut socket: Counted<TcpStream>,
    pool: &RoutePool,
    config: &FrontConfig,
    idle: &IdleOrigins,
) -> io::Result<()> {
    let mut buf = Vec::new();
    let request = tokio::time::timeout(
        config.handshake_timeout,
        read_request(&mut socket, &mut buf, config),
    )
    .await;
    let wanted = match request {
        Ok(Ok(Some(wanted))) => wanted,
        // Refused and answered: the program may still be sending.
        Ok(Ok(None)) => {
            close_gracefully(socket).await;
            return Ok(());
        }
        // Closed, or too slow.
        Ok(Err(_)) | Err(_) => return Ok(()),
    };
    let (protocol, target) = match wanted {
        Wanted::Tunnel(protocol, target) => (protocol, target),
        // A CONNECT may follow plain requests on the same connection.
        // Boxed: a SOCKS or CONNECT connection's task then holds no room
        // for this path's state (5.3 KiB a task with it inline, 3.5 without).
        Wanted::Forward(request) => match Box::pin(forward(socket, buf, *request, pool, config, idle)).await? {
            Some((kept, rest, target)) => {
                (socket, buf) = (kept, rest);
                (Protocol::Http, target)
            }
            None => return Ok(()),
        },
    };
    tunnel(socket, buf, protocol, target, pool, config).await
}

/// Serves a CONNECT (SOCKS5 or HTTP) to `target`, `buf` holding what the
/// program sent after it.
async fn tunnel(
    mut socket: Counted<TcpStream>,
    mut buf: Vec<u8>,
    protocol: Protocol,
    target: socks::Target,
    pool: &RoutePool,
    config: &FrontConfig,
) -> io::Result<()> {
    let dest = dest_of(&target);
    let success = |protocol| match protocol {
        Protocol::Socks5 => socks::Reply::success(socks::Target::unspecified()).encode(),
        Protocol::Http => HttpReply::Established.as_bytes().to_vec(),
    };
    let refused = |e: &ClientError| match protocol {
        Protocol::Socks5 => socks::Reply::failure(socks_code(e.code())).encode(),
        Protocol::Http => http_refusal(&target, e),
    };
    // No exit may be asked for it (port 0): refused before an optimistic
    // success, as a refusal the program can read.
    if let Err(e) = dest.validate() {
        let e = ClientError::BadDestination(e);
        log_refusal(config, &target, &e);
        socket.write_all(&refused(&e)).await?;
        close_gracefully(socket).await;
        return Ok(());
    }
    if !config.wait_for_exit {
        match pool.before_reply(&dest).await {
            // No route to try, or an address the exit announced it refuses:
            // the open would fail at once. Refused with a reply the program
            // can read (a SOCKS failure, an HTTP 502 or 403 that says why),
            // not a success and a closed connection (curl: "Empty reply
            // from server").
            BeforeReply::Refuse(e) => {
                log_refusal(config, &target, &e);
                socket.write_all(&refused(&e)).await?;
                close_gracefully(socket).await;
                return Ok(());
            }
            // The route's session holds as many streams as it may: the open
            // waits for one to end, up to `Limits::stream_slot_wait`, and
            // the program is answered once the exit has, so that a wait in
            // vain reaches it as a refusal it can read.
            BeforeReply::AnswerOnceOpened => {
                return open_waiting(socket, pool, config, &target, &success(protocol), buf, refused).await;
            }
            BeforeReply::Answer => {}
        }
        // Optimistic: the program may send while the tunnel opens, and the
        // socket goes to the session with the open.
        socket.write_all(&success(protocol)).await?;
        if buf.is_empty() && !config.first_bytes_wait.is_zero() {
            if let Ok(Ok(())) = tokio::time::timeout(config.first_bytes_wait, socket.readable()).await {
                // Read into spare capacity: zeroing 16 KiB first was a sixth
                // of the client's work per connection.
                let mut chunk = Vec::with_capacity(FIRST_BYTES_MAX);
                if socket.try_read_buf(&mut chunk).is_ok() {
                    buf = chunk;
                }
            }
        }
        let io = EarlySocket { io: Box::new(socket), first: buf };
        // On a refusal the session closes the socket, which is the
        // program's answer, and its driver tells `on_refusal`, so this task
        // ends now.
        let on_refused = config.on_refusal.map(|log| {
            let target = target.clone();
            Arc::new(move |code: ErrorCode| log(&refusal_line(&target, code.describe()))) as OnRefused
        });
        if let Err(e) = pool.open_attached(dest, io, on_refused, IfUnanswered::OpenAgain).await {
            log_refusal(config, &target, e);
        }
        return Ok(());
    }
    open_waiting(socket, pool, config, &target, &success(protocol), buf, refused).await
}

/// Opens a stream to `target` and waits for the exit: then writes `answer`
/// and hands the socket to the stream, `first` going ahead of what the
/// program sends next; on a refusal, writes `refused`'s reply and closes.
async fn open_waiting(
    mut socket: impl ByteStream,
    pool: &RoutePool,
    config: &FrontConfig,
    target: &socks::Target,
    answer: &[u8],
    first: Vec<u8>,
    refused: impl FnOnce(&ClientError) -> Vec<u8>,
) -> io::Result<()> {
    match pool.open(dest_of(target)).await {
        Ok((session, stream)) => {
            // Attached even if the program has gone: its pumps then fail
            // and end the stream. Left out, it stayed open in the session
            // until the session ended, counted against the stream limit
            // and holding the exit's connection to the destination.
            let written = socket.write_all(answer).await;
            let _ = session.attach(stream, EarlySocket { io: Box::new(socket), first });
            written?;
        }
        Err(e) => {
            log_refusal(config, target, &e);
            socket.write_all(&refused(&e)).await?;
            close_gracefully(socket).await;
        }
    }
    Ok(())
}

fn log_refusal(config: &FrontConfig, target: &socks::Target, why: impl std::fmt::Display) {
    if let Some(log) = config.on_refusal {
        log(&refusal_line(target, why));
    }
}

fn refusal_line(target: &socks::Target, why: impl std::fmt::Display) -> String {
    format!("refused {target}: {why}")
}

/// The HTTP reply when the tunnel cannot reach `target`, saying why.
fn http_refusal(target: &socks::Target, e: &ClientError) -> Vec<u8> {
    http_reply(e.code()).with_message(&format!("tollway: {target}: {e}"))
}

/// Plain-HTTP requests on one program connection, one after another
/// (RFC 9112 §9.3): each goes to its URL's host rewritten to origin form,
/// followed by its body to the body's end and no further (`exchange`).
/// The connection stays open for the next request while the program
/// wants it and each response ends by its own framing; a request
/// pipelined behind another waits in `pending` for its turn, so it never
/// reaches an origin in the proxy's form, with the proxy's credentials.
/// The stream to an origin is kept too, while its responses end by their
/// framing and it says it persists, for the program's next request to the
/// same host while new streams still go to its route (`KeptOrigin`,
/// `RoutePool::takes_new_streams`): a browser's requests for one page's
/// parts then cost the exit one connection to the origin, not one each.
/// When the program's connection ends or turns to another host, its kept
/// stream waits in `idle` for any program connection's next request to
/// that host.
/// A request for an upgrade (a WebSocket) ends the sequence once its origin
/// switches: after that, the connection is the new protocol's (`upgrade`).
/// Returns a CONNECT that followed: the
/// connection, what came after the CONNECT's head, and its target.
async fn forward(
    socket: Counted<TcpStream>,
    pending: Vec<u8>,
    request: ForwardRequest,
    pool: &RoutePool,
    config: &FrontConfig,
    idle: &IdleOrigins,
) -> io::Result<Option<(Counted<TcpStream>, Vec<u8>, socks::Target)>> {
    let mut kept = None;
    let result = forward_each(socket, pending, request, pool, config, idle, &mut kept).await;
    if let Some(k) = kept {
        idle.put(k);
    }
    result
}

/// [`forward`]'s requests, with the kept stream left in `kept` at the end.
async fn forward_each(
    mut socket: Counted<TcpStream>,
    mut pending: Vec<u8>,
    mut request: ForwardRequest,
    pool: &RoutePool,
    config: &FrontConfig,
    idle: &IdleOrigins,
    kept: &mut Option<KeptOrigin>,
) -> io::Result<Option<(Counted<TcpStream>, Vec<u8>, socks::Target)>> {
    loop {
        let goes_on = if request.upgrade.is_some() {
            // The upgraded connection may last: the kept stream waits for
            // others meanwhile.
            if let Some(k) = kept.take() {
                idle.put(k);
            }
            upgrade(&mut socket, &mut pending, &request, pool, config).await?
        } else {
            exchange(&mut socket, &mut pending, &request, pool, config, kept, idle).await?
        };
        if !goes_on {
            close_gracefully(socket).await;
            return Ok(None);
        }
        // Idle until the next request begins, then the head in the
        // handshake's time, as the first (slowloris). The kept stream goes
        // meanwhile if its route is replaced or goes silent, as an idle
        // one does (`IdleOrigins::sweep`): it would serve no request, and
        // it kept the replaced session open for as long as the program
        // kept its connection (a browser: `keep_alive_idle`, 60 s).
        if pending.is_empty() {
            let next_begins = tokio::select! {
                ready = tokio::time::timeout(config.keep_alive_idle, socket.readable()) => matches!(ready, Ok(Ok(()))),
                never = drop_once_its_route_is_left(kept, pool) => match never {},
            };
            if !next_begins {
                return Ok(None);
            }
        }
        let next = tokio::time::timeout(config.handshake_timeout, read_http_request(&mut socket, &mut pending, config)).await;
        request = match next {
            Ok(Ok(Some(HttpRequest::Forward(next)))) => next,
            Ok(Ok(Some(HttpRequest::Connect(connect)))) => return Ok(Some((socket, pending, connect.target))),
            // Refused and answered: the program may still be sending.
            Ok(Ok(None)) => {
                close_gracefully(socket).await;
                return Ok(None);
            }
            // Closed, or too slow.
            Ok(Err(_)) | Err(_) => return Ok(None),
        };
    }
}

/// How long a closing connection's late bytes are read and dropped.
const LINGER: Duration = Duration::from_secs(2);

/// Ends the program's connection after a response (an error reply too)
/// while the program may still be sending (a body or a tunnel's bytes the
/// answer did not wait for): a FIN, then whatever arrives is read and
/// dropped for a moment, so the close does not become a reset that
/// discards the answer before the program has read it, or fails the
/// program's write so that it never reads the answer (RFC 9112 §9.6).
async fn close_gracefully(mut socket: impl AsyncRead + AsyncWrite + Unpin) {
    let _ = socket.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async { while matches!(socket.read(&mut sink).await, Ok(1..)) {} }).await;
}

/// What goes with the open of `request`'s stream: its origin head and
/// the part of its body the program already sent, taken from `pending`;
/// and where the body ends. A chunked body malformed within those bytes
/// gets its 400 here.
async fn request_start(
    socket: &mut TcpStream,
    pending: &mut Vec<u8>,
    request: &ForwardRequest,
) -> io::Result<Option<(BodyEnd, Vec<u8>)>> {
    let mut body = BodyEnd::new(request.body);
    match body.take(pending) {
        Ok(n) => {
            // The origin's connection is kept, for this program connection
            // or another (`IdleOrigins`).
            let mut first = request.origin_head(true);
            first.extend(pending.drain(..n));
            Ok(Some((body, first)))
        }
        Err(e) => {
            socket.write_all(&HttpReply::BadRequest.with_message(&format!("tollway: {e}"))).await?;
            Ok(None)
        }
    }
}

/// An upgrade request (RFC 9110 §7.8): its head and body go as any
/// request's, on a stream of its own. Only if the origin switches (`101
/// Switching Protocols`, which passes unchanged) does the connection carry
/// every byte both ways from then on, as for a CONNECT. An origin may
/// ignore the upgrade (nginx does for `h2c`) and answer as for any
/// request: that response is relayed as one, and the program's connection
/// stays plain HTTP. Raw from the request on, it had sent the program's
/// next request, in the proxy's form with the proxy's credentials, to that
/// origin. The origin's stream is never kept. `Ok(true)` as for
/// `exchange`: the program's connection may carry the next request.
async fn upgrade(
    socket: &mut Counted<TcpStream>,
    pending: &mut Vec<u8>,
    request: &ForwardRequest,
    pool: &RoutePool,
    config: &FrontConfig,
) -> io::Result<bool> {
    let Some((mut body, first)) = request_start(socket, pending, request).await? else {
        return Ok(false);
    };
    let Some((mut stream, refused)) = open_forward(socket, request, first, pool, config).await? else {
        return Ok(false);
    };
    // `Some(seen)`: the origin switched, `seen` its 101 (after any interim
    // responses) and what followed it.
    let (switched, answer, uploaded) = {
        let (from_origin, to_origin) = (&mut stream.from_origin, &mut stream.to_origin);
        let (mut from_program, mut to_program) = socket.split();
        let download = async {
            let (seen, switched) = read_final_head(from_origin, &request.method).await?;
            if switched {
                return Ok::<_, io::Error>((Some(seen), None));
            }
            // What was read goes through `relay_response` again, ahead of
            // the rest: it writes the head, interim responses and body,
            // or the refusal or 502.
            let mut rest = seen.as_slice().chain(&mut *from_origin);
            let answer = relay_response(&mut rest, &mut to_program, request, refused, config).await?;
            Ok((None, Some(answer)))
        };
        tokio::pin!(download);
        // In a block of its own: the upload's hold on `from_program` ends
        // with it, for `hung_up`.
        let (done, uploaded) = {
            let upload = upload_body(&mut from_program, to_origin, &mut body, pending);
            tokio::pin!(upload);
            let mut uploaded = None;
            let done = tokio::select! {
                biased;
                sent = &mut upload => {
                    uploaded = Some(sent.unwrap_or(false));
                    None
                }
                done = &mut download => Some(done?),
            };
            // The origin switches after the request's body (RFC 9110 §7.8):
            // the rest of it goes before the new protocol's bytes.
            if matches!(done, Some((Some(_), _))) && uploaded.is_none() {
                uploaded = Some(upload.await.unwrap_or(false));
            }
            (done, uploaded)
        };
        let (switched, answer) = match done {
            Some(done) => done,
            // As in `exchange`: a hang-up ends the wait, and the stream.
            None => tokio::select! {
                biased;
                done = &mut download => done?,
                () = hung_up(&mut from_program) => return Ok(false),
            },
        };
        (switched, answer, uploaded)
    };
    let whole = uploaded == Some(true);
    let Some(seen) = switched else {
        return match answer {
            Some(Answer::Framed { .. }) => Ok(whole && request.keep_alive),
            Some(Answer::Closed) => Ok(false),
            Some(Answer::Unanswered) | None => {
                // An upgrade is never sent again (its origin may have
                // acted on it), but its 502 says whose end failed.
                let route_failed = !pool.takes_new_streams(&stream.route).await;
                socket.write_all(&unanswered(request, route_failed)).await?;
                Ok(false)
            }
        };
    };
    if !whole {
        return Ok(false);
    }
    socket.write_all(&seen).await?;
    let KeptOrigin { from_origin, mut to_origin, .. } = stream;
    to_origin.write_all(pending).await?;
    pending.clear();
    let mut origin = from_origin.unsplit(to_origin);
    tokio::io::copy_bidirectional(&mut **socket, &mut origin).await?;
    Ok(false)
}

/// Reads an upgrade request's response up to its final head: `(bytes
/// read, true)` once that head says `101 Switching Protocols`, else the
/// bytes read (a final head of another status, or what came before the
/// stream's end or an unparsable head) and `false`.
async fn read_final_head(from_origin: &mut (impl AsyncRead + Unpin), method: &str) -> io::Result<(Vec<u8>, bool)> {
    let mut buf = Vec::new();
    let mut start = 0;
    let mut scan = HeadScan::default();
    let mut chunk = vec![0u8; RELAY_CHUNK_BYTES];
    loop {
        let parsed = if scan.may_be_whole(&buf[start..]) {
            socks::parse_response(&buf[start..], method)
        } else {
            Err(ParseError::Incomplete)
        };
        match parsed {
            Ok((head, used)) if head.is_interim() => {
                start += used;
                scan = HeadScan::default();
                continue;
            }
            Ok((head, _)) => return Ok((buf, head.status == 101)),
            Err(ParseError::Incomplete) => {}
            Err(_) => return Ok((buf, false)),
        }
        let n = from_origin.read(&mut chunk).await?;
        if n == 0 {
            return Ok((buf, false));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Drops `kept` once new streams no longer go to its route, looking as
/// often as the idle sweeper does; then, or with none, pending.
async fn drop_once_its_route_is_left(kept: &mut Option<KeptOrigin>, pool: &RoutePool) -> std::convert::Infallible {
    while let Some(k) = kept.as_ref() {
        tokio::time::sleep(IDLE_SWEEP_EVERY_MAX).await;
        if !pool.takes_new_streams(&k.route).await {
            *kept = None;
        }
    }
    std::future::pending().await
}

/// A stream to an origin kept after a response, for the program's next
/// request to the same target.
struct KeptOrigin {
    target: socks::Target,
    from_origin: ReadHalf<DuplexStream>,
    to_origin: WriteHalf<DuplexStream>,
    /// A request on it carried `Authorization`: schemes such as NTLM and
    /// Negotiate (RFC 4559) authenticate the connection, not the request,
    /// so it serves its own program connection only.
    authorized: bool,
    /// The route it rides: it serves again only while new streams go there.
    route: OpenedOn,
}

/// Streams to origins that program connections left idle, for the next
/// request to the same target from any of them (a proxy may reuse its
/// connections to an origin across clients, RFC 9112 §9.3): a program
/// that opens a connection per request (many scripts, `curl` run once per
/// URL) then costs the exit no new connection to the origin. Bounded in
/// count, per target and in idle time.
struct IdleOrigins {
    /// Oldest first, with when each went idle.
    streams: Mutex<VecDeque<(KeptOrigin, Instant)>>,
    /// `FrontConfig::origin_idle`.
    idle_for: Duration,
}

/// The longest between two sweeps of the idle streams to origins.
const IDLE_SWEEP_EVERY_MAX: Duration = Duration::from_secs(1);

/// The most idle streams to origins, in all and per target.
const IDLE_ORIGINS_MAX: usize = 32;
const IDLE_ORIGINS_PER_TARGET: usize = 4;

impl IdleOrigins {
    fn put(&self, stream: KeptOrigin) {
        // Kept for no time (`origin_idle` 0): closed now, not when the next
        // request or sweep finds it stale (it kept its session open).
        if stream.authorized || self.idle_for.is_zero() {
            return;
        }
        let Ok(mut streams) = self.streams.lock() else { return };
        self.drop_old(&mut streams);
        let same_target = |(k, _): &(KeptOrigin, Instant)| k.target == stream.target;
        if streams.iter().filter(|s| same_target(s)).count() >= IDLE_ORIGINS_PER_TARGET {
            if let Some(oldest) = streams.iter().position(same_target) {
                streams.remove(oldest);
            }
        }
        if streams.len() >= IDLE_ORIGINS_MAX {
            streams.pop_front();
        }
        streams.push_back((stream, Instant::now()));
    }

    /// The stream to `target` that went idle last, if one is young enough.
    fn take(&self, target: &socks::Target) -> Option<KeptOrigin> {
        let mut streams = self.streams.lock().ok()?;
        self.drop_old(&mut streams);
        let newest = streams.iter().rposition(|(k, _)| k.target == *target)?;
        streams.remove(newest).map(|(k, _)| k)
    }

    fn drop_old(&self, streams: &mut VecDeque<(KeptOrigin, Instant)>) {
        streams.retain(|(_, since)| since.elapsed() < self.idle_for);
    }

    /// Closes the streams idle too long, and those on a route new streams
    /// no longer go to (replaced, silent or closed: they would serve no
    /// request again), every second or so while anyone holds `idle`: a
    /// stream left in it keeps its session open (a replaced route's
    /// session closes only once it carries none).
    async fn sweep(idle: std::sync::Weak<IdleOrigins>, pool: std::sync::Weak<RoutePool>) {
        loop {
            let Some(every) = idle.upgrade().map(|idle| (idle.idle_for / 6).min(IDLE_SWEEP_EVERY_MAX)) else { return };
            // Nothing is kept (`origin_idle` 0), so nothing to sweep: a
            // sleep of 0 made this loop spin a core.
            if every.is_zero() {
                return;
            }
            tokio::time::sleep(every).await;
            let Some(idle) = idle.upgrade() else { return };
            let active = match pool.upgrade() {
                Some(pool) => pool.active_route().await,
                None => None,
            };
            let Ok(mut streams) = idle.streams.lock() else { return };
            idle.drop_old(&mut streams);
            streams.retain(|(k, _)| active.as_ref().is_some_and(|route| route.same_session_as(&k.route)));
        }
    }
}

impl KeptOrigin {
    /// Whether the origin has said nothing since its last response: no
    /// end, no stray bytes. (It may still close as the next request goes;
    /// `exchange` sends a safe request again then.)
    async fn quiet(&mut self) -> bool {
        let mut one = [0u8; 1];
        std::future::poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut one);
            std::task::Poll::Ready(std::pin::Pin::new(&mut self.from_origin).poll_read(cx, &mut buf).is_pending())
        })
        .await
    }
}

/// One request and its response, on the kept stream to its origin or a
/// stream of its own. `Ok(true)` when the program's connection may carry
/// the next request: the program wants that, the response ended by its
/// own framing and the request's body went whole. The stream to the
/// origin is left in `kept` when the origin keeps its connection too.
async fn exchange(
    socket: &mut TcpStream,
    pending: &mut Vec<u8>,
    request: &ForwardRequest,
    pool: &RoutePool,
    config: &FrontConfig,
    kept: &mut Option<KeptOrigin>,
    idle: &IdleOrigins,
) -> io::Result<bool> {
    let mut reuse = match kept.take() {
        Some(k) if k.target == request.target => Some(k),
        other => {
            if let Some(k) = other {
                idle.put(k);
            }
            idle.take(&request.target)
        }
    };
    // A stream on a route that went silent or was replaced is dropped,
    // which closes it: on the first the request would wait for as long as
    // the silent route is kept (30 s), and on the second the stream kept
    // the replaced session open for as long as the host was visited.
    while let Some(k) = reuse.as_mut() {
        if k.quiet().await && pool.takes_new_streams(&k.route).await {
            break;
        }
        reuse = idle.take(&request.target);
    }
    // Bounds the sends after a route failed under a fresh stream: one per
    // other route (one on a lone route, reconnected), so each route it goes
    // to is watched for silence as the first was, and the loop ends.
    let mut sent_again_after_route_failed = 0;
    let may_send_again = pool.route_count().saturating_sub(1).max(1);
    loop {
        let Some((mut body, first)) = request_start(socket, pending, request).await? else {
            return Ok(false);
        };
        let reused = reuse.is_some();
        let (mut stream, refused) = match reuse.take() {
            Some(mut k) => match k.to_origin.write_all(&first).await {
                Ok(()) => (k, None),
                // The stream is gone: as if the origin closed unanswered.
                Err(_) if request.retryable() => continue,
                Err(_) => {
                    socket.write_all(&unanswered(request, false)).await?;
                    return Ok(false);
                }
            },
            None => match open_forward(socket, request, first, pool, config).await? {
                Some(opened) => opened,
                None => return Ok(false),
            },
        };
        // `Some(true)` in `.1`: the whole body went. The block ends the
        // borrows of the stream and the socket.
        let (answer, uploaded) = {
            let (from_origin, to_origin, route) = (&mut stream.from_origin, &mut stream.to_origin, &stream.route);
            let (mut from_program, mut to_program) = socket.split();

            // A request that may go again on a fresh stream waits for its
            // first bytes only while its route is up: kept for its silence,
            // the route would hold it for `dead_after` (30 s) while new
            // streams go to the next route a second after the silence
            // began. It goes there too (below, as if the stream ended).
            let may_go_again = !reused && request.retryable() && sent_again_after_route_failed < may_send_again;
            let download = async {
                let mut seen = Vec::new();
                if may_go_again {
                    seen.resize(RELAY_CHUNK_BYTES, 0);
                    let read = tokio::select! {
                        read = from_origin.read(&mut seen) => read,
                        () = pool.went_silent_or_closed(route) => return Ok(Answer::Unanswered),
                    };
                    let Ok(n) = read else { return Ok(Answer::Unanswered) };
                    seen.truncate(n);
                }
                let mut from_origin = seen.as_slice().chain(&mut *from_origin);
                relay_response(&mut from_origin, &mut to_program, request, refused, config).await
            };
            tokio::pin!(download);
            let mut answered = None;
            let uploaded = tokio::select! {
                // The upload first: a body that is whole (or empty) counts
                // as sent before a response that ended in the same wake-up.
                biased;
                sent = upload_body(&mut from_program, to_origin, &mut body, pending) => match sent {
                    Ok(true) => Some(true),
                    Ok(false) => return Ok(false),
                    // The stream is gone (refused, reset): the response
                    // side tells the program why.
                    Err(_) => Some(false),
                },
                answer = &mut download => {
                    answered = Some(answer?);
                    None
                }
            };
            let answer = match answered {
                Some(answer) => answer,
                // A program that hangs up now ends the exchange, and the
                // stream is dropped with it, never kept: its end reaches
                // the exit, which shuts its connection to the origin for
                // sending. Else the connection, its slot and the stream
                // waited for the origin, maybe forever.
                None => tokio::select! {
                    biased;
                    answer = &mut download => answer?,
                    () = hung_up(&mut from_program) => return Ok(false),
                },
            };
            (answer, uploaded)
        };
        let whole = uploaded == Some(true);
        return match answer {
            Answer::Framed { reusable } => {
                if reusable && whole {
                    stream.authorized |= request.authorizes();
                    *kept = Some(stream);
                }
                Ok(whole && request.keep_alive)
            }
            Answer::Closed => Ok(false),
            // A kept stream the origin closed as the request went: a safe
            // request without a body goes again, on a fresh stream.
            Answer::Unanswered if reused && request.retryable() => continue,
            Answer::Unanswered => {
                // A fresh stream that ended unanswered on a route that no
                // longer takes new streams (its session closed, or it was
                // marked down) was ended by the route, not the origin: new
                // streams already go to the next route, and so does a safe
                // request without a body, once.
                let route_failed = !reused && !pool.takes_new_streams(&stream.route).await;
                drop(stream);
                if route_failed && request.retryable() && sent_again_after_route_failed < may_send_again {
                    sent_again_after_route_failed += 1;
                    continue;
                }
                socket.write_all(&unanswered(request, route_failed)).await?;
                Ok(false)
            }
        };
    }
}

/// The 502 for a request not answered and not sent again: its origin
/// closed without answering, or its route failed first (`route_failed`;
/// the request may have reached the origin).
fn unanswered(request: &ForwardRequest, route_failed: bool) -> Vec<u8> {
    let why = if route_failed { "the route failed before the origin answered" } else { "the origin closed without answering" };
    HttpReply::BadGateway.with_message(&format!("tollway: {}: {why}", request.target))
}

/// Opens a stream for `request` with `first` (its origin head and the
/// body's start), without waiting for the exit (a round trip less, as for
/// a CONNECT). Nothing has been answered yet, so the exit's refusal, told
/// to `on_refused`, still becomes an HTTP error with its reason: the
/// receiver comes back for `relay_response`. `None`: refused at once (and
/// answered).
async fn open_forward(
    socket: &mut TcpStream,
    request: &ForwardRequest,
    first: Vec<u8>,
    pool: &RoutePool,
    config: &FrontConfig,
) -> io::Result<Option<(KeptOrigin, Option<oneshot::Receiver<ErrorCode>>)>> {
    let target = &request.target;
    let (near, far) = tokio::io::duplex(FORWARD_PIPE_BYTES);
    let (refused_tx, refused) = oneshot::channel();
    let refused_tx = std::sync::Mutex::new(Some(refused_tx));
    let on_refused: OnRefused = Arc::new(move |code| {
        if let Some(tx) = refused_tx.lock().ok().and_then(|mut tx| tx.take()) {
            let _ = tx.send(code);
        }
    });
    // Not opened again if unanswered: `forward` sends a request again
    // itself, if its method allows (a GET, not a POST).
    let on_far = EarlySocket { io: Box::new(far), first };
    let route = match pool.open_attached(dest_of(target), on_far, Some(on_refused), IfUnanswered::Close).await {
        Ok(route) => route,
        Err(e) => {
            log_refusal(config, target, &e);
            socket.write_all(&http_refusal(target, &e)).await?;
            return Ok(None);
        }
    };
    let (from_origin, to_origin) = tokio::io::split(near);
    Ok(Some((KeptOrigin { target: target.clone(), from_origin, to_origin, authorized: false, route }, Some(refused))))
}

/// How a forwarded request's response went.
enum Answer {
    /// It ended by its own framing; `reusable`: the origin keeps its
    /// connection and sent nothing after the response.
    Framed { reusable: bool },
    /// It ended by the origin's close, was cut short or was not HTTP (the
    /// program has what there was, or a 502): the program's connection
    /// closes after it.
    Closed,
    /// The stream ended (or failed) before any byte, and the exit did not
    /// refuse it: nothing was written.
    Unanswered,
}

/// Passes the origin's response on to the program, its head rewritten
/// (`ResponseHead::encode`), interim responses first. A stream that ends
/// before any byte was refused (the code comes on `refused`, for a new
/// stream, and the refusal is written) or is `Unanswered`: its origin
/// closed without answering, or its route failed (the caller tells which).
async fn relay_response(
    from_origin: &mut (impl AsyncRead + Unpin),
    to_program: &mut (impl AsyncWrite + Unpin),
    request: &ForwardRequest,
    refused: Option<oneshot::Receiver<ErrorCode>>,
    config: &FrontConfig,
) -> io::Result<Answer> {
    let mut refused = refused;
    let mut buf = Vec::new();
    let mut answered = false;
    let mut chunk = vec![0u8; RELAY_CHUNK_BYTES];
    let mut scan = HeadScan::default();
    loop {
        let parsed = if scan.may_be_whole(&buf) {
            socks::parse_response(&buf, &request.method)
        } else {
            Err(ParseError::Incomplete)
        };
        let (head, used) = match parsed {
            Ok(parsed) => parsed,
            Err(ParseError::Incomplete) => {
                let unanswered_yet = buf.is_empty() && !answered;
                let n = match from_origin.read(&mut chunk).await {
                    Ok(n) => n,
                    // Nothing was written: the caller may send it again.
                    Err(_) if unanswered_yet => 0,
                    Err(e) => return Err(e),
                };
                if n == 0 {
                    if unanswered_yet {
                        let Some(refused) = refused.take() else { return Ok(Answer::Unanswered) };
                        // The driver tells a refusal before it closes the
                        // stream, or drops the sender once the exit opened.
                        let target = &request.target;
                        let Ok(Ok(code)) = tokio::time::timeout(config.handshake_timeout, refused).await else {
                            return Ok(Answer::Unanswered);
                        };
                        let e = ClientError::Destination(code);
                        log_refusal(config, target, &e);
                        to_program.write_all(&http_refusal(target, &e)).await?;
                    }
                    return Ok(Answer::Closed);
                }
                buf.extend_from_slice(&chunk[..n]);
                continue;
            }
            Err(e) => {
                let message = format!("tollway: {}: {e}", request.target);
                to_program.write_all(&HttpReply::BadGateway.with_message(&message)).await?;
                return Ok(Answer::Closed);
            }
        };
        answered = true;
        if head.is_interim() {
            to_program.write_all(&buf[..used]).await?;
            buf.drain(..used);
            scan = HeadScan::default();
            continue;
        }
        let framed = match head.body {
            socks::ResponseBody::Framed(length) => Some(BodyEnd::new(length)),
            socks::ResponseBody::UntilClose => None,
        };
        let keep = framed.is_some() && request.keep_alive;
        to_program.write_all(&head.encode(keep)).await?;
        buf.drain(..used);
        let Some(mut body) = framed else {
            // To the origin's close.
            to_program.write_all(&buf).await?;
            tokio::io::copy(from_origin, to_program).await?;
            return Ok(Answer::Closed);
        };
        return match pass_body(from_origin, to_program, &mut body, buf, &mut chunk).await? {
            // Bytes after the body's end are the origin's error: dropped,
            // and its connection not used again.
            Passed::Whole { after } => Ok(Answer::Framed { reusable: head.persistent && after.is_empty() }),
            // The program sees it as the connection ends.
            Passed::CutShort => Ok(Answer::Closed),
            Passed::Malformed(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        };
    }
}

/// Where the look for a response head's end got to. The head is parsed
/// only when it may be whole: its status line has just ended, it holds a
/// blank line, or it is as long as a head may be. Parsed after every read
/// instead, a head that came a byte at a time was parsed from its start
/// each time: quadratic in what an origin sends (about 2^31 steps for a
/// 64 KiB head), on the client's one thread.
#[derive(Default)]
struct HeadScan {
    /// Bytes of the buffer looked at.
    scanned: usize,
    status_line_ended: bool,
}

impl HeadScan {
    fn may_be_whole(&mut self, buf: &[u8]) -> bool {
        // Two bytes back: a blank line's `\n\r\n` may straddle reads.
        let new = &buf[self.scanned.saturating_sub(2).min(buf.len())..];
        self.scanned = buf.len();
        let status_line_ends = !self.status_line_ended && new.contains(&b'\n');
        self.status_line_ended |= status_line_ends;
        let blank_line = new.windows(2).any(|w| w == b"\n\n") || new.windows(3).any(|w| w == b"\n\r\n");
        status_line_ends || blank_line || buf.len() >= socks::limits::MAX_HTTP_RESPONSE_HEAD_BYTES
    }
}

/// How a body's pass ended.
enum Passed {
    /// At its end; `after` holds what was read past it.
    Whole { after: Vec<u8> },
    /// The sender closed first.
    CutShort,
    /// It cannot be delimited (a chunked body gone wrong).
    Malformed(socks::ChunkError),
}

/// A request's body, on as the program sends it; what follows its end is
/// the next request, kept in `pending`. `Ok(false)`: the program closed
/// within its body, or its chunked body went wrong midway (the origin has
/// part of it: the connection can only close).
async fn upload_body(
    from_program: &mut (impl AsyncRead + Unpin),
    to_origin: &mut (impl AsyncWrite + Unpin),
    body: &mut BodyEnd,
    pending: &mut Vec<u8>,
) -> io::Result<bool> {
    let mut chunk = vec![0u8; RELAY_CHUNK_BYTES];
    Ok(match pass_body(from_program, to_origin, body, Vec::new(), &mut chunk).await? {
        Passed::Whole { after } => {
            pending.extend_from_slice(&after);
            true
        }
        Passed::CutShort | Passed::Malformed(_) => false,
    })
}

/// Resolves once the program has hung up: its socket reports its end, or
/// fails. Watched while a forwarded request waits for its response, when
/// nothing else reads the socket; unwatched, a program gone meanwhile
/// (Ctrl-C on a long poll, an origin that never answers) held its task,
/// its `max_clients` slot and the exit's stream to the origin until the
/// origin spoke or closed, and that open stream kept its route from going
/// quiet (ADR 0012).
///
/// Bytes that arrive instead are the program's next request, pipelined
/// (RFC 9112 §9.3): they are only peeked at, left for the request loop
/// after the response, and the watch then never resolves.
///
/// The end is taken as a hang-up even though a program that only shut its
/// sending side after the request (a half-close) looks the same: RFC 9112
/// §9.6 lets a proxy take either as the connection's end, and curl,
/// browsers and most HTTP clients never half-close, while waiting on for
/// every one that ends would keep the leak for the hung-up ones.
async fn hung_up(from_program: &mut tokio::net::tcp::ReadHalf<'_>) {
    let mut one = [0u8; 1];
    if let Ok(1..) = from_program.peek(&mut one).await {
        std::future::pending::<()>().await;
    }
}

/// Passes a body from `from` to `to` up to `body`'s end, `first` (already
/// read) ahead of what `from` sends next, reading in `chunk`: the one pump
/// of a forwarded request's body and of its response's.
async fn pass_body(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    body: &mut BodyEnd,
    first: Vec<u8>,
    chunk: &mut [u8],
) -> io::Result<Passed> {
    let mut next = first;
    loop {
        let in_body = match body.take(&next) {
            Ok(n) => n,
            Err(e) => return Ok(Passed::Malformed(e)),
        };
        to.write_all(&next[..in_body]).await?;
        if body.is_done() {
            next.drain(..in_body);
            return Ok(Passed::Whole { after: next });
        }
        let n = from.read(chunk).await?;
        if n == 0 {
            return Ok(Passed::CutShort);
        }
        next.clear();
        next.extend_from_slice(&chunk[..n]);
    }
}

/// Reads a SOCKS5 negotiation or an HTTP request head, answering the
/// client's protocol errors itself; `None` when the client is refused.
async fn read_request(
    socket: &mut TcpStream,
    buf: &mut Vec<u8>,
    config: &FrontConfig,
) -> io::Result<Option<Wanted>> {
    let protocol =
        match read_message(socket, buf, |b| socks::detect_protocol(b).map(|p| (p, 0))).await? {
            Ok(p) => p,
            Err(e) => return refuse_greeting(socket, &e).await,
        };
    match protocol {
        Protocol::Socks5 => {
            let greeting = match read_message(socket, buf, socks::parse_greeting).await? {
                Ok(greeting) => greeting,
                Err(e) => return refuse_greeting(socket, &e).await,
            };
            let policy = if config.credentials.is_some() {
                AuthPolicy::PasswordRequired
            } else {
                AuthPolicy::Open
            };
            let method = socks::choose_method(&greeting, policy);
            socket.write_all(&socks::method_reply(method)).await?;
            if method == socks::Method::NO_ACCEPTABLE {
                return Ok(None);
            }
            if method == socks::Method::USERNAME_PASSWORD {
                let Ok(given) = read_message(socket, buf, socks::parse_auth).await? else {
                    // RFC 1929: a failure status, then the close (the
                    // program otherwise saw only the connection end).
                    socket.write_all(&socks::auth_reply(false)).await?;
                    return Ok(None);
                };
                let ok = config
                    .credentials
                    .as_ref()
                    .is_none_or(|c| c.matches(given.username(), given.password()));
                socket.write_all(&socks::auth_reply(ok)).await?;
                if !ok {
                    return Ok(None);
                }
            }
            let request = match read_message(socket, buf, socks::parse_request).await? {
                Ok(r) => r,
                Err(e) => {
                    let code = e.socks_reply_code().unwrap_or(ReplyCode::GeneralFailure);
                    socket
                        .write_all(&socks::Reply::failure(code).encode())
                        .await?;
                    return Ok(None);
                }
            };
            if !request.command.is_supported() {
                socket
                    .write_all(&socks::Reply::failure(ReplyCode::CommandNotSupported).encode())
                    .await?;
                return Ok(None);
            }
            Ok(Some(Wanted::Tunnel(Protocol::Socks5, request.target)))
        }
        Protocol::Http => Ok(read_http_request(socket, buf, config).await?.map(|request| match request {
            HttpRequest::Connect(c) => Wanted::Tunnel(Protocol::Http, c.target),
            HttpRequest::Forward(f) => Wanted::Forward(Box::new(f)),
        })),
    }
}

/// Answers a first message that cannot be served, where its protocol has
/// an answer (SOCKS4, a SOCKS5 greeting with no method): told nothing, the
/// program could only say that the proxy closed.
async fn refuse_greeting(socket: &mut TcpStream, e: &ParseError) -> io::Result<Option<Wanted>> {
    if let Some(reply) = e.greeting_reply() {
        socket.write_all(reply).await?;
    }
    Ok(None)
}

/// Reads an HTTP proxy request head, answering a malformed one or missing
/// credentials itself; `None` when the program is refused.
async fn read_http_request(
    socket: &mut TcpStream,
    buf: &mut Vec<u8>,
    config: &FrontConfig,
) -> io::Result<Option<HttpRequest>> {
    let request = match read_message(socket, buf, socks::parse_http_request).await? {
        Ok(r) => r,
        Err(e) => {
            let reply = e.http_reply().unwrap_or(HttpReply::BadRequest);
            socket.write_all(&reply.with_message(&format!("tollway: {e}"))).await?;
            return Ok(None);
        }
    };
    if let Some(want) = &config.credentials {
        if !request.credentials().is_some_and(|c| want.matches(c.username(), c.password())) {
            socket
                .write_all(&HttpReply::ProxyAuthRequired.with_message("tollway: this proxy needs a user name and password"))
                .await?;
            return Ok(None);
        }
    }
    Ok(Some(request))
}

#[cfg(test)]
mod tests {
    use super::{HeadScan, IdleOrigins};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// With `origin_idle` 0 nothing is kept and the sweep ends at once (it
    /// looped on sleeps of 0, a core busy for as long as the proxy ran).
    #[tokio::test]
    async fn with_no_idle_time_nothing_is_swept() {
        let idle = Arc::new(IdleOrigins { streams: Mutex::default(), idle_for: Duration::ZERO });
        let sweep = IdleOrigins::sweep(Arc::downgrade(&idle), std::sync::Weak::new());
        assert!(tokio::time::timeout(Duration::from_secs(1), sweep).await.is_ok(), "the sweep did not end");
    }

    /// A head that comes a byte at a time is parsed twice (its status line
    /// ended, its blank line came), not after every byte; so is one whose
    /// blank line straddles two reads.
    #[test]
    fn a_head_is_parsed_when_it_may_be_whole_not_after_every_read() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Long: aaaaaaaaaaaaaaaaaaaa\r\n\r\nhello";
        let end = head.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |p| p + 4);
        let mut scan = HeadScan::default();
        let mut parses = Vec::new();
        for n in 1..=end {
            if scan.may_be_whole(&head[..n]) {
                parses.push(n);
            }
        }
        assert_eq!(parses, vec![17, end]);
        for cut in 1..end {
            let mut scan = HeadScan::default();
            let parsed = [cut, end].iter().filter(|&&n| scan.may_be_whole(&head[..n])).count();
            assert!(parsed >= 1 && scan.status_line_ended, "cut at {cut}");
            // The read that completes the head always asks for a parse.
            let mut scan = HeadScan::default();
            scan.may_be_whole(&head[..cut]);
            assert!(scan.may_be_whole(&head[..end]), "cut at {cut}");
        }
    }
}
