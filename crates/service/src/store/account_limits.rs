//! What the stream stores count for each account ([`AccountLimits`]), the
//! per-process request-rate windows of a store not shared between replicas, and the
//! pace of new streams ([`NewStreamPace`], the same rule `scripts/open.lua` keeps in
//! Redis). The stores keep these counts in the same step as the open or append they
//! bound;
//! [`crate::quota`] explains where every limit is kept and holds the checks made
//! by the routes.

use crate::store::StoreError;
use runlog_protocol::AccountId;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// What one account may hold and ask. The defaults sit far above a normal CI
/// account (hundreds of parallel steps, each a stream written every ~100 ms and
/// watched by a few viewers) and far below what exhausts the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountLimits {
    /// Streams held at once (open, or closed and not yet removed): 429 above it.
    pub max_streams: u64,
    /// Bytes of line JSON held by all the account's streams: 413 above it.
    pub max_bytes: u64,
    /// Tails (SSE readers) open at once on one replica: 429 above it.
    pub max_tails: u64,
    /// Requests to `/stream` and archive uploads in one second: 429 above it.
    pub max_requests_per_sec: u64,
    /// Requests to `/stream` and archive uploads served at once on one replica; more
    /// wait for a slot.
    pub max_in_flight: u32,
    /// New streams (an open of a key the account does not hold, by `POST /stream`
    /// or by an append that opens its stream) a second, sustained: 429 above it.
    /// Far below `max_requests_per_sec`, because a CI account opens a stream per
    /// step, not per line; see [`NewStreamPace`].
    pub max_new_streams_per_sec: u64,
    /// New streams an account that has opened none for a while may open at once
    /// before the pace applies (the burst of a pipeline fanning out).
    pub new_streams_burst: u64,
    /// Longest an open past the burst waits for its turn before it is refused.
    pub new_streams_max_wait: std::time::Duration,
}

impl Default for AccountLimits {
    fn default() -> Self {
        AccountLimits {
            max_streams: 10_000,
            max_bytes: 1 << 30,
            max_tails: 1_000,
            max_requests_per_sec: 10_000,
            max_in_flight: 32,
            // A busy CI account runs hundreds of steps at once, each opening one
            // stream when it starts and holding it for seconds to hours: 1 000
            // parallel steps of 5 s each are 200 new streams a second. 300 a second
            // is above that; a fan-out of 300 steps starting in the same instant
            // opens at once, one of 1 000 waits up to 2.3 s for its last opens.
            // A flood gets 300 opens at full speed, then 300 a second: the 10 000
            // at full speed the request rate allows took half a second of the
            // service and tripled other accounts' p99 (`bench/RESULTS.md`).
            max_new_streams_per_sec: 300,
            new_streams_burst: 300,
            // Well below the 15 s lite-engine gives a `PUT` (which may open its
            // stream); an account's opens wait only while it has requests in flight
            // to spare (`max_in_flight`), so on one replica this is reached only
            // when the pace is far lower than the default.
            new_streams_max_wait: std::time::Duration::from_secs(5),
        }
    }
}

/// Requests per account in the current one-second window, in this process: the
/// request rate of a store that is not shared between replicas (the memory store).
#[derive(Debug, Default)]
pub struct RateWindows {
    windows: Mutex<HashMap<AccountId, (u64, u64)>>,
}

/// Accounts remembered before windows of past seconds are dropped.
const RATE_WINDOWS_KEPT: usize = 10_000;

impl RateWindows {
    /// Counts one request of `account` in second `now` (since the epoch) and returns
    /// the count of that second so far.
    pub fn count(&self, account: &AccountId, now: u64) -> u64 {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if windows.len() >= RATE_WINDOWS_KEPT && !windows.contains_key(account) {
            windows.retain(|_, (second, _)| *second == now);
        }
        let (second, count) = windows.entry(account.clone()).or_insert((now, 0));
        if *second != now {
            *second = now;
            *count = 0;
        }
        *count += 1;
        *count
    }
}

/// Pace of each account's new streams in this process (the memory store): a token
/// bucket of `new_streams_burst` tokens refilled at `max_new_streams_per_sec`, kept as
/// one time per account (GCRA, the generic cell rate algorithm): when its bucket would
/// be full again. The Redis store keeps the same time in Redis (`scripts/open.lua`),
/// so the pace holds across replicas.
///
/// A new stream past the burst is not refused at once: it reserves the next free
/// token and its open waits for it, up to `new_streams_max_wait` (refused with 429
/// past that, reserving nothing). So a flood of opens is served at the pace, spread
/// evenly, rather than refused and back in step a second later; and an append that
/// opens its stream (lite-engine's, which does not retry a failed `PUT`) keeps its
/// lines through a burst larger than the account's.
#[derive(Debug, Default)]
pub struct NewStreamPace {
    full_at: Mutex<HashMap<AccountId, u64>>,
}

/// Accounts remembered before those whose buckets are full again are dropped.
const PACES_KEPT: usize = 10_000;

/// Microseconds between two new streams at `per_sec` (0: unlimited in practice);
/// `None` for a pace of 0, which allows no new stream.
pub fn pace_interval_us(per_sec: u64) -> Option<u64> {
    1_000_000u64.checked_div(per_sec)
}

/// What a new stream refused by a pace of 0 is told to wait: a second, as every
/// `Retry-After`.
pub const PACE_CLOSED_WAIT_US: u64 = 1_000_000;

/// One new stream at `now_us` against the bucket full again at `full_at_us`: `Ok`
/// with the bucket's new full time and how long the open waits for its token (0
/// within the burst), or `Err` with that wait when it is over `max_wait_us` (nothing
/// reserved). `interval_us` 0 never waits; a burst of 0 is taken as 1.
pub fn pace_take(
    full_at_us: u64,
    now_us: u64,
    interval_us: u64,
    burst: u64,
    max_wait_us: u64,
) -> Result<(u64, u64), u64> {
    let full_at = full_at_us.max(now_us).saturating_add(interval_us);
    let room = interval_us.saturating_mul(burst.max(1));
    let wait = (full_at - now_us).saturating_sub(room);
    if wait > max_wait_us {
        Err(wait)
    } else {
        Ok((full_at, wait))
    }
}

impl NewStreamPace {
    /// Takes one new stream of `account` at `now_us` (since the epoch): how many
    /// microseconds its open waits for its token.
    ///
    /// # Errors
    /// The wait, when it is longer than the account's `new_streams_max_wait`.
    pub fn take(
        &self,
        account: &AccountId,
        now_us: u64,
        limits: &AccountLimits,
    ) -> Result<u64, u64> {
        let interval =
            pace_interval_us(limits.max_new_streams_per_sec).ok_or(PACE_CLOSED_WAIT_US)?;
        let mut paces = self.full_at.lock().unwrap_or_else(PoisonError::into_inner);
        if paces.len() >= PACES_KEPT && !paces.contains_key(account) {
            paces.retain(|_, full_at| *full_at > now_us);
        }
        let full_at = paces.get(account).copied().unwrap_or(0);
        let (next, wait) = pace_take(
            full_at,
            now_us,
            interval,
            limits.new_streams_burst,
            max_wait_us(limits),
        )?;
        paces.insert(account.clone(), next);
        Ok(wait)
    }
}

/// `new_streams_max_wait` in microseconds.
pub fn max_wait_us(limits: &AccountLimits) -> u64 {
    u64::try_from(limits.new_streams_max_wait.as_micros()).unwrap_or(u64::MAX)
}

/// The refusal of a new stream when `account` holds `held` streams, its limit (429).
pub fn streams_held_refused(account: &AccountId, held: u64) -> StoreError {
    StoreError::TooMany(format!(
        "account {account} holds {held} streams, its limit: close and remove some first"
    ))
}

/// The refusal of a new stream over its account's pace, `wait_us` before one is
/// allowed (429 with `Retry-After`).
pub fn pace_refused(account: &AccountId, limits: &AccountLimits, wait_us: u64) -> StoreError {
    StoreError::TooMany(format!(
        "account {account} opens new streams faster than its limit ({} a second, {} at once, waiting at most {} ms for a turn): retry in {} ms",
        limits.max_new_streams_per_sec,
        limits.new_streams_burst,
        limits.new_streams_max_wait.as_millis(),
        wait_us.div_ceil(1_000)
    ))
}

/// Microseconds since the Unix epoch: the clock of [`NewStreamPace`].
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The current second since the Unix epoch: the window requests are counted in.
pub fn current_second() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_windows_count_per_account_and_second() {
        let windows = RateWindows::default();
        let a = AccountId::new("a").unwrap_or_else(|e| panic!("{e}"));
        let b = AccountId::new("b").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(windows.count(&a, 10), 1);
        assert_eq!(windows.count(&a, 10), 2);
        assert_eq!(windows.count(&b, 10), 1);
        assert_eq!(windows.count(&a, 11), 1);
    }

    #[test]
    fn new_streams_come_in_a_burst_then_wait_their_turn() {
        let pace = NewStreamPace::default();
        let limits = AccountLimits {
            max_new_streams_per_sec: 100,
            new_streams_burst: 5,
            new_streams_max_wait: std::time::Duration::from_millis(25),
            ..AccountLimits::default()
        };
        let a = AccountId::new("a").unwrap_or_else(|e| panic!("{e}"));
        let b = AccountId::new("b").unwrap_or_else(|e| panic!("{e}"));
        let t = 1_000_000_000;
        for _ in 0..5 {
            assert_eq!(pace.take(&a, t, &limits), Ok(0));
        }
        // Then one every 10 ms (100 a second), each waiting its turn, up to 25 ms.
        assert_eq!(pace.take(&a, t, &limits), Ok(10_000));
        assert_eq!(pace.take(&a, t, &limits), Ok(20_000));
        // Past the longest wait: refused, nothing reserved.
        assert_eq!(pace.take(&a, t, &limits), Err(30_000));
        assert_eq!(pace.take(&a, t, &limits), Err(30_000));
        // Another account has a bucket of its own.
        assert_eq!(pace.take(&b, t, &limits), Ok(0));
        // A second later the bucket is full again: five more at once.
        for _ in 0..5 {
            assert_eq!(pace.take(&a, t + 2_000_000, &limits), Ok(0));
        }
        assert_eq!(pace.take(&a, t + 2_000_000, &limits), Ok(10_000));
    }

    #[test]
    fn an_unlimited_pace_never_waits_and_a_closed_one_opens_nothing() {
        assert_eq!(pace_interval_us(u64::MAX), Some(0));
        for _ in 0..3 {
            assert_eq!(pace_take(5, 5, 0, 1, 0), Ok((5, 0)));
        }
        let closed = AccountLimits {
            max_new_streams_per_sec: 0,
            ..AccountLimits::default()
        };
        let a = AccountId::new("a").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            NewStreamPace::default().take(&a, 1, &closed),
            Err(PACE_CLOSED_WAIT_US)
        );
    }
}
