//! Walking the plugin configuration document one field at a time, so that a problem in one
//! field does not hide the problems of the others.
//!
//! The document is first read as JSON text only (a syntax error is the one problem that stops
//! everything). Every object whose fields are checked independently (the document, `policy`,
//! each agent and group entry, `identity`, `headers`) is then split into its members, each
//! kept as the raw JSON text of its value ([`serde_json::value::RawValue`], borrowed from the
//! document), and each value is deserialized on its own. A serde error inside one value is
//! reported with its full path (the object's path, then serde's path inside the value) and its
//! position in the whole document, as if the whole document had been deserialized at once.

use super::{ConfigError, Position};
use serde::de::{self, Deserialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::fmt;

/// Proof that a problem has been recorded (only [`Cx`] makes one). A compile step that
/// returns `Err(Invalid)` has already said why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Invalid(());

/// The document being compiled and the problems found so far.
pub(super) struct Cx<'a> {
    doc: &'a [u8],
    errors: Vec<ConfigError>,
}

/// The members of one JSON object, checked against the field names it may have.
pub(super) struct Object<'a> {
    /// Dotted path of the object (empty for the document).
    path: String,
    /// Known members with their raw values, first occurrence only.
    fields: Vec<(&'static str, &'a RawValue)>,
    /// Byte offset just after the object's closing `}` (where serde reports a missing field).
    end: Option<usize>,
}

impl<'a> Object<'a> {
    /// The path of member `name`.
    pub(super) fn path_of(&self, name: &str) -> String {
        join(&self.path, name)
    }

    /// The raw value of member `name`, `null` included; `None` if absent.
    pub(super) fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, raw)| *raw)
    }

    /// The raw value of member `name`; `None` if absent or `null` (as serde reads an
    /// `Option` field).
    pub(super) fn opt(&self, name: &str) -> Option<&'a RawValue> {
        self.get(name).filter(|raw| raw.get() != "null")
    }
}

/// An object's members in document order, repeated keys kept.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value: &'de RawValue = map.next_value()?;
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// `path` extended by `inner` (a serde_path_to_error path: `.` for the value itself, `[1]`,
/// `tools[1]`, `a.b`).
fn join(path: &str, inner: &str) -> String {
    if inner.is_empty() || inner == "." {
        path.to_owned()
    } else if path.is_empty() {
        inner.to_owned()
    } else if inner.starts_with('[') {
        format!("{path}{inner}")
    } else {
        format!("{path}.{inner}")
    }
}

fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl<'a> Cx<'a> {
    /// A compilation of `doc`, with no problem yet.
    pub(super) fn new(doc: &'a [u8]) -> Cx<'a> {
        Cx {
            doc,
            errors: Vec::new(),
        }
    }

    /// The problems recorded, in the order they were found.
    pub(super) fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }

    /// Records a problem of the field at `field` (no position: a rule of mcp-guard's, not
    /// of the JSON shape).
    pub(super) fn error(
        &mut self,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Invalid {
        self.errors.push(ConfigError::new(field, problem));
        Invalid(())
    }

    fn error_at(&mut self, field: String, problem: String, index: Option<usize>) -> Invalid {
        let mut e = ConfigError::new(field, problem);
        e.position = index.map(|i| self.position(i));
        self.errors.push(e);
        Invalid(())
    }

    /// serde_json's line and column for byte offset `index` of the document: the line is
    /// 1-based, the column counts the bytes of the line before `index`.
    fn position(&self, index: usize) -> Position {
        let before = self.doc.get(..index).unwrap_or(self.doc);
        let start_of_line = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |nl| nl + 1);
        Position {
            line: 1 + before.iter().filter(|&&b| b == b'\n').count(),
            column: index.saturating_sub(start_of_line),
        }
    }

    /// Byte offset of `raw`'s text in the document (it is borrowed from it).
    fn offset(&self, raw: &RawValue) -> Option<usize> {
        let start = self.doc.as_ptr() as usize;
        let offset = (raw.get().as_ptr() as usize).checked_sub(start)?;
        (offset.checked_add(raw.get().len())? <= self.doc.len()).then_some(offset)
    }

    /// Byte offset just after the key of the member whose value starts at `value_at` (serde
    /// reports unknown and duplicate fields there): back over `:` and the spaces around it.
    fn key_end(&self, value_at: usize) -> usize {
        let mut i = value_at;
        let space_before =
            |i: usize| i > 0 && self.doc.get(i - 1).copied().is_some_and(is_json_space);
        while space_before(i) {
            i -= 1;
        }
        if i > 0 && self.doc.get(i - 1) == Some(&b':') {
            i -= 1;
        }
        while space_before(i) {
            i -= 1;
        }
        i
    }

    /// Records serde_json error `e`, raised while reading `within` (or the whole document),
    /// under `field`: its message without the position, and the position in the document.
    fn serde_error(
        &mut self,
        field: String,
        e: &serde_json::Error,
        within: Option<&RawValue>,
    ) -> Invalid {
        let mut message = e.to_string();
        if e.line() == 0 {
            return self.error_at(field, message, None);
        }
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        if message.ends_with(&suffix) {
            message.truncate(message.len() - suffix.len());
        }
        let index = match within {
            // Already the document's position: turn it back into an offset.
            None => self.index_of(self.doc, e.line(), e.column()),
            Some(raw) => self.offset(raw).and_then(|base| {
                let rel = self.index_of(raw.get().as_bytes(), e.line(), e.column())?;
                base.checked_add(rel)
            }),
        };
        self.error_at(field, message, index)
    }

    /// The byte offset in `text` of serde_json's (line, column) position.
    fn index_of(&self, text: &[u8], line: usize, column: usize) -> Option<usize> {
        let start_of_line = if line <= 1 {
            0
        } else {
            text.iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n')
                .nth(line - 2)
                .map(|(i, _)| i + 1)?
        };
        start_of_line.checked_add(column)
    }

    /// Reads the document as JSON text: one value, nothing after it.
    pub(super) fn document(&mut self) -> Result<&'a RawValue, Invalid> {
        let mut de = serde_json::Deserializer::from_slice(self.doc);
        let read = <&RawValue>::deserialize(&mut de).and_then(|raw| de.end().map(|()| raw));
        read.map_err(|e| self.serde_error(String::new(), &e, None))
    }

    /// Deserializes `raw` (the value at `path`) as `T`. On failure the problem is recorded
    /// with serde's path inside the value appended to `path`.
    pub(super) fn value<T: Deserialize<'a>>(
        &mut self,
        path: &str,
        raw: &'a RawValue,
    ) -> Result<T, Invalid> {
        let mut de = serde_json::Deserializer::from_str(raw.get());
        serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
            let field = join(path, &e.path().to_string());
            self.serde_error(field, e.inner(), Some(raw))
        })
    }

    /// Member `name` of `obj` as `T`: `None` if absent or `null`.
    pub(super) fn field<T: Deserialize<'a>>(
        &mut self,
        obj: &Object<'a>,
        name: &str,
    ) -> Result<Option<T>, Invalid> {
        match obj.opt(name) {
            None => Ok(None),
            Some(raw) => self.value(&obj.path_of(name), raw).map(Some),
        }
    }

    /// Member `name` of `obj`, which must be present (`null` is a value here: the type read
    /// from it decides).
    pub(super) fn required(
        &mut self,
        obj: &Object<'a>,
        name: &'static str,
    ) -> Result<&'a RawValue, Invalid> {
        match obj.get(name) {
            Some(raw) => Ok(raw),
            None => {
                let problem = <serde_json::Error as de::Error>::missing_field(name).to_string();
                Err(self.error_at(obj.path.clone(), problem, obj.end))
            }
        }
    }

    /// The members of the object at `path`, in document order, repeated keys kept.
    fn members(
        &mut self,
        path: &str,
        raw: &'a RawValue,
    ) -> Result<Vec<(String, &'a RawValue)>, Invalid> {
        let mut de = serde_json::Deserializer::from_str(raw.get());
        match Members::deserialize(&mut de) {
            Ok(m) => Ok(m.0),
            Err(e) => Err(self.serde_error(path.to_owned(), &e, Some(raw))),
        }
    }

    /// The object at `path` with the fields `known`. Each unknown or repeated field is a
    /// problem (serde's `deny_unknown_fields` and duplicate-field messages); the object is
    /// still returned so that its other fields can be checked.
    pub(super) fn object(
        &mut self,
        path: &str,
        raw: &'a RawValue,
        known: &'static [&'static str],
    ) -> Result<Object<'a>, Invalid> {
        let members = self.members(path, raw)?;
        let mut fields: Vec<(&'static str, &'a RawValue)> = Vec::with_capacity(members.len());
        for (key, value) in members {
            let at = self.offset(value).map(|i| self.key_end(i));
            let problem = match known.iter().find(|k| **k == key) {
                None => <serde_json::Error as de::Error>::unknown_field(&key, known),
                Some(name) if fields.iter().any(|(n, _)| n == name) => {
                    <serde_json::Error as de::Error>::duplicate_field(name)
                }
                Some(name) => {
                    fields.push((name, value));
                    continue;
                }
            };
            self.error_at(join(path, &key), problem.to_string(), at);
        }
        let end = self
            .offset(raw)
            .and_then(|o| o.checked_add(raw.get().len()));
        Ok(Object {
            path: path.to_owned(),
            fields,
            end,
        })
    }

    /// The entries of the object at `path` in document order, repeated keys kept (the caller
    /// decides what a repeated key means).
    pub(super) fn entries(
        &mut self,
        path: &str,
        raw: &'a RawValue,
    ) -> Result<Vec<(String, &'a RawValue)>, Invalid> {
        self.members(path, raw)
    }

    /// The entries of the map at `path` (agents, groups), sorted by key. A repeated key keeps
    /// its last value, as a `BTreeMap` deserialized by serde does.
    pub(super) fn map(
        &mut self,
        path: &str,
        raw: &'a RawValue,
    ) -> Result<BTreeMap<String, &'a RawValue>, Invalid> {
        Ok(self.members(path, raw)?.into_iter().collect())
    }
}
