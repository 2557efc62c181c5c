//! [`JsonScanner`]: the incremental JSON-RPC message scanner of the response path, a state
//! machine over the [`crate::json`] primitives (string and skip searches, member-name
//! decoding) that reads a body or SSE event data chunk by chunk, in constant memory.

use super::{RequestState, Summary, MAX_ID_LEN, MAX_REQUEST_STATE_LEN};
use crate::inventory::{self, Captured};
use crate::json;
use std::borrow::Cow;

/// Longest raw member name kept, in bytes, escapes included: the longest name read here (a
/// capability name of [`inventory::MAX_CAPABILITY_LEN`] bytes; the other names are at most
/// 34 characters, `io.modelcontextprotocol/serverInfo`) with every character escaped as
/// `\uXXXX`. A longer name decodes to a longer string, so it is none of them.
const MAX_KEY_LEN: usize = 6 * inventory::MAX_CAPABILITY_LEN;
pub(super) const MAX_SCALAR_LEN: usize = 32;
/// Longest raw `result.resultType` value read, quotes included: `"input_required"` with every
/// character escaped. A longer value decodes to a longer string, so it is not
/// `input_required`.
const MAX_RESULT_TYPE_LEN: usize = 2 + 6 * super::INPUT_REQUIRED.len();
/// Longest raw `result.requestState` value read, quotes included: [`MAX_REQUEST_STATE_LEN`]
/// characters, each escaped as `\uXXXX`. Decoded, it must still fit in
/// [`MAX_REQUEST_STATE_LEN`] bytes.
const MAX_REQUEST_STATE_RAW: usize = 2 + 6 * MAX_REQUEST_STATE_LEN;
/// Containers parsed member by member: a batch array, a message object, its `result` or
/// `error` object; with the inventory capture, `result.serverInfo`, `result.capabilities`,
/// `result._meta` and the `_meta` serverInfo stamp inside it.
const MAX_PARSED_DEPTH: usize = 5;

/// The raw JSON length (quotes included) of a string of `max` bytes, every byte escaped.
const fn raw_len(max: usize) -> usize {
    2 + 6 * max
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
    /// `result.resultType` (MCP 2026-07-28).
    ResultType,
    /// `result.requestState` (MCP 2026-07-28, multi round-trip requests).
    RequestState,
    /// `result.serverInfo` (inventory capture only, as the next eight).
    ServerInfo,
    /// `result.capabilities`.
    Capabilities,
    /// `result.protocolVersion`.
    ProtocolVersion,
    /// `result._meta`.
    ResultMeta,
    /// `result._meta["io.modelcontextprotocol/serverInfo"]` (MCP 2026-07-28).
    Stamp,
    /// `result.serverInfo.name`.
    InfoName,
    /// `result.serverInfo.version`.
    InfoVersion,
    /// The stamp's `name`.
    StampName,
    /// The stamp's `version`.
    StampVersion,
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
struct Seen(u32);

impl Seen {
    /// Marks `member` seen; true when it already was.
    fn again(&mut self, member: Member) -> bool {
        let bit = 1u32 << (member as u32);
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
    /// The member of `result` being read (at depth `level + 1`).
    second_member: Member,
    /// The member of `result._meta` being read (at depth `level + 2`).
    third_member: Member,
    /// Capture the inventory members of results ([`JsonScanner::with_inventory`]).
    inventory: bool,
    value_member: Member,
    pub(super) capture: Vec<u8>,
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
            second_member: Member::Other,
            third_member: Member::Other,
            inventory: false,
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

    /// A scanner that also captures, in each result, the members the server inventory reads
    /// ([`crate::inventory`]): `serverInfo.name` and `.version`, `protocolVersion`, the member
    /// names of `capabilities`, and the `_meta` `io.modelcontextprotocol/serverInfo` stamp's
    /// `name` and `version`, into [`Summary::inventory`]. Those containers are then parsed
    /// member by member (two levels deeper than otherwise); values stay bounded
    /// ([`crate::inventory::MAX_NAME_LEN`] and the other bounds there).
    pub fn with_inventory() -> Self {
        JsonScanner {
            inventory: true,
            ..Self::default()
        }
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
            inventory: self.inventory,
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
            Member::Jsonrpc
                | Member::Id
                | Member::ErrorCode
                | Member::IsError
                | Member::ResultType
                | Member::RequestState
                | Member::ProtocolVersion
                | Member::InfoName
                | Member::InfoVersion
                | Member::StampName
                | Member::StampVersion
        )
    }

    fn capture_limit(&self) -> usize {
        match self.value_member {
            Member::Id => MAX_ID_LEN,
            Member::ResultType => MAX_RESULT_TYPE_LEN,
            Member::RequestState => MAX_REQUEST_STATE_RAW,
            Member::ProtocolVersion => raw_len(inventory::MAX_PROTOCOL_VERSION_LEN),
            Member::InfoName | Member::StampName => raw_len(inventory::MAX_NAME_LEN),
            Member::InfoVersion | Member::StampVersion => raw_len(inventory::MAX_VERSION_LEN),
            _ => MAX_SCALAR_LEN,
        }
    }

    /// The inventory capture of the current message, created on first use.
    fn captured(&mut self) -> &mut Captured {
        self.current.inventory.get_or_insert_with(Box::default)
    }

    fn start_value(&mut self, b: u8) {
        match b {
            b'{' | b'[' => {
                // Parsed member by member: the root, a batch's message objects, and a
                // message's `result` or `error` object. Anything else is skipped.
                // With the inventory capture, also `result.serverInfo`, `.capabilities`,
                // `._meta` and the stamp in it (those members are only named at their place).
                let parse = self.depth == 0
                    || (b == b'{'
                        && ((self.depth == 1 && self.level == 2)
                            || (self.depth == self.level
                                && matches!(self.value_member, Member::Result | Member::Error))
                            || matches!(
                                self.value_member,
                                Member::ServerInfo
                                    | Member::Capabilities
                                    | Member::ResultMeta
                                    | Member::Stamp
                            )));
                // A container where a scalar belongs (or an array where an object does).
                match self.value_member {
                    Member::Result if b == b'[' => self.current.malformed = true,
                    Member::IsError | Member::ResultType => self.current.malformed = true,
                    Member::RequestState => self.current.request_state = RequestState::NotString,
                    // Not an `Implementation`: neither name nor version counts. (A `name`,
                    // `version` or `protocolVersion` that is a container stays `None`.)
                    Member::ServerInfo if b == b'[' => self.captured().server_info.malformed = true,
                    Member::Stamp if b == b'[' => self.captured().stamp.malformed = true,
                    Member::Capabilities if b == b'[' => {
                        self.captured().capabilities_truncated = true
                    }
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
        let inventory = self.inventory;
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
        } else if self.depth == self.level + 1 {
            let member = match (self.top_member, name.as_ref()) {
                (Member::Error, b"code") => Member::ErrorCode,
                (Member::Result, b"isError") => Member::IsError,
                (Member::Result, b"resultType") => Member::ResultType,
                (Member::Result, b"requestState") => Member::RequestState,
                (Member::Result, b"serverInfo") if inventory => Member::ServerInfo,
                (Member::Result, b"capabilities") if inventory => Member::Capabilities,
                (Member::Result, b"protocolVersion") if inventory => Member::ProtocolVersion,
                (Member::Result, b"_meta") if inventory => Member::ResultMeta,
                _ => Member::Other,
            };
            self.second_member = member;
            member
        } else if self.depth == self.level + 2 {
            // Only the inventory's containers are parsed at this depth.
            let member = match (self.second_member, name.as_ref()) {
                (Member::ServerInfo, b"name") => Member::InfoName,
                (Member::ServerInfo, b"version") => Member::InfoVersion,
                (Member::ResultMeta, b"io.modelcontextprotocol/serverInfo") => Member::Stamp,
                (Member::Capabilities, _) => {
                    let kept = (!self.key_overflow).then(|| name.to_vec());
                    self.captured().capability(kept.as_deref());
                    Member::Other // its value is skipped
                }
                _ => Member::Other,
            };
            self.third_member = member;
            member
        } else {
            match (self.third_member, name.as_ref()) {
                (Member::Stamp, b"name") => Member::StampName,
                (Member::Stamp, b"version") => Member::StampVersion,
                _ => Member::Other,
            }
        };
        let repeated = member != Member::Other && self.seen.again(member);
        match member {
            Member::Other | Member::Method => {}
            // A repeated inventory member makes the inventory's value unknown, not the
            // response malformed (its outcome is read as before).
            Member::ServerInfo | Member::InfoName | Member::InfoVersion if repeated => {
                self.captured().server_info.malformed = true
            }
            Member::ResultMeta | Member::Stamp | Member::StampName | Member::StampVersion
                if repeated =>
            {
                self.captured().stamp.malformed = true
            }
            Member::ProtocolVersion if repeated => self.captured().protocol_version_repeated = true,
            Member::Capabilities if repeated => {
                let c = self.captured();
                c.capabilities.clear();
                c.capabilities_truncated = true;
            }
            // (`_meta` alone, on any result, allocates nothing: only its stamp counts.)
            Member::ServerInfo
            | Member::InfoName
            | Member::InfoVersion
            | Member::Stamp
            | Member::StampName
            | Member::StampVersion
            | Member::ProtocolVersion
            | Member::Capabilities => {
                self.captured();
            }
            _ if repeated => self.current.malformed = true,
            _ => {}
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
            Member::ResultType => self.current.input_required = false,
            Member::RequestState => self.current.request_state = RequestState::Absent,
            _ => {}
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
            (Member::ResultType, raw) => result_type(&mut self.current, raw, &self.capture),
            (Member::RequestState, raw) => request_state(&mut self.current, raw, &self.capture),
            (Member::ProtocolVersion, raw) => {
                let v = string_value(raw, inventory::MAX_PROTOCOL_VERSION_LEN);
                self.captured().protocol_version = v;
            }
            (Member::InfoName, raw) => {
                let v = string_value(raw, inventory::MAX_NAME_LEN);
                self.captured().server_info.name = v;
            }
            (Member::InfoVersion, raw) => {
                let v = string_value(raw, inventory::MAX_VERSION_LEN);
                self.captured().server_info.version = v;
            }
            (Member::StampName, raw) => {
                let v = string_value(raw, inventory::MAX_NAME_LEN);
                self.captured().stamp.name = v;
            }
            (Member::StampVersion, raw) => {
                let v = string_value(raw, inventory::MAX_VERSION_LEN);
                self.captured().stamp.version = v;
            }
            // A scalar where an object belongs (`null` included: not an `Implementation`).
            (Member::ServerInfo, _) => self.captured().server_info.malformed = true,
            (Member::Stamp, _) => self.captured().stamp.malformed = true,
            (Member::Capabilities, _) => self.captured().capabilities_truncated = true,
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

/// An inventory string (`raw`: its JSON text, `None` when longer than its capture limit):
/// the decoded string when it is a JSON string serde_json decodes to at most `max` bytes;
/// anything else (too long, a number, `null`, a lone surrogate escape) is `None`, never a cut
/// or converted value.
fn string_value(raw: Option<&[u8]>, max: usize) -> Option<String> {
    let raw = raw.filter(|r| r.first() == Some(&b'"'))?;
    serde_json::from_slice::<String>(raw)
        .ok()
        .filter(|v| v.len() <= max)
}

/// `result.resultType`: `raw` is its JSON text, `None` when longer than
/// [`MAX_RESULT_TYPE_LEN`] (`capture` then holds its start). A string, escapes decoded, is `input_required` or another type (`complete`, an extension's);
/// `null` reads as absent (the Python SDK's `EmptyResult`); any other value is malformed
/// (the SDKs refuse it).
fn result_type(current: &mut Summary, raw: Option<&[u8]>, capture: &[u8]) {
    let Some(raw) = raw else {
        // Longer than any spelling of `input_required`: another type (a string), or a
        // number no SDK reads as a type.
        if capture.first() != Some(&b'"') {
            current.malformed = true;
        }
        return;
    };
    if raw == b"null" {
        return;
    }
    if raw.first() != Some(&b'"') {
        current.malformed = true;
        return;
    }
    if raw == br#""input_required""# {
        current.input_required = true;
        return;
    }
    match serde_json::from_slice::<String>(raw) {
        Ok(value) => current.input_required = value == super::INPUT_REQUIRED,
        Err(_) => current.malformed = true,
    }
}

/// `result.requestState`: `raw` is its JSON text, `None` when longer than
/// [`MAX_REQUEST_STATE_RAW`] (`capture` then holds its start). A string is kept decoded when it fits in [`MAX_REQUEST_STATE_LEN`] bytes, else it is
/// [`RequestState::Unlinkable`] (as is a string serde_json cannot decode, such as a lone
/// surrogate escape); `null` reads as absent; anything else is
/// [`RequestState::NotString`].
fn request_state(current: &mut Summary, raw: Option<&[u8]>, capture: &[u8]) {
    let quoted = match raw {
        Some(b"null") => return,
        Some(raw) => raw.first() == Some(&b'"'),
        None => capture.first() == Some(&b'"'),
    };
    current.request_state = match (quoted, raw) {
        (false, _) => RequestState::NotString,
        (true, None) => RequestState::Unlinkable,
        (true, Some(raw)) => match serde_json::from_slice::<String>(raw) {
            Ok(value) if value.len() <= MAX_REQUEST_STATE_LEN => RequestState::Kept(value),
            _ => RequestState::Unlinkable,
        },
    };
}
