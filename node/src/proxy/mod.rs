//! The proxy engine: one request's life, as an ordered list of phases.
//!
//! `Proxy::handle` loads the current runtime once and runs, top to bottom:
//!
//! 1. `route`: the host and path as routing sees them, and the rule that serves them;
//! 2. `admit`: the cheapest refusals first, before anything is read or sent: the rule's
//!    redirect (`redirect`), the security policy (CORS, authentication, authorization:
//!    `security`), the body limit (`bodylimit`), the rate limit (`ratelimit`); then the
//!    response cache (`cache`), which answers fresh hits;
//! 3. `prepare`: backend choice, hop-by-hop and proxy headers, request filters, the target,
//!    the body read in full when it may have to be sent again (`prepare`);
//! 4. `send`: copies to the rule's mirrors, on tasks of their own (`mirror`); attempts,
//!    each through the breaker, an endpoint pick and the call under its time limit
//!    (`attempt`), and the retry loop (`retry`);
//! 5. `fallback`: the rule's fallback when the upstream could not answer (`fallback`), and
//!    the upgrade hand-off for WebSockets (`upgrade`);
//! 6. `response_filter`: the one place that decorates every response (`response`);
//! 7. `log`: metrics and the access log (`log`).
//!
//! A phase may end the request early with a `Stop`: an answer of its own, or a
//! `ProxyError`, which `ProxyError::into_response` turns into a response (the only place
//! errors become responses). Per-request state lives in `context::RequestCtx`, each field
//! written by one phase. A new policy is one file with its phase function and one line
//! in `Proxy::process`; ARCHITECTURE.md says where each planned one goes.

pub mod accesslog;
pub(crate) mod attempt;
pub mod balancer;
pub mod body;
pub(crate) mod bodylimit;
pub mod breaker;
pub mod cache;
pub mod certs;
pub mod clientip;
pub mod clock;
pub(crate) mod compress;
pub mod connlimit;
pub(crate) mod context;
pub mod dns;
pub mod endpoints;
pub mod error;
pub(crate) mod fallback;
pub mod filters;
pub mod health;
pub(crate) mod log;
pub(crate) mod mirror;
pub(crate) mod outgoing;
pub mod outlier;
pub mod path;
pub(crate) mod prepare;
pub(crate) mod prober;
pub mod ratelimit;
pub(crate) mod redirect;
pub mod resolve;
pub(crate) mod response;
pub(crate) mod retry;
pub(crate) mod route;
pub mod router;
pub mod runtime;
pub mod security;
pub mod session;
pub mod tickets;
pub mod tls;
pub(crate) mod trace;
pub(crate) mod upgrade;
pub mod upstream;

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

pub use body::{full, RespBody};
use context::{Answer, Downstream, RequestCtx, Stop};
pub use context::{ConnInfo, ConnSlot, ProxySettings, X_REQUEST_ID};
use error::ProxyError;
use runtime::{Engine, Runtime};

#[derive(Debug)]
pub struct Proxy {
    pub engine: Arc<Engine>,
    /// The response cache (rules with `cache`), kept across configs.
    pub cache: Arc<cache::ResponseCache>,
    pub settings: ProxySettings,
}

impl Proxy {
    /// One request, start to finish. Every request, whatever answers it, goes through the
    /// response filter and the log.
    pub async fn handle(&self, mut req: Request<Incoming>, conn: ConnInfo) -> Response<RespBody> {
        let rt = self.engine.current();
        let down = Downstream::new(&mut req, conn, &self.settings.trusted_proxies);
        let mut ctx = RequestCtx::default();
        if let Some(t) = &self.settings.telemetry {
            ctx.trace = trace::start(t, &down.method, down.uri.path(), req.headers_mut());
        }
        let answer = match self.process(&rt, &down, &mut ctx, req).await {
            Ok(answer) => answer,
            Err(Stop::Answer(resp)) => Answer::Gateway(*resp),
            Err(Stop::Error(e)) => {
                ctx.error = Some(e.code());
                if e.status().is_server_error() {
                    tracing::warn!(request_id = down.request_id.to_str().unwrap_or(""), error = %e, "request failed");
                }
                Answer::Gateway(e.into_response(&down.request_id))
            }
        };
        let resp = response::filter(&down, &mut ctx, &self.cache, answer);
        log::record(&rt, &down, &mut ctx, resp.status(), self.settings.access_log.as_deref());
        resp
    }

    /// The phases that decide the answer, in order. Each line is one policy applying
    /// itself; the order is the cheapest refusal first, and nothing the client sent is
    /// consumed before the request is known to be forwardable.
    async fn process(
        &self,
        rt: &Runtime,
        down: &Downstream,
        ctx: &mut RequestCtx,
        mut req: Request<Incoming>,
    ) -> Result<Answer, Stop> {
        // route: the rule, or 404.
        let route = route::route(rt, down, &req, self.settings.escaped_slashes, ctx)?;
        let rule = route.rule;
        ctx.invalidates = cache::target(&down.method, &route);
        // admit: a redirect answers at once (it needs no identity); then what can be refused
        // from the head alone: who the caller is and whether it may call, the declared body
        // size, the rate limit (which may count per consumer found here).
        redirect::admit(&route, &down.conn)?;
        security::admit(rule.security.as_deref(), down, &route.host, &mut req, ctx).await.inspect_err(|e| {
            if let Stop::Error(e @ (ProxyError::Denied { .. } | ProxyError::ExtAuthDenied { .. })) = e {
                metrics::counter!("raftgate_auth_denied_total", "route" => rule.route.to_string(), "reason" => e.code())
                    .increment(1);
            }
        })?;
        let body_limit = rule.max_body_bytes.unwrap_or(self.settings.max_body_bytes);
        bodylimit::admit(req.headers(), body_limit)?;
        ratelimit::admit(&route, &req, down.client, ctx)?;
        // A fresh stored answer, or one being stored right now, answers from the cache.
        cache::lookup(&self.cache, &route, down, &req, ctx).await?;
        // prepare: the request as the upstream will see it (asking conditionally when a
        // stale answer has validators; answering from it while it revalidates, when the
        // answer allows that).
        let mut out = prepare::prepare(&route, down, req, body_limit, &self.settings, ctx).await?;
        cache::conditional(ctx, &mut out.headers);
        if cache::serves_stale(ctx) {
            return Ok(Answer::Gateway(cache::revalidate_later(&self.cache, rule, ctx, out)));
        }
        // send: copies to the rule's mirrors (never awaited), then attempts and retries
        // against the chosen backend.
        mirror::send(&rule.mirrors, &out);
        let result = retry::run(rule, &mut out, ctx).await;
        // fallback: when the upstream could not answer.
        let mut answer = fallback::apply(rule, &mut out, result, ctx).await?;
        if let Answer::Upstream(resp) = &mut answer {
            upgrade::splice(ctx.client_upgrade.take(), resp, down.conn.slot.clone(), self.settings.tunnel_idle_timeout);
        }
        Ok(answer)
    }
}
