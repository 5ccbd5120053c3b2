//! Retrying one request: exponential backoff with full jitter, until a deadline.
//!
//! The exponential sequence comes from `backon`; the jitter is "full" (each delay is
//! uniform in `[0, d]`), which spreads many writers that failed at the same moment
//! better than backon's additive jitter.

use crate::client::ClientError;
use backon::BackoffBuilder;
use rand::Rng;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// What a retried call ended with.
#[derive(Debug)]
pub enum Outcome<T> {
    /// It succeeded.
    Done(T),
    /// It failed with an error a retry cannot fix.
    Fatal(ClientError),
    /// The deadline passed; the last error is given.
    Deadline(Option<ClientError>),
}

/// Retries `call` while it fails with retryable errors, until `deadline` (which may
/// be set or moved while waiting: `None` = no deadline yet). `on_retry` is called
/// before each retry.
pub async fn retry<T, F, Fut>(
    mut call: F,
    max_delay: Duration,
    deadline: &mut watch::Receiver<Option<Instant>>,
    mut on_retry: impl FnMut(&ClientError),
) -> Outcome<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(max_delay)
        .with_factor(2.0)
        .without_max_times()
        .build();
    loop {
        let attempt = call();
        let res = match until_deadline(deadline, attempt).await {
            Some(r) => r,
            None => return Outcome::Deadline(None),
        };
        let err = match res {
            Ok(v) => return Outcome::Done(v),
            Err(e) if !e.is_retryable() => return Outcome::Fatal(e),
            Err(e) => e,
        };
        on_retry(&err);
        let d = delays.next().unwrap_or(max_delay);
        let d = d.mul_f64(rand::rng().random_range(0.0..=1.0));
        if until_deadline(deadline, tokio::time::sleep(d))
            .await
            .is_none()
        {
            return Outcome::Deadline(Some(err));
        }
    }
}

/// Runs `fut` unless the deadline in `deadline` passes first (`None`).
pub async fn until_deadline<T>(
    deadline: &mut watch::Receiver<Option<Instant>>,
    fut: impl Future<Output = T>,
) -> Option<T> {
    tokio::pin!(fut);
    loop {
        let current = *deadline.borrow_and_update();
        let expired = async {
            match current {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            v = &mut fut => return Some(v),
            () = expired => return None,
            changed = deadline.changed() => {
                if changed.is_err() && current.is_none() {
                    // No deadline can be set any more: just finish.
                    return Some(fut.await);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn retryable_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let (_tx, mut rx) = watch::channel(None);
        let mut retries = 0;
        let out = retry(
            || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(ClientError::Transport("reset".into()))
                } else {
                    Ok(7)
                }
            },
            Duration::from_secs(1),
            &mut rx,
            |_| retries += 1,
        )
        .await;
        assert!(matches!(out, Outcome::Done(7)));
        assert_eq!(retries, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn fatal_errors_stop_at_once() {
        let (_tx, mut rx) = watch::channel(None);
        let out: Outcome<()> = retry(
            || async {
                Err(ClientError::Status {
                    status: 403,
                    message: "no".into(),
                })
            },
            Duration::from_secs(1),
            &mut rx,
            |_| panic!("a 403 must not be retried"),
        )
        .await;
        assert!(matches!(out, Outcome::Fatal(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_set_while_retrying_ends_the_retries() {
        let (tx, mut rx) = watch::channel(None);
        let task = tokio::spawn(async move {
            retry::<(), _, _>(
                || async { Err(ClientError::Transport("down".into())) },
                Duration::from_millis(100),
                &mut rx,
                |_| {},
            )
            .await
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!task.is_finished(), "without a deadline it keeps retrying");
        tx.send_replace(Some(Instant::now() + Duration::from_secs(1)));
        let out = task.await.expect("task");
        assert!(matches!(out, Outcome::Deadline(_)));
    }
}
