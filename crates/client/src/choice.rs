//! Which exits to use when the user names none (DESIGN §4, node choice):
//! the market's nodes that pass the user's filter, scored by price,
//! verified throughput, reputation and latency from this client, best
//! first. Pure: the caller brings the records and the measured round trips.

use std::time::Duration;
use tollway_types::keys::AccountId;

/// A node as the choice sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub node: AccountId,
    pub price_usd_micro_per_gib: u64,
    pub verified_capacity_bps: u64,
    pub reputation_ppm: u32,
    /// A TCP connect to its port from here; `None`: it did not answer.
    pub rtt: Option<Duration>,
}

/// How much each quality counts, out of one.
const PRICE_WEIGHT: f64 = 0.3;
const THROUGHPUT_WEIGHT: f64 = 0.3;
const REPUTATION_WEIGHT: f64 = 0.2;
const LATENCY_WEIGHT: f64 = 0.2;

/// Round trips shorter than this count as this: nobody feels the
/// difference, and on one network (or loopback) tenths of a millisecond
/// would otherwise decide the latency share.
const LATENCY_FLOOR: Duration = Duration::from_millis(10);

/// Each client sees every node's score scaled by a factor of its own
/// between this and one, so nodes within this share of each other are
/// ranked differently by different clients, and one node is not
/// everyone's first pick; a node much better than the rest still is.
const SPREAD: f64 = 0.15;

/// A score in [0, 1] per candidate: each quality relative to the best of
/// the candidates (the cheapest price, the highest verified throughput,
/// the shortest round trip, from `LATENCY_FLOOR` up; reputation as it
/// is), weighted. A node that
/// did not answer scores nothing for latency.
pub fn scores(candidates: &[Candidate]) -> Vec<f64> {
    let cheapest = candidates.iter().map(|c| c.price_usd_micro_per_gib).min().unwrap_or(0);
    let fastest = candidates.iter().map(|c| c.verified_capacity_bps).max().unwrap_or(0);
    let nearest = candidates.iter().filter_map(|c| c.rtt).min();
    candidates
        .iter()
        .map(|c| {
            // A free node is the cheapest; otherwise price relative to the cheapest.
            let price = if c.price_usd_micro_per_gib == 0 { 1.0 } else { cheapest as f64 / c.price_usd_micro_per_gib as f64 };
            // No verified figures at all (a new network): nobody is behind.
            let throughput = if fastest == 0 { 1.0 } else { c.verified_capacity_bps as f64 / fastest as f64 };
            let reputation = f64::from(c.reputation_ppm.min(1_000_000)) / 1e6;
            let latency = match (c.rtt, nearest) {
                (Some(rtt), Some(nearest)) => {
                    nearest.max(LATENCY_FLOOR).as_secs_f64() / rtt.max(LATENCY_FLOOR).as_secs_f64()
                }
                _ => 0.0,
            };
            PRICE_WEIGHT * price + THROUGHPUT_WEIGHT * throughput + REPUTATION_WEIGHT * reputation + LATENCY_WEIGHT * latency
        })
        .collect()
}

/// This client's factor for `node`, in [1 − SPREAD, 1]: stable for a
/// client, unrelated between clients.
fn spread_factor(client: &AccountId, node: &AccountId) -> f64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"tollway node choice spread");
    hasher.update(&client.0);
    hasher.update(&node.0);
    let h = hasher.finalize();
    let bytes = h.as_bytes();
    let x = u64::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]]);
    1.0 - SPREAD * (x as f64 / u64::MAX as f64)
}

/// The candidates' indices, best first for `client`, with their scores
/// (before the spread).
pub fn rank(candidates: &[Candidate], client: &AccountId) -> Vec<(usize, f64)> {
    let scores = scores(candidates);
    let mut order: Vec<(usize, f64, f64)> = scores
        .iter()
        .enumerate()
        .map(|(i, &s)| (i, s, s * spread_factor(client, &candidates[i].node)))
        .collect();
    // Ties (equal spread scores) by node id, so the order is total.
    order.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| candidates[a.0].node.cmp(&candidates[b.0].node)));
    order.into_iter().map(|(i, s, _)| (i, s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> AccountId {
        tollway_types::keys::PublicKey([n; 32])
    }

    fn candidate(n: u8, price: u64, verified_bps: u64, reputation_ppm: u32, rtt_ms: Option<u64>) -> Candidate {
        Candidate {
            node: node(n),
            price_usd_micro_per_gib: price,
            verified_capacity_bps: verified_bps,
            reputation_ppm,
            rtt: rtt_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn a_node_better_in_every_way_is_everyones_first_pick() {
        let candidates = [
            candidate(1, 500_000, 50_000_000, 900_000, Some(20)),
            candidate(2, 250_000, 100_000_000, 990_000, Some(5)),
            candidate(3, 900_000, 10_000_000, 500_000, None),
        ];
        for c in 0..100u8 {
            let order: Vec<usize> = rank(&candidates, &node(100 + c)).into_iter().map(|(i, _)| i).collect();
            assert_eq!(order, [1, 0, 2], "client {c}");
        }
        let s = scores(&candidates);
        assert!((s[1] - 0.998).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn each_quality_counts() {
        let base = candidate(1, 500_000, 50_000_000, 900_000, Some(40));
        let better = [
            Candidate { price_usd_micro_per_gib: 400_000, ..base.clone() },
            Candidate { verified_capacity_bps: 60_000_000, ..base.clone() },
            Candidate { reputation_ppm: 950_000, ..base.clone() },
            Candidate { rtt: Some(Duration::from_millis(30)), ..base.clone() },
        ];
        for b in better {
            let s = scores(&[base.clone(), Candidate { node: node(2), ..b.clone() }]);
            assert!(s[1] > s[0], "{b:?}: {s:?}");
        }
        // Below the floor, round trips do not count.
        let near = candidate(1, 500_000, 50_000_000, 900_000, Some(3));
        let s = scores(&[near.clone(), Candidate { node: node(2), rtt: Some(Duration::from_micros(100)), ..near }]);
        assert_eq!(s[0], s[1]);
        // A node that did not answer loses the latency share.
        let s = scores(&[base.clone(), Candidate { node: node(2), rtt: None, ..base.clone() }]);
        assert!((s[0] - s[1] - LATENCY_WEIGHT).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn equal_nodes_are_spread_over_clients() {
        let candidates = [candidate(1, 500_000, 0, 900_000, Some(10)), candidate(2, 500_000, 0, 900_000, Some(10))];
        let first_is_1 = (0..200u8).filter(|&c| rank(&candidates, &node(c)).first().map(|r| r.0) == Some(0)).count();
        assert!((60..=140).contains(&first_is_1), "node 1 first for {first_is_1} of 200 clients");
        // And a client's own order does not change from one call to the next.
        assert_eq!(rank(&candidates, &node(7)), rank(&candidates, &node(7)));
    }
}
