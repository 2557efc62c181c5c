//! `audit_attributes`: the first record's fields as separate filter-state values for Envoy's
//! OpenTelemetry access logger (`crate::attributes`, envoy/envoy-otel.yaml).

use super::*;

fn with_attributes() -> String {
    POLICY.replacen('{', r#"{"audit_attributes": true,"#, 1)
}

/// The filter state written besides `wasm.mcp_audit`, as text by key.
fn state(h: &FakeHost) -> BTreeMap<&str, &str> {
    h.filter_state
        .iter()
        .map(|(k, v)| (k.as_str(), std::str::from_utf8(v).unwrap()))
        .collect()
}

use std::collections::BTreeMap;

#[test]
fn off_by_default_no_extra_filter_state_is_written() {
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#],
    );
    assert!(h.audit().is_some());
    assert_eq!(h.filter_state_writes, 0);
}

#[test]
fn an_allowed_call_writes_the_records_values_once_each() {
    let mut s = stream(&with_attributes());
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    h.request_headers
        .insert("mcp-session-id".into(), "sess-9".into());
    h.request_headers
        .insert("mcp-protocol-version".into(), "2025-06-18".into());
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#],
    );
    let r = &h.records()[0];
    assert_eq!(
        state(&h),
        BTreeMap::from([
            ("mcp.agent_id", "demo-agent"),
            ("mcp.decision", "allow"),
            ("mcp.method", "tools/call"),
            ("mcp.operation_name", "execute_tool"),
            ("mcp.output_status", "success"),
            ("mcp.protocol_version", "2025-06-18"),
            ("mcp.request_id", "1"),
            ("mcp.server_id", "demo-server"),
            ("mcp.session_id", "sess-9"),
            ("mcp.tool_name", "echo"),
        ])
    );
    // The same values the record has.
    assert_eq!(r["request_id"], 1);
    assert_eq!(r["session_id"], "sess-9");
    assert_eq!(r["protocol_version"], "2025-06-18");
    assert_eq!(r["server_id"], "demo-server");
    assert_eq!(r["output_status"], "success");
    // One hostcall per value: none written twice although the records were written again.
    assert_eq!(h.filter_state_writes, 10);
}

#[test]
fn a_denied_call_carries_decision_error_code_and_error_type() {
    let mut s = stream(&with_attributes());
    let body = r#"{"jsonrpc":"2.0","id":"abc","method":"tools/call","params":{"name":"delete_repo","arguments":{"secret":"s3cr3t"}}}"#;
    let mut h = post(Some("demo-agent"), body);
    assert_eq!(send_request(&mut s, &mut h), Action::Pause);
    let st = state(&h);
    assert_eq!(st.get("mcp.decision"), Some(&"deny"));
    assert_eq!(st.get("mcp.output_status"), Some(&"denied"));
    assert_eq!(st.get("mcp.request_id"), Some(&"abc"));
    // Denied calls are never tagged (nothing is forwarded): the attributes still name them.
    assert_eq!(h.request_headers.get("x-mcp-tool-name"), None);
    assert_eq!(st.get("mcp.method"), Some(&"tools/call"));
    assert_eq!(st.get("mcp.tool_name"), Some(&"delete_repo"));
    assert_eq!(st.get("mcp.agent_id"), Some(&"demo-agent"));
    let code = DENIED.to_string();
    assert_eq!(st.get("mcp.error_code"), Some(&code.as_str()));
    assert_eq!(st.get("mcp.error_type"), Some(&code.as_str()));
    // Never an argument.
    assert!(st.values().all(|v| !v.contains("s3cr3t")), "{st:?}");
}
