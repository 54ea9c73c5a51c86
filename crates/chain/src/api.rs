//! The HTTP JSON API (DESIGN §3), described by `openapi.json` (served at
//! `/openapi.json`). Every refusal is a 4xx (or 503 when the node is busy)
//! with `{"error": {"code", "message"}}`; nothing here can write a partial
//! state: submissions only reach the mempool, blocks only the producer.

use crate::core::TxState;
use crate::directory::{NodeQuery, NodeRow};
use crate::listener::{BodyTooSlow, ClientKey};
use crate::node::{ChainEvent, Incoming, Shared, Submission, SubmitRefusal};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};
use tollway_ledger::state::{Account, Channel, Node, Oracle};
use tollway_types::admission::{AddressSlot, PerAddress};
use tollway_types::tx::limits::MAX_TX_BYTES;
use tollway_types::{AccountId, CountryCode, Hash32, MacroRegion, PublicKey, SignedTx, Token, TxId, Usd};

pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Every route with the query parameters it reads, as the OpenAPI file
/// must list them (a test checks both ways). Any other query key is
/// refused (`refuse_unknown_query`).
pub const ROUTES: &[(&str, &str, &[&str])] = &[
    ("get", "/openapi.json", &[]),
    ("get", "/metrics", &[]),
    ("get", "/v1/status", &[]),
    ("post", "/v1/txs", &["wait", "timeout_ms"]),
    ("post", "/v1/txs/batch", &["wait", "timeout_ms"]),
    ("get", "/v1/txs/{id}", &[]),
    ("get", "/v1/txs/{id}/wait", &["timeout_ms"]),
    ("get", "/v1/accounts/{id}", &[]),
    ("get", "/v1/accounts/{id}/channels", &["after", "limit"]),
    ("get", "/v1/channels/{id}", &[]),
    (
        "get",
        "/v1/nodes",
        &["region", "country", "max_price_usd_micro_per_gib", "min_verified_capacity_bps", "min_reputation_ppm", "active", "limit"],
    ),
    ("get", "/v1/nodes/{id}", &[]),
    ("get", "/v1/nodes/{id}/epochs", &["from", "limit"]),
    ("get", "/v1/oracles", &["from", "limit"]),
    ("get", "/v1/blocks/{height}", &[]),
    ("get", "/v1/epochs", &["from", "limit"]),
    ("get", "/v1/epochs/{epoch}", &[]),
    ("get", "/v1/supply", &[]),
    ("get", "/v1/mint-burn", &["from", "limit"]),
    ("get", "/v1/slashes", &["from", "limit"]),
    ("get", "/v1/events", &[]),
];

/// A binary submission is the tx itself.
pub const MAX_BINARY_BODY_BYTES: usize = MAX_TX_BYTES;
/// A JSON submission carries the tx as hex (twice its size) or as fields:
/// the largest valid report, `MAX_MEASUREMENTS_PER_REPORT` measurements at
/// their widest, is ~190 KB of compact JSON and ~360 KB pretty-printed
/// (`the_largest_valid_report_is_read_as_json_fields`).
pub const MAX_JSON_BODY_BYTES: usize = 8 * MAX_TX_BYTES;
/// Most txs in one `POST /v1/txs/batch`.
pub const MAX_BATCH_TXS: usize = 1024;
/// Largest body of `POST /v1/txs/batch`, in either form (binary, or JSON
/// hex at twice the size). Past either cap the batch is refused whole (413).
pub const MAX_BATCH_BODY_BYTES: usize = 2 << 20;
/// Bodies up to this size are read and answered with a JSON 413; beyond
/// it the server stops reading and closes the connection.
const MAX_READ_BYTES: usize = 4 << 20;
const MAX_WAIT: Duration = Duration::from_secs(60);

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/txs", post(submit))
        .route("/v1/txs/batch", post(submit_batch))
        .route("/v1/txs/{id}", get(tx_status))
        .route("/v1/txs/{id}/wait", get(tx_wait))
        .route("/v1/accounts/{id}", get(account))
        .route("/v1/accounts/{id}/channels", get(account_channels))
        .route("/v1/channels/{id}", get(channel))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{id}", get(node))
        .route("/v1/nodes/{id}/epochs", get(node_epochs))
        .route("/v1/oracles", get(oracles))
        .route("/v1/blocks/{height}", get(block))
        .route("/v1/epochs", get(epochs))
        .route("/v1/epochs/{epoch}", get(epoch))
        .route("/v1/supply", get(supply))
        .route("/v1/mint-burn", get(mint_burn))
        .route("/v1/slashes", get(slashes))
        .route("/v1/events", get(events))
        .route_layer(axum::middleware::from_fn(refuse_unknown_query))
        .fallback(|request: axum::extract::Request| async {
            drain_body(request).await;
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint; see /openapi.json")
        })
        // After the routes, which it applies to; axum still sets `Allow`.
        .method_not_allowed_fallback(|request: axum::extract::Request| async {
            drain_body(request).await;
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this endpoint does not take that method; see /openapi.json")
        })
        .layer(DefaultBodyLimit::max(MAX_READ_BYTES))
        .with_state(shared)
}

// ---------------------------------------------------------------- errors

pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }
    fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
    fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }
    fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": {"code": self.code, "message": self.message}}))).into_response()
    }
}

/// The HTTP status for a refusal code from the mempool or the ledger.
fn status_of(code: &str) -> StatusCode {
    match code {
        "unknown_account" => StatusCode::NOT_FOUND,
        "duplicate" | "stale_nonce" | "nonce_taken" => StatusCode::CONFLICT,
        "account_limit" | "nonce_gaps_full" => StatusCode::TOO_MANY_REQUESTS,
        "mempool_full" | "busy" => StatusCode::SERVICE_UNAVAILABLE,
        "bad_signature" | "wrong_chain" | "bad_encoding" | "malformed_json" => StatusCode::BAD_REQUEST,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn parse_key(s: &str) -> ApiResult<PublicKey> {
    PublicKey::from_hex(s).map_err(|_| ApiError::bad_request("bad_id", format!("{s:?} is not an account id (64 hex digits)")))
}

fn parse_hash(s: &str, what: &str) -> ApiResult<Hash32> {
    Hash32::from_hex(s).ok_or_else(|| ApiError::bad_request("bad_id", format!("{s:?} is not a {what} id (64 hex digits)")))
}

/// Query strings parsed by hand so that a bad value gets our error shape.
fn query_u64(q: &std::collections::HashMap<String, String>, key: &str) -> ApiResult<Option<u64>> {
    q.get(key)
        .map(|v| v.parse::<u64>().map_err(|_| ApiError::bad_request("bad_query", format!("{key}={v:?} is not a whole number"))))
        .transpose()
}

type QueryMap = Query<std::collections::HashMap<String, String>>;

/// Refuses a query key the route does not read (`ROUTES`): a misspelt
/// filter (`max_price_usd_per_gib` for `max_price_usd_micro_per_gib`) was
/// ignored, and the answer was the unfiltered list; and a route that reads
/// none took any.
async fn refuse_unknown_query(
    matched: axum::extract::MatchedPath,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // A query that does not parse is the handler's to refuse.
    let Ok(Query(pairs)) = Query::<Vec<(String, String)>>::try_from_uri(request.uri()) else {
        return next.run(request).await;
    };
    let method = request.method().as_str();
    let known = ROUTES
        .iter()
        .find(|(m, path, _)| *path == matched.as_str() && m.eq_ignore_ascii_case(method))
        .map_or(&[][..], |route| route.2);
    let mut unknown: Vec<String> = pairs.into_iter().map(|(k, _)| k).filter(|k| !known.contains(&k.as_str())).collect();
    if unknown.is_empty() {
        return next.run(request).await;
    }
    unknown.sort_unstable();
    unknown.dedup();
    drain_body(request).await;
    let takes = if known.is_empty() { String::from("none") } else { known.join(", ") };
    ApiError::bad_request(
        "bad_query",
        format!("unknown query parameter {}; this route takes {takes}", unknown.join(", ")),
    )
    .into_response()
}

/// Reads a refused request's body, up to the read limit, and drops it:
/// answered before its body arrived, the connection was closed after the
/// answer (the server cannot tell where an unread body ends), and a
/// client's next request on it failed.
async fn drain_body(request: axum::extract::Request) {
    let _ = axum::body::to_bytes(request.into_body(), MAX_READ_BYTES).await;
}

/// A list's `limit`: `default` unless given, at most 1,000.
fn page_limit(q: &std::collections::HashMap<String, String>, default: u64) -> ApiResult<usize> {
    Ok(query_u64(q, "limit")?.unwrap_or(default).min(1000) as usize)
}

// ---------------------------------------------------------------- views

#[derive(Serialize)]
struct UnbondingView {
    amount: Token,
    release_at_secs: u64,
}

#[derive(Serialize)]
struct AccountView {
    id: AccountId,
    nonce: u64,
    token: Token,
    usd: Usd,
    staked: Token,
    unbonding: Vec<UnbondingView>,
    vesting: Token,
    /// Of `vesting`, what has vested by the chain's now: what a claim
    /// would move to the balance (at least: the claim's block is later).
    vested: Token,
    /// When all of `vesting` will have vested (chain time, s); none when
    /// nothing vests.
    vesting_until_secs: Option<u64>,
    /// When nothing has vested yet, the chain time from which a claim
    /// releases something; none when something has, or nothing vests.
    first_release_secs: Option<u64>,
    node: bool,
    oracle: bool,
    open_channels: u32,
}

impl AccountView {
    fn of(a: &Account, now_secs: u64, vesting_secs: u64) -> AccountView {
        let vesting_until_secs =
            a.tranches().map(|t| t.start_secs).max().filter(|_| !a.vesting_total().is_zero()).map(|s| s + vesting_secs);
        AccountView {
            id: a.id,
            nonce: a.nonce,
            token: a.token,
            usd: a.usd,
            staked: a.staked,
            unbonding: a.unbonding.iter().map(|u| UnbondingView { amount: u.amount, release_at_secs: u.release_at_secs }).collect(),
            vesting: a.vesting_total(),
            vested: tollway_ledger::economics::vesting::releasable(a, now_secs, vesting_secs),
            vesting_until_secs,
            first_release_secs: tollway_ledger::economics::vesting::first_release_secs(a, now_secs, vesting_secs),
            node: a.node.is_some(),
            oracle: a.oracle.is_some(),
            open_channels: a.open_channels,
        }
    }
}

#[derive(Serialize)]
struct ChannelView {
    id: Hash32,
    client: AccountId,
    node: AccountId,
    escrow: Usd,
    paid: Usd,
    paid_bytes: u64,
    expires_at_secs: u64,
}

impl ChannelView {
    fn of(id: &Hash32, c: &Channel) -> ChannelView {
        ChannelView {
            id: *id,
            client: c.client,
            node: c.node,
            escrow: c.escrow,
            paid: c.paid,
            paid_bytes: c.paid_bytes,
            expires_at_secs: c.expires_at_secs,
        }
    }
}

#[derive(Serialize)]
struct NodeView {
    id: AccountId,
    country: CountryCode,
    region: &'static str,
    addrs: Vec<std::net::IpAddr>,
    port_first: u16,
    port_last: u16,
    tls_key_pin: String,
    claimed_capacity_bps: u64,
    verified_capacity_bps: u64,
    /// The epoch of the last measurement by a quorum of oracles (none:
    /// never measured): a node unmeasured longer than the chain's
    /// `measurement_max_age` earns nothing on its heartbeat.
    measured_epoch: Option<u64>,
    price_usd_micro_per_gib: u64,
    price_usd_micro_per_hour: Option<u64>,
    reputation_ppm: u32,
    uptime_ppm: u32,
    latency_us: u32,
    active: bool,
    registered_epoch: u64,
    stake: Token,
    /// Paid at the last epoch's end (0: nothing); `/v1/nodes/{id}/epochs`
    /// has the epochs before.
    last_reward: Token,
    total_rewards: Token,
    total_slashed: Token,
    /// The over-claim strike the node's next measurement decides (none:
    /// no strike pending).
    strike: Option<StrikeView>,
    /// Its over-claim slashes so far, oldest first.
    slashes: Vec<crate::core::NodeSlash>,
}

/// A pending over-claim strike in an operator's terms (DESIGN §2 step 2,
/// ADR 0013): what struck the node, and what its next measurement does.
#[derive(Serialize)]
struct StrikeView {
    /// The epoch whose measurement struck the node.
    epoch: u64,
    /// What the oracles measured then.
    measured_capacity_bps: u64,
    /// The claim that epoch was judged against (the highest the node held
    /// in it, ADR 0014), whatever the node claims since.
    judged_claim_bps: u64,
    /// That claim over the measurement (ρ, ppm): what the strike was for.
    over_claim_ppm: u64,
    /// The claim the next measurement is judged against now, when it is
    /// not `judged_claim_bps` (none: the same): the highest the node holds
    /// in this epoch, so a claim lowered now counts from the next epoch,
    /// a raised one at once.
    next_judged_claim_bps: Option<u64>,
    /// A measurement of at least this clears the strike (ρ at most the
    /// slash threshold against the claim the next measurement is judged
    /// against).
    clears_at_bps: u64,
    /// If a disjoint set of oracles measures the same again, against that
    /// claim, the share of the bond and of the unvested rewards taken
    /// (ppm; at least the base share: any measurement below
    /// `clears_at_bps` takes that much)...
    slash_ppm: u64,
    /// ...which is this much now; and the claim is reset to the measurement.
    slash_estimate: Token,
    /// The end of the current epoch: the soonest a measurement decides the
    /// strike (chain time, s). It stays pending, and holds the bond
    /// (ADR 0013), through epochs without one.
    decided_at_earliest_secs: u64,
}

impl StrikeView {
    fn of(n: &Node, state: &tollway_ledger::State) -> Option<StrikeView> {
        use tollway_ledger::economics::{measure::rho_ppm, slash::over_claim_fraction_ppm, slash::over_claim_slash_estimate};
        let strike = n.strike.as_ref()?;
        let p = &state.params;
        let index = state.node_index.get(&n.operator).copied()? as usize;
        let next_judged_claim_bps =
            state.node_epochs.get(index).map_or(n.spec.claimed_capacity_bps, |e| e.judged_claim_bps(n.spec.claimed_capacity_bps));
        let next_over_claim_ppm = rho_ppm(next_judged_claim_bps, strike.measured_capacity_bps);
        let slash_ppm = over_claim_fraction_ppm(p, next_over_claim_ppm);
        // The slash would come at the epoch's end, after what has vested
        // by then is released.
        let decided_at_earliest_secs = state.epoch_start_secs + p.epoch_secs;
        let acct = &state.accounts[n.account as usize];
        let slash_estimate = over_claim_slash_estimate(p, acct, next_over_claim_ppm, decided_at_earliest_secs);
        Some(StrikeView {
            epoch: strike.epoch,
            measured_capacity_bps: strike.measured_capacity_bps,
            judged_claim_bps: strike.judged_claim_bps,
            over_claim_ppm: rho_ppm(strike.judged_claim_bps, strike.measured_capacity_bps),
            next_judged_claim_bps: (next_judged_claim_bps != strike.judged_claim_bps).then_some(next_judged_claim_bps),
            // ρ is floored, so at least claim / threshold, rounded up, clears.
            clears_at_bps: (u128::from(next_judged_claim_bps) * tollway_types::PPM)
                .div_ceil(u128::from(p.rho_slash_min_ppm).max(1))
                .try_into()
                .unwrap_or(u64::MAX),
            slash_ppm: u64::try_from(slash_ppm).unwrap_or(u64::MAX),
            slash_estimate,
            decided_at_earliest_secs,
        })
    }
}

impl NodeView {
    fn of(n: &Node, state: &tollway_ledger::State, slashes: &[crate::core::NodeSlash]) -> NodeView {
        NodeView {
            id: n.operator,
            country: n.spec.country,
            region: n.region.name(),
            addrs: n.spec.addrs.clone(),
            port_first: n.spec.port_first,
            port_last: n.spec.port_last,
            tls_key_pin: tollway_types::keys::hex(&n.spec.tls_key_pin),
            claimed_capacity_bps: n.spec.claimed_capacity_bps,
            verified_capacity_bps: n.verified_capacity_bps,
            measured_epoch: n.measured_epoch,
            price_usd_micro_per_gib: n.spec.price_usd_micro_per_gib,
            price_usd_micro_per_hour: n.spec.price_usd_micro_per_hour,
            reputation_ppm: n.reputation_ppm,
            uptime_ppm: n.uptime_ppm,
            latency_us: n.latency_us,
            active: n.active,
            registered_epoch: n.registered_epoch,
            stake: state.accounts[n.account as usize].staked,
            last_reward: n.last_reward,
            total_rewards: n.total_rewards,
            total_slashed: n.total_slashed,
            strike: StrikeView::of(n, state),
            slashes: slashes.to_vec(),
        }
    }
}

#[derive(Serialize)]
struct OracleView {
    id: AccountId,
    addr: std::net::IpAddr,
    active_from_epoch: u64,
    retired_from_epoch: Option<u64>,
    deviation_strikes: u32,
    stake: Token,
    total_rewards: Token,
    total_slashed: Token,
}

impl OracleView {
    fn of(o: &Oracle, state: &tollway_ledger::State) -> OracleView {
        OracleView {
            id: o.operator,
            addr: o.addr,
            active_from_epoch: o.active_from_epoch,
            retired_from_epoch: o.retired_from_epoch,
            deviation_strikes: o.deviation_strikes,
            stake: state.accounts[o.account as usize].staked,
            total_rewards: o.total_rewards,
            total_slashed: o.total_slashed,
        }
    }
}

/// A tx's status with what it did (committed) or why it failed (rejected).
fn tx_view(shared: &Shared, id: &TxId, state: Option<TxState>) -> ApiResult<(StatusCode, Value)> {
    let Some(state) = state else {
        return Err(ApiError::not_found("unknown_tx", format!("tx {id} is not pending, committed or recently rejected")));
    };
    let id_hex = id.to_hex();
    Ok(match state {
        TxState::Pending => (StatusCode::ACCEPTED, json!({"id": id_hex, "status": "pending"})),
        TxState::Committed { height, index } => {
            let events = shared.core().events(id).map_err(ApiError::internal)?;
            (StatusCode::OK, json!({"id": id_hex, "status": "committed", "height": height, "index": index, "events": events}))
        }
        TxState::Rejected { code, message } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"id": id_hex, "status": "rejected", "error": {"code": code, "message": message}}),
        ),
    })
}

// ---------------------------------------------------------------- handlers

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}

async fn status(State(s): State<Arc<Shared>>) -> Json<Value> {
    let core = s.core();
    let tip = core.tip();
    let st = core.state();
    Json(json!({
        "chain_id": st.chain_id,
        "height": tip.height,
        "tip_hash": tip.hash(),
        "state_root": tip.state_root,
        "time_ms": tip.time_ms,
        "now_ms": crate::node::now_ms(),
        "epoch": st.epoch,
        "epoch_start_secs": st.epoch_start_secs,
        "epoch_secs": st.params.epoch_secs,
        "mempool_txs": core.mempool_len(),
        "block_interval_ms": s.config.block_interval.as_millis() as u64,
        "idle_heartbeat_ms": s.config.idle_heartbeat_ms,
        "min_fee_token": st.params.min_fee_token,
        "min_fee_usd": st.params.min_fee_usd,
        "min_node_stake": st.params.min_node_stake,
        "min_channel_escrow_usd": st.params.min_channel_escrow,
        "channel_max_lifetime_secs": st.params.channel_max_lifetime_secs,
        "channel_close_grace_secs": st.params.channel_close_grace_secs,
        // What an over-claim costs (DESIGN §2 step 2), for a wallet that
        // raises a claim: ρ = claimed / verified.
        "rho_reward_on_claim_max_ppm": st.params.rho_reward_on_claim_max_ppm,
        "rho_slash_min_ppm": st.params.rho_slash_min_ppm,
        "slash_base_ppm": st.params.slash_base_ppm,
        "slash_per_rho_ppm": st.params.slash_per_rho_ppm,
        "slash_max_ppm": st.params.slash_max_ppm,
        "gateway": st.gateway,
        "consensus": "solo",
        "uptime_secs": s.started.elapsed().as_secs(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitJson {
    tx_hex: Option<String>,
    tx: Option<SignedTx>,
}

async fn submit(
    State(s): State<Arc<Shared>>,
    Extension(client): Extension<ClientKey>,
    headers: HeaderMap,
    Query(q): QueryMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match submit_inner(&s, client, &headers, &q, body).await {
        Ok((code, v)) => (code, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The body, or our JSON error for what axum refused (413 past the read
/// limit) or for a body over `limit` (413, saying `too_large` of its
/// length).
fn read_body(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
    too_large: impl FnOnce(usize) -> String,
) -> ApiResult<Bytes> {
    let body = body.map_err(|r| {
        if let Some(slow) = too_slow(&r) {
            return ApiError::new(StatusCode::REQUEST_TIMEOUT, "too_slow", slow.to_string());
        }
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "bad_body"
        };
        ApiError::new(
            status,
            code,
            format!("{} (the limit is {limit} bytes)", r.body_text()),
        )
    })?;
    if body.len() > limit {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", too_large(body.len())));
    }
    Ok(body)
}

/// The listener's body deadline, if that is why the body could not be
/// read (it is somewhere in the rejection's chain of sources).
fn too_slow(r: &BytesRejection) -> Option<&BodyTooSlow> {
    let mut source = std::error::Error::source(r);
    while let Some(e) = source {
        if let Some(slow) = e.downcast_ref::<BodyTooSlow>() {
            return Some(slow);
        }
        source = e.source();
    }
    None
}

/// `wait` and `timeout_ms` of the submit routes.
fn wait_query(q: &std::collections::HashMap<String, String>) -> ApiResult<Option<Duration>> {
    let wait = match q.get("wait").map(String::as_str) {
        None | Some("none") => false,
        Some("commit") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "bad_query",
                format!("wait={other:?}: use wait=commit"),
            ))
        }
    };
    let timeout =
        Duration::from_millis(query_u64(q, "timeout_ms")?.unwrap_or(10_000)).min(MAX_WAIT);
    Ok(wait.then_some(timeout))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Decodes one tx from untrusted bytes; the error is what the single route
/// answers.
fn decode_tx(raw: Bytes) -> ApiResult<Incoming> {
    if raw.len() > MAX_TX_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "a tx is at most {MAX_TX_BYTES} bytes; this one is {}",
                raw.len()
            ),
        ));
    }
    let stx = SignedTx::decode(&raw).map_err(|e| {
        ApiError::bad_request("bad_encoding", format!("not a Tollway transaction: {e}"))
    })?;
    // `decode` accepted `raw` as canonical: its hash is the id.
    let id = tollway_types::tx::tx_id_of_encoding(&raw);
    Ok(Incoming { stx, id, raw })
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "too many submissions are waiting; retry shortly",
    )
}

/// Hands one request's txs to the verifier and waits for its answer: one
/// result per tx, in order. Refused whole (503) if the verifier's queue of
/// txs is full.
async fn enqueue(s: &Shared, txs: Vec<Incoming>) -> ApiResult<Vec<Result<(), SubmitRefusal>>> {
    let n = txs.len();
    if s.queued_txs.fetch_add(n, Ordering::SeqCst) + n > s.config.verify_queue {
        s.queued_txs.fetch_sub(n, Ordering::SeqCst);
        return Err(busy());
    }
    let (reply, answer) = oneshot::channel();
    if s.submit.try_send(Submission { txs, reply }).is_err() {
        s.queued_txs.fetch_sub(n, Ordering::SeqCst);
        return Err(busy());
    }
    answer
        .await
        .map_err(|_| ApiError::internal("the verifier stopped"))
}

/// With `wait=commit`, the wait holds one of the long-poll places
/// (`Shared::waits`), taken once the tx is accepted. If there is none, the
/// tx stays submitted and the answer comes at once: 202 `pending`, with
/// `wait_refused` saying why it was not waited for. Refusing the
/// submission instead would let whoever holds every place refuse every
/// wallet's (wallets submit with `wait=commit`); and the tx is submitted
/// once either way, so a client that polls for it, or sends it again
/// (refused as a duplicate or a stale nonce), loses nothing.
async fn submit_inner(
    s: &Arc<Shared>,
    client: ClientKey,
    headers: &HeaderMap,
    q: &std::collections::HashMap<String, String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Value)> {
    let json = is_json(headers);
    let (limit, form) = if json {
        (MAX_JSON_BODY_BYTES, "as JSON")
    } else {
        (MAX_BINARY_BODY_BYTES, "in binary")
    };
    let body = read_body(body, limit, |len| {
        format!("the body is {len} bytes; a submission {form} is at most {limit} (a tx at most {MAX_TX_BYTES})")
    })?;
    let wait = wait_query(q)?;
    let raw: Bytes = if json {
        let parsed: SubmitJson = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("malformed_json", format!("malformed JSON: {e}")))?;
        match (parsed.tx_hex, parsed.tx) {
            (Some(hex), None) => tollway_types::keys::parse_hex(&hex)
                .ok_or_else(|| ApiError::bad_request("malformed_json", "tx_hex is not hex digits"))?
                .into(),
            (None, Some(tx)) => tx.encode().into(),
            _ => {
                return Err(ApiError::bad_request(
                    "malformed_json",
                    "give exactly one of \"tx_hex\" or \"tx\"",
                ))
            }
        }
    } else {
        body
    };
    let incoming = decode_tx(raw)?;
    let id = incoming.id;
    let result = enqueue(s, vec![incoming])
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal("the verifier gave no answer"))?;
    if let Err(r) = result {
        return Err(ApiError::new(status_of(r.code), r.code, r.message));
    }
    let Some(timeout) = wait else {
        return Ok((
            StatusCode::ACCEPTED,
            json!({"id": id.to_hex(), "status": "pending"}),
        ));
    };
    let _place = match s.waits.take(client) {
        Ok(place) => place,
        Err(why) => {
            let refused = no_wait_place(why, &format!("GET /v1/txs/{id}"));
            return Ok((
                StatusCode::ACCEPTED,
                json!({"id": id.to_hex(), "status": "pending", "wait_refused": wait_refused_view(&refused)}),
            ));
        }
    };
    let state = s
        .wait_final(&id, timeout)
        .await
        .map_err(ApiError::internal)?;
    tx_view(s, &id, state)
}

/// Splits a binary batch: each tx preceded by its length as a 4-byte
/// little-endian unsigned integer. Slices share the body's buffer.
fn split_binary_batch(body: &Bytes) -> ApiResult<Vec<Bytes>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let broken = |what: &str| {
            ApiError::bad_request(
                "bad_encoding",
                format!("the batch's framing is broken at byte {at}: {what}; see /openapi.json"),
            )
        };
        let len_bytes: [u8; 4] = body
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| broken("a length prefix is cut short"))?;
        let len = u32::from_le_bytes(len_bytes) as usize;
        let start = at + 4;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| broken("a tx is longer than what is left"))?;
        out.push(body.slice(start..end));
        at = end;
        if out.len() > MAX_BATCH_TXS {
            break;
        }
    }
    Ok(out)
}

fn too_many_in_batch() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("a batch holds at most {MAX_BATCH_TXS} txs"),
    )
}

/// A JSON batch's hex strings, read one at a time and refused at the first
/// past `MAX_BATCH_TXS`: read whole first, a 2 MiB body of `""` was about
/// 700,000 strings (~48 MiB) before its count was checked.
fn json_batch_hexes(body: &[u8]) -> ApiResult<Vec<String>> {
    use serde::de::{DeserializeSeed, Error, SeqAccess, Visitor};
    /// Sets its flag when it stops for the cap, so that error is told
    /// apart from malformed JSON.
    struct Capped<'a>(&'a mut bool);
    impl<'de> Visitor<'de> for Capped<'_> {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of hex-encoded txs")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut hexes = Vec::new();
            while let Some(hex) = seq.next_element::<String>()? {
                if hexes.len() == MAX_BATCH_TXS {
                    *self.0 = true;
                    return Err(A::Error::custom("too many txs"));
                }
                hexes.push(hex);
            }
            Ok(hexes)
        }
    }
    impl<'de> DeserializeSeed<'de> for Capped<'_> {
        type Value = Vec<String>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
            d.deserialize_seq(self)
        }
    }
    let mut past_cap = false;
    let mut reader = serde_json::Deserializer::from_slice(body);
    let hexes = Capped(&mut past_cap).deserialize(&mut reader).and_then(|h| reader.end().map(|()| h));
    hexes.map_err(|e| {
        if past_cap {
            return too_many_in_batch();
        }
        ApiError::bad_request(
            "malformed_json",
            format!("a JSON batch is an array of hex-encoded txs: {e}"),
        )
    })
}

/// One tx's entry in a batch answer: a refusal in the single route's error
/// shape (with the tx id when it decoded).
fn refused_view(id: Option<TxId>, e: &ApiError) -> Value {
    let mut v = json!({"status": "refused", "error": {"code": e.code, "message": e.message}});
    if let Some(id) = id {
        v["id"] = json!(id.to_hex());
    }
    v
}

async fn submit_batch(
    State(s): State<Arc<Shared>>,
    Extension(client): Extension<ClientKey>,
    headers: HeaderMap,
    Query(q): QueryMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match submit_batch_inner(&s, client, &headers, &q, body).await {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/txs/batch`: many txs in one request, all their signatures
/// checked in one batch, one result per tx in order. A bad tx refuses only
/// itself; the batch as a whole is refused only for its size, its framing
/// or a full verifier queue. With `wait=commit` the batch's wait holds one
/// long-poll place, and without one its accepted txs stay submitted and
/// are answered `pending` at once, as on the single route.
async fn submit_batch_inner(
    s: &Arc<Shared>,
    client: ClientKey,
    headers: &HeaderMap,
    q: &std::collections::HashMap<String, String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Value> {
    let body = read_body(body, MAX_BATCH_BODY_BYTES, |len| {
        format!("the body is {len} bytes; a batch is at most {MAX_BATCH_BODY_BYTES} bytes and {MAX_BATCH_TXS} txs")
    })?;
    let wait = wait_query(q)?;
    // Each entry: the tx's bytes, or why they could not be read.
    let raws: Vec<ApiResult<Bytes>> = if is_json(headers) {
        json_batch_hexes(&body)?
            .iter()
            .map(|h| {
                tollway_types::keys::parse_hex(h)
                    .map(Bytes::from)
                    .ok_or_else(|| ApiError::bad_request("bad_encoding", "not hex digits"))
            })
            .collect()
    } else {
        split_binary_batch(&body)?.into_iter().map(Ok).collect()
    };
    if raws.len() > MAX_BATCH_TXS {
        return Err(too_many_in_batch());
    }
    if raws.is_empty() {
        return Err(ApiError::bad_request(
            "empty_batch",
            "the batch holds no tx",
        ));
    }
    // Decode each; the ones that decode go to the verifier together.
    let mut entries: Vec<(Option<TxId>, Option<ApiError>)> = Vec::with_capacity(raws.len());
    let mut incoming = Vec::with_capacity(raws.len());
    for raw in raws {
        match raw.and_then(decode_tx) {
            Ok(t) => {
                entries.push((Some(t.id), None));
                incoming.push(t);
            }
            Err(e) => entries.push((None, Some(e))),
        }
    }
    let mut verdicts = if incoming.is_empty() {
        Vec::new()
    } else {
        enqueue(s, incoming).await?
    }
    .into_iter();
    for entry in entries.iter_mut().filter(|(_, e)| e.is_none()) {
        if let Some(Err(r)) = verdicts.next() {
            entry.1 = Some(ApiError::new(status_of(r.code), r.code, r.message));
        }
    }
    let any_accepted = entries.iter().any(|(id, e)| id.is_some() && e.is_none());
    // The place, if any, is held until the answer is made.
    let (deadline, _place, wait_refused) = match wait {
        Some(t) if any_accepted => match s.waits.take(client) {
            Ok(place) => (Some(tokio::time::Instant::now() + t), Some(place), None),
            Err(why) => (None, None, Some(wait_refused_view(&no_wait_place(why, "GET /v1/txs/{id} for each tx")))),
        },
        // No wait, or nothing accepted to wait for.
        _ => (None, None, None),
    };
    let mut results = Vec::with_capacity(entries.len());
    let (mut accepted, mut refused) = (0u64, 0u64);
    for (id, error) in &entries {
        match (id, error) {
            (_, Some(e)) => {
                refused += 1;
                results.push(refused_view(*id, e));
            }
            (Some(id), None) => {
                accepted += 1;
                let Some(deadline) = deadline else {
                    results.push(json!({"id": id.to_hex(), "status": "pending"}));
                    continue;
                };
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let state = s.wait_final(id, left).await.map_err(ApiError::internal)?;
                results.push(tx_view(s, id, state)?.1);
            }
            (None, None) => {
                return Err(ApiError::internal(
                    "a batch entry with neither id nor error",
                ))
            }
        }
    }
    let mut answer = json!({"accepted": accepted, "refused": refused, "results": results});
    if let Some(why) = wait_refused {
        answer["wait_refused"] = why;
    }
    Ok(answer)
}

async fn tx_status(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult<Response> {
    let id = parse_hash(&id, "tx")?;
    let state = s.core().status(&id).map_err(ApiError::internal)?;
    let (code, v) = tx_view(&s, &id, state)?;
    Ok((code, Json(v)).into_response())
}

/// Holds one of the long-poll places (`Shared::waits`) while it waits; a
/// tx already committed, rejected or unknown is answered without one.
async fn tx_wait(
    State(s): State<Arc<Shared>>,
    Extension(client): Extension<ClientKey>,
    Path(id): Path<String>,
    Query(q): QueryMap,
) -> ApiResult<Response> {
    let id = parse_hash(&id, "tx")?;
    let timeout = Duration::from_millis(query_u64(&q, "timeout_ms")?.unwrap_or(10_000)).min(MAX_WAIT);
    let state = s.core().status(&id).map_err(ApiError::internal)?;
    let state = if matches!(state, Some(TxState::Pending)) && !timeout.is_zero() {
        let _place = s.waits.take(client).map_err(|why| no_wait_place(why, &format!("GET /v1/txs/{id}")))?;
        s.wait_final(&id, timeout).await.map_err(ApiError::internal)?
    } else {
        state
    };
    let (code, v) = tx_view(&s, &id, state)?;
    Ok((code, Json(v)).into_response())
}

async fn account(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult<Json<AccountView>> {
    let id = parse_key(&id)?;
    let core = s.core();
    let st = core.state();
    let idx = st.account_index.get(&id).ok_or_else(|| {
        ApiError::not_found("unknown_account", format!("account {id} does not exist: it has never received funds"))
    })?;
    // The chain's now as the wallet reckons it: the tip's time lags by up
    // to the idle heartbeat, and block times never run behind the clock.
    let now_secs = core.tip().time_ms.max(crate::node::now_ms()) / 1000;
    Ok(Json(AccountView::of(&st.accounts[*idx as usize], now_secs, st.params.vesting_secs)))
}

/// By channel id, a page at a time: a node may hold any number. A client
/// holds at most 256, so its channels fit the default page.
async fn account_channels(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): QueryMap,
) -> ApiResult<Json<Vec<ChannelView>>> {
    let id = parse_key(&id)?;
    let after = q.get("after").map(|a| parse_hash(a, "channel")).transpose()?;
    let limit = page_limit(&q, 1000)?;
    let core = s.core();
    // A range of the ledger's index, not a scan of every channel: this
    // runs under the lock the block producer needs.
    let list = core.state().channels_of(id, after).take(limit).map(|(cid, c)| ChannelView::of(cid, c)).collect();
    Ok(Json(list))
}

async fn channel(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult<Json<ChannelView>> {
    let id = parse_hash(&id, "channel")?;
    let core = s.core();
    let c = core.state().channels.get(&id).ok_or_else(|| ApiError::not_found("unknown_channel", format!("no open channel {id}")))?;
    Ok(Json(ChannelView::of(&id, c)))
}

async fn nodes(State(s): State<Arc<Shared>>, Query(q): QueryMap) -> ApiResult<Json<Vec<NodeView>>> {
    let region = q
        .get("region")
        .map(|r| {
            MacroRegion::from_name(r).ok_or_else(|| ApiError::bad_request("bad_query", format!("region={r:?} is not a region name")))
        })
        .transpose()?;
    let country = q
        .get("country")
        .map(|c| CountryCode::parse(c).map_err(|e| ApiError::bad_request("bad_query", e.to_string())))
        .transpose()?;
    let active_only = match q.get("active").map(String::as_str) {
        None | Some("true") => true,
        Some("false") | Some("any") => false,
        Some(v) => return Err(ApiError::bad_request("bad_query", format!("active={v:?}: use true or any"))),
    };
    let query = NodeQuery {
        active_only,
        region,
        country,
        max_price_usd_micro_per_gib: query_u64(&q, "max_price_usd_micro_per_gib")?,
        min_verified_capacity_bps: query_u64(&q, "min_verified_capacity_bps")?,
        min_reputation_ppm: query_u64(&q, "min_reputation_ppm")?,
    };
    let limit = page_limit(&q, 100)?;
    // Filtered and ordered outside the core's lock, on the list as of the
    // tip (`directory`). The records are read as they are now: a block
    // since the copy may have changed one, so each is checked against the
    // query again, and the order is at most a block old.
    let directory = s.node_directory().await.map_err(ApiError::internal)?;
    let page = query.page(&directory, limit);
    let core = s.core();
    let st = core.state();
    let views = page
        .into_iter()
        .map(|i| (i, &st.nodes[i as usize]))
        .filter(|&(i, n)| query.matches(&NodeRow::of(i, n)))
        .map(|(_, n)| NodeView::of(n, st, core.node_slashes(&n.operator)))
        .collect();
    Ok(Json(views))
}

async fn node(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult<Json<NodeView>> {
    let id = parse_key(&id)?;
    let core = s.core();
    let st = core.state();
    let idx = st.node_index.get(&id).ok_or_else(|| ApiError::not_found("unknown_node", format!("{id} is not a registered node")))?;
    Ok(Json(NodeView::of(&st.nodes[*idx as usize], st, core.node_slashes(&id))))
}

/// A node's figures at each epoch's end, oldest first from epoch `from`, a
/// page at a time as `/v1/epochs` (the store keeps the chain's last
/// `NODE_EPOCHS_KEPT` epochs, whichever nodes were in them).
async fn node_epochs(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): QueryMap,
) -> ApiResult<Json<Vec<tollway_store::NodeEpochRow>>> {
    let id = parse_key(&id)?;
    let from = query_u64(&q, "from")?.unwrap_or(0);
    let limit = page_limit(&q, 100)?;
    let core = s.core();
    let Some(&index) = core.state().node_index.get(&id) else {
        return Err(ApiError::not_found("unknown_node", format!("{id} is not a registered node")));
    };
    core.store().node_epochs(index, from, limit).map(Json).map_err(ApiError::internal)
}

/// In registration order, a page at a time (`from` is an index in it).
async fn oracles(State(s): State<Arc<Shared>>, Query(q): QueryMap) -> ApiResult<Json<Vec<OracleView>>> {
    let from = query_u64(&q, "from")?.unwrap_or(0);
    let limit = page_limit(&q, 100)?;
    let core = s.core();
    let st = core.state();
    let page = usize::try_from(from).ok().and_then(|f| st.oracles.get(f..)).unwrap_or_default();
    Ok(Json(page.iter().take(limit).map(|o| OracleView::of(o, st)).collect()))
}

async fn block(State(s): State<Arc<Shared>>, Path(height): Path<String>) -> ApiResult<Json<Value>> {
    let height: u64 = height.parse().map_err(|_| ApiError::bad_request("bad_id", format!("{height:?} is not a block height")))?;
    let block = s.core().store().block(height).map_err(ApiError::internal)?;
    let b = block.ok_or_else(|| ApiError::not_found("unknown_block", format!("no block at height {height} yet")))?;
    let ids: Vec<String> = b.txs.iter().map(|t| t.id().to_hex()).collect();
    Ok(Json(json!({"hash": b.header.hash(), "header": b.header, "commit": b.commit, "tx_ids": ids})))
}

fn list_epochs(s: &Shared, q: &std::collections::HashMap<String, String>) -> ApiResult<Vec<tollway_store::EpochRecord>> {
    let from = query_u64(q, "from")?.unwrap_or(0);
    let limit = page_limit(q, 100)?;
    s.core().store().epochs(from, limit).map_err(ApiError::internal)
}

async fn epochs(State(s): State<Arc<Shared>>, Query(q): QueryMap) -> ApiResult<Json<Vec<tollway_store::EpochRecord>>> {
    list_epochs(&s, &q).map(Json)
}

async fn epoch(State(s): State<Arc<Shared>>, Path(n): Path<String>) -> ApiResult<Json<tollway_store::EpochRecord>> {
    let n: u64 = n.parse().map_err(|_| ApiError::bad_request("bad_id", format!("{n:?} is not an epoch number")))?;
    let found = s.core().store().epochs(n, 1).map_err(ApiError::internal)?;
    found
        .into_iter()
        .find(|e| e.report.epoch == n)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("unknown_epoch", format!("epoch {n} has not ended yet")))
}

async fn supply(State(s): State<Arc<Shared>>) -> Json<Value> {
    let core = s.core();
    let st = core.state();
    let sp = &st.supply;
    let price = st.pool.price_usd_micro_per_token();
    Json(json!({
        "token": {
            "genesis": sp.genesis_token, "minted": sp.minted_token, "burned": sp.burned_token,
            "total": sp.total_token(), "scheduled": sp.scheduled_token,
        },
        "usd": {
            "genesis": sp.genesis_usd, "deposited": sp.deposited_usd, "withdrawn": sp.withdrawn_usd, "total": sp.total_usd(),
        },
        "pool": {"token": st.pool.token, "usd": st.pool.usd, "price_usd_per_token": Usd(price)},
        "burn_queue_usd": st.burn_queue_usd,
        // What the last epoch's burn held back for its price bound burns
        // after the next sale under it (ADR 0018); what has, so far.
        "held_burn": {
            "price_cap_usd_per_token": Usd(st.held_burn.price_cap_usd_micro_per_token()),
            "burned_usd": st.held_burn.burned_usd, "burned_token": st.held_burn.burned_token,
        },
        "emission_carry": st.emission_carry,
        "epoch": st.epoch,
        "height": core.tip().height,
    }))
}

async fn mint_burn(State(s): State<Arc<Shared>>, Query(q): QueryMap) -> ApiResult<Json<Vec<Value>>> {
    let list = list_epochs(&s, &q)?
        .into_iter()
        .map(|e| {
            let r = &e.report;
            json!({
                "epoch": r.epoch, "height": e.height, "time_ms": e.time_ms,
                "minted": r.minted(), "minted_uptime": r.minted_uptime, "minted_usage": r.minted_usage,
                "minted_oracle": r.minted_oracle, "burned": r.burned_token, "slashed_burned": r.slashed_burned,
                "settled_usd": r.settled_usd, "burn_usd": r.burn_usd, "price_usd_per_token": Usd(r.price_usd_micro_per_token),
            })
        })
        .collect();
    Ok(Json(list))
}

async fn slashes(State(s): State<Arc<Shared>>, Query(q): QueryMap) -> ApiResult<Json<Vec<Value>>> {
    let mut list = Vec::new();
    for e in list_epochs(&s, &q)? {
        for sl in &e.report.slashes {
            list.push(json!({"epoch": e.report.epoch, "height": e.height, "time_ms": e.time_ms, "slash": sl}));
        }
    }
    Ok(Json(list))
}

/// Places for requests that hold their connection by design, in all and
/// per client: event streams (`ApiLimits::max_event_streams`,
/// `max_event_streams_per_ip`) and long-polls (`max_waits`,
/// `max_waits_per_ip`). A request holds one of each kind's for as long as
/// it is open.
pub(crate) struct Places {
    all: Arc<Semaphore>,
    max_all: usize,
    per_client: Arc<PerAddress>,
    max_per_client: usize,
}

/// One request's places, given back when it is dropped (an event stream's
/// connection closed, or found gone at a write; a wait answered).
struct Place {
    _all: OwnedSemaphorePermit,
    _client: AddressSlot,
}

/// Why a request found no place: its client holds all of its own (429),
/// or the node all it serves (503). Each holds that maximum.
enum NoPlace {
    Client(usize),
    All(usize),
}

impl Places {
    pub(crate) fn new(max_all: usize, max_per_client: usize) -> Places {
        Places { all: Arc::new(Semaphore::new(max_all)), max_all, per_client: PerAddress::new(max_per_client), max_per_client }
    }

    /// A place for one more request of `client`, or why not.
    fn take(&self, client: ClientKey) -> Result<Place, NoPlace> {
        let own = self.per_client.admit(client.0).ok_or(NoPlace::Client(self.max_per_client))?;
        let all = self.all.clone().try_acquire_owned().map_err(|_| NoPlace::All(self.max_all))?;
        Ok(Place { _all: all, _client: own })
    }
}

fn no_stream_place(why: NoPlace) -> ApiError {
    match why {
        NoPlace::Client(n) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "stream_limit",
            format!("this address holds {n} event streams, the most it may; close one first"),
        ),
        NoPlace::All(n) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "streams_full",
            format!("the node serves {n} event streams, the most it may; retry later"),
        ),
    }
}

/// A long-poll refused its place; `poll` names the route that answers at
/// once instead.
fn no_wait_place(why: NoPlace, poll: &str) -> ApiError {
    match why {
        NoPlace::Client(n) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "wait_limit",
            format!("this address holds {n} waiting requests, the most it may; wait for one to finish, or poll {poll} without waiting"),
        ),
        NoPlace::All(n) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "waits_full",
            format!("the node holds {n} waiting requests, the most it may; retry later, or poll {poll} without waiting"),
        ),
    }
}

/// What a submission with `wait=commit` says when its tx was accepted and
/// its wait found no place: the tx is in the mempool, and not waited for.
fn wait_refused_view(e: &ApiError) -> Value {
    json!({"code": e.code, "message": format!("the tx was accepted, and is not waited for: {}", e.message)})
}

async fn events(
    State(s): State<Arc<Shared>>,
    Extension(client): Extension<ClientKey>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let place = s.event_streams.take(client).map_err(no_stream_place)?;
    let stream = BroadcastStream::new(s.events.subscribe()).filter_map(move |item| {
        // The stream owns its places: they go back when it is dropped.
        let _place = &place;
        let ev = match item {
            Ok(ChainEvent::Block(c)) => SseEvent::default().event("block").json_data(json!({
                "height": c.header.height, "hash": c.hash, "time_ms": c.header.time_ms, "n_txs": c.header.n_txs,
                "state_root": c.header.state_root, "rejected": c.dropped.len(),
            })),
            Ok(ChainEvent::Epoch(e)) => SseEvent::default().event("epoch").json_data(&*e),
            // A slow reader missed some events: say so, and go on.
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                SseEvent::default().event("lagged").json_data(json!({"missed": n}))
            }
        };
        ev.ok().map(Ok)
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
