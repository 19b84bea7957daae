//! Traffic policies end to end: response compression (decoded by curl and by the gzip,
//! brotli and zstd command-line tools).

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::harness::*;

/// Text that compresses the way real pages do: words repeating with variation.
fn text(len: usize) -> Vec<u8> {
    let words = ["gateway", "raft", "commit", "route", "upstream", "policy", "cluster", "node", "request"];
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0usize;
    while out.len() < len {
        out.extend_from_slice(words[(i * 7 + i / 3) % words.len()].as_bytes());
        out.extend_from_slice(if i % 11 == 10 { b".\n" } else { b" " });
        out.extend_from_slice(i.to_string().as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// An upstream that serves content of chosen types and sizes: `/text/N` (text/plain, N
/// bytes), `/png/N`, `/encoded` (already gzip), `/no-transform`, `/small` (100 bytes),
/// `/stream` (1 MiB in 16 chunks, 100 ms apart, no Content-Length; `done` is set once the
/// last chunk is handed over).
async fn content_server(done: Arc<AtomicBool>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let done = done.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let done = done.clone();
                    async move { Ok::<_, std::convert::Infallible>(content(req.uri().path(), done)) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn content(path: &str, done: Arc<AtomicBool>) -> Response<Body> {
    let full = |t: &str, b: Vec<u8>| {
        Response::builder().header("content-type", t).header("etag", "\"v1\"").body(Full::new(Bytes::from(b)).boxed())
    };
    let mut parts = path.trim_start_matches('/').split('/');
    let resp = match (parts.next().unwrap_or(""), parts.next().and_then(|n| n.parse().ok())) {
        ("text", Some(n)) => full("text/plain; charset=utf-8", text(n)),
        ("png", Some(n)) => full("image/png", text(n)),
        ("small", _) => full("text/plain", text(100)),
        ("encoded", _) => Response::builder()
            .header("content-type", "text/plain")
            .header("content-encoding", "gzip")
            .body(Full::new(Bytes::from(gzip(&text(5000)))).boxed()),
        ("no-transform", _) => Response::builder()
            .header("content-type", "text/plain")
            .header("cache-control", "max-age=60, no-transform")
            .body(Full::new(Bytes::from(text(5000))).boxed()),
        ("stream", _) => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(1);
            tokio::spawn(async move {
                let all = text(1 << 20);
                for chunk in all.chunks(64 * 1024) {
                    if tx.send(Ok(Frame::data(Bytes::copy_from_slice(chunk)))).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                done.store(true, Ordering::SeqCst);
            });
            let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            Response::builder().header("content-type", "text/event-stream").body(body.boxed())
        }
        _ => Response::builder().status(404).body(Full::new(Bytes::new()).boxed()),
    };
    resp.unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), data).unwrap();
    drop(child.stdin.take());
    child.wait_with_output().unwrap().stdout
}

/// curl's response headers (lower-cased names) and body bytes.
fn curl(url: &str, args: &[&str]) -> (Vec<(String, String)>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl {args:?} {url}: {}", String::from_utf8_lossy(&out.stderr));
    let headers = std::fs::read_to_string(head)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (headers, std::fs::read(body).unwrap())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Decodes `data` with the command-line tool for `coding`.
fn decode(coding: &str, data: &[u8]) -> Vec<u8> {
    let tool = match coding {
        "gzip" => "gzip",
        "br" => "brotli",
        "zstd" => "zstd",
        other => panic!("no decoder for {other}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in");
    std::fs::write(&file, data).unwrap();
    let out = Command::new(tool).args(["-d", "-c"]).arg(&file).output().expect("the decoder runs");
    assert!(out.status.success(), "{tool} -d: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_are_compressed_as_negotiated_and_decode_to_the_original() {
    let done = Arc::new(AtomicBool::new(false));
    let up = content_server(done.clone()).await;
    let cfg = format!(
        r#"kind: Upstream
name: content
endpoints: [{{ address: "{up}" }}]
---
kind: Route
name: site
rules:
  - matches: [{{ path: {{ value: /plain }} }}]
    backendRefs: [{{ upstream: content }}]
    filters:
      - type: URLRewrite
        urlRewrite: {{ path: {{ type: ReplacePrefixMatch, replacePrefixMatch: / }} }}
  - compression: {{ minBytes: 1024 }}
    backendRefs: [{{ upstream: content }}]
  - matches: [{{ path: {{ value: /gz-only }} }}]
    compression: {{ encodings: [gzip] }}
    backendRefs: [{{ upstream: content }}]
    filters:
      - type: URLRewrite
        urlRewrite: {{ path: {{ type: ReplacePrefixMatch, replacePrefixMatch: / }} }}
"#
    );
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let original = text(200_000);

    // curl --compressed: it offers what it can decode and decodes it.
    let (h, body) = curl(&gw.url("/text/200000"), &["--compressed"]);
    assert_eq!(body, original, "curl --compressed gets the original bytes");
    let coding = header(&h, "content-encoding").expect("compressed").to_string();
    assert!(["zstd", "br", "gzip"].contains(&coding.as_str()), "{coding}");
    assert_eq!(header(&h, "vary"), Some("accept-encoding"));
    assert_eq!(header(&h, "etag"), Some("W/\"v1\""), "a compressed variant's validator is weak");

    // Each coding alone, decoded by its own command-line tool.
    for coding in ["gzip", "br", "zstd"] {
        let (h, body) = curl(&gw.url("/text/200000"), &["-H", &format!("accept-encoding: {coding}")]);
        assert_eq!(header(&h, "content-encoding"), Some(coding));
        assert_eq!(header(&h, "content-length"), None, "the compressed length is not known up front");
        assert!(body.len() < original.len() / 3, "{coding}: {} bytes from {}", body.len(), original.len());
        assert_eq!(decode(coding, &body), original, "{coding} decodes to the original");
    }

    // q-values, then the rule's order (zstd, br, gzip by default).
    for (accept, want) in [
        ("gzip;q=1, br;q=0.5, zstd;q=0.1", Some("gzip")),
        ("gzip, br", Some("br")),
        ("gzip, br, zstd", Some("zstd")),
        ("br;q=0, *;q=0.3", Some("zstd")),
        ("zstd;q=0, br;q=0, gzip;q=0", None),
        ("identity", None),
    ] {
        let (h, body) = curl(&gw.url("/text/5000"), &["-H", &format!("accept-encoding: {accept}")]);
        assert_eq!(header(&h, "content-encoding"), want, "{accept}");
        let plain = match want {
            Some(c) => decode(c, &body),
            None => body,
        };
        assert_eq!(plain, text(5000), "{accept}");
    }
    let (h, _) = curl(&gw.url("/gz-only/text/5000"), &["-H", "accept-encoding: br, zstd, gzip;q=0.1"]);
    assert_eq!(header(&h, "content-encoding"), Some("gzip"), "only the rule's codings are offered");

    // What is left alone.
    let ae = ["-H", "accept-encoding: gzip, br, zstd"];
    for (path, why) in [
        ("/small", "smaller than minBytes"),
        ("/png/5000", "a type not listed"),
        ("/no-transform", "Cache-Control: no-transform"),
        ("/plain/text/5000", "a rule without compression"),
    ] {
        let (h, body) = curl(&gw.url(path), &ae);
        assert_eq!(header(&h, "content-encoding"), None, "{why}");
        assert!(!body.is_empty() && body.len() == header(&h, "content-length").unwrap().parse::<usize>().unwrap());
    }
    let (h, body) = curl(&gw.url("/encoded"), &ae);
    assert_eq!(header(&h, "content-encoding"), Some("gzip"), "the upstream's own encoding stays");
    assert_eq!(decode("gzip", &body), text(5000), "and is not compressed twice");
    let (h, _) = curl(&gw.url("/text/5000"), &["-I", "-H", "accept-encoding: gzip"]);
    assert_eq!(header(&h, "content-encoding"), None, "HEAD is left alone");
    assert_eq!(header(&h, "content-length"), Some("5000"));

    // Streaming: a 1 MiB answer sent over 1.6 s reaches the client compressed, and its
    // first bytes arrive long before the upstream has finished.
    let start = Instant::now();
    let req = Request::get(gw.url("/stream")).header("accept-encoding", "gzip").body(Full::new(Bytes::new())).unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            if first.is_none() && !data.is_empty() {
                first = Some((start.elapsed(), done.load(Ordering::SeqCst)));
            }
            got.extend_from_slice(&data);
        }
    }
    let (first_after, upstream_done) = first.expect("some data");
    assert!(!upstream_done, "the first compressed bytes came before the upstream finished");
    assert!(first_after < Duration::from_millis(800), "first bytes after {first_after:?}");
    assert!(done.load(Ordering::SeqCst));
    assert_eq!(decode("gzip", &got), text(1 << 20));
    eprintln!("stream: first compressed bytes after {first_after:?}, whole answer after {:?}", start.elapsed());

    // Counted per route and coding.
    let metrics = reqwest_metrics(&gw).await;
    for coding in ["gzip", "br", "zstd"] {
        let line = format!("raftgate_compressed_responses_total{{route=\"site\",encoding=\"{coding}\"}}");
        assert!(metrics.lines().any(|l| l.starts_with(&line)), "{line} in /metrics");
    }
    assert!(metrics.contains("raftgate_compression_bytes_total{route=\"site\",encoding=\"gzip\",stage=\"in\"}"));
}

async fn reqwest_metrics(gw: &Gateway) -> String {
    let (_, _, body) = get(&format!("http://{}/metrics", gw.admin), &[]).await;
    body
}

/// An upstream that records what it receives (Host and body of each request), answering
/// after `delay` with `status`.
struct Recorder {
    addr: std::net::SocketAddr,
    seen: Arc<std::sync::Mutex<Vec<(String, Bytes)>>>,
}

impl Recorder {
    async fn start(delay: Duration, status: u16) -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<std::sync::Mutex<Vec<(String, Bytes)>>> = Arc::default();
        let s = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let s = s.clone();
                        async move {
                            let host =
                                req.headers().get("host").map(|h| h.to_str().unwrap().to_string()).unwrap_or_default();
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            s.lock().unwrap().push((host, body));
                            tokio::time::sleep(delay).await;
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from_static(b"mirror")))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Recorder { addr, seen }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn mirrors_get_a_share_of_copies_and_never_touch_the_client() {
    let primary = Upstream::start("primary", Behaviour::Echo).await;
    let all = Recorder::start(Duration::ZERO, 200).await;
    let tenth = Recorder::start(Duration::ZERO, 200).await;
    let slow = Recorder::start(Duration::from_secs(2), 200).await;
    let failing = Recorder::start(Duration::ZERO, 500).await;
    let mirror = |path: &str, to: &str, extra: &str| {
        format!(
            "  - matches: [{{ path: {{ value: /{path} }} }}]\n    backendRefs: [{{ upstream: primary }}]\n    filters:\n      - type: RequestMirror\n        requestMirror: {{ backendRef: {{ upstream: {to} }}{extra} }}\n"
        )
    };
    let cfg = format!(
        "{}---\nkind: Upstream\nname: all\nendpoints: [{{ address: \"{}\" }}]\n---\nkind: Upstream\nname: tenth\nendpoints: [{{ address: \"{}\" }}]\n---\nkind: Upstream\nname: slow\nendpoints: [{{ address: \"{}\" }}]\n---\nkind: Upstream\nname: failing\nendpoints: [{{ address: \"{}\" }}]\n---\nkind: Upstream\nname: absent\nendpoints: [{{ address: \"127.0.0.1:{}\" }}]\n---\nkind: Route\nname: m\nrules:\n{}{}{}{}{}{}",
        upstreams(&[("primary", &primary)]),
        all.addr,
        tenth.addr,
        slow.addr,
        failing.addr,
        free_port(),
        mirror("all", "all", ", maxBodyBytes: 1000"),
        mirror("tenth", "tenth", ", percent: 10"),
        mirror("slow", "slow", ", maxInFlight: 5"),
        mirror("failing", "failing", ""),
        mirror("absent", "absent", ", timeout: 1s"),
        // Two mirrors on one rule.
        "  - matches: [{ path: { value: /both } }]\n    backendRefs: [{ upstream: primary }]\n    filters:\n      - type: RequestMirror\n        requestMirror: { backendRef: { upstream: all } }\n      - type: RequestMirror\n        requestMirror: { backendRef: { upstream: tenth }, fraction: { numerator: 1, denominator: 1 } }\n",
    );
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let c = client();

    // A copy: same method, path and body, Host marked as shadow traffic.
    let (status, _, body) =
        send(&c, "POST", &gw.url("/all/x?q=1"), &[("host", "api.example.com:8080")], Bytes::from_static(b"hello"))
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["upstream"], "primary");
    testkit::eventually_async("the copy", Duration::from_secs(5), || async { (all.count() == 1).then_some(()) }).await;
    assert_eq!(all.seen.lock().unwrap()[0], ("api.example.com-shadow:8080".to_string(), Bytes::from_static(b"hello")));
    // A body over maxBodyBytes is not mirrored (and is counted); the client is served.
    let (status, _, _) = send(&c, "POST", &gw.url("/all/big"), &[], Bytes::from(vec![b'x'; 2000])).await;
    assert_eq!(status, 200);
    let (status, _, _) = send(&c, "GET", &gw.url("/both"), &[], Bytes::new()).await;
    assert_eq!(status, 200);
    testkit::eventually_async("both mirrors", Duration::from_secs(5), || async {
        (all.count() == 2 && tenth.count() == 1).then_some(())
    })
    .await;

    // percent: 10 of 10,000 requests, 32 at a time.
    let before = primary.traffic();
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10_000 {
        let (c, url, permit) = (c.clone(), gw.url("/tenth"), sem.clone().acquire_owned().await.unwrap());
        tasks.spawn(async move {
            let (status, _, _) = send(&c, "GET", &url, &[], Bytes::new()).await;
            drop(permit);
            status
        });
    }
    let mut ok = 0;
    while let Some(s) = tasks.join_next().await {
        ok += usize::from(s.unwrap() == 200);
    }
    assert_eq!(ok, 10_000);
    assert_eq!(primary.traffic() - before, 10_000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mirrored = tenth.count() - 1;
    eprintln!("percent 10: {mirrored} of 10000 mirrored");
    assert!((800..=1200).contains(&mirrored), "{mirrored} of 10000 mirrored, want 10% ± 2%");

    // A mirror that takes 2 s: the client never waits for it; past maxInFlight, copies
    // are dropped, not queued.
    for _ in 0..30 {
        let start = Instant::now();
        let (status, _, _) = send(&c, "GET", &gw.url("/slow"), &[], Bytes::new()).await;
        assert_eq!(status, 200);
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "a slow mirror delayed the client: {:?}",
            start.elapsed()
        );
    }
    testkit::eventually_async("maxInFlight copies", Duration::from_secs(2), || async {
        (slow.count() == 5).then_some(())
    })
    .await;
    // Failing and absent mirrors change nothing for clients.
    for path in ["/failing", "/absent"] {
        for _ in 0..100 {
            let (status, _, body) = send(&c, "GET", &gw.url(path), &[], Bytes::new()).await;
            assert_eq!((status, json(&body)["upstream"].as_str()), (http::StatusCode::OK, Some("primary")), "{path}");
        }
    }
    assert_eq!(failing.count(), 100);

    // `raftgate routes` lists each rule's mirrors.
    let out = Command::new(testkit::binary("raftgate"))
        .args(["--admin", &gw.admin.to_string(), "-o", "json", "routes"])
        .output()
        .unwrap();
    let routes = json(&String::from_utf8_lossy(&out.stdout));
    let traffic: Vec<String> = routes
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["traffic"].as_array().cloned().unwrap_or_default())
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    for want in ["mirror tenth 10%", "mirror all 100%", "mirror tenth 1/1"] {
        assert!(traffic.iter().any(|t| t == want), "{want} in {traffic:?}");
    }

    let (_, _, m) = get(&format!("http://{}/metrics", gw.admin), &[]).await;
    let count = |up: &str, result: &str| {
        metric(&m, &format!("raftgate_mirror_requests_total{{route=\"m\",upstream=\"{up}\",result=\"{result}\"}}"))
    };
    assert_eq!(count("slow", "dropped"), 25.0, "{m}");
    assert_eq!(count("all", "body_too_large"), 1.0);
    assert_eq!(count("failing", "answered"), 100.0, "a 5xx from a mirror is an answer all the same");
    testkit::eventually_async("refused copies counted", Duration::from_secs(5), || async {
        let (_, _, m) = get(&format!("http://{}/metrics", gw.admin), &[]).await;
        let n = metric(&m, "raftgate_mirror_requests_total{route=\"m\",upstream=\"absent\",result=\"failed\"}");
        (n == 100.0).then_some(())
    })
    .await;
}

/// The `Set-Cookie` value of cookie `name`, if the answer sets it.
fn set_cookie(h: &http::HeaderMap, name: &str) -> Option<String> {
    h.get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_stay_on_their_endpoint_until_it_fails() {
    let ups = [
        Upstream::start("a", Behaviour::Echo).await,
        Upstream::start("b", Behaviour::Echo).await,
        Upstream::start("c", Behaviour::Echo).await,
    ];
    let cfg = format!(
        r#"kind: Upstream
name: u
endpoints: [{{ address: "{}" }}, {{ address: "{}" }}, {{ address: "{}" }}]
healthCheck:
  active: {{ path: /healthz, interval: 200ms, timeout: 100ms, unhealthyThreshold: 2, healthyThreshold: 2 }}
---
kind: Route
name: app
rules:
  - matches: [{{ path: {{ value: /cookie }} }}]
    backendRefs: [{{ upstream: u }}]
    sessionPersistence: {{ sessionName: app-session, idleTimeout: 30m, absoluteTimeout: 24h, cookieConfig: {{ lifetimeType: Permanent }} }}
  - matches: [{{ path: {{ value: /header }} }}]
    backendRefs: [{{ upstream: u }}]
    sessionPersistence: {{ type: Header, sessionName: X-Session }}
  - backendRefs: [{{ upstream: u }}]
"#,
        ups[0].addr, ups[1].addr, ups[2].addr
    );
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let c = client();

    // Without the session, round robin spreads requests.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        let (_, h, _) = send(&c, "GET", &gw.url("/other"), &[], Bytes::new()).await;
        seen.insert(h["x-upstream"].to_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), 3);

    // The first answer issues the cookie; it names no address.
    let (status, h, _) = send(&c, "GET", &gw.url("/cookie"), &[], Bytes::new()).await;
    assert_eq!(status, 200);
    let first = h["x-upstream"].to_str().unwrap().to_string();
    let raw = h.get_all("set-cookie").iter().next().unwrap().to_str().unwrap().to_string();
    assert!(raw.contains("; Path=/; HttpOnly; SameSite=Lax; Max-Age=86400"), "{raw}");
    let cookie = set_cookie(&h, "app-session").unwrap();
    for up in &ups {
        let addr = up.addr.to_string();
        assert!(!cookie.contains(&addr) && !cookie.contains(&up.addr.port().to_string()), "{cookie} reveals {addr}");
    }

    // 100 requests with the cookie: all on one endpoint, no new cookie needed.
    for i in 0..100 {
        let (status, h, _) = send(&c, "GET", &gw.url("/cookie"), &[("cookie", &cookie)], Bytes::new()).await;
        assert_eq!(status, 200);
        assert_eq!(h["x-upstream"], first.as_str(), "request {i}");
        assert_eq!(set_cookie(&h, "app-session"), None, "request {i} kept its session");
    }
    // A cookie altered by the client is not honoured: a fresh session is issued.
    let forged = format!("{}A", &cookie[..cookie.len() - 1]);
    let forged = if forged == cookie { format!("{}B", &cookie[..cookie.len() - 1]) } else { forged };
    let (_, h, _) = send(&c, "GET", &gw.url("/cookie"), &[("cookie", &forged)], Bytes::new()).await;
    assert!(set_cookie(&h, "app-session").is_some(), "an altered cookie gets a new session");

    // The endpoint's health check fails: the next request goes elsewhere, with a new cookie.
    let idx = ["a", "b", "c"].iter().position(|n| *n == first).unwrap();
    ups[idx].set(Behaviour::Status(503));
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (status, h, _) = send(&c, "GET", &gw.url("/cookie"), &[("cookie", &cookie)], Bytes::new()).await;
    assert_eq!(status, 200);
    let second = h["x-upstream"].to_str().unwrap().to_string();
    assert_ne!(second, first, "the session moved off the failed endpoint");
    let moved = set_cookie(&h, "app-session").expect("the cookie is reissued");
    assert_ne!(moved, cookie);
    for _ in 0..20 {
        let (_, h, _) = send(&c, "GET", &gw.url("/cookie"), &[("cookie", &moved)], Bytes::new()).await;
        assert_eq!(h["x-upstream"], second.as_str());
    }

    // Header sessions: the answer carries the header; sent back, it holds.
    let (_, h, _) = send(&c, "GET", &gw.url("/header"), &[], Bytes::new()).await;
    let token = h["x-session"].to_str().unwrap().to_string();
    let pinned = h["x-upstream"].to_str().unwrap().to_string();
    for _ in 0..20 {
        let (_, h, _) = send(&c, "GET", &gw.url("/header"), &[("x-session", &token)], Bytes::new()).await;
        assert_eq!(h["x-upstream"], pinned.as_str());
    }

    let (_, _, m) = get(&format!("http://{}/metrics", gw.admin), &[]).await;
    assert_eq!(metric(&m, "raftgate_sessions_total{route=\"app\",outcome=\"moved\"}"), 1.0, "{m}");
    assert_eq!(metric(&m, "raftgate_sessions_total{route=\"app\",outcome=\"invalid\"}"), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_made_on_one_node_holds_on_another_with_the_same_key() {
    let ups = [
        Upstream::start("a", Behaviour::Echo).await,
        Upstream::start("b", Behaviour::Echo).await,
        Upstream::start("c", Behaviour::Echo).await,
    ];
    let cfg = format!(
        "kind: Upstream\nname: u\nendpoints: [{{ address: \"{}\" }}, {{ address: \"{}\" }}, {{ address: \"{}\" }}]\n---\nkind: Route\nname: app\nrules:\n  - backendRefs: [{{ upstream: u }}]\n    sessionPersistence: {{}}\n",
        ups[0].addr, ups[1].addr, ups[2].addr
    );
    let keys = tempfile::tempdir().unwrap();
    let (shared, other) = (keys.path().join("shared.key"), keys.path().join("other.key"));
    std::fs::write(&shared, [7u8; 48]).unwrap();
    std::fs::write(&other, [9u8; 48]).unwrap();
    let short = keys.path().join("short.key");
    std::fs::write(&short, [1u8; 16]).unwrap();
    let (one, two, three) = (
        Gateway::start(&[("c.yaml", &cfg)], &["--session-key-file", shared.to_str().unwrap()]),
        Gateway::start(&[("c.yaml", &cfg)], &["--session-key-file", shared.to_str().unwrap()]),
        Gateway::start(&[("c.yaml", &cfg)], &["--session-key-file", other.to_str().unwrap()]),
    );
    let c = client();
    let (_, h, _) = send(&c, "GET", &one.url("/"), &[], Bytes::new()).await;
    let (cookie, pinned) = (set_cookie(&h, "raftgate-session").unwrap(), h["x-upstream"].to_str().unwrap().to_string());
    for _ in 0..10 {
        let (_, h, _) = send(&c, "GET", &two.url("/"), &[("cookie", &cookie)], Bytes::new()).await;
        assert_eq!((h["x-upstream"].to_str().unwrap(), set_cookie(&h, "raftgate-session")), (pinned.as_str(), None));
    }
    let (_, h, _) = send(&c, "GET", &three.url("/"), &[("cookie", &cookie)], Bytes::new()).await;
    assert!(set_cookie(&h, "raftgate-session").is_some(), "a node with another key does not honour the session");

    // A key file too short to be a key is refused at start-up, saying what to do.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftgated"))
        .args(["--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--session-key-file"])
        .arg(&short)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("at least 32 random bytes"), "{err}");
}
