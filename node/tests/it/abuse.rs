//! Clients we did not write, abusing the data plane: HTTP/2 floods sent with Python's `h2`
//! library (`scripts/h2-abuse.py`), and request-smuggling shapes over raw sockets with
//! nginx as the upstream, a parser that is not ours. Other clients must stay served, memory
//! bounded, and the upstream must never see a request the client hid inside another.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A Python 3 that imports `h2`: Debian's (`make deps` installs python3-h2), else the one
/// on PATH (pip's).
fn python_with_h2() -> PathBuf {
    for py in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(py).args(["-c", "import h2"]).output().is_ok_and(|o| o.status.success());
        if ok {
            return PathBuf::from(py);
        }
    }
    panic!("no python3 with the h2 package: run `make deps` (Debian's python3-h2) or `pip install h2`");
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/h2-abuse.py")
}

/// Requests from an ordinary HTTP/1.1 client while an attack runs: how many, how many
/// failed, the slowest.
#[derive(Default)]
struct Canary {
    ok: AtomicU64,
    failed: AtomicU64,
    slowest_ms: AtomicU64,
}

async fn canary(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Canary>) {
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let ok = tokio::time::timeout(Duration::from_secs(5), get(&format!("http://{addr}/canary"), &[("host", "a")]))
            .await
            .is_ok_and(|(s, _, _)| s == http::StatusCode::OK);
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tally.slowest_ms.fetch_max(ms, Ordering::Relaxed);
        if ok { &tally.ok } else { &tally.failed }.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each HTTP/2 attack runs for a few seconds against h2c, with a canary client alongside.
/// The connection under attack must be ended by the node (GOAWAY or close) where the attack
/// never stops on its own, every canary request must succeed, the node must stay within its
/// memory and give back the attacker's connection slots.
#[tokio::test(flavor = "multi_thread")]
async fn http2_floods_from_a_real_h2_client_leave_other_clients_served() {
    let python = python_with_h2();
    let up = Upstream::start("up", Behaviour::Echo).await;
    let cfg = upstreams(&[("up", &up)]) + "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: up }]\n";
    let gw = Gateway::start(&[("c.yaml", &cfg)], &["--write-timeout", "3s", "--idle-timeout", "3s"]);
    let mut report = Vec::new();
    for (attack, must_end) in [
        ("rapid-reset", true),
        ("continuation", true),
        ("settings", false),
        ("ping", false),
        // Ended by the stall timer (the write timeout, 3 s here): before it, the stalled
        // streams held the connection until the keep-alive ping went unanswered (30 s +
        // 20 s), or for ever for a client that answers pings but never opens its window.
        ("zero-window", true),
        ("stream-flood", false),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Canary::default());
        let probe = tokio::spawn(canary(gw.http, stop.clone(), tally.clone()));
        let out = tokio::task::spawn_blocking({
            let (python, addr) = (python.clone(), gw.http.to_string());
            move || Command::new(python).arg(script()).args([attack, &addr, "6"]).output().unwrap()
        })
        .await
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        probe.await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{attack}: {text}\n{}", String::from_utf8_lossy(&out.stderr));
        let result = json(text.trim());
        let (ok, failed, slowest) = (
            tally.ok.load(Ordering::Relaxed),
            tally.failed.load(Ordering::Relaxed),
            tally.slowest_ms.load(Ordering::Relaxed),
        );
        report.push(format!("{attack}: {result}; canary {ok} ok, {failed} failed, slowest {slowest} ms"));
        assert_eq!(failed, 0, "{attack}: other clients failed while it ran:\n{}", report.join("\n"));
        assert!(ok >= 20, "{attack}: the canary barely ran:\n{}", report.join("\n"));
        assert!(slowest < 3000, "{attack}: other clients waited {slowest} ms:\n{}", report.join("\n"));
        if must_end {
            let (conns, ended) = (result["connections"].as_u64().unwrap(), result["ended_by_server"].as_u64().unwrap());
            assert!(
                ended >= 1 && ended + 1 >= conns,
                "{attack}: the node left connections open:\n{}",
                report.join("\n")
            );
        }
        assert!(gw.peak_rss_kib() < 256 * 1024, "{attack}: peak RSS {} KiB", gw.peak_rss_kib());
    }
    eprintln!("{}", report.join("\n"));
    // Every attacker's connection is gone: the idle and write timeouts reclaimed the stalled ones.
    let started = Instant::now();
    loop {
        let open = metric(&gw, "raftgate_open_connections").unwrap_or(0.0);
        if open == 0.0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "{open} connections still open");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One value of the node's Prometheus metrics, summed over its label sets.
fn metric(gw: &Gateway, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(gw.admin).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// nginx logging every request it parses, answering each with the request's own URI (so
/// a response answering another request shows).
fn nginx() -> Nginx {
    Nginx::start(|d, port| {
        format!(
            "log_format seen '$request|$content_length|$http_transfer_encoding|$status';\n\
             access_log {d}/access.log seen;\n\
             keepalive_requests 100000;\n\
             server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"answer to $request_uri\\n\"; }} }}"
        )
    })
}

/// Every request line nginx parsed so far, with its framing and status.
fn seen(nginx: &Nginx) -> Vec<String> {
    std::fs::read_to_string(nginx.dir.path().join("access.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Request-smuggling shapes (CL.TE, TE.CL, obfuscated Transfer-Encoding, duplicate and
/// malformed Content-Length, bare CR and LF, chunk-size tricks), each followed on the same
/// connection by an ordinary request. nginx, behind the node, must never parse a request the
/// client hid in a body (`/smuggled-N`), and afterwards every answer on the node's pooled
/// upstream connections must answer its own request: no desync.
#[tokio::test(flavor = "multi_thread")]
async fn smuggling_shapes_never_desync_a_real_upstream() {
    let nginx = nginx();
    let cfg = format!(
        "kind: Upstream\nname: nginx\nendpoints: [{{ address: \"{}\" }}]\n---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{{ upstream: nginx }}]\n",
        nginx.addr
    );
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let hidden = |n: usize| format!("GET /smuggled-{n} HTTP/1.1\r\nHost: a\r\n\r\n");
    type Shape = Box<dyn Fn(usize) -> String>;
    let shapes: Vec<(&str, Shape)> = vec![
        (
            "CL.TE",
            Box::new(move |n| {
                let body = format!("0\r\n\r\n{}", hidden(n));
                format!(
                    "POST /s-{n} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
                    body.len()
                )
            }),
        ),
        (
            "TE.CL",
            Box::new(move |n| {
                let inner = hidden(n);
                format!("POST /s-{n} HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\n", inner.len())
            }),
        ),
        (
            "TE with a space before the colon",
            Box::new(move |n| te_variant(n, "Transfer-Encoding : chunked", &hidden(n))),
        ),
        ("TE xchunked", Box::new(move |n| te_variant(n, "Transfer-Encoding: xchunked", &hidden(n)))),
        ("TE with a tab", Box::new(move |n| te_variant(n, "Transfer-Encoding:\tchunked", &hidden(n)))),
        ("TE in capitals", Box::new(move |n| te_variant(n, "Transfer-Encoding: CHUNKED", &hidden(n)))),
        (
            "TE twice",
            Box::new(move |n| te_variant(n, "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity", &hidden(n))),
        ),
        ("TE list", Box::new(move |n| te_variant(n, "Transfer-Encoding: identity, chunked", &hidden(n)))),
        (
            "TE folded (obs-fold)",
            Box::new(move |n| te_variant(n, "X-Pad: a\r\n Transfer-Encoding: chunked", &hidden(n))),
        ),
        ("TE after a bare LF", Box::new(move |n| te_variant(n, "X-Pad: a\nTransfer-Encoding: chunked", &hidden(n)))),
        ("TE after a bare CR", Box::new(move |n| te_variant(n, "X-Pad: a\rTransfer-Encoding: chunked", &hidden(n)))),
        ("TE with a NUL", Box::new(move |n| te_variant(n, "Transfer-Encoding: chunked\0", &hidden(n)))),
        (
            "Content-Length twice, different",
            Box::new(move |n| {
                let h = hidden(n);
                format!(
                    "POST /s-{n} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{h}",
                    h.len()
                )
            }),
        ),
        (
            "Content-Length list",
            Box::new(move |n| {
                let h = hidden(n);
                format!("POST /s-{n} HTTP/1.1\r\nHost: a\r\nContent-Length: 0, {}\r\n\r\n{h}", h.len())
            }),
        ),
        (
            "Content-Length with a plus",
            Box::new(move |n| {
                let h = hidden(n);
                format!("POST /s-{n} HTTP/1.1\r\nHost: a\r\nContent-Length: +{}\r\n\r\n{h}", h.len())
            }),
        ),
        (
            "Content-Length in hex",
            Box::new(move |n| {
                let h = hidden(n);
                format!("POST /s-{n} HTTP/1.1\r\nHost: a\r\nContent-Length: 0x{:x}\r\n\r\n{h}", h.len())
            }),
        ),
        (
            "Content-Length with a space before the colon",
            Box::new(move |n| {
                let h = hidden(n);
                format!("POST /s-{n} HTTP/1.1\r\nHost: a\r\nContent-Length : {}\r\n\r\n{h}", h.len())
            }),
        ),
        (
            "chunk size overflowing 64 bits",
            Box::new(move |n| {
                format!("POST /s-{n} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\n{}\r\n0\r\n\r\n", hidden(n))
            }),
        ),
        (
            "chunk extension with a bare LF",
            Box::new(move |n| {
                let h = hidden(n);
                format!("POST /s-{n} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x};a\nb\r\n{h}\r\n0\r\n\r\n", h.len())
            }),
        ),
        (
            "bare LF line endings",
            Box::new(move |n| {
                let h = hidden(n);
                format!("POST /s-{n} HTTP/1.1\nHost: a\nContent-Length: 0\nTransfer-Encoding: chunked\n\n0\n\n{h}")
            }),
        ),
        (
            "GET with a body",
            Box::new(move |n| {
                let h = hidden(n);
                format!("GET /s-{n} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{h}", h.len())
            }),
        ),
    ];
    let mut lines = Vec::new();
    for (n, (name, shape)) in shapes.iter().enumerate() {
        let req = shape(n) + &format!("GET /after-{n} HTTP/1.1\r\nHost: a\r\n\r\n");
        let resp = raw(gw.http, req.as_bytes(), Duration::from_millis(1500)).await;
        let statuses: Vec<&str> = resp.lines().filter(|l| l.starts_with("HTTP/1.1 ")).collect();
        lines.push(format!("{name}: {statuses:?}"));
        assert!(!resp.contains("smuggled"), "{name}: a hidden request was answered:\n{resp}");
        // nginx is healthy: whatever went wrong was the client's doing, never a 5xx.
        assert!(!statuses.is_empty() && statuses.iter().all(|s| !s.starts_with("HTTP/1.1 5")), "{name}: {statuses:?}");
    }
    let seen = seen(&nginx);
    let report = format!("{}\nnginx saw:\n{}", lines.join("\n"), seen.join("\n"));
    assert!(seen.iter().all(|l| !l.contains("smuggled")), "nginx parsed a hidden request:\n{report}");
    // Each shape reaches nginx at most as itself and its follower.
    for n in 0..shapes.len() {
        let mine =
            seen.iter().filter(|l| l.contains(&format!("/s-{n} ")) || l.contains(&format!("/after-{n} "))).count();
        let total = seen.iter().filter(|l| l.split(' ').nth(1).is_some_and(|p| p.ends_with(&format!("-{n}")))).count();
        assert!(mine <= 2 && total == mine, "shape {n} reached nginx {total} times:\n{report}");
    }
    // No answer crossed over: many requests through the node's pooled connections, each
    // answered for itself.
    let c = client();
    for i in 0..200 {
        let (status, _, body) =
            send(&c, "GET", &format!("http://{}/check-{i}", gw.http), &[("host", "a")], bytes::Bytes::new()).await;
        assert_eq!((status, body.trim()), (http::StatusCode::OK, format!("answer to /check-{i}").as_str()), "{report}");
    }
    eprintln!("{report}");
}

/// A POST whose framing hangs on an obfuscated Transfer-Encoding, with a Content-Length
/// that disagrees: read one way, the body hides `hidden`.
fn te_variant(n: usize, te: &str, hidden: &str) -> String {
    let chunked = format!("0\r\n\r\n{hidden}");
    format!("POST /s-{n} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n{te}\r\n\r\n{chunked}", chunked.len())
}
