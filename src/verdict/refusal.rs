//! [`Refusal`]: why mcp-guard refuses a request (or a response it had to read), and the one
//! mapping from a refusal to its HTTP status, JSON-RPC error, counters and audit fields.

use crate::audit::{Call, OutputStatus};
use crate::config::Config;
use crate::curation::Unreadable;
use crate::jsonrpc::{self, Id, ParseError};
use crate::metrics::Metric;
use crate::policy::Decision;
use crate::routing;
use crate::version;

/// JSON-RPC error code for a call refused by policy. JSON-RPC 2.0 §5.1 leaves -32000..-32099
/// to implementations; MCP 2026-07-28 keeps -32000..-32019 implementation-defined and reserves
/// -32020 onwards for the specification. The SDKs use -32000 (connection closed) and -32001
/// (request timeout), and -32002 is retired, so a denial uses -32003 and cannot be mistaken for
/// a timeout (which an agent might retry).
pub const DENIED: i32 = -32003;
/// JSON-RPC error code for a call refused by a rate limiter (HTTP 429), same band.
pub const RATE_LIMITED: i32 = -32004;
/// JSON-RPC internal error (JSON-RPC 2.0 §5.1): the filter has no valid configuration, an
/// identity source could not be read, or the rate limit service could not be asked under
/// `failure_mode_deny`.
pub const INTERNAL_ERROR: i32 = -32603;
/// JSON-RPC error code when the filter has no valid configuration.
pub const NOT_CONFIGURED: i32 = INTERNAL_ERROR;
/// HTTP status for a request body with a `content-encoding` (RFC 9110 §15.5.16).
pub const UNSUPPORTED_MEDIA_TYPE: u32 = 415;
/// HTTP status for a request no identity source identified, under `unidentified: reject`.
pub const UNAUTHORIZED: u32 = 401;
/// HTTP status for a request whose identity source could not be read (RFC 9110 §15.6.1),
/// with [`INTERNAL_ERROR`].
pub const INTERNAL_SERVER_ERROR: u32 = 500;
/// HTTP status for a response mcp-guard had to read and could not (RFC 9110 §15.6.3).
pub const BAD_GATEWAY: u32 = 502;
/// HTTP status for a GET or DELETE from an MCP 2026-07-28 client (RFC 9110 §15.5.6), sent
/// with `Allow: POST`.
pub const METHOD_NOT_ALLOWED: u32 = 405;

/// Why mcp-guard refuses a request (or a response it had to read). Each variant owns its HTTP
/// status, JSON-RPC code and message, counters and audit fields: see the methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No identity source identified the request (`unidentified: reject`): HTTP 401,
    /// [`DENIED`], counted as denial `unidentified`.
    Unidentified,
    /// An identity source could not be read (fail closed whatever the fallback): HTTP 500,
    /// [`INTERNAL_ERROR`], denial `identity_unreadable`.
    IdentityUnreadable,
    /// The request body has a `content-encoding` other than `identity`: HTTP 415,
    /// `-32600`, refusal `encoding`.
    Encoded,
    /// A request-side host read failed (`what`: the request headers, or the body): the
    /// request cannot be examined, so it is refused, never forwarded unexamined (fail
    /// closed): HTTP 500, [`INTERNAL_ERROR`], one `denied` record, refusal `request_read`.
    RequestUnread {
        /// What could not be read, e.g. `request body`.
        what: &'static str,
    },
    /// A POST without a body: HTTP 400, `-32700`, refusal `parse`.
    EmptyBody,
    /// The body is larger than `max_body_bytes` (the limit, in bytes): HTTP 413, `-32600`,
    /// refusal `too_large`.
    TooLarge {
        /// `max_body_bytes`.
        max: usize,
    },
    /// A request other than a POST carries a body (only a POST may carry JSON-RPC): HTTP 400,
    /// `-32600`, refusal `parse`.
    BodyNotAllowed {
        /// The HTTP method, e.g. `GET`.
        http_method: String,
    },
    /// The body is not a valid JSON-RPC message or batch (`crate::jsonrpc::parse_body`):
    /// HTTP 400 with the parser's code and message, refusal `parse`.
    Parse(ParseError),
    /// An MCP routing header disagrees with the body (`crate::routing::check`): HTTP 400,
    /// [`routing::HEADER_MISMATCH`], refusal `header_mismatch`.
    HeaderMismatch {
        /// The header's name, e.g. `Mcp-Method`.
        header: &'static str,
        /// The single request's id and method (`None` for a batch).
        id: Option<Id>,
        /// See `id`.
        method: Option<String>,
    },
    /// At least one call is not allowed: HTTP 200 with [`DENIED`] per request (or the
    /// `hide_denied_tools` answer for a single `tools/call`); denials `policy`, `annotations`
    /// and, for calls tool pins denied ([`Call::pin`]), `tool_drift`, `tool_unpinned`,
    /// `tool_unverified`.
    Denied {
        /// How many of the blocked calls the annotations rule refused.
        by_annotations: usize,
    },
    /// A batch with more than `max_batch_calls` calls, or whose messages differ in method or
    /// name: HTTP 400, `-32600` per request, refusal `batch`; its calls are recorded `deny`.
    Batch {
        /// `max_batch_calls`.
        max: usize,
    },
    /// A rate limiter refused: HTTP 429, [`RATE_LIMITED`] per request, counted as
    /// `rate_limited` per call. `retry_after_s` (the RLS's answer) becomes `Retry-After`.
    RateLimited {
        /// Seconds for `Retry-After` (RFC 9110 §10.2.3); `None` when mcp-guard did not ask.
        retry_after_s: Option<u64>,
    },
    /// The RLS gave no usable answer under `failure_mode_deny`: HTTP 500, [`INTERNAL_ERROR`]
    /// per request, every call `upstream_error`.
    RlsUnavailable,
    /// A response that curation must read cannot be ([`Unreadable`]): HTTP 502 in place of a
    /// 2xx status, [`INTERNAL_ERROR`] per request, refusal `<why.reason()>`.
    Response(Unreadable),
    /// An `Mcp-Param-*` header of a `tools/call` disagrees with the body, is missing, repeated
    /// or malformed, or cannot be checked where it must be (`crate::params`; MCP 2026-07-28
    /// "Custom Headers from Tool Parameters"): HTTP 400, [`routing::HEADER_MISMATCH`],
    /// refusal `header_mismatch`. One `deny` record naming the tool.
    ParamMismatch {
        /// The header as the specification spells it (`Mcp-Param-Region`), or `Mcp-Param-*`.
        header: String,
        /// What is wrong; never a header or argument value.
        why: &'static str,
        /// The request's id, method and tool.
        id: Option<Id>,
        /// See `id`.
        method: Option<String>,
        /// See `id`.
        tool: Option<String>,
    },
    /// The tools' `Mcp-Param-*` markings could not be read from shared data (fail closed:
    /// "could not read it" is not "nothing there"): HTTP 500, [`INTERNAL_ERROR`], refusal
    /// `request_read`. One `deny` record naming the tool.
    ParamsUnread {
        /// The request's id, method and tool.
        id: Option<Id>,
        /// See `id`.
        method: Option<String>,
        /// See `id`.
        tool: Option<String>,
    },
    /// A routing header an MCP 2026-07-28 request requires is missing (`MCP-Protocol-Version`,
    /// `Mcp-Method`, or `Mcp-Name` for a method that names something; `crate::version::check`):
    /// HTTP 400, [`routing::HEADER_MISMATCH`], refusal `header_mismatch`.
    HeaderMissing {
        /// The header's name, e.g. `MCP-Protocol-Version`.
        header: &'static str,
        /// The request's id and method.
        id: Option<Id>,
        /// See `id`.
        method: Option<String>,
    },
    /// A request claiming MCP 2026-07-28 whose `params._meta` is not an object carrying the
    /// `io.modelcontextprotocol/protocolVersion` and `io.modelcontextprotocol/clientCapabilities`
    /// keys (SEP-2575; the SDK's ladder, rung 1): HTTP 400, -32602, refusal `parse`.
    Envelope {
        /// The missing `_meta` keys.
        missing: Vec<&'static str>,
        /// The request's id and method.
        id: Option<Id>,
        /// See `id`.
        method: Option<String>,
    },
    /// The requested MCP revision is not one this configuration accepts
    /// (`newest_protocol_version`): HTTP 400, -32022 (`UnsupportedProtocolVersionError`) with
    /// `data: {"supported": [...], "requested": "..."}`, refusal `unsupported_version`.
    UnsupportedVersion {
        /// The revision asked for (the header value, or `_meta`'s).
        requested: String,
        /// The accepted revisions, oldest first.
        supported: &'static [&'static str],
        /// The request's id and method (`None` for a batch).
        id: Option<Id>,
        /// See `id`.
        method: Option<String>,
    },
    /// A JSON-RPC batch with an MCP 2026-07-28 header or `_meta` (batches exist only in
    /// 2025-03-26): HTTP 400, `-32600`, refusal `batch`.
    ModernBatch,
    /// A GET or DELETE whose `MCP-Protocol-Version` claims 2026-07-28 or later: that revision
    /// has no GET stream and no session to end (Streamable HTTP, Backward Compatibility: a
    /// server SHOULD answer 405): HTTP 405 with `Allow: POST`, `-32600`, refusal
    /// `method_not_allowed`.
    MethodNotAllowed {
        /// `GET` or `DELETE`.
        http_method: String,
    },
}

/// A local reply: HTTP status, extra headers (besides `content-type: application/json`) and
/// the JSON-RPC body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u32,
    /// Extra response headers, e.g. `retry-after`.
    pub headers: Vec<(&'static str, String)>,
    /// The JSON-RPC response body.
    pub body: String,
}

impl Refusal {
    /// The HTTP status of the reply.
    pub fn status(&self) -> u32 {
        match self {
            Refusal::Unidentified => UNAUTHORIZED,
            Refusal::IdentityUnreadable
            | Refusal::RequestUnread { .. }
            | Refusal::RlsUnavailable
            | Refusal::ParamsUnread { .. } => INTERNAL_SERVER_ERROR,
            Refusal::Encoded => UNSUPPORTED_MEDIA_TYPE,
            Refusal::TooLarge { .. } => 413,
            Refusal::EmptyBody
            | Refusal::BodyNotAllowed { .. }
            | Refusal::Parse(_)
            | Refusal::HeaderMismatch { .. }
            | Refusal::ParamMismatch { .. }
            | Refusal::Batch { .. } => 400,
            Refusal::Denied { .. } => 200,
            Refusal::RateLimited { .. } => 429,
            Refusal::Response(_) => BAD_GATEWAY,
            Refusal::HeaderMissing { .. }
            | Refusal::Envelope { .. }
            | Refusal::UnsupportedVersion { .. }
            | Refusal::ModernBatch => 400,
            Refusal::MethodNotAllowed { .. } => METHOD_NOT_ALLOWED,
        }
    }

    /// The JSON-RPC error code of each error object in the reply.
    pub fn code(&self) -> i32 {
        match self {
            Refusal::Unidentified | Refusal::Denied { .. } => DENIED,
            Refusal::IdentityUnreadable
            | Refusal::RequestUnread { .. }
            | Refusal::RlsUnavailable
            | Refusal::ParamsUnread { .. }
            | Refusal::Response(_) => INTERNAL_ERROR,
            Refusal::EmptyBody => jsonrpc::PARSE_ERROR,
            Refusal::Encoded
            | Refusal::TooLarge { .. }
            | Refusal::BodyNotAllowed { .. }
            | Refusal::Batch { .. } => jsonrpc::INVALID_REQUEST,
            Refusal::Parse(e) => e.code,
            Refusal::HeaderMismatch { .. }
            | Refusal::HeaderMissing { .. }
            | Refusal::ParamMismatch { .. } => routing::HEADER_MISMATCH,
            Refusal::RateLimited { .. } => RATE_LIMITED,
            Refusal::Envelope { .. } => jsonrpc::INVALID_PARAMS,
            Refusal::UnsupportedVersion { .. } => version::UNSUPPORTED_PROTOCOL_VERSION,
            Refusal::ModernBatch | Refusal::MethodNotAllowed { .. } => jsonrpc::INVALID_REQUEST,
        }
    }

    /// The one call recorded for a refusal of the whole request before (or instead of) its
    /// calls were evaluated; `None` for a refusal that settles the stream's calls.
    pub fn request_call(&self) -> Option<Call> {
        let (id, method) = match self {
            Refusal::Unidentified | Refusal::IdentityUnreadable | Refusal::RequestUnread { .. } => {
                (None, None)
            }
            Refusal::Encoded
            | Refusal::EmptyBody
            | Refusal::TooLarge { .. }
            | Refusal::BodyNotAllowed { .. } => (None, None),
            Refusal::Parse(e) => (e.id.clone(), e.method.clone()),
            Refusal::HeaderMismatch { id, method, .. }
            | Refusal::HeaderMissing { id, method, .. }
            | Refusal::Envelope { id, method, .. }
            | Refusal::UnsupportedVersion { id, method, .. } => (id.clone(), method.clone()),
            Refusal::ModernBatch | Refusal::MethodNotAllowed { .. } => (None, None),
            Refusal::ParamMismatch {
                id, method, tool, ..
            }
            | Refusal::ParamsUnread { id, method, tool } => {
                let mut call = Call::bare(Decision::Deny);
                call.request_id = id.clone();
                call.method = method.clone();
                call.tool_name = tool.clone();
                return Some(call);
            }
            _ => return None,
        };
        let mut call = Call::bare(Decision::Deny);
        call.request_id = id;
        call.method = method;
        Some(call)
    }

    /// The counters to add for this refusal of `calls` (before [`Refusal::settle`]).
    pub fn metrics(&self, calls: &[Call]) -> Vec<(Metric<'static>, u64)> {
        let refusal = |reason| vec![(Metric::Refusal(reason), 1)];
        match self {
            Refusal::Unidentified => vec![(Metric::Denial("unidentified"), 1)],
            Refusal::IdentityUnreadable => vec![(Metric::Denial("identity_unreadable"), 1)],
            Refusal::RequestUnread { .. } => refusal("request_read"),
            Refusal::Encoded => refusal("encoding"),
            Refusal::TooLarge { .. } => refusal("too_large"),
            Refusal::EmptyBody
            | Refusal::BodyNotAllowed { .. }
            | Refusal::Parse(_)
            | Refusal::Envelope { .. } => refusal("parse"),
            Refusal::HeaderMismatch { .. } | Refusal::HeaderMissing { .. } => {
                refusal("header_mismatch")
            }
            Refusal::ParamMismatch { .. } => refusal("header_mismatch"),
            Refusal::ParamsUnread { .. } => refusal("request_read"),
            Refusal::Batch { .. } | Refusal::ModernBatch => refusal("batch"),
            Refusal::UnsupportedVersion { .. } => refusal("unsupported_version"),
            Refusal::MethodNotAllowed { .. } => refusal("method_not_allowed"),
            Refusal::Denied { by_annotations } => {
                let blocked = calls.iter().filter(|c| c.decision.blocks()).count();
                let by_pins: Vec<&'static str> = calls
                    .iter()
                    .filter(|c| c.decision.blocks())
                    .filter_map(|c| c.pin.map(crate::pins::PinDenial::reason))
                    .collect();
                let by_annotations = (*by_annotations).min(blocked - by_pins.len());
                let mut counts = vec![
                    (
                        Metric::Denial("policy"),
                        (blocked - by_pins.len() - by_annotations) as u64,
                    ),
                    (Metric::Denial("annotations"), by_annotations as u64),
                ];
                for reason in by_pins {
                    counts.push((Metric::Denial(reason), 1));
                }
                counts
            }
            Refusal::RateLimited { .. } => vec![(Metric::RateLimited, calls.len().max(1) as u64)],
            // Counted as `rls_errors` when the RLS failed, whatever the failure mode.
            Refusal::RlsUnavailable => Vec::new(),
            Refusal::Response(why) => refusal(why.reason()),
        }
    }

    /// Writes the audit fields of the refused `calls`: `output_status` and `error_code` (of
    /// every call, or of the calls not yet settled for a rate limit or a refused response),
    /// `decision: deny` for a refused batch, `refusal` for a refused response.
    pub fn settle(&self, calls: &mut [Call]) {
        let code = Some(i64::from(self.code()));
        let status = match self {
            Refusal::Unidentified
            | Refusal::IdentityUnreadable
            | Refusal::RequestUnread { .. }
            | Refusal::ParamsUnread { .. }
            | Refusal::Denied { .. } => OutputStatus::Denied,
            Refusal::RateLimited { .. } => OutputStatus::RateLimited,
            Refusal::RlsUnavailable | Refusal::Response(_) => OutputStatus::UpstreamError,
            _ => OutputStatus::InvalidRequest,
        };
        let only_open = matches!(self, Refusal::RateLimited { .. } | Refusal::Response(_));
        for call in calls
            .iter_mut()
            .filter(|c| !only_open || c.output_status.is_none())
        {
            call.output_status = Some(status);
            call.error_code = code;
            match self {
                // Refused as malformed: recorded as deny, like every other refused request.
                Refusal::Batch { .. } => call.decision = Decision::Deny,
                Refusal::Response(why) => call.refusal = Some(why.reason()),
                _ => {}
            }
        }
    }

    /// The JSON-RPC error message answering `call` (of agent `agent`).
    fn message(&self, call: &Call, agent: &str) -> String {
        match self {
            Refusal::Unidentified => "Unauthorized: no agent identity".to_owned(),
            Refusal::IdentityUnreadable => {
                "Internal error: mcp-guard could not read an identity source".to_owned()
            }
            Refusal::RequestUnread { what } => {
                format!("Internal error: mcp-guard could not read the {what}")
            }
            Refusal::Encoded => "Invalid Request: the request body has a content-encoding; \
                                 mcp-guard examines only identity-encoded bodies"
                .to_owned(),
            Refusal::EmptyBody => "Parse error: empty body".to_owned(),
            Refusal::TooLarge { max } => format!("Invalid Request: body exceeds {max} bytes"),
            Refusal::BodyNotAllowed { http_method } => {
                format!("Invalid Request: a {http_method} request must not carry a body")
            }
            Refusal::Parse(e) => e.message.clone(),
            Refusal::HeaderMismatch { header, .. } => {
                format!("Header mismatch: {header} header value does not match the request body")
            }
            Refusal::Denied { .. } => {
                if !call.decision.blocks() {
                    return format!(
                        "Batch refused: it contains a call that is not allowed for agent \"{agent}\""
                    );
                }
                if let (Some(pin), Some(tool)) = (call.pin, &call.tool_name) {
                    return pin.message(tool);
                }
                let what = match (&call.tool_name, &call.prompt_name, &call.resource_uri) {
                    (Some(tool), _, _) => format!("Tool \"{tool}\""),
                    (_, Some(prompt), _) => format!("Prompt \"{prompt}\""),
                    (_, _, Some(uri)) => format!("Resource \"{uri}\""),
                    _ => format!("Method \"{}\"", call.method.as_deref().unwrap_or_default()),
                };
                format!("{what} is not allowed for agent \"{agent}\"")
            }
            Refusal::Batch { max } => format!(
                "Invalid Request: mcp-guard forwards a batch only with at most {max} call(s), all \
                 with the same method and name, so that its tags and rate limits cover every \
                 call; send the calls separately"
            ),
            Refusal::RateLimited { .. } => {
                "Rate limited: too many requests, retry later".to_owned()
            }
            Refusal::RlsUnavailable => {
                "Internal error: the rate limit service is unavailable".to_owned()
            }
            Refusal::Response(why) => why.message().to_owned(),
            Refusal::ParamMismatch { header, why, .. } => {
                format!("Header mismatch: {header}: {why}")
            }
            Refusal::ParamsUnread { .. } => {
                "Internal error: mcp-guard could not read the tools' Mcp-Param markings".to_owned()
            }
            Refusal::HeaderMissing { header, .. } => format!(
                "Header mismatch: the {header} header is required on an MCP 2026-07-28 request"
            ),
            Refusal::Envelope { missing, .. } => format!(
                "Invalid params: params._meta must be an object carrying the required envelope \
                 key(s): {}",
                missing.join(", ")
            ),
            Refusal::UnsupportedVersion { .. } => "Unsupported protocol version".to_owned(),
            Refusal::ModernBatch => "Invalid Request: JSON-RPC batches do not exist in MCP \
                                     2026-07-28 (only in 2025-03-26); send one message per POST"
                .to_owned(),
            Refusal::MethodNotAllowed { http_method } => format!(
                "Method not allowed: MCP 2026-07-28 has no {http_method} on the MCP endpoint \
                 (no GET stream, no session to delete); send requests by POST"
            ),
        }
    }

    /// The JSON-RPC body answering `calls` (already settled): for a refusal of the whole
    /// request, one error with the request's id (or `null`); otherwise one error object per
    /// request (an array for a batch), or a single error with id `null` if none has an id. A
    /// denied single `tools/call` under `hide_denied_tools` gets that answer instead
    /// ([`crate::config::HideDenied::answer`]): the agent cannot tell it from a missing tool,
    /// while the audit record still says denied.
    pub fn body(&self, calls: &[Call], agent: &str, config: &Config) -> String {
        let code = self.code();
        if let (Refusal::Denied { .. }, Some(hide), [call]) =
            (self, &config.hide_denied_tools, calls)
        {
            if let (Some(tool), Some(id)) = (&call.tool_name, &call.request_id) {
                return hide.answer(id, tool);
            }
        }
        if let Refusal::UnsupportedVersion {
            requested,
            supported,
            ..
        } = self
        {
            let id = calls.first().and_then(|c| c.request_id.as_ref());
            let data = serde_json::json!({"supported": supported, "requested": requested});
            let message = calls
                .first()
                .map(|c| self.message(c, agent))
                .unwrap_or_default();
            return jsonrpc::error_response_with_data(id, code, &message, &data.to_string());
        }
        if self.request_call().is_some() {
            let id = calls.first().and_then(|c| c.request_id.as_ref());
            let message = calls
                .first()
                .map(|c| self.message(c, agent))
                .unwrap_or_default();
            return jsonrpc::error_response(id, code, &message);
        }
        error_body(calls, code, |call| self.message(call, agent))
    }

    /// The whole mapping for a local reply: settles `calls` ([`Refusal::settle`]) and returns
    /// the status, headers and body to send. (Counters: [`Refusal::metrics`], taken before.)
    pub fn reply(&self, calls: &mut [Call], agent: &str, config: &Config) -> Reply {
        self.settle(calls);
        let headers = match self {
            Refusal::RateLimited {
                retry_after_s: Some(s),
            } => vec![("retry-after", s.to_string())],
            // RFC 9110 §15.5.6: a 405 names the methods the resource allows.
            Refusal::MethodNotAllowed { .. } => vec![("allow", "POST".to_owned())],
            _ => Vec::new(),
        };
        Reply {
            status: self.status(),
            headers,
            body: self.body(calls, agent, config),
        }
    }
}

/// The JSON-RPC error body answering `calls` with `code`: one error object per request (an
/// array for a batch), or a single error with id `null` if none has an id.
fn error_body(calls: &[Call], code: i32, message: impl Fn(&Call) -> String) -> String {
    let errors: Vec<String> = calls
        .iter()
        .filter(|c| c.method.is_some() && c.request_id.is_some())
        .map(|c| jsonrpc::error_response(c.request_id.as_ref(), code, &message(c)))
        .collect();
    match (calls.len() > 1, errors.as_slice()) {
        (true, [_, ..]) => format!("[{}]", errors.join(",")),
        (false, [one]) => one.clone(),
        _ => {
            let first = calls.first().map(&message).unwrap_or_default();
            jsonrpc::error_response(None, code, &first)
        }
    }
}
