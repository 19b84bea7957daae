//! The HTTPS listener's `TLSPolicy` on a real `raftgated`, judged by `openssl s_client`:
//! versions, cipher suites and whose order wins, changed by a config swap without a
//! restart; session resumption by tickets, across two nodes that share a ticket key file
//! and not across nodes that do not; OCSP stapling from a response made by `openssl ocsp`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::*;

/// Runs a shell script in `dir`, failing the test with its output if it fails.
fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).current_dir(dir).output().unwrap();
    assert!(
        out.status.success(),
        "{script}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA, a certificate for `site.test` it signed (ECDSA P-256), and an OCSP response for
/// it signed by the CA (`ocsp.der`), all made by the openssl CLI in `dir`.
fn pki(dir: &Path) {
    sh(
        dir,
        r#"set -e
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=test-ca -keyout ca.key -out ca.pem 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=site.test -keyout key.pem -out req.csr 2>/dev/null
        printf 'subjectAltName=DNS:site.test\n' > ext
        openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -extfile ext -out cert.pem 2>/dev/null
        serial=$(openssl x509 -in cert.pem -noout -serial | cut -d= -f2)
        printf 'V\t%s\t\t%s\tunknown\t/CN=site.test\n' "$(date -u -d '+30 days' +%y%m%d%H%M%SZ)" "$serial" > index.txt
        openssl ocsp -issuer ca.pem -cert cert.pem -no_nonce -reqout ocsp-req.der 2>/dev/null
        openssl ocsp -index index.txt -rsigner ca.pem -rkey ca.key -CA ca.pem -reqin ocsp-req.der -respout ocsp.der -ndays 7 2>/dev/null
        "#,
    );
}

/// `openssl s_client` to `addr` as `site.test` with `args`, run in `dir` (where `ca.pem`
/// is); its whole output. Standard input stays open for a moment so TLS 1.3 tickets, sent
/// after the handshake, arrive before it quits.
fn s_client(dir: &Path, addr: SocketAddr, args: &str) -> String {
    let script =
        format!("sleep 0.3 | openssl s_client -connect {addr} -servername site.test -CAfile ca.pem {args} 2>&1");
    let out = Command::new("sh").arg("-c").arg(script).current_dir(dir).stdin(Stdio::null()).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cipher suite negotiated, or `None` when the handshake failed.
fn cipher(out: &str) -> Option<String> {
    let line = out.lines().find(|l| l.contains(", Cipher is "))?;
    let c = line.rsplit("Cipher is ").next()?.trim().to_string();
    (c != "(NONE)").then_some(c)
}

fn base(up: &Upstream, dir: &Path, extra_cert: &str) -> String {
    upstreams(&[("up", up)])
        + "---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: up }]\n"
        + &format!(
            "---\nkind: Certificate\nname: site\nhostnames: [site.test]\ncertificate: {{ file: {0}/cert.pem }}\nprivateKey: {{ file: {0}/key.pem }}\n{extra_cert}",
            dir.display()
        )
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_ciphers_and_their_order_follow_the_policy_and_change_without_a_restart() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let gw = Gateway::start(&[("c.yaml", &base(&up, dir.path(), ""))], &["--https-addr", "127.0.0.1:0"]);
    let addr = gw.https.unwrap();
    let at = |args: &str| s_client(dir.path(), addr, args);

    // The default policy: TLS 1.2 and 1.3; the server's order (rustls's: AES-256 first).
    tokio::task::block_in_place(|| {
        let out = at("-tls1_2");
        assert_eq!(cipher(&out).as_deref(), Some("ECDHE-ECDSA-AES256-GCM-SHA384"), "{out}");
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
        let out = at("-tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384");
        assert_eq!(cipher(&out).as_deref(), Some("TLS_AES_256_GCM_SHA384"), "{out}");
    });

    // TLS 1.3 only, ChaCha20 preferred: a config swap, no restart.
    let old = gw.config_hash();
    let policy = "---\nkind: TLSPolicy\nname: modern\nminVersion: 1.3\n\
                  cipherSuites: [TLS13_CHACHA20_POLY1305_SHA256, TLS13_AES_128_GCM_SHA256]\n";
    gw.write("c.yaml", &(base(&up, dir.path(), "") + policy));
    gw.wait_for_new_config(&old);
    tokio::task::block_in_place(|| {
        let out = at("-tls1_2");
        assert_eq!(cipher(&out), None, "TLS 1.2 is refused:\n{out}");
        // The client prefers AES-128; the server's order wins.
        let out = at("-tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256");
        assert_eq!(cipher(&out).as_deref(), Some("TLS_CHACHA20_POLY1305_SHA256"), "{out}");
        // A suite the policy leaves out is never negotiated.
        let out = at("-tls1_3 -ciphersuites TLS_AES_256_GCM_SHA384");
        assert_eq!(cipher(&out), None, "{out}");
    });

    // The client's order, when the policy says so.
    let old = gw.config_hash();
    gw.write("c.yaml", &(base(&up, dir.path(), "") + policy + "serverCipherOrder: false\n"));
    gw.wait_for_new_config(&old);
    tokio::task::block_in_place(|| {
        let out = at("-tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256");
        assert_eq!(cipher(&out).as_deref(), Some("TLS_AES_128_GCM_SHA256"), "{out}");
    });
    // Requests still flow over the new policy.
    let out = tokio::task::block_in_place(|| {
        sh(
            dir.path(),
            &format!(
                "curl -s --cacert ca.pem --resolve site.test:{}:127.0.0.1 https://site.test:{}/x",
                addr.port(),
                addr.port()
            ),
        )
    });
    assert!(out.contains("\"upstream\":\"up\""), "{out}");
}

/// Resumes a session saved from one listener on another: whether the second handshake
/// was a resumption.
fn resumed(dir: &Path, from: SocketAddr, to: SocketAddr, version: &str) -> bool {
    let session = dir.join(format!("session-{}-{}{version}", from.port(), to.port()));
    let first = s_client(dir, from, &format!("{version} -sess_out {}", session.display()));
    assert!(cipher(&first).is_some(), "{first}");
    let second = s_client(dir, to, &format!("{version} -sess_in {}", session.display()));
    assert!(cipher(&second).is_some(), "{second}");
    second.contains("Reused, TLS")
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_resume_on_every_node_that_shares_the_ticket_key_and_ocsp_is_stapled() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let key = dir.path().join("ticket.key");
    std::fs::write(&key, [0x5au8; 48]).unwrap();
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, [0xa5u8; 48]).unwrap();
    let cfg = base(&up, dir.path(), &format!("ocspResponseFile: {}/ocsp.der\n", dir.path().display()));
    let shared = ["--https-addr", "127.0.0.1:0", "--tls-ticket-key-file", key.to_str().unwrap()];
    let a = Gateway::start(&[("c.yaml", &cfg)], &shared);
    let b = Gateway::start(&[("c.yaml", &cfg)], &shared);
    let c = Gateway::start(
        &[("c.yaml", &cfg)],
        &["--https-addr", "127.0.0.1:0", "--tls-ticket-key-file", other_key.to_str().unwrap()],
    );
    let lone = Gateway::start(&[("c.yaml", &cfg)], &["--https-addr", "127.0.0.1:0"]);
    let (a, b, c, lone) = (a.https.unwrap(), b.https.unwrap(), c.https.unwrap(), lone.https.unwrap());
    let d = dir.path();
    tokio::task::block_in_place(|| {
        for v in ["-tls1_3", "-tls1_2"] {
            assert!(resumed(d, a, a, v), "{v}: a resumes on itself");
            assert!(resumed(d, a, b, v), "{v}: a session from node a resumes on node b (same key file)");
            assert!(!resumed(d, a, c, v), "{v}: not on a node with another key file");
            assert!(resumed(d, lone, lone, v), "{v}: node-local keys resume on the same node");
            assert!(!resumed(d, lone, a, v), "{v}: node-local keys are not shared");
        }
        // OCSP: stapled, and the client finds it good.
        let out = s_client(d, a, "-status");
        assert!(out.contains("OCSP Response Status: successful"), "{out}");
        assert!(out.contains("Cert Status: good"), "{out}");
    });
}

/// An OCSP response that must not be stapled (not DER; another certificate's) leaves the
/// certificate served without a staple, and the node says why.
#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_ocsp_response_is_not_stapled_and_the_certificate_is_still_served() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let other = tempfile::tempdir().unwrap();
    pki(other.path());
    std::fs::write(dir.path().join("bad.der"), b"-----BEGIN OCSP-----\nnot der\n").unwrap();
    for (file, why) in [
        (dir.path().join("bad.der"), "not DER"),
        (other.path().join("ocsp.der"), "the OCSP response is for another certificate"),
    ] {
        let cfg = base(&up, dir.path(), &format!("ocspResponseFile: {}\n", file.display()));
        let gw = Gateway::start(&[("c.yaml", &cfg)], &["--https-addr", "127.0.0.1:0"]);
        let s = json(&get(&format!("http://{}/status", gw.admin), &[]).await.2);
        let errors = s["config"]["certificateErrors"].to_string();
        assert!(errors.contains("certificate `site`: OCSP response not stapled") && errors.contains(why), "{errors}");
        let out = tokio::task::block_in_place(|| s_client(dir.path(), gw.https.unwrap(), "-status"));
        assert!(cipher(&out).is_some() && out.contains("Verify return code: 0 (ok)"), "{out}");
        assert!(out.contains("OCSP response: no response sent"), "{out}");
    }
}

/// `httpsRedirect` sends plain-HTTP requests to HTTPS, and the certificate's `hsts` goes on
/// every HTTPS answer for its host names (never over plain HTTP, never for other hosts),
/// checked with curl following the redirect.
#[tokio::test(flavor = "multi_thread")]
async fn plain_http_is_redirected_to_https_which_carries_hsts() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let gw = Gateway::start(&[("c.yaml", &base(&up, dir.path(), ""))], &["--https-addr", "127.0.0.1:0"]);
    let (http, https) = (gw.http, gw.https.unwrap());
    let old = gw.config_hash();
    let cfg = base(&up, dir.path(), "hsts: { maxAgeSeconds: 31536000, includeSubDomains: true }\n")
        .replace("name: r\nrules:", &format!("name: r\nhttpsRedirect: {{ port: {} }}\nrules:", https.port()))
        + "---\nkind: Route\nname: other\nhostnames: [other.test]\nrules:\n  - backendRefs: [{ upstream: up }]\n";
    gw.write("c.yaml", &cfg);
    gw.wait_for_new_config(&old);

    let curl = |args: String| {
        sh(dir.path(), &format!("curl -s -o /dev/null -D - --cacert ca.pem --resolve site.test:{}:127.0.0.1 --resolve site.test:{}:127.0.0.1 {args}", http.port(), https.port()))
    };
    let (plain, followed, other) = tokio::task::block_in_place(|| {
        (
            curl(format!("http://site.test:{}/a/b?c=1", http.port())),
            curl(format!("-L http://site.test:{}/a/b?c=1", http.port())),
            curl(format!("-H 'Host: other.test' http://site.test:{}/", http.port())),
        )
    });
    // Over HTTPS, a host the certificate does not list gets no HSTS.
    let other_tls =
        tokio::task::block_in_place(|| curl(format!("-H 'Host: other.test' https://site.test:{}/", https.port())));
    assert!(other_tls.starts_with("HTTP/2 200") || other_tls.starts_with("HTTP/1.1 200"), "{other_tls}");
    assert!(!other_tls.to_ascii_lowercase().contains("strict-transport-security"), "{other_tls}");
    let lower = plain.to_ascii_lowercase();
    assert!(plain.starts_with("HTTP/1.1 308"), "{plain}");
    assert!(lower.contains(&format!("location: https://site.test:{}/a/b?c=1", https.port())), "{plain}");
    assert!(!lower.contains("strict-transport-security"), "never over plain HTTP: {plain}");
    // Followed: the 308, then the HTTPS answer from the upstream, with HSTS.
    let last = followed.rsplit("HTTP/").next().unwrap().to_ascii_lowercase();
    assert!(last.starts_with("2 200") || last.starts_with("1.1 200"), "{followed}");
    assert!(last.contains("strict-transport-security: max-age=31536000; includesubdomains"), "{followed}");
    // A route without httpsRedirect is served over plain HTTP.
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
}
