//! What this proxy's sessions counted on each channel, for the check of
//! the next session's carried bytes (ADR 0008, 2026-12-05).
//!
//! A node serves a channel one session at a time, and what a session
//! taken over or closed owing delivered past its last receipt is owed on
//! the channel's next one: the node's hello says how much
//! (`carried_bytes`), and the client's first receipt pays it. Taken on the
//! node's word up to its credit window on every session, a node could
//! claim a window each time the client reconnected, and be paid for bytes
//! it never sent. So the client holds each claim to its own count of its
//! last session on the channel, and takes at most one credit window on
//! the node's word beyond that for as long as the process runs
//! (`tollway_tunnel::session::check_carried_bytes`).
//!
//! What sessions carry on the channel earns that allowance back, a byte
//! per [`REFILL_RATIO`] bytes: each connection that dies under a download
//! leaves its bytes in flight unseen by the client (a megabyte, say), and
//! a proxy on a flaky line would otherwise retire an honest exit after a
//! couple of drops; a node that over-claims must carry 64 windows for the
//! client before its next claim (an overcharge of 1.6 % at most).
//!
//! Kept in memory: a restarted proxy knows nothing of its channels'
//! earlier sessions, and the first claim on each counts whole against
//! the window. Two connects on one channel at once (routes through two
//! relays to one exit, raced) each check against the book as it was when
//! they started: one window more each, at most.
//!
//! The book also keeps the highest receipt the channel's sessions signed
//! ([`CarriedBook::signed`]): a new session's count starts again from its
//! hello, and what the route has paid must not seem to go down meanwhile.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use tollway_net::driver::SessionHandle;
use tollway_tunnel::session::EarlierSessions;
use tollway_types::amount::Usd;
use tollway_types::tx::ChannelId;

/// Per channel: the client's last session on it, what nodes' carried
/// claims were paid beyond the client's own count, and the highest
/// receipt signed. One entry per channel
/// a route of the process pays on.
#[derive(Default)]
pub struct CarriedBook {
    channels: Mutex<BTreeMap<ChannelId, Seen>>,
}

/// Bytes a channel's sessions carry per byte of carried claims they earn
/// back (see the module's docs).
pub const REFILL_RATIO: u64 = 64;

#[derive(Default)]
struct Seen {
    /// The channel's last established session: its cumulative count as it
    /// stands, or as it ended.
    last: Option<SessionHandle>,
    /// `last`'s cumulative count when it was established: what it has
    /// carried since is the rest of its count.
    last_established_at_bytes: u64,
    carried_unseen_bytes: u64,
    /// The newest receipt the sessions before `last` signed, bytes and
    /// USD (each the highest: receipts are cumulative).
    signed_before: (u64, Usd),
}

/// The higher of two cumulative receipts' bytes and USD.
fn highest((bytes, usd): (u64, Usd), (other_bytes, other_usd): (u64, Usd)) -> (u64, Usd) {
    (bytes.max(other_bytes), usd.max(other_usd))
}

/// The bytes and USD of the newest receipt `session` signed.
fn receipted(session: &SessionHandle) -> (u64, Usd) {
    let usage = session.usage();
    (usage.receipted_bytes, usage.receipted_usd)
}

/// What claims taken on nodes' word (`unseen`) still count after the
/// channel's sessions carried `carried` bytes, and a new claim `claimed`.
fn unseen_after(unseen: u64, carried: u64, claimed: u64) -> u64 {
    unseen.saturating_sub(carried / REFILL_RATIO).saturating_add(claimed)
}

impl CarriedBook {
    fn channels(&self) -> MutexGuard<'_, BTreeMap<ChannelId, Seen>> {
        // A panic elsewhere while holding it leaves the map whole.
        self.channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What a new session on `channel` holds its node's carried bytes to.
    /// A session still open on the channel (the node takes it over) counts
    /// as far as it has counted now.
    pub fn earlier(&self, channel: &ChannelId) -> EarlierSessions {
        self.channels().get(channel).map_or_else(EarlierSessions::default, |seen| EarlierSessions {
            last_cumulative_bytes: seen.last.as_ref().map(SessionHandle::cumulative_bytes),
            carried_unseen_bytes: seen.carried_unseen_bytes,
        })
    }

    /// The highest receipt this process signed on `channel`, bytes and
    /// USD, over all its sessions there: what the channel has paid as far
    /// as this proxy knows (zero for a channel it has had no session on).
    pub fn signed(&self, channel: &ChannelId) -> (u64, Usd) {
        self.channels().get(channel).map_or((0, Usd::ZERO), |seen| {
            seen.last.as_ref().map_or(seen.signed_before, |last| highest(seen.signed_before, receipted(last)))
        })
    }

    /// `session` on `channel` is established: it is the channel's last
    /// session from now on, and what its node's hello claimed beyond the
    /// client's count counts against the window.
    pub fn established(&self, channel: ChannelId, session: &SessionHandle) {
        let unseen = session.usage().carried_unseen_bytes;
        let mut channels = self.channels();
        let seen = channels.entry(channel).or_default();
        let carried = seen.last.as_ref().map_or(0, |last| last.cumulative_bytes().saturating_sub(seen.last_established_at_bytes));
        seen.carried_unseen_bytes = unseen_after(seen.carried_unseen_bytes, carried, unseen);
        if let Some(last) = &seen.last {
            seen.signed_before = highest(seen.signed_before, receipted(last));
        }
        seen.last = Some(session.clone());
        seen.last_established_at_bytes = session.cumulative_bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Honest traffic earns claims back; a claim that comes with none
    /// counts whole.
    #[test]
    fn carried_traffic_earns_claims_back_at_the_refill_ratio() {
        const MIB: u64 = 1 << 20;
        // Two drops under downloads, each leaving 1.1 MiB unseen, with 70
        // MiB carried between them: the second counts alone.
        let after_first = unseen_after(0, 0, 1_100_000);
        assert_eq!(unseen_after(after_first, 70 * MIB, 1_100_000), 1_100_000);
        // A node claiming 2 MiB again with nothing carried between.
        assert_eq!(unseen_after(2 * MIB, 0, 2 * MIB), 4 * MIB);
        // 64 windows carried earn one window back, no more.
        assert_eq!(unseen_after(2 * MIB, 64 * 2 * MIB, 0), 0);
        assert_eq!(unseen_after(2 * MIB, 63 * 2 * MIB, 0), 2 * MIB / 64);
    }
}
