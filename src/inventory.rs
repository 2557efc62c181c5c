//! Server inventory: what each MCP server says it is, learned from the traffic itself, so that
//! every audit record can name the server software (`server_name`, `server_version`) and the
//! negotiated MCP revision (`protocol_version`) behind a call.
//!
//! # What is learned, and from where
//!
//! - The `initialize` result (MCP 2024-11-05 to 2025-11-25, spec "Lifecycle", schema
//!   `InitializeResult`): `serverInfo.name`, `serverInfo.version` (schema `Implementation`),
//!   the negotiated `protocolVersion` and the member names of `capabilities`.
//! - The `server/discover` result (MCP 2026-07-28, schema `DiscoverResult`): the name and
//!   version of the `_meta` `io.modelcontextprotocol/serverInfo` stamp (an `Implementation`;
//!   the spec says servers SHOULD stamp every result), the member names of `capabilities`,
//!   and, as the protocol version, the revision the discover request itself claimed (its
//!   `MCP-Protocol-Version` header, else its `_meta` `io.modelcontextprotocol/protocolVersion`):
//!   2026-07-28 negotiates nothing, each request names its revision.
//!
//! Only the result of a request whose method is `initialize` or `server/discover` (matched by
//! JSON-RPC id on the response stream, [`crate::response::Correlator`]) teaches anything: a
//! tool result that happens to carry a `serverInfo` member teaches nothing. The members are
//! read by the one incremental response scanner ([`crate::response::JsonScanner`]) while the
//! response passes, JSON or SSE; nothing is held whole.
//!
//! # Bounds and malformed values
//!
//! A name longer than [`MAX_NAME_LEN`] bytes, a version longer than [`MAX_VERSION_LEN`], a
//! protocol version longer than [`MAX_PROTOCOL_VERSION_LEN`] (once their escapes are
//! decoded), a value that is not a JSON string (a number, `null`, an object), a member given
//! twice (readers disagree on which copy counts), a string serde_json cannot decode (a lone
//! surrogate escape), or an `Implementation` that is not an object: each is *no value*
//! (`None`, written `null`), never a cut or converted one. A malformed value never becomes
//! another. At most [`MAX_CAPABILITIES`] capability names of at most [`MAX_CAPABILITY_LEN`]
//! bytes are kept; with more, or longer, [`Entry::capabilities_truncated`] is set.
//!
//! # Where it is kept (proxy-wasm shared data, through [`SharedData`])
//!
//! - Per server: key `mcp_guard.server.<server_id>` (the configured `server_id`, else the
//!   route's cluster: operator-chosen, so the number of keys is that of the servers
//!   configured), the latest [`Entry`] seen for that server by any worker. A write replaces
//!   the value only when it is at least as recent ([`Entry::at_ms`]), with compare-and-swap,
//!   so a slow worker never puts an older answer back.
//! - Per session: a fixed table of [`SESSION_SLOTS`] keys `mcp_guard.session.<n>`, the slot
//!   chosen by SHA-256 of (server id, session id); each holds one [`Entry`] and the hex
//!   SHA-256 that chose it ([`session_hash`]; the raw session id is not stored), checked on
//!   read, so a slot another session took is a miss, never another session's answer. A new
//!   session replaces whatever its slot held. Each value is at most [`MAX_ENTRY_BYTES`], so
//!   the table holds at most [`SESSION_SLOTS`] × [`MAX_ENTRY_BYTES`] (4 MiB) for every worker
//!   together, whatever the number of sessions.
//!
//! Shared data lives as long as the Envoy process (it survives plugin configuration updates,
//! not a restart): after a restart the inventory is empty until servers are initialized or
//! discovered again, and sessions begun before it read as the server's entry (or none).
//!
//! # What a record says ([`lookup`])
//!
//! A stream that carried an `initialize` / `server/discover` result uses what it learned. Any
//! other stream reads the inventory once, when its first record is written: the session's
//! entry when the request has a session id and the slot holds that session, else the server's
//! entry ([`Lookup::Found`], [`Lookup::NotFound`]). A shared-data read that fails is
//! [`Lookup::Unreadable`]: the record then has `server_name` and `server_version` null and
//! `"inventory_error": "unreadable"` (docs/audit-record.md), so "could not read it" is never
//! written as "not known".

use crate::host::{ReadError, SharedData};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest `serverInfo.name` kept, in bytes (UTF-8, escapes decoded); longer is `None`.
pub const MAX_NAME_LEN: usize = 128;
/// Longest `serverInfo.version` kept, in bytes; longer is `None`.
pub const MAX_VERSION_LEN: usize = 64;
/// Longest negotiated `protocolVersion` kept, in bytes (revisions are 10); longer is `None`.
pub const MAX_PROTOCOL_VERSION_LEN: usize = 64;
/// Most capability names kept per entry.
pub const MAX_CAPABILITIES: usize = 16;
/// Longest capability name kept, in bytes.
pub const MAX_CAPABILITY_LEN: usize = 64;
/// Number of session slots (keys `mcp_guard.session.0` … `mcp_guard.session.2047`).
pub const SESSION_SLOTS: u16 = 2048;
/// Largest stored value, in bytes of its JSON form. An entry whose JSON would be longer (only
/// possible with names full of characters JSON escapes) is stored without its capabilities,
/// then not at all.
pub const MAX_ENTRY_BYTES: usize = 2048;
/// The `inventory_error` of a record whose inventory read failed.
pub const UNREADABLE: &str = "unreadable";
/// The MCP method whose result teaches the inventory before 2026-07-28.
pub const INITIALIZE: &str = "initialize";
/// The MCP 2026-07-28 method whose result teaches the inventory.
pub const DISCOVER: &str = "server/discover";
/// Compare-and-swap attempts per server-entry write.
const ATTEMPTS: usize = 4;

/// One `Implementation` object as the scanner read it (`serverInfo`, or the 2026-07-28
/// `_meta` stamp).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Implementation {
    /// `name`, decoded, if a string of at most [`MAX_NAME_LEN`] bytes given once.
    pub name: Option<String>,
    /// `version`, decoded, if a string of at most [`MAX_VERSION_LEN`] bytes given once.
    pub version: Option<String>,
    /// The object is not an object, or itself, its `name` or its `version` is given twice:
    /// both values read as `None`.
    pub malformed: bool,
}

impl Implementation {
    /// (name, version), `None` each when unknown or malformed.
    pub fn pair(&self) -> (Option<&str>, Option<&str>) {
        if self.malformed {
            (None, None)
        } else {
            (self.name.as_deref(), self.version.as_deref())
        }
    }
}

/// What the response scanner captured from one result (only when asked to, see
/// `ResponseScanner::with_inventory`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// `result.serverInfo` (`initialize`).
    pub server_info: Implementation,
    /// `result._meta["io.modelcontextprotocol/serverInfo"]` (2026-07-28 results).
    pub stamp: Implementation,
    /// `result.protocolVersion` (`initialize`), decoded, at most
    /// [`MAX_PROTOCOL_VERSION_LEN`] bytes, given once.
    pub protocol_version: Option<String>,
    /// `result.protocolVersion` was given twice.
    pub protocol_version_repeated: bool,
    /// Member names of `result.capabilities`, decoded, in order, at most
    /// [`MAX_CAPABILITIES`] of at most [`MAX_CAPABILITY_LEN`] bytes.
    pub capabilities: Vec<String>,
    /// Some capability names were not kept (too many, too long, or `capabilities` given twice
    /// or not an object).
    pub capabilities_truncated: bool,
}

impl Captured {
    /// Notes one member name of `result.capabilities` (`None`: longer than the scanner keeps).
    pub fn capability(&mut self, name: Option<&[u8]>) {
        let kept = name
            .filter(|n| n.len() <= MAX_CAPABILITY_LEN)
            .and_then(|n| std::str::from_utf8(n).ok());
        match kept {
            Some(n) if self.capabilities.len() < MAX_CAPABILITIES => {
                self.capabilities.push(n.to_owned())
            }
            _ => self.capabilities_truncated = true,
        }
    }
}

/// What the inventory knows about one server, or one session with it. Stored as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The server's name (`serverInfo.name`, or the discover stamp's), `None` when not given
    /// or malformed.
    pub name: Option<String>,
    /// The server's version, `None` when not given or malformed.
    pub version: Option<String>,
    /// The negotiated (initialize) or claimed (discover) MCP revision.
    pub protocol_version: Option<String>,
    /// Member names of the server's `capabilities` (bounded, see [`Captured::capabilities`]).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Some capability names were not kept.
    #[serde(default)]
    pub capabilities_truncated: bool,
    /// When it was learned, Unix milliseconds.
    pub at_ms: u64,
}

impl Entry {
    /// The entry an `initialize` result teaches.
    pub fn from_initialize(c: &Captured, at_ms: u64) -> Entry {
        let (name, version) = c.server_info.pair();
        Entry {
            name: name.map(str::to_owned),
            version: version.map(str::to_owned),
            protocol_version: if c.protocol_version_repeated {
                None
            } else {
                c.protocol_version.clone()
            },
            capabilities: c.capabilities.clone(),
            capabilities_truncated: c.capabilities_truncated,
            at_ms,
        }
    }

    /// The entry a `server/discover` result teaches; `claimed` is the revision the discover
    /// request claimed (its record's `protocol_version`), kept when at most
    /// [`MAX_PROTOCOL_VERSION_LEN`] bytes.
    pub fn from_discover(c: &Captured, claimed: Option<&str>, at_ms: u64) -> Entry {
        let (name, version) = c.stamp.pair();
        Entry {
            name: name.map(str::to_owned),
            version: version.map(str::to_owned),
            protocol_version: claimed
                .filter(|v| v.len() <= MAX_PROTOCOL_VERSION_LEN)
                .map(str::to_owned),
            capabilities: c.capabilities.clone(),
            capabilities_truncated: c.capabilities_truncated,
            at_ms,
        }
    }

    /// Whether `other` says the same (every member but the time).
    fn same_as(&self, other: &Entry) -> bool {
        Entry {
            at_ms: other.at_ms,
            ..self.clone()
        } == *other
    }

    /// Its JSON, at most [`MAX_ENTRY_BYTES`] (without its capabilities if need be); `None`
    /// when even that is longer.
    fn bounded_json<T: Serialize>(wrap: impl Fn(&Entry) -> T, entry: &Entry) -> Option<Vec<u8>> {
        let fits = |e: &Entry| {
            serde_json::to_vec(&wrap(e))
                .ok()
                .filter(|b| b.len() <= MAX_ENTRY_BYTES)
        };
        fits(entry).or_else(|| {
            fits(&Entry {
                capabilities: Vec::new(),
                capabilities_truncated: true,
                ..entry.clone()
            })
        })
    }
}

/// One session slot's value.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionSlot {
    /// [`session_hash`] of the session that holds the slot.
    session: String,
    /// What that session's `initialize` taught.
    entry: Entry,
}

/// The shared-data key of `server_id`'s entry.
pub fn server_key(server_id: &str) -> String {
    format!("mcp_guard.server.{server_id}")
}

/// The lower-case hex SHA-256 of `server_id`, a NUL byte, and `session` (neither can hold a
/// NUL that makes two pairs collide: the server id is configuration, and a session id is a
/// header value, which cannot carry NUL).
pub fn session_hash(server_id: &str, session: &str) -> String {
    let mut h = Sha256::new();
    h.update(server_id.as_bytes());
    h.update([0u8]);
    h.update(session.as_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        for n in [b >> 4, b & 0xf] {
            out.push(char::from(
                DIGITS.get(usize::from(n)).copied().unwrap_or(b'0'),
            ));
        }
    }
    out
}

/// The shared-data key of the slot for a [`session_hash`].
pub fn slot_key(session_hash: &str) -> String {
    let n = session_hash
        .get(..4)
        .and_then(|h| u16::from_str_radix(h, 16).ok())
        .unwrap_or(0)
        % SESSION_SLOTS;
    format!("mcp_guard.session.{n}")
}

/// Remembers `entry` for `server_id`, and for `session` (the session id the `initialize`
/// response assigned) when there is one. Returns whether everything was stored; a write that
/// fails is logged by the caller and changes nothing else (the records of this stream still
/// carry what it learned).
pub fn remember(
    shared: &mut dyn SharedData,
    server_id: &str,
    session: Option<&str>,
    entry: &Entry,
) -> bool {
    let mut stored = true;
    if let Some(session) = session {
        let hash = session_hash(server_id, session);
        let key = slot_key(&hash);
        let wrap = |e: &Entry| SessionSlot {
            session: hash.clone(),
            entry: e.clone(),
        };
        stored &= match Entry::bounded_json(wrap, entry) {
            // A new session replaces whatever its slot held: no read needed.
            Some(bytes) => shared.set(&key, &bytes, None),
            None => false,
        };
    }
    stored & remember_server(shared, server_id, entry)
}

/// The server's entry becomes `entry` unless the one stored is more recent, or says the same
/// (no write then).
fn remember_server(shared: &mut dyn SharedData, server_id: &str, entry: &Entry) -> bool {
    let key = server_key(server_id);
    let Some(bytes) = Entry::bounded_json(Entry::clone, entry) else {
        return false;
    };
    for _ in 0..ATTEMPTS {
        let Ok(current) = shared.get(&key) else {
            return false;
        };
        let cas = match current {
            Some((value, cas)) => {
                match serde_json::from_slice::<Entry>(&value) {
                    Ok(stored) if stored.at_ms > entry.at_ms || stored.same_as(entry) => {
                        return true
                    }
                    _ => {}
                }
                cas
            }
            None => None,
        };
        if shared.set(&key, &bytes, cas) {
            return true;
        }
    }
    false
}

/// What the inventory says for a stream's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The session's entry, else the server's.
    Found(Entry),
    /// Nothing stored for either.
    NotFound,
    /// A shared-data read failed, or a stored value could not be decoded: not known, and
    /// the record says why (`inventory_error`).
    Unreadable,
}

/// Looks `server_id` (and `session`, when the request has one) up: the session's slot first,
/// when it holds that session; else the server's entry. One shared-data read when the
/// session is found or there is no session; two when a session id is presented that its slot
/// does not hold (evicted by another session, begun before a restart, or through another
/// Envoy).
pub fn lookup(shared: &mut dyn SharedData, server_id: &str, session: Option<&str>) -> Lookup {
    if let Some(session) = session {
        let hash = session_hash(server_id, session);
        match shared.get(&slot_key(&hash)) {
            Err(ReadError) => return Lookup::Unreadable,
            Ok(Some((value, _))) => {
                // Another session's slot (or an older layout) is a miss, not an error.
                if let Ok(slot) = serde_json::from_slice::<SessionSlot>(&value) {
                    if slot.session == hash {
                        return Lookup::Found(slot.entry);
                    }
                }
            }
            Ok(None) => {}
        }
    }
    match shared.get(&server_key(server_id)) {
        Err(ReadError) => Lookup::Unreadable,
        Ok(None) => Lookup::NotFound,
        Ok(Some((value, _))) => match serde_json::from_slice::<Entry>(&value) {
            Ok(entry) => Lookup::Found(entry),
            Err(_) => Lookup::Unreadable,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::{FakeHost, Read, SharedStore};
    use crate::host::Host;
    use crate::response::{BodyKind, Correlator, JsonScanner, ResponseScanner, Summary};

    /// What an inventory scanner captures from each message of `doc`.
    fn capture(doc: &[u8]) -> Vec<Option<Captured>> {
        let mut out = Vec::new();
        let mut s = JsonScanner::with_inventory();
        s.feed(doc, &mut |m: &Summary| {
            out.push(m.inventory.as_deref().cloned())
        });
        s.end_document();
        out
    }

    fn one(doc: &str) -> Captured {
        let got = capture(doc.as_bytes());
        assert_eq!(got.len(), 1, "{doc}");
        got.into_iter().next().flatten().unwrap_or_default()
    }

    const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"experimental":{},"prompts":{"listChanged":false},"resources":{"subscribe":false,"listChanged":false},"tools":{"listChanged":false}},"serverInfo":{"name":"mcp-guard demo","version":"1.4.2","title":{"x":[1,{"name":"no"}]}},"instructions":"hi"}}"#;

    #[test]
    fn an_initialize_result_teaches_name_version_revision_and_capabilities() {
        let c = one(INIT);
        assert_eq!(
            c.server_info.pair(),
            (Some("mcp-guard demo"), Some("1.4.2"))
        );
        assert_eq!(c.protocol_version.as_deref(), Some("2025-06-18"));
        assert_eq!(
            c.capabilities,
            ["experimental", "prompts", "resources", "tools"]
        );
        assert!(!c.capabilities_truncated);
        let e = Entry::from_initialize(&c, 7);
        assert_eq!(
            (
                e.name.as_deref(),
                e.version.as_deref(),
                e.protocol_version.as_deref()
            ),
            (Some("mcp-guard demo"), Some("1.4.2"), Some("2025-06-18"))
        );
        // The outcome is read as before: a success.
        let mut s = JsonScanner::with_inventory();
        let mut outcomes = Vec::new();
        s.feed(INIT.as_bytes(), &mut |m: &Summary| {
            outcomes.push(m.outcome())
        });
        assert_eq!(outcomes, [Some(crate::response::Outcome::Success)]);
    }

    #[test]
    fn escapes_are_decoded_and_every_chunking_gives_the_same_capture() {
        let doc = INIT
            .replace(r#""serverInfo""#, r#""server\u0049nfo""#)
            .replace(r#""1.4.2""#, r#""1.4\u002e2""#);
        let whole = one(&doc);
        assert_eq!(
            whole.server_info.pair(),
            (Some("mcp-guard demo"), Some("1.4.2"))
        );
        for cut in 1..doc.len() {
            let mut got = Vec::new();
            let mut s = JsonScanner::with_inventory();
            let (a, b) = doc.as_bytes().split_at(cut);
            for part in [a, b] {
                s.feed(part, &mut |m: &Summary| {
                    got.push(m.inventory.as_deref().cloned())
                });
            }
            assert_eq!(got, [Some(whole.clone())], "cut at {cut}");
        }
    }

    #[test]
    fn a_2026_discover_result_teaches_the_serverinfo_stamp() {
        let doc = r#"{"jsonrpc":"2.0","id":"d","result":{"supportedVersions":["2026-07-28"],"capabilities":{"tools":{"listChanged":true}},"resultType":"complete","ttlMs":0,"cacheScope":"public","_meta":{"other/key":{"name":"x"},"io.modelcontextprotocol/serverInfo":{"name":"search-server","version":"2.0.0"}}}}"#;
        let c = one(doc);
        assert_eq!(c.stamp.pair(), (Some("search-server"), Some("2.0.0")));
        assert_eq!(c.server_info.pair(), (None, None));
        assert_eq!(c.capabilities, ["tools"]);
        let e = Entry::from_discover(&c, Some("2026-07-28"), 1);
        assert_eq!(
            (
                e.name.as_deref(),
                e.version.as_deref(),
                e.protocol_version.as_deref()
            ),
            (Some("search-server"), Some("2.0.0"), Some("2026-07-28"))
        );
        // In a batch, each message keeps its own.
        let batch = format!("[{doc},{INIT}]");
        let got = capture(batch.as_bytes());
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].as_ref().unwrap().stamp.pair().0,
            Some("search-server")
        );
        assert_eq!(
            got[1].as_ref().unwrap().server_info.pair().0,
            Some("mcp-guard demo")
        );
    }

    #[test]
    fn malformed_values_are_no_value_never_another() {
        for (doc, name, version) in [
            // Not strings.
            (r#"{"serverInfo":{"name":5,"version":null}}"#, None, None),
            (
                r#"{"serverInfo":{"name":{"name":"x"},"version":["1"]}}"#,
                None,
                None,
            ),
            // Not an Implementation.
            (r#"{"serverInfo":"demo"}"#, None, None),
            (
                r#"{"serverInfo":[{"name":"demo","version":"1"}]}"#,
                None,
                None,
            ),
            (r#"{"serverInfo":null}"#, None, None),
            // Repeated: readers disagree on which copy counts.
            (
                r#"{"serverInfo":{"name":"a","name":"b","version":"1"}}"#,
                None,
                None,
            ),
            (
                r#"{"serverInfo":{"name":"a","version":"1"},"serverInfo":{"name":"b","version":"2"}}"#,
                None,
                None,
            ),
            (
                r#"{"serverInfo":{"name":"a","n\u0061me":"b","version":"1"}}"#,
                None,
                None,
            ),
            // A lone surrogate does not decode.
            (
                r#"{"serverInfo":{"name":"\ud800","version":"1"}}"#,
                None,
                Some("1"),
            ),
            // Deeper members of the same names do not count.
            (
                r#"{"serverInfo":{"x":{"name":"deep"},"version":"1"}}"#,
                None,
                Some("1"),
            ),
        ] {
            let doc = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{doc}}}"#);
            let c = one(&doc);
            assert_eq!(c.server_info.pair(), (name, version), "{doc}");
        }
        // A serverInfo outside `result` (a request's params, an error's data) teaches nothing.
        for doc in [
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"serverInfo":{"name":"a","version":"1"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m","data":{"serverInfo":{"name":"a"}}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"serverInfo":{"name":"a"}}]}}"#,
        ] {
            assert_eq!(capture(doc.as_bytes()), [None], "{doc}");
        }
        // Protocol versions: repeated or not a string is none.
        let c = one(
            r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","protocolVersion":"2024-11-05"}}"#,
        );
        assert_eq!(Entry::from_initialize(&c, 0).protocol_version, None);
        let c = one(r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":20250618}}"#);
        assert_eq!(c.protocol_version, None);
    }

    #[test]
    fn oversize_values_are_dropped_whole_and_capabilities_are_bounded() {
        let long_name = "n".repeat(MAX_NAME_LEN + 1);
        let fits = "é".repeat(MAX_NAME_LEN / 2);
        let long_version = "1".repeat(MAX_VERSION_LEN + 1);
        // Escaped spellings of a value that fits still fit.
        let escaped: String = "v1"
            .chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect();
        let doc = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"serverInfo":{{"name":"{long_name}","version":"{escaped}"}},"protocolVersion":"{}"}}}}"#,
            "2".repeat(MAX_PROTOCOL_VERSION_LEN + 1)
        );
        let c = one(&doc);
        assert_eq!(c.server_info.pair(), (None, Some("v1")));
        assert_eq!(c.protocol_version, None);
        let doc = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"serverInfo":{{"name":"{fits}","version":"{long_version}"}}}}}}"#
        );
        assert_eq!(one(&doc).server_info.pair(), (Some(fits.as_str()), None));
        // A 1 MiB name costs no more than the bound.
        let huge = "x".repeat(1 << 20);
        let doc = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"serverInfo":{{"name":"{huge}","version":"1"}}}}}}"#
        );
        assert_eq!(one(&doc).server_info.pair(), (None, Some("1")));
        // Capabilities: at most MAX_CAPABILITIES names of at most MAX_CAPABILITY_LEN bytes.
        let many: Vec<String> = (0..MAX_CAPABILITIES + 5)
            .map(|i| format!(r#""c{i}":{{}}"#))
            .collect();
        let long_cap = "k".repeat(MAX_CAPABILITY_LEN + 1);
        let doc = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"capabilities":{{"{long_cap}":1,{}}}}}}}"#,
            many.join(",")
        );
        let c = one(&doc);
        assert_eq!(c.capabilities.len(), MAX_CAPABILITIES);
        assert_eq!(c.capabilities[0], "c0");
        assert!(c.capabilities_truncated);
    }

    #[test]
    fn the_capture_is_read_from_sse_too_and_only_for_matched_ids() {
        let event = format!("event: message\r\nid: 1\r\ndata: {}\r\n\r\n", INIT);
        let mut c = Correlator::new(vec![crate::jsonrpc::Id::Number("0".into())]);
        let mut r = ResponseScanner::new(BodyKind::EventStream).with_inventory();
        for chunk in event.as_bytes().chunks(7) {
            r.feed(chunk, &mut c);
        }
        r.finish(&mut c);
        let got = c.captured(&crate::jsonrpc::Id::Number("0".into())).cloned();
        assert_eq!(got.unwrap().server_info.pair().1, Some("1.4.2"));
        // Another id's answer is not kept; a plain scanner captures nothing.
        let mut c = Correlator::new(vec![crate::jsonrpc::Id::Number("9".into())]);
        let mut r = ResponseScanner::new(BodyKind::Json).with_inventory();
        r.feed(INIT.as_bytes(), &mut c);
        assert!(c
            .captured(&crate::jsonrpc::Id::Number("0".into()))
            .is_none());
        let mut c = Correlator::new(vec![crate::jsonrpc::Id::Number("0".into())]);
        let mut r = ResponseScanner::new(BodyKind::Json);
        r.feed(INIT.as_bytes(), &mut c);
        assert!(c
            .captured(&crate::jsonrpc::Id::Number("0".into()))
            .is_none());
    }

    fn entry(name: &str, version: &str, at_ms: u64) -> Entry {
        Entry {
            name: Some(name.into()),
            version: Some(version.into()),
            protocol_version: Some("2025-06-18".into()),
            capabilities: vec!["tools".into()],
            capabilities_truncated: false,
            at_ms,
        }
    }

    #[test]
    fn sessions_and_servers_are_remembered_and_verified_on_read() {
        let shared = SharedStore::default();
        let mut a = FakeHost::new(shared.clone(), 0);
        let mut b = FakeHost::new(shared, 0);
        assert_eq!(lookup(a.shared(), "srv", Some("s1")), Lookup::NotFound);
        assert!(remember(
            a.shared(),
            "srv",
            Some("s1"),
            &entry("demo", "1", 10)
        ));
        assert!(remember(
            a.shared(),
            "srv",
            Some("s2"),
            &entry("demo", "2", 20)
        ));
        // On any worker: each session its own; the server's latest; other servers nothing.
        assert_eq!(
            lookup(b.shared(), "srv", Some("s1")),
            Lookup::Found(entry("demo", "1", 10))
        );
        assert_eq!(
            lookup(b.shared(), "srv", Some("s2")),
            Lookup::Found(entry("demo", "2", 20))
        );
        assert_eq!(
            lookup(b.shared(), "srv", None),
            Lookup::Found(entry("demo", "2", 20))
        );
        assert_eq!(lookup(b.shared(), "other", None), Lookup::NotFound);
        // An unknown session (or one of another server) falls back to the server's entry.
        assert_eq!(
            lookup(b.shared(), "srv", Some("s3")),
            Lookup::Found(entry("demo", "2", 20))
        );
        assert_eq!(lookup(b.shared(), "other", Some("s1")), Lookup::NotFound);
        // An older answer does not replace the latest.
        assert!(remember(a.shared(), "srv", None, &entry("demo", "0", 5)));
        assert_eq!(
            lookup(b.shared(), "srv", None),
            Lookup::Found(entry("demo", "2", 20))
        );
        // A slot another session took is a miss for the first, never its answer.
        let h1 = session_hash("srv", "s1");
        let rival = (0..200_000)
            .map(|i| format!("r{i}"))
            .find(|s| slot_key(&session_hash("srv", s)) == slot_key(&h1))
            .unwrap();
        assert!(remember(
            a.shared(),
            "srv",
            Some(&rival),
            &entry("rival", "9", 30)
        ));
        assert_eq!(
            lookup(b.shared(), "srv", Some("s1")),
            Lookup::Found(entry("rival", "9", 30))
        );
        assert!(remember(a.shared(), "srv", None, &entry("demo", "3", 40)));
        assert_eq!(
            lookup(b.shared(), "srv", Some("s1")),
            Lookup::Found(entry("demo", "3", 40))
        );
        assert_eq!(
            lookup(b.shared(), "srv", Some(&rival)),
            Lookup::Found(entry("rival", "9", 30))
        );
    }

    /// Shared data that counts its reads.
    struct Counting(SharedStore, std::cell::Cell<usize>);

    impl SharedData for Counting {
        fn get(&self, key: &str) -> Result<Option<crate::host::SharedValue>, ReadError> {
            self.1.set(self.1.get() + 1);
            self.0.get(key)
        }
        fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            self.0.set(key, value, cas)
        }
    }

    #[test]
    fn a_lookup_reads_once_unless_a_presented_session_is_not_held() {
        let mut store = Counting(SharedStore::default(), Default::default());
        assert!(remember(
            &mut store,
            "srv",
            Some("s1"),
            &entry("demo", "1", 10)
        ));
        let mut reads = |session: Option<&str>| {
            store.1.set(0);
            let found = lookup(&mut store, "srv", session);
            (found, store.1.get())
        };
        assert_eq!(
            reads(Some("s1")),
            (Lookup::Found(entry("demo", "1", 10)), 1)
        );
        assert_eq!(reads(None), (Lookup::Found(entry("demo", "1", 10)), 1));
        // The documented exception: a session id its slot does not hold, then the server's.
        assert_eq!(
            reads(Some("gone")),
            (Lookup::Found(entry("demo", "1", 10)), 2)
        );
    }

    #[test]
    fn a_failed_read_is_unreadable_not_unknown() {
        let mut h = FakeHost::new(SharedStore::default(), 0);
        assert!(remember(
            h.shared(),
            "srv",
            Some("s1"),
            &entry("demo", "1", 10)
        ));
        h.failing = vec![Read::SharedData];
        assert_eq!(lookup(h.shared(), "srv", Some("s1")), Lookup::Unreadable);
        assert_eq!(lookup(h.shared(), "srv", None), Lookup::Unreadable);
        assert!(!remember(h.shared(), "srv", None, &entry("demo", "2", 20)));
        h.failing.clear();
        // A value that does not decode is not "nothing there" either.
        h.shared().set(&server_key("bad"), b"{not json", None);
        assert_eq!(lookup(h.shared(), "bad", None), Lookup::Unreadable);
    }

    #[test]
    fn stored_values_are_bounded() {
        let mut h = FakeHost::new(SharedStore::default(), 0);
        // Names full of characters JSON escapes six-fold, and the most capabilities.
        let mut e = entry(
            &"\u{1}".repeat(MAX_NAME_LEN),
            &"\u{1}".repeat(MAX_VERSION_LEN),
            1,
        );
        e.capabilities = (0..MAX_CAPABILITIES)
            .map(|_| "\u{1}".repeat(MAX_CAPABILITY_LEN))
            .collect();
        assert!(remember(h.shared(), "srv", Some("s"), &e));
        for key in [server_key("srv"), slot_key(&session_hash("srv", "s"))] {
            let (value, _) = h.shared().get(&key).unwrap().unwrap();
            assert!(value.len() <= MAX_ENTRY_BYTES, "{key}: {}", value.len());
        }
        let Lookup::Found(got) = lookup(h.shared(), "srv", Some("s")) else {
            panic!("stored");
        };
        assert_eq!((got.name, got.capabilities.len()), (e.name, 0));
        assert!(got.capabilities_truncated);
        let n: u16 = slot_key(&session_hash("a", "b"))
            .rsplit('.')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(n < SESSION_SLOTS);
    }
}
