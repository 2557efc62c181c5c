//! What pins keep in proxy-wasm shared data ([`crate::tool_store::ToolStore`]; one store per VM
//! id, shared by every Envoy worker of that VM, lost when Envoy restarts):
//!
//! - [`LEARNED`], `mcp_guard.pins.<server_id>`: with `learn_pins`, the first definition hash
//!   seen per tool (trust on first use). Written only where absent (compare-and-swap), never
//!   replaced, so every worker compares with the same first sighting.
//! - [`DEFS`], `mcp_guard.defs.<server_id>`: the last definition seen per tool ([`Def`]), so a
//!   `tools/call` is checked against what the latest `tools/list` showed even when it arrives
//!   on another stream or worker, or the client never listed the tools itself.
//!
//! Bounds: one key each per server id (configured `server_id` or upstream cluster: as many as
//! the operator has servers); at most [`MAX_TOOLS`] tools and [`MAX_BYTES`] bytes per key. A
//! tool that does not fit is not kept: it has no learned pin (unpinned) or no definition seen
//! (unverified), and under `hide` its calls are denied.

use crate::host::{ReadError, SharedData};
use crate::tool_store::ToolStore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most tools kept per server in each store.
pub const MAX_TOOLS: usize = 4096;
/// Largest stored map per server, in bytes of its JSON form (4096 tools with 128-byte names
/// and two 71-byte hashes each fit).
pub const MAX_BYTES: usize = 2 * 1024 * 1024;

/// Learned pins: `{tool: "sha256:<hex>"}`.
pub const LEARNED: ToolStore = ToolStore {
    prefix: "mcp_guard.pins.",
    max_tools: MAX_TOOLS,
    max_bytes: MAX_BYTES,
};

/// Last definitions seen: `{tool: {"h": hash | null, "p": learned pin | null}}`.
pub const DEFS: ToolStore = ToolStore {
    prefix: "mcp_guard.defs.",
    max_tools: MAX_TOOLS,
    max_bytes: MAX_BYTES,
};

/// The last definition of a tool a `tools/list` of its server showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Def {
    /// Its [`super::definition_hash`]; `None` when it could not be hashed, or when one list
    /// showed two different definitions under the name (no single definition was shown:
    /// treated as drift).
    #[serde(rename = "h")]
    pub hash: Option<String>,
    /// The learned pin in force when it was seen (`learn_pins`), so that a call needs one
    /// shared-data read; `None` without learning or when none could be kept.
    #[serde(rename = "p")]
    pub learned: Option<String>,
}

/// Every learned pin of `server_id`: [`ReadError`] when the store could not be read. A stored
/// value mcp-guard did not write reads as no pins.
pub fn learned_pins(
    shared: &dyn SharedData,
    server_id: &str,
) -> Result<BTreeMap<String, String>, ReadError> {
    let Some((bytes, _)) = shared.get(&LEARNED.key(server_id))? else {
        return Ok(BTreeMap::new());
    };
    Ok(serde_json::from_slice(&bytes).unwrap_or_default())
}

/// How many times [`learn_first`] retries a lost compare-and-swap race.
const CAS_ATTEMPTS: usize = 4;

/// Adds each `(tool, hash)` whose tool has no learned pin yet (trust on first use; a pin is
/// never replaced) and returns the pins the store holds afterwards for those tools: another
/// worker may have learned a different first definition in between, and that one wins
/// everywhere. [`ReadError`] when the store could not be read or written (the caller keeps no
/// pin then). Tools past the bounds are not learned (absent from the result).
pub fn learn_first(
    shared: &mut dyn SharedData,
    server_id: &str,
    new: &[(String, String)],
) -> Result<BTreeMap<String, String>, ReadError> {
    let key = LEARNED.key(server_id);
    for _ in 0..CAS_ATTEMPTS {
        let (mut map, cas) = match shared.get(&key)? {
            Some((bytes, cas)) => (
                serde_json::from_slice::<BTreeMap<String, String>>(&bytes).unwrap_or_default(),
                cas,
            ),
            None => (BTreeMap::new(), None),
        };
        let mut bytes = serde_json::to_vec(&map).map_or(usize::MAX, |v| v.len());
        let mut changed = false;
        for (tool, hash) in new {
            if map.contains_key(tool) {
                continue;
            }
            let more = serde_json::to_string(tool)
                .map_or(usize::MAX, |q| q.len())
                .saturating_add(hash.len() + 4);
            if map.len() < MAX_TOOLS && bytes.saturating_add(more) <= MAX_BYTES {
                bytes = bytes.saturating_add(more);
                map.insert(tool.clone(), hash.clone());
                changed = true;
            }
        }
        let held = |map: &BTreeMap<String, String>| {
            new.iter()
                .filter_map(|(tool, _)| map.get(tool).map(|p| (tool.clone(), p.clone())))
                .collect()
        };
        if !changed {
            return Ok(held(&map));
        }
        let Ok(value) = serde_json::to_vec(&map) else {
            return Err(ReadError);
        };
        if shared.set(&key, &value, cas) {
            return Ok(held(&map));
        }
    }
    Err(ReadError)
}

/// The last definition seen of `tool` of `server_id` (one shared-data read): `Ok(None)` when no
/// `tools/list` of that server showing it was read since Envoy started (or it did not fit).
pub fn def(shared: &dyn SharedData, server_id: &str, tool: &str) -> Result<Option<Def>, ReadError> {
    DEFS.lookup(shared, server_id, tool)
}

/// Records the definitions one `tools/list` response showed (each replaces the tool's last).
/// Returns whether the store holds them.
pub fn record_defs(shared: &mut dyn SharedData, server_id: &str, defs: &[(String, Def)]) -> bool {
    if defs.is_empty() {
        return true;
    }
    DEFS.learn(
        shared,
        server_id,
        defs.iter()
            .map(|(tool, def)| (tool.as_str(), Some(def.clone()))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::{FakeHost, Read, SharedStore};
    use crate::host::Host;

    fn pair(tool: &str, hash: &str) -> (String, String) {
        (tool.to_owned(), hash.to_owned())
    }

    #[test]
    fn the_first_sighting_wins_on_every_worker() {
        let shared = SharedStore::default();
        let mut one = FakeHost::new(shared.clone(), 0);
        let mut two = FakeHost::new(shared, 0);
        let got = learn_first(one.shared(), "srv", &[pair("a", "sha256:1")]).unwrap();
        assert_eq!(got.get("a").map(String::as_str), Some("sha256:1"));
        // Another worker later sees another definition: the first pin stays and is returned.
        let got = learn_first(
            two.shared(),
            "srv",
            &[pair("a", "sha256:2"), pair("b", "sha256:3")],
        )
        .unwrap();
        assert_eq!(got.get("a").map(String::as_str), Some("sha256:1"));
        assert_eq!(got.get("b").map(String::as_str), Some("sha256:3"));
        let all = learned_pins(one.shared(), "srv").unwrap();
        assert_eq!(all.len(), 2);
        // Per server.
        assert!(learned_pins(one.shared(), "other").unwrap().is_empty());
    }

    #[test]
    fn failed_reads_are_errors_not_absence() {
        let shared = SharedStore::default();
        let mut h = FakeHost::new(shared, 0);
        h.failing = vec![Read::SharedData];
        assert_eq!(learned_pins(h.shared(), "srv"), Err(ReadError));
        assert_eq!(
            learn_first(h.shared(), "srv", &[pair("a", "x")]),
            Err(ReadError)
        );
        assert_eq!(def(h.shared(), "srv", "a"), Err(ReadError));
    }

    #[test]
    fn defs_round_trip_and_are_replaced() {
        let mut h = FakeHost::new(SharedStore::default(), 0);
        assert_eq!(def(h.shared(), "srv", "a"), Ok(None));
        let d1 = Def {
            hash: Some("sha256:1".into()),
            learned: None,
        };
        assert!(record_defs(h.shared(), "srv", &[("a".into(), d1.clone())]));
        assert_eq!(def(h.shared(), "srv", "a"), Ok(Some(d1)));
        let d2 = Def {
            hash: None,
            learned: Some("sha256:1".into()),
        };
        assert!(record_defs(h.shared(), "srv", &[("a".into(), d2.clone())]));
        assert_eq!(def(h.shared(), "srv", "a"), Ok(Some(d2)));
    }
}
