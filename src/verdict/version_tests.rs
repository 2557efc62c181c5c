//! The protocol-version checks of the verdict (`crate::version`), both directions: tables of
//! headers and bodies and the decision expected.

use super::*;
use crate::metrics::Metric;
use serde_json::{json, Value};

const POLICY: &str = r#"{
  "server_id": "demo-server",
  "max_batch_calls": 5,
  "policy": {"mode": "enforce", "agents": {
      "demo-agent": {"tools": ["echo"]}}}
}"#;

const MODERN: &str = "2026-07-28";
const OLD: &str = "2025-11-25";

fn config(extra: &str) -> Config {
    let json = POLICY.replacen('{', &format!("{{{extra}"), 1);
    Config::from_json(json.as_bytes()).expect("a valid test configuration")
}

/// Routing headers: every `MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name` value sent.
fn headers(version: &[&str], method: &[&str], name: &[&str]) -> routing::RoutingHeaders {
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
    routing::RoutingHeaders {
        method: owned(method),
        name: owned(name),
        version: owned(version),
    }
}

/// The headers an SDK 2.x client in 2026-07-28 mode sends with `tools/call echo`.
fn modern_echo_headers() -> routing::RoutingHeaders {
    headers(&[MODERN], &["tools/call"], &["echo"])
}

/// A `tools/call echo` (id 1) whose `params._meta` is `meta` (JSON text; `None`: no `_meta`).
fn echo(meta: Option<&str>) -> String {
    let meta = meta.map(|m| format!(r#","_meta":{m}"#)).unwrap_or_default();
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{}}{meta}}}}}"#
    )
}

/// The full 2026-07-28 envelope claiming `version`.
fn envelope(version: &str) -> String {
    format!(
        r#"{{"io.modelcontextprotocol/protocolVersion":"{version}","io.modelcontextprotocol/clientCapabilities":{{}},"io.modelcontextprotocol/clientInfo":{{"name":"t","version":"1"}}}}"#
    )
}

fn run<'c>(config: &'c Config, routing: &routing::RoutingHeaders, body: &str) -> Verdict<'c> {
    let known = Known {
        agent_id: "demo-agent",
        http_method: "POST",
        routing,
        streamed: false,
        params: &[],
        server_id: "demo-server",
    };
    decide(config, &known, body.as_bytes(), &mut |_: &str| Ok(None))
}

/// What a verdict says: `Ok(protocol_version of the first call)` when forwarded, the refusal
/// otherwise.
fn outcome(v: Verdict<'_>) -> Result<Option<String>, Refusal> {
    match v {
        Verdict::Forward(f) | Verdict::AskRls { forward: f, .. } => {
            Ok(f.calls.first().and_then(|c| c.protocol_version.clone()))
        }
        Verdict::Refuse { refusal, .. } => Err(refusal),
        Verdict::Pass => Ok(None),
    }
}

fn id1() -> Option<jsonrpc::Id> {
    Some(jsonrpc::Id::Number("1".into()))
}

fn missing(header: &'static str) -> Refusal {
    Refusal::HeaderMissing {
        header,
        id: id1(),
        method: Some("tools/call".into()),
    }
}

fn mismatch(header: &'static str) -> Refusal {
    Refusal::HeaderMismatch {
        header,
        id: id1(),
        method: Some("tools/call".into()),
    }
}

fn unsupported(requested: &str, supported: &'static [&'static str]) -> Refusal {
    Refusal::UnsupportedVersion {
        requested: requested.into(),
        supported,
        id: id1(),
        method: Some("tools/call".into()),
    }
}

#[test]
fn version_checks_in_both_directions() {
    let plain = config("");
    let older = config(r#""newest_protocol_version": "2025-11-25","#);
    let modern_meta = envelope(MODERN);
    let old_meta = envelope(OLD);
    let future_meta = envelope("2099-01-01");
    let all: &'static [&'static str] = &version::KNOWN;
    let up_to_2025: &'static [&'static str] = &version::KNOWN[..4];
    let both_keys = vec![
        jsonrpc::META_PROTOCOL_VERSION,
        jsonrpc::META_CLIENT_CAPABILITIES,
    ];
    let envelope_missing = |missing: Vec<&'static str>| Refusal::Envelope {
        missing,
        id: id1(),
        method: Some("tools/call".into()),
    };
    type Row<'a> = (
        &'a str,
        &'a Config,
        routing::RoutingHeaders,
        String,
        Result<Option<String>, Refusal>,
    );
    let rows: Vec<Row<'_>> = vec![
        (
            "2026-07-28 as the SDK sends it",
            &plain,
            modern_echo_headers(),
            echo(Some(&modern_meta)),
            Ok(Some(MODERN.into())),
        ),
        (
            "2025-11-25 client: header, no _meta",
            &plain,
            headers(&[OLD], &[], &[]),
            echo(None),
            Ok(Some(OLD.into())),
        ),
        (
            "client before 2025-06-18: no header, no _meta",
            &plain,
            headers(&[], &[], &[]),
            echo(None),
            Ok(None),
        ),
        (
            "old body _meta version, no header: recorded, not checked",
            &plain,
            headers(&[], &[], &[]),
            echo(Some(&old_meta)),
            Ok(Some(OLD.into())),
        ),
        // Header → body.
        (
            "modern header, no _meta",
            &plain,
            modern_echo_headers(),
            echo(None),
            Err(envelope_missing(both_keys.clone())),
        ),
        (
            "modern header, _meta not an object",
            &plain,
            modern_echo_headers(),
            echo(Some(r#""2026-07-28""#)),
            Err(envelope_missing(both_keys.clone())),
        ),
        (
            "modern header, _meta without clientCapabilities",
            &plain,
            modern_echo_headers(),
            echo(Some(
                r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#,
            )),
            Err(envelope_missing(vec![jsonrpc::META_CLIENT_CAPABILITIES])),
        ),
        (
            "modern header, _meta says 2025-11-25",
            &plain,
            modern_echo_headers(),
            echo(Some(&old_meta)),
            Err(mismatch(version::HEADER_NAME)),
        ),
        (
            "modern header, _meta version not a string",
            &plain,
            modern_echo_headers(),
            echo(Some(
                r#"{"io.modelcontextprotocol/protocolVersion":null,"io.modelcontextprotocol/clientCapabilities":{}}"#,
            )),
            Err(mismatch(version::HEADER_NAME)),
        ),
        // Body → header: what Envoy 1.40's MCP filter does not check.
        (
            "modern _meta, no version header",
            &plain,
            headers(&[], &["tools/call"], &["echo"]),
            echo(Some(&modern_meta)),
            Err(missing(version::HEADER_NAME)),
        ),
        (
            "modern _meta, 2025-11-25 header",
            &plain,
            headers(&[OLD], &["tools/call"], &["echo"]),
            echo(Some(&modern_meta)),
            Err(mismatch(version::HEADER_NAME)),
        ),
        (
            "modern _meta, no routing headers at all",
            &plain,
            headers(&[], &[], &[]),
            echo(Some(&modern_meta)),
            Err(missing(version::HEADER_NAME)),
        ),
        (
            "modern, no Mcp-Method",
            &plain,
            headers(&[MODERN], &[], &["echo"]),
            echo(Some(&modern_meta)),
            Err(missing("Mcp-Method")),
        ),
        (
            "modern tools/call, no Mcp-Name",
            &plain,
            headers(&[MODERN], &["tools/call"], &[]),
            echo(Some(&modern_meta)),
            Err(missing("Mcp-Name")),
        ),
        (
            "modern, Mcp-Name disagrees (routing::check after the version checks)",
            &plain,
            headers(&[MODERN], &["tools/call"], &["delete_repo"]),
            echo(Some(&modern_meta)),
            Err(mismatch("Mcp-Name")),
        ),
        (
            "version header sent twice",
            &plain,
            headers(&[MODERN, MODERN], &["tools/call"], &["echo"]),
            echo(Some(&modern_meta)),
            Err(mismatch(version::HEADER_NAME)),
        ),
        (
            "version header twice on an old request",
            &plain,
            headers(&[OLD, MODERN], &[], &[]),
            echo(None),
            Err(mismatch(version::HEADER_NAME)),
        ),
        // Unsupported revisions.
        (
            "a future revision on both sides",
            &plain,
            headers(&["2099-01-01"], &["tools/call"], &["echo"]),
            echo(Some(&future_meta)),
            Err(unsupported("2099-01-01", all)),
        ),
        (
            "2026-07-28 when the newest accepted is 2025-11-25",
            &older,
            modern_echo_headers(),
            echo(Some(&modern_meta)),
            Err(unsupported(MODERN, up_to_2025)),
        ),
        (
            "2025-11-25 still accepted with newest 2025-11-25",
            &older,
            headers(&[OLD], &[], &[]),
            echo(None),
            Ok(Some(OLD.into())),
        ),
        (
            "an unknown pre-2026 header value",
            &plain,
            headers(&["2025-01-01"], &[], &[]),
            echo(None),
            Err(unsupported("2025-01-01", all)),
        ),
        (
            "a header value that is no date",
            &plain,
            headers(&["latest"], &[], &[]),
            echo(None),
            Err(unsupported("latest", all)),
        ),
        // The ladder's order: _meta shape, then headers, then the supported version.
        (
            "envelope before headers",
            &plain,
            headers(&[MODERN], &[], &[]),
            echo(Some("{}")),
            Err(envelope_missing(both_keys.clone())),
        ),
        (
            "headers before the supported version",
            &older,
            headers(&[MODERN], &[], &[]),
            echo(Some(&modern_meta)),
            Err(missing("Mcp-Method")),
        ),
    ];
    for (name, config, routing, body, expected) in rows {
        assert_eq!(outcome(run(config, &routing, &body)), expected, "{name}");
    }
}

#[test]
fn methods_that_name_nothing_need_no_mcp_name_and_task_methods_need_it() {
    let plain = config("");
    let meta = envelope(MODERN);
    let list =
        format!(r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{{"_meta":{meta}}}}}"#);
    let v = run(&plain, &headers(&[MODERN], &["tools/list"], &[]), &list);
    assert_eq!(outcome(v), Ok(Some(MODERN.into())));
    let task = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tasks/get","params":{{"taskId":"t-1","_meta":{meta}}}}}"#
    );
    let v = run(&plain, &headers(&[MODERN], &["tasks/get"], &[]), &task);
    let want = Refusal::HeaderMissing {
        header: "Mcp-Name",
        id: Some(jsonrpc::Id::Number("2".into())),
        method: Some("tasks/get".into()),
    };
    assert_eq!(outcome(v), Err(want));
    let v = run(&plain, &headers(&[MODERN], &["tasks/get"], &["t-1"]), &task);
    assert_eq!(outcome(v), Ok(Some(MODERN.into())));
}

#[test]
fn notifications_are_checked_for_the_version_header_only() {
    let plain = config("");
    let bare = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#;
    let with_meta = format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":1,"_meta":{}}}}}"#,
        envelope(MODERN)
    );
    // No _meta envelope, no Mcp-Method needed (2026-07-28 defines no header requirements for
    // notification POSTs).
    let v = run(&plain, &headers(&[MODERN], &[], &[]), bare);
    assert_eq!(outcome(v), Ok(Some(MODERN.into())));
    // But a modern body still needs the version header, and it must agree.
    let refused = |v: Verdict<'_>| match v {
        Verdict::Refuse { refusal, .. } => Some(refusal),
        _ => None,
    };
    assert_eq!(
        refused(run(&plain, &headers(&[], &[], &[]), &with_meta)),
        Some(Refusal::HeaderMissing {
            header: version::HEADER_NAME,
            id: None,
            method: Some("notifications/cancelled".into())
        })
    );
    assert_eq!(
        refused(run(&plain, &headers(&[OLD], &[], &[]), &with_meta)),
        Some(Refusal::HeaderMismatch {
            header: version::HEADER_NAME,
            id: None,
            method: Some("notifications/cancelled".into())
        })
    );
    assert!(matches!(
        refused(run(&plain, &headers(&["2099-01-01"], &[], &[]), bare)),
        Some(Refusal::UnsupportedVersion { .. })
    ));
}

#[test]
fn batches_do_not_exist_in_2026_07_28() {
    let plain = config("");
    let one = echo(None);
    let two = one.replace(r#""id":1"#, r#""id":2"#);
    let old_batch = format!("[{one},{two}]");
    // 2025-03-26 (the revision with batches) is fine.
    let v = run(&plain, &headers(&["2025-03-26"], &[], &[]), &old_batch);
    assert!(matches!(v, Verdict::Forward(_)), "{:?}", outcome(v));
    // A modern header, or a modern _meta in any element, is not.
    let v = run(&plain, &headers(&[MODERN], &[], &[]), &old_batch);
    assert_eq!(outcome(v), Err(Refusal::ModernBatch));
    let modern = format!(
        "[{},{one}]",
        echo(Some(&envelope(MODERN))).replace(r#""id":1"#, r#""id":3"#)
    );
    let v = run(&plain, &headers(&[], &[], &[]), &modern);
    assert_eq!(outcome(v), Err(Refusal::ModernBatch));
    let v = run(&plain, &headers(&["2099-01-01"], &[], &[]), &old_batch);
    assert_eq!(outcome(v), Err(Refusal::ModernBatch));
    let v = run(&plain, &headers(&["2024-01-01"], &[], &[]), &old_batch);
    assert!(matches!(
        outcome(v),
        Err(Refusal::UnsupportedVersion { .. })
    ));
}

#[test]
fn refused_calls_record_the_claimed_version_and_unsupported_answers_carry_data() {
    let older = config(r#""newest_protocol_version": "2025-11-25","#);
    let v = run(
        &older,
        &modern_echo_headers(),
        &echo(Some(&envelope(MODERN))),
    );
    let Verdict::Refuse { refusal, mut calls } = v else {
        panic!("refused")
    };
    assert_eq!(calls[0].protocol_version.as_deref(), Some(MODERN));
    let metrics: Vec<_> = refusal.metrics(&calls);
    assert_eq!(metrics, vec![(Metric::Refusal("unsupported_version"), 1)]);
    let reply = refusal.reply(&mut calls, "demo-agent", &older);
    assert_eq!(reply.status, 400);
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        body,
        json!({"jsonrpc": "2.0", "id": 1, "error": {
            "code": -32022, "message": "Unsupported protocol version",
            "data": {"supported": ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"],
                     "requested": "2026-07-28"}}})
    );
    assert_eq!(calls[0].error_code, Some(-32022));
    assert_eq!(calls[0].decision, Decision::Deny);

    // The body's version when the header is missing (the Envoy-gap case), in the record.
    let plain = config("");
    let v = run(
        &plain,
        &headers(&[], &["tools/call"], &["echo"]),
        &echo(Some(&envelope(MODERN))),
    );
    let Verdict::Refuse { refusal, mut calls } = v else {
        panic!("refused")
    };
    assert_eq!(calls[0].protocol_version.as_deref(), Some(MODERN));
    let reply = refusal.reply(&mut calls, "demo-agent", &plain);
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!((reply.status, body["id"].clone()), (400, json!(1)));
    assert_eq!(body["error"]["code"], -32020);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("MCP-Protocol-Version"),
        "{body}"
    );
    assert_eq!(
        refusal.metrics(&calls),
        vec![(Metric::Refusal("header_mismatch"), 1)]
    );

    // A missing envelope key: -32602 naming the key, counted as parse.
    let v = run(&plain, &modern_echo_headers(), &echo(Some("{}")));
    let Verdict::Refuse { refusal, mut calls } = v else {
        panic!("refused")
    };
    let reply = refusal.reply(&mut calls, "demo-agent", &plain);
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["error"]["code"], -32602);
    assert_eq!(body["id"], 1);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(jsonrpc::META_CLIENT_CAPABILITIES),
        "{message}"
    );
    assert_eq!(refusal.metrics(&calls), vec![(Metric::Refusal("parse"), 1)]);

    // An overlong header value is kept to 64 bytes in the record (refused -32022 anyway).
    let long = "2".repeat(100);
    let v = run(&plain, &headers(&[&long], &[], &[]), &echo(None));
    let Verdict::Refuse { calls, .. } = v else {
        panic!("refused")
    };
    assert_eq!(
        calls[0].protocol_version.as_deref().map(str::len),
        Some(crate::audit::MAX_PROTOCOL_VERSION_LEN)
    );
}

#[test]
fn get_and_delete_from_a_2026_client_are_405_and_decide_at_headers_needs_a_modern_header() {
    let plain = config("");
    let early = config(r#""decide_at_headers": true,"#);
    let early_older =
        config(r#""decide_at_headers": true, "newest_protocol_version": "2025-11-25","#);
    let facts =
        |http_method: &'static str, has_body: bool, routing: &'static routing::RoutingHeaders| {
            AtHeadersFacts {
                identity: Identity::Agent("demo-agent"),
                http_method,
                has_body,
                encoded: false,
                routing,
            }
        };
    let leak =
        |r: routing::RoutingHeaders| -> &'static routing::RoutingHeaders { Box::leak(Box::new(r)) };
    let modern = leak(headers(&[MODERN], &[], &[]));
    let old = leak(headers(&[OLD], &[], &[]));
    let future = leak(headers(&["2099-01-01"], &[], &[]));
    let none = leak(headers(&[], &[], &[]));
    for method in ["GET", "DELETE"] {
        for routing in [modern, future] {
            assert_eq!(
                at_headers(&plain, &facts(method, false, routing)),
                AtHeaders::Refuse(Refusal::MethodNotAllowed {
                    http_method: method.into()
                }),
                "{method} {routing:?}"
            );
        }
        assert_eq!(
            at_headers(&plain, &facts(method, false, old)),
            AtHeaders::Pass
        );
        assert_eq!(
            at_headers(&plain, &facts(method, false, none)),
            AtHeaders::Pass
        );
    }
    // POST with a modern header: examined (the body is checked), never refused at headers.
    assert_eq!(
        at_headers(&plain, &facts("POST", true, modern)),
        AtHeaders::Examine
    );

    let refusal = Refusal::MethodNotAllowed {
        http_method: "GET".into(),
    };
    let mut calls: Vec<Call> = refusal.request_call().into_iter().collect();
    assert_eq!(
        refusal.metrics(&calls),
        vec![(Metric::Refusal("method_not_allowed"), 1)]
    );
    let reply = refusal.reply(&mut calls, "demo-agent", &plain);
    assert_eq!(reply.status, 405);
    assert_eq!(reply.headers, vec![("allow", "POST".to_owned())]);
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["error"]["code"], jsonrpc::INVALID_REQUEST);

    // decide_at_headers: only for one accepted modern version header.
    let tags = vec![
        ("x-mcp-method", "tools/call".to_owned()),
        ("x-mcp-tool-name", "echo".to_owned()),
        ("x-mcp-call-round", "first".to_owned()),
    ];
    let echo_with = |version: &[&str]| leak(headers(version, &["tools/call"], &["echo"]));
    assert_eq!(
        at_headers(&early, &facts("POST", true, echo_with(&[MODERN]))),
        AtHeaders::Stream(tags)
    );
    for version in [
        &[][..],
        &[OLD],
        &["2099-01-01"],
        &[MODERN, MODERN],
        &["2026-07-28 "],
    ] {
        assert_eq!(
            at_headers(&early, &facts("POST", true, echo_with(version))),
            AtHeaders::Examine,
            "{version:?}"
        );
    }
    assert_eq!(
        at_headers(&early_older, &facts("POST", true, echo_with(&[MODERN]))),
        AtHeaders::Examine
    );
}
