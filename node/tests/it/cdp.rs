//! Headless Chromium driven over the DevTools protocol: a page stays open while the test
//! changes the cluster under it, the test reads the live DOM, takes screenshots, and sees
//! every request the page makes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    socket: Socket,
    next: u64,
    /// Every URL the page requested, in order.
    pub requests: Vec<String>,
}

/// The Chromium binary, if one is installed.
pub fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
}

impl Browser {
    /// Starts Chromium with a `width`×`height` window and opens `url` in its page.
    pub async fn open(binary: &str, url: &str, width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        // Chromium writes the port it chose into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let port: u16 = testkit::eventually("Chromium's DevTools port", Duration::from_secs(30), || {
            std::fs::read_to_string(&port_file).ok()?.lines().next()?.trim().parse().ok()
        });
        let list = format!("http://127.0.0.1:{port}/json/list");
        let ws = testkit::eventually_async("Chromium's page target", Duration::from_secs(20), || async {
            let (status, _, body) = crate::harness::get(&list, &[]).await;
            if !status.is_success() {
                return None;
            }
            let targets: Vec<Value> = serde_json::from_str(&body).ok()?;
            targets
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                .map(str::to_string)
        })
        .await;
        let (socket, _) = tokio_tungstenite::connect_async(ws.as_str()).await.expect("DevTools socket");
        let mut b = Browser { child, _profile: profile, socket, next: 0, requests: Vec::new() };
        b.call("Network.enable", json!({})).await;
        b.call("Page.enable", json!({})).await;
        b.call("Page.navigate", json!({ "url": url })).await;
        b
    }

    /// Sends one DevTools command and returns its result, noting the events that arrive
    /// meanwhile.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.socket.send(Message::text(msg)).await.expect("DevTools send");
        let wait = async {
            while let Some(msg) = self.socket.next().await {
                let Ok(Message::Text(text)) = msg else { continue };
                let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
                if v["method"] == "Network.requestWillBeSent" {
                    if let Some(u) = v["params"]["request"]["url"].as_str() {
                        self.requests.push(u.to_string());
                    }
                }
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
            panic!("the DevTools socket closed during {method}");
        };
        tokio::time::timeout(Duration::from_secs(30), wait).await.unwrap_or_else(|_| panic!("{method} timed out"))
    }

    /// Evaluates `expression` in the page and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }))
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page; returns how long that took.
    pub async fn wait_for(&mut self, what: &str, expression: &str, limit: Duration) -> Duration {
        let start = std::time::Instant::now();
        loop {
            if self.eval(expression).await == Value::Bool(true) {
                return start.elapsed();
            }
            if start.elapsed() > limit {
                let text = self.eval("document.body.innerText").await;
                panic!("the page did not show {what} within {limit:?}; it shows:\n{}", text.as_str().unwrap_or(""));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the whole page (not only the window) into `path`.
    pub async fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let m = self.call("Page.getLayoutMetrics", json!({})).await;
        let (w, h) = (&m["cssContentSize"]["width"], &m["cssContentSize"]["height"]);
        let clip = json!({ "x": 0, "y": 0, "width": w, "height": h, "scale": 1 });
        let r = self
            .call("Page.captureScreenshot", json!({ "format": "png", "captureBeyondViewport": true, "clip": clip }))
            .await;
        let png = base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
