//! Phase `prepare`: the request as the upstream will see it. The backend is chosen by
//! weight; hop-by-hop headers go, the proxy headers and the rule's request filters apply;
//! the target is rewritten; and a small body is read in full when a retry or an upstream
//! fallback may have to send it again (a large or unsized one streams, and gets one attempt),
//! or when the rule's mirrors take a copy (`mirror::select`).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Version};
use hyper::body::Incoming;

use super::body::ReqBody;
use super::context::{Downstream, ProxySettings, RequestCtx};
use super::error::ProxyError;
use super::filters;
use super::mirror;
use super::outgoing::{AttemptLimits, Outbound, Outgoing};
use super::retry;
use super::route::Routed;
use super::runtime::Fallback;
use super::session;

/// Requests whose body is at most this large (or has none) are read in full first when a
/// retry or an upstream fallback may need to send them again.
const REPLAY_BUFFER: u64 = 64 * 1024;

/// Builds the outgoing request; records the backend and upstream in `ctx`.
pub async fn prepare(
    route: &Routed<'_>,
    down: &Downstream,
    mut req: Request<Incoming>,
    body_limit: u64,
    settings: &ProxySettings,
    ctx: &mut RequestCtx,
) -> Result<Outgoing, ProxyError> {
    let rule = route.rule;
    // A session names its backend and endpoint; without one, the weights choose.
    let sticky = rule.session.as_deref().and_then(|p| {
        let found = p.read(req.headers(), session::now());
        ctx.session = Some(found);
        let session::Found::Valid(s) = found else { return None };
        p.locate(&s, rule.backends.iter().map(|b| &b.upstream))
    });
    let (backend, prefer) = match sticky {
        Some((b, e)) => (b, Some(e)),
        None => (
            rule.pick_backend().ok_or_else(|| ProxyError::UpstreamUnavailable {
                upstream: String::new(),
                reason: "every backend of the rule has weight 0".into(),
            })?,
            None,
        ),
    };
    ctx.backend = Some(backend);
    ctx.upstream = Some(rule.backends[backend].upstream.clone());

    // WebSocket and other upgrades: keep the handshake headers and take the client side of
    // the upgrade before the request is consumed.
    let upgrading = req.version() == Version::HTTP_11 && allowed_upgrade(req.headers(), &settings.upgrades);
    if upgrading {
        ctx.client_upgrade = Some(hyper::upgrade::on(&mut req));
    }
    if rule.compression.is_some() {
        ctx.accept_encoding = req.headers().get(header::ACCEPT_ENCODING).cloned();
    }
    let (mut parts, body) = req.into_parts();
    let target =
        headers_and_target(route, down, &mut parts.headers, parts.version, upgrading, ctx.forward_query.as_deref())?;

    let may_retry =
        !upgrading && rule.retry.as_ref().is_some_and(|r| r.allow_non_idempotent || retry::idempotent(&parts.method));
    let replay = may_retry || matches!(rule.fallback, Some(Fallback::Upstream(_)));
    let deadline = rule.request_timeout.map(|d| down.start + d.to_std());
    let per_try =
        match (rule.backend_timeout, rule.retry.as_ref().filter(|_| may_retry).and_then(|r| r.per_try_timeout)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    let limits =
        AttemptLimits { deadline, per_try, request_timeout: rule.request_timeout, client_ip: down.client, body_limit };
    // Mirrors take a request only when its body is known to fit their bound: it is read
    // in full once and shared by the copies and the attempts.
    let body_len = known_len(&body);
    let mirrors = if rule.mirrors.is_empty() { 0 } else { mirror::select(&rule.mirrors, body_len) };
    let buffer = if mirrors != 0 { body_len } else { body_len.filter(|&n| replay && n <= REPLAY_BUFFER) };
    let body = if let Some(len) = buffer {
        let upstream = &rule.backends[backend].upstream.spec.name;
        Outbound::Buffered(read_in_full(body, len, &limits, settings.body_timeout, upstream).await?)
    } else {
        Outbound::Streaming(Some(ReqBody::limited(body, body_limit, settings.body_timeout)))
    };
    Ok(Outgoing {
        backend,
        method: parts.method,
        headers: parts.headers,
        path_and_query: target,
        body,
        limits,
        may_retry,
        prefer,
        mirrors,
    })
}

/// Removes hop-by-hop headers, adds the proxy headers, applies the rule's request filters
/// and sets the upstream's Host; returns the target path and query.
fn headers_and_target(
    route: &Routed<'_>,
    down: &Downstream,
    headers: &mut HeaderMap,
    version: Version,
    upgrading: bool,
    forward_query: Option<&str>,
) -> Result<http::uri::PathAndQuery, ProxyError> {
    let filters = &route.rule.filters;
    filters::strip_hop_by_hop(headers, upgrading);
    filters::add_proxy_headers(
        headers,
        &down.conn.peer_header,
        down.peer_trusted,
        down.conn.https,
        &route.host,
        version,
    );
    // The client certificate this node verified, never one a client claims to have.
    static XFCC: http::HeaderName = http::HeaderName::from_static("x-forwarded-client-cert");
    match &down.conn.client_cert {
        Some(v) => {
            headers.insert(XFCC.clone(), v.clone());
        }
        None => filters::remove_present(headers, &[&XFCC]),
    }
    let new_path = filters.request(headers, &route.path, route.path_kind, route.matched_path);
    if let Some(h) = &filters.rewrite_host {
        headers.insert(header::HOST, h.clone());
    } else if let Some(a) = down.uri.authority() {
        // The authority that was routed (absolute form, HTTP/2's `:authority`) is the
        // upstream's Host, whatever Host header came with it.
        if let Ok(v) = HeaderValue::from_str(a.as_str()) {
            headers.insert(header::HOST, v);
        }
    }
    let target_path = new_path.as_deref().unwrap_or(&route.path);
    let query = match forward_query {
        Some(q) => (!q.is_empty()).then_some(q),
        None => route.query,
    };
    let pq = match query {
        Some(q) => format!("{target_path}?{q}"),
        None => target_path.to_string(),
    };
    http::uri::PathAndQuery::from_maybe_shared(Bytes::from(pq))
        .map_err(|_| ProxyError::BadRequest("the request target cannot be forwarded"))
}

/// The most the body can hold, when that is known: 0 for none, else its declared length.
fn known_len(body: &Incoming) -> Option<u64> {
    if hyper::body::Body::is_end_stream(body) {
        return Some(0);
    }
    hyper::body::Body::size_hint(body).upper()
}

/// Reads a body of at most `len` bytes in full, within what is left of the request's time,
/// and with the client sending something at least every `idle`.
async fn read_in_full(
    body: Incoming,
    len: u64,
    limits: &AttemptLimits,
    idle: std::time::Duration,
    upstream: &str,
) -> Result<Bytes, ProxyError> {
    let body = ReqBody::limited(body, len, idle);
    let read = http_body_util::BodyExt::collect(body);
    let read = match limits.deadline {
        Some(d) => tokio::time::timeout_at(d.into(), read).await.map_err(|_| ProxyError::Timeout {
            upstream: upstream.to_string(),
            after_ms: limits.request_timeout.map_or(0, |t| t.as_millis()),
        })?,
        None => read.await,
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(super::body::BodyError::Idle(after)) => Err(ProxyError::BodyTimeout { after }),
        Err(_) => Err(ProxyError::BadRequest("the request body could not be read")),
    }
}

/// Whether the request asks for an upgrade this node allows: every protocol its `Upgrade`
/// names must be in `allowed` (`websocket` by default). Anything else (`h2c`, made-up
/// protocols that would turn the connection into an opaque tunnel to the upstream) is
/// proxied as a plain request, its `Upgrade` header dropped with the other hop-by-hop ones.
fn allowed_upgrade(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(v) = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()) else { return false };
    let mut protocols = v.split(',').map(|p| p.trim().split('/').next().unwrap_or("").trim()).peekable();
    protocols.peek().is_some() && protocols.all(|p| allowed.iter().any(|a| a.eq_ignore_ascii_case(p)))
}
