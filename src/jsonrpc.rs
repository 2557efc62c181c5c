//! JSON-RPC 2.0 request-side framing for MCP over Streamable HTTP.
//!
//! Implements the message shapes of the JSON-RPC 2.0 specification (§4 request object, §4.1
//! notification, §5 response object, §6 batch) as MCP restricts them (MCP "Base Protocol":
//! request ids are strings or integers and never `null`; batches exist only in protocol
//! revision 2025-03-26).
//!
//! The parser works on the complete POST body and never builds a full DOM: every member is
//! borrowed as a [`serde_json::value::RawValue`], so the exact bytes of `params.arguments` are
//! available for the audit `input_hash`.
//!
//! Security properties relied on by the filter:
//! - **Duplicate members** among `jsonrpc`, `id`, `method`, `params`, `result`, `error`; in
//!   `params` (of every method), `name`, `uri`, `arguments`, `taskId`, `_meta`, `requestState`,
//!   `inputResponses`; and in `params._meta`, the protocol version and client capabilities
//!   keys, are refused. Servers keep the *last* value of a
//!   duplicated key, so a proxy that kept the first would be bypassable.
//! - **Escapes** (`\u0065cho`) in methods, tool names, prompt names and URIs are decoded before
//!   any comparison.
//! - Anything else that is not a well-formed message is refused with the code the JSON-RPC
//!   specification assigns (-32700 parse error, -32600 invalid request), or -32602 (invalid
//!   params) when a method MCP defines lacks the member policy needs.

use crate::json;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::fmt;

/// JSON-RPC 2.0 §5.1: invalid JSON was received.
pub const PARSE_ERROR: i32 = -32700;
/// JSON-RPC 2.0 §5.1: the JSON sent is not a valid request object.
pub const INVALID_REQUEST: i32 = -32600;
/// JSON-RPC 2.0 §5.1: invalid method parameters.
pub const INVALID_PARAMS: i32 = -32602;

pub use crate::mcp::{MCP_METHODS, PROMPTS_GET, RESOURCES_READ, TASK_METHODS, TOOLS_CALL};

/// Longest request `id` accepted, as raw JSON text in bytes. A longer id could not be matched
/// to its response in constant memory (`crate::response::MAX_ID_LEN`), so its outcome could not
/// be audited: such a request is refused (-32600). SDK ids are integers or UUIDs.
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// A JSON-RPC request id (JSON-RPC 2.0 §4 `id`).
///
/// Numbers keep their exact textual form, so integers beyond `i64` are neither rounded nor
/// confused, and `1` (a number) never equals `"1"` (a string).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Id {
    /// A JSON number, as the raw text that appeared on the wire (for example `42`).
    Number(String),
    /// A JSON string, with escapes decoded.
    Str(String),
}

impl Id {
    /// Classifies the raw JSON text of an `id` member.
    ///
    /// Returns `None` for anything that is not a JSON string or integer (`null`, objects,
    /// arrays, booleans, and numbers with a fraction or exponent: MCP ids are strings or
    /// integers, and `8e400` would be copied into audit records that JSON readers then refuse as
    /// out of range) or for a string whose escapes are invalid.
    pub fn from_raw(raw: &str) -> Option<Id> {
        let raw = raw.trim();
        match raw.as_bytes().first()? {
            b'"' => serde_json::from_str::<String>(raw).ok().map(Id::Str),
            b'-' | b'0'..=b'9' => {
                if raw.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
                    return None;
                }
                // Validate the integer grammar without converting it (no precision loss).
                serde_json::from_str::<serde::de::IgnoredAny>(raw).ok()?;
                Some(Id::Number(raw.to_owned()))
            }
            _ => None,
        }
    }

    /// The id as JSON text, ready to embed in a response or an audit record.
    pub fn to_json(&self) -> String {
        match self {
            Id::Number(raw) => raw.clone(),
            Id::Str(s) => serde_json::Value::String(s.clone()).to_string(),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

/// What kind of JSON-RPC message a POSTed element is (JSON-RPC 2.0 §4, §4.1, §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A request: it has an `id` and expects a response with the same id.
    Request(Id),
    /// A notification: a `method` and no `id`; it is never answered.
    Notification,
    /// A response the client sends back to a server-initiated request (`result` or `error`).
    Response(Id),
}

/// One parsed JSON-RPC message, borrowing from the request body.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// Request, notification or response.
    pub kind: Kind,
    /// The MCP method (escapes decoded); `None` for responses.
    pub method: Option<String>,
    /// `params.name` of a `tools/call`.
    pub tool_name: Option<String>,
    /// `params.name` of a `prompts/get`.
    pub prompt_name: Option<String>,
    /// `params.uri` of a `resources/read`.
    pub resource_uri: Option<String>,
    /// `params.taskId` of a task method ([`TASK_METHODS`]), when it is a string.
    pub task_id: Option<String>,
    /// The exact bytes the audit `input_hash` covers: `params.arguments` for `tools/call`,
    /// `params` for any other method; `None` when that member is absent.
    pub hash_input: Option<&'a str>,
    /// What `params._meta` says about the protocol revision (MCP 2026-07-28 "Per-request
    /// protocol fields", SEP-2575): read on every request and notification whose `params` is an
    /// object; [`Meta::default`] for responses and for `params` that is absent or an array.
    pub meta: Meta,
    /// `params.requestState` when it is a JSON string (escapes decoded): the opaque state a
    /// multi-round-trip retry echoes (MCP 2026-07-28 `basic/patterns/mrtr`, SEP-2322). `None`
    /// when absent or not a string.
    pub request_state: Option<String>,
    /// Whether `params.inputResponses` is present (any value, `null` included): the answers a
    /// multi-round-trip retry carries (SEP-2322).
    pub input_responses: bool,
    /// The exact raw JSON text of `params.arguments` of a `tools/call` (as the client sent it,
    /// nothing decoded); `None` for other methods or when absent. For checking `Mcp-Param-*`
    /// headers against the arguments (MCP 2026-07-28 Streamable HTTP, `x-mcp-header`).
    pub arguments: Option<&'a str>,
}

/// The `_meta` key of the protocol revision a 2026-07-28 request or notification is written
/// in (MCP 2026-07-28 `basic/index` "Per-request protocol fields").
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// The `_meta` key of the client's capabilities on every 2026-07-28 request.
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// The `io.modelcontextprotocol/protocolVersion` member of `params._meta`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MetaVersion {
    /// No such member (or no `_meta` object at all).
    #[default]
    Absent,
    /// A JSON string, escapes decoded (not checked to be a date or a known revision).
    Str(String),
    /// Present but not a string (`null`, a number, an object, ...): a shape defect
    /// (-32602 in the SDK's validation ladder).
    NotString,
}

/// The envelope members of `params._meta` that MCP 2026-07-28 requires on every request
/// (SEP-2575; the Python SDK 2.x checks them in `mcp/shared/inbound.py`
/// `classify_inbound_request`, rung 1). Only presence and the version are kept; the values
/// of `clientCapabilities` and `clientInfo` are never read.
///
/// The two keys are matched after JSON escape decoding, exactly (no case folding); either
/// key twice in one `_meta` is refused by the parser (-32602), since readers that keep the
/// first and the last copy would disagree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// `params._meta` is present and a JSON object.
    pub meta_object: bool,
    /// [`META_PROTOCOL_VERSION`], when `_meta` is an object.
    pub protocol_version: MetaVersion,
    /// [`META_CLIENT_CAPABILITIES`] is present (any value) in the `_meta` object.
    pub client_capabilities: bool,
}

impl Message<'_> {
    /// The request id, for requests and client-sent responses.
    pub fn id(&self) -> Option<&Id> {
        match &self.kind {
            Kind::Request(id) | Kind::Response(id) => Some(id),
            Kind::Notification => None,
        }
    }

    /// What the message names: the tool (`tools/call`), prompt (`prompts/get`) or resource URI
    /// (`resources/read`); `None` for other methods.
    pub fn name(&self) -> Option<&str> {
        self.tool_name
            .as_deref()
            .or(self.prompt_name.as_deref())
            .or(self.resource_uri.as_deref())
    }
}

/// A POST body: one message, or a batch (JSON-RPC 2.0 §6, MCP 2025-03-26 only).
#[derive(Debug, Clone)]
// One `Body` per request, built once and borrowed after: boxing the single message would add
// a heap allocation to every request for no gain.
#[allow(clippy::large_enum_variant)]
pub enum Body<'a> {
    /// A single JSON-RPC message.
    Single(Message<'a>),
    /// A non-empty batch of messages, in wire order.
    Batch(Vec<Message<'a>>),
}

impl<'a> Body<'a> {
    /// The messages of the body, in wire order (one for [`Body::Single`]).
    pub fn messages(&self) -> &[Message<'a>] {
        match self {
            Body::Single(m) => std::slice::from_ref(m),
            Body::Batch(v) => v,
        }
    }

    /// Whether the body was a batch array.
    pub fn is_batch(&self) -> bool {
        matches!(self, Body::Batch(_))
    }
}

/// Why a body was refused, with the JSON-RPC error to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// JSON-RPC error code: [`PARSE_ERROR`], [`INVALID_REQUEST`] or [`INVALID_PARAMS`].
    pub code: i32,
    /// Human-readable reason; never contains argument values.
    pub message: String,
    /// The request id, when the message was sound enough to carry one.
    pub id: Option<Id>,
    /// The method, when it could be read.
    pub method: Option<String>,
}

impl ParseError {
    fn new(code: i32, message: impl Into<String>) -> Self {
        ParseError {
            code,
            message: message.into(),
            id: None,
            method: None,
        }
    }
}

/// Deserializes a present member into `Some(raw)`, including a literal `null`, so that
/// `"id": null` is told apart from a missing `id`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// The members of a JSON-RPC message that matter here. Serde's derive refuses a member that
/// appears twice; other members are skipped (but still syntax-checked).
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    jsonrpc: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

/// The `params` members policy looks at; duplicates are refused as in [`Wire`].
#[derive(Deserialize)]
struct WireParams<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    name: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    uri: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    arguments: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present", rename = "taskId")]
    task_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present", rename = "_meta")]
    meta: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present", rename = "requestState")]
    request_state: Option<&'a RawValue>,
    #[serde(
        default,
        borrow,
        deserialize_with = "present",
        rename = "inputResponses"
    )]
    input_responses: Option<&'a RawValue>,
}

/// The envelope members of a `params._meta` object; duplicates are refused as in [`Wire`].
#[derive(Deserialize)]
struct WireMeta<'a> {
    #[serde(
        default,
        borrow,
        deserialize_with = "present",
        rename = "io.modelcontextprotocol/protocolVersion"
    )]
    protocol_version: Option<&'a RawValue>,
    #[serde(
        default,
        borrow,
        deserialize_with = "present",
        rename = "io.modelcontextprotocol/clientCapabilities"
    )]
    client_capabilities: Option<&'a RawValue>,
}

/// Parses a complete Streamable HTTP POST body, refusing JSON nested deeper than `max_depth`
/// objects/arrays (the plugin configuration's `max_json_depth`; serde_json skips borrowed raw
/// values without its own recursion limit, so the depth is checked here first).
///
/// `body` must be the whole body; UTF-8 is required (RFC 8259 §8.1), so a byte-order mark,
/// invalid UTF-8, trailing bytes after the JSON value, or nesting deeper than `max_depth` is a
/// [`PARSE_ERROR`]. An empty batch, a non-object element, a wrong
/// `jsonrpc` version, a non-string method, a `null`/non-scalar id, or a message that is neither
/// request, notification nor response is an [`INVALID_REQUEST`]. A `tools/call` or
/// `prompts/get` without a string `params.name`, or a `resources/read` without a string
/// `params.uri`, is [`INVALID_PARAMS`].
///
/// A batch with one bad element is refused whole; the error names the element index.
pub fn parse_body(body: &[u8], max_depth: usize) -> Result<Body<'_>, ParseError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ParseError::new(PARSE_ERROR, "Parse error: body is not UTF-8"))?;
    if text.starts_with('\u{feff}') {
        return Err(ParseError::new(
            PARSE_ERROR,
            "Parse error: byte-order mark before the JSON text",
        ));
    }
    // Fewer brackets in the whole body than the limit cannot nest deeper than it (the count
    // includes brackets inside strings, so it only ever overestimates the depth).
    let brackets =
        memchr::memchr2_iter(b'{', b'[', text.as_bytes()).take(max_depth.saturating_add(1));
    if brackets.count() > max_depth && json::exceeds_nesting(text.as_bytes(), max_depth) {
        return Err(ParseError::new(
            PARSE_ERROR,
            format!("Parse error: JSON nested deeper than {max_depth}"),
        ));
    }
    let first = text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .as_bytes()
        .first()
        .copied();
    if first == Some(b'[') {
        let elements: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| {
            ParseError::new(PARSE_ERROR, format!("Parse error: {}", json_error(&e)))
        })?;
        if elements.is_empty() {
            return Err(ParseError::new(
                INVALID_REQUEST,
                "Invalid Request: empty batch",
            ));
        }
        let mut messages = Vec::with_capacity(elements.len());
        for (index, element) in elements.into_iter().enumerate() {
            let message = parse_message(element.get()).map_err(|mut e| {
                e.message = format!("{} (batch element {index})", e.message);
                e
            })?;
            messages.push(message);
        }
        Ok(Body::Batch(messages))
    } else if first == Some(b'{') {
        // One pass: serde_json checks the syntax while it reads the members. Only when that
        // fails is the syntax checked alone, so that malformed JSON is -32700 rather than
        // -32600 (a member of the wrong type or a duplicate).
        match serde_json::from_str::<Wire<'_>>(text) {
            Ok(wire) => from_wire(wire).map(Body::Single),
            Err(e) => {
                syntax(text)?;
                Err(wire_error(&e))
            }
        }
    } else {
        syntax(text)?;
        Err(invalid("Invalid Request: not a JSON object"))
    }
}

/// `Ok` when `text` is one JSON value, else the [`PARSE_ERROR`] for it.
fn syntax(text: &str) -> Result<(), ParseError> {
    serde_json::from_str::<&RawValue>(text)
        .map(|_| ())
        .map_err(|e| ParseError::new(PARSE_ERROR, format!("Parse error: {}", json_error(&e))))
}

/// The refusal of a syntactically valid message serde could not read as a [`Wire`].
fn wire_error(e: &serde_json::Error) -> ParseError {
    // Duplicate members and type mismatches land here; the text names the member only.
    invalid(format!("Invalid Request: {}", strip_position(e)))
}

/// A serde_json error without any echo of the input (its messages quote keys, not values).
fn json_error(e: &serde_json::Error) -> String {
    format!("{} at line {} column {}", classify(e), e.line(), e.column())
}

fn classify(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "unexpected JSON shape",
        serde_json::error::Category::Eof => "truncated JSON",
    }
}

fn invalid(message: impl Into<String>) -> ParseError {
    ParseError::new(INVALID_REQUEST, message)
}

fn parse_message(text: &str) -> Result<Message<'_>, ParseError> {
    if !text.trim_start().starts_with('{') {
        return Err(invalid("Invalid Request: not a JSON object"));
    }
    let wire: Wire<'_> = serde_json::from_str(text).map_err(|e| wire_error(&e))?;
    from_wire(wire)
}

/// The message a syntactically valid [`Wire`] describes.
fn from_wire(wire: Wire<'_>) -> Result<Message<'_>, ParseError> {
    let version_ok = wire.jsonrpc.is_some_and(|raw| {
        raw.get() == "\"2.0\""
            || serde_json::from_str::<String>(raw.get()).is_ok_and(|v| v == "2.0")
    });
    if !version_ok {
        return Err(invalid("Invalid Request: jsonrpc must be \"2.0\""));
    }

    let id = match wire.id {
        None => None,
        Some(raw) if raw.get().len() > MAX_REQUEST_ID_LEN => {
            return Err(invalid(format!(
                "Invalid Request: id longer than {MAX_REQUEST_ID_LEN} bytes"
            )))
        }
        Some(raw) => Some(
            Id::from_raw(raw.get())
                .ok_or_else(|| invalid("Invalid Request: id must be a string or an integer"))?,
        ),
    };

    let method = match wire.method {
        None => None,
        Some(raw) => Some(
            serde_json::from_str::<String>(raw.get())
                .map_err(|_| invalid("Invalid Request: method must be a string"))?,
        ),
    };

    let Some(method) = method else {
        // No method: only a response (to a server-initiated request) is acceptable.
        return match (id, wire.result.is_some(), wire.error.is_some()) {
            (Some(id), true, false) | (Some(id), false, true) if wire.params.is_none() => {
                Ok(Message {
                    kind: Kind::Response(id),
                    method: None,
                    tool_name: None,
                    prompt_name: None,
                    resource_uri: None,
                    task_id: None,
                    hash_input: None,
                    meta: Meta::default(),
                    request_state: None,
                    input_responses: false,
                    arguments: None,
                })
            }
            _ => Err(invalid(
                "Invalid Request: neither a request, a notification nor a response",
            )),
        };
    };
    if wire.result.is_some() || wire.error.is_some() {
        return Err(with_context(
            invalid("Invalid Request: a request cannot carry result or error"),
            id,
            Some(method),
        ));
    }

    let params = wire.params;
    if let Some(raw) = params {
        if !raw.get().starts_with('{') && !raw.get().starts_with('[') {
            return Err(with_context(
                invalid("Invalid Request: params must be an object or an array"),
                id,
                Some(method),
            ));
        }
    }

    // The members read from `params`, for every method: duplicates among them are refused
    // whatever the method (a first-wins and a last-wins reader would disagree).
    let object = params.filter(|raw| raw.get().starts_with('{'));
    let fields = match object {
        Some(_) => {
            parse_params(object).map_err(|e| with_context(e, id.clone(), Some(method.clone())))?
        }
        None => Params::default(),
    };
    let meta =
        parse_meta(fields.meta).map_err(|e| with_context(e, id.clone(), Some(method.clone())))?;

    let mut message = Message {
        kind: Kind::Notification,
        method: None,
        tool_name: None,
        prompt_name: None,
        resource_uri: None,
        task_id: None,
        hash_input: params.map(RawValue::get),
        meta,
        request_state: fields
            .request_state
            .and_then(|r| serde_json::from_str::<String>(r).ok()),
        input_responses: fields.input_responses.is_some(),
        arguments: None,
    };

    match method.as_str() {
        TOOLS_CALL | PROMPTS_GET | RESOURCES_READ => {
            let needs = |member: &str| {
                with_context(
                    ParseError::new(
                        INVALID_PARAMS,
                        if object.is_none() {
                            "Invalid params: params must be an object".to_owned()
                        } else {
                            format!("Invalid params: {method} needs a string params.{member}")
                        },
                    ),
                    id.clone(),
                    Some(method.clone()),
                )
            };
            let string_member = |raw: Option<&str>, member: &str| {
                raw.and_then(|r| serde_json::from_str::<String>(r).ok())
                    .ok_or_else(|| needs(member))
            };
            match method.as_str() {
                TOOLS_CALL => {
                    message.tool_name = Some(string_member(fields.name, "name")?);
                    message.hash_input = fields.arguments;
                    message.arguments = fields.arguments;
                }
                PROMPTS_GET => message.prompt_name = Some(string_member(fields.name, "name")?),
                _ => message.resource_uri = Some(string_member(fields.uri, "uri")?),
            }
        }
        m if TASK_METHODS.contains(&m) => {
            // Only for checking the Mcp-Name header; a missing or non-string taskId leaves it
            // unset (a header naming a task then disagrees with the body).
            message.task_id = fields
                .task_id
                .and_then(|raw| serde_json::from_str::<String>(raw).ok());
        }
        _ => {}
    }
    message.method = Some(method);
    if let Some(id) = id {
        message.kind = Kind::Request(id);
    }
    Ok(message)
}

/// The [`WireParams`] of `params` (which serde_json has already accepted as JSON): framed
/// member by member when every member name is plain and the seven read here are not
/// duplicated (the usual case: no second pass of serde over `arguments`), else parsed by
/// serde, which also words the refusal.
fn parse_params(params: Option<&RawValue>) -> Result<Params<'_>, ParseError> {
    if let Some(raw) = params {
        if let Some(fields) = frame_params(raw.get()) {
            return Ok(fields);
        }
    }
    parse_params_serde(params).map(|w| Params {
        name: w.name.map(RawValue::get),
        uri: w.uri.map(RawValue::get),
        arguments: w.arguments.map(RawValue::get),
        task_id: w.task_id.map(RawValue::get),
        meta: w.meta.map(RawValue::get),
        request_state: w.request_state.map(RawValue::get),
        input_responses: w.input_responses.map(RawValue::get),
    })
}

/// The [`Meta`] of the raw `params._meta` text (valid JSON: serde_json accepted the body).
/// Either envelope key twice, or a protocol version string whose escapes do not decode (a lone
/// surrogate), is [`INVALID_PARAMS`].
fn parse_meta(raw: Option<&str>) -> Result<Meta, ParseError> {
    let Some(text) = raw.filter(|t| t.starts_with('{')) else {
        return Ok(Meta::default());
    };
    let wire: WireMeta<'_> = serde_json::from_str(text).map_err(|e| {
        ParseError::new(
            INVALID_PARAMS,
            format!("Invalid params: params._meta: {}", strip_position(&e)),
        )
    })?;
    let protocol_version = match wire.protocol_version.map(RawValue::get) {
        None => MetaVersion::Absent,
        Some(v) if v.starts_with('"') => {
            MetaVersion::Str(serde_json::from_str::<String>(v).map_err(|_| {
                ParseError::new(
                    INVALID_PARAMS,
                    format!("Invalid params: params._meta {META_PROTOCOL_VERSION} is not a valid string"),
                )
            })?)
        }
        Some(_) => MetaVersion::NotString,
    };
    Ok(Meta {
        meta_object: true,
        protocol_version,
        client_capabilities: wire.client_capabilities.is_some(),
    })
}

/// The raw JSON text of the [`WireParams`] members.
#[derive(Default)]
struct Params<'a> {
    name: Option<&'a str>,
    uri: Option<&'a str>,
    arguments: Option<&'a str>,
    task_id: Option<&'a str>,
    meta: Option<&'a str>,
    request_state: Option<&'a str>,
    input_responses: Option<&'a str>,
}

fn frame_params(text: &str) -> Option<Params<'_>> {
    let b = text.as_bytes();
    if b.first() != Some(&b'{') {
        return None;
    }
    let mut fields = Params::default();
    let mut members = json::Seq::object(b, 0);
    while let Some((key, start)) = members.next().ok()? {
        let end = members.skip_value(start).ok()?;
        let slot = match key.and_then(json::plain_key)? {
            b"name" => &mut fields.name,
            b"uri" => &mut fields.uri,
            b"arguments" => &mut fields.arguments,
            b"taskId" => &mut fields.task_id,
            b"_meta" => &mut fields.meta,
            b"requestState" => &mut fields.request_state,
            b"inputResponses" => &mut fields.input_responses,
            _ => continue,
        };
        if slot.replace(text.get(start..end)?).is_some() {
            return None;
        }
    }
    (json::skip_ws(b, members.pos()) == b.len()).then_some(fields)
}

fn parse_params_serde(params: Option<&RawValue>) -> Result<WireParams<'_>, ParseError> {
    match params {
        Some(raw) if raw.get().starts_with('{') => serde_json::from_str(raw.get()).map_err(|e| {
            ParseError::new(
                INVALID_PARAMS,
                format!("Invalid params: {}", strip_position(&e)),
            )
        }),
        _ => Err(ParseError::new(
            INVALID_PARAMS,
            "Invalid params: params must be an object",
        )),
    }
}

fn with_context(mut e: ParseError, id: Option<Id>, method: Option<String>) -> ParseError {
    e.id = id;
    e.method = method;
    e
}

/// serde_json's message without the " at line X column Y" suffix.
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(pos) => text.get(..pos).unwrap_or(&text).to_owned(),
        None => text,
    }
}

/// Builds one JSON-RPC error response object (JSON-RPC 2.0 §5, §5.1).
///
/// `id` is `None` when the request id could not be determined (the spec then requires `null`).
/// The result is compact JSON text, for example
/// `{"jsonrpc":"2.0","id":7,"error":{"code":-32003,"message":"..."}}`.
pub fn error_response(id: Option<&Id>, code: i32, message: &str) -> String {
    let id = id.map_or_else(|| "null".to_owned(), Id::to_json);
    let message = serde_json::Value::String(message.to_owned());
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"error\":{{\"code\":{code},\"message\":{message}}}}}"
    )
}

/// [`error_response`] with an `error.data` member: `data` is JSON text (compact, valid: the
/// caller renders it with serde_json), e.g. the `{"supported":[...],"requested":"..."}` of an
/// MCP 2026-07-28 `UnsupportedProtocolVersionError`.
pub fn error_response_with_data(id: Option<&Id>, code: i32, message: &str, data: &str) -> String {
    let id = id.map_or_else(|| "null".to_owned(), Id::to_json);
    let message = serde_json::Value::String(message.to_owned());
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"error\":{{\"code\":{code},\"message\":{message},\"data\":{data}}}}}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parser with the default depth limit.
    fn parse_body(body: &[u8]) -> Result<Body<'_>, ParseError> {
        super::parse_body(body, crate::config::DEFAULT_MAX_JSON_DEPTH)
    }

    fn single(body: &str) -> Message<'_> {
        match parse_body(body.as_bytes()) {
            Ok(Body::Single(m)) => m,
            other => panic!("expected a single message, got {other:?}"),
        }
    }

    fn refused(body: &str) -> ParseError {
        match parse_body(body.as_bytes()) {
            Err(e) => e,
            Ok(b) => panic!("expected refusal, got {b:?}"),
        }
    }

    #[test]
    fn tools_call_exposes_name_and_exact_argument_bytes() {
        let body = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{ "text" : "hi" }}}"#;
        let m = single(body);
        assert_eq!(m.kind, Kind::Request(Id::Number("3".into())));
        assert_eq!(m.method.as_deref(), Some("tools/call"));
        assert_eq!(m.tool_name.as_deref(), Some("echo"));
        assert_eq!(m.hash_input, Some(r#"{ "text" : "hi" }"#));
    }

    #[test]
    fn other_methods_hash_params() {
        let m = single(r#"{"jsonrpc":"2.0","id":"a","method":"initialize","params":{"x":1}}"#);
        assert_eq!(m.kind, Kind::Request(Id::Str("a".into())));
        assert_eq!(m.hash_input, Some(r#"{"x":1}"#));
        let m = single(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(m.kind, Kind::Notification);
        assert_eq!(m.hash_input, None);
    }

    #[test]
    fn escapes_are_decoded_before_matching() {
        let m = single(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools\/c\u0061ll","params":{"name":"d\u0065lete_repo"}}"#,
        );
        assert_eq!(m.method.as_deref(), Some("tools/call"));
        assert_eq!(m.tool_name.as_deref(), Some("delete_repo"));
    }

    #[test]
    fn prompt_and_resource_names() {
        let m =
            single(r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"greet"}}"#);
        assert_eq!(m.prompt_name.as_deref(), Some("greet"));
        let m = single(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#,
        );
        assert_eq!(m.resource_uri.as_deref(), Some("file:///a"));
    }

    #[test]
    fn duplicate_members_are_refused() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"ping","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"delete_repo"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"params":{"name":"x"}}"#,
        ] {
            let e = refused(body);
            assert!(
                e.code == INVALID_REQUEST || e.code == INVALID_PARAMS,
                "{body}: {e:?}"
            );
        }
    }

    #[test]
    fn malformed_bodies_get_the_spec_codes() {
        assert_eq!(refused("not json").code, PARSE_ERROR);
        assert_eq!(refused("{\"jsonrpc\":\"2.0\"").code, PARSE_ERROR);
        assert_eq!(refused("\u{feff}{}").code, PARSE_ERROR);
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":1,"method":"ping"} x"#).code,
            PARSE_ERROR
        );
        assert_eq!(refused("[]").code, INVALID_REQUEST);
        assert_eq!(refused("[ ]").code, INVALID_REQUEST);
        assert_eq!(refused("42").code, INVALID_REQUEST);
        assert_eq!(
            refused(r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#).code,
            INVALID_REQUEST
        );
        assert_eq!(refused(r#"{"id":1,"method":"x"}"#).code, INVALID_REQUEST);
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#).code,
            INVALID_REQUEST
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#).code,
            INVALID_REQUEST
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":1,"method":5}"#).code,
            INVALID_REQUEST
        );
        assert_eq!(refused(r#"{"jsonrpc":"2.0","id":1}"#).code, INVALID_REQUEST);
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#).code,
            INVALID_REQUEST
        );
        let e =
            refused(r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"arguments":{}}}"#);
        assert_eq!(
            (e.code, e.id),
            (INVALID_PARAMS, Some(Id::Number("9".into())))
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":7}}"#).code,
            INVALID_PARAMS
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":9,"method":"tools/call"}"#).code,
            INVALID_PARAMS
        );
    }

    #[test]
    fn deep_nesting_is_a_parse_error() {
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"a":{}1{}}}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(refused(&deep).code, PARSE_ERROR);
        // Brackets inside strings do not count; 62 levels under params is fine.
        let ok = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"s":"[[[[{{{{","a":{}{}}}}}"#,
            "[".repeat(62),
            "]".repeat(62)
        );
        assert!(parse_body(ok.as_bytes()).is_ok());
        // The limit is the caller's (max_json_depth): 3 levels refused at 2, accepted at 3.
        let three = br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":[1]}}"#;
        assert_eq!(super::parse_body(three, 2).unwrap_err().code, PARSE_ERROR);
        assert!(super::parse_body(three, 3).is_ok());
    }

    #[test]
    fn byte_order_mark_and_trailing_bytes_are_parse_errors() {
        let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        let bom = format!("\u{feff}{ping}");
        let e = refused(&bom);
        assert_eq!(e.code, PARSE_ERROR);
        assert!(e.message.contains("byte-order mark"), "{}", e.message);
        assert_eq!(refused(&format!("{ping} x")).code, PARSE_ERROR);
        assert_eq!(refused(&format!("{ping}{ping}")).code, PARSE_ERROR);
        assert!(parse_body(format!("{ping}\r\n").as_bytes()).is_ok());
    }

    #[test]
    fn ids_that_are_not_integers_are_refused() {
        for id in ["8e400", "1.5", "1E3", "-0.0", "true", "null", "{}"] {
            let e = refused(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#));
            assert_eq!(e.code, INVALID_REQUEST, "{id}");
        }
        assert_eq!(Id::from_raw("-12"), Some(Id::Number("-12".into())));
    }

    #[test]
    fn overlong_ids_are_refused() {
        let id = "7".repeat(MAX_REQUEST_ID_LEN);
        assert!(
            parse_body(format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#).as_bytes())
                .is_ok()
        );
        let long = format!(r#"{{"jsonrpc":"2.0","id":"{id}","method":"ping"}}"#);
        let e = refused(&long);
        assert_eq!(e.code, INVALID_REQUEST);
        assert!(e.message.contains("longer than"), "{}", e.message);
    }

    #[test]
    fn ids_keep_type_and_precision() {
        let m = single(r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}"#);
        assert_eq!(
            m.kind,
            Kind::Request(Id::Number("123456789012345678901234567890".into()))
        );
        assert_ne!(Id::from_raw("1"), Id::from_raw("\"1\""));
        assert_eq!(Id::from_raw("\"a\\u0062\""), Some(Id::Str("ab".into())));
        assert_eq!(Id::Str("x\"y".into()).to_json(), r#""x\"y""#);
    }

    #[test]
    fn batches_parse_every_element_and_refuse_a_bad_one() {
        let body = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}},
                      {"jsonrpc":"2.0","method":"notifications/initialized"}]"#;
        match parse_body(body.as_bytes()) {
            Ok(Body::Batch(v)) => {
                assert_eq!(v.len(), 2);
                assert_eq!(v[0].tool_name.as_deref(), Some("echo"));
                assert_eq!(v[1].kind, Kind::Notification);
            }
            other => panic!("{other:?}"),
        }
        let e = refused(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}, 3]"#);
        assert_eq!(e.code, INVALID_REQUEST);
        assert!(e.message.contains("batch element 1"), "{}", e.message);
    }

    #[test]
    fn client_responses_are_accepted() {
        let m = single(r#"{"jsonrpc":"2.0","id":"srv-1","result":{}}"#);
        assert_eq!(m.kind, Kind::Response(Id::Str("srv-1".into())));
        assert_eq!(m.method, None);
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#).code,
            INVALID_REQUEST
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":1,"method":"x","result":{}}"#).code,
            INVALID_REQUEST
        );
    }

    const MODERN_META: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"c","version":"1"}}"#;

    #[test]
    fn meta_envelope_is_read_on_every_method() {
        for method in [
            "tools/list",
            "tools/call",
            "server/discover",
            "notifications/cancelled",
        ] {
            let id = if method.starts_with("notifications/") {
                ""
            } else {
                r#""id":1,"#
            };
            let body = format!(
                r#"{{"jsonrpc":"2.0",{id}"method":"{method}","params":{{"name":"echo",{MODERN_META}}}}}"#
            );
            let m = single(&body);
            assert_eq!(
                m.meta,
                Meta {
                    meta_object: true,
                    protocol_version: MetaVersion::Str("2026-07-28".into()),
                    client_capabilities: true,
                },
                "{method}"
            );
        }
    }

    #[test]
    fn meta_shapes_absent_not_object_not_string() {
        let m = single(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#);
        assert_eq!(m.meta, Meta::default());
        let m = single(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        assert_eq!(m.meta, Meta::default());
        let m = single(r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#);
        assert_eq!(m.meta, Meta::default());
        let m = single(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":"2026-07-28"}}"#,
        );
        assert!(!m.meta.meta_object);
        assert_eq!(m.meta.protocol_version, MetaVersion::Absent);
        let m = single(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{}}}"#);
        assert_eq!(
            m.meta,
            Meta {
                meta_object: true,
                protocol_version: MetaVersion::Absent,
                client_capabilities: false
            }
        );
        for v in ["null", "20260728", "{}", r#"["2026-07-28"]"#] {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"_meta":{{"io.modelcontextprotocol/protocolVersion":{v}}}}}}}"#
            );
            let m = single(&body);
            assert_eq!(m.meta.protocol_version, MetaVersion::NotString, "{v}");
            assert!(!m.meta.client_capabilities);
        }
        // clientCapabilities: presence only (null counts, as in the SDK's `key in meta`).
        let m = single(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":null}}}"#,
        );
        assert!(m.meta.client_capabilities);
    }

    #[test]
    fn meta_keys_and_values_are_read_with_escapes_decoded_and_exactly() {
        let m = single(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"\u005fmeta":{"io.modelcontextprotocol\/protocolVersion":"2026-07-\u00328","io.modelcontextprotocol/client\u0043apabilities":{}}}}"#,
        );
        assert_eq!(
            m.meta.protocol_version,
            MetaVersion::Str("2026-07-28".into())
        );
        assert!(m.meta.client_capabilities);
        // Other spellings of the key are other keys (no case folding, no trimming).
        let m = single(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/ProtocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities ":{}}}}"#,
        );
        assert_eq!(m.meta.protocol_version, MetaVersion::Absent);
        assert!(!m.meta.client_capabilities);
    }

    #[test]
    fn duplicated_envelope_members_are_refused_on_every_method() {
        for body in [
            // _meta twice in params (a later one could carry another version).
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"_meta":{},"_meta":{}}}"#,
            // the version key twice, once escaped
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2025-11-25","io.modelcontextprotocol\/protocolVersion":"2026-07-28"}}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"ping","params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientCapabilities":{}}}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"a","requestState":"x","requestState":"y"}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"a","inputResponses":{},"inputResponses":{}}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"tasks/get","params":{"taskId":"t1","taskId":"t2"}}"#,
        ] {
            let e = refused(body);
            assert_eq!(e.code, INVALID_PARAMS, "{body}: {e:?}");
            assert_eq!(e.id, Some(Id::Number("4".into())), "{body}");
            assert!(e.message.contains("duplicate"), "{body}: {}", e.message);
        }
        // A version string that does not decode (lone surrogate) is refused, not read as absent.
        let e = refused(
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"\ud800"}}}"#,
        );
        assert_eq!(e.code, INVALID_PARAMS, "{e:?}");
    }

    #[test]
    fn multi_round_trip_members() {
        let m = single(
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"confirm","arguments":{"a":1},"inputResponses":{"q":{"action":"accept"}},"requestState":"ab\u0063\/d"}}"#,
        );
        assert_eq!(m.request_state.as_deref(), Some("abc/d"));
        assert!(m.input_responses);
        let m = single(
            r#"{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"p","requestState":7,"inputResponses":null}}"#,
        );
        assert_eq!(m.request_state, None);
        assert!(m.input_responses, "present, even null");
        let m = single(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"p"}}"#);
        assert_eq!((m.request_state, m.input_responses), (None, false));
    }

    #[test]
    fn arguments_are_the_raw_text_of_tools_call_only() {
        let m = single(
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"q","arguments":{ "region" : "eu\u002d1", "n": 42.0 }}}"#,
        );
        assert_eq!(
            m.arguments,
            Some(r#"{ "region" : "eu\u002d1", "n": 42.0 }"#)
        );
        let m = single(
            r#"{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"p","arguments":{"x":"y"}}}"#,
        );
        assert_eq!(m.arguments, None);
        let m = single(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"p"}}"#);
        assert_eq!(m.arguments, None);
    }

    #[test]
    fn error_response_shape() {
        assert_eq!(
            error_response(Some(&Id::Number("7".into())), -32001, "no \"x\""),
            r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32001,"message":"no \"x\""}}"#
        );
        assert_eq!(
            error_response(None, PARSE_ERROR, "bad"),
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"bad"}}"#
        );
    }
}
