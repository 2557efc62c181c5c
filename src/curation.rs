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

use crate::jsonrpc::frame::{self, Seq};
use crate::jsonrpc::Id;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
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

/// What a rewrite did; tool names borrow from the rewritten text when they have no escapes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite<'a> {
    /// Entries kept.
    pub kept: usize,
    /// Entries removed.
    pub removed: usize,
    /// Every tool of a `tools/list` response seen (kept or not), with its hints.
    pub tools_seen: Vec<(Cow<'a, str>, ToolHints)>,
}

/// Rewrites one JSON-RPC document (a message or a batch array): in each response whose id is
/// in `ids`, keeps the entries of `result.<list>` for which `keep(name)` holds. `None` when
/// nothing in the document is such a response (the caller keeps the original bytes), or when
/// the document is not valid JSON (RFC 8259) as far as it is kept.
///
/// The rewritten document is compact JSON with each object's members in key order (as
/// serde_json writes a map), duplicate members resolved last-wins, and every kept entry
/// copied byte for byte. The list array is framed, not parsed: only each entry's `name`,
/// `uri` and `annotations` members are decoded, and serde_json checks everything that is
/// written out (the message around the list and the kept entries); the bytes of removed
/// entries are not validated, since none of them reaches the client.
pub fn rewrite_document<'a>(
    text: &'a str,
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite<'a>,
) -> Option<String> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('[') {
        return rewrite_message(text, kind, ids, keep, stats);
    }
    let b = text.as_bytes();
    let open = frame::skip_ws(b, 0);
    if b.get(open) != Some(&b'[') {
        return None; // leading whitespace JSON does not allow
    }
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut batch = Seq::array(b, open);
    while let Some((_, start)) = batch.next().ok()? {
        let end = batch.skip_value(start).ok()?;
        spans.push((start, end));
    }
    if frame::skip_ws(b, batch.pos()) != b.len() {
        return None;
    }
    let before = stats.mark();
    let mut changed = false;
    let mut out = String::with_capacity(text.len());
    out.push('[');
    for (i, &(start, end)) in spans.iter().enumerate() {
        let element = text.get(start..end)?;
        if i > 0 {
            out.push(',');
        }
        match rewrite_message(element, kind, ids, keep, stats) {
            Some(new) => {
                changed = true;
                out.push_str(&new);
            }
            // Kept as it is: it must be valid JSON, as the whole batch had to be.
            None if serde_json::from_str::<serde::de::IgnoredAny>(element).is_ok() => {
                out.push_str(element);
            }
            None => {
                stats.reset(before);
                return None;
            }
        }
    }
    out.push(']');
    changed.then_some(out)
}

impl Rewrite<'_> {
    /// The counters and the length of `tools_seen`, to undo a rewrite that is abandoned.
    fn mark(&self) -> (usize, usize, usize) {
        (self.kept, self.removed, self.tools_seen.len())
    }

    fn reset(&mut self, (kept, removed, seen): (usize, usize, usize)) {
        self.kept = kept;
        self.removed = removed;
        self.tools_seen.truncate(seen);
    }
}

/// The framed path ([`rewrite_framed`]) met a shape it leaves to the parsed path (a duplicated
/// or escaped member name around the list).
struct Bail;

fn rewrite_message<'a>(
    text: &'a str,
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite<'a>,
) -> Option<String> {
    match rewrite_framed(text, kind, ids, keep, stats) {
        Ok(out) => out,
        Err(Bail) => rewrite_parsed(text, kind, ids, keep, stats),
    }
}

/// [`rewrite_message`] by framing: the list array's entries are located with
/// [`crate::jsonrpc::frame`], the message with the array replaced by `[]` is parsed by
/// serde_json (small), and only each entry's `name`/`uri`/`annotations` are decoded. Gives
/// the same output as [`rewrite_parsed`] on valid JSON; `Err(Bail)` before any side effect
/// when the message has a duplicated or escaped member name on the path to the list.
fn rewrite_framed<'a>(
    text: &'a str,
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite<'a>,
) -> Result<Option<String>, Bail> {
    let b = text.as_bytes();
    let open = frame::skip_ws(b, 0);
    if b.get(open) != Some(&b'{') {
        return Ok(None); // not an object: no list to curate
    }
    let want = kind.array().as_bytes();
    let (mut seen_id, mut seen_result) = (false, false);
    let mut array: Option<(usize, usize)> = None;
    let mut entries: Vec<Entry> = Vec::with_capacity(32);
    // Framing errors mean the text is not JSON: the parsed path would say `None` too.
    let mut top = Seq::object(b, open);
    loop {
        let Ok(next) = top.next() else {
            return Ok(None);
        };
        let Some((key, start)) = next else { break };
        let key = key.and_then(frame::plain_key).ok_or(Bail)?;
        if key == b"id" {
            if std::mem::replace(&mut seen_id, true) {
                return Err(Bail);
            }
        } else if key == b"result" {
            if std::mem::replace(&mut seen_result, true) {
                return Err(Bail);
            }
            if b.get(start) == Some(&b'{') {
                let mut result = Seq::object(b, start);
                let mut seen_array = false;
                loop {
                    let Ok(next) = result.next() else {
                        return Ok(None);
                    };
                    let Some((key, vstart)) = next else { break };
                    let key = key.and_then(frame::plain_key).ok_or(Bail)?;
                    if key == want {
                        if std::mem::replace(&mut seen_array, true) {
                            return Err(Bail);
                        }
                        if b.get(vstart) == Some(&b'[') {
                            let mut list = Seq::array(b, vstart);
                            loop {
                                let Ok(next) = list.next() else {
                                    return Ok(None);
                                };
                                let Some((_, estart)) = next else { break };
                                let Some(entry) = frame_entry(b, estart) else {
                                    return Ok(None);
                                };
                                list.resume(entry.end);
                                entries.push(entry);
                            }
                            array = Some((vstart, list.pos()));
                            result.resume(list.pos());
                            continue;
                        }
                    }
                    if result.skip_value(vstart).is_err() {
                        return Ok(None);
                    }
                }
                top.resume(result.pos());
                continue;
            }
        }
        if top.skip_value(start).is_err() {
            return Ok(None);
        }
    }
    if frame::skip_ws(b, top.pos()) != b.len() {
        return Ok(None);
    }
    // No result object or no list array in it: nothing to curate.
    let Some((array_start, array_end)) = array else {
        return Ok(None);
    };
    let (Some(head), Some(tail)) = (text.get(..array_start), text.get(array_end..)) else {
        return Ok(None);
    };
    let mut skeleton = String::with_capacity(head.len() + 2 + tail.len());
    skeleton.push_str(head);
    skeleton.push_str("[]");
    skeleton.push_str(tail);
    // Everything but the list entries, checked and read as the parsed path reads it.
    let Ok(mut message) = serde_json::from_str::<BTreeMap<String, &RawValue>>(&skeleton) else {
        return Ok(None);
    };
    let Some(id) = message.get("id").and_then(|raw| Id::from_raw(raw.get())) else {
        return Ok(None);
    };
    if !ids.contains(&id) {
        return Ok(None);
    }
    let Some(result) = message.get("result") else {
        return Ok(None);
    };
    let Ok(mut result) = serde_json::from_str::<BTreeMap<String, &RawValue>>(result.get()) else {
        return Ok(None);
    };

    let before = stats.mark();
    let mut kept = String::with_capacity(64 + (array_end - array_start) / 8);
    kept.push('[');
    for framed in entries {
        let Some(entry) = text.get(framed.start..framed.end) else {
            continue;
        };
        if curate_entry(read_named(text, &framed), kind, keep, stats) {
            if kept.len() > 1 {
                kept.push(',');
            }
            kept.push_str(entry);
        }
    }
    kept.push(']');
    // The kept entries are the only list bytes the client gets: they must be valid JSON.
    let Ok(array) = RawValue::from_string(kept) else {
        stats.reset(before);
        return Ok(None);
    };
    result.insert(kind.array().to_owned(), &array);
    let Ok(result) = serde_json::value::to_raw_value(&result) else {
        stats.reset(before);
        return Ok(None);
    };
    message.insert("result".to_owned(), &result);
    match serde_json::to_string(&message) {
        Ok(out) => Ok(Some(out)),
        Err(_) => {
            stats.reset(before);
            Ok(None)
        }
    }
}

/// One entry of a framed list: its span and, for an object, the spans of its `name`, `uri`
/// and `annotations` values (`members` is `None` when a member is duplicated or the entry is
/// not an object: serde then decides).
struct Entry {
    start: usize,
    end: usize,
    members: Option<[Option<(usize, usize)>; 3]>,
}

/// Frames the list entry starting at `start`: its end and, for an object, where its `name`,
/// `uri` and `annotations` values are (one pass over the entry). `None` when it cannot be
/// framed (not JSON).
fn frame_entry(b: &[u8], start: usize) -> Option<Entry> {
    if b.get(start) != Some(&b'{') {
        let end = frame::value_end(b, start).filter(|&end| end > start)?;
        return Some(Entry {
            start,
            end,
            members: None,
        });
    }
    let mut found: [Option<(usize, usize)>; 3] = [None; 3];
    let mut duplicate = false;
    let mut members = Seq::object(b, start);
    while let Some((key, vstart)) = members.next().ok()? {
        let vend = members.skip_value(vstart).ok()?;
        let slot = match key.and_then(frame::plain_key) {
            Some(b"name") => 0,
            Some(b"uri") => 1,
            Some(b"annotations") => 2,
            Some(_) => continue,
            None => match key
                .and_then(|k| serde_json::from_slice::<String>(k).ok())
                .as_deref()
            {
                Some("name") => 0,
                Some("uri") => 1,
                Some("annotations") => 2,
                _ => continue,
            },
        };
        if let Some(slot) = found.get_mut(slot) {
            duplicate |= slot.replace((vstart, vend)).is_some();
        }
    }
    Some(Entry {
        start,
        end: members.pos(),
        members: (!duplicate).then_some(found),
    })
}

/// Decides one list entry from what was read of it (`None`: not an object with readable
/// names): records a tool's hints, counts it, and says whether it is kept. An entry whose name
/// cannot be read is removed. Both the framed and the parsed path decide here.
fn curate_entry<'a>(
    named: Option<NamedRef<'a>>,
    kind: ListKind,
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite<'a>,
) -> bool {
    if let (
        ListKind::Tools,
        Some(NamedRef {
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
            true
        }
        _ => {
            stats.removed += 1;
            false
        }
    }
}

/// [`Named`], borrowing the names when they have no escapes.
struct NamedRef<'a> {
    name: Option<Cow<'a, str>>,
    uri: Option<Cow<'a, str>>,
    annotations: Option<ToolHints>,
}

impl From<Named> for NamedRef<'_> {
    fn from(n: Named) -> Self {
        NamedRef {
            name: n.name.map(Cow::Owned),
            uri: n.uri.map(Cow::Owned),
            annotations: n.annotations,
        }
    }
}

/// What `serde_json::from_str::<Named>(entry).ok()` reads for a framed entry: `None` when a
/// member is duplicated or has the wrong type. For an object only `name`, `uri` and
/// `annotations` are decoded; any other entry is parsed.
fn read_named<'a>(text: &'a str, entry: &Entry) -> Option<NamedRef<'a>> {
    let Some([name, uri, annotations]) = entry.members else {
        let named = serde_json::from_str::<Named>(text.get(entry.start..entry.end)?).ok()?;
        return Some(NamedRef {
            name: named.name.map(Cow::Owned),
            uri: named.uri.map(Cow::Owned),
            annotations: named.annotations,
        });
    };
    let raw = |span: Option<(usize, usize)>| span.and_then(|(s, e)| text.get(s..e));
    let annotations = match raw(annotations) {
        None | Some("null") => None,
        Some(raw) => Some(serde_json::from_str::<ToolHints>(raw).ok()?),
    };
    Some(NamedRef {
        name: named_string(raw(name))?,
        uri: named_string(raw(uri))?,
        annotations,
    })
}

/// An `Option<String>` member as serde reads it from its raw JSON (absent or `null`: `None`);
/// the outer `None` when it is neither a string nor `null`.
fn named_string(raw: Option<&str>) -> Option<Option<Cow<'_, str>>> {
    match raw {
        None | Some("null") => Some(None),
        Some(raw) if raw.starts_with('"') => match raw.get(1..raw.len() - 1) {
            Some(inner) if !inner.bytes().any(|c| c == b'\\') => Some(Some(Cow::Borrowed(inner))),
            _ => serde_json::from_str::<String>(raw)
                .ok()
                .map(|s| Some(Cow::Owned(s))),
        },
        Some(_) => None,
    }
}

/// [`rewrite_message`] by parsing the whole message with serde_json (the general path: any
/// shape, duplicated and escaped member names included).
fn rewrite_parsed<'a>(
    text: &'a str,
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite<'a>,
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
        if curate_entry(named.map(NamedRef::from), kind, keep, stats) {
            kept.push(entry);
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
pub fn rewrite_sse<'a>(
    body: &'a [u8],
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite<'a>,
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
        match memchr::memchr2(b'\n', b'\r', rest) {
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

fn rewrite_event<'a>(
    event: &[Line<'a>],
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite<'a>,
) -> Option<Vec<u8>> {
    let mut data_lines = event
        .iter()
        .enumerate()
        .filter_map(|(i, (line, _))| Some((i, data_value(line)?)));
    let (first, first_value) = data_lines.next()?;
    // One data line (the usual case) is the data itself; more are joined with LF (and the
    // names read from that copy are copied out).
    let new = match data_lines.next() {
        None => rewrite_document(
            std::str::from_utf8(first_value).ok()?,
            kind,
            ids,
            keep,
            stats,
        )?,
        Some((_, second)) => {
            let mut d = Vec::with_capacity(first_value.len() + 1 + second.len());
            d.extend_from_slice(first_value);
            d.push(b'\n');
            d.extend_from_slice(second);
            for (_, value) in data_lines {
                d.push(b'\n');
                d.extend_from_slice(value);
            }
            let text = std::str::from_utf8(&d).ok()?;
            let mut local = Rewrite::default();
            let new = rewrite_document(text, kind, ids, keep, &mut local);
            stats.kept += local.kept;
            stats.removed += local.removed;
            stats.tools_seen.extend(
                local
                    .tools_seen
                    .into_iter()
                    .map(|(name, hints)| (Cow::Owned(name.into_owned()), hints)),
            );
            new?
        }
    };
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
                ("echo".into(), ToolHints::default()),
                ("delete_repo".into(), destructive)
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

    /// The rewrite before framing (every message parsed whole), as the reference.
    fn reference<'a>(
        text: &'a str,
        kind: ListKind,
        ids: &[Id],
        keep: &dyn Fn(&str) -> bool,
        stats: &mut Rewrite<'a>,
    ) -> Option<String> {
        if text.trim_start().starts_with('[') {
            let elements: Vec<&RawValue> = serde_json::from_str(text).ok()?;
            let mut changed = false;
            let mut out: Vec<String> = Vec::with_capacity(elements.len());
            for element in elements {
                match rewrite_parsed(element.get(), kind, ids, keep, stats) {
                    Some(new) => {
                        changed = true;
                        out.push(new);
                    }
                    None => out.push(element.get().to_owned()),
                }
            }
            changed.then(|| format!("[{}]", out.join(",")))
        } else {
            rewrite_parsed(text, kind, ids, keep, stats)
        }
    }

    fn inputs() -> Vec<(String, ListKind)> {
        let bench = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/data/list_response.json"),
        )
        .unwrap();
        let mut v: Vec<(String, ListKind)> = vec![
            (TOOLS.to_owned(), ListKind::Tools),
            (bench, ListKind::Tools),
            (
                r#" { "result" : { "tools" : [ { "name" : "echo" } , { "name" : "x" } , ["echo"], ["echo", null, null, 1], "echo", null, {"name":null}, {"name":"ec\u0068o","annotations":null}, {"n\u0061me":"echo"}, {"name":"echo","name":"echo"}, {"name":"echo","annotations":{"readOnlyHint":true,"x":[1,{"a":"]"}]}}, {"name":"echo","annotations":{"readOnlyHint":"yes"}}, {"name":"echo","annotations":[true]}, {"name":"echo","uri":7}, {"name":"echo\"}]"} ] , "nextCursor" : "n" } , "id" : 3 , "jsonrpc" : "2.0" } "#.to_owned(),
                ListKind::Tools,
            ),
            (r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"echo"}],"tools":[{"name":"echo"},{"name":"y"}]}}"#.to_owned(), ListKind::Tools),
            (r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"y"}]},"result":{"tools":[{"name":"echo"},{"name":"y"}]}}"#.to_owned(), ListKind::Tools),
            (r#"{"jsonrpc":"2.0","id":3,"id":4,"result":{"tools":[{"name":"echo"},{"name":"y"}]}}"#.to_owned(), ListKind::Tools),
            (r#"{"jsonrpc":"2.0","i\u0064":3,"r\u0065sult":{"t\u006fols":[{"name":"echo"},{"name":"y"}],"\n":1}}"#.to_owned(), ListKind::Tools),
            (r#"{"jsonrpc":"2.0","id":"3","result":{"tools":[{"name":"echo"}]}}"#.to_owned(), ListKind::Tools),
            (r#"{"jsonrpc":"2.0","id":3,"result":{"tools":{"name":"echo"}}}"#.to_owned(), ListKind::Tools),
            (r#"{"jsonrpc":"2.0","id":3,"result":[{"tools":[]}]}"#.to_owned(), ListKind::Tools),
            (r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[]}}"#.to_owned(), ListKind::Tools),
            (r#"{"jsonrpc":"2.0","id":3,"result":{"prompts":[{"name":"greet"},{"name":"echo","arguments":[]}]}}"#.to_owned(), ListKind::Prompts),
            (r#"[{"jsonrpc":"2.0","id":3,"result":{"resources":[{"uri":"demo://a","name":"a"},{"uri":"file:///etc/passwd"},{"uri":"demo://b","name":5}]}} , {"jsonrpc":"2.0","method":"notifications/resources/list_changed"}, 7 ]"#.to_owned(), ListKind::Resources),
            (r#"[{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"echo"}]}},{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"echo"},{"name":"z"}]}}]"#.to_owned(), ListKind::Tools),
            (r#"{"id":3,"result":{"tools":[{"name":"echo","annotations":{"readOnlyHint":null,"destructiveHint":true}},{"name":"add","annotations":{"readOnlyHint":true,"readOnlyHint":false}},{"name":"a2","annotations":{"destructiveHint":1}},{"name":"a3","annotations":{"r\u0065adOnlyHint":true,"title":"x"}},{"name":"a4","annotations":[true,false]},{"name":"a5","annotations":{"title":{"readOnlyHint":false}}},{"name":"a6","annotations":"x"}]}}"#.to_owned(), ListKind::Tools),
            ("\u{a0}{\"id\":3,\"result\":{\"tools\":[]}}".to_owned(), ListKind::Tools),
            ("\u{a0}[{\"id\":3,\"result\":{\"tools\":[]}}]".to_owned(), ListKind::Tools),
        ];
        // Each with other whitespace between the tokens.
        let spaced: Vec<(String, ListKind)> = v
            .iter()
            .filter(|(t, _)| t.len() < 4000)
            .map(|(t, k)| (t.replace(',', "\r\n,\t").replace(':', " :\n"), *k))
            .collect();
        v.extend(spaced);
        v
    }

    fn keep_some(name: &str) -> bool {
        keep_echo(name) || name.starts_with('a') || name.contains("repo")
    }

    #[test]
    fn framing_gives_the_reference_output_on_valid_json() {
        let ids = [Id::Number("3".into()), Id::Number("1".into())];
        let valid = |t: &str| serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok();
        let inputs = inputs();
        assert!(inputs.iter().filter(|(t, _)| valid(t)).count() >= 25);
        for (text, kind) in inputs.into_iter().filter(|(t, _)| valid(t)) {
            let (mut a, mut b) = (Rewrite::default(), Rewrite::default());
            let new = rewrite_document(&text, kind, &ids, &keep_some, &mut a);
            let old = reference(&text, kind, &ids, &keep_some, &mut b);
            assert_eq!(new, old, "{text}");
            assert_eq!(a, b, "{text}");
        }
    }

    /// On damaged JSON the output (if any) is valid JSON showing only allowed entries, and
    /// equals the reference wherever the reference rewrote.
    #[test]
    fn framing_on_damaged_json_never_shows_more() {
        let ids = [Id::Number("3".into())];
        for (text, kind) in inputs().into_iter().filter(|(t, _)| t.len() < 4000) {
            let bytes = text.as_bytes();
            for pos in 0..bytes.len() {
                for edit in [
                    None,
                    Some(b'"'),
                    Some(b'\\'),
                    Some(b'}'),
                    Some(b']'),
                    Some(b','),
                    Some(b'{'),
                ] {
                    let mut damaged = bytes.to_vec();
                    match edit {
                        None => {
                            damaged.remove(pos);
                        }
                        Some(c) => damaged.insert(pos, c),
                    }
                    let Ok(damaged) = String::from_utf8(damaged) else {
                        continue;
                    };
                    let (mut a, mut b) = (Rewrite::default(), Rewrite::default());
                    let new = rewrite_document(&damaged, kind, &ids, &keep_echo, &mut a);
                    let old = reference(&damaged, kind, &ids, &keep_echo, &mut b);
                    if old.is_some() {
                        assert_eq!(new, old, "{damaged}");
                        assert_eq!(a, b, "{damaged}");
                    }
                    if let Some(out) = new {
                        let v: serde_json::Value = serde_json::from_str(&out)
                            .unwrap_or_else(|e| panic!("{damaged} -> {out}: {e}"));
                        let messages = match v {
                            serde_json::Value::Array(v) => v,
                            one => vec![one],
                        };
                        for m in messages.iter().filter(|m| m["id"] == 3) {
                            let Some(list) = m["result"][kind.array()].as_array() else {
                                continue;
                            };
                            for entry in list {
                                let name = match kind {
                                    ListKind::Resources => &entry["uri"],
                                    _ => &entry["name"],
                                };
                                assert!(
                                    name.as_str().is_some_and(keep_echo) || entry.is_array(),
                                    "{damaged} -> {out}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
