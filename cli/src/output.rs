//! Output: every command builds one serializable view, printed as a table for people or as
//! JSON/YAML for scripts (`-o`). Tables fit 80 columns: long cells wrap.

use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

/// Terminal width tables are laid out for.
pub const WIDTH: u16 = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// Prints `view` in `format`; `table` renders it for people.
pub fn print<T: Serialize>(format: Format, view: &T, table: impl FnOnce(&T) -> String) {
    match format {
        Format::Table => print!("{}", table(view)),
        Format::Json => println!("{}", serde_json::to_string_pretty(view).expect("views serialize")),
        Format::Yaml => print!("{}", yaml(view)),
    }
}

/// YAML through JSON values: serde_yaml cannot write nested enums directly.
pub fn yaml<T: Serialize>(view: &T) -> String {
    let value = serde_json::to_value(view).expect("views serialize");
    serde_yaml::to_string(&value).expect("JSON values serialize as YAML")
}

/// A borderless table, kubectl style, at most `WIDTH` columns wide.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(WIDTH)
        .set_header(header.iter().copied());
    for row in rows {
        t.add_row(row);
    }
    // The preset pads every cell by one space on each side: trim the outer edges.
    let mut out = String::new();
    for line in t.to_string().lines() {
        let line = line.strip_prefix(' ').unwrap_or(line).trim_end();
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `text` wrapped to `WIDTH` columns, continuation lines indented by `indent` spaces.
pub fn wrap(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let opts = textwrap::Options::new(usize::from(WIDTH)).initial_indent(&pad).subsequent_indent(&pad);
    textwrap::fill(text, opts).trim_start().to_string()
}

/// The first 12 characters of a commit (enough to be unique in any real repository).
pub fn short(commit: &str) -> String {
    commit.chars().take(12).collect()
}

/// `1d2h`, `3h4m`, `5m6s`, `7s`.
pub fn age(seconds: u64) -> String {
    let (d, h, m, s) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// Seconds since the Unix epoch now.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A Unix time as UTC RFC 3339 (`2026-11-26T10:19:02Z`).
pub fn utc(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_ages_read_well() {
        assert_eq!(utc(1_795_688_342), "2026-11-26T10:19:02Z");
        assert_eq!(age(7), "7s");
        assert_eq!(age(306), "5m6s");
        assert_eq!(age(3 * 3600 + 240), "3h4m");
        assert_eq!(age(86_400 + 7200), "1d2h");
    }
}
