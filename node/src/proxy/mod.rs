//! The proxy engine: one request's life, top to bottom.
//!
//! `Proxy::handle` loads the current runtime once, then: request id → host and path →
//! route lookup → redirect (answered here) → body limit → backend and endpoint choice →
//! request filters and proxy headers → upstream call with timeouts (and the upgrade
//! hand-off for WebSockets) → response filters → metrics and access log. Every failure is
//! a `ProxyError`, turned into a response in exactly one place.

pub mod balancer;
pub mod body;
pub mod breaker;
pub mod clock;
pub mod connlimit;
pub mod error;
pub mod fallback;
pub mod filters;
pub mod health;
pub mod outlier;
pub mod ratelimit;
pub mod retry;
pub mod router;
pub mod runtime;
pub mod tls;
pub mod upstream;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;

use body::ReqBody;
pub use body::{full, RespBody};
use bytes::Bytes;
use error::ProxyError;
use runtime::{Engine, Fallback, Runtime};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Node-level settings of the data plane.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: u64,
    /// Write one JSON access-log line per request.
    pub access_log: bool,
}

/// Facts about the client connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub https: bool,
    /// The listener's port, for redirects that keep it.
    pub local_port: u16,
}

#[derive(Debug)]
pub struct Proxy {
    pub engine: Arc<Engine>,
    pub settings: ProxySettings,
}

/// What the access log and metrics record about one request.
#[derive(Debug, Default)]
struct Outcome {
    rule: Option<Arc<runtime::RuleRuntime>>,
    /// Index of the chosen backend in the rule.
    backend: Option<usize>,
    upstream: Option<String>,
    endpoint: Option<String>,
    error: Option<&'static str>,
    /// Upstream attempts made (0 when none was).
    attempts: u32,
    fallback: bool,
}

impl Proxy {
    pub async fn handle(&self, mut req: Request<Incoming>, conn: ConnInfo) -> Response<RespBody> {
        let start = Instant::now();
        let rt = self.engine.current();
        let request_id = match req.headers().get(&X_REQUEST_ID) {
            Some(v) if !v.is_empty() && v.len() <= 200 => v.clone(),
            _ => {
                let v = new_request_id();
                req.headers_mut().insert(X_REQUEST_ID.clone(), v.clone());
                v
            }
        };
        let method = req.method().clone();
        let uri = req.uri().clone();
        let version = req.version();
        let mut outcome = Outcome::default();
        let mut resp = match self.forward(&rt, req, &uri, conn, start, &mut outcome).await {
            Ok(resp) => resp,
            Err(e) => {
                outcome.error = Some(e.code());
                if e.status().is_server_error() {
                    tracing::warn!(request_id = request_id.to_str().unwrap_or(""), error = %e, "request failed");
                }
                e.into_response(&request_id)
            }
        };
        resp.headers_mut().entry(&X_REQUEST_ID).or_insert_with(|| request_id.clone());

        let status = resp.status().as_u16();
        let elapsed = start.elapsed();
        match (&outcome.rule, outcome.backend) {
            (Some(rule), Some(b)) => {
                rule.latency.record(elapsed.as_secs_f64());
                rule.backends[b].requests[usize::from(status / 100).clamp(1, 5) - 1].increment(1);
            }
            (Some(rule), None) => {
                rule.latency.record(elapsed.as_secs_f64());
                metrics::counter!("raftgate_requests_total", "route" => rule.route.to_string(), "upstream" => "", "class" => class(status))
                    .increment(1);
            }
            _ => {
                metrics::counter!("raftgate_requests_total", "route" => "", "upstream" => "", "class" => class(status))
                    .increment(1)
            }
        }
        if self.settings.access_log {
            tracing::info!(
                target: "access",
                request_id = request_id.to_str().unwrap_or(""),
                client = %conn.peer.ip(),
                method = %method,
                uri = %uri,
                version = ?version,
                status,
                route = outcome.rule.as_ref().map_or("", |r| &*r.route),
                upstream = outcome.upstream.as_deref().unwrap_or(""),
                endpoint = outcome.endpoint.as_deref().unwrap_or(""),
                attempts = outcome.attempts,
                fallback = outcome.fallback,
                error = outcome.error.unwrap_or(""),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
            );
        }
        resp
    }

    async fn forward(
        &self,
        rt: &Runtime,
        mut req: Request<Incoming>,
        // The request target, kept aside so path and query can be borrowed after `req` is
        // taken apart (cloning a `Uri` only bumps reference counts).
        uri: &Uri,
        conn: ConnInfo,
        start: Instant,
        outcome: &mut Outcome,
    ) -> Result<Response<RespBody>, ProxyError> {
        // Host and path, as routing sees them.
        // A clone of the Host value only bumps a reference count, and frees `req` for later.
        let host_header = req.headers().get(header::HOST).cloned();
        let (host, _port) = request_host(uri, host_header.as_ref())?;
        let path = filters::normalize_path(uri.path()).map_err(ProxyError::BadRequest)?;
        let query = uri.query();

        let matched = rt
            .router
            .lookup(&router::RequestView {
                host: &host,
                path: &path,
                query,
                method: req.method(),
                headers: req.headers(),
            })
            .ok_or_else(|| ProxyError::NoRoute { host: host.to_string(), path: path.to_string() })?;
        let rule = matched.rule.clone();
        outcome.rule = Some(rule.clone());

        if let Some(redirect) = &rule.redirect {
            let parts = filters::RedirectParts {
                https: conn.https,
                host: &host,
                port: Some(conn.local_port),
                path: &path,
                query,
                matched_kind: matched.path_kind,
                matched_path: matched.matched_path,
            };
            return filters::redirect(redirect, &parts)
                .ok_or(ProxyError::BadRequest("the redirect target is not a valid URL"));
        }

        // Refuse a declared oversized body before contacting anyone.
        let limit = rule.max_body_bytes.unwrap_or(self.settings.max_body_bytes);
        if let Some(len) = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        {
            if len > limit {
                return Err(ProxyError::BodyTooLarge { limit });
            }
        }

        // Rate limit: the cheapest refusal, before any work towards the upstream.
        let rate = match &rule.rate_limit {
            Some(limiter) => {
                let d = limiter.check(limiter.key(req.headers(), conn.peer.ip()), clock::now_ns());
                if !d.allowed {
                    return Err(ProxyError::RateLimited { route: rule.route.to_string(), decision: d });
                }
                Some(d)
            }
            None => None,
        };

        let backend_index = rule.pick_backend().ok_or_else(|| ProxyError::UpstreamUnavailable {
            upstream: String::new(),
            reason: "every backend of the rule has weight 0".into(),
        })?;
        outcome.backend = Some(backend_index);
        let upstream = rule.backends[backend_index].upstream.clone();
        outcome.upstream = Some(upstream.spec.name.clone());

        // WebSocket and other upgrades: keep the handshake headers and take the client
        // side of the upgrade before the request is consumed.
        let upgrading = version_supports_upgrade(&req) && req.headers().contains_key(header::UPGRADE);
        let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));

        let version = req.version();
        let (mut parts, body) = req.into_parts();
        filters::strip_hop_by_hop(&mut parts.headers, upgrading);
        filters::add_proxy_headers(&mut parts.headers, conn.peer.ip(), conn.https, &host, parts.version);
        let (new_path, new_host) = filters::apply_request_filters(
            &rule.filters,
            &mut parts.headers,
            &path,
            matched.path_kind,
            matched.matched_path,
        );
        if let Some(h) = new_host {
            if let Ok(v) = HeaderValue::from_str(&h) {
                parts.headers.insert(header::HOST, v);
            }
        } else if !parts.headers.contains_key(header::HOST) {
            // HTTP/2 clients send `:authority`; HTTP/1.1 upstreams need a Host header.
            if let Some(a) = parts.uri.authority() {
                if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                    parts.headers.insert(header::HOST, v);
                }
            }
        }
        let target_path = new_path.as_deref().unwrap_or(&path);
        let pq = match query {
            Some(q) => format!("{target_path}?{q}"),
            None => target_path.to_string(),
        };
        let path_and_query = http::uri::PathAndQuery::from_maybe_shared(Bytes::from(pq))
            .map_err(|_| ProxyError::BadRequest("the request target cannot be forwarded"))?;

        // Retries and an upstream fallback send the request again, so a small body is read
        // in full first; a large or unsized one streams and gets a single attempt.
        let retry =
            rule.retry.as_ref().filter(|r| !upgrading && (r.allow_non_idempotent || retry::idempotent(&parts.method)));
        let replay = retry.is_some() || matches!(rule.fallback, Some(Fallback::Upstream(_)));
        let deadline = rule.request_timeout.map(|d| start + d.to_std());
        let body = if replay
            && (hyper::body::Body::is_end_stream(&body)
                || hyper::body::Body::size_hint(&body).upper().is_some_and(|n| n <= REPLAY_BUFFER))
        {
            let read = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, REPLAY_BUFFER as usize));
            let read = match deadline {
                Some(d) => tokio::time::timeout_at(d.into(), read).await.map_err(|_| ProxyError::Timeout {
                    upstream: upstream.spec.name.clone(),
                    after_ms: rule.request_timeout.map_or(0, |t| t.as_millis()),
                })?,
                None => read.await,
            };
            let bytes = read.map_err(|_| ProxyError::BadRequest("the request body could not be read"))?.to_bytes();
            Outbound::Buffered(bytes)
        } else {
            Outbound::Streaming(Some(ReqBody::limited(body, limit)))
        };
        let mut out = Outgoing { method: parts.method, headers: parts.headers, path_and_query, body };

        let per_try = match (rule.backend_timeout, retry.and_then(|r| r.per_try_timeout)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let limits = AttemptLimits {
            deadline,
            per_try,
            request_timeout: rule.request_timeout,
            client_ip: conn.peer.ip(),
            body_limit: limit,
        };
        let max_attempts = retry.map_or(1, |r| r.attempts);
        // The last attempt may move the headers instead of copying them, unless a fallback
        // upstream may still need them.
        let may_move = !matches!(rule.fallback, Some(Fallback::Upstream(_)));
        // Endpoints that failed this request, avoided by its retries.
        let mut tried: Vec<usize> = Vec::new();
        let mut result = self.attempt(&upstream, &mut out, &limits, false, &tried, may_move && max_attempts == 1).await;
        outcome.attempts = u32::from(!matches!(result, Err(Attempt::Refused(_))));
        if let Some(spec) = retry {
            while outcome.attempts < max_attempts && out.replayable() {
                let failure = match &result {
                    Ok((resp, _)) if retry::retriable(spec, retry::Failure::Status(resp.status())) => {
                        retry::Failure::Status(resp.status())
                    }
                    Err(Attempt::Failed(_, f, _)) if retry::retriable(spec, *f) => *f,
                    _ => break,
                };
                let wait = retry::backoff(spec, outcome.attempts);
                if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                    break;
                }
                tokio::time::sleep(wait).await;
                match &result {
                    Ok((_, ep)) | Err(Attempt::Failed(_, _, ep)) => tried.push(*ep),
                    Err(_) => {}
                }
                let last = may_move && outcome.attempts + 1 == max_attempts;
                match self.attempt(&upstream, &mut out, &limits, true, &tried, last).await {
                    // The breaker opened or the retry budget is spent: the previous answer stands.
                    Err(Attempt::Refused(e)) => {
                        tracing::debug!(error = %e, ?failure, "retry not sent");
                        break;
                    }
                    r => {
                        outcome.attempts += 1;
                        if let Some(c) = &rule.backends[backend_index].retries {
                            c.increment(1);
                        }
                        result = r;
                    }
                }
            }
        }

        let mut answered_by = &upstream;
        // Fallback: when the upstream could not answer, or answered 502, 503 or 504.
        let failed = match &result {
            Ok((resp, _)) => retry::is_gateway_error(resp.status()),
            Err(a) => retry::is_gateway_error(a.error().status()),
        };
        if let (true, Some(fallback)) = (failed, &rule.fallback) {
            let why = match &result {
                Ok(_) => "upstream-error",
                Err(a) => a.error().code(),
            };
            outcome.fallback = true;
            if let Some(c) = &rule.fallbacks {
                c.increment(1);
            }
            match fallback {
                Fallback::Static(spec) => {
                    if let Ok((resp, _)) = result {
                        drop(resp);
                    }
                    let mut resp = fallback::static_response(spec, why).expect("a static fallback");
                    if let Some(d) = &rate {
                        ratelimit::set_headers(resp.headers_mut(), d);
                    }
                    return Ok(resp);
                }
                Fallback::Upstream(other) if out.replayable() => {
                    outcome.upstream = Some(other.spec.name.clone());
                    answered_by = other;
                    result = self.attempt(other, &mut out, &limits, false, &[], true).await;
                }
                Fallback::Upstream(_) => {}
            }
        }
        let mut resp = match result {
            Ok((resp, endpoint)) => {
                outcome.endpoint = Some(answered_by.spec.endpoints[endpoint].address.clone());
                resp
            }
            Err(a) => return Err(a.into_error()),
        };
        let status = resp.status();

        if status == http::StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    match tokio::try_join!(client_upgrade, upstream_upgrade) {
                        Ok((client, server)) => {
                            let mut client = hyper_util::rt::TokioIo::new(client);
                            let mut server = hyper_util::rt::TokioIo::new(server);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                    }
                });
            }
        }
        let (mut parts, body) = resp.into_parts();
        // The client's protocol, not the upstream's, frames the response.
        parts.version = version;
        filters::strip_hop_by_hop(&mut parts.headers, status == http::StatusCode::SWITCHING_PROTOCOLS);
        filters::apply_response_filters(&rule.filters, &mut parts.headers);
        if let Some(d) = &rate {
            ratelimit::set_headers(&mut parts.headers, d);
        }
        Ok(Response::from_parts(parts, http_body_util::Either::Left(body)))
    }

    /// One attempt against `up`: breaker admission, endpoint choice, the call under its time
    /// limit, and the outcome reported to the breaker and outlier detection. Returns the
    /// response and the endpoint that gave it.
    async fn attempt(
        &self,
        up: &Arc<upstream::Upstream>,
        out: &mut Outgoing,
        limits: &AttemptLimits,
        retry: bool,
        tried: &[usize],
        last: bool,
    ) -> Result<(Response<Incoming>, usize), Attempt> {
        let name = || up.spec.name.clone();
        let now = if up.uses_clock() { clock::now_ms() } else { 0 };
        let permit = up.breaker.admit(retry, now).map_err(|r| {
            Attempt::Refused(match r {
                breaker::Refusal::Open { retry_after_ms } => {
                    ProxyError::CircuitOpen { upstream: name(), retry_after_secs: retry_after_ms.div_ceil(1000).max(1) }
                }
                breaker::Refusal::Overloaded(limit) => ProxyError::Overloaded { upstream: name(), limit },
            })
        })?;
        let ctx = balancer::PickContext { headers: &out.headers, client_ip: limits.client_ip };
        let (endpoint, _in_flight) = up
            .pick(&ctx, tried, now)
            .ok_or_else(|| Attempt::Refused(ProxyError::NoHealthyEndpoint { upstream: name() }))?;
        let req = out.request(up, endpoint, last)?;

        // The attempt's time limit: the per-try limit, within what is left of the request's.
        let left = limits.deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let budget = match (limits.per_try.map(|d| d.to_std()), left) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let call = up.client.request(req);
        let result = match budget {
            Some(d) => match tokio::time::timeout(d, call).await {
                Ok(r) => r,
                Err(_) => {
                    let after = if left == budget { limits.request_timeout } else { limits.per_try };
                    permit.failure();
                    up.endpoint_result(endpoint, true);
                    let e = ProxyError::Timeout { upstream: name(), after_ms: after.map_or(0, |d| d.as_millis()) };
                    return Err(Attempt::Failed(e, retry::Failure::Timeout, endpoint));
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
                up.endpoint_result(endpoint, failed);
                Ok((resp, endpoint))
            }
            Err(e) => {
                if body::is_too_large(&e) {
                    return Err(Attempt::Fatal(ProxyError::BodyTooLarge { limit: limits.body_limit }));
                }
                if let Some(l) = connlimit::ConnLimit::find(&e) {
                    metrics::counter!("raftgate_upstream_overflow_total", "upstream" => name(), "limit" => l.name())
                        .increment(1);
                    return Err(Attempt::Refused(ProxyError::Overloaded { upstream: name(), limit: l.name() }));
                }
                permit.failure();
                up.endpoint_result(endpoint, true);
                let reason = error_chain(&e);
                Err(if e.is_connect() {
                    Attempt::Failed(
                        ProxyError::UpstreamUnavailable { upstream: name(), reason },
                        retry::Failure::Connect,
                        endpoint,
                    )
                } else {
                    Attempt::Failed(
                        ProxyError::BadGateway { upstream: name(), reason },
                        retry::Failure::Reset,
                        endpoint,
                    )
                })
            }
        }
    }
}

/// Requests whose body is at most this large (or has none) are read in full first when a
/// retry or an upstream fallback may need to send them again.
const REPLAY_BUFFER: u64 = 64 * 1024;

/// How an attempt went wrong.
#[derive(Debug)]
enum Attempt {
    /// Not sent: the breaker is open, a limit is reached, or no endpoint is available.
    Refused(ProxyError),
    /// Sent to `endpoint` and failed.
    Failed(ProxyError, retry::Failure, usize),
    /// The request itself is at fault; nothing to retry.
    Fatal(ProxyError),
}

impl Attempt {
    fn error(&self) -> &ProxyError {
        match self {
            Attempt::Refused(e) | Attempt::Failed(e, _, _) | Attempt::Fatal(e) => e,
        }
    }

    fn into_error(self) -> ProxyError {
        match self {
            Attempt::Refused(e) | Attempt::Failed(e, _, _) | Attempt::Fatal(e) => e,
        }
    }
}

/// The time limits and facts every attempt of one request shares.
#[derive(Debug)]
struct AttemptLimits {
    /// When the whole request (`timeouts.request`) runs out.
    deadline: Option<Instant>,
    /// `timeouts.backendRequest` and `retry.perTryTimeout`, the shorter.
    per_try: Option<schemas::Duration>,
    request_timeout: Option<schemas::Duration>,
    client_ip: std::net::IpAddr,
    body_limit: u64,
}

/// The request as every attempt sends it, minus the endpoint.
#[derive(Debug)]
struct Outgoing {
    method: http::Method,
    headers: http::HeaderMap,
    path_and_query: http::uri::PathAndQuery,
    body: Outbound,
}

#[derive(Debug)]
enum Outbound {
    /// The client's body, streamed; gone once sent.
    Streaming(Option<ReqBody>),
    /// Read in full, sent as often as needed.
    Buffered(Bytes),
}

impl Outgoing {
    /// Whether another attempt can still send the body.
    fn replayable(&self) -> bool {
        !matches!(self.body, Outbound::Streaming(None))
    }

    /// The request for endpoint `endpoint` of `up`. `last`: no attempt follows, so the
    /// headers can be moved instead of copied.
    fn request(&mut self, up: &upstream::Upstream, endpoint: usize, last: bool) -> Result<Request<ReqBody>, Attempt> {
        let bad = || Attempt::Fatal(ProxyError::BadRequest("the request target cannot be forwarded"));
        let uri = Uri::builder()
            .scheme(up.scheme.clone())
            .authority(up.authorities[endpoint].clone())
            .path_and_query(self.path_and_query.clone())
            .build()
            .map_err(|_| bad())?;
        let body = match &mut self.body {
            Outbound::Streaming(b) => b.take().ok_or_else(bad)?,
            Outbound::Buffered(b) => ReqBody::buffered(b.clone()),
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = if last { std::mem::take(&mut self.headers) } else { self.headers.clone() };
        // The upstream connection's protocol is the pool's business, not the client's.
        *req.version_mut() = Version::HTTP_11;
        if up.spec.protocol == schemas::snapshot::UpstreamProtocol::Http2 {
            *req.version_mut() = Version::HTTP_2;
            req.headers_mut().remove(header::HOST);
        }
        Ok(req)
    }
}

fn version_supports_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
}

fn class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// The request's host, lower-case and without port, and the port if one was given.
fn request_host<'a>(
    uri: &'a Uri,
    host_header: Option<&'a HeaderValue>,
) -> Result<(Cow<'a, str>, Option<u16>), ProxyError> {
    let raw = match uri.authority() {
        Some(a) => a.as_str(),
        None => {
            let v = host_header.ok_or(ProxyError::MissingHost)?;
            v.to_str().map_err(|_| ProxyError::BadRequest("invalid Host header"))?
        }
    };
    // `host[:port]` or `[v6]:port`; the port must be digits.
    let (host, port) = match raw.rfind(':') {
        Some(i) if !raw[i..].contains(']') => {
            let port =
                raw[i + 1..].parse::<u16>().map_err(|_| ProxyError::BadRequest("invalid port in Host header"))?;
            (&raw[..i], Some(port))
        }
        _ => (raw, None),
    };
    let host = host.trim_end_matches('.');
    if host.is_empty() || host.bytes().any(|b| b.is_ascii_whitespace() || b == b'/' || b == b'@') {
        return Err(ProxyError::BadRequest("invalid Host header"));
    }
    Ok(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        (Cow::Owned(host.to_ascii_lowercase()), port)
    } else {
        (Cow::Borrowed(host), port)
    })
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

/// 128 random bits as 32 hex digits.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    let bits = fastrand::u128(..);
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((bits >> (i * 4)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).expect("hex is a valid header value")
}
