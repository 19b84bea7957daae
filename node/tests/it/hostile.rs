//! Hostile commits: configs written to hurt the nodes that apply them. Each one is refused
//! by validation or contained on the node, with every node of a three-node cluster still
//! serving, its memory bounded, and no crash loop on restart.

use std::time::Duration;

use http::StatusCode;

use crate::harness::*;
use crate::nodes::*;

/// Peak memory no node may pass while applying these configs (a node serving a small
/// config peaks far below; one reading `/dev/zero` into memory would not stop).
const PEAK_RSS_KIB: u64 = 256 * 1024;

fn certificate(name: &str, host: &str, cert: &std::path::Path, key: &std::path::Path) -> String {
    format!(
        "---\nkind: Certificate\nname: {name}\nhostnames: [{host}]\ncertificate: {{ file: {} }}\nprivateKey: {{ file: {} }}\n",
        cert.display(),
        key.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn file_references_to_devices_fifos_links_and_huge_files_are_contained() {
    let mut c = TestCluster::bootstrap(&["--https-addr", "127.0.0.1:0"]).await;
    c.join(2, 1, false);
    c.join(3, 1, false);
    c.wait_serving(&[1, 2, 3], "/r0").await;

    // The files a hostile commit points at; they exist on every node (one machine).
    let files = tempfile::tempdir().unwrap();
    let f = |n: &str| files.path().join(n);
    let ck = rcgen::generate_simple_self_signed(vec!["good.example.com".to_string()]).unwrap();
    std::fs::write(f("good.crt"), ck.cert.pem()).unwrap();
    std::fs::write(f("good.key"), ck.signing_key.serialize_pem()).unwrap();
    let made = std::process::Command::new("mkfifo").arg(f("fifo")).status().unwrap();
    assert!(made.success(), "mkfifo");
    // A link is followed (renewal tools publish through links), and what it names is
    // held to the same rules.
    std::os::unix::fs::symlink(f("fifo"), f("link.crt")).unwrap();
    std::fs::write(f("huge.crt"), vec![b'A'; 3 << 20]).unwrap();
    let dev_zero = std::path::Path::new("/dev/zero");

    // 1. Certificates: each bad one is left out and reported; the config, with its good
    // certificate and its new route, is served everywhere. (Before the bounded reads, the
    // FIFO wedged every node's apply and `/dev/zero` grew it until it was killed.)
    let base = routes_config(&c.up, &["r0", "r1"]);
    let certs = certificate("zero", "zero.example.com", dev_zero, &f("good.key"))
        + &certificate("fifo", "fifo.example.com", &f("good.crt"), &f("fifo"))
        + &certificate("link", "link.example.com", &f("link.crt"), &f("good.key"))
        + &certificate("huge", "huge.example.com", &f("huge.crt"), &f("good.key"))
        + &certificate("good", "good.example.com", &f("good.crt"), &f("good.key"));
    c.write_config(&(base.clone() + &certs));
    c.wait_serving(&[1, 2, 3], "/r1").await;
    for id in [1, 2, 3] {
        let s = c.status(id).await;
        let w = s.config_warnings.join("\n");
        assert_eq!(s.config_warnings.len(), 4, "node {id}: {w}");
        for (name, why) in [
            ("zero", "not a regular file"),
            ("fifo", "not a regular file"),
            ("link", "not a regular file"),
            ("huge", "the limit is 1048576"),
        ] {
            assert!(
                s.config_warnings.iter().any(|x| x.contains(&format!("certificate `{name}`")) && x.contains(why)),
                "node {id}: no `{why}` for {name}: {w}"
            );
        }
        assert!(s.last_apply_error.is_empty(), "node {id}: {}", s.last_apply_error);
    }

    // 2. An upstream whose CA bundle is a FIFO: the whole config cannot be built on a
    // node, so every node keeps the previous one and says why.
    let bad_ca = base.replace(
        "endpoints:",
        &format!("tls: {{ caFile: {} }}\nendpoints:", f("fifo").display()),
    ) + "---\nkind: Route\nname: r2\nrules:\n  - matches: [{ path: { value: /r2 } }]\n    backendRefs: [{ upstream: up }]\n";
    assert!(bad_ca.contains("caFile"), "{bad_ca}");
    c.write_config(&bad_ca);
    for id in [1, 2, 3] {
        let err = eventually(Duration::from_secs(20), &format!("node {id} reports the failed apply"), || async {
            Some(c.status(id).await.last_apply_error).filter(|e| !e.is_empty())
        })
        .await;
        assert!(err.contains("not a regular file"), "node {id}: {err}");
        assert_eq!(
            get(&c.gw(id).url("/r1"), &[]).await.0,
            StatusCode::OK,
            "node {id} still serves the last good config"
        );
        assert_eq!(get(&c.gw(id).url("/r2"), &[]).await.0, StatusCode::NOT_FOUND, "node {id}");
    }

    // 3. A restart does not turn the failure into an outage or a crash loop: the node
    // serves what it served before.
    c.kill(3);
    c.launch(3, &[]);
    c.wait_serving(&[3], "/r1").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = c.status(3).await;
    assert!(s.last_apply_error.contains("not a regular file"), "{}", s.last_apply_error);
    assert_eq!(get(&c.gw(3).url("/r1"), &[]).await.0, StatusCode::OK);

    for id in [1, 2, 3] {
        let peak = c.gw(id).peak_rss_kib();
        println!("node {id}: peak RSS {} MiB", peak / 1024);
        assert!(peak < PEAK_RSS_KIB, "node {id} peaked at {peak} KiB");
    }

    // 4. The next good commit is served everywhere and clears the reports.
    c.set_routes(&["r0", "r2"]);
    c.wait_serving(&[1, 2, 3], "/r2").await;
    for id in [1, 2, 3] {
        let s = c.status(id).await;
        assert!(s.last_apply_error.is_empty() && s.config_warnings.is_empty(), "node {id}: {s:?}");
    }
}

/// A commit cannot aim the proxy at cloud metadata or at the node's own admin listener (a
/// client could otherwise reach the admin API through the proxy); the operator can allow it.
#[tokio::test(flavor = "multi_thread")]
async fn endpoints_on_metadata_or_own_listeners_need_the_operators_consent() {
    let admin = testkit::free_port();
    let admin_addr = format!("127.0.0.1:{admin}");
    let up = Upstream::start("up", Behaviour::Echo).await;
    let gw = Gateway::start(&[("c.yaml", &routes_config(&up, &["r0"]))], &["--admin-addr", &admin_addr]);
    let good = gw.config_hash();
    for (endpoint, why) in [
        (admin_addr.clone(), format!("one of this cluster's own listeners (127.0.0.1:{admin})")),
        ("169.254.169.254:80".to_string(), "link-local or metadata address".to_string()),
    ] {
        gw.write(
            "c.yaml",
            &format!(
                "kind: Upstream\nname: up\nendpoints: [{{ address: \"{endpoint}\" }}]\n---\nkind: Route\nname: r1\nrules:\n  - backendRefs: [{{ upstream: up }}]\n"
            ),
        );
        testkit::eventually(&format!("`{endpoint}` refused"), Duration::from_secs(5), || {
            gw.logs().iter().any(|l| l.contains("config is invalid") && l.contains(&why)).then_some(())
        });
        assert_eq!(gw.config_hash(), good, "still serving the last good config");
    }
    let allowed = Gateway::start(
        &[(
            "c.yaml",
            "kind: Upstream\nname: meta\nendpoints: [{ address: 169.254.169.254:80 }]\n---\nkind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: meta }]\n",
        )],
        &["--allow-internal-endpoints"],
    );
    assert!(!allowed.config_hash().is_empty());
}

/// A full disk on one node (root only: the node's data directory is a small tmpfs). The
/// node cannot append the new entry, so it is not acknowledged and the other two commit
/// without it; the node keeps serving the config it applied; with space again it catches
/// up (after a restart if its Raft stopped on the error), with no crash loop.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_on_one_node_keeps_it_serving_and_it_recovers() {
    if !is_root() {
        return skip("hostile::a_full_disk_on_one_node: needs root to mount a tmpfs");
    }
    let mut c = TestCluster::bootstrap(&[]).await;
    c.join(2, 1, false);
    // Node 3's data directory: a 16 MiB tmpfs, unmounted when the test ends.
    let data = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(data.path())
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(data.path().to_path_buf());
    c.nodes.insert(3, Node { data, raft: free_port(), admin: free_port(), gw: None });
    c.join(3, 1, false);
    c.wait_serving(&[1, 2, 3], "/r0").await;
    c.wait_members(1, &[1, 2, 3], &[]).await;

    // Fill node 3's disk to the last byte.
    let filler = c.nodes[&3].data.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        let one = [0u8; 1];
        while f.write_all(&one).is_ok() {}
        let _ = f.sync_all();
    }
    // Enough changes to outgrow what RocksDB preallocated for its write-ahead log.
    let mut names: Vec<String> = vec!["r0".into()];
    for round in 1..=12 {
        names.extend((0..40).map(|i| format!("pad{round}x{i}")));
        names.push(format!("r{round}"));
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        c.set_routes(&refs);
        c.wait_serving(&[1, 2], &format!("/r{round}")).await;
    }
    // Node 3 still serves what it had, for a while, and is still running.
    for _ in 0..10 {
        let (status, _, _) = get(&c.gw(3).url("/r0"), &[("host", "a")]).await;
        assert_eq!(status, http::StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // It runs, serves what it applied, and says its Raft stopped, and why.
    assert!(c.nodes.get_mut(&3).unwrap().gw.as_mut().unwrap().exited().is_none(), "node 3 exited");
    let s = c.status(3).await;
    assert!(s.raft_error.contains("No space left on device"), "{s:?}");
    let out = std::process::Command::new(testkit::binary("raftgate"))
        .args(["--admin", &format!("127.0.0.1:{}", c.nodes[&1].admin), "status"])
        .env_remove("RAFTGATE_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("node 3: its Raft stopped"), "{text}");

    // Space again: node 3 catches up, restarting it if its Raft stopped.
    std::fs::remove_file(&filler).unwrap();
    c.kill(3);
    c.launch(3, &[]);
    c.wait_serving(&[3], "/r12").await;
    assert!(c.status(3).await.raft_error.is_empty());
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// A wall-clock jump on one node, as an NTP step makes: libfaketime moves its
/// CLOCK_REALTIME by +3 h, then -3 h, and leaves the monotonic clock alone. Raft timers,
/// deadlines, rate limits and breakers run on the monotonic clock, so the node stays in the
/// same term, applies every merge and serves throughout; only the wall-clock times it
/// reports (`applied_at`) move.
#[tokio::test(flavor = "multi_thread")]
async fn a_wall_clock_jump_on_one_node_changes_nothing_but_its_timestamps() {
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
    assert!(std::path::Path::new(lib).exists(), "libfaketime is missing: run `make deps` (faketime)");
    let offset = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(offset.path(), "+0\n").unwrap();
    let mut c = TestCluster::bootstrap(&[]).await;
    c.join(2, 1, false);
    c.env.insert(
        3,
        vec![
            ("LD_PRELOAD".into(), lib.into()),
            ("FAKETIME_TIMESTAMP_FILE".into(), offset.path().display().to_string()),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ],
    );
    c.join(3, 1, false);
    c.wait_serving(&[1, 2, 3], "/r0").await;
    c.wait_members(1, &[1, 2, 3], &[]).await;
    let term = c.status(1).await.term;
    let mut names = vec!["r0".to_string()];
    for (step, jump, hours) in [(1, "+3h", 3i64), (2, "-3h", -3), (3, "+0", 0)] {
        std::fs::write(offset.path(), format!("{jump}\n")).unwrap();
        names.push(format!("r{step}"));
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        c.set_routes(&refs);
        c.wait_serving(&[1, 2, 3], &format!("/r{step}")).await;
        for _ in 0..20 {
            let (status, _, _) = get(&c.gw(3).url(&format!("/r{step}")), &[("host", "a")]).await;
            assert_eq!(status, http::StatusCode::OK, "after {jump}");
        }
        // The jump took: node 3 stamps what it applied with its own (moved) clock.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let applied_at = c.status(3).await.config.unwrap().applied_at as i64;
        assert!((applied_at - now - hours * 3600).abs() < 600, "after {jump}: node 3 stamped {applied_at}, now {now}");
    }
    for id in [1, 2, 3] {
        assert_eq!(c.status(id).await.term, term, "node {id}: an election happened");
    }
}
