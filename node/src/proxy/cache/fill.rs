//! Filling the cache: an answer streams to the client and into an entry at once (`store`:
//! read by a task of its own at the upstream's pace when its length is known, `detached`;
//! otherwise as the client reads it, `Tee`); a 304 refreshes a stored entry (`refresh`); `stale-while-revalidate` answers
//! from the stale entry and revalidates on a task of its own (`revalidate_later`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};

use super::super::attempt;
use super::super::body::{BoxError, RespBody};
use super::super::context::RequestCtx;
use super::super::filters;
use super::super::outgoing::Outgoing;
use super::super::runtime::RuleRuntime;
use super::rules;
use super::state::{CacheState, Entry, FillGuard, Outcome, ResponseCache};

/// Headers that describe this one response on its way, never stored.
const NOT_STORED: [HeaderName; 2] = [header::AGE, HeaderName::from_static("x-request-id")];

/// Phase `response_filter`, after the rule's filters and compression: when the answer may
/// be stored, its body is streamed into the cache as the client receives it. Returns the
/// body to send and whether it is being stored.
pub fn store(
    rule: &RuleRuntime,
    ctx: &mut RequestCtx,
    parts: &http::response::Parts,
    body: RespBody,
) -> (RespBody, bool) {
    let (Some(state), Some(policy)) = (ctx.cache.as_mut(), rule.cache.as_deref()) else { return (body, false) };
    let Some(guard) = state.fill.take() else { return (body, false) };
    let path = state.path.clone();
    let Some(entry) = entry_for(state, rule, &path, policy, parts) else { return (body, false) };
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if state.head || declared.is_some_and(|n| n > policy.max_object_bytes.min(guard.cache.max_bytes / 8)) {
        return (body, false);
    }
    if let Some(len) = declared.filter(|n| guard.cache.reserve_detached(2 * n)) {
        return (detached(body, entry, guard, len), true);
    }
    // Never more than the store would take (an eighth of it).
    let limit = policy.max_object_bytes.min(guard.cache.max_bytes / 8);
    let tee = Tee { inner: body, buf: BytesMut::new(), limit, entry: Some((entry, guard)) };
    (RespBody::Transformed(UnsyncBoxBody::new(tee)), true)
}

/// The entry an answer would make, without its body; `None` when it may not be stored.
fn entry_for(
    state: &CacheState,
    rule: &RuleRuntime,
    path: &str,
    policy: &schemas::snapshot::CacheSpec,
    parts: &http::response::Parts,
) -> Option<Entry> {
    if state.no_store || !matches!(state.outcome, Outcome::Forward("uri-miss" | "stale" | "vary-miss" | "request")) {
        return None;
    }
    let h = &parts.headers;
    let d = rules::Directives::parse(h);
    if rules::not_storable(parts.status, h, &d, state.auth).is_some() {
        return None;
    }
    let validators = h.contains_key(header::ETAG) || h.contains_key(header::LAST_MODIFIED);
    let default_ttl = policy.default_ttl.map(|t| t.to_std());
    let lifetime = match rules::lifetime(parts.status, h, &d, default_ttl) {
        Some(l) if !l.is_zero() || validators => l,
        // Without freshness, only an answer that can be revalidated is worth keeping.
        None if validators && (d.no_cache || d.public) => Duration::ZERO,
        _ => return None,
    };
    let headers = owned(h);
    Some(Entry {
        route: rule.route.clone(),
        path: path.into(),
        status: parts.status,
        headers,
        body: Bytes::new(),
        stored: Instant::now(),
        initial_age: rules::initial_age(h),
        lifetime,
        directives: d,
        shared_auth: d.public || d.s_maxage.is_some() || d.must_revalidate,
        vary: vary(h, &state.request_headers, keyed_coding(h, state.coding, rule)),
    })
}

/// A copy of `h` that owns its bytes. Parsed header values share the connection's read
/// buffer: storing them as they are would keep a whole buffer alive per entry (measured:
/// 100 MB of memory held for a 4 MiB cache).
fn owned(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(h.len());
    for (name, value) in h {
        if NOT_STORED.contains(name) {
            continue;
        }
        if let (Ok(n), Ok(v)) =
            (HeaderName::from_bytes(name.as_str().as_bytes()), http::HeaderValue::from_bytes(value.as_bytes()))
        {
            out.append(n, v);
        }
    }
    out
}

/// The stored entry brought up to date by a 304's headers (RFC 9111 §4.3.4), passed
/// through the same filters as a full answer; `None` when the 304 says the answer may no
/// longer be stored. The entry keeps its own `ETag` (weakened on a compressed variant)
/// and never takes a cookie or a connection's headers from the 304.
pub fn refresh(stale: &Entry, h: &HeaderMap, rule: Option<&RuleRuntime>) -> Option<Entry> {
    let mut update = owned(h);
    filters::strip_hop_by_hop(&mut update, false);
    if let Some(rule) = rule {
        rule.filters.response(&mut update);
    }
    let mut headers = stale.headers.clone();
    for (name, value) in update.iter() {
        if ![header::CONTENT_LENGTH, header::SET_COOKIE, header::ETAG, header::CONTENT_ENCODING].contains(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    let d = rules::Directives::parse(&headers);
    if d.no_store || d.private {
        return None;
    }
    let lifetime = rules::lifetime(stale.status, &headers, &d, Some(stale.lifetime)).unwrap_or(stale.lifetime);
    Some(Entry {
        route: stale.route.clone(),
        path: stale.path.clone(),
        status: stale.status,
        body: stale.body.clone(),
        stored: Instant::now(),
        initial_age: rules::initial_age(h),
        lifetime,
        directives: d,
        shared_auth: stale.shared_auth,
        vary: stale.vary.clone(),
        headers,
    })
}

/// How long a detached fill goes on once its client has gone.
const FILL_LIMIT: Duration = Duration::from_secs(60);

/// An answer of known length within the bound, read by a task of its own: the entry is
/// stored (and the requests waiting for it answered) as soon as the upstream has sent it,
/// however slowly this client reads, and even if it goes away (for at most `FILL_LIMIT`
/// more). Memory: the copy being stored and the client's copy waiting for it, at most
/// `2 × len`, counted against the cache's budget for detached fills (`reserve_detached`);
/// a fill over the budget streams at the client's pace instead (`Tee`).
fn detached(mut body: RespBody, mut entry: Entry, guard: FillGuard, len: u64) -> RespBody {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Frame<Bytes>, BoxError>>();
    tokio::spawn(async move {
        let _budget = DetachedBytes::new(&guard.cache, 2 * len);
        let mut buf = BytesMut::with_capacity(len as usize);
        let mut whole = true;
        let mut gone: Option<Instant> = None;
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            match frame.data_ref() {
                Some(d) => buf.extend_from_slice(d),
                // Trailers are not stored: an answer with them is not cached.
                None => whole = false,
            }
            // The client may have gone: the fill goes on, for a while, for those waiting.
            if tx.send(Ok(frame)).is_err() && gone.get_or_insert_with(Instant::now).elapsed() > FILL_LIMIT {
                return;
            }
        }
        if whole && buf.len() as u64 == len {
            entry.body = buf.freeze();
            guard.cache.insert(&guard, entry);
        }
    });
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
    RespBody::Transformed(UnsyncBoxBody::new(http_body_util::StreamBody::new(stream)))
}

/// Bytes reserved for a detached fill, given back when it ends.
struct DetachedBytes {
    cache: Arc<ResponseCache>,
    n: u64,
}

impl DetachedBytes {
    fn new(cache: &Arc<ResponseCache>, n: u64) -> Self {
        DetachedBytes { cache: cache.clone(), n }
    }
}

impl Drop for DetachedBytes {
    fn drop(&mut self) {
        self.cache.release_detached(self.n);
    }
}

/// Streams the answer to the client and collects it; stores it once it ended whole and
/// within the size bound. The fill guard goes when the body does, waking the waiters.
struct Tee {
    inner: RespBody,
    buf: BytesMut,
    limit: u64,
    entry: Option<(Entry, FillGuard)>,
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        // The server stops polling once the body says it has ended, so the end is also
        // taken from `is_end_stream` after the last frame, not only from `None`.
        let ended = matches!(polled, Poll::Ready(None)) || (polled.is_ready() && this.inner.is_end_stream());
        match &polled {
            Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                Some(d) if this.entry.is_some() => {
                    if (this.buf.len() + d.len()) as u64 > this.limit {
                        this.entry = None;
                        this.buf = BytesMut::new();
                    } else {
                        this.buf.extend_from_slice(d);
                    }
                }
                Some(_) => {}
                // Trailers are not stored: an answer with them is not cached.
                None => this.entry = None,
            },
            Poll::Ready(Some(Err(_))) => this.entry = None,
            Poll::Ready(None) | Poll::Pending => {}
        }
        if ended {
            if let Some((mut entry, guard)) = this.entry.take() {
                entry.body = std::mem::take(&mut this.buf).freeze();
                guard.cache.insert(&guard, entry);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether the request is answered from a stale entry while it revalidates
/// (`stale-while-revalidate`, decided by `lookup`).
pub fn serves_stale(ctx: &RequestCtx) -> bool {
    ctx.cache.as_ref().is_some_and(|s| s.outcome == Outcome::Stale("stale-while-revalidate") && s.stale.is_some())
}

/// `stale-while-revalidate`: answers from the stale entry and sends the request upstream
/// on a task of its own, which refreshes or replaces the entry (when no other request is
/// revalidating it already).
pub fn revalidate_later(
    cache: &Arc<ResponseCache>,
    rule: &Arc<RuleRuntime>,
    ctx: &mut RequestCtx,
    mut out: Outgoing,
) -> Response<RespBody> {
    let state = ctx.cache.as_mut().expect("serves_stale checked");
    let stale = state.stale.clone().expect("serves_stale checked");
    let resp = stale.response(state.head);
    let (Some(guard), Some(up)) = (state.fill.take(), ctx.upstream.clone()) else { return resp };
    // The cache's validators, never the client's: a 304 must vouch for the stored body.
    out.headers.remove(header::IF_NONE_MATCH);
    out.headers.remove(header::IF_MODIFIED_SINCE);
    let conditional = add_validators(&stale, &mut out.headers);
    // The refill is stored as the request that caused it would store it (its Vary values,
    // its credentials), never as an anonymous one.
    let refill = CacheState {
        key: state.key,
        family: state.family,
        path: state.path.clone(),
        request_headers: std::mem::take(&mut state.request_headers),
        outcome: Outcome::Forward("stale"),
        stale: None,
        conditional,
        fill: None,
        no_store: state.no_store,
        auth: state.auth,
        collapsed: false,
        head: false,
        coding: state.coding,
    };
    let (cache, rule) = (cache.clone(), rule.clone());
    tokio::spawn(async move {
        // Bounded, so a silent upstream cannot keep the key's fill (and its waiters) forever.
        let _ =
            tokio::time::timeout(REVALIDATE_LIMIT, revalidate(&cache, &rule, &up, out, &stale, refill, guard)).await;
    });
    resp
}

/// How long a background revalidation may take, answer and body included.
const REVALIDATE_LIMIT: Duration = Duration::from_secs(30);

async fn revalidate(
    cache: &ResponseCache,
    rule: &RuleRuntime,
    up: &Arc<super::super::upstream::Upstream>,
    mut out: Outgoing,
    stale: &Entry,
    state: CacheState,
    guard: FillGuard,
) {
    let Ok((resp, _)) = attempt::once(up, &mut out, false, &[], true).await else { return };
    let (mut parts, body) = resp.into_parts();
    if parts.status == StatusCode::NOT_MODIFIED && state.conditional {
        if let Some(e) = refresh(stale, &parts.headers, Some(rule)) {
            cache.insert(&guard, e);
        }
        return;
    }
    // A failure leaves the stale entry for `stale-if-error`; a new answer replaces it when
    // it can be stored as the client would get it (a compressed variant is left to the
    // next request to fill).
    if parts.status.is_server_error() || parts.status == StatusCode::NOT_MODIFIED {
        return;
    }
    cache.store.remove(&state.key);
    let Some(policy) = rule.cache.as_deref().filter(|_| rule.compression.is_none()) else { return };
    filters::strip_hop_by_hop(&mut parts.headers, false);
    rule.filters.response(&mut parts.headers);
    let Some(mut entry) = entry_for(&state, rule, &stale.path, policy, &parts) else { return };
    let limit = policy.max_object_bytes.min(cache.max_bytes / 8) as usize;
    if let Ok(b) = http_body_util::Limited::new(body, limit).collect().await {
        entry.body = b.to_bytes();
        cache.insert(&guard, entry);
    }
}

/// Adds `e`'s validators to a request (`If-None-Match` from its `ETag`, else
/// `If-Modified-Since` from its `Last-Modified`); whether it had any.
pub fn add_validators(e: &Entry, headers: &mut HeaderMap) -> bool {
    if let Some(etag) = e.headers.get(header::ETAG) {
        headers.insert(header::IF_NONE_MATCH, etag.clone());
        true
    } else if let Some(lm) = e.headers.get(header::LAST_MODIFIED) {
        headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
        true
    } else {
        false
    }
}

/// Whether the key's coding already tells the answer's encoding apart: the rule compresses
/// and the answer is encoded with exactly the coding negotiated for the key (none for
/// `""`). An upstream that encoded on its own keeps `Accept-Encoding` in the variant.
fn keyed_coding(h: &HeaderMap, coding: &str, rule: &RuleRuntime) -> bool {
    let encoded = h.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("");
    rule.compression.is_some() && encoded.eq_ignore_ascii_case(coding)
}

/// The request's values of the headers the answer's `Vary` names. `Accept-Encoding` is
/// left out when the key already holds the coding (`keyed_coding`).
fn vary(answer: &HeaderMap, request: &HeaderMap, compressing: bool) -> Vec<(HeaderName, Option<http::HeaderValue>)> {
    answer
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| !(compressing && n == header::ACCEPT_ENCODING))
        .map(|n| {
            // Copied, not shared with the request's read buffer (see `owned`).
            let v = request.get(&n).and_then(|v| http::HeaderValue::from_bytes(v.as_bytes()).ok());
            (n, v)
        })
        .collect()
}
