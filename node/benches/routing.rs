//! Route lookup and config compile+swap at 10, 1,000 and 10,000 routes.
//!
//! Lookup must not scan: its cost should stay about flat as the table grows. Compile+swap
//! is what a node does off the request path for every new config.

// The node's allocator: compile+swap allocates and frees a lot, and the figure should be
// the node's, not the system allocator's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, Method};
use node::proxy::router::RequestView;
use node::proxy::runtime::{BuildEnv, ConfigOrigin, Engine, Runtime};

/// `n` routes over `n / 10` host names (at least one), each with an exact, a prefix and a
/// header-matching rule, so the table holds `3 n` rules; in files of 10,000 routes (a node
/// reads files of up to 8 MiB), as `bench/routes.py` writes them. Made once per size.
fn config(n: usize) -> Arc<schemas::ConfigSnapshot> {
    static MADE: std::sync::Mutex<Vec<(usize, Arc<schemas::ConfigSnapshot>)>> = std::sync::Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap();
    if let Some((_, s)) = made.iter().find(|(m, _)| *m == n) {
        return s.clone();
    }
    let mut files = vec![schemas::SourceFile { path: "upstream.yaml".into(), contents: UPSTREAM.as_bytes().to_vec() }];
    let hosts = (n / 10).max(1);
    for start in (0..n).step_by(10_000) {
        let mut yaml = String::new();
        for i in start..n.min(start + 10_000) {
            yaml.push_str(&format!(
                "---\nkind: Route\nname: r{i}\nhostnames: [h{}.example.com]\nrules:\n  - matches: [{{ path: {{ type: Exact, value: /svc{i}/health }} }}]\n    backendRefs: [{{ upstream: up }}]\n  - matches: [{{ path: {{ value: /svc{i} }}, headers: [{{ name: x-canary, value: \"on\" }}] }}]\n    backendRefs: [{{ upstream: up }}]\n  - matches: [{{ path: {{ value: /svc{i} }} }}]\n    backendRefs: [{{ upstream: up }}]\n",
                i % hosts
            ));
        }
        files
            .push(schemas::SourceFile { path: format!("routes-{}.yaml", start / 10_000), contents: yaml.into_bytes() });
    }
    let snapshot = Arc::new(schemas::compile_tree(&files).expect("valid bench config").snapshot);
    made.push((n, snapshot.clone()));
    snapshot
}

const UPSTREAM: &str = "kind: Upstream\nname: up\nendpoints: [{ address: 127.0.0.1:9000 }]\n";

/// The table sizes of every group, up to issue #17's 100,000 routes.
const SIZES: [usize; 4] = [10, 1_000, 10_000, 100_000];

fn roots() -> Arc<rustls::RootCertStore> {
    Arc::new(rustls::RootCertStore::empty())
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for n in SIZES {
        let snapshot = config(n);
        let (roots, nodes) = (roots(), Default::default());
        let env = BuildEnv { previous: None, roots: &roots, tls: None, nodes: &nodes, allow_internal: false };
        let rt = Runtime::build(snapshot.clone(), snapshot.content_hash(), &env).unwrap();
        let hosts = (n / 10).max(1);
        let headers = HeaderMap::new();
        let method = Method::GET;
        // Requests spread over the whole table, for a route deep in a long path.
        let targets: Vec<(String, String)> = (0..1024)
            .map(|k| {
                let i = (k * 7919) % n;
                (format!("h{}.example.com", i % hosts), format!("/svc{i}/users/42/orders"))
            })
            .collect();
        let mut k = 0;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let (host, path) = &targets[k % targets.len()];
                k += 1;
                let view = RequestView { host, path, query: None, method: &method, headers: &headers };
                black_box(rt.router.lookup(&view).is_some())
            })
        });
    }
    group.finish();
}

/// What a node does with each new config entry, through the node's own code: the state
/// machine's hook starts the compile (`Engine::prepare`), the state machine checks the
/// content hash meanwhile, then `Engine::apply` takes the compiled runtime and swaps it in.
/// The replaced runtime is dropped on a blocking thread, as in a node.
fn compile_and_swap(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile_and_swap");
    group.sample_size(10);
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    for n in SIZES {
        let snapshot = config(n);
        let stated = snapshot.content_hash();
        let engine = Engine::new(roots(), false).unwrap();
        tokio.block_on(engine.apply(snapshot.clone(), stated, ConfigOrigin::default())).unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    tokio.block_on(async {
                        engine.prepare(snapshot.clone(), stated);
                        assert_eq!(snapshot.content_hash(), stated, "the state machine's check");
                        engine.apply(snapshot.clone(), stated, ConfigOrigin::default()).await.unwrap()
                    });
                    let took = started.elapsed();
                    total += took;
                    // Merges arrive seconds apart: the replaced runtime, freed on a blocking
                    // thread after the swap, is gone before the next one, not competing with it.
                    std::thread::sleep(took);
                }
                total
            })
        });
    }
    group.finish();
}

/// The part of compile+swap that is the state machine's integrity check: the snapshot's
/// canonical JSON hashed with SHA-256 (`ConfigSnapshot::content_hash`).
fn content_hash(c: &mut Criterion) {
    let mut group = c.benchmark_group("content_hash");
    group.sample_size(10);
    for n in SIZES {
        let snapshot = config(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| b.iter(|| snapshot.content_hash()));
    }
    group.finish();
}

/// Request-size cost: a lookup against 1,000 `PathPrefix` routes of 1,000 different lengths
/// (one host), for paths of 1 KiB, 8 KiB (the longest a node accepts: `path::MAX_PATH_BYTES`)
/// and 60 KiB (the router alone), made of one-letter segments so every length is a segment
/// boundary. The walk hashes the path only at prefix lengths that exist, so the cost grows
/// with the path's length, never with its square.
fn lookup_by_path_length(c: &mut Criterion) {
    let mut yaml = String::from("kind: Upstream\nname: up\nendpoints: [{ address: 127.0.0.1:9000 }]\n");
    for i in 1..=1_000usize {
        // `/a/a/…/zNNN`: prefixes that share the request's shape but never match it.
        let prefix = format!("{}/z{i}", "/a".repeat(i % 500));
        yaml.push_str(&format!(
            "---\nkind: Route\nname: p{i}\nrules:\n  - matches: [{{ path: {{ value: \"{prefix}\" }} }}]\n    backendRefs: [{{ upstream: up }}]\n"
        ));
    }
    yaml.push_str("---\nkind: Route\nname: root\nrules:\n  - backendRefs: [{ upstream: up }]\n");
    let files = [schemas::SourceFile { path: "bench.yaml".into(), contents: yaml.into_bytes() }];
    let snapshot = Arc::new(schemas::compile_tree(&files).expect("valid bench config").snapshot);
    let (roots, nodes) = (roots(), Default::default());
    let env = BuildEnv { previous: None, roots: &roots, tls: None, nodes: &nodes, allow_internal: false };
    let rt = Runtime::build(snapshot.clone(), snapshot.content_hash(), &env).unwrap();
    let (headers, method) = (HeaderMap::new(), Method::GET);
    let mut group = c.benchmark_group("route_lookup_path_bytes");
    for len in [1024usize, 8 * 1024, 60 * 1024] {
        let path = "/a".repeat(len / 2);
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
            b.iter(|| {
                let view =
                    RequestView { host: "h.example.com", path: &path, query: None, method: &method, headers: &headers };
                black_box(rt.router.lookup(&view).is_some())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookup, compile_and_swap, content_hash, lookup_by_path_length);
criterion_main!(benches);
