//! The last config this node served, kept in its data directory apart from Raft.
//!
//! The state machine holds the latest committed config, which is normally what the node
//! serves. When a config fails to apply on this node (a certificate or CA file missing or
//! unreadable here), the node keeps serving the previous one; this file is how it still
//! knows that one after a restart, instead of coming back serving nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use schemas::{ConfigSnapshot, ContentHash};
use serde::{Deserialize, Serialize};

const FILE: &str = "served.json";

/// A config this node served, with where it came from.
#[derive(Debug, Serialize, Deserialize)]
pub struct Served {
    pub commit: String,
    pub log_index: u64,
    pub snapshot: Arc<ConfigSnapshot>,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Writes `served` atomically and durably: a crash leaves the old file or the new one.
pub fn save(data_dir: &Path, served: &Served) -> std::io::Result<()> {
    let tmp = data_dir.join(format!(".{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    serde_json::to_writer(&mut f, served).map_err(std::io::Error::other)?;
    f.flush()?;
    f.sync_all()?;
    std::fs::rename(&tmp, path(data_dir))?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// The config saved last, with its hash, if there is one and it is intact.
pub fn load(data_dir: &Path) -> Result<Option<(Served, ContentHash)>, String> {
    let bytes = match std::fs::read(path(data_dir)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path(data_dir).display())),
    };
    let served: Served =
        serde_json::from_slice(&bytes).map_err(|e| format!("{} is damaged: {e}", path(data_dir).display()))?;
    let hash = served.snapshot.content_hash();
    Ok(Some((served, hash)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let snapshot = Arc::new(ConfigSnapshot::default());
        let want = snapshot.content_hash();
        save(dir.path(), &Served { commit: "abc".into(), log_index: 7, snapshot }).unwrap();
        let (got, hash) = load(dir.path()).unwrap().unwrap();
        assert_eq!((got.commit.as_str(), got.log_index, hash), ("abc", 7, want));
        std::fs::write(dir.path().join(FILE), b"{").unwrap();
        assert!(load(dir.path()).unwrap_err().contains("damaged"));
    }
}
