//! Time-boxed fuzzing on stable Rust: proptest strategies generate (and shrink) inputs, and
//! a harness runs round after round of fresh random cases until its time budget is spent.
//!
//! The budget is `RAFTGATE_FUZZ_SECONDS` (2 s when unset, so a plain `cargo test` stays
//! quick; `make test` gives each target 30 s, `make fuzz` 30 minutes). A failure is shrunk
//! to a minimal input, reported, and saved under `proptest-regressions/` beside the
//! harness's source file: committed, it is replayed first on every later run, which is how a
//! crash found once becomes a regression test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use proptest;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};

/// How long each harness runs.
pub fn budget() -> Duration {
    let secs = std::env::var("RAFTGATE_FUZZ_SECONDS").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(2);
    Duration::from_secs(secs)
}

/// Runs `test` on inputs from `strategy` until the budget is spent; panics with the
/// smallest failing input. `source` is the harness's `file!()`, where regressions are kept.
/// Prints `fuzz <name>: <n> executions in <s> s` for `make fuzz` to collect.
pub fn run<S, F>(name: &str, source: &'static str, strategy: S, test: F)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: Fn(S::Value) -> Result<(), TestCaseError>,
{
    let started = Instant::now();
    let deadline = started + budget();
    let executions = AtomicU64::new(0);
    loop {
        let config = Config {
            cases: 256,
            source_file: Some(source),
            failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel("proptest-regressions"))),
            // Shrinking a failure gets its own time, apart from the budget.
            max_shrink_time: 60_000,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        let outcome = runner.run(&strategy, |v| {
            executions.fetch_add(1, Ordering::Relaxed);
            test(v)
        });
        match outcome {
            Ok(()) => {}
            Err(TestError::Fail(why, input)) => panic!("fuzz {name}: failed: {why}\nminimal input: {input:#?}"),
            Err(TestError::Abort(why)) => panic!("fuzz {name}: aborted: {why}"),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    println!(
        "fuzz {name}: {} executions in {} s, no failure",
        executions.load(Ordering::Relaxed),
        started.elapsed().as_secs()
    );
}

/// Byte-level mutations of a seed input: what a coverage-less fuzzer does to valid
/// inputs to reach the corners a parser handles worst.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Replace the byte at (position modulo length).
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    /// Copy a slice (start, length) to another position: repeated keys, nesting, lists.
    Duplicate(usize, usize, usize),
    /// Cut the input short.
    Truncate(usize),
}

/// Up to `max` mutations.
pub fn mutations(max: usize) -> impl Strategy<Value = Vec<Mutation>> {
    use proptest::prelude::*;
    let one = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        (any::<usize>(), 1..64usize, any::<usize>()).prop_map(|(s, l, t)| Mutation::Duplicate(s, l, t)),
        any::<usize>().prop_map(Mutation::Truncate),
    ];
    proptest::collection::vec(one, 0..=max)
}

/// `seed` with `mutations` applied in order.
pub fn mutate(seed: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for m in mutations {
        let len = out.len();
        match *m {
            Mutation::Set(i, b) if len > 0 => out[i % len] = b,
            Mutation::Insert(i, b) => out.insert(i % (len + 1), b),
            Mutation::Remove(i) if len > 0 => {
                out.remove(i % len);
            }
            Mutation::Duplicate(s, l, t) if len > 0 => {
                let s = s % len;
                let piece: Vec<u8> = out[s..(s + l).min(len)].to_vec();
                let t = t % (len + 1);
                out.splice(t..t, piece);
            }
            Mutation::Truncate(i) if len > 0 => out.truncate(i % len),
            _ => {}
        }
    }
    out
}
