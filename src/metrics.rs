//! Envoy stats mcp-guard defines (proxy-wasm `define_metric` / `increment_metric`; Envoy
//! prefixes them `wasmcustom.`). Labels are encoded in the stat name as `.<label>.<value>`
//! pairs, which the shipped `stats_config.stats_tags` (docs/metrics.md) extract, so
//! `/stats/prometheus` shows e.g.
//! `envoy_wasmcustom_mcp_guard_requests{mcp_method="tools/call",mcp_decision="allow"}`.
//!
//! Counters:
//! - `mcp_guard.requests.method.<method>.decision.<decision>`: every JSON-RPC message decided;
//! - `mcp_guard.tool_calls.tool.<tool>.decision.<decision>`: tools/call by tool, at most
//!   `max_tool_metrics` distinct tools per worker, the rest as `other`;
//! - `mcp_guard.denials.reason.<reason>`: refusals (policy, annotations, unidentified,
//!   identity_unreadable, and the tool pins' tool_drift, tool_unpinned, tool_unverified);
//! - `mcp_guard.tool_drift.tool.<tool>`: drifted tools seen in `tools/list` responses (one per
//!   drifted entry per response; `crate::pins`), by tool with the same bounded tool labels as
//!   `tool_calls`;
//! - `mcp_guard.refusals.reason.<reason>`: malformed requests refused (parse, header_mismatch,
//!   batch, encoding, too_large), MCP revisions not accepted (unsupported_version), GET or
//!   DELETE from a 2026-07-28 client (method_not_allowed), requests refused because the proxy could not give mcp-guard
//!   their headers or body (request_read), and list responses curation could not read
//!   (response_encoding, response_content_type, response_charset, response_utf8,
//!   response_shape, response_trailing, response_id, response_read:
//!   `crate::curation::Unreadable::reason`);
//! - `mcp_guard.rate_limited`: calls answered 429;
//! - `mcp_guard.rls_errors`: calls to the RLS (`rate_limit_service`) without a usable answer;
//! - `mcp_guard.sse_events`: SSE events scanned in responses;
//! - `mcp_guard.list_rewrites.list.<tools|prompts|resources>`: curated list responses;
//! - `mcp_guard.config.loads`, `mcp_guard.config.rejects`: plugin configurations accepted or
//!   refused by `on_configure`.
//!
//! # Bounds
//!
//! Envoy never frees a stat, so no label may take a value from client or server input without
//! a bound. Every label is reduced to a [`Key`] before a stat is named or looked up:
//! - method: one of the [`METHOD_LABELS`] MCP methods ([`crate::mcp::MCP_METHODS`]), `other`
//!   for any other method, `-` for a client-sent response or an unreadable body;
//! - tool: at most [`MAX_TOOL_LABELS`] distinct tools per worker VM over its whole life (the
//!   first tools counted while fewer than the configured `max_tool_metrics` have a label), every
//!   other tool `other` ([`ToolLabels`]); workers pick their tools independently, so Envoy-wide
//!   at most `concurrency` × `max_tool_metrics` tool labels plus `other`;
//! - decision, reason, list: string constants of the code (`&'static str`), never input;
//! - no stat carries a prompt name, resource URI, agent, session or server id.
//!
//! So a worker defines at most [`MAX_STATS`] stats, and [`Stats`], the worker's cache of stat
//! ids, holds at most that many entries, whatever the traffic.

use crate::mcp::MCP_METHODS;
use std::collections::HashMap;

/// Default cap on distinct tool labels per worker (`max_tool_metrics`).
pub const DEFAULT_MAX_TOOL_LABELS: usize = 50;
/// Largest `max_tool_metrics` accepted (a larger configured value is lowered to it), and so
/// the most tool labels a worker VM ever gives out, across every configuration it loads.
pub const MAX_TOOL_LABELS: usize = 1000;
/// The label value for methods outside [`MCP_METHODS`] and tools beyond the cap.
pub const OTHER: &str = "other";
/// The method label of a client-sent JSON-RPC response, or of a body that could not be read.
pub const NO_METHOD: &str = "-";
/// Distinct method labels: the MCP methods, [`OTHER`] and [`NO_METHOD`].
pub const METHOD_LABELS: usize = MCP_METHODS.len() + 2;
/// Distinct decision labels (`crate::policy::Decision`: `allow`, `deny`, `dry_run_deny`).
pub const DECISIONS: usize = 3;
/// Distinct `denials` reasons (`policy`, `annotations`, `unidentified`, `identity_unreadable`,
/// `tool_drift`, `tool_unpinned`, `tool_unverified`).
pub const DENIAL_REASONS: usize = 7;
/// Distinct `refusals` reasons: `parse`, `header_mismatch`, `batch`, `encoding`, `too_large`,
/// `request_read`, `unsupported_version`, `method_not_allowed`, and the eight `response_*`
/// labels of `crate::curation::Unreadable::reason`.
pub const REFUSAL_REASONS: usize = 16;
/// Distinct `list_rewrites` lists (`tools`, `prompts`, `resources`).
pub const LISTS: usize = 3;
/// Stats without labels (`rate_limited`, `rls_errors`, `sse_events`, `config.loads`,
/// `config.rejects`).
pub const UNLABELLED: usize = 5;
/// Most distinct stats one worker VM defines with `max_tool_metrics` = `max_tool_labels`:
/// methods × decisions + (tools + `other`) × (decisions + `tool_drift`) + the reasons, lists and
/// unlabelled stats.
pub const fn max_stats(max_tool_labels: usize) -> usize {
    METHOD_LABELS * DECISIONS
        + (max_tool_labels + 1) * (DECISIONS + 1)
        + DENIAL_REASONS
        + REFUSAL_REASONS
        + LISTS
        + UNLABELLED
}
/// Most distinct stats one worker VM ever defines (with [`MAX_TOOL_LABELS`]), and so the most
/// entries of its [`Stats`] cache.
pub const MAX_STATS: usize = max_stats(MAX_TOOL_LABELS);

/// One counter increment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metric<'a> {
    /// A JSON-RPC message decided.
    Request {
        /// Its method as sent; `None` for a client-sent response or an unreadable body.
        method: Option<&'a str>,
        /// `allow`, `deny` or `dry_run_deny`.
        decision: &'static str,
    },
    /// A `tools/call` decided.
    ToolCall {
        /// The tool as sent.
        tool: &'a str,
        /// The decision.
        decision: &'static str,
        /// Distinct tool labels allowed per worker (`max_tool_metrics`).
        max_labels: usize,
    },
    /// A refusal by policy: `policy`, `annotations`, `unidentified`, `identity_unreadable`,
    /// `tool_drift`, `tool_unpinned`, `tool_unverified`.
    Denial(&'static str),
    /// A drifted tool in a `tools/list` response (`crate::pins`).
    ToolDrift {
        /// The tool as sent.
        tool: &'a str,
        /// Distinct tool labels allowed per worker (`max_tool_metrics`).
        max_labels: usize,
    },
    /// A malformed request refused: `parse`, `header_mismatch`, `batch`, `encoding`, `too_large`,
    /// `unsupported_version` (an MCP revision not accepted, -32022), `method_not_allowed` (a
    /// GET or DELETE from a 2026-07-28 client, 405);
    /// a request whose headers or body the host could not give: `request_read`; or a list
    /// response that could not be curated: one of the fixed
    /// [`crate::curation::Unreadable::reason`] labels (`response_*`).
    Refusal(&'static str),
    /// A call answered with HTTP 429.
    RateLimited,
    /// An RLS call made by mcp-guard without a usable answer (`crate::ratelimit`).
    RlsError,
    /// SSE events scanned.
    SseEvents,
    /// A list response curated: `tools`, `prompts`, `resources`.
    ListRewrite(&'static str),
    /// A plugin configuration accepted.
    ConfigLoad,
    /// A plugin configuration refused.
    ConfigReject,
}

/// The longest stat-name segment, in bytes.
pub const MAX_SEGMENT: usize = 64;

/// Writes the stat-name segment of `value` into `buf` and returns it: characters other than
/// ASCII letters, digits, `_`, `-`, `/`, `:` become `_` (a `.` would split the name), empty
/// becomes `_`, at most [`MAX_SEGMENT`] characters (each one byte). No allocation.
fn segment_into<'b>(value: &str, buf: &'b mut [u8; MAX_SEGMENT]) -> &'b str {
    let mut len = 0;
    for (slot, c) in buf.iter_mut().zip(value.chars()) {
        *slot = if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | ':') {
            c as u8
        } else {
            b'_'
        };
        len += 1;
    }
    if len == 0 {
        if let Some(first) = buf.first_mut() {
            *first = b'_';
        }
        len = 1;
    }
    // Only ASCII bytes were written.
    buf.get(..len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("_")
}

/// A stat-name segment (see `segment_into`): ASCII, 1 to [`MAX_SEGMENT`] bytes.
pub fn segment(value: &str) -> String {
    let mut buf = [0u8; MAX_SEGMENT];
    segment_into(value, &mut buf).to_owned()
}

/// The method label of `method` (`None`: a client-sent response or an unreadable body): the
/// method itself when it is one of [`MCP_METHODS`] (exact, case-sensitive), [`OTHER`] for any
/// other method, [`NO_METHOD`] for none. One of [`METHOD_LABELS`] values.
pub fn method_label(method: Option<&str>) -> &'static str {
    match method {
        None => NO_METHOD,
        Some(m) => MCP_METHODS
            .iter()
            .find(|known| **known == m)
            .copied()
            .unwrap_or(OTHER),
    }
}

/// A tool label handed out by [`ToolLabels`]: its index there, or `None` for [`OTHER`].
pub type ToolLabel = Option<u16>;

/// The distinct tool labels a worker has given out, at most [`MAX_TOOL_LABELS`] over the life
/// of the VM (whatever caps later configurations set): keyed by the tool's [`segment`], never by
/// the raw name, so the table holds at most that many strings of at most [`MAX_SEGMENT`] bytes.
#[derive(Debug, Default)]
pub struct ToolLabels {
    names: Vec<String>,
    index: HashMap<String, u16>,
}

impl ToolLabels {
    /// The label of `tool`: its own while fewer than `max` (itself at most
    /// [`MAX_TOOL_LABELS`]) tools have one, else [`OTHER`] (`None`); a tool whose segment is
    /// `other` is counted as [`OTHER`]. A tool keeps the label it was given. No allocation
    /// unless a new label is given out.
    pub fn label(&mut self, tool: &str, max: usize) -> ToolLabel {
        let mut buf = [0u8; MAX_SEGMENT];
        let seg = segment_into(tool, &mut buf);
        if let Some(i) = self.index.get(seg) {
            return Some(*i);
        }
        if seg == OTHER {
            return None;
        }
        if self.names.len() >= max.min(MAX_TOOL_LABELS) {
            return None;
        }
        let i = u16::try_from(self.names.len()).ok()?;
        self.names.push(seg.to_owned());
        self.index.insert(seg.to_owned(), i);
        Some(i)
    }

    /// The text of a label.
    pub fn text(&self, label: ToolLabel) -> &str {
        label
            .and_then(|i| self.names.get(usize::from(i)))
            .map_or(OTHER, String::as_str)
    }

    /// How many tools have a label of their own.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no tool has a label of its own yet.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// What names one stat, every label already bounded: a [`Metric`] reduced by
/// [`method_label`] and [`ToolLabels`]. There are at most [`MAX_STATS`] distinct keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// `requests` by method label and decision.
    Request(&'static str, &'static str),
    /// `tool_calls` by tool label and decision.
    ToolCall(ToolLabel, &'static str),
    /// `denials` by reason.
    Denial(&'static str),
    /// `tool_drift` by tool label.
    ToolDrift(ToolLabel),
    /// `refusals` by reason.
    Refusal(&'static str),
    /// `rate_limited`.
    RateLimited,
    /// `rls_errors`.
    RlsError,
    /// `sse_events`.
    SseEvents,
    /// `list_rewrites` by list.
    ListRewrite(&'static str),
    /// `config.loads`.
    ConfigLoad,
    /// `config.rejects`.
    ConfigReject,
}

impl Key {
    /// The stat name (without Envoy's `wasmcustom.` prefix); `labels` must be the table that
    /// gave out the key's tool label.
    pub fn name(&self, labels: &ToolLabels) -> String {
        let seg = segment;
        match self {
            Key::Request(method, decision) => format!(
                "mcp_guard.requests.method.{}.decision.{}",
                seg(method),
                seg(decision)
            ),
            Key::ToolCall(tool, decision) => format!(
                "mcp_guard.tool_calls.tool.{}.decision.{}",
                labels.text(*tool),
                seg(decision)
            ),
            Key::Denial(reason) => format!("mcp_guard.denials.reason.{}", seg(reason)),
            Key::ToolDrift(tool) => format!("mcp_guard.tool_drift.tool.{}", labels.text(*tool)),
            Key::Refusal(reason) => format!("mcp_guard.refusals.reason.{}", seg(reason)),
            Key::RateLimited => "mcp_guard.rate_limited".to_owned(),
            Key::RlsError => "mcp_guard.rls_errors".to_owned(),
            Key::SseEvents => "mcp_guard.sse_events".to_owned(),
            Key::ListRewrite(list) => format!("mcp_guard.list_rewrites.list.{}", seg(list)),
            Key::ConfigLoad => "mcp_guard.config.loads".to_owned(),
            Key::ConfigReject => "mcp_guard.config.rejects".to_owned(),
        }
    }
}

impl Metric<'_> {
    /// The bounded key of this metric's stat, giving `tool` a label in `labels` if it may have
    /// one.
    pub fn key(&self, labels: &mut ToolLabels) -> Key {
        match self {
            Metric::Request { method, decision } => Key::Request(method_label(*method), decision),
            Metric::ToolCall {
                tool,
                decision,
                max_labels,
            } => Key::ToolCall(labels.label(tool, *max_labels), decision),
            Metric::Denial(reason) => Key::Denial(reason),
            Metric::ToolDrift { tool, max_labels } => {
                Key::ToolDrift(labels.label(tool, *max_labels))
            }
            Metric::Refusal(reason) => Key::Refusal(reason),
            Metric::RateLimited => Key::RateLimited,
            Metric::RlsError => Key::RlsError,
            Metric::SseEvents => Key::SseEvents,
            Metric::ListRewrite(list) => Key::ListRewrite(list),
            Metric::ConfigLoad => Key::ConfigLoad,
            Metric::ConfigReject => Key::ConfigReject,
        }
    }

    /// The stat name (without Envoy's `wasmcustom.` prefix).
    pub fn name(&self, labels: &mut ToolLabels) -> String {
        self.key(labels).name(labels)
    }
}

/// One worker's stat ids (`I`: the host's id type), by bounded [`Key`]: at most [`MAX_STATS`]
/// entries, since a key never holds input. The hot path (a stat already defined) neither
/// formats a name nor allocates.
#[derive(Debug)]
pub struct Stats<I> {
    labels: ToolLabels,
    ids: HashMap<Key, I>,
}

impl<I> Default for Stats<I> {
    fn default() -> Self {
        Stats {
            labels: ToolLabels::default(),
            ids: HashMap::new(),
        }
    }
}

impl<I: Copy> Stats<I> {
    /// The stat id of `metric`. On the first use of its key, `define` is given the stat name
    /// and returns the new id (`None`: the host could not define it; nothing is cached, so the
    /// next use tries again).
    pub fn id(&mut self, metric: &Metric<'_>, define: impl FnOnce(&str) -> Option<I>) -> Option<I> {
        let key = metric.key(&mut self.labels);
        if let Some(id) = self.ids.get(&key) {
            return Some(*id);
        }
        let id = define(&key.name(&self.labels))?;
        self.ids.insert(key, id);
        Some(id)
    }

    /// How many stats have an id (at most [`MAX_STATS`]).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no stat has an id yet.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The tool labels given out.
    pub fn tool_labels(&self) -> &ToolLabels {
        &self.labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::TASK_METHODS;
    use std::collections::HashSet;

    #[test]
    fn method_labels_are_the_known_methods_then_other() {
        for m in MCP_METHODS {
            assert_eq!(method_label(Some(m)), m);
        }
        for m in TASK_METHODS {
            assert!(MCP_METHODS.contains(&m), "{m}");
        }
        assert_eq!(
            MCP_METHODS.iter().collect::<HashSet<_>>().len(),
            MCP_METHODS.len()
        );
        // Exact: case, spaces and prefixes of a known method are another method.
        for m in [
            "tools/Call",
            "tools/call ",
            "tools",
            "",
            "-",
            "other",
            "x.y",
        ] {
            assert_eq!(method_label(Some(m)), OTHER, "{m:?}");
        }
        assert_eq!(method_label(None), NO_METHOD);
    }

    #[test]
    fn names() {
        let mut labels = ToolLabels::default();
        let request = |method, decision| Metric::Request { method, decision };
        assert_eq!(
            request(Some("tools/call"), "allow").name(&mut labels),
            "mcp_guard.requests.method.tools/call.decision.allow"
        );
        assert_eq!(
            request(Some("x.evil"), "deny").name(&mut labels),
            "mcp_guard.requests.method.other.decision.deny"
        );
        assert_eq!(
            request(None, "deny").name(&mut labels),
            "mcp_guard.requests.method.-.decision.deny"
        );
        assert_eq!(segment("a.b c\u{e9}"), "a_b_c_");
        assert_eq!(segment(""), "_");
        assert_eq!(segment(&"\u{e9}".repeat(100)), "_".repeat(MAX_SEGMENT));
        let all = [
            Metric::Denial("policy"),
            Metric::Refusal("policy"),
            Metric::RateLimited,
            Metric::RlsError,
            Metric::SseEvents,
            Metric::ListRewrite("policy"),
            Metric::ConfigLoad,
            Metric::ConfigReject,
        ];
        let names: HashSet<String> = all.iter().map(|m| m.name(&mut labels)).collect();
        assert_eq!(names.len(), all.len());
        assert!(names.contains("mcp_guard.refusals.reason.policy"));
        assert!(names.contains("mcp_guard.config.rejects"));
        // Drift shares the bounded tool labels of tool_calls.
        let drift = |tool| Metric::ToolDrift {
            tool,
            max_labels: 1,
        };
        assert_eq!(
            drift("search").name(&mut labels),
            "mcp_guard.tool_drift.tool.search"
        );
        assert_eq!(
            drift("x.y").name(&mut labels),
            "mcp_guard.tool_drift.tool.other"
        );
    }

    #[test]
    fn tool_labels_are_capped_and_kept() {
        let mut labels = ToolLabels::default();
        let tool = |t: &'static str| Metric::ToolCall {
            tool: t,
            decision: "deny",
            max_labels: 2,
        };
        assert_eq!(
            tool("echo").name(&mut labels),
            "mcp_guard.tool_calls.tool.echo.decision.deny"
        );
        assert_eq!(
            tool("add").name(&mut labels),
            "mcp_guard.tool_calls.tool.add.decision.deny"
        );
        assert_eq!(
            tool("search").name(&mut labels),
            "mcp_guard.tool_calls.tool.other.decision.deny"
        );
        assert_eq!(
            tool("echo").name(&mut labels),
            "mcp_guard.tool_calls.tool.echo.decision.deny"
        );
        // A later configuration with a larger cap gives more labels; a smaller one takes none
        // away; no cap gives more than MAX_TOOL_LABELS over the VM's life.
        let search = labels.label("search", 3);
        assert_eq!(labels.text(search), "search");
        assert_eq!(labels.label("search", 0), search);
        assert_eq!(labels.label("grep", 0), None);
        assert_eq!(labels.label("other", 10), None);
        for n in 0..MAX_TOOL_LABELS + 10 {
            labels.label(&format!("t{n}"), usize::MAX);
        }
        assert_eq!(labels.len(), MAX_TOOL_LABELS);
    }

    #[test]
    fn distinct_inputs_never_exceed_the_stat_bound() {
        // 10,000 distinct methods and 10,000 distinct tools (each 100 KB long), every decision.
        let max = DEFAULT_MAX_TOOL_LABELS;
        let mut stats: Stats<usize> = Stats::default();
        let mut defined: HashSet<String> = HashSet::new();
        let long = "x".repeat(100_000);
        for n in 0..10_000 {
            let method = format!("evil/{n}");
            let tool = format!("{n}{long}");
            for decision in ["allow", "deny", "dry_run_deny"] {
                for metric in [
                    Metric::Request {
                        method: Some(&method),
                        decision,
                    },
                    Metric::ToolCall {
                        tool: &tool,
                        decision,
                        max_labels: max,
                    },
                ] {
                    let id = stats.id(&metric, |name| {
                        assert!(defined.insert(name.to_owned()), "{name} defined twice");
                        Some(defined.len())
                    });
                    assert!(id.is_some());
                }
            }
        }
        // Unknown methods share `other`; tools past the cap share `other`, and every tool label
        // is a segment, not the 100 KB name.
        assert_eq!(stats.len(), defined.len());
        assert_eq!(defined.len(), DECISIONS + (max + 1) * DECISIONS);
        assert!(defined.len() <= max_stats(max));
        assert!(defined.iter().all(|n| n.len() < 200), "names stay short");
        assert_eq!(stats.tool_labels().len(), max);
        // Every known method, every other label, and more tools than any cap allows: still
        // within MAX_STATS.
        for m in MCP_METHODS {
            for decision in ["allow", "deny", "dry_run_deny"] {
                let metric = Metric::Request {
                    method: Some(m),
                    decision,
                };
                stats.id(&metric, |_| Some(0));
            }
        }
        for n in 0..10_000 {
            let metric = Metric::ToolCall {
                tool: &format!("t{n}"),
                decision: "allow",
                max_labels: usize::MAX,
            };
            stats.id(&metric, |_| Some(0));
        }
        assert!(stats.len() <= MAX_STATS, "{} > {MAX_STATS}", stats.len());
        assert_eq!(stats.tool_labels().len(), MAX_TOOL_LABELS);
    }

    #[test]
    fn a_failed_definition_is_not_cached() {
        let mut stats: Stats<u32> = Stats::default();
        assert_eq!(stats.id(&Metric::RateLimited, |_| None), None);
        assert!(stats.is_empty());
        assert_eq!(stats.id(&Metric::RateLimited, |_| Some(7)), Some(7));
        assert_eq!(stats.id(&Metric::RateLimited, |_| Some(8)), Some(7));
    }
}
