//! [`BodyBudget`]: the bytes of large request bodies held while they are read, bounded
//! for the whole service rather than per request.
//!
//! `PUT /stream` takes bodies of up to 128 MiB by default (lite-engine flushes a
//! second of output in one request), and a body is buffered whole before its lines
//! are stored. Each request was bounded on its own, so twenty writers flushing at
//! once could make the service hold 2.5 GiB it counts nowhere. Every buffered body
//! now reserves its bytes here first — the whole `Content-Length` up front (so two
//! half-read bodies can never wait on each other), or frame by frame for a chunked
//! body — and gives them back once the body is parsed and the store counts it.
//! A body that finds no room waits up to the configured `body_budget_wait`; past that it is
//! answered 429 with `Retry-After`, which writers honour.

use crate::error::ApiError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Granularity of the reservations: permits are KiB so that one `u32` request of
/// the semaphore covers any body a route accepts (the ceiling is 4 GiB).
const UNIT: usize = 1024;

/// How many bytes of request bodies may be in memory while being read, service-wide.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    capacity: usize,
    wait: Duration,
}

/// Bytes of the budget held by one body; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    /// A budget of `capacity` bytes (rounded up to whole KiB); a body waits up to
    /// `wait` for room.
    pub fn new(capacity: usize, wait: Duration) -> Self {
        let units = capacity.div_ceil(UNIT).clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget {
            units: Arc::new(Semaphore::new(units)),
            capacity: units * UNIT,
            wait,
        }
    }

    /// Bytes reserved by bodies being read now.
    pub fn in_use(&self) -> usize {
        self.capacity - self.units.available_permits() * UNIT
    }

    /// An empty reservation, to be grown with [`grow`](Self::grow).
    pub fn empty(&self) -> Reservation {
        Reservation { permit: None }
    }

    /// Reserves `bytes` more for `held`, waiting up to the budget's wait; 429 when
    /// no room frees up in time, 413 when `bytes` could never fit.
    pub async fn grow(&self, held: &mut Reservation, bytes: usize) -> Result<(), ApiError> {
        if bytes == 0 {
            return Ok(());
        }
        let want = bytes.div_ceil(UNIT);
        let already = held.permit.as_ref().map_or(0, |p| p.num_permits());
        let total_units = self.capacity / UNIT;
        let fits = u32::try_from(want)
            .ok()
            .filter(|_| already.saturating_add(want) <= total_units);
        let Some(want) = fits else {
            return Err(ApiError::TooLarge(format!(
                "request body is larger than the {} bytes this service reads at once",
                self.capacity
            )));
        };
        let acquired =
            tokio::time::timeout(self.wait, Arc::clone(&self.units).acquire_many_owned(want)).await;
        match acquired {
            Ok(Ok(permit)) => {
                match held.permit.as_mut() {
                    Some(p) => p.merge(permit),
                    None => held.permit = Some(permit),
                }
                Ok(())
            }
            // The semaphore is never closed; treat it as busy rather than panic.
            Ok(Err(_)) | Err(_) => Err(ApiError::Busy(format!(
                "the service is reading as many request bodies as it holds at once ({} bytes); retry",
                self.capacity
            ))),
        }
    }
}
