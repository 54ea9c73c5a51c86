//! The async driver of one tunnel session (`tollway_tunnel::Session`): it
//! owns the session, moves bytes between it and its connections (paths),
//! and between its streams and their sockets. Client and node use the same
//! driver; the node plugs in how it finds channels and connects
//! destinations ([`NodeHooks`]).
//!
//! Back-pressure, so memory stays bounded whatever the peers do:
//! - towards a path: the session's own unsent limit, plus at most
//!   [`PATH_QUEUE`] chunks queued for the path's writer task; the driver
//!   polls the session for more only when its out-queue is empty;
//! - from a stream's socket: its reader holds at most
//!   [`STREAM_READ_CREDIT_BYTES`] the session has not taken yet;
//! - towards a stream's socket: the session's per-stream window (the peer
//!   may not send more until the socket's writer reports bytes written).

use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch, AcquireError, OwnedSemaphorePermit, Semaphore};
use tollway_tunnel::frame::Resume;
use tollway_tunnel::session::{ChannelInfo, Event, PathId, Session, SessionError, StreamId};
use tollway_tunnel::{AnnouncedPolicy, Dest, ErrorCode};
use tollway_types::keys::AccountId;
use tollway_types::tx::{ChannelId, SignedReceipt};
use tollway_types::Usd;

/// The driver's maps by stream, path or ping. Keyed foldhash, not std's
/// SipHash: a small request looks its stream up a dozen times, and SipHash
/// was 2.4 % of the client's instructions (callgrind, 1,000 small
/// requests through one hop: client 66.2M against 67.4M, exit 62.4M
/// against 62.8M). Still seeded at random, since a peer picks the stream
/// ids it opens.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Chunks queued for one path's writer.
pub const PATH_QUEUE: usize = 8;
/// Bytes a stream's socket reader may hold before the session takes them.
pub const STREAM_READ_CREDIT_BYTES: usize = 256 * 1024;
/// One read from a path, at most.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// One read from a stream's socket, at most: four full data frames, so a
/// bulk read leaves in four whole TLS records.
const STREAM_READ_BYTES: usize = 4 * tollway_tunnel::frame::DATA_CHUNK_BYTES;
/// Most bytes a stream's socket writer gathers into one write.
const WRITE_BATCH_BYTES: usize = 256 * 1024;
/// A path's writer gathers queued chunks into one write while they come
/// to less than this: one TLS record's plaintext.
const PATH_GATHER_BYTES: usize = 16 * 1024;
/// A stream socket's read buffer when it is quiet.
const MIN_READ_BYTES: usize = 4 * 1024;

/// How long a closed session's paths may take to write what is left (its
/// `GoAway`) before they are dropped: a peer that stops reading held the
/// driver, its writer task and the socket for ever, after the node had
/// stopped counting the session.
pub const CLOSING_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Any byte stream: a TLS or QUIC connection, a TCP socket, a TLS stream
/// inside a relayed tunnel stream.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ByteStream for T {}
pub type BoxStream = Box<dyn ByteStream>;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a node's driver asks of the node.
pub trait NodeHooks: Send + Sync + 'static {
    /// The channel as the ledger has it (and the newest receipt the node
    /// holds) for session `session`, or the code to refuse the session
    /// with.
    fn lookup_channel(
        &self,
        session: [u8; 16],
        channel: ChannelId,
        client: AccountId,
    ) -> BoxFuture<Result<ChannelInfo, ErrorCode>>;
    /// Resolves, applies the exit policy and connects, for session
    /// `session` (whose streams share the node's rate cap as one).
    fn connect(&self, session: [u8; 16], dest: Dest) -> BoxFuture<Result<BoxStream, ErrorCode>>;
    /// A receipt verified: keep the newest per channel for settlement.
    fn receipt_accepted(&self, receipt: SignedReceipt);
    /// Session `session` closed, having delivered `unpaid_bytes` beyond
    /// its channel's newest receipt: owed on the channel's next session.
    fn session_closed(&self, session: [u8; 16], unpaid_bytes: u64);
}

/// Why a stream could not be opened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the exit refused: {}", .0.describe())]
    Refused(ErrorCode),
    #[error("the session is gone: {0}")]
    SessionGone(String),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// The session's state, as its handles see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Handshaking,
    Established,
    Closed { code: ErrorCode, message: String },
}

/// What a client's session has paid and what its node said about it, for
/// the status lines of `tollway connect`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// The channel's cumulative bytes and USD in the newest receipt signed.
    pub receipted_bytes: u64,
    pub receipted_usd: Usd,
    /// The escrow is spent: no receipt can be signed, so the node pauses
    /// the session once its credit window is used.
    pub escrow_exhausted: bool,
    /// The node's newest refusal of a receipt (`code: message`).
    pub receipt_rejected: Option<String>,
    /// Of the bytes the node's hello said the channel's earlier sessions
    /// left unpaid, those beyond the client's own count of them
    /// (`Session::carried_unseen_bytes`): set once established.
    pub carried_unseen_bytes: u64,
    /// The client refused the node's hello for claiming more carried
    /// bytes than it takes on a node's word (`Event::CarriedRefused`):
    /// set before the session's status says closed.
    pub carried_refused: bool,
}

/// Called, on the driver's task, with the exit's error code if it refuses
/// an optimistic open ([`SessionHandle::open_attached`]): by then the
/// socket is the stream's and the refusal has closed it, so this is the
/// only one who can tell anybody. Dropped unused once the exit opens it.
pub type OnRefused = Arc<dyn Fn(ErrorCode) + Send + Sync>;

/// Called, on the driver's task, when the session ends before its exit
/// answered an optimistic open ([`SessionHandle::open_attached`]): with the
/// program's socket and the bytes it had sent, so the connection can be
/// opened again on another route instead of failing. The exit said
/// neither `Opened` nor a refusal, so the program has had no byte back;
/// the exit may still have passed the bytes on before it died (as with
/// Tor's optimistic data, which is retried the same way).
pub type OnUnanswered = Box<dyn FnOnce(EarlySocket) + Send>;

enum Command {
    Open {
        dest: Dest,
        reply: oneshot::Sender<Result<StreamId, OpenError>>,
    },
    Attach {
        stream: StreamId,
        io: EarlySocket,
    },
    OpenAttached {
        dest: Dest,
        io: EarlySocket,
        reply: oneshot::Sender<Result<StreamId, (OpenError, Option<EarlySocket>)>>,
        on_refused: Option<OnRefused>,
        on_unanswered: Option<OnUnanswered>,
    },
    AttachLocal {
        stream: StreamId,
        reply: oneshot::Sender<Option<LocalStream>>,
    },
    AttachPath {
        io: BoxStream,
        binding: [u8; 32],
        reply: oneshot::Sender<Result<PathId, SessionError>>,
    },
    ResumePath {
        io: BoxStream,
        binding: [u8; 32],
        resume: Resume,
        rest: Vec<u8>,
    },
    Ping {
        reply: oneshot::Sender<Duration>,
    },
    Close {
        code: ErrorCode,
        message: String,
    },
    CloseWhenDrained {
        code: ErrorCode,
        message: String,
    },
    KeepOpen,
    // From the driver's own tasks.
    StreamBytes {
        stream: StreamId,
        bytes: Vec<u8>,
    },
    StreamEof {
        stream: StreamId,
    },
    StreamFailed {
        stream: StreamId,
    },
    Written {
        stream: StreamId,
        n: usize,
    },
    Connected {
        stream: StreamId,
        result: Result<BoxStream, ErrorCode>,
    },
    Channel(Result<ChannelInfo, ErrorCode>),
}

/// A handle on a running session; cheap to clone.
#[derive(Clone)]
pub struct SessionHandle {
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<Status>,
    session_id: watch::Receiver<[u8; 16]>,
    usage: watch::Receiver<Usage>,
    received: Arc<AtomicU64>,
    cumulative: Arc<AtomicU64>,
    streams_open: Arc<AtomicUsize>,
    streams_full: Arc<AtomicBool>,
    exit_policy: Arc<OnceLock<AnnouncedPolicy>>,
}

impl SessionHandle {
    /// What the session has paid so far (client).
    pub fn usage(&self) -> Usage {
        self.usage.borrow().clone()
    }

    /// Changes when a receipt is signed, the escrow runs out or the node
    /// rejects a receipt.
    pub fn watch_usage(&self) -> watch::Receiver<Usage> {
        self.usage.clone()
    }

    /// Bytes received from the peer so far, on every path. A health check
    /// reads it: on a slow link the answer to a ping waits behind the data
    /// already on its way, and bytes that keep arriving say the peer is up.
    pub fn bytes_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Streams open or opening on the session now (a client's health
    /// checks slow down while there are none).
    pub fn streams_open(&self) -> usize {
        self.streams_open.load(Ordering::Relaxed)
    }

    /// Client: the session holds as many streams as it may, or opens wait
    /// for one to end, as of the driver's last step: a new open would wait
    /// for a slot (`Limits::stream_slot_wait`). The front end then answers
    /// its program only once the exit has, so that an open that waits too
    /// long is refused with a reply the program can read.
    pub fn streams_full(&self) -> bool {
        self.streams_full.load(Ordering::Relaxed)
    }

    /// Client: what the node's hello announced of its exit policy, once
    /// established (`None` from a node that announced none).
    pub fn exit_policy(&self) -> Option<&AnnouncedPolicy> {
        self.exit_policy.get()
    }

    /// Client: the channel's cumulative bytes as the session counts them
    /// (`Session::cumulative_bytes`) as of the driver's last step, or as
    /// the session ended: what the client's next session on the channel
    /// holds a node's carried bytes to.
    pub fn cumulative_bytes(&self) -> u64 {
        self.cumulative.load(Ordering::Relaxed)
    }

    /// Waits for the handshake; the error says why it failed.
    pub async fn established(&self) -> Result<(), (ErrorCode, String)> {
        let mut status = self.status.clone();
        loop {
            match &*status.borrow_and_update() {
                Status::Established => return Ok(()),
                Status::Closed { code, message } => return Err((*code, message.clone())),
                Status::Handshaking => {}
            }
            if status.changed().await.is_err() {
                return Err((ErrorCode::Internal, "the session's driver stopped".into()));
            }
        }
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    pub fn is_closed(&self) -> bool {
        matches!(*self.status.borrow(), Status::Closed { .. })
    }

    /// Waits until the session is closed.
    pub async fn closed(&self) {
        let mut status = self.status.clone();
        while !matches!(*status.borrow_and_update(), Status::Closed { .. }) {
            if status.changed().await.is_err() {
                return;
            }
        }
    }

    pub fn session_id(&self) -> [u8; 16] {
        *self.session_id.borrow()
    }

    /// Client: opens a stream to `dest` and waits for the exit to connect
    /// it; then [`SessionHandle::attach`] gives it its socket.
    pub async fn open(&self, dest: Dest) -> Result<StreamId, OpenError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Open { dest, reply })?;
        rx.await
            .map_err(|_| OpenError::SessionGone("the session closed".into()))?
    }

    /// Client: opens a stream to `dest` with its socket attached, without
    /// waiting for the exit (optimistic data, as a SOCKS proxy that answers
    /// at once): the socket's pumps start with the open, and its bytes
    /// follow it (its `first` bytes in the open's own record); if the exit
    /// then refuses, the socket is closed. On an error the socket comes
    /// back, for the next route (unless the driver stopped holding it).
    /// With `on_unanswered`, the socket is read no further than its
    /// `first` bytes until the exit answers, and should the session end
    /// before that, it goes to `on_unanswered` with them.
    pub async fn open_attached(
        &self,
        dest: Dest,
        io: EarlySocket,
        on_refused: Option<OnRefused>,
        on_unanswered: Option<OnUnanswered>,
    ) -> Result<StreamId, (OpenError, Option<EarlySocket>)> {
        let gone = || OpenError::SessionGone("the session's driver stopped".into());
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(command)) =
            self.commands.send(Command::OpenAttached { dest, io, reply, on_refused, on_unanswered })
        {
            let Command::OpenAttached { io, .. } = command else { unreachable!("the command just sent") };
            return Err((gone(), Some(io)));
        }
        rx.await.unwrap_or_else(|_| Err((gone(), None)))
    }

    /// The socket whose bytes `stream` carries (its `first` bytes, already
    /// read from it, go before the rest); the stream ends when both
    /// directions have finished.
    pub fn attach(&self, stream: StreamId, io: EarlySocket) -> Result<(), OpenError> {
        self.send(Command::Attach { stream, io })
    }

    /// The stream as an in-process byte stream, with no socket and no pump
    /// tasks between (see [`LocalStream`]); `None` if the stream is gone or
    /// already attached.
    pub async fn attach_local(&self, stream: StreamId) -> Result<LocalStream, OpenError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::AttachLocal { stream, reply })?;
        rx.await
            .ok()
            .flatten()
            .ok_or_else(|| OpenError::SessionGone("the stream is gone or already attached".into()))
    }

    /// Client: a new connection to the same node joins the session and
    /// takes over once the node confirms (port hopping).
    pub async fn attach_path(&self, io: BoxStream, binding: [u8; 32]) -> Result<PathId, OpenError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::AttachPath { io, binding, reply })?;
        Ok(rx
            .await
            .map_err(|_| OpenError::SessionGone("the session closed".into()))??)
    }

    /// Node: a connection whose first frame was a resume for this session.
    pub fn resume_path(
        &self,
        io: BoxStream,
        binding: [u8; 32],
        resume: Resume,
        rest: Vec<u8>,
    ) -> Result<(), OpenError> {
        self.send(Command::ResumePath {
            io,
            binding,
            resume,
            rest,
        })
    }

    /// The round trip of a ping, or `None` if the session ended first.
    pub async fn ping(&self) -> Option<Duration> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Ping { reply }).ok()?;
        rx.await.ok()
    }

    pub fn close(&self, code: ErrorCode, message: &str) {
        let _ = self.send(Command::Close {
            code,
            message: message.to_string(),
        });
    }

    /// Closes the session once it carries no stream: those in flight end
    /// as they would, and no new one should be opened on it (a client
    /// that moved to another route).
    pub fn close_when_drained(&self, code: ErrorCode, message: &str) {
        let _ = self.send(Command::CloseWhenDrained {
            code,
            message: message.to_string(),
        });
    }

    /// Undoes [`SessionHandle::close_when_drained`] if the session has not
    /// closed yet (check its status after): a client going back to the
    /// route it was leaving keeps the streams that route still carries.
    pub fn keep_open(&self) {
        let _ = self.send(Command::KeepOpen);
    }

    fn send(&self, command: Command) -> Result<(), OpenError> {
        self.commands
            .send(command)
            .map_err(|_| OpenError::SessionGone("the session's driver stopped".into()))
    }
}

/// A program's socket for an optimistic open, with the bytes it sent
/// right behind its request already read: they go in the same record as
/// the open, so the exit gets the open and the request in one read.
pub struct EarlySocket {
    pub io: BoxStream,
    pub first: Vec<u8>,
}

/// An optimistic open's socket while its exit has not answered.
struct Unanswered {
    /// Its `first` bytes are the stream's, and so far all it sent.
    io: EarlySocket,
    on_unanswered: OnUnanswered,
}

struct StreamIo {
    /// To the socket's writer; `None` in the queue means FIN.
    to_socket: mpsc::UnboundedSender<Option<Bytes>>,
    /// Taken when the socket is attached.
    to_socket_rx: Option<mpsc::UnboundedReceiver<Option<Bytes>>>,
    read_credit: Arc<Semaphore>,
    /// Bytes read from the socket the session has not taken yet.
    pending: VecDeque<Vec<u8>>,
    eof_pending: bool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl StreamIo {
    fn new() -> StreamIo {
        let (to_socket, rx) = mpsc::unbounded_channel();
        StreamIo {
            to_socket,
            to_socket_rx: Some(rx),
            read_credit: Arc::new(Semaphore::new(STREAM_READ_CREDIT_BYTES)),
            pending: VecDeque::new(),
            eof_pending: false,
            tasks: Vec::new(),
        }
    }
}

impl StreamIo {
    /// Stops the pumps at once (a reset or a closed session); a stream
    /// that ended normally lets its writer flush and shut down instead.
    fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

enum Out {
    Bytes(PathId, Vec<u8>),
    /// Close the path's writer once everything before it went.
    Retire(PathId),
}

struct Driver {
    session: Session,
    hooks: Option<Arc<dyn NodeHooks>>,
    commands_tx: mpsc::UnboundedSender<Command>,
    inbound_tx: mpsc::Sender<(PathId, Option<BytesMut>)>,
    writers: Map<PathId, mpsc::Sender<Vec<u8>>>,
    path_tasks: Map<PathId, tokio::task::JoinHandle<()>>,
    /// Each path's writer task, given [`CLOSING_WRITE_TIMEOUT`] to finish
    /// once its path is retired or the session ends.
    writer_tasks: Map<PathId, tokio::task::JoinHandle<()>>,
    next_path: PathId,
    out: VecDeque<Out>,
    streams: Map<StreamId, StreamIo>,
    opening: Map<StreamId, oneshot::Sender<Result<StreamId, OpenError>>>,
    /// Optimistic opens not yet answered whose opener wants a refusal told.
    refusals: Map<StreamId, OnRefused>,
    /// Optimistic opens not yet answered whose socket waits for the answer
    /// to be read on (`OnUnanswered`).
    unanswered: Map<StreamId, Unanswered>,
    pings: Map<u64, oneshot::Sender<Duration>>,
    status: watch::Sender<Status>,
    session_id: watch::Sender<[u8; 16]>,
    usage: watch::Sender<Usage>,
    /// What [`SessionHandle::bytes_received`] reads.
    received: Arc<AtomicU64>,
    /// What [`SessionHandle::cumulative_bytes`] reads (a client's).
    cumulative: Arc<AtomicU64>,
    /// What [`SessionHandle::streams_open`] reads.
    streams_open: Arc<AtomicUsize>,
    /// What [`SessionHandle::streams_full`] reads.
    streams_full: Arc<AtomicBool>,
    /// What [`SessionHandle::exit_policy`] reads.
    exit_policy: Arc<OnceLock<AnnouncedPolicy>>,
    /// Client: opens that found the session holding `max_streams`, oldest
    /// first, each with when it gives up (`Limits::stream_slot_wait`):
    /// each takes the next slot that frees, in turn, and a new open waits
    /// behind them rather than take a slot before them.
    waiting_opens: VecDeque<(tokio::time::Instant, Command)>,
    /// Close with this once no stream is left (`close_when_drained`).
    drain: Option<(ErrorCode, String)>,
}

/// Spawns `task` with its state on the heap: tokio's task cell then holds
/// a pointer, not the future. For the tasks made per stream (or per
/// program connection), whose futures are KiBs: the runtime copies a
/// task's future in whole as it starts it and again as it finishes it
/// (about 330 instructions per 3.5 KiB copy, four copies a task), and
/// allocates a large cell through glibc's slower aligned path. Callgrind,
/// 1,000 small requests through one hop: client 67.4M instructions
/// against 72.3M, exit 62.8M against 64.9M (ADR 0009).
pub fn spawn_boxed<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(Box::pin(task))
}

/// Starts the driver of `session` on the connection `io` (path 0 of the
/// session, so create the session with path id 0). `hooks` makes it a
/// node's driver.
pub fn spawn(session: Session, io: BoxStream, hooks: Option<Arc<dyn NodeHooks>>) -> SessionHandle {
    spawn_with_prefix(session, io, Vec::new(), hooks)
}

/// As [`spawn`], with bytes already read from `io` (the node peeks at the
/// first frame to tell a hello from a resume).
pub fn spawn_with_prefix(
    session: Session,
    io: BoxStream,
    prefix: Vec<u8>,
    hooks: Option<Arc<dyn NodeHooks>>,
) -> SessionHandle {
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (inbound_tx, inbound_rx) = mpsc::channel(PATH_QUEUE);
    let (status, status_rx) = watch::channel(Status::Handshaking);
    let (session_id, session_id_rx) = watch::channel(session.session_id());
    let (usage, usage_rx) = watch::channel(Usage::default());
    let mut driver = Driver {
        session,
        hooks,
        commands_tx: commands_tx.clone(),
        inbound_tx,
        writers: Map::default(),
        path_tasks: Map::default(),
        writer_tasks: Map::default(),
        next_path: 1,
        out: VecDeque::new(),
        streams: Map::default(),
        opening: Map::default(),
        refusals: Map::default(),
        unanswered: Map::default(),
        pings: Map::default(),
        status,
        session_id,
        usage,
        received: Arc::new(AtomicU64::new(0)),
        cumulative: Arc::new(AtomicU64::new(0)),
        streams_open: Arc::new(AtomicUsize::new(0)),
        streams_full: Arc::new(AtomicBool::new(false)),
        exit_policy: Arc::new(OnceLock::new()),
        waiting_opens: VecDeque::new(),
        drain: None,
    };
    driver.add_path(0, io);
    if !prefix.is_empty() {
        driver.session.handle_input(Instant::now(), 0, &prefix);
    }
    let (received, cumulative) = (driver.received.clone(), driver.cumulative.clone());
    let streams_open = driver.streams_open.clone();
    let (streams_full, exit_policy) = (driver.streams_full.clone(), driver.exit_policy.clone());
    tokio::spawn(driver.run(commands_rx, inbound_rx));
    SessionHandle {
        commands: commands_tx,
        status: status_rx,
        session_id: session_id_rx,
        usage: usage_rx,
        received,
        cumulative,
        streams_open,
        streams_full,
        exit_policy,
    }
}

impl Driver {
    fn add_path(&mut self, path: PathId, io: BoxStream) {
        let (mut read, mut write) = tokio::io::split(io);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(PATH_QUEUE);
        let inbound = self.inbound_tx.clone();
        let reader = tokio::spawn(async move {
            let mut blocks = ReadBlocks::new();
            loop {
                // Each read's bytes are handed over as they are (no copy),
                // in a block the reader takes back once they are dropped.
                let block = blocks.next();
                match read.read_buf(block).await {
                    Ok(0) | Err(_) => {
                        let _ = inbound.send((path, None)).await;
                        return;
                    }
                    Ok(n) => {
                        let chunk = block.split();
                        blocks.read(n);
                        if inbound.send((path, Some(chunk))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let writer = tokio::spawn(async move {
            let mut batch: Vec<Vec<u8>> = Vec::new();
            while let Some(first) = rx.recv().await {
                // Small chunks queued behind it go in the same write, up
                // to a TLS record's worth: a TLS stream encrypts on each
                // write and sends at once, so a stream's last data and its
                // Fin (two commands to the driver) left as two records,
                // two system calls and two wake-ups of the peer. Bulk
                // chunks still go one a write: gathered, they went out in
                // larger bursts, and two hops ran no faster, if anything
                // slower (ADR 0009).
                gather(&mut batch, first, PATH_GATHER_BYTES, || rx.try_recv().ok());
                if write_all_chunks(&mut write, &mut batch).await.is_err() {
                    return;
                }
                // Flush only when nothing else waits: one TLS record per
                // burst, not per frame.
                if rx.is_empty() && write.flush().await.is_err() {
                    return;
                }
            }
            let _ = write.shutdown().await;
        });
        self.writers.insert(path, tx);
        self.path_tasks.insert(path, reader);
        self.writer_tasks.insert(path, writer);
    }

    /// The path's writer, its queue closed, gets [`CLOSING_WRITE_TIMEOUT`]
    /// to write what it holds and shut down; then it is aborted, which
    /// drops its half of the connection.
    fn let_writer_finish(&mut self, path: PathId) {
        self.writers.remove(&path);
        if let Some(task) = self.writer_tasks.remove(&path) {
            let abort = task.abort_handle();
            tokio::spawn(async move {
                if tokio::time::timeout(CLOSING_WRITE_TIMEOUT, task).await.is_err() {
                    abort.abort();
                }
            });
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut inbound: mpsc::Receiver<(PathId, Option<BytesMut>)>,
    ) {
        // One timer for the session's life, armed at its deadline. The
        // idle deadline moves with every frame received: the timer is moved
        // only when the deadline comes earlier, and a timer that fires
        // before a deadline that moved later is a no-op for the session and
        // is armed again. (A fresh timer per loop, or a reset per frame,
        // cost a timer-wheel insert and removal for every read.)
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        // Once closed: until when what is left may wait for a writer.
        let mut closing_until: Option<tokio::time::Instant> = None;
        loop {
            self.process();
            // Only a replaced route's session drains: the common case pays
            // one check per wake-up.
            if self.drain.is_some() && self.session.n_streams() == 0 && !self.session.is_closed() {
                if let Some((code, message)) = self.drain.take() {
                    self.session.close(code, &message);
                    self.process();
                }
            }
            if self.session.is_closed() && self.out.is_empty() {
                break;
            }
            if self.session.is_closed() && closing_until.is_none() {
                closing_until = Some(tokio::time::Instant::now() + CLOSING_WRITE_TIMEOUT);
            }
            // Wait for room in the writer of the first queued chunk.
            let blocked_writer = match self.out.front() {
                Some(Out::Bytes(path, _)) => self.writers.get(path).cloned(),
                _ => None,
            };
            match self.session.poll_timeout() {
                Some(deadline) if armed.is_none_or(|at| deadline < at) => {
                    timer.as_mut().reset(tokio::time::Instant::from_std(deadline));
                    armed = Some(deadline);
                }
                Some(_) => {}
                None => armed = None,
            }
            tokio::select! {
                Some((path, bytes)) = inbound.recv() => {
                    match bytes {
                        Some(bytes) => {
                            self.received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                            self.session.handle_input_buf(Instant::now(), path, bytes);
                        }
                        None => {
                            if self.writers.contains_key(&path) {
                                self.session.handle_path_lost(path);
                            }
                        }
                    }
                }
                Some(command) = commands.recv() => self.handle_command(command),
                _ = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.session.handle_timeout(Instant::now());
                }
                permit = reserve_opt(blocked_writer.as_ref()) => {
                    if let (Ok(permit), Some(Out::Bytes(_, bytes))) = (permit, self.out.pop_front()) {
                        permit.send(bytes);
                    }
                }
                () = sleep_until_opt(closing_until) => break,
                () = sleep_until_opt(self.waiting_opens.front().map(|(until, _)| *until)) => self.refuse_waited_opens(),
            }
        }
        for (_, task) in self.path_tasks.drain() {
            task.abort();
        }
        // Closing the writers' queues lets each write what it holds and
        // shut down, within its time.
        let paths: Vec<PathId> = self.writer_tasks.keys().copied().collect();
        for path in paths {
            self.let_writer_finish(path);
        }
        self.writers.clear();
    }

    /// Moves bytes out and handles events until the session is quiet.
    fn process(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(front) = self.out.front_mut() {
                match front {
                    Out::Bytes(path, bytes) => match self.writers.get(path) {
                        None => {
                            self.out.pop_front();
                        }
                        Some(writer) => match writer.try_send(std::mem::take(bytes)) {
                            Ok(()) => {
                                self.out.pop_front();
                            }
                            Err(mpsc::error::TrySendError::Full(back)) => {
                                *bytes = back;
                                break;
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => {
                                self.out.pop_front();
                            }
                        },
                    },
                    Out::Retire(path) => {
                        let path = *path;
                        self.let_writer_finish(path);
                        if let Some(t) = self.path_tasks.remove(&path) {
                            t.abort();
                        }
                        self.out.pop_front();
                    }
                }
                progressed = true;
            }
            if self.out.is_empty() {
                if let Some((path, bytes)) = self.session.poll_transmit() {
                    self.out.push_back(Out::Bytes(path, bytes));
                    progressed = true;
                }
            }
            while let Some(event) = self.session.poll_event() {
                self.handle_event(event);
                progressed = true;
            }
            // Only while opens wait for a slot: the common case pays one
            // check per pass.
            if !self.waiting_opens.is_empty() && !self.session.streams_full() && self.session.is_established() {
                match self.waiting_opens.pop_front() {
                    // Its opener gave up waiting (a route left for its
                    // silence): the slot goes to the next.
                    Some((_, Command::Open { reply, .. })) if reply.is_closed() => {}
                    Some((_, command)) => self.open_now(command),
                    None => {}
                }
                progressed = true;
            }
            if !progressed {
                // A client's figure, for its next session on the channel.
                if self.hooks.is_none() {
                    self.cumulative.store(self.session.cumulative_bytes(), Ordering::Relaxed);
                }
                self.streams_open.store(self.streams.len() + self.opening.len(), Ordering::Relaxed);
                let full = self.session.streams_full() || !self.waiting_opens.is_empty();
                self.streams_full.store(full, Ordering::Relaxed);
                return;
            }
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::ChannelNeeded { channel, client } => {
                if let Some(hooks) = self.hooks.clone() {
                    let tx = self.commands_tx.clone();
                    let session = self.session.session_id();
                    tokio::spawn(async move {
                        let _ = tx.send(Command::Channel(
                            hooks.lookup_channel(session, channel, client).await,
                        ));
                    });
                }
            }
            Event::Established => {
                let _ = self.session_id.send(self.session.session_id());
                if let Some(policy) = self.session.exit_policy() {
                    let _ = self.exit_policy.set(policy.clone());
                }
                let unseen = self.session.carried_unseen_bytes();
                if unseen > 0 {
                    self.usage.send_modify(|u| u.carried_unseen_bytes = unseen);
                }
                // Before the status: whoever waits for it reads the count
                // the session starts from (the client's carried book).
                if self.hooks.is_none() {
                    self.cumulative.store(self.session.cumulative_bytes(), Ordering::Relaxed);
                }
                let _ = self.status.send(Status::Established);
            }
            Event::OpenRequested { stream, dest } => {
                let mut io = StreamIo::new();
                if let Some(hooks) = self.hooks.clone() {
                    let tx = self.commands_tx.clone();
                    let session = self.session.session_id();
                    // The stream's task: a reset aborts the connect with
                    // it. Left running, an open and a reset freed the
                    // stream's slot while the connect went on for up to
                    // its timeout, so open-reset pairs opened any number.
                    io.tasks.push(spawn_boxed(async move {
                        let result = hooks.connect(session, dest).await;
                        let _ = tx.send(Command::Connected { stream, result });
                    }));
                }
                self.streams.insert(stream, io);
            }
            Event::Opened { stream } => {
                self.refusals.remove(&stream);
                if let Some(waiting) = self.unanswered.remove(&stream) {
                    self.attach(stream, waiting.io.io);
                }
                if let Some(reply) = self.opening.remove(&stream) {
                    if reply.send(Ok(stream)).is_err() {
                        self.drop_stream(stream, true);
                    }
                }
            }
            Event::OpenFailed { stream, code } => {
                // An optimistic stream may already have its socket: close it.
                if let Some(io) = self.streams.remove(&stream) {
                    io.abort();
                }
                self.unanswered.remove(&stream);
                if let Some(reply) = self.opening.remove(&stream) {
                    let _ = reply.send(Err(OpenError::Refused(code)));
                }
                if let Some(on_refused) = self.refusals.remove(&stream) {
                    on_refused(code);
                }
            }
            Event::Data { stream, payload } => {
                if let Some(io) = self.streams.get(&stream) {
                    let _ = io.to_socket.send(Some(payload));
                }
            }
            Event::Writable { stream } => self.flush_stream(stream),
            Event::Finished { stream } => {
                if let Some(io) = self.streams.get(&stream) {
                    let _ = io.to_socket.send(None);
                }
                self.forget_if_done(stream);
            }
            Event::Reset { stream, .. } => self.drop_stream(stream, false),
            Event::ReceiptAccepted { receipt } => {
                if let Some(hooks) = &self.hooks {
                    hooks.receipt_accepted(receipt);
                }
            }
            Event::Pong { nonce, rtt } => {
                if let Some(reply) = self.pings.remove(&nonce) {
                    let _ = reply.send(rtt);
                }
            }
            Event::PathRetired { path } => self.out.push_back(Out::Retire(path)),
            Event::Closed { code, message, .. } => {
                for (_, reply) in self.opening.drain() {
                    let _ = reply.send(Err(OpenError::SessionGone(message.clone())));
                }
                // Never opened here: their sockets go back, for the next route.
                for (_, command) in std::mem::take(&mut self.waiting_opens) {
                    let gone = OpenError::SessionGone(message.clone());
                    match command {
                        Command::Open { reply, .. } => {
                            let _ = reply.send(Err(gone));
                        }
                        Command::OpenAttached { io, reply, .. } => {
                            let _ = reply.send(Err((gone, Some(io))));
                        }
                        _ => {}
                    }
                }
                self.refusals.clear();
                for (_, io) in self.streams.drain() {
                    io.abort();
                }
                // Their exit never answered: elsewhere, they may still be.
                for (_, waiting) in self.unanswered.drain() {
                    (waiting.on_unanswered)(waiting.io);
                }
                self.pings.clear();
                // Before the status: whoever waits for it may read this.
                if let Some(hooks) = &self.hooks {
                    hooks.session_closed(self.session.session_id(), self.session.unpaid_bytes());
                } else {
                    self.cumulative.store(self.session.cumulative_bytes(), Ordering::Relaxed);
                }
                let _ = self.status.send(Status::Closed { code, message });
            }
            Event::ReceiptSent { cumulative_bytes, cumulative_usd } => self.usage.send_modify(|u| {
                (u.receipted_bytes, u.receipted_usd) = (cumulative_bytes, cumulative_usd);
            }),
            Event::EscrowExhausted => self.usage.send_modify(|u| u.escrow_exhausted = true),
            Event::CarriedRefused => self.usage.send_modify(|u| u.carried_refused = true),
            Event::ReceiptRejected { code, message } => {
                self.usage.send_modify(|u| u.receipt_rejected = Some(format!("{code}: {message}")))
            }
            // A pause is part of a fast download's normal flow.
            Event::Paused { .. } | Event::PathReady { .. } => {}
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Open { .. } | Command::OpenAttached { .. } if self.must_wait_for_slot() => {
                let until = tokio::time::Instant::now() + self.session.limits().stream_slot_wait;
                self.waiting_opens.push_back((until, command));
            }
            Command::Open { .. } | Command::OpenAttached { .. } => self.open_now(command),
            Command::Attach { stream, io } => self.attach_early(stream, io),
            Command::AttachLocal { stream, reply } => {
                let local = self.streams.get_mut(&stream).and_then(|state| {
                    Some(LocalStream {
                        stream,
                        commands: self.commands_tx.clone(),
                        incoming: state.to_socket_rx.take()?,
                        current: Bytes::new(),
                        pos: 0,
                        received_eof: false,
                        credit: state.read_credit.clone(),
                        acquiring: None,
                        sent_eof: false,
                    })
                });
                let _ = reply.send(local);
            }
            Command::Connected { stream, result } => match result {
                Ok(io) if self.streams.contains_key(&stream) => {
                    self.session.accept_stream(stream);
                    self.attach(stream, io);
                }
                Ok(_) => {}
                Err(code) => {
                    self.streams.remove(&stream);
                    self.session.refuse_stream(stream, code);
                }
            },
            Command::Channel(info) => self.session.handle_channel(Instant::now(), info),
            Command::AttachPath { io, binding, reply } => {
                let path = self.next_path;
                match self.session.attach_path(Instant::now(), path, binding) {
                    Ok(()) => {
                        self.next_path += 1;
                        self.add_path(path, io);
                        let _ = reply.send(Ok(path));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::ResumePath {
                io,
                binding,
                resume,
                rest,
            } => {
                let path = self.next_path;
                if self
                    .session
                    .handle_resume(Instant::now(), path, binding, &resume)
                    .is_ok()
                {
                    self.next_path += 1;
                    self.add_path(path, io);
                    if !rest.is_empty() {
                        self.session.handle_input(Instant::now(), path, &rest);
                    }
                }
            }
            Command::Ping { reply } => {
                if let Ok(nonce) = self.session.ping(Instant::now()) {
                    self.pings.insert(nonce, reply);
                }
            }
            Command::Close { code, message } => self.session.close(code, &message),
            Command::CloseWhenDrained { code, message } => self.drain = Some((code, message)),
            Command::KeepOpen => self.drain = None,
            Command::StreamBytes { stream, bytes } => {
                if let Some(io) = self.streams.get_mut(&stream) {
                    io.pending.push_back(bytes);
                    self.flush_stream(stream);
                }
            }
            Command::StreamEof { stream } => {
                if let Some(io) = self.streams.get_mut(&stream) {
                    io.eof_pending = true;
                    self.flush_stream(stream);
                }
            }
            Command::StreamFailed { stream } => self.drop_stream(stream, true),
            Command::Written { stream, n } => {
                // The last bytes out may let the session forget the stream.
                self.session.consumed(Instant::now(), stream, n);
                self.forget_if_done(stream);
            }
        }
    }

    /// Client: a new stream in the session, with its (yet unattached) I/O.
    fn open_stream(&mut self, dest: Dest) -> Result<StreamId, SessionError> {
        let stream = self.session.open_stream(dest)?;
        self.streams.insert(stream, StreamIo::new());
        Ok(stream)
    }

    /// Opens a stream for an `Open` or `OpenAttached` (any other command is
    /// not one and is dropped).
    fn open_now(&mut self, command: Command) {
        match command {
            Command::Open { dest, reply } => match self.open_stream(dest) {
                Ok(stream) => {
                    self.opening.insert(stream, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::OpenAttached { dest, io, reply, on_refused, on_unanswered } => match self.open_stream(dest) {
                Ok(stream) => {
                    if let Some(on_refused) = on_refused {
                        self.refusals.insert(stream, on_refused);
                    }
                    match on_unanswered {
                        Some(on_unanswered) => {
                            self.queue_first(stream, io.first.clone());
                            self.unanswered.insert(stream, Unanswered { io, on_unanswered });
                        }
                        None => self.attach_early(stream, io),
                    }
                    let _ = reply.send(Ok(stream));
                }
                Err(e) => {
                    let _ = reply.send(Err((e.into(), Some(io))));
                }
            },
            _ => {}
        }
    }

    /// Whether an open now waits for a stream slot: the session holds as
    /// many as it may, or others wait before it (they go first). Not with
    /// no wait allowed: then the open is refused at once, as before.
    fn must_wait_for_slot(&self) -> bool {
        (self.session.streams_full() || !self.waiting_opens.is_empty())
            && !self.session.limits().stream_slot_wait.is_zero()
    }

    /// The waiting opens whose wait is over are refused (`TooManyStreams`),
    /// a socket given back with its refusal; one whose opener went is
    /// dropped.
    fn refuse_waited_opens(&mut self) {
        let now = tokio::time::Instant::now();
        while self.waiting_opens.front().is_some_and(|(until, _)| *until <= now) {
            let Some((_, command)) = self.waiting_opens.pop_front() else { break };
            let full = SessionError::TooManyStreams(self.session.limits().max_streams);
            match command {
                Command::Open { reply, .. } => {
                    let _ = reply.send(Err(full.into()));
                }
                Command::OpenAttached { io, reply, .. } => {
                    let _ = reply.send(Err((full.into(), Some(io))));
                }
                _ => {}
            }
        }
    }

    /// Gives the session what the stream's socket produced, as far as its
    /// windows allow; the rest waits for `Writable`.
    fn flush_stream(&mut self, stream: StreamId) {
        let Some(io) = self.streams.get_mut(&stream) else {
            return;
        };
        while let Some(front) = io.pending.front_mut() {
            match self.session.send(stream, front) {
                Ok(n) => {
                    io.read_credit.add_permits(n);
                    if n == front.len() {
                        io.pending.pop_front();
                    } else {
                        front.drain(..n);
                        return;
                    }
                }
                Err(_) => {
                    io.pending.clear();
                    return;
                }
            }
        }
        if io.eof_pending {
            io.eof_pending = false;
            self.session.finish(stream);
            self.forget_if_done(stream);
        }
    }

    /// Both directions ended: the session forgot the stream, so does the
    /// driver (its tasks finish on their own).
    fn forget_if_done(&mut self, stream: StreamId) {
        if !self.session.has_stream(stream) {
            self.streams.remove(&stream);
        }
    }

    fn drop_stream(&mut self, stream: StreamId, tell_peer: bool) {
        self.refusals.remove(&stream);
        self.unanswered.remove(&stream);
        if let Some(io) = self.streams.remove(&stream) {
            io.abort();
            if tell_peer {
                self.session.reset(stream, ErrorCode::Shutdown);
            }
        }
    }

    /// [`Driver::attach`] for a program's socket with bytes already read
    /// from it (`queue_first`).
    fn attach_early(&mut self, stream: StreamId, io: EarlySocket) {
        let EarlySocket { io, first } = io;
        self.queue_first(stream, first);
        self.attach(stream, io);
    }

    /// Bytes already read from `stream`'s socket go to the session first
    /// (right behind an open still queued, so in its record), as if the
    /// socket's reader had read them.
    fn queue_first(&mut self, stream: StreamId, first: Vec<u8>) {
        if let Some(state) = self.streams.get_mut(&stream) {
            if !first.is_empty() {
                // They take read credit, returned as the session takes them.
                state.read_credit.forget_permits(first.len());
                state.pending.push_back(first);
                self.flush_stream(stream);
            }
        }
    }

    /// Starts the two pumps between a stream and its socket, on one task.
    fn attach(&mut self, stream: StreamId, io: BoxStream) {
        let Some(state) = self.streams.get_mut(&stream) else {
            return;
        };
        let Some(mut to_socket) = state.to_socket_rx.take() else {
            return;
        };
        let (mut read, mut write) = tokio::io::split(io);
        let tx = self.commands_tx.clone();
        let credit = state.read_credit.clone();
        let reader = async move {
            // The buffer grows while reads fill it and shrinks when they do
            // not, so a thousand quiet streams hold a few KiB each and a
            // bulk stream reads about 64 KiB at a time.
            let mut size = MIN_READ_BYTES;
            loop {
                let Ok(permit) = credit.clone().acquire_many_owned(STREAM_READ_BYTES as u32).await else {
                    return;
                };
                let mut chunk = Vec::with_capacity(size);
                match read.read_buf(&mut chunk).await {
                    Ok(0) => {
                        let _ = tx.send(Command::StreamEof { stream });
                        return;
                    }
                    Ok(n) => {
                        // The session returns these `n` permits as it takes
                        // the bytes; the rest go back now.
                        permit.forget();
                        credit.add_permits(STREAM_READ_BYTES - n);
                        if tx.send(Command::StreamBytes { stream, bytes: chunk }).is_err() {
                            return;
                        }
                        if n == size && size < STREAM_READ_BYTES {
                            size = (size * 2).min(STREAM_READ_BYTES);
                        } else if n < size / 4 && size > MIN_READ_BYTES {
                            size /= 2;
                        }
                    }
                    Err(_) => {
                        let _ = tx.send(Command::StreamFailed { stream });
                        return;
                    }
                }
            }
        };
        let tx = self.commands_tx.clone();
        let writer = async move {
            let mut batch: Vec<Bytes> = Vec::new();
            while let Some(item) = to_socket.recv().await {
                let Some(first) = item else {
                    let _ = write.shutdown().await;
                    return;
                };
                // Whatever else is already queued goes in the same write: a
                // 64 KiB read on the far side arrives as four data frames,
                // and one system call beats four (gathered, not copied).
                let mut fin = false;
                let total = gather(&mut batch, first, WRITE_BATCH_BYTES, || match to_socket.try_recv() {
                    Ok(Some(more)) => Some(more),
                    Ok(None) => {
                        fin = true;
                        None
                    }
                    Err(_) => None,
                });
                if write_all_chunks(&mut write, &mut batch).await.is_err() || write.flush().await.is_err() {
                    let _ = tx.send(Command::StreamFailed { stream });
                    return;
                }
                let _ = tx.send(Command::Written { stream, n: total });
                if fin {
                    let _ = write.shutdown().await;
                    return;
                }
            }
        };
        // One task polls both pumps, each as free of the other as when
        // they were two tasks: a spawn fewer per stream (callgrind, 1,000
        // small requests: 1.5 % fewer instructions in the client, 0.9 %
        // in the exit).
        state.tasks.push(spawn_boxed(async move {
            tokio::join!(reader, writer);
        }));
    }
}

/// Read blocks a path's reader may keep (1 MiB): what a bulk download holds
/// between its path and its stream's socket, so it reuses them instead of
/// allocating (a download with 2 MiB stream windows took a few dozen page
/// faults per 4 GB).
const READ_BLOCKS: usize = 16;

/// A path reader's read buffers, `READ_CHUNK_BYTES` each, reused.
///
/// Why: the session hands a read's data frames on as slices of its buffer,
/// so a buffer lives until the streams' sockets have taken them. A fresh
/// buffer per read was allocated and freed at the top of the heap, and
/// glibc gave the memory back and took it again over and over (brk); each
/// 4 KiB page of every read then cost a page fault and a zeroing by the
/// kernel: about 60,000 faults per GiB, 5–13 % of a download's throughput.
/// A block comes back (`try_reclaim`) once every slice of it is dropped;
/// when all are still held, a fresh one replaces the oldest, whose memory
/// goes when its last slice does. So what a block pins is what a fresh
/// buffer per read pinned. A quiet path (`QUIET_READS` reads in a row
/// smaller than `MIN_READ_BYTES`) keeps one block, as much as the one read
/// buffer it held before; our client's health pings (every 500 ms) make a
/// session quiet within seconds of a transfer. A session with no traffic
/// at all keeps what its last transfer needed (at most `READ_BLOCKS` ×
/// 64 KiB, 1 MiB) until its idle timeout closes it.
struct ReadBlocks {
    blocks: Vec<BytesMut>,
    next: usize,
    /// Small reads in a row.
    quiet_reads: u32,
}

/// Small reads in a row after which a path counts as quiet: one alone
/// happens mid-transfer too (a TLS record's tail).
const QUIET_READS: u32 = 16;

impl ReadBlocks {
    fn new() -> ReadBlocks {
        ReadBlocks { blocks: Vec::new(), next: 0, quiet_reads: 0 }
    }

    /// Notes a read of `n` bytes: after `QUIET_READS` small ones in a row,
    /// the spare blocks go.
    fn read(&mut self, n: usize) {
        self.quiet_reads = if n < MIN_READ_BYTES { self.quiet_reads + 1 } else { 0 };
        if self.quiet_reads >= QUIET_READS && self.blocks.len() > 1 {
            self.blocks.truncate(1);
            self.next = 0;
        }
    }

    /// An empty block with room for a whole read.
    fn next(&mut self) -> &mut BytesMut {
        let n = self.blocks.len();
        let free = (0..n).map(|k| (self.next + k) % n).find(|&i| self.blocks[i].try_reclaim(READ_CHUNK_BYTES));
        let i = match free {
            Some(i) => i,
            None if n < READ_BLOCKS => {
                self.blocks.push(BytesMut::with_capacity(READ_CHUNK_BYTES));
                n
            }
            None => {
                self.blocks[self.next] = BytesMut::with_capacity(READ_CHUNK_BYTES);
                self.next
            }
        };
        self.next = (i + 1) % self.blocks.len().max(1);
        &mut self.blocks[i]
    }
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// One end of a tunnel stream inside this process: what the session
/// delivers for the stream is read from it, what is written to it goes into
/// the stream. A relayed route runs its inner TLS over one, so the relay
/// hop's chunks reach the inner TLS as they are: no socket pair or duplex
/// buffer to copy through, and no pump tasks to hand them on.
///
/// Back-pressure is the pumps': a write waits for the stream's read credit
/// (what the session has not taken yet), and the session's window reopens
/// as reads consume what it delivered. Dropped before both directions
/// ended, it resets the stream.
pub struct LocalStream {
    stream: StreamId,
    commands: mpsc::UnboundedSender<Command>,
    incoming: mpsc::UnboundedReceiver<Option<Bytes>>,
    /// The chunk being read, and how far.
    current: Bytes,
    pos: usize,
    received_eof: bool,
    credit: Arc<Semaphore>,
    acquiring: Option<Acquire>,
    sent_eof: bool,
}

impl AsyncRead for LocalStream {
    /// Fills `buf` from as many delivered chunks as are ready (a TLS reader
    /// above asks for much more than one 16 KiB frame), and reopens the
    /// session's window once for all the chunks it used up.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let me = self.get_mut();
        let mut used_up = 0;
        let mut filled = false;
        let result = loop {
            if me.pos < me.current.len() {
                let n = (me.current.len() - me.pos).min(buf.remaining());
                buf.put_slice(&me.current[me.pos..me.pos + n]);
                me.pos += n;
                filled = true;
                if me.pos < me.current.len() {
                    break Poll::Ready(Ok(()));
                }
                used_up += me.current.len();
            }
            if me.received_eof || buf.remaining() == 0 {
                break Poll::Ready(Ok(()));
            }
            let next = if filled {
                // Only what is already there: the bytes in hand go up now.
                match me.incoming.try_recv() {
                    Ok(item) => Some(item),
                    Err(_) => break Poll::Ready(Ok(())),
                }
            } else {
                match me.incoming.poll_recv(cx) {
                    Poll::Ready(item) => item,
                    Poll::Pending => break Poll::Pending,
                }
            };
            match next {
                Some(Some(chunk)) => {
                    me.current = chunk;
                    me.pos = 0;
                }
                Some(None) => me.received_eof = true,
                // The driver dropped the stream without a FIN: a reset.
                None => break Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into())),
            }
        };
        if used_up > 0 {
            // The chunks are taken: the session may send as much again.
            let _ = me.commands.send(Command::Written { stream: me.stream, n: used_up });
        }
        result
    }
}

impl AsyncWrite for LocalStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.poll_write_vectored(cx, &[std::io::IoSlice::new(data)])
    }

    /// The slices as one send, as many bytes as the read credit allows (at
    /// most one socket read's worth): the TLS inside a relayed route
    /// writes its records gathered, and one slice per call was a command
    /// to the driver, and a frame, per record.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let me = self.get_mut();
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        if me.sent_eof {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        let n = len.min(STREAM_READ_BYTES);
        let acquiring = me
            .acquiring
            .get_or_insert_with(|| Box::pin(me.credit.clone().acquire_many_owned(n as u32)));
        let permit = match acquiring.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => {
                me.acquiring = None;
                result.map_err(|_| std::io::Error::from(std::io::ErrorKind::ConnectionReset))?
            }
        };
        // The acquired size may predate a shorter retry: use what it covers.
        let n = n.min(permit.num_permits());
        let taken = permit.num_permits();
        permit.forget();
        me.credit.add_permits(taken - n);
        me.commands
            .send(Command::StreamBytes { stream: me.stream, bytes: first_bytes(bufs, n) })
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::ConnectionReset))?;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        let me = self.get_mut();
        if !me.sent_eof {
            me.sent_eof = true;
            let _ = me.commands.send(Command::StreamEof { stream: me.stream });
        }
        std::task::Poll::Ready(Ok(()))
    }
}

impl Drop for LocalStream {
    fn drop(&mut self) {
        if !(self.sent_eof && self.received_eof) {
            let _ = self.commands.send(Command::StreamFailed { stream: self.stream });
        }
    }
}

/// The first `n` bytes of `bufs` (at most all of them), as one buffer.
fn first_bytes(bufs: &[std::io::IoSlice<'_>], n: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(n);
    for b in bufs {
        let k = (n - bytes.len()).min(b.len());
        bytes.extend_from_slice(&b[..k]);
    }
    bytes
}

/// Puts `first` into `batch`, then the chunks `next` gives (what is
/// already queued; `None`: nothing more now) while the batch holds less
/// than `limit` bytes; returns how many it holds.
fn gather<C: AsRef<[u8]>>(batch: &mut Vec<C>, first: C, limit: usize, mut next: impl FnMut() -> Option<C>) -> usize {
    let mut total = first.as_ref().len();
    batch.push(first);
    while total < limit {
        let Some(more) = next() else { break };
        total += more.as_ref().len();
        batch.push(more);
    }
    total
}

/// Writes every chunk, in order, with as few (vectored) writes as the
/// stream takes; `chunks` is empty afterwards.
async fn write_all_chunks<W: AsyncWrite + Unpin, C: AsRef<[u8]>>(write: &mut W, chunks: &mut Vec<C>) -> std::io::Result<()> {
    const MAX_SLICES: usize = 64;
    // The next byte to write: chunk `first`, from `offset`.
    let (mut first, mut offset) = (0, 0);
    loop {
        // Past what is written, and past empty chunks (a write of nothing
        // but empty slices would return 0).
        while first < chunks.len() && chunks[first].as_ref().len() == offset {
            (first, offset) = (first + 1, 0);
        }
        if first == chunks.len() {
            break;
        }
        let mut written = {
            let slices: Vec<std::io::IoSlice<'_>> = chunks[first..]
                .iter()
                .take(MAX_SLICES)
                .enumerate()
                .map(|(k, c)| std::io::IoSlice::new(&c.as_ref()[if k == 0 { offset } else { 0 }..]))
                .collect();
            write.write_vectored(&slices).await?
        };
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let left = chunks[first].as_ref().len() - offset;
            let n = written.min(left);
            offset += n;
            written -= n;
            if offset == chunks[first].as_ref().len() {
                (first, offset) = (first + 1, 0);
            }
        }
    }
    chunks.clear();
    Ok(())
}

async fn reserve_opt(
    writer: Option<&mpsc::Sender<Vec<u8>>>,
) -> Result<mpsc::Permit<'_, Vec<u8>>, mpsc::error::SendError<()>> {
    match writer {
        Some(w) => w.reserve().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream whose drop is seen: the driver let go of the connection.
    struct Watched(tokio::io::DuplexStream, Arc<std::sync::atomic::AtomicBool>);

    impl Drop for Watched {
        fn drop(&mut self) {
            self.1.store(true, Ordering::SeqCst);
        }
    }
    impl AsyncRead for Watched {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> std::task::Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }
    impl AsyncWrite for Watched {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    /// A peer that reads nothing: the hello fills the 16-byte pipe and the
    /// closing `GoAway` waits behind it. The driver waited for it for ever,
    /// and its writer held the connection; it now lets go within
    /// [`CLOSING_WRITE_TIMEOUT`].
    #[tokio::test(start_paused = true)]
    async fn a_closed_session_lets_go_of_a_peer_that_never_reads() {
        let (ours, _peer) = tokio::io::duplex(16);
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let key = tollway_types::SigningKey::from_label("closing-client");
        let terms = tollway_tunnel::session::ClientTerms {
            chain_id: "tollway-closing".into(),
            node: tollway_types::SigningKey::from_label("closing-node").public(),
            channel: tollway_types::tx::channel_id(&key.public(), 0),
            key,
            escrow: tollway_types::amount::Usd(1_000_000),
            settled_bytes: 0,
            settled_usd: tollway_types::amount::Usd(0),
            max_price_usd_micro_per_gib: 1_000_000,
            limits: tollway_tunnel::session::Limits::default(),
            earlier: tollway_tunnel::session::EarlierSessions::default(),
        };
        let session = Session::client(terms, Instant::now(), 0, [9; 32]);
        let handle = spawn(session, Box::new(Watched(ours, dropped.clone())), None);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!dropped.load(Ordering::SeqCst), "open: the connection is kept");
        handle.close(ErrorCode::Shutdown, "test");
        tokio::time::sleep(CLOSING_WRITE_TIMEOUT * 2 + Duration::from_secs(1)).await;
        assert!(dropped.load(Ordering::SeqCst), "still held after the closing timeout");
    }

    /// A block is reused once every chunk read into it is dropped; while
    /// chunks are held, fresh blocks are made (up to `READ_BLOCKS`), and a
    /// quiet read lets the spare ones go.
    #[test]
    fn read_blocks_reuse_freed_blocks_and_shrink_when_quiet() {
        let mut blocks = ReadBlocks::new();
        let fill = |b: &mut BytesMut, n: usize| {
            assert!(b.capacity() - b.len() >= READ_CHUNK_BYTES);
            b.extend_from_slice(&vec![1u8; n]);
            b.split()
        };
        let chunk = fill(blocks.next(), 40_000);
        let first = chunk.as_ptr();
        blocks.read(chunk.len());
        drop(chunk);
        // Freed: the same memory again, from its start.
        let chunk = fill(blocks.next(), 20_000);
        assert_eq!(chunk.as_ptr(), first);
        blocks.read(chunk.len());
        // Held: every later read gets a block of its own.
        let mut held = vec![chunk];
        for _ in 0..READ_BLOCKS + 3 {
            let c = fill(blocks.next(), 30_000);
            blocks.read(c.len());
            assert!(held.iter().all(|h| h.as_ptr() != c.as_ptr()));
            held.push(c);
        }
        assert_eq!(blocks.blocks.len(), READ_BLOCKS);
        held.clear();
        // One small read is not quiet yet; `QUIET_READS` in a row are, and
        // the path keeps one block.
        for k in 1..=QUIET_READS {
            let small = fill(blocks.next(), 100);
            blocks.read(small.len());
            assert_eq!(blocks.blocks.len(), if k < QUIET_READS { READ_BLOCKS } else { 1 }, "after {k} small reads");
        }
    }

    /// A writer that takes at most `max` bytes a call, gathered or not,
    /// and keeps what it took.
    struct Trickle {
        max: usize,
        got: Vec<u8>,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
            self.poll_write_vectored(cx, &[std::io::IoSlice::new(buf)])
        }
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let me = self.get_mut();
            me.calls += 1;
            let took = first_bytes(bufs, me.max);
            me.got.extend_from_slice(&took);
            std::task::Poll::Ready(Ok(took.len()))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Chunks, empty ones among them, through writes that stop anywhere:
    /// every byte once, in order; and in one write when it takes them all.
    #[tokio::test]
    async fn write_all_chunks_writes_every_byte_once_in_order() {
        let chunks = || vec![b"abc".to_vec(), Vec::new(), b"defgh".to_vec(), b"i".to_vec(), Vec::new()];
        let all = b"abcdefghi".to_vec();
        for max in 1..=all.len() {
            let mut out = Trickle { max, got: Vec::new(), calls: 0 };
            let mut batch = chunks();
            write_all_chunks(&mut out, &mut batch).await.unwrap();
            assert_eq!(out.got, all, "at most {max} bytes a write");
            assert_eq!(out.calls, all.len().div_ceil(max), "at most {max} bytes a write");
            assert!(batch.is_empty());
        }
        let mut out = Trickle { max: 1, got: Vec::new(), calls: 0 };
        write_all_chunks(&mut out, &mut vec![Vec::<u8>::new(), Vec::new()]).await.unwrap();
        assert_eq!(out.calls, 0, "nothing to write is no write");
    }

    /// The TLS inside a relayed route writes its records gathered: they
    /// go to the session as one send, not one per record.
    #[tokio::test]
    async fn a_gathered_write_into_a_local_stream_is_one_send() {
        let (commands, mut sent) = mpsc::unbounded_channel();
        let (_deliver, incoming) = mpsc::unbounded_channel();
        let mut local = LocalStream {
            stream: 4,
            commands,
            incoming,
            current: Bytes::new(),
            pos: 0,
            received_eof: false,
            credit: Arc::new(Semaphore::new(STREAM_READ_CREDIT_BYTES)),
            acquiring: None,
            sent_eof: false,
        };
        assert!(local.is_write_vectored());
        let slices = [std::io::IoSlice::new(b"first record "), std::io::IoSlice::new(b""), std::io::IoSlice::new(b"second")];
        assert_eq!(local.write_vectored(&slices).await.unwrap(), 19);
        match sent.try_recv() {
            Ok(Command::StreamBytes { stream: 4, bytes }) => assert_eq!(bytes, b"first record second"),
            _ => panic!("expected one StreamBytes"),
        }
        assert!(sent.try_recv().is_err(), "one send");
    }
}
