//! Malformed, oversized, smuggling-shaped and slow requests.

use std::time::{Duration, Instant};

use crate::harness::*;

async fn gateway() -> (Upstream, Gateway) {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let cfg = upstreams(&[("up", &up)])
        + "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: up }]\n  - matches: [{ path: { value: /small } }]\n    backendRefs: [{ upstream: up }]\n    maxRequestBodyBytes: 100\n";
    let gw = Gateway::start(
        &[("c.yaml", &cfg)],
        &["--max-header-bytes", "16384", "--max-body-bytes", "1000", "--header-timeout", "1s"],
    );
    (up, gw)
}

fn status_line(resp: &str) -> &str {
    resp.lines().next().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_refused() {
    let (up, gw) = gateway().await;
    let t = Duration::from_secs(3);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage", b"HELLO\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("bad header", b"GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (
            "transfer-encoding other than chunked",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "transfer-encoding on HTTP/1.0",
            b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "conflicting content-lengths",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "oversized headers",
            format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000)).into_bytes(),
            "HTTP/1.1 431",
        ),
        ("no host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("encoded dot segments", b"GET /a/%2e%2e/admin HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (
            "path over 8 KiB",
            format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "p".repeat(9000)).into_bytes(),
            "HTTP/1.1 414",
        ),
        (
            "host name over 253 bytes",
            format!("GET / HTTP/1.1\r\nHost: {}.com\r\n\r\n", "h".repeat(260)).into_bytes(),
            "HTTP/1.1 400",
        ),
        ("escaped slash", b"GET /public%2F..%2Fadmin HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("escaped backslash", b"GET /public%5c..%5cadmin HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("raw backslash", b"GET /public\\..\\admin HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (
            "escapes made out of escapes",
            b"GET /public%%32%66..%%32%66admin HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        ("tomcat parent segment", b"GET /public/..;/admin HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("two Host headers", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (
            "absolute form naming another host than Host",
            b"GET http://b.example.com/ HTTP/1.1\r\nHost: a.example.com\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "declared body too large",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n".to_vec(),
            "HTTP/1.1 413",
        ),
    ];
    let mut failures = Vec::new();
    for (name, req, want) in cases {
        let resp = raw(gw.http, &req, t).await;
        if !status_line(&resp).starts_with(want) {
            failures.push(format!("{name}: wanted {want}, got {:?}", status_line(&resp)));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(up.requests.load(std::sync::atomic::Ordering::SeqCst), 0, "no bad request reached the upstream");
}

/// Content-Length together with Transfer-Encoding: hyper's parser resolves it as RFC 9112
/// §6.3 requires of an intermediary that forwards such a message: chunked framing wins and
/// Content-Length is dropped, so the upstream sees exactly one framing and cannot be
/// desynchronised; and the gateway closes the connection after answering, so bytes smuggled
/// after the chunked body are never read as a request at all.
#[tokio::test(flavor = "multi_thread")]
async fn double_framing_reaches_the_upstream_with_one_framing() {
    let (up, gw) = gateway().await;
    let req = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let resp = raw(gw.http, req, Duration::from_secs(3)).await;
    let bodies: Vec<serde_json::Value> = resp
        .match_indices("{\"bodyLength\"")
        .filter_map(|(i, _)| serde_json::Deserializer::from_str(&resp[i..]).into_iter().next()?.ok())
        .collect();
    assert_eq!(bodies.len(), 1, "{resp}");
    assert_eq!(bodies[0]["bodyLength"], 0);
    assert!(bodies[0]["headers"].get("content-length").is_none(), "{}", bodies[0]);
    assert!(resp.to_ascii_lowercase().contains("connection: close"), "{resp}");
    assert!(!resp.contains("/smuggled"));
    assert_eq!(up.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_body_over_the_limit_is_cut() {
    let (_up, gw) = gateway().await;
    let chunk = "a".repeat(600);
    let req = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let resp = raw(gw.http, req.as_bytes(), Duration::from_secs(3)).await;
    assert!(status_line(&resp).starts_with("HTTP/1.1 413"), "{resp}");
    // Within the limit it passes.
    let small = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 600\r\nConnection: close\r\n\r\n{chunk}");
    let resp = raw(gw.http, small.as_bytes(), Duration::from_secs(3)).await;
    assert!(status_line(&resp).starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"bodyLength\":600"), "{resp}");
    // A rule's own limit overrides the node's.
    let over = format!(
        "POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\nConnection: close\r\n\r\n{}",
        "b".repeat(101)
    );
    let resp = raw(gw.http, over.as_bytes(), Duration::from_secs(3)).await;
    assert!(status_line(&resp).starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("limit of 100 bytes"), "{resp}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_time_out() {
    let (_up, gw) = gateway().await;
    let started = Instant::now();
    // Half a request head, then silence: the gateway must not wait forever.
    let resp = raw(gw.http, b"GET / HTTP/1.1\r\nHost: a\r\n", Duration::from_secs(10)).await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "connection held for {waited:?}");
    assert!(resp.is_empty() || status_line(&resp).starts_with("HTTP/1.1 408"), "{resp}");
    // The gateway still serves.
    let (s, _, _) = get(&gw.url("/"), &[]).await;
    assert_eq!(s, http::StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_limit_holds_extra_clients_until_a_slot_frees() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start("up", Behaviour::Echo).await;
    let cfg = upstreams(&[("up", &up)]) + "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: up }]\n";
    let gw = Gateway::start(&[("c.yaml", &cfg)], &["--max-connections", "2"]);
    let first = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let _second = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let metrics = format!("http://{}/metrics", gw.admin);
    testkit::eventually_async("both connections to be accepted", Duration::from_secs(5), || async {
        let text = get(&metrics, &[]).await.2;
        text.lines().any(|l| l.starts_with("raftgate_open_connections{listener=\"http\"} 2")).then_some(())
    })
    .await;
    let mut third = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    third.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let waited = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(waited.is_err(), "a third connection is not served while two are open");
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(3), third.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_listener_bounds_request_heads() {
    let (_up, gw) = gateway().await;
    let big = format!("GET /healthz HTTP/1.1\r\nHost: admin\r\nx-big: {}\r\n\r\n", "a".repeat(100 * 1024));
    let resp = raw(gw.admin, big.as_bytes(), Duration::from_secs(3)).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    // A client that never finishes its head is cut off.
    let started = Instant::now();
    let resp = raw(gw.admin, b"GET /healthz HTTP/1.1\r\nHost: admin\r\n", Duration::from_secs(15)).await;
    assert!(started.elapsed() < Duration::from_secs(14), "held for {:?}: {resp}", started.elapsed());
}

/// The upstream is told the host that was routed: an absolute-form target's authority
/// reaches it as Host, and a client's own X-Forwarded-Host is replaced.
#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_sees_the_routed_host() {
    let (_up, gw) = gateway().await;
    let req = b"GET http://api.example.com:8080/x HTTP/1.1\r\nHost: API.example.com\r\nX-Forwarded-Host: evil.example\r\nConnection: close\r\n\r\n";
    let resp = raw(gw.http, req, Duration::from_secs(3)).await;
    assert!(status_line(&resp).starts_with("HTTP/1.1 200"), "{resp}");
    let body = json(&resp[resp.find("\r\n\r\n").unwrap() + 4..]);
    assert_eq!(body["headers"]["x-forwarded-host"], "api.example.com", "{body}");
    assert_eq!(body["headers"]["host"], "api.example.com:8080", "the routed authority, not the client's Host: {body}");
}

/// `--escaped-slashes`: the other actions than the default refusal.
#[tokio::test(flavor = "multi_thread")]
async fn escaped_slashes_can_be_unescaped_or_redirected() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let cfg = upstreams(&[("up", &up)])
        + "---\nkind: Route\nname: r\nrules:\n  - matches: [{ path: { value: /admin } }]\n    backendRefs: [{ upstream: up }]\n";
    let t = Duration::from_secs(3);
    let req = b"GET /public%2F..%2Fadmin?q=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

    let gw = Gateway::start(&[("c.yaml", &cfg)], &["--escaped-slashes", "unescape"]);
    let resp = raw(gw.http, req, t).await;
    assert!(status_line(&resp).starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"path\":\"/admin?q=1\""), "the upstream gets the unescaped path: {resp}");

    let gw = Gateway::start(&[("c.yaml", &cfg)], &["--escaped-slashes", "redirect"]);
    let resp = raw(gw.http, req, t).await;
    assert!(status_line(&resp).starts_with("HTTP/1.1 308"), "{resp}");
    assert!(resp.to_ascii_lowercase().contains("location: /admin?q=1\r\n"), "{resp}");
    assert_eq!(up.requests.load(std::sync::atomic::Ordering::SeqCst), 1);

    let gw = Gateway::start(&[("c.yaml", &cfg)], &["--escaped-slashes", "keep"]);
    let resp = raw(gw.http, req, t).await;
    assert!(status_line(&resp).starts_with("HTTP/1.1 404"), "`/public%2F..%2Fadmin` is one segment under /: {resp}");
}

/// `raftgate_open_connections` of the plain-HTTP listener.
async fn open_connections(gw: &Gateway) -> f64 {
    let text = get(&format!("http://{}/metrics", gw.admin), &[]).await.2;
    text.lines()
        .find_map(|l| l.strip_prefix("raftgate_open_connections{listener=\"http\"} "))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn wait_open_connections(gw: &Gateway, want: f64, within: Duration) {
    testkit::eventually_async(&format!("{want} open connections"), within, || async {
        (open_connections(gw).await == want).then_some(())
    })
    .await;
}

fn echo_config(up: &Upstream) -> String {
    upstreams(&[("up", up)]) + "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: up }]\n"
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_cannot_take_every_connection() {
    use tokio::io::AsyncReadExt;
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&[("c.yaml", &echo_config(&up))], &["--max-connections-per-ip", "2"]);
    let _a = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let _b = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    wait_open_connections(&gw, 2.0, Duration::from_secs(5)).await;
    let mut c = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf)).await.expect("closed at once");
    assert!(matches!(n, Ok(0) | Err(_)), "a third connection from one address is closed: {n:?}");
    drop(_a);
    wait_open_connections(&gw, 1.0, Duration::from_secs(5)).await;
    let (s, _, _) = get(&gw.url("/"), &[]).await;
    assert_eq!(s, http::StatusCode::OK, "a slot came back");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_is_abandoned() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&[("c.yaml", &echo_config(&up))], &["--body-timeout", "1s"]);
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly ten b").await.unwrap();
    let resp = read_some(&mut s, Duration::from_secs(10)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "held {:?}", started.elapsed());
    assert!(status_line(&resp).starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains("body_timeout"), "{resp}");
}

async fn read_some(s: &mut tokio::net::TcpStream, within: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        other => panic!("no answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_does_not_read_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&[("c.yaml", &echo_config(&up))], &["--write-timeout", "1s"]);
    // A tiny receive window and thousands of pipelined requests: the responses cannot all
    // be written, and the client never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(gw.http).await.unwrap();
    // Each answer echoes the request's 4 KiB header: 16 MiB of answers in all.
    let one = format!("GET /pipelined HTTP/1.1\r\nHost: a\r\nx-pad: {}\r\n\r\n", "p".repeat(4096));
    let burst = one.repeat(4000).into_bytes();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(&burst)).await;
    wait_open_connections(&gw, 0.0, Duration::from_secs(10)).await;
    drop(s);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_http2_connections_are_closed() {
    use http_body_util::{BodyExt, Full};
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&[("c.yaml", &echo_config(&up))], &["--idle-timeout", "1s"]);
    let tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let closed = tokio::spawn(conn);
    let req = http::Request::get("http://a/").body(Full::new(bytes::Bytes::new())).unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), http::StatusCode::OK);
    resp.into_body().collect().await.unwrap();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the idle connection is closed")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900), "closed after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn only_allowed_upgrades_become_tunnels_and_tunnels_hold_their_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw =
        Gateway::start(&[("c.yaml", &echo_config(&up))], &["--max-connections", "1", "--tunnel-idle-timeout", "2s"]);
    // An upgrade to anything but WebSocket is proxied as a plain request.
    let resp = raw(
        gw.http,
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, close\r\nUpgrade: h2c\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(status_line(&resp).starts_with("HTTP/1.1 200"), "{resp}");
    assert!(!resp.to_ascii_lowercase().contains("\"upgrade\""), "the upstream saw no Upgrade: {resp}");

    // A WebSocket tunnel holds the one connection slot while it lives...
    let mut ws = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    ws.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    assert!(read_some(&mut ws, Duration::from_secs(3)).await.starts_with("HTTP/1.1 101"));
    let opened = Instant::now();
    let mut other = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    other.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(1000), other.read(&mut buf)).await.is_err(),
        "no other connection is served while the tunnel holds the slot"
    );
    // ...until it has been quiet for the idle timeout: then it is closed and the slot freed.
    let n = tokio::time::timeout(Duration::from_secs(5), ws.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(n, 0, "the idle tunnel is closed");
    assert!(opened.elapsed() >= Duration::from_millis(1800), "closed after {:?}", opened.elapsed());
    let resp = read_some(&mut other, Duration::from_secs(3)).await;
    assert!(status_line(&resp).starts_with("HTTP/1.1 200"), "{resp}");
}

/// A body the client breaks (malformed chunked framing) is the client's fault: 400, and
/// it never counts against the upstream. Before, each one was a 502 and a failure of the
/// endpoint, so three of them opened this breaker for every client.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_bodies_are_the_clients_fault_and_never_open_the_breaker() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let cfg = format!(
        "kind: Upstream\nname: up\nendpoints: [{{ address: \"{}\" }}]\ncircuitBreaker: {{ consecutiveFailures: 3, openFor: 60s }}\nhealthCheck:\n  passive: {{ consecutiveFailures: 3, baseEjectionTime: 60s }}\n---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{{ upstream: up }}]\n",
        up.addr
    );
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    for bad in [
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\nx\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    ]
    .iter()
    .cycle()
    .take(6)
    {
        let resp = raw(gw.http, bad.as_bytes(), Duration::from_secs(3)).await;
        assert!(status_line(&resp).starts_with("HTTP/1.1 400"), "{bad:?}: {resp}");
    }
    let (status, _, body) = get(&format!("http://{}/", gw.http), &[("host", "a")]).await;
    assert_eq!(status, http::StatusCode::OK, "the breaker opened or the endpoint was ejected: {body}");
}

/// `//admin` and `/%61dmin` are `/admin` to most upstreams: they route as `/admin` and are
/// forwarded so. Before, both fell through to the catch-all route, past anything on `/admin`.
#[tokio::test(flavor = "multi_thread")]
async fn equivalent_spellings_of_a_path_route_as_one() {
    let admin = Upstream::start("admin", Behaviour::Echo).await;
    let rest = Upstream::start("rest", Behaviour::Echo).await;
    let cfg = upstreams(&[("admin", &admin), ("rest", &rest)])
        + "---\nkind: Route\nname: r\nrules:\n  - matches: [{ path: { value: /admin } }]\n    backendRefs: [{ upstream: admin }]\n  - backendRefs: [{ upstream: rest }]\n";
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    for sent in ["/admin/x", "//admin/x", "/%61dmin/x", "/%61dmin//x", "///%61%64min/x"] {
        let resp = raw(
            gw.http,
            format!("GET {sent} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(3),
        )
        .await;
        assert!(status_line(&resp).starts_with("HTTP/1.1 200"), "{sent}: {resp}");
        assert!(resp.contains("x-upstream: admin"), "{sent} did not reach the /admin route: {resp}");
        assert!(resp.contains("\"path\":\"/admin/x\""), "{sent} was not forwarded as /admin/x: {resp}");
    }
}
