//! Curation of a whole `text/event-stream` list response: each event's data is one
//! JSON-RPC document ([`super::rewrite_document`]), rewritten in place.

use super::{rewrite_document, Id, ListKind, Rewrite};
use crate::sse::{self, Line};
use std::borrow::Cow;

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
    let lines = sse::split_lines(body);
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut changed = false;
    for event in sse::events(&lines) {
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
    }
    changed.then_some(out)
}

/// Rewrites one complete SSE event (its lines) whose data is a matching list response: the
/// rewritten document in one `data:` line where the first was, every other line kept. `None`
/// when the event carries no such response.
pub(super) fn rewrite_event<'a>(
    event: &[Line<'a>],
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite<'a>,
) -> Option<Vec<u8>> {
    let mut data_lines = event
        .iter()
        .enumerate()
        .filter_map(|(i, (line, _))| Some((i, sse::data_value(line)?)));
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
            let mut local = Rewrite {
                learn_params: stats.learn_params,
                ..Rewrite::default()
            };
            let new = rewrite_document(text, kind, ids, keep, &mut local);
            stats.kept += local.kept;
            stats.removed += local.removed;
            stats.tools_seen.extend(
                local
                    .tools_seen
                    .into_iter()
                    .map(|(name, hints)| (Cow::Owned(name.into_owned()), hints)),
            );
            stats.params_seen.extend(
                local
                    .params_seen
                    .into_iter()
                    .map(|(name, learned)| (Cow::Owned(name.into_owned()), learned)),
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
        } else if sse::data_value(line).is_none() {
            out.extend_from_slice(line);
            out.extend_from_slice(ending);
        }
    }
    Some(out)
}
