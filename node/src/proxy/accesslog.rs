//! The access log: one line per request, in the operator's format, to the node's log
//! stream (stdout) or to a file that SIGHUP reopens (for logrotate).
//!
//! `--access-log-format json` (the default) writes every field as a JSON object;
//! `--access-log-fields` picks and orders them. Any other format is a template: `$field`
//! or `${field}` is replaced by the field's value, everything else is copied
//! (`$$` is a `$`). Unknown fields are refused at startup, with the list of known ones.
//! Without a file, the default JSON line goes through the node's log stream as it always
//! has (one JSON object per line with the other logs, `target: access`).

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use http::{Method, Uri, Version};

/// The fields a line can carry, in the default order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Time,
    RequestId,
    Client,
    Method,
    Uri,
    Version,
    Status,
    Route,
    Upstream,
    Endpoint,
    Consumer,
    Attempts,
    Fallback,
    Error,
    DurationMs,
}

const FIELDS: [(&str, Field); 15] = [
    ("time", Field::Time),
    ("request_id", Field::RequestId),
    ("client", Field::Client),
    ("method", Field::Method),
    ("uri", Field::Uri),
    ("version", Field::Version),
    ("status", Field::Status),
    ("route", Field::Route),
    ("upstream", Field::Upstream),
    ("endpoint", Field::Endpoint),
    ("consumer", Field::Consumer),
    ("attempts", Field::Attempts),
    ("fallback", Field::Fallback),
    ("error", Field::Error),
    ("duration_ms", Field::DurationMs),
];

impl Field {
    fn name(self) -> &'static str {
        FIELDS.iter().find(|(_, f)| *f == self).map_or("", |(n, _)| n)
    }

    fn parse(name: &str, flag: &str) -> Result<Field, String> {
        FIELDS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f).ok_or_else(|| {
            let known: Vec<&str> = FIELDS.iter().map(|(n, _)| *n).collect();
            format!("unknown access-log field `{name}` in {flag}; the fields are: {}", known.join(", "))
        })
    }

    /// Numbers and booleans are written bare in JSON; the rest are strings.
    fn is_number(self) -> bool {
        matches!(self, Field::Status | Field::Attempts | Field::Fallback | Field::DurationMs)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Field(Field),
}

#[derive(Debug, Clone, PartialEq)]
enum Format {
    /// Each field with its key, `"name":`, made once (names need no escaping).
    Json(Vec<(Field, String)>),
    Template(Vec<Piece>),
}

/// Where lines go.
#[derive(Debug)]
enum Sink {
    /// The node's tracing stream (the default JSON line, unchanged since the first release).
    Tracing,
    Stdout,
    /// A file, opened for appending; replaced by a fresh open on SIGHUP.
    File {
        path: PathBuf,
        file: Mutex<std::fs::File>,
    },
}

#[derive(Debug)]
pub struct AccessLog {
    format: Format,
    sink: Sink,
}

/// What the operator asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `json` or a template.
    pub format: Option<String>,
    /// For JSON: the fields, in order (default: all).
    pub fields: Option<String>,
    pub file: Option<PathBuf>,
}

impl AccessLog {
    pub fn new(opts: &Options) -> Result<AccessLog, String> {
        let fields = match &opts.fields {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(|f| Field::parse(f, "--access-log-fields"))
                .collect::<Result<Vec<_>, _>>()?,
            None => FIELDS.iter().map(|(_, f)| *f).collect(),
        };
        if fields.is_empty() {
            return Err("--access-log-fields names no field".into());
        }
        let format = match opts.format.as_deref() {
            None | Some("json") => {
                Format::Json(fields.into_iter().map(|f| (f, format!("\"{}\":", f.name()))).collect())
            }
            Some(_) if opts.fields.is_some() => {
                return Err("--access-log-fields is for the JSON format; a template names its own fields".into())
            }
            Some(t) => Format::Template(template(t)?),
        };
        let default_line = matches!(&format, Format::Json(f) if f.len() == FIELDS.len() && opts.fields.is_none());
        let sink = match &opts.file {
            Some(path) => Sink::File { path: path.clone(), file: Mutex::new(open(path)?) },
            None if default_line => Sink::Tracing,
            None => Sink::Stdout,
        };
        Ok(AccessLog { format, sink })
    }

    /// The file lines go to, if any.
    pub fn file(&self) -> Option<&Path> {
        match &self.sink {
            Sink::File { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Opens the file again (after logrotate moved it away). On failure the old file stays
    /// in use and the error is returned.
    pub fn reopen(&self) -> Result<(), String> {
        if let Sink::File { path, file } = &self.sink {
            let fresh = open(path)?;
            *file.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
        Ok(())
    }

    /// Writes the request's line.
    pub fn write(&self, line: &Entry<'_>) {
        if let Sink::Tracing = self.sink {
            return line.trace();
        }
        let mut out = String::with_capacity(256);
        match &self.format {
            Format::Json(fields) => {
                out.push('{');
                for (i, (f, key)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(key);
                    let v = line.value(*f);
                    if f.is_number() {
                        out.push_str(&v);
                    } else {
                        json_string(&mut out, &v);
                    }
                }
                out.push('}');
            }
            Format::Template(pieces) => {
                for p in pieces {
                    match p {
                        Piece::Text(t) => out.push_str(t),
                        // Control characters never reach a line: one request, one line.
                        Piece::Field(f) => {
                            out.extend(line.value(*f).chars().map(|c| if c.is_control() { '?' } else { c }))
                        }
                    }
                }
            }
        }
        out.push('\n');
        match &self.sink {
            Sink::File { file, .. } => {
                let _ = file.lock().unwrap_or_else(|e| e.into_inner()).write_all(out.as_bytes());
            }
            _ => {
                let _ = std::io::stdout().lock().write_all(out.as_bytes());
            }
        }
    }
}

fn open(path: &Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| format!("cannot open the access log {}: {e}", path.display()))
}

/// Splits a template into text and fields.
fn template(t: &str) -> Result<Vec<Piece>, String> {
    let flag = "--access-log-format";
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = t;
    while let Some(i) = rest.find('$') {
        text.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let (name, after) = if let Some(r) = rest.strip_prefix('{') {
            let end = r.find('}').ok_or_else(|| format!("`${{` without its `}}` in {flag}"))?;
            (&r[..end], &r[end + 1..])
        } else if let Some(r) = rest.strip_prefix('$') {
            text.push('$');
            rest = r;
            continue;
        } else {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        if name.is_empty() {
            return Err(format!("a `$` names no field in {flag} (write `$$` for a dollar sign)"));
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(Piece::Field(Field::parse(name, flag)?));
        rest = after;
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    if !pieces.iter().any(|p| matches!(p, Piece::Field(_))) {
        return Err(format!(
            "{flag} names no field: use `json`, or a template such as '$client \"$method $uri\" $status'"
        ));
    }
    Ok(pieces)
}

fn json_string(out: &mut String, s: &str) {
    // serde_json's escaping: quotes, backslashes and control characters.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

/// One request's facts, as the access log reads them (the `log` phase fills it in).
#[derive(Debug)]
pub struct Entry<'a> {
    pub request_id: &'a str,
    pub client: IpAddr,
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub version: Version,
    pub status: u16,
    pub route: &'a str,
    pub upstream: &'a str,
    pub endpoint: &'a str,
    pub consumer: &'a str,
    pub attempts: u32,
    pub fallback: bool,
    pub error: &'a str,
    pub duration_ms: f64,
}

impl Entry<'_> {
    fn value(&self, f: Field) -> String {
        match f {
            Field::Time => chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            Field::RequestId => self.request_id.to_string(),
            Field::Client => self.client.to_string(),
            Field::Method => self.method.to_string(),
            Field::Uri => self.uri.to_string(),
            Field::Version => format!("{:?}", self.version),
            Field::Status => self.status.to_string(),
            Field::Route => self.route.to_string(),
            Field::Upstream => self.upstream.to_string(),
            Field::Endpoint => self.endpoint.to_string(),
            Field::Consumer => self.consumer.to_string(),
            Field::Attempts => self.attempts.to_string(),
            Field::Fallback => self.fallback.to_string(),
            Field::Error => self.error.to_string(),
            Field::DurationMs => format!("{:.3}", self.duration_ms),
        }
    }

    /// The default line, through the node's log stream.
    fn trace(&self) {
        tracing::info!(
            target: "access",
            request_id = self.request_id,
            client = %self.client,
            method = %self.method,
            uri = %self.uri,
            version = ?self.version,
            status = self.status,
            route = self.route,
            upstream = self.upstream,
            endpoint = self.endpoint,
            consumer = self.consumer,
            attempts = self.attempts,
            fallback = self.fallback,
            error = self.error,
            duration_ms = self.duration_ms,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_name_known_fields() {
        let t = template("$client - ${consumer} \"$method $uri\" $status $$5 ${duration_ms}ms").unwrap();
        assert_eq!(
            t,
            vec![
                Piece::Field(Field::Client),
                Piece::Text(" - ".into()),
                Piece::Field(Field::Consumer),
                Piece::Text(" \"".into()),
                Piece::Field(Field::Method),
                Piece::Text(" ".into()),
                Piece::Field(Field::Uri),
                Piece::Text("\" ".into()),
                Piece::Field(Field::Status),
                Piece::Text(" $5 ".into()),
                Piece::Field(Field::DurationMs),
                Piece::Text("ms".into()),
            ]
        );
        let e = template("$client $nope").unwrap_err();
        assert!(e.contains("unknown access-log field `nope`") && e.contains("duration_ms"), "{e}");
        assert!(template("${client").unwrap_err().contains("without its `}`"));
        assert!(template("no fields").unwrap_err().contains("names no field"));
        assert!(template("cost $ 5").unwrap_err().contains("$$"));
    }

    #[test]
    fn options_are_checked() {
        let fields = |f: &str| Options { fields: Some(f.into()), ..Options::default() };
        assert!(AccessLog::new(&fields("status, uri")).is_ok());
        assert!(AccessLog::new(&fields("status,bogus")).unwrap_err().contains("bogus"));
        assert!(AccessLog::new(&fields(" , ")).unwrap_err().contains("names no field"));
        let both = Options { format: Some("$status".into()), fields: Some("status".into()), file: None };
        assert!(AccessLog::new(&both).unwrap_err().contains("template names its own"));
        assert!(matches!(AccessLog::new(&Options::default()).unwrap().sink, Sink::Tracing));
        let missing = Options { file: Some("/nonexistent/dir/access.log".into()), ..Options::default() };
        assert!(AccessLog::new(&missing).unwrap_err().contains("/nonexistent/dir/access.log"));
    }
}
