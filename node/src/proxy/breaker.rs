//! The circuit breaker of one upstream: limits on what is in flight towards it, and the
//! failure-based breaker that stops sending to it for a while after it failed.
//!
//! Every attempt asks for a [`Permit`] before it touches the upstream and reports how it went
//! when it is done. Limits are plain atomics (requests and retries in flight). The
//! failure-based part runs only when the upstream declares failure thresholds:
//!
//! ```text
//! closed ──(consecutive failures, or error rate over the window)──▶ open
//! open ──(openFor elapsed)──▶ half-open: `halfOpenRequests` probes go through
//! half-open ──(every probe succeeded)──▶ closed      half-open ──(a probe failed)──▶ open
//! ```
//!
//! The state lives in the `Upstream`, which a config swap reuses when the upstream's
//! definition did not change, so an open breaker stays open across unrelated changes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use schemas::snapshot::CircuitBreakerSpec;

use super::clock;

/// Why an attempt was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The breaker is open (or half-open with every probe slot taken); retry after this
    /// many milliseconds.
    Open { retry_after_ms: u64 },
    /// A limit is reached: `maxParallelRequests`, `maxParallelRetries` or the retry budget.
    Overloaded(&'static str),
}

/// Where the failure-based breaker stands, for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Closed,
    Open { until_ms: u64 },
    HalfOpen { probes: u32, successes: u32 },
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Closed => "closed",
            Phase::Open { .. } => "open",
            Phase::HalfOpen { .. } => "half-open",
        }
    }

    /// 0 closed, 1 open, 2 half-open: the value of `raftgate_circuit_state`.
    pub fn gauge(&self) -> f64 {
        match self {
            Phase::Closed => 0.0,
            Phase::Open { .. } => 1.0,
            Phase::HalfOpen { .. } => 2.0,
        }
    }
}

#[derive(Debug)]
struct State {
    phase: Phase,
    consecutive: u32,
    window: Window,
}

/// Requests and failures over the error-rate window, in ten buckets that slide with time.
#[derive(Debug)]
struct Window {
    bucket_ms: u64,
    /// (bucket number, requests, failures)
    buckets: [(u64, u32, u32); 10],
}

impl Window {
    fn new(window_ms: u64) -> Self {
        Self { bucket_ms: (window_ms / 10).max(1), buckets: [(u64::MAX, 0, 0); 10] }
    }

    fn record(&mut self, now_ms: u64, failed: bool) {
        let n = now_ms / self.bucket_ms;
        let b = &mut self.buckets[(n % 10) as usize];
        if b.0 != n {
            *b = (n, 0, 0);
        }
        b.1 += 1;
        b.2 += u32::from(failed);
    }

    /// (requests, failures) in the last ten buckets.
    fn totals(&self, now_ms: u64) -> (u64, u64) {
        let n = now_ms / self.bucket_ms;
        self.buckets
            .iter()
            .filter(|b| b.0 != u64::MAX && b.0 + 10 > n)
            .fold((0, 0), |(r, f), b| (r + u64::from(b.1), f + u64::from(b.2)))
    }

    fn clear(&mut self) {
        self.buckets = [(u64::MAX, 0, 0); 10];
    }
}

#[derive(Debug)]
pub struct CircuitBreaker {
    spec: CircuitBreakerSpec,
    /// Set when the upstream declares failure thresholds; otherwise only limits apply.
    state: Option<Mutex<State>>,
    /// Attempts in flight, first tries and retries alike.
    requests: AtomicUsize,
    /// Retries in flight.
    retries: AtomicUsize,
    opened: metrics::Counter,
    overflow: [metrics::Counter; 3],
}

const LIMITS: [&str; 3] = ["maxParallelRequests", "maxParallelRetries", "retryBudget"];

impl CircuitBreaker {
    pub fn new(upstream: &str, spec: &CircuitBreakerSpec) -> Self {
        let failure_based = spec.consecutive_failures.is_some() || spec.error_rate.is_some();
        let window_ms = spec.error_rate.as_ref().map_or(10_000, |e| e.window.as_millis());
        Self {
            spec: spec.clone(),
            state: failure_based.then(|| {
                Mutex::new(State { phase: Phase::Closed, consecutive: 0, window: Window::new(window_ms) })
            }),
            requests: AtomicUsize::new(0),
            retries: AtomicUsize::new(0),
            opened: metrics::counter!("raftgate_circuit_opened_total", "upstream" => upstream.to_string()),
            overflow: LIMITS.map(|limit| {
                metrics::counter!("raftgate_upstream_overflow_total", "upstream" => upstream.to_string(), "limit" => limit)
            }),
        }
    }

    /// Lets one attempt through, or says why not. `retry`: the attempt is a retry, which
    /// also needs room under `maxParallelRetries` or the retry budget.
    pub fn admit(&self, retry: bool, now_ms: u64) -> Result<Permit<'_>, Refusal> {
        let requests = self.requests.load(Ordering::Relaxed);
        if requests >= self.spec.max_parallel_requests as usize {
            self.overflow[0].increment(1);
            return Err(Refusal::Overloaded(LIMITS[0]));
        }
        if retry {
            let retries = self.retries.load(Ordering::Relaxed);
            let (allowed, which) = match &self.spec.retry_budget {
                // A share of the first tries in flight, never below the floor.
                Some(b) => {
                    let first_tries = requests.saturating_sub(retries);
                    ((first_tries * b.percent as usize / 100).max(b.min_concurrency as usize), 2)
                }
                None => (self.spec.max_parallel_retries as usize, 1),
            };
            if retries >= allowed {
                self.overflow[which].increment(1);
                return Err(Refusal::Overloaded(LIMITS[which]));
            }
        }
        let probe = match &self.state {
            None => false,
            Some(state) => {
                let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                match s.phase {
                    Phase::Closed => false,
                    Phase::Open { until_ms } if now_ms < until_ms => {
                        return Err(Refusal::Open { retry_after_ms: until_ms - now_ms });
                    }
                    Phase::Open { .. } => {
                        s.phase = Phase::HalfOpen { probes: 1, successes: 0 };
                        tracing::info!(state = "half-open", "circuit breaker lets probes through");
                        true
                    }
                    Phase::HalfOpen { probes, successes } => {
                        if probes + successes >= self.spec.half_open_requests {
                            // Every probe slot is taken: wait for their verdict.
                            return Err(Refusal::Open { retry_after_ms: 1_000 });
                        }
                        s.phase = Phase::HalfOpen { probes: probes + 1, successes };
                        true
                    }
                }
            }
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        if retry {
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Permit { breaker: self, retry, probe, done: false })
    }

    /// The failure-based breaker's phase; `None` when the upstream has no thresholds.
    pub fn phase(&self, now_ms: u64) -> Option<Phase> {
        let s = self.state.as_ref()?.lock().unwrap_or_else(|e| e.into_inner());
        Some(match s.phase {
            // Due for half-open: the next request will probe.
            Phase::Open { until_ms } if now_ms >= until_ms => Phase::HalfOpen { probes: 0, successes: 0 },
            p => p,
        })
    }

    /// Whether the breaker looks at the time (only its failure-based part does).
    pub fn uses_clock(&self) -> bool {
        self.state.is_some()
    }

    /// (attempts, retries) in flight.
    pub fn in_flight(&self) -> (usize, usize) {
        (self.requests.load(Ordering::Relaxed), self.retries.load(Ordering::Relaxed))
    }

    fn record(&self, probe: bool, failed: bool, now_ms: u64) {
        let Some(state) = &self.state else { return };
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.window.record(now_ms, failed);
        s.consecutive = if failed { s.consecutive + 1 } else { 0 };
        match s.phase {
            Phase::HalfOpen { probes, successes } if probe => {
                if failed {
                    self.open(&mut s, now_ms, "a half-open probe failed");
                } else if successes + 1 >= self.spec.half_open_requests {
                    s.phase = Phase::Closed;
                    s.consecutive = 0;
                    s.window.clear();
                    tracing::info!(state = "closed", "circuit breaker closed: the probes succeeded");
                } else {
                    s.phase = Phase::HalfOpen { probes: probes.saturating_sub(1), successes: successes + 1 };
                }
            }
            Phase::Closed if failed => {
                let by_count = self.spec.consecutive_failures.is_some_and(|n| s.consecutive >= n);
                let by_rate = self.spec.error_rate.as_ref().is_some_and(|e| {
                    let (requests, failures) = s.window.totals(now_ms);
                    requests >= u64::from(e.minimum_requests) && failures * 100 >= u64::from(e.percent) * requests
                });
                if by_count {
                    self.open(&mut s, now_ms, "consecutive failures");
                } else if by_rate {
                    self.open(&mut s, now_ms, "error rate over the window");
                }
            }
            // Attempts admitted before the breaker opened report late; they change nothing.
            _ => {}
        }
    }

    fn open(&self, s: &mut State, now_ms: u64, why: &str) {
        s.phase = Phase::Open { until_ms: now_ms + self.spec.open_for.as_millis() };
        s.consecutive = 0;
        s.window.clear();
        self.opened.increment(1);
        tracing::warn!(state = "open", reason = why, open_for = %self.spec.open_for, "circuit breaker opened");
    }

    /// A probe that ended without a verdict (the client went away) frees its slot.
    fn abandon(&self, probe: bool) {
        let Some(state) = &self.state else { return };
        if !probe {
            return;
        }
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        if let Phase::HalfOpen { probes, successes } = s.phase {
            s.phase = Phase::HalfOpen { probes: probes.saturating_sub(1), successes };
        }
    }
}

/// One attempt let through. Report its outcome with [`Permit::success`] or
/// [`Permit::failure`]; dropped without one, it only frees its place.
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    retry: bool,
    probe: bool,
    done: bool,
}

impl Permit<'_> {
    pub fn success(mut self) {
        self.done = true;
        if self.breaker.state.is_some() {
            self.breaker.record(self.probe, false, clock::now_ms());
        }
    }

    pub fn failure(mut self) {
        self.done = true;
        if self.breaker.state.is_some() {
            self.breaker.record(self.probe, true, clock::now_ms());
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.breaker.requests.fetch_sub(1, Ordering::Relaxed);
        if self.retry {
            self.breaker.retries.fetch_sub(1, Ordering::Relaxed);
        }
        if !self.done {
            self.breaker.abandon(self.probe);
        }
    }
}

#[cfg(test)]
mod tests {
    use schemas::snapshot::{ErrorRateSpec, RetryBudgetSpec};
    use schemas::Duration;

    use super::*;

    fn spec() -> CircuitBreakerSpec {
        CircuitBreakerSpec {
            consecutive_failures: Some(3),
            error_rate: None,
            open_for: Duration::from_millis(1_000),
            half_open_requests: 2,
            max_connections: 1024,
            max_pending_requests: 1024,
            max_parallel_requests: 1024,
            max_parallel_retries: 3,
            retry_budget: None,
        }
    }

    fn fail(b: &CircuitBreaker, now: u64) {
        let p = b.admit(false, now).unwrap();
        p.done_at(true, now);
    }

    impl Permit<'_> {
        /// Reports at a given time (the public methods read the clock).
        fn done_at(mut self, failed: bool, now: u64) {
            self.done = true;
            self.breaker.record(self.probe, failed, now);
        }
    }

    #[test]
    fn opens_after_consecutive_failures_then_closes_through_half_open() {
        let b = CircuitBreaker::new("u", &spec());
        fail(&b, 0);
        fail(&b, 1);
        b.admit(false, 2).unwrap().done_at(false, 2); // a success resets the count
        fail(&b, 3);
        fail(&b, 4);
        assert_eq!(b.phase(4), Some(Phase::Closed));
        fail(&b, 5);
        assert_eq!(b.admit(false, 6).unwrap_err(), Refusal::Open { retry_after_ms: 999 });
        // After openFor: two probes, no third.
        let p1 = b.admit(false, 1_005).unwrap();
        let p2 = b.admit(false, 1_005).unwrap();
        assert!(matches!(b.admit(false, 1_005), Err(Refusal::Open { .. })));
        p1.done_at(false, 1_006);
        assert!(matches!(b.phase(1_006), Some(Phase::HalfOpen { .. })));
        p2.done_at(false, 1_007);
        assert_eq!(b.phase(1_007), Some(Phase::Closed));
    }

    #[test]
    fn a_failed_probe_opens_again_and_an_abandoned_probe_frees_its_slot() {
        let b = CircuitBreaker::new("u", &CircuitBreakerSpec { half_open_requests: 1, ..spec() });
        (0..3).for_each(|i| fail(&b, i));
        drop(b.admit(false, 2_000).unwrap()); // client went away: no verdict
        let p = b.admit(false, 2_001).unwrap();
        p.done_at(true, 2_002);
        assert_eq!(b.phase(2_003), Some(Phase::Open { until_ms: 3_002 }));
    }

    #[test]
    fn opens_on_error_rate_only_with_enough_requests() {
        let s = CircuitBreakerSpec {
            consecutive_failures: None,
            error_rate: Some(ErrorRateSpec {
                percent: 50,
                window: Duration::from_millis(10_000),
                minimum_requests: 10,
            }),
            ..spec()
        };
        let b = CircuitBreaker::new("u", &s);
        for i in 0..4 {
            b.admit(false, i).unwrap().done_at(false, i);
            fail(&b, i);
        }
        assert_eq!(b.phase(10), Some(Phase::Closed), "8 requests are below the minimum");
        b.admit(false, 11).unwrap().done_at(false, 11);
        fail(&b, 12);
        assert!(matches!(b.phase(12), Some(Phase::Open { .. })), "5 of 10 failed");
        // Old failures leave the window.
        let b = CircuitBreaker::new("u", &s);
        (0..9).for_each(|i| fail(&b, i));
        (0..9).for_each(|i| b.admit(false, 20_000 + i).unwrap().done_at(false, 20_000 + i));
        fail(&b, 20_010);
        assert_eq!(b.phase(20_010), Some(Phase::Closed));
    }

    #[test]
    fn limits_and_retry_budget() {
        let b = CircuitBreaker::new("u", &CircuitBreakerSpec { max_parallel_requests: 2, ..spec() });
        let _a = b.admit(false, 0).unwrap();
        let _b = b.admit(false, 0).unwrap();
        assert_eq!(b.admit(false, 0).unwrap_err(), Refusal::Overloaded("maxParallelRequests"));

        let s = CircuitBreakerSpec {
            consecutive_failures: None,
            retry_budget: Some(RetryBudgetSpec { percent: 20, min_concurrency: 1 }),
            ..spec()
        };
        let b = CircuitBreaker::new("u", &s);
        let firsts: Vec<_> = (0..10).map(|_| b.admit(false, 0).unwrap()).collect();
        let r1 = b.admit(true, 0).unwrap();
        let _r2 = b.admit(true, 0).unwrap();
        assert_eq!(b.admit(true, 0).unwrap_err(), Refusal::Overloaded("retryBudget"), "20% of 10");
        drop(r1);
        let _r3 = b.admit(true, 0).unwrap();
        drop(firsts);
        assert_eq!(b.in_flight(), (2, 2));
    }
}
