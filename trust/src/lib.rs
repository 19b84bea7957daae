//! Cluster trust for raftgate: which certificates a node accepts, and from whom.
//!
//! - `identity`: a node is `node-<id>.<cluster>` in its certificate's names.
//! - `material`: loading the CA bundle, certificate and key, checking them, and reloading
//!   them when the files change (rotation without restart).
//! - `net`: mTLS listeners that know their peer, and dialers that check the server.
//! - `gen`: issuing a CA and node and operator certificates (`raftgate certs`).

pub mod gen;
pub mod identity;
pub mod material;
pub mod net;

pub use identity::{check_cluster_name, node_name, CertInfo};
pub use material::{ClientAuth, Tls, TlsError, TlsFiles};
pub use net::{channel, incoming, ClientTls, Conn, Identity, ListenOptions, ListenTls, Peer};
