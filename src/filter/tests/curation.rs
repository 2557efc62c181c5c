//! Curated list responses: per agent, across chunks, refused when they cannot be read.

use super::*;

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
    let scenario = Scenario::new(POLICY);
    let mut get = stream(POLICY);
    let (_, mut gh) = scenario.get("/sse", None);
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
fn legacy_list_responses_on_the_get_stream_are_curated_event_by_event() {
    let scenario = Scenario::new(POLICY);
    let (mut get, mut gh) = scenario.legacy_get("L1");
    assert!(
        gh.replaced_response_body.is_none(),
        "complete events pass untouched"
    );
    let (mut s, mut h) = scenario.legacy_post(
        "L1",
        Some("demo-agent"),
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#,
    );
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
    let scenario = Scenario::new(POLICY);
    let (mut get, mut gh) = scenario.legacy_get("L1");
    let (mut s, mut h) = scenario.legacy_post(
        "L1",
        Some("demo-agent"),
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#,
    );
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
    let scenario = Scenario::new(POLICY);
    let (mut get, mut gh) = scenario.legacy_get("L1");
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
