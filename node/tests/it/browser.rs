//! CORS as a browser enforces it: headless Chromium loads a page from one origin that
//! `fetch`es routes on the real `raftgated` (another origin), and reports what the page was
//! allowed to see. Our own CORS tests check the headers we send; this checks that a
//! browser someone else wrote draws the conclusions we meant (preflights, credentials,
//! exposed headers, a readable 401) — and that nothing a browser refuses to send first
//! reaches the upstream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};

use crate::harness::*;

const KEY: &str = "k-3e9d1c7b5a2f4e6d8c0b1a2f3e4d5c6b";

/// Each probe is one `fetch` from the page: its name, the path on the gateway, and the
/// `fetch` options. What it reports: the status and the `x-upstream` header as the page
/// can read them, or the error the browser raised instead.
const PAGE: &str = r#"<!doctype html>
<html><body><pre id="out">running</pre><script>
const q = new URLSearchParams(location.search);
const gw = 'http://127.0.0.1:' + q.get('gw');
const key = q.get('key');
async function probe(name, path, init) {
  try {
    const r = await fetch(gw + path, init);
    await r.text();
    return [name, { status: r.status, upstream: r.headers.get('x-upstream') }];
  } catch (e) {
    return [name, { error: e.name }];
  }
}
(async () => {
  const out = {};
  for (const [name, path, init] of [
    ['keyed', '/api/keyed', { headers: { 'x-api-key': key } }],
    ['no-key', '/api/no-key', {}],
    ['wrong-key', '/api/wrong-key', { headers: { 'x-api-key': 'not-the-key' } }],
    ['with-credentials', '/api/with-credentials', { credentials: 'include', headers: { 'x-api-key': key } }],
    ['post', '/api/post', { method: 'POST', body: '{}', headers: { 'x-api-key': key, 'content-type': 'application/json' } }],
    ['put', '/api/put', { method: 'PUT', headers: { 'x-api-key': key } }],
    ['header-not-allowed', '/api/header-not-allowed', { headers: { 'x-api-key': key, 'x-other': '1' } }],
    ['plain', '/plain/simple', {}],
    ['plain-credentials', '/plain/credentials', { credentials: 'include' }],
  ]) {
    const [n, r] = await probe(name, path, init);
    out[n] = r;
  }
  document.getElementById('out').textContent = JSON.stringify(out);
})();
</script></body></html>
"#;

/// Serves [`PAGE`] at every path.
async fn page_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .header("content-type", "text/html; charset=utf-8")
                            .body(Full::new(Bytes::from_static(PAGE.as_bytes())))
                            .unwrap(),
                    )
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| std::process::Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// Loads `url` in a fresh headless Chromium and returns the page's report.
fn run_page(browser: &str, url: &str) -> HashMap<String, serde_json::Value> {
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let report = dom
        .split_once("<pre id=\"out\">")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(text, _)| text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
        .unwrap_or_else(|| panic!("no report in the page:\n{dom}\n{}", String::from_utf8_lossy(&out.stderr)));
    serde_json::from_str(&report).unwrap_or_else(|e| panic!("page report {report:?}: {e}"))
}

/// What the page saw for a probe: `Ok((status, exposed x-upstream))` or `Err(error name)`.
fn seen(report: &HashMap<String, serde_json::Value>, probe: &str) -> Result<(u16, Option<String>), String> {
    let r = &report[probe];
    match r["error"].as_str() {
        Some(e) => Err(e.to_string()),
        None => Ok((r["status"].as_u64().unwrap() as u16, r["upstream"].as_str().map(str::to_string))),
    }
}

/// The paths (and methods) of requests the gateway forwarded to the upstream, from its
/// access log.
fn forwarded(gw: &Gateway) -> Vec<String> {
    gw.logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let f = if v["fields"].is_object() { v["fields"].clone() } else { v };
            (f["endpoint"].as_str().is_some_and(|e| !e.is_empty()))
                .then(|| format!("{} {}", f["method"].as_str().unwrap_or(""), f["uri"].as_str().unwrap_or("")))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_enforces_the_cors_policy_as_configured() {
    let Some(browser) = chromium() else {
        return skip("browser::cors: no Chromium (make deps installs the `chromium` package)");
    };
    let page = page_server().await;
    let u = Upstream::start("u", Behaviour::Echo).await;
    let allowed = format!("http://127.0.0.1:{}", page.port());
    let route = |name: &str| {
        format!(
            "---\nkind: Route\nname: {name}\nrules:\n  - matches: [{{ path: {{ value: /{name} }} }}]\n    backendRefs: [{{ upstream: u }}]\n"
        )
    };
    let config = upstreams(&[("u", &u)])
        + &route("api")
        + &route("plain")
        + &format!(
            "---\nkind: SecurityPolicy\nname: api\ntargetRefs: [{{ name: api }}]\n\
             apiKeyAuth:\n  extractFrom: [{{ header: x-api-key }}]\n  consumers: [{{ name: page, sha256: {} }}]\n\
             cors:\n  allowOrigins: [\"{allowed}\"]\n  allowMethods: [GET, POST]\n  allowHeaders: [x-api-key, content-type]\n\
             \x20 exposeHeaders: [x-upstream]\n  allowCredentials: true\n",
            hex::encode(Sha256::digest(KEY.as_bytes()))
        )
        + &format!("---\nkind: SecurityPolicy\nname: plain\ntargetRefs: [{{ name: plain }}]\ncors:\n  allowOrigins: [\"{allowed}\"]\n");
    let gw = Gateway::start(&[("config.yaml", &config)], &[]);
    let query = format!("?gw={}&key={KEY}", gw.http.port());

    // From the allowed origin.
    let b = browser.to_string();
    let url = format!("{allowed}/{query}");
    let report = tokio::task::spawn_blocking(move || run_page(&b, &url)).await.unwrap();
    let upstream = Some("u".to_string());
    // A preflight for x-api-key, then the request; x-upstream is exposed to the page.
    assert_eq!(seen(&report, "keyed"), Ok((200, upstream.clone())), "{report:?}");
    // The gateway's own refusals are readable by the page, so it can ask for a key.
    assert_eq!(seen(&report, "no-key"), Ok((401, None)), "{report:?}");
    assert_eq!(seen(&report, "wrong-key"), Ok((401, None)), "{report:?}");
    assert_eq!(seen(&report, "with-credentials"), Ok((200, upstream.clone())), "{report:?}");
    assert_eq!(seen(&report, "post"), Ok((200, upstream.clone())), "{report:?}");
    // Refused preflights: the browser never sends the request.
    assert_eq!(seen(&report, "put"), Err("TypeError".into()), "{report:?}");
    assert_eq!(seen(&report, "header-not-allowed"), Err("TypeError".into()), "{report:?}");
    // No exposeHeaders: the page sees the status but not x-upstream.
    assert_eq!(seen(&report, "plain"), Ok((200, None)), "{report:?}");
    // No allowCredentials: the browser withholds a credentialed answer from the page.
    assert_eq!(seen(&report, "plain-credentials"), Err("TypeError".into()), "{report:?}");

    // From another origin (same page, named `localhost`): the page sees nothing.
    let b = browser.to_string();
    let url = format!("http://localhost:{}/{query}", page.port());
    let other = tokio::task::spawn_blocking(move || run_page(&b, &url)).await.unwrap();
    for probe in ["keyed", "no-key", "post", "plain", "plain-credentials"] {
        assert_eq!(seen(&other, probe), Err("TypeError".into()), "{probe}: {other:?}");
    }

    // What reached the upstream: the allowed page's requests whose preflight passed (or
    // needed none), and the other page's simple requests (CORS hides answers; it does not
    // stop simple requests, which is why the guarded routes also need keys).
    let forwarded = testkit::eventually("the access log has both pages' requests", Duration::from_secs(5), || {
        let f = forwarded(&gw);
        (f.len() >= 7).then_some(f)
    });
    let mut forwarded = forwarded;
    forwarded.sort();
    assert_eq!(
        forwarded,
        [
            "GET /api/keyed",
            "GET /api/with-credentials",
            "GET /plain/credentials",
            "GET /plain/credentials",
            "GET /plain/simple",
            "GET /plain/simple",
            "POST /api/post",
        ],
    );
}
