//! Phase `admit`, first step: a rule with a `RequestRedirect` filter answers with the
//! redirect itself and never reaches an upstream.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use schemas::snapshot::FilterSpec;

use super::body::full;
use super::context::{ConnInfo, Stop};
use super::error::ProxyError;
use super::filters::modify_path;
use super::route::Routed;

/// Answers with the rule's redirect, if it has one.
pub fn admit(route: &Routed<'_>, conn: &ConnInfo) -> Result<(), Stop> {
    let Some(filter) = &route.rule.filters.redirect else { return Ok(()) };
    match location(filter, route, conn) {
        Some((status, location)) => {
            let mut resp = Response::new(full(bytes::Bytes::new()));
            *resp.status_mut() = status;
            resp.headers_mut().insert(header::LOCATION, location);
            Err(Stop::Answer(Box::new(resp)))
        }
        None => Err(ProxyError::BadRequest("the redirect target is not a valid URL").into()),
    }
}

/// The status and `Location` of a `RequestRedirect` filter for this request.
fn location(filter: &FilterSpec, route: &Routed<'_>, conn: &ConnInfo) -> Option<(StatusCode, HeaderValue)> {
    let FilterSpec::RequestRedirect { scheme, hostname, path, port, status_code } = filter else { return None };
    let req_scheme = if conn.https { "https" } else { "http" };
    let host = hostname.as_deref().unwrap_or(&route.host);
    // Gateway API: with a scheme given, the scheme's well-known port; otherwise the
    // listener's port. Well-known ports are left out of the URL.
    let port = port.or(if scheme.is_some() { None } else { Some(conn.local_port) });
    let scheme = scheme.as_deref().unwrap_or(req_scheme);
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = port.filter(|p| *p != default_port);
    let new_path = match path {
        Some(m) => modify_path(m, &route.path, route.path_kind, route.matched_path),
        None => route.path.to_string(),
    };
    let mut location = format!("{scheme}://{host}");
    if let Some(p) = port {
        location.push_str(&format!(":{p}"));
    }
    location.push_str(&new_path);
    if let Some(q) = route.query {
        location.push('?');
        location.push_str(q);
    }
    Some((StatusCode::from_u16(*status_code).unwrap_or(StatusCode::FOUND), HeaderValue::from_str(&location).ok()?))
}
