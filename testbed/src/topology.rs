//! Topology files: regions with node counts, round trips inside and between regions, and
//! the config the cluster starts from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// Most nodes a testbed runs (addresses are 10.77.<region>.<node>, ports per node on loopback).
const MAX_NODES: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Topology {
    pub(crate) name: String,
    /// The config directory the testbed's Git repository starts with (relative to the file).
    pub(crate) config: PathBuf,
    pub(crate) regions: Vec<Region>,
    #[serde(default)]
    pub(crate) links: Vec<Link>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Region {
    pub(crate) name: String,
    pub(crate) nodes: usize,
    /// Round trip between two nodes of this region.
    #[serde(default = "zero", with = "text_duration")]
    pub(crate) rtt: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Link {
    pub(crate) between: [String; 2],
    #[serde(with = "text_duration")]
    pub(crate) rtt: Duration,
    /// ± on each one-way delay.
    #[serde(default = "zero", with = "text_duration")]
    pub(crate) jitter: Duration,
    /// Random loss per direction, in percent.
    #[serde(default)]
    pub(crate) loss_percent: f64,
}

fn zero() -> Duration {
    Duration::ZERO
}

mod text_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        schemas::Duration::parse(&text).map(schemas::Duration::to_std).map_err(serde::de::Error::custom)
    }
}

impl Topology {
    /// Reads and checks a topology file; `config` becomes absolute.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut t: Topology =
            serde_yaml::from_str(&text).with_context(|| format!("{} is not a valid topology", path.display()))?;
        if t.config.is_relative() {
            t.config = path.parent().unwrap_or(Path::new(".")).join(&t.config);
        }
        t.config = t
            .config
            .canonicalize()
            .with_context(|| format!("{}: config directory {} not found", path.display(), t.config.display()))?;
        t.check().with_context(|| format!("{} is not a valid topology", path.display()))?;
        Ok(t)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.regions.is_empty() {
            bail!("no regions");
        }
        let mut seen = BTreeMap::new();
        for (i, r) in self.regions.iter().enumerate() {
            if r.name.is_empty() || !r.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                bail!("region name `{}`: use letters, digits and `-`", r.name);
            }
            if seen.insert(r.name.clone(), i).is_some() {
                bail!("region `{}` is listed twice", r.name);
            }
        }
        let total: usize = self.regions.iter().map(|r| r.nodes).sum();
        if total == 0 || total > MAX_NODES {
            bail!("{total} nodes: a testbed runs 1 to {MAX_NODES}");
        }
        for l in &self.links {
            for r in &l.between {
                if !seen.contains_key(r) {
                    bail!(
                        "link names unknown region `{r}` (regions: {})",
                        seen.keys().cloned().collect::<Vec<_>>().join(", ")
                    );
                }
            }
        }
        Ok(())
    }

    pub(crate) fn region_index(&self, name: &str) -> Option<usize> {
        self.regions.iter().position(|r| r.name == name)
    }

    /// The round trip between two regions (inside one: its own `rtt`). Pairs without a
    /// link get the larger of the two regions' own round trips.
    pub(crate) fn rtt(&self, a: &str, b: &str) -> Duration {
        if a == b {
            return self.regions.iter().find(|r| r.name == a).map_or(Duration::ZERO, |r| r.rtt);
        }
        self.links
            .iter()
            .find(|l| (l.between[0] == a && l.between[1] == b) || (l.between[0] == b && l.between[1] == a))
            .map_or_else(|| self.rtt(a, a).max(self.rtt(b, b)), |l| l.rtt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_topologies_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies");
        let three = Topology::load(&dir.join("three-regions.yaml")).unwrap();
        assert_eq!(three.regions.iter().map(|r| r.nodes).sum::<usize>(), 7);
        assert_eq!(three.rtt("us-east", "ap-south"), Duration::from_millis(160));
        assert_eq!(three.rtt("ap-south", "eu-west"), Duration::from_millis(120));
        assert_eq!(three.rtt("eu-west", "eu-west"), Duration::from_millis(1));
        let local = Topology::load(&dir.join("local.yaml")).unwrap();
        assert_eq!(local.regions[0].nodes, 3);
        assert!(local.config.join("routes").is_dir());
    }
}
