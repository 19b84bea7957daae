//! Endpoints from DNS end to end: a real dnsmasq (Debian's `dnsmasq-base`, from `make deps`)
//! on a free loopback port serves A and SRV records that the test changes while clients
//! send requests through raftgated; upstreams listen on 127.0.0.2, .3 and .4 with one port.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::harness::*;

/// dnsmasq answering from a hosts file (re-read on SIGHUP) and SRV records (fixed per run).
struct Dnsmasq {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    ttl: u32,
}

impl Dnsmasq {
    /// `None` (the test skips) when dnsmasq is not installed.
    fn start(hosts: &str, srv: &[String], ttl: u32) -> Option<Dnsmasq> {
        if Command::new("dnsmasq").arg("--version").output().is_err() {
            skip("dnsmasq is not installed (make deps installs dnsmasq-base)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hosts"), hosts).unwrap();
        let port = free_port();
        let mut d = Dnsmasq { child: None, port, dir, ttl };
        d.run(srv);
        Some(d)
    }

    fn run(&mut self, srv: &[String]) {
        let mut cmd = Command::new("dnsmasq");
        cmd.args(["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll"])
            .args(["--listen-address=127.0.0.1", "--bind-interfaces", "--pid-file=", "--log-facility=-"])
            .arg(format!("--port={}", self.port))
            .arg(format!("--local-ttl={}", self.ttl))
            .arg(format!("--addn-hosts={}", self.hosts().display()))
            .args(srv.iter().map(|s| format!("--srv-host={s}")));
        if is_root() {
            // Otherwise it drops to `nobody`, who cannot read the test's hosts file.
            cmd.args(["--user=root", "--group=root"]);
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("dnsmasq starts");
        self.child = Some(child);
        // Up once it accepts TCP (it serves UDP and TCP on the same port).
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "dnsmasq did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn hosts(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    /// New A records: the hosts file rewritten, then SIGHUP (when running).
    fn set_hosts(&self, text: &str) {
        std::fs::write(self.hosts(), text).unwrap();
        if let Some(c) = &self.child {
            assert!(Command::new("kill").args(["-HUP", &c.id().to_string()]).status().unwrap().success());
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A port free for both UDP and TCP on 127.0.0.1.
fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Upstreams named after their address, all on one port: 127.0.0.2, .3, .4 …
async fn upstreams_on(hosts: &[&str], behaviour: Behaviour) -> (u16, HashMap<String, Upstream>) {
    'retry: loop {
        let first = tokio::net::TcpListener::bind((hosts[0], 0)).await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for h in &hosts[1..] {
            match tokio::net::TcpListener::bind((*h, port)).await {
                Ok(l) => listeners.push(l),
                Err(_) => continue 'retry,
            }
        }
        let ups = hosts
            .iter()
            .zip(listeners)
            .map(|(h, l)| (h.to_string(), Upstream::serve(h, behaviour, false, l)))
            .collect();
        return (port, ups);
    }
}

/// Clients sending requests back to back until stopped: answers per upstream, failures.
struct Load {
    stop: Arc<AtomicBool>,
    by_upstream: Arc<Mutex<HashMap<String, usize>>>,
    failures: Arc<Mutex<Vec<String>>>,
    total: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let by_upstream = Arc::new(Mutex::new(HashMap::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let total = Arc::new(AtomicUsize::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, by, fail, total, url) =
                    (stop.clone(), by_upstream.clone(), failures.clone(), total.clone(), url.clone());
                tokio::spawn(async move {
                    let c = client();
                    while !stop.load(Ordering::Relaxed) {
                        let req = http::Request::get(url.as_str()).body(Full::new(Bytes::new())).unwrap();
                        let outcome = match c.request(req).await {
                            Ok(resp) => {
                                let (parts, body) = resp.into_parts();
                                let body = body.collect().await.map(|b| b.to_bytes());
                                match (parts.status.as_u16(), body) {
                                    (200, Ok(_)) => Ok(parts.headers["x-upstream"].to_str().unwrap().to_string()),
                                    (s, b) => {
                                        Err(format!("{s}: {:?}", b.map(|b| String::from_utf8_lossy(&b).into_owned())))
                                    }
                                }
                            }
                            Err(e) => Err(format!("{e:?}")),
                        };
                        total.fetch_add(1, Ordering::Relaxed);
                        match outcome {
                            Ok(up) => *by.lock().unwrap().entry(up).or_insert(0) += 1,
                            Err(e) => fail.lock().unwrap().push(e),
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Load { stop, by_upstream, failures, total, tasks }
    }

    fn served_by(&self, upstream: &str) -> usize {
        self.by_upstream.lock().unwrap().get(upstream).copied().unwrap_or(0)
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (self.total.load(Ordering::Relaxed), self.failures.lock().unwrap().clone())
    }
}

fn dns_view(gw: &Gateway, name: &str) -> serde_json::Value {
    let s = gw.status();
    s["upstreams"].as_array().unwrap().iter().find(|u| u["name"] == name).cloned().unwrap_or_else(|| panic!("{s:#}"))
}

fn addresses(view: &serde_json::Value) -> Vec<String> {
    view["endpoints"].as_array().unwrap().iter().map(|e| e["address"].as_str().unwrap().to_string()).collect()
}

/// Seconds from now until `check` holds (panics after `limit`).
async fn time_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    testkit::wait_until(what, limit, &mut check).await;
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_records_come_and_go_under_load_and_an_outage_keeps_the_last_good_set() {
    let (port, ups) = upstreams_on(&["127.0.0.2", "127.0.0.3", "127.0.0.4"], Behaviour::Echo).await;
    // TTL 60 s: the refresh interval (2 s) is what bounds how soon changes are seen.
    let Some(mut dns) = Dnsmasq::start("127.0.0.2 users.test\n127.0.0.3 users.test\n", &[], 60) else { return };
    let cfg = format!(
        "kind: Upstream\nname: users\ndns: {{ name: users.test, port: {port}, refresh: 2s }}\n---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{{ upstream: users }}]\n"
    );
    let gw = Gateway::start(&[("c.yaml", &cfg)], &["--dns-server", &dns.server()]);
    // The first request waits for the first resolution instead of failing.
    let (status, _, body) = get(&gw.url("/"), &[]).await;
    assert_eq!(status, 200, "{body}");

    let load = Load::start(gw.url("/"), 4);
    testkit::wait_until("both endpoints serve", Duration::from_secs(5), || {
        load.served_by("127.0.0.2") > 20 && load.served_by("127.0.0.3") > 20
    })
    .await;

    // A new record is used within the refresh interval.
    dns.set_hosts("127.0.0.2 users.test\n127.0.0.3 users.test\n127.0.0.4 users.test\n");
    let added =
        time_until("the new endpoint serves", Duration::from_secs(10), || load.served_by("127.0.0.4") > 0).await;
    assert!(added <= Duration::from_millis(2_500), "the new record took {added:?} (refresh 2s)");

    // A removed record is drained: no new requests reach it, then it can go away.
    dns.set_hosts("127.0.0.2 users.test\n127.0.0.4 users.test\n");
    let removed = time_until("the removed endpoint leaves the set", Duration::from_secs(10), || {
        !addresses(&dns_view(&gw, "users")).contains(&format!("127.0.0.3:{port}"))
    })
    .await;
    assert!(removed <= Duration::from_millis(2_500), "the removal took {removed:?} (refresh 2s)");
    let drained = load.served_by("127.0.0.3");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(load.served_by("127.0.0.3"), drained, "requests still reach the removed endpoint");
    ups["127.0.0.3"].listen(false).await;

    // DNS goes away: the last good set keeps serving, and the failure shows.
    let (a, c) = (load.served_by("127.0.0.2"), load.served_by("127.0.0.4"));
    dns.stop();
    testkit::wait_until("the failed resolution shows", Duration::from_secs(15), || {
        dns_view(&gw, "users")["dns"]["failures"].as_u64() >= Some(2)
    })
    .await;
    let view = dns_view(&gw, "users");
    assert_eq!(view["dns"]["result"], "error", "{view:#}");
    assert_eq!(addresses(&view), [format!("127.0.0.2:{port}"), format!("127.0.0.4:{port}")], "{view:#}");
    assert!(load.served_by("127.0.0.2") > a && load.served_by("127.0.0.4") > c, "the last good set serves");
    let m = get(&format!("http://{}/metrics", gw.admin), &[]).await.2;
    assert!(metric(&m, "raftgate_dns_resolutions_total{upstream=\"users\",result=\"error\"}") >= 2.0, "{m}");
    assert!(metric(&m, "raftgate_dns_resolutions_total{upstream=\"users\",result=\"ok\"}") >= 3.0, "{m}");
    assert_eq!(metric(&m, "raftgate_dns_endpoints{upstream=\"users\"}"), 2.0, "{m}");
    let out = Command::new(testkit::binary("raftgate"))
        .args(["--admin", &gw.admin.to_string(), "upstreams"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.contains(&format!("127.0.0.2:{port}")) && table.contains("dns error"), "{table}");
    assert!(
        table.contains("users: DNS `users.test` failed") && table.contains("serving the endpoints found"),
        "{table}"
    );

    // Back: it resolves again and follows the records.
    dns.set_hosts("127.0.0.2 users.test\n");
    dns.run(&[]);
    testkit::wait_until("DNS resolves again", Duration::from_secs(20), || {
        let v = dns_view(&gw, "users");
        v["dns"]["result"] == "ok" && addresses(&v) == [format!("127.0.0.2:{port}")]
    })
    .await;

    let (total, failures) = load.finish().await;
    assert!(total > 1_000, "only {total} requests were sent");
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    eprintln!("{total} requests, 0 failed; new record served after {added:?}, removal seen after {removed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn srv_records_give_ports_and_weights_and_a_short_ttl_refreshes_sooner() {
    let (port, ups) = upstreams_on(&["127.0.0.2", "127.0.0.3"], Behaviour::Echo).await;
    let hosts = "127.0.0.2 one.test\n127.0.0.3 two.test\n";
    let srv = |weights: (u16, u16)| {
        vec![
            format!("_http._tcp.users.test,one.test,{port},0,{}", weights.0),
            format!("_http._tcp.users.test,two.test,{port},0,{}", weights.1),
            // A lower-priority standby: not used while the preferred records exist.
            format!("_http._tcp.users.test,standby.test,9,10,1"),
        ]
    };
    // TTL 1 s under a 1 h refresh: the TTL is what sets the pace.
    let Some(mut dns) = Dnsmasq::start(hosts, &srv((3, 1)), 1) else { return };
    let cfg = "kind: Upstream\nname: users\ndns: { name: _http._tcp.users.test, type: SRV, refresh: 1h }\nloadBalancer: { policy: random }\n---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: users }]\n";
    let gw = Gateway::start(&[("c.yaml", cfg)], &["--dns-server", &dns.server()]);
    let c = client();
    let mut count = HashMap::<String, usize>::new();
    for _ in 0..400 {
        let (status, h, body) = send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
        assert_eq!(status, 200, "{body}");
        *count.entry(h["x-upstream"].to_str().unwrap().to_string()).or_insert(0) += 1;
    }
    let one = count.get("127.0.0.2").copied().unwrap_or(0);
    assert!((240..360).contains(&one), "SRV weights 3:1 gave {count:?}");
    let view = dns_view(&gw, "users");
    let weights: Vec<u64> =
        view["endpoints"].as_array().unwrap().iter().map(|e| e["weight"].as_u64().unwrap()).collect();
    assert_eq!(addresses(&view), [format!("127.0.0.2:{port}"), format!("127.0.0.3:{port}")], "{view:#}");
    assert_eq!(weights, [3, 1]);

    // New SRV records (dnsmasq reads them at start): seen within about the TTL, not the
    // hour of `refresh`.
    dns.stop();
    dns.run(&srv((1, 1))[..1]);
    let seen = time_until("the removed SRV target leaves", Duration::from_secs(15), || {
        addresses(&dns_view(&gw, "users")) == [format!("127.0.0.2:{port}")]
    })
    .await;
    assert!(seen < Duration::from_secs(10), "took {seen:?}");
    drop(ups);
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_that_stay_keep_their_health_when_dns_changes_the_set() {
    let (port, ups) = upstreams_on(&["127.0.0.2", "127.0.0.3", "127.0.0.4"], Behaviour::Echo).await;
    let Some(dns) = Dnsmasq::start("127.0.0.2 users.test\n127.0.0.3 users.test\n", &[], 0) else { return };
    // Slow to come back (healthyThreshold 10 at 200 ms = 2 s) so that state reset by a new
    // set would show as traffic to the sick endpoint.
    let cfg = format!(
        "kind: Upstream\nname: users\ndns: {{ name: users.test, port: {port}, refresh: 1s }}\nhealthCheck:\n  active: {{ path: /health, interval: 200ms, timeout: 100ms, unhealthyThreshold: 1, healthyThreshold: 10 }}\n---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{{ upstream: users }}]\n"
    );
    let gw = Gateway::start(&[("c.yaml", &cfg)], &["--dns-server", &dns.server()]);
    testkit::wait_until("both endpoints found", Duration::from_secs(5), || {
        addresses(&dns_view(&gw, "users")).len() == 2
    })
    .await;
    ups["127.0.0.2"].set(Behaviour::Status(503));
    let health = |addr: &str| {
        let v = dns_view(&gw, "users");
        let e = v["endpoints"].as_array().unwrap().iter().find(|e| e["address"] == format!("{addr}:{port}")).cloned();
        e.map(|e| e["health"].as_str().unwrap().to_string())
    };
    testkit::wait_until("the sick endpoint is out", Duration::from_secs(5), || {
        health("127.0.0.2").as_deref() == Some("unhealthy")
    })
    .await;
    // Healthy again from now, but 10 probes (2 s) are needed to be let back in.
    ups["127.0.0.2"].set(Behaviour::Echo);
    let before = ups["127.0.0.2"].traffic();
    dns.set_hosts("127.0.0.2 users.test\n127.0.0.3 users.test\n127.0.0.4 users.test\n");
    testkit::wait_until("the new endpoint is found", Duration::from_secs(5), || {
        addresses(&dns_view(&gw, "users")).len() == 3
    })
    .await;
    assert_eq!(health("127.0.0.2").as_deref(), Some("unhealthy"), "the endpoint that stayed kept its health");
    let c = client();
    for _ in 0..60 {
        let (status, _, body) = send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
        assert_eq!(status, 200, "{body}");
    }
    // It may have come back by now (2 s after it recovered); until then it got nothing.
    if health("127.0.0.2").as_deref() == Some("unhealthy") {
        assert_eq!(ups["127.0.0.2"].traffic(), before, "the unhealthy endpoint got requests after the DNS change");
    }
    assert!(ups["127.0.0.4"].traffic() > 0, "the new endpoint serves");
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}
