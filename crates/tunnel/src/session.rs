//! One tunnel session, client side or node side, as a state machine
//! (DESIGN §4; quinn-proto's shape): the driver feeds it the bytes each
//! connection delivered and `now`, and polls it for bytes to send, the next
//! timer and events. It never reads a clock or touches a socket, so tests
//! run two sessions against each other on virtual time.
//!
//! A session rides one or more *paths* (connections). Normally there is one;
//! port hopping attaches a second, switches to it make-before-break with an
//! in-band `PathSwitch` marker in each direction, then retires the first.
//! Because each path is reliable and ordered and the marker says where one
//! ends, no byte is lost or reordered and no stream notices.
//!
//! Payment (node side): every byte the node delivers, upstream to a
//! destination or downstream to the client, is metered. The node serves at
//! most `credit_window_bytes` beyond the newest valid receipt, then pauses
//! until the next one, and never a byte the channel's escrow cannot pay
//! for; receipts are checked with the ledger's own `check_receipt` against
//! the channel's escrow. Paused, it connects nothing new for the client,
//! and closes the session if no receipt comes within `unpaid_timeout` of
//! the client having received what makes one due (or, for a client that
//! answers none of the node's pings, an idle timeout after the ping
//! behind the pause).
//!
//! Payment (client side): the client meters every byte it receives and
//! sends, and signs a cumulative receipt every receipt interval. A node's
//! hello may say that the channel's earlier sessions left bytes unpaid
//! (`carried_bytes`, owed when a session was taken over or closed owing);
//! the client takes that word only as far as its own count of those
//! sessions goes ([`EarlierSessions`]), plus one credit window in all over
//! the sessions it remembers, and refuses a hello that claims more
//! (`BadHello`). Trusted up to the window on every session, a node could
//! claim a window each time the client reconnected and be paid for bytes
//! it never sent.

use crate::dest::{Dest, DestError};
use crate::frame;
use crate::frame::{
    encode_data, ClientHello, ErrorCode, Frame, FrameError, HelloSigned, Refusal, Resume,
    ServerHello, DATA_CHUNK_BYTES, OLDEST_PROTOCOL_VERSION_SERVED, PROTOCOL_VERSION,
};
use crate::policy::AnnouncedPolicy;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};
use tollway_ledger::state::Channel;
use tollway_ledger::{check_receipt, cost_of_bytes};
use tollway_types::amount::Usd;
use tollway_types::codec;
use tollway_types::keys::{self, AccountId, SigningKey};
use tollway_types::tx::{ChannelId, Receipt, SignedReceipt};

/// A connection's id, chosen by the driver.
pub type PathId = u64;
/// A stream's id within its session (opened by the client, from 1).
pub type StreamId = u32;

/// Streams a session carries at once unless told otherwise
/// ([`Limits::max_streams`]): what a client's program connections are
/// bounded by. 2,048, so that a client carries its 1,000 concurrent
/// streams (issue 5's memory figure) with its idle origins beside them.
pub const DEFAULT_MAX_STREAMS: u32 = 2048;

/// Limits and timers both sides share.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Bytes a peer may send on one stream before the receiver consumes them.
    pub stream_window_bytes: u32,
    pub max_streams: u32,
    /// Bytes a peer may send on all streams together before the receiver
    /// consumes them: what bounds a session's buffers when many streams go
    /// to destinations that do not read (`max_streams` × the stream window
    /// would be 2 GiB).
    pub session_window_bytes: u64,
    /// Bytes queued for a path before `send` stops accepting more.
    pub max_unsent_bytes: usize,
    pub handshake_timeout: Duration,
    /// Closed when nothing arrives for this long.
    pub idle_timeout: Duration,
    /// Extra paths (port hopping) beyond the first.
    pub max_extra_paths: usize,
    /// Client: how long an open waits for a stream to end when the session
    /// holds `max_streams` (the node's hello may set fewer than ours), before
    /// it is refused with `TooManyStreams`. A program with many connections
    /// (a browser, a download manager) then sees them wait their turn, not
    /// fail. Zero refuses at once. Node: how long an open waits for a
    /// stream the client has let go of and the node still holds (its
    /// destination has not taken the last of the upload) before it is
    /// refused with `Limit`.
    pub stream_slot_wait: Duration,
}

/// `Limits::stream_slot_wait` by default: as long as a route's connect and
/// handshake may take (`ClientOptions::handshake_timeout`) and as an exit
/// waits for a destination's connect (`node run`'s), so a connection that
/// waits for a slot fails no sooner than one that waits for its exit.
pub const DEFAULT_STREAM_SLOT_WAIT: Duration = Duration::from_secs(10);

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            // 2 MiB, not 512 KiB: with a window update every half window,
            // a bulk download through loopback sockets stalled on updates
            // (one hop ran about a sixth slower; scratch A/B).
            stream_window_bytes: 2 << 20,
            max_streams: DEFAULT_MAX_STREAMS,
            session_window_bytes: 8 << 20,
            max_unsent_bytes: 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_extra_paths: 2,
            stream_slot_wait: DEFAULT_STREAM_SLOT_WAIT,
        }
    }
}

/// A node's terms for every session (defaults from DESIGN §4).
#[derive(Clone, Debug)]
pub struct NodeTerms {
    pub chain_id: String,
    pub node: AccountId,
    pub price_usd_micro_per_gib: u64,
    pub receipt_interval_bytes: u64,
    pub credit_window_bytes: u64,
    /// A paused session is closed with `Unpaid` this long after the client
    /// was shown to owe a receipt it did not send (its pings kept the idle
    /// timeout from ever doing it). Counted from that showing, not from
    /// the pause: on a slow link an honest client may take minutes to
    /// receive the receipt interval that makes its receipt due.
    pub unpaid_timeout: Duration,
    pub limits: Limits,
    /// The exit policy as the hello announces it to clients of version 4
    /// on (`ExitPolicy::announced`; `NodeServer` sets it from the policy it
    /// enforces).
    pub exit_policy: AnnouncedPolicy,
}

/// DESIGN §4's defaults: a receipt every MiB, at most 2 MiB unpaid.
pub const DEFAULT_RECEIPT_INTERVAL_BYTES: u64 = 1 << 20;
pub const DEFAULT_CREDIT_WINDOW_BYTES: u64 = 2 << 20;

/// How long a node waits for a receipt once the client has received what
/// makes it due (the clock starts then, not at the pause: see
/// `Session::note_pause`): an honest client's comes before the node even
/// learns it is due; 30 s covers a route that roams or a relay whose own
/// session is paused meanwhile.
pub const DEFAULT_UNPAID_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a node stays paused before it queues a ping behind all it
/// delivered, whose pong shows the client has received it all. An honest
/// pause on a fast path ends within a round trip, with no ping.
pub const PAUSE_FENCE_AFTER: Duration = Duration::from_secs(1);

/// The shortest receipt interval a client accepts: each receipt is a
/// signature, and a node asking for one every few bytes would spend its
/// clients' CPU (at 64 KiB, 16,384 signatures per GiB).
pub const MIN_RECEIPT_INTERVAL_BYTES: u64 = 64 * 1024;

/// The largest credit window there is: what a node may leave unpaid, and
/// so what it may say an earlier session on the channel left unpaid
/// (`carried_bytes`), which the client's first receipt pays at once.
/// Without a bound, a node announced a window of gigabytes, said as much
/// was carried, and had the client sign for it having received nothing.
pub const MAX_CREDIT_WINDOW_BYTES: u64 = 64 << 20;

/// The largest windows a node's hello may set for a client (stream and
/// session): they bound what the client holds for programs that do not
/// read, so a node announcing more could fill the client's memory.
pub const MAX_STREAM_WINDOW_BYTES: u32 = 16 << 20;
pub const MAX_SESSION_WINDOW_BYTES: u64 = 64 << 20;

/// The rule for a node's payment terms, checked where the node starts
/// (`tollway node run`) and by the client in every hello: receipts not
/// absurdly often, one due before the credit runs out, and the credit
/// within [`MAX_CREDIT_WINDOW_BYTES`].
pub fn check_payment_terms(receipt_interval_bytes: u64, credit_window_bytes: u64) -> Result<(), String> {
    if receipt_interval_bytes < MIN_RECEIPT_INTERVAL_BYTES || receipt_interval_bytes >= credit_window_bytes {
        return Err(format!(
            "the receipt interval must be at least {} KiB and below the credit window",
            MIN_RECEIPT_INTERVAL_BYTES / 1024
        ));
    }
    if credit_window_bytes > MAX_CREDIT_WINDOW_BYTES {
        return Err(format!("the credit window may be at most {} MiB", MAX_CREDIT_WINDOW_BYTES >> 20));
    }
    Ok(())
}

/// The least price per GiB at which one receipt interval costs a
/// micro-dollar. Every receipt must pay more than the one before (the
/// ledger refuses one that does not as stale), and `cost_of_bytes` rounds
/// each up: below this price two receipts an interval apart could pay the
/// same, and at price 0 all of them do.
pub const fn min_price_usd_micro_per_gib(receipt_interval_bytes: u64) -> u64 {
    const GIB: u64 = 1 << 30;
    if receipt_interval_bytes == 0 {
        return GIB;
    }
    GIB.div_ceil(receipt_interval_bytes)
}

/// The same rule the other way: the shortest receipt interval that costs
/// a micro-dollar at `price_usd_micro_per_gib` (a node cheaper than
/// [`min_price_usd_micro_per_gib`] of the default interval must ask for
/// receipts at least this far apart).
pub const fn min_receipt_interval_bytes(price_usd_micro_per_gib: u64) -> u64 {
    const GIB: u64 = 1 << 30;
    if price_usd_micro_per_gib == 0 {
        return u64::MAX;
    }
    GIB.div_ceil(price_usd_micro_per_gib)
}

/// The least price per GiB any node can charge: the one at the longest
/// receipt interval there is (just below [`MAX_CREDIT_WINDOW_BYTES`]).
pub const MIN_PRICE_USD_MICRO_PER_GIB: u64 = min_price_usd_micro_per_gib(MAX_CREDIT_WINDOW_BYTES - 1);

/// The rule for a node's price against its receipt interval, checked by
/// `node run` once it has read its price from the chain and by the client
/// in every hello: one interval must cost at least a micro-dollar
/// ([`min_price_usd_micro_per_gib`]). Below that, the client's receipts
/// were refused as stale and the session stalled at the credit window.
pub fn check_price_terms(price_usd_micro_per_gib: u64, receipt_interval_bytes: u64) -> Result<(), String> {
    let min = min_price_usd_micro_per_gib(receipt_interval_bytes);
    if price_usd_micro_per_gib < min {
        return Err(format!(
            "at {price_usd_micro_per_gib} micro-USD per GiB a receipt interval of {} KiB costs less than a micro-dollar, \
             so receipts could not grow: at this interval the price must be at least {min} micro-USD per GiB",
            receipt_interval_bytes / 1024
        ));
    }
    Ok(())
}

impl NodeTerms {
    pub fn new(chain_id: String, node: AccountId, price_usd_micro_per_gib: u64) -> NodeTerms {
        NodeTerms {
            chain_id,
            node,
            price_usd_micro_per_gib,
            receipt_interval_bytes: DEFAULT_RECEIPT_INTERVAL_BYTES,
            credit_window_bytes: DEFAULT_CREDIT_WINDOW_BYTES,
            unpaid_timeout: DEFAULT_UNPAID_TIMEOUT,
            limits: Limits::default(),
            exit_policy: AnnouncedPolicy::default(),
        }
    }
}

/// What a client brings to a session.
#[derive(Clone, Debug)]
pub struct ClientTerms {
    pub chain_id: String,
    pub node: AccountId,
    pub channel: ChannelId,
    /// The channel's client key: signs the hello and every receipt.
    pub key: SigningKey,
    /// The channel's escrow: no receipt is signed beyond it.
    pub escrow: Usd,
    /// What the chain has settled on the channel (the client's own lookup):
    /// receipts continue from here, or from a newer receipt of ours that
    /// the node shows.
    pub settled_bytes: u64,
    pub settled_usd: Usd,
    /// The node's advertised price; a hello asking more is refused.
    pub max_price_usd_micro_per_gib: u64,
    pub limits: Limits,
    /// What this client's own earlier sessions on the channel counted:
    /// bounds what the node may say they left unpaid.
    pub earlier: EarlierSessions,
}

/// What a client's own earlier sessions on a channel counted, kept by the
/// client between sessions (`tollway_client`'s pool keeps it per channel
/// for the life of the process). A node's hello says what the channel's
/// earlier sessions delivered past their last receipt (`carried_bytes`);
/// the client takes that as far as its own count goes, and beyond it one
/// credit window in all ([`check_carried_bytes`]).
///
/// Honest disagreement exists: the bytes in flight when a connection died
/// were counted by the node but never reached the client (at most one
/// window), so the client cannot hold the node to its own count exactly.
/// Trusted up to the window on every session, a node could claim a window
/// each time, take the first receipt, close and wait for the reconnect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EarlierSessions {
    /// The channel's cumulative bytes, as the client's last session on it
    /// counted them when it ended ([`Session::cumulative_bytes`]); `None`
    /// if it has had none. Cumulative, not "unpaid": a receipt the node
    /// never got (lost with the connection) shows as a lower baseline in
    /// the next hello and more carried bytes, which this still matches.
    pub last_cumulative_bytes: Option<u64>,
    /// Of the carried bytes the client paid on earlier sessions, those
    /// beyond its own count ([`Session::carried_unseen_bytes`]): paid on
    /// the node's word.
    pub carried_unseen_bytes: u64,
}

/// The client's rule for a node's `carried_bytes`: of the bytes it says
/// the channel's earlier sessions left unpaid, those the client's own last
/// session had counted past the node's baseline (`base_bytes`, where the
/// session's receipts go on from) are owed; beyond that, the node's word is
/// taken for at most one credit window over all the sessions the client
/// remembers (`earlier.carried_unseen_bytes` of it taken already). A
/// channel with no earlier session the client knows of (a fresh process)
/// counts the whole claim as taken on the node's word: one window in all,
/// not one at every start plus one over the sessions after. Returns the
/// carried bytes beyond the client's own count, or why the claim is
/// refused, in words a user can act on.
pub fn check_carried_bytes(
    carried_bytes: u64,
    credit_window_bytes: u64,
    base_bytes: u64,
    earlier: &EarlierSessions,
) -> Result<u64, String> {
    let seen = earlier.last_cumulative_bytes.map_or(0, |c| c.saturating_sub(base_bytes));
    let unseen = carried_bytes.saturating_sub(seen);
    let allowance = credit_window_bytes.saturating_sub(earlier.carried_unseen_bytes);
    if unseen <= allowance {
        return Ok(unseen);
    }
    let this_client = match earlier.last_cumulative_bytes {
        Some(_) => format!("this client received {} past its last receipt", human_bytes(seen)),
        None => "this client has had no session on it before".to_string(),
    };
    Err(format!(
        "the node says {} were left unpaid on this channel, but {this_client} (and has already paid {} of such claims, \
         of the {} credit window it pays on a node's word)",
        human_bytes(carried_bytes),
        human_bytes(earlier.carried_unseen_bytes),
        human_bytes(credit_window_bytes)
    ))
}

/// `1.50 GiB`, `12.0 MiB`, `512 KiB`, `100 B`: three figures.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let decimals = if v < 10.0 { 2 } else if v < 100.0 { 1 } else { 0 };
    format!("{v:.decimals$} {}", UNITS[unit])
}

/// The ledger's view of a channel, as the node's driver looked it up.
#[derive(Clone, Debug)]
pub struct ChannelInfo {
    pub channel: Channel,
    /// The newest receipt this node holds for the channel (maybe unsettled).
    pub latest_receipt: Option<SignedReceipt>,
    /// Whether the channel has expired by the driver's clock.
    pub expired: bool,
    /// Bytes delivered beyond the newest receipt by the session this one
    /// takes over (0 if none): they are owed on this session.
    pub carried_bytes: u64,
}

/// What happened, for the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Node: look up this channel and call `handle_channel`.
    ChannelNeeded {
        channel: ChannelId,
        client: AccountId,
    },
    /// The handshake finished.
    Established,
    /// Node: the client asks for a stream to `dest`; answer with
    /// `accept_stream` or `refuse_stream`.
    OpenRequested {
        stream: StreamId,
        dest: Dest,
    },
    /// Client: the exit connected the stream.
    Opened {
        stream: StreamId,
    },
    /// Client: the exit could not.
    OpenFailed {
        stream: StreamId,
        code: ErrorCode,
    },
    /// Bytes for the stream's far end; call `consumed` once written.
    Data {
        stream: StreamId,
        /// Through `handle_input_owned`, a slice of the read that carried
        /// it when at least `ZERO_COPY_MIN_PAYLOAD_BYTES` long, else a copy.
        payload: Bytes,
    },
    /// `send` may accept more bytes on this stream now.
    Writable {
        stream: StreamId,
    },
    /// The peer will send no more on this stream.
    Finished {
        stream: StreamId,
    },
    /// The stream is gone: the peer reset it, or (the node) the session
    /// did, finished by the client and silent (`Idle`).
    Reset {
        stream: StreamId,
        code: ErrorCode,
    },
    /// Node: a receipt verified; keep it for settlement.
    ReceiptAccepted {
        receipt: SignedReceipt,
    },
    ReceiptRejected {
        code: String,
        message: String,
    },
    /// Client: signed and queued a receipt.
    ReceiptSent {
        cumulative_bytes: u64,
        cumulative_usd: Usd,
    },
    /// Node: unpaid bytes reached the credit window, or all the channel's
    /// escrow pays for was delivered; serving stopped. Client: the node
    /// said so (short of the window: it pays for all it received at once).
    Paused {
        unpaid_bytes: u64,
    },
    /// Client: the escrow is spent (all it pays for has arrived, or the
    /// node closed the session saying so); no more receipts are signed.
    EscrowExhausted,
    /// Client: the node's hello said the channel's earlier sessions left
    /// more unpaid than the client counted, beyond what it takes on a
    /// node's word ([`check_carried_bytes`]); `Closed` with `BadHello`
    /// follows. A node that does this is misbehaving, not down.
    CarriedRefused,
    Pong {
        nonce: u64,
        rtt: Duration,
    },
    /// A new path carries the session from now on.
    PathReady {
        path: PathId,
    },
    /// Everything on this path is flushed once `poll_transmit` has given
    /// its last bytes: close the connection.
    PathRetired {
        path: PathId,
    },
    /// The session is over; every stream is gone.
    Closed {
        code: ErrorCode,
        message: String,
        by_peer: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the session is not established")]
    NotEstablished,
    #[error("the session is closed")]
    Closed,
    #[error("no such stream {0}")]
    NoStream(StreamId),
    #[error("stream {0} is already finished for sending")]
    StreamFinished(StreamId),
    #[error("too many streams (limit {0})")]
    TooManyStreams(u32),
    #[error("a path switch is already under way")]
    MigrationPending,
    #[error("too many paths")]
    TooManyPaths,
    #[error("resume proof does not verify")]
    BadResumeProof,
    #[error("only the {0} side may do this")]
    WrongSide(&'static str),
    /// A destination the node's decoder would take for a protocol
    /// violation (port 0, a bad name): refused here, so that one program's
    /// request does not close the session and every stream on it.
    #[error("bad destination: {0}")]
    BadDest(#[from] DestError),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Data payloads at least this long are handed on as slices of the read
/// buffer; shorter ones are copied. A slice keeps its whole read buffer
/// (at most the driver's read size, 64 KiB) alive, so a peer sending small
/// frames in separate reads must not pin a buffer per frame: with this
/// floor, what a stream's window holds pins at most 8× its size.
const ZERO_COPY_MIN_PAYLOAD_BYTES: usize = crate::frame::MAX_DATA_PAYLOAD_BYTES / 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Client: hello sent. Node: waiting for the hello.
    Handshake,
    /// Node: hello verified, waiting for the driver's channel lookup.
    AwaitChannel,
    Established,
    Closed,
}

struct Path {
    id: PathId,
    inbuf: BytesMut,
    /// `inbuf` is a `FrameJoins` buffer, joining a frame split across reads.
    joining: bool,
    outbuf: Vec<u8>,
    binding: [u8; 32],
    /// Client: the node's ResumeOk has not arrived on this path yet.
    awaiting_resume_ok: bool,
    /// Client: when a path still awaiting its ResumeOk is given up.
    resume_deadline: Option<Instant>,
}

impl Path {
    /// A path with nothing read or queued yet.
    fn new(id: PathId, binding: [u8; 32]) -> Path {
        Path {
            id,
            inbuf: BytesMut::new(),
            joining: false,
            outbuf: Vec::new(),
            binding,
            awaiting_resume_ok: false,
            resume_deadline: None,
        }
    }
}

impl Stream {
    /// Node: what the sweep of streams the client has finished watches
    /// move. Before the node's `Fin`, the bytes it sent; after it, the
    /// upload its destination has taken (what is left of it falls).
    fn sweep_progress(&self) -> u64 {
        if self.fin_sent {
            u64::MAX - self.recv_unconsumed
        } else {
            self.sent_bytes
        }
    }

    /// Node: the upstream bytes it holds for a receipt.
    fn held_bytes(&self) -> u64 {
        self.held.iter().map(|b| b.len() as u64).sum()
    }
}

#[derive(Default)]
struct Stream {
    /// Bytes the peer lets us send.
    send_credit: u64,
    /// Bytes the peer may still send us before we announce more.
    recv_allowance: u64,
    /// Consumed bytes not yet announced with a `Window`.
    recv_unannounced: u64,
    /// Node: data held back while unpaid.
    held: VecDeque<Bytes>,
    fin_sent: bool,
    fin_received: bool,
    /// The peer's FIN arrived while data was held.
    fin_held: bool,
    /// Client: waiting for `Opened`.
    opening: bool,
    /// Node: the client asked for this destination while its session was
    /// paused, or while the node held `max_streams` streams some of which
    /// the client had let go of (`waits_for_slot`); the driver hears of it
    /// once a receipt resumes the session and a slot is free.
    open_held: Option<Dest>,
    /// Node: opened while the node held `max_streams` streams, some of
    /// them finished both ways and so no longer counted by the client,
    /// whose destinations had not yet taken the last of the upload
    /// (`Session::on_open`): it takes the next slot that frees.
    waits_for_slot: bool,
    /// Bytes received (held ones too) that the driver has not consumed:
    /// they count against the session's window until it does, so the
    /// stream is kept until then.
    recv_unconsumed: u64,
    /// When the stream's window was last announced, or its first bytes
    /// consumed (`WINDOW_ANNOUNCE_EVERY`).
    announced_at: Option<Instant>,
    /// Client: of the bytes received by the last receipt, those the
    /// driver had not consumed when the receipt's announcement went out;
    /// announced once consumed (`Session::consumed`).
    unconsumed_at_receipt: u64,
    /// Node: bytes sent on it to the client.
    sent_bytes: u64,
    /// Node: its `sweep_progress` at the last sweep of the streams the
    /// client has finished (`Session::sweep_half_closed`).
    progress_at_sweep: u64,
    /// Node: sweeps in a row that found it finished by the client with
    /// no progress.
    idle_sweeps: u8,
}

/// A window's unannounced bytes, now announced: they move to what the
/// peer may send, up to what one `Window` frame carries (a `u32`); how
/// many, if any.
fn announce(unannounced: &mut u64, allowance: &mut u64) -> Option<u32> {
    if *unannounced == 0 {
        return None;
    }
    let bytes = (*unannounced).min(u64::from(u32::MAX)) as u32;
    *unannounced -= u64::from(bytes);
    *allowance += u64::from(bytes);
    Some(bytes)
}

impl Stream {
    /// Its consumed bytes not yet announced, now announced (the peer may
    /// send that much more), unless the peer sent its FIN. `at` is when,
    /// for `WINDOW_ANNOUNCE_EVERY`.
    fn announce(&mut self, at: Option<Instant>) -> Option<u32> {
        if self.fin_received {
            return None;
        }
        let bytes = announce(&mut self.recv_unannounced, &mut self.recv_allowance)?;
        self.announced_at = at;
        Some(bytes)
    }
}

/// A stream this side reset (or, the node, refused) whose peer may still
/// have data on its way. The peer may send on it what the stream's window
/// allowed at the reset and no more: those bytes are counted (the peer
/// counted them when it sent them: the node as it delivered them, the
/// client as it sent them), anything beyond is a protocol violation.
/// Without the bound, data on any stream id the client did not know was
/// counted and paid, so a node sending on made-up streams drained the
/// escrow with no program asking for a byte; and the node dropped data on
/// any stream id it did not know, uncounted, so a client sending on
/// made-up streams had the node take upstream bytes for free, for good.
struct ResetStream {
    /// Bytes the peer may still send on the stream.
    allowance_bytes: u64,
    /// The nonce of the ping queued right behind the reset: its pong comes
    /// after everything the peer sent before it read the reset, so the
    /// stream is forgotten then.
    fence: u64,
}

/// The streams this side reset and their peer may still send on
/// (`ResetStream`), by stream and by fence: fences only grow, so the
/// oldest record, the one a full node forgets first, is the first by fence
/// (a scan of every record for it made each refusal past the limit cost
/// the node `max_streams` steps).
#[derive(Default)]
struct ResetStreams {
    by_stream: BTreeMap<StreamId, ResetStream>,
    by_fence: BTreeMap<u64, StreamId>,
}

impl ResetStreams {
    fn len(&self) -> usize {
        self.by_stream.len()
    }

    fn clear(&mut self) {
        self.by_stream.clear();
        self.by_fence.clear();
    }

    fn insert(&mut self, stream: StreamId, reset: ResetStream) {
        self.remove(stream);
        self.by_fence.insert(reset.fence, stream);
        self.by_stream.insert(stream, reset);
    }

    fn remove(&mut self, stream: StreamId) {
        if let Some(reset) = self.by_stream.remove(&stream) {
            self.by_fence.remove(&reset.fence);
        }
    }

    /// Takes `len` bytes from `stream`'s allowance, forgetting it once
    /// spent; false (and no change) if it is not remembered or allows less.
    fn take(&mut self, stream: StreamId, len: u64) -> bool {
        let Some(reset) = self.by_stream.get_mut(&stream).filter(|r| len <= r.allowance_bytes) else {
            return false;
        };
        reset.allowance_bytes -= len;
        if reset.allowance_bytes == 0 {
            self.remove(stream);
        }
        true
    }

    /// The peer answered the ping `nonce`: it read every reset queued
    /// before it, and sent everything it had on those streams.
    fn fenced(&mut self, nonce: u64) {
        let later = self.by_fence.split_off(&nonce.saturating_add(1));
        for stream in std::mem::replace(&mut self.by_fence, later).into_values() {
            self.by_stream.remove(&stream);
        }
    }

    /// Forgets the record whose ping left first.
    fn forget_oldest(&mut self) {
        if let Some((_, stream)) = self.by_fence.pop_first() {
            self.by_stream.remove(&stream);
        }
    }
}

/// A stream whose consumed bytes stay under half its window (a slow one: an
/// upload over a home uplink) still announces them this often. The
/// announcement is what the sender hears back while it sends: its health
/// checks count it as the peer being up when a ping's answer waits behind
/// the data in its own queue.
pub const WINDOW_ANNOUNCE_EVERY: Duration = Duration::from_millis(250);

/// The session's window over all its streams together (HTTP/2's and QUIC's
/// connection-level flow control). It reopens with `Window` frames for
/// stream 0, which announce bytes consumed on any stream; they are sent
/// apart from the per-stream ones, so many streams each holding less than
/// their own announcement threshold cannot starve the session.
struct SessionWindow {
    /// Bytes we may still send, on any stream.
    send_credit: u64,
    /// Bytes the peer may still send us.
    recv_allowance: u64,
    /// Bytes consumed (or dropped) and not yet announced.
    recv_unannounced: u64,
}

impl SessionWindow {
    fn new(window_bytes: u64) -> SessionWindow {
        SessionWindow { send_credit: window_bytes, recv_allowance: window_bytes, recv_unannounced: 0 }
    }

    /// Its released bytes not yet announced, now announced (a `Window`
    /// for stream 0).
    fn announce(&mut self) -> Option<u32> {
        announce(&mut self.recv_unannounced, &mut self.recv_allowance)
    }
}

struct Pay {
    price_usd_micro_per_gib: u64,
    receipt_interval_bytes: u64,
    credit_window_bytes: u64,
    /// Cumulative counters when the session began.
    base_bytes: u64,
    base_usd: Usd,
    /// The cumulative bytes the channel's escrow pays for at this price
    /// (the node's view of the escrow, or the client's).
    escrow_bytes: u64,
    /// Bytes metered this session (delivered by the node / seen by client).
    metered_bytes: u64,
    /// Newest cumulative bytes and USD paid for (node) or receipted (client).
    paid_bytes: u64,
    paid_usd: Usd,
    paused: bool,
    /// Node: the first `now` the session saw while paused (the pause
    /// itself may come in `send`, which has no clock).
    paused_since: Option<Instant>,
    /// Node: the nonce of the ping queued behind all it delivered, once
    /// paused for `PAUSE_FENCE_AFTER`: its pong shows the client has
    /// received every byte delivered before the pause.
    pause_fence: Option<u64>,
    /// Node: when the client was first shown to owe a receipt it has not
    /// sent, while paused: the unpaid timeout counts from here.
    overdue_since: Option<Instant>,
    /// Node: bytes it sent the client this session (downstream).
    downstream_bytes: u64,
    /// Node: what the client's window announcements say it consumed of
    /// them: its stream windows' announcements summed, and its session
    /// window's, kept apart as both count the same bytes.
    shown_stream_bytes: u64,
    shown_session_bytes: u64,
}

impl Pay {
    /// The session's payment state at its start, from the cumulative
    /// counters it goes on from and the channel's escrow.
    fn new(price_usd_micro_per_gib: u64, receipt_interval_bytes: u64, credit_window_bytes: u64, base: (u64, Usd), escrow: Usd) -> Pay {
        let (base_bytes, base_usd) = base;
        let left = escrow.saturating_sub(base_usd);
        Pay {
            price_usd_micro_per_gib,
            receipt_interval_bytes,
            credit_window_bytes,
            base_bytes,
            base_usd,
            escrow_bytes: base_bytes.saturating_add(bytes_bought(price_usd_micro_per_gib, left)),
            metered_bytes: 0,
            paid_bytes: base_bytes,
            paid_usd: base_usd,
            paused: false,
            paused_since: None,
            pause_fence: None,
            overdue_since: None,
            downstream_bytes: 0,
            shown_stream_bytes: 0,
            shown_session_bytes: 0,
        }
    }
    fn cumulative_bytes(&self) -> u64 {
        self.base_bytes + self.metered_bytes
    }
    /// Client: the cumulative count at which its next receipt is due: the
    /// first point past the newest receipt on a grid of receipt intervals
    /// from the session's base (`Session::sign_receipt`).
    fn receipt_due_bytes(&self) -> u64 {
        let interval = self.receipt_interval_bytes.max(1);
        let intervals_paid = self.paid_bytes.saturating_sub(self.base_bytes) / interval;
        self.base_bytes.saturating_add((intervals_paid + 1).saturating_mul(interval))
    }
    /// Node: bytes it may still deliver before a receipt: the credit window
    /// beyond the newest one, and never a byte the escrow cannot pay for.
    fn credit(&self) -> u64 {
        let limit = (self.paid_bytes + self.credit_window_bytes).min(self.escrow_bytes);
        limit.saturating_sub(self.cumulative_bytes())
    }
    /// What a receipt for `cumulative_bytes` pays: the session's base and
    /// its bytes beyond the base at the session's price.
    fn usd_for(&self, cumulative_bytes: u64) -> Usd {
        let owed = cost_of_bytes(self.price_usd_micro_per_gib, cumulative_bytes.saturating_sub(self.base_bytes));
        Usd(self.base_usd.0 + owed.0)
    }
    /// Node: the least cumulative count the client can have reached: all
    /// the node delivered but the downstream bytes the client has not yet
    /// shown, by its window announcements, that it consumed. (Upstream
    /// bytes the node delivered the client had sent; it counts both ways.)
    fn client_count_shown(&self) -> u64 {
        let shown = self.shown_stream_bytes.max(self.shown_session_bytes);
        self.cumulative_bytes().saturating_sub(self.downstream_bytes.saturating_sub(shown))
    }
    /// Everything the escrow pays for is delivered and paid: the channel
    /// can carry nothing more.
    fn escrow_spent(&self) -> bool {
        // Past the escrow only by upstream bytes dropped on streams the
        // node closed (counted as the client counted them, never served),
        // which the client's receipts stop short of.
        let delivered = self.cumulative_bytes();
        delivered >= self.escrow_bytes && self.paid_usd >= self.usd_for(delivered.min(self.escrow_bytes))
    }
}

/// What the client made of a node's hello.
enum HelloChecked {
    /// Go on from these cumulative counters (bytes, USD); of the hello's
    /// carried bytes, `carried_unseen_bytes` are beyond the client's count.
    Accepted { base: (u64, Usd), carried_unseen_bytes: u64 },
    /// The hello claims more carried bytes than the client takes on the
    /// node's word: why, for the user.
    CarriedRefused(String),
}

/// The most bytes `usd` pays for at `price_usd_micro_per_gib` by the
/// ledger's rule (`cost_of_bytes`, rounded up): the largest `b` with
/// `cost_of_bytes(price, b) <= usd`, so a node that serves no more than
/// this is paid for every byte. Unbounded at price 0.
pub fn bytes_bought(price_usd_micro_per_gib: u64, usd: Usd) -> u64 {
    const GIB: u128 = 1 << 30;
    // ceil(b * price / GIB) <= usd  <=>  b * price <= usd * GIB.
    match usd.0.saturating_mul(GIB).checked_div(u128::from(price_usd_micro_per_gib)) {
        Some(bytes) => u64::try_from(bytes).unwrap_or(u64::MAX),
        None => u64::MAX,
    }
}

enum Side {
    Client {
        terms: ClientTerms,
        next_stream: StreamId,
        escrow_exhausted: bool,
        /// Of the hello's carried bytes, those beyond the client's own
        /// count of its earlier sessions.
        carried_unseen_bytes: u64,
        /// What the node's hello announced of its exit policy.
        exit_policy: Option<AnnouncedPolicy>,
    },
    Node {
        terms: NodeTerms,
        session_id: [u8; 16],
        hello: Option<ClientHello>,
        channel: Option<Channel>,
    },
}

/// The tunnel session.
pub struct Session {
    side: Side,
    phase: Phase,
    limits: Limits,
    paths: Vec<Path>,
    /// Index into `paths` of the one we send on / parse from.
    send_path: usize,
    recv_path: usize,
    /// Whether we sent / got the PathSwitch for the path before the current.
    secret: [u8; 32],
    session_id: [u8; 16],
    streams: BTreeMap<StreamId, Stream>,
    /// Streams this side reset (the node: or refused) that the peer may
    /// not have finished sending on yet, until the peer's pong shows it
    /// read the reset. Client: they count against `max_streams` for its
    /// opens, so they stay as few as streams. Node: the client opens, so
    /// at most `max_streams` are kept, the oldest forgotten first
    /// (`remember_reset`).
    reset_streams: ResetStreams,
    /// Node: the opens that wait for a slot (`Stream::waits_for_slot`),
    /// oldest first, each with when it is refused after all
    /// (`Limits::stream_slot_wait`).
    opens_waiting_for_slot: VecDeque<(Instant, StreamId)>,
    blocked: BTreeSet<StreamId>,
    window: SessionWindow,
    pay: Option<Pay>,
    events: VecDeque<Event>,
    /// Paths both sides switched away from, with their last bytes.
    retired: Vec<(PathId, Vec<u8>)>,
    handshake_deadline: Instant,
    last_received: Instant,
    pings: BTreeMap<u64, Instant>,
    next_ping: u64,
    /// Node: when the streams the client has finished and the destination
    /// has not (no answer ended, or the upload not all taken) are next
    /// looked at (`sweep_half_closed`); none while there are none.
    half_closed_sweep_at: Option<Instant>,
    /// Buffers for frames split across two reads.
    joins: FrameJoins,
}

/// Largest frame on the wire: header and body.
const MAX_FRAME_BYTES: usize = frame::HEADER_BYTES + frame::MAX_BODY_BYTES;

/// Buffers that join a frame split across two reads, reused.
///
/// Why: a frame's bytes must be contiguous, so its head is copied out of
/// the first read's buffer and the rest appended; a data payload is then a
/// slice of that buffer until its stream's socket has taken it. A fresh
/// buffer per split frame (about one per 64 KiB read of a bulk transfer)
/// churned the allocator's heap top, and the kernel faulted and zeroed its
/// pages again each time. A buffer comes back once its slices are dropped
/// (`try_reclaim`); while all are held, fresh ones are made.
struct FrameJoins {
    buffers: Vec<BytesMut>,
}

impl FrameJoins {
    const MAX: usize = 4;

    /// An empty buffer with room for the largest frame.
    fn take(&mut self) -> BytesMut {
        // Kept buffers are empty views; one whose slices are all gone takes
        // the whole frame again without allocating.
        match self.buffers.iter_mut().position(|b| b.try_reclaim(MAX_FRAME_BYTES)) {
            Some(i) => self.buffers.swap_remove(i),
            None => BytesMut::with_capacity(MAX_FRAME_BYTES),
        }
    }

    /// Keeps an emptied join buffer (its slices may still be alive).
    fn give_back(&mut self, buf: BytesMut) {
        if self.buffers.len() < Self::MAX {
            self.buffers.push(buf);
        }
    }
}

/// The secret both ends derive from the first connection's channel
/// binding: keys resume proofs and the port hop schedule.
pub fn session_secret(binding: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key("tollway tunnel session secret v1", binding)
}

fn resume_proof(secret: &[u8; 32], binding: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(secret);
    h.update(b"tollway-resume\0");
    h.update(binding);
    *h.finalize().as_bytes()
}

fn hello_signing_bytes(
    version: u16,
    chain_id: &str,
    node: &AccountId,
    channel: &ChannelId,
    binding: &[u8; 32],
) -> Vec<u8> {
    codec::domain_bytes(
        b"tollway-tunnel-hello",
        &HelloSigned {
            version,
            chain_id,
            node,
            channel,
            binding,
        },
    )
}

impl Session {
    fn new(side: Side, limits: Limits, now: Instant, path: PathId, binding: [u8; 32]) -> Session {
        let window = SessionWindow::new(limits.session_window_bytes);
        Session {
            side,
            phase: Phase::Handshake,
            handshake_deadline: now + limits.handshake_timeout,
            limits,
            paths: vec![Path::new(path, binding)],
            send_path: 0,
            recv_path: 0,
            secret: session_secret(&binding),
            session_id: [0; 16],
            streams: BTreeMap::new(),
            reset_streams: ResetStreams::default(),
            opens_waiting_for_slot: VecDeque::new(),
            blocked: BTreeSet::new(),
            window,
            pay: None,
            events: VecDeque::new(),
            retired: Vec::new(),
            last_received: now,
            pings: BTreeMap::new(),
            next_ping: 1,
            half_closed_sweep_at: None,
            joins: FrameJoins { buffers: Vec::new() },
        }
    }

    /// A client session on a fresh connection whose TLS exporter gave
    /// `binding`; the hello is queued at once.
    pub fn client(terms: ClientTerms, now: Instant, path: PathId, binding: [u8; 32]) -> Session {
        let signature = terms.key.sign(&hello_signing_bytes(
            PROTOCOL_VERSION,
            &terms.chain_id,
            &terms.node,
            &terms.channel,
            &binding,
        ));
        let hello = ClientHello {
            version: PROTOCOL_VERSION,
            chain_id: terms.chain_id.clone(),
            node: terms.node,
            channel: terms.channel,
            client: terms.key.public(),
            signature,
        };
        let limits = terms.limits.clone();
        let mut s = Session::new(
            Side::Client {
                terms,
                next_stream: 1,
                escrow_exhausted: false,
                carried_unseen_bytes: 0,
                exit_policy: None,
            },
            limits,
            now,
            path,
            binding,
        );
        s.queue(&Frame::ClientHello(hello));
        s
    }

    /// A node session on a fresh connection; `session_id` is random, from
    /// the driver.
    pub fn node(
        terms: NodeTerms,
        now: Instant,
        path: PathId,
        binding: [u8; 32],
        session_id: [u8; 16],
    ) -> Session {
        let limits = terms.limits.clone();
        let mut s = Session::new(
            Side::Node {
                terms,
                session_id,
                hello: None,
                channel: None,
            },
            limits,
            now,
            path,
            binding,
        );
        s.session_id = session_id;
        s
    }

    pub fn is_established(&self) -> bool {
        self.phase == Phase::Established
    }
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }
    pub fn session_id(&self) -> [u8; 16] {
        self.session_id
    }
    /// The secret both ends derive from the first connection: keys the port
    /// hop schedule and resume proofs.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// A new stream's state: a full window each way.
    fn fresh_stream(&self) -> Stream {
        let window = u64::from(self.limits.stream_window_bytes);
        Stream { send_credit: window, recv_allowance: window, ..Stream::default() }
    }

    pub fn has_stream(&self, stream: StreamId) -> bool {
        self.streams.contains_key(&stream)
    }
    pub fn n_streams(&self) -> usize {
        self.streams.len()
    }

    /// Client: the session is established and holds as many streams as it
    /// may (those it reset count until the node has read the reset), so
    /// `open_stream` would refuse with `TooManyStreams`.
    pub fn streams_full(&self) -> bool {
        self.phase == Phase::Established
            && self.streams.len() + self.reset_streams.len() >= self.limits.max_streams as usize
    }

    /// The session's limits (a client's as the node's hello left them).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Client: what the node's hello announced of its exit policy (`None`
    /// before the hello, and from a node that announces none).
    pub fn exit_policy(&self) -> Option<&AnnouncedPolicy> {
        match &self.side {
            Side::Client { exit_policy, .. } => exit_policy.as_ref(),
            Side::Node { .. } => None,
        }
    }
    /// The newest path (where new bytes go once a switch completes).
    pub fn current_path(&self) -> PathId {
        self.paths[self.send_path].id
    }
    /// Node: bytes delivered beyond the newest valid receipt. Client:
    /// bytes received and sent (and carried bytes accepted) beyond the
    /// newest receipt it signed.
    pub fn unpaid_bytes(&self) -> u64 {
        self.pay
            .as_ref()
            .map_or(0, |p| p.cumulative_bytes().saturating_sub(p.paid_bytes))
    }
    /// Cumulative bytes metered on the channel, this session included
    /// (the carried bytes it accepted too). A client keeps its last
    /// session's figure for the next one's [`EarlierSessions`].
    pub fn cumulative_bytes(&self) -> u64 {
        self.pay.as_ref().map_or(0, Pay::cumulative_bytes)
    }
    /// Client: of the carried bytes the node's hello claimed, those beyond
    /// what the client's own earlier sessions counted (taken on the node's
    /// word, [`check_carried_bytes`]); 0 before the hello.
    pub fn carried_unseen_bytes(&self) -> u64 {
        match &self.side {
            Side::Client { carried_unseen_bytes, .. } => *carried_unseen_bytes,
            Side::Node { .. } => 0,
        }
    }

    fn path_index(&self, path: PathId) -> Option<usize> {
        self.paths.iter().position(|p| p.id == path)
    }

    fn queue(&mut self, frame: &Frame) {
        let i = self.send_path;
        frame.encode(&mut self.paths[i].outbuf);
    }

    /// Ends the session: tells the peer (best effort) and drops every stream.
    pub fn close(&mut self, code: ErrorCode, message: &str) {
        if self.phase == Phase::Closed {
            return;
        }
        let refusal = Refusal {
            code,
            message: message.to_string(),
        };
        let frame = if self.phase == Phase::Established {
            Frame::GoAway(refusal)
        } else {
            Frame::Refuse(refusal)
        };
        self.queue(&frame);
        self.finish_closed(code, message.to_string(), false);
    }

    fn finish_closed(&mut self, code: ErrorCode, message: String, by_peer: bool) {
        if let Side::Client { escrow_exhausted: exhausted @ false, .. } = &mut self.side {
            // The node knows the channel's escrow spent (its view may be
            // smaller than ours): the driver hears it as its own finding.
            if by_peer && code == ErrorCode::EscrowExhausted {
                *exhausted = true;
                self.events.push_back(Event::EscrowExhausted);
            }
        }
        self.phase = Phase::Closed;
        // Node: upstream bytes held for a receipt go with the streams, and
        // are counted, as when one stream goes (`remove_stream`): the
        // client counted them when it sent them, and the count at the
        // close is what the node carries into the client's next session.
        let held: u64 = self.streams.values().map(Stream::held_bytes).sum();
        self.meter_dropped(held);
        self.streams.clear();
        self.reset_streams.clear();
        self.opens_waiting_for_slot.clear();
        self.blocked.clear();
        self.events.push_back(Event::Closed {
            code,
            message,
            by_peer,
        });
    }

    fn violation(&mut self, message: String) {
        self.close(ErrorCode::Protocol, &message);
    }

    // ---- input ------------------------------------------------------------

    /// Bytes that arrived on `path`.
    pub fn handle_input(&mut self, now: Instant, path: PathId, bytes: &[u8]) {
        if self.phase == Phase::Closed {
            return;
        }
        let Some(index) = self.path_index(path) else {
            return;
        };
        self.last_received = now;
        self.note_pause(now);
        self.paths[index].inbuf.extend_from_slice(bytes);
        if index != self.recv_path && self.paths[index].inbuf.len() as u64 > self.unswitched_path_limit_bytes() {
            let held = self.paths[index].inbuf.len();
            return self.violation(format!("{held} bytes on a path not yet switched to, more than flow control lets a peer send"));
        }
        if self.paths[index].awaiting_resume_ok {
            self.take_resume_ok(index);
        }
        self.parse(now);
    }

    /// What a path that is not yet read (a port hop's new connection,
    /// before the peer's `PathSwitch` on the old one) may hold: the peer
    /// sends there no more data than the session window lets it have
    /// unacknowledged, plus frame headers and small control frames; twice
    /// the window and a MiB is far above that. Without a bound, a peer that
    /// never switched could fill the node's memory on a resumed path.
    fn unswitched_path_limit_bytes(&self) -> u64 {
        2 * self.limits.session_window_bytes + (1 << 20)
    }

    /// What the path we send on may hold before the peer is taken to read
    /// none of it: stream data stops at `max_unsent_bytes` (`send`), but
    /// answers to the peer's frames (a `Pong` to each `Ping`, an
    /// `OpenFailed` to each refused open) were queued without bound, so a
    /// peer that sent pings and never read grew our memory byte for byte
    /// with what it sent. A MiB of answers above the data is thousands of
    /// frames no honest peer leaves unread.
    fn answers_limit_bytes(&self) -> usize {
        self.limits.max_unsent_bytes + (1 << 20)
    }

    /// As [`Session::handle_input`], taking the read's buffer: data frames
    /// in it are handed on as slices of it (`Event::Data`), and a frame
    /// begun in an earlier read is completed with only the bytes it lacks.
    /// A bulk transfer's bytes are then copied once per frame at most
    /// instead of twice per byte.
    pub fn handle_input_owned(&mut self, now: Instant, path: PathId, bytes: Vec<u8>) {
        // No copy: the buffer is ours alone.
        self.handle_input_buf(now, path, BytesMut::from(Bytes::from(bytes)))
    }

    /// As [`Session::handle_input_owned`], with the read in a `BytesMut`
    /// (a driver that recycles its read buffers: the slices handed on keep
    /// the buffer from being reused until they are dropped).
    pub fn handle_input_buf(&mut self, now: Instant, path: PathId, bytes: BytesMut) {
        if self.phase == Phase::Closed {
            return;
        }
        let Some(index) = self.path_index(path) else {
            return;
        };
        if index != self.recv_path || self.paths[index].awaiting_resume_ok {
            return self.handle_input(now, path, &bytes);
        }
        self.last_received = now;
        self.note_pause(now);
        let mut rest = bytes;
        if !self.paths[index].inbuf.is_empty() && !self.paths[index].joining && !rest.is_empty() {
            // A frame begun in the last read: join it in a reused buffer
            // (which also lets go of the last read's buffer).
            let mut join = self.joins.take();
            join.extend_from_slice(&self.paths[index].inbuf);
            self.paths[index].inbuf = join;
            self.paths[index].joining = true;
        }
        while !self.paths[index].inbuf.is_empty() && !rest.is_empty() {
            let missing = frame::missing_bytes(&self.paths[index].inbuf);
            if missing == 0 {
                break;
            }
            let k = missing.min(rest.len());
            self.paths[index].inbuf.extend_from_slice(&rest[..k]);
            rest.advance(k);
            self.parse(now);
            if self.phase == Phase::Closed || self.recv_path != index {
                // Closed, or the path ended with a `PathSwitch`: what else
                // came on it is not read (as `handle_input` drops it).
                return;
            }
        }
        if rest.is_empty() {
            return;
        }
        if self.paths[index].inbuf.is_empty() {
            let done = std::mem::replace(&mut self.paths[index].inbuf, rest);
            if std::mem::take(&mut self.paths[index].joining) {
                self.joins.give_back(done);
            }
        } else {
            self.paths[index].inbuf.extend_from_slice(&rest);
        }
        self.parse(now);
    }

    /// Parses whole frames from the path being read, in order, following a
    /// `PathSwitch` to the next path.
    fn parse(&mut self, now: Instant) {
        loop {
            if self.phase == Phase::Closed {
                return;
            }
            let queued = self.paths[self.send_path].outbuf.len();
            if queued > self.answers_limit_bytes() {
                return self.violation(format!("{queued} bytes queued for a peer that reads none of them"));
            }
            let index = self.recv_path;
            if self.phase == Phase::Established {
                // Data frames leave the buffer as slices of it: no copy.
                match frame::split_data(&self.paths[index].inbuf) {
                    Ok(Some((stream, len))) => {
                        let inbuf = &mut self.paths[index].inbuf;
                        let payload = if len - frame::DATA_PAYLOAD_OFFSET >= ZERO_COPY_MIN_PAYLOAD_BYTES {
                            let mut payload = inbuf.split_to(len).freeze();
                            payload.advance(frame::DATA_PAYLOAD_OFFSET);
                            payload
                        } else {
                            let payload = Bytes::copy_from_slice(&inbuf[frame::DATA_PAYLOAD_OFFSET..len]);
                            inbuf.advance(len);
                            payload
                        };
                        self.on_data(stream, payload);
                        continue;
                    }
                    Ok(None) => {}
                    Err(FrameError::Incomplete) => return,
                    Err(e) => return self.violation(e.to_string()),
                }
            }
            match Frame::decode(&self.paths[index].inbuf) {
                Ok((Frame::PathSwitch, _)) => {
                    // Nothing more comes on this path; read the next one
                    // from its first buffered byte.
                    self.paths[index].inbuf.clear();
                    self.handle_frame(now, Frame::PathSwitch);
                }
                Ok((frame, used)) => {
                    self.paths[index].inbuf.advance(used);
                    self.handle_frame(now, frame);
                }
                Err(FrameError::Incomplete) => return,
                Err(e) => {
                    self.violation(e.to_string());
                    return;
                }
            }
        }
    }

    fn take_resume_ok(&mut self, index: usize) {
        match Frame::decode(&self.paths[index].inbuf) {
            Err(FrameError::Incomplete) => {}
            Ok((Frame::ResumeOk, used)) => {
                self.paths[index].inbuf.advance(used);
                self.paths[index].awaiting_resume_ok = false;
                // Make-before-break: the marker ends the old path, then
                // everything goes on the new one.
                self.queue(&Frame::PathSwitch);
                self.send_path = index;
                let path = self.paths[index].id;
                self.events.push_back(Event::PathReady { path });
                self.retire_done_paths();
            }
            Ok((Frame::Refuse(r), _)) => self.finish_closed(r.code, r.message, true),
            Ok((other, _)) => {
                self.violation(format!("expected resume ok on a new path, got {other:?}"))
            }
            Err(e) => self.violation(e.to_string()),
        }
    }

    fn handle_frame(&mut self, now: Instant, frame: Frame) {
        match (self.phase, frame) {
            (_, Frame::GoAway(r)) | (_, Frame::Refuse(r)) => {
                self.finish_closed(r.code, r.message, true)
            }
            (Phase::Handshake, Frame::ClientHello(hello)) => self.on_client_hello(hello),
            (Phase::Handshake, Frame::ServerHello(hello)) => self.on_server_hello(hello),
            (Phase::Handshake | Phase::AwaitChannel, other) => self.violation(format!(
                "{} before the handshake finished",
                other.name()
            )),
            (Phase::Established, frame) => self.on_established_frame(now, frame),
            (Phase::Closed, _) => {}
        }
    }

    fn on_client_hello(&mut self, hello: ClientHello) {
        let Side::Node { terms, .. } = &self.side else {
            return self.violation("a client hello sent to a client".into());
        };
        let signed = hello_signing_bytes(
            hello.version,
            &hello.chain_id,
            &hello.node,
            &hello.channel,
            &self.paths[0].binding,
        );
        let refusal = if !(OLDEST_PROTOCOL_VERSION_SERVED..=PROTOCOL_VERSION).contains(&hello.version) {
            let msg = format!(
                "protocol version {} is not spoken here (this node speaks {} to {})",
                hello.version, OLDEST_PROTOCOL_VERSION_SERVED, PROTOCOL_VERSION
            );
            Some((ErrorCode::Version, msg))
        } else if hello.node != terms.node || hello.chain_id != terms.chain_id {
            Some((
                ErrorCode::BadHello,
                format!(
                    "this is node {} on chain {:?}",
                    terms.node.short(),
                    terms.chain_id
                ),
            ))
        } else if keys::verify(&hello.client, &signed, &hello.signature).is_err() {
            Some((
                ErrorCode::BadHello,
                "the hello's signature does not verify for this TLS connection".to_string(),
            ))
        } else {
            None
        };
        if let Some((code, msg)) = refusal {
            return self.close(code, &msg);
        }
        let (channel, client) = (hello.channel, hello.client);
        if let Side::Node { hello: slot, .. } = &mut self.side {
            *slot = Some(hello);
        }
        self.phase = Phase::AwaitChannel;
        self.events
            .push_back(Event::ChannelNeeded { channel, client });
    }

    /// Node: the driver's answer to `ChannelNeeded`: the channel, or the
    /// code to refuse with (e.g. `NoChannel` when the chain has none).
    pub fn handle_channel(&mut self, now: Instant, info: Result<ChannelInfo, ErrorCode>) {
        if self.phase != Phase::AwaitChannel {
            return;
        }
        match self.accept_channel(info) {
            Ok((reply, pay)) => {
                self.pay = Some(pay);
                self.queue(&Frame::ServerHello(reply));
                self.phase = Phase::Established;
                self.last_received = now;
                self.events.push_back(Event::Established);
                // Carried bytes may use the whole credit: paused from the
                // start, not at a next metered byte that never comes.
                self.after_metering();
                self.note_pause(now);
            }
            Err((code, message)) => self.close(code, &message),
        }
    }

    fn accept_channel(
        &mut self,
        info: Result<ChannelInfo, ErrorCode>,
    ) -> Result<(ServerHello, Pay), (ErrorCode, String)> {
        let Side::Node {
            terms,
            session_id,
            hello: Some(hello),
            channel: slot,
        } = &mut self.side
        else {
            return Err((ErrorCode::Internal, "no hello".into()));
        };
        let info = info.map_err(|code| (code, code.describe().to_string()))?;
        let ch = &info.channel;
        if ch.client != hello.client || ch.node != terms.node {
            return Err((
                ErrorCode::NoChannel,
                "the channel is not between this client and this node".into(),
            ));
        }
        if info.expired {
            return Err((ErrorCode::NoChannel, "the channel has expired".into()));
        }
        // The cumulative counters go on from the newest of the chain's
        // settlement and the newest receipt this node holds. That receipt
        // goes to the client even when the chain has settled it already:
        // the client's own lookup of the chain may predate the settlement
        // (a node that settles every second), and its receipts would then
        // start below what is settled and be refused as stale.
        let (mut base_bytes, mut base_usd) = (ch.paid_bytes, ch.paid);
        let mut baseline = None;
        if let Some(r) = info
            .latest_receipt
            .filter(|r| r.receipt.channel == hello.channel && r.receipt.chain_id == terms.chain_id && r.verify(&ch.client).is_ok())
        {
            if r.receipt.cumulative_usd >= base_usd {
                base_bytes = base_bytes.max(r.receipt.cumulative_bytes);
                base_usd = r.receipt.cumulative_usd;
                baseline = Some(r);
            }
        }
        if base_usd >= ch.escrow {
            return Err((
                ErrorCode::EscrowExhausted,
                ErrorCode::EscrowExhausted.describe().into(),
            ));
        }
        // The credit is what the escrow can still pay for, too: a channel
        // of a micro-dollar got the whole window on every session.
        let left = ch.escrow.saturating_sub(base_usd);
        if bytes_bought(terms.price_usd_micro_per_gib, left) < terms.receipt_interval_bytes {
            let msg = format!(
                "the channel's escrow has {left} left, less than one receipt interval ({} KiB) costs here: open a new channel",
                terms.receipt_interval_bytes / 1024
            );
            return Err((ErrorCode::EscrowExhausted, msg));
        }
        // What the session taken over delivered unpaid stays owed: a client
        // that opens session after session gets one credit window in all.
        let carried_bytes = info.carried_bytes.min(terms.credit_window_bytes);
        let reply = ServerHello {
            // A client of an older version is answered in its own.
            version: hello.version,
            session_id: *session_id,
            price_usd_micro_per_gib: terms.price_usd_micro_per_gib,
            receipt_interval_bytes: terms.receipt_interval_bytes,
            credit_window_bytes: terms.credit_window_bytes,
            stream_window_bytes: terms.limits.stream_window_bytes,
            max_streams: terms.limits.max_streams,
            session_window_bytes: terms.limits.session_window_bytes,
            baseline,
            carried_bytes,
            exit_policy: (hello.version >= 4).then(|| terms.exit_policy.clone()),
        };
        let pay = Pay {
            metered_bytes: carried_bytes,
            ..Pay::new(
                terms.price_usd_micro_per_gib,
                terms.receipt_interval_bytes,
                terms.credit_window_bytes,
                (base_bytes, base_usd),
                ch.escrow,
            )
        };
        let mut view = ch.clone();
        view.paid = base_usd;
        view.paid_bytes = base_bytes;
        *slot = Some(view);
        Ok((reply, pay))
    }

    fn on_server_hello(&mut self, hello: ServerHello) {
        match self.check_server_hello(&hello) {
            Ok(HelloChecked::Accepted { base: (base_bytes, base_usd), carried_unseen_bytes: unseen }) => {
                if let Side::Client { carried_unseen_bytes, exit_policy, .. } = &mut self.side {
                    *carried_unseen_bytes = unseen;
                    *exit_policy = hello.exit_policy.clone();
                }
                self.session_id = hello.session_id;
                self.limits.stream_window_bytes = hello.stream_window_bytes;
                self.limits.max_streams = self.limits.max_streams.min(hello.max_streams);
                self.limits.session_window_bytes = hello.session_window_bytes;
                self.window = SessionWindow::new(hello.session_window_bytes);
                let escrow = match &self.side {
                    Side::Client { terms, .. } => terms.escrow,
                    Side::Node { .. } => Usd::ZERO,
                };
                self.pay = Some(Pay {
                    metered_bytes: hello.carried_bytes,
                    ..Pay::new(
                        hello.price_usd_micro_per_gib,
                        hello.receipt_interval_bytes,
                        hello.credit_window_bytes,
                        (base_bytes, base_usd),
                        escrow,
                    )
                });
                self.phase = Phase::Established;
                self.events.push_back(Event::Established);
                // Carried bytes may make a receipt due at once: the node
                // serves nothing more until it comes.
                self.after_metering();
            }
            Ok(HelloChecked::CarriedRefused(message)) => {
                self.events.push_back(Event::CarriedRefused);
                self.close(ErrorCode::BadHello, &message);
            }
            Err((code, message)) => self.close(code, &message),
        }
    }

    /// Client: whether the node's hello is one to go on with, and from
    /// which cumulative counters; its carried bytes are checked last, once
    /// the baseline they count from is known.
    fn check_server_hello(&self, hello: &ServerHello) -> Result<HelloChecked, (ErrorCode, String)> {
        let (base_bytes, base_usd) = self.check_server_hello_terms(hello)?;
        let Side::Client { terms, .. } = &self.side else {
            return Err((ErrorCode::Protocol, "a server hello sent to a node".into()));
        };
        Ok(match check_carried_bytes(hello.carried_bytes, hello.credit_window_bytes, base_bytes, &terms.earlier) {
            Ok(carried_unseen_bytes) => HelloChecked::Accepted { base: (base_bytes, base_usd), carried_unseen_bytes },
            Err(message) => HelloChecked::CarriedRefused(message),
        })
    }

    fn check_server_hello_terms(&self, hello: &ServerHello) -> Result<(u64, Usd), (ErrorCode, String)> {
        let Side::Client { terms, .. } = &self.side else {
            return Err((ErrorCode::Protocol, "a server hello sent to a node".into()));
        };
        if hello.version != PROTOCOL_VERSION {
            return Err((
                ErrorCode::Version,
                format!("the node speaks protocol version {}", hello.version),
            ));
        }
        if hello.price_usd_micro_per_gib > terms.max_price_usd_micro_per_gib {
            let msg = format!(
                "the node asks {} micro-USD per GiB, more than the {} it advertises",
                hello.price_usd_micro_per_gib, terms.max_price_usd_micro_per_gib
            );
            return Err((ErrorCode::BadHello, msg));
        }
        if hello.session_window_bytes < u64::from(hello.stream_window_bytes) {
            return Err((
                ErrorCode::Protocol,
                "the session window must hold at least one stream window".into(),
            ));
        }
        if hello.stream_window_bytes > MAX_STREAM_WINDOW_BYTES || hello.session_window_bytes > MAX_SESSION_WINDOW_BYTES {
            let msg = format!(
                "the node's windows ({} B a stream, {} B a session) are above what a client holds ({} MiB, {} MiB)",
                hello.stream_window_bytes,
                hello.session_window_bytes,
                MAX_STREAM_WINDOW_BYTES >> 20,
                MAX_SESSION_WINDOW_BYTES >> 20
            );
            return Err((ErrorCode::BadHello, msg));
        }
        check_payment_terms(hello.receipt_interval_bytes, hello.credit_window_bytes)
            .and_then(|()| check_price_terms(hello.price_usd_micro_per_gib, hello.receipt_interval_bytes))
            .map_err(|why| (ErrorCode::Protocol, why))?;
        if hello.carried_bytes > hello.credit_window_bytes {
            return Err((
                ErrorCode::BadHello,
                format!(
                    "the node says {} bytes were left unpaid, more than its {}-byte credit window",
                    hello.carried_bytes, hello.credit_window_bytes
                ),
            ));
        }
        let settled = (terms.settled_bytes, terms.settled_usd);
        match &hello.baseline {
            None => Ok(settled),
            // A baseline the client did not sign would let a node charge
            // for bytes nobody carried; one from another chain (the same
            // key and nonce give the same channel id on a testnet) would
            // go on from that chain's sums.
            Some(r)
                if r.receipt.channel != terms.channel
                    || r.receipt.chain_id != terms.chain_id
                    || r.verify(&terms.key.public()).is_err() =>
            {
                Err((
                    ErrorCode::BadHello,
                    "the node's baseline receipt is not ours".into(),
                ))
            }
            Some(r) if r.receipt.cumulative_usd <= settled.1 => Ok(settled),
            Some(r) => Ok((
                r.receipt.cumulative_bytes.max(settled.0),
                r.receipt.cumulative_usd,
            )),
        }
    }

    fn is_node(&self) -> bool {
        matches!(self.side, Side::Node { .. })
    }

    fn on_established_frame(&mut self, now: Instant, frame: Frame) {
        let is_node = self.is_node();
        match frame {
            Frame::Data { stream, payload } => self.on_data(stream, Bytes::from(payload)),
            Frame::Window { stream: 0, bytes } => {
                self.window.send_credit = self.window.send_credit.saturating_add(u64::from(bytes));
                // Every stream that waited may go on (those still short of
                // their own credit block again).
                for stream in std::mem::take(&mut self.blocked) {
                    self.events.push_back(Event::Writable { stream });
                }
                if let Some(pay) = self.pay.as_mut().filter(|_| is_node) {
                    pay.shown_session_bytes = pay.shown_session_bytes.saturating_add(u64::from(bytes));
                    self.note_pause(now);
                }
            }
            Frame::Window { stream, bytes } => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.send_credit = s.send_credit.saturating_add(u64::from(bytes));
                    if self.blocked.remove(&stream) {
                        self.events.push_back(Event::Writable { stream });
                    }
                }
                // A stream gone since counts too: the client consumed them.
                if let Some(pay) = self.pay.as_mut().filter(|_| is_node) {
                    pay.shown_stream_bytes = pay.shown_stream_bytes.saturating_add(u64::from(bytes));
                    self.note_pause(now);
                }
            }
            Frame::Fin { stream } => self.on_fin(now, stream),
            Frame::Reset { stream, code } => {
                // The peer sends nothing on a stream after its reset.
                self.reset_streams.remove(stream);
                // (The driver never heard of an open still held.)
                let told = self.streams.get(&stream).is_some_and(|s| s.open_held.is_none());
                if self.remove_stream(stream) && told {
                    self.events.push_back(Event::Reset { stream, code });
                }
            }
            Frame::Open { stream, dest } if is_node => self.on_open(now, stream, dest),
            Frame::Opened { stream } if !is_node => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.opening = false;
                    self.events.push_back(Event::Opened { stream });
                }
            }
            Frame::OpenFailed { stream, code } if !is_node => {
                if self.remove_stream(stream) {
                    self.events.push_back(Event::OpenFailed { stream, code });
                }
            }
            Frame::Receipt(r) if is_node => self.on_receipt(r),
            Frame::ReceiptAccepted { .. } if !is_node => {}
            Frame::ReceiptRejected { code, message } if !is_node => self
                .events
                .push_back(Event::ReceiptRejected { code, message }),
            Frame::Paused { unpaid_bytes } if !is_node => {
                self.events.push_back(Event::Paused { unpaid_bytes });
                // Paused short of its credit window: the node will serve
                // nothing more that the channel's escrow (as it knows it)
                // could not pay for. Pay for all it served: no receipt
                // interval would ever complete.
                if self.pay.as_ref().is_some_and(|p| unpaid_bytes < p.credit_window_bytes) {
                    self.sign_receipt(true);
                }
            }
            Frame::Ping { nonce } => self.queue(&Frame::Pong { nonce }),
            Frame::Pong { nonce } => {
                // Node: the pong to the ping behind its pause: the client
                // has received all that was delivered before it, and a
                // receipt it owes would have come before this pong.
                if let Some(pay) = self.pay.as_mut().filter(|p| is_node && p.paused && p.pause_fence == Some(nonce)) {
                    pay.overdue_since.get_or_insert(now);
                }
                // The peer read every reset queued before this ping, and
                // sent everything it had on those streams before its pong.
                self.reset_streams.fenced(nonce);
                if let Some(sent) = self.pings.remove(&nonce) {
                    self.events.push_back(Event::Pong {
                        nonce,
                        rtt: now.saturating_duration_since(sent),
                    });
                }
            }
            Frame::PathSwitch => self.on_path_switch(),
            other => self.violation(format!("unexpected {} frame", other.name())),
        }
    }

    fn on_open(&mut self, now: Instant, stream: StreamId, dest: Dest) {
        if self.streams.contains_key(&stream) {
            return self.violation(format!("stream {stream} opened twice"));
        }
        // A stream id reused: the client sent nothing more on the old one.
        self.reset_streams.remove(stream);
        let max_streams = self.limits.max_streams as usize;
        let wait = self.limits.stream_slot_wait;
        // Counted only at the limit (rare), so no count is kept: streams
        // both ends have finished, which the node still holds until the
        // destination has taken the last of the upload, and the client may
        // have let go of.
        let finished_both_ways = || self.streams.values().filter(|s| s.fin_sent && s.fin_received).count();
        if self.streams.len() >= max_streams && !wait.is_zero() && self.streams.len() - finished_both_ways() < max_streams {
            // The client let go of a stream once both ends had finished it
            // and its program had read all; the node holds it until its
            // destination has taken the last of the upload. So an honest
            // client at the limit may open before the node's slot frees:
            // the open waits for it (ADR 0008), unseen by the driver, as an
            // open past the limit waits in the client's driver, and as long.
            // The node still connects no more than `max_streams`, and holds
            // no more waiting opens than streams the client let go of.
            self.streams.insert(stream, Stream { open_held: Some(dest), waits_for_slot: true, ..self.fresh_stream() });
            self.opens_waiting_for_slot.push_back((now + wait, stream));
            return;
        }
        if self.streams.len() >= max_streams {
            self.queue(&Frame::OpenFailed {
                stream,
                code: ErrorCode::Limit,
            });
            // The client may send on it before it reads the refusal (an
            // honest one too: the node may still hold a stream the client
            // forgot, whose last bytes its destination has not taken).
            self.remember_reset(stream, u64::from(self.limits.stream_window_bytes));
            return;
        }
        // Paused, the node connects nowhere for the client until it pays:
        // the open waits for the receipt (an honest one is a round trip
        // away, and refusing would fail a program's connection at every
        // pause of a download) or ends with the session.
        let paused = self.pay.as_ref().is_some_and(|p| p.paused);
        self.streams.insert(stream, Stream { open_held: paused.then(|| dest.clone()), ..self.fresh_stream() });
        if !paused {
            self.events.push_back(Event::OpenRequested { stream, dest });
        }
    }

    fn on_data(&mut self, stream: StreamId, payload: Bytes) {
        let is_node = self.is_node();
        let len = payload.len() as u64;
        if len > self.window.recv_allowance {
            return self.violation(format!("stream {stream} sent past the session's window"));
        }
        self.window.recv_allowance -= len;
        let Some(s) = self.streams.get_mut(&stream) else {
            // A stream we reset (the node: or refused) may still have
            // bytes in flight: dropped here, so the session's window
            // reopens for them at once. They are counted, as the peer
            // counted them: the node when it sent them (a client behind
            // the node's count waits for bytes while the node waits for a
            // receipt, for good), the client when it sent them (so the
            // node charges for them: the two counts stay one, and a client
            // pays for an upload its destination hung up on, as for one
            // the exit could not deliver). Only up to what the stream's
            // window allowed at the reset, and only until the peer's pong
            // shows it read the reset: a node sending on streams that do
            // not exist would be paid for them, and a client sending on
            // them would have the node take its bytes for free.
            if !self.reset_streams.take(stream, len) {
                return self.violation(format!(
                    "{len} bytes on stream {stream}, which is not open (never opened, ended, or reset or refused with less window left)"
                ));
            }
            if let Some(pay) = self.pay.as_mut() {
                pay.metered_bytes += len;
            }
            self.release(len);
            self.after_metering();
            return;
        };
        if s.fin_received || len > s.recv_allowance {
            return self.violation(format!("stream {stream} sent past its window or its end"));
        }
        s.recv_allowance -= len;
        if payload.is_empty() {
            return;
        }
        s.recv_unconsumed += len;
        let Some(pay) = self.pay.as_mut() else { return };
        if is_node && (!s.held.is_empty() || s.open_held.is_some() || pay.credit() < len) {
            // Node: deliver upstream bytes only within the credit window,
            // and only on a stream the driver has heard of.
            s.held.push_back(payload);
            self.release_held(stream);
            return;
        }
        pay.metered_bytes += len;
        self.events.push_back(Event::Data { stream, payload });
        self.after_metering();
    }

    /// Node: delivers as much held upstream data of `stream` as credit allows.
    fn release_held(&mut self, stream: StreamId) {
        let Some(s) = self.streams.get_mut(&stream).filter(|s| s.open_held.is_none()) else {
            return;
        };
        let Some(pay) = self.pay.as_mut() else { return };
        while let Some(mut chunk) = s.held.pop_front() {
            let credit = pay.credit();
            if credit == 0 {
                s.held.push_front(chunk);
                break;
            }
            if (chunk.len() as u64) > credit {
                let rest = chunk.split_off(credit as usize);
                s.held.push_front(rest);
            }
            pay.metered_bytes += chunk.len() as u64;
            self.events.push_back(Event::Data {
                stream,
                payload: chunk,
            });
        }
        if s.held.is_empty() && s.fin_held {
            s.fin_held = false;
            self.events.push_back(Event::Finished { stream });
        }
        self.after_metering();
    }

    fn on_fin(&mut self, now: Instant, stream: StreamId) {
        let is_node = self.is_node();
        let Some(s) = self.streams.get_mut(&stream) else {
            // The peer sends nothing on a stream after its end.
            self.reset_streams.remove(stream);
            return;
        };
        if s.fin_received {
            return self.violation(format!("stream {stream} finished twice"));
        }
        s.fin_received = true;
        if is_node {
            // Until the node's `Fin` (a destination that never answers),
            // or after it until its destination has taken the upload (one
            // that never reads it): the client may have let go of such a
            // stream, and the node's slot must not be held for ever.
            s.progress_at_sweep = s.sweep_progress();
            self.half_closed_sweep_at.get_or_insert(now + self.limits.idle_timeout);
        }
        if s.held.is_empty() && s.open_held.is_none() {
            self.events.push_back(Event::Finished { stream });
        } else {
            s.fin_held = true;
        }
        self.gc_stream(stream);
    }

    fn gc_stream(&mut self, stream: StreamId) {
        if let Some(s) = self.streams.get(&stream) {
            if s.fin_sent && s.fin_received && !s.fin_held && s.recv_unconsumed == 0 {
                self.remove_stream(stream);
            }
        }
    }

    /// Forgets `stream`; what it received and nobody consumed is dropped,
    /// so it goes back to the session's window. False if it was unknown.
    fn remove_stream(&mut self, stream: StreamId) -> bool {
        let Some(s) = self.streams.remove(&stream) else {
            return false;
        };
        if s.waits_for_slot {
            self.opens_waiting_for_slot.retain(|&(_, waiting)| waiting != stream);
        }
        self.blocked.remove(&stream);
        self.release(s.recv_unconsumed);
        // Node: upstream bytes held for a receipt are dropped with the
        // stream, and counted: the client counted them when it sent them
        // (as for bytes that arrive after a reset, `on_data`).
        if self.meter_dropped(s.held_bytes()) {
            self.after_metering();
        }
        self.open_waiting_for_slot();
        true
    }

    /// Node: a stream is gone; the oldest open waiting for a slot takes
    /// it, if the node now holds fewer than `max_streams` others. Paused,
    /// it waits on for the receipt (`resume_paid`).
    fn open_waiting_for_slot(&mut self) {
        if self.opens_waiting_for_slot.is_empty() || self.phase != Phase::Established {
            return;
        }
        let holding = self.streams.len() - self.opens_waiting_for_slot.len();
        if holding >= self.limits.max_streams as usize {
            return;
        }
        let Some((_, stream)) = self.opens_waiting_for_slot.pop_front() else { return };
        let paused = self.pay.as_ref().is_some_and(|p| p.paused);
        let Some(s) = self.streams.get_mut(&stream) else { return };
        s.waits_for_slot = false;
        if paused {
            return;
        }
        // The open goes to the driver before its data.
        if let Some(dest) = s.open_held.take() {
            self.events.push_back(Event::OpenRequested { stream, dest });
        }
        self.release_held(stream);
    }

    /// Node: the opens that waited for a slot until `now` in vain are
    /// refused with `Limit` after all (a destination that never takes the
    /// rest of an upload keeps its stream until the sweep resets it,
    /// `sweep_half_closed`).
    fn refuse_waited_opens(&mut self, now: Instant) {
        while let Some(&(_, stream)) = self.opens_waiting_for_slot.front().filter(|&&(until, _)| until <= now) {
            self.opens_waiting_for_slot.pop_front();
            if let Some(s) = self.streams.get_mut(&stream) {
                s.waits_for_slot = false;
            }
            self.refuse_stream(stream, ErrorCode::Limit);
        }
    }

    /// Node: counts `bytes` of upstream data it dropped unread, as the
    /// client counted them when it sent them; whether there were any.
    fn meter_dropped(&mut self, bytes: u64) -> bool {
        if bytes == 0 {
            return false;
        }
        if let Some(pay) = self.pay.as_mut() {
            pay.metered_bytes += bytes;
        }
        true
    }

    /// `stream` was just reset (or refused) on our side while the peer may
    /// still be sending on it, `allowance_bytes` at most: remembered, with
    /// a ping queued right behind the frame that ended it, until the
    /// peer's pong (which follows all it sent before it read that frame)
    /// or its allowance is used up. Client: its resets come from its own
    /// streams, which count against `max_streams` with these, so this
    /// keeps no more. Node: the client opens, so at most `max_streams` are
    /// kept: past that, the one whose ping left first (whose pong an
    /// honest client has most likely sent) is forgotten, and data on it is
    /// then a violation. An honest client's stay a round trip, one per
    /// stream it held or opened past the limit.
    fn remember_reset(&mut self, stream: StreamId, allowance_bytes: u64) {
        if allowance_bytes == 0 || self.phase != Phase::Established {
            return;
        }
        let fence = self.next_ping;
        self.next_ping += 1;
        self.queue(&Frame::Ping { nonce: fence });
        if self.reset_streams.len() >= self.limits.max_streams as usize {
            self.reset_streams.forget_oldest();
        }
        self.reset_streams.insert(stream, ResetStream { allowance_bytes, fence });
    }

    /// `n` received bytes left the session's buffers: announce them to the
    /// peer once a quarter of the session's window has gathered (half, for
    /// a paying client, which announces with its receipts:
    /// `announce_with_receipt`).
    fn release(&mut self, n: u64) {
        self.window.recv_unannounced += n;
        let share = if self.announces_with_receipts() { 2 } else { 4 };
        let threshold = (self.limits.session_window_bytes / share).max(1);
        if self.window.recv_unannounced >= threshold && self.phase == Phase::Established {
            if let Some(bytes) = self.window.announce() {
                self.queue(&Frame::Window { stream: 0, bytes });
            }
        }
    }

    fn on_receipt(&mut self, receipt: SignedReceipt) {
        match self.check_session_receipt(&receipt) {
            Ok(()) => {
                let r = &receipt.receipt;
                if let Side::Node {
                    channel: Some(view),
                    ..
                } = &mut self.side
                {
                    view.paid = r.cumulative_usd;
                    view.paid_bytes = r.cumulative_bytes;
                }
                if let Some(pay) = self.pay.as_mut() {
                    pay.paid_bytes = r.cumulative_bytes;
                    pay.paid_usd = r.cumulative_usd;
                }
                self.queue(&Frame::ReceiptAccepted {
                    cumulative_bytes: r.cumulative_bytes,
                });
                self.events.push_back(Event::ReceiptAccepted { receipt });
                self.resume_paid();
            }
            Err((code, message)) => {
                self.queue(&Frame::ReceiptRejected {
                    code: code.clone(),
                    message: message.clone(),
                });
                self.events
                    .push_back(Event::ReceiptRejected { code, message });
            }
        }
    }

    /// Node: the ledger's own check against the channel (with the newest
    /// accepted receipt as "settled", so a replay is stale), then that the
    /// receipt pays this session's bytes at this session's price.
    fn check_session_receipt(&self, receipt: &SignedReceipt) -> Result<(), (String, String)> {
        let (
            Side::Node {
                terms,
                channel: Some(view),
                hello: Some(hello),
                ..
            },
            Some(pay),
        ) = (&self.side, &self.pay)
        else {
            return Err(("not_established".into(), "no channel yet".into()));
        };
        let r = &receipt.receipt;
        if r.channel != hello.channel {
            return Err((
                "wrong_channel".into(),
                format!(
                    "the receipt is for channel {}, not {}",
                    r.channel, hello.channel
                ),
            ));
        }
        check_receipt(&terms.chain_id, view, receipt)
            .map_err(|e| (e.code().to_string(), e.to_string()))?;
        let bytes = r.cumulative_bytes.saturating_sub(pay.base_bytes);
        let owed = cost_of_bytes(pay.price_usd_micro_per_gib, bytes);
        let paid = r.cumulative_usd.saturating_sub(pay.base_usd);
        if paid < owed {
            return Err((
                "underpaid".into(),
                format!(
                    "{bytes} bytes cost {owed} USD at this node's price; the receipt pays {paid}"
                ),
            ));
        }
        Ok(())
    }

    /// Node: a receipt arrived; deliver what waited and wake senders.
    fn resume_paid(&mut self) {
        if let Some(pay) = self.pay.as_mut() {
            if pay.credit() > 0 {
                pay.paused = false;
                pay.paused_since = None;
                pay.pause_fence = None;
                pay.overdue_since = None;
            } else if pay.paused {
                // Still paused: at the escrow's end. Spent and paid, the
                // session is over; else the client hears what it owes.
                if pay.escrow_spent() {
                    return self.close(ErrorCode::EscrowExhausted, ErrorCode::EscrowExhausted.describe());
                }
                let unpaid_bytes = pay.cumulative_bytes().saturating_sub(pay.paid_bytes);
                self.queue(&Frame::Paused { unpaid_bytes });
            }
        }
        if self.pay.as_ref().is_some_and(|p| p.paused) {
            return;
        }
        // Opens that waited go to the driver before their data.
        for (&stream, s) in self.streams.iter_mut().filter(|(_, s)| !s.waits_for_slot) {
            if let Some(dest) = s.open_held.take() {
                self.events.push_back(Event::OpenRequested { stream, dest });
            }
        }
        let waiting: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, s)| !s.held.is_empty() || s.fin_held)
            .map(|(id, _)| *id)
            .collect();
        for stream in waiting {
            self.release_held(stream);
        }
        self.wake_blocked();
    }

    /// Node: the unpaid clock, at an input or timer at `now`.
    ///
    /// It runs only while the client has been shown to owe a receipt it
    /// has not sent: from the pause alone it cannot tell. The node counts a
    /// byte delivered when it queues it, so it may queue its whole credit
    /// window and pause while the client, which signs once it has
    /// *received* a receipt interval, waits for those bytes to cross its
    /// link: at 16 KiB/s a MiB takes 64 s, and a clock started at the
    /// pause closed honest slow downloads with `Unpaid`. Two things show
    /// the debt, and the clock starts at the first:
    /// - the client's window announcements: what it announced consumed,
    ///   and all else the node delivered, reach a receipt interval past the
    ///   newest receipt (`client_count_shown`). Bytes are consumed after
    ///   they are received, and the client signs as they are received, so
    ///   an honest receipt comes before the announcement that shows it due;
    /// - the pong to a ping queued behind everything delivered, sent
    ///   `PAUSE_FENCE_AFTER` into the pause (not at once: a fast
    ///   download pauses about once per receipt, for a round trip, and a
    ///   pong then would be one more lone record per MiB): the client has
    ///   received it all (at least a receipt interval, or at the escrow's
    ///   end the `Paused` frame that asks it to pay at once), and a receipt
    ///   would have come before the pong. This catches what the
    ///   announcements may not show: a program that reads nothing, or
    ///   streams each holding less than their announcement threshold.
    ///
    /// A client that does neither gets nothing while paused (no byte, no
    /// connection). One that does not answer the ping either is closed
    /// unpaid an idle timeout (5 min) after it: its own frames could keep
    /// the session from ever being idle. An honest client's pong comes once
    /// what was queued before the ping (at most the credit window, 2 MiB)
    /// has crossed its link: within the 5 min on links down to 56 kbit/s.
    fn note_pause(&mut self, now: Instant) {
        if !self.is_node() {
            return;
        }
        let Some(pay) = self.pay.as_mut().filter(|p| p.paused) else { return };
        let since = *pay.paused_since.get_or_insert(now);
        if pay.overdue_since.is_none() && pay.client_count_shown() >= pay.paid_bytes.saturating_add(pay.receipt_interval_bytes) {
            pay.overdue_since = Some(now);
        }
        if pay.pause_fence.is_none() && now >= since + PAUSE_FENCE_AFTER {
            let nonce = self.next_ping;
            self.next_ping += 1;
            pay.pause_fence = Some(nonce);
            self.queue(&Frame::Ping { nonce });
        }
    }

    /// Node: when a paused session is closed unpaid: `unpaid_timeout`
    /// after a receipt was shown overdue; or, while nothing has shown it
    /// (no pong yet to the ping behind the pause, queued
    /// `PAUSE_FENCE_AFTER` into it), the idle timeout after that ping. A
    /// client that answers none would otherwise stay paused for as long as
    /// its own frames kept the session from being idle.
    fn unpaid_deadline(&self) -> Option<Instant> {
        let Side::Node { terms, .. } = &self.side else { return None };
        let pay = self.pay.as_ref()?;
        match pay.overdue_since {
            Some(since) => Some(since + terms.unpaid_timeout),
            None if pay.pause_fence.is_some() => Some(pay.paused_since? + PAUSE_FENCE_AFTER + terms.limits.idle_timeout),
            None => None,
        }
    }

    /// Node: when a paused session queues the ping behind its pause.
    fn pause_fence_deadline(&self) -> Option<Instant> {
        let pay = self.pay.as_ref().filter(|p| p.paused && p.pause_fence.is_none())?;
        Some(pay.paused_since? + PAUSE_FENCE_AFTER)
    }

    fn wake_blocked(&mut self) {
        for stream in std::mem::take(&mut self.blocked) {
            self.events.push_back(Event::Writable { stream });
        }
    }

    /// After bytes were metered: the client signs a receipt when one is
    /// due; the node pauses when the window is used up.
    fn after_metering(&mut self) {
        if !self.is_node() {
            return self.sign_receipt(false);
        }
        let Some(pay) = self.pay.as_mut() else { return };
        if pay.credit() > 0 || pay.paused {
            return;
        }
        if pay.escrow_spent() {
            // Nothing is owed and the escrow buys nothing more.
            return self.close(ErrorCode::EscrowExhausted, ErrorCode::EscrowExhausted.describe());
        }
        pay.paused = true;
        let unpaid_bytes = pay.cumulative_bytes() - pay.paid_bytes;
        self.events.push_back(Event::Paused { unpaid_bytes });
        self.queue(&Frame::Paused { unpaid_bytes });
    }

    /// Client: signs a receipt for what it received when one is due (a
    /// receipt interval since the last, or all the escrow pays for
    /// received), or at once when `pay_up` (the node paused short of its
    /// window). Never for more than the escrow pays for: once that much has
    /// come, the escrow is spent.
    fn sign_receipt(&mut self, pay_up: bool) {
        let Some(pay) = self.pay.as_mut() else { return };
        let Side::Client { terms, escrow_exhausted, .. } = &mut self.side else {
            return;
        };
        let received = pay.cumulative_bytes();
        let spent = received >= pay.escrow_bytes;
        // Due on the interval's grid, not an interval past the last
        // receipt: a receipt pays all received, a little past the grid
        // (the rest of the read that crossed it), and counted from there
        // the next one fell due just past what the node may send on the
        // last (2 intervals, its window): the node paused, and the
        // client's receipt waited a round trip for the node to hear the
        // one before. One interval a round trip, not a window: 21 Mbit/s
        // at 400 ms, not 42.
        let due = pay_up || spent || received >= pay.receipt_due_bytes();
        if *escrow_exhausted || !due {
            return;
        }
        let cumulative_bytes = received.min(pay.escrow_bytes);
        let cumulative_usd = pay.usd_for(cumulative_bytes);
        let mut sent = false;
        // A receipt paying no more than the last would be stale (the
        // bytes since cost less than a micro-dollar, rounded up already).
        if cumulative_bytes > pay.paid_bytes && cumulative_usd > pay.paid_usd && cumulative_usd <= terms.escrow {
            let receipt = Receipt {
                chain_id: terms.chain_id.clone(),
                channel: terms.channel,
                cumulative_usd,
                cumulative_bytes,
            }
            .sign(&terms.key);
            pay.paid_bytes = cumulative_bytes;
            pay.paid_usd = cumulative_usd;
            self.events.push_back(Event::ReceiptSent {
                cumulative_bytes,
                cumulative_usd,
            });
            let i = self.send_path;
            Frame::Receipt(receipt).encode(&mut self.paths[i].outbuf);
            sent = true;
        }
        if spent {
            *escrow_exhausted = true;
            self.events.push_back(Event::EscrowExhausted);
        }
        if sent {
            self.announce_with_receipt();
        }
    }

    /// Client: this session signs receipts, and its windows' announcements
    /// go with them.
    fn announces_with_receipts(&self) -> bool {
        !self.is_node() && self.pay.is_some()
    }

    /// Client: a receipt just went into the path's buffer; the windows'
    /// consumed bytes not yet announced go with it, in the same record.
    /// Through a download the client sends nothing else, and each lone
    /// `Window` was a record of its own: a write here and a wake-up in
    /// every process it crossed (through a relay, about five a MiB where
    /// one carries what they said). After the receipt, so the node hears
    /// of the bytes paid for before the consumption that shows them due.
    fn announce_with_receipt(&mut self) {
        if self.phase != Phase::Established {
            return;
        }
        let out = &mut self.paths[self.send_path].outbuf;
        for (&stream, s) in self.streams.iter_mut() {
            // The next consumption starts the stream's clock again.
            if let Some(bytes) = s.announce(None) {
                Frame::Window { stream, bytes }.encode(out);
            }
            s.unconsumed_at_receipt = s.recv_unconsumed;
        }
        if let Some(bytes) = self.window.announce() {
            Frame::Window { stream: 0, bytes }.encode(out);
        }
    }

    fn on_path_switch(&mut self) {
        // The peer sends nothing more on the path we were reading.
        let next = self.recv_path + 1;
        if next >= self.paths.len() {
            return self.violation("path switch with no newer path".into());
        }
        self.recv_path = next;
        if self.is_node() && self.send_path < next {
            // The client moved; follow it, marking the end of the old path.
            self.queue(&Frame::PathSwitch);
            self.send_path = next;
            let path = self.paths[next].id;
            self.events.push_back(Event::PathReady { path });
        }
        self.retire_done_paths();
    }

    /// Drops paths both sides have switched away from.
    fn retire_done_paths(&mut self) {
        let done = self.send_path.min(self.recv_path);
        for _ in 0..done {
            let old = self.paths.remove(0);
            self.send_path -= 1;
            self.recv_path -= 1;
            self.retired.push((old.id, old.outbuf));
            self.events.push_back(Event::PathRetired { path: old.id });
        }
    }

    // ---- paths (port hopping) ----------------------------------------------

    /// Client: a new connection to the node whose TLS exporter gave
    /// `binding`; the session moves to it once the node confirms, which it
    /// must within the handshake timeout. (A path left waiting, on a port
    /// where a censor let the handshake through and then dropped every
    /// packet, refused every later one with `MigrationPending` for as long
    /// as its TCP connection lived.)
    pub fn attach_path(&mut self, now: Instant, path: PathId, binding: [u8; 32]) -> Result<(), SessionError> {
        if !matches!(self.side, Side::Client { .. }) {
            return Err(SessionError::WrongSide("client"));
        }
        self.check_open()?;
        if self.paths.len() > 1 {
            return Err(SessionError::MigrationPending);
        }
        let proof = resume_proof(&self.secret, &binding);
        let mut p = Path {
            awaiting_resume_ok: true,
            resume_deadline: Some(now + self.limits.handshake_timeout),
            ..Path::new(path, binding)
        };
        Frame::Resume(Resume {
            session_id: self.session_id,
            proof,
        })
        .encode(&mut p.outbuf);
        self.paths.push(p);
        Ok(())
    }

    /// Node: a new connection whose first frame was `resume` (see
    /// `frame::first_frame`); `rest` is what arrived after that frame.
    pub fn handle_resume(
        &mut self,
        now: Instant,
        path: PathId,
        binding: [u8; 32],
        resume: &Resume,
    ) -> Result<(), SessionError> {
        if !self.is_node() {
            return Err(SessionError::WrongSide("node"));
        }
        self.check_open()?;
        if resume.session_id != self.session_id
            || resume_proof(&self.secret, &binding) != resume.proof
        {
            return Err(SessionError::BadResumeProof);
        }
        if self.paths.len() > self.limits.max_extra_paths {
            return Err(SessionError::TooManyPaths);
        }
        let mut p = Path::new(path, binding);
        Frame::ResumeOk.encode(&mut p.outbuf);
        self.paths.push(p);
        self.last_received = now;
        Ok(())
    }

    /// A connection died under the session. If it was the only one, the
    /// session is over.
    pub fn handle_path_lost(&mut self, path: PathId) {
        let Some(index) = self.path_index(path) else {
            return;
        };
        if index > self.send_path && index > self.recv_path {
            // A half-made new path: forget it, stay on the old one.
            self.paths.remove(index);
        } else if self.phase != Phase::Closed {
            self.finish_closed(ErrorCode::Shutdown, "the connection was lost".into(), true);
        }
    }

    fn check_open(&self) -> Result<(), SessionError> {
        match self.phase {
            Phase::Established => Ok(()),
            Phase::Closed => Err(SessionError::Closed),
            _ => Err(SessionError::NotEstablished),
        }
    }

    // ---- streams -------------------------------------------------------------

    /// Client: opens a stream to `dest` (resolved at the exit).
    pub fn open_stream(&mut self, dest: Dest) -> Result<StreamId, SessionError> {
        self.check_open()?;
        let full = self.streams_full();
        let Side::Client { next_stream, .. } = &mut self.side else {
            return Err(SessionError::WrongSide("client"));
        };
        dest.validate()?;
        if full {
            return Err(SessionError::TooManyStreams(self.limits.max_streams));
        }
        let stream = *next_stream;
        *next_stream = next_stream.wrapping_add(1).max(1);
        self.streams.insert(stream, Stream { opening: true, ..self.fresh_stream() });
        self.queue(&Frame::Open { stream, dest });
        Ok(stream)
    }

    /// Node: the destination is connected.
    pub fn accept_stream(&mut self, stream: StreamId) {
        if self.streams.contains_key(&stream) && self.phase == Phase::Established {
            self.queue(&Frame::Opened { stream });
        }
    }

    /// Node: the destination could not be reached (or is not allowed).
    pub fn refuse_stream(&mut self, stream: StreamId, code: ErrorCode) {
        // The client may have sent on it before it hears (it sends before
        // `Opened`): what its window allows.
        let allowance_bytes = self.recv_allowance_left(stream);
        if self.remove_stream(stream) && self.phase == Phase::Established {
            self.queue(&Frame::OpenFailed { stream, code });
            self.remember_reset(stream, allowance_bytes);
        }
    }

    /// What `stream`'s peer may still send on it: what its window allows,
    /// unless the peer has finished it.
    fn recv_allowance_left(&self, stream: StreamId) -> u64 {
        (self.streams.get(&stream))
            .filter(|s| !s.fin_received)
            .map_or(0, |s| s.recv_allowance)
    }

    /// Queues up to `data.len()` bytes on `stream`; returns how many were
    /// taken. Fewer means: wait for `Writable`.
    pub fn send(&mut self, stream: StreamId, data: &[u8]) -> Result<usize, SessionError> {
        self.check_open()?;
        let unsent = self.paths[self.send_path].outbuf.len();
        let room = self.limits.max_unsent_bytes.saturating_sub(unsent) as u64;
        let is_node = self.is_node();
        let s = self
            .streams
            .get_mut(&stream)
            .ok_or(SessionError::NoStream(stream))?;
        if s.fin_sent {
            return Err(SessionError::StreamFinished(stream));
        }
        let mut allowed = s.send_credit.min(room).min(self.window.send_credit);
        if is_node {
            allowed = allowed.min(self.pay.as_ref().map_or(0, Pay::credit));
        }
        let n = (data.len() as u64).min(allowed) as usize;
        s.send_credit -= n as u64;
        s.sent_bytes += n as u64;
        self.window.send_credit -= n as u64;
        if n < data.len() {
            self.blocked.insert(stream);
        }
        let i = self.send_path;
        // Room for all the frames at once: one allocation of the right size
        // rather than a chain of doublings (each a copy) from the empty
        // buffer `poll_transmit` leaves.
        let frames = n.div_ceil(DATA_CHUNK_BYTES);
        self.paths[i].outbuf.reserve(n + frames * frame::DATA_FRAME_OVERHEAD_BYTES);
        for chunk in data[..n].chunks(DATA_CHUNK_BYTES) {
            encode_data(&mut self.paths[i].outbuf, stream, chunk);
        }
        if n > 0 {
            if let Some(pay) = self.pay.as_mut() {
                pay.metered_bytes += n as u64;
                if is_node {
                    pay.downstream_bytes += n as u64;
                }
            }
            self.after_metering();
        }
        Ok(n)
    }

    /// The driver wrote `n` bytes of `stream`'s received data to its far
    /// end at `now`: the peer may send that much more. Announced once half
    /// the stream's window gathered (three quarters, for a paying client,
    /// which announces with its receipts: `announce_with_receipt`), or
    /// `WINDOW_ANNOUNCE_EVERY` after the last announcement.
    pub fn consumed(&mut self, now: Instant, stream: StreamId, n: usize) {
        if self.phase != Phase::Established {
            return;
        }
        self.note_pause(now);
        let window = u64::from(self.limits.stream_window_bytes);
        let due_at = if self.announces_with_receipts() { window / 4 * 3 } else { window / 2 };
        // A stream already gone was reset: its bytes went back then.
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        let n = (n as u64).min(s.recv_unconsumed);
        s.recv_unconsumed -= n;
        s.recv_unannounced += n;
        let since = *s.announced_at.get_or_insert(now);
        // The receipt's announcement went out before the bytes that made
        // the receipt due were consumed, so it fell short of them: left
        // for the next receipt, the window reopened a receipt interval
        // late, and a stream carried only its window less one interval
        // per round trip (1 MiB with the defaults: 20 Mbit/s at 400 ms).
        let caught_up = s.unconsumed_at_receipt > 0 && s.unconsumed_at_receipt <= n;
        s.unconsumed_at_receipt = s.unconsumed_at_receipt.saturating_sub(n);
        let due = s.recv_unannounced >= due_at
            || caught_up
            || (s.recv_unannounced > 0 && now.saturating_duration_since(since) >= WINDOW_ANNOUNCE_EVERY);
        if due {
            if let Some(bytes) = s.announce(Some(now)) {
                self.queue(&Frame::Window { stream, bytes });
            }
        }
        self.release(n);
        // Both ends may have finished while these bytes were on their way.
        self.gc_stream(stream);
    }

    /// No more bytes from us on `stream`.
    pub fn finish(&mut self, stream: StreamId) {
        if self.phase != Phase::Established {
            return;
        }
        if let Some(s) = self.streams.get_mut(&stream) {
            if !s.fin_sent {
                s.fin_sent = true;
                self.queue(&Frame::Fin { stream });
                self.gc_stream(stream);
            }
        }
    }

    /// Abandons `stream` both ways.
    pub fn reset(&mut self, stream: StreamId, code: ErrorCode) {
        // What the peer may still send on it.
        let allowance_bytes = self.recv_allowance_left(stream);
        if self.remove_stream(stream) && self.phase == Phase::Established {
            self.queue(&Frame::Reset { stream, code });
            self.remember_reset(stream, allowance_bytes);
        }
    }

    /// Sends a ping; the answer comes as `Event::Pong` with the round trip.
    pub fn ping(&mut self, now: Instant) -> Result<u64, SessionError> {
        self.check_open()?;
        let nonce = self.next_ping;
        self.next_ping += 1;
        // Bounded: an unanswered ping is forgotten after 16 newer ones.
        if self.pings.len() >= 16 {
            self.pings.pop_first();
        }
        self.pings.insert(nonce, now);
        self.queue(&Frame::Ping { nonce });
        Ok(nonce)
    }

    // ---- output ------------------------------------------------------------

    /// The next bytes to write, and the path to write them on.
    pub fn poll_transmit(&mut self) -> Option<(PathId, Vec<u8>)> {
        if let Some((path, bytes)) = self.retired.pop() {
            if !bytes.is_empty() {
                return Some((path, bytes));
            }
        }
        let index = self.paths.iter().position(|p| !p.outbuf.is_empty())?;
        let bytes = std::mem::take(&mut self.paths[index].outbuf);
        if index == self.send_path && !self.blocked.is_empty() && self.phase == Phase::Established {
            self.wake_blocked();
        }
        Some((self.paths[index].id, bytes))
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Closed => None,
            Phase::Handshake | Phase::AwaitChannel => Some(self.handshake_deadline),
            Phase::Established => {
                let idle = self.last_received + self.limits.idle_timeout;
                let deadlines = [
                    self.pending_resume_deadline(),
                    self.unpaid_deadline(),
                    self.pause_fence_deadline(),
                    self.half_closed_sweep_at,
                    self.opens_waiting_for_slot.front().map(|&(until, _)| until),
                ];
                Some(deadlines.into_iter().flatten().fold(idle, Instant::min))
            }
        }
    }

    /// Node: every idle timeout while there are any, the streams the
    /// client has finished (its program sent all it will, or hung up) and
    /// the destination has not. One that sent the client nothing since
    /// the client's `Fin` or the sweep before (and could have: not paused,
    /// not out of window) is reset with `Idle` at the second such sweep in
    /// a row: 5 to 10 min of silence at the default idle timeout. A
    /// program's hang-up reaches the exit as an end of data (a socket
    /// cannot tell a half-close from a close until written to), and a
    /// destination that ignored it and never answered kept the stream,
    /// counted against `max_streams`, and its connection, for as long as
    /// the session lived (a client's pings keep it from idling). So is one
    /// both ends finished whose destination took none of the upload's rest
    /// over two sweeps (and could have: no upload held for a receipt): the
    /// client has let go of it, and the node's slot was held for as long.
    fn sweep_half_closed(&mut self, now: Instant) {
        if self.half_closed_sweep_at.is_none_or(|at| now < at) || self.phase != Phase::Established {
            return;
        }
        // A stream the node could not send on (paused for a receipt, or
        // its window or the session's used up by a client that reads
        // slowly) is not idle for want of bytes.
        // Nor is an upload held for a receipt untaken for want of a reader.
        let paused = self.pay.as_ref().is_some_and(|p| p.paused);
        let held_back = paused || self.window.send_credit == 0;
        let mut idle = Vec::new();
        let mut left = false;
        let finished_by_client = |s: &Stream| s.fin_received && (!s.fin_sent || s.recv_unconsumed > 0);
        for (&id, s) in self.streams.iter_mut().filter(|(_, s)| finished_by_client(s)) {
            let could_move = if s.fin_sent { !paused && s.held.is_empty() } else { !held_back && s.send_credit > 0 };
            let progress = s.sweep_progress();
            if progress == s.progress_at_sweep && could_move {
                s.idle_sweeps += 1;
            } else {
                (s.idle_sweeps, s.progress_at_sweep) = (0, progress);
            }
            if s.idle_sweeps >= 2 {
                idle.push(id);
            } else {
                left = true;
            }
        }
        for stream in idle {
            self.reset(stream, ErrorCode::Idle);
            // The driver closes the destination's connection.
            self.events.push_back(Event::Reset { stream, code: ErrorCode::Idle });
        }
        self.half_closed_sweep_at = left.then(|| now + self.limits.idle_timeout);
    }

    /// The earliest deadline of a path still awaiting its ResumeOk.
    fn pending_resume_deadline(&self) -> Option<Instant> {
        self.paths.iter().filter(|p| p.awaiting_resume_ok).filter_map(|p| p.resume_deadline).min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.note_pause(now);
        self.sweep_half_closed(now);
        self.refuse_waited_opens(now);
        if self.phase == Phase::Established && self.unpaid_deadline().is_some_and(|d| now >= d) {
            let Side::Node { terms, .. } = &self.side else { return };
            let unpaid = human_bytes(self.unpaid_bytes());
            let message = if self.pay.as_ref().is_some_and(|p| p.overdue_since.is_some()) {
                format!(
                    "no valid receipt {} s after the client had received what made one due ({unpaid} unpaid)",
                    terms.unpaid_timeout.as_secs()
                )
            } else {
                format!(
                    "no valid receipt, and no answer to the ping behind the pause in {} s ({unpaid} unpaid)",
                    terms.limits.idle_timeout.as_secs()
                )
            };
            return self.close(ErrorCode::Unpaid, &message);
        }
        if self.phase == Phase::Established && self.pending_resume_deadline().is_some_and(|d| now >= d) {
            // Given up, as a path whose connection was lost: the session
            // stays on the old one, and the driver closes the new one's.
            // (Only one not yet read from: one the peer already switched
            // to is the session's, and the idle timeout judges it.)
            let (send, recv) = (self.send_path, self.recv_path);
            let expired: Vec<PathId> = self
                .paths
                .iter()
                .enumerate()
                .filter(|&(i, p)| i > send && i > recv && p.awaiting_resume_ok && p.resume_deadline.is_some_and(|d| now >= d))
                .map(|(_, p)| p.id)
                .collect();
            for path in expired {
                self.handle_path_lost(path);
                self.events.push_back(Event::PathRetired { path });
            }
        }
        match self.phase {
            Phase::Handshake | Phase::AwaitChannel if now >= self.handshake_deadline => {
                self.close(ErrorCode::Timeout, "the handshake did not finish in time");
            }
            Phase::Established if now >= self.last_received + self.limits.idle_timeout => {
                self.close(ErrorCode::Idle, ErrorCode::Idle.describe());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two indexes of the reset records agree through every way a
    /// record leaves: the oldest by fence, a pong, a spent allowance, a
    /// stream id remembered again.
    #[test]
    fn reset_records_leave_oldest_first_and_both_indexes_agree() {
        let mut r = ResetStreams::default();
        for (stream, fence) in [(5, 10), (2, 11), (9, 12), (4, 13)] {
            r.insert(stream, ResetStream { allowance_bytes: 100, fence });
        }
        let agree = |r: &ResetStreams| {
            assert_eq!(r.by_stream.len(), r.by_fence.len());
            assert!(r.by_fence.iter().all(|(f, s)| r.by_stream.get(s).is_some_and(|x| x.fence == *f)));
        };
        r.forget_oldest();
        assert!(!r.by_stream.contains_key(&5));
        agree(&r);
        r.fenced(11);
        assert_eq!(r.by_stream.keys().copied().collect::<Vec<_>>(), [4, 9]);
        agree(&r);
        assert!(r.take(9, 60) && !r.take(9, 41) && r.take(9, 40));
        assert!(!r.by_stream.contains_key(&9));
        agree(&r);
        r.insert(4, ResetStream { allowance_bytes: 7, fence: 20 });
        assert_eq!((r.len(), r.by_fence.keys().copied().collect::<Vec<_>>()), (1, vec![20]));
        agree(&r);
    }

    /// What `bytes_bought` gives costs at most the USD by the ledger's
    /// rule, and one byte more costs more.
    #[test]
    fn bytes_bought_is_the_most_the_usd_pays_for_by_the_ledgers_rule() {
        for price in [1, 3, 100, 1023, 1024, 500_000, 1_000_000, 999_999_937] {
            for usd in [0, 1, 2, 977, 1465, 1_000_000, 10u128.pow(15)] {
                let bytes = bytes_bought(price, Usd(usd));
                assert!(cost_of_bytes(price, bytes) <= Usd(usd), "{price} {usd}");
                if bytes < u64::MAX {
                    assert!(cost_of_bytes(price, bytes + 1) > Usd(usd), "{price} {usd}");
                }
            }
        }
        assert_eq!(bytes_bought(1_000_000, Usd(1)), 1_073);
        assert_eq!(bytes_bought(0, Usd(1)), u64::MAX);
    }

    /// At the least price an interval costs a micro-dollar, so receipts an
    /// interval apart always pay more; a micro-dollar less and it does not.
    #[test]
    fn the_least_price_makes_every_receipt_interval_cost_a_micro_dollar() {
        const GIB: u128 = 1 << 30;
        for interval in [MIN_RECEIPT_INTERVAL_BYTES, 100_000, DEFAULT_RECEIPT_INTERVAL_BYTES, MAX_CREDIT_WINDOW_BYTES - 1] {
            let min = min_price_usd_micro_per_gib(interval);
            assert!(u128::from(min) * u128::from(interval) >= GIB, "{interval}");
            assert!(u128::from(min - 1) * u128::from(interval) < GIB, "{interval}");
            for b in [0, 1, 12_345, interval - 1, 7 * interval + 3] {
                assert!(cost_of_bytes(min, b + interval) > cost_of_bytes(min, b), "{interval} {b}");
            }
            assert!(check_price_terms(min, interval).is_ok() && check_price_terms(min - 1, interval).is_err());
        }
        assert_eq!(min_price_usd_micro_per_gib(DEFAULT_RECEIPT_INTERVAL_BYTES), 1_024);
        assert_eq!(MIN_PRICE_USD_MICRO_PER_GIB, 17);
    }

    /// A join buffer comes back once the payload sliced from it is gone,
    /// and not before.
    #[test]
    fn frame_joins_reuse_a_buffer_only_when_nothing_holds_it() {
        let mut joins = FrameJoins { buffers: Vec::new() };
        let mut a = joins.take();
        assert!(a.capacity() >= MAX_FRAME_BYTES);
        let first = a.as_ptr();
        a.extend_from_slice(&[7; 9000]);
        let payload = a.split_to(9000).freeze();
        joins.give_back(a);
        // The payload still holds the first buffer: a different one.
        let b = joins.take();
        assert_ne!(b.as_ptr(), first);
        joins.give_back(b);
        drop(payload);
        // Both are free now; the first comes back whole.
        let again = joins.take();
        assert!(again.capacity() >= MAX_FRAME_BYTES && again.is_empty());
        let c = joins.take();
        assert!([again.as_ptr(), c.as_ptr()].contains(&first));
        // Only `FrameJoins::MAX` are kept.
        for _ in 0..10 {
            joins.give_back(BytesMut::with_capacity(MAX_FRAME_BYTES));
        }
        assert_eq!(joins.buffers.len(), FrameJoins::MAX);
    }
}
