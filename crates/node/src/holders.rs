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
//! `carried_bytes`), counted once it has closed: the new session takes the
//! debt the old one records as it closes ([`Holders::closed`],
//! [`Holders::take_owed`]). Counted while the old one was still open, the
//! bytes it delivered between the count and its close were owed by no one.
//! A channel is taken over at most once per [`TAKEOVER_EVERY`], and a
//! session beyond that is refused with `ChannelBusy`: two clients on one
//! channel that both insist (two proxies with one key; ours leaves a
//! channel taken from it) trade it every few seconds, not in a tight loop
//! of closes.
//!
//! What a session that closed had delivered past its last receipt is owed
//! on its channel's next session too ([`Holders::closed`],
//! [`Holders::take_owed`]): a client that never paid, hung up at the
//! pause and reconnected got a fresh credit window every time. The server
//! keeps these debts in the receipt book ([`Holders::with_owed`],
//! [`Holders::drain_owed_changes`]): held in memory only, a node restart
//! forgot them, and a client that stopped paying got a fresh window on
//! each channel after every restart.
//!
//! The debt a session's lookup takes is the session's only once it takes
//! its channel: one that closes before the lookup's answer reaches it, or
//! whose channel is then refused, carried none of it, and its close hands
//! the debt back ([`Holders::closed`] with `None`). Taken for good at the
//! lookup, it was forgiven to a client that hung up as its lookup
//! returned.

use std::collections::{BTreeSet, HashMap};
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
    /// The channel's open session `0` is to be closed: this one takes
    /// over, and owes what that one leaves unpaid once it has closed
    /// ([`Holders::take_owed`]).
    TakeOver(SessionId),
    /// Taken over too recently: refused; it may be taken over again after
    /// the duration.
    Busy(Duration),
    /// The session closed before its claim came (its channel lookup was
    /// still running): nothing changes.
    Gone,
}

/// What the sessions of a channel left unpaid when they closed, owed by
/// the next session that takes it ([`Holders::take_owed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwedDebt {
    pub bytes: u64,
    /// When the channel expires (unix seconds): the debt goes with it, as
    /// an expired channel is refused anyway.
    pub expires_at_secs: u64,
}

#[derive(Clone, Copy, Debug)]
struct Holder {
    session: SessionId,
    taken_over_at: Option<Instant>,
}

/// An open session's claim on its channel.
#[derive(Clone, Copy, Debug)]
struct SessionClaim {
    channel: ChannelId,
    /// When the channel expires (unix seconds).
    expires_at_secs: u64,
    /// What its lookup took of the channel's debt ([`Holders::take_owed`]):
    /// owed again if it closes without taking the channel.
    carried_bytes: u64,
}

/// Which session holds each channel, and what closed sessions left
/// unpaid.
#[derive(Debug, Default)]
pub struct Holders {
    by_channel: HashMap<ChannelId, Holder>,
    /// The channel each open session claimed.
    by_session: HashMap<SessionId, SessionClaim>,
    /// Per channel whose sessions closed owing: what they owed, until a
    /// session takes it. One entry per channel (each an escrow on the
    /// chain); expired channels' entries go (`closed`, `with_owed`), as an
    /// expired channel is refused anyway.
    owed: HashMap<ChannelId, OwedDebt>,
    /// Channels whose entry in `owed` changed since the last
    /// [`Holders::drain_owed_changes`].
    owed_changed: BTreeSet<ChannelId>,
    /// Sessions that closed before they claimed a channel, and when (unix
    /// seconds). A channel lookup runs apart from its session and claims
    /// when it returns: one that returned after its session had closed
    /// took the channel free, and with it the debt the last session left,
    /// which the dead session could not pass on; a client that opened a
    /// session and hung up at once got a new credit window every time.
    closed_unclaimed: HashMap<SessionId, u64>,
}

/// Entries of [`Holders::owed`] beyond which expired ones are dropped.
const OWED_PRUNE_ABOVE: usize = 1024;
/// How long a session that closed unclaimed is remembered: far longer
/// than a channel lookup takes (a few seconds at most).
const CLOSED_UNCLAIMED_SECS: u64 = 120;

impl Holders {
    /// Holders that know the debts `owed` (kept from before a restart),
    /// but those of channels expired by `now_unix_secs`, whose going counts
    /// as a change.
    pub fn with_owed(owed: impl IntoIterator<Item = (ChannelId, OwedDebt)>, now_unix_secs: u64) -> Holders {
        let mut holders = Holders::default();
        for (channel, debt) in owed {
            if debt.expires_at_secs > now_unix_secs {
                holders.owed.insert(channel, debt);
            } else {
                holders.owed_changed.insert(channel);
            }
        }
        holders
    }

    /// The channels whose debt changed since the last call, with the debt
    /// each owes now (`None`: nothing), for the receipt book to keep.
    pub fn drain_owed_changes(&mut self) -> Vec<(ChannelId, Option<OwedDebt>)> {
        let changed = std::mem::take(&mut self.owed_changed);
        changed.into_iter().map(|channel| (channel, self.owed.get(&channel).copied())).collect()
    }

    /// Session `session` asks for `channel` at `now`; `is_open` tells
    /// whether a session is still open. On `Free` and `TakeOver` the
    /// channel is `session`'s from now on.
    pub fn claim(
        &mut self,
        session: SessionId,
        channel: ChannelId,
        expires_at_secs: u64,
        now: Instant,
        is_open: impl Fn(&SessionId) -> bool,
    ) -> Claim {
        if self.closed_unclaimed.remove(&session).is_some() {
            return Claim::Gone;
        }
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
        self.by_session.insert(session, SessionClaim { channel, expires_at_secs, carried_bytes: 0 });
        // Bounded: a channel whose session has closed, with no recent
        // takeover, needs no entry.
        if self.by_channel.len() > 1024 && self.by_channel.len().is_power_of_two() {
            self.by_channel.retain(|_, h| {
                is_open(&h.session) || h.taken_over_at.is_some_and(|t| now.saturating_duration_since(t) < TAKEOVER_EVERY)
            });
        }
        claim
    }

    /// The sessions whose channel expired by `now_unix_secs`; each still
    /// open (a session leaves when it closes, `closed`).
    pub fn expired_sessions(&self, now_unix_secs: u64) -> Vec<SessionId> {
        self.by_session.iter().filter(|(_, c)| c.expires_at_secs <= now_unix_secs).map(|(s, _)| *s).collect()
    }

    /// What the channel's closed sessions left unpaid, owed by `session`,
    /// which claimed it: at once when it claimed the channel free, after
    /// the session it took over has closed on a takeover. Nothing if
    /// `session` has closed meanwhile: the debt stays for the channel's
    /// next session, as a closed session can pass nothing on. Should
    /// `session` close without taking the channel, the debt is owed again
    /// ([`Holders::closed`]).
    pub fn take_owed(&mut self, session: SessionId, channel: &ChannelId) -> u64 {
        let Some(claim) = self.by_session.get_mut(&session).filter(|c| c.channel == *channel) else {
            return 0;
        };
        let Some(debt) = self.owed.remove(channel) else { return 0 };
        self.owed_changed.insert(*channel);
        claim.carried_bytes = claim.carried_bytes.saturating_add(debt.bytes);
        debt.bytes
    }

    /// Session `session` closed, `unpaid_bytes` past its channel's newest
    /// receipt (what it carried from before included), or `None` if it
    /// never took its channel (refused after its lookup, or closed before
    /// the lookup's answer reached it): then what its lookup took of the
    /// channel's debt is still owed, as the session carried none of it.
    /// Owed on the channel's next session, or on the one that took the
    /// channel over from it (which takes it now that this one has closed);
    /// added to what is owed already (a debt that came after its taker had
    /// taken the rest, as the taker waits for the close a bounded time
    /// only).
    pub fn closed(&mut self, session: SessionId, unpaid_bytes: Option<u64>, now_unix_secs: u64) {
        let Some(SessionClaim { channel, expires_at_secs, carried_bytes }) = self.by_session.remove(&session) else {
            self.closed_unclaimed.insert(session, now_unix_secs);
            if self.closed_unclaimed.len() > 1024 && self.closed_unclaimed.len().is_power_of_two() {
                self.closed_unclaimed.retain(|_, at| at.saturating_add(CLOSED_UNCLAIMED_SECS) > now_unix_secs);
            }
            return;
        };
        let unpaid_bytes = unpaid_bytes.unwrap_or(carried_bytes);
        if unpaid_bytes > 0 {
            let debt = self.owed.entry(channel).or_insert(OwedDebt { bytes: 0, expires_at_secs });
            debt.bytes = debt.bytes.saturating_add(unpaid_bytes);
            self.owed_changed.insert(channel);
        }
        if self.owed.len() > OWED_PRUNE_ABOVE && self.owed.len().is_power_of_two() {
            let changed = &mut self.owed_changed;
            self.owed.retain(|channel, debt| {
                let keep = debt.expires_at_secs > now_unix_secs;
                if !keep {
                    changed.insert(*channel);
                }
                keep
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{Claim, Holders, OwedDebt, OWED_PRUNE_ABOVE, TAKEOVER_EVERY};
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
            let c = holders.claim([s; 16], ch, u64::MAX, t0 + at, |id| open.contains(id));
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

    /// A closed session's debt is owed by the channel's next session, once,
    /// and a session taken over leaves its debt to its taker; debts on
    /// expired channels go once the list is long.
    #[test]
    fn a_closed_sessions_debt_is_owed_once_by_the_next_session() {
        let ch: ChannelId = Hash32([1; 32]);
        let t0 = Instant::now();
        let mut h = Holders::default();
        assert_eq!(h.claim([1; 16], ch, 100, t0, |_| false), Claim::Free);
        h.closed([1; 16], Some(5_000), 50);
        assert_eq!(h.claim([2; 16], ch, 100, t0, |_| false), Claim::Free);
        assert_eq!(h.take_owed([2; 16], &ch), 5_000);
        assert_eq!(h.take_owed([2; 16], &ch), 0);
        assert_eq!(h.claim([3; 16], ch, 100, t0, |id| *id == [2; 16]), Claim::TakeOver([2; 16]));
        h.closed([2; 16], Some(7_000), 50);
        assert_eq!(h.take_owed([3; 16], &ch), 7_000, "session 3 owes what session 2 left as it closed");
        h.closed([3; 16], Some(0), 50);
        assert_eq!(h.claim([4; 16], ch, 100, t0, |_| false), Claim::Free);
        assert_eq!(h.take_owed([4; 16], &ch), 0, "nothing unpaid, nothing owed");
        h.closed([4; 16], Some(0), 50);
        for i in 0..2 * OWED_PRUNE_ABOVE as u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            let session: [u8; 16] = id[..16].try_into().unwrap();
            let expires = if i == 0 { 100 } else { 10 };
            // Open while it claims, as the server's sessions are.
            h.claim(session, Hash32(id), expires, t0, |s| *s == session);
            h.closed(session, Some(1), 50);
        }
        assert_eq!(h.owed.len(), 1, "only the unexpired channel's debt stays");
        assert!(h.by_session.is_empty(), "closed sessions leave no entry");
    }

    /// A session that closed before its claim came claims nothing, and the
    /// debt stays for the next; a takeover in the instant a closing session
    /// recorded its debt (still open to the node) owes that debt once.
    #[test]
    fn a_late_claim_takes_nothing_and_a_takeover_owes_the_debt_once() {
        let ch: ChannelId = Hash32([1; 32]);
        let t0 = Instant::now();
        let mut h = Holders::default();
        assert_eq!(h.claim([1; 16], ch, 100, t0, |_| false), Claim::Free);
        h.closed([1; 16], Some(5_000), 50);
        h.closed([2; 16], Some(0), 50); // gone before its lookup returned
        assert_eq!(h.claim([2; 16], ch, 100, t0, |_| false), Claim::Gone);
        assert_eq!(h.claim([3; 16], ch, 100, t0, |_| false), Claim::Free);
        assert_eq!(h.take_owed([3; 16], &ch), 5_000, "the debt waited for a session that got the channel");
        h.closed([3; 16], Some(4_000), 50);
        assert_eq!(h.claim([4; 16], ch, 100, t0, |id| *id == [3; 16]), Claim::TakeOver([3; 16]));
        assert_eq!(h.take_owed([4; 16], &ch), 4_000);
        assert_eq!(h.claim([5; 16], ch, 100, t0 + TAKEOVER_EVERY, |id| *id == [4; 16]), Claim::TakeOver([4; 16]));
        h.closed([4; 16], Some(0), 50);
        assert_eq!(h.take_owed([5; 16], &ch), 0, "owed once, not again");
    }

    /// The debt a session's lookup took is owed still when the session
    /// never took its channel: it closed before the lookup's answer reached
    /// it, or its channel was refused then. It was forgiven, and the next
    /// session started a fresh credit window. A session that took its
    /// channel owes what it says it left, the debt it carried included, not
    /// the debt again.
    #[test]
    fn a_debt_taken_by_a_session_that_never_took_its_channel_is_owed_still() {
        let ch: ChannelId = Hash32([1; 32]);
        let t0 = Instant::now();
        let mut h = Holders::default();
        assert_eq!(h.claim([1; 16], ch, 100, t0, |_| false), Claim::Free);
        h.closed([1; 16], Some(5_000), 50);
        assert_eq!(h.claim([2; 16], ch, 100, t0, |_| false), Claim::Free);
        assert_eq!(h.take_owed([2; 16], &ch), 5_000);
        h.drain_owed_changes();
        h.closed([2; 16], None, 50);
        let debt = OwedDebt { bytes: 5_000, expires_at_secs: 100 };
        assert_eq!(h.drain_owed_changes(), vec![(ch, Some(debt))], "the book keeps it again");
        assert_eq!(h.claim([3; 16], ch, 100, t0, |_| false), Claim::Free);
        assert_eq!(h.take_owed([3; 16], &ch), 5_000, "session 2 never carried it");
        // Session 3 took its channel and was paid in full.
        h.closed([3; 16], Some(0), 50);
        assert_eq!(h.claim([4; 16], ch, 100, t0, |_| false), Claim::Free);
        assert_eq!(h.take_owed([4; 16], &ch), 0, "paid, not owed again");

        // A takeover's taker that closes before it takes the channel hands
        // back what the session it took over left.
        assert_eq!(h.claim([5; 16], ch, 100, t0, |id| *id == [4; 16]), Claim::TakeOver([4; 16]));
        h.closed([4; 16], Some(7_000), 50);
        assert_eq!(h.take_owed([5; 16], &ch), 7_000);
        h.closed([5; 16], None, 50);
        assert_eq!(h.claim([6; 16], ch, 100, t0, |_| false), Claim::Free);
        assert_eq!(h.take_owed([6; 16], &ch), 7_000, "session 5 never carried it");
    }

    /// A session taken over owes what it delivered until it closed, not
    /// only until the takeover: its taker takes the debt it records as it
    /// closes. A debt that comes after its taker took what was owed (the
    /// server waits for the close a bounded time), or after the taker
    /// itself closed, stays for the channel's next session, beside the
    /// taker's own.
    #[test]
    fn a_session_taken_over_owes_what_it_delivered_until_it_closed() {
        let ch: ChannelId = Hash32([1; 32]);
        let t0 = Instant::now();
        let mut h = Holders::default();
        assert_eq!(h.claim([1; 16], ch, 100, t0, |_| false), Claim::Free);
        // Taken over while it had 3,000 bytes unpaid; it delivered 2,000
        // more before its close.
        assert_eq!(h.claim([2; 16], ch, 100, t0, |id| *id == [1; 16]), Claim::TakeOver([1; 16]));
        h.closed([1; 16], Some(5_000), 50);
        assert_eq!(h.take_owed([2; 16], &ch), 5_000, "all it delivered, to its close");

        // A close that comes after the taker took what was owed.
        let later = t0 + TAKEOVER_EVERY;
        assert_eq!(h.claim([3; 16], ch, 100, later, |id| *id == [2; 16]), Claim::TakeOver([2; 16]));
        assert_eq!(h.take_owed([3; 16], &ch), 0, "session 2 has not closed yet");
        h.closed([2; 16], Some(6_000), 50);
        h.closed([3; 16], Some(1_000), 50);
        assert_eq!(h.claim([4; 16], ch, 100, later, |_| false), Claim::Free);
        assert_eq!(h.take_owed([4; 16], &ch), 7_000, "both debts, each once");

        // A taker that closed before the session it took over.
        let later = later + TAKEOVER_EVERY;
        assert_eq!(h.claim([5; 16], ch, 100, later, |id| *id == [4; 16]), Claim::TakeOver([4; 16]));
        h.closed([5; 16], Some(0), 50);
        h.closed([4; 16], Some(8_000), 50);
        assert_eq!(h.take_owed([5; 16], &ch), 0, "a closed session takes nothing");
        assert_eq!(h.claim([6; 16], ch, 100, later, |_| false), Claim::Free);
        assert_eq!(h.take_owed([6; 16], &ch), 8_000, "the debt waited for the next session");
    }

    /// Every change to the debts is told once, as the debt now stands, so
    /// that the receipt book can keep them; debts kept from before a
    /// restart are owed again, but those of expired channels, which go.
    #[test]
    fn debts_are_told_as_they_change_and_come_back_after_a_restart() {
        let (a, b): (ChannelId, ChannelId) = (Hash32([1; 32]), Hash32([2; 32]));
        let t0 = Instant::now();
        let mut h = Holders::default();
        h.claim([1; 16], a, 100, t0, |_| false);
        h.claim([2; 16], b, 100, t0, |_| false);
        h.closed([1; 16], Some(5_000), 50);
        h.closed([2; 16], Some(0), 50);
        let debt = OwedDebt { bytes: 5_000, expires_at_secs: 100 };
        assert_eq!(h.drain_owed_changes(), vec![(a, Some(debt))], "only a debt that changed");
        assert_eq!(h.drain_owed_changes(), vec![]);
        h.claim([3; 16], a, 100, t0, |_| false);
        assert_eq!(h.take_owed([3; 16], &a), 5_000);
        assert_eq!(h.drain_owed_changes(), vec![(a, None)]);

        let expired = OwedDebt { bytes: 9_000, expires_at_secs: 40 };
        let mut h = Holders::with_owed([(a, debt), (b, expired)], 50);
        assert_eq!(h.drain_owed_changes(), vec![(b, None)], "the expired channel's debt goes");
        assert_eq!(h.claim([4; 16], a, 100, t0, |_| false), Claim::Free);
        assert_eq!(h.take_owed([4; 16], &a), 5_000, "owed after the restart as before it");
        assert_eq!(h.claim([5; 16], b, 100, t0, |_| false), Claim::Free);
        assert_eq!(h.take_owed([5; 16], &b), 0);
    }
}
