//! Audit records: one JSON object per MCP call, written to Envoy filter state
//! (`wasm.mcp_audit`) and printed by Envoy's file access log (docs/audit-record.md; schema in
//! `schemas/audit-record.schema.json`).
//!
//! A stream carrying a batch produces one record per message, joined by `\n`, so the access
//! log still has one object per line and one line per call. Raw arguments are never written:
//! only `input_hash`, the SHA-256 of their exact bytes.

use crate::identity::{IdentityError, IdentitySource};
use crate::jsonrpc::Id;
use crate::policy::Decision;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// How a call ended, as the audit record's `output_status` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStatus {
    /// The upstream answered with a result (or accepted a notification/response with 2xx).
    Success,
    /// The upstream answered with a JSON-RPC error, or an HTTP 4xx.
    Error,
    /// A tools/call result with `isError: true`.
    ToolError,
    /// mcp-guard refused the call by policy.
    Denied,
    /// A rate limiter answered HTTP 429.
    RateLimited,
    /// No usable response: HTTP 5xx, a reset, or a stream that ended without the response.
    UpstreamError,
    /// mcp-guard refused a malformed request.
    InvalidRequest,
    /// The request was forwarded and its stream ended without the response, which the server
    /// will send on another stream of the same session: the legacy HTTP+SSE transport (POST
    /// answered `202 Accepted`), or a Streamable HTTP SSE stream closed before the response
    /// (resumption with `Last-Event-ID`). The outcome is a later record with
    /// `"correlated": true` and the same session and request id (docs/audit-record.md).
    Deferred,
    /// The client went away before the call ended: before its request body was complete (never
    /// forwarded), or before the response was delivered.
    ClientDisconnected,
    /// The server answered with a result whose `resultType` is `input_required` (MCP
    /// 2026-07-28, "Multi Round-Trip Requests"): it needs input from the client, which retries
    /// the call with a new id. Not the call's final outcome; the retry has its own record.
    InputRequired,
}

/// Per-stream facts shared by every record of the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamFacts {
    /// Request start, Unix time in milliseconds.
    pub start_ms: u64,
    /// The resolved agent id.
    pub agent_id: String,
    /// Which identity source decided the agent id or ended resolution
    /// ([`crate::identity::Resolution::source`]); `None` before resolution, and when no source
    /// presented a value and the request was refused.
    pub identity_source: Option<IdentitySource>,
    /// Why no source identified the request ([`crate::identity::Resolution::error`]); `None`
    /// when one did.
    pub identity_error: Option<IdentityError>,
    /// The configured server id, else the upstream cluster name, else `unknown`.
    pub server_id: String,
    /// The HTTP request method (`POST`, `GET`, `DELETE`, ...).
    pub http_method: String,
    /// The HTTP status sent downstream, once known.
    pub http_status: Option<u32>,
    /// `Mcp-Session-Id` of the request, else the one the response assigned.
    pub session_id: Option<String>,
    /// W3C `traceparent` trace-id, else `x-request-id`.
    pub trace_id: Option<String>,
    /// `policy.name` of the configuration that decided.
    pub policy_name: Option<String>,
    /// `policy.version` of the configuration that decided.
    pub policy_version: Option<String>,
}

/// The per-call part of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// JSON-RPC method; `None` for a client-sent response or a non-POST request.
    pub method: Option<String>,
    /// Tool of a `tools/call`.
    pub tool_name: Option<String>,
    /// Prompt of a `prompts/get`.
    pub prompt_name: Option<String>,
    /// URI of a `resources/read`.
    pub resource_uri: Option<String>,
    /// JSON-RPC id; `None` for notifications.
    pub request_id: Option<Id>,
    /// `sha256:<hex>` of the hashed bytes ([`input_hash`]).
    pub input_hash: Option<String>,
    /// The policy decision.
    pub decision: Decision,
    /// How the call ended; `None` until known.
    pub output_status: Option<OutputStatus>,
    /// JSON-RPC error code, when the call ended in one.
    pub error_code: Option<i64>,
    /// For an outcome seen on another stream than the request's (`crate::correlation`): the
    /// facts of the stream that forwarded the request (agent, server, start, trace, session).
    /// The record then says `"correlated": true`.
    pub origin: Option<Box<StreamFacts>>,
    /// When the outcome became known, Unix milliseconds (set when the record is first written
    /// with an `output_status`); `latency_ms` ends here.
    pub settled_ms: Option<u64>,
    /// Why mcp-guard refused the server's response to this call: a
    /// [`crate::curation::Unreadable::reason`] label (`response_*`, a fixed set); `None` when it
    /// did not. The record then has `"refusal": "<label>"`.
    pub refusal: Option<&'static str>,
    /// The verified `x-mcp-header` arguments of a `tools/call` that have a `param_tags` entry
    /// (`crate::params`): `(marking name, hash)` pairs, the hash taken over the value's bytes
    /// as tagged with the configured input hasher ([`InputHasher::hash`]), never the value.
    /// Empty for every other call; the record then has no `params` member.
    pub params: Vec<(String, String)>,
    /// The call's place in a multi round-trip call (MCP 2026-07-28, `crate::rounds`).
    pub round: Round,
    /// The MCP revision the request claims: its `MCP-Protocol-Version` header, else the
    /// message's `params._meta` `io.modelcontextprotocol/protocolVersion` string, else `None`
    /// (written `null`). As sent, cut to at most [`MAX_PROTOCOL_VERSION_LEN`] bytes (at a
    /// character boundary; such a value is never an accepted revision).
    pub protocol_version: Option<String>,
    /// Tool definition drift (`crate::pins`): on a `tools/list` record, each drifted tool the
    /// response showed (at most [`crate::pins::MAX_DRIFT_ENTRIES`], in list order); on a
    /// `tools/call` record, its tool's drift. Empty: the record has no `drift` member.
    pub drift: Vec<crate::pins::DriftEntry>,
    /// More drifted tools than [`crate::pins::MAX_DRIFT_ENTRIES`] were seen: the record says
    /// `"drift_truncated": true`.
    pub drift_truncated: bool,
    /// Why pins denied (or, in dry-run, would deny) this `tools/call`; the record's `refusal`
    /// is then its reason (`tool_drift`, `tool_unpinned`, `tool_unverified`).
    pub pin: Option<crate::pins::PinDenial>,
}

impl Call {
    /// Adds drifted tools to the record, keeping at most [`crate::pins::MAX_DRIFT_ENTRIES`]
    /// (the rest set `drift_truncated`).
    pub fn add_drift(&mut self, drift: impl IntoIterator<Item = crate::pins::DriftEntry>) {
        for d in drift {
            if self.drift.len() < crate::pins::MAX_DRIFT_ENTRIES {
                self.drift.push(d);
            } else {
                self.drift_truncated = true;
            }
        }
    }
}

/// Longest `protocol_version` kept in an audit record, in bytes (revisions are 10).
pub const MAX_PROTOCOL_VERSION_LEN: usize = 64;

/// `v` cut to at most [`MAX_PROTOCOL_VERSION_LEN`] bytes at a character boundary.
pub fn bounded_version(v: &str) -> String {
    let mut end = v.len().min(MAX_PROTOCOL_VERSION_LEN);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v.get(..end).unwrap_or_default().to_owned()
}

/// A call's place in a multi round-trip call (MCP 2026-07-28 "Multi Round-Trip Requests";
/// `crate::rounds`). Written only when set, so records of other calls are unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// The call was answered `input_required`: the link of the round it opened
    /// ([`crate::rounds::link`]). The record then has `"round_opens": "<link>"`.
    pub opens: Option<String>,
    /// The call is a retry (its `params` carry `requestState` or `inputResponses`). The record
    /// then has `"round_continues"` and `"round_matched"`.
    pub continues: Option<Continuation>,
}

/// A retry of a multi round-trip call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    /// The link it presents (`round_continues`); `None` when its `requestState` is longer than
    /// [`crate::response::MAX_REQUEST_STATE_LEN`] (no round can have it).
    pub link: Option<String>,
    /// It claimed a round mcp-guard opened (`round_matched`): a continuation, not counted again
    /// by the `rate_limit_service`. False: counted as a new call.
    pub matched: bool,
    /// The number of the round it continued ([`crate::rounds::MAX_ROUNDS`]); 0 when not
    /// matched. Not written to the record; the round its answer opens is one more.
    pub round: u32,
}

impl Call {
    /// A call with only the policy decision known (used for non-POST requests and refusals).
    pub fn bare(decision: Decision) -> Call {
        Call {
            method: None,
            tool_name: None,
            prompt_name: None,
            resource_uri: None,
            request_id: None,
            input_hash: None,
            decision,
            output_status: None,
            error_code: None,
            origin: None,
            settled_ms: None,
            refusal: None,
            params: Vec::new(),
            round: Round::default(),
            protocol_version: None,
            drift: Vec::new(),
            drift_truncated: false,
            pin: None,
        }
    }
}

/// `sha256:` followed by the lower-case hex SHA-256 of `bytes` (FIPS 180-4).
pub fn input_hash(bytes: &[u8]) -> String {
    hex_tagged("sha256:", &Sha256::digest(bytes))
}

fn hex_tagged(prefix: &str, digest: &[u8]) -> String {
    let mut out = String::with_capacity(prefix.len() + 2 * digest.len());
    out.push_str(prefix);
    for &b in digest {
        out.push(char::from(hex_digit(b >> 4)));
        out.push(char::from(hex_digit(b & 0xf)));
    }
    out
}

/// The lower-case hex digit of the low four bits of `n`.
fn hex_digit(n: u8) -> u8 {
    b"0123456789abcdef"
        .get(usize::from(n & 0xf))
        .copied()
        .unwrap_or(b'0')
}

/// How the audit record's `input_hash` is computed (plugin configuration `input_hash`).
#[derive(Clone, PartialEq, Eq)]
pub enum InputHasher {
    /// `sha256:<hex>`: plain SHA-256. Anyone can test a guess of low-entropy arguments (a user
    /// id, an account number) against the log.
    Sha256,
    /// `hmac-sha256:<key_id>:<hex>`: HMAC-SHA256 (RFC 2104) with a secret key, so guesses
    /// cannot be tested without the key. `key_id` names the key, for rotation.
    Hmac {
        /// The secret key (at least 32 bytes).
        key: Vec<u8>,
        /// The key's name, written into every hash.
        key_id: String,
    },
}

impl std::fmt::Debug for InputHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputHasher::Sha256 => f.write_str("Sha256"),
            // Never print the key (configuration dumps, logs).
            InputHasher::Hmac { key_id, .. } => write!(f, "Hmac {{ key_id: {key_id:?} }}"),
        }
    }
}

impl InputHasher {
    /// A keyed hasher.
    pub fn hmac(key: Vec<u8>, key_id: String) -> InputHasher {
        InputHasher::Hmac { key, key_id }
    }

    /// The `input_hash` of `bytes` (the exact argument bytes).
    pub fn hash(&self, bytes: &[u8]) -> String {
        match self {
            InputHasher::Sha256 => input_hash(bytes),
            InputHasher::Hmac { key, key_id } => {
                // HMAC accepts keys of any length; new_from_slice cannot fail.
                match <Hmac<Sha256> as Mac>::new_from_slice(key) {
                    Ok(mut mac) => {
                        mac.update(bytes);
                        let tag = mac.finalize().into_bytes();
                        hex_tagged(&format!("hmac-sha256:{key_id}:"), &tag)
                    }
                    Err(_) => input_hash(bytes),
                }
            }
        }
    }
}

/// Renders the records of a stream: one compact JSON object per call, joined by `\n`.
///
/// `latency_ms` runs from the stream's (or origin's) start to the call's `settled_ms`, else to
/// `now_ms` (Unix ms); a call whose status is still unknown is written as `upstream_error` (no
/// usable response was seen). A call with an `origin` (its outcome was
/// correlated from another stream) takes agent, server, timestamp, latency, session and trace
/// from that origin, and HTTP method and status from this stream.
///
/// Members, in this order: `timestamp`, `agent_id`, `identity_source`, `identity_error`,
/// `server_id`, `method`, `http_method`,
/// `tool_name`, `prompt_name`, `resource_uri`, `request_id`, `input_hash`, `decision`,
/// `output_status`, `error_code`, `latency_ms`, `http_status`, `session_id`, `trace_id`,
/// `policy_name`, `policy_version`, `protocol_version`, `refusal` only when set, `correlated`
/// only when true, `params` (an object of marking name to hash) only when not empty, and
/// `round_opens`, `round_continues` + `round_matched` only when set ([`Round`]), `drift` (an
/// array of `{"tool", "hash", "pin"}`) only when not empty and `drift_truncated` only when true;
/// other absent values are `null`. `refusal` is also the pin denial's reason
/// ([`Call::pin`]).
/// Written directly (the bytes serde_json would write for the same struct), one allocation.
pub fn render(facts: &StreamFacts, calls: &[Call], now_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 * calls.len().max(1));
    for (i, call) in calls.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        let origin = call.origin.as_deref().unwrap_or(facts);
        out.extend_from_slice(b"{\"timestamp\":\"");
        push_rfc3339_millis(&mut out, origin.start_ms);
        out.extend_from_slice(b"\",\"agent_id\":");
        push_str(&mut out, &origin.agent_id);
        out.extend_from_slice(b",\"identity_source\":");
        push_opt_str(&mut out, origin.identity_source.map(IdentitySource::as_str));
        out.extend_from_slice(b",\"identity_error\":");
        push_opt_str(&mut out, origin.identity_error.map(IdentityError::as_str));
        out.extend_from_slice(b",\"server_id\":");
        push_str(&mut out, &origin.server_id);
        out.extend_from_slice(b",\"method\":");
        push_opt_str(&mut out, call.method.as_deref());
        out.extend_from_slice(b",\"http_method\":");
        push_str(&mut out, &facts.http_method);
        out.extend_from_slice(b",\"tool_name\":");
        push_opt_str(&mut out, call.tool_name.as_deref());
        out.extend_from_slice(b",\"prompt_name\":");
        push_opt_str(&mut out, call.prompt_name.as_deref());
        out.extend_from_slice(b",\"resource_uri\":");
        push_opt_str(&mut out, call.resource_uri.as_deref());
        out.extend_from_slice(b",\"request_id\":");
        push_id(&mut out, call.request_id.as_ref());
        out.extend_from_slice(b",\"input_hash\":");
        push_opt_str(&mut out, call.input_hash.as_deref());
        out.extend_from_slice(b",\"decision\":\"");
        out.extend_from_slice(call.decision.as_str().as_bytes());
        out.extend_from_slice(b"\",\"output_status\":\"");
        let status = call.output_status.unwrap_or(OutputStatus::UpstreamError);
        out.extend_from_slice(status.as_str().as_bytes());
        out.extend_from_slice(b"\",\"error_code\":");
        match call.error_code {
            Some(code) => {
                if code < 0 {
                    out.push(b'-');
                }
                push_u64(&mut out, code.unsigned_abs());
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"latency_ms\":");
        let latency = call
            .settled_ms
            .unwrap_or(now_ms)
            .saturating_sub(origin.start_ms);
        push_u64(&mut out, latency);
        out.extend_from_slice(b",\"http_status\":");
        match facts.http_status {
            Some(status) => push_u64(&mut out, u64::from(status)),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"session_id\":");
        push_opt_str(&mut out, origin.session_id.as_deref());
        out.extend_from_slice(b",\"trace_id\":");
        push_opt_str(&mut out, origin.trace_id.as_deref());
        out.extend_from_slice(b",\"policy_name\":");
        push_opt_str(&mut out, origin.policy_name.as_deref());
        out.extend_from_slice(b",\"policy_version\":");
        push_opt_str(&mut out, origin.policy_version.as_deref());
        out.extend_from_slice(b",\"protocol_version\":");
        push_opt_str(&mut out, call.protocol_version.as_deref());
        if let Some(refusal) = call
            .refusal
            .or(call.pin.map(crate::pins::PinDenial::reason))
        {
            out.extend_from_slice(b",\"refusal\":");
            push_str(&mut out, refusal);
        }
        if call.origin.is_some() {
            out.extend_from_slice(b",\"correlated\":true");
        }
        if !call.params.is_empty() {
            out.extend_from_slice(b",\"params\":{");
            for (i, (name, hash)) in call.params.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_str(&mut out, name);
                out.push(b':');
                push_str(&mut out, hash);
            }
            out.push(b'}');
        }
        if let Some(link) = &call.round.opens {
            out.extend_from_slice(b",\"round_opens\":");
            push_str(&mut out, link);
        }
        if let Some(retry) = &call.round.continues {
            out.extend_from_slice(b",\"round_continues\":");
            push_opt_str(&mut out, retry.link.as_deref());
            out.extend_from_slice(b",\"round_matched\":");
            out.extend_from_slice(if retry.matched { b"true" } else { b"false" });
        }
        if !call.drift.is_empty() {
            out.extend_from_slice(b",\"drift\":[");
            for (i, d) in call.drift.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"tool\":");
                push_str(&mut out, &d.tool);
                out.extend_from_slice(b",\"hash\":");
                push_opt_str(&mut out, d.hash.as_deref());
                out.extend_from_slice(b",\"pin\":");
                push_opt_str(&mut out, d.pin.as_deref());
                out.push(b'}');
            }
            out.push(b']');
        }
        if call.drift_truncated {
            out.extend_from_slice(b",\"drift_truncated\":true");
        }
        out.push(b'}');
    }
    out
}

impl OutputStatus {
    /// The record's spelling (`success`, `tool_error`, ...), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStatus::Success => "success",
            OutputStatus::Error => "error",
            OutputStatus::ToolError => "tool_error",
            OutputStatus::Denied => "denied",
            OutputStatus::RateLimited => "rate_limited",
            OutputStatus::UpstreamError => "upstream_error",
            OutputStatus::InvalidRequest => "invalid_request",
            OutputStatus::Deferred => "deferred",
            OutputStatus::ClientDisconnected => "client_disconnected",
            OutputStatus::InputRequired => "input_required",
        }
    }
}

/// A JSON string with serde_json's escaping (RFC 8259 §7): `"` and `\\`, the short forms
/// `\b \f \n \r \t`, `\u00XX` (lower-case hex) for other control characters; nothing else.
fn push_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        out.push(b'\\');
        out.push(short);
        if short == b'u' {
            out.extend_from_slice(b"00");
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b));
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
    out.push(b'"');
}

fn push_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// The id exactly as JSON: numbers keep their wire text (no rounding beyond 2^53 or i64); a
/// number that is not valid JSON is written as `null`.
fn push_id(out: &mut Vec<u8>, id: Option<&Id>) {
    match id {
        Some(Id::Str(s)) => push_str(out, s),
        Some(Id::Number(raw)) => match serde_json::from_str::<&serde_json::value::RawValue>(raw) {
            Ok(raw) => out.extend_from_slice(raw.get().as_bytes()),
            Err(_) => out.extend_from_slice(b"null"),
        },
        None => out.extend_from_slice(b"null"),
    }
}

/// Decimal digits of `n`.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        if let Some(d) = digits.get_mut(at) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(at..).unwrap_or_default());
}

/// Formats Unix milliseconds as RFC 3339 UTC with milliseconds, e.g.
/// `2026-11-22T00:15:41.123Z` (proleptic Gregorian calendar; H. Hinnant's civil-from-days).
pub fn rfc3339_millis(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let millis = unix_ms % 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

/// [`rfc3339_millis`] appended to `out` without formatting machinery (years 0-9999; others,
/// which no clock reports, go through [`rfc3339_millis`]).
fn push_rfc3339_millis(out: &mut Vec<u8>, unix_ms: u64) {
    // 253402300800000 ms is 10000-01-01T00:00:00Z.
    if unix_ms >= 253_402_300_800_000 {
        out.extend_from_slice(rfc3339_millis(unix_ms).as_bytes());
        return;
    }
    let secs = unix_ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Hinnant's civil-from-days for days >= 0 (1970 onwards).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let two = |n: u64| [b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8];
    let [y0, y1] = two(year / 100);
    let [y2, y3] = two(year);
    let [mo0, mo1] = two(month);
    let [d0, d1] = two(day);
    let [h0, h1] = two(rem / 3600);
    let [mi0, mi1] = two(rem % 3600 / 60);
    let [s0, s1] = two(rem % 60);
    let ms = unix_ms % 1000;
    let [m1, m2] = two(ms);
    out.extend_from_slice(&[
        y0,
        y1,
        y2,
        y3,
        b'-',
        mo0,
        mo1,
        b'-',
        d0,
        d1,
        b'T',
        h0,
        h1,
        b':',
        mi0,
        mi1,
        b':',
        s0,
        s1,
        b'.',
        b'0' + (ms / 100) as u8,
        m1,
        m2,
        b'Z',
    ]);
}

/// The trace id of a W3C `traceparent` header (Trace Context §3.2: `version-traceid-parentid-flags`,
/// trace-id 32 lower-case hex, not all zero); `None` if the value is not of that form.
pub fn trace_id_from_traceparent(value: &str) -> Option<&str> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && hex(flags, 2);
    valid.then_some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_795_306_541_123),
            "2026-11-22T00:15:41.123Z"
        );
        assert_eq!(
            rfc3339_millis(4_102_444_799_999),
            "2099-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn hashes_are_prefixed_lowercase_sha256() {
        assert_eq!(
            input_hash(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn traceparent() {
        assert_eq!(
            trace_id_from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id_from_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            trace_id_from_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id_from_traceparent("garbage"), None);
    }

    #[test]
    fn keyed_hashes_need_the_key() {
        let a = InputHasher::hmac(vec![7u8; 32], "k1".into());
        let b = InputHasher::hmac(vec![8u8; 32], "k2".into());
        let (ha, hb) = (a.hash(b"{\"user\":42}"), b.hash(b"{\"user\":42}"));
        assert!(ha.starts_with("hmac-sha256:k1:") && ha.len() == "hmac-sha256:k1:".len() + 64);
        assert_ne!(ha[15..], hb[15..]);
        assert_ne!(ha, InputHasher::Sha256.hash(b"{\"user\":42}"));
        // RFC 4231 test case 2 ("Jefe").
        let jefe = InputHasher::hmac(b"Jefe".to_vec(), "t".into());
        assert_eq!(
            jefe.hash(b"what do ya want for nothing?"),
            "hmac-sha256:t:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(
            !format!("{a:?}").contains('7'),
            "the key must not be printed"
        );
    }

    #[test]
    fn records_render_one_line_per_call() {
        let facts = StreamFacts {
            start_ms: 1_795_306_541_123,
            agent_id: "demo-agent".into(),
            identity_source: Some(IdentitySource::Header),
            identity_error: None,
            server_id: "demo".into(),
            http_method: "POST".into(),
            http_status: Some(200),
            session_id: Some("s1".into()),
            trace_id: None,
            policy_name: Some("demo".into()),
            policy_version: Some("7".into()),
        };
        let mut a = Call::bare(Decision::Allow);
        a.method = Some("tools/call".into());
        a.tool_name = Some("echo".into());
        a.request_id = Some(Id::Number("1".into()));
        a.input_hash = Some(input_hash(b"{}"));
        a.output_status = Some(OutputStatus::Success);
        let mut b = Call::bare(Decision::Deny);
        b.request_id = Some(Id::Number("123456789012345678901234567890".into()));
        b.output_status = Some(OutputStatus::Denied);
        b.error_code = Some(-32003);
        let text = String::from_utf8(render(&facts, &[a, b], 1_795_306_541_150)).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["timestamp"], "2026-11-22T00:15:41.123Z");
        assert_eq!(lines[0]["request_id"], 1);
        assert_eq!(lines[0]["latency_ms"], 27);
        assert_eq!(lines[0]["output_status"], "success");
        assert_eq!(lines[0]["prompt_name"], serde_json::Value::Null);
        assert_eq!(lines[0]["identity_source"], "header");
        assert_eq!(lines[0]["identity_error"], serde_json::Value::Null);
        assert!(
            text.contains(r#""request_id":123456789012345678901234567890,"#),
            "{text}"
        );
        assert_eq!(lines[1]["decision"], "deny");
        assert_eq!(lines[1]["error_code"], -32003);
        assert!(!text.contains("arguments"));
    }
    /// The serde rendering this module used before, as the reference.
    #[derive(serde::Serialize)]
    struct Record<'a> {
        timestamp: &'a str,
        agent_id: &'a str,
        identity_source: Option<IdentitySource>,
        identity_error: Option<IdentityError>,
        server_id: &'a str,
        method: Option<&'a str>,
        http_method: &'a str,
        tool_name: Option<&'a str>,
        prompt_name: Option<&'a str>,
        resource_uri: Option<&'a str>,
        request_id: Option<Box<serde_json::value::RawValue>>,
        input_hash: Option<&'a str>,
        decision: &'a str,
        output_status: OutputStatus,
        error_code: Option<i64>,
        latency_ms: u64,
        http_status: Option<u32>,
        session_id: Option<&'a str>,
        trace_id: Option<&'a str>,
        policy_name: Option<&'a str>,
        policy_version: Option<&'a str>,
        protocol_version: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        refusal: Option<&'a str>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        correlated: bool,
        #[serde(skip_serializing_if = "Params::is_empty")]
        params: Params<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        round_opens: Option<&'a str>,
        #[serde(flatten)]
        continues: Option<Continues<'a>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        drift: Vec<DriftRef<'a>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        drift_truncated: bool,
    }

    #[derive(Serialize)]
    struct DriftRef<'a> {
        tool: &'a str,
        hash: Option<&'a str>,
        pin: Option<&'a str>,
    }

    /// `params` as a JSON object in the order of the pairs.
    struct Params<'a>(&'a [(String, String)]);

    impl Params<'_> {
        fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
    }

    impl serde::Serialize for Params<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = s.serialize_map(Some(self.0.len()))?;
            for (k, v) in self.0 {
                map.serialize_entry(k, v)?;
            }
            map.end()
        }
    }

    #[derive(Serialize)]
    struct Continues<'a> {
        round_continues: Option<&'a str>,
        round_matched: bool,
    }

    fn reference(facts: &StreamFacts, calls: &[Call], now_ms: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, call) in calls.iter().enumerate() {
            if i > 0 {
                out.push(b'\n');
            }
            let origin = call.origin.as_deref().unwrap_or(facts);
            let timestamp = rfc3339_millis(origin.start_ms);
            let record = Record {
                timestamp: &timestamp,
                agent_id: &origin.agent_id,
                identity_source: origin.identity_source,
                identity_error: origin.identity_error,
                server_id: &origin.server_id,
                method: call.method.as_deref(),
                http_method: &facts.http_method,
                tool_name: call.tool_name.as_deref(),
                prompt_name: call.prompt_name.as_deref(),
                resource_uri: call.resource_uri.as_deref(),
                request_id: call
                    .request_id
                    .as_ref()
                    .and_then(|id| serde_json::value::RawValue::from_string(id.to_json()).ok()),
                input_hash: call.input_hash.as_deref(),
                decision: call.decision.as_str(),
                output_status: call.output_status.unwrap_or(OutputStatus::UpstreamError),
                error_code: call.error_code,
                latency_ms: call
                    .settled_ms
                    .unwrap_or(now_ms)
                    .saturating_sub(origin.start_ms),
                http_status: facts.http_status,
                session_id: origin.session_id.as_deref(),
                trace_id: origin.trace_id.as_deref(),
                policy_name: origin.policy_name.as_deref(),
                policy_version: origin.policy_version.as_deref(),
                protocol_version: call.protocol_version.as_deref(),
                refusal: call
                    .refusal
                    .or(call.pin.map(crate::pins::PinDenial::reason)),
                correlated: call.origin.is_some(),
                params: Params(&call.params),
                round_opens: call.round.opens.as_deref(),
                continues: call.round.continues.as_ref().map(|c| Continues {
                    round_continues: c.link.as_deref(),
                    round_matched: c.matched,
                }),
                drift: call
                    .drift
                    .iter()
                    .map(|d| DriftRef {
                        tool: &d.tool,
                        hash: d.hash.as_deref(),
                        pin: d.pin.as_deref(),
                    })
                    .collect(),
                drift_truncated: call.drift_truncated,
            };
            serde_json::to_writer(&mut out, &record).unwrap();
        }
        out
    }

    #[test]
    fn records_are_the_bytes_serde_wrote() {
        let odd: String = (0u8..0x80)
            .map(char::from)
            .chain("é€😀\u{2028}".chars())
            .collect();
        let statuses = [
            None,
            Some(OutputStatus::Success),
            Some(OutputStatus::Error),
            Some(OutputStatus::ToolError),
            Some(OutputStatus::Denied),
            Some(OutputStatus::RateLimited),
            Some(OutputStatus::UpstreamError),
            Some(OutputStatus::InvalidRequest),
            Some(OutputStatus::Deferred),
            Some(OutputStatus::ClientDisconnected),
            Some(OutputStatus::InputRequired),
        ];
        let ids = [
            None,
            Some(Id::Number("7".into())),
            Some(Id::Number("-123456789012345678901234567890".into())),
            Some(Id::Number(" 12 ".into())),
            Some(Id::Number("1x".into())),
            Some(Id::Str(odd.clone())),
        ];
        for (n, start) in [
            0u64,
            951_782_400_000,
            1_795_306_541_123,
            4_102_444_799_999,
            253_402_300_799_999,
            253_402_300_800_000,
            u64::MAX / 2,
        ]
        .into_iter()
        .enumerate()
        {
            let facts = StreamFacts {
                start_ms: start,
                agent_id: odd.clone(),
                identity_source: [
                    None,
                    Some(IdentitySource::Header),
                    Some(IdentitySource::JwtClaim),
                    Some(IdentitySource::PeerUriSan),
                    Some(IdentitySource::Fallback),
                ][n % 5],
                identity_error: [
                    None,
                    Some(IdentityError::Absent),
                    Some(IdentityError::Malformed),
                    Some(IdentityError::Repeated),
                    Some(IdentityError::PrefixMismatch),
                    Some(IdentityError::Unreadable),
                ][n % 6],
                server_id: "demo".into(),
                http_method: "POST".into(),
                http_status: [None, Some(0), Some(200), Some(u32::MAX)][n % 4],
                session_id: Some("s\"1".into()),
                trace_id: None,
                policy_name: Some(odd.clone()),
                policy_version: None,
            };
            let mut calls = Vec::new();
            for (i, status) in statuses.iter().enumerate() {
                let mut c =
                    Call::bare([Decision::Allow, Decision::Deny, Decision::DryRunDeny][i % 3]);
                c.method = Some("tools/call".into());
                c.tool_name = (i % 2 == 0).then(|| odd.clone());
                c.resource_uri = Some(format!("file:///{i}\n"));
                c.request_id = ids[i % ids.len()].clone();
                c.input_hash = Some(input_hash(&[i as u8]));
                c.output_status = *status;
                c.error_code = [None, Some(-32003), Some(i64::MIN), Some(i64::MAX), Some(0)][i % 5];
                c.settled_ms = (i % 3 == 0).then_some(start.wrapping_add(i as u64));
                if i % 4 == 1 {
                    c.params = vec![
                        (odd.clone(), input_hash(b"us-west1")),
                        ("Tenant".into(), input_hash(b"42")),
                    ];
                }
                c.round.opens = (i % 2 == 1).then(|| format!("sha256:{i}\"{odd}"));
                c.round.continues = (i % 3 != 0).then(|| Continuation {
                    link: (i % 4 != 0).then(|| format!("hmac-sha256:k:{i}")),
                    matched: i % 5 == 0,
                    round: 1,
                });
                if i % 3 == 2 {
                    c.add_drift((0..=i).map(|k| crate::pins::DriftEntry {
                        tool: format!("{odd}{k}"),
                        hash: (k % 2 == 0).then(|| input_hash(&[k as u8])),
                        pin: (k % 3 != 0).then(|| input_hash(b"pin")),
                    }));
                }
                if i == 7 {
                    c.add_drift((0..40).map(|k| crate::pins::DriftEntry {
                        tool: k.to_string(),
                        hash: None,
                        pin: None,
                    }));
                    assert_eq!(c.drift.len(), crate::pins::MAX_DRIFT_ENTRIES);
                    assert!(c.drift_truncated);
                }
                if i == 5 {
                    c.pin = Some(crate::pins::PinDenial::Drift);
                }
                if i == 4 {
                    c.origin = Some(Box::new(StreamFacts {
                        start_ms: 1,
                        trace_id: Some("t".into()),
                        identity_source: Some(IdentitySource::PeerUriSan),
                        identity_error: Some(IdentityError::Malformed),
                        ..facts.clone()
                    }));
                }
                calls.push(c);
            }
            let now = start.wrapping_add(5);
            let new = render(&facts, &calls, now);
            assert_eq!(
                String::from_utf8(new).unwrap(),
                String::from_utf8(reference(&facts, &calls, now)).unwrap()
            );
        }
    }
}
