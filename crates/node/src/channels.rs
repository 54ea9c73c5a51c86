//! Where a node learns about channels (the chain) and where it keeps the
//! receipts it will settle with.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tollway_ledger::state::Channel;
use tollway_net::driver::BoxFuture;
use tollway_tunnel::ErrorCode;
use tollway_types::amount::Usd;
use tollway_types::keys::AccountId;
use tollway_types::tx::{channel_id, ChannelId, SignedReceipt};

/// Looks a channel up, as the ledger has it now.
pub trait ChannelSource: Send + Sync + 'static {
    fn channel(&self, id: ChannelId) -> BoxFuture<Result<Channel, ErrorCode>>;
}

/// The chain's HTTP API (`GET /v1/channels/{id}`).
pub struct ChainChannels {
    base_url: String,
    agent: ureq::Agent,
}

impl ChainChannels {
    pub fn new(base_url: &str) -> ChainChannels {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(3)))
            .timeout_recv_body(Some(Duration::from_secs(5)))
            .timeout_recv_response(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        ChainChannels {
            base_url: base_url.trim_end_matches('/').to_string(),
            agent,
        }
    }
}

impl ChannelSource for ChainChannels {
    fn channel(&self, id: ChannelId) -> BoxFuture<Result<Channel, ErrorCode>> {
        let url = format!("{}/v1/channels/{}", self.base_url, id.to_hex());
        let agent = self.agent.clone();
        Box::pin(async move {
            let fetched = tokio::task::spawn_blocking(move || -> Result<Channel, ErrorCode> {
                let mut response = agent.get(&url).call().map_err(|_| ErrorCode::Internal)?;
                match response.status().as_u16() {
                    200 => {}
                    404 => return Err(ErrorCode::NoChannel),
                    _ => return Err(ErrorCode::Internal),
                }
                let body = response
                    .body_mut()
                    .read_to_string()
                    .map_err(|_| ErrorCode::Internal)?;
                serde_json::from_str(&body).map_err(|_| ErrorCode::Internal)
            })
            .await;
            fetched.unwrap_or(Err(ErrorCode::Internal))
        })
    }
}

/// A fixed set of channels: for tests and benchmarks that run without a
/// chain (the receipts are still real signatures checked the real way).
#[derive(Default)]
pub struct StaticChannels(pub Mutex<HashMap<ChannelId, Channel>>);

impl StaticChannels {
    /// Opens channel `nonce` from `client` to `node` with `escrow`, expiring
    /// in no test's lifetime.
    pub fn open(&self, client: AccountId, node: AccountId, nonce: u64, escrow: Usd) {
        if let Ok(mut channels) = self.0.lock() {
            channels.insert(channel_id(&client, nonce), Channel::opened(client, node, escrow, u64::MAX / 2));
        }
    }
}

impl ChannelSource for StaticChannels {
    fn channel(&self, id: ChannelId) -> BoxFuture<Result<Channel, ErrorCode>> {
        let found = self
            .0
            .lock()
            .ok()
            .and_then(|m| m.get(&id).cloned())
            .ok_or(ErrorCode::NoChannel);
        Box::pin(async move { found })
    }
}

/// The newest accepted receipt per channel, written through to a JSON
/// file (when given) so a restart loses no payment.
pub struct ReceiptBook {
    receipts: Mutex<HashMap<ChannelId, SignedReceipt>>,
    file: Option<PathBuf>,
}

impl ReceiptBook {
    pub fn in_memory() -> Arc<ReceiptBook> {
        Arc::new(ReceiptBook {
            receipts: Mutex::new(HashMap::new()),
            file: None,
        })
    }

    /// Opens (or starts) the book at `file`.
    pub fn open(file: PathBuf) -> anyhow::Result<Arc<ReceiptBook>> {
        let receipts = match std::fs::read_to_string(&file) {
            Ok(text) => {
                let list: Vec<SignedReceipt> = serde_json::from_str(&text).map_err(|e| {
                    anyhow::anyhow!("{} is not a receipt book: {e}", file.display())
                })?;
                list.into_iter().map(|r| (r.receipt.channel, r)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", file.display())),
        };
        Ok(Arc::new(ReceiptBook {
            receipts: Mutex::new(receipts),
            file: Some(file),
        }))
    }

    pub fn latest(&self, channel: &ChannelId) -> Option<SignedReceipt> {
        self.receipts.lock().ok()?.get(channel).cloned()
    }

    pub fn all(&self) -> Vec<SignedReceipt> {
        self.receipts
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Keeps `receipt` if it is newer than the one held.
    pub fn record(&self, receipt: SignedReceipt) {
        let Ok(mut map) = self.receipts.lock() else {
            return;
        };
        let newer = map
            .get(&receipt.receipt.channel)
            .is_none_or(|r| r.receipt.cumulative_usd < receipt.receipt.cumulative_usd);
        if !newer {
            return;
        }
        map.insert(receipt.receipt.channel, receipt);
        if let Some(file) = &self.file {
            let list: Vec<&SignedReceipt> = map.values().collect();
            if let Ok(text) = serde_json::to_string_pretty(&list) {
                // Write-then-rename: a crash leaves the old book or the new.
                let tmp = file.with_extension("tmp");
                if std::fs::write(&tmp, text).is_ok() {
                    let _ = std::fs::rename(&tmp, file);
                }
            }
        }
    }
}

pub fn now_unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
