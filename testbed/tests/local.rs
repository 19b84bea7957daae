//! The testbed on loopback, as `make run` and CI without root use it: up, status, merge,
//! scale, kill, start, load, down, with real `raftgated` processes and a real Git
//! repository, over mTLS (and once without). `down` must leave no process behind.

mod common;

use common::{ok, testbed};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `raftgate` as `up` tells a user to run it: with the context file it wrote (TLS and the
/// operator certificate), at `admin`.
fn raftgate(state: &Path, admin: &str, args: &[&str]) -> Output {
    Command::new(testkit::binary("raftgate"))
        .env("RAFTGATE_CONFIG", state.join("raftgate-config.yaml"))
        .env_remove("RAFTGATE_CONTEXT")
        .args(["--admin", admin])
        .args(args)
        .output()
        .unwrap()
}

/// A topology of its own in `work`: one region `r` of `nodes` nodes, and an upstream on a
/// free port.
fn topology(work: &Path, nodes: usize) -> PathBuf {
    let config = work.join("config");
    std::fs::create_dir(&config).unwrap();
    let port = free_port();
    std::fs::write(
        config.join("up.yaml"),
        format!("kind: Upstream\nname: demo\nendpoints: [{{ address: \"127.0.0.1:{port}\" }}]\n"),
    )
    .unwrap();
    let topo = work.join("t.yaml");
    std::fs::write(&topo, format!("name: t\nconfig: config\nregions:\n  - {{ name: r, nodes: {nodes} }}\n")).unwrap();
    topo
}

/// Node ports shifted clear of `make run` and kept below the kernel's ephemeral range
/// (32768 and up), where a port may already be the local end of some connection (or the
/// upstream's free port); `slot` keeps this file's tests apart (five ports each).
fn port_offset(slot: u16) -> u16 {
    10_000 + (std::process::id() % 1_000) as u16 * 10 + slot * 5
}

use testkit::free_port;

/// Processes whose command line names `dir`.
fn processes_naming(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')) {
            continue;
        }
        let cmd = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
            .replace('\0', " ");
        if cmd.contains(&needle) {
            found.push(format!("{pid}: {cmd}"));
        }
    }
    found
}

/// Brings the testbed down if the test fails before it does, so a failure leaves no
/// `raftgated` running.
struct TearDown<'a>(&'a Path);

impl Drop for TearDown<'_> {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = testbed(self.0, &["down"]);
        }
    }
}

#[test]
fn a_local_testbed_goes_up_changes_scales_and_comes_down_clean() {
    let work = tempfile::tempdir().unwrap();
    let state: PathBuf = work.path().join("state");
    let _tear_down = TearDown(&state);
    let topo = topology(work.path(), 3);
    let offset = port_offset(0);
    let text = ok(testbed(&state, &["up", topo.to_str().unwrap(), "--loopback", "--port-offset", &offset.to_string()]));
    assert!(text.contains("testbed `t` is up: 3 nodes"), "{text}");
    assert!(text.contains("mTLS"), "{text}");
    let context = state.canonicalize().unwrap().join("raftgate-config.yaml");
    assert!(text.contains(&format!("export RAFTGATE_CONFIG={}", context.display())), "{text}");
    let admin = format!("127.0.0.1:{}", 9900 + offset);
    let certs = state.join("certs");
    for file in ["ca.pem", "testbed.pem", "testbed-key.pem", "node-1.pem", "node-3-key.pem"] {
        assert!(certs.join(file).exists(), "{file} missing from {}", certs.display());
    }

    // The context file alone takes the CLI to node 1, over TLS with the operator
    // certificate; without a certificate the admin API is closed.
    let out = Command::new(testkit::binary("raftgate"))
        .env("RAFTGATE_CONFIG", state.join("raftgate-config.yaml"))
        .env_remove("RAFTGATE_CONTEXT")
        .env_remove("RAFTGATE_ADMIN")
        .args(["-o", "json", "members", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(testkit::binary("raftgate"))
        .env("RAFTGATE_CONFIG", work.path().join("none.yaml"))
        .args(["--admin", &admin, "members", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a plaintext call to a TLS admin API succeeded");

    let text = ok(testbed(&state, &["status"]));
    assert!(text.contains("leader node 1"), "{text}");
    assert_eq!(text.matches(" follower ").count(), 2, "{text}");

    // A merged pull request, announced by webhook, reaches every node.
    let sha = ok(testbed(&state, &["merge", "--webhook"])).trim().to_string();
    ok(raftgate(&state, &admin, &["rollout", "wait", &sha, "--timeout", "20s"]));

    // Scale up: the new node joins and becomes a voter; kill one; load sees no failures
    // on the running nodes; restart it; scale back down.
    let text = ok(testbed(&state, &["scale", "r", "4"]));
    assert!(text.contains("r-4 joined"), "{text}");
    let m: serde_json::Value =
        serde_json::from_str(&ok(raftgate(&state, &admin, &["-o", "json", "members", "list"]))).unwrap();
    assert_eq!(m["members"].as_array().unwrap().iter().filter(|m| m["role"] == "voter").count(), 4);
    ok(testbed(&state, &["kill", "r-2"]));
    let text = ok(testbed(&state, &["load", "--duration", "2s", "--rate", "10"]));
    assert!(text.contains(" 0 failed"), "{text}");
    assert!(!text.contains("r-2 "), "a killed node gets no load: {text}");
    let text = ok(testbed(&state, &["start", "r-2"]));
    assert!(text.contains("r-2 serves its config"), "{text}");
    ok(testbed(&state, &["scale", "r", "3"]));
    let m: serde_json::Value =
        serde_json::from_str(&ok(raftgate(&state, &admin, &["-o", "json", "members", "list"]))).unwrap();
    assert_eq!(m["members"].as_array().unwrap().len(), 3);

    // An invalid merge is refused; the cluster keeps serving.
    let bad = ok(testbed(&state, &["merge", "--invalid", "--webhook"])).trim().to_string();
    let out = raftgate(&state, &admin, &["rollout", "wait", &bad, "--timeout", "20s"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));

    let text = ok(testbed(&state, &["down"]));
    assert!(text.contains("processes stopped"), "{text}");
    assert!(!state.exists());
    assert_eq!(processes_naming(&state), Vec::<String>::new());
    let text = ok(testbed(&state, &["down"]));
    assert!(text.contains("nothing was up"), "{text}");
}

#[test]
fn a_plaintext_testbed_runs_without_certificates() {
    let work = tempfile::tempdir().unwrap();
    let state: PathBuf = work.path().join("state");
    let _tear_down = TearDown(&state);
    let topo = topology(work.path(), 1);
    let offset = port_offset(1);
    let text = ok(testbed(
        &state,
        &["up", topo.to_str().unwrap(), "--loopback", "--plaintext", "--port-offset", &offset.to_string()],
    ));
    assert!(text.contains("testbed `t` is up: 1 nodes"), "{text}");
    assert!(text.contains("plaintext"), "{text}");
    assert!(!state.join("certs").exists());
    let admin = format!("127.0.0.1:{}", 9900 + offset);
    let text = ok(raftgate(&state, &admin, &["status"]));
    assert!(text.contains("leader node 1"), "{text}");
    let sha = ok(testbed(&state, &["merge", "--webhook"])).trim().to_string();
    ok(raftgate(&state, &admin, &["rollout", "wait", &sha, "--timeout", "20s"]));
    ok(testbed(&state, &["down"]));
    assert_eq!(processes_naming(&state), Vec::<String>::new());
}

/// The short version of `make soak`: config changes every 2 s under load for 40 s on a
/// three-node loopback testbed, no failed request, descriptors flat. (Memory is judged by
/// the ten-minute run; here the allocator is still warming up.)
#[test]
fn a_short_soak_passes() {
    let work = tempfile::tempdir().unwrap();
    let state: PathBuf = work.path().join("state");
    let _tear_down = TearDown(&state);
    let topo = topology(work.path(), 3);
    let reports = work.path().join("reports");
    let offset = port_offset(2).to_string();
    let text = ok(testbed(
        &state,
        &[
            "soak",
            "--topology",
            topo.to_str().unwrap(),
            "--loopback",
            "--port-offset",
            &offset,
            "--duration",
            "40s",
            "--change-every",
            "2s",
            "--warmup",
            "15s",
            "--rate",
            "20",
            "--max-rss-growth",
            "50",
            "--report-dir",
            reports.to_str().unwrap(),
        ],
    ));
    assert!(text.contains("**Verdict: PASS**"), "{text}");
    let report =
        std::fs::read_dir(&reports).unwrap().flatten().find(|e| e.path().extension().is_some_and(|x| x == "json"));
    let js: serde_json::Value = serde_json::from_slice(&std::fs::read(report.unwrap().path()).unwrap()).unwrap();
    assert!(js["merges"].as_u64().unwrap() >= 15, "{js}");
    assert_eq!(js["nodes"].as_object().unwrap().len(), 3, "{js}");
    assert!(!state.exists(), "the soak took down the testbed it brought up");
    assert_eq!(processes_naming(&state), Vec::<String>::new());
}
