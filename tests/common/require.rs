//! What a test needs from outside the build (a PostgreSQL server, anvil, a
//! browser, Python's `ocpp`) and did not find. Every such test asks here.
//!
//! Under CI (`CI` set and not empty, as `.ci/run` and CI services set it) a
//! missing part **fails** the test, naming it: a suite that passes by
//! skipping has proven nothing. Elsewhere the test prints one `SKIPPED` line
//! (past the harness's capture, so it shows in every run) and returns early,
//! so a developer without, say, PostgreSQL can still run the rest.
//!
//! The simulator's tests use this same file (`#[path]`).
#![allow(dead_code)]

use std::io::Write as _;

/// Whether this run is CI, where no test may skip.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// `what` is missing; `how` says how to provide it. Under CI this panics
/// (the test fails naming what is missing); otherwise it prints
/// `SKIPPED (what): test: how` and returns, and the caller returns early.
#[track_caller]
pub fn missing(what: &str, how: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    if in_ci() {
        panic!("{test}: {what} is missing, and CI is set, so this test may not skip: {how}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED ({what}): {test}: {how}");
}

/// The PostgreSQL server tests may create databases on, from
/// `CSMS_TEST_POSTGRES_URL`; `None` (after [`missing`]) when it is unset.
#[track_caller]
pub fn postgres_url() -> Option<String> {
    let url = std::env::var("CSMS_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        missing(
            "PostgreSQL",
            "CSMS_TEST_POSTGRES_URL is unset (e.g. postgres://postgres@127.0.0.1:5432/postgres)",
        );
    }
    url
}
