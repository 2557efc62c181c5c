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
//!               "resource_uri": "x-mcp-resource-uri", "call_round": "x-mcp-call-round"},
//!   "policy": {"mode": "enforce",
//!              "agents": {"demo-agent": {"tools": ["echo", "search"]},
//!                         "default": {"tools": ["echo"]}}},
//!   "max_body_bytes": 4194304,
//!   "max_json_depth": 64,
//!   "max_batch_calls": 1
//! }
//! ```
//!
//! Only `policy` is required. Unknown fields are rejected at every level. [`Config::from_json`]
//! reports every problem of the document, each with the field's dotted path, not only the
//! first: `on_configure` logs them, `mcp-guard check` prints them.
//!
//! Parts: [`walk`] reads the document one field at a time, [`raw`] holds the serde shapes of
//! the leaf sections, [`compile`] checks and compiles each section.

mod compile;
mod raw;
mod walk;

use crate::annotations::AnnotationRule;
use crate::audit::InputHasher;
use crate::identity::Identity;
use crate::policy::Policy;
use crate::ratelimit::RateLimitService;
use crate::tags::{ParamTags, TagHeaders};
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
    /// Per-tool parameter tags (`param_tags`): the verified value of an argument marked
    /// `x-mcp-header` set as a tag header and offered as an RLS descriptor entry
    /// (`crate::params`, [`ParamTags`]). Empty (the default): off.
    pub param_tags: ParamTags,
    /// The MCP revisions accepted (`newest_protocol_version`: the newest one, one of
    /// [`crate::version::KNOWN`]; default [`crate::version::DEFAULT_NEWEST`]): every known
    /// revision up to it. A request for any other revision is refused with -32022
    /// (`crate::version::check`).
    pub versions: crate::version::Versions,
    /// Tool definition pins (`tool_pins`, `on_drift`, `unpinned`, `learn_pins`;
    /// [`crate::pins::PinConfig`]). The default is inactive.
    pub pins: crate::pins::PinConfig,
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

/// Where serde_json found a problem in the document: 1-based line, and the column as
/// serde_json counts it (the bytes of the line before the position).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// Bytes of the line before the position.
    pub column: usize,
}

/// A configuration problem: the field path (for example `policy.agents.bot.tools[1]`), what
/// is wrong with it and, for a problem of the JSON text or shape (syntax, unknown, missing,
/// repeated or mistyped field), where serde_json found it in the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending field; empty for the document itself.
    pub field: String,
    /// What is wrong (serde's message, or mcp-guard's rule), without the position.
    pub problem: String,
    /// Where in the document; `None` for a rule of mcp-guard's on a well-formed value.
    pub position: Option<Position>,
}

impl ConfigError {
    /// A problem of `field` with no position.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            problem: problem.into(),
            position: None,
        }
    }

    /// The problem with its position, as serde_json words it: `problem at line L column C`.
    pub fn message(&self) -> String {
        match self.position {
            None => self.problem.clone(),
            Some(Position { line, column }) => {
                format!("{} at line {line} column {column}", self.problem)
            }
        }
    }
}

impl fmt::Display for ConfigError {
    /// `field: problem [at line L column C]`, or without `field: ` for the document itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message())
        } else {
            write!(f, "{}: {}", self.field, self.message())
        }
    }
}

/// Every problem of a refused plugin configuration, in the order they were found (sections
/// in the order of [`Config`]'s fields, then the order of the document within a section).
/// Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    /// The problems (at least one).
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    /// The problems, by value.
    pub fn into_vec(self) -> Vec<ConfigError> {
        self.0
    }

    /// Iterates over the problems.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// How many problems (at least 1).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a refused configuration has at least one problem.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    /// One problem per line (no trailing newline).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Default deadline of an RLS call made by mcp-guard, in milliseconds (Envoy's ratelimit
/// filter's default `timeout` is 20 ms).
pub const DEFAULT_RLS_TIMEOUT_MS: u64 = 20;
/// Longest accepted RLS deadline, in milliseconds.
pub const MAX_RLS_TIMEOUT_MS: u64 = 60_000;

impl Config {
    /// Parses and compiles a plugin configuration, checking every field: the result is the
    /// configuration, or every problem found, each with its field's path.
    ///
    /// Problems: invalid JSON or trailing characters (the only problem that stops the
    /// check); an unknown, repeated, missing or mistyped field (serde's message, with the
    /// line and column in the document); an invalid header name, or one used for two tags; an
    /// empty tool pattern (each one); an invalid agent id or fallback; an empty
    /// `identity.sources` or group `members`; a label (`policy.name`, `policy.version`,
    /// `input_hash.key_id`, a JWT claim or metadata key) that is not 1-128 visible ASCII
    /// characters; an `input_hash.hmac_key` that is not base64 of at least 32 bytes; a
    /// `max_body_bytes` of 0; a `max_json_depth` outside 1..=128; a `max_batch_calls` outside
    /// 1..=100; a `rate_limit_service` with an empty or over-long cluster, an empty domain or a
    /// `timeout_ms` outside 1..=60000; `decide_at_headers` with `rate_limit_service`; a
    /// `param_tags` entry with an empty tool name, a marking name that is not an RFC 9110 token,
    /// a tag header that is not a valid header name, starts with `mcp-`, is one of `headers`, or
    /// is used twice for one tool; a `newest_protocol_version` that is not one of
    /// [`crate::version::KNOWN`]; a `tool_pins` entry with an empty or repeated tool name or a
    /// pin that is not `sha256:` and 64 lower-case hex digits; an `on_drift` other than `hide` or
    /// `audit`; an `unpinned` other than `allow` or `hide`.
    ///
    /// Each field is checked on its own, so a problem in one (even a mistyped section) does not
    /// hide those of the others. The document, `policy`, agent and group entries, `identity`
    /// and `headers` must be JSON objects (serde's positional array form of a struct, which
    /// the previous one-shot deserialization also accepted, is refused). Keys repeated inside `policy.agents` or `policy.groups` keep
    /// their last value (as before; `mcp-guard check` refuses repeated keys when it reads a file).
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigErrors> {
        let mut cx = walk::Cx::new(bytes);
        let compiled = compile::document(&mut cx);
        let mut errors = cx.into_errors();
        match compiled {
            Ok(config) if errors.is_empty() => Ok(config),
            _ => {
                if errors.is_empty() {
                    // Not reached: every `Err(Invalid)` records its problem first.
                    errors.push(ConfigError::new("", "invalid plugin configuration"));
                }
                Err(ConfigErrors(errors))
            }
        }
    }
}

#[cfg(test)]
mod tests;
