//! One simulation run: agents act, their actions become ledger inputs
//! (payments, measurements, swaps, registrations), and every day ends with
//! the ledger's own `end_epoch`. The supply invariant is checked after
//! every epoch; a violation stops the run with an error.
//!
//! Agent behaviour uses floats (it is a model of people); everything that
//! touches money goes through the ledger in integers.

use crate::output::{EpochRow, RunOutput, RunSummary};
use crate::rng::{Keyed, Rng};
use crate::scenario::{Scenario, Shock};
use tollway_ledger::assignment::Assigner;
use tollway_ledger::params::MAX_ORACLES_PER_NODE;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tollway_ledger::direct::{apply_unsigned, claim_vested_each, pay_node_in, record_report_in, sell_tokens_each, PaymentParts};
use tollway_ledger::economics::SlashReason;
use tollway_ledger::genesis::{Allocation, Genesis};
use tollway_ledger::state::{Account, AccountIdx, Node, NodeEpoch, NodeIdx, OracleIdx};
use tollway_ledger::invariants::{check_supply_with, AccountSums, Holdings};
use tollway_ledger::workers::{ranges, split_lengths, OneThread, Workers};
use tollway_ledger::{check_supply, cost_of_bytes, end_epoch, end_epoch_reusing, Ctx, EpochBuffers, State};
use tollway_types::{
    AccountId, Amount, CountryCode, Hash32, MeasurementOutcome, NodeSpec, PublicKey, Token, TxBody,
    Usd, PPM,
};

const DAY_SECS: u64 = 86_400;
/// Bytes in a GiB over bytes in a GB.
pub(crate) const GIB_PER_GB: f64 = (1u64 << 30) as f64 / 1e9;
const GENESIS_SECS: u64 = 1_700_000_000;
/// One representative country per macro-region (MacroRegion order).
const COUNTRIES: [&[u8; 2]; 8] = [b"US", b"BR", b"DE", b"NG", b"AE", b"IN", b"JP", b"AU"];
/// Local time = UTC + offset, per macro-region: when its nights fall.
const UTC_OFFSET_HOURS: [u32; 8] = [19, 21, 1, 1, 3, 5, 8, 10];

// Not `#[from]` on the wrapped errors: that makes each the source too, and
// error chains printed its message twice ("genesis: genesis amounts
// overflow: genesis amounts overflow"), as in `ScenarioError`.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("scenario: {0}")]
    Scenario(crate::scenario::ScenarioError),
    #[error("genesis: {0}")]
    Genesis(tollway_ledger::genesis::GenesisError),
    #[error("day {day}: the supply invariant broke: {why}")]
    Invariant { day: u64, why: String },
    #[error("day {day}: setting up {what} failed: {why}")]
    Setup { day: u64, what: String, why: String },
}

impl From<crate::scenario::ScenarioError> for SimError {
    fn from(e: crate::scenario::ScenarioError) -> SimError {
        SimError::Scenario(e)
    }
}

impl From<tollway_ledger::genesis::GenesisError> for SimError {
    fn from(e: tollway_ledger::genesis::GenesisError) -> SimError {
        SimError::Genesis(e)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Honest,
    Farmer,
    Sybil,
    Liar,
    /// An honest node on a line like the sybil farm's, in the same region:
    /// what the farm should earn, all identities together, is the mean of
    /// `CONTROL_NODES` of them.
    Control,
    /// An honest node on the same line as a liar (its region, its
    /// capacity, online all day), claiming the truth: what the liar would
    /// have earned running its hardware honestly.
    Twin,
}

struct Operator {
    kind: Kind,
    account: AccountIdx,
    node: NodeIdx,
    region: usize,
    /// What the node delivers when measured alone.
    capacity_bps: u64,
    /// What it can carry for consumers: the same, except for a sybil farm,
    /// whose identities share one line.
    serving_bps: u64,
    /// What it claims (liars: a multiple of the truth).
    claim_bps: u64,
    daily_cost_usd: f64,
    /// Hours of the UTC day the node is online (bit h = hour h).
    online_hours: u32,
    uptime_ppm: u32,
    sell_share: f64,
    /// Its price as registered: what the ledger's `cost_of_bytes` charges.
    price_usd_micro_per_gib: u64,
    active: bool,
    /// Wants to leave, and the ledger refused its node's deregistration
    /// (it holds a strike): tried again each day, measured meanwhile.
    leaving: bool,
    /// Unbonding after leaving: sell the stake once it is released.
    exiting_until_secs: Option<u64>,
    first_day: u64,
    days_active: u64,
    unprofitable_days: u32,
    churn_after_days: u32,
    profit_usd: f64,
}

fn account_id(label: &str) -> AccountId {
    // Simulated accounts never sign: any 32 bytes name them.
    PublicKey(Hash32::of(format!("tollway-sim/{label}").as_bytes()).0)
}

fn twy(x: f64) -> Token {
    Token(base_units(x))
}

fn usd(x: f64) -> Usd {
    Usd(base_units(x))
}

/// `(x.max(0.0) × 1e6) as u128`, the same value, through a 64-bit
/// conversion when the amount fits (the soft 128-bit one was a cost per
/// payment per node per day).
fn base_units(x: f64) -> u128 {
    let v = x.max(0.0) * 1e6;
    if v < 18_446_744_073_709_551_616.0 {
        v as u64 as u128
    } else {
        v as u128
    }
}

fn f_twy(t: Token) -> f64 {
    u128_to_f64(t.0) / 1e6
}

/// Labels with an IPv4 /24 of their own (`node_ip`): 11.0.0.0 up to
/// 99.255.255.0, below the oracles' 100.64.0.0/10.
const IPV4_LABELS: u32 = (100 - 11) << 16;

/// A distinct /24 for each index, 11.0.0.0 upward, and past those a
/// distinct IPv6 /48 in 2a00::/16 (in IPv4 the next labels reached the
/// oracles' 100.64.0.0/10, loopback, the sybil farm's 172.31.0.0/16 and
/// multicast).
fn node_ip(i: u32) -> std::net::IpAddr {
    if i < IPV4_LABELS {
        return std::net::IpAddr::from([11 + (i >> 16) as u8, (i >> 8) as u8, i as u8, 1]);
    }
    let j = i - IPV4_LABELS;
    std::net::IpAddr::from([0x2a00, (j >> 16) as u16, j as u16, 0, 0, 0, 0, 1])
}

/// Online hours: `uptime` of the day, with the offline stretch starting
/// between midnight and 3 AM local time.
fn online_mask(rng: &mut Rng, region: usize, uptime: f64) -> (u32, u32) {
    let offline = ((1.0 - uptime) * 24.0).round().clamp(0.0, 24.0) as u32;
    let start_local = rng.below(4) as u32;
    let mut mask = (1u32 << 24) - 1;
    for k in 0..offline {
        let utc = (start_local + k + 24 - UTC_OFFSET_HOURS[region]) % 24;
        mask &= !(1 << utc);
    }
    let online = mask.count_ones();
    (mask, (online as u64 * PPM as u64 / 24) as u32)
}

/// `x as f64`, the same value, without the soft 128-bit conversion for
/// the amounts the simulator sees (below 2^52 base units): 2^52 + x is
/// then exact in an f64's bits, and so is subtracting 2^52. (Written with
/// the bits because the compiler folds `x as u64 as f64` back into the
/// 128-bit conversion.)
fn u128_to_f64(x: u128) -> f64 {
    const TWO_POW_52: f64 = 4_503_599_627_370_496.0;
    if x < 1 << 52 {
        f64::from_bits(0x4330_0000_0000_0000 | x as u64) - TWO_POW_52
    } else {
        x as f64
    }
}

/// What a sale of `share` of `of` sells, at most `have` (the account's
/// liquid tokens); `None` below a millionth of a token, not worth a swap.
fn sale_amount(of: Token, have: Token, share: f64) -> Option<Token> {
    let amount = Token((u128_to_f64(of.0) * share) as u128).min(have);
    (amount.0 >= 1_000_000).then_some(amount)
}

/// The values at fractions `fs` (ascending) of `v` sorted by `total_cmp`:
/// element `⌊(len − 1) × f⌋` of the sorted order, found by selection
/// rather than a full sort (elements equal under `total_cmp` are the same
/// bits, so the values are those of the sorted vector). 0 when empty.
fn quantiles<const N: usize>(v: &mut [f64], fs: [f64; N]) -> [f64; N] {
    let mut out = [0.0; N];
    if v.is_empty() {
        return out;
    }
    let mut lo = 0; // v[..lo] holds only elements ordered before what follows
    for (slot, f) in out.iter_mut().zip(fs) {
        let i = ((v.len() - 1) as f64 * f) as usize;
        debug_assert!(i >= lo, "fractions must ascend");
        let (_, x, _) = v[lo..].select_nth_unstable_by(i - lo, |a, b| a.total_cmp(b));
        *slot = *x;
        lo = i;
    }
    out
}

impl Supply {
    fn of(ops: &[Operator]) -> Supply {
        let mut cap = [[0f64; 24]; 8];
        let mut region_weight = [0f64; 8];
        let mut servers = Vec::new();
        for (i, op) in ops.iter().enumerate().filter(|(_, o)| o.active) {
            // Branch-free: an offline hour adds +0.0, which leaves the sum
            // (never −0.0: it starts at +0.0 and adds non-negatives) as is.
            let bps = op.serving_bps as f64;
            for (h, c) in cap[op.region].iter_mut().enumerate() {
                *c += if op.online_hours >> h & 1 != 0 { bps } else { 0.0 };
            }
            region_weight[op.region] += bps * op.online_hours.count_ones() as f64;
            servers.push(Server {
                op: i,
                price_usd_micro_per_gib: op.price_usd_micro_per_gib,
                serving_bps: op.serving_bps,
                node: op.node,
                hours_online: op.online_hours.count_ones() as u8,
                region: op.region as u8,
            });
        }
        Supply { cap, region_weight, servers }
    }
}

pub struct Sim {
    pub scenario: Scenario,
    pub state: State,
    rng: Rng,
    ops: Vec<Operator>,
    /// Each operator's liquid tokens after its last sale, beside `ops`:
    /// what it holds beyond them came since, from rewards (claimed, or
    /// released by the ledger as a new reward arrived, or credited at once
    /// without vesting). Dense, for the day's sellers (every seventh
    /// operator) read and written on the main thread: in the operator
    /// records (144 bytes with it) each was a cache miss.
    liquid_after_sale: Vec<Token>,
    /// The day's operator profits, for their quantiles (kept for the
    /// next day's: 800 kB at 100,000 operators).
    profits: Vec<f64>,
    oracles: Vec<AccountIdx>,
    /// The accounts of the oracles that collude with the liars from the
    /// attack's start; they report liars' claims while it lasts
    /// (`colluding_today`) and pay their slashes as attackers, even after.
    colluders: Vec<AccountIdx>,
    traders: Vec<AccountIdx>,
    gateway: AccountIdx,
    whale: AccountIdx,
    consumer_accounts: [AccountIdx; 8],
    consumers: [f64; 8],
    unserved_days: [u32; 8],
    region_price_usd_per_gb: [f64; 8],
    /// Last epoch's rewards (tokens) and USD income per Mbit/s of
    /// capacity, per region: what prospective operators look at.
    region_reward_per_mbps_day: [f64; 8],
    region_income_usd_per_mbps_day: [f64; 8],
    day: u64,
    next_label: u32,
    trader_momentum: f64,
    /// Exponential average of the USD the burn spends per day.
    burn_usd_per_day: f64,
    value_trader: AccountIdx,
    /// The attack's sandwich trader, if it has one.
    sandwich: Option<AccountIdx>,
    attacker_profit_usd: f64,
    attackers_slashed_twy: f64,
    /// Nodes deregistered by region since the day's epoch ended (its
    /// departures): the epoch's report still counts them.
    deregistered_since_the_epoch: [u32; 8],
    /// The pool's price before the first day: where the drawdown starts.
    genesis_price_usd: f64,
    rows: Vec<EpochRow>,
    /// What `serve` derives from the active operators alone (capacity
    /// online per region and UTC hour, each region's capacity-hours, the
    /// operators as it pays them): the same every day until an operator
    /// joins or leaves, which clears it. Recomputed in the same order, it
    /// is the same bits.
    supply: Option<Supply>,
    /// The day's USD income of each operator from its consumers, by
    /// operator index: written by the payments, read by the books. A
    /// vector of its own, so the payments write it while the assignment
    /// reads the operators on other threads, with no pass over the
    /// operators to copy it in.
    income_usd: Vec<f64>,
    /// The seed of the measurements' streams (`measure_node`).
    measure_seed: u64,
    /// The day's assigned oracles per operator, in operator order,
    /// `NO_ORACLE` where empty (kept to reuse its memory).
    assigned: Vec<[OracleIdx; MAX_ORACLES_PER_NODE]>,
    /// The day's payments (`serve`), one vector per range of operators,
    /// kept to reuse their memory: grown anew each day, the vector was
    /// copied on every doubling.
    payments: Payments,
    /// The day's books of each operator (`book_each`), kept to reuse its
    /// memory: filled anew, a vector of 3.2 MB at 100,000 operators was
    /// a fill a day on this thread alone, before the pass wrote it again.
    booked: Vec<BookedToday>,
    /// The epoch's per-node rows (`end_epoch_reusing`), kept to write over:
    /// allocated and zeroed anew, about 10 MB a day at 100,000 nodes on
    /// this thread alone.
    epoch_buffers: EpochBuffers,
    /// Threads this run may use for the day's oracle assignment and supply
    /// check (cores the Monte Carlo leaves idle when it has fewer runs than
    /// cores).
    threads: usize,
}

/// Below this many operators (or nodes, or accounts) a day's assignment
/// (or epoch pass, or supply check) is too quick to be worth a thread.
const PARALLEL_MIN_OPERATORS: usize = 4096;

/// Whether the oracles measure `op` today: it runs and its node is still
/// registered.
fn is_measured(nodes: &[Node], op: &Operator) -> bool {
    op.active && nodes[op.node as usize].active
}

/// Honest nodes on lines like the sybil farm's. One such node's rewards
/// vary by about a tenth from seed to seed (its latency tier is drawn
/// daily), more than a farm's gain from the subnet cap would; the mean of
/// ten varies about a third as much.
const CONTROL_NODES: u32 = 10;

/// Operators per piece of the day's measurement work.
const MEASURE_CHUNK: usize = 2048;

/// The empty slots of an operator's assigned oracles (`Sim::assigned`).
const NO_ORACLE: OracleIdx = OracleIdx::MAX;

/// The oracles' reports of a node: honest oracles measure what the node
/// delivers (0.85–1.0 of it), colluding oracles report a liar's claim.
/// Drawn from the node's own stream of the day (`stream`: the run's
/// measurement seed and the day) and recorded into its epoch record.
fn measure_node(epoch: &mut NodeEpoch, op: &Operator, assigned: &[OracleIdx], colluding: &[bool], stream: [u64; 2]) {
    let mut rng = Keyed::new(&[stream[0], stream[1], op.node as u64]);
    let liar = op.kind == Kind::Liar;
    for &o in assigned.iter().take_while(|&&o| o != NO_ORACLE) {
        let throughput_bps =
            if liar && colluding[o as usize] { op.claim_bps } else { (op.capacity_bps as f64 * rng.range(0.85, 1.0)) as u64 };
        let latency_us = (20_000.0 + rng.range(0.0, 120_000.0)) as u32;
        let outcome = MeasurementOutcome::Measured { throughput_bps, latency_us };
        let _ = record_report_in(epoch, o, outcome, op.uptime_ppm);
    }
}

/// A worker for `n` pieces of work: each call takes the next piece not yet
/// taken, by any thread, and calls `each` with its index, until none is
/// left.
fn in_turns(n: usize, each: impl Fn(usize) + Sync) -> impl Fn() + Sync {
    let next = AtomicUsize::new(0);
    move || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            return;
        }
        each(i);
    }
}

/// Runs `mine` on this thread while up to `helpers` more threads of the
/// run's pool (`Sim::run`) run `helper`, and returns `mine`'s result once
/// all are done (a helper's panic is raised again here). A helper the pool
/// has not started by then runs here, so this thread never waits for
/// another to wake up: the pool's threads live for the run, where a thread
/// started per pass cost about 0.1 ms of this thread's time (a day makes
/// about ten passes).
fn with_helpers<R>(helpers: usize, helper: impl Fn() + Sync, mine: impl FnOnce() -> R) -> R {
    rayon::in_place_scope(|scope| {
        for _ in 0..helpers {
            scope.spawn(|_| helper());
        }
        mine()
    })
}

/// The run's threads, lent to the ledger's epoch passes and the supply
/// check: a pass of `PARALLEL_MIN_OPERATORS` records or more is split into
/// a few parts per thread, taken in turns (a thread that starts late takes
/// fewer), with the same result as in one part.
#[derive(Clone, Copy)]
struct Helpers {
    threads: usize,
}

impl Workers for Helpers {
    fn parts(&self, items: usize) -> usize {
        if self.threads > 1 && items >= PARALLEL_MIN_OPERATORS {
            2 * self.threads
        } else {
            1
        }
    }

    fn run<T: Send>(&self, parts: Vec<T>, work: &(dyn Fn(T) + Sync)) {
        if parts.len() < 2 {
            parts.into_iter().for_each(work);
            return;
        }
        self.run_beside(parts, work, || ());
    }
}

impl Helpers {
    /// Runs `mine` on this thread while the helpers call `work` with the
    /// parts, taken in turns; then this thread takes what parts are left.
    /// Returns `mine`'s result once every part is done.
    fn run_beside<T: Send, R>(&self, parts: Vec<T>, work: &(dyn Fn(T) + Sync), mine: impl FnOnce() -> R) -> R {
        if self.threads < 2 {
            let out = mine();
            parts.into_iter().for_each(work);
            return out;
        }
        let parts: Vec<Mutex<Option<T>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
        let each = in_turns(parts.len(), |i| {
            let part = parts[i].lock().map(|mut p| p.take()).unwrap_or_else(|e| e.into_inner().take());
            if let Some(part) = part {
                work(part);
            }
        });
        with_helpers(self.threads - 1, &each, || {
            let out = mine();
            each();
            out
        })
    }
}

/// What the day's books do with an operator (`Sim::book_each`).
#[derive(Clone, Copy)]
enum Books {
    /// It left on an earlier day: nothing to book.
    Gone,
    /// Ejected by a slash, or waiting for its strike to be decided before
    /// it may go: it tries to leave, and books nothing.
    Leaves,
    /// Its day's profit is booked; `churn`: it has lost money for too
    /// long and leaves after its sale.
    Booked { churn: bool },
}

/// An operator's day in the books as far as it depends on the operator
/// alone, left by the split pass (`Sim::book_each`) for the sequential one
/// in `step`: 48 bytes, where the sequential pass read a 128-byte operator.
#[derive(Clone, Copy)]
struct BookedToday {
    /// The epoch's reward of its node, TWY.
    reward_twy: f64,
    profit_usd: f64,
    serving_mbps: f64,
    region: u8,
    kind: Kind,
    books: Books,
    /// Its account (a copy, so that the day's sales are made from the
    /// books alone, not from each seller's operator record).
    account: AccountIdx,
    /// Its node is active and today it sells (weekly; farmers daily): its
    /// vested rewards are claimed first.
    sells: bool,
    /// Its unbonding has ended: it withdraws, claims and sells.
    exit_due: bool,
    /// The share of its new tokens it sells (`Operator::sell_share`).
    sell_share: f64,
}

impl BookedToday {
    /// Whether its profit counts in the day's profit quantiles: booked,
    /// and one of the population's honest operators. Not the attack's
    /// nodes, nor its honest twins and control nodes (run beside the
    /// attack to measure it, online all day, the controls on the farm's
    /// line: counted, they moved the percentiles by a tenth while the
    /// attack ran), nor the reward farmers: the same operators as
    /// `operator_retention` and the profit distribution.
    fn counts_profit(&self) -> bool {
        matches!(self.books, Books::Booked { .. }) && self.kind == Kind::Honest
    }

    const GONE: BookedToday = BookedToday {
        reward_twy: 0.0,
        profit_usd: 0.0,
        serving_mbps: 0.0,
        region: 0,
        kind: Kind::Honest,
        books: Books::Gone,
        account: 0,
        sells: false,
        exit_due: false,
        sell_share: 0.0,
    };
}

/// A payment `serve` decides: (operator, its node, region, USD, bytes).
type Payment = (usize, NodeIdx, usize, Usd, u64);

/// The payments `serve` decides, one vector per range of operators: in
/// operator order, read flattened.
type Payments = Vec<Vec<Payment>>;

/// An active operator as `serve` pays it: what the payment reads of the
/// 128-byte `Operator`, in 32 bytes (`Supply::servers`).
#[derive(Clone, Copy)]
struct Server {
    /// Its index in `Sim::ops`.
    op: usize,
    price_usd_micro_per_gib: u64,
    serving_bps: u64,
    node: NodeIdx,
    hours_online: u8,
    region: u8,
}

/// The active operators' capacity, as `serve` sums it, and the operators
/// as it pays them.
struct Supply {
    /// Bit/s online per region and UTC hour.
    cap: [[f64; 24]; 8],
    /// Per region: the sum of serving bit/s × hours online.
    region_weight: [f64; 8],
    /// The active operators, in operator order: the day's payments read
    /// 32 bytes an active operator, not 128 bytes an operator, gone ones
    /// too.
    servers: Vec<Server>,
}

impl Sim {
    pub fn new(scenario: &Scenario, seed: u64) -> Result<Sim, SimError> {
        let params = scenario.params()?;
        let mut rng = Rng::new(seed);
        let p = &scenario.population;
        let gateway_id = account_id("gateway");
        let mut allocations = Vec::new();
        let mut alloc = |label: &str, token: f64, usd_: f64, staked: Token| {
            allocations.push(Allocation { account: account_id(label), token: twy(token), usd: usd(usd_), staked });
        };
        // Genesis operators hold the scenario's genesis stake; farmers the
        // minimum.
        let mut stakes = Vec::new();
        for i in 0..p.operators + p.farmers {
            let stake = if i < p.operators {
                // Raised to the minimum, or the node could not register.
                let min_twy = params.min_node_stake.0 as f64 / 1e6;
                let [lo, hi] = p.genesis_stake_twy;
                twy(rng.range(lo.max(min_twy), hi.max(min_twy)))
            } else {
                params.min_node_stake
            };
            stakes.push(stake);
            alloc(&format!("op{i}"), 0.0, 0.0, stake);
        }
        for o in 0..p.oracles {
            alloc(&format!("oracle{o}"), 0.0, 0.0, Token(params.min_oracle_stake.0 * 2));
        }
        let m = &scenario.market;
        for t in 0..m.traders {
            alloc(&format!("trader{t}"), m.pool_twy / 200.0, m.pool_usd / 200.0, Token::ZERO);
        }
        // What its crashes within the run sell: one after the run's last
        // day does not happen, and its tokens were in the supply all the
        // same, from day 1. At least the scenario's idle holding
        // (`market.whale_twy`), which a crash's twin run holds too.
        let days = scenario.run.days;
        let crashes_twy: f64 = scenario
            .shocks
            .iter()
            .map(|s| match s {
                Shock::PriceCrash { day, sell_twy } if *day <= days => *sell_twy,
                _ => 0.0,
            })
            .sum();
        alloc("whale", crashes_twy.max(m.whale_twy), 0.0, Token::ZERO);
        // Only when there is one: a genesis account more would change
        // every other run's state.
        let sandwich_usd = scenario.attack.as_ref().map_or(0.0, |a| a.sandwich_usd);
        if sandwich_usd > 0.0 {
            alloc("sandwich", 0.0, sandwich_usd, Token::ZERO);
        }
        alloc("value-trader", m.pool_twy / 4.0, m.pool_usd / 4.0, Token::ZERO);
        for r in 0..8 {
            alloc(&format!("consumers-{r}"), 0.0, 0.0, Token::ZERO);
        }
        let genesis = Genesis {
            chain_id: "tollway-sim".into(),
            genesis_time_secs: GENESIS_SECS,
            gateway: gateway_id,
            params,
            allocations,
            pool_token: twy(m.pool_twy),
            pool_usd: usd(m.pool_usd),
        };
        let state = genesis.build()?;
        let idx = |state: &State, label: &str| state.account_index[&account_id(label)];
        let gateway = idx(&state, "gateway");
        let whale = idx(&state, "whale");
        let value_trader = idx(&state, "value-trader");
        let sandwich = state.account_index.get(&account_id("sandwich")).copied();
        let traders = (0..m.traders).map(|t| idx(&state, &format!("trader{t}"))).collect();
        let consumer_accounts = std::array::from_fn(|r| idx(&state, &format!("consumers-{r}")));
        let oracles = (0..p.oracles).map(|o| idx(&state, &format!("oracle{o}"))).collect();
        let weights = &p.region_weights;
        let demand_weights = &scenario.demand.region_weights;
        let total_w: f64 = demand_weights.iter().sum();
        let consumers = std::array::from_fn(|r| p.consumers as f64 * demand_weights[r] / total_w);
        let mut sim = Sim {
            scenario: scenario.clone(),
            state,
            rng,
            ops: Vec::new(),
            liquid_after_sale: Vec::new(),
            profits: Vec::new(),
            oracles,
            colluders: Vec::new(),
            traders,
            gateway,
            whale,
            consumer_accounts,
            consumers,
            unserved_days: [0; 8],
            region_price_usd_per_gb: [scenario.demand.reference_price_usd_per_gb; 8],
            region_reward_per_mbps_day: [0.0; 8],
            region_income_usd_per_mbps_day: [0.0; 8],
            day: 0,
            next_label: p.operators + p.farmers,
            trader_momentum: 0.0,
            burn_usd_per_day: 0.0,
            value_trader,
            sandwich,
            attacker_profit_usd: 0.0,
            attackers_slashed_twy: 0.0,
            deregistered_since_the_epoch: [0; 8],
            genesis_price_usd: 0.0,
            rows: Vec::new(),
            supply: None,
            income_usd: Vec::new(),
            measure_seed: seed,
            assigned: Vec::new(),
            payments: Vec::new(),
            booked: Vec::new(),
            epoch_buffers: EpochBuffers::default(),
            threads: 1,
        };
        let ctx = sim.ctx();
        for o in 0..p.oracles as usize {
            let addr = std::net::IpAddr::from([100, 64 + (o >> 8) as u8, o as u8, 1]);
            let acct = sim.oracles[o];
            sim.apply(ctx, acct, &TxBody::RegisterOracle { addr }, "an oracle")?;
        }
        for i in 0..p.operators + p.farmers {
            let kind = if i < p.operators { Kind::Honest } else { Kind::Farmer };
            let region = sim.rng.weighted(weights);
            let account = idx(&sim.state, &format!("op{i}"));
            sim.spawn(kind, account, region, i, None, None)?;
        }
        // Oracles become eligible in the next epoch: genesis day is setup.
        let seed_hash = Hash32::of(&seed.to_le_bytes());
        let ctx = sim.ctx_at(0);
        end_epoch(&mut sim.state, ctx, seed_hash);
        sim.genesis_price_usd = sim.price();
        Ok(sim)
    }

    /// Lets the run use `threads` threads where its work splits with the
    /// same result (the day's oracle assignment, the epoch's aggregation
    /// and payout, the supply check): output is byte-identical whatever the
    /// count.
    pub fn with_threads(mut self, threads: usize) -> Sim {
        self.threads = threads.max(1);
        self
    }

    fn ctx(&self) -> Ctx {
        self.ctx_at(self.day)
    }

    fn ctx_at(&self, day: u64) -> Ctx {
        Ctx { height: day, time_secs: GENESIS_SECS + day * DAY_SECS }
    }

    /// When the day's trades before its epoch ends are made (the traders',
    /// the joiners' stake, the shocks' sales): at its middle, standing for
    /// trades spread over the day. The pool's average price over the epoch,
    /// which bounds what the burn pays (ADR 0018), then weighs the price
    /// before them and after them half a day each, as a day of trading
    /// would. (At the epoch's end, the time of the burn and of the
    /// operators' sales after it, they would weigh nothing.)
    fn trading_ctx(&self) -> Ctx {
        let day = self.ctx();
        Ctx { time_secs: day.time_secs - DAY_SECS / 2, ..day }
    }

    fn apply(&mut self, ctx: Ctx, signer: AccountIdx, body: &TxBody, what: &str) -> Result<(), SimError> {
        apply_unsigned(&mut self.state, ctx, signer, body)
            .map(|_| ())
            .map_err(|e| SimError::Setup { day: self.day, what: what.to_string(), why: e.to_string() })
    }

    /// Creates an operator's node. `bought_stake`: buy the minimum stake on
    /// the pool with fresh USD first (operators joining after genesis).
    /// `line_bps`: its capacity, drawn when `None` (a liar's twin runs
    /// the liar's).
    fn spawn(
        &mut self,
        kind: Kind,
        account: AccountIdx,
        region: usize,
        label: u32,
        subnet: Option<u32>,
        line_bps: Option<u64>,
    ) -> Result<(), SimError> {
        let p = self.scenario.population.clone();
        let rng = &mut self.rng;
        let mut capacity_mbps = rng.log_range(p.capacity_mbps[0], p.capacity_mbps[1]);
        let mut monthly_cost = rng.range(p.monthly_cost_usd[0], p.monthly_cost_usd[1]);
        let mut claim_factor = 1.0;
        let uptime = match kind {
            Kind::Honest | Kind::Farmer => rng.range(p.uptime[0], p.uptime[1]),
            Kind::Sybil | Kind::Liar | Kind::Control | Kind::Twin => 1.0,
        };
        if let Some(a) = &self.scenario.attack {
            match kind {
                Kind::Sybil => {
                    capacity_mbps = a.sybil_line_mbps;
                    monthly_cost /= a.sybil_nodes.max(1) as f64; // one line, many identities
                }
                Kind::Control => capacity_mbps = a.sybil_line_mbps,
                // A long con claims the truth until its day comes
                // (`Sim::attack_phase`).
                Kind::Liar if a.liar_honest_days == 0 => claim_factor = a.liar_claim_factor,
                _ => {}
            }
        }
        let (online_hours, uptime_ppm) = online_mask(rng, region, uptime);
        let capacity_bps = line_bps.unwrap_or((capacity_mbps * 1e6) as u64);
        let serving_bps = match (&self.scenario.attack, kind) {
            (Some(a), Kind::Sybil) => capacity_bps / a.sybil_nodes.max(1) as u64,
            _ => capacity_bps,
        };
        let claim_bps = (capacity_bps as f64 * claim_factor) as u64;
        // Scenarios price per GB (10^9 bytes), the ledger per GiB.
        let price_usd_micro_per_gib = (rng.range(p.price_usd_per_gb[0], p.price_usd_per_gb[1]) * 1e6 * GIB_PER_GB).round() as u64;
        let sell_share = match kind {
            Kind::Honest => rng.range(p.sell_share[0], p.sell_share[1]),
            _ => 1.0,
        };
        let ip = match subnet {
            Some(s) => std::net::IpAddr::from([172, 31, s as u8, 1 + label as u8 % 250]),
            None => node_ip(label),
        };
        let spec = NodeSpec {
            country: CountryCode(*COUNTRIES[region]),
            addrs: vec![ip],
            port_first: 443,
            port_last: 443,
            tls_key_pin: [0; 32],
            claimed_capacity_bps: claim_bps.max(1),
            price_usd_micro_per_gib,
            price_usd_micro_per_hour: None,
        };
        let ctx = self.ctx();
        self.apply(ctx, account, &TxBody::RegisterNode(spec), "a node")?;
        let node = self.state.node_index[&self.state.accounts[account as usize].id];
        // The day's reports are recorded by ranges of operators and of
        // their nodes together (`Sim::measure`).
        assert!(self.ops.last().is_none_or(|o| o.node < node), "operators must hold nodes in node order");
        self.supply = None;
        self.liquid_after_sale.push(self.state.accounts[account as usize].token);
        self.ops.push(Operator {
            kind,
            account,
            node,
            region,
            capacity_bps,
            serving_bps,
            claim_bps,
            daily_cost_usd: monthly_cost / 30.0,
            online_hours,
            uptime_ppm,
            sell_share,
            price_usd_micro_per_gib,
            active: true,
            leaving: false,
            exiting_until_secs: None,
            first_day: self.day,
            days_active: 0,
            unprofitable_days: 0,
            churn_after_days: if kind == Kind::Farmer { 3 } else { p.churn_after_days },
            profit_usd: 0.0,
        });
        Ok(())
    }

    fn price(&self) -> f64 {
        let p = &self.state.pool;
        if p.token.is_zero() {
            return 0.0;
        }
        p.usd.0 as f64 / p.token.0 as f64
    }

    /// A newcomer: deposits USD, buys the minimum stake on the pool,
    /// stakes it and registers.
    /// Whether the operator joined: not when the pool cannot sell it its
    /// stake.
    fn join(&mut self, kind: Kind, region: usize, subnet: Option<u32>, line_bps: Option<u64>) -> Result<bool, SimError> {
        let label = self.next_label;
        self.next_label += 1;
        let id = account_id(&format!("op{label}"));
        let ctx = self.ctx();
        let stake = self.state.params.min_node_stake;
        // Enough USD for the stake at the current price plus slippage.
        let budget = usd(f_twy(stake) * self.price() * 1.2 + 1.0);
        let gateway = self.gateway;
        self.apply(ctx, gateway, &TxBody::Deposit { to: id, amount: budget }, "a deposit")?;
        let account = self.state.account_index[&id];
        let Some(usd_in) = self.stake_cost_usd_micro() else {
            return Ok(false); // the pool cannot sell that much: nobody joins
        };
        let have = self.state.accounts[account as usize].usd.0;
        if usd_in > have {
            let top_up = Usd(usd_in - have);
            self.apply(ctx, gateway, &TxBody::Deposit { to: id, amount: top_up }, "a deposit")?;
        }
        let swap = TxBody::Swap { sell: Amount::Usd(Usd(usd_in)), min_out: 0 };
        self.apply(self.trading_ctx(), account, &swap, "buying stake")?;
        let bought = self.state.accounts[account as usize].token;
        let stake_now = bought.min(stake);
        if stake_now < stake {
            return Ok(false);
        }
        self.apply(ctx, account, &TxBody::Stake { amount: stake_now }, "staking")?;
        self.spawn(kind, account, region, label, subnet, line_bps)?;
        Ok(true)
    }

    /// The micro-USD that buys the minimum stake on the pool now
    /// (constant product, with its fee); `None` when the pool cannot sell
    /// that much.
    fn stake_cost_usd_micro(&self) -> Option<u128> {
        let pool = &self.state.pool;
        let fee = 1.0 - self.state.params.pool_fee_ppm as f64 / 1e6;
        let (t, u) = (pool.token.0 as f64, pool.usd.0 as f64);
        let need = self.state.params.min_node_stake.0 as f64;
        if need >= t {
            return None;
        }
        // At least 2 micro-USD, which is 1 after the pool's fee (at most
        // 10 %): after a crash that drained the pool's USD side, the stake
        // cost under one, whose output rounded to nothing and was refused.
        Some(((u * need / (t - need) / fee * 1.0001) as u128 + 1).max(2))
    }

    /// Deregisters the operator's node and starts its unbonding; false
    /// while the ledger refuses (its node holds a strike, which a
    /// measurement must decide first), and then it is tried again each day
    /// and the node stays measured. (The operator was marked gone whatever
    /// the ledger said: its node was never measured again, its strike
    /// never decided, its liar's and vouchers' slashes never came, and its
    /// stake stayed locked, counted as a node for ever.)
    fn leave(&mut self, i: usize) -> bool {
        let ctx = self.ctx();
        let (active, account, node) = (self.ops[i].active, self.ops[i].account, self.ops[i].node);
        if !active {
            return false;
        }
        if self.state.nodes[node as usize].active {
            if apply_unsigned(&mut self.state, ctx, account, &TxBody::DeregisterNode).is_err() {
                self.ops[i].leaving = true;
                return false;
            }
            self.deregistered_since_the_epoch[self.state.nodes[node as usize].region.index()] += 1;
        }
        let op = &mut self.ops[i];
        op.active = false;
        op.leaving = false;
        self.supply = None;
        let staked = self.state.accounts[account as usize].staked;
        if !staked.is_zero() && apply_unsigned(&mut self.state, ctx, account, &TxBody::BeginUnbond { amount: staked }).is_ok() {
            self.ops[i].exiting_until_secs = Some(ctx.time_secs + self.state.params.unbonding_secs);
        }
        true
    }

    /// Sells `share` of the account's liquid tokens on the pool.
    fn sell(&mut self, account: AccountIdx, share: f64) {
        let have = self.state.accounts[account as usize].token;
        if let Some(amount) = sale_amount(have, have, share) {
            let ctx = self.trading_ctx();
            sell_tokens_each(&mut self.state, ctx, &[(account, amount)], &OneThread);
        }
    }

    /// Today's shocks; returns how many operators an exodus took (a row's
    /// `operators_left` missed them).
    fn apply_shocks(&mut self) -> u32 {
        let day = self.day;
        let mut left = 0;
        for shock in self.scenario.shocks.clone() {
            match shock {
                Shock::PriceCrash { day: d, sell_twy } if d == day => {
                    let whale = self.whale;
                    let have = f_twy(self.state.accounts[whale as usize].token);
                    self.sell(whale, (sell_twy / have.max(1e-9)).min(1.0));
                }
                Shock::Exodus { day: d, share } if d == day => {
                    for i in 0..self.ops.len() {
                        if self.ops[i].active && self.ops[i].kind == Kind::Honest && self.rng.chance(share) && self.leave(i) {
                            left += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        left
    }

    fn demand_factor(&self) -> f64 {
        let mut f = 1.0;
        for s in &self.scenario.shocks {
            if let Shock::Demand { start_day, end_day, factor } = s {
                if (*start_day..*end_day).contains(&self.day) {
                    f *= factor;
                }
            }
        }
        f
    }

    /// Whether the colluders lie today: from the attack's first day to the
    /// day before its end, as `attack_phase` starts and ends it (a scenario
    /// ends it after it starts).
    fn colluding_today(&self) -> bool {
        self.scenario.attack.as_ref().is_some_and(|a| (a.start_day..a.end_day).contains(&self.day))
    }

    /// The attack's day: its nodes join on its first day and leave on its
    /// last. Returns how many nodes joined and how many left today: they
    /// are the day's joiners and leavers too (`nodes` changed by them
    /// with neither counted).
    fn attack_phase(&mut self) -> Result<(u32, u32), SimError> {
        let Some(a) = self.scenario.attack.clone() else { return Ok((0, 0)) };
        let (mut joined, mut left) = (0, 0);
        if self.day == a.start_day {
            // The sybil farm: one line, many identities, one /24.
            let region = 0;
            for _ in 0..a.sybil_nodes {
                joined += u32::from(self.join(Kind::Sybil, region, Some(7), None)?);
            }
            if a.sybil_nodes > 0 {
                for _ in 0..CONTROL_NODES {
                    joined += u32::from(self.join(Kind::Control, region, None, None)?);
                }
            }
            for k in 0..a.liars {
                let region = (k % 8) as usize;
                // Each liar has an honest twin on its line, joined with it.
                if self.join(Kind::Liar, region, None, None)? {
                    let line_bps = self.ops.last().map(|o| o.capacity_bps);
                    joined += 1 + u32::from(self.join(Kind::Twin, region, None, line_bps)?);
                }
            }
            let n = self.oracles.len();
            self.colluders = (0..a.colluding_oracles as usize).map(|o| self.oracles[n - 1 - o]).collect();
        }
        if self.day == a.end_day {
            for i in 0..self.ops.len() {
                // One the ledger holds back (a liar's strike) leaves later,
                // counted then (`Books::Leaves`).
                if matches!(self.ops[i].kind, Kind::Sybil | Kind::Liar | Kind::Control | Kind::Twin) && self.leave(i) {
                    left += 1;
                }
            }
        }
        // A long con's honest days are over: from now on it over-claims.
        if a.liar_honest_days > 0 && self.day == a.start_day.saturating_add(a.liar_honest_days) {
            for op in self.ops.iter_mut().filter(|o| o.active && o.kind == Kind::Liar) {
                op.claim_bps = (op.capacity_bps as f64 * a.liar_claim_factor) as u64;
            }
        }
        // A stubborn liar re-inflates its claim after the ledger resets it.
        let ctx = self.ctx();
        for op in self.ops.iter().filter(|o| o.active && o.kind == Kind::Liar) {
            let node = &self.state.nodes[op.node as usize];
            if node.active && node.spec.claimed_capacity_bps < op.claim_bps {
                let mut spec = node.spec.clone();
                spec.claimed_capacity_bps = op.claim_bps;
                let _ = apply_unsigned(&mut self.state, ctx, op.account, &TxBody::UpdateNode(spec));
            }
        }
        Ok((joined, left))
    }

    /// Prospective operators join where the expected profit is positive.
    fn joins(&mut self) -> Result<u32, SimError> {
        let p = self.scenario.population.clone();
        let price = self.price();
        // Each newcomer budgets its stake at the day's price plus 20 %
        // slippage. Bought at whatever the pool asked, a rush of
        // newcomers (who decided on the day's opening price) bought the
        // pool out: 20,000 joined in a day and the price went from $0.20
        // to $500,000.
        let stake_budget_usd_micro = self.stake_cost_usd_micro().map(|cost| cost as f64 * 1.2);
        let mut joined = 0;
        for _ in 0..p.max_joins_per_day {
            let region = self.rng.weighted(&p.region_weights);
            let capacity = self.rng.log_range(p.capacity_mbps[0], p.capacity_mbps[1]);
            let cost_day = self.rng.range(p.monthly_cost_usd[0], p.monthly_cost_usd[1]) / 30.0;
            // Rewards and USD income both: churn counts both, and in a
            // hybrid design the USD alone may pay.
            let per_mbps = self.region_reward_per_mbps_day[region] * price + self.region_income_usd_per_mbps_day[region];
            let expected = per_mbps * capacity;
            // Counted only if it joined (a row counted joins the pool
            // could not sell a stake for).
            if expected > cost_day * 1.2 {
                let affordable = self.stake_cost_usd_micro().zip(stake_budget_usd_micro).is_some_and(|(cost, budget)| cost as f64 <= budget);
                if !affordable {
                    break;
                }
                if self.join(Kind::Honest, region, None, None)? {
                    joined += 1;
                }
            }
        }
        Ok(joined)
    }

    /// Consumers in each region buy bandwidth hour by hour from the nodes
    /// online then; their USD arrives through the gateway. Returns per
    /// region (served GB, unserved GB, paid USD, liquidity, capacity
    /// Gbit/s, demand Gbit/s), and the payments to make (`pay`).
    fn serve(&mut self) -> Result<([[f64; 6]; 8], Payments), SimError> {
        let d = self.scenario.demand.clone();
        // Growth is in the consumer count (compounded daily below), so it is
        // not applied again here.
        let shock = self.demand_factor();
        // Taken out for the day and put back at its end (an error ends
        // the run anyway).
        let supply = self.supply.take().unwrap_or_else(|| Supply::of(&self.ops));
        let Supply { cap, region_weight, ref servers } = supply;
        let mut out = [[0f64; 6]; 8];
        let mut served_share = [0f64; 8];
        for r in 0..8 {
            let price_factor = libm::pow(self.region_price_usd_per_gb[r] / d.reference_price_usd_per_gb, -d.price_elasticity);
            let gb_day = self.consumers[r] * d.gb_per_consumer_per_day * shock * price_factor;
            let (mut served_gb, mut unserved_gb) = (0.0, 0.0);
            let mut covered_hours = 0;
            for (h, c) in cap[r].iter().enumerate() {
                let local = (h as u32 + UTC_OFFSET_HOURS[r]) % 24;
                // Demand peaks in the local evening (20:00), dips at 08:00.
                let phase = (local as f64 - 20.0) / 24.0 * std::f64::consts::TAU;
                let gb_hour = gb_day / 24.0 * (1.0 + d.diurnal_amplitude * libm::cos(phase));
                let demand_bps = gb_hour * 8e9 / 3600.0;
                // Nodes serve at most 80 % of capacity: headroom for bursts.
                let usable = 0.8 * c;
                if usable >= demand_bps {
                    covered_hours += 1;
                } else {
                    unserved_gb += (demand_bps - usable) * 3600.0 / 8e9;
                }
                served_gb += demand_bps.min(usable) * 3600.0 / 8e9;
            }
            let liquidity = covered_hours as f64 / 24.0;
            let cap_avg = cap[r].iter().sum::<f64>() / 24.0;
            // Unserved summed hour by hour, as served is: exactly 0 when
            // every hour was covered. The day's demand less what was
            // served left float noise of 1e-12 GB there (the hours' demand
            // sums to the day's only up to rounding).
            out[r] = [served_gb, unserved_gb, 0.0, liquidity, cap_avg / 1e9, gb_day * 8.0 / 86_400.0];
            served_share[r] = served_gb;
            if liquidity < 0.5 {
                self.unserved_days[r] += 1;
            } else {
                self.unserved_days[r] = 0;
            }
            if self.unserved_days[r] >= d.leave_after_unserved_days {
                self.consumers[r] *= 0.9;
            }
        }
        // Pay each node its share of the region's served traffic, in
        // proportion to the capacity-hours it was online: decided by ranges
        // of the active operators (`Supply::servers`) on the run's threads (one
        // pass streamed through every 128-byte operator on this thread
        // alone), in operator order within a range and the ranges in order.
        let ctx = self.ctx();
        let helpers = self.helpers_for(servers.len());
        let ranges = ranges(servers.len(), helpers.parts(servers.len()));
        let mut payments = std::mem::take(&mut self.payments);
        payments.resize_with(ranges.len(), Vec::new);
        let mut paid_micro = vec![[0u128; 8]; ranges.len()];
        let parts = payments.iter_mut().zip(paid_micro.iter_mut()).zip(ranges).collect();
        type Part<'a> = ((&'a mut Vec<Payment>, &'a mut [u128; 8]), (usize, usize));
        helpers.run(parts, &|((out, part_paid), (start, end)): Part| {
            out.clear();
            // Summed here and stored once: the parts' sums are neighbours
            // in memory, and adding to them in place shared their cache
            // lines between the threads (3x the pass's time).
            let mut paid = [0u128; 8];
            for server in &servers[start..end] {
                let region = server.region as usize;
                if region_weight[region] <= 0.0 {
                    continue;
                }
                let gb = served_share[region] * server.serving_bps as f64 * server.hours_online as f64 / region_weight[region];
                let bytes = (gb * 1e9) as u64;
                let amount = cost_of_bytes(server.price_usd_micro_per_gib, bytes);
                if !amount.is_zero() {
                    out.push((server.op, server.node, region, amount, bytes));
                    paid[region] += amount.0;
                }
            }
            *part_paid = paid;
        });
        // What each region's consumers paid, summed exactly (micro-USD) by
        // the parts: a sum of floats in operator order was a pass on this
        // thread alone, over every payment.
        let paid: [f64; 8] = std::array::from_fn(|r| u128_to_f64(paid_micro.iter().map(|p| p[r]).sum()) / 1e6);
        // Consumers' USD arrives through the gateway, then pays the nodes.
        for (r, &paid_usd) in paid.iter().enumerate() {
            if paid_usd > 0.0 {
                let to = self.state.accounts[self.consumer_accounts[r] as usize].id;
                let amount = usd(paid_usd + 1.0);
                let gateway = self.gateway;
                self.apply(ctx, gateway, &TxBody::Deposit { to, amount }, "consumer deposit")?;
            }
        }
        for r in 0..8 {
            out[r][2] = paid[r];
            // Served bytes that paid nothing (each node's share rounded
            // down to no micro-dollar) say nothing of the price: as $0 per
            // GB, they made the next day's demand infinite.
            if out[r][0] > 0.0 && paid[r] > 0.0 {
                self.region_price_usd_per_gb[r] = paid[r] / out[r][0];
            }
            // Consumers arrive with growth (compounded daily).
            self.consumers[r] *= libm::pow(1.0 + d.growth_per_year, 1.0 / 365.0);
        }
        self.supply = Some(supply);
        Ok((out, payments))
    }

    /// Makes the payments `serve` decided, through the ledger, on the
    /// parts of the state a payment changes, and adds the USD each one
    /// brought its node to its operator's `income_usd`.
    fn pay(
        parts: &mut PaymentParts<'_>,
        consumer_accounts: &[AccountIdx; 8],
        payments: &[Vec<Payment>],
        day: u64,
        income_usd: &mut [f64],
    ) -> Result<(), SimError> {
        for &(i, node, r, amount, bytes) in payments.iter().flatten() {
            let (to_node, _) = pay_node_in(parts, consumer_accounts[r], node, amount, bytes)
                .map_err(|e| SimError::Setup { day, what: "a payment".into(), why: e.to_string() })?;
            income_usd[i] += u128_to_f64(to_node.0) / 1e6;
        }
        Ok(())
    }

    /// The day's payments (`serve`, `pay`) and measurements. The oracles
    /// are assigned while the payments are made: the payments change no
    /// node and no oracle (they borrow the state apart from the node
    /// records, `State::payment_parts`), so with threads to spare other
    /// threads assign meanwhile. Then every thread measures a range of
    /// nodes, each from a random stream of its own (`Keyed`: the run, the
    /// day, the node). The output is the same bytes on any number of
    /// threads.
    fn serve_and_measure(&mut self) -> Result<[[f64; 6]; 8], SimError> {
        let assigner = Assigner::new(&self.state);
        let (served, payments) = self.serve()?;
        let day = self.day;
        let helpers = self.helpers_for(self.ops.len());
        // Not cleared first: the assignment writes every entry (a fill of
        // 2.8 MB a day at 100,000 operators, on this thread alone).
        self.assigned.resize(self.ops.len(), [NO_ORACLE; MAX_ORACLES_PER_NODE]);
        self.income_usd.clear();
        self.income_usd.resize(self.ops.len(), 0.0);
        let (nodes, mut parts) = self.state.payment_parts();
        let assign = |(ops, out): (&[Operator], &mut [[OracleIdx; MAX_ORACLES_PER_NODE]])| {
            for (op, out) in ops.iter().zip(out) {
                *out = if is_measured(nodes, op) { assigner.assign_in(nodes, op.node).padded(NO_ORACLE) } else { [NO_ORACLE; MAX_ORACLES_PER_NODE] };
            }
        };
        let chunks: Vec<(&[Operator], &mut [[OracleIdx; MAX_ORACLES_PER_NODE]])> =
            self.ops.chunks(MEASURE_CHUNK).zip(self.assigned.chunks_mut(MEASURE_CHUNK)).collect();
        let (consumer_accounts, income_usd) = (&self.consumer_accounts, &mut self.income_usd);
        helpers.run_beside(chunks, &assign, || Self::pay(&mut parts, consumer_accounts, &payments, day, income_usd))?;
        self.payments = payments;
        // Debug builds check the assignments against ones made from the
        // state as it is now, after the payments.
        #[cfg(debug_assertions)]
        {
            let now = Assigner::new(&self.state);
            for (op, a) in self.ops.iter().zip(&self.assigned) {
                if is_measured(&self.state.nodes, op) {
                    let a: Vec<OracleIdx> = a.iter().copied().take_while(|&o| o != NO_ORACLE).collect();
                    assert_eq!(a, now.assign(&self.state, op.node).as_slice(), "the assignment changed under the payments");
                }
            }
        }
        self.measure(&helpers);
        Ok(served)
    }

    /// The assigned oracles measure their nodes, a range of operators (and
    /// so of their nodes, which follow operator order) per part.
    fn measure(&mut self, helpers: &Helpers) {
        let colluding: Vec<bool> = {
            let mut v = vec![false; self.state.oracles.len()];
            if self.colluding_today() {
                for &acct in &self.colluders {
                    if let Some(o) = self.state.accounts[acct as usize].oracle {
                        v[o as usize] = true;
                    }
                }
            }
            v
        };
        let stream = [self.measure_seed, self.day];
        let mut parts = Vec::new();
        let mut epochs: &mut [NodeEpoch] = &mut self.state.node_epochs;
        let mut base = 0;
        let mut chunks = self.ops.chunks(MEASURE_CHUNK).zip(self.assigned.chunks(MEASURE_CHUNK)).peekable();
        while let Some((ops, assigned)) = chunks.next() {
            // This part's nodes: from its first operator's node up to the
            // next part's first.
            let first = ops[0].node as usize;
            let end = chunks.peek().map_or(base + epochs.len(), |(next, _)| next[0].node as usize);
            let (_, rest) = std::mem::take(&mut epochs).split_at_mut(first - base);
            let (mine, rest) = rest.split_at_mut(end - first);
            (epochs, base) = (rest, end);
            parts.push((ops, assigned, mine, first));
        }
        let measure = |(ops, assigned, epochs, first): (&[Operator], &[[OracleIdx; MAX_ORACLES_PER_NODE]], &mut [NodeEpoch], usize)| {
            for (op, a) in ops.iter().zip(assigned) {
                if a[0] != NO_ORACLE {
                    measure_node(&mut epochs[op.node as usize - first], op, a, &colluding, stream);
                }
            }
        };
        helpers.run(parts, &measure);
    }

    fn trade(&mut self) {
        let volume = self.scenario.market.trader_volume_usd;
        for t in 0..self.traders.len() {
            let account = self.traders[t];
            // Momentum with noise: traders follow the last move a little.
            let buy = self.rng.unit() < 0.5 + self.trader_momentum.clamp(-0.2, 0.2);
            let size = self.rng.range(0.0, 2.0 * volume);
            let ctx = self.trading_ctx();
            if buy {
                let have = self.state.accounts[account as usize].usd;
                let amount = usd(size).min(have);
                if !amount.is_zero() {
                    let _ = apply_unsigned(&mut self.state, ctx, account, &TxBody::Swap { sell: Amount::Usd(amount), min_out: 0 });
                }
            } else {
                let price = self.price().max(1e-9);
                let have = self.state.accounts[account as usize].token;
                let amount = twy(size / price).min(have);
                if !amount.is_zero() {
                    let _ = apply_unsigned(&mut self.state, ctx, account, &TxBody::Swap { sell: Amount::Token(amount), min_out: 0 });
                }
            }
        }
    }

    /// The attack's sandwich trader, while the attack runs, buys tokens
    /// with all its USD at the epoch's end, just before the burn. Returns
    /// its account and the USD it held before.
    fn buy_before_the_burn(&mut self) -> Option<(AccountIdx, Usd)> {
        let account = self.sandwich?;
        let a = self.scenario.attack.as_ref()?;
        if !(a.start_day..a.end_day).contains(&self.day) {
            return None;
        }
        let have = self.state.accounts[account as usize].usd;
        let (ctx, buy) = (self.ctx(), TxBody::Swap { sell: Amount::Usd(have), min_out: 0 });
        apply_unsigned(&mut self.state, ctx, account, &buy).ok()?;
        Some((account, have))
    }

    /// ... and sells them all right after it; what it gained or lost is
    /// the attackers'.
    fn sell_after_the_burn(&mut self, sandwiched: Option<(AccountIdx, Usd)>) {
        let Some((account, usd_before)) = sandwiched else { return };
        let have = self.state.accounts[account as usize].token;
        let (ctx, sell) = (self.ctx(), TxBody::Swap { sell: Amount::Token(have), min_out: 0 });
        let _ = apply_unsigned(&mut self.state, ctx, account, &sell);
        let usd_after = self.state.accounts[account as usize].usd;
        self.attacker_profit_usd += (usd_after.0 as f64 - usd_before.0 as f64) / 1e6;
    }

    /// The value investor: buys below the value the burn supports, sells
    /// above it (a 10 % band), at most a set share of the pool a day.
    fn trade_on_value(&mut self) {
        let m = &self.scenario.market;
        if m.value_trader_daily_share <= 0.0 {
            return;
        }
        let supply = f_twy(self.state.supply.total_token()).max(1.0);
        let fair = m.valuation_multiple * self.burn_usd_per_day * 365.0 / supply;
        let price = self.price().max(1e-12);
        let budget_usd = m.value_trader_daily_share * self.state.pool.usd.0 as f64 / 1e6;
        let account = self.value_trader;
        let ctx = self.trading_ctx();
        let sell = if price > fair * 1.1 {
            let have = self.state.accounts[account as usize].token;
            Some(Amount::Token(twy(budget_usd / price).min(have)))
        } else if price < fair * 0.9 {
            let have = self.state.accounts[account as usize].usd;
            Some(Amount::Usd(usd(budget_usd).min(have)))
        } else {
            None
        };
        if let Some(sell) = sell {
            let _ = apply_unsigned(&mut self.state, ctx, account, &TxBody::Swap { sell, min_out: 0 });
        }
    }

    /// Whether a day's pass over `items` operators or accounts is split
    /// over the run's threads.
    fn splits(&self, items: usize) -> bool {
        self.helpers().parts(items) > 1
    }

    fn helpers(&self) -> Helpers {
        Helpers { threads: self.threads }
    }

    /// The run's threads for work over `items` records: this one alone
    /// where the work is too small to split.
    fn helpers_for(&self, items: usize) -> Helpers {
        Helpers { threads: if self.splits(items) { self.threads } else { 1 } }
    }

    /// The ledger's supply check; with threads to spare, the sums over the
    /// accounts are split over them (exact integer sums: the same result).
    fn check_supply(&self) -> Result<Holdings, String> {
        let accounts = &self.state.accounts;
        if !self.splits(accounts.len()) {
            return check_supply(&self.state);
        }
        let helpers = self.helpers();
        let ranges = ranges(accounts.len(), helpers.parts(accounts.len()));
        let mut sums = vec![AccountSums::default(); ranges.len()];
        let parts = ranges.iter().map(|&(start, end)| &accounts[start..end]).zip(sums.iter_mut()).collect();
        helpers.run(parts, &|(accounts, sum): (&[Account], &mut AccountSums)| *sum = AccountSums::of(accounts));
        check_supply_with(&self.state, sums.into_iter().fold(AccountSums::default(), |a, b| a + b))
    }

    /// Runs one day. Returns the row.
    pub fn step(&mut self) -> Result<EpochRow, SimError> {
        self.day += 1;
        let price_before = self.price();
        let left_in_shocks = self.apply_shocks();
        let (joined_the_attack, left_the_attack) = self.attack_phase()?;
        let joined = joined_the_attack + self.joins()?;
        let served = self.serve_and_measure()?;
        self.trade();
        self.trade_on_value();
        let sandwiched = self.buy_before_the_burn();
        let burned_before = self.state.supply.burned_token;
        let ctx = self.ctx();
        let seed = Hash32::of(&[self.rng.next_u64().to_le_bytes(), self.day.to_le_bytes()].concat());
        let helpers = self.helpers();
        let report = end_epoch_reusing(&mut self.state, ctx, seed, &helpers, &mut self.epoch_buffers);
        let burn_usd = report.burn_usd.0 as f64 / 1e6;
        self.burn_usd_per_day = if self.day == 1 { burn_usd } else { 0.9 * self.burn_usd_per_day + 0.1 * burn_usd };
        self.sell_after_the_burn(sandwiched);
        let holdings = self.check_supply().map_err(|why| SimError::Invariant { day: self.day, why })?;
        let price = self.price();
        self.trader_momentum = if price > price_before { 0.05 } else { -0.05 };

        // Slashes: attackers pay them.
        let mut slashed = 0.0;
        for s in &report.slashes {
            slashed += f_twy(s.amount);
            let attacker = match s.reason {
                SlashReason::OverClaim { .. } => true,
                _ => self.colluders.iter().any(|&a| self.state.accounts[a as usize].id == s.account),
            };
            if attacker {
                self.attackers_slashed_twy += f_twy(s.amount);
                self.attacker_profit_usd -= f_twy(s.amount) * price;
            }
        }

        // Operators: book the day's profit, sell weekly, churn. Today's
        // sellers claim their vested rewards first, all at once: a claim
        // touches its own account alone, so the ledger may split the
        // claims over the run's threads (the same bytes as claiming each
        // just before its sale, in the loop below).
        let (booked, claimants) = self.book_each(price, ctx.time_secs);
        let helpers = self.helpers_for(claimants.len());
        let mut claims = claim_vested_each(&mut self.state, ctx, &claimants, &helpers).into_iter();
        // The day's sales, in operator order, made after the loop below
        // (`sell_tokens_each`): each sells from its own account, and the
        // loop reads and changes no seller's tokens and not the pool, so
        // the pool sees them in the same order. (One by one, each read and
        // changed its 256-byte account on this thread.) `sellers`: for each
        // weekly seller's sale, its operator, its place in `sales` and its
        // balance before it.
        let mut sales: Vec<(AccountIdx, Token)> = Vec::new();
        let mut sellers: Vec<(usize, usize, Token)> = Vec::new();
        let (mut region_reward, mut region_income_usd, mut region_mbps) = ([0f64; 8], [0f64; 8], [0f64; 8]);
        let mut left = left_in_shocks + left_the_attack;
        self.deregistered_since_the_epoch = [0; 8];
        // The quantiles of the operators' profits, worked out beside the
        // loop below from the books alone (the k-th smallest under
        // `total_cmp` is the same value in any order), on a helper that
        // waited for this thread's loop.
        let mut profits = std::mem::take(&mut self.profits);
        let mut profit_quantiles = [0f64; 3];
        let work = |(profits, out): (&mut Vec<f64>, &mut [f64; 3])| {
            profits.clear();
            profits.extend(booked.iter().filter(|b| b.counts_profit()).map(|b| b.profit_usd));
            *out = quantiles(profits, [0.1, 0.5, 0.9]);
        };
        // In operator order, on this thread: the sums are of floats (the
        // same bits only in the same order), and each exit and departure
        // goes through the ledger, where it changes what the ledger lets
        // the next operator do.
        self.helpers().run_beside(vec![(&mut profits, &mut profit_quantiles)], &work, || for (i, today) in booked.iter().enumerate() {
            // Claimed for every seller, in this order (`claimants`).
            let claimed = if today.sells { claims.next() } else { None };
            if today.exit_due {
                let (account, kind, sell_share) = (self.ops[i].account, self.ops[i].kind, self.ops[i].sell_share);
                let _ = apply_unsigned(&mut self.state, ctx, account, &TxBody::WithdrawUnbonded);
                let _ = apply_unsigned(&mut self.state, ctx, account, &TxBody::ClaimVested);
                let have = self.state.accounts[account as usize].token;
                if let Some(amount) = sale_amount(have, have, if kind == Kind::Honest { sell_share } else { 1.0 }) {
                    sales.push((account, amount));
                }
                self.ops[i].exiting_until_secs = None;
            }
            let churn = match today.books {
                Books::Gone => continue,
                Books::Leaves => {
                    if self.leave(i) {
                        left += 1;
                    }
                    continue;
                }
                Books::Booked { churn } => churn,
            };
            let (region, reward) = (today.region as usize, today.reward_twy);
            region_reward[region] += reward;
            region_income_usd[region] += self.income_usd[i];
            region_mbps[region] += today.serving_mbps;
            match today.kind {
                Kind::Honest | Kind::Farmer => {}
                // What the attack gained over the same line run honestly.
                Kind::Sybil => self.attacker_profit_usd += reward * price,
                Kind::Control => self.attacker_profit_usd -= reward * price / CONTROL_NODES as f64,
                // What a liar gained over its twin, on the same line
                // honestly: before its slash, and all along when its
                // over-claim is small enough to be paid on the claim.
                Kind::Liar => self.attacker_profit_usd += reward * price,
                Kind::Twin => self.attacker_profit_usd -= reward * price,
            }
            // Its share of the rewards that reached its balance since its
            // last sale: the tokens it kept from earlier weeks stay kept (a
            // share of the whole balance sold, in steady state, every new
            // reward; a share of what the claim released missed what the
            // ledger releases or credits without one, all of it with no
            // vesting). An operator that `Leaves` does not sell: it waits
            // for its strike to be decided. (Its place in a peekable list
            // of the day's sellers was never taken, which stopped every
            // sale after it that day.)
            if let Some(claimed) = claimed {
                let (account, share, have) = (today.account, today.sell_share, claimed.balance);
                let gained = Token(have.0.saturating_sub(self.liquid_after_sale[i].0));
                match sale_amount(gained, have, share) {
                    Some(amount) => {
                        sellers.push((i, sales.len(), have));
                        sales.push((account, amount));
                    }
                    None => self.liquid_after_sale[i] = have,
                }
            }
            if churn && self.leave(i) {
                left += 1;
            }
        });
        self.profits = profits;
        let helpers = self.helpers_for(sales.len());
        let bought = sell_tokens_each(&mut self.state, ctx, &sales, &helpers);
        for (i, k, have) in sellers {
            let sold = if bought[k].is_some() { sales[k].1 } else { Token::ZERO };
            self.liquid_after_sale[i] = Token(have.0 - sold.0);
        }
        self.booked = booked;
        for r in 0..8 {
            let per_mbps = |x: f64| if region_mbps[r] > 0.0 { x / region_mbps[r] } else { 0.0 };
            self.region_reward_per_mbps_day[r] = per_mbps(region_reward[r]);
            self.region_income_usd_per_mbps_day[r] = per_mbps(region_income_usd[r]);
        }

        let [p10, p50, p90] = profit_quantiles;
        let mut row = EpochRow {
            epoch: report.epoch,
            day: self.day as f64,
            price_usd: price,
            minted_twy: f_twy(report.minted()),
            burned_twy: f_twy(Token(self.state.supply.burned_token.0 - burned_before.0)),
            total_supply_twy: f_twy(self.state.supply.total_token()),
            circulating_twy: f_twy(holdings.token_balances),
            operator_profit_p10_usd: p10,
            operator_profit_p50_usd: p50,
            operator_profit_p90_usd: p90,
            operators_joined: joined,
            operators_left: left,
            attacker_profit_usd: self.attacker_profit_usd,
            slashed_twy: slashed,
            slashes: report.slashes.len() as u32,
            ..EpochRow::default()
        };
        let (mut served_total, mut paid_total) = (0.0, 0.0);
        for (r, &region_served) in served.iter().enumerate() {
            let [served_gb, unserved_gb, paid, liquidity, cap_gbps, demand_gbps] = region_served;
            row.served_gb += served_gb;
            row.unserved_gb += unserved_gb;
            served_total += served_gb;
            paid_total += paid;
            row.liquidity_by_region[r] = liquidity;
            row.capacity_gbps_by_region[r] = cap_gbps;
            row.verified_capacity_gbps_by_region[r] =
                report.regions.get(r).map_or(0.0, |x| x.online_capacity_bps as f64 / 1e9);
            row.demand_gbps_by_region[r] = demand_gbps;
            row.multiplier_by_region[r] = report.regions.get(r).map_or(0.0, |x| x.multiplier_ppm as f64 / 1e6);
            // At the day's end: the epoch's report, less the day's
            // departures after it. (The report's count alone kept a
            // churned operator's node a day longer than the day's
            // `operators_left` said, where an exodus's left at once: the
            // change in `nodes` was not joined − left.)
            let active = report.regions.get(r).map_or(0, |x| x.active_nodes);
            row.nodes_by_region[r] = active.saturating_sub(self.deregistered_since_the_epoch[r]);
        }
        row.nodes = row.nodes_by_region.iter().sum();
        row.paid_usd = paid_total;
        // A day that served nothing keeps the last price paid (the
        // scenario's reference price before any): plotted as $0, it drew a
        // fall to a free network.
        row.consumer_price_usd_per_gb = if served_total > 0.0 {
            paid_total / served_total
        } else {
            self.rows.last().map_or(self.scenario.demand.reference_price_usd_per_gb, |r| r.consumer_price_usd_per_gb)
        };
        row.consumers = self.consumers.iter().sum::<f64>().floor();
        self.rows.push(row.clone());
        Ok(row)
    }

    /// The day's books of each operator as far as they depend on it alone
    /// (its node after the epoch, its USD income, the day's `price`): its
    /// profit booked, whether it churns, sells today or ends its
    /// unbonding. Split over the run's threads by ranges of operators, with
    /// the read of each one's node (240 bytes a record, 24 MB at 100,000
    /// nodes): the books' one pass over the 128-byte operators ran on this
    /// thread alone. What depends on other operators (the sums, the
    /// ledger) is left to `step`, in operator order.
    /// Returns the books, and the accounts of the day's sellers in operator
    /// order (the claimants: a pass over the books on this thread found
    /// them).
    fn book_each(&mut self, price: f64, now_secs: u64) -> (Vec<BookedToday>, Vec<AccountIdx>) {
        let n = self.ops.len();
        let helpers = self.helpers_for(n);
        let ranges = ranges(n, helpers.parts(n));
        let (nodes, income_usd, day) = (&self.state.nodes, &self.income_usd, self.day);
        let mut booked = std::mem::take(&mut self.booked);
        // Not cleared first: the pass writes every entry.
        booked.resize(n, BookedToday::GONE);
        let lengths = || ranges.iter().map(|&(start, end)| end - start);
        let mut sellers: Vec<Vec<AccountIdx>> = vec![Vec::new(); ranges.len()];
        let parts = split_lengths(&mut self.ops, lengths())
            .into_iter()
            .zip(split_lengths(&mut booked, lengths()))
            .zip(sellers.iter_mut())
            .zip(ranges.iter().map(|r| r.0));
        type Part<'a> = (((&'a mut [Operator], &'a mut [BookedToday]), &'a mut Vec<AccountIdx>), usize);
        helpers.run(parts.collect(), &|(((ops, out), sellers), start): Part| {
            for ((op, today), i) in ops.iter_mut().zip(out.iter_mut()).zip(start..) {
                let node = &nodes[op.node as usize];
                // Vested rewards are sold weekly (farmers: daily).
                let sells = op.active && node.active && (op.kind == Kind::Farmer || (day + i as u64).is_multiple_of(7));
                if sells {
                    sellers.push(op.account);
                }
                let exit_due = op.exiting_until_secs.is_some_and(|until| now_secs >= until);
                let (kind, region, account) = (op.kind, op.region as u8, op.account);
                *today = BookedToday { sells, exit_due, kind, region, account, sell_share: op.sell_share, ..BookedToday::GONE };
                if !op.active {
                    continue;
                }
                if !node.active || op.leaving {
                    today.books = Books::Leaves;
                    continue;
                }
                let reward = f_twy(node.last_reward);
                let profit = reward * price + income_usd[i] - op.daily_cost_usd;
                op.profit_usd += profit;
                op.days_active += 1;
                op.unprofitable_days = if profit < 0.0 { op.unprofitable_days + 1 } else { 0 };
                let churn = op.unprofitable_days >= op.churn_after_days && matches!(op.kind, Kind::Honest | Kind::Farmer);
                // What it serves: a sybil farm's line once, not once per
                // identity (which showed fifty lines sharing the rewards).
                let serving_mbps = op.serving_bps as f64 / 1e6;
                today.books = Books::Booked { churn };
                (today.reward_twy, today.profit_usd, today.serving_mbps) = (reward, profit, serving_mbps);
            }
        });
        (booked, sellers.concat())
    }

    /// Runs every day, calling `progress(day)` after each.
    pub fn run(self, seed: u64, progress: &(dyn Fn(u64) + Sync)) -> Result<RunOutput, SimError> {
        // The split passes borrow the day's state, so their helpers are a
        // pool's threads for the whole run, with this run's days on one of
        // them (`with_helpers`).
        let pool = (self.threads > 1).then(|| rayon::ThreadPoolBuilder::new().num_threads(self.threads).build());
        match pool {
            Some(Ok(pool)) => pool.install(|| self.run_days(seed, progress)),
            Some(Err(e)) => Err(SimError::Setup { day: 0, what: "the run's threads".into(), why: e.to_string() }),
            None => self.run_days(seed, progress),
        }
    }

    fn run_days(mut self, seed: u64, progress: &(dyn Fn(u64) + Sync)) -> Result<RunOutput, SimError> {
        for _ in 0..self.scenario.run.days {
            self.step()?;
            progress(self.day);
        }
        Ok(self.finish(seed))
    }

    fn finish(mut self, seed: u64) -> RunOutput {
        let attack = self.attack_outcome();
        let rows = std::mem::take(&mut self.rows);
        let n = rows.len();
        // Burn ≥ mint for 30 days in a row, from this epoch on.
        let mut burn_ge_mint_epoch = None;
        let mut streak = 0;
        for (i, r) in rows.iter().enumerate() {
            if r.burned_twy >= r.minted_twy && r.minted_twy + r.burned_twy > 0.0 {
                streak += 1;
                if streak == 30.min(n) {
                    burn_ge_mint_epoch = Some(rows[i + 1 - streak].epoch);
                    break;
                }
            } else {
                streak = 0;
            }
        }
        let tail = &rows[n.saturating_sub(90)..];
        // Not a number when no region wanted anything (it read 100 %, and
        // a report marked that run the best).
        let worst_regional_liquidity = tail
            .iter()
            .flat_map(|r| r.liquidity_by_region.iter().zip(&r.demand_gbps_by_region).filter(|(_, d)| **d > 0.0).map(|(l, _)| *l))
            .fold(None, |worst: Option<f64>, l| Some(worst.map_or(l, |w| w.min(l))))
            .unwrap_or(f64::NAN);
        let early: Vec<&Operator> = self.ops.iter().filter(|o| o.kind == Kind::Honest && o.first_day <= 30).collect();
        let operator_retention = if early.is_empty() {
            0.0
        } else {
            early.iter().filter(|o| o.active).count() as f64 / early.len() as f64
        };
        // From the price at launch: a fall on day 1 is a fall (the peak
        // started at day 1's price, after it).
        let mut peak = self.genesis_price_usd;
        let mut drawdown = 0f64;
        for r in &rows {
            peak = peak.max(r.price_usd);
            if peak > 0.0 {
                drawdown = drawdown.max(1.0 - r.price_usd / peak);
            }
        }
        let last = rows.last().cloned().unwrap_or_default();
        let summary = RunSummary {
            scenario: self.scenario.name.clone(),
            seed,
            epochs: n as u64,
            burn_ge_mint_epoch,
            worst_regional_liquidity,
            operator_retention,
            price_drawdown: drawdown,
            final_price_usd: last.price_usd,
            final_nodes: last.nodes,
            final_circulating_twy: last.circulating_twy,
            attacker_profit_usd: self.attacked().then_some(self.attacker_profit_usd),
            attackers_slashed_twy: self.attackers_slashed_twy,
            colluders_slashed_twy: f_twy(attack.colluding_slashed),
            colluding_oracles_slashed: attack.colluding_oracles_slashed,
            honest_oracles_slashed: attack.honest_oracles_slashed,
            total_minted_twy: rows.iter().map(|r| r.minted_twy).sum(),
            total_burned_twy: rows.iter().map(|r| r.burned_twy).sum(),
            // Not a number when the last day served nothing: a dead
            // network's $0 was the best price in a comparison.
            consumer_price_usd_per_gb: if last.served_gb > 0.0 { last.consumer_price_usd_per_gb } else { f64::NAN },
        };
        let operator_monthly_profit_usd = self
            .ops
            .iter()
            .filter(|o| o.kind == Kind::Honest && o.days_active > 0)
            .map(|o| o.profit_usd / o.days_active as f64 * 30.0)
            .collect();
        RunOutput { rows, summary, operator_monthly_profit_usd }
    }
}

/// What the attack earned, read from the ledger: for tests and the report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttackOutcome {
    /// Rewards of all the sybil farm's identities together.
    pub sybil_farm_rewards: Token,
    /// Rewards of one honest node on a line like the farm's, in its region:
    /// the mean of the `CONTROL_NODES` such nodes.
    pub control_rewards: Token,
    pub liars: u32,
    /// Liars slashed at least once, and their rewards and slashes.
    pub liars_slashed: u32,
    pub liar_rewards: Token,
    pub liar_slashed: Token,
    /// Rewards of the liars' honest twins (`Kind::Twin`), all together.
    pub twin_rewards: Token,
    pub colluding_oracles: u32,
    /// Colluding oracles slashed at least once, and their slashes.
    pub colluding_oracles_slashed: u32,
    pub colluding_slashed: Token,
    /// Honest oracles slashed at least once (for any reason).
    pub honest_oracles_slashed: u32,
}

impl Sim {
    pub fn attack_outcome(&self) -> AttackOutcome {
        let rewards = |o: &Operator| self.state.nodes[o.node as usize].total_rewards;
        let slashed = |o: &Operator| self.state.nodes[o.node as usize].total_slashed;
        let mut out = AttackOutcome::default();
        for o in &self.ops {
            match o.kind {
                Kind::Sybil => out.sybil_farm_rewards.0 += rewards(o).0,
                Kind::Control => out.control_rewards.0 += rewards(o).0 / CONTROL_NODES as u128,
                Kind::Liar => {
                    out.liars += 1;
                    out.liars_slashed += u32::from(!slashed(o).is_zero());
                    out.liar_rewards.0 += rewards(o).0;
                    out.liar_slashed.0 += slashed(o).0;
                }
                Kind::Twin => out.twin_rewards.0 += rewards(o).0,
                _ => {}
            }
        }
        for oracle in &self.state.oracles {
            let slashed = oracle.total_slashed;
            if self.colluders.contains(&oracle.account) {
                out.colluding_oracles += 1;
                out.colluding_oracles_slashed += u32::from(!slashed.is_zero());
                out.colluding_slashed.0 += slashed.0;
            } else {
                out.honest_oracles_slashed += u32::from(!slashed.is_zero());
            }
        }
        out
    }

    pub fn day(&self) -> u64 {
        self.day
    }

    /// Whether an attacker has acted by now: the scenario has one, and
    /// its attack has started.
    fn attacked(&self) -> bool {
        self.scenario.attack.as_ref().is_some_and(|a| a.has_attackers() && self.day >= a.start_day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    /// Each label a public subnet of its own, clear of the oracles' and
    /// the farm's: past about 5.8 million labels the IPv4 scheme reached
    /// 100.64.0.0/10, then loopback, 172.31.0.0/16 and multicast.
    #[test]
    fn every_label_gets_a_public_subnet_of_its_own() {
        let subnet = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                assert!(!v4.is_private() && !v4.is_loopback() && !v4.is_multicast() && !v4.is_broadcast(), "{v4}");
                assert!(!(o[0] == 100 && o[1] & 0xc0 == 64), "{v4} is in the oracles' 100.64.0.0/10");
                u128::from(o[0]) << 16 | u128::from(o[1]) << 8 | u128::from(o[2])
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                assert_eq!(s[0], 0x2a00, "{v6}");
                1 << 64 | u128::from(s[1]) << 16 | u128::from(s[2])
            }
        };
        let mut seen = std::collections::HashSet::new();
        for start in [0, IPV4_LABELS - 300, 5_830_000, 7_700_000, 10_600_000, 14_000_000, u32::MAX - 300] {
            for i in start..=start.saturating_add(300) {
                assert!(seen.insert(subnet(node_ip(i))), "label {i} shares a subnet");
            }
        }
    }

    /// The scenario at a test's scale (150 operators, 8,000 consumers).
    fn small(file: &str) -> Scenario {
        let path = format!("{}/../../scenarios/{file}.toml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let s = Scenario::from_toml(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        let s = s.with_override("population.operators", "150").unwrap_or_else(|e| panic!("{e}"));
        s.with_override("population.consumers", "8000").unwrap_or_else(|e| panic!("{e}"))
    }

    /// `operator_profit_p*` are over the population's honest operators
    /// alone: the attack's honest twins and control nodes (online all day,
    /// the controls on the farm's 1 Gbit/s line) were counted with them,
    /// 50 of about 200 here.
    #[test]
    fn operator_profit_quantiles_are_over_the_honest_operators_alone() {
        let s = small("sybil-and-liars").with_override("attack.start_day", "3").unwrap_or_else(|e| panic!("{e}"));
        let mut sim = Sim::new(&s, 7).unwrap_or_else(|e| panic!("{e}"));
        let mut row = EpochRow::default();
        for _ in 0..10 {
            row = sim.step().unwrap_or_else(|e| panic!("{e}"));
        }
        let active = |kind: Kind| sim.ops.iter().filter(|o| o.active && o.kind == kind).count();
        assert!(active(Kind::Twin) > 0 && active(Kind::Control) > 0, "the attack's honest nodes run");
        let mut honest: Vec<f64> = sim
            .booked
            .iter()
            .filter(|b| matches!(b.books, Books::Booked { .. }) && b.kind == Kind::Honest)
            .map(|b| b.profit_usd)
            .collect();
        let want = quantiles(&mut honest, [0.1, 0.5, 0.9]);
        assert_eq!([row.operator_profit_p10_usd, row.operator_profit_p50_usd, row.operator_profit_p90_usd], want);
    }

    /// An operator waiting to leave (the ledger refused its node's
    /// deregistration) does not sell, and the sellers after it on the same
    /// day still do: it once stopped every sale after it that day.
    #[test]
    fn an_operator_waiting_to_leave_does_not_stop_the_sales_after_it() {
        let path = format!("{}/../../scenarios/burn-and-mint.toml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let s = Scenario::from_toml(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        let s = s.with_override("population.operators", "150").unwrap_or_else(|e| panic!("{e}"));
        let s = s.with_override("population.consumers", "8000").unwrap_or_else(|e| panic!("{e}"));
        let mut sim = Sim::new(&s, 3).unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..20 {
            sim.step().unwrap_or_else(|e| panic!("{e}"));
        }
        // Tomorrow's sellers among the honest operators, in order: the
        // first one is made to wait to leave, the others must sell.
        let tomorrow = sim.day + 1;
        let sellers: Vec<usize> = (0..sim.ops.len())
            .filter(|&i| {
                let op = &sim.ops[i];
                op.active && op.kind == Kind::Honest && (tomorrow + i as u64).is_multiple_of(7)
            })
            .collect();
        assert!(sellers.len() > 3, "{sellers:?}");
        sim.ops[sellers[0]].leaving = true;
        let before: Vec<Token> = sellers.iter().map(|&i| sim.liquid_after_sale[i]).collect();
        sim.step().unwrap_or_else(|e| panic!("{e}"));
        let sold: Vec<bool> = sellers.iter().zip(&before).map(|(&i, b)| sim.liquid_after_sale[i] != *b).collect();
        assert!(!sold[0], "the operator waiting to leave sold");
        assert!(sold[1..].iter().all(|&s| s), "sellers after it that sold: {sold:?}");
    }
}
