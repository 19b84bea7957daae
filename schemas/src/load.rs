//! From file contents to typed resources: size and encoding checks, YAML parsing, and
//! strict decoding of each document by its `kind`.

use serde::de::DeserializeOwned;

use crate::diag::{did_you_mean, one_line, Diagnostic};
use crate::model::{Certificate, Route, SecurityPolicy, TlsPolicy, Upstream};
use crate::yaml::{self, Limits, Node, NodeKind, Pos};

/// One file of a config tree, already read into memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The path shown in diagnostics.
    pub path: String,
    pub contents: Vec<u8>,
}

/// Bounds on what a config tree may hold. Oversized input is refused with a diagnostic
/// before it is parsed, so a hostile or broken commit cannot exhaust a node's memory.
#[derive(Debug, Clone, Copy)]
pub struct TreeLimits {
    pub max_file_bytes: usize,
    pub max_tree_bytes: usize,
    pub max_files: usize,
    pub yaml: Limits,
}

impl Default for TreeLimits {
    fn default() -> Self {
        Self {
            // 10,000 routes written out take about 3 MiB; leave room above that.
            max_file_bytes: 8 << 20,
            max_tree_bytes: 64 << 20,
            max_files: 10_000,
            yaml: Limits::default(),
        }
    }
}

/// A decoded resource with the file and document tree it came from, so later checks can
/// point at the exact place of a problem.
#[derive(Debug, Clone)]
pub(crate) struct Loaded<T> {
    pub value: T,
    pub file: String,
    pub root: Node,
}

impl<T> Loaded<T> {
    pub(crate) fn diag(&self, path: &[yaml::Seg<'_>], message: impl Into<String>, help: Option<String>) -> Diagnostic {
        let pos = self.root.locate(path);
        Diagnostic { file: self.file.clone(), line: pos.line, column: pos.column, message: message.into(), help }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Resources {
    pub upstreams: Vec<Loaded<Upstream>>,
    pub routes: Vec<Loaded<Route>>,
    pub certificates: Vec<Loaded<Certificate>>,
    pub security_policies: Vec<Loaded<SecurityPolicy>>,
    pub tls_policies: Vec<Loaded<TlsPolicy>>,
}

pub(crate) const KINDS: [&str; 5] = ["Upstream", "Route", "Certificate", "SecurityPolicy", "TLSPolicy"];

/// Decodes every document of every file. Problems are pushed to `diags`; a document with a
/// problem is left out, the others are still decoded, so one run reports them all.
pub(crate) fn load(files: &[SourceFile], limits: &TreeLimits, diags: &mut Vec<Diagnostic>) -> Resources {
    let mut out = Resources::default();
    let at = |file: &str, pos: Pos, message: String, help: Option<String>| Diagnostic {
        file: file.to_string(),
        line: pos.line,
        column: pos.column,
        message,
        help,
    };
    let start = Pos { line: 1, column: 1 };

    if files.len() > limits.max_files {
        diags.push(at(
            &files[limits.max_files].path,
            start,
            format!("the config tree has {} files, more than the limit of {}", files.len(), limits.max_files),
            Some("merge small files, or point the config path at a narrower directory".into()),
        ));
        return out;
    }
    let total: usize = files.iter().map(|f| f.contents.len()).sum();
    if total > limits.max_tree_bytes {
        diags.push(at(
            &files[0].path,
            start,
            format!("the config tree holds {total} bytes, more than the limit of {}", limits.max_tree_bytes),
            Some("is the config path pointing at the right directory?".into()),
        ));
        return out;
    }

    for file in files {
        if file.contents.len() > limits.max_file_bytes {
            diags.push(at(
                &file.path,
                start,
                format!("file is {} bytes, more than the limit of {}", file.contents.len(), limits.max_file_bytes),
                Some("split it into several files".into()),
            ));
            continue;
        }
        let text = match std::str::from_utf8(&file.contents) {
            Ok(t) => t,
            Err(e) => {
                let pos = pos_of_byte(&file.contents, e.valid_up_to());
                diags.push(at(&file.path, pos, "file is not valid UTF-8".into(), Some("save it as UTF-8".into())));
                continue;
            }
        };
        load_file(&file.path, text, limits.yaml, &mut out, diags);
    }
    out
}

fn pos_of_byte(bytes: &[u8], offset: usize) -> Pos {
    let before = &bytes[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let col_start = before.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[col_start..]).chars().count() + 1;
    Pos { line: u32::try_from(line).unwrap_or(u32::MAX), column: u32::try_from(column).unwrap_or(u32::MAX) }
}

fn load_file(path: &str, text: &str, limits: Limits, out: &mut Resources, diags: &mut Vec<Diagnostic>) {
    let parsed = yaml::parse(text, limits);
    let to_diag = |e: &yaml::YamlError| Diagnostic {
        file: path.to_string(),
        line: e.pos.line,
        column: e.pos.column,
        message: e.message.clone(),
        help: e.help.clone(),
    };
    if let Some(fatal) = &parsed.fatal {
        // A syntax error makes the whole file unreliable: report it alone.
        diags.push(to_diag(fatal));
        return;
    }
    // serde_yaml walks the same documents in the same order (an empty file has none).
    let decoders = serde_yaml::Deserializer::from_str(text);
    for (doc, de) in parsed.documents.iter().zip(decoders) {
        let root = match doc {
            Ok(root) => root,
            Err(e) => {
                diags.push(to_diag(e));
                continue;
            }
        };
        if let NodeKind::Scalar(s) = &root.kind {
            if s.is_empty() || s == "~" || s == "null" {
                continue; // an empty document, e.g. after a trailing `---`
            }
        }
        let diag = |pos: Pos, message: String, help: Option<String>| Diagnostic {
            file: path.to_string(),
            line: pos.line,
            column: pos.column,
            message,
            help,
        };
        if !matches!(root.kind, NodeKind::Map(_)) {
            diags.push(diag(
                root.pos,
                "a resource must be a mapping with `kind` and `name`".into(),
                Some("start the document with `kind: Upstream`, `kind: Route` or `kind: Certificate`".into()),
            ));
            continue;
        }
        let Some(kind_node) = root.get("kind") else {
            diags.push(diag(
                root.pos,
                "missing field `kind`".into(),
                Some("add `kind: Upstream`, `kind: Route` or `kind: Certificate`".into()),
            ));
            continue;
        };
        let loaded = |file: &str| (file.to_string(), root.clone());
        match kind_node.as_str() {
            Some("Upstream") => {
                if let Some(v) = decode::<Upstream>(de, path, diags) {
                    let (file, root) = loaded(path);
                    out.upstreams.push(Loaded { value: v, file, root });
                }
            }
            Some("Route") => {
                if let Some(v) = decode::<Route>(de, path, diags) {
                    let (file, root) = loaded(path);
                    out.routes.push(Loaded { value: v, file, root });
                }
            }
            Some("Certificate") => {
                if let Some(v) = decode::<Certificate>(de, path, diags) {
                    let (file, root) = loaded(path);
                    out.certificates.push(Loaded { value: v, file, root });
                }
            }
            Some("SecurityPolicy") => {
                if let Some(v) = decode::<SecurityPolicy>(de, path, diags) {
                    let (file, root) = loaded(path);
                    out.security_policies.push(Loaded { value: v, file, root });
                }
            }
            Some("TLSPolicy") => {
                if let Some(v) = decode::<TlsPolicy>(de, path, diags) {
                    let (file, root) = loaded(path);
                    out.tls_policies.push(Loaded { value: v, file, root });
                }
            }
            other => {
                let written = other.unwrap_or("(not a string)");
                let hint = did_you_mean(written, KINDS.iter().copied())
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                diags.push(diag(
                    kind_node.pos,
                    format!("unknown kind `{written}`"),
                    Some(format!("{hint}kind must be one of {}", KINDS.join(", "))),
                ));
            }
        }
    }
}

fn decode<T: DeserializeOwned>(de: serde_yaml::Deserializer<'_>, path: &str, diags: &mut Vec<Diagnostic>) -> Option<T> {
    match T::deserialize(de) {
        Ok(v) => Some(v),
        Err(e) => {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            let text = e.to_string();
            // serde_yaml appends " at line L column C"; the location has its own columns.
            let message = match text.rfind(" at line ") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            let help = if message.contains("unknown field") {
                Some("remove the field or fix its spelling; schemas/raftgate.schema.json lists every field".into())
            } else if message.contains("missing field") {
                Some("add the field; schemas/raftgate.schema.json documents it".into())
            } else if message.contains("invalid type") {
                Some("check the value's type against schemas/raftgate.schema.json".into())
            } else if message.contains("unknown variant") {
                Some("use one of the values listed".into())
            } else {
                None
            };
            diags.push(Diagnostic {
                file: path.to_string(),
                line: u32::try_from(line).unwrap_or(u32::MAX),
                column: u32::try_from(column).unwrap_or(u32::MAX),
                message: one_line(&message),
                help,
            });
            None
        }
    }
}
