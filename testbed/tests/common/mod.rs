//! Helpers shared by the testbed's integration tests.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `testbed --state <state> <args>`.
pub fn testbed(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_testbed")).arg("--state").arg(state).args(args).output().unwrap()
}

/// The command's stdout, after asserting it succeeded (its output otherwise).
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
