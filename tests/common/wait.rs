//! Waiting for an event instead of sleeping for it: poll until a condition
//! holds, and fail the test when it has not held by a deadline. A fixed
//! sleep is either too long (a slow suite) or too short (a flaky one).
//!
//! The simulator's tests use this same file (`#[path]`).
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(20);

/// Checks `check` until it answers `Some`, and returns what it answered.
/// Panics, naming `what`, if it still answers `None` after `within`.
/// (Closures borrow what they check with `|| async move { … }`.)
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("still waiting for {what} after {within:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Checks `condition` until it is true; panics, naming `what`, if it is
/// still false after `within`.
pub async fn until<F, Fut>(what: &str, within: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(what, within, || {
        let checked = condition();
        async move { checked.await.then_some(()) }
    })
    .await
}
