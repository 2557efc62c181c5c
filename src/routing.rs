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
//! name past mcp-guard (or a header-routing proxy) and another to the server.

use crate::jsonrpc::Body;
use base64::Engine as _;

/// JSON-RPC error code for a routing header that disagrees with the body (MCP 2026-07-28).
pub const HEADER_MISMATCH: i32 = -32020;
/// Request header carrying the JSON-RPC method.
pub const MCP_METHOD: &str = "mcp-method";
/// Request header carrying `params.name` or `params.uri`.
pub const MCP_NAME: &str = "mcp-name";

/// Decodes a routing header value: the `=?base64?...?=` form (the `base64` label compared
/// case-insensitively, standard alphabet with padding) to its UTF-8 text, any other value as
/// it is. `None` when the encoded form is not valid base64 or not UTF-8.
pub fn decode_value(value: &str) -> Option<String> {
    let encoded = value
        .get(..9)
        .filter(|prefix| prefix.eq_ignore_ascii_case("=?base64?"))
        .and_then(|_| value.get(9..))
        .and_then(|rest| rest.strip_suffix("?="));
    match encoded {
        None => Some(value.to_owned()),
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
    }
}

/// Checks the routing headers of a request against its parsed body.
///
/// `method` and `name` are the raw header values (`None` when the client did not send one; an
/// absent header asserts nothing, as with clients before 2026-07-28). Errors with the name of
/// the disagreeing header when a header cannot be decoded, when the body is a batch (a batch
/// has no single method or name), or when the decoded value differs from the body's method /
/// `params.name` / `params.uri` (exact, case-sensitive comparison after JSON escapes are
/// decoded).
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
        let body_name = message
            .tool_name
            .as_deref()
            .or(message.prompt_name.as_deref())
            .or(message.resource_uri.as_deref());
        if body_name.is_none() || decode_value(header).as_deref() != body_name {
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
        assert_eq!(decode_value("=?BASE64?ZWNobw==?=").as_deref(), Some("echo"));
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
        let ping = body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
        assert_eq!(verify(Some("ping"), Some("echo"), &ping), Err("Mcp-Name"));
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
