//! HTTP/2 (h2c and ALPN), TLS with SNI (1.2 and 1.3), WebSocket upgrades, gRPC trailers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn h2c_with_prior_knowledge() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let cfg = upstreams(&[("up", &up)]) + "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: up }]\n";
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let c =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).http2_only(true).build_http::<Full<Bytes>>();
    let resp = c.request(Request::get(gw.url("/h2")).body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v = json(&String::from_utf8_lossy(&body));
    assert_eq!(v["path"], "/h2");
    assert_eq!(v["headers"]["via"], "2 raftgate");
    assert_eq!(v["version"], "HTTP/1.1", "the upstream speaks HTTP/1.1 as configured");
}

struct Certs {
    _dir: tempfile::TempDir,
    yaml: String,
    roots: rustls::RootCertStore,
}

/// Two self-signed certificates written to files, and the Certificate resources for them.
fn certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::new();
    let mut roots = rustls::RootCertStore::empty();
    for (name, hosts) in [("api", vec!["api.example.com"]), ("other", vec!["other.example.com", "*.other.example.com"])]
    {
        let ck = rcgen::generate_simple_self_signed(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).unwrap();
        let crt = dir.path().join(format!("{name}.crt"));
        let key = dir.path().join(format!("{name}.key"));
        std::fs::write(&crt, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        roots.add(ck.cert.der().clone()).unwrap();
        yaml.push_str(&format!(
            "---\nkind: Certificate\nname: {name}\nhostnames: [{}]\ncertificate: {{ file: {} }}\nprivateKey: {{ file: {} }}\n",
            hosts.iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(", "),
            crt.display(),
            key.display()
        ));
    }
    Certs { _dir: dir, yaml, roots }
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    sni: &str,
    roots: &rustls::RootCertStore,
    version: &'static rustls::SupportedProtocolVersion,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, std::io::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_sni_alpn_and_versions() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let c = certs();
    let cfg = upstreams(&[("up", &up)])
        + "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: up }]\n"
        + &c.yaml;
    let gw = Gateway::start(&[("c.yaml", &cfg)], &["--https-addr", "127.0.0.1:0"]);
    let addr = gw.https.unwrap();

    for (version, alpn, want) in [
        (&rustls::version::TLS13, &[&b"h2"[..], b"http/1.1"][..], Version::HTTP_2),
        (&rustls::version::TLS12, &[&b"http/1.1"[..]][..], Version::HTTP_11),
        (&rustls::version::TLS12, &[&b"h2"[..]][..], Version::HTTP_2),
    ] {
        for sni in ["api.example.com", "x.other.example.com"] {
            let tls = tls_connect(addr, sni, &c.roots, version, alpn).await.unwrap_or_else(|e| panic!("{sni}: {e}"));
            let negotiated_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            assert_eq!(negotiated_h2, want == Version::HTTP_2);
            let io = TokioIo::new(tls);
            let req = Request::get(format!("https://{sni}/tls")).body(Full::new(Bytes::new())).unwrap();
            let resp = if negotiated_h2 {
                let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
                tokio::spawn(conn);
                send.send_request(req).await.unwrap()
            } else {
                let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(conn);
                let mut req = req;
                req.headers_mut().insert("host", sni.parse().unwrap());
                send.send_request(req).await.unwrap()
            };
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.version(), want);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let v = json(&String::from_utf8_lossy(&body));
            assert_eq!(v["headers"]["x-forwarded-proto"], "https");
        }
    }
    // A name no certificate serves gets no handshake.
    assert!(tls_connect(addr, "unknown.example.org", &c.roots, &rustls::version::TLS13, &[]).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_change_with_the_config() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let c = certs();
    let base = upstreams(&[("up", &up)]) + "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: up }]\n";
    // Start with only the `api` certificate.
    let api_only: String =
        c.yaml.split("---\n").filter(|d| d.contains("name: api")).map(|d| format!("---\n{d}")).collect();
    let gw = Gateway::start(&[("c.yaml", &base), ("certs.yaml", &api_only)], &["--https-addr", "127.0.0.1:0"]);
    let addr = gw.https.unwrap();
    assert!(tls_connect(addr, "other.example.com", &c.roots, &rustls::version::TLS13, &[]).await.is_err());
    let old = gw.config_hash();
    gw.write("certs.yaml", &c.yaml);
    gw.wait_for_new_config(&old);
    tls_connect(addr, "other.example.com", &c.roots, &rustls::version::TLS13, &[])
        .await
        .expect("new certificate served");
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrade_passes_through() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let cfg = upstreams(&[("up", &up)]) + "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: up }]\n";
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    // Bytes flow both ways through the tunnel, across a config swap too.
    for msg in [&b"hello"[..], b"second message"] {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(got, msg);
        let old = gw.config_hash();
        gw.write(
            "c.yaml",
            &(cfg.clone()
                + &format!(
                    "# touch {}\n---\nkind: Upstream\nname: extra{}\nendpoints: [{{ address: \"127.0.0.1:1\" }}]\n",
                    msg.len(),
                    msg.len()
                )),
        );
        gw.wait_for_new_config(&old);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_passes_through_with_trailers() {
    let up = Upstream::start_with("grpc", Behaviour::Echo, true).await;
    let cfg = format!(
        "kind: Upstream\nname: grpc\nprotocol: http2\nendpoints: [{{ address: \"{}\" }}]\n---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{{ upstream: grpc }}]\n",
        up.addr
    );
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://{}/pkg.Service/Method", gw.http))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x05hello")))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "from-trailers");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x05hello");
}

/// An upstream served over TLS: verified against the configured CA, refused otherwise.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_tls_is_verified() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["upstream.internal".to_string()]).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["upstream.internal".to_string()]).unwrap();
    let wrong_ca = dir.path().join("wrong.pem");
    std::fs::write(&wrong_ca, other.cert.pem()).unwrap();

    // A TLS echo upstream on loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let key = rustls_pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let server_cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else { return };
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"over tls"))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });

    let cfg = format!(
        r#"kind: Upstream
name: good
endpoints: [{{ address: "{addr}" }}]
tls: {{ sni: upstream.internal, caFile: {} }}
---
kind: Upstream
name: wrong
endpoints: [{{ address: "{addr}" }}]
tls: {{ sni: upstream.internal, caFile: {} }}
---
kind: Route
name: r
rules:
  - matches: [{{ path: {{ value: /good }} }}]
    backendRefs: [{{ upstream: good }}]
  - matches: [{{ path: {{ value: /wrong }} }}]
    backendRefs: [{{ upstream: wrong }}]
"#,
        ca.display(),
        wrong_ca.display()
    );
    let gw = Gateway::start(&[("c.yaml", &cfg)], &[]);
    let (status, _, body) = get(&gw.url("/good"), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "over tls");
    let (status, _, body) = get(&gw.url("/wrong"), &[]).await;
    assert!(status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::BAD_GATEWAY, "{status}: {body}");
    // The client gets the code and the request id, never the internal cause; the node's
    // log has the cause under that request id.
    assert!(!body.contains("certificate"), "the internal cause leaked to the client: {body}");
    let id = json(&body)["requestId"].as_str().unwrap().to_string();
    // The access line is written once the response body is done, which can be just after
    // the client has read it: wait for it rather than look once.
    testkit::eventually(&format!("the log names the certificate problem under {id}"), Duration::from_secs(5), || {
        gw.logs().into_iter().find(|l| l.contains(&id) && l.contains("certificate"))
    });
}

/// The server's cipher order wins (testssl.sh reported "Has server cipher order? no (NOT
/// ok)"): a client preferring ChaCha20 still gets AES-256-GCM, in TLS 1.3 and 1.2.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_picks_the_cipher_suite() {
    use rustls::crypto::ring::cipher_suite as cs;
    let up = Upstream::start("up", Behaviour::Echo).await;
    let c = certs();
    let cfg = upstreams(&[("up", &up)])
        + "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: up }]\n"
        + &c.yaml;
    let gw = Gateway::start(&[("c.yaml", &cfg)], &["--https-addr", "127.0.0.1:0"]);
    for (version, prefer, then, want) in [
        (
            &rustls::version::TLS13,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            "TLS13_AES_256_GCM_SHA384",
        ),
        (
            &rustls::version::TLS12,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ),
    ] {
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![prefer, then];
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(c.roots.clone())
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(gw.https.unwrap()).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("api.example.com").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.unwrap();
        let got = format!("{:?}", tls.get_ref().1.negotiated_cipher_suite().unwrap().suite());
        assert_eq!(got, want, "{version:?}");
    }
}
