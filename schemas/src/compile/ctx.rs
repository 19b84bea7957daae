//! The per-resource checking context shared by every pass: where problems are reported,
//! whether the resource failed, and the field checks all resource kinds use (names, host
//! names, durations, ranges, headers, regular expressions).

use std::str::FromStr;

use crate::diag::{one_line, Diagnostic};
use crate::duration::Duration;
use crate::load::Loaded;
use crate::model::PemSource;
use crate::snapshot::PemSourceSpec;
use crate::yaml::{at, Seg};

use super::limits::MAX_HOSTNAMES;
use super::names::{valid_hostname, valid_name};

/// Checks one resource. `failed` records whether any problem was found, in which case the
/// partially compiled value is dropped.
pub(super) struct Ctx<'a, T> {
    pub(super) res: &'a Loaded<T>,
    pub(super) diags: &'a mut Vec<Diagnostic>,
    pub(super) failed: bool,
}

impl<T> Ctx<'_, T> {
    pub(super) fn err(&mut self, path: &[Seg<'_>], message: impl Into<String>, help: impl Into<Option<String>>) {
        self.failed = true;
        self.diags.push(self.res.diag(path, message, help.into()));
    }

    pub(super) fn name(&mut self, name: &str, what: &str) {
        if let Err(why) = valid_name(name) {
            self.err(at!["name"], format!("invalid {what} name `{name}`: {why}"), Some(
                "use lowercase letters, digits and `-`, starting and ending with a letter or digit, at most 63 characters"
                    .to_string(),
            ));
        }
    }

    pub(super) fn hostname(&mut self, path: &[Seg<'_>], h: &str, allow_wildcard: bool) -> String {
        match valid_hostname(h, allow_wildcard) {
            Ok(h) => h,
            Err(why) => {
                self.err(path, format!("invalid host name `{h}`: {why}"), None);
                String::new()
            }
        }
    }

    pub(super) fn hostnames(&mut self, hostnames: &[String]) -> Vec<String> {
        if hostnames.len() > MAX_HOSTNAMES {
            self.err(
                at!["hostnames"],
                format!("more than {MAX_HOSTNAMES} host names"),
                Some("split the resource".into()),
            );
        }
        let mut out: Vec<String> =
            hostnames.iter().enumerate().map(|(i, h)| self.hostname(at!["hostnames", i], h, true)).collect();
        out.sort();
        out.dedup();
        out
    }

    pub(super) fn positive(&mut self, path: &[Seg<'_>], d: Duration, what: &str) -> Duration {
        if d.as_millis() == 0 {
            self.err(path, format!("{what} must be longer than 0s"), None);
        }
        d
    }

    pub(super) fn range(&mut self, path: &[Seg<'_>], v: u32, lo: u32, hi: u32, what: &str) -> u32 {
        if v < lo || v > hi {
            self.err(path, format!("{what} is {v}; it must be between {lo} and {hi}"), None);
        }
        v
    }

    pub(super) fn header_name(&mut self, path: &[Seg<'_>], name: &str) -> String {
        if http::HeaderName::from_str(name).is_err() {
            self.err(
                path,
                format!("`{name}` is not a valid HTTP header name"),
                Some("header names are letters, digits and !#$%&'*+-.^_`|~ with no spaces or colons".to_string()),
            );
        }
        name.to_ascii_lowercase()
    }

    pub(super) fn header_value(&mut self, path: &[Seg<'_>], value: &str) {
        if http::HeaderValue::from_str(value).is_err() {
            self.err(path, "header value contains a control character or line break".to_string(), None);
        }
    }

    pub(super) fn regex(&mut self, path: &[Seg<'_>], pattern: &str) {
        if let Err(e) = crate::patterns::value_regex(pattern) {
            self.err(
                path,
                format!("invalid regular expression `{pattern}`: {}", one_line(&crate::patterns::reason(&e))),
                Some("the syntax is that of the Rust regex crate (RE2-like, no look-around or back-references)".into()),
            );
        }
    }

    /// A PEM file or environment variable of each node; PEM text in the config is refused.
    pub(super) fn pem_source(&mut self, field: &[Seg<'_>], src: &PemSource) -> PemSourceSpec {
        let looks_like_pem = |s: &Option<String>| s.as_deref().is_some_and(|v| v.contains("-----BEGIN"));
        if looks_like_pem(&src.file) || looks_like_pem(&src.env) {
            self.err(
                field,
                "PEM text is written in the config: keys and certificates never go into Git",
                Some("put the PEM on each node and reference it with `file: /path` or `env: VARIABLE`".to_string()),
            );
            return PemSourceSpec::File(String::new());
        }
        match (&src.file, &src.env) {
            (Some(f), None) => {
                if !f.starts_with('/') {
                    self.err(
                        &[field, at!["file"]].concat(),
                        format!("`{f}` is not an absolute path"),
                        Some("write the absolute path of the PEM file as it is on every node".to_string()),
                    );
                }
                PemSourceSpec::File(f.clone())
            }
            (None, Some(e)) => {
                let ok = !e.is_empty()
                    && !e.starts_with(|c: char| c.is_ascii_digit())
                    && e.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                if !ok {
                    self.err(
                        &[field, at!["env"]].concat(),
                        format!("`{e}` is not an environment variable name"),
                        Some("use upper-case letters, digits and `_`, not starting with a digit".to_string()),
                    );
                }
                PemSourceSpec::Env(e.clone())
            }
            _ => {
                self.err(field, "give exactly one of `file` or `env`", None);
                PemSourceSpec::File(String::new())
            }
        }
    }
}
