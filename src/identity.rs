//! Agent identity: which agent a request speaks for.
//!
//! Identity sources are tried in their configured order; the first that yields a valid agent id
//! wins. If none does, the request gets the configured fallback id (default `anonymous`, which
//! the policy treats as any other agent without rule sets: its `default` entry), or, with
//! [`Unidentified::Reject`], is refused.
//!
//! Sources, from strongest to weakest:
//! - [`Source::JwtClaim`]: a claim of a token Envoy's `jwt_authn` filter verified (before
//!   mcp-guard in the chain, with `payload_in_metadata`), read from dynamic metadata
//!   `envoy.filters.http.jwt_authn.<payload_in_metadata>.<claim>`. An expired, forged or
//!   wrongly-signed token never gets there: `jwt_authn` refuses it, or (with
//!   `allow_missing_or_failed`) writes no metadata.
//! - [`Source::PeerUriSan`]: the first URI SAN of the client certificate on an mTLS connection
//!   (Envoy attribute `connection.uri_san_peer_certificate`), e.g. a SPIFFE id, optionally
//!   required to start with a prefix that is then removed.
//! - [`Source::Header`]: a request header, only as trustworthy as whatever sits in front of
//!   Envoy and sets it. A header sent more than once yields nothing.
//!
//! A client-sent copy of the agent tag header never overrides the sources: mcp-guard removes it
//! and sets the resolved id.

/// One place an agent id can come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The value of a request header (lower-case name), read before mcp-guard removes and
    /// re-sets its own tag headers.
    Header(String),
    /// A claim of the JWT payload Envoy's `jwt_authn` filter stored in dynamic metadata.
    JwtClaim {
        /// `payload_in_metadata` of the `jwt_authn` provider (the metadata key).
        metadata_key: String,
        /// The top-level claim, e.g. `sub`.
        claim: String,
    },
    /// The peer certificate's URI SAN (mTLS).
    PeerUriSan {
        /// When set, the SAN must start with it and the agent id is the rest.
        strip_prefix: Option<String>,
    },
}

/// Metadata namespace Envoy's `jwt_authn` filter writes (`payload_in_metadata`).
pub const JWT_AUTHN_NAMESPACE: &str = "envoy.filters.http.jwt_authn";

impl Source {
    /// The Envoy attribute path this source reads, for sources that read attributes (`None`
    /// for [`Source::Header`]).
    pub fn property_path(&self) -> Option<Vec<&str>> {
        match self {
            Source::Header(_) => None,
            Source::JwtClaim {
                metadata_key,
                claim,
            } => Some(vec![
                "metadata",
                "filter_metadata",
                JWT_AUTHN_NAMESPACE,
                metadata_key,
                claim,
            ]),
            Source::PeerUriSan { .. } => Some(vec!["connection", "uri_san_peer_certificate"]),
        }
    }

    /// The agent id this source's raw `value` yields (the prefix check of
    /// [`Source::PeerUriSan`]); validity is checked by [`Identity::resolve`].
    pub fn agent_id(&self, value: String) -> Option<String> {
        match self {
            Source::PeerUriSan {
                strip_prefix: Some(prefix),
            } => value.strip_prefix(prefix.as_str()).map(str::to_owned),
            _ => Some(value),
        }
    }
}

/// What happens to a request no source identifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unidentified {
    /// It proceeds as this agent id.
    Fallback(String),
    /// It is refused (HTTP 401).
    Reject,
}

/// The longest agent id accepted from a source, in bytes.
pub const MAX_AGENT_ID_LEN: usize = 256;

/// The agent id written to the audit record of a request refused as unidentified.
pub const UNIDENTIFIED: &str = "unidentified";

/// The compiled identity configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    sources: Vec<Source>,
    unidentified: Unidentified,
}

impl Identity {
    /// Builds an identity resolver from ordered sources and the fallback id.
    pub fn new(sources: Vec<Source>, fallback: String) -> Identity {
        Identity::with_policy(sources, Unidentified::Fallback(fallback))
    }

    /// Builds an identity resolver with an explicit treatment of unidentified requests.
    pub fn with_policy(sources: Vec<Source>, unidentified: Unidentified) -> Identity {
        Identity {
            sources,
            unidentified,
        }
    }

    /// The configured sources, in order.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// Resolves the agent id. `read` returns the raw value a source holds for this request.
    /// `None` when no source yields a valid id and unidentified requests are rejected.
    ///
    /// A value is used only if it is a valid agent id ([`is_valid_agent_id`]); an invalid one
    /// is skipped like an absent one, so a crafted header cannot inject into tags or the log.
    pub fn resolve(&self, mut read: impl FnMut(&Source) -> Option<String>) -> Option<String> {
        let found = self
            .sources
            .iter()
            .filter_map(|source| read(source).and_then(|v| source.agent_id(v.trim().to_owned())))
            .find(|v| is_valid_agent_id(v));
        match (found, &self.unidentified) {
            (Some(id), _) => Some(id),
            (None, Unidentified::Fallback(id)) => Some(id.clone()),
            (None, Unidentified::Reject) => None,
        }
    }
}

/// Whether `id` is acceptable as an agent id: 1 to [`MAX_AGENT_ID_LEN`] bytes of visible ASCII
/// without `,` or `"` (RFC 9110 field-value characters minus list/quote delimiters).
pub fn is_valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_AGENT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b',' && b != b'"')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_identity() -> Identity {
        Identity::new(
            vec![
                Source::Header("x-agent-id".into()),
                Source::Header("x-fallback".into()),
            ],
            "anonymous".into(),
        )
    }

    #[test]
    fn first_valid_source_wins() {
        let id = header_identity();
        let got = id.resolve(|s| match s {
            Source::Header(h) if h == "x-agent-id" => Some("demo-agent".into()),
            _ => Some("other".into()),
        });
        assert_eq!(got.as_deref(), Some("demo-agent"));
        let got = id.resolve(|s| match s {
            Source::Header(h) if h == "x-agent-id" => None,
            _ => Some("other".into()),
        });
        assert_eq!(got.as_deref(), Some("other"));
    }

    #[test]
    fn falls_back_when_absent_or_invalid() {
        let id = header_identity();
        let fallback = Some("anonymous".to_owned());
        assert_eq!(id.resolve(|_| None), fallback);
        assert_eq!(id.resolve(|_| Some("".into())), fallback);
        assert_eq!(id.resolve(|_| Some("a b".into())), fallback);
        assert_eq!(id.resolve(|_| Some("a,admin-agent".into())), fallback);
        assert_eq!(id.resolve(|_| Some("x".repeat(300))), fallback);
        assert_eq!(
            id.resolve(|_| Some(" spiffe://d/ns/a ".into())).as_deref(),
            Some("spiffe://d/ns/a")
        );
    }

    #[test]
    fn jwt_then_certificate_then_header_or_reject() {
        let id = Identity::with_policy(
            vec![
                Source::JwtClaim {
                    metadata_key: "payload".into(),
                    claim: "sub".into(),
                },
                Source::PeerUriSan {
                    strip_prefix: Some("spiffe://mesh/agent/".into()),
                },
                Source::Header("x-agent-id".into()),
            ],
            Unidentified::Reject,
        );
        assert_eq!(
            id.sources()[0].property_path().unwrap(),
            [
                "metadata",
                "filter_metadata",
                JWT_AUTHN_NAMESPACE,
                "payload",
                "sub"
            ]
        );
        let read = |jwt: Option<&str>, san: Option<&str>, header: Option<&str>| {
            id.resolve(|s| match s {
                Source::JwtClaim { .. } => jwt.map(str::to_owned),
                Source::PeerUriSan { .. } => san.map(str::to_owned),
                Source::Header(_) => header.map(str::to_owned),
            })
        };
        assert_eq!(
            read(Some("bot-1"), Some("spiffe://mesh/agent/b"), Some("h")).as_deref(),
            Some("bot-1")
        );
        assert_eq!(
            read(None, Some("spiffe://mesh/agent/b"), Some("h")).as_deref(),
            Some("b")
        );
        // Another trust domain's certificate yields nothing.
        assert_eq!(
            read(None, Some("spiffe://evil/agent/b"), Some("h")).as_deref(),
            Some("h")
        );
        assert_eq!(read(None, None, None), None);
    }
}
