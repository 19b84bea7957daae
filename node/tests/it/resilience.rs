//! Resilience policies end to end: the real `raftgated` against upstreams that fail, stall
//! and recover on command. Circuit breakers, outlier detection, active health checks,
//! retries and their budget, fallbacks, rate limits, and state kept across config swaps.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;

use crate::harness::*;

fn upstream_view(gw: &Gateway, name: &str) -> serde_json::Value {
    let s = gw.status();
    s["upstreams"].as_array().unwrap().iter().find(|u| u["name"] == name).cloned().unwrap_or_else(|| panic!("{s:#}"))
}

async fn metrics(gw: &Gateway) -> String {
    get(&format!("http://{}/metrics", gw.admin), &[]).await.2
}

/// Waits until `check` holds, for at most `secs` seconds.
async fn eventually(what: &str, secs: u64, check: impl FnMut() -> bool) {
    testkit::wait_until(what, Duration::from_secs(secs), check).await
}

fn endpoint(name: &str, u: &Upstream, extra: &str) -> String {
    format!("---\nkind: Upstream\nname: {name}\nendpoints: [{{ address: \"{}\" }}]\n{extra}", u.addr)
}

const ROUTE: &str = "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: u }]\n";

#[tokio::test(flavor = "multi_thread")]
async fn the_breaker_opens_answers_alone_and_closes_through_half_open() {
    let u = Upstream::start("u", Behaviour::Status(500)).await;
    let cfg =
        endpoint("u", &u, "circuitBreaker: { consecutiveFailures: 3, openFor: 1s, halfOpenRequests: 2 }\n") + ROUTE;
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let c = client();
    for _ in 0..3 {
        let (s, _, _) = send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "the upstream's own answer");
    }
    assert_eq!(upstream_view(&gw, "u")["circuit"], "open");
    // Open: answered at once, without touching the upstream.
    for _ in 0..20 {
        let started = Instant::now();
        let (s, h, body) = send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json(&body)["error"], "circuit_open");
        assert_eq!(h["retry-after"], "1");
        assert!(started.elapsed() < Duration::from_millis(100));
    }
    assert_eq!(u.requests.load(Ordering::SeqCst), 3, "an open breaker does not touch the upstream");
    assert!(metrics(&gw).await.contains(r#"raftgate_circuit_state{upstream="u"} 1"#));

    // Half-open after openFor: a failed probe opens it again at once.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (s, _, _) = send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "the probe reached the upstream");
    let (s, _, body) = send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
    assert_eq!((s, json(&body)["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("circuit_open")));
    assert_eq!(u.requests.load(Ordering::SeqCst), 4);

    // The upstream recovers: two good probes close the breaker.
    u.set(Behaviour::Echo);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (s, _, _) = send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(upstream_view(&gw, "u")["circuit"], "half-open");
    let (s, _, _) = send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(upstream_view(&gw, "u")["circuit"], "closed");
    for _ in 0..10 {
        assert_eq!(send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await.0, StatusCode::OK);
    }
    let m = metrics(&gw).await;
    assert!(m.contains(r#"raftgate_circuit_state{upstream="u"} 0"#), "{m}");
    assert!(m.contains(r#"raftgate_circuit_opened_total{upstream="u"} 2"#), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_breaker_opens_on_the_error_rate_of_a_window() {
    let u = Upstream::start("u", Behaviour::Echo).await;
    let cfg = endpoint(
        "u",
        &u,
        "circuitBreaker: { errorRate: { percent: 50, window: 10s, minimumRequests: 10 }, openFor: 30s }\n",
    ) + "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: u }]\n";
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let c = client();
    // Alternating failures never make 5 in a row, but they are half of the requests.
    for i in 0..10 {
        u.set(if i % 2 == 0 { Behaviour::Echo } else { Behaviour::Status(503) });
        send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
    }
    assert_eq!(upstream_view(&gw, "u")["circuit"], "open");
    let (s, _, _) = send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(u.requests.load(Ordering::SeqCst), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_swap_that_does_not_touch_the_upstream_keeps_its_breaker_open() {
    let u = Upstream::start("u", Behaviour::Status(502)).await;
    let other = Upstream::start("other", Behaviour::Echo).await;
    let ups = endpoint("u", &u, "circuitBreaker: { consecutiveFailures: 2, openFor: 60s }\n")
        + &endpoint("other", &other, "");
    let gw = Gateway::start(&[("u.yaml", &ups), ("r.yaml", ROUTE)], &[]);
    let c = client();
    for _ in 0..2 {
        send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
    }
    assert_eq!(upstream_view(&gw, "u")["circuit"], "open");

    // Routes change (a new route to `other`, a filter on `r`): `u` is untouched.
    let old = gw.config_hash();
    gw.write(
        "r.yaml",
        &(ROUTE.to_string()
            + "    filters: [{ type: ResponseHeaderModifier, responseHeaderModifier: { set: [{ name: x-v, value: \"2\" }] } }]\n---\nkind: Route\nname: o\nhostnames: [other.test]\nrules:\n  - backendRefs: [{ upstream: other }]\n"),
    );
    let g = &gw;
    tokio::task::block_in_place(|| g.wait_for_new_config(&old));
    let (s, _, body) = send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
    assert_eq!((s, json(&body)["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("circuit_open")));
    let (s, h, _) = send(&c, "GET", &gw.url("/"), &[("host", "other.test")], Bytes::new()).await;
    assert_eq!((s, h["x-upstream"].to_str().unwrap()), (StatusCode::OK, "other"), "the new config serves");
    assert_eq!(u.requests.load(Ordering::SeqCst), 2, "still open after the swap");

    // Changing the upstream itself starts it fresh.
    u.set(Behaviour::Echo);
    let old = gw.config_hash();
    gw.write(
        "u.yaml",
        &(endpoint("u", &u, "circuitBreaker: { consecutiveFailures: 3, openFor: 60s }\n")
            + &endpoint("other", &other, "")),
    );
    tokio::task::block_in_place(|| g.wait_for_new_config(&old));
    assert_eq!(upstream_view(&gw, "u")["circuit"], "closed");
    assert_eq!(send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn outlier_detection_ejects_an_endpoint_and_lets_it_back() {
    let bad = Upstream::start("bad", Behaviour::Status(500)).await;
    let good = Upstream::start("good", Behaviour::Echo).await;
    let cfg = format!(
        r#"---
kind: Upstream
name: u
endpoints: [{{ address: "{}" }}, {{ address: "{}" }}]
healthCheck:
  passive: {{ consecutiveFailures: 3, baseEjectionTime: 1s, maxEjectionPercent: 50 }}
"#,
        bad.addr, good.addr
    ) + ROUTE;
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let c = client();
    for _ in 0..30 {
        send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
    }
    // Round robin sends every other request to `bad` until its third failure ejects it.
    assert_eq!(bad.traffic(), 3, "no traffic once ejected");
    let view = upstream_view(&gw, "u");
    let ejected: Vec<u64> =
        view["endpoints"].as_array().unwrap().iter().map(|e| e["ejectedForMs"].as_u64().unwrap()).collect();
    assert!(ejected.iter().filter(|ms| **ms > 0).count() == 1, "{view:#}");
    assert!(metrics(&gw).await.contains("raftgate_outlier_ejections_total"));

    // It comes back after the ejection time.
    bad.set(Behaviour::Echo);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for _ in 0..10 {
        assert_eq!(send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await.0, StatusCode::OK);
    }
    assert!(bad.traffic() >= 3 + 4, "back in rotation: {}", bad.traffic());

    // Ejected again soon after: twice as long.
    bad.set(Behaviour::Status(500));
    for _ in 0..10 {
        send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
    }
    let view = upstream_view(&gw, "u");
    let longest =
        view["endpoints"].as_array().unwrap().iter().map(|e| e["ejectedForMs"].as_u64().unwrap()).max().unwrap();
    assert!(longest > 1_500, "the second ejection lasts 2 s: {view:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn outlier_detection_never_ejects_more_than_the_percentage() {
    let a = Upstream::start("a", Behaviour::Status(500)).await;
    let b = Upstream::start("b", Behaviour::Status(500)).await;
    let cfg = format!(
        "---\nkind: Upstream\nname: u\nendpoints: [{{ address: \"{}\" }}, {{ address: \"{}\" }}]\nhealthCheck:\n  passive: {{ consecutiveFailures: 2, baseEjectionTime: 30s, maxEjectionPercent: 50 }}\n",
        a.addr, b.addr
    ) + ROUTE;
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let c = client();
    for _ in 0..20 {
        assert_eq!(send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    }
    let out =
        upstream_view(&gw, "u")["endpoints"].as_array().unwrap().iter().filter(|e| e["ejectedForMs"] != 0).count();
    assert_eq!(out, 1, "half of two endpoints");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_take_endpoints_out_and_back_in() {
    let a = Upstream::start("a", Behaviour::Echo).await;
    let b = Upstream::start("b", Behaviour::Echo).await;
    let cfg = format!(
        r#"---
kind: Upstream
name: u
endpoints: [{{ address: "{}" }}, {{ address: "{}" }}]
healthCheck:
  active: {{ path: /healthz, interval: 200ms, timeout: 100ms, unhealthyThreshold: 2, healthyThreshold: 2 }}
"#,
        a.addr, b.addr
    ) + ROUTE;
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let health = |i: usize| upstream_view(&gw, "u")["endpoints"][i]["health"].as_str().unwrap().to_string();
    // Endpoints are sorted by address; find `a`'s index.
    let ia = upstream_view(&gw, "u")["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .position(|e| e["address"] == a.addr.to_string())
        .unwrap();
    assert_eq!(health(ia), "healthy");
    // Probes arrive at about one per interval per endpoint.
    let p0 = a.probes.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rate = a.probes.load(Ordering::SeqCst) - p0;
    assert!((7..=13).contains(&rate), "{rate} probes in 2 s at a 200 ms interval");

    a.set(Behaviour::Status(503));
    eventually("a is unhealthy", 5, || health(ia) == "unhealthy").await;
    let c = client();
    let before = a.traffic();
    for _ in 0..20 {
        let (s, h, _) = send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
        assert_eq!((s, h["x-upstream"].to_str().unwrap()), (StatusCode::OK, "b"));
    }
    assert_eq!(a.traffic(), before, "an unhealthy endpoint gets no traffic");
    let m = metrics(&gw).await;
    assert!(m.contains(&format!(r#"raftgate_endpoint_healthy{{upstream="u",endpoint="{}"}} 0"#, a.addr)), "{m}");
    assert_eq!(gw.status()["resilience"]["unhealthyEndpoints"], 1);

    a.set(Behaviour::Echo);
    eventually("a is healthy again", 5, || health(ia) == "healthy").await;
    for _ in 0..20 {
        assert_eq!(send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await.0, StatusCode::OK);
    }
    assert!(a.traffic() >= before + 8, "back in rotation");

    // Every endpoint down: 503 without trying.
    a.set(Behaviour::Status(503));
    b.set(Behaviour::Status(503));
    eventually("both unhealthy", 5, || gw.status()["resilience"]["unhealthyEndpoints"] == 2).await;
    let (s, _, body) = send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
    assert_eq!((s, json(&body)["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("no_healthy_endpoint")));
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_happen_only_where_allowed() {
    let flaky = Upstream::start("flaky", Behaviour::Status(503)).await;
    let cfg = endpoint("u", &flaky, "")
        + r#"---
kind: Route
name: r
rules:
  - matches: [{ path: { value: /gw } }]
    backendRefs: [{ upstream: u }]
    retry: { attempts: 3, retryOn: [gatewayError], backoff: { base: 5ms } }
  - matches: [{ path: { value: /any-method } }]
    backendRefs: [{ upstream: u }]
    retry: { attempts: 3, retryOn: [5xx], allowNonIdempotent: true, backoff: { base: 5ms } }
  - matches: [{ path: { value: /connect-only } }]
    backendRefs: [{ upstream: u }]
    retry: { attempts: 3, retryOn: [connectFailure] }
  - matches: [{ path: { value: /codes } }]
    backendRefs: [{ upstream: u }]
    retry: { attempts: 4, retryOn: [retriableStatusCodes], statusCodes: [409], backoff: { base: 5ms } }
"#;
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let c = client();
    // (method, path, upstream status, attempts expected)
    let cases = [
        ("GET", "/gw", 503, 3),
        ("POST", "/gw", 503, 1), // not idempotent
        ("PUT", "/gw", 503, 3),  // idempotent
        ("POST", "/any-method", 503, 3),
        ("GET", "/connect-only", 503, 1),
        ("GET", "/codes", 409, 4),
        ("GET", "/codes", 503, 1),
        ("GET", "/gw", 500, 1), // 500 is not a gateway error
    ];
    for (method, path, status, attempts) in cases {
        flaky.set(Behaviour::Status(status));
        let before = flaky.requests.load(Ordering::SeqCst);
        let (s, _, _) = send(&c, method, &gw.url(path), &[], Bytes::from_static(b"{\"x\":1}")).await;
        assert_eq!(s.as_u16(), status, "{method} {path}: the last answer is the upstream's");
        assert_eq!(flaky.requests.load(Ordering::SeqCst) - before, attempts, "{method} {path} on {status}");
    }
    let m = metrics(&gw).await;
    assert!(m.contains(r#"raftgate_retries_total{route="r",upstream="u"} 9"#), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_go_to_another_endpoint_and_survive_a_dead_one() {
    let bad = Upstream::start("bad", Behaviour::Status(503)).await;
    let good = Upstream::start("good", Behaviour::Echo).await;
    let dead = Upstream::start("dead", Behaviour::Echo).await;
    dead.listen(false).await;
    let cfg = format!(
        "---\nkind: Upstream\nname: u\nendpoints: [{{ address: \"{}\" }}, {{ address: \"{}\" }}, {{ address: \"{}\" }}]\n",
        bad.addr, good.addr, dead.addr
    ) + "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: u }]\n    retry: { attempts: 3, retryOn: [connectFailure, gatewayError], backoff: { base: 5ms } }\n";
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let c = client();
    for i in 0..30 {
        let body = Bytes::from(vec![b'x'; 1000]);
        let (s, h, text) = send(&c, "PUT", &gw.url("/item"), &[], body).await;
        assert_eq!(s, StatusCode::OK, "request {i}: {text}");
        assert_eq!(h["x-upstream"], "good");
        assert_eq!(json(&text)["bodyLength"], 1000, "the body is sent again in full");
    }
    assert!(bad.requests.load(Ordering::SeqCst) > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_budget_keeps_a_failing_upstream_from_a_retry_storm() {
    let u = Upstream::start("u", Behaviour::Status(503)).await;
    let cfg = endpoint(
        "u",
        &u,
        "circuitBreaker: { consecutiveFailures: 1000000, retryBudget: { percent: 20, minConcurrency: 1 } }\n",
    ) + "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: u }]\n    retry: { attempts: 5, retryOn: [5xx], backoff: { base: 1ms, max: 2ms } }\n";
    let gw = Arc::new(Gateway::start(&[("c.yaml", &cfg)], &["--access-log", "off"]));
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (gw, sent, stop) = (gw.clone(), sent.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let (s, _, _) = send(&c, "GET", &gw.url("/"), &[], Bytes::new()).await;
                assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let requests = sent.load(Ordering::SeqCst) as f64;
    let attempts = u.requests.load(Ordering::SeqCst) as f64;
    let ratio = attempts / requests;
    println!("retry budget: {requests} requests, {attempts} upstream attempts, ratio {ratio:.3}");
    assert!(requests > 500.0, "enough load to measure: {requests}");
    assert!(ratio > 1.02, "retries happen within the budget: {ratio}");
    assert!(ratio <= 1.20, "attempts stay within (1 + 20%) x requests: {ratio}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fallbacks_answer_when_the_upstream_cannot() {
    let down = Upstream::start("down", Behaviour::Echo).await;
    down.listen(false).await;
    let sick = Upstream::start("sick", Behaviour::Status(502)).await;
    let spare = Upstream::start("spare", Behaviour::Echo).await;
    let cfg = endpoint("down", &down, "")
        + &endpoint("sick", &sick, "circuitBreaker: { consecutiveFailures: 2, openFor: 60s }\n")
        + &endpoint("spare", &spare, "")
        + r#"---
kind: Route
name: r
rules:
  - matches: [{ path: { value: /static } }]
    backendRefs: [{ upstream: down }]
    fallback:
      status: 503
      headers: [{ name: content-type, value: text/plain }]
      body: "down for maintenance\n"
  - matches: [{ path: { value: /sick } }]
    backendRefs: [{ upstream: sick }]
    fallback: { status: 200, body: "cached answer" }
  - matches: [{ path: { value: /spare } }]
    backendRefs: [{ upstream: down }]
    fallback: { upstream: spare }
  - matches: [{ path: { value: /none } }]
    backendRefs: [{ upstream: down }]
"#;
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let c = client();
    let (s, h, body) = send(&c, "GET", &gw.url("/static"), &[], Bytes::new()).await;
    assert_eq!((s, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance\n"));
    assert_eq!(
        (&h["content-type"], &h["x-raftgate-fallback"]),
        (&"text/plain".parse().unwrap(), &"upstream_unavailable".parse().unwrap())
    );
    // Upstream 502s, then the open breaker: the fallback either way.
    for i in 0..5 {
        let (s, h, body) = send(&c, "GET", &gw.url("/sick"), &[], Bytes::new()).await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "cached answer"), "request {i}");
        let why = if i < 2 { "upstream-error" } else { "circuit_open" };
        assert_eq!(h["x-raftgate-fallback"], why, "request {i}");
    }
    assert_eq!(sick.requests.load(Ordering::SeqCst), 2);
    // Another upstream, with the body.
    let (s, h, body) = send(&c, "POST", &gw.url("/spare"), &[("x-tenant", "t1")], Bytes::from_static(b"hello")).await;
    assert_eq!((s, h["x-upstream"].to_str().unwrap()), (StatusCode::OK, "spare"));
    let echo = json(&body);
    assert_eq!(echo["bodyLength"], 5);
    assert_eq!(echo["headers"]["x-tenant"], "t1", "the headers go along: {echo}");
    // Without a fallback, the error stands.
    assert_eq!(send(&c, "GET", &gw.url("/none"), &[], Bytes::new()).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(metrics(&gw).await.contains(r#"raftgate_fallbacks_total{route="r"} 7"#));
}

#[tokio::test(flavor = "multi_thread")]
async fn per_try_timeouts_retry_a_stalled_upstream_within_the_request_timeout() {
    let u = Upstream::start("u", Behaviour::Delay(Duration::from_secs(5))).await;
    let cfg = endpoint("u", &u, "")
        + "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: u }]\n    timeouts: { request: 1s }\n    retry: { attempts: 5, retryOn: [5xx], perTryTimeout: 300ms, backoff: { base: 10ms } }\n";
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let started = Instant::now();
    let (s, _, body) = get(&gw.url("/"), &[]).await;
    let took = started.elapsed();
    assert_eq!((s, json(&body)["error"].as_str()), (StatusCode::GATEWAY_TIMEOUT, Some("upstream_timeout")));
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(1_500), "{took:?}");
    let n = u.requests.load(Ordering::SeqCst);
    assert!((3..=4).contains(&n), "300 ms tries within 1 s: {n}");
    // The stall recovers.
    u.set(Behaviour::Echo);
    assert_eq!(get(&gw.url("/"), &[]).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_holds_within_five_percent_over_ten_seconds() {
    let u = Upstream::start("u", Behaviour::Echo).await;
    let cfg = endpoint("u", &u, "")
        + "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: u }]\n    rateLimit: { requests: 50, period: 1s, burst: 10, key: { header: x-user } }\n";
    let gw = Arc::new(Gateway::start(&[("c.yaml", &cfg)], &["--access-log", "off"]));
    let passed = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (gw, passed, refused, stop) = (gw.clone(), passed.clone(), refused.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let (s, h, _) = send(&c, "GET", &gw.url("/"), &[("x-user", "alice")], Bytes::new()).await;
                match s {
                    StatusCode::OK => passed.fetch_add(1, Ordering::Relaxed),
                    StatusCode::TOO_MANY_REQUESTS => {
                        assert!(h.contains_key("retry-after") && h["ratelimit-remaining"] == "0");
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                    other => panic!("{other}"),
                };
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Another key has its own bucket, even now.
    let (s, h, _) = get(&gw.url("/"), &[("x-user", "bob")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((h["ratelimit-limit"].to_str().unwrap(), h["ratelimit-remaining"].to_str().unwrap()), ("50", "9"));
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let ok = passed.load(Ordering::SeqCst) as f64;
    let expected = 50.0 * secs + 10.0;
    println!(
        "rate limit: {ok} passed in {secs:.2} s (expected {expected:.0}), {} refused",
        refused.load(Ordering::SeqCst)
    );
    assert!(refused.load(Ordering::SeqCst) > 1_000, "the clients asked for far more than the limit");
    assert!((ok - expected).abs() <= expected * 0.05, "{ok} passed, {expected:.0} expected (±5%)");
    let m = metrics(&gw).await;
    assert!(m.contains(r#"raftgate_ratelimit_rejected_total{route="r"}"#), "{m}");
    assert!(gw.status()["resilience"]["rateLimited"].as_u64().unwrap() > 1_000);
}

/// Sends requests with key `user` to `url` from 4 clients for `secs`; returns how many
/// passed and the `RateLimit-Limit` of the last one that did.
async fn hammer(url: String, user: &'static str, secs: f64) -> (usize, String) {
    let passed = Arc::new(AtomicUsize::new(0));
    let limit = Arc::new(std::sync::Mutex::new(String::new()));
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (url, passed, limit) = (url.clone(), passed.clone(), limit.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            while Instant::now() < until {
                let (s, h, _) = send(&c, "GET", &url, &[("x-user", user)], Bytes::new()).await;
                if s == StatusCode::OK {
                    passed.fetch_add(1, Ordering::Relaxed);
                    *limit.lock().unwrap() = h["ratelimit-limit"].to_str().unwrap().to_string();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let l = limit.lock().unwrap().clone();
    (passed.load(Ordering::SeqCst), l)
}

/// Waits until `url` reports `RateLimit-Limit: want` (the node's share follows the
/// membership it sees), asking as `user`.
async fn wait_share(url: String, user: &'static str, want: &'static str) {
    crate::nodes::eventually(Duration::from_secs(10), &format!("a share of {want} at {url}"), || {
        let url = url.clone();
        async move {
            let (s, h, _) = get(&url, &[("x-user", user)]).await;
            (s == StatusCode::OK && h["ratelimit-limit"] == want).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_wide_limit_is_shared_by_the_members_and_follows_the_fleet() {
    use crate::nodes::TestCluster;
    let mut c = TestCluster::bootstrap(&["--access-log", "off"]).await;
    let cfg = endpoint("up", &c.up, "")
        + "---\nkind: Route\nname: r0\nrules:\n  - matches: [{ path: { value: /r0 } }]\n    backendRefs: [{ upstream: up }]\n"
        + "---\nkind: Route\nname: limited\nrules:\n  - matches: [{ path: { value: /limited } }]\n    backendRefs: [{ upstream: up }]\n    rateLimit: { requests: 60, period: 1s, burst: 6, key: { header: x-user }, scope: cluster }\n";
    std::fs::write(c.config.path().join("c.yaml"), cfg).unwrap();
    c.wait_serving(&[1], "/limited").await;

    // (members, user, expected passes in 2 s on one node: 2 × 60/members + burst/members)
    let check = |n: usize, passed: usize, limit: &str| {
        let share = 60.0 / n as f64;
        let expected = 2.0 * share + (6.0 / n as f64).ceil();
        assert_eq!(limit, format!("{}", 60 / n), "RateLimit-Limit is this node's share with {n} members");
        assert!(
            (passed as f64 - expected).abs() <= expected * 0.10 + 1.0,
            "{n} members: {passed} passed, {expected} expected"
        );
    };
    let (passed, limit) = hammer(c.gw(1).url("/limited"), "one", 2.0).await;
    check(1, passed, &limit);

    c.join(2, 1, false);
    c.join(3, 1, false);
    c.wait_members(1, &[1, 2, 3], &[]).await;
    c.wait_serving(&[2, 3], "/limited").await;
    // Each node counts the members from its own view of the membership.
    for id in [1, 2, 3] {
        wait_share(c.gw(id).url("/limited"), "probe", "20").await;
    }
    let (passed, limit) = hammer(c.gw(2).url("/limited"), "three", 2.0).await;
    check(3, passed, &limit);

    // The fleet shrinks: the share grows back.
    let leader = c.leader().await;
    let gone = if leader == 3 { 2 } else { 3 };
    c.admin(leader).await.remove_member(schemas::admin::RemoveMemberRequest { id: gone }).await.unwrap();
    c.kill(gone);
    let url = c.gw(leader).url("/limited");
    wait_share(url.clone(), "probe2", "30").await;
    let (passed, limit) = hammer(url, "two", 2.0).await;
    check(2, passed, &limit);
}

#[tokio::test(flavor = "multi_thread")]
async fn breaker_limits_cap_what_is_in_flight_towards_an_upstream() {
    let slow = Upstream::start("slow", Behaviour::Delay(Duration::from_millis(600))).await;
    let cfg = endpoint("conns", &slow, "connectTimeout: 2s\ncircuitBreaker: { maxConnections: 1, maxPendingRequests: 1, consecutiveFailures: 1000 }\n")
        + &endpoint("par", &slow, "circuitBreaker: { maxParallelRequests: 2, consecutiveFailures: 1000 }\n")
        + "---\nkind: Route\nname: r\nrules:\n  - matches: [{ path: { value: /conns } }]\n    backendRefs: [{ upstream: conns }]\n  - matches: [{ path: { value: /par } }]\n    backendRefs: [{ upstream: par }]\n";
    let gw = Arc::new(Gateway::start(&[("c.yaml", &cfg)], &[]));
    // Three at once, one connection allowed, one request may wait for it: the third is
    // refused at once, the waiting one is served after the first.
    let run = |path: &'static str, n: usize| {
        let gw = gw.clone();
        async move {
            let mut tasks = Vec::new();
            for i in 0..n {
                let gw = gw.clone();
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(30 * i as u64)).await;
                    let started = Instant::now();
                    let (s, _, body) = get(&gw.url(path), &[]).await;
                    (s, body, started.elapsed())
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        }
    };
    let r = run("/conns", 3).await;
    assert_eq!(r[0].0, StatusCode::OK);
    assert_eq!(r[1].0, StatusCode::OK, "waited for the connection: {:?}", r[1]);
    assert!(r[1].2 >= Duration::from_millis(1_000), "served after the first: {:?}", r[1].2);
    assert_eq!(
        (r[2].0, json(&r[2].1)["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("upstream_overloaded"))
    );
    assert!(r[2].1.contains("maxPendingRequests"), "{}", r[2].1);
    assert!(r[2].2 < Duration::from_millis(200));

    let r = run("/par", 3).await;
    assert_eq!((r[0].0, r[1].0), (StatusCode::OK, StatusCode::OK));
    assert!(r[2].1.contains("maxParallelRequests"), "{}", r[2].1);
    let m = metrics(&gw).await;
    assert!(m.contains(r#"raftgate_upstream_overflow_total{upstream="par",limit="maxParallelRequests"} 1"#), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_buckets_survive_a_swap_that_does_not_touch_the_route() {
    let u = Upstream::start("u", Behaviour::Echo).await;
    let limited = "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: u }]\n    rateLimit: { requests: 1, period: 1m, burst: 1 }\n";
    let gw = Gateway::start(&[("u.yaml", &endpoint("u", &u, "")), ("r.yaml", limited)], &[]);
    assert_eq!(get(&gw.url("/"), &[]).await.0, StatusCode::OK);
    let (s, h, _) = get(&gw.url("/"), &[]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h["retry-after"], "60");
    // Another route appears: this one's bucket is still empty.
    let old = gw.config_hash();
    gw.write(
        "o.yaml",
        "---\nkind: Route\nname: o\nhostnames: [other.test]\nrules:\n  - backendRefs: [{ upstream: u }]\n",
    );
    let g = &gw;
    tokio::task::block_in_place(|| g.wait_for_new_config(&old));
    assert_eq!(get(&gw.url("/"), &[("host", "other.test")]).await.0, StatusCode::OK, "the new config serves");
    assert_eq!(get(&gw.url("/"), &[]).await.0, StatusCode::TOO_MANY_REQUESTS, "the bucket survived the swap");
    // The route itself changes: a fresh bucket.
    let old = gw.config_hash();
    gw.write("r.yaml", &limited.replace("burst: 1", "burst: 2"));
    tokio::task::block_in_place(|| g.wait_for_new_config(&old));
    assert_eq!(get(&gw.url("/"), &[]).await.0, StatusCode::OK);
}

/// The response filter decorates every answer, whoever made it: an upstream's, the
/// gateway's own error, a fallback and a refusal of a rate-limited rule all carry the
/// `RateLimit-*` headers and the request id; and answers the gateway gave itself are
/// counted under their route (or under no route) like upstream answers.
#[tokio::test(flavor = "multi_thread")]
async fn every_answer_of_a_limited_rule_is_decorated_and_counted() {
    let up = Upstream::start("u", Behaviour::Echo).await;
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let limit = "rateLimit: { requests: 100, period: 1m, burst: 100 }";
    let cfg = upstreams(&[("u", &up)])
        + &format!("---\nkind: Upstream\nname: dead\nendpoints: [{{ address: \"{dead}\" }}]\n")
        + &format!("---\nkind: Route\nname: ok\nrules:\n  - matches: [{{ path: {{ value: /ok }} }}]\n    backendRefs: [{{ upstream: u }}]\n    {limit}\n")
        + &format!("---\nkind: Route\nname: down\nrules:\n  - matches: [{{ path: {{ value: /down }} }}]\n    backendRefs: [{{ upstream: dead }}]\n    {limit}\n")
        + &format!("---\nkind: Route\nname: fb\nrules:\n  - matches: [{{ path: {{ value: /fb }} }}]\n    backendRefs: [{{ upstream: dead }}]\n    fallback: {{ status: 200, body: later }}\n    {limit}\n")
        + "---\nkind: Route\nname: tight\nrules:\n  - matches: [{ path: { value: /tight } }]\n    backendRefs: [{ upstream: u }]\n    rateLimit: { requests: 1, period: 1m, burst: 1 }\n";
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let c = client();
    let ask = |path: &'static str| {
        let (c, url) = (c.clone(), gw.url(path));
        async move { send(&c, "GET", &url, &[("x-request-id", "req-7")], Bytes::new()).await }
    };
    for (path, status, remaining) in
        [("/ok", 200, "99"), ("/down", 503, "99"), ("/fb", 200, "99"), ("/tight", 200, "0"), ("/tight", 429, "0")]
    {
        let (s, h, body) = ask(path).await;
        assert_eq!(s.as_u16(), status, "{path}: {body}");
        assert_eq!(h["ratelimit-remaining"], remaining, "{path}: {h:?}");
        assert!(h.contains_key("ratelimit-limit") && h.contains_key("ratelimit-reset"), "{path}: {h:?}");
        assert_eq!(h["x-request-id"], "req-7", "{path}");
    }
    let (s, h, _) = ask("/nowhere").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(!h.contains_key("ratelimit-limit") && h["x-request-id"] == "req-7");

    let m = metrics(&gw).await;
    for series in [
        r#"raftgate_requests_total{route="ok",upstream="u",class="2xx"} 1"#,
        r#"raftgate_requests_total{route="down",upstream="dead",class="5xx"} 1"#,
        r#"raftgate_requests_total{route="fb",upstream="dead",class="2xx"} 1"#,
        r#"raftgate_requests_total{route="tight",upstream="",class="4xx"} 1"#,
        r#"raftgate_requests_total{route="",upstream="",class="4xx"} 1"#,
    ] {
        assert!(m.lines().any(|l| l == series), "missing {series}:\n{m}");
    }
}
