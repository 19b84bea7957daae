//! `raftgate config validate` as a user runs it: on directories, on Git commits, in each
//! output format.

use std::path::Path;
use std::process::Command;

use crate::{raftgate, repo_root, stderr, stdout};

#[test]
fn the_example_config_is_valid() {
    let dir = repo_root().join("examples/config");
    let out = raftgate(&["config", "validate", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "one summary line: {text}");
    assert!(
        text.starts_with("valid: 4 upstreams, 3 routes, 1 certificate, 2 security policies, TLS policy `edge` in 6 files; content hash "),
        "{text}"
    );
}

/// Each fixture is a whole config broken in one way; its first line says where the error
/// must be reported: `# expect: LINE:COL: message fragment`.
#[test]
fn broken_configs_fail_with_file_line_and_column() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/broken");
    let mut names: Vec<_> = std::fs::read_dir(&fixtures).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    assert!(names.len() >= 20, "at least 20 broken configs, found {}", names.len());
    let mut failures = Vec::new();
    for fixture in &names {
        let text = std::fs::read_to_string(fixture).unwrap();
        let expect = text.lines().next().unwrap().strip_prefix("# expect: ").expect("first line is `# expect: ...`");
        let (place, fragment) = expect.split_once(": ").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.yaml");
        std::fs::write(&file, &text).unwrap();
        let out = raftgate(&["config", "validate", dir.path().to_str().unwrap()]);
        let printed = stdout(&out);
        let wanted = format!("{}:{place}: error: ", file.display());
        let ok = out.status.code() == Some(1)
            && printed.lines().count() == 1
            && printed.starts_with(&wanted)
            && printed.contains(fragment);
        if !ok {
            failures.push(format!(
                "{}: exit {:?}, wanted one line `{wanted}...{fragment}`, got:\n{printed}",
                fixture.file_name().unwrap().to_string_lossy(),
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn json_and_github_formats() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), "kind: Route\nname: r\nrules:\n  - backendRefs: [{ upstream: nope }]\n")
        .unwrap();
    let d = dir.path().to_str().unwrap();

    let out = raftgate(&["config", "validate", d, "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["valid"], false);
    let e = &v["errors"][0];
    assert_eq!((e["line"].as_u64(), e["column"].as_u64()), (Some(4), Some(31)));
    assert!(e["message"].as_str().unwrap().contains("unknown upstream `nope`"));
    assert!(e["file"].as_str().unwrap().ends_with("a.yaml"));

    let out = raftgate(&["config", "validate", d, "--format", "github"]);
    assert_eq!(out.status.code(), Some(1));
    let line = stdout(&out);
    let file = dir.path().join("a.yaml");
    assert!(
        line.starts_with(&format!(
            "::error file={},line=4,col=31,title=raftgate config::unknown upstream",
            file.display()
        )),
        "{line}"
    );

    let ok = repo_root().join("examples/config");
    let out = raftgate(&["config", "validate", ok.to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["routes"], 3);
    assert_eq!(v["hash"].as_str().unwrap().len(), 64);
}

#[test]
fn unreadable_or_empty_input_is_explained() {
    let out = raftgate(&["config", "validate", "/nonexistent/raftgate-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read /nonexistent/raftgate-config"), "{}", stderr(&out));

    let empty = tempfile::tempdir().unwrap();
    let out = raftgate(&["config", "validate", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no *.yaml or *.yml files"), "{}", stderr(&out));
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A commit is validated straight from the object database: the work tree is left in a
/// different state on purpose, to prove it is not read.
#[test]
fn validates_git_commits_without_checkout() {
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    git(r, &["init", "-q"]);
    std::fs::create_dir(r.join("gateway")).unwrap();
    for entry in std::fs::read_dir(repo_root().join("examples/config")).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, r.join("gateway").join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(
        r.join("gateway/route.yaml"),
        "kind: Route\nname: extra\nhostnames: [extra.example.com]\nrules:\n  - backendRefs: [{ upstream: web }]\n",
    )
    .unwrap();
    std::fs::write(r.join("README.md"), "not yaml\n").unwrap();
    git(r, &["add", "."]);
    git(r, &["commit", "-q", "-m", "good"]);
    let good = git(r, &["rev-parse", "HEAD"]);
    std::fs::write(
        r.join("gateway/route.yaml"),
        "kind: Route\nname: extra\nhostnames: [extra.example.com]\nrules:\n  - backendRefs: [{ upstream: webb }]\n",
    )
    .unwrap();
    git(r, &["commit", "-q", "-am", "bad"]);
    // Leave the work tree broken differently, to show it is not what gets read.
    std::fs::write(r.join("gateway/route.yaml"), "garbage: [\n").unwrap();

    let repo_arg = r.to_str().unwrap();
    let out = raftgate(&["config", "validate", "--git", repo_arg, "--rev", &good, "--path", "gateway"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).starts_with("valid: 4 upstreams, 1 route, 1 certificate, TLS policy `edge` in 4 files;"),
        "{}",
        stdout(&out)
    );

    let out = raftgate(&["config", "validate", "--git", repo_arg, "--rev", "main", "--path", "gateway"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with("gateway/route.yaml:5:31: error: unknown upstream `webb`"), "{}", stdout(&out));

    let out = raftgate(&["config", "validate", "--git", repo_arg, "--rev", "no-such-branch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot find commit `no-such-branch`"), "{}", stderr(&out));

    let out = raftgate(&["config", "validate", "--git", repo_arg, "--rev", "main", "--path", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("has no directory `nope`"), "{}", stderr(&out));
}
