//! The toolkit's subcommands: `validate`, `test-routes`, `explain`, `diff`, `render`.
//! Each returns its exit code: 0 ok; 1 failed (errors, failing tests, differences);
//! 2 the input could not be used (unreadable or invalid config or tests file).

use std::path::PathBuf;

use attache_filters::Services;
use clap::{Args, ValueEnum};

use super::{diff, explain, render, routetest, Finding, Severity};
use crate::config::lint;
use crate::config::words::plural;
use crate::config::{self, compile, load, Diagnostic};
use crate::stats::Stats;

/// Write to stdout. A reader that went away (`attache validate ... | head`) ends the
/// output, not the command: the exit code is still the command's verdict, and
/// nothing panics the way `print!` does on a closed pipe.
pub fn out(args: std::fmt::Arguments<'_>) {
    let _ = std::io::Write::write_fmt(&mut std::io::stdout().lock(), args);
}

/// [`out`] with `println!`'s syntax.
macro_rules! outln {
    ($($arg:tt)*) => {
        out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// [`out`] with `print!`'s syntax.
macro_rules! outp {
    ($($arg:tt)*) => {
        out(format_args!($($arg)*))
    };
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The config file to check (or give it as the FILE argument).
    #[arg(long, short, value_name = "FILE", conflicts_with = "file")]
    pub config: Option<String>,
    /// The config file to check (same as --config).
    #[arg(value_name = "FILE", required_unless_present = "config")]
    pub file: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Check everything except the contents of TLS and discovery files (paths must
    /// still be well-formed), so CI can validate without production secrets.
    #[arg(long)]
    pub skip_files: bool,
    /// Fail on warnings too.
    #[arg(long)]
    pub strict: bool,
    /// Directory that `include:` may not leave (default: the config's directory).
    #[arg(long, value_name = "DIR")]
    pub include_root: Option<PathBuf>,
}

impl ValidateArgs {
    /// The config file, from --config or the FILE argument.
    pub fn config_path(&self) -> &str {
        self.config
            .as_deref()
            .or(self.file.as_deref())
            .unwrap_or("")
    }
}

#[derive(Args, Debug)]
pub struct TestRoutesArgs {
    /// The config file whose routes are tested.
    #[arg(long, short, value_name = "FILE")]
    pub config: String,
    /// The tests file (YAML).
    #[arg(long, short)]
    pub tests: String,
    /// List the routes no test reached.
    #[arg(long)]
    pub coverage: bool,
    /// Fail when fewer than PERCENT of the routes are reached.
    #[arg(long, value_name = "PERCENT")]
    pub fail_under: Option<f64>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Directory that `include:` may not leave (default: the config's directory).
    #[arg(long, value_name = "DIR")]
    pub include_root: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The config file.
    #[arg(long, short, value_name = "FILE")]
    pub config: String,
    /// The listener the request arrives on; optional when the config has one.
    #[arg(long)]
    pub listener: Option<String>,
    /// The request's host (`Host` or `:authority`).
    #[arg(long, default_value = "localhost")]
    pub host: String,
    /// Path, optionally with `?query`.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// HTTP method (default GET), or the Thrift method on a Thrift listener.
    #[arg(long)]
    pub method: Option<String>,
    /// `name:value`; repeat for several.
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// Thrift: the multiplexed service.
    #[arg(long)]
    pub service: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Directory that `include:` may not leave (default: the config's directory).
    #[arg(long, value_name = "DIR")]
    pub include_root: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The config now deployed.
    pub old: String,
    /// The config about to replace it.
    pub new: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Directory that `include:` may not leave (default: the config's directory).
    #[arg(long, value_name = "DIR")]
    pub include_root: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RenderArgs {
    /// A Jinja template of a config (minijinja; undefined variables are errors).
    #[arg(long)]
    pub template: String,
    /// YAML mapping of template variables.
    #[arg(long)]
    pub vars: Option<String>,
    /// Write the config here instead of stdout (missing directories are created).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<String>,
    /// Validate the rendered config (as `validate`; with --output, includes work).
    #[arg(long)]
    pub validate: bool,
    /// With --validate: skip reading TLS and discovery files (as `validate`).
    #[arg(long)]
    pub skip_files: bool,
    /// With --validate: fail on warnings too.
    #[arg(long)]
    pub strict: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

fn env_lookup(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Print diagnostics that stop a tool from running (exit 2 follows).
fn print_errors(diags: Vec<Diagnostic>, format: Format) {
    let f: Vec<Finding> = diags.into_iter().map(Finding::error).collect();
    print_findings(&f, format, None);
}

fn print_findings(f: &[Finding], format: Format, ok_line: Option<String>) {
    let errors = f.iter().filter(|x| x.severity == Severity::Error).count();
    let warnings = f.len() - errors;
    match format {
        Format::Text => {
            for x in f {
                eprintln!("{x}");
            }
            if !f.is_empty() {
                eprintln!(
                    "{}, {}",
                    plural(errors, "error"),
                    plural(warnings, "warning")
                );
            }
            if let Some(l) = ok_line {
                outln!("{l}");
            }
        }
        Format::Json => {
            let pick = |s: Severity| {
                f.iter()
                    .filter(|x| x.severity == s)
                    .map(Finding::to_json)
                    .collect::<Vec<_>>()
            };
            outln!(
                "{}",
                serde_json::json!({
                    "ok": ok_line.is_some(),
                    "errors": pick(Severity::Error),
                    "warnings": pick(Severity::Warning),
                })
            );
        }
    }
}

/// Core checks and lints for a config already read. Returns (findings, snapshot).
pub fn check(src: &config::Source, check_files: bool) -> (Vec<Finding>, Option<config::Snapshot>) {
    let p = load::Partial {
        diags: Vec::new(),
        partial: Some((src.cfg.clone(), src.map.clone(), src.effective.clone())),
        noisy: Vec::new(),
    };
    check_partial(p, check_files)
}

/// As [`check`], for a config that may have shape errors: those, the semantic
/// errors of what still deserialized, and its lints.
pub fn check_partial(
    p: load::Partial,
    check_files: bool,
) -> (Vec<Finding>, Option<config::Snapshot>) {
    let Some((cfg, map, effective)) = p.partial else {
        return (p.diags.into_iter().map(Finding::error).collect(), None);
    };
    let stats = Stats::new();
    let services = Services::default();
    let opts = compile::Options {
        stats: &stats,
        services: &services,
        check_files,
        previous: None,
    };
    let lints = lint::lint(&cfg, &map);
    let clean = p.diags.is_empty();
    let (errs, snap) = match compile::compile(&cfg, &map, effective, &opts) {
        Ok(s) => (p.diags, clean.then_some(s)),
        Err(e) => (config::merge_semantic(p.diags, e, &p.noisy), None),
    };
    let mut out: Vec<Finding> = errs
        .into_iter()
        // A lint error at the same place says the same thing, with a code.
        .filter(|d| {
            !lints.iter().any(|l| {
                l.severity == Severity::Error
                    && (l.file.as_str(), l.line, l.col) == (d.file.as_str(), d.line, d.col)
            })
        })
        .map(Finding::error)
        .collect();
    out.extend(lints);
    out.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    out.dedup();
    (out, snap)
}

fn summary(path: &str, snap: &config::Snapshot) -> String {
    let routes: usize = snap
        .listeners
        .iter()
        .filter_map(|l| l.http.as_ref())
        .flat_map(|h| h.router.vhosts.iter())
        .map(|v| v.routes.len())
        .sum();
    format!(
        "{path}: ok ({} listeners, {} clusters, {routes} routes)",
        snap.listeners.len(),
        snap.clusters.len()
    )
}

fn validate_source(
    path: &str,
    src: Result<load::Partial, Vec<Diagnostic>>,
    skip_files: bool,
    strict: bool,
    format: Format,
) -> u8 {
    let src = match src {
        Ok(s) => s,
        Err(d) => {
            print_errors(d, format);
            return 1;
        }
    };
    let (findings, snap) = check_partial(src, !skip_files);
    let errors = findings.iter().any(|f| f.severity == Severity::Error);
    let failed = errors || (strict && !findings.is_empty());
    let ok = match (&snap, failed) {
        (Some(s), false) => Some(summary(path, s)),
        _ => None,
    };
    print_findings(&findings, format, ok);
    u8::from(failed)
}

pub fn validate(a: &ValidateArgs) -> u8 {
    let path = a.config_path();
    let src = config::read_partial(path, a.include_root.as_deref(), &env_lookup).map(|(p, _)| p);
    validate_source(path, src, a.skip_files, a.strict, a.format)
}

/// Read and compile without TLS file contents; print problems and give exit 2.
fn load(
    path: &str,
    root: Option<&std::path::Path>,
    format: Format,
) -> Result<(config::Source, config::Snapshot), u8> {
    let src = config::read(path, root, &env_lookup).map_err(|d| {
        print_errors(d, format);
        2
    })?;
    let (findings, snap) = check(&src, false);
    match snap {
        Some(s) => Ok((src, s)),
        None => {
            let errs: Vec<Finding> = findings
                .into_iter()
                .filter(|f| f.severity == Severity::Error)
                .collect();
            print_findings(&errs, format, None);
            Err(2)
        }
    }
}

pub fn test_routes(a: &TestRoutesArgs) -> u8 {
    let (src, snap) = match load(&a.config, a.include_root.as_deref(), a.format) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let (tests, tmap) = match routetest::read(&a.tests) {
        Ok(x) => x,
        Err(d) => {
            print_errors(d, a.format);
            return 2;
        }
    };
    let report = routetest::run(&snap, &src.map, &tests, &tmap);
    let mut code = u8::from(report.failed() > 0);
    let pct = report.coverage.percent();
    let under = a.fail_under.filter(|min| pct + 1e-9 < *min);
    match a.format {
        Format::Text => {
            outp!("{}", report.to_text(a.coverage || a.fail_under.is_some()));
            if let Some(min) = under {
                outln!("coverage {pct:.1}% is below --fail-under {min}");
            }
        }
        Format::Json => {
            let mut v = report.to_json();
            v["fail_under"] = serde_json::json!(a.fail_under);
            if under.is_some() {
                v["ok"] = serde_json::Value::Bool(false);
            }
            outln!("{v}");
        }
    }
    if under.is_some() {
        code = 1;
    }
    code
}

pub fn explain(a: &ExplainArgs) -> u8 {
    let (_, snap) = match load(&a.config, a.include_root.as_deref(), a.format) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut headers = Vec::new();
    for h in &a.headers {
        match h.split_once(':') {
            Some((k, v)) => headers.push((k.to_string(), v.to_string())),
            None => {
                eprintln!("attache: --header takes NAME:VALUE, got `{h}`");
                return 2;
            }
        }
    }
    let rq = explain::Request {
        listener: a.listener.clone(),
        host: a.host.clone(),
        path: a.path.clone(),
        method: a.method.clone(),
        headers,
        query: Vec::new(),
        service: a.service.clone(),
    };
    match explain::evaluate(&snap, &rq) {
        Ok(o) => {
            match a.format {
                Format::Text => outp!("{}", o.to_text()),
                Format::Json => outln!("{}", o.to_json()),
            }
            0
        }
        Err(e) => {
            eprintln!("attache: {e}");
            2
        }
    }
}

pub fn diff(a: &DiffArgs) -> u8 {
    let root = a.include_root.as_deref();
    let read = |p: &str| config::read(p, root, &env_lookup);
    let (old, new) = match (read(&a.old), read(&a.new)) {
        (Ok(o), Ok(n)) => (o, n),
        (o, n) => {
            let mut d = Vec::new();
            d.extend(o.err().unwrap_or_default());
            d.extend(n.err().unwrap_or_default());
            print_errors(d, a.format);
            return 2;
        }
    };
    let changes = diff::diff_sources(&old, &new);
    match a.format {
        Format::Text => outp!("{}", diff::to_text(&changes)),
        Format::Json => outln!("{}", diff::to_json(&changes)),
    }
    u8::from(!changes.is_empty())
}

/// Write `text` to `path`, creating its parent directories (`-o out/web-17.yaml`).
fn write_creating_dirs(path: &str, text: &str) -> std::io::Result<()> {
    if let Some(dir) = std::path::Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    std::fs::write(path, text)
}

pub fn render(a: &RenderArgs) -> u8 {
    let text = match render::render_files(&a.template, a.vars.as_deref()) {
        Ok(t) => t,
        Err(d) => {
            print_errors(d, a.format);
            return 1;
        }
    };
    match &a.output {
        Some(out) => {
            if let Err(e) = write_creating_dirs(out, &text) {
                eprintln!("attache: cannot write {out}: {e}");
                return 2;
            }
            if a.validate {
                let src = config::read_partial(out, None, &env_lookup).map(|(p, _)| p);
                return validate_source(out, src, a.skip_files, a.strict, a.format);
            }
            0
        }
        None => {
            if a.validate {
                let name = format!("{} (rendered)", a.template);
                let src =
                    config::load::parse(&name, &text, &env_lookup).map(|(cfg, map, effective)| {
                        config::Source {
                            cfg,
                            map,
                            effective,
                            hash: config::hash(&text),
                        }
                    });
                // The config goes to stdout only when it is valid.
                let (findings, snap) = match src {
                    Ok(s) => check(&s, !a.skip_files),
                    Err(d) => (d.into_iter().map(Finding::error).collect(), None),
                };
                let failed = snap.is_none()
                    || findings.iter().any(|f| f.severity == Severity::Error)
                    || (a.strict && !findings.is_empty());
                if failed {
                    print_findings(&findings, a.format, None);
                    return 1;
                }
                for f in &findings {
                    eprintln!("{f}");
                }
            }
            outp!("{text}");
            0
        }
    }
}
