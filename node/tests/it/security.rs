//! Security policies end to end: the real `raftgated` guarding routes with API keys, basic
//! auth, authorization rules and CORS, in front of an echo upstream that shows what it
//! received; denials as the client, the metrics and the access log see them.

use std::time::Duration;

use base64::Engine as _;
use http::StatusCode;
use sha2::{Digest, Sha256};

use crate::harness::*;

const MOBILE_KEY: &str = "k-7f3a9c1e5b2d4f6a8c0e2b4d6f8a0c1e";
const WEB_KEY: &str = "k-0a1b2c3d4e5f60718293a4b5c6d7e8f9";

fn sha(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

fn route(name: &str, path: &str, extra: &str) -> String {
    format!(
        "---\nkind: Route\nname: {name}\nrules:\n  - name: all\n    matches: [{{ path: {{ value: {path} }} }}]\n    backendRefs: [{{ upstream: u }}]\n{extra}"
    )
}

fn config(u: &Upstream, htpasswd_file: &std::path::Path) -> String {
    let alice = bcrypt::hash("alice-pw", 5).unwrap();
    upstreams(&[("u", u)])
        + &route("keys", "/keys", "    rateLimit: { requests: 2, period: 1m, burst: 2, key: { consumer: true } }\n")
        + &route("basic", "/basic", "")
        + &route("office", "/office", "")
        + &route("open", "/open", "")
        + &format!(
            "---\nkind: SecurityPolicy\nname: keys\ntargetRefs: [{{ kind: Route, name: keys }}]\n\
             apiKeyAuth:\n  extractFrom: [{{ header: x-api-key }}, {{ query: api_key }}]\n  consumers:\n\
             \x20   - {{ name: mobile, sha256: {} }}\n    - {{ name: web, sha256: \"{}\" }}\n\
             cors:\n  allowOrigins: [\"https://app.example.com\"]\n  allowHeaders: [x-api-key]\n  allowCredentials: true\n\
             authorization:\n  defaultAction: Allow\n  rules:\n    - {{ name: web-reads-only, action: Deny, principal: {{ consumers: [web] }}, operation: {{ methods: [POST] }} }}\n",
            sha(MOBILE_KEY),
            sha(WEB_KEY).to_uppercase(),
        )
        + &format!(
            "---\nkind: SecurityPolicy\nname: people\ntargetRefs: [{{ name: basic, sectionName: all }}]\n\
             basicAuth:\n  realm: staff\n  htpasswd: [\"alice:{alice}\"]\n  htpasswdFile: {}\n",
            htpasswd_file.display()
        )
        + "---\nkind: SecurityPolicy\nname: office\ntargetRefs: [{ name: office }]\nauthorization:\n  rules:\n\
           \x20   - { name: loopback-reads, action: Allow, principal: { clientCIDRs: [127.0.0.0/8, \"::1\"] }, operation: { methods: [GET, HEAD] } }\n"
}

async fn metrics(gw: &Gateway) -> String {
    get(&format!("http://{}/metrics", gw.admin), &[]).await.2
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_basic_auth_authorization_and_cors_guard_their_routes() {
    let u = Upstream::start("u", Behaviour::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("# staff\nbob:{}\n", bcrypt::hash("bob-pw", 5).unwrap())).unwrap();
    let gw = Gateway::start(&[("c.yaml", &config(&u, &htpasswd))], &[]);
    let c = client();
    let call = |method: &'static str, path: &str, headers: Vec<(&'static str, String)>| {
        let (c, url) = (c.clone(), gw.url(path));
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            send(&c, method, &url, &h, bytes::Bytes::new()).await
        }
    };

    // API keys: missing, wrong, right; the consumer goes upstream, the key does not, and a
    // consumer header the client forged is replaced.
    let (s, h, body) = call("GET", "/keys", vec![("x-request-id", "req-k1".into())]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(h["www-authenticate"], "ApiKey realm=\"keys\"");
    let j = json(&body);
    assert_eq!((j["error"].as_str(), j["requestId"].as_str()), (Some("credentials_missing"), Some("req-k1")));
    let (s, _, body) = call("GET", "/keys", vec![("x-api-key", "k-guessed".into())]).await;
    assert_eq!((s, json(&body)["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("credentials_invalid")));
    let (s, _, body) =
        call("GET", "/keys", vec![("x-api-key", MOBILE_KEY.into()), ("x-raftgate-consumer", "admin".into())]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let seen = json(&body);
    assert_eq!(seen["headers"]["x-raftgate-consumer"], "mobile");
    assert!(seen["headers"].get("x-api-key").is_none(), "the key stays at the gateway: {seen}");
    // From the query, cut out of what goes upstream and of the access log.
    let (s, _, body) = call("GET", &format!("/keys/q?a=1&api_key={WEB_KEY}&b=2"), vec![]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let seen = json(&body);
    assert_eq!(
        (seen["path"].as_str(), seen["headers"]["x-raftgate-consumer"].as_str()),
        (Some("/keys/q?a=1&b=2"), Some("web"))
    );
    // Authorization by consumer and method: web may read, not write.
    let (s, _, body) = call("POST", "/keys", vec![("x-api-key", WEB_KEY.into())]).await;
    assert_eq!((s, json(&body)["error"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    // The rate limit is per consumer (2 per minute each), and refusals take no token:
    // mobile has used 1, web 1 (its POST was refused first).
    for (key, want) in [(MOBILE_KEY, 200), (MOBILE_KEY, 429), (WEB_KEY, 200), (WEB_KEY, 429)] {
        assert_eq!(call("GET", "/keys", vec![("x-api-key", key.into())]).await.0.as_u16(), want);
    }

    // Basic auth: inline and file users, wrong password, unknown user, another scheme.
    for (who, pass, want) in [
        ("alice", "alice-pw", StatusCode::OK),
        ("bob", "bob-pw", StatusCode::OK),
        ("alice", "bob-pw", StatusCode::UNAUTHORIZED),
        ("mallory", "alice-pw", StatusCode::UNAUTHORIZED),
    ] {
        let (s, h, body) = call("GET", "/basic", vec![("authorization", basic(who, pass))]).await;
        assert_eq!(s, want, "{who}/{pass}: {body}");
        if s == StatusCode::OK {
            let seen = json(&body);
            assert_eq!(seen["headers"]["x-raftgate-consumer"], who);
            assert!(seen["headers"].get("authorization").is_none(), "the password stays at the gateway");
        } else {
            assert_eq!(h["www-authenticate"], "Basic realm=\"staff\", charset=\"UTF-8\"");
        }
    }
    let (s, _, body) =
        call("GET", "/basic", vec![("authorization", "Bearer abc".into()), ("x-raftgate-consumer", "alice".into())])
            .await;
    assert_eq!((s, json(&body)["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("credentials_missing")));

    // Authorization by address and method, with no authentication at all.
    assert_eq!(call("GET", "/office", vec![]).await.0, StatusCode::OK);
    let (s, _, body) = call("DELETE", "/office", vec![]).await;
    assert_eq!((s, json(&body)["error"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    assert_eq!(call("GET", "/open", vec![("x-raftgate-consumer", "kept".into())]).await.0, StatusCode::OK);

    // CORS: the preflight is answered here; the 401 a page gets is readable by it.
    let origin = ("origin", "https://app.example.com".to_string());
    let (s, h, _) = call(
        "OPTIONS",
        "/keys",
        vec![
            origin.clone(),
            ("access-control-request-method", "GET".into()),
            ("access-control-request-headers", "x-api-key".into()),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    let (s, h, _) = call("GET", "/keys", vec![origin.clone()]).await;
    assert_eq!(
        (s, h["access-control-allow-origin"].to_str().unwrap()),
        (StatusCode::UNAUTHORIZED, "https://app.example.com")
    );
    assert_eq!(h["vary"], "Origin");
    let (s, _, _) = call(
        "OPTIONS",
        "/keys",
        vec![("origin", "https://evil.example".into()), ("access-control-request-method", "GET".into())],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Counted per route and reason.
    let m = metrics(&gw).await;
    for series in [
        r#"raftgate_auth_denied_total{route="keys",reason="credentials_missing"} 2"#,
        r#"raftgate_auth_denied_total{route="keys",reason="credentials_invalid"} 1"#,
        r#"raftgate_auth_denied_total{route="keys",reason="forbidden"} 1"#,
        r#"raftgate_auth_denied_total{route="keys",reason="cors_refused"} 1"#,
        r#"raftgate_auth_denied_total{route="basic",reason="credentials_invalid"} 2"#,
        r#"raftgate_auth_denied_total{route="office",reason="forbidden"} 1"#,
    ] {
        assert!(
            m.lines().any(|l| l == series),
            "missing {series}:\n{}",
            m.lines().filter(|l| l.contains("auth_denied")).collect::<Vec<_>>().join("\n")
        );
    }
    // Nothing secret in the log; consumers are named in it.
    let logs = testkit::eventually("the access log has the query-key request", Duration::from_secs(5), || {
        let l = gw.logs();
        l.iter().any(|l| l.contains("/keys/q?a=1&b=2")).then_some(l)
    });
    let all = logs.join("\n");
    for secret in [MOBILE_KEY, WEB_KEY, "alice-pw", "bob-pw"] {
        assert!(!all.contains(secret), "{secret} leaked into the log");
    }
    assert!(logs.iter().any(|l| l.contains("\"consumer\":\"web\"")), "{all}");
}

/// A file a policy names that a node cannot read keeps that node on its previous config,
/// never serving the route open.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_key_file_keeps_the_previous_config() {
    let u = Upstream::start("u", Behaviour::Echo).await;
    let open = upstreams(&[("u", &u)]) + &route("keys", "/keys", "");
    let gw = Gateway::start(&[("c.yaml", &open)], &[]);
    assert_eq!(get(&gw.url("/keys"), &[]).await.0, StatusCode::OK);
    let guarded = open
        + "---\nkind: SecurityPolicy\nname: keys\ntargetRefs: [{ name: keys }]\napiKeyAuth: { consumersFile: /nonexistent/raftgate-keys }\n";
    gw.write("c.yaml", &guarded);
    let line = testkit::eventually("the node logs the refused config", Duration::from_secs(10), || {
        gw.logs().into_iter().find(|l| l.contains("could not be applied"))
    });
    assert!(
        line.contains("security policy `keys`") && line.contains("cannot read /nonexistent/raftgate-keys"),
        "{line}"
    );
    assert_eq!(get(&gw.url("/keys"), &[]).await.0, StatusCode::OK, "still the previous config");
}

/// A real HTTP authorization service: allows `Authorization: Bearer good` (naming the user
/// in `x-auth-user`), answers 401 with a challenge otherwise, and can be made slow.
async fn auth_service(
    slow: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) -> std::net::SocketAddr {
    use std::sync::atomic::Ordering;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (slow, seen) = (slow.clone(), seen.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (slow, seen) = (slow.clone(), seen.clone());
                    async move {
                        let h = req.headers();
                        seen.lock().unwrap().push(format!(
                            "{} {} fwd-uri={} fwd-method={} fwd-for={} cookie={} other={}",
                            req.method(),
                            req.uri(),
                            h.get("x-forwarded-uri").map_or("", |v| v.to_str().unwrap()),
                            h.get("x-forwarded-method").map_or("", |v| v.to_str().unwrap()),
                            h.get("x-forwarded-for").map_or("", |v| v.to_str().unwrap()),
                            h.contains_key("cookie"),
                            h.contains_key("x-other"),
                        ));
                        if slow.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                        }
                        let good = h.get("authorization").is_some_and(|v| v == "Bearer good");
                        let resp = if good {
                            http::Response::builder()
                                .status(200)
                                .header("x-auth-user", "ada")
                                .header("x-not-copied", "1")
                        } else {
                            http::Response::builder().status(401).header("www-authenticate", "Bearer realm=\"corp\"")
                        };
                        Ok::<_, std::convert::Infallible>(
                            resp.body(http_body_util::Full::new(bytes::Bytes::from("no"))).unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn an_external_authorization_service_decides() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let slow = std::sync::Arc::new(AtomicBool::new(false));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let authz = auth_service(slow.clone(), seen.clone()).await;
    let u = Upstream::start("u", Behaviour::Echo).await;
    let policy = |name: &str, route: &str, extra: &str| {
        format!(
            "---\nkind: SecurityPolicy\nname: {name}\ntargetRefs: [{{ name: {route} }}]\nextAuth:\n  http:\n    url: http://{authz}/check\n\
             \x20   headersToBackend: [x-auth-user]\n  headersToExtAuth: [authorization, cookie]\n  timeout: 1s\n{extra}"
        )
    };
    let cfg = upstreams(&[("u", &u)])
        + &route("closed", "/closed", "")
        + &route("open-on-failure", "/lenient", "")
        + &policy("closed", "closed", "")
        + &policy("lenient", "open-on-failure", "  failOpen: true\n");
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let c = client();
    let call = |path: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let (c, url) = (c.clone(), gw.url(path));
        async move { send(&c, "GET", &url, &headers, bytes::Bytes::new()).await }
    };
    // Allowed: the named header reaches the upstream, a forged one does not survive.
    let (s, _, body) = call(
        "/closed/a?b=1",
        vec![("authorization", "Bearer good"), ("cookie", "s=1"), ("x-other", "1"), ("x-auth-user", "mallory")],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let up = json(&body);
    assert_eq!(up["headers"]["x-auth-user"], "ada");
    assert!(up["headers"].get("x-not-copied").is_none());
    let asked = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        asked,
        "GET /check/closed/a?b=1 fwd-uri=/closed/a?b=1 fwd-method=GET fwd-for=127.0.0.1 cookie=true other=false"
    );
    // Denied with the service's status and challenge; a forged identity does not help.
    let (s, h, body) = call("/closed", vec![("authorization", "Bearer bad"), ("x-auth-user", "ada")]).await;
    assert_eq!((s, json(&body)["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("ext_auth_denied")));
    assert_eq!(h["www-authenticate"], "Bearer realm=\"corp\"");
    // The service is too slow: closed by default (503), open where the policy says so.
    slow.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let (s, h, body) = call("/closed", vec![("authorization", "Bearer good")]).await;
    assert_eq!((s, json(&body)["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("ext_auth_unavailable")));
    assert!(h.contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_millis(2_500), "the timeout holds: {:?}", started.elapsed());
    let (s, _, body) = call("/lenient", vec![]).await;
    assert_eq!(s, StatusCode::OK, "fail open: {body}");
    let m = metrics(&gw).await;
    for series in [
        r#"raftgate_auth_denied_total{route="closed",reason="ext_auth_denied"} 1"#,
        r#"raftgate_auth_denied_total{route="closed",reason="ext_auth_unavailable"} 1"#,
    ] {
        assert!(m.lines().any(|l| l == series), "missing {series}");
    }
}
