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
//! Only the message object, a batch array and the `result`/`error` objects are parsed member by
//! member. Every other container (a tool's `inputSchema`, `structuredContent`, …) is skipped
//! with a depth counter and no state per level: its depth does not matter, and its content is
//! not interpreted or validated (only strings and brackets are followed to find its end).

use crate::json;
use crate::jsonrpc::Id;
use crate::sse::{EventSink, SseScanner};
use std::borrow::Cow;

/// Longest raw `id` kept for correlation, in bytes; longer ids never match. Six times the
/// request-side limit ([`crate::jsonrpc::MAX_REQUEST_ID_LEN`]): a server may spell every
/// character of a string id as a `\uXXXX` escape (six bytes for one byte of the request), and
/// the SDKs decode any such spelling to the same id.
pub const MAX_ID_LEN: usize = 6 * crate::jsonrpc::MAX_REQUEST_ID_LEN;
/// Longest raw member name kept, in bytes, escapes included: the longest name read here
/// (`jsonrpc`, `isError`: seven ASCII characters) with every character escaped as `\uXXXX`.
/// A longer name decodes to a longer string, so it is none of them.
const MAX_KEY_LEN: usize = 7 * 6;
const MAX_SCALAR_LEN: usize = 32;
/// Containers parsed member by member: a batch array, a message object, its `result` or
/// `error` object.
const MAX_PARSED_DEPTH: usize = 3;

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
    /// `"true"`, `1` and `"yes"` as true, `0` as false; the TypeScript SDK refuses them all).
    pub malformed: bool,
}

impl Summary {
    /// The outcome this message reports, if it is a response: `None` for a message with a
    /// `method`, or with neither `result` nor `error`. Otherwise, in this order:
    /// [`Outcome::Malformed`] when [`Summary::malformed`]; [`Outcome::Error`] when there is an
    /// `error` (also with a `result`: the Python SDK then reads an error, the TypeScript SDK
    /// refuses the message); [`Outcome::ToolError`] when `result.isError` is `true`; else
    /// [`Outcome::Success`].
    pub fn outcome(&self) -> Option<Outcome> {
        if self.has_method || !(self.has_result || self.has_error) {
            None
        } else if self.malformed {
            Some(Outcome::Malformed)
        } else if self.has_error {
            Some(Outcome::Error(self.error_code))
        } else if self.is_error {
            Some(Outcome::ToolError)
        } else {
            Some(Outcome::Success)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Other,
    Jsonrpc,
    Id,
    Method,
    Result,
    Error,
    ErrorCode,
    IsError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Value,
    ArrayFirst,
    KeyOrClose,
    Key,
    Colon,
    AfterValue,
    Str {
        key: bool,
    },
    Escape {
        key: bool,
    },
    Scalar,
    /// Inside a skipped container ([`JsonScanner::skip_depth`] open brackets), outside strings.
    Skip,
    /// In a string inside a skipped container.
    SkipStr,
    SkipEscape,
    Broken,
}

/// Members seen in the current message (bit per [`Member`]), to find duplicates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seen(u8);

impl Seen {
    /// Marks `member` seen; true when it already was.
    fn again(&mut self, member: Member) -> bool {
        let bit = 1u8 << (member as u8);
        let again = self.0 & bit != 0;
        self.0 |= bit;
        again
    }
}

/// Streaming scanner over a sequence of JSON documents (one per SSE event, or one body).
///
/// A document whose root is an object is one message; a root array is a batch whose object
/// elements are messages. Syntax errors in the parts parsed member by member (the root, the
/// messages, their `result` and `error` objects) and member names that do not decode abandon
/// the rest of the document. Other values are skipped without state per nesting level.
#[derive(Debug, Clone)]
pub struct JsonScanner {
    state: State,
    /// Open containers parsed member by member, innermost last (`{` or `[`).
    parsed: [u8; MAX_PARSED_DEPTH],
    depth: usize,
    /// Open brackets of the container being skipped (0: not skipping). Counts only: no limit
    /// on the depth of a skipped value (a `u64` cannot overflow on a real stream).
    skip_depth: u64,
    /// Depth at which message members live: 1 for an object root, 2 for a batch.
    level: usize,
    key: [u8; MAX_KEY_LEN],
    key_len: usize,
    key_overflow: bool,
    top_member: Member,
    value_member: Member,
    capture: Vec<u8>,
    capture_overflow: bool,
    seen: Seen,
    current: Summary,
    version_ok: bool,
}

impl Default for JsonScanner {
    fn default() -> Self {
        JsonScanner {
            state: State::Value,
            parsed: [0; MAX_PARSED_DEPTH],
            depth: 0,
            skip_depth: 0,
            level: 0,
            key: [0; MAX_KEY_LEN],
            key_len: 0,
            key_overflow: false,
            top_member: Member::Other,
            value_member: Member::Other,
            capture: Vec::new(),
            capture_overflow: false,
            seen: Seen::default(),
            current: Summary::default(),
            version_ok: false,
        }
    }
}

fn is_line_end(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

impl JsonScanner {
    /// A scanner at the start of a document.
    pub fn new() -> Self {
        Self::default()
    }

    /// Scans a chunk; `emit` is called once per complete message.
    pub fn feed(&mut self, chunk: &[u8], emit: &mut impl FnMut(&Summary)) {
        self.scan::<false>(chunk, emit);
    }

    /// Scans `rest` up to its first line end (`\n` or `\r`), and returns that line end's
    /// offset (`None`: `rest` has none and was scanned whole). For SSE `data:` lines
    /// ([`crate::sse::EventSink::data_to_line_end`]): the line end is found in the same pass as
    /// the JSON, so a large event is read once. A line end inside a JSON string (which JSON
    /// forbids unescaped) ends the line all the same, as it does for an SSE client.
    pub fn feed_to_line_end(
        &mut self,
        rest: &[u8],
        emit: &mut impl FnMut(&Summary),
    ) -> Option<usize> {
        self.scan::<true>(rest, emit)
    }

    /// [`JsonScanner::feed`] (`TO_LINE_END` false: every byte is JSON) and
    /// [`JsonScanner::feed_to_line_end`] (true: stop before the first line end).
    fn scan<const TO_LINE_END: bool>(
        &mut self,
        chunk: &[u8],
        emit: &mut impl FnMut(&Summary),
    ) -> Option<usize> {
        let offset = |rest: &[u8]| chunk.len() - rest.len();
        let mut rest = chunk;
        while let Some((&b, tail)) = rest.split_first() {
            if TO_LINE_END && is_line_end(b) {
                return Some(offset(rest));
            }
            match self.state {
                State::Broken if TO_LINE_END => {
                    return memchr::memchr2(b'\n', b'\r', rest).map(|at| offset(rest) + at);
                }
                State::Broken => return None,
                State::Str { .. } | State::SkipStr => {
                    // Fast path: copy up to the next quote or backslash (or line end).
                    let stop = if TO_LINE_END {
                        json::string_or_line_end(rest)
                    } else {
                        json::string_stop(rest)
                    };
                    let (text, after) = rest.split_at(stop.unwrap_or(rest.len()));
                    if let State::Str { key } = self.state {
                        self.take(text, key);
                    }
                    rest = after;
                    if let Some((&c, tail)) = rest.split_first() {
                        if TO_LINE_END && is_line_end(c) {
                            return Some(offset(rest));
                        }
                        match self.state {
                            State::Str { key } => {
                                // Value captures keep their quotes (raw JSON); keys keep
                                // escapes only.
                                if !key || c == b'\\' {
                                    self.take(&[c], key);
                                }
                                if c == b'\\' {
                                    self.state = State::Escape { key };
                                } else {
                                    self.end_string(key);
                                }
                            }
                            _ if c == b'\\' => self.state = State::SkipEscape,
                            _ => self.state = State::Skip,
                        }
                        rest = tail;
                    }
                    continue;
                }
                State::Escape { key } => {
                    self.take(&[b], key);
                    self.state = State::Str { key };
                }
                State::SkipEscape => self.state = State::SkipStr,
                State::Skip => {
                    // Only strings and brackets matter in a skipped value.
                    let stop = json::quote_or_bracket::<TO_LINE_END>(rest);
                    rest = rest.get(stop.unwrap_or(rest.len())..).unwrap_or_default();
                    if let Some((&c, tail)) = rest.split_first() {
                        if TO_LINE_END && is_line_end(c) {
                            return Some(offset(rest));
                        }
                        match c {
                            b'"' => self.state = State::SkipStr,
                            b'{' | b'[' => self.skip_depth = self.skip_depth.saturating_add(1),
                            _ => {
                                self.skip_depth = self.skip_depth.saturating_sub(1);
                                if self.skip_depth == 0 {
                                    self.end_value();
                                }
                            }
                        }
                        rest = tail;
                    }
                    continue;
                }
                State::Scalar => {
                    if json::is_ws(b) || matches!(b, b',' | b'}' | b']') {
                        self.end_value();
                        continue; // re-read the delimiter in AfterValue
                    }
                    self.take(&[b], false);
                }
                _ if json::is_ws(b) => {}
                State::Value => self.start_value(b),
                State::ArrayFirst => {
                    if b == b']' {
                        self.close(b, emit);
                    } else {
                        self.start_value(b);
                    }
                }
                State::KeyOrClose | State::Key => {
                    if b == b'"' {
                        self.key_len = 0;
                        self.key_overflow = false;
                        self.state = State::Str { key: true };
                    } else if b == b'}' && self.state == State::KeyOrClose {
                        self.close(b, emit);
                    } else {
                        self.state = State::Broken;
                    }
                }
                State::Colon => {
                    self.state = if b == b':' {
                        State::Value
                    } else {
                        State::Broken
                    };
                }
                State::AfterValue => match (b, self.open()) {
                    (b',', Some(b'{')) => self.state = State::Key,
                    (b',', Some(_)) => self.state = State::Value,
                    (b'}', Some(b'{')) | (b']', Some(b'[')) => self.close(b, emit),
                    _ => self.state = State::Broken,
                },
            }
            rest = tail;
        }
        None
    }

    /// Ends the current document (end of an SSE event or of a JSON body) and gets ready for
    /// the next. An incomplete document yields nothing.
    pub fn end_document(&mut self) {
        // Keep the small allocation for the next document.
        let mut capture = std::mem::take(&mut self.capture);
        capture.clear();
        *self = JsonScanner {
            capture,
            ..JsonScanner::default()
        };
    }

    /// The innermost open container parsed member by member (`{` or `[`).
    fn open(&self) -> Option<u8> {
        self.depth
            .checked_sub(1)
            .and_then(|i| self.parsed.get(i))
            .copied()
    }

    fn take(&mut self, bytes: &[u8], key: bool) {
        if key {
            for &b in bytes {
                match self.key.get_mut(self.key_len) {
                    Some(slot) => {
                        *slot = b;
                        self.key_len += 1;
                    }
                    None => self.key_overflow = true,
                }
            }
        } else if self.capturing() && !self.capture_overflow {
            if self.capture.len() + bytes.len() > self.capture_limit() {
                self.capture_overflow = true;
            } else {
                self.capture.extend_from_slice(bytes);
            }
        }
    }

    fn capturing(&self) -> bool {
        matches!(
            self.value_member,
            Member::Jsonrpc | Member::Id | Member::ErrorCode | Member::IsError
        )
    }

    fn capture_limit(&self) -> usize {
        if self.value_member == Member::Id {
            MAX_ID_LEN
        } else {
            MAX_SCALAR_LEN
        }
    }

    fn start_value(&mut self, b: u8) {
        match b {
            b'{' | b'[' => {
                // Parsed member by member: the root, a batch's message objects, and a
                // message's `result` or `error` object. Anything else is skipped.
                let parse = self.depth == 0
                    || (b == b'{'
                        && ((self.depth == 1 && self.level == 2)
                            || (self.depth == self.level
                                && matches!(self.value_member, Member::Result | Member::Error))));
                // A container where a scalar belongs.
                match self.value_member {
                    Member::Result if b == b'[' => self.current.malformed = true,
                    Member::IsError => self.current.malformed = true,
                    _ => {}
                }
                self.value_member = Member::Other;
                if !parse {
                    self.skip_depth = 1;
                    self.state = State::Skip;
                    return;
                }
                if self.depth == 0 {
                    self.level = if b == b'{' { 1 } else { 2 };
                }
                let Some(slot) = self.parsed.get_mut(self.depth) else {
                    self.state = State::Broken; // not reached: at most three levels are parsed
                    return;
                };
                *slot = b;
                self.depth += 1;
                if b == b'{' && self.depth == self.level {
                    self.current = Summary::default();
                    self.seen = Seen::default();
                    self.version_ok = false;
                }
                self.state = if b == b'{' {
                    State::KeyOrClose
                } else {
                    State::ArrayFirst
                };
            }
            b'"' => {
                self.begin_capture();
                self.take(b"\"", false);
                self.state = State::Str { key: false };
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                self.begin_capture();
                self.take(&[b], false);
                self.state = State::Scalar;
            }
            _ => self.state = State::Broken,
        }
    }

    fn begin_capture(&mut self) {
        self.capture.clear();
        self.capture_overflow = false;
    }

    fn end_string(&mut self, key: bool) {
        if key {
            self.end_key();
        } else {
            self.end_value();
        }
    }

    fn end_key(&mut self) {
        let raw = self.key.get(..self.key_len).unwrap_or_default();
        let name = if self.key_overflow {
            Cow::Borrowed(&b""[..]) // longer than any name read here, however spelled
        } else {
            // The request parser's decoder. A name it cannot decode (a bad escape, a lone
            // surrogate) makes the message unreadable to serde_json and to the Python SDK: the
            // document is abandoned.
            match json::decode_key(raw) {
                Some(name) => name,
                None => {
                    self.state = State::Broken;
                    return;
                }
            }
        };
        let member = if self.depth == self.level {
            let member = match name.as_ref() {
                b"jsonrpc" => Member::Jsonrpc,
                b"id" => Member::Id,
                b"method" => Member::Method,
                b"result" => Member::Result,
                b"error" => Member::Error,
                _ => Member::Other,
            };
            self.top_member = member;
            member
        } else {
            match (self.top_member, name.as_ref()) {
                (Member::Error, b"code") => Member::ErrorCode,
                (Member::Result, b"isError") => Member::IsError,
                _ => Member::Other,
            }
        };
        if member != Member::Other && member != Member::Method && self.seen.again(member) {
            self.current.malformed = true;
        }
        // The last occurrence counts, as in the SDK readers.
        match member {
            Member::Jsonrpc => self.version_ok = false,
            Member::Id => self.current.id = None,
            Member::Method => self.current.has_method = true,
            Member::Result => self.current.has_result = true,
            Member::Error => self.current.has_error = true,
            Member::ErrorCode => self.current.error_code = None,
            Member::IsError => self.current.is_error = false,
            Member::Other => {}
        }
        self.value_member = member;
        self.state = State::Colon;
    }

    fn end_value(&mut self) {
        let raw = (!self.capture_overflow).then_some(self.capture.as_slice());
        match (self.value_member, raw) {
            (Member::Id, Some(raw)) => self.current.id = Some(raw.to_vec()),
            (Member::ErrorCode, Some(raw)) => {
                self.current.error_code = std::str::from_utf8(raw)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok());
            }
            (Member::IsError, Some(b"true")) => self.current.is_error = true,
            (Member::IsError, Some(b"false")) => {}
            (Member::IsError, _) => self.current.malformed = true,
            (Member::Jsonrpc, Some(raw)) => {
                self.version_ok = raw == b"\"2.0\""
                    || (raw.first() == Some(&b'"')
                        && serde_json::from_slice::<String>(raw).is_ok_and(|v| v == "2.0"));
            }
            (Member::Result, _) => self.current.malformed = true, // a scalar result
            _ => {}
        }
        self.value_member = Member::Other;
        self.state = State::AfterValue;
    }

    fn close(&mut self, b: u8, emit: &mut impl FnMut(&Summary)) {
        if b == b'}' && self.depth == self.level {
            if !self.version_ok {
                self.current.malformed = true;
            }
            emit(&self.current);
        }
        self.depth = self.depth.saturating_sub(1);
        self.value_member = Member::Other;
        self.state = if self.depth == 0 {
            // Document complete; anything after it starts a new one.
            self.level = 0;
            State::Value
        } else {
            State::AfterValue
        };
    }
}

/// The requests a stream waits for, and what became of each.
#[derive(Debug, Clone, Default)]
pub struct Correlator {
    expected: Vec<(Id, Option<Outcome>)>,
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
            (Some((_, got)), _) => *got = Some(outcome),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn summaries(doc: &[u8]) -> Vec<Summary> {
        let mut out = Vec::new();
        let mut s = JsonScanner::new();
        s.feed(doc, &mut |m: &Summary| out.push(m.clone()));
        s.end_document();
        out
    }

    fn num(n: &str) -> Id {
        Id::Number(n.into())
    }

    fn correlate(kind: BodyKind, ids: Vec<Id>, chunks: &[&[u8]]) -> Correlator {
        let mut c = Correlator::new(ids);
        let mut r = ResponseScanner::new(kind);
        for chunk in chunks {
            r.feed(chunk, &mut c);
        }
        r.finish(&mut c);
        c
    }

    #[test]
    fn finds_result_error_and_tool_error() {
        let s = summaries(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"}{\"id\":9"}],"isError":true}}"#);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].id.as_deref(), Some(&b"1"[..]));
        assert_eq!(s[0].outcome(), Some(Outcome::ToolError));
        let s = summaries(br#"{"result":{"isError":false},"id":"a\"b","jsonrpc":"2.0"}"#);
        assert_eq!(
            (s[0].id.as_deref(), s[0].outcome()),
            (Some(&br#""a\"b""#[..]), Some(Outcome::Success))
        );
        let s = summaries(br#"{"jsonrpc":"2.0","id":null,"error":{"message":"x","code":-32600,"data":{"code":5}}}"#);
        assert_eq!(s[0].outcome(), Some(Outcome::Error(Some(-32600))));
    }

    #[test]
    fn nested_members_do_not_confuse_the_scanner() {
        // `id`, `isError` and `code` deeper than their own level are ignored.
        let s = summaries(br#"{"jsonrpc":"2.0","result":{"content":[{"id":5,"isError":true}],"structured":{"error":{"code":1}}},"id":2}"#);
        assert_eq!(
            (s[0].id.as_deref(), s[0].outcome()),
            (Some(&b"2"[..]), Some(Outcome::Success))
        );
    }

    #[test]
    fn requests_and_notifications_on_the_stream_are_not_responses() {
        let s =
            summaries(br#"{"jsonrpc":"2.0","id":1,"method":"sampling/createMessage","params":{}}"#);
        assert_eq!(s[0].outcome(), None);
        let c = correlate(
            BodyKind::Json,
            vec![num("1")],
            &[br#"{"jsonrpc":"2.0","id":1,"method":"roots/list"}"#],
        );
        assert_eq!(c.outcome(&num("1")), None);
    }

    #[test]
    fn batch_responses() {
        let c = correlate(
            BodyKind::Json,
            vec![num("1"), Id::Str("2".into())],
            &[br#"[{"jsonrpc":"2.0","id":"2","error":{"code":-32601,"message":"no"}},{"jsonrpc":"2.0","id":1,"result":{}}]"#],
        );
        assert_eq!(c.outcome(&num("1")), Some(Outcome::Success));
        assert_eq!(
            c.outcome(&Id::Str("2".into())),
            Some(Outcome::Error(Some(-32601)))
        );
        assert!(c.complete());
    }

    #[test]
    fn number_and_string_ids_are_not_confused() {
        let c = correlate(
            BodyKind::Json,
            vec![num("1")],
            &[br#"{"jsonrpc":"2.0","id":"1","result":{}}"#],
        );
        assert_eq!(c.outcome(&num("1")), None);
        assert!(!c.complete());
        let big = "123456789012345678901234567890";
        let body = format!(r#"{{"jsonrpc":"2.0","id":{big},"result":{{}}}}"#);
        let c = correlate(
            BodyKind::Json,
            vec![num("123456789012345678901234567891")],
            &[body.as_bytes()],
        );
        assert_eq!(c.outcome(&num("123456789012345678901234567891")), None);
    }

    #[test]
    fn sse_stream_split_at_every_byte_with_crlf_and_notifications() {
        let stream = b": ping\r\n\r\nid: 0\r\ndata: \r\n\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"id\":7}}\r\n\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\r\ndata: \"result\":{\"isError\":true}}\r\n\r\n";
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        let c = correlate(BodyKind::EventStream, vec![num("7")], &chunks);
        assert_eq!(c.outcome(&num("7")), Some(Outcome::ToolError));
        assert_eq!(c.messages(), 2);
    }

    #[test]
    fn a_string_stops_at_a_quote_backslash_or_line_end_and_nowhere_else() {
        // Offsets across whole 64-byte blocks and the remainder after them.
        for len in [0, 1, 63, 64, 65, 130, 200, 700] {
            let mut text = vec![b'a'; len];
            assert_eq!(json::string_or_line_end(&text), None, "len {len}");
            // Every other byte value (control bytes, bytes that share a stop's low or high
            // nibble, non-ASCII) is content.
            let others = (0..=255u8).filter(|b| !b"\"\\\n\r".contains(b));
            for (at, b) in (0..len).zip(others.cycle()) {
                text[at] = b;
            }
            assert_eq!(json::string_or_line_end(&text), None, "len {len}");
            for at in 0..len {
                for stop in [b'"', b'\\', b'\n', b'\r'] {
                    let mut t = text.clone();
                    t[at] = stop;
                    if at + 1 < len {
                        t[len - 1] = b'"'; // a later stop does not hide the first
                    }
                    assert_eq!(
                        json::string_or_line_end(&t),
                        Some(at),
                        "len {len} at {at} {stop}"
                    );
                }
            }
        }
    }

    /// SSE data into a JsonScanner through `EventSink::data` only: the line ends are found by
    /// the SSE scanner's own search (the trait's default `data_to_line_end`).
    struct TwoPass<'a>(&'a mut JsonScanner, &'a mut Vec<Summary>);

    impl EventSink for TwoPass<'_> {
        fn data(&mut self, bytes: &[u8]) {
            let out = &mut *self.1;
            self.0.feed(bytes, &mut |m: &Summary| out.push(m.clone()));
        }
        fn data_line_end(&mut self) {
            let out = &mut *self.1;
            self.0.feed(b"\n", &mut |m: &Summary| out.push(m.clone()));
        }
        fn dispatch(&mut self) {
            self.0.end_document();
        }
    }

    #[test]
    fn one_pass_over_sse_data_sees_what_two_passes_see() {
        let long = "x".repeat(150);
        let streams = [
            format!("data: {{\"id\":1,\"result\":{{\"text\":\"{long}\",\"isError\":true}}}}\n\n"),
            // Line ends inside a string (invalid JSON) end the line for an SSE client too.
            format!("data: {{\"id\":2,\"result\":{{\"a\":\"{long}\r\ndata: \",\"isError\":true}}}}\r\n\r\n"),
            format!("data: {{\"id\":3,\"result\":{{\"a\":\"{long}\rdata: x\\\n\ndata: {{\"jsonrpc\":\"2.0\",\"id\":4,\"error\":{{\"code\":-1}}}}\n\n"),
            format!("data: {{\"id\":\"a\\\"\\\\{long}\",\n\ndata:\"result\":{{}}}}\n\n"),
            format!("data: {{\"id\":5,\"result\":{{\"t\":\"{long}\t\u{1}é\",\"isError\":false}}}}\n\n"),
            "data: {\"id\":6,\"result\"\r:{}}\n\ndata: {oops \"x\nevent: m\ndata: {\"id\":7,\"result\":{}}\n\n".to_owned(),
        ];
        for stream in &streams {
            for size in [1, 2, 7, 64, 100, stream.len()] {
                let mut fused = Vec::new();
                let mut r = ResponseScanner::new(BodyKind::EventStream);
                for chunk in stream.as_bytes().chunks(size) {
                    r.feed_each(chunk, &mut |m: &Summary| fused.push(m.clone()));
                }
                let (mut json, mut sse, mut two) =
                    (JsonScanner::new(), SseScanner::new(), Vec::new());
                for chunk in stream.as_bytes().chunks(size) {
                    sse.feed(chunk, &mut TwoPass(&mut json, &mut two));
                }
                assert_eq!(fused, two, "{stream:?} in {size}-byte chunks");
            }
        }
        // The streams above do exercise both outcomes and the split strings.
        let mut all = Vec::new();
        let mut r = ResponseScanner::new(BodyKind::EventStream);
        r.feed_each(streams[2].as_bytes(), &mut |m: &Summary| {
            all.push(m.clone())
        });
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].outcome(), Some(Outcome::Error(Some(-1))));
    }

    #[test]
    fn unmatched_error_is_kept() {
        let c = correlate(
            BodyKind::Json,
            vec![num("3")],
            &[br#"{"jsonrpc":"2.0","id":"server-error","error":{"code":-32600,"message":"Bad Request: No valid session ID provided"}}"#],
        );
        assert_eq!(c.outcome(&num("3")), None);
        assert_eq!(c.unmatched_error(), Some(Some(-32600)));
    }

    #[test]
    fn huge_result_is_scanned_in_constant_memory() {
        let mut c = Correlator::new(vec![num("5")]);
        let mut r = ResponseScanner::new(BodyKind::EventStream);
        r.feed(b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{\"content\":[{\"type\":\"image\",\"data\":\"", &mut c);
        let block = vec![b'A'; 1 << 20];
        for _ in 0..30 {
            r.feed(&block, &mut c);
        }
        r.feed(b"\"}],\"isError\":false}}\n\n", &mut c);
        assert_eq!(c.outcome(&num("5")), Some(Outcome::Success));
        assert!(
            r.json.capture.capacity() <= MAX_ID_LEN * 2,
            "{}",
            r.json.capture.capacity()
        );
    }

    #[test]
    fn broken_documents_yield_nothing() {
        assert!(summaries(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{} x").is_empty());
        assert!(summaries(b"Not Found").is_empty());
        // A member name that does not decode (bad escape, lone surrogate) abandons the document.
        assert!(summaries(br#"{"jsonrpc":"2.0","id":1,"result":{},"\x":1}"#).is_empty());
        assert!(summaries(br#"{"jsonrpc":"2.0","id":1,"result":{"\ud800":1}}"#).is_empty());
        // A broken event does not poison the next one.
        let c = correlate(
            BodyKind::EventStream,
            vec![num("1")],
            &[b"data: {oops\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"],
        );
        assert_eq!(c.outcome(&num("1")), Some(Outcome::Success));
    }

    /// Summaries of `doc` fed in pieces of `size` bytes, as a JSON body and as one SSE event
    /// whose data is split into one `data:` line per line of `doc`.
    fn summaries_in_pieces(doc: &[u8], size: usize) -> (Vec<Summary>, Vec<Summary>) {
        let mut json = Vec::new();
        let mut r = ResponseScanner::new(BodyKind::Json);
        for piece in doc.chunks(size) {
            r.feed_each(piece, &mut |m: &Summary| json.push(m.clone()));
        }
        let mut event = Vec::new();
        for line in doc.split(|&b| b == b'\n') {
            event.extend_from_slice(b"data: ");
            event.extend_from_slice(line);
            event.extend_from_slice(b"\r\n");
        }
        event.extend_from_slice(b"\r\n");
        let mut sse = Vec::new();
        let mut r = ResponseScanner::new(BodyKind::EventStream);
        for piece in event.chunks(size) {
            r.feed_each(piece, &mut |m: &Summary| sse.push(m.clone()));
        }
        (json, sse)
    }

    /// The outcome of the single message in `doc`, the same for every piece size and for the
    /// same document as an SSE event.
    fn outcome_of(doc: &[u8]) -> Option<Outcome> {
        let whole = summaries(doc);
        assert_eq!(whole.len(), 1, "{}", String::from_utf8_lossy(doc));
        for size in 1..=doc.len().min(80) {
            let (json, sse) = summaries_in_pieces(doc, size);
            assert_eq!(json, whole, "JSON in {size}-byte pieces");
            assert_eq!(sse, whole, "SSE in {size}-byte pieces");
        }
        whole.first().and_then(Summary::outcome)
    }

    #[test]
    fn escaped_member_names_are_read_as_the_sdks_read_them() {
        let tool_error =
            br#"{"jsonrpc":"2.0","id":1,"r\u0065sult":{"content":[],"is\u0045rror":true}}"#;
        assert_eq!(outcome_of(tool_error), Some(Outcome::ToolError));
        let error = br#"{"jsonrpc":"2.0","id":1,"\u0065rror":{"\u0063ode":-32000,"message":"x"}}"#;
        assert_eq!(outcome_of(error), Some(Outcome::Error(Some(-32000))));
        // Every character escaped, a `\/`-free name in upper-case hex, and the version.
        let all = br#"{"\u006A\u0073\u006F\u006E\u0072\u0070\u0063":"\u0032.0","\u0069\u0064":1,"\u0072\u0065\u0073\u0075\u006c\u0074":{"\u0069\u0073\u0045\u0072\u0072\u006f\u0072":true}}"#;
        assert_eq!(outcome_of(all), Some(Outcome::ToolError));
        let s = summaries(all);
        assert_eq!(s[0].id.as_deref(), Some(&b"1"[..]));
        // An escaped `method` still marks a server request, not a response.
        let request = br#"{"jsonrpc":"2.0","id":1,"m\u0065thod":"roots/list","result":{}}"#;
        assert_eq!(summaries(request)[0].outcome(), None);
        // Names that only look alike are other members.
        let other = br#"{"jsonrpc":"2.0","id":1,"result":{"iserror":true,"isError\u0000":true,"is\\u0045rror":true}}"#;
        assert_eq!(outcome_of(other), Some(Outcome::Success));
        // The same documents split across SSE data lines (a line end between members).
        let lines =
            b"{\"jsonrpc\":\"2.0\",\n\"id\":1,\n\"r\\u0065sult\"\n:{\"is\\u0045rror\"\n:true}}";
        assert_eq!(outcome_of(lines), Some(Outcome::ToolError));
    }

    #[test]
    fn duplicated_members_are_never_success() {
        let malformed = [
            // The SDKs keep the last `isError` (false); serde_json refuses the message.
            br#"{"jsonrpc":"2.0","id":1,"result":{"isError":true,"isError":false}}"#.as_slice(),
            br#"{"jsonrpc":"2.0","id":1,"result":{"is\u0045rror":true,"isError":false}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{"isError":true},"result":{}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{},"r\u0065sult":{}}"#,
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":1},"error":{"code":2}}"#,
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"code":2}}"#,
            br#"{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"result":{}}"#,
            br#"{"jsonrpc":"2.0","id":2,"id":1,"result":{}}"#,
            // Not a valid response to any SDK reader.
            br#"{"id":1,"result":{}}"#,
            br#"{"jsonrpc":"1.0","id":1,"result":{}}"#,
            br#"{"jsonrpc":["2.0"],"id":1,"result":{}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":[]}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":null}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{"isError":"true"}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{"isError":0}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{"isError":null}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{"isError":[true]}}"#,
        ];
        for doc in malformed {
            assert_eq!(
                outcome_of(doc),
                Some(Outcome::Malformed),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
        // The last `id` is the one the SDKs answer; it settles that request (not `success`).
        let c = correlate(
            BodyKind::Json,
            vec![num("1"), num("2")],
            &[br#"{"jsonrpc":"2.0","id":2,"id":1,"result":{}}"#],
        );
        assert_eq!(c.outcome(&num("1")), Some(Outcome::Malformed));
        assert_eq!(c.outcome(&num("2")), None);
        // Both `result` and `error`: the Python SDK reads the error (kept as before).
        let both = br#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":-32603}}"#;
        assert_eq!(outcome_of(both), Some(Outcome::Error(Some(-32603))));
        // Duplicates where the outcome does not look are fine.
        let fine = br#"{"jsonrpc":"2.0","id":1,"x":1,"x":2,"result":{"content":[],"content":[]}}"#;
        assert_eq!(outcome_of(fine), Some(Outcome::Success));
    }

    #[test]
    fn escaped_ids_match_their_decoded_request_id() {
        // `"\u0037"` is the string "7", as the SDKs decode it (and as `Id::from_raw` does for
        // the request); numbers compare as spelled: `7.0` and `7e0` are not `7`.
        let c = correlate(
            BodyKind::Json,
            vec![Id::Str("7".into()), num("7")],
            &[br#"[{"jsonrpc":"2.0","id":"\u0037","result":{}},{"jsonrpc":"2.0","id":7.0,"result":{}},{"jsonrpc":"2.0","id":7e0,"result":{}}]"#],
        );
        assert_eq!(c.outcome(&Id::Str("7".into())), Some(Outcome::Success));
        assert_eq!(c.outcome(&num("7")), None);
        // A request id of the longest length, every character re-escaped by the server.
        let long = "a".repeat(crate::jsonrpc::MAX_REQUEST_ID_LEN - 2);
        let escaped: String = long
            .chars()
            .map(|ch| format!("\\u{:04x}", ch as u32))
            .collect();
        let body = format!(r#"{{"jsonrpc":"2.0","id":"{escaped}","result":{{"isError":true}}}}"#);
        let c = correlate(
            BodyKind::Json,
            vec![Id::Str(long.clone())],
            &[body.as_bytes()],
        );
        assert_eq!(c.outcome(&Id::Str(long)), Some(Outcome::ToolError));
    }

    /// A JSON Schema nested `depth` levels deep (objects of `properties`), as text.
    fn deep_schema(depth: usize) -> String {
        let mut s = String::with_capacity(depth * 40);
        for _ in 0..depth / 2 {
            s.push_str(r#"{"type":"object","properties":{"p":"#);
        }
        s.push_str(r#"{"type":"string"}"#);
        for _ in 0..depth / 2 {
            s.push_str("}}");
        }
        s
    }

    #[test]
    fn deep_values_do_not_change_the_outcome() {
        for depth in [255, 256, 257, 400, 10_000] {
            let schema = deep_schema(depth);
            let list = format!(
                r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{{"name":"t","inputSchema":{schema}}}]}}}}"#
            );
            let call = format!(
                r#"{{"jsonrpc":"2.0","id":1,"result":{{"content":[],"structuredContent":{schema},"isError":true}}}}"#
            );
            let err = format!(
                r#"{{"jsonrpc":"2.0","id":1,"error":{{"data":{schema},"code":-32001,"message":"x"}}}}"#
            );
            for (doc, want) in [
                (list, Outcome::Success),
                (call, Outcome::ToolError),
                (err, Outcome::Error(Some(-32001))),
            ] {
                assert_eq!(
                    summaries(doc.as_bytes())[0].outcome(),
                    Some(want),
                    "{depth}"
                );
                for size in [1, 7, 4096] {
                    let (json, sse) = summaries_in_pieces(doc.as_bytes(), size);
                    assert_eq!(json.first().and_then(Summary::outcome), Some(want));
                    assert_eq!(sse.first().and_then(Summary::outcome), Some(want));
                }
            }
        }
        // Arbitrarily deep, in constant memory: a million levels of arrays.
        let mut c = Correlator::new(vec![num("5")]);
        let mut r = ResponseScanner::new(BodyKind::Json);
        r.feed(br#"{"jsonrpc":"2.0","id":5,"result":{"x":"#, &mut c);
        for bracket in [b"[", b"]"] {
            let block = bracket.repeat(1 << 16);
            for _ in 0..16 {
                r.feed(&block, &mut c);
            }
        }
        r.feed(br#","isError":true}}"#, &mut c);
        assert_eq!(c.outcome(&num("5")), Some(Outcome::ToolError));
        assert!(r.json.capture.capacity() <= MAX_SCALAR_LEN);
    }

    /// A tiny deterministic generator (xorshift), for the differential test.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from.get(self.below(from.len()))
                .copied()
                .unwrap_or_default()
        }
    }

    /// Members of a JSON object with their names decoded and raw values, in order; `None`
    /// when `raw` is not an object serde_json reads.
    fn oracle_members(raw: &str) -> Option<Vec<(String, String)>> {
        use serde::de::{Deserializer, MapAccess, Visitor};
        use serde_json::value::RawValue;
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<(String, String)>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    out.push((k, v.get().to_owned()));
                }
                Ok(out)
            }
        }
        let mut de = serde_json::Deserializer::from_str(raw);
        let members = (&mut de).deserialize_map(V).ok()?;
        de.end().ok()?;
        Some(members)
    }

    /// What the scanner must report for one valid JSON document, from serde_json.
    fn oracle(doc: &str) -> Option<Vec<Summary>> {
        use serde_json::value::RawValue;
        let root: &RawValue = serde_json::from_str(doc).ok()?;
        let text = root.get();
        let objects: Vec<String> = if text.starts_with('[') {
            serde_json::from_str::<Vec<&RawValue>>(text)
                .ok()?
                .into_iter()
                .map(|r| r.get().to_owned())
                .filter(|t| t.starts_with('{'))
                .collect()
        } else if text.starts_with('{') {
            vec![text.to_owned()]
        } else {
            Vec::new()
        };
        let mut out = Vec::new();
        for object in objects {
            let mut s = Summary::default();
            let mut counts = std::collections::HashMap::<&str, usize>::new();
            let mut version_ok = false;
            for (key, raw) in oracle_members(&object)? {
                let scalar = !raw.starts_with(['{', '[']);
                match key.as_str() {
                    "jsonrpc" => {
                        version_ok = serde_json::from_str::<String>(&raw).is_ok_and(|v| v == "2.0");
                        *counts.entry("jsonrpc").or_default() += 1;
                    }
                    "id" => {
                        s.id =
                            (scalar && raw.len() <= MAX_ID_LEN).then(|| raw.clone().into_bytes());
                        *counts.entry("id").or_default() += 1;
                    }
                    "method" => s.has_method = true,
                    "result" => {
                        s.has_result = true;
                        *counts.entry("result").or_default() += 1;
                        if !raw.starts_with('{') {
                            s.malformed = true;
                        }
                        for (k, v) in oracle_members(&raw).unwrap_or_default() {
                            if k == "isError" {
                                *counts.entry("isError").or_default() += 1;
                                s.is_error = v == "true";
                                s.malformed |= v != "true" && v != "false";
                            }
                        }
                    }
                    "error" => {
                        s.has_error = true;
                        *counts.entry("error").or_default() += 1;
                        for (k, v) in oracle_members(&raw).unwrap_or_default() {
                            if k == "code" {
                                *counts.entry("code").or_default() += 1;
                                s.error_code = (v.len() <= MAX_SCALAR_LEN)
                                    .then(|| v.parse::<i64>().ok())
                                    .flatten();
                            }
                        }
                    }
                    _ => {}
                }
            }
            s.malformed |= !version_ok || counts.values().any(|&n| n > 1);
            out.push(s);
        }
        Some(out)
    }

    fn random_value(rng: &mut Rng, depth: usize) -> String {
        match rng.below(if depth > 3 { 6 } else { 9 }) {
            0 => rng
                .pick(&["true", "false", "null", "0", "-32000", "1.5", "7e0"])
                .to_owned(),
            1 => rng
                .pick(&[
                    r#""2.0""#,
                    r#""\u0032.0""#,
                    r#""1.0""#,
                    r#""true""#,
                    r#""7""#,
                    r#""\u0037""#,
                    r#""a\"}{""#,
                ])
                .to_owned(),
            2 => "1".to_owned(),
            3 => "[[[[[[[[]]]]]]]]".to_owned(),
            4 => r#""x\\""#.to_owned(),
            5 => "7".to_owned(),
            6 => format!("[{}]", random_value(rng, depth + 1)),
            _ => random_object(rng, depth + 1),
        }
    }

    fn random_object(rng: &mut Rng, depth: usize) -> String {
        let names = [
            "jsonrpc",
            r#"json\u0072pc"#,
            "id",
            r#"\u0069d"#,
            "method",
            "result",
            r#"r\u0065sult"#,
            "error",
            r#"\u0065rror"#,
            "isError",
            r#"is\u0045rror"#,
            "code",
            r#"\u0063ode"#,
            "content",
            "Result",
            r#"is\\u0045rror"#,
        ];
        let n = rng.below(5);
        let members: Vec<String> = (0..n)
            .map(|_| format!("\"{}\":{}", rng.pick(&names), random_value(rng, depth)))
            .collect();
        format!("{{{}}}", members.join(","))
    }

    fn random_message(rng: &mut Rng) -> String {
        let mut members = vec![r#""jsonrpc":"2.0""#.to_owned(), r#""id":1"#.to_owned()];
        match rng.below(3) {
            0 => members.push(format!(r#""result":{}"#, random_object(rng, 1))),
            1 => members.push(format!(r#""\u0065rror":{}"#, random_object(rng, 1))),
            _ => {}
        }
        let extra = random_object(rng, 0);
        let extra = extra
            .strip_prefix('{')
            .and_then(|e| e.strip_suffix('}'))
            .unwrap_or_default();
        if !extra.is_empty() {
            members.insert(rng.below(members.len() + 1), extra.to_owned());
        }
        if rng.below(4) == 0 {
            members.remove(rng.below(members.len()));
        }
        format!("{{{}}}", members.join(","))
    }

    #[test]
    fn same_summaries_as_serde_json_for_random_documents() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut outcomes = Vec::new();
        for _ in 0..3000 {
            let doc = if rng.below(4) == 0 {
                format!(
                    "[{},{}]",
                    random_message(&mut rng),
                    random_message(&mut rng)
                )
            } else {
                random_message(&mut rng)
            };
            let want = oracle(&doc).unwrap_or_else(|| panic!("not valid JSON: {doc}"));
            assert_eq!(summaries(doc.as_bytes()), want, "{doc}");
            for size in [1, 3, 16] {
                let (json, _) = summaries_in_pieces(doc.as_bytes(), size);
                assert_eq!(json, want, "{doc} in {size}-byte pieces");
            }
            outcomes.extend(want.iter().map(Summary::outcome));
        }
        // The documents reach every outcome.
        for o in [
            Some(Outcome::Success),
            Some(Outcome::ToolError),
            Some(Outcome::Error(None)),
            Some(Outcome::Malformed),
            None,
        ] {
            assert!(outcomes.contains(&o), "{o:?} never generated");
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            BodyKind::from_content_type(Some("Application/JSON; charset=utf-8")),
            BodyKind::Json
        );
        assert_eq!(
            BodyKind::from_content_type(Some("text/event-stream")),
            BodyKind::EventStream
        );
        assert_eq!(
            BodyKind::from_content_type(Some("text/plain")),
            BodyKind::Other
        );
        assert_eq!(BodyKind::from_content_type(None), BodyKind::Other);
    }
}
