//! What a node relays through its destination sockets: counted (for the
//! status lines of `tollway node run`), and capped when its owner says so
//! (`--max-rate-mbps`): a home line sells its idle bandwidth, and its owner
//! keeps the rest.
//!
//! The cap applies to the node's side of each stream, its sockets to
//! destinations (or, on a relay, to exits), each way on its own: what it
//! reads from them (sent on to clients) and what it writes to them (from
//! clients). Every byte relayed crosses the owner's line both in and out,
//! so a cap of N Mbit/s each way keeps the node's use of the line near
//! N Mbit/s in each direction, whatever the mix. Control frames, pings and
//! receipts are not capped: a capped node still answers at once. Busy
//! sessions share the cap equally ([`FairBucket`]), so a client with many
//! streams does not crowd out a client with one.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// A token bucket in bytes, on the caller's clock (no clock of its own, so
/// tests drive it exactly).
///
/// A taker takes its bytes first and waits after: the bucket goes into debt
/// and [`TokenBucket::take`] says how long until the debt is paid. So the
/// bytes taken by time `t` never exceed the burst plus the rate times `t`,
/// however many takers share the bucket, and each waits its turn.
#[derive(Debug)]
pub struct TokenBucket {
    rate_bytes_per_sec: u64,
    burst_bytes: u64,
    /// Bytes available, in billionths of a byte (so a refill of a few
    /// nanoseconds is not rounded away); below zero while in debt.
    level_nanobytes: i128,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket. The burst is a twentieth of a second at the rate, at
    /// least 64 KiB (one read of a stream's socket), so a bulk transfer
    /// moves in reads of normal size and short pauses.
    pub fn new(rate_bytes_per_sec: u64, now: Instant) -> TokenBucket {
        let rate_bytes_per_sec = rate_bytes_per_sec.max(1);
        let burst_bytes = (rate_bytes_per_sec / 20).max(64 * 1024);
        TokenBucket { rate_bytes_per_sec, burst_bytes, level_nanobytes: burst_bytes as i128 * NANOS_PER_SEC, at: now }
    }

    pub fn burst_bytes(&self) -> u64 {
        self.burst_bytes
    }

    pub fn rate_bytes_per_sec(&self) -> u64 {
        self.rate_bytes_per_sec
    }

    /// Takes `n` bytes at `now`; how long the taker should wait before it
    /// moves more (zero while the bucket holds enough).
    pub fn take(&mut self, now: Instant, n: u64) -> Duration {
        let rate = self.rate_bytes_per_sec as i128;
        if now > self.at {
            let elapsed_ns = now.duration_since(self.at).as_nanos().min(u64::MAX as u128) as i128;
            let full = self.burst_bytes as i128 * NANOS_PER_SEC;
            self.level_nanobytes = (self.level_nanobytes + elapsed_ns * rate).min(full);
            self.at = now;
        }
        self.level_nanobytes -= n as i128 * NANOS_PER_SEC;
        if self.level_nanobytes >= 0 {
            return Duration::ZERO;
        }
        // Rounded up, so a wait never ends before the debt is paid.
        let wait_ns = (-self.level_nanobytes + rate - 1) / rate;
        Duration::from_nanos(wait_ns.min(u64::MAX as i128) as u64)
    }
}

/// Whose bytes a take moves: a node's cap is shared by session (one
/// client's tunnel), not by stream.
pub type ShareKey = [u8; 16];

/// A session whose bytes are all paid for this long ago no longer counts
/// among the busy ones.
const BUSY_WINDOW: Duration = Duration::from_millis(100);

/// A [`TokenBucket`] that busy sessions share equally: besides the
/// bucket's own limit, a session moves at most the rate over the number of
/// busy sessions (a bucket of its own in the time domain: the time its
/// bytes are paid for, at its share, less the burst's time). One session
/// alone has the whole rate; two busy ones half each, whatever the number
/// of streams either has; a session with a small answer to send waits
/// for nobody's debt but its own and the bucket's.
#[derive(Debug)]
pub struct FairBucket {
    bucket: TokenBucket,
    /// The bucket's burst, as time at the rate: what a session may run
    /// ahead of its share.
    burst: Duration,
    /// When each busy session's bytes are paid for, at its share.
    paid_at: HashMap<ShareKey, Instant>,
}

impl FairBucket {
    pub fn new(rate_bytes_per_sec: u64, now: Instant) -> FairBucket {
        let bucket = TokenBucket::new(rate_bytes_per_sec, now);
        let burst_ns = bucket.burst_bytes() as u128 * 1_000_000_000 / bucket.rate_bytes_per_sec() as u128;
        FairBucket { bucket, burst: Duration::from_nanos(burst_ns as u64), paid_at: HashMap::new() }
    }

    pub fn rate_bytes_per_sec(&self) -> u64 {
        self.bucket.rate_bytes_per_sec()
    }

    /// Takes `n` bytes for session `key` at `now`; how long that session's
    /// stream should wait before it moves more.
    pub fn take(&mut self, now: Instant, key: ShareKey, n: u64) -> Duration {
        let bucket_wait = self.bucket.take(now, n);
        self.paid_at.retain(|_, paid| now < *paid + BUSY_WINDOW);
        let start = *self.paid_at.get(&key).unwrap_or(&now);
        let busy = self.paid_at.len() as u128 + u128::from(!self.paid_at.contains_key(&key));
        let rate = self.bucket.rate_bytes_per_sec() as u128;
        let share_ns = (n as u128 * busy * 1_000_000_000).div_ceil(rate);
        let paid = start.max(now) + Duration::from_nanos(share_ns.min(u64::MAX as u128) as u64);
        self.paid_at.insert(key, paid);
        let share_wait = paid.saturating_duration_since(now).saturating_sub(self.burst);
        bucket_wait.max(share_wait)
    }
}

/// Tokio's clock, which the pauses sleep on (and tests pause).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// What a node relays through its destination sockets, shared by all of
/// them: a count each way, and a bucket each way when capped.
#[derive(Debug)]
pub struct RelayTraffic {
    cap: Option<Cap>,
    from_destinations_bytes: AtomicU64,
    to_destinations_bytes: AtomicU64,
}

#[derive(Debug)]
struct Cap {
    /// What the node reads from its destinations (to its clients).
    from_destinations: Mutex<FairBucket>,
    /// What the node writes to its destinations (from its clients).
    to_destinations: Mutex<FairBucket>,
}

impl RelayTraffic {
    /// Counted, and capped at `max_rate_bytes_per_sec` each way if given.
    pub fn new(max_rate_bytes_per_sec: Option<u64>) -> Arc<RelayTraffic> {
        let now = now();
        Arc::new(RelayTraffic {
            cap: max_rate_bytes_per_sec.map(|rate| Cap {
                from_destinations: Mutex::new(FairBucket::new(rate, now)),
                to_destinations: Mutex::new(FairBucket::new(rate, now)),
            }),
            from_destinations_bytes: AtomicU64::new(0),
            to_destinations_bytes: AtomicU64::new(0),
        })
    }

    pub fn max_rate_bytes_per_sec(&self) -> Option<u64> {
        let bucket = self.cap.as_ref().map(|c| c.from_destinations.lock().unwrap_or_else(|e| e.into_inner()))?;
        Some(bucket.rate_bytes_per_sec())
    }

    /// Bytes read from destinations and written to them, so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.from_destinations_bytes.load(Ordering::Relaxed), self.to_destinations_bytes.load(Ordering::Relaxed))
    }

    /// A destination's socket for session `key`, counted (and capped, the
    /// cap shared fairly by the sessions).
    pub fn wrap<S>(self: &Arc<Self>, inner: S, key: ShareKey) -> RelayedStream<S> {
        RelayedStream { inner, traffic: self.clone(), key, read_pause: None, write_pause: None }
    }

    /// Counts `n` bytes one way and takes them from that way's bucket for
    /// session `key`; the pause the next transfer that way waits, if any.
    fn moved(&self, from_destination: bool, key: ShareKey, n: usize) -> Option<Pin<Box<Sleep>>> {
        let (count, bucket) = match from_destination {
            true => (&self.from_destinations_bytes, self.cap.as_ref().map(|c| &c.from_destinations)),
            false => (&self.to_destinations_bytes, self.cap.as_ref().map(|c| &c.to_destinations)),
        };
        count.fetch_add(n as u64, Ordering::Relaxed);
        // A panic elsewhere while holding the lock leaves a bucket that is
        // still a valid number: keep using it.
        let wait = bucket?.lock().unwrap_or_else(|e| e.into_inner()).take(now(), key, n as u64);
        (!wait.is_zero()).then(|| Box::pin(tokio::time::sleep(wait)))
    }
}

/// A destination's socket whose reads and writes are counted and, under a
/// cap, wait their turn: each read or write goes ahead, and the next one
/// waits until the bytes it moved are paid for. So a transfer of n bytes
/// through a cap of r takes at least (n − burst − its last read or write)
/// / r.
pub struct RelayedStream<S> {
    inner: S,
    traffic: Arc<RelayTraffic>,
    key: ShareKey,
    read_pause: Option<Pin<Box<Sleep>>>,
    write_pause: Option<Pin<Box<Sleep>>>,
}

/// Waits out `pause`, if any.
fn poll_pause(pause: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> Poll<()> {
    if let Some(sleep) = pause {
        ready!(sleep.as_mut().poll(cx));
        *pause = None;
    }
    Poll::Ready(())
}

impl<S: AsyncRead + Unpin> AsyncRead for RelayedStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(poll_pause(&mut this.read_pause, cx));
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read_pause = this.traffic.moved(true, this.key, n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> RelayedStream<S> {
    /// Counts what a write moved.
    fn wrote(&mut self, n: usize) {
        if n > 0 {
            self.write_pause = self.traffic.moved(false, self.key, n);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RelayedStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(poll_pause(&mut this.write_pause, cx));
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, data))?;
        this.wrote(n);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(poll_pause(&mut this.write_pause, cx));
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.wrote(n);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_full_bucket_lets_its_burst_through_at_once() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(MIB, t0);
        assert_eq!(b.burst_bytes(), 64 * 1024);
        assert_eq!(b.take(t0, 64 * 1024), Duration::ZERO);
        // One byte more is owed: a millionth of a second at 1 MiB/s.
        let wait = b.take(t0, 1);
        assert!(wait > Duration::ZERO && wait <= Duration::from_nanos(954), "{wait:?}");
    }

    #[test]
    fn bytes_taken_never_outrun_the_rate_however_many_share_it() {
        // Three takers, each taking 16 KiB as soon as its wait is over,
        // for ten virtual seconds at 1 MiB/s: 10 MiB plus the burst, less
        // at most one take each (the last ones still waiting).
        let t0 = Instant::now();
        let mut b = TokenBucket::new(MIB, t0);
        let mut next = [t0; 3];
        let mut taken = 0u64;
        let end = t0 + Duration::from_secs(10);
        loop {
            let (i, &at) = next.iter().enumerate().min_by_key(|(_, at)| **at).unwrap();
            if at >= end {
                break;
            }
            next[i] = at + b.take(at, 16 * 1024);
            taken += 16 * 1024;
            let allowed = b.burst_bytes() + (MIB as f64 * at.duration_since(t0).as_secs_f64()) as u64 + 3 * 16 * 1024;
            assert!(taken <= allowed, "{taken} B by {:?}, allowed {allowed}", at.duration_since(t0));
        }
        let expected = 10 * MIB + b.burst_bytes();
        assert!(taken + 3 * 16 * 1024 >= expected && taken <= expected + 3 * 16 * 1024, "{taken} B, about {expected}");
    }

    #[test]
    fn a_quiet_spell_refills_no_more_than_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(MIB, t0);
        assert_eq!(b.take(t0, 64 * 1024), Duration::ZERO);
        // An hour later, the bucket is full again, and no fuller.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.take(later, 64 * 1024), Duration::ZERO);
        let wait = b.take(later, 512 * 1024);
        assert!(wait >= Duration::from_millis(499) && wait <= Duration::from_millis(501), "{wait:?}");
    }

    /// Takers `(session, reads of `chunk` bytes)` each taking as soon as its
    /// wait is over, for `secs` virtual seconds at 1 MiB/s: the bytes each
    /// session moved.
    fn share_out(takers: &[u8], chunk: u64, secs: u64) -> (HashMap<u8, u64>, u64) {
        let t0 = Instant::now();
        let mut b = FairBucket::new(MIB, t0);
        let mut next = vec![t0; takers.len()];
        let mut moved = HashMap::new();
        let end = t0 + Duration::from_secs(secs);
        loop {
            let (i, &at) = next.iter().enumerate().min_by_key(|(_, at)| **at).unwrap();
            if at >= end {
                break;
            }
            next[i] = at + b.take(at, [takers[i]; 16], chunk);
            *moved.entry(takers[i]).or_insert(0) += chunk;
        }
        let total = moved.values().sum();
        (moved, total)
    }

    #[test]
    fn busy_sessions_share_the_cap_equally_whatever_their_streams() {
        // Session 1 reads on eight streams, session 2 on one.
        let (moved, total) = share_out(&[1, 1, 1, 1, 1, 1, 1, 1, 2], 16 * 1024, 10);
        let (a, b) = (moved[&1], moved[&2]);
        eprintln!("eight streams: {a} B, one stream: {b} B, in all {total} B");
        // Together no more than the cap allows (the rate, the burst, one
        // read each still owed), and nearly all of it.
        assert!(total <= 10 * MIB + 64 * 1024 + 9 * 16 * 1024, "{total}");
        assert!(total >= 10 * MIB - 9 * 16 * 1024, "{total}");
        // Each about half (a shared bucket gave the one stream a ninth).
        assert!(b as f64 >= 0.45 * total as f64 && a as f64 >= 0.45 * total as f64, "{a} and {b}");
    }

    #[test]
    fn a_session_alone_has_the_whole_cap() {
        let (moved, total) = share_out(&[1, 1, 1], 16 * 1024, 10);
        assert_eq!(moved.len(), 1);
        let expected = 10 * MIB + 64 * 1024;
        assert!(total + 3 * 16 * 1024 >= expected && total <= expected + 3 * 16 * 1024, "{total} B, about {expected}");
    }

    #[test]
    fn a_quiet_session_leaves_the_busy_ones_and_its_share_returns() {
        let t0 = Instant::now();
        let mut b = FairBucket::new(MIB, t0);
        // Two sessions busy: each 64 KiB read owes two 64 KiB-times at the
        // half rate, less the burst's time.
        b.take(t0, [1; 16], 64 * 1024);
        let wait = b.take(t0, [2; 16], 64 * 1024);
        assert!(wait >= Duration::from_millis(62) && wait <= Duration::from_millis(64), "{wait:?}");
        // A second later session 2 is long paid and quiet: session 1 has
        // the whole rate again.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(b.take(later, [1; 16], 64 * 1024), Duration::ZERO);
        let wait = b.take(later, [1; 16], 64 * 1024);
        assert!(wait >= Duration::from_millis(62) && wait <= Duration::from_millis(63), "{wait:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_capped_stream_moves_its_bytes_at_the_rate_both_ways() {
        // 2 MiB each way through a 1 MiB/s cap takes about two seconds of
        // (virtual) time each, the first 64 KiB free.
        let traffic = RelayTraffic::new(Some(MIB));
        let (near, mut far) = tokio::io::duplex(256 * 1024);
        let mut capped = traffic.wrap(near, [1; 16]);
        let n = 2 * MIB as usize;
        let started = tokio::time::Instant::now();
        let writer = tokio::spawn(async move {
            far.write_all(&vec![7u8; n]).await.unwrap();
            let mut back = vec![0u8; n];
            far.read_exact(&mut back).await.unwrap();
            back
        });
        let mut got = vec![0u8; n];
        capped.read_exact(&mut got).await.unwrap();
        let read_took = started.elapsed();
        capped.write_all(&got).await.unwrap();
        let both_took = started.elapsed();
        assert_eq!(writer.await.unwrap(), vec![7u8; n]);
        // The last read's or write's bytes are paid for by the next one's
        // wait, so a side ends up to one transfer (at most the duplex's
        // 256 KiB) sooner.
        let at_rate = |bytes: usize| Duration::from_secs_f64((bytes - 64 * 1024) as f64 / MIB as f64);
        let (fastest, slowest) = (at_rate(n - 256 * 1024), at_rate(n) + Duration::from_millis(100));
        assert!(read_took >= fastest && read_took <= slowest, "read: {read_took:?}");
        let write_took = both_took - read_took;
        assert!(write_took >= fastest && write_took <= slowest, "write: {write_took:?}");
        assert_eq!(traffic.totals(), (n as u64, n as u64));
    }

    #[tokio::test(start_paused = true)]
    async fn an_uncapped_stream_is_counted_and_never_waits() {
        let traffic = RelayTraffic::new(None);
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut counted = traffic.wrap(near, [1; 16]);
        let started = tokio::time::Instant::now();
        let writer = tokio::spawn(async move {
            far.write_all(&[1u8; 300_000]).await.unwrap();
            let mut back = [0u8; 1000];
            far.read_exact(&mut back).await.unwrap();
        });
        let mut got = vec![0u8; 300_000];
        counted.read_exact(&mut got).await.unwrap();
        counted.write_all(&[2u8; 1000]).await.unwrap();
        writer.await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(traffic.totals(), (300_000, 1000));
        assert_eq!(traffic.max_rate_bytes_per_sec(), None);
    }
}
