//! The request path: tags, forwarding, refusals of malformed requests, and the facts a record keeps.

use super::*;

#[test]
fn a_call_answered_at_once_is_audited_with_one_write() {
    for (content_type, body) in [
        (
            "application/json",
            &br#"{"jsonrpc":"2.0","id":1,"result":{}}"#[..],
        ),
        (
            "text/event-stream",
            &b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"[..],
        ),
    ] {
        let mut s = stream(POLICY);
        let mut h = post(Some("demo-agent"), CALL_ECHO);
        assert_eq!(send_request(&mut s, &mut h), Action::Continue);
        respond(&mut s, &mut h, "200", content_type, &[body]);
        s.on_stream_end(&mut h);
        // Not at the response headers, once when the response is seen, not again at the end.
        assert_eq!(h.audit_writes, 1, "{content_type}");
        assert_eq!(h.records()[0]["output_status"], "success", "{content_type}");
    }
}

#[test]
fn allowed_call_is_tagged_forwarded_and_audited_from_the_sse_response() {
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    h.request_headers
        .insert("x-mcp-tool-name".into(), "forged".into());
    h.request_headers
        .insert("x-mcp-prompt-name".into(), "forged".into());
    h.request_headers
        .insert("mcp-session-id".into(), "sess-9".into());
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    assert_eq!(
        h.request_headers.get("x-mcp-tool-name").map(String::as_str),
        Some("echo")
    );
    assert_eq!(
        h.request_headers.get("x-mcp-method").map(String::as_str),
        Some("tools/call")
    );
    assert_eq!(
        h.request_headers.get("x-agent-id").map(String::as_str),
        Some("demo-agent")
    );
    assert_eq!(h.request_headers.get("x-mcp-prompt-name"), None);
    assert!(h.local_reply.is_none());

    respond(
        &mut s,
        &mut h,
        "200",
        "text/event-stream",
        &[
            b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"res",
            b"ult\":{\"content\":[],\"isError\":false}}\r\n\r\n",
        ],
    );
    let r = h.records();
    assert_eq!(r.len(), 1);
    let r = &r[0];
    assert_eq!(r["agent_id"], "demo-agent");
    assert_eq!(r["server_id"], "demo-server");
    assert_eq!(r["method"], "tools/call");
    assert_eq!(r["tool_name"], "echo");
    assert_eq!(r["request_id"], 1);
    assert_eq!(r["decision"], "allow");
    assert_eq!(r["output_status"], "success");
    assert_eq!(r["error_code"], Value::Null);
    assert_eq!(r["latency_ms"], 12);
    assert_eq!(r["http_status"], 200);
    assert_eq!(r["session_id"], "sess-9");
    assert_eq!(r["trace_id"], "req-1");
    assert_eq!(r["input_hash"], audit::input_hash(br#"{"text":"hi"}"#));
    assert_eq!(r["timestamp"], "2026-11-22T00:15:41.000Z");
}

#[test]
fn envoy_reply_before_the_body_is_complete_is_still_audited() {
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    assert_eq!(s.on_request_headers(&mut h, false), Action::Pause);
    assert_eq!(s.on_request_body(&mut h, 10, false), Action::Pause);
    h.response_headers.insert(":status".into(), "413".into());
    assert_eq!(s.on_response_headers(&mut h, false), Action::Continue);
    h.response_chunk = b"Payload Too Large".to_vec();
    s.on_response_body(&mut h, 17, true);
    let r = h.records();
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0]["decision"].as_str(), r[0]["output_status"].as_str()),
        (Some("deny"), Some("invalid_request"))
    );
    assert_eq!(r[0]["http_status"], 413);
}

#[test]
fn malformed_bodies_are_refused_with_400_and_audited() {
    for (body, code) in [
        ("not json", jsonrpc::PARSE_ERROR),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            jsonrpc::INVALID_REQUEST,
        ),
        ("[]", jsonrpc::INVALID_REQUEST),
        (
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{}}"#,
            jsonrpc::INVALID_PARAMS,
        ),
    ] {
        let mut s = stream(POLICY);
        let mut h = post(Some("demo-agent"), body);
        assert_eq!(send_request(&mut s, &mut h), Action::Pause, "{body}");
        let (status, reply) = h.reply_json();
        assert_eq!(status, 400, "{body}");
        assert_eq!(reply["error"]["code"], code, "{body}");
        let r = &h.records()[0];
        assert_eq!(r["output_status"], "invalid_request", "{body}");
        assert_eq!(r["error_code"], code, "{body}");
        assert!(!h.request_headers.contains_key("x-mcp-method"));
    }
    // The id is echoed when it could be read.
    let mut s = stream(POLICY);
    let mut h = post(
        Some("demo-agent"),
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{}}"#,
    );
    send_request(&mut s, &mut h);
    assert_eq!(h.reply_json().1["id"], 4);
}

#[test]
fn empty_post_and_oversize_bodies_are_refused() {
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), "");
    assert_eq!(s.on_request_headers(&mut h, true), Action::Pause);
    assert_eq!(h.reply_json().0, 400);

    let mut s = stream(&POLICY.replacen('{', "{\"max_body_bytes\": 10,", 1));
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    assert_eq!(s.on_request_headers(&mut h, false), Action::Pause);
    assert_eq!(
        s.on_request_body(&mut h, CALL_ECHO.len(), false),
        Action::Pause
    );
    let (status, reply) = h.reply_json();
    assert_eq!(
        (status, reply["error"]["code"].as_i64()),
        (413, Some(i64::from(jsonrpc::INVALID_REQUEST)))
    );
}

#[test]
fn http2_trailers_finish_the_request() {
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    assert_eq!(s.on_request_headers(&mut h, false), Action::Pause);
    assert_eq!(
        s.on_request_body(&mut h, CALL_ECHO.len(), false),
        Action::Pause
    );
    assert_eq!(s.on_request_trailers(&mut h), Action::Continue);
    assert_eq!(
        h.request_headers.get("x-mcp-tool-name").map(String::as_str),
        Some("echo")
    );
}

#[test]
fn non_post_bodies_are_examined() {
    let mut s = stream(POLICY);
    let mut h = FakeHost::default();
    h.request_headers.insert(":method".into(), "DELETE".into());
    h.request_body = CALL_ECHO.as_bytes().to_vec();
    assert_eq!(s.on_request_headers(&mut h, false), Action::Pause);
    assert_eq!(
        s.on_request_body(&mut h, CALL_ECHO.len(), true),
        Action::Pause
    );
    assert_eq!(h.reply_json().0, 400);
}

#[test]
fn session_id_assigned_by_the_initialize_response_is_recorded() {
    let mut s = stream(POLICY);
    let mut h = post(
        Some("demo-agent"),
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#,
    );
    send_request(&mut s, &mut h);
    h.response_headers
        .insert("mcp-session-id".into(), "new-session".into());
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[br#"{"jsonrpc":"2.0","id":0,"result":{}}"#],
    );
    let r = &h.records()[0];
    assert_eq!(
        (r["session_id"].as_str(), r["output_status"].as_str()),
        (Some("new-session"), Some("success"))
    );
    assert_eq!(
        r["input_hash"],
        audit::input_hash(br#"{"protocolVersion":"2025-06-18"}"#)
    );
}

#[test]
fn traceparent_wins_over_request_id() {
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    h.request_headers.insert(
        "traceparent".into(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    );
    send_request(&mut s, &mut h);
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[br#"{"jsonrpc":"2.0","id":1,"result":{}}"#],
    );
    assert_eq!(
        h.records()[0]["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
}

#[test]
fn compressed_request_bodies_are_refused_before_buffering() {
    for encoding in ["gzip", "br", "GZIP", "deflate, gzip"] {
        let mut s = stream(POLICY);
        let mut h = post(Some("demo-agent"), CALL_ECHO);
        h.request_headers
            .insert("content-encoding".into(), encoding.into());
        assert_eq!(s.on_request_headers(&mut h, false), Action::Pause);
        let (status, reply) = h.reply_json();
        assert_eq!(status, 415, "{encoding}");
        assert_eq!(reply["error"]["code"], jsonrpc::INVALID_REQUEST);
        assert_eq!(h.records()[0]["output_status"], "invalid_request");
        assert_eq!(h.request_headers.get("x-mcp-tool-name"), None);
    }
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    h.request_headers
        .insert("content-encoding".into(), "identity".into());
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
}

#[test]
fn routing_headers_that_disagree_with_the_body_are_refused_before_tagging() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("mcp-method", "tools/list", None),
        ("mcp-name", "delete_repo", None),
        ("mcp-name", "=?base64?ZGVsZXRlX3JlcG8=?=", None), // "delete_repo"
        ("mcp-name", "=?base64?%%%?=", None),
        ("mcp-name", "echo", Some("echo")),
        ("mcp-name", "=?base64?ZWNobw==?=", Some("echo")), // "echo"
        ("mcp-method", "tools/call", Some("echo")),
        ("mcp-name", "=?BASE64?ZWNobw==?=", None), // markers are lower-case only
    ];
    for (header, value, forwarded) in cases {
        let mut s = stream(POLICY);
        let mut h = post(Some("demo-agent"), CALL_ECHO);
        h.request_headers
            .insert((*header).to_owned(), (*value).to_owned());
        let action = send_request(&mut s, &mut h);
        match forwarded {
            Some(tool) => {
                assert_eq!(action, Action::Continue, "{header}: {value}");
                assert_eq!(
                    h.request_headers.get("x-mcp-tool-name").map(String::as_str),
                    Some(*tool)
                );
            }
            None => {
                assert_eq!(action, Action::Pause, "{header}: {value}");
                let (status, reply) = h.reply_json();
                assert_eq!(status, 400);
                assert_eq!(reply["error"]["code"], routing::HEADER_MISMATCH);
                assert_eq!(reply["id"], 1);
                assert_eq!(h.request_headers.get("x-mcp-tool-name"), None);
                let r = &h.records()[0];
                assert_eq!(r["output_status"], "invalid_request");
                assert_eq!(r["error_code"], routing::HEADER_MISMATCH);
            }
        }
    }
}

#[test]
fn a_routing_header_sent_twice_is_refused() {
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    h.request_headers.insert("mcp-name".into(), "echo".into());
    h.repeated_headers
        .insert("mcp-name".into(), vec!["delete_repo".into()]);
    assert_eq!(send_request(&mut s, &mut h), Action::Pause);
    let (status, reply) = h.reply_json();
    assert_eq!(
        (status, &reply["error"]["code"]),
        (400, &Value::from(routing::HEADER_MISMATCH))
    );
}
