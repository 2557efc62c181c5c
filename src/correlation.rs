//! Cross-stream correlation: responses that arrive on a different HTTP stream from the POST
//! that carried the request, matched by (session, JSON-RPC id).
//!
//! Two MCP transports do this:
//! - **Legacy HTTP+SSE (2024-11-05, "HTTP with SSE")**: the client POSTs to the URI the GET
//!   stream's `endpoint` event announced (`/messages?sessionId=…` in the TypeScript SDK,
//!   `/messages/?session_id=…` in the Python SDK); the server answers the POST `202 Accepted`
//!   and sends the JSON-RPC response on the GET stream.
//! - **Streamable HTTP resumption (2025-03-26 and later)**: a POST's SSE stream can end before
//!   the response (the server closes it, SEP-1699, or the connection drops); the client
//!   reconnects with `GET` + `Last-Event-ID` and the server replays the response there.
//!
//! The POST and the GET may be served by different Envoy worker threads, each with its own
//! Wasm VM, so the POST side stores a [`Pending`] call in proxy-wasm *shared data* (one store
//! per VM id, shared by every worker; proxy-wasm ABI `proxy_get_shared_data` /
//! `proxy_set_shared_data` with compare-and-swap) and the GET side claims it.
//!
//! Memory is bounded: the store is a fixed table of [`SLOTS`] keys, the slot chosen by a hash
//! of (session, id); a newer call overwrites an older one in the same slot (whose outcome then
//! stays `deferred` in the log). Each value is at most [`MAX_PENDING_BYTES`]: a call whose
//! pending form is larger (a tool name, prompt name, resource URI or trace id of kilobytes) is
//! not stored, and its outcome stays `deferred`. So the store never holds more than
//! [`SLOTS`] × [`MAX_PENDING_BYTES`] (32 MiB) of values, for every worker together, whatever
//! clients send; Envoy never frees a shared-data key, but it replaces a key's value on each
//! write. Shared data has no delete: a claimed slot is set to an empty value. Entries older
//! than [`TTL_MS`] are ignored.

use crate::audit::{Call, StreamFacts};
use crate::host::SharedData;
use crate::identity::{IdentityError, IdentitySource};
use crate::jsonrpc::Id;
use crate::policy::Decision;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Number of shared-data slots (keys `mcp_guard.pending.0` … `mcp_guard.pending.4095`).
pub const SLOTS: u16 = 4096;
/// How long a pending call may wait for its response on another stream, in milliseconds.
pub const TTL_MS: u64 = 60 * 60 * 1000;
/// Longest session id accepted for correlation, in bytes (SDK ids are 32–36 characters).
pub const MAX_SESSION_LEN: usize = 256;
/// Largest pending call stored in a slot, in bytes of its JSON form (a call with SDK-sized
/// ids and names takes a few hundred).
pub const MAX_PENDING_BYTES: usize = 8 * 1024;

/// A forwarded request whose response has not been seen on its own stream: everything the
/// audit record of its outcome needs, serialized as JSON into one shared-data slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Session the call belongs to (`Mcp-Session-Id`, or the legacy `sessionId` query value).
    pub session: String,
    /// The request id as JSON text (`1`, `"1"`), so `1` and `"1"` stay distinct.
    pub id: String,
    /// Agent, server, trace and start time of the POST stream.
    pub agent_id: String,
    /// Server id of the POST stream.
    pub server_id: String,
    /// Trace id of the POST stream.
    pub trace_id: Option<String>,
    /// Start of the POST, Unix milliseconds.
    pub start_ms: u64,
    /// JSON-RPC method of the request.
    pub method: Option<String>,
    /// Tool of a `tools/call`.
    pub tool_name: Option<String>,
    /// Prompt of a `prompts/get`.
    pub prompt_name: Option<String>,
    /// URI of a `resources/read`.
    pub resource_uri: Option<String>,
    /// The POST record's `input_hash`.
    pub input_hash: Option<String>,
    /// The policy that decided on the POST.
    #[serde(default)]
    pub policy_name: Option<String>,
    /// Its version.
    #[serde(default)]
    pub policy_version: Option<String>,
    /// The POST record's `identity_source`.
    #[serde(default)]
    pub identity_source: Option<IdentitySource>,
    /// The POST record's `identity_error`.
    #[serde(default)]
    pub identity_error: Option<IdentityError>,
    /// The POST record's `protocol_version`.
    #[serde(default)]
    pub protocol_version: Option<String>,
}

impl Pending {
    /// The pending form of `call`, forwarded on a stream with `facts` in `session`.
    /// `None` for a call without a request id.
    pub fn new(session: &str, facts: &StreamFacts, call: &Call) -> Option<Pending> {
        let id = call.request_id.as_ref()?;
        Some(Pending {
            session: session.to_owned(),
            id: id.to_json(),
            agent_id: facts.agent_id.clone(),
            server_id: facts.server_id.clone(),
            trace_id: facts.trace_id.clone(),
            start_ms: facts.start_ms,
            method: call.method.clone(),
            tool_name: call.tool_name.clone(),
            prompt_name: call.prompt_name.clone(),
            resource_uri: call.resource_uri.clone(),
            input_hash: call.input_hash.clone(),
            policy_name: facts.policy_name.clone(),
            policy_version: facts.policy_version.clone(),
            identity_source: facts.identity_source,
            identity_error: facts.identity_error,
            protocol_version: call.protocol_version.clone(),
        })
    }

    /// The call (decision `allow`: only forwarded calls are stored) and the facts of the
    /// stream that forwarded it, for the record of its outcome.
    pub fn into_call(self) -> (Call, StreamFacts) {
        let call = Call {
            method: self.method,
            tool_name: self.tool_name,
            prompt_name: self.prompt_name,
            resource_uri: self.resource_uri,
            request_id: Id::from_raw(&self.id),
            input_hash: self.input_hash,
            decision: Decision::Allow,
            output_status: None,
            error_code: None,
            origin: None,
            settled_ms: None,
            refusal: None,
            params: Vec::new(),
            round: crate::audit::Round::default(),
            protocol_version: self.protocol_version,
            drift: Vec::new(),
            drift_truncated: false,
            pin: None,
        };
        let facts = StreamFacts {
            start_ms: self.start_ms,
            agent_id: self.agent_id,
            identity_source: self.identity_source,
            identity_error: self.identity_error,
            server_id: self.server_id,
            http_method: "POST".to_owned(),
            http_status: None,
            session_id: Some(self.session),
            trace_id: self.trace_id,
            policy_name: self.policy_name,
            policy_version: self.policy_version,
        };
        (call, facts)
    }
}

/// The shared-data key of the slot for (session, id).
pub fn slot_key(session: &str, id_json: &str) -> String {
    let mut h = Sha256::new();
    h.update(session.as_bytes());
    h.update([0u8]);
    h.update(id_json.as_bytes());
    let d = h.finalize();
    let n = d
        .first()
        .zip(d.get(1))
        .map_or(0, |(a, b)| u16::from_be_bytes([*a, *b]))
        % SLOTS;
    format!("mcp_guard.pending.{n}")
}

/// Stores `pending` in its slot, replacing whatever was there. Returns whether the host
/// accepted the write; `false` without a write when the session is longer than
/// [`MAX_SESSION_LEN`] or the JSON form longer than [`MAX_PENDING_BYTES`].
pub fn store(shared: &mut dyn SharedData, pending: &Pending) -> bool {
    if pending.session.len() > MAX_SESSION_LEN {
        return false;
    }
    let Ok(value) = serde_json::to_vec(pending) else {
        return false;
    };
    if value.len() > MAX_PENDING_BYTES {
        return false;
    }
    shared.set(&slot_key(&pending.session, &pending.id), &value, None)
}

/// Takes the pending call for (`session`, `id`) out of the store, if one is there, younger
/// than [`TTL_MS`] at `now_ms`. Compare-and-swap makes the claim exclusive: two streams cannot
/// both audit the same outcome. A slot that cannot be read is not claimed (its call keeps its
/// `deferred` record).
pub fn claim(shared: &mut dyn SharedData, session: &str, id: &Id, now_ms: u64) -> Option<Pending> {
    let id_json = id.to_json();
    let key = slot_key(session, &id_json);
    let (value, cas) = shared.get(&key).ok().flatten()?;
    let pending: Pending = serde_json::from_slice(&value).ok()?;
    if pending.session != session || pending.id != id_json {
        return None;
    }
    let expired = now_ms.saturating_sub(pending.start_ms) > TTL_MS;
    // Clear the slot; if another stream changed it in between, it is not ours to take.
    if !shared.set(&key, b"", cas) || expired {
        return None;
    }
    Some(pending)
}

/// The session id a legacy HTTP+SSE POST URI (or `endpoint` event) carries: the value of the
/// `sessionId` (TypeScript SDK) or `session_id` (Python SDK) query parameter, as sent (not
/// percent-decoded, so both sides compare the same bytes). `None` when absent, empty or longer
/// than [`MAX_SESSION_LEN`].
pub fn session_from_uri(uri: &str) -> Option<String> {
    let query = uri.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "sessionId" || *k == "session_id")
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && v.len() <= MAX_SESSION_LEN)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_from_legacy_uris() {
        assert_eq!(
            session_from_uri("/messages?sessionId=abc-123").as_deref(),
            Some("abc-123")
        );
        assert_eq!(
            session_from_uri("/messages/?session_id=9f8e&x=1").as_deref(),
            Some("9f8e")
        );
        assert_eq!(
            session_from_uri("http://h:1/m?x=1&sessionId=s#frag").as_deref(),
            Some("s")
        );
        assert_eq!(session_from_uri("/messages"), None);
        assert_eq!(session_from_uri("/messages?sessionId="), None);
        assert_eq!(session_from_uri("/messages?sessionid=x"), None);
        let long = format!("/m?session_id={}", "a".repeat(MAX_SESSION_LEN + 1));
        assert_eq!(session_from_uri(&long), None);
    }

    use crate::host::fake::{FakeHost, Read, SharedStore};
    use crate::host::Host;

    fn pending(session: &str, id: &str, start_ms: u64) -> Pending {
        let facts = StreamFacts {
            agent_id: "demo-agent".to_owned(),
            start_ms,
            ..StreamFacts::default()
        };
        let mut call = Call::bare(Decision::Allow);
        call.method = Some("tools/call".to_owned());
        call.request_id = Id::from_raw(id);
        Pending::new(session, &facts, &call).unwrap()
    }

    #[test]
    fn a_stored_call_is_claimed_once_within_its_ttl_by_session_and_id() {
        // Two workers: the POST's stores, the GET stream's claims (one shared store).
        let shared = SharedStore::default();
        let mut post = FakeHost::new(shared.clone(), 0);
        let mut get = FakeHost::new(shared, 0);
        assert!(store(post.shared(), &pending("s1", "7", 1_000)));
        let seven = Id::from_raw("7").unwrap();
        // Another session, or the same number as a string, is not this call.
        assert_eq!(claim(get.shared(), "s2", &seven, 2_000), None);
        let quoted = Id::from_raw("\"7\"").unwrap();
        assert_eq!(claim(get.shared(), "s1", &quoted, 2_000), None);
        let got = claim(get.shared(), "s1", &seven, 2_000).unwrap();
        assert_eq!(
            (got.agent_id.as_str(), got.id.as_str()),
            ("demo-agent", "7")
        );
        // Claimed: gone for everyone.
        assert_eq!(claim(post.shared(), "s1", &seven, 2_000), None);
        // Expired: cleared, not claimed.
        assert!(store(post.shared(), &pending("s1", "8", 0)));
        let eight = Id::from_raw("8").unwrap();
        assert_eq!(claim(get.shared(), "s1", &eight, TTL_MS + 1), None);
        assert_eq!(claim(get.shared(), "s1", &eight, 1), None);
    }

    #[test]
    fn an_unreadable_store_claims_nothing_and_stores_nothing() {
        let mut h = FakeHost::new(SharedStore::default(), 0);
        assert!(store(h.shared(), &pending("s1", "7", 0)));
        h.failing = vec![Read::SharedData];
        let seven = Id::from_raw("7").unwrap();
        assert_eq!(claim(h.shared(), "s1", &seven, 1), None);
        assert!(!store(h.shared(), &pending("s1", "9", 0)));
        // Still there once the store reads again.
        h.failing.clear();
        assert!(claim(h.shared(), "s1", &seven, 1).is_some());
    }

    #[test]
    fn slots_are_bounded_and_keep_id_types_apart() {
        let key = slot_key("s", "1");
        let n: u16 = key.rsplit('.').next().unwrap().parse().unwrap();
        assert!(n < SLOTS);
        assert_eq!(key, slot_key("s", "1"));
        // Distinct inputs almost always land in distinct slots; either way the stored
        // (session, id) is compared on claim.
        assert_ne!(slot_key("s", "1"), slot_key("s", "\"1\""));
    }
}
