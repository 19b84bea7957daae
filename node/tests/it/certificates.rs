//! Edge certificates on a real `raftgated`: renewed by rewriting their files (in place, and
//! certbot-style by pointing a link at a new file) while `wrk` makes a new TLS handshake
//! per request, checked with `openssl s_client`; files half-written or mismatched; the
//! default certificate for clients without SNI. No commit is made throughout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::harness::*;

/// A self-signed certificate for `names` (an IP literal becomes an IP SAN): its PEM, its
/// key's PEM, and the SHA-256 of its DER (what `openssl x509 -fingerprint` prints).
struct Pair {
    cert: String,
    key: String,
    fingerprint: String,
}

fn pair(names: &[&str]) -> Pair {
    let ck = rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    Pair {
        cert: ck.cert.pem(),
        key: ck.signing_key.serialize_pem(),
        fingerprint: hex::encode(Sha256::digest(ck.cert.der())),
    }
}

/// Writes `text` to `path` the way a careful tool does: a new file renamed over the old.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The SHA-256 of the certificate `openssl s_client` is served, with `sni` or none.
fn served(addr: std::net::SocketAddr, sni: Option<&str>) -> Result<String, String> {
    let name = match sni {
        Some(n) => format!("-servername {n}"),
        None => "-noservername".into(),
    };
    let script = format!(
        "openssl s_client -connect {addr} {name} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.trim().rsplit('=').next().unwrap_or("").replace(':', "").to_ascii_lowercase();
    if out.status.success() && hex.len() == 64 {
        Ok(hex)
    } else {
        Err(format!("no certificate ({text}{})", String::from_utf8_lossy(&out.stderr)))
    }
}

/// curl with `ca` as its only trust anchor: (exit code, body).
fn curl(ca: &Path, url: &str) -> (Option<i32>, String) {
    let out = Command::new("curl").args(["-sS", "--max-time", "5", "--cacert"]).arg(ca).arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// Waits until handshakes with `sni` get the certificate `want`; returns how long it took.
fn until_served(addr: std::net::SocketAddr, sni: Option<&str>, want: &str) -> Duration {
    let start = Instant::now();
    loop {
        if served(addr, sni).as_deref() == Ok(want) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{sni:?} never got {want}: {:?}", served(addr, sni));
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn certificate(name: &str, hosts: &str, extra: &str, cert: &Path, key: &Path) -> String {
    format!(
        "---\nkind: Certificate\nname: {name}\nhostnames: [{hosts}]\n{extra}certificate: {{ file: {} }}\nprivateKey: {{ file: {} }}\n",
        cert.display(),
        key.display()
    )
}

async fn status(gw: &Gateway) -> serde_json::Value {
    json(&get(&format!("http://{}/status", gw.admin), &[]).await.2)
}

/// The node's view of certificate `name` in `/status`.
async fn cert_state(gw: &Gateway, name: &str) -> serde_json::Value {
    let s = status(gw).await;
    s["config"]["certificateStates"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_renew_from_their_files_without_a_commit() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| -> PathBuf { dir.path().join(n) };
    // `site`: certbot's layout, live/ links into archive/.
    std::fs::create_dir_all(p("archive")).unwrap();
    std::fs::create_dir_all(p("live")).unwrap();
    let site = [pair(&["site.test"]), pair(&["site.test"])];
    std::fs::write(p("archive/cert1.pem"), &site[0].cert).unwrap();
    std::fs::write(p("archive/key1.pem"), &site[0].key).unwrap();
    std::os::unix::fs::symlink(p("archive/cert1.pem"), p("live/cert.pem")).unwrap();
    std::os::unix::fs::symlink(p("archive/key1.pem"), p("live/key.pem")).unwrap();
    // `fallback`: the default certificate, for clients without SNI; plain files.
    let fallback = [pair(&["127.0.0.1"]), pair(&["127.0.0.1"]), pair(&["127.0.0.1"])];
    std::fs::write(p("default.crt"), &fallback[0].cert).unwrap();
    std::fs::write(p("default.key"), &fallback[0].key).unwrap();

    let cfg = upstreams(&[("up", &up)])
        + "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: up }]\n"
        + &certificate("site", "site.test", "", &p("live/cert.pem"), &p("live/key.pem"))
        + &certificate("fallback", "", "default: true\n", &p("default.crt"), &p("default.key"));
    let gw = Gateway::start(&[("c.yaml", &cfg)], &["--https-addr", "127.0.0.1:0"]);
    let https = gw.https.unwrap();
    let hash = gw.config_hash();

    let (addr, fp) = (https, |i: usize| site[i].fingerprint.clone());
    tokio::task::block_in_place(|| {
        assert_eq!(served(addr, Some("site.test")), Ok(fp(0)));
        // No SNI, or a name no certificate lists: the default certificate.
        assert_eq!(served(addr, None), Ok(fallback[0].fingerprint.clone()));
        assert_eq!(served(addr, Some("unknown.test")), Ok(fallback[0].fingerprint.clone()));
        // curl to the address sends no SNI, and trusts the default certificate (IP SAN).
        let ca = dir.path().join("default-ca.pem");
        std::fs::write(&ca, &fallback[0].cert).unwrap();
        let (code, body) = curl(&ca, &format!("https://{addr}/by-ip"));
        assert_eq!(code, Some(0), "{body}");
        assert!(body.contains("\"path\":\"/by-ip\""), "{body}");
    });

    // Load: a new TLS handshake per request (no SNI: wrk names an IP), through both renewals.
    let url = format!("https://{https}/load");
    let wrk = Command::new("wrk")
        .args(["-t1", "-c4", "-d6s", "-H", "Connection: close", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("wrk is installed (make deps)");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Renewals: certbot writes new files and moves the links; another tool rewrites the
    // default's files in place (renamed over). New handshakes see each within a second.
    let took = tokio::task::block_in_place(|| {
        std::fs::write(p("archive/cert2.pem"), &site[1].cert).unwrap();
        std::fs::write(p("archive/key2.pem"), &site[1].key).unwrap();
        std::os::unix::fs::symlink(p("archive/key2.pem"), p("live/key.tmp")).unwrap();
        std::fs::rename(p("live/key.tmp"), p("live/key.pem")).unwrap();
        std::os::unix::fs::symlink(p("archive/cert2.pem"), p("live/cert.tmp")).unwrap();
        std::fs::rename(p("live/cert.tmp"), p("live/cert.pem")).unwrap();
        let site_took = until_served(addr, Some("site.test"), &fp(1));
        replace(&p("default.key"), &fallback[1].key);
        replace(&p("default.crt"), &fallback[1].cert);
        (site_took, until_served(addr, None, &fallback[1].fingerprint))
    });
    assert!(took.0 < Duration::from_secs(1) && took.1 < Duration::from_secs(1), "renewals took {took:?}");

    let out = tokio::task::block_in_place(|| wrk.wait_with_output().unwrap());
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    let requests: u64 = report
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").and_then(|(n, _)| n.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no request count in:\n{report}"));
    assert!(requests > 200, "{report}");
    eprintln!("renewals served after {took:?}; wrk: {requests} requests, one handshake each, none failed");
    assert!(!report.contains("Socket errors") && !report.contains("Non-2xx"), "failed requests:\n{report}");

    // A half-written certificate: the last good pair stays, and status says why.
    let half = &fallback[2].cert[..fallback[2].cert.len() / 2];
    std::fs::write(p("default.crt"), half).unwrap();
    let state = testkit::eventually_async("status reports the half-written file", Duration::from_secs(5), || async {
        let c = cert_state(&gw, "fallback").await;
        (!c["error"].as_str().unwrap().is_empty()).then_some(c)
    })
    .await;
    assert_eq!(state["fingerprint"], fallback[1].fingerprint, "{state}");
    tokio::task::block_in_place(|| assert_eq!(served(addr, None), Ok(fallback[1].fingerprint.clone())));
    let s = status(&gw).await;
    let errors = s["config"]["certificateErrors"].to_string();
    assert!(errors.contains("certificate `fallback`: its files changed but cannot be used"), "{errors}");

    // A whole certificate with the old key: refused as mismatched; still the last good pair.
    std::fs::write(p("default.crt"), &fallback[2].cert).unwrap();
    let state = testkit::eventually_async("status reports the mismatch", Duration::from_secs(5), || async {
        let c = cert_state(&gw, "fallback").await;
        c["error"].as_str().unwrap().contains("do not match").then_some(c)
    })
    .await;
    assert_eq!(state["fingerprint"], fallback[1].fingerprint, "{state}");
    tokio::task::block_in_place(|| assert_eq!(served(addr, None), Ok(fallback[1].fingerprint.clone())));
    // Its key arrives: served, and the error clears.
    std::fs::write(p("default.key"), &fallback[2].key).unwrap();
    tokio::task::block_in_place(|| until_served(addr, None, &fallback[2].fingerprint));
    let state = cert_state(&gw, "fallback").await;
    assert_eq!(state["error"], "", "{state}");
    assert_eq!(status(&gw).await["config"]["certificateErrors"], serde_json::json!([]));

    // Expiry in /metrics (rcgen's certificates last until 4096).
    let m = get(&format!("http://{}/metrics", gw.admin), &[]).await.2;
    let left: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix(r#"raftgate_certificate_expiry_seconds{certificate="site",node="local"} "#))
        .unwrap_or_else(|| panic!("no expiry series:\n{m}"))
        .parse()
        .unwrap();
    assert!(left > 1e10, "{left}");
    // All of it without a commit.
    assert_eq!(gw.config_hash(), hash);
}

/// Without a default certificate, a client without SNI (or with a name nobody serves) is
/// refused, as documented.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_default_certificate_clients_without_sni_are_refused() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    let site = pair(&["site.test"]);
    std::fs::write(dir.path().join("c.pem"), &site.cert).unwrap();
    std::fs::write(dir.path().join("k.pem"), &site.key).unwrap();
    let cfg = upstreams(&[("up", &up)])
        + "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: up }]\n"
        + &certificate("site", "site.test", "", &dir.path().join("c.pem"), &dir.path().join("k.pem"));
    let gw = Gateway::start(&[("c.yaml", &cfg)], &["--https-addr", "127.0.0.1:0"]);
    let addr = gw.https.unwrap();
    tokio::task::block_in_place(|| {
        assert_eq!(served(addr, Some("site.test")), Ok(site.fingerprint.clone()));
        assert!(served(addr, None).is_err());
        assert!(served(addr, Some("other.test")).is_err());
        // curl to the address: the handshake is refused (curl exit 35, an alert).
        let ca = dir.path().join("c.pem");
        let (code, text) = curl(&ca, &format!("https://{addr}/"));
        assert_eq!(code, Some(35), "{text}");
    });
}
