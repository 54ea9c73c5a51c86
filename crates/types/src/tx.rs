//! The signed transaction envelope and every transaction body (DESIGN §2).
//! Bodies live here, not in the ledger, so clients, nodes and oracles can
//! build transactions without depending on the state machine.

use crate::amount::{Amount, Token, Usd};
use crate::codec;
use crate::keys::{self, AccountId, KeyError, PublicKey, Signature, SigningKey};
use crate::region::CountryCode;
use core::fmt;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// A 32-byte blake3 digest, used for tx ids, channel ids and state roots.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash32(pub [u8; 32]);
crate::serde_hr::bytes_serde!(Hash32, 32, "a hash");

impl Hash32 {
    pub fn of(bytes: &[u8]) -> Hash32 {
        Hash32(*blake3::hash(bytes).as_bytes())
    }
    pub fn to_hex(&self) -> String {
        keys::hex(&self.0)
    }
    pub fn from_hex(s: &str) -> Option<Hash32> {
        keys::parse_hex32(s).map(Hash32)
    }
    pub fn short(&self) -> String {
        keys::hex(&self.0[..4])
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

pub type TxId = Hash32;
pub type ChannelId = Hash32;

/// The id of the channel opened by `client`'s tx with nonce `nonce`: known
/// to the client before the tx is included, unique because nonces are.
pub fn channel_id(client: &AccountId, nonce: u64) -> ChannelId {
    let mut h = blake3::Hasher::new();
    h.update(b"tollway-channel\0");
    h.update(&client.0);
    h.update(&nonce.to_le_bytes());
    Hash32(*h.finalize().as_bytes())
}

/// Limits on variable-size fields, checked by the decoder so that a decoded
/// transaction is always within them ("put a limit on everything").
pub mod limits {
    pub const MAX_TX_BYTES: usize = 64 * 1024;
    pub const MAX_CHAIN_ID_BYTES: usize = 64;
    pub const MAX_NODE_ADDRS: usize = 8;
    pub const MAX_MEASUREMENTS_PER_REPORT: usize = 1024;
    pub const MAX_WITHDRAW_REFERENCE_BYTES: usize = 128;
}

/// What a node operator declares about the node (DESIGN §2 "register node").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub country: CountryCode,
    /// Public addresses; the first one names the node's subnet for the
    /// /24 (IPv4) or /48 (IPv6) sybil cap.
    pub addrs: Vec<IpAddr>,
    pub port_first: u16,
    pub port_last: u16,
    /// blake3 of the node's TLS public key: clients pin it (DESIGN §4).
    pub tls_key_pin: [u8; 32],
    pub claimed_capacity_bps: u64,
    pub price_usd_micro_per_gib: u64,
    pub price_usd_micro_per_hour: Option<u64>,
}

/// A client-signed cumulative receipt: "I have received service worth
/// `cumulative_usd` on this channel in total". Monotonic; the node settles
/// the latest one it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub chain_id: String,
    pub channel: ChannelId,
    pub cumulative_usd: Usd,
    pub cumulative_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    pub receipt: Receipt,
    pub signature: Signature,
}

impl Receipt {
    pub fn signing_bytes(&self) -> Vec<u8> {
        codec::domain_bytes(b"tollway-receipt", self)
    }
    pub fn sign(self, client: &SigningKey) -> SignedReceipt {
        let signature = client.sign(&self.signing_bytes());
        SignedReceipt { receipt: self, signature }
    }
}

impl SignedReceipt {
    pub fn verify(&self, client: &PublicKey) -> Result<(), KeyError> {
        keys::verify(client, &self.receipt.signing_bytes(), &self.signature)
    }
}

/// What one oracle saw of one node in one epoch (DESIGN §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeasurementOutcome {
    Measured { throughput_bps: u64, latency_us: u32 },
    /// The node did not answer: counts against uptime, never a slash alone.
    Unreachable,
    /// The oracle itself failed: carries no information about the node.
    OracleError,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measurement {
    pub node: AccountId,
    pub outcome: MeasurementOutcome,
    /// Share of the epoch's uptime challenges the node answered in time.
    pub uptime_ppm: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasurementReport {
    pub epoch: u64,
    pub measurements: Vec<Measurement>,
}

/// Every transaction the ledger knows (DESIGN §2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxBody {
    Transfer { to: AccountId, amount: Amount },
    /// Bond liquid tokens as stake.
    Stake { amount: Token },
    /// Start unbonding: the tokens stay slashable until the period ends.
    BeginUnbond { amount: Token },
    /// Move every unbonding entry whose period has ended back to the balance.
    WithdrawUnbonded,
    RegisterNode(NodeSpec),
    UpdateNode(NodeSpec),
    DeregisterNode,
    RegisterOracle { addr: IpAddr },
    DeregisterOracle,
    OpenChannel { node: AccountId, escrow: Usd, expires_at_secs: u64 },
    /// Submitted by the node with the latest receipt it holds.
    SettleChannel { receipt: SignedReceipt },
    /// Submitted by the client after expiry: refunds the unspent escrow.
    CloseChannel { channel: ChannelId },
    /// A node's liveness signal for the current epoch.
    Heartbeat { epoch: u64 },
    Report(MeasurementReport),
    /// Sell `sell` on the token/USD pool; fails if the output would be
    /// below `min_out` base units of the other currency.
    Swap { sell: Amount, min_out: u128 },
    /// Gateway only: USD entering from the bridge or on-ramp.
    Deposit { to: AccountId, amount: Usd },
    /// USD leaving through the gateway to an off-chain `reference`.
    WithdrawUsd { amount: Usd, reference: String },
    /// Release vested rewards to the balance now (also done implicitly).
    ClaimVested,
}

impl TxBody {
    /// A short stable name, for errors, logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            TxBody::Transfer { .. } => "transfer",
            TxBody::Stake { .. } => "stake",
            TxBody::BeginUnbond { .. } => "begin-unbond",
            TxBody::WithdrawUnbonded => "withdraw-unbonded",
            TxBody::RegisterNode(_) => "register-node",
            TxBody::UpdateNode(_) => "update-node",
            TxBody::DeregisterNode => "deregister-node",
            TxBody::RegisterOracle { .. } => "register-oracle",
            TxBody::DeregisterOracle => "deregister-oracle",
            TxBody::OpenChannel { .. } => "open-channel",
            TxBody::SettleChannel { .. } => "settle-channel",
            TxBody::CloseChannel { .. } => "close-channel",
            TxBody::Heartbeat { .. } => "heartbeat",
            TxBody::Report(_) => "report",
            TxBody::Swap { .. } => "swap",
            TxBody::Deposit { .. } => "deposit",
            TxBody::WithdrawUsd { .. } => "withdraw-usd",
            TxBody::ClaimVested => "claim-vested",
        }
    }
}

/// The unsigned transaction: who, which chain, which nonce, what fee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tx {
    pub chain_id: String,
    pub signer: AccountId,
    /// Must equal the signer's next nonce: replay protection.
    pub nonce: u64,
    /// Paid in either currency: consumers need no native token.
    pub fee: Amount,
    pub body: TxBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTx {
    pub tx: Tx,
    pub signature: Signature,
}

impl Tx {
    /// The bytes the signer signs: a domain tag, the codec version and the
    /// canonical encoding. The chain id inside stops cross-chain replay.
    pub fn signing_bytes(&self) -> Vec<u8> {
        codec::domain_bytes(b"tollway-tx", self)
    }
    pub fn sign(self, key: &SigningKey) -> SignedTx {
        debug_assert_eq!(key.public(), self.signer, "signing with another account's key");
        let signature = key.sign(&self.signing_bytes());
        SignedTx { tx: self, signature }
    }
}

impl SignedTx {
    pub fn verify(&self) -> Result<(), KeyError> {
        keys::verify(&self.tx.signer, &self.tx.signing_bytes(), &self.signature)
    }
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }
    pub fn decode(bytes: &[u8]) -> Result<SignedTx, codec::DecodeError> {
        codec::decode_signed_tx(bytes)
    }
    /// blake3 of the canonical encoding.
    pub fn id(&self) -> TxId {
        tx_id_of_encoding(&self.encode())
    }
}

/// The id of a tx from its canonical encoding, e.g. the bytes a decode
/// accepted (decoding checks they are canonical): no re-encoding.
pub fn tx_id_of_encoding(encoded: &[u8]) -> TxId {
    Hash32::of(encoded)
}
