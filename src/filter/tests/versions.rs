//! MCP protocol versions through a whole stream: GET/DELETE from a 2026-07-28 client, the
//! version checks of a POST, and the `protocol_version` of each audit record.

use super::*;

/// A GET or DELETE to `/mcp` with `headers`, no body.
fn bodiless(method: &str, headers: &[(&str, &str)]) -> FakeHost {
    let mut h = post(Some("demo-agent"), "");
    h.request_headers.insert(":method".into(), method.into());
    for (name, value) in headers {
        h.request_headers.insert((*name).into(), (*value).into());
    }
    h
}

#[test]
fn get_and_delete_from_a_2026_client_are_answered_405_allow_post_and_audited() {
    for method in ["GET", "DELETE"] {
        let mut s = stream(POLICY);
        let mut h = bodiless(method, &[("mcp-protocol-version", MODERN)]);
        let action = in_phase(&mut h, Phase::RequestHeaders, |h| {
            s.on_request_headers(h, true)
        });
        assert_eq!(action, Action::Pause, "{method}");
        let (status, reply) = h.reply_json();
        assert_eq!(status, 405, "{method}");
        assert_eq!(
            h.reply_headers,
            vec![("allow".to_owned(), "POST".to_owned())],
            "{method}"
        );
        assert_eq!(reply["error"]["code"], crate::jsonrpc::INVALID_REQUEST);
        let records = h.records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0]["http_method"], method);
        assert_eq!(records[0]["decision"], "deny");
        assert_eq!(records[0]["http_status"], 405);
        assert_eq!(records[0]["protocol_version"], MODERN);
        assert_eq!(
            h.counters
                .get("mcp_guard.refusals.reason.method_not_allowed")
                .copied(),
            Some(1),
            "{:?}",
            h.counters
        );
    }
    // A 2025-11-25 client's GET (its server stream) and DELETE (end of session) pass, audited.
    for method in ["GET", "DELETE"] {
        let mut s = stream(POLICY);
        let mut h = bodiless(
            method,
            &[
                ("mcp-protocol-version", "2025-11-25"),
                ("mcp-session-id", "s1"),
            ],
        );
        let action = in_phase(&mut h, Phase::RequestHeaders, |h| {
            s.on_request_headers(h, true)
        });
        assert_eq!(action, Action::Continue, "{method}");
        assert!(h.local_reply.is_none());
        respond(&mut s, &mut h, "200", "text/event-stream", &[b""]);
        assert_eq!(h.records()[0]["protocol_version"], "2025-11-25");
        assert_eq!(h.records()[0]["decision"], "allow");
    }
}

#[test]
fn a_2026_request_is_forwarded_and_its_record_names_the_version() {
    let mut s = stream(POLICY);
    let mut h = routed("demo-agent", "tools/call", Some("echo"), CALL_ECHO);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"resultType":"complete"}}"#],
    );
    let record = &h.records()[0];
    assert_eq!(record["protocol_version"], MODERN);
    assert_eq!(record["output_status"], "success");
    assert_eq!(record["session_id"], Value::Null);

    // A 2025 client without the header: null.
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), CALL_ECHO);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#],
    );
    assert_eq!(h.records()[0]["protocol_version"], Value::Null);
}

#[test]
fn a_body_claiming_2026_without_the_header_is_refused_before_the_upstream() {
    // What Envoy 1.40's own MCP filter lets through: `_meta` says 2026-07-28, the header is
    // absent (or says 2025-11-25), so no header check runs there.
    for version in [None, Some("2025-11-25")] {
        let mut s = stream(POLICY);
        let mut h = routed("demo-agent", "tools/call", Some("delete_repo"), CALL_ECHO);
        h.request_headers.remove("mcp-protocol-version");
        if let Some(v) = version {
            h.request_headers
                .insert("mcp-protocol-version".into(), v.into());
        }
        assert_eq!(send_request(&mut s, &mut h), Action::Pause, "{version:?}");
        let (status, reply) = h.reply_json();
        assert_eq!((status, reply["id"].clone()), (400, Value::from(1)));
        assert_eq!(reply["error"]["code"], routing::HEADER_MISMATCH);
        let record = &h.records()[0];
        assert_eq!(record["output_status"], "invalid_request");
        assert_eq!(record["error_code"], routing::HEADER_MISMATCH);
        assert_eq!(record["protocol_version"], version.unwrap_or(MODERN));
    }
}

#[test]
fn an_unsupported_version_is_refused_with_the_supported_list() {
    let policy = POLICY.replacen('{', r#"{"newest_protocol_version": "2025-11-25","#, 1);
    let mut s = stream(&policy);
    let mut h = routed("demo-agent", "tools/call", Some("echo"), CALL_ECHO);
    assert_eq!(send_request(&mut s, &mut h), Action::Pause);
    let (status, reply) = h.reply_json();
    assert_eq!(status, 400);
    assert_eq!(reply["id"], 1);
    assert_eq!(
        reply["error"]["code"],
        crate::version::UNSUPPORTED_PROTOCOL_VERSION
    );
    assert_eq!(reply["error"]["data"]["requested"], MODERN);
    assert_eq!(
        reply["error"]["data"]["supported"],
        serde_json::json!(["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"])
    );
    assert_eq!(
        h.counters
            .get("mcp_guard.refusals.reason.unsupported_version")
            .copied(),
        Some(1)
    );
    assert_eq!(h.records()[0]["protocol_version"], MODERN);
}
