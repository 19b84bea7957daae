//! `raft` replicates raftgate's config log between gateway nodes: the openraft type
//! declarations (`types`), the RocksDB log store and config state machine (`store`), the
//! tonic transport (`network`) and the timing profiles (`config`). It is the only crate that touches RocksDB, and its listener
//! must never serve admin or proxy traffic.
//!
//! The state machine holds the current `ConfigSnapshot` and the history of applied config
//! commits, persists them atomically with `last_applied`, and publishes every change on a
//! `watch` channel, so the proxy engine picks configs up without ever waiting on Raft.

// openraft's storage traits fix the error type (`StorageError`, large by design); helper
// functions return the same type rather than boxing and unboxing at every call.
#![allow(clippy::result_large_err)]

pub mod config;
pub mod network;
pub mod store;
pub mod types;

pub use store::{open, AppliedConfig, ConfigHook, HistoryEntry, LogStore, StateMachineData, StateMachineStore};
pub use types::*;
