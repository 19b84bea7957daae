//! What one request carries through the phases: the facts the client sent (`Downstream`,
//! fixed once the request arrives) and what the phases decided (`RequestCtx`, filled in as
//! they run and read at the end by the response filter and the log).
//!
//! Each field of `RequestCtx` is written by one phase, named on the field, so a reader can
//! tell where a value comes from without following the request through every file.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::body::RespBody;
use super::clientip::TrustedProxies;
use super::endpoints::Endpoint;
use super::error::ProxyError;
use super::ratelimit::bucket::Decision;
use super::runtime::RuleRuntime;
use super::upstream::Upstream;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Node-level settings of the data plane.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: u64,
    /// Where and how each request's access-log line is written; `None`: no access log.
    pub access_log: Option<Arc<super::accesslog::AccessLog>>,
    /// Spans for requests and attempts (`--otlp-endpoint`); `None`: no tracing work at all.
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    /// What `%2F`, `%5C` and `\` in a path lead to.
    pub escaped_slashes: super::path::EscapedSlashes,
    /// The protocols a client may upgrade to (`Upgrade:` tokens, lower case); an
    /// `Upgrade` naming anything else is dropped and the request proxied as a plain one.
    pub upgrades: Vec<String>,
    /// A tunnel (an upgraded connection) that carries no byte either way for this long is
    /// closed.
    pub tunnel_idle_timeout: std::time::Duration,
    /// A request body that sends nothing for this long is abandoned.
    pub body_timeout: std::time::Duration,
    /// Load balancers and proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<TrustedProxies>,
}

/// What holds a client connection's place under the listener's caps (all connections,
/// connections per IP); a tunnel keeps a clone, so an upgraded connection counts until it
/// ends. Opaque to the proxy.
pub type ConnSlot = Arc<dyn std::any::Any + Send + Sync>;

/// Facts about the client connection a request arrived on.
#[derive(Clone)]
pub struct ConnInfo {
    /// The connection's source: the TCP peer, or the client a PROXY protocol header named.
    pub peer: SocketAddr,
    pub https: bool,
    /// The listener's port, for redirects that keep it.
    pub local_port: u16,
    pub slot: Option<ConnSlot>,
    /// The client certificate the TLS handshake verified, as `x-forwarded-client-cert`
    /// shows it to upstreams.
    pub client_cert: Option<HeaderValue>,
    /// The SNI name the TLS connection was made for (`None`: plain, or no SNI).
    pub sni: Option<Arc<str>>,
    /// `peer`'s address as `X-Forwarded-For` names it, formatted once per connection
    /// (formatting an address is about 1,300 instructions, 3 % of a proxied request).
    pub peer_header: HeaderValue,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, https: bool, local_port: u16, slot: Option<ConnSlot>) -> Self {
        let ip = super::clientip::canonical(peer.ip()).to_string();
        let peer_header = super::filters::owned_value(ip).expect("an address is a valid header value");
        Self { peer, https, local_port, slot, client_cert: None, sni: None, peer_header }
    }
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnInfo").field("peer", &self.peer).field("https", &self.https).finish_non_exhaustive()
    }
}

/// What the client sent, kept aside so every phase and the log can read it after the
/// request itself has been taken apart (cloning a `Uri` or a header value only bumps
/// reference counts).
#[derive(Debug)]
pub struct Downstream {
    pub conn: ConnInfo,
    /// The real client: `conn.peer`, or from a trusted peer the client `X-Forwarded-For`
    /// names (`clientip`). Rate limits, authorization and the access log use it.
    pub client: IpAddr,
    /// `conn.peer` is a trusted proxy, whose `X-Forwarded-*` headers are kept and extended.
    pub peer_trusted: bool,
    pub start: Instant,
    /// From `x-request-id` when the client sent a usable one, else generated; the request
    /// carries it upstream and every response carries it back.
    pub request_id: HeaderValue,
    pub method: Method,
    pub uri: Uri,
    /// The client's protocol, which frames the response whatever the upstream spoke.
    pub version: Version,
    pub host_header: Option<HeaderValue>,
    /// How many Host headers the request carries (more than one is refused).
    pub host_headers: usize,
}

impl Downstream {
    /// Reads the request's facts and gives it a request id when it has none.
    pub fn new<B>(req: &mut Request<B>, conn: ConnInfo, trusted: &TrustedProxies) -> Self {
        let start = Instant::now();
        let request_id = match req.headers().get(&X_REQUEST_ID) {
            Some(v) if !v.is_empty() && v.len() <= 200 => v.clone(),
            _ => {
                let v = new_request_id();
                req.headers_mut().insert(X_REQUEST_ID.clone(), v.clone());
                v
            }
        };
        static XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
        let peer_trusted = !trusted.is_empty() && trusted.contains(conn.peer.ip());
        let client = if peer_trusted {
            trusted.client(conn.peer.ip(), req.headers().get_all(&XFF).iter())
        } else {
            super::clientip::canonical(conn.peer.ip())
        };
        Self {
            conn,
            client,
            peer_trusted,
            start,
            request_id,
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            host_header: req.headers().get(http::header::HOST).cloned(),
            host_headers: req.headers().get_all(http::header::HOST).iter().count(),
        }
    }
}

/// What the phases decided about one request.
#[derive(Debug, Default)]
pub struct RequestCtx {
    /// `route`: the rule serving the request.
    pub rule: Option<Arc<RuleRuntime>>,
    /// `route`: `Strict-Transport-Security` for the host, on HTTPS only.
    pub hsts: Option<http::HeaderValue>,
    /// `security::admit`: the consumer the request authenticated as.
    pub consumer: Option<Arc<str>>,
    /// `security::admit`: the request URI with credentials cut out, for the access log.
    pub redacted_uri: Option<Uri>,
    /// `security::admit`: the query to forward when a credential was cut out of it
    /// (empty: none is left).
    pub forward_query: Option<String>,
    /// `security::admit`: the verified JSON Web Token, when the request carried one.
    pub jwt: Option<super::security::jwt::Verified>,
    /// `security::admit`: the CORS headers an allowed cross-origin request's answer gets.
    pub cors: Option<super::security::cors::CorsReply>,
    /// `security::admit`: the request named an `Origin` on a CORS route (`Vary: Origin`).
    pub cors_vary: bool,
    /// `security::admit`: the authorization rule that denied the request, when one did.
    pub denied_by: Option<Arc<str>>,
    /// `ratelimit::admit`: the rate-limit verdict, when the rule is limited; its
    /// `RateLimit-*` headers go on every answer.
    pub rate: Option<Decision>,
    /// `cache::lookup` (admit), then `prepare` and the response filter: what the response
    /// cache decided, on a rule with `cache`.
    pub cache: Option<super::cache::state::CacheState>,
    /// `route`: the stored-answer target an unsafe request invalidates if it succeeds.
    pub invalidates: Option<u64>,
    /// `prepare`: the index of the chosen backend in the rule.
    pub backend: Option<usize>,
    /// `prepare`: the upstream the request is for (a fallback upstream replaces it).
    pub upstream: Option<Arc<Upstream>>,
    /// `prepare`: the session the request came with, on a rule with session persistence.
    pub session: Option<super::session::Found>,
    /// `prepare`: the client's `Accept-Encoding`, kept when the rule compresses answers.
    pub accept_encoding: Option<HeaderValue>,
    /// `prepare`: the client's side of a protocol upgrade (WebSocket), taken before the
    /// request is consumed and joined to the upstream's on a 101.
    pub client_upgrade: Option<OnUpgrade>,
    /// `send`: upstream attempts made (0 when none was sent).
    pub attempts: u32,
    /// `send` and `fallback`: the endpoint (of `upstream`) whose answer is returned.
    pub endpoint: Option<Arc<Endpoint>>,
    /// `fallback`: why the rule's fallback answered, when it did.
    pub fallback: Option<&'static str>,
    /// The code of the error the gateway answered with, when it did.
    pub error: Option<&'static str>,
    /// The request's spans, when tracing is on; ended by the `log` phase.
    pub trace: Option<super::trace::RequestTrace>,
}

/// How a phase ends a request early: with an answer of its own (a redirect, a static
/// fallback) or with an error, which `ProxyError::into_response` turns into one.
#[derive(Debug)]
pub enum Stop {
    /// Boxed: answers of this kind are rare, and `Stop` travels in every phase's `Result`.
    Answer(Box<Response<RespBody>>),
    Error(ProxyError),
}

impl From<ProxyError> for Stop {
    fn from(e: ProxyError) -> Self {
        Stop::Error(e)
    }
}

/// The response the phases produced, before the response filter.
#[derive(Debug)]
pub enum Answer {
    /// From an upstream: its headers describe the upstream connection and are filtered.
    Upstream(Response<Incoming>),
    /// Made by the gateway: an error, a redirect, a static fallback.
    Gateway(Response<RespBody>),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn down(id: Option<&str>) -> (Request<()>, Downstream) {
        let mut req = Request::builder().uri("/");
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        let mut req = req.body(()).unwrap();
        let conn = ConnInfo::new("127.0.0.1:1000".parse().unwrap(), false, 80, None);
        let d = Downstream::new(&mut req, conn, &TrustedProxies::default());
        (req, d)
    }

    #[test]
    fn a_request_keeps_its_id_or_gets_one() {
        let (req, d) = down(Some("req-1"));
        assert_eq!((d.request_id.to_str().unwrap(), &req.headers()[&X_REQUEST_ID]), ("req-1", &d.request_id));
        for bad in [Some(""), Some(&*"x".repeat(201)), None] {
            let (req, d) = down(bad);
            let id = d.request_id.to_str().unwrap();
            assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{bad:?} gets a generated id");
            assert_eq!(req.headers()[&X_REQUEST_ID], d.request_id, "which goes upstream with the request");
        }
        assert_ne!(down(None).1.request_id, down(None).1.request_id);
    }
}
