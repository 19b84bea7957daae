//! JSON Web Tokens end to end: tokens signed by the test with RS256 (a key from `openssl`),
//! ES256 and EdDSA (keys from `rcgen`), verified by the real `raftgated` against a JWKS
//! served by a small HTTP server that rotates keys and goes down on command; the refusals
//! a gateway must make (expired, not yet valid, wrong issuer or audience, bad signature,
//! `alg: none`, an HS256 token keyed with the RSA public key).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::harness::*;

const HMAC_SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";

struct Signer {
    kid: &'static str,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

impl Signer {
    fn token(&self, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.to_string());
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }
}

fn rsa(kid: &'static str, dir: &std::path::Path) -> (Signer, Vec<u8>) {
    let key = dir.join(format!("{kid}.pem"));
    let ok = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(ok.success());
    let modulus =
        std::process::Command::new("openssl").args(["rsa", "-noout", "-modulus", "-in"]).arg(&key).output().unwrap();
    let hex_n = String::from_utf8(modulus.stdout).unwrap().trim().trim_start_matches("Modulus=").to_string();
    let n = B64.encode(hex::decode(hex_n).unwrap());
    let public =
        std::process::Command::new("openssl").args(["rsa", "-pubout", "-in"]).arg(&key).output().unwrap().stdout;
    let pem = std::fs::read(&key).unwrap();
    let jwk = json!({"kty": "RSA", "kid": kid, "use": "sig", "n": n, "e": "AQAB"});
    (Signer { kid, alg: Algorithm::RS256, key: EncodingKey::from_rsa_pem(&pem).unwrap(), jwk }, public)
}

fn ec(kid: &'static str) -> Signer {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw();
    let (x, y) = (&raw[1..33], &raw[33..65]);
    let jwk = json!({"kty": "EC", "kid": kid, "crv": "P-256", "x": B64.encode(x), "y": B64.encode(y)});
    Signer { kid, alg: Algorithm::ES256, key: EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(), jwk }
}

fn ed(kid: &'static str) -> Signer {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let jwk = json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": B64.encode(kp.public_key_raw())});
    Signer { kid, alg: Algorithm::EdDSA, key: EncodingKey::from_ed_pem(kp.serialize_pem().as_bytes()).unwrap(), jwk }
}

/// A JWKS over HTTP on loopback: the key set can change and the server can fail.
struct JwksServer {
    addr: std::net::SocketAddr,
    keys: Arc<Mutex<Vec<Value>>>,
    down: Arc<AtomicBool>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(keys: Vec<Value>) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let keys = Arc::new(Mutex::new(keys));
        let down = Arc::new(AtomicBool::new(false));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (k, d, f) = (keys.clone(), down.clone(), fetches.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (k, d, f) = (k.clone(), d.clone(), f.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        f.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = if d.load(Ordering::SeqCst) {
                            (503, "down".to_string())
                        } else {
                            (200, json!({ "keys": *k.lock().unwrap() }).to_string())
                        };
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder().status(status).body(Full::new(Bytes::from(body))).unwrap(),
                            )
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                });
            }
        });
        JwksServer { addr, keys, down, fetches }
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims(sub: &str, extra: Value) -> Value {
    let mut c = json!({"iss": "https://idp.test", "aud": "api", "sub": sub, "exp": now() + 600, "iat": now()});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn config(u: &Upstream, jwks: &JwksServer) -> String {
    upstreams(&[("u", u)])
        + "---\nkind: Route\nname: orders\nrules:\n  - matches: [{ path: { value: /orders } }]\n    backendRefs: [{ upstream: u }]\n\
           \x20   rateLimit: { requests: 3, period: 1m, burst: 3, key: { claim: sub } }\n\
           ---\nkind: Route\nname: internal\nrules:\n  - matches: [{ path: { value: /internal } }]\n    backendRefs: [{ upstream: u }]\n"
        + &format!(
            "---\nkind: SecurityPolicy\nname: orders\ntargetRefs: [{{ name: orders }}]\n\
             jwt:\n  providers:\n    - name: idp\n      issuer: https://idp.test\n      audiences: [api]\n\
             \x20     remoteJWKS: {{ uri: \"http://{}/jwks\", cacheDuration: 10s }}\n\
             \x20     claimToHeaders: [{{ header: x-user, claim: sub }}, {{ header: x-tenant, claim: org.tenant }}]\n\
             authorization:\n  defaultAction: Allow\n  rules:\n\
             \x20   - {{ name: writers, action: Allow, principal: {{ jwt: {{ provider: idp, scopes: [orders.write] }} }}, operation: {{ methods: [POST] }} }}\n\
             \x20   - {{ name: no-writes, action: Deny, operation: {{ methods: [POST] }} }}\n",
            jwks.addr
        )
        + "---\nkind: SecurityPolicy\nname: internal\ntargetRefs: [{ name: internal }]\n\
           jwt:\n  providers:\n    - name: svc\n      hmacSecret: { env: RAFTGATE_TEST_JWT_SECRET }\n      extractFrom: { cookies: [session], params: [token] }\n"
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_verified_refused_and_keys_rotate_without_failures() {
    let dir = tempfile::tempdir().unwrap();
    let (rs, rsa_public_pem) = rsa("rsa-1", dir.path());
    let (es, eddsa) = (ec("ec-1"), ed("ed-1"));
    let jwks = JwksServer::start(vec![rs.jwk.clone(), es.jwk.clone(), eddsa.jwk.clone()]).await;
    let u = Upstream::start("u", Behaviour::Echo).await;
    let cfg_dir = tempfile::tempdir().unwrap();
    std::fs::write(cfg_dir.path().join("c.yaml"), config(&u, &jwks)).unwrap();
    let gw = Gateway::launch_env(
        Some(cfg_dir.path()),
        &[],
        &[("RAFTGATE_TEST_JWT_SECRET".to_string(), HMAC_SECRET.to_string())],
    );
    let c = client();
    let call = |method: &'static str, path: &'static str, headers: Vec<(&'static str, String)>| {
        let (c, url) = (c.clone(), gw.url(path));
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            send(&c, method, &url, &h, Bytes::new()).await
        }
    };
    let bearer = |t: String| vec![("authorization", format!("Bearer {t}"))];
    // The node's first key set, fetched as it starts, has landed: a token sent before then
    // asks for the one early refresh a node allows per ten seconds, and the rotation below
    // would find it used up (the test failed that way on a loaded machine).
    let metrics = format!("http://{}/metrics", gw.admin);
    testkit::eventually_async("the first JWKS fetch", Duration::from_secs(10), || {
        let url = metrics.clone();
        async move {
            let m = get(&url, &[]).await.2;
            m.lines().any(|l| l.starts_with(r#"raftgate_jwks_fetches_total{outcome="ok"}"#)).then_some(())
        }
    })
    .await;

    // RS256, ES256 and EdDSA are accepted; claims reach the upstream, the token does not.
    for (signer, sub) in [(&rs, "ada"), (&es, "bob"), (&eddsa, "cy")] {
        let t = signer.token(&claims(sub, json!({"org": {"tenant": "acme"}})));
        let mut h = bearer(t);
        h.push(("x-raftgate-consumer", "admin".into()));
        let (s, _, body) = call("GET", "/orders", h).await;
        assert_eq!(s, StatusCode::OK, "{:?}: {body}", signer.alg);
        let seen = json(&body);
        assert_eq!(
            (seen["headers"]["x-user"].as_str(), seen["headers"]["x-tenant"].as_str()),
            (Some(sub), Some("acme"))
        );
        assert_eq!(seen["headers"]["x-raftgate-consumer"], sub, "the token's sub, never the client's claim");
        assert!(seen["headers"].get("authorization").is_none());
    }
    // Refusals, each a 401 with a Bearer challenge.
    let (s, h, body) = call("GET", "/orders", vec![]).await;
    assert_eq!((s, h["www-authenticate"].to_str().unwrap()), (StatusCode::UNAUTHORIZED, "Bearer"), "{body}");
    let mut bad_sig = rs.token(&claims("ada", json!({})));
    let last = bad_sig.pop().unwrap();
    bad_sig.push(if last == 'A' { 'B' } else { 'A' });
    let none = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(claims("ada", json!({})).to_string())
    );
    let confused = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("rsa-1".into());
        jsonwebtoken::encode(&h, &claims("ada", json!({})), &EncodingKey::from_secret(&rsa_public_pem)).unwrap()
    };
    for (what, token) in [
        ("expired", rs.token(&claims("ada", json!({"exp": now() - 3600})))),
        ("not yet valid", es.token(&claims("ada", json!({"nbf": now() + 3600})))),
        ("wrong issuer", rs.token(&claims("ada", json!({"iss": "https://evil.test"})))),
        ("wrong audience", es.token(&claims("ada", json!({"aud": "other"})))),
        ("no expiry", eddsa.token(&json!({"iss": "https://idp.test", "aud": "api", "sub": "ada"}))),
        ("no issuer", eddsa.token(&json!({"aud": "api", "sub": "ada", "exp": now() + 600}))),
        ("no audience", rs.token(&json!({"iss": "https://idp.test", "sub": "ada", "exp": now() + 600}))),
        ("an audience of the wrong type", es.token(&claims("ada", json!({"aud": 7})))),
        ("bad signature", bad_sig),
        ("alg none", none),
        ("HS256 keyed with the RSA public key", confused),
        ("garbage", "not.a.jwt".to_string()),
    ] {
        let (s, _, body) = call("GET", "/orders", bearer(token)).await;
        assert_eq!(
            (s, json(&body)["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("credentials_invalid")),
            "{what}"
        );
    }
    // Authorization by scope: writes need orders.write.
    let (s, _, _) =
        call("POST", "/orders", bearer(es.token(&claims("bob", json!({"scope": "orders.read orders.write"}))))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, body) = call("POST", "/orders", bearer(es.token(&claims("bob", json!({"scope": "orders.read"}))))).await;
    assert_eq!((s, json(&body)["error"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    // The rate limit counts per `sub` (3 a minute, refusals take none): bob has made 2
    // requests, ada 1.
    assert_eq!(call("GET", "/orders", bearer(es.token(&claims("bob", json!({}))))).await.0, StatusCode::OK);
    assert_eq!(
        call("GET", "/orders", bearer(es.token(&claims("bob", json!({}))))).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(call("GET", "/orders", bearer(rs.token(&claims("ada", json!({}))))).await.0, StatusCode::OK);

    // HS256 only with the node's secret, from a cookie or a query parameter (cut from the log).
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("svc-a", json!({})),
        &EncodingKey::from_secret(HMAC_SECRET.as_bytes()),
    )
    .unwrap();
    let (s, _, body) = call("GET", "/internal", vec![("cookie", format!("theme=dark; session={hs}"))]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (c2, url) = (c.clone(), gw.url(&format!("/internal?token={hs}&x=1")));
    let (s, _, body) = send(&c2, "GET", &url, &[], Bytes::new()).await;
    assert_eq!((s, json(&body)["path"].as_str()), (StatusCode::OK, Some("/internal?x=1")));
    let wrong = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("svc-a", json!({})),
        &EncodingKey::from_secret(b"another-secret-another-secret-32b"),
    )
    .unwrap();
    assert_eq!(
        call("GET", "/internal", vec![("cookie", format!("session={wrong}"))]).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Rotation: the identity provider publishes a new key and signs with it at once. A
    // client keeps sending tokens of the old key meanwhile; none fails.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let background = {
        let (stop, failures, sent, c, url) =
            (stop.clone(), failures.clone(), sent.clone(), c.clone(), gw.url("/orders"));
        let tokens: Vec<String> = (0..200).map(|i| rs.token(&claims(&format!("steady-{i}"), json!({})))).collect();
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let auth = format!("Bearer {}", tokens[i % tokens.len()]);
                let (s, _, _) = send(&c, "GET", &url, &[("authorization", &auth)], Bytes::new()).await;
                if s != StatusCode::OK && s != StatusCode::TOO_MANY_REQUESTS {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                sent.fetch_add(1, Ordering::SeqCst);
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let es2 = ec("ec-2");
    jwks.keys.lock().unwrap().push(es2.jwk.clone());
    let fetched = jwks.fetches.load(Ordering::SeqCst);
    // The node fetches at once and waits up to a second for the answer; on a loaded
    // machine the fetch may take longer, and the token passes as soon as it has landed.
    let new_key = es2.token(&claims("dee", json!({})));
    testkit::eventually_async(
        "a token of the new key is accepted after one early fetch",
        Duration::from_secs(5),
        || {
            let t = new_key.clone();
            let call = &call;
            async move { (call("GET", "/orders", bearer(t)).await.0 == StatusCode::OK).then_some(()) }
        },
    )
    .await;
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), fetched + 1, "one early fetch");
    // An unknown key id does not make the node fetch again and again.
    for i in 0..5 {
        let bogus = ec("ec-unknown");
        let (s, _, _) = call("GET", "/orders", bearer(bogus.token(&claims(&format!("x{i}"), json!({}))))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    assert!(jwks.fetches.load(Ordering::SeqCst) <= fetched + 2, "unknown kids are rate limited");

    // The JWKS server goes down: the keys the node has keep working (fresh tokens, so
    // nothing comes from the verified-token cache), well past a refresh interval.
    jwks.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(11)).await;
    for (signer, sub) in [(&rs, "after-1"), (&es2, "after-2"), (&eddsa, "after-3")] {
        let (s, _, body) = call("GET", "/orders", bearer(signer.token(&claims(sub, json!({}))))).await;
        assert_eq!(s, StatusCode::OK, "{sub}: {body}");
    }
    stop.store(true, Ordering::SeqCst);
    background.await.unwrap();
    assert!(sent.load(Ordering::SeqCst) > 100, "the background client ran");
    assert_eq!(failures.load(Ordering::SeqCst), 0, "no request failed during rotation and outage");
    let m = get(&format!("http://{}/metrics", gw.admin), &[]).await.2;
    assert!(m.lines().any(|l| l.starts_with("raftgate_jwks_fetches_total{outcome=\"error\"}")), "the outage was seen");
    assert!(
        m.lines().any(|l| l == r#"raftgate_auth_denied_total{route="orders",reason="credentials_invalid"} 17"#),
        "{}",
        m.lines().filter(|l| l.contains("auth_denied")).collect::<Vec<_>>().join("\n")
    );
}
