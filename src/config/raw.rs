//! The serde shapes of the plugin configuration's leaf sections, read one value at a time by
//! [`super::walk`]. Objects whose fields are checked independently (the document, `policy`,
//! agent and group entries, `identity`, `headers`) have no struct here: their field names are
//! the `*_FIELDS` lists, and each field is read on its own.

use serde::Deserialize;
use std::fmt;

/// Fields of the document.
pub(super) const TOP_FIELDS: &[&str] = &[
    "server_id",
    "identity",
    "headers",
    "policy",
    "max_body_bytes",
    "max_json_depth",
    "max_batch_calls",
    "input_hash",
    "curate_lists",
    "annotations",
    "hide_denied_tools",
    "max_tool_metrics",
    "hold_request_headers",
    "rate_limit_service",
    "decide_at_headers",
    "param_tags",
    "newest_protocol_version",
    "tool_pins",
    "on_drift",
    "unpinned",
    "learn_pins",
];

/// Fields of `identity`.
pub(super) const IDENTITY_FIELDS: &[&str] = &["sources", "fallback", "unidentified"];

/// Fields of `headers`.
pub(super) const HEADER_FIELDS: &[&str] = &[
    "method",
    "tool_name",
    "agent_id",
    "prompt_name",
    "resource_uri",
    "call_round",
];

/// Fields of `policy`.
pub(super) const POLICY_FIELDS: &[&str] = &["name", "version", "mode", "agents", "groups"];

/// Fields of an agent entry (`policy.agents.<id>`).
pub(super) const AGENT_FIELDS: &[&str] = &["tools", "prompts", "resources", "methods", "mode"];

/// Fields of a group entry (`policy.groups.<name>`).
pub(super) const GROUP_FIELDS: &[&str] = &[
    "members",
    "tools",
    "prompts",
    "resources",
    "methods",
    "mode",
];

/// `rate_limit_service`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimitService {
    pub cluster: String,
    pub domain: String,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub failure_mode_deny: Option<bool>,
}

/// `hide_denied_tools`.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum RawHide {
    ToolError(String),
    JsonrpcError(RawHideError),
}

/// `hide_denied_tools.jsonrpc_error`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHideError {
    pub code: i32,
    pub message: String,
}

/// `annotations`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAnnotations {
    pub refuse: RawRefuse,
    #[serde(default)]
    pub unseen: Option<RawUnseen>,
}

/// `annotations.refuse`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawRefuse {
    Destructive,
    NotReadOnly,
}

/// `annotations.unseen`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawUnseen {
    Refuse,
    Allow,
}

/// One of `identity.sources`.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum RawSource {
    Header(String),
    JwtClaim(RawJwtClaim),
    PeerUriSan(RawPeerUriSan),
}

/// `identity.sources[i].jwt_claim`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJwtClaim {
    pub claim: String,
    #[serde(default)]
    pub metadata_key: Option<String>,
}

/// `identity.sources[i].peer_uri_san`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeerUriSan {
    #[serde(default)]
    pub strip_prefix: Option<String>,
}

/// `identity.unidentified`.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawUnidentified {
    Fallback,
    Reject,
}

/// A rule set's list (`tools`, `prompts`, `resources`, `methods`): either a list of allow
/// patterns or `{"allow": [...], "deny": [...]}`.
#[derive(Default)]
pub(super) struct RawList {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllowDeny {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

impl<'de> Deserialize<'de> for RawList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a list of allow patterns, or {"allow": [...], "deny": [...]}"#)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<RawList, A::Error> {
                let allow =
                    Vec::<String>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
                Ok(RawList {
                    allow,
                    deny: Vec::new(),
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawList, A::Error> {
                let both =
                    RawAllowDeny::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RawList {
                    allow: both.allow,
                    deny: both.deny,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `input_hash`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInputHash {
    pub hmac_key: String,
    pub key_id: String,
}

/// `policy.mode` and a rule set's `mode`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawMode {
    Enforce,
    DryRun,
}

/// `on_drift`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawOnDrift {
    Hide,
    Audit,
}

/// `unpinned`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawUnpinned {
    Allow,
    Hide,
}
