//! Pseudo-random requests and responses (bounded in count) checked against the authorization oracles.

use super::*;

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
