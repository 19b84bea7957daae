//! The retry policy of a rule: which failed attempts may be tried again, and how long to
//! wait before the next one.
//!
//! Whether a retry actually goes out is also up to the upstream's breaker (an open breaker
//! stops retries) and its retry budget or `maxParallelRetries`; see `breaker`.

use std::time::Duration;

use http::{Method, StatusCode};
use schemas::snapshot::{RetryOn, RetrySpec};

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
