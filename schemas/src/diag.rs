//! Diagnostics: one problem in a config tree, with where it is and what to do about it.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    /// Path of the file as the user named it (directory or path inside the Git tree).
    pub file: String,
    /// 1-based.
    pub line: u32,
    /// 1-based.
    pub column: u32,
    /// What is wrong, in one sentence.
    pub message: String,
    /// What to do about it, when there is something specific to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    /// `file:line:col: error: message (help: ...)`, always on one line so that editors,
    /// `grep` and CI annotations can pick it up.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: error: {}", self.file, self.line, self.column, one_line(&self.message))?;
        if let Some(help) = &self.help {
            write!(f, " (help: {})", one_line(help))?;
        }
        Ok(())
    }
}

/// Collapses any line breaks, so one problem is always one line of output.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
