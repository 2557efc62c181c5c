//! Curation of a whole `text/event-stream` list response: each event's data is one
//! JSON-RPC document ([`super::rewrite_document`]), rewritten in place.

use super::{rewrite_document, Id, Keep, ListKind, Rewrite};
use crate::sse::{self, Line};
use std::borrow::Cow;

/// Rewrites a whole `text/event-stream` body: every event whose data is a matching response
/// ([`rewrite_document`]) gets the rewritten data in one `data:` line where its first `data:`
/// line was; all other lines are kept byte for byte. `None` when no event changed.
pub fn rewrite_sse<'a>(
    body: &'a [u8],
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Keep,
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
    keep: &dyn Keep,
    stats: &mut Rewrite<'a>,
) -> Option<Vec<u8>> {
    // One data line (the usual case) is the data itself, and names are borrowed from it; more
    // are joined with LF, and the names read from that copy are copied out.
    let new = match sse::event_data(event)? {
        Cow::Borrowed(data) => {
            rewrite_document(std::str::from_utf8(data).ok()?, kind, ids, keep, stats)?
        }
        Cow::Owned(data) => {
            let text = std::str::from_utf8(&data).ok()?;
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
    sse::with_data(event, new.as_bytes())
}
