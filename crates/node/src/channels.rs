//! Where a node learns about channels (the chain) and where it keeps the
//! receipts it will settle with, and the debts its closed sessions left.

use crate::holders::OwedDebt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
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
            // The chain API closes a connection idle for its head timeout
            // (10 s): a pooled one kept longer could be reused as it
            // closes, and the lookup fail a client's hello.
            .max_idle_age(Duration::from_secs(5))
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

/// The newest receipt of each channel, kept in a file so that a restart
/// can still settle them; and what each channel's closed sessions left
/// unpaid (`holders`), so that a restart does not forgive it.
///
/// A receipt is accepted on the session's thread, every receipt interval
/// of every session: writing the whole book there, as it once did, cost a
/// file write and rename per MiB served, and every channel the node ever
/// served in each, under a lock every session shares. The book is now
/// written by a thread of its own, at most every [`FLUSH_EVERY`] and only
/// when something changed, and at the end ([`ReceiptBook::flush`], or when
/// the book is dropped). A crash loses at most that long of receipts: the
/// node settles the one before, so it loses what that interval paid.
///
/// The file is a JSON object: `receipts`, a list of signed receipts, and
/// `owed`, a list of `{channel, bytes, expires_at_secs}`. A book written
/// before the debts were kept, a bare list of receipts, opens with no
/// debts, as does an object with no `owed`.
pub struct ReceiptBook {
    book: Mutex<Book>,
    file: Option<PathBuf>,
    /// Held while a snapshot is written, so that an older one never
    /// replaces a newer.
    writing: Mutex<()>,
}

#[derive(Default)]
struct Book {
    receipts: HashMap<ChannelId, SignedReceipt>,
    owed: HashMap<ChannelId, OwedDebt>,
    /// Changed since the file was last written.
    dirty: bool,
    /// The last write failed: the receipts since the one before are in
    /// memory alone.
    unwritten: bool,
    /// Files written, for tests.
    writes: u64,
}

/// How often the book's thread writes a changed book.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// How often a write that keeps failing the same way is said again.
const REPEAT_FAILURE_EVERY: Duration = Duration::from_secs(300);

/// The book as its file holds it.
#[derive(Default, Serialize, Deserialize)]
struct BookFile {
    receipts: Vec<SignedReceipt>,
    #[serde(default)]
    owed: Vec<OwedEntry>,
}

#[derive(Serialize, Deserialize)]
struct OwedEntry {
    channel: ChannelId,
    bytes: u64,
    expires_at_secs: u64,
}

impl BookFile {
    /// Reads the book's JSON, in either of its forms.
    fn parse(text: &str) -> serde_json::Result<BookFile> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        if value.is_array() {
            // Written before the book kept debts: receipts only.
            return Ok(BookFile { receipts: serde_json::from_value(value)?, owed: Vec::new() });
        }
        serde_json::from_value(value)
    }
}

impl ReceiptBook {
    pub fn in_memory() -> Arc<ReceiptBook> {
        Arc::new(ReceiptBook { book: Mutex::new(Book::default()), file: None, writing: Mutex::new(()) })
    }

    /// Opens (or starts) the book at `file`, written every [`FLUSH_EVERY`]
    /// when changed.
    pub fn open(file: PathBuf) -> anyhow::Result<Arc<ReceiptBook>> {
        ReceiptBook::open_flushing_every(file, FLUSH_EVERY)
    }

    /// [`ReceiptBook::open`] with the writer's period.
    pub fn open_flushing_every(file: PathBuf, every: Duration) -> anyhow::Result<Arc<ReceiptBook>> {
        let on_disk = match std::fs::read_to_string(&file) {
            Ok(text) => BookFile::parse(&text)
                .map_err(|e| anyhow::anyhow!("{} is not a receipt book: {e}", file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BookFile::default(),
            Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", file.display())),
        };
        let receipts = on_disk.receipts.into_iter().map(|r| (r.receipt.channel, r)).collect();
        let owed = on_disk
            .owed
            .into_iter()
            .map(|e| (e.channel, OwedDebt { bytes: e.bytes, expires_at_secs: e.expires_at_secs }))
            .collect();
        let book = Arc::new(ReceiptBook {
            book: Mutex::new(Book { receipts, owed, ..Book::default() }),
            file: Some(file),
            writing: Mutex::new(()),
        });
        // The thread holds the book weakly: it ends once the book is gone
        // (whose drop writes what is left).
        let weak = Arc::downgrade(&book);
        std::thread::Builder::new().name("receipt-book".into()).spawn(move || {
            // A failure is said once, again only if it changes or lasts
            // another REPEAT_FAILURE_EVERY, and its end too: said at every
            // try (four a second, for as long as a full disk lasted) it
            // flooded the node's log.
            let mut failing: Option<(String, Instant)> = None;
            loop {
                std::thread::sleep(every);
                let Some(book) = weak.upgrade() else { return };
                match book.flush() {
                    // A failed book stays dirty, so after a failure this
                    // is a write.
                    Ok(()) => {
                        if let (Some(_), Some(file)) = (failing.take(), &book.file) {
                            eprintln!("receipt book: {} written again", file.display());
                        }
                    }
                    Err(e) => {
                        let error = format!("{e:#}");
                        let due = failing
                            .as_ref()
                            .is_none_or(|(said, at)| *said != error || at.elapsed() >= REPEAT_FAILURE_EVERY);
                        if due {
                            eprintln!(
                                "receipt book: {error} (tried again every {} ms, said again every {} s while it fails; \
                                 a crash meanwhile loses the receipts since the last write)",
                                every.as_millis(),
                                REPEAT_FAILURE_EVERY.as_secs()
                            );
                            failing = Some((error, Instant::now()));
                        }
                    }
                }
            }
        })?;
        Ok(book)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        // A panic while holding the lock left a whole map behind it.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn latest(&self, channel: &ChannelId) -> Option<SignedReceipt> {
        self.lock().receipts.get(channel).cloned()
    }

    pub fn all(&self) -> Vec<SignedReceipt> {
        self.lock().receipts.values().cloned().collect()
    }

    /// Keeps `receipt` if it is newer than the one held.
    pub fn record(&self, receipt: SignedReceipt) {
        let mut book = self.lock();
        let newer = book
            .receipts
            .get(&receipt.receipt.channel)
            .is_none_or(|r| r.receipt.cumulative_usd < receipt.receipt.cumulative_usd);
        if newer {
            book.receipts.insert(receipt.receipt.channel, receipt);
            book.dirty = true;
        }
    }

    /// Drops the channel's receipt: the channel is closed on the chain, so
    /// it can no longer be settled.
    pub fn forget(&self, channel: &ChannelId) {
        let mut book = self.lock();
        if book.receipts.remove(channel).is_some() {
            book.dirty = true;
        }
    }

    /// Drops the channel's receipt if it pays no more than `settled_usd`,
    /// what the chain shows settled on a channel that has expired: no
    /// session pays on an expired channel, so nothing newer can come and
    /// the receipt can settle nothing more. A newer receipt that came
    /// meanwhile (a session still closing at the expiry) stays.
    pub fn forget_settled(&self, channel: &ChannelId, settled_usd: Usd) {
        let mut book = self.lock();
        if book.receipts.get(channel).is_some_and(|r| r.receipt.cumulative_usd <= settled_usd) {
            book.receipts.remove(channel);
            book.dirty = true;
        }
    }

    /// What each channel's closed sessions left unpaid, as last kept
    /// (read from the file at open): for the node's `Holders` at start.
    pub fn owed(&self) -> Vec<(ChannelId, OwedDebt)> {
        let mut owed: Vec<(ChannelId, OwedDebt)> = self.lock().owed.iter().map(|(c, d)| (*c, *d)).collect();
        owed.sort_by_key(|(channel, _)| *channel);
        owed
    }

    /// Keeps the channels' debts as changed (`None`: the channel owes
    /// nothing now), from `Holders::drain_owed_changes`.
    pub fn keep_owed(&self, changes: Vec<(ChannelId, Option<OwedDebt>)>) {
        if changes.is_empty() {
            return;
        }
        let mut book = self.lock();
        for (channel, debt) in changes {
            let before = match debt {
                Some(debt) => book.owed.insert(channel, debt),
                None => book.owed.remove(&channel),
            };
            if before != debt {
                book.dirty = true;
            }
        }
    }

    /// Writes the book now if it changed since it was last written.
    pub fn flush(&self) -> anyhow::Result<()> {
        let Some(file) = &self.file else { return Ok(()) };
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let on_disk = {
            let mut book = self.lock();
            if !book.dirty {
                return Ok(());
            }
            book.dirty = false;
            let mut receipts: Vec<SignedReceipt> = book.receipts.values().cloned().collect();
            receipts.sort_by_key(|r| r.receipt.channel);
            let mut owed: Vec<OwedEntry> = book
                .owed
                .iter()
                .map(|(channel, d)| OwedEntry { channel: *channel, bytes: d.bytes, expires_at_secs: d.expires_at_secs })
                .collect();
            owed.sort_by_key(|e| e.channel);
            BookFile { receipts, owed }
        };
        let written = write_atomically(file, &on_disk);
        {
            let mut book = self.lock();
            book.unwritten = written.is_err();
            match written {
                Ok(()) => book.writes += 1,
                Err(_) => book.dirty = true,
            }
        }
        written
    }

    /// Whether the last write failed (a full disk): until one succeeds, a
    /// crash loses what was paid since the last good write, so the node
    /// settles on the chain what it would otherwise wait to settle.
    pub fn unwritten(&self) -> bool {
        self.lock().unwritten
    }

    /// How many times the file has been written.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }
}

impl Drop for ReceiptBook {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            eprintln!("receipt book: {e:#}");
        }
    }
}

/// Write-then-rename, synced: a crash leaves the old book or the new.
fn write_atomically(file: &std::path::Path, book: &BookFile) -> anyhow::Result<()> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(book)?;
    let tmp = file.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, file).map_err(|e| anyhow::anyhow!("replacing {}: {e}", file.display()))?;
    // The rename is durable once its directory is: without this a crash
    // could bring back the older book, up to the file system's commit
    // interval later than the book's own 250 ms.
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| anyhow::anyhow!("syncing {}: {e}", dir.display()))?;
    Ok(())
}

pub fn now_unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollway_types::tx::Receipt;
    use tollway_types::SigningKey;

    fn receipt(channel: u8, cumulative_usd: u128) -> SignedReceipt {
        let r = Receipt {
            chain_id: "tollway-test".into(),
            channel: tollway_types::Hash32([channel; 32]),
            cumulative_usd: Usd(cumulative_usd),
            cumulative_bytes: cumulative_usd as u64 * 1000,
        };
        r.sign(&SigningKey::from_label("client"))
    }

    fn on_disk(file: &std::path::Path) -> Vec<(u8, u128)> {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{e}"));
        let book = BookFile::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        book.receipts.iter().map(|r| (r.receipt.channel.0[0], r.receipt.cumulative_usd.0)).collect()
    }

    /// A book in a fresh directory (kept alive beside it), written every
    /// `every`.
    fn fresh_book(every: Duration) -> (tempfile::TempDir, PathBuf, Arc<ReceiptBook>) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("receipts.json");
        let book = ReceiptBook::open_flushing_every(file.clone(), every).unwrap_or_else(|e| panic!("{e}"));
        (dir, file, book)
    }

    /// A thousand receipts over a hundred channels are one write of the
    /// book, not a thousand of it; what was written opens again.
    #[test]
    fn a_burst_of_receipts_is_one_write_and_survives_a_reopen() {
        let (_dir, file, book) = fresh_book(Duration::from_secs(3600));
        for round in 1..=10u128 {
            for channel in 0..100u8 {
                book.record(receipt(channel, round));
            }
        }
        book.record(receipt(7, 3)); // older than the one held: ignored
        assert_eq!((book.writes(), file.exists()), (0, false), "nothing written on the sessions' path");
        book.flush().unwrap_or_else(|e| panic!("{e}"));
        book.flush().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(book.writes(), 1, "a second flush with nothing new writes nothing");
        let written = on_disk(&file);
        assert_eq!(written.len(), 100);
        assert!(written.iter().all(|&(_, usd)| usd == 10), "{written:?}");
        // Forgotten, recorded and dropped: the drop writes what is left.
        book.forget(&tollway_types::Hash32([0; 32]));
        book.record(receipt(1, 11));
        drop(book);
        let again = ReceiptBook::open(file.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.all().len(), 99);
        assert!(again.latest(&tollway_types::Hash32([0; 32])).is_none());
        assert_eq!(again.latest(&tollway_types::Hash32([1; 32])).map(|r| r.receipt.cumulative_usd), Some(Usd(11)));
    }

    /// The debts closed sessions left are kept with the receipts and open
    /// again; a book written before they were kept (a bare list of
    /// receipts) opens, with no debts.
    #[test]
    fn debts_survive_a_reopen_and_a_book_of_receipts_only_still_opens() {
        let (dir, file, book) = fresh_book(Duration::from_secs(3600));
        let debt = |bytes| OwedDebt { bytes, expires_at_secs: 1_000 };
        let (a, b) = (tollway_types::Hash32([1; 32]), tollway_types::Hash32([2; 32]));
        book.record(receipt(1, 5));
        book.keep_owed(vec![(a, Some(debt(7_000))), (b, Some(debt(9_000)))]);
        book.keep_owed(vec![(b, None)]);
        drop(book);
        let again = ReceiptBook::open(file.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.owed(), vec![(a, debt(7_000))]);
        assert_eq!(again.all().len(), 1);
        drop(again);

        let old = dir.path().join("old.json");
        let receipts = vec![receipt(3, 8)];
        std::fs::write(&old, serde_json::to_string_pretty(&receipts).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
        let opened = ReceiptBook::open(old.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(opened.latest(&tollway_types::Hash32([3; 32])).map(|r| r.receipt.cumulative_usd), Some(Usd(8)));
        assert!(opened.owed().is_empty());
        // Written again, it is the new form, and opens as it was.
        opened.keep_owed(vec![(a, Some(debt(1)))]);
        drop(opened);
        assert_eq!(on_disk(&old), vec![(3, 8)]);
        let reopened = ReceiptBook::open(old).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reopened.owed(), vec![(a, debt(1))]);
    }

    /// The book's thread writes a changed book by itself.
    #[test]
    fn the_book_is_written_within_its_period() {
        let (_dir, file, book) = fresh_book(Duration::from_millis(20));
        book.record(receipt(5, 42));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while book.writes() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(on_disk(&file), vec![(5, 42)]);
    }
}
