//! Numbers for people: "$1.24", "$12.3k", "4.5M TWY", "97.3%", "12,345".
//! ASCII only (a hyphen-minus for negatives), so every string renders in
//! any font, the embedded one included.

/// `x` with at most `sig` significant digits, trailing zeros trimmed
/// ("0.25", "12.5", "1200").
pub fn significant(x: f64, sig: u32) -> String {
    if !x.is_finite() {
        return "n/a".to_string();
    }
    if x == 0.0 {
        return "0".to_string();
    }
    let magnitude = libm::log10(x.abs()).floor() as i32;
    let decimals = (sig as i32 - 1 - magnitude).clamp(0, 12) as usize;
    trim_zeros(format!("{x:.decimals$}"))
}

fn trim_zeros(s: String) -> String {
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    if s == "-0" {
        "0".to_string()
    } else {
        s
    }
}

/// A compact number with a k/M/B/T suffix: axis ticks and large amounts.
pub fn compact(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".to_string();
    }
    let a = x.abs();
    let (div, suffix) = if a >= 1e12 {
        (1e12, "T")
    } else if a >= 1e9 {
        (1e9, "B")
    } else if a >= 1e6 {
        (1e6, "M")
    } else if a >= 1e4 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    if a > 0.0 && a < 1e-4 {
        return scientific(x);
    }
    let digits = if div == 1.0 && a >= 1000.0 { 4 } else { 3 };
    let body = significant(x / div, digits);
    if div == 1.0 && a >= 1000.0 {
        with_thousands(&body)
    } else {
        body + suffix
    }
}

/// "1.5e-7": three significant digits for tiny values.
fn scientific(x: f64) -> String {
    let s = format!("{x:.2e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => format!("{}e{exp}", trim_zeros(mantissa.to_string())),
        None => s,
    }
}

/// "$1.24", "$0.0042", "$12.3k", "-$4.5M".
pub fn usd(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".to_string();
    }
    let sign = if x < 0.0 { "-" } else { "" };
    let a = x.abs();
    let body = if a == 0.0 {
        "0".to_string()
    } else if a >= 1e4 {
        compact(a)
    } else if a >= 100.0 {
        with_thousands(&format!("{a:.0}"))
    } else if a >= 1.0 {
        format!("{a:.2}")
    } else {
        if a < 1e-4 {
            scientific(a)
        } else {
            significant(a, 3)
        }
    };
    format!("{sign}${body}")
}

/// "4.5M TWY".
pub fn tokens(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".to_string();
    }
    format!("{} TWY", compact(x))
}

/// A share 0..1 as a percentage: "97.3%", "100%", "0.05%".
pub fn percent(share: f64) -> String {
    if !share.is_finite() {
        return "n/a".to_string();
    }
    let p = share * 100.0;
    let body = if p.abs() >= 10.0 || p == 0.0 { trim_zeros(format!("{p:.1}")) } else { significant(p, 2) };
    format!("{body}%")
}

/// Tokens, compact: "200M TWY".
pub fn twy(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".to_string();
    }
    format!("{} TWY", compact(x))
}

/// A count, rounded, with thousands separators: "12,345".
pub fn count(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".to_string();
    }
    with_thousands(&format!("{:.0}", x.round()))
}

/// Inserts commas into the integer part of a plain decimal string.
fn with_thousands(s: &str) -> String {
    let (sign, rest) = s.strip_prefix('-').map_or(("", s), |r| ("-", r));
    let (int, frac) = rest.split_once('.').map_or((rest, None), |(i, f)| (i, Some(f)));
    let mut out = String::with_capacity(s.len() + int.len() / 3);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    let mut res = format!("{sign}{out}");
    if let Some(f) = frac {
        res.push('.');
        res.push_str(f);
    }
    if res == "-0" {
        "0".to_string()
    } else {
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        let cases = [
            (usd(1.2345), "$1.23"),
            (usd(0.004213), "$0.00421"),
            (usd(12_345.0), "$12.3k"),
            (usd(-4_560_000.0), "-$4.56M"),
            (usd(1234.4), "$1,234"),
            (usd(0.0), "$0"),
            (compact(250_000.0), "250k"),
            (compact(1_500_000.0), "1.5M"),
            (compact(2500.0), "2,500"),
            (compact(0.025), "0.025"),
            (compact(-0.0), "0"),
            (compact(1.5e-7), "1.5e-7"),
            (usd(3.0e-9), "$3e-9"),
            (tokens(3.2e9), "3.2B TWY"),
            (percent(0.973), "97.3%"),
            (percent(1.0), "100%"),
            (percent(0.0005), "0.05%"),
            (count(12_345.4), "12,345"),
            (count(-1234.0), "-1,234"),
            (significant(f64::NAN, 3), "n/a"),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
