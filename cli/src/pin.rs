//! `mcp-guard pin`: tool definition pins (`tool_pins`, docs/configuration.md "Tool pins")
//! from a `tools/list` result, saved or fetched live, hashed with the filter's own
//! [`mcp_guard::pins::definition_hash`] so the CLI and the filter agree byte for byte.
//!
//! A saved list is one or more JSON documents (a file or standard input): each a JSON-RPC
//! response whose `result` is a `tools/list` result, a bare result `{"tools": [...]}`, or a
//! JSON array of those (the pages of a paginated list). Each tool entry is hashed from its
//! text as it was saved.

use crate::doc::Doc;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Most tool entries pinned in one run (lists and pages together); a larger input is refused.
pub const MAX_TOOLS: usize = 10_000;

/// One `tools/list` result page, as far as pinning reads it. A member given twice is refused.
#[derive(Debug, Deserialize)]
pub struct Page<'a> {
    /// The tool entries, as sent.
    #[serde(borrow)]
    pub tools: Vec<&'a RawValue>,
    /// The cursor of the next page (MCP "Pagination").
    #[serde(borrow, default, rename = "nextCursor")]
    pub next_cursor: Option<Cow<'a, str>>,
}

/// A saved document: a JSON-RPC response or a bare result.
#[derive(Debug, Deserialize)]
struct Saved<'a> {
    #[serde(borrow, default)]
    tools: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// The name of a tool entry (a member given twice is refused).
#[derive(Debug, Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// The tool entries of a saved list (see the module documentation), as text.
pub fn saved_entries(text: &str) -> Result<Vec<String>, String> {
    let mut entries = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<&RawValue>();
    let mut documents = 0usize;
    for doc in &mut stream {
        let doc = doc.map_err(|e| format!("not JSON: {e}"))?;
        documents += 1;
        if doc.get().trim_start().starts_with('[') {
            let pages: Vec<&RawValue> = serde_json::from_str(doc.get())
                .map_err(|e| format!("document {documents}: {e}"))?;
            for page in pages {
                add_document(page, &mut entries)
                    .map_err(|e| format!("document {documents}: {e}"))?;
            }
        } else {
            add_document(doc, &mut entries).map_err(|e| format!("document {documents}: {e}"))?;
        }
    }
    if documents == 0 {
        return Err("no JSON document".to_owned());
    }
    Ok(entries)
}

fn add_document(doc: &RawValue, entries: &mut Vec<String>) -> Result<(), String> {
    if !doc.get().trim_start().starts_with('{') {
        return Err("not a JSON-RPC response or a tools/list result".to_owned());
    }
    let saved: Saved<'_> = serde_json::from_str(doc.get()).map_err(|e| e.to_string())?;
    if let Some(e) = saved.error {
        return Err(format!("a JSON-RPC error response: {}", e.get()));
    }
    let tools = match (saved.tools, saved.result) {
        (Some(tools), None) => tools,
        (None, Some(result)) => {
            let page: Page<'_> =
                serde_json::from_str(result.get()).map_err(|e| format!("result: {e}"))?;
            page.tools
        }
        (Some(_), Some(_)) => return Err("both tools and result".to_owned()),
        (None, None) => return Err("neither a result nor a tools member".to_owned()),
    };
    if entries.len() + tools.len() > MAX_TOOLS {
        return Err(format!("more than {MAX_TOOLS} tools"));
    }
    entries.extend(tools.iter().map(|t| t.get().to_owned()));
    Ok(())
}

/// The pins of `entries`: tool name → `sha256:<hex>`. An entry that cannot be hashed, or a
/// tool listed twice with different definitions, is an error (a pin must name one
/// definition).
pub fn pins(entries: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut pins = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let named: Named<'_> = serde_json::from_str(entry)
            .map_err(|e| format!("tool entry {}: no name: {e}", i + 1))?;
        let hash = mcp_guard::pins::definition_hash(entry)
            .map_err(|e| format!("tool {:?}: {e}", named.name))?;
        match pins.get(named.name.as_ref()) {
            Some(h) if *h != hash => {
                return Err(format!(
                    "tool {:?} is listed twice with different definitions",
                    named.name
                ))
            }
            _ => {
                pins.insert(named.name.into_owned(), hash);
            }
        }
    }
    Ok(pins)
}

/// `{"tool_pins": {...}}`.
pub fn pins_doc(pins: &BTreeMap<String, String>) -> Doc {
    Doc::map([(
        "tool_pins",
        Doc::map(pins.iter().map(|(k, v)| (k.clone(), Doc::str(v.clone())))),
    )])
}

/// What a merge changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// Tools pinned that had no pin.
    pub added: Vec<String>,
    /// Tools whose pin changed.
    pub changed: Vec<String>,
    /// Pins of the file for tools not in the list (kept).
    pub kept: Vec<String>,
}

/// Sets `tool_pins.<tool>` of a policy document for every pin, keeping every other member
/// (and the other pins) in place; `tool_pins` is added at the end when absent.
pub fn merge(doc: &mut Doc, pins: &BTreeMap<String, String>) -> Result<Merged, String> {
    let Doc::Map(top) = doc else {
        return Err("the policy file is not a mapping".to_owned());
    };
    let mut merged = Merged::default();
    let existing = match top.iter_mut().find(|(k, _)| k == "tool_pins") {
        Some((_, v)) => v,
        None => {
            top.push(("tool_pins".to_owned(), Doc::Map(Vec::new())));
            match top.last_mut() {
                Some((_, v)) => v,
                None => return Err("internal: no tool_pins".to_owned()),
            }
        }
    };
    let Doc::Map(existing) = existing else {
        return Err("tool_pins is not a mapping".to_owned());
    };
    for (name, _) in existing.iter() {
        if !pins.contains_key(name) {
            merged.kept.push(name.clone());
        }
    }
    for (tool, hash) in pins {
        match existing.iter_mut().find(|(k, _)| k == tool) {
            Some((_, v)) => {
                if !matches!(v, Doc::String(s) if s == hash) {
                    merged.changed.push(tool.clone());
                    *v = Doc::str(hash.clone());
                }
            }
            None => {
                merged.added.push(tool.clone());
                existing.push((tool.clone(), Doc::str(hash.clone())));
            }
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::doc::Syntax;

    const ECHO: &str = r#"{"name":"echo","description":"Echo","inputSchema":{"type":"object"}}"#;

    #[test]
    fn every_saved_shape_gives_the_same_entries() {
        let result = format!(r#"{{"tools":[{ECHO}]}}"#);
        let response = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{result}}}"#);
        for text in [
            result.clone(),
            response.clone(),
            format!("[{response}]"),
            format!("{response}\n"),
        ] {
            assert_eq!(
                saved_entries(&text).unwrap(),
                vec![ECHO.to_owned()],
                "{text}"
            );
        }
        // Several pages: concatenated documents, or an array.
        let page2 = r#"{"tools":[{"name":"add","inputSchema":{"type":"object"}}]}"#;
        assert_eq!(
            saved_entries(&format!("{response}\n{page2}"))
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            saved_entries(&format!("[{result},{page2}]")).unwrap().len(),
            2
        );
    }

    #[test]
    fn what_is_not_a_list_is_refused() {
        for bad in [
            "",
            "{}",
            "[1]",
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"x"}}"#,
            r#"{"tools":[],"tools":[]}"#,
            r#"{"result":{"tools":{}}}"#,
            "{\"tools\":[]} trailing",
        ] {
            assert!(saved_entries(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pins_are_the_filters_hash_and_a_name_has_one_definition() {
        let p = pins(&[ECHO.to_owned()]).unwrap();
        assert_eq!(p["echo"], mcp_guard::pins::definition_hash(ECHO).unwrap());
        assert!(p["echo"].starts_with("sha256:") && p["echo"].len() == 71);
        // The same definition twice is one pin; two definitions of one name is an error.
        assert_eq!(pins(&[ECHO.to_owned(), ECHO.to_owned()]).unwrap().len(), 1);
        let other = r#"{"name":"echo","description":"Other","inputSchema":{"type":"object"}}"#;
        assert!(pins(&[ECHO.to_owned(), other.to_owned()]).is_err());
        // An entry the filter cannot hash is never pinned.
        let dup = r#"{"name":"echo","description":"a","description":"b"}"#;
        assert!(pins(&[dup.to_owned()]).is_err());
    }

    #[test]
    fn merge_keeps_the_rest_of_the_file() {
        let mut doc = Doc::parse(
            "server_id: s\ntool_pins:\n  old: sha256:1\n  echo: sha256:2\npolicy: {agents: {}}\n",
            Syntax::Yaml,
        )
        .unwrap();
        let mut p = BTreeMap::new();
        p.insert("echo".to_owned(), "sha256:3".to_owned());
        p.insert("add".to_owned(), "sha256:4".to_owned());
        let m = merge(&mut doc, &p).unwrap();
        assert_eq!(m.added, vec!["add"]);
        assert_eq!(m.changed, vec!["echo"]);
        assert_eq!(m.kept, vec!["old"]);
        assert_eq!(
            doc.to_compact_json().unwrap(),
            r#"{"server_id":"s","tool_pins":{"old":"sha256:1","echo":"sha256:3","add":"sha256:4"},"policy":{"agents":{}}}"#
        );
        let mut bare = Doc::parse("{\"policy\": {\"agents\": {}}}", Syntax::Json).unwrap();
        merge(&mut bare, &p).unwrap();
        assert!(bare
            .to_compact_json()
            .unwrap()
            .ends_with(r#""tool_pins":{"add":"sha256:4","echo":"sha256:3"}}"#));
    }
}
