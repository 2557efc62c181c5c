//! Failed host reads (issue 14 item 5): refused or settled, never read as empty.

use super::*;

/// The request was refused because a request-side read failed: HTTP 500, JSON-RPC -32603, one
/// `denied` record, counted as `request_read`, and never forwarded.
fn assert_request_read_refused(h: &FakeHost, what: &str) {
    let (status, body) = h.reply_json();
    assert_eq!(status, 500, "{what}");
    assert_eq!(body["error"]["code"], INTERNAL_ERROR, "{what}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("could not read")),
        "{what}: {body}"
    );
    let r = h.records();
    assert_eq!(r.len(), 1, "{what}");
    assert_eq!(
        (
            r[0]["decision"].as_str(),
            r[0]["output_status"].as_str(),
            r[0]["error_code"].as_i64(),
            r[0]["http_status"].as_u64()
        ),
        (
            Some("deny"),
            Some("denied"),
            Some(i64::from(INTERNAL_ERROR)),
            Some(500)
        ),
        "{what}"
    );
    assert_eq!(
        h.counters.get("mcp_guard.refusals.reason.request_read"),
        Some(&1),
        "{what}: {:?}",
        h.counters
    );
}

#[test]
fn a_request_whose_headers_or_body_cannot_be_read_is_refused_never_forwarded() {
    // Headers: refused in the headers callback, before any tag is set.
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    h.failing = vec![Read::RequestHeaders];
    assert_eq!(s.on_request_headers(&mut h, false), Action::Pause);
    assert!(h.request_header_writes.is_empty());
    assert_request_read_refused(&h, "request headers");
    assert_eq!(h.records()[0]["agent_id"], "unidentified");

    // Buffered body: an allowed call whose body cannot be read is not forwarded as empty.
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    assert_eq!(s.on_request_headers(&mut h, false), Action::Pause);
    h.failing = vec![Read::RequestBody];
    let len = h.request_body.len();
    assert_eq!(s.on_request_body(&mut h, len, true), Action::Pause);
    assert_request_read_refused(&h, "request body");
    assert_eq!(h.records()[0]["agent_id"], "demo-agent");

    // A GET with a body it cannot read is not let through as "no body".
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), "x");
    h.request_headers.insert(":method".into(), "GET".into());
    assert_eq!(s.on_request_headers(&mut h, false), Action::Pause);
    h.failing = vec![Read::RequestBody];
    assert_eq!(s.on_request_body(&mut h, 1, true), Action::Pause);
    assert_request_read_refused(&h, "GET body");

    // Streamed (decide_at_headers): a chunk that cannot be kept cannot be checked at the end.
    let mut s = stream(EARLY_POLICY);
    let mut h = routed("demo-agent", "tools/call", Some("echo"), CALL_ECHO);
    assert_eq!(s.on_request_headers(&mut h, false), Action::Continue);
    h.failing = vec![Read::RequestBody];
    assert_eq!(s.on_request_body(&mut h, 10, false), Action::Pause);
    assert_request_read_refused(&h, "streamed chunk");
}

#[test]
fn a_list_response_that_cannot_be_read_is_refused_like_one_curation_cannot_read() {
    // Its headers: nothing is known, so the body is swallowed and replaced by the error.
    let mut s = stream(POLICY);
    let mut h = post(
        Some("demo-agent"),
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#,
    );
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    h.response_headers.insert(":status".into(), "200".into());
    h.response_headers
        .insert("content-type".into(), "application/json".into());
    h.failing = vec![Read::ResponseHeaders];
    assert_eq!(s.on_response_headers(&mut h, false), Action::Continue);
    h.failing.clear();
    let body = client_body(&mut s, &mut h, &[DENIED_LIST]);
    assert_refused(&h, &body, 502, "response_read");

    // Its held body: the 200 has gone on; the body becomes the error.
    let (mut s, mut h, action) =
        list_answered(&[(":status", "200"), ("content-type", "application/json")]);
    assert_eq!(action, Action::Continue);
    h.failing = vec![Read::ResponseBody];
    let body = client_body(&mut s, &mut h, &[DENIED_LIST]);
    assert_refused(&h, &body, 200, "response_read");
}

#[test]
fn a_response_only_scanned_that_cannot_be_read_settles_its_calls_as_upstream_error() {
    // An SSE response in a session: read as an empty body, its call would be `deferred` (the
    // server could resume it elsewhere); unread, no outcome was seen: upstream_error.
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    h.request_headers
        .insert("mcp-session-id".into(), "s-1".into());
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    h.response_headers.insert(":status".into(), "200".into());
    h.response_headers
        .insert("content-type".into(), "text/event-stream".into());
    assert_eq!(s.on_response_headers(&mut h, false), Action::Continue);
    h.failing = vec![Read::ResponseBody];
    h.response_chunk = b"event: message\ndata: {}\n\n".to_vec();
    assert_eq!(s.on_response_body(&mut h, 24, false), Action::Continue);
    let r = h.records();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["output_status"], "upstream_error");
    assert!(h.shared.borrow().is_empty(), "nothing stored as deferred");
    // Its headers: the calls are settled at once, and the body passes on unexamined.
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    h.failing = vec![Read::ResponseHeaders];
    assert_eq!(s.on_response_headers(&mut h, false), Action::Continue);
    assert_eq!(h.records()[0]["output_status"], "upstream_error");
    h.failing.clear();
    h.response_chunk = br#"{"jsonrpc":"2.0","id":1,"result":{}}"#.to_vec();
    assert_eq!(s.on_response_body(&mut h, 10, true), Action::Continue);
    assert_eq!(h.records()[0]["output_status"], "upstream_error");
}

#[test]
fn a_server_stream_chunk_that_cannot_be_read_is_never_passed_on_under_curation() {
    let scenario = Scenario::new(POLICY);
    let (mut get, mut gh) = scenario.get("/mcp", Some("s-1"));
    gh.failing = vec![Read::ResponseBody];
    let list = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":4,\"result\":{\"tools\":[{\"name\":\"delete_repo\"}]}}\n\n";
    stream_chunk(&mut get, &mut gh, list, false);
    assert_eq!(gh.replaced_response_body.as_deref(), Some(&b""[..]));
    assert_eq!(
        gh.counters.get("mcp_guard.refusals.reason.response_read"),
        Some(&1)
    );
    // Swallowed from then on; the error takes the place of the last chunk.
    gh.failing.clear();
    stream_chunk(&mut get, &mut gh, list, false);
    assert_eq!(gh.replaced_response_body.as_deref(), Some(&b""[..]));
    stream_chunk(&mut get, &mut gh, b"", true);
    let end = String::from_utf8(gh.replaced_response_body.clone().unwrap()).unwrap();
    assert!(
        end.contains("-32603") && !end.contains("delete_repo"),
        "{end}"
    );
    let r = gh.records();
    assert_eq!(r[0]["output_status"], "upstream_error");
    assert_eq!(r[0]["refusal"], "response_read");
}
