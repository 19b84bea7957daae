//! `node` is the raftgate gateway daemon, `raftgated`: the proxy engine that serves traffic
//! from the current compiled config, the admin endpoints, and (as they land) the GitOps sync
//! and the Raft glue that feed it.
//!
//! The data plane must never wait on the control plane: requests read the last applied
//! config with one atomic load, and config changes are compiled off the request path and
//! swapped in whole. This crate never touches RocksDB directly (that is `raft`'s job).

pub mod admin;
pub mod cluster;
pub mod coarse_timer;
pub mod config_dir;
pub mod gitops;
pub mod proxy;
pub mod run;
pub mod server;
