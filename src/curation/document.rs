//! Curation of one JSON-RPC document (an `application/json` body, or one SSE event's data):
//! the list array of the matching response is framed with [`crate::json`], each entry's
//! `name` / `uri` / `annotations` decoded, and only the entries the agent may use are kept,
//! byte for byte.

use super::{Id, Keep, ListKind, CACHE_SCOPE};
use crate::json;
use crate::mcp;
use crate::params::{self, Learned};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;

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
    /// Set by the caller: read each tool's `inputSchema` for `x-mcp-header` markings
    /// (`crate::params`) into `params_seen`.
    pub learn_params: bool,
    /// With `learn_params`, every tool of a `tools/list` response seen (kept or not), with
    /// what its `inputSchema` says about `Mcp-Param-*` headers (a tool with two `inputSchema`
    /// members is [`Learned::Invalid`]: readers would disagree on its schema).
    pub params_seen: Vec<(Cow<'a, str>, Learned)>,
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
    keep: &dyn Keep,
    stats: &mut Rewrite<'a>,
) -> Option<String> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('[') {
        return rewrite_message(text, kind, ids, keep, stats);
    }
    let b = text.as_bytes();
    let open = json::skip_ws(b, 0);
    if b.get(open) != Some(&b'[') {
        return None; // leading whitespace JSON does not allow
    }
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut batch = json::Seq::array(b, open);
    while let Some((_, start)) = batch.next().ok()? {
        let end = batch.skip_value(start).ok()?;
        spans.push((start, end));
    }
    if json::skip_ws(b, batch.pos()) != b.len() {
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
    /// The counters and the lengths of `tools_seen` and `params_seen`, to undo a rewrite that
    /// is abandoned.
    fn mark(&self) -> (usize, usize, usize, usize) {
        (
            self.kept,
            self.removed,
            self.tools_seen.len(),
            self.params_seen.len(),
        )
    }

    fn reset(&mut self, (kept, removed, seen, params): (usize, usize, usize, usize)) {
        self.kept = kept;
        self.removed = removed;
        self.tools_seen.truncate(seen);
        self.params_seen.truncate(params);
    }
}

/// The framed path ([`rewrite_framed`]) met a shape it leaves to the parsed path (a duplicated
/// or escaped member name around the list).
struct Bail;

fn rewrite_message<'a>(
    text: &'a str,
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Keep,
    stats: &mut Rewrite<'a>,
) -> Option<String> {
    match rewrite_framed(text, kind, ids, keep, stats) {
        Ok(out) => out,
        Err(Bail) => rewrite_parsed(text, kind, ids, keep, stats),
    }
}

/// [`rewrite_message`] by framing: the list array's entries are located with
/// [`crate::json`], the message with the array replaced by `[]` is parsed by
/// serde_json (small), and only each entry's `name`/`uri`/`annotations` are decoded. Gives
/// the same output as [`rewrite_parsed`] on valid JSON; `Err(Bail)` before any side effect
/// when the message has a duplicated or escaped member name on the path to the list.
fn rewrite_framed<'a>(
    text: &'a str,
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Keep,
    stats: &mut Rewrite<'a>,
) -> Result<Option<String>, Bail> {
    let b = text.as_bytes();
    let open = json::skip_ws(b, 0);
    if b.get(open) != Some(&b'{') {
        return Ok(None); // not an object: no list to curate
    }
    let want = kind.array().as_bytes();
    let (mut seen_id, mut seen_result) = (false, false);
    let mut array: Option<(usize, usize)> = None;
    let mut entries: Vec<Entry> = Vec::with_capacity(32);
    // Framing errors mean the text is not JSON: the parsed path would say `None` too.
    let mut top = json::Seq::object(b, open);
    loop {
        let Ok(next) = top.next() else {
            return Ok(None);
        };
        let Some((key, start)) = next else { break };
        let key = key.and_then(json::plain_key).ok_or(Bail)?;
        if key == b"id" {
            if std::mem::replace(&mut seen_id, true) {
                return Err(Bail);
            }
        } else if key == b"result" {
            if std::mem::replace(&mut seen_result, true) {
                return Err(Bail);
            }
            if b.get(start) == Some(&b'{') {
                let mut result = json::Seq::object(b, start);
                let mut seen_array = false;
                loop {
                    let Ok(next) = result.next() else {
                        return Ok(None);
                    };
                    let Some((key, vstart)) = next else { break };
                    let key = key.and_then(json::plain_key).ok_or(Bail)?;
                    if key == want {
                        if std::mem::replace(&mut seen_array, true) {
                            return Err(Bail);
                        }
                        if b.get(vstart) == Some(&b'[') {
                            let mut list = json::Seq::array(b, vstart);
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
    if json::skip_ws(b, top.pos()) != b.len() {
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
        let learn = stats.learn_params && kind == ListKind::Tools;
        if curate_entry(read_named(text, &framed, learn), entry, kind, keep, stats) {
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
    let private = PRIVATE.with(Box::clone);
    if shareable(result.get(CACHE_SCOPE).copied()) {
        result.insert(CACHE_SCOPE.to_owned(), &private);
    }
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

/// A tool's input schema member (MCP "Tools", `Tool.inputSchema`).
const INPUT_SCHEMA: &str = "inputSchema";

/// Where [`frame_entry`] keeps a member of an entry: `name`, `uri`, `annotations`,
/// `inputSchema` (by decoded name), or `None` for any other member.
#[inline]
fn entry_slot(name: &[u8]) -> Option<usize> {
    if name == mcp::NAME.as_bytes() {
        Some(0)
    } else if name == mcp::URI.as_bytes() {
        Some(1)
    } else if name == mcp::ANNOTATIONS.as_bytes() {
        Some(2)
    } else if name == INPUT_SCHEMA.as_bytes() {
        Some(3)
    } else {
        None
    }
}

/// One entry of a framed list: its span and, for an object, the spans of its `name`, `uri`
/// and `annotations` values (`members` is `None` when one of them is duplicated or the entry
/// is not an object: serde then decides), and of its `inputSchema` (the last one, with
/// `schema_repeated` when there were more).
struct Entry {
    start: usize,
    end: usize,
    members: Option<[Option<(usize, usize)>; 3]>,
    schema: Option<(usize, usize)>,
    schema_repeated: bool,
}

/// What an entry's `inputSchema` says about `Mcp-Param-*` headers (`text`: what the entry's
/// spans index).
fn entry_params(text: &str, entry: &Entry) -> Learned {
    if entry.schema_repeated {
        return Learned::Invalid("the tool has two inputSchema members");
    }
    params::schema_markings(entry.schema.and_then(|(s, e)| text.get(s..e)))
}

/// Frames the list entry starting at `start`: its end and, for an object, where its `name`,
/// `uri` and `annotations` values are (one pass over the entry). `None` when it cannot be
/// framed (not JSON).
fn frame_entry(b: &[u8], start: usize) -> Option<Entry> {
    if b.get(start) != Some(&b'{') {
        let end = json::value_end(b, start).filter(|&end| end > start)?;
        return Some(Entry {
            start,
            end,
            members: None,
            schema: None,
            schema_repeated: false,
        });
    }
    let mut found: [Option<(usize, usize)>; 3] = [None; 3];
    let (mut schema, mut schema_repeated) = (None, false);
    let mut duplicate = false;
    let mut members = json::Seq::object(b, start);
    while let Some((key, vstart)) = members.next().ok()? {
        let vend = members.skip_value(vstart).ok()?;
        // A plain name (the usual case) is compared as it is; an escaped one decoded first.
        let slot = match key.and_then(json::plain_key) {
            Some(plain) => entry_slot(plain),
            None => key.and_then(json::key_name).and_then(|n| entry_slot(&n)),
        };
        let Some(slot) = slot else {
            continue;
        };
        if slot == 3 {
            schema_repeated |= schema.replace((vstart, vend)).is_some();
            continue;
        }
        if let Some(slot) = found.get_mut(slot) {
            duplicate |= slot.replace((vstart, vend)).is_some();
        }
    }
    Some(Entry {
        start,
        end: members.pos(),
        members: (!duplicate).then_some(found),
        schema,
        schema_repeated,
    })
}

/// Decides one list entry from what was read of it (`None`: not an object with readable
/// names): records a tool's hints, counts it, and says whether it is kept. An entry whose name
/// cannot be read is removed. Both the framed and the parsed path decide here.
fn curate_entry<'a>(
    named: Option<NamedRef<'a>>,
    entry: &str,
    kind: ListKind,
    keep: &dyn Keep,
    stats: &mut Rewrite<'a>,
) -> bool {
    if let (
        ListKind::Tools,
        Some(NamedRef {
            name: Some(name),
            annotations,
            params,
            ..
        }),
    ) = (kind, &named)
    {
        stats
            .tools_seen
            .push((name.clone(), annotations.unwrap_or_default()));
        if let Some(params) = params {
            stats.params_seen.push((name.clone(), params.clone()));
        }
    }
    let name = named.and_then(|n| match kind {
        ListKind::Resources => n.uri,
        ListKind::Tools | ListKind::Prompts => n.name,
    });
    match name {
        Some(name) if keep.keep(&name, entry) => {
            stats.kept += 1;
            true
        }
        _ => {
            stats.removed += 1;
            false
        }
    }
}

thread_local! {
    /// The raw JSON `"private"`.
    static PRIVATE: Box<RawValue> = RawValue::from_string("\"private\"".to_owned())
        .unwrap_or_else(|_| RawValue::NULL.to_owned());
}

/// Whether a curated result's `cacheScope` must be rewritten: present and not the string
/// `"private"`. A curated list is specific to its agent and never leaves shareable.
fn shareable(scope: Option<&RawValue>) -> bool {
    scope.is_some_and(|raw| {
        serde_json::from_str::<String>(raw.get()).ok().as_deref() != Some("private")
    })
}

/// [`Named`], borrowing the names when they have no escapes; `params`: what the entry's
/// `inputSchema` says (read only when asked for).
struct NamedRef<'a> {
    name: Option<Cow<'a, str>>,
    uri: Option<Cow<'a, str>>,
    annotations: Option<ToolHints>,
    params: Option<Learned>,
}

impl From<Named> for NamedRef<'_> {
    fn from(n: Named) -> Self {
        NamedRef {
            name: n.name.map(Cow::Owned),
            uri: n.uri.map(Cow::Owned),
            annotations: n.annotations,
            params: None,
        }
    }
}

/// What `serde_json::from_str::<Named>(entry).ok()` reads for a framed entry: `None` when a
/// member is duplicated or has the wrong type. For an object only `name`, `uri` and
/// `annotations` are decoded (and, with `learn`, `inputSchema` read for markings); any other
/// entry is parsed.
fn read_named<'a>(text: &'a str, entry: &Entry, learn: bool) -> Option<NamedRef<'a>> {
    let params = learn.then(|| entry_params(text, entry));
    let Some([name, uri, annotations]) = entry.members else {
        let named = serde_json::from_str::<Named>(text.get(entry.start..entry.end)?).ok()?;
        return Some(NamedRef {
            name: named.name.map(Cow::Owned),
            uri: named.uri.map(Cow::Owned),
            annotations: named.annotations,
            params,
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
        params,
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
    keep: &dyn Keep,
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
    let learn = stats.learn_params && kind == ListKind::Tools;
    for entry in entries {
        let named = serde_json::from_str::<Named>(entry.get()).ok();
        let named = named.map(|named| {
            let mut named = NamedRef::from(named);
            if learn {
                let text = entry.get();
                named.params = frame_entry(text.as_bytes(), json::skip_ws(text.as_bytes(), 0))
                    .map(|framed| entry_params(text, &framed));
            }
            named
        });
        if curate_entry(named, entry.get(), kind, keep, stats) {
            kept.push(entry);
        }
    }
    let array = serde_json::value::to_raw_value(&kept).ok()?;
    result.insert(kind.array().to_owned(), array);
    if shareable(result.get(CACHE_SCOPE).map(AsRef::as_ref)) {
        result.insert(CACHE_SCOPE.to_owned(), PRIVATE.with(Box::clone));
    }
    let result = serde_json::value::to_raw_value(&result).ok()?;
    message.insert("result".to_owned(), result);
    serde_json::to_string(&message).ok()
}
