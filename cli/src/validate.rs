//! `raftgate config validate`: the check users run locally and as the required status check
//! on config pull requests.

use std::path::PathBuf;
use std::process::ExitCode;

use schemas::source::{read_dir, read_git};
use schemas::{Diagnostic, TreeLimits};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory holding the config files (read recursively: *.yaml, *.yml).
    #[arg(required_unless_present = "git", conflicts_with = "git")]
    dir: Option<PathBuf>,
    /// Validate a commit of this Git repository instead of a directory (no checkout needed).
    #[arg(long, value_name = "REPO", requires = "rev")]
    git: Option<PathBuf>,
    /// The commit to validate with --git: a sha, branch or tag.
    #[arg(long, value_name = "REV", requires = "git")]
    rev: Option<String>,
    /// Directory inside the repository that holds the config (with --git). Default: its root.
    #[arg(long, value_name = "DIR", requires = "git")]
    path: Option<String>,
    /// Output format: `text` (file:line:col lines), `json`, or `github` (workflow annotations).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Accept what nodes started with --allow-internal-endpoints accept: endpoints on
    /// link-local (cloud metadata) addresses.
    #[arg(long)]
    allow_internal_endpoints: bool,
    /// Accept what nodes started with --allow-insecure-upstream-tls accept:
    /// `insecureSkipVerify: true`.
    #[arg(long)]
    allow_insecure_upstream_tls: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
    Github,
}

pub fn run(args: &Args) -> ExitCode {
    let limits = TreeLimits::default();
    let files = match (&args.dir, &args.git) {
        (Some(dir), _) => read_dir(dir, &limits),
        (None, Some(repo)) => read_git(repo, args.rev.as_deref().unwrap_or("HEAD"), args.path.as_deref(), &limits),
        (None, None) => unreachable!("clap requires a directory or --git"),
    };
    let files = match files {
        Ok(f) => f,
        Err(e) => {
            match args.format {
                Format::Json => println!("{}", serde_json::json!({ "valid": false, "error": e.to_string() })),
                Format::Github => println!("::error title=raftgate config validate::{}", escape_data(&e.to_string())),
                Format::Text => eprintln!("error: {e}"),
            }
            return ExitCode::from(2);
        }
    };
    if files.is_empty() {
        let what = match (&args.dir, &args.path) {
            (Some(d), _) => d.display().to_string(),
            (None, Some(p)) => format!("`{p}` at {}", args.rev.as_deref().unwrap_or("HEAD")),
            (None, None) => format!("the tree at {}", args.rev.as_deref().unwrap_or("HEAD")),
        };
        let msg = format!("no *.yaml or *.yml files in {what}; is this the config directory?");
        match args.format {
            Format::Json => println!("{}", serde_json::json!({ "valid": false, "error": msg })),
            Format::Github => println!("::error title=raftgate config validate::{}", escape_data(&msg)),
            Format::Text => eprintln!("error: {msg}"),
        }
        return ExitCode::from(1);
    }
    let policy = schemas::Policy {
        allow_internal_endpoints: args.allow_internal_endpoints,
        allow_insecure_tls: args.allow_insecure_upstream_tls,
        reserved: Vec::new(),
    };
    match schemas::compile_tree_for(&files, &limits, &policy) {
        Ok(compiled) => {
            match args.format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({
                        "valid": true,
                        "files": compiled.files,
                        "upstreams": compiled.snapshot.upstreams.len(),
                        "routes": compiled.snapshot.routes.len(),
                        "certificates": compiled.snapshot.certificates.len(),
                        "hash": compiled.hash.to_string(),
                    })
                ),
                Format::Text | Format::Github => {
                    println!("valid: {}; content hash {}", compiled.summary(), compiled.hash);
                }
            }
            ExitCode::SUCCESS
        }
        Err(diags) => {
            match args.format {
                Format::Json => println!("{}", serde_json::json!({ "valid": false, "errors": diags })),
                Format::Github => {
                    for d in &diags {
                        println!("{}", github_annotation(d));
                    }
                }
                Format::Text => {
                    for d in &diags {
                        println!("{d}");
                    }
                    let n = diags.len();
                    eprintln!("{n} problem{} found", if n == 1 { "" } else { "s" });
                }
            }
            ExitCode::from(1)
        }
    }
}

/// A GitHub Actions workflow command: shows up as an annotation on the pull request's diff.
fn github_annotation(d: &Diagnostic) -> String {
    let mut message = d.message.clone();
    if let Some(help) = &d.help {
        message.push_str(" (help: ");
        message.push_str(help);
        message.push(')');
    }
    format!(
        "::error file={},line={},col={},title=raftgate config::{}",
        escape_property(&d.file),
        d.line,
        d.column,
        escape_data(&message)
    )
}

// Escaping as the Actions toolkit does it (`@actions/core` command.ts).
fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Reads and compiles the config at `rev` of `repo` (for `config diff`).
pub fn compile_rev(
    repo: &std::path::Path,
    rev: &str,
    path: Option<&str>,
) -> Result<schemas::ConfigSnapshot, crate::client::CliError> {
    use crate::client::CliError;
    let files = read_git(repo, rev, path, &TreeLimits::default())
        .map_err(|e| CliError::Usage(format!("cannot read {rev} of {}: {e}", repo.display())))?;
    if files.is_empty() {
        return Err(CliError::Usage(format!("no *.yaml or *.yml files at {rev} in `{}`", path.unwrap_or("/"))));
    }
    schemas::compile_tree(&files).map(|c| c.snapshot).map_err(|diags| {
        let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
        CliError::Failed(format!("the config at {rev} is invalid:\n{}", lines.join("\n")))
    })
}
