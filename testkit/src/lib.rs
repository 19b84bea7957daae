//! `testkit` is what raftgate's integration tests share: a free loopback port, waiting on
//! an observable condition instead of sleeping for a fixed time, and the path of a binary
//! cargo built beside the test.
//!
//! It is a dev-dependency only and must never be used by the shipped crates.

pub mod fuzz;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(50);

/// A loopback port free right now, for a process that must keep its addresses across
/// restarts (otherwise bind port 0 and read the address back).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().expect("local addr").port()
}

/// Polls `check` until it returns `Some`, and returns that; panics naming `what` after
/// `limit`. For tests that are not async.
pub fn eventually<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// Polls the async `check` until it returns `Some`, and returns that; panics naming `what`
/// after `limit`.
pub async fn eventually_async<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Waits (in an async test) until `holds` is true; panics naming `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut holds: impl FnMut() -> bool) {
    eventually_async(what, limit, || std::future::ready(holds().then_some(()))).await
}

/// The path of binary `name` of this workspace, built by cargo beside the test binary
/// (`target/<profile>/<name>`); panics with what to run when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // Test binaries live in `target/<profile>/deps/`.
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `make test` (it builds every binary first)", path.display());
    path
}
