//! The response path: outcomes from JSON and SSE bodies, 429 rewrites, reading in pieces.

use super::*;

#[test]
fn rate_limit_reply_becomes_a_jsonrpc_error_with_the_request_id() {
    let mut s = stream(POLICY);
    let mut h = post(
        Some("demo-agent"),
        r#"{"jsonrpc":"2.0","id":77,"method":"tools/call","params":{"name":"search","arguments":{"query":"q"}}}"#,
    );
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    h.response_headers.insert(":status".into(), "429".into());
    h.response_headers
        .insert("content-type".into(), "text/plain".into());
    h.response_headers
        .insert("content-length".into(), "18".into());
    assert_eq!(s.on_response_headers(&mut h, false), Action::Continue);
    assert_eq!(
        h.response_headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert_eq!(h.response_headers.get("content-length"), None);
    h.response_chunk = b"local_rate_limited".to_vec();
    assert_eq!(s.on_response_body(&mut h, 18, true), Action::Continue);
    let body: Value = serde_json::from_slice(h.replaced_response_body.as_ref().unwrap()).unwrap();
    assert_eq!(body["id"], 77);
    assert_eq!(body["error"]["code"], RATE_LIMITED);
    let r = &h.records()[0];
    assert_eq!(
        (r["output_status"].as_str(), r["http_status"].as_i64()),
        (Some("rate_limited"), Some(429))
    );
}

#[test]
fn tool_errors_jsonrpc_errors_and_upstream_failures() {
    let cases: &[(&str, &str, &[u8], &str, Value)] = &[
        ("200", "application/json", br#"{"jsonrpc":"2.0","id":1,"result":{"isError":true}}"#, "tool_error", Value::Null),
        ("200", "application/json", br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"x"}}"#, "error", (-32602).into()),
        ("503", "text/plain", b"upstream connect error", "upstream_error", Value::Null),
        ("200", "text/event-stream", b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\n", "upstream_error", Value::Null),
        ("404", "application/json", br#"{"jsonrpc":"2.0","id":"server-error","error":{"code":-32001,"message":"Session not found"}}"#, "error", (-32001).into()),
    ];
    for (status, ct, body, want, code) in cases {
        let mut s = stream(POLICY);
        let mut h = post(Some("demo-agent"), CALL_ECHO);
        send_request(&mut s, &mut h);
        respond(&mut s, &mut h, status, ct, &[body]);
        let r = &h.records()[0];
        assert_eq!(
            r["output_status"],
            *want,
            "{status} {}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(r["error_code"], *code);
    }
}

#[test]
fn notifications_and_get_streams_are_audited_from_the_status() {
    let mut s = stream(POLICY);
    let mut h = post(
        Some("demo-agent"),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    h.response_headers.insert(":status".into(), "202".into());
    assert_eq!(s.on_response_headers(&mut h, true), Action::Continue);
    let r = &h.records()[0];
    assert_eq!(
        (r["method"].as_str(), r["output_status"].as_str()),
        (Some("notifications/initialized"), Some("success"))
    );
    assert_eq!(r["request_id"], Value::Null);

    for (method, status, want) in [
        ("GET", "200", "success"),
        ("DELETE", "404", "error"),
        ("GET", "503", "upstream_error"),
    ] {
        let mut s = stream(POLICY);
        let mut h = FakeHost::default();
        h.request_headers.insert(":method".into(), method.into());
        h.request_headers
            .insert("x-agent-id".into(), "demo-agent".into());
        h.request_headers
            .insert("x-mcp-method".into(), "tools/call".into());
        assert_eq!(s.on_request_headers(&mut h, true), Action::Continue);
        assert_eq!(
            h.request_headers.get("x-mcp-method"),
            None,
            "client tag removed"
        );
        h.response_headers.insert(":status".into(), status.into());
        h.response_headers
            .insert("content-type".into(), "text/event-stream".into());
        s.on_response_headers(&mut h, false);
        // No record until the outcome is known (or the stream ends: on_stream_end).
        assert!(h.records().is_empty());
        h.response_chunk = b": ping\n\n".to_vec();
        s.on_response_body(&mut h, 8, true);
        let r = &h.records()[0];
        assert_eq!(
            (r["method"].clone(), r["output_status"].as_str()),
            (Value::Null, Some(want)),
            "{method} {status}"
        );
    }
}

#[test]
fn reading_stops_once_every_response_is_found() {
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
    let writes = h.audit_writes;
    h.response_chunk = b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1}}\n\n".to_vec();
    let len = h.response_chunk.len();
    s.on_response_body(&mut h, len, true);
    assert_eq!(
        h.audit_writes, writes,
        "nothing more is written after the outcome is known"
    );
    assert_eq!(h.records()[0]["output_status"], "success");
}

#[test]
fn a_chunk_larger_than_a_scan_piece_is_read_in_pieces_and_settled() {
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    // One 200 KB chunk: an SSE event whose isError comes after 3 scan pieces of text.
    let text = "y".repeat(3 * SCAN_PIECE);
    let event = format!(
        "event: message\ndata: {{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{{\"content\":[{{\"type\":\"text\",\"text\":\"{text}\"}}],\"isError\":true}}}}\n\n"
    );
    respond(
        &mut s,
        &mut h,
        "200",
        "text/event-stream",
        &[event.as_bytes()],
    );
    s.on_stream_end(&mut h);
    assert_eq!(h.records()[0]["output_status"], "tool_error");
}
