//! The tools' `Mcp-Param-*` markings learned from `tools/list`, kept per server in proxy-wasm
//! shared data so that every Envoy worker verifies the same way.
//!
//! Key `mcp_guard.params.<server_id>` (the configured `server_id` or the upstream cluster that
//! answered the `tools/list`: as many keys as the operator has servers, never a client's
//! choice). Value: one JSON object `{tool: markings}`, where `markings` is a list of
//! `[name, type, property path...]` (type `s`, `i` or `b`) and the empty list `[]` means "the
//! tool's annotations are invalid". A tool listed without any annotation is not stored (a
//! listing without them removes it), so the store holds only the tools it must.
//!
//! Bounds: at most [`MAX_TOOLS`] tools and [`MAX_BYTES`] bytes per server; per tool at most
//! [`super::MAX_MARKINGS`] markings of [`super::MAX_MARKING_BYTES`] bytes. A tool that does
//! not fit is not learned: it stays unknown (its headers are neither verified nor tagged, and a
//! `tools/call` of a tool with a configured `param_tags` entry is refused until it is known).
//! A tool the server stops listing keeps its last markings (a `tools/list` page does not say
//! which tools are gone). Envoy never frees a shared-data key, but replaces its value on each
//! write.

use super::{Learned, Marking, ParamType, ToolParams};
use crate::host::{ReadError, SharedData};
use crate::tool_store::ToolStore;
use std::borrow::Cow;

/// Most tools with markings (or invalid annotations) kept per server.
pub const MAX_TOOLS: usize = 1024;
/// Largest stored map per server, in bytes of its JSON form.
pub const MAX_BYTES: usize = 256 * 1024;

/// Where the markings are kept ([`ToolStore`]).
const STORE: ToolStore = ToolStore {
    prefix: "mcp_guard.params.",
    max_tools: MAX_TOOLS,
    max_bytes: MAX_BYTES,
};

/// The stored form of a tool's markings.
fn encode(learned: &Learned) -> Option<Vec<Vec<String>>> {
    match learned {
        Learned::Invalid(_) => Some(Vec::new()),
        Learned::Marked(markings) if !markings.is_empty() => Some(
            markings
                .iter()
                .map(|m| {
                    let mut entry = Vec::with_capacity(2 + m.path.len());
                    entry.push(m.token.clone());
                    entry.push(m.kind.letter().to_owned());
                    entry.extend(m.path.iter().cloned());
                    entry
                })
                .collect(),
        ),
        // Nothing to keep: no annotation, or over the bounds.
        Learned::Marked(_) | Learned::Unkept => None,
    }
}

/// The stored form read back; `None` when it is not one mcp-guard writes.
fn decode(stored: &[Vec<String>]) -> Option<ToolParams> {
    if stored.is_empty() {
        return Some(ToolParams::Invalid);
    }
    let mut markings = Vec::with_capacity(stored.len());
    for entry in stored {
        let [token, kind, path @ ..] = entry.as_slice() else {
            return None;
        };
        if path.is_empty() {
            return None;
        }
        markings.push(Marking {
            token: token.clone(),
            path: path.to_vec(),
            kind: ParamType::from_letter(kind)?,
        });
    }
    Some(ToolParams::Marked(markings))
}

/// What the store knows about `tool` of `server_id`: `Ok(None)` when no `tools/list` has
/// shown it with annotations (or it did not fit, or the stored value is not one mcp-guard
/// wrote); [`ReadError`] when the store could not be read (the caller refuses: "could not read
/// it" is not "nothing there").
pub fn lookup(
    shared: &dyn SharedData,
    server_id: &str,
    tool: &str,
) -> Result<Option<ToolParams>, ReadError> {
    let stored: Option<Vec<Vec<String>>> = STORE.lookup(shared, server_id, tool)?;
    Ok(stored.and_then(|stored| decode(&stored)))
}

/// Records what a `tools/list` response showed of each tool (newer replaces older; a tool
/// shown without annotations, or over the bounds, is removed). Retries a lost
/// compare-and-swap race a few times; returns whether the store holds it (false also when the
/// store could not be read).
pub fn learn(
    shared: &mut dyn SharedData,
    server_id: &str,
    tools: &[(Cow<'_, str>, Learned)],
) -> bool {
    if tools.is_empty() {
        return true;
    }
    let learned = tools
        .iter()
        .map(|(name, learned)| (name.as_ref(), encode(learned)));
    STORE.learn(shared, server_id, learned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::{FakeHost, Read, SharedStore};
    use crate::host::Host;

    fn region() -> Learned {
        Learned::Marked(vec![Marking {
            token: "Region".into(),
            path: vec!["region".into()],
            kind: ParamType::String,
        }])
    }

    #[test]
    fn markings_learned_on_one_worker_are_seen_on_another() {
        let shared = SharedStore::default();
        let mut one = FakeHost::new(shared.clone(), 0);
        let mut two = FakeHost::new(shared, 0);
        assert_eq!(lookup(two.shared(), "srv", "sql"), Ok(None));
        assert!(learn(
            one.shared(),
            "srv",
            &[
                (Cow::Borrowed("sql"), region()),
                (Cow::Borrowed("bad"), Learned::Invalid("x")),
                (Cow::Borrowed("plain"), Learned::Marked(vec![])),
            ]
        ));
        let m = vec![Marking {
            token: "Region".into(),
            path: vec!["region".into()],
            kind: ParamType::String,
        }];
        assert_eq!(
            lookup(two.shared(), "srv", "sql"),
            Ok(Some(ToolParams::Marked(m)))
        );
        assert_eq!(
            lookup(two.shared(), "srv", "bad"),
            Ok(Some(ToolParams::Invalid))
        );
        // A tool without annotations is not stored; another server's store is its own.
        assert_eq!(lookup(two.shared(), "srv", "plain"), Ok(None));
        assert_eq!(lookup(two.shared(), "other", "sql"), Ok(None));
    }

    #[test]
    fn a_later_listing_without_annotations_removes_the_tool() {
        let shared = SharedStore::default();
        let mut h = FakeHost::new(shared, 0);
        assert!(learn(
            h.shared(),
            "srv",
            &[(Cow::Borrowed("sql"), region())]
        ));
        assert!(learn(
            h.shared(),
            "srv",
            &[(Cow::Borrowed("sql"), Learned::Marked(vec![]))]
        ));
        assert_eq!(lookup(h.shared(), "srv", "sql"), Ok(None));
        // Over the bounds: not kept either (an older entry goes).
        assert!(learn(
            h.shared(),
            "srv",
            &[(Cow::Borrowed("sql"), region())]
        ));
        assert!(learn(
            h.shared(),
            "srv",
            &[(Cow::Borrowed("sql"), Learned::Unkept)]
        ));
        assert_eq!(lookup(h.shared(), "srv", "sql"), Ok(None));
    }

    #[test]
    fn a_failed_read_is_an_error_and_learns_nothing() {
        let shared = SharedStore::default();
        let mut one = FakeHost::new(shared.clone(), 0);
        let mut two = FakeHost::new(shared, 0);
        assert!(learn(
            one.shared(),
            "srv",
            &[(Cow::Borrowed("sql"), region())]
        ));
        two.failing = vec![Read::SharedData];
        assert_eq!(lookup(two.shared(), "srv", "sql"), Err(ReadError));
        assert!(!learn(
            two.shared(),
            "srv",
            &[(Cow::Borrowed("other"), region())]
        ));
        assert_eq!(lookup(one.shared(), "srv", "other"), Ok(None));
    }

    #[test]
    fn the_store_is_bounded_in_tools_and_bytes() {
        let shared = SharedStore::default();
        let mut h = FakeHost::new(shared, 0);
        let tools: Vec<(Cow<'_, str>, Learned)> = (0..MAX_TOOLS + 10)
            .map(|i| (Cow::Owned(format!("t{i}")), region()))
            .collect();
        assert!(learn(h.shared(), "srv", &tools));
        let last_kept = format!("t{}", MAX_TOOLS - 1);
        assert!(matches!(lookup(h.shared(), "srv", &last_kept), Ok(Some(_))));
        assert_eq!(
            lookup(h.shared(), "srv", &format!("t{MAX_TOOLS}")),
            Ok(None)
        );
        // Long names: the byte bound holds first.
        let long: Vec<(Cow<'_, str>, Learned)> = (0..MAX_TOOLS)
            .map(|i| (Cow::Owned(format!("{i}{}", "n".repeat(1000))), region()))
            .collect();
        assert!(learn(h.shared(), "big", &long));
        let (bytes, _) = h.shared().get(&STORE.key("big")).unwrap().unwrap();
        assert!(bytes.len() <= MAX_BYTES, "{}", bytes.len());
        assert!(bytes.len() > MAX_BYTES - 2000, "{}", bytes.len());
    }

    #[test]
    fn a_value_mcp_guard_did_not_write_is_nothing_known() {
        let shared = SharedStore::default();
        let mut h = FakeHost::new(shared, 0);
        assert!(h.shared().set(
            &STORE.key("srv"),
            br#"{"sql":[["Region","x","region"]]}"#,
            None
        ));
        assert_eq!(lookup(h.shared(), "srv", "sql"), Ok(None));
        assert!(h
            .shared()
            .set(&STORE.key("srv"), br#"{"sql":[["Region","s"]]}"#, None));
        assert_eq!(lookup(h.shared(), "srv", "sql"), Ok(None));
        assert!(h.shared().set(&STORE.key("srv"), b"not json", None));
        assert_eq!(lookup(h.shared(), "srv", "sql"), Ok(None));
    }
}
