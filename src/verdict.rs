//! The request decision as pure functions: given the compiled plugin configuration
//! ([`Config`]), what is known about the request ([`Known`]) and its parsed JSON-RPC body,
//! what mcp-guard does with it ([`AtHeaders`], [`Verdict`]). Nothing here calls the host:
//! anything impure (reading an identity source, looking up a tool's annotations in shared
//! data) is done by the caller and passed in. `crate::filter::Stream` enacts what these say.
//!
//! A refusal is a value, [`Refusal`]. Its one mapping ([`Refusal::status`], [`Refusal::code`],
//! [`Refusal::metrics`], [`Refusal::settle`], [`Refusal::reply`]) gives the HTTP status, the
//! JSON-RPC error code and message per request, the counters, and the audit fields
//! (`decision`, `output_status`, `error_code`, `refusal`) of every refused call.

use crate::audit::{Call, OutputStatus};
use crate::config::Config;
use crate::curation::{ListKind, ToolHints, Unreadable};
use crate::host::ReadError;
use crate::jsonrpc::{self, Body, Id, Kind, Message, ParseError};
use crate::metrics::Metric;
use crate::policy::{Decision, Mode, Subject};
use crate::ratelimit::{self, Descriptor};
use crate::routing;

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
    /// `hide_denied_tools` answer for a single `tools/call`); denials `policy` and
    /// `annotations`.
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
            | Refusal::RlsUnavailable => INTERNAL_SERVER_ERROR,
            Refusal::Encoded => UNSUPPORTED_MEDIA_TYPE,
            Refusal::TooLarge { .. } => 413,
            Refusal::EmptyBody
            | Refusal::BodyNotAllowed { .. }
            | Refusal::Parse(_)
            | Refusal::HeaderMismatch { .. }
            | Refusal::Batch { .. } => 400,
            Refusal::Denied { .. } => 200,
            Refusal::RateLimited { .. } => 429,
            Refusal::Response(_) => BAD_GATEWAY,
        }
    }

    /// The JSON-RPC error code of each error object in the reply.
    pub fn code(&self) -> i32 {
        match self {
            Refusal::Unidentified | Refusal::Denied { .. } => DENIED,
            Refusal::IdentityUnreadable
            | Refusal::RequestUnread { .. }
            | Refusal::RlsUnavailable
            | Refusal::Response(_) => INTERNAL_ERROR,
            Refusal::EmptyBody => jsonrpc::PARSE_ERROR,
            Refusal::Encoded
            | Refusal::TooLarge { .. }
            | Refusal::BodyNotAllowed { .. }
            | Refusal::Batch { .. } => jsonrpc::INVALID_REQUEST,
            Refusal::Parse(e) => e.code,
            Refusal::HeaderMismatch { .. } => routing::HEADER_MISMATCH,
            Refusal::RateLimited { .. } => RATE_LIMITED,
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
            Refusal::HeaderMismatch { id, method, .. } => (id.clone(), method.clone()),
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
            Refusal::EmptyBody | Refusal::BodyNotAllowed { .. } | Refusal::Parse(_) => {
                refusal("parse")
            }
            Refusal::HeaderMismatch { .. } => refusal("header_mismatch"),
            Refusal::Batch { .. } => refusal("batch"),
            Refusal::Denied { by_annotations } => {
                let blocked = calls.iter().filter(|c| c.decision.blocks()).count();
                let by_annotations = (*by_annotations).min(blocked);
                vec![
                    (Metric::Denial("policy"), (blocked - by_annotations) as u64),
                    (Metric::Denial("annotations"), by_annotations as u64),
                ]
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

/// Who the identity sources say sent the request (`crate::identity`, resolved by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity<'a> {
    /// The agent id.
    Agent(&'a str),
    /// No source identified the request and the configuration rejects such requests.
    Unidentified,
    /// A source could not be read.
    Unreadable,
}

/// What is known about a request at its headers.
#[derive(Debug, Clone, Copy)]
pub struct AtHeadersFacts<'a> {
    /// The resolved identity.
    pub identity: Identity<'a>,
    /// The HTTP method (`:method`).
    pub http_method: &'a str,
    /// The request has a body (the headers did not end the stream).
    pub has_body: bool,
    /// The body has a content coding ([`crate::filter`]'s `content-encoding` check).
    pub encoded: bool,
    /// The `Mcp-Method` / `Mcp-Name` routing headers.
    pub routing: &'a routing::RoutingHeaders,
}

/// What to do with a request at its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtHeaders<'c> {
    /// Refuse it now.
    Refuse(Refusal),
    /// Not a POST and no body: forward it (audited as allowed).
    Pass,
    /// Hold its body and decide at the end of it ([`decide`]).
    Examine,
    /// `decide_at_headers`: allowed from its routing headers; set these tags and stream the body
    /// (still checked by [`decide`] at its end).
    Stream(Vec<(&'c str, String)>),
}

/// The decision at the request headers.
pub fn at_headers<'c>(config: &'c Config, facts: &AtHeadersFacts<'_>) -> AtHeaders<'c> {
    let agent = match facts.identity {
        Identity::Unreadable => return AtHeaders::Refuse(Refusal::IdentityUnreadable),
        Identity::Unidentified => return AtHeaders::Refuse(Refusal::Unidentified),
        Identity::Agent(agent) => agent,
    };
    if facts.has_body && facts.encoded {
        // The filter reads bodies as sent; a compressed one cannot be examined (and must not
        // pass unexamined). Envoy's decompressor filter, placed before mcp-guard, removes the
        // header and inflates the body.
        return AtHeaders::Refuse(Refusal::Encoded);
    }
    if facts.http_method != "POST" {
        // GET (server stream), DELETE (end session) and other methods pass through, audited;
        // a body is looked at before it is forwarded.
        return if facts.has_body {
            AtHeaders::Examine
        } else {
            AtHeaders::Pass
        };
    }
    if !facts.has_body {
        return AtHeaders::Refuse(Refusal::EmptyBody);
    }
    match decided_at_headers(config, agent, facts.routing) {
        Some(tags) => AtHeaders::Stream(tags),
        None => AtHeaders::Examine,
    }
}

/// `decide_at_headers`: the tags, if the routing headers (one `Mcp-Method`, and one `Mcp-Name`
/// for a method that names a tool, prompt or resource) name something the policy lets `agent`
/// use. Anything else (no or repeated headers, an undecodable value, a refusal, a `tools/call`
/// under the annotations rule, which needs the shared store) leaves the request to the body.
fn decided_at_headers<'c>(
    config: &'c Config,
    agent: &str,
    headers: &routing::RoutingHeaders,
) -> Option<Vec<(&'c str, String)>> {
    if !config.decide_at_headers {
        return None;
    }
    let [method] = headers.method.as_slice() else {
        return None;
    };
    let method = routing::decode_value(method)?;
    let named = matches!(
        method.as_str(),
        jsonrpc::TOOLS_CALL | jsonrpc::PROMPTS_GET | jsonrpc::RESOURCES_READ
    );
    let name = match (named, headers.name.as_slice()) {
        (false, _) => None,
        (true, [one]) => Some(routing::decode_value(one)?),
        (true, _) => return None,
    };
    if method == jsonrpc::TOOLS_CALL && config.annotations.is_some() {
        return None;
    }
    let subject = Subject::of(Some(&method), name.as_deref())?;
    if config.policy.decide(agent, subject).blocks() {
        return None; // refused with the request's id, once the body is read
    }
    Some(config.headers.for_call(&method, name.as_deref()))
}

/// What is known about a request when its body has been read.
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    /// The agent id.
    pub agent_id: &'a str,
    /// The HTTP method (`:method`).
    pub http_method: &'a str,
    /// The `Mcp-Method` / `Mcp-Name` routing headers.
    pub routing: &'a routing::RoutingHeaders,
    /// The request was decided at its headers and its body streamed
    /// ([`AtHeaders::Stream`]): its tags are already set.
    pub streamed: bool,
}

/// A request to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward<'c> {
    /// Its calls, evaluated (one audit record each once settled).
    pub calls: Vec<Call>,
    /// Tag headers to set on the request now (empty when they cannot or need not be set).
    pub tags: Vec<(&'c str, String)>,
    /// A list request whose response is held and curated (and, for `tools/list`, read for
    /// the tools' annotations): its kind and request ids.
    pub curation: Option<(ListKind, Vec<Id>)>,
    /// The ids of its requests, whose responses the response scanner looks for.
    pub expected: Vec<Id>,
}

/// What to do with a request whose body has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<'c> {
    /// Not a POST and an empty body: nothing to examine, forward it.
    Pass,
    /// Forward it.
    Forward(Forward<'c>),
    /// Ask the RLS (`rate_limit_service`) with these descriptors; forward it if allowed.
    AskRls {
        /// What to forward once allowed.
        forward: Forward<'c>,
        /// The request's descriptors ([`ratelimit::descriptors`]).
        descriptors: Vec<Descriptor>,
    },
    /// Refuse it. `calls`: the calls to record (evaluated, or the one [`Refusal::request_call`]),
    /// not yet settled.
    Refuse {
        /// Why.
        refusal: Refusal,
        /// The calls, as the policy decided them (counted before [`Refusal::settle`]).
        calls: Vec<Call>,
    },
}

impl Verdict<'_> {
    fn refuse(refusal: Refusal) -> Self {
        let calls = refusal.request_call().into_iter().collect();
        Verdict::Refuse { refusal, calls }
    }
}

/// The decision on the request `body` (the whole body as read). `hints(tool)` returns the
/// annotations the server's `tools/list` gave `tool` (`crate::annotations::lookup`), or
/// [`ReadError`] when the store could not be read (the call is then refused: "could not read
/// it" is not "never shown"); it is asked only under the annotations rule, for an allowed
/// `tools/call` of a tool no rule names.
pub fn decide<'c>(
    config: &'c Config,
    known: &Known<'_>,
    body: &[u8],
    hints: &mut dyn FnMut(&str) -> Result<Option<ToolHints>, ReadError>,
) -> Verdict<'c> {
    if known.http_method != "POST" {
        if body.is_empty() {
            return Verdict::Pass;
        }
        return Verdict::refuse(Refusal::BodyNotAllowed {
            http_method: known.http_method.to_owned(),
        });
    }
    let body = match jsonrpc::parse_body(body, config.max_json_depth) {
        Ok(body) => body,
        Err(e) => return Verdict::refuse(Refusal::Parse(e)),
    };
    if let Err(header) = routing::check(known.routing, &body) {
        let (id, method) = match &body {
            Body::Single(m) => (m.id().cloned(), m.method.clone()),
            Body::Batch(_) => (None, None),
        };
        return Verdict::refuse(Refusal::HeaderMismatch { header, id, method });
    }
    let mut calls: Vec<Call> = body
        .messages()
        .iter()
        .map(|m| evaluate(config, known.agent_id, m))
        .collect();
    let by_annotations = apply_annotations(config, known.agent_id, &mut calls, hints);
    if calls.iter().any(|c| c.decision.blocks()) {
        let refusal = Refusal::Denied { by_annotations };
        return Verdict::Refuse { refusal, calls };
    }
    let call_count = body.messages().iter().filter(|m| is_call(m)).count();
    if call_count > config.max_batch_calls || !uniform(body.messages()) {
        let refusal = Refusal::Batch {
            max: config.max_batch_calls,
        };
        return Verdict::Refuse { refusal, calls };
    }
    let all_tags = config.headers.for_body(&body);
    let expected: Vec<Id> = body
        .messages()
        .iter()
        .filter_map(|m| match &m.kind {
            Kind::Request(id) => Some(id.clone()),
            _ => None,
        })
        .collect();
    // A uniform body: every message has this method (checked above). Lists are held to be
    // curated, and tools/list also to learn the tools' annotations.
    let method = body.messages().iter().find_map(|m| m.method.as_deref());
    let curation = method.and_then(ListKind::of).and_then(|kind| {
        let learn = kind == ListKind::Tools && config.annotations.is_some();
        (config.curate_lists || learn).then(|| (kind, expected.clone()))
    });
    let descriptors = config.rate_limit_service.as_ref().map(|_| {
        let tag = |header: &str| {
            all_tags
                .iter()
                .find(|(name, _)| *name == header)
                .map(|(_, value)| value.as_str())
        };
        ratelimit::descriptors(
            known.agent_id,
            tag(&config.headers.method),
            tag(&config.headers.tool_name),
        )
    });
    // Streamed: set from the routing headers, which the body has just been checked against.
    let tags = if config.hold_request_headers && !known.streamed {
        all_tags
    } else {
        Vec::new()
    };
    let forward = Forward {
        calls,
        tags,
        curation,
        expected,
    };
    match descriptors {
        Some(descriptors) => Verdict::AskRls {
            forward,
            descriptors,
        },
        None => Verdict::Forward(forward),
    }
}

/// The decision when the RLS could not be asked or gave no usable answer: refuse under
/// `failure_mode_deny`, else `None` (forward it).
pub fn rls_failed(config: &Config) -> Option<Refusal> {
    config
        .rate_limit_service
        .as_ref()
        .is_some_and(|r| r.failure_mode_deny)
        .then_some(Refusal::RlsUnavailable)
}

/// The audit call of message `m`, with the policy's decision for `agent`.
fn evaluate(config: &Config, agent: &str, m: &Message<'_>) -> Call {
    let decision = match Subject::of(m.method.as_deref(), m.name()) {
        Some(subject) => config.policy.decide(agent, subject),
        None => Decision::Allow, // a client-sent response: nothing is asked for
    };
    Call {
        method: m.method.clone(),
        tool_name: m.tool_name.clone(),
        prompt_name: m.prompt_name.clone(),
        resource_uri: m.resource_uri.clone(),
        request_id: m.id().cloned(),
        input_hash: m.hash_input.map(|s| config.input_hash.hash(s.as_bytes())),
        decision,
        output_status: None,
        error_code: None,
        origin: None,
        settled_ms: None,
        refusal: None,
    }
}

/// The annotations rule (if configured): an allowed `tools/call` of a tool no rule set names
/// exactly is refused when the server's `tools/list` marked it so, or never showed it. Returns
/// how many calls it blocked.
fn apply_annotations(
    config: &Config,
    agent: &str,
    calls: &mut [Call],
    hints: &mut dyn FnMut(&str) -> Result<Option<ToolHints>, ReadError>,
) -> usize {
    let Some(rule) = config.annotations else {
        return 0;
    };
    let policy = &config.policy;
    let mut blocked = 0;
    for call in calls.iter_mut() {
        let (Some(jsonrpc::TOOLS_CALL), Some(tool)) =
            (call.method.as_deref(), call.tool_name.as_deref())
        else {
            continue;
        };
        if call.decision != Decision::Allow || policy.allows_tool_by_name(agent, tool) {
            continue;
        }
        // A store that cannot be read refuses: "could not read it" is not "never shown".
        let refused = hints(tool).map_or(true, |hints| rule.refuses(hints).is_some());
        if refused {
            call.decision = match policy.mode() {
                Mode::Enforce => Decision::Deny,
                Mode::DryRun => Decision::DryRunDeny,
            };
            blocked += usize::from(call.decision.blocks());
        }
    }
    blocked
}

/// Whether a message is a call: a request, or any message naming a tool, prompt or resource
/// (a `tools/call` sent as a notification still names a tool a lax server might run).
fn is_call(m: &Message<'_>) -> bool {
    matches!(m.kind, Kind::Request(_))
        || m.tool_name.is_some()
        || m.prompt_name.is_some()
        || m.resource_uri.is_some()
}

/// Whether every message with a method in a batch has the same method and the same tool,
/// prompt or resource name, so that one set of tags describes every call in it.
fn uniform(messages: &[Message<'_>]) -> bool {
    let mut with_method = messages.iter().filter(|m| m.method.is_some());
    let Some(first) = with_method.next() else {
        return true;
    };
    with_method.all(|m| {
        m.method == first.method
            && m.tool_name == first.tool_name
            && m.prompt_name == first.prompt_name
            && m.resource_uri == first.resource_uri
    })
}

#[cfg(test)]
mod tests;
