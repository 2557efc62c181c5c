//! The plugin configuration: parsed once in the root context's `on_configure` into an immutable
//! [`Config`] shared by every HTTP stream.
//!
//! The plugin configuration is the JSON string Envoy passes as the Wasm filter's
//! `config.configuration` (a `google.protobuf.StringValue`; Envoy doc
//! `envoy.extensions.wasm.v3.PluginConfig`). Its shape (docs/configuration.md "Policy format"):
//!
//! ```json
//! {
//!   "server_id": "demo-server",
//!   "identity": {"sources": [{"header": "x-agent-id"}], "fallback": "anonymous"},
//!   "headers": {"method": "x-mcp-method", "tool_name": "x-mcp-tool-name",
//!               "agent_id": "x-agent-id", "prompt_name": "x-mcp-prompt-name",
//!               "resource_uri": "x-mcp-resource-uri"},
//!   "policy": {"mode": "enforce",
//!              "agents": {"demo-agent": {"tools": ["echo", "search"]},
//!                         "default": {"tools": ["echo"]}}},
//!   "max_body_bytes": 4194304,
//!   "max_json_depth": 64,
//!   "max_batch_calls": 1
//! }
//! ```
//!
//! Only `policy` is required. Unknown fields are rejected at every level. Errors name the field
//! (a dotted path) and the problem, for the one log line `on_configure` writes.

use crate::annotations::{AnnotationRule, Refuse};
use crate::audit::InputHasher;
use crate::identity::{self, Identity, Source, Unidentified};
use crate::policy::{Lists, Mode, Patterns, Policy, RuleSet, DEFAULT_METHODS};
use crate::ratelimit::{RateLimitService, MAX_CLUSTER_NAME};
use crate::tags::TagHeaders;
use base64::Engine as _;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Default cap on a buffered request body, in bytes (4 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Default limit on JSON nesting (objects and arrays) in a request body.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 64;
/// Largest accepted `max_json_depth`: serde_json refuses deeper documents on its own (128 in
/// its recursion limit), and no MCP message needs more.
pub const MAX_MAX_JSON_DEPTH: usize = 128;

/// Default number of calls a JSON-RPC batch may carry (1: every call is its own HTTP request,
/// so every call costs one rate-limit hit).
pub const DEFAULT_MAX_BATCH_CALLS: usize = 1;
/// Largest accepted `max_batch_calls`.
pub const MAX_MAX_BATCH_CALLS: usize = 100;

/// The compiled, immutable plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `server_id` for audit records; `None` means "the upstream cluster name".
    pub server_id: Option<String>,
    /// How the agent id is resolved.
    pub identity: Identity,
    /// Names of the request headers mcp-guard owns.
    pub headers: TagHeaders,
    /// The allowlist policy.
    pub policy: Policy,
    /// How `input_hash` is computed (plain SHA-256, or keyed HMAC-SHA256).
    pub input_hash: InputHasher,
    /// Rewrite `tools/list`, `prompts/list` and `resources/list` responses to what the agent
    /// may use (`crate::curation`). Default true.
    pub curate_lists: bool,
    /// Refuse tools by the server's own annotations (`crate::annotations`); `None`: off.
    pub annotations: Option<AnnotationRule>,
    /// Answer a denied `tools/call` as the server answers an unknown tool; `None`: answer
    /// with mcp-guard's own -32003 error.
    pub hide_denied_tools: Option<HideDenied>,
    /// Distinct tools with their own `tool_calls` stat per worker; the rest count as `other`.
    /// At most `crate::metrics::MAX_TOOL_LABELS` (a larger configured value is lowered to it).
    pub max_tool_metrics: usize,
    /// Largest request body examined, in bytes; larger bodies are refused with HTTP 413.
    pub max_body_bytes: usize,
    /// Deepest JSON nesting accepted in a request body; deeper bodies are refused (-32700).
    pub max_json_depth: usize,
    /// Most calls (requests, or messages naming a tool/prompt/resource) a forwarded JSON-RPC
    /// batch (MCP 2025-03-26) may carry. A batch is one HTTP request, so it costs one
    /// rate-limit hit whatever its size: above 1, an agent gets up to this many calls per hit.
    pub max_batch_calls: usize,
    /// Hold a POST's request headers until its body has been examined (default true). This
    /// needs the Wasm `PluginConfig` flag `allow_on_headers_stop_iteration: true`; it is what
    /// lets mcp-guard set its tags on the request for rate-limit filters placed after it.
    /// False for hosts without that flag (Istio's `WasmPlugin`): the headers go on at once
    /// (client-sent tag headers removed, the agent tag set), the body is still held and
    /// examined before any of it is forwarded, and no body-derived tag is set.
    pub hold_request_headers: bool,
    /// Call the RLS from mcp-guard itself (`crate::ratelimit`); `None`: off.
    pub rate_limit_service: Option<RateLimitService>,
    /// Decide and tag a POST at header time from its MCP 2026-07-28 routing headers
    /// (`Mcp-Method`, `Mcp-Name`) when they name something the policy allows, and stream the
    /// body to the upstream while keeping a copy; at its end the body is checked as usual and a
    /// body that disagrees (or fails any other check) is refused, which resets the upstream
    /// stream before the body's last chunk. Default false: every body is held until examined.
    /// Not combinable with `rate_limit_service` (that call needs the examined body).
    pub decide_at_headers: bool,
}

/// How a hidden denial is answered (plugin configuration `hide_denied_tools`). `{name}` in the
/// text is replaced by the tool's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HideDenied {
    /// A `tools/call` result with `isError: true` and this text (the official Python SDK:
    /// `"Unknown tool: {name}"`).
    ToolError(String),
    /// A JSON-RPC error (the TypeScript SDK's McpServer: -32602 `"Tool {name} not found"`).
    JsonRpcError {
        /// The error code.
        code: i32,
        /// The message.
        message: String,
    },
}

impl HideDenied {
    /// The JSON-RPC response answering request `id` for `tool`.
    pub fn answer(&self, id: &crate::jsonrpc::Id, tool: &str) -> String {
        match self {
            HideDenied::ToolError(text) => {
                let text = serde_json::Value::String(text.replace("{name}", tool));
                format!(
                    r#"{{"jsonrpc":"2.0","id":{},"result":{{"content":[{{"type":"text","text":{text}}}],"isError":true}}}}"#,
                    id.to_json()
                )
            }
            HideDenied::JsonRpcError { code, message } => {
                crate::jsonrpc::error_response(Some(id), *code, &message.replace("{name}", tool))
            }
        }
    }
}

/// A configuration problem: the field path (for example `policy.agents.bot.tools[1]`) and what
/// is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending field; empty for the document itself.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.field, self.problem)
        }
    }
}

fn error(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        problem: problem.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server_id: Option<String>,
    #[serde(default)]
    identity: Option<RawIdentity>,
    #[serde(default)]
    headers: Option<RawHeaders>,
    policy: RawPolicy,
    #[serde(default)]
    max_body_bytes: Option<usize>,
    #[serde(default)]
    max_json_depth: Option<usize>,
    #[serde(default)]
    max_batch_calls: Option<usize>,
    #[serde(default)]
    input_hash: Option<RawInputHash>,
    #[serde(default)]
    curate_lists: Option<bool>,
    #[serde(default)]
    annotations: Option<RawAnnotations>,
    #[serde(default)]
    hide_denied_tools: Option<RawHide>,
    #[serde(default)]
    max_tool_metrics: Option<usize>,
    #[serde(default)]
    hold_request_headers: Option<bool>,
    #[serde(default)]
    rate_limit_service: Option<RawRateLimitService>,
    #[serde(default)]
    decide_at_headers: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimitService {
    cluster: String,
    domain: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    failure_mode_deny: Option<bool>,
}

/// Default deadline of an RLS call made by mcp-guard, in milliseconds (Envoy's ratelimit
/// filter's default `timeout` is 20 ms).
pub const DEFAULT_RLS_TIMEOUT_MS: u64 = 20;
/// Longest accepted RLS deadline, in milliseconds.
pub const MAX_RLS_TIMEOUT_MS: u64 = 60_000;

fn rate_limit_service(raw: RawRateLimitService) -> Result<RateLimitService, ConfigError> {
    if raw.domain.is_empty() {
        return Err(error("rate_limit_service.domain", "must not be empty"));
    }
    let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_RLS_TIMEOUT_MS);
    if !(1..=MAX_RLS_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(error(
            "rate_limit_service.timeout_ms",
            format!("must be between 1 and {MAX_RLS_TIMEOUT_MS}"),
        ));
    }
    let failure_mode_deny = raw.failure_mode_deny.unwrap_or(false);
    RateLimitService::new(&raw.cluster, raw.domain, timeout_ms, failure_mode_deny).ok_or_else(
        || {
            error(
                "rate_limit_service.cluster",
                format!("must be 1-{MAX_CLUSTER_NAME} bytes"),
            )
        },
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawHide {
    ToolError(String),
    JsonrpcError(RawHideError),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHideError {
    code: i32,
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnnotations {
    refuse: RawRefuse,
    #[serde(default)]
    unseen: Option<RawUnseen>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RawRefuse {
    Destructive,
    NotReadOnly,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RawUnseen {
    Refuse,
    Allow,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    sources: Vec<RawSource>,
    #[serde(default)]
    fallback: Option<String>,
    #[serde(default)]
    unidentified: Option<RawUnidentified>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawSource {
    Header(String),
    JwtClaim(RawJwtClaim),
    PeerUriSan(RawPeerUriSan),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwtClaim {
    claim: String,
    #[serde(default)]
    metadata_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeerUriSan {
    #[serde(default)]
    strip_prefix: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum RawUnidentified {
    Fallback,
    Reject,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaders {
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    tool_name: Option<String>,
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    prompt_name: Option<String>,
    #[serde(default)]
    resource_uri: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    mode: Option<RawMode>,
    agents: BTreeMap<String, RawRules>,
    #[serde(default)]
    groups: BTreeMap<String, RawGroup>,
}

/// A rule set's lists. `tools` etc. are either a list of allow patterns or
/// `{"allow": [...], "deny": [...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    #[serde(default)]
    tools: Option<RawList>,
    #[serde(default)]
    prompts: Option<RawList>,
    #[serde(default)]
    resources: Option<RawList>,
    #[serde(default)]
    methods: Option<RawList>,
    #[serde(default)]
    mode: Option<RawMode>,
}

/// A group: its members (agent-id patterns) and the same lists as an agent entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    members: Vec<String>,
    #[serde(default)]
    tools: Option<RawList>,
    #[serde(default)]
    prompts: Option<RawList>,
    #[serde(default)]
    resources: Option<RawList>,
    #[serde(default)]
    methods: Option<RawList>,
    #[serde(default)]
    mode: Option<RawMode>,
}

#[derive(Default)]
struct RawList {
    allow: Vec<String>,
    deny: Vec<String>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInputHash {
    hmac_key: String,
    key_id: String,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RawMode {
    Enforce,
    DryRun,
}

fn mode(raw: Option<RawMode>) -> Mode {
    match raw.unwrap_or(RawMode::Enforce) {
        RawMode::Enforce => Mode::Enforce,
        RawMode::DryRun => Mode::DryRun,
    }
}

fn compile_list(field: &str, raw: Option<RawList>, default: &[&str]) -> Result<Lists, ConfigError> {
    let raw = raw.unwrap_or_else(|| RawList {
        allow: default.iter().map(|s| (*s).to_owned()).collect(),
        deny: Vec::new(),
    });
    let compile = |which: &str, patterns: &[String]| {
        Patterns::compile(patterns).map_err(|(i, why)| {
            let field = if which.is_empty() {
                format!("{field}[{i}]")
            } else {
                format!("{field}.{which}[{i}]")
            };
            error(field, why)
        })
    };
    // A plain list reports `tools[1]`; the object form `tools.allow[1]`.
    let plain = raw.deny.is_empty();
    Ok(Lists {
        allow: compile(if plain { "" } else { "allow" }, &raw.allow)?,
        deny: compile("deny", &raw.deny)?,
    })
}

#[allow(clippy::too_many_arguments)]
fn rule_set(
    origin: String,
    members: Patterns,
    tools: Option<RawList>,
    prompts: Option<RawList>,
    resources: Option<RawList>,
    methods: Option<RawList>,
    raw_mode: Option<RawMode>,
) -> Result<RuleSet, ConfigError> {
    Ok(RuleSet {
        tools: compile_list(&format!("policy.{origin}.tools"), tools, &[])?,
        prompts: compile_list(&format!("policy.{origin}.prompts"), prompts, &[])?,
        resources: compile_list(&format!("policy.{origin}.resources"), resources, &[])?,
        methods: compile_list(
            &format!("policy.{origin}.methods"),
            methods,
            DEFAULT_METHODS,
        )?,
        mode: mode(raw_mode),
        members,
        origin,
    })
}

/// A label for the audit record (`policy.name`, `policy.version`, `input_hash.key_id`): 1–128
/// visible ASCII characters.
fn label(field: &str, value: String) -> Result<String, ConfigError> {
    if value.is_empty() || value.len() > 128 || !value.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(error(field, "must be 1-128 visible ASCII characters"));
    }
    Ok(value)
}

impl Config {
    /// Parses and compiles a plugin configuration.
    ///
    /// Errors: invalid JSON, or an unknown, missing or mistyped field (the path of the field
    /// and serde's message, with line and column); an invalid header name; an empty tool pattern; an
    /// invalid fallback agent id; a `max_body_bytes` of 0; a `max_json_depth` outside 1..=128;
    /// a `max_batch_calls` outside 1..=100; an empty `identity.sources`; a
    /// `rate_limit_service` with an empty or over-long cluster, an empty domain or a
    /// `timeout_ms` outside 1..=60000; `decide_at_headers` with `rate_limit_service`.
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let raw: RawConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            error(
                if path == "." { String::new() } else { path },
                e.into_inner().to_string(),
            )
        })?;
        de.end().map_err(|e| error("", e.to_string()))?;

        if raw.server_id.as_deref().is_some_and(str::is_empty) {
            return Err(error("server_id", "must not be empty"));
        }

        let identity = match raw.identity {
            None => Identity::new(
                vec![Source::Header("x-agent-id".into())],
                "anonymous".into(),
            ),
            Some(ri) => {
                if ri.sources.is_empty() {
                    return Err(error("identity.sources", "needs at least one source"));
                }
                let mut sources = Vec::with_capacity(ri.sources.len());
                for (i, s) in ri.sources.into_iter().enumerate() {
                    sources.push(match s {
                        RawSource::Header(name) => Source::Header(header_name(
                            &format!("identity.sources[{i}].header"),
                            name,
                        )?),
                        RawSource::JwtClaim(j) => {
                            let field = format!("identity.sources[{i}].jwt_claim");
                            Source::JwtClaim {
                                metadata_key: label(
                                    &format!("{field}.metadata_key"),
                                    j.metadata_key.unwrap_or_else(|| "payload".into()),
                                )?,
                                claim: label(&format!("{field}.claim"), j.claim)?,
                            }
                        }
                        RawSource::PeerUriSan(p) => Source::PeerUriSan {
                            strip_prefix: p.strip_prefix.filter(|p| !p.is_empty()),
                        },
                    });
                }
                match ri.unidentified.unwrap_or(RawUnidentified::Fallback) {
                    RawUnidentified::Reject => {
                        if ri.fallback.is_some() {
                            return Err(error(
                                "identity.fallback",
                                "has no effect with unidentified: reject",
                            ));
                        }
                        Identity::with_policy(sources, Unidentified::Reject)
                    }
                    RawUnidentified::Fallback => {
                        let fallback = ri.fallback.unwrap_or_else(|| "anonymous".into());
                        if !identity::is_valid_agent_id(&fallback) {
                            return Err(error("identity.fallback", "not a valid agent id"));
                        }
                        Identity::new(sources, fallback)
                    }
                }
            }
        };

        let defaults = TagHeaders::default();
        let headers = match raw.headers {
            None => defaults,
            Some(h) => TagHeaders {
                method: opt_header("headers.method", h.method, defaults.method)?,
                tool_name: opt_header("headers.tool_name", h.tool_name, defaults.tool_name)?,
                agent_id: opt_header("headers.agent_id", h.agent_id, defaults.agent_id)?,
                prompt_name: opt_header(
                    "headers.prompt_name",
                    h.prompt_name,
                    defaults.prompt_name,
                )?,
                resource_uri: opt_header(
                    "headers.resource_uri",
                    h.resource_uri,
                    defaults.resource_uri,
                )?,
            },
        };
        if let Some(dup) = headers.duplicate() {
            return Err(error(
                "headers",
                format!("header {dup:?} is used for two tags"),
            ));
        }

        let policy_mode = mode(raw.policy.mode);
        let mut agents = HashMap::with_capacity(raw.policy.agents.len());
        for (agent, r) in raw.policy.agents {
            if !identity::is_valid_agent_id(&agent) {
                return Err(error(
                    format!("policy.agents.{agent}"),
                    "not a valid agent id",
                ));
            }
            let origin = format!("agents.{agent}");
            let set = rule_set(
                origin,
                Patterns::default(),
                r.tools,
                r.prompts,
                r.resources,
                r.methods,
                r.mode,
            )?;
            agents.insert(agent, set);
        }
        let mut groups = Vec::with_capacity(raw.policy.groups.len());
        for (group, g) in raw.policy.groups {
            let members = Patterns::compile(&g.members)
                .map_err(|(i, why)| error(format!("policy.groups.{group}.members[{i}]"), why))?;
            if g.members.is_empty() {
                return Err(error(
                    format!("policy.groups.{group}.members"),
                    "needs at least one member pattern",
                ));
            }
            let origin = format!("groups.{group}");
            groups.push(rule_set(
                origin,
                members,
                g.tools,
                g.prompts,
                g.resources,
                g.methods,
                g.mode,
            )?);
        }
        let policy_name = raw
            .policy
            .name
            .map(|v| label("policy.name", v))
            .transpose()?;
        let policy_version = raw
            .policy
            .version
            .map(|v| label("policy.version", v))
            .transpose()?;
        let input_hash = match raw.input_hash {
            None => InputHasher::Sha256,
            Some(h) => {
                let key = base64::engine::general_purpose::STANDARD
                    .decode(h.hmac_key.as_bytes())
                    .map_err(|_| error("input_hash.hmac_key", "not valid base64"))?;
                if key.len() < 32 {
                    return Err(error(
                        "input_hash.hmac_key",
                        "must decode to at least 32 bytes",
                    ));
                }
                InputHasher::hmac(key, label("input_hash.key_id", h.key_id)?)
            }
        };

        let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes == 0 {
            return Err(error("max_body_bytes", "must be greater than 0"));
        }

        let max_json_depth = raw.max_json_depth.unwrap_or(DEFAULT_MAX_JSON_DEPTH);
        if !(1..=MAX_MAX_JSON_DEPTH).contains(&max_json_depth) {
            return Err(error(
                "max_json_depth",
                format!("must be between 1 and {MAX_MAX_JSON_DEPTH}"),
            ));
        }

        let max_batch_calls = raw.max_batch_calls.unwrap_or(DEFAULT_MAX_BATCH_CALLS);
        if !(1..=MAX_MAX_BATCH_CALLS).contains(&max_batch_calls) {
            return Err(error(
                "max_batch_calls",
                format!("must be between 1 and {MAX_MAX_BATCH_CALLS}"),
            ));
        }

        let rate_limit_service = raw.rate_limit_service.map(rate_limit_service).transpose()?;
        let decide_at_headers = raw.decide_at_headers.unwrap_or(false);
        if decide_at_headers && rate_limit_service.is_some() {
            return Err(error(
                "decide_at_headers",
                "cannot be combined with rate_limit_service",
            ));
        }

        Ok(Config {
            server_id: raw.server_id,
            identity,
            headers,
            policy: Policy::new(policy_name, policy_version, policy_mode, agents, groups),
            input_hash,
            curate_lists: raw.curate_lists.unwrap_or(true),
            max_tool_metrics: raw
                .max_tool_metrics
                .unwrap_or(crate::metrics::DEFAULT_MAX_TOOL_LABELS)
                .min(crate::metrics::MAX_TOOL_LABELS),
            hide_denied_tools: raw.hide_denied_tools.map(|h| match h {
                RawHide::ToolError(text) => HideDenied::ToolError(text),
                RawHide::JsonrpcError(e) => HideDenied::JsonRpcError {
                    code: e.code,
                    message: e.message,
                },
            }),
            annotations: raw.annotations.map(|a| AnnotationRule {
                refuse: match a.refuse {
                    RawRefuse::Destructive => Refuse::Destructive,
                    RawRefuse::NotReadOnly => Refuse::NotReadOnly,
                },
                refuse_unseen: !matches!(a.unseen, Some(RawUnseen::Allow)),
            }),
            max_body_bytes,
            max_json_depth,
            max_batch_calls,
            hold_request_headers: raw.hold_request_headers.unwrap_or(true),
            rate_limit_service,
            decide_at_headers,
        })
    }
}

fn opt_header(field: &str, value: Option<String>, default: String) -> Result<String, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => header_name(field, v),
    }
}

/// Validates an HTTP header name: a non-empty RFC 9110 token, stored lower-case (Envoy keeps
/// header names lower-case), and not a pseudo-header.
fn header_name(field: &str, name: String) -> Result<String, ConfigError> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(tchar) {
        return Err(error(
            field,
            format!("{name:?} is not a valid HTTP header name"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = r#"{
      "server_id": "demo-server",
      "identity": {"sources": [{"header": "x-agent-id"}], "fallback": "anonymous"},
      "headers": {"method": "x-mcp-method", "tool_name": "x-mcp-tool-name", "agent_id": "x-agent-id",
                  "prompt_name": "x-mcp-prompt-name", "resource_uri": "x-mcp-resource-uri"},
      "policy": {"mode": "enforce", "agents": {
          "demo-agent": {"tools": ["echo", "add", "search", "fail"]},
          "admin-agent": {"tools": ["*"]},
          "default": {"tools": ["echo"]}}},
      "max_body_bytes": 4194304
    }"#;

    #[test]
    fn demo_configuration_compiles() {
        let c = Config::from_json(DEMO.as_bytes()).unwrap();
        assert_eq!(c.server_id.as_deref(), Some("demo-server"));
        assert_eq!(c.headers.tool_name, "x-mcp-tool-name");
        assert_eq!(c.max_body_bytes, 4 * 1024 * 1024);
        assert_eq!(c.policy.mode(), Mode::Enforce);
        assert!(
            c.policy.decide_tool("admin-agent", "delete_repo") == crate::policy::Decision::Allow
        );
    }

    #[test]
    fn minimal_configuration_uses_defaults() {
        let c = Config::from_json(br#"{"policy":{"agents":{}}}"#).unwrap();
        assert_eq!(
            c,
            Config {
                server_id: None,
                identity: Identity::new(
                    vec![Source::Header("x-agent-id".into())],
                    "anonymous".into()
                ),
                headers: TagHeaders::default(),
                policy: Policy::new(None, None, Mode::Enforce, HashMap::new(), Vec::new()),
                input_hash: InputHasher::Sha256,
                curate_lists: true,
                annotations: None,
                hide_denied_tools: None,
                max_tool_metrics: crate::metrics::DEFAULT_MAX_TOOL_LABELS,
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                max_json_depth: DEFAULT_MAX_JSON_DEPTH,
                max_batch_calls: DEFAULT_MAX_BATCH_CALLS,
                hold_request_headers: true,
                rate_limit_service: None,
                decide_at_headers: false,
            }
        );
    }

    #[test]
    fn rate_limit_service_and_header_mode() {
        let c = Config::from_json(
            br#"{"policy":{"agents":{}},"hold_request_headers":false,
                 "rate_limit_service":{"cluster":"outbound|8081||rls.ns.svc.cluster.local","domain":"mcp"}}"#,
        )
        .unwrap();
        assert!(!c.hold_request_headers);
        assert_eq!(
            c.rate_limit_service,
            RateLimitService::new(
                "outbound|8081||rls.ns.svc.cluster.local",
                "mcp".into(),
                DEFAULT_RLS_TIMEOUT_MS,
                false
            )
        );
        let long = "c".repeat(MAX_CLUSTER_NAME + 1);
        for (bad, field) in [
            (
                r#"{"cluster":"","domain":"mcp"}"#.to_owned(),
                "rate_limit_service.cluster",
            ),
            (
                format!(r#"{{"cluster":"{long}","domain":"mcp"}}"#),
                "rate_limit_service.cluster",
            ),
            (
                r#"{"cluster":"rls","domain":""}"#.to_owned(),
                "rate_limit_service.domain",
            ),
            (
                r#"{"cluster":"rls","domain":"d","timeout_ms":0}"#.to_owned(),
                "rate_limit_service.timeout_ms",
            ),
            (r#"{"cluster":"rls"}"#.to_owned(), "rate_limit_service"),
            (
                r#"{"cluster":"rls","domain":"d","deny":true}"#.to_owned(),
                "rate_limit_service.deny",
            ),
        ] {
            let json = format!(r#"{{"policy":{{"agents":{{}}}},"rate_limit_service":{bad}}}"#);
            let e = Config::from_json(json.as_bytes()).unwrap_err();
            assert_eq!(e.field, field, "{bad}: {e}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"policy":{"agents":{}},"bogus":1}"#,
                "unknown field `bogus`",
            ),
            (
                r#"{"policy":{"agents":{"a":{"tools":["x"],"extra":1}}}}"#,
                "unknown field `extra`",
            ),
            (
                r#"{"policy":{"mode":"sometimes","agents":{}}}"#,
                "unknown variant `sometimes`",
            ),
            (r#"{}"#, "missing field `policy`"),
            (
                r#"{"policy":{"agents":{"a":{"tools":["x",""]}}}}"#,
                "policy.agents.a.tools[1]: empty pattern",
            ),
            (
                r#"{"policy":{"agents":{}},"headers":{"method":"bad name"}}"#,
                "headers.method:",
            ),
            (
                r#"{"policy":{"agents":{}},"headers":{"method":":path"}}"#,
                "headers.method:",
            ),
            (
                r#"{"policy":{"agents":{}},"headers":{"method":"x-agent-id"}}"#,
                "used for two tags",
            ),
            (
                r#"{"policy":{"agents":{}},"max_body_bytes":0}"#,
                "max_body_bytes: must be greater than 0",
            ),
            (
                r#"{"policy":{"agents":{}},"identity":{"sources":[]}}"#,
                "identity.sources:",
            ),
            (
                r#"{"policy":{"agents":{}},"identity":{"sources":[{"header":"x"}],"fallback":"a b"}}"#,
                "identity.fallback:",
            ),
            (
                r#"{"policy":{"agents":{}},"server_id":""}"#,
                "server_id: must not be empty",
            ),
            ("not json", "expected"),
            (
                r#"{"policy":{"agents":{"a":{"tools":{"allow":["x"],"deny":[""]}}}}}"#,
                "policy.agents.a.tools.deny[0]: empty pattern",
            ),
            (
                r#"{"policy":{"agents":{"a":{"tools":{"allow":[],"block":[]}}}}}"#,
                "unknown field `block`",
            ),
            (
                r#"{"policy":{"agents":{"a":{"tools":"echo"}}}}"#,
                "policy.agents.a.tools: invalid type: string",
            ),
            (
                r#"{"policy":{"agents":{},"groups":{"g":{"members":[]}}}}"#,
                "policy.groups.g.members: needs at least one member pattern",
            ),
            (
                r#"{"policy":{"agents":{},"groups":{"g":{"tools":["x"]}}}}"#,
                "missing field `members`",
            ),
            (
                r#"{"policy":{"agents":{},"name":"has space"}}"#,
                "policy.name: must be 1-128 visible ASCII characters",
            ),
            (
                r#"{"policy":{"agents":{}},"input_hash":{"hmac_key":"c2hvcnQ=","key_id":"k"}}"#,
                "input_hash.hmac_key: must decode to at least 32 bytes",
            ),
            (
                r#"{"policy":{"agents":{}},"input_hash":{"hmac_key":"%%%","key_id":"k"}}"#,
                "input_hash.hmac_key: not valid base64",
            ),
            (
                r#"{"policy":{"agents":{}},"max_json_depth":0}"#,
                "max_json_depth: must be between 1 and 128",
            ),
            (
                r#"{"policy":{"agents":{}},"max_batch_calls":0}"#,
                "max_batch_calls: must be between 1 and 100",
            ),
            (
                r#"{"policy":{"agents":{}},"max_json_depth":129}"#,
                "max_json_depth: must be between 1 and 128",
            ),
            (
                r#"{"policy":{"agents":{}},"max_body_bytes":"big"}"#,
                "max_body_bytes: invalid type: string",
            ),
            (
                r#"{"policy":{"agents":{"bot":{"tools":["a",3]}}}}"#,
                "policy.agents.bot.tools[1]: invalid type: integer",
            ),
            (
                r#"{"policy":{"agents":{}}} trailing"#,
                "trailing characters",
            ),
        ];
        for (json, want) in cases {
            let err = Config::from_json(json.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{json}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn groups_lists_modes_and_keys_compile() {
        let c = Config::from_json(
            br#"{"policy":{"name":"prod","version":"42","agents":{
                   "bot":{"tools":{"allow":["*"],"deny":["rm_*"]},"prompts":["greet"],
                          "resources":["demo://*"],"methods":["initialize","tools/list"]},
                   "trial":{"tools":["echo"],"mode":"dry_run"}},
                 "groups":{"ops":{"members":["ops-*"],"tools":["git_*"]}}},
                 "input_hash":{"hmac_key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","key_id":"2026-11"}}"#,
        )
        .unwrap();
        use crate::policy::{Decision, Subject};
        let p = &c.policy;
        assert_eq!(
            (p.name.as_deref(), p.version.as_deref()),
            (Some("prod"), Some("42"))
        );
        assert_eq!(p.decide_tool("bot", "ls"), Decision::Allow);
        assert_eq!(p.decide_tool("bot", "rm_rf"), Decision::Deny);
        assert_eq!(p.decide("bot", Subject::Prompt("greet")), Decision::Allow);
        assert_eq!(p.decide("bot", Subject::Method("ping")), Decision::Deny); // methods listed
        assert_eq!(p.decide("trial", Subject::Method("ping")), Decision::Allow); // defaults
        assert_eq!(p.decide_tool("trial", "rm"), Decision::DryRunDeny);
        assert_eq!(p.decide_tool("ops-1", "git_log"), Decision::Allow);
        assert!(c.input_hash.hash(b"{}").starts_with("hmac-sha256:2026-11:"));
    }

    #[test]
    fn identity_sources_compile_in_order() {
        let c = Config::from_json(
            br#"{"policy":{"agents":{}},"identity":{"sources":[
                  {"jwt_claim":{"claim":"sub"}},
                  {"peer_uri_san":{"strip_prefix":"spiffe://mesh/agent/"}},
                  {"header":"X-Agent-Id"}],"unidentified":"reject"}}"#,
        )
        .unwrap();
        assert_eq!(
            c.identity.sources(),
            &[
                Source::JwtClaim {
                    metadata_key: "payload".into(),
                    claim: "sub".into()
                },
                Source::PeerUriSan {
                    strip_prefix: Some("spiffe://mesh/agent/".into())
                },
                Source::Header("x-agent-id".into()),
            ]
        );
        assert_eq!(
            c.identity
                .resolve(|_| crate::identity::Presented::Absent)
                .agent_id,
            None
        );
        for (json, want) in [
            (
                r#"{"policy":{"agents":{}},"identity":{"sources":[{"cookie":"a"}]}}"#,
                "unknown variant `cookie`",
            ),
            (
                r#"{"policy":{"agents":{}},"identity":{"sources":[{"jwt_claim":{}}]}}"#,
                "missing field `claim`",
            ),
            (
                r#"{"policy":{"agents":{}},"identity":{"sources":[{"header":"x"}],"unidentified":"reject","fallback":"a"}}"#,
                "identity.fallback: has no effect",
            ),
        ] {
            let err = Config::from_json(json.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{json}: {err}");
        }
    }

    #[test]
    fn header_names_are_lowercased() {
        let c = Config::from_json(
            br#"{"policy":{"agents":{}},"headers":{"tool_name":"X-Tool"},
                                        "identity":{"sources":[{"header":"X-Caller"}]}}"#,
        )
        .unwrap();
        assert_eq!(c.headers.tool_name, "x-tool");
        assert_eq!(c.identity.sources(), &[Source::Header("x-caller".into())]);
    }
}
