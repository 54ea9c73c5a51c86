//! The JSON face of the wire types (what the API speaks) next to the codec
//! face (what is signed and hashed): both round-trip, and the JSON is
//! readable: hex keys, decimal amounts, two-letter countries.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic

use tollway_types::{Amount, CountryCode, NodeSpec, SignedTx, SigningKey, Token, Tx, TxBody, Usd};

fn sample() -> SignedTx {
    let key = SigningKey::from_label("alice");
    Tx {
        chain_id: "tollway-test".into(),
        signer: key.public(),
        nonce: 7,
        fee: Amount::Usd(Usd(1_500)),
        body: TxBody::RegisterNode(NodeSpec {
            country: CountryCode::parse("de").unwrap(),
            addrs: vec!["203.0.113.9".parse().unwrap()],
            port_first: 4433,
            port_last: 4440,
            tls_key_pin: [7; 32],
            claimed_capacity_bps: 100_000_000,
            price_usd_micro_per_gib: 500_000,
            price_usd_micro_per_hour: None,
        }),
    }
    .sign(&key)
}

#[test]
fn a_signed_tx_round_trips_through_json_and_still_verifies() {
    let stx = sample();
    let json = serde_json::to_string(&stx).unwrap();
    let back: SignedTx = serde_json::from_str(&json).unwrap();
    assert_eq!(back, stx);
    assert!(back.verify().is_ok());
    assert_eq!(back.encode(), stx.encode());
    assert!(json.contains(&format!("\"signer\":\"{}\"", stx.tx.signer.to_hex())), "{json}");
    assert!(json.contains("\"fee\":\"0.0015 USD\""), "{json}");
    assert!(json.contains("\"country\":\"DE\""), "{json}");
}

#[test]
fn amounts_read_as_people_write_them() {
    assert_eq!(Amount::parse("12.5 TWY").unwrap(), Amount::Token(Token(12_500_000)));
    assert_eq!(Amount::parse("12.5twy").unwrap(), Amount::Token(Token(12_500_000)));
    assert_eq!(Amount::parse("$3").unwrap(), Amount::Usd(Usd::units(3)));
    assert_eq!(Amount::parse(" 0.000001 usd ").unwrap(), Amount::Usd(Usd(1)));
    assert_eq!(
        Amount::parse("12").unwrap_err().to_string(),
        "amount \"12\" needs a unit: TWY or USD, e.g. \"12.5 TWY\" or \"$3\""
    );
    let t: Token = serde_json::from_str("\"1.000001\"").unwrap();
    assert_eq!(t, Token(1_000_001));
    assert!(serde_json::from_str::<Token>("1").is_err(), "bare numbers are ambiguous (units or base units?)");
}

#[test]
fn bad_hex_in_json_names_what_was_expected() {
    let stx = sample();
    let json = serde_json::to_string(&stx).unwrap().replace(&stx.tx.signer.to_hex(), "abc");
    let err = serde_json::from_str::<SignedTx>(&json).unwrap_err().to_string();
    assert!(err.contains("a public key must be 64 hex digits"), "{err}");
}
