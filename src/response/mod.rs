//! Response-side correlation: finds, in a streamed `application/json` or `text/event-stream`
//! response, the JSON-RPC response whose id matches each forwarded request, and reports how it
//! ended (JSON-RPC 2.0 §5; MCP "Tools": a tool failure is a result with `isError: true`).
//!
//! Nothing is held whole. [`JsonScanner`] is a streaming structural scanner: it tracks nesting
//! and strings byte by byte and keeps only the few members correlation needs (`jsonrpc`, `id` up
//! to [`MAX_ID_LEN`] bytes, `method` presence, `result.isError`, `error.code`), so a 30 MB tool
//! result costs a constant amount of memory. Server-initiated requests and notifications (which
//! carry `method`) on the same stream are skipped.
//!
//! Member names are read as the SDK readers read them (JSON.parse in the TypeScript SDK,
//! pydantic-core in the Python SDK, serde_json): escapes are decoded before comparison, with
//! serde_json's string decoder as on the request side ([`crate::jsonrpc`]), so `"r\u0065sult"`
//! is `result` and `"is\u0045rror"` is `isError`. Those readers keep the *last* of duplicated
//! members while serde_json refuses the message; a response whose outcome members are
//! duplicated is therefore never `success` ([`Outcome::Malformed`]).
//!
//! MCP 2026-07-28 (spec "Multi Round-Trip Requests", `basic/patterns/mrtr`): a result whose
//! `resultType` is `"input_required"` is an `InputRequiredResult`, not the call's final result
//! ([`Outcome::InputRequired`]); its `requestState` (an opaque string the client echoes on its
//! retry) is kept, decoded, up to [`MAX_REQUEST_STATE_LEN`] bytes ([`RequestState`]), to link
//! the rounds of one logical call (`crate::rounds`).
//!
//! Only the message object, a batch array and the `result`/`error` objects are parsed member by
//! member. Every other container (a tool's `inputSchema`, `structuredContent`, …) is skipped
//! with a depth counter and no state per level: its depth does not matter, and its content is
//! not interpreted or validated (only strings and brackets are followed to find its end).

mod scanner;
#[cfg(test)]
mod tests;

pub use scanner::JsonScanner;

use crate::inventory::Captured;
use crate::jsonrpc::Id;
use crate::sse::{EventSink, SseScanner};

/// Longest raw `id` kept for correlation, in bytes; longer ids never match. Six times the
/// request-side limit ([`crate::jsonrpc::MAX_REQUEST_ID_LEN`]): a server may spell every
/// character of a string id as a `\uXXXX` escape (six bytes for one byte of the request), and
/// the SDKs decode any such spelling to the same id.
pub const MAX_ID_LEN: usize = 6 * crate::jsonrpc::MAX_REQUEST_ID_LEN;

/// The `result.resultType` of an `InputRequiredResult` (MCP 2026-07-28, schema
/// `InputRequiredResult`); absent, `"complete"` or any other type is a final result.
pub const INPUT_REQUIRED: &str = "input_required";

/// Longest `result.requestState` kept, in bytes once its escapes are decoded. A longer one
/// (the Python SDK's sealed states take a few hundred bytes) leaves its round unlinkable
/// ([`RequestState::Unlinkable`]): the retry cannot be matched, and is counted as a new call.
pub const MAX_REQUEST_STATE_LEN: usize = 4096;

/// The `result.requestState` of a response, as the scanner read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RequestState {
    /// No `requestState` member, or `null` (the Python SDK reads `null` as absent).
    #[default]
    Absent,
    /// A string, escapes decoded, at most [`MAX_REQUEST_STATE_LEN`] bytes.
    Kept(String),
    /// A string too long to keep, or one serde_json cannot decode (a lone surrogate escape).
    Unlinkable,
    /// Not a string: an `InputRequiredResult` with it is malformed (the SDKs refuse it).
    NotString,
}

/// How one JSON-RPC request ended, as seen in its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A `result` object without `isError: true`.
    Success,
    /// A `result` with `isError: true` (a tool execution error).
    ToolError,
    /// An `error` member; its `code`, when it was an integer.
    Error(Option<i64>),
    /// A response (`result` or `error`, no `method`) that no reader takes as one unambiguous,
    /// valid response: see [`Summary::malformed`]. Audited `upstream_error`, never `success`.
    Malformed,
    /// A `result` with `resultType: "input_required"` (MCP 2026-07-28): the server asks the
    /// client for input, and the client retries the call with a new id. Audited
    /// `input_required`, not `success`.
    InputRequired,
}

/// What the scanner learned about one JSON-RPC message on the response stream.
///
/// Member names are compared after their escapes are decoded; a member nested deeper than
/// its own place (an `id` inside `result`, an `isError` inside `content`) is not it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Raw JSON text of the last `id` (escapes kept, as the server spelled it); `None` when
    /// absent, not a scalar, or longer than [`MAX_ID_LEN`]. [`Id::from_raw`] decodes it.
    pub id: Option<Vec<u8>>,
    /// The message has a `method` member (a server request or notification).
    pub has_method: bool,
    /// The message has a `result` member.
    pub has_result: bool,
    /// The message has an `error` member.
    pub has_error: bool,
    /// The last `error.code`, when an integer (in `i64`).
    pub error_code: Option<i64>,
    /// The last `result.isError` is `true`.
    pub is_error: bool,
    /// The message cannot be read as exactly one valid response: `jsonrpc` is missing or not
    /// `"2.0"`; `jsonrpc`, `id`, `result`, `error`, `result.isError` or `error.code` appears
    /// twice (the TypeScript and Python SDKs keep the last, serde_json refuses the message);
    /// `result` is not an object; or `result.isError` is not `true` or `false` (pydantic reads
    /// `"true"`, `1` and `"yes"` as true, `0` as false; the TypeScript SDK refuses them all);
    /// `result.resultType` or `result.requestState` appears twice, or `result.resultType` is
    /// neither a string nor `null`.
    pub malformed: bool,
    /// The last `result.resultType` is the string `input_required` (escapes decoded).
    pub input_required: bool,
    /// The last `result.requestState`.
    pub request_state: RequestState,
    /// What the inventory capture read in `result` ([`JsonScanner::with_inventory`]); `None`
    /// without the capture, or when the result has none of its members.
    pub inventory: Option<Box<Captured>>,
}

impl Summary {
    /// The outcome this message reports, if it is a response: `None` for a message with a
    /// `method`, or with neither `result` nor `error`. Otherwise, in this order:
    /// [`Outcome::Malformed`] when [`Summary::malformed`], or for an `input_required` result
    /// whose `requestState` is not a string; [`Outcome::Error`] when there is an
    /// `error` (also with a `result`: the Python SDK then reads an error, the TypeScript SDK
    /// refuses the message); [`Outcome::InputRequired`] when `result.resultType` is
    /// `input_required` (the type decides how the SDKs read the result); [`Outcome::ToolError`]
    /// when `result.isError` is `true`; else [`Outcome::Success`].
    pub fn outcome(&self) -> Option<Outcome> {
        let input_required = self.has_result && self.input_required;
        if self.has_method || !(self.has_result || self.has_error) {
            None
        } else if self.malformed
            || (input_required && self.request_state == RequestState::NotString)
        {
            Some(Outcome::Malformed)
        } else if self.has_error {
            Some(Outcome::Error(self.error_code))
        } else if input_required {
            Some(Outcome::InputRequired)
        } else if self.is_error {
            Some(Outcome::ToolError)
        } else {
            Some(Outcome::Success)
        }
    }
}

/// The requests a stream waits for, and what became of each.
#[derive(Debug, Clone, Default)]
pub struct Correlator {
    expected: Vec<(Id, Option<Outcome>)>,
    /// The `requestState` of each [`Outcome::InputRequired`] answer, by request id.
    states: Vec<(Id, RequestState)>,
    /// The inventory capture of each answer that had one, by request id.
    captured: Vec<(Id, Box<Captured>)>,
    unmatched_error: Option<Option<i64>>,
    messages: u64,
}

impl Correlator {
    /// Waits for responses to `ids` (the forwarded requests' ids, in order).
    pub fn new(ids: Vec<Id>) -> Self {
        Correlator {
            expected: ids.into_iter().map(|id| (id, None)).collect(),
            ..Self::default()
        }
    }

    /// Records one scanned message: a response whose id matches a request not yet answered
    /// settles it; an error response that matches nothing (for example `id: null`) is kept as
    /// the stream-level error.
    pub fn observe(&mut self, message: &Summary) {
        self.messages += 1;
        let Some(outcome) = message.outcome() else {
            return;
        };
        let id = message
            .id
            .as_deref()
            .and_then(|raw| std::str::from_utf8(raw).ok())
            .and_then(Id::from_raw);
        let slot = id.and_then(|id| {
            self.expected
                .iter_mut()
                .find(|(want, got)| *want == id && got.is_none())
        });
        match (slot, outcome) {
            (Some((id, got)), _) => {
                *got = Some(outcome);
                if let Some(captured) = &message.inventory {
                    self.captured.push((id.clone(), captured.clone()));
                }
                if outcome == Outcome::InputRequired {
                    self.states
                        .push((id.clone(), message.request_state.clone()));
                }
            }
            (None, Outcome::Error(code)) if self.unmatched_error.is_none() => {
                self.unmatched_error = Some(code)
            }
            (None, _) => {}
        }
    }

    /// Whether every expected request has its outcome (the rest of the body need not be read).
    pub fn complete(&self) -> bool {
        self.expected.iter().all(|(_, got)| got.is_some())
    }

    /// The outcome of request `id`, if its response was seen.
    pub fn outcome(&self, id: &Id) -> Option<Outcome> {
        self.expected
            .iter()
            .find(|(want, _)| want == id)
            .and_then(|(_, got)| *got)
    }

    /// The `requestState` of request `id`'s [`Outcome::InputRequired`] answer, if it had one.
    pub fn request_state(&self, id: &Id) -> Option<&RequestState> {
        self.states
            .iter()
            .find(|(want, _)| want == id)
            .map(|(_, state)| state)
    }

    /// The inventory capture of request `id`'s answer, if it had one (only with
    /// [`ResponseScanner::with_inventory`]).
    pub fn captured(&self, id: &Id) -> Option<&Captured> {
        self.captured
            .iter()
            .find(|(want, _)| want == id)
            .map(|(_, c)| c.as_ref())
    }

    /// The code of the first error response that matched no request (`Some(None)` when that
    /// error had no integer code).
    pub fn unmatched_error(&self) -> Option<Option<i64>> {
        self.unmatched_error
    }

    /// JSON-RPC messages seen on the stream so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }
}

/// The kind of body a response carries, from its `content-type` (media type compared
/// case-insensitively, parameters ignored; RFC 9110 §8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json`.
    Json,
    /// `text/event-stream`.
    EventStream,
    /// Anything else: not scanned.
    Other,
}

impl BodyKind {
    /// Classifies a `content-type` header value.
    pub fn from_content_type(value: Option<&str>) -> BodyKind {
        let media = value
            .and_then(|v| v.split(';').next())
            .map(str::trim)
            .unwrap_or_default();
        if media.eq_ignore_ascii_case("application/json") {
            BodyKind::Json
        } else if media.eq_ignore_ascii_case("text/event-stream") {
            BodyKind::EventStream
        } else {
            BodyKind::Other
        }
    }
}

/// Longest event data kept by [`TextEvents`], in bytes.
pub const MAX_TEXT_EVENT: usize = 512;

/// Keeps the start of each SSE event's data, to find events whose data is not JSON (the legacy
/// HTTP+SSE transport's `endpoint` event carries a URI). Bounded: at most
/// [`MAX_TEXT_EVENT`] bytes, whatever the event's size.
#[derive(Debug, Clone, Default)]
struct TextEvents {
    current: Vec<u8>,
    /// The data of the most recent complete event that did not start with `{` or `[`.
    last: Option<String>,
}

impl TextEvents {
    fn data(&mut self, bytes: &[u8]) {
        let room = MAX_TEXT_EVENT.saturating_sub(self.current.len());
        self.current
            .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
    }
    fn dispatch(&mut self) {
        let text = String::from_utf8_lossy(&self.current);
        let text = text.trim();
        if !text.is_empty() && !text.starts_with(['{', '[']) && self.current.len() < MAX_TEXT_EVENT
        {
            self.last = Some(text.to_owned());
        }
        self.current.clear();
    }
}

/// Feeds SSE `data` into a [`JsonScanner`], one document per event.
struct SseToJson<'a, F: FnMut(&Summary)> {
    json: &'a mut JsonScanner,
    text: Option<&'a mut TextEvents>,
    emit: &'a mut F,
}

impl<F: FnMut(&Summary)> EventSink for SseToJson<'_, F> {
    fn data(&mut self, bytes: &[u8]) {
        if let Some(text) = self.text.as_deref_mut() {
            text.data(bytes);
        }
        self.json.feed(bytes, self.emit);
    }
    fn data_to_line_end(&mut self, rest: &[u8]) -> Option<usize> {
        let end = self.json.feed_to_line_end(rest, self.emit);
        if let Some(text) = self.text.as_deref_mut() {
            text.data(rest.get(..end.unwrap_or(rest.len())).unwrap_or_default());
        }
        end
    }
    fn data_line_end(&mut self) {
        self.json.feed(b"\n", self.emit);
    }
    fn dispatch(&mut self) {
        if let Some(text) = self.text.as_deref_mut() {
            text.dispatch();
        }
        self.json.end_document();
    }
}

/// Scans one response body of a known [`BodyKind`] into a [`Correlator`] (or any consumer of
/// [`Summary`]s). Memory is constant in the body size.
#[derive(Debug, Clone)]
pub struct ResponseScanner {
    kind: BodyKind,
    sse: SseScanner,
    json: JsonScanner,
    text: Option<TextEvents>,
}

impl ResponseScanner {
    /// A scanner for a body of `kind`.
    pub fn new(kind: BodyKind) -> Self {
        ResponseScanner {
            kind,
            sse: SseScanner::new(),
            json: JsonScanner::new(),
            text: None,
        }
    }

    /// A scanner that also keeps the data of SSE events that are not JSON (at most
    /// [`MAX_TEXT_EVENT`] bytes each), for [`ResponseScanner::take_text_event`].
    pub fn with_text_events(kind: BodyKind) -> Self {
        ResponseScanner {
            text: Some(TextEvents::default()),
            ..Self::new(kind)
        }
    }

    /// A scanner that also captures the server inventory's members of each result
    /// ([`JsonScanner::with_inventory`]), for a stream that carries an `initialize` or
    /// `server/discover` request, or a server stream.
    pub fn with_inventory(mut self) -> Self {
        self.json = JsonScanner::with_inventory();
        self
    }

    /// Scans one body chunk.
    pub fn feed(&mut self, chunk: &[u8], correlator: &mut Correlator) {
        self.feed_each(chunk, &mut |s: &Summary| correlator.observe(s));
    }

    /// Scans one body chunk, calling `emit` for every JSON-RPC message completed in it.
    pub fn feed_each(&mut self, chunk: &[u8], emit: &mut impl FnMut(&Summary)) {
        match self.kind {
            BodyKind::Json => self.json.feed(chunk, emit),
            BodyKind::EventStream => {
                self.sse.feed(
                    chunk,
                    &mut SseToJson {
                        json: &mut self.json,
                        text: self.text.as_mut(),
                        emit,
                    },
                );
            }
            BodyKind::Other => {}
        }
    }

    /// The data of the latest complete SSE event that was not JSON (shorter than
    /// [`MAX_TEXT_EVENT`] bytes, trimmed), taken once; only with
    /// [`ResponseScanner::with_text_events`].
    pub fn take_text_event(&mut self) -> Option<String> {
        self.text.as_mut().and_then(|t| t.last.take())
    }

    /// SSE events seen so far (0 for JSON bodies).
    pub fn sse_events(&self) -> u64 {
        self.sse.events()
    }

    /// Ends the body.
    pub fn finish(&mut self, correlator: &mut Correlator) {
        let mut emit = |s: &Summary| correlator.observe(s);
        match self.kind {
            BodyKind::Json => self.json.end_document(),
            BodyKind::EventStream => self.sse.finish(&mut SseToJson {
                json: &mut self.json,
                text: self.text.as_mut(),
                emit: &mut emit,
            }),
            BodyKind::Other => {}
        }
    }
}
