//! Phase `response_filter`: the one place that decorates every response before it leaves,
//! whoever made it (an upstream, a fallback, a redirect, an error).
//!
//! Upstream answers are framed for the client's protocol, lose their hop-by-hop headers and
//! get the rule's response header modifiers; every answer carries the request id and, on a
//! rate-limited rule, the `RateLimit-*` headers; over HTTPS, the host's HSTS. A rule's
//! compression (`compress`) applies to upstream answers after its header modifiers.

use http::{Response, StatusCode};

use super::body::RespBody;
use super::cache::{self, ResponseCache};
use super::context::{Answer, Downstream, RequestCtx, X_REQUEST_ID};
use super::filters;
use super::ratelimit;
use super::runtime::RuleRuntime;
use super::security;
use super::session::{Found, Persistence};

pub fn filter(down: &Downstream, ctx: &mut RequestCtx, cache: &ResponseCache, answer: Answer) -> Response<RespBody> {
    // A stored answer replaces the upstream's when it confirmed it (304) or failed.
    let answer = cache::respond(cache, ctx, answer);
    let mut stored = false;
    let mut resp = match answer {
        Answer::Upstream(resp) => {
            let (mut parts, body) = resp.into_parts();
            cache::invalidate(cache, ctx, parts.status);
            // The client's protocol, not the upstream's, frames the response.
            parts.version = down.version;
            filters::strip_hop_by_hop(&mut parts.headers, parts.status == StatusCode::SWITCHING_PROTOCOLS);
            // Taken out while the policies below borrow `ctx` (cheaper than a clone of the
            // `Arc`), and put back for the log.
            let rule = ctx.rule.take();
            let body = match &rule {
                Some(rule) => {
                    rule.filters.response(&mut parts.headers);
                    let body = match &rule.compression {
                        Some(c) => {
                            let head = down.method == http::Method::HEAD;
                            c.apply(&rule.route, ctx.accept_encoding.as_ref(), head, &mut parts, body)
                        }
                        None => RespBody::Upstream(body),
                    };
                    // What the client gets is what is stored (per coding when compressed).
                    let (body, storing) = cache::store(rule, ctx, &parts, body);
                    stored = storing;
                    // After the cache took its copy: a session belongs to this client only.
                    if let Some(p) = &rule.session {
                        session(p, rule, down, ctx, &mut parts.headers);
                    }
                    body
                }
                None => RespBody::Upstream(body),
            };
            ctx.rule = rule;
            Response::from_parts(parts, body)
        }
        Answer::Gateway(resp) => resp,
    };
    let h = resp.headers_mut();
    if let Some(d) = &ctx.rate {
        ratelimit::set_headers(h, d);
    }
    if ctx.cors_vary {
        security::cors::set_headers(h, ctx.cors.as_ref(), true);
    }
    if let Some(v) = &ctx.hsts {
        // The certificate's policy wins over an upstream's own header.
        h.insert(http::header::STRICT_TRANSPORT_SECURITY, v.clone());
    }
    h.entry(&X_REQUEST_ID).or_insert_with(|| down.request_id.clone());
    if let Some(v) = cache::status(ctx, stored) {
        static CACHE_STATUS: http::HeaderName = http::HeaderName::from_static("cache-status");
        h.append(CACHE_STATUS.clone(), v);
    }
    // A fill this answer did not take over ends here, waking the requests waiting for it.
    if let Some(state) = ctx.cache.as_mut() {
        state.fill = None;
    }
    resp
}

/// Issues, moves or refreshes the client's session on an upstream's answer.
fn session(p: &Persistence, rule: &RuleRuntime, down: &Downstream, ctx: &RequestCtx, h: &mut http::HeaderMap) {
    let (Some(up), Some(endpoint)) = (&ctx.upstream, &ctx.endpoint) else { return };
    let found = ctx.session.unwrap_or(Found::None);
    let outcome = p.write(h, found, up, endpoint, super::session::now(), down.conn.https);
    metrics::counter!("raftgate_sessions_total", "route" => rule.route.to_string(), "outcome" => outcome).increment(1);
}
