//! Where a scenario's runs keep what the report reads of them once the
//! runs are over: each run's chart points and its honest operators'
//! profits (DESIGN §7 outputs). Kept in memory to the end, they grew with
//! the runs (0.18 MB of points a run of 730 epochs, 8 bytes an operator:
//! GBs at thousands of runs); `tollway sim` appends them to two files
//! beside the runs' staged CSVs instead, and the report reads them back in
//! blocks of a bounded size (`report::stats`). The library's callers and
//! tests keep the same bytes in memory: one code over either store.
//!
//! Layout, little-endian, no header: `chart-points.bin` holds each run's
//! points one after the other in the order the runs ended, a point being
//! [`POINT_VALUES`] f64 (the day, then every `Charted` series); each run's
//! `RunChart` says where its points begin. `operator-profits.bin` holds
//! the finite profits of every run, f64 one after the other, in the order
//! the runs ended: what reads them (counts, order statistics) does not
//! depend on their order.

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The f64 of one chart point: the day, then every `Charted` series.
pub const POINT_VALUES: usize = 7 + 3 * crate::output::REGIONS.len();

/// Bytes of one chart point in the spill.
pub const POINT_BYTES: usize = POINT_VALUES * 8;

/// The file of a scenario's chart points, in its directory.
pub const CHART_POINTS_FILE: &str = "chart-points.bin";

/// The file of a scenario's operator profits, in its directory.
pub const OPERATOR_PROFITS_FILE: &str = "operator-profits.bin";

/// A spill that could not be written or read back. Names the file.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    // The cause is in the message and is no `#[source]`, as in
    // `ReportError`: `{:#}` printed it twice.
    #[error("cannot create {}: {io}", path.display())]
    Create { path: PathBuf, io: std::io::Error },
    #[error("cannot write {}: {io}", path.display())]
    Write { path: PathBuf, io: std::io::Error },
    #[error("cannot read {}: {io}", path.display())]
    Read { path: PathBuf, io: std::io::Error },
}

/// What a spill is kept in: a file, or bytes in memory.
trait Storage: Read + Write + Seek + Send {}
impl<T: Read + Write + Seek + Send> Storage for T {}

/// One append-only spill: bytes appended as runs end, read back by
/// offset.
struct Spill {
    /// The file's path; for one in memory, a name for messages.
    path: PathBuf,
    storage: Box<dyn Storage>,
    len_bytes: u64,
    /// Whether `storage` is memory, which holds every byte appended.
    in_memory: bool,
}

impl Spill {
    fn in_file(path: PathBuf) -> Result<Spill, SpillError> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|io| SpillError::Create { path: path.clone(), io })?;
        Ok(Spill { path, storage: Box::new(file), len_bytes: 0, in_memory: false })
    }

    fn in_memory(name: &str) -> Spill {
        Spill { path: PathBuf::from(name), storage: Box::new(Cursor::new(Vec::new())), len_bytes: 0, in_memory: true }
    }

    /// Appends `bytes`; returns the offset they begin at.
    fn append(&mut self, bytes: &[u8]) -> Result<u64, SpillError> {
        let at = self.len_bytes;
        let written = self.storage.seek(SeekFrom::Start(at)).and_then(|_| self.storage.write_all(bytes));
        if let Err(io) = written {
            // Whatever part was written is past `len_bytes`, and is
            // overwritten or never read.
            return Err(SpillError::Write { path: self.path.clone(), io });
        }
        self.len_bytes += bytes.len() as u64;
        Ok(at)
    }

    /// Fills `buf` from `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SpillError> {
        let end = offset.saturating_add(buf.len() as u64);
        let read = if end > self.len_bytes {
            Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("bytes {offset}..{end} asked of {} written", self.len_bytes),
            ))
        } else {
            self.storage.seek(SeekFrom::Start(offset)).and_then(|_| self.storage.read_exact(buf))
        };
        read.map_err(|io| SpillError::Read { path: self.path.clone(), io })
    }
}

/// Where one scenario's runs' chart points and operator profits are
/// kept until the report is written: two files in a directory, or memory.
/// Runs append from their worker threads as they end.
pub struct RunStore {
    points: Mutex<Spill>,
    profits: Mutex<Spill>,
}

impl std::fmt::Debug for RunStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = |spill: &Mutex<Spill>| lock(spill).path.clone();
        f.debug_struct("RunStore").field("points", &path(&self.points)).field("profits", &path(&self.profits)).finish()
    }
}

impl Default for RunStore {
    fn default() -> RunStore {
        RunStore::in_memory()
    }
}

/// A spill's lock; a worker that panicked while holding it left nothing
/// half-recorded that is read (`len_bytes` moves only once written).
fn lock(spill: &Mutex<Spill>) -> MutexGuard<'_, Spill> {
    spill.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RunStore {
    /// A store in `dir` ([`CHART_POINTS_FILE`] and [`OPERATOR_PROFITS_FILE`],
    /// created anew).
    pub fn in_dir(dir: &Path) -> Result<RunStore, SpillError> {
        Ok(RunStore {
            points: Mutex::new(Spill::in_file(dir.join(CHART_POINTS_FILE))?),
            profits: Mutex::new(Spill::in_file(dir.join(OPERATOR_PROFITS_FILE))?),
        })
    }

    /// A store in memory: the same bytes, for callers with few runs.
    pub fn in_memory() -> RunStore {
        RunStore {
            points: Mutex::new(Spill::in_memory(CHART_POINTS_FILE)),
            profits: Mutex::new(Spill::in_memory(OPERATOR_PROFITS_FILE)),
        }
    }

    /// Appends one run's chart points; returns the index of its first
    /// point in the store.
    pub fn append_points(&self, points: &[[f64; POINT_VALUES]]) -> Result<u64, SpillError> {
        let bytes: Vec<u8> = points.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
        let at = lock(&self.points).append(&bytes)?;
        Ok(at / POINT_BYTES as u64)
    }

    /// Appends one run's operator profits, the finite ones.
    pub fn append_profits(&self, profits: &[f64]) -> Result<(), SpillError> {
        let bytes: Vec<u8> = profits.iter().filter(|p| p.is_finite()).flat_map(|v| v.to_le_bytes()).collect();
        lock(&self.profits).append(&bytes).map(|_| ())
    }

    /// Points `first..first + out.len()` of the store into `out`, through
    /// `bytes` (a buffer reused between calls).
    pub fn read_points(
        &self,
        first: u64,
        out: &mut [[f64; POINT_VALUES]],
        bytes: &mut Vec<u8>,
    ) -> Result<(), SpillError> {
        bytes.resize(out.len() * POINT_BYTES, 0);
        lock(&self.points).read_at(first * POINT_BYTES as u64, bytes)?;
        for (point, chunk) in out.iter_mut().zip(bytes.chunks_exact(POINT_BYTES)) {
            for (v, b) in point.iter_mut().zip(chunk.chunks_exact(8)) {
                *v = f64_le(b);
            }
        }
        Ok(())
    }

    /// Calls `f` with every profit in the store, reading a block of
    /// [`PROFIT_BLOCK_BYTES`] at a time.
    pub fn scan_profits(&self, f: &mut dyn FnMut(f64)) -> Result<(), SpillError> {
        let mut spill = lock(&self.profits);
        let mut block = vec![0u8; PROFIT_BLOCK_BYTES];
        let mut offset = 0u64;
        while offset < spill.len_bytes {
            let n = (spill.len_bytes - offset).min(PROFIT_BLOCK_BYTES as u64) as usize;
            spill.read_at(offset, &mut block[..n])?;
            block[..n].chunks_exact(8).for_each(|b| f(f64_le(b)));
            offset += n as u64;
        }
        Ok(())
    }

    /// Bytes this store holds in memory (a store in files: none but its
    /// handles).
    pub fn bytes_held(&self) -> usize {
        let held = |spill: &Mutex<Spill>| {
            let spill = lock(spill);
            if spill.in_memory { spill.len_bytes as usize } else { 0 }
        };
        held(&self.points) + held(&self.profits)
    }
}

/// Bytes of operator profits read at a time (a multiple of 8).
pub const PROFIT_BLOCK_BYTES: usize = 1 << 20;

fn f64_le(bytes: &[u8]) -> f64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    f64::from_le_bytes(b)
}
