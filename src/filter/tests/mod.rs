//! Stream-level tests against a fake host: the same callbacks Envoy makes, in the same order.

use super::*;
use crate::host::fake::{FakeHost, Phase, Read, Rng, SharedStore};
use crate::host::Headers;
use serde_json::Value;

/// The authorization oracles of the fuzz targets (serde_json readers independent of
/// `crate::jsonrpc`), one copy shared with `fuzz/src/lib.rs`.
#[path = "../../../fuzz/src/oracle.rs"]
#[allow(dead_code)]
mod oracle;

/// proxy-wasm shared data as Envoy keeps it ([`SharedStore`]).
type Shared = SharedStore;

const POLICY: &str = r#"{
  "server_id": "demo-server",
  "policy": {"mode": "enforce", "agents": {
      "demo-agent": {"tools": ["echo", "add", "search", "fail"]},
      "admin-agent": {"tools": ["*"]},
      "default": {"tools": ["echo"]}}}
}"#;

mod annotations;
mod batch;
mod correlation;
mod curation;
mod decide_at_headers;
mod denial;
mod host_reads;
mod identity;
mod listen;
mod metrics;
mod params;
mod pins;
mod request;
mod response;
mod rls;
mod robustness;
mod rounds;
mod versions;

impl FakeHost {
    fn records(&self) -> Vec<Value> {
        std::str::from_utf8(&self.audit)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
    fn reply_json(&self) -> (u32, Value) {
        let (status, body) = self.local_reply.clone().expect("a local reply");
        (status, serde_json::from_slice(&body).unwrap())
    }
}

fn stream(policy: &str) -> Stream {
    Stream::new(Rc::new(Config::from_json(policy.as_bytes()).unwrap()))
}

fn post(agent: Option<&str>, body: &str) -> FakeHost {
    let mut h = FakeHost::new(Shared::default(), 1_795_306_541_000);
    h.request_headers.insert(":method".into(), "POST".into());
    h.request_headers.insert(":path".into(), "/mcp".into());
    h.request_headers
        .insert("x-request-id".into(), "req-1".into());
    if let Some(a) = agent {
        h.request_headers.insert("x-agent-id".into(), a.into());
    }
    h.request_body = body.as_bytes().to_vec();
    h
}

/// Runs the request side; returns the action of the final request callback.
fn send_request(s: &mut Stream, h: &mut FakeHost) -> Action {
    let headers = in_phase(h, Phase::RequestHeaders, |h| s.on_request_headers(h, false));
    assert_eq!(headers, Action::Pause);
    let len = h.request_body.len();
    // Two chunks, as Envoy would deliver them while buffering.
    let first = in_phase(h, Phase::RequestBody, |h| {
        s.on_request_body(h, len / 2, false)
    });
    assert_eq!(first, Action::Pause);
    in_phase(h, Phase::RequestBody, |h| s.on_request_body(h, len, true))
}

/// Runs one callback with the fake host told which one it is, so that a hostcall Envoy fails
/// in that callback is a test failure (the phase rules of the fuzz target); direct calls
/// outside these helpers run unchecked.
fn in_phase<R>(h: &mut FakeHost, phase: Phase, callback: impl FnOnce(&mut FakeHost) -> R) -> R {
    h.phase = Some(phase);
    let result = callback(h);
    h.phase = None;
    let violations = h.violations();
    assert!(
        violations.is_empty(),
        "hostcalls in the wrong phase: {violations:?}"
    );
    result
}

fn respond(s: &mut Stream, h: &mut FakeHost, status: &str, content_type: &str, chunks: &[&[u8]]) {
    h.response_headers.insert(":status".into(), status.into());
    h.response_headers
        .insert("content-type".into(), content_type.into());
    let headers = in_phase(h, Phase::ResponseHeaders, |h| {
        s.on_response_headers(h, false)
    });
    assert_eq!(headers, Action::Continue);
    h.now += 12;
    for (i, chunk) in chunks.iter().enumerate() {
        h.response_chunk = chunk.to_vec();
        let end = i + 1 == chunks.len();
        in_phase(h, Phase::ResponseBody, |h| {
            s.on_response_body(h, chunk.len(), end)
        });
    }
}

const CALL_ECHO: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;

/// The scenario the cross-stream tests share: one policy and one shared store, the VM's
/// shared data as every worker sees it, from which the POSTs and the GET server stream of a
/// session are made (each its own stream on its own worker).
struct Scenario {
    policy: String,
    shared: Shared,
}

impl Scenario {
    fn new(policy: &str) -> Self {
        Scenario {
            policy: policy.to_owned(),
            shared: Shared::default(),
        }
    }

    /// A POST from `agent` with `body` (to `/mcp`), on this scenario's store.
    fn post(&self, agent: Option<&str>, body: &str) -> (Stream, FakeHost) {
        let mut h = post(agent, body);
        h.shared = Rc::clone(&self.shared);
        (stream(&self.policy), h)
    }

    /// A legacy HTTP+SSE POST to `/messages/?session_id=<session>`.
    fn legacy_post(&self, session: &str, agent: Option<&str>, body: &str) -> (Stream, FakeHost) {
        let (s, mut h) = self.post(agent, body);
        h.request_headers
            .insert(":path".into(), format!("/messages/?session_id={session}"));
        (s, h)
    }

    /// A GET server stream whose response headers (200, SSE) have gone through.
    fn get(&self, path: &str, session: Option<&str>) -> (Stream, FakeHost) {
        get_stream(&self.policy, &self.shared, path, session)
    }

    /// The legacy GET /sse stream, after its `endpoint` event named `session`.
    fn legacy_get(&self, session: &str) -> (Stream, FakeHost) {
        let (mut get, mut gh) = self.get("/sse", None);
        let endpoint = format!("event: endpoint\r\ndata: /messages/?session_id={session}\r\n\r\n");
        stream_chunk(&mut get, &mut gh, endpoint.as_bytes(), false);
        (get, gh)
    }
}

/// A GET server stream on another worker: `policy`, the shared data `shared`, its own
/// stream state; its response headers (200, SSE) have gone through.
fn get_stream(
    policy: &str,
    shared: &Shared,
    path: &str,
    session: Option<&str>,
) -> (Stream, FakeHost) {
    let mut h = FakeHost::new(Rc::clone(shared), 1_795_306_542_000);
    h.request_headers.insert(":method".into(), "GET".into());
    h.request_headers.insert(":path".into(), path.into());
    h.request_headers
        .insert("x-agent-id".into(), "demo-agent".into());
    if let Some(id) = session {
        h.request_headers.insert("mcp-session-id".into(), id.into());
    }
    let mut s = stream(policy);
    let request = in_phase(&mut h, Phase::RequestHeaders, |h| {
        s.on_request_headers(h, true)
    });
    assert_eq!(request, Action::Continue);
    h.response_headers.insert(":status".into(), "200".into());
    h.response_headers
        .insert("content-type".into(), "text/event-stream".into());
    let response = in_phase(&mut h, Phase::ResponseHeaders, |h| {
        s.on_response_headers(h, false)
    });
    assert_eq!(response, Action::Continue);
    (s, h)
}

fn stream_chunk(s: &mut Stream, h: &mut FakeHost, chunk: &[u8], end: bool) {
    h.response_chunk = chunk.to_vec();
    in_phase(h, Phase::ResponseBody, |h| {
        s.on_response_body(h, chunk.len(), end)
    });
}

/// The request side with `hold_request_headers: false`: the headers go on at once, the body is
/// held until its end; returns the action of the final body callback.
fn send_request_unheld(s: &mut Stream, h: &mut FakeHost) -> Action {
    assert_eq!(s.on_request_headers(h, false), Action::Continue);
    let len = h.request_body.len();
    assert_eq!(s.on_request_body(h, len / 2, false), Action::Pause);
    s.on_request_body(h, len, true)
}

const EARLY_POLICY: &str = r#"{
  "server_id": "demo-server",
  "decide_at_headers": true,
  "max_body_bytes": 4096,
  "policy": {"agents": {"demo-agent": {"tools": ["echo"]}}}
}"#;

/// A POST as an MCP 2026-07-28 client sends it: the version header, `Mcp-Method` (and
/// `Mcp-Name`), and the `_meta` envelope in the body ([`modern_body`]).
fn routed(agent: &str, method: &str, name: Option<&str>, body: &str) -> FakeHost {
    let mut h = post(Some(agent), &modern_body(body));
    h.request_headers
        .insert("mcp-protocol-version".into(), MODERN.into());
    h.request_headers.insert("mcp-method".into(), method.into());
    if let Some(name) = name {
        h.request_headers.insert("mcp-name".into(), name.into());
    }
    h
}

/// The MCP 2026-07-28 revision.
const MODERN: &str = "2026-07-28";

/// `body` (one JSON-RPC message) with the 2026-07-28 `_meta` envelope in its `params`
/// (created when absent); a body that is not a JSON object is returned as it is.
fn modern_body(body: &str) -> String {
    let Ok(Value::Object(mut message)) = serde_json::from_str::<Value>(body) else {
        return body.to_owned();
    };
    let params = message
        .entry("params")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Value::Object(params) = params {
        params.insert(
            "_meta".into(),
            serde_json::json!({
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            }),
        );
    }
    Value::Object(message).to_string()
}

/// demo-agent's `tools/list` (id 5) forwarded, and a response with `headers` (`:status` first)
/// arriving: the stream, the host, and the action of the response-headers callback.
fn list_answered(headers: &[(&str, &str)]) -> (Stream, FakeHost, Action) {
    const LIST_REQUEST: &str = r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#;
    let mut s = stream(POLICY);
    let mut h = post(Some("demo-agent"), LIST_REQUEST);
    assert_eq!(send_request(&mut s, &mut h), Action::Continue);
    for (name, value) in headers {
        if h.response_headers.contains_key(*name) {
            h.repeated_response_headers
                .entry((*name).to_owned())
                .or_default()
                .push((*value).to_owned());
        } else {
            h.response_headers.insert((*name).into(), (*value).into());
        }
    }
    let action = s.on_response_headers(&mut h, false);
    (s, h, action)
}

/// The body the client got after `chunks` (the last one ends the stream); Envoy hands a held
/// body back whole, so the last chunk is the whole body when the filter held it.
fn client_body(s: &mut Stream, h: &mut FakeHost, chunks: &[&[u8]]) -> Vec<u8> {
    let mut got = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        h.response_chunk = chunk.to_vec();
        h.replaced_response_body = None;
        let end = i + 1 == chunks.len();
        let action = in_phase(h, Phase::ResponseBody, |h| {
            s.on_response_body(h, chunk.len(), end)
        });
        if action == Action::Continue {
            got.extend(
                h.replaced_response_body
                    .clone()
                    .unwrap_or_else(|| chunk.to_vec()),
            );
        }
    }
    got
}

/// The client got a JSON-RPC -32603 for id 5 and no denied tool; audited and counted as `reason`.
fn assert_refused(h: &FakeHost, body: &[u8], status: u32, reason: &str) {
    let text = String::from_utf8_lossy(body);
    assert!(!text.contains("delete_repo"), "{text}");
    let doc = text.strip_prefix("event: message\ndata: ").unwrap_or(&text);
    let v: Value = serde_json::from_str(doc.trim_end()).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(
        (v["id"].clone(), v["error"]["code"].clone()),
        (5.into(), INTERNAL_ERROR.into()),
        "{text}"
    );
    let r = h.records();
    assert_eq!(r.len(), 1);
    assert_eq!(
        (
            r[0]["method"].as_str(),
            r[0]["output_status"].as_str(),
            r[0]["error_code"].as_i64(),
            r[0]["http_status"].as_u64()
        ),
        (
            Some("tools/list"),
            Some("upstream_error"),
            Some(i64::from(INTERNAL_ERROR)),
            Some(u64::from(status))
        ),
    );
    assert_eq!(r[0]["refusal"], reason);
    assert_eq!(
        h.counters[&format!("mcp_guard.refusals.reason.{reason}")],
        1,
        "{:?}",
        h.counters
    );
}

const DENIED_LIST: &[u8] =
    br#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"echo"},{"name":"delete_repo"}]}}"#;
