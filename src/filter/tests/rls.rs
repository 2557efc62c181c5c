//! The rate limit service mcp-guard calls itself (rate_limit_service), and unheld headers.

use super::*;

const RLS_POLICY: &str = r#"{
  "server_id": "demo-server",
  "hold_request_headers": false,
  "rate_limit_service": {"cluster": "ratelimit", "domain": "mcp", "timeout_ms": 250,
                         "failure_mode_deny": DENY},
  "policy": {"agents": {"demo-agent": {"tools": ["echo"]}}}
}"#;

fn rls_stream(deny: bool) -> Stream {
    stream(&RLS_POLICY.replace("DENY", if deny { "true" } else { "false" }))
}

/// `RateLimitResponse{overall_code: OK}` and `{OVER_LIMIT, statuses: [{OVER_LIMIT,
/// duration_until_reset: 5s}]}` in protobuf wire format (rls.proto field numbers).
const RLS_OK: &[u8] = &[0x08, 0x01];

const RLS_OVER_LIMIT: &[u8] = &[0x08, 0x02, 0x12, 0x06, 0x08, 0x02, 0x22, 0x02, 0x08, 0x05];

#[test]
fn unheld_headers_go_on_at_once_without_body_tags_and_the_rls_is_asked() {
    let mut s = rls_stream(true);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    h.request_headers
        .insert("x-mcp-tool-name".into(), "forged".into());
    assert_eq!(send_request_unheld(&mut s, &mut h), Action::Pause);
    // The forged tag is gone and no body tag was set (the headers had already left).
    assert_eq!(h.request_headers.get("x-mcp-tool-name"), None);
    assert_eq!(h.request_headers.get("x-mcp-method"), None);
    assert_eq!(
        h.request_headers.get("x-agent-id").map(String::as_str),
        Some("demo-agent")
    );
    let [(upstream, service, method, message, timeout)] = h.grpc_calls.as_slice() else {
        panic!("one RLS call expected: {:?}", h.grpc_calls);
    };
    let rls = crate::ratelimit::RateLimitService::new("ratelimit", "mcp".into(), 250, true)
        .expect("a valid RLS");
    assert_eq!(upstream, rls.grpc_service());
    assert_eq!(service, "envoy.service.ratelimit.v3.RateLimitService");
    assert_eq!(method, "ShouldRateLimit");
    assert_eq!(*timeout, 250);
    let expected =
        crate::ratelimit::descriptors("demo-agent", Some("tools/call"), Some("echo"), &[]);
    assert_eq!(*message, rls.request(&expected));

    // A stale or foreign token changes nothing.
    s.on_grpc_response(&mut h, 999, 0, Some(RLS_OVER_LIMIT));
    assert_eq!((h.resumed, h.local_reply.is_some()), (0, false));

    s.on_grpc_response(&mut h, 41, 0, Some(RLS_OK));
    assert_eq!(h.resumed, 1);
    assert!(h.local_reply.is_none());
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#],
    );
    s.on_stream_end(&mut h);
    assert_eq!(h.records()[0]["output_status"], "success");
}

#[test]
fn over_limit_is_a_429_with_the_request_id_and_retry_after() {
    let mut s = rls_stream(false);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    assert_eq!(send_request_unheld(&mut s, &mut h), Action::Pause);
    s.on_grpc_response(&mut h, 41, 0, Some(RLS_OVER_LIMIT));
    assert_eq!(h.resumed, 0);
    let (status, body) = h.reply_json();
    assert_eq!(status, 429);
    assert_eq!(body["id"], 1);
    assert_eq!(body["error"]["code"], RATE_LIMITED);
    assert_eq!(
        h.reply_headers,
        vec![("retry-after".to_owned(), "5".to_owned())]
    );
    let record = &h.records()[0];
    assert_eq!(record["output_status"], "rate_limited");
    assert_eq!(record["decision"], "allow");
    assert_eq!(h.counters.get("mcp_guard.rate_limited"), Some(&1));
    // Envoy still calls on_log; nothing changes.
    s.on_stream_end(&mut h);
    assert_eq!(h.records()[0]["output_status"], "rate_limited");
}

#[test]
fn rls_failure_refuses_or_forwards_by_failure_mode_deny() {
    // UNAVAILABLE (14) under failure_mode_deny: HTTP 500, JSON-RPC internal error.
    let mut s = rls_stream(true);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    assert_eq!(send_request_unheld(&mut s, &mut h), Action::Pause);
    s.on_grpc_response(&mut h, 41, 14, None);
    let (status, body) = h.reply_json();
    assert_eq!((status, body["id"].clone()), (500, Value::from(1)));
    assert_eq!(body["error"]["code"], INTERNAL_ERROR);
    assert_eq!(h.records()[0]["output_status"], "upstream_error");
    assert_eq!(h.resumed, 0);

    // The same without failure_mode_deny: forwarded.
    let mut s = rls_stream(false);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    assert_eq!(send_request_unheld(&mut s, &mut h), Action::Pause);
    s.on_grpc_response(&mut h, 41, 4, None); // DEADLINE_EXCEEDED
    assert_eq!((h.resumed, h.local_reply.is_some()), (1, false));
    // An unreadable answer counts as a failure too.
    let mut s = rls_stream(true);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    send_request_unheld(&mut s, &mut h);
    s.on_grpc_response(&mut h, 41, 0, Some(b"\xff\xff"));
    assert_eq!(h.reply_json().0, 500);

    // A call the host refuses to start: decided at once, without a pause.
    let mut s = rls_stream(false);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    h.grpc_refused = true;
    assert_eq!(send_request_unheld(&mut s, &mut h), Action::Continue);
    assert_eq!(h.resumed, 0);
    let mut s = rls_stream(true);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    h.grpc_refused = true;
    assert_eq!(send_request_unheld(&mut s, &mut h), Action::Pause);
    assert_eq!(h.reply_json().0, 500);
    assert_eq!(h.counters.get("mcp_guard.rls_errors"), Some(&1));
}

#[test]
fn denied_calls_never_reach_the_rls() {
    let mut s = rls_stream(true);
    let body =
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"rm","arguments":{}}}"#;
    let mut h = post(Some("demo-agent"), body);
    assert_eq!(send_request_unheld(&mut s, &mut h), Action::Pause);
    assert!(h.grpc_calls.is_empty());
    assert_eq!(h.reply_json().1["error"]["code"], DENIED);
}
