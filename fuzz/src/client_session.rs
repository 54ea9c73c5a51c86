//! The `client_session` target: untrusted bytes from a node into a
//! client-side session (crates/tunnel/src/session.rs). A client connects
//! to exits and relays it found in the market, so everything after its
//! hello is the node's word: the server hello's terms and baseline, and
//! every frame of the established session.

use crate::frame_decode::{feed_frame_by_frame, keys, signed_receipt, transmits_decode, BINDING, CHAIN, PRICE};
use crate::ByteSeed;
use std::time::{Duration, Instant};
use tollway_tunnel::frame::{Refusal, ServerHello, PROTOCOL_VERSION};
use tollway_tunnel::{ClientTerms, Dest, ErrorCode, Event, Frame, Host, Limits, Session};
use tollway_types::amount::Usd;
use tollway_types::tx::SignedReceipt;

/// The fuzzed client's escrow, in micro-dollars: small, so that an input
/// of a few data frames at [`PRICE`] spends it (two receipt intervals of
/// the seeds' hello, about 128 KiB).
pub const ESCROW: Usd = Usd(128);

/// A client session's contract on whatever a node sends it. Panics (a
/// finding for the fuzzer) if the session panics, transmits bytes that
/// are not whole, valid frames, or signs a receipt that is not for its
/// channel, goes past its escrow or goes back on an earlier one.
pub fn check_client_session(data: &[u8]) {
    let now = Instant::now();
    let mut whole = client_session(now);
    let mut paid = Paid::default();
    drive(&mut whole, now, &mut paid);
    whole.handle_input(now, 1, data);
    drive(&mut whole, now, &mut paid);
    whole.handle_timeout(now + Duration::from_secs(3600));
    drive(&mut whole, now, &mut paid);

    // Frame by frame, with the client acting in between, as its driver
    // reads a connection.
    let mut session = client_session(now);
    let mut paid = Paid::default();
    drive(&mut session, now, &mut paid);
    feed_frame_by_frame(&mut session, data, now, |s, t| drive(s, t, &mut paid));
}

fn client_session(now: Instant) -> Session {
    let k = keys();
    Session::client(
        ClientTerms {
            chain_id: CHAIN.into(),
            node: k.node,
            channel: k.channel,
            key: k.client.clone(),
            escrow: ESCROW,
            settled_bytes: 0,
            settled_usd: Usd::ZERO,
            max_price_usd_micro_per_gib: PRICE,
            limits: Limits {
                max_streams: 8,
                ..Limits::default()
            },
            earlier: Default::default(),
        },
        now,
        1,
        BINDING,
    )
}

/// The newest receipt the client sent in this session.
#[derive(Default)]
struct Paid {
    usd: Usd,
    bytes: u64,
}

/// Acts as a client's driver would (opens streams once established,
/// writes, reads, pings) and checks every byte the session transmits.
fn drive(session: &mut Session, now: Instant, paid: &mut Paid) {
    for _ in 0..1000 {
        let mut moved = false;
        while let Some(event) = session.poll_event() {
            moved = true;
            match event {
                Event::Established => {
                    for dest in [
                        Dest::new(Host::Domain("example.com".into()), 443),
                        Dest::new(Host::Ip([203, 0, 113, 7].into()), 80),
                    ] {
                        if let Ok(stream) = session.open_stream(dest) {
                            let _ = session.send(stream, b"GET / HTTP/1.1\r\n\r\n");
                        }
                    }
                    let _ = session.ping(now);
                }
                Event::Opened { stream } | Event::Writable { stream } => {
                    let _ = session.send(stream, &[0x61; 300]);
                }
                Event::Data { stream, payload } => {
                    session.consumed(now, stream, payload.len());
                    if payload.first() == Some(&0xff) {
                        session.finish(stream);
                    }
                    if payload.first() == Some(&0xfe) {
                        session.reset(stream, ErrorCode::Shutdown);
                    }
                }
                Event::Finished { stream } => session.finish(stream),
                other => {
                    let _ = format!("{other:?}");
                }
            }
        }
        moved |= transmits_decode(session, "client", |frame| {
            if let Frame::Receipt(r) = frame {
                check_receipt(r, paid);
            }
        });
        if !moved {
            return;
        }
    }
    panic!("the session did not settle");
}

/// Whatever the node said, a receipt the client signs is for its own
/// channel, within its escrow, and never below one it signed before.
fn check_receipt(r: &SignedReceipt, paid: &mut Paid) {
    let k = keys();
    assert!(r.verify(&k.client.public()).is_ok(), "a receipt that does not verify");
    assert!(
        r.receipt.channel == k.channel && r.receipt.chain_id == CHAIN,
        "a receipt for another channel: {r:?}"
    );
    assert!(
        r.receipt.cumulative_usd <= ESCROW,
        "signed {} with an escrow of {ESCROW}",
        r.receipt.cumulative_usd
    );
    assert!(
        r.receipt.cumulative_usd >= paid.usd && r.receipt.cumulative_bytes >= paid.bytes,
        "a receipt below the last one: {} B / {} after {} B / {}",
        r.receipt.cumulative_bytes,
        r.receipt.cumulative_usd,
        paid.bytes,
        paid.usd
    );
    paid.usd = r.receipt.cumulative_usd;
    paid.bytes = r.receipt.cumulative_bytes;
}

/// The hello a node following the protocol sends the fuzzed client: the
/// smallest receipt interval and credit window a client takes, so a short
/// input reaches both.
pub fn server_hello(baseline: Option<SignedReceipt>, carried_bytes: u64) -> Frame {
    Frame::ServerHello(ServerHello {
        version: PROTOCOL_VERSION,
        session_id: [5; 16],
        price_usd_micro_per_gib: PRICE,
        receipt_interval_bytes: INTERVAL_BYTES,
        credit_window_bytes: 2 * INTERVAL_BYTES,
        stream_window_bytes: 64 * 1024,
        max_streams: 8,
        session_window_bytes: 256 * 1024,
        baseline,
        carried_bytes,
        exit_policy: Some(tollway_tunnel::AnnouncedPolicy::default()),
    })
}

const INTERVAL_BYTES: u64 = 64 * 1024;

/// Seed inputs: hellos (plain, with a baseline, with carried bytes, with
/// terms the client refuses) and a whole node's side of a session.
pub fn seed_client_session() -> Vec<ByteSeed> {
    let mut seeds = Vec::new();
    let mut push = |name: &str, frames: &[Frame]| {
        let mut bytes = Vec::new();
        for f in frames {
            f.encode(&mut bytes);
        }
        seeds.push(ByteSeed {
            name: name.into(),
            bytes,
        });
    };
    push("hello", &[server_hello(None, 0)]);
    push("hello-baseline", &[server_hello(Some(signed_receipt(70_000, 66)), 0)]);
    push("hello-carried", &[server_hello(None, 2 * INTERVAL_BYTES)]);
    push(
        "hello-baseline-spent",
        &[server_hello(Some(signed_receipt(120_000, 112)), 4096)],
    );
    let mut greedy = server_hello(None, 0);
    if let Frame::ServerHello(h) = &mut greedy {
        h.price_usd_micro_per_gib = PRICE + 1;
    }
    push("hello-too-dear", &[greedy]);
    let mut session: Vec<Frame> = vec![
        server_hello(None, 0),
        Frame::Opened { stream: 1 },
        Frame::OpenFailed {
            stream: 3,
            code: ErrorCode::PolicyDenied,
        },
        Frame::Window {
            stream: 1,
            bytes: 8 * 1024,
        },
        Frame::Window {
            stream: 0,
            bytes: 8 * 1024,
        },
    ];
    // An interval's worth, in four full frames, each of its own bytes.
    session.extend((0x48..=0x4b).map(|fill| Frame::Data {
        stream: 1,
        payload: vec![fill; 16 * 1024],
    }));
    session.extend([
        Frame::ReceiptAccepted {
            cumulative_bytes: INTERVAL_BYTES,
        },
        Frame::Data {
            stream: 1,
            payload: vec![0x4c; 8000],
        },
        Frame::Paused {
            unpaid_bytes: 2 * INTERVAL_BYTES,
        },
        Frame::Ping { nonce: 9 },
        Frame::Pong { nonce: 1 },
        Frame::ReceiptRejected {
            code: "stale".into(),
            message: "not newer".into(),
        },
        Frame::Data {
            stream: 1,
            payload: vec![0xff; 100],
        },
        Frame::Fin { stream: 1 },
        Frame::Reset {
            stream: 3,
            code: ErrorCode::Timeout,
        },
        Frame::GoAway(Refusal {
            code: ErrorCode::EscrowExhausted,
            message: "spent".into(),
        }),
    ]);
    push("session", &session);
    push("session-open", &session[..session.len() - 1]);
    push("path-switch", &[server_hello(None, 0), Frame::PathSwitch]);
    push("resume-ok", &[server_hello(None, 0), Frame::ResumeOk]);
    push(
        "refuse",
        &[Frame::Refuse(Refusal {
            code: ErrorCode::ChannelBusy,
            message: "busy".into(),
        })],
    );
    seeds
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn seeds_pass_the_check() {
        crate::assert_seeds_pass(&seed_client_session(), check_client_session);
    }

    /// The seed session gets past the hello: the fuzzer starts from an
    /// established session with streams open.
    #[test]
    fn the_seed_session_is_established_and_pays() {
        let now = Instant::now();
        let mut session = client_session(now);
        let mut paid = Paid::default();
        drive(&mut session, now, &mut paid);
        let seeds = seed_client_session();
        let mut script = &seeds.iter().find(|s| s.name == "session-open").unwrap().bytes[..];
        while let Ok((_, body)) = tollway_tunnel::frame::split_frame(script) {
            let n = tollway_tunnel::frame::HEADER_BYTES + body.len();
            session.handle_input(now, 1, &script[..n]);
            drive(&mut session, now, &mut paid);
            script = &script[n..];
        }
        assert!(session.is_established(), "closed by the script");
        assert!(session.cumulative_bytes() > 0);
        assert!(paid.usd > Usd::ZERO, "no receipt was signed");
    }
}
