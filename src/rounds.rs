//! Multi round-trip calls (MCP 2026-07-28, spec "Multi Round-Trip Requests",
//! `basic/patterns/mrtr`; SEP-2322): the rounds of one logical call, linked so that a rate
//! limit counts the call once.
//!
//! A `tools/call`, `prompts/get` or `resources/read` may be answered with a result whose
//! `resultType` is `input_required`, carrying `inputRequests` and/or an opaque `requestState`.
//! The client then retries the same call, with a new JSON-RPC id, the original params, the
//! answers in `params.inputResponses`, and the `requestState` echoed exactly. Each retry is an
//! independent HTTP request (2026-07-28 has no session), possibly on another Envoy worker.
//!
//! The **link** of a round is the configured input hasher (`input_hash`: SHA-256, or
//! HMAC-SHA256 with the operator's key) over the JSON array `[server_id, agent_id, method,
//! name, arguments, requestState]` (`arguments`: the call's `input_hash`, the hash of the exact
//! bytes of `params.arguments`, for a `tools/call`, else `""`; the state decoded, `""` when the
//! result had none): [`link`]. The retry repeats the original params (spec: "retries the
//! original request"), so a retry with other arguments continues nothing: a round answers one
//! call, not any call of the same tool. The link is written to the audit log (never the raw
//! state): the record answered `input_required` carries `"round_opens": <link>`, the retry's
//! record `"round_continues": <link>`.
//!
//! When mcp-guard sees an `input_required` answer it **opens** the round: [`open`] stores the
//! link in proxy-wasm shared data (one store for every worker). A retry whose link is open
//! **claims** it ([`claim`], single use, compare-and-swap): it is a continuation, and is not
//! counted again by mcp-guard's `rate_limit_service`. A retry whose link is not open (a forged
//! or replayed `requestState`, another agent's, an expired or evicted round) claims nothing and
//! is counted as a new call. A store that cannot be read claims nothing either: the retry is
//! counted (rate limits fail closed; the call itself is not refused).
//!
//! Memory is bounded: the store is a fixed table of [`SLOTS`] keys (`mcp_guard.round.<n>`),
//! the slot chosen by a hash of the link; a round opened in a slot held by another link
//! replaces it (whose retry is then counted as new). Each value is one [`Slot`] in JSON, at
//! most [`MAX_SLOT_BYTES`]; a link that would not fit is not stored. So the table never holds
//! more than [`SLOTS`] × [`MAX_SLOT_BYTES`] (2 MiB) of values for every worker together. One
//! link counts at most [`MAX_OPEN`] open rounds (the same call answered `input_required` in
//! parallel, or rounds without a `requestState`). Rounds older than [`TTL_MS`] (the Python
//! SDK's default `requestState` lifetime) are not claimed. One logical call has at most
//! [`MAX_ROUNDS`] free rounds: the answer to its [`MAX_ROUNDS`]-th round opens none, so a server
//! that keeps asking (or a client that keeps declining) costs a hit every [`MAX_ROUNDS`] rounds.
//!
//! Rounds are opened from the answer on the POST's own response stream (2026-07-28 has no
//! resumption and no GET stream); an `input_required` answer correlated from another stream
//! (`crate::correlation`, older revisions) opens none.

use crate::audit::InputHasher;
use crate::host::{ReadError, SharedData};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Number of shared-data slots (keys `mcp_guard.round.0` … `mcp_guard.round.4095`).
pub const SLOTS: u16 = 4096;
/// How long an open round may wait for its retry, in milliseconds (10 minutes: the Python
/// SDK's `RequestStateSecurity` default `ttl`).
pub const TTL_MS: u64 = 10 * 60 * 1000;
/// Most rounds open at once under one link; more answers under the same link are not counted.
pub const MAX_OPEN: u32 = 16;
/// Most rounds of one logical call that are free: a round is numbered 1 when a first call's
/// answer opens it, n + 1 when the answer to a continuation of round n does; round
/// [`MAX_ROUNDS`] + 1 is never opened (the SDKs' default cap on retry rounds is 10).
pub const MAX_ROUNDS: u32 = 10;
/// Largest slot value, in bytes of its JSON form (a SHA-256 link takes about 110; an HMAC link
/// adds its key id).
pub const MAX_SLOT_BYTES: usize = 512;
/// Compare-and-swap attempts per open or claim before giving up (another worker changing the
/// same slot in between each time).
const ATTEMPTS: usize = 4;

/// One slot's value: the rounds open under one link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The link ([`link`]).
    pub link: String,
    /// When the latest round under it was opened, Unix milliseconds.
    pub at_ms: u64,
    /// How many rounds are open under it (1..=[`MAX_OPEN`]).
    pub open: u32,
    /// The number of the latest round opened under it (1..=[`MAX_ROUNDS`]; the highest when
    /// several are open).
    #[serde(default = "first_round")]
    pub round: u32,
}

fn first_round() -> u32 {
    1
}

/// The `arguments` part of a link for a call of `method` whose audit `input_hash` is
/// `input_hash`: that hash for a `tools/call` (it covers `params.arguments` alone), else `""`
/// (for other methods it covers all of `params`, which differ between rounds).
pub fn arguments_part<'a>(method: &str, input_hash: Option<&'a str>) -> &'a str {
    if method == crate::jsonrpc::TOOLS_CALL {
        input_hash.unwrap_or_default()
    } else {
        ""
    }
}

/// The link of a round of the call (`method`, `name`, `arguments`: [`arguments_part`]) that
/// `agent` sent to `server`, with the result's (or the retry's) `request_state` (decoded; `""`
/// when there is none): the input hasher over the JSON array `[server, agent, method, name,
/// arguments, request_state]`, as `sha256:<hex>` or `hmac-sha256:<key_id>:<hex>`
/// ([`InputHasher::hash`]).
pub fn link(
    hasher: &InputHasher,
    server: &str,
    agent: &str,
    call: (&str, &str, &str),
    request_state: &str,
) -> String {
    let (method, name, arguments) = call;
    // A JSON array of strings: unambiguous, whatever the parts contain.
    let parts = [server, agent, method, name, arguments, request_state];
    let bytes = serde_json::to_vec(&parts).unwrap_or_default();
    hasher.hash(&bytes)
}

/// The shared-data key of the slot for `link`.
pub fn slot_key(link: &str) -> String {
    let d = Sha256::digest(link.as_bytes());
    let n = d
        .first()
        .zip(d.get(1))
        .map_or(0, |(a, b)| u16::from_be_bytes([*a, *b]))
        % SLOTS;
    format!("mcp_guard.round.{n}")
}

/// The slot's value, if it holds rounds under `link` younger than [`TTL_MS`] at `now_ms`.
fn live(value: &[u8], link: &str, now_ms: u64) -> Option<Slot> {
    let slot: Slot = serde_json::from_slice(value).ok()?;
    let young = now_ms.saturating_sub(slot.at_ms) <= TTL_MS;
    (slot.link == link && young && slot.open > 0).then_some(slot)
}

/// Opens round number `round` (see [`MAX_ROUNDS`]) under `link` at `now_ms`: one more open
/// round if the slot holds this link (at most [`MAX_OPEN`]), else the slot now holds this link
/// alone. Returns whether it is stored; `false` when `round` is past [`MAX_ROUNDS`], the store
/// cannot be read or written, or the link is too long.
pub fn open(shared: &mut dyn SharedData, link: &str, round: u32, now_ms: u64) -> bool {
    if round > MAX_ROUNDS {
        return false;
    }
    let key = slot_key(link);
    for _ in 0..ATTEMPTS {
        let Ok(current) = shared.get(&key) else {
            return false;
        };
        let (value, cas) = current.map_or((None, None), |(v, cas)| (Some(v), cas));
        let (open, round) =
            value
                .as_deref()
                .and_then(|v| live(v, link, now_ms))
                .map_or((1, round), |slot| {
                    (
                        slot.open.saturating_add(1).min(MAX_OPEN),
                        slot.round.max(round),
                    )
                });
        let slot = Slot {
            link: link.to_owned(),
            at_ms: now_ms,
            open,
            round,
        };
        let Ok(bytes) = serde_json::to_vec(&slot) else {
            return false;
        };
        if bytes.len() > MAX_SLOT_BYTES {
            return false;
        }
        if shared.set(&key, &bytes, cas) {
            return true;
        }
    }
    false
}

/// Claims one round open under `link` at `now_ms` (single use: the slot then counts one
/// fewer). `Ok(Some(n))`: claimed round number `n`, the retry is a continuation. `Ok(None)`: no
/// open round under this link (or other workers kept changing the slot). [`ReadError`]: the
/// store could not be read.
pub fn claim(
    shared: &mut dyn SharedData,
    link: &str,
    now_ms: u64,
) -> Result<Option<u32>, ReadError> {
    let key = slot_key(link);
    for _ in 0..ATTEMPTS {
        let Some((value, cas)) = shared.get(&key)? else {
            return Ok(None);
        };
        let Some(mut slot) = live(&value, link, now_ms) else {
            return Ok(None);
        };
        slot.open = slot.open.saturating_sub(1); // `live` checked it is positive
        let bytes = if slot.open == 0 {
            Vec::new() // shared data has no delete: an empty value is a free slot
        } else {
            serde_json::to_vec(&slot).unwrap_or_default()
        };
        if shared.set(&key, &bytes, cas) {
            return Ok(Some(slot.round));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::{FakeHost, Read, SharedStore};
    use crate::host::Host;

    fn sha() -> InputHasher {
        InputHasher::Sha256
    }

    #[test]
    fn links_are_hashes_of_every_part_and_never_the_raw_state() {
        let a = link(
            &sha(),
            "srv",
            "agent-a",
            ("tools/call", "echo", ""),
            "secret-state",
        );
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64, "{a}");
        assert!(!a.contains("secret"));
        assert_eq!(
            a,
            link(
                &sha(),
                "srv",
                "agent-a",
                ("tools/call", "echo", ""),
                "secret-state"
            )
        );
        // Every part counts, and the parts cannot slide into each other.
        for other in [
            link(
                &sha(),
                "srv2",
                "agent-a",
                ("tools/call", "echo", ""),
                "secret-state",
            ),
            link(
                &sha(),
                "srv",
                "agent-b",
                ("tools/call", "echo", ""),
                "secret-state",
            ),
            link(
                &sha(),
                "srv",
                "agent-a",
                ("prompts/get", "echo", ""),
                "secret-state",
            ),
            link(
                &sha(),
                "srv",
                "agent-a",
                ("tools/call", "echo2", ""),
                "secret-state",
            ),
            link(
                &sha(),
                "srv",
                "agent-a",
                ("tools/call", "echo", ""),
                "secret-statf",
            ),
            link(
                &sha(),
                "srv",
                "agent-a",
                ("tools/call", "echo", "sha256:1"),
                "secret-state",
            ),
            link(
                &sha(),
                "srv",
                "agent-a",
                ("tools/call", "echos", ""),
                "ecret-state",
            ),
        ] {
            assert_ne!(a, other);
        }
        // With an HMAC key, the link cannot be recomputed from a guess of the state.
        let keyed = InputHasher::hmac(vec![7; 32], "k1".into());
        let b = link(
            &keyed,
            "srv",
            "agent-a",
            ("tools/call", "echo", ""),
            "secret-state",
        );
        assert!(b.starts_with("hmac-sha256:k1:"), "{b}");
        assert_ne!(a[7..], b[15..]);
    }

    #[test]
    fn an_open_round_is_claimed_once_by_its_link_on_any_worker() {
        let shared = SharedStore::default();
        let mut first = FakeHost::new(shared.clone(), 0);
        let mut second = FakeHost::new(shared, 0);
        let l = link(&sha(), "s", "a", ("tools/call", "t", ""), "st");
        let forged = link(&sha(), "s", "a", ("tools/call", "t", ""), "st2");
        assert!(open(first.shared(), &l, 1, 1_000));
        assert_eq!(claim(second.shared(), &forged, 2_000), Ok(None));
        assert_eq!(claim(second.shared(), &l, 2_000), Ok(Some(1)));
        // Single use.
        assert_eq!(claim(first.shared(), &l, 2_000), Ok(None));
        assert_eq!(claim(second.shared(), &l, 2_000), Ok(None));
    }

    #[test]
    fn parallel_rounds_under_one_link_are_counted_up_to_the_bound() {
        let mut h = FakeHost::new(SharedStore::default(), 0);
        let l = link(&sha(), "s", "a", ("tools/call", "t", ""), "");
        for _ in 0..MAX_OPEN + 5 {
            assert!(open(h.shared(), &l, 1, 10));
        }
        let claimed = (0..MAX_OPEN + 5)
            .filter(|_| claim(h.shared(), &l, 20) == Ok(Some(1)))
            .count();
        assert_eq!(claimed, MAX_OPEN as usize);
    }

    #[test]
    fn expired_and_evicted_rounds_are_not_claimed() {
        let mut h = FakeHost::new(SharedStore::default(), 0);
        let l = link(&sha(), "s", "a", ("tools/call", "t", ""), "x");
        assert!(open(h.shared(), &l, 1, 0));
        assert_eq!(claim(h.shared(), &l, TTL_MS + 1), Ok(None));
        // An expired round does not count toward a new one.
        assert!(open(h.shared(), &l, 1, TTL_MS + 2));
        assert_eq!(claim(h.shared(), &l, TTL_MS + 3), Ok(Some(1)));
        assert_eq!(claim(h.shared(), &l, TTL_MS + 3), Ok(None));
        // Another link in the same slot replaces it.
        let other = (0..100_000)
            .map(|i| link(&sha(), "s", "a", ("tools/call", "t", ""), &i.to_string()))
            .find(|o| *o != l && slot_key(o) == slot_key(&l))
            .unwrap();
        assert!(open(h.shared(), &l, 1, 5));
        assert!(open(h.shared(), &other, 1, 6));
        assert_eq!(claim(h.shared(), &l, 7), Ok(None));
        assert_eq!(claim(h.shared(), &other, 7), Ok(Some(1)));
    }

    #[test]
    fn an_unreadable_store_claims_nothing_and_says_so() {
        let mut h = FakeHost::new(SharedStore::default(), 0);
        let l = link(&sha(), "s", "a", ("tools/call", "t", ""), "x");
        assert!(open(h.shared(), &l, 1, 0));
        h.failing = vec![Read::SharedData];
        assert_eq!(claim(h.shared(), &l, 1), Err(ReadError));
        assert!(!open(h.shared(), &l, 1, 1));
        h.failing.clear();
        assert_eq!(claim(h.shared(), &l, 1), Ok(Some(1)));
    }

    #[test]
    fn a_logical_call_has_at_most_max_rounds_free_rounds() {
        let mut h = FakeHost::new(SharedStore::default(), 0);
        let l = link(&sha(), "s", "a", ("tools/call", "t", ""), "x");
        assert!(open(h.shared(), &l, MAX_ROUNDS, 0));
        assert_eq!(claim(h.shared(), &l, 1), Ok(Some(MAX_ROUNDS)));
        assert!(!open(h.shared(), &l, MAX_ROUNDS + 1, 2));
        assert_eq!(claim(h.shared(), &l, 3), Ok(None));
        // Several open under one link: the highest round is kept.
        assert!(open(h.shared(), &l, 3, 4));
        assert!(open(h.shared(), &l, 1, 4));
        assert_eq!(claim(h.shared(), &l, 5), Ok(Some(3)));
    }

    #[test]
    fn slots_are_bounded() {
        let long_key = InputHasher::hmac(vec![1; 32], "k".repeat(MAX_SLOT_BYTES));
        let l = link(&long_key, "s", "a", ("tools/call", "t", ""), "x");
        let mut h = FakeHost::new(SharedStore::default(), 0);
        assert!(
            !open(h.shared(), &l, 1, 0),
            "a value over MAX_SLOT_BYTES is not stored"
        );
        let n: u16 = slot_key("x").rsplit('.').next().unwrap().parse().unwrap();
        assert!(n < SLOTS);
    }
}
