//! JSON-RPC batches: refused whole on a denial, forwarded only when uniform and within max_batch_calls.

use super::*;

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
