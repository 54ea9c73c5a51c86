//! The tunnel's frames on a reliable, ordered byte stream (a TLS stream or
//! one QUIC stream): `type: u8 | length: u24 BE | body`.
//!
//! Data frames carry `stream: u32 BE | payload` raw, so bulk bytes are
//! copied once; every other frame's body is the house codec (postcard with a
//! version byte, canonical) of a small struct. Decoding works on a byte
//! cursor apart from any socket (mini-redis): `Incomplete` means "read
//! more", `Invalid` means "drop the connection".

use crate::dest::Dest;
use crate::policy::AnnouncedPolicy;
use serde::{Deserialize, Serialize};
use tollway_types::codec;
use tollway_types::keys::{AccountId, Signature};
use tollway_types::tx::{ChannelId, SignedReceipt};

/// The protocol version this build speaks (in the hello, not per frame).
/// 4: the server hello announces the exit's policy (`exit_policy`).
pub const PROTOCOL_VERSION: u16 = 4;
/// The oldest version a node still serves: a client of version 3 gets a
/// hello in version 3's layout (no policy) and is served as before. A
/// client speaks only `PROTOCOL_VERSION`, and a node older than it refuses
/// its hello with `ErrorCode::Version`, naming both versions.
pub const OLDEST_PROTOCOL_VERSION_SERVED: u16 = 3;
/// Header bytes before every frame body.
pub const HEADER_BYTES: usize = 4;
/// The largest payload of one data frame a peer may send.
pub const MAX_DATA_PAYLOAD_BYTES: usize = 16 * 1024;
/// The most plaintext one TLS record carries.
pub const TLS_RECORD_BYTES: usize = 16 * 1024;
/// The payload of a full data frame as we send it: header, stream id and
/// payload fill one TLS record exactly. (A 16 KiB payload made every full
/// frame 8 bytes longer than a record: four frames took five records, the
/// fifth a few dozen bytes in a system call of its own.)
pub const DATA_CHUNK_BYTES: usize = TLS_RECORD_BYTES - DATA_FRAME_OVERHEAD_BYTES;
/// A data frame's bytes besides its payload: the header and the stream id.
pub const DATA_FRAME_OVERHEAD_BYTES: usize = HEADER_BYTES + 4;
/// The largest body any frame may declare; a longer one is invalid before a
/// byte of it is buffered.
pub const MAX_BODY_BYTES: usize = 4 + MAX_DATA_PAYLOAD_BYTES;

/// Why a peer's bytes are not a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("need more bytes")]
    Incomplete,
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    #[error("frame body of {len} bytes exceeds the limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("malformed {kind} frame: {reason}")]
    Malformed { kind: &'static str, reason: String },
}

/// Error codes a client can show, shared by `Refuse`, `OpenFailed`, `Reset`
/// and `GoAway`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// A bug or an unexpected failure on the peer.
    Internal,
    /// The peer broke the protocol (bad frame, bad order, limit exceeded).
    Protocol,
    /// The hello's version is not spoken here.
    Version,
    /// The hello's signature or channel binding does not verify.
    BadHello,
    /// No such channel, or it is not this node's, or it has expired.
    NoChannel,
    /// The channel's escrow is spent.
    EscrowExhausted,
    /// Too many streams or sessions.
    Limit,
    /// The exit policy forbids this destination.
    PolicyDenied,
    /// The destination name does not resolve.
    DnsFailed,
    /// The destination refused the connection.
    ConnectionRefused,
    /// The destination did not answer in time.
    Timeout,
    /// The destination is unreachable.
    Unreachable,
    /// No bytes for too long.
    Idle,
    /// The session or stream is being closed by its owner.
    Shutdown,
    /// The unpaid bytes reached the credit window and stayed there.
    Unpaid,
    /// Another session on this node uses the same channel: one channel
    /// pays for one session at a time.
    ChannelBusy,
}

impl ErrorCode {
    /// A short sentence for a user.
    pub fn describe(self) -> &'static str {
        match self {
            ErrorCode::Internal => "internal error on the node",
            ErrorCode::Protocol => "protocol violation",
            ErrorCode::Version => "unsupported protocol version",
            ErrorCode::BadHello => "the hello's signature or TLS binding does not verify",
            ErrorCode::NoChannel => "no open payment channel from this client to this node",
            ErrorCode::EscrowExhausted => "the channel's escrow is spent: open a new channel",
            ErrorCode::Limit => "a limit was reached (streams or sessions)",
            ErrorCode::PolicyDenied => "the exit's policy forbids this destination",
            ErrorCode::DnsFailed => "the destination name does not resolve at the exit",
            ErrorCode::ConnectionRefused => "the destination refused the connection",
            ErrorCode::Timeout => "the destination did not answer in time",
            ErrorCode::Unreachable => "the destination is unreachable from the exit",
            ErrorCode::Idle => "closed after being idle",
            ErrorCode::Shutdown => "closed by its owner",
            ErrorCode::Unpaid => "no valid receipt for the credit window",
            ErrorCode::ChannelBusy => {
                "another session uses this channel (one `tollway connect` per channel)"
            }
        }
    }
}

/// The client's first frame: who it is, which channel pays, and a
/// signature by the channel's client key over this TLS connection's
/// exported keying material, which binds the session to the connection
/// (and so to the node's pinned certificate key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    pub version: u16,
    pub chain_id: String,
    /// The node the client means to talk to (its ledger account).
    pub node: AccountId,
    pub channel: ChannelId,
    pub client: AccountId,
    pub signature: Signature,
}

/// What `ClientHello::signature` signs.
#[derive(Serialize)]
pub(crate) struct HelloSigned<'a> {
    pub version: u16,
    pub chain_id: &'a str,
    pub node: &'a AccountId,
    pub channel: &'a ChannelId,
    pub binding: &'a [u8; 32],
}

/// The node's answer: the session's terms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    pub version: u16,
    /// Names the session when the client attaches another connection
    /// (port hopping).
    pub session_id: [u8; 16],
    pub price_usd_micro_per_gib: u64,
    pub receipt_interval_bytes: u64,
    pub credit_window_bytes: u64,
    pub stream_window_bytes: u32,
    pub max_streams: u32,
    /// Bytes in flight on all streams together, each way (since version 2).
    pub session_window_bytes: u64,
    /// The newest receipt the node holds for this channel, signed by the
    /// client: the cumulative counters continue from it.
    pub baseline: Option<SignedReceipt>,
    /// Bytes the node carried beyond that receipt in the session this one
    /// took over (one channel pays for one session at a time), at most the
    /// credit window: the first receipt pays for them (since version 3).
    pub carried_bytes: u64,
    /// What the exit refuses whatever the destination's name resolves to,
    /// so that the client refuses such an IP literal before it answers its
    /// program (since version 4; `None` in an older node's hello, and in
    /// the encoding of a hello of an older version).
    pub exit_policy: Option<AnnouncedPolicy>,
}

/// A server hello as versions before 4 lay it out (no `exit_policy`): what
/// a node answers a client of such a version.
#[derive(Serialize, Deserialize)]
struct ServerHelloV3 {
    version: u16,
    session_id: [u8; 16],
    price_usd_micro_per_gib: u64,
    receipt_interval_bytes: u64,
    credit_window_bytes: u64,
    stream_window_bytes: u32,
    max_streams: u32,
    session_window_bytes: u64,
    baseline: Option<SignedReceipt>,
    carried_bytes: u64,
}

impl ServerHelloV3 {
    fn of(h: &ServerHello) -> ServerHelloV3 {
        ServerHelloV3 {
            version: h.version,
            session_id: h.session_id,
            price_usd_micro_per_gib: h.price_usd_micro_per_gib,
            receipt_interval_bytes: h.receipt_interval_bytes,
            credit_window_bytes: h.credit_window_bytes,
            stream_window_bytes: h.stream_window_bytes,
            max_streams: h.max_streams,
            session_window_bytes: h.session_window_bytes,
            baseline: h.baseline.clone(),
            carried_bytes: h.carried_bytes,
        }
    }

    fn into_hello(self) -> ServerHello {
        ServerHello {
            version: self.version,
            session_id: self.session_id,
            price_usd_micro_per_gib: self.price_usd_micro_per_gib,
            receipt_interval_bytes: self.receipt_interval_bytes,
            credit_window_bytes: self.credit_window_bytes,
            stream_window_bytes: self.stream_window_bytes,
            max_streams: self.max_streams,
            session_window_bytes: self.session_window_bytes,
            baseline: self.baseline,
            carried_bytes: self.carried_bytes,
            exit_policy: None,
        }
    }
}

/// The first frame on an extra connection of an established session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub session_id: [u8; 16],
    /// keyed blake3 (session secret) over the new connection's binding.
    pub proof: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    ClientHello(ClientHello),
    ServerHello(ServerHello),
    /// The handshake failed; the connection closes after it.
    Refuse(Refusal),
    Open {
        stream: u32,
        dest: Dest,
    },
    Opened {
        stream: u32,
    },
    OpenFailed {
        stream: u32,
        code: ErrorCode,
    },
    Data {
        stream: u32,
        payload: Vec<u8>,
    },
    /// The sender consumed `bytes` more of `stream`: the peer may send that
    /// much more (per-stream flow control).
    Window {
        stream: u32,
        bytes: u32,
    },
    /// No more data from the sender on `stream` (half close).
    Fin {
        stream: u32,
    },
    Reset {
        stream: u32,
        code: ErrorCode,
    },
    Receipt(SignedReceipt),
    /// The node accepted a receipt: bytes now paid up to this count.
    ReceiptAccepted {
        cumulative_bytes: u64,
    },
    ReceiptRejected {
        code: String,
        message: String,
    },
    /// The node stopped serving until a receipt arrives.
    Paused {
        unpaid_bytes: u64,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    Resume(Resume),
    ResumeOk,
    /// The sender sends nothing more on this connection: everything after
    /// it comes on the session's newest one (make-before-break).
    PathSwitch,
    GoAway(Refusal),
}

#[derive(Serialize, Deserialize)]
struct OpenBody {
    stream: u32,
    dest: Dest,
}
#[derive(Serialize, Deserialize)]
struct StreamCode {
    stream: u32,
    code: ErrorCode,
}
#[derive(Serialize, Deserialize)]
struct WindowBody {
    stream: u32,
    bytes: u32,
}
#[derive(Serialize, Deserialize)]
struct Rejected {
    code: String,
    message: String,
}

mod kind {
    pub const CLIENT_HELLO: u8 = 0x01;
    pub const SERVER_HELLO: u8 = 0x02;
    pub const REFUSE: u8 = 0x03;
    pub const OPEN: u8 = 0x10;
    pub const OPENED: u8 = 0x11;
    pub const OPEN_FAILED: u8 = 0x12;
    pub const DATA: u8 = 0x13;
    pub const WINDOW: u8 = 0x14;
    pub const FIN: u8 = 0x15;
    pub const RESET: u8 = 0x16;
    pub const RECEIPT: u8 = 0x20;
    pub const RECEIPT_ACCEPTED: u8 = 0x21;
    pub const RECEIPT_REJECTED: u8 = 0x22;
    pub const PAUSED: u8 = 0x23;
    pub const PING: u8 = 0x30;
    pub const PONG: u8 = 0x31;
    pub const RESUME: u8 = 0x40;
    pub const RESUME_OK: u8 = 0x41;
    pub const PATH_SWITCH: u8 = 0x42;
    pub const GO_AWAY: u8 = 0x50;
}

fn put_header(out: &mut Vec<u8>, kind: u8, body_len: usize) {
    debug_assert!(body_len <= MAX_BODY_BYTES);
    let len = body_len as u32;
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
}

/// A header, then the body encoded in place behind it; the header's length
/// is filled in after.
fn put_coded<T: Serialize>(out: &mut Vec<u8>, kind: u8, value: &T) {
    let at = out.len();
    put_header(out, kind, 0);
    codec::encode_into(value, out);
    let body_len = out.len() - at - HEADER_BYTES;
    debug_assert!(body_len <= MAX_BODY_BYTES);
    out[at + 1..at + HEADER_BYTES].copy_from_slice(&(body_len as u32).to_be_bytes()[1..]);
}

/// Appends a data frame without building a `Frame`: the bulk path.
/// `payload` must be at most `MAX_DATA_PAYLOAD_BYTES`.
pub fn encode_data(out: &mut Vec<u8>, stream: u32, payload: &[u8]) {
    assert!(
        payload.len() <= MAX_DATA_PAYLOAD_BYTES,
        "data frame payload over the limit"
    );
    put_header(out, kind::DATA, 4 + payload.len());
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

impl Frame {
    /// The frame's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::ClientHello(_) => "client hello",
            Frame::ServerHello(_) => "server hello",
            Frame::Refuse(_) => "refuse",
            Frame::Open { .. } => "open",
            Frame::Opened { .. } => "opened",
            Frame::OpenFailed { .. } => "open failed",
            Frame::Data { .. } => "data",
            Frame::Window { .. } => "window",
            Frame::Fin { .. } => "fin",
            Frame::Reset { .. } => "reset",
            Frame::Receipt(_) => "receipt",
            Frame::ReceiptAccepted { .. } => "receipt accepted",
            Frame::ReceiptRejected { .. } => "receipt rejected",
            Frame::Paused { .. } => "paused",
            Frame::Ping { .. } => "ping",
            Frame::Pong { .. } => "pong",
            Frame::Resume(_) => "resume",
            Frame::ResumeOk => "resume ok",
            Frame::PathSwitch => "path switch",
            Frame::GoAway(_) => "go away",
        }
    }

    /// Appends the frame's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::ClientHello(h) => put_coded(out, kind::CLIENT_HELLO, h),
            Frame::ServerHello(h) if h.version < 4 => put_coded(out, kind::SERVER_HELLO, &ServerHelloV3::of(h)),
            Frame::ServerHello(h) => put_coded(out, kind::SERVER_HELLO, h),
            Frame::Refuse(r) => put_coded(out, kind::REFUSE, r),
            Frame::Open { stream, dest } => put_coded(
                out,
                kind::OPEN,
                &OpenBody {
                    stream: *stream,
                    dest: dest.clone(),
                },
            ),
            Frame::Opened { stream } => put_coded(out, kind::OPENED, stream),
            Frame::OpenFailed { stream, code } => put_coded(
                out,
                kind::OPEN_FAILED,
                &StreamCode {
                    stream: *stream,
                    code: *code,
                },
            ),
            Frame::Data { stream, payload } => encode_data(out, *stream, payload),
            Frame::Window { stream, bytes } => put_coded(
                out,
                kind::WINDOW,
                &WindowBody {
                    stream: *stream,
                    bytes: *bytes,
                },
            ),
            Frame::Fin { stream } => put_coded(out, kind::FIN, stream),
            Frame::Reset { stream, code } => put_coded(
                out,
                kind::RESET,
                &StreamCode {
                    stream: *stream,
                    code: *code,
                },
            ),
            Frame::Receipt(r) => put_coded(out, kind::RECEIPT, r),
            Frame::ReceiptAccepted { cumulative_bytes } => {
                put_coded(out, kind::RECEIPT_ACCEPTED, cumulative_bytes)
            }
            Frame::ReceiptRejected { code, message } => put_coded(
                out,
                kind::RECEIPT_REJECTED,
                &Rejected {
                    code: code.clone(),
                    message: message.clone(),
                },
            ),
            Frame::Paused { unpaid_bytes } => put_coded(out, kind::PAUSED, unpaid_bytes),
            Frame::Ping { nonce } => put_coded(out, kind::PING, nonce),
            Frame::Pong { nonce } => put_coded(out, kind::PONG, nonce),
            Frame::Resume(r) => put_coded(out, kind::RESUME, r),
            Frame::ResumeOk => put_header(out, kind::RESUME_OK, 0),
            Frame::PathSwitch => put_header(out, kind::PATH_SWITCH, 0),
            Frame::GoAway(r) => put_coded(out, kind::GO_AWAY, r),
        }
    }

    /// The frame's bytes in a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes one frame from the front of `buf`: the frame and the bytes it
    /// took. Never panics, never buffers more than `MAX_BODY_BYTES`.
    pub fn decode(buf: &[u8]) -> Result<(Frame, usize), FrameError> {
        let (kind, body) = split_frame(buf)?;
        let used = HEADER_BYTES + body.len();
        let frame = match kind {
            kind::DATA => {
                let (stream, payload) = data_parts(body)?;
                Frame::Data {
                    stream,
                    payload: payload.to_vec(),
                }
            }
            kind::CLIENT_HELLO => Frame::ClientHello(coded(body, "client hello")?),
            kind::SERVER_HELLO => Frame::ServerHello(server_hello(body)?),
            kind::REFUSE => Frame::Refuse(coded(body, "refuse")?),
            kind::OPEN => {
                let o: OpenBody = coded(body, "open")?;
                o.dest
                    .validate()
                    .map_err(|e| malformed("open", &e.to_string()))?;
                Frame::Open {
                    stream: o.stream,
                    dest: o.dest,
                }
            }
            kind::OPENED => Frame::Opened {
                stream: coded(body, "opened")?,
            },
            kind::OPEN_FAILED => {
                let s: StreamCode = coded(body, "open failed")?;
                Frame::OpenFailed {
                    stream: s.stream,
                    code: s.code,
                }
            }
            kind::WINDOW => {
                let w: WindowBody = coded(body, "window")?;
                Frame::Window {
                    stream: w.stream,
                    bytes: w.bytes,
                }
            }
            kind::FIN => Frame::Fin {
                stream: coded(body, "fin")?,
            },
            kind::RESET => {
                let s: StreamCode = coded(body, "reset")?;
                Frame::Reset {
                    stream: s.stream,
                    code: s.code,
                }
            }
            kind::RECEIPT => Frame::Receipt(coded(body, "receipt")?),
            kind::RECEIPT_ACCEPTED => Frame::ReceiptAccepted {
                cumulative_bytes: coded(body, "receipt accepted")?,
            },
            kind::RECEIPT_REJECTED => {
                let r: Rejected = coded(body, "receipt rejected")?;
                Frame::ReceiptRejected {
                    code: r.code,
                    message: r.message,
                }
            }
            kind::PAUSED => Frame::Paused {
                unpaid_bytes: coded(body, "paused")?,
            },
            kind::PING => Frame::Ping {
                nonce: coded(body, "ping")?,
            },
            kind::PONG => Frame::Pong {
                nonce: coded(body, "pong")?,
            },
            kind::RESUME => Frame::Resume(coded(body, "resume")?),
            kind::RESUME_OK => empty(body, Frame::ResumeOk, "resume ok")?,
            kind::PATH_SWITCH => empty(body, Frame::PathSwitch, "path switch")?,
            kind::GO_AWAY => Frame::GoAway(coded(body, "go away")?),
            other => return Err(FrameError::UnknownType(other)),
        };
        Ok((frame, used))
    }
}

/// The type byte and body of the frame at the front of `buf`, checking the
/// declared length before waiting for the body.
/// The stream and payload of a data frame's body, checked.
fn data_parts(body: &[u8]) -> Result<(u32, &[u8]), FrameError> {
    let (id, payload) = body
        .split_first_chunk::<4>()
        .ok_or_else(|| malformed("data", "no stream id"))?;
    if payload.len() > MAX_DATA_PAYLOAD_BYTES {
        return Err(FrameError::TooLarge {
            len: payload.len(),
            limit: MAX_DATA_PAYLOAD_BYTES,
        });
    }
    Ok((u32::from_be_bytes(*id), payload))
}

/// Byte offset of a data frame's payload within the frame.
pub const DATA_PAYLOAD_OFFSET: usize = HEADER_BYTES + 4;

/// If `buf` starts with a whole data frame: its stream and the frame's
/// length (the payload is `buf[DATA_PAYLOAD_OFFSET..len]`), with the checks
/// of [`Frame::decode`]. `None` for any other frame. Lets a receiver take
/// the payload out of its own buffer instead of copying it.
pub fn split_data(buf: &[u8]) -> Result<Option<(u32, usize)>, FrameError> {
    let (kind, body) = split_frame(buf)?;
    if kind != kind::DATA {
        return Ok(None);
    }
    let (stream, _) = data_parts(body)?;
    Ok(Some((stream, HEADER_BYTES + body.len())))
}

/// How many more bytes the frame begun in `buf` needs: 0 when `buf` holds a
/// whole frame (or a header that will fail to decode).
pub fn missing_bytes(buf: &[u8]) -> usize {
    match buf.first_chunk::<HEADER_BYTES>() {
        None => HEADER_BYTES - buf.len(),
        Some(header) => {
            let len = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
            if len > MAX_BODY_BYTES {
                return 0;
            }
            (HEADER_BYTES + len).saturating_sub(buf.len())
        }
    }
}

pub fn split_frame(buf: &[u8]) -> Result<(u8, &[u8]), FrameError> {
    let Some(header) = buf.first_chunk::<HEADER_BYTES>() else {
        return Err(FrameError::Incomplete);
    };
    let len = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
    if len > MAX_BODY_BYTES {
        return Err(FrameError::TooLarge {
            len,
            limit: MAX_BODY_BYTES,
        });
    }
    let body = buf
        .get(HEADER_BYTES..HEADER_BYTES + len)
        .ok_or(FrameError::Incomplete)?;
    Ok((header[0], body))
}

fn malformed(kind: &'static str, reason: &str) -> FrameError {
    FrameError::Malformed {
        kind,
        reason: reason.to_string(),
    }
}

fn coded<T: Serialize + serde::de::DeserializeOwned>(
    body: &[u8],
    kind: &'static str,
) -> Result<T, FrameError> {
    codec::decode(body, MAX_BODY_BYTES).map_err(|e| malformed(kind, &e.to_string()))
}

/// A server hello in its version's layout: version 4's, or the one before
/// it (a hello that says version 3 and has no policy).
fn server_hello(body: &[u8]) -> Result<ServerHello, FrameError> {
    match coded::<ServerHello>(body, "server hello") {
        Ok(hello) if hello.version >= 4 => Ok(hello),
        Ok(_) => Err(malformed("server hello", "a hello before version 4 carries no exit policy")),
        Err(e) => match coded::<ServerHelloV3>(body, "server hello") {
            Ok(old) if old.version < 4 => Ok(old.into_hello()),
            _ => Err(e),
        },
    }
}

fn empty(body: &[u8], frame: Frame, kind: &'static str) -> Result<Frame, FrameError> {
    if body.is_empty() {
        Ok(frame)
    } else {
        Err(malformed(kind, "unexpected body"))
    }
}

/// What the first frame of a fresh connection is, so a node's listener can
/// start a session or attach the connection to one it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FirstFrame {
    Hello,
    Resume { session_id: [u8; 16] },
}

/// Classifies the first frame of a connection (`Incomplete` until it is
/// whole); anything else is invalid.
pub fn first_frame(buf: &[u8]) -> Result<FirstFrame, FrameError> {
    let (kind, _) = split_frame(buf)?;
    match kind {
        kind::CLIENT_HELLO => Ok(FirstFrame::Hello),
        kind::RESUME => match Frame::decode(buf)? {
            (Frame::Resume(r), _) => Ok(FirstFrame::Resume {
                session_id: r.session_id,
            }),
            _ => Err(malformed("resume", "not a resume")),
        },
        other => Err(malformed(
            "first",
            &format!("a connection must start with a hello or resume, got 0x{other:02x}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control frame is its header (kind, 24-bit body length) and then
    /// exactly the codec's encoding of its body, written in place; and it
    /// decodes back to itself.
    #[test]
    fn a_control_frame_is_its_header_then_the_codec_encoding_of_its_body() {
        let refusal = Refusal { code: ErrorCode::Shutdown, message: "bye ".repeat(40) };
        let cases: [(Frame, u8, Vec<u8>); 3] = [
            (Frame::Opened { stream: 7 }, kind::OPENED, codec::encode(&7u32)),
            (Frame::Fin { stream: 70_000 }, kind::FIN, codec::encode(&70_000u32)),
            (Frame::GoAway(refusal.clone()), kind::GO_AWAY, codec::encode(&refusal)),
        ];
        for (frame, kind, body) in cases {
            let mut out = vec![0xAA]; // bytes already queued stay as they are
            frame.encode(&mut out);
            let len = (body.len() as u32).to_be_bytes();
            let mut want = vec![0xAA, kind, len[1], len[2], len[3]];
            want.extend_from_slice(&body);
            assert_eq!(out, want, "{frame:?}");
            assert_eq!(Frame::decode(&out[1..]).unwrap(), (frame, want.len() - 1));
        }
    }
}
