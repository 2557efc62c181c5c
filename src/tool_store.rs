//! What mcp-guard learned about each server's tools from the `tools/list` responses it read,
//! kept per server in proxy-wasm shared data (one store per VM id, shared by every Envoy
//! worker; proxy-wasm ABI `proxy_get_shared_data` / `proxy_set_shared_data` with
//! compare-and-swap), so that every worker decides the same way.
//!
//! One [`ToolStore`] per kind of fact: the tool annotations (`crate::annotations`) and the
//! `Mcp-Param` markings (`crate::params::store`). Each keeps one key per server,
//! `<prefix><server_id>` (the configured `server_id` or the upstream cluster that answered the
//! `tools/list`: as many keys as the operator has servers, never a client's choice), whose
//! value is one JSON object `{tool: value}`. A 2026-07-28 client has no session, and none is
//! needed: the key is the server.
//!
//! Bounds: at most `max_tools` tools and `max_bytes` bytes of JSON per key; a tool that does
//! not fit is not learned and stays unknown (each user says what that means). Envoy never frees
//! a shared-data key, but replaces its value on each write.

use crate::host::{ReadError, SharedData};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// How many times [`ToolStore::learn`] retries a lost compare-and-swap race.
const CAS_ATTEMPTS: usize = 4;

/// One kind of per-server tool fact in shared data (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolStore {
    /// Key prefix, e.g. `mcp_guard.annotations.`; the server id follows it.
    pub prefix: &'static str,
    /// Most tools kept per server.
    pub max_tools: usize,
    /// Largest stored map per server, in bytes of its JSON form.
    pub max_bytes: usize,
}

impl ToolStore {
    /// The shared-data key of `server_id`.
    pub fn key(&self, server_id: &str) -> String {
        format!("{}{server_id}", self.prefix)
    }

    /// The value last learned for `tool` of `server_id`: `Ok(None)` when none was (or the
    /// stored map or entry is not one mcp-guard wrote: a value `V` cannot read); [`ReadError`]
    /// when the store could not be read ("could not read it" is not "nothing there"). Only the
    /// entry of `tool` is decoded.
    pub fn lookup<V: DeserializeOwned>(
        &self,
        shared: &dyn SharedData,
        server_id: &str,
        tool: &str,
    ) -> Result<Option<V>, ReadError> {
        let Some((bytes, _)) = shared.get(&self.key(server_id))? else {
            return Ok(None);
        };
        let Ok(map) = serde_json::from_slice::<BTreeMap<&str, &RawValue>>(&bytes) else {
            return Ok(None);
        };
        Ok(map
            .get(tool)
            .and_then(|raw| serde_json::from_str::<V>(raw.get()).ok()))
    }

    /// Records what one `tools/list` response showed: for each `(tool, value)`, `Some` replaces
    /// the tool's value (if the bounds allow it; else the tool is dropped), `None` removes the
    /// tool. Retries a lost compare-and-swap race a few times; returns whether the store now
    /// holds what was learned (false also when it could not be read or written). A stored map
    /// that is not one mcp-guard wrote is replaced.
    pub fn learn<'a, V>(
        &self,
        shared: &mut dyn SharedData,
        server_id: &str,
        learned: impl Iterator<Item = (&'a str, Option<V>)> + Clone,
    ) -> bool
    where
        V: Serialize + DeserializeOwned + PartialEq + Clone,
    {
        let key = self.key(server_id);
        for _ in 0..CAS_ATTEMPTS {
            let (mut map, cas) = match shared.get(&key) {
                Err(ReadError) => return false,
                Ok(Some((bytes, cas))) => (
                    serde_json::from_slice::<BTreeMap<String, V>>(&bytes).unwrap_or_default(),
                    cas,
                ),
                Ok(None) => (BTreeMap::new(), None),
            };
            let before = map.clone();
            let mut bytes = map
                .iter()
                .map(|(name, value)| entry_bytes(name, value))
                .fold(2usize, usize::saturating_add); // `{}`
            for (name, value) in learned.clone() {
                if let Some(old) = map.remove(name) {
                    bytes = bytes.saturating_sub(entry_bytes(name, &old));
                }
                let Some(value) = value else {
                    continue;
                };
                let more = entry_bytes(name, &value);
                if map.len() < self.max_tools && bytes.saturating_add(more) <= self.max_bytes {
                    bytes += more;
                    map.insert(name.to_owned(), value);
                }
            }
            if map == before {
                return true;
            }
            let Ok(value) = serde_json::to_vec(&map) else {
                return false;
            };
            if shared.set(&key, &value, cas) {
                return true;
            }
        }
        false
    }
}

/// Bytes one entry adds to the JSON form: its quoted name and value, `:` and `,` (escapes
/// counted: serde_json writes these bytes for it in the map).
fn entry_bytes<V: Serialize>(name: &str, value: &V) -> usize {
    let quoted = serde_json::to_string(name).map_or(usize::MAX, |q| q.len());
    let value = serde_json::to_string(value).map_or(usize::MAX, |v| v.len());
    quoted.saturating_add(value).saturating_add(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::{FakeHost, Read, SharedStore};
    use crate::host::Host;

    const STORE: ToolStore = ToolStore {
        prefix: "test.",
        max_tools: 3,
        max_bytes: 64,
    };

    fn learn(h: &mut FakeHost, server: &str, entries: &[(&str, Option<&str>)]) -> bool {
        let it = entries.iter().map(|(n, v)| (*n, v.map(str::to_owned)));
        STORE.learn(h.shared(), server, it)
    }

    fn get(h: &mut FakeHost, server: &str, tool: &str) -> Result<Option<String>, ReadError> {
        STORE.lookup(h.shared(), server, tool)
    }

    #[test]
    fn learned_on_one_worker_is_seen_on_another_per_server() {
        let shared = SharedStore::default();
        let mut one = FakeHost::new(shared.clone(), 0);
        let mut two = FakeHost::new(shared, 0);
        assert_eq!(get(&mut two, "srv", "echo"), Ok(None));
        assert!(learn(&mut one, "srv", &[("echo", Some("r"))]));
        assert_eq!(get(&mut two, "srv", "echo"), Ok(Some("r".into())));
        assert_eq!(get(&mut two, "other", "echo"), Ok(None));
        // Replaced, then removed.
        assert!(learn(&mut two, "srv", &[("echo", Some("d"))]));
        assert_eq!(get(&mut one, "srv", "echo"), Ok(Some("d".into())));
        assert!(learn(&mut two, "srv", &[("echo", None)]));
        assert_eq!(get(&mut one, "srv", "echo"), Ok(None));
    }

    #[test]
    fn a_failed_read_is_an_error_and_learns_nothing() {
        let shared = SharedStore::default();
        let mut one = FakeHost::new(shared.clone(), 0);
        let mut two = FakeHost::new(shared, 0);
        assert!(learn(&mut one, "srv", &[("echo", Some("r"))]));
        two.failing = vec![Read::SharedData];
        assert_eq!(get(&mut two, "srv", "echo"), Err(ReadError));
        assert!(!learn(&mut two, "srv", &[("add", Some("r"))]));
        assert_eq!(get(&mut one, "srv", "add"), Ok(None));
    }

    #[test]
    fn the_bounds_hold_in_tools_and_bytes_and_a_replacement_fits_where_its_old_value_was() {
        let mut h = FakeHost::new(SharedStore::default(), 0);
        // max_tools 3: the fourth is not kept.
        let entries = [
            ("a", Some("1")),
            ("b", Some("2")),
            ("c", Some("3")),
            ("d", Some("4")),
        ];
        assert!(learn(&mut h, "srv", &entries));
        assert_eq!(get(&mut h, "srv", "c"), Ok(Some("3".into())));
        assert_eq!(get(&mut h, "srv", "d"), Ok(None));
        // A full store still takes a new value for a tool it has.
        assert!(learn(&mut h, "srv", &[("a", Some("9"))]));
        assert_eq!(get(&mut h, "srv", "a"), Ok(Some("9".into())));
        // max_bytes 64: a value that would pass it is not kept.
        let long = "x".repeat(60);
        assert!(learn(&mut h, "srv", &[("b", Some(&long))]));
        assert_eq!(get(&mut h, "srv", "b"), Ok(None));
        let (bytes, _) = h.shared().get(&STORE.key("srv")).unwrap().unwrap();
        assert!(bytes.len() <= STORE.max_bytes, "{}", bytes.len());
    }

    #[test]
    fn a_stored_value_mcp_guard_did_not_write_is_nothing_and_is_replaced() {
        let mut h = FakeHost::new(SharedStore::default(), 0);
        assert!(h.shared().set(&STORE.key("srv"), b"[1,2]", None));
        assert_eq!(get(&mut h, "srv", "echo"), Ok(None));
        assert!(learn(&mut h, "srv", &[("echo", Some("r"))]));
        assert_eq!(get(&mut h, "srv", "echo"), Ok(Some("r".into())));
        assert!(h.shared().set(&STORE.key("srv"), br#"{"echo":7}"#, None));
        assert_eq!(get(&mut h, "srv", "echo"), Ok(None), "not a value V reads");
    }
}
