//! Tool definition pins: the hash of one `tools/list` entry that a pin (plugin configuration
//! `tool_pins`, or a learned pin) is compared with.
//!
//! A server that changes a tool's description or schema after it was reviewed (a "rug pull",
//! OWASP MCP Top 10 tool poisoning) changes this hash. The policy CLI (`mcp-guard pin`) computes
//! pins with this same function, so the filter and the CLI agree byte for byte.

mod check;
mod store;

pub use check::{
    check_call, needs_def, Checked, DriftEntry, ListCheck, PinDenial, Status, MAX_DRIFT_ENTRIES,
};
pub use store::{
    def, learn_first, learned_pins, record_defs, Def, DEFS, LEARNED, MAX_BYTES, MAX_TOOLS,
};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// What a drifted tool gets (plugin configuration `on_drift`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnDrift {
    /// Removed from every `tools/list` and its calls denied (JSON-RPC -32003, `tool_drift`)
    /// until the pin is updated. The default.
    #[default]
    Hide,
    /// Listed and callable; the drift is recorded (audit `drift`, stat `mcp_guard.tool_drift`).
    Audit,
}

/// What a tool without a pin gets (plugin configuration `unpinned`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Unpinned {
    /// Listed and callable. The default.
    #[default]
    Allow,
    /// Removed from every `tools/list` and its calls denied (-32003, `tool_unpinned`).
    Hide,
}

/// The compiled tool-pin configuration (plugin configuration `tool_pins`, `on_drift`,
/// `unpinned`, `learn_pins`; docs/configuration.md "Tool pins"). The default is inactive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinConfig {
    /// Tool name (exact, byte for byte) to its pinned [`definition_hash`]
    /// (`sha256:<64 lower-case hex>`). Applies to every server this filter fronts.
    pub tool_pins: BTreeMap<String, String>,
    /// What a drifted tool gets.
    pub on_drift: OnDrift,
    /// What a tool without a pin gets.
    pub unpinned: Unpinned,
    /// Trust on first use: the first definition seen per (server, tool) becomes its pin
    /// (shared data `mcp_guard.pins.<server_id>`, see [`LEARNED`]). A configured pin wins.
    pub learn_pins: bool,
}

impl PinConfig {
    /// Whether pins are in force at all: some pin configured, `learn_pins`, or
    /// `unpinned: hide`. Inactive, nothing is hashed, read or written.
    pub fn active(&self) -> bool {
        !self.tool_pins.is_empty() || self.learn_pins || self.unpinned == Unpinned::Hide
    }

    /// Whether pins can deny a call or hide a tool (else they only record drift).
    pub fn can_deny(&self) -> bool {
        self.active() && (self.on_drift == OnDrift::Hide || self.unpinned == Unpinned::Hide)
    }

    /// Whether any pin source exists (configured pins or learning): entries are hashed.
    pub fn pinning(&self) -> bool {
        !self.tool_pins.is_empty() || self.learn_pins
    }

    /// The configured pin of `tool` (exact name).
    pub fn configured(&self, tool: &str) -> Option<&str> {
        self.tool_pins.get(tool).map(String::as_str)
    }
}

/// Whether `pin` has the form of a definition hash: `sha256:` and 64 lower-case hex digits.
pub fn is_pin(pin: &str) -> bool {
    pin.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The members of a `tools/list` entry (MCP schema `Tool`) that a definition hash covers, in
/// the order RFC 8785 sorts them (UTF-16 code units: upper case before lower case).
///
/// These are what the model is shown and what the server's behaviour is described by:
/// - `name`, `title`, `description`: what the model reads to decide to call the tool;
/// - `inputSchema`, `outputSchema`: what it is called with and answers (the schemas carry
///   descriptions of their own, which the model also reads);
/// - `annotations`: the hints (`readOnlyHint`, `destructiveHint`, ...) a client and mcp-guard's
///   curation act on.
///
/// Not counted: `_meta` (protocol and vendor metadata the server may change on every list, such
/// as cache or tracing data, that the model is not shown as the tool's description), `icons`
/// (presentation for a human UI, often URLs a server re-signs or rotates), `execution`
/// (task-support negotiation of the protocol, not the tool's contract), and any member a later
/// revision or a vendor adds. Counting them would make pins drift without a definition change.
pub const COUNTED_MEMBERS: [&str; 6] = [
    "annotations",
    "description",
    "inputSchema",
    "name",
    "outputSchema",
    "title",
];

/// Why a `tools/list` entry has no definition hash. An entry that cannot be hashed never
/// matches a pin: callers treat it as drifted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinError {
    /// The entry is not valid JSON (RFC 8259), or holds a number outside the IEEE 754 double
    /// range or a lone UTF-16 surrogate escape, which RFC 8785 section 3.2.2 cannot express.
    /// The text is serde_json's message (it names a line and column, never the input).
    InvalidJson(String),
    /// The entry is valid JSON but not an object.
    NotObject,
    /// A member name occurs twice in the same object: at the top level for one of the
    /// [`COUNTED_MEMBERS`], or anywhere inside a counted member's value. RFC 8785 (section
    /// 3.1, I-JSON) has no canonical form for it, and receivers disagree on which value wins.
    /// The field is the counted member where it was found.
    DuplicateMember(&'static str),
    /// The canonical serialization failed (serde_jcs; not expected for parsed JSON).
    Canonical(String),
}

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinError::InvalidJson(e) => write!(f, "tool entry is not valid JSON: {e}"),
            PinError::NotObject => f.write_str("tool entry is not a JSON object"),
            PinError::DuplicateMember(m) => {
                write!(f, "tool entry has a duplicated member name in `{m}`")
            }
            PinError::Canonical(e) => write!(f, "tool entry has no RFC 8785 form: {e}"),
        }
    }
}

impl std::error::Error for PinError {}

/// The definition hash of one `tools/list` entry: `"sha256:"` followed by the 64 lower-case
/// hex digits of SHA-256 (FIPS 180-4) over the UTF-8 bytes of the RFC 8785 JSON Canonicalization
/// Scheme (JCS) form of the object made of only the entry's [`COUNTED_MEMBERS`] that are present
/// (`name`, `title`, `description`, `inputSchema`, `outputSchema`, `annotations`; an absent
/// member stays absent, a `null` member is kept as `null`).
///
/// `entry` is one element of a `tools/list` result's `tools` array, as the server sent it.
/// JCS (RFC 8785 section 3.2): no whitespace; object members sorted by their names' UTF-16 code
/// units; strings with only `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t` and lower-case `\u00xx`
/// for other control characters escaped (everything else, including `/` and non-ASCII, as
/// UTF-8, never Unicode-normalized); numbers as IEEE 754 doubles in the ECMAScript
/// `Number.prototype.toString` form (`1e+21`, `0.000001`, `-0` as `0`, `4.50` as `4.5`).
///
/// Errors: [`PinError`] for invalid JSON, a non-object, or a duplicated member name at the top
/// level among the counted members or anywhere inside their values (members that do not count
/// are not examined beyond being valid JSON). Nesting is bounded by serde_json's recursion
/// limit (128), so deep input is an error, not a stack overflow.
pub fn definition_hash(entry: &str) -> Result<String, PinError> {
    let canonical = canonical_form(entry)?;
    Ok(crate::audit::input_hash(canonical.as_bytes()))
}

/// The RFC 8785 text [`definition_hash`] hashes (the counted members only). Exposed so the CLI
/// and tests can show what a pin covers.
pub fn canonical_form(entry: &str) -> Result<String, PinError> {
    let value: Value = match serde_json::from_str::<Selected>(entry) {
        Ok(Selected(map)) => Value::Object(map),
        Err(e) => return Err(classify(e)),
    };
    let mut out = String::with_capacity(entry.len());
    write_canonical(&value, &mut out)?;
    Ok(out)
}

/// Appends the RFC 8785 form of `value` (section 3.2): literals as they are; numbers in the
/// ECMAScript form, formatted by `serde_jcs` (ryu-js); strings with the section 3.2.2.2
/// escapes; arrays in order; object members sorted by the UTF-16 code units of their names
/// (section 3.2.3). Written here rather than through `serde_jcs::to_string` for the whole
/// value: the crate's serializer allocates per token and re-parses every member name, which
/// made hashing a 100-tool list about three times slower (benches/hot_path.rs). Recursion is
/// bounded by the parse (serde_json's limit of 128 levels).
fn write_canonical(value: &Value, out: &mut String) -> Result<(), PinError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            let text = serde_jcs::to_string(n).map_err(|e| PinError::Canonical(e.to_string()))?;
            out.push_str(&text);
        }
        Value::String(s) => push_canonical_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, (name, member)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_canonical_str(out, name);
                out.push(':');
                write_canonical(member, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// A JSON string as RFC 8785 section 3.2.2.2 writes it: `"` and `\\` escaped, the short forms
/// `\b \f \n \r \t`, `\u00xx` (lower-case hex) for other control characters, everything
/// else (`/`, DEL, non-ASCII) as its UTF-8.
fn push_canonical_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let b = u32::from(c) as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX.get(b >> 4).copied().unwrap_or(b'0')));
                out.push(char::from(HEX.get(b & 0xf).copied().unwrap_or(b'0')));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The marker the visitors put in a custom error so [`classify`] can tell a duplicate (and
/// which member) from a syntax error.
const DUP_MARK: &str = "mcp-guard duplicate member in ";
const NOT_OBJECT: &str = "mcp-guard tool entry not an object";

fn classify(e: serde_json::Error) -> PinError {
    let text = e.to_string();
    if let Some(rest) = text.strip_prefix(DUP_MARK) {
        let member = COUNTED_MEMBERS
            .iter()
            .find(|m| rest.starts_with(**m) && rest.as_bytes().get(m.len()) == Some(&b'|'))
            .copied()
            .unwrap_or("name");
        return PinError::DuplicateMember(member);
    }
    if text.starts_with(NOT_OBJECT) {
        return PinError::NotObject;
    }
    PinError::InvalidJson(text)
}

/// The counted members of a top-level entry object, each parsed strictly ([`Strict`]).
struct Selected(Map<String, Value>);

impl<'de> Deserialize<'de> for Selected {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SelectedVisitor)
    }
}

struct SelectedVisitor;

impl SelectedVisitor {
    fn not_object<E: de::Error>() -> Result<Selected, E> {
        Err(E::custom(NOT_OBJECT))
    }
}

impl<'de> Visitor<'de> for SelectedVisitor {
    type Value = Selected;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tool entry object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Selected, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match COUNTED_MEMBERS.iter().find(|m| **m == key.as_ref()) {
                Some(member) => {
                    let value = map.next_value_seed(StrictSeed { member })?.into_value();
                    if out.insert((*member).to_owned(), value).is_some() {
                        return Err(de::Error::custom(format_args!("{DUP_MARK}{member}|")));
                    }
                }
                None => {
                    // Validated as JSON, never kept or examined.
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(Selected(out))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Selected, E> {
        Self::not_object()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Selected, E> {
        Self::not_object()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Selected, E> {
        Self::not_object()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Selected, E> {
        Self::not_object()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Selected, E> {
        Self::not_object()
    }
    fn visit_unit<E: de::Error>(self) -> Result<Selected, E> {
        Self::not_object()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Selected, A::Error> {
        // Consume (validate) the array before refusing it, so a syntax error inside still
        // reports as invalid JSON consistently with other non-objects.
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Self::not_object()
    }
}

/// A JSON value parsed like `serde_json::Value`, except that a member name repeated within one
/// object is an error (serde_json keeps the last one silently).
struct Strict(Value);

impl Strict {
    fn into_value(self) -> Value {
        self.0
    }
}

/// Deserializes a [`Strict`] value for the counted member `member` (named in a duplicate error).
#[derive(Clone, Copy)]
struct StrictSeed {
    member: &'static str,
}

impl<'de> de::DeserializeSeed<'de> for StrictSeed {
    type Value = Strict;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::Number(v.into())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::Number(v.into())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Strict, E> {
        Number::from_f64(v)
            .map(|n| Strict(Value::Number(n)))
            .ok_or_else(|| E::custom("number is not finite"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v.0);
        }
        Ok(Strict(Value::Array(out)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "{DUP_MARK}{}|",
                    self.member
                )));
            }
            let value = map.next_value_seed(self)?;
            out.insert(key, value.0);
        }
        Ok(Strict(Value::Object(out)))
    }
}

/// [`definition_hash`] of an entry held as a [`RawValue`] (an element of a parsed `tools`
/// array, its text exactly as the server sent it).
pub fn definition_hash_raw(entry: &RawValue) -> Result<String, PinError> {
    definition_hash(entry.get())
}

#[cfg(test)]
mod tests;
