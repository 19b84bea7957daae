//! The `raftgate` binary against a real 3-node cluster of `raftgated` processes on
//! loopback, syncing from a real Git repository: every cluster command, its JSON output,
//! and the errors a user sees.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{stderr, stdout};

/// `raftgated` is built beside `raftgate` by `cargo test --workspace` (`make test`).
fn raftgated() -> PathBuf {
    testkit::binary("raftgated")
}

use testkit::free_port;

struct Node {
    child: Child,
    admin: String,
    raft: String,
    _data: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts node `id` syncing from `repo`, with `extra` flags; returns once it listens.
fn start(id: u64, repo: &Path, extra: &[&str]) -> Node {
    start_env(id, repo, extra, &[])
}

/// `start`, with environment variables for the node's process.
fn start_env(id: u64, repo: &Path, extra: &[&str], env: &[(&str, &str)]) -> Node {
    let data = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let raft = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(raftgated())
        .args(["--node-id", &id.to_string(), "--data-dir"])
        .arg(data.path())
        .args(["--http-addr", "127.0.0.1:0", "--admin-addr", &admin, "--raft-addr", &raft])
        .args(["--region", &format!("eu-{id}"), "--raft-profile", "lan", "--git-poll-interval", "300ms"])
        // An open loopback cluster, on purpose, unless the test brings certificates.
        .args(if extra.contains(&"--tls-ca") { &[][..] } else { &["--insecure-plaintext"][..] })
        .arg("--git-url")
        .arg(repo)
        .args(extra)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("raftgated starts");
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    // http, admin and raft; https too when asked for.
    let listeners = if extra.contains(&"--https-addr") { 4 } else { 3 };
    std::thread::spawn(move || {
        let mut listening = 0;
        for line in out.lines().map_while(Result::ok) {
            if line.contains("\"listening\"") {
                listening += 1;
                if listening == listeners {
                    let _ = tx.send(());
                }
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20)).expect("raftgated listens");
    Node { child, admin, raft, _data: data }
}

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn config(routes: &[(&str, &str)]) -> String {
    let mut text = "kind: Upstream\nname: api\nendpoints: [{ address: \"127.0.0.1:9\" }, { address: \"127.0.0.1:10\", weight: 3 }]\n".to_string();
    for (name, path) in routes {
        text += &format!(
            "---\nkind: Route\nname: {name}\nhostnames: [api.example.com]\nrules:\n  - matches: [{{ path: {{ type: PathPrefix, value: {path} }} }}]\n    backendRefs: [{{ upstream: api }}]\n"
        );
    }
    text
}

fn commit(repo: &Path, text: &str, message: &str) -> String {
    std::fs::write(repo.join("gateway.yaml"), text).unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["-c", "commit.gpgsign=false", "commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

/// Runs `raftgate --admin <admin> -o json <args>`.
fn rg(admin: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_raftgate"))
        .args(["--admin", admin, "-o", "json"])
        .args(args)
        .env_remove("RAFTGATE_TOKEN")
        .env_remove("RAFTGATE_ADMIN")
        .env_remove("RAFTGATE_CONTEXT")
        .env_remove("RAFTGATE_CA")
        .env_remove("RAFTGATE_CERT")
        .env_remove("RAFTGATE_KEY")
        // Never the user's own contexts.
        .env("RAFTGATE_CONFIG", "/nonexistent/raftgate/config.yaml")
        .output()
        .unwrap()
}

fn ok_json(o: &Output) -> Value {
    assert_eq!(o.status.code(), Some(0), "stdout: {}\nstderr: {}", stdout(o), stderr(o));
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    testkit::eventually(what, Duration::from_secs(30), f)
}

#[test]
fn every_cluster_command_against_three_nodes() {
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    let first = commit(repo.path(), &config(&[("users", "/users")]), "users route");

    let n1 = start(1, repo.path(), &["--bootstrap"]);
    let n2 = start(2, repo.path(), &["--join", &n1.admin]);
    let n3 = start(3, repo.path(), &["--join", &n1.admin]);

    eventually("three voters", || {
        let v = ok_json(&rg(&n1.admin, &["members", "list"]));
        (v["members"].as_array().unwrap().iter().filter(|m| m["role"] == "voter").count() == 3).then_some(())
    });
    // rollout wait: every node serves the first commit.
    let v = ok_json(&rg(&n2.admin, &["rollout", "wait", &first[..8], "--timeout", "30s"]));
    assert_eq!(v["done"], true);
    assert_eq!(v["nodes"].as_array().unwrap().len(), 3);
    assert!(v["nodes"].as_array().unwrap().iter().all(|n| n["serving"] == true), "{v}");

    // status: a leader, three healthy rows with the same commit.
    let v = eventually("a healthy status", || {
        let o = rg(&n3.admin, &["status"]);
        (o.status.code() == Some(0)).then(|| serde_json::from_str::<Value>(&stdout(&o)).unwrap())
    });
    assert_eq!(v["leader"], 1);
    assert_eq!(v["healthy"], true);
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        assert_eq!(n["commit"], first.as_str());
        assert_eq!(n["reachable"], true);
        let quiet =
            serde_json::json!({ "openCircuits": [], "ejectedEndpoints": 0, "unhealthyEndpoints": 0, "rateLimited": 0 });
        assert_eq!(n["resilience"], quiet, "every node reports its resilience state");
        assert!(n["appliedIndex"].as_u64().unwrap() > 0);
        assert_eq!(n["version"], env!("CARGO_PKG_VERSION"));
    }
    assert_eq!(nodes[0]["role"], "leader");
    assert_eq!(nodes[1]["role"], "follower");
    assert_eq!(nodes[2]["region"], "eu-3");

    // members list (asked of a follower).
    let v = ok_json(&rg(&n2.admin, &["members", "list"]));
    assert_eq!(v["leader"], 1);
    let ids: Vec<u64> = v["members"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert!(v["members"].as_array().unwrap().iter().all(|m| m["role"] == "voter"));

    // members add (a running node that did not --join), as a learner; promote; remove. Asked
    // of a follower: forwarded to the leader transparently.
    let n4 = start(4, repo.path(), &[]);
    let v = ok_json(&rg(
        &n3.admin,
        &["members", "add", "4", &n4.raft, "--admin-addr", &n4.admin, "--region", "us-1", "--learner"],
    ));
    let four = v["members"].as_array().unwrap().iter().find(|m| m["id"] == 4).unwrap().clone();
    assert_eq!((four["role"].as_str(), four["region"].as_str()), (Some("learner"), Some("us-1")));
    let v = ok_json(&rg(&n2.admin, &["members", "promote", "4"]));
    assert_eq!(v["members"].as_array().unwrap().iter().find(|m| m["id"] == 4).unwrap()["role"], "voter");
    let v = ok_json(&rg(&n1.admin, &["members", "remove", "4"]));
    assert!(v["members"].as_array().unwrap().iter().all(|m| m["id"] != 4), "{v}");
    drop(n4);

    // A new commit: config sync (waits for the sync it starts), rollout, history, show,
    // routes, upstreams on a chosen node.
    let second = commit(repo.path(), &config(&[("users", "/users"), ("orders", "/orders")]), "orders route");
    let v = ok_json(&rg(&n2.admin, &["config", "sync"]));
    assert_eq!(v["leader"], 1);
    assert_eq!(v["head"], second.as_str());
    assert!(["proposed", "up-to-date"].contains(&v["outcome"].as_str().unwrap()), "{v}");
    ok_json(&rg(&n1.admin, &["rollout", "wait", &second, "--timeout", "30s"]));

    let v = ok_json(&rg(&n1.admin, &["config", "history", "--node", "3"]));
    let h = v.as_array().unwrap();
    assert_eq!(h[0]["commit"], second.as_str());
    assert_eq!(h[0]["author"], "Ada <ada@example.com>");
    assert_eq!(h[0]["message"], "orders route");
    assert_eq!(h[1]["commit"], first.as_str());
    assert!(h[0]["logIndex"].as_u64() > h[1]["logIndex"].as_u64());

    let v = ok_json(&rg(&n1.admin, &["config", "show", "--node", "2"]));
    assert_eq!(v["commit"], second.as_str());
    assert_eq!(v["config"]["routes"].as_array().unwrap().len(), 2);
    assert_eq!(v["hash"].as_str().unwrap().len(), 64);

    let v = ok_json(&rg(&n1.admin, &["routes", "--node", "3"]));
    let routes: Vec<&str> = v.as_array().unwrap().iter().map(|r| r["route"].as_str().unwrap()).collect();
    assert_eq!(routes, ["orders", "users"]);
    assert_eq!(v[0]["matches"][0], "PathPrefix /orders");
    assert_eq!(v[0]["hostnames"][0], "api.example.com");
    assert_eq!(v[0]["backends"][0], "api 1");

    let v = ok_json(&rg(&n2.admin, &["upstreams"]));
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let ten = rows.iter().find(|r| r["address"] == "127.0.0.1:10").unwrap();
    assert_eq!((ten["upstream"].as_str(), ten["weight"].as_u64()), (Some("api"), Some(3)));
    assert_eq!(rows[0]["inFlight"], 0);
    assert_eq!(rows[0]["loadBalancer"], "roundRobin");
    // No policies on `api`: nothing checked, no breaker, nothing ejected.
    assert_eq!((rows[0]["health"].as_str(), rows[0]["circuit"].as_str()), (Some("unchecked"), Some("none")));
    assert_eq!(rows[0]["ejectedForMs"], 0);

    // config diff between the two commits, read from the repository.
    let out = Command::new(env!("CARGO_BIN_EXE_raftgate"))
        .args(["-o", "json", "config", "diff", &first, &second, "--git"])
        .arg(repo.path())
        .output()
        .unwrap();
    let v = ok_json(&out);
    assert_eq!(v["routes"]["added"], serde_json::json!(["orders"]));
    assert_eq!(v["routes"]["removed"], serde_json::json!([]));
    assert_eq!(v["upstreams"]["changed"], serde_json::json!([]));

    // A refused commit: rollout wait says why and exits 1; status shows it.
    let bad = commit(
        repo.path(),
        &(config(&[]) + "---\nkind: Route\nname: x\nrules: [{ backendRefs: [{ upstream: nope }] }]\n"),
        "bad",
    );
    let out = rg(&n1.admin, &["rollout", "wait", &bad, "--timeout", "20s"]);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("refused at step validate") && stderr(&out).contains("gateway.yaml:"),
        "{}",
        stderr(&out)
    );
    let v: Value = serde_json::from_str(&stdout(&rg(&n2.admin, &["status"]))).unwrap();
    assert_eq!(v["refused"]["commit"], bad.as_str());
    assert_eq!(v["refused"]["step"], "validate");

    // A node down: status exits 1 and names it.
    drop(n3);
    let out = eventually("status to notice node 3 down", || {
        let o = rg(&n1.admin, &["status"]);
        (o.status.code() == Some(1)).then_some(o)
    });
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["healthy"], false);
    assert!(v["problems"].as_array().unwrap().iter().any(|p| p == "node 3 unreachable"), "{v}");
    assert!(stderr(&out).contains("cluster unhealthy: node 3 unreachable"), "{}", stderr(&out));
    drop(n2);
}

#[test]
fn errors_are_one_clear_line_with_an_exit_code() {
    // Nothing listens: exit 3, with the address and what to do.
    let port = free_port();
    let out = rg(&format!("127.0.0.1:{port}"), &["status"]);
    assert_eq!(out.status.code(), Some(3));
    let e = stderr(&out);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains(&format!("cannot reach the admin API at 127.0.0.1:{port}")) && e.contains("--admin"), "{e}");

    // Something accepts but never answers: exit 5 after --timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_raftgate"))
        .args(["--admin", &addr, "--timeout", "1s", "members", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("no answer from"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(8));
    drop(silent);

    // A cluster with a token: no token or a wrong one exits 4; the right one works.
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    commit(repo.path(), &config(&[("users", "/users")]), "users route");
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("token");
    std::fs::write(&token, "0123456789-admin-token\n").unwrap();
    let wrong = secrets.path().join("wrong");
    std::fs::write(&wrong, "not-the-admin-token-at-all\n").unwrap();
    let n1 = start(1, repo.path(), &["--bootstrap", "--admin-token-file", token.to_str().unwrap()]);
    let out = rg(&n1.admin, &["members", "list"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("--token-file"), "{}", stderr(&out));
    let out = rg(&n1.admin, &["--token-file", wrong.to_str().unwrap(), "members", "list"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("wrong"), "{}", stderr(&out));
    let v = ok_json(&rg(&n1.admin, &["--token-file", token.to_str().unwrap(), "members", "list"]));
    assert_eq!(v["members"][0]["id"], 1);
    let out = Command::new(env!("CARGO_BIN_EXE_raftgate"))
        .args(["--admin", &n1.admin, "-o", "json", "members", "list"])
        .env("RAFTGATE_TOKEN", "0123456789-admin-token")
        .output()
        .unwrap();
    assert_eq!(ok_json(&out)["leader"], 1);

    // Refused by the cluster: exit 6 with the reason.
    let out = rg(&n1.admin, &["--token-file", token.to_str().unwrap(), "members", "promote", "9"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(stderr(&out).contains("node 9 is not a member"), "{}", stderr(&out));
}

#[test]
fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_raftgate")).args(["completions", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let text = stdout(&out);
        assert!(text.contains("rollout") && text.contains("members"), "{shell}: {text}");
    }
}

/// A TLS cluster: `raftgate status` with a client certificate, with the token, refused
/// without either; a kubectl-style context file; an untrusted CA.
#[test]
fn status_over_tls_with_a_certificate_or_a_token_and_refused_without() {
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    commit(repo.path(), &config(&[("users", "/users")]), "users route");
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let ca = trust::gen::Ca::new("clitest", 30).unwrap();
    ca.save(dir).unwrap();
    ca.node(1, &[], &["127.0.0.1".parse().unwrap()], 30).unwrap().save(dir, "node-1").unwrap();
    ca.client("alice", 30).unwrap().save(dir, "alice").unwrap();
    let other = tempfile::tempdir().unwrap();
    trust::gen::Ca::new("clitest", 30).unwrap().save(other.path()).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "cli-test-token-0123456789\n").unwrap();
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (ca_pem, node_pem, node_key, alice, alice_key) =
        (p("ca.pem"), p("node-1.pem"), p("node-1-key.pem"), p("alice.pem"), p("alice-key.pem"));
    let n1 = start(
        1,
        repo.path(),
        &[
            "--bootstrap",
            "--cluster-name",
            "clitest",
            "--tls-ca",
            &ca_pem,
            "--tls-cert",
            &node_pem,
            "--tls-key",
            &node_key,
            "--admin-token-file",
            token.to_str().unwrap(),
        ],
    );

    // A client certificate from the cluster CA.
    let with_cert = ["--ca", &ca_pem, "--cert", &alice, "--key", &alice_key, "status"];
    eventually("status over TLS with a client certificate", || {
        (rg(&n1.admin, &with_cert).status.code() == Some(0)).then_some(())
    });
    let v = ok_json(&rg(&n1.admin, &with_cert));
    assert_eq!(v["nodes"][0]["transport"], "mtls", "{v:#}");

    // The token, over TLS.
    ok_json(&rg(&n1.admin, &["--ca", &ca_pem, "--token-file", token.to_str().unwrap(), "status"]));

    // Neither: refused, exit 4, one line that says what to pass.
    let o = rg(&n1.admin, &["--ca", &ca_pem, "status"]);
    assert_eq!(o.status.code(), Some(4), "stderr: {}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("client certificate"), "{}", stderr(&o));

    // Plaintext to a TLS node: nothing answers the way gRPC expects; exit 3 with the hint.
    let o = rg(&n1.admin, &["--timeout", "3s", "status"]);
    assert!(matches!(o.status.code(), Some(3) | Some(5)), "{:?} {}", o.status, stderr(&o));
    assert!(stderr(&o).contains("--ca"), "{}", stderr(&o));

    // A CA that did not sign the node: the handshake fails, and the message says why.
    let wrong_ca = other.path().join("ca.pem");
    let o = rg(&n1.admin, &["--ca", wrong_ca.to_str().unwrap(), "--cert", &alice, "--key", &alice_key, "status"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).to_lowercase().contains("certificate"), "{}", stderr(&o));

    // A kubectl-style context file.
    let ctx = dir.join("config.yaml");
    std::fs::write(
        &ctx,
        format!(
            "current-context: it\ncontexts:\n  - name: it\n    admin: {}\n    ca: ca.pem\n    cert: alice.pem\n    key: alice-key.pem\n",
            n1.admin
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_raftgate"))
        .args(["-o", "json", "status"])
        .env_remove("RAFTGATE_ADMIN")
        .env_remove("RAFTGATE_TOKEN")
        .env("RAFTGATE_CONFIG", &ctx)
        .output()
        .unwrap();
    ok_json(&o);
}

/// A certificate and key made by `openssl req`, valid for `days`: (PEM, key PEM).
fn openssl_cert(dir: &Path, name: &str, days: u32) -> (String, String) {
    let (crt, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .args(["-subj", "/CN=edge.test", "-addext", "subjectAltName=DNS:edge.test", "-days", &days.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl req: {}", stderr(&out));
    (std::fs::read_to_string(crt).unwrap(), std::fs::read_to_string(key).unwrap())
}

/// `raftgate certificates` on a cluster whose nodes serve different material for one
/// certificate (from each node's environment, as a renewal that reached some nodes only
/// would), and a certificate close to expiry; `raftgate status` says the same.
#[test]
fn certificates_show_expiry_and_nodes_that_differ() {
    let repo = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (a_cert, a_key) = openssl_cert(files.path(), "a", 90);
    let (b_cert, b_key) = openssl_cert(files.path(), "b", 60);
    openssl_cert(files.path(), "soon", 10);
    // Valid from this second for whole days: a second later, 89 whole days are left of 90.
    std::thread::sleep(Duration::from_millis(1100));
    git(repo.path(), &["init", "-q", "-b", "main"]);
    let certs = format!(
        "---\nkind: Certificate\nname: edge\nhostnames: [edge.test]\ncertificate: {{ env: EDGE_CERT }}\nprivateKey: {{ env: EDGE_KEY }}\n\
         ---\nkind: Certificate\nname: soon\ndefault: true\ncertificate: {{ file: {0}/soon.crt }}\nprivateKey: {{ file: {0}/soon.key }}\n",
        files.path().display()
    );
    let first = commit(repo.path(), &(config(&[("users", "/users")]) + &certs), "certificates");
    let ea = [("EDGE_CERT", a_cert.as_str()), ("EDGE_KEY", a_key.as_str())];
    let eb = [("EDGE_CERT", b_cert.as_str()), ("EDGE_KEY", b_key.as_str())];
    let https = ["--https-addr", "127.0.0.1:0"];
    let n1 = start_env(1, repo.path(), &[&https[..], &["--bootstrap"]].concat(), &ea);
    let join = [&https[..], &["--join", n1.admin.as_str()]].concat();
    let _n2 = start_env(2, repo.path(), &join, &ea);
    let _n3 = start_env(3, repo.path(), &join, &eb);
    ok_json(&rg(&n1.admin, &["rollout", "wait", &first, "--timeout", "30s"]));

    let out = eventually("all three nodes report their certificates", || {
        let o = rg(&n1.admin, &["certificates"]);
        let v: Value = serde_json::from_str(&stdout(&o)).ok()?;
        let nodes: usize =
            v["certificates"].as_array()?.iter().map(|c| c["nodes"].as_array().map_or(0, Vec::len)).sum();
        (nodes == 6).then_some((o, v))
    });
    let (o, v) = out;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let rows = v["certificates"].as_array().unwrap();
    let edge: Vec<&Value> = rows.iter().filter(|r| r["name"] == "edge").collect();
    assert_eq!(edge.len(), 2, "{v}");
    let by_nodes = |n: Value| edge.iter().find(|r| r["nodes"] == n).copied().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(by_nodes(serde_json::json!([1, 2]))["daysLeft"], 89);
    assert_eq!(by_nodes(serde_json::json!([3]))["daysLeft"], 59);
    let soon = rows.iter().find(|r| r["name"] == "soon").unwrap();
    assert_eq!((soon["default"].as_bool(), soon["daysLeft"].as_i64()), (Some(true), Some(9)), "{soon}");
    assert_eq!(soon["nodes"], serde_json::json!([1, 2, 3]));
    let problems = v["problems"].to_string();
    assert!(problems.contains("certificate `edge` differs between nodes"), "{problems}");
    assert!(v["warnings"].to_string().contains("certificate `soon` expires in 9 day(s) on node(s) 1,2,3"), "{v}");
    assert!(stderr(&o).contains("certificates need attention"), "{}", stderr(&o));

    // The table, as a person reads it.
    let table = Command::new(env!("CARGO_BIN_EXE_raftgate"))
        .args(["--admin", &n1.admin, "certificates"])
        .env("RAFTGATE_CONFIG", "/nonexistent/raftgate/config.yaml")
        .output()
        .unwrap();
    let text = stdout(&table);
    assert!(text.contains("NAME") && text.contains("edge.test") && text.contains("(default)"), "{text}");
    assert!(text.contains("warning: certificate `soon` expires in 9 day(s)"), "{text}");

    // status: unhealthy for the difference, a warning for the expiry.
    let o = rg(&n1.admin, &["status"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(v["problems"].to_string().contains("certificate `edge` differs between nodes"), "{v}");
    assert!(v["warnings"].to_string().contains("`soon` expires in 9 day(s)"), "{v}");
    assert!(
        v["certificates"].as_str().unwrap().contains("the first to expire is `soon`, which expires in 9 day(s)"),
        "{v}"
    );
}
