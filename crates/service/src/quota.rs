//! Fairness between accounts: what one account may hold and ask of the service, so
//! that an account over its share is refused (429/413) while every other account
//! goes on unaffected.
//!
//! Each limit is kept where the thing it bounds lives:
//! - **streams held and bytes held** by the stream store, in the same atomic step
//!   that opens or appends (`MemoryStreamStore`, and on Redis the `open` and `append`
//!   scripts against the account's keys): every replica on one Redis sees one count;
//! - **pace of new streams** by the stream store, in its `open` (a new key only):
//!   `NewStreamPace` in memory, the `pace` key in `open.lua` on Redis; an open past
//!   the account's burst waits its turn there, up to `new_streams_max_wait`;
//! - **request rate** by the stream store too
//!   ([`crate::store::StreamStore::count_request`]): a
//!   one-second window per account, a Redis counter shared by the replicas (one
//!   more pipelined round trip to Redis per request, `INCR` and `PEXPIRE`);
//! - **open tails** here, per replica ([`Quotas::open_tail`]): a tail is one
//!   connection to one replica and its buffers there, so it is that replica's
//!   resource; counting tails in Redis would need a lease per tail (a replica that
//!   dies holds its count forever otherwise), which buys nothing for the replica's
//!   protection;
//! - **requests in flight** here, per replica ([`Quotas::admit`]): an account's
//!   requests beyond its slots wait, in order, without using the CPU, so a client
//!   that floods from many connections is served at the pace of a few of them and
//!   other accounts' requests do not queue behind all of its own. Also the
//!   replica's own resource (its cores), so counted in the process.
//!
//! The service-wide limits (`MemoryLimits`' totals, the connection cap) stay as the
//! last line behind these.

use crate::store::StreamStore;
pub use crate::store::account_limits::AccountLimits;
use runlog_edge::HttpError as ApiError;
use runlog_protocol::AccountId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The per-account checks made by the routes: requests in flight, request rate and
/// open tails.
#[derive(Debug)]
pub struct Quotas {
    limits: AccountLimits,
    tails: Arc<Mutex<HashMap<AccountId, u64>>>,
    slots: Mutex<HashMap<AccountId, Arc<Semaphore>>>,
}

/// Accounts whose request slots are remembered before idle ones are forgotten.
const SLOTS_KEPT: usize = 10_000;

/// One request of an account being served: holds one of its slots until dropped
/// (when the handler returns).
#[derive(Debug)]
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
}

impl Quotas {
    /// Checks with `limits`.
    pub fn new(limits: AccountLimits) -> Self {
        Quotas {
            limits,
            tails: Arc::default(),
            slots: Mutex::default(),
        }
    }

    /// Slots of each account: `max_in_flight`, at least one.
    fn slots_per_account(&self) -> usize {
        usize::try_from(self.limits.max_in_flight)
            .unwrap_or(Semaphore::MAX_PERMITS)
            .clamp(1, Semaphore::MAX_PERMITS)
    }

    /// The request slots of `account`.
    fn slots(&self, account: &AccountId) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.len() >= SLOTS_KEPT && !slots.contains_key(account) {
            // Forget accounts with no request waiting or served: nobody else holds
            // their semaphore.
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        let max = self.slots_per_account();
        slots
            .entry(account.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(max)))
            .clone()
    }

    /// How many of `account`'s requests are being served now.
    pub fn in_flight(&self, account: &AccountId) -> usize {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let max = self.slots_per_account();
        slots
            .get(account)
            .map_or(0, |s| max.saturating_sub(s.available_permits()))
    }

    /// Waits for one of `account`'s request slots, then counts the request; 429
    /// when the account is over its rate this second. Hold the answer while the
    /// request is served.
    ///
    /// # Errors
    /// [`ApiError::Busy`] over the rate; the store's error when it cannot
    /// count (a Redis outage is a 503 like every other call).
    pub async fn admit(
        &self,
        streams: &dyn StreamStore,
        account: &AccountId,
    ) -> Result<Admitted, ApiError> {
        let slot = self.slot(account).await?;
        let count = streams.count_request(account).await?;
        self.within_rate(account, count)?;
        Ok(Admitted { _slot: slot })
    }

    /// [`Quotas::admit`] for a request that does not need the stream store (an
    /// archive upload): when the store cannot count it (Redis is down), it is let
    /// through uncounted rather than refused, so that archives are still kept
    /// while the live side is out.
    ///
    /// # Errors
    /// [`ApiError::Busy`] over the rate.
    pub async fn admit_without_the_store(
        &self,
        streams: &dyn StreamStore,
        account: &AccountId,
    ) -> Result<Admitted, ApiError> {
        let slot = self.slot(account).await?;
        match streams.count_request(account).await {
            Ok(count) => self.within_rate(account, count)?,
            Err(e) => {
                tracing::debug!(account = %account, error = %e, "request not counted: the stream store cannot count it")
            }
        }
        Ok(Admitted { _slot: slot })
    }

    /// Waits for one of `account`'s request slots.
    async fn slot(&self, account: &AccountId) -> Result<OwnedSemaphorePermit, ApiError> {
        self.slots(account)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Internal("request slots closed".into()))
    }

    /// 429 when `count` requests this second are over `account`'s rate.
    fn within_rate(&self, account: &AccountId, count: u64) -> Result<(), ApiError> {
        if count > self.limits.max_requests_per_sec {
            return Err(ApiError::Busy(format!(
                "account {account} is over its request rate ({} requests a second); retry in a second",
                self.limits.max_requests_per_sec
            )));
        }
        Ok(())
    }

    /// Takes one of `account`'s tails for as long as the permit lives.
    ///
    /// # Errors
    /// [`ApiError::Busy`] when the account has its limit open already.
    pub fn open_tail(&self, account: &AccountId) -> Result<TailPermit, ApiError> {
        let mut tails = self.tails.lock().unwrap_or_else(PoisonError::into_inner);
        let open = tails.entry(account.clone()).or_insert(0);
        if *open >= self.limits.max_tails {
            return Err(ApiError::Busy(format!(
                "account {account} has {} tails open, its limit; close one first",
                self.limits.max_tails
            )));
        }
        *open += 1;
        Ok(TailPermit {
            tails: self.tails.clone(),
            account: account.clone(),
        })
    }
}

/// One open tail of an account; gives its place back when dropped (the viewer went
/// away, the stream ended, the service shuts down).
#[derive(Debug)]
pub struct TailPermit {
    tails: Arc<Mutex<HashMap<AccountId, u64>>>,
    account: AccountId,
}

impl Drop for TailPermit {
    fn drop(&mut self) {
        let mut tails = self.tails.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = tails.get_mut(&self.account) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                tails.remove(&self.account);
            }
        }
    }
}

/// Holds every 429 answer until the next whole second before sending it: the time
/// its `Retry-After: 1` asks for. A client that waits as asked loses nothing; one that
/// floods regardless is paced to a request a second per connection, and a held
/// answer costs a sleeping task, not the CPU every other account shares (refusing
/// at once let a flood of refusals slow other accounts' writes ~20x).
pub async fn hold_refusals(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let resp = next.run(req).await;
    if resp.status() == axum::http::StatusCode::TOO_MANY_REQUESTS {
        let into_second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_millis());
        let wait = 1_000u64.saturating_sub(u64::from(into_second)).max(1);
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_are_counted_per_account_and_given_back() {
        let quotas = Quotas::new(AccountLimits {
            max_tails: 2,
            ..AccountLimits::default()
        });
        let a = AccountId::new("a").unwrap_or_else(|e| panic!("{e}"));
        let b = AccountId::new("b").unwrap_or_else(|e| panic!("{e}"));
        let first = quotas.open_tail(&a);
        let second = quotas.open_tail(&a);
        assert!(first.is_ok() && second.is_ok());
        assert!(matches!(quotas.open_tail(&a), Err(ApiError::Busy(_))));
        // Another account is not affected by a's tails.
        assert!(quotas.open_tail(&b).is_ok());
        drop(first);
        assert!(quotas.open_tail(&a).is_ok());
    }
}
