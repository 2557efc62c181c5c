//! Audit attributes: the fields of a stream's first audit record that no request header
//! carries, each as its own filter-state value, for access loggers that format one value per
//! field, such as Envoy's OpenTelemetry access logger (`envoy.access_loggers.open_telemetry`,
//! whose attributes are substitution commands: `%FILTER_STATE(wasm.mcp.request_id:PLAIN)%`;
//! envoy/envoy-otel.yaml, docs/operator-guide.md "OpenTelemetry").
//!
//! Written only with the plugin configuration `"audit_attributes": true` (default false): each
//! value costs a `proxy_set_property` hostcall. The whole record(s) stay in `wasm.mcp_audit`
//! ([`crate::audit`]); these values repeat some of its members and never add information it
//! does not have (raw arguments included: never).
//!
//! Each key is one property path segment, so Envoy stores it as filter state `wasm.<key>`
//! (a multi-segment path would be joined with NUL bytes). Values are UTF-8 text, cut to at most
//! [`MAX_VALUE_LEN`] bytes at a character boundary; an absent value is not written (Envoy's
//! formatter then prints `-`). For a batch the values describe its first call (the body of the
//! log record has every record).

use crate::audit::{Call, OutputStatus, StreamFacts};
use crate::jsonrpc::Id;

/// Longest value written, in bytes. Longer values (a long JSON-RPC string id or session id)
/// are cut at a character boundary; the audit record keeps them whole.
pub const MAX_VALUE_LEN: usize = 256;

/// How many values there are ([`KEYS`]).
pub const COUNT: usize = 16;

/// The filter-state keys, in the order of [`values`]. Each is printed by
/// `%FILTER_STATE(wasm.<key>:PLAIN)%`; the OpenTelemetry attribute envoy/envoy-otel.yaml
/// gives it is named after the key.
///
/// - `mcp.operation_name`: `execute_tool` for a `tools/call` (`gen_ai.operation.name`), else
///   absent.
/// - `mcp.method`: the record's `method` (`mcp.method.name`).
/// - `mcp.tool_name`, `mcp.prompt_name`, `mcp.resource_uri`: the record's `tool_name`
///   (`gen_ai.tool.name`), `prompt_name` (`gen_ai.prompt.name`), `resource_uri`
///   (`mcp.resource.uri`).
/// - `mcp.request_id`: the JSON-RPC id (`jsonrpc.request.id`): a string id as decoded, a
///   number as its wire text; absent for a notification.
/// - `mcp.agent_id`: the record's `agent_id` (`mcp_guard.agent_id`).
/// - `mcp.session_id`: the record's `session_id` (`mcp.session.id`).
/// - `mcp.protocol_version`: the record's `protocol_version` (`mcp.protocol.version`).
/// - `mcp.error_code`: the record's `error_code` in decimal (`rpc.response.status_code`).
/// - `mcp.error_type`: `error.type`: the error code in decimal when there is one, else the
///   record's `output_status` when the call's outcome is known and is a failure (`tool_error`,
///   `denied`, `rate_limited`, `upstream_error`, `invalid_request`, `client_disconnected`);
///   absent on success.
/// - `mcp.server_id`: the record's `server_id` (`mcp_guard.server_id`).
/// - `mcp.server_name`, `mcp.server_version`: the record's `server_name` and `server_version`
///   from the server inventory (`mcp_guard.server.name`, `mcp_guard.server.version`); absent
///   when not known.
/// - `mcp.decision`: the record's `decision` (`allow`, `deny`, `dry_run_deny`;
///   `mcp_guard.decision`).
/// - `mcp.output_status`: the record's `output_status` (`upstream_error` while unknown, as
///   the record writes it; `mcp_guard.output_status`).
pub const KEYS: [&str; COUNT] = [
    "mcp.operation_name",
    "mcp.method",
    "mcp.tool_name",
    "mcp.prompt_name",
    "mcp.resource_uri",
    "mcp.request_id",
    "mcp.agent_id",
    "mcp.session_id",
    "mcp.protocol_version",
    "mcp.error_code",
    "mcp.error_type",
    "mcp.server_id",
    "mcp.server_name",
    "mcp.server_version",
    "mcp.decision",
    "mcp.output_status",
];

/// The values of [`KEYS`] for `call` (a stream's first call) on a stream with `facts`: the
/// same values its audit record has ([`crate::audit::render`]; a call with an `origin` takes
/// agent, session and server from it), cut to [`MAX_VALUE_LEN`] bytes. `None`: absent.
pub fn values(facts: &StreamFacts, call: &Call) -> [Option<String>; COUNT] {
    let origin = call.origin.as_deref().unwrap_or(facts);
    let status = call.output_status.unwrap_or(OutputStatus::UpstreamError);
    let error_code = call.error_code.map(|c| c.to_string());
    let error_type = error_code.clone().or_else(|| {
        call.output_status
            .filter(|s| is_failure(*s))
            .map(|s| s.as_str().to_owned())
    });
    [
        (call.method.as_deref() == Some(crate::jsonrpc::TOOLS_CALL))
            .then(|| "execute_tool".to_owned()),
        call.method.as_deref().map(bounded),
        call.tool_name.as_deref().map(bounded),
        call.prompt_name.as_deref().map(bounded),
        call.resource_uri.as_deref().map(bounded),
        call.request_id.as_ref().map(|id| match id {
            Id::Str(s) | Id::Number(s) => bounded(s),
        }),
        Some(bounded(&origin.agent_id)),
        origin.session_id.as_deref().map(bounded),
        call.protocol_version.as_deref().map(bounded),
        error_code,
        error_type,
        Some(bounded(&origin.server_id)),
        origin.server_name.as_deref().map(bounded),
        origin.server_version.as_deref().map(bounded),
        Some(call.decision.as_str().to_owned()),
        Some(status.as_str().to_owned()),
    ]
}

/// Whether a known outcome is a failure for `error.type`.
fn is_failure(status: OutputStatus) -> bool {
    match status {
        OutputStatus::Success | OutputStatus::Deferred | OutputStatus::InputRequired => false,
        OutputStatus::Error
        | OutputStatus::ToolError
        | OutputStatus::Denied
        | OutputStatus::RateLimited
        | OutputStatus::UpstreamError
        | OutputStatus::InvalidRequest
        | OutputStatus::ClientDisconnected => true,
    }
}

/// `v` cut to at most [`MAX_VALUE_LEN`] bytes at a character boundary.
fn bounded(v: &str) -> String {
    let mut end = v.len().min(MAX_VALUE_LEN);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v.get(..end).unwrap_or_default().to_owned()
}

/// What was last written on a stream, so a later write of the records (a long-lived stream
/// writes them again as calls settle) costs a hostcall only for a value that changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written([Option<String>; COUNT]);

impl Written {
    /// The `(key, value)` pairs to write now for `next` ([`values`]), and remembers them: each
    /// value that differs from the last one written. A value that became absent is written
    /// empty (filter state cannot be removed from Wasm); one never written stays unwritten.
    pub fn changes(&mut self, next: [Option<String>; COUNT]) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for ((key, last), value) in KEYS.iter().zip(self.0.iter_mut()).zip(next) {
            if *last == value {
                continue;
            }
            match &value {
                Some(v) => out.push((*key, v.clone())),
                None => out.push((*key, String::new())),
            }
            *last = value;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Decision;

    fn facts() -> StreamFacts {
        StreamFacts {
            agent_id: "demo-agent".into(),
            server_id: "demo-server".into(),
            session_id: Some("s-1".into()),
            server_name: Some("demo".into()),
            ..StreamFacts::default()
        }
    }

    /// The value of `key` in `values`.
    fn get<'a>(values: &'a [Option<String>; COUNT], key: &str) -> Option<&'a str> {
        let at = KEYS.iter().position(|k| *k == key).unwrap();
        values[at].as_deref()
    }

    fn call(method: &str, id: Option<Id>) -> Call {
        let mut c = Call::bare(Decision::Allow);
        c.method = Some(method.into());
        c.request_id = id;
        c
    }

    #[test]
    fn a_tool_call_has_the_records_values() {
        let mut c = call("tools/call", Some(Id::Number("7".into())));
        c.output_status = Some(OutputStatus::Success);
        c.protocol_version = Some("2025-06-18".into());
        c.tool_name = Some("echo".into());
        let v = values(&facts(), &c);
        let by_key: Vec<(&str, Option<&str>)> = KEYS
            .iter()
            .copied()
            .zip(v.iter().map(|v| v.as_deref()))
            .collect();
        assert_eq!(
            by_key,
            [
                ("mcp.operation_name", Some("execute_tool")),
                ("mcp.method", Some("tools/call")),
                ("mcp.tool_name", Some("echo")),
                ("mcp.prompt_name", None),
                ("mcp.resource_uri", None),
                ("mcp.request_id", Some("7")),
                ("mcp.agent_id", Some("demo-agent")),
                ("mcp.session_id", Some("s-1")),
                ("mcp.protocol_version", Some("2025-06-18")),
                ("mcp.error_code", None),
                ("mcp.error_type", None),
                ("mcp.server_id", Some("demo-server")),
                ("mcp.server_name", Some("demo")),
                ("mcp.server_version", None),
                ("mcp.decision", Some("allow")),
                ("mcp.output_status", Some("success")),
            ]
        );
    }

    #[test]
    fn a_denied_call_has_its_error_code_as_error_type() {
        let mut c = call("tools/call", Some(Id::Str("a\"b".into())));
        c.decision = Decision::Deny;
        c.output_status = Some(OutputStatus::Denied);
        c.error_code = Some(-32003);
        let v = values(&facts(), &c);
        assert_eq!(get(&v, "mcp.request_id"), Some("a\"b"));
        assert_eq!(get(&v, "mcp.error_code"), Some("-32003"));
        assert_eq!(get(&v, "mcp.error_type"), Some("-32003"));
        assert_eq!(get(&v, "mcp.decision"), Some("deny"));
        assert_eq!(get(&v, "mcp.output_status"), Some("denied"));
    }

    #[test]
    fn error_type_is_the_status_of_a_failure_without_a_code_and_absent_while_unknown() {
        let mut c = call("tools/call", Some(Id::Number("1".into())));
        c.output_status = Some(OutputStatus::ToolError);
        assert_eq!(
            get(&values(&facts(), &c), "mcp.error_type"),
            Some("tool_error")
        );
        c.output_status = None;
        let v = values(&facts(), &c);
        assert_eq!(
            get(&v, "mcp.error_type"),
            None,
            "not yet known: no error.type"
        );
        assert_eq!(
            get(&v, "mcp.output_status"),
            Some("upstream_error"),
            "as the record writes it"
        );
    }

    #[test]
    fn a_notification_has_no_id_and_other_methods_no_operation() {
        let v = values(&facts(), &call("notifications/initialized", None));
        assert_eq!(get(&v, "mcp.operation_name"), None);
        assert_eq!(get(&v, "mcp.request_id"), None);
        let v = values(&facts(), &call("tools/list", Some(Id::Number("2".into()))));
        assert_eq!(get(&v, "mcp.operation_name"), None);
        assert_eq!(get(&v, "mcp.method"), Some("tools/list"));
    }

    #[test]
    fn a_correlated_call_takes_session_and_server_from_its_origin() {
        let mut c = call("tools/call", Some(Id::Number("3".into())));
        c.origin = Some(Box::new(StreamFacts {
            agent_id: "origin-agent".into(),
            server_id: "origin-server".into(),
            session_id: Some("origin-session".into()),
            ..StreamFacts::default()
        }));
        let v = values(&facts(), &c);
        assert_eq!(get(&v, "mcp.agent_id"), Some("origin-agent"));
        assert_eq!(get(&v, "mcp.session_id"), Some("origin-session"));
        assert_eq!(get(&v, "mcp.server_id"), Some("origin-server"));
    }

    #[test]
    fn long_values_are_cut_at_a_character_boundary() {
        let long = format!("{}é", "x".repeat(MAX_VALUE_LEN - 1));
        let v = values(&facts(), &call("ping", Some(Id::Str(long))));
        let id = get(&v, "mcp.request_id").unwrap();
        assert_eq!(
            id,
            "x".repeat(MAX_VALUE_LEN - 1),
            "é would end past the bound"
        );
    }

    #[test]
    fn only_changed_values_are_written_again() {
        let mut written = Written::default();
        let mut c = call("tools/call", Some(Id::Number("1".into())));
        let first = written.changes(values(&facts(), &c));
        assert_eq!(
            first.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [
                "mcp.operation_name",
                "mcp.method",
                "mcp.request_id",
                "mcp.agent_id",
                "mcp.session_id",
                "mcp.server_id",
                "mcp.server_name",
                "mcp.decision",
                "mcp.output_status"
            ]
        );
        assert_eq!(written.changes(values(&facts(), &c)), []);
        c.output_status = Some(OutputStatus::Error);
        c.error_code = Some(-32601);
        assert_eq!(
            written.changes(values(&facts(), &c)),
            [
                ("mcp.error_code", "-32601".to_owned()),
                ("mcp.error_type", "-32601".to_owned()),
                ("mcp.output_status", "error".to_owned()),
            ]
        );
        c.error_code = None;
        c.output_status = Some(OutputStatus::Success);
        assert_eq!(
            written.changes(values(&facts(), &c)),
            [
                ("mcp.error_code", String::new()),
                ("mcp.error_type", String::new()),
                ("mcp.output_status", "success".to_owned()),
            ]
        );
    }
}
