//! The ledger's state. Per-node and per-account data sit in dense vectors
//! addressed by index (ADR 0004): `end_epoch` walks them in order, which is
//! what makes 100,000 nodes an epoch cheap. Ids map to indices through
//! ordered maps, so nothing depends on hash order.

use crate::params::{Params, MAX_ORACLES_PER_NODE};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use tollway_types::ip::embedded_ipv4;
use tollway_types::{AccountId, ChannelId, Hash32, MacroRegion, NodeSpec, Token, Usd};

pub type AccountIdx = u32;
pub type NodeIdx = u32;
pub type OracleIdx = u32;

/// Where a tx or an epoch runs: block height and block time. The ledger
/// reads time only from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ctx {
    pub height: u64,
    pub time_secs: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unbonding {
    pub amount: Token,
    pub release_at_secs: u64,
}

/// Rewards that vest linearly over `params.vesting_secs` from `start_secs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tranche {
    pub start_secs: u64,
    pub amount: Token,
    pub released: Token,
}

/// A tranche whose amounts fit in 64 bits, as `Tranches` stores it: 24
/// bytes where a `Tranche` takes 48 (u128 fields align to 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NarrowTranche {
    pub(crate) start_secs: u64,
    pub(crate) amount: u64,
    pub(crate) released: u64,
}

impl NarrowTranche {
    fn wide(&self) -> Tranche {
        Tranche { start_secs: self.start_secs, amount: Token(self.amount as u128), released: Token(self.released as u128) }
    }
}

/// A tranche whose start and amounts fit in 32 bits (a start before 2106,
/// amounts below 4,294 tokens: a day's reward of one node or oracle in a
/// large network): 12 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SmallTranche {
    pub(crate) start_secs: u32,
    pub(crate) amount: u32,
    pub(crate) released: u32,
}

impl SmallTranche {
    fn wide(&self) -> Tranche {
        Tranche {
            start_secs: self.start_secs as u64,
            amount: Token(self.amount as u128),
            released: Token(self.released as u128),
        }
    }
    fn narrow(&self) -> NarrowTranche {
        NarrowTranche { start_secs: self.start_secs as u64, amount: self.amount as u64, released: self.released as u64 }
    }
}

/// Small tranches an account holds inline; more move the account to the
/// next tier, on the heap. Sized for daily rewards over the default week of
/// vesting, which keep at most 7 (`economics::vesting`: a tranche per
/// reward further apart than a thirtieth of the period, and the oldest
/// leaves once vested), with one to spare: the simulator's daily epochs.
/// A chain's hourly rewards keep up to 31 and move to the heap within
/// hours; a 30-day vesting too. Every pass over the accounts streams
/// through the records, so the inline room is paid for by all of them: at
/// 32 slots an account was 544 bytes, at 12 it was 304 (the simulator's
/// run of 100,000 nodes took 7-11 % less time in three alternated pairs),
/// at 8 it is 256.
pub const INLINE_TRANCHES: usize = 8;

/// Up to `INLINE_TRANCHES` small tranches inside the account record, oldest
/// first. Every reward touches the newest tranche and a new one pops the
/// oldest: inline, that is the account's own memory, next to the balances
/// the same passes touch, instead of a heap buffer reached through a
/// pointer (a dependent cache miss per account per epoch). The slots are a
/// ring from `head`, so that popping the oldest moves nothing (shifting
/// the list down was a 360-byte move per account a day).
#[derive(Clone, Copy, Debug)]
pub(crate) struct InlineTranches {
    head: u8,
    len: u8,
    items: [SmallTranche; INLINE_TRANCHES],
}

impl InlineTranches {
    const EMPTY: InlineTranches = InlineTranches {
        head: 0,
        len: 0,
        items: [SmallTranche { start_secs: 0, amount: 0, released: 0 }; INLINE_TRANCHES],
    };

    /// The slot of the `i`-th tranche, oldest first.
    fn slot(&self, i: usize) -> usize {
        (self.head as usize + i) % INLINE_TRANCHES
    }
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }
    pub(crate) fn is_full(&self) -> bool {
        self.len() == INLINE_TRANCHES
    }
    /// The tranches, oldest first, in two parts: from `head` to the end of
    /// the slots, then from the first slot on.
    pub(crate) fn halves(&self) -> (&[SmallTranche], &[SmallTranche]) {
        let (head, end) = (self.head as usize, self.head as usize + self.len());
        if end <= INLINE_TRANCHES {
            (&self.items[head..end], &[])
        } else {
            (&self.items[head..], &self.items[..end - INLINE_TRANCHES])
        }
    }
    pub(crate) fn halves_mut(&mut self) -> (&mut [SmallTranche], &mut [SmallTranche]) {
        let (head, end) = (self.head as usize, self.head as usize + self.len());
        let (before, from_head) = self.items.split_at_mut(head);
        if end <= INLINE_TRANCHES {
            (&mut from_head[..end - head], &mut [])
        } else {
            (from_head, &mut before[..end - INLINE_TRANCHES])
        }
    }
    pub(crate) fn iter(&self) -> std::iter::Chain<std::slice::Iter<'_, SmallTranche>, std::slice::Iter<'_, SmallTranche>> {
        let (a, b) = self.halves();
        a.iter().chain(b)
    }
    /// The newest tranche.
    pub(crate) fn back(&self) -> Option<&SmallTranche> {
        self.len().checked_sub(1).map(|i| &self.items[self.slot(i)])
    }
    /// Appends; the caller moves a full list to the next tier first.
    pub(crate) fn push_back(&mut self, t: SmallTranche) {
        assert!(!self.is_full(), "inline tranches full: the account should have moved up a tier");
        let slot = self.slot(self.len());
        self.items[slot] = t;
        self.len += 1;
    }
    pub(crate) fn pop_front(&mut self) {
        if self.len > 0 {
            self.head = self.slot(1) as u8;
            self.len -= 1;
        }
    }
    /// Keeps the tranches `keep` says, in order. Those dropped from the
    /// front only move `head`; the rest close up behind it.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&SmallTranche) -> bool) {
        while self.len > 0 && !keep(&self.items[self.head as usize]) {
            self.pop_front();
        }
        if self.len == 0 {
            return;
        }
        let mut kept = 1; // the front, just kept
        for i in 1..self.len() {
            let from = self.slot(i);
            if keep(&self.items[from]) {
                if kept != i {
                    self.items[self.slot(kept)] = self.items[from];
                }
                kept += 1;
            }
        }
        self.len = kept as u8;
    }
}

/// The storage tiers of `Tranches`, smallest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TrancheTier {
    Small,
    Narrow,
    Wide,
}

impl TrancheTier {
    /// The smallest tier that holds a tranche starting at `start_secs`
    /// whose amount (and so released part) is at most `amount`.
    pub(crate) fn holding(start_secs: u64, amount: u128) -> TrancheTier {
        if start_secs <= u32::MAX as u64 && amount <= u32::MAX as u128 {
            TrancheTier::Small
        } else if amount <= u64::MAX as u128 {
            TrancheTier::Narrow
        } else {
            TrancheTier::Wide
        }
    }
}

/// An account's vesting tranches, oldest first. Stored in the smallest
/// tier that holds every tranche (12 bytes while starts and amounts fit in
/// 32 bits, inline while there are at most `INLINE_TRANCHES`; 24 while
/// amounts fit in 64, else full `Tranche`s: rewards come
/// from the emission, which would need a cap above 18 trillion tokens to
/// pass 64 bits), and moved up for good the first time one would not fit.
/// The storage is not part of the state: equality, the encoding and so
/// the state root see the same sequence of `Tranche`s in every tier. Fewer
/// bytes make every pass over an account's tranches (a release, the
/// debug builds' supply check) cheaper.
// The inline tier is large on purpose: it is the common case, and keeping
// it in the account saves a pointer chase per reward.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub(crate) enum Tranches {
    Small(InlineTranches),
    Narrow(std::collections::VecDeque<NarrowTranche>),
    Wide(std::collections::VecDeque<Tranche>),
}

impl Tranches {
    pub(crate) fn new() -> Tranches {
        Tranches::Small(InlineTranches::EMPTY)
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Tranches::Small(d) => d.len(),
            Tranches::Narrow(d) => d.len(),
            Tranches::Wide(d) => d.len(),
        }
    }

    pub(crate) fn tier(&self) -> TrancheTier {
        match self {
            Tranches::Small(_) => TrancheTier::Small,
            Tranches::Narrow(_) => TrancheTier::Narrow,
            Tranches::Wide(_) => TrancheTier::Wide,
        }
    }

    /// The tranches, oldest first, as `Tranche` values.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Tranche> + '_ {
        let (small, narrow, wide) = match self {
            Tranches::Small(d) => (Some(d.iter().map(SmallTranche::wide)), None, None),
            Tranches::Narrow(d) => (None, Some(d.iter().map(NarrowTranche::wide)), None),
            Tranches::Wide(d) => (None, None, Some(d.iter().cloned())),
        };
        small.into_iter().flatten().chain(narrow.into_iter().flatten()).chain(wide.into_iter().flatten())
    }

    /// The unreleased rewards, summed over the tranches themselves.
    pub(crate) fn unreleased_sum(&self) -> u128 {
        match self {
            // At most 2^32 tranches of under 2^32 each: the sum fits in u64.
            Tranches::Small(d) => d.iter().map(|t| (t.amount - t.released) as u64).sum::<u64>() as u128,
            Tranches::Narrow(d) => d.iter().map(|t| (t.amount - t.released) as u128).sum(),
            Tranches::Wide(d) => d.iter().map(|t| t.amount.0 - t.released.0).sum(),
        }
    }

    /// Moves to storage tier `tier` if it is above the current one (same
    /// tranches).
    pub(crate) fn widen_to(&mut self, tier: TrancheTier) {
        if tier <= self.tier() {
            return;
        }
        *self = match (&*self, tier) {
            (Tranches::Small(d), TrancheTier::Narrow) => Tranches::Narrow(d.iter().map(SmallTranche::narrow).collect()),
            _ => Tranches::Wide(self.iter().collect()),
        };
    }

    /// Switches to the wide storage (same tranches).
    #[cfg(test)]
    pub(crate) fn widen(&mut self) {
        self.widen_to(TrancheTier::Wide);
    }

    fn from_wide(tranches: std::collections::VecDeque<Tranche>) -> Tranches {
        let tier =
            tranches.iter().map(|t| TrancheTier::holding(t.start_secs, t.amount.0.max(t.released.0))).max();
        let mut tier = tier.unwrap_or(TrancheTier::Small);
        if tier == TrancheTier::Small && tranches.len() > INLINE_TRANCHES {
            tier = TrancheTier::Narrow;
        }
        match tier {
            TrancheTier::Small => {
                let mut inline = InlineTranches::EMPTY;
                for t in &tranches {
                    inline.push_back(SmallTranche {
                        start_secs: t.start_secs as u32,
                        amount: t.amount.0 as u32,
                        released: t.released.0 as u32,
                    });
                }
                Tranches::Small(inline)
            }
            TrancheTier::Narrow => Tranches::Narrow(
                tranches
                    .iter()
                    .map(|t| NarrowTranche { start_secs: t.start_secs, amount: t.amount.0 as u64, released: t.released.0 as u64 })
                    .collect(),
            ),
            TrancheTier::Wide => Tranches::Wide(tranches),
        }
    }
}

impl PartialEq for Tranches {
    fn eq(&self, other: &Tranches) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Tranches {}

/// Encoded as the sequence of `Tranche`s, exactly as a `VecDeque<Tranche>`
/// is, whatever the storage.
impl Serialize for Tranches {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for t in self.iter() {
            seq.serialize_element(&t)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Tranches {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Tranches, D::Error> {
        std::collections::VecDeque::<Tranche>::deserialize(deserializer).map(Tranches::from_wide)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub token: Token,
    pub usd: Usd,
    /// The nonce the next tx from this account must carry.
    pub nonce: u64,
    pub staked: Token,
    pub unbonding: Vec<Unbonding>,
    /// Oldest first; a deque because the oldest tranche leaves as a new
    /// one arrives (daily epochs). Changed only by `economics::vesting`,
    /// which keeps `vesting_unreleased` equal to its unreleased sum.
    pub(crate) vesting: Tranches,
    /// The unreleased rewards over all tranches, stored for queries,
    /// slashes and the supply check; `vesting_cache_is_consistent` proves
    /// it in the property tests (and in the supply check of debug builds).
    pub(crate) vesting_unreleased: Token,
    pub node: Option<NodeIdx>,
    pub oracle: Option<OracleIdx>,
    pub open_channels: u32,
}

impl Account {
    pub fn new(id: AccountId) -> Account {
        Account {
            id,
            token: Token::ZERO,
            usd: Usd::ZERO,
            nonce: 0,
            staked: Token::ZERO,
            unbonding: Vec::new(),
            vesting: Tranches::new(),
            vesting_unreleased: Token::ZERO,
            node: None,
            oracle: None,
            open_channels: 0,
        }
    }

    pub fn unbonding_total(&self) -> Token {
        self.unbonding.iter().map(|u| u.amount).sum()
    }

    /// Rewards not yet released to the balance (vested or not).
    pub fn vesting_total(&self) -> Token {
        self.vesting_unreleased
    }

    /// The vesting tranches, oldest first (by value: they are stored in a
    /// compact form).
    pub fn tranches(&self) -> impl Iterator<Item = Tranche> + '_ {
        self.vesting.iter()
    }

    /// Rewards not yet released, summed over the tranches themselves (what
    /// the supply check counts), not read from the stored total.
    pub fn vesting_in_tranches(&self) -> Token {
        Token(self.vesting.unreleased_sum())
    }

    /// Whether the stored unreleased total equals the tranches' sum.
    pub fn vesting_cache_is_consistent(&self) -> bool {
        self.vesting.unreleased_sum() == self.vesting_unreleased.0
    }
}

/// One oracle's report on one node this epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportSlot {
    pub oracle: OracleIdx,
    pub outcome: tollway_types::MeasurementOutcome,
    pub uptime_ppm: u32,
}

/// A node whose ρ exceeded the slash threshold, awaiting confirmation by a
/// disjoint oracle set at the node's next measurement. Epochs in which the
/// node was not measured (unreachable, too few reports) leave it pending:
/// "two consecutive epochs" counts measurements, so going dark for the
/// confirming epoch does not reset a liar's count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Strike {
    pub epoch: u64,
    pub oracles: Vec<OracleIdx>,
    /// Of `oracles`, those that reported more than ρ's slash threshold times
    /// the median: they vouched for the claim the others found false, and
    /// lose stake if a disjoint set confirms the over-claim.
    pub vouching: Vec<OracleIdx>,
    /// What the strike was given for: the claim that epoch was judged
    /// against (`NodeEpoch::judged_claim_bps`) and the oracles' median.
    /// Kept because the claim the node's next measurement is judged
    /// against changes as the operator updates it (ADR 0014), so the
    /// record's claim cannot say what struck it. Read by no rule.
    pub judged_claim_bps: u64,
    pub measured_capacity_bps: u64,
}

impl ReportSlot {
    const EMPTY: ReportSlot =
        ReportSlot { oracle: 0, outcome: tollway_types::MeasurementOutcome::OracleError, uptime_ppm: 0 };
}

/// Reports a node's epoch record holds inline: the default
/// `oracles_per_node`. A node assigned more (up to `MAX_ORACLES_PER_NODE`)
/// moves its reports to the heap at its fourth, and keeps that room.
pub(crate) const INLINE_REPORTS: usize = 3;

/// Where a node's reports are: inline, or on the heap once more came.
#[derive(Clone, Debug)]
enum ReportSlots {
    Inline([ReportSlot; INLINE_REPORTS]),
    Heap(Box<[ReportSlot; MAX_ORACLES_PER_NODE]>),
}

/// A node's reports this epoch, stored inline (no heap allocation per
/// node: `end_epoch` reads them for every node, ADR 0004) while there are
/// at most `INLINE_REPORTS`. Every epoch record streams through the passes
/// over all nodes (the simulator's reports and payments, `end_epoch`), so
/// room for seven reports made each record 240 bytes where three make it
/// 144. The storage is not part of the state: equality and the encoding
/// see the reports, encoded as before as seven slots (unused ones `EMPTY`,
/// so the encoding is canonical) and a count.
#[derive(Clone, Debug)]
pub struct Reports {
    slots: ReportSlots,
    len: u8,
}

impl Default for Reports {
    fn default() -> Reports {
        Reports { slots: ReportSlots::Inline([ReportSlot::EMPTY; INLINE_REPORTS]), len: 0 }
    }
}

impl PartialEq for Reports {
    fn eq(&self, other: &Reports) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Reports {}

/// The encoding of `Reports`: every slot, as when all seven were inline.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Reports")]
struct ReportsWire {
    slots: [ReportSlot; MAX_ORACLES_PER_NODE],
    len: u8,
}

impl Serialize for Reports {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut slots = [ReportSlot::EMPTY; MAX_ORACLES_PER_NODE];
        slots[..self.len()].copy_from_slice(self.as_slice());
        ReportsWire { slots, len: self.len }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Reports {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Reports, D::Error> {
        let wire = ReportsWire::deserialize(deserializer)?;
        let len = wire.len as usize;
        // Canonical only: a count within the slots and nothing after it
        // (a longer count made every later read of the reports panic).
        if len > MAX_ORACLES_PER_NODE || wire.slots[len..].iter().any(|s| *s != ReportSlot::EMPTY) {
            return Err(serde::de::Error::custom("reports: a count past the slots, or a used slot after it"));
        }
        let mut out = Reports::default();
        for slot in &wire.slots[..len] {
            out.push(*slot);
        }
        Ok(out)
    }
}

// `#[inline]`: the simulator records reports from another crate, per
// report, through these.
impl Reports {
    #[inline]
    pub fn as_slice(&self) -> &[ReportSlot] {
        let all: &[ReportSlot] = match &self.slots {
            ReportSlots::Inline(slots) => slots,
            ReportSlots::Heap(slots) => &slots[..],
        };
        &all[..self.len as usize]
    }
    /// Every slot of the storage, used or not.
    #[inline]
    fn storage_mut(&mut self) -> &mut [ReportSlot] {
        match &mut self.slots {
            ReportSlots::Inline(slots) => slots,
            ReportSlots::Heap(slots) => &mut slots[..],
        }
    }
    #[inline]
    pub fn iter(&self) -> std::slice::Iter<'_, ReportSlot> {
        self.as_slice().iter()
    }
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len as usize == MAX_ORACLES_PER_NODE
    }
    /// Adds a report; false (and no change) when full.
    #[inline]
    pub fn push(&mut self, slot: ReportSlot) -> bool {
        if self.is_full() {
            return false;
        }
        let len = self.len as usize;
        if let ReportSlots::Inline(inline) = &self.slots {
            if len == INLINE_REPORTS {
                let mut all = Box::new([ReportSlot::EMPTY; MAX_ORACLES_PER_NODE]);
                all[..INLINE_REPORTS].copy_from_slice(inline);
                self.slots = ReportSlots::Heap(all);
            }
        }
        self.storage_mut()[len] = slot;
        self.len += 1;
        true
    }
    /// Back to empty: the used slots return to `EMPTY` (the others are).
    #[inline]
    pub fn clear(&mut self) {
        let len = self.len as usize;
        self.storage_mut()[..len].fill(ReportSlot::EMPTY);
        self.len = 0;
    }
}

impl<'a> IntoIterator for &'a Reports {
    type Item = &'a ReportSlot;
    type IntoIter = std::slice::Iter<'a, ReportSlot>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Per-epoch accumulators of a node, reset by `end_epoch`. Kept apart
/// from `Node` (in `State::node_epochs`): reports and payments write them
/// for every node every epoch, and a dense vector of just these is what
/// those writes and `end_epoch`'s pass stream through, rather than a line
/// or two in each large node record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEpoch {
    pub reports: Reports,
    pub heartbeat: bool,
    /// USD settled on this node's channels (both to the node and to burn).
    pub settled_usd: Usd,
    /// The part of `settled_usd` routed to the burn.
    pub burn_usd: Usd,
    /// The highest claim the node held this epoch before its current one
    /// (0: none other): the epoch is judged against the higher of the two
    /// (ADR 0014), so a claim lowered once the oracles have measured does
    /// not escape the strike.
    pub claim_held_bps: u64,
    /// Its region or /24 (/48) changed this epoch: it earns no uptime
    /// reward for it (ADR 0014), as the oracles may have measured it
    /// elsewhere.
    pub moved: bool,
    /// The subnet group (`Node::subnet_group`) it first left this epoch,
    /// by deregistering or by moving its first address to another /24
    /// (/48): it still counts among that group's nodes for the epoch
    /// (ADR 0010), so that a farm cannot shrink its group's divisor by
    /// taking its unluckily measured identities out before the end.
    pub group_left: Option<u32>,
}

impl NodeEpoch {
    /// Back to `NodeEpoch::default()`, writing only what an epoch used
    /// (`end_epoch` does this for every node).
    pub fn reset(&mut self) {
        self.reports.clear();
        self.heartbeat = false;
        self.settled_usd = Usd::ZERO;
        self.burn_usd = Usd::ZERO;
        self.claim_held_bps = 0;
        self.moved = false;
        self.group_left = None;
    }

    /// The claim this epoch is judged against: the higher of the spec's
    /// and any it held earlier in the epoch.
    pub fn judged_claim_bps(&self, spec_claim_bps: u64) -> u64 {
        spec_claim_bps.max(self.claim_held_bps)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub account: AccountIdx,
    pub operator: AccountId,
    pub spec: NodeSpec,
    pub region: MacroRegion,
    pub subnet_group: u32,
    pub active: bool,
    pub registered_epoch: u64,
    /// Latest stake-weighted median throughput; 0 until measured.
    pub verified_capacity_bps: u64,
    /// The epoch of that measurement, the node's last by a quorum of
    /// oracles; `None` until the first (a new node's capacity is 0). An
    /// epoch without a quorum keeps the uptime only while it is at most
    /// `Params::measurement_max_age_secs` old (ADR 0016).
    pub measured_epoch: Option<u64>,
    pub latency_us: u32,
    /// The uptime credited for the last epoch: the oracles' median, or
    /// the heartbeat's full uptime when too few reported; 0 in an epoch
    /// without a quorum once `measured_epoch` is too old, or while it is
    /// `None` (a node not yet measured: it earns nothing either way).
    pub uptime_ppm: u32,
    pub reputation_ppm: u32,
    /// Boxed: few nodes hold a strike, and inline it made every node
    /// record 48 bytes longer (288 bytes), for the passes over all of them.
    pub strike: Option<Box<Strike>>,
    pub last_reward: Token,
    pub total_rewards: Token,
    pub total_slashed: Token,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Oracle {
    pub account: AccountIdx,
    pub operator: AccountId,
    pub addr: IpAddr,
    pub subnet: SubnetKey,
    /// Eligible for assignment from this epoch on (the epoch after
    /// registration, so nobody joins knowing the current assignment).
    pub active_from_epoch: u64,
    /// Not eligible from this epoch on.
    pub retired_from_epoch: Option<u64>,
    pub deviation_strikes: u32,
    pub good_reports_epoch: u32,
    pub total_rewards: Token,
    pub total_slashed: Token,
}

impl Oracle {
    pub fn eligible(&self, epoch: u64) -> bool {
        self.active_from_epoch <= epoch && self.retired_from_epoch.is_none_or(|r| epoch < r)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub client: AccountId,
    pub node: AccountId,
    pub escrow: Usd,
    /// Cumulative USD settled so far: monotonic, never above `escrow`.
    pub paid: Usd,
    pub paid_bytes: u64,
    pub expires_at_secs: u64,
}

impl Channel {
    /// A channel as it opens: nothing paid yet.
    pub fn opened(client: AccountId, node: AccountId, escrow: Usd, expires_at_secs: u64) -> Channel {
        Channel { client, node, escrow, paid: Usd::ZERO, paid_bytes: 0, expires_at_secs }
    }
}

/// The token/USD constant-product pool (`economics::amm`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub token: Token,
    pub usd: Usd,
    /// The epoch's price (`economics::amm`'s fine price) times the seconds
    /// it held, up to `updated_secs`: its time-weighted average bounds what
    /// the epoch's burn pays (ADR 0018).
    pub epoch_price_seconds: u128,
    /// When the pool last changed (or the epoch began, if later).
    pub updated_secs: u64,
}

/// The queue an epoch's burn left for its price bound (ADR 0018). It
/// burns right after the first sale of tokens that leaves the pool's price
/// at or under `price_cap` (`economics::burn_held_back`), not at the next
/// epoch's end: a trader who lifted the price past the bound just before
/// the burn lowers it again when it sells, and the burn follows its sale.
/// (Not after a purchase: a burn right after one is what a sandwich
/// sells into.) What burns so counts with the next epoch's burn.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldBurn {
    /// The price bound of the burn that held the queue back
    /// (`amm::fine_price`); 0 when nothing is held.
    pub price_cap: u128,
    /// Spent and burned since the last epoch's burn.
    pub burned_usd: Usd,
    pub burned_token: Token,
}

/// Supply counters: the invariant is checked against these (invariants.rs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supply {
    pub genesis_token: Token,
    pub minted_token: Token,
    pub burned_token: Token,
    pub genesis_usd: Usd,
    pub deposited_usd: Usd,
    pub withdrawn_usd: Usd,
    /// Emission scheduled so far (what the hard cap bounds).
    pub scheduled_token: Token,
}

impl Supply {
    pub fn total_token(&self) -> Token {
        Token(self.genesis_token.0 + self.minted_token.0 - self.burned_token.0)
    }
    pub fn total_usd(&self) -> Usd {
        Usd(self.genesis_usd.0 + self.deposited_usd.0 - self.withdrawn_usd.0)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionState {
    /// Exponential average of demand, in bit/s.
    pub demand_bps: u64,
    /// Bytes settled this epoch on channels of nodes in the region, each
    /// settlement's at most what its USD buys (`apply::demand_bytes`).
    pub settled_bytes_epoch: u64,
    /// Last epoch's scarcity multiplier and its inputs, for queries.
    pub multiplier_ppm: u32,
    pub online_capacity_bps: u64,
    pub target_capacity_bps: u64,
}

/// The /24 (IPv4) or /48 (IPv6) a node or oracle lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SubnetKey(pub [u8; 7]);

impl SubnetKey {
    /// The 7 bytes as one integer, for cheap comparisons in hot loops.
    pub fn as_u64(&self) -> u64 {
        let k = &self.0;
        u64::from_le_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], 0])
    }

    /// An IPv6 address that reaches an IPv4 host is keyed by that host's
    /// /24 (`embedded_ipv4`): keyed by its first 48 bits, a farm on one
    /// /24 wrote its identities' addresses in IPv6 forms, each a group of
    /// its own (a 6to4 /48 per IPv4 address), and an oracle in the /24
    /// written so measured its neighbours.
    pub fn of(ip: &IpAddr) -> SubnetKey {
        let ip = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6).map_or(*ip, |(_, v4)| IpAddr::V4(v4)),
            IpAddr::V4(_) => *ip,
        };
        let mut k = [0u8; 7];
        match &ip {
            IpAddr::V4(v4) => {
                k[0] = 4;
                k[1..4].copy_from_slice(&v4.octets()[..3]);
            }
            IpAddr::V6(v6) => {
                k[0] = 6;
                k[1..7].copy_from_slice(&v6.octets()[..6]);
            }
        }
        SubnetKey(k)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub chain_id: String,
    pub params: Params,
    pub gateway: AccountId,
    pub epoch: u64,
    pub epoch_start_secs: u64,
    /// Seed for this epoch's oracle assignment: derived from the state root
    /// at the previous epoch's end, so it is unknown until then.
    pub epoch_seed: Hash32,
    pub account_index: BTreeMap<AccountId, AccountIdx>,
    pub accounts: Vec<Account>,
    pub node_index: BTreeMap<AccountId, NodeIdx>,
    pub nodes: Vec<Node>,
    /// This epoch's accumulators of `nodes[i]`, at the same index (always
    /// as long as `nodes`).
    pub node_epochs: Vec<NodeEpoch>,
    pub subnet_index: BTreeMap<SubnetKey, u32>,
    pub oracle_index: BTreeMap<AccountId, OracleIdx>,
    pub oracles: Vec<Oracle>,
    pub channels: BTreeMap<ChannelId, Channel>,
    /// The open channels of each account, as client and as node (a range
    /// per account): the chain's API lists an account's channels from it
    /// rather than scanning every channel under its lock.
    pub channels_by_account: BTreeSet<(AccountId, ChannelId)>,
    /// The open channels by expiry (`expires_at_secs`, then id): the
    /// epoch's end closes those past their grace from the front, without
    /// a scan of every channel (ADR 0021).
    pub channels_by_expiry: BTreeSet<(u64, ChannelId)>,
    pub pool: Pool,
    pub supply: Supply,
    /// USD settled or paid as fees, waiting for the epoch's buy-and-burn.
    pub burn_queue_usd: Usd,
    /// What the last epoch's burn left in the queue for its price, and
    /// what of it has burned since (ADR 0018).
    pub held_burn: HeldBurn,
    /// Scheduled emission not yet paid out (rounding, empty pools).
    pub emission_carry: Token,
    pub regions: [RegionState; MacroRegion::COUNT],
}

impl State {
    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.account_index.get(id).map(|&i| &self.accounts[i as usize])
    }
    pub fn node(&self, id: &AccountId) -> Option<&Node> {
        self.node_index.get(id).map(|&i| &self.nodes[i as usize])
    }
    pub fn oracle(&self, id: &AccountId) -> Option<&Oracle> {
        self.oracle_index.get(id).map(|&i| &self.oracles[i as usize])
    }

    /// The account's open channels, as client or as node, by channel id;
    /// those after `after` only, if given.
    pub fn channels_of(&self, id: AccountId, after: Option<ChannelId>) -> impl Iterator<Item = (&ChannelId, &Channel)> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let from = match after {
            Some(c) => Excluded((id, c)),
            None => Included((id, Hash32([0; 32]))),
        };
        self.channels_by_account
            .range((from, Unbounded))
            .take_while(move |(a, _)| *a == id)
            .filter_map(|(_, c)| self.channels.get_key_value(c))
    }

    /// The account's index, creating an empty account if needed.
    pub(crate) fn account_idx_or_create(&mut self, id: AccountId) -> AccountIdx {
        if let Some(&i) = self.account_index.get(&id) {
            return i;
        }
        let i = self.accounts.len() as AccountIdx;
        self.accounts.push(Account::new(id));
        self.account_index.insert(id, i);
        i
    }

    /// The subnet group of `key`, a new one if no node record is in it:
    /// the next id, since `drop_empty_subnet_groups` keeps them dense.
    pub(crate) fn subnet_group_or_create(&mut self, key: SubnetKey) -> u32 {
        let next = self.subnet_index.len() as u32;
        *self.subnet_index.entry(key).or_insert(next)
    }

    /// At an epoch's end: drops the subnet groups no node record is in
    /// (`node_groups`: each node's `subnet_group`, in node order, as the
    /// epoch's aggregation copied them) and numbers the others densely
    /// again, in the order they had. An `UpdateNode` to a new /24 (/48)
    /// made a group that stayed for ever: an entry of the state the chain
    /// hashes every block, for a fee (ADR 0015 refused as much for
    /// accounts). A deregistered node keeps its group, as its record
    /// stays and it may come back: the groups are at most the records.
    /// Only between epochs: within one, the group a node left still
    /// counts it (`NodeEpoch::group_left`, ADR 0010). The ids change only
    /// when a group went, so the state and its root too.
    pub(crate) fn drop_empty_subnet_groups(&mut self, node_groups: &[u32]) {
        debug_assert_eq!(node_groups.len(), self.nodes.len());
        const GONE: u32 = u32::MAX;
        let mut new_ids = vec![GONE; self.subnet_index.len()];
        for &g in node_groups {
            new_ids[g as usize] = 0;
        }
        let mut kept = 0u32;
        for id in new_ids.iter_mut().filter(|id| **id != GONE) {
            *id = kept;
            kept += 1;
        }
        if kept as usize == new_ids.len() {
            return;
        }
        debug_assert!(self.node_epochs.iter().all(|e| e.group_left.is_none()), "a group left in the epoch is still read");
        self.subnet_index.retain(|_, g| {
            *g = new_ids[*g as usize];
            *g != GONE
        });
        for node in &mut self.nodes {
            node.subnet_group = new_ids[node.subnet_group as usize];
        }
    }

    /// Stake an account must keep bonded for the roles it holds.
    pub fn required_stake(&self, acct: &Account) -> Token {
        let mut need = Token::ZERO;
        if acct.node.is_some_and(|n| self.nodes[n as usize].active) {
            need.0 += self.params.min_node_stake.0;
        }
        if acct.oracle.is_some_and(|o| self.oracles[o as usize].retired_from_epoch.is_none()) {
            need.0 += self.params.min_oracle_stake.0;
        }
        need
    }

    pub fn n_active_nodes(&self) -> usize {
        self.nodes.iter().filter(|n| n.active).count()
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use tollway_types::{codec, MeasurementOutcome};

    /// Every IPv6 spelling of an IPv4 host is that host's /24; other
    /// IPv6 addresses, their /48.
    #[test]
    fn an_ipv6_address_that_reaches_an_ipv4_host_is_in_that_hosts_slash24() {
        let key = |ip: &str| SubnetKey::of(&ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}")));
        let slash24 = key("203.0.113.0");
        let teredo = "2001:0:4136:e378:8000:63bf:34ff:8efe"; // client 203.0.113.1, inverted
        for ip in ["203.0.113.77", "::ffff:203.0.113.1", "::203.0.113.2", "64:ff9b::cb00:7103", "2002:cb00:7104::1", teredo] {
            assert_eq!(key(ip), slash24, "{ip}");
        }
        // Not IPv4 hosts: a global /48, NAT64's local-use /48 (its IPv4
        // host may sit anywhere in it), and the Teredo server's neighbours.
        assert_eq!(key("2a00:1:2::1"), key("2a00:1:2:ffff::9"));
        assert_ne!(key("2a00:1:2::1"), key("2a00:1:3::1"));
        assert_eq!(key("64:ff9b:1::cb00:7101"), key("64:ff9b:1:ffff::1"));
        assert_ne!(key("64:ff9b:1::cb00:7101"), slash24);
        assert_ne!(key("2001:db8::cb00:7101"), slash24);
    }

    fn slot(o: OracleIdx) -> ReportSlot {
        ReportSlot {
            oracle: o,
            outcome: MeasurementOutcome::Measured { throughput_bps: 1_000 + o as u64, latency_us: 20 + o },
            uptime_ppm: 999_000,
        }
    }

    /// The seven slots encoded before, whatever the storage: from one to
    /// seven reports (the heap from the fourth), after a clear, and back.
    #[test]
    fn reports_encode_as_seven_slots_inline_or_on_the_heap() {
        assert!(std::mem::size_of::<NodeEpoch>() <= 144, "{}", std::mem::size_of::<NodeEpoch>());
        for n in 0..=MAX_ORACLES_PER_NODE {
            let mut reports = Reports::default();
            let mut wire = ReportsWire { slots: [ReportSlot::EMPTY; MAX_ORACLES_PER_NODE], len: n as u8 };
            for o in 0..n {
                assert!(reports.push(slot(o as OracleIdx)));
                wire.slots[o] = slot(o as OracleIdx);
            }
            assert_eq!(matches!(reports.slots, ReportSlots::Heap(_)), n > INLINE_REPORTS, "{n} reports");
            assert_eq!(reports.len(), n);
            let bytes = codec::encode(&reports);
            assert_eq!(bytes, codec::encode(&wire), "{n} reports");
            let back: Reports = codec::decode(&bytes, 1 << 10).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, reports);
            assert_eq!(back.as_slice(), &wire.slots[..n]);
            // Cleared, it keeps its storage and equals an empty one.
            reports.clear();
            assert_eq!(reports, Reports::default());
            assert_eq!(codec::encode(&reports), codec::encode(&Reports::default()));
        }
        let mut full = Reports::default();
        for o in 0..MAX_ORACLES_PER_NODE as OracleIdx {
            assert!(full.push(slot(o)));
        }
        assert!(!full.push(slot(99)), "an eighth report is refused");
        assert_eq!(full.len(), MAX_ORACLES_PER_NODE);
    }

    /// A count past the slots, or a used slot after the count, is refused
    /// (the count made every later read panic; the slot broke canonicity).
    #[test]
    fn reports_decode_only_canonical_slots() {
        let mut wire = ReportsWire { slots: [ReportSlot::EMPTY; MAX_ORACLES_PER_NODE], len: 2 };
        wire.slots[0] = slot(1);
        wire.slots[1] = slot(2);
        assert!(codec::decode::<Reports>(&codec::encode(&wire), 1 << 10).is_ok());
        wire.slots[4] = slot(5);
        assert!(codec::decode::<Reports>(&codec::encode(&wire), 1 << 10).is_err(), "a used slot after the count");
        wire.slots[4] = ReportSlot::EMPTY;
        wire.len = MAX_ORACLES_PER_NODE as u8 + 1;
        assert!(codec::decode::<Reports>(&codec::encode(&wire), 1 << 10).is_err(), "a count past the slots");
    }
}
