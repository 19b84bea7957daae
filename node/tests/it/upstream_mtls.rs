//! raftgated as a TLS client with a certificate of its own: nginx with
//! `ssl_verify_client on` refuses an upstream connection without one and accepts
//! raftgated's when the upstream's `tls.clientCertificate` names it.

use std::process::Command;
use std::time::Duration;

use http::StatusCode;

use crate::harness::*;

/// nginx serving TLS with `server`, requiring a client certificate from `ca`, and saying
/// whom it saw.
fn nginx_mtls(server: (&std::path::Path, &std::path::Path), ca: &std::path::Path) -> Nginx {
    Nginx::start(|_, port| {
        format!(
            "access_log off;\n\
             server {{\n\
               listen 127.0.0.1:{port} ssl;\n\
               ssl_certificate {}; ssl_certificate_key {};\n\
               ssl_client_certificate {}; ssl_verify_client on;\n\
               location / {{ return 200 \"client=$ssl_client_s_dn verify=$ssl_client_verify\\n\"; }}\n\
             }}",
            server.0.display(),
            server.1.display(),
            ca.display()
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_requires_a_client_certificate_gets_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = trust::gen::Ca::new("upstreams", 1).unwrap();
    ca.save(dir.path()).unwrap();
    let server = ca.node(1, &["orders.internal".to_string()], &["127.0.0.1".parse().unwrap()], 1).unwrap();
    let server_files = server.save(dir.path(), "nginx").unwrap();
    let gateway = ca.client("raftgate-gateway", 1).unwrap();
    let (cert, key) = gateway.save(dir.path(), "gateway").unwrap();
    let ca_pem = dir.path().join("ca.pem");
    let nginx = nginx_mtls((&server_files.0, &server_files.1), &ca_pem);

    let upstream = |name: &str, client_cert: &str| {
        format!(
            "---\nkind: Upstream\nname: {name}\nendpoints: [{{ address: \"127.0.0.1:{}\" }}]\n\
             tls: {{ sni: orders.internal, caFile: {}{client_cert} }}\n",
            nginx.addr.port(),
            ca_pem.display()
        )
    };
    let cfg = upstream(
        "with-cert",
        &format!(", clientCertificate: {{ certificate: {{ file: {} }}, privateKey: {{ file: {} }} }}", cert.display(), key.display()),
    ) + &upstream("without-cert", "")
        + "---\nkind: Route\nname: r\nrules:\n  - matches: [{ path: { value: /with } }]\n    backendRefs: [{ upstream: with-cert }]\n\
           \x20 - matches: [{ path: { value: /without } }]\n    backendRefs: [{ upstream: without-cert }]\n";
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let (s, _, body) = get(&gw.url("/with"), &[]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains("CN=raftgate-gateway") && body.contains("verify=SUCCESS"), "{body}");
    let (s, _, body) = get(&gw.url("/without"), &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "nginx refuses a connection without a client certificate: {body}");
    assert!(body.contains("No required SSL certificate was sent"), "{body}");

    // A key that does not belong to the certificate keeps the node on its previous config.
    let other = ca.client("someone-else", 1).unwrap();
    let (_, other_key) = other.save(dir.path(), "other").unwrap();
    let old = gw.config_hash();
    gw.write("c.yaml", &cfg.replace(&key.display().to_string(), &other_key.display().to_string()));
    let line = testkit::eventually("the node refuses the mismatched key", Duration::from_secs(10), || {
        gw.logs().into_iter().find(|l| l.contains("could not be applied"))
    });
    assert!(line.contains("do not match"), "{line}");
    assert_eq!(gw.config_hash(), old);
    assert_eq!(get(&gw.url("/with"), &[]).await.0, StatusCode::OK, "still serving the previous config");
}

/// curl against the node's TLS listener as `host`, with an optional client certificate;
/// `(curl's exit code, body)`.
fn curl(
    https: std::net::SocketAddr,
    host: &str,
    ca: &std::path::Path,
    cert: Option<(&std::path::Path, &std::path::Path)>,
    headers: &[&str],
) -> (i32, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "10", "--cacert"]).arg(ca);
    cmd.arg("--resolve").arg(format!("{host}:{}:127.0.0.1", https.port()));
    if let Some((c, k)) = cert {
        cmd.arg("--cert").arg(c).arg("--key").arg(k);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(format!("https://{host}:{}/", https.port())).output().expect("curl is installed");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn edge_client_certificates_are_required_per_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = trust::gen::Ca::new("edge", 1).unwrap();
    ca.save(dir.path()).unwrap();
    let server = ca.node(1, &["secure.test".to_string(), "open.test".to_string()], &[], 1).unwrap();
    let (server_cert, server_key) = server.save(dir.path(), "server").unwrap();
    let (alice_cert, alice_key) = ca.client("alice-laptop", 1).unwrap().save(dir.path(), "alice").unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = trust::gen::Ca::new("other", 1).unwrap();
    let (mallory_cert, mallory_key) = other_ca.client("mallory", 1).unwrap().save(other_dir.path(), "mallory").unwrap();
    let ca_pem = dir.path().join("ca.pem");

    let u = Upstream::start("u", Behaviour::Echo).await;
    let certificate = |name: &str, host: &str, extra: &str| {
        format!(
            "---\nkind: Certificate\nname: {name}\nhostnames: [{host}]\ncertificate: {{ file: {} }}\nprivateKey: {{ file: {} }}\n{extra}",
            server_cert.display(),
            server_key.display()
        )
    };
    let cfg = upstreams(&[("u", &u)])
        + "---\nkind: Route\nname: all\nrules:\n  - backendRefs: [{ upstream: u }]\n"
        + &certificate("secure", "secure.test", &format!("clientValidation: {{ caFile: {} }}\n", ca_pem.display()))
        + &certificate("open", "open.test", "");
    let gw = Gateway::start(&[("c.yaml", &cfg)], &["--https-addr", "127.0.0.1:0"]);
    let https = gw.https.unwrap();
    let forged = ["x-forwarded-client-cert: Hash=00;Subject=\"CN=admin\""];

    // With a certificate of the CA: through, and the upstream learns who it is.
    let (code, body) =
        tokio::task::block_in_place(|| curl(https, "secure.test", &ca_pem, Some((&alice_cert, &alice_key)), &forged));
    assert_eq!(code, 0, "{body}");
    let xfcc = json(&body)["headers"]["x-forwarded-client-cert"].as_str().unwrap().to_string();
    assert!(xfcc.starts_with("Hash=") && xfcc.contains("Subject=\"CN=alice-laptop\""), "{xfcc}");
    // Without one, or with one from another CA: no TLS session at all.
    let (code, body) = tokio::task::block_in_place(|| curl(https, "secure.test", &ca_pem, None, &[]));
    assert_ne!(code, 0, "no client certificate must not pass: {body}");
    let (code, body) =
        tokio::task::block_in_place(|| curl(https, "secure.test", &ca_pem, Some((&mallory_cert, &mallory_key)), &[]));
    assert_ne!(code, 0, "a certificate of another CA must not pass: {body}");
    // Another host name of the same listener asks for none, and a forged header is dropped.
    let (code, body) = tokio::task::block_in_place(|| curl(https, "open.test", &ca_pem, None, &forged));
    assert_eq!(code, 0, "{body}");
    assert!(json(&body)["headers"].get("x-forwarded-client-cert").is_none(), "{body}");
    // A connection made for open.test cannot ask for secure.test: 421, nothing forwarded.
    let before = u.traffic();
    let (code, body) = tokio::task::block_in_place(|| curl(https, "open.test", &ca_pem, None, &["Host: secure.test"]));
    assert_eq!(code, 0, "{body}");
    assert_eq!(json(&body)["error"], "misdirected_request", "{body}");
    assert_eq!(u.traffic(), before, "nothing reached the upstream");
}
