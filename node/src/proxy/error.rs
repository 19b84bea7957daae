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
    /// The request names a host whose certificate requires a client certificate, on a TLS
    /// connection made for another name (or none): it must connect with that host's SNI.
    #[error(
        "this connection was not made for host `{host}`; connect with its name (SNI) to present a client certificate"
    )]
    Misdirected { host: String },
    #[error("the request path is longer than {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the client sent no body data for {} s", .after.as_secs())]
    BodyTimeout { after: std::time::Duration },
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
    /// A security policy refused the request; `challenge` is the `WWW-Authenticate` of a 401.
    #[error("{reason}")]
    Denied { reason: Denial, challenge: Option<HeaderValue> },
    /// The external authorization service refused the request with `status`; `headers`
    /// (its `WWW-Authenticate`, `Location`) go to the client.
    #[error("access denied by the authorization service")]
    ExtAuthDenied { status: StatusCode, headers: http::HeaderMap },
}

/// Why a security policy refused a request. The messages say what was wrong, never which
/// part of a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("this route requires credentials")]
    CredentialsMissing,
    #[error("the credentials are not valid")]
    CredentialsInvalid,
    #[error("access to this route is denied")]
    Forbidden,
    #[error("this cross-origin request is not allowed")]
    CorsRefused,
    #[error("too many credential checks at once; retry shortly")]
    Overloaded,
    #[error("the authorization service cannot be reached; retry shortly")]
    ExtAuthUnavailable,
}

impl Denial {
    pub fn code(self) -> &'static str {
        match self {
            Denial::CredentialsMissing => "credentials_missing",
            Denial::CredentialsInvalid => "credentials_invalid",
            Denial::Forbidden => "forbidden",
            Denial::CorsRefused => "cors_refused",
            Denial::Overloaded => "auth_overloaded",
            Denial::ExtAuthUnavailable => "ext_auth_unavailable",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Denial::CredentialsMissing | Denial::CredentialsInvalid => StatusCode::UNAUTHORIZED,
            Denial::Forbidden | Denial::CorsRefused => StatusCode::FORBIDDEN,
            Denial::Overloaded | Denial::ExtAuthUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::MissingHost | ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::UpstreamUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::CircuitOpen { .. } | ProxyError::Overloaded { .. } | ProxyError::NoHealthyEndpoint { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Denied { reason, .. } => reason.status(),
            ProxyError::ExtAuthDenied { status, .. } => *status,
        }
    }

    /// A short machine-readable code for the JSON body and the access log.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NoRoute { .. } => "no_route",
            ProxyError::MissingHost => "missing_host",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::Misdirected { .. } => "misdirected_request",
            ProxyError::UriTooLong { .. } => "uri_too_long",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::BodyTimeout { .. } => "body_timeout",
            ProxyError::UpstreamUnavailable { .. } => "upstream_unavailable",
            ProxyError::BadGateway { .. } => "bad_gateway",
            ProxyError::Timeout { .. } => "upstream_timeout",
            ProxyError::CircuitOpen { .. } => "circuit_open",
            ProxyError::Overloaded { .. } => "upstream_overloaded",
            ProxyError::NoHealthyEndpoint { .. } => "no_healthy_endpoint",
            ProxyError::RateLimited { .. } => "rate_limited",
            ProxyError::Denied { reason, .. } => reason.code(),
            ProxyError::ExtAuthDenied { .. } => "ext_auth_denied",
        }
    }

    /// What the client is told: the code's meaning, never the internal cause (a connect
    /// error, an upstream address, a TLS failure). The full error is logged with the
    /// request id, which the body carries for the operator to find it.
    pub fn public_message(&self) -> String {
        match self {
            ProxyError::NoRoute { .. } => "no route matches this host and path".into(),
            ProxyError::UpstreamUnavailable { upstream, .. } => format!("upstream `{upstream}` is unavailable"),
            ProxyError::BadGateway { upstream, .. } => format!("upstream `{upstream}` failed"),
            other => other.to_string(),
        }
    }

    /// The response: status, and a short JSON body saying why, with the request id; a
    /// `Retry-After` when waiting helps. The response filter adds the headers every answer
    /// carries.
    pub fn into_response(self, request_id: &HeaderValue) -> Response<RespBody> {
        let body = serde_json::json!({
            "error": self.code(),
            "message": self.public_message(),
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
            ProxyError::Denied { challenge: Some(c), .. } => {
                h.insert(header::WWW_AUTHENTICATE, c.clone());
            }
            ProxyError::ExtAuthDenied { headers, .. } => {
                for (name, value) in headers {
                    h.insert(name.clone(), value.clone());
                }
            }
            ProxyError::Denied { reason: Denial::Overloaded | Denial::ExtAuthUnavailable, .. } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_get_the_code_and_request_id_not_the_internal_cause() {
        let e = ProxyError::BadGateway {
            upstream: "users".into(),
            reason: "error trying to connect: tcp connect error: Connection refused (10.0.3.7:8443)".into(),
        };
        let resp = e.into_response(&HeaderValue::from_static("req-1"));
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let body = futures_body(resp);
        assert!(body.contains("\"error\":\"bad_gateway\""), "{body}");
        assert!(body.contains("\"requestId\":\"req-1\""), "{body}");
        assert!(!body.contains("10.0.3.7") && !body.contains("refused"), "{body}");
    }

    fn futures_body(resp: Response<RespBody>) -> String {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let bytes = rt.block_on(resp.into_body().collect()).unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
