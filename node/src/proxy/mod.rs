//! The proxy engine: one request's life, top to bottom.
//!
//! `Proxy::handle` loads the current runtime once, then: request id → host and path →
//! route lookup → redirect (answered here) → body limit → backend and endpoint choice →
//! request filters and proxy headers → upstream call with timeouts (and the upgrade
//! hand-off for WebSockets) → response filters → metrics and access log. Every failure is
//! a `ProxyError`, turned into a response in exactly one place.

pub mod balancer;
pub mod body;
pub mod error;
pub mod filters;
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
use error::ProxyError;
use runtime::{Engine, Runtime};

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
        let mut resp = match self.forward(&rt, req, &uri, conn, &mut outcome).await {
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

        let backend_index = rule.pick_backend().ok_or_else(|| ProxyError::UpstreamUnavailable {
            upstream: String::new(),
            reason: "every backend of the rule has weight 0".into(),
        })?;
        outcome.backend = Some(backend_index);
        let upstream = rule.backends[backend_index].upstream.clone();
        outcome.upstream = Some(upstream.spec.name.clone());
        let ctx = balancer::PickContext { headers: req.headers(), client_ip: conn.peer.ip() };
        let (endpoint, _in_flight) = upstream.pick(&ctx);
        outcome.endpoint = Some(upstream.spec.endpoints[endpoint].address.clone());

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
        parts.uri = Uri::builder()
            .scheme(upstream.scheme.clone())
            .authority(upstream.authorities[endpoint].clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| ProxyError::BadRequest("the request target cannot be forwarded"))?;
        // The upstream connection's protocol is the pool's business, not the client's.
        parts.version = Version::HTTP_11;
        if upstream.spec.protocol == schemas::snapshot::UpstreamProtocol::Http2 {
            parts.version = Version::HTTP_2;
            parts.headers.remove(header::HOST);
        }
        let upstream_req = Request::from_parts(parts, ReqBody::limited(body, limit));

        let deadline = match (rule.request_timeout, rule.backend_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let call = upstream.client.request(upstream_req);
        let result = match deadline {
            Some(d) => match tokio::time::timeout(d.to_std(), call).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(ProxyError::Timeout { upstream: upstream.spec.name.clone(), after_ms: d.as_millis() })
                }
            },
            None => call.await,
        };
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => {
                if body::is_too_large(&e) {
                    return Err(ProxyError::BodyTooLarge { limit });
                }
                let reason = error_chain(&e);
                return Err(if e.is_connect() {
                    ProxyError::UpstreamUnavailable { upstream: upstream.spec.name.clone(), reason }
                } else {
                    ProxyError::BadGateway { upstream: upstream.spec.name.clone(), reason }
                });
            }
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
        Ok(Response::from_parts(parts, http_body_util::Either::Left(body)))
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
