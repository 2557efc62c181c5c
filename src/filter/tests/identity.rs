//! Identity sources: exact values, repeated headers, verified sources, unreadable sources.

use super::*;

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
