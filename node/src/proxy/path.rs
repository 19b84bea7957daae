//! The request path as routing and the upstream see it: bounded in length, dot segments
//! resolved, and escaped slashes and backslashes handled by the node's chosen action.
//!
//! The danger is a path that the gateway and the upstream read differently: `%2F` is one
//! segment to the router and a separator to many backends, `\` is a separator to IIS and
//! to Node's URL parser, `..;` is a parent segment to Tomcat. A prefix rule (or, later, an
//! authorization policy) on `/public` must not let `/public%2F..%2Fadmin` through.

use std::borrow::Cow;

/// Longer paths are answered with 414: routing stays linear in the path's length, and no
/// real API path comes near it.
pub const MAX_PATH_BYTES: usize = 8 * 1024;

/// What to do with `%2F`, `%5C` and `\` in a path (`--escaped-slashes`). The choices are
/// Envoy's `path_with_escaped_slashes_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EscapedSlashes {
    /// Answer 400 (the default): no upstream ever sees such a path.
    #[default]
    Reject,
    /// Turn each into `/`, resolve dot segments, and route and forward the result.
    Unescape,
    /// As `unescape`, but answer with a 308 redirect to the result, so the client
    /// (and its caches) learn the canonical path.
    Redirect,
    /// Leave the path as sent: escaped slashes are part of their segment, as RFC 3986 says.
    /// For upstreams that need them (object keys with slashes); it is then the upstream's
    /// job not to decode them into separators.
    Keep,
}

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    TooLong,
    Bad(&'static str),
}

/// A usable path, or where to redirect the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Clean<'a> {
    Path(Cow<'a, str>),
    Redirect(String),
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

fn well_escaped(path: &str) -> bool {
    let b = path.as_bytes();
    b.iter().enumerate().all(|(i, c)| {
        *c != b'%'
            || (b.get(i + 1).is_some_and(u8::is_ascii_hexdigit) && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

/// Percent-encoded unreserved characters (letters, digits, `-`, `_`, `~`) decoded, as
/// RFC 3986 §6.2.2.2 says they are equivalent to. `%2E` stays: a dot segment in disguise
/// is refused, not resolved.
fn decode_unreserved(path: Cow<'_, str>) -> Cow<'_, str> {
    let b = path.as_bytes();
    let unreserved = |i: usize| -> Option<u8> {
        let hex = |c: u8| (c as char).to_digit(16);
        let v = u8::try_from(hex(*b.get(i + 1)?)? * 16 + hex(*b.get(i + 2)?)?).ok()?;
        (v.is_ascii_alphanumeric() || matches!(v, b'-' | b'_' | b'~')).then_some(v)
    };
    if !b.iter().enumerate().any(|(i, c)| *c == b'%' && unreserved(i).is_some()) {
        return path;
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], unreserved(i)) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    // Only ASCII was decoded into a valid UTF-8 string: still valid.
    Cow::Owned(String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

fn has_escaped_slash(path: &str) -> bool {
    path.contains('\\')
        || path.as_bytes().windows(3).any(|w| w[0] == b'%' && matches!(&w[1..], b"2f" | b"2F" | b"5c" | b"5C"))
}

/// The path routing sees and the upstream receives.
pub fn clean(path: &str, escaped: EscapedSlashes) -> Result<Clean<'_>, PathError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if !path.starts_with('/') {
        return Err(PathError::Bad("the request path must start with `/`"));
    }
    // Every `%` starts an escape (RFC 3986 §2.1). A bare one would let decoding below make
    // new escapes out of old ones: `/%%32%66` would become `/%2f` after the check for
    // escaped slashes.
    if !well_escaped(path) {
        return Err(PathError::Bad("a `%` in the path must be followed by two hex digits (write `%25` for `%`)"));
    }
    let mut unescaped = false;
    let path: Cow<'_, str> = if has_escaped_slash(path) {
        match escaped {
            EscapedSlashes::Reject => {
                return Err(PathError::Bad("escaped slashes and backslashes are not allowed in the path"));
            }
            EscapedSlashes::Keep => Cow::Borrowed(path),
            EscapedSlashes::Unescape | EscapedSlashes::Redirect => {
                unescaped = true;
                let mut out = path.replace('\\', "/");
                for from in ["%2f", "%2F", "%5c", "%5C"] {
                    out = out.replace(from, "/");
                }
                // Runs of slashes become one: `/%2Fevil.com` must not turn into `//evil.com`,
                // which a browser following the redirect reads as another site.
                Cow::Owned(merge_slashes(&out))
            }
        }
    } else {
        Cow::Borrowed(path)
    };
    // `//admin` and `/%61dmin` are `/admin` to most upstreams (and to nginx's defaults):
    // routing, and any policy on `/admin`, must see them so too.
    let path = if path.contains("//") { Cow::Owned(merge_slashes(&path)) } else { path };
    let path = decode_unreserved(path);
    let resolved = resolve_dots(path)?;
    if unescaped && escaped == EscapedSlashes::Redirect {
        return Ok(Clean::Redirect(resolved.into_owned()));
    }
    Ok(Clean::Path(resolved))
}

/// What a segment is once `;parameters` and `%2e` are read as Tomcat and others read them:
/// a dot segment in disguise is refused, a plain one resolved.
fn dot_kind(seg: &str) -> Result<Option<bool>, PathError> {
    match seg {
        "." => return Ok(Some(false)),
        ".." => return Ok(Some(true)),
        _ => {}
    }
    let name = seg.split(';').next().unwrap_or("");
    // A disguised dot segment is at most `%2e%2e` (6 bytes) of dots and `%2e`s: anything
    // longer, or without a `.` or `%`, is an ordinary name (no allocation on this path,
    // which every segment of every request takes).
    if name.len() > 6 || !name.bytes().any(|b| b == b'.' || b == b'%') {
        return Ok(None);
    }
    let lower = name.to_ascii_lowercase();
    let decoded = lower.replace("%2e", ".");
    if !decoded.is_empty() && decoded.chars().all(|c| c == '.') && decoded.len() <= 2 {
        return Err(PathError::Bad("disguised dot segments (`%2e`, `..;`) are not allowed in the path"));
    }
    Ok(None)
}

/// Resolves `.` and `..` segments (RFC 3986 §5.2.4) so that routing sees the path the
/// upstream will see.
fn resolve_dots(path: Cow<'_, str>) -> Result<Cow<'_, str>, PathError> {
    let mut any = false;
    for seg in path.split('/') {
        any |= dot_kind(seg)?.is_some();
    }
    if !any {
        return Ok(path);
    }
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = path[1..].split('/').collect();
    let last = segs.len() - 1;
    for (i, seg) in segs.iter().enumerate() {
        match dot_kind(seg)? {
            Some(parent) => {
                if parent {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            None => out.push(seg),
        }
    }
    Ok(Cow::Owned(format!("/{}", out.join("/"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use EscapedSlashes::*;

    fn path(p: &str, e: EscapedSlashes) -> Result<String, PathError> {
        match clean(p, e)? {
            Clean::Path(p) => Ok(p.into_owned()),
            Clean::Redirect(to) => Ok(format!("redirect {to}")),
        }
    }

    #[test]
    fn dot_segments_are_resolved_and_disguised_ones_refused() {
        assert_eq!(path("/a/b", Reject).unwrap(), "/a/b");
        assert_eq!(path("/a/../b", Reject).unwrap(), "/b");
        assert_eq!(path("/a/./b/..", Reject).unwrap(), "/a/");
        assert_eq!(path("/../../etc", Reject).unwrap(), "/etc");
        assert_eq!(path("/a/...", Reject).unwrap(), "/a/...", "three dots are a name");
        assert_eq!(path("/a;v=1/b", Reject).unwrap(), "/a;v=1/b", "parameters on names are kept");
        for bad in ["/a/%2e%2E/admin", "/a/%2e/b", "/a/..;/admin", "/a/.;x/b", "/a/.%2e;/b"] {
            assert!(matches!(clean(bad, Keep), Err(PathError::Bad(_))), "{bad}");
        }
        assert!(matches!(clean("a", Reject), Err(PathError::Bad(_))));
    }

    #[test]
    fn escaped_slashes_follow_the_action() {
        for p in ["/public%2F..%2Fadmin", "/a%2fb", "/a%5Cb", "/a\\b"] {
            assert!(matches!(clean(p, Reject), Err(PathError::Bad(_))), "{p}");
        }
        assert_eq!(path("/public%2F..%2Fadmin", Unescape).unwrap(), "/admin");
        assert_eq!(path("/a%5cb\\c", Unescape).unwrap(), "/a/b/c");
        // Never a protocol-relative redirect to another site.
        assert_eq!(path("/%2Fevil.com", Redirect).unwrap(), "redirect /evil.com");
        assert_eq!(path("/%5C%5Cevil.com/x", Unescape).unwrap(), "/evil.com/x");
        assert_eq!(path("/public%2F..%2Fadmin", Redirect).unwrap(), "redirect /admin");
        assert_eq!(path("/a/b", Redirect).unwrap(), "/a/b", "nothing to redirect");
        assert_eq!(path("/files/a%2Fb", Keep).unwrap(), "/files/a%2Fb");
        assert_eq!(path("/a%2Fb/../c", Keep).unwrap(), "/c", "kept escapes are part of their segment");
    }

    #[test]
    fn equivalent_spellings_are_one_path() {
        for (sent, routed) in [
            ("//admin", "/admin"),
            ("/a//b///c", "/a/b/c"),
            ("/%61dmin", "/admin"),
            ("/%41%2d%5F%7e%30", "/A-_~0"),
            ("/a%20b", "/a%20b"),
            ("/%2541", "/%2541"),
            ("/%25%32%66", "/%252f"),
            ("/x/%2e%2e", "refused"),
            ("/%", "refused"),
            ("/%6", "refused"),
            ("/%zz", "refused"),
            // Decoding must not make escapes: this is `/public%2f..%2fadmin` after it.
            ("/public%%32%66..%%32%66admin", "refused"),
            ("/%%36%31dmin", "refused"),
        ] {
            let got = path(sent, Reject).unwrap_or_else(|_| "refused".into());
            assert_eq!(got, routed, "{sent}");
        }
    }

    #[test]
    fn long_paths_are_refused() {
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        assert_eq!(clean(&long, Reject), Err(PathError::TooLong));
        let fits = format!("/{}", "a".repeat(MAX_PATH_BYTES - 1));
        assert!(clean(&fits, Reject).is_ok());
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use testkit::fuzz::{self, proptest::prelude::*};

    const ACTIONS: [EscapedSlashes; 4] =
        [EscapedSlashes::Reject, EscapedSlashes::Unescape, EscapedSlashes::Redirect, EscapedSlashes::Keep];

    /// The properties every cleaned path has, whatever was sent: it starts with `/`, holds no
    /// dot segment, no escaped slash unless kept, and cleaning it again changes nothing.
    #[test]
    fn fuzz_path_clean() {
        // Paths built from the characters that matter, and raw strings of any kind.
        let pieces = prop_oneof![
            Just("/"),
            Just("."),
            Just(".."),
            Just("%2e"),
            Just("%2E"),
            Just("%2f"),
            Just("%2F"),
            Just("%5c"),
            Just("%5C"),
            Just("\\"),
            Just(";"),
            Just("a"),
            Just("%"),
            Just("%25"),
            Just("%61"),
            Just("%7E"),
            // Escaped hex digits: after a bare `%` they would spell `%2f` once decoded.
            Just("%32"),
            Just("%66"),
            Just("%46"),
            Just("%35"),
            Just("%63"),
            Just("é"),
        ];
        let built = prop::collection::vec(pieces, 0..24).prop_map(|p| format!("/{}", p.concat()));
        let any = ".{0,40}";
        let strategy = (prop_oneof![built, any.prop_map(|s: String| s)], 0..ACTIONS.len());
        fuzz::run("path_clean", file!(), strategy, |(input, a)| {
            let action = ACTIONS[a];
            let out = match clean(&input, action) {
                Err(_) => return Ok(()),
                Ok(Clean::Path(p)) => p.into_owned(),
                Ok(Clean::Redirect(to)) => {
                    prop_assert_eq!(action, EscapedSlashes::Redirect);
                    to
                }
            };
            prop_assert!(out.starts_with('/'), "{out}");
            prop_assert!(out.split('/').all(|s| s != "." && s != ".."), "{out}");
            prop_assert!(!out.contains("//"), "{out}");
            if action != EscapedSlashes::Keep {
                prop_assert!(!has_escaped_slash(&out), "{out}");
            }
            if matches!(action, EscapedSlashes::Unescape | EscapedSlashes::Redirect) && has_escaped_slash(&input) {
                prop_assert!(!out.starts_with("//"), "unescaping made a protocol-relative path: {out}");
            }
            prop_assert_eq!(clean(&out, action), Ok(Clean::Path(std::borrow::Cow::Borrowed(out.as_str()))));
            Ok(())
        });
    }
}
