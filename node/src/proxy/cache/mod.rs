//! The response cache (`rules[].cache`): an RFC 9111 shared cache in the node's memory,
//! bounded by bytes (`--cache-max-bytes`), kept by the `Engine` across configs.
//!
//! Its parts of the request lifecycle: `lookup` in phase `admit` (after the rate limit)
//! answers fresh hits with a `Stop::Answer`, waits for a fill of the same key already under
//! way (request coalescing), and otherwise makes this request the key's filler;
//! `conditional` in `prepare` turns a stale entry with validators into a conditional
//! request; in `response_filter`, `respond` serves the stored answer on a 304 or, within
//! `stale-if-error`, on a failure, and `store` streams a storable answer into the cache as
//! it goes to the client (`fill`). `Cache-Status` (RFC 9211) says what happened, always.
//!
//! Entries are keyed by a 128-bit hash of route, rule, method class, host, path (and
//! query), the negotiated content coding when the rule compresses (each coding is a
//! variant of its own) and the rule's key headers. One variant is kept per key for the
//! upstream's other `Vary` headers: a request whose values differ is a `vary-miss`.

mod fill;
pub mod rules;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode};

use super::context::{Answer, Downstream, RequestCtx, Stop};
use super::route::Routed;
use super::runtime::RuleRuntime;
pub use fill::{revalidate_later, serves_stale, store};
pub use state::{CacheState, Entry, FillGuard, Outcome, ResponseCache};

/// The response cache's size without --cache-max-bytes.
pub const DEFAULT_CACHE_BYTES: u64 = 256 << 20;

/// How long a request waits for another request's fill of the same key before it goes to
/// the upstream itself.
const COALESCE_WAIT: Duration = Duration::from_secs(10);

/// Phase `admit`, after the rate limit: answers from the cache when it can.
pub async fn lookup(
    cache: &Arc<ResponseCache>,
    route: &Routed<'_>,
    down: &Downstream,
    req: &Request<hyper::body::Incoming>,
    ctx: &mut RequestCtx,
) -> Result<(), Stop> {
    let rule = route.rule;
    let Some(policy) = rule.cache.as_deref() else { return Ok(()) };
    let head = down.method == Method::HEAD;
    let coding = rule.compression.as_ref().map_or("", |c| c.coding_for(req.headers().get(header::ACCEPT_ENCODING)));
    let parts = KeyParts { coding, https: down.conn.https, get: head || down.method == Method::GET };
    let key = key(rule, policy, route, req.headers(), parts);
    let asks = rules::request_asks(req.headers());
    // A caller the security policy identified (an API key, a token, a password) is treated
    // as one with `Authorization`: the upstream may answer per consumer, so its answers
    // are shared only when they say they may be (§3.5).
    let auth = req.headers().contains_key(header::AUTHORIZATION) || ctx.consumer.is_some() || ctx.jwt.is_some();
    let mut state = CacheState::new(key, state::family(&route.host, &route.path), &route.path, head, coding);
    (state.no_store, state.auth) = (asks.no_store, auth);
    if !(head || down.method == Method::GET) {
        state.outcome = Outcome::Forward("method");
        ctx.cache = Some(state);
        return Ok(());
    }
    for attempt in 0..2 {
        if let Some(e) = cache.store.get(&key) {
            match usable(&e, req.headers(), &asks, auth) {
                Ok(()) if e.ttl() > 0 && !e.directives.no_cache => {
                    state.outcome = Outcome::Hit;
                    // The client's own validators are checked against the entry (§4.3.2).
                    let resp = if e.not_modified_for(req.headers()) { e.not_modified() } else { e.response(head) };
                    ctx.cache = Some(state);
                    return Err(Stop::Answer(Box::new(resp)));
                }
                Ok(()) => {
                    if e.serves_while_revalidating() {
                        state.outcome = Outcome::Stale("stale-while-revalidate");
                    }
                    state.stale = Some(e);
                }
                Err(why) => state.outcome = Outcome::Forward(why),
            }
        }
        // A HEAD is never stored, so it neither fills a key nor waits for a fill.
        if state.stale.is_some() || attempt == 1 || head {
            break;
        }
        match cache.claim(key, state.family) {
            Ok(guard) => {
                state.fill = Some(guard);
                break;
            }
            Err(notify) => {
                cache.wait(key, notify, COALESCE_WAIT).await;
                state.collapsed = true;
            }
        }
    }
    if state.fill.is_none() && !head {
        state.fill = cache.claim(key, state.family).ok();
    }
    if state.fill.is_some() {
        state.request_headers = req.headers().clone();
    }
    ctx.cache = Some(state);
    Ok(())
}

/// Phase `route`: an unsafe request (POST, PUT, DELETE, …) on any route names its target,
/// whose stored answers go when it succeeds (RFC 9111 §4.4; see `invalidate`).
pub fn target(method: &Method, route: &Routed<'_>) -> Option<u64> {
    (!method.is_safe()).then(|| state::family(&route.host, &route.path))
}

/// Phase `response_filter`: a 2xx or 3xx answer to an unsafe request removes the stored
/// answers of its target, all variants and queries, on this node.
pub fn invalidate(cache: &ResponseCache, ctx: &RequestCtx, status: StatusCode) {
    if let Some(family) = ctx.invalidates {
        if status.is_success() || status.is_redirection() {
            cache.invalidate(family);
        }
    }
}

/// Whether a stored answer may answer this request at all (fresh or not).
fn usable(e: &Entry, req: &HeaderMap, asks: &rules::Asks, auth: bool) -> Result<(), &'static str> {
    if auth && !e.shared_auth {
        return Err("bypass");
    }
    if !e.vary_matches(req) {
        return Err("vary-miss");
    }
    if asks.revalidate {
        return Err("request");
    }
    Ok(())
}

/// What tells answers apart: `class` is the method class (GET/HEAD or not) and the scheme
/// (an answer may differ by it, such as an absolute `Location`).
struct KeyParts<'a> {
    coding: &'a str,
    https: bool,
    get: bool,
}

fn key(
    rule: &RuleRuntime,
    policy: &schemas::snapshot::CacheSpec,
    route: &Routed<'_>,
    h: &HeaderMap,
    p: KeyParts<'_>,
) -> u128 {
    let mut k = Vec::with_capacity(128);
    let class = [u8::from(p.get), u8::from(p.https)];
    for part in [rule.route.as_bytes(), &rule.rule.to_le_bytes(), &class, route.host.as_bytes(), route.path.as_bytes()]
    {
        k.extend_from_slice(&(part.len() as u32).to_le_bytes());
        k.extend_from_slice(part);
    }
    if policy.key_query {
        k.extend_from_slice(route.query.unwrap_or("").as_bytes());
    }
    k.push(0);
    k.extend_from_slice(p.coding.as_bytes());
    for name in &policy.key_headers {
        k.push(0);
        for v in h.get_all(name.as_str()) {
            k.extend_from_slice(v.as_bytes());
            k.push(b',');
        }
    }
    xxhash_rust::xxh3::xxh3_128(&k)
}

/// Phase `prepare`: asks the upstream conditionally when a stale entry has validators and
/// the client did not ask conditionally itself.
pub fn conditional(ctx: &mut RequestCtx, headers: &mut HeaderMap) {
    let Some(state) = ctx.cache.as_mut() else { return };
    let Some(e) = &state.stale else { return };
    if headers.contains_key(header::IF_NONE_MATCH) || headers.contains_key(header::IF_MODIFIED_SINCE) {
        return;
    }
    state.conditional = fill::add_validators(e, headers);
}

/// Phase `response_filter`, first: the stored answer instead of the upstream's when the
/// upstream confirmed it (304 to our conditional request) or failed within the stored
/// answer's `stale-if-error`.
pub fn respond(cache: &ResponseCache, ctx: &mut RequestCtx, answer: Answer) -> Answer {
    let Some(state) = ctx.cache.as_mut() else { return answer };
    let Some(stale) = state.stale.clone() else { return answer };
    let status = match &answer {
        Answer::Upstream(r) => r.status(),
        Answer::Gateway(r) => r.status(),
    };
    if status == StatusCode::NOT_MODIFIED && state.conditional {
        let Answer::Upstream(resp) = answer else { return answer };
        let rule = ctx.rule.as_deref();
        let state = ctx.cache.as_mut().expect("checked above");
        state.outcome = Outcome::Revalidated;
        let Some(refreshed) = fill::refresh(&stale, resp.headers(), rule) else {
            // The 304 says the answer may no longer be stored: the stored body still answers
            // this request (the upstream vouched for it), and the entry goes.
            cache.store.remove(&state.key);
            return Answer::Gateway(stale.response(state.head));
        };
        let out = refreshed.response(state.head);
        if let Some(guard) = state.fill.take() {
            cache.insert(&guard, refreshed);
        }
        return Answer::Gateway(out);
    }
    // Only an entry that says `stale-if-error` (and allows stale use at all) stands in.
    let d = &stale.directives;
    let window = d.stale_if_error.filter(|_| !d.must_revalidate && !d.no_cache);
    if status.is_server_error() && window.is_some_and(|w| -stale.ttl() <= w as i64) {
        state.outcome = Outcome::Stale("stale-if-error");
        return Answer::Gateway(stale.response(state.head));
    }
    answer
}

/// The `Cache-Status` field value (RFC 9211) for the request, and the metric.
pub fn status(ctx: &RequestCtx, stored: bool) -> Option<HeaderValue> {
    let state = ctx.cache.as_ref()?;
    // Indexes into `runtime::CACHE_RESULTS`.
    let result = match state.outcome {
        Outcome::Hit => 0,
        Outcome::Stale(_) => 1,
        Outcome::Revalidated => 2,
        Outcome::Forward("bypass" | "method" | "request") => 4,
        Outcome::Forward(_) => 3,
    };
    if let Some(rule) = &ctx.rule {
        rule.cache_result(result).increment(1);
    }
    let mut v = String::from("raftgate");
    let ttl = state.stale.as_ref().map(|e| e.ttl());
    match state.outcome {
        Outcome::Hit => v.push_str("; hit"),
        Outcome::Stale(detail) => v.push_str(&format!("; hit; ttl={}; detail={detail}", ttl.unwrap_or(0))),
        Outcome::Revalidated => v.push_str("; fwd=stale; fwd-status=304"),
        Outcome::Forward(why) => v.push_str(&format!("; fwd={why}")),
    }
    if state.collapsed {
        v.push_str("; collapsed");
    }
    if stored {
        v.push_str("; stored");
    }
    HeaderValue::from_str(&v).ok()
}
