//! `raftgate certs`: a cluster CA and the certificates of its nodes and operators, so a
//! secure cluster is as quick to start as an insecure one.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Subcommand;
use trust::gen::{Ca, GenError};

use crate::client::CliError;

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create the cluster CA (`ca.pem`, and `ca-key.pem`, which signs everything else: keep
    /// it off the nodes).
    Ca {
        /// Where to write it.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// The cluster's name (raftgated --cluster-name): node identities are
        /// node-<id>.<cluster>.
        #[arg(long, default_value = "raftgate")]
        cluster: String,
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// A node's certificate and key (`node-<id>.pem`, `node-<id>-key.pem`): its identity
    /// node-<id>.<cluster>, plus every name and address peers and operators dial it by.
    Node {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        #[arg(long)]
        id: u64,
        /// A DNS name the node is reached by (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// An IP address the node is reached by (repeatable).
        #[arg(long)]
        ip: Vec<IpAddr>,
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// An operator's client certificate (`<name>.pem`, `<name>-key.pem`): it authenticates
    /// `raftgate` to the admin API (--cert/--key) and can never act as a node.
    Client {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
}

fn failed(e: GenError) -> CliError {
    match e {
        GenError::Usage(m) => CliError::Usage(m),
        e => CliError::Failed(e.to_string()),
    }
}

pub fn run(cmd: &CertsCommand) -> Result<(), CliError> {
    match cmd {
        CertsCommand::Ca { dir, cluster, days } => {
            let ca = Ca::new(cluster, *days).map_err(failed)?;
            ca.save(dir).map_err(failed)?;
            println!(
                "wrote {} and {} (cluster `{cluster}`)",
                dir.join("ca.pem").display(),
                dir.join("ca-key.pem").display()
            );
            println!("next: raftgate certs node --dir {} --id 1 --ip <address>", dir.display());
        }
        CertsCommand::Node { dir, id, dns, ip, days } => {
            let ca = Ca::load(dir).map_err(failed)?;
            let issued = ca.node(*id, dns, ip, *days).map_err(failed)?;
            let (cert, key) = issued.save(dir, &format!("node-{id}")).map_err(failed)?;
            println!("wrote {} and {} for {}", cert.display(), key.display(), trust::node_name(&ca.cluster, *id));
            println!(
                "start the node with: --cluster-name {} --tls-ca {} --tls-cert {} --tls-key {}",
                ca.cluster,
                dir.join("ca.pem").display(),
                cert.display(),
                key.display()
            );
        }
        CertsCommand::Client { dir, name, days } => {
            let ca = Ca::load(dir).map_err(failed)?;
            let issued = ca.client(name, *days).map_err(failed)?;
            let (cert, key) = issued.save(dir, name).map_err(failed)?;
            println!("wrote {} and {} for operator `{name}`", cert.display(), key.display());
            println!(
                "use it with: raftgate --ca {} --cert {} --key {} status",
                dir.join("ca.pem").display(),
                cert.display(),
                key.display()
            );
        }
    }
    Ok(())
}
