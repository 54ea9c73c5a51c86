//! The protocol's token/USD constant-product pool (DESIGN §2): the price the
//! burn uses. Outputs round down and the fee stays in the pool, so the
//! product of the reserves never decreases.

use tollway_types::{math::mul_div_floor, PPM};

/// Output of selling `amount_in` into a pool holding `reserve_in` of the
/// sold currency and `reserve_out` of the bought one, after `fee_ppm`.
/// Always strictly less than `reserve_out`.
pub fn swap_output(reserve_in: u128, reserve_out: u128, amount_in: u128, fee_ppm: u32) -> u128 {
    let in_after_fee = mul_div_floor(amount_in, PPM - fee_ppm as u128, PPM);
    let denominator = reserve_in.saturating_add(in_after_fee);
    mul_div_floor(reserve_out, in_after_fee, denominator)
}

/// Sells `amount_in` into the pool: `reserve_in` grows by it and
/// `reserve_out` shrinks by the output ([`swap_output`]), which is
/// returned. Below `min_out` (and below 1 always) the reserves stay as
/// they were and the output comes back as the error.
pub fn swap_into(reserve_in: &mut u128, reserve_out: &mut u128, amount_in: u128, fee_ppm: u32, min_out: u128) -> Result<u128, u128> {
    let out = swap_output(*reserve_in, *reserve_out, amount_in, fee_ppm);
    if out < min_out.max(1) {
        return Err(out);
    }
    *reserve_in += amount_in;
    *reserve_out -= out;
    Ok(out)
}

/// USD base units per whole token, rounded down (0 for an empty pool).
pub fn price_usd_micro_per_token(token_reserve: u128, usd_reserve: u128) -> u128 {
    mul_div_floor(usd_reserve, tollway_types::UNIT, token_reserve)
}
