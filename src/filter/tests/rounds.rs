//! Multi round-trip calls (MCP 2026-07-28 `basic/patterns/mrtr`): an `input_required` answer
//! opens a round, its retry (on any worker) continues it once, and rate limits count the
//! logical call once; policy is decided on every round.

use super::*;

/// The filter asks the RLS itself (headers held, so tags are set from the body).
const ROUNDS_POLICY: &str = r#"{
  "server_id": "demo-server",
  "rate_limit_service": {"cluster": "ratelimit", "domain": "mcp", "timeout_ms": 250},
  "policy": {"agents": {"demo-agent": {"tools": ["echo", "confirm_delete"]},
                        "other-agent": {"tools": ["confirm_delete"]}}}
}"#;

/// `RateLimitResponse{overall_code: OK}` (rls.proto).
const RLS_OK: &[u8] = &[0x08, 0x01];

const FIRST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"confirm_delete","arguments":{"path":"/tmp/x"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}}}}"#;

const ASKED: &[u8] = br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","inputRequests":{"confirm":{"method":"elicitation/create","params":{"mode":"form","message":"Delete /tmp/x?","requestedSchema":{"type":"object"}}}},"requestState":"v1.c3RhdGU"}}"#;

const DONE: &[u8] = br#"{"jsonrpc":"2.0","id":2,"result":{"resultType":"complete","content":[{"type":"text","text":"deleted"}]}}"#;

/// The retry of [`FIRST`] with id `id`, echoing `state`.
fn retry(id: u32, state: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"confirm_delete","arguments":{{"path":"/tmp/x"}},"inputResponses":{{"confirm":{{"action":"accept","content":{{}}}}}},"requestState":"{state}","_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{"elicitation":{{}}}}}}}}}}"#
    )
}

/// A 2026-07-28 POST of `body` (a tools/call of confirm_delete) from `agent`, with the headers
/// such a request carries (MCP-Protocol-Version, Mcp-Method, Mcp-Name).
fn modern(sc: &Scenario, agent: &str, body: &str) -> (Stream, FakeHost) {
    let (s, mut h) = sc.post(Some(agent), body);
    modern_headers(&mut h);
    (s, h)
}

fn modern_headers(h: &mut FakeHost) {
    for (name, value) in [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "confirm_delete"),
    ] {
        h.request_headers.insert(name.into(), value.into());
    }
}

fn round_tag(h: &FakeHost) -> Option<&str> {
    h.request_headers
        .get("x-mcp-call-round")
        .map(String::as_str)
}

/// Sends a request through; when the RLS is asked, answers OK. Returns whether it was asked.
fn through(s: &mut Stream, h: &mut FakeHost) -> bool {
    match send_request(s, h) {
        Action::Continue => false,
        Action::Pause => {
            assert_eq!(h.grpc_calls.len(), 1, "the RLS is asked once");
            s.on_grpc_response(h, 41, 0, Some(RLS_OK));
            assert_eq!(h.resumed, 1);
            true
        }
    }
}

/// The first round, answered input_required (`answer`): its record.
fn first_round(sc: &Scenario, answer: &[u8]) -> Value {
    let (mut s, mut h) = modern(sc, "demo-agent", FIRST);
    assert!(through(&mut s, &mut h), "a first call is counted");
    assert_eq!(round_tag(&h), Some("first"));
    respond(&mut s, &mut h, "200", "application/json", &[answer]);
    s.on_stream_end(&mut h);
    let r = h.records();
    assert_eq!(r.len(), 1);
    r[0].clone()
}

#[test]
fn an_input_required_answer_opens_a_round_its_retry_continues_once() {
    let sc = Scenario::new(ROUNDS_POLICY);
    let opened = first_round(&sc, ASKED);
    assert_eq!(opened["output_status"], "input_required");
    let link = opened["round_opens"]
        .as_str()
        .expect("round_opens")
        .to_owned();
    assert!(link.starts_with("sha256:"), "{link}");
    assert!(
        !opened.to_string().contains("v1.c3RhdGU"),
        "the raw state is never logged"
    );
    assert_eq!(opened.get("round_continues"), None);

    // The retry, on another worker (own stream, same shared data): not asked of the RLS.
    let (mut s, mut h) = modern(&sc, "demo-agent", &retry(2, "v1.c3RhdGU"));
    h.request_headers
        .insert("x-mcp-call-round".into(), "first".into());
    assert!(
        !through(&mut s, &mut h),
        "a continuation is not counted again"
    );
    assert!(h.grpc_calls.is_empty());
    assert_eq!(round_tag(&h), Some("continuation"));
    respond(&mut s, &mut h, "200", "application/json", &[DONE]);
    s.on_stream_end(&mut h);
    let r = h.records();
    assert_eq!(
        (r[0]["output_status"].as_str(), r[0]["decision"].as_str()),
        (Some("success"), Some("allow"))
    );
    assert_eq!(r[0]["round_continues"], link.as_str());
    assert_eq!(r[0]["round_matched"], true);
    assert_eq!(r[0].get("round_opens"), None);

    // The same retry replayed: the round is used up, so it is counted like a new call.
    let (mut s, mut h) = modern(&sc, "demo-agent", &retry(3, "v1.c3RhdGU"));
    h.request_headers
        .insert("x-mcp-call-round".into(), "continuation".into());
    assert!(through(&mut s, &mut h), "a replayed retry is counted");
    assert_eq!(round_tag(&h), Some("first"));
    respond(&mut s, &mut h, "200", "application/json", &[DONE]);
    s.on_stream_end(&mut h);
    let r = h.records();
    assert_eq!(r[0]["round_continues"], link.as_str());
    assert_eq!(r[0]["round_matched"], false);
}

#[test]
fn a_retry_that_matches_no_round_is_counted_and_a_client_tag_is_not_trusted() {
    let sc = Scenario::new(ROUNDS_POLICY);
    first_round(&sc, ASKED);
    // A forged state, and the right state presented by another agent.
    for (agent, state) in [("demo-agent", "v1.forged"), ("other-agent", "v1.c3RhdGU")] {
        let (mut s, mut h) = modern(&sc, agent, &retry(2, state));
        h.request_headers
            .insert("x-mcp-call-round".into(), "continuation".into());
        assert!(through(&mut s, &mut h), "{agent} {state}: counted");
        assert_eq!(round_tag(&h), Some("first"), "{agent} {state}");
        respond(&mut s, &mut h, "200", "application/json", &[DONE]);
        s.on_stream_end(&mut h);
        assert_eq!(h.records()[0]["round_matched"], false);
    }
    // The genuine state on a retry with other arguments: another call, not this round's.
    let other = retry(3, "v1.c3RhdGU").replace("/tmp/x", "/etc/passwd");
    let (mut s, mut h) = modern(&sc, "demo-agent", &other);
    assert!(through(&mut s, &mut h), "other arguments: counted");
    assert_eq!(round_tag(&h), Some("first"));
    // The genuine retry still finds its round.
    let (mut s, mut h) = modern(&sc, "demo-agent", &retry(4, "v1.c3RhdGU"));
    assert!(!through(&mut s, &mut h));
    assert_eq!(round_tag(&h), Some("continuation"));
}

#[test]
fn rounds_open_from_sse_answers_and_chain_over_several_rounds() {
    let sc = Scenario::new(ROUNDS_POLICY);
    let (mut s, mut h) = modern(&sc, "demo-agent", FIRST);
    assert!(through(&mut s, &mut h));
    let event = [
        b"event: message\r\ndata: ".as_slice(),
        ASKED,
        b"\r\n\r\n".as_slice(),
    ]
    .concat();
    respond(&mut s, &mut h, "200", "text/event-stream", &[&event]);
    s.on_stream_end(&mut h);
    let first = h.records()[0]["round_opens"].clone();
    assert!(first.is_string());
    // Round 2 asks again (a new state): it continues round 1 and opens round 2.
    let again = br#"{"jsonrpc":"2.0","id":2,"result":{"resultType":"input_required","requestState":"v2.bW9yZQ"}}"#;
    let (mut s, mut h) = modern(&sc, "demo-agent", &retry(2, "v1.c3RhdGU"));
    assert!(!through(&mut s, &mut h));
    respond(&mut s, &mut h, "200", "application/json", &[again]);
    s.on_stream_end(&mut h);
    let r = h.records();
    assert_eq!(r[0]["output_status"], "input_required");
    assert_eq!(r[0]["round_continues"], first);
    assert_eq!(r[0]["round_matched"], true);
    let second = r[0]["round_opens"].clone();
    assert!(second.is_string() && second != first);
    let (mut s, mut h) = modern(&sc, "demo-agent", &retry(3, "v2.bW9yZQ"));
    assert!(!through(&mut s, &mut h), "round 3 continues round 2");
    respond(&mut s, &mut h, "200", "application/json", &[DONE]);
    s.on_stream_end(&mut h);
    assert_eq!(h.records()[0]["round_continues"], second);
}

#[test]
fn an_unlinkable_state_opens_no_round_and_a_broken_store_counts_the_retry() {
    let sc = Scenario::new(ROUNDS_POLICY);
    let long = "s".repeat(crate::response::MAX_REQUEST_STATE_LEN + 1);
    let answer = format!(
        r#"{{"jsonrpc":"2.0","id":1,"result":{{"resultType":"input_required","requestState":"{long}"}}}}"#
    );
    let opened = first_round(&sc, answer.as_bytes());
    assert_eq!(opened["output_status"], "input_required");
    assert_eq!(opened.get("round_opens"), None);
    let (mut s, mut h) = modern(&sc, "demo-agent", &retry(2, &long));
    assert!(through(&mut s, &mut h), "nothing to continue: counted");
    respond(&mut s, &mut h, "200", "application/json", &[DONE]);
    s.on_stream_end(&mut h);
    let r = h.records();
    assert_eq!(
        (
            r[0]["round_continues"].clone(),
            r[0]["round_matched"].clone()
        ),
        (Value::Null, Value::Bool(false))
    );

    // An open round, but the shared data cannot be read when the retry comes. A 2026-07-28
    // tools/call also needs the tool's Mcp-Param markings from shared data, so the retry is
    // refused (fail closed: "could not read it" is not "nothing there") before any round is
    // claimed (an unreadable round table alone counts the retry as new: the verdict test
    // `a_retry_matching_no_round_is_counted_like_a_new_call`), and the round stays open for a
    // retry that can read it.
    first_round(&sc, ASKED);
    let (mut s, mut h) = modern(&sc, "demo-agent", &retry(2, "v1.c3RhdGU"));
    h.failing = vec![Read::SharedData];
    send_request(&mut s, &mut h);
    assert!(h.grpc_calls.is_empty(), "nothing asked of the RLS");
    assert_eq!(h.local_reply.as_ref().map(|(status, _)| *status), Some(500));
    let (mut s, mut h) = modern(&sc, "demo-agent", &retry(3, "v1.c3RhdGU"));
    assert!(!through(&mut s, &mut h));
}

#[test]
fn policy_is_decided_on_every_round_a_push_denies_round_two() {
    let sc = Scenario::new(ROUNDS_POLICY);
    let link = first_round(&sc, ASKED)["round_opens"].clone();
    // The policy is pushed between the rounds: demo-agent may no longer use the tool.
    let pushed = ROUNDS_POLICY.replace(r#"["echo", "confirm_delete"]"#, r#"["echo"]"#);
    let mut s = stream(&pushed);
    let mut h = post(Some("demo-agent"), &retry(2, "v1.c3RhdGU"));
    modern_headers(&mut h);
    h.shared = Rc::clone(&sc.shared);
    assert_eq!(send_request(&mut s, &mut h), Action::Pause);
    assert!(h.grpc_calls.is_empty());
    let (status, body) = h.reply_json();
    assert_eq!((status, body["id"].clone()), (200, Value::from(2)));
    assert_eq!(body["error"]["code"], DENIED);
    let r = h.records();
    assert_eq!(
        (r[0]["decision"].as_str(), r[0]["output_status"].as_str()),
        (Some("deny"), Some("denied"))
    );
    assert_eq!(r[0]["round_continues"], link);
    assert_eq!(r[0]["round_matched"], false);
    // The refused retry claimed nothing: under the old policy it would still continue.
    let (mut s, mut h) = modern(&sc, "demo-agent", &retry(3, "v1.c3RhdGU"));
    assert!(!through(&mut s, &mut h));
}

#[test]
fn a_call_that_keeps_asking_costs_a_hit_every_max_rounds() {
    let sc = Scenario::new(ROUNDS_POLICY);
    let asked = |n: u32| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{n},"result":{{"resultType":"input_required","requestState":"v1.round-{n}"}}}}"#
        )
    };
    first_round(&sc, asked(1).as_bytes());
    // Rounds 1..=MAX_ROUNDS are open in turn; each retry continues one and is asked again.
    let max = crate::rounds::MAX_ROUNDS;
    for n in 1..=max {
        let id = n + 1;
        let (mut s, mut h) = modern(&sc, "demo-agent", &retry(id, &format!("v1.round-{n}")));
        assert!(!through(&mut s, &mut h), "round {n} continued for free");
        // Answered input_required again, with the state of round n + 1 (= id).
        respond(
            &mut s,
            &mut h,
            "200",
            "application/json",
            &[asked(id).as_bytes()],
        );
        s.on_stream_end(&mut h);
        assert_eq!(h.records()[0]["round_matched"], true, "round {n}");
    }
    // The answer to round MAX_ROUNDS opened none: this retry is a new call, counted.
    let (mut s, mut h) = modern(
        &sc,
        "demo-agent",
        &retry(max + 2, &format!("v1.round-{}", max + 1)),
    );
    assert!(through(&mut s, &mut h), "round {} is counted", max + 1);
    assert_eq!(round_tag(&h), Some("first"));
}
