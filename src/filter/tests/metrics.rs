//! Envoy stats counted per decision, denial, refusal and SSE event.

use super::*;

#[test]
fn stats_count_decisions_denials_refusals_and_sse_events() {
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    send_request(&mut s, &mut h);
    respond(
        &mut s,
        &mut h,
        "200",
        "text/event-stream",
        &[b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"],
    );
    assert_eq!(
        h.counters
            .get("mcp_guard.requests.method.tools/call.decision.allow"),
        Some(&1)
    );
    assert_eq!(
        h.counters
            .get("mcp_guard.tool_calls.tool.echo.decision.allow"),
        Some(&1)
    );
    assert_eq!(h.counters.get("mcp_guard.sse_events"), Some(&1));

    let mut s = stream(POLICY);
    let mut h = post(
        Some("demo-agent"),
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_repo","arguments":{}}}"#,
    );
    send_request(&mut s, &mut h);
    assert_eq!(h.counters.get("mcp_guard.denials.reason.policy"), Some(&1));
    assert_eq!(
        h.counters
            .get("mcp_guard.tool_calls.tool.delete_repo.decision.deny"),
        Some(&1)
    );

    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), "{not json");
    send_request(&mut s, &mut h);
    assert_eq!(h.counters.get("mcp_guard.refusals.reason.parse"), Some(&1));
    assert_eq!(
        h.counters.get("mcp_guard.requests.method.-.decision.deny"),
        Some(&1)
    );

    // A method MCP does not define is decided (denied by the demo policy) and counted under
    // `other`: the client's method name never becomes a stat.
    let mut s = stream(POLICY);
    let mut h = post(
        Some("demo-agent"),
        r#"{"jsonrpc":"2.0","id":3,"method":"evil/12345","params":{}}"#,
    );
    send_request(&mut s, &mut h);
    assert_eq!(
        h.counters
            .get("mcp_guard.requests.method.other.decision.deny"),
        Some(&1)
    );
    assert!(!h.counters.keys().any(|k| k.contains("evil")));
}
