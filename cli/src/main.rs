//! `mcp-guard`: policy tooling for the mcp-guard Envoy filter, built from the filter's own
//! policy code (the `mcp-guard` crate).
//!
//! - `mcp-guard check FILE...`: validate plugin configurations (JSON or YAML).
//! - `mcp-guard explain FILE --agent A --method M [--name N]`: the decision and its rule.
//! - `mcp-guard render FILE --format ecds|istio|istio-wasmplugin|envoy-gateway`: what Envoy,
//!   Istio or Envoy Gateway loads.
//! - `mcp-guard report AUDIT.LOG [--json]`: a summary of an audit log, in constant memory.
//! - `mcp-guard pin FILE | --url URL [--merge POLICY]`: tool definition pins from a
//!   `tools/list` result, saved or fetched from a live server.
//!
//! Exit status: 0 success (valid, rendered, explained); 1 an invalid policy, or with
//! `explain --expect` a different decision; 2 a usage or I/O error.

mod check;
mod doc;
mod mcp_client;
mod pin;
mod render;
mod report;

use check::{LoadError, Loaded};
use clap::{Parser, Subcommand, ValueEnum};
use doc::Doc;
use mcp_guard::config::{Config, ConfigError};
use mcp_guard::policy::Subject;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

/// Policy tooling for the mcp-guard Envoy filter: the same parser and policy evaluation as
/// the filter.
#[derive(Debug, Parser)]
#[command(name = "mcp-guard", version, about, long_about = None)]
#[command(
    after_help = "Exit status: 0 success, 1 invalid policy (or `explain --expect` \
                        mismatch), 2 usage or I/O error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate plugin configurations (JSON or YAML); report every problem with its path.
    Check {
        /// Policy files (`-` for standard input).
        #[arg(required = true)]
        files: Vec<String>,
        /// One JSON object per file on standard output instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show how the policy decides one call, and the rule that decides it.
    Explain {
        /// Policy file (`-` for standard input).
        file: String,
        /// Agent id (as the identity sources would resolve it).
        #[arg(long)]
        agent: String,
        /// JSON-RPC method, e.g. `tools/call`, `initialize`.
        #[arg(long)]
        method: String,
        /// Tool or prompt name, or resource URI (for tools/call, prompts/get, resources/read).
        #[arg(long)]
        name: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Exit 1 unless the decision is this one (for CI assertions).
        #[arg(long, value_enum)]
        expect: Option<Expected>,
        /// tools/call: one `tools/list` entry (a JSON object, `-` for standard input): its
        /// definition hash is compared with the tool's pin, and the decision is the one for a
        /// server that shows this definition.
        #[arg(long)]
        definition: Option<String>,
    },
    /// Render the plugin configuration for Envoy (ECDS), Istio or Envoy Gateway.
    Render(Box<RenderArgs>),
    /// Summarise an audit log (Envoy's access log of mcp-guard records): servers, agents and
    /// their tools, denials by reason, rate-limited calls, drifts, error rates, time span.
    /// Reads line by line in constant memory.
    /// Pin tool definitions (`tool_pins`) from a `tools/list` result: a saved one (a JSON-RPC
    /// response, a bare `{"tools": [...]}` result, or several pages), or a live server's.
    Pin(Box<PinArgs>),
    Report {
        /// The audit log (`-` for standard input).
        log: String,
        /// One JSON document instead of text tables.
        #[arg(long)]
        json: bool,
    },
}

/// A decision, as `explain --expect` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
enum Expected {
    Allow,
    Deny,
    DryRunDeny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// ECDS TypedExtensionConfig for Envoy's file or gRPC config source.
    Ecds,
    /// Istio EnvoyFilter (Wasm extension config + HTTP filter).
    Istio,
    /// Istio WasmPlugin (request headers not held; rate limits through mcp-guard's own RLS
    /// calls).
    IstioWasmplugin,
    /// Envoy Gateway EnvoyExtensionPolicy + EnvoyPatchPolicy.
    EnvoyGateway,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Json,
    Yaml,
}

#[derive(Debug, clap::Args)]
struct PinArgs {
    /// Saved `tools/list` result(s) (`-` for standard input); not with --url.
    #[arg(required_unless_present = "url", conflicts_with = "url")]
    file: Option<String>,
    /// A live MCP server's Streamable HTTP endpoint (e.g. `http://127.0.0.1:8000/mcp`):
    /// initialize, list every page of tools, end the session.
    #[arg(long)]
    url: Option<String>,
    /// --url: a request header `NAME: VALUE` sent on every request (repeatable), e.g.
    /// `Authorization: Bearer ...` or `x-agent-id: ...`.
    #[arg(long = "header", value_parser = parse_header, requires = "url")]
    headers: Vec<(String, String)>,
    /// --url: seconds one HTTP request may take.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// Output syntax of `{"tool_pins": {...}}`.
    #[arg(long, value_enum, default_value = "json")]
    format: Output,
    /// Merge the pins into this policy file's `tool_pins` instead of printing them (JSON or
    /// YAML, kept in its syntax; written atomically, and only if the result is a valid
    /// policy).
    #[arg(long, conflicts_with = "format")]
    merge: Option<String>,
}

/// A `NAME: VALUE` request header; the name a token (RFC 9110 §5.6.2), the value visible
/// ASCII and spaces.
fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not NAME: VALUE"))?;
    let value = value.trim_start_matches([' ', '\t']);
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("{name:?} is not a header name"));
    }
    if !value
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || (0x21..=0x7e).contains(&b))
    {
        return Err(format!(
            "the value of {name} has a control or non-ASCII character"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

#[derive(Debug, clap::Args)]
struct RenderArgs {
    /// Policy file (`-` for standard input).
    file: String,
    /// What to render.
    #[arg(long, value_enum)]
    format: Format,
    /// Output syntax (default: json for ecds, yaml otherwise).
    #[arg(long, value_enum)]
    output: Option<Output>,
    /// Write to this file (atomically: a temporary file in the same directory renamed over
    /// it, so a watching Envoy never reads half of it) instead of standard output.
    #[arg(long)]
    out: Option<String>,
    /// Render even if the policy is invalid (it must still be JSON/YAML): for testing how
    /// the filter rejects it.
    #[arg(long)]
    no_check: bool,
    /// ecds: the Wasm module's path on the proxy.
    #[arg(long, default_value = "/etc/envoy/mcp_guard.wasm")]
    wasm: String,
    /// ecds: the bare TypedExtensionConfig (for a gRPC control plane), not `{"resources": [...]}`.
    #[arg(long)]
    bare: bool,
    /// ecds: the resource name (the HTTP filter's name in the listener).
    #[arg(long, default_value = render::FILTER_NAME)]
    resource_name: String,
    /// istio, istio-wasmplugin, envoy-gateway: the module: an OCI image (`oci://...`) or
    /// `https://...` URL.
    #[arg(long, default_value = "oci://ghcr.io/mcp-guard/mcp-guard:0.1.0")]
    image: String,
    /// istio, istio-wasmplugin, envoy-gateway: the module's SHA-256 (hex).
    #[arg(long)]
    sha256: Option<String>,
    /// istio, istio-wasmplugin, envoy-gateway: metadata.name.
    #[arg(long, default_value = render::FILTER_NAME)]
    name: String,
    /// istio, istio-wasmplugin, envoy-gateway: metadata.namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// istio, istio-wasmplugin: workload selector label `KEY=VALUE` (repeatable; none: every
    /// workload of the namespace).
    #[arg(long, value_parser = parse_label)]
    selector: Vec<(String, String)>,
    /// istio, istio-wasmplugin: listener context.
    #[arg(long, value_enum, default_value = "sidecar-inbound")]
    context: render::IstioContext,
    /// istio-wasmplugin: host of the rate limit service's Kubernetes Service.
    #[arg(long, default_value = "ratelimit.ratelimit.svc.cluster.local", value_parser = parse_rls_host)]
    rls_host: String,
    /// istio-wasmplugin: the rate limit service's gRPC port.
    #[arg(long, default_value_t = 8081, value_parser = clap::value_parser!(u16).range(1..))]
    rls_port: u16,
    /// istio-wasmplugin: the rate limit domain.
    #[arg(long, default_value = "mcp")]
    rls_domain: String,
    /// istio-wasmplugin: deadline of one rate limit call, in milliseconds.
    #[arg(long, default_value_t = 500)]
    rls_timeout_ms: u64,
    /// istio-wasmplugin: while the rate limit service cannot answer, refuse calls (deny) or
    /// forward them unlimited (allow).
    #[arg(long, value_enum, default_value = "deny")]
    rls_failure_mode: FailureMode,
    /// istio-wasmplugin: add no rate_limit_service (no global rate limits, or the file's own
    /// rate_limit_service kept as written).
    #[arg(long)]
    no_rls: bool,
    /// envoy-gateway: `Gateway/NAME` or `HTTPRoute/NAME` the policy attaches to (repeatable;
    /// default Gateway/eg).
    #[arg(long, value_parser = parse_target_ref)]
    target_ref: Vec<render::TargetRef>,
    /// envoy-gateway: the Gateway whose Listener is patched (default: the first Gateway
    /// target ref, else `eg`).
    #[arg(long)]
    gateway: Option<String>,
    /// envoy-gateway: the Gateway listener's section name, or with a `/` the whole xDS
    /// Listener name.
    #[arg(long, default_value = "http")]
    listener: String,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// What mcp-guard does while the rate limit service cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FailureMode {
    /// Refuse the call (`failure_mode_deny: true`).
    Deny,
    /// Forward it unlimited (`failure_mode_deny: false`).
    Allow,
}

/// A Service host name for Istio's `outbound|<port>||<host>` cluster name.
fn parse_rls_host(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a host name (letters, digits, `.`, `-`)"
        ))
    }
}

fn parse_target_ref(s: &str) -> Result<render::TargetRef, String> {
    match s.split_once('/') {
        Some((kind @ ("Gateway" | "HTTPRoute"), name)) if !name.is_empty() => {
            Ok(render::TargetRef {
                kind: kind.to_owned(),
                name: name.to_owned(),
            })
        }
        _ => Err(format!("{s:?} is not Gateway/NAME or HTTPRoute/NAME")),
    }
}

/// A failed command: the message and the exit status.
struct Failure {
    status: u8,
    message: String,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        status: 2,
        message: message.into(),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with status 0; usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let result = match cli.command {
        Command::Check { files, json } => run_check(&files, json),
        Command::Explain {
            file,
            agent,
            method,
            name,
            json,
            expect,
            definition,
        } => run_explain(
            &file,
            &agent,
            &method,
            name.as_deref(),
            json,
            expect,
            definition.as_deref(),
        ),
        Command::Render(args) => run_render(&args),
        Command::Report { log, json } => run_report(&log, json),
        Command::Pin(args) => run_pin(&args),
    };
    match result {
        Ok(status) => ExitCode::from(status),
        Err(f) => {
            if !f.message.is_empty() {
                let _ = writeln!(std::io::stderr(), "mcp-guard: {}", f.message);
            }
            ExitCode::from(f.status)
        }
    }
}

fn stdout(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| usage(format!("standard output: {e}")))
}

/// How a file argument is named in messages (`-` is standard input).
fn shown(file: &str) -> &str {
    if file == "-" {
        "<stdin>"
    } else {
        file
    }
}

fn print_problems(file: &str, problems: &[ConfigError]) {
    let mut err = std::io::stderr().lock();
    for p in problems {
        let _ = writeln!(err, "{}: {p}", shown(file));
    }
}

/// Loads and validates; `Err` carries the problems (status 1) or an I/O failure (status 2).
fn load_valid(file: &str) -> Result<(Loaded, Config), Result<Vec<ConfigError>, Failure>> {
    let loaded = match check::load(file) {
        Ok(l) => l,
        Err(LoadError::Io(m)) => return Err(Err(usage(m))),
        Err(LoadError::Syntax(p)) => return Err(Ok(vec![p])),
    };
    match check::validate(&loaded) {
        Ok(config) => Ok((loaded, config)),
        Err(problems) => Err(Ok(problems)),
    }
}

/// Loads and validates, printing the problems; the failure to return when invalid.
fn load_or_report(file: &str) -> Result<(Loaded, Config), Failure> {
    match load_valid(file) {
        Ok(ok) => Ok(ok),
        Err(Err(failure)) => Err(failure),
        Err(Ok(problems)) => {
            print_problems(file, &problems);
            Err(Failure {
                status: 1,
                message: format!(
                    "{}: invalid policy ({} problem(s))",
                    shown(file),
                    problems.len()
                ),
            })
        }
    }
}

fn run_check(files: &[String], json: bool) -> Result<u8, Failure> {
    let mut status = 0u8;
    for file in files {
        let (problems, summary) = match load_valid(file) {
            Ok((_, config)) => {
                let summary = format!(
                    "{}: valid (policy {}, version {}, mode {})",
                    shown(file),
                    config.policy.name.as_deref().unwrap_or("-"),
                    config.policy.version.as_deref().unwrap_or("-"),
                    mode_str(config.policy.mode()),
                );
                (Vec::new(), summary)
            }
            Err(Err(failure)) => {
                if json {
                    let line =
                        serde_json::json!({"file": file, "valid": false, "error": failure.message});
                    stdout(&format!("{line}\n"))?;
                } else {
                    let _ = writeln!(std::io::stderr(), "mcp-guard: {}", failure.message);
                }
                status = status.max(2);
                continue;
            }
            Err(Ok(problems)) => {
                status = status.max(1);
                let summary = format!("{}: invalid ({} problem(s))", shown(file), problems.len());
                (problems, summary)
            }
        };
        if json {
            let list: Vec<_> = problems
                .iter()
                .map(|p| serde_json::json!({"field": p.field, "problem": p.message()}))
                .collect();
            let line =
                serde_json::json!({"file": file, "valid": problems.is_empty(), "problems": list});
            stdout(&format!("{line}\n"))?;
        } else if problems.is_empty() {
            stdout(&format!("{summary}\n"))?;
        } else {
            print_problems(file, &problems);
            let _ = writeln!(std::io::stderr(), "{summary}");
        }
    }
    Ok(status)
}

fn mode_str(mode: mcp_guard::policy::Mode) -> &'static str {
    match mode {
        mcp_guard::policy::Mode::Enforce => "enforce",
        mcp_guard::policy::Mode::DryRun => "dry_run",
    }
}

fn run_explain(
    file: &str,
    agent: &str,
    method: &str,
    name: Option<&str>,
    json: bool,
    expect: Option<Expected>,
    definition: Option<&str>,
) -> Result<u8, Failure> {
    if definition.is_some() && method != "tools/call" {
        return Err(usage("--definition applies to tools/call"));
    }
    if matches!(method, "tools/call" | "prompts/get" | "resources/read") && name.is_none() {
        return Err(usage(format!(
            "{method} needs --name (the filter refuses it without params.name/uri: -32602)"
        )));
    }
    if !mcp_guard::identity::is_valid_agent_id(agent) {
        return Err(usage(format!(
            "{agent:?} is not a valid agent id (1-256 visible ASCII characters without `,` or `\"`); \
             the filter would never resolve it"
        )));
    }
    let (_, config) = load_or_report(file)?;
    let policy = &config.policy;
    let subject = Subject::of(Some(method), name).ok_or_else(|| usage("no method"))?;
    let verdict = policy.evaluate(agent, subject);
    let sets: Vec<&str> = policy
        .rule_sets(agent)
        .iter()
        .map(|s| s.origin.as_str())
        .collect();
    let definition = match definition {
        None => None,
        Some(file) => Some(read_input(file)?),
    };
    let pins = match (method, name) {
        ("tools/call", Some(tool)) => explain_pins(&config.pins, tool, definition.as_deref()),
        _ => None,
    };
    // The filter checks pins only for a call the policy allowed; a pin denial is a deny, or a
    // dry_run_deny in dry-run (src/verdict.rs apply_pins).
    let mut decision = verdict.decision.as_str();
    let mut rule = verdict.rule.clone();
    if let Some(denial) = pins.as_ref().and_then(|p| p.denial) {
        if decision == "allow" {
            decision = match policy.mode() {
                mcp_guard::policy::Mode::Enforce => "deny",
                mcp_guard::policy::Mode::DryRun => "dry_run_deny",
            };
            rule = format!("tool pin: {denial} (the policy allows it: {rule})");
        }
    }
    if json {
        let out = serde_json::json!({
            "agent": agent,
            "method": method,
            "name": name,
            "list": subject.list(),
            "decision": decision,
            "rule": rule,
            "rule_sets": sets,
            "policy_mode": mode_str(policy.mode()),
            "pins": pins.as_ref().map(|p| &p.json),
        });
        stdout(&format!("{out}\n"))?;
    } else {
        let what = match name {
            Some(n) if subject.list() != "methods" => format!("{method} {n:?}"),
            _ => method.to_owned(),
        };
        let sets = if sets.is_empty() {
            "(none)".to_owned()
        } else {
            sets.join(", ")
        };
        let mut text = format!(
            "agent: {agent}\ncall: {what} (decided by the {} lists)\ndecision: {decision}\nrule: {rule}\nrule sets: {sets}\n",
            subject.list(),
        );
        for line in pins.iter().flat_map(|p| &p.text) {
            text.push_str(line);
            text.push('\n');
        }
        stdout(&text)?;
    }
    let wanted = expect.map(|e| match e {
        Expected::Allow => "allow",
        Expected::Deny => "deny",
        Expected::DryRunDeny => "dry_run_deny",
    });
    match wanted {
        Some(w) if w != decision => Err(Failure {
            status: 1,
            message: format!("expected {w}, got {decision}"),
        }),
        _ => Ok(0),
    }
}

fn run_pin(args: &PinArgs) -> Result<u8, Failure> {
    let entries = match (&args.url, &args.file) {
        (Some(url), _) => {
            let mut client = mcp_client::Client::new(
                url,
                args.headers.clone(),
                std::time::Duration::from_secs(args.timeout),
            );
            let listed = client.initialize().and_then(|()| client.list_tools());
            // The session is ended whether or not the listing worked.
            let closed = client.close();
            let entries = listed.map_err(|e| usage(format!("{url}: {e}")))?;
            if let Err(e) = closed {
                let _ = writeln!(std::io::stderr(), "mcp-guard: {url}: {e}");
            }
            entries
        }
        (None, Some(file)) => {
            let text = if file == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .map_err(|e| usage(format!("standard input: {e}")))?;
                text
            } else {
                std::fs::read_to_string(file).map_err(|e| usage(format!("{file}: {e}")))?
            };
            pin::saved_entries(&text).map_err(|e| Failure {
                status: 1,
                message: format!("{}: {e}", shown(file)),
            })?
        }
        (None, None) => return Err(usage("a saved tools/list FILE or --url")),
    };
    let pins = pin::pins(&entries).map_err(|e| Failure {
        status: 1,
        message: e,
    })?;
    let Some(policy) = &args.merge else {
        let doc = pin::pins_doc(&pins);
        let text = match args.format {
            Output::Json => serde_json::to_string_pretty(&doc).map_err(|e| usage(e.to_string()))?,
            Output::Yaml => serde_saphyr::to_string(&doc).map_err(|e| usage(e.to_string()))?,
        };
        stdout(&format!("{}\n", text.trim_end()))?;
        return Ok(0);
    };
    if policy == "-" {
        return Err(usage("--merge needs a file (it is rewritten)"));
    }
    let mut loaded = match check::load(policy) {
        Ok(l) => l,
        Err(LoadError::Io(m)) => return Err(usage(m)),
        Err(LoadError::Syntax(p)) => {
            print_problems(policy, &[p]);
            return Err(Failure {
                status: 1,
                message: format!("{policy}: not a JSON or YAML document"),
            });
        }
    };
    let merged = pin::merge(&mut loaded.doc, &pins).map_err(|e| Failure {
        status: 1,
        message: format!("{policy}: {e}"),
    })?;
    let text = match loaded.syntax {
        doc::Syntax::Json => {
            serde_json::to_string_pretty(&loaded.doc).map_err(|e| usage(e.to_string()))?
        }
        doc::Syntax::Yaml => {
            serde_saphyr::to_string(&loaded.doc).map_err(|e| usage(e.to_string()))?
        }
    };
    let text = format!("{}\n", text.trim_end());
    // What is written must be a policy the filter accepts.
    loaded.json = loaded.doc.to_compact_json().map_err(usage)?;
    loaded.text = text.clone();
    if let Err(problems) = check::validate(&loaded) {
        print_problems(policy, &problems);
        return Err(Failure {
            status: 1,
            message: format!("{policy}: not written: the merged policy is invalid"),
        });
    }
    write_atomically(Path::new(policy), &text).map_err(|e| usage(format!("{policy}: {e}")))?;
    let _ = writeln!(
        std::io::stderr(),
        "{policy}: {} pin(s) added, {} changed, {} unchanged{}",
        merged.added.len(),
        merged.changed.len(),
        pins.len() - merged.added.len() - merged.changed.len(),
        if merged.kept.is_empty() {
            String::new()
        } else {
            format!(
                "; kept pins of tools not in the list: {}",
                merged.kept.join(", ")
            )
        }
    );
    Ok(0)
}

fn run_report(log: &str, json: bool) -> Result<u8, Failure> {
    let read = if log == "-" {
        report::Report::read(&mut std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(log).map_err(|e| usage(format!("{log}: {e}")))?;
        report::Report::read(&mut std::io::BufReader::with_capacity(1 << 16, file))
    };
    let summary = read.map_err(|e| usage(format!("{}: {e}", shown(log))))?;
    if json {
        stdout(&format!("{}\n", summary.to_json(shown(log))))?;
    } else {
        stdout(&summary.to_text(shown(log)))?;
    }
    Ok(0)
}

/// What tool pins say about a `tools/call` of `tool` (plugin configuration `tool_pins`,
/// `on_drift`, `unpinned`, `learn_pins`), from the filter's own [`mcp_guard::pins::check_call`].
struct PinExplanation {
    /// JSON for `explain --json`.
    json: serde_json::Value,
    /// Lines for the text output.
    text: Vec<String>,
    /// The pin denial of a call to a server showing the `--definition` given; `None` without
    /// one (the outcome then depends on what the server shows: every case is in `text`).
    denial: Option<&'static str>,
}

fn explain_pins(
    pins: &mcp_guard::pins::PinConfig,
    tool: &str,
    definition: Option<&str>,
) -> Option<PinExplanation> {
    use mcp_guard::pins::{check_call, Def, OnDrift, PinDenial, Unpinned};
    if !pins.active() {
        return definition.map(|entry| {
            let hash = mcp_guard::pins::definition_hash(entry);
            let shown = match &hash {
                Ok(h) => h.clone(),
                Err(e) => format!("none ({e})"),
            };
            PinExplanation {
                json: serde_json::json!({"active": false, "definition_hash": hash.ok()}),
                text: vec![format!(
                    "pins: none configured (tool_pins, unpinned: hide, learn_pins): nothing is compared; definition: {shown}"
                )],
                denial: None,
            }
        });
    }
    let configured = pins.configured(tool).map(str::to_owned);
    let on_drift = match pins.on_drift {
        OnDrift::Hide => "hide",
        OnDrift::Audit => "audit",
    };
    let unpinned = match pins.unpinned {
        Unpinned::Allow => "allow",
        Unpinned::Hide => "hide",
    };
    let reason = |c: &mcp_guard::pins::Checked| c.denial.map(|d| d.reason());
    let outcome = |c: &mcp_guard::pins::Checked| match (c.denial, &c.drift) {
        (Some(d @ (PinDenial::Unverified | PinDenial::Unread)), _) => format!(
            "denied ({}) until a tools/list of its server shows its definition",
            d.reason()
        ),
        (Some(d), _) => format!("hidden from tools/list and denied ({})", d.reason()),
        (None, Some(_)) => "listed and allowed; the drift is recorded (on_drift: audit)".to_owned(),
        (None, None) => "listed and allowed".to_owned(),
    };
    let source = match (&configured, pins.learn_pins) {
        (Some(p), _) => format!("configured pin {p}"),
        (None, true) => {
            "no configured pin: learned from the first definition each server shows (learn_pins)"
                .to_owned()
        }
        (None, false) => format!("no pin (unpinned: {unpinned})"),
    };
    let mut text = vec![format!("pin: {source}; on_drift: {on_drift}")];
    let mut json = serde_json::Map::new();
    json.insert("active".into(), true.into());
    json.insert("pin".into(), serde_json::json!(configured));
    json.insert("learn_pins".into(), pins.learn_pins.into());
    json.insert("on_drift".into(), on_drift.into());
    json.insert("unpinned".into(), unpinned.into());
    // Before any tools/list of the server since Envoy started.
    let unseen = check_call(pins, tool, || Ok(None));
    if mcp_guard::pins::needs_def(pins, tool) {
        text.push(format!(
            "  before mcp-guard has seen its definition: {}",
            outcome(&unseen)
        ));
    }
    json.insert("unseen".into(), serde_json::json!(reason(&unseen)));
    let denial = match definition {
        None => {
            if let Some(pin) = &configured {
                let same = check_call(pins, tool, || {
                    Ok(Some(Def {
                        hash: Some(pin.clone()),
                        learned: None,
                    }))
                });
                let other = check_call(pins, tool, || {
                    Ok(Some(Def {
                        hash: Some("sha256:other".into()),
                        learned: None,
                    }))
                });
                text.push(format!(
                    "  a definition that matches the pin: {}",
                    outcome(&same)
                ));
                text.push(format!(
                    "  a changed definition (drift): {}",
                    outcome(&other)
                ));
                json.insert("matching".into(), serde_json::json!(reason(&same)));
                json.insert("drifted".into(), serde_json::json!(reason(&other)));
            } else if !pins.learn_pins {
                let c = check_call(pins, tool, || Ok(None));
                text.push(format!("  any definition: {}", outcome(&c)));
            }
            // Without a definition the call's fate depends on what the server shows, unless
            // the tool has no pin source at all (then no definition is even read).
            if mcp_guard::pins::needs_def(pins, tool) {
                None
            } else {
                reason(&unseen)
            }
        }
        Some(entry) => {
            let hash = mcp_guard::pins::definition_hash(entry);
            let hash_text = match &hash {
                Ok(h) => h.clone(),
                Err(e) => format!("none ({e})"),
            };
            let hash = hash.ok();
            // With learn_pins and no configured pin, a first sighting becomes the pin.
            let learned = (configured.is_none() && pins.learn_pins)
                .then(|| hash.clone())
                .flatten();
            let c = check_call(pins, tool, || {
                Ok(Some(Def {
                    hash: hash.clone(),
                    learned: learned.clone(),
                }))
            });
            let verdict = match (&c.drift, &configured, pins.learn_pins) {
                (Some(_), _, _) => "drift",
                (None, Some(_), _) => "match",
                (None, None, true) if hash.is_some() => "match (learned on first sight)",
                (None, None, _) => "unpinned",
            };
            text.push(format!(
                "  definition: {hash_text}: {verdict}: {}",
                outcome(&c)
            ));
            json.insert("definition_hash".into(), serde_json::json!(hash));
            json.insert("definition".into(), serde_json::json!(verdict));
            json.insert("denial".into(), serde_json::json!(reason(&c)));
            reason(&c)
        }
    };
    Some(PinExplanation {
        json: serde_json::Value::Object(json),
        text,
        denial,
    })
}

/// A file's text (`-`: standard input).
fn read_input(file: &str) -> Result<String, Failure> {
    if file == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| usage(format!("standard input: {e}")))?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).map_err(|e| usage(format!("{file}: {e}")))
    }
}

fn run_render(args: &RenderArgs) -> Result<u8, Failure> {
    let loaded = if args.no_check {
        match check::load(&args.file) {
            Ok(l) => l,
            Err(LoadError::Io(m)) => return Err(usage(m)),
            Err(LoadError::Syntax(p)) => {
                print_problems(&args.file, &[p]);
                return Err(Failure {
                    status: 1,
                    message: format!("{}: not a JSON or YAML document", shown(&args.file)),
                });
            }
        }
    } else {
        load_or_report(&args.file)?.0
    };
    let code = render::Code::Remote {
        url: args.image.clone(),
        sha256: args.sha256.clone(),
    };
    let (docs, note) = match args.format {
        Format::Ecds => (
            vec![render::ecds(
                &args.resource_name,
                &loaded.json,
                &args.wasm,
                args.bare,
            )],
            None,
        ),
        Format::Istio => (
            render::istio(
                &render::Istio {
                    name: args.name.clone(),
                    namespace: args.namespace.clone(),
                    code,
                    selector: args.selector.clone(),
                    context: args.context,
                },
                &loaded.json,
            ),
            Some(render::ISTIO_NOTE),
        ),
        Format::IstioWasmplugin => {
            let rls = (!args.no_rls).then(|| render::RateLimitService {
                host: args.rls_host.clone(),
                port: args.rls_port,
                domain: args.rls_domain.clone(),
                timeout_ms: args.rls_timeout_ms,
                failure_mode_deny: args.rls_failure_mode == FailureMode::Deny,
            });
            let config =
                render::istio_wasmplugin_config(&loaded.doc, rls.as_ref()).map_err(|problem| {
                    print_problems(&args.file, &[ConfigError::new("", problem)]);
                    Failure {
                        status: 1,
                        message: format!(
                            "{}: cannot be rendered as a WasmPlugin",
                            shown(&args.file)
                        ),
                    }
                })?;
            // What the filter will be given is the file plus the added fields: the same parser
            // `on_configure` runs must accept it (e.g. the cluster name's length).
            if !args.no_check {
                let json = config.to_compact_json().map_err(usage)?;
                if let Err(errors) = Config::from_json(json.as_bytes()) {
                    // Positions in the rendered compact JSON would not be the file's.
                    let problems: Vec<ConfigError> = errors
                        .into_vec()
                        .into_iter()
                        .map(|e| {
                            ConfigError::new(
                                e.field,
                                format!("{} (in the rendered pluginConfig)", e.problem),
                            )
                        })
                        .collect();
                    print_problems(&args.file, &problems);
                    return Err(Failure {
                        status: 1,
                        message: format!(
                            "{}: cannot be rendered as a WasmPlugin",
                            shown(&args.file)
                        ),
                    });
                }
            }
            (
                render::istio_wasmplugin(
                    &render::IstioWasmPlugin {
                        name: args.name.clone(),
                        namespace: args.namespace.clone(),
                        url: args.image.clone(),
                        sha256: args.sha256.clone(),
                        selector: args.selector.clone(),
                        context: args.context,
                    },
                    &config,
                ),
                Some(render::ISTIO_WASMPLUGIN_NOTE),
            )
        }
        Format::EnvoyGateway => {
            let target_refs = if args.target_ref.is_empty() {
                vec![render::TargetRef {
                    kind: "Gateway".into(),
                    name: "eg".into(),
                }]
            } else {
                args.target_ref.clone()
            };
            let gateway = args.gateway.clone().unwrap_or_else(|| {
                target_refs
                    .iter()
                    .find(|t| t.kind == "Gateway")
                    .map_or_else(|| "eg".to_owned(), |t| t.name.clone())
            });
            let listener = if args.listener.contains('/') {
                args.listener.clone()
            } else {
                format!("{}/{}/{}", args.namespace, gateway, args.listener)
            };
            (
                render::envoy_gateway(
                    &render::EnvoyGateway {
                        name: args.name.clone(),
                        namespace: args.namespace.clone(),
                        url: args.image.clone(),
                        sha256: args.sha256.clone(),
                        target_refs,
                        gateway,
                        listener,
                    },
                    &loaded.doc,
                ),
                Some(render::ENVOY_GATEWAY_NOTE),
            )
        }
    };
    let output = args.output.unwrap_or(match args.format {
        Format::Ecds => Output::Json,
        _ => Output::Yaml,
    });
    let text = match output {
        Output::Json => {
            let value = match docs.as_slice() {
                [one] => one.clone(),
                many => Doc::map([
                    ("apiVersion", Doc::str("v1")),
                    ("kind", Doc::str("List")),
                    ("items", Doc::seq(many.iter().cloned())),
                ]),
            };
            let mut text =
                serde_json::to_string_pretty(&value).map_err(|e| usage(e.to_string()))?;
            text.push('\n');
            text
        }
        Output::Yaml => {
            let body = serde_saphyr::to_string_multiple(&docs).map_err(|e| usage(e.to_string()))?;
            let mut text = note.unwrap_or_default().to_owned();
            if note.is_some() {
                text.push_str("---\n");
            }
            text.push_str(&body);
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text
        }
    };
    match &args.out {
        None => stdout(&text)?,
        Some(path) => {
            write_atomically(Path::new(path), &text).map_err(|e| usage(format!("{path}: {e}")))?
        }
    }
    Ok(0)
}

/// Writes `text` to a temporary file in `path`'s directory, syncs it, and renames it over
/// `path` (rename(2) is atomic: a watcher sees the old file or the new one, never a part).
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let base = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("mcp-guard");
    let tmp = dir.join(format!(".{base}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
