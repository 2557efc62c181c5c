//! MCP 2026-07-28 `Mcp-Param-{Name}` headers (MCP specification 2026-07-28, "Transports /
//! Streamable HTTP", "Custom Headers from Tool Parameters"; "Server / Tools", `x-mcp-header`).
//!
//! A server may mark properties of a tool's `inputSchema` with `"x-mcp-header": "<Name>"`. A
//! client calling the tool over Streamable HTTP then mirrors the argument's value into the
//! request header `Mcp-Param-<Name>`, so that intermediaries can route and rate limit on it
//! without the body. This module has the pure parts:
//!
//! - [`schema_markings`]: the schema walk. An annotation is valid only on a property reached
//!   from the schema root by a chain of `properties` keys alone (no `items`, composition,
//!   conditional keyword or `$ref` on the way), with a `type` of `string`, `integer` or
//!   `boolean`, and a name that is an RFC 9110 token, case-insensitively unique in the schema.
//!   Any other annotation makes the whole tool definition invalid (clients drop such a tool
//!   from their `tools/list`). The walk enters the JSON Schema 2020-12 applicator keywords
//!   only (never instance data such as `default`, `enum`, `const`, `examples`, and never
//!   dereferences `$ref`), as the official Python SDK 2.3 does (`find_invalid_x_mcp_header`).
//! - [`decode_value`]: a header value, checked for characters a field value may not carry and
//!   decoded from the `=?base64?...?=` form ([`crate::routing::decode_value`]).
//! - [`verify`]: the header/body comparison. For each marking: a value present (not `null`) at
//!   the property path of `params.arguments` needs the header (when the request is MCP
//!   2026-07-28 or later), and the decoded header must equal the value rendered as the client
//!   renders it (string as is, integer in decimal, boolean `true` / `false`); an integer
//!   property compares numerically (`42` equals `42.0`) when the header is a plain decimal; a
//!   header whose argument is absent, `null`, or not a scalar is a mismatch; a marked header
//!   sent twice is a mismatch. Every failure is HTTP 400 with JSON-RPC -32020 (HeaderMismatch).
//!
//! Headers no marking names are not mcp-guard's to judge: they pass untouched (the
//! specification: intermediaries forward unrecognized `Mcp-Param-*` headers).
//!
//! Learned markings are kept per server in shared data by [`store`].

pub mod store;

use crate::routing;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::BTreeMap;

/// The schema keyword that marks a property (`x-mcp-header`).
pub const ANNOTATION: &str = "x-mcp-header";
/// Prefix of the request headers that mirror marked arguments, lower-case as Envoy holds
/// header names (`Mcp-Param-` in the specification; header names compare case-insensitively).
pub const HEADER_PREFIX: &str = "mcp-param-";
/// Most markings kept for one tool; a tool with more is not learned (its headers are then
/// neither verified nor tagged, as for a tool never listed).
pub const MAX_MARKINGS: usize = 16;
/// Longest marking kept, in bytes of its name plus its property path's names; a tool with a
/// longer one is not learned.
pub const MAX_MARKING_BYTES: usize = 256;
/// Longest integer mcp-guard renders from a JSON number, in decimal digits; a longer integral
/// number (far beyond the specification's -(2^53-1)..2^53-1 range) compares as its JSON text.
pub const MAX_INTEGER_DIGITS: usize = 64;

/// The `type` of a marked property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ParamType {
    /// `"type": "string"`.
    String,
    /// `"type": "integer"`.
    Integer,
    /// `"type": "boolean"`.
    Boolean,
}

impl ParamType {
    /// One letter, as the store writes it (`s`, `i`, `b`).
    pub fn letter(self) -> &'static str {
        match self {
            ParamType::String => "s",
            ParamType::Integer => "i",
            ParamType::Boolean => "b",
        }
    }

    /// [`ParamType::letter`] read back.
    pub fn from_letter(letter: &str) -> Option<ParamType> {
        match letter {
            "s" => Some(ParamType::String),
            "i" => Some(ParamType::Integer),
            "b" => Some(ParamType::Boolean),
            _ => None,
        }
    }

    fn of_schema(name: &str) -> Option<ParamType> {
        match name {
            "string" => Some(ParamType::String),
            "integer" => Some(ParamType::Integer),
            "boolean" => Some(ParamType::Boolean),
            _ => None,
        }
    }
}

/// One valid `x-mcp-header` annotation of a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marking {
    /// The annotation's value as the server spelled it (the `<Name>` of `Mcp-Param-<Name>`).
    pub token: String,
    /// The chain of `properties` keys from the schema root to the marked property (at least
    /// one).
    pub path: Vec<String>,
    /// The property's `type`.
    pub kind: ParamType,
}

impl Marking {
    /// The request header carrying this marking's value, lower-case (`mcp-param-<name>`).
    pub fn header(&self) -> String {
        let mut name = String::with_capacity(HEADER_PREFIX.len() + self.token.len());
        name.push_str(HEADER_PREFIX);
        name.push_str(&self.token.to_ascii_lowercase());
        name
    }

    /// The header's name as the specification spells it (`Mcp-Param-<Name>`), for messages.
    pub fn display_header(&self) -> String {
        format!("Mcp-Param-{}", self.token)
    }
}

/// What a tool's `inputSchema` says about `Mcp-Param-*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learned {
    /// Every annotation is valid: these markings (empty when the schema has none).
    Marked(Vec<Marking>),
    /// An annotation breaks a rule of the specification (why): the tool definition is
    /// invalid, and conforming clients drop the tool.
    Invalid(&'static str),
    /// Valid, but over mcp-guard's bounds ([`MAX_MARKINGS`], [`MAX_MARKING_BYTES`]), or the
    /// schema could not be read: not learned.
    Unkept,
}

/// What mcp-guard knows about a tool's markings (from the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolParams {
    /// The tool's valid markings (never empty: a tool without any is not stored).
    Marked(Vec<Marking>),
    /// The tool's annotations are invalid.
    Invalid,
}

// JSON Schema 2020-12 applicator keywords whose values are schema positions, by shape of the
// value. `properties` is the only keyword that keeps a property chain; every keyword here
// leaves it.
const SUBSCHEMA_ONE: &[&str] = &[
    "items",
    "contains",
    "unevaluatedItems",
    "additionalProperties",
    "propertyNames",
    "unevaluatedProperties",
    "not",
    "if",
    "then",
    "else",
    "contentSchema",
];
const SUBSCHEMA_LIST: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];
const SUBSCHEMA_MAP: &[&str] = &[
    "patternProperties",
    "dependentSchemas",
    "$defs",
    "definitions",
];

/// Whether `s` is an RFC 9110 token (`1*tchar`, §5.6.2).
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The markings of a tool's `inputSchema`, given as raw JSON (`None`: the tool has no
/// `inputSchema`). A schema whose text cannot name the keyword (no `x-mcp-header`, and no
/// `\u` escape, the only JSON escape that can spell its letters) is not parsed.
pub fn schema_markings(raw: Option<&str>) -> Learned {
    let Some(raw) = raw else {
        return Learned::Marked(Vec::new());
    };
    if !may_name_the_annotation(raw.as_bytes()) {
        return Learned::Marked(Vec::new());
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(schema) => markings_of(&schema),
        Err(_) => Learned::Unkept,
    }
}

/// Whether a member name in `raw` (JSON text) could decode to [`ANNOTATION`]: the literal
/// text occurs, or a `\u` escape does (any character of the name may be spelled as one; JSON
/// has no other escape for its characters). One pass over `raw` (memchr's scan for `x` and
/// `\`), since every tool of every `tools/list` is looked at.
fn may_name_the_annotation(raw: &[u8]) -> bool {
    memchr::memchr2_iter(b'x', b'\\', raw).any(|at| {
        let rest = raw.get(at..).unwrap_or_default();
        rest.starts_with(ANNOTATION.as_bytes()) || rest.starts_with(b"\\u")
    })
}

/// [`schema_markings`] of a parsed schema: every schema position is visited (an explicit
/// stack, so any finite JSON value terminates without recursion).
pub fn markings_of(schema: &Value) -> Learned {
    // (the chain of `properties` keys, or `None` once another keyword was crossed; node)
    let mut stack: Vec<(Option<Vec<&str>>, &Value)> = vec![(Some(Vec::new()), schema)];
    let mut found: Vec<Marking> = Vec::new();
    let mut over = false;
    while let Some((path, node)) = stack.pop() {
        let Value::Object(members) = node else {
            continue;
        };
        if let Some(token) = members.get(ANNOTATION) {
            let path = match &path {
                Some(p) if !p.is_empty() => p,
                _ => {
                    return Learned::Invalid(
                        "x-mcp-header is on a schema position not reached by a chain of \
                         properties keys",
                    )
                }
            };
            let Value::String(token) = token else {
                return Learned::Invalid("x-mcp-header is not a string");
            };
            if !is_token(token) {
                return Learned::Invalid("x-mcp-header is not an RFC 9110 token");
            }
            let kind = match members.get("type") {
                Some(Value::String(t)) => ParamType::of_schema(t),
                _ => None,
            };
            let Some(kind) = kind else {
                return Learned::Invalid(
                    "x-mcp-header is on a property whose type is not string, integer or boolean",
                );
            };
            if found.iter().any(|m| m.token.eq_ignore_ascii_case(token)) {
                return Learned::Invalid("x-mcp-header names a header twice");
            }
            let bytes = token.len() + path.iter().map(|s| s.len()).sum::<usize>();
            over |= bytes > MAX_MARKING_BYTES;
            found.push(Marking {
                token: token.clone(),
                path: path.iter().map(|s| (*s).to_owned()).collect(),
                kind,
            });
        }
        for (keyword, value) in members {
            let keyword = keyword.as_str();
            if keyword == "properties" {
                if let Value::Object(properties) = value {
                    for (name, sub) in properties {
                        let sub_path = path.as_ref().map(|p| {
                            let mut p = p.clone();
                            p.push(name.as_str());
                            p
                        });
                        stack.push((sub_path, sub));
                    }
                }
            } else if SUBSCHEMA_ONE.contains(&keyword) {
                stack.push((None, value));
            } else if SUBSCHEMA_LIST.contains(&keyword) {
                if let Value::Array(items) = value {
                    stack.extend(items.iter().map(|sub| (None, sub)));
                }
            } else if SUBSCHEMA_MAP.contains(&keyword) {
                if let Value::Object(map) = value {
                    stack.extend(map.values().map(|sub| (None, sub)));
                }
            }
        }
    }
    if over || found.len() > MAX_MARKINGS {
        return Learned::Unkept;
    }
    Learned::Marked(found)
}

/// Decodes an `Mcp-Param-*` header value: `None` when it has a character a field value may not
/// carry (anything but visible ASCII, space and horizontal tab; RFC 9110 §5.5: a value that
/// needs more must be sent in the Base64 form) or a malformed `=?base64?...?=` form
/// ([`routing::decode_value`]: canonical standard base64 of UTF-8).
pub fn decode_value(raw: &str) -> Option<String> {
    if !raw
        .bytes()
        .all(|b| b == b'\t' || (0x20..=0x7e).contains(&b))
    {
        return None;
    }
    routing::decode_value(raw)
}

/// The value at a property path of the arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg<'a> {
    /// No value there (a missing key, a step that is not an object, or `null`).
    Absent,
    /// A string, escapes decoded.
    Str(String),
    /// A boolean.
    Bool(bool),
    /// A number, as its JSON text.
    Number(&'a str),
    /// An object or array: no header rendering exists.
    Unrenderable,
}

/// The value at `path` in `arguments` (raw JSON of `params.arguments`; `None`: absent). A
/// member named twice counts by its last value, as the SDKs' JSON parsers read it.
fn value_at<'a>(arguments: Option<&'a str>, path: &[String]) -> Arg<'a> {
    let Some(mut node) = arguments else {
        return Arg::Absent;
    };
    for key in path {
        let Ok(members) = serde_json::from_str::<BTreeMap<String, &'a RawValue>>(node) else {
            return Arg::Absent; // not an object
        };
        match members.get(key.as_str()) {
            Some(raw) => node = raw.get(),
            None => return Arg::Absent,
        }
    }
    let text = node.trim_matches(|c: char| c.is_ascii_whitespace());
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text).map_or(Arg::Unrenderable, Arg::Str),
        Some(b't') => Arg::Bool(true),
        Some(b'f') => Arg::Bool(false),
        Some(b'n') | None => Arg::Absent,
        Some(b'-' | b'0'..=b'9') => Arg::Number(text),
        Some(_) => Arg::Unrenderable,
    }
}

/// The decimal integer a JSON number denotes (no sign for zero, no leading zeros), if it is
/// integral and has at most [`MAX_INTEGER_DIGITS`] digits: `4.2e1` → `42`, `-0.0` → `0`.
pub fn integral(raw: &str) -> Option<String> {
    let (negative, rest) = match raw.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (rest.get(..at)?, rest.get(at + 1..)?),
        None => (rest, "0"),
    };
    let exponent = exponent.strip_prefix('+').unwrap_or(exponent);
    if exponent.len() > 6 {
        return None;
    }
    let mut exponent: i64 = exponent.parse().ok()?;
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((w, f)) => (w, f),
        None => (mantissa, ""),
    };
    if whole.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut digits: String = whole.chars().chain(fraction.chars()).collect();
    exponent -= i64::try_from(fraction.len()).ok()?;
    let significant = digits.trim_start_matches('0').len();
    digits.drain(..digits.len() - significant);
    if digits.is_empty() {
        return Some("0".to_owned());
    }
    while exponent < 0 && digits.ends_with('0') {
        digits.pop();
        exponent += 1;
    }
    if exponent < 0 {
        return None;
    }
    let zeros = usize::try_from(exponent).ok()?;
    if digits.len().saturating_add(zeros) > MAX_INTEGER_DIGITS {
        return None;
    }
    let mut out = String::with_capacity(1 + digits.len() + zeros);
    if negative {
        out.push('-');
    }
    out.push_str(&digits);
    out.extend(std::iter::repeat_n('0', zeros));
    Some(out)
}

/// The integer a header value in plain decimal (`-?[0-9]+(\.[0-9]+)?`, no exponent: the form
/// the specification and the SDKs compare numerically) denotes, canonical as [`integral`];
/// `None` for any other form or a non-zero fraction.
fn header_integer(decoded: &str) -> Option<String> {
    let (negative, rest) = match decoded.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, decoded),
    };
    let (whole, fraction) = match rest.split_once('.') {
        Some((w, f)) if !f.is_empty() => (w, f),
        Some(_) => return None,
        None => (rest, ""),
    };
    if whole.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if fraction.bytes().any(|b| b != b'0') {
        return None;
    }
    let digits = whole.trim_start_matches('0');
    if digits.is_empty() {
        return Some("0".to_owned());
    }
    Some(if negative {
        format!("-{digits}")
    } else {
        digits.to_owned()
    })
}

/// The value as a client renders it into the header: a string as is, a boolean `true` /
/// `false`, a number in decimal (an integral one without fraction or exponent, any other as
/// its JSON text). `None`: absent or not renderable.
fn rendered(arg: &Arg<'_>) -> Option<String> {
    match arg {
        Arg::Absent | Arg::Unrenderable => None,
        Arg::Str(s) => Some(s.clone()),
        Arg::Bool(b) => Some(if *b { "true" } else { "false" }.to_owned()),
        Arg::Number(raw) => Some(if raw.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
            (*raw).to_owned()
        } else {
            integral(raw).unwrap_or_else(|| (*raw).to_owned())
        }),
    }
}

/// Why an `Mcp-Param-*` header was refused (HTTP 400, JSON-RPC -32020).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The header, as the specification spells it (`Mcp-Param-Region`).
    pub header: String,
    /// What is wrong, in words that never repeat the header's or the argument's value.
    pub why: &'static str,
}

impl Mismatch {
    fn new(marking: &Marking, why: &'static str) -> Mismatch {
        Mismatch {
            header: marking.display_header(),
            why,
        }
    }
}

/// A verified argument: the marking's name and the value as mcp-guard tags it (a string as is,
/// a boolean `true` / `false`, an integral number as its canonical decimal integer).
pub type Verified = (String, String);

/// Verifies the `Mcp-Param-*` headers of one `tools/call` against its arguments.
///
/// `markings`: the tool's; `arguments`: the raw JSON of `params.arguments` (`None`: absent);
/// `headers`: every request header whose lower-case name starts with [`HEADER_PREFIX`], as
/// `(name, value)` pairs in the order sent; `required`: whether a value in the body needs its
/// header (the request is MCP 2026-07-28 or later; older clients never send these headers,
/// and a header they do send is still checked).
///
/// Returns the verified arguments (every marking with a renderable value, header or not: the
/// body is the truth), or the first [`Mismatch`].
pub fn verify(
    markings: &[Marking],
    arguments: Option<&str>,
    headers: &[(String, String)],
    required: bool,
) -> Result<Vec<Verified>, Mismatch> {
    let mut verified = Vec::with_capacity(markings.len());
    for marking in markings {
        let name = marking.header();
        let mut sent = headers.iter().filter(|(n, _)| *n == name);
        let header = sent.next().map(|(_, v)| v.as_str());
        if sent.next().is_some() {
            return Err(Mismatch::new(marking, "the header is sent more than once"));
        }
        let arg = value_at(arguments, &marking.path);
        let Some(text) = rendered(&arg) else {
            if header.is_some() {
                return Err(Mismatch::new(
                    marking,
                    "the header is sent but the request body has no value for its argument",
                ));
            }
            continue;
        };
        let integer = match (&arg, marking.kind) {
            (Arg::Number(raw), ParamType::Integer) => integral(raw),
            _ => None,
        };
        match header {
            None if required => {
                return Err(Mismatch::new(
                    marking,
                    "the header is missing but the request body has a value for its argument",
                ))
            }
            None => {}
            Some(raw) => {
                let Some(decoded) = decode_value(raw) else {
                    return Err(Mismatch::new(
                        marking,
                        "the header has characters a header value may not carry, or a \
                         malformed =?base64?...?= value",
                    ));
                };
                let same = match &integer {
                    Some(n) if header_integer(&decoded).is_some() => {
                        header_integer(&decoded).as_deref() == Some(n.as_str())
                    }
                    _ => decoded == text,
                };
                if !same {
                    return Err(Mismatch::new(
                        marking,
                        "the header value does not match the request body's argument",
                    ));
                }
            }
        }
        verified.push((marking.token.clone(), integer.unwrap_or(text)));
    }
    Ok(verified)
}

#[cfg(test)]
mod tests;
