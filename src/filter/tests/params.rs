//! MCP 2026-07-28 `Mcp-Param-*` headers: markings learned from tools/list, verified against
//! the body, and (with `param_tags`) set as tag headers, RLS descriptor entries and audit
//! hashes.

use super::*;

const PLAIN: &str = r#"{
  "server_id": "demo-server",
  "policy": {"agents": {"ops": {"tools": ["*"]}}}
}"#;

const TAGGED: &str = r#"{
  "server_id": "demo-server",
  "param_tags": {"execute_sql": {"Region": "x-mcp-param-region"}},
  "policy": {"agents": {"ops": {"tools": ["*"]}}}
}"#;

const TOOLS: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[
  {"name":"execute_sql","inputSchema":{"type":"object","properties":{
     "region":{"type":"string","x-mcp-header":"Region"},
     "query":{"type":"string"}},"required":["region","query"]}},
  {"name":"broken","inputSchema":{"type":"object","properties":{
     "n":{"type":"number","x-mcp-header":"N"}}}},
  {"name":"echo","inputSchema":{"type":"object","properties":{"text":{"type":"string"}}}}
]}}"#;

/// Lists the tools on `scenario` (another worker): the markings are learned.
fn list_tools(scenario: &Scenario, response: &str) {
    let (mut s, mut h) = scenario.post(
        Some("ops"),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    );
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[response.as_bytes()],
    );
}

/// A 2026-07-28 `tools/call` (with `_meta`) of `tool` with `arguments`.
fn call_2026(tool: &str, arguments: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
    )
}

/// A POST of the 2026-07-28 `tools/call` `body` from `ops` on `scenario`, with the routing
/// headers such a client sends (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`).
fn post_2026(scenario: &Scenario, body: &str) -> (Stream, FakeHost) {
    let (s, mut h) = scenario.post(Some("ops"), body);
    let tool = serde_json::from_str::<Value>(body).unwrap()["params"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    h.request_headers
        .insert("mcp-protocol-version".into(), "2026-07-28".into());
    h.request_headers
        .insert("mcp-method".into(), "tools/call".into());
    h.request_headers.insert("mcp-name".into(), tool);
    (s, h)
}

/// Sends `body` ([`post_2026`]) with these extra request headers on `scenario`; returns the
/// stream's host.
fn send(scenario: &Scenario, body: &str, headers: &[(&str, &str)]) -> (Action, FakeHost) {
    let (mut s, mut h) = post_2026(scenario, body);
    for (name, value) in headers {
        if h.request_headers.contains_key(*name) {
            h.repeated_headers
                .entry((*name).to_owned())
                .or_default()
                .push((*value).to_owned());
        } else {
            h.request_headers.insert((*name).into(), (*value).into());
        }
    }
    let action = send_request(&mut s, &mut h);
    (action, h)
}

fn assert_mismatch(h: &FakeHost, header: &str) {
    let (status, reply) = h.reply_json();
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], -32020, "{reply}");
    assert_eq!(reply["id"], 7);
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains(header), "{message}");
    let records = h.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["decision"], "deny");
    assert_eq!(records[0]["output_status"], "invalid_request");
    assert_eq!(records[0]["tool_name"], "execute_sql");
    assert_eq!(
        h.counters.get("mcp_guard.refusals.reason.header_mismatch"),
        Some(&1)
    );
}

#[test]
fn a_learned_marking_is_verified_by_default_and_a_disagreeing_header_refused() {
    let scenario = Scenario::new(PLAIN);
    list_tools(&scenario, TOOLS);
    let args = r#"{"region":"us-west1","query":"SELECT 1"}"#;
    let body = call_2026("execute_sql", args);
    // Matching (header names are case-insensitive; Envoy gives them lower-case).
    let (action, h) = send(&scenario, &body, &[("mcp-param-region", "us-west1")]);
    assert_eq!(action, Action::Continue, "{:?}", h.local_reply);
    // No param_tags: nothing tagged, nothing extra in the record.
    assert_eq!(h.request_headers.get("x-mcp-param-region"), None);
    assert_eq!(h.records().len(), 0); // settled when the response comes
                                      // Disagreeing, missing, sent twice, malformed: refused before the server sees it.
    for headers in [
        vec![("mcp-param-region", "eu-west1")],
        vec![],
        vec![
            ("mcp-param-region", "us-west1"),
            ("mcp-param-region", "eu-west1"),
        ],
        vec![("mcp-param-region", "=?base64?dXMtd2VzdDE?=")],
    ] {
        let (action, h) = send(&scenario, &body, &headers);
        assert_eq!(action, Action::Pause, "{headers:?}");
        assert_mismatch(&h, "Mcp-Param-Region");
        // The argument value is never echoed.
        let (_, reply) = h.reply_json();
        assert!(!reply.to_string().contains("west"), "{reply}");
    }
    // A header whose argument is absent.
    let (action, h) = send(
        &scenario,
        &call_2026("execute_sql", r#"{"query":"SELECT 1"}"#),
        &[("mcp-param-region", "us-west1")],
    );
    assert_eq!(action, Action::Pause);
    assert_mismatch(&h, "Mcp-Param-Region");
    // The Base64 form is accepted.
    let (action, _) = send(
        &scenario,
        &call_2026("execute_sql", r#"{"region":"Hello, \u4e16\u754c"}"#),
        &[("mcp-param-region", "=?base64?SGVsbG8sIOS4lueVjA==?=")],
    );
    assert_eq!(action, Action::Continue);
}

#[test]
fn older_clients_need_no_header_and_unknown_tools_are_not_judged() {
    let scenario = Scenario::new(PLAIN);
    list_tools(&scenario, TOOLS);
    // A 2025-11-25 body (no _meta) without the header: nothing required.
    let old = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"execute_sql","arguments":{"region":"us-west1"}}}"#;
    let (mut s, mut h) = scenario.post(Some("ops"), old);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    // ...but a header it does send must still agree.
    let (mut s, mut h) = scenario.post(Some("ops"), old);
    h.request_headers
        .insert("mcp-param-region".into(), "eu-west1".into());
    assert_eq!(send_request(&mut s, &mut h), Action::Pause);
    assert_mismatch(&h, "Mcp-Param-Region");
    // A tool no tools/list showed, and a header no marking names: passed unjudged.
    let (action, _) = send(
        &scenario,
        &call_2026("never_listed", r#"{"region":"x"}"#),
        &[("mcp-param-region", "y")],
    );
    assert_eq!(action, Action::Continue);
    let (action, _) = send(
        &scenario,
        &call_2026("echo", r#"{"text":"x"}"#),
        &[("mcp-param-text", "y")],
    );
    assert_eq!(action, Action::Continue);
}

#[test]
fn a_tool_with_invalid_annotations_refuses_any_param_header() {
    let scenario = Scenario::new(PLAIN);
    list_tools(&scenario, TOOLS);
    let (action, _) = send(&scenario, &call_2026("broken", r#"{"n":1.5}"#), &[]);
    assert_eq!(action, Action::Continue);
    let (action, h) = send(
        &scenario,
        &call_2026("broken", r#"{"n":1.5}"#),
        &[("mcp-param-n", "1.5")],
    );
    assert_eq!(action, Action::Pause);
    let (status, reply) = h.reply_json();
    assert_eq!(
        (status, reply["error"]["code"].clone()),
        (400, (-32020).into())
    );
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("invalid"));
}

#[test]
fn a_verified_value_is_tagged_hashed_in_the_record_and_never_logged_raw() {
    let scenario = Scenario::new(TAGGED);
    list_tools(&scenario, TOOLS);
    let args = r#"{"region":"us-west1","query":"SELECT 1"}"#;
    let (mut s, mut h) = post_2026(&scenario, &call_2026("execute_sql", args));
    h.request_headers
        .insert("mcp-param-region".into(), "us-west1".into());
    // A client-sent copy of the tag header is removed first.
    h.request_headers
        .insert("x-mcp-param-region".into(), "forged".into());
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    assert_eq!(
        h.request_headers
            .get("x-mcp-param-region")
            .map(String::as_str),
        Some("us-west1")
    );
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[br#"{"jsonrpc":"2.0","id":7,"result":{"content":[]}}"#],
    );
    let records = h.records();
    assert_eq!(
        records[0]["params"]["Region"],
        audit::input_hash(b"us-west1")
    );
    let log = String::from_utf8(h.audit.clone()).unwrap();
    assert!(!log.contains("us-west1"), "{log}");

    // An older client's call is tagged from its body too: the limit cannot be skipped by
    // speaking an older revision.
    let old = r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"execute_sql","arguments":{"region":"eu west"}}}"#;
    let (mut s, mut h) = scenario.post(Some("ops"), old);
    h.request_headers
        .insert("x-mcp-param-region".into(), "forged".into());
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    assert_eq!(
        h.request_headers
            .get("x-mcp-param-region")
            .map(String::as_str),
        Some("eu%20west")
    );
    // No value: no tag (and the client's copy stays removed).
    let none = call_2026("execute_sql", r#"{"query":"SELECT 1"}"#);
    let (mut s, mut h) = post_2026(&scenario, &none);
    h.request_headers
        .insert("x-mcp-param-region".into(), "forged".into());
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    assert_eq!(h.request_headers.get("x-mcp-param-region"), None);
}

#[test]
fn a_tagged_tool_whose_markings_are_unknown_is_refused_until_listed() {
    let scenario = Scenario::new(TAGGED);
    let body = call_2026("execute_sql", r#"{"region":"us-west1"}"#);
    let (action, h) = send(&scenario, &body, &[("mcp-param-region", "us-west1")]);
    assert_eq!(action, Action::Pause);
    assert_mismatch(&h, "Mcp-Param");
    let (_, reply) = h.reply_json();
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("tools/list"));
    list_tools(&scenario, TOOLS);
    let (action, h) = send(&scenario, &body, &[("mcp-param-region", "us-west1")]);
    assert_eq!(action, Action::Continue);
    assert_eq!(
        h.request_headers
            .get("x-mcp-param-region")
            .map(String::as_str),
        Some("us-west1")
    );
    // The server drops the marking: a later listing forgets it, and the tagged tool is
    // refused again rather than forwarded untagged.
    list_tools(
        &scenario,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"execute_sql","inputSchema":{"type":"object"}}]}}"#,
    );
    let (action, _) = send(&scenario, &body, &[("mcp-param-region", "us-west1")]);
    assert_eq!(action, Action::Pause);
}

#[test]
fn a_markings_store_that_cannot_be_read_refuses_the_call() {
    let scenario = Scenario::new(PLAIN);
    list_tools(&scenario, TOOLS);
    let body = call_2026("execute_sql", r#"{"region":"us-west1"}"#);
    let (mut s, mut h) = post_2026(&scenario, &body);
    h.request_headers
        .insert("mcp-param-region".into(), "us-west1".into());
    h.failing = vec![Read::SharedData];
    assert_eq!(send_request(&mut s, &mut h), Action::Pause);
    let (status, reply) = h.reply_json();
    assert_eq!(
        (status, reply["error"]["code"].clone()),
        (500, (-32603).into())
    );
    assert_eq!(reply["id"], 7);
    assert_eq!(h.records()[0]["output_status"], "denied");
    assert_eq!(
        h.counters.get("mcp_guard.refusals.reason.request_read"),
        Some(&1)
    );
}

#[test]
fn markings_are_learned_from_sse_list_responses_and_curated_lists() {
    // The agent may not see execute_sql, but its markings are still learned (the store is the
    // server's, not the agent's).
    let policy = r#"{
      "server_id": "demo-server",
      "policy": {"agents": {"ops": {"tools": ["*"]}, "viewer": {"tools": ["echo"]}}}
    }"#;
    let scenario = Scenario::new(policy);
    let (mut s, mut h) = scenario.post(
        Some("viewer"),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    );
    send_request(&mut s, &mut h);
    let event = format!(
        "event: message\r\ndata: {}\r\n\r\n",
        TOOLS.replace('\n', "")
    );
    respond(
        &mut s,
        &mut h,
        "200",
        "text/event-stream",
        &[event.as_bytes()],
    );
    let shown = String::from_utf8(h.replaced_response_body.clone().unwrap()).unwrap();
    assert!(!shown.contains("execute_sql"), "{shown}");
    let (action, h) = send(
        &scenario,
        &call_2026("execute_sql", r#"{"region":"us-west1"}"#),
        &[("mcp-param-region", "eu-west1")],
    );
    assert_eq!(action, Action::Pause);
    assert_mismatch(&h, "Mcp-Param-Region");
}

#[test]
fn the_rls_gets_the_verified_parameter_as_a_descriptor_entry() {
    let policy = r#"{
      "server_id": "demo-server",
      "hold_request_headers": false,
      "rate_limit_service": {"cluster": "ratelimit", "domain": "mcp"},
      "param_tags": {"execute_sql": {"region": "x-mcp-param-region"}},
      "policy": {"agents": {"ops": {"tools": ["*"]}}}
    }"#;
    let scenario = Scenario::new(policy);
    // Learn (hold_request_headers: false still holds the list response).
    let (mut s, mut h) = scenario.post(
        Some("ops"),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    );
    send_request_unheld(&mut s, &mut h);
    s.on_grpc_response(&mut h, 41, 0, Some(&[0x08, 0x01]));
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[TOOLS.as_bytes()],
    );

    let (mut s, mut h) = post_2026(
        &scenario,
        &call_2026("execute_sql", r#"{"region":"us-west1"}"#),
    );
    h.request_headers
        .insert("mcp-param-region".into(), "us-west1".into());
    assert_eq!(send_request_unheld(&mut s, &mut h), Action::Pause);
    let [(_, _, _, message, _)] = h.grpc_calls.as_slice() else {
        panic!("one RLS call expected: {:?}", h.grpc_calls);
    };
    let rls =
        crate::ratelimit::RateLimitService::new("ratelimit", "mcp".into(), 20, false).unwrap();
    let params = [("x-mcp-param-region", "us-west1".to_owned())];
    let expected =
        crate::ratelimit::descriptors("ops", Some("tools/call"), Some("execute_sql"), &params);
    assert_eq!(*message, rls.request(&expected));
}

#[test]
fn markings_are_learned_from_a_list_on_a_legacy_server_stream() {
    // The legacy HTTP+SSE transport answers tools/list on its GET stream: a tagged tool is
    // known from there, so such a client is not refused for ever.
    let scenario = Scenario::new(TAGGED);
    let (mut get, mut gh) = scenario.legacy_get("L1");
    let (mut s, mut h) = scenario.legacy_post(
        "L1",
        Some("ops"),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    );
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    respond(&mut s, &mut h, "202", "text/plain", &[b"Accepted"]);
    let event = format!(
        "event: message\r\ndata: {}\r\n\r\n",
        TOOLS.replace('\n', "")
    );
    stream_chunk(&mut get, &mut gh, event.as_bytes(), false);
    assert!(gh.replaced_response_body.is_some());

    let old = r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"execute_sql","arguments":{"region":"eu-west1"}}}"#;
    let (mut s, mut h) = scenario.legacy_post("L1", Some("ops"), old);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    assert_eq!(
        h.request_headers
            .get("x-mcp-param-region")
            .map(String::as_str),
        Some("eu-west1")
    );
}

#[test]
fn with_decide_at_headers_a_streamed_call_is_checked_at_its_end_and_a_tagged_one_held() {
    let policy = r#"{
      "server_id": "demo-server",
      "decide_at_headers": true,
      "param_tags": {"tagged": {"Region": "x-mcp-param-region"}},
      "policy": {"agents": {"ops": {"tools": ["*"]}}}
    }"#;
    let scenario = Scenario::new(policy);
    list_tools(&scenario, TOOLS);
    // execute_sql has markings but no tag: decided at its headers, streamed, and refused at the
    // end of the body when its Mcp-Param header disagrees.
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"execute_sql","arguments":{"region":"us-west1"}}}"#;
    let mut h = routed("ops", "tools/call", Some("execute_sql"), body);
    h.shared = Rc::clone(&scenario.shared);
    h.request_headers
        .insert("mcp-param-region".into(), "eu-west1".into());
    let mut s = stream(policy);
    assert_eq!(
        in_phase(&mut h, Phase::RequestHeaders, |h| s
            .on_request_headers(h, false)),
        Action::Continue
    );
    let len = h.request_body.len();
    assert_eq!(s.on_request_body(&mut h, len, true), Action::Pause);
    let (status, reply) = h.reply_json();
    assert_eq!(
        (status, reply["error"]["code"].clone()),
        (400, (-32020).into())
    );
    // A tool with param_tags is held to its body (its tag needs the verified value).
    let body = r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"tagged","arguments":{}}}"#;
    let mut h = routed("ops", "tools/call", Some("tagged"), body);
    h.shared = Rc::clone(&scenario.shared);
    let mut s = stream(policy);
    assert_eq!(
        in_phase(&mut h, Phase::RequestHeaders, |h| s
            .on_request_headers(h, false)),
        Action::Pause
    );
}
