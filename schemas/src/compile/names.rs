//! Names and addresses: the leaf checks of resource names, host names and endpoint
//! addresses, and the check that no two resources of a kind share a name.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::diag::Diagnostic;
use crate::load::Loaded;
use crate::yaml::at;

pub(super) fn check_unique_names<T>(
    items: &[Loaded<T>],
    name: impl Fn(&T) -> &String,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) {
    let mut seen: HashMap<&str, &Loaded<T>> = HashMap::new();
    for item in items {
        let n = name(&item.value);
        if let Some(first) = seen.get(n.as_str()) {
            let pos = first.root.locate(at!["name"]);
            diags.push(item.diag(
                at!["name"],
                format!("duplicate {what} name `{n}`: already defined at {}:{pos}", first.file),
                Some(format!("rename one of them; {what} names must be unique")),
            ));
        } else {
            seen.insert(n, item);
        }
    }
}

/// Resource names: DNS-label style, so they are safe in metrics labels, URLs and file names.
pub(super) fn valid_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 63 {
        return Err("it is longer than 63 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err("it contains a character other than a-z, 0-9 and `-`");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("it starts or ends with `-`");
    }
    Ok(())
}

/// A DNS host name, optionally with one leading `*.` label. Returns it lower-cased.
pub(super) fn valid_hostname(h: &str, allow_wildcard: bool) -> Result<String, String> {
    let lower = h.to_ascii_lowercase();
    let rest = match lower.strip_prefix("*.") {
        Some(rest) if allow_wildcard => rest,
        Some(_) => return Err("a wildcard is not allowed here".into()),
        None => &lower,
    };
    if rest.is_empty() {
        return Err("it is empty".into());
    }
    if rest.parse::<IpAddr>().is_ok() {
        return Err("an IP address is not a host name; host names match the HTTP Host header".into());
    }
    if rest.contains(':') {
        return Err("host names carry no port".into());
    }
    if lower.len() > 253 {
        return Err("it is longer than 253 characters".into());
    }
    if rest.split('.').any(|l| l == "*") {
        return Err("`*` is only allowed as the whole first label (`*.example.com`)".into());
    }
    check_labels(rest, false)?;
    Ok(lower)
}

/// The labels of a DNS name: 1–63 letters, digits and inner `-`, and with `underscore` a
/// leading `_` (as in SRV names).
fn check_labels(name: &str, underscore: bool) -> Result<(), String> {
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty label (two dots in a row, or a dot at an end)".into());
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters".into());
        }
        let inner = if underscore { label.strip_prefix('_').unwrap_or(label) } else { label };
        if inner.is_empty()
            || !inner.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || inner.starts_with('-')
            || inner.ends_with('-')
        {
            let also = if underscore { " (and a leading `_`)" } else { "" };
            return Err(format!("label `{label}` may only hold letters, digits and inner `-`{also}"));
        }
    }
    Ok(())
}

/// A name to look up in DNS (lower-cased, no trailing dot): like a host name, but labels
/// may start with `_` (`_http._tcp.users.internal`, as SRV names do).
pub(super) fn valid_dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err("an IP address is not a name; list it under `endpoints` instead".into());
    }
    if name.len() > 253 {
        return Err("it is longer than 253 characters".into());
    }
    check_labels(name, true)
}

/// `host:port` for an endpoint. Returns it in canonical form (lower-case host).
pub(super) fn valid_address(a: &str) -> Result<String, String> {
    if let Ok(sa) = SocketAddr::from_str(a) {
        if sa.port() == 0 {
            return Err("port 0 is not a port".into());
        }
        return Ok(sa.to_string());
    }
    let Some((host, port)) = a.rsplit_once(':') else {
        return Err("it has no port".into());
    };
    if host.contains(':') && !host.starts_with('[') {
        return Err("an IPv6 address needs brackets, e.g. `[2001:db8::1]:80`".into());
    }
    let port: u16 = port.parse().map_err(|_| format!("`{port}` is not a port number (1 to 65535)"))?;
    if port == 0 {
        return Err("port 0 is not a port".into());
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(format!("{host}:{port}"));
    }
    let host = valid_hostname(host, false).map_err(|e| format!("the host is not valid: {e}"))?;
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(valid_address("127.0.0.1:80").unwrap(), "127.0.0.1:80");
        assert_eq!(valid_address("[::1]:443").unwrap(), "[::1]:443");
        assert_eq!(valid_address("Users.Internal:8080").unwrap(), "users.internal:8080");
        for bad in ["127.0.0.1", "::1:80", "host:0", "host:99999", "host:http", "bad_host:80", ":80", "a..b:80"] {
            assert!(valid_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostnames() {
        assert_eq!(valid_hostname("API.Example.com", true).unwrap(), "api.example.com");
        assert!(valid_hostname("*.example.com", true).is_ok());
        assert!(valid_hostname("*.example.com", false).is_err());
        for bad in ["", "a.*.com", "*", "10.0.0.1", "a:80", "-a.com", "a_b.com", "a..com"] {
            assert!(valid_hostname(bad, true).is_err(), "{bad}");
        }
    }
}
