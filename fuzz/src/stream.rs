//! The `stream` target: a whole `filter::Stream` driven through the one fake host
//! (`mcp_guard::host::fake::FakeHost`, its phase rules checked), with the authorization oracles.

use super::*;

/// The policy every fuzzed stream runs under, by index (control byte 1).
const POLICIES: [&str; 4] = [
    r#"{"server_id":"fuzz","policy":{"mode":"enforce","agents":{
        "demo-agent":{"tools":["echo","add","search","fail"]},
        "admin-agent":{"tools":["*"]},"default":{"tools":["echo"]}}}}"#,
    r#"{"policy":{"mode":"dry_run","agents":{"demo-agent":{"tools":["echo"]},"default":{"tools":[]}}}}"#,
    r#"{"policy":{"agents":{"default":{"tools":["echo","add"]}}},"max_body_bytes":96}"#,
    r#"{"identity":{"sources":[{"header":"x-agent-id"},{"header":"x-user"}],"fallback":"anonymous"},
        "policy":{"agents":{"default":{"tools":["echo"]}}},"max_json_depth":3}"#,
];
const METHODS: [&str; 4] = ["POST", "POST", "GET", "DELETE"];
const AGENTS: [Option<&str>; 8] = [
    Some("demo-agent"),
    Some("admin-agent"),
    None,
    Some("other"),
    Some(""),
    Some("demo-agent, admin-agent"),
    Some("d\u{e9}mo"),
    Some("DEMO-AGENT"),
];
const STATUSES: [&str; 16] = [
    "200",
    "200",
    "202",
    "400",
    "404",
    "413",
    "429",
    "429",
    "500",
    "503",
    " 200 ",
    "abc",
    "",
    "99999999999",
    "-1",
    "204",
];
const CONTENT_TYPES: [Option<&str>; 8] = [
    Some("text/event-stream"),
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("TEXT/EVENT-STREAM;charset=UTF-8"),
    None,
    Some("text/plain"),
    Some(" application/json "),
    Some("application/jsonx"),
];
/// 2026-07-28 routing headers (`Mcp-Method`, `Mcp-Name`) sent with the request, by selector
/// (control byte 1, bits 6-7): none, a plain pair, duplicated values with a base64 name, a
/// method alone.
const ROUTING_HEADERS: [&[(&str, &str)]; 4] = [
    &[],
    &[("mcp-method", "tools/call"), ("mcp-name", "echo")],
    &[
        ("mcp-method", "tools/call"),
        ("mcp-method", "ping"),
        ("mcp-name", "=?base64?ZWNobw==?="),
    ],
    &[("mcp-method", "initialize")],
];
const CODE_DETAILS: [Option<&str>; 4] = [
    None,
    Some("via_upstream"),
    Some("downstream_remote_disconnect"),
    Some("upstream_reset_before_response_started{connection_termination}"),
];
/// Largest chunk, by selector (control bytes 2 and 6); 0 = the whole body in one chunk.
const CHUNK_MAX: [usize; 8] = [0, 1, 2, 3, 7, 64, 4096, 0];

/// Between the request body and the response body in a `stream` input.
pub const STREAM_SEPARATOR: &[u8] = b"\n--mcp-guard-fuzz-response--\n";
/// Control bytes at the start of a `stream` input.
pub const STREAM_CONTROL_LEN: usize = 8;

/// Fails if the stream made a hostcall in a phase where Envoy fails it.
fn check_no_violations(h: &FakeHost) {
    let v = h.violations();
    assert!(v.is_empty(), "hostcalls in the wrong phase: {v:?}");
}

/// Checks an audit value: one JSON object per line, each with a decision and an outcome.
fn check_audit(audit: Option<&[u8]>, what: &str) {
    let audit = audit.unwrap_or_else(|| panic!("no audit record {what}"));
    let text = std::str::from_utf8(audit).unwrap_or_else(|e| panic!("audit is not UTF-8: {e}"));
    assert!(!text.is_empty(), "empty audit value {what}");
    for line in text.split('\n') {
        let Some(v) = strict_json(line, &format!("audit line {what}")) else {
            continue;
        };
        assert!(
            v.get("decision").is_some_and(Value::is_string),
            "{what}: {line}"
        );
        assert!(
            v.get("output_status").is_some_and(Value::is_string),
            "{what}: {line}"
        );
    }
}

/// Checks a JSON-RPC error body: one error object, or a non-empty array of them, with `code`.
fn check_error_body(body: &[u8], code: Option<i64>, what: &str) {
    let text = std::str::from_utf8(body).unwrap_or_else(|e| panic!("{what} is not UTF-8: {e}"));
    let Some(v) = strict_json(text, what) else {
        return;
    };
    let objects: Vec<&Value> = match &v {
        Value::Array(items) => {
            assert!(!items.is_empty(), "{what}: empty array");
            items.iter().collect()
        }
        other => vec![other],
    };
    for o in objects {
        assert_eq!(
            o.get("jsonrpc").and_then(Value::as_str),
            Some("2.0"),
            "{what}: {v}"
        );
        let got = o
            .get("error")
            .and_then(|e| e.get("code"))
            .and_then(Value::as_i64);
        assert!(got.is_some(), "{what} without an integer error code: {v}");
        if code.is_some() {
            assert_eq!(got, code, "{what}: {v}");
        }
        assert!(
            o.get("error")
                .and_then(|e| e.get("message"))
                .is_some_and(Value::is_string),
            "{what}: {v}"
        );
        assert!(
            matches!(
                o.get("id"),
                Some(Value::String(_) | Value::Number(_) | Value::Null)
            ),
            "{what}: id {v}"
        );
    }
}

/// The input of the `stream` target, decoded.
struct Plan<'a> {
    control: [u8; STREAM_CONTROL_LEN],
    request: &'a [u8],
    response: &'a [u8],
    rng: Rng,
}

impl<'a> Plan<'a> {
    fn decode(data: &'a [u8]) -> Self {
        let mut control = [0u8; STREAM_CONTROL_LEN];
        let (head, rest) = data.split_at(data.len().min(STREAM_CONTROL_LEN));
        for (slot, b) in control.iter_mut().zip(head) {
            *slot = *b;
        }
        let (request, response) = match rest
            .windows(STREAM_SEPARATOR.len())
            .position(|w| w == STREAM_SEPARATOR)
        {
            Some(i) => {
                let (req, resp) = rest.split_at(i);
                (req, resp.get(STREAM_SEPARATOR.len()..).unwrap_or_default())
            }
            None => (rest, &[][..]),
        };
        Plan {
            control,
            request,
            response,
            rng: Rng::from_bytes(&control),
        }
    }
    fn c(&self, i: usize) -> u8 {
        self.control.get(i).copied().unwrap_or(0)
    }
    fn bit(&self, i: usize, bit: u8) -> bool {
        self.c(i) & (1 << bit) != 0
    }
    fn pick<T: Copy>(&self, i: usize, shift: u8, table: &[T]) -> T {
        let n = usize::from(self.c(i) >> shift) % table.len().max(1);
        match table.get(n).or(table.first()) {
            Some(t) => *t,
            None => panic!("empty table"),
        }
    }
    fn chunking(&mut self, selector: u8) -> Chunking {
        let max = CHUNK_MAX
            .get(usize::from(selector) % CHUNK_MAX.len())
            .copied()
            .unwrap_or(0);
        if max == 0 {
            Chunking::Whole
        } else {
            Chunking::Random {
                rng: Rng::new(self.rng.next_u64() | 1),
                max,
            }
        }
    }
}

/// What one HTTP stream does, as Envoy would call the filter.
struct Exchange<'a> {
    method: &'static str,
    agent: Option<&'static str>,
    session: bool,
    forged_tag: bool,
    traceparent: bool,
    routing: &'static [(&'static str, &'static str)],
    /// The request ends at its headers (only when its body is empty).
    headers_eos: bool,
    trailers: bool,
    /// Envoy answers before the request body is complete (after this many chunks).
    early_response: bool,
    request: &'a [u8],
    request_chunking: Chunking,
    status: &'static str,
    content_type: Option<&'static str>,
    response_session: bool,
    response_headers_eos: bool,
    /// The response ends without end_of_stream (upstream reset, client gone, or trailers).
    reset: bool,
    response: &'a [u8],
    response_chunking: Chunking,
    /// A local reply still goes through the response callbacks.
    reply_through_filter: bool,
    code_details: Option<&'static str>,
}

/// Target `stream`: whole [`Stream`]s through the fake host ([`FakeHost`]).
///
/// Input: 8 control bytes, then the request body, then optionally [`STREAM_SEPARATOR`] and the
/// response body. Control bytes: 0: bits 0-1 method (`POST`, `POST`, `GET`, `DELETE`), bits 2-4
/// agent, bit 5 request ends at its headers when the body is empty, bit 6 request trailers,
/// bit 7 Envoy answers before the request body is complete; 1: bits 0-1 policy, bit 2
/// `mcp-session-id` on the request, bit 3 a forged `x-mcp-tool-name`, bit 4 a `traceparent`,
/// bits 6-7 `Mcp-Method`/`Mcp-Name` routing headers, bit 5 a second stream follows: a `GET` server stream of the same session whose SSE body is
/// the response body (correlation through shared data); 2: request chunking; 3: response
/// status (low 4 bits); 4: bits 0-2 content type; 5: bit 0 response ends at its headers, bit 1
/// response ends without end_of_stream, bit 2 `mcp-session-id` on the response, bit 3 the
/// response callbacks still run after a local reply, bits 4-5 Envoy's
/// `response.code_details`; 6: response chunking; 7: seed for chunk sizes.
pub fn stream(data: &[u8]) {
    require_counting();
    let mut plan = Plan::decode(data);
    let config = match Config::from_json(plan.pick::<&str>(1, 0, &POLICIES).as_bytes()) {
        Ok(c) => Rc::new(c),
        Err(e) => panic!("fuzz policy rejected: {e:?}"),
    };
    let first = Exchange {
        method: plan.pick(0, 0, &METHODS),
        agent: plan.pick(0, 2, &AGENTS),
        session: plan.bit(1, 2),
        forged_tag: plan.bit(1, 3),
        traceparent: plan.bit(1, 4),
        routing: plan.pick(1, 6, &ROUTING_HEADERS),
        headers_eos: plan.request.is_empty() && plan.bit(0, 5) && !plan.bit(0, 6),
        trailers: plan.bit(0, 6),
        early_response: plan.bit(0, 7),
        request: plan.request,
        request_chunking: plan.chunking(plan.c(2)),
        status: plan.pick(3, 0, &STATUSES),
        content_type: plan.pick(4, 0, &CONTENT_TYPES),
        response_session: plan.bit(5, 2),
        response_headers_eos: plan.bit(5, 0),
        reset: plan.bit(5, 1),
        response: plan.response,
        response_chunking: plan.chunking(plan.c(6)),
        reply_through_filter: plan.bit(5, 3),
        code_details: plan.pick(5, 4, &CODE_DETAILS),
    };
    let (shared, awaited) =
        run_exchange(&config, &first, SharedStore::default(), &[], &mut plan.rng);
    if plan.bit(1, 5) {
        // The server stream (GET) of the same session, carrying the response body as SSE: the
        // answer to a call POSTed on the first stream may arrive here (correlation).
        let second = Exchange {
            method: "GET",
            session: true,
            forged_tag: false,
            traceparent: false,
            routing: &[],
            headers_eos: true,
            trailers: false,
            early_response: false,
            request: b"",
            request_chunking: Chunking::Whole,
            status: "200",
            content_type: Some("text/event-stream"),
            response_session: false,
            response_headers_eos: false,
            reset: plan.bit(5, 1),
            reply_through_filter: false,
            response_chunking: plan.chunking(plan.c(6) >> 3),
            ..first
        };
        run_exchange(&config, &second, shared, &awaited, &mut plan.rng);
    }
}

/// The oracles' view of the policy for `agent` ([`oracle::Permits`]): `Ok` for what the
/// policy allows, and for `dry_run_deny` (forwarded, and still listed) only when dry-run mode
/// applies to the agent (the policy's own mode or one of its rule sets).
fn permits<'a>(
    config: &'a Config,
    agent: &'a str,
) -> impl Fn(Named<'_>) -> Result<(), String> + 'a {
    move |named| {
        let subject = match named {
            Named::Tool(n) => Subject::Tool(n),
            Named::Prompt(n) => Subject::Prompt(n),
            Named::Resource(n) => Subject::Resource(n),
            Named::Method(m) => Subject::Method(m),
        };
        let policy = &config.policy;
        match policy.decide(agent, subject) {
            Decision::Allow => Ok(()),
            Decision::DryRunDeny
                if policy.mode() == Mode::DryRun
                    || policy
                        .rule_sets(agent)
                        .iter()
                        .any(|s| s.mode == Mode::DryRun) =>
            {
                Ok(())
            }
            Decision::DryRunDeny => Err(format!("dry_run_deny for {agent:?} outside dry-run mode")),
            Decision::Deny => Err(format!(
                "denied for {agent:?}: {}",
                policy.evaluate(agent, subject).rule
            )),
        }
    }
}

/// The configured tag header names, for [`oracle::check_request`].
fn tag_names(config: &Config) -> oracle::TagNames<'_> {
    let h = &config.headers;
    oracle::TagNames {
        agent: &h.agent_id,
        method: &h.method,
        tool: &h.tool_name,
        prompt: &h.prompt_name,
        resource: &h.resource_uri,
    }
}

/// Drives one stream; `awaited` are list requests POSTed on an earlier stream of the session
/// whose answers the client still waits for (they may come on this one). Returns the shared
/// data store for the next stream and the list requests forwarded here whose answers the
/// client still waits for.
fn run_exchange(
    config: &Rc<Config>,
    x: &Exchange<'_>,
    shared: SharedStore,
    awaited: &[ListAsk],
    rng: &mut Rng,
) -> (SharedStore, Vec<ListAsk>) {
    let mut s = Stream::new(Rc::clone(config));
    let mut h = FakeHost::new(shared, 1_795_306_541_000);
    h.upstream_cluster = Some("mcp_fuzz".to_owned());
    h.code_details = x.code_details.map(str::to_owned);

    // --- request headers
    h.add_request_header(":method", x.method);
    h.add_request_header(":path", "/mcp");
    h.add_request_header("x-request-id", "fuzz-req");
    if let Some(agent) = x.agent {
        h.add_request_header("x-agent-id", agent);
    }
    if x.session {
        h.add_request_header("mcp-session-id", "sess-fuzz");
    }
    if x.forged_tag {
        h.add_request_header("x-mcp-tool-name", "forged");
    }
    if x.traceparent {
        h.add_request_header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
    }
    for (name, value) in x.routing {
        h.add_request_header(name, value);
    }
    // The agent the request is from, as the configured identity sources name it (a header
    // counts only when sent once).
    let agent = config
        .identity
        .resolve(|source| match source {
            Source::Header(name) => h
                .request_headers()
                .map_or(Presented::Absent, |headers| headers.presented(name)),
            _ => Presented::Absent,
        })
        .agent_id;
    h.phase = Some(Phase::RequestHeaders);
    let mut action = s.on_request_headers(&mut h, x.headers_eos);
    h.request_released |= action == Action::Continue;

    // --- request body (Envoy buffers while the filter pauses)
    let mut request_ended = x.headers_eos;
    if !x.headers_eos && h.local_reply.is_none() {
        let chunks: Vec<&[u8]> = Chunks::new(x.request, x.request_chunking.clone()).collect();
        let total = chunks.len();
        let cut = if x.early_response {
            rng.below(total + 1)
        } else {
            total
        };
        for (i, chunk) in chunks.into_iter().take(cut).enumerate() {
            h.request_body.extend_from_slice(chunk);
            let eos = i + 1 == total && !x.trailers;
            let size = h.request_body.len();
            h.phase = Some(Phase::RequestBody);
            action = s.on_request_body(&mut h, size, eos);
            h.request_released |= action == Action::Continue;
            h.pass_request(action);
            request_ended = eos;
            if h.local_reply.is_some() {
                break;
            }
        }
        if h.local_reply.is_none() && !x.early_response {
            if x.trailers {
                h.phase = Some(Phase::RequestTrailers);
                action = s.on_request_trailers(&mut h);
                h.request_released |= action == Action::Continue;
                h.pass_request(action);
                request_ended = true;
            } else if total == 0 {
                h.phase = Some(Phase::RequestBody);
                action = s.on_request_body(&mut h, 0, true);
                h.request_released |= action == Action::Continue;
                h.pass_request(action);
                request_ended = true;
            }
        }
    }
    h.phase = Some(Phase::Outside);

    if let Some((status, body)) = h.local_reply.clone() {
        assert_eq!(
            action,
            Action::Pause,
            "a local reply must stop the filter chain"
        );
        assert!(
            status == 200 || (400..=599).contains(&status),
            "local reply status {status}"
        );
        check_error_body(&body, None, "local reply");
        check_audit(h.audit(), "after a local reply");
        let audit = h.audit.clone();
        if x.reply_through_filter {
            // The local reply passes back through the filter's response callbacks.
            h.response_headers
                .insert(":status".into(), status.to_string());
            h.response_headers
                .insert("content-type".into(), "application/json".into());
            h.phase = Some(Phase::ResponseHeaders);
            s.on_response_headers(&mut h, false);
            h.response_started = true;
            h.response_chunk = body;
            let size = h.response_chunk.len();
            h.phase = Some(Phase::ResponseBody);
            s.on_response_body(&mut h, size, true);
            assert!(
                h.replaced_response_body.is_none(),
                "a local reply was rewritten"
            );
        }
        h.phase = Some(Phase::Log);
        s.on_stream_end(&mut h);
        assert_eq!(h.audit, audit, "audit changed after the local reply");
        check_no_violations(&h);
        return (h.shared, Vec::new());
    }
    if !request_ended && !x.early_response {
        // The client never finished its request (no end_of_stream): the stream ends there.
        h.phase = Some(Phase::Log);
        s.on_stream_end(&mut h);
        check_audit(h.audit(), "for a request that never ended");
        check_no_violations(&h);
        return (h.shared, Vec::new());
    }
    if action == Action::Pause && !x.early_response {
        panic!("request ended, filter paused, no local reply: the request would hang");
    }
    // The request went upstream whole: it may name only what the agent may use, and its tags
    // must say what it names (oracle.rs, readers independent of mcp-guard's parser).
    let mut asks: Vec<ListAsk> = Vec::new();
    if h.request_released && request_ended {
        let Some(agent) = agent.as_deref() else {
            panic!("forwarded a request no identity source identified");
        };
        let headers = h.request_headers().unwrap_or_default();
        let forwarded = oracle::Forwarded {
            http_method: x.method,
            headers: headers.pairs(),
            body: &h.upstream,
        };
        asks = oracle::check_request(
            &forwarded,
            agent,
            &tag_names(config),
            &permits(config, agent),
        )
        .unwrap_or_else(|e| panic!("forwarded request: {e}"));
        ORACLE_REQUESTS.with(|n| n.set(n.get() + 1));
    }

    // --- response headers
    h.response_headers.insert(":status".into(), x.status.into());
    if let Some(ct) = x.content_type {
        h.response_headers.insert("content-type".into(), ct.into());
    }
    h.response_headers
        .insert("content-length".into(), x.response.len().to_string());
    if x.response_session {
        h.response_headers
            .insert("mcp-session-id".into(), "sess-upstream".into());
    }
    h.now += 7;
    h.phase = Some(Phase::ResponseHeaders);
    let raction = s.on_response_headers(&mut h, x.response_headers_eos);
    h.phase = Some(Phase::Outside);
    assert_eq!(raction, Action::Continue, "response headers must continue");
    h.response_started = true;
    let is_429 = x.status == "429";
    // Responses mcp-guard may rewrite besides a 429: a curated list response, and the events of
    // a server stream (held back until complete, list responses curated).
    let is_sse = x
        .content_type
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("text/event-stream"));
    let server_stream = x.method != "POST" && is_sse;
    let list_request = ["\"tools/list\"", "\"prompts/list\"", "\"resources/list\""]
        .iter()
        .any(|m| x.request.windows(m.len()).any(|w| w == m.as_bytes()));
    if is_429 && !x.response_headers_eos {
        assert_eq!(
            h.response_headers.get("content-type").map(String::as_str),
            Some("application/json"),
            "a 429 about to be rewritten must be labelled JSON"
        );
        assert!(
            !h.response_headers.contains_key("content-length"),
            "stale content-length on a rewritten 429"
        );
    }
    // A record is written at response headers only when they settle the stream (no body, or a
    // 429); otherwise once the outcome is known, or at the end of the stream (checked below).
    if x.response_headers_eos || is_429 {
        check_audit(
            h.audit(),
            "once the response headers ended the stream or were a 429",
        );
    } else if h.audit().is_some() {
        check_audit(h.audit(), "after the response headers");
    }

    // --- response body
    let mut ended = x.response_headers_eos;
    if !x.response_headers_eos {
        let chunks: Vec<&[u8]> = Chunks::new(x.response, x.response_chunking.clone()).collect();
        let total = chunks.len();
        let mut growth: isize = 0;
        for (i, chunk) in chunks.iter().enumerate() {
            h.response_chunk.extend_from_slice(chunk);
            let eos = i + 1 == total && !x.reset;
            let size = h.response_chunk.len();
            h.now += 1;
            h.phase = Some(Phase::ResponseBody);
            let audit_before = h.audit.capacity();
            let meter = Meter::start();
            let a = s.on_response_body(&mut h, size, eos);
            if !eos {
                // The host's copy of the audit records is not the stream's heap (it was
                // first written here once the outcome was found early).
                let audit_after = h.audit.capacity();
                growth += meter.net() - (audit_after as isize - audit_before as isize);
            }
            h.phase = Some(Phase::Outside);
            h.pass_response(a);
            ended = eos;
        }
        if total == 0 && !x.reset {
            h.phase = Some(Phase::ResponseBody);
            let a = s.on_response_body(&mut h, 0, true);
            h.phase = Some(Phase::Outside);
            h.pass_response(a);
            ended = true;
        }
        let growth = usize::try_from(growth).unwrap_or(0);
        // A server stream holds back an incomplete SSE event for curation (bounded by
        // curation::MAX_HELD_EVENT); a list response is held whole (bounded by Envoy's buffer).
        let bound = if server_stream || list_request {
            STREAM_RESPONSE_HEAP_BOUND + 2 * x.response.len()
        } else {
            STREAM_RESPONSE_HEAP_BOUND
        };
        assert!(
            growth <= bound,
            "the stream kept {growth} more heap bytes over {} response bytes",
            x.response.len()
        );
        note_max(
            &MAX_STREAM_HEAP,
            growth,
            "stream heap growth over response chunks",
        );
    }
    if is_429 && ended && !x.response_headers_eos {
        let body = h
            .replaced_response_body
            .clone()
            .unwrap_or_else(|| panic!("429 body not rewritten"));
        check_error_body(&body, Some(i64::from(RATE_LIMITED)), "rewritten 429 body");
    } else if !is_429 && !server_stream && !list_request {
        assert!(
            h.replaced_response_body.is_none(),
            "a {} response body was rewritten",
            x.status
        );
    }

    // What the client got for a list request (POSTed here, or awaited from an earlier POST):
    // only entries the agent may use, however a client reads it.
    let lists: Vec<ListAsk> = asks.iter().chain(awaited).cloned().collect();
    if let (false, Some(agent)) = (lists.is_empty(), agent.as_deref()) {
        oracle::check_list_response(&h.downstream, &lists, &permits(config, agent))
            .unwrap_or_else(|e| panic!("list response: {e}"));
        ORACLE_LISTS.with(|n| n.set(n.get() + 1));
    }
    // A client still waits for an answer on the session's server stream when the POST's
    // response was a 202 or an SSE stream that did not carry it (Streamable HTTP, resumable).
    let status = x.status.trim().parse::<u16>().ok();
    let waits = x.session && matches!(status, Some(200..=299)) && (status == Some(202) || is_sse);
    let still = if waits {
        oracle::unanswered(&h.downstream, &asks)
    } else {
        Vec::new()
    };

    // --- the stream is over (Envoy's log callback): its records must be there.
    h.phase = Some(Phase::Log);
    s.on_stream_end(&mut h);
    check_audit(h.audit(), "at the end of the stream");
    check_no_violations(&h);
    (h.shared, still)
}

/// Builds a `stream` input (for seed files): control bytes, request, separator, response.
pub fn stream_input(control: [u8; STREAM_CONTROL_LEN], request: &[u8], response: &[u8]) -> Vec<u8> {
    let mut v = control.to_vec();
    v.extend_from_slice(request);
    v.extend_from_slice(STREAM_SEPARATOR);
    v.extend_from_slice(response);
    v
}
