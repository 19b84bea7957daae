//! `node` is the raftgate gateway daemon, `raftgated`: the proxy engine that serves traffic
//! from the current compiled config, the admin API, and the GitOps sync and Raft glue that
//! feed it.
//!
//! The data plane must never wait on the control plane: requests read the last applied
//! config with one atomic load, and config changes are compiled off the request path and
//! swapped in whole. This crate never touches RocksDB directly (that is `raft`'s job).

// `run` is what the binary calls; `proxy` is public for its benchmarks (route lookup,
// compile and swap). Everything else is the daemon's own business.
pub(crate) mod admin;
pub(crate) mod cluster;
pub(crate) mod coarse_timer;
pub(crate) mod config_dir;
pub(crate) mod conn;
pub(crate) mod gitops;
pub mod proxy;
pub(crate) mod proxy_protocol;
pub mod run;
pub(crate) mod server;
pub(crate) mod telemetry;
