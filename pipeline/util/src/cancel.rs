//! Waiting that ends on cancellation: one primitive, `CancellationToken`, for every stop.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Sleeps for `d`, or less if `cancel` fires. Returns false when cancelled.
pub async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Runs `f` to completion unless `cancel` fires first (then `None`: `f` is dropped). A future
/// that is ready when polled still completes.
pub async fn until_cancelled<F: Future>(cancel: &CancellationToken, f: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        out = f => Some(out),
        _ = cancel.cancelled() => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sleeps_end_on_cancel() {
        let cancel = CancellationToken::new();
        assert!(sleep_or_cancel(Duration::from_millis(20), &cancel).await);
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            c.cancel();
        });
        let t0 = tokio::time::Instant::now();
        assert!(!sleep_or_cancel(Duration::from_secs(30), &cancel).await);
        assert_eq!(
            t0.elapsed(),
            Duration::from_millis(100),
            "ended when cancelled, not at 30 s"
        );
        assert_eq!(until_cancelled(&cancel, std::future::pending::<()>()).await, None);
        assert_eq!(until_cancelled(&cancel, async { 1 }).await, Some(1));
    }
}
