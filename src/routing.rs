//! MCP 2026-07-28 routing headers: `Mcp-Method` and `Mcp-Name` (MCP specification 2026-07-28,
//! "Transports / Streamable HTTP", routing headers).
//!
//! Clients copy the JSON-RPC `method`, and `params.name` (tools/call, prompts/get) or
//! `params.uri` (resources/read), into these headers so that intermediaries can route without
//! reading the body. A value that is not printable ASCII is sent as `=?base64?<base64>?=`
//! (RFC 4648 §4 base64 of the UTF-8 bytes). Servers refuse a request whose headers disagree
//! with its body (HTTP 400, JSON-RPC [`HEADER_MISMATCH`]).
//!
//! mcp-guard never trusts these headers on their own: the body decides, and a header that
//! disagrees with it is refused the same way before any tag is set, so a client cannot get one
//! name past mcp-guard (or a header-routing proxy) and another to the server. A header sent
//! twice is refused too (the first and the last copy could be read by different hops), as the
//! official Python SDK server does.
//!
//! `Mcp-Name` is defined for `tools/call` and `prompts/get` (`params.name`), `resources/read`
//! (`params.uri`) and the task methods (`params.taskId`, SEP-2663); on any other method it
//! names nothing and is ignored, as servers ignore it.

use crate::jsonrpc::{self, Body};
use base64::Engine as _;

/// JSON-RPC error code for a routing header that disagrees with the body (MCP 2026-07-28).
pub const HEADER_MISMATCH: i32 = -32020;
/// Request header carrying the JSON-RPC method.
pub const MCP_METHOD: &str = "mcp-method";
/// Request header carrying `params.name` or `params.uri`.
pub const MCP_NAME: &str = "mcp-name";

/// Decodes a routing header value: the `=?base64?...?=` form (markers lower-case and exact, as
/// the specification requires; standard alphabet, canonical padding) to its UTF-8 text; any other
/// value (including `=?BASE64?...?=`) is taken literally. `None` when the encoded form is not
/// valid base64 or not UTF-8.
pub fn decode_value(value: &str) -> Option<String> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        None => Some(value.to_owned()),
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
    }
}

/// The routing headers of one request: every value each was sent with (normally zero or one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingHeaders {
    /// Values of `Mcp-Method`.
    pub method: Vec<String>,
    /// Values of `Mcp-Name`.
    pub name: Vec<String>,
    /// Values of `MCP-Protocol-Version` (`crate::version::HEADER`), read on every request
    /// (GET and DELETE included).
    pub version: Vec<String>,
}

/// Checks the routing headers of a request against its parsed body.
///
/// An absent header asserts nothing (clients before 2026-07-28). Errors with the name of the
/// offending header when it was sent more than once, cannot be decoded, is sent with a batch
/// (which has no single method or name), or decodes to something other than the body's method /
/// `params.name` / `params.uri` / `params.taskId` (exact, case-sensitive comparison after JSON
/// escapes are decoded).
pub fn check(headers: &RoutingHeaders, body: &Body<'_>) -> Result<(), &'static str> {
    let single = |values: &[String], header: &'static str| match values {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        _ => Err(header),
    };
    let method = single(&headers.method, "Mcp-Method")?;
    let name = single(&headers.name, "Mcp-Name")?;
    verify(method.as_deref(), name.as_deref(), body)
}

/// [`check`] for at most one value per header: `method` and `name` are the raw header values.
pub fn verify(
    method: Option<&str>,
    name: Option<&str>,
    body: &Body<'_>,
) -> Result<(), &'static str> {
    if method.is_none() && name.is_none() {
        return Ok(());
    }
    let message = match body {
        Body::Single(m) => m,
        Body::Batch(_) => {
            return Err(if method.is_some() {
                "Mcp-Method"
            } else {
                "Mcp-Name"
            })
        }
    };
    if let Some(header) = method {
        if decode_value(header).as_deref() != message.method.as_deref() {
            return Err("Mcp-Method");
        }
    }
    if let Some(header) = name {
        let names_something = matches!(
            message.method.as_deref(),
            Some(jsonrpc::TOOLS_CALL | jsonrpc::PROMPTS_GET | jsonrpc::RESOURCES_READ)
        ) || message
            .method
            .as_deref()
            .is_some_and(|m| jsonrpc::TASK_METHODS.contains(&m));
        let body_name = message.name().or(message.task_id.as_deref());
        if names_something && (body_name.is_none() || decode_value(header).as_deref() != body_name)
        {
            return Err("Mcp-Name");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::parse_body;

    fn body(json: &str) -> Body<'_> {
        parse_body(json.as_bytes(), 64).unwrap()
    }

    const CALL: &str =
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;

    #[test]
    fn decodes_the_base64_form() {
        assert_eq!(decode_value("echo").as_deref(), Some("echo"));
        assert_eq!(decode_value("=?base64?ZWNobw==?=").as_deref(), Some("echo"));
        // The markers are exact and lower-case; anything else is a literal value.
        assert_eq!(
            decode_value("=?BASE64?ZWNobw==?=").as_deref(),
            Some("=?BASE64?ZWNobw==?=")
        );
        assert_eq!(decode_value("=?base64? ZWNobw==?="), None);
        assert_eq!(decode_value("=?base64?ZWNobx==?="), None); // non-canonical padding bits
                                                               // "héllo" in UTF-8.
        assert_eq!(
            decode_value("=?base64?aMOpbGxv?=").as_deref(),
            Some("héllo")
        );
        assert_eq!(decode_value("=?base64?not base64!?="), None);
        assert_eq!(decode_value("=?base64?/w==?="), None); // 0xFF is not UTF-8
                                                           // Not the encoded form: taken literally.
        assert_eq!(
            decode_value("=?base64?ZWNobw==").as_deref(),
            Some("=?base64?ZWNobw==")
        );
    }

    #[test]
    fn matching_or_absent_headers_pass() {
        let b = body(CALL);
        assert_eq!(verify(None, None, &b), Ok(()));
        assert_eq!(verify(Some("tools/call"), Some("echo"), &b), Ok(()));
        assert_eq!(verify(Some("tools/call"), None, &b), Ok(()));
        assert_eq!(verify(None, Some("=?base64?ZWNobw==?="), &b), Ok(()));
        let read = body(
            r#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"demo://docs/a"}}"#,
        );
        assert_eq!(
            verify(Some("resources/read"), Some("demo://docs/a"), &read),
            Ok(())
        );
    }

    #[test]
    fn disagreeing_headers_are_named() {
        let b = body(CALL);
        assert_eq!(verify(Some("tools/list"), None, &b), Err("Mcp-Method"));
        assert_eq!(verify(None, Some("delete_repo"), &b), Err("Mcp-Name"));
        assert_eq!(verify(None, Some("Echo"), &b), Err("Mcp-Name"));
        assert_eq!(verify(None, Some("=?base64?@@@?="), &b), Err("Mcp-Name"));
        // On a method that names nothing, Mcp-Name is ignored (servers ignore it too).
        let ping = body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
        assert_eq!(verify(Some("ping"), Some("echo"), &ping), Ok(()));
        // Task methods name their task (SEP-2663).
        let task =
            body(r#"{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"t-1"}}"#);
        assert_eq!(verify(Some("tasks/get"), Some("t-1"), &task), Ok(()));
        assert_eq!(
            verify(Some("tasks/get"), Some("t-2"), &task),
            Err("Mcp-Name")
        );
        // Sent twice: refused whatever the values.
        let b2 = body(CALL);
        let twice = RoutingHeaders {
            method: vec![],
            name: vec!["echo".into(), "delete_repo".into()],
            version: vec![],
        };
        assert_eq!(check(&twice, &b2), Err("Mcp-Name"));
        let once = RoutingHeaders {
            method: vec!["tools/call".into()],
            name: vec!["echo".into()],
            version: vec![],
        };
        assert_eq!(check(&once, &b2), Ok(()));
        let batch_text = format!("[{CALL}]");
        let batch = body(&batch_text);
        assert_eq!(verify(Some("tools/call"), None, &batch), Err("Mcp-Method"));
        // The body's escapes are decoded before the comparison.
        let escaped = body(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools\u002fcall","params":{"name":"ech\u006f"}}"#,
        );
        assert_eq!(verify(Some("tools/call"), Some("echo"), &escaped), Ok(()));
    }
}
