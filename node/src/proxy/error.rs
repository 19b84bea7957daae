//! Errors the gateway answers itself, and the one place they become HTTP responses.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::body::{full, RespBody};

/// Why the gateway answered instead of an upstream. Each variant is a leaf with one status.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches host `{host}` and path `{path}`")]
    NoRoute { host: String, path: String },
    #[error("request has no Host header")]
    MissingHost,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("upstream `{upstream}` is unavailable: {reason}")]
    UpstreamUnavailable { upstream: String, reason: String },
    #[error("upstream `{upstream}` failed: {reason}")]
    BadGateway { upstream: String, reason: String },
    #[error("upstream `{upstream}` did not answer within {after_ms}ms")]
    Timeout { upstream: String, after_ms: u64 },
    #[error("the circuit breaker of upstream `{upstream}` is open; retry in {retry_after_secs}s")]
    CircuitOpen { upstream: String, retry_after_secs: u64 },
    #[error("upstream `{upstream}` is at its {limit} limit")]
    Overloaded { upstream: String, limit: &'static str },
    #[error("every endpoint of upstream `{upstream}` is unhealthy or ejected")]
    NoHealthyEndpoint { upstream: String },
    #[error("rate limit of route `{route}` exceeded; retry in {retry_after_secs}s")]
    RateLimited { route: Arc<str>, retry_after_secs: u64 },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::MissingHost | ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::UpstreamUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::CircuitOpen { .. } | ProxyError::Overloaded { .. } | ProxyError::NoHealthyEndpoint { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// A short machine-readable code for the JSON body and the access log.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NoRoute { .. } => "no_route",
            ProxyError::MissingHost => "missing_host",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::UpstreamUnavailable { .. } => "upstream_unavailable",
            ProxyError::BadGateway { .. } => "bad_gateway",
            ProxyError::Timeout { .. } => "upstream_timeout",
            ProxyError::CircuitOpen { .. } => "circuit_open",
            ProxyError::Overloaded { .. } => "upstream_overloaded",
            ProxyError::NoHealthyEndpoint { .. } => "no_healthy_endpoint",
            ProxyError::RateLimited { .. } => "rate_limited",
        }
    }

    /// The response: status, and a short JSON body saying why, with the request id; a
    /// `Retry-After` when waiting helps. The response filter adds the headers every answer
    /// carries.
    pub fn into_response(self, request_id: &HeaderValue) -> Response<RespBody> {
        let body = serde_json::json!({
            "error": self.code(),
            "message": self.to_string(),
            "requestId": request_id.to_str().unwrap_or(""),
        });
        let mut resp = Response::new(full(Bytes::from(body.to_string() + "\n")));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match &self {
            ProxyError::CircuitOpen { retry_after_secs, .. } | ProxyError::RateLimited { retry_after_secs, .. } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        resp
    }
}
