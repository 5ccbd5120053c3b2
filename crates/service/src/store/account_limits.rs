//! What the stream stores count for each account ([`AccountLimits`]) and the
//! per-process request-rate windows of a store not shared between replicas. The
//! stores keep these counts in the same step as the open or append they bound;
//! [`crate::quota`] explains where every limit is kept and holds the checks made
//! by the routes.

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
    /// Requests to `/stream` in one second: 429 above it.
    pub max_requests_per_sec: u64,
    /// Requests to `/stream` served at once on one replica; more wait for a slot.
    pub max_in_flight: u32,
}

impl Default for AccountLimits {
    fn default() -> Self {
        AccountLimits {
            max_streams: 10_000,
            max_bytes: 1 << 30,
            max_tails: 1_000,
            max_requests_per_sec: 10_000,
            max_in_flight: 32,
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
}
