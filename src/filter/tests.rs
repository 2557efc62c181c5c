//! Stream-level tests against a fake host: the same callbacks Envoy makes, in the same order.

use super::*;
use crate::host::fake::{FakeHost, Read, Rng, SharedStore};
use crate::host::Headers;
use serde_json::Value;

/// The authorization oracles of the fuzz targets (serde_json readers independent of
/// `crate::jsonrpc`), one copy shared with `fuzz/src/lib.rs`.
#[path = "../../fuzz/src/oracle.rs"]
#[allow(dead_code)]
mod oracle;

/// proxy-wasm shared data as Envoy keeps it ([`SharedStore`]).
type Shared = SharedStore;

const POLICY: &str = r#"{
  "server_id": "demo-server",
  "policy": {"mode": "enforce", "agents": {
      "demo-agent": {"tools": ["echo", "add", "search", "fail"]},
      "admin-agent": {"tools": ["*"]},
      "default": {"tools": ["echo"]}}}
}"#;

impl FakeHost {
    fn records(&self) -> Vec<Value> {
        std::str::from_utf8(&self.audit)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
    fn reply_json(&self) -> (u32, Value) {
        let (status, body) = self.local_reply.clone().expect("a local reply");
        (status, serde_json::from_slice(&body).unwrap())
    }
}

fn stream(policy: &str) -> Stream {
    Stream::new(Rc::new(Config::from_json(policy.as_bytes()).unwrap()))
}

fn post(agent: Option<&str>, body: &str) -> FakeHost {
    let mut h = FakeHost::new(Shared::default(), 1_795_306_541_000);
    h.request_headers.insert(":method".into(), "POST".into());
    h.request_headers.insert(":path".into(), "/mcp".into());
    h.request_headers
        .insert("x-request-id".into(), "req-1".into());
    if let Some(a) = agent {
        h.request_headers.insert("x-agent-id".into(), a.into());
    }
    h.request_body = body.as_bytes().to_vec();
    h
}

/// Runs the request side; returns the action of the final request callback.
fn send_request(s: &mut Stream, h: &mut FakeHost) -> Action {
    assert_eq!(s.on_request_headers(h, false), Action::Pause);
    let len = h.request_body.len();
    // Two chunks, as Envoy would deliver them while buffering.
    assert_eq!(s.on_request_body(h, len / 2, false), Action::Pause);
    s.on_request_body(h, len, true)
}

fn respond(s: &mut Stream, h: &mut FakeHost, status: &str, content_type: &str, chunks: &[&[u8]]) {
    h.response_headers.insert(":status".into(), status.into());
    h.response_headers
        .insert("content-type".into(), content_type.into());
    assert_eq!(s.on_response_headers(h, false), Action::Continue);
    h.now += 12;
    for (i, chunk) in chunks.iter().enumerate() {
        h.response_chunk = chunk.to_vec();
        s.on_response_body(h, chunk.len(), i + 1 == chunks.len());
    }
}

const CALL_ECHO: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;

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
fn batch_with_one_denied_call_is_refused_whole() {
    let mut s = stream(POLICY);
    let body = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}},
                  {"jsonrpc":"2.0","method":"notifications/progress","params":{}},
                  {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_repo","arguments":{}}}]"#;
    let mut h = post(Some("demo-agent"), body);
    assert_eq!(send_request(&mut s, &mut h), Action::Pause);
    let (status, reply) = h.reply_json();
    assert_eq!(status, 200);
    let errors = reply.as_array().unwrap();
    assert_eq!(
        errors.len(),
        2,
        "one error per request element, none for the notification"
    );
    assert_eq!(errors[0]["id"], 1);
    assert_eq!(errors[1]["id"], 2);
    assert!(errors[1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("delete_repo"));
    assert!(errors[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Batch refused"));
    let records = h.records();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["decision"], "allow");
    assert_eq!(records[2]["decision"], "deny");
    assert!(records.iter().all(|r| r["output_status"] == "denied"));
}

#[test]
fn batch_with_one_call_is_forwarded_and_correlated() {
    let mut s = stream(POLICY);
    // A client response (no method) travels with one call.
    let body = r#"[{"jsonrpc":"2.0","id":"srv-1","result":{}},
                  {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"fail","arguments":{}}}]"#;
    let mut h = post(Some("demo-agent"), body);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    assert_eq!(
        h.request_headers.get("x-mcp-tool-name").map(String::as_str),
        Some("fail")
    );
    assert_eq!(
        h.request_headers.get("x-mcp-method").map(String::as_str),
        Some("tools/call")
    );
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[br#"[{"jsonrpc":"2.0","id":2,"result":{"isError":true}}]"#],
    );
    let r = h.records();
    let statuses: Vec<&str> = r
        .iter()
        .map(|r| r["output_status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["success", "tool_error"]);
    assert_eq!(r[0]["request_id"], "srv-1");
    assert_eq!(r[0]["method"], Value::Null);
}

#[test]
fn uniform_batch_within_max_batch_calls_is_forwarded_with_exact_tags() {
    let policy = POLICY.replacen('{', r#"{"max_batch_calls": 3,"#, 1);
    let mut s = stream(&policy);
    let body = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a"}}},
                  {"jsonrpc":"2.0","id":"1","method":"tools/call","params":{"name":"echo","arguments":{"text":"b"}}}]"#;
    let mut h = post(Some("demo-agent"), body);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    assert_eq!(
        h.request_headers.get("x-mcp-tool-name").map(String::as_str),
        Some("echo")
    );
    // The response for "1" (a string) must not settle id 1 (a number).
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[br#"[{"jsonrpc":"2.0","id":"1","result":{"isError":true}},{"jsonrpc":"2.0","id":1,"result":{}}]"#],
    );
    let r = h.records();
    assert_eq!(r.len(), 2);
    assert_eq!(
        (&r[0]["request_id"], &r[0]["output_status"]),
        (&Value::from(1), &Value::from("success"))
    );
    assert_eq!(
        (&r[1]["request_id"], &r[1]["output_status"]),
        (&Value::from("1"), &Value::from("tool_error"))
    );
    // Two different tools, or more calls than the limit, are refused even so.
    for body in [
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}},
            {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{}}}]"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"},
            {"jsonrpc":"2.0","id":3,"method":"ping"},{"jsonrpc":"2.0","id":4,"method":"ping"}]"#,
    ] {
        let mut s = stream(&policy);
        let mut h = post(Some("demo-agent"), body);
        assert_eq!(send_request(&mut s, &mut h), Action::Pause, "{body}");
        assert_eq!(h.reply_json().0, 400);
    }
}

#[test]
fn batch_with_two_calls_is_refused_so_tags_and_rate_limits_cover_every_call() {
    // [search, echo] would be tagged "search,echo" and escape a `tool: search` descriptor;
    // [search, search] would cost one token for two calls.
    for body in [
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{}}},
            {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{}}}]"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{}}},
            {"jsonrpc":"2.0","method":"tools/call","params":{"name":"search","arguments":{}}}]"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#,
        // A notification beside a call would make the method tag "notifications/…,tools/call"
        // and escape a `method: tools/call` descriptor.
        r#"[{"jsonrpc":"2.0","method":"notifications/initialized"},
            {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{}}}]"#,
    ] {
        let mut s = stream(POLICY);
        let mut h = post(Some("demo-agent"), body);
        assert_eq!(send_request(&mut s, &mut h), Action::Pause, "{body}");
        assert!(!h.request_headers.contains_key("x-mcp-tool-name"));
        let (status, reply) = h.reply_json();
        assert_eq!(status, 400);
        let errors = reply.as_array().unwrap();
        assert!(errors
            .iter()
            .all(|e| e["error"]["code"] == jsonrpc::INVALID_REQUEST));
        assert!(errors.iter().any(|e| e["id"] == 1), "{errors:?}");
        assert!(h
            .records()
            .iter()
            .all(|r| r["output_status"] == "invalid_request"));
    }
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

/// What a forwarded request may name for `agent` under `config`, as the oracles ask it: allowed,
/// or `dry_run_deny` where dry-run mode applies.
fn oracle_permits<'a>(
    config: &'a Config,
    agent: &'a str,
) -> impl Fn(oracle::Named<'_>) -> Result<(), String> + 'a {
    move |named| {
        let subject = match named {
            oracle::Named::Tool(n) => Subject::Tool(n),
            oracle::Named::Prompt(n) => Subject::Prompt(n),
            oracle::Named::Resource(n) => Subject::Resource(n),
            oracle::Named::Method(m) => Subject::Method(m),
        };
        let policy = &config.policy;
        let dry = policy.mode() == Mode::DryRun
            || policy
                .rule_sets(agent)
                .iter()
                .any(|s| s.mode == Mode::DryRun);
        match policy.decide(agent, subject) {
            Decision::Allow => Ok(()),
            Decision::DryRunDeny if dry => Ok(()),
            d => Err(format!("{} for {agent:?}", d.as_str())),
        }
    }
}

/// Asserts that a request the filter forwarded for `agent` names only what the policy lets
/// the agent use, and is tagged with what it names, however a server reads it (duplicate
/// members first- or last-wins, lenient UTF-8): `fuzz/src/oracle.rs`.
fn assert_forwarded_is_authorized(
    s: &Stream,
    h: &FakeHost,
    agent: &str,
    body: &[u8],
) -> Vec<oracle::ListAsk> {
    let headers = h.request_headers().unwrap();
    let method = h
        .request_headers
        .get(":method")
        .cloned()
        .unwrap_or_default();
    let forwarded = oracle::Forwarded {
        http_method: &method,
        headers: headers.pairs(),
        body,
    };
    let t = &s.config.headers;
    let tags = oracle::TagNames {
        agent: &t.agent_id,
        method: &t.method,
        tool: &t.tool_name,
        prompt: &t.prompt_name,
        resource: &t.resource_uri,
    };
    match oracle::check_request(&forwarded, agent, &tags, &oracle_permits(&s.config, agent)) {
        Ok(asks) => asks,
        Err(e) => panic!("forwarded {:?}: {e}", String::from_utf8_lossy(body)),
    }
}

/// Mutates `seed`: byte flips, insertions of structural bytes, truncation, duplication.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    const BYTES: &[u8] = b"{}[]\":,\\\r\n \x00\xff-0123456789eE.tfnu";
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(6) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = BYTES[rng.below(BYTES.len())];
            }
            1 => {
                let i = rng.below(v.len() + 1);
                v.insert(i, BYTES[rng.below(BYTES.len())]);
            }
            2 => v.truncate(rng.below(v.len() + 1)),
            3 if !v.is_empty() => {
                let i = rng.below(v.len());
                let tail = v[i..].to_vec();
                v.extend_from_slice(&tail);
            }
            _ if !v.is_empty() => {
                v.remove(rng.below(v.len()));
            }
            _ => {}
        }
    }
    v
}

#[test]
fn arbitrary_requests_and_responses_never_panic_and_always_settle() {
    let requests: &[&[u8]] = &[
        CALL_ECHO.as_bytes(),
        br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_repo"}},{"jsonrpc":"2.0","method":"x"}]"#,
        br#"{"jsonrpc":"2.0","id":"a\u0062","method":"resources/read","params":{"uri":"file:///x"}}"#,
    ];
    let responses: &[&[u8]] = &[
        b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"isError\":true}}\r\n\r\n",
        br#"[{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"m"}}]"#,
        b": ping\n\nid: 0\ndata:\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"ab\",\n",
    ];
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        let body = mutate(&mut rng, requests[round % requests.len()]);
        let mut s = stream(POLICY);
        let mut h = post(Some("demo-agent"), "");
        h.request_body = body.clone();
        s.on_request_headers(&mut h, false);
        let action = s.on_request_body(&mut h, body.len(), true);
        // Either refused with a JSON-RPC body, or forwarded: never both, never neither.
        match (&h.local_reply, action) {
            (Some((_, reply)), Action::Pause) => {
                assert!(
                    serde_json::from_slice::<Value>(reply).is_ok(),
                    "reply is JSON"
                );
                continue;
            }
            (None, Action::Continue) => {
                // Forwarded: it must name only what demo-agent may use, tagged as it is.
                let _ = assert_forwarded_is_authorized(&s, &h, "demo-agent", &body);
            }
            other => panic!("round {round}: inconsistent outcome {other:?} for {body:?}"),
        }
        let content_type = if round % 2 == 0 {
            "text/event-stream"
        } else {
            "application/json"
        };
        let response = mutate(&mut rng, responses[round % responses.len()]);
        let mut chunks = Vec::new();
        let mut rest = response.as_slice();
        while !rest.is_empty() {
            let (a, b) = rest.split_at(1 + rng.below(rest.len()).min(7));
            chunks.push(a);
            rest = b;
        }
        respond(&mut s, &mut h, "200", content_type, &chunks);
        if chunks.is_empty() {
            s.on_response_body(&mut h, 0, true);
        }
        let records = h.records();
        assert!(!records.is_empty(), "round {round}: no audit record");
        assert!(
            records.iter().all(|r| r["output_status"].is_string()),
            "round {round}"
        );
    }
}

/// Arbitrary list responses: what the client gets for demo-agent's `tools/list` (the body as
/// rewritten, or as the server sent it) lists only tools demo-agent may use, however a client
/// reads it (`fuzz/src/oracle.rs`: duplicate members either way, lossy UTF-8, a BOM, the
/// first document, JSON or SSE whatever the content type, ids as the SDKs match them).
///
/// Before list responses mcp-guard cannot read were refused (issue 13), about 400 of the 3000
/// rounds leaked (a byte that is not UTF-8, bytes after the document, a body of the other
/// format than its content type says).
#[test]
fn arbitrary_list_responses_show_only_allowed_entries() {
    const LIST: &str = r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#;
    let json = r#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"echo"},{"name":"delete_repo","title":"x"},{"name":"search"}],"nextCursor":"n1"}}"#;
    let sse = format!("event: message\r\ndata: {json}\r\n\r\n");
    let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#;
    let two = format!("data: {progress}\n\ndata: {json}\n\n");
    let seeds: [&[u8]; 3] = [json.as_bytes(), sse.as_bytes(), two.as_bytes()];
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
    let mut leaks: Vec<String> = Vec::new();
    for round in 0..3000 {
        let response = mutate(&mut rng, seeds[round % seeds.len()]);
        let mut s = stream(POLICY);
        let mut h = post(Some("demo-agent"), LIST);
        assert_eq!(send_request(&mut s, &mut h), Action::Continue);
        let asks = assert_forwarded_is_authorized(&s, &h, "demo-agent", LIST.as_bytes());
        assert_eq!(asks.len(), 1, "{asks:?}");
        let content_type = if round % 2 == 0 {
            "application/json"
        } else {
            "text/event-stream"
        };
        h.response_headers.insert(":status".into(), "200".into());
        h.response_headers
            .insert("content-type".into(), content_type.into());
        s.on_response_headers(&mut h, false);
        h.response_chunk = response.clone();
        s.on_response_body(&mut h, response.len(), true);
        let got = h.replaced_response_body.clone().unwrap_or(response);
        let permits = oracle_permits(&s.config, "demo-agent");
        if let Err(e) = oracle::check_list_response(&got, &asks, &permits) {
            leaks.push(format!(
                "round {round} ({content_type}): {e}; the body: {:?}",
                String::from_utf8_lossy(&got)
            ));
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leaks, first: {:#?}",
        leaks.len(),
        &leaks[..leaks.len().min(3)]
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

/// A GET server stream on another worker: same shared data, its own stream state.
fn get_stream(shared: &Shared, path: &str, session: Option<&str>) -> (Stream, FakeHost) {
    let mut h = FakeHost::new(Rc::clone(shared), 1_795_306_542_000);
    h.request_headers.insert(":method".into(), "GET".into());
    h.request_headers.insert(":path".into(), path.into());
    h.request_headers
        .insert("x-agent-id".into(), "demo-agent".into());
    if let Some(id) = session {
        h.request_headers.insert("mcp-session-id".into(), id.into());
    }
    let mut s = stream(POLICY);
    assert_eq!(s.on_request_headers(&mut h, true), Action::Continue);
    h.response_headers.insert(":status".into(), "200".into());
    h.response_headers
        .insert("content-type".into(), "text/event-stream".into());
    assert_eq!(s.on_response_headers(&mut h, false), Action::Continue);
    (s, h)
}

fn stream_chunk(s: &mut Stream, h: &mut FakeHost, chunk: &[u8], end: bool) {
    h.response_chunk = chunk.to_vec();
    s.on_response_body(h, chunk.len(), end);
}

#[test]
fn legacy_sse_responses_are_correlated_by_session_and_id_across_streams() {
    let shared = Shared::default();
    // The GET /sse stream opens first and announces the POST endpoint.
    let (mut get, mut gh) = get_stream(&shared, "/sse", None);
    stream_chunk(
        &mut get,
        &mut gh,
        b"event: endpoint\r\ndata: /messages/?session_id=abc123\r\n\r\n",
        false,
    );

    // The POST (another worker): enforced and tagged there, answered 202 Accepted.
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    h.shared = Rc::clone(&shared);
    h.request_headers
        .insert(":path".into(), "/messages/?session_id=abc123".into());
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
    let shared = Shared::default();
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    h.shared = Rc::clone(&shared);
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
    let mut s2 = stream(POLICY);
    let mut h2 = post(Some("demo-agent"), CALL_ECHO);
    h2.shared = Rc::clone(&shared);
    h2.request_headers
        .insert("mcp-session-id".into(), "sess-7".into());
    send_request(&mut s2, &mut h2);
    respond(&mut s2, &mut h2, "200", "application/json", &[b""]);
    assert_eq!(h2.records()[0]["output_status"], "upstream_error");

    let (mut get, mut gh) = get_stream(&shared, "/mcp", Some("other-session"));
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

    let (mut get, mut gh) = get_stream(&shared, "/mcp", Some("sess-7"));
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
    let shared = Shared::default();
    let (mut get, mut gh) = get_stream(&shared, "/mcp", Some("sess-1"));
    gh.code_details = Some("downstream_remote_disconnect".into());
    get.on_stream_end(&mut gh);
    assert_eq!(gh.records()[0]["output_status"], "success");
    // A finished stream is left alone.
    let writes = h.audit_writes;
    s.on_stream_end(&mut h);
    assert_eq!(h.audit_writes, writes);
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

#[test]
fn header_values_that_are_not_utf8_are_never_trusted() {
    // WasmHost reads header bytes lossily (a non-UTF-8 value would otherwise trap the VM in the
    // SDK); U+FFFD makes the agent id invalid, so the fallback applies.
    let mut s = stream(POLICY);
    let mut h = post(None, CALL_ECHO);
    h.request_headers
        .insert("x-agent-id".into(), "admin\u{fffd}".into());
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    assert_eq!(
        h.request_headers.get("x-agent-id").map(String::as_str),
        Some("anonymous")
    );
}

#[test]
fn identity_header_sent_twice_names_no_one_and_responses_stay_readable() {
    let mut s = stream(POLICY);
    let mut h = post(Some("admin-agent"), CALL_ECHO);
    h.repeated_headers
        .insert("x-agent-id".into(), vec!["demo-agent".into()]);
    h.request_headers
        .insert("accept-encoding".into(), "gzip, br".into());
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    assert_eq!(
        h.request_headers.get("x-agent-id").map(String::as_str),
        Some("anonymous")
    );
    assert_eq!(
        h.request_headers.get("accept-encoding").map(String::as_str),
        Some("identity")
    );
}

#[test]
fn legacy_response_may_overtake_the_posts_own_202() {
    let shared = Shared::default();
    let (mut get, mut gh) = get_stream(&shared, "/sse", None);
    stream_chunk(
        &mut get,
        &mut gh,
        b"event: endpoint\ndata: /messages?sessionId=s-1\n\n",
        false,
    );
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    h.shared = Rc::clone(&shared);
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
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    h.shared = Rc::clone(&shared);
    h.request_headers
        .insert(":path".into(), "/messages?sessionId=s-2".into());
    send_request(&mut s, &mut h);
    respond(&mut s, &mut h, "400", "text/plain", &[b"bad session"]);
    assert!(
        shared.borrow().values().all(|(v, _)| v.is_empty()),
        "store not cleared"
    );
}

#[test]
fn an_agent_header_that_already_is_the_identity_is_forwarded_untouched() {
    // One copy equal to the resolved identity: nothing to replace (the forwarded header is the
    // same either way); the tags of the body are still set.
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    assert!(!h.request_header_writes.iter().any(|n| n == "x-agent-id"));
    assert_eq!(
        h.request_headers.get("x-agent-id").map(String::as_str),
        Some("demo-agent")
    );
    assert_eq!(
        h.request_headers.get("x-mcp-tool-name").map(String::as_str),
        Some("echo")
    );
    // A value that is not the identity (here: not a valid agent id) is replaced.
    let mut s = stream(POLICY);
    let mut h = post(Some("demo agent"), CALL_ECHO);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    assert!(h.request_header_writes.iter().any(|n| n == "x-agent-id"));
    assert_eq!(
        h.request_headers.get("x-agent-id").map(String::as_str),
        Some("anonymous")
    );
}

#[test]
fn verified_identity_sources_win_over_a_client_header() {
    let policy = POLICY.replacen(
        '{',
        r#"{"identity":{"sources":[{"jwt_claim":{"claim":"sub"}},{"peer_uri_san":{"strip_prefix":"spiffe://mesh/agent/"}}],"unidentified":"reject"},"#,
        1,
    );
    // The client claims admin-agent in the tag header; the token says demo-agent.
    let mut s = stream(&policy);
    let mut h = post(Some("admin-agent"), CALL_ECHO);
    h.properties.insert(
        "metadata/filter_metadata/envoy.filters.http.jwt_authn/payload/sub".into(),
        "demo-agent".into(),
    );
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    assert_eq!(
        h.request_headers.get("x-agent-id").map(String::as_str),
        Some("demo-agent")
    );
    // mTLS only.
    let mut s = stream(&policy);
    let mut h = post(Some("admin-agent"), CALL_ECHO);
    h.properties.insert(
        "connection/uri_san_peer_certificate".into(),
        "spiffe://mesh/agent/demo-agent".into(),
    );
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    assert_eq!(
        h.request_headers.get("x-agent-id").map(String::as_str),
        Some("demo-agent")
    );
    // Neither: refused at header time, never forwarded, audited.
    let mut s = stream(&policy);
    let mut h = post(Some("admin-agent"), CALL_ECHO);
    assert_eq!(s.on_request_headers(&mut h, false), Action::Pause);
    let (status, reply) = h.reply_json();
    assert_eq!(
        (status, &reply["error"]["code"]),
        (401, &Value::from(DENIED))
    );
    let r = &h.records()[0];
    assert_eq!(
        (&r["agent_id"], &r["decision"], &r["output_status"]),
        (
            &Value::from("unidentified"),
            &Value::from("deny"),
            &Value::from("denied")
        )
    );
}

const CALL_DELETE: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_repo","arguments":{"name":"r"}}}"#;

fn respond_json(s: &mut Stream, h: &mut FakeHost) {
    let body = br#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
    respond(s, h, "200", "application/json", &[body]);
}

/// The JWT `sub` path the filter reads for `{"jwt_claim":{"claim":"sub"}}`.
const SUB: &str = "metadata/filter_metadata/envoy.filters.http.jwt_authn/payload/sub";
/// The peer certificate's URI SAN path.
const SAN: &str = "connection/uri_san_peer_certificate";

fn identity_policy(identity: &str) -> String {
    POLICY.replacen('{', &format!(r#"{{"identity":{identity},"#), 1)
}

/// agent_id, identity_source, identity_error of a record.
type IdentityFacts = (Value, Value, Value);

/// The identity facts of the stream's (only) record.
fn identity_of(h: &FakeHost) -> IdentityFacts {
    let r = &h.records()[0];
    (
        r["agent_id"].clone(),
        r["identity_source"].clone(),
        r["identity_error"].clone(),
    )
}

fn facts(agent: &str, source: Option<&str>, error: Option<&str>) -> IdentityFacts {
    let opt = |v: Option<&str>| v.map_or(Value::Null, Value::from);
    (Value::from(agent), opt(source), opt(error))
}

#[test]
fn the_record_says_where_the_identity_came_from_and_why_not() {
    // Identified by the header; absent (fallback); repeated; malformed.
    let cases = [
        (
            Some("demo-agent"),
            None,
            facts("demo-agent", Some("header"), None),
        ),
        (
            None,
            None,
            facts("anonymous", Some("fallback"), Some("absent")),
        ),
        (
            Some("admin-agent"),
            Some("admin-agent"),
            facts("anonymous", Some("header"), Some("repeated")),
        ),
        (
            Some("admin-agent\u{a0}"),
            None,
            facts("anonymous", Some("header"), Some("malformed")),
        ),
    ];
    for (agent, repeated, want) in cases {
        let mut s = stream(POLICY);
        let mut h = post(agent, CALL_ECHO);
        if let Some(r) = repeated {
            h.repeated_headers
                .insert("x-agent-id".into(), vec![r.into()]);
        }
        assert_eq!(send_request(&mut s, &mut h), Action::Continue);
        respond_json(&mut s, &mut h);
        assert_eq!(identity_of(&h), want, "{agent:?}");
        // The raw value is never in the record.
        assert!(!String::from_utf8_lossy(&h.audit).contains('\u{a0}'));
    }
}

#[test]
fn a_header_that_differs_from_an_agent_only_by_whitespace_is_not_that_agent() {
    for value in [
        " admin-agent",
        "admin-agent ",
        "admin-agent\u{a0}",
        "\u{3000}admin-agent",
        "admin-agent\u{2028}",
        "\u{feff}admin-agent",
        "admin-agent\t",
        "admin-agent\r",
        "admin-agent\u{7f}",
        "admin-agent\u{0}",
        "admin-agent\u{fffd}",
    ] {
        let mut s = stream(POLICY);
        let mut h = post(Some(value), CALL_DELETE);
        assert_eq!(send_request(&mut s, &mut h), Action::Pause, "{value:?}");
        let (status, reply) = h.reply_json();
        assert_eq!(
            (status, &reply["error"]["code"]),
            (200, &Value::from(DENIED))
        );
        assert_eq!(
            h.request_headers.get("x-agent-id").map(String::as_str),
            Some("anonymous")
        );
        assert_eq!(
            identity_of(&h),
            facts("anonymous", Some("header"), Some("malformed")),
            "{value:?}"
        );
    }
}

#[test]
fn a_malformed_verified_source_never_falls_through_to_the_header() {
    // jwt_claim, peer_uri_san, then the client's header; with a fallback and under reject.
    let sources = r#"[{"jwt_claim":{"claim":"sub"}},{"peer_uri_san":{"strip_prefix":"spiffe://mesh/agent/"}},{"header":"x-agent-id"}]"#;
    for (property, value, source, error) in [
        (SUB, "admin-agent\u{a0}", "jwt_claim", "malformed"),
        (SUB, " admin-agent", "jwt_claim", "malformed"),
        (SUB, "admin-agent\u{2028}", "jwt_claim", "malformed"),
        (SUB, "", "jwt_claim", "malformed"),
        (
            SAN,
            "spiffe://mesh/agent/admin-agent\u{3000}",
            "peer_uri_san",
            "malformed",
        ),
        (
            SAN,
            "spiffe://mesh/agent/ admin-agent",
            "peer_uri_san",
            "malformed",
        ),
        (
            SAN,
            "spiffe://evil/agent/admin-agent",
            "peer_uri_san",
            "prefix_mismatch",
        ),
        (
            SAN,
            " spiffe://mesh/agent/admin-agent",
            "peer_uri_san",
            "prefix_mismatch",
        ),
    ] {
        for reject in [false, true] {
            let unidentified = if reject { "reject" } else { "fallback" };
            let policy = identity_policy(&format!(
                r#"{{"sources":{sources},"unidentified":"{unidentified}"}}"#
            ));
            let mut s = stream(&policy);
            let mut h = post(Some("admin-agent"), CALL_DELETE);
            h.properties.insert(property.into(), value.into());
            if reject {
                assert_eq!(s.on_request_headers(&mut h, false), Action::Pause);
                let (status, reply) = h.reply_json();
                assert_eq!(
                    (status, &reply["error"]["code"]),
                    (401, &Value::from(DENIED))
                );
                assert_eq!(
                    identity_of(&h),
                    facts("unidentified", Some(source), Some(error)),
                    "{value:?}"
                );
            } else {
                assert_eq!(send_request(&mut s, &mut h), Action::Pause, "{value:?}");
                let (status, reply) = h.reply_json();
                assert_eq!(
                    (status, &reply["error"]["code"]),
                    (200, &Value::from(DENIED))
                );
                assert_eq!(
                    identity_of(&h),
                    facts("anonymous", Some(source), Some(error)),
                    "{value:?}"
                );
            }
        }
    }
}

#[test]
fn an_unreadable_identity_source_refuses_the_request_whatever_the_fallback() {
    let policy = identity_policy(
        r#"{"sources":[{"jwt_claim":{"claim":"sub"}},{"header":"x-agent-id"}],"fallback":"anonymous"}"#,
    );
    let mut s = stream(&policy);
    let mut h = post(Some("admin-agent"), CALL_ECHO);
    h.unreadable.push(SUB.into());
    assert_eq!(s.on_request_headers(&mut h, false), Action::Pause);
    let (status, reply) = h.reply_json();
    assert_eq!(
        (status, &reply["error"]["code"], &reply["id"]),
        (500, &Value::from(INTERNAL_ERROR), &Value::Null)
    );
    let r = &h.records()[0];
    assert_eq!(
        (
            &r["decision"],
            &r["output_status"],
            &r["error_code"],
            &r["http_status"]
        ),
        (
            &Value::from("deny"),
            &Value::from("denied"),
            &Value::from(INTERNAL_ERROR),
            &Value::from(500)
        )
    );
    assert_eq!(
        identity_of(&h),
        facts("unidentified", Some("jwt_claim"), Some("unreadable"))
    );
    assert_eq!(
        h.counters["mcp_guard.denials.reason.identity_unreadable"],
        1
    );
    assert_eq!(h.resumed, 0);
    // The same source read fine: the header decides as before.
    let mut s = stream(&policy);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    assert_eq!(
        h.request_headers.get("x-agent-id").map(String::as_str),
        Some("demo-agent")
    );
}

#[test]
fn list_responses_are_curated_per_agent_across_chunks() {
    let list = r#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"echo"},{"name":"delete_repo"},{"name":"search"}],"nextCursor":"n1"}}"#;
    let sse = format!("event: message\r\ndata: {list}\r\n\r\n");
    let (a, b) = sse.as_bytes().split_at(40);
    for (agent, want) in [
        ("demo-agent", vec!["echo", "search"]),
        ("admin-agent", vec!["echo", "delete_repo", "search"]),
    ] {
        let mut s = stream(POLICY);
        let mut h = post(
            Some(agent),
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#,
        );
        assert_eq!(send_request(&mut s, &mut h), Action::Continue);
        h.response_headers.insert(":status".into(), "200".into());
        h.response_headers
            .insert("content-type".into(), "text/event-stream".into());
        h.response_headers
            .insert("content-length".into(), sse.len().to_string());
        assert_eq!(s.on_response_headers(&mut h, false), Action::Continue);
        assert!(!h.response_headers.contains_key("content-length"));
        // Held until the end (Envoy buffers), then rewritten whole.
        h.response_chunk = a.to_vec();
        assert_eq!(s.on_response_body(&mut h, a.len(), false), Action::Pause);
        h.response_chunk = sse.as_bytes().to_vec();
        assert_eq!(
            s.on_response_body(&mut h, sse.len(), true),
            Action::Continue
        );
        let _ = b;
        let body = h
            .replaced_response_body
            .clone()
            .unwrap_or_else(|| sse.as_bytes().to_vec());
        let text = String::from_utf8(body).unwrap();
        let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        let names: Vec<&str> = v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, want, "{agent}");
        assert_eq!(v["result"]["nextCursor"], "n1");
        assert_eq!(h.records()[0]["output_status"], "success");
    }
    // Curation off: the list passes as the server sent it, unheld.
    let policy = POLICY.replacen('{', r#"{"curate_lists": false,"#, 1);
    let mut s = stream(&policy);
    let mut h = post(
        Some("demo-agent"),
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#,
    );
    send_request(&mut s, &mut h);
    h.response_headers.insert(":status".into(), "200".into());
    h.response_headers
        .insert("content-type".into(), "application/json".into());
    s.on_response_headers(&mut h, false);
    h.response_chunk = list.as_bytes().to_vec();
    assert_eq!(
        s.on_response_body(&mut h, list.len(), false),
        Action::Continue
    );
    assert!(h.replaced_response_body.is_none());
}

#[test]
fn an_encoded_list_response_is_refused_never_forwarded_unread() {
    const LIST_REQUEST: &str = r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#;
    let list =
        r#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"echo"},{"name":"delete_repo"}]}}"#;
    // demo-agent's request sent; a 200 response of `content_type` and `encoding` arriving.
    let answered = |request: &str, content_type: &str, encoding: &str| {
        let mut s = stream(POLICY);
        let mut h = post(Some("demo-agent"), request);
        assert_eq!(send_request(&mut s, &mut h), Action::Continue);
        h.response_headers.insert(":status".into(), "200".into());
        h.response_headers
            .insert("content-type".into(), content_type.into());
        h.response_headers
            .insert("content-encoding".into(), encoding.into());
        (s, h)
    };
    // Not what the server sent in the clear: gzip-like bytes the filter cannot read.
    let (a, b): (&[u8], &[u8]) = (b"\x1f\x8b\x08\x00\x00", b"\x00\x00\x00\xff\x03");

    // Every copy of the header counts: a second one after `identity` is not missed.
    let copies = [("content-encoding", "identity"), ("content-encoding", "br")];
    let copies = copies.map(|(n, v)| (n.to_owned(), v.to_owned()));
    assert!(Headers::from(copies.to_vec()).encoded());

    for encoding in ["gzip", "gzip, identity"] {
        let (mut s, mut h) = answered(LIST_REQUEST, "text/event-stream", encoding);
        h.response_headers
            .insert("content-length".into(), "10".into());
        assert_eq!(s.on_response_headers(&mut h, false), Action::Continue);
        assert_eq!(h.response_headers[":status"], "502");
        assert_eq!(h.response_headers["content-type"], "application/json");
        assert!(!h.response_headers.contains_key("content-encoding"));
        assert!(!h.response_headers.contains_key("content-length"));
        // Each chunk is swallowed (nothing is held); the error takes the last one's place.
        h.response_chunk = a.to_vec();
        assert_eq!(s.on_response_body(&mut h, a.len(), false), Action::Continue);
        assert_eq!(h.replaced_response_body.as_deref(), Some(&b""[..]));
        h.response_chunk = b.to_vec();
        assert_eq!(s.on_response_body(&mut h, b.len(), true), Action::Continue);
        let body: Value =
            serde_json::from_slice(h.replaced_response_body.as_deref().unwrap()).unwrap();
        assert_eq!(body["id"], 5);
        assert_eq!(body["error"]["code"], INTERNAL_ERROR);
        let r = h.records();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0]["method"], "tools/list");
        assert_eq!(r[0]["output_status"], "upstream_error");
        assert_eq!(r[0]["http_status"], 502);
        assert_eq!(h.counters["mcp_guard.refusals.reason.response_encoding"], 1);
    }

    // `identity` is no encoding: the list is curated as usual.
    let (mut s, mut h) = answered(LIST_REQUEST, "application/json", " Identity ");
    s.on_response_headers(&mut h, false);
    assert_eq!(h.response_headers[":status"], "200");
    h.response_chunk = list.as_bytes().to_vec();
    s.on_response_body(&mut h, list.len(), true);
    let out = String::from_utf8(h.replaced_response_body.clone().unwrap()).unwrap();
    assert!(
        out.contains("echo") && !out.contains("delete_repo"),
        "{out}"
    );

    // A response nothing curates (a tools/call result) may be encoded: it passes, unread.
    let (mut s, mut h) = answered(CALL_ECHO, "application/json", "gzip");
    s.on_response_headers(&mut h, false);
    h.response_chunk = a.to_vec();
    s.on_response_body(&mut h, a.len(), true);
    assert_eq!(h.response_headers[":status"], "200");
    assert!(h.replaced_response_body.is_none());

    // A server stream under curation carries list responses: encoded, it is refused too.
    // (get_stream's host: a GET whose response is 200 text/event-stream; a new stream sees it
    // with the encoding added.)
    let shared = Shared::default();
    let mut get = stream(POLICY);
    let (_, mut gh) = get_stream(&shared, "/sse", None);
    gh.response_headers
        .insert("content-encoding".into(), "gzip".into());
    get.on_request_headers(&mut gh, true);
    assert_eq!(get.on_response_headers(&mut gh, false), Action::Continue);
    assert_eq!(gh.response_headers[":status"], "502");
    stream_chunk(&mut get, &mut gh, a, false);
    assert_eq!(gh.replaced_response_body.as_deref(), Some(&b""[..]));
    stream_chunk(&mut get, &mut gh, b, true);
    let body: Value =
        serde_json::from_slice(gh.replaced_response_body.as_deref().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], INTERNAL_ERROR);
}

#[test]
fn annotations_learned_from_tools_list_refuse_destructive_tools_unless_named() {
    let policy = r#"{
      "server_id": "demo-server",
      "annotations": {"refuse": "destructive"},
      "policy": {"agents": {
          "ops": {"tools": ["*"]},
          "janitor": {"tools": ["*", "delete_repo"]}}}
    }"#;
    let shared = Shared::default();
    let call = |agent: &str, tool: &str| {
        let mut s = stream(policy);
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
        );
        let mut h = post(Some(agent), &body);
        h.shared = Rc::clone(&shared);
        send_request(&mut s, &mut h)
    };
    // Nothing learned yet: an unseen tool is refused (fail closed).
    assert_eq!(call("ops", "echo"), Action::Pause);

    // A tools/list passes (another worker): the hints are learned.
    let mut s = stream(policy);
    let mut h = post(
        Some("ops"),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    );
    h.shared = Rc::clone(&shared);
    send_request(&mut s, &mut h);
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","annotations":{"readOnlyHint":true}},{"name":"delete_repo","annotations":{"destructiveHint":true}},{"name":"add"}]}}"#],
    );

    assert_eq!(call("ops", "echo"), Action::Continue);
    assert_eq!(call("ops", "add"), Action::Continue); // no destructiveHint: true
    assert_eq!(call("ops", "delete_repo"), Action::Pause);
    assert_eq!(call("ops", "never_listed"), Action::Pause);
    // Named exactly by a rule set: exempt.
    assert_eq!(call("janitor", "delete_repo"), Action::Continue);
}

#[test]
fn legacy_list_responses_on_the_get_stream_are_curated_event_by_event() {
    let shared = Shared::default();
    let (mut get, mut gh) = get_stream(&shared, "/sse", None);
    stream_chunk(
        &mut get,
        &mut gh,
        b"event: endpoint\r\ndata: /messages/?session_id=L1\r\n\r\n",
        false,
    );
    assert!(
        gh.replaced_response_body.is_none(),
        "complete events pass untouched"
    );
    let mut s = stream(POLICY);
    let mut h = post(
        Some("demo-agent"),
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#,
    );
    h.shared = Rc::clone(&shared);
    h.request_headers
        .insert(":path".into(), "/messages/?session_id=L1".into());
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    respond(&mut s, &mut h, "202", "text/plain", &[b"Accepted"]);

    let list =
        r#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"echo"},{"name":"delete_repo"}]}}"#;
    let event = format!("event: message\r\ndata: {list}\r\n\r\n: ping\r\n");
    let (a, b) = event.as_bytes().split_at(30);
    // First part: an incomplete event is held back (the chunk becomes empty).
    stream_chunk(&mut get, &mut gh, a, false);
    assert_eq!(gh.replaced_response_body.as_deref(), Some(&b""[..]));
    // Second part: the completed event, curated for demo-agent; the trailing comment waits.
    stream_chunk(&mut get, &mut gh, b, false);
    let out = String::from_utf8(gh.replaced_response_body.clone().unwrap()).unwrap();
    assert!(
        out.starts_with("event: message\r\ndata: {") && out.ends_with("}\r\n\r\n"),
        "{out:?}"
    );
    assert!(
        out.contains("\"echo\"") && !out.contains("delete_repo"),
        "{out}"
    );
    // The end of the stream flushes what was held.
    stream_chunk(&mut get, &mut gh, b"", true);
    assert_eq!(
        gh.replaced_response_body.as_deref(),
        Some(&b": ping\r\n"[..])
    );
    let r = gh.records();
    assert_eq!(
        (&r[1]["method"], &r[1]["correlated"]),
        (&Value::from("tools/list"), &Value::from(true))
    );
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

/// The request side with `hold_request_headers: false`: the headers go on at once, the body is
/// held until its end; returns the action of the final body callback.
fn send_request_unheld(s: &mut Stream, h: &mut FakeHost) -> Action {
    assert_eq!(s.on_request_headers(h, false), Action::Continue);
    let len = h.request_body.len();
    assert_eq!(s.on_request_body(h, len / 2, false), Action::Pause);
    s.on_request_body(h, len, true)
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
    let expected = crate::ratelimit::descriptors("demo-agent", Some("tools/call"), Some("echo"));
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

const EARLY_POLICY: &str = r#"{
  "server_id": "demo-server",
  "decide_at_headers": true,
  "max_body_bytes": 4096,
  "policy": {"agents": {"demo-agent": {"tools": ["echo"]}}}
}"#;

fn routed(agent: &str, method: &str, name: Option<&str>, body: &str) -> FakeHost {
    let mut h = post(Some(agent), body);
    h.request_headers.insert("mcp-method".into(), method.into());
    if let Some(name) = name {
        h.request_headers.insert("mcp-name".into(), name.into());
    }
    h
}

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
    assert_eq!(e.field, "decide_at_headers");
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

#[test]
fn a_pending_call_larger_than_a_slot_allows_is_not_stored() {
    let stored = |request_id_header: &str| {
        let shared = Shared::default();
        let mut s = stream(POLICY);
        let mut h = post(Some("demo-agent"), CALL_ECHO);
        h.shared = Rc::clone(&shared);
        h.request_headers
            .insert(":path".into(), "/messages/?session_id=abc123".into());
        h.request_headers
            .insert("x-request-id".into(), request_id_header.into());
        assert_eq!(send_request(&mut s, &mut h), Action::Continue);
        respond(&mut s, &mut h, "202", "text/plain", &[b"Accepted"]);
        assert_eq!(h.records()[0]["output_status"], "deferred");
        let map = shared.borrow();
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

#[test]
fn the_annotations_store_is_bounded_per_server() {
    use crate::annotations::{self, MAX_BYTES, MAX_TOOLS};
    use crate::curation::ToolHints;
    use std::borrow::Cow;
    let mut h = FakeHost::default();
    let ro = ToolHints {
        read_only: Some(true),
        destructive: Some(false),
    };
    // 1,100 tools with 1 KB names, in lists of 100: only what fits in MAX_BYTES is kept.
    for batch in 0..11 {
        let tools: Vec<(Cow<'_, str>, ToolHints)> = (0..100)
            .map(|n| {
                (
                    Cow::Owned(format!("{:04}{}", batch * 100 + n, "t".repeat(1020))),
                    ro,
                )
            })
            .collect();
        assert!(annotations::learn(h.shared(), "srv", &tools));
    }
    let (value, _) = h
        .shared()
        .get("mcp_guard.annotations.srv")
        .unwrap()
        .unwrap();
    assert!(value.len() <= MAX_BYTES, "{}", value.len());
    assert!(value.len() > MAX_BYTES - 2 * 1024, "{}", value.len());
    let first = format!("{:04}{}", 0, "t".repeat(1020));
    let last = format!("{:04}{}", 1099, "t".repeat(1020));
    assert_eq!(annotations::lookup(h.shared(), "srv", &first), Ok(Some(ro)));
    assert_eq!(annotations::lookup(h.shared(), "srv", &last), Ok(None));
    // Known tools still get their hints updated when the store is full.
    let rw = ToolHints {
        read_only: Some(false),
        destructive: Some(true),
    };
    assert!(annotations::learn(
        h.shared(),
        "srv",
        &[(Cow::Borrowed(first.as_str()), rw)]
    ));
    assert_eq!(annotations::lookup(h.shared(), "srv", &first), Ok(Some(rw)));
    // Short names: the count cap.
    let tools: Vec<(Cow<'_, str>, ToolHints)> = (0..MAX_TOOLS + 10)
        .map(|n| (Cow::Owned(format!("t{n}")), ro))
        .collect();
    assert!(annotations::learn(h.shared(), "other", &tools));
    assert_eq!(
        annotations::lookup(h.shared(), "other", &format!("t{}", MAX_TOOLS - 1)),
        Ok(Some(ro))
    );
    assert_eq!(
        annotations::lookup(h.shared(), "other", &format!("t{MAX_TOOLS}")),
        Ok(None)
    );
}

/// demo-agent's `tools/list` (id 5) forwarded, and a response with `headers` (`:status` first)
/// arriving: the stream, the host, and the action of the response-headers callback.
fn list_answered(headers: &[(&str, &str)]) -> (Stream, FakeHost, Action) {
    const LIST_REQUEST: &str = r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#;
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), LIST_REQUEST);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    for (name, value) in headers {
        if h.response_headers.contains_key(*name) {
            h.repeated_response_headers
                .entry((*name).to_owned())
                .or_default()
                .push((*value).to_owned());
        } else {
            h.response_headers.insert((*name).into(), (*value).into());
        }
    }
    let action = s.on_response_headers(&mut h, false);
    (s, h, action)
}

/// The body the client got after `chunks` (the last one ends the stream); Envoy hands a held
/// body back whole, so the last chunk is the whole body when the filter held it.
fn client_body(s: &mut Stream, h: &mut FakeHost, chunks: &[&[u8]]) -> Vec<u8> {
    let mut got = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        h.response_chunk = chunk.to_vec();
        h.replaced_response_body = None;
        let end = i + 1 == chunks.len();
        if s.on_response_body(h, chunk.len(), end) == Action::Continue {
            got.extend(
                h.replaced_response_body
                    .clone()
                    .unwrap_or_else(|| chunk.to_vec()),
            );
        }
    }
    got
}

/// The client got a JSON-RPC -32603 for id 5 and no denied tool; audited and counted as `reason`.
fn assert_refused(h: &FakeHost, body: &[u8], status: u32, reason: &str) {
    let text = String::from_utf8_lossy(body);
    assert!(!text.contains("delete_repo"), "{text}");
    let doc = text.strip_prefix("event: message\ndata: ").unwrap_or(&text);
    let v: Value = serde_json::from_str(doc.trim_end()).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(
        (v["id"].clone(), v["error"]["code"].clone()),
        (5.into(), INTERNAL_ERROR.into()),
        "{text}"
    );
    let r = h.records();
    assert_eq!(r.len(), 1);
    assert_eq!(
        (
            r[0]["method"].as_str(),
            r[0]["output_status"].as_str(),
            r[0]["error_code"].as_i64(),
            r[0]["http_status"].as_u64()
        ),
        (
            Some("tools/list"),
            Some("upstream_error"),
            Some(i64::from(INTERNAL_ERROR)),
            Some(u64::from(status))
        ),
    );
    assert_eq!(r[0]["refusal"], reason);
    assert_eq!(
        h.counters[&format!("mcp_guard.refusals.reason.{reason}")],
        1,
        "{:?}",
        h.counters
    );
}

const DENIED_LIST: &[u8] =
    br#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"echo"},{"name":"delete_repo"}]}}"#;

#[test]
fn a_list_response_of_a_content_type_or_charset_curation_cannot_read_is_refused() {
    let json = ("content-type", "application/json");
    for (headers, reason) in [
        (
            vec![("content-type", "text/plain")],
            "response_content_type",
        ),
        (
            vec![("content-type", "application/json-seq")],
            "response_content_type",
        ),
        (
            vec![("content-type", "application/json, text/event-stream")],
            "response_content_type",
        ),
        (vec![], "response_content_type"),
        (vec![json, json], "response_content_type"),
        (
            vec![json, ("content-type", "text/plain")],
            "response_content_type",
        ),
        (
            vec![("content-type", "application/json; charset=utf-16")],
            "response_charset",
        ),
        (
            vec![("content-type", "text/event-stream; charset=iso-8859-1")],
            "response_charset",
        ),
    ] {
        let mut all = vec![(":status", "200"), ("content-length", "86")];
        all.extend(headers.iter().copied());
        let (mut s, mut h, action) = list_answered(&all);
        assert_eq!(action, Action::Continue);
        assert_eq!(h.response_headers[":status"], "502", "{headers:?}");
        assert_eq!(h.response_headers["content-type"], "application/json");
        assert!(!h.response_headers.contains_key("content-length"));
        // Swallowed chunk by chunk, the error in the last one's place.
        let body = client_body(&mut s, &mut h, &[&DENIED_LIST[..40], &DENIED_LIST[40..]]);
        assert_refused(&h, &body, 502, reason);
    }
    // Another status (a 404 that ends a session, a 500) stays, with the error as its body.
    let (mut s, mut h, _) = list_answered(&[(":status", "404"), ("content-type", "text/plain")]);
    assert_eq!(h.response_headers[":status"], "404");
    let body = client_body(&mut s, &mut h, &[DENIED_LIST]);
    assert_refused(&h, &body, 404, "response_content_type");
}

#[test]
fn a_list_response_curation_cannot_read_is_refused_once_held() {
    let list = String::from_utf8(DENIED_LIST.to_vec()).unwrap();
    let mut latin1 = DENIED_LIST.to_vec();
    latin1.extend(b" \xe9");
    for (ctype, body, reason) in [
        ("application/json", latin1.clone(), "response_utf8"),
        ("application/json", [b"\xef\xbb\xbf", DENIED_LIST].concat(), "response_utf8"),
        ("text/event-stream", [b"data: ", DENIED_LIST, b"\n\ndata: \xff\n\n"].concat(), "response_utf8"),
        ("application/json", format!("{list}{list}").into_bytes(), "response_trailing"),
        ("text/event-stream", format!("data: {list}x\n\n").into_bytes(), "response_trailing"),
        ("application/json", br#"{"jsonrpc":"2.0","id":5,"result":{"tools":{"a":{"name":"delete_repo"}}}}"#.to_vec(), "response_shape"),
        ("application/json", br#"{"jsonrpc":"2.0","id":5,"result":{"tools":[]},"result":{"tools":[{"name":"delete_repo"}]}}"#.to_vec(), "response_shape"),
        ("application/json", b"".to_vec(), "response_shape"),
        ("application/json", list.replace("\"id\":5", "\"id\":\"5\"").into_bytes(), "response_id"),
        ("application/json", list.replace("\"id\":5", "\"id\":5.0").into_bytes(), "response_id"),
        ("application/json", list.replace("\"id\":5", "\"id\":5e0").into_bytes(), "response_id"),
        ("text/event-stream", format!("event: message\ndata: {}\n\n", list.replace("\"id\":5", "\"id\":77")).into_bytes(), "response_id"),
    ] {
        let (mut s, mut h, action) = list_answered(&[(":status", "200"), ("content-type", ctype)]);
        assert_eq!(action, Action::Continue);
        assert_eq!(h.response_headers[":status"], "200");
        assert_eq!(s.on_response_body(&mut h, 10, false), Action::Pause);
        let got = client_body(&mut s, &mut h, &[&body]);
        assert_refused(&h, &got, 200, reason);
        if ctype == "text/event-stream" {
            assert!(got.starts_with(b"event: message\ndata: {"), "{}", String::from_utf8_lossy(&got));
        }
    }
}

#[test]
fn a_readable_list_response_is_curated_and_private() {
    let list = r#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"echo"},{"name":"delete_repo"}],"ttlMs":0,"cacheScope":"public"}}"#;
    for ctype in ["application/json; charset=UTF-8", "Text/Event-Stream"] {
        let (mut s, mut h, _) = list_answered(&[(":status", "200"), ("content-type", ctype)]);
        let body = if ctype.starts_with('T') {
            format!("data: {list}\n\n")
        } else {
            list.to_owned()
        };
        let got = String::from_utf8(client_body(&mut s, &mut h, &[body.as_bytes()])).unwrap();
        assert!(
            got.contains("\"echo\"") && !got.contains("delete_repo"),
            "{got}"
        );
        assert!(
            got.contains(r#""cacheScope":"private""#) && !got.contains("public"),
            "{got}"
        );
        assert_eq!(h.records()[0]["output_status"], "success");
        assert!(h.records()[0].get("refusal").is_none());
    }
}

#[test]
fn a_202_to_a_list_request_passes_without_its_body() {
    let (mut s, mut h, action) = list_answered(&[
        (":status", "202"),
        ("content-type", "text/plain"),
        ("content-length", "86"),
    ]);
    assert_eq!(action, Action::Continue);
    assert!(!h.response_headers.contains_key("content-length"));
    let got = client_body(&mut s, &mut h, &[DENIED_LIST]);
    assert!(got.is_empty());
    assert_eq!(h.records()[0]["http_status"], 202);
}

/// demo-agent's legacy `tools/list` (id 4) POSTed, and `events` arriving on its session's GET
/// stream in one chunk before the stream ends: what the client got on the GET stream, and its
/// host.
fn legacy_list_on_get_stream(events: &[u8]) -> (String, FakeHost) {
    let shared = Shared::default();
    let (mut get, mut gh) = get_stream(&shared, "/sse", None);
    stream_chunk(
        &mut get,
        &mut gh,
        b"event: endpoint\r\ndata: /messages/?session_id=L1\r\n\r\n",
        false,
    );
    let mut s = stream(POLICY);
    let mut h = post(
        Some("demo-agent"),
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#,
    );
    h.shared = Rc::clone(&shared);
    h.request_headers
        .insert(":path".into(), "/messages/?session_id=L1".into());
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    respond(&mut s, &mut h, "202", "text/plain", &[b"Accepted"]);
    gh.replaced_response_body = None;
    stream_chunk(&mut get, &mut gh, events, false);
    let mut got = gh
        .replaced_response_body
        .take()
        .unwrap_or_else(|| events.to_vec());
    stream_chunk(&mut get, &mut gh, b"", true);
    got.extend(gh.replaced_response_body.take().unwrap_or_default());
    (String::from_utf8_lossy(&got).into_owned(), gh)
}

#[test]
fn a_list_on_the_server_stream_is_curated_or_refused() {
    let list = r#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"echo"},{"name":"delete_repo"}],"cacheScope":"public"}}"#;
    let other =
        r#"{"jsonrpc":"2.0","id":9,"result":{"content":[{"type":"text","text":"not a list"}]}}"#;
    // Readable: curated and private; another request's result and a ping pass as they are.
    let (got, gh) = legacy_list_on_get_stream(
        format!(": ping\n\ndata: {other}\n\ndata: {list}\n\n").as_bytes(),
    );
    assert!(
        got.contains("\"echo\"") && !got.contains("delete_repo"),
        "{got}"
    );
    assert!(got.contains(r#""cacheScope":"private""#), "{got}");
    assert!(
        got.starts_with(&format!(": ping\n\ndata: {other}\n\n")),
        "{got}"
    );
    let r = gh.records();
    assert_eq!(
        (r[1]["method"].as_str(), r[1]["output_status"].as_str()),
        (Some("tools/list"), Some("success"))
    );

    for (events, reason, claimed) in [
        // Another spelling of the id answers no request mcp-guard curates for: refused.
        (
            format!("data: {}\n\n", list.replace("\"id\":4", "\"id\":4.0")),
            "response_id",
            false,
        ),
        (
            format!("data: {}\n\n", list.replace("\"id\":4", "\"id\":\"4\"")),
            "response_id",
            false,
        ),
        // Claimed, but unreadable or of another shape.
        (format!("data: {list}{list}\n\n"), "response_trailing", true),
        (
            format!(
                "data: {}\n\n",
                list.replace(
                    r#""tools":[{"name":"echo"},{"name":"delete_repo"}]"#,
                    r#""tools":{"x":{"name":"delete_repo"}}"#
                )
            ),
            "response_shape",
            true,
        ),
        (format!("data: \u{feff}{list}\n\n"), "response_utf8", false),
        (
            format!(
                "data: {}\n\n",
                list.replace("\"result\"", "\"result\":{},\"result\"")
            ),
            "response_shape",
            false,
        ),
    ] {
        let (got, gh) = legacy_list_on_get_stream(events.as_bytes());
        assert!(!got.contains("delete_repo"), "{events}: {got}");
        let data = got
            .strip_prefix("event: message\ndata: ")
            .unwrap_or_else(|| panic!("{events}: {got}"));
        let v: Value = serde_json::from_str(data.trim_end()).unwrap();
        assert_eq!(v["error"]["code"], INTERNAL_ERROR, "{got}");
        assert_eq!(
            gh.counters[&format!("mcp_guard.refusals.reason.{reason}")],
            1,
            "{events}"
        );
        if claimed {
            let r = gh.records();
            let list = r.iter().find(|r| r["method"] == "tools/list").unwrap();
            assert_eq!(
                (list["output_status"].as_str(), list["error_code"].as_i64()),
                (Some("upstream_error"), Some(i64::from(INTERNAL_ERROR))),
                "{events}"
            );
            assert_eq!(list["refusal"], reason, "{events}");
        }
    }
}

#[test]
fn an_event_too_large_to_hold_on_a_server_stream_passes_unexamined() {
    let shared = Shared::default();
    let (mut get, mut gh) = get_stream(&shared, "/sse", None);
    stream_chunk(
        &mut get,
        &mut gh,
        b"event: endpoint\r\ndata: /messages/?session_id=L1\r\n\r\n",
        false,
    );
    let big = format!(
        "data: {{\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{{\"content\":[{{\"type\":\"text\",\"text\":\"{}",
        "A".repeat(crate::curation::MAX_HELD_EVENT + 10)
    );
    gh.replaced_response_body = None;
    stream_chunk(&mut get, &mut gh, big.as_bytes(), false);
    let got = gh
        .replaced_response_body
        .take()
        .unwrap_or_else(|| big.clone().into_bytes());
    assert_eq!(got.len(), big.len());
    assert!(got == big.as_bytes());
    stream_chunk(&mut get, &mut gh, b"\"}]}}\n\n", false);
    let got = gh.replaced_response_body.take();
    assert!(
        got.is_none() || got.as_deref() == Some(&b"\"}]}}\n\n"[..]),
        "{got:?}"
    );
    assert!(
        !gh.counters
            .keys()
            .any(|k| k.starts_with("mcp_guard.refusals")),
        "{:?}",
        gh.counters
    );
}

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
    let shared = Shared::default();
    let (mut get, mut gh) = get_stream(&shared, "/mcp", Some("s-1"));
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

#[test]
fn an_annotations_store_that_cannot_be_read_refuses_the_call() {
    let policy = r#"{
      "server_id": "demo-server",
      "annotations": {"refuse": "destructive", "unseen": "allow"},
      "policy": {"agents": {"ops": {"tools": ["*"]}}}
    }"#;
    let body =
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
    // Readable (and empty): an unseen tool is allowed, as configured.
    let mut s = stream(policy);
    let mut h = post(Some("ops"), body);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    // Unreadable: not "never shown"; refused.
    let mut s = stream(policy);
    let mut h = post(Some("ops"), body);
    h.failing = vec![Read::SharedData];
    assert_eq!(send_request(&mut s, &mut h), Action::Pause);
    let (status, reply) = h.reply_json();
    assert_eq!(
        (status, reply["error"]["code"].clone()),
        (200, DENIED.into())
    );
    assert_eq!(h.records()[0]["output_status"], "denied");
}
