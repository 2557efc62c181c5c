//! Authorization oracles, independent of mcp-guard's own JSON-RPC parser and frame scanner
//! (`src/jsonrpc.rs`, `src/jsonrpc/frame.rs`, `src/curation.rs`): they read what mcp-guard let
//! through with serde_json, the way the servers and clients on either side of it might, and ask
//! the policy whether the agent may use every tool, prompt, resource and method found.
//!
//! - [`check_request`]: a request mcp-guard forwarded. Its body is read by every reader of
//!   [`READERS`] (a duplicated member name resolved last-wins, as Node and Python do, and
//!   first-wins; UTF-8 decoded lossily with a byte-order mark dropped; only the first JSON
//!   document of the body). Each reading's messages (a single message or a batch) must name only
//!   what the policy lets the agent use, and the tag headers on the forwarded request
//!   (`x-mcp-method`, `x-mcp-tool-name`, `x-mcp-prompt-name`, `x-mcp-resource-uri`, and
//!   `x-agent-id`) must say what that reading says. A body some reader cannot read at all is a
//!   finding too: mcp-guard forwards only a body it parsed, and every reader accepts whatever
//!   a strict RFC 8259 parser accepts. A request with another HTTP method than POST must be
//!   forwarded without a body and without tags.
//! - [`check_list_response`]: the response body a client gets for a `tools/list`,
//!   `prompts/list` or `resources/list` request: read by every reader, as one JSON document and
//!   as an SSE stream (each event's `data`) whatever its content type, every response a client
//!   could take for the answer to the list request (ids compared as JavaScript `Number()` and
//!   Python `int()` compare them, the official SDKs' rules) may list under `result.tools`,
//!   `result.prompts` or `result.resources` only entries the agent may use (tools and prompts by
//!   `name`, resources by `uri`). A body no reader can read lists nothing; a refusal (HTTP 502
//!   with a JSON-RPC error) lists nothing.
//!
//! - [`check_notifications`]: a notification stream a client gets (`subscriptions/listen`, a
//!   server stream): no reader finds a `notifications/resources/updated` about a resource the
//!   agent may not read.
//!
//! Failures are returned as `Err(description)`; the callers (the `stream` fuzz target and the
//! filter's unit tests) turn them into panics. The policy is asked through a callback, so this
//! file depends on serde and serde_json only and is compiled into both crates by `#[path]`.

use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// How a reader resolves a member name that occurs more than once in one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dup {
    /// The last occurrence wins (serde_json's `Value`, JavaScript `JSON.parse`, Python `json`).
    Last,
    /// The first occurrence wins (some streaming parsers read so); applied at every level.
    First,
}

/// One way of reading bytes as JSON.
#[derive(Debug, Clone, Copy)]
pub struct Reader {
    /// The reader's name, in findings.
    pub name: &'static str,
    /// Duplicate member names.
    pub dup: Dup,
    /// Invalid UTF-8 becomes U+FFFD and a leading byte-order mark (U+FEFF) is dropped.
    pub lenient: bool,
    /// Only the first JSON value of the text counts; anything after it is ignored.
    pub first_document: bool,
}

/// The readers every oracle applies.
pub const READERS: [Reader; 4] = [
    Reader {
        name: "last-wins",
        dup: Dup::Last,
        lenient: false,
        first_document: false,
    },
    Reader {
        name: "first-wins",
        dup: Dup::First,
        lenient: false,
        first_document: false,
    },
    Reader {
        name: "lossy-utf8-bom",
        dup: Dup::Last,
        lenient: true,
        first_document: false,
    },
    Reader {
        name: "first-document",
        dup: Dup::Last,
        lenient: true,
        first_document: true,
    },
];

impl Reader {
    /// The text this reader sees in `bytes`; `None` if it cannot decode them.
    fn text(&self, bytes: &[u8]) -> Option<String> {
        if self.lenient {
            let text = String::from_utf8_lossy(bytes);
            Some(text.strip_prefix('\u{feff}').unwrap_or(&text).to_owned())
        } else {
            std::str::from_utf8(bytes).ok().map(str::to_owned)
        }
    }

    /// The JSON value `text` holds for this reader (validated whole, numbers not converted, so
    /// a number beyond f64 range or a lone surrogate escape in a string does not fail it).
    fn document<'a>(&self, text: &'a str) -> Option<&'a RawValue> {
        if self.first_document {
            let mut values = serde_json::Deserializer::from_str(text).into_iter::<&RawValue>();
            values.next()?.ok()
        } else {
            serde_json::from_str::<&RawValue>(text).ok()
        }
    }

    /// The members of an object, a duplicated name resolved as this reader does; `None` if the
    /// value is not an object or a member name cannot be decoded.
    fn members<'a>(&self, raw: &'a RawValue) -> Option<Vec<(String, &'a RawValue)>> {
        if !raw.get().starts_with('{') {
            return None;
        }
        serde_json::Deserializer::from_str(raw.get())
            .deserialize_map(MembersVisitor(self.dup))
            .ok()
    }

    /// The value of member `name` of an object.
    fn member<'a>(&self, raw: &'a RawValue, name: &str) -> Option<&'a RawValue> {
        self.members(raw)?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

struct MembersVisitor(Dup);

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Vec<(String, &'de RawValue)>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out: Self::Value = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) if self.0 == Dup::Last => slot.1 = value,
                Some(_) => {}
                None => out.push((key, value)),
            }
        }
        Ok(out)
    }
}

/// The elements of an array; `None` if the value is not one.
fn elements(raw: &RawValue) -> Option<Vec<&RawValue>> {
    if !raw.get().starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok()
}

/// A JSON string's value; `None` for anything else (or a lone surrogate escape, which no
/// Rust string holds).
fn string(raw: &RawValue) -> Option<String> {
    if !raw.get().starts_with('"') {
        return None;
    }
    serde_json::from_str::<String>(raw.get()).ok()
}

/// The messages of a document: the object itself, or the elements of a batch array (each must
/// be an object). `None` when it is neither.
fn messages(raw: &RawValue) -> Option<Vec<&RawValue>> {
    match raw.get().as_bytes().first() {
        Some(b'{') => Some(vec![raw]),
        Some(b'[') => elements(raw),
        _ => None,
    }
}

// ------------------------------------------------------------------------- requests

/// What a JSON-RPC message asks to use, as the policy classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named<'a> {
    /// `tools/call` of this tool (`params.name`).
    Tool(&'a str),
    /// `prompts/get` of this prompt (`params.name`).
    Prompt(&'a str),
    /// `resources/read` of this URI (`params.uri`).
    Resource(&'a str),
    /// Any other method.
    Method(&'a str),
}

/// Answers whether the agent may use something: `Ok` if so, `Err(why not)` otherwise.
pub type Permits<'p> = &'p dyn Fn(Named<'_>) -> Result<(), String>;

/// The request header names mcp-guard sets (its configured tag headers, lower-case).
#[derive(Debug, Clone, Copy)]
pub struct TagNames<'a> {
    /// The agent tag (`x-agent-id`).
    pub agent: &'a str,
    /// The method tag (`x-mcp-method`).
    pub method: &'a str,
    /// The tool tag (`x-mcp-tool-name`).
    pub tool: &'a str,
    /// The prompt tag (`x-mcp-prompt-name`).
    pub prompt: &'a str,
    /// The resource tag (`x-mcp-resource-uri`).
    pub resource: &'a str,
}

/// A request as the upstream receives it.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    /// The HTTP method (`:method`).
    pub http_method: &'a str,
    /// Every request header, lower-case names, a repeated header as several pairs.
    pub headers: &'a [(String, String)],
    /// The body bytes the upstream gets.
    pub body: &'a [u8],
}

/// The list a forwarded request asks for, and the id of that request (as one reader read it),
/// for [`check_list_response`].
#[derive(Debug, Clone, PartialEq)]
pub struct ListAsk {
    /// The result member holding the list: `tools`, `prompts` or `resources`.
    pub array: &'static str,
    /// The request id.
    pub id: IdValue,
}

/// What a message's `method` and `params` name, for one reader.
struct Asked {
    method: String,
    name: Option<String>,
    id: Option<IdValue>,
}

/// Reads one message; `Ok(None)` for a message without `method` (a client's response).
fn asked(reader: &Reader, raw: &RawValue) -> Result<Option<Asked>, String> {
    let members = reader
        .members(raw)
        .ok_or_else(|| format!("a message is not a readable object: {}", raw.get()))?;
    let get = |name: &str| members.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let Some(method) = get("method") else {
        return Ok(None);
    };
    let method =
        string(method).ok_or_else(|| format!("method is not a readable string: {}", raw.get()))?;
    let member = match method.as_str() {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    let name = match member {
        Some(member) => {
            let value = get("params").and_then(|p| reader.member(p, member));
            let name = value.and_then(string).ok_or_else(|| {
                format!("{method} without a readable params.{member}: {}", raw.get())
            })?;
            Some(name)
        }
        None => None,
    };
    Ok(Some(Asked {
        method,
        name,
        id: get("id").map(IdValue::of),
    }))
}

/// The tag value mcp-guard documents for `values` (docs/protocol.md "Request"; `src/tags.rs`): distinct
/// values in first-seen order joined with `,`, each byte outside visible ASCII, `%` and `,`
/// written `%XX` (upper-case hex); `None` when there is none.
fn expected_tag<'a>(values: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut seen: Vec<&str> = Vec::new();
    for v in values {
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    if seen.is_empty() {
        return None;
    }
    let encoded: Vec<String> = seen
        .iter()
        .map(|v| {
            v.bytes()
                .map(|b| {
                    if b.is_ascii_graphic() && b != b'%' && b != b',' {
                        char::from(b).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        })
        .collect();
    Some(encoded.join(","))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, String> {
    let mut values = headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => Ok(Some(v.as_str())),
        (Some(a), Some(b)) => Err(format!("forwarded with {name} twice: {a:?}, {b:?}")),
    }
}

/// Checks a request mcp-guard forwarded for `agent` (module docs). Returns the list requests
/// it carries (for [`check_list_response`]), every reader's reading of them.
///
/// Errors: the first finding, as text.
pub fn check_request(
    req: &Forwarded<'_>,
    agent: &str,
    tags: &TagNames<'_>,
    permits: Permits<'_>,
) -> Result<Vec<ListAsk>, String> {
    if header(req.headers, tags.agent)? != Some(agent) {
        return Err(format!(
            "forwarded for agent {agent:?} with {} {:?}",
            tags.agent,
            header(req.headers, tags.agent)
        ));
    }
    let tag_names = [tags.method, tags.tool, tags.prompt, tags.resource];
    if req.http_method != "POST" {
        // Only a POST carries JSON-RPC (Streamable HTTP); anything else passes without a body.
        if !req.body.is_empty() {
            return Err(format!(
                "a {} request was forwarded with a body of {} bytes",
                req.http_method,
                req.body.len()
            ));
        }
        for name in tag_names {
            if let Some(v) = header(req.headers, name)? {
                return Err(format!(
                    "a {} request forwarded with {name}: {v:?}",
                    req.http_method
                ));
            }
        }
        return Ok(Vec::new());
    }
    let mut asks: Vec<ListAsk> = Vec::new();
    for reader in &READERS {
        let fail = |why: String| format!("reader {}: {why}", reader.name);
        let text = reader
            .text(req.body)
            .ok_or_else(|| fail("the forwarded body is not UTF-8".into()))?;
        let doc = reader
            .document(&text)
            .ok_or_else(|| fail("the forwarded body is not JSON".into()))?;
        let raws =
            messages(doc).ok_or_else(|| fail(format!("not a message or batch: {}", doc.get())))?;
        let mut calls: Vec<Asked> = Vec::new();
        for raw in raws {
            if let Some(a) = asked(reader, raw).map_err(&fail)? {
                calls.push(a);
            }
        }
        for a in &calls {
            let named = match (a.method.as_str(), a.name.as_deref()) {
                ("tools/call", Some(n)) => Named::Tool(n),
                ("prompts/get", Some(n)) => Named::Prompt(n),
                ("resources/read", Some(n)) => Named::Resource(n),
                (m, _) => Named::Method(m),
            };
            permits(named).map_err(|why| fail(format!("forwarded {named:?}: {why}")))?;
            let array = match a.method.as_str() {
                "tools/list" => Some("tools"),
                "prompts/list" => Some("prompts"),
                "resources/list" => Some("resources"),
                _ => None,
            };
            if let (Some(array), Some(id)) = (array, &a.id) {
                let ask = ListAsk {
                    array,
                    id: id.clone(),
                };
                if !asks.contains(&ask) {
                    asks.push(ask);
                }
            }
        }
        let named_by = |method: &'static str| {
            expected_tag(
                calls
                    .iter()
                    .filter(move |a| a.method == method)
                    .filter_map(|a| a.name.as_deref()),
            )
        };
        let expected = [
            expected_tag(calls.iter().map(|a| a.method.as_str())),
            named_by("tools/call"),
            named_by("prompts/get"),
            named_by("resources/read"),
        ];
        for (name, want) in tag_names.into_iter().zip(expected) {
            let got = header(req.headers, name).map_err(&fail)?;
            if got != want.as_deref() {
                return Err(fail(format!(
                    "{name} is {got:?}, the body says {want:?}: {}",
                    doc.get()
                )));
            }
        }
    }
    Ok(asks)
}

// ------------------------------------------------------------------------- ids

/// A JSON-RPC id as a reader read it (any JSON value).
#[derive(Debug, Clone, PartialEq)]
pub enum IdValue {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, as written.
    Number(String),
    /// A string (`None`: it holds a lone surrogate escape).
    Str(Option<String>),
    /// An array or object, as written.
    Other(String),
}

impl IdValue {
    fn of(raw: &RawValue) -> IdValue {
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'n') => IdValue::Null,
            Some(b't') => IdValue::Bool(true),
            Some(b'f') => IdValue::Bool(false),
            Some(b'"') => IdValue::Str(string(raw)),
            Some(b'-' | b'0'..=b'9') => IdValue::Number(text.to_owned()),
            _ => IdValue::Other(text.to_owned()),
        }
    }

    /// The value JavaScript's `Number(id)` gives (the TypeScript SDK matches responses by
    /// `Number(response.id)`); NaN when it gives NaN.
    fn js_number(&self) -> f64 {
        match self {
            IdValue::Null => 0.0,
            IdValue::Bool(b) => f64::from(u8::from(*b)),
            IdValue::Number(n) => n.parse().unwrap_or(f64::NAN),
            IdValue::Str(Some(s)) => js_string_to_number(s),
            IdValue::Str(None) => f64::NAN,
            IdValue::Other(raw) => {
                // An array converts through its string form: [] is 0, [x] is Number(String(x)).
                let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(raw) else {
                    return f64::NAN;
                };
                match items.as_slice() {
                    [] => 0.0,
                    [one] => match IdValue::of(one) {
                        IdValue::Null => 0.0,
                        v @ (IdValue::Number(_) | IdValue::Str(_)) => v.js_number(),
                        _ => f64::NAN,
                    },
                    _ => f64::NAN,
                }
            }
        }
    }

    /// The integer Python's SDK matches a response by (`int(id)` for a string id; `True` is
    /// `1` as a dict key); `None` when it is not one.
    fn py_int(&self) -> Option<i128> {
        match self {
            IdValue::Bool(b) => Some(i128::from(*b)),
            IdValue::Number(n) => n.parse().ok(),
            IdValue::Str(Some(s)) => {
                let s = s.trim();
                let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
                // int() allows one underscore between digits.
                let ok = !digits.is_empty()
                    && !digits.starts_with('_')
                    && !digits.ends_with('_')
                    && !digits.contains("__")
                    && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_');
                if !ok {
                    return None;
                }
                s.replace('_', "").parse().ok()
            }
            _ => None,
        }
    }

    /// Whether a client that sent a request with id `request` could take a response with this
    /// id for its answer: the same JSON value, or the same under `Number()` (TypeScript SDK)
    /// or `int()` (Python SDK).
    pub fn may_answer(&self, request: &IdValue) -> bool {
        if self == request {
            return true;
        }
        let (a, b) = (self.js_number(), request.js_number());
        if !a.is_nan() && a == b {
            return true;
        }
        matches!((self.py_int(), request.py_int()), (Some(a), Some(b)) if a == b)
    }
}

/// JavaScript `Number(string)` (ECMA-262 StringToNumber): whitespace trimmed, empty is 0,
/// `Infinity`, `0x`/`0o`/`0b` integers, decimal literals; anything else NaN.
fn js_string_to_number(s: &str) -> f64 {
    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if s.is_empty() {
        return 0.0;
    }
    match s {
        "Infinity" | "+Infinity" => return f64::INFINITY,
        "-Infinity" => return f64::NEG_INFINITY,
        _ => {}
    }
    for (prefix, radix) in [
        ("0x", 16),
        ("0X", 16),
        ("0o", 8),
        ("0O", 8),
        ("0b", 2),
        ("0B", 2),
    ] {
        if let Some(digits) = s.strip_prefix(prefix) {
            return u128::from_str_radix(digits, radix)
                .ok()
                .filter(|_| !digits.starts_with('+'))
                .map_or(f64::NAN, |v| v as f64);
        }
    }
    if s.bytes()
        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
    {
        s.parse().unwrap_or(f64::NAN)
    } else {
        f64::NAN
    }
}

// ------------------------------------------------------------------------- list responses

/// The data of each event of an SSE stream (WHATWG "interpreting an event stream": lines end
/// with CRLF, LF or CR; `data` lines joined with LF; an event is dispatched at a blank line),
/// leniently: an unterminated last event is dispatched too.
fn sse_data(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut data: Option<String> = None;
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        let line = rest.get(..end).unwrap_or_default();
        let after = rest.get(end..).unwrap_or_default();
        rest = after
            .strip_prefix("\r\n")
            .or_else(|| after.strip_prefix(['\r', '\n']))
            .unwrap_or(after);
        if line.is_empty() {
            out.extend(data.take());
            continue;
        }
        if line.starts_with(':') {
            continue; // a comment
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            match data.as_mut() {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            }
        }
    }
    out.extend(data);
    out
}

/// Checks a notification stream a client gets (a `subscriptions/listen` response, MCP
/// 2026-07-28; or a server stream): read by every reader as SSE (each event's `data`, the last
/// event even without its blank line), no `notifications/resources/updated` message may name in
/// `params.uri` a resource the agent may not read (`permits(Named::Resource(uri))`).
///
/// Errors: the first such update, as text.
pub fn check_notifications(body: &[u8], permits: Permits<'_>) -> Result<(), String> {
    for reader in &READERS {
        let Some(text) = reader.text(body) else {
            continue; // a client that cannot decode it sees nothing
        };
        for document in sse_data(&text) {
            let Some(doc) = reader.document(&document) else {
                continue;
            };
            for message in messages(doc).unwrap_or_default() {
                let method = reader.member(message, "method").and_then(string);
                if method.as_deref() != Some("notifications/resources/updated") {
                    continue;
                }
                let uri = reader
                    .member(message, "params")
                    .and_then(|params| reader.member(params, "uri"))
                    .and_then(string);
                if let Some(uri) = uri {
                    permits(Named::Resource(&uri)).map_err(|why| {
                        format!(
                            "{}: an update about {uri:?} reached the agent ({why})",
                            reader.name
                        )
                    })?;
                }
            }
        }
    }
    Ok(())
}

/// Checks the response body a client gets for the list requests `asks` (module docs).
///
/// Errors: the first entry listed that the agent may not use, as text.
pub fn check_list_response(
    body: &[u8],
    asks: &[ListAsk],
    permits: Permits<'_>,
) -> Result<(), String> {
    if asks.is_empty() {
        return Ok(());
    }
    for reader in &READERS {
        let Some(text) = reader.text(body) else {
            continue; // a client that cannot decode it sees nothing
        };
        let mut documents = vec![text.clone()];
        documents.extend(sse_data(&text));
        for document in &documents {
            let Some(doc) = reader.document(document) else {
                continue;
            };
            for message in messages(doc).unwrap_or_default() {
                check_listed(reader, message, asks, permits)?;
            }
        }
    }
    Ok(())
}

/// The list requests of `asks` that some reader finds no answer to (a response with `result`
/// or `error` whose id may answer it) in `body`, read as JSON and as SSE: a client using that
/// reader still waits for their answers on another stream of the session.
pub fn unanswered(body: &[u8], asks: &[ListAsk]) -> Vec<ListAsk> {
    let answered = |reader: &Reader, ask: &ListAsk| {
        let Some(text) = reader.text(body) else {
            return false;
        };
        let mut documents = vec![text.clone()];
        documents.extend(sse_data(&text));
        documents.iter().any(|document| {
            let Some(doc) = reader.document(document) else {
                return false;
            };
            messages(doc).unwrap_or_default().into_iter().any(|m| {
                let Some(members) = reader.members(m) else {
                    return false;
                };
                let get = |name: &str| members.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
                let outcome = get("result").is_some() || get("error").is_some();
                outcome && get("id").is_some_and(|id| IdValue::of(id).may_answer(&ask.id))
            })
        })
    };
    asks.iter()
        .filter(|ask| !READERS.iter().all(|r| answered(r, ask)))
        .cloned()
        .collect()
}

fn check_listed(
    reader: &Reader,
    message: &RawValue,
    asks: &[ListAsk],
    permits: Permits<'_>,
) -> Result<(), String> {
    let Some(members) = reader.members(message) else {
        return Ok(());
    };
    let get = |name: &str| members.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let (Some(id), Some(result)) = (get("id"), get("result")) else {
        return Ok(());
    };
    let id = IdValue::of(id);
    for ask in asks.iter().filter(|a| id.may_answer(&a.id)) {
        let Some(list) = reader.member(result, ask.array).and_then(elements) else {
            continue;
        };
        let key = if ask.array == "resources" {
            "uri"
        } else {
            "name"
        };
        for entry in list {
            let Some(name) = reader.member(entry, key).and_then(string) else {
                continue; // an entry without a readable name cannot be used
            };
            let named = match ask.array {
                "tools" => Named::Tool(&name),
                "prompts" => Named::Prompt(&name),
                _ => Named::Resource(&name),
            };
            permits(named).map_err(|why| {
                format!(
                    "reader {}: the client gets {named:?} in the answer to {ask:?}: {why}: {}",
                    reader.name,
                    message.get()
                )
            })?;
        }
    }
    Ok(())
}
