//! GitOps against real Git repositories made with the git CLI (one served by `git daemon`
//! over git://) and real 3-node clusters.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hmac::{Hmac, Mac};
use http::StatusCode;
use schemas::admin::*;
use sha2::Sha256;

use crate::harness::*;
use crate::nodes::*;

/// A working repository driven with the git CLI, isolated from any user or system config.
pub(crate) struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    /// A repository whose first commit serves `/r0` (signed with `key` when given).
    pub(crate) fn init(up: &Upstream, key: Option<&Path>) -> Repo {
        let repo = Repo { dir: tempfile::tempdir().unwrap() };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.write_routes(up, &["r0"]);
        repo.commit("initial config", key);
        repo
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn url(&self) -> String {
        self.path().to_str().unwrap().to_string()
    }

    pub(crate) fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(self.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Dev")
            .env("GIT_AUTHOR_EMAIL", "dev@example.com")
            .env("GIT_COMMITTER_NAME", "Dev")
            .env("GIT_COMMITTER_EMAIL", "dev@example.com")
            .args(args)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub(crate) fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path().join(name), text).unwrap();
    }

    pub(crate) fn write_routes(&self, up: &Upstream, names: &[&str]) {
        self.write("c.yaml", &routes_config(up, names));
    }

    /// Commits everything; signs with the SSH key `key` when given. Returns the sha.
    pub(crate) fn commit(&self, message: &str, key: Option<&Path>) -> String {
        self.git(&["add", "-A"]);
        match key {
            Some(k) => {
                let signing = format!("user.signingkey={}", k.display());
                self.git(&["-c", "gpg.format=ssh", "-c", &signing, "commit", "-q", "-S", "-m", message])
            }
            None => self.git(&["-c", "commit.gpgsign=false", "commit", "-q", "-m", message]),
        };
        self.head()
    }

    pub(crate) fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }
}

/// Starts a cluster of three nodes syncing from `url`.
pub(crate) async fn three_nodes(url: &str, up: Upstream, extra: &[&str]) -> TestCluster {
    let mut c = TestCluster::from_git(url, up, extra).await;
    c.join(2, 1, false);
    c.join(3, 1, false);
    c.wait_members(1, &[1, 2, 3], &[]).await;
    c.wait_serving(&[2, 3], "/r0").await;
    c
}

async fn wait_refusal(c: &TestCluster, id: u64, commit: &str) -> Refusal {
    eventually(Duration::from_secs(20), &format!("node {id} to show {commit} refused"), || async {
        c.status(id).await.refusal.filter(|r| r.commit == commit)
    })
    .await
}

async fn serves_commit(c: &TestCluster, ids: &[u64], commit: &str) {
    for id in ids {
        eventually(Duration::from_secs(20), &format!("node {id} serving {commit}"), || async {
            (c.status(*id).await.config.is_some_and(|a| a.commit == commit)).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn merges_apply_bad_commits_and_force_pushes_are_refused() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let repo = Repo::init(&up, None);
    let mut c = three_nodes(&repo.url(), up, &[]).await;

    // A feature branch merged with a merge commit reaches every node.
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write_routes(&c.up, &["r0", "r1"]);
    repo.commit("add r1", None);
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["-c", "commit.gpgsign=false", "merge", "-q", "--no-ff", "-m", "Merge feature", "feature"]);
    let merge = repo.head();
    c.wait_serving(&[1, 2, 3], "/r1").await;
    serves_commit(&c, &[1, 2, 3], &merge).await;

    // An invalid commit is refused: every node says where and why; traffic is unaffected.
    let mut broken = routes_config(&c.up, &["r0", "r1"]);
    broken += "---\nkind: Route\nname: bad\nrules:\n  - backendRefs: [{ upstream: nope }]\n";
    repo.write("c.yaml", &broken);
    let bad = repo.commit("break the config", None);
    for id in [1, 2, 3] {
        let r = wait_refusal(&c, id, &bad).await;
        assert_eq!(r.step, "validate");
        assert!(r.errors.iter().any(|e| e.contains("c.yaml:") && e.contains("nope")), "{r:?}");
        assert_eq!(get(&c.gw(id).url("/r1"), &[]).await.0, StatusCode::OK);
        assert_eq!(c.status(id).await.config.unwrap().commit, merge);
    }
    let metrics = get(&format!("http://{}/metrics", c.gw(3).admin), &[]).await.2;
    assert!(metrics.contains("raftgate_config_refused 1"), "{metrics}");

    // The fix applies and clears the refusal everywhere.
    repo.write_routes(&c.up, &["r0", "r1", "r2"]);
    let fix = repo.commit("fix", None);
    c.wait_serving(&[1, 2, 3], "/r2").await;
    serves_commit(&c, &[1, 2, 3], &fix).await;
    for id in [1, 2, 3] {
        assert_eq!(c.status(id).await.refusal, None);
    }

    // History rewritten (a force-push to the branch): refused.
    repo.git(&["reset", "-q", "--hard", &merge]);
    repo.write_routes(&c.up, &["r0", "r1", "r3"]);
    let rewritten = repo.commit("rewrite", None);
    let r = wait_refusal(&c, 2, &rewritten).await;
    assert_eq!(r.step, "ancestry");
    assert!(r.errors[0].contains("--allow-non-fast-forward"), "{r:?}");
    assert_eq!(get(&c.gw(2).url("/r3"), &[]).await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(&c.gw(2).url("/r2"), &[]).await.0, StatusCode::OK);

    // Restarted with --allow-non-fast-forward, the cluster takes it.
    for id in [1, 2, 3] {
        c.kill(id);
    }
    for id in [1, 2, 3] {
        c.launch(id, &["--allow-non-fast-forward"]);
    }
    c.wait_serving(&[1, 2, 3], "/r3").await;
    serves_commit(&c, &[1, 2, 3], &rewritten).await;
    c.check_history_order().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_commits_signed_by_allowed_keys_apply() {
    let keys = tempfile::tempdir().unwrap();
    let keygen = |name: &str| -> PathBuf {
        let path = keys.path().join(name);
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&path)
            .status()
            .expect("ssh-keygen runs (make deps installs openssh-client)");
        assert!(ok.success());
        path
    };
    let allowed = keygen("allowed");
    let other = keygen("other");
    let public = std::fs::read_to_string(allowed.with_extension("pub")).unwrap();
    let signers = keys.path().join("allowed_signers");
    std::fs::write(&signers, format!("dev@example.com {public}")).unwrap();

    let up = Upstream::start("up", Behaviour::Echo).await;
    let repo = Repo::init(&up, Some(&allowed));
    let signers_arg = signers.to_str().unwrap().to_string();
    let c = three_nodes(&repo.url(), up, &["--require-signed-commits", "--allowed-signers", &signers_arg]).await;

    repo.write_routes(&c.up, &["r0", "r1"]);
    let unsigned = repo.commit("unsigned", None);
    let r = wait_refusal(&c, 2, &unsigned).await;
    assert_eq!(r.step, "signature");
    assert!(r.errors[0].contains("not signed"), "{r:?}");

    repo.write_routes(&c.up, &["r0", "r2"]);
    let stranger = repo.commit("signed by another key", Some(&other));
    let r = wait_refusal(&c, 3, &stranger).await;
    assert_eq!(r.step, "signature");
    assert!(r.errors[0].contains("not in the allowed signers"), "{r:?}");
    assert_eq!(get(&c.gw(1).url("/r2"), &[]).await.0, StatusCode::NOT_FOUND);

    repo.write_routes(&c.up, &["r0", "r3"]);
    let good = repo.commit("signed by an allowed key", Some(&allowed));
    c.wait_serving(&[1, 2, 3], "/r3").await;
    serves_commit(&c, &[1, 2, 3], &good).await;
    assert_eq!(c.status(1).await.refusal, None);
}

fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_start_a_sync_at_once_and_bad_signatures_change_nothing() {
    let secret = "a-webhook-secret-of-some-length";
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("hook");
    std::fs::write(&secret_file, secret).unwrap();
    let up = Upstream::start("up", Behaviour::Echo).await;
    let repo = Repo::init(&up, None);
    let sf = secret_file.to_str().unwrap().to_string();
    // Polling once an hour: only a webhook can explain a quick sync.
    let c = three_nodes(&repo.url(), up, &["--git-poll-interval", "1h", "--git-webhook-secret-file", &sf]).await;
    let leader = c.leader().await;
    let follower = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap();
    let hook = format!("http://{}/webhook", c.gw(follower).admin);
    let body = br#"{"ref":"refs/heads/main","after":"0"}"#;

    repo.write_routes(&c.up, &["r0", "r1"]);
    repo.commit("add r1", None);

    let post = |headers: Vec<(&'static str, String)>| {
        let hook = hook.clone();
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            send(&client(), "POST", &hook, &h, bytes::Bytes::from_static(body)).await
        }
    };
    let wrong = github_signature("not-the-secret-at-all", body);
    let (s, _, text) = post(vec![("x-github-event", "push".into()), ("x-hub-signature-256", wrong)]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{text}");
    let (s, _, _) = post(vec![("x-github-event", "push".into())]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in [1, 2, 3] {
        assert_eq!(get(&c.gw(id).url("/r1"), &[]).await.0, StatusCode::NOT_FOUND, "no sync happened");
    }

    // A good GitHub signature on a follower: the leader syncs at once.
    let started = std::time::Instant::now();
    let good = github_signature(secret, body);
    let (s, _, text) = post(vec![("x-github-event", "push".into()), ("x-hub-signature-256", good)]).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{text}");
    assert_eq!(json(&text)["leader"], leader);
    c.wait_serving(&[1, 2, 3], "/r1").await;
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());

    // GitLab's token header works too.
    repo.write_routes(&c.up, &["r0", "r1", "r2"]);
    repo.commit("add r2", None);
    let (s, _, text) = post(vec![("x-gitlab-event", "Push Hook".into()), ("x-gitlab-token", secret.into())]).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{text}");
    c.wait_serving(&[1, 2, 3], "/r2").await;

    // `ConfigSync` (what `raftgate config sync` calls) waits for the sync it started.
    repo.write_routes(&c.up, &["r0", "r1", "r2", "r3"]);
    let sha = repo.commit("add r3", None);
    let reply = c.admin(follower).await.config_sync(ConfigSyncRequest { wait: true }).await.unwrap().into_inner();
    let state = reply.state.unwrap();
    assert_eq!((state.head.as_str(), state.outcome.as_str()), (sha.as_str(), "proposed"));
    // Committed and applied by the state machine when the call returns; the proxy swaps it
    // in right after (asynchronously, `cluster::follow`), so the leader serves it shortly.
    c.wait_serving(&[leader], "/r3").await;
    assert_eq!(get(&c.gw(leader).url("/r3"), &[]).await.0, StatusCode::OK);
}

/// `--webhook-addr`: webhooks on their own TLS listener (which serves nothing else), while
/// the admin listener answers /webhook with where to send it.
#[tokio::test(flavor = "multi_thread")]
async fn webhooks_on_their_own_tls_listener() {
    let secret = "a-webhook-secret-of-some-length";
    let files = tempfile::tempdir().unwrap();
    let sf = files.path().join("hook");
    std::fs::write(&sf, secret).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["hooks.example.com".to_string()]).unwrap();
    let (crt, key) = (files.path().join("hook.crt"), files.path().join("hook.key"));
    std::fs::write(&crt, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let port = testkit::free_port();
    let hook_addr = format!("127.0.0.1:{port}");
    let up = Upstream::start("up", Behaviour::Echo).await;
    let repo = Repo::init(&up, None);
    let p = |f: &Path| f.to_str().unwrap().to_string();
    let c = TestCluster::from_git(
        &repo.url(),
        up,
        &[
            "--git-poll-interval",
            "1h",
            "--git-webhook-secret-file",
            &p(&sf),
            "--webhook-addr",
            &hook_addr,
            "--webhook-tls-cert",
            &p(&crt),
            "--webhook-tls-key",
            &p(&key),
        ],
    )
    .await;
    repo.write_routes(&c.up, &["r0", "r1"]);
    repo.commit("add r1", None);
    let body = br#"{"ref":"refs/heads/main","after":"0"}"#;
    let signed = [("x-github-event", "push".to_string()), ("x-hub-signature-256", github_signature(secret, body))];

    // The admin listener no longer takes webhooks, and says where they go.
    let admin_hook = format!("http://{}/webhook", c.gw(1).admin);
    let h: Vec<(&str, &str)> = signed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (s, _, text) = send(&client(), "POST", &admin_hook, &h, bytes::Bytes::from_static(body)).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{text}");
    assert!(text.contains("--webhook-addr"), "{text}");

    // Plaintext to the webhook listener gets no HTTP answer.
    let plain =
        raw(hook_addr.parse().unwrap(), b"GET /webhook HTTP/1.1\r\nhost: x\r\n\r\n", Duration::from_secs(2)).await;
    assert!(!plain.starts_with("HTTP/1.1"), "{plain}");

    // Over TLS: anything but POST /webhook is 404; a signed push starts the sync.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let (s, _) = https_request(&hook_addr, &roots, "GET", "/status", &[], b"").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, text) = https_request(&hook_addr, &roots, "POST", "/webhook", &signed, body).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{text}");
    c.wait_serving(&[1], "/r1").await;
}

/// One HTTP/1.1 request over TLS to `addr` (server name hooks.example.com).
async fn https_request(
    addr: &str,
    roots: &rustls::RootCertStore,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (StatusCode, String) {
    use http_body_util::BodyExt;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("hooks.example.com").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(name, tcp).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let mut b = http::Request::builder().method(method).uri(path).header("host", "hooks.example.com");
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    let resp = send
        .send_request(b.body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let text = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    (status, text)
}

/// `git daemon` serving one bare repository over git:// on loopback.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(base: &Path, port: u16) -> Daemon {
        // The daemon binary itself: `git daemon` would run it as a child that outlives a kill.
        let exec_path = Command::new("git").arg("--exec-path").output().expect("git runs").stdout;
        let daemon = Path::new(String::from_utf8_lossy(&exec_path).trim()).join("git-daemon");
        let mut child = Command::new(daemon)
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Daemon { child };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("git daemon did not listen on {port}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_git_daemon_outage_keeps_nodes_serving_and_sync_recovers() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let repo = Repo::init(&up, None);
    let base = tempfile::tempdir().unwrap();
    let bare = base.path().join("config.git");
    repo.git(&["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()]);
    repo.git(&["remote", "add", "origin", bare.to_str().unwrap()]);
    repo.git(&["push", "-q", "origin", "main"]);
    let port = free_port();
    let daemon = Daemon::start(base.path(), port);
    let url = format!("git://127.0.0.1:{port}/config.git");
    let c = three_nodes(&url, up, &[]).await;

    repo.write_routes(&c.up, &["r0", "r1"]);
    repo.commit("add r1", None);
    repo.git(&["push", "-q", "origin", "main"]);
    c.wait_serving(&[1, 2, 3], "/r1").await;

    // The server goes away: every node keeps serving; the leader reports the failure.
    drop(daemon);
    repo.write_routes(&c.up, &["r0", "r1", "r2"]);
    let r2 = repo.commit("add r2", None);
    repo.git(&["push", "-q", "origin", "main"]);
    let leader = c.leader().await;
    let sync = eventually(Duration::from_secs(20), "a failed sync on the leader", || async {
        c.status(leader).await.sync.filter(|s| s.outcome == "failed")
    })
    .await;
    assert!(sync.error.contains("127.0.0.1"), "{sync:?}");
    for id in [1, 2, 3] {
        assert_eq!(get(&c.gw(id).url("/r1"), &[]).await.0, StatusCode::OK);
        assert_eq!(get(&c.gw(id).url("/r2"), &[]).await.0, StatusCode::NOT_FOUND);
    }
    let metrics = get(&format!("http://{}/metrics", c.gw(leader).admin), &[]).await.2;
    assert!(metrics.contains("raftgate_git_sync_ok 0"), "{metrics}");

    // Back: the waiting commit and the next merge apply without help.
    let _daemon = Daemon::start(base.path(), port);
    serves_commit(&c, &[1, 2, 3], &r2).await;
    repo.write_routes(&c.up, &["r0", "r1", "r2", "r3"]);
    repo.commit("add r3", None);
    repo.git(&["push", "-q", "origin", "main"]);
    c.wait_serving(&[1, 2, 3], "/r3").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_killed_between_fetch_and_commit_is_replaced_and_the_commit_applies_once() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let repo = Repo::init(&up, None);
    // Every leader holds each proposal for two seconds after checking it.
    let mut c = three_nodes(&repo.url(), up, &["--test-sync-pause", "2s"]).await;
    let old = c.leader().await;

    repo.write_routes(&c.up, &["r0", "r1"]);
    let sha = repo.commit("add r1", None);
    eventually(Duration::from_secs(20), "the leader to hold the proposal", || async {
        let logs = c.gw(old).logs();
        logs.iter().any(|l| l.contains("test pause before proposing") && l.contains(&sha)).then_some(())
    })
    .await;
    c.kill(old);

    let new = c.leader().await;
    assert_ne!(new, old);
    let alive = c.running();
    serves_commit(&c, &alive, &sha).await;
    c.launch(old, &[]);
    serves_commit(&c, &[old], &sha).await;
    for id in [1, 2, 3] {
        let h = c.admin(id).await.get_config_history(ConfigHistoryRequest {}).await.unwrap().into_inner();
        let times = h.entries.iter().filter(|e| e.commit == sha).count();
        assert_eq!(times, 1, "node {id} applied {sha} {times} times: {:?}", h.entries);
    }
    c.check_history_order().await;
}
