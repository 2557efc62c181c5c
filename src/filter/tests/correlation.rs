//! Responses that arrive on another stream of the session (legacy HTTP+SSE, resumed SSE).

use super::*;

#[test]
fn legacy_sse_responses_are_correlated_by_session_and_id_across_streams() {
    let scenario = Scenario::new(POLICY);
    // The GET /sse stream opens first and announces the POST endpoint.
    let (mut get, mut gh) = scenario.legacy_get("abc123");

    // The POST (another worker): enforced and tagged there, answered 202 Accepted.
    let (mut s, mut h) = scenario.legacy_post("abc123", Some("demo-agent"), CALL_ECHO);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    assert_eq!(
        h.request_headers.get("x-mcp-tool-name").map(String::as_str),
        Some("echo")
    );
    respond(&mut s, &mut h, "202", "text/plain", &[b"Accepted"]);
    let post_record = h.records()[0].clone();
    assert_eq!(post_record["output_status"], "deferred");
    assert_eq!(post_record["session_id"], "abc123");

    // A response with the same id but as a string is not this call's.
    stream_chunk(
        &mut get,
        &mut gh,
        b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"1\",\"result\":{}}\r\n\r\n",
        false,
    );
    // Nothing claimed, nothing settled: no record yet on the server stream.
    assert_eq!(gh.records().len(), 0);
    gh.now += 40;
    stream_chunk(
        &mut get,
        &mut gh,
        b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"isError\":true}}\r\n\r\n",
        false,
    );
    let records = gh.records();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[0]["method"], Value::Null);
    assert_eq!(records[0]["session_id"], "abc123");
    let done = &records[1];
    assert_eq!(done["correlated"], true);
    assert_eq!(done["http_method"], "GET");
    assert_eq!(done["output_status"], "tool_error");
    for field in [
        "agent_id",
        "tool_name",
        "method",
        "request_id",
        "input_hash",
        "session_id",
        "timestamp",
        "trace_id",
    ] {
        assert_eq!(done[field], post_record[field], "{field}");
    }
    assert_eq!(done["latency_ms"], 1040);
    // Claimed once: a replay of the same response is not audited twice.
    stream_chunk(
        &mut get,
        &mut gh,
        b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\r\n\r\n",
        true,
    );
    assert_eq!(gh.records().len(), 2);
    assert_eq!(gh.records()[0]["output_status"], "success");
}

#[test]
fn resumed_streamable_responses_arrive_on_the_get_stream() {
    let scenario = Scenario::new(POLICY);
    let (mut s, mut h) = scenario.post(Some("demo-agent"), CALL_ECHO);
    h.request_headers
        .insert("mcp-session-id".into(), "sess-7".into());
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    // The server closes the POST's SSE stream after a priming event (SEP-1699).
    respond(
        &mut s,
        &mut h,
        "200",
        "text/event-stream",
        &[b"id: e1\nretry: 100\ndata: \n\n", b""],
    );
    assert_eq!(h.records()[0]["output_status"], "deferred");

    // A JSON response on a POST is not resumable: no deferral without SSE.
    let (mut s2, mut h2) = scenario.post(Some("demo-agent"), CALL_ECHO);
    h2.request_headers
        .insert("mcp-session-id".into(), "sess-7".into());
    send_request(&mut s2, &mut h2);
    respond(&mut s2, &mut h2, "200", "application/json", &[b""]);
    assert_eq!(h2.records()[0]["output_status"], "upstream_error");

    let (mut get, mut gh) = scenario.get("/mcp", Some("other-session"));
    stream_chunk(
        &mut get,
        &mut gh,
        b"id: e2\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n",
        false,
    );
    assert_eq!(
        gh.records().len(),
        0,
        "another session's stream does not claim it"
    );

    let (mut get, mut gh) = scenario.get("/mcp", Some("sess-7"));
    stream_chunk(
        &mut get,
        &mut gh,
        b"id: e2\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n",
        true,
    );
    let r = gh.records();
    assert_eq!(r.len(), 2);
    assert_eq!(r[1]["correlated"], true);
    assert_eq!(r[1]["output_status"], "success");
    assert_eq!(r[1]["tool_name"], "echo");
}

#[test]
fn streams_that_end_early_are_settled_at_the_end() {
    // The client goes away mid-response (no session: nothing to resume).
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    h.response_headers.insert(":status".into(), "200".into());
    h.response_headers
        .insert("content-type".into(), "text/event-stream".into());
    s.on_response_headers(&mut h, false);
    h.code_details = Some("downstream_remote_disconnect".into());
    s.on_stream_end(&mut h);
    assert_eq!(h.records()[0]["output_status"], "client_disconnected");

    // An upstream reset after the headers.
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    send_request(&mut s, &mut h);
    s.on_response_headers(&mut h, false);
    h.code_details = Some("upstream_reset_after_response_started{remote_reset}".into());
    s.on_stream_end(&mut h);
    assert_eq!(h.records()[0]["output_status"], "upstream_error");

    // The client stops before its body is complete: recorded, never forwarded.
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    assert_eq!(s.on_request_headers(&mut h, false), Action::Pause);
    assert_eq!(s.on_request_body(&mut h, 10, false), Action::Pause);
    h.code_details = Some("downstream_remote_disconnect".into());
    s.on_stream_end(&mut h);
    let r = &h.records()[0];
    assert_eq!(r["output_status"], "client_disconnected");
    assert_eq!(r["decision"], "deny");
    // A server stream (GET) ends when the client closes it: that is its normal end.
    let scenario = Scenario::new(POLICY);
    let (mut get, mut gh) = scenario.get("/mcp", Some("sess-1"));
    gh.code_details = Some("downstream_remote_disconnect".into());
    get.on_stream_end(&mut gh);
    assert_eq!(gh.records()[0]["output_status"], "success");
    // A finished stream is left alone.
    let writes = h.audit_writes;
    s.on_stream_end(&mut h);
    assert_eq!(h.audit_writes, writes);
}

#[test]
fn legacy_response_may_overtake_the_posts_own_202() {
    let scenario = Scenario::new(POLICY);
    let (mut get, mut gh) = scenario.get("/sse", None);
    stream_chunk(
        &mut get,
        &mut gh,
        b"event: endpoint\ndata: /messages?sessionId=s-1\n\n",
        false,
    );
    let (mut s, mut h) = scenario.post(Some("demo-agent"), CALL_ECHO);
    h.request_headers
        .insert(":path".into(), "/messages?sessionId=s-1".into());
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    // The server answers on the GET stream before the POST's 202 comes back through Envoy.
    gh.now += 5;
    stream_chunk(
        &mut get,
        &mut gh,
        b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n",
        false,
    );
    respond(&mut s, &mut h, "202", "text/plain", &[b"Accepted"]);
    assert_eq!(h.records()[0]["output_status"], "deferred");
    let r = gh.records();
    assert_eq!(r.len(), 2);
    assert_eq!(
        (&r[1]["correlated"], &r[1]["output_status"]),
        (&Value::from(true), &Value::from("success"))
    );
    // Its latency ends when the response was seen, not when the GET stream's line is written.
    assert_eq!(r[1]["latency_ms"], 1005);
    gh.now += 60_000;
    stream_chunk(&mut get, &mut gh, b": ping\n\n", true);
    assert_eq!(gh.records()[1]["latency_ms"], 1005);

    // A legacy POST answered with an error on its own stream leaves nothing in the store.
    let (mut s, mut h) = scenario.post(Some("demo-agent"), CALL_ECHO);
    h.request_headers
        .insert(":path".into(), "/messages?sessionId=s-2".into());
    send_request(&mut s, &mut h);
    respond(&mut s, &mut h, "400", "text/plain", &[b"bad session"]);
    assert!(
        scenario.shared.borrow().values().all(|(v, _)| v.is_empty()),
        "store not cleared"
    );
}

#[test]
fn a_pending_call_larger_than_a_slot_allows_is_not_stored() {
    let stored = |request_id_header: &str| {
        let scenario = Scenario::new(POLICY);
        let (mut s, mut h) = scenario.legacy_post("abc123", Some("demo-agent"), CALL_ECHO);
        h.request_headers
            .insert("x-request-id".into(), request_id_header.into());
        assert_eq!(send_request(&mut s, &mut h), Action::Continue);
        respond(&mut s, &mut h, "202", "text/plain", &[b"Accepted"]);
        assert_eq!(h.records()[0]["output_status"], "deferred");
        let map = scenario.shared.borrow();
        map.iter()
            .filter(|(k, (v, _))| k.starts_with("mcp_guard.pending.") && !v.is_empty())
            .map(|(_, (v, _))| v.len())
            .collect::<Vec<_>>()
    };
    let small = stored("r-1");
    assert_eq!(small.len(), 1);
    assert!(small[0] <= crate::correlation::MAX_PENDING_BYTES);
    // A client-chosen trace id of 9 KB would make the slot 9 KB: the call is not stored (its
    // outcome stays `deferred`), so the shared store stays within SLOTS × MAX_PENDING_BYTES.
    assert!(stored(&"r".repeat(9 * 1024)).is_empty());
}
