//! Connection attempts raced with a stagger (RFC 8305's "Happy Eyeballs"
//! connection attempt delay): the client's routes in a failover, an exit's
//! addresses for a destination. Best first, but one whose packets vanish
//! costs a stagger, not a timeout.

use std::future::Future;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The stagger both users take: long enough that a healthy first choice
/// on a nearby host usually wins, short enough to stay unnoticed.
pub const NEXT_ATTEMPT_AFTER: Duration = Duration::from_millis(250);

/// Starts `attempt` on each of `items` in order, the next one `stagger`
/// after the one before or at once when one fails, and returns the first
/// success. The attempts still running are then aborted (dropped, so
/// whatever they opened closes); one that had succeeded as well (a tie)
/// goes to `surplus`, whose value may hold more than its drop closes (a
/// client's session stays open on its node until told). `failed` hears
/// each failure as it comes; `None` once every attempt failed.
pub async fn first_success<I, T, E, Fut>(
    items: Vec<I>,
    stagger: Duration,
    attempt: impl Fn(I) -> Fut,
    mut failed: impl FnMut(E),
    mut surplus: impl FnMut(T),
) -> Option<T>
where
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    if items.len() == 1 {
        // Nothing to race: no task to spawn (an exit's usual destination).
        let item = items.into_iter().next()?;
        return attempt(item).await.map_err(failed).ok();
    }
    let mut waiting = items.into_iter();
    let mut running = JoinSet::new();
    let mut next_at = Instant::now();
    loop {
        if running.is_empty() || Instant::now() >= next_at {
            if let Some(item) = waiting.next() {
                running.spawn(attempt(item));
                next_at = Instant::now() + stagger;
                continue;
            }
        }
        let done = if waiting.len() > 0 {
            tokio::select! {
                done = running.join_next() => done,
                () = tokio::time::sleep_until(next_at) => continue,
            }
        } else {
            running.join_next().await
        };
        match done? {
            Ok(Ok(value)) => {
                running.abort_all();
                while let Some(done) = running.join_next().await {
                    if let Ok(Ok(extra)) = done {
                        surplus(extra);
                    }
                }
                return Some(value);
            }
            Ok(Err(e)) => {
                failed(e);
                next_at = Instant::now();
            }
            // A panicked attempt: as if it failed, quietly.
            Err(_) => next_at = Instant::now(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// An attempt that takes `after` and then succeeds or fails.
    async fn settles(name: &'static str, after: Duration, ok: bool) -> Result<&'static str, &'static str> {
        tokio::time::sleep(after).await;
        if ok {
            Ok(name)
        } else {
            Err(name)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_first_choice_costs_one_stagger() {
        let hang = Duration::from_secs(10);
        let quick = Duration::from_millis(5);
        let start = Instant::now();
        let mut failures = Vec::new();
        let items = vec![("hangs", hang, true), ("second", quick, true), ("third", quick, true)];
        let won = first_success(items, NEXT_ATTEMPT_AFTER, |(n, d, ok)| settles(n, d, ok), |e| failures.push(e), drop).await;
        assert_eq!(won, Some("second"));
        assert_eq!(start.elapsed(), NEXT_ATTEMPT_AFTER + quick);
        assert!(failures.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_starts_the_next_at_once_and_the_best_wins_a_tie() {
        let start = Instant::now();
        let mut failures = Vec::new();
        let items = vec![
            ("refused", Duration::from_millis(1), false),
            ("best", Duration::from_millis(100), true),
            ("later", Duration::from_millis(1), true),
        ];
        let won = first_success(items, NEXT_ATTEMPT_AFTER, |(n, d, ok)| settles(n, d, ok), |e| failures.push(e), drop).await;
        // "best" started at 1 ms and won at 101 ms, before "later" started.
        assert_eq!(won, Some("best"));
        assert_eq!(start.elapsed(), Duration::from_millis(101));
        assert_eq!(failures, ["refused"]);
    }

    #[tokio::test(start_paused = true)]
    async fn every_failure_is_heard_and_none_wins() {
        let mut failures = Vec::new();
        let items = vec![("a", Duration::from_millis(300), false), ("b", Duration::from_millis(1), false)];
        let won = first_success(items, NEXT_ATTEMPT_AFTER, |(n, d, ok)| settles(n, d, ok), |e| failures.push(e), drop).await;
        assert_eq!(won, None);
        assert_eq!(failures, ["b", "a"]);
        let mut heard = Vec::new();
        let one = vec![("alone", Duration::from_millis(1), false)];
        assert_eq!(first_success(one, NEXT_ATTEMPT_AFTER, |(n, d, ok)| settles(n, d, ok), |e| heard.push(e), drop).await, None);
        assert_eq!(heard, ["alone"]);
        let none: Vec<(&str, Duration, bool)> = Vec::new();
        assert_eq!(first_success(none, NEXT_ATTEMPT_AFTER, |(n, d, ok)| settles(n, d, ok), |_| {}, drop).await, None);
    }

    /// Two that succeed in the same instant: one wins, the other is handed
    /// to `surplus` (it was dropped unseen, and a client's session behind
    /// it stayed open on its node).
    #[tokio::test(start_paused = true)]
    async fn a_tie_hands_the_other_success_to_surplus() {
        let items = vec![("slow", Duration::from_millis(300), true), ("quick", Duration::from_millis(50), true)];
        let mut extra = Vec::new();
        let won = first_success(items, NEXT_ATTEMPT_AFTER, |(n, d, ok)| settles(n, d, ok), |_| {}, |e| extra.push(e)).await;
        let mut both = vec![won.unwrap(), extra[0]];
        both.sort_unstable();
        assert_eq!((extra.len(), both), (1, vec!["quick", "slow"]));
    }
}
