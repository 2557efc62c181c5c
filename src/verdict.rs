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

mod refusal;

pub use refusal::{
    Refusal, Reply, BAD_GATEWAY, DENIED, INTERNAL_ERROR, INTERNAL_SERVER_ERROR, METHOD_NOT_ALLOWED,
    NOT_CONFIGURED, RATE_LIMITED, UNAUTHORIZED, UNSUPPORTED_MEDIA_TYPE,
};

use crate::audit::{self, Call, Continuation};
use crate::config::Config;
use crate::curation::{ListKind, ToolHints};
use crate::host::ReadError;
use crate::jsonrpc::{self, Body, Id, Kind, Message, MetaVersion};
use crate::params::{self, ToolParams};
use crate::policy::{Decision, Mode, Subject};
use crate::ratelimit::{self, Descriptor};
use crate::rounds;
use crate::routing;
use crate::tags::{ROUND_CONTINUATION, ROUND_FIRST};
use crate::version::{self, Problem};

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
    if version::modern_without_post(facts.http_method, facts.routing) {
        // MCP 2026-07-28 has no GET stream and no session to delete (Streamable HTTP,
        // Backward Compatibility): 405 with `Allow: POST`, audited.
        return AtHeaders::Refuse(Refusal::MethodNotAllowed {
            http_method: facts.http_method.to_owned(),
        });
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

/// `decide_at_headers`: the tags, if the request claims one accepted MCP revision of
/// 2026-07-28 or later by its `MCP-Protocol-Version` header (MCP 2026-07-28, Server
/// Validation: an intermediary enforcing on mirrored headers SHOULD check that the version
/// requires header–body validation; [`version::supported_modern_header`]) and the routing
/// headers (one `Mcp-Method`, and one `Mcp-Name` for a method that names a tool, prompt or
/// resource) name something the policy lets `agent` use. Anything else (an older, absent,
/// repeated or unaccepted version header, no or repeated routing headers, an undecodable
/// value, a refusal, a `tools/call` under the annotations rule, which needs the shared store,
/// or of a tool with `param_tags`, whose tag needs the body) leaves the request to the body.
fn decided_at_headers<'c>(
    config: &'c Config,
    agent: &str,
    headers: &routing::RoutingHeaders,
) -> Option<Vec<(&'c str, String)>> {
    if !config.decide_at_headers {
        return None;
    }
    version::supported_modern_header(&config.versions, headers)?;
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
    // The annotations rule and tool pins need the shared store, read at the body.
    if method == jsonrpc::TOOLS_CALL && (config.annotations.is_some() || config.pins.active()) {
        return None;
    }
    // A parameter tag needs the verified body value, set before the headers go on.
    if method == jsonrpc::TOOLS_CALL
        && name
            .as_deref()
            .is_some_and(|tool| config.param_tags.for_tool(tool).is_some())
    {
        return None;
    }
    let subject = Subject::of(Some(&method), name.as_deref())?;
    if config.policy.decide(agent, subject).blocks() {
        return None; // refused with the request's id, once the body is read
    }
    let mut tags = config.headers.for_call(&method, name.as_deref());
    if is_round_method(&method) {
        // Its body (a retry's `requestState`) is read only after the headers went on: never
        // a verified continuation, so every rate limit counts it.
        tags.push((config.headers.call_round.as_str(), ROUND_FIRST.to_owned()));
    }
    Some(tags)
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
    /// Every `Mcp-Param-*` request header (MCP 2026-07-28), as `(lower-case name, value)` in
    /// the order sent ([`crate::params::HEADER_PREFIX`]).
    pub params: &'a [(String, String)],
    /// The server id of the stream (configured `server_id`, else the upstream cluster): part
    /// of a multi round-trip call's link ([`rounds::link`]).
    pub server_id: &'a str,
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
        descriptors: Vec<Descriptor<'c>>,
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

/// What [`decide`] may need to look up outside the request: state that mcp-guard learned from
/// earlier traffic and keeps in proxy-wasm shared data (one store for every Envoy worker). The
/// filter implements it over the host; tests implement it over plain values. Every method
/// answers [`ReadError`] when the store could not be read: the caller then refuses ("could not
/// read it" is not "nothing there").
pub trait Lookups {
    /// The annotations the server's `tools/list` gave `tool` (`crate::annotations::lookup`);
    /// `Ok(None)` when no `tools/list` has shown it. Asked only under the annotations rule,
    /// for an allowed `tools/call` of a tool no rule names.
    fn tool_hints(&mut self, tool: &str) -> Result<Option<ToolHints>, ReadError>;

    /// The `x-mcp-header` markings the server's `tools/list` gave `tool`
    /// (`crate::params::store::lookup`); `Ok(None)` when none is known (never listed, listed
    /// without annotations, or not kept). Asked for a `tools/call` that could carry or need
    /// `Mcp-Param-*` headers, or whose tool has a `param_tags` entry.
    fn tool_params(&mut self, tool: &str) -> Result<Option<ToolParams>, ReadError>;

    /// Claims one open multi round-trip round under `link` (`crate::rounds::claim`: single
    /// use, shared by every worker): `Ok(Some(n))` when the retry is a continuation of round
    /// number `n`, which mcp-guard saw answered `input_required`; `Ok(None)` when no round is
    /// open under `link`. Asked only for an allowed single-message retry of `tools/call`,
    /// `prompts/get` or `resources/read` whose body was held. A [`ReadError`] counts the retry
    /// as a new call (rate limits fail closed).
    fn claim_round(&mut self, link: &str) -> Result<Option<u32>, ReadError>;

    /// The last definition of `tool` a `tools/list` of this server showed, with the learned
    /// pin then in force (`crate::pins::def`; one shared-data read): `Ok(None)` when none was
    /// seen since Envoy started. Asked only under tool pins, for an allowed `tools/call` of a
    /// tool with a pin source ([`crate::pins::needs_def`]).
    fn tool_def(&mut self, tool: &str) -> Result<Option<crate::pins::Def>, ReadError>;
}

/// A closure over the tool name is a [`Lookups`] that knows only tool hints: no tool's
/// parameter markings, no open rounds (so every retry is counted as a new call), and no tool
/// definition seen (so under pins with `on_drift: hide` every pinned tool is unverified).
impl<F> Lookups for F
where
    F: FnMut(&str) -> Result<Option<ToolHints>, ReadError>,
{
    fn tool_hints(&mut self, tool: &str) -> Result<Option<ToolHints>, ReadError> {
        self(tool)
    }

    fn tool_params(&mut self, _tool: &str) -> Result<Option<ToolParams>, ReadError> {
        Ok(None)
    }

    fn claim_round(&mut self, _link: &str) -> Result<Option<u32>, ReadError> {
        Ok(None)
    }

    fn tool_def(&mut self, _tool: &str) -> Result<Option<crate::pins::Def>, ReadError> {
        Ok(None)
    }
}

/// The decision on the request `body` (the whole body as read); `lookups` answers what the
/// decision needs from the shared store ([`Lookups`]).
pub fn decide<'c>(
    config: &'c Config,
    known: &Known<'_>,
    body: &[u8],
    lookups: &mut dyn Lookups,
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
    if let Err(problem) = version::check(&config.versions, known.routing, &body) {
        let mut verdict = Verdict::refuse(version_refusal(config, problem, &body));
        if let Verdict::Refuse { calls, .. } = &mut verdict {
            let claimed = version::claimed(known.routing, &body);
            for call in calls.iter_mut() {
                call.protocol_version = claimed.as_deref().map(audit::bounded_version);
            }
        }
        return verdict;
    }
    if let Err(header) = routing::check(known.routing, &body) {
        let (id, method) = match &body {
            Body::Single(m) => (m.id().cloned(), m.method.clone()),
            Body::Batch(_) => (None, None),
        };
        return Verdict::refuse(Refusal::HeaderMismatch { header, id, method });
    }
    let header_version = known.routing.version.first().map(String::as_str);
    let mut calls: Vec<Call> = body
        .messages()
        .iter()
        .map(|m| {
            let mut call = evaluate(config, known.agent_id, m);
            let meta_version = match &m.meta.protocol_version {
                jsonrpc::MetaVersion::Str(v) => Some(v.as_str()),
                _ => None,
            };
            call.protocol_version = header_version.or(meta_version).map(audit::bounded_version);
            call
        })
        .collect();
    let retry = link_retry(config, known, &body, &mut calls);
    let by_annotations = apply_annotations(config, known.agent_id, &mut calls, lookups);
    apply_pins(config, &mut calls, lookups);
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
    let param_tags = match check_params(config, known, &body, &mut calls, lookups) {
        Ok(tags) => tags,
        Err(refusal) => {
            let claimed = calls.iter().find_map(|c| c.protocol_version.clone());
            let mut refused = Verdict::refuse(refusal);
            if let Verdict::Refuse { calls, .. } = &mut refused {
                for call in calls {
                    call.protocol_version.clone_from(&claimed);
                }
            }
            return refused;
        }
    };
    let mut all_tags = config.headers.for_body(&body);
    let continuation = claim_round(known, retry.as_ref(), &mut calls, lookups);
    all_tags.extend(round_tag(config, &body, continuation));
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
        let learn = kind == ListKind::Tools
            && (config.annotations.is_some()
                || !config.param_tags.is_empty()
                || config.pins.active());
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
            &param_tags,
        )
    });
    all_tags.extend(param_tags);
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
        // A verified continuation is the same logical call: counted once, on its first round.
        Some(descriptors) if !continuation => Verdict::AskRls {
            forward,
            descriptors,
        },
        _ => Verdict::Forward(forward),
    }
}

/// Whether `method` may be answered `input_required` (MCP 2026-07-28 `basic/patterns/mrtr`
/// "Supported Requests"): `tools/call`, `prompts/get`, `resources/read`.
pub fn is_round_method(method: &str) -> bool {
    matches!(
        method,
        jsonrpc::TOOLS_CALL | jsonrpc::PROMPTS_GET | jsonrpc::RESOURCES_READ
    )
}

/// Links a single-message body that is a multi round-trip retry ([`retry_link`]) to the round
/// it presents, on its call's record, whatever the decision (policy is decided on every round:
/// an earlier round's answer allows nothing). Returns the link, for [`claim_round`] once the
/// retry is allowed.
fn link_retry(
    config: &Config,
    known: &Known<'_>,
    body: &Body<'_>,
    calls: &mut [Call],
) -> Option<Option<String>> {
    let (Body::Single(m), Some(call)) = (body, calls.first_mut()) else {
        return None;
    };
    let link = retry_link(config, known, m, call.input_hash.as_deref())?;
    call.round.continues = Some(Continuation {
        link: link.clone(),
        matched: false,
        round: 0,
    });
    Some(link)
}

/// An allowed retry claims its round (single use, `Lookups::claim_round`); returns whether it
/// is a continuation of a round mcp-guard saw answered `input_required`, recorded on its call.
/// Streamed from its headers, a retry was tagged `first` there and is counted as such; a store
/// that cannot be read counts it as new (rate limits fail closed).
fn claim_round(
    known: &Known<'_>,
    retry: Option<&Option<String>>,
    calls: &mut [Call],
    lookups: &mut dyn Lookups,
) -> bool {
    let claimed = match retry {
        Some(Some(link)) if !known.streamed => lookups.claim_round(link).unwrap_or(None),
        _ => None,
    };
    let (Some(round), Some(call)) = (claimed, calls.first_mut()) else {
        return false;
    };
    if let Some(retry) = call.round.continues.as_mut() {
        retry.matched = true;
        retry.round = round;
    }
    true
}

/// The `call_round` tag of a body whose method may be answered `input_required`
/// ([`is_round_method`]): `continuation` or `first`. Every message of a (uniform) batch has one
/// method; a batch is never a continuation.
fn round_tag<'c>(
    config: &'c Config,
    body: &Body<'_>,
    continuation: bool,
) -> Option<(&'c str, String)> {
    let method = body.messages().iter().find_map(|m| m.method.as_deref())?;
    is_round_method(method).then(|| {
        let round = if continuation {
            ROUND_CONTINUATION
        } else {
            ROUND_FIRST
        };
        (config.headers.call_round.as_str(), round.to_owned())
    })
}

/// If `m` is a multi round-trip retry (a request of a [`is_round_method`] method whose
/// `params` carry a string `requestState` or an `inputResponses`), the link it presents:
/// `Some(None)` when its `requestState` is longer than
/// [`crate::response::MAX_REQUEST_STATE_LEN`] (no round can have been opened with it).
/// `input_hash`: the call's audit `input_hash` ([`rounds::arguments_part`]).
fn retry_link(
    config: &Config,
    known: &Known<'_>,
    m: &Message<'_>,
    input_hash: Option<&str>,
) -> Option<Option<String>> {
    let method = m.method.as_deref().filter(|m| is_round_method(m))?;
    if !matches!(m.kind, Kind::Request(_)) || !(m.request_state.is_some() || m.input_responses) {
        return None;
    }
    let state = m.request_state.as_deref().unwrap_or_default();
    if state.len() > crate::response::MAX_REQUEST_STATE_LEN {
        return Some(None);
    }
    let name = m.name().unwrap_or_default();
    let arguments = rounds::arguments_part(method, input_hash);
    Some(Some(rounds::link(
        &config.input_hash,
        known.server_id,
        known.agent_id,
        (method, name, arguments),
        state,
    )))
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
        params: Vec::new(),
        round: crate::audit::Round::default(),
        protocol_version: None,
        drift: Vec::new(),
        drift_truncated: false,
        pin: None,
    }
}

/// The [`Refusal`] of a request that fails [`version::check`], with the request's id and
/// method where the body is a single message.
fn version_refusal(config: &Config, problem: Problem, body: &Body<'_>) -> Refusal {
    let (id, method) = match body {
        Body::Single(m) => (m.id().cloned(), m.method.clone()),
        Body::Batch(_) => (None, None),
    };
    match problem {
        Problem::Missing(header) => Refusal::HeaderMissing { header, id, method },
        Problem::Mismatch(header) => Refusal::HeaderMismatch { header, id, method },
        Problem::Envelope { missing } => Refusal::Envelope {
            missing,
            id,
            method,
        },
        Problem::Unsupported { requested } => Refusal::UnsupportedVersion {
            requested,
            supported: config.versions.supported(),
            id,
            method,
        },
        Problem::ModernBatch => Refusal::ModernBatch,
    }
}

/// The annotations rule (if configured): an allowed `tools/call` of a tool no rule set names
/// exactly is refused when the server's `tools/list` marked it so, or never showed it. Returns
/// how many calls it blocked.
fn apply_annotations(
    config: &Config,
    agent: &str,
    calls: &mut [Call],
    lookups: &mut dyn Lookups,
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
        let refused = lookups
            .tool_hints(tool)
            .map_or(true, |hints| rule.refuses(hints).is_some());
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

/// Tool pins (if active, `crate::pins`): each `tools/call` still allowed is checked against its
/// tool's pin and the definition the latest `tools/list` of this server showed
/// ([`crate::pins::check_call`]; at most one shared-data read per call). A denial blocks it
/// (dry-run: `dry_run_deny`, forwarded) with its reason on the call ([`Call::pin`]); a drift is
/// recorded on the call either way.
fn apply_pins(config: &Config, calls: &mut [Call], lookups: &mut dyn Lookups) {
    let pins = &config.pins;
    if !pins.active() {
        return;
    }
    for call in calls.iter_mut() {
        let (Some(jsonrpc::TOOLS_CALL), Some(tool)) =
            (call.method.as_deref(), call.tool_name.as_deref())
        else {
            continue;
        };
        if call.decision != Decision::Allow {
            continue;
        }
        let checked = crate::pins::check_call(pins, tool, || lookups.tool_def(tool));
        if let Some(denial) = checked.denial {
            call.decision = match config.policy.mode() {
                Mode::Enforce => Decision::Deny,
                Mode::DryRun => Decision::DryRunDeny,
            };
            call.pin = Some(denial);
        }
        call.add_drift(checked.drift);
    }
}

/// Whether a message claims MCP 2026-07-28 or later in `params._meta` (a well-formed
/// `YYYY-MM-DD` revision compared as a string): such a request must mirror its marked
/// arguments into `Mcp-Param-*` headers. (The version checks make the `MCP-Protocol-Version`
/// header agree with it.)
fn modern(m: &Message<'_>) -> bool {
    matches!(&m.meta.protocol_version, MetaVersion::Str(v) if version::is_modern(v))
}

/// The `Mcp-Param-*` check of every allowed `tools/call` in `body` (MCP 2026-07-28 "Custom
/// Headers from Tool Parameters", `crate::params`): the tool's markings are looked up when the
/// request has `Mcp-Param-*` headers, is 2026-07-28 or later, or the tool has a `param_tags`
/// entry. Returns the parameter tags to set (header, value encoded as every tag), and records
/// the hash of each tagged value in its call's `params`.
///
/// Refused ([`Refusal::ParamMismatch`], -32020): a header that disagrees with the body
/// ([`params::verify`]); any `Mcp-Param-*` header on a batch, or on a tool whose annotations
/// are invalid (no conforming client calls it, and nothing can be verified); a tool with a
/// `param_tags` entry whose markings are not known (no `tools/list` seen: a 2026-07-28 client
/// answers -32020 by listing the tools and retrying) or invalid. A store that cannot be read:
/// [`Refusal::ParamsUnread`]. Markings not known for a tool without `param_tags`: nothing is
/// verified and nothing tagged (the headers pass, unjudged, to the server, which checks them).
fn check_params<'c>(
    config: &'c Config,
    known: &Known<'_>,
    body: &Body<'_>,
    calls: &mut [Call],
    lookups: &mut dyn Lookups,
) -> Result<Vec<(&'c str, String)>, Refusal> {
    let batch = body.is_batch();
    let mut tags: Vec<(&'c str, String)> = Vec::new();
    for (m, call) in body.messages().iter().zip(calls.iter_mut()) {
        let (Some(jsonrpc::TOOLS_CALL), Some(tool)) = (m.method.as_deref(), m.tool_name.as_deref())
        else {
            continue;
        };
        let configured = config.param_tags.for_tool(tool);
        let refused = |header: String, why: &'static str| Refusal::ParamMismatch {
            header,
            why,
            id: m.id().cloned(),
            method: m.method.clone(),
            tool: Some(tool.to_owned()),
        };
        let any_header = || "Mcp-Param-*".to_owned();
        if batch && !known.params.is_empty() {
            return Err(refused(
                any_header(),
                "Mcp-Param headers describe one tools/call, not a batch",
            ));
        }
        let headers: &[(String, String)] = if batch { &[] } else { known.params };
        let required = modern(m);
        if configured.is_none() && headers.is_empty() && !required {
            continue;
        }
        let markings =
            match lookups.tool_params(tool) {
                Err(ReadError) => {
                    return Err(Refusal::ParamsUnread {
                        id: m.id().cloned(),
                        method: m.method.clone(),
                        tool: Some(tool.to_owned()),
                    })
                }
                Ok(Some(ToolParams::Marked(markings))) => markings,
                Ok(Some(ToolParams::Invalid)) if configured.is_some() || !headers.is_empty() => {
                    return Err(refused(
                        any_header(),
                        "the tool's x-mcp-header annotations are invalid, so no Mcp-Param header \
                     can be verified",
                    ))
                }
                Ok(None) if configured.is_some() => return Err(refused(
                    any_header(),
                    "the tool's x-mcp-header markings are not known to mcp-guard yet; list the \
                     tools (tools/list) and retry",
                )),
                Ok(_) => continue,
            };
        let verified = params::verify(&markings, m.arguments, headers, required)
            .map_err(|e| refused(e.header, e.why))?;
        for (token, header) in configured.unwrap_or_default() {
            let Some((name, value)) = verified
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(token))
            else {
                continue;
            };
            call.params
                .push((name.clone(), config.input_hash.hash(value.as_bytes())));
            let value = crate::tags::header_value(value);
            match tags.iter_mut().find(|(h, _)| *h == header.as_str()) {
                Some((_, joined)) => {
                    if !joined.split(',').any(|v| v == value) {
                        joined.push(',');
                        joined.push_str(&value);
                    }
                }
                None => tags.push((header.as_str(), value)),
            }
        }
    }
    Ok(tags)
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
#[cfg(test)]
mod version_tests;
