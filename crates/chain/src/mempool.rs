//! The mempool (DESIGN §3): txs whose signatures were checked, waiting for
//! a block. Pure: no I/O, no clock; heights come in as arguments.
//!
//! - Per account, txs wait in nonce order; a block takes an account's txs
//!   only from its next nonce on, without gaps.
//! - Across accounts, the highest fee (valued in USD at admission) goes
//!   first; ties go to the earlier arrival.
//! - Limits on everything: total txs, total bytes, txs per account, and how
//!   far ahead of the account's nonce a tx may be. A full, duplicate or
//!   replayed submission is refused with a reason, never silently dropped.
//! - A tx behind a nonce gap pays nothing until the gap fills, and leaves
//!   for free when it never does: such txs are capped apart (per account
//!   and in all), so that they cannot fill the pool and lock everyone
//!   else out, and they do not count towards a full block. How long one
//!   may wait is counted in time (admission to block time), not blocks: an
//!   idle chain makes a block only every heartbeat, and 120 blocks were
//!   two minutes while busy and two hours while idle.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use tollway_types::{AccountId, SignedTx, TxId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MempoolLimits {
    pub max_txs: usize,
    pub max_bytes: usize,
    /// Pending txs per account; also how far ahead of the account's nonce
    /// a tx may be. A flood from one account stops here.
    pub max_per_account: usize,
    /// A tx waiting behind a nonce gap is dropped by the first block whose
    /// time is more than this after the tx's admission.
    pub gap_ttl_ms: u64,
    /// Txs behind a nonce gap, per account and in all.
    pub max_gapped_per_account: usize,
    pub max_gapped: usize,
}

impl Default for MempoolLimits {
    fn default() -> MempoolLimits {
        MempoolLimits {
            max_txs: 100_000,
            max_bytes: 256 << 20,
            max_per_account: 256,
            gap_ttl_ms: 120_000,
            max_gapped_per_account: 16,
            max_gapped: 10_000,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Pending {
    pub stx: SignedTx,
    pub id: TxId,
    pub bytes: usize,
    /// The fee's value in USD base units at admission: the priority.
    pub fee_rank: u128,
    /// When it was admitted (the node's clock): a tx behind a nonce gap
    /// expires `gap_ttl_ms` after it.
    pub admitted_ms: u64,
    seq: u64,
}

impl Pending {
    pub fn new(stx: SignedTx, id: TxId, bytes: usize, fee_rank: u128) -> Pending {
        Pending { stx, id, bytes, fee_rank, admitted_ms: 0, seq: 0 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    #[error("tx {0} is already pending")]
    Duplicate(TxId),
    #[error("nonce {found} was already used by account {account}: its next nonce is {expected} (a replayed tx?)")]
    StaleNonce { account: AccountId, expected: u64, found: u64 },
    #[error("account {account} already has a pending tx with nonce {nonce}")]
    NonceTaken { account: AccountId, nonce: u64 },
    #[error("nonce {found} is too far ahead: account {account}'s next nonce is {expected} and at most {limit} may wait")]
    NonceTooFar { account: AccountId, expected: u64, found: u64, limit: usize },
    #[error(
        "nonce {found} leaves a gap after account {account}'s next nonce {expected}, and {limit} txs already wait behind gaps \
         ({scope}); send the missing nonces first"
    )]
    GapsFull { account: AccountId, expected: u64, found: u64, limit: usize, scope: &'static str },
    #[error("account {account} has {limit} txs pending, the most allowed; wait for a block")]
    AccountFull { account: AccountId, limit: usize },
    #[error("the mempool is full ({limit} txs or {limit_bytes} bytes); try again after the next block")]
    Full { limit: usize, limit_bytes: usize },
}

impl AdmitError {
    /// A stable machine-readable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            AdmitError::Duplicate(_) => "duplicate",
            AdmitError::StaleNonce { .. } => "stale_nonce",
            AdmitError::NonceTaken { .. } => "nonce_taken",
            AdmitError::NonceTooFar { .. } => "nonce_too_far",
            AdmitError::AccountFull { .. } => "account_limit",
            AdmitError::Full { .. } => "mempool_full",
            AdmitError::GapsFull { .. } => "nonce_gaps_full",
        }
    }
}

/// The block under construction, as the mempool sees it.
pub trait BlockTarget {
    /// The account's next nonce in the committed state.
    fn next_nonce(&self, account: &AccountId) -> u64;
    /// Runs the tx against the block's state; on failure, a code and a
    /// message for the submitter.
    fn apply(&mut self, p: &Pending) -> Result<(), (&'static str, String)>;
}

/// Why a pending tx left the pool without being included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub id: TxId,
    pub code: &'static str,
    pub message: String,
}

#[derive(Default)]
pub struct Mempool {
    limits: MempoolLimits,
    accounts: BTreeMap<AccountId, BTreeMap<u64, Pending>>,
    ids: HashMap<TxId, (AccountId, u64)>,
    bytes: usize,
    next_seq: u64,
    /// Per account, its txs behind a nonce gap, as last counted (`recount`:
    /// at each admission and after each block), and their sum.
    gapped: HashMap<AccountId, usize>,
    gapped_total: usize,
}

impl Mempool {
    pub fn new(limits: MempoolLimits) -> Mempool {
        Mempool { limits, ..Mempool::default() }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    pub fn contains(&self, id: &TxId) -> bool {
        self.ids.contains_key(id)
    }
    /// Txs that a block could take now (none behind a nonce gap).
    pub fn ready_len(&self) -> usize {
        self.ids.len().saturating_sub(self.gapped_total)
    }

    /// Counts again the account's txs behind a gap, its next nonce being
    /// `next_nonce`: those after the first nonce missing from its queue.
    fn recount(&mut self, account: &AccountId, next_nonce: u64) {
        let gapped = self.accounts.get(account).map_or(0, |q| {
            let mut run_end = next_nonce;
            while q.contains_key(&run_end) {
                run_end += 1;
            }
            q.range(run_end..).count()
        });
        let before = if gapped == 0 { self.gapped.remove(account) } else { self.gapped.insert(*account, gapped) };
        self.gapped_total = self.gapped_total + gapped - before.unwrap_or(0);
    }

    /// Admits a tx whose signature has been verified. `account_nonce` is the
    /// signer's next nonce in the committed state; `now_ms` the time of
    /// admission (a tx given back from an abandoned block keeps its own).
    pub fn admit(&mut self, mut p: Pending, account_nonce: u64, now_ms: u64) -> Result<(), AdmitError> {
        let account = p.stx.tx.signer;
        let nonce = p.stx.tx.nonce;
        if self.ids.contains_key(&p.id) {
            return Err(AdmitError::Duplicate(p.id));
        }
        if nonce < account_nonce {
            return Err(AdmitError::StaleNonce { account, expected: account_nonce, found: nonce });
        }
        let limit = self.limits.max_per_account;
        if nonce - account_nonce >= limit as u64 {
            return Err(AdmitError::NonceTooFar { account, expected: account_nonce, found: nonce, limit });
        }
        let queue = self.accounts.get(&account);
        if queue.is_some_and(|q| q.contains_key(&nonce)) {
            return Err(AdmitError::NonceTaken { account, nonce });
        }
        if queue.map_or(0, |q| q.len()) >= limit {
            return Err(AdmitError::AccountFull { account, limit });
        }
        if self.ids.len() >= self.limits.max_txs || self.bytes + p.bytes > self.limits.max_bytes {
            return Err(AdmitError::Full { limit: self.limits.max_txs, limit_bytes: self.limits.max_bytes });
        }
        // Behind a gap: some nonce from the account's next one up to this
        // one is not pending.
        let behind_gap = (account_nonce..nonce).any(|n| !queue.is_some_and(|q| q.contains_key(&n)));
        if behind_gap {
            let expected = account_nonce;
            let mine = self.gapped.get(&account).copied().unwrap_or(0);
            if mine >= self.limits.max_gapped_per_account {
                let limit = self.limits.max_gapped_per_account;
                return Err(AdmitError::GapsFull { account, expected, found: nonce, limit, scope: "this account's" });
            }
            if self.gapped_total >= self.limits.max_gapped {
                let limit = self.limits.max_gapped;
                return Err(AdmitError::GapsFull { account, expected, found: nonce, limit, scope: "everyone's" });
            }
        }
        p.seq = self.next_seq;
        self.next_seq += 1;
        p.admitted_ms = now_ms;
        self.bytes += p.bytes;
        self.ids.insert(p.id, (account, nonce));
        self.accounts.entry(account).or_default().insert(nonce, p);
        // It may also have filled a gap, and readied the txs after it.
        self.recount(&account, account_nonce);
        Ok(())
    }

    fn remove(&mut self, account: &AccountId, nonce: u64) -> Option<Pending> {
        let queue = self.accounts.get_mut(account)?;
        let p = queue.remove(&nonce)?;
        if queue.is_empty() {
            self.accounts.remove(account);
        }
        self.ids.remove(&p.id);
        self.bytes -= p.bytes;
        Some(p)
    }

    /// Fills a block: repeatedly takes the best-paying tx that is next in
    /// its account's nonce order and offers it to `apply` (which runs it
    /// against the block's state). Included txs leave the pool. A tx that
    /// `apply` rejects leaves with its error, and so do the same account's
    /// later txs, which can no longer become valid. `next_nonce` gives each
    /// account's committed nonce.
    pub fn fill_block(&mut self, max_txs: usize, max_bytes: usize, target: &mut impl BlockTarget) -> (Vec<Pending>, Vec<Dropped>) {
        // Heads: each account's tx at exactly its next nonce.
        let mut heap: BinaryHeap<(u128, Reverse<u64>, AccountId, u64)> = BinaryHeap::new();
        for (account, queue) in &self.accounts {
            let n = target.next_nonce(account);
            if let Some(p) = queue.get(&n) {
                heap.push((p.fee_rank, Reverse(p.seq), *account, n));
            }
        }
        let mut included = Vec::new();
        let mut dropped = Vec::new();
        let mut bytes = 0usize;
        while included.len() < max_txs {
            let Some((_, _, account, nonce)) = heap.pop() else { break };
            let Some(p) = self.accounts.get(&account).and_then(|q| q.get(&nonce)) else { continue };
            if bytes + p.bytes > max_bytes {
                // Too big for what is left of this block: it waits.
                continue;
            }
            // Whatever `apply` says, the tx leaves the pool.
            let Some(p) = self.remove(&account, nonce) else { continue };
            match target.apply(&p) {
                Ok(()) => {
                    bytes += p.bytes;
                    included.push(p);
                    if let Some(next) = self.accounts.get(&account).and_then(|q| q.get(&(nonce + 1))) {
                        heap.push((next.fee_rank, Reverse(next.seq), account, nonce + 1));
                    }
                }
                Err((code, e)) => {
                    dropped.push(Dropped { id: p.id, code, message: e.to_string() });
                    let later: Vec<u64> = self.accounts.get(&account).map(|q| q.keys().copied().collect()).unwrap_or_default();
                    for n in later {
                        let Some(q) = self.remove(&account, n) else { continue };
                        dropped.push(Dropped {
                            id: q.id,
                            code: "dropped",
                            message: format!("dropped: this account's earlier tx with nonce {nonce} was rejected ({e})"),
                        });
                    }
                    self.recount(&account, nonce);
                }
            }
        }
        (included, dropped)
    }

    /// After a block at `block_time_ms`: drops txs whose nonce is now used,
    /// and txs that have waited behind a nonce gap for longer than the limit.
    pub fn prune(&mut self, next_nonce: impl Fn(&AccountId) -> u64, block_time_ms: u64) -> Vec<Dropped> {
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (account, queue) in &self.accounts {
            let n = next_nonce(account);
            for (&nonce, p) in queue {
                if nonce < n {
                    gone.push((*account, nonce, "stale_nonce", format!("nonce {nonce} was used by another tx")));
                } else if block_time_ms.saturating_sub(p.admitted_ms) > self.limits.gap_ttl_ms && !queue.contains_key(&n) {
                    let ttl_secs = self.limits.gap_ttl_ms as f64 / 1000.0;
                    gone.push((
                        *account,
                        nonce,
                        "nonce_gap",
                        format!("waited over {ttl_secs} s for the tx with nonce {n}, which never came"),
                    ));
                }
            }
        }
        for (account, nonce, code, message) in gone {
            if let Some(p) = self.remove(&account, nonce) {
                out.push(Dropped { id: p.id, code, message });
            }
        }
        // What waits behind a gap, against the nonces the block left; an
        // account whose txs all went counts none.
        let accounts: Vec<AccountId> = self.accounts.keys().chain(self.gapped.keys()).copied().collect();
        for account in accounts {
            self.recount(&account, next_nonce(&account));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollway_types::{Amount, SigningKey, Token, Tx, TxBody, Usd};

    fn tx(label: &str, nonce: u64, fee_usd: u128) -> Pending {
        let key = SigningKey::from_label(label);
        let stx = Tx {
            chain_id: "t".into(),
            signer: key.public(),
            nonce,
            fee: Amount::Usd(Usd(fee_usd)),
            body: TxBody::Transfer { to: key.public(), amount: Amount::Token(Token(1)) },
        }
        .sign(&key);
        let id = stx.id();
        Pending::new(stx, id, 100, fee_usd)
    }

    /// Every account starts at nonce 0; `reject` names a signer whose txs fail.
    struct Target(Option<AccountId>);
    impl BlockTarget for Target {
        fn next_nonce(&self, _: &AccountId) -> u64 {
            0
        }
        fn apply(&mut self, p: &Pending) -> Result<(), (&'static str, String)> {
            match self.0 {
                Some(a) if a == p.stx.tx.signer => Err(("insufficient_funds", "insufficient balance".to_string())),
                _ => Ok(()),
            }
        }
    }

    fn limits() -> MempoolLimits {
        MempoolLimits { max_txs: 10, max_bytes: 10_000, max_per_account: 3, gap_ttl_ms: 5000, max_gapped_per_account: 3, max_gapped: 10 }
    }

    /// Txs behind a nonce gap pay nothing while they wait and leave for
    /// free: a few accounts' worth filled the pool, and everyone else was
    /// refused as `mempool_full`. They are capped apart, do not count as
    /// ready, and count again once the gap fills.
    #[test]
    fn txs_behind_a_gap_are_capped_apart_and_never_lock_out_ready_ones() {
        let tight = MempoolLimits { max_gapped_per_account: 2, max_gapped: 3, ..limits() };
        let mut m = Mempool::new(tight);
        // Nonce 0 never comes.
        m.admit(tx("spam1", 1, 1), 0, 0).unwrap();
        m.admit(tx("spam1", 2, 1), 0, 0).unwrap();
        let e = m.admit(tx("spam1", 3, 1), 0, 0);
        assert!(e.is_err(), "max_per_account is 3, this account's gaps 2: {e:?}");
        m.admit(tx("spam2", 1, 1), 0, 0).unwrap();
        let e = m.admit(tx("spam2", 2, 1), 0, 0).unwrap_err();
        assert_eq!(e.code(), "nonce_gaps_full");
        assert!(e.to_string().contains("3 txs already wait behind gaps (everyone's)"), "{e}");
        assert_eq!((m.len(), m.ready_len()), (3, 0));
        // Ready txs still come in, up to the pool's own limit.
        for i in 0..7 {
            m.admit(tx(&format!("honest{i}"), 0, 1), 0, 0).unwrap();
        }
        assert_eq!(m.ready_len(), 7);
        // The missing nonce readies spam2's: no longer behind a gap.
        let mut m = Mempool::new(tight);
        m.admit(tx("late", 1, 1), 0, 0).unwrap();
        m.admit(tx("late", 2, 1), 0, 0).unwrap();
        assert_eq!(m.ready_len(), 0);
        m.admit(tx("late", 0, 1), 0, 0).unwrap();
        assert_eq!(m.ready_len(), 3);
        // And a pruned gap frees its share.
        let mut m = Mempool::new(tight);
        m.admit(tx("gone", 1, 1), 0, 0).unwrap();
        assert_eq!(m.prune(|_| 0, 5001).len(), 1);
        assert_eq!((m.len(), m.ready_len(), m.gapped_total), (0, 0, 0));
    }

    #[test]
    fn duplicates_replays_floods_and_a_full_pool_are_refused_by_name() {
        let mut m = Mempool::new(limits());
        m.admit(tx("a", 5, 1), 5, 0).unwrap();
        assert_eq!(m.admit(tx("a", 5, 1), 5, 0).unwrap_err().code(), "duplicate");
        assert_eq!(m.admit(tx("a", 5, 2), 5, 0).unwrap_err().code(), "nonce_taken");
        assert_eq!(m.admit(tx("a", 4, 1), 5, 0).unwrap_err().code(), "stale_nonce");
        assert_eq!(m.admit(tx("a", 8, 1), 5, 0).unwrap_err().code(), "nonce_too_far");
        m.admit(tx("a", 6, 1), 5, 0).unwrap();
        m.admit(tx("a", 7, 1), 5, 0).unwrap();
        assert_eq!(m.len(), 3);
        for i in 0..7 {
            m.admit(tx(&format!("b{i}"), 0, 1), 0, 0).unwrap();
        }
        let e = m.admit(tx("c", 0, 1), 0, 0).unwrap_err();
        assert_eq!(e.code(), "mempool_full");
        assert_eq!(e.to_string(), "the mempool is full (10 txs or 10000 bytes); try again after the next block");
    }

    #[test]
    fn a_block_takes_higher_fees_first_but_each_account_in_nonce_order() {
        let mut m = Mempool::new(limits());
        m.admit(tx("low", 0, 1), 0, 0).unwrap();
        m.admit(tx("high", 1, 50), 0, 0).unwrap(); // waits for nonce 0
        m.admit(tx("high", 0, 10), 0, 0).unwrap();
        m.admit(tx("mid", 0, 20), 0, 0).unwrap();
        let (inc, dropped) = m.fill_block(10, 10_000, &mut Target(None));
        assert!(dropped.is_empty());
        let order: Vec<(String, u64)> = inc
            .iter()
            .map(|p| {
                let who = ["low", "high", "mid"]
                    .into_iter()
                    .find(|l| SigningKey::from_label(l).public() == p.stx.tx.signer)
                    .unwrap();
                (who.to_string(), p.stx.tx.nonce)
            })
            .collect();
        assert_eq!(
            order,
            vec![("mid".into(), 0), ("high".into(), 0), ("high".into(), 1), ("low".into(), 0)],
            "mid (20) before high's first (10); high's nonce 1 (50) is released by its nonce 0"
        );
        assert!(m.is_empty());
    }

    #[test]
    fn a_rejected_tx_takes_its_accounts_later_txs_with_it_and_says_why() {
        let mut m = Mempool::new(limits());
        m.admit(tx("a", 0, 1), 0, 0).unwrap();
        m.admit(tx("a", 1, 1), 0, 0).unwrap();
        m.admit(tx("b", 0, 1), 0, 0).unwrap();
        let a = SigningKey::from_label("a").public();
        let (inc, dropped) = m.fill_block(10, 10_000, &mut Target(Some(a)));
        assert_eq!(inc.len(), 1);
        assert_eq!(dropped.len(), 2);
        assert_eq!(dropped[0].code, "insufficient_funds");
        assert!(dropped[1].message.contains("earlier tx with nonce 0 was rejected"), "{}", dropped[1].message);
        assert!(m.is_empty());
    }

    #[test]
    fn a_gap_waits_then_expires_and_block_limits_hold() {
        let mut m = Mempool::new(limits());
        m.admit(tx("a", 2, 1), 0, 0).unwrap();
        let (inc, _) = m.fill_block(10, 10_000, &mut Target(None));
        assert!(inc.is_empty(), "nonce 2 cannot go before 0 and 1");
        assert!(m.prune(|_| 0, 5000).is_empty());
        let d = m.prune(|_| 0, 5001);
        assert_eq!(d[0].code, "nonce_gap");
        assert_eq!(d[0].message, "waited over 5 s for the tx with nonce 0, which never came");
        for i in 0..5 {
            m.admit(tx(&format!("x{i}"), 0, 1), 0, 0).unwrap();
        }
        let (inc, _) = m.fill_block(2, 10_000, &mut Target(None));
        assert_eq!(inc.len(), 2);
        let (inc, _) = m.fill_block(10, 250, &mut Target(None));
        assert_eq!(inc.len(), 2, "250 bytes hold two 100-byte txs");
        assert_eq!(m.len(), 1);
    }

    /// The wait behind a gap was counted in blocks (120), which was two
    /// minutes at a block a second; an idle chain makes a block only every
    /// heartbeat, and 120 of those were two hours. It is counted in time
    /// now: however many blocks come, or how few.
    #[test]
    fn a_gapped_tx_expires_after_its_time_however_many_blocks_came() {
        let mut m = Mempool::new(limits());
        let admitted_ms = 1_000_000;
        m.admit(tx("a", 1, 1), 0, admitted_ms).unwrap();
        // Many blocks within its time: it waits.
        for block_ms in (admitted_ms..=admitted_ms + 5000).step_by(100) {
            assert!(m.prune(|_| 0, block_ms).is_empty(), "dropped at {block_ms} ms");
        }
        assert_eq!(m.len(), 1);
        // One block long after (an idle chain's heartbeat): it goes.
        let mut m = Mempool::new(limits());
        m.admit(tx("a", 1, 1), 0, admitted_ms).unwrap();
        let d = m.prune(|_| 0, admitted_ms + 60_000);
        assert_eq!((d.len(), d[0].code), (1, "nonce_gap"));
        assert_eq!((m.len(), m.ready_len()), (0, 0));
    }
}
