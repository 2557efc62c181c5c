//! Envoy stats mcp-guard defines (proxy-wasm `define_metric` / `increment_metric`; Envoy
//! prefixes them `wasmcustom.`). Labels are encoded in the stat name as `.<label>.<value>`
//! pairs, which the shipped `stats_config.stats_tags` (README "Metrics") extract, so
//! `/stats/prometheus` shows e.g.
//! `envoy_wasmcustom_mcp_guard_requests{mcp_method="tools/call",mcp_decision="allow"}`.
//!
//! Counters:
//! - `mcp_guard.requests.method.<method>.decision.<decision>`: every JSON-RPC message decided;
//! - `mcp_guard.tool_calls.tool.<tool>.decision.<decision>`: tools/call by tool, at most
//!   `metrics.max_tool_labels` distinct tools per worker, the rest as `other`;
//! - `mcp_guard.denials.reason.<reason>`: refusals (policy, annotations, unidentified,
//!   identity_unreadable);
//! - `mcp_guard.refusals.reason.<reason>`: malformed requests refused (parse, header_mismatch,
//!   batch, encoding, too_large);
//! - `mcp_guard.rate_limited`: calls answered 429;
//! - `mcp_guard.rls_errors`: calls to the RLS (`rate_limit_service`) without a usable answer;
//! - `mcp_guard.sse_events`: SSE events scanned in responses;
//! - `mcp_guard.list_rewrites.list.<tools|prompts|resources>`: curated list responses;
//! - `mcp_guard.config.loads`, `mcp_guard.config.rejects`: plugin configurations accepted or
//!   refused by `on_configure`.

use std::collections::HashSet;

/// Default cap on distinct tool labels per worker.
pub const DEFAULT_MAX_TOOL_LABELS: usize = 50;
/// The label value for tools beyond the cap.
pub const OTHER: &str = "other";

/// One counter increment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metric<'a> {
    /// A JSON-RPC message decided.
    Request {
        /// Its method (`-` for a client-sent response).
        method: &'a str,
        /// `allow`, `deny` or `dry_run_deny`.
        decision: &'a str,
    },
    /// A `tools/call` decided.
    ToolCall {
        /// The tool.
        tool: &'a str,
        /// The decision.
        decision: &'a str,
        /// Distinct tool labels allowed per worker.
        max_labels: usize,
    },
    /// A refusal by policy: `policy`, `annotations`, `unidentified`.
    Denial(&'a str),
    /// A malformed request refused: `parse`, `header_mismatch`, `batch`, `encoding`, `too_large`.
    Refusal(&'a str),
    /// A call answered with HTTP 429.
    RateLimited,
    /// An RLS call made by mcp-guard without a usable answer (`crate::ratelimit`).
    RlsError,
    /// SSE events scanned.
    SseEvents,
    /// A list response curated: `tools`, `prompts`, `resources`.
    ListRewrite(&'a str),
    /// A plugin configuration accepted.
    ConfigLoad,
    /// A plugin configuration refused.
    ConfigReject,
}

/// A stat-name segment: characters other than ASCII letters, digits, `_`, `-`, `/`, `:`
/// become `_` (a `.` would split the name), empty becomes `_`, at most 64 bytes.
pub fn segment(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// The distinct tool labels a worker has used, capped.
#[derive(Debug, Default)]
pub struct ToolLabels {
    seen: HashSet<String>,
}

impl ToolLabels {
    /// The label for `tool`: its own while fewer than `max` tools have one, else [`OTHER`].
    pub fn label(&mut self, tool: &str, max: usize) -> String {
        let label = segment(tool);
        if self.seen.contains(&label) {
            return label;
        }
        if self.seen.len() < max {
            self.seen.insert(label.clone());
            return label;
        }
        OTHER.to_owned()
    }
}

/// What identifies a [`Metric`]'s stat without building its name: the variant, its label values
/// as given (before [`segment`]) and the tool-label cap. Equal parts always name the same stat
/// (a tool's label, once given, never changes for the same cap), so a stat id can be cached by
/// parts and the name built only on a miss.
pub type Parts<'a> = (u8, &'a str, &'a str, usize);

impl Metric<'_> {
    /// The parts that identify this metric's stat (see [`Parts`]).
    pub fn parts(&self) -> Parts<'_> {
        match self {
            Metric::Request { method, decision } => (0, method, decision, 0),
            Metric::ToolCall {
                tool,
                decision,
                max_labels,
            } => (1, tool, decision, *max_labels),
            Metric::Denial(reason) => (2, reason, "", 0),
            Metric::Refusal(reason) => (3, reason, "", 0),
            Metric::RateLimited => (4, "", "", 0),
            Metric::SseEvents => (5, "", "", 0),
            Metric::ListRewrite(list) => (6, list, "", 0),
            Metric::ConfigLoad => (7, "", "", 0),
            Metric::ConfigReject => (8, "", "", 0),
            Metric::RlsError => (9, "", "", 0),
        }
    }

    /// The stat name (without Envoy's `wasmcustom.` prefix).
    pub fn name(&self, labels: &mut ToolLabels) -> String {
        match self {
            Metric::Request { method, decision } => format!(
                "mcp_guard.requests.method.{}.decision.{}",
                segment(method),
                segment(decision)
            ),
            Metric::ToolCall {
                tool,
                decision,
                max_labels,
            } => format!(
                "mcp_guard.tool_calls.tool.{}.decision.{}",
                labels.label(tool, *max_labels),
                segment(decision)
            ),
            Metric::Denial(reason) => format!("mcp_guard.denials.reason.{}", segment(reason)),
            Metric::Refusal(reason) => format!("mcp_guard.refusals.reason.{}", segment(reason)),
            Metric::RateLimited => "mcp_guard.rate_limited".to_owned(),
            Metric::RlsError => "mcp_guard.rls_errors".to_owned(),
            Metric::SseEvents => "mcp_guard.sse_events".to_owned(),
            Metric::ListRewrite(list) => format!("mcp_guard.list_rewrites.list.{}", segment(list)),
            Metric::ConfigLoad => "mcp_guard.config.loads".to_owned(),
            Metric::ConfigReject => "mcp_guard.config.rejects".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_parts_name_the_same_stat() {
        let all = [
            Metric::Request {
                method: "tools/call",
                decision: "allow",
            },
            Metric::ToolCall {
                tool: "tools/call",
                decision: "allow",
                max_labels: 0,
            },
            Metric::Denial("policy"),
            Metric::Refusal("policy"),
            Metric::RateLimited,
            Metric::SseEvents,
            Metric::ListRewrite("policy"),
            Metric::ConfigLoad,
            Metric::ConfigReject,
            Metric::RlsError,
        ];
        let mut labels = ToolLabels::default();
        for (i, a) in all.iter().enumerate() {
            for (j, b) in all.iter().enumerate() {
                assert_eq!(a.parts() == b.parts(), i == j, "{a:?} {b:?}");
                if a.parts() == b.parts() {
                    assert_eq!(a.name(&mut labels), b.name(&mut labels));
                }
            }
        }
        // The same tool under a different cap is another key: its label may differ.
        let capped = |max_labels| Metric::ToolCall {
            tool: "echo",
            decision: "allow",
            max_labels,
        };
        assert_ne!(capped(0).parts(), capped(5).parts());
        assert_eq!(
            capped(0).name(&mut labels),
            "mcp_guard.tool_calls.tool.other.decision.allow"
        );
        assert_eq!(
            capped(5).name(&mut labels),
            "mcp_guard.tool_calls.tool.echo.decision.allow"
        );
    }

    #[test]
    fn names_and_bounded_tool_labels() {
        let mut labels = ToolLabels::default();
        let m = Metric::Request {
            method: "tools/call",
            decision: "allow",
        };
        assert_eq!(
            m.name(&mut labels),
            "mcp_guard.requests.method.tools/call.decision.allow"
        );
        assert_eq!(segment("a.b c\u{e9}"), "a_b_c_");
        assert_eq!(segment(""), "_");
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
    }
}
