//! The per-stream filter logic: what mcp-guard does at each HTTP callback, expressed against a
//! small [`Host`] trait so it runs natively in tests. The proxy-wasm HTTP context
//! (`crate::wasm`) only forwards callbacks here.
//!
//! Request path (MCP Streamable HTTP, spec "Transports"):
//! 1. Request headers: resolve the agent identity, remove client-sent copies of every tag
//!    header, set the agent tag. A POST pauses (Envoy's Wasm `allow_on_headers_stop_iteration`
//!    must be true) until its whole body is buffered.
//! 2. End of body (or trailers): parse the JSON-RPC body, evaluate policy for every message.
//!    Malformed → HTTP 400 with the JSON-RPC code. Denied → HTTP 200 `application/json` with
//!    a JSON-RPC error per request ([`DENIED`]). Otherwise set the tags and continue, so that
//!    rate-limit filters after mcp-guard see them.
//!
//! With `decide_at_headers`, a POST whose routing headers name something the policy allows is
//! decided and tagged in step 1; its body streams to the upstream (a copy is kept) and step 2
//! refuses it, before its last chunk, if it fails any check.
//!
//! With `hold_request_headers: false` (hosts without `allow_on_headers_stop_iteration`), step 1
//! lets the headers go on and step 2 holds only the body; no body-derived tag is set. With a
//! `rate_limit_service`, an allowed body waits for the RLS's answer (`crate::ratelimit`) before
//! it is forwarded: over the limit → HTTP 429 with a JSON-RPC error ([`RATE_LIMITED`]) and
//! `Retry-After`.
//!
//! Response path: a 429 (Envoy's local rate limit reply, or an upstream's) becomes a JSON-RPC
//! error body ([`RATE_LIMITED`]) carrying the request ids; JSON and SSE bodies are scanned
//! incrementally to find each request's response and its outcome.
//!
//! Audit: the records are written to filter state once the outcome is known (mcp-guard's
//! reply, a 429, the matching response, the end of the response), and a stream cut short is
//! settled and written by [`Stream::on_stream_end`] (Envoy's log callback, which runs before
//! the access log reads the filter state).

use crate::annotations;
use crate::audit::{self, Call, OutputStatus, StreamFacts};
use crate::config::Config;
use crate::correlation::{self, Pending};
use crate::curation::{self, Claimed, Curation, ListKind, Rewrite, Unreadable};
use crate::host::{Action, Host, ReadError};
use crate::identity::{self, IdentityError, Presented, Source};
use crate::jsonrpc::{self, Body, Id, Kind, Message, ParseError};
use crate::metrics::Metric;
use crate::policy::{Decision, Mode, Policy, Subject};
use crate::ratelimit::{self, Verdict};
use crate::response::{BodyKind, Correlator, Outcome, ResponseScanner, Summary};
use crate::routing;
use std::rc::Rc;

/// JSON-RPC error code for a call refused by policy. JSON-RPC 2.0 §5.1 leaves -32000..-32099
/// to implementations; MCP 2026-07-28 keeps -32000..-32019 implementation-defined and reserves
/// -32020 onwards for the specification. The SDKs use -32000 (connection closed) and -32001
/// (request timeout), and -32002 is retired, so a denial uses -32003 and cannot be mistaken for
/// a timeout (which an agent might retry).
pub const DENIED: i32 = -32003;
/// JSON-RPC error code for a call refused by a rate limiter (HTTP 429), same band.
pub const RATE_LIMITED: i32 = -32004;
/// JSON-RPC internal error (JSON-RPC 2.0 §5.1): the filter has no valid configuration, an
/// identity source could not be read, or the rate limit service could not be asked under
/// `failure_mode_deny`.
pub const INTERNAL_ERROR: i32 = -32603;
/// JSON-RPC error code when the filter has no valid configuration.
pub const NOT_CONFIGURED: i32 = INTERNAL_ERROR;
/// HTTP status for a request body with a `content-encoding` (RFC 9110 §15.5.16).
pub const UNSUPPORTED_MEDIA_TYPE: u32 = 415;
/// Largest piece of a response chunk read into the VM at once by the scanner, in bytes.
pub const SCAN_PIECE: usize = 64 * 1024;
/// HTTP status for a request no identity source identified, under `unidentified: reject`.
pub const UNAUTHORIZED: u32 = 401;
/// HTTP status for a request whose identity source could not be read (RFC 9110 §15.6.1),
/// with [`INTERNAL_ERROR`].
pub const INTERNAL_SERVER_ERROR: u32 = 500;
/// HTTP status for a response mcp-guard had to read and could not (RFC 9110 §15.6.3).
pub const BAD_GATEWAY: u32 = 502;

/// Whether a message is a call: a request, or any message naming a tool, prompt or resource
/// (a `tools/call` sent as a notification still names a tool a lax server might run).
fn is_call(m: &Message<'_>) -> bool {
    matches!(m.kind, Kind::Request(_))
        || m.tool_name.is_some()
        || m.prompt_name.is_some()
        || m.resource_uri.is_some()
}

/// Whether every message with a method in a batch has the same method and the same tool,
/// prompt or resource name, so that one set of tags describes every call in it.
fn uniform(messages: &[Message<'_>]) -> bool {
    let mut with_method = messages.iter().filter(|m| m.method.is_some());
    let Some(first) = with_method.next() else {
        return true;
    };
    with_method.all(|m| {
        m.method == first.method
            && m.tool_name == first.tool_name
            && m.prompt_name == first.prompt_name
            && m.resource_uri == first.resource_uri
    })
}

/// The state of one HTTP stream.
#[derive(Debug)]
pub struct Stream {
    config: Rc<Config>,
    facts: StreamFacts,
    calls: Vec<Call>,
    is_post: bool,
    /// `Mcp-Method` / `Mcp-Name` request headers (MCP 2026-07-28), raw.
    routing_headers: routing::RoutingHeaders,
    /// The response is a server stream (GET) whose responses are correlated to POSTs.
    correlating: bool,
    /// The session came from the POST URI (legacy HTTP+SSE): responses come on the GET stream,
    /// so forwarded requests are stored for correlation as they are forwarded.
    legacy_session: bool,
    response_kind: BodyKind,
    awaiting_body: bool,
    body_size: usize,
    replied: bool,
    rate_limited: bool,
    finished: bool,
    correlator: Correlator,
    scanner: Option<ResponseScanner>,
    /// A list request whose response is held and curated: its kind and request ids.
    curate: Option<(ListKind, Vec<Id>)>,
    /// The response body is being held for [`Stream::curate`].
    holding: bool,
    /// Calls refused by the annotations rule (for the denial metrics).
    annotation_denials: usize,
    /// A server stream's incomplete trailing SSE event, held back for curation.
    sse_hold: Vec<u8>,
    /// The first complete bytes of a curated server stream have been passed on (and a leading
    /// byte order mark removed from them).
    sse_started: bool,
    /// The token of the RLS call the request is waiting for.
    rls_call: Option<u32>,
    /// `decide_at_headers`: the request was decided and tagged from its routing headers and its
    /// body streams to the upstream; `streamed` keeps the chunks already passed on.
    streaming: bool,
    streamed: Vec<u8>,
    /// A response that had to be curated was refused from its headers (why): its body is
    /// swallowed and a JSON-RPC error takes its place ([`Stream::refuse_response`]).
    refused: Option<Unreadable>,
    /// A `202 Accepted` to a list request: its body (the legacy transport's `Accepted`) is no
    /// answer, and is dropped unread.
    discard_body: bool,
}

impl Stream {
    /// A new stream under `config`.
    pub fn new(config: Rc<Config>) -> Self {
        Stream {
            config,
            facts: StreamFacts::default(),
            calls: Vec::new(),
            is_post: false,
            routing_headers: routing::RoutingHeaders::default(),
            correlating: false,
            legacy_session: false,
            response_kind: BodyKind::Other,
            awaiting_body: false,
            body_size: 0,
            replied: false,
            rate_limited: false,
            finished: false,
            correlator: Correlator::default(),
            scanner: None,
            curate: None,
            holding: false,
            annotation_denials: 0,
            sse_hold: Vec::new(),
            sse_started: false,
            rls_call: None,
            streaming: false,
            streamed: Vec::new(),
            refused: None,
            discard_body: false,
        }
    }

    /// Request headers callback.
    pub fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action {
        let config = Rc::clone(&self.config);
        self.facts.start_ms = host.now_ms();
        self.facts.policy_name = config.policy.name.clone();
        self.facts.policy_version = config.policy.version.clone();
        let Ok(headers) = host.request_headers() else {
            return self.refuse_unread(host, "request headers");
        };
        self.facts.http_method = headers.first(":method").unwrap_or_default().to_owned();
        let resolved = config.identity.resolve(|source| match source {
            Source::Header(name) => headers.presented(name),
            _ => match source.property_path().map(|path| host.property(&path)) {
                Some(Ok(Some(value))) => Presented::Value(value),
                Some(Ok(None)) | None => Presented::Absent,
                Some(Err(ReadError)) => Presented::Unreadable,
            },
        });
        self.facts.identity_source = resolved.source;
        self.facts.identity_error = resolved.error;
        // Streamable HTTP: the Mcp-Session-Id header. Legacy HTTP+SSE: the POST URI's
        // sessionId / session_id query parameter.
        self.facts.session_id = headers.first("mcp-session-id").map(str::to_owned);
        if self.facts.session_id.is_none() {
            self.facts.session_id = headers
                .first(":path")
                .and_then(correlation::session_from_uri);
            self.legacy_session = self.facts.session_id.is_some();
        }
        self.facts.trace_id = headers
            .first("traceparent")
            .and_then(audit::trace_id_from_traceparent)
            .or_else(|| headers.first("x-request-id"))
            .map(str::to_owned);
        self.facts.server_id = config
            .server_id
            .clone()
            .or_else(|| host.upstream_cluster())
            .unwrap_or_else(|| "unknown".to_owned());

        // Client-sent copies of the tags go. The agent tag is replaced below; a replace may
        // leave further copies of a repeated header (Envoy's `setCopy` without the runtime
        // feature `http_set_copy_replace_all_headers`), so a repeated one is removed first.
        for name in config.headers.all() {
            let present = if name == config.headers.agent_id {
                headers.only(name).is_none() && headers.has(name)
            } else {
                headers.has(name)
            };
            if present {
                host.set_request_header(name, None);
            }
        }
        // The response must be readable to learn each call's outcome: ask the server for an
        // uncompressed body. (Envoy's compressor filter, placed before mcp-guard, has already
        // read the client's Accept-Encoding and compresses for the client on the way back.)
        if headers.only("accept-encoding") != Some("identity") {
            host.set_request_header("accept-encoding", Some("identity"));
        }
        if resolved.error == Some(IdentityError::Unreadable) {
            // A source could not be read: fail closed, whatever the fallback. "Could not read
            // it" is not "nothing there".
            self.facts.agent_id = identity::UNIDENTIFIED.to_owned();
            let mut call = Call::bare(Decision::Deny);
            call.output_status = Some(OutputStatus::Denied);
            call.error_code = Some(i64::from(INTERNAL_ERROR));
            self.calls = vec![call];
            host.count(Metric::Denial("identity_unreadable"), 1);
            self.count_calls(host);
            let message = "Internal error: mcp-guard could not read an identity source";
            let body = jsonrpc::error_response(None, INTERNAL_ERROR, message);
            return self.reply(host, INTERNAL_SERVER_ERROR, body.as_bytes());
        }
        let Some(agent_id) = resolved.agent_id else {
            // No source identified the request and the configuration rejects such requests.
            self.facts.agent_id = identity::UNIDENTIFIED.to_owned();
            let mut call = Call::bare(Decision::Deny);
            call.output_status = Some(OutputStatus::Denied);
            call.error_code = Some(i64::from(DENIED));
            self.calls = vec![call];
            host.count(Metric::Denial("unidentified"), 1);
            self.count_calls(host);
            let body = jsonrpc::error_response(None, DENIED, "Unauthorized: no agent identity");
            return self.reply(host, UNAUTHORIZED, body.as_bytes());
        };
        // The agent tag: left alone when the client's one copy already is the identity (a
        // replace costs a hostcall and a route-cache clear in Envoy), replaced otherwise.
        if headers.only(&config.headers.agent_id) != Some(agent_id.as_str()) {
            host.set_request_header(&config.headers.agent_id, Some(&agent_id));
        }
        self.facts.agent_id = agent_id;

        if !end_of_stream && headers.encoded() {
            // The filter reads bodies as sent; a compressed one cannot be examined (and must
            // not pass unexamined). Envoy's decompressor filter, placed before mcp-guard,
            // removes the header and inflates the body.
            let message = "Invalid Request: the request body has a content-encoding; \
                           mcp-guard examines only identity-encoded bodies";
            let code = jsonrpc::INVALID_REQUEST;
            return self.refuse_with(host, UNSUPPORTED_MEDIA_TYPE, None, None, code, message);
        }

        self.is_post = self.facts.http_method == "POST";
        if self.is_post {
            self.routing_headers = routing::RoutingHeaders {
                method: headers.values(routing::MCP_METHOD),
                name: headers.values(routing::MCP_NAME),
            };
            if end_of_stream {
                let (code, message) = (jsonrpc::PARSE_ERROR, "Parse error: empty body");
                return self.refuse_with(host, 400, None, None, code, message);
            }
            self.awaiting_body = true;
            if self.decided_at_headers(host) {
                self.streaming = true;
                return Action::Continue;
            }
            return self.hold_headers();
        }
        // GET (server stream), DELETE (end session) and other methods pass through, audited.
        self.calls.push(Call::bare(Decision::Allow));
        if end_of_stream {
            Action::Continue
        } else {
            // Only a POST may carry JSON-RPC; look at any other body before forwarding it.
            self.awaiting_body = true;
            self.hold_headers()
        }
    }

    /// `decide_at_headers`: whether the routing headers (one `Mcp-Method`, and one `Mcp-Name`
    /// for a method that names a tool, prompt or resource) name something the policy lets this
    /// agent use; if so, the tags are set from them now. Anything else (no or repeated headers,
    /// an undecodable value, a refusal, a `tools/call` under the annotations rule, which needs
    /// the shared store) leaves the request to the body.
    fn decided_at_headers(&mut self, host: &mut dyn Host) -> bool {
        let config = Rc::clone(&self.config);
        if !config.decide_at_headers {
            return false;
        }
        let [method] = self.routing_headers.method.as_slice() else {
            return false;
        };
        let Some(method) = routing::decode_value(method) else {
            return false;
        };
        let named = matches!(
            method.as_str(),
            jsonrpc::TOOLS_CALL | jsonrpc::PROMPTS_GET | jsonrpc::RESOURCES_READ
        );
        let name = match (named, self.routing_headers.name.as_slice()) {
            (false, _) => None,
            (true, [one]) => match routing::decode_value(one) {
                Some(name) => Some(name),
                None => return false,
            },
            (true, _) => return false,
        };
        if method == jsonrpc::TOOLS_CALL && config.annotations.is_some() {
            return false;
        }
        let Some(subject) = Subject::of(Some(&method), name.as_deref()) else {
            return false;
        };
        if config.policy.decide(&self.facts.agent_id, subject).blocks() {
            return false; // refused with the request's id, once the body is read
        }
        for (tag, value) in config.headers.for_call(&method, name.as_deref()) {
            host.set_request_header(tag, Some(&value));
        }
        true
    }

    /// What the request-headers callback returns for a request whose body is to be examined:
    /// pause (the body callbacks then see the body buffered, and tags can still be set), or,
    /// with `hold_request_headers: false`, continue (the body callbacks hold the body).
    fn hold_headers(&self) -> Action {
        if self.config.hold_request_headers {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    /// The answer to a gRPC call this stream started: `status` is the gRPC status (0: OK),
    /// `message` the response message. Only the pending RLS call is expected; anything else
    /// is ignored.
    ///
    /// OK from the RLS → the request is forwarded. `OVER_LIMIT` → HTTP 429 with a JSON-RPC
    /// error per request ([`RATE_LIMITED`]) and `Retry-After`. No usable answer (an error
    /// status such as UNAVAILABLE or DEADLINE_EXCEEDED, or an unreadable message) → refused
    /// with HTTP 500 under `failure_mode_deny`, forwarded otherwise.
    pub fn on_grpc_response(
        &mut self,
        host: &mut dyn Host,
        token: u32,
        status: u32,
        message: Option<&[u8]>,
    ) {
        if self.rls_call != Some(token) || self.finished {
            return;
        }
        self.rls_call = None;
        let verdict = if status == 0 {
            ratelimit::verdict(message.unwrap_or_default())
        } else {
            Err(format!("gRPC status {status}"))
        };
        match verdict {
            Ok(Verdict::Allow) => self.forward(host),
            Ok(Verdict::OverLimit { retry_after_s }) => {
                self.settle_rate_limited(host);
                let body = self.rate_limited_body();
                let retry_after = retry_after_s.to_string();
                self.reply_with(
                    host,
                    429,
                    &[("retry-after", retry_after.as_str())],
                    body.as_bytes(),
                );
            }
            Err(why) => {
                if !self.rls_failed(host, &why) {
                    self.forward(host);
                }
            }
        }
    }

    /// A rate limiter refused the request (Envoy's or the upstream's 429, or the RLS mcp-guard
    /// asked): every call not yet settled is `rate_limited`, and counted.
    fn settle_rate_limited(&mut self, host: &mut dyn Host) {
        host.count(Metric::RateLimited, self.calls.len().max(1) as u64);
        for call in self.calls.iter_mut().filter(|c| c.output_status.is_none()) {
            call.output_status = Some(OutputStatus::RateLimited);
            call.error_code = Some(i64::from(RATE_LIMITED));
        }
    }

    /// The JSON-RPC error body of a 429 ([`RATE_LIMITED`] per request).
    fn rate_limited_body(&self) -> String {
        self.error_body(RATE_LIMITED, |_| {
            "Rate limited: too many requests, retry later".to_owned()
        })
    }

    /// The RLS could not be asked or did not answer usably: under `failure_mode_deny`, refuse
    /// (HTTP 500, JSON-RPC internal error) and return true; else return false (forward it).
    fn rls_failed(&mut self, host: &mut dyn Host, why: &str) -> bool {
        log::warn!("mcp-guard: rate limit service: {why}");
        host.count(Metric::RlsError, 1);
        let deny = self
            .config
            .rate_limit_service
            .as_ref()
            .is_some_and(|r| r.failure_mode_deny);
        if !deny {
            return false;
        }
        for call in &mut self.calls {
            call.output_status = Some(OutputStatus::UpstreamError);
            call.error_code = Some(i64::from(INTERNAL_ERROR));
        }
        let body = self.error_body(INTERNAL_ERROR, |_| {
            "Internal error: the rate limit service is unavailable".to_owned()
        });
        self.reply(host, 500, body.as_bytes());
        true
    }

    /// Lets a request that waited for the RLS go on.
    fn forward(&mut self, host: &mut dyn Host) {
        self.forwarded(host);
        host.resume_request();
    }

    /// Request body callback; `body_size` is the size buffered so far.
    pub fn on_request_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        if !self.awaiting_body {
            return Action::Continue;
        }
        self.body_size = body_size;
        // Buffered, `body_size` is the whole body so far; streamed, this chunk after the rest.
        let seen = self.streamed.len().saturating_add(body_size);
        if seen > self.config.max_body_bytes {
            self.awaiting_body = false;
            let message = format!(
                "Invalid Request: body exceeds {} bytes",
                self.config.max_body_bytes
            );
            return self.refuse_with(host, 413, None, None, jsonrpc::INVALID_REQUEST, &message);
        }
        if end_of_stream {
            self.decide(host)
        } else if self.streaming {
            // Passed on now; kept for the check at the end of the body.
            match host.request_body(body_size) {
                Ok(chunk) => self.streamed.extend_from_slice(&chunk.unwrap_or_default()),
                Err(ReadError) => return self.refuse_unread(host, "request body"),
            }
            Action::Continue
        } else {
            Action::Pause
        }
    }

    /// Request trailers callback: with HTTP/2 trailers the body callback never sees
    /// `end_of_stream`, so the decision is made here.
    pub fn on_request_trailers(&mut self, host: &mut dyn Host) -> Action {
        if self.streaming {
            self.body_size = 0; // every chunk is in `streamed`
        }
        if self.awaiting_body {
            self.decide(host)
        } else {
            Action::Continue
        }
    }

    /// Response headers callback.
    pub fn on_response_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action {
        if self.replied {
            return Action::Continue;
        }
        let Ok(headers) = host.response_headers() else {
            return self.response_headers_unread(host, end_of_stream);
        };
        let status = headers
            .first(":status")
            .and_then(|s| s.trim().parse::<u32>().ok());
        self.facts.http_status = status;
        if self.awaiting_body {
            // Envoy answered before the body was complete (for example its own 413 at the
            // buffer limit): mcp-guard never examined the request and it was not forwarded.
            // Record that, settled from the status.
            self.awaiting_body = false;
            let mut call = Call::bare(Decision::Deny);
            call.output_status = match status {
                Some(429) => None, // settled as rate_limited below
                Some(400..=499) => Some(OutputStatus::InvalidRequest),
                _ => Some(OutputStatus::UpstreamError),
            };
            self.calls = vec![call];
        }
        if self.facts.session_id.is_none() {
            self.facts.session_id = headers.first("mcp-session-id").map(str::to_owned);
        }
        if status == Some(429) {
            self.rate_limited = true;
            self.settle_rate_limited(host);
            if !end_of_stream {
                host.set_response_header("content-type", Some("application/json"));
                host.set_response_header("content-length", None);
            }
            self.write_audit(host);
            return Action::Continue;
        }
        self.response_kind = BodyKind::from_content_type(headers.first("content-type"));
        // A list response to be curated (held whole for a POST, event by event on a server
        // stream) must be read; one that cannot be must not reach the client unread.
        if self.config.curate_lists && self.is_post && self.curate.is_some() && !end_of_stream {
            if status == Some(202) {
                // Accepted: the answer comes on another stream (legacy HTTP+SSE); this body is
                // none, and no SDK reads it. Dropped, so that no reader finds a list in it.
                self.discard_body = true;
                host.set_response_header("content-length", None);
                return Action::Continue;
            }
            match curation::curatable_kind(&headers.values("content-type"), headers.encoded()) {
                Ok(kind) => self.response_kind = kind,
                Err(why) => return self.refuse_response(host, why, status, end_of_stream),
            }
        } else if self.config.curate_lists
            && !self.is_post
            && self.response_kind == BodyKind::EventStream
            && headers.encoded()
        {
            return self.refuse_response(host, Unreadable::Encoding, status, end_of_stream);
        }
        if self.is_post && !self.correlator.complete() && self.response_kind != BodyKind::Other {
            self.scanner = Some(ResponseScanner::new(self.response_kind));
            if self.curate.is_some() && !end_of_stream {
                // The list is rewritten whole at the end of the body: its length changes.
                self.holding = true;
                host.set_response_header("content-length", None);
            }
        } else if !self.is_post && self.response_kind == BodyKind::EventStream {
            // A server stream (Streamable HTTP GET, legacy GET /sse): responses to requests
            // POSTed on other streams can arrive here. The legacy `endpoint` event (not JSON)
            // names the session.
            self.correlating = true;
            self.scanner = Some(ResponseScanner::with_text_events(self.response_kind));
        }
        // No record yet when the body follows: it is written once the outcome is known, or
        // by on_stream_end (the log callback) for a stream that ends without one.
        if end_of_stream {
            self.finish(host);
        }
        Action::Continue
    }

    /// Response body callback; `body_size` is the size of this chunk (or of the buffered body
    /// after a pause).
    pub fn on_response_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        if self.replied || self.finished {
            return Action::Continue;
        }
        if self.discard_body {
            host.set_response_body(body_size, b"");
            if end_of_stream {
                self.finish(host);
            }
            return Action::Continue;
        }
        if let Some(why) = self.refused {
            // Swallowed chunk by chunk, so memory stays constant however long the stream; the
            // error takes the place of the last chunk.
            let body = if end_of_stream {
                self.error_body(INTERNAL_ERROR, |_| why.message().to_owned())
            } else {
                String::new()
            };
            host.set_response_body(body_size, body.as_bytes());
            if end_of_stream {
                self.finish(host);
            }
            return Action::Continue;
        }
        if self.rate_limited {
            if !end_of_stream {
                return Action::Pause; // buffer the (small) 429 body, then replace it whole
            }
            let body = self.rate_limited_body();
            host.set_response_body(body_size, body.as_bytes());
            self.finished = true;
            return Action::Continue;
        }
        if self.correlating {
            if body_size > 0 || (end_of_stream && !self.sse_hold.is_empty()) {
                self.correlate(host, body_size, end_of_stream);
            }
            if end_of_stream {
                self.scanner = None;
                self.finish(host);
            }
            return Action::Continue;
        }
        if self.holding {
            if !end_of_stream {
                return Action::Pause; // Envoy buffers the list response until its end
            }
            self.curate_held(host, body_size);
            self.finish(host);
            return Action::Continue;
        }
        if let Some(scanner) = self.scanner.as_mut() {
            if body_size > 0 {
                // In pieces: a large chunk (Envoy hands on up to ~1 MiB at once) is scanned
                // while each piece is still in cache, the VM never holds more than one piece,
                // and reading stops once every response has been seen.
                let mut start = 0;
                let mut unread = false;
                while start < body_size && !self.correlator.complete() {
                    let len = (body_size - start).min(SCAN_PIECE);
                    let piece = match host.response_body(start, len) {
                        Ok(Some(piece)) => piece,
                        Ok(None) => break,
                        Err(ReadError) => {
                            unread = true;
                            break;
                        }
                    };
                    scanner.feed(&piece, &mut self.correlator);
                    start += len;
                }
                if unread {
                    self.settle_unread();
                    self.finish(host);
                    return Action::Continue;
                }
            }
            if self.correlator.complete() {
                self.finish(host);
                return Action::Continue;
            }
        }
        if end_of_stream {
            self.finish(host);
        }
        Action::Continue
    }

    /// A response that curation must read cannot be, from its headers alone ([`Unreadable`]:
    /// a `content-encoding` other than `identity` despite the `accept-encoding: identity`
    /// mcp-guard sends upstream, a content type other than exactly JSON or SSE, a charset
    /// other than UTF-8): it is refused, never forwarded unread. The client gets, in place of
    /// the body, `application/json` with a JSON-RPC internal error ([`INTERNAL_ERROR`]) per
    /// request, under HTTP 502 ([`BAD_GATEWAY`]) in place of a 2xx status (another status,
    /// such as a 404 that ends a session, is kept); every call not yet settled is
    /// `upstream_error`. Counted as `mcp_guard.refusals.reason.<why>`. (To accept encoded
    /// responses, put Envoy's decompressor filter after mcp-guard: on the response path it
    /// then runs first.)
    fn refuse_response(
        &mut self,
        host: &mut dyn Host,
        why: Unreadable,
        status: Option<u32>,
        end_of_stream: bool,
    ) -> Action {
        // Called before the response scanner or the hold is set up: neither ever starts.
        self.refused = Some(why);
        self.settle_refused(host, why);
        if status.is_none_or(|s| (200..300).contains(&s)) {
            self.facts.http_status = Some(BAD_GATEWAY);
            host.set_response_header(":status", Some("502"));
        }
        host.set_response_header("content-type", Some("application/json"));
        host.set_response_header("content-encoding", None);
        host.set_response_header("content-length", None);
        if end_of_stream {
            self.finish(host);
        }
        Action::Continue
    }

    /// Counts a refused response and settles every call not yet settled as `upstream_error`
    /// with [`INTERNAL_ERROR`].
    fn settle_refused(&mut self, host: &mut dyn Host, why: Unreadable) {
        host.count(Metric::Refusal(why.reason()), 1);
        for call in self.calls.iter_mut().filter(|c| c.output_status.is_none()) {
            call.output_status = Some(OutputStatus::UpstreamError);
            call.error_code = Some(i64::from(INTERNAL_ERROR));
            call.refusal = Some(why.reason());
        }
    }

    /// A held list response (`body_size` bytes) that must be curated and cannot be (`why`):
    /// its status and headers have already gone on (a 200 stays a 200), and the body becomes a
    /// JSON-RPC internal error ([`INTERNAL_ERROR`]) per request, as JSON or as one SSE
    /// `message` event, counted and audited as [`Stream::refuse_response`] does.
    fn refuse_held(&mut self, host: &mut dyn Host, why: Unreadable, body_size: usize) {
        self.settle_refused(host, why);
        let error = self.error_body(INTERNAL_ERROR, |_| why.message().to_owned());
        let body = match self.response_kind {
            BodyKind::EventStream => format!("event: message\ndata: {error}\n\n"),
            _ => error,
        };
        host.set_response_body(body_size, body.as_bytes());
    }

    /// A request-side host read failed (the request headers, or the body): the request cannot
    /// be examined, so it is refused, never forwarded unexamined (fail closed): HTTP 500
    /// ([`INTERNAL_SERVER_ERROR`]) with a JSON-RPC internal error ([`INTERNAL_ERROR`]), one
    /// record (decision `deny`, `denied`, error code -32603), counted as
    /// `mcp_guard.refusals.reason.request_read`.
    fn refuse_unread(&mut self, host: &mut dyn Host, what: &str) -> Action {
        log::warn!("mcp-guard: could not read the {what}; request refused");
        self.awaiting_body = false;
        if self.facts.agent_id.is_empty() {
            self.facts.agent_id = identity::UNIDENTIFIED.to_owned();
        }
        let mut call = Call::bare(Decision::Deny);
        call.output_status = Some(OutputStatus::Denied);
        call.error_code = Some(i64::from(INTERNAL_ERROR));
        self.calls = vec![call];
        host.count(Metric::Refusal("request_read"), 1);
        self.count_calls(host);
        let message = format!("Internal error: mcp-guard could not read the {what}");
        let body = jsonrpc::error_response(None, INTERNAL_ERROR, &message);
        self.reply(host, INTERNAL_SERVER_ERROR, body.as_bytes())
    }

    /// The response headers could not be read: nothing about the response is known. One that
    /// must be curated (a list response, or a server stream, under `curate_lists`) is refused
    /// ([`Unreadable::HostRead`], as [`Stream::refuse_response`]); any other is passed on
    /// unexamined and its calls are settled now as `upstream_error` (no outcome was seen).
    fn response_headers_unread(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action {
        log::warn!("mcp-guard: could not read the response headers");
        if self.awaiting_body {
            // Envoy answered before the body was complete; never forwarded (see above).
            self.awaiting_body = false;
            let mut call = Call::bare(Decision::Deny);
            call.output_status = Some(OutputStatus::UpstreamError);
            self.calls = vec![call];
        }
        let curated = self.curate.is_some() || !self.is_post;
        if self.config.curate_lists && curated && !end_of_stream {
            return self.refuse_response(host, Unreadable::HostRead, None, end_of_stream);
        }
        self.finish(host);
        Action::Continue
    }

    /// A response body that is only scanned for outcomes could not be read: the scan stops,
    /// and every call it had not answered yet is settled as `upstream_error` (an outcome
    /// already seen is kept), never read as an empty body.
    fn settle_unread(&mut self) {
        log::warn!("mcp-guard: could not read a response body; its calls are upstream_error");
        self.scanner = None;
        for call in self.calls.iter_mut().filter(|c| c.output_status.is_none()) {
            let outcome = match (&call.method, &call.request_id) {
                (Some(_), Some(id)) => self.correlator.outcome(id),
                _ => None,
            };
            let (status, code) = outcome.map_or((OutputStatus::UpstreamError, None), settle);
            call.output_status = Some(status);
            call.error_code = code;
        }
    }

    /// A server stream's chunk could not be read. Under `curate_lists` it may hold a list
    /// response that must not pass unread: the stream is refused from here on, as one whose
    /// headers showed it unreadable ([`Unreadable::HostRead`]; its chunks are swallowed and the
    /// error takes the place of the last). Without curation the chunk passes on and
    /// correlation stops on this stream (calls waiting for a response on it keep their
    /// `deferred` records).
    fn server_stream_unread(&mut self, host: &mut dyn Host, body_size: usize, end_of_stream: bool) {
        log::warn!("mcp-guard: could not read a server stream chunk");
        self.scanner = None;
        if !self.config.curate_lists {
            return;
        }
        let why = Unreadable::HostRead;
        self.refused = Some(why);
        self.settle_refused(host, why);
        self.sse_hold.clear();
        let body = if end_of_stream {
            self.error_body(INTERNAL_ERROR, |_| why.message().to_owned())
        } else {
            String::new()
        };
        host.set_response_body(body_size, body.as_bytes());
    }

    /// Rewrites the held list response (`body_size` bytes) to the entries this agent may use,
    /// and scans what the client will get. With `curate_lists`, a response that cannot be
    /// shown to be curated ([`Curation::Unreadable`]) is refused: its status and headers have
    /// already gone on (a 200 stays a 200), and the body becomes a JSON-RPC internal error
    /// ([`INTERNAL_ERROR`]) per request, as JSON or as one SSE `message` event, counted and
    /// audited as [`Stream::refuse_response`] does.
    fn curate_held(&mut self, host: &mut dyn Host, body_size: usize) {
        self.holding = false;
        let Some((kind, ids)) = self.curate.take() else {
            return;
        };
        let body = match host.response_body(0, body_size) {
            Ok(body) => body.unwrap_or_default(),
            // Not curated: refused like a list curation cannot read. Held only to learn
            // annotations: passed on as it came, its calls settled as `upstream_error`.
            Err(ReadError) if self.config.curate_lists => {
                return self.refuse_held(host, Unreadable::HostRead, body_size);
            }
            Err(ReadError) => {
                self.settle_unread();
                return;
            }
        };
        let policy = &self.config.policy;
        let agent = self.facts.agent_id.as_str();
        let curate = self.config.curate_lists;
        // Without curation the list is held only to learn annotations.
        let keep = |name: &str| !curate || may_use(policy, agent, kind, name);
        let mut stats = Rewrite::default();
        let curation = match self.response_kind {
            BodyKind::Json => curation::curate_json(&body, kind, &ids, &keep, &mut stats),
            BodyKind::EventStream => curation::curate_sse(&body, kind, &ids, &keep, &mut stats),
            BodyKind::Other => Curation::Unreadable(Unreadable::ContentType),
        };
        if self.config.annotations.is_some()
            && !annotations::learn(host.shared(), &self.facts.server_id, &stats.tools_seen)
        {
            log::warn!("mcp-guard: could not store the tools' annotations");
        }
        let rewritten = match curation {
            Curation::Rewritten(new) => Some(new),
            Curation::Unchanged => None,
            // Held only to learn annotations: not curated, so passed on as it came.
            Curation::Unreadable(_) if !curate => None,
            Curation::Unreadable(why) => return self.refuse_held(host, why, body_size),
        };
        if let Some(new) = &rewritten {
            host.set_response_body(body_size, new);
            host.count(Metric::ListRewrite(kind.array()), 1);
        }
        if let Some(scanner) = self.scanner.as_mut() {
            scanner.feed(rewritten.as_deref().unwrap_or(&body), &mut self.correlator);
        }
    }

    /// The stream is over (Envoy's access-log callback): settles what the response callbacks
    /// never saw end: a client that went away mid-response, an upstream reset, or a client
    /// that never finished sending its body.
    pub fn on_stream_end(&mut self, host: &mut dyn Host) {
        if self.finished {
            return;
        }
        let client_gone = host
            .response_code_details()
            .is_some_and(|d| d.contains("downstream"));
        if self.awaiting_body {
            // Never examined, never forwarded: the client stopped before the body ended.
            self.awaiting_body = false;
            let mut call = Call::bare(Decision::Deny);
            call.output_status = Some(if client_gone {
                OutputStatus::ClientDisconnected
            } else {
                OutputStatus::InvalidRequest
            });
            self.calls = vec![call];
        }
        self.finish_with(host, client_gone);
    }

    /// Looks at the server stream's new events: the legacy `endpoint` event names the session;
    /// each response whose (session, id) matches a call POSTed on another stream gets that
    /// call's outcome record.
    ///
    /// With `curate_lists`, the stream is passed on event by event (an incomplete trailing
    /// event is held back until it completes, up to [`curation::MAX_HELD_EVENT`]), so that a
    /// list response arriving here (the legacy transport's `tools/list`) is curated for the
    /// agent that asked for it.
    fn correlate(&mut self, host: &mut dyn Host, body_size: usize, end_of_stream: bool) {
        if self.scanner.is_none() {
            return;
        }
        let chunk = match host.response_body(0, body_size) {
            Ok(chunk) => chunk.unwrap_or_default(),
            Err(ReadError) => return self.server_stream_unread(host, body_size, end_of_stream),
        };
        let Some(scanner) = self.scanner.as_mut() else {
            return;
        };
        let curating = self.config.curate_lists;
        let held_before = !self.sse_hold.is_empty();
        let mut data = if curating && held_before {
            let mut d = std::mem::take(&mut self.sse_hold);
            d.extend_from_slice(&chunk);
            d
        } else {
            chunk
        };
        // The start of an incomplete event too large to hold: passed on unexamined after the
        // complete events (never curated or refused: it is not a whole event).
        let mut oversize = Vec::new();
        if curating && !end_of_stream {
            let boundary = curation::complete_events(&data);
            let rest = data.split_off(boundary);
            if rest.len() > curation::MAX_HELD_EVENT {
                log::warn!("mcp-guard: an SSE event on a server stream is too large to hold");
                oversize = rest;
            } else {
                self.sse_hold = rest;
            }
        }
        let mut rewritten = false;
        if curating && !self.sse_started && !data.is_empty() {
            // An event stream may start with a byte order mark, which SSE readers drop (WHATWG
            // HTML §9.2.6): dropped here too, so that curation reads the lines a client reads.
            self.sse_started = true;
            if let Some(rest) = data.strip_prefix("\u{feff}".as_bytes()) {
                data = rest.to_vec();
                rewritten = true;
            }
        }
        let mut answered: Vec<(Id, Outcome)> = Vec::new();
        let mut answer = |s: &Summary| {
            let id =
                s.id.as_deref()
                    .and_then(|raw| std::str::from_utf8(raw).ok())
                    .and_then(Id::from_raw);
            if let (Some(id), Some(outcome)) = (id, s.outcome()) {
                answered.push((id, outcome));
            }
        };
        scanner.feed_each(&data, &mut answer);
        scanner.feed_each(&oversize, &mut answer);
        if self.facts.session_id.is_none() {
            self.facts.session_id = scanner
                .take_text_event()
                .and_then(|uri| correlation::session_from_uri(&uri));
        }
        let lists = match self.facts.session_id.clone() {
            Some(session) => self.claim_answered(host, &session, answered),
            None => Vec::new(),
        };
        if curating {
            let curated = {
                let policy = &self.config.policy;
                let keeps: Vec<_> = lists
                    .iter()
                    .map(|(kind, _, agent)| move |name: &str| may_use(policy, agent, *kind, name))
                    .collect();
                let claimed: Vec<Claimed<'_>> = lists
                    .iter()
                    .zip(&keeps)
                    .map(|((kind, id, _), keep)| Claimed {
                        kind: *kind,
                        id: id.clone(),
                        keep,
                    })
                    .collect();
                let refusal =
                    |why: Unreadable| jsonrpc::error_response(None, INTERNAL_ERROR, why.message());
                curation::curate_server_stream(&data, &claimed, &refusal)
            };
            for why in &curated.refused {
                host.count(Metric::Refusal(why.reason()), 1);
            }
            let mut refused_calls = false;
            // The reason of a refused event among these (an unreadable event's id cannot be
            // trusted, so the refused list calls take the first one).
            let reason = curated
                .refused
                .first()
                .copied()
                .unwrap_or(Unreadable::Shape);
            for (j, (kind, id, _)) in lists.iter().enumerate() {
                if curated.rewritten.contains(&j) {
                    host.count(Metric::ListRewrite(kind.array()), 1);
                    continue;
                }
                // Its response was refused: the agent never got it.
                for call in self
                    .calls
                    .iter_mut()
                    .filter(|c| c.origin.is_some() && c.request_id.as_ref() == Some(id))
                {
                    call.output_status = Some(OutputStatus::UpstreamError);
                    call.error_code = Some(i64::from(INTERNAL_ERROR));
                    call.refusal = Some(reason.reason());
                    refused_calls = true;
                }
            }
            if refused_calls {
                self.write_audit(host);
            }
            if let Some(body) = curated.body {
                data = body;
                rewritten = true;
            }
        }
        if curating && (held_before || rewritten || !self.sse_hold.is_empty()) {
            data.extend_from_slice(&oversize);
            host.set_response_body(body_size, &data);
        }
    }

    /// Claims the pending calls these responses answer and records their outcomes; returns the
    /// list requests among them answered with a `result` (kind, id, agent), whose responses
    /// are to be curated.
    fn claim_answered(
        &mut self,
        host: &mut dyn Host,
        session: &str,
        answered: Vec<(Id, Outcome)>,
    ) -> Vec<(ListKind, Id, String)> {
        let now = host.now_ms();
        let mut found = false;
        let mut lists = Vec::new();
        for (id, outcome) in answered {
            if let Some(pending) = correlation::claim(host.shared(), session, &id, now) {
                let result = !matches!(outcome, Outcome::Error(_));
                if let Some(kind) = pending.method.as_deref().and_then(ListKind::of) {
                    if result {
                        lists.push((kind, id.clone(), pending.agent_id.clone()));
                    }
                }
                let (mut call, origin) = pending.into_call();
                let (status, code) = settle(outcome);
                call.output_status = Some(status);
                call.error_code = code;
                call.origin = Some(Box::new(origin));
                self.calls.push(call);
                found = true;
            }
        }
        if found {
            self.write_audit(host);
        }
        lists
    }

    fn decide(&mut self, host: &mut dyn Host) -> Action {
        self.awaiting_body = false;
        let mut bytes = match host.request_body(self.body_size) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(ReadError) => return self.refuse_unread(host, "request body"),
        };
        if !self.streamed.is_empty() {
            let mut all = std::mem::take(&mut self.streamed);
            all.extend_from_slice(&bytes);
            bytes = all;
        }
        if !self.is_post {
            if bytes.is_empty() {
                return Action::Continue;
            }
            let message = format!(
                "Invalid Request: a {} request must not carry a body",
                self.facts.http_method
            );
            return self.refuse_with(host, 400, None, None, jsonrpc::INVALID_REQUEST, &message);
        }
        let body = match jsonrpc::parse_body(&bytes, self.config.max_json_depth) {
            Ok(body) => body,
            Err(e) => return self.refuse(host, &e),
        };
        if let Err(header) = routing::check(&self.routing_headers, &body) {
            let (id, method) = match &body {
                Body::Single(m) => (m.id().cloned(), m.method.clone()),
                Body::Batch(_) => (None, None),
            };
            let message =
                format!("Header mismatch: {header} header value does not match the request body");
            return self.refuse_with(host, 400, id, method, routing::HEADER_MISMATCH, &message);
        }
        self.calls = body.messages().iter().map(|m| self.evaluate(m)).collect();
        self.apply_annotations(host);
        self.count_calls(host);

        if self.calls.iter().any(|c| c.decision.blocks()) {
            return self.deny(host);
        }
        let calls = body.messages().iter().filter(|m| is_call(m)).count();
        if calls > self.config.max_batch_calls || !uniform(body.messages()) {
            return self.refuse_batch(host);
        }

        let config = Rc::clone(&self.config);
        let tags = config.headers.for_body(&body);
        // Streaming: set from the routing headers, which the body has just been checked against.
        if config.hold_request_headers && !self.streaming {
            for (name, value) in &tags {
                host.set_request_header(name, Some(value));
            }
        }
        let expected: Vec<Id> = body
            .messages()
            .iter()
            .filter_map(|m| match &m.kind {
                Kind::Request(id) => Some(id.clone()),
                _ => None,
            })
            .collect();
        // A uniform body: every message has this method (checked above). Lists are held to
        // be curated, and tools/list also to learn the tools' annotations.
        let method = body.messages().iter().find_map(|m| m.method.as_deref());
        if let Some(kind) = method.and_then(ListKind::of) {
            let learn = kind == ListKind::Tools && self.config.annotations.is_some();
            if self.config.curate_lists || learn {
                self.curate = Some((kind, expected.clone()));
            }
        }
        self.correlator = Correlator::new(expected);
        if let Some(rls) = &config.rate_limit_service {
            let tag = |header: &str| {
                tags.iter()
                    .find(|(name, _)| *name == header)
                    .map(|(_, value)| value.as_str())
            };
            let descriptors = ratelimit::descriptors(
                &self.facts.agent_id,
                tag(&config.headers.method),
                tag(&config.headers.tool_name),
            );
            let call = host.grpc_call(
                rls.grpc_service(),
                ratelimit::SERVICE,
                ratelimit::METHOD,
                &rls.request(&descriptors),
                rls.timeout_ms,
            );
            match call {
                Some(token) => {
                    self.rls_call = Some(token);
                    return Action::Pause;
                }
                None => {
                    if self.rls_failed(host, "the gRPC call could not be started") {
                        return Action::Pause;
                    }
                }
            }
        }
        self.forwarded(host);
        Action::Continue
    }

    /// The request is going to the upstream: what must happen before its response can come.
    fn forwarded(&mut self, host: &mut dyn Host) {
        if self.legacy_session {
            // Legacy HTTP+SSE: the response will come on the GET stream, possibly before this
            // POST's own `202 Accepted` has passed back through here. Store the calls now.
            let session = self.facts.session_id.as_deref().unwrap_or_default();
            let requests = self
                .calls
                .iter()
                .filter(|c| c.method.is_some() && c.request_id.is_some());
            let pending: Vec<Pending> = requests
                .filter_map(|c| Pending::new(session, &self.facts, c))
                .collect();
            store_all(host, &pending);
        }
    }

    /// The annotations rule (if configured): an allowed `tools/call` of a tool no rule set
    /// names exactly is refused when the server's `tools/list` marked it so, or never showed it.
    fn apply_annotations(&mut self, host: &mut dyn Host) {
        let Some(rule) = self.config.annotations else {
            return;
        };
        let policy = &self.config.policy;
        let agent = self.facts.agent_id.as_str();
        for call in self.calls.iter_mut() {
            let (Some(jsonrpc::TOOLS_CALL), Some(tool)) =
                (call.method.as_deref(), call.tool_name.as_deref())
            else {
                continue;
            };
            if call.decision != Decision::Allow || policy.allows_tool_by_name(agent, tool) {
                continue;
            }
            // A store that cannot be read refuses: "could not read it" is not "never shown".
            let refused = annotations::lookup(host.shared(), &self.facts.server_id, tool)
                .map_or(true, |hints| rule.refuses(hints).is_some());
            if refused {
                call.decision = match policy.mode() {
                    Mode::Enforce => Decision::Deny,
                    Mode::DryRun => Decision::DryRunDeny,
                };
                self.annotation_denials += usize::from(call.decision.blocks());
            }
        }
    }

    fn evaluate(&self, m: &Message<'_>) -> Call {
        let decision = match Subject::of(m.method.as_deref(), m.name()) {
            Some(subject) => self.config.policy.decide(&self.facts.agent_id, subject),
            None => Decision::Allow, // a client-sent response: nothing is asked for
        };
        Call {
            method: m.method.clone(),
            tool_name: m.tool_name.clone(),
            prompt_name: m.prompt_name.clone(),
            resource_uri: m.resource_uri.clone(),
            request_id: m.id().cloned(),
            input_hash: m
                .hash_input
                .map(|s| self.config.input_hash.hash(s.as_bytes())),
            decision,
            output_status: None,
            error_code: None,
            origin: None,
            settled_ms: None,
            refusal: None,
        }
    }

    /// Refuses a body with at least one denied call: no element reaches the upstream, every
    /// request element gets its own error.
    fn deny(&mut self, host: &mut dyn Host) -> Action {
        let agent = self.facts.agent_id.clone();
        let blocked = self.calls.iter().filter(|c| c.decision.blocks()).count();
        let by_annotations = self.annotation_denials.min(blocked);
        host.count(Metric::Denial("policy"), (blocked - by_annotations) as u64);
        host.count(Metric::Denial("annotations"), by_annotations as u64);
        for call in &mut self.calls {
            call.output_status = Some(OutputStatus::Denied);
            call.error_code = Some(i64::from(DENIED));
        }
        if let (Some(hide), [call]) = (&self.config.hide_denied_tools, self.calls.as_slice()) {
            if let (Some(tool), Some(id)) = (&call.tool_name, &call.request_id) {
                // Answer as the server answers a tool it does not have, so an agent cannot
                // tell a denied tool from a missing one. The audit record still says denied.
                let body = hide.answer(id, tool);
                return self.reply(host, 200, body.as_bytes());
            }
        }
        let text = self.error_body(DENIED, |call| {
            if !call.decision.blocks() {
                return format!(
                    "Batch refused: it contains a call that is not allowed for agent \"{agent}\""
                );
            }
            let what = match (&call.tool_name, &call.prompt_name, &call.resource_uri) {
                (Some(tool), _, _) => format!("Tool \"{tool}\""),
                (_, Some(prompt), _) => format!("Prompt \"{prompt}\""),
                (_, _, Some(uri)) => format!("Resource \"{uri}\""),
                _ => format!("Method \"{}\"", call.method.as_deref().unwrap_or_default()),
            };
            format!("{what} is not allowed for agent \"{agent}\"")
        });
        self.reply(host, 200, text.as_bytes())
    }

    /// Refuses a batch with more calls than `max_batch_calls`, or whose messages differ in
    /// method or name. Tags and rate-limit descriptors describe one HTTP request: with two
    /// different messages in it, one would pass under the other's name (or escape a
    /// method/tool descriptor), and N calls would cost one hit. Such a batch never reaches the
    /// upstream; a uniform one within the limit is forwarded with exact tags.
    fn refuse_batch(&mut self, host: &mut dyn Host) -> Action {
        host.count(Metric::Refusal("batch"), 1);
        let code = jsonrpc::INVALID_REQUEST;
        let max = self.config.max_batch_calls;
        for call in &mut self.calls {
            // Refused as malformed: recorded as deny, like every other refused request.
            call.decision = Decision::Deny;
            call.output_status = Some(OutputStatus::InvalidRequest);
            call.error_code = Some(i64::from(code));
        }
        let text = self.error_body(code, |_| {
            format!(
                "Invalid Request: mcp-guard forwards a batch only with at most {} call(s), all \
                 with the same method and name, so that its tags and rate limits cover every \
                 call; send the calls separately",
                max
            )
        });
        self.reply(host, 400, text.as_bytes())
    }

    /// The JSON-RPC error body answering this stream's calls with `code`: one error object per
    /// request (an array for a batch), or a single error with id `null` if none has an id.
    fn error_body(&self, code: i32, message: impl Fn(&Call) -> String) -> String {
        let errors: Vec<String> = self
            .calls
            .iter()
            .filter(|c| c.method.is_some() && c.request_id.is_some())
            .map(|c| jsonrpc::error_response(c.request_id.as_ref(), code, &message(c)))
            .collect();
        match (self.calls.len() > 1, errors.as_slice()) {
            (true, [_, ..]) => format!("[{}]", errors.join(",")),
            (false, [one]) => one.clone(),
            _ => {
                let first = self.calls.first().map(&message).unwrap_or_default();
                jsonrpc::error_response(None, code, &first)
            }
        }
    }

    fn refuse(&mut self, host: &mut dyn Host, e: &ParseError) -> Action {
        self.refuse_with(
            host,
            400,
            e.id.clone(),
            e.method.clone(),
            e.code,
            &e.message,
        )
    }

    /// Refuses a malformed request: one `invalid_request` record, an HTTP error with the
    /// JSON-RPC error body.
    fn refuse_with(
        &mut self,
        host: &mut dyn Host,
        status: u32,
        id: Option<Id>,
        method: Option<String>,
        code: i32,
        message: &str,
    ) -> Action {
        let mut call = Call::bare(Decision::Deny);
        call.method = method;
        call.request_id = id.clone();
        call.output_status = Some(OutputStatus::InvalidRequest);
        call.error_code = Some(i64::from(code));
        self.calls = vec![call];
        let reason = match (status, code) {
            (413, _) => "too_large",
            (UNSUPPORTED_MEDIA_TYPE, _) => "encoding",
            (_, routing::HEADER_MISMATCH) => "header_mismatch",
            _ => "parse",
        };
        host.count(Metric::Refusal(reason), 1);
        self.count_calls(host);
        let body = jsonrpc::error_response(id.as_ref(), code, message);
        self.reply(host, status, body.as_bytes())
    }

    /// Counts every call of the stream by method and decision (and tools/call by tool).
    fn count_calls(&self, host: &mut dyn Host) {
        for call in &self.calls {
            let decision = call.decision.as_str();
            let method = call.method.as_deref();
            host.count(Metric::Request { method, decision }, 1);
            if let (Some(jsonrpc::TOOLS_CALL), Some(tool)) =
                (call.method.as_deref(), call.tool_name.as_deref())
            {
                let max_labels = self.config.max_tool_metrics;
                host.count(
                    Metric::ToolCall {
                        tool,
                        decision,
                        max_labels,
                    },
                    1,
                );
            }
        }
    }

    fn reply(&mut self, host: &mut dyn Host, status: u32, body: &[u8]) -> Action {
        self.reply_with(host, status, &[], body)
    }

    fn reply_with(
        &mut self,
        host: &mut dyn Host,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Action {
        self.replied = true;
        self.finished = true;
        self.facts.http_status = Some(status);
        self.write_audit(host);
        host.send_local_reply(status, headers, body);
        Action::Pause
    }

    /// Settles every call still open from what the response showed, and writes the records.
    fn finish(&mut self, host: &mut dyn Host) {
        self.finish_with(host, false);
    }

    /// [`Stream::finish`]; `client_gone` when the client went away before the response ended.
    ///
    /// A forwarded request whose response never came on this stream is `deferred` (and stored
    /// for [`correlation`]) when the server may still answer it on another stream of the same
    /// session: a legacy `202 Accepted`, or an SSE response (resumable with `Last-Event-ID`).
    fn finish_with(&mut self, host: &mut dyn Host, client_gone: bool) {
        if let Some(mut scanner) = self.scanner.take() {
            scanner.finish(&mut self.correlator);
            if scanner.sse_events() > 0 {
                host.count(Metric::SseEvents, scanner.sse_events());
            }
        }
        self.finished = true;
        let status = self.facts.http_status.unwrap_or(0);
        let unmatched = self.correlator.unmatched_error().flatten();
        let resumable = self.facts.session_id.is_some()
            && (status == 202
                || ((200..300).contains(&status) && self.response_kind == BodyKind::EventStream));
        let mut deferred: Vec<Pending> = Vec::new();
        for call in self.calls.iter_mut().filter(|c| c.output_status.is_none()) {
            let is_request = call.method.is_some() && call.request_id.is_some();
            let outcome = if is_request {
                call.request_id
                    .as_ref()
                    .and_then(|id| self.correlator.outcome(id))
            } else {
                None
            };
            let (output, code) = match outcome {
                Some(outcome) => settle(outcome),
                None if is_request && resumable => {
                    let session = self.facts.session_id.as_deref().unwrap_or_default();
                    if !self.legacy_session {
                        deferred.extend(Pending::new(session, &self.facts, call));
                    }
                    (OutputStatus::Deferred, None)
                }
                // A server stream (GET) normally ends by the client closing it.
                None if client_gone && is_request => (OutputStatus::ClientDisconnected, None),
                None => match status {
                    200..=399 if !is_request => (OutputStatus::Success, None),
                    400..=499 => (OutputStatus::Error, unmatched),
                    _ => (OutputStatus::UpstreamError, None),
                },
            };
            call.output_status = Some(output);
            call.error_code = code;
        }
        store_all(host, &deferred);
        if self.legacy_session {
            // Calls settled on this stream after all (an error answer instead of 202) must not
            // wait in the store for a response that will not come.
            let now = host.now_ms();
            if let Some(session) = self.facts.session_id.clone() {
                let settled: Vec<Id> = self
                    .calls
                    .iter()
                    .filter(|c| c.output_status != Some(OutputStatus::Deferred))
                    .filter_map(|c| c.request_id.clone())
                    .collect();
                for id in settled {
                    let _ = correlation::claim(host.shared(), &session, &id, now);
                }
            }
        }
        self.write_audit(host);
    }

    fn write_audit(&mut self, host: &mut dyn Host) {
        if self.calls.is_empty() {
            return; // nothing examined yet; an empty value would print an empty log line
        }
        let now = host.now_ms();
        // Every call settled since the last write was settled now; its latency ends here, not
        // when a later record on the same (long-lived) stream is written.
        for call in self.calls.iter_mut() {
            if call.output_status.is_some() && call.settled_ms.is_none() {
                call.settled_ms = Some(now);
            }
        }
        let records = audit::render(&self.facts, &self.calls, now);
        host.write_audit(&records);
    }
}

/// Stores calls for correlation (one shared-data write each).
fn store_all(host: &mut dyn Host, pending: &[Pending]) {
    for p in pending {
        if !correlation::store(host.shared(), p) {
            log::warn!("mcp-guard: could not store a deferred call for correlation");
        }
    }
}

/// Whether `agent` may use the list entry `name` (so a curated list shows it); a
/// `dry_run_deny` entry stays visible.
fn may_use(policy: &Policy, agent: &str, kind: ListKind, name: &str) -> bool {
    let subject = match kind {
        ListKind::Tools => Subject::Tool(name),
        ListKind::Prompts => Subject::Prompt(name),
        ListKind::Resources => Subject::Resource(name),
    };
    !policy.decide(agent, subject).blocks()
}

/// The record status and error code for a response's outcome.
fn settle(outcome: Outcome) -> (OutputStatus, Option<i64>) {
    match outcome {
        Outcome::Success => (OutputStatus::Success, None),
        Outcome::ToolError => (OutputStatus::ToolError, None),
        Outcome::Error(code) => (OutputStatus::Error, code),
        // A response no reader takes as one valid outcome: never `success`.
        Outcome::Malformed => (OutputStatus::UpstreamError, None),
    }
}

#[cfg(test)]
mod tests;
