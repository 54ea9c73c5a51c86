//! Exact integer arithmetic for money: `a × b / c` without overflow, with a
//! documented rounding direction (ADR 0001: payouts floor).

/// `floor(a × b / c)` computed with a 256-bit intermediate, so it never
/// overflows while the quotient fits in u128. Returns `u128::MAX` if the
/// quotient does not fit, and 0 when `c == 0` (callers never divide by a
/// zero total: they check first; the saturation keeps decoders panic-free).
#[inline]
pub fn mul_div_floor(a: u128, b: u128, c: u128) -> u128 {
    if c == 0 {
        return 0;
    }
    // Common case: everything fits in 64 bits, so the product fits in 128;
    // and when the product fits in 64 bits too (most amounts and rates
    // do), one hardware 64-bit division, not a call to the soft 128-bit
    // one (the ledger's epoch passes call this per node and per payment).
    if (a | b) >> 64 == 0 && c >> 64 == 0 {
        let p = a * b;
        if p >> 64 == 0 {
            return (p as u64 / c as u64) as u128;
        }
        return p / c;
    }
    if let Some(p) = a.checked_mul(b) {
        return p / c;
    }
    let (hi, lo) = mul_wide(a, b);
    if hi >= c {
        return u128::MAX;
    }
    div_wide(hi, lo, c)
}

/// 128 × 128 → 256 bits as (high, low).
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    const MASK: u128 = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & MASK);
    let (b1, b0) = (b >> 64, b & MASK);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 64) + (p01 & MASK) + (p10 & MASK);
    let lo = (p00 & MASK) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (hi, lo)
}

/// (hi:lo) / c for hi < c, by shift-subtract long division. Slow but rare:
/// only products beyond 2^128 reach it.
fn div_wide(mut hi: u128, lo: u128, c: u128) -> u128 {
    let mut q: u128 = 0;
    for i in (0..128).rev() {
        let carry = hi >> 127;
        hi = (hi << 1) | ((lo >> i) & 1);
        q <<= 1;
        if carry == 1 || hi >= c {
            hi = hi.wrapping_sub(c);
            q |= 1;
        }
    }
    q
}

/// Integer square root (floor), for the AMM's geometric checks.
pub fn isqrt(n: u128) -> u128 {
    if n < 2 {
        return n;
    }
    let mut x = (n as f64).sqrt() as u128;
    // Correct the float estimate exactly.
    while x.checked_mul(x).is_none_or(|sq| sq > n) {
        x -= 1;
    }
    while (x + 1).checked_mul(x + 1).is_some_and(|sq| sq <= n) {
        x += 1;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn mul_div_matches_small_products(a in any::<u64>(), b in any::<u64>(), c in 1..u64::MAX) {
            let exact = (a as u128) * (b as u128) / (c as u128);
            prop_assert_eq!(mul_div_floor(a as u128, b as u128, c as u128), exact);
        }

        /// Products within 64 bits take the hardware 64-bit division.
        #[test]
        fn mul_div_matches_products_within_64_bits(a in any::<u32>(), b in any::<u32>(), c in 1..u64::MAX) {
            let exact = (a as u128) * (b as u128) / (c as u128);
            prop_assert_eq!(mul_div_floor(a as u128, b as u128, c as u128), exact);
        }

        #[test]
        fn mul_div_wide_is_floor(a in any::<u128>(), b in any::<u128>(), c in 1..u128::MAX) {
            let q = mul_div_floor(a, b, c);
            let (hi, _) = mul_wide(a, b);
            if hi < c {
                // q×c ≤ a×b < (q+1)×c, checked in 256 bits.
                let (qh, ql) = mul_wide(q, c);
                let (ph, pl) = mul_wide(a, b);
                prop_assert!((qh, ql) <= (ph, pl));
                let (q1h, q1l) = mul_wide(q + 1, c);
                prop_assert!((q1h, q1l) > (ph, pl));
            }
        }

        #[test]
        fn isqrt_is_floor(n in any::<u128>()) {
            let r = isqrt(n);
            prop_assert!(r * r <= n);
            prop_assert!((r + 1).checked_mul(r + 1).is_none_or(|s| s > n));
        }
    }
}
