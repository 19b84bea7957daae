//! The request as every attempt sends it, minus the endpoint: built once by `prepare`, then
//! turned into one `http::Request` per attempt.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header;
use http::{Request, Uri, Version};
use schemas::snapshot::UpstreamProtocol;

use super::body::ReqBody;
use super::endpoints::Endpoint;
use super::upstream::Upstream;

#[derive(Debug)]
pub struct Outgoing {
    /// The index of the rule's backend the request is for.
    pub backend: usize,
    pub method: http::Method,
    pub headers: http::HeaderMap,
    pub path_and_query: http::uri::PathAndQuery,
    pub body: Outbound,
    pub limits: AttemptLimits,
    /// The rule's retry policy applies to this request (its method allows it and it is no
    /// upgrade).
    pub may_retry: bool,
    /// The endpoint of the backend's upstream that the request's session names.
    pub prefer: Option<Arc<Endpoint>>,
    /// The rule's mirrors that get a copy (a bit each, by index; `mirror::select`).
    pub mirrors: u32,
}

#[derive(Debug)]
pub enum Outbound {
    /// The client's body, streamed; gone once sent.
    Streaming(Option<ReqBody>),
    /// Read in full, sent as often as needed.
    Buffered(Bytes),
}

/// The time limits and facts every attempt of one request shares.
#[derive(Debug)]
pub struct AttemptLimits {
    /// When the whole request (`timeouts.request`) runs out.
    pub deadline: Option<Instant>,
    /// `timeouts.backendRequest` and `retry.perTryTimeout`, the shorter.
    pub per_try: Option<schemas::Duration>,
    pub request_timeout: Option<schemas::Duration>,
    pub client_ip: IpAddr,
    pub body_limit: u64,
}

/// Why the request cannot be sent at all.
#[derive(Debug)]
pub struct Unsendable;

impl Outgoing {
    /// Whether another attempt can still send the body.
    pub fn replayable(&self) -> bool {
        !matches!(self.body, Outbound::Streaming(None))
    }

    /// The request for endpoint `endpoint` of `up`. `last`: no attempt follows, so the
    /// headers can be moved instead of copied.
    pub fn request(&mut self, up: &Upstream, endpoint: &Endpoint, last: bool) -> Result<Request<ReqBody>, Unsendable> {
        let uri = Uri::builder()
            .scheme(up.scheme.clone())
            .authority(endpoint.authority.clone())
            .path_and_query(self.path_and_query.clone())
            .build()
            .map_err(|_| Unsendable)?;
        let body = match &mut self.body {
            Outbound::Streaming(b) => b.take().ok_or(Unsendable)?,
            Outbound::Buffered(b) => ReqBody::buffered(b.clone()),
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = if last { std::mem::take(&mut self.headers) } else { self.headers.clone() };
        // The upstream connection's protocol is the pool's business, not the client's.
        *req.version_mut() = Version::HTTP_11;
        if up.spec.protocol == UpstreamProtocol::Http2 {
            *req.version_mut() = Version::HTTP_2;
            req.headers_mut().remove(header::HOST);
        }
        Ok(req)
    }
}
