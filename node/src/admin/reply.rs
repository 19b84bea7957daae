//! Plain HTTP answers of the admin listener (probes, metrics, status, the dashboard).

use http::{header, Response, StatusCode};

/// Responses of the admin listener: tonic's boxed body carries both kinds.
pub type AdminBody = tonic::body::Body;

pub fn text(status: StatusCode, body: String, ctype: &'static str) -> Response<AdminBody> {
    let mut r = Response::new(AdminBody::new(http_body_util::Full::new(bytes::Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ctype));
    r
}

pub fn json(status: StatusCode, body: serde_json::Value) -> Response<AdminBody> {
    text(status, format!("{body}\n"), "application/json")
}
