//! Request mirroring (`RequestMirror` filters), beside phase `send`: a copy of a selected
//! request goes to each mirror upstream on a task of its own, and its answer is read and
//! thrown away. Nothing of it reaches the client or delays it: the copy is sent before the
//! first attempt and never awaited, its failures are the mirror upstream's alone (its own
//! breaker and outlier detection), and its time is bounded by the mirror's `timeout`.
//!
//! Bounded: a request is mirrored only when its body is known to fit `maxBodyBytes` (it is
//! read in full once and shared by the copies and any retry); each mirror has at most
//! `maxInFlight` copies out per node, and a copy beyond that is dropped, never queued.
//! Every outcome is counted in `raftgate_mirror_requests_total`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http_body_util::BodyExt;
use metrics::Counter;
use schemas::snapshot::MirrorSpec;
use tokio::sync::Semaphore;

use super::attempt;
use super::outgoing::{AttemptLimits, Outbound, Outgoing};
use super::upstream::Upstream;

/// One mirror of a rule.
#[derive(Debug)]
pub struct Mirror {
    pub upstream: Arc<Upstream>,
    numerator: u32,
    denominator: u32,
    pub max_body: u64,
    timeout: Duration,
    slots: Arc<Semaphore>,
    counts: Counts,
}

#[derive(Debug)]
struct Counts {
    answered: Counter,
    failed: Counter,
    dropped: Counter,
    too_large: Counter,
}

impl Mirror {
    pub fn new(route: &str, spec: &MirrorSpec, upstream: Arc<Upstream>) -> Self {
        let count = |result: &'static str| metrics::counter!("raftgate_mirror_requests_total", "route" => route.to_string(), "upstream" => spec.upstream.clone(), "result" => result);
        Mirror {
            upstream,
            numerator: spec.numerator,
            denominator: spec.denominator.max(1),
            max_body: spec.max_body_bytes,
            timeout: spec.timeout.to_std(),
            slots: Arc::new(Semaphore::new(spec.max_in_flight as usize)),
            counts: Counts {
                answered: count("answered"),
                failed: count("failed"),
                dropped: count("dropped"),
                too_large: count("body_too_large"),
            },
        }
    }
}

/// The mirrors (a bit each, by index) that take this request, drawn by their fractions;
/// those whose body bound the request's body may exceed are left out and counted.
/// `body_len`: the body's length when known (0 for none).
pub fn select(mirrors: &[Mirror], body_len: Option<u64>) -> u32 {
    let mut chosen = 0u32;
    for (i, m) in mirrors.iter().enumerate().take(32) {
        if m.numerator == 0 || fastrand::u32(0..m.denominator) >= m.numerator {
            continue;
        }
        if body_len.is_none_or(|n| n > m.max_body) {
            m.counts.too_large.increment(1);
            continue;
        }
        chosen |= 1 << i;
    }
    chosen
}

/// Sends a copy of `out` to each chosen mirror, on tasks of their own.
pub fn send(mirrors: &[Mirror], out: &Outgoing) {
    if out.mirrors == 0 {
        return;
    }
    let Outbound::Buffered(body) = &out.body else { return };
    for (_, m) in mirrors.iter().enumerate().filter(|(i, _)| out.mirrors & (1 << i) != 0) {
        let Ok(permit) = m.slots.clone().try_acquire_owned() else {
            m.counts.dropped.increment(1);
            continue;
        };
        let mut headers = out.headers.clone();
        if let Some(h) = headers.get(header::HOST).and_then(shadow_host) {
            headers.insert(header::HOST, h);
        }
        let deadline = Instant::now() + m.timeout;
        let timeout = schemas::Duration::from_millis(m.timeout.as_millis() as u64);
        let mut copy = Outgoing {
            backend: 0,
            method: out.method.clone(),
            headers,
            path_and_query: out.path_and_query.clone(),
            body: Outbound::Buffered(body.clone()),
            limits: AttemptLimits {
                deadline: Some(deadline),
                per_try: None,
                request_timeout: Some(timeout),
                client_ip: out.limits.client_ip,
                body_limit: out.limits.body_limit,
            },
            may_retry: false,
            prefer: None,
            mirrors: 0,
        };
        let up = m.upstream.clone();
        let (answered, failed) = (m.counts.answered.clone(), m.counts.failed.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match attempt::once(&up, &mut copy, false, &[], true).await {
                Ok((resp, _)) => {
                    // Read to the end (within the time left) so the connection can be reused.
                    let mut body = resp.into_body();
                    let drained = tokio::time::timeout_at(deadline.into(), async {
                        while let Some(frame) = body.frame().await {
                            if frame.is_err() {
                                return false;
                            }
                        }
                        true
                    });
                    if drained.await.unwrap_or(false) {
                        answered.increment(1);
                    } else {
                        failed.increment(1);
                    }
                }
                Err(_) => failed.increment(1),
            }
        });
    }
}

/// `api.example.com:8080` → `api.example.com-shadow:8080`, as Envoy marks shadow traffic.
fn shadow_host(host: &HeaderValue) -> Option<HeaderValue> {
    let h = host.to_str().ok()?;
    // An IPv6 literal's colons are inside brackets; a port follows the last `]` or lone `:`.
    let split = match h.rfind(']') {
        Some(end) => h[end..].find(':').map(|i| end + i),
        None => h.rfind(':'),
    };
    let (name, port) = h.split_at(split.unwrap_or(h.len()));
    HeaderValue::from_str(&format!("{name}-shadow{port}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_hosts_keep_the_port() {
        for (host, want) in [
            ("api.example.com", "api.example.com-shadow"),
            ("api.example.com:8080", "api.example.com-shadow:8080"),
            ("[::1]:80", "[::1]-shadow:80"),
            ("[::1]", "[::1]-shadow"),
        ] {
            assert_eq!(shadow_host(&HeaderValue::from_static(host)).unwrap(), want);
        }
    }
}
