//! `raftgate credentials`: make the credentials a `SecurityPolicy` names, printing only what
//! goes into Git (hashes) and, once, what the consumer gets (the key).

use std::io::BufRead;

use clap::Subcommand;
use sha2::{Digest, Sha256};

#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// A new random API key (256 bits) for a consumer: prints the key, to hand over once,
    /// and the line for `apiKeyAuth.consumers` (or a consumers file), which holds only its
    /// SHA-256.
    ApiKey {
        /// The consumer's name.
        consumer: String,
    },
    /// An htpasswd line for `basicAuth` (bcrypt): the password is read from standard input
    /// (one line), never from the command line.
    Htpasswd {
        user: String,
        /// bcrypt cost, 4 to 12: each step doubles the time of a check.
        #[arg(long, default_value_t = 10)]
        cost: u32,
    },
}

pub fn run(cmd: &CredentialsCommand) -> Result<(), String> {
    match cmd {
        CredentialsCommand::ApiKey { consumer } => {
            let mut raw = [0u8; 32];
            getrandom::fill(&mut raw).map_err(|e| format!("no randomness from the system: {e}"))?;
            let key = format!("rgk_{}", hex::encode(raw));
            let sha = hex::encode(Sha256::digest(key.as_bytes()));
            println!("key (give it to {consumer} once; it is not stored anywhere): {key}");
            println!("for apiKeyAuth.consumers:  - {{ name: {consumer}, sha256: {sha} }}");
            println!("for a consumers file:      {consumer} {sha}");
            Ok(())
        }
        CredentialsCommand::Htpasswd { user, cost } => {
            if !schemas::snapshot::BCRYPT_COSTS.contains(cost) {
                return Err(format!("--cost {cost} is outside 4..=12"));
            }
            if user.is_empty() || user.contains(':') {
                return Err("the user name must be non-empty and without `:`".into());
            }
            let mut password = String::new();
            std::io::stdin().lock().read_line(&mut password).map_err(|e| format!("reading the password: {e}"))?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                return Err("no password on standard input".into());
            }
            if password.len() > 72 {
                return Err("bcrypt checks at most 72 bytes of a password; choose a shorter one".into());
            }
            let hash = bcrypt::hash_with_result(password, *cost)
                .map_err(|e| format!("hashing: {e}"))?
                .format_for_version(bcrypt::Version::TwoY);
            println!("{user}:{hash}");
            Ok(())
        }
    }
}
