//! `subscriptions/listen` (MCP 2026-07-28): the response stream is curated event by event, and
//! cache hints on every curated path.

use super::*;

/// demo-agent reads `demo://*` resources only.
const LISTEN_POLICY: &str = r#"{
  "server_id": "demo-server",
  "policy": {"agents": {
      "demo-agent": {"tools": ["echo"], "resources": ["demo://*"]},
      "admin-agent": {"tools": ["*"], "resources": ["*"]}}}
}"#;

const LISTEN: &str = r#"{"jsonrpc":"2.0","id":"listen-1","method":"subscriptions/listen","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}},"notifications":{"toolsListChanged":true,"resourceSubscriptions":["demo://docs/a","secret://keys"]}}}"#;

/// `agent`'s [`LISTEN`] POST with the headers a 2026-07-28 client sends with it.
fn listen_post(agent: &str) -> FakeHost {
    let mut h = post(Some(agent), LISTEN);
    for (name, value) in [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "subscriptions/listen"),
    ] {
        h.request_headers.insert(name.into(), value.into());
    }
    h
}

fn sse(data: &str) -> String {
    format!("event: message\r\ndata: {data}\r\n\r\n")
}

fn ack() -> String {
    sse(
        r#"{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":"listen-1"},"notifications":{"toolsListChanged":true,"resourceSubscriptions":["demo://docs/a","secret://keys"]}}}"#,
    )
}

/// [`ack`] as demo-agent gets it: `secret://keys`, which it may not read, removed from the
/// honoured filter (compact JSON, members in key order).
fn ack_curated() -> String {
    sse(
        r#"{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":"listen-1"},"notifications":{"resourceSubscriptions":["demo://docs/a"],"toolsListChanged":true}}}"#,
    )
}

fn updated(uri: &str) -> String {
    sse(&format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{{"_meta":{{"io.modelcontextprotocol/subscriptionId":"listen-1"}},"uri":"{uri}"}}}}"#
    ))
}

fn list_changed() -> String {
    sse(
        r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":"listen-1"}}}"#,
    )
}

fn graceful_end() -> String {
    sse(
        r#"{"jsonrpc":"2.0","id":"listen-1","result":{"resultType":"complete","_meta":{"io.modelcontextprotocol/subscriptionId":"listen-1"}}}"#,
    )
}

/// `agent`'s listen request forwarded under `policy`, its SSE response headers through.
fn listening(policy: &str, agent: &str) -> (Stream, FakeHost) {
    let mut s = stream(policy);
    let mut h = listen_post(agent);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    h.response_headers.insert(":status".into(), "200".into());
    h.response_headers
        .insert("content-type".into(), "text/event-stream".into());
    let action = in_phase(&mut h, Phase::ResponseHeaders, |h| {
        s.on_response_headers(h, false)
    });
    assert_eq!(action, Action::Continue);
    (s, h)
}

/// Feeds `chunks` (none ends the stream) and returns what the client got after each one:
/// every chunk passes in its own callback, never paused (the stream is never held).
fn feed(s: &mut Stream, h: &mut FakeHost, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    for chunk in chunks {
        h.response_chunk = chunk.to_vec();
        h.replaced_response_body = None;
        let action = in_phase(h, Phase::ResponseBody, |h| {
            s.on_response_body(h, chunk.len(), false)
        });
        assert_eq!(action, Action::Continue);
        got.push(
            h.replaced_response_body
                .take()
                .unwrap_or_else(|| chunk.to_vec()),
        );
    }
    got
}

#[test]
fn a_listen_stream_passes_event_by_event_without_denied_resource_updates() {
    let (mut s, mut h) = listening(LISTEN_POLICY, "demo-agent");
    assert!(!h.response_headers.contains_key("content-length"));
    let events = [
        ack(),
        updated("secret://keys"),
        list_changed(),
        updated("demo://docs/a"),
    ];
    let got = feed(
        &mut s,
        &mut h,
        &events.iter().map(|e| e.as_bytes()).collect::<Vec<_>>(),
    );
    // Each event reaches the client in the callback it arrived in (not held), the denied one
    // not at all; the acknowledgement no longer claims the denied subscription.
    assert_eq!(String::from_utf8_lossy(&got[0]), ack_curated());
    assert!(got[1].is_empty(), "{}", String::from_utf8_lossy(&got[1]));
    assert_eq!(got[2], list_changed().as_bytes());
    assert_eq!(got[3], updated("demo://docs/a").as_bytes());
    assert!(h.records().is_empty(), "settled only when the stream ends");
    // The server ends the subscription: the record says success.
    let end = graceful_end();
    h.response_chunk = end.as_bytes().to_vec();
    h.replaced_response_body = None;
    in_phase(&mut h, Phase::ResponseBody, |h| {
        s.on_response_body(h, end.len(), true)
    });
    assert_eq!(h.replaced_response_body, None);
    let r = h.records();
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0]["method"].as_str(), r[0]["output_status"].as_str()),
        (Some("subscriptions/listen"), Some("success"))
    );

    // An agent that may read every resource gets every event.
    let (mut s, mut h) = listening(LISTEN_POLICY, "admin-agent");
    let denied = updated("secret://keys");
    assert_eq!(
        feed(&mut s, &mut h, &[denied.as_bytes()])[0],
        denied.as_bytes()
    );
}

#[test]
fn events_split_anywhere_are_curated_as_a_whole_stream_would_be() {
    let stream_text = [
        ack(),
        updated("secret://keys"),
        updated("demo://docs/a"),
        ": keepalive\n\n".to_owned(),
        updated("secret://other"),
        list_changed(),
    ]
    .concat();
    let want = [
        ack_curated(),
        updated("demo://docs/a"),
        ": keepalive\n\n".to_owned(),
        list_changed(),
    ]
    .concat();
    let bytes = stream_text.as_bytes();
    // Every split into two chunks, and one byte at a time.
    let mut splits: Vec<Vec<&[u8]>> = (1..bytes.len())
        .map(|i| vec![&bytes[..i], &bytes[i..]])
        .collect();
    splits.push(bytes.chunks(1).collect());
    for chunks in splits {
        let (mut s, mut h) = listening(LISTEN_POLICY, "demo-agent");
        let got = feed(&mut s, &mut h, &chunks).concat();
        assert_eq!(
            String::from_utf8_lossy(&got),
            want,
            "chunks of {:?}",
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn the_last_event_is_curated_when_the_stream_ends_and_the_record_settles() {
    // The stream ends inside a denied update (no blank line): dropped too.
    let (mut s, mut h) = listening(LISTEN_POLICY, "demo-agent");
    let cut = updated("secret://keys");
    let cut = cut.trim_end();
    feed(&mut s, &mut h, &[ack().as_bytes()]);
    h.response_chunk = cut.as_bytes().to_vec();
    h.replaced_response_body = None;
    in_phase(&mut h, Phase::ResponseBody, |h| {
        s.on_response_body(h, cut.len(), true)
    });
    assert_eq!(h.replaced_response_body.as_deref(), Some(&b""[..]));
    // No result came: an upstream that ends the stream without one is an upstream error.
    assert_eq!(h.records()[0]["output_status"], "upstream_error");

    // The client closes an acknowledged subscription (its normal end): success.
    let (mut s, mut h) = listening(LISTEN_POLICY, "demo-agent");
    feed(&mut s, &mut h, &[ack().as_bytes()]);
    h.code_details = Some("downstream_remote_disconnect".into());
    in_phase(&mut h, Phase::Log, |h| s.on_stream_end(h));
    assert_eq!(h.records()[0]["output_status"], "success");
    // ... before the acknowledgement: it left.
    let (mut s, mut h) = listening(LISTEN_POLICY, "demo-agent");
    h.code_details = Some("downstream_remote_disconnect".into());
    in_phase(&mut h, Phase::Log, |h| s.on_stream_end(h));
    assert_eq!(h.records()[0]["output_status"], "client_disconnected");
    // An error answer to the listen request.
    let (mut s, mut h) = listening(LISTEN_POLICY, "demo-agent");
    let error = sse(
        r#"{"jsonrpc":"2.0","id":"listen-1","error":{"code":-32603,"message":"Subscription limit reached"}}"#,
    );
    h.response_chunk = error.as_bytes().to_vec();
    in_phase(&mut h, Phase::ResponseBody, |h| {
        s.on_response_body(h, error.len(), true)
    });
    assert_eq!(
        (
            h.records()[0]["output_status"].as_str(),
            h.records()[0]["error_code"].as_i64()
        ),
        (Some("error"), Some(-32603))
    );
}

#[test]
fn an_event_too_large_to_hold_is_dropped_whole_and_the_stream_goes_on() {
    let (mut s, mut h) = listening(LISTEN_POLICY, "demo-agent");
    let huge = format!(
        "data: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/resources/updated\",\"params\":{{\"uri\":\"secret://keys\",\"pad\":\"{}",
        "x".repeat(crate::curation::MAX_HELD_EVENT)
    );
    let (first, second) = huge.as_bytes().split_at(1000);
    let rest = "\"}}\r\n\r\n".to_owned() + &list_changed();
    let got = feed(
        &mut s,
        &mut h,
        &[ack().as_bytes(), first, second, rest.as_bytes()],
    );
    assert_eq!(String::from_utf8_lossy(&got[0]), ack_curated());
    assert!(got[1].is_empty() && got[2].is_empty());
    assert_eq!(String::from_utf8_lossy(&got[3]), list_changed());
}

#[test]
fn a_listen_response_that_is_not_a_stream_to_curate() {
    // JSON (an error, or an immediate end): one finite message, scanned.
    let mut s = stream(LISTEN_POLICY);
    let mut h = listen_post("demo-agent");
    send_request(&mut s, &mut h);
    let error =
        r#"{"jsonrpc":"2.0","id":"listen-1","error":{"code":-32601,"message":"Method not found"}}"#;
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[error.as_bytes()],
    );
    assert_eq!(h.replaced_response_body, None);
    assert_eq!(h.records()[0]["output_status"], "error");
    // An encoded stream cannot be read: refused, never forwarded unread.
    let mut s = stream(LISTEN_POLICY);
    let mut h = listen_post("demo-agent");
    send_request(&mut s, &mut h);
    h.response_headers
        .insert("content-encoding".into(), "gzip".into());
    respond(
        &mut s,
        &mut h,
        "200",
        "text/event-stream",
        &[b"\x1f\x8b junk"],
    );
    assert_eq!(h.response_headers[":status"], "502");
    let body = h.replaced_response_body.clone().unwrap_or_default();
    assert!(!body.windows(5).any(|w| w == b"junk"));
    assert_eq!(h.records()[0]["refusal"], "response_encoding");
    // Without curate_lists the stream passes as it came.
    let open = LISTEN_POLICY.replacen('{', r#"{"curate_lists": false,"#, 1);
    let (mut s, mut h) = listening(&open, "demo-agent");
    let denied = updated("secret://keys");
    assert_eq!(
        feed(&mut s, &mut h, &[denied.as_bytes()])[0],
        denied.as_bytes()
    );
}

#[test]
fn a_resource_update_on_the_server_stream_of_an_older_session_is_curated_too() {
    let scenario = Scenario::new(LISTEN_POLICY);
    let (mut get, mut gh) = scenario.get("/mcp", Some("sess-1"));
    let events = [updated("secret://keys"), updated("demo://docs/a")].concat();
    gh.replaced_response_body = None;
    stream_chunk(&mut get, &mut gh, events.as_bytes(), false);
    assert_eq!(
        String::from_utf8_lossy(&gh.replaced_response_body.clone().unwrap()),
        updated("demo://docs/a")
    );
}

/// A 2026-07-28 list result (`resultType`, cache hints), curated on every path a list can take,
/// leaves `cacheScope: "private"` with its `ttlMs` kept; what mcp-guard does not curate keeps
/// its hints as the server sent them.
#[test]
fn cache_hints_on_every_curated_path() {
    let list = r#"{"jsonrpc":"2.0","id":5,"result":{"resultType":"complete","tools":[{"name":"echo"},{"name":"delete_repo"}],"ttlMs":60000,"cacheScope":"public"}}"#;
    let check = |got: &str, path: &str| {
        let doc = got
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap_or(got);
        let v: Value =
            serde_json::from_str(doc.trim()).unwrap_or_else(|e| panic!("{path}: {e}: {got}"));
        assert_eq!(
            (
                v["result"]["cacheScope"].as_str(),
                v["result"]["ttlMs"].as_u64(),
                v["result"]["resultType"].as_str()
            ),
            (Some("private"), Some(60000), Some("complete")),
            "{path}"
        );
        assert!(!got.contains("delete_repo"), "{path}");
    };
    // A POST answered with JSON, and with SSE (the whole response held).
    for (ctype, body) in [
        ("application/json", list.to_owned()),
        (
            "text/event-stream",
            format!("event: message\ndata: {list}\n\n"),
        ),
    ] {
        let (mut s, mut h, _) = list_answered(&[(":status", "200"), ("content-type", ctype)]);
        let got = client_body(&mut s, &mut h, &[body.as_bytes()]);
        check(&String::from_utf8_lossy(&got), ctype);
    }
    // A legacy session's GET stream (the list POSTed, answered on the stream).
    let scenario = Scenario::new(POLICY);
    let (mut get, mut gh) = scenario.legacy_get("L1");
    let (mut s, mut h) = scenario.legacy_post(
        "L1",
        Some("demo-agent"),
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#,
    );
    send_request(&mut s, &mut h);
    respond(&mut s, &mut h, "202", "text/plain", &[b"Accepted"]);
    gh.replaced_response_body = None;
    let event = format!("event: message\r\ndata: {list}\r\n\r\n");
    stream_chunk(&mut get, &mut gh, event.as_bytes(), false);
    let got = gh
        .replaced_response_body
        .clone()
        .expect("curated on the stream");
    check(&String::from_utf8_lossy(&got), "server stream");

    // Not curated: server/discover (names no tools, prompts or resources), resources/read
    // (allowed or refused whole) and resources/templates/list pass with the server's hints.
    for (method, result) in [
        (
            "server/discover",
            r#"{"resultType":"complete","supportedVersions":["2026-07-28"],"capabilities":{"tools":{"listChanged":true}},"ttlMs":3600000,"cacheScope":"public"}"#,
        ),
        (
            "resources/templates/list",
            r#"{"resourceTemplates":[{"uriTemplate":"secret://{name}","name":"secrets"}],"ttlMs":1,"cacheScope":"public"}"#,
        ),
    ] {
        let request = format!(r#"{{"jsonrpc":"2.0","id":8,"method":"{method}"}}"#);
        let mut s = stream(LISTEN_POLICY);
        let mut h = post(Some("demo-agent"), &request);
        assert_eq!(send_request(&mut s, &mut h), Action::Continue);
        let body = format!(r#"{{"jsonrpc":"2.0","id":8,"result":{result}}}"#);
        respond(
            &mut s,
            &mut h,
            "200",
            "application/json",
            &[body.as_bytes()],
        );
        assert_eq!(h.replaced_response_body, None, "{method}");
        assert_eq!(h.records()[0]["output_status"], "success");
    }
    let read =
        r#"{"jsonrpc":"2.0","id":9,"method":"resources/read","params":{"uri":"demo://docs/a"}}"#;
    let mut s = stream(LISTEN_POLICY);
    let mut h = post(Some("demo-agent"), read);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    let body = r#"{"jsonrpc":"2.0","id":9,"result":{"contents":[{"uri":"demo://docs/a","text":"a"}],"ttlMs":5,"cacheScope":"public"}}"#;
    respond(
        &mut s,
        &mut h,
        "200",
        "application/json",
        &[body.as_bytes()],
    );
    assert_eq!(h.replaced_response_body, None);
}

/// Pseudo-random listen streams (bounded: 400 streams) built from updates the agent may and may
/// not read, spelled every way a reader might take them (escapes, duplicated members in either
/// order, batches, byte order marks, several data lines, CR/LF/CRLF), with a few bytes damaged,
/// cut into random chunks: no reader of what the client gets finds an update about a resource
/// the agent may not read (`oracle::check_notifications`), and every event the filter did not
/// need to drop still arrives.
#[test]
fn no_reader_finds_a_denied_update_in_a_curated_listen_stream() {
    let config = Config::from_json(LISTEN_POLICY.as_bytes()).unwrap();
    let permits = |named: oracle::Named<'_>| match named {
        oracle::Named::Resource(uri) => {
            match config.policy.decide("demo-agent", Subject::Resource(uri)) {
                Decision::Allow => Ok(()),
                d => Err(d.as_str().to_owned()),
            }
        }
        _ => Ok(()),
    };
    let update = |params: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{{{params}}}}}"#
        )
    };
    let pieces: Vec<String> = vec![
        update(r#""uri":"demo://docs/a""#),
        update(r#""uri":"secret://keys""#),
        update(r#""uri":"secret:\/\/keys""#),
        update(r#""uri":"demo://docs/a","uri":"secret://keys""#),
        update(r#""uri":"secret://keys","uri":"demo://docs/a""#),
        update(r#""uri":"demo://docs/a","\u0075ri":"secret://keys""#),
        r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed","method":"notifications/resources/updated","params":{"uri":"secret://keys"}}"#.to_owned(),
        r#"{"jsonrpc":"2.0","method":"notifications\/resources\/updated","params":{"uri":"secret://keys"}}"#.to_owned(),
        format!("[{},{}]", update(r#""uri":"demo://docs/b""#), update(r#""uri":"secret://x""#)),
        format!("\u{feff}{}", update(r#""uri":"secret://keys""#)),
        r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#.to_owned(),
        r#"{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"notifications":{}}}"#.to_owned(),
    ];
    let mut rng = Rng::new(0x11573);
    for round in 0..400 {
        let nl = ["\n", "\r\n", "\r"][rng.below(3)];
        let mut stream_text = String::new();
        for _ in 0..1 + rng.below(6) {
            let piece = &pieces[rng.below(pieces.len())];
            if rng.below(4) == 0 && piece.len() > 20 {
                // Two data lines (joined with LF by every reader).
                let cut = piece
                    .char_indices()
                    .nth(piece.chars().count() / 2)
                    .unwrap()
                    .0;
                stream_text +=
                    &format!("data: {}{nl}data: {}{nl}{nl}", &piece[..cut], &piece[cut..]);
            } else {
                stream_text += &format!("event: message{nl}data: {piece}{nl}{nl}");
            }
        }
        let mut bytes = stream_text.into_bytes();
        for _ in 0..rng.below(3) {
            // Damage: a byte replaced, or a line end removed.
            let at = rng.below(bytes.len());
            bytes[at] = [b'"', b'\n', b'}', b' ', b'x'][rng.below(5)];
        }
        let (mut s, mut h) = listening(LISTEN_POLICY, "demo-agent");
        let mut got = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(1 + rng.below(rest.len()));
            got.extend(feed(&mut s, &mut h, &[chunk]).concat());
            rest = after;
        }
        h.response_chunk = Vec::new();
        h.replaced_response_body = None;
        in_phase(&mut h, Phase::ResponseBody, |h| {
            s.on_response_body(h, 0, true)
        });
        got.extend(h.replaced_response_body.take().unwrap_or_default());
        if let Err(finding) = oracle::check_notifications(&got, &permits) {
            panic!(
                "round {round}: {finding}\nsent: {:?}\ngot: {:?}",
                String::from_utf8_lossy(&bytes),
                String::from_utf8_lossy(&got)
            );
        }
    }
}

#[test]
fn a_listen_chunk_that_cannot_be_read_is_never_passed_on() {
    let (mut s, mut h) = listening(LISTEN_POLICY, "demo-agent");
    h.failing = vec![crate::host::fake::Read::ResponseBody];
    let denied = updated("secret://keys");
    assert!(feed(&mut s, &mut h, &[denied.as_bytes()])[0].is_empty());
    // Refused from then on: swallowed, a JSON-RPC error in place of the last chunk.
    h.failing.clear();
    assert!(feed(&mut s, &mut h, &[denied.as_bytes()])[0].is_empty());
    h.response_chunk = Vec::new();
    h.replaced_response_body = None;
    in_phase(&mut h, Phase::ResponseBody, |h| {
        s.on_response_body(h, 0, true)
    });
    let end = String::from_utf8(h.replaced_response_body.clone().unwrap()).unwrap();
    assert!(end.contains("-32603") && !end.contains("secret"), "{end}");
    let r = h.records();
    assert_eq!(
        (r[0]["output_status"].as_str(), r[0]["refusal"].as_str()),
        (Some("upstream_error"), Some("response_read"))
    );
}
