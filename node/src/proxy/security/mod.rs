//! Phase `admit`, identity and access: a route's `SecurityPolicy` applied to a request,
//! after the redirect (which needs no identity) and before the body limit and the rate
//! limit (which may key on the consumer found here).
//!
//! In order: a CORS preflight is answered (it carries no credentials); the client's copies
//! of the identity headers are dropped; the request must present credentials of one of the
//! policy's methods (`apikey`, `basic`), which name its consumer; then the authorization
//! rules (`authz`) allow or deny. Every refusal is a `ProxyError` (401 with the challenges,
//! 403), counted per route and reason in `raftgate_auth_denied_total`.

pub mod apikey;
pub mod authz;
pub mod basic;
pub mod cors;
pub mod extauth;
pub mod jwks;
pub mod jwt;
pub mod policy;

use http::{HeaderValue, Request};

use super::context::{Downstream, RequestCtx, Stop};
use super::error::{Denial, ProxyError};
pub use policy::Security;

/// Applies the rule's policy, if it has one. `client` is the request's real client address.
pub(crate) async fn admit<B>(
    security: Option<&Security>,
    down: &Downstream,
    host: &str,
    req: &mut Request<B>,
    ctx: &mut RequestCtx,
) -> Result<(), Stop> {
    let Some(sec) = security else { return Ok(()) };
    if let Some(cors) = &sec.cors {
        match cors.check(req) {
            cors::Verdict::NotCors => {}
            cors::Verdict::Forward(reply) => {
                ctx.cors_vary = true;
                ctx.cors = reply;
            }
            cors::Verdict::Preflight(answer) => return Err(Stop::Answer(answer)),
            cors::Verdict::Refused => return Err(deny(sec, Denial::CorsRefused).into()),
        }
    }
    for h in &sec.identity_headers {
        req.headers_mut().remove(h);
    }
    let authenticated = if let Some(jwt) = sec.jwt.as_ref().filter(|j| j.presented(req)) {
        let (verified, cut) = jwt.authenticate(req).await;
        if let Some(uri) = cut {
            ctx.forward_query = Some(uri.query().unwrap_or("").to_string());
            *req.uri_mut() = uri.clone();
            ctx.redacted_uri = Some(uri);
        }
        let verified = verified.map_err(|d| deny(sec, d))?;
        let consumer: Option<std::sync::Arc<str>> =
            verified.claim("sub").and_then(|s| s.as_str()).map(std::sync::Arc::from);
        ctx.jwt = Some(verified);
        consumer.map(|c| (http::HeaderName::from_static(schemas::snapshot::CONSUMER_HEADER), c))
    } else if let Some(keys) = sec.api_keys.as_ref().filter(|k| k.presented(req)) {
        let mut cut = apikey::QueryCut::default();
        let found = keys.authenticate(req, &mut cut);
        (ctx.redacted_uri, ctx.forward_query) = (cut.redacted_uri, cut.forward_query);
        Some(found.map_err(|d| deny(sec, d))?)
    } else if let Some(basic) = sec.basic.as_ref().filter(|b| b.presented(req)) {
        Some(basic.authenticate(req).await.map_err(|d| deny(sec, d))?)
    } else if sec.challenge.is_some() {
        return Err(deny(sec, Denial::CredentialsMissing).into());
    } else {
        None
    };
    if let Some((header, consumer)) = authenticated {
        if let Ok(v) = HeaderValue::from_str(&consumer) {
            req.headers_mut().insert(header, v);
        }
        ctx.consumer = Some(consumer);
    }
    if let Some(ext) = &sec.ext_auth {
        match ext.check(req, host, down.client, down.conn.https).await {
            extauth::Verdict::Allow(add) => {
                for (name, value) in add {
                    req.headers_mut().insert(name, value);
                }
            }
            extauth::Verdict::Deny(status, headers) => return Err(ProxyError::ExtAuthDenied { status, headers }.into()),
            extauth::Verdict::Unavailable => return Err(deny(sec, Denial::ExtAuthUnavailable).into()),
        }
    }
    if let Some(authz) = &sec.authz {
        if let Some(rule) = authz.denies(down.client, ctx.consumer.as_deref(), &down.method, ctx.jwt.as_ref()) {
            ctx.denied_by = rule;
            return Err(deny(sec, Denial::Forbidden).into());
        }
    }
    Ok(())
}

fn deny(sec: &Security, d: Denial) -> ProxyError {
    let challenge = match d {
        Denial::CredentialsMissing | Denial::CredentialsInvalid => sec.challenge.clone(),
        _ => None,
    };
    ProxyError::Denied { reason: d, challenge }
}
