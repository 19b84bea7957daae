//! External authorization over HTTP: the request's method, path, host and chosen headers
//! go to the policy's service (no body); a 2xx lets the request through with the headers
//! the service names copied onto it, anything else is the client's answer (its status, and
//! its `WWW-Authenticate` or `Location`). A service that cannot answer (down, timed out, a
//! 5xx) refuses the request with 503 unless the policy fails open.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::Empty;
use schemas::snapshot::ExtAuthSpec;

use super::jwks::FetchClient;

#[derive(Debug)]
pub struct ExtAuth {
    base: Uri,
    all_headers: bool,
    to_auth: Vec<HeaderName>,
    to_backend: Vec<HeaderName>,
    timeout: Duration,
    fail_open: bool,
    client: FetchClient,
}

/// What the service said.
#[derive(Debug)]
pub enum Verdict {
    /// Through, with these headers for the upstream.
    Allow(Vec<(HeaderName, HeaderValue)>),
    /// The service's refusal: its status and the headers passed to the client.
    Deny(StatusCode, HeaderMap),
    /// The service could not be asked; the policy refuses (fail closed).
    Unavailable,
}

impl ExtAuth {
    pub fn build(spec: &ExtAuthSpec, client: FetchClient) -> anyhow::Result<Self> {
        let names = |v: &[String]| v.iter().filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok()).collect();
        Ok(ExtAuth {
            base: spec.url.parse()?,
            all_headers: spec.headers_to_ext_auth.iter().any(|h| h == "*"),
            to_auth: names(&spec.headers_to_ext_auth),
            to_backend: names(&spec.headers_to_backend),
            timeout: Duration::from_millis(spec.timeout.as_millis()),
            fail_open: spec.fail_open,
            client,
        })
    }

    pub async fn check<B>(&self, req: &Request<B>, host: &str, client_ip: IpAddr, https: bool) -> Verdict {
        let ask = match self.request(req, host, client_ip, https) {
            Some(r) => r,
            None => return self.unavailable("the check request could not be built"),
        };
        let resp = match tokio::time::timeout(self.timeout, self.client.request(ask)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return self.unavailable(&e.to_string()),
            Err(_) => return self.unavailable("timed out"),
        };
        let status = resp.status();
        if status.is_success() {
            let h = resp.headers();
            let add = self.to_backend.iter().filter_map(|n| h.get(n).map(|v| (n.clone(), v.clone()))).collect();
            return Verdict::Allow(add);
        }
        if status.is_server_error() {
            return self.unavailable(&format!("status {status}"));
        }
        let mut pass = HeaderMap::new();
        for n in [header::WWW_AUTHENTICATE, header::LOCATION] {
            if let Some(v) = resp.headers().get(&n) {
                pass.insert(n, v.clone());
            }
        }
        Verdict::Deny(status, pass)
    }

    fn unavailable(&self, why: &str) -> Verdict {
        tracing::warn!(service = %self.base, why, fail_open = self.fail_open, "external authorization unavailable");
        if self.fail_open {
            Verdict::Allow(Vec::new())
        } else {
            Verdict::Unavailable
        }
    }

    fn request<B>(
        &self,
        req: &Request<B>,
        host: &str,
        client_ip: IpAddr,
        https: bool,
    ) -> Option<Request<Empty<Bytes>>> {
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let base = self.base.path().trim_end_matches('/');
        let target = format!("{}://{}{base}{pq}", self.base.scheme_str()?, self.base.authority()?);
        let mut b = Request::builder().method(req.method()).uri(target);
        for (name, value) in req.headers() {
            let framing = name == header::HOST || name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING;
            if (self.all_headers || self.to_auth.contains(name)) && !framing {
                b = b.header(name, value);
            }
        }
        b.header("x-forwarded-for", client_ip.to_string())
            .header("x-forwarded-proto", if https { "https" } else { "http" })
            .header("x-forwarded-host", host)
            .header("x-forwarded-method", req.method().as_str())
            .header("x-forwarded-uri", pq)
            .body(Empty::new())
            .ok()
    }
}
