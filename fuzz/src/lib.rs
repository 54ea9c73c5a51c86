//! Fuzzing support for Tollway's untrusted-input decoders (ADR 0002).
//!
//! [`TARGETS`] lists the libFuzzer targets: each a property checked on
//! every input and the seed corpus `run.sh` writes before a run. The
//! `tollway-fuzz` binary (`seeds`, `check`) goes through that list.
//!
//! * [`check_tx_decode`] is the property the `tx_decode` libFuzzer target
//!   checks on every input; keeping it here lets unit tests and a replay
//!   run it on stable without libFuzzer.
//! * [`seed_txs`] builds valid (and a few just-over-the-limit) signed
//!   transactions of every [`TxBody`] variant. `run.sh` writes them out
//!   fresh before each run, so the fuzzer starts from deep inside the
//!   format instead of rediscovering postcard's layout, and the seeds can
//!   never go stale when an encoded type changes.
//! * The other targets follow the same pattern: [`check_socks_parse`] and
//!   [`seed_socks_parse`] (SOCKS5 / HTTP proxy), [`check_frame_decode`]
//!   and [`seed_frame_decode`] (tunnel frames and a node session),
//!   [`check_client_session`] and [`seed_client_session`] (what a node
//!   sends a client session), [`check_json_tx`] and [`seed_json_tx`]
//!   (the JSON face of a tx, and the text parsers of amounts, countries
//!   and durations).

mod client_session;
mod frame_decode;
mod json_tx;
mod socks_parse;

pub use client_session::{check_client_session, seed_client_session};
pub use frame_decode::{
    check_frame_decode, frame_index, seed_frame_decode, seed_frames, FRAME_VARIANTS,
};
pub use json_tx::{check_json_tx, seed_json_tx};
pub use socks_parse::{check_socks_parse, is_valid_session, seed_socks_parse, SocksSeed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tollway_types::tx::limits;
use tollway_types::{
    Amount, CountryCode, Hash32, Measurement, MeasurementOutcome, MeasurementReport, NodeSpec,
    Receipt, SignedTx, SigningKey, Token, Tx, TxBody, Usd,
};

/// One libFuzzer target: `fuzz_targets/NAME.rs` calls `check`.
pub struct FuzzTarget {
    pub name: &'static str,
    /// The property; panics on a finding.
    pub check: fn(&[u8]),
    /// Named seed inputs, written one file each.
    pub seeds: fn() -> Vec<(String, Vec<u8>)>,
    /// What the seeds are, for the seed writer's message.
    pub seeds_are: &'static str,
}

/// Every target. A new one is a line here, a `[[bin]]` in Cargo.toml, its
/// file under fuzz_targets/ and a line in run.sh's `case`.
pub const TARGETS: &[FuzzTarget] = &[
    FuzzTarget {
        name: "tx_decode",
        check: check_tx_decode,
        seeds: || {
            seed_txs()
                .into_iter()
                .map(|s| (s.name, s.tx.encode()))
                .collect()
        },
        seeds_are: "seed txs",
    },
    FuzzTarget {
        name: "socks_parse",
        check: check_socks_parse,
        seeds: || {
            seed_socks_parse()
                .into_iter()
                .map(|s| (s.name, s.bytes))
                .collect()
        },
        seeds_are: "seed SOCKS5 and HTTP proxy inputs",
    },
    FuzzTarget {
        name: "frame_decode",
        check: check_frame_decode,
        seeds: || {
            seed_frame_decode()
                .into_iter()
                .map(|s| (s.name, s.bytes))
                .collect()
        },
        seeds_are: "seed tunnel frames and sessions",
    },
    FuzzTarget {
        name: "client_session",
        check: check_client_session,
        seeds: || {
            seed_client_session()
                .into_iter()
                .map(|s| (s.name, s.bytes))
                .collect()
        },
        seeds_are: "seed node hellos and sessions for a client",
    },
    FuzzTarget {
        name: "json_tx",
        check: check_json_tx,
        seeds: seed_json_tx,
        seeds_are: "seed JSON txs and amount, country and duration texts",
    },
];

pub fn target(name: &str) -> Option<&'static FuzzTarget> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The decoder's contract on one untrusted input. Panics (a finding for
/// the fuzzer) if the decoder panics, or if it accepts bytes that are not
/// the canonical encoding of what it returned: a tx must have exactly one
/// encoding, since its id and signature are over those bytes.
pub fn check_tx_decode(data: &[u8]) {
    match SignedTx::decode(data) {
        Ok(tx) => {
            let again = tx.encode();
            assert!(
                again == data,
                "accepted a non-canonical encoding:\n input      {}\n re-encoded {}",
                hex(data),
                hex(&again)
            );
            // What a node does next with an accepted tx before checking the
            // signature must not panic on attacker-chosen field values.
            let _ = tx.id();
            let _ = tx.tx.body.kind();
            let _ = format!("{tx:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// The number of [`TxBody`] variants; [`variant_index`] maps onto `0..VARIANTS`.
pub const VARIANTS: usize = 18;

/// A dense index per variant. Deliberately an exhaustive match with no
/// wildcard: a new variant fails to compile here, and the seed test then
/// fails until the new variant has a seed.
pub fn variant_index(body: &TxBody) -> usize {
    match body {
        TxBody::Transfer { .. } => 0,
        TxBody::Stake { .. } => 1,
        TxBody::BeginUnbond { .. } => 2,
        TxBody::WithdrawUnbonded => 3,
        TxBody::RegisterNode(_) => 4,
        TxBody::UpdateNode(_) => 5,
        TxBody::DeregisterNode => 6,
        TxBody::RegisterOracle { .. } => 7,
        TxBody::DeregisterOracle => 8,
        TxBody::OpenChannel { .. } => 9,
        TxBody::SettleChannel { .. } => 10,
        TxBody::CloseChannel { .. } => 11,
        TxBody::Heartbeat { .. } => 12,
        TxBody::Report(_) => 13,
        TxBody::Swap { .. } => 14,
        TxBody::Deposit { .. } => 15,
        TxBody::WithdrawUsd { .. } => 16,
        TxBody::ClaimVested => 17,
    }
}

/// One named seed input of a target that reads raw bytes (the frame
/// decoder's, the client session's).
pub struct ByteSeed {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A named seed transaction; `valid` says whether the decoder must accept it.
pub struct Seed {
    pub name: String,
    pub tx: SignedTx,
    pub valid: bool,
}

/// Seed transactions: every variant with ordinary values, plus variants
/// with extreme values (zero and max integers, both IP families, strings
/// and collections exactly at their limits) and a few one past a limit,
/// so the fuzzer has the limit checks' both sides to mutate from.
pub fn seed_txs() -> Vec<Seed> {
    let alice = SigningKey::from_label("fuzz-alice");
    let bob = SigningKey::from_label("fuzz-bob").public();
    let node = SigningKey::from_label("fuzz-node").public();
    let chain = "tollway-fuzz";
    let channel = Hash32::of(b"fuzz channel");

    let spec = |addrs: Vec<IpAddr>, hourly: Option<u64>| NodeSpec {
        country: CountryCode(*b"DE"),
        addrs,
        port_first: 443,
        port_last: 8443,
        tls_key_pin: [0xab; 32],
        claimed_capacity_bps: 1_000_000_000,
        price_usd_micro_per_gib: 50_000,
        price_usd_micro_per_hour: hourly,
    };
    let v4 = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    let measurement = |i: u32, outcome| Measurement {
        node,
        outcome,
        uptime_ppm: i.wrapping_mul(977) % 1_000_001,
    };
    let measured = MeasurementOutcome::Measured {
        throughput_bps: 250_000_000,
        latency_us: 1_200,
    };
    let report = |n: usize| {
        TxBody::Report(MeasurementReport {
            epoch: 42,
            measurements: (0..n as u32).map(|i| measurement(i, measured)).collect(),
        })
    };
    let receipt = |chain_id: String| TxBody::SettleChannel {
        receipt: Receipt {
            chain_id,
            channel,
            cumulative_usd: Usd::units(3),
            cumulative_bytes: 1 << 30,
        }
        .sign(&alice),
    };
    let withdraw = |reference: String| TxBody::WithdrawUsd {
        amount: Usd::units(10),
        reference,
    };

    // (name, body, valid): one entry per variant first, in declaration order.
    let mut bodies: Vec<(&str, TxBody, bool)> = vec![
        (
            "transfer",
            TxBody::Transfer {
                to: bob,
                amount: Amount::Token(Token::units(5)),
            },
            true,
        ),
        (
            "stake",
            TxBody::Stake {
                amount: Token::units(1_000),
            },
            true,
        ),
        (
            "begin-unbond",
            TxBody::BeginUnbond {
                amount: Token::units(10),
            },
            true,
        ),
        ("withdraw-unbonded", TxBody::WithdrawUnbonded, true),
        (
            "register-node",
            TxBody::RegisterNode(spec(vec![v4], None)),
            true,
        ),
        (
            "update-node",
            TxBody::UpdateNode(spec(vec![v6, v4], Some(20_000))),
            true,
        ),
        ("deregister-node", TxBody::DeregisterNode, true),
        ("register-oracle", TxBody::RegisterOracle { addr: v6 }, true),
        ("deregister-oracle", TxBody::DeregisterOracle, true),
        (
            "open-channel",
            TxBody::OpenChannel {
                node,
                escrow: Usd::units(20),
                expires_at_secs: 1_800_000_000,
            },
            true,
        ),
        ("settle-channel", receipt(chain.to_string()), true),
        ("close-channel", TxBody::CloseChannel { channel }, true),
        ("heartbeat", TxBody::Heartbeat { epoch: 7 }, true),
        ("report", report(3), true),
        (
            "swap",
            TxBody::Swap {
                sell: Amount::Usd(Usd::units(2)),
                min_out: 1,
            },
            true,
        ),
        (
            "deposit",
            TxBody::Deposit {
                to: bob,
                amount: Usd::units(100),
            },
            true,
        ),
        ("withdraw-usd", withdraw("iban:DE00 1234".to_string()), true),
        ("claim-vested", TxBody::ClaimVested, true),
    ];
    bodies.extend([
        // Extremes: longest varints and every enum arm of the nested types.
        (
            "transfer-max",
            TxBody::Transfer {
                to: bob,
                amount: Amount::Usd(Usd(u128::MAX)),
            },
            true,
        ),
        (
            "swap-max",
            TxBody::Swap {
                sell: Amount::Token(Token(u128::MAX)),
                min_out: u128::MAX,
            },
            true,
        ),
        ("heartbeat-max", TxBody::Heartbeat { epoch: u64::MAX }, true),
        (
            "register-oracle-v4",
            TxBody::RegisterOracle { addr: v4 },
            true,
        ),
        (
            "report-outcomes",
            TxBody::Report(MeasurementReport {
                epoch: u64::MAX,
                measurements: vec![
                    measurement(
                        u32::MAX,
                        MeasurementOutcome::Measured {
                            throughput_bps: u64::MAX,
                            latency_us: u32::MAX,
                        },
                    ),
                    measurement(0, MeasurementOutcome::Unreachable),
                    measurement(1, MeasurementOutcome::OracleError),
                ],
            }),
            true,
        ),
        // Exactly at each limit, and one past it.
        (
            "register-node-max-addrs",
            TxBody::RegisterNode(spec(vec![v6; limits::MAX_NODE_ADDRS], Some(u64::MAX))),
            true,
        ),
        (
            "register-node-over-addrs",
            TxBody::RegisterNode(spec(vec![v4; limits::MAX_NODE_ADDRS + 1], None)),
            false,
        ),
        (
            "report-max",
            report(limits::MAX_MEASUREMENTS_PER_REPORT),
            true,
        ),
        (
            "report-over",
            report(limits::MAX_MEASUREMENTS_PER_REPORT + 1),
            false,
        ),
        (
            "settle-max-chain",
            receipt("c".repeat(limits::MAX_CHAIN_ID_BYTES)),
            true,
        ),
        (
            "settle-over-chain",
            receipt("c".repeat(limits::MAX_CHAIN_ID_BYTES + 1)),
            false,
        ),
        (
            "withdraw-max-ref",
            withdraw("r".repeat(limits::MAX_WITHDRAW_REFERENCE_BYTES)),
            true,
        ),
        // Multi-byte UTF-8, so mutations land inside a code point.
        (
            "withdraw-over-ref",
            withdraw("é".repeat(limits::MAX_WITHDRAW_REFERENCE_BYTES / 2 + 1)),
            false,
        ),
    ]);

    let mut seeds: Vec<Seed> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, (name, body, valid))| {
            let tx = Tx {
                chain_id: chain.to_string(),
                signer: alice.public(),
                nonce: i as u64,
                fee: Amount::Usd(Usd(1_000)),
                body,
            };
            Seed {
                name: name.to_string(),
                tx: tx.sign(&alice),
                valid,
            }
        })
        .collect();

    // The envelope's own limit and extremes.
    let envelope = |name: &str, chain_id: String, nonce: u64, fee: Amount, valid: bool| {
        let tx = Tx {
            chain_id,
            signer: alice.public(),
            nonce,
            fee,
            body: TxBody::ClaimVested,
        };
        Seed {
            name: name.to_string(),
            tx: tx.sign(&alice),
            valid,
        }
    };
    seeds.push(envelope(
        "envelope-empty-chain",
        String::new(),
        0,
        Amount::Token(Token::ZERO),
        true,
    ));
    seeds.push(envelope(
        "envelope-max",
        "x".repeat(limits::MAX_CHAIN_ID_BYTES),
        u64::MAX,
        Amount::Token(Token(u128::MAX)),
        true,
    ));
    seeds.push(envelope(
        "envelope-over-chain",
        "x".repeat(limits::MAX_CHAIN_ID_BYTES + 1),
        1,
        Amount::Usd(Usd(1)),
        false,
    ));
    seeds
}

/// Seed names are file names in the corpus: a repeated one would
/// overwrite another seed.
#[cfg(test)]
fn assert_unique_names<'a>(names: impl Iterator<Item = &'a str>) {
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        assert!(seen.insert(name), "seed name {name:?} is used twice: seed names are file names");
    }
}

/// Every seed of a byte target passes its check, under a name of its own.
#[cfg(test)]
fn assert_seeds_pass(seeds: &[ByteSeed], check: fn(&[u8])) {
    assert_unique_names(seeds.iter().map(|s| s.name.as_str()));
    for seed in seeds {
        check(&seed.bytes);
    }
}

/// Lower-case hex, for messages that must show exact bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollway_types::codec::DecodeError;

    #[test]
    fn seeds_cover_every_variant_and_decode_as_labelled() {
        let seeds = seed_txs();
        let mut seen = [false; VARIANTS];
        for seed in &seeds {
            let bytes = seed.tx.encode();
            assert!(
                bytes.len() <= limits::MAX_TX_BYTES,
                "{} is over the size limit",
                seed.name
            );
            let decoded = SignedTx::decode(&bytes);
            if seed.valid {
                assert_eq!(decoded.as_ref(), Ok(&seed.tx), "{}", seed.name);
                assert_eq!(seed.tx.verify(), Ok(()), "{}", seed.name);
                seen[variant_index(&seed.tx.tx.body)] = true;
            } else {
                assert!(
                    matches!(decoded, Err(DecodeError::LimitExceeded { .. })),
                    "{}: {decoded:?}",
                    seed.name
                );
            }
            check_tx_decode(&bytes);
        }
        let missing: Vec<usize> = (0..VARIANTS).filter(|&i| !seen[i]).collect();
        assert!(
            missing.is_empty(),
            "no valid seed for TxBody variant(s) {missing:?}"
        );
        assert_unique_names(seeds.iter().map(|s| s.name.as_str()));
    }

    #[test]
    fn check_accepts_garbage_that_the_decoder_refuses() {
        for input in [
            &[][..],
            &[0],
            &[1],
            &[1, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[2, 0, 0],
        ] {
            check_tx_decode(input);
        }
    }
}
