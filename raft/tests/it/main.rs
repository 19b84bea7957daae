//! Tests of the RocksDB store: openraft's own conformance suite, and raftgate's apply logic
//! and durability on a real database.

// The suite's signatures use openraft's (large) StorageError.
#![allow(clippy::result_large_err)]

mod apply;
mod cluster;

use openraft::testing::{StoreBuilder, Suite};
use raft::{LogStore, StateMachineStore, StorageError, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = raft::open(dir.path())?;
        Ok((dir, log, sm))
    }
}

/// openraft's storage conformance suite (about 35 cases) against the real RocksDB store.
/// A plain test: the suite builds its own runtime per case.
#[test]
fn openraft_storage_suite() -> Result<(), StorageError> {
    Suite::test_all(Builder)
}
