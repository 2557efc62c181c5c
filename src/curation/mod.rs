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
//!
//! Parts: this module checks a response before it is rewritten ([`curate_json`],
//! [`curate_sse`]: the shape, ids and duplicates every reader must agree on);
//! `document.rs` rewrites one JSON-RPC document ([`rewrite_document`], framing the list with
//! [`crate::json`]); `event_stream.rs` rewrites a held `text/event-stream` body in place
//! ([`rewrite_sse`], events split by [`crate::sse`]); `server_stream.rs` curates the complete
//! events of a server stream ([`curate_server_stream`]); `listen.rs` curates the notifications of
//! a `subscriptions/listen` stream (and of a server stream) for the agent
//! ([`curate_listen_events`]). List kinds and member names come from [`crate::mcp`].

mod document;
mod event_stream;
mod listen;
mod server_stream;
#[cfg(test)]
mod tests;

pub use crate::mcp::{ListKind, CACHE_SCOPE};
pub use crate::sse::complete_events;
pub use document::{rewrite_document, Rewrite, ToolHints};
pub use event_stream::rewrite_sse;
pub use listen::{curate_listen_events, first_event_end, skipped_tail, ListenCuration};
pub use server_stream::{curate_server_stream, Claimed, StreamCuration, MAX_HELD_EVENT};

use crate::json::{self, Members};
use crate::jsonrpc::Id;
use crate::response::BodyKind;
use crate::sse;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Decides whether a list entry stays in a curated list: `name` is the entry's name (its URI
/// for `resources/list`), `entry` its JSON text as the server sent it (what tool pins hash,
/// `crate::pins`). Any `Fn(&str) -> bool` over the name is one.
pub trait Keep {
    /// Whether the entry stays.
    fn keep(&self, name: &str, entry: &str) -> bool;
}

impl<F: Fn(&str) -> bool> Keep for F {
    fn keep(&self, name: &str, _entry: &str) -> bool {
        self(name)
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
    /// The response's headers or body could not be read from the host (a failed hostcall,
    /// `crate::host::ReadError`): nothing about it can be shown.
    HostRead,
}

impl Unreadable {
    /// Every reason, for documentation and tests.
    pub const ALL: [Unreadable; 8] = [
        Unreadable::Encoding,
        Unreadable::ContentType,
        Unreadable::Charset,
        Unreadable::Utf8,
        Unreadable::Shape,
        Unreadable::Trailing,
        Unreadable::Id,
        Unreadable::HostRead,
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
            Unreadable::HostRead => "response_read",
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
            Unreadable::HostRead => {
                "Internal error: mcp-guard could not read the server's response from the proxy; \
                 it must read this list response to curate it"
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
                        "result" => {
                            message.result = Some(map.next_value::<json::MaybeObject<'de>>()?.0)
                        }
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
        if json::has_duplicates(self.names.iter().map(String::as_str)) {
            return Err(Unreadable::Shape);
        }
        Ok(self)
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
    if result.has_duplicates() {
        return Err(Unreadable::Shape);
    }
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
    keep: &dyn Keep,
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
    keep: &dyn Keep,
    stats: &mut Rewrite<'a>,
) -> Curation {
    if let Err(why) = utf8_text(body) {
        return Curation::Unreadable(why);
    }
    let lines = sse::split_lines(body);
    // A line an SSE reader ignores (an unknown field name) is still text a client that reads the
    // body another way (as JSON, ignoring the content type) can find a list in: refused.
    if !lines.iter().all(|(line, _)| sse::known_sse_line(line)) {
        return Curation::Unreadable(Unreadable::Shape);
    }
    let mut lists = false;
    for event in sse::events(&lines) {
        let Some(data) = sse::event_data(event) else {
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
