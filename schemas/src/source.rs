//! Reading a config tree from a directory or from a commit of a Git repository.
//!
//! This is the only part of `schemas` that touches the file system, and it only reads. Both
//! readers return files sorted by path, so diagnostics come out in a stable order, and
//! enforce the tree limits before reading contents, so an oversized file is refused without
//! being loaded.

use std::path::{Path, PathBuf};

use crate::load::{SourceFile, TreeLimits};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(
        "{path} is a symbolic link; raftgate does not follow links in a config tree (replace it with the file itself)"
    )]
    Symlink { path: String },
    #[error("{0}")]
    Git(String),
    #[error("{path}: {why}")]
    Limit { path: String, why: String },
}

/// Reads every `*.yaml`/`*.yml` file under `root`, recursively, skipping hidden entries
/// (`.git`, editor files). Paths in the result are `root` joined with the relative path,
/// as the user would type them.
pub fn read_dir(root: &Path, limits: &TreeLimits) -> Result<Vec<SourceFile>, SourceError> {
    let meta =
        std::fs::metadata(root).map_err(|source| SourceError::Io { path: root.display().to_string(), source })?;
    if !meta.is_dir() {
        return Err(SourceError::Io {
            path: root.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a directory"),
        });
    }
    let mut paths = Vec::new();
    walk(root, &mut paths)?;
    paths.sort();
    let mut files = Vec::new();
    let mut total = 0usize;
    for path in paths {
        let shown = path.display().to_string();
        let len = std::fs::metadata(&path).map_err(|source| SourceError::Io { path: shown.clone(), source })?.len();
        check_size(&shown, len, &mut total, files.len(), limits)?;
        let contents = std::fs::read(&path).map_err(|source| SourceError::Io { path: shown.clone(), source })?;
        files.push(SourceFile { path: shown, contents });
    }
    Ok(files)
}

fn check_size(path: &str, len: u64, total: &mut usize, count: usize, limits: &TreeLimits) -> Result<(), SourceError> {
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > limits.max_file_bytes {
        return Err(SourceError::Limit {
            path: path.into(),
            why: format!("file is {len} bytes, more than the limit of {}; split it", limits.max_file_bytes),
        });
    }
    *total = total.saturating_add(len);
    if *total > limits.max_tree_bytes {
        return Err(SourceError::Limit {
            path: path.into(),
            why: format!("the config tree is larger than {} bytes", limits.max_tree_bytes),
        });
    }
    if count >= limits.max_files {
        return Err(SourceError::Limit {
            path: path.into(),
            why: format!("more than {} config files", limits.max_files),
        });
    }
    Ok(())
}

/// What a directory's config files look like without reading them: each file's path,
/// size, modification time and inode, in path order. A watcher compares stamps to skip
/// re-reading (and recompiling) a tree that did not change; see [`DirStamp::settled`] for
/// when an equal stamp is not proof enough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirStamp {
    files: Vec<(PathBuf, u64, std::time::SystemTime, u64)>,
}

impl DirStamp {
    /// Whether every file was last modified at least `margin` before `now`. A file written
    /// again at the same size within the file system's timestamp granularity (a few
    /// milliseconds on ext4, seconds on some) keeps its stamp; only a settled tree's stamp
    /// can be trusted to say nothing changed.
    pub fn settled(&self, now: std::time::SystemTime, margin: std::time::Duration) -> bool {
        self.files.iter().all(|(_, _, modified, _)| now.duration_since(*modified).is_ok_and(|age| age >= margin))
    }
}

/// Stamps the config files under `root`: the same files [`read_dir`] would read, not their
/// contents.
pub fn dir_stamp(root: &Path) -> Result<DirStamp, SourceError> {
    use std::os::unix::fs::MetadataExt;
    let mut paths = Vec::new();
    walk(root, &mut paths)?;
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let meta =
            std::fs::metadata(&path).map_err(|source| SourceError::Io { path: path.display().to_string(), source })?;
        let modified =
            meta.modified().map_err(|source| SourceError::Io { path: path.display().to_string(), source })?;
        files.push((path, meta.len(), modified, meta.ino()));
    }
    Ok(DirStamp { files })
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), SourceError> {
    let io = |source| SourceError::Io { path: dir.display().to_string(), source };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let ft = entry.file_type().map_err(io)?;
        if ft.is_dir() {
            walk(&path, out)?;
        } else if crate::is_config_file(&name) {
            if ft.is_symlink() {
                return Err(SourceError::Symlink { path: path.display().to_string() });
            }
            out.push(path);
        }
    }
    Ok(())
}

/// Reads the config files of commit `rev` (any revision Git understands: a branch, a tag,
/// a sha) from the repository at `repo`, under `subdir` of its tree, without a checkout.
pub fn read_git(
    repo: &Path,
    rev: &str,
    subdir: Option<&str>,
    limits: &TreeLimits,
) -> Result<Vec<SourceFile>, SourceError> {
    let repository = git2::Repository::open(repo)
        .map_err(|e| SourceError::Git(format!("cannot open Git repository {}: {}", repo.display(), e.message())))?;
    let commit = repository
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| SourceError::Git(format!("cannot find commit `{rev}` in {}: {}", repo.display(), e.message())))?;
    read_commit(&repository, &commit, subdir, limits)
}

/// Reads the config files under `subdir` of a commit's tree.
pub fn read_commit(
    repo: &git2::Repository,
    commit: &git2::Commit<'_>,
    subdir: Option<&str>,
    limits: &TreeLimits,
) -> Result<Vec<SourceFile>, SourceError> {
    let git = |e: git2::Error| SourceError::Git(e.message().to_string());
    let root = commit.tree().map_err(git)?;
    let subdir = subdir.map(|s| s.trim_matches('/')).filter(|s| !s.is_empty() && *s != ".");
    let tree = match subdir {
        None => root,
        Some(dir) => {
            let entry = root
                .get_path(Path::new(dir))
                .map_err(|_| SourceError::Git(format!("commit {} has no directory `{dir}`", short(commit.id()))))?;
            entry
                .to_object(repo)
                .and_then(|o| o.peel_to_tree())
                .map_err(|_| SourceError::Git(format!("`{dir}` in commit {} is not a directory", short(commit.id()))))?
        }
    };
    let prefix = subdir.map(|d| format!("{d}/")).unwrap_or_default();
    let mut found: Vec<(String, git2::Oid, i32)> = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name().unwrap_or("");
        if name.starts_with('.') {
            return git2::TreeWalkResult::Skip;
        }
        if entry.kind() == Some(git2::ObjectType::Blob) && crate::is_config_file(name) {
            found.push((format!("{prefix}{dir}{name}"), entry.id(), entry.filemode()));
        }
        git2::TreeWalkResult::Ok
    })
    .map_err(git)?;
    found.sort();
    let mut files = Vec::new();
    let mut total = 0usize;
    for (path, oid, mode) in found {
        if mode == 0o120000 {
            return Err(SourceError::Symlink { path });
        }
        let blob = repo.find_blob(oid).map_err(git)?;
        check_size(&path, blob.size() as u64, &mut total, files.len(), limits)?;
        files.push(SourceFile { path, contents: blob.content().to_vec() });
    }
    Ok(files)
}

fn short(oid: git2::Oid) -> String {
    oid.to_string()[..12].to_string()
}
