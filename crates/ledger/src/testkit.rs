//! A small world for tests, benchmarks, the demo and the simulator: named
//! deterministic keys, nonces tracked for you, and one-line helpers for the
//! common transactions. Everything still goes through [`apply`] and
//! [`end_epoch`]; nothing here bypasses a rule.

use crate::economics::EpochReport;
use crate::genesis::{Allocation, Genesis};
use crate::state::{Ctx, State};
use crate::{apply, end_epoch, Event, Params, TxError};
use std::collections::BTreeMap;
use std::net::IpAddr;
use tollway_types::{
    AccountId, Amount, CountryCode, Hash32, Measurement, MeasurementOutcome, MeasurementReport, NodeSpec,
    Receipt, SignedTx, SigningKey, Token, Tx, TxBody, Usd,
};

pub const CHAIN_ID: &str = "tollway-test";
pub const GATEWAY: &str = "gateway";

pub struct World {
    pub state: State,
    pub now_secs: u64,
    pub height: u64,
    keys: BTreeMap<String, SigningKey>,
    /// The debug builds' second run of each epoch writes its rows into the
    /// last epoch's (`end_epoch_reusing`), as the simulator does.
    buffers: crate::EpochBuffers,
}

/// What a labelled account starts with.
pub struct Funding {
    pub label: String,
    pub token: Token,
    pub usd: Usd,
    pub staked: Token,
}

/// A transaction of a labelled account that the ledger refused.
#[derive(Debug, thiserror::Error)]
#[error("{label}: {kind} rejected: {error}")]
pub struct Rejected {
    pub label: String,
    pub kind: &'static str,
    pub error: TxError,
}

pub fn fund(label: &str, token: u128, usd: u128, staked: u128) -> Funding {
    Funding { label: label.into(), token: Token::units(token), usd: Usd::units(usd), staked: Token::units(staked) }
}

pub fn key(label: &str) -> SigningKey {
    SigningKey::from_label(label)
}

pub fn id(label: &str) -> AccountId {
    key(label).public()
}

/// A node spec in `country` at `ip`, claiming `claimed_bps`.
pub fn node_spec(country: &str, ip: &str, claimed_bps: u64) -> NodeSpec {
    NodeSpec {
        country: CountryCode::parse(country).unwrap_or(CountryCode(*b"DE")),
        addrs: vec![ip.parse().unwrap_or(IpAddr::from([192, 0, 2, 1]))],
        port_first: 4433,
        port_last: 4440,
        tls_key_pin: [7; 32],
        claimed_capacity_bps: claimed_bps,
        price_usd_micro_per_gib: 500_000,
        price_usd_micro_per_hour: None,
    }
}

impl World {
    /// A world with the given parameters, pool liquidity (whole units) and
    /// funded accounts. The gateway account always exists.
    pub fn new(params: Params, pool_token: u128, pool_usd: u128, funded: Vec<Funding>) -> World {
        let mut keys = BTreeMap::new();
        keys.insert(GATEWAY.to_string(), key(GATEWAY));
        let allocations = funded
            .iter()
            .map(|f| {
                keys.insert(f.label.clone(), key(&f.label));
                Allocation { account: id(&f.label), token: f.token, usd: f.usd, staked: f.staked }
            })
            .collect();
        let genesis = Genesis {
            chain_id: CHAIN_ID.into(),
            genesis_time_secs: 1_000_000,
            gateway: id(GATEWAY),
            params,
            allocations,
            pool_token: Token::units(pool_token),
            pool_usd: Usd::units(pool_usd),
        };
        let state = genesis.build().unwrap_or_else(|e| panic!("test genesis: {e}"));
        World { state, now_secs: 1_000_000, height: 0, keys, buffers: crate::EpochBuffers::default() }
    }

    pub fn ctx(&self) -> Ctx {
        Ctx { height: self.height, time_secs: self.now_secs }
    }

    pub fn key(&mut self, label: &str) -> SigningKey {
        self.keys.entry(label.to_string()).or_insert_with(|| key(label)).clone()
    }

    pub fn nonce(&self, label: &str) -> u64 {
        self.state.account(&id(label)).map_or(0, |a| a.nonce)
    }

    /// A signed tx from `label` with its next nonce and the minimum token fee.
    pub fn tx(&mut self, label: &str, body: TxBody) -> SignedTx {
        let fee = Amount::Token(self.state.params.min_fee_token);
        self.tx_with_fee(label, fee, body)
    }

    pub fn tx_with_fee(&mut self, label: &str, fee: Amount, body: TxBody) -> SignedTx {
        let k = self.key(label);
        Tx { chain_id: CHAIN_ID.into(), signer: k.public(), nonce: self.nonce(label), fee, body }.sign(&k)
    }

    pub fn submit(&mut self, label: &str, body: TxBody) -> Result<Vec<Event>, TxError> {
        let stx = self.tx(label, body);
        let ctx = self.ctx();
        apply(&mut self.state, ctx, &stx)
    }

    /// Like `submit`, paying the fee in USD (consumers hold no token).
    pub fn submit_usd_fee(&mut self, label: &str, body: TxBody) -> Result<Vec<Event>, TxError> {
        let stx = self.tx_with_fee(label, Amount::Usd(self.state.params.min_fee_usd), body);
        let ctx = self.ctx();
        apply(&mut self.state, ctx, &stx)
    }

    pub fn must(&mut self, label: &str, body: TxBody) -> Vec<Event> {
        self.try_must(label, body).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `submit`, with the refusal naming the account and the tx.
    pub fn try_must(&mut self, label: &str, body: TxBody) -> Result<Vec<Event>, Rejected> {
        let kind = body.kind();
        self.submit(label, body).map_err(|error| Rejected { label: label.into(), kind, error })
    }

    /// `client` opens a channel to `node`'s account with `escrow`, for
    /// `expires_in_secs`, paying its fee in USD; returns the channel's id.
    pub fn open_channel(&mut self, client: &str, node: &str, escrow: Usd, expires_in_secs: u64) -> Hash32 {
        let channel = tollway_types::channel_id(&id(client), self.nonce(client));
        let body = TxBody::OpenChannel { node: id(node), escrow, expires_at_secs: self.now_secs + expires_in_secs };
        self.submit_usd_fee(client, body).unwrap_or_else(|e| panic!("{client}: open-channel rejected: {e}"));
        channel
    }

    pub fn register_node(&mut self, label: &str, country: &str, ip: &str, claimed_bps: u64) {
        self.must(label, TxBody::RegisterNode(node_spec(country, ip, claimed_bps)));
    }

    /// Registers `label` as an oracle at `ip`; it becomes eligible at the
    /// next epoch.
    pub fn register_oracle(&mut self, label: &str, ip: &str) {
        self.try_register_oracle(label, ip).unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn try_register_oracle(&mut self, label: &str, ip: &str) -> Result<(), Rejected> {
        let addr = ip.parse().unwrap_or(IpAddr::from([198, 51, 100, 1]));
        self.try_must(label, TxBody::RegisterOracle { addr }).map(drop)
    }

    /// Every oracle assigned to `node` reports `throughput_bps` (each
    /// oracle's figure scaled by `per_oracle_ppm` if given) with the given
    /// latency and uptime.
    pub fn measure(&mut self, node: &str, throughput_bps: u64, latency_ms: u32, uptime_ppm: u32) {
        self.try_measure(node, throughput_bps, latency_ms, uptime_ppm).unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn try_measure(&mut self, node: &str, throughput_bps: u64, latency_ms: u32, uptime_ppm: u32) -> Result<(), Rejected> {
        let outcome = MeasurementOutcome::Measured { throughput_bps, latency_us: latency_ms * 1000 };
        self.try_report_each(node, uptime_ppm, |_| outcome).map(drop)
    }

    /// Every oracle assigned to `node` this epoch reports `outcome`.
    pub fn report(&mut self, node: &str, outcome: MeasurementOutcome, uptime_ppm: u32) {
        self.report_each(node, uptime_ppm, |_| outcome);
    }

    /// Every oracle assigned to `node` this epoch reports what `outcome_of`
    /// gives for its label. Returns the labels, in assignment order.
    pub fn report_each(
        &mut self,
        node: &str,
        uptime_ppm: u32,
        outcome_of: impl FnMut(&str) -> MeasurementOutcome,
    ) -> Vec<String> {
        self.try_report_each(node, uptime_ppm, outcome_of).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_report_each(
        &mut self,
        node: &str,
        uptime_ppm: u32,
        mut outcome_of: impl FnMut(&str) -> MeasurementOutcome,
    ) -> Result<Vec<String>, Rejected> {
        let n = self.state.node_index[&id(node)];
        let mut labels = Vec::new();
        for o in crate::assignment::assigned_oracles(&self.state, n) {
            let label = self.label_of(&self.state.oracles[o as usize].operator.clone());
            let report = MeasurementReport {
                epoch: self.state.epoch,
                measurements: vec![Measurement {
                    node: id(node),
                    outcome: outcome_of(&label),
                    uptime_ppm,
                }],
            };
            self.try_must(&label, TxBody::Report(report))?;
            labels.push(label);
        }
        Ok(labels)
    }

    /// The label whose key is `account` (only for labels this world knows).
    pub fn label_of(&self, account: &AccountId) -> String {
        self.keys
            .iter()
            .find(|(_, k)| k.public() == *account)
            .map(|(l, _)| l.clone())
            .unwrap_or_else(|| panic!("no label for {account:?}"))
    }

    /// A receipt signed by `client` for `channel`.
    pub fn receipt(&mut self, client: &str, channel: Hash32, cumulative_usd: Usd, cumulative_bytes: u64) -> tollway_types::SignedReceipt {
        let k = self.key(client);
        Receipt { chain_id: CHAIN_ID.into(), channel, cumulative_usd, cumulative_bytes }.sign(&k)
    }

    /// Advances time by one epoch and ends it, checking the supply invariant.
    pub fn end_epoch(&mut self) -> EpochReport {
        self.now_secs += self.state.params.epoch_secs;
        self.height += 1;
        let seed = Hash32::of(&self.height.to_le_bytes());
        let ctx = self.ctx();
        // Debug builds (the tests) also end the epoch with its passes split
        // into parts run last first, and its rows written over the last
        // epoch's, which must change nothing.
        let split = cfg!(debug_assertions).then(|| {
            let mut state = self.state.clone();
            let report =
                crate::end_epoch_reusing(&mut state, ctx, seed, &crate::workers::PartsBackwards(3), &mut self.buffers);
            (state, report)
        });
        let report = end_epoch(&mut self.state, ctx, seed);
        if let Some((state, split_report)) = split {
            assert_eq!(split_report, report, "the epoch's report differs when its passes are split");
            assert!(state == self.state, "the state differs when the epoch's passes are split");
        }
        if let Err(e) = crate::check_supply(&self.state) {
            panic!("after epoch {}: {e}", report.epoch);
        }
        report
    }

    /// The rewards of `label` that will not have vested when the next
    /// [`World::end_epoch`] ends: what an over-claim slash in that epoch
    /// takes its fraction of, beside the bond (ADR 0017).
    pub fn unvested_at_next_end(&self, label: &str) -> Token {
        let end_secs = self.now_secs + self.state.params.epoch_secs;
        let account = self.account(label);
        let vested = crate::economics::vesting::releasable(account, end_secs, self.state.params.vesting_secs);
        Token(account.vesting_total().0 - vested.0)
    }

    pub fn account(&self, label: &str) -> &crate::state::Account {
        self.state.account(&id(label)).unwrap_or_else(|| panic!("no account {label}"))
    }

    pub fn node(&self, label: &str) -> &crate::state::Node {
        self.state.node(&id(label)).unwrap_or_else(|| panic!("no node {label}"))
    }
}
