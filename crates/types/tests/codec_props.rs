//! Property tests for the signed-tx codec (ADR 0002): the decoder returns an
//! error for every malformed input and never panics, every valid tx
//! round-trips, and each input has at most one decoding (so a tx id names
//! exactly one byte string). The libFuzzer target in `fuzz/` checks the same
//! contract coverage-guided; these run on every `cargo test`.

use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tollway_types::codec::{DecodeError, CODEC_VERSION};
use tollway_types::tx::limits;
use tollway_types::{
    AccountId, Amount, CountryCode, Hash32, Measurement, MeasurementOutcome, MeasurementReport,
    NodeSpec, PublicKey, Receipt, SignedTx, SigningKey, Token, Tx, TxBody, Usd,
};

// ---- strategies -------------------------------------------------------

fn account() -> impl Strategy<Value = AccountId> {
    any::<[u8; 32]>().prop_map(PublicKey)
}

fn hash() -> impl Strategy<Value = Hash32> {
    any::<[u8; 32]>().prop_map(Hash32)
}

fn token() -> impl Strategy<Value = Token> {
    any::<u128>().prop_map(Token)
}

fn usd() -> impl Strategy<Value = Usd> {
    any::<u128>().prop_map(Usd)
}

fn amount() -> impl Strategy<Value = Amount> {
    prop_oneof![token().prop_map(Amount::Token), usd().prop_map(Amount::Usd)]
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

/// Any Unicode text of at most `max_bytes` UTF-8 bytes: the limits count
/// bytes, and multi-byte characters are where an off-by-one would hide.
fn text(max_bytes: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..=max_bytes).prop_map(move |chars| {
        let mut s = String::new();
        for c in chars {
            if s.len() + c.len_utf8() > max_bytes {
                break;
            }
            s.push(c);
        }
        s
    })
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (
        // Any two bytes: the decoder does not check country codes.
        any::<[u8; 2]>().prop_map(CountryCode),
        prop::collection::vec(ip(), 0..=limits::MAX_NODE_ADDRS),
        any::<(u16, u16)>(),
        any::<[u8; 32]>(),
        any::<(u64, u64, Option<u64>)>(),
    )
        .prop_map(
            |(country, addrs, (port_first, port_last), tls_key_pin, (cap, gib, hour))| NodeSpec {
                country,
                addrs,
                port_first,
                port_last,
                tls_key_pin,
                claimed_capacity_bps: cap,
                price_usd_micro_per_gib: gib,
                price_usd_micro_per_hour: hour,
            },
        )
}

fn report() -> impl Strategy<Value = MeasurementReport> {
    let outcome = prop_oneof![
        any::<(u64, u32)>().prop_map(
            |(throughput_bps, latency_us)| MeasurementOutcome::Measured {
                throughput_bps,
                latency_us
            }
        ),
        Just(MeasurementOutcome::Unreachable),
        Just(MeasurementOutcome::OracleError),
    ];
    let measurement =
        (account(), outcome, any::<u32>()).prop_map(|(node, outcome, uptime_ppm)| Measurement {
            node,
            outcome,
            uptime_ppm,
        });
    // Short lists keep cases fast; the 1024 limit is tested exactly below.
    (any::<u64>(), prop::collection::vec(measurement, 0..8)).prop_map(|(epoch, measurements)| {
        MeasurementReport {
            epoch,
            measurements,
        }
    })
}

/// Test keys by label: real signatures, so a round trip can be checked to
/// keep them verifiable.
fn key() -> impl Strategy<Value = SigningKey> {
    prop::sample::select(vec!["alice", "bob", "carol"]).prop_map(SigningKey::from_label)
}

/// Every `TxBody` variant, with arbitrary field values inside the limits.
fn body() -> impl Strategy<Value = TxBody> {
    let receipt = (
        text(limits::MAX_CHAIN_ID_BYTES),
        hash(),
        usd(),
        any::<u64>(),
        key(),
    )
        .prop_map(
            |(chain_id, channel, cumulative_usd, cumulative_bytes, client)| {
                let receipt = Receipt {
                    chain_id,
                    channel,
                    cumulative_usd,
                    cumulative_bytes,
                };
                TxBody::SettleChannel {
                    receipt: receipt.sign(&client),
                }
            },
        );
    prop_oneof![
        (account(), amount()).prop_map(|(to, amount)| TxBody::Transfer { to, amount }),
        token().prop_map(|amount| TxBody::Stake { amount }),
        token().prop_map(|amount| TxBody::BeginUnbond { amount }),
        Just(TxBody::WithdrawUnbonded),
        node_spec().prop_map(TxBody::RegisterNode),
        node_spec().prop_map(TxBody::UpdateNode),
        Just(TxBody::DeregisterNode),
        ip().prop_map(|addr| TxBody::RegisterOracle { addr }),
        Just(TxBody::DeregisterOracle),
        (account(), usd(), any::<u64>()).prop_map(|(node, escrow, expires_at_secs)| {
            TxBody::OpenChannel {
                node,
                escrow,
                expires_at_secs,
            }
        }),
        receipt,
        hash().prop_map(|channel| TxBody::CloseChannel { channel }),
        any::<u64>().prop_map(|epoch| TxBody::Heartbeat { epoch }),
        report().prop_map(TxBody::Report),
        (amount(), any::<u128>()).prop_map(|(sell, min_out)| TxBody::Swap { sell, min_out }),
        (account(), usd()).prop_map(|(to, amount)| TxBody::Deposit { to, amount }),
        (usd(), text(limits::MAX_WITHDRAW_REFERENCE_BYTES))
            .prop_map(|(amount, reference)| TxBody::WithdrawUsd { amount, reference }),
        Just(TxBody::ClaimVested),
    ]
}

fn signed_tx() -> impl Strategy<Value = SignedTx> {
    (
        text(limits::MAX_CHAIN_ID_BYTES),
        key(),
        any::<u64>(),
        amount(),
        body(),
    )
        .prop_map(|(chain_id, key, nonce, fee, body)| {
            Tx {
                chain_id,
                signer: key.public(),
                nonce,
                fee,
                body,
            }
            .sign(&key)
        })
}

/// A fixed small tx for the deterministic tests below.
fn claim(chain_id: &str, nonce: u64) -> SignedTx {
    let key = SigningKey::from_label("alice");
    let tx = Tx {
        chain_id: chain_id.to_string(),
        signer: key.public(),
        nonce,
        fee: Amount::Usd(Usd(1)),
        body: TxBody::ClaimVested,
    };
    tx.sign(&key)
}

// ---- properties -------------------------------------------------------

proptest! {
    // Cheap cases: many of them.
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Arbitrary bytes never panic the decoder, and anything it accepts is
    /// the canonical encoding of what it returned. Half the inputs start
    /// with the right version byte, or nearly all would stop there.
    #[test]
    fn arbitrary_bytes_never_panic(
        right_version in any::<bool>(),
        mut bytes in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        if right_version && !bytes.is_empty() {
            bytes[0] = CODEC_VERSION;
        }
        if let Ok(tx) = SignedTx::decode(&bytes) {
            prop_assert_eq!(tx.encode(), bytes);
        }
    }
}

proptest! {
    /// Every valid tx round-trips, stays verifiable and keeps its id.
    #[test]
    fn valid_txs_round_trip(tx in signed_tx()) {
        let bytes = tx.encode();
        prop_assert!(bytes.len() <= limits::MAX_TX_BYTES);
        let decoded = SignedTx::decode(&bytes);
        prop_assert_eq!(decoded.as_ref(), Ok(&tx));
        if let Ok(decoded) = decoded {
            prop_assert_eq!(decoded.encode(), bytes);
            prop_assert_eq!(decoded.id(), tx.id());
            prop_assert_eq!(decoded.verify(), Ok(()));
        }
    }

    /// Changing one byte of a valid encoding either makes it undecodable or
    /// gives a different tx whose encoding is exactly the mutated bytes:
    /// never a second encoding of some tx.
    #[test]
    fn single_byte_mutation_fails_or_is_canonical(
        tx in signed_tx(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut bytes = tx.encode();
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        if let Ok(mutated) = SignedTx::decode(&bytes) {
            prop_assert_eq!(mutated.encode(), bytes);
            prop_assert_ne!(mutated, tx);
        }
    }

    /// Input over the size limit is refused before it is parsed, whatever
    /// it holds: here a valid tx with any tail.
    #[test]
    fn oversized_input_is_too_large(
        tx in signed_tx(),
        over in 1usize..4096,
        fill in any::<u8>(),
    ) {
        let mut bytes = tx.encode();
        let len = limits::MAX_TX_BYTES + over;
        bytes.resize(len, fill);
        prop_assert_eq!(
            SignedTx::decode(&bytes),
            Err(DecodeError::TooLarge { len, limit: limits::MAX_TX_BYTES })
        );
    }

    /// Any version byte but the current one is refused as such, however
    /// valid the rest.
    #[test]
    fn wrong_version_is_unsupported(
        tx in signed_tx(),
        version in any::<u8>().prop_filter("another version", |v| *v != CODEC_VERSION),
    ) {
        let mut bytes = tx.encode();
        bytes[0] = version;
        prop_assert_eq!(
            SignedTx::decode(&bytes),
            Err(DecodeError::UnsupportedVersion { found: version })
        );
    }
}

// ---- the edges, exactly -----------------------------------------------

#[test]
fn size_limit_boundary() {
    // Exactly at the limit is parsed (and then refused for its padding);
    // one byte more is refused for its size.
    let mut bytes = claim("edge", 1).encode();
    let valid_len = bytes.len();
    bytes.resize(limits::MAX_TX_BYTES, 0);
    assert_eq!(
        SignedTx::decode(&bytes),
        Err(DecodeError::TrailingBytes(limits::MAX_TX_BYTES - valid_len))
    );
    bytes.push(0);
    assert_eq!(
        SignedTx::decode(&bytes),
        Err(DecodeError::TooLarge {
            len: limits::MAX_TX_BYTES + 1,
            limit: limits::MAX_TX_BYTES
        })
    );
    assert_eq!(SignedTx::decode(&[]), Err(DecodeError::Empty));
}

#[test]
fn over_long_varint_is_non_canonical() {
    // Layout: version, chain id length (1 byte here), chain id, signer (32
    // bytes), then the nonce as a varint. Postcard also reads the nonce
    // 5 written in two bytes (0x85 0x00); the codec must not.
    let tx = claim("edge", 5);
    let bytes = tx.encode();
    let at = 1 + 1 + "edge".len() + 32;
    assert_eq!(bytes[at], 5, "the layout above is out of date");
    let mut longer = bytes.clone();
    longer.splice(at..=at, [0x85, 0x00]);
    assert_eq!(SignedTx::decode(&longer), Err(DecodeError::NonCanonical));
}

#[test]
fn field_limits_are_enforced_on_both_sides() {
    let key = SigningKey::from_label("alice");
    let node = SigningKey::from_label("node").public();
    let spec = |n: usize| NodeSpec {
        country: CountryCode(*b"DE"),
        addrs: vec![IpAddr::V4(Ipv4Addr::LOCALHOST); n],
        port_first: 1,
        port_last: 2,
        tls_key_pin: [0; 32],
        claimed_capacity_bps: 1,
        price_usd_micro_per_gib: 1,
        price_usd_micro_per_hour: None,
    };
    let report = |n: usize| {
        TxBody::Report(MeasurementReport {
            epoch: 1,
            measurements: vec![
                Measurement {
                    node,
                    outcome: MeasurementOutcome::Unreachable,
                    uptime_ppm: 0
                };
                n
            ],
        })
    };
    let settle = |n: usize| TxBody::SettleChannel {
        receipt: Receipt {
            chain_id: "c".repeat(n),
            channel: Hash32::default(),
            cumulative_usd: Usd(1),
            cumulative_bytes: 1,
        }
        .sign(&key),
    };
    // "é" is two bytes: the reference limit counts bytes, not characters.
    let withdraw = |n: usize| TxBody::WithdrawUsd {
        amount: Usd(1),
        reference: "é".repeat(n / 2),
    };
    let tx = |chain: usize, body: TxBody| {
        Tx {
            chain_id: "c".repeat(chain),
            signer: key.public(),
            nonce: 0,
            fee: Amount::Usd(Usd(1)),
            body,
        }
        .sign(&key)
    };
    let cases = [
        (
            limits::MAX_CHAIN_ID_BYTES,
            tx(limits::MAX_CHAIN_ID_BYTES, TxBody::ClaimVested),
            tx(limits::MAX_CHAIN_ID_BYTES + 1, TxBody::ClaimVested),
        ),
        (
            limits::MAX_NODE_ADDRS,
            tx(1, TxBody::RegisterNode(spec(limits::MAX_NODE_ADDRS))),
            tx(1, TxBody::UpdateNode(spec(limits::MAX_NODE_ADDRS + 1))),
        ),
        (
            limits::MAX_MEASUREMENTS_PER_REPORT,
            tx(1, report(limits::MAX_MEASUREMENTS_PER_REPORT)),
            tx(1, report(limits::MAX_MEASUREMENTS_PER_REPORT + 1)),
        ),
        (
            limits::MAX_CHAIN_ID_BYTES,
            tx(1, settle(limits::MAX_CHAIN_ID_BYTES)),
            tx(1, settle(limits::MAX_CHAIN_ID_BYTES + 1)),
        ),
        (
            limits::MAX_WITHDRAW_REFERENCE_BYTES,
            tx(1, withdraw(limits::MAX_WITHDRAW_REFERENCE_BYTES)),
            tx(1, withdraw(limits::MAX_WITHDRAW_REFERENCE_BYTES + 2)),
        ),
    ];
    let mut refusals = Vec::new();
    for (limit, at_limit, over) in cases {
        assert_eq!(
            SignedTx::decode(&at_limit.encode()),
            Ok(at_limit),
            "at the limit {limit}"
        );
        match SignedTx::decode(&over.encode()) {
            Err(e @ DecodeError::LimitExceeded { .. }) => refusals.push(e.to_string()),
            other => panic!("one past the limit {limit} decoded as {other:?}"),
        }
    }
    expect_test::expect![[r#"
        [
            "chain_id has 65 entries or bytes; the limit is 64",
            "addrs has 9 entries or bytes; the limit is 8",
            "measurements has 1025 entries or bytes; the limit is 1024",
            "receipt.chain_id has 65 entries or bytes; the limit is 64",
            "reference has 130 entries or bytes; the limit is 128",
        ]
    "#]].assert_debug_eq(&refusals);
}
