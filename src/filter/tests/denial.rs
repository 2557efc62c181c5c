//! Policy denials: JSON-RPC errors with the request id, the default entry, dry run, hidden denials.

use super::*;

#[test]
fn denied_call_gets_a_jsonrpc_error_with_its_id_and_never_continues() {
    let mut s = stream(POLICY);
    let body = r#"{"jsonrpc":"2.0","id":"abc","method":"tools/call","params":{"name":"delete_repo","arguments":{"name":"x"}}}"#;
    let mut h = post(Some("demo-agent"), body);
    assert_eq!(send_request(&mut s, &mut h), Action::Pause);
    let (status, reply) = h.reply_json();
    assert_eq!(status, 200);
    assert_eq!(reply["id"], "abc");
    assert_eq!(reply["error"]["code"], DENIED);
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("delete_repo") && message.contains("demo-agent"),
        "{message}"
    );
    // No tag for the upstream: nothing is forwarded.
    assert_eq!(h.request_headers.get("x-mcp-tool-name"), None);
    let r = &h.records()[0];
    assert_eq!(
        (r["decision"].as_str(), r["output_status"].as_str()),
        (Some("deny"), Some("denied"))
    );
    assert_eq!(r["error_code"], DENIED);
    assert_eq!(r["http_status"], 200);
    // The local reply passes back through the response callbacks untouched.
    let writes = h.audit_writes;
    h.response_headers.insert(":status".into(), "200".into());
    assert_eq!(s.on_response_headers(&mut h, false), Action::Continue);
    assert_eq!(h.audit_writes, writes);
}

#[test]
fn unknown_agents_fall_back_to_the_default_entry() {
    let mut s = stream(POLICY);
    let mut h = post(
        None,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}"#,
    );
    assert_eq!(send_request(&mut s, &mut h), Action::Pause);
    assert_eq!(h.records()[0]["agent_id"], "anonymous");
    let mut s = stream(POLICY);
    let mut h = post(None, CALL_ECHO);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    assert_eq!(
        h.request_headers.get("x-agent-id").map(String::as_str),
        Some("anonymous")
    );
}

#[test]
fn dry_run_forwards_and_records_the_would_be_denial() {
    let mut s = stream(&POLICY.replace("\"enforce\"", "\"dry_run\""));
    let mut h = post(
        Some("demo-agent"),
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_repo"}}"#,
    );
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    assert!(h.local_reply.is_none());
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[br#"{"jsonrpc":"2.0","id":3,"result":{"content":[]}}"#],
    );
    let r = &h.records()[0];
    assert_eq!(
        (r["decision"].as_str(), r["output_status"].as_str()),
        (Some("dry_run_deny"), Some("success"))
    );
    assert_eq!(r["input_hash"], Value::Null);
}

#[test]
fn hidden_denials_look_like_unknown_tools_but_are_audited() {
    let policy = POLICY.replacen(
        '{',
        r#"{"hide_denied_tools": {"tool_error": "Unknown tool: {name}"},"#,
        1,
    );
    let mut s = stream(&policy);
    let mut h = post(
        Some("demo-agent"),
        r#"{"jsonrpc":"2.0","id":"x1","method":"tools/call","params":{"name":"delete_repo","arguments":{}}}"#,
    );
    assert_eq!(send_request(&mut s, &mut h), Action::Pause);
    let (status, reply) = h.reply_json();
    assert_eq!(status, 200);
    assert_eq!(reply["id"], "x1");
    assert_eq!(reply["result"]["isError"], true);
    assert_eq!(
        reply["result"]["content"][0]["text"],
        "Unknown tool: delete_repo"
    );
    assert_eq!(h.records()[0]["output_status"], "denied");

    let policy = POLICY.replacen(
        '{',
        r#"{"hide_denied_tools": {"jsonrpc_error": {"code": -32602, "message": "Tool {name} not found"}},"#,
        1,
    );
    let mut s = stream(&policy);
    let mut h = post(
        Some("demo-agent"),
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_repo","arguments":{}}}"#,
    );
    send_request(&mut s, &mut h);
    let (_, reply) = h.reply_json();
    assert_eq!(
        (&reply["error"]["code"], &reply["error"]["message"]),
        (
            &Value::from(-32602),
            &Value::from("Tool delete_repo not found")
        )
    );
}
