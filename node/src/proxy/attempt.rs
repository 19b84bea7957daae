//! One attempt at an upstream: the breaker admits it (or answers for the upstream without
//! touching it), the balancer picks an available endpoint, the call runs under the attempt's
//! time limit, and the outcome is reported to the breaker and to outlier detection.

use std::sync::Arc;
use std::time::Instant;

use http::{Response, StatusCode};
use hyper::body::Incoming;

use super::balancer::PickContext;
use super::body;
use super::breaker::{Permit, Refusal};
use super::clock;
use super::connlimit::ConnLimit;
use super::endpoints::Endpoint;
use super::error::ProxyError;
use super::outgoing::{AttemptLimits, Outgoing};
use super::upstream::Upstream;

/// How an attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be made: the request never reached the upstream.
    Connect,
    /// The connection broke before a response head arrived.
    Reset,
    /// No response head within the attempt's time limit.
    Timeout,
    /// The upstream answered with this status.
    Status(StatusCode),
}

/// How an attempt went wrong.
#[derive(Debug)]
pub enum Attempt {
    /// Not sent: the breaker is open, a limit is reached, or no endpoint is available.
    Refused(ProxyError),
    /// Sent to `endpoint` and failed.
    Failed(ProxyError, Failure, Arc<Endpoint>),
    /// The request itself is at fault; nothing to retry.
    Fatal(ProxyError),
}

impl Attempt {
    pub fn error(&self) -> &ProxyError {
        match self {
            Attempt::Refused(e) | Attempt::Failed(e, _, _) | Attempt::Fatal(e) => e,
        }
    }

    pub fn into_error(self) -> ProxyError {
        match self {
            Attempt::Refused(e) | Attempt::Failed(e, _, _) | Attempt::Fatal(e) => e,
        }
    }
}

/// An upstream's answer and the endpoint that gave it, or how the attempt failed.
pub type AttemptResult = Result<(Response<Incoming>, Arc<Endpoint>), Attempt>;

/// One attempt against `up`. `retry`: this is a retry (the breaker counts those apart);
/// `tried`: endpoints this request already failed on, avoided while others are available;
/// `last`: no attempt follows, so the request's headers may be moved.
pub async fn once(
    up: &Arc<Upstream>,
    out: &mut Outgoing,
    retry: bool,
    tried: &[Arc<Endpoint>],
    last: bool,
) -> AttemptResult {
    if up.dns.is_some() {
        up.first_resolution().await;
    }
    let now = if up.uses_clock() { clock::now_ms() } else { 0 };
    let permit = up.breaker.admit(retry, now).map_err(|r| Attempt::Refused(refusal(up, r)))?;
    let ctx = PickContext { headers: &out.headers, client_ip: out.limits.client_ip };
    let in_flight = up
        .pick(&ctx, out.prefer.as_ref(), tried, now)
        .ok_or_else(|| Attempt::Refused(ProxyError::NoHealthyEndpoint { upstream: up.spec.name.clone() }))?;
    let endpoint = in_flight.endpoint().clone();
    let req = out
        .request(up, &endpoint, last)
        .map_err(|_| Attempt::Fatal(ProxyError::BadRequest("the request target cannot be forwarded")))?;

    let (budget, whole_request) = time_limit(&out.limits);
    let call = up.client.request(req);
    let result = match budget {
        Some(d) => match tokio::time::timeout(d, call).await {
            Ok(r) => r,
            Err(_) => {
                permit.failure();
                up.endpoint_result(&endpoint, true);
                let after = if whole_request { out.limits.request_timeout } else { out.limits.per_try };
                let e = ProxyError::Timeout {
                    upstream: up.spec.name.clone(),
                    after_ms: after.map_or(0, |d| d.as_millis()),
                };
                return Err(Attempt::Failed(e, Failure::Timeout, endpoint));
            }
        },
        None => call.await,
    };
    match result {
        Ok(resp) => {
            let failed = resp.status().is_server_error();
            if failed {
                permit.failure();
            } else {
                permit.success();
            }
            up.endpoint_result(&endpoint, failed);
            Ok((resp, endpoint))
        }
        Err(e) => Err(call_failed(up, endpoint, permit, &e, &out.limits)),
    }
}

/// The attempt's time limit: the per-try limit, within what is left of the request's.
/// Also says whether the request's own limit is the one that applies.
fn time_limit(limits: &AttemptLimits) -> (Option<std::time::Duration>, bool) {
    let left = limits.deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let budget = match (limits.per_try.map(|d| d.to_std()), left) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    (budget, left.is_some() && left == budget)
}

fn refusal(up: &Upstream, r: Refusal) -> ProxyError {
    let upstream = up.spec.name.clone();
    match r {
        Refusal::Open { retry_after_ms } => {
            ProxyError::CircuitOpen { upstream, retry_after_secs: retry_after_ms.div_ceil(1000).max(1) }
        }
        Refusal::Overloaded(limit) => ProxyError::Overloaded { upstream, limit },
    }
}

/// Classifies a failed call: the client's body over the limit, stalled or malformed (the
/// request's fault), a connection limit (not sent), or a failure of the endpoint (reported
/// to the breaker and outlier detection).
fn call_failed(
    up: &Upstream,
    endpoint: Arc<Endpoint>,
    permit: Permit<'_>,
    e: &hyper_util::client::legacy::Error,
    limits: &AttemptLimits,
) -> Attempt {
    let upstream = up.spec.name.clone();
    match body::client_fault(e) {
        Some(body::BodyError::TooLarge(_)) => {
            return Attempt::Fatal(ProxyError::BodyTooLarge { limit: limits.body_limit });
        }
        Some(body::BodyError::Idle(after)) => return Attempt::Fatal(ProxyError::BodyTimeout { after: *after }),
        Some(body::BodyError::Client(_)) => {
            return Attempt::Fatal(ProxyError::BadRequest("the request body could not be read"));
        }
        None => {}
    }
    if let Some(l) = ConnLimit::find(e) {
        metrics::counter!("raftgate_upstream_overflow_total", "upstream" => upstream.clone(), "limit" => l.name())
            .increment(1);
        return Attempt::Refused(ProxyError::Overloaded { upstream, limit: l.name() });
    }
    permit.failure();
    up.endpoint_result(&endpoint, true);
    let reason = error_chain(e);
    if e.is_connect() {
        Attempt::Failed(ProxyError::UpstreamUnavailable { upstream, reason }, Failure::Connect, endpoint)
    } else {
        Attempt::Failed(ProxyError::BadGateway { upstream, reason }, Failure::Reset, endpoint)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
