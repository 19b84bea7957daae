//! A position-keeping view of YAML documents.
//!
//! serde_yaml decodes documents into typed resources, but once decoded a value no longer
//! knows where it came from. Semantic errors ("unknown upstream `userz`") must still point
//! at a line and column, so every file is also parsed into this small tree of nodes with
//! positions. The same pass enforces the structural limits (nesting depth, number of
//! nodes, duplicate keys) before serde sees the input.

use std::fmt;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column, as editors and compilers print them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    fn from_marker(m: &Marker) -> Self {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Self { line: clamp(m.line()).max(1), column: clamp(m.col()).saturating_add(1) }
    }
}

fn clamp(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Scalar(String),
    Seq(Vec<Node>),
    /// Keys in document order. Only scalar keys can be looked up by path.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub pos: Pos,
    pub kind: NodeKind,
}

/// One step of a path into a document: a mapping key or a sequence index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

impl<'a> From<&'a str> for Seg<'a> {
    fn from(k: &'a str) -> Self {
        Seg::Key(k)
    }
}

impl From<usize> for Seg<'_> {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// Builds a path into a document: `at!["rules", 0, "matches"]`.
macro_rules! at {
    ($($s:expr),* $(,)?) => { &[$($crate::yaml::Seg::from($s)),*][..] };
}
pub(crate) use at;

impl Node {
    /// The value under `key` when this is a mapping.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => {
                entries.iter().find(|(k, _)| matches!(&k.kind, NodeKind::Scalar(s) if s == key)).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The position of the deepest node along `path` that exists. A path that runs past
    /// the written document (a field left out, so defaulted) ends at its parent, which is
    /// where the user has to add something.
    pub(crate) fn locate(&self, path: &[Seg<'_>]) -> Pos {
        let mut node = self;
        for seg in path {
            let next = match (seg, &node.kind) {
                (Seg::Key(k), NodeKind::Map(_)) => node.get(k),
                (Seg::Index(i), NodeKind::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.pos
    }
}

/// Structural limits on one file, checked while parsing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_depth: usize,
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // The deepest legitimate path (Route → rules → match → headers → entry → value) is
        // about 8 levels; 32 leaves room without letting a hostile file recurse freely.
        Self { max_depth: 32, max_nodes: 2_000_000 }
    }
}

/// A problem found while parsing. `fatal` errors (YAML syntax) stop the whole file,
/// because the parser cannot resynchronise; the others concern one document only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlError {
    pub pos: Pos,
    pub message: String,
    pub help: Option<String>,
}

/// The documents of one file: each is either a tree or the error that spoiled it.
#[derive(Debug)]
pub(crate) struct ParsedFile {
    pub documents: Vec<Result<Node, YamlError>>,
    /// A syntax error after which nothing more could be read.
    pub fatal: Option<YamlError>,
}

pub(crate) fn parse(src: &str, limits: Limits) -> ParsedFile {
    let mut parser = Parser::new_from_str(src);
    let mut documents = Vec::new();
    let mut nodes = 0usize;
    loop {
        let (event, marker) = match parser.next_token() {
            Ok(t) => t,
            Err(e) => {
                return ParsedFile {
                    documents,
                    fatal: Some(YamlError {
                        pos: Pos::from_marker(e.marker()),
                        message: format!("YAML syntax error: {}", e.info()),
                        help: Some("check the indentation and quoting around this place".into()),
                    }),
                }
            }
        };
        match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                let mut b = Builder { parser: &mut parser, limits, nodes: &mut nodes };
                match b.document() {
                    Ok(doc) => documents.push(doc),
                    Err(Stop::Fatal(e)) => return ParsedFile { documents, fatal: Some(e) },
                    Err(Stop::Doc(e)) => {
                        documents.push(Err(e));
                        // Skip the rest of the document so the next one starts cleanly.
                        if let Err(e) = skip_to_document_end(&mut parser) {
                            return ParsedFile { documents, fatal: Some(e) };
                        }
                    }
                }
            }
            _ => {
                let _ = marker;
            }
        }
    }
    ParsedFile { documents, fatal: None }
}

enum Stop {
    Fatal(YamlError),
    Doc(YamlError),
}

struct Builder<'p, 's> {
    parser: &'p mut Parser<std::str::Chars<'s>>,
    limits: Limits,
    nodes: &'p mut usize,
}

impl Builder<'_, '_> {
    fn next(&mut self) -> Result<(Event, Marker), Stop> {
        self.parser.next_token().map_err(|e| {
            Stop::Fatal(YamlError {
                pos: Pos::from_marker(e.marker()),
                message: format!("YAML syntax error: {}", e.info()),
                help: Some("check the indentation and quoting around this place".into()),
            })
        })
    }

    fn document(&mut self) -> Result<Result<Node, YamlError>, Stop> {
        let (ev, m) = self.next()?;
        let root = self.node(ev, m, 1)?;
        match self.next()? {
            (Event::DocumentEnd, _) => Ok(Ok(root)),
            (_, m) => Err(Stop::Fatal(YamlError {
                pos: Pos::from_marker(&m),
                message: "YAML syntax error: expected the end of the document".into(),
                help: None,
            })),
        }
    }

    fn node(&mut self, ev: Event, m: Marker, depth: usize) -> Result<Node, Stop> {
        *self.nodes += 1;
        if *self.nodes > self.limits.max_nodes {
            return Err(Stop::Fatal(YamlError {
                pos: Pos::from_marker(&m),
                message: format!("file has more than {} YAML nodes", self.limits.max_nodes),
                help: Some("split the configuration into several files".into()),
            }));
        }
        if depth > self.limits.max_depth {
            return Err(Stop::Doc(YamlError {
                pos: Pos::from_marker(&m),
                message: format!("document is nested more than {} levels deep", self.limits.max_depth),
                help: Some("no raftgate resource nests this deep; check the indentation".into()),
            }));
        }
        let pos = Pos::from_marker(&m);
        // Anchors and aliases are refused, not expanded: no raftgate resource needs them, and
        // a small file of nested aliases expands to gigabytes in any decoder that follows
        // them. The whole file is refused, so nothing downstream ever sees one.
        let anchored = match &ev {
            Event::Scalar(_, _, anchor, _) | Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                *anchor != 0
            }
            Event::Alias(_) => true,
            _ => false,
        };
        if anchored {
            return Err(Stop::Fatal(YamlError {
                pos,
                message: "YAML anchors and aliases (`&name`, `*name`, `<<: *name`) are not accepted".into(),
                help: Some("write the values out where they are used; no raftgate resource needs them".into()),
            }));
        }
        match ev {
            Event::Scalar(s, ..) => Ok(Node { pos, kind: NodeKind::Scalar(s) }),
            Event::SequenceStart(..) => {
                let mut items = Vec::new();
                loop {
                    let (ev, m) = self.next()?;
                    if ev == Event::SequenceEnd {
                        break;
                    }
                    items.push(self.node(ev, m, depth + 1)?);
                }
                Ok(Node { pos, kind: NodeKind::Seq(items) })
            }
            Event::MappingStart(..) => {
                let mut entries: Vec<(Node, Node)> = Vec::new();
                loop {
                    let (ev, m) = self.next()?;
                    if ev == Event::MappingEnd {
                        break;
                    }
                    let key = self.node(ev, m, depth + 1)?;
                    if let NodeKind::Scalar(k) = &key.kind {
                        if let Some((first, _)) =
                            entries.iter().find(|(e, _)| matches!(&e.kind, NodeKind::Scalar(s) if s == k))
                        {
                            return Err(Stop::Doc(YamlError {
                                pos: key.pos,
                                message: format!("duplicate key `{k}` (first written at line {})", first.pos.line),
                                help: Some("remove one of the two; YAML keys must be unique".into()),
                            }));
                        }
                    }
                    let (ev, m) = self.next()?;
                    let value = self.node(ev, m, depth + 1)?;
                    entries.push((key, value));
                }
                // yaml-rust2 marks a block mapping after its first key; the first key is
                // where a reader sees the mapping begin.
                let pos = entries.first().map_or(pos, |(k, _)| k.pos.min(pos));
                Ok(Node { pos, kind: NodeKind::Map(entries) })
            }
            other => Err(Stop::Fatal(YamlError {
                pos,
                message: format!("YAML syntax error: unexpected {other:?}"),
                help: None,
            })),
        }
    }
}

fn skip_to_document_end(parser: &mut Parser<std::str::Chars<'_>>) -> Result<(), YamlError> {
    loop {
        match parser.next_token() {
            Ok((Event::DocumentEnd | Event::StreamEnd, _)) => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                return Err(YamlError {
                    pos: Pos::from_marker(e.marker()),
                    message: format!("YAML syntax error: {}", e.info()),
                    help: None,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let f = parse("kind: Route\nname: a\nrules:\n  - matches: []\n", Limits::default());
        let doc = f.documents[0].as_ref().unwrap();
        assert_eq!(doc.pos, Pos { line: 1, column: 1 });
        assert_eq!(doc.locate(&["name".into()]), Pos { line: 2, column: 7 });
        assert_eq!(doc.locate(&["rules".into(), 0.into(), "matches".into()]), Pos { line: 4, column: 14 });
        // A missing field points at its parent.
        assert_eq!(doc.locate(&["rules".into(), 0.into(), "nope".into()]), Pos { line: 4, column: 5 });
    }

    #[test]
    fn depth_limit_spoils_only_its_document() {
        let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        let f = parse(&format!("a: {deep}\n---\nb: 2\n"), Limits::default());
        assert!(f.fatal.is_none());
        assert!(f.documents[0].as_ref().unwrap_err().message.contains("nested"));
        assert!(f.documents[1].is_ok());
    }

    #[test]
    fn anchors_and_aliases_refuse_the_file_where_they_appear() {
        // The classic expansion bomb: nine levels of ten aliases each.
        let mut bomb = String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
        for (i, c) in "bcdefghi".chars().enumerate() {
            let prev = (b'a' + i as u8) as char;
            bomb += &format!("{c}: &{c} [{}]\n", vec![format!("*{prev}"); 10].join(","));
        }
        let f = parse(&bomb, Limits::default());
        let e = f.fatal.expect("refused");
        // The anchored value (yaml-rust2 marks it after its `&a`).
        assert_eq!(e.pos, Pos { line: 1, column: 7 });
        assert!(e.message.contains("anchors and aliases"), "{}", e.message);
        for text in ["x: &v 1\ny: 2\n", "base: {a: 1}\nother:\n  <<: *base\n", "---\nkind: Route\n---\nk: *nope\n"] {
            assert!(parse(text, Limits::default()).fatal.is_some(), "{text}");
        }
    }

    #[test]
    fn duplicate_keys_are_reported_where_repeated() {
        let f = parse("a: 1\nb: 2\na: 3\n", Limits::default());
        let e = f.documents[0].as_ref().unwrap_err();
        assert_eq!(e.pos, Pos { line: 3, column: 1 });
        assert!(e.message.contains("duplicate key `a`"));
    }
}
