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
use std::collections::BTreeMap;

/// What [`curate_listen_events`] did to a run of complete SSE events.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListenCuration {
    /// The events the client gets instead, when any was dropped or rewritten.
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
/// The acknowledgement (`notifications/subscriptions/acknowledged`) loses the URIs of its
/// `resourceSubscriptions` the agent may not read ([`rewrite_ack_event`]): no update about them
/// will reach it. Every other event (`notifications/*/list_changed`, `notifications/tasks`, the
/// final `subscriptions/listen` response, comments, priming events) passes as it is.
pub fn curate_listen_events(data: &[u8], may_read: &dyn Fn(&str) -> bool) -> ListenCuration {
    let lines = sse::split_lines(data);
    let mut out: Vec<u8> = Vec::with_capacity(data.len());
    let mut dropped = 0;
    let mut rewritten = false;
    let mut acknowledged = false;
    for event in sse::events(&lines) {
        let mut ack = false;
        if !keep_event(event, may_read, &mut ack) {
            dropped += 1;
            continue;
        }
        acknowledged |= ack;
        match ack.then(|| rewrite_ack_event(event, may_read)).flatten() {
            Some(bytes) => {
                rewritten = true;
                out.extend_from_slice(&bytes);
            }
            None => {
                for (line, ending) in event {
                    out.extend_from_slice(line);
                    out.extend_from_slice(ending);
                }
            }
        }
    }
    ListenCuration {
        body: (dropped > 0 || rewritten).then_some(out),
        dropped,
        acknowledged,
    }
}

/// The acknowledgement event with the URIs of `params.notifications.resourceSubscriptions` the
/// agent may not read (or that are not strings) removed, so that the filter the client is told
/// the subscription honours is the one it gets: the data in one `data:` line where the first
/// was, every other line kept. `None` when nothing is removed (or the data is not one message
/// of that shape: it then passes as it is).
fn rewrite_ack_event(event: &[sse::Line<'_>], may_read: &dyn Fn(&str) -> bool) -> Option<Vec<u8>> {
    let data = sse::event_data(event)?;
    let new = rewrite_ack(std::str::from_utf8(&data).ok()?, may_read)?;
    sse::with_data(event, new.as_bytes())
}

/// [`rewrite_ack_event`] for the message text: compact JSON, members in key order, each
/// object on the path written once (so no reader finds another list).
fn rewrite_ack(text: &str, may_read: &dyn Fn(&str) -> bool) -> Option<String> {
    type Object = BTreeMap<String, Box<RawValue>>;
    let mut message: Object = serde_json::from_str(text).ok()?;
    let mut params: Object = serde_json::from_str(message.get("params")?.get()).ok()?;
    let mut filter: Object = serde_json::from_str(params.get(NOTIFICATIONS)?.get()).ok()?;
    let uris: Vec<&RawValue> =
        serde_json::from_str(filter.get(RESOURCE_SUBSCRIPTIONS)?.get()).ok()?;
    let kept: Vec<&RawValue> = uris
        .iter()
        .copied()
        .filter(|uri| serde_json::from_str::<String>(uri.get()).is_ok_and(|uri| may_read(&uri)))
        .collect();
    if kept.len() == uris.len() {
        return None;
    }
    filter.insert(
        RESOURCE_SUBSCRIPTIONS.to_owned(),
        serde_json::value::to_raw_value(&kept).ok()?,
    );
    params.insert(
        NOTIFICATIONS.to_owned(),
        serde_json::value::to_raw_value(&filter).ok()?,
    );
    message.insert(
        "params".to_owned(),
        serde_json::value::to_raw_value(&params).ok()?,
    );
    serde_json::to_string(&message).ok()
}

/// The member of `subscriptions/listen` params and of its acknowledgement holding the
/// subscription filter (MCP 2026-07-28, `SubscriptionFilter`).
const NOTIFICATIONS: &str = "notifications";
/// The member of a subscription filter listing the resource URIs subscribed to.
const RESOURCE_SUBSCRIPTIONS: &str = "resourceSubscriptions";

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
