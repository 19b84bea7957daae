//! Phase `send`: the first attempt and, when the rule retries, the retry loop: which failed
//! attempts may be tried again, how long to wait before the next one, and on which
//! endpoint (one this request has not failed on yet, while there is one).
//!
//! Whether a retry actually goes out is also up to the upstream's breaker (an open breaker
//! stops retries) and its retry budget or `maxParallelRetries`; see `breaker`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use schemas::snapshot::{RetryOn, RetrySpec};

use super::attempt::{self, Attempt, AttemptResult, Failure};
use super::context::RequestCtx;
use super::endpoints::Endpoint;
use super::outgoing::Outgoing;
use super::runtime::{Fallback, RuleRuntime};
use super::upstream::Upstream;

/// Sends the request to the rule's chosen backend, retrying as the rule allows; counts the
/// attempts in `ctx.attempts`.
pub async fn run(rule: &RuleRuntime, out: &mut Outgoing, ctx: &mut RequestCtx) -> AttemptResult {
    let backend = out.backend;
    let upstream = &rule.backends[backend].upstream;
    let spec = rule.retry.as_deref().filter(|_| out.may_retry);
    let max_attempts = spec.map_or(1, |r| r.attempts);
    // The last attempt may move the headers instead of copying them, unless a fallback
    // upstream may still need them.
    let may_move = !matches!(rule.fallback, Some(Fallback::Upstream(_)));
    // Endpoints that failed this request, avoided by its retries.
    let mut tried: Vec<Arc<Endpoint>> = Vec::new();
    let mut result =
        traced(upstream, out, ctx, 1, |out| attempt::once(upstream, out, false, &tried, may_move && max_attempts == 1))
            .await;
    ctx.attempts = u32::from(!matches!(result, Err(Attempt::Refused(_))));
    let Some(spec) = spec else { return result };
    while ctx.attempts < max_attempts && out.replayable() {
        let failure = match &result {
            Ok((resp, _)) if retriable(spec, Failure::Status(resp.status())) => Failure::Status(resp.status()),
            Err(Attempt::Failed(_, f, _)) if retriable(spec, *f) => *f,
            _ => break,
        };
        let wait = backoff(spec, ctx.attempts);
        if out.limits.deadline.is_some_and(|d| Instant::now() + wait >= d) {
            break;
        }
        tokio::time::sleep(wait).await;
        if let Ok((_, ep)) | Err(Attempt::Failed(_, _, ep)) = &result {
            tried.push(ep.clone());
        }
        let last = may_move && ctx.attempts + 1 == max_attempts;
        match traced(upstream, out, ctx, ctx.attempts + 1, |out| attempt::once(upstream, out, true, &tried, last)).await
        {
            // The breaker opened or the retry budget is spent: the previous answer stands.
            Err(Attempt::Refused(e)) => {
                tracing::debug!(error = %e, ?failure, "retry not sent");
                break;
            }
            r => {
                ctx.attempts += 1;
                rule.backends[backend].retries(&rule.route).increment(1);
                result = r;
            }
        }
    }
    result
}

/// Runs one attempt, inside a client span when the request is traced.
async fn traced<'o, F, Fut>(
    upstream: &Upstream,
    out: &'o mut Outgoing,
    ctx: &RequestCtx,
    n: u32,
    attempt: F,
) -> AttemptResult
where
    F: FnOnce(&'o mut Outgoing) -> Fut,
    Fut: std::future::Future<Output = AttemptResult>,
{
    let Some(trace) = &ctx.trace else { return attempt(out).await };
    let span = trace.attempt(&upstream.spec.name, n, &mut out.headers);
    let result = attempt(out).await;
    super::trace::attempt_end(span, &result);
    result
}

/// Methods that may be sent twice without changing the result (RFC 9110 §9.2.2).
pub fn idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// Whether `spec` retries after `failure`.
pub fn retriable(spec: &RetrySpec, failure: Failure) -> bool {
    spec.retry_on.iter().any(|on| match (on, failure) {
        (RetryOn::ConnectFailure, Failure::Connect) => true,
        (RetryOn::Reset, Failure::Reset) => true,
        // Envoy's meaning: `5xx` and `gatewayError` cover the failures that produce them.
        (RetryOn::FiveXx | RetryOn::GatewayError, Failure::Connect | Failure::Reset | Failure::Timeout) => true,
        (RetryOn::FiveXx, Failure::Status(s)) => s.is_server_error(),
        (RetryOn::GatewayError, Failure::Status(s)) => is_gateway_error(s),
        (RetryOn::RetriableStatusCodes, Failure::Status(s)) => spec.status_codes.contains(&s.as_u16()),
        _ => false,
    })
}

/// 502, 503 and 504: the upstream (or a hop behind it) could not serve the request.
pub fn is_gateway_error(s: StatusCode) -> bool {
    matches!(s.as_u16(), 502..=504)
}

/// The wait before retry number `n` (1 for the first retry): exponential from `base`,
/// capped at `max`, with the upper half jittered so retries from many clients spread out.
pub fn backoff(spec: &RetrySpec, n: u32) -> Duration {
    let base = spec.backoff_base.as_millis();
    let ceiling = base.saturating_mul(1u64 << (n.saturating_sub(1)).min(20)).min(spec.backoff_max.as_millis());
    let half = ceiling / 2;
    Duration::from_millis(half + fastrand::u64(0..=ceiling - half))
}

#[cfg(test)]
mod tests {
    use schemas::Duration as D;

    use super::*;

    fn spec(on: &[RetryOn]) -> RetrySpec {
        RetrySpec {
            attempts: 3,
            retry_on: on.to_vec(),
            status_codes: vec![409],
            per_try_timeout: None,
            backoff_base: D::from_millis(100),
            backoff_max: D::from_millis(1_000),
            allow_non_idempotent: false,
        }
    }

    #[test]
    fn retry_on_matches_the_failure() {
        let s503 = Failure::Status(StatusCode::SERVICE_UNAVAILABLE);
        let s500 = Failure::Status(StatusCode::INTERNAL_SERVER_ERROR);
        let s409 = Failure::Status(StatusCode::CONFLICT);
        let cases = [
            (vec![RetryOn::ConnectFailure], Failure::Connect, true),
            (vec![RetryOn::ConnectFailure], Failure::Reset, false),
            (vec![RetryOn::Reset], Failure::Reset, true),
            (vec![RetryOn::Reset], s503, false),
            (vec![RetryOn::FiveXx], s500, true),
            (vec![RetryOn::FiveXx], Failure::Timeout, true),
            (vec![RetryOn::GatewayError], s500, false),
            (vec![RetryOn::GatewayError], s503, true),
            (vec![RetryOn::RetriableStatusCodes], s409, true),
            (vec![RetryOn::RetriableStatusCodes], s503, false),
        ];
        for (on, failure, want) in cases {
            assert_eq!(retriable(&spec(&on), failure), want, "{on:?} {failure:?}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let s = spec(&[]);
        for _ in 0..100 {
            let b1 = backoff(&s, 1).as_millis();
            let b3 = backoff(&s, 3).as_millis();
            let b9 = backoff(&s, 9).as_millis();
            assert!((50..=100).contains(&b1), "{b1}");
            assert!((200..=400).contains(&b3), "{b3}");
            assert!((500..=1_000).contains(&b9), "{b9}");
        }
        assert!(idempotent(&Method::GET) && idempotent(&Method::PUT) && !idempotent(&Method::POST));
    }
}
