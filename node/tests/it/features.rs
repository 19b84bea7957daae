//! Routing, load balancing, filters, proxy headers, errors and observability, end to end.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn routes_by_host_path_method_header_and_query() {
    let a = Upstream::start("a", Behaviour::Echo).await;
    let b = Upstream::start("b", Behaviour::Echo).await;
    let c = Upstream::start("c", Behaviour::Echo).await;
    let cfg = upstreams(&[("a", &a), ("b", &b), ("c", &c)])
        + r#"---
kind: Route
name: api
hostnames: [api.example.com]
rules:
  - matches: [{ path: { type: Exact, value: /exact } }]
    backendRefs: [{ upstream: a }]
  - matches: [{ path: { value: /v1 }, method: POST }]
    backendRefs: [{ upstream: b }]
  - matches: [{ path: { value: /v1 }, headers: [{ name: x-canary, value: "on" }] }]
    backendRefs: [{ upstream: c }]
  - matches: [{ path: { value: /v1 }, queryParams: [{ name: beta, value: "1" }] }]
    backendRefs: [{ upstream: c }]
  - matches: [{ path: { value: /v1 } }]
    backendRefs: [{ upstream: a }]
---
kind: Route
name: wild
hostnames: ["*.example.com"]
rules:
  - backendRefs: [{ upstream: b }]
"#;
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let c = client();
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        ("GET", "api.example.com", "/exact", &[], "a"),
        ("POST", "api.example.com", "/v1/users", &[], "b"),
        ("GET", "api.example.com", "/v1/users", &[("x-canary", "on")], "c"),
        ("GET", "api.example.com", "/v1/users?beta=1", &[], "c"),
        ("GET", "api.example.com", "/v1/users", &[], "a"),
        ("GET", "API.Example.com:80", "/v1", &[], "a"),
        ("GET", "www.example.com", "/anything", &[], "b"),
        ("GET", "api.example.com", "/other", &[], "b"), // falls through to the wildcard
    ];
    for (method, host, path, headers, want) in cases {
        let mut h = vec![("host", *host)];
        h.extend_from_slice(headers);
        let (status, resp_headers, _) = send(&c, method, &gw.url(path), &h, Bytes::new()).await;
        assert_eq!(status, StatusCode::OK, "{method} {host}{path}");
        assert_eq!(resp_headers["x-upstream"], *want, "{method} {host}{path} {headers:?}");
    }
    let (status, _, body) = send(&c, "GET", &gw.url("/x"), &[("host", "nothing.org")], Bytes::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let v = json(&body);
    assert_eq!(v["error"], "no_route");
    assert!(v["requestId"].as_str().unwrap().len() >= 16);
}

#[tokio::test(flavor = "multi_thread")]
async fn balancers_and_weighted_backends() {
    let e1 = Upstream::start("e1", Behaviour::Echo).await;
    let e2 = Upstream::start("e2", Behaviour::Echo).await;
    let canary = Upstream::start("canary", Behaviour::Echo).await;
    let cfg = format!(
        r#"
kind: Upstream
name: pool
endpoints: [{{ address: "{}", weight: 1 }}, {{ address: "{}", weight: 2 }}]
---
kind: Upstream
name: sticky
endpoints: [{{ address: "{}" }}, {{ address: "{}" }}]
loadBalancer: {{ policy: consistentHash, consistentHash: {{ header: x-user }} }}
---
kind: Upstream
name: canary
endpoints: [{{ address: "{}" }}]
---
kind: Route
name: r
rules:
  - matches: [{{ path: {{ value: /rr }} }}]
    backendRefs: [{{ upstream: pool }}]
  - matches: [{{ path: {{ value: /sticky }} }}]
    backendRefs: [{{ upstream: sticky }}]
  - matches: [{{ path: {{ value: /split }} }}]
    backendRefs: [{{ upstream: pool, weight: 90 }}, {{ upstream: canary, weight: 10 }}]
"#,
        e1.addr, e2.addr, e1.addr, e2.addr, canary.addr
    );
    let gw = Gateway::start(&[("c.yaml", &cfg)], &["--access-log", "off"]);
    let c = client();

    // Smooth weighted round robin: exactly 1:2 over 30 requests.
    let mut counts = std::collections::HashMap::new();
    for _ in 0..30 {
        let (_, h, _) = send(&c, "GET", &gw.url("/rr"), &[], Bytes::new()).await;
        *counts.entry(h["x-upstream"].to_str().unwrap().to_string()).or_insert(0) += 1;
    }
    assert_eq!((counts["e1"], counts["e2"]), (10, 20));

    // Consistent hashing: one user always lands on the same endpoint.
    for user in ["alice", "bob", "carol"] {
        let (_, h, _) = send(&c, "GET", &gw.url("/sticky"), &[("x-user", user)], Bytes::new()).await;
        let first = h["x-upstream"].clone();
        for _ in 0..10 {
            let (_, h, _) = send(&c, "GET", &gw.url("/sticky"), &[("x-user", user)], Bytes::new()).await;
            assert_eq!(h["x-upstream"], first, "{user}");
        }
    }

    // A 90/10 canary split over 2,000 requests: 10% ± 2.5%.
    let before = canary.requests.load(Ordering::SeqCst);
    for _ in 0..2_000 {
        let (s, _, _) = send(&c, "GET", &gw.url("/split"), &[], Bytes::new()).await;
        assert_eq!(s, StatusCode::OK);
    }
    let share = canary.requests.load(Ordering::SeqCst) - before;
    assert!((150..=250).contains(&share), "canary got {share} of 2000");
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_proxy_headers_and_request_ids() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let cfg = upstreams(&[("up", &up)])
        + r#"---
kind: Route
name: r
hostnames: [api.example.com]
rules:
  - matches: [{ path: { value: /v0/orders } }]
    filters:
      - type: RequestHeaderModifier
        requestHeaderModifier:
          set: [{ name: x-gateway, value: raftgate }]
          add: [{ name: x-added, value: "1" }]
          remove: [x-debug]
      - type: ResponseHeaderModifier
        responseHeaderModifier:
          set: [{ name: cache-control, value: no-store }]
      - type: URLRewrite
        urlRewrite: { hostname: internal.example.com, path: { type: ReplacePrefixMatch, replacePrefixMatch: /v1/orders } }
    backendRefs: [{ upstream: up }]
  - matches: [{ path: { value: /full } }]
    filters:
      - type: URLRewrite
        urlRewrite: { path: { type: ReplaceFullPath, replaceFullPath: /fixed } }
    backendRefs: [{ upstream: up }]
  - matches: [{ path: { value: /old } }]
    filters:
      - type: RequestRedirect
        requestRedirect: { scheme: https, hostname: new.example.com, path: { type: ReplacePrefixMatch, replacePrefixMatch: /new }, statusCode: 301 }
"#;
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let c = client();
    let (status, h, body) = send(
        &c,
        "GET",
        &gw.url("/v0/orders/42?x=1"),
        &[
            ("host", "api.example.com"),
            ("x-debug", "secret"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-request-id", "req-123"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "hop"),
        ],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&body);
    let seen = &v["headers"];
    assert_eq!(v["path"], "/v1/orders/42?x=1");
    assert_eq!(seen["host"], "internal.example.com");
    assert_eq!(seen["x-gateway"], "raftgate");
    assert_eq!(seen["x-added"], "1");
    assert!(seen.get("x-debug").is_none());
    assert!(seen.get("x-private").is_none(), "headers named in Connection are hop-by-hop");
    // The client is not a trusted proxy: what it claimed is replaced (clientip.rs has the
    // chains from trusted ones).
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "api.example.com");
    assert_eq!(seen["via"], "1.1 raftgate");
    assert_eq!(seen["x-request-id"], "req-123");
    assert_eq!(h["x-request-id"], "req-123");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h.get("x-hop").is_none(), "response hop-by-hop headers are removed");

    // Without an id, one is generated, passed on, and returned.
    let (_, h, body) = send(&c, "GET", &gw.url("/full/a/b"), &[("host", "api.example.com")], Bytes::new()).await;
    let v = json(&body);
    assert_eq!(v["path"], "/fixed");
    let id = h["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 32);
    assert_eq!(v["headers"]["x-request-id"], id);

    let (status, h, _) = send(&c, "GET", &gw.url("/old/page?q=1"), &[("host", "api.example.com")], Bytes::new()).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(h["location"], "https://new.example.com/new/page?q=1");

    // The access log has one JSON line per request.
    let line = testkit::eventually("the access log line of req-123", Duration::from_secs(5), || {
        gw.logs()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["target"] == "access" && v["request_id"] == "req-123")
    });
    assert_eq!(line["status"], 200);
    assert_eq!(line["route"], "r");
    assert_eq!(line["upstream"], "up");
    assert_eq!(line["endpoint"], up.addr.to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures_map_to_502_503_504() {
    let slow = Upstream::start("slow", Behaviour::Delay(Duration::from_secs(3))).await;
    let reset = Upstream::start("reset", Behaviour::Reset).await;
    // A port with nothing listening: bind, then drop.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let cfg = upstreams(&[("slow", &slow), ("reset", &reset)])
        + &format!(
            r#"---
kind: Upstream
name: dead
endpoints: [{{ address: "{dead}" }}]
---
kind: Route
name: r
rules:
  - matches: [{{ path: {{ value: /slow }} }}]
    backendRefs: [{{ upstream: slow }}]
    timeouts: {{ request: 300ms }}
  - matches: [{{ path: {{ value: /reset }} }}]
    backendRefs: [{{ upstream: reset }}]
  - matches: [{{ path: {{ value: /dead }} }}]
    backendRefs: [{{ upstream: dead }}]
"#
        );
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    for (path, status, code) in [
        ("/slow", StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        ("/reset", StatusCode::BAD_GATEWAY, "bad_gateway"),
        ("/dead", StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable"),
    ] {
        let started = std::time::Instant::now();
        let (s, h, body) = get(&gw.url(path), &[]).await;
        assert_eq!(s, status, "{path}: {body}");
        assert!(started.elapsed() < Duration::from_secs(2), "{path} took {:?}", started.elapsed());
        let v = json(&body);
        assert_eq!(v["error"], code);
        assert_eq!(v["requestId"].as_str().unwrap(), h["x-request-id"].to_str().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_pools_are_reused_and_metrics_exported() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let cfg = upstreams(&[("up", &up)]) + "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: up }]\n";
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let c = client();
    for _ in 0..50 {
        let (s, _, _) = send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), 50);
    assert_eq!(up.connections.load(Ordering::SeqCst), 1, "50 sequential requests share one upstream connection");

    let (_, _, metrics) = get(&format!("http://{}/metrics", gw.admin), &[]).await;
    assert!(metrics.contains(r#"raftgate_requests_total{route="r",upstream="up",class="2xx"} 50"#), "{metrics}");
    assert!(metrics.contains("raftgate_request_duration_seconds_bucket"), "{metrics}");
    assert!(metrics.contains(&format!(r#"raftgate_config_info{{hash="{}",commit=""}} 1"#, gw.config_hash())));
    assert!(metrics.contains("raftgate_open_connections"));
    let (s, _, _) = get(&format!("http://{}/readyz", gw.admin), &[]).await;
    assert_eq!(s, StatusCode::OK);
}
