//! Integration tests of the config format: every validation rule, the canonical hash, and
//! the committed JSON Schema.

mod fuzz;
mod hash;
mod rules;
mod schema;

use schemas::SourceFile;

pub fn files(list: &[(&str, &str)]) -> Vec<SourceFile> {
    list.iter().map(|(p, c)| SourceFile { path: (*p).to_string(), contents: c.as_bytes().to_vec() }).collect()
}

/// A small valid tree that cases extend.
pub const BASE: &str = "\
kind: Upstream
name: users
endpoints:
  - address: 127.0.0.1:9001
---
kind: Upstream
name: orders
endpoints:
  - address: 127.0.0.1:9002
";
