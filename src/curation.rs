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

use crate::jsonrpc::Id;
use serde::Deserialize;
use serde_json::value::RawValue;
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

/// What a rewrite did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// Entries kept.
    pub kept: usize,
    /// Entries removed.
    pub removed: usize,
    /// Every tool of a `tools/list` response seen (kept or not), with its hints.
    pub tools_seen: Vec<(String, ToolHints)>,
}

/// Rewrites one JSON-RPC document (a message or a batch array): in each response whose id is
/// in `ids`, keeps the entries of `result.<list>` for which `keep(name)` holds. `None` when
/// nothing in the document is such a response (the caller keeps the original bytes).
pub fn rewrite_document(
    text: &str,
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite,
) -> Option<String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let elements: Vec<&RawValue> = serde_json::from_str(text).ok()?;
        let mut changed = false;
        let mut out: Vec<String> = Vec::with_capacity(elements.len());
        for element in elements {
            match rewrite_message(element.get(), kind, ids, keep, stats) {
                Some(new) => {
                    changed = true;
                    out.push(new);
                }
                None => out.push(element.get().to_owned()),
            }
        }
        changed.then(|| format!("[{}]", out.join(",")))
    } else {
        rewrite_message(text, kind, ids, keep, stats)
    }
}

fn rewrite_message(
    text: &str,
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite,
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
        if let (
            ListKind::Tools,
            Some(Named {
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
                kept.push(entry);
            }
            _ => stats.removed += 1,
        }
    }
    let array = serde_json::value::to_raw_value(&kept).ok()?;
    result.insert(kind.array().to_owned(), array);
    let result = serde_json::value::to_raw_value(&result).ok()?;
    message.insert("result".to_owned(), result);
    serde_json::to_string(&message).ok()
}

/// Rewrites a whole `text/event-stream` body: every event whose data is a matching response
/// ([`rewrite_document`]) gets the rewritten data in one `data:` line where its first `data:`
/// line was; all other lines are kept byte for byte. `None` when no event changed.
pub fn rewrite_sse(
    body: &[u8],
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite,
) -> Option<Vec<u8>> {
    let lines = split_lines(body);
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut changed = false;
    let mut start = 0;
    while start < lines.len() {
        // One event: lines up to and including the blank line that ends it.
        let end = lines
            .iter()
            .skip(start)
            .position(|(line, _)| line.is_empty())
            .map_or(lines.len(), |p| start + p + 1);
        let event = lines.get(start..end).unwrap_or_default();
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
        start = end;
    }
    changed.then_some(out)
}

/// Longest incomplete SSE event a server stream holds back for curation, in bytes; a longer
/// one is passed on as it is (README "Curated tool surfaces").
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
        match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
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

fn rewrite_event(
    event: &[Line<'_>],
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite,
) -> Option<Vec<u8>> {
    let mut data: Vec<u8> = Vec::new();
    let mut first_data: Option<usize> = None;
    for (i, value) in event
        .iter()
        .enumerate()
        .filter_map(|(i, (line, _))| Some((i, data_value(line)?)))
    {
        if first_data.is_some() {
            data.push(b'\n');
        }
        first_data.get_or_insert(i);
        data.extend_from_slice(value);
    }
    let first = first_data?;
    let text = std::str::from_utf8(&data).ok()?;
    let new = rewrite_document(text, kind, ids, keep, stats)?;
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
                ("echo".to_owned(), ToolHints::default()),
                ("delete_repo".to_owned(), destructive)
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
}
