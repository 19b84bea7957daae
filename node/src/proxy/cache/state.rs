//! The cache's data: stored entries in a byte-bounded map, the fills under way, and what
//! the cache decided for one request (`CacheState`, carried in `RequestCtx`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use tokio::sync::Notify;

use super::super::body::full;
use super::rules;

/// One stored answer.
#[derive(Debug)]
pub struct Entry {
    pub route: Arc<str>,
    pub path: Box<str>,
    pub status: StatusCode,
    /// As sent to clients (after the rule's filters), without `Age`.
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the answer was received (or last revalidated).
    pub stored: Instant,
    /// The upstream's `Age` when it arrived.
    pub initial_age: u64,
    pub lifetime: Duration,
    pub directives: rules::Directives,
    /// May answer requests with `Authorization` (§3.5).
    pub shared_auth: bool,
    /// The request's values of the headers the answer's `Vary` names.
    pub vary: Vec<(HeaderName, Option<HeaderValue>)>,
}

impl Entry {
    /// The current age in seconds (§4.2.3).
    pub fn age(&self) -> u64 {
        self.initial_age + self.stored.elapsed().as_secs()
    }

    /// Seconds of freshness left; negative once stale.
    pub fn ttl(&self) -> i64 {
        self.lifetime.as_secs() as i64 - self.age() as i64
    }

    fn weight(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum();
        (self.body.len() + headers + self.path.len() + 256) as u64
    }

    pub fn vary_matches(&self, req: &HeaderMap) -> bool {
        self.vary.iter().all(|(name, value)| req.get(name) == value.as_ref())
    }

    /// Whether the stale entry may answer while it is revalidated (`stale-while-revalidate`
    /// still running, and neither `must-revalidate` nor `no-cache`).
    pub fn serves_while_revalidating(&self) -> bool {
        let d = &self.directives;
        let swr = d.stale_while_revalidate.filter(|_| !d.must_revalidate && !d.no_cache);
        swr.is_some_and(|s| -self.ttl() <= s as i64)
    }

    /// Whether the request's `If-None-Match` (weak comparison), or without one its
    /// `If-Modified-Since`, says the client has this answer already.
    pub fn not_modified_for(&self, req: &HeaderMap) -> bool {
        if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
            let Some(etag) = self.headers.get(header::ETAG).and_then(|v| v.to_str().ok()) else { return false };
            let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
            return inm.split(',').any(|t| t.trim() == "*" || opaque(t) == opaque(etag));
        }
        let date = |v: Option<&HeaderValue>| v.and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok());
        match (date(req.get(header::IF_MODIFIED_SINCE)), date(self.headers.get(header::LAST_MODIFIED))) {
            (Some(since), Some(modified)) => modified <= since,
            _ => false,
        }
    }

    /// A 304 for a client that has the stored answer: its validators and freshness
    /// headers, no body (RFC 9110 §15.4.5).
    pub fn not_modified(&self) -> Response<super::super::body::RespBody> {
        let mut resp = Response::new(full(Bytes::new()));
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        let h = resp.headers_mut();
        for name in
            [header::ETAG, header::CACHE_CONTROL, header::EXPIRES, header::DATE, header::VARY, header::LAST_MODIFIED]
        {
            if let Some(v) = self.headers.get(&name) {
                h.insert(name, v.clone());
            }
        }
        h.insert(header::AGE, HeaderValue::from(self.age()));
        resp
    }

    /// The stored answer, for a request (`head`: without its body).
    pub fn response(&self, head: bool) -> Response<super::super::body::RespBody> {
        let mut resp = Response::new(if head { full(Bytes::new()) } else { full(self.body.clone()) });
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers.clone();
        resp.headers_mut().insert(header::AGE, HeaderValue::from(self.age()));
        resp
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Weight;

impl quick_cache::Weighter<u128, Arc<Entry>> for Weight {
    fn weight(&self, _: &u128, e: &Arc<Entry>) -> u64 {
        e.weight()
    }
}

/// The node's response cache.
pub struct ResponseCache {
    pub store: quick_cache::sync::Cache<u128, Arc<Entry>, Weight>,
    /// Keys being filled, with the waiters to wake when the fill ends either way.
    filling: Mutex<HashMap<u128, Filling>>,
    /// The keys stored per target URI (`family`: host and path), so that an unsafe
    /// request's success can remove every variant of its target (RFC 9111 §4.4). Keys of
    /// entries evicted since are dropped by a sweep when the index has doubled.
    families: Mutex<Families>,
    /// Bytes held by detached fills (`fill::detached`), at most `max_bytes / 4`.
    detached: AtomicU64,
    /// Bumped by every purge: a fill that began before one is not stored.
    epoch: AtomicU64,
    pub max_bytes: u64,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache").field("bytes", &self.store.weight()).finish_non_exhaustive()
    }
}

impl ResponseCache {
    pub fn new(max_bytes: u64) -> Self {
        // The item estimate only sizes the hash tables; the byte bound is what limits.
        let items = (max_bytes / 4096).clamp(64, 1 << 20) as usize;
        ResponseCache {
            store: quick_cache::sync::Cache::with_weighter(items, max_bytes.max(1), Weight),
            filling: Mutex::default(),
            families: Mutex::new(Families { keys: HashMap::new(), total: 0, sweep_at: 1024 }),
            detached: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            max_bytes,
        }
    }

    /// Bytes and entries held.
    pub fn usage(&self) -> (u64, usize) {
        (self.store.weight(), self.store.len())
    }

    /// Stores the answer `guard`'s fill made, unless a purge or an invalidation of its
    /// target happened since the fill began.
    pub fn insert(&self, guard: &FillGuard, entry: Entry) {
        if self.epoch.load(Ordering::Acquire) != guard.epoch || entry.weight() > self.max_bytes / 8 {
            return;
        }
        {
            // Checked, stored and indexed under one lock, so an invalidation comes wholly
            // before (the fill is marked) or wholly after (the entry is indexed).
            let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
            if guard.invalidated.load(Ordering::Acquire) {
                return;
            }
            self.store.insert(guard.key, Arc::new(entry));
            families.add(guard.family, guard.key, &self.store);
        }
        self.publish_usage();
    }

    /// Reserves `n` bytes for a detached fill; false when that would pass the budget.
    pub fn reserve_detached(&self, n: u64) -> bool {
        let budget = self.max_bytes / 4;
        self.detached.fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| (d + n <= budget).then_some(d + n)).is_ok()
    }

    pub fn release_detached(&self, n: u64) {
        self.detached.fetch_sub(n, Ordering::AcqRel);
    }

    /// An unsafe request to `family`'s target succeeded: its stored answers (every variant)
    /// go, and fills of it under way are not stored. Returns how many entries went.
    pub fn invalidate(&self, family: u64) -> usize {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        for f in self.filling.lock().unwrap_or_else(|p| p.into_inner()).values() {
            if f.family == family {
                f.invalidated.store(true, Ordering::Release);
            }
        }
        let keys = families.remove(family);
        drop(families);
        let removed = keys.iter().filter(|k| self.store.remove(*k).is_some()).count();
        if removed > 0 {
            metrics::counter!("raftgate_cache_invalidated_total").increment(removed as u64);
            self.publish_usage();
        }
        removed
    }

    /// Sets the size gauges; returns the entry count.
    fn publish_usage(&self) -> usize {
        let (bytes, entries) = self.usage();
        metrics::gauge!("raftgate_cache_bytes").set(bytes as f64);
        metrics::gauge!("raftgate_cache_entries").set(entries as f64);
        entries
    }

    /// Removes the entries of `route` whose path starts with `prefix` (every entry of the
    /// route when `prefix` is empty); returns how many.
    pub fn purge(&self, route: &str, prefix: &str) -> usize {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let before = self.store.len();
        self.store.retain(|_, e| !(&*e.route == route && e.path.starts_with(prefix)));
        before.saturating_sub(self.publish_usage())
    }

    /// Makes the caller the filler of `key` (of target `family`), or returns the fill to
    /// wait for.
    pub fn claim(self: &Arc<Self>, key: u128, family: u64) -> Result<FillGuard, Arc<Notify>> {
        let mut filling = self.filling.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = filling.get(&key) {
            return Err(f.notify.clone());
        }
        let invalidated = Arc::new(AtomicBool::new(false));
        filling.insert(key, Filling { notify: Arc::new(Notify::new()), family, invalidated: invalidated.clone() });
        Ok(FillGuard { cache: self.clone(), key, family, invalidated, epoch: self.epoch.load(Ordering::Acquire) })
    }

    /// Waits until the fill of `key` ends (or `limit` passes).
    pub async fn wait(&self, key: u128, notify: Arc<Notify>, limit: Duration) {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // The fill may have ended between `claim` and `enable` (and another begun).
        let same = self
            .filling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .is_some_and(|f| Arc::ptr_eq(&f.notify, &notify));
        if !same {
            return;
        }
        let _ = tokio::time::timeout(limit, notified).await;
    }
}

/// A fill under way: its waiters, and whether its target was invalidated meanwhile.
#[derive(Debug)]
struct Filling {
    notify: Arc<Notify>,
    family: u64,
    invalidated: Arc<AtomicBool>,
}

/// Stored keys per target.
#[derive(Debug)]
struct Families {
    keys: HashMap<u64, std::collections::HashSet<u128>>,
    /// Keys indexed, in all families.
    total: usize,
    /// Keys indexed past which the index drops those no longer stored.
    sweep_at: usize,
}

impl Families {
    fn add(&mut self, family: u64, key: u128, store: &quick_cache::sync::Cache<u128, Arc<Entry>, Weight>) {
        if self.keys.entry(family).or_default().insert(key) {
            self.total += 1;
        }
        if self.total >= self.sweep_at {
            self.keys.retain(|_, keys| {
                keys.retain(|k| store.peek(k).is_some());
                !keys.is_empty()
            });
            self.total = self.keys.values().map(|k| k.len()).sum();
            self.sweep_at = (self.total * 2).max(1024);
        }
    }

    fn remove(&mut self, family: u64) -> Vec<u128> {
        let keys: Vec<u128> = self.keys.remove(&family).map(|k| k.into_iter().collect()).unwrap_or_default();
        self.total -= keys.len();
        keys
    }
}

/// The target an answer is stored for (host and path, the query left out so that an
/// unsafe request invalidates every query of its path).
pub fn family(host: &str, path: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(host.as_bytes());
    h.update(&[0]);
    h.update(path.as_bytes());
    h.digest()
}

/// This request fills a key; dropping it (stored or not) wakes the requests waiting.
#[derive(Debug)]
pub struct FillGuard {
    pub cache: Arc<ResponseCache>,
    pub key: u128,
    pub family: u64,
    /// Set by an invalidation of the target while the fill runs: the answer is not stored.
    invalidated: Arc<AtomicBool>,
    pub epoch: u64,
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        let f = self.cache.filling.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
        if let Some(f) = f {
            f.notify.notify_waiters();
        }
    }
}

/// What the cache decided for one request (`RequestCtx::cache`), read again by the
/// response filter.
#[derive(Debug)]
pub struct CacheState {
    pub key: u128,
    /// The target (`family`) the key belongs to.
    pub family: u64,
    /// The routed path, kept with the entry for purges by prefix.
    pub path: Box<str>,
    /// The request's headers, for the values the answer's `Vary` names (not kept on hits).
    pub request_headers: HeaderMap,
    pub outcome: Outcome,
    /// A stored answer that is no longer fresh: revalidated, or served on an error.
    pub stale: Option<Arc<Entry>>,
    /// This request asked the upstream conditionally on `stale`'s validators.
    pub conditional: bool,
    /// This request fills the key.
    pub fill: Option<FillGuard>,
    /// The request said `no-store`, or carried credentials the answer may not be shared for.
    pub no_store: bool,
    pub auth: bool,
    /// Waited for another request's fill.
    pub collapsed: bool,
    pub head: bool,
    /// The content coding in the key (`""`: none, or the rule does not compress).
    pub coding: &'static str,
}

impl CacheState {
    /// A request's state before the lookup: a miss that stores nothing yet.
    pub fn new(key: u128, family: u64, path: &str, head: bool, coding: &'static str) -> Self {
        CacheState {
            key,
            family,
            path: path.into(),
            request_headers: HeaderMap::new(),
            outcome: Outcome::Forward("uri-miss"),
            stale: None,
            conditional: false,
            fill: None,
            no_store: false,
            auth: false,
            collapsed: false,
            head,
            coding,
        }
    }
}

/// For `Cache-Status` and the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    /// Served stale: `stale-while-revalidate` or `stale-if-error`.
    Stale(&'static str),
    /// Forwarded, with RFC 9211's `fwd` reason.
    Forward(&'static str),
    /// A 304 refreshed the stored answer.
    Revalidated,
}
