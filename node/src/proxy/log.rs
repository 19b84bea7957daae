//! Phase `log`, last for every request: the request's metrics, its span's end and its
//! access-log line.
//!
//! A rule's counter and histogram handles are registered by its first request and kept, so
//! this only increments atomics; the access log (`accesslog`) formats its line only when it is on.

use http::StatusCode;

use super::accesslog::{AccessLog, Entry};
use super::context::{Downstream, RequestCtx};
use super::runtime::Runtime;

pub fn record(
    rt: &Runtime,
    down: &Downstream,
    ctx: &mut RequestCtx,
    status: StatusCode,
    access_log: Option<&AccessLog>,
) {
    let elapsed = down.start.elapsed();
    let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
    match (&ctx.rule, ctx.backend) {
        (Some(rule), Some(b)) => {
            rule.latency().record(elapsed.as_secs_f64());
            rule.backends[b].requests(&rule.route)[class].increment(1);
        }
        (Some(rule), None) => {
            rule.latency().record(elapsed.as_secs_f64());
            rule.answered_here()[class].increment(1);
        }
        (None, _) => rt.unrouted[class].increment(1),
    }
    if let Some(trace) = ctx.trace.take() {
        let upstream = ctx.upstream.as_ref().map_or("", |u| u.spec.name.as_str());
        let route = ctx.rule.as_ref().map_or("", |r| &*r.route);
        trace.finish(status.as_u16(), route, upstream, ctx.attempts, ctx.error);
    }
    if let Some(log) = access_log {
        let upstream = ctx.upstream.as_ref();
        log.write(&Entry {
            request_id: down.request_id.to_str().unwrap_or(""),
            client: down.client,
            method: &down.method,
            uri: ctx.redacted_uri.as_ref().unwrap_or(&down.uri),
            version: down.version,
            status: status.as_u16(),
            route: ctx.rule.as_ref().map_or("", |r| &*r.route),
            upstream: upstream.map_or("", |u| u.spec.name.as_str()),
            endpoint: ctx.endpoint.as_ref().map_or("", |e| e.address.as_str()),
            consumer: ctx.consumer.as_deref().unwrap_or(""),
            attempts: ctx.attempts,
            fallback: ctx.fallback.is_some(),
            error: ctx.error.unwrap_or(""),
            duration_ms: elapsed.as_secs_f64() * 1000.0,
        });
    }
}
