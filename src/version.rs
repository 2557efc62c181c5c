//! MCP protocol revisions: which ones mcp-guard accepts, and the version checks of a request
//! in both directions (the `MCP-Protocol-Version` header and the body's `params._meta`).
//!
//! Sources: MCP 2026-07-28 "Transports / Streamable HTTP" (Protocol Version Header, Standard
//! Request Headers, Server Validation, Backward Compatibility), `basic/versioning`, and the
//! schema's `UnsupportedProtocolVersionError` / `HeaderMismatchError`; SEP-2575 / SEP-2567
//! (stateless requests, the per-request `_meta` envelope); the order of the checks is the
//! official Python SDK 2.x validation ladder (`mcp/shared/inbound.py`,
//! `classify_inbound_request`): the `_meta` shape (-32602), then the headers (-32020), then the
//! supported version (-32022).
//!
//! A revision is *modern* when it is a well-formed `YYYY-MM-DD` string at or after
//! [`MODERN_FROM`] (string order is date order for that form): modern requests carry no
//! session and must mirror the body in headers. Whichever of the header and `_meta` claims a
//! modern revision, the other must agree: a body whose `_meta` says 2026-07-28 without the
//! header (or with a 2025 header) is refused, where Envoy 1.40's own MCP filter skips every
//! header check.

use crate::jsonrpc::{self, Body, Kind, Message, MetaVersion};
use crate::routing::RoutingHeaders;

/// Every MCP revision mcp-guard knows, oldest first (the specification's revisions).
pub const KNOWN: [&str; 5] = [
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
];
/// The first revision without sessions, whose requests carry the `_meta` envelope and the
/// routing headers.
pub const MODERN_FROM: &str = "2026-07-28";
/// Default of the plugin configuration's `newest_protocol_version`.
pub const DEFAULT_NEWEST: &str = "2026-07-28";
/// The request header carrying the revision (lower-case, as Envoy hands header names over).
pub const HEADER: &str = "mcp-protocol-version";
/// The header's name as the specification spells it, for messages.
pub const HEADER_NAME: &str = "MCP-Protocol-Version";
/// JSON-RPC error code for a revision the server does not support (MCP 2026-07-28 schema,
/// `UNSUPPORTED_PROTOCOL_VERSION`; HTTP 400).
pub const UNSUPPORTED_PROTOCOL_VERSION: i32 = -32022;

/// The revisions this configuration accepts: [`KNOWN`] up to and including the configured
/// newest one (plugin configuration `newest_protocol_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    /// How many of [`KNOWN`] are accepted (1..=5).
    count: usize,
}

impl Default for Versions {
    fn default() -> Self {
        Versions { count: KNOWN.len() }
    }
}

impl Versions {
    /// The set whose newest revision is `newest`; `None` when `newest` is not in [`KNOWN`]
    /// (exact, byte for byte).
    pub fn up_to(newest: &str) -> Option<Versions> {
        KNOWN
            .iter()
            .position(|v| *v == newest)
            .map(|i| Versions { count: i + 1 })
    }

    /// The accepted revisions, oldest first (the `supported` list of a -32022 error).
    pub fn supported(&self) -> &'static [&'static str] {
        KNOWN.get(..self.count).unwrap_or(&KNOWN)
    }

    /// The newest accepted revision.
    pub fn newest(&self) -> &'static str {
        self.supported().last().copied().unwrap_or(DEFAULT_NEWEST)
    }

    /// Whether `version` is accepted (exact comparison).
    pub fn supports(&self, version: &str) -> bool {
        self.supported().contains(&version)
    }
}

/// Whether `v` is a well-formed `YYYY-MM-DD` (ASCII digits and dashes; not checked to be a
/// calendar date) at or after [`MODERN_FROM`].
pub fn is_modern(v: &str) -> bool {
    let b = v.as_bytes();
    let well_formed = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    well_formed && v >= MODERN_FROM
}

/// Why a request fails the version checks. Each maps to one [`crate::verdict::Refusal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A header a modern request requires is missing: -32020 (the header's name as the
    /// specification spells it).
    Missing(&'static str),
    /// The version header is repeated or disagrees with `_meta`'s version: -32020.
    Mismatch(&'static str),
    /// A modern request's `params._meta` is not an object, or lacks an envelope key: -32602.
    /// `missing`: the keys missing (both when `_meta` is not an object).
    Envelope {
        /// The missing `_meta` keys.
        missing: Vec<&'static str>,
    },
    /// The requested revision is not accepted: -32022 with `data.supported` and
    /// `data.requested`.
    Unsupported {
        /// The revision the client asked for (the header value, or `_meta`'s).
        requested: String,
    },
    /// A JSON-RPC batch with a modern header or a modern `_meta`: -32600 (batches exist only
    /// in 2025-03-26).
    ModernBatch,
}

/// The outcome of [`check`] for a request that passes: the revision it claims (the header
/// value, else the `_meta` string), for the audit record; `None` when it claims none.
pub type Claimed = Option<String>;

/// The version checks of a POST body against its headers (`routing.version` holds every
/// `MCP-Protocol-Version` value sent), in the SDK ladder's order. On success, the revision the
/// request claims. The routing headers' *values* are compared afterwards by
/// [`crate::routing::check`]; here only their presence is required for a modern request.
///
/// Per message of a single body:
/// - the version header sent more than once → [`Problem::Mismatch`];
/// - a request (with an id) is modern when the header or `_meta`'s version is modern
///   ([`is_modern`]); then `_meta` must be an object carrying the protocol version and client
///   capabilities keys ([`Problem::Envelope`]), the header must be present and equal (byte
///   for byte) to `_meta`'s version string ([`Problem::Missing`], [`Problem::Mismatch`]),
///   `Mcp-Method` present, and `Mcp-Name` present for `tools/call`, `prompts/get`,
///   `resources/read` and the task methods (SEP-2663) ([`Problem::Missing`]); and the version
///   must be accepted ([`Problem::Unsupported`]);
/// - a notification or a client-sent response: the header requirements of notification POSTs
///   are not defined by 2026-07-28, so only the version itself is checked: a modern `_meta`
///   version needs the header ("every POST request MUST include" it), and the header must
///   equal a `_meta` version string when either is modern;
/// - any message: a header value that is not an accepted revision → [`Problem::Unsupported`]
///   (older revisions too, as Envoy 1.40 does); no header and no modern `_meta` is a client
///   before 2025-06-18 (or one that omits it) and passes.
///
/// A batch with a modern header or a modern `_meta` in any element → [`Problem::ModernBatch`].
pub fn check(
    versions: &Versions,
    routing: &RoutingHeaders,
    body: &Body<'_>,
) -> Result<Claimed, Problem> {
    let header = match routing.version.as_slice() {
        [] => None,
        [one] => Some(one.as_str()),
        _ => return Err(Problem::Mismatch(HEADER_NAME)),
    };
    let message = match body {
        Body::Single(m) => m,
        Body::Batch(messages) => {
            let modern_meta = messages.iter().any(|m| meta_modern(m).is_some());
            if header.is_some_and(is_modern) || modern_meta {
                return Err(Problem::ModernBatch);
            }
            return supported(versions, header).map(|()| header.map(str::to_owned));
        }
    };
    let meta = match &message.meta.protocol_version {
        MetaVersion::Str(v) => Some(v.as_str()),
        _ => None,
    };
    let modern = header.is_some_and(is_modern) || meta.is_some_and(is_modern);
    if !modern {
        supported(versions, header)?;
        return Ok(header.or(meta).map(str::to_owned));
    }
    if matches!(message.kind, Kind::Request(_)) {
        envelope(message)?;
        // Rung 2: the header must be there and equal `_meta`'s version (a non-string version
        // can never equal a header, as in the SDK).
        if header.is_none() {
            return Err(Problem::Missing(HEADER_NAME));
        }
        if header != meta {
            return Err(Problem::Mismatch(HEADER_NAME));
        }
        if routing.method.is_empty() {
            return Err(Problem::Missing("Mcp-Method"));
        }
        if names_something(message) && routing.name.is_empty() {
            return Err(Problem::Missing("Mcp-Name"));
        }
    } else {
        // A notification (or response): only the version header.
        let Some(h) = header else {
            return Err(Problem::Missing(HEADER_NAME));
        };
        if meta.is_some_and(|m| m != h) {
            return Err(Problem::Mismatch(HEADER_NAME));
        }
    }
    supported(versions, header)?;
    Ok(header.map(str::to_owned))
}

/// The `_meta` version of `m` when it is a modern one.
fn meta_modern<'m>(m: &'m Message<'_>) -> Option<&'m str> {
    match &m.meta.protocol_version {
        MetaVersion::Str(v) if is_modern(v) => Some(v.as_str()),
        _ => None,
    }
}

/// Rung 1 of the ladder: `_meta` is an object with both envelope keys.
fn envelope(m: &Message<'_>) -> Result<(), Problem> {
    let meta = &m.meta;
    let mut missing = Vec::new();
    if !meta.meta_object || meta.protocol_version == MetaVersion::Absent {
        missing.push(jsonrpc::META_PROTOCOL_VERSION);
    }
    if !meta.meta_object || !meta.client_capabilities {
        missing.push(jsonrpc::META_CLIENT_CAPABILITIES);
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Problem::Envelope { missing })
    }
}

/// The methods whose requests must carry `Mcp-Name` in 2026-07-28: the spec's three and the
/// task methods (SEP-2663 "Streamable HTTP: Routing Headers").
fn names_something(m: &Message<'_>) -> bool {
    m.method.as_deref().is_some_and(|method| {
        matches!(
            method,
            jsonrpc::TOOLS_CALL | jsonrpc::PROMPTS_GET | jsonrpc::RESOURCES_READ
        ) || jsonrpc::TASK_METHODS.contains(&method)
    })
}

/// A present header must name an accepted revision.
fn supported(versions: &Versions, header: Option<&str>) -> Result<(), Problem> {
    match header {
        Some(h) if !versions.supports(h) => Err(Problem::Unsupported {
            requested: h.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// The single `MCP-Protocol-Version` value, when it names one accepted modern revision: the
/// only case in which a request may be decided from its routing headers (MCP 2026-07-28,
/// Server Validation: intermediaries enforcing on mirrored headers SHOULD check that the
/// version requires header–body validation).
pub fn supported_modern_header<'h>(
    versions: &Versions,
    routing: &'h RoutingHeaders,
) -> Option<&'h str> {
    match routing.version.as_slice() {
        [one] if is_modern(one) && versions.supports(one) => Some(one.as_str()),
        _ => None,
    }
}

/// Whether a GET or DELETE claims a modern revision by its header (any value that is modern,
/// accepted or not): 2026-07-28 has no GET stream and no session to delete, so such a request
/// is answered 405 with `Allow: POST` (Streamable HTTP, Backward Compatibility).
pub fn modern_without_post(http_method: &str, routing: &RoutingHeaders) -> bool {
    matches!(http_method, "GET" | "DELETE") && routing.version.iter().any(|v| is_modern(v))
}

/// `_meta`'s version string of a single message (for the audit record when the request was
/// refused before the version checks passed).
pub fn claimed(routing: &RoutingHeaders, body: &Body<'_>) -> Claimed {
    if let Some(first) = routing.version.first() {
        return Some(first.clone());
    }
    match body {
        Body::Single(m) => match &m.meta.protocol_version {
            MetaVersion::Str(v) => Some(v.clone()),
            _ => None,
        },
        Body::Batch(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_is_a_well_formed_date_from_2026_07_28() {
        for v in ["2026-07-28", "2026-12-01", "2099-01-01"] {
            assert!(is_modern(v), "{v}");
        }
        for v in [
            "2025-11-25",
            "2024-11-05",
            "2026-07-27",
            "2026-7-28",
            "2026-07-28 ",
            " 2026-07-28",
            "2026-07-28T00",
            "9999999999",
            "2026/07/28",
            "",
            "２０２６-07-28",
        ] {
            assert!(!is_modern(v), "{v:?}");
        }
    }

    #[test]
    fn supported_versions_follow_the_configured_newest() {
        let all = Versions::default();
        assert_eq!(all.supported(), &KNOWN);
        assert_eq!(all.newest(), "2026-07-28");
        let older = Versions::up_to("2025-11-25").unwrap();
        assert!(!older.supports("2026-07-28"));
        assert!(older.supports("2024-11-05"));
        assert_eq!(older.newest(), "2025-11-25");
        assert_eq!(Versions::up_to("2027-01-01"), None);
        assert_eq!(Versions::up_to("2026-07-28 "), None);
    }
}
