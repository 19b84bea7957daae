//! Test harness: a `raftgated` process on a temporary config directory, scriptable
//! upstreams, and HTTP clients.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Says why a test cannot run here, on stderr and in `$RAFTGATE_SKIP_LOG` (where `make test`
/// counts it as skipped rather than passed).
pub fn skip(why: &str) {
    eprintln!("SKIPPED: {why}");
    if let Some(log) = std::env::var_os("RAFTGATE_SKIP_LOG") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(log).unwrap();
        writeln!(f, "{why}").unwrap();
    }
}

/// nginx (from `make deps`) on a free loopback port, one worker, in its own directory;
/// stopped when dropped. Tests give the lines inside `http { }` that differ.
pub struct Nginx {
    child: Child,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl Nginx {
    /// `http(dir, port)`: the `http` block's own lines (servers, logs); temp paths are set.
    pub fn start(http: impl FnOnce(&str, u16) -> String) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = testkit::free_port();
        let d = dir.path().display().to_string();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;\n\
               uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n{}\n}}\n",
            http(&d, port)
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let nginx = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|n| Command::new(n).arg("-v").output().is_ok())
            .expect("nginx is not installed: run `make deps` (nginx-light)");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not start: {:?}",
                std::fs::read_to_string(dir.path().join("error.log"))
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { child, dir, addr }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `raftgated`. Killed when dropped.
pub struct Gateway {
    child: Child,
    /// The config directory, when the harness made it.
    _dir: Option<tempfile::TempDir>,
    pub config_dir: std::path::PathBuf,
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    pub fn start(files: &[(&str, &str)], extra: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let mut gw = Gateway::launch(dir.path(), extra);
        gw._dir = Some(dir);
        gw
    }

    /// Starts `raftgated` on an existing config directory.
    pub fn launch(config_dir: &std::path::Path, extra: &[&str]) -> Gateway {
        Self::launch_with(Some(config_dir), extra)
    }

    /// Starts `raftgated`, with or without a config directory.
    pub fn launch_with(config_dir: Option<&std::path::Path>, extra: &[&str]) -> Gateway {
        Self::launch_env(config_dir, extra, &[])
    }

    /// Starts `raftgated` with extra environment variables.
    pub fn launch_env(config_dir: Option<&std::path::Path>, extra: &[&str], env: &[(String, String)]) -> Gateway {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_raftgated"));
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        cmd.args(["--http-addr", "127.0.0.1:0", "--config-poll-interval", "100ms"]);
        if !extra.contains(&"--admin-addr") {
            cmd.args(["--admin-addr", "127.0.0.1:0"]);
        }
        if let Some(dir) = config_dir {
            cmd.arg("--config-dir").arg(dir);
        }
        // A loopback cluster without TLS or a token is an open cluster: say so, as an
        // operator would have to (the TLS tests bring their own certificates).
        let open_cluster = extra.contains(&"--data-dir")
            && !extra.contains(&"--tls-ca")
            && !extra.contains(&"--admin-token-file")
            && !extra.contains(&"--insecure-plaintext");
        if open_cluster {
            cmd.arg("--insecure-plaintext");
        }
        cmd.args(extra).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("raftgated starts");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<(String, SocketAddr)>();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["message"] == "listening" {
                        let addr = v["addr"].as_str().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("{line}"));
                        let _ = tx.send((v["listener"].as_str().unwrap().to_string(), addr));
                    }
                }
                l.lock().unwrap().push(line);
            }
        });
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        let want = 2 + usize::from(extra.contains(&"--https-addr")) + usize::from(extra.contains(&"--data-dir"));
        let mut addrs = HashMap::new();
        while addrs.len() < want {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok((k, a)) => {
                    addrs.insert(k, a);
                }
                Err(_) => panic!("raftgated did not start: {:#?}", log.lock().unwrap()),
            }
        }
        Gateway {
            child,
            _dir: None,
            config_dir: config_dir.map(std::path::Path::to_path_buf).unwrap_or_default(),
            http: addrs["http"],
            https: addrs.get("https").copied(),
            admin: addrs["admin"],
            log,
        }
    }

    /// The process id (to send signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Replaces a config file; the node picks it up on its next poll.
    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.config_dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.config_dir.join(name)).unwrap();
    }

    pub fn config_hash(&self) -> String {
        self.status()["config"]["hash"].as_str().unwrap().to_string()
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&blocking_get(self.admin, "/status")).unwrap()
    }

    /// The process's peak resident memory so far, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/<pid>/status");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// The process's resident memory now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/<pid>/status");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Whether the process has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until the node serves a config other than `old`.
    pub fn wait_for_new_config(&self, old: &str) -> String {
        for _ in 0..100 {
            let h = self.config_hash();
            if h != old {
                return h;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("config was not reloaded: {:#?}", self.log.lock().unwrap());
    }

    pub fn logs(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET over a plain std socket, usable from sync and async code alike.
fn blocking_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {out}");
    body.to_string()
}

/// What a scripted upstream does with a request. Tests change it while the upstream runs
/// (`Upstream::set`) to make it fail, stall or recover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with a JSON echo of the request (method, path, headers, body length).
    Echo,
    /// Sleep this long, then echo.
    Delay(Duration),
    /// Close the connection without answering.
    Reset,
    /// Answer every request with this status (and an echo body).
    Status(u16),
}

/// A small hyper server on loopback. Counts requests (health-check probes apart) and
/// accepted connections.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Every request, probes included.
    pub requests: Arc<AtomicUsize>,
    /// Requests sent by raftgated's active health checks.
    pub probes: Arc<AtomicUsize>,
    pub connections: Arc<AtomicUsize>,
    behaviour: Arc<Mutex<Behaviour>>,
    listening: tokio::sync::watch::Sender<bool>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Upstream {
    pub async fn start(name: &str, behaviour: Behaviour) -> Upstream {
        Self::start_with(name, behaviour, false).await
    }

    /// Changes what the upstream does from the next request (or connection, for `Reset`).
    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    /// Requests that were not health-check probes.
    pub fn traffic(&self) -> usize {
        self.requests.load(Ordering::SeqCst) - self.probes.load(Ordering::SeqCst)
    }

    /// Closes the listening socket and every open connection, so connecting fails
    /// (`false`), or listens again on the same address (`true`).
    pub async fn listen(&self, on: bool) {
        self.listening.send_replace(on);
        // Let the accept loop act on it.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// `h2`: serve HTTP/2 with prior knowledge only (as a gRPC server does).
    pub async fn start_with(name: &str, behaviour: Behaviour, h2: bool) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(name, behaviour, h2, listener)
    }

    /// An HTTP/1 upstream on a listener the test bound (another loopback address, a
    /// chosen port).
    pub fn serve(name: &str, behaviour: Behaviour, h2: bool, listener: tokio::net::TcpListener) -> Upstream {
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let probes = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Mutex::new(behaviour));
        let (listening, mut listen_rx) = tokio::sync::watch::channel(true);
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (r, p, c, n, b) = (requests.clone(), probes.clone(), connections.clone(), name.to_string(), shared.clone());
        tokio::spawn(async move {
            let mut listener = Some(listener);
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Some(l) = listener.as_ref() else {
                    // Down: wait to be told to listen again, then take the same address.
                    tokio::select! {
                        _ = listen_rx.changed() => {}
                        _ = &mut stopped => return,
                    }
                    if *listen_rx.borrow_and_update() {
                        listener = Some(tokio::net::TcpListener::bind(addr).await.unwrap());
                    }
                    continue;
                };
                let (stream, _) = tokio::select! {
                    a = l.accept() => a.unwrap(),
                    _ = listen_rx.changed() => {
                        if !*listen_rx.borrow_and_update() {
                            listener = None;
                            conns.abort_all();
                        }
                        continue;
                    }
                    _ = &mut stopped => return,
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (r, p, n, b) = (r.clone(), p.clone(), n.clone(), b.clone());
                conns.spawn(async move {
                    if *b.lock().unwrap() == Behaviour::Reset {
                        // Read the request, then drop the socket without a response.
                        let mut buf = [0u8; 1024];
                        let _ = tokio::io::AsyncReadExt::read(&mut { stream }, &mut buf).await;
                        r.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    let svc = service_fn(move |req: Request<Incoming>| {
                        r.fetch_add(1, Ordering::SeqCst);
                        if req.headers().get("user-agent").is_some_and(|v| v == "raftgate-health-check") {
                            p.fetch_add(1, Ordering::SeqCst);
                        }
                        let behaviour = *b.lock().unwrap();
                        upstream_handle(req, n.clone(), behaviour)
                    });
                    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    if h2 {
                        b = b.http2_only();
                    }
                    let _ = b.serve_connection_with_upgrades(TokioIo::new(stream), svc).await;
                });
                // Reap finished connections so the set does not grow.
                while conns.try_join_next().is_some() {}
            }
        });
        Upstream { addr, requests, probes, connections, behaviour: shared, listening, _stop: stop }
    }
}

async fn upstream_handle(
    mut req: Request<Incoming>,
    name: String,
    behaviour: Behaviour,
) -> Result<Response<http_body_util::combinators::BoxBody<Bytes, hyper::Error>>, Box<dyn std::error::Error + Send + Sync>>
{
    if let Behaviour::Delay(d) = behaviour {
        tokio::time::sleep(d).await;
    }
    if behaviour == Behaviour::Reset {
        // Decided after the connection was accepted: an error makes hyper close it unanswered.
        return Err("reset on command".into());
    }
    // WebSocket-style upgrade: answer 101 and echo bytes back.
    if req.headers().get(http::header::UPGRADE).is_some() {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
            .unwrap();
        return Ok(resp);
    }
    let method = req.method().to_string();
    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let version = format!("{:?}", req.version());
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_str().unwrap_or("").to_string())))
        .collect();
    let grpc = req.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let body = req.into_body().collect().await?.to_bytes();
    if grpc {
        // A gRPC-shaped answer: data, then status in trailers.
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers.insert("grpc-message", "from-trailers".parse().unwrap());
        let frames =
            vec![Ok::<_, hyper::Error>(hyper::body::Frame::data(body)), Ok(hyper::body::Frame::trailers(trailers))];
        let stream = http_body_util::StreamBody::new(futures_stream(frames));
        return Ok(Response::builder()
            .header("content-type", "application/grpc")
            .header("x-upstream", name)
            .body(stream.boxed())
            .unwrap());
    }
    let echo = serde_json::json!({
        "upstream": name, "method": method, "path": path, "version": version,
        "headers": headers, "bodyLength": body.len(),
    });
    let status = match behaviour {
        Behaviour::Status(s) => s,
        _ => 200,
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-upstream", name)
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must-not-pass")
        .body(Full::new(Bytes::from(echo.to_string())).map_err(|e| match e {}).boxed())
        .unwrap())
}

fn futures_stream<T: Send + 'static>(items: Vec<T>) -> impl futures_core::Stream<Item = T> + Send {
    struct Iter<T>(std::vec::IntoIter<T>);
    impl<T> futures_core::Stream for Iter<T> {
        type Item = T;
        fn poll_next(mut self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    impl<T> Unpin for Iter<T> {}
    Iter(items.into_iter())
}

/// A plain HTTP/1.1 client with keep-alive.
pub fn client() -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// GET with extra headers; returns status, headers and body as text.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> (StatusCode, http::HeaderMap, String) {
    send(&client(), "GET", url, headers, Bytes::new()).await
}

pub async fn send(
    c: &hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (StatusCode, http::HeaderMap, String) {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = c.request(b.body(Full::new(body)).unwrap()).await.expect("request completes");
    let (parts, body) = resp.into_parts();
    let text = String::from_utf8_lossy(&body.collect().await.unwrap().to_bytes()).into_owned();
    (parts.status, parts.headers, text)
}

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Config for one upstream per (name, address).
pub fn upstreams(list: &[(&str, &Upstream)]) -> String {
    list.iter()
        .map(|(name, u)| format!("---\nkind: Upstream\nname: {name}\nendpoints: [{{ address: \"{}\" }}]\n", u.addr))
        .collect()
}

/// Raw bytes over TCP: sends `request`, returns everything read until the peer closes or
/// `timeout` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

pub use testkit::free_port;
