//! Curated tool surfaces: each agent's `tools/list`, `prompts/list` and `resources/list`
//! responses are rewritten to show only what that agent may use (MCP "Server features":
//! `result.tools[].name`, `result.prompts[].name`, `result.resources[].uri`).
//!
//! The filter holds the (finite) response of such a request and rewrites it whole, as
//! `application/json` or as `text/event-stream` (each SSE event's `data` is one JSON-RPC
//! message; events are split on LF, CRLF or CR line ends). Only the `result` array of the
//! responses whose id belongs to the list request changes; every other member (`nextCursor`,
//! `_meta`), every other message (progress, `notifications/*/list_changed`) and every other SSE
//! field (`id:`, `event:`, `retry:`, comments) is kept. Entries are kept verbatim; an entry whose
//! name cannot be read (not an object, no string name, a duplicated name member) is dropped:
//! what cannot be checked is not shown.

use crate::jsonrpc::frame::{self, Seq};
use crate::jsonrpc::Id;
use crate::response::BodyKind;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Which list a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `tools/list` → `result.tools[].name`.
    Tools,
    /// `prompts/list` → `result.prompts[].name`.
    Prompts,
    /// `resources/list` → `result.resources[].uri`.
    Resources,
}

impl ListKind {
    /// The list a method returns, if it is one of the curated ones.
    pub fn of(method: &str) -> Option<ListKind> {
        match method {
            "tools/list" => Some(ListKind::Tools),
            "prompts/list" => Some(ListKind::Prompts),
            "resources/list" => Some(ListKind::Resources),
            _ => None,
        }
    }

    /// The result member holding the list (`tools`, `prompts`, `resources`).
    pub fn array(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
        }
    }
}

/// Why a response that must be curated cannot be: the one refusal reason per class, a fixed set
/// (each is the metric label `mcp_guard.refusals.reason.<reason>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// A `content-encoding` other than `identity` (RFC 9110 §8.4).
    Encoding,
    /// No `content-type`, more than one, or a media type other than exactly `application/json`
    /// or `text/event-stream` (RFC 9110 §8.3; compared case-insensitively, parameters aside).
    ContentType,
    /// A `charset` parameter other than `utf-8` (RFC 8259 §8.1: JSON is UTF-8).
    Charset,
    /// The body is not valid UTF-8, or starts with a byte order mark.
    Utf8,
    /// A document (the body, or an SSE event's data) that is not JSON, or whose JSON-RPC
    /// response is not the expected shape: not an object (or a batch of them), a duplicated
    /// member name in the message or its `result`, a `result` without the list array.
    Shape,
    /// Bytes other than JSON whitespace after the first JSON document (RFC 8259 §2).
    Trailing,
    /// A JSON-RPC response whose `id` is not one of the request ids as the request spelled it.
    Id,
}

impl Unreadable {
    /// Every reason, for documentation and tests.
    pub const ALL: [Unreadable; 7] = [
        Unreadable::Encoding,
        Unreadable::ContentType,
        Unreadable::Charset,
        Unreadable::Utf8,
        Unreadable::Shape,
        Unreadable::Trailing,
        Unreadable::Id,
    ];

    /// The refusal reason label (`response_encoding`, `response_content_type`,
    /// `response_charset`, `response_utf8`, `response_shape`, `response_trailing`,
    /// `response_id`).
    pub fn reason(self) -> &'static str {
        match self {
            Unreadable::Encoding => "response_encoding",
            Unreadable::ContentType => "response_content_type",
            Unreadable::Charset => "response_charset",
            Unreadable::Utf8 => "response_utf8",
            Unreadable::Shape => "response_shape",
            Unreadable::Trailing => "response_trailing",
            Unreadable::Id => "response_id",
        }
    }

    /// The JSON-RPC error message the client gets in place of the response.
    pub fn message(self) -> &'static str {
        match self {
            Unreadable::Encoding => {
                "Internal error: the server's response has a content-encoding; mcp-guard must \
                 read this list response and reads only identity-encoded ones"
            }
            Unreadable::ContentType => {
                "Internal error: the server's list response is not exactly application/json or \
                 text/event-stream; mcp-guard must read it to curate it"
            }
            Unreadable::Charset => {
                "Internal error: the server's list response is not in UTF-8; mcp-guard must \
                 read it to curate it"
            }
            Unreadable::Utf8 => {
                "Internal error: the server's list response is not valid UTF-8 (or starts with \
                 a byte order mark); mcp-guard must read it to curate it"
            }
            Unreadable::Shape => {
                "Internal error: the server's list response is not a JSON-RPC response of the \
                 expected shape; mcp-guard must read it to curate it"
            }
            Unreadable::Trailing => {
                "Internal error: the server's list response has bytes after its JSON document; \
                 mcp-guard must read it to curate it"
            }
            Unreadable::Id => {
                "Internal error: the server's list response answers an id this request did not \
                 send; mcp-guard must read it to curate it"
            }
        }
    }
}

/// What curating a list response did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Curation {
    /// Nothing in the body is a list response to curate (a JSON-RPC error, only
    /// notifications): the original bytes go on.
    Unchanged,
    /// The body the client gets in place of the original.
    Rewritten(Vec<u8>),
    /// The body cannot be shown to be curated: it must be refused, never forwarded.
    Unreadable(Unreadable),
}

/// The body kind of a response that must be curated, from its headers: every `content-type`
/// value (each copy of the header one element) and whether it has a content coding. Exactly one
/// `content-type` whose media type is `application/json` or `text/event-stream` (ASCII
/// case-insensitive, RFC 9110 §8.3.1), with no parameter but an optional `charset` that is
/// `utf-8` (case-insensitive, optionally quoted); no coding. Anything else: why not.
pub fn curatable_kind(content_types: &[String], encoded: bool) -> Result<BodyKind, Unreadable> {
    if encoded {
        return Err(Unreadable::Encoding);
    }
    let [value] = content_types else {
        return Err(Unreadable::ContentType);
    };
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or_default().trim_matches([' ', '\t']);
    let kind = if media.eq_ignore_ascii_case("application/json") {
        BodyKind::Json
    } else if media.eq_ignore_ascii_case("text/event-stream") {
        BodyKind::EventStream
    } else {
        return Err(Unreadable::ContentType);
    };
    for param in parts {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        if !name
            .trim_matches([' ', '\t'])
            .eq_ignore_ascii_case("charset")
        {
            continue; // other parameters do not change how the body is read
        }
        let value = value.trim_matches([' ', '\t']);
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if !value.eq_ignore_ascii_case("utf-8") {
            return Err(Unreadable::Charset);
        }
    }
    Ok(kind)
}

/// The members of a JSON object in order, names decoded, duplicates kept (serde_json's own
/// maps keep only the last).
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                collect_members(map)
            }
        }
        d.deserialize_map(Visit)
    }
}

fn collect_members<'de, A: serde::de::MapAccess<'de>>(
    mut map: A,
) -> Result<Members<'de>, A::Error> {
    let mut members = Vec::new();
    while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
        members.push(member);
    }
    Ok(Members(members))
}

/// Whether no name is there twice (what a first-wins and a last-wins reader both read the same).
fn no_duplicates<'n>(names: impl Iterator<Item = &'n str>) -> Result<(), Unreadable> {
    let mut names: Vec<&str> = names.collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w.first() == w.get(1)) {
        return Err(Unreadable::Shape);
    }
    Ok(())
}

/// A JSON value read as an object's members, or `None` for anything else (skipped).
struct MaybeObject<'a>(Option<Members<'a>>);

impl<'de> Deserialize<'de> for MaybeObject<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = MaybeObject<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                collect_members(map).map(|m| MaybeObject(Some(m)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(MaybeObject(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeObject(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeObject(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeObject(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeObject(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(MaybeObject(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(MaybeObject(None))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// One JSON-RPC message as the checks read it, in one pass: every member name (decoded), the
/// raw `id`, and `result` read as an object's members (`Some(None)`: not an object).
struct Message<'a> {
    names: Vec<String>,
    id: Option<&'a RawValue>,
    result: Option<Option<Members<'a>>>,
}

impl<'de> Deserialize<'de> for Message<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Message<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON-RPC message")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut message = Message {
                    names: Vec::new(),
                    id: None,
                    result: None,
                };
                while let Some(name) = map.next_key::<String>()? {
                    match name.as_str() {
                        "id" => message.id = Some(map.next_value::<&'de RawValue>()?),
                        "result" => message.result = Some(map.next_value::<MaybeObject<'de>>()?.0),
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                    message.names.push(name);
                }
                Ok(message)
            }
        }
        d.deserialize_map(Visit)
    }
}

impl<'a> Message<'a> {
    /// The message in `text`, with no member name twice.
    fn parse(text: &'a str) -> Result<Message<'a>, Unreadable> {
        serde_json::from_str::<Message<'a>>(text)
            .map_err(|_| Unreadable::Shape)?
            .unique()
    }

    fn unique(self) -> Result<Message<'a>, Unreadable> {
        no_duplicates(self.names.iter().map(String::as_str))?;
        Ok(self)
    }
}

impl<'a> Members<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.get())
    }
}

/// Whether the raw JSON text of a response's `id` is one of the request ids as the request
/// spelled it: a number with the same text (`7` is not `7.0`, `7e0` or `"7"`), a string with the
/// same value once its escapes are decoded (as every JSON reader decodes them).
pub fn id_answers(raw: &str, ids: &[Id]) -> bool {
    ids.iter().any(|id| match id {
        Id::Number(n) => raw == n,
        Id::Str(s) => {
            raw.starts_with('"') && serde_json::from_str::<String>(raw).ok().as_deref() == Some(s)
        }
    })
}

/// Checks one JSON-RPC document (a body, or an SSE event's data) in a response that must be
/// curated: exactly one JSON document, an object or a non-empty array of objects, none with a
/// duplicated member name; every message with a `result` is a response to one of `ids` (so
/// every reader takes it as this request's answer, and it is curated), and its `result` is an
/// object with no duplicated member name holding the `kind` array. A message without `result`
/// (a server request or notification, a JSON-RPC error) carries no list and is not checked
/// further. Returns whether some message has a `result` (a list to curate).
fn check_document(text: &str, kind: ListKind, ids: &[Id]) -> Result<bool, Unreadable> {
    match one_document(text)? {
        Document::Batch(messages) => {
            let mut lists = false;
            for m in messages {
                lists |= check_message(Message::parse(m.get())?, kind, ids)?;
            }
            Ok(lists)
        }
        Document::Message(message) => check_message(message, kind, ids),
    }
}

/// A JSON-RPC document read in one pass.
enum Document<'a> {
    /// A non-empty batch array.
    Batch(Vec<&'a RawValue>),
    /// One message, with no member name twice.
    Message(Message<'a>),
}

/// `text` as exactly one JSON document (RFC 8259: JSON whitespace around it, nothing else)
/// that is an object with no member name twice or a non-empty array; [`Unreadable::Trailing`]
/// when a value is followed by anything else, [`Unreadable::Shape`] otherwise.
fn one_document(text: &str) -> Result<Document<'_>, Unreadable> {
    let mut de = serde_json::Deserializer::from_str(text);
    let first = text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .as_bytes()
        .first();
    let doc = if first == Some(&b'[') {
        let messages = Vec::<&RawValue>::deserialize(&mut de).map_err(|_| Unreadable::Shape)?;
        if messages.is_empty() {
            return Err(Unreadable::Shape);
        }
        Document::Batch(messages)
    } else {
        let message = Message::deserialize(&mut de).map_err(|_| Unreadable::Shape)?;
        Document::Message(message.unique()?)
    };
    de.end().map_err(|_| Unreadable::Trailing)?;
    Ok(doc)
}

fn check_message(message: Message<'_>, kind: ListKind, ids: &[Id]) -> Result<bool, Unreadable> {
    let Some(result) = message.result else {
        // A server request or notification (not an answer), or a JSON-RPC error: no list in
        // it, whatever its id (a server's `id: null` error for a request it could not read,
        // or the Python SDK's `"server-error"` id on a 404 for an unknown session, reaches the
        // client with its diagnostics).
        return Ok(false);
    };
    if !message.id.is_some_and(|id| id_answers(id.get(), ids)) {
        return Err(Unreadable::Id);
    }
    let result = result.ok_or(Unreadable::Shape)?;
    no_duplicates(result.0.iter().map(|(n, _)| n.as_str()))?;
    match result.get(kind.array()) {
        Some(list) if list.starts_with('[') => Ok(true),
        _ => Err(Unreadable::Shape),
    }
}

/// The byte order mark (U+FEFF in UTF-8), which some readers skip and others refuse.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// The body as UTF-8 text with no byte order mark.
fn utf8_text(body: &[u8]) -> Result<&str, Unreadable> {
    if body.starts_with(BOM) {
        return Err(Unreadable::Utf8);
    }
    std::str::from_utf8(body).map_err(|_| Unreadable::Utf8)
}

/// Curates a whole `application/json` list response (the body of the POST whose request ids
/// are `ids`): checked ([`check_document`]), then rewritten ([`rewrite_document`]) so that only
/// entries for which `keep(name)` holds remain and a `cacheScope` says `"private"`.
pub fn curate_json<'a>(
    body: &'a [u8],
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite<'a>,
) -> Curation {
    let text = match utf8_text(body) {
        Ok(text) => text,
        Err(why) => return Curation::Unreadable(why),
    };
    match check_document(text, kind, ids) {
        Err(why) => Curation::Unreadable(why),
        Ok(false) => Curation::Unchanged,
        Ok(true) => match rewrite_document(text, kind, ids, keep, stats) {
            Some(new) => Curation::Rewritten(new.into_bytes()),
            None => Curation::Unreadable(Unreadable::Shape),
        },
    }
}

/// Curates a whole `text/event-stream` list response on the POST stream of the request whose
/// ids are `ids`: the body must be UTF-8 with no byte order mark, and every event's data that
/// is not empty or JSON whitespace is checked as a document ([`check_document`]); so a response
/// with another id on this stream is refused (an SDK client takes a response on a request's
/// stream as that request's answer). Then [`rewrite_sse`].
pub fn curate_sse<'a>(
    body: &'a [u8],
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite<'a>,
) -> Curation {
    if let Err(why) = utf8_text(body) {
        return Curation::Unreadable(why);
    }
    let lines = split_lines(body);
    // A line an SSE reader ignores (an unknown field name) is still text a client that reads the
    // body another way (as JSON, ignoring the content type) can find a list in: refused.
    if !lines.iter().all(|(line, _)| known_sse_line(line)) {
        return Curation::Unreadable(Unreadable::Shape);
    }
    let mut lists = false;
    for event in events(&lines) {
        let Some(data) = event_data(event) else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(&data) else {
            return Curation::Unreadable(Unreadable::Utf8);
        };
        if text
            .bytes()
            .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            continue; // a priming event: no message
        }
        match check_document(text, kind, ids) {
            Ok(list) => lists |= list,
            Err(why) => return Curation::Unreadable(why),
        }
    }
    if !lists {
        return Curation::Unchanged;
    }
    match rewrite_sse(body, kind, ids, keep, stats) {
        Some(new) => Curation::Rewritten(new),
        None => Curation::Unreadable(Unreadable::Shape),
    }
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uri: Option<String>,
    #[serde(default)]
    annotations: Option<ToolHints>,
}

/// A tool's behaviour hints from `tools/list` (MCP "Tools", `ToolAnnotations`); `None` when the
/// server did not say. Hints are the server's claims, not guarantees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct ToolHints {
    /// `readOnlyHint`: the tool does not modify its environment.
    #[serde(default, rename = "readOnlyHint")]
    pub read_only: Option<bool>,
    /// `destructiveHint`: the tool may perform destructive updates.
    #[serde(default, rename = "destructiveHint")]
    pub destructive: Option<bool>,
}

/// What a rewrite did; tool names borrow from the rewritten text when they have no escapes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite<'a> {
    /// Entries kept.
    pub kept: usize,
    /// Entries removed.
    pub removed: usize,
    /// Every tool of a `tools/list` response seen (kept or not), with its hints.
    pub tools_seen: Vec<(Cow<'a, str>, ToolHints)>,
}

/// Rewrites one JSON-RPC document (a message or a batch array): in each response whose id is
/// in `ids`, keeps the entries of `result.<list>` for which `keep(name)` holds. `None` when
/// nothing in the document is such a response (the caller keeps the original bytes), or when
/// the document is not valid JSON (RFC 8259) as far as it is kept.
///
/// The rewritten document is compact JSON with each object's members in key order (as
/// serde_json writes a map), duplicate members resolved last-wins, and every kept entry
/// copied byte for byte. The list array is framed, not parsed: only each entry's `name`,
/// `uri` and `annotations` members are decoded, and serde_json checks everything that is
/// written out (the message around the list and the kept entries); the bytes of removed
/// entries are not validated, since none of them reaches the client.
pub fn rewrite_document<'a>(
    text: &'a str,
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite<'a>,
) -> Option<String> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('[') {
        return rewrite_message(text, kind, ids, keep, stats);
    }
    let b = text.as_bytes();
    let open = frame::skip_ws(b, 0);
    if b.get(open) != Some(&b'[') {
        return None; // leading whitespace JSON does not allow
    }
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut batch = Seq::array(b, open);
    while let Some((_, start)) = batch.next().ok()? {
        let end = batch.skip_value(start).ok()?;
        spans.push((start, end));
    }
    if frame::skip_ws(b, batch.pos()) != b.len() {
        return None;
    }
    let before = stats.mark();
    let mut changed = false;
    let mut out = String::with_capacity(text.len());
    out.push('[');
    for (i, &(start, end)) in spans.iter().enumerate() {
        let element = text.get(start..end)?;
        if i > 0 {
            out.push(',');
        }
        match rewrite_message(element, kind, ids, keep, stats) {
            Some(new) => {
                changed = true;
                out.push_str(&new);
            }
            // Kept as it is: it must be valid JSON, as the whole batch had to be.
            None if serde_json::from_str::<serde::de::IgnoredAny>(element).is_ok() => {
                out.push_str(element);
            }
            None => {
                stats.reset(before);
                return None;
            }
        }
    }
    out.push(']');
    changed.then_some(out)
}

impl Rewrite<'_> {
    /// The counters and the length of `tools_seen`, to undo a rewrite that is abandoned.
    fn mark(&self) -> (usize, usize, usize) {
        (self.kept, self.removed, self.tools_seen.len())
    }

    fn reset(&mut self, (kept, removed, seen): (usize, usize, usize)) {
        self.kept = kept;
        self.removed = removed;
        self.tools_seen.truncate(seen);
    }
}

/// The framed path ([`rewrite_framed`]) met a shape it leaves to the parsed path (a duplicated
/// or escaped member name around the list).
struct Bail;

fn rewrite_message<'a>(
    text: &'a str,
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite<'a>,
) -> Option<String> {
    match rewrite_framed(text, kind, ids, keep, stats) {
        Ok(out) => out,
        Err(Bail) => rewrite_parsed(text, kind, ids, keep, stats),
    }
}

/// [`rewrite_message`] by framing: the list array's entries are located with
/// [`crate::jsonrpc::frame`], the message with the array replaced by `[]` is parsed by
/// serde_json (small), and only each entry's `name`/`uri`/`annotations` are decoded. Gives
/// the same output as [`rewrite_parsed`] on valid JSON; `Err(Bail)` before any side effect
/// when the message has a duplicated or escaped member name on the path to the list.
fn rewrite_framed<'a>(
    text: &'a str,
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite<'a>,
) -> Result<Option<String>, Bail> {
    let b = text.as_bytes();
    let open = frame::skip_ws(b, 0);
    if b.get(open) != Some(&b'{') {
        return Ok(None); // not an object: no list to curate
    }
    let want = kind.array().as_bytes();
    let (mut seen_id, mut seen_result) = (false, false);
    let mut array: Option<(usize, usize)> = None;
    let mut entries: Vec<Entry> = Vec::with_capacity(32);
    // Framing errors mean the text is not JSON: the parsed path would say `None` too.
    let mut top = Seq::object(b, open);
    loop {
        let Ok(next) = top.next() else {
            return Ok(None);
        };
        let Some((key, start)) = next else { break };
        let key = key.and_then(frame::plain_key).ok_or(Bail)?;
        if key == b"id" {
            if std::mem::replace(&mut seen_id, true) {
                return Err(Bail);
            }
        } else if key == b"result" {
            if std::mem::replace(&mut seen_result, true) {
                return Err(Bail);
            }
            if b.get(start) == Some(&b'{') {
                let mut result = Seq::object(b, start);
                let mut seen_array = false;
                loop {
                    let Ok(next) = result.next() else {
                        return Ok(None);
                    };
                    let Some((key, vstart)) = next else { break };
                    let key = key.and_then(frame::plain_key).ok_or(Bail)?;
                    if key == want {
                        if std::mem::replace(&mut seen_array, true) {
                            return Err(Bail);
                        }
                        if b.get(vstart) == Some(&b'[') {
                            let mut list = Seq::array(b, vstart);
                            loop {
                                let Ok(next) = list.next() else {
                                    return Ok(None);
                                };
                                let Some((_, estart)) = next else { break };
                                let Some(entry) = frame_entry(b, estart) else {
                                    return Ok(None);
                                };
                                list.resume(entry.end);
                                entries.push(entry);
                            }
                            array = Some((vstart, list.pos()));
                            result.resume(list.pos());
                            continue;
                        }
                    }
                    if result.skip_value(vstart).is_err() {
                        return Ok(None);
                    }
                }
                top.resume(result.pos());
                continue;
            }
        }
        if top.skip_value(start).is_err() {
            return Ok(None);
        }
    }
    if frame::skip_ws(b, top.pos()) != b.len() {
        return Ok(None);
    }
    // No result object or no list array in it: nothing to curate.
    let Some((array_start, array_end)) = array else {
        return Ok(None);
    };
    let (Some(head), Some(tail)) = (text.get(..array_start), text.get(array_end..)) else {
        return Ok(None);
    };
    let mut skeleton = String::with_capacity(head.len() + 2 + tail.len());
    skeleton.push_str(head);
    skeleton.push_str("[]");
    skeleton.push_str(tail);
    // Everything but the list entries, checked and read as the parsed path reads it.
    let Ok(mut message) = serde_json::from_str::<BTreeMap<String, &RawValue>>(&skeleton) else {
        return Ok(None);
    };
    let Some(id) = message.get("id").and_then(|raw| Id::from_raw(raw.get())) else {
        return Ok(None);
    };
    if !ids.contains(&id) {
        return Ok(None);
    }
    let Some(result) = message.get("result") else {
        return Ok(None);
    };
    let Ok(mut result) = serde_json::from_str::<BTreeMap<String, &RawValue>>(result.get()) else {
        return Ok(None);
    };

    let before = stats.mark();
    let mut kept = String::with_capacity(64 + (array_end - array_start) / 8);
    kept.push('[');
    for framed in entries {
        let Some(entry) = text.get(framed.start..framed.end) else {
            continue;
        };
        if curate_entry(read_named(text, &framed), kind, keep, stats) {
            if kept.len() > 1 {
                kept.push(',');
            }
            kept.push_str(entry);
        }
    }
    kept.push(']');
    // The kept entries are the only list bytes the client gets: they must be valid JSON.
    let Ok(array) = RawValue::from_string(kept) else {
        stats.reset(before);
        return Ok(None);
    };
    result.insert(kind.array().to_owned(), &array);
    let private = PRIVATE.with(Box::clone);
    if shareable(result.get(CACHE_SCOPE).copied()) {
        result.insert(CACHE_SCOPE.to_owned(), &private);
    }
    let Ok(result) = serde_json::value::to_raw_value(&result) else {
        stats.reset(before);
        return Ok(None);
    };
    message.insert("result".to_owned(), &result);
    match serde_json::to_string(&message) {
        Ok(out) => Ok(Some(out)),
        Err(_) => {
            stats.reset(before);
            Ok(None)
        }
    }
}

/// One entry of a framed list: its span and, for an object, the spans of its `name`, `uri`
/// and `annotations` values (`members` is `None` when a member is duplicated or the entry is
/// not an object: serde then decides).
struct Entry {
    start: usize,
    end: usize,
    members: Option<[Option<(usize, usize)>; 3]>,
}

/// Frames the list entry starting at `start`: its end and, for an object, where its `name`,
/// `uri` and `annotations` values are (one pass over the entry). `None` when it cannot be
/// framed (not JSON).
fn frame_entry(b: &[u8], start: usize) -> Option<Entry> {
    if b.get(start) != Some(&b'{') {
        let end = frame::value_end(b, start).filter(|&end| end > start)?;
        return Some(Entry {
            start,
            end,
            members: None,
        });
    }
    let mut found: [Option<(usize, usize)>; 3] = [None; 3];
    let mut duplicate = false;
    let mut members = Seq::object(b, start);
    while let Some((key, vstart)) = members.next().ok()? {
        let vend = members.skip_value(vstart).ok()?;
        let slot = match key.and_then(frame::plain_key) {
            Some(b"name") => 0,
            Some(b"uri") => 1,
            Some(b"annotations") => 2,
            Some(_) => continue,
            None => match key
                .and_then(|k| serde_json::from_slice::<String>(k).ok())
                .as_deref()
            {
                Some("name") => 0,
                Some("uri") => 1,
                Some("annotations") => 2,
                _ => continue,
            },
        };
        if let Some(slot) = found.get_mut(slot) {
            duplicate |= slot.replace((vstart, vend)).is_some();
        }
    }
    Some(Entry {
        start,
        end: members.pos(),
        members: (!duplicate).then_some(found),
    })
}

/// Decides one list entry from what was read of it (`None`: not an object with readable
/// names): records a tool's hints, counts it, and says whether it is kept. An entry whose name
/// cannot be read is removed. Both the framed and the parsed path decide here.
fn curate_entry<'a>(
    named: Option<NamedRef<'a>>,
    kind: ListKind,
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite<'a>,
) -> bool {
    if let (
        ListKind::Tools,
        Some(NamedRef {
            name: Some(name),
            annotations,
            ..
        }),
    ) = (kind, &named)
    {
        stats
            .tools_seen
            .push((name.clone(), annotations.unwrap_or_default()));
    }
    let name = named.and_then(|n| match kind {
        ListKind::Resources => n.uri,
        ListKind::Tools | ListKind::Prompts => n.name,
    });
    match name {
        Some(name) if keep(&name) => {
            stats.kept += 1;
            true
        }
        _ => {
            stats.removed += 1;
            false
        }
    }
}

/// The member of a list result (MCP 2026-07-28, SEP-2549 "cache hints") that says whether a
/// client or shared cache may serve the result across authorization contexts (`"public"`) or
/// only within the one that produced it (`"private"`); a sibling of the list array in `result`.
pub const CACHE_SCOPE: &str = "cacheScope";

thread_local! {
    /// The raw JSON `"private"`.
    static PRIVATE: Box<RawValue> = RawValue::from_string("\"private\"".to_owned())
        .unwrap_or_else(|_| RawValue::NULL.to_owned());
}

/// Whether a curated result's `cacheScope` must be rewritten: present and not the string
/// `"private"`. A curated list is specific to its agent and never leaves shareable.
fn shareable(scope: Option<&RawValue>) -> bool {
    scope.is_some_and(|raw| {
        serde_json::from_str::<String>(raw.get()).ok().as_deref() != Some("private")
    })
}

/// [`Named`], borrowing the names when they have no escapes.
struct NamedRef<'a> {
    name: Option<Cow<'a, str>>,
    uri: Option<Cow<'a, str>>,
    annotations: Option<ToolHints>,
}

impl From<Named> for NamedRef<'_> {
    fn from(n: Named) -> Self {
        NamedRef {
            name: n.name.map(Cow::Owned),
            uri: n.uri.map(Cow::Owned),
            annotations: n.annotations,
        }
    }
}

/// What `serde_json::from_str::<Named>(entry).ok()` reads for a framed entry: `None` when a
/// member is duplicated or has the wrong type. For an object only `name`, `uri` and
/// `annotations` are decoded; any other entry is parsed.
fn read_named<'a>(text: &'a str, entry: &Entry) -> Option<NamedRef<'a>> {
    let Some([name, uri, annotations]) = entry.members else {
        let named = serde_json::from_str::<Named>(text.get(entry.start..entry.end)?).ok()?;
        return Some(NamedRef {
            name: named.name.map(Cow::Owned),
            uri: named.uri.map(Cow::Owned),
            annotations: named.annotations,
        });
    };
    let raw = |span: Option<(usize, usize)>| span.and_then(|(s, e)| text.get(s..e));
    let annotations = match raw(annotations) {
        None | Some("null") => None,
        Some(raw) => Some(serde_json::from_str::<ToolHints>(raw).ok()?),
    };
    Some(NamedRef {
        name: named_string(raw(name))?,
        uri: named_string(raw(uri))?,
        annotations,
    })
}

/// An `Option<String>` member as serde reads it from its raw JSON (absent or `null`: `None`);
/// the outer `None` when it is neither a string nor `null`.
fn named_string(raw: Option<&str>) -> Option<Option<Cow<'_, str>>> {
    match raw {
        None | Some("null") => Some(None),
        Some(raw) if raw.starts_with('"') => match raw.get(1..raw.len() - 1) {
            Some(inner) if !inner.bytes().any(|c| c == b'\\') => Some(Some(Cow::Borrowed(inner))),
            _ => serde_json::from_str::<String>(raw)
                .ok()
                .map(|s| Some(Cow::Owned(s))),
        },
        Some(_) => None,
    }
}

/// [`rewrite_message`] by parsing the whole message with serde_json (the general path: any
/// shape, duplicated and escaped member names included).
fn rewrite_parsed<'a>(
    text: &'a str,
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite<'a>,
) -> Option<String> {
    let mut message: BTreeMap<String, Box<RawValue>> = serde_json::from_str(text).ok()?;
    let id = message.get("id").and_then(|raw| Id::from_raw(raw.get()))?;
    if !ids.contains(&id) {
        return None;
    }
    let result = message.get("result")?;
    let mut result: BTreeMap<String, Box<RawValue>> = serde_json::from_str(result.get()).ok()?;
    let entries: Vec<&RawValue> = match result.get(kind.array()) {
        Some(raw) => serde_json::from_str(raw.get()).ok()?,
        None => return None,
    };
    let mut kept: Vec<&RawValue> = Vec::with_capacity(entries.len());
    for entry in entries {
        let named = serde_json::from_str::<Named>(entry.get()).ok();
        if curate_entry(named.map(NamedRef::from), kind, keep, stats) {
            kept.push(entry);
        }
    }
    let array = serde_json::value::to_raw_value(&kept).ok()?;
    result.insert(kind.array().to_owned(), array);
    if shareable(result.get(CACHE_SCOPE).map(AsRef::as_ref)) {
        result.insert(CACHE_SCOPE.to_owned(), PRIVATE.with(Box::clone));
    }
    let result = serde_json::value::to_raw_value(&result).ok()?;
    message.insert("result".to_owned(), result);
    serde_json::to_string(&message).ok()
}

/// Rewrites a whole `text/event-stream` body: every event whose data is a matching response
/// ([`rewrite_document`]) gets the rewritten data in one `data:` line where its first `data:`
/// line was; all other lines are kept byte for byte. `None` when no event changed.
pub fn rewrite_sse<'a>(
    body: &'a [u8],
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite<'a>,
) -> Option<Vec<u8>> {
    let lines = split_lines(body);
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut changed = false;
    for event in events(&lines) {
        match rewrite_event(event, kind, ids, keep, stats) {
            Some(bytes) => {
                changed = true;
                out.extend_from_slice(&bytes);
            }
            None => {
                for (line, ending) in event {
                    out.extend_from_slice(line);
                    out.extend_from_slice(ending);
                }
            }
        }
    }
    changed.then_some(out)
}

/// The events of a split body: each one's lines up to and including the blank line that ends
/// it (the last may have none).
fn events<'l, 'a>(lines: &'l [Line<'a>]) -> impl Iterator<Item = &'l [Line<'a>]> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= lines.len() {
            return None;
        }
        let end = lines
            .iter()
            .skip(start)
            .position(|(line, _)| line.is_empty())
            .map_or(lines.len(), |p| start + p + 1);
        let event = lines.get(start..end);
        start = end;
        event
    })
}

/// Whether an SSE line is blank, a comment, or one of the fields the event stream
/// interpretation defines (`data`, `event`, `id`, `retry`; WHATWG HTML §9.2.6): what a curated
/// `text/event-stream` list response may hold.
fn known_sse_line(line: &[u8]) -> bool {
    let name = line
        .iter()
        .position(|&b| b == b':')
        .map_or(line, |colon| line.get(..colon).unwrap_or_default());
    line.is_empty()
        || line.first() == Some(&b':')
        || matches!(name, b"data" | b"event" | b"id" | b"retry")
}

/// An event's data: its `data` line values joined with LF (WHATWG HTML §9.2.6); `None` when it
/// has no `data` line.
fn event_data<'a>(event: &[Line<'a>]) -> Option<Cow<'a, [u8]>> {
    let mut values = event.iter().filter_map(|(line, _)| data_value(line));
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut d = Vec::with_capacity(first.len() + 1 + second.len());
    d.extend_from_slice(first);
    d.push(b'\n');
    d.extend_from_slice(second);
    for value in values {
        d.push(b'\n');
        d.extend_from_slice(value);
    }
    Some(Cow::Owned(d))
}

/// A list request answered on a server stream (GET; the legacy HTTP+SSE transport's only
/// stream): its kind, its id, and what its agent may use.
pub struct Claimed<'k> {
    /// The list asked for.
    pub kind: ListKind,
    /// The request's id, as the request spelled it.
    pub id: Id,
    /// Whether the agent may use an entry (by name, or URI for resources).
    pub keep: &'k dyn Fn(&str) -> bool,
}

/// What [`curate_server_stream`] did to a run of complete SSE events.
#[derive(Debug, Default)]
pub struct StreamCuration {
    /// The events the client gets instead, when anything changed.
    pub body: Option<Vec<u8>>,
    /// The lists rewritten (by index into the claimed lists).
    pub rewritten: Vec<usize>,
    /// Why each refused event was refused (at most one reason per event).
    pub refused: Vec<Unreadable>,
}

/// Curates the complete SSE events of a server stream under `curate_lists`. Responses to
/// requests POSTed on other streams pass here, so an id that matches none of `claimed` is no
/// fault; but no reader may find a list the agent may not use:
///
/// - an event whose data looks like JSON (its first character, after JSON whitespace and byte
///   order marks, is `{` or `[`) must be one UTF-8 JSON document without BOM, of objects with
///   no duplicated member name ([`Unreadable`] otherwise);
/// - a message with a `result` whose id answers a claimed list request must hold that list as
///   an array, and is rewritten ([`rewrite_event`]); any other message whose `result` has a
///   `tools`, `prompts` or `resources` member (a list answering no list request mcp-guard
///   curates for this stream: another id spelling, an expired request) is refused.
///
/// A refused event is replaced by one SSE `message` event carrying `refusal(why)` (a JSON-RPC
/// error); other events (the legacy `endpoint` event, comments, priming events) pass as they
/// are.
pub fn curate_server_stream(
    data: &[u8],
    claimed: &[Claimed<'_>],
    refusal: &dyn Fn(Unreadable) -> String,
) -> StreamCuration {
    let lines = split_lines(data);
    let mut result = StreamCuration::default();
    let mut out: Vec<u8> = Vec::with_capacity(data.len());
    let mut changed = false;
    for event in events(&lines) {
        let original = || {
            let mut bytes = Vec::new();
            for (line, ending) in event {
                bytes.extend_from_slice(line);
                bytes.extend_from_slice(ending);
            }
            bytes
        };
        let looks_like_json = event_data(event).is_some_and(|raw| {
            let text = String::from_utf8_lossy(&raw);
            let rest = text.trim_start_matches([' ', '\t', '\n', '\r', '\u{feff}']);
            rest.starts_with(['{', '['])
        });
        if !looks_like_json {
            out.extend(original());
            continue;
        }
        let checked = event_data(event)
            .ok_or(Unreadable::Shape)
            .and_then(|raw| check_stream_document(&raw, claimed));
        let replaced = match checked {
            Ok(lists) if lists.is_empty() => None,
            Ok(lists) => {
                let mut bytes = original();
                let mut failed = false;
                for &j in &lists {
                    let Some(list) = claimed.get(j) else { continue };
                    let split = split_lines(&bytes);
                    let mut stats = Rewrite::default();
                    let ids = [list.id.clone()];
                    match rewrite_event(&split, list.kind, &ids, list.keep, &mut stats) {
                        Some(new) => {
                            result.rewritten.push(j);
                            bytes = new;
                        }
                        None => failed = true,
                    }
                }
                Some(if failed {
                    result.refused.push(Unreadable::Shape);
                    refusal_event(&refusal(Unreadable::Shape))
                } else {
                    bytes
                })
            }
            Err(why) => {
                result.refused.push(why);
                Some(refusal_event(&refusal(why)))
            }
        };
        match replaced {
            Some(bytes) => {
                changed = true;
                out.extend(bytes);
            }
            None => out.extend(original()),
        }
    }
    if changed {
        result.body = Some(out);
    }
    result
}

/// One SSE `message` event carrying `json`.
fn refusal_event(json: &str) -> Vec<u8> {
    format!("event: message\ndata: {json}\n\n").into_bytes()
}

/// [`curate_server_stream`]'s check of one event's data that looks like JSON: the indexes of
/// the claimed lists it answers.
fn check_stream_document(raw: &[u8], claimed: &[Claimed<'_>]) -> Result<Vec<usize>, Unreadable> {
    let text = utf8_text(raw)?;
    let messages = match one_document(text)? {
        Document::Batch(messages) => messages
            .into_iter()
            .map(|m| Message::parse(m.get()))
            .collect::<Result<Vec<_>, _>>()?,
        Document::Message(message) => vec![message],
    };
    let mut lists = Vec::new();
    for message in messages {
        let Some(result) = message.result else {
            continue;
        };
        let id = message.id.map_or("null", RawValue::get);
        let answered = claimed
            .iter()
            .position(|c| id_answers(id, std::slice::from_ref(&c.id)));
        let result = match (answered, result) {
            (_, Some(result)) => result,
            (Some(_), None) => return Err(Unreadable::Shape),
            (None, None) => continue, // not an object: no list in it
        };
        let kinds = [ListKind::Tools, ListKind::Prompts, ListKind::Resources];
        let listed = kinds.iter().any(|k| result.get(k.array()).is_some());
        if answered.is_some() || listed {
            no_duplicates(result.0.iter().map(|(n, _)| n.as_str()))?;
        }
        match answered.and_then(|j| Some((j, claimed.get(j)?))) {
            Some((j, c))
                if result
                    .get(c.kind.array())
                    .is_some_and(|l| l.starts_with('[')) =>
            {
                lists.push(j);
            }
            Some(_) => return Err(Unreadable::Shape),
            None if listed => return Err(Unreadable::Id),
            None => {}
        }
    }
    Ok(lists)
}

/// Longest incomplete SSE event a server stream holds back for curation, in bytes; a longer
/// one is passed on as it is (docs/curation.md "Curated tool surfaces").
pub const MAX_HELD_EVENT: usize = 4 * 1024 * 1024;

/// The length of the prefix of `data` that consists of complete SSE events (up to and
/// including the blank line of the last one). A trailing CR is never counted as complete: it
/// may be the first half of a CRLF.
pub fn complete_events(data: &[u8]) -> usize {
    let usable = if data.last() == Some(&b'\r') {
        data.len().saturating_sub(1)
    } else {
        data.len()
    };
    let mut boundary = 0;
    let mut pos = 0;
    for (line, ending) in split_lines(data.get(..usable).unwrap_or_default()) {
        pos += line.len() + ending.len();
        if line.is_empty() && !ending.is_empty() {
            boundary = pos;
        }
    }
    boundary
}

type Line<'a> = (&'a [u8], &'a [u8]);

/// Splits into (line, line ending) pairs; the last line may have no ending.
fn split_lines(body: &[u8]) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        match memchr::memchr2(b'\n', b'\r', rest) {
            None => {
                lines.push((rest, &[][..]));
                break;
            }
            Some(i) => {
                let ending_len = if rest.get(i) == Some(&b'\r') && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                let (line, after) = rest.split_at(i);
                let (ending, next) = after.split_at(ending_len.min(after.len()));
                lines.push((line, ending));
                rest = next;
            }
        }
    }
    lines
}

fn rewrite_event<'a>(
    event: &[Line<'a>],
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite<'a>,
) -> Option<Vec<u8>> {
    let mut data_lines = event
        .iter()
        .enumerate()
        .filter_map(|(i, (line, _))| Some((i, data_value(line)?)));
    let (first, first_value) = data_lines.next()?;
    // One data line (the usual case) is the data itself; more are joined with LF (and the
    // names read from that copy are copied out).
    let new = match data_lines.next() {
        None => rewrite_document(
            std::str::from_utf8(first_value).ok()?,
            kind,
            ids,
            keep,
            stats,
        )?,
        Some((_, second)) => {
            let mut d = Vec::with_capacity(first_value.len() + 1 + second.len());
            d.extend_from_slice(first_value);
            d.push(b'\n');
            d.extend_from_slice(second);
            for (_, value) in data_lines {
                d.push(b'\n');
                d.extend_from_slice(value);
            }
            let text = std::str::from_utf8(&d).ok()?;
            let mut local = Rewrite::default();
            let new = rewrite_document(text, kind, ids, keep, &mut local);
            stats.kept += local.kept;
            stats.removed += local.removed;
            stats.tools_seen.extend(
                local
                    .tools_seen
                    .into_iter()
                    .map(|(name, hints)| (Cow::Owned(name.into_owned()), hints)),
            );
            new?
        }
    };
    let mut out = Vec::with_capacity(new.len() + 64);
    for (i, (line, ending)) in event.iter().enumerate() {
        if i == first {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(new.as_bytes());
            out.extend_from_slice(if ending.is_empty() { b"\n" } else { ending });
        } else if data_value(line).is_none() {
            out.extend_from_slice(line);
            out.extend_from_slice(ending);
        }
    }
    Some(out)
}

/// The value of a `data` field line (one leading space after the colon dropped), or `None`
/// for any other line (a field named e.g. `database` is not data).
fn data_value(line: &[u8]) -> Option<&[u8]> {
    let value = line.strip_prefix(b"data")?;
    match value.split_first() {
        None => Some(value),
        Some((b':', v)) => Some(v.strip_prefix(b" ").unwrap_or(v)),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep_echo(name: &str) -> bool {
        name == "echo" || name.starts_with("demo://")
    }

    const TOOLS: &str = r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}},{"name":"delete_repo","annotations":{"destructiveHint":true}},{"title":"no name"},7],"nextCursor":"c2"}}"#;

    #[test]
    fn json_list_keeps_allowed_entries_verbatim_and_other_members() {
        let mut stats = Rewrite::default();
        let ids = [Id::Number("3".into())];
        let out = rewrite_document(TOOLS, ListKind::Tools, &ids, &keep_echo, &mut stats).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["result"]["tools"].as_array().unwrap().len(), 1);
        assert_eq!(v["result"]["tools"][0]["inputSchema"]["type"], "object");
        assert_eq!(v["result"]["nextCursor"], "c2");
        assert_eq!(
            (v["id"].clone(), v["jsonrpc"].clone()),
            (3.into(), "2.0".into())
        );
        assert_eq!((stats.kept, stats.removed), (1, 3));
        let destructive = ToolHints {
            read_only: None,
            destructive: Some(true),
        };
        assert_eq!(
            stats.tools_seen,
            vec![
                ("echo".into(), ToolHints::default()),
                ("delete_repo".into(), destructive)
            ]
        );
        // Another id, or "3" as a string, is not this request's response.
        let other = [Id::Str("3".into())];
        assert_eq!(
            rewrite_document(TOOLS, ListKind::Tools, &other, &keep_echo, &mut stats),
            None
        );
    }

    #[test]
    fn batches_resources_and_prompts() {
        let mut stats = Rewrite::default();
        let ids = [Id::Number("1".into())];
        let batch = r#"[{"jsonrpc":"2.0","id":1,"result":{"resources":[{"uri":"demo://a","name":"a"},{"uri":"file:///etc/passwd","name":"p"}]}},{"jsonrpc":"2.0","method":"notifications/resources/list_changed"}]"#;
        let out =
            rewrite_document(batch, ListKind::Resources, &ids, &keep_echo, &mut stats).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[0]["result"]["resources"].as_array().unwrap().len(), 1);
        assert_eq!(v[1]["method"], "notifications/resources/list_changed");
        let prompts =
            r#"{"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"greet"},{"name":"echo"}]}}"#;
        let out =
            rewrite_document(prompts, ListKind::Prompts, &ids, &keep_echo, &mut stats).unwrap();
        assert!(out.contains("\"echo\"") && !out.contains("greet"));
    }

    #[test]
    fn sse_events_are_rewritten_in_place_with_their_line_endings() {
        let body = format!(
            ": ping\r\n\r\nevent: message\r\nid: e1\r\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}\r\n\r\nevent: message\r\nid: e2\r\ndata: {TOOLS}\r\n\r\n"
        );
        let mut stats = Rewrite::default();
        let ids = [Id::Number("3".into())];
        let out = rewrite_sse(
            body.as_bytes(),
            ListKind::Tools,
            &ids,
            &keep_echo,
            &mut stats,
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with(": ping\r\n\r\nevent: message\r\nid: e1\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\r\n\r\nevent: message\r\nid: e2\r\ndata: {"));
        assert!(out.ends_with("}\r\n\r\n"), "{out:?}");
        assert!(!out.contains("delete_repo"));
        // A data value split over two lines (LF), and CR-only endings.
        let split = TOOLS.replacen(",\"nextCursor\"", "\ndata: ,\"nextCursor\"", 1);
        let body = format!("data: {split}\n\n");
        let out = rewrite_sse(
            body.as_bytes(),
            ListKind::Tools,
            &ids,
            &keep_echo,
            &mut stats,
        )
        .unwrap();
        assert!(!String::from_utf8_lossy(&out).contains("delete_repo"));
        let body = format!("id: 1\rdata: {TOOLS}\r\r");
        let out = rewrite_sse(
            body.as_bytes(),
            ListKind::Tools,
            &ids,
            &keep_echo,
            &mut stats,
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with("id: 1\rdata: {")
                && out.ends_with("}\r\r")
                && !out.contains("delete_repo")
        );
        // Complete events end at the last blank line; a trailing CR waits for its LF.
        assert_eq!(complete_events(b"data: a\n\ndata: b"), 9);
        assert_eq!(complete_events(b"data: a\r\n\r\ndata: b\r\n\r"), 11);
        assert_eq!(complete_events(b"data: a\r\r"), 0);
        assert_eq!(complete_events(b"data: a\r\rid: 2"), 9);
        assert_eq!(complete_events(b"data: a\r\n"), 0);
        // Nothing to rewrite.
        assert_eq!(
            rewrite_sse(
                b": only a comment\n\n",
                ListKind::Tools,
                &ids,
                &keep_echo,
                &mut stats
            ),
            None
        );
    }

    /// The rewrite before framing (every message parsed whole), as the reference.
    fn reference<'a>(
        text: &'a str,
        kind: ListKind,
        ids: &[Id],
        keep: &dyn Fn(&str) -> bool,
        stats: &mut Rewrite<'a>,
    ) -> Option<String> {
        if text.trim_start().starts_with('[') {
            let elements: Vec<&RawValue> = serde_json::from_str(text).ok()?;
            let mut changed = false;
            let mut out: Vec<String> = Vec::with_capacity(elements.len());
            for element in elements {
                match rewrite_parsed(element.get(), kind, ids, keep, stats) {
                    Some(new) => {
                        changed = true;
                        out.push(new);
                    }
                    None => out.push(element.get().to_owned()),
                }
            }
            changed.then(|| format!("[{}]", out.join(",")))
        } else {
            rewrite_parsed(text, kind, ids, keep, stats)
        }
    }

    fn inputs() -> Vec<(String, ListKind)> {
        let bench = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/data/list_response.json"),
        )
        .unwrap();
        let mut v: Vec<(String, ListKind)> = vec![
            (TOOLS.to_owned(), ListKind::Tools),
            (bench, ListKind::Tools),
            (
                r#" { "result" : { "tools" : [ { "name" : "echo" } , { "name" : "x" } , ["echo"], ["echo", null, null, 1], "echo", null, {"name":null}, {"name":"ec\u0068o","annotations":null}, {"n\u0061me":"echo"}, {"name":"echo","name":"echo"}, {"name":"echo","annotations":{"readOnlyHint":true,"x":[1,{"a":"]"}]}}, {"name":"echo","annotations":{"readOnlyHint":"yes"}}, {"name":"echo","annotations":[true]}, {"name":"echo","uri":7}, {"name":"echo\"}]"} ] , "nextCursor" : "n" } , "id" : 3 , "jsonrpc" : "2.0" } "#.to_owned(),
                ListKind::Tools,
            ),
            (r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"echo"}],"tools":[{"name":"echo"},{"name":"y"}]}}"#.to_owned(), ListKind::Tools),
            (r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"y"}]},"result":{"tools":[{"name":"echo"},{"name":"y"}]}}"#.to_owned(), ListKind::Tools),
            (r#"{"jsonrpc":"2.0","id":3,"id":4,"result":{"tools":[{"name":"echo"},{"name":"y"}]}}"#.to_owned(), ListKind::Tools),
            (r#"{"jsonrpc":"2.0","i\u0064":3,"r\u0065sult":{"t\u006fols":[{"name":"echo"},{"name":"y"}],"\n":1}}"#.to_owned(), ListKind::Tools),
            (r#"{"jsonrpc":"2.0","id":"3","result":{"tools":[{"name":"echo"}]}}"#.to_owned(), ListKind::Tools),
            (r#"{"jsonrpc":"2.0","id":3,"result":{"tools":{"name":"echo"}}}"#.to_owned(), ListKind::Tools),
            (r#"{"jsonrpc":"2.0","id":3,"result":[{"tools":[]}]}"#.to_owned(), ListKind::Tools),
            (r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[]}}"#.to_owned(), ListKind::Tools),
            (r#"{"jsonrpc":"2.0","id":3,"result":{"prompts":[{"name":"greet"},{"name":"echo","arguments":[]}]}}"#.to_owned(), ListKind::Prompts),
            (r#"[{"jsonrpc":"2.0","id":3,"result":{"resources":[{"uri":"demo://a","name":"a"},{"uri":"file:///etc/passwd"},{"uri":"demo://b","name":5}]}} , {"jsonrpc":"2.0","method":"notifications/resources/list_changed"}, 7 ]"#.to_owned(), ListKind::Resources),
            (r#"[{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"echo"}]}},{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"echo"},{"name":"z"}]}}]"#.to_owned(), ListKind::Tools),
            (r#"{"id":3,"result":{"tools":[{"name":"echo","annotations":{"readOnlyHint":null,"destructiveHint":true}},{"name":"add","annotations":{"readOnlyHint":true,"readOnlyHint":false}},{"name":"a2","annotations":{"destructiveHint":1}},{"name":"a3","annotations":{"r\u0065adOnlyHint":true,"title":"x"}},{"name":"a4","annotations":[true,false]},{"name":"a5","annotations":{"title":{"readOnlyHint":false}}},{"name":"a6","annotations":"x"}]}}"#.to_owned(), ListKind::Tools),
            ("\u{a0}{\"id\":3,\"result\":{\"tools\":[]}}".to_owned(), ListKind::Tools),
            ("\u{a0}[{\"id\":3,\"result\":{\"tools\":[]}}]".to_owned(), ListKind::Tools),
        ];
        // Each with other whitespace between the tokens.
        let spaced: Vec<(String, ListKind)> = v
            .iter()
            .filter(|(t, _)| t.len() < 4000)
            .map(|(t, k)| (t.replace(',', "\r\n,\t").replace(':', " :\n"), *k))
            .collect();
        v.extend(spaced);
        v
    }

    fn keep_some(name: &str) -> bool {
        keep_echo(name) || name.starts_with('a') || name.contains("repo")
    }

    #[test]
    fn framing_gives_the_reference_output_on_valid_json() {
        let ids = [Id::Number("3".into()), Id::Number("1".into())];
        let valid = |t: &str| serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok();
        let inputs = inputs();
        assert!(inputs.iter().filter(|(t, _)| valid(t)).count() >= 25);
        for (text, kind) in inputs.into_iter().filter(|(t, _)| valid(t)) {
            let (mut a, mut b) = (Rewrite::default(), Rewrite::default());
            let new = rewrite_document(&text, kind, &ids, &keep_some, &mut a);
            let old = reference(&text, kind, &ids, &keep_some, &mut b);
            assert_eq!(new, old, "{text}");
            assert_eq!(a, b, "{text}");
        }
    }

    /// On damaged JSON the output (if any) is valid JSON showing only allowed entries, and
    /// equals the reference wherever the reference rewrote.
    #[test]
    fn framing_on_damaged_json_never_shows_more() {
        let ids = [Id::Number("3".into())];
        for (text, kind) in inputs().into_iter().filter(|(t, _)| t.len() < 4000) {
            let bytes = text.as_bytes();
            for pos in 0..bytes.len() {
                for edit in [
                    None,
                    Some(b'"'),
                    Some(b'\\'),
                    Some(b'}'),
                    Some(b']'),
                    Some(b','),
                    Some(b'{'),
                ] {
                    let mut damaged = bytes.to_vec();
                    match edit {
                        None => {
                            damaged.remove(pos);
                        }
                        Some(c) => damaged.insert(pos, c),
                    }
                    let Ok(damaged) = String::from_utf8(damaged) else {
                        continue;
                    };
                    let (mut a, mut b) = (Rewrite::default(), Rewrite::default());
                    let new = rewrite_document(&damaged, kind, &ids, &keep_echo, &mut a);
                    let old = reference(&damaged, kind, &ids, &keep_echo, &mut b);
                    if old.is_some() {
                        assert_eq!(new, old, "{damaged}");
                        assert_eq!(a, b, "{damaged}");
                    }
                    if let Some(out) = new {
                        let v: serde_json::Value = serde_json::from_str(&out)
                            .unwrap_or_else(|e| panic!("{damaged} -> {out}: {e}"));
                        let messages = match v {
                            serde_json::Value::Array(v) => v,
                            one => vec![one],
                        };
                        for m in messages.iter().filter(|m| m["id"] == 3) {
                            let Some(list) = m["result"][kind.array()].as_array() else {
                                continue;
                            };
                            for entry in list {
                                let name = match kind {
                                    ListKind::Resources => &entry["uri"],
                                    _ => &entry["name"],
                                };
                                assert!(
                                    name.as_str().is_some_and(keep_echo) || entry.is_array(),
                                    "{damaged} -> {out}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    /// Every name in any `tools` array of any message a reader could take from `out` (a
    /// lenient UTF-8 decoder, a first-document reader, serde's last-duplicate-wins maps).
    fn names_any_reader_sees(out: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(out);
        let mut names = Vec::new();
        let mut collect = |v: &serde_json::Value| {
            let messages = match v {
                serde_json::Value::Array(v) => v.clone(),
                one => vec![one.clone()],
            };
            for m in messages {
                for t in m["result"]["tools"].as_array().into_iter().flatten() {
                    names.extend(t["name"].as_str().map(str::to_owned));
                }
            }
        };
        for doc in text.split("data: ").chain([text.as_ref()]) {
            let doc = doc.trim_start_matches('\u{feff}');
            let mut docs = serde_json::Deserializer::from_str(doc).into_iter::<serde_json::Value>();
            if let Some(Ok(v)) = docs.next() {
                collect(&v);
            }
        }
        names.sort();
        names.dedup();
        names
    }

    fn curate(body: &[u8], sse: bool, ids: &[Id]) -> Curation {
        let mut stats = Rewrite::default();
        let f = if sse { curate_sse } else { curate_json };
        f(body, ListKind::Tools, ids, &keep_echo, &mut stats)
    }

    const LIST: &str =
        r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"echo"},{"name":"delete_repo"}]}}"#;

    #[test]
    fn a_readable_list_is_rewritten_and_nothing_else_changes() {
        let seven = [Id::Number("7".into())];
        for sse in [false, true] {
            let body = if sse {
                format!(": c\n\nevent: message\ndata: {LIST}\n\n")
            } else {
                LIST.to_owned()
            };
            let Curation::Rewritten(out) = curate(body.as_bytes(), sse, &seven) else {
                panic!("{body}");
            };
            assert_eq!(names_any_reader_sees(&out), ["echo"]);
        }
        // A JSON-RPC error, notifications and priming events only: unchanged.
        let error = r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"no"}}"#;
        assert_eq!(curate(error.as_bytes(), false, &seven), Curation::Unchanged);
        let sse = format!("id: p\ndata: \n\nevent: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}\n\ndata: {error}\n\n");
        assert_eq!(curate(sse.as_bytes(), true, &seven), Curation::Unchanged);
        // A server request reusing the id passes; the response after it is curated.
        let sse = format!(
            "data: {{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}}\n\ndata: {LIST}\n\n"
        );
        let Curation::Rewritten(out) = curate(sse.as_bytes(), true, &seven) else {
            panic!()
        };
        assert!(!String::from_utf8_lossy(&out).contains("delete_repo"));
    }

    #[test]
    fn each_unreadable_class_is_refused() {
        let seven = [Id::Number("7".into())];
        let s7 = [Id::Str("7".into())];
        let cases: Vec<(Vec<u8>, bool, &[Id], Unreadable)> = vec![
            // Not UTF-8 (JSON and SSE), or a byte order mark.
            (LIST.replace("echo", "ech\u{fffd}").replace('\u{fffd}', "\u{1}").into_bytes().into_iter().map(|b| if b == 1 { 0xff } else { b }).collect(), false, &seven, Unreadable::Utf8),
            ([b"data: ", LIST.as_bytes(), b"\n\ndata: \xc3\x28\n\n"].concat(), true, &seven, Unreadable::Utf8),
            ([BOM, LIST.as_bytes()].concat(), false, &seven, Unreadable::Utf8),
            ([BOM, b"data: ", LIST.as_bytes(), b"\n\n"].concat(), true, &seven, Unreadable::Utf8),
            // Bytes after the document: a second document, garbage, an SSE event with two.
            (format!("{LIST}{LIST}").into_bytes(), false, &seven, Unreadable::Trailing),
            (format!("{LIST}\n x").into_bytes(), false, &seven, Unreadable::Trailing),
            (format!("data: {LIST} {LIST}\n\n").into_bytes(), true, &seven, Unreadable::Trailing),
            // Unexpected shapes.
            (br#"{"jsonrpc":"2.0","id":7,"result":{"tools":{"name":"delete_repo"}}}"#.to_vec(), false, &seven, Unreadable::Shape),
            (br#"{"jsonrpc":"2.0","id":7,"result":{"other":[]}}"#.to_vec(), false, &seven, Unreadable::Shape),
            (br#"{"jsonrpc":"2.0","id":7,"result":[{"name":"delete_repo"}]}"#.to_vec(), false, &seven, Unreadable::Shape),
            (br#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"echo"}],"t\u006fols":[{"name":"delete_repo"}]}}"#.to_vec(), false, &seven, Unreadable::Shape),
            (br#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"delete_repo"}]},"result":{"tools":[]}}"#.to_vec(), false, &seven, Unreadable::Shape),
            (br#"["x"]"#.to_vec(), false, &seven, Unreadable::Shape),
            (b"[]".to_vec(), false, &seven, Unreadable::Shape),
            (b"".to_vec(), false, &seven, Unreadable::Shape),
            (("\u{a0}".to_owned() + LIST).into_bytes(), false, &seven, Unreadable::Shape),
            (b"data: {\"tools\": [\n\n".to_vec(), true, &seven, Unreadable::Shape),
            // Ids not spelled as the request spelled them, or matching nothing.
            (LIST.replace("\"id\":7", "\"id\":\"7\"").into_bytes(), false, &seven, Unreadable::Id),
            (LIST.replace("\"id\":7", "\"id\":7.0").into_bytes(), false, &seven, Unreadable::Id),
            (LIST.replace("\"id\":7", "\"id\":7e0").into_bytes(), false, &seven, Unreadable::Id),
            (LIST.replace("\"id\":7", "\"id\":8").into_bytes(), false, &seven, Unreadable::Id),
            (LIST.replace("\"id\":7,", "").into_bytes(), false, &seven, Unreadable::Id),
            (LIST.as_bytes().to_vec(), false, &s7, Unreadable::Id),
            (format!("data: {}\n\n", LIST.replace("\"id\":7", "\"id\":99")).into_bytes(), true, &seven, Unreadable::Id),
            (format!("[{LIST},{}]", LIST.replace("\"id\":7", "\"id\":null")).into_bytes(), false, &seven, Unreadable::Id),
            (br#"{"jsonrpc":"2.0","id":7,"method":"x","result":{"tools":[{"name":"delete_repo"}]},"id":8}"#.to_vec(), false, &seven, Unreadable::Shape),
            (br#"{"jsonrpc":"2.0","id":8,"method":"x","result":{"tools":[{"name":"delete_repo"}]}}"#.to_vec(), false, &seven, Unreadable::Id),
        ];
        for (body, sse, ids, why) in cases {
            let shown = String::from_utf8_lossy(&body).into_owned();
            assert!(
                !names_any_reader_sees(&body).is_empty() || why != Unreadable::Id,
                "{shown}"
            );
            assert_eq!(
                curate(&body, sse, ids),
                Curation::Unreadable(why),
                "{shown}"
            );
        }
        // A JSON-RPC error with any id carries no list: it passes with its diagnostics.
        let error =
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Session not found"}}"#;
        assert_eq!(curate(error.as_bytes(), false, &seven), Curation::Unchanged);
        // A string id's escapes decode as every reader decodes them.
        let escaped = LIST.replace("\"id\":7", r#""id":"\u0037""#);
        assert!(matches!(
            curate(escaped.as_bytes(), false, &s7),
            Curation::Rewritten(_)
        ));
    }

    #[test]
    fn duplicate_names_in_an_entry_are_dropped_for_every_reader() {
        let seven = [Id::Number("7".into())];
        for entry in [
            r#"{"name":"echo","name":"delete_repo"}"#,
            r#"{"name":"delete_repo","name":"echo"}"#,
            r#"{"name":"echo","n\u0061me":"delete_repo"}"#,
        ] {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":7,"result":{{"tools":[{entry},{{"name":"echo"}}]}}}}"#
            );
            let Curation::Rewritten(out) = curate(body.as_bytes(), false, &seven) else {
                panic!()
            };
            let out = String::from_utf8(out).unwrap();
            assert!(!out.contains("delete_repo"), "{out}");
        }
    }

    #[test]
    fn a_list_an_sse_reader_would_not_see_is_refused() {
        let seven = [Id::Number("7".into())];
        // A JSON body labelled text/event-stream: no SSE event, but a JSON reader sees the list.
        assert_eq!(
            curate(LIST.as_bytes(), true, &seven),
            Curation::Unreadable(Unreadable::Shape)
        );
        // An unknown field among the events (SSE readers ignore the line).
        let odd = format!(": ping\nretry: 10\nid: 1\nevent: message\ndata: {LIST}\n\n{LIST}\n\n");
        assert_eq!(
            curate(odd.as_bytes(), true, &seven),
            Curation::Unreadable(Unreadable::Shape)
        );
        // Comments and the four fields are fine.
        let fine = format!(": ping\nretry: 10\nid: 1\nevent: message\ndata: {LIST}\n\n");
        assert!(matches!(
            curate(fine.as_bytes(), true, &seven),
            Curation::Rewritten(_)
        ));
    }

    #[test]
    fn a_curated_list_is_never_shareable() {
        let seven = [Id::Number("7".into())];
        for (scope, expect) in [
            (r#""public""#, Some("private")),
            (r#""p\u0075blic""#, Some("private")),
            ("1", Some("private")),
            (r#""private""#, Some("private")),
        ] {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":7,"result":{{"tools":[{{"name":"echo"}}],"ttlMs":5,"cacheScope":{scope}}}}}"#
            );
            for sse in [false, true] {
                let body = if sse {
                    format!("data: {body}\n\n")
                } else {
                    body.clone()
                };
                let Curation::Rewritten(out) = curate(body.as_bytes(), sse, &seven) else {
                    panic!()
                };
                let text = String::from_utf8(out).unwrap();
                let doc = text.trim_start_matches("data: ").trim_end();
                let v: serde_json::Value = serde_json::from_str(doc).unwrap();
                assert_eq!(v["result"]["cacheScope"].as_str(), expect, "{text}");
                assert_eq!(v["result"]["ttlMs"], 5);
            }
        }
        // Absent (before 2026-07-28): not added.
        let Curation::Rewritten(out) = curate(LIST.as_bytes(), false, &seven) else {
            panic!()
        };
        assert!(!String::from_utf8(out).unwrap().contains("cacheScope"));
    }

    #[test]
    fn content_types_a_list_response_may_have() {
        let v = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "text/event-stream",
            "text/event-stream; charset=utf-8; x=1",
        ] {
            assert!(curatable_kind(&v(&[ok]), false).is_ok(), "{ok}");
        }
        assert_eq!(
            curatable_kind(&v(&["text/event-stream"]), false),
            Ok(BodyKind::EventStream)
        );
        for (bad, why) in [
            ("application/jsonx", Unreadable::ContentType),
            ("application/json-seq", Unreadable::ContentType),
            ("text/plain", Unreadable::ContentType),
            (
                "application/json, text/event-stream",
                Unreadable::ContentType,
            ),
            ("application/json; charset=utf-16", Unreadable::Charset),
            ("text/event-stream; charset=latin1", Unreadable::Charset),
            (
                "application/json; charset=utf-8; charset=utf-16",
                Unreadable::Charset,
            ),
        ] {
            assert_eq!(curatable_kind(&v(&[bad]), false), Err(why), "{bad}");
        }
        assert_eq!(curatable_kind(&v(&[]), false), Err(Unreadable::ContentType));
        assert_eq!(
            curatable_kind(&v(&["application/json", "application/json"]), false),
            Err(Unreadable::ContentType)
        );
        assert_eq!(
            curatable_kind(&v(&["application/json"]), true),
            Err(Unreadable::Encoding)
        );
        let reasons: Vec<&str> = Unreadable::ALL.iter().map(|u| u.reason()).collect();
        assert_eq!(reasons.len(), 7);
        assert!(reasons.iter().all(|r| r.starts_with("response_")));
    }
}
