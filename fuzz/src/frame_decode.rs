//! The `frame_decode` target: untrusted bytes from a peer into the tunnel
//! protocol's frame decoder (crates/tunnel/src/frame.rs) and into a
//! node-side session, which is what a node runs on every byte a client
//! sends before and after the handshake.

use crate::{hex, ByteSeed};
use std::net::Ipv6Addr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tollway_ledger::state::Channel;
use tollway_tunnel::frame::{
    first_frame, split_frame, ClientHello, FirstFrame, Refusal, Resume, ServerHello, HEADER_BYTES,
    MAX_BODY_BYTES, MAX_DATA_PAYLOAD_BYTES, PROTOCOL_VERSION,
};
use tollway_tunnel::{
    ChannelInfo, ClientTerms, Dest, ErrorCode, Event, Frame, FrameError, Host, Limits, NodeTerms,
    Session,
};
use tollway_types::amount::Usd;
use tollway_types::keys::{AccountId, SigningKey};
use tollway_types::tx::{channel_id, ChannelId, Receipt, SignedReceipt};

/// The chain, node and TLS binding the fuzzed node session has; the seeds'
/// hello is signed for exactly these, so the fuzzer starts past the
/// handshake.
pub const CHAIN: &str = "tollway-fuzz";
pub const BINDING: [u8; 32] = [9; 32];
pub const PRICE: u64 = 1_000_000;

/// The number of [`Frame`] variants; [`frame_index`] maps onto `0..FRAME_VARIANTS`.
pub const FRAME_VARIANTS: usize = 20;

/// A dense index per variant. An exhaustive match with no wildcard: a new
/// variant fails to compile here, and the seed test then fails until it
/// has a seed.
pub fn frame_index(frame: &Frame) -> usize {
    match frame {
        Frame::ClientHello(_) => 0,
        Frame::ServerHello(_) => 1,
        Frame::Refuse(_) => 2,
        Frame::Open { .. } => 3,
        Frame::Opened { .. } => 4,
        Frame::OpenFailed { .. } => 5,
        Frame::Data { .. } => 6,
        Frame::Window { .. } => 7,
        Frame::Fin { .. } => 8,
        Frame::Reset { .. } => 9,
        Frame::Receipt(_) => 10,
        Frame::ReceiptAccepted { .. } => 11,
        Frame::ReceiptRejected { .. } => 12,
        Frame::Paused { .. } => 13,
        Frame::Ping { .. } => 14,
        Frame::Pong { .. } => 15,
        Frame::Resume(_) => 16,
        Frame::ResumeOk => 17,
        Frame::PathSwitch => 18,
        Frame::GoAway(_) => 19,
    }
}

/// The client's key, the node's id and their channel, for the tunnel
/// targets (this one and `client_session`).
pub(crate) struct Keys {
    pub(crate) client: SigningKey,
    pub(crate) node: AccountId,
    pub(crate) channel: ChannelId,
}

/// Deriving keys costs more than decoding a frame: once per process.
pub(crate) fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let client = SigningKey::from_label("fuzz-tunnel-client");
        let node = SigningKey::from_label("fuzz-tunnel-node").public();
        let channel = channel_id(&client.public(), 0);
        Keys {
            client,
            node,
            channel,
        }
    })
}

/// The frame decoder's contract on one untrusted input, then a node
/// session's. Panics (a finding for the fuzzer) if anything panics, or if:
///
/// * `decode` says `Incomplete` for an input that holds the whole header
///   and the whole declared body, or does not say it for one that does not
///   (and declares a legal length);
/// * it accepts a frame whose re-encoding is not exactly the bytes it
///   consumed, or whose re-encoding decodes to another frame;
/// * `split_frame` and `first_frame` disagree with `decode`;
/// * decoding a stream frame by frame ever consumes 0 bytes;
/// * a node session transmits bytes that are not whole, valid frames.
pub fn check_frame_decode(data: &[u8]) {
    check_one(data);
    check_first_frame(data);
    check_stream(data);
    check_node_session(data);
}

/// The body length the header declares, if there is a header.
fn declared_len(data: &[u8]) -> Option<usize> {
    let h = data.first_chunk::<HEADER_BYTES>()?;
    Some(u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize)
}

fn check_one(data: &[u8]) -> Option<(Frame, usize)> {
    let declared = declared_len(data);
    let short = match declared {
        None => true,
        Some(len) => len <= MAX_BODY_BYTES && data.len() < HEADER_BYTES + len,
    };
    let split = split_frame(data);
    match (&split, declared) {
        (Err(FrameError::Incomplete), _) => {
            assert!(short, "split_frame: Incomplete on {}", hex(data))
        }
        (Err(FrameError::TooLarge { len, limit }), Some(d)) => {
            assert!(*len == d && d > MAX_BODY_BYTES && *limit == MAX_BODY_BYTES)
        }
        (Ok((kind, body)), Some(d)) => {
            assert!(
                !short
                    && body.len() == d
                    && *kind == data[0]
                    && body[..] == data[HEADER_BYTES..HEADER_BYTES + d]
            )
        }
        (other, _) => panic!("split_frame gave {other:?} for {}", hex(data)),
    }
    match Frame::decode(data) {
        Err(FrameError::Incomplete) => {
            assert!(
                short,
                "Incomplete with the whole frame there ({} bytes, declared {declared:?}): {}",
                data.len(),
                hex(data)
            );
            None
        }
        Err(e) => {
            assert!(
                !short,
                "{e} on a short input instead of Incomplete: {}",
                hex(data)
            );
            if let Err(s) = &split {
                assert_eq!(s, &e, "split_frame and decode disagree");
            }
            let _ = e.to_string();
            None
        }
        Ok((frame, used)) => {
            assert!(!short, "decoded a frame from a short input: {}", hex(data));
            assert_eq!(
                Some(used),
                declared.map(|d| HEADER_BYTES + d),
                "used bytes are not the declared frame"
            );
            let consumed = &data[..used];
            let again = frame.to_bytes();
            assert!(
                again == consumed,
                "not re-encoded exactly ({frame:?})\n input      {}\n re-encoded {}",
                hex(consumed),
                hex(&again)
            );
            let mut appended = vec![0xaa];
            frame.encode(&mut appended);
            assert!(appended[1..] == again[..], "encode and to_bytes differ");
            let redecoded = Frame::decode(&again);
            assert!(
                matches!(&redecoded, Ok((f, u)) if f == &frame && *u == used),
                "{frame:?} re-encoded decodes as {redecoded:?}"
            );
            let _ = format!("{frame:?}");
            Some((frame, used))
        }
    }
}

fn check_first_frame(data: &[u8]) {
    let decoded = Frame::decode(data);
    match first_frame(data) {
        Ok(FirstFrame::Hello) => {
            assert_eq!(Some(&data[0]), kind_of(&sample_hello()).as_ref());
            assert!(split_frame(data).is_ok());
        }
        Ok(FirstFrame::Resume { session_id }) => assert!(
            matches!(&decoded, Ok((Frame::Resume(r), _)) if r.session_id == session_id),
            "first_frame said resume, decode said {decoded:?}"
        ),
        Err(FrameError::Incomplete) => {
            assert_eq!(split_frame(data).err(), Some(FrameError::Incomplete))
        }
        Err(e) => {
            let _ = e.to_string();
            assert!(!matches!(
                &decoded,
                Ok((Frame::ClientHello(_) | Frame::Resume(_), _))
            ));
        }
    }
}

/// Frame after frame, as a session reads a connection.
fn check_stream(data: &[u8]) {
    let mut rest = data;
    let mut reencoded = Vec::with_capacity(data.len());
    while let Ok((frame, used)) = Frame::decode(rest) {
        assert!(
            used >= HEADER_BYTES && used <= rest.len(),
            "consumed {used} of {}",
            rest.len()
        );
        frame.encode(&mut reencoded);
        rest = &rest[used..];
    }
    let consumed = data.len() - rest.len();
    assert!(
        reencoded == data[..consumed],
        "the frames re-encode to other bytes"
    );
    // Whatever stopped the loop, `decode` sees it alone the same way.
    if !rest.is_empty() {
        check_one(rest);
    }
}

fn kind_of(frame: &Frame) -> Option<u8> {
    frame.to_bytes().first().copied()
}

fn sample_hello() -> Frame {
    let k = keys();
    Frame::ClientHello(ClientHello {
        version: PROTOCOL_VERSION,
        chain_id: CHAIN.into(),
        node: k.node,
        channel: k.channel,
        client: k.client.public(),
        signature: k.client.sign(b"not the hello"),
    })
}

/// Feeds the input to node sessions the way a driver would: all at once,
/// and frame by frame with the driver answering events in between (so a
/// hello that verifies gets a channel and what follows meets an
/// established session).
fn check_node_session(data: &[u8]) {
    let now = Instant::now();
    let mut whole = node_session(now);
    whole.handle_input(now, 1, data);
    drain(&mut whole, now);
    whole.handle_timeout(now + Duration::from_secs(3600));
    drain(&mut whole, now);

    let mut session = node_session(now);
    feed_frame_by_frame(&mut session, data, now, drain);
}

/// Hands `data` to `session` a frame at a time, a millisecond apart, with
/// `settle` run after each and after a last hour-long timeout; then
/// nothing may be left to transmit.
pub(crate) fn feed_frame_by_frame(session: &mut Session, data: &[u8], now: Instant, mut settle: impl FnMut(&mut Session, Instant)) {
    let mut rest = data;
    let mut t = now;
    while !rest.is_empty() {
        let n = match split_frame(rest) {
            Ok((_, body)) => HEADER_BYTES + body.len(),
            // A bad frame, or the tail: deliver it in two pieces.
            Err(_) => rest.len().div_ceil(2),
        };
        t += Duration::from_millis(1);
        // Owned reads, as the driver hands them over (data payloads are
        // then slices of these buffers).
        session.handle_input_owned(t, 1, rest[..n].to_vec());
        settle(session, t);
        rest = &rest[n..];
    }
    let _ = (
        session.unpaid_bytes(),
        session.cumulative_bytes(),
        session.poll_timeout(),
    );
    session.handle_timeout(t + Duration::from_secs(3600));
    settle(session, t);
    assert!(session.poll_transmit().is_none());
}

fn node_session(now: Instant) -> Session {
    let mut terms = NodeTerms::new(CHAIN.into(), keys().node, PRICE);
    // Small, so a short input reaches the credit window and pauses.
    terms.receipt_interval_bytes = 4096;
    terms.credit_window_bytes = 16 * 1024;
    terms.limits = Limits {
        stream_window_bytes: 8 * 1024,
        max_streams: 8,
        max_unsent_bytes: 64 * 1024,
        ..Limits::default()
    };
    Session::node(terms, now, 1, BINDING, [5; 16])
}

/// Answers the session's events and takes what it transmits, checking
/// that it is whole, valid frames.
fn drain(session: &mut Session, now: Instant) {
    for _ in 0..1000 {
        let mut moved = false;
        while let Some(event) = session.poll_event() {
            moved = true;
            match event {
                Event::ChannelNeeded { client, .. } => {
                    let channel = Channel::opened(client, keys().node, Usd::units(1_000), u64::MAX);
                    session.handle_channel(
                        now,
                        Ok(ChannelInfo {
                            channel,
                            latest_receipt: None,
                            expired: false,
                            carried_bytes: 0,
                        }),
                    );
                }
                Event::OpenRequested { stream, dest } => {
                    if dest.port == 25 {
                        session.refuse_stream(stream, ErrorCode::PolicyDenied);
                    } else {
                        session.accept_stream(stream);
                    }
                }
                Event::Data { stream, payload } => {
                    session.consumed(now, stream, payload.len());
                    // An echo: metering and the credit window downstream.
                    let _ = session.send(stream, &payload);
                    if payload.first() == Some(&0xff) {
                        session.finish(stream);
                    }
                }
                other => {
                    let _ = format!("{other:?}");
                }
            }
        }
        moved |= transmits_decode(session, "node", |_| {});
        if !moved {
            return;
        }
    }
    panic!("the session did not settle");
}

/// Takes what `session` transmits, each frame of which must decode (on
/// path 1, the only one) and goes to `on_frame`; whether there was any.
/// `who` names the side in a failure.
pub(crate) fn transmits_decode(session: &mut Session, who: &str, mut on_frame: impl FnMut(&Frame)) -> bool {
    let mut any = false;
    while let Some((path, bytes)) = session.poll_transmit() {
        any = true;
        assert_eq!(path, 1, "transmitted on a path that does not exist");
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            match Frame::decode(rest) {
                Ok((frame, used)) => {
                    on_frame(&frame);
                    rest = &rest[used..];
                }
                Err(e) => panic!("the {who} transmitted a bad frame ({e}): {}", hex(&rest[..rest.len().min(64)])),
            }
        }
    }
    any
}

/// A client's signed hello for the fuzzed node, the way a client session
/// sends it.
fn signed_hello() -> Vec<u8> {
    let k = keys();
    let mut client = Session::client(
        ClientTerms {
            chain_id: CHAIN.into(),
            node: k.node,
            channel: k.channel,
            key: k.client.clone(),
            escrow: Usd::units(1_000),
            settled_bytes: 0,
            settled_usd: Usd::ZERO,
            max_price_usd_micro_per_gib: PRICE,
            limits: Limits::default(),
            earlier: Default::default(),
        },
        Instant::now(),
        1,
        BINDING,
    );
    let mut out = Vec::new();
    while let Some((_, bytes)) = client.poll_transmit() {
        out.extend_from_slice(&bytes);
    }
    out
}

fn receipt(bytes: u64) -> SignedReceipt {
    signed_receipt(bytes, u128::from(bytes))
}

/// A receipt the fuzzed client signed on its channel, for `bytes` and
/// `usd` micro-dollars in all.
pub(crate) fn signed_receipt(bytes: u64, usd: u128) -> SignedReceipt {
    let k = keys();
    Receipt {
        chain_id: CHAIN.into(),
        channel: k.channel,
        cumulative_usd: Usd(usd),
        cumulative_bytes: bytes,
    }
    .sign(&k.client)
}

/// Every frame variant with ordinary values (the values need not be
/// consistent; `valid` frames all decode), and extremes.
pub fn seed_frames() -> Vec<(String, Frame)> {
    let k = keys();
    let refusal = |code, message: &str| Refusal {
        code,
        message: message.into(),
    };
    let domain = |name: &str, port| Dest::new(Host::Domain(name.into()), port);
    let mut frames: Vec<(&str, Frame)> = vec![
        ("client-hello", sample_hello()),
        (
            "server-hello",
            Frame::ServerHello(ServerHello {
                version: PROTOCOL_VERSION,
                session_id: [5; 16],
                price_usd_micro_per_gib: PRICE,
                receipt_interval_bytes: 1 << 20,
                credit_window_bytes: 2 << 20,
                stream_window_bytes: 512 * 1024,
                max_streams: 1024,
                session_window_bytes: 8 << 20,
                baseline: Some(receipt(1 << 20)),
                carried_bytes: 512 * 1024,
                exit_policy: Some(tollway_tunnel::AnnouncedPolicy::default()),
            }),
        ),
        (
            "refuse",
            Frame::Refuse(refusal(ErrorCode::BadHello, "bad hello")),
        ),
        (
            "open",
            Frame::Open {
                stream: 1,
                dest: domain("example.com", 443),
            },
        ),
        ("opened", Frame::Opened { stream: 1 }),
        (
            "open-failed",
            Frame::OpenFailed {
                stream: 3,
                code: ErrorCode::DnsFailed,
            },
        ),
        (
            "data",
            Frame::Data {
                stream: 1,
                payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            },
        ),
        (
            "window",
            Frame::Window {
                stream: 1,
                bytes: 65536,
            },
        ),
        (
            "window-session",
            Frame::Window {
                stream: 0,
                bytes: 2 << 20,
            },
        ),
        ("fin", Frame::Fin { stream: 1 }),
        (
            "reset",
            Frame::Reset {
                stream: 1,
                code: ErrorCode::Timeout,
            },
        ),
        ("receipt", Frame::Receipt(receipt(4096))),
        (
            "receipt-accepted",
            Frame::ReceiptAccepted {
                cumulative_bytes: 4096,
            },
        ),
        (
            "receipt-rejected",
            Frame::ReceiptRejected {
                code: "stale".into(),
                message: "not newer".into(),
            },
        ),
        (
            "paused",
            Frame::Paused {
                unpaid_bytes: 1 << 21,
            },
        ),
        ("ping", Frame::Ping { nonce: 1 }),
        ("pong", Frame::Pong { nonce: 1 }),
        (
            "resume",
            Frame::Resume(Resume {
                session_id: [5; 16],
                proof: [7; 32],
            }),
        ),
        ("resume-ok", Frame::ResumeOk),
        ("path-switch", Frame::PathSwitch),
        (
            "go-away",
            Frame::GoAway(refusal(ErrorCode::Shutdown, "bye")),
        ),
    ];
    frames.extend([
        (
            "open-v6",
            Frame::Open {
                stream: u32::MAX,
                dest: Dest::new(
                    Host::Ip(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into()),
                    65535,
                ),
            },
        ),
        (
            "open-v4",
            Frame::Open {
                stream: 0,
                dest: Dest::new(Host::Ip([203, 0, 113, 7].into()), 1),
            },
        ),
        (
            "open-max-domain",
            Frame::Open {
                stream: 1,
                dest: domain(&"a".repeat(tollway_tunnel::dest::MAX_DOMAIN_BYTES), 80),
            },
        ),
        (
            "data-max",
            Frame::Data {
                stream: u32::MAX,
                payload: vec![0x5a; MAX_DATA_PAYLOAD_BYTES],
            },
        ),
        (
            "data-empty",
            Frame::Data {
                stream: 0,
                payload: Vec::new(),
            },
        ),
        ("ping-max", Frame::Ping { nonce: u64::MAX }),
        (
            "window-max",
            Frame::Window {
                stream: u32::MAX,
                bytes: u32::MAX,
            },
        ),
        (
            "receipt-max",
            Frame::Receipt(
                Receipt {
                    chain_id: "c".repeat(64),
                    channel: k.channel,
                    cumulative_usd: Usd(u128::MAX),
                    cumulative_bytes: u64::MAX,
                }
                .sign(&k.client),
            ),
        ),
    ]);
    frames
        .into_iter()
        .map(|(name, frame)| (name.to_string(), frame))
        .collect()
}

/// Seed inputs: each frame alone, a whole client conversation after a
/// hello the fuzzed node accepts, and a few just-invalid inputs.
pub fn seed_frame_decode() -> Vec<ByteSeed> {
    let mut seeds: Vec<ByteSeed> = seed_frames()
        .into_iter()
        .map(|(name, frame)| ByteSeed {
            name,
            bytes: frame.to_bytes(),
        })
        .collect();

    // A session: hello, streams, data past the credit window, receipts,
    // pings, a path switch marker and a goodbye.
    let mut session = signed_hello();
    let frames = [
        Frame::Open {
            stream: 1,
            dest: Dest::new(Host::Domain("example.com".into()), 443),
        },
        Frame::Open {
            stream: 3,
            dest: Dest::new(Host::Ip([10, 0, 0, 1].into()), 25),
        },
        Frame::Data {
            stream: 1,
            payload: vec![0x41; 8000],
        },
        Frame::Window {
            stream: 1,
            bytes: 8000,
        },
        Frame::Window {
            stream: 0,
            bytes: 8000,
        },
        Frame::Data {
            stream: 1,
            payload: vec![0x42; 8000],
        },
        Frame::Receipt(receipt(4096)),
        Frame::Ping { nonce: 7 },
        Frame::Pong { nonce: 1 },
        Frame::Data {
            stream: 1,
            payload: vec![0xff; 100],
        },
        Frame::Fin { stream: 1 },
        Frame::Reset {
            stream: 3,
            code: ErrorCode::Shutdown,
        },
        Frame::Receipt(receipt(1 << 20)),
    ];
    for frame in &frames {
        frame.encode(&mut session);
    }
    seeds.push(ByteSeed {
        name: "session".into(),
        bytes: session.clone(),
    });
    let mut closing = session.clone();
    Frame::PathSwitch.encode(&mut closing);
    Frame::GoAway(Refusal {
        code: ErrorCode::Shutdown,
        message: "bye".into(),
    })
    .encode(&mut closing);
    seeds.push(ByteSeed {
        name: "session-closing".into(),
        bytes: closing,
    });
    seeds.push(ByteSeed {
        name: "session-truncated".into(),
        bytes: session[..session.len() - 3].to_vec(),
    });

    // The limits: one byte over the largest body, and an unknown type.
    let over = (MAX_BODY_BYTES as u32 + 1).to_be_bytes();
    let mut too_large = vec![0x13, over[1], over[2], over[3]];
    too_large.extend_from_slice(&[0; 64]);
    seeds.push(ByteSeed {
        name: "data-over-limit".into(),
        bytes: too_large,
    });
    seeds.push(ByteSeed {
        name: "unknown-type".into(),
        bytes: vec![0x7f, 0, 0, 1, 1],
    });
    seeds
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn seeds_cover_every_frame_variant_and_decode() {
        let mut seen = [false; FRAME_VARIANTS];
        for (name, frame) in seed_frames() {
            let bytes = frame.to_bytes();
            assert_eq!(
                Frame::decode(&bytes),
                Ok((frame.clone(), bytes.len())),
                "{name}"
            );
            seen[frame_index(&frame)] = true;
        }
        let missing: Vec<usize> = (0..FRAME_VARIANTS).filter(|&i| !seen[i]).collect();
        assert!(
            missing.is_empty(),
            "no seed for Frame variant(s) {missing:?}"
        );

        crate::assert_seeds_pass(&seed_frame_decode(), check_frame_decode);
    }

    /// The seed session gets past the handshake: the hello verifies, so
    /// the fuzzer starts from an established session.
    #[test]
    fn the_seed_session_is_established_and_served() {
        let now = Instant::now();
        let mut session = node_session(now);
        let hello = signed_hello();
        session.handle_input(now, 1, &hello);
        drain(&mut session, now);
        assert!(session.is_established());
        let seeds = seed_frame_decode();
        let script = &seeds.iter().find(|s| s.name == "session").unwrap().bytes;
        session.handle_input(now, 1, &script[hello.len()..]);
        drain(&mut session, now);
        assert!(session.cumulative_bytes() > 0);
    }

    #[test]
    fn check_accepts_garbage_that_the_decoder_refuses() {
        for input in [
            &[][..],
            &[0x13],
            &[0x13, 0, 0],
            &[0x13, 0, 0, 0],
            &[0x13, 0, 0, 3, 1, 2, 3],
            &[0x01, 0, 0, 0],
            &[0x40, 0, 0, 1, 1],
            &[0x41, 0, 0, 1, 0],
            &[0x42, 0, 0, 0, 0x42, 0, 0, 0],
            &[0xff, 0xff, 0xff, 0xff],
        ] {
            check_frame_decode(input);
        }
    }
}
