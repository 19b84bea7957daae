//! The content hash depends on what the config means, never on how it is laid out.

use crate::files;

const UPSTREAMS: &str = "\
kind: Upstream
name: users
endpoints:
  - address: 127.0.0.1:9001
  - address: 127.0.0.1:9002
    weight: 2
loadBalancer: { policy: leastRequest }
---
kind: Upstream
name: canary
endpoints: [{ address: 127.0.0.1:9003 }]
";

const ROUTES: &str = "\
kind: Route
name: api
hostnames: [api.example.com, www.example.com]
rules:
  - matches:
      - path: { type: PathPrefix, value: /v1/users }
        method: GET
        headers: [{ name: X-A, value: \"1\" }, { name: x-b, value: \"2\" }]
    backendRefs:
      - { upstream: users, weight: 90 }
      - { upstream: canary, weight: 10 }
    timeouts: { request: 2s }
";

/// The same tree: documents in other files and order, flow and block styles swapped,
/// comments, defaults written out, lists whose order means nothing shuffled, equal
/// durations spelled differently, case-insensitive names in other case.
const REORDERED: &str = "\
# everything in one file, routes first
kind: Route
rules:
  - timeouts:
      request: 2000ms
    backendRefs:
      - upstream: users
        weight: 90
      - weight: 10
        upstream: canary
    matches:
      - method: GET
        headers:
          - name: x-b
            value: '2'
          - type: Exact
            name: x-a
            value: '1'
        path:
          value: /v1/users/
name: api
hostnames:
  - WWW.example.com
  - api.example.com
---
name: canary
kind: Upstream
endpoints:
  - address: 127.0.0.1:9003
    weight: 1
---
kind: Upstream   # trailing comment
name: users
loadBalancer:
  policy: leastRequest
endpoints:
  - { address: 127.0.0.1:9002, weight: 2 }
  - { address: 127.0.0.1:9001 }
connectTimeout: 5s
";

#[test]
fn same_tree_reordered_and_reformatted_has_the_same_hash() {
    let a = schemas::compile_tree(&files(&[("upstreams.yaml", UPSTREAMS), ("routes.yaml", ROUTES)])).unwrap();
    let b = schemas::compile_tree(&files(&[("all.yml", REORDERED)])).unwrap();
    let c = schemas::compile_tree(&files(&[("z/routes.yaml", ROUTES), ("a/upstreams.yaml", UPSTREAMS)])).unwrap();
    assert_eq!(a.snapshot, b.snapshot);
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.hash, c.hash);
}

#[test]
fn any_change_of_meaning_changes_the_hash() {
    let base = schemas::compile_tree(&files(&[("u.yaml", UPSTREAMS), ("r.yaml", ROUTES)])).unwrap().hash;
    for (what, from, to) in [
        ("weight", "weight: 90", "weight: 80"),
        ("timeout", "request: 2s", "request: 3s"),
        ("method", "method: GET", "method: POST"),
        ("header value", "value: \"1\"", "value: \"3\""),
        ("hostname", "www.example.com", "web.example.com"),
    ] {
        let routes = ROUTES.replace(from, to);
        let changed = schemas::compile_tree(&files(&[("u.yaml", UPSTREAMS), ("r.yaml", &routes)])).unwrap().hash;
        assert_ne!(base, changed, "changing the {what} must change the hash");
    }
}

#[test]
fn the_hash_is_pinned() {
    // The hash must be identical on every machine and in every build. If the snapshot
    // format changes on purpose, bump SNAPSHOT_FORMAT and update this value.
    let a = schemas::compile_tree(&files(&[("u.yaml", UPSTREAMS), ("r.yaml", ROUTES)])).unwrap();
    assert_eq!(a.hash.to_string(), PINNED, "snapshot JSON: {}", serde_json::to_string(&a.snapshot).unwrap());
}

const PINNED: &str = "9eaa471b43f79182f460b531be2098d367402cff63c7f0a21c6fcdc8d1a26104";
