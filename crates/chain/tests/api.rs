//! The chain's HTTP API against a real node (real socket, real redb store,
//! the real block loop) started in-process: submission to durable commit,
//! every kind of bad input getting a clear 4xx with nothing written, the
//! event stream, metrics, and the OpenAPI file matching the routes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use tollway_chain::genesis::GenesisFile;
use tollway_chain::node::{self, NodeConfig};
use tollway_ledger::genesis::{Allocation, Genesis};
use tollway_ledger::Params;
use tollway_store::Store;
use tollway_types::{Amount, SignedTx, SigningKey, Token, Tx, TxBody, Usd};

struct TestChain {
    addr: SocketAddr,
    agent: ureq::Agent,
    running: node::RunningNode,
    joined: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

/// Stops the node as `tollway chain run` does before its runtime goes: a
/// runtime dropped under the block loop panicked in it ("being shutdown"),
/// noise in every test's output.
impl Drop for TestChain {
    fn drop(&mut self) {
        self.running.stop();
        if let Some(joined) = self.joined.take() {
            let _ = self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), joined).await });
        }
    }
}

const CHAIN: &str = "tollway-api-test";

fn key(label: &str) -> SigningKey {
    SigningKey::from_label(label)
}

fn start() -> TestChain {
    start_with(|_| {})
}

/// A node whose config `tweak` changes first.
fn start_with(tweak: impl FnOnce(&mut NodeConfig)) -> TestChain {
    start_chain(|_| {}, tweak)
}

/// A chain whose genesis parameters `params` changes, on a node whose
/// config `tweak` changes.
fn start_chain(params: impl FnOnce(&mut Params), tweak: impl FnOnce(&mut NodeConfig)) -> TestChain {
    let dir = tempfile::tempdir().unwrap();
    let seq = key("sequencer");
    let alloc = |l: &str| Allocation { account: key(l).public(), token: Token::units(1000), usd: Usd::units(100), staked: Token::ZERO };
    // Bonded enough for a node or an oracle.
    let staked = |l: &str, twy: u128| Allocation { account: key(l).public(), token: Token::ZERO, usd: Usd::units(10), staked: Token::units(twy) };
    let mut chain_params = Params::default_params();
    params(&mut chain_params);
    let file = GenesisFile {
        ledger: Genesis {
            chain_id: CHAIN.into(),
            genesis_time_secs: node::now_ms() / 1000,
            gateway: seq.public(),
            params: chain_params,
            allocations: vec![alloc("alice"), alloc("bob"), alloc("flooder"), staked("operator", 1000), staked("cheaper", 1000), staked("french", 1000), staked("oracle0", 5000), staked("oracle1", 5000), staked("oracle2", 5000)],
            pool_token: Token::units(100_000),
            pool_usd: Usd::units(10_000),
        },
        validators: vec![seq.public()],
    };
    let path = dir.path().join("chain.redb");
    tollway_chain::core::init_store(&path, &file.to_json(), &seq).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut config = NodeConfig { listen: "127.0.0.1:0".parse().unwrap(), block_interval: Duration::from_millis(100), ..NodeConfig::default() };
    config.core.mempool.max_per_account = 8;
    tweak(&mut config);
    let (running, joined) = rt.block_on(node::start(Store::open(&path).unwrap(), seq, config)).unwrap();
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    TestChain { addr: running.addr, agent, running, joined: Some(joined), rt, _dir: dir }
}

impl TestChain {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let mut r = self.agent.get(&self.url(path)).call().unwrap();
        let text = r.body_mut().read_to_string().unwrap();
        (r.status().as_u16(), serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }
    fn post(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, serde_json::Value) {
        let mut r = self.agent.post(&self.url(path)).header("Content-Type", content_type).send(body).unwrap();
        let text = r.body_mut().read_to_string().unwrap();
        (r.status().as_u16(), serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }
    fn submit_wait(&self, stx: &SignedTx) -> (u16, serde_json::Value) {
        self.post("/v1/txs?wait=commit&timeout_ms=10000", "application/octet-stream", &stx.encode())
    }
    fn nonce(&self, label: &str) -> u64 {
        self.get(&format!("/v1/accounts/{}", key(label).public()))
            .1["nonce"]
            .as_u64()
            .unwrap()
    }
    fn token(&self, label: &str) -> String {
        self.get(&format!("/v1/accounts/{}", key(label).public())).1["token"].as_str().unwrap().to_string()
    }
    fn state_root(&self) -> String {
        self.get("/v1/status").1["state_root"].as_str().unwrap().to_string()
    }
}

fn transfer(from: &str, to: &str, nonce: u64, twy: u128) -> SignedTx {
    signed(from, nonce, TxBody::Transfer { to: key(to).public(), amount: Amount::Token(Token::units(twy)) })
}

fn signed(from: &str, nonce: u64, body: TxBody) -> SignedTx {
    Tx { chain_id: CHAIN.into(), signer: key(from).public(), nonce, fee: Amount::Usd(Usd(100)), body }.sign(&key(from))
}

fn code(v: &serde_json::Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[test]
fn a_transfer_is_acknowledged_only_once_durable_and_then_queryable() {
    let c = start();
    let stx = transfer("alice", "bob", 0, 10);
    let (status, v) = c.submit_wait(&stx);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "committed");
    let height = v["height"].as_u64().unwrap();
    assert!(v["events"].to_string().contains("Transferred"), "{v}");
    assert_eq!(c.token("alice"), "990");
    assert_eq!(c.token("bob"), "1010");
    // The block that holds it is in the store, with the tx id in it.
    let (s, b) = c.get(&format!("/v1/blocks/{height}"));
    assert_eq!(s, 200);
    assert!(b["tx_ids"].to_string().contains(&stx.id().to_hex()));
    let (s, t) = c.get(&format!("/v1/txs/{}", stx.id()));
    assert_eq!((s, t["status"].as_str()), (200, Some("committed")));
    // JSON submission (hex form and the tx as JSON) works too.
    let hex = tollway_types::keys::hex(&transfer("alice", "bob", 1, 1).encode());
    let (s, v) = c.post("/v1/txs?wait=commit", "application/json", format!("{{\"tx_hex\":\"{hex}\"}}").as_bytes());
    assert_eq!(s, 200, "{v}");
    let json = serde_json::to_string(&transfer("alice", "bob", 2, 1)).unwrap();
    let (s, v) = c.post("/v1/txs?wait=commit", "application/json", format!("{{\"tx\":{json}}}").as_bytes());
    assert_eq!(s, 200, "{v}");
    assert_eq!(c.nonce("alice"), 3);
    // The supply, with the burn's queue and what the last burn held back
    // for its price bound (ADR 0018): nothing on this quiet chain.
    let (s, v) = c.get("/v1/supply");
    assert_eq!(s, 200, "{v}");
    assert!(v["burn_queue_usd"].is_string(), "{v}");
    let held = &v["held_burn"];
    assert_eq!(
        (held["price_cap_usd_per_token"].as_str(), held["burned_usd"].as_str(), held["burned_token"].as_str()),
        (Some("0"), Some("0"), Some("0")),
        "{v}"
    );
}

#[test]
fn an_accounts_channels_and_the_oracles_are_listed_a_page_at_a_time() {
    let c = start();
    let spec = tollway_ledger::testkit::node_spec("DE", "203.0.113.7", 100_000_000);
    assert_eq!(c.submit_wait(&signed("operator", 0, TxBody::RegisterNode(spec.clone()))).0, 200);
    let cheaper = tollway_types::NodeSpec { price_usd_micro_per_gib: spec.price_usd_micro_per_gib / 2, ..spec.clone() };
    assert_eq!(c.submit_wait(&signed("cheaper", 0, TxBody::RegisterNode(cheaper))).0, 200);
    // The best first (equal but for the price), a page of one.
    let best = |q: &str| c.get(&format!("/v1/nodes{q}")).1.as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let (op_hex, cheaper_hex) = (key("operator").public().to_string(), key("cheaper").public().to_string());
    assert_eq!(best(""), vec![cheaper_hex.clone(), op_hex.clone()]);
    assert_eq!(best("?limit=1"), vec![cheaper_hex.clone()]);
    // A node no oracle has measured says so (null), so a client can tell a
    // stale or missing measurement from a fresh one.
    let (s, listed) = c.get("/v1/nodes?limit=1");
    assert_eq!(s, 200);
    assert!(listed[0].as_object().is_some_and(|n| n.get("measured_epoch") == Some(&serde_json::Value::Null)), "{listed}");
    // The list the API filters is copied once per block: a node registered
    // in a later block is in it.
    let french = tollway_types::NodeSpec { country: tollway_types::CountryCode::parse("FR").unwrap(), ..spec };
    assert_eq!(c.submit_wait(&signed("french", 0, TxBody::RegisterNode(french))).0, 200);
    let french_hex = key("french").public().to_string();
    assert_eq!(best("?country=FR"), vec![french_hex.clone()]);
    let all = best("");
    assert_eq!((all.len(), &all[0]), (3, &cheaper_hex), "{all:?}");
    assert!(all.contains(&french_hex));
    let operator = key("operator").public();
    let expires_at_secs = node::now_ms() / 1000 + 3600;
    let open = |from: &str, nonce: u64| {
        let body = TxBody::OpenChannel { node: operator, escrow: Usd::units(1), expires_at_secs };
        let (s, v) = c.submit_wait(&signed(from, nonce, body));
        assert_eq!((s, v["status"].as_str()), (200, Some("committed")), "{v}");
    };
    open("alice", 0);
    open("alice", 1);
    open("bob", 0);
    let channels = |label: &str| {
        let (s, v) = c.get(&format!("/v1/accounts/{}/channels", key(label).public()));
        assert_eq!(s, 200, "{v}");
        v.as_array().unwrap().len()
    };
    assert_eq!((channels("alice"), channels("bob"), channels("operator"), channels("flooder")), (2, 1, 3, 0));
    // A node's, a page at a time, after the last one seen.
    let page = |q: &str| {
        let (s, v) = c.get(&format!("/v1/accounts/{operator}/channels{q}"));
        assert_eq!(s, 200, "{v}");
        v.as_array().unwrap().iter().map(|ch| ch["id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let all = page("");
    let first = page("?limit=2");
    assert_eq!(first, all[..2]);
    assert_eq!(page(&format!("?after={}", first[1])), all[2..]);
    let (s, v) = c.get(&format!("/v1/accounts/{operator}/channels?after=xyz"));
    assert_eq!((s, code(&v)), (400, "bad_id"), "{v}");

    for (i, o) in ["oracle0", "oracle1", "oracle2"].iter().enumerate() {
        let addr = format!("198.51.100.{}", i + 1).parse().unwrap();
        assert_eq!(c.submit_wait(&signed(o, 0, TxBody::RegisterOracle { addr })).0, 200);
    }
    let page = |q: &str| c.get(&format!("/v1/oracles{q}")).1.as_array().map(|a| a.len());
    assert_eq!((page(""), page("?limit=2"), page("?from=2"), page("?from=3"), page("?from=99999999999999999999")), (Some(3), Some(2), Some(1), Some(0), None));
    let (s, v) = c.get("/v1/oracles?from=99999999999999999999");
    assert_eq!((s, code(&v)), (400, "bad_query"), "{v}");
    let (s, v) = c.get(&format!("/v1/oracles?from={}", u64::MAX));
    assert_eq!((s, v.as_array().map(Vec::len)), (200, Some(0)), "{v}");
}

#[test]
fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let c = start();
    let (s, _) = c.submit_wait(&transfer("alice", "bob", 0, 1));
    assert_eq!(s, 200);
    let root = c.state_root();
    let height_before = c.get("/v1/status").1["height"].as_u64().unwrap();

    let (s, v) = c.post("/v1/txs", "application/json", b"{\"tx_hex\": ");
    assert_eq!((s, code(&v)), (400, "malformed_json"), "{v}");
    let (s, v) = c.post("/v1/txs", "application/octet-stream", b"\x01definitely not a tx");
    assert_eq!((s, code(&v)), (400, "bad_encoding"), "{v}");

    let mut forged = transfer("alice", "bob", 1, 500);
    forged.signature.0[3] ^= 1;
    let (s, v) = c.post("/v1/txs", "application/octet-stream", &forged.encode());
    assert_eq!((s, code(&v)), (400, "bad_signature"), "{v}");

    let replayed = transfer("alice", "bob", 0, 1);
    let (s, v) = c.post("/v1/txs", "application/octet-stream", &replayed.encode());
    assert_eq!((s, code(&v)), (409, "stale_nonce"), "{v}");

    let mut other_chain = Tx { chain_id: "another-chain".into(), ..transfer("alice", "bob", 1, 1).tx };
    other_chain.nonce = 1;
    let (s, v) = c.post("/v1/txs", "application/octet-stream", &other_chain.sign(&key("alice")).encode());
    assert_eq!((s, code(&v)), (400, "wrong_chain"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("another-chain"), "{v}");

    let (s, v) = c.post("/v1/txs", "application/octet-stream", &vec![1u8; 300 * 1024]);
    assert_eq!((s, code(&v)), (413, "too_large"), "{v}");
    // Far beyond any tx: the server stops reading and closes; it stays up.
    let huge = c.agent.post(&c.url("/v1/txs")).send(&vec![1u8; 8 << 20][..]);
    assert!(huge.map(|r| r.status().as_u16()).unwrap_or(413) == 413);

    let (s, v) = c.post("/v1/txs", "application/octet-stream", &transfer("nobody", "bob", 0, 1).encode());
    assert_eq!((s, code(&v)), (404, "unknown_account"), "{v}");

    let (s, v) = c.get("/v1/accounts/xyz");
    assert_eq!((s, code(&v)), (400, "bad_id"), "{v}");
    let (s, v) = c.get("/v1/nodes?min_verified_capacity_bps=lots");
    assert_eq!((s, code(&v)), (400, "bad_query"), "{v}");
    let (s, v) = c.get("/v1/nope");
    assert_eq!((s, code(&v)), (404, "not_found"), "{v}");

    // Nothing above reached a block, nor made one (the chain is idle).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.state_root(), root);
    assert_eq!(c.nonce("alice"), 1);
    assert_eq!(c.get("/v1/status").1["height"].as_u64().unwrap(), height_before, "refusals make no block");
}

/// A route asked with a method it does not serve was answered 405 with an
/// empty body, against openapi.json's "every refusal carries {"error": …}".
#[test]
fn a_wrong_method_gets_a_json_405_that_still_names_the_allowed_ones() {
    let c = start();
    let r = c.agent.post(&c.url("/v1/status")).send(&b""[..]).unwrap();
    assert_eq!(r.headers().get("allow").and_then(|v| v.to_str().ok()), Some("GET,HEAD"));
    let (s, v) = c.post("/v1/status", "application/json", b"{}");
    assert_eq!((s, code(&v)), (405, "method_not_allowed"), "{v}");
    let mut r = c.agent.delete(&c.url(&format!("/v1/accounts/{}", key("alice").public()))).call().unwrap();
    let v: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap_or_default();
    assert_eq!((r.status().as_u16(), code(&v)), (405, "method_not_allowed"), "{v}");
    let (s, v) = c.get("/v1/txs");
    assert_eq!((s, code(&v)), (405, "method_not_allowed"), "{v}");
}

#[test]
fn a_flood_from_one_account_is_cut_at_its_limit_while_others_get_through() {
    let c = start();
    let mut codes = std::collections::BTreeMap::new();
    // Eight pending per account (the test's limit); submit 40 without
    // waiting, faster than 100 ms blocks drain them.
    for n in 0..40 {
        let (s, v) = c.post("/v1/txs", "application/octet-stream", &transfer("flooder", "bob", n, 1).encode());
        *codes.entry((s, code(&v).to_string())).or_insert(0) += 1;
    }
    let refused: u32 = codes.iter().filter(|((s, _), _)| *s == 429 || *s == 422).map(|(_, n)| n).sum();
    assert!(refused > 0, "{codes:?}");
    assert!(codes.keys().all(|(s, c)| *s == 202 || c == "account_limit" || c == "nonce_too_far"), "{codes:?}");
    let (s, v) = c.submit_wait(&transfer("alice", "bob", 0, 1));
    assert_eq!(s, 200, "an honest account is unaffected: {v}");
}

#[test]
fn a_rejected_tx_is_reported_with_the_ledgers_reason() {
    let c = start();
    let (s, v) = c.submit_wait(&transfer("alice", "bob", 0, 5000));
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["status"], "rejected");
    assert_eq!(code(&v), "insufficient_token");
    assert!(v["error"]["message"].as_str().unwrap().contains("insufficient"), "{v}");
    assert_eq!(c.nonce("alice"), 0, "nothing happened");
}

#[test]
fn the_event_stream_carries_blocks_and_metrics_count_them() {
    let c = start();
    let mut sock = TcpStream::connect(c.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(sock, "GET /v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    let mut lines = BufReader::new(sock.try_clone().unwrap()).lines();
    // Past the response head, the stream is subscribed: the chain is idle
    // (a block only for a tx or an epoch, or after a minute), so a tx
    // makes the block it carries.
    while lines.next().is_some_and(|l| l.is_ok_and(|l| !l.is_empty())) {}
    let (s, _) = c.submit_wait(&transfer("alice", "bob", 0, 1));
    assert_eq!(s, 200);
    let mut saw_block = false;
    for _ in 0..200 {
        let Some(Ok(line)) = lines.next() else { break };
        if line.starts_with("event: block") {
            saw_block = true;
            break;
        }
    }
    assert!(saw_block, "no block event within the bounded read");
    let mut r = c.agent.get(&c.url("/metrics")).call().unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    for name in ["tollway_blocks_committed_total", "tollway_txs_committed_total", "tollway_block_height", "tollway_txs_submitted_total"] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    let _ = sock.read(&mut [0u8; 1]);
}

#[test]
fn the_openapi_file_lists_exactly_the_served_routes() {
    let spec: serde_json::Value = serde_json::from_str(tollway_chain::api::OPENAPI_JSON).unwrap();
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut served: Vec<(String, String)> =
        tollway_chain::api::ROUTES.iter().map(|(m, p, _)| (m.to_string(), p.to_string())).collect();
    served.sort();
    assert_eq!(documented, served);
    // The size limits it states are the ones served.
    let submit = spec["paths"]["/v1/txs"]["post"]["description"].as_str().unwrap();
    for limit in [tollway_chain::api::MAX_BINARY_BODY_BYTES, tollway_chain::api::MAX_JSON_BODY_BYTES] {
        assert!(submit.contains(&format!(" {limit} bytes")), "{limit} missing from: {submit}");
    }
    let batch = spec["paths"]["/v1/txs/batch"]["post"]["description"].as_str().unwrap();
    assert!(batch.contains(&format!("at most {} txs and 2 MiB ({} bytes)", tollway_chain::api::MAX_BATCH_TXS, tollway_chain::api::MAX_BATCH_BODY_BYTES)), "{batch}");
    let c = start();
    let (s, v) = c.get("/openapi.json");
    assert_eq!(s, 200);
    assert_eq!(v["openapi"], "3.1.0");
}

/// A query key a route does not read was ignored: `/v1/nodes?max_price_usd_per_gib=1`
/// (the CLI flag's name) answered every node. Each documented key is still
/// taken (a bad value is its own error), and any other is refused by name,
/// on routes that read none too.
#[test]
fn a_query_key_the_route_does_not_read_is_refused_by_name() {
    let spec: serde_json::Value = serde_json::from_str(tollway_chain::api::OPENAPI_JSON).unwrap();
    let c = start();
    let zero = "0".repeat(64);
    let ask = |method: &str, path: &str, query: &str| {
        let path = path.replace("{id}", &zero).replace("{height}", "0").replace("{epoch}", "0");
        let url = format!("{path}?{query}");
        if method == "post" { c.post(&url, "application/octet-stream", b"") } else { c.get(&url) }
    };
    let mut routes_with_queries = 0;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let keys: Vec<&str> = params.iter().filter(|p| p["in"] == "query").filter_map(|p| p["name"].as_str()).collect();
            let served = tollway_chain::api::ROUTES.iter().find(|r| r.0 == method && r.1 == path).unwrap();
            assert_eq!(served.2, &keys[..], "{method} {path}: the keys served are the keys documented");
            if keys.is_empty() {
                // A route that reads no query took any (`/v1/status?x=1`).
                let (s, v) = ask(method, path, "x=1");
                assert_eq!((s, code(&v)), (400, "bad_query"), "{method} {path}: {v}");
                assert!(v["error"]["message"].as_str().unwrap().contains("unknown query parameter x; this route takes none"), "{v}");
                continue;
            }
            routes_with_queries += 1;
            for key in &keys {
                let (_, v) = ask(method, path, &format!("{key}=x"));
                assert!(!v.to_string().contains("unknown query parameter"), "{method} {path} {key}: {v}");
            }
            let (s, v) = ask(method, path, "max_price_usd_per_gib=1");
            assert_eq!((s, code(&v)), (400, "bad_query"), "{method} {path}: {v}");
            let message = v["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("unknown query parameter max_price_usd_per_gib") && message.contains(keys[0]), "{message}");
        }
    }
    assert_eq!(routes_with_queries, 10);
}

/// A refusal sent before the request's body had arrived (a wrong method,
/// an unknown query key) left the body unread, and the server closed the
/// kept-alive connection after answering: the client's next request on it
/// failed ("peer disconnected"), as `ureq` did now and then in
/// `a_wrong_method_gets_a_json_405_that_still_names_the_allowed_ones`,
/// which sends a request's head and body in two writes. Each refusal
/// reads the body first (up to the read limit), and the connection serves
/// the next request.
#[test]
fn a_refusal_before_the_body_arrived_keeps_the_connection() {
    let c = start();
    for (head, refusal) in [
        ("POST /v1/status HTTP/1.1", (405, "method_not_allowed")),
        ("POST /v1/txs?bogus=1 HTTP/1.1", (400, "bad_query")),
        ("POST /v1/nowhere HTTP/1.1", (404, "not_found")),
    ] {
        let mut r = send_from(&c, "127.0.0.1", format!("{head}\r\nHost: t\r\nContent-Length: 2\r\n\r\n").as_bytes());
        std::thread::sleep(Duration::from_millis(100));
        r.get_mut().write_all(b"{}").unwrap();
        let (s, v) = read_answer(&mut r);
        assert_eq!((s, code(&v)), refusal, "{head}: {v}");
        r.get_mut().write_all(b"GET /v1/status HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let (s, v) = read_answer(&mut r);
        assert_eq!(s, 200, "{head}, then on the same connection: {v}");
    }
}

/// `POST /v1/txs/batch`'s binary form: each tx after its u32 LE length.
fn binary_batch(txs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in txs {
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(t);
    }
    out
}

fn result_codes(v: &serde_json::Value) -> Vec<String> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["error"]["code"]
                .as_str()
                .map_or_else(|| r["status"].as_str().unwrap().to_string(), str::to_string)
        })
        .collect()
}

#[test]
fn a_batch_commits_its_good_txs_and_refuses_each_bad_one_with_the_single_routes_error() {
    let c = start();
    let (s, _) = c.submit_wait(&transfer("alice", "bob", 0, 10));
    assert_eq!(s, 200);
    let root = c.state_root();

    // Only bad txs: each refused with its own code, in order; nothing moves.
    let mut forged = transfer("flooder", "bob", 0, 500);
    forged.signature.0[3] ^= 1;
    let other_chain = Tx {
        chain_id: "another-chain".into(),
        ..transfer("alice", "bob", 1, 1).tx
    }
    .sign(&key("alice"));
    let bad = binary_batch(&[
        transfer("alice", "bob", 0, 10).encode(),
        forged.encode(),
        b"\x01definitely not a tx".to_vec(),
        transfer("nobody", "bob", 0, 1).encode(),
        other_chain.encode(),
    ]);
    let (s, v) = c.post("/v1/txs/batch", "application/octet-stream", &bad);
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        result_codes(&v),
        [
            "stale_nonce",
            "bad_signature",
            "bad_encoding",
            "unknown_account",
            "wrong_chain"
        ],
        "{v}"
    );
    assert_eq!(
        (v["accepted"].as_u64(), v["refused"].as_u64()),
        (Some(0), Some(5)),
        "{v}"
    );
    assert_eq!(
        v["results"][1]["id"],
        forged.id().to_hex(),
        "a decoded tx's refusal names it: {v}"
    );
    assert!(
        v["results"][1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bad signature"),
        "{v}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.state_root(), root, "rejected txs changed the state");

    // Mixed, as JSON hex, waiting for the commit: good ones commit, each
    // bad one gets its error, and the bad ones do not hold up the good.
    let good = [
        transfer("alice", "bob", 1, 5),
        transfer("bob", "alice", 0, 3),
    ];
    let mixed = [
        good[0].encode(),
        forged.encode(),
        good[0].encode(),
        good[1].encode(),
        transfer("alice", "bob", 0, 99).encode(),
    ];
    let hexes: Vec<String> = mixed.iter().map(|t| tollway_types::keys::hex(t)).collect();
    let (s, v) = c.post(
        "/v1/txs/batch?wait=commit&timeout_ms=10000",
        "application/json",
        &serde_json::to_vec(&hexes).unwrap(),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        result_codes(&v),
        [
            "committed",
            "bad_signature",
            "duplicate",
            "committed",
            "stale_nonce"
        ],
        "{v}"
    );
    assert_eq!(v["results"][0]["id"], good[0].id().to_hex());
    assert!(
        v["results"][3]["events"]
            .to_string()
            .contains("Transferred"),
        "{v}"
    );
    assert_eq!(
        (c.token("alice"), c.token("bob")),
        ("988".to_string(), "1012".to_string())
    );
    assert_eq!(
        (c.nonce("alice"), c.nonce("bob"), c.nonce("flooder")),
        (2, 1, 0)
    );
    assert_eq!(c.token("flooder"), "1000", "the forged tx moved nothing");

    // Without waiting: accepted txs come back pending, in order.
    let (s, v) = c.post(
        "/v1/txs/batch",
        "application/octet-stream",
        &binary_batch(&[transfer("alice", "bob", 2, 1).encode()]),
    );
    assert_eq!(
        (s, result_codes(&v)),
        (200, vec!["pending".to_string()]),
        "{v}"
    );
}

#[test]
fn an_oversized_or_broken_batch_is_refused_whole() {
    let c = start();
    let root = c.state_root();
    let tx = transfer("alice", "bob", 0, 1).encode();
    let too_many = binary_batch(&vec![tx.clone(); tollway_chain::api::MAX_BATCH_TXS + 1]);
    let (s, v) = c.post("/v1/txs/batch", "application/octet-stream", &too_many);
    assert_eq!((s, code(&v)), (413, "too_large"), "{v}");
    let too_big = vec![0u8; tollway_chain::api::MAX_BATCH_BODY_BYTES + 1];
    let (s, v) = c.post("/v1/txs/batch", "application/octet-stream", &too_big);
    assert_eq!((s, code(&v)), (413, "too_large"), "{v}");
    let hexes = vec![tollway_types::keys::hex(&tx); tollway_chain::api::MAX_BATCH_TXS + 1];
    let (s, v) = c.post(
        "/v1/txs/batch",
        "application/json",
        &serde_json::to_vec(&hexes).unwrap(),
    );
    assert_eq!((s, code(&v)), (413, "too_large"), "{v}");

    let mut cut = binary_batch(std::slice::from_ref(&tx));
    cut.pop();
    let (s, v) = c.post("/v1/txs/batch", "application/octet-stream", &cut);
    assert_eq!((s, code(&v)), (400, "bad_encoding"), "{v}");
    let (s, v) = c.post("/v1/txs/batch", "application/json", b"{\"txs\": 1}");
    assert_eq!((s, code(&v)), (400, "malformed_json"), "{v}");
    let (s, v) = c.post("/v1/txs/batch", "application/octet-stream", b"");
    assert_eq!((s, code(&v)), (400, "empty_batch"), "{v}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.state_root(), root);
    assert_eq!(c.nonce("alice"), 0);
}

/// A JSON batch was read whole before its count was checked: a 2 MiB body
/// of `""` is about 700,000 strings, ~48 MiB per request. Reading now
/// stops at the first tx past the cap, so what follows it is never read
/// (here, JSON that does not even close).
#[test]
fn a_json_batch_is_refused_at_the_first_tx_past_the_cap_without_reading_on() {
    let c = start();
    let cap = tollway_chain::api::MAX_BATCH_TXS;
    let mut body = String::from("[");
    body.push_str(&vec!["\"\""; cap + 1].join(","));
    body.push_str(", \"the rest is never read\" {{{");
    let (s, v) = c.post("/v1/txs/batch", "application/json", body.as_bytes());
    assert_eq!((s, code(&v)), (413, "too_large"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains(&format!("at most {cap} txs")), "{v}");
    // At the cap exactly, the body is read to its end, and its end is checked.
    let mut at_cap = String::from("[");
    at_cap.push_str(&vec!["\"\""; cap].join(","));
    at_cap.push_str("] trailing");
    let (s, v) = c.post("/v1/txs/batch", "application/json", at_cap.as_bytes());
    assert_eq!((s, code(&v)), (400, "malformed_json"), "{v}");
}

/// The largest valid report (`MAX_MEASUREMENTS_PER_REPORT` measurements at
/// their widest) fits a tx, but its JSON fields, ~170 KB, were refused as
/// too large by a limit sized for hex (135 KB). It now reaches the ledger,
/// pretty-printed too, which refuses it for what it says (the signer is no
/// oracle), not for its size.
#[test]
fn the_largest_valid_report_is_read_as_json_fields() {
    use tollway_types::tx::limits::MAX_MEASUREMENTS_PER_REPORT;
    use tollway_types::{Measurement, MeasurementOutcome, MeasurementReport};
    let c = start();
    let measurements = (0..MAX_MEASUREMENTS_PER_REPORT)
        .map(|i| Measurement {
            node: key(&format!("node-{i}")).public(),
            outcome: MeasurementOutcome::Measured { throughput_bps: u64::MAX, latency_us: u32::MAX },
            uptime_ppm: u32::MAX,
        })
        .collect();
    let report = TxBody::Report(MeasurementReport { epoch: u64::MAX, measurements });
    let stx = Tx { fee: Amount::Token(Token(u128::MAX)), nonce: u64::MAX, ..signed("alice", 0, report).tx }.sign(&key("alice"));
    assert!(stx.encode().len() <= tollway_types::tx::limits::MAX_TX_BYTES, "a valid tx");
    let body = serde_json::to_vec_pretty(&serde_json::json!({ "tx": stx })).unwrap();
    assert!(body.len() > 2 * tollway_types::tx::limits::MAX_TX_BYTES + 4096, "{} bytes: past the old limit", body.len());
    let (s, v) = c.post("/v1/txs", "application/json", &body);
    assert_ne!(code(&v), "too_large", "{s} {v}");
    assert_ne!(code(&v), "malformed_json", "{s} {v}");
    assert!((400..500).contains(&s), "{s} {v}");
}

/// Txs behind a nonce gap pay nothing while they wait and leave for free
/// when the gap never fills: two accounts' worth filled a small pool, and a
/// tx paying any fee was refused as `mempool_full`. They are now capped
/// apart (here 4 of the pool's 14), and the ready tx gets in.
#[test]
fn txs_behind_a_nonce_gap_cannot_lock_everyone_else_out_of_the_mempool() {
    let c = start_with(|cfg| {
        cfg.core.mempool.max_txs = 14;
        cfg.core.mempool.max_gapped = 4;
    });
    // Nonce 0 never comes from either.
    let mut codes = Vec::new();
    for n in 1..=7 {
        for (from, to) in [("flooder", "bob"), ("bob", "flooder")] {
            let (s, v) = c.post("/v1/txs", "application/octet-stream", &transfer(from, to, n, 1).encode());
            codes.push(if s == 202 { "accepted".to_string() } else { code(&v).to_string() });
        }
    }
    assert_eq!(codes.iter().filter(|c| *c == "accepted").count(), 4, "{codes:?}");
    assert!(codes.iter().all(|c| c == "accepted" || c == "nonce_gaps_full"), "{codes:?}");
    let (s, v) = c.submit_wait(&transfer("alice", "bob", 0, 1));
    assert_eq!(s, 200, "a ready tx behind the flood: {v}");
}

/// "Produce when the block is full" counted txs no block could take (those
/// behind a gap), and every submission woke the producer: once enough
/// waited, each refused request committed an empty block (50 in 22 ms
/// with a 2 s interval).
#[test]
fn refused_submissions_do_not_make_empty_blocks() {
    let c = start_with(|cfg| {
        cfg.block_interval = Duration::from_secs(2);
        cfg.core.max_block_txs = 4;
    });
    for n in 1..=7 {
        let (s, v) = c.post("/v1/txs", "application/octet-stream", &transfer("flooder", "bob", n, 1).encode());
        assert_eq!(s, 202, "{v}");
    }
    let height = || c.get("/v1/status").1["height"].as_u64().unwrap();
    let (h0, t0) = (height(), std::time::Instant::now());
    let mut forged = transfer("flooder", "bob", 0, 1);
    forged.signature.0[3] ^= 1;
    for _ in 0..50 {
        let (s, v) = c.post("/v1/txs", "application/octet-stream", &forged.encode());
        assert_eq!((s, code(&v)), (400, "bad_signature"), "{v}");
    }
    let (blocks, took) = (height() - h0, t0.elapsed());
    assert!(blocks <= took.as_secs() / 2 + 1, "{blocks} blocks in {took:?} with a 2 s interval");
}

/// A connection from `from` (any 127.x address) to the node.
fn connect_from(c: &TestChain, from: &str) -> TcpStream {
    let socket = socket_from(from);
    let s = c.rt.block_on(async { socket.connect(c.addr).await.unwrap().into_std().unwrap() });
    s.set_nonblocking(false).unwrap();
    s
}

fn socket_from(from: &str) -> tokio::net::TcpSocket {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket
}

/// Whether the node has closed `s` (read gives EOF or an error, not a
/// timeout) within `wait`.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 256];
    !matches!(s.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
}

/// Half a request head, or a head and a little of its body, then nothing:
/// the node held such connections (task, descriptor, buffered body) for
/// good, and a few hundred of them took its descriptors from everyone.
/// Now a connection idle both ways is closed, one address holds only its
/// share, and everyone else gets through.
#[test]
fn slow_and_idle_connections_are_closed_and_one_address_cannot_take_them_all() {
    let c = start_with(|cfg| {
        cfg.api.idle = Duration::from_secs(2);
        cfg.api.max_per_ip = 4;
    });
    let mut held: Vec<TcpStream> = (0..4).map(|_| connect_from(&c, "127.0.0.2")).collect();
    held[0].write_all(b"POST /v1/txs HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    held[1].write_all(b"POST /v1/txs HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab").unwrap();
    // The fifth from that address is closed at once; another address's
    // request is answered meanwhile.
    let mut fifth = connect_from(&c, "127.0.0.2");
    assert!(closed_within(&mut fifth, Duration::from_secs(1)), "a fifth connection from one address stayed open");
    assert_eq!(c.get("/v1/status").0, 200);
    // All four are closed once idle for 2 s (give it 4).
    let started = std::time::Instant::now();
    for (i, s) in held.iter_mut().enumerate() {
        let left = Duration::from_secs(4).saturating_sub(started.elapsed()).max(Duration::from_millis(100));
        assert!(closed_within(s, left), "connection {i} still open after {:?}", started.elapsed());
    }
    // And the address may connect again.
    let mut again = connect_from(&c, "127.0.0.2");
    again.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    again.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
}

/// At the connection limit, a new connection waits in the backlog until an
/// idle one is closed, then is answered.
#[test]
fn at_the_connection_limit_a_new_client_is_answered_once_an_idle_one_goes() {
    let c = start_with(|cfg| {
        cfg.api.idle = Duration::from_secs(2);
        cfg.api.max_connections = 3;
    });
    let held: Vec<TcpStream> = (0..3).map(|i| connect_from(&c, &format!("127.0.0.{}", 10 + i))).collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let mut s = connect_from(&c, "127.0.0.20");
    s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1500), "answered after {waited:?}, before a slot was free");
    drop(held);
}

/// Writes `bytes` to `s` one at a time, `every` apart, on a thread, until
/// they run out or a write fails (the node closed the connection).
fn trickle(s: &TcpStream, bytes: Vec<u8>, every: Duration) -> std::thread::JoinHandle<()> {
    let mut s = s.try_clone().unwrap();
    std::thread::spawn(move || {
        for b in bytes {
            if s.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(every);
        }
    })
}

/// A request head sent a byte every 250 ms made progress, so the idle
/// timeout never closed it: a client could keep its place (and, 256 per
/// address, four addresses all of the API's) with a byte a minute. Now a
/// head must be whole within `head_timeout` (1 s here) however it
/// trickles, while the idle timeout (20 s) is far off.
#[test]
fn a_request_head_sent_a_byte_at_a_time_is_closed_at_the_head_deadline() {
    let c = start_with(|cfg| {
        cfg.api.idle = Duration::from_secs(20);
        cfg.api.head_timeout = Duration::from_secs(1);
    });
    let mut s = connect_from(&c, "127.0.0.30");
    let started = std::time::Instant::now();
    // 40 bytes, 10 s of trickling, and never the head's end.
    let head = b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().copied().chain(std::iter::repeat(b'a')).take(40).collect();
    let writer = trickle(&s, head, Duration::from_millis(250));
    let closed = closed_within(&mut s, Duration::from_secs(8));
    let after = started.elapsed();
    assert!(closed, "a trickled head kept its connection for {after:?}");
    assert!(after >= Duration::from_millis(900), "closed after {after:?}, before the head deadline");
    assert!(after < Duration::from_secs(6), "closed only after {after:?}");
    writer.join().unwrap();
    // A whole head is answered as before.
    assert_eq!(c.get("/v1/status").0, 200);
}

/// The same with a whole head and a body trickled after it: the body
/// must be whole within `body_timeout` (1 s here); the node answers 408 and
/// closes (or, with the client's bytes still coming, resets) the
/// connection.
#[test]
fn a_request_body_sent_a_byte_at_a_time_is_cut_off_at_the_body_deadline() {
    let c = start_with(|cfg| {
        cfg.api.idle = Duration::from_secs(20);
        cfg.api.body_timeout = Duration::from_secs(1);
    });
    let mut s = connect_from(&c, "127.0.0.31");
    s.write_all(b"POST /v1/txs HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n").unwrap();
    let started = std::time::Instant::now();
    let writer = trickle(&s, vec![1u8; 40], Duration::from_millis(250));
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut status_line = String::new();
    let answer = reader.read_line(&mut status_line);
    let after = started.elapsed();
    match answer {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
            panic!("a trickled body kept its connection for {after:?}")
        }
        // Reset: the node closed with the client's bytes unread.
        Err(_) | Ok(0) => {}
        Ok(_) => assert!(status_line.starts_with("HTTP/1.1 408"), "{status_line:?}"),
    }
    assert!(after >= Duration::from_millis(900), "cut off after {after:?}, before the body deadline");
    assert!(after < Duration::from_secs(6), "cut off only after {after:?}");
    assert!(closed_within(&mut s, Duration::from_secs(4)), "still open after the 408");
    writer.join().unwrap();
    // A body sent at once is read as before.
    let (status, v) = c.post("/v1/txs", "application/octet-stream", b"\x01definitely not a tx");
    assert_eq!((status, code(&v)), (400, "bad_encoding"), "{v}");
}

/// Sends `request` (a whole HTTP/1.1 request) on a new connection from
/// `from`; the answer is read from the returned reader.
fn send_from(c: &TestChain, from: &str, request: &[u8]) -> BufReader<TcpStream> {
    let mut s = connect_from(c, from);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    BufReader::new(s)
}

/// An answer's status and JSON body (`Null` for a body without a length,
/// such as an event stream's, which then follows on the reader).
fn read_answer(r: &mut BufReader<TcpStream>) -> (u16, serde_json::Value) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line: {line:?}"));
    let mut content_length = None;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            content_length = Some(v.trim().parse::<usize>().unwrap());
        }
    }
    let body = match content_length {
        Some(n) => {
            let mut body = vec![0u8; n];
            r.read_exact(&mut body).unwrap();
            serde_json::from_slice(&body).unwrap()
        }
        None => serde_json::Value::Null,
    };
    (status, body)
}

/// `GET /v1/events` from `from`: the status, the JSON body of a refusal,
/// and the reader, past the response head (an admitted stream's events
/// follow).
fn open_events(c: &TestChain, from: &str) -> (u16, serde_json::Value, BufReader<TcpStream>) {
    let mut r = send_from(c, from, b"GET /v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n");
    let (status, body) = read_answer(&mut r);
    (status, body, r)
}

/// Whether a block event comes on an admitted stream.
fn sees_a_block(r: &mut BufReader<TcpStream>) -> bool {
    let mut line = String::new();
    for _ in 0..200 {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        if line.starts_with("event: block") {
            return true;
        }
    }
    false
}

/// An event stream sends a keep-alive every 15 s, so the idle timeout
/// never closed one: 256 streams from each of four addresses held every
/// place of the API for good. Now streams are capped in all and per
/// address (here 3 and 2), far below the connections, and the next one is
/// refused at once with a JSON error (429 for the address, 503 for the
/// node); a stream that closes gives its place back.
#[test]
fn event_streams_are_capped_per_address_and_in_all_and_a_closed_one_gives_its_place_back() {
    let c = start_with(|cfg| {
        cfg.api.max_event_streams = 3;
        cfg.api.max_event_streams_per_ip = 2;
        // An idle chain's heartbeat, every block interval here: the
        // streams see blocks without txs.
        cfg.idle_heartbeat_ms = 100;
    });
    let (s, _, mut a1) = open_events(&c, "127.0.0.40");
    assert_eq!(s, 200);
    let (s, _, mut a2) = open_events(&c, "127.0.0.40");
    assert_eq!(s, 200);
    assert!(sees_a_block(&mut a1) && sees_a_block(&mut a2), "an admitted stream carries blocks");
    let (s, v, _) = open_events(&c, "127.0.0.40");
    assert_eq!((s, code(&v)), (429, "stream_limit"), "{v}");
    let (s, _, mut b1) = open_events(&c, "127.0.0.41");
    assert_eq!(s, 200);
    assert!(sees_a_block(&mut b1));
    for from in ["127.0.0.41", "127.0.0.42"] {
        let (s, v, _) = open_events(&c, from);
        assert_eq!((s, code(&v)), (503, "streams_full"), "{from}: {v}");
    }
    // Everything else is answered meanwhile.
    assert_eq!(c.get("/v1/status").0, 200);
    // A stream closed by its client gives both places back (the node sees
    // it at its next write: a block every 100 ms here).
    drop(a1);
    let started = std::time::Instant::now();
    let again = loop {
        let (s, _, r) = open_events(&c, "127.0.0.40");
        if s == 200 || started.elapsed() > Duration::from_secs(10) {
            break (s, r);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(again.0, 200, "no place given back after {:?}", started.elapsed());
    let mut again = again.1;
    assert!(sees_a_block(&mut again));
    drop((a2, b1));
}

/// `GET /v1/txs/{id}/wait` from `from`, answered on the returned reader.
fn wait_from(c: &TestChain, from: &str, id: &str, timeout_ms: u64) -> BufReader<TcpStream> {
    send_from(c, from, format!("GET /v1/txs/{id}/wait?timeout_ms={timeout_ms} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
}

/// A whole POST of `body` (raw bytes) to `path`.
fn post_request(path: &str, body: &[u8]) -> Vec<u8> {
    let mut request =
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    request.extend_from_slice(body);
    request
}

/// A long-poll (`GET /v1/txs/{id}/wait`, a submission's `wait=commit`)
/// holds its connection up to 60 s with no byte either way, and nothing
/// capped them: waits from four addresses on a tx that stays pending held
/// all 1,024 connections with about 17 requests a second. Now waits are
/// capped in all and per address (here 3 and 2), as event streams are:
/// the next is refused at once with what to do (429 for the address, 503
/// for the node), and a wait that ends gives its place back.
#[test]
fn long_polls_are_capped_per_address_and_in_all_and_a_finished_one_gives_its_place_back() {
    let c = start_with(|cfg| {
        cfg.api.max_waits = 3;
        cfg.api.max_waits_per_ip = 2;
    });
    // Pending until nonce 0 comes.
    let gapped = transfer("alice", "bob", 1, 1);
    let (s, v) = c.post("/v1/txs", "application/octet-stream", &gapped.encode());
    assert_eq!(s, 202, "{v}");
    let id = gapped.id().to_hex();
    let mut short = wait_from(&c, "127.0.0.50", &id, 3000);
    let mut long = wait_from(&c, "127.0.0.50", &id, 30_000);
    std::thread::sleep(Duration::from_millis(300));
    let (s, v) = read_answer(&mut wait_from(&c, "127.0.0.50", &id, 30_000));
    assert_eq!((s, code(&v)), (429, "wait_limit"), "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("holds 2 waiting requests") && message.contains("without waiting"), "{message}");
    let mut other = wait_from(&c, "127.0.0.51", &id, 30_000);
    std::thread::sleep(Duration::from_millis(300));
    let (s, v) = read_answer(&mut wait_from(&c, "127.0.0.52", &id, 30_000));
    assert_eq!((s, code(&v)), (503, "waits_full"), "{v}");
    // Everything else is answered meanwhile, the tx's status too.
    assert_eq!(c.get(&format!("/v1/txs/{id}")).0, 202);
    // The short wait ends at its timeout and gives its place back.
    let (s, v) = read_answer(&mut short);
    assert_eq!((s, v["status"].as_str()), (202, Some("pending")), "{v}");
    let mut again = wait_from(&c, "127.0.0.50", &id, 30_000);
    std::thread::sleep(Duration::from_millis(300));
    // Nonce 0 fills the gap: every admitted wait sees the commit.
    let (s, v) = c.post("/v1/txs", "application/octet-stream", &transfer("alice", "bob", 0, 1).encode());
    assert_eq!(s, 202, "{v}");
    for (name, r) in [("long", &mut long), ("other", &mut other), ("again", &mut again)] {
        let (s, v) = read_answer(r);
        assert_eq!((s, v["status"].as_str()), (200, Some("committed")), "{name}: {v}");
    }
}

/// A wait whose client hangs up gives its place back then, not at its
/// timeout: else a client that opens waits and drops them holds the
/// places a minute each for nothing.
#[test]
fn a_long_poll_whose_client_hangs_up_gives_its_place_back() {
    let c = start_with(|cfg| cfg.api.max_waits = 1);
    let gapped = transfer("alice", "bob", 1, 1);
    assert_eq!(c.post("/v1/txs", "application/octet-stream", &gapped.encode()).0, 202);
    let id = gapped.id().to_hex();
    let held = wait_from(&c, "127.0.0.70", &id, 60_000);
    std::thread::sleep(Duration::from_millis(300));
    let (s, v) = read_answer(&mut wait_from(&c, "127.0.0.71", &id, 500));
    assert_eq!((s, code(&v)), (503, "waits_full"), "{v}");
    drop(held);
    let started = std::time::Instant::now();
    let answer = loop {
        let (s, v) = read_answer(&mut wait_from(&c, "127.0.0.71", &id, 500));
        if s != 503 || started.elapsed() > Duration::from_secs(20) {
            break (s, v);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((answer.0, answer.1["status"].as_str()), (202, Some("pending")), "{:?} after {:?}", answer.1, started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// A submission with `wait=commit` whose wait finds no place is still
/// submitted, once, and answered at once: 202 `pending` with `wait_refused`
/// saying why it was not waited for (refused whole, anyone holding every
/// place would refuse every wallet's submissions). The batch route
/// likewise. Each tx commits as any other, and only once.
#[test]
fn a_submission_whose_wait_finds_no_place_is_submitted_once_and_not_waited_for() {
    let c = start_with(|cfg| cfg.api.max_waits_per_ip = 1);
    // Pending until nonces 0 and 1 come; the address's one place waits on it.
    let gapped = transfer("alice", "bob", 2, 1);
    let (s, v) = c.post("/v1/txs", "application/octet-stream", &gapped.encode());
    assert_eq!(s, 202, "{v}");
    let mut held = wait_from(&c, "127.0.0.60", &gapped.id().to_hex(), 30_000);
    std::thread::sleep(Duration::from_millis(300));

    let first = transfer("alice", "bob", 0, 1);
    let (s, v) = read_answer(&mut send_from(&c, "127.0.0.60", &post_request("/v1/txs?wait=commit&timeout_ms=10000", &first.encode())));
    assert_eq!((s, v["status"].as_str(), v["id"].as_str()), (202, Some("pending"), Some(first.id().to_hex().as_str())), "{v}");
    assert_eq!(v["wait_refused"]["code"], "wait_limit", "{v}");
    let message = v["wait_refused"]["message"].as_str().unwrap();
    assert!(message.contains("accepted") && message.contains(&format!("GET /v1/txs/{}", first.id())), "{message}");

    let second = transfer("alice", "bob", 1, 1);
    let batch = binary_batch(&[second.encode()]);
    let (s, v) = read_answer(&mut send_from(&c, "127.0.0.60", &post_request("/v1/txs/batch?wait=commit&timeout_ms=10000", &batch)));
    assert_eq!((s, v["accepted"].as_u64(), v["results"][0]["status"].as_str()), (200, Some(1), Some("pending")), "{v}");
    assert_eq!(v["wait_refused"]["code"], "wait_limit", "{v}");

    // Both were submitted: the held wait sees nonce 2 commit behind them.
    let (s, v) = read_answer(&mut held);
    assert_eq!((s, v["status"].as_str()), (200, Some("committed")), "{v}");
    for tx in [&first, &second] {
        assert_eq!(c.get(&format!("/v1/txs/{}", tx.id())).1["status"], "committed");
    }
    // Once each: alice sent three txs, and the first again is stale.
    assert_eq!(c.nonce("alice"), 3);
    assert_eq!(c.token("bob"), "1003");
    let (s, v) = c.post("/v1/txs", "application/octet-stream", &first.encode());
    assert_eq!(s, 409, "{v}");
}

fn status(c: &TestChain) -> serde_json::Value {
    c.get("/v1/status").1
}

fn u64_at(v: &serde_json::Value, path: &[&str]) -> u64 {
    path.iter().fold(v, |v, k| &v[*k]).as_u64().unwrap_or_else(|| panic!("no {path:?} in {v}"))
}

/// The block loop committed a block every interval whatever happened: an
/// idle chain stored 300-400 bytes a second (about 30 MB a day) of blocks
/// that changed nothing. Now a block comes for txs or an epoch, and
/// otherwise once the tip is the idle heartbeat old: one block, empty,
/// with the parent's root.
#[test]
fn an_idle_chain_commits_no_block_until_its_heartbeat() {
    let c = start_with(|cfg| {
        cfg.block_interval = Duration::from_millis(50);
        cfg.idle_heartbeat_ms = 2000;
    });
    let (s, v) = c.submit_wait(&transfer("alice", "bob", 0, 1));
    assert_eq!(s, 200, "{v}");
    let height = u64_at(&v, &["height"]);
    let tx_block = c.get(&format!("/v1/blocks/{height}")).1;
    let tx_block_ms = u64_at(&tx_block, &["header", "time_ms"]);
    // 1.5 s of 50 ms intervals: no block.
    loop {
        let st = status(&c);
        assert_eq!(u64_at(&st, &["height"]), height, "a block on an idle chain, {} ms after the last", u64_at(&st, &["now_ms"]) - tx_block_ms);
        if u64_at(&st, &["now_ms"]) >= tx_block_ms + 1500 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(u64_at(&status(&c), &["idle_heartbeat_ms"]), 2000);
    // Then the heartbeat: one empty block, 2 s after the tip.
    let started = std::time::Instant::now();
    let heartbeat = loop {
        let (s, b) = c.get(&format!("/v1/blocks/{}", height + 1));
        if s == 200 {
            break b;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no heartbeat block: {b}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let late_ms = u64_at(&heartbeat, &["header", "time_ms"]) - tx_block_ms;
    assert!((2000..3000).contains(&late_ms), "the heartbeat came {late_ms} ms after the tip");
    assert_eq!(u64_at(&heartbeat, &["header", "n_txs"]), 0);
    assert_eq!(heartbeat["header"]["state_root"], tx_block["header"]["state_root"], "an empty block changes nothing");
    assert_eq!(u64_at(&status(&c), &["height"]), height + 1, "one heartbeat, not a block an interval again");
}

/// Idle blocks are gone, but a tx sent to an idle chain still waits at most
/// about an interval for its block: the loop still wakes every interval.
#[test]
fn a_tx_sent_to_an_idle_chain_is_committed_within_about_an_interval() {
    let c = start_with(|cfg| cfg.block_interval = Duration::from_millis(300));
    for nonce in 0..2 {
        std::thread::sleep(Duration::from_millis(700));
        let sent_ms = node::now_ms();
        let (s, v) = c.submit_wait(&transfer("alice", "bob", nonce, 1));
        assert_eq!(s, 200, "{v}");
        let block = c.get(&format!("/v1/blocks/{}", u64_at(&v, &["height"]))).1;
        let waited_ms = u64_at(&block, &["header", "time_ms"]).saturating_sub(sent_ms);
        assert!(waited_ms < 600, "tx {nonce}: its block came {waited_ms} ms after it, with a 300 ms interval");
    }
    assert_eq!(u64_at(&status(&c), &["height"]), 2, "a block for each tx, and none between");
}

/// An idle chain makes no block of its own, yet an epoch still ends on time:
/// the loop asks at each interval whether one is due at the block's time.
#[test]
fn an_epoch_ends_on_time_on_an_idle_chain() {
    let c = start_chain(|p| p.epoch_secs = 2, |cfg| cfg.block_interval = Duration::from_millis(100));
    let start_secs = u64_at(&status(&c), &["epoch_start_secs"]);
    let started = std::time::Instant::now();
    let epochs = loop {
        let list = c.get("/v1/epochs").1;
        if list.as_array().is_some_and(|l| l.len() >= 2) {
            break list;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "two 2 s epochs did not end in 15 s: {list}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Each ends at the first interval past its 2 s (the next starts then).
    let mut due_secs = start_secs + 2;
    for (i, e) in epochs.as_array().unwrap().iter().take(2).enumerate() {
        let time_ms = u64_at(e, &["time_ms"]);
        assert!((due_secs * 1000..due_secs * 1000 + 1000).contains(&time_ms), "epoch {i} ended at {time_ms} ms, due at {due_secs} s");
        assert_eq!(u64_at(e, &["height"]), i as u64 + 1, "no block between the epochs' ends");
        due_secs = time_ms / 1000 + 2;
    }
    let st = status(&c);
    assert_eq!(u64_at(&st, &["height"]), u64_at(&st, &["epoch"]), "every block ended an epoch: {st}");
}

/// The wait behind a nonce gap was counted in blocks (120, two minutes at
/// a block a second); on an idle chain, with a block a minute, it would be
/// two hours. It is counted in time: a gapped tx is dropped by the first
/// block past its time (at the latest the idle heartbeat).
#[test]
fn a_gapped_tx_on_an_idle_chain_expires_after_its_time() {
    let c = start_with(|cfg| {
        cfg.block_interval = Duration::from_millis(50);
        cfg.idle_heartbeat_ms = 1500;
        cfg.core.mempool.gap_ttl_ms = 1000;
    });
    let gapped = transfer("alice", "bob", 1, 1);
    let started = std::time::Instant::now();
    let (s, v) = c.post("/v1/txs", "application/octet-stream", &gapped.encode());
    assert_eq!(s, 202, "{v}");
    let (s, v) = c.get(&format!("/v1/txs/{}/wait?timeout_ms=8000", gapped.id()));
    let waited = started.elapsed();
    assert_eq!((s, v["status"].as_str(), code(&v)), (422, Some("rejected"), "nonce_gap"), "{v}");
    assert!(waited >= Duration::from_secs(1) && waited < Duration::from_millis(4000), "dropped after {waited:?}");
}


/// A node's record showed its slashed total and nothing of a pending
/// strike: an operator could not tell that the next measurement would
/// slash the node, nor what would clear it. The record now carries the
/// strike; a claim lowered after it still counts for this epoch's
/// judgement (ADR 0014), which the record says. `/v1/status` gives the
/// over-claim thresholds.
#[test]
fn a_struck_node_shows_its_strike_and_what_decides_it() {
    use tollway_types::{Measurement, MeasurementOutcome, MeasurementReport};
    let c = start_chain(|p| p.epoch_secs = 2, |_| {});
    let st = status(&c);
    assert_eq!((u64_at(&st, &["rho_slash_min_ppm"]), u64_at(&st, &["slash_base_ppm"])), (2_000_000, 50_000), "{st}");
    assert_eq!(u64_at(&st, &["rho_reward_on_claim_max_ppm"]), 1_250_000, "{st}");
    let spec = tollway_ledger::testkit::node_spec("DE", "203.0.113.7", 100_000_000);
    assert_eq!(c.submit_wait(&signed("operator", 0, TxBody::RegisterNode(spec.clone()))).0, 200);
    for (i, o) in ["oracle0", "oracle1", "oracle2"].iter().enumerate() {
        let addr = format!("198.51.{i}.1").parse().unwrap();
        assert_eq!(c.submit_wait(&signed(o, 0, TxBody::RegisterOracle { addr })).0, 200);
    }
    let operator = key("operator").public();
    let record = || c.get(&format!("/v1/nodes/{operator}")).1;
    assert!(record()["strike"].is_null() && record()["slashes"] == serde_json::json!([]), "{}", record());
    // The oracles are active from the next epoch: all three measure the
    // node at a tenth of its claim.
    let registered = u64_at(&status(&c), &["epoch"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while u64_at(&status(&c), &["epoch"]) == registered {
        assert!(std::time::Instant::now() < deadline, "no epoch end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let epoch = u64_at(&status(&c), &["epoch"]);
    for o in ["oracle0", "oracle1", "oracle2"] {
        let outcome = MeasurementOutcome::Measured { throughput_bps: 10_000_000, latency_us: 20_000 };
        let report = MeasurementReport { epoch, measurements: vec![Measurement { node: operator, outcome, uptime_ppm: 1_000_000 }] };
        let (s, v) = c.submit_wait(&signed(o, 1, TxBody::Report(report)));
        assert_eq!((s, v["status"].as_str()), (200, Some("committed")), "{v}");
    }
    while record()["strike"].is_null() {
        assert!(std::time::Instant::now() < deadline, "no strike: {}", record());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The operator lowers the claim: it counts from the next epoch.
    let lowered = tollway_types::NodeSpec { claimed_capacity_bps: 10_000_000, ..spec };
    assert_eq!(c.submit_wait(&signed("operator", 1, TxBody::UpdateNode(lowered))).0, 200);
    let (n, st) = (record(), status(&c));
    let strike = &n["strike"];
    assert_eq!(u64_at(&n, &["claimed_capacity_bps"]), 10_000_000, "{n}");
    assert_eq!(
        [
            u64_at(strike, &["epoch"]),
            u64_at(strike, &["measured_capacity_bps"]),
            u64_at(strike, &["judged_claim_bps"]),
            u64_at(strike, &["over_claim_ppm"]),
            u64_at(strike, &["clears_at_bps"]),
            u64_at(strike, &["slash_ppm"]),
        ],
        [epoch, 10_000_000, 100_000_000, 10_000_000, 50_000_000, 450_000],
        "{n}"
    );
    // 45 % of the 1,000 TWY bond and of the rewards still vesting then.
    let twy = |v: &serde_json::Value| v.as_str().unwrap().parse::<f64>().unwrap();
    let (estimate, rewards) = (twy(&strike["slash_estimate"]), twy(&n["total_rewards"]));
    assert!(rewards > 0.0 && (estimate - (450.0 + 0.45 * rewards)).abs() < 0.001, "{n}");
    let epoch_end = u64_at(&st, &["epoch_start_secs"]) + u64_at(&st, &["epoch_secs"]);
    assert_eq!(u64_at(strike, &["decided_at_earliest_secs"]), epoch_end, "{n}");
    assert!(strike["next_judged_claim_bps"].is_null(), "the next measurement is judged on the strike's claim: {n}");
    // Epochs later, still unmeasured, the lowered claim is what the next
    // measurement is judged against, and the strike still says what it
    // was given for. It said the claim of the epoch it was read in:
    // 10 Mbit/s measured against 10 Mbit/s claimed, ×1.0 "over".
    let lowered_by = u64_at(&status(&c), &["epoch"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while u64_at(&status(&c), &["epoch"]) == lowered_by {
        assert!(std::time::Instant::now() < deadline, "no epoch end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let n = record();
    let strike = &n["strike"];
    assert_eq!(
        [
            u64_at(strike, &["epoch"]),
            u64_at(strike, &["measured_capacity_bps"]),
            u64_at(strike, &["judged_claim_bps"]),
            u64_at(strike, &["over_claim_ppm"]),
        ],
        [epoch, 10_000_000, 100_000_000, 10_000_000],
        "{n}"
    );
    assert_eq!([u64_at(strike, &["next_judged_claim_bps"]), u64_at(strike, &["clears_at_bps"])], [10_000_000, 5_000_000], "{n}");
}

/// A node's record gave its figures of now only: after a day of epochs an
/// operator could not tell which paid what, or why one paid less. Each
/// epoch's end now stores a row per node: the reward it paid (the node's
/// `last_reward` then), whether the oracles measured it, and the figures
/// the reward came from.
#[test]
fn a_nodes_epochs_say_what_each_paid_and_on_what() {
    use tollway_types::{MacroRegion, Measurement, MeasurementOutcome, MeasurementReport};
    let c = start_chain(|p| p.epoch_secs = 2, |_| {});
    let spec = tollway_ledger::testkit::node_spec("DE", "203.0.113.7", 100_000_000);
    assert_eq!(c.submit_wait(&signed("operator", 0, TxBody::RegisterNode(spec))).0, 200);
    for (i, o) in ["oracle0", "oracle1", "oracle2"].iter().enumerate() {
        let addr = format!("198.51.{i}.1").parse().unwrap();
        assert_eq!(c.submit_wait(&signed(o, 0, TxBody::RegisterOracle { addr })).0, 200);
    }
    let operator = key("operator").public();
    let epoch_now = || u64_at(&status(&c), &["epoch"]);
    let registered = epoch_now();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while epoch_now() == registered {
        assert!(std::time::Instant::now() < deadline, "no epoch end");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The oracles are active from the epoch after theirs: they measure it.
    let measured = epoch_now();
    for o in ["oracle0", "oracle1", "oracle2"] {
        let outcome = MeasurementOutcome::Measured { throughput_bps: 100_000_000, latency_us: 20_000 };
        let report = MeasurementReport { epoch: measured, measurements: vec![Measurement { node: operator, outcome, uptime_ppm: 1_000_000 }] };
        let (s, v) = c.submit_wait(&signed(o, 1, TxBody::Report(report)));
        assert_eq!((s, v["status"].as_str()), (200, Some("committed")), "{v}");
    }
    // The record and the row, read while the epoch after the measured one
    // runs (the record's `last_reward` is the last epoch's).
    let (record, rows) = loop {
        assert!(std::time::Instant::now() < deadline, "epoch {measured} never ended");
        let before = epoch_now();
        let record = c.get(&format!("/v1/nodes/{operator}")).1;
        let (s, rows) = c.get(&format!("/v1/nodes/{operator}/epochs?from={measured}&limit=1"));
        assert_eq!(s, 200, "{rows}");
        if before == measured + 1 && epoch_now() == before {
            break (record, rows);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let row = &rows[0];
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    assert_eq!((u64_at(row, &["epoch"]), row["measured"].as_bool()), (measured, Some(true)), "{row}");
    assert_eq!(row["reward"], record["last_reward"], "{row} {record}");
    assert!(row["reward"].as_str().is_some_and(|r| r != "0"), "{row}");
    assert_eq!(
        [u64_at(row, &["verified_capacity_bps"]), u64_at(row, &["uptime_ppm"]), u64_at(row, &["latency_us"])],
        [100_000_000, 1_000_000, 20_000],
        "{row}"
    );
    assert_eq!(u64_at(row, &["reputation_ppm"]), u64_at(&record, &["reputation_ppm"]), "{row} {record}");
    assert_eq!(row["settled_usd"], "0", "{row}");
    // Its region's multiplier, as the epoch's report has it.
    let report = c.get(&format!("/v1/epochs/{measured}")).1;
    let europe = MacroRegion::from_name("europe").unwrap().index();
    assert_eq!(row["region_multiplier_ppm"], report["report"]["regions"][europe]["multiplier_ppm"], "{row} {report}");
    // Oldest first from `from`; the epoch it registered in paid nothing,
    // no oracle having measured it.
    let (s, all) = c.get(&format!("/v1/nodes/{operator}/epochs"));
    assert_eq!(s, 200, "{all}");
    let epochs: Vec<u64> = all.as_array().unwrap().iter().map(|r| u64_at(r, &["epoch"])).collect();
    assert_eq!(epochs[..2], [registered, measured], "{all}");
    assert_eq!((all[0]["measured"].as_bool(), all[0]["reward"].as_str()), (Some(false), Some("0")), "{all}");
    // Clear refusals, as the other routes'.
    let stranger = key("alice").public();
    let (s, v) = c.get(&format!("/v1/nodes/{stranger}/epochs"));
    assert_eq!((s, code(&v)), (404, "unknown_node"), "{v}");
    let (s, v) = c.get("/v1/nodes/xyz/epochs");
    assert_eq!((s, code(&v)), (400, "bad_id"), "{v}");
    let (s, v) = c.get(&format!("/v1/nodes/{operator}/epochs?from=-1"));
    assert_eq!((s, code(&v)), (400, "bad_query"), "{v}");
    let (s, v) = c.get(&format!("/v1/nodes/{operator}/epochs?after=1"));
    assert_eq!((s, code(&v)), (400, "bad_query"), "{v}");
}

/// A node has a row for each epoch it was registered in: the one it left
/// too (its traffic of that epoch may still pay), and none after.
#[test]
fn a_node_that_leaves_has_the_row_of_the_epoch_it_left_and_none_after() {
    let c = start_chain(|p| p.epoch_secs = 2, |_| {});
    let spec = tollway_ledger::testkit::node_spec("DE", "203.0.113.7", 100_000_000);
    let (s, v) = c.submit_wait(&signed("operator", 0, TxBody::RegisterNode(spec)));
    assert_eq!((s, v["status"].as_str()), (200, Some("committed")), "{v}");
    let registered = u64_at(&v, &["height"]);
    let (s, v) = c.submit_wait(&signed("operator", 1, TxBody::DeregisterNode));
    assert_eq!((s, v["status"].as_str()), (200, Some("committed")), "{v}");
    let left = u64_at(&v, &["height"]);
    // A block's txs run after the epoch its start closed: the epoch of a
    // tx is the number of epochs ended at or before its block.
    let epoch_at = |height: u64| {
        c.get("/v1/epochs").1.as_array().unwrap().iter().filter(|e| u64_at(e, &["height"]) <= height).count() as u64
    };
    let (registered_in, left_in) = (epoch_at(registered), epoch_at(left));
    let operator = key("operator").public();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while u64_at(&status(&c), &["epoch"]) < left_in + 3 {
        assert!(std::time::Instant::now() < deadline, "no epoch end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (s, rows) = c.get(&format!("/v1/nodes/{operator}/epochs"));
    assert_eq!(s, 200, "{rows}");
    let epochs: Vec<u64> = rows.as_array().unwrap().iter().map(|r| u64_at(r, &["epoch"])).collect();
    assert_eq!(epochs, (registered_in..=left_in).collect::<Vec<_>>(), "{rows}");
}
