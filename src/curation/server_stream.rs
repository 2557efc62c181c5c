//! Curation on a server stream (the GET stream, or the legacy HTTP+SSE transport's only
//! stream), where list responses arrive among other traffic: complete events are checked and
//! rewritten as they come.

use super::event_stream::rewrite_event;
use super::{
    id_answers, one_document, utf8_text, Document, Id, Keep, ListKind, Message, Rewrite, Unreadable,
};
use crate::params::Learned;
use crate::sse;
use serde_json::value::RawValue;

/// A list request answered on a server stream (GET; the legacy HTTP+SSE transport's only
/// stream): its kind, its id, and what its agent may use.
pub struct Claimed<'k> {
    /// The list asked for.
    pub kind: ListKind,
    /// The request's id, as the request spelled it.
    pub id: Id,
    /// Whether the agent may use an entry (by name, or URI for resources).
    pub keep: &'k dyn Keep,
}

/// What [`curate_server_stream`] did to a run of complete SSE events.
#[derive(Debug, Default)]
pub struct StreamCuration {
    /// The events the client gets instead, when anything changed.
    pub body: Option<Vec<u8>>,
    /// The lists rewritten (by index into the claimed lists).
    pub rewritten: Vec<usize>,
    /// Why each refused event was refused (at most one reason per event).
    pub refused: Vec<Unreadable>,
    /// What the `inputSchema` of each tool of a rewritten `tools/list` says about `Mcp-Param-*`
    /// headers (`crate::params`), to be learned.
    pub params_seen: Vec<(String, Learned)>,
}

/// Curates the complete SSE events of a server stream under `curate_lists`. Responses to
/// requests POSTed on other streams pass here, so an id that matches none of `claimed` is no
/// fault; but no reader may find a list the agent may not use:
///
/// - an event whose data looks like JSON (its first character, after JSON whitespace and byte
///   order marks, is `{` or `[`) must be one UTF-8 JSON document without BOM, of objects with
///   no duplicated member name ([`Unreadable`] otherwise);
/// - a message with a `result` whose id answers a claimed list request must hold that list as
///   an array, and is rewritten ([`rewrite_event`]); any other message whose `result` has a
///   `tools`, `prompts` or `resources` member (a list answering no list request mcp-guard
///   curates for this stream: another id spelling, an expired request) is refused.
///
/// A refused event is replaced by one SSE `message` event carrying `refusal(why)` (a JSON-RPC
/// error); other events (the legacy `endpoint` event, comments, priming events) pass as they
/// are.
pub fn curate_server_stream(
    data: &[u8],
    claimed: &[Claimed<'_>],
    refusal: &dyn Fn(Unreadable) -> String,
) -> StreamCuration {
    let lines = sse::split_lines(data);
    let mut result = StreamCuration::default();
    let mut out: Vec<u8> = Vec::with_capacity(data.len());
    let mut changed = false;
    for event in sse::events(&lines) {
        let original = || {
            let mut bytes = Vec::new();
            for (line, ending) in event {
                bytes.extend_from_slice(line);
                bytes.extend_from_slice(ending);
            }
            bytes
        };
        let looks_like_json = sse::event_data(event).is_some_and(|raw| {
            let text = String::from_utf8_lossy(&raw);
            let rest = text.trim_start_matches([' ', '\t', '\n', '\r', '\u{feff}']);
            rest.starts_with(['{', '['])
        });
        if !looks_like_json {
            out.extend(original());
            continue;
        }
        let checked = sse::event_data(event)
            .ok_or(Unreadable::Shape)
            .and_then(|raw| check_stream_document(&raw, claimed));
        let replaced = match checked {
            Ok(lists) if lists.is_empty() => None,
            Ok(lists) => {
                let mut bytes = original();
                let mut failed = false;
                for &j in &lists {
                    let Some(list) = claimed.get(j) else { continue };
                    let split = sse::split_lines(&bytes);
                    let mut stats = Rewrite {
                        learn_params: list.kind == ListKind::Tools,
                        ..Rewrite::default()
                    };
                    let ids = [list.id.clone()];
                    match rewrite_event(&split, list.kind, &ids, list.keep, &mut stats) {
                        Some(new) => {
                            result.rewritten.push(j);
                            result.params_seen.extend(
                                stats
                                    .params_seen
                                    .into_iter()
                                    .map(|(name, learned)| (name.into_owned(), learned)),
                            );
                            bytes = new;
                        }
                        None => failed = true,
                    }
                }
                Some(if failed {
                    result.refused.push(Unreadable::Shape);
                    refusal_event(&refusal(Unreadable::Shape))
                } else {
                    bytes
                })
            }
            Err(why) => {
                result.refused.push(why);
                Some(refusal_event(&refusal(why)))
            }
        };
        match replaced {
            Some(bytes) => {
                changed = true;
                out.extend(bytes);
            }
            None => out.extend(original()),
        }
    }
    if changed {
        result.body = Some(out);
    }
    result
}

/// One SSE `message` event carrying `json`.
fn refusal_event(json: &str) -> Vec<u8> {
    format!("event: message\ndata: {json}\n\n").into_bytes()
}

/// [`curate_server_stream`]'s check of one event's data that looks like JSON: the indexes of
/// the claimed lists it answers.
fn check_stream_document(raw: &[u8], claimed: &[Claimed<'_>]) -> Result<Vec<usize>, Unreadable> {
    let text = utf8_text(raw)?;
    let messages = match one_document(text)? {
        Document::Batch(messages) => messages
            .into_iter()
            .map(|m| Message::parse(m.get()))
            .collect::<Result<Vec<_>, _>>()?,
        Document::Message(message) => vec![message],
    };
    let mut lists = Vec::new();
    for message in messages {
        let Some(result) = message.result else {
            continue;
        };
        let id = message.id.map_or("null", RawValue::get);
        let answered = claimed
            .iter()
            .position(|c| id_answers(id, std::slice::from_ref(&c.id)));
        let result = match (answered, result) {
            (_, Some(result)) => result,
            (Some(_), None) => return Err(Unreadable::Shape),
            (None, None) => continue, // not an object: no list in it
        };
        let listed = ListKind::ALL
            .iter()
            .any(|k| result.get(k.array()).is_some());
        if (answered.is_some() || listed) && result.has_duplicates() {
            return Err(Unreadable::Shape);
        }
        match answered.and_then(|j| Some((j, claimed.get(j)?))) {
            Some((j, c))
                if result
                    .get(c.kind.array())
                    .is_some_and(|l| l.starts_with('[')) =>
            {
                lists.push(j);
            }
            Some(_) => return Err(Unreadable::Shape),
            None if listed => return Err(Unreadable::Id),
            None => {}
        }
    }
    Ok(lists)
}

/// Longest incomplete SSE event a server stream holds back for curation, in bytes; a longer
/// one is passed on as it is (docs/curation.md "Curated tool surfaces").
pub const MAX_HELD_EVENT: usize = 4 * 1024 * 1024;
