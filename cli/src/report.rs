//! `mcp-guard report`: a summary of an audit log (docs/audit-record.md), read line by line in
//! constant memory.
//!
//! The log is read with a bounded line buffer ([`MAX_LINE`]); each line is parsed as one audit
//! record and folded into fixed-size tables: every table keyed by a value from the log
//! (server, agent, tool, reason, version) holds at most a documented number of distinct keys
//! ([`MAX_SERVERS`], [`MAX_AGENTS`], [`MAX_TOOLS`], ...), and what comes after the table is
//! full is counted under `other`. A key longer than [`MAX_KEY_LEN`] bytes is counted under
//! `other` too (it is never cut: two cut names could merge). So memory is bounded whatever the
//! size of the log (`cli/tests/report_memory.rs` streams a large log and checks the peak RSS).
//!
//! What is counted (docs/cli.md "report"):
//! - a **call** is a record that is not the outcome of a deferred call (`correlated: true`),
//!   so a deferred call is counted once; its **outcome** is the record that settles it (any
//!   `output_status` but `deferred` and `input_required`);
//! - a **denial** is a record with `decision` `deny` or `dry_run_deny` (and `refused`: Envoy
//!   refused the request before mcp-guard ran), by [`denial_reason`];
//! - **rate-limited** calls have `output_status` `rate_limited`;
//! - a tool's **error rate** is its outcomes `error`, `tool_error` and `upstream_error` over
//!   its forwarded outcomes (those plus `success`).

use serde::Deserialize;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::BufRead;

/// Longest line read, in bytes (an audit record is a few hundred bytes; Envoy writes one per
/// line). A longer line is skipped, not buffered, and counted as `oversized`.
pub const MAX_LINE: usize = 1 << 20;
/// Distinct servers (`server_id`) kept; the rest are counted under `other`.
pub const MAX_SERVERS: usize = 64;
/// Distinct (`server_name`, `server_version`) pairs kept per server.
pub const MAX_SERVER_VERSIONS: usize = 16;
/// Distinct `protocol_version` values kept per server.
pub const MAX_PROTOCOL_VERSIONS: usize = 16;
/// Distinct agents (`agent_id`) kept.
pub const MAX_AGENTS: usize = 256;
/// Distinct tools kept per agent.
pub const MAX_AGENT_TOOLS: usize = 64;
/// Distinct tools (`tool_name` of `tools/call` records) kept in the tool table.
pub const MAX_TOOLS: usize = 256;
/// Distinct drifted tools kept.
pub const MAX_DRIFT_TOOLS: usize = 256;
/// Distinct denial reasons kept (the derived reasons are a fixed set; a future record's own
/// `reason` string is not).
pub const MAX_REASONS: usize = 64;
/// Distinct `decision` and `output_status` values kept (the schema has 4 and 11).
pub const MAX_STATUSES: usize = 32;
/// Longest key kept, in bytes; a longer one is counted under `other`.
pub const MAX_KEY_LEN: usize = 256;

/// A table with at most `bound` distinct keys; later keys (and keys over [`MAX_KEY_LEN`]
/// bytes) share the `other` entry.
#[derive(Debug)]
pub struct Bounded<V> {
    bound: usize,
    map: HashMap<String, V>,
    other: Option<V>,
}

impl<V: Default> Bounded<V> {
    fn new(bound: usize) -> Self {
        Bounded {
            bound,
            map: HashMap::new(),
            other: None,
        }
    }

    /// The entry of `key`, or `other` when the table is full or the key too long.
    fn entry(&mut self, key: &str) -> &mut V {
        if key.len() <= MAX_KEY_LEN && (self.map.contains_key(key) || self.map.len() < self.bound) {
            return self.map.entry(key.to_owned()).or_default();
        }
        self.other.get_or_insert_with(V::default)
    }

    /// Entries sorted by `rank` (descending) then key.
    fn sorted(&self, rank: impl Fn(&V) -> u64) -> Vec<(&str, &V)> {
        let mut v: Vec<(&str, &V)> = self.map.iter().map(|(k, v)| (k.as_str(), v)).collect();
        v.sort_by(|a, b| rank(b.1).cmp(&rank(a.1)).then(a.0.cmp(b.0)));
        v
    }
}

/// The members of an audit record the report reads; the others are skipped. A member of the
/// wrong type, or a member given twice, makes the line invalid.
#[derive(Debug, Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    agent_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    server_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    server_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    server_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    protocol_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    decision: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    output_status: Option<Cow<'a, str>>,
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    http_status: Option<i64>,
    #[serde(borrow, default)]
    identity_error: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
    #[serde(default)]
    correlated: Option<bool>,
    #[serde(borrow, default)]
    drift: Option<Vec<Drift<'a>>>,
    #[serde(default)]
    drift_truncated: Option<bool>,
}

/// One entry of a record's `drift` array (design: `{"tool", "hash", "pin"}`).
#[derive(Debug, Deserialize)]
struct Drift<'a> {
    #[serde(borrow)]
    tool: Cow<'a, str>,
    #[serde(borrow, default)]
    hash: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pin: Option<Cow<'a, str>>,
}

/// Counts of one server (`server_id`).
#[derive(Debug)]
pub struct Server {
    records: u64,
    /// (`server_name`, `server_version`) as `name\0version`; null is `-`.
    versions: Bounded<u64>,
    protocol_versions: Bounded<u64>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            records: 0,
            versions: Bounded::new(MAX_SERVER_VERSIONS),
            protocol_versions: Bounded::new(MAX_PROTOCOL_VERSIONS),
        }
    }
}

/// Calls of one agent to one tool.
#[derive(Debug, Default, Clone, Copy)]
pub struct AgentTool {
    calls: u64,
    denied: u64,
}

/// Counts of one agent.
#[derive(Debug)]
pub struct Agent {
    records: u64,
    calls: u64,
    denied: u64,
    rate_limited: u64,
    tools: Bounded<AgentTool>,
}

impl Default for Agent {
    fn default() -> Self {
        Agent {
            records: 0,
            calls: 0,
            denied: 0,
            rate_limited: 0,
            tools: Bounded::new(MAX_AGENT_TOOLS),
        }
    }
}

/// Counts of one tool (`tools/call` records).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tool {
    calls: u64,
    allowed: u64,
    denied: u64,
    dry_run_denied: u64,
    rate_limited: u64,
    success: u64,
    error: u64,
    tool_error: u64,
    upstream_error: u64,
}

impl Tool {
    fn errors(&self) -> u64 {
        self.error + self.tool_error + self.upstream_error
    }
    /// Errors over forwarded outcomes; `None` when there was none.
    fn error_rate(&self) -> Option<f64> {
        let forwarded = self.success + self.errors();
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        (forwarded > 0).then(|| self.errors() as f64 / forwarded as f64)
    }
}

/// Denials of one reason.
#[derive(Debug, Default, Clone, Copy)]
pub struct Denial {
    deny: u64,
    dry_run_deny: u64,
    refused: u64,
}

impl Denial {
    fn total(&self) -> u64 {
        self.deny + self.dry_run_deny + self.refused
    }
}

/// One drifted tool.
#[derive(Debug, Default)]
pub struct DriftSeen {
    records: u64,
    /// The hash and pin of the last record naming it (`None`: null).
    hash: Option<String>,
    pin: Option<String>,
}

/// The summary of a log; every table bounded (see the module documentation).
#[derive(Debug)]
pub struct Report {
    lines: u64,
    records: u64,
    invalid: u64,
    oversized: u64,
    first: Option<String>,
    last: Option<String>,
    calls: u64,
    rate_limited: u64,
    decisions: Bounded<u64>,
    outcomes: Bounded<u64>,
    servers: Bounded<Server>,
    agents: Bounded<Agent>,
    tools: Bounded<Tool>,
    denials: Bounded<Denial>,
    drifts: Bounded<DriftSeen>,
    drift_records: u64,
    drift_truncated: u64,
}

impl Default for Report {
    fn default() -> Self {
        Report {
            lines: 0,
            records: 0,
            invalid: 0,
            oversized: 0,
            first: None,
            last: None,
            calls: 0,
            rate_limited: 0,
            decisions: Bounded::new(MAX_STATUSES),
            outcomes: Bounded::new(MAX_STATUSES),
            servers: Bounded::new(MAX_SERVERS),
            agents: Bounded::new(MAX_AGENTS),
            tools: Bounded::new(MAX_TOOLS),
            denials: Bounded::new(MAX_REASONS),
            drifts: Bounded::new(MAX_DRIFT_TOOLS),
            drift_records: 0,
            drift_truncated: 0,
        }
    }
}

/// Whether `t` has the record's timestamp form, `YYYY-MM-DDTHH:MM:SS.mmmZ` (so that string
/// order is time order).
fn is_timestamp(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Why a record was denied, from its members: the record's own `reason` (Envoy refused it:
/// `proxy_rejected`), a denied call naming a drifted tool (`tool_drift`), the identity
/// (`unidentified`, `identity_unreadable`), a refused list response (`refusal`: `response_*`),
/// else the JSON-RPC error code mcp-guard answered (docs/audit-record.md `error_code`):
/// -32003 `policy` (the policy, annotations or a pin: the record does not say which), -32004
/// `rate_limited`, -32020 `header_mismatch`, -32022 `unsupported_version`, -32700 `parse`,
/// -32600 `invalid_request`, -32602 `invalid_params`, -32603 `internal`; HTTP 405
/// `method_not_allowed`; a dry-run denial (forwarded, so no code of mcp-guard's) `policy`;
/// anything else `other`.
fn denial_reason(r: &Record<'_>) -> Cow<'static, str> {
    if let Some(reason) = &r.reason {
        return Cow::Owned(reason.clone().into_owned());
    }
    if r.method.as_deref() == Some("tools/call")
        && r.drift.as_ref().is_some_and(|d| {
            d.iter()
                .any(|e| Some(e.tool.as_ref()) == r.tool_name.as_deref())
        })
    {
        return Cow::Borrowed("tool_drift");
    }
    match r.identity_error.as_deref() {
        Some("unreadable") => return Cow::Borrowed("identity_unreadable"),
        Some(_) if r.agent_id.as_deref() == Some("unidentified") => {
            return Cow::Borrowed("unidentified")
        }
        _ => {}
    }
    if let Some(refusal) = &r.refusal {
        return Cow::Owned(refusal.clone().into_owned());
    }
    if r.decision.as_deref() == Some("dry_run_deny") && r.error_code.is_none() {
        // Forwarded: the server answered; the policy would have denied it.
        return Cow::Borrowed("policy");
    }
    Cow::Borrowed(match (r.error_code, r.http_status) {
        (Some(-32003), _) => "policy",
        (Some(-32004), _) => "rate_limited",
        (Some(-32020), _) => "header_mismatch",
        (Some(-32022), _) => "unsupported_version",
        (Some(-32700), _) => "parse",
        (Some(-32600), _) => "invalid_request",
        (Some(-32602), _) => "invalid_params",
        (Some(-32603), _) => "internal",
        (None, Some(405)) => "method_not_allowed",
        _ => "other",
    })
}

/// How a line was read.
enum Line {
    /// The line (without its `\n`) is in the buffer.
    Read,
    /// The line was longer than [`MAX_LINE`]: skipped.
    Oversized,
    /// End of input.
    End,
}

/// Reads one line into `buf` (cleared first), never holding more than [`MAX_LINE`] bytes of
/// it.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Line> {
    buf.clear();
    let mut oversized = false;
    let mut any = false;
    loop {
        let chunk = match input.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(match (any, oversized) {
                (false, _) => Line::End,
                (true, true) => Line::Oversized,
                (true, false) => Line::Read,
            });
        }
        any = true;
        let (part, used, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (chunk.get(..i).unwrap_or_default(), i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        if !oversized {
            if buf.len() + part.len() > MAX_LINE {
                oversized = true;
                buf.clear();
            } else {
                buf.extend_from_slice(part);
            }
        }
        input.consume(used);
        if done {
            return Ok(if oversized {
                Line::Oversized
            } else {
                Line::Read
            });
        }
    }
}

impl Report {
    /// Reads the whole input; a read error (not a malformed line) is returned.
    pub fn read(input: &mut impl BufRead) -> std::io::Result<Report> {
        let mut report = Report::default();
        let mut buf = Vec::with_capacity(4096);
        loop {
            match read_line(input, &mut buf)? {
                Line::End => return Ok(report),
                Line::Oversized => {
                    report.lines += 1;
                    report.oversized += 1;
                }
                Line::Read => {
                    report.lines += 1;
                    let line = buf.strip_suffix(b"\r").unwrap_or(&buf);
                    report.add_line(line);
                }
            }
        }
    }

    /// Folds one line in: a record, or an invalid line.
    pub fn add_line(&mut self, line: &[u8]) {
        let is_object = line
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|&b| b == b'{');
        match serde_json::from_slice::<Record<'_>>(line) {
            Ok(r) if is_object => self.add(&r),
            _ => self.invalid += 1,
        }
    }

    fn add(&mut self, r: &Record<'_>) {
        self.records += 1;
        if let Some(t) = r.timestamp.as_deref().filter(|t| is_timestamp(t)) {
            if self.first.as_deref().is_none_or(|f| t < f) {
                self.first = Some(t.to_owned());
            }
            if self.last.as_deref().is_none_or(|l| t > l) {
                self.last = Some(t.to_owned());
            }
        }
        let decision = r.decision.as_deref().unwrap_or("-");
        let status = r.output_status.as_deref().unwrap_or("-");
        *self.decisions.entry(decision) += 1;
        *self.outcomes.entry(status) += 1;
        let is_call = r.correlated != Some(true);
        let is_outcome = !matches!(status, "deferred" | "input_required");
        let denied = matches!(decision, "deny" | "dry_run_deny" | "refused");
        let rate_limited = status == "rate_limited";
        if is_call {
            self.calls += 1;
        }
        if rate_limited {
            self.rate_limited += 1;
        }

        if let Some(id) = r.server_id.as_deref() {
            let server = self.servers.entry(id);
            server.records += 1;
            let name = r.server_name.as_deref().unwrap_or("-");
            let version = r.server_version.as_deref().unwrap_or("-");
            if r.server_name.is_some() || r.server_version.is_some() {
                *server.versions.entry(&format!("{name}\0{version}")) += 1;
            }
            if let Some(pv) = r.protocol_version.as_deref() {
                *server.protocol_versions.entry(pv) += 1;
            }
        }

        let tool = match (r.method.as_deref(), r.tool_name.as_deref()) {
            (Some("tools/call"), Some(t)) => Some(t),
            _ => None,
        };
        if let Some(id) = r.agent_id.as_deref() {
            let agent = self.agents.entry(id);
            agent.records += 1;
            if is_call {
                agent.calls += 1;
                agent.denied += u64::from(denied);
                agent.rate_limited += u64::from(rate_limited);
                if let Some(t) = tool {
                    let at = agent.tools.entry(t);
                    at.calls += 1;
                    at.denied += u64::from(denied);
                }
            }
        }
        if let Some(t) = tool {
            let entry = self.tools.entry(t);
            if is_call {
                entry.calls += 1;
                match decision {
                    "allow" => entry.allowed += 1,
                    "deny" => entry.denied += 1,
                    "dry_run_deny" => entry.dry_run_denied += 1,
                    _ => {}
                }
            }
            if is_outcome {
                match status {
                    "success" => entry.success += 1,
                    "error" => entry.error += 1,
                    "tool_error" => entry.tool_error += 1,
                    "upstream_error" => entry.upstream_error += 1,
                    "rate_limited" => entry.rate_limited += 1,
                    _ => {}
                }
            }
        }
        if denied && is_call {
            let d = self.denials.entry(&denial_reason(r));
            match decision {
                "deny" => d.deny += 1,
                "dry_run_deny" => d.dry_run_deny += 1,
                _ => d.refused += 1,
            }
        }
        if let Some(drift) = &r.drift {
            self.drift_records += 1;
            for e in drift {
                let seen = self.drifts.entry(&e.tool);
                seen.records += 1;
                seen.hash = e.hash.as_deref().map(bounded_hash);
                seen.pin = e.pin.as_deref().map(bounded_hash);
            }
        }
        if r.drift_truncated == Some(true) {
            self.drift_truncated += 1;
        }
    }

    /// The report as one JSON document (docs/cli.md "report --json").
    pub fn to_json(&self, source: &str) -> Value {
        let counts = |t: &Bounded<u64>| counts_json(t);
        let servers: Vec<Value> = self
            .servers
            .sorted(|s| s.records)
            .into_iter()
            .map(|(id, s)| server_json(Some(id), s))
            .collect();
        let agents: Vec<Value> = self
            .agents
            .sorted(|a| a.calls)
            .into_iter()
            .map(|(id, a)| agent_json(Some(id), a))
            .collect();
        let tools: Vec<Value> = self
            .tools
            .sorted(|t| t.calls)
            .into_iter()
            .map(|(name, t)| tool_json(Some(name), t))
            .collect();
        let denials: Vec<Value> = self
            .denials
            .sorted(Denial::total)
            .into_iter()
            .map(|(reason, d)| denial_json(Some(reason), d))
            .collect();
        let drifts: Vec<Value> = self
            .drifts
            .sorted(|d| d.records)
            .into_iter()
            .map(|(tool, d)| drift_json(Some(tool), d))
            .collect();
        json!({
            "source": source,
            "lines": {
                "total": self.lines,
                "records": self.records,
                "invalid": self.invalid,
                "oversized": self.oversized,
            },
            "first_timestamp": self.first,
            "last_timestamp": self.last,
            "calls": self.calls,
            "decisions": counts(&self.decisions),
            "output_status": counts(&self.outcomes),
            "rate_limited": self.rate_limited,
            "servers": servers,
            "servers_other": self.servers.other.as_ref().map(|s| server_json(None, s)),
            "agents": agents,
            "agents_other": self.agents.other.as_ref().map(|a| agent_json(None, a)),
            "tools": tools,
            "tools_other": self.tools.other.as_ref().map(|t| tool_json(None, t)),
            "denials": denials,
            "denials_other": self.denials.other.as_ref().map(|d| denial_json(None, d)),
            "drift": {
                "records": self.drift_records,
                "truncated_records": self.drift_truncated,
                "tools": drifts,
                "tools_other": self.drifts.other.as_ref().map(|d| drift_json(None, d)),
            },
            "bounds": {
                "max_line_bytes": MAX_LINE,
                "max_key_bytes": MAX_KEY_LEN,
                "servers": MAX_SERVERS,
                "server_versions": MAX_SERVER_VERSIONS,
                "protocol_versions": MAX_PROTOCOL_VERSIONS,
                "agents": MAX_AGENTS,
                "agent_tools": MAX_AGENT_TOOLS,
                "tools": MAX_TOOLS,
                "drift_tools": MAX_DRIFT_TOOLS,
                "denial_reasons": MAX_REASONS,
            },
        })
    }

    /// The report as text tables for a human (docs/cli.md "report").
    pub fn to_text(&self, source: &str) -> String {
        let mut out = String::new();
        let line = |out: &mut String, s: &str| {
            out.push_str(s);
            out.push('\n');
        };
        line(&mut out, &format!("audit log: {source}"));
        line(
            &mut out,
            &format!(
                "lines: {} ({} records, {} invalid, {} over {} bytes)",
                self.lines, self.records, self.invalid, self.oversized, MAX_LINE
            ),
        );
        line(
            &mut out,
            &format!(
                "period: {} .. {}",
                self.first.as_deref().unwrap_or("-"),
                self.last.as_deref().unwrap_or("-")
            ),
        );
        let joined = |t: &Bounded<u64>| {
            let mut parts: Vec<String> = t
                .sorted(|v| *v)
                .into_iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            if let Some(o) = t.other {
                parts.push(format!("other {o}"));
            }
            if parts.is_empty() {
                "-".to_owned()
            } else {
                parts.join(", ")
            }
        };
        line(
            &mut out,
            &format!(
                "calls: {} (rate-limited {}); decisions: {}",
                self.calls,
                self.rate_limited,
                joined(&self.decisions)
            ),
        );
        line(&mut out, &format!("outcomes: {}", joined(&self.outcomes)));

        // Servers.
        let mut rows = vec![row([
            "server",
            "name",
            "version",
            "protocol versions",
            "records",
        ])];
        let server_rows = |id: &str, s: &Server, rows: &mut Vec<Vec<String>>| {
            let mut versions: Vec<(String, String)> = s
                .versions
                .sorted(|v| *v)
                .into_iter()
                .map(|(k, _)| {
                    let (n, v) = k.split_once('\0').unwrap_or((k, "-"));
                    (n.to_owned(), v.to_owned())
                })
                .collect();
            if s.versions.other.is_some() {
                versions.push(("other".into(), "other".into()));
            }
            if versions.is_empty() {
                versions.push(("-".into(), "-".into()));
            }
            let pv = joined(&s.protocol_versions);
            for (i, (n, v)) in versions.into_iter().enumerate() {
                let first = i == 0;
                rows.push(vec![
                    if first { id.to_owned() } else { String::new() },
                    n,
                    v,
                    if first { pv.clone() } else { String::new() },
                    if first {
                        s.records.to_string()
                    } else {
                        String::new()
                    },
                ]);
            }
        };
        for (id, s) in self.servers.sorted(|s| s.records) {
            server_rows(id, s, &mut rows);
        }
        if let Some(s) = &self.servers.other {
            server_rows("(other)", s, &mut rows);
        }
        section(&mut out, "servers", rows);

        // Agents and their tools.
        let mut rows = vec![row(["agent", "tool", "calls", "denied", "rate-limited"])];
        let agent_rows = |id: &str, a: &Agent, rows: &mut Vec<Vec<String>>| {
            rows.push(vec![
                id.to_owned(),
                "(all methods)".into(),
                a.calls.to_string(),
                a.denied.to_string(),
                a.rate_limited.to_string(),
            ]);
            for (t, at) in a.tools.sorted(|t| t.calls) {
                rows.push(vec![
                    String::new(),
                    t.to_owned(),
                    at.calls.to_string(),
                    at.denied.to_string(),
                    String::new(),
                ]);
            }
            if let Some(at) = &a.tools.other {
                rows.push(vec![
                    String::new(),
                    "(other)".into(),
                    at.calls.to_string(),
                    at.denied.to_string(),
                    String::new(),
                ]);
            }
        };
        for (id, a) in self.agents.sorted(|a| a.calls) {
            agent_rows(id, a, &mut rows);
        }
        if let Some(a) = &self.agents.other {
            agent_rows("(other)", a, &mut rows);
        }
        section(&mut out, "agents (tools/call per tool)", rows);

        // Tools.
        let mut rows = vec![row([
            "tool",
            "calls",
            "allowed",
            "denied",
            "dry-run",
            "rate-limited",
            "success",
            "error",
            "tool_error",
            "upstream_error",
            "error rate",
        ])];
        let tool_row = |name: &str, t: &Tool| {
            vec![
                name.to_owned(),
                t.calls.to_string(),
                t.allowed.to_string(),
                t.denied.to_string(),
                t.dry_run_denied.to_string(),
                t.rate_limited.to_string(),
                t.success.to_string(),
                t.error.to_string(),
                t.tool_error.to_string(),
                t.upstream_error.to_string(),
                t.error_rate()
                    .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
            ]
        };
        for (name, t) in self.tools.sorted(|t| t.calls) {
            rows.push(tool_row(name, t));
        }
        if let Some(t) = &self.tools.other {
            rows.push(tool_row("(other)", t));
        }
        section(&mut out, "tools", rows);

        // Denials.
        let mut rows = vec![row(["reason", "deny", "dry_run_deny", "refused"])];
        let denial_row = |reason: &str, d: &Denial| {
            vec![
                reason.to_owned(),
                d.deny.to_string(),
                d.dry_run_deny.to_string(),
                d.refused.to_string(),
            ]
        };
        for (reason, d) in self.denials.sorted(Denial::total) {
            rows.push(denial_row(reason, d));
        }
        if let Some(d) = &self.denials.other {
            rows.push(denial_row("(other)", d));
        }
        section(&mut out, "denials by reason", rows);

        // Drifts.
        let mut rows = vec![row(["tool", "records", "last hash", "pin"])];
        let drift_row = |tool: &str, d: &DriftSeen| {
            vec![
                tool.to_owned(),
                d.records.to_string(),
                d.hash.clone().unwrap_or_else(|| "null".into()),
                d.pin.clone().unwrap_or_else(|| "null".into()),
            ]
        };
        for (tool, d) in self.drifts.sorted(|d| d.records) {
            rows.push(drift_row(tool, d));
        }
        if let Some(d) = &self.drifts.other {
            rows.push(drift_row("(other)", d));
        }
        section(
            &mut out,
            &format!(
                "drift ({} records name drifted tools, {} truncated)",
                self.drift_records, self.drift_truncated
            ),
            rows,
        );
        out
    }
}

/// A hash as kept: at most [`MAX_KEY_LEN`] bytes (a real hash is 71), else `invalid`.
fn bounded_hash(h: &str) -> String {
    if h.len() <= MAX_KEY_LEN {
        h.to_owned()
    } else {
        "invalid".to_owned()
    }
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|&c| c.to_owned()).collect()
}

/// A titled table: the header row, then the rows, columns padded to their widest cell; "(none)"
/// when there are no rows. Control characters in cells (from the log) are shown escaped.
fn section(out: &mut String, title: &str, rows: Vec<Vec<String>>) {
    out.push('\n');
    out.push_str(title);
    out.push_str(":\n");
    if rows.len() <= 1 {
        out.push_str("  (none)\n");
        return;
    }
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| r.into_iter().map(|c| printable(&c)).collect())
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in &rows {
        let mut text = String::from(" ");
        for (cell, width) in r.iter().zip(&widths) {
            text.push(' ');
            text.push_str(cell);
            for _ in cell.chars().count()..*width {
                text.push(' ');
            }
            text.push(' ');
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
}

/// `s` with control characters escaped (`\u{..}`), so a value from the log cannot move the
/// terminal's cursor or forge table lines.
fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn counts_json(t: &Bounded<u64>) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in t.sorted(|v| *v) {
        m.insert(k.to_owned(), json!(v));
    }
    Value::Object(m)
}

fn server_json(id: Option<&str>, s: &Server) -> Value {
    let versions: Vec<Value> = s
        .versions
        .sorted(|v| *v)
        .into_iter()
        .map(|(k, n)| {
            let (name, version) = k.split_once('\0').unwrap_or((k, "-"));
            let null_if_dash = |v: &str| if v == "-" { Value::Null } else { json!(v) };
            json!({"server_name": null_if_dash(name), "server_version": null_if_dash(version), "records": n})
        })
        .collect();
    json!({
        "server_id": id,
        "records": s.records,
        "versions": versions,
        "versions_other": s.versions.other,
        "protocol_versions": counts_json(&s.protocol_versions),
        "protocol_versions_other": s.protocol_versions.other,
    })
}

fn agent_json(id: Option<&str>, a: &Agent) -> Value {
    let tools: Vec<Value> = a
        .tools
        .sorted(|t| t.calls)
        .into_iter()
        .map(|(name, t)| json!({"tool": name, "calls": t.calls, "denied": t.denied}))
        .collect();
    json!({
        "agent_id": id,
        "records": a.records,
        "calls": a.calls,
        "denied": a.denied,
        "rate_limited": a.rate_limited,
        "tools": tools,
        "tools_other": a.tools.other.map(|t| json!({"calls": t.calls, "denied": t.denied})),
    })
}

fn tool_json(name: Option<&str>, t: &Tool) -> Value {
    json!({
        "tool": name,
        "calls": t.calls,
        "allowed": t.allowed,
        "denied": t.denied,
        "dry_run_denied": t.dry_run_denied,
        "rate_limited": t.rate_limited,
        "success": t.success,
        "error": t.error,
        "tool_error": t.tool_error,
        "upstream_error": t.upstream_error,
        "error_rate": t.error_rate(),
    })
}

fn denial_json(reason: Option<&str>, d: &Denial) -> Value {
    json!({"reason": reason, "deny": d.deny, "dry_run_deny": d.dry_run_deny, "refused": d.refused})
}

fn drift_json(tool: Option<&str>, d: &DriftSeen) -> Value {
    json!({"tool": tool, "records": d.records, "hash": d.hash, "pin": d.pin})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn report(text: &str) -> Value {
        Report::read(&mut text.as_bytes()).unwrap().to_json("t")
    }

    #[test]
    fn lines_are_read_with_a_bound() {
        let long = format!("{{\"x\":\"{}\"}}\n", "a".repeat(MAX_LINE));
        let text = format!("{long}{{}}\nnot json\n[1]\n\n{{\"timestamp\":1}}\n{{}}");
        let r = report(&text);
        assert_eq!(r["lines"]["total"], 7);
        assert_eq!(r["lines"]["oversized"], 1);
        assert_eq!(r["lines"]["records"], 2);
        // `not json`, an array, a blank line, a member of the wrong type.
        assert_eq!(r["lines"]["invalid"], 4);
    }

    #[test]
    fn a_duplicated_member_makes_the_line_invalid() {
        let r = report("{\"decision\":\"allow\",\"decision\":\"deny\"}\n");
        assert_eq!(r["lines"]["invalid"], 1);
        assert_eq!(r["lines"]["records"], 0);
    }

    #[test]
    fn tables_are_bounded_and_the_rest_is_other() {
        let mut text = String::new();
        for i in 0..(MAX_AGENTS + 10) {
            text.push_str(&format!(
                "{{\"agent_id\":\"a{i}\",\"method\":\"tools/call\",\"tool_name\":\"t{i}\",\"decision\":\"allow\",\"output_status\":\"success\"}}\n"
            ));
        }
        text.push_str(&format!(
            "{{\"agent_id\":\"{}\",\"method\":\"tools/call\",\"tool_name\":\"x\"}}\n",
            "k".repeat(MAX_KEY_LEN + 1)
        ));
        let r = report(&text);
        assert_eq!(r["agents"].as_array().unwrap().len(), MAX_AGENTS);
        assert_eq!(r["agents_other"]["calls"], 11);
        assert_eq!(r["tools"].as_array().unwrap().len(), MAX_TOOLS);
        assert_eq!(r["tools_other"]["calls"], 11);
    }

    #[test]
    fn timestamps_are_the_earliest_and_latest() {
        let r = report(
            "{\"timestamp\":\"2026-12-03T10:00:01.000Z\"}\n{\"timestamp\":\"2026-12-03T09:59:59.999Z\"}\n{\"timestamp\":\"garbage\"}\n{\"timestamp\":\"2026-12-03T10:00:00.500Z\"}\n",
        );
        assert_eq!(r["first_timestamp"], "2026-12-03T09:59:59.999Z");
        assert_eq!(r["last_timestamp"], "2026-12-03T10:00:01.000Z");
    }

    #[test]
    fn denial_reasons_come_from_the_record() {
        let r = report(concat!(
            r#"{"agent_id":"a","method":"tools/call","tool_name":"x","decision":"deny","output_status":"denied","error_code":-32003}"#,
            "\n",
            r#"{"agent_id":"a","method":"tools/call","tool_name":"x","decision":"dry_run_deny","output_status":"success","error_code":null}"#,
            "\n",
            r#"{"agent_id":"unidentified","identity_error":"absent","method":"tools/list","decision":"deny","output_status":"denied","error_code":-32003}"#,
            "\n",
            r#"{"agent_id":"a","method":"tools/call","tool_name":"x","decision":"deny","output_status":"denied","error_code":-32003,"drift":[{"tool":"x","hash":"sha256:1","pin":"sha256:2"}]}"#,
            "\n",
            r#"{"agent_id":"a","method":"tools/call","tool_name":"x","decision":"deny","output_status":"denied","error_code":-32003,"refusal":"tool_unpinned"}"#,
            "\n",
            r#"{"decision":"refused","reason":"proxy_rejected","output_status":"refused","http_status":400}"#,
            "\n",
            r#"{"agent_id":"a","method":"tools/call","tool_name":"x","decision":"allow","output_status":"rate_limited","error_code":-32004}"#,
            "\n",
        ));
        let by: HashMap<String, Value> = r["denials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["reason"].as_str().unwrap().to_owned(), d.clone()))
            .collect();
        assert_eq!(by["policy"]["deny"], 1);
        assert_eq!(by["policy"]["dry_run_deny"], 1);
        assert_eq!(by["unidentified"]["deny"], 1);
        assert_eq!(by["tool_drift"]["deny"], 1);
        assert_eq!(by["tool_unpinned"]["deny"], 1);
        assert_eq!(by["proxy_rejected"]["refused"], 1);
        assert_eq!(by.len(), 5, "{by:?}");
        assert_eq!(r["rate_limited"], 1);
        let x = &r["tools"][0];
        assert_eq!(x["calls"], 5);
        assert_eq!(x["denied"], 3);
        assert_eq!(x["dry_run_denied"], 1);
        assert_eq!(x["rate_limited"], 1);
        assert_eq!(r["drift"]["tools"][0]["hash"], "sha256:1");
    }

    #[test]
    fn a_deferred_call_is_counted_once_with_its_outcome() {
        let r = report(concat!(
            r#"{"agent_id":"a","method":"tools/call","tool_name":"x","decision":"allow","output_status":"deferred"}"#,
            "\n",
            r#"{"agent_id":"a","method":"tools/call","tool_name":"x","decision":"allow","output_status":"tool_error","correlated":true}"#,
            "\n",
            r#"{"agent_id":"a","method":"tools/call","tool_name":"x","decision":"allow","output_status":"success"}"#,
            "\n",
        ));
        let x = &r["tools"][0];
        assert_eq!(x["calls"], 2);
        assert_eq!(x["tool_error"], 1);
        assert_eq!(x["success"], 1);
        assert_eq!(x["error_rate"], 0.5);
        assert_eq!(r["agents"][0]["tools"][0]["calls"], 2);
    }

    #[test]
    fn servers_with_versions_and_old_records_without() {
        let r = report(concat!(
            r#"{"server_id":"s","server_name":"demo","server_version":"1.0","protocol_version":"2025-11-25"}"#,
            "\n",
            r#"{"server_id":"s","server_name":"demo","server_version":"1.1","protocol_version":"2025-11-25"}"#,
            "\n",
            r#"{"server_id":"s","protocol_version":null}"#,
            "\n",
        ));
        let s = &r["servers"][0];
        assert_eq!(s["server_id"], "s");
        assert_eq!(s["records"], 3);
        assert_eq!(s["versions"].as_array().unwrap().len(), 2);
        assert_eq!(s["protocol_versions"]["2025-11-25"], 2);
    }

    #[test]
    fn text_escapes_control_characters_from_the_log() {
        let r = Report::read(
            &mut "{\"agent_id\":\"evil\\u001b[2J\",\"method\":\"tools/call\",\"tool_name\":\"x\"}\n"
                .as_bytes(),
        )
        .unwrap();
        let text = r.to_text("t");
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.contains("evil\\u{1b}[2J"), "{text}");
    }
}
