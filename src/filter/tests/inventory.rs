//! The server inventory (`crate::inventory`): what `initialize` and `server/discover` results
//! teach reaches every later record of the session (or of the server), on any worker.

use super::*;

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#;

/// An `initialize` result from `name` `version`, negotiating `revision`.
fn init_result(name: &str, version: &str, revision: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":0,"result":{{"protocolVersion":"{revision}","capabilities":{{"tools":{{"listChanged":false}},"logging":{{}}}},"serverInfo":{{"name":"{name}","version":"{version}"}}}}}}"#
    )
}

/// Initializes through the filter: the response (`content_type`, `body`) assigns `session`
/// (none: a stateless server). Returns the initialize stream's host (its record, its stats).
fn initialize(sc: &Scenario, session: Option<&str>, content_type: &str, body: &[u8]) -> FakeHost {
    let (mut s, mut h) = sc.post(Some("demo-agent"), INITIALIZE);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    if let Some(session) = session {
        h.response_headers
            .insert("mcp-session-id".into(), session.into());
    }
    let half = body.len() / 2;
    respond(
        &mut s,
        &mut h,
        "200",
        content_type,
        &[&body[..half], &body[half..]],
    );
    in_phase(&mut h, Phase::Log, |h| s.on_stream_end(h));
    h
}

/// A later `tools/call` of echo on another worker (`session`: its `Mcp-Session-Id`;
/// `version`: its `MCP-Protocol-Version` header); the record of it.
fn later_call(sc: &Scenario, session: Option<&str>, version: Option<&str>) -> Value {
    let (mut s, mut h) = sc.post(Some("demo-agent"), CALL_ECHO);
    later(&mut s, &mut h, session, version)
}

fn later(s: &mut Stream, h: &mut FakeHost, session: Option<&str>, version: Option<&str>) -> Value {
    if let Some(session) = session {
        h.request_headers
            .insert("mcp-session-id".into(), session.into());
    }
    if let Some(version) = version {
        h.request_headers
            .insert("mcp-protocol-version".into(), version.into());
    }
    assert_eq!(send_request(s, h), Action::Continue);
    respond(
        s,
        h,
        "200",
        "application/json",
        &[br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#],
    );
    let r = h.records();
    assert_eq!(r.len(), 1);
    r[0].clone()
}

fn inventory_of(record: &Value) -> (Value, Value, Value) {
    (
        record["server_name"].clone(),
        record["server_version"].clone(),
        record["protocol_version"].clone(),
    )
}

fn known(name: &str, version: &str, revision: &str) -> (Value, Value, Value) {
    (name.into(), version.into(), revision.into())
}

const UNKNOWN: (Value, Value, Value) = (Value::Null, Value::Null, Value::Null);

#[test]
fn a_json_initialize_result_names_the_server_in_the_sessions_later_records() {
    let sc = Scenario::new(POLICY);
    let body = init_result("demo-server", "1.4.2", "2025-06-18");
    let h = initialize(&sc, Some("sess-1"), "application/json", body.as_bytes());
    let r = h.records();
    // The initialize record itself: the negotiated revision, learned from its own response.
    assert_eq!(
        inventory_of(&r[0]),
        known("demo-server", "1.4.2", "2025-06-18")
    );
    assert_eq!(r[0]["session_id"], "sess-1");
    assert!(r[0].get("inventory_error").is_none());
    assert_eq!(h.counters["mcp_guard.servers_seen.demo-server.1_4_2"], 1);
    // A later call of the session, on another worker: the header's revision when it has one,
    // the negotiated one when it has none.
    let with_header = later_call(&sc, Some("sess-1"), Some("2025-06-18"));
    assert_eq!(
        inventory_of(&with_header),
        known("demo-server", "1.4.2", "2025-06-18")
    );
    let without = later_call(&sc, Some("sess-1"), None);
    assert_eq!(
        inventory_of(&without),
        known("demo-server", "1.4.2", "2025-06-18")
    );
}

#[test]
fn an_sse_initialize_result_is_read_as_it_streams() {
    let sc = Scenario::new(POLICY);
    // The Python SDK's framing: CRLF, a priming event, the result split across chunks.
    let body = format!(
        "event: message\r\nid: p\r\ndata: \r\n\r\nevent: message\r\nid: 1\r\ndata: {}\r\n\r\n",
        init_result("py-server", "2.3.0", "2025-11-25")
    );
    let h = initialize(&sc, Some("sse-1"), "text/event-stream", body.as_bytes());
    assert_eq!(
        inventory_of(&h.records()[0]),
        known("py-server", "2.3.0", "2025-11-25")
    );
    let r = later_call(&sc, Some("sse-1"), None);
    assert_eq!(inventory_of(&r), known("py-server", "2.3.0", "2025-11-25"));
}

#[test]
fn each_session_keeps_its_own_answer_and_the_server_keeps_the_latest() {
    let sc = Scenario::new(POLICY);
    let old = init_result("demo-server", "1.0.0", "2025-03-26");
    let new = init_result("demo-server", "2.0.0", "2025-06-18");
    let h1 = initialize(&sc, Some("old"), "application/json", old.as_bytes());
    let h2 = initialize(&sc, Some("new"), "application/json", new.as_bytes());
    assert_eq!(h1.counters["mcp_guard.servers_seen.demo-server.1_0_0"], 1);
    assert_eq!(h2.counters["mcp_guard.servers_seen.demo-server.2_0_0"], 1);
    let r = later_call(&sc, Some("old"), None);
    assert_eq!(
        inventory_of(&r),
        known("demo-server", "1.0.0", "2025-03-26")
    );
    let r = later_call(&sc, Some("new"), None);
    assert_eq!(
        inventory_of(&r),
        known("demo-server", "2.0.0", "2025-06-18")
    );
    // A session the inventory never saw (begun before a restart): the server's latest.
    let r = later_call(&sc, Some("unseen"), None);
    assert_eq!(
        inventory_of(&r),
        known("demo-server", "2.0.0", "2025-06-18")
    );
    // Another server behind another id: nothing known.
    let other = Scenario {
        policy: POLICY.replace("demo-server", "other-server"),
        shared: Rc::clone(&sc.shared),
    };
    assert_eq!(
        inventory_of(&later_call(&other, Some("old"), None)),
        UNKNOWN
    );
}

#[test]
fn without_a_session_the_servers_entry_is_used() {
    let sc = Scenario::new(POLICY);
    assert_eq!(inventory_of(&later_call(&sc, None, None)), UNKNOWN);
    let body = init_result("stateless", "0.1", "2025-06-18");
    let h = initialize(&sc, None, "application/json", body.as_bytes());
    assert_eq!(h.records()[0]["session_id"], Value::Null);
    let r = later_call(&sc, None, Some("2025-06-18"));
    assert_eq!(inventory_of(&r), known("stateless", "0.1", "2025-06-18"));
}

#[test]
fn a_2026_discover_result_names_the_server_from_its_serverinfo_stamp() {
    let sc = Scenario::new(POLICY);
    let discover = r#"{"jsonrpc":"2.0","id":3,"method":"server/discover"}"#;
    let mut h = routed("demo-agent", "server/discover", None, discover);
    h.shared = Rc::clone(&sc.shared);
    let mut s = stream(POLICY);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    let result = br#"{"jsonrpc":"2.0","id":3,"result":{"supportedVersions":["2026-07-28"],"capabilities":{"tools":{"listChanged":true}},"resultType":"complete","ttlMs":0,"cacheScope":"public","_meta":{"io.modelcontextprotocol/serverInfo":{"name":"search-server","version":"3.1.0"}}}}"#;
    respond(&mut s, &mut h, "200", "application/json", &[result]);
    let r = h.records();
    assert_eq!(inventory_of(&r[0]), known("search-server", "3.1.0", MODERN));
    assert_eq!(h.counters["mcp_guard.servers_seen.search-server.3_1_0"], 1);
    // A later 2026 call (no session) on another worker.
    let call =
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
    let mut h = routed("demo-agent", "tools/call", Some("echo"), call);
    h.shared = Rc::clone(&sc.shared);
    let mut s = stream(POLICY);
    let r = later(&mut s, &mut h, None, None);
    assert_eq!(inventory_of(&r), known("search-server", "3.1.0", MODERN));
}

#[test]
fn a_failed_inventory_read_is_said_not_written_as_unknown() {
    let sc = Scenario::new(POLICY);
    let body = init_result("demo-server", "1.4.2", "2025-06-18");
    initialize(&sc, Some("sess-1"), "application/json", body.as_bytes());
    let (mut s, mut h) = sc.post(Some("demo-agent"), CALL_ECHO);
    h.request_headers
        .insert("mcp-session-id".into(), "sess-1".into());
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    h.failing = vec![Read::SharedData];
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#],
    );
    let r = h.records();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["inventory_error"], "unreadable");
    assert_eq!(
        (r[0]["server_name"].clone(), r[0]["server_version"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(
        r[0]["output_status"], "success",
        "the call itself is unaffected"
    );
    // The initialize stream knows from its own response: it needs no read.
    let (mut s, mut h) = sc.post(Some("demo-agent"), INITIALIZE);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    h.failing = vec![Read::SharedData];
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[body.as_bytes()],
    );
    let r = h.records();
    assert_eq!(
        inventory_of(&r[0]),
        known("demo-server", "1.4.2", "2025-06-18")
    );
    assert!(r[0].get("inventory_error").is_none());
}

#[test]
fn malformed_and_oversize_server_info_is_null_never_another_value() {
    let long = "v".repeat(crate::inventory::MAX_VERSION_LEN + 1);
    for (server_info, name, version) in [
        (
            r#"{"name":7,"version":"1"}"#.to_owned(),
            Value::Null,
            Value::from("1"),
        ),
        (
            r#"{"name":"a","name":"b","version":"1"}"#.to_owned(),
            Value::Null,
            Value::Null,
        ),
        (r#""demo""#.to_owned(), Value::Null, Value::Null),
        (
            format!(r#"{{"name":"demo","version":"{long}"}}"#),
            Value::from("demo"),
            Value::Null,
        ),
    ] {
        let sc = Scenario::new(POLICY);
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":0,"result":{{"protocolVersion":"2025-06-18","capabilities":{{}},"serverInfo":{server_info}}}}}"#
        );
        let h = initialize(&sc, Some("s"), "application/json", body.as_bytes());
        let r = h.records();
        assert_eq!(r[0]["output_status"], "success", "{server_info}");
        assert_eq!(
            (r[0]["server_name"].clone(), r[0]["server_version"].clone()),
            (name.clone(), version.clone()),
            "{server_info}"
        );
        let later = later_call(&sc, Some("s"), None);
        assert_eq!(
            (
                later["server_name"].clone(),
                later["server_version"].clone()
            ),
            (name, version),
            "{server_info}"
        );
        let stat: Vec<_> = h
            .counters
            .keys()
            .filter(|k| k.starts_with("mcp_guard.servers_seen."))
            .collect();
        assert_eq!(stat.len(), 1, "{stat:?}");
        assert!(stat[0].len() < 200);
    }
}

#[test]
fn only_initialize_and_discover_results_teach_the_inventory() {
    let sc = Scenario::new(POLICY);
    // A tool result that carries a serverInfo member teaches nothing.
    let (mut s, mut h) = sc.post(Some("demo-agent"), CALL_ECHO);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"serverInfo":{"name":"evil","version":"6.6.6"},"protocolVersion":"1999-01-01"}}"#],
    );
    assert!(!h.counters.keys().any(|k| k.contains("servers_seen")));
    assert_eq!(inventory_of(&later_call(&sc, None, None)), UNKNOWN);
    // An initialize answered with an error teaches nothing either.
    let h = initialize(
        &sc,
        Some("s"),
        "application/json",
        br#"{"jsonrpc":"2.0","id":0,"error":{"code":-32602,"message":"bad","data":{"serverInfo":{"name":"evil"}}}}"#,
    );
    assert!(!h.counters.keys().any(|k| k.contains("servers_seen")));
    assert_eq!(inventory_of(&later_call(&sc, Some("s"), None)), UNKNOWN);
}

#[test]
fn a_legacy_initialize_answered_on_the_get_stream_is_learned_for_its_session() {
    let sc = Scenario::new(POLICY);
    let (mut get, mut gh) = sc.legacy_get("leg-1");
    let (mut s, mut h) = sc.legacy_post("leg-1", Some("demo-agent"), INITIALIZE);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    respond(&mut s, &mut h, "202", "text/plain", &[b"Accepted"]);
    assert_eq!(h.records()[0]["output_status"], "deferred");
    let event = format!(
        "event: message\r\ndata: {}\r\n\r\n",
        init_result("legacy-server", "0.9", "2024-11-05")
    );
    stream_chunk(&mut get, &mut gh, event.as_bytes(), false);
    let records = gh.records();
    let done = records.iter().find(|r| r["correlated"] == true).unwrap();
    assert_eq!(done["method"], "initialize");
    assert_eq!(
        inventory_of(done),
        known("legacy-server", "0.9", "2024-11-05")
    );
    assert_eq!(gh.counters["mcp_guard.servers_seen.legacy-server.0_9"], 1);
    // A later POST of the session, on another worker.
    let (mut s, mut h) = sc.legacy_post("leg-1", Some("demo-agent"), CALL_ECHO);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    respond(&mut s, &mut h, "202", "text/plain", &[b"Accepted"]);
    let r = h.records();
    assert_eq!(
        inventory_of(&r[0]),
        known("legacy-server", "0.9", "2024-11-05")
    );
}
