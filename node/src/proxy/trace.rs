//! A request's spans, when tracing is on (`telemetry`): a server span from the moment the
//! request is read to its log phase, a child of the caller's `traceparent` when it sent
//! one; and a client span per upstream attempt, whose context the upstream receives as
//! `traceparent` (with the caller's `tracestate`). Off, none of this is called.
//!
//! Most requests are not sampled, and they cost next to nothing: the decision is made
//! here, before the SDK is asked for anything. A caller's unsampled `traceparent` is
//! forwarded as it came (the upstream continues the caller's decision); a request without
//! one that is not sampled here goes on without one (the services behind make their own
//! decision, as they would without the gateway). Only sampled requests get spans.

use std::sync::Arc;

use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};

use super::attempt::{Attempt, AttemptResult};
use crate::telemetry::Telemetry;

/// The server span of one request.
#[derive(Debug)]
pub struct RequestTrace {
    telemetry: Arc<Telemetry>,
    cx: Context,
    method: http::Method,
}

static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// Decides whether the request is sampled; if so, starts its server span under the
/// caller's trace context.
pub fn start(
    telemetry: &Arc<Telemetry>,
    method: &http::Method,
    path: &str,
    headers: &mut http::HeaderMap,
) -> Option<RequestTrace> {
    let parent = match headers.get(&TRACEPARENT) {
        Some(_) => {
            let parent = telemetry.extract(headers);
            let sc = parent.span().span_context().clone();
            if sc.is_valid() && !sc.is_sampled() {
                return None;
            }
            if !sc.is_valid() {
                // Malformed: as if absent (the W3C rule), and not passed on.
                headers.remove(&TRACEPARENT);
                headers.remove("tracestate");
                return root(telemetry, method, path);
            }
            parent
        }
        None => return root(telemetry, method, path),
    };
    Some(server_span(telemetry, method, path, parent))
}

/// A request that would start a trace here: sampled at `--trace-sampling`.
fn root(telemetry: &Arc<Telemetry>, method: &http::Method, path: &str) -> Option<RequestTrace> {
    (fastrand::f64() < telemetry.sampling).then(|| server_span(telemetry, method, path, Context::new()))
}

fn server_span(telemetry: &Arc<Telemetry>, method: &http::Method, path: &str, parent: Context) -> RequestTrace {
    let span = telemetry
        .tracer
        .span_builder(method.to_string())
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("url.path", path.to_string()),
        ])
        .start_with_context(&telemetry.tracer, &parent);
    RequestTrace { telemetry: telemetry.clone(), cx: parent.with_span(span), method: method.clone() }
}

impl RequestTrace {
    /// Starts the client span of an attempt at `upstream` and writes its context into the
    /// request's headers. `attempt`: 1 for the first.
    pub fn attempt(&self, upstream: &str, attempt: u32, headers: &mut http::HeaderMap) -> Context {
        let span = self
            .telemetry
            .tracer
            .span_builder(format!("upstream {upstream}"))
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("raftgate.upstream", upstream.to_string()),
                KeyValue::new("raftgate.attempt", i64::from(attempt)),
            ])
            .start_with_context(&self.telemetry.tracer, &self.cx);
        let cx = self.cx.with_span(span);
        self.telemetry.inject(&cx, headers);
        cx
    }

    /// Ends the request's span: the route, the upstream, the status, how many attempts.
    pub fn finish(self, status: u16, route: &str, upstream: &str, attempts: u32, error: Option<&'static str>) {
        let span = self.cx.span();
        if !route.is_empty() {
            span.update_name(format!("{} {route}", self.method));
        }
        span.set_attributes([
            KeyValue::new("http.route", route.to_string()),
            KeyValue::new("raftgate.upstream", upstream.to_string()),
            KeyValue::new("http.response.status_code", i64::from(status)),
            KeyValue::new("raftgate.retries", i64::from(attempts.saturating_sub(1))),
        ]);
        if status >= 500 {
            span.set_status(Status::error(error.unwrap_or("server error")));
        }
        span.end();
    }
}

/// Ends an attempt's client span with its outcome.
pub fn attempt_end(cx: Context, result: &AttemptResult) {
    let span = cx.span();
    match result {
        Ok((resp, endpoint)) => {
            let status = resp.status().as_u16();
            span.set_attributes([
                KeyValue::new("server.address", endpoint.address.clone()),
                KeyValue::new("http.response.status_code", i64::from(status)),
            ]);
            if status >= 500 {
                span.set_status(Status::error("upstream answered 5xx"));
            }
        }
        Err(a) => {
            if let Attempt::Failed(_, _, endpoint) = a {
                span.set_attribute(KeyValue::new("server.address", endpoint.address.clone()));
            }
            span.set_status(Status::error(a.error().to_string()));
        }
    }
    span.end();
}
