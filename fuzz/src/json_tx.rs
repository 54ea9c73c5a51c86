//! The `json_tx` target: untrusted text into the JSON face of the wire
//! types (`serde_hr.rs`): a transaction as the chain API's
//! `POST /v1/txs` takes it in `{"tx": …}`, and the text parsers under
//! it and beside it (amounts, country codes, the parameters' durations),
//! which wallets, scenario and parameter files share.

use crate::hex;
use tollway_ledger::params::{format_duration, parse_duration_secs};
use tollway_types::codec::DecodeError;
use tollway_types::{Amount, CountryCode, SignedTx, Token, Usd};

/// The JSON face's contract on one untrusted input. Panics (a finding
/// for the fuzzer) if a parser panics, or if:
///
/// * a transaction read from JSON encodes to bytes the binary decoder
///   refuses for anything but a size limit (the API would answer a
///   well-formed submission with "not a Tollway transaction"), or decodes
///   to another transaction;
/// * the JSON written for a transaction read from JSON does not read back
///   as that transaction;
/// * an amount, a country code or a duration that parses does not parse
///   back the same from what it prints as.
pub fn check_json_tx(data: &[u8]) {
    if let Ok(tx) = serde_json::from_slice::<SignedTx>(data) {
        let bytes = tx.encode();
        match SignedTx::decode(&bytes) {
            Ok(back) => assert!(back == tx, "the codec gave another tx back: {tx:?} → {back:?}"),
            Err(DecodeError::LimitExceeded { .. } | DecodeError::TooLarge { .. }) => {}
            Err(e) => panic!("a tx read from JSON encodes to bytes the decoder refuses ({e}): {}", hex(&bytes)),
        }
        let _ = tx.id();
        match serde_json::to_vec(&tx) {
            Ok(json) => {
                let again = serde_json::from_slice::<SignedTx>(&json);
                assert!(
                    matches!(&again, Ok(t) if *t == tx),
                    "the JSON written for {tx:?} reads back as {again:?}"
                );
            }
            Err(e) => panic!("a tx read from JSON cannot be written as JSON: {e}"),
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(a) = Amount::parse(text) {
        let shown = a.to_string();
        assert_eq!(Amount::parse(&shown), Ok(a), "{text:?} parsed, printed as {shown:?}");
    }
    for (parsed, shown) in [
        Token::parse_decimal(text).map(|t| (t.0, t.to_string())),
        Usd::parse_decimal(text).map(|u| (u.0, u.to_string())),
    ]
    .into_iter()
    .flatten()
    {
        let back = Amount::parse(&shown).map(|a| match a {
            Amount::Token(t) => t.0,
            Amount::Usd(u) => u.0,
        });
        assert_eq!(back, Ok(parsed), "{text:?} parsed, printed as {shown:?}");
    }
    if let Ok(c) = CountryCode::parse(text) {
        assert!(c.macro_region().is_some());
        assert_eq!(CountryCode::parse(c.as_str()), Ok(c), "{text:?}");
    }
    if let Ok(secs) = parse_duration_secs(text) {
        let shown = format_duration(secs);
        assert_eq!(parse_duration_secs(&shown), Ok(secs), "{text:?} printed as {shown:?}");
    }
}

/// The chain API's largest JSON submission body (`api.rs`'s
/// `MAX_JSON_BODY_BYTES`): a tx's JSON beyond it never reaches the parser.
pub const API_BODY_BYTES: usize = 8 * tollway_types::tx::limits::MAX_TX_BYTES;

/// Seed inputs: every seed transaction whose JSON the API takes, and
/// texts for the small parsers.
pub fn seed_json_tx() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = crate::seed_txs()
        .into_iter()
        .filter_map(|s| Some((format!("tx-{}", s.name), serde_json::to_vec(&s.tx).ok()?)))
        .filter(|(_, json)| json.len() <= API_BODY_BYTES)
        .collect();
    for (name, text) in [
        ("amount-twy", "12.5 TWY"),
        ("amount-usd", "$0.000001"),
        ("amount-usd-unit", " 3usd "),
        ("amount-max", "340282366920938463463374607431768.211455 TWY"),
        ("country", "de"),
        ("duration-days", "7d"),
        ("duration-years", "2y"),
        ("duration-max", "18446744073709551615"),
    ] {
        seeds.push((name.into(), text.as_bytes().to_vec()));
    }
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_pass_the_check_and_every_seed_tx_reads_from_its_json() {
        let seeds = seed_json_tx();
        crate::assert_unique_names(seeds.iter().map(|(n, _)| n.as_str()));
        // Every one, the two reports of 1,024 measurements too.
        assert_eq!(
            seeds.iter().filter(|(n, _)| n.starts_with("tx-")).count(),
            crate::seed_txs().len(),
            "a seed tx that cannot be written as JSON"
        );
        for (name, bytes) in &seeds {
            if name.starts_with("tx-") {
                assert!(serde_json::from_slice::<SignedTx>(bytes).is_ok(), "{name}");
            }
            check_json_tx(bytes);
        }
    }
}
