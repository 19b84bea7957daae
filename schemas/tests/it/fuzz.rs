//! Fuzzing the YAML loader and the compiler: mutated versions of real configs and of small
//! hostile snippets must never panic, never take long, and compile deterministically.

use std::time::{Duration, Instant};

use testkit::fuzz::{self, proptest::prelude::*};

/// Valid and nearly valid inputs to mutate: the example repository's files and snippets
/// aimed at the loader's limits (nesting, flow collections, tags, anchors, duplicate keys).
fn seeds() -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config");
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut dirs = vec![root];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if schemas::is_config_file(&p.to_string_lossy()) {
                out.push(std::fs::read(p).unwrap());
            }
        }
    }
    out.sort();
    for s in [
        "kind: Route\nname: a\nrules:\n  - matches: [{ path: { type: RegularExpression, value: \"/(a+)+$\" } }]\n    backendRefs: [{ upstream: u }]\n",
        "kind: Upstream\nname: u\nendpoints: [{ address: \"[::1]:80\", weight: 1000 }]\nhealthCheck: { active: { path: /, interval: 100ms } }\n",
        "a: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
        "a: &x [1]\nb: *x\n",
        "kind: !!binary Um91dGU=\nname: a\n",
        "kind: Route\nname: a\nname: b\n---\n---\n...\n",
        "kind: Certificate\nname: c\nhostnames: ['*.a.com']\ncertificate: { env: A }\nprivateKey: { file: /k }\n",
    ] {
        out.push(s.as_bytes().to_vec());
    }
    out
}

#[test]
fn fuzz_yaml_and_compile() {
    let seeds = seeds();
    let n = seeds.len();
    let strategy = (0..n, 0..n, fuzz::mutations(12));
    fuzz::run("yaml_and_compile", file!(), strategy, |(a, b, muts)| {
        // Two seeds side by side (one file each, or spliced into one) then mutated.
        let one = fuzz::mutate(&seeds[a], &muts);
        let files = vec![
            schemas::SourceFile { path: "a.yaml".into(), contents: one },
            schemas::SourceFile { path: "b.yaml".into(), contents: seeds[b].clone() },
        ];
        let started = Instant::now();
        let first = schemas::compile_tree(&files);
        let took = started.elapsed();
        prop_assert!(took < Duration::from_secs(2), "compiling took {took:?}");
        match first {
            Ok(c) => {
                // Deterministic: the same tree compiles to the same snapshot and hash.
                let again = schemas::compile_tree(&files).expect("compiles twice");
                prop_assert_eq!(c.hash, again.hash);
                prop_assert_eq!(c.hash, c.snapshot.content_hash());
            }
            Err(diags) => {
                prop_assert!(!diags.is_empty());
                for d in &diags {
                    prop_assert!(!d.message.is_empty() && d.file.ends_with(".yaml"), "{d:?}");
                }
            }
        }
        Ok(())
    });
}
