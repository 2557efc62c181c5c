//! decide_at_headers: tags from the routing headers, the body streamed and checked.

use super::*;

/// Streams `h.request_body` in three chunks, as Envoy delivers them when the filter continues.
fn stream_body(s: &mut Stream, h: &mut FakeHost) -> Vec<Action> {
    let body = std::mem::take(&mut h.request_body);
    let third = body.len() / 3;
    let chunks = [&body[..third], &body[third..2 * third], &body[2 * third..]];
    let mut actions = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        h.request_body = chunk.to_vec();
        actions.push(s.on_request_body(h, chunk.len(), i == 2));
    }
    actions
}

#[test]
fn routing_headers_decide_and_tag_at_header_time_and_the_body_streams() {
    let mut s = stream(EARLY_POLICY);
    let mut h = routed("demo-agent", "tools/call", Some("echo"), CALL_ECHO);
    h.request_headers
        .insert("x-mcp-tool-name".into(), "forged".into());
    assert_eq!(s.on_request_headers(&mut h, false), Action::Continue);
    assert_eq!(
        h.request_headers.get("x-mcp-tool-name").map(String::as_str),
        Some("echo")
    );
    assert_eq!(
        h.request_headers.get("x-mcp-method").map(String::as_str),
        Some("tools/call")
    );
    // Every chunk goes on; the last one only after the whole body was checked.
    assert_eq!(stream_body(&mut s, &mut h), vec![Action::Continue; 3]);
    assert!(h.local_reply.is_none());
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#],
    );
    let record = &h.records()[0];
    assert_eq!(record["tool_name"], "echo");
    assert_eq!(record["output_status"], "success");
    assert!(record["input_hash"].as_str().is_some());
}

#[test]
fn a_streamed_body_that_disagrees_with_its_headers_is_refused_before_its_last_chunk() {
    let mut s = stream(EARLY_POLICY);
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"delete_repo","arguments":{}}}"#;
    let mut h = routed("demo-agent", "tools/call", Some("echo"), body);
    assert_eq!(s.on_request_headers(&mut h, false), Action::Continue);
    let actions = stream_body(&mut s, &mut h);
    assert_eq!(
        actions,
        vec![Action::Continue, Action::Continue, Action::Pause]
    );
    let (status, reply) = h.reply_json();
    assert_eq!((status, reply["id"].clone()), (400, Value::from(7)));
    assert_eq!(reply["error"]["code"], routing::HEADER_MISMATCH);
    assert_eq!(h.records()[0]["output_status"], "invalid_request");
}

#[test]
fn routing_headers_that_name_a_refused_tool_leave_the_decision_to_the_body() {
    let mut s = stream(EARLY_POLICY);
    let body =
        r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"rm","arguments":{}}}"#;
    let mut h = routed("demo-agent", "tools/call", Some("rm"), body);
    // Held as without the option, so the denial carries the request's id.
    assert_eq!(send_request(&mut s, &mut h), Action::Pause);
    assert_eq!(h.request_headers.get("x-mcp-tool-name"), None);
    let (status, reply) = h.reply_json();
    assert_eq!((status, reply["id"].clone()), (200, Value::from(8)));
    assert_eq!(reply["error"]["code"], DENIED);

    // No Mcp-Name for a tools/call, or a repeated Mcp-Method: held too.
    let mut s = stream(EARLY_POLICY);
    let mut h = routed("demo-agent", "tools/call", None, CALL_ECHO);
    assert_eq!(s.on_request_headers(&mut h, false), Action::Pause);
    let mut s = stream(EARLY_POLICY);
    let mut h = routed("demo-agent", "tools/call", Some("echo"), CALL_ECHO);
    h.repeated_headers
        .insert("mcp-method".into(), vec!["tools/call".into()]);
    assert_eq!(s.on_request_headers(&mut h, false), Action::Pause);
    // A method that names nothing is decided by its method alone.
    let mut s = stream(EARLY_POLICY);
    let ping = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
    let mut h = routed("demo-agent", "ping", None, ping);
    assert_eq!(s.on_request_headers(&mut h, false), Action::Continue);
    assert_eq!(
        h.request_headers.get("x-mcp-method").map(String::as_str),
        Some("ping")
    );
}

#[test]
fn a_streamed_body_over_the_limit_or_ending_in_trailers() {
    let mut s = stream(EARLY_POLICY);
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{}"}}}}}}"#,
        "x".repeat(5000)
    );
    let mut h = routed("demo-agent", "tools/call", Some("echo"), &big);
    assert_eq!(s.on_request_headers(&mut h, false), Action::Continue);
    let actions = stream_body(&mut s, &mut h);
    // 1.7 and 3.4 KB pass; at 5.1 KB of 4 KB allowed the last chunk is held and refused.
    assert_eq!(
        actions,
        vec![Action::Continue, Action::Continue, Action::Pause]
    );
    assert_eq!(h.reply_json().0, 413);

    // HTTP/2 with trailers: the body never ends in a body callback.
    let mut s = stream(EARLY_POLICY);
    let mut h = routed("demo-agent", "tools/call", Some("echo"), CALL_ECHO);
    assert_eq!(s.on_request_headers(&mut h, false), Action::Continue);
    let body = std::mem::take(&mut h.request_body);
    let (a, b) = body.split_at(10);
    for chunk in [a, b] {
        h.request_body = chunk.to_vec();
        assert_eq!(
            s.on_request_body(&mut h, chunk.len(), false),
            Action::Continue
        );
    }
    h.request_body = Vec::new();
    assert_eq!(s.on_request_trailers(&mut h), Action::Continue);
    assert!(h.local_reply.is_none());
}

#[test]
fn decide_at_headers_is_not_combinable_with_rate_limit_service() {
    let e = Config::from_json(
        br#"{"policy":{"agents":{}},"decide_at_headers":true,
             "rate_limit_service":{"cluster":"rls","domain":"mcp"}}"#,
    )
    .unwrap_err();
    assert_eq!(e.errors()[0].field, "decide_at_headers");
}

#[test]
fn decide_at_headers_tags_2026_requests_on_hosts_that_do_not_hold_headers() {
    let policy = EARLY_POLICY.replace(
        r#""decide_at_headers": true,"#,
        r#""decide_at_headers": true, "hold_request_headers": false,"#,
    );
    let mut s = stream(&policy);
    let mut h = routed("demo-agent", "tools/call", Some("echo"), CALL_ECHO);
    assert_eq!(s.on_request_headers(&mut h, false), Action::Continue);
    // Set before the headers leave: Envoy's rate-limit filters see them.
    assert_eq!(
        h.request_headers.get("x-mcp-tool-name").map(String::as_str),
        Some("echo")
    );
    assert_eq!(stream_body(&mut s, &mut h), vec![Action::Continue; 3]);
    // Without routing headers, the same host gets no body tag (the headers already left).
    let mut s = stream(&policy);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    assert_eq!(send_request_unheld(&mut s, &mut h), Action::Continue);
    assert_eq!(h.request_headers.get("x-mcp-tool-name"), None);
}
