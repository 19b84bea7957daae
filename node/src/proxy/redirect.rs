//! Phase `admit`, first step: a plain-HTTP request to a route with `httpsRedirect`, or
//! any request to a rule with a `RequestRedirect` filter, is answered with the redirect
//! itself and never reaches an upstream.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use schemas::snapshot::{FilterSpec, HttpsRedirectSpec};

use super::body::full;
use super::context::{ConnInfo, Stop};
use super::error::ProxyError;
use super::filters::modify_path;
use super::route::Routed;

/// Answers with the route's HTTPS redirect (plain HTTP only) or the rule's redirect, if
/// it has one.
pub fn admit(route: &Routed<'_>, conn: &ConnInfo) -> Result<(), Stop> {
    let found = match (&route.rule.https_redirect, &route.rule.filters.redirect) {
        (Some(to), _) if !conn.https => Some(to_https(to, route)),
        (_, Some(filter)) => Some(location(filter, route, conn)),
        _ => None,
    };
    match found {
        None => Ok(()),
        Some(Some((status, location))) => {
            let mut resp = Response::new(full(bytes::Bytes::new()));
            *resp.status_mut() = status;
            resp.headers_mut().insert(header::LOCATION, location);
            Err(Stop::Answer(Box::new(resp)))
        }
        Some(None) => Err(ProxyError::BadRequest("the redirect target is not a valid URL").into()),
    }
}

/// The same request over HTTPS: the routed host, the route's port (443 left out), the
/// path and query.
fn to_https(to: &HttpsRedirectSpec, route: &Routed<'_>) -> Option<(StatusCode, HeaderValue)> {
    let mut location = format!("https://{}", route.host);
    if let Some(p) = to.port {
        location.push_str(&format!(":{p}"));
    }
    location.push_str(&route.path);
    if let Some(q) = route.query {
        location.push('?');
        location.push_str(q);
    }
    Some((StatusCode::from_u16(to.status_code).ok()?, HeaderValue::from_str(&location).ok()?))
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
