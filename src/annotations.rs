//! Tool annotations as policy input: optionally refuse tools the server's own `tools/list`
//! marks destructive (`destructiveHint: true`) or does not mark read-only (`readOnlyHint` not
//! `true`), unless a rule set allows the tool by its exact name (MCP "Tools", `ToolAnnotations`).
//!
//! The hints are learned from the `tools/list` responses that pass through mcp-guard and kept
//! per server in proxy-wasm shared data (key `mcp_guard.annotations.<server_id>`, one JSON
//! object `{tool: flags}` merged with compare-and-swap), so every Envoy worker decides the same
//! way. A tool no `tools/list` has shown yet is refused or allowed as configured (`unseen`);
//! refusing is the fail-closed default.
//!
//! Bounds: one key per server id (the configured `server_id` or the upstream cluster that
//! answered the `tools/list`, so as many keys as the operator has servers, never a client's
//! choice); each key's value holds at most [`MAX_TOOLS`] tools and at most [`MAX_BYTES`] bytes.
//! A tool that does not fit is not learned and stays unseen (refused under the default
//! `unseen: refuse`), as a tool past [`MAX_TOOLS`] always was. Envoy never frees a shared-data
//! key, but replaces its value on each write.

use crate::curation::ToolHints;
use crate::host::{ReadError, SharedData};
use crate::tool_store::ToolStore;
use std::borrow::Cow;

/// Most tools whose hints are kept per server.
pub const MAX_TOOLS: usize = 4096;
/// Largest stored map per server, in bytes of its JSON form (4096 tools with names of about
/// 250 bytes; MCP 2025-11-25 recommends tool names of 1 to 128 characters).
pub const MAX_BYTES: usize = 1024 * 1024;

/// Which tools the annotations rule refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refuse {
    /// `destructiveHint: true`.
    Destructive,
    /// Any tool without `readOnlyHint: true`.
    NotReadOnly,
}

/// The annotations rule (plugin configuration `annotations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnotationRule {
    /// Which tools are refused.
    pub refuse: Refuse,
    /// Whether a tool not seen in any `tools/list` yet is refused.
    pub refuse_unseen: bool,
}

impl AnnotationRule {
    /// Why a tool with these hints (`None`: never seen) is refused, or `None` if it is not.
    pub fn refuses(&self, hints: Option<ToolHints>) -> Option<&'static str> {
        match hints {
            None if self.refuse_unseen => {
                Some("annotations: the tool has not been seen in tools/list")
            }
            None => None,
            Some(h) => match self.refuse {
                Refuse::Destructive if h.destructive == Some(true) => {
                    Some("annotations: destructiveHint is true")
                }
                Refuse::NotReadOnly if h.read_only != Some(true) => {
                    Some("annotations: readOnlyHint is not true")
                }
                _ => None,
            },
        }
    }
}

/// Where the hints are kept ([`ToolStore`]): `mcp_guard.annotations.<server_id>`, each tool's
/// value its flags (`r`/`R` read-only true/false, `d`/`D` destructive true/false).
const STORE: ToolStore = ToolStore {
    prefix: "mcp_guard.annotations.",
    max_tools: MAX_TOOLS,
    max_bytes: MAX_BYTES,
};

fn encode(h: ToolHints) -> String {
    let flag = |v: Option<bool>, yes: char, no: char| v.map(|b| if b { yes } else { no });
    [flag(h.read_only, 'r', 'R'), flag(h.destructive, 'd', 'D')]
        .into_iter()
        .flatten()
        .collect()
}

fn decode(flags: &str) -> ToolHints {
    let get = |yes: char, no: char| {
        if flags.contains(yes) {
            Some(true)
        } else if flags.contains(no) {
            Some(false)
        } else {
            None
        }
    };
    ToolHints {
        read_only: get('r', 'R'),
        destructive: get('d', 'D'),
    }
}

/// The hints last learned for `tool` of `server_id`: `Ok(None)` when no `tools/list` has shown
/// it (or the stored map is not one mcp-guard wrote), [`ReadError`] when the store could not be
/// read (the caller refuses: "could not read it" is not "never shown").
pub fn lookup(
    shared: &dyn SharedData,
    server_id: &str,
    tool: &str,
) -> Result<Option<ToolHints>, ReadError> {
    let flags: Option<String> = STORE.lookup(shared, server_id, tool)?;
    Ok(flags.map(|flags| decode(&flags)))
}

/// Records the hints of the tools a `tools/list` response showed (newer hints replace older
/// ones). Retries a lost compare-and-swap race a few times; returns whether the store holds them
/// (false also when the store could not be read).
pub fn learn(
    shared: &mut dyn SharedData,
    server_id: &str,
    tools: &[(Cow<'_, str>, ToolHints)],
) -> bool {
    if tools.is_empty() {
        return true;
    }
    let learned = tools
        .iter()
        .map(|(name, hints)| (name.as_ref(), Some(encode(*hints))));
    STORE.learn(shared, server_id, learned)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::host::fake::{FakeHost, Read, SharedStore};
    use crate::host::Host;

    #[test]
    fn hints_learned_on_one_worker_are_seen_on_another_and_a_failed_read_is_no_hint() {
        let shared = SharedStore::default();
        let mut one = FakeHost::new(shared.clone(), 0);
        let mut two = FakeHost::new(shared, 0);
        let ro = ToolHints {
            read_only: Some(true),
            destructive: None,
        };
        assert_eq!(lookup(two.shared(), "srv", "echo"), Ok(None));
        assert!(learn(one.shared(), "srv", &[(Cow::Borrowed("echo"), ro)]));
        assert_eq!(lookup(two.shared(), "srv", "echo"), Ok(Some(ro)));
        // Per server: another server's store does not have it.
        assert_eq!(lookup(two.shared(), "other", "echo"), Ok(None));
        // "Could not read it" is not "never shown", and nothing is learned then.
        two.failing = vec![Read::SharedData];
        assert_eq!(lookup(two.shared(), "srv", "echo"), Err(ReadError));
        assert!(!learn(two.shared(), "srv", &[(Cow::Borrowed("add"), ro)]));
        assert_eq!(lookup(one.shared(), "srv", "add"), Ok(None));
    }

    #[test]
    fn flags_round_trip_and_rules() {
        for h in [
            ToolHints::default(),
            ToolHints {
                read_only: Some(true),
                destructive: Some(false),
            },
            ToolHints {
                read_only: Some(false),
                destructive: Some(true),
            },
        ] {
            assert_eq!(decode(&encode(h)), h);
        }
        let destructive = AnnotationRule {
            refuse: Refuse::Destructive,
            refuse_unseen: true,
        };
        assert!(destructive.refuses(None).is_some());
        assert!(destructive.refuses(Some(ToolHints::default())).is_none());
        assert!(destructive
            .refuses(Some(ToolHints {
                read_only: None,
                destructive: Some(true)
            }))
            .is_some());
        let read_only = AnnotationRule {
            refuse: Refuse::NotReadOnly,
            refuse_unseen: false,
        };
        assert!(read_only.refuses(None).is_none());
        assert!(read_only.refuses(Some(ToolHints::default())).is_some());
        assert!(read_only
            .refuses(Some(ToolHints {
                read_only: Some(true),
                destructive: None
            }))
            .is_none());
    }
}
