//! Compiling each section of the plugin configuration. Every step records each problem it
//! finds in the [`Cx`] and goes on with the next field; a step returns `Err(Invalid)` when
//! its own result cannot be built, and the document is refused if any problem was recorded.

use super::raw::{
    RawAnnotations, RawHide, RawInputHash, RawJwtClaim, RawList, RawMode, RawOnDrift,
    RawRateLimitService, RawRefuse, RawSource, RawUnidentified, RawUnpinned, RawUnseen,
    AGENT_FIELDS, GROUP_FIELDS, HEADER_FIELDS, IDENTITY_FIELDS, POLICY_FIELDS, TOP_FIELDS,
};
use super::walk::{Cx, Invalid, Object};
use super::{
    Config, HideDenied, DEFAULT_MAX_BATCH_CALLS, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_JSON_DEPTH,
    DEFAULT_RLS_TIMEOUT_MS, MAX_MAX_BATCH_CALLS, MAX_MAX_JSON_DEPTH, MAX_RLS_TIMEOUT_MS,
};
use crate::annotations::{AnnotationRule, Refuse};
use crate::audit::InputHasher;
use crate::identity::{self, Identity, Source, Unidentified};
use crate::pins::{OnDrift, PinConfig, Unpinned};
use crate::policy::{Lists, Mode, Patterns, Policy, RuleSet, DEFAULT_METHODS};
use crate::ratelimit::{RateLimitService, MAX_CLUSTER_NAME};
use crate::tags::{ParamTags, TagHeaders};
use crate::version::{self, Versions};
use base64::Engine as _;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap};

/// `Err(Invalid)` if any of `results` is one.
fn all(results: &[Result<(), Invalid>]) -> Result<(), Invalid> {
    results.iter().copied().collect()
}

/// The whole document.
pub(super) fn document(cx: &mut Cx<'_>) -> Result<Config, Invalid> {
    let raw = cx.document()?;
    let top = cx.object("", raw, TOP_FIELDS)?;

    let server_id = cx
        .field::<String>(&top, "server_id")
        .and_then(|id| match id {
            Some(id) if id.is_empty() => Err(cx.error("server_id", "must not be empty")),
            id => Ok(id),
        });
    let identity = identity(cx, top.opt("identity"));
    let headers = headers(cx, top.opt("headers"));
    let policy = cx.required(&top, "policy").and_then(|raw| policy(cx, raw));
    let input_hash = input_hash(cx, &top);

    let max_body_bytes = cx.field::<usize>(&top, "max_body_bytes").and_then(|v| {
        match v.unwrap_or(DEFAULT_MAX_BODY_BYTES) {
            0 => Err(cx.error("max_body_bytes", "must be greater than 0")),
            v => Ok(v),
        }
    });
    let max_json_depth = in_range(
        cx,
        &top,
        "max_json_depth",
        DEFAULT_MAX_JSON_DEPTH,
        MAX_MAX_JSON_DEPTH,
    );
    let max_batch_calls = in_range(
        cx,
        &top,
        "max_batch_calls",
        DEFAULT_MAX_BATCH_CALLS,
        MAX_MAX_BATCH_CALLS,
    );
    let max_tool_metrics = cx.field::<usize>(&top, "max_tool_metrics").map(|v| {
        v.unwrap_or(crate::metrics::DEFAULT_MAX_TOOL_LABELS)
            .min(crate::metrics::MAX_TOOL_LABELS)
    });
    let curate_lists = cx.field::<bool>(&top, "curate_lists");
    let hold_request_headers = cx.field::<bool>(&top, "hold_request_headers");
    let annotations = cx
        .field::<RawAnnotations>(&top, "annotations")
        .map(|a| a.map(annotation_rule));
    let hide_denied_tools = cx
        .field::<RawHide>(&top, "hide_denied_tools")
        .map(|h| h.map(hide_denied));
    let rate_limit_service = match cx.field::<RawRateLimitService>(&top, "rate_limit_service") {
        Ok(Some(raw)) => rate_limit_service(cx, raw).map(Some),
        other => other.map(|_| None),
    };
    let decide_at_headers = cx
        .field::<bool>(&top, "decide_at_headers")
        .and_then(|v| match v {
            Some(true) if top.opt("rate_limit_service").is_some() => Err(cx.error(
                "decide_at_headers",
                "cannot be combined with rate_limit_service",
            )),
            v => Ok(v.unwrap_or(false)),
        });
    let versions = cx
        .field::<String>(&top, "newest_protocol_version")
        .and_then(|v| match v {
            None => Ok(Versions::default()),
            Some(v) => Versions::up_to(&v).ok_or_else(|| {
                cx.error(
                    "newest_protocol_version",
                    format!("must be one of {}", version::KNOWN.join(", ")),
                )
            }),
        });

    let param_tags = match (
        cx.field::<BTreeMap<String, BTreeMap<String, String>>>(&top, "param_tags"),
        &headers,
    ) {
        (Ok(Some(raw)), Ok(headers)) => param_tags(cx, raw, headers),
        (Ok(Some(_)), Err(_)) => Ok(ParamTags::default()), // `headers` reported its own problem
        (other, _) => other.map(|_| ParamTags::default()),
    };
    let pins = pins(cx, &top);

    Ok(Config {
        server_id: server_id?,
        identity: identity?,
        headers: headers?,
        policy: policy?,
        input_hash: input_hash?,
        curate_lists: curate_lists?.unwrap_or(true),
        annotations: annotations?,
        hide_denied_tools: hide_denied_tools?,
        max_tool_metrics: max_tool_metrics?,
        max_body_bytes: max_body_bytes?,
        max_json_depth: max_json_depth?,
        max_batch_calls: max_batch_calls?,
        hold_request_headers: hold_request_headers?.unwrap_or(true),
        rate_limit_service: rate_limit_service?,
        decide_at_headers: decide_at_headers?,
        param_tags: param_tags?,
        versions: versions?,
        pins: pins?,
    })
}

/// `tool_pins`, `on_drift`, `unpinned`, `learn_pins` (docs/configuration.md "Tool pins"): each
/// pin is checked on its own. A tool name must not be empty or repeated (names are exact,
/// byte for byte: no trimming, case folding or normalization); a pin must be a string of the
/// form `sha256:` and 64 lower-case hex digits ([`crate::pins::is_pin`]).
fn pins<'a>(cx: &mut Cx<'a>, top: &Object<'a>) -> Result<PinConfig, Invalid> {
    let on_drift = cx.field::<RawOnDrift>(top, "on_drift").map(|v| match v {
        Some(RawOnDrift::Audit) => OnDrift::Audit,
        Some(RawOnDrift::Hide) | None => OnDrift::Hide,
    });
    let unpinned = cx.field::<RawUnpinned>(top, "unpinned").map(|v| match v {
        Some(RawUnpinned::Hide) => Unpinned::Hide,
        Some(RawUnpinned::Allow) | None => Unpinned::Allow,
    });
    let learn_pins = cx.field::<bool>(top, "learn_pins");
    let tool_pins = match top.opt("tool_pins") {
        None => Ok(BTreeMap::new()),
        Some(raw) => cx.entries("tool_pins", raw).and_then(|entries| {
            let mut pins = BTreeMap::new();
            let mut ok = Ok(());
            for (tool, raw) in entries {
                let field = format!("tool_pins.{tool}");
                let pin = match cx.value::<String>(&field, raw) {
                    Ok(pin) => pin,
                    Err(e) => {
                        ok = Err(e);
                        continue;
                    }
                };
                let problem = if tool.is_empty() {
                    Some("the tool name must not be empty")
                } else if pins.contains_key(&tool) {
                    Some("the tool is pinned twice")
                } else if !crate::pins::is_pin(&pin) {
                    Some("must be \"sha256:\" followed by 64 lower-case hex digits")
                } else {
                    None
                };
                match problem {
                    Some(problem) => ok = Err(cx.error(field, problem)),
                    None => {
                        pins.insert(tool, pin);
                    }
                }
            }
            ok.map(|()| pins)
        }),
    };
    Ok(PinConfig {
        tool_pins: tool_pins?,
        on_drift: on_drift?,
        unpinned: unpinned?,
        learn_pins: learn_pins?.unwrap_or(false),
    })
}

/// `param_tags`: `{tool: {marking name: tag header}}`. Every entry is checked: the tool name
/// is not empty, the marking name is an RFC 9110 token (what `x-mcp-header` may hold), the
/// tag header is a valid header name that is none of `headers`, does not start with `mcp-`
/// (the MCP routing and `Mcp-Param-*` headers are the client's, and the server checks them),
/// and is not used twice for one tool.
fn param_tags(
    cx: &mut Cx<'_>,
    raw: BTreeMap<String, BTreeMap<String, String>>,
    headers: &TagHeaders,
) -> Result<ParamTags, Invalid> {
    let mut ok = Ok(());
    let mut tools = BTreeMap::new();
    for (tool, entries) in raw {
        let path = format!("param_tags.{tool}");
        if tool.is_empty() {
            ok = Err(cx.error(path.as_str(), "the tool name must not be empty"));
        }
        let mut pairs: Vec<(String, String)> = Vec::with_capacity(entries.len());
        for (token, header) in entries {
            let field = format!("{path}.{token}");
            if !crate::params::is_token(&token) {
                ok = Err(cx.error(
                    field.as_str(),
                    "not a valid x-mcp-header name (an RFC 9110 token)",
                ));
                continue;
            }
            if pairs.iter().any(|(t, _)| t.eq_ignore_ascii_case(&token)) {
                ok = Err(cx.error(
                    field.as_str(),
                    "names the same header as another entry (names compare case-insensitively)",
                ));
                continue;
            }
            let header = match header_name(cx, &field, header) {
                Ok(header) => header,
                Err(e) => {
                    ok = Err(e);
                    continue;
                }
            };
            let problem = if header.starts_with("mcp-") {
                Some("must not start with mcp- (those headers are the client's)".to_owned())
            } else if headers.all().contains(&header.as_str()) {
                Some(format!("header {header:?} is already a tag"))
            } else if pairs.iter().any(|(_, h)| *h == header) {
                Some(format!("header {header:?} is used twice for this tool"))
            } else {
                None
            };
            match problem {
                Some(problem) => ok = Err(cx.error(field.as_str(), problem)),
                None => pairs.push((token, header)),
            }
        }
        tools.insert(tool, pairs);
    }
    ok?;
    Ok(ParamTags::new(tools))
}

/// A count field of the document that must be within `1..=max` (`default` when absent).
fn in_range<'a>(
    cx: &mut Cx<'a>,
    top: &Object<'a>,
    name: &'static str,
    default: usize,
    max: usize,
) -> Result<usize, Invalid> {
    let v = cx.field::<usize>(top, name)?.unwrap_or(default);
    if (1..=max).contains(&v) {
        Ok(v)
    } else {
        Err(cx.error(name, format!("must be between 1 and {max}")))
    }
}

fn annotation_rule(a: RawAnnotations) -> AnnotationRule {
    AnnotationRule {
        refuse: match a.refuse {
            RawRefuse::Destructive => Refuse::Destructive,
            RawRefuse::NotReadOnly => Refuse::NotReadOnly,
        },
        refuse_unseen: !matches!(a.unseen, Some(RawUnseen::Allow)),
    }
}

fn hide_denied(h: RawHide) -> HideDenied {
    match h {
        RawHide::ToolError(text) => HideDenied::ToolError(text),
        RawHide::JsonrpcError(e) => HideDenied::JsonRpcError {
            code: e.code,
            message: e.message,
        },
    }
}

/// `rate_limit_service`: domain, deadline and cluster are each checked.
fn rate_limit_service(
    cx: &mut Cx<'_>,
    raw: RawRateLimitService,
) -> Result<RateLimitService, Invalid> {
    let domain = if raw.domain.is_empty() {
        Err(cx.error("rate_limit_service.domain", "must not be empty"))
    } else {
        Ok(())
    };
    let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_RLS_TIMEOUT_MS);
    let timeout = if (1..=MAX_RLS_TIMEOUT_MS).contains(&timeout_ms) {
        Ok(())
    } else {
        Err(cx.error(
            "rate_limit_service.timeout_ms",
            format!("must be between 1 and {MAX_RLS_TIMEOUT_MS}"),
        ))
    };
    let failure_mode_deny = raw.failure_mode_deny.unwrap_or(false);
    let service = RateLimitService::new(&raw.cluster, raw.domain, timeout_ms, failure_mode_deny)
        .ok_or_else(|| {
            cx.error(
                "rate_limit_service.cluster",
                format!("must be 1-{MAX_CLUSTER_NAME} bytes"),
            )
        });
    all(&[domain, timeout])?;
    service
}

/// `input_hash`: the key and its id are each checked.
fn input_hash<'a>(cx: &mut Cx<'a>, top: &Object<'a>) -> Result<InputHasher, Invalid> {
    let Some(h) = cx.field::<RawInputHash>(top, "input_hash")? else {
        return Ok(InputHasher::Sha256);
    };
    let key = match base64::engine::general_purpose::STANDARD.decode(h.hmac_key.as_bytes()) {
        Err(_) => Err(cx.error("input_hash.hmac_key", "not valid base64")),
        Ok(key) if key.len() < 32 => {
            Err(cx.error("input_hash.hmac_key", "must decode to at least 32 bytes"))
        }
        Ok(key) => Ok(key),
    };
    let key_id = label(cx, "input_hash.key_id", h.key_id);
    Ok(InputHasher::hmac(key?, key_id?))
}

/// `identity` (absent: the `x-agent-id` header, fallback `anonymous`).
fn identity<'a>(cx: &mut Cx<'a>, raw: Option<&'a RawValue>) -> Result<Identity, Invalid> {
    let Some(raw) = raw else {
        return Ok(Identity::new(
            vec![Source::Header("x-agent-id".into())],
            "anonymous".into(),
        ));
    };
    let obj = cx.object("identity", raw, IDENTITY_FIELDS)?;
    let sources = cx
        .required(&obj, "sources")
        .and_then(|raw| cx.value::<Vec<&RawValue>>("identity.sources", raw))
        .and_then(|raw| sources(cx, raw));
    let fallback = cx.field::<String>(&obj, "fallback");
    let unidentified = cx.field::<RawUnidentified>(&obj, "unidentified");
    let unidentified = match (unidentified?, fallback?) {
        (Some(RawUnidentified::Reject), Some(_)) => Err(cx.error(
            "identity.fallback",
            "has no effect with unidentified: reject",
        )),
        (Some(RawUnidentified::Reject), None) => Ok(Unidentified::Reject),
        (Some(RawUnidentified::Fallback) | None, fallback) => {
            let fallback = fallback.unwrap_or_else(|| "anonymous".into());
            if identity::is_valid_agent_id(&fallback) {
                Ok(Unidentified::Fallback(fallback))
            } else {
                Err(cx.error("identity.fallback", "not a valid agent id"))
            }
        }
    };
    Ok(Identity::with_policy(sources?, unidentified?))
}

/// `identity.sources`: each source is read and checked on its own.
fn sources<'a>(cx: &mut Cx<'a>, raw: Vec<&'a RawValue>) -> Result<Vec<Source>, Invalid> {
    if raw.is_empty() {
        return Err(cx.error("identity.sources", "needs at least one source"));
    }
    let mut sources = Ok(Vec::with_capacity(raw.len()));
    for (i, raw) in raw.into_iter().enumerate() {
        let path = format!("identity.sources[{i}]");
        let source = cx
            .value::<RawSource>(&path, raw)
            .and_then(|s| source(cx, &path, s));
        match (&mut sources, source) {
            (Ok(list), Ok(s)) => list.push(s),
            (_, Err(e)) => sources = Err(e),
            (Err(_), Ok(_)) => {}
        }
    }
    sources
}

fn source(cx: &mut Cx<'_>, path: &str, raw: RawSource) -> Result<Source, Invalid> {
    Ok(match raw {
        RawSource::Header(name) => {
            Source::Header(header_name(cx, &format!("{path}.header"), name)?)
        }
        RawSource::JwtClaim(RawJwtClaim {
            claim,
            metadata_key,
        }) => {
            let field = format!("{path}.jwt_claim");
            let metadata_key = label(
                cx,
                &format!("{field}.metadata_key"),
                metadata_key.unwrap_or_else(|| "payload".into()),
            );
            let claim = label(cx, &format!("{field}.claim"), claim);
            Source::JwtClaim {
                metadata_key: metadata_key?,
                claim: claim?,
            }
        }
        RawSource::PeerUriSan(p) => Source::PeerUriSan {
            strip_prefix: p.strip_prefix.filter(|p| !p.is_empty()),
        },
    })
}

/// `headers`: each name is checked, then that no two tags share one.
fn headers<'a>(cx: &mut Cx<'a>, raw: Option<&'a RawValue>) -> Result<TagHeaders, Invalid> {
    let defaults = TagHeaders::default();
    let Some(raw) = raw else {
        return Ok(defaults);
    };
    let obj = cx.object("headers", raw, HEADER_FIELDS)?;
    let mut one = |name: &str, default: String| -> Result<String, Invalid> {
        match cx.field::<String>(&obj, name)? {
            None => Ok(default),
            Some(v) => header_name(cx, &obj.path_of(name), v),
        }
    };
    let method = one("method", defaults.method);
    let tool_name = one("tool_name", defaults.tool_name);
    let agent_id = one("agent_id", defaults.agent_id);
    let prompt_name = one("prompt_name", defaults.prompt_name);
    let resource_uri = one("resource_uri", defaults.resource_uri);
    let call_round = one("call_round", defaults.call_round);
    let headers = TagHeaders {
        method: method?,
        tool_name: tool_name?,
        agent_id: agent_id?,
        prompt_name: prompt_name?,
        resource_uri: resource_uri?,
        call_round: call_round?,
    };
    if let Some(dup) = headers.duplicate() {
        return Err(cx.error("headers", format!("header {dup:?} is used for two tags")));
    }
    Ok(headers)
}

/// Validates an HTTP header name: a non-empty RFC 9110 token, stored lower-case (Envoy keeps
/// header names lower-case), and not a pseudo-header.
fn header_name(cx: &mut Cx<'_>, field: &str, name: String) -> Result<String, Invalid> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(tchar) {
        return Err(cx.error(field, format!("{name:?} is not a valid HTTP header name")));
    }
    Ok(name.to_ascii_lowercase())
}

/// A label for the audit record (`policy.name`, `policy.version`, `input_hash.key_id`): 1–128
/// visible ASCII characters.
fn label(cx: &mut Cx<'_>, field: &str, value: String) -> Result<String, Invalid> {
    if value.is_empty() || value.len() > 128 || !value.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(cx.error(field, "must be 1-128 visible ASCII characters"));
    }
    Ok(value)
}

fn mode(raw: Option<RawMode>) -> Mode {
    match raw.unwrap_or(RawMode::Enforce) {
        RawMode::Enforce => Mode::Enforce,
        RawMode::DryRun => Mode::DryRun,
    }
}

/// `policy`: its labels, every agent entry and every group.
fn policy<'a>(cx: &mut Cx<'a>, raw: &'a RawValue) -> Result<Policy, Invalid> {
    let obj = cx.object("policy", raw, POLICY_FIELDS)?;
    let name = cx
        .field::<String>(&obj, "name")
        .and_then(|v| v.map(|v| label(cx, "policy.name", v)).transpose());
    let version = cx
        .field::<String>(&obj, "version")
        .and_then(|v| v.map(|v| label(cx, "policy.version", v)).transpose());
    let policy_mode = cx.field::<RawMode>(&obj, "mode").map(mode);
    let agents = cx.required(&obj, "agents").and_then(|raw| agents(cx, raw));
    let groups = match obj.get("groups") {
        None => Ok(Vec::new()),
        Some(raw) => groups(cx, raw),
    };
    Ok(Policy::new(name?, version?, policy_mode?, agents?, groups?))
}

/// `policy.agents`: every entry is compiled, whatever the others hold.
fn agents<'a>(cx: &mut Cx<'a>, raw: &'a RawValue) -> Result<HashMap<String, RuleSet>, Invalid> {
    let entries = cx.map("policy.agents", raw)?;
    let mut agents = Ok(HashMap::with_capacity(entries.len()));
    for (agent, raw) in entries {
        let path = format!("policy.agents.{agent}");
        let id = if identity::is_valid_agent_id(&agent) {
            Ok(())
        } else {
            Err(cx.error(path.as_str(), "not a valid agent id"))
        };
        let set = cx
            .object(&path, raw, AGENT_FIELDS)
            .and_then(|obj| rule_set(cx, format!("agents.{agent}"), Patterns::default(), &obj));
        match (&mut agents, id.and(set)) {
            (Ok(map), Ok(set)) => {
                map.insert(agent, set);
            }
            (_, Err(e)) => agents = Err(e),
            (Err(_), Ok(_)) => {}
        }
    }
    agents
}

/// `policy.groups`: every group is compiled, whatever the others hold (in key order, as a
/// `BTreeMap` iterates).
fn groups<'a>(cx: &mut Cx<'a>, raw: &'a RawValue) -> Result<Vec<RuleSet>, Invalid> {
    let entries = cx.map("policy.groups", raw)?;
    let mut groups = Ok(Vec::with_capacity(entries.len()));
    for (group, raw) in entries {
        let path = format!("policy.groups.{group}");
        let set = cx.object(&path, raw, GROUP_FIELDS).and_then(|obj| {
            let members = cx
                .required(&obj, "members")
                .and_then(|raw| cx.value::<Vec<String>>(&obj.path_of("members"), raw))
                .and_then(|members| {
                    if members.is_empty() {
                        return Err(
                            cx.error(obj.path_of("members"), "needs at least one member pattern")
                        );
                    }
                    patterns(cx, &obj.path_of("members"), &members)
                });
            // The lists are checked even when the members are not.
            let set = rule_set(cx, format!("groups.{group}"), Patterns::default(), &obj);
            Ok(RuleSet {
                members: members?,
                ..set?
            })
        });
        match (&mut groups, set) {
            (Ok(list), Ok(set)) => list.push(set),
            (_, Err(e)) => groups = Err(e),
            (Err(_), Ok(_)) => {}
        }
    }
    groups
}

/// An agent or group entry's lists and mode.
fn rule_set<'a>(
    cx: &mut Cx<'a>,
    origin: String,
    members: Patterns,
    obj: &Object<'a>,
) -> Result<RuleSet, Invalid> {
    let mut list = |name: &str, default: &[&str]| -> Result<Lists, Invalid> {
        let raw = cx.field::<RawList>(obj, name)?;
        compile_list(cx, &format!("policy.{origin}.{name}"), raw, default)
    };
    let tools = list("tools", &[]);
    let prompts = list("prompts", &[]);
    let resources = list("resources", &[]);
    let methods = list("methods", DEFAULT_METHODS);
    let set_mode = cx.field::<RawMode>(obj, "mode").map(mode);
    Ok(RuleSet {
        tools: tools?,
        prompts: prompts?,
        resources: resources?,
        methods: methods?,
        mode: set_mode?,
        members,
        origin,
    })
}

/// A list's allow and deny patterns (absent: `default` allowed, nothing denied). A plain list
/// reports `tools[1]`; the object form `tools.allow[1]`.
fn compile_list(
    cx: &mut Cx<'_>,
    field: &str,
    raw: Option<RawList>,
    default: &[&str],
) -> Result<Lists, Invalid> {
    let raw = raw.unwrap_or_else(|| RawList {
        allow: default.iter().map(|s| (*s).to_owned()).collect(),
        deny: Vec::new(),
    });
    let allow_field = if raw.deny.is_empty() {
        field.to_owned()
    } else {
        format!("{field}.allow")
    };
    let allow = patterns(cx, &allow_field, &raw.allow);
    let deny = patterns(cx, &format!("{field}.deny"), &raw.deny);
    Ok(Lists {
        allow: allow?,
        deny: deny?,
    })
}

/// Compiles a pattern list; every bad pattern is reported (each is checked by
/// [`Patterns::compile`] alone first).
fn patterns(cx: &mut Cx<'_>, field: &str, list: &[String]) -> Result<Patterns, Invalid> {
    let mut each = Ok(());
    for (i, pattern) in list.iter().enumerate() {
        if let Err((_, why)) = Patterns::compile(std::slice::from_ref(pattern)) {
            each = Err(cx.error(format!("{field}[{i}]"), why));
        }
    }
    each?;
    Patterns::compile(list).map_err(|(i, why)| cx.error(format!("{field}[{i}]"), why))
}
