//! The per-stream filter logic: what mcp-guard does at each HTTP callback, expressed against a
//! small [`Host`] trait so it runs natively in tests. The proxy-wasm HTTP context
//! (`crate::wasm`) only forwards callbacks here.
//!
//! A [`Stream`] is two state machines, one enum each: the request's `RequestPhase` and the
//! response's `ResponseMode`; each callback is a `match` on them. What to do with a request
//! is decided by the pure functions of [`crate::verdict`]; `Stream` enacts it
//! (`filter/request.rs`: the request path, `filter/response.rs`: the response path).
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
//! Inventory (`crate::inventory`): the `initialize` / `server/discover` results a stream carries
//! are learned from its response scan; every record names the server (`server_name`,
//! `server_version`) from what the stream learned, else from one inventory lookup.
//!
//! Audit: the records are written to filter state once the outcome is known (mcp-guard's
//! reply, a 429, the matching response, the end of the response), and a stream cut short is
//! settled and written by [`Stream::on_stream_end`] (Envoy's log callback, which runs before
//! the access log reads the filter state).

mod listen;
mod pins;
mod request;
mod response;

use crate::attributes;
use crate::audit::{self, Call, OutputStatus, StreamFacts};
use crate::config::Config;
use crate::correlation::{self, Pending};
use crate::curation::{ListKind, Unreadable};
pub use crate::host::{Action, Host, ReadError};
use crate::inventory::{self, Lookup};
use crate::jsonrpc::{self, Id};
use crate::metrics::Metric;
use crate::policy::Decision;
// Named by the unit tests (`use super::*`), which were written against the single filter.rs.
#[cfg(test)]
use crate::policy::{Mode, Subject};
use crate::response::{BodyKind, Correlator, Outcome, RequestState, ResponseScanner};
use crate::rounds;
use crate::routing;
use crate::verdict::{self, Refusal};
pub use crate::verdict::{
    BAD_GATEWAY, DENIED, INTERNAL_ERROR, INTERNAL_SERVER_ERROR, NOT_CONFIGURED, RATE_LIMITED,
    UNAUTHORIZED, UNSUPPORTED_MEDIA_TYPE,
};
use std::rc::Rc;

/// Largest piece of a response chunk read into the VM at once by the scanner, in bytes.
pub const SCAN_PIECE: usize = 64 * 1024;

/// A list request whose response is held and curated: its kind and request ids.
type Curate = Option<(ListKind, Vec<Id>)>;

/// Where the request is.
#[derive(Debug)]
enum RequestPhase {
    /// Before the request headers.
    Headers,
    /// Its body is held until its end, then examined. `size`: the bytes buffered so far.
    AwaitingBody {
        /// See above.
        size: usize,
    },
    /// `decide_at_headers`: decided and tagged from its routing headers; the body streams to
    /// the upstream and is examined at its end. `streamed`: the chunks already passed on;
    /// `size`: the current chunk's.
    Streaming {
        /// See above.
        streamed: Vec<u8>,
        /// See above.
        size: usize,
    },
    /// Allowed; waiting for the answer to RLS call `token` before it is forwarded.
    WaitingRls {
        /// The gRPC call's token.
        token: u32,
        /// What the response will need.
        curate: Curate,
    },
    /// Forwarded (or needing no examination): its response is expected.
    Forwarded {
        /// A list response to curate, until the response headers take it.
        curate: Curate,
    },
    /// Never examined and never forwarded: Envoy answered, or the client stopped, before the
    /// body ended.
    Abandoned,
    /// mcp-guard answered it with a local reply (a refusal).
    Replied,
}

/// What the response path does with the response.
#[derive(Debug)]
enum ResponseMode {
    /// Nothing to read (or no response headers yet): passed on; settled at its end.
    Pass,
    /// Scanned for the outcomes of this POST's requests.
    Scan(ResponseScanner),
    /// A list response held whole (Envoy buffers it) and curated at its end.
    Hold {
        /// The list.
        kind: ListKind,
        /// The list request's ids.
        ids: Vec<Id>,
        /// Reads the outcomes from what the client will get.
        scanner: ResponseScanner,
    },
    /// A server stream (GET): responses to requests POSTed on other streams are correlated,
    /// and, with `curate_lists`, list responses curated event by event.
    ServerStream(ServerStream),
    /// Refused from its headers (why): swallowed chunk by chunk, a JSON-RPC error at its end.
    Refused(Unreadable),
    /// The `text/event-stream` response to a `subscriptions/listen` POST (MCP 2026-07-28), with
    /// `curate_lists`: passed on event by event, `notifications/resources/updated` events about
    /// resources the agent may not read dropped (`filter/listen.rs`).
    Listen(ListenStream),
    /// A 429: buffered, and replaced whole with a JSON-RPC error ([`RATE_LIMITED`]).
    RateLimited,
    /// A `202 Accepted` to a list request: its body (the legacy transport's `Accepted`) is no
    /// answer, and is dropped unread.
    Discard,
    /// Settled and written: nothing more to do.
    Done,
}

/// A server stream's state.
#[derive(Debug)]
struct ServerStream {
    /// Finds responses (and the legacy `endpoint` event).
    scanner: ResponseScanner,
    /// An incomplete trailing SSE event, held back for curation.
    held: Vec<u8>,
    /// The first complete bytes have been passed on (and a leading byte order mark removed
    /// from them).
    started: bool,
}

/// A `subscriptions/listen` response stream's state: never more than one incomplete event
/// (at most [`crate::curation::MAX_HELD_EVENT`] bytes) is held.
#[derive(Debug)]
struct ListenStream {
    /// Finds the listen request's response (its graceful end) in what the client gets.
    scanner: ResponseScanner,
    /// An incomplete trailing SSE event, held back until it completes.
    held: Vec<u8>,
    /// Inside an event too large to hold, which is being dropped: the tail that finds its end
    /// (`crate::curation::skipped_tail`).
    skipping: Option<Vec<u8>>,
    /// The first complete bytes have been passed on (and a leading byte order mark removed
    /// from them).
    started: bool,
    /// The client got the subscription's acknowledgement.
    acknowledged: bool,
}

/// Where the stream's session id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionFrom {
    /// The `Mcp-Session-Id` header (Streamable HTTP), a response header, or none yet.
    Header,
    /// The POST URI (legacy HTTP+SSE): responses come on the GET stream, so forwarded
    /// requests are stored for correlation as they are forwarded.
    LegacyUri,
}

/// The state of one HTTP stream.
#[derive(Debug)]
pub struct Stream {
    config: Rc<Config>,
    facts: StreamFacts,
    calls: Vec<Call>,
    /// `Mcp-Method` / `Mcp-Name` request headers (MCP 2026-07-28), raw.
    routing_headers: routing::RoutingHeaders,
    session_from: SessionFrom,
    request: RequestPhase,
    response: ResponseMode,
    response_kind: BodyKind,
    correlator: Correlator,
    /// `Mcp-Param-*` request headers (MCP 2026-07-28), raw, as `(lower-case name, value)`.
    param_headers: Vec<(String, String)>,
    /// What the server inventory says for this stream's records ([`crate::inventory`]):
    /// learned from its own `initialize` / `server/discover` result, or looked up once, when
    /// the first record is written; `None` until then.
    inventory: Option<Lookup>,
    /// The `Mcp-Session-Id` response header (the session an `initialize` response assigns).
    response_session: Option<String>,
    /// The audit attributes written so far (`audit_attributes`, [`crate::attributes`]).
    attributes: attributes::Written,
}

impl Stream {
    /// A new stream under `config`.
    pub fn new(config: Rc<Config>) -> Self {
        Stream {
            config,
            facts: StreamFacts::default(),
            calls: Vec::new(),
            routing_headers: routing::RoutingHeaders::default(),
            session_from: SessionFrom::Header,
            request: RequestPhase::Headers,
            response: ResponseMode::Pass,
            response_kind: BodyKind::Other,
            correlator: Correlator::default(),
            param_headers: Vec::new(),
            inventory: None,
            response_session: None,
            attributes: attributes::Written::default(),
        }
    }

    /// Whether the request is a POST (the only method that carries JSON-RPC).
    fn is_post(&self) -> bool {
        self.facts.http_method == "POST"
    }

    /// The stream is over (Envoy's access-log callback): settles what the response callbacks
    /// never saw end: a client that went away mid-response, an upstream reset, or a client
    /// that never finished sending its body.
    pub fn on_stream_end(&mut self, host: &mut dyn Host) {
        if matches!(self.response, ResponseMode::Done) {
            return;
        }
        let client_gone = host
            .response_code_details()
            .is_some_and(|d| d.contains("downstream"));
        if let RequestPhase::AwaitingBody { .. } | RequestPhase::Streaming { .. } = self.request {
            // Never examined, never forwarded: the client stopped before the body ended.
            self.request = RequestPhase::Abandoned;
            let mut call = Call::bare(Decision::Deny);
            call.output_status = Some(if client_gone {
                OutputStatus::ClientDisconnected
            } else {
                OutputStatus::InvalidRequest
            });
            self.calls = vec![call];
        }
        if client_gone {
            self.listen_closed_by_client();
        }
        self.finish_with(host, client_gone);
    }

    /// Adopts the calls a verdict evaluated, and counts them.
    fn adopt(&mut self, host: &mut dyn Host, calls: Vec<Call>) {
        self.calls = calls;
        self.count_calls(host);
    }

    /// Enacts a refusal of the request: its counters, its audit fields, its local reply
    /// ([`Refusal`], the one mapping).
    fn refuse(&mut self, host: &mut dyn Host, refusal: Refusal) -> Action {
        for (metric, by) in refusal.metrics(&self.calls) {
            host.count(metric, by);
        }
        let reply = refusal.reply(&mut self.calls, &self.facts.agent_id, &self.config);
        let headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        self.request = RequestPhase::Replied;
        self.response = ResponseMode::Done;
        self.facts.http_status = Some(reply.status);
        self.write_audit(host);
        host.send_local_reply(reply.status, &headers, reply.body.as_bytes());
        Action::Pause
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
        let scanner = match std::mem::replace(&mut self.response, ResponseMode::Done) {
            ResponseMode::Scan(scanner) | ResponseMode::Hold { scanner, .. } => Some(scanner),
            ResponseMode::ServerStream(stream) => Some(stream.scanner),
            ResponseMode::Listen(listen) => Some(listen.scanner),
            _ => None,
        };
        if let Some(mut scanner) = scanner {
            scanner.finish(&mut self.correlator);
            if scanner.sse_events() > 0 {
                host.count(Metric::SseEvents, scanner.sse_events());
            }
        }
        let legacy = self.session_from == SessionFrom::LegacyUri;
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
                    if !legacy {
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
        self.learn_inventory(host);
        self.open_rounds(host);
        if legacy {
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

    /// Opens a multi round-trip round ([`rounds::open`]) for each call of this stream just
    /// settled `input_required` (a `tools/call`, `prompts/get` or `resources/read`), and notes
    /// its link in the call's record (`round_opens`). A result whose `requestState` could not
    /// be kept ([`RequestState::Unlinkable`]) opens none, nor does the answer to round
    /// [`rounds::MAX_ROUNDS`]: the retry will count as a new call.
    fn open_rounds(&mut self, host: &mut dyn Host) {
        let now = host.now_ms();
        let opened = self.calls.iter_mut().filter(|c| {
            c.output_status == Some(OutputStatus::InputRequired)
                && c.origin.is_none()
                && c.round.opens.is_none()
        });
        for call in opened {
            let (Some(method), Some(id)) = (call.method.as_deref(), call.request_id.as_ref())
            else {
                continue;
            };
            if !verdict::is_round_method(method) {
                continue;
            }
            let state = match self.correlator.request_state(id) {
                Some(RequestState::Absent) => "",
                Some(RequestState::Kept(state)) => state.as_str(),
                _ => continue,
            };
            let name = call
                .tool_name
                .as_deref()
                .or(call.prompt_name.as_deref())
                .or(call.resource_uri.as_deref())
                .unwrap_or_default();
            let arguments = rounds::arguments_part(method, call.input_hash.as_deref());
            let link = rounds::link(
                &self.config.input_hash,
                &self.facts.server_id,
                &self.facts.agent_id,
                (method, name, arguments),
                state,
            );
            // The answer to a continuation of round n opens round n + 1 (at most MAX_ROUNDS).
            let round = match &call.round.continues {
                Some(retry) if retry.matched => retry.round.saturating_add(1),
                _ => 1,
            };
            if !rounds::open(host.shared(), &link, round, now) {
                log::warn!("mcp-guard: round not stored (past MAX_ROUNDS, or the store failed); its retry counts as new");
            }
            call.round.opens = Some(link);
        }
    }

    /// Whether a request of this stream is an `initialize` or `server/discover` (so its
    /// response is scanned with the inventory capture).
    fn asks_inventory(&self) -> bool {
        self.calls.iter().any(|c| {
            c.request_id.is_some()
                && matches!(
                    c.method.as_deref(),
                    Some(inventory::INITIALIZE | inventory::DISCOVER)
                )
        })
    }

    /// Learns the server inventory ([`crate::inventory`]) from the successful results of this
    /// stream's `initialize` / `server/discover` requests: remembered per server and, for an
    /// `initialize` whose response assigned a session (`Mcp-Session-Id`), per session;
    /// counted as `servers_seen`; and used for this stream's records (no shared-data read for
    /// them). An `initialize` record without a claimed revision gets the negotiated one.
    fn learn_inventory(&mut self, host: &mut dyn Host) {
        let now = host.now_ms();
        let session = self
            .response_session
            .as_deref()
            .or(self.facts.session_id.as_deref());
        let mut learned = None;
        for call in self
            .calls
            .iter_mut()
            .filter(|c| c.origin.is_none() && c.output_status == Some(OutputStatus::Success))
        {
            let (Some(method), Some(id)) = (call.method.as_deref(), call.request_id.as_ref())
            else {
                continue;
            };
            let none = inventory::Captured::default();
            let captured = self.correlator.captured(id).unwrap_or(&none);
            let (entry, session) = match method {
                inventory::INITIALIZE => {
                    (inventory::Entry::from_initialize(captured, now), session)
                }
                // 2026-07-28 has no sessions.
                inventory::DISCOVER => (
                    inventory::Entry::from_discover(
                        captured,
                        call.protocol_version.as_deref(),
                        now,
                    ),
                    None,
                ),
                _ => continue,
            };
            remember_entry(host, &self.facts.server_id, session, &entry, call);
            learned = Some(entry);
        }
        if let Some(entry) = learned {
            self.inventory = Some(Lookup::Found(entry));
        }
    }

    /// [`Stream::learn_inventory`] for an `initialize` POSTed on another stream whose result
    /// (`captured`) came on this server stream (legacy HTTP+SSE) for `session`; `call` is its
    /// correlated record.
    fn learned(
        &mut self,
        host: &mut dyn Host,
        captured: &inventory::Captured,
        session: Option<&str>,
        call: &mut Call,
    ) {
        let entry = inventory::Entry::from_initialize(captured, host.now_ms());
        remember_entry(host, &self.facts.server_id, session, &entry, call);
        self.inventory = Some(Lookup::Found(entry));
    }

    /// The stream's inventory facts for its records: what it learned, else one lookup (the
    /// session's entry, else the server's; [`inventory::lookup`]), kept for later records.
    /// Calls without a claimed revision (no header, no `_meta`) get the negotiated one.
    fn inventory_facts(&mut self, host: &mut dyn Host) {
        let lookup = match &self.inventory {
            Some(lookup) => lookup,
            None => {
                let session = self.facts.session_id.as_deref();
                let found = inventory::lookup(host.shared(), &self.facts.server_id, session);
                if found == Lookup::Unreadable {
                    log::warn!("mcp-guard: could not read the server inventory");
                }
                self.inventory.insert(found)
            }
        };
        let entry = match lookup {
            Lookup::Found(entry) => Some(entry),
            Lookup::NotFound => None,
            Lookup::Unreadable => {
                self.facts.inventory_error = Some(inventory::UNREADABLE);
                None
            }
        };
        self.facts.server_name = entry.and_then(|e| e.name.clone());
        self.facts.server_version = entry.and_then(|e| e.version.clone());
        if let Some(negotiated) = entry.and_then(|e| e.protocol_version.as_deref()) {
            for call in self
                .calls
                .iter_mut()
                .filter(|c| c.protocol_version.is_none())
            {
                call.protocol_version = Some(negotiated.to_owned());
            }
        }
    }

    fn write_audit(&mut self, host: &mut dyn Host) {
        if self.calls.is_empty() {
            return; // nothing examined yet; an empty value would print an empty log line
        }
        let now = host.now_ms();
        // Every call settled since the last write was settled now; its latency ends here, not
        // when a later record on the same (long-lived) stream is written.
        // The revision of calls the verdict did not set (refused at headers, non-POST, never
        // examined): the stream's own `MCP-Protocol-Version` header. Correlated calls keep
        // their POST's.
        let header_version = self.routing_headers.version.first();
        for call in self.calls.iter_mut() {
            if call.output_status.is_some() && call.settled_ms.is_none() {
                call.settled_ms = Some(now);
            }
            if call.protocol_version.is_none() && call.origin.is_none() {
                call.protocol_version = header_version.map(|v| audit::bounded_version(v));
            }
        }
        // After the header: the session's (or server's) negotiated revision comes last.
        self.inventory_facts(host);
        let records = audit::render(&self.facts, &self.calls, now);
        host.write_audit(&records);
        if self.config.audit_attributes {
            if let Some(first) = self.calls.first() {
                let values = attributes::values(&self.facts, first);
                for (key, value) in self.attributes.changes(values) {
                    host.write_filter_state(key, value.as_bytes());
                }
            }
        }
    }
}

/// Remembers a learned inventory `entry` ([`inventory::remember`]), counts it as
/// `servers_seen`, and gives `call` (the `initialize` / `server/discover`) the negotiated
/// revision when it claimed none.
fn remember_entry(
    host: &mut dyn Host,
    server_id: &str,
    session: Option<&str>,
    entry: &inventory::Entry,
    call: &mut Call,
) {
    if call.protocol_version.is_none() {
        call.protocol_version.clone_from(&entry.protocol_version);
    }
    if !inventory::remember(host.shared(), server_id, session, entry) {
        log::warn!("mcp-guard: could not store the server inventory");
    }
    host.count(
        Metric::ServerSeen {
            name: entry.name.as_deref(),
            version: entry.version.as_deref(),
        },
        1,
    );
}

/// Stores calls for correlation (one shared-data write each).
fn store_all(host: &mut dyn Host, pending: &[Pending]) {
    for p in pending {
        if !correlation::store(host.shared(), p) {
            log::warn!("mcp-guard: could not store a deferred call for correlation");
        }
    }
}

/// The record status and error code for a response's outcome.
fn settle(outcome: Outcome) -> (OutputStatus, Option<i64>) {
    match outcome {
        Outcome::Success => (OutputStatus::Success, None),
        Outcome::ToolError => (OutputStatus::ToolError, None),
        Outcome::Error(code) => (OutputStatus::Error, code),
        // A response no reader takes as one valid outcome: never `success`.
        Outcome::Malformed => (OutputStatus::UpstreamError, None),
        // Not the call's final result: the client retries with the input (a new round).
        Outcome::InputRequired => (OutputStatus::InputRequired, None),
    }
}

#[cfg(test)]
mod tests;
