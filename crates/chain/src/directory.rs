//! The node list that `/v1/nodes` filters and orders, copied from the state
//! at most once per block, and only when asked for.
//!
//! A request used to filter every node record under the core's lock, which
//! the block producer needs too: at 100,000 nodes a few milliseconds each,
//! so a client asking in a loop held the producer off. Now the copy is the
//! one pass under the lock; filtering and ordering run outside it, and a
//! request locks again only to read the records of its page.

use std::cmp::Ordering;
use tollway_ledger::state::{Node, NodeIdx};
use tollway_ledger::State;
use tollway_types::{AccountId, CountryCode, MacroRegion};

/// What a node is filtered and ordered by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeRow {
    pub idx: NodeIdx,
    pub active: bool,
    pub region: MacroRegion,
    pub country: CountryCode,
    pub price_usd_micro_per_gib: u64,
    pub verified_capacity_bps: u64,
    pub reputation_ppm: u32,
    pub operator: AccountId,
}

impl NodeRow {
    pub fn of(idx: NodeIdx, n: &Node) -> NodeRow {
        NodeRow {
            idx,
            active: n.active,
            region: n.region,
            country: n.spec.country,
            price_usd_micro_per_gib: n.spec.price_usd_micro_per_gib,
            verified_capacity_bps: n.verified_capacity_bps,
            reputation_ppm: n.reputation_ppm,
            operator: n.operator,
        }
    }

    /// Best first: verified capacity, then reputation, then price, then id
    /// (a total order, so a page is the same whichever way it was found).
    pub fn best_first(a: &NodeRow, b: &NodeRow) -> Ordering {
        b.verified_capacity_bps
            .cmp(&a.verified_capacity_bps)
            .then(b.reputation_ppm.cmp(&a.reputation_ppm))
            .then(a.price_usd_micro_per_gib.cmp(&b.price_usd_micro_per_gib))
            .then(a.operator.cmp(&b.operator))
    }
}

/// Every node as of one block, best first.
#[derive(Debug)]
pub struct NodeDirectory {
    /// The height of the block the rows were copied after.
    pub height: u64,
    pub best_first: Vec<NodeRow>,
}

impl NodeDirectory {
    /// The rows of every node: the part that runs under the core's lock.
    pub fn rows(state: &State) -> Vec<NodeRow> {
        state.nodes.iter().zip(0..).map(|(n, idx)| NodeRow::of(idx, n)).collect()
    }

    /// Orders `rows` (copied after block `height`), outside the lock.
    pub fn sorted(height: u64, mut rows: Vec<NodeRow>) -> NodeDirectory {
        rows.sort_unstable_by(NodeRow::best_first);
        NodeDirectory { height, best_first: rows }
    }
}

/// What `/v1/nodes` asks for; `None` matches anything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeQuery {
    pub active_only: bool,
    pub region: Option<MacroRegion>,
    pub country: Option<CountryCode>,
    pub max_price_usd_micro_per_gib: Option<u64>,
    pub min_verified_capacity_bps: Option<u64>,
    pub min_reputation_ppm: Option<u64>,
}

impl NodeQuery {
    pub fn matches(&self, r: &NodeRow) -> bool {
        (!self.active_only || r.active)
            && self.region.is_none_or(|g| r.region == g)
            && self.country.is_none_or(|c| r.country == c)
            && self.max_price_usd_micro_per_gib.is_none_or(|p| r.price_usd_micro_per_gib <= p)
            && self.min_verified_capacity_bps.is_none_or(|c| r.verified_capacity_bps >= c)
            && self.min_reputation_ppm.is_none_or(|m| r.reputation_ppm as u64 >= m)
    }

    /// The best `limit` matches of `directory`, by index.
    pub fn page(&self, directory: &NodeDirectory, limit: usize) -> Vec<NodeIdx> {
        directory.best_first.iter().filter(|r| self.matches(r)).take(limit).map(|r| r.idx).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollway_ledger::testkit::{fund, World};
    use tollway_ledger::Params;

    /// The directory's page is what filtering and sorting every node
    /// record gives (the code before it), for each filter.
    #[test]
    fn a_page_is_the_best_matches_of_every_node() {
        let labels: Vec<String> = (0..40).map(|i| format!("n{i}")).collect();
        let mut w = World::new(Params::default_params(), 1_000, 1_000, labels.iter().map(|l| fund(l, 10, 0, 2_000)).collect());
        let countries = ["DE", "FR", "NG", "US"];
        for (i, l) in labels.iter().enumerate() {
            let mut spec = tollway_ledger::testkit::node_spec(countries[i % 4], &format!("203.0.{i}.1"), 1_000_000 * (1 + i as u64 % 5));
            spec.price_usd_micro_per_gib = 1_000 * (1 + i as u64 % 3);
            w.must(l, tollway_types::TxBody::RegisterNode(spec));
        }
        for (i, n) in w.state.nodes.iter_mut().enumerate() {
            n.verified_capacity_bps = 1_000_000 * (i as u64 % 7);
            n.reputation_ppm = 100_000 * (i as u32 % 4);
            n.active = i % 9 != 0;
        }
        let directory = NodeDirectory::sorted(1, NodeDirectory::rows(&w.state));
        let queries = [
            NodeQuery::default(),
            NodeQuery { active_only: true, ..NodeQuery::default() },
            NodeQuery { country: Some(CountryCode::parse("FR").unwrap_or_else(|e| panic!("{e}"))), ..NodeQuery::default() },
            NodeQuery { region: Some(MacroRegion::Europe), max_price_usd_micro_per_gib: Some(2_000), ..NodeQuery::default() },
            NodeQuery { min_verified_capacity_bps: Some(3_000_000), min_reputation_ppm: Some(200_000), ..NodeQuery::default() },
        ];
        for q in queries {
            for limit in [1, 5, 100] {
                let mut every: Vec<NodeRow> = NodeDirectory::rows(&w.state).into_iter().filter(|r| q.matches(r)).collect();
                every.sort_by(NodeRow::best_first);
                let expected: Vec<NodeIdx> = every.iter().take(limit).map(|r| r.idx).collect();
                assert_eq!(q.page(&directory, limit), expected, "{q:?} limit {limit}");
            }
        }
    }
}
