//! Which oracles measure which node this epoch (DESIGN §5): rendezvous
//! hashing keyed by the epoch seed, so nobody knows the assignment before
//! the seed exists, and a node's oracles change little when others join.
//!
//! Excluded: the node's own account, oracles in the node's /24 or /48, and,
//! while the node has an unconfirmed over-claim strike from the previous
//! epoch, the oracles that saw it, so that the confirming set is disjoint
//! (DESIGN §2 step 2) whenever there are enough oracles.

use crate::state::{NodeIdx, OracleIdx, State, SubnetKey};

/// splitmix64's finaliser: a fast, well-mixed 64-bit hash step.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn key64(bytes: &[u8; 32]) -> u64 {
    u64::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]])
}

/// The oracles assigned to node `n` in the current epoch, best score first.
pub fn assigned_oracles(state: &State, n: NodeIdx) -> Vec<OracleIdx> {
    let node = &state.nodes[n as usize];
    let k = state.params.oracles_per_node as usize;
    let epoch = state.epoch;
    let seed = key64(&state.epoch_seed.0) ^ mix64(epoch);
    let node_key = mix64(seed ^ key64(&node.operator.0));
    let node_subnets: Vec<SubnetKey> = node.spec.addrs.iter().map(SubnetKey::of).collect();
    let excluded_by_strike: &[OracleIdx] = match &node.strike {
        Some(s) if s.epoch + 1 == epoch => &s.oracles,
        _ => &[],
    };
    let eligible = |i: usize| {
        let o = &state.oracles[i];
        o.eligible(epoch) && o.account != node.account && !node_subnets.contains(&o.subnet)
    };
    let n_eligible_fresh = (0..state.oracles.len())
        .filter(|&i| eligible(i) && !excluded_by_strike.contains(&(i as OracleIdx)))
        .count();
    // Exclude the strike's oracles only if enough others remain.
    let exclude_strike = n_eligible_fresh >= k;
    let mut scored: Vec<(u64, OracleIdx)> = (0..state.oracles.len())
        .filter(|&i| eligible(i) && !(exclude_strike && excluded_by_strike.contains(&(i as OracleIdx))))
        .map(|i| (mix64(node_key ^ key64(&state.oracles[i].operator.0)), i as OracleIdx))
        .collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.truncate(k);
    scored.into_iter().map(|(_, i)| i).collect()
}
