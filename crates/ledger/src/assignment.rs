//! Which oracles measure which node this epoch (DESIGN §5): rendezvous
//! hashing keyed by the epoch seed, so nobody knows the assignment before
//! the seed exists, and a node's oracles change little when others join.
//!
//! Excluded: the node's own account, oracles in the /24 or /48 of the
//! node's first address (the one it is measured at, and its subnet for the
//! /24 cap), and, while the node has an unconfirmed over-claim strike from
//! its last measurement, the oracles that saw it, so that the confirming
//! set is disjoint (DESIGN §2 step 2) whenever there are enough oracles.
//!
//! Only the first address: a node's other addresses are its own word, and
//! when each excluded the oracles of its subnet, a node that had seen the
//! epoch's seed could list addresses in the /24s of up to seven honest
//! oracles ranked above a colluding one (an `UpdateNode` costs a fee) and
//! so pick who measures it.

use crate::params::MAX_ORACLES_PER_NODE;
use crate::state::{AccountIdx, Node, NodeIdx, OracleIdx, State, SubnetKey};

/// splitmix64's finaliser: a fast, well-mixed 64-bit hash step.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 32-bit hash step with low bias (Wellons' "lowbias32"), a bijection:
/// in 32-bit lanes, so the scores of many oracles are computed together.
fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// A node's or an oracle's key for this epoch: its account key mixed with
/// the epoch seed, 32 bits. Drawn afresh each epoch, so nobody can pick an
/// account whose key collides with another's (which would give the two the
/// same score for every node) or favours some nodes.
fn epoch_key(seed: u64, account_key: u64) -> u32 {
    (mix64(seed ^ account_key) >> 32) as u32
}

/// An oracle's rendezvous score for a node, from their epoch keys. Oracles
/// rank by (score, oracle index), highest first; 32 bits leave ties rare
/// (about n²/2³³ for n oracles) and the index breaks them. A score and an
/// index fit together in one `u64` whose integer order is the ranking,
/// which is what makes the fast path cheap.
fn score(node_key: u32, oracle_key: u32) -> u32 {
    mix32(node_key ^ oracle_key)
}

fn key64(bytes: &[u8; 32]) -> u64 {
    u64::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]])
}

/// A node's assigned oracles, best rendezvous score first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    oracles: [OracleIdx; MAX_ORACLES_PER_NODE],
    len: usize,
}

impl Assignment {
    // `#[inline]`: the simulator reads it per node, from another crate.
    #[inline]
    pub fn as_slice(&self) -> &[OracleIdx] {
        &self.oracles[..self.len]
    }
    pub fn contains(&self, o: OracleIdx) -> bool {
        self.as_slice().contains(&o)
    }
    /// The oracles in every slot, `empty` after the last: a fixed-size
    /// copy, where copying `as_slice` (a few bytes of varying length) was a
    /// call to `memcpy` per node in the simulator's assignment pass.
    #[inline]
    pub fn padded(&self, empty: OracleIdx) -> [OracleIdx; MAX_ORACLES_PER_NODE] {
        std::array::from_fn(|j| if j < self.len { self.oracles[j] } else { empty })
    }
}

/// A node as the common case of the assignment sees it
/// ([`Assigner::node_key`]).
#[derive(Clone, Copy, Debug)]
struct NodeKey {
    /// Its epoch key.
    key: u32,
    account: AccountIdx,
    group: u32,
    /// No strike from the previous epoch.
    common: bool,
}

struct EligibleOracle {
    idx: OracleIdx,
    account: AccountIdx,
    subnet: u64,
    /// The subnet group (`State::subnet_index`) of the oracle's subnet, or
    /// `u32::MAX` when no node has ever registered in it.
    subnet_group: u32,
}

/// The epoch's eligible oracles, gathered once so that assigning many nodes
/// (the simulator, a chain's report checks) costs one pass over the oracles
/// per node with no allocation.
///
/// The oracles' keys sit in a vector of their own, in oracle index order:
/// the scoring loop reads only them and compares one `u64` per oracle.
pub struct Assigner {
    /// The epoch it assigns (the state's when it was made).
    epoch: u64,
    seed: u64,
    k: usize,
    /// Epoch keys (`epoch_key`).
    keys: Vec<u32>,
    oracles: Vec<EligibleOracle>,
    /// Per eligible oracle, in the order of `keys`: its account and subnet
    /// group, packed as `account << 32 | subnet_group`, for the fast path's
    /// check of its winners.
    account_group: Vec<u64>,
}

impl Assigner {
    pub fn new(state: &State) -> Assigner {
        let epoch = state.epoch;
        let seed = key64(&state.epoch_seed.0) ^ mix64(epoch);
        let mut keys = Vec::new();
        let mut oracles = Vec::new();
        for (i, o) in state.oracles.iter().enumerate().filter(|(_, o)| o.eligible(epoch)) {
            keys.push(epoch_key(seed, key64(&o.operator.0)));
            oracles.push(EligibleOracle {
                idx: i as OracleIdx,
                account: o.account,
                subnet: o.subnet.as_u64(),
                subnet_group: state.subnet_index.get(&o.subnet).copied().unwrap_or(u32::MAX),
            });
        }
        let account_group = oracles.iter().map(|o| (o.account as u64) << 32 | o.subnet_group as u64).collect();
        Assigner {
            epoch,
            seed,
            k: (state.params.oracles_per_node as usize).min(MAX_ORACLES_PER_NODE),
            keys,
            oracles,
            account_group,
        }
    }

    /// The common case of [`Assigner::assign`], the same result: a node
    /// with no strike from the previous epoch, so an oracle
    /// is eligible exactly when its account and its subnet group differ
    /// from the node's.
    ///
    /// Each oracle becomes one `u64`, its score above its position in
    /// `keys` plus one: all distinct, and ordered as the ranking is, since
    /// positions follow oracle indices. The top `K` are kept by `K` max/min
    /// steps per oracle, with no branch on a score (a branchy top-k
    /// mispredicted about once per new leader) and short dependency chains.
    /// Eligibility is checked only for the winners: if all `K` are
    /// eligible they are also the top `K` of the eligible (removing
    /// losers changes no winner). Otherwise (the node's own oracle or one
    /// in its subnet made the cut, which is rare) `None`: the general
    /// path decides.
    ///
    /// Ranking eight nodes at once, one per vector lane, was tried: slower
    /// on the baseline x86-64 target (SSE2 has no 32-bit vector multiply,
    /// unsigned compare or blend), 1.6× faster only with x86-64-v2, which
    /// did not speed the simulator as a whole.
    fn assign_fast<const K: usize>(&self, node_key: u32, node_account: AccountIdx, node_group: u32) -> Option<Assignment> {
        let mut best = [0u64; K];
        // Scores a chunk at a time into a buffer first: that loop has no
        // dependency between oracles, and runs in vector lanes.
        const CHUNK: usize = 64;
        let mut scores = [0u32; CHUNK];
        for (c, keys) in self.keys.chunks(CHUNK).enumerate() {
            let scores = &mut scores[..keys.len()];
            for (s, &key) in scores.iter_mut().zip(keys) {
                *s = score(node_key, key);
            }
            for (j, &s) in scores.iter().enumerate() {
                let mut v = (s as u64) << 32 | ((c * CHUNK + j) as u64 + 1);
                for slot in best.iter_mut() {
                    let held = *slot;
                    *slot = held.max(v);
                    v = held.min(v);
                }
            }
        }
        let mine = (node_account as u64) << 32 | node_group as u64;
        let mut out = Assignment { oracles: [0; MAX_ORACLES_PER_NODE], len: 0 };
        // Zeros (fewer than K oracles) sort last.
        for &v in best.iter().take_while(|&&v| v != 0) {
            let pos = (v as u32 - 1) as usize;
            let theirs = self.account_group[pos];
            if theirs >> 32 == mine >> 32 || theirs as u32 == mine as u32 {
                return None;
            }
            out.oracles[out.len] = self.oracles[pos].idx;
            out.len += 1;
        }
        Some(out)
    }

    /// What the common case of [`Assigner::assign`] reads of node `n`,
    /// copied out (`nodes` as for [`Assigner::assign_in`]).
    fn node_key(&self, nodes: &[Node], n: NodeIdx) -> NodeKey {
        let node = &nodes[n as usize];
        let struck_now = node.strike.as_ref().is_some_and(|s| s.epoch < self.epoch && !s.oracles.is_empty());
        NodeKey {
            key: epoch_key(self.seed, key64(&node.operator.0)),
            account: node.account,
            group: node.subnet_group,
            common: !struck_now,
        }
    }

    /// The node's assignment when the common case decides it (no strike,
    /// neither its own oracle nor one of its subnet among the winners);
    /// `None` when only [`Assigner::assign`], which reads the node's
    /// strike, can.
    fn assign_common(&self, node: &NodeKey) -> Option<Assignment> {
        if self.k == 0 {
            return Some(Assignment { oracles: [0; MAX_ORACLES_PER_NODE], len: 0 });
        }
        if !node.common {
            return None;
        }
        let (key, a, g) = (node.key, node.account, node.group);
        match self.k {
            1 => self.assign_fast::<1>(key, a, g),
            2 => self.assign_fast::<2>(key, a, g),
            3 => self.assign_fast::<3>(key, a, g),
            4 => self.assign_fast::<4>(key, a, g),
            5 => self.assign_fast::<5>(key, a, g),
            6 => self.assign_fast::<6>(key, a, g),
            _ => self.assign_fast::<MAX_ORACLES_PER_NODE>(key, a, g),
        }
    }

    /// The oracles assigned to node `n` in the state's current epoch.
    pub fn assign(&self, state: &State, n: NodeIdx) -> Assignment {
        debug_assert_eq!(state.epoch, self.epoch, "an assigner assigns the epoch it was made for");
        self.assign_in(&state.nodes, n)
    }

    /// [`Assigner::assign`] from the node records alone (`State::nodes`, or
    /// the ones `State::payment_parts` lends, in the epoch the assigner was
    /// made for): the simulator assigns on other threads while it pays.
    pub fn assign_in(&self, nodes: &[Node], n: NodeIdx) -> Assignment {
        let key = self.node_key(nodes, n);
        if let Some(out) = self.assign_common(&key) {
            return out;
        }
        let mut out = Assignment { oracles: [0; MAX_ORACLES_PER_NODE], len: 0 };
        let node = &nodes[n as usize];
        let node_key = key.key;
        // The node's subnet is its subnet group's (`Node::subnet_group`, of
        // its first address).
        let in_node_subnet = |o: &EligibleOracle| {
            debug_assert_eq!(
                o.subnet_group == node.subnet_group,
                o.subnet == SubnetKey::of(&node.spec.addrs[0]).as_u64(),
                "subnet_group must be the group of the node's first address"
            );
            o.subnet_group == node.subnet_group
        };
        let struck: &[OracleIdx] = match &node.strike {
            Some(s) if s.epoch < self.epoch => &s.oracles,
            _ => &[],
        };
        let eligible = |o: &EligibleOracle| o.account != node.account && !in_node_subnet(o);
        // Exclude the strike's oracles only if enough others remain.
        let exclude_struck = !struck.is_empty()
            && self.oracles.iter().filter(|o| eligible(o) && !struck.contains(&o.idx)).count() >= self.k;
        // The top k by (score, oracle index), best first. Oracles come in
        // increasing index order, so a newcomer beats a held entry exactly
        // when its score is at least as high: scores alone decide, and
        // `threshold` (the k-th best score once k are held, else 0) rejects
        // most oracles on one comparison, before the eligibility checks.
        let mut best_score = [0u32; MAX_ORACLES_PER_NODE];
        let best_idx = &mut out.oracles;
        let mut len = 0usize;
        let mut threshold = 0u32;
        for (j, &key) in self.keys.iter().enumerate() {
            let score = score(node_key, key);
            if score < threshold {
                continue;
            }
            let o = &self.oracles[j];
            if !eligible(o) || (exclude_struck && struck.contains(&o.idx)) {
                continue;
            }
            // Its place: after the held entries that score strictly higher.
            let pos = best_score[..len].iter().filter(|&&s| s > score).count();
            if len < self.k {
                len += 1;
            }
            let mut i = len - 1;
            while i > pos {
                best_score[i] = best_score[i - 1];
                best_idx[i] = best_idx[i - 1];
                i -= 1;
            }
            best_score[pos] = score;
            best_idx[pos] = o.idx;
            if len == self.k {
                threshold = best_score[len - 1];
            }
        }
        out.len = len;
        out
    }
}

/// The oracles assigned to node `n` in the current epoch, best score first.
pub fn assigned_oracles(state: &State, n: NodeIdx) -> Vec<OracleIdx> {
    Assigner::new(state).assign(state, n).as_slice().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{fund, World};
    use crate::Params;
    use std::net::IpAddr;

    #[test]
    fn assignment_is_top_k_excludes_own_subnet_and_changes_with_the_seed() {
        let mut accounts: Vec<_> = (0..10).map(|i| fund(&format!("o{i}"), 1, 0, 5_000)).collect();
        accounts.push(fund("n", 1, 0, 2_000));
        let mut w = World::new(Params::default_params(), 1, 1, accounts);
        for i in 0..9 {
            w.register_oracle(&format!("o{i}"), &format!("198.51.{i}.1"));
        }
        // o9 shares the node's /24: never assigned to it.
        w.register_oracle("o9", "203.0.113.200");
        w.register_node("n", "DE", "203.0.113.10", 1_000_000);
        w.end_epoch();
        let node = w.state.node_index[&crate::testkit::id("n")];
        let o9 = w.state.oracle_index[&crate::testkit::id("o9")];
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let a = assigned_oracles(&w.state, node);
            assert_eq!(a.len(), 3);
            assert!(!a.contains(&o9));
            // Brute force: the three best scores among the eligible.
            let seed = key64(&w.state.epoch_seed.0) ^ mix64(w.state.epoch);
            let node_key = epoch_key(seed, key64(&crate::testkit::id("n").0));
            let mut all: Vec<(u32, u32)> = (0..9u32)
                .map(|o| (score(node_key, epoch_key(seed, key64(&w.state.oracles[o as usize].operator.0))), o))
                .collect();
            all.sort_unstable_by(|a, b| b.cmp(a));
            assert_eq!(a, all[..3].iter().map(|x| x.1).collect::<Vec<_>>());
            seen.insert(a);
            w.end_epoch();
        }
        assert!(seen.len() > 5, "the assignment should change with the epoch seed");
    }

    /// The rule written the slow, obvious way: the eligible oracles sorted
    /// by (score, index), highest first, the first k.
    fn reference(state: &State, n: NodeIdx) -> Vec<OracleIdx> {
        let node = &state.nodes[n as usize];
        let seed = key64(&state.epoch_seed.0) ^ mix64(state.epoch);
        let node_key = epoch_key(seed, key64(&node.operator.0));
        let k = state.params.oracles_per_node as usize;
        let subnet = SubnetKey::of(&node.spec.addrs[0]);
        let eligible =
            |o: &crate::state::Oracle| o.eligible(state.epoch) && o.account != node.account && o.subnet != subnet;
        let struck: Vec<OracleIdx> = match &node.strike {
            Some(s) if s.epoch < state.epoch => s.oracles.clone(),
            _ => Vec::new(),
        };
        let others =
            state.oracles.iter().enumerate().filter(|(i, o)| eligible(o) && !struck.contains(&(*i as OracleIdx))).count();
        let mut all: Vec<(u32, OracleIdx)> = state
            .oracles
            .iter()
            .enumerate()
            .filter(|(i, o)| eligible(o) && (others < k || !struck.contains(&(*i as OracleIdx))))
            .map(|(i, o)| (score(node_key, epoch_key(seed, key64(&o.operator.0))), i as OracleIdx))
            .collect();
        all.sort_unstable_by(|a, b| b.cmp(a));
        all.into_iter().take(k).map(|x| x.1).collect()
    }

    #[test]
    fn fast_and_general_paths_match_the_reference_for_every_k_and_exclusion() {
        let mut accounts: Vec<_> = (0..12).map(|i| fund(&format!("o{i}"), 1, 0, 5_000)).collect();
        for label in ["a", "b", "c", "d"] {
            accounts.push(fund(label, 1, 0, 8_000));
        }
        let mut w = World::new(Params::default_params(), 1, 1, accounts);
        for i in 0..11 {
            w.register_oracle(&format!("o{i}"), &format!("198.51.{i}.1"));
        }
        w.register_oracle("o11", "203.0.113.200"); // a's /24
        w.register_oracle("b", "198.51.77.1"); // b is its own oracle
        w.register_node("a", "DE", "203.0.113.10", 1_000_000);
        w.register_node("b", "US", "192.0.2.10", 1_000_000);
        w.register_node("c", "JP", "192.0.3.10", 1_000_000); // struck below
        w.register_node("d", "BR", "192.0.4.10", 1_000_000); // two addresses below
        let c = w.state.node_index[&crate::testkit::id("c")];
        let d = w.state.node_index[&crate::testkit::id("d")];
        w.state.nodes[d as usize].spec.addrs.push("198.51.3.9".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])));
        for _ in 0..25 {
            w.end_epoch();
            let epoch = w.state.epoch;
            w.state.nodes[c as usize].strike = Some(Box::new(crate::state::Strike {
                epoch: epoch - 1,
                oracles: vec![0, 1, 2, 3, 4],
                vouching: vec![],
                judged_claim_bps: 1_000_000,
                measured_capacity_bps: 0,
            }));
            for k in 1..=MAX_ORACLES_PER_NODE as u32 {
                w.state.params.oracles_per_node = k;
                for n in 0..w.state.nodes.len() as NodeIdx {
                    assert_eq!(assigned_oracles(&w.state, n), reference(&w.state, n), "node {n}, k {k}, epoch {epoch}");
                }
            }
            w.state.params.oracles_per_node = 3;
        }
        // Fewer eligible oracles than k: all of them, best first.
        let mut accounts: Vec<_> = (0..2).map(|i| fund(&format!("o{i}"), 1, 0, 5_000)).collect();
        accounts.push(fund("n", 1, 0, 2_000));
        let mut w = World::new(Params::default_params(), 1, 1, accounts);
        w.register_oracle("o0", "198.51.0.1");
        w.register_oracle("o1", "198.51.1.1");
        w.register_node("n", "DE", "203.0.113.10", 1_000_000);
        w.end_epoch();
        w.state.params.oracles_per_node = 5;
        assert_eq!(assigned_oracles(&w.state, 0).len(), 2);
        assert_eq!(assigned_oracles(&w.state, 0), reference(&w.state, 0));
    }

    /// A node's other addresses are its own word: listing addresses in the
    /// /24s of the oracles it would rather not meet changes nothing, while
    /// an oracle in the subnet of its first address stays excluded.
    #[test]
    fn only_the_first_address_excludes_oracles_of_its_subnet() {
        let mut accounts: Vec<_> = (0..12).map(|i| fund(&format!("o{i}"), 1, 0, 5_000)).collect();
        accounts.push(fund("n", 1, 0, 8_000));
        let mut w = World::new(Params::default_params(), 1, 1, accounts);
        for i in 0..12 {
            w.register_oracle(&format!("o{i}"), &format!("198.51.{i}.1"));
        }
        w.register_node("n", "DE", "198.51.11.200", 1_000_000); // o11's /24
        let n = w.state.node_index[&crate::testkit::id("n")];
        let o11 = 11;
        for _ in 0..20 {
            w.end_epoch();
            let honest = assigned_oracles(&w.state, n);
            assert!(!honest.contains(&o11), "o11 shares the node's measured /24");
            // The node lists the /24s of the oracles it was given.
            let spec = w.state.nodes[n as usize].spec.clone();
            let mut shopping = spec.clone();
            for &o in &honest {
                shopping.addrs.push(w.state.oracles[o as usize].addr);
            }
            w.state.nodes[n as usize].spec = shopping;
            assert_eq!(assigned_oracles(&w.state, n), honest, "epoch {}", w.state.epoch);
            assert_eq!(assigned_oracles(&w.state, n), reference(&w.state, n));
            w.state.nodes[n as usize].spec = spec;
        }
    }

    /// Equal scores (here: equal keys) rank by oracle index, later first,
    /// in the fast path as in the rule; it never returns an ineligible
    /// oracle.
    #[test]
    fn the_fast_path_breaks_score_ties_by_index_and_skips_the_ineligible() {
        // More than one chunk of the fast path's score buffer, with ties.
        let keys: Vec<u32> = (0..150).map(|j| [7u32, 9, 7, 7, 9, 1, 7, 3][j % 8] + (j / 100) as u32).collect();
        let n = keys.len() as u32;
        let oracles: Vec<EligibleOracle> = (0..n)
            .map(|j| EligibleOracle { idx: 10 + 2 * j, account: j % 3, subnet: 0, subnet_group: 100 + j % 4 })
            .collect();
        let account_group = oracles.iter().map(|o| (o.account as u64) << 32 | o.subnet_group as u64).collect();
        let a = Assigner { epoch: 0, seed: 0, k: 3, keys, oracles, account_group };
        let mut answered = 0;
        for node_key in [0u32, 5, 1 << 30, u32::MAX] {
            for (account, group) in [(0u32, 100u32), (1, 103), (2, 999), (7, 101), (7, 999)] {
                let mut all: Vec<(u32, OracleIdx)> = a
                    .oracles
                    .iter()
                    .zip(&a.keys)
                    .filter(|(o, _)| o.account != account && o.subnet_group != group)
                    .map(|(o, &key)| (score(node_key, key), o.idx))
                    .collect();
                all.sort_unstable_by(|x, y| y.cmp(x));
                // The fast path gives the answer or declines, never another.
                let want: Vec<OracleIdx> = all.iter().take(3).map(|x| x.1).collect();
                if let Some(got) = a.assign_fast::<3>(node_key, account, group) {
                    assert_eq!(got.as_slice(), &want[..]);
                    answered += 1;
                }
                let want: Vec<OracleIdx> = all.iter().take(7).map(|x| x.1).collect();
                if let Some(got) = a.assign_fast::<7>(node_key, account, group) {
                    assert_eq!(got.as_slice(), &want[..]);
                }
            }
        }
        assert!(answered >= 4, "the fast path answers at least when nobody is excluded");
    }
}
