//! The `request_parser` target: `jsonrpc::parse_body` against serde_json, and its heap.

use super::*;

/// Target `request_parser`: `jsonrpc::parse_body` on arbitrary bytes.
pub fn request_parser(data: &[u8]) {
    require_counting();
    let meter = Meter::start();
    let parsed = jsonrpc::parse_body(data, DEFAULT_MAX_JSON_DEPTH);
    let peak = meter.peak();
    assert!(
        peak <= PARSER_HEAP_PER_BYTE * data.len() + PARSER_HEAP_CONSTANT,
        "parse_body of {} bytes peaked at {peak} heap bytes",
        data.len()
    );
    if data.len() >= 256 {
        note_max(
            &MAX_PARSER_RATIO,
            peak * 100 / data.len(),
            "parser peak heap as % of the body (bodies of 256 bytes or more)",
        );
    }

    let text = std::str::from_utf8(data).ok();
    let syntax = text.map(serde_json::from_str::<serde::de::IgnoredAny>);
    let invalid_json = matches!(&syntax, Some(Err(e)) if e.is_syntax() || e.is_eof());

    match &parsed {
        Ok(body) => {
            assert!(
                !invalid_json,
                "accepted a body serde_json calls invalid: {syntax:?}"
            );
            assert!(
                matches!(syntax, Some(Ok(_))),
                "accepted a body that is not valid JSON"
            );
            check_accepted(data, text.unwrap_or_default(), body);
        }
        Err(e) => {
            if invalid_json || text.is_none() {
                assert_eq!(
                    e.code,
                    jsonrpc::PARSE_ERROR,
                    "invalid JSON refused with {e:?}"
                );
            }
            assert!(
                [
                    jsonrpc::PARSE_ERROR,
                    jsonrpc::INVALID_REQUEST,
                    jsonrpc::INVALID_PARAMS
                ]
                .contains(&e.code),
                "unexpected code {e:?}"
            );
            let reply = jsonrpc::error_response(e.id.as_ref(), e.code, &e.message);
            let Some(v) = strict_json(&reply, "error response") else {
                return;
            };
            assert_eq!(
                v.get("error")
                    .and_then(|e| e.get("code"))
                    .and_then(Value::as_i64),
                Some(i64::from(e.code))
            );
        }
    }

    // A looser depth limit accepts at least what a stricter one accepts, with the same result.
    let loose = jsonrpc::parse_body(data, MAX_MAX_JSON_DEPTH);
    if let Ok(strict) = &parsed {
        match &loose {
            Ok(loose) => assert_eq!(
                format!("{:?}", strict.messages()),
                format!("{:?}", loose.messages())
            ),
            Err(e) => panic!("accepted at depth {DEFAULT_MAX_JSON_DEPTH}, refused at {MAX_MAX_JSON_DEPTH}: {e:?}"),
        }
    }
}

/// `text` as JSON, for output the filter produces (audit records, replies): it must parse
/// with a strict parser (a number id such as `8e400` once made records unreadable: now refused,
/// regression seeds in fuzz/regressions/).
pub(crate) fn strict_json(text: &str, what: &str) -> Option<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Some(v),
        Err(e) => panic!("{what} is not strict JSON ({e}): {text}"),
    }
}

/// What serde_json reads in an accepted body must be what mcp-guard tagged and enforced on.
fn check_accepted(data: &[u8], text: &str, body: &Body<'_>) {
    let range = data.as_ptr_range();
    let root: Option<Value> = serde_json::from_str(text).ok(); // numbers out of f64 range fail
    let elements: Vec<Option<&Value>> = match (&root, body) {
        (Some(Value::Array(items)), Body::Batch(msgs)) => {
            assert_eq!(items.len(), msgs.len(), "batch length");
            items.iter().map(Some).collect()
        }
        (Some(v @ Value::Object(_)), Body::Single(_)) => vec![Some(v)],
        (None, _) => vec![None; body.messages().len()],
        (Some(v), _) => panic!("accepted {v} as {body:?}"),
    };
    for (m, v) in body.messages().iter().zip(elements) {
        if let Some(id) = m.id() {
            // The id is echoed into audit records and replies: it must read back as JSON.
            strict_json(&id.to_json(), "request id");
        }
        if let Some(input) = m.hash_input {
            assert!(
                range.contains(&input.as_ptr()),
                "hash input is not a slice of the body"
            );
        }
        let Some(v) = v else { continue };
        check_message(m, v);
    }
}

fn check_message(m: &Message<'_>, v: &Value) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("message {v} is not an object"));
    assert_eq!(obj.get("jsonrpc").and_then(Value::as_str), Some("2.0"));
    assert_eq!(
        m.method.as_deref(),
        obj.get("method").and_then(Value::as_str),
        "method of {v}"
    );
    let params = obj.get("params");
    let member = |name: &str| params.and_then(|p| p.get(name)).and_then(Value::as_str);
    match m.method.as_deref() {
        Some(jsonrpc::TOOLS_CALL) => assert_eq!(m.tool_name.as_deref(), member("name"), "{v}"),
        Some(jsonrpc::PROMPTS_GET) => assert_eq!(m.prompt_name.as_deref(), member("name"), "{v}"),
        Some(jsonrpc::RESOURCES_READ) => {
            assert_eq!(m.resource_uri.as_deref(), member("uri"), "{v}")
        }
        _ => assert!(m.tool_name.is_none() && m.prompt_name.is_none() && m.resource_uri.is_none()),
    }
    // The 2026-07-28 envelope and multi-round-trip members agree with serde_json's reading.
    let meta = params
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object);
    assert_eq!(m.meta.meta_object, meta.is_some(), "_meta of {v}");
    let version = meta.and_then(|o| o.get(jsonrpc::META_PROTOCOL_VERSION));
    let expected = match version {
        None => jsonrpc::MetaVersion::Absent,
        Some(Value::String(s)) => jsonrpc::MetaVersion::Str(s.clone()),
        Some(_) => jsonrpc::MetaVersion::NotString,
    };
    assert_eq!(m.meta.protocol_version, expected, "_meta version of {v}");
    assert_eq!(
        m.meta.client_capabilities,
        meta.is_some_and(|o| o.contains_key(jsonrpc::META_CLIENT_CAPABILITIES)),
        "{v}"
    );
    assert_eq!(m.request_state.as_deref(), member("requestState"), "{v}");
    let id = obj.get("id");
    match &m.kind {
        Kind::Request(i) | Kind::Response(i) => match (i, id) {
            (Id::Str(s), Some(Value::String(w))) => assert_eq!(s, w),
            (Id::Number(n), Some(w @ Value::Number(_))) => {
                // Same number (serde_json may reformat it, so compare parsed).
                let again: Value = serde_json::from_str(n).unwrap_or(Value::Null);
                assert_eq!(&again, w, "id {n} vs {w}");
            }
            (i, w) => panic!("id {i:?} vs {w:?}"),
        },
        Kind::Notification => assert!(id.is_none(), "notification with id in {v}"),
    }
    if matches!(m.kind, Kind::Response(_)) {
        assert!(m.method.is_none() && (obj.contains_key("result") ^ obj.contains_key("error")));
    }
}
