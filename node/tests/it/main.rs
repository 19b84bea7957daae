//! Integration tests: the real `raftgated` binary against real upstreams (small hyper
//! servers started by the tests) and real HTTP clients, all on loopback.

mod abuse;
mod accesslog;
mod badinput;
mod browser;
mod cache;
mod cdp;
mod certificates;
mod clientip;
mod cluster;
mod dashboard;
mod deploy;
mod dns;
mod features;
mod gitops;
mod harness;
mod hostile;
mod jwt;
mod mtls;
mod multinode;
mod nodes;
mod protocols;
mod resilience;
mod security;
mod swap;
mod tls_policy;
mod tracing;
mod traffic;
mod upstream_mtls;
