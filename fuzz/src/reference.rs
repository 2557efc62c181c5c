//! The request parser as it was before the single-pass, framed-`params` and shared-framing
//! changes (`mcp_guard::jsonrpc::parse_body`, kept verbatim apart from the names it imports,
//! and extended by serde alone where the parser gained members: every method's `params`,
//! `_meta`, `requestState`, `inputResponses`, `arguments`):
//! every member read by serde_json's derive (`RawValue` members, duplicates refused by serde),
//! syntax checked first. A differential oracle: the production parser must give the same
//! `Result` (same messages, same refusal code and text) on every body
//! (`tests/fuzz_corpus.rs`, `request_parser_matches_the_reference_parser`).

#![allow(clippy::all)]

use mcp_guard::jsonrpc::{
    Body, Id, Kind, Message, Meta, MetaVersion, ParseError, INVALID_PARAMS, INVALID_REQUEST,
    MAX_REQUEST_ID_LEN, META_PROTOCOL_VERSION, PARSE_ERROR, PROMPTS_GET, RESOURCES_READ,
    TASK_METHODS, TOOLS_CALL,
};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

fn err(code: i32, message: impl Into<String>) -> ParseError {
    ParseError {
        code,
        message: message.into(),
        id: None,
        method: None,
    }
}

/// Whether brackets outside strings nest deeper than `limit`.
fn exceeds_nesting(bytes: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
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

/// The `params._meta` envelope keys (added with MCP 2026-07-28 support: every method's params
/// are read, and `_meta` with them).
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

fn parse_meta(raw: Option<&RawValue>) -> Result<Meta, ParseError> {
    let Some(raw) = raw.filter(|r| r.get().starts_with('{')) else {
        return Ok(Meta::default());
    };
    let wire: WireMeta<'_> = serde_json::from_str(raw.get()).map_err(|e| {
        err(
            INVALID_PARAMS,
            format!("Invalid params: params._meta: {}", strip_position(&e)),
        )
    })?;
    let protocol_version = match wire.protocol_version {
        None => MetaVersion::Absent,
        Some(v) if !v.get().starts_with('"') => MetaVersion::NotString,
        Some(v) => MetaVersion::Str(serde_json::from_str::<String>(v.get()).map_err(|_| {
            err(
                INVALID_PARAMS,
                format!(
                    "Invalid params: params._meta {META_PROTOCOL_VERSION} is not a valid string"
                ),
            )
        })?),
    };
    Ok(Meta {
        meta_object: true,
        protocol_version,
        client_capabilities: wire.client_capabilities.is_some(),
    })
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
    err(INVALID_REQUEST, message)
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

pub fn parse_body(body: &[u8], max_depth: usize) -> Result<Body<'_>, ParseError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| err(PARSE_ERROR, "Parse error: body is not UTF-8"))?;
    if text.starts_with('\u{feff}') {
        return Err(err(
            PARSE_ERROR,
            "Parse error: byte-order mark before the JSON text",
        ));
    }
    if exceeds_nesting(text.as_bytes(), max_depth) {
        return Err(err(
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
        let elements: Vec<&RawValue> = serde_json::from_str(text)
            .map_err(|e| err(PARSE_ERROR, format!("Parse error: {}", json_error(&e))))?;
        if elements.is_empty() {
            return Err(err(INVALID_REQUEST, "Invalid Request: empty batch"));
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
    } else {
        // Syntax first, so that malformed JSON is -32700 rather than -32600.
        serde_json::from_str::<&RawValue>(text)
            .map_err(|e| err(PARSE_ERROR, format!("Parse error: {}", json_error(&e))))?;
        parse_message(text).map(Body::Single)
    }
}

fn parse_message(text: &str) -> Result<Message<'_>, ParseError> {
    if !text.trim_start().starts_with('{') {
        return Err(invalid("Invalid Request: not a JSON object"));
    }
    let wire: Wire<'_> = serde_json::from_str(text).map_err(|e| {
        // Duplicate members and type mismatches land here; the text names the member only.
        invalid(format!("Invalid Request: {}", strip_position(&e)))
    })?;

    let version = wire
        .jsonrpc
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
    if version.as_deref() != Some("2.0") {
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

    // Every method's params (an object) are read, duplicates refused; then `_meta`.
    let fields = match params {
        Some(raw) if raw.get().starts_with('{') => Some(
            parse_params(params).map_err(|e| with_context(e, id.clone(), Some(method.clone())))?,
        ),
        _ => None,
    };
    let meta = parse_meta(fields.as_ref().and_then(|f| f.meta))
        .map_err(|e| with_context(e, id.clone(), Some(method.clone())))?;

    let mut message = Message {
        kind: match id.clone() {
            Some(id) => Kind::Request(id),
            None => Kind::Notification,
        },
        method: None,
        tool_name: None,
        prompt_name: None,
        resource_uri: None,
        task_id: None,
        hash_input: params.map(RawValue::get),
        meta,
        request_state: fields
            .as_ref()
            .and_then(|f| f.request_state)
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok()),
        input_responses: fields.as_ref().is_some_and(|f| f.input_responses.is_some()),
        arguments: None,
    };

    match method.as_str() {
        TOOLS_CALL | PROMPTS_GET | RESOURCES_READ => {
            let fields = match fields {
                Some(f) => f,
                None => {
                    return Err(with_context(
                        err(INVALID_PARAMS, "Invalid params: params must be an object"),
                        id,
                        Some(method),
                    ))
                }
            };
            let string_member = |raw: Option<&RawValue>, member: &str| {
                raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok())
                    .ok_or_else(|| {
                        with_context(
                            err(
                                INVALID_PARAMS,
                                format!("Invalid params: {method} needs a string params.{member}"),
                            ),
                            id.clone(),
                            Some(method.clone()),
                        )
                    })
            };
            match method.as_str() {
                TOOLS_CALL => {
                    message.tool_name = Some(string_member(fields.name, "name")?);
                    message.hash_input = fields.arguments.map(RawValue::get);
                    message.arguments = fields.arguments.map(RawValue::get);
                }
                PROMPTS_GET => message.prompt_name = Some(string_member(fields.name, "name")?),
                _ => message.resource_uri = Some(string_member(fields.uri, "uri")?),
            }
        }
        m if TASK_METHODS.contains(&m) => {
            message.task_id = fields
                .and_then(|f| f.task_id)
                .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
        }
        _ => {}
    }
    message.method = Some(method);
    Ok(message)
}

fn parse_params(params: Option<&RawValue>) -> Result<WireParams<'_>, ParseError> {
    match params {
        Some(raw) if raw.get().starts_with('{') => serde_json::from_str(raw.get()).map_err(|e| {
            err(
                INVALID_PARAMS,
                format!("Invalid params: {}", strip_position(&e)),
            )
        }),
        _ => Err(err(
            INVALID_PARAMS,
            "Invalid params: params must be an object",
        )),
    }
}
