//! One session per channel at a time.
//!
//! Each session meters its own bytes from the channel's newest receipt, so
//! two sessions on one channel would each sign receipts over the same
//! cumulative range, and the node could settle only the larger: a client
//! running k sessions would pay for one. So a channel pays for one session
//! at a time. A new session on a channel whose session is still open takes
//! it over (a client whose connection died without a word reconnects at
//! once, before the node notices), and the old one is closed; what it
//! delivered past its last receipt is owed on the new one (the server's
//! `carried_bytes`). A channel is taken over at most once per
//! [`TAKEOVER_EVERY`], and a session beyond that is refused with
//! `ChannelBusy`: two clients on one channel that both insist (two
//! proxies with one key; ours leaves a channel taken from it) trade it
//! every few seconds, not in a tight loop of closes.

use std::collections::HashMap;
use std::time::{Duration, Instant};
use tollway_types::tx::ChannelId;

/// How often a channel may be taken over from an open session.
pub const TAKEOVER_EVERY: Duration = Duration::from_secs(5);

/// A session's id on this node.
pub type SessionId = [u8; 16];

/// What a new session on a channel may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The channel is free (or already this session's).
    Free,
    /// The channel's open session `0` is to be closed: this one takes over.
    TakeOver(SessionId),
    /// Taken over too recently: refused; it may be taken over again after
    /// the duration.
    Busy(Duration),
}

#[derive(Clone, Copy, Debug)]
struct Holder {
    session: SessionId,
    taken_over_at: Option<Instant>,
}

/// Which session holds each channel.
#[derive(Debug, Default)]
pub struct Holders {
    by_channel: HashMap<ChannelId, Holder>,
}

impl Holders {
    /// Session `session` asks for `channel` at `now`; `is_open` tells
    /// whether a session is still open. On `Free` and `TakeOver` the
    /// channel is `session`'s from now on.
    pub fn claim(
        &mut self,
        session: SessionId,
        channel: ChannelId,
        now: Instant,
        is_open: impl Fn(&SessionId) -> bool,
    ) -> Claim {
        let before = self.by_channel.get(&channel).copied();
        let claim = match before {
            Some(h) if h.session != session && is_open(&h.session) => {
                match h.taken_over_at.map(|t| now.saturating_duration_since(t)) {
                    Some(since) if since < TAKEOVER_EVERY => return Claim::Busy(TAKEOVER_EVERY - since),
                    _ => Claim::TakeOver(h.session),
                }
            }
            _ => Claim::Free,
        };
        let taken_over_at = match claim {
            Claim::TakeOver(_) => Some(now),
            // A recent takeover still counts against the next one, though
            // the session it closed has gone.
            _ => before.and_then(|h| h.taken_over_at).filter(|t| now.saturating_duration_since(*t) < TAKEOVER_EVERY),
        };
        self.by_channel.insert(channel, Holder { session, taken_over_at });
        // Bounded: a channel whose session has closed, with no recent
        // takeover, needs no entry.
        if self.by_channel.len() > 1024 && self.by_channel.len().is_power_of_two() {
            self.by_channel.retain(|_, h| {
                is_open(&h.session) || h.taken_over_at.is_some_and(|t| now.saturating_duration_since(t) < TAKEOVER_EVERY)
            });
        }
        claim
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{Claim, Holders, TAKEOVER_EVERY};
    use std::collections::HashSet;
    use std::time::{Duration, Instant};
    use tollway_types::tx::{ChannelId, Hash32};

    /// A second session takes an open channel over once; a third within
    /// [`TAKEOVER_EVERY`] is refused (and told when it may), after that it may;
    /// a channel whose session closed is free; other channels are apart.
    #[test]
    fn a_channel_is_taken_over_at_most_once_per_takeover_period() {
        let (a, b): (ChannelId, ChannelId) = (Hash32([1; 32]), Hash32([2; 32]));
        let t0 = Instant::now();
        let mut holders = Holders::default();
        let mut open: HashSet<[u8; 16]> = HashSet::new();
        let claim = |holders: &mut Holders, open: &mut HashSet<[u8; 16]>, s: u8, ch, at: Duration| {
            let c = holders.claim([s; 16], ch, t0 + at, |id| open.contains(id));
            if let Claim::TakeOver(old) = c {
                open.remove(&old);
            }
            if !matches!(c, Claim::Busy(_)) {
                open.insert([s; 16]);
            }
            c
        };
        let s = Duration::from_secs;
        assert_eq!(claim(&mut holders, &mut open, 1, a, s(0)), Claim::Free);
        assert_eq!(claim(&mut holders, &mut open, 1, a, s(0)), Claim::Free, "its own channel");
        assert_eq!(claim(&mut holders, &mut open, 9, b, s(0)), Claim::Free, "another channel");
        let every = TAKEOVER_EVERY;
        assert_eq!(claim(&mut holders, &mut open, 2, a, s(1)), Claim::TakeOver([1; 16]));
        assert_eq!(claim(&mut holders, &mut open, 3, a, s(2)), Claim::Busy(every - s(1)));
        let later = s(1) + every;
        assert_eq!(claim(&mut holders, &mut open, 3, a, later), Claim::TakeOver([2; 16]));
        // Session 3 closes: the channel is free, but that takeover still
        // counts against the next one while session 4 is open.
        open.remove(&[3; 16]);
        assert_eq!(claim(&mut holders, &mut open, 4, a, later + s(1)), Claim::Free);
        assert_eq!(claim(&mut holders, &mut open, 5, a, later + s(2)), Claim::Busy(every - s(2)));
        assert_eq!(claim(&mut holders, &mut open, 5, a, later + every), Claim::TakeOver([4; 16]));
    }
}
