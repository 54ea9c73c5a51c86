//! Two sessions, client and node, wired back to back on virtual time
//! (quinn-proto's `Pair`): every byte one side transmits is delivered to the
//! other, optionally through a filter that drops frames, so payment and
//! path switching are tested without sockets or clocks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use tollway_ledger::state::Channel;
use tollway_tunnel::frame::{Frame, FrameError, ServerHello, PROTOCOL_VERSION};
use tollway_tunnel::session::{
    ChannelInfo, ClientTerms, EarlierSessions, Event, Limits, NodeTerms, PathId, Session, StreamId,
};
use tollway_tunnel::{Dest, ErrorCode};
use tollway_types::amount::Usd;
use tollway_types::keys::SigningKey;
use tollway_types::tx::{channel_id, ChannelId, Receipt, SignedReceipt};

const CHAIN: &str = "tollway-test";
const PRICE: u64 = 1_000_000; // 1 USD per GiB
const MIB: u64 = 1 << 20;

struct Pair {
    now: Instant,
    client: Session,
    node: Session,
    client_key: SigningKey,
    channel_id: ChannelId,
    channel: Channel,
    /// Frames from the client the harness drops (e.g. receipts).
    drop_client_frame: fn(&Frame) -> bool,
    client_events: Vec<Event>,
    node_events: Vec<Event>,
    /// What each side received per stream.
    client_got: BTreeMap<StreamId, Vec<u8>>,
    node_got: BTreeMap<StreamId, Vec<u8>>,
    max_unpaid_bytes: u64,
    /// Reads handed over so far: picks where the next one is cut.
    reads: u64,
    /// Whether the node's "destinations" read what arrives (the harness
    /// consumes each delivery at once); false plays ones that never read.
    node_consumes: bool,
    /// The newest receipt the node holds for the channel, as its lookup
    /// gives it to the session.
    latest_receipt: Option<SignedReceipt>,
    /// What the node's lookup says a session taken over left unpaid.
    carried_bytes: u64,
    /// Whether the client's "programs" read what arrives (the harness
    /// consumes each delivery at once); false plays ones that never read.
    client_consumes: bool,
    /// Once `Some`, the client's programs read what arrives only at the
    /// next `advance`, as a driver writes to their sockets after the
    /// session took the bytes in: what waits, by stream.
    client_reads_late: Option<Vec<(StreamId, usize)>>,
    /// Each transmit of the client's, as the node got it, once `Some`.
    client_transmits: Option<Vec<Vec<u8>>>,
    /// The node-to-client link's rate, if slow: what the node transmits
    /// waits in `downlink` and crosses at this rate as `advance` moves the
    /// clock (a line the link leaves idle is not banked).
    downlink_bytes_per_sec: Option<u64>,
    downlink: VecDeque<(PathId, Vec<u8>)>,
    downlink_budget_bytes: u64,
    /// Once `Some`, what each side transmits reaches the other this long
    /// after (a long path: half its round trip), in order.
    one_way_delay: Option<Duration>,
    in_flight: VecDeque<(Instant, bool, PathId, Vec<u8>)>,
}

fn keep(_: &Frame) -> bool {
    false
}

fn channel_for(client: &SigningKey, node: &SigningKey, escrow: Usd) -> (ChannelId, Channel) {
    let channel = Channel::opened(client.public(), node.public(), escrow, 1_000_000);
    (channel_id(&client.public(), 0), channel)
}

impl Pair {
    fn new(escrow: Usd) -> Pair {
        Pair::with_binding(escrow, [9; 32], [9; 32])
    }

    /// `client_binding` differs from `node_binding` when the TLS
    /// connection under the hello is not the one it was signed for.
    fn with_binding(escrow: Usd, client_binding: [u8; 32], node_binding: [u8; 32]) -> Pair {
        Pair::build(escrow, client_binding, node_binding, |_| {})
    }

    /// `adjust` changes the node's terms before its session starts.
    fn build(
        escrow: Usd,
        client_binding: [u8; 32],
        node_binding: [u8; 32],
        adjust: fn(&mut NodeTerms),
    ) -> Pair {
        Pair::build_after(escrow, client_binding, node_binding, adjust, EarlierSessions::default())
    }

    /// A pair whose client remembers `earlier` sessions on the channel (as
    /// its proxy does within a process).
    fn remembering(escrow: Usd, earlier: EarlierSessions) -> Pair {
        Pair::build_after(escrow, [9; 32], [9; 32], |_| {}, earlier)
    }

    fn build_after(
        escrow: Usd,
        client_binding: [u8; 32],
        node_binding: [u8; 32],
        adjust: fn(&mut NodeTerms),
        earlier: EarlierSessions,
    ) -> Pair {
        let now = Instant::now();
        let client_key = SigningKey::from_label("client");
        let node_key = SigningKey::from_label("node");
        let (channel_id, channel) = channel_for(&client_key, &node_key, escrow);
        let limits = Limits {
            stream_window_bytes: 256 * 1024,
            ..Limits::default()
        };
        let client = Session::client(
            ClientTerms {
                chain_id: CHAIN.into(),
                node: node_key.public(),
                channel: channel_id,
                key: client_key.clone(),
                escrow,
                settled_bytes: 0,
                settled_usd: Usd::ZERO,
                max_price_usd_micro_per_gib: PRICE,
                limits: limits.clone(),
                earlier,
            },
            now,
            1,
            client_binding,
        );
        let mut terms = NodeTerms::new(CHAIN.into(), node_key.public(), PRICE);
        terms.limits = limits;
        adjust(&mut terms);
        let node = Session::node(terms, now, 1, node_binding, [5; 16]);
        Pair {
            now,
            client,
            node,
            client_key,
            channel_id,
            channel,
            drop_client_frame: keep,
            client_events: Vec::new(),
            node_events: Vec::new(),
            client_got: BTreeMap::new(),
            node_got: BTreeMap::new(),
            max_unpaid_bytes: 0,
            reads: 0,
            node_consumes: true,
            latest_receipt: None,
            carried_bytes: 0,
            client_consumes: true,
            client_reads_late: None,
            client_transmits: None,
            downlink_bytes_per_sec: None,
            downlink: VecDeque::new(),
            downlink_budget_bytes: 0,
            one_way_delay: None,
            in_flight: VecDeque::new(),
        }
    }

    /// Moves the clock on by `dt`: the slow downlink carries what `dt`
    /// allows, and each side's timer runs if due.
    fn advance(&mut self, dt: Duration) {
        self.now += dt;
        if let Some(waiting) = self.client_reads_late.as_mut() {
            for (stream, n) in std::mem::take(waiting) {
                self.client.consumed(self.now, stream, n);
            }
        }
        if let Some(rate) = self.downlink_bytes_per_sec {
            self.downlink_budget_bytes += rate * dt.as_millis() as u64 / 1000;
        }
        self.drive();
        for side in [&mut self.client, &mut self.node] {
            if side.poll_timeout().is_some_and(|t| t <= self.now) {
                side.handle_timeout(self.now);
            }
        }
        self.drive();
    }

    /// Hands the client what the slow downlink carries now; whether it
    /// carried anything.
    fn cross_downlink(&mut self) -> bool {
        let mut moved = false;
        while self.downlink_budget_bytes > 0 {
            let Some((path, mut bytes)) = self.downlink.pop_front() else { break };
            let budget = usize::try_from(self.downlink_budget_bytes).unwrap();
            if bytes.len() > budget {
                let rest = bytes.split_off(budget);
                self.downlink.push_front((path, rest));
            }
            self.downlink_budget_bytes -= bytes.len() as u64;
            deliver(&mut self.client, self.now, path, bytes, &mut self.reads);
            moved = true;
        }
        if self.downlink.is_empty() {
            self.downlink_budget_bytes = 0;
        }
        moved
    }

    /// Moves bytes and handles events until nothing changes.
    fn drive(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            while let Some((path, bytes)) = self.client.poll_transmit() {
                let bytes = filter(&bytes, self.drop_client_frame);
                if let Some(kept) = self.client_transmits.as_mut() {
                    kept.push(bytes.clone());
                }
                match self.one_way_delay {
                    Some(delay) => self.in_flight.push_back((self.now + delay, true, path, bytes)),
                    None => deliver(&mut self.node, self.now, path, bytes, &mut self.reads),
                }
                moved = true;
            }
            while let Some((path, bytes)) = self.node.poll_transmit() {
                match self.downlink_bytes_per_sec {
                    Some(_) => self.downlink.push_back((path, bytes)),
                    None if self.one_way_delay.is_some() => {
                        let at = self.now + self.one_way_delay.unwrap_or_default();
                        self.in_flight.push_back((at, false, path, bytes));
                    }
                    None => deliver(&mut self.client, self.now, path, bytes, &mut self.reads),
                }
                moved = true;
            }
            moved |= self.cross_downlink();
            while self.in_flight.front().is_some_and(|(at, ..)| *at <= self.now) {
                let Some((_, to_node, path, bytes)) = self.in_flight.pop_front() else { break };
                let to = if to_node { &mut self.node } else { &mut self.client };
                deliver(to, self.now, path, bytes, &mut self.reads);
                moved = true;
            }
            while let Some(e) = self.node.poll_event() {
                moved = true;
                match &e {
                    Event::ChannelNeeded { .. } => {
                        let info = ChannelInfo {
                            channel: self.channel.clone(),
                            latest_receipt: self.latest_receipt.clone(),
                            expired: false,
                            carried_bytes: self.carried_bytes,
                        };
                        self.node.handle_channel(self.now, Ok(info));
                    }
                    Event::OpenRequested { stream, .. } => self.node.accept_stream(*stream),
                    Event::Data { stream, payload } => {
                        self.node_got
                            .entry(*stream)
                            .or_default()
                            .extend_from_slice(payload);
                        if self.node_consumes {
                            self.node.consumed(self.now, *stream, payload.len());
                        }
                    }
                    _ => {}
                }
                self.node_events.push(e);
            }
            while let Some(e) = self.client.poll_event() {
                moved = true;
                if let Event::Data { stream, payload } = &e {
                    self.client_got
                        .entry(*stream)
                        .or_default()
                        .extend_from_slice(payload);
                    match self.client_reads_late.as_mut() {
                        Some(waiting) => waiting.push((*stream, payload.len())),
                        None if self.client_consumes => self.client.consumed(self.now, *stream, payload.len()),
                        None => {}
                    }
                }
                self.client_events.push(e);
            }
            self.max_unpaid_bytes = self.max_unpaid_bytes.max(self.node.unpaid_bytes());
            if !moved {
                return;
            }
        }
        panic!("the pair did not settle");
    }

    fn established(escrow: Usd) -> Pair {
        let mut pair = Pair::new(escrow);
        pair.drive();
        assert!(
            pair.client.is_established() && pair.node.is_established(),
            "{:?}",
            pair.client_events
        );
        pair
    }

    /// Sends `data` from `from_client`'s side on `stream` as fast as the
    /// window allows; returns how much went.
    fn pump(&mut self, stream: StreamId, data: &[u8], from_client: bool) -> usize {
        let mut sent = 0;
        for _ in 0..100_000 {
            if sent == data.len() {
                break;
            }
            let side = if from_client {
                &mut self.client
            } else {
                &mut self.node
            };
            let n = side.send(stream, &data[sent..]).unwrap_or(0);
            sent += n;
            self.drive();
            if n == 0 {
                // Nothing went and nothing moved: stuck (e.g. unpaid).
                // What the driving let go now counts too: uncounted, it
                // was sent again, without end.
                let side = if from_client {
                    &mut self.client
                } else {
                    &mut self.node
                };
                match side.send(stream, &data[sent..]).unwrap_or(0) {
                    0 => break,
                    m => sent += m,
                }
            }
        }
        sent
    }

    fn receipt(&self, key: &SigningKey, usd: u128, bytes: u64) -> SignedReceipt {
        Receipt {
            chain_id: CHAIN.into(),
            channel: self.channel_id,
            cumulative_usd: Usd(usd),
            cumulative_bytes: bytes,
        }
        .sign(key)
    }

    fn rejected_codes(&self) -> Vec<String> {
        self.node_events
            .iter()
            .filter_map(|e| match e {
                Event::ReceiptRejected { code, .. } => Some(code.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Hands `bytes` to `to` as a driver's reads would: cut at varying points
/// (whole, a few bytes, up to 40 KiB, so frames straddle reads), some
/// owned (`handle_input_owned`, the driver's path) and some borrowed.
fn deliver(to: &mut Session, now: Instant, path: PathId, bytes: Vec<u8>, reads: &mut u64) {
    let mut rest = bytes;
    while !rest.is_empty() {
        *reads += 1;
        let x = reads.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let cut = match x >> 60 & 3 {
            0 => rest.len(),
            1 => 1 + (x >> 8) as usize % 7,
            _ => 1 + (x >> 8) as usize % (40 * 1024),
        }
        .min(rest.len());
        let tail = rest.split_off(cut);
        if x >> 59 & 1 == 0 {
            to.handle_input_owned(now, path, rest);
        } else {
            to.handle_input(now, path, &rest);
        }
        rest = tail;
    }
}

/// Re-encodes `bytes` (whole frames) without the frames `drop` picks.
fn filter(bytes: &[u8], drop: fn(&Frame) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        let (frame, used) = Frame::decode(rest).expect("sessions transmit whole frames");
        if !drop(&frame) {
            out.extend_from_slice(&rest[..used]);
        }
        rest = &rest[used..];
    }
    out
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn dest() -> Dest {
    "example.com:443".parse().unwrap()
}

#[test]
fn bytes_cross_both_ways_byte_exact_and_receipts_pay_for_them() {
    let mut pair = Pair::established(Usd(10_000_000));
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    assert!(pair.node_events.contains(&Event::OpenRequested {
        stream: s,
        dest: dest()
    }));
    assert!(pair.client_events.contains(&Event::Opened { stream: s }));
    let up = pattern(3 * MIB as usize + 123, 1);
    let down = pattern(5 * MIB as usize + 7, 2);
    assert_eq!(pair.pump(s, &up, true), up.len());
    assert_eq!(pair.pump(s, &down, false), down.len());
    pair.client.finish(s);
    pair.node.finish(s);
    pair.drive();
    assert!(pair.node_got[&s] == up, "upstream bytes differ");
    assert!(pair.client_got[&s] == down, "downstream bytes differ");
    assert!(pair.node_events.contains(&Event::Finished { stream: s }));
    assert!(pair.client_events.contains(&Event::Finished { stream: s }));
    assert_eq!(pair.client.n_streams(), 0);
    assert_eq!(pair.node.n_streams(), 0);
    // A receipt per MiB, all accepted; the node's meter and the client's
    // agree once everything has arrived.
    let total = (up.len() + down.len()) as u64;
    assert_eq!(pair.node.cumulative_bytes(), total);
    assert_eq!(pair.client.cumulative_bytes(), total);
    let accepted: Vec<&SignedReceipt> = pair
        .node_events
        .iter()
        .filter_map(|e| match e {
            Event::ReceiptAccepted { receipt } => Some(receipt),
            _ => None,
        })
        .collect();
    // A receipt comes once a MiB has passed since the last one, so they
    // drift by up to a frame each: 7 or 8 of them for 8 MiB and a bit.
    let n = accepted.len() as u64;
    assert!(n == total / MIB || n == total / MIB - 1, "{n} receipts for {total} bytes");
    assert!(pair.rejected_codes().is_empty());
    let last = &accepted.last().unwrap().receipt;
    assert!(total - last.cumulative_bytes < MIB, "the last receipt leaves less than a MiB unpaid: {last:?}");
    assert_eq!(
        last.cumulative_usd,
        tollway_ledger::cost_of_bytes(PRICE, last.cumulative_bytes)
    );
    assert!(pair.max_unpaid_bytes <= 2 * MIB);
}

#[test]
fn small_and_large_writes_arrive_byte_exact_however_the_reads_cut_them() {
    // Payloads below 8 KiB are copied out of the read buffer, larger ones
    // are slices of it: both, in every order, across reads cut anywhere.
    let mut pair = Pair::established(Usd(10_000_000));
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    for from_client in [false, true] {
        let data = pattern(700 * 1024 + 5, 3 + from_client as u8);
        let (mut sent, mut k) = (0, 0);
        while sent < data.len() {
            k += 1;
            let size = [1, 100, 4095, 8192, 8200, 16384, 30000][k % 7].min(data.len() - sent);
            assert_eq!(pair.pump(s, &data[sent..sent + size], from_client), size);
            sent += size;
        }
        let got = if from_client { &pair.node_got } else { &pair.client_got };
        assert!(got.get(&s).map(Vec::as_slice) == Some(&data[..]), "bytes differ (from the client: {from_client})");
    }
}

#[test]
fn a_client_that_stops_paying_is_paused_at_the_credit_window() {
    let mut pair = Pair::established(Usd(10_000_000));
    pair.drop_client_frame = |f| matches!(f, Frame::Receipt(_));
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    let down = pattern(6 * MIB as usize, 3);
    let sent = pair.pump(s, &down, false);
    // The node stopped exactly at the window and never went past it.
    assert_eq!(sent as u64, 2 * MIB, "node served {sent} bytes unpaid");
    assert_eq!(pair.max_unpaid_bytes, 2 * MIB);
    assert!(pair
        .node_events
        .iter()
        .any(|e| matches!(e, Event::Paused { unpaid_bytes } if *unpaid_bytes == 2 * MIB)));
    assert!(pair
        .client_events
        .iter()
        .any(|e| matches!(e, Event::Paused { .. })));
    // Upstream is held too: the node delivers nothing more.
    let before = pair.node_got.get(&s).map_or(0, Vec::len);
    pair.pump(s, &pattern(100_000, 4), true);
    assert_eq!(pair.node_got.get(&s).map_or(0, Vec::len), before);
    assert_eq!(pair.node.unpaid_bytes(), 2 * MIB);

    // Paying again resumes both ways.
    pair.drop_client_frame = keep;
    let bytes = pair.client.cumulative_bytes();
    let paid = pair.receipt(
        &pair.client_key.clone(),
        tollway_ledger::cost_of_bytes(PRICE, bytes).0,
        bytes,
    );
    pair.node
        .handle_input(pair.now, 1, &Frame::Receipt(paid).to_bytes());
    pair.drive();
    assert_eq!(pair.node_got[&s].len(), before + 100_000);
    assert_eq!(pair.pump(s, &down[sent..], false), down.len() - sent);
    assert!(pair.max_unpaid_bytes <= 2 * MIB);
}

/// How many streams the node's driver was asked to connect.
fn opens_requested(pair: &Pair) -> usize {
    pair.node_events.iter().filter(|e| matches!(e, Event::OpenRequested { .. })).count()
}

/// A pair whose client stopped paying and was paused at the credit window,
/// then opened a stream: the node's driver never heard of it.
fn paused_with_an_open_waiting() -> (Pair, StreamId) {
    let mut pair = Pair::established(Usd(10_000_000));
    pair.drop_client_frame = |f| matches!(f, Frame::Receipt(_));
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    pair.pump(s, &pattern(3 * MIB as usize, 3), false);
    assert_eq!(pair.node.unpaid_bytes(), 2 * MIB);
    let before = opens_requested(&pair);
    let fresh = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    assert_eq!(opens_requested(&pair), before, "the node connected for a client that does not pay");
    assert!(!pair.client_events.contains(&Event::Opened { stream: fresh }));
    (pair, fresh)
}

#[test]
fn a_paused_client_gets_no_new_connections_and_is_closed_when_it_never_pays() {
    // Paused, the node still connected every stream the client opened, and
    // the client's pings kept the idle timeout away: a client that never
    // paid held the session, and had the node connect for it, for good.
    let (mut pair, _) = paused_with_an_open_waiting();
    let paused_at = pair.now;
    // The default unpaid timeout: 30 s.
    let deadline = paused_at + Duration::from_secs(30);
    assert!(pair.node.poll_timeout().is_some_and(|t| t <= deadline), "{:?}", pair.node.poll_timeout());
    while pair.now < deadline {
        pair.now += Duration::from_secs(5);
        pair.client.ping(pair.now).unwrap();
        pair.drive();
        assert!(!pair.node.is_closed() || pair.now >= deadline, "closed early");
        pair.node.handle_timeout(pair.now);
        pair.drive();
    }
    assert!(pair.node.is_closed());
    let closed = closed_event(pair.client_events.clone());
    assert!(matches!(&closed, Some((ErrorCode::Unpaid, m)) if m.contains("no valid receipt")), "{closed:?}");
}

#[test]
fn a_paused_client_that_pays_in_time_gets_its_waiting_connection() {
    let (mut pair, fresh) = paused_with_an_open_waiting();
    let deadline = pair.now + Duration::from_secs(30);
    pair.now += Duration::from_secs(20);
    pair.drop_client_frame = keep;
    let bytes = pair.client.cumulative_bytes();
    let paid = pair.receipt(&pair.client_key.clone(), tollway_ledger::cost_of_bytes(PRICE, bytes).0, bytes);
    pair.node.handle_input(pair.now, 1, &Frame::Receipt(paid).to_bytes());
    pair.drive();
    assert!(pair.node_events.contains(&Event::OpenRequested { stream: fresh, dest: dest() }));
    assert!(pair.client_events.contains(&Event::Opened { stream: fresh }));
    pair.now = deadline + Duration::from_secs(1);
    pair.node.handle_timeout(pair.now);
    assert!(pair.node.is_established());
    let down = pattern(3 * MIB as usize, 4);
    assert_eq!(pair.pump(fresh, &down, false), down.len());
    assert!(pair.client_got[&fresh] == down);
}

/// A session that starts owing its whole credit window (what the
/// channel's last session left unpaid, carried) has no credit from its
/// first moment. The node marked itself paused only when it next metered a
/// byte, which a session without credit never does: it connected every
/// stream the client opened and never started its unpaid clock.
#[test]
fn a_session_that_starts_owing_its_whole_window_is_paused_from_the_start() {
    let mut pair = Pair::new(Usd(10_000_000));
    pair.carried_bytes = 2 * MIB;
    pair.drop_client_frame = |f| matches!(f, Frame::Receipt(_));
    pair.drive();
    assert!(pair.node.is_established());
    assert!(pair.node_events.contains(&Event::Paused { unpaid_bytes: 2 * MIB }), "{:?}", pair.node_events);
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    assert_eq!(opens_requested(&pair), 0, "the node connected for a client that owes its window");
    let took = serve_for(&mut pair, s, &pattern(MIB as usize, 15), Duration::from_secs(120));
    let closed = closed_event(pair.client_events.clone());
    assert!(matches!(&closed, Some((ErrorCode::Unpaid, m)) if m.contains("no valid receipt")), "{closed:?}");
    // The client's count shows the receipt due at once.
    assert!((30..=31).contains(&took.as_secs()), "{took:?}");

    // A client that pays goes on.
    let mut pair = Pair::new(Usd(10_000_000));
    pair.carried_bytes = 2 * MIB;
    pair.drive();
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    let down = pattern(3 * MIB as usize, 16);
    assert_eq!(pair.pump(s, &down, false), down.len());
    assert!(pair.client_got[&s] == down);
}

/// 16 KiB/s (128 kbit/s): a throttled mobile plan, the kind of line this
/// product is for.
const SLOW_LINK_BYTES_PER_SEC: u64 = 16 * 1024;

/// An established pair on the node's default terms, its windows too: the
/// harness's smaller stream window keeps a node from ever queueing its
/// whole credit window ahead of the client, as the default one lets it.
fn default_terms_pair() -> Pair {
    let mut pair = Pair::build(Usd(10_000_000), [9; 32], [9; 32], |terms| terms.limits = Limits::default());
    pair.drive();
    assert!(pair.client.is_established() && pair.node.is_established(), "{:?}", pair.client_events);
    pair
}

/// Has the node send `down` on `stream` as fast as it will take it, a
/// tenth of a second at a time on the pair's clock (the client pinging
/// every 5 s, as its pool does), until the client has it all, the session
/// closes or `limit` has passed. Returns the time it took.
fn serve_for(pair: &mut Pair, stream: StreamId, down: &[u8], limit: Duration) -> Duration {
    let start = pair.now;
    let mut sent = 0;
    let mut next_ping = start;
    while pair.client_got.get(&stream).map_or(0, Vec::len) < down.len() && !pair.node.is_closed() && pair.now - start < limit {
        sent += pair.node.send(stream, &down[sent..]).unwrap_or(0);
        if pair.now >= next_ping {
            pair.client.ping(pair.now).unwrap();
            next_ping += Duration::from_secs(5);
        }
        pair.drive();
        pair.advance(Duration::from_millis(100));
    }
    pair.now - start
}

/// A download over a slow link, with the node's default terms. The node
/// counts a byte delivered when it queues it, so it queues its whole
/// credit window (2 MiB) and pauses, while the client signs only once it
/// has received a receipt interval (1 MiB): at 16 KiB/s each pause
/// honestly lasts 64 s. The node's unpaid clock ran from the pause, and
/// it closed the session with `Unpaid` 30 s into the first one.
#[test]
fn a_download_over_a_slow_link_pauses_for_its_receipts_and_is_not_closed_unpaid() {
    let mut pair = default_terms_pair();
    pair.downlink_bytes_per_sec = Some(SLOW_LINK_BYTES_PER_SEC);
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    let down = pattern(6 * MIB as usize, 12);
    let took = serve_for(&mut pair, s, &down, Duration::from_secs(600));
    assert_eq!(closed_event(pair.node_events.clone()), None, "after {took:?}");
    assert!(pair.client_got[&s] == down, "the download is not whole");
    // It went at the link's pace (384 s), pausing at the window for each
    // receipt.
    assert!((384..=390).contains(&took.as_secs()), "{took:?}");
    assert!(pair.node_events.iter().filter(|e| matches!(e, Event::Paused { .. })).count() >= 4);
    assert_eq!(pair.max_unpaid_bytes, 2 * MIB);
    assert!(signed(pair.client_events.clone()).len() >= 5);
}

/// Through a download a client sends only its receipts and its windows'
/// announcements. Each announcement used to go alone, a record of its own
/// once the driver wrote it: a write, and a wake-up in every process it
/// crossed (through a relay, five a MiB where one would do). They go with
/// the receipts, and at most one more a receipt: the stream's bytes that
/// made it due, once the program has read them (without it the window
/// reopened a receipt late: `a_download_over_a_long_path_keeps_...`).
#[test]
fn a_paying_clients_window_announcements_go_with_its_receipts() {
    let mut pair = default_terms_pair();
    // Fast, but cut into the slices a real link delivers (128 KiB a ms),
    // and read by the program a little after they arrive.
    pair.downlink_bytes_per_sec = Some(128 * MIB);
    pair.client_reads_late = Some(Vec::new());
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    let down = pattern(16 * MIB as usize, 13);
    pair.client_transmits = Some(Vec::new());
    let start = pair.now;
    let mut sent = 0;
    while pair.client_got.get(&s).map_or(0, Vec::len) < down.len() {
        sent += pair.node.send(s, &down[sent..]).unwrap_or(0);
        pair.advance(Duration::from_millis(1));
        assert!(!pair.node.is_closed() && pair.now - start < Duration::from_secs(5));
    }
    assert!(pair.client_got[&s] == down, "the download is not whole");
    let transmits = pair.client_transmits.take().unwrap();
    let (mut receipts, mut alone) = (0, 0);
    for bytes in &transmits {
        let frames = frames_of(bytes);
        let has_receipt = frames.iter().any(|f| matches!(f, Frame::Receipt(_)));
        receipts += usize::from(has_receipt);
        let windows = frames.iter().filter(|f| matches!(f, Frame::Window { .. })).count();
        if !has_receipt {
            assert!(frames.iter().all(|f| matches!(f, Frame::Window { stream, .. } if *stream == s)), "{frames:?}");
            alone += 1;
        }
        assert!(windows <= 2, "at most the stream's and the session's: {frames:?}");
    }
    // A receipt a MiB, each with what was consumed since the last, and
    // the stream's catching up after it.
    assert!((15..=16).contains(&receipts), "{receipts} receipts");
    assert!(alone <= receipts, "{alone} lone announcements for {receipts} receipts");
    assert!(pair.max_unpaid_bytes <= 2 * MIB);
}

/// A download over a long path (100 ms round trip), on the node's
/// default terms. A paying client announces its streams' windows with its
/// receipts, but signs a receipt as the bytes that make it due arrive,
/// before the program has read them: each announcement fell short of the
/// receipt, the window reopened only at the next one, and a stream carried
/// its 2 MiB window less a 1 MiB receipt interval per round trip (about
/// 20 Mbit/s at 400 ms), half what the credit window allows.
#[test]
fn a_download_over_a_long_path_keeps_its_whole_window_in_flight() {
    let mut pair = default_terms_pair();
    let rtt = Duration::from_millis(100);
    pair.one_way_delay = Some(rtt / 2);
    pair.client_reads_late = Some(Vec::new());
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    // A response's head first, so that the data frames (16 KiB) do not
    // end on the receipt intervals' boundaries, as they do not through a
    // real program's stream.
    let head = pattern(300, 15);
    let opened_by = pair.now + 2 * rtt;
    while pair.node.send(s, &head).unwrap_or(0) == 0 {
        pair.advance(Duration::from_millis(1));
        assert!(pair.now < opened_by, "the stream's open did not reach the node");
    }
    let down = pattern(16 * MIB as usize, 14);
    let start = pair.now;
    let mut sent = 0;
    while pair.client_got.get(&s).map_or(0, Vec::len) < head.len() + down.len() {
        sent += pair.node.send(s, &down[sent..]).unwrap_or(0);
        pair.advance(Duration::from_millis(1));
        assert!(!pair.node.is_closed() && pair.now - start < Duration::from_secs(10));
    }
    let took = pair.now - start;
    assert!(pair.client_got[&s] == [head, down].concat(), "the download is not whole");
    // The credit window (2 MiB) a round trip, less the first round trip
    // and a receipt's lag: 16 MiB in about 9 round trips, not 16.
    let mib_per_rtt = 16.0 * rtt.as_secs_f64() / took.as_secs_f64();
    eprintln!("{mib_per_rtt:.2} MiB per round trip: 16 MiB took {took:?} at a {rtt:?} round trip");
    assert!(mib_per_rtt > 1.6, "{mib_per_rtt:.2} MiB per round trip: 16 MiB took {took:?} at a {rtt:?} round trip");
    assert!(pair.max_unpaid_bytes <= 2 * MIB);
    assert_eq!(closed_event(pair.node_events.clone()), None);
}

fn frames_of(mut bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (frame, used) = Frame::decode(bytes).expect("sessions transmit whole frames");
        out.push(frame);
        bytes = &bytes[used..];
    }
    out
}

/// A client on the same slow link that reads everything and never pays
/// is closed 30 s after its window announcements show it has received a
/// receipt interval past its newest receipt: 64 s down the link, 94 s in.
#[test]
fn a_client_on_a_slow_link_that_reads_and_never_pays_is_closed_30_s_after_a_receipt_is_due() {
    let mut pair = default_terms_pair();
    pair.downlink_bytes_per_sec = Some(SLOW_LINK_BYTES_PER_SEC);
    pair.drop_client_frame = |f| matches!(f, Frame::Receipt(_));
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    let took = serve_for(&mut pair, s, &pattern(6 * MIB as usize, 13), Duration::from_secs(600));
    // (The node's word of it waits behind the bytes still on the link.)
    let closed = closed_event(pair.node_events.clone());
    assert!(matches!(&closed, Some((ErrorCode::Unpaid, m)) if m.contains("no valid receipt")), "{closed:?}");
    assert!((94..=96).contains(&took.as_secs()), "{took:?}");
    assert!(pair.max_unpaid_bytes <= 2 * MIB);
}

/// A client whose programs read nothing shows nothing consumed. One that
/// pays is not closed, however long its bytes take to arrive; paused, the
/// node asks with a ping behind all it delivered, and a client that has it
/// all and has not paid is closed 30 s after its pong.
#[test]
fn a_client_that_reads_nothing_is_closed_unpaid_only_when_its_pong_shows_it_has_all_and_owes() {
    // Over the slow link, paying: the 2 MiB the windows allow take 128 s.
    let mut pair = default_terms_pair();
    pair.client_consumes = false;
    pair.downlink_bytes_per_sec = Some(SLOW_LINK_BYTES_PER_SEC);
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    let took = serve_for(&mut pair, s, &pattern(3 * MIB as usize, 14), Duration::from_secs(200));
    assert_eq!(closed_event(pair.node_events.clone()), None, "after {took:?}");
    assert_eq!(pair.client_got[&s].len() as u64, 2 * MIB);

    // Over a fast one, never paying.
    let (pair, took) = never_paying_reader(|f| matches!(f, Frame::Receipt(_)), Duration::from_secs(120));
    let closed = closed_event(pair.client_events.clone());
    assert!(matches!(&closed, Some((ErrorCode::Unpaid, m)) if m.contains("no valid receipt")), "{closed:?}");
    // Paused within a tenth of a second, seen paused at the client's next
    // ping (5 s), asked 1 s later, closed 30 s after the pong.
    assert!((36..=37).contains(&took.as_secs()), "{took:?}");
}

/// A client on the default terms and a fast link whose program reads
/// nothing and which sends none of the frames `dropped` picks (receipts at
/// least), served 3 MiB for up to `limit`: it gets the credit window's
/// 2 MiB. Returns the pair and how long the serving went on.
fn never_paying_reader(dropped: fn(&Frame) -> bool, limit: Duration) -> (Pair, Duration) {
    let mut pair = default_terms_pair();
    pair.client_consumes = false;
    pair.drop_client_frame = dropped;
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    let took = serve_for(&mut pair, s, &pattern(3 * MIB as usize, 14), limit);
    assert_eq!(pair.client_got[&s].len() as u64, 2 * MIB);
    (pair, took)
}

/// A client that never pays and never answers the node's pings, but
/// keeps its session from ever being idle with pings of its own, stayed
/// paused for good: no pong ever showed that it had received what made a
/// receipt due, so the unpaid clock never started, and the idle timeout
/// never came. It held the node's session (and its place among
/// `max_sessions`) for as long as it liked. Closed `Unpaid` once the ping
/// behind the pause has gone unanswered for the idle timeout (5 min: a
/// slow honest link's pong comes once the credit window has crossed it).
#[test]
fn a_client_that_never_pays_nor_answers_pings_is_closed_an_idle_timeout_after_the_pause() {
    let (pair, took) = never_paying_reader(|f| matches!(f, Frame::Receipt(_) | Frame::Pong { .. }), Duration::from_secs(900));
    let closed = closed_event(pair.node_events.clone());
    assert!(matches!(&closed, Some((ErrorCode::Unpaid, m)) if m.contains("no answer to the ping")), "after {took:?}: {closed:?}");
    // Paused within a tenth of a second, seen paused at the client's next
    // ping (5 s), asked 1 s later, closed 300 s after that.
    assert!((306..=307).contains(&took.as_secs()), "{took:?}");
}

/// A program's hang-up reaches the exit as an end of data (`Fin`): a
/// socket cannot tell a half-close from a close until written to. A
/// destination that ignored it and never answered kept the stream (one
/// of `max_streams`) and its connection for as long as the session lived,
/// and the client's pings kept it alive. The node resets such a stream
/// with `Idle` once it has sent nothing on it for two sweeps in a row, 5
/// to 10 min after the `Fin`; one whose destination still answers now and
/// then is left alone, as is one the node cannot send on.
#[test]
fn a_stream_the_client_finished_and_the_destination_never_answers_is_reset_idle() {
    let mut pair = default_terms_pair();
    let silent = pair.client.open_stream(dest()).unwrap();
    let talking = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    for s in [silent, talking] {
        pair.pump(s, b"the request", true);
        pair.client.finish(s);
    }
    pair.drive();
    let finished = pair.now;
    let mut reset_after = None;
    // Half-second steps for 15 min: the talking one's destination answers
    // every minute, and the client pings every 5 s.
    for step in 0..1800u32 {
        if step.is_multiple_of(120) {
            pair.node.send(talking, b"still here").unwrap();
        }
        if step.is_multiple_of(10) {
            pair.client.ping(pair.now).unwrap();
        }
        pair.advance(Duration::from_millis(500));
        if reset_after.is_none() && pair.client_events.contains(&Event::Reset { stream: silent, code: ErrorCode::Idle }) {
            reset_after = Some(pair.now - finished);
        }
    }
    let took = reset_after.expect("the silent stream was never reset");
    assert!((600..=601).contains(&took.as_secs()), "reset {took:?} after the Fin");
    assert!(pair.node_events.contains(&Event::Reset { stream: silent, code: ErrorCode::Idle }), "the node's driver is told");
    assert!(!pair.client_events.iter().any(|e| matches!(e, Event::Reset { stream, .. } if *stream == talking)));
    assert_eq!(closed_event(pair.node_events.clone()), None);
}

#[test]
fn forged_replayed_stale_over_escrow_and_underpaid_receipts_are_rejected() {
    // The chain has settled 1000 micro-USD on this channel already.
    let mut pair = Pair::new(Usd(5_000_000));
    pair.channel.paid = Usd(1_000);
    pair.drive();
    let key = pair.client_key.clone();
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drop_client_frame = |f| matches!(f, Frame::Receipt(_));
    pair.drive();
    pair.pump(s, &pattern(MIB as usize, 5), false);
    let send = |pair: &mut Pair, r: SignedReceipt| {
        pair.node
            .handle_input(pair.now, 1, &Frame::Receipt(r).to_bytes());
        pair.drive();
    };
    let mallory = SigningKey::from_label("mallory");
    let receipt = |key: &SigningKey, usd: u128, bytes: u64| {
        Receipt {
            chain_id: CHAIN.into(),
            channel: channel_id(&SigningKey::from_label("client").public(), 0),
            cumulative_usd: Usd(usd),
            cumulative_bytes: bytes,
        }
        .sign(key)
    };
    // Forged: signed by somebody else.
    send(&mut pair, receipt(&mallory, 2_000, MIB));
    // Over the escrow.
    send(&mut pair, receipt(&key, 5_000_001, MIB));
    // Underpaid: 1 MiB at 1 USD/GiB costs 977 micro-USD beyond the 1000
    // already settled.
    send(&mut pair, receipt(&key, 1_500, MIB));
    // Another chain.
    let other_chain = Receipt {
        chain_id: "elsewhere".into(),
        channel: pair.channel_id,
        cumulative_usd: Usd(2_000),
        cumulative_bytes: MIB,
    }
    .sign(&key);
    send(&mut pair, other_chain);
    assert_eq!(
        pair.rejected_codes(),
        [
            "bad_receipt_signature",
            "over_escrow",
            "underpaid",
            "receipt_wrong_chain"
        ]
    );
    // A good one, then the same again (replay) and an older one (stale).
    send(&mut pair, receipt(&key, 2_000, MIB));
    send(&mut pair, receipt(&key, 2_000, MIB));
    send(&mut pair, receipt(&key, 1_500, MIB / 2));
    let codes = pair.rejected_codes();
    assert_eq!(&codes[4..], ["stale_receipt", "stale_receipt"]);
    assert_eq!(
        pair.node_events
            .iter()
            .filter(|e| matches!(e, Event::ReceiptAccepted { .. }))
            .count(),
        1
    );
    // The client saw every rejection with its reason.
    assert_eq!(
        pair.client_events
            .iter()
            .filter(|e| matches!(e, Event::ReceiptRejected { .. }))
            .count(),
        6
    );
}

/// A node that settles on its own (every second) may settle its newest
/// receipt after the client looked the channel up: the client then starts
/// from less than the chain holds. The node hands it the settled receipt,
/// and the client's receipts go on from there, every one accepted (before,
/// the first was refused as stale and the route retired).
#[test]
fn a_client_whose_lookup_predates_a_settlement_goes_on_from_the_settled_receipt() {
    let mut first = Pair::established(Usd(10_000_000));
    let s = first.client.open_stream(dest()).unwrap();
    first.drive();
    first.pump(s, &pattern(3 * MIB as usize, 3), false);
    let settled = first
        .node_events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::ReceiptAccepted { receipt } => Some(receipt.clone()),
            _ => None,
        })
        .unwrap();
    // The chain has settled that receipt; the node still holds it; the
    // client's terms say nothing is settled (its lookup was earlier).
    let mut pair = Pair::new(Usd(10_000_000));
    pair.channel.paid = settled.receipt.cumulative_usd;
    pair.channel.paid_bytes = settled.receipt.cumulative_bytes;
    pair.latest_receipt = Some(settled.clone());
    pair.drive();
    assert!(pair.client.is_established(), "{:?}", pair.client_events);
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    pair.pump(s, &pattern(3 * MIB as usize, 4), false);
    assert_eq!(pair.rejected_codes(), Vec::<String>::new());
    let accepted: Vec<u64> = (pair.node_events.iter())
        .filter_map(|e| match e {
            Event::ReceiptAccepted { receipt } => Some(receipt.receipt.cumulative_bytes),
            _ => None,
        })
        .collect();
    assert!(accepted.len() >= 2, "{accepted:?}");
    assert!(accepted.iter().all(|&b| b > settled.receipt.cumulative_bytes), "{accepted:?}");
    assert_eq!(pair.client.cumulative_bytes(), settled.receipt.cumulative_bytes + 3 * MIB);
    assert_eq!(pair.node.cumulative_bytes(), pair.client.cumulative_bytes());
}

/// A session that took its channel over from another owes what that one
/// delivered unpaid: the node counts it from the start and the client,
/// told in the server hello, pays it in its first receipt. A node that
/// claims more than its credit window is refused.
#[test]
fn a_session_that_took_its_channel_over_owes_what_the_one_before_left_unpaid() {
    let mut pair = Pair::new(Usd(10_000_000));
    pair.carried_bytes = 3 * MIB / 2;
    pair.drive();
    assert!(pair.client.is_established(), "{:?}", pair.client_events);
    let first = pair
        .node_events
        .iter()
        .find_map(|e| match e {
            Event::ReceiptAccepted { receipt } => Some(receipt.receipt.clone()),
            _ => None,
        })
        .expect("the carried bytes are paid at once");
    assert_eq!(first.cumulative_bytes, 3 * MIB / 2);
    assert_eq!(first.cumulative_usd, tollway_ledger::cost_of_bytes(PRICE, 3 * MIB / 2));
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    pair.pump(s, &pattern(3 * MIB as usize, 6), false);
    assert_eq!(pair.rejected_codes(), Vec::<String>::new());
    assert_eq!(pair.client.cumulative_bytes(), 3 * MIB / 2 + 3 * MIB);
    assert_eq!(pair.node.cumulative_bytes(), pair.client.cumulative_bytes());
    assert!(pair.max_unpaid_bytes <= 2 * MIB);

    // A node that says more was left unpaid than its credit window allows.
    let mut greedy = Pair::new(Usd(10_000_000));
    while greedy.client.poll_transmit().is_some() {}
    let hello = ServerHello {
        version: PROTOCOL_VERSION,
        session_id: [1; 16],
        price_usd_micro_per_gib: PRICE,
        receipt_interval_bytes: MIB,
        credit_window_bytes: 2 * MIB,
        stream_window_bytes: 256 * 1024,
        max_streams: 64,
        session_window_bytes: 8 * MIB,
        baseline: None,
        carried_bytes: 2 * MIB + 1,
        exit_policy: None,
    };
    greedy.client.handle_input(greedy.now, 1, &Frame::ServerHello(hello).to_bytes());
    greedy.drive();
    assert!(!greedy.client.is_established());
    assert!(
        greedy.client_events.iter().any(|e| matches!(e, Event::Closed { code: ErrorCode::BadHello, message, .. }
            if message.contains("more than its 2097152-byte credit window"))),
        "{:?}",
        greedy.client_events
    );
}

/// The newest receipt the node accepted.
fn newest_accepted_receipt(pair: &Pair) -> Option<SignedReceipt> {
    pair.node_events.iter().rev().find_map(|e| match e {
        Event::ReceiptAccepted { receipt } => Some(receipt.clone()),
        _ => None,
    })
}

/// What a client's proxy remembers of `pair`'s client session once it has
/// ended, for its next session on the channel.
fn remembered(pair: &Pair, before: EarlierSessions) -> EarlierSessions {
    EarlierSessions {
        last_cumulative_bytes: Some(pair.client.cumulative_bytes()),
        carried_unseen_bytes: before.carried_unseen_bytes + pair.client.carried_unseen_bytes(),
    }
}

/// A node's word on what the channel's earlier sessions left unpaid is
/// taken as far as the client's own count of them goes, and beyond it for
/// one credit window in all (a node that said a window was carried was
/// paid it on every session, having sent nothing; a review found it).
/// Here the client's last session counted 2.5 MiB and paid 2 MiB, and a
/// MiB of claims beyond its count went before: 1.5 MiB (the half it saw
/// and the MiB of window left) is paid by the first receipt; a byte more
/// is refused with BadHello, saying why, and nothing is signed.
#[test]
fn carried_bytes_beyond_the_clients_count_and_its_window_are_refused() {
    let escrow = Usd(10_000_000);
    let earlier = EarlierSessions { last_cumulative_bytes: Some(5 * MIB / 2), carried_unseen_bytes: MIB };
    let paid_2_mib = |pair: &Pair| pair.receipt(&pair.client_key, tollway_ledger::cost_of_bytes(PRICE, 2 * MIB).0, 2 * MIB);

    let mut greedy = Pair::remembering(escrow, earlier);
    greedy.latest_receipt = Some(paid_2_mib(&greedy));
    greedy.carried_bytes = 3 * MIB / 2 + 1;
    greedy.drive();
    assert!(!greedy.client.is_established());
    assert!(greedy.client_events.contains(&Event::CarriedRefused), "{:?}", greedy.client_events);
    assert_eq!(signed(greedy.client_events.clone()), []);
    let message = "the node says 1.50 MiB were left unpaid on this channel, but this client received 512 KiB past its \
                   last receipt (and has already paid 1.00 MiB of such claims, of the 2.00 MiB credit window it pays \
                   on a node's word)";
    assert_eq!(closed_event(greedy.client_events.clone()), Some((ErrorCode::BadHello, message.to_string())));

    let mut pair = Pair::remembering(escrow, earlier);
    pair.latest_receipt = Some(paid_2_mib(&pair));
    pair.carried_bytes = 3 * MIB / 2;
    pair.drive();
    assert!(pair.client.is_established(), "{:?}", pair.client_events);
    assert_eq!(pair.client.carried_unseen_bytes(), MIB);
    let first = newest_accepted_receipt(&pair).expect("the carried bytes are paid at once").receipt;
    assert_eq!(first.cumulative_bytes, 2 * MIB + 3 * MIB / 2);
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    pair.pump(s, &pattern(3 * MIB as usize, 8), false);
    assert_eq!(pair.rejected_codes(), Vec::<String>::new());
    assert_eq!(pair.client.cumulative_bytes(), 2 * MIB + 3 * MIB / 2 + 3 * MIB);
    assert_eq!(pair.node.cumulative_bytes(), pair.client.cumulative_bytes());
}

/// A node that says a whole credit window was left unpaid on every
/// session is paid it once: on the client's first session, which knows
/// nothing of the channel before (the window counts whole against what is
/// taken on a node's word). The next session, whose client received
/// 256 KiB past its receipt since, refuses the window again, and takes
/// what it counted, however often. A receipt the node never got (lost
/// with the connection) shows as a lower baseline and as many more
/// carried bytes, which the client's count explains too.
#[test]
fn a_node_that_says_a_window_was_left_unpaid_on_every_session_is_paid_it_once() {
    let escrow = Usd(10_000_000);
    let mut first = Pair::new(escrow);
    first.carried_bytes = 2 * MIB;
    first.drive();
    assert!(first.client.is_established(), "{:?}", first.client_events);
    assert_eq!(first.client.carried_unseen_bytes(), 2 * MIB);
    let s = first.client.open_stream(dest()).unwrap();
    first.drive();
    first.pump(s, &pattern(256 * 1024, 1), false);
    let receipt = newest_accepted_receipt(&first).unwrap();
    assert_eq!(receipt.receipt.cumulative_bytes, 2 * MIB);
    let earlier = remembered(&first, EarlierSessions::default());
    assert_eq!(earlier, EarlierSessions { last_cumulative_bytes: Some(2 * MIB + 256 * 1024), carried_unseen_bytes: 2 * MIB });

    let session_after = |latest_receipt: Option<SignedReceipt>, carried_bytes: u64| {
        let mut pair = Pair::remembering(escrow, earlier);
        (pair.latest_receipt, pair.carried_bytes) = (latest_receipt, carried_bytes);
        pair.drive();
        pair
    };
    let greedy = session_after(Some(receipt.clone()), 2 * MIB);
    assert!(!greedy.client.is_established());
    assert_eq!(signed(greedy.client_events.clone()), []);
    let closed = closed_event(greedy.client_events.clone());
    assert!(
        matches!(&closed, Some((ErrorCode::BadHello, m)) if m.contains("received 256 KiB past its last receipt (and has already paid 2.00 MiB")),
        "{closed:?}"
    );
    for _ in 0..3 {
        let honest = session_after(Some(receipt.clone()), 256 * 1024);
        assert!(honest.client.is_established(), "{:?}", honest.client_events);
        assert_eq!(honest.client.carried_unseen_bytes(), 0);
    }
    let receipt_lost = session_after(None, 2 * MIB);
    assert!(receipt_lost.client.is_established(), "{:?}", receipt_lost.client_events);
    assert_eq!(receipt_lost.client.carried_unseen_bytes(), 0);
}

#[test]
fn a_hello_signed_for_another_connection_is_refused() {
    let mut pair = Pair::with_binding(Usd(1_000_000), [1; 32], [2; 32]);
    pair.drive();
    assert!(pair.node.is_closed() && pair.client.is_closed());
    assert!(pair.client_events.iter().any(|e| matches!(
        e,
        Event::Closed {
            code: ErrorCode::BadHello,
            by_peer: true,
            ..
        }
    )));
}

/// A node that asks for receipts too often (each one a signature), or for
/// none before its credit runs out, is refused by the client.
#[test]
fn a_client_refuses_payment_terms_that_would_spend_it_or_stall() {
    let cases: [fn(&mut NodeTerms); 2] = [
        |t| t.receipt_interval_bytes = 4096,
        |t| t.receipt_interval_bytes = t.credit_window_bytes,
    ];
    for adjust in cases {
        let mut pair = Pair::build(Usd(1_000_000), [9; 32], [9; 32], adjust);
        pair.drive();
        assert!(pair.client.is_closed(), "{:?}", pair.client_events);
        assert!(
            pair.client_events.iter().any(|e| matches!(
                e,
                Event::Closed { code: ErrorCode::Protocol, message, by_peer: false }
                    if message.contains("at least 64 KiB and below the credit window")
            )),
            "{:?}",
            pair.client_events
        );
    }
}

#[test]
fn a_client_refuses_a_price_at_which_receipts_could_not_grow() {
    // At price 0 every receipt paid what the one before it did, and at 100
    // micro-USD per GiB (a MiB costs a tenth of a micro-dollar, rounded up)
    // the second paid what the first did: the node refused them as stale,
    // the client took itself for paid, and the session stalled for good
    // at 2-3 MiB.
    let cases: [fn(&mut NodeTerms); 2] = [|t| t.price_usd_micro_per_gib = 0, |t| t.price_usd_micro_per_gib = 100];
    for adjust in cases {
        let mut pair = Pair::build(Usd(1_000_000), [9; 32], [9; 32], adjust);
        pair.drive();
        // (Refused at the hello now; before, the download stalled.)
        if let Ok(s) = pair.client.open_stream(dest()) {
            pair.drive();
            pair.pump(s, &pattern(4 * MIB as usize, 3), false);
        }
        let closed = closed_event(pair.client_events.clone());
        assert!(
            matches!(&closed, Some((ErrorCode::Protocol, m)) if m.contains("costs less than a micro-dollar")),
            "{closed:?}; {} bytes delivered, receipts rejected {:?}",
            pair.node.cumulative_bytes(),
            pair.rejected_codes()
        );
    }
    // At the least price for a MiB interval, 1,024 micro-USD per GiB,
    // every receipt pays more than the last.
    let mut pair = Pair::build(Usd(1_000_000), [9; 32], [9; 32], |t| t.price_usd_micro_per_gib = 1_024);
    pair.drive();
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    let down = pattern(8 * MIB as usize, 3);
    assert_eq!(pair.pump(s, &down, false), down.len());
    assert!(pair.rejected_codes().is_empty(), "{:?}", pair.rejected_codes());
}

#[test]
fn the_node_refuses_channels_that_are_not_usable() {
    for (mutate, want) in [
        (
            (|c: &mut ChannelInfo| c.expired = true) as fn(&mut ChannelInfo),
            ErrorCode::NoChannel,
        ),
        (
            |c| c.channel.node = SigningKey::from_label("other").public(),
            ErrorCode::NoChannel,
        ),
        (
            |c| c.channel.paid = c.channel.escrow,
            ErrorCode::EscrowExhausted,
        ),
    ] {
        let mut pair = Pair::new(Usd(1_000_000));
        while let Some((p, b)) = pair.client.poll_transmit() {
            pair.node.handle_input(pair.now, p, &b);
        }
        assert!(matches!(
            pair.node.poll_event(),
            Some(Event::ChannelNeeded { .. })
        ));
        let mut info = ChannelInfo {
            channel: pair.channel.clone(),
            latest_receipt: None,
            expired: false,
            carried_bytes: 0,
        };
        mutate(&mut info);
        pair.node.handle_channel(pair.now, Ok(info));
        pair.drive();
        assert!(
            pair.client_events
                .iter()
                .any(|e| matches!(e, Event::Closed { code, .. } if *code == want)),
            "{:?}",
            pair.client_events
        );
    }
}

/// The newest receipt the node accepted, as (bytes, USD).
fn last_accepted(pair: &Pair) -> Option<(u64, Usd)> {
    pair.node_events.iter().rev().find_map(|e| match e {
        Event::ReceiptAccepted { receipt } => Some((receipt.receipt.cumulative_bytes, receipt.receipt.cumulative_usd)),
        _ => None,
    })
}

#[test]
fn a_channel_whose_escrow_buys_less_than_a_receipt_interval_gets_no_credit() {
    // Only a spent escrow was refused: a channel of one micro-dollar got
    // the whole 2 MiB credit window, on every session, at any price.
    let mut pair = Pair::new(Usd(1));
    pair.drop_client_frame = |f| matches!(f, Frame::Receipt(_));
    pair.drive();
    // (Refused at the hello now; before, the download got the window.)
    if let Ok(s) = pair.client.open_stream(dest()) {
        pair.drive();
        pair.pump(s, &pattern(4 * MIB as usize, 3), false);
    }
    let delivered = pair.node.cumulative_bytes();
    assert!(delivered <= tollway_tunnel::session::bytes_bought(PRICE, Usd(1)), "{delivered} bytes on $0.000001 at $1/GiB");
    let closed = closed_event(pair.client_events.clone());
    assert!(
        matches!(&closed, Some((ErrorCode::EscrowExhausted, m)) if m.contains("less than one receipt interval")),
        "{closed:?}"
    );
}

#[test]
fn the_node_serves_no_more_than_the_escrow_pays_for_and_the_client_pays_it_all() {
    // $0.001465 at $1/GiB buys about 1.5 MiB. The node's credit ignored
    // the escrow: a client that never paid got the 2 MiB window, and one
    // that paid got a MiB past its last affordable receipt, unpaid.
    let escrow = Usd(1_465);
    let bought = tollway_tunnel::session::bytes_bought(PRICE, escrow);
    assert!(MIB < bought && bought < 2 * MIB);
    let down = pattern(4 * MIB as usize, 3);

    let mut unpaying = Pair::established(escrow);
    unpaying.drop_client_frame = |f| matches!(f, Frame::Receipt(_));
    let s = unpaying.client.open_stream(dest()).unwrap();
    unpaying.drive();
    assert_eq!(unpaying.pump(s, &down, false) as u64, bought);
    assert_eq!(unpaying.max_unpaid_bytes, bought);

    let mut paying = Pair::established(escrow);
    let s = paying.client.open_stream(dest()).unwrap();
    paying.drive();
    assert_eq!(paying.pump(s, &down, false) as u64, bought);
    assert_eq!(paying.client_got[&s].len() as u64, bought);
    // Paid to the last byte, within the escrow; then the session is over.
    assert_eq!(last_accepted(&paying), Some((bought, escrow)));
    assert!(paying.rejected_codes().is_empty(), "{:?}", paying.rejected_codes());
    assert!(paying.client_events.contains(&Event::EscrowExhausted));
    assert_eq!(closed_event(paying.node_events.clone()).map(|c| c.0), Some(ErrorCode::EscrowExhausted));
    assert!(paying.client.is_closed());
}

#[test]
fn a_client_that_believes_in_more_escrow_than_the_node_pays_all_it_got_and_hears_it_is_spent() {
    // The node's lookup of the channel shows less escrow than the client's
    // (a top-up the node has not seen, or a client's mistake): the node
    // pauses short of its window, the client pays for what it received at
    // once, and the node closes the session as spent.
    let escrow = Usd(1_465);
    let bought = tollway_tunnel::session::bytes_bought(PRICE, escrow);
    let mut pair = Pair::new(Usd(10_000_000));
    pair.channel.escrow = escrow;
    pair.drive();
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    assert_eq!(pair.pump(s, &pattern(4 * MIB as usize, 3), false) as u64, bought);
    assert_eq!(last_accepted(&pair), Some((bought, escrow)));
    assert!(pair.client_events.contains(&Event::EscrowExhausted), "{:?}", pair.client_events);
    let closed = closed_event(pair.client_events.clone());
    assert_eq!(closed.map(|c| c.0), Some(ErrorCode::EscrowExhausted));
}

#[test]
fn flow_control_blocks_a_sender_until_the_receiver_consumes() {
    let mut pair = Pair::established(Usd(10_000_000));
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    // Without the harness consuming, the node may send one window only.
    let n = pair.node.send(s, &pattern(1_000_000, 6)).unwrap();
    assert_eq!(n, 256 * 1024);
    assert_eq!(pair.node.send(s, b"more").unwrap(), 0);
    pair.drive(); // the client consumes: a window update wakes the node
    assert!(pair.node_events.contains(&Event::Writable { stream: s }));
    assert!(pair.node.send(s, b"more").unwrap() > 0);
}

/// What the node holds of the client's bytes that no destination read.
fn node_buffered(pair: &Pair) -> u64 {
    pair.node_got.values().map(|v| v.len() as u64).sum()
}

#[test]
fn many_streams_to_destinations_that_do_not_read_hold_one_session_window_in_all() {
    // 64 streams x 256 KiB stream windows would be 16 MiB; the session's
    // 8 MiB window bounds what the node buffers across all of them.
    let mut pair = Pair::established(Usd(1_000_000_000));
    pair.node_consumes = false;
    let streams: Vec<StreamId> = (0..64).map(|_| pair.client.open_stream(dest()).unwrap()).collect();
    pair.drive();
    let data = pattern(256 * 1024, 3);
    let mut sent = 0;
    for &s in &streams {
        sent += pair.pump(s, &data, true) as u64;
    }
    assert_eq!(sent, 8 * MIB, "the client stops at the session window");
    assert_eq!(node_buffered(&pair), 8 * MIB);
    assert_eq!(pair.client.send(streams[63], b"x").unwrap(), 0);

    // The destinations read it all: the session reopens (a quarter at a
    // time) and the rest goes through, every stream byte-exact.
    pair.node_consumes = true;
    for (&s, got) in pair.node_got.clone().iter() {
        pair.node.consumed(pair.now, s, got.len());
    }
    pair.drive();
    for &s in &streams {
        let have = pair.node_got.get(&s).map_or(0, Vec::len);
        assert_eq!(pair.pump(s, &data[have..], true), data.len() - have);
    }
    assert!(streams.iter().all(|s| pair.node_got[s] == data));
}

#[test]
fn resetting_streams_returns_their_unread_bytes_to_the_session_window() {
    let mut pair = Pair::established(Usd(1_000_000_000));
    pair.node_consumes = false;
    let data = pattern(256 * 1024, 4);
    let stuck: Vec<StreamId> = (0..32).map(|_| pair.client.open_stream(dest()).unwrap()).collect();
    pair.drive();
    for &s in &stuck {
        pair.pump(s, &data, true);
    }
    assert_eq!(node_buffered(&pair), 8 * MIB);
    // The node gives up on them (its driver dropped the sockets).
    for &s in &stuck {
        pair.node.reset(s, ErrorCode::Shutdown);
    }
    pair.drive();
    let fresh = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    assert_eq!(pair.pump(fresh, &data, true), data.len());
}

#[test]
fn bytes_for_streams_the_client_reset_are_still_paid_so_the_session_never_stalls() {
    // The node counts what it sends when it sends it; the client counted
    // only bytes for streams it still had. Data already in flight to a
    // stream the client reset (a program that hung up mid-download) was
    // dropped uncounted, so the client's count fell behind the node's: at
    // a credit window behind, the node waited for a receipt and the client
    // for bytes, for good.
    let mut pair = Pair::established(Usd(1_000_000_000));
    let data = pattern(256 * 1024, 5);
    let mut dropped = 0;
    // Until the node's whole credit window went to streams the client reset.
    while dropped < 2 * MIB {
        let streams: Vec<StreamId> = (0..4).map(|_| pair.client.open_stream(dest()).unwrap()).collect();
        pair.drive();
        for &s in &streams {
            dropped += pair.node.send(s, &data).unwrap() as u64;
            pair.client.reset(s, ErrorCode::Shutdown);
        }
        // The resets reach the node first, then the data the client drops.
        pair.drive();
    }
    assert!(pair.client_got.is_empty(), "the reset streams delivered data");
    let fresh = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    let big = pattern(4 * MIB as usize, 6);
    assert_eq!(pair.pump(fresh, &big, false), big.len(), "the download stalled");
    assert_eq!(pair.client_got[&fresh], big);
    let paid = signed(pair.client_events.iter().cloned());
    assert!(paid.last().is_some_and(|&(bytes, _)| bytes + MIB > dropped + 4 * MIB), "receipts {paid:?}");
    assert!(pair.max_unpaid_bytes <= 2 * MIB);
}

/// Raw data frames for `stream`, `total_bytes` in 16 KiB frames, as a
/// node that ignores the protocol would write them.
fn raw_data(stream: StreamId, total_bytes: u64) -> Vec<u8> {
    let mut wire = Vec::new();
    for chunk in pattern(total_bytes as usize, 8).chunks(16 * 1024) {
        Frame::Data { stream, payload: chunk.to_vec() }.encode(&mut wire);
    }
    wire
}

#[test]
fn data_on_streams_the_client_never_opened_closes_the_session_unpaid() {
    // The client counted and paid for data on any stream it did not know
    // (meant for streams it had reset), so a node writing data for stream
    // 999 in a loop had it sign receipt after receipt, draining the escrow
    // with no program asking for a byte.
    for stream in [999, 0] {
        let mut pair = Pair::established(Usd(1_000_000_000));
        let s = pair.client.open_stream(dest()).unwrap();
        pair.drive();
        assert_ne!(s, stream);
        pair.client.handle_input(pair.now, 1, &raw_data(stream, 4 * MIB));
        let events: Vec<Event> = std::iter::from_fn(|| pair.client.poll_event()).collect();
        assert_eq!(signed(events.clone()), [], "the client paid for stream {stream}");
        let closed = closed_event(events);
        assert!(matches!(&closed, Some((ErrorCode::Protocol, m)) if m.contains("not open")), "{closed:?}");
        assert_eq!(pair.client.cumulative_bytes(), 0);
    }
}

/// The session of `pair` on the side that resets: the client's or the
/// node's.
fn side(pair: &mut Pair, node: bool) -> &mut Session {
    if node {
        &mut pair.node
    } else {
        &mut pair.client
    }
}

/// A stream one side reset may still have bytes in flight from the other,
/// at most what its window allowed when the reset left: those are counted,
/// more is a protocol violation; and once the peer answered the ping behind
/// the reset, data on it is a violation at once. The same rule both ways.
fn a_reset_stream_takes_only_what_its_window_allowed(node: bool) {
    let mut pair = Pair::established(Usd(1_000_000_000));
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    let window = 256 * 1024;
    let now = pair.now;
    let resetting = side(&mut pair, node);
    resetting.reset(s, ErrorCode::Shutdown);
    // The peer has not read the reset yet: its window's worth arrives.
    resetting.handle_input(now, 1, &raw_data(s, window));
    assert!(!resetting.is_closed());
    assert_eq!(resetting.cumulative_bytes(), window);
    resetting.handle_input(now, 1, &raw_data(s, 1));
    let closed = closed_event(std::iter::from_fn(|| resetting.poll_event()));
    assert!(matches!(&closed, Some((ErrorCode::Protocol, m)) if m.contains("not open")), "{closed:?}");

    let mut pair = Pair::established(Usd(1_000_000_000));
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    side(&mut pair, node).reset(s, ErrorCode::Shutdown);
    pair.drive();
    let now = pair.now;
    let resetting = side(&mut pair, node);
    resetting.handle_input(now, 1, &raw_data(s, 100));
    assert!(resetting.is_closed());
}

#[test]
fn a_stream_the_client_reset_is_paid_only_up_to_what_its_window_allowed() {
    a_reset_stream_takes_only_what_its_window_allowed(false);
}

#[test]
fn streams_reset_again_and_again_are_forgotten_and_never_fill_the_session() {
    // Reset streams are remembered until the node's pong says it read the
    // reset, and count against the stream limit meanwhile: memory stays
    // bounded by max_streams, and an honest node frees them in a round trip.
    let mut pair = Pair::build(Usd(1_000_000_000), [9; 32], [9; 32], |t| t.limits.max_streams = 4);
    pair.drive();
    for _ in 0..200 {
        let streams: Vec<StreamId> = (0..4).map(|_| pair.client.open_stream(dest()).unwrap()).collect();
        pair.drive();
        for &s in &streams {
            pair.node.send(s, b"some bytes").unwrap();
            pair.client.reset(s, ErrorCode::Shutdown);
        }
        assert!(matches!(
            pair.client.open_stream(dest()),
            Err(tollway_tunnel::session::SessionError::TooManyStreams(4))
        ));
        pair.drive();
    }
    assert!(pair.client.is_established() && pair.node.is_established());
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    assert_eq!(pair.pump(s, &pattern(MIB as usize, 3), false), MIB as usize);
    assert!(pair.rejected_codes().is_empty());
}

#[test]
fn data_on_streams_the_node_never_opened_closes_the_session() {
    // The node dropped data on any stream id it did not hold, uncounted,
    // and the drop reopened the session's window at once: a client writing
    // on stream 999 in a loop had the node take upstream bytes for free,
    // for good. Now, as on the client, it is a protocol violation.
    for stream in [999, 0] {
        let mut pair = Pair::established(Usd(1_000_000_000));
        let s = pair.client.open_stream(dest()).unwrap();
        pair.drive();
        assert_ne!(s, stream);
        pair.node.handle_input(pair.now, 1, &raw_data(stream, 4 * MIB));
        let closed = closed_event(std::iter::from_fn(|| pair.node.poll_event()));
        assert!(matches!(&closed, Some((ErrorCode::Protocol, m)) if m.contains("not open")), "{closed:?}");
        assert_eq!(pair.node.cumulative_bytes(), 0);
    }
}

#[test]
fn an_upload_in_flight_to_a_stream_the_node_reset_is_taken_and_counted_as_the_client_counted_it() {
    // A program's upload is on its way as its destination hangs up: the
    // node resets the stream and its bytes in flight arrive after. The
    // node takes them (up to the stream's window) and counts them, as the
    // client counted them when it sent them.
    let mut pair = Pair::established(Usd(1_000_000_000));
    let data = pattern(256 * 1024, 7);
    let mut dropped = 0;
    // Past the whole credit window (2 MiB).
    while dropped < 3 * MIB {
        let streams: Vec<StreamId> = (0..4).map(|_| pair.client.open_stream(dest()).unwrap()).collect();
        pair.drive();
        for &s in &streams {
            dropped += pair.client.send(s, &data).unwrap() as u64;
            pair.node.reset(s, ErrorCode::Shutdown);
        }
        // The client's data reaches the node after its resets left.
        pair.drive();
        assert!(pair.node.is_established(), "{:?}", closed_event(pair.node_events.clone()));
    }
    assert!(pair.node_got.is_empty(), "the reset streams delivered data");
    assert_eq!(pair.client.cumulative_bytes(), dropped);
    assert_eq!(pair.node.cumulative_bytes(), pair.client.cumulative_bytes());
    // Paid alike, and the session goes on.
    let fresh = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    let up = pattern(3 * MIB as usize, 8);
    assert_eq!(pair.pump(fresh, &up, true), up.len(), "the upload stalled");
    assert_eq!(pair.node_got[&fresh], up);
    assert!(pair.rejected_codes().is_empty(), "{:?}", pair.rejected_codes());
    assert_eq!(pair.node.cumulative_bytes(), pair.client.cumulative_bytes());
    assert_eq!(pair.node.unpaid_bytes(), pair.client.unpaid_bytes());
    assert!(pair.client.is_established() && pair.node.is_established());
}

#[test]
fn an_optimistic_upload_to_a_stream_the_node_refused_is_taken_and_counted() {
    // The client sends on a stream before it is connected; the exit
    // refuses the destination (policy, or the connect failed) while more
    // of it is on its way.
    let mut pair = Pair::established(Usd(1_000_000_000));
    let s = pair.client.open_stream(dest()).unwrap();
    let first = pattern(100_000, 9);
    assert_eq!(pair.client.send(s, &first).unwrap(), first.len());
    while let Some((path, bytes)) = pair.client.poll_transmit() {
        pair.node.handle_input(pair.now, path, &bytes);
    }
    while pair.node.poll_event().is_some() {}
    pair.node.refuse_stream(s, ErrorCode::PolicyDenied);
    let more = pattern(150_000, 10);
    assert_eq!(pair.client.send(s, &more).unwrap(), more.len());
    pair.drive();
    assert!(pair.node.is_established(), "{:?}", closed_event(pair.node_events.clone()));
    assert!(pair.client_events.contains(&Event::OpenFailed { stream: s, code: ErrorCode::PolicyDenied }));
    assert_eq!(pair.client.cumulative_bytes(), 250_000);
    assert_eq!(pair.node.cumulative_bytes(), pair.client.cumulative_bytes());
}

#[test]
fn a_stream_the_node_reset_takes_only_what_its_window_allowed() {
    a_reset_stream_takes_only_what_its_window_allowed(true);

    // A stream the client finished sends nothing more.
    let mut pair = Pair::established(Usd(1_000_000_000));
    let s = pair.client.open_stream(dest()).unwrap();
    pair.client.finish(s);
    pair.drive();
    pair.node.reset(s, ErrorCode::Shutdown);
    pair.node.handle_input(pair.now, 1, &raw_data(s, 100));
    assert!(pair.node.is_closed());

    // Nor does one it finished after the reset left.
    let mut pair = Pair::established(Usd(1_000_000_000));
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    pair.node.reset(s, ErrorCode::Shutdown);
    let mut wire = Frame::Fin { stream: s }.to_bytes();
    wire.extend_from_slice(&raw_data(s, 100));
    pair.node.handle_input(pair.now, 1, &wire);
    assert!(pair.node.is_closed());
}

/// Raw `Open` frames for `streams`, as a client that ignores the limit
/// would write them.
fn raw_opens(streams: impl IntoIterator<Item = StreamId>) -> Vec<u8> {
    let mut wire = Vec::new();
    for stream in streams {
        Frame::Open { stream, dest: dest() }.encode(&mut wire);
    }
    wire
}

#[test]
fn streams_the_node_refused_at_its_limit_are_remembered_no_more_than_its_limit() {
    // An open past the node's stream limit is refused, and the client may
    // have sent on it meanwhile (its view of the limit lags the node's):
    // that much is taken. What the node remembers of such streams, until
    // the client's pong, stays within max_streams however many come: the
    // oldest is forgotten first, and data on it is then a violation.
    let limited = |t: &mut NodeTerms| t.limits.max_streams = 4;
    for (stream, taken) in [(12, true), (5, false)] {
        let mut pair = Pair::build(Usd(1_000_000_000), [9; 32], [9; 32], limited);
        pair.drive();
        for _ in 0..4 {
            pair.client.open_stream(dest()).unwrap();
        }
        pair.drive();
        // Streams 5 to 12, past the limit; the client never reads the
        // answers (so no pong forgets them).
        pair.node.handle_input(pair.now, 1, &raw_opens(5..=12));
        pair.node.handle_input(pair.now, 1, &raw_data(stream, 256 * 1024));
        assert_eq!(pair.node.is_closed(), !taken, "stream {stream}");
        if !taken {
            let closed = closed_event(std::iter::from_fn(|| pair.node.poll_event()));
            assert!(matches!(&closed, Some((ErrorCode::Protocol, m)) if m.contains("not open")), "{closed:?}");
        }
    }
}

/// A pair at the node's limit of two streams, a and b, where a program
/// uploaded on a and hung up and a's destination answered and closed but
/// has not read the upload's last bytes: the client let go of a, the node
/// holds it. Returns the pair, a, b and the upload's length.
fn at_the_limit_with_a_stream_the_client_let_go() -> (Pair, StreamId, StreamId, usize) {
    let limited = |t: &mut NodeTerms| t.limits.max_streams = 2;
    let mut pair = Pair::build(Usd(1_000_000_000), [9; 32], [9; 32], limited);
    pair.drive();
    assert_eq!(pair.client.limits().max_streams, 2);
    // Destinations that read only when the test says so.
    pair.node_consumes = false;
    let (a, b) = (pair.client.open_stream(dest()).unwrap(), pair.client.open_stream(dest()).unwrap());
    pair.drive();
    let upload = pattern(100_000, 1);
    assert_eq!(pair.pump(a, &upload, true), upload.len());
    pair.client.finish(a);
    pair.node.send(a, b"done").unwrap();
    pair.node.finish(a);
    pair.drive();
    assert!(!pair.client.has_stream(a) && pair.node.has_stream(a));
    assert!(!pair.client.streams_full(), "the client counts a free slot");
    (pair, a, b, upload.len())
}

fn open_failed(pair: &Pair) -> Vec<&Event> {
    pair.client_events.iter().filter(|e| matches!(e, Event::OpenFailed { .. })).collect()
}

/// The two ends count a stream at different moments: the client lets go
/// of it once both ends finished it and its program read all, the node
/// once its destination has also taken the last of the upload. At exactly
/// the limit, the client's next open came while the node still held such
/// a stream, and the node refused it with `Limit`: the program's
/// connection failed (or, answered at once, closed empty) where it should
/// have waited.
#[test]
fn an_open_sent_while_the_node_drains_a_stream_the_client_let_go_waits_for_that_slot() {
    let (mut pair, a, b, uploaded) = at_the_limit_with_a_stream_the_client_let_go();
    // The next program connection, with its first bytes (optimistic).
    let c = pair.client.open_stream(dest()).unwrap();
    pair.client.send(c, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    pair.drive();
    assert!(open_failed(&pair).is_empty(), "refused: {:?}", pair.client_events);
    assert!(!pair.node_events.contains(&Event::OpenRequested { stream: c, dest: dest() }), "connected past the limit");

    // A client that ignores its own count is still refused (raw opens):
    // the node holds b and c for it.
    pair.node.handle_input(pair.now, 1, &raw_opens([c + 1]));
    let sent: Vec<Frame> = std::iter::from_fn(|| pair.node.poll_transmit()).flat_map(|(_, bytes)| frames_of(&bytes)).collect();
    assert!(sent.contains(&Frame::OpenFailed { stream: c + 1, code: ErrorCode::Limit }), "{sent:?}");

    // The destination takes the rest: the slot frees, and c goes on, its
    // first bytes with it.
    pair.node.consumed(pair.now, a, uploaded);
    pair.drive();
    assert!(!pair.node.has_stream(a));
    assert!(pair.node_events.contains(&Event::OpenRequested { stream: c, dest: dest() }));
    assert!(pair.client_events.contains(&Event::Opened { stream: c }));
    assert_eq!(pair.node_got[&c], b"GET / HTTP/1.1\r\n\r\n");
    assert!(open_failed(&pair).is_empty(), "{:?}", pair.client_events);
    assert_eq!(pair.node.n_streams(), 2);
    assert_eq!(pair.pump(b, b"b lives on", true), 10);
}

/// An open that waits at the node for a stream the client let go of is
/// refused with `Limit` once it has waited `stream_slot_wait` in vain (a
/// destination that never reads the rest of an upload), as an open that
/// waits in the client's driver is; the slot, once free, serves the next.
#[test]
fn an_open_that_waits_at_the_node_in_vain_is_refused_after_the_slot_wait() {
    let (mut pair, a, _, uploaded) = at_the_limit_with_a_stream_the_client_let_go();
    let c = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    let wait = Limits::default().stream_slot_wait;
    pair.advance(wait - Duration::from_millis(100));
    assert!(open_failed(&pair).is_empty(), "refused early: {:?}", pair.client_events);
    pair.advance(Duration::from_millis(200));
    assert_eq!(open_failed(&pair), [&Event::OpenFailed { stream: c, code: ErrorCode::Limit }]);
    assert!(!pair.node_events.iter().any(|e| matches!(e, Event::OpenRequested { stream, .. } if *stream == c)));
    pair.node.consumed(pair.now, a, uploaded);
    pair.drive();
    let d = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    assert!(pair.client_events.contains(&Event::Opened { stream: d }), "{:?}", pair.client_events);
}

/// A destination that never takes the rest of an upload kept its stream,
/// one of `max_streams`, for as long as the session lived, though both
/// ends had finished it and the client had let go of it: every open
/// after it waited the slot wait and was refused. The sweep of streams
/// the client has finished resets it with `Idle` at the second sweep in
/// which the destination took nothing (10 min after the `Fin`), and the
/// slot serves the next open; one whose destination reads now and then is
/// left alone.
#[test]
fn a_stream_whose_destination_never_takes_the_upload_is_reset_idle_and_frees_its_slot() {
    for reads in [false, true] {
        let (mut pair, a, _, _) = at_the_limit_with_a_stream_the_client_let_go();
        let finished = pair.now;
        let mut reset_after = None;
        // Half-second steps for 15 min: the client pings every 5 s.
        for step in 0..1800u32 {
            if reads && step.is_multiple_of(120) {
                pair.node.consumed(pair.now, a, 1_000);
            }
            if step.is_multiple_of(10) {
                pair.client.ping(pair.now).unwrap();
            }
            pair.advance(Duration::from_millis(500));
            if reset_after.is_none() && pair.node_events.contains(&Event::Reset { stream: a, code: ErrorCode::Idle }) {
                reset_after = Some(pair.now - finished);
            }
        }
        assert_eq!(closed_event(pair.node_events.clone()), None);
        if reads {
            assert_eq!(reset_after, None, "a destination still reading was cut off");
            assert!(pair.node.has_stream(a));
            continue;
        }
        let took = reset_after.expect("the stream was never reset");
        assert!((600..=601).contains(&took.as_secs()), "reset {took:?} after the Fin");
        assert!(!pair.node.has_stream(a));
        let c = pair.client.open_stream(dest()).unwrap();
        pair.drive();
        assert!(pair.client_events.contains(&Event::Opened { stream: c }), "{:?}", pair.client_events);
    }
}

/// The slot frees while the session is paused for a receipt: the open
/// waits on for the receipt, as any open the node gets while paused.
#[test]
fn an_open_whose_slot_frees_while_the_session_is_paused_waits_for_the_receipt() {
    let (mut pair, a, b, uploaded) = at_the_limit_with_a_stream_the_client_let_go();
    pair.drop_client_frame = |f| matches!(f, Frame::Receipt(_));
    pair.pump(b, &pattern(3 * MIB as usize, 2), false);
    assert!(pair.node_events.iter().any(|e| matches!(e, Event::Paused { .. })));
    let c = pair.client.open_stream(dest()).unwrap();
    pair.client.send(c, b"hello").unwrap();
    pair.drive();
    pair.node.consumed(pair.now, a, uploaded);
    pair.drive();
    assert!(!pair.node.has_stream(a));
    let requested = |pair: &Pair| pair.node_events.contains(&Event::OpenRequested { stream: c, dest: dest() });
    assert!(!requested(&pair), "connected for a client that does not pay");

    pair.drop_client_frame = keep;
    let bytes = pair.client.cumulative_bytes();
    let paid = pair.receipt(&pair.client_key.clone(), tollway_ledger::cost_of_bytes(PRICE, bytes).0, bytes);
    pair.node.handle_input(pair.now, 1, &Frame::Receipt(paid).to_bytes());
    pair.drive();
    assert!(requested(&pair));
    assert!(pair.client_events.contains(&Event::Opened { stream: c }));
    assert_eq!(pair.node_got[&c], b"hello");
    assert!(open_failed(&pair).is_empty(), "{:?}", pair.client_events);
}

#[test]
fn bytes_the_node_held_for_a_receipt_are_counted_as_the_client_counted_them_however_the_stream_ends() {
    // Paused, the node holds what the client sends; the client counted it
    // when it sent it. A reset drops the stream with it, and so does the
    // session's close: counted by the node too, or the two counts part
    // (at the close, the node's count is what it carries into the client's
    // next session).
    #[derive(Debug)]
    enum End {
        ClientResets,
        NodeResets,
        ClientCloses,
        NodeCloses,
    }
    for end in [End::ClientResets, End::NodeResets, End::ClientCloses, End::NodeCloses] {
        let mut pair = Pair::established(Usd(10_000_000));
        pair.drop_client_frame = |f| matches!(f, Frame::Receipt(_));
        let s = pair.client.open_stream(dest()).unwrap();
        pair.drive();
        pair.pump(s, &pattern(3 * MIB as usize, 3), false);
        assert_eq!(pair.node.unpaid_bytes(), 2 * MIB);
        pair.pump(s, &pattern(100_000, 4), true);
        assert_eq!(pair.node.cumulative_bytes(), 2 * MIB);
        match end {
            End::ClientResets => pair.client.reset(s, ErrorCode::Shutdown),
            End::NodeResets => pair.node.reset(s, ErrorCode::Shutdown),
            End::ClientCloses => pair.client.close(ErrorCode::Shutdown, "going away"),
            End::NodeCloses => pair.node.close(ErrorCode::Shutdown, "going away"),
        }
        pair.drive();
        let closes = matches!(end, End::ClientCloses | End::NodeCloses);
        assert_eq!(pair.node.is_closed(), closes, "{end:?}");
        assert_eq!(pair.client.cumulative_bytes(), 2 * MIB + 100_000, "{end:?}");
        assert_eq!(pair.node.cumulative_bytes(), pair.client.cumulative_bytes(), "{end:?}");
    }
}

#[test]
fn uploads_dropped_past_the_escrow_end_the_session_as_spent() {
    // What the node counts as it drops it (bytes in flight to streams it
    // reset) is not held back by its credit, so its count can pass what
    // the escrow buys, where the client's receipts stop: paid to the
    // escrow's end, the session is over, not paused until it is unpaid.
    let escrow = Usd(1_465);
    let bought = tollway_tunnel::session::bytes_bought(PRICE, escrow);
    let mut pair = Pair::established(escrow);
    let data = pattern(256 * 1024, 7);
    let mut dropped = 0;
    while dropped < 2 * MIB && !pair.node.is_closed() {
        let streams: Vec<StreamId> = (0..4).map(|_| pair.client.open_stream(dest()).unwrap()).collect();
        pair.drive();
        for &s in &streams {
            dropped += pair.client.send(s, &data).unwrap_or(0) as u64;
            pair.node.reset(s, ErrorCode::Shutdown);
        }
        pair.drive();
    }
    assert!(dropped > bought, "{dropped} bytes sent, {bought} bought");
    assert_eq!(last_accepted(&pair), Some((bought, escrow)));
    assert!(pair.client_events.contains(&Event::EscrowExhausted));
    assert_eq!(closed_event(pair.node_events.clone()).map(|c| c.0), Some(ErrorCode::EscrowExhausted));
}

#[test]
fn a_peer_that_ignores_the_session_window_is_closed() {
    let mut pair = Pair::established(Usd(1_000_000_000));
    pair.node_consumes = false;
    let streams: Vec<StreamId> = (0..33).map(|_| pair.client.open_stream(dest()).unwrap()).collect();
    pair.drive();
    // 33 x 256 KiB, each within its stream's window but past the session's
    // 8 MiB, written straight onto the wire.
    let mut wire = Vec::new();
    for &stream in &streams {
        for chunk in pattern(256 * 1024, 5).chunks(16 * 1024) {
            Frame::Data { stream, payload: chunk.to_vec() }.encode(&mut wire);
        }
    }
    pair.node.handle_input(pair.now, 1, &wire);
    while pair.node.poll_event().is_some() {}
    assert!(pair.node.is_closed());
}

#[test]
fn streams_are_limited_and_a_reset_ends_one_stream_only() {
    let mut pair = Pair::established(Usd(10_000_000));
    let a = pair.client.open_stream(dest()).unwrap();
    let b = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    pair.client.reset(a, ErrorCode::Shutdown);
    pair.drive();
    assert!(pair.node_events.contains(&Event::Reset {
        stream: a,
        code: ErrorCode::Shutdown
    }));
    assert_eq!(pair.pump(b, b"still here", true), 10);
    assert_eq!(pair.node_got[&b], b"still here");
}

#[test]
fn the_session_moves_to_new_connections_three_times_mid_transfer_byte_exact() {
    let mut pair = Pair::established(Usd(100_000_000));
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    let down = pattern(4 * MIB as usize, 7);
    let mut sent = 0;
    let mut next_path: PathId = 2;
    let mut retired = Vec::new();
    for round in 0..4 {
        // Send a quarter, part of it still in flight when the switch starts.
        let quarter = down.len() / 4;
        let n = pair.node.send(s, &down[sent..sent + 100_000]).unwrap();
        sent += n;
        if round < 3 {
            let binding = [next_path as u8; 32];
            pair.client.attach_path(pair.now, next_path, binding).unwrap();
            // The node's driver sees a Resume as the first frame.
            let (path, bytes) = pair.client.poll_transmit().unwrap();
            assert_eq!(path, next_path);
            let (Frame::Resume(resume), used) = Frame::decode(&bytes).unwrap() else {
                panic!("not a resume")
            };
            assert_eq!(used, bytes.len());
            pair.node
                .handle_resume(pair.now, next_path, binding, &resume)
                .unwrap();
            next_path += 1;
        }
        let target = ((round + 1) * quarter).min(down.len());
        sent += pair.pump(s, &down[sent..target], false);
        pair.drive();
        for e in pair.client_events.iter().chain(&pair.node_events) {
            if let Event::PathRetired { path } = e {
                if !retired.contains(path) {
                    retired.push(*path);
                }
            }
        }
    }
    sent += pair.pump(s, &down[sent..], false);
    pair.drive();
    assert_eq!(sent, down.len());
    assert!(
        pair.client_got[&s] == down,
        "bytes differ after path switches"
    );
    assert_eq!(retired, [1, 2, 3]);
    assert_eq!(pair.client.current_path(), 4);
    assert_eq!(pair.node.current_path(), 4);
}

#[test]
fn a_peer_that_pours_bytes_into_a_path_it_never_switches_to_is_closed() {
    // After a valid resume the node reads the old path until the client's
    // PathSwitch there; what arrives on the new one waits. A client that
    // never switches and pours data frames into the new path was buffered
    // without bound (128 MiB here, 16 windows).
    let mut pair = Pair::established(Usd(100_000_000));
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    pair.client.attach_path(pair.now, 2, [2; 32]).unwrap();
    let (_, bytes) = pair.client.poll_transmit().unwrap();
    let (Frame::Resume(resume), _) = Frame::decode(&bytes).unwrap() else { panic!("not a resume") };
    pair.node.handle_resume(pair.now, 2, [2; 32], &resume).unwrap();
    let mut chunk = Vec::new();
    while chunk.len() < MIB as usize {
        tollway_tunnel::frame::encode_data(&mut chunk, s, &[0x41; 16 * 1024 - 8]);
    }
    pour_until_closed(&mut pair, 2, &chunk, 128 * MIB, 18 * MIB, "on a path not yet switched to");
}

#[test]
fn a_new_path_the_node_never_answers_is_given_up_and_the_next_hop_is_tried() {
    // A port where a censor let the handshake through and then dropped
    // every packet: the client's resume never gets its ResumeOk. The path
    // waited for as long as its connection lived, and every later hop was
    // refused with `MigrationPending`.
    let mut pair = Pair::established(Usd(100_000_000));
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    pair.client.attach_path(pair.now, 2, [2; 32]).unwrap();
    // Whatever goes to path 2 is lost.
    while pair.client.poll_transmit().is_some() {}
    assert!(matches!(pair.client.attach_path(pair.now, 3, [3; 32]), Err(tollway_tunnel::session::SessionError::MigrationPending)));
    let deadline = pair.client.poll_timeout().unwrap();
    assert!(deadline <= pair.now + Limits::default().handshake_timeout, "no deadline for the new path");
    pair.now = deadline;
    pair.client.handle_timeout(pair.now);
    let retired: Vec<PathId> = std::iter::from_fn(|| pair.client.poll_event())
        .filter_map(|e| match e {
            Event::PathRetired { path } => Some(path),
            _ => None,
        })
        .collect();
    assert_eq!(retired, vec![2], "the driver is told to close the new path's connection");
    // The session goes on where it was, and the next window's hop is taken.
    assert!(pair.client.is_established());
    pair.client.attach_path(pair.now, 3, [3; 32]).unwrap();
    let data = pattern(64 * 1024, 9);
    assert_eq!(pair.pump(s, &data, true), data.len());
}

/// Feeds `chunk` to the node on `path` again and again, `give_up` bytes
/// at most: it must close for a protocol violation saying `why` within
/// `closed_within` bytes.
fn pour_until_closed(pair: &mut Pair, path: PathId, chunk: &[u8], give_up: u64, closed_within: u64, why: &str) {
    let mut fed = 0u64;
    while !pair.node.is_closed() && fed < give_up {
        pair.node.handle_input(pair.now, path, chunk);
        fed += chunk.len() as u64;
    }
    assert!(pair.node.is_closed(), "still open after {} MiB", fed / MIB);
    assert!(fed <= closed_within, "closed only after {} MiB", fed / MIB);
    let (code, message) = closed_event(std::iter::from_fn(|| pair.node.poll_event())).expect("a Closed event");
    assert_eq!(code, ErrorCode::Protocol);
    assert!(message.contains(why), "{message}");
}

#[test]
fn a_peer_that_pings_and_never_reads_the_answers_is_closed() {
    // Each Ping queued a Pong, and nothing bounded the queue: a client
    // that never read grew the node's memory with every ping it sent.
    let mut pair = Pair::established(Usd(100_000_000));
    let mut pings = Vec::new();
    for nonce in 0..100_000u64 {
        Frame::Ping { nonce }.encode(&mut pings);
    }
    pour_until_closed(&mut pair, 1, &pings, 64 * MIB, 8 * MIB, "reads none of them");
}

/// A node's hello as a greedy node would write it, the rest as ours.
fn greedy_hello(credit_window_bytes: u64, carried_bytes: u64, stream_window_bytes: u32, session_window_bytes: u64) -> ServerHello {
    ServerHello {
        version: PROTOCOL_VERSION,
        session_id: [1; 16],
        price_usd_micro_per_gib: PRICE,
        receipt_interval_bytes: MIB,
        credit_window_bytes,
        stream_window_bytes,
        max_streams: 64,
        session_window_bytes,
        baseline: None,
        carried_bytes,
        exit_policy: None,
    }
}

/// The code and message of the first `Closed` among `events`.
fn closed_event(events: impl IntoIterator<Item = Event>) -> Option<(ErrorCode, String)> {
    events.into_iter().find_map(|e| match e {
        Event::Closed { code, message, .. } => Some((code, message)),
        _ => None,
    })
}

/// What the client signed, as (bytes, USD).
fn signed(events: impl IntoIterator<Item = Event>) -> Vec<(u64, Usd)> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::ReceiptSent { cumulative_bytes, cumulative_usd } => Some((cumulative_bytes, cumulative_usd)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_node_cannot_claim_gigabytes_carried_by_announcing_a_huge_credit_window() {
    // The client refused carried bytes above the node's credit window, but
    // the node chose the window: 9 GiB of each had the client sign $9 at
    // once, having received nothing.
    const GIB: u64 = 1 << 30;
    let mut pair = Pair::new(Usd(10_000_000));
    while pair.client.poll_transmit().is_some() {}
    let hello = greedy_hello(9 * GIB, 9 * GIB, 256 * 1024, 8 * MIB);
    pair.client.handle_input(pair.now, 1, &Frame::ServerHello(hello).to_bytes());
    let events: Vec<Event> = std::iter::from_fn(|| pair.client.poll_event()).collect();
    assert_eq!(signed(events.clone()), [], "signed for a session that received nothing");
    let closed = closed_event(events.iter().cloned());
    assert!(matches!(&closed, Some((ErrorCode::Protocol, m)) if m.contains("at most 64 MiB")), "{closed:?}");
    // Within the bound, a carried window is owed as before.
    let mut pair = Pair::new(Usd(10_000_000));
    while pair.client.poll_transmit().is_some() {}
    pair.client.handle_input(pair.now, 1, &Frame::ServerHello(greedy_hello(64 * MIB, 64 * MIB, 256 * 1024, 8 * MIB)).to_bytes());
    assert!(pair.client.is_established());
}

#[test]
fn a_baseline_receipt_from_another_chain_is_refused() {
    // The same key and channel nonce on a testnet give the same channel id.
    // A node holding the client's testnet receipt handed it over as the
    // baseline: the client went on from its $9 and signed $9.000977 here
    // for a MiB. The node's lookup passes it on as a node with such a
    // receipt in its book would.
    let mut pair = Pair::new(Usd(10_000_000));
    let foreign = Receipt {
        chain_id: "tollway-testnet".into(),
        channel: pair.channel_id,
        cumulative_usd: Usd(9_000_000),
        cumulative_bytes: MIB,
    }
    .sign(&pair.client_key);
    pair.latest_receipt = Some(foreign.clone());
    pair.drive();
    assert!(pair.client.is_established(), "our node leaves a receipt of another chain out: {:?}", pair.client_events);
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    pair.pump(s, &pattern(MIB as usize, 3), false);
    let most = signed(pair.client_events.clone()).iter().map(|(_, usd)| *usd).max().unwrap_or(Usd::ZERO);
    assert!(most <= Usd(2_000), "for a MiB the client signed {most}");
    // A node that sends it anyway is refused by the client.
    let mut pair = Pair::new(Usd(10_000_000));
    while pair.client.poll_transmit().is_some() {}
    let hello = ServerHello { baseline: Some(foreign), ..greedy_hello(2 * MIB, 0, 256 * 1024, 8 * MIB) };
    pair.client.handle_input(pair.now, 1, &Frame::ServerHello(hello).to_bytes());
    assert!(pair.client.is_closed());
}

#[test]
fn a_node_cannot_make_the_client_hold_more_than_its_windows_allow() {
    // The hello's windows are the session's; a node announcing a 4 GiB
    // stream window and a 1 TiB session window made the client take 256
    // MiB on a stream nobody read (and sign for it).
    let mut pair = Pair::new(Usd(10_000_000_000));
    while pair.client.poll_transmit().is_some() {}
    let hello = greedy_hello(2 * MIB, 0, u32::MAX, 1 << 40);
    pair.client.handle_input(pair.now, 1, &Frame::ServerHello(hello).to_bytes());
    assert!(!pair.client.is_established());
    let closed = closed_event(std::iter::from_fn(|| pair.client.poll_event()));
    assert!(matches!(&closed, Some((ErrorCode::BadHello, m)) if m.contains("above what a client holds")), "{closed:?}");
}

#[test]
fn a_wrong_resume_proof_is_refused() {
    let mut pair = Pair::established(Usd(1_000_000));
    let resume = tollway_tunnel::frame::Resume {
        session_id: pair.node.session_id(),
        proof: [0; 32],
    };
    assert!(pair
        .node
        .handle_resume(pair.now, 2, [2; 32], &resume)
        .is_err());
}

#[test]
fn idle_and_handshake_timeouts_close_the_session() {
    let mut pair = Pair::new(Usd(1_000_000));
    let deadline = pair.node.poll_timeout().unwrap();
    pair.node
        .handle_timeout(deadline + Duration::from_millis(1));
    assert!(pair.node.is_closed());

    let mut pair = Pair::established(Usd(1_000_000));
    let idle = pair.node.poll_timeout().unwrap();
    assert!(idle > pair.now + Duration::from_secs(60));
    pair.node.handle_timeout(idle);
    assert!(pair.node.is_closed());
}

#[test]
fn truncated_frames_are_incomplete_and_never_panic() {
    let frames = [
        Frame::Open {
            stream: 7,
            dest: dest(),
        },
        Frame::Data {
            stream: 7,
            payload: pattern(1000, 1),
        },
        Frame::Window {
            stream: 7,
            bytes: 65536,
        },
        Frame::PathSwitch,
        Frame::Ping { nonce: 99 },
    ];
    for frame in frames {
        let bytes = frame.to_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(
                Frame::decode(&bytes[..cut]),
                Err(FrameError::Incomplete),
                "{frame:?} cut at {cut}"
            );
        }
        assert_eq!(Frame::decode(&bytes), Ok((frame, bytes.len())));
    }
    // A declared length over the limit is refused before the body arrives.
    assert!(matches!(
        Frame::decode(&[0x13, 0xff, 0xff, 0xff]),
        Err(FrameError::TooLarge { .. })
    ));
    assert!(matches!(
        Frame::decode(&[0x7f, 0, 0, 0]),
        Err(FrameError::UnknownType(0x7f))
    ));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Frame::decode(&bytes);
            let _ = tollway_tunnel::frame::first_frame(&bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic_a_node_session(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let mut pair = Pair::new(Usd(1_000_000));
            for c in &chunks {
                pair.node.handle_input(pair.now, 1, c);
            }
            while pair.node.poll_transmit().is_some() {}
        }
    }
}

/// A stream whose reader drains it slowly (an upload over a home uplink:
/// less than half a window consumed between announcements) still announces
/// what it consumed every `WINDOW_ANNOUNCE_EVERY`: the sender hears from
/// its peer while it sends, and its health check counts that as the peer
/// being up although the answer to its ping waits behind its own data.
#[test]
fn a_slowly_read_stream_announces_its_window_every_quarter_second() {
    let mut pair = Pair::established(Usd(1_000_000_000));
    pair.node_consumes = false;
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    let window = pair.pump(s, &pattern(4 * MIB as usize, 9), true);
    assert_eq!(pair.client.send(s, b"x").unwrap(), 0, "the stream's window is used");
    // A tenth of the window read, then another 100 ms later: not yet.
    let tenth = window / 10;
    pair.node.consumed(pair.now, s, tenth);
    pair.now += Duration::from_millis(100);
    pair.node.consumed(pair.now, s, tenth);
    pair.drive();
    assert_eq!(pair.client.send(s, b"x").unwrap(), 0);
    // A quarter of a second after the first read: announced.
    pair.now += tollway_tunnel::session::WINDOW_ANNOUNCE_EVERY - Duration::from_millis(100);
    pair.node.consumed(pair.now, s, tenth);
    pair.drive();
    assert_eq!(pair.client.send(s, &pattern(window, 9)).unwrap(), 3 * tenth);
}

#[test]
fn an_open_to_port_0_is_refused_at_the_client_and_the_session_goes_on() {
    // The client sent it: the node's decoder took the open for a protocol
    // violation and closed the session, so one program's request to port 0
    // (`curl -x … http://host:0/`) killed every stream on the route.
    let mut pair = Pair::established(Usd(10_000_000));
    let port_0 = Dest::new(tollway_tunnel::Host::Ip([127, 0, 0, 1].into()), 0);
    assert!(matches!(
        pair.client.open_stream(port_0),
        Err(tollway_tunnel::session::SessionError::BadDest(tollway_tunnel::dest::DestError::PortZero))
    ));
    pair.drive();
    assert!(pair.client.is_established() && pair.node.is_established());
    let s = pair.client.open_stream(dest()).unwrap();
    pair.drive();
    assert_eq!(pair.pump(s, &pattern(64 * 1024, 5), false), 64 * 1024);
    assert!(pair.rejected_codes().is_empty());
}

/// The node's hello tells a client of version 4 what its exit refuses
/// (loopback allowed on this one, port 25 denied).
#[test]
fn the_nodes_hello_announces_its_exit_policy() {
    fn devnet(terms: &mut NodeTerms) {
        let policy = tollway_tunnel::ExitPolicy { allow_loopback: true, denied_ports: vec![25], ..Default::default() };
        terms.exit_policy = policy.announced();
    }
    let mut pair = Pair::build(Usd(10_000_000), [9; 32], [9; 32], devnet);
    pair.drive();
    assert!(pair.client.is_established());
    let announced = pair.client.exit_policy().expect("a policy in the hello").clone();
    assert_eq!(announced.check([127, 0, 0, 1].into(), 80), Ok(()));
    assert_eq!(announced.check([10, 0, 0, 1].into(), 80), Err(tollway_tunnel::policy::Forbidden::Private));
    assert_eq!(announced.check([93, 184, 216, 34].into(), 25), Err(tollway_tunnel::policy::Forbidden::Port(25)));
}

/// A client of version 3, which knows no policy in the hello: a node of
/// version 4 serves it, with a hello in version 3's layout (an older
/// client's decoder refuses trailing bytes). A client of a version the
/// node does not know is refused with a message that names both.
#[test]
fn a_node_serves_a_client_of_version_3_in_its_own_layout_and_refuses_a_newer_one() {
    /// What a client signs in its hello, as every version so far lays it out.
    #[derive(serde::Serialize)]
    struct Signed<'a> {
        version: u16,
        chain_id: &'a str,
        node: &'a tollway_types::keys::AccountId,
        channel: &'a ChannelId,
        binding: &'a [u8; 32],
    }
    /// Version 3's server hello, as a client of that version decodes it.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct HelloV3 {
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
    let hello_of = |pair: &Pair, version: u16| {
        let node = pair.channel.node;
        let signed = Signed { version, chain_id: CHAIN, node: &node, channel: &pair.channel_id, binding: &[9; 32] };
        let signature = pair.client_key.sign(&tollway_types::codec::domain_bytes(b"tollway-tunnel-hello", &signed));
        let hello = tollway_tunnel::frame::ClientHello {
            version,
            chain_id: CHAIN.into(),
            node,
            channel: pair.channel_id,
            client: pair.client_key.public(),
            signature,
        };
        Frame::ClientHello(hello).to_bytes()
    };
    let mut pair = Pair::new(Usd(10_000_000));
    let hello = hello_of(&pair, 3);
    pair.node.handle_input(pair.now, 1, &hello);
    assert!(matches!(pair.node.poll_event(), Some(Event::ChannelNeeded { .. })));
    let info = ChannelInfo { channel: pair.channel.clone(), latest_receipt: None, expired: false, carried_bytes: 0 };
    pair.node.handle_channel(pair.now, Ok(info));
    assert!(pair.node.is_established());
    let (_, sent) = pair.node.poll_transmit().expect("the node's hello");
    let len = u32::from_be_bytes([0, sent[1], sent[2], sent[3]]) as usize;
    let body = &sent[tollway_tunnel::frame::HEADER_BYTES..][..len];
    let old: HelloV3 = tollway_types::codec::decode(body, body.len()).expect("version 3's layout");
    assert_eq!((old.version, old.max_streams), (3, tollway_tunnel::session::DEFAULT_MAX_STREAMS));
    match Frame::decode(&sent) {
        Ok((Frame::ServerHello(h), _)) => assert_eq!((h.version, h.exit_policy), (3, None)),
        other => panic!("{other:?}"),
    }

    let mut pair = Pair::new(Usd(10_000_000));
    let hello = hello_of(&pair, PROTOCOL_VERSION + 1);
    pair.node.handle_input(pair.now, 1, &hello);
    let refused = closed_event(std::iter::from_fn(|| pair.node.poll_event()));
    let (code, message) = refused.expect("refused");
    assert_eq!(code, ErrorCode::Version);
    assert!(message.contains("protocol version 5 is not spoken here (this node speaks 3 to 4)"), "{message}");
}
