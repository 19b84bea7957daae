//! End-to-end tests of the `raftgate` binary.

mod cluster;
mod validate;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn raftgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_raftgate")).args(args).output().expect("raftgate runs")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
