//! `raft` will replicate raftgate's config log between gateway nodes: the openraft type
//! declarations, the RocksDB log store and state machine, and the tonic transport. It is the
//! only crate that may touch RocksDB, and it must never serve admin or proxy traffic on its
//! listener.
//!
//! Nothing is implemented here yet: replication is issue #4. The crate exists so that the
//! workspace layout is final from the start.
