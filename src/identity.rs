//! Agent identity: which agent a request speaks for.
//!
//! Identity sources are tried in their configured order; the first that yields a valid agent id
//! wins. If none does, the configured fallback id (default `anonymous`) is used, which the
//! policy treats as any other unknown agent (its `default` entry).
//!
//! This version has one kind of source, a trusted request header. It is only as trustworthy as
//! whatever sits in front of Envoy and sets that header; JWT-claim and mTLS (URI SAN) sources
//! are planned as further [`Source`] variants.

/// One place an agent id can come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The value of a request header (lower-case name), read before mcp-guard removes and
    /// re-sets its own tag headers.
    Header(String),
}

/// The longest agent id accepted from a source, in bytes.
pub const MAX_AGENT_ID_LEN: usize = 256;

/// The compiled identity configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    sources: Vec<Source>,
    fallback: String,
}

impl Identity {
    /// Builds an identity resolver from ordered sources and the fallback id.
    pub fn new(sources: Vec<Source>, fallback: String) -> Identity {
        Identity { sources, fallback }
    }

    /// The configured sources, in order.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// Resolves the agent id. `read` returns the raw value a source holds for this request.
    ///
    /// A value is used only if it is a valid agent id ([`is_valid_agent_id`]); an invalid one
    /// is skipped like an absent one, so a crafted header cannot inject into tags or the log.
    pub fn resolve(&self, mut read: impl FnMut(&Source) -> Option<String>) -> String {
        self.sources
            .iter()
            .filter_map(&mut read)
            .map(|v| v.trim().to_owned())
            .find(|v| is_valid_agent_id(v))
            .unwrap_or_else(|| self.fallback.clone())
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
            Source::Header(_) => Some("other".into()),
        });
        assert_eq!(got, "demo-agent");
        let got = id.resolve(|s| match s {
            Source::Header(h) if h == "x-agent-id" => None,
            Source::Header(_) => Some("other".into()),
        });
        assert_eq!(got, "other");
    }

    #[test]
    fn falls_back_when_absent_or_invalid() {
        let id = header_identity();
        assert_eq!(id.resolve(|_| None), "anonymous");
        assert_eq!(id.resolve(|_| Some("".into())), "anonymous");
        assert_eq!(id.resolve(|_| Some("a b".into())), "anonymous");
        assert_eq!(id.resolve(|_| Some("a,admin-agent".into())), "anonymous");
        assert_eq!(id.resolve(|_| Some("x".repeat(300))), "anonymous");
        assert_eq!(
            id.resolve(|_| Some(" spiffe://d/ns/a ".into())),
            "spiffe://d/ns/a"
        );
    }
}
