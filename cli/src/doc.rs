//! The policy document as read from a file: an ordered JSON-like tree.
//!
//! JSON and YAML are both read into [`Doc`], which keeps the key order of the file (so rendered
//! manifests read like the source) and refuses duplicate keys with their path: the filter's
//! parser would otherwise see only one of them (YAML and most JSON readers keep the last), and
//! a reviewer reading the file could be shown the other. [`Doc::to_compact_json`] is then the
//! exact plugin configuration the filter is given.

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::Path;

/// One node of a JSON-compatible document; maps keep their order.
#[derive(Debug, Clone, PartialEq)]
pub enum Doc {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number (integer or finite float).
    Number(serde_json::Number),
    /// A string.
    String(String),
    /// A list.
    Seq(Vec<Doc>),
    /// An object, in document order, without duplicate keys.
    Map(Vec<(String, Doc)>),
}

/// The syntax a policy file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// JSON.
    Json,
    /// YAML (1.2; JSON is a subset, but JSON files are read by the JSON parser).
    Yaml,
}

impl Syntax {
    /// By extension (`.json`, `.yaml`/`.yml`), else by content: a document whose first
    /// non-blank character is `{` is JSON, anything else YAML.
    pub fn detect(path: Option<&Path>, text: &str) -> Syntax {
        let ext = path
            .and_then(Path::extension)
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("json") => Syntax::Json,
            Some("yaml" | "yml") => Syntax::Yaml,
            _ if text.trim_start().starts_with('{') => Syntax::Json,
            _ => Syntax::Yaml,
        }
    }
}

impl Doc {
    /// Parses `text` as `syntax`. The error names the position (and, for duplicate keys, the
    /// path) of the problem.
    pub fn parse(text: &str, syntax: Syntax) -> Result<Doc, String> {
        match syntax {
            Syntax::Json => {
                let mut de = serde_json::Deserializer::from_str(text);
                let doc = DocSeed(String::new())
                    .deserialize(&mut de)
                    .map_err(|e| e.to_string())?;
                de.end().map_err(|e| e.to_string())?;
                Ok(doc)
            }
            Syntax::Yaml => {
                let options = serde_saphyr::options! { strict_booleans: true };
                // serde-saphyr drives the seed through deserialize_any, as serde_json does.
                serde_saphyr::from_str_with_options::<YamlDoc>(text, options)
                    .map(|d| d.0)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// The compact JSON text of the document (what the filter receives as its configuration).
    pub fn to_compact_json(&self) -> Result<String, String> {
        serde_json::to_string(self).map_err(|e| e.to_string())
    }

    /// The value under `key` if this is a map holding it.
    pub fn get(&self, key: &str) -> Option<&Doc> {
        match self {
            Doc::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The entries if this is a map.
    pub fn entries(&self) -> Option<&[(String, Doc)]> {
        match self {
            Doc::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// A string node.
    pub fn str(s: impl Into<String>) -> Doc {
        Doc::String(s.into())
    }

    /// A map node from `(key, value)` pairs, in order.
    pub fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Doc)>) -> Doc {
        Doc::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// A list node.
    pub fn seq(items: impl IntoIterator<Item = Doc>) -> Doc {
        Doc::Seq(items.into_iter().collect())
    }
}

impl Serialize for Doc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Doc::Null => s.serialize_unit(),
            Doc::Bool(b) => s.serialize_bool(*b),
            Doc::Number(n) => n.serialize(s),
            Doc::String(v) => s.serialize_str(v),
            Doc::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Doc::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// Appends a key to a dotted path (`policy.agents.bot`), the style of the filter's errors.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Deserializes a [`Doc`], carrying the path of the node for duplicate-key errors.
struct DocSeed(String);

/// The YAML entry point (serde-saphyr deserializes a type, not a seed).
struct YamlDoc(Doc);

impl<'de> serde::Deserialize<'de> for YamlDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DocSeed(String::new()).deserialize(d).map(YamlDoc)
    }
}

impl<'de> DeserializeSeed<'de> for DocSeed {
    type Value = Doc;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Doc, D::Error> {
        d.deserialize_any(DocVisitor(self.0))
    }
}

/// A map key: strings, and integers (YAML `123:`) as their decimal text.
struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(KeyVisitor)
    }
}

struct DocVisitor(String);

impl<'de> Visitor<'de> for DocVisitor {
    type Value = Doc;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-compatible value")
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Doc, E> {
        Ok(Doc::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Doc, E> {
        Ok(Doc::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Doc, D::Error> {
        DocSeed(self.0).deserialize(d)
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Doc, E> {
        Ok(Doc::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Doc, E> {
        Ok(Doc::Number(v.into()))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Doc, E> {
        Ok(Doc::Number(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Doc, E> {
        serde_json::Number::from_f64(v)
            .map(Doc::Number)
            .ok_or_else(|| E::custom(format!("{}: {v} is not a JSON number", self.0)))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Doc, E> {
        Ok(Doc::String(v.to_owned()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Doc, E> {
        Ok(Doc::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Doc, A::Error> {
        let mut items = Vec::new();
        while let Some(item) =
            seq.next_element_seed(DocSeed(format!("{}[{}]", self.0, items.len())))?
        {
            items.push(item);
        }
        Ok(Doc::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc, A::Error> {
        let mut entries: Vec<(String, Doc)> = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let path = join(&self.0, &key);
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(A::Error::custom(format!("{path}: duplicate key {key:?}")));
            }
            let value = map.next_value_seed(DocSeed(path))?;
            entries.push((key, value));
        }
        Ok(Doc::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_give_the_same_ordered_document() {
        let j = Doc::parse(r#"{"b": 1, "a": [true, null, "x", 1.5]}"#, Syntax::Json).unwrap();
        let y = Doc::parse("b: 1\na: [true, null, x, 1.5]\n", Syntax::Yaml).unwrap();
        assert_eq!(j, y);
        assert_eq!(
            j.to_compact_json().unwrap(),
            r#"{"b":1,"a":[true,null,"x",1.5]}"#
        );
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_path() {
        let e = Doc::parse(
            r#"{"policy": {"agents": {"a": {}, "a": {}}}}"#,
            Syntax::Json,
        )
        .unwrap_err();
        assert!(e.contains("policy.agents.a: duplicate key"), "{e}");
        let e =
            Doc::parse("policy:\n  mode: enforce\n  mode: dry_run\n", Syntax::Yaml).unwrap_err();
        assert!(e.contains("duplicate"), "{e}");
    }

    #[test]
    fn syntax_detection() {
        assert_eq!(Syntax::detect(Some(Path::new("p.yml")), "{}"), Syntax::Yaml);
        assert_eq!(
            Syntax::detect(Some(Path::new("p.JSON")), "a: 1"),
            Syntax::Json
        );
        assert_eq!(Syntax::detect(None, "  \n{\"a\":1}"), Syntax::Json);
        assert_eq!(Syntax::detect(None, "a: 1"), Syntax::Yaml);
    }

    #[test]
    fn integer_keys_become_strings_and_trailing_json_is_refused() {
        let y = Doc::parse("123: x\n", Syntax::Yaml).unwrap();
        assert_eq!(y.get("123"), Some(&Doc::str("x")));
        assert!(Doc::parse("{} {}", Syntax::Json).is_err());
    }
}
