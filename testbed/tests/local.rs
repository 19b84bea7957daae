//! The testbed on loopback, as `make run` and CI without root use it: up, status, merge,
//! scale, kill, start, load, down, with real `raftgated` processes and a real Git
//! repository. `down` must leave no process behind.

mod common;

use common::{ok, testbed};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn raftgate(admin: &str, args: &[&str]) -> Output {
    Command::new(testkit::binary("raftgate")).args(["--admin", admin]).args(args).output().unwrap()
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
    // A topology of its own: an upstream on a free port, node ports shifted clear of
    // `make run` and kept below the kernel's ephemeral range (32768 and up), where a port
    // may already be the local end of some connection (or the upstream's free port).
    let config = work.path().join("config");
    std::fs::create_dir(&config).unwrap();
    let port = free_port();
    std::fs::write(
        config.join("up.yaml"),
        format!("kind: Upstream\nname: demo\nendpoints: [{{ address: \"127.0.0.1:{port}\" }}]\n"),
    )
    .unwrap();
    let topo = work.path().join("t.yaml");
    std::fs::write(&topo, "name: t\nconfig: config\nregions:\n  - { name: r, nodes: 3 }\n").unwrap();
    let offset = 10_000 + (std::process::id() % 1_000) as u16 * 10;
    let text = ok(testbed(&state, &["up", topo.to_str().unwrap(), "--loopback", "--port-offset", &offset.to_string()]));
    assert!(text.contains("testbed `t` is up: 3 nodes"), "{text}");
    let admin = format!("127.0.0.1:{}", 9900 + offset);

    let text = ok(testbed(&state, &["status"]));
    assert!(text.contains("leader node 1"), "{text}");
    assert_eq!(text.matches(" follower ").count(), 2, "{text}");

    // A merged pull request, announced by webhook, reaches every node.
    let sha = ok(testbed(&state, &["merge", "--webhook"])).trim().to_string();
    ok(raftgate(&admin, &["rollout", "wait", &sha, "--timeout", "20s"]));

    // Scale up: the new node joins and becomes a voter; kill one; load sees no failures
    // on the running nodes; restart it; scale back down.
    let text = ok(testbed(&state, &["scale", "r", "4"]));
    assert!(text.contains("r-4 joined"), "{text}");
    let m: serde_json::Value = serde_json::from_str(&ok(raftgate(&admin, &["-o", "json", "members", "list"]))).unwrap();
    assert_eq!(m["members"].as_array().unwrap().iter().filter(|m| m["role"] == "voter").count(), 4);
    ok(testbed(&state, &["kill", "r-2"]));
    let text = ok(testbed(&state, &["load", "--duration", "2s", "--rate", "10"]));
    assert!(text.contains(" 0 failed"), "{text}");
    assert!(!text.contains("r-2 "), "a killed node gets no load: {text}");
    let text = ok(testbed(&state, &["start", "r-2"]));
    assert!(text.contains("r-2 serves its config"), "{text}");
    ok(testbed(&state, &["scale", "r", "3"]));
    let m: serde_json::Value = serde_json::from_str(&ok(raftgate(&admin, &["-o", "json", "members", "list"]))).unwrap();
    assert_eq!(m["members"].as_array().unwrap().len(), 3);

    // An invalid merge is refused; the cluster keeps serving.
    let bad = ok(testbed(&state, &["merge", "--invalid", "--webhook"])).trim().to_string();
    let out = raftgate(&admin, &["rollout", "wait", &bad, "--timeout", "20s"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));

    let text = ok(testbed(&state, &["down"]));
    assert!(text.contains("processes stopped"), "{text}");
    assert!(!state.exists());
    assert_eq!(processes_naming(&state), Vec::<String>::new());
    let text = ok(testbed(&state, &["down"]));
    assert!(text.contains("nothing was up"), "{text}");
}
