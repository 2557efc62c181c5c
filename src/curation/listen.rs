//! Curation of a `subscriptions/listen` stream (MCP 2026-07-28, "Subscriptions", SEP-2575): the
//! response to that POST is a long-lived `text/event-stream` of notifications, so it is read
//! event by event as it arrives, never held whole. `notifications/resources/updated` events about
//! a resource the agent may not read are dropped; every other event passes byte for byte.
//!
//! The same filter applies to the server stream of older revisions (the Streamable HTTP GET
//! stream, the legacy HTTP+SSE stream), where `resources/subscribe` has the server send
//! `notifications/resources/updated` (MCP 2024-11-05 … 2025-11-25, "Resources / Subscriptions").

use super::utf8_text;
use crate::json::Members;
use crate::mcp;
use crate::sse;
use serde::Deserialize;
use serde_json::value::RawValue;

/// What [`curate_listen_events`] did to a run of complete SSE events.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListenCuration {
    /// The events the client gets instead, when any was dropped.
    pub body: Option<Vec<u8>>,
    /// How many events were dropped.
    pub dropped: usize,
    /// An event passed on carries `notifications/subscriptions/acknowledged`: the server
    /// opened the subscription.
    pub acknowledged: bool,
}

/// Curates complete SSE events of a notification stream for an agent: `may_read(uri)` says
/// whether the agent may read the resource `uri` (the policy's `resources` lists, as for
/// `resources/read`). An event is dropped (all its lines, up to and including the blank line
/// that ends it) when its data looks like JSON (first character, after JSON whitespace and
/// byte order marks, `{` or `[`) and
///
/// - it is not one UTF-8 JSON document without byte order mark, an object or a batch array of
///   objects, with no member name twice in a message (what cannot be checked is not shown: a
///   reader that keeps the first or the last duplicate could find a notification in it);
/// - or a message's `method` is present and not a string;
/// - or a message is `notifications/resources/updated` (escapes decoded) whose `params` is not
///   an object with no member name twice and a string `uri` the agent may read. A batch with
///   one such message is dropped whole.
///
/// Every other event (`notifications/*/list_changed`, `notifications/subscriptions/acknowledged`,
/// `notifications/tasks`, the final `subscriptions/listen` response, comments, priming events)
/// passes as it is.
pub fn curate_listen_events(data: &[u8], may_read: &dyn Fn(&str) -> bool) -> ListenCuration {
    let lines = sse::split_lines(data);
    let mut out: Vec<u8> = Vec::with_capacity(data.len());
    let mut dropped = 0;
    let mut acknowledged = false;
    for event in sse::events(&lines) {
        if keep_event(event, may_read, &mut acknowledged) {
            for (line, ending) in event {
                out.extend_from_slice(line);
                out.extend_from_slice(ending);
            }
        } else {
            dropped += 1;
        }
    }
    ListenCuration {
        body: (dropped > 0).then_some(out),
        dropped,
        acknowledged,
    }
}

/// Whether one complete SSE event (its lines) may reach the agent; sets `acknowledged` when it
/// does and carries the acknowledgement.
fn keep_event(
    event: &[sse::Line<'_>],
    may_read: &dyn Fn(&str) -> bool,
    acknowledged: &mut bool,
) -> bool {
    let Some(raw) = sse::event_data(event) else {
        return true; // no data: nothing a client dispatches
    };
    let looks_like_json = {
        let text = String::from_utf8_lossy(&raw);
        let rest = text.trim_start_matches([' ', '\t', '\n', '\r', '\u{feff}']);
        rest.starts_with(['{', '['])
    };
    if !looks_like_json {
        return true;
    }
    utf8_text(&raw).is_ok_and(|text| document_keeps(text, may_read, acknowledged).unwrap_or(false))
}

/// [`keep_event`] for an event's data: `None` when it is not one JSON document of objects.
fn document_keeps(
    text: &str,
    may_read: &dyn Fn(&str) -> bool,
    acknowledged: &mut bool,
) -> Option<bool> {
    let mut ack = false;
    let mut de = serde_json::Deserializer::from_str(text);
    let batch = text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('[');
    let keep = if batch {
        let messages = Vec::<&RawValue>::deserialize(&mut de).ok()?;
        let mut keep = !messages.is_empty();
        for m in messages {
            let members = serde_json::from_str::<Members<'_>>(m.get()).ok()?;
            keep &= message_keeps(&members, may_read, &mut ack);
        }
        keep
    } else {
        let members = Members::deserialize(&mut de).ok()?;
        message_keeps(&members, may_read, &mut ack)
    };
    de.end().ok()?;
    *acknowledged |= keep && ack;
    Some(keep)
}

/// Whether one JSON-RPC message (its members) may reach the agent; sets `ack` when it is the
/// subscription's acknowledgement.
fn message_keeps(message: &Members<'_>, may_read: &dyn Fn(&str) -> bool, ack: &mut bool) -> bool {
    if message.has_duplicates() {
        return false;
    }
    let Some(method) = message.get("method") else {
        return true; // a response (the listen request's graceful end) or no message at all
    };
    let Ok(method) = serde_json::from_str::<String>(method) else {
        return false;
    };
    if method != mcp::RESOURCES_UPDATED {
        *ack |= method == mcp::SUBSCRIPTIONS_ACKNOWLEDGED;
        return true;
    }
    let Some(params) = message
        .get("params")
        .and_then(|p| serde_json::from_str::<Members<'_>>(p).ok())
    else {
        return false;
    };
    if params.has_duplicates() {
        return false;
    }
    params
        .get(mcp::URI)
        .and_then(|uri| serde_json::from_str::<String>(uri).ok())
        .is_some_and(|uri| may_read(&uri))
}

/// The offset just after the blank line that ends the first event in `data` (the rest of an
/// event whose start was skipped), or `None` when `data` has none yet. A trailing CR is not
/// taken as a line end (it may be the first half of a CRLF).
pub fn first_event_end(data: &[u8]) -> Option<usize> {
    let usable = if data.last() == Some(&b'\r') {
        data.len().saturating_sub(1)
    } else {
        data.len()
    };
    let mut pos = 0;
    for (line, ending) in sse::split_lines(data.get(..usable).unwrap_or_default()) {
        pos += line.len() + ending.len();
        if line.is_empty() && !ending.is_empty() {
            return Some(pos);
        }
    }
    None
}

/// What must be kept of the skipped bytes `data` of an event (with no blank line in them) to
/// find where that event ends in the bytes that follow: one placeholder byte, then the line
/// ending characters (CR, LF) at the end of `data`, at most two. Prepended to the next chunk,
/// [`first_event_end`] then finds the blank line even when it straddles the chunks.
pub fn skipped_tail(data: &[u8]) -> Vec<u8> {
    let endings = data
        .iter()
        .rev()
        .take(2)
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let mut tail = vec![b'x'];
    tail.extend_from_slice(
        data.get(data.len().saturating_sub(endings)..)
            .unwrap_or_default(),
    );
    tail
}
