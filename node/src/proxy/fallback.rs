//! Phase `fallback`: what a rule answers when its upstream cannot (no endpoint available,
//! breaker open, overloaded, or a 502/503/504 from the gateway or the upstream): a static
//! answer, or one attempt on another upstream.

use http::{HeaderName, HeaderValue, Response};

use super::attempt::{self, AttemptResult};
use super::body::{full, RespBody};
use super::context::{Answer, RequestCtx, Stop};
use super::outgoing::Outgoing;
use super::retry::is_gateway_error;
use super::runtime::{Fallback, RuleRuntime, StaticAnswer};

pub static X_RAFTGATE_FALLBACK: HeaderName = HeaderName::from_static("x-raftgate-fallback");

/// Turns the attempts' result into the answer, through the rule's fallback when the
/// upstream could not answer. Records the answering endpoint (and upstream) in `ctx`.
pub async fn apply(
    rule: &RuleRuntime,
    out: &mut Outgoing,
    mut result: AttemptResult,
    ctx: &mut RequestCtx,
) -> Result<Answer, Stop> {
    let failed = match &result {
        Ok((resp, _)) => is_gateway_error(resp.status()),
        Err(a) => is_gateway_error(a.error().status()),
    };
    if let (true, Some(fallback)) = (failed, &rule.fallback) {
        let why = match &result {
            Ok(_) => "upstream-error",
            Err(a) => a.error().code(),
        };
        ctx.fallback = Some(why);
        rule.fallbacks().increment(1);
        match fallback {
            // The upstream's answer, if any, is dropped unread.
            Fallback::Static(spec) => return Err(Stop::Answer(Box::new(static_response(spec, why)))),
            Fallback::Upstream(other) if out.replayable() => {
                ctx.upstream = Some(other.clone());
                result = attempt::once(other, out, false, &[], true).await;
            }
            // The body was streamed to the first upstream and cannot be sent again.
            Fallback::Upstream(_) => {}
        }
    }
    match result {
        Ok((resp, endpoint)) => {
            ctx.endpoint = Some(endpoint);
            Ok(Answer::Upstream(resp))
        }
        Err(a) => Err(Stop::Error(a.into_error())),
    }
}

/// The static answer of a `fallback: { status, headers, body }`.
fn static_response(answer: &StaticAnswer, why: &'static str) -> Response<RespBody> {
    let mut resp = Response::new(full(answer.body.clone()));
    *resp.status_mut() = answer.status;
    let h = resp.headers_mut();
    for (n, v) in &answer.headers {
        h.append(n.clone(), v.clone());
    }
    h.insert(X_RAFTGATE_FALLBACK.clone(), HeaderValue::from_static(why));
    resp
}
