//! Money. The native token and the USD stable unit are distinct types so
//! they cannot be mixed by accident (DESIGN §2, ADR 0001). Both are `u128`
//! counts of base units with 6 decimals.

use core::fmt;
use serde::{Deserialize, Serialize};

/// Base units per whole unit: both currencies have 6 decimals.
pub const UNIT: u128 = 1_000_000;

/// Parts per million: the scale of every rate in the ledger.
pub const PPM: u128 = 1_000_000;

macro_rules! amount_type {
    ($name:ident, $symbol_before:expr, $symbol_after:expr, $doc:expr) => {
        #[doc = $doc]
        #[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u128);

        // Base units for the codec; a decimal string ("12.5") for JSON and
        // TOML (see `serde_hr`).
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(&DecimalFmt(self.0))
                } else {
                    s.serialize_newtype_struct(stringify!($name), &self.0)
                }
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                if d.is_human_readable() {
                    let text = String::deserialize(d)?;
                    $name::parse_decimal(&text).map_err(serde::de::Error::custom)
                } else {
                    #[derive(Deserialize)]
                    struct Raw(u128);
                    Raw::deserialize(d).map(|r| $name(r.0))
                }
            }
        }

        impl $name {
            pub const ZERO: $name = $name(0);

            /// `n` whole units.
            pub const fn units(n: u128) -> $name {
                $name(n * UNIT)
            }
            pub const fn base(self) -> u128 {
                self.0
            }
            pub fn checked_add(self, other: $name) -> Option<$name> {
                self.0.checked_add(other.0).map($name)
            }
            pub fn checked_sub(self, other: $name) -> Option<$name> {
                self.0.checked_sub(other.0).map($name)
            }
            pub fn saturating_sub(self, other: $name) -> $name {
                $name(self.0.saturating_sub(other.0))
            }
            pub fn min(self, other: $name) -> $name {
                $name(self.0.min(other.0))
            }
            pub fn is_zero(self) -> bool {
                self.0 == 0
            }
            /// `self × ppm / 1e6`, rounded down (toward the protocol).
            pub fn mul_ppm_floor(self, ppm: u32) -> $name {
                $name(crate::math::mul_div_floor(self.0, ppm as u128, PPM))
            }
            /// Parses a decimal such as `12`, `0.5` or `1.000001`. At most 6
            /// decimals; anything else is an error, never a silent rounding.
            pub fn parse_decimal(s: &str) -> Result<$name, ParseAmountError> {
                parse_decimal(s).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}{}", $symbol_before, DecimalFmt(self.0), $symbol_after)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl core::iter::Sum for $name {
            /// Panics on overflow: a sum of money that overflows u128 is a
            /// broken invariant, not an input error.
            fn sum<I: Iterator<Item = $name>>(iter: I) -> $name {
                let mut total: u128 = 0;
                for x in iter {
                    total = total.checked_add(x.0).unwrap_or_else(|| panic!("amount sum overflow"));
                }
                $name(total)
            }
        }
    };
}

amount_type!(Token, "", " TWY", "An amount of the native token (TWY), in base units (1e-6 TWY).");
amount_type!(Usd, "$", "", "An amount of the USD stable unit, in base units (1e-6 USD).");

/// Either currency, for fees and transfers that accept both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    Token(Token),
    Usd(Usd),
}

/// The codec's layout of [`Amount`]: a variant index, then base units.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Amount")]
enum AmountRepr {
    Token(Token),
    Usd(Usd),
}

impl Amount {
    /// `"12.5 TWY"`, `"12.5TWY"`, `"3 USD"` or `"$3"` (units in either case).
    pub fn parse(s: &str) -> Result<Amount, ParseAmountError> {
        let t = s.trim();
        if let Some(rest) = t.strip_prefix('$') {
            return Usd::parse_decimal(rest).map(Amount::Usd);
        }
        // The number as typed, not upper-cased: errors quote it.
        if let Some(n) = strip_unit(t, "TWY") {
            return Token::parse_decimal(n).map(Amount::Token);
        }
        if let Some(n) = strip_unit(t, "USD") {
            return Usd::parse_decimal(n).map(Amount::Usd);
        }
        Err(ParseAmountError::NoUnit(s.to_string()))
    }
}

/// `s` without a trailing `unit` in any case.
fn strip_unit<'a>(s: &'a str, unit: &str) -> Option<&'a str> {
    let split = s.len().checked_sub(unit.len())?;
    let (number, tail) = (s.get(..split)?, s.get(split..)?);
    tail.eq_ignore_ascii_case(unit).then_some(number)
}

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            match self {
                Amount::Token(t) => s.collect_str(&format_args!("{} TWY", DecimalFmt(t.0))),
                Amount::Usd(u) => s.collect_str(&format_args!("{} USD", DecimalFmt(u.0))),
            }
        } else {
            match *self {
                Amount::Token(t) => AmountRepr::Token(t),
                Amount::Usd(u) => AmountRepr::Usd(u),
            }
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            Amount::parse(&text).map_err(serde::de::Error::custom)
        } else {
            Ok(match AmountRepr::deserialize(d)? {
                AmountRepr::Token(t) => Amount::Token(t),
                AmountRepr::Usd(u) => Amount::Usd(u),
            })
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Token(t) => t.fmt(f),
            Amount::Usd(u) => u.fmt(f),
        }
    }
}

struct DecimalFmt(u128);

impl fmt::Display for DecimalFmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / UNIT;
        let frac = self.0 % UNIT;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{frac:06}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseAmountError {
    #[error("amount {0:?} is not a decimal number such as 12 or 0.5")]
    NotANumber(String),
    #[error("amount {0:?} has more than 6 decimals")]
    TooPrecise(String),
    #[error("amount {0:?} is too large")]
    TooLarge(String),
    #[error("amount {0:?} needs a unit: TWY or USD, e.g. \"12.5 TWY\" or \"$3\"")]
    NoUnit(String),
}

fn parse_decimal(s: &str) -> Result<u128, ParseAmountError> {
    let s = s.trim();
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    let all_digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && frac.is_empty() || !all_digits(whole) || !all_digits(frac) {
        return Err(ParseAmountError::NotANumber(s.to_string()));
    }
    if frac.len() > 6 {
        return Err(ParseAmountError::TooPrecise(s.to_string()));
    }
    let too_large = || ParseAmountError::TooLarge(s.to_string());
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| too_large())? };
    let mut frac_units: u128 = 0;
    for (i, b) in frac.bytes().enumerate() {
        frac_units += (b - b'0') as u128 * 10u128.pow(5 - i as u32);
    }
    whole.checked_mul(UNIT).and_then(|w| w.checked_add(frac_units)).ok_or_else(too_large)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let cases = ["0", "1", "0.5", "1.000001", "123456.78"];
        for c in cases {
            let t = Token::parse_decimal(c).unwrap();
            assert_eq!(t.to_string(), format!("{c} TWY"));
        }
        assert_eq!(Usd::parse_decimal("2.25").unwrap().to_string(), "$2.25");
    }

    /// "1e3 TWY" was refused as amount "1E3": the error quoted an
    /// upper-cased copy, not what was typed.
    #[test]
    fn an_amount_with_a_unit_is_quoted_as_typed_when_refused() {
        expect_test::expect![[r#"
            [
                "amount \"1e3\" is not a decimal number such as 12 or 0.5",
                "amount \"nan\" is not a decimal number such as 12 or 0.5",
                "amount \"0x10\" is not a decimal number such as 12 or 0.5",
                "amount \"1.0000001\" has more than 6 decimals",
                "amount \"é\" needs a unit: TWY or USD, e.g. \"12.5 TWY\" or \"$3\"",
            ]
        "#]]
        .assert_debug_eq(
            &["1e3 TWY", "nan twy", "0x10 usd", "1.0000001 Usd", "é"]
                .iter()
                .map(|s| Amount::parse(s).unwrap_err().to_string())
                .collect::<Vec<_>>(),
        );
        assert_eq!(Amount::parse("12.5 tWy"), Ok(Amount::Token(Token(12_500_000))));
        assert_eq!(Amount::parse("3usd"), Ok(Amount::Usd(Usd::units(3))));
    }

    #[test]
    fn parse_rejects_bad_input() {
        expect_test::expect![[r#"
            [
                "amount \"\" is not a decimal number such as 12 or 0.5",
                "amount \"1.2.3\" is not a decimal number such as 12 or 0.5",
                "amount \"-1\" is not a decimal number such as 12 or 0.5",
                "amount \"0.0000001\" has more than 6 decimals",
                "amount \"999999999999999999999999999999999999999\" is too large",
            ]
        "#]]
        .assert_debug_eq(
            &["", "1.2.3", "-1", "0.0000001", "999999999999999999999999999999999999999"]
                .iter()
                .map(|s| Token::parse_decimal(s).unwrap_err().to_string())
                .collect::<Vec<_>>(),
        );
    }
}
