//! The response cache end to end: RFC 9111 rules against a real upstream that sets the
//! headers, request coalescing, the memory bound, and purges on every node of a cluster.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::harness::*;
use crate::nodes::TestCluster;

/// An upstream whose answer headers come from the query: `cc` (Cache-Control), `etag`,
/// `lm` (Last-Modified), `expires` (`future` or a raw value), `vary`, `cookie`, `delay`
/// (ms). It answers 304 to a matching If-None-Match or any If-Modified-Since when it has
/// validators, 503 while `failing`, and counts requests per target; the body names the
/// count, so a test can tell a stored answer from a new one.
struct Origin {
    addr: std::net::SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    conditionals: Arc<Mutex<Vec<String>>>,
    failing: Arc<AtomicBool>,
}

impl Origin {
    async fn start() -> Origin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let o = Origin { addr, hits: Arc::default(), conditionals: Arc::default(), failing: Arc::default() };
        let (hits, cond, failing) = (o.hits.clone(), o.conditionals.clone(), o.failing.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (hits, cond, failing) = (hits.clone(), cond.clone(), failing.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (hits, cond, failing) = (hits.clone(), cond.clone(), failing.clone());
                        async move { Ok::<_, std::convert::Infallible>(origin(req, &hits, &cond, &failing).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        o
    }

    fn count(&self, target: &str) -> usize {
        self.hits.lock().unwrap().get(target).copied().unwrap_or(0)
    }
}

async fn origin(
    req: Request<Incoming>,
    hits: &Mutex<HashMap<String, usize>>,
    cond: &Mutex<Vec<String>>,
    failing: &AtomicBool,
) -> Response<Full<Bytes>> {
    let target = req.uri().path_and_query().unwrap().to_string();
    let q: HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let n = {
        let mut h = hits.lock().unwrap();
        let n = h.entry(target.clone()).or_default();
        *n += 1;
        *n
    };
    if let Some(ms) = q.get("delay") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
    }
    if failing.load(Ordering::SeqCst) {
        return Response::builder().status(503).body(Full::new(Bytes::from_static(b"down"))).unwrap();
    }
    let inm = req.headers().get("if-none-match").map(|v| v.to_str().unwrap().to_string());
    let ims = req.headers().get("if-modified-since").is_some();
    if inm.is_some() || ims {
        cond.lock().unwrap().push(format!("{target} {}", inm.clone().unwrap_or_else(|| "if-modified-since".into())));
    }
    let mut b = Response::builder()
        .header("content-type", "text/plain")
        .header("date", httpdate::fmt_http_date(std::time::SystemTime::now()));
    let etag = q.get("etag").map(|e| format!("\"{e}\""));
    if let Some(cc) = q.get("cc") {
        b = b.header("cache-control", cc);
    }
    if let Some(e) = &etag {
        b = b.header("etag", e);
    }
    if q.contains_key("lm") {
        b = b.header("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT");
    }
    match q.get("expires").map(String::as_str) {
        Some("future") => {
            b = b.header("expires", httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60)));
        }
        Some(raw) => b = b.header("expires", raw),
        None => {}
    }
    if let Some(v) = q.get("vary") {
        b = b.header("vary", v);
    }
    if q.contains_key("cookie") {
        b = b.header("set-cookie", "id=1");
    }
    if (etag.is_some() && inm == etag) || (ims && q.contains_key("lm")) {
        return b.status(304).body(Full::new(Bytes::new())).unwrap();
    }
    let lang = req.headers().get("x-lang").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let mut body = format!("n={n} lang={lang}").into_bytes();
    if let Some(size) = q.get("size").and_then(|s| s.parse::<usize>().ok()) {
        body.resize(size, b'.');
    }
    b.body(Full::new(Bytes::from(body))).unwrap()
}

const ROUTES: &str = r#"---
kind: Route
name: site
rules:
  - matches: [{ path: { value: /ttl } }]
    backendRefs: [{ upstream: origin }]
    cache: { defaultTtl: 60s }
  - matches: [{ path: { value: /z } }]
    backendRefs: [{ upstream: origin }]
    cache: {}
    compression: { minBytes: 1 }
  - matches: [{ path: { value: /post } }]
    backendRefs: [{ upstream: origin }]
    cache: {}
  - matches: [{ path: { value: /item }, method: PUT }]
    backendRefs: [{ upstream: origin }]
  - matches: [{ path: { value: /big } }]
    backendRefs: [{ upstream: origin }]
    cache: { maxObjectBytes: 33554432 }
  - backendRefs: [{ upstream: origin }]
    cache: { maxObjectBytes: 100000 }
"#;

fn config(o: &Origin) -> String {
    format!("kind: Upstream\nname: origin\nendpoints: [{{ address: \"{}\" }}]\n", o.addr) + ROUTES
}

/// GET `path` with headers; the status, `Cache-Status` and body.
async fn fetch(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String, String) {
    let (status, h, body) = get(&gw.url(path), headers).await;
    let cs = h.get("cache-status").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, cs, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn rfc_9111_rules_against_a_real_upstream() {
    let o = Origin::start().await;
    let gw = Gateway::start(&[("c.yaml", &config(&o))], &[]);
    // (case, target, request headers, [(Cache-Status, body) per request], upstream requests)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [(&'a str, &'a str)], usize);
    let cases: &[Case<'_>] = &[
        (
            "max-age",
            "/a?cc=max-age%3D60",
            &[],
            &[("raftgate; fwd=uri-miss; stored", "n=1"), ("raftgate; hit", "n=1")],
            1,
        ),
        (
            "s-maxage wins",
            "/a?cc=s-maxage%3D60,max-age%3D0",
            &[],
            &[("raftgate; fwd=uri-miss; stored", "n=1"), ("raftgate; hit", "n=1")],
            1,
        ),
        ("no-store", "/a?cc=no-store", &[], &[("raftgate; fwd=uri-miss", "n=1"), ("raftgate; fwd=uri-miss", "n=2")], 2),
        (
            "private",
            "/a?cc=private,max-age%3D60",
            &[],
            &[("raftgate; fwd=uri-miss", "n=1"), ("raftgate; fwd=uri-miss", "n=2")],
            2,
        ),
        (
            "Expires in the future",
            "/a?expires=future",
            &[],
            &[("raftgate; fwd=uri-miss; stored", "n=1"), ("raftgate; hit", "n=1")],
            1,
        ),
        (
            "Expires: 0 is stale",
            "/a?expires=0",
            &[],
            &[("raftgate; fwd=uri-miss", "n=1"), ("raftgate; fwd=uri-miss", "n=2")],
            2,
        ),
        (
            "nothing said, no defaultTtl",
            "/a?x=1",
            &[],
            &[("raftgate; fwd=uri-miss", "n=1"), ("raftgate; fwd=uri-miss", "n=2")],
            2,
        ),
        (
            "nothing said, defaultTtl",
            "/ttl?x=1",
            &[],
            &[("raftgate; fwd=uri-miss; stored", "n=1"), ("raftgate; hit", "n=1")],
            1,
        ),
        (
            "Set-Cookie is not shared",
            "/a?cc=max-age%3D60&cookie=1",
            &[],
            &[("raftgate; fwd=uri-miss", "n=1"), ("raftgate; fwd=uri-miss", "n=2")],
            2,
        ),
        (
            "Vary: *",
            "/a?cc=max-age%3D60&vary=*",
            &[],
            &[("raftgate; fwd=uri-miss", "n=1"), ("raftgate; fwd=uri-miss", "n=2")],
            2,
        ),
        (
            "no-cache revalidates every time",
            "/a?cc=no-cache&etag=v1",
            &[],
            &[
                ("raftgate; fwd=uri-miss; stored", "n=1"),
                ("raftgate; fwd=stale; fwd-status=304", "n=1"),
                ("raftgate; fwd=stale; fwd-status=304", "n=1"),
            ],
            3,
        ),
        (
            "Authorization: not stored",
            "/a?cc=max-age%3D60&auth=1",
            &[("authorization", "Bearer x")],
            &[("raftgate; fwd=uri-miss", "n=1"), ("raftgate; fwd=uri-miss", "n=2")],
            2,
        ),
        (
            "Authorization: public",
            "/a?cc=public,max-age%3D60&auth=2",
            &[("authorization", "Bearer x")],
            &[("raftgate; fwd=uri-miss; stored", "n=1"), ("raftgate; hit", "n=1")],
            1,
        ),
        (
            "the request's no-cache",
            "/a?cc=max-age%3D60&rq=1",
            &[("cache-control", "no-cache")],
            &[("raftgate; fwd=uri-miss; stored", "n=1"), ("raftgate; fwd=request; stored", "n=2")],
            2,
        ),
        (
            "the request's no-store",
            "/a?cc=max-age%3D60&rq=2",
            &[("cache-control", "no-store")],
            &[("raftgate; fwd=uri-miss", "n=1"), ("raftgate; fwd=uri-miss", "n=2")],
            2,
        ),
    ];
    let mut failures = Vec::new();
    for (case, target, headers, want, upstream) in cases {
        for (i, (cs, body)) in want.iter().enumerate() {
            let (status, got_cs, got_body) = fetch(&gw, target, headers).await;
            if (status, got_cs.as_str(), got_body.split(' ').next().unwrap()) != (StatusCode::OK, *cs, *body) {
                failures
                    .push(format!("{case}, request {}: {status} {got_cs:?} {got_body:?}, want {cs:?} {body:?}", i + 1));
            }
        }
        if o.count(target) != *upstream {
            failures.push(format!("{case}: the upstream saw {} requests, want {upstream}", o.count(target)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(o.conditionals.lock().unwrap().iter().any(|c| c == "/a?cc=no-cache&etag=v1 \"v1\""), "If-None-Match sent");

    // HEAD is answered from a stored GET; POST is never stored (and says so).
    let (_, h, body) = send(&client(), "HEAD", &gw.url("/a?cc=max-age%3D60"), &[], Bytes::new()).await;
    assert_eq!((h["cache-status"].to_str().unwrap(), body.as_str()), ("raftgate; hit", ""));
    assert!(h.contains_key("age"));
    let (_, h, _) = send(&client(), "POST", &gw.url("/post?cc=max-age%3D60"), &[], Bytes::new()).await;
    assert_eq!(h["cache-status"], "raftgate; fwd=method");

    // A client's own validators are answered from the entry: 304, no body, no upstream.
    let e = "/a?cc=max-age%3D60&etag=c1&lm=1";
    fetch(&gw, e, &[]).await;
    for (name, value) in [
        ("if-none-match", "W/\"c1\""),
        ("if-none-match", "\"x\", \"c1\""),
        ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ] {
        let (status, h, body) = get(&gw.url(e), &[(name, value)]).await;
        assert_eq!(
            (status, body.as_str(), h["etag"].to_str().unwrap()),
            (StatusCode::NOT_MODIFIED, "", "\"c1\""),
            "{name}: {value}"
        );
    }
    assert_eq!(get(&gw.url(e), &[("if-none-match", "\"other\"")]).await.0, StatusCode::OK);
    assert_eq!(o.count(e), 1);

    // Vary: a second variant of one key is a vary-miss and replaces the first.
    let v = "/a?cc=max-age%3D60&vary=x-lang";
    assert_eq!(fetch(&gw, v, &[("x-lang", "en")]).await.2, "n=1 lang=en");
    assert_eq!(fetch(&gw, v, &[("x-lang", "en")]).await.1, "raftgate; hit");
    let (_, cs, body) = fetch(&gw, v, &[("x-lang", "fr")]).await;
    assert_eq!((cs.as_str(), body.as_str()), ("raftgate; fwd=vary-miss; stored", "n=2 lang=fr"));

    // Revalidation once stale: with an ETag (If-None-Match) and with Last-Modified.
    for (target, sent) in [("/a?cc=max-age%3D1&etag=e2", "\"e2\""), ("/a?cc=max-age%3D1&lm=1", "if-modified-since")] {
        assert_eq!(fetch(&gw, target, &[]).await.1, "raftgate; fwd=uri-miss; stored");
        assert_eq!(fetch(&gw, target, &[]).await.1, "raftgate; hit");
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        let (_, cs, body) = fetch(&gw, target, &[]).await;
        assert_eq!(
            (cs.as_str(), body.split(' ').next().unwrap()),
            ("raftgate; fwd=stale; fwd-status=304", "n=1"),
            "{target}"
        );
        assert_eq!(fetch(&gw, target, &[]).await.1, "raftgate; hit", "refreshed by the 304: {target}");
        assert!(o.conditionals.lock().unwrap().iter().any(|c| *c == format!("{target} {sent}")), "{target}");
    }

    // stale-while-revalidate: the stale answer at once, the upstream asked in the background.
    let swr = "/a?cc=max-age%3D1,stale-while-revalidate%3D30";
    fetch(&gw, swr, &[]).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let (_, cs, body) = fetch(&gw, swr, &[]).await;
    assert!(cs.starts_with("raftgate; hit; ttl=-") && cs.ends_with("detail=stale-while-revalidate"), "{cs}");
    assert_eq!(body.split(' ').next().unwrap(), "n=1");
    testkit::eventually_async("the background revalidation", Duration::from_secs(5), || async {
        let (_, cs, body) = fetch(&gw, swr, &[]).await;
        (cs == "raftgate; hit" && !body.starts_with("n=1")).then_some(())
    })
    .await;
    assert!(o.count(swr) >= 2);

    // stale-if-error: a failing upstream is answered for by the stale entry, unless
    // must-revalidate forbids it.
    let sie = "/a?cc=max-age%3D1,stale-if-error%3D60";
    let strict = "/a?cc=max-age%3D1,stale-if-error%3D60,must-revalidate";
    let silent = "/a?cc=max-age%3D1";
    fetch(&gw, sie, &[]).await;
    fetch(&gw, strict, &[]).await;
    fetch(&gw, silent, &[]).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    o.failing.store(true, Ordering::SeqCst);
    let (status, cs, body) = fetch(&gw, sie, &[]).await;
    assert_eq!((status, body.split(' ').next().unwrap()), (StatusCode::OK, "n=1"), "{cs}");
    assert!(cs.ends_with("detail=stale-if-error"), "{cs}");
    assert_eq!(fetch(&gw, strict, &[]).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(fetch(&gw, silent, &[]).await.0, StatusCode::SERVICE_UNAVAILABLE, "no stale-if-error, no stale answer");
    o.failing.store(false, Ordering::SeqCst);

    // With compression, each coding is a variant of its own, stored compressed.
    let z = "/z?cc=max-age%3D60";
    for (accept, first) in [
        ("gzip", "raftgate; fwd=uri-miss; stored"),
        ("gzip", "raftgate; hit"),
        ("br", "raftgate; fwd=uri-miss; stored"),
        ("br", "raftgate; hit"),
    ] {
        let (_, h, body) = get(&gw.url(z), &[("accept-encoding", accept)]).await;
        assert_eq!((h["cache-status"].to_str().unwrap(), h["content-encoding"].to_str().unwrap()), (first, accept));
        assert!(!body.starts_with("n="), "stored compressed");
    }
    let (_, h, body) = get(&gw.url(z), &[]).await;
    assert_eq!(
        (h["cache-status"].to_str().unwrap(), body.split(' ').next().unwrap()),
        ("raftgate; fwd=uri-miss; stored", "n=3")
    );
    assert!(!h.contains_key("content-encoding"));

    // Too large to store: passes through, never stored.
    let big = Gateway::start(&[("c.yaml", &config(&o).replace("maxObjectBytes: 100000", "maxObjectBytes: 5"))], &[]);
    for _ in 0..2 {
        assert_eq!(fetch(&big, "/a?cc=max-age%3D60&big=1", &[]).await.1, "raftgate; fwd=uri-miss");
    }
}

/// A client that reads slowly does not hold up the requests waiting for its fill: an answer
/// of known length is stored at the upstream's pace.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_reader_does_not_hold_up_the_requests_waiting_for_its_fill() {
    use tokio::io::AsyncWriteExt;
    let o = Origin::start().await;
    let gw = Gateway::start(&[("c.yaml", &config(&o))], &[]);
    // 20 MB: more than the sockets between the gateway and a client that reads nothing hold.
    let target = "/big?cc=max-age%3D60&size=20000000";
    let mut slow = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    // The same host as `get` sends, so both requests have one cache key.
    let host = gw.http.to_string();
    slow.write_all(format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await.unwrap();
    testkit::wait_until("the slow client's request reaches the origin", Duration::from_secs(5), || {
        o.count(target) == 1
    })
    .await;
    let started = std::time::Instant::now();
    let (status, h, body) = get(&gw.url(target), &[]).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(body.len(), 20_000_000);
    let cs = h["cache-status"].to_str().unwrap();
    assert!(cs == "raftgate; hit" || cs.contains("collapsed"), "{cs}");
    assert_eq!(o.count(target), 1, "one upstream request for both clients");
    assert!(took < Duration::from_secs(3), "the waiting request took {took:?} while the first client read nothing");
    drop(slow);
}

/// RFC 9111 §4.4: a 2xx/3xx answer to an unsafe method removes the stored answers of its
/// target (every query and variant of the path), whichever rule answered it.
#[tokio::test(flavor = "multi_thread")]
async fn unsafe_requests_that_succeed_invalidate_their_target() {
    let o = Origin::start().await;
    let gw = Gateway::start(&[("c.yaml", &config(&o))], &[]);
    let c = client();
    let (a, b, other) = ("/item?cc=max-age%3D300", "/item?cc=max-age%3D300&v=2", "/other?cc=max-age%3D300");
    for t in [a, b, other] {
        assert_eq!(fetch(&gw, t, &[]).await.1, "raftgate; fwd=uri-miss; stored");
        assert_eq!(fetch(&gw, t, &[]).await.1, "raftgate; hit");
    }
    let hit = |(_, cs, body): (StatusCode, String, String)| (cs, body);
    // A failed unsafe request changes nothing.
    o.failing.store(true, Ordering::SeqCst);
    assert_eq!(send(&c, "POST", &gw.url("/item"), &[], Bytes::from_static(b"x")).await.0, 503);
    o.failing.store(false, Ordering::SeqCst);
    assert_eq!(hit(fetch(&gw, a, &[]).await), ("raftgate; hit".into(), "n=1 lang=".into()));
    // One that succeeds removes both queries of its path, not other paths.
    assert_eq!(send(&c, "POST", &gw.url("/item"), &[], Bytes::from_static(b"x")).await.0, 200);
    assert_eq!(hit(fetch(&gw, a, &[]).await), ("raftgate; fwd=uri-miss; stored".into(), "n=2 lang=".into()));
    assert_eq!(hit(fetch(&gw, b, &[]).await), ("raftgate; fwd=uri-miss; stored".into(), "n=2 lang=".into()));
    assert_eq!(fetch(&gw, other, &[]).await.1, "raftgate; hit");
    // A PUT answered by a rule without a cache counts as well.
    assert_eq!(fetch(&gw, a, &[]).await.1, "raftgate; hit");
    assert_eq!(send(&c, "PUT", &gw.url("/item?x=1"), &[], Bytes::from_static(b"x")).await.0, 200);
    assert_eq!(hit(fetch(&gw, a, &[]).await), ("raftgate; fwd=uri-miss; stored".into(), "n=3 lang=".into()));
    let m = get(&format!("http://{}/metrics", gw.admin), &[]).await.2;
    let invalidated = m.lines().find(|l| l.starts_with("raftgate_cache_invalidated_total ")).unwrap_or_default();
    // The POST removed a and b; the PUT the two stored again since.
    assert_eq!(invalidated, "raftgate_cache_invalidated_total 4", "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_misses_make_one_upstream_request() {
    let o = Origin::start().await;
    let gw = Gateway::start(&[("c.yaml", &config(&o))], &[]);
    let target = "/cold?cc=max-age%3D60&delay=300";
    let mut tasks = tokio::task::JoinSet::new();
    let c = client();
    for _ in 0..100 {
        let (c, url) = (c.clone(), gw.url(target));
        tasks.spawn(async move { send(&c, "GET", &url, &[], Bytes::new()).await });
    }
    let mut collapsed = 0;
    while let Some(r) = tasks.join_next().await {
        let (status, h, body) = r.unwrap();
        assert_eq!((status, body.split(' ').next().unwrap()), (StatusCode::OK, "n=1"));
        collapsed += usize::from(h["cache-status"].to_str().unwrap().contains("collapsed"));
    }
    assert_eq!(o.count(target), 1, "100 concurrent requests for a cold key, one upstream request");
    assert!(collapsed >= 90, "{collapsed} of 100 waited for the fill");
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_stays_under_the_bound_as_100000_keys_pass() {
    let o = Origin::start().await;
    let bound: u64 = 4 << 20;
    let gw = Gateway::start(&[("c.yaml", &config(&o))], &["--cache-max-bytes", &bound.to_string()]);
    let before = gw.rss_kib();
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    let c = client();
    for i in 0..100_000 {
        let (c, url, permit) = (
            c.clone(),
            gw.url(&format!("/k{i}?cc=max-age%3D600&pad={:0>900}", i)),
            sem.clone().acquire_owned().await.unwrap(),
        );
        tasks.spawn(async move {
            let ok = send(&c, "GET", &url, &[], Bytes::new()).await.0 == StatusCode::OK;
            drop(permit);
            ok
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        ok += usize::from(r.unwrap());
    }
    assert_eq!(ok, 100_000);
    let (_, _, m) = get(&format!("http://{}/metrics", gw.admin), &[]).await;
    let line = |name: &str| {
        m.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).unwrap()
    };
    let (bytes, entries) = (line("raftgate_cache_bytes"), line("raftgate_cache_entries"));
    let grown = gw.rss_kib().saturating_sub(before);
    eprintln!("100,000 keys: cache {bytes} bytes in {entries} entries (bound {bound}); RSS grew {grown} KiB");
    assert!(bytes <= bound as f64 && entries > 1000.0, "{bytes} bytes, {entries} entries");
    assert!(grown < 64 * 1024, "RSS grew {grown} KiB with a {bound}-byte cache");
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_reaches_every_node_of_a_cluster() {
    let mut c = TestCluster::bootstrap(&[]).await;
    c.join(2, 1, false);
    c.join(3, 1, false);
    c.wait_members(1, &[1, 2, 3], &[]).await;
    let cfg = upstreams(&[("up", &c.up)])
        + "---\nkind: Route\nname: cached\nrules:\n  - backendRefs: [{ upstream: up }]\n    cache: { defaultTtl: 600s }\n";
    c.write_config(&cfg);
    c.wait_serving(&[1, 2, 3], "/users/1").await;
    for id in [1, 2, 3] {
        for path in ["/users/1", "/users/2", "/orders/1"] {
            let (_, h, _) = get(&c.gw(id).url(path), &[]).await;
            let (_, h2, _) = get(&c.gw(id).url(path), &[]).await;
            assert!(h.contains_key("cache-status"));
            assert_eq!(h2["cache-status"], "raftgate; hit", "node {id} {path}");
        }
    }
    let cli = |args: &[&str]| {
        let admin = format!("127.0.0.1:{}", c.nodes[&2].admin);
        let out = std::process::Command::new(testkit::binary("raftgate"))
            .args(["--admin", &admin, "-o", "json", "cache", "purge"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        json(&String::from_utf8_lossy(&out.stdout))
    };
    let v = cli(&["--route", "cached", "--prefix", "/users/"]);
    let purged: Vec<u64> = v["nodes"].as_array().unwrap().iter().map(|n| n["purged"].as_u64().unwrap()).collect();
    assert_eq!(purged, [2, 2, 2], "{v}");
    for id in [1, 2, 3] {
        let (_, h, _) = get(&c.gw(id).url("/users/1"), &[]).await;
        assert_eq!(h["cache-status"], "raftgate; fwd=uri-miss; stored", "node {id} purged");
        let (_, h, _) = get(&c.gw(id).url("/orders/1"), &[]).await;
        assert_eq!(h["cache-status"], "raftgate; hit", "node {id} kept what the prefix does not cover");
    }
    let v = cli(&["--route", "cached"]);
    let purged: Vec<u64> = v["nodes"].as_array().unwrap().iter().map(|n| n["purged"].as_u64().unwrap()).collect();
    assert_eq!(purged, [2, 2, 2], "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_to_identified_consumers_are_not_shared_unless_public() {
    use sha2::Digest;
    let o = Origin::start().await;
    let sha = |k: &str| hex::encode(sha2::Sha256::digest(k.as_bytes()));
    let cfg = config(&o)
        + &format!(
            "---\nkind: SecurityPolicy\nname: keys\ntargetRefs: [{{ kind: Route, name: site }}]\n\
             apiKeyAuth:\n  extractFrom: [{{ header: x-api-key }}]\n  consumers:\n\
             \x20   - {{ name: alice, sha256: {} }}\n    - {{ name: bob, sha256: {} }}\n",
            sha("alice-key-0123456789"),
            sha("bob-key-0123456789ab")
        );
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let private = "/a?cc=max-age%3D60";
    let (_, cs, body) = fetch(&gw, private, &[("x-api-key", "alice-key-0123456789")]).await;
    assert_eq!((cs.as_str(), body.split(' ').next().unwrap()), ("raftgate; fwd=uri-miss", "n=1"));
    let (_, cs, body) = fetch(&gw, private, &[("x-api-key", "bob-key-0123456789ab")]).await;
    assert_eq!(
        (cs.as_str(), body.split(' ').next().unwrap()),
        ("raftgate; fwd=uri-miss", "n=2"),
        "bob never gets alice's answer"
    );
    let public = "/a?cc=public,max-age%3D60";
    fetch(&gw, public, &[("x-api-key", "alice-key-0123456789")]).await;
    let (_, cs, _) = fetch(&gw, public, &[("x-api-key", "bob-key-0123456789ab")]).await;
    assert_eq!(cs, "raftgate; hit", "an answer that says public is shared");
}
