//! The regular expressions of a config, built the same way where they are validated (the
//! compiler, on the leader and in `raftgate validate`) and where they are used (each node's
//! router), so that a config the compiler accepts is one every node can build.
//!
//! Every pattern is anchored (it matches the whole path or value) and bounded: one pattern
//! compiles to at most `MAX_REGEX_BYTES`, and the set of path patterns one host name's
//! routes share, which the router matches in one pass, to at most `MAX_REGEX_SET_BYTES`.

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

/// The compiled size one pattern may reach.
pub const MAX_REGEX_BYTES: usize = 1 << 20;
/// The compiled size of one host name's path patterns together.
pub const MAX_REGEX_SET_BYTES: usize = 16 << 20;

fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

/// One pattern, matching whole values.
pub fn value_regex(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(&anchored(pattern)).size_limit(MAX_REGEX_BYTES).build()
}

/// The path patterns of one host name, matched together.
pub fn path_regex_set<S: AsRef<str>>(patterns: &[S]) -> Result<RegexSet, regex::Error> {
    RegexSetBuilder::new(patterns.iter().map(|p| anchored(p.as_ref())))
        .size_limit(MAX_REGEX_SET_BYTES)
        .dfa_size_limit(MAX_REGEX_SET_BYTES)
        .build()
}

/// The last line of a regex error: the reason, without the pattern echoed above it.
pub fn reason(e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(limit) => format!("it compiles to more than {limit} bytes"),
        e => {
            let why = e.to_string();
            let line = why.lines().rev().find(|l| l.trim_start().starts_with("error:")).unwrap_or(&why);
            line.trim().trim_start_matches("error:").trim().to_string()
        }
    }
}
