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
//! Kept in memory: a restarted proxy knows nothing of its channels'
//! earlier sessions, and the first claim on each counts whole against
//! the window. Two connects on one channel at once (routes through two
//! relays to one exit, raced) each check against the book as it was when
//! they started: one window more each, at most.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use tollway_net::driver::SessionHandle;
use tollway_tunnel::session::EarlierSessions;
use tollway_types::tx::ChannelId;

/// Per channel: the client's last session on it and what nodes' carried
/// claims were paid beyond the client's own count. One entry per channel
/// a route of the process pays on.
#[derive(Default)]
pub struct CarriedBook {
    channels: Mutex<BTreeMap<ChannelId, Seen>>,
}

#[derive(Default)]
struct Seen {
    /// The channel's last established session: its cumulative count as it
    /// stands, or as it ended.
    last: Option<SessionHandle>,
    carried_unseen_bytes: u64,
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

    /// `session` on `channel` is established: it is the channel's last
    /// session from now on, and what its node's hello claimed beyond the
    /// client's count counts against the window.
    pub fn established(&self, channel: ChannelId, session: &SessionHandle) {
        let unseen = session.usage().carried_unseen_bytes;
        let mut channels = self.channels();
        let seen = channels.entry(channel).or_default();
        seen.carried_unseen_bytes = seen.carried_unseen_bytes.saturating_add(unseen);
        seen.last = Some(session.clone());
    }
}
