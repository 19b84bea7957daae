//! Milliseconds on a monotonic clock, as plain integers that fit in atomics.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the first call in this process; never goes backwards.
pub fn now_ms() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    // Start at 1 s so that 0 can mean "never".
    1_000 + epoch.elapsed().as_millis() as u64
}

/// Nanoseconds on the same clock, for rate limiting.
pub fn now_ns() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    1_000_000_000 + epoch.elapsed().as_nanos() as u64
}
