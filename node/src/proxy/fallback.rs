//! Fallback responses: what a rule answers when its upstream cannot (no endpoint available,
//! breaker open, overloaded, or a 502/503/504 from the gateway or the upstream).

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use schemas::snapshot::FallbackSpec;

use super::RespBody;

pub static X_RAFTGATE_FALLBACK: HeaderName = HeaderName::from_static("x-raftgate-fallback");

/// The static answer of a `fallback: { status, headers, body }`. `None` for an upstream
/// fallback, which the proxy sends itself.
pub fn static_response(spec: &FallbackSpec, why: &'static str) -> Option<Response<RespBody>> {
    let FallbackSpec::Static { status, headers, body } = spec else { return None };
    let mut resp = Response::new(super::full(Bytes::from(body.clone())));
    *resp.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let h = resp.headers_mut();
    for (name, value) in headers {
        // `schemas` validated both.
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            h.append(n, v);
        }
    }
    h.insert(X_RAFTGATE_FALLBACK.clone(), HeaderValue::from_static(why));
    Some(resp)
}
