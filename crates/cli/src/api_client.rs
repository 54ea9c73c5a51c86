//! A blocking client for a chain node's HTTP JSON API (DESIGN §3), as the
//! wallet uses it. Amounts arrive as decimal strings and keys, ids and hashes
//! as hex; the types crate's serde reads both. Every non-2xx answer carries
//! `{"error": {"code", "message"}}`, which becomes an [`ApiError`].

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tollway_types::{AccountId, ChannelId, CountryCode, PublicKey, SignedTx, Token, TxId, Usd};

/// `GET /v1/status`: what a tx builder needs (chain id, fees, chain time).
#[derive(Clone, Debug, Deserialize)]
pub struct Status {
    pub chain_id: String,
    /// The tip block's time: the chain's clock, which expiries refer to.
    pub time_ms: u64,
    pub min_fee_token: Token,
    pub min_fee_usd: Usd,
    #[serde(default)]
    pub gateway: Option<PublicKey>,
    /// The chain node's clock (ms); absent from older chains.
    #[serde(default)]
    pub now_ms: Option<u64>,
    /// The channel limits (absent from older chains).
    #[serde(default)]
    pub min_channel_escrow_usd: Option<Usd>,
    #[serde(default)]
    pub channel_max_lifetime_secs: Option<u64>,
    /// How long after its expiry a channel may be closed, and the chain
    /// closes it at the first epoch end from then (ADR 0021); absent from
    /// older chains.
    #[serde(default)]
    pub channel_close_grace_secs: Option<u64>,
    /// When the current epoch began, and how long one lasts.
    #[serde(default)]
    pub epoch_start_secs: Option<u64>,
    #[serde(default)]
    pub epoch_secs: Option<u64>,
    /// The current epoch: those before it have ended, and have reports.
    #[serde(default)]
    pub epoch: Option<u64>,
    /// What an over-claim costs (DESIGN §2 step 2; absent from older
    /// chains): up to this ρ = claimed / verified rewards follow the claim...
    #[serde(default)]
    pub rho_reward_on_claim_max_ppm: Option<u64>,
    /// ...above this a measurement strikes the node, and a second by other
    /// oracles slashes it...
    #[serde(default)]
    pub rho_slash_min_ppm: Option<u64>,
    /// ...this share of its bond, growing per unit of ρ above the
    /// threshold, up to the most.
    #[serde(default)]
    pub slash_base_ppm: Option<u64>,
    #[serde(default)]
    pub slash_per_rho_ppm: Option<u64>,
    #[serde(default)]
    pub slash_max_ppm: Option<u64>,
}

/// `GET /v1/epochs` entries, the part the wallet reads: the channels the
/// epoch's end closed (ADR 0021).
#[derive(Clone, Debug, Deserialize)]
pub struct EpochRecord {
    pub report: EpochReport,
}

#[derive(Clone, Debug, Deserialize)]
pub struct EpochReport {
    pub epoch: u64,
    #[serde(default)]
    pub channels_closed: Vec<ClosedChannel>,
}

/// A channel an epoch's end closed, and what its client got back.
#[derive(Clone, Debug, Deserialize)]
pub struct ClosedChannel {
    pub channel: ChannelId,
    pub client: AccountId,
    pub refund: Usd,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Unbonding {
    pub amount: Token,
    pub release_at_secs: u64,
}

/// `GET /v1/accounts/{id}`.
#[derive(Clone, Debug, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub nonce: u64,
    pub token: Token,
    pub usd: Usd,
    #[serde(default)]
    pub staked: Token,
    #[serde(default)]
    pub unbonding: Vec<Unbonding>,
    #[serde(default)]
    pub vesting: Token,
    /// Of `vesting`, what a claim would move to the balance now.
    #[serde(default)]
    pub vested: Token,
    /// When all of `vesting` will have vested (chain time, s).
    #[serde(default)]
    pub vesting_until_secs: Option<u64>,
    /// When nothing has vested yet, the chain time from which a claim
    /// releases something (absent from a chain older than the field).
    #[serde(default)]
    pub first_release_secs: Option<u64>,
    #[serde(default)]
    pub node: bool,
    #[serde(default)]
    pub oracle: bool,
    #[serde(default)]
    pub open_channels: u32,
}

/// `GET /v1/channels/{id}` and the entries of `/v1/accounts/{id}/channels`.
#[derive(Clone, Debug, Deserialize)]
pub struct Channel {
    pub id: ChannelId,
    pub client: AccountId,
    pub node: AccountId,
    pub escrow: Usd,
    pub paid: Usd,
    #[serde(default)]
    pub paid_bytes: u64,
    pub expires_at_secs: u64,
}

/// `GET /v1/nodes` entries: what a client weighs when it picks a node.
#[derive(Clone, Debug, Deserialize)]
pub struct NodeInfo {
    pub id: AccountId,
    pub country: CountryCode,
    pub region: String,
    pub addrs: Vec<IpAddr>,
    #[serde(default)]
    pub port_first: u16,
    #[serde(default)]
    pub port_last: u16,
    /// blake3 of the node's TLS key, which a client pins.
    #[serde(default, deserialize_with = "hex32")]
    pub tls_key_pin: [u8; 32],
    #[serde(default)]
    pub active: bool,
    pub claimed_capacity_bps: u64,
    pub verified_capacity_bps: u64,
    pub price_usd_micro_per_gib: u64,
    #[serde(default)]
    pub price_usd_micro_per_hour: Option<u64>,
    pub reputation_ppm: u32,
    /// The epoch of its last measurement by a quorum of oracles; `None`:
    /// never measured.
    #[serde(default)]
    pub measured_epoch: Option<u64>,
    /// The uptime credited for the last epoch.
    #[serde(default)]
    pub uptime_ppm: u32,
    /// The oracles' median latency at the last measurement.
    #[serde(default)]
    pub latency_us: u32,
    #[serde(default)]
    pub total_rewards: Token,
    #[serde(default)]
    pub total_slashed: Token,
    /// The over-claim strike its next measurement decides (absent: none,
    /// or an older chain).
    #[serde(default)]
    pub strike: Option<Strike>,
    /// Its over-claim slashes, oldest first (absent from older chains).
    #[serde(default)]
    pub slashes: Vec<NodeSlash>,
}

/// A node's pending over-claim strike (ADR 0013).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Strike {
    /// The epoch whose measurement struck the node.
    pub epoch: u64,
    pub measured_capacity_bps: u64,
    /// The claim that epoch was judged against (an older chain gives the
    /// one the current epoch is judged against).
    pub judged_claim_bps: u64,
    pub over_claim_ppm: u64,
    /// The claim the next measurement is judged against now, when it is
    /// another (the highest held in this epoch: a claim lowered now counts
    /// from the next epoch); absent: the same, or an older chain.
    #[serde(default)]
    pub next_judged_claim_bps: Option<u64>,
    /// A measurement of at least this clears the strike.
    pub clears_at_bps: u64,
    /// What a confirmation at the same ρ takes: this share of the bond and
    /// the unvested rewards, about `slash_estimate` now.
    pub slash_ppm: u64,
    pub slash_estimate: Token,
    /// The current epoch's end: the soonest a measurement decides it.
    pub decided_at_earliest_secs: u64,
}

/// `GET /v1/nodes/{id}/epochs` entries: what the node was paid at an
/// epoch's end, and the figures it was paid on. The store's own row, which
/// the API serves whole.
pub use tollway_store::NodeEpochRow as NodeEpoch;

/// One over-claim slash of a node.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct NodeSlash {
    pub epoch: u64,
    pub amount: Token,
    pub claimed_capacity_bps: u64,
    pub measured_capacity_bps: u64,
    pub over_claim_ppm: u64,
    /// The measurement that gave the strike this slash confirmed (absent
    /// from older chains).
    #[serde(default)]
    pub struck: Option<StrikeFigures>,
    pub ejected: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct StrikeFigures {
    pub epoch: u64,
    pub claimed_capacity_bps: u64,
    pub measured_capacity_bps: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// What became of a submitted tx.
#[derive(Clone, Debug, Deserialize)]
pub struct TxStatus {
    pub id: TxId,
    /// "pending", "committed" or "rejected".
    pub status: String,
    #[serde(default)]
    pub height: Option<u64>,
    #[serde(default)]
    pub events: Vec<serde_json::Value>,
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

/// A refusal by the API: the HTTP status and its error body.
#[derive(Debug)]
pub struct ApiError {
    pub http_status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, HTTP {})", self.message, self.code, self.http_status)
    }
}

impl std::error::Error for ApiError {}

pub struct ApiClient {
    base: String,
    agent: ureq::Agent,
    /// A person waits on this client at a terminal ([`ApiClient::interactive`]).
    interactive: bool,
}

/// How long an interactive command's request waits for the chain's answer
/// beyond any wait it asked the chain for: the API answers a lookup in
/// milliseconds, so this long without an answer is a chain hung or
/// overloaded, said as an error. A daemon's client waits 75 s (longer than
/// the longest wait a submission asks for), which a person at a terminal
/// spent in silence.
pub const INTERACTIVE_ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// How long an interactive command waits beyond any wait it asked for
/// before it says on stderr what it is waiting for.
pub const INTERACTIVE_NOTICE_AFTER: Duration = Duration::from_secs(2);

impl ApiClient {
    /// A client for a person at a terminal (`wallet`, `node receipts`, the
    /// start of `node run` and `connect`): a request unanswered
    /// [`INTERACTIVE_NOTICE_AFTER`] past the wait it asked for says on
    /// stderr what it waits for, and fails [`INTERACTIVE_ANSWER_WITHIN`]
    /// past it, naming the request.
    pub fn interactive(base: &str) -> anyhow::Result<ApiClient> {
        Ok(ApiClient { interactive: true, ..ApiClient::new(base)? })
    }

    /// A daemon's client, which waits up to 75 s for an answer and says
    /// nothing while it waits. `base` such as `http://127.0.0.1:7070` (a
    /// trailing `/` is ignored).
    pub fn new(base: &str) -> anyhow::Result<ApiClient> {
        let base = base.trim().trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            anyhow::bail!("API address {base:?} must start with http:// (e.g. http://127.0.0.1:7070)");
        }
        let config = ureq::Agent::config_builder()
            // Non-2xx answers carry a JSON error body we want to read.
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            // Longer than any server-side wait we ask for (at most 60 s).
            // Per-phase timeouts, not a global one: with a global timeout
            // ureq 3 resolves the address on a fresh thread per request.
            .timeout_send_request(Some(Duration::from_secs(10)))
            .timeout_send_body(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(75)))
            .timeout_recv_body(Some(Duration::from_secs(75)))
            // The chain API closes a connection idle for its head timeout
            // (10 s): a pooled one kept longer could be reused as it closes.
            .max_idle_age(Duration::from_secs(5))
            .build();
        Ok(ApiClient { base, agent: config.into(), interactive: false })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// One request; returns the status and body, or a transport error that
    /// says where we tried to go. `asked_wait` is how long the request asks
    /// the chain to wait before it answers (a submission's wait for its
    /// block; zero for a lookup).
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        asked_wait: Duration,
    ) -> anyhow::Result<(u16, String)> {
        if !self.interactive {
            return self.call_within(method, path, body, None);
        }
        let answer_within = asked_wait + INTERACTIVE_ANSWER_WITHIN;
        let (answered, unanswered) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                // Ends at once when the answer comes first (the sender
                // is dropped).
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    unanswered.recv_timeout(asked_wait + INTERACTIVE_NOTICE_AFTER)
                {
                    eprintln!(
                        "waiting for the chain API at {} to answer {method} {path} (at most {} s more)",
                        self.base,
                        (INTERACTIVE_ANSWER_WITHIN - INTERACTIVE_NOTICE_AFTER).as_secs()
                    );
                }
            });
            let result = self.call_within(method, path, body, Some(answer_within));
            drop(answered);
            result
        })
    }

    /// [`ApiClient::call`] with the answer awaited `answer_within` (none:
    /// the agent's 75 s).
    fn call_within(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        answer_within: Option<Duration>,
    ) -> anyhow::Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let result = match body {
            None => awaiting(self.agent.get(&url), answer_within).header("Accept", "application/json").call(),
            Some(bytes) => awaiting(self.agent.post(&url), answer_within)
                .header("Accept", "application/json")
                .header("Content-Type", "application/octet-stream")
                .send(bytes),
        };
        let mut response = result.map_err(|e| match e {
            // It took the connection (or the request) and never answered.
            ureq::Error::Timeout(ureq::Timeout::SendRequest | ureq::Timeout::RecvResponse) => {
                anyhow::anyhow!(
                    "the chain API at {} did not answer {method} {path} within {} s: is its chain hung or overloaded? \
                     (set --api or TOLLWAY_API to use another)",
                    self.base,
                    answer_within.map_or(75, |d| d.as_secs())
                )
            }
            e => anyhow::anyhow!(
                "cannot reach the chain API at {} ({e}); is `tollway chain run` running there? (set --api or TOLLWAY_API)",
                self.base
            ),
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the answer to {method} {path}"))?;
        Ok((status, text))
    }

    /// The error carried by a non-2xx answer.
    fn api_error(status: u16, text: &str) -> ApiError {
        #[derive(Deserialize)]
        struct Wrapper {
            error: ErrorBody,
        }
        match serde_json::from_str::<Wrapper>(text) {
            Ok(w) => ApiError { http_status: status, code: w.error.code, message: w.error.message },
            Err(_) => {
                let snippet: String = text.chars().take(200).collect();
                let message = if snippet.trim().is_empty() { "no error body".to_string() } else { snippet };
                ApiError { http_status: status, code: "http_error".into(), message }
            }
        }
    }

    /// GET `path`, decoded as `T`, with the raw JSON for `--json` output.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<(T, serde_json::Value)> {
        let (status, text) = self.call("GET", path, None, Duration::ZERO)?;
        if !(200..300).contains(&status) {
            return Err(Self::api_error(status, &text).into());
        }
        decode(path, &text)
    }

    pub fn status(&self) -> anyhow::Result<Status> {
        self.get("/v1/status").map(|(s, _)| s).context("asking the chain for its status")
    }

    /// `None` if the chain has never seen the account (it never received
    /// funds): a balance of zero, not an error.
    pub fn account(&self, id: &AccountId) -> anyhow::Result<Option<(Account, serde_json::Value)>> {
        match self.get(&format!("/v1/accounts/{}", id.to_hex())) {
            Ok(found) => Ok(Some(found)),
            Err(e) => match e.downcast_ref::<ApiError>() {
                Some(api) if api.http_status == 404 && api.code == "unknown_account" => Ok(None),
                _ => Err(e.context(format!("looking up account {}", id.to_hex()))),
            },
        }
    }

    pub fn account_channels(&self, id: &AccountId) -> anyhow::Result<(Vec<Channel>, serde_json::Value)> {
        self.get(&format!("/v1/accounts/{}/channels", id.to_hex()))
            .with_context(|| format!("listing the channels of {}", id.to_hex()))
    }

    /// The reports of up to `limit` ended epochs from `from` on, oldest
    /// first.
    pub fn epochs(&self, from: u64, limit: u64) -> anyhow::Result<Vec<EpochRecord>> {
        Ok(self.get(&format!("/v1/epochs?from={from}&limit={limit}"))?.0)
    }

    pub fn channel(&self, id: &ChannelId) -> anyhow::Result<(Channel, serde_json::Value)> {
        self.get(&format!("/v1/channels/{}", id.to_hex())).with_context(|| format!("looking up channel {}", id.to_hex()))
    }

    /// One node's record; `None` if the account is not a node.
    pub fn node(&self, id: &AccountId) -> anyhow::Result<Option<(NodeInfo, serde_json::Value)>> {
        match self.get(&format!("/v1/nodes/{}", id.to_hex())) {
            Ok(found) => Ok(Some(found)),
            Err(e) => match e.downcast_ref::<ApiError>() {
                Some(api) if api.http_status == 404 => Ok(None),
                _ => Err(e.context(format!("looking up node {}", id.to_hex()))),
            },
        }
    }

    /// A node's rows of the epochs from `from` on, oldest first.
    pub fn node_epochs(&self, id: &AccountId, from: u64, limit: u64) -> anyhow::Result<(Vec<NodeEpoch>, serde_json::Value)> {
        self.get(&format!("/v1/nodes/{}/epochs?from={from}&limit={limit}", id.to_hex()))
            .with_context(|| format!("listing the epochs of node {}", id.to_hex()))
    }

    /// Node search; `query` is an already-validated `k=v&…` string.
    pub fn nodes(&self, query: &str) -> anyhow::Result<(Vec<NodeInfo>, serde_json::Value)> {
        self.get(&format!("/v1/nodes?{query}")).context("searching nodes")
    }

    /// POSTs the canonical bytes and waits up to `timeout_ms` for the block.
    /// Returns the tx's status whether committed, rejected in the block, or
    /// still pending; a refusal at submission is an [`ApiError`].
    ///
    /// A node whose long-poll places are all taken submits the tx and
    /// answers at once, pending with `wait_refused`: then its status is
    /// polled until `timeout_ms` has passed, so the caller still gets the
    /// block (an answer of "not committed within N ms" that never waited
    /// told a user to check by hand what was a few seconds from done).
    pub fn submit(&self, tx: &SignedTx, timeout_ms: u64) -> anyhow::Result<(TxStatus, serde_json::Value)> {
        // The chain waits at most a minute (`MAX_WAIT`): no longer here.
        let deadline = Instant::now() + Duration::from_millis(timeout_ms).min(LONGEST_WAIT);
        let path = format!("/v1/txs?wait=commit&timeout_ms={timeout_ms}");
        let asked_wait = Duration::from_millis(timeout_ms).min(LONGEST_WAIT);
        let (status, text) = self.call("POST", &path, Some(&tx.encode()), asked_wait)?;
        let found = Self::tx_status_answer(&path, status, &text)?;
        if found.0.status == "pending" && found.1.get("wait_refused").is_some() {
            return self.poll_pending(found, deadline);
        }
        Ok(found)
    }

    /// A tx's status from an answer to a submission or a status query.
    fn tx_status_answer(path: &str, status: u16, text: &str) -> anyhow::Result<(TxStatus, serde_json::Value)> {
        match status {
            200 | 202 | 422 => match decode::<TxStatus>(path, text) {
                Ok(found) => Ok(found),
                // A 422 without a TxStatus body is a plain refusal.
                Err(_) if status == 422 => Err(Self::api_error(status, text).into()),
                Err(e) => Err(e),
            },
            _ => Err(Self::api_error(status, text).into()),
        }
    }

    /// Polls a submitted, pending tx (`GET /v1/txs/{id}`, which holds no
    /// place) until it leaves pending or `deadline` passes; the last answer.
    /// A poll that fails (the node restarting, a dropped connection) is
    /// tried again until the deadline: the tx was accepted, so a failure
    /// here is never a refusal, and the error says so (a plain message, so
    /// that callers do not take it for the chain's [`ApiError`]).
    fn poll_pending(
        &self,
        mut found: (TxStatus, serde_json::Value),
        deadline: Instant,
    ) -> anyhow::Result<(TxStatus, serde_json::Value)> {
        let id = found.0.id.to_hex();
        let path = format!("/v1/txs/{id}");
        let mut failed: Option<String> = None;
        while found.0.status == "pending" {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep(POLL_PENDING_EVERY.min(deadline - now));
            let answer = self.call("GET", &path, None, Duration::ZERO);
            match answer.and_then(|(status, text)| Self::tx_status_answer(&path, status, &text)) {
                Ok(answer) => (found, failed) = (answer, None),
                Err(e) => failed = Some(format!("{e:#}")),
            }
        }
        match failed {
            Some(why) => Err(anyhow::anyhow!(
                "tx {id} was accepted by the chain, but its status could not be read since ({why}); it may still be included (GET {}{path})",
                self.base
            )),
            None => Ok(found),
        }
    }
}

/// `request` with its answer awaited `within` (none: the agent's 75 s).
fn awaiting<B>(request: ureq::RequestBuilder<B>, within: Option<Duration>) -> ureq::RequestBuilder<B> {
    match within {
        Some(within) => request.config().timeout_recv_response(Some(within)).timeout_recv_body(Some(within)).build(),
        None => request,
    }
}

/// How often [`ApiClient::submit`] asks for a tx's status when the node
/// would not wait for it: a block is a second or so.
const POLL_PENDING_EVERY: Duration = Duration::from_millis(200);

/// The longest the chain's API waits for a tx's block.
const LONGEST_WAIT: Duration = Duration::from_secs(60);

fn decode<T: DeserializeOwned>(path: &str, text: &str) -> anyhow::Result<(T, serde_json::Value)> {
    let raw: serde_json::Value =
        serde_json::from_str(text).with_context(|| format!("the answer to {path} is not JSON"))?;
    let value = T::deserialize(&raw).with_context(|| format!("unexpected answer to {path}: {raw}"))?;
    Ok((value, raw))
}

fn hex32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    tollway_types::keys::parse_hex32(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tollway_types::keys::SigningKey;
    use tollway_types::{Amount, Tx, TxBody};

    /// A chain API that submits without waiting (its places all taken)
    /// and answers the status queries from `script` in turn ("pending",
    /// "committed", or "503" for a node that cannot answer), its last
    /// answer for good after. Answers each request on its own connection.
    fn fake_api(id: TxId, script: &'static [&'static str]) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let base = format!("http://{}", listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
        let polls = Arc::new(AtomicUsize::new(0));
        let seen = polls.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().take(1000) {
                let Ok(mut conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().unwrap_or_else(|e| panic!("{e}")));
                let (mut request, mut length) = (String::new(), 0usize);
                let _ = reader.read_line(&mut request);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let id = id.to_hex();
                let (code, json) = if request.starts_with("POST") {
                    (202, format!(r#"{{"id":"{id}","status":"pending","wait_refused":{{"code":"wait_limit","message":"full"}}}}"#))
                } else {
                    let turn = seen.fetch_add(1, Ordering::SeqCst);
                    match script[turn.min(script.len() - 1)] {
                        "pending" => (202, format!(r#"{{"id":"{id}","status":"pending"}}"#)),
                        "committed" => (200, format!(r#"{{"id":"{id}","status":"committed","height":7}}"#)),
                        _ => (503, r#"{"error":{"code":"unavailable","message":"restarting"}}"#.to_string()),
                    }
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                    json.len()
                );
            }
        });
        (base, polls)
    }

    fn a_tx() -> SignedTx {
        let key = SigningKey::from_seed([7; 32]);
        let body = TxBody::ClaimVested;
        Tx { chain_id: "test".into(), signer: key.public(), nonce: 0, fee: Amount::Usd(Usd(0)), body }.sign(&key)
    }

    /// Submits a tx, waiting up to `timeout_ms`, to a fake API that
    /// refuses the wait and answers its status queries from `script`:
    /// the answer, how many status queries came, and how long it took.
    fn submit_against(
        script: &'static [&'static str],
        timeout_ms: u64,
    ) -> (anyhow::Result<(TxStatus, serde_json::Value)>, usize, Duration) {
        let tx = a_tx();
        let (base, polls) = fake_api(tx.id(), script);
        let api = ApiClient::new(&base).unwrap_or_else(|e| panic!("{e}"));
        let start = Instant::now();
        let answer = api.submit(&tx, timeout_ms);
        (answer, polls.load(Ordering::SeqCst), start.elapsed())
    }

    #[test]
    fn a_submission_the_node_would_not_wait_for_is_polled_to_its_block() {
        let (answer, polls, _) = submit_against(&["pending", "pending", "pending", "committed"], 10_000);
        let (status, _) = answer.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((status.status.as_str(), status.height), ("committed", Some(7)));
        assert_eq!(polls, 4, "three pending answers, then the block");
    }

    #[test]
    fn a_poll_that_fails_is_tried_again() {
        let (answer, _, _) = submit_against(&["503", "pending", "503", "committed"], 10_000);
        let (status, _) = answer.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status.status, "committed");
    }

    #[test]
    fn polling_stops_at_the_callers_timeout() {
        let (answer, polls, took) = submit_against(&["pending"], 700);
        let (status, _) = answer.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status.status, "pending");
        assert!(took >= Duration::from_millis(650) && took < Duration::from_secs(5), "{took:?}");
        assert!(polls >= 3, "it polled until the timeout");
    }

    /// Polls that fail until the wait ends say the tx was accepted, in an
    /// error the wallet cannot take for the chain's refusal.
    #[test]
    fn polls_failing_to_the_end_are_no_refusal() {
        let (answer, _, _) = submit_against(&["503"], 700);
        let err = answer.map(|_| ()).unwrap_err();
        assert!(err.downcast_ref::<ApiError>().is_none(), "{err:#}");
        assert!(err.to_string().contains("was accepted by the chain"), "{err:#}");
    }
}
