//! The request headers mcp-guard owns ("tags"), which Envoy's rate-limit filters placed after
//! it use as descriptor sources (Envoy doc: route `rate_limits` actions `request_headers`).
//!
//! Every client-sent copy of a tag header is removed before mcp-guard sets its own value, so a
//! client can never choose its own descriptor.
//!
//! Values: the JSON-RPC method, tool name, prompt name or resource URI as decoded from the body.
//! Bytes outside visible ASCII (and `%` itself) are percent-encoded (RFC 3986 §2.1), so a value
//! can never break a header line. For a batch, the distinct values of all its messages are
//! joined with `,` in first-seen order.
//!
//! Per-tool parameter tags ([`ParamTags`], plugin configuration `param_tags`, off by default):
//! the value of a `tools/call` argument that a tool's `inputSchema` marks with `x-mcp-header`
//! (MCP 2026-07-28), once mcp-guard has checked its `Mcp-Param-*` header against the body
//! (`crate::params`), set as a tag header of the operator's choosing. The value is the body's
//! (a string as is, a boolean `true` / `false`, an integral number as a decimal integer),
//! encoded as every tag value is.

use crate::jsonrpc::Body;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Plugin configuration `param_tags`: per tool name (exact), per `x-mcp-header` name
/// (compared case-insensitively, as header names are), the tag header that carries the
/// verified value. Empty: off (the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamTags(BTreeMap<String, Vec<(String, String)>>);

impl ParamTags {
    /// The configuration: `tool -> [(marking name, tag header)]` (header names lower-case).
    pub fn new(tools: BTreeMap<String, Vec<(String, String)>>) -> Self {
        ParamTags(tools)
    }

    /// Whether no tool has a parameter tag.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `(marking name, tag header)` pairs configured for `tool`, if any.
    pub fn for_tool(&self, tool: &str) -> Option<&[(String, String)]> {
        self.0
            .get(tool)
            .map(Vec::as_slice)
            .filter(|t| !t.is_empty())
    }

    /// Every tag header name, once each (client-sent copies are removed at request headers).
    pub fn headers(&self) -> Vec<&str> {
        let mut all: Vec<&str> = Vec::new();
        for (_, header) in self.0.values().flatten() {
            if !all.contains(&header.as_str()) {
                all.push(header);
            }
        }
        all
    }
}

/// Names of the tag headers (lower-case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagHeaders {
    /// JSON-RPC method of the request; default `x-mcp-method`.
    pub method: String,
    /// `params.name` of `tools/call`; default `x-mcp-tool-name`.
    pub tool_name: String,
    /// The resolved agent id; default `x-agent-id`.
    pub agent_id: String,
    /// `params.name` of `prompts/get`; default `x-mcp-prompt-name`.
    pub prompt_name: String,
    /// `params.uri` of `resources/read`; default `x-mcp-resource-uri`.
    pub resource_uri: String,
    /// The round of a `tools/call`, `prompts/get` or `resources/read` (MCP 2026-07-28 multi
    /// round-trip calls, `crate::rounds`): [`ROUND_FIRST`] or [`ROUND_CONTINUATION`]; default
    /// `x-mcp-call-round`.
    pub call_round: String,
}

/// [`TagHeaders::call_round`] of a call that starts a logical call: anything but a verified
/// continuation (a first call, or a retry that matched no open round). Counted by rate limits.
pub const ROUND_FIRST: &str = "first";
/// [`TagHeaders::call_round`] of a retry that claimed a round mcp-guard saw answered
/// `input_required` for the same server, agent, call and `requestState`: the same logical
/// call, which Envoy's rate-limit descriptors can skip.
pub const ROUND_CONTINUATION: &str = "continuation";

impl Default for TagHeaders {
    fn default() -> Self {
        TagHeaders {
            method: "x-mcp-method".into(),
            tool_name: "x-mcp-tool-name".into(),
            agent_id: "x-agent-id".into(),
            prompt_name: "x-mcp-prompt-name".into(),
            resource_uri: "x-mcp-resource-uri".into(),
            call_round: "x-mcp-call-round".into(),
        }
    }
}

impl TagHeaders {
    /// All tag header names, in a fixed order.
    pub fn all(&self) -> [&str; 6] {
        [
            &self.method,
            &self.tool_name,
            &self.agent_id,
            &self.prompt_name,
            &self.resource_uri,
            &self.call_round,
        ]
    }

    /// A header name configured for two different tags, if any.
    pub fn duplicate(&self) -> Option<&str> {
        let all = self.all();
        all.iter()
            .enumerate()
            .find(|(i, n)| all.iter().skip(i + 1).any(|m| m == *n))
            .map(|(_, n)| *n)
    }

    /// The tag headers to set for a parsed body: `(header name, value)` pairs, leaving out tags
    /// that have no value (for example the tool name of a `ping`). The agent tag is set
    /// separately, at request-header time.
    pub fn for_body(&self, body: &Body<'_>) -> Vec<(&str, String)> {
        let m = body.messages();
        let tags: [(&str, Option<String>); 4] = [
            (
                &self.method,
                join_distinct(m.iter().filter_map(|x| x.method.as_deref())),
            ),
            (
                &self.tool_name,
                join_distinct(m.iter().filter_map(|x| x.tool_name.as_deref())),
            ),
            (
                &self.prompt_name,
                join_distinct(m.iter().filter_map(|x| x.prompt_name.as_deref())),
            ),
            (
                &self.resource_uri,
                join_distinct(m.iter().filter_map(|x| x.resource_uri.as_deref())),
            ),
        ];
        tags.into_iter()
            .filter_map(|(name, value)| value.map(|v| (name, v)))
            .collect()
    }

    /// The tag headers for one call known by its method and name (MCP 2026-07-28 routing
    /// headers, decoded): the same pairs [`TagHeaders::for_body`] gives for a body with that
    /// single message. `name` counts only for `tools/call`, `prompts/get` and
    /// `resources/read`.
    pub fn for_call(&self, method: &str, name: Option<&str>) -> Vec<(&str, String)> {
        let mut tags = vec![(self.method.as_str(), header_value(method))];
        let name_tag = match method {
            crate::jsonrpc::TOOLS_CALL => Some(&self.tool_name),
            crate::jsonrpc::PROMPTS_GET => Some(&self.prompt_name),
            crate::jsonrpc::RESOURCES_READ => Some(&self.resource_uri),
            _ => None,
        };
        if let (Some(tag), Some(name)) = (name_tag, name) {
            tags.push((tag.as_str(), header_value(name)));
        }
        tags
    }
}

/// Distinct values in first-seen order, header-encoded and joined with `,`; `None` if empty.
/// One allocation for the usual single value (the list of values seen is kept only from the
/// second distinct value on).
fn join_distinct<'a>(values: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut first: Option<&str> = None;
    let mut more: Vec<&str> = Vec::new();
    let mut out = String::new();
    for v in values {
        match first {
            None => {
                first = Some(v);
                push_header_value(&mut out, v);
            }
            Some(f) if f == v || more.contains(&v) => {}
            Some(_) => {
                more.push(v);
                out.push(',');
                push_header_value(&mut out, v);
            }
        }
    }
    first.map(|_| out)
}

/// Encodes `value` for use as a header value: visible ASCII other than `%` and `,` is kept,
/// every other byte becomes `%XX` (upper-case hex).
pub fn header_value(value: &str) -> String {
    let mut out = String::new();
    push_header_value(&mut out, value);
    out
}

/// [`header_value`], appended to `out`.
fn push_header_value(out: &mut String, value: &str) {
    out.reserve(value.len());
    for &b in value.as_bytes() {
        if b.is_ascii_graphic() && b != b'%' && b != b',' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_body(body: &[u8]) -> Result<Body<'_>, crate::jsonrpc::ParseError> {
        crate::jsonrpc::parse_body(body, crate::config::DEFAULT_MAX_JSON_DEPTH)
    }

    #[test]
    fn tags_for_a_call_match_the_tags_for_its_body() {
        let headers = TagHeaders::default();
        for (json, method, name) in [
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"gr\u00fc"}}"#,
                "tools/call",
                Some("gr\u{fc}"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a://b c"}}"#,
                "resources/read",
                Some("a://b c"),
            ),
            (r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, "ping", None),
        ] {
            let body = parse_body(json.as_bytes()).unwrap();
            assert_eq!(
                headers.for_call(method, name),
                headers.for_body(&body),
                "{json}"
            );
        }
    }

    #[test]
    fn tags_for_a_tool_call() {
        let body = parse_body(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}"#,
        )
        .unwrap();
        let headers = TagHeaders::default();
        let tags = headers.for_body(&body);
        assert_eq!(
            tags,
            vec![
                ("x-mcp-method", "tools/call".to_owned()),
                ("x-mcp-tool-name", "search".to_owned())
            ]
        );
    }

    #[test]
    fn tags_for_prompts_resources_and_plain_methods() {
        let h = TagHeaders::default();
        let b = parse_body(
            br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"greet"}}"#,
        )
        .unwrap();
        assert_eq!(
            h.for_body(&b),
            vec![
                ("x-mcp-method", "prompts/get".into()),
                ("x-mcp-prompt-name", "greet".into())
            ]
        );
        let b = parse_body(
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a b"}}"#,
        )
        .unwrap();
        assert_eq!(
            h.for_body(&b),
            vec![
                ("x-mcp-method", "resources/read".into()),
                ("x-mcp-resource-uri", "file:///a%20b".into())
            ]
        );
        let b = parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).unwrap();
        assert_eq!(h.for_body(&b), vec![("x-mcp-method", "ping".into())]);
        let b = parse_body(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#).unwrap();
        assert!(h.for_body(&b).is_empty());
    }

    #[test]
    fn batch_tags_join_distinct_values() {
        let b = parse_body(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}},
                 {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"search"}},
                 {"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"}}]"#,
        )
        .unwrap();
        let headers = TagHeaders::default();
        let tags = headers.for_body(&b);
        assert_eq!(tags[1], ("x-mcp-tool-name", "echo,search".to_owned()));
        assert_eq!(tags[0], ("x-mcp-method", "tools/call".to_owned()));
    }

    #[test]
    fn values_cannot_break_header_lines() {
        assert_eq!(
            header_value("a\r\nx-agent-id: admin"),
            "a%0D%0Ax-agent-id:%20admin"
        );
        assert_eq!(header_value("50%,ü"), "50%25%2C%C3%BC");
    }

    #[test]
    fn param_tags_by_tool_and_every_header_once() {
        let mut tools = BTreeMap::new();
        tools.insert(
            "sql".to_owned(),
            vec![("Region".to_owned(), "x-region".to_owned())],
        );
        tools.insert(
            "copy".to_owned(),
            vec![
                ("Region".to_owned(), "x-region".to_owned()),
                ("Repo".to_owned(), "x-repo".to_owned()),
            ],
        );
        let tags = ParamTags::new(tools);
        assert!(!tags.is_empty());
        assert_eq!(tags.headers(), vec!["x-region", "x-repo"]);
        assert_eq!(tags.for_tool("Sql"), None);
        assert_eq!(tags.for_tool("sql").map(<[_]>::len), Some(1));
        assert!(ParamTags::default().is_empty());
    }

    #[test]
    fn duplicate_names_are_found() {
        let mut h = TagHeaders::default();
        assert_eq!(h.duplicate(), None);
        h.tool_name = "x-mcp-method".into();
        assert_eq!(h.duplicate(), Some("x-mcp-method"));
    }
}
