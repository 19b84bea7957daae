//! Phase `admit`: per-rule rate limits. A request over its key's limit is refused with 429
//! before anything is read or sent; every answer of a limited rule, refused or not, carries
//! the `RateLimit-*` headers (set by the response filter from `RequestCtx::rate`).
//!
//! The buckets themselves are in `bucket`.

pub mod bucket;

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use hyper::body::Incoming;

use super::clock;
use super::context::RequestCtx;
use super::error::ProxyError;
use super::route::Routed;
use bucket::Decision;

/// Takes a token from the request's bucket, or refuses the request.
pub(crate) fn admit(
    route: &Routed<'_>,
    req: &Request<Incoming>,
    client: IpAddr,
    ctx: &mut RequestCtx,
) -> Result<(), ProxyError> {
    let Some(limiter) = &route.rule.rate_limit else { return Ok(()) };
    let d =
        limiter.check(limiter.key(req.headers(), client, ctx.consumer.as_deref(), ctx.jwt.as_ref()), clock::now_ns());
    ctx.rate = Some(d);
    if d.allowed {
        Ok(())
    } else {
        Err(ProxyError::RateLimited { route: route.rule.route.clone(), retry_after_secs: d.retry_after_secs })
    }
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (the IETF draft's
/// header fields).
pub fn set_headers(h: &mut HeaderMap, d: &Decision) {
    static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
    static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
    static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
    h.insert(LIMIT.clone(), HeaderValue::from(d.limit));
    h.insert(REMAINING.clone(), HeaderValue::from(d.remaining));
    h.insert(RESET.clone(), HeaderValue::from(d.reset_secs));
}
