//! Agent identity: which agent a request speaks for.
//!
//! Identity sources are tried in their configured order. The first source that presents a
//! value decides: a well-formed agent id ([`is_valid_agent_id`]) identifies the request; any
//! other value ends resolution with an [`IdentityError`] (later, weaker sources are not tried:
//! a malformed token `sub` never falls through to a client-set header). A request no source
//! identifies gets the configured fallback id (default `anonymous`, which the policy treats as
//! any other agent without rule sets: its `default` entry), or, with [`Unidentified::Reject`],
//! is refused. A source that could not be read ([`IdentityError::Unreadable`]) refuses the
//! request whatever the fallback: "could not read it" is never "nothing there".
//!
//! Values are compared byte for byte: no trimming, no case folding, no Unicode normalization.
//! `"admin-agent\u{a0}"`, `" admin-agent"` or `"admin-agent\u{2028}"` is malformed, never
//! `admin-agent`.
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
//!   Envoy and sets it. A header sent more than once is [`IdentityError::Repeated`].
//!
//! A client-sent copy of the agent tag header never overrides the sources: mcp-guard removes it
//! and sets the resolved id.

use serde::{Deserialize, Serialize};

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
        /// When set, the SAN must start with it (compared byte for byte) and the agent id is
        /// the rest.
        strip_prefix: Option<String>,
    },
}

/// Metadata namespace Envoy's `jwt_authn` filter writes (`payload_in_metadata`).
pub const JWT_AUTHN_NAMESPACE: &str = "envoy.filters.http.jwt_authn";

/// What one source holds for the request, as the filter read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// Nothing there: the header is not sent, the attribute or metadata key does not exist.
    Absent,
    /// The raw value (bytes that are not UTF-8 read as U+FFFD, which no agent id accepts).
    Value(String),
    /// A header sent more than once: it names no one (an edge that appends instead of
    /// replacing must not let the client's copy win).
    Repeated,
    /// The host could not read it (proxy-wasm `get_property` returned an error).
    Unreadable,
}

/// Which source decided the identity or ended resolution, as the audit record's
/// `identity_source` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentitySource {
    /// A [`Source::Header`].
    Header,
    /// A [`Source::JwtClaim`].
    JwtClaim,
    /// A [`Source::PeerUriSan`].
    PeerUriSan,
    /// No source presented a value and the configured fallback id applies.
    Fallback,
}

impl IdentitySource {
    /// The record's spelling: `header`, `jwt_claim`, `peer_uri_san`, `fallback`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentitySource::Header => "header",
            IdentitySource::JwtClaim => "jwt_claim",
            IdentitySource::PeerUriSan => "peer_uri_san",
            IdentitySource::Fallback => "fallback",
        }
    }
}

/// Why no source identified the request, as the audit record's `identity_error` spells it.
/// The raw value is never recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityError {
    /// No source presented a value.
    Absent,
    /// A source presented a value that is not a well-formed agent id ([`is_valid_agent_id`]):
    /// empty, longer than [`MAX_AGENT_ID_LEN`], or with a byte outside visible ASCII (any
    /// whitespace, control character, non-ASCII character, U+FFFD) or a `,` or `"`.
    Malformed,
    /// The header source was sent more than once.
    Repeated,
    /// The peer certificate's URI SAN does not start with the configured `strip_prefix`
    /// (another trust domain).
    PrefixMismatch,
    /// A source could not be read; the request is refused whatever the fallback.
    Unreadable,
}

impl IdentityError {
    /// The record's spelling: `absent`, `malformed`, `repeated`, `prefix_mismatch`,
    /// `unreadable`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityError::Absent => "absent",
            IdentityError::Malformed => "malformed",
            IdentityError::Repeated => "repeated",
            IdentityError::PrefixMismatch => "prefix_mismatch",
            IdentityError::Unreadable => "unreadable",
        }
    }
}

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

    /// The kind of this source, for the audit record.
    pub fn kind(&self) -> IdentitySource {
        match self {
            Source::Header(_) => IdentitySource::Header,
            Source::JwtClaim { .. } => IdentitySource::JwtClaim,
            Source::PeerUriSan { .. } => IdentitySource::PeerUriSan,
        }
    }

    /// The agent id this source's raw `value` yields, compared byte for byte (nothing is
    /// trimmed): with a [`Source::PeerUriSan`] `strip_prefix`, the value must start with the
    /// prefix ([`IdentityError::PrefixMismatch`] otherwise) and the rest is the id; the id must
    /// be well-formed ([`IdentityError::Malformed`] otherwise).
    pub fn agent_id(&self, value: &str) -> Result<String, IdentityError> {
        let id = match self {
            Source::PeerUriSan {
                strip_prefix: Some(prefix),
            } => value
                .strip_prefix(prefix.as_str())
                .ok_or(IdentityError::PrefixMismatch)?,
            _ => value,
        };
        if is_valid_agent_id(id) {
            Ok(id.to_owned())
        } else {
            Err(IdentityError::Malformed)
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

/// The outcome of [`Identity::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The agent the request speaks for: a source's id, or the fallback id. `None`: refuse
    /// the request (no source identified it under [`Unidentified::Reject`], or `error` is
    /// [`IdentityError::Unreadable`]).
    pub agent_id: Option<String>,
    /// The source that identified the request, or whose value ended resolution with `error`;
    /// [`IdentitySource::Fallback`] when no source presented a value and the fallback applies;
    /// `None` when no source presented a value and the request is refused.
    pub source: Option<IdentitySource>,
    /// Why no source identified the request; `None` when one did.
    pub error: Option<IdentityError>,
}

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

    /// Resolves the agent id. `read` returns what a source holds for this request.
    ///
    /// Sources are read in order until one presents something ([`Presented::Absent`] goes on
    /// to the next). A [`Presented::Value`] that is a well-formed agent id ([`Source::agent_id`])
    /// identifies the request; a malformed one, a repeated header or a SAN outside the prefix
    /// ends resolution: the missing-identity rule applies (the fallback id, or `None` under
    /// [`Unidentified::Reject`]). [`Presented::Unreadable`] ends resolution with `agent_id`
    /// `None` whatever the rule.
    pub fn resolve(&self, mut read: impl FnMut(&Source) -> Presented) -> Resolution {
        let mut failed = None;
        for source in &self.sources {
            let kind = source.kind();
            let error = match read(source) {
                Presented::Absent => continue,
                Presented::Value(value) => match source.agent_id(&value) {
                    Ok(agent_id) => {
                        return Resolution {
                            agent_id: Some(agent_id),
                            source: Some(kind),
                            error: None,
                        }
                    }
                    Err(error) => error,
                },
                Presented::Repeated => IdentityError::Repeated,
                Presented::Unreadable => {
                    return Resolution {
                        agent_id: None,
                        source: Some(kind),
                        error: Some(IdentityError::Unreadable),
                    }
                }
            };
            failed = Some((kind, error));
            break;
        }
        let (source, error) = match failed {
            Some((kind, error)) => (Some(kind), error),
            None => (None, IdentityError::Absent),
        };
        match &self.unidentified {
            Unidentified::Fallback(id) => Resolution {
                agent_id: Some(id.clone()),
                source: source.or(Some(IdentitySource::Fallback)),
                error: Some(error),
            },
            Unidentified::Reject => Resolution {
                agent_id: None,
                source,
                error: Some(error),
            },
        }
    }
}

/// Whether `id` is acceptable as an agent id: 1 to [`MAX_AGENT_ID_LEN`] bytes of visible ASCII
/// (0x21–0x7E) without `,` or `"` (RFC 9110 field-value characters minus list/quote
/// delimiters). Any whitespace (ASCII or Unicode), control character, non-ASCII character or
/// U+FFFD makes it invalid; it is checked as is, never trimmed.
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

    fn value(v: &str) -> Presented {
        Presented::Value(v.to_owned())
    }

    fn identified(agent: &str, source: IdentitySource) -> Resolution {
        Resolution {
            agent_id: Some(agent.to_owned()),
            source: Some(source),
            error: None,
        }
    }

    /// Values that differ from `admin-agent` only by whitespace, control or other characters
    /// outside the allowed set, or are not an id at all.
    fn malformed_values() -> Vec<String> {
        let mut v: Vec<String> = [
            "admin-agent\u{a0}",
            "\u{a0}admin-agent",
            "admin-agent\u{2028}",
            "admin-agent\u{2029}",
            "\u{3000}admin-agent",
            "admin-agent\u{3000}",
            "\u{feff}admin-agent",
            "admin-agent\u{85}",
            "admin-agent\u{200b}",
            "admin-agent\t",
            "\tadmin-agent",
            "admin-agent\r\n",
            "admin-agent\n",
            "\radmin-agent",
            "admin-agent\0",
            "\0admin-agent",
            "admin-agent\u{7f}",
            "admin-agent\u{b}",
            "admin-agent\u{c}",
            " admin-agent",
            "admin-agent ",
            " admin-agent ",
            "admin agent",
            "admin-agent\u{fffd}",
            "\u{fffd}",
            "admin-\u{430}gent", // Cyrillic a
            "admin-agent,demo-agent",
            "\"admin-agent\"",
            "",
            " ",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        v.push("a".repeat(MAX_AGENT_ID_LEN + 1));
        v
    }

    #[test]
    fn the_allowed_set_is_visible_ascii_without_comma_or_quote() {
        for b in 0u8..=0xff {
            let s = char::from(b).to_string();
            let want = (0x21..=0x7e).contains(&b) && b != b',' && b != b'"';
            assert_eq!(is_valid_agent_id(&s), want, "byte {b:#x}");
        }
        assert!(is_valid_agent_id(&"a".repeat(MAX_AGENT_ID_LEN)));
        assert!(!is_valid_agent_id(&"a".repeat(MAX_AGENT_ID_LEN + 1)));
        assert!(is_valid_agent_id("spiffe://mesh.local/agent/a_b-c.d~e"));
        for v in malformed_values() {
            assert!(!is_valid_agent_id(&v), "{v:?}");
        }
    }

    #[test]
    fn first_valid_source_wins() {
        let id = header_identity();
        let got = id.resolve(|s| match s {
            Source::Header(h) if h == "x-agent-id" => value("demo-agent"),
            _ => value("other"),
        });
        assert_eq!(got, identified("demo-agent", IdentitySource::Header));
        let got = id.resolve(|s| match s {
            Source::Header(h) if h == "x-agent-id" => Presented::Absent,
            _ => value("other"),
        });
        assert_eq!(got, identified("other", IdentitySource::Header));
    }

    #[test]
    fn nothing_present_falls_back_or_is_rejected() {
        assert_eq!(
            header_identity().resolve(|_| Presented::Absent),
            Resolution {
                agent_id: Some("anonymous".into()),
                source: Some(IdentitySource::Fallback),
                error: Some(IdentityError::Absent),
            }
        );
        let reject = Identity::with_policy(vec![Source::Header("x".into())], Unidentified::Reject);
        assert_eq!(
            reject.resolve(|_| Presented::Absent),
            Resolution {
                agent_id: None,
                source: None,
                error: Some(IdentityError::Absent),
            }
        );
    }

    /// Every source: jwt_claim, peer_uri_san (with and without a prefix), header. A malformed
    /// value is never trimmed into `admin-agent`, and it does not fall through to the next
    /// source (a client-set header that says `admin-agent`).
    #[test]
    fn malformed_values_of_every_source_never_become_an_agent_nor_fall_through() {
        let sources = [
            (
                Source::JwtClaim {
                    metadata_key: "payload".into(),
                    claim: "sub".into(),
                },
                "",
            ),
            (
                Source::PeerUriSan {
                    strip_prefix: Some("spiffe://mesh/agent/".into()),
                },
                "spiffe://mesh/agent/",
            ),
            (Source::PeerUriSan { strip_prefix: None }, ""),
            (Source::Header("x-agent-id".into()), ""),
        ];
        for (first, prefix) in sources {
            let kind = first.kind();
            let later = Source::Header("x-client".into());
            for unidentified in [
                Unidentified::Fallback("anonymous".into()),
                Unidentified::Reject,
            ] {
                let id =
                    Identity::with_policy(vec![first.clone(), later.clone()], unidentified.clone());
                // The well-formed value identifies, as itself.
                let good = id.resolve(|s| {
                    if *s == later {
                        value("admin-agent")
                    } else {
                        value(&format!("{prefix}demo-agent"))
                    }
                });
                assert_eq!(good, identified("demo-agent", kind));
                for bad in malformed_values() {
                    let got = id.resolve(|s| {
                        if *s == later {
                            value("admin-agent")
                        } else {
                            value(&format!("{prefix}{bad}"))
                        }
                    });
                    let want_agent = match &unidentified {
                        Unidentified::Fallback(f) => Some(f.clone()),
                        Unidentified::Reject => None,
                    };
                    assert_eq!(
                        got,
                        Resolution {
                            agent_id: want_agent,
                            source: Some(kind),
                            error: Some(IdentityError::Malformed),
                        },
                        "{kind:?} {bad:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_repeated_header_or_a_foreign_san_ends_resolution() {
        let id = Identity::with_policy(
            vec![
                Source::PeerUriSan {
                    strip_prefix: Some("spiffe://mesh/agent/".into()),
                },
                Source::Header("x-agent-id".into()),
                Source::Header("x-other".into()),
            ],
            Unidentified::Reject,
        );
        let got = id.resolve(|s| match s {
            Source::PeerUriSan { .. } => Presented::Absent,
            Source::Header(h) if h == "x-agent-id" => Presented::Repeated,
            Source::Header(_) => value("admin-agent"),
            Source::JwtClaim { .. } => Presented::Absent,
        });
        assert_eq!(
            got,
            Resolution {
                agent_id: None,
                source: Some(IdentitySource::Header),
                error: Some(IdentityError::Repeated),
            }
        );
        // Another trust domain, a look-alike domain, a case variant, a prefix with a trailing
        // space: the prefix is compared byte for byte.
        for san in [
            "spiffe://evil/agent/b",
            "spiffe://mesh.evil/agent/b",
            "SPIFFE://mesh/agent/b",
            " spiffe://mesh/agent/b",
            "\u{a0}spiffe://mesh/agent/b",
            "spiffe://mesh/agent",
        ] {
            let got = id.resolve(|s| match s {
                Source::PeerUriSan { .. } => value(san),
                _ => value("admin-agent"),
            });
            assert_eq!(
                got,
                Resolution {
                    agent_id: None,
                    source: Some(IdentitySource::PeerUriSan),
                    error: Some(IdentityError::PrefixMismatch),
                },
                "{san:?}"
            );
        }
    }

    #[test]
    fn an_unreadable_source_refuses_even_with_a_fallback() {
        let id = Identity::new(
            vec![
                Source::JwtClaim {
                    metadata_key: "payload".into(),
                    claim: "sub".into(),
                },
                Source::Header("x-agent-id".into()),
            ],
            "anonymous".into(),
        );
        let got = id.resolve(|s| match s {
            Source::JwtClaim { .. } => Presented::Unreadable,
            _ => value("admin-agent"),
        });
        assert_eq!(
            got,
            Resolution {
                agent_id: None,
                source: Some(IdentitySource::JwtClaim),
                error: Some(IdentityError::Unreadable),
            }
        );
        // A well-formed earlier source decides before the unreadable one is read.
        let id = Identity::new(
            vec![
                Source::Header("x-agent-id".into()),
                Source::PeerUriSan { strip_prefix: None },
            ],
            "anonymous".into(),
        );
        let got = id.resolve(|s| match s {
            Source::Header(_) => value("demo-agent"),
            _ => Presented::Unreadable,
        });
        assert_eq!(got, identified("demo-agent", IdentitySource::Header));
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
            let present = |v: Option<&str>| v.map_or(Presented::Absent, value);
            id.resolve(|s| match s {
                Source::JwtClaim { .. } => present(jwt),
                Source::PeerUriSan { .. } => present(san),
                Source::Header(_) => present(header),
            })
            .agent_id
        };
        assert_eq!(
            read(Some("bot-1"), Some("spiffe://mesh/agent/b"), Some("h")).as_deref(),
            Some("bot-1")
        );
        assert_eq!(
            read(None, Some("spiffe://mesh/agent/b"), Some("h")).as_deref(),
            Some("b")
        );
        assert_eq!(read(None, None, Some("h")).as_deref(), Some("h"));
        // Another trust domain's certificate ends resolution (it used to fall through to the
        // header): refused under reject.
        assert_eq!(read(None, Some("spiffe://evil/agent/b"), Some("h")), None);
        assert_eq!(read(None, None, None), None);
    }
}
