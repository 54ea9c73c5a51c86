//! Prometheus metrics (`/metrics`), through the `metrics` facade. One
//! recorder per process, shared by every node started in it (tests start
//! several).

use crate::core::{Committed, Core};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// How often the recorder's histograms are drained into their summaries.
/// A histogram keeps every value recorded until a drain: `build_recorder`
/// starts no upkeep (only a `/metrics` scrape drained them), so a chain
/// nobody scraped kept two floats per block for as long as it ran.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(1);

pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then our
            // page is empty but the node works.
            let _ = metrics::set_global_recorder(recorder);
            // One thread for the process's one recorder, as long as it
            // runs. Without it the node still serves; only the histograms
            // grow between scrapes.
            let upkept = handle.clone();
            let _ = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkept.run_upkeep();
            });
            handle
        })
        .clone()
}

pub fn on_open(core: &Core) {
    gauge!("tollway_block_height").set(core.tip().height as f64);
    gauge!("tollway_epoch").set(core.state().epoch as f64);
    gauge!("tollway_mempool_txs").set(core.mempool_len() as f64);
}

/// Submission outcomes of one verification round, counted locally and
/// recorded once (a labelled counter lookup per tx is measurable).
#[derive(Default)]
pub struct SubmitCounts {
    accepted: u64,
    refused: Vec<(&'static str, u64)>,
}

impl SubmitCounts {
    pub fn add(&mut self, refused: Option<&'static str>) {
        match refused {
            None => self.accepted += 1,
            Some(code) => match self.refused.iter_mut().find(|(c, _)| *c == code) {
                Some((_, n)) => *n += 1,
                None => self.refused.push((code, 1)),
            },
        }
    }
    pub fn record(self) {
        if self.accepted > 0 {
            counter!("tollway_txs_submitted_total", "result" => "accepted").increment(self.accepted);
        }
        for (code, n) in self.refused {
            counter!("tollway_txs_submitted_total", "result" => code).increment(n);
        }
    }
}

pub fn mempool(n: usize) {
    gauge!("tollway_mempool_txs").set(n as f64);
}

pub fn committed(c: &Committed, core: &Core, took: Duration) {
    counter!("tollway_blocks_committed_total").increment(1);
    counter!("tollway_txs_committed_total").increment(c.tx_ids.len() as u64);
    for d in &c.dropped {
        counter!("tollway_txs_rejected_total", "code" => d.code).increment(1);
    }
    gauge!("tollway_block_height").set(c.header.height as f64);
    gauge!("tollway_epoch").set(core.state().epoch as f64);
    gauge!("tollway_mempool_txs").set(core.mempool_len() as f64);
    histogram!("tollway_block_build_and_commit_seconds").record(took.as_secs_f64());
    histogram!("tollway_block_txs").record(c.tx_ids.len() as f64);
    let supply = &core.state().supply;
    gauge!("tollway_supply_token_total").set(supply.total_token().0 as f64 / 1e6);
    gauge!("tollway_burned_token_total").set(supply.burned_token.0 as f64 / 1e6);
    gauge!("tollway_minted_token_total").set(supply.minted_token.0 as f64 / 1e6);
}
