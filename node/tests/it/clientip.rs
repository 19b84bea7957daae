//! The real client address end to end: `X-Forwarded-For` chains from trusted and untrusted
//! peers, and HAProxy in front of raftgated speaking the PROXY protocol v2. Clients take
//! other loopback source addresses (127.0.0.0/8 is all local) to be other hosts.

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// Sends one HTTP/1.1 request from `source` and reads the whole answer; `(status, body)`.
async fn from(source: &str, to: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut s = sock.connect(to).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    s.write_all((req + "\r\n").as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn config(u: &Upstream) -> String {
    upstreams(&[("u", u)])
        + "---\nkind: Route\nname: partners\nrules:\n  - matches: [{ path: { value: /partners } }]\n    backendRefs: [{ upstream: u }]\n\
           \x20   rateLimit: { requests: 1, period: 1m, burst: 1 }\n\
           ---\nkind: Route\nname: open\nrules:\n  - backendRefs: [{ upstream: u }]\n\
           ---\nkind: SecurityPolicy\nname: partners\ntargetRefs: [{ name: partners }]\n\
           authorization: { rules: [{ action: Allow, principal: { clientCIDRs: [198.51.100.0/24, 127.0.0.3] } }] }\n"
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let u = Upstream::start("u", Behaviour::Echo).await;
    let gw = Gateway::start(&[("c.yaml", &config(&u))], &["--trusted-proxies", "127.0.0.1,10.0.0.0/8"]);
    // 127.0.0.1 is a trusted load balancer; behind it a CDN edge (10.1.1.1) and the client,
    // who forged an entry of its own on the left.
    let chain = [("x-forwarded-for", "6.6.6.6, 198.51.100.4, 10.1.1.1")];
    let (s, body) = from("127.0.0.1", gw.http, "/partners", &chain).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(json(&body)["headers"]["x-forwarded-for"], "6.6.6.6, 198.51.100.4, 10.1.1.1, 127.0.0.1");
    // The rate limit counts the real client: 198.51.100.4 has used its one request, another
    // client behind the same balancer has not.
    assert_eq!(from("127.0.0.1", gw.http, "/partners", &chain).await.0, 429);
    assert_eq!(from("127.0.0.1", gw.http, "/partners", &[("x-forwarded-for", "198.51.100.5")]).await.0, 200);
    // An untrusted peer claiming an allowed address gains nothing, and its headers are
    // replaced before they reach an upstream.
    assert_eq!(from("127.0.0.2", gw.http, "/partners", &[("x-forwarded-for", "198.51.100.9")]).await.0, 403);
    let (s, body) =
        from("127.0.0.2", gw.http, "/", &[("x-forwarded-for", "198.51.100.9"), ("x-forwarded-proto", "https")]).await;
    assert_eq!(s, 200);
    let seen = json(&body);
    assert_eq!(
        (seen["headers"]["x-forwarded-for"].as_str(), seen["headers"]["x-forwarded-proto"].as_str()),
        (Some("127.0.0.2"), Some("http"))
    );
    // The access log names the real client.
    let line = testkit::eventually("the access log names 198.51.100.5", Duration::from_secs(5), || {
        gw.logs().into_iter().find(|l| l.contains("\"client\":\"198.51.100.5\""))
    });
    assert!(line.contains("/partners"), "{line}");
}

struct Haproxy {
    child: Child,
    _dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Haproxy {
    /// HAProxy on loopback forwarding TCP to `backend` with `send-proxy-v2`.
    fn start(backend: SocketAddr) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let port = testkit::free_port();
        let conf = format!(
            "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend fe\n  bind 127.0.0.1:{port}\n  default_backend gw\n\
             backend gw\n  server raftgated {backend} send-proxy-v2\n"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy is not installed: run `make deps`");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "haproxy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Haproxy { child, _dir: dir, addr }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn haproxy_in_front_names_the_client_with_proxy_protocol_v2() {
    let u = Upstream::start("u", Behaviour::Echo).await;
    let gw = Gateway::start(&[("c.yaml", &config(&u))], &["--trusted-proxies", "127.0.0.1", "--proxy-protocol"]);
    let lb = Haproxy::start(gw.http);
    // Client 127.0.0.3 is allowed by address; 127.0.0.4 is not, whatever it claims.
    let (s, body) = from("127.0.0.3", lb.addr, "/partners", &[]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(json(&body)["headers"]["x-forwarded-for"], "127.0.0.3");
    assert_eq!(from("127.0.0.4", lb.addr, "/partners", &[("x-forwarded-for", "127.0.0.3")]).await.0, 403);
    // The rate limit is per client behind the balancer.
    assert_eq!(from("127.0.0.3", lb.addr, "/partners", &[]).await.0, 429);
    let (s, body) = from("127.0.0.5", lb.addr, "/", &[]).await;
    assert_eq!((s, json(&body)["headers"]["x-forwarded-for"].as_str()), (200, Some("127.0.0.5")));
    // A connection without the header is closed unanswered, from the balancer's address or not.
    assert_eq!(from("127.0.0.1", gw.http, "/", &[]).await.0, 0);
    assert_eq!(from("127.0.0.6", gw.http, "/", &[]).await.0, 0);
    // And the listener keeps serving the balancer.
    assert_eq!(from("127.0.0.3", lb.addr, "/", &[]).await.0, 200);
}

#[test]
fn proxy_protocol_without_trusted_proxies_is_refused_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_raftgated"))
        .args(["--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--proxy-protocol"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--proxy-protocol needs --trusted-proxies"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_raftgated"))
        .args(["--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--trusted-proxies", "10.0.0.1/8"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("host bits set; the block is `10.0.0.0/8`"));
}
