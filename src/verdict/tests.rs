//! The verdict as a pure function: tables of inputs and the decision expected, no host.

use super::*;
use crate::audit::OutputStatus;
use crate::curation::Unreadable;
use crate::jsonrpc::ParseError;
use crate::metrics::Metric;
use serde_json::{json, Value};

const POLICY: &str = r#"{
  "server_id": "demo-server",
  "policy": {"mode": "enforce", "agents": {
      "demo-agent": {"tools": ["echo", "add"], "prompts": ["greet"]},
      "default": {"tools": ["echo"]}}}
}"#;

fn config(json: &str) -> Config {
    Config::from_json(json.as_bytes()).expect("a valid test configuration")
}

fn with(extra: &str) -> Config {
    config(&POLICY.replacen('{', &format!("{{{extra},"), 1))
}

fn routing(method: &[&str], name: &[&str]) -> routing::RoutingHeaders {
    routing::RoutingHeaders {
        method: method.iter().map(|s| (*s).to_owned()).collect(),
        name: name.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

fn call_json(id: i64, tool: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
    )
}

fn no_hints(_: &str) -> Result<Option<ToolHints>, ReadError> {
    Ok(None)
}

/// What a verdict says, reduced to what a table can state.
#[derive(Debug, PartialEq)]
enum Said<'c> {
    Pass,
    Forward {
        tags: Vec<(String, String)>,
        curation: Option<ListKind>,
        expected: usize,
    },
    AskRls(Vec<Descriptor<'c>>),
    Refuse(Refusal, Vec<&'static str>),
}

fn said<'c>(v: Verdict<'c>) -> Said<'c> {
    let forward = |f: Forward<'_>| Said::Forward {
        tags: f
            .tags
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect(),
        curation: f.curation.map(|(kind, _)| kind),
        expected: f.expected.len(),
    };
    match v {
        Verdict::Pass => Said::Pass,
        Verdict::Forward(f) => forward(f),
        Verdict::AskRls { descriptors, .. } => Said::AskRls(descriptors),
        Verdict::Refuse { refusal, calls } => {
            Said::Refuse(refusal, calls.iter().map(|c| c.decision.as_str()).collect())
        }
    }
}

fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// name, configuration, agent, HTTP method, routing headers, streamed, body, expected.
type BodyRow<'a> = (
    &'a str,
    &'a Config,
    &'a str,
    &'a str,
    routing::RoutingHeaders,
    bool,
    String,
    Said<'a>,
);
/// name, configuration, identity, HTTP method, has body, encoded, routing headers, expected.
type HeaderRow<'a> = (
    &'a str,
    &'a Config,
    Identity<'a>,
    &'a str,
    bool,
    bool,
    &'a routing::RoutingHeaders,
    AtHeaders<'a>,
);

#[test]
fn the_body_verdict_table() {
    let plain = config(POLICY);
    let rls = with(r#""rate_limit_service": {"cluster": "rls", "domain": "mcp"}"#);
    let unheld = with(r#""hold_request_headers": false"#);
    let batch5 = with(r#""max_batch_calls": 5"#);
    let curated = with(r#""curate_lists": true"#);
    let uncurated = with(r#""curate_lists": false"#);
    let learning_only = with(r#""curate_lists": false, "annotations": {"refuse": "destructive"}"#);
    let no_routing = routing(&[], &[]);
    let batch2 = format!("[{},{}]", call_json(1, "echo"), call_json(2, "echo"));
    let mixed = format!("[{},{}]", call_json(1, "echo"), call_json(2, "add"));
    let one_denied = format!("[{},{}]", call_json(1, "echo"), call_json(2, "rm"));
    let list = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#;
    let parse = jsonrpc::parse_body(b"{", 64).expect_err("not JSON");
    // A single call of a method that may be answered input_required is tagged with its round.
    let echo_tags = tags(&[
        ("x-mcp-method", "tools/call"),
        ("x-mcp-tool-name", "echo"),
        ("x-mcp-call-round", "first"),
    ]);
    let rows: Vec<BodyRow<'_>> = vec![
        (
            "allowed call",
            &plain,
            "demo-agent",
            "POST",
            no_routing.clone(),
            false,
            call_json(1, "echo"),
            Said::Forward {
                tags: echo_tags.clone(),
                curation: None,
                expected: 1,
            },
        ),
        (
            "streamed: tags already set",
            &plain,
            "demo-agent",
            "POST",
            no_routing.clone(),
            true,
            call_json(1, "echo"),
            Said::Forward {
                tags: vec![],
                curation: None,
                expected: 1,
            },
        ),
        (
            "headers not held: no tags",
            &unheld,
            "demo-agent",
            "POST",
            no_routing.clone(),
            false,
            call_json(1, "echo"),
            Said::Forward {
                tags: vec![],
                curation: None,
                expected: 1,
            },
        ),
        (
            "denied call",
            &plain,
            "demo-agent",
            "POST",
            no_routing.clone(),
            false,
            call_json(1, "rm"),
            Said::Refuse(Refusal::Denied { by_annotations: 0 }, vec!["deny"]),
        ),
        (
            "default agent",
            &plain,
            "someone",
            "POST",
            no_routing.clone(),
            false,
            call_json(1, "add"),
            Said::Refuse(Refusal::Denied { by_annotations: 0 }, vec!["deny"]),
        ),
        (
            "a denied call refuses its batch",
            &plain,
            "demo-agent",
            "POST",
            no_routing.clone(),
            false,
            one_denied,
            Said::Refuse(Refusal::Denied { by_annotations: 0 }, vec!["allow", "deny"]),
        ),
        (
            "batch over max_batch_calls (1)",
            &plain,
            "demo-agent",
            "POST",
            no_routing.clone(),
            false,
            batch2.clone(),
            Said::Refuse(Refusal::Batch { max: 1 }, vec!["allow", "allow"]),
        ),
        (
            "mixed batch",
            &batch5,
            "demo-agent",
            "POST",
            no_routing.clone(),
            false,
            mixed,
            Said::Refuse(Refusal::Batch { max: 5 }, vec!["allow", "allow"]),
        ),
        (
            "uniform batch within the limit",
            &batch5,
            "demo-agent",
            "POST",
            no_routing.clone(),
            false,
            batch2,
            Said::Forward {
                tags: echo_tags.clone(),
                curation: None,
                expected: 2,
            },
        ),
        (
            "malformed",
            &plain,
            "demo-agent",
            "POST",
            no_routing.clone(),
            false,
            "{".to_owned(),
            Said::Refuse(Refusal::Parse(parse), vec!["deny"]),
        ),
        (
            "routing header mismatch",
            &plain,
            "demo-agent",
            "POST",
            routing(&["tools/list"], &[]),
            false,
            call_json(3, "echo"),
            Said::Refuse(
                Refusal::HeaderMismatch {
                    header: "Mcp-Method",
                    id: Some(Id::Number("3".into())),
                    method: Some("tools/call".into()),
                },
                vec!["deny"],
            ),
        ),
        (
            "list curated",
            &curated,
            "demo-agent",
            "POST",
            no_routing.clone(),
            false,
            list.to_owned(),
            Said::Forward {
                tags: tags(&[("x-mcp-method", "tools/list")]),
                curation: Some(ListKind::Tools),
                expected: 1,
            },
        ),
        (
            "list not curated",
            &uncurated,
            "demo-agent",
            "POST",
            no_routing.clone(),
            false,
            list.to_owned(),
            Said::Forward {
                tags: tags(&[("x-mcp-method", "tools/list")]),
                curation: None,
                expected: 1,
            },
        ),
        (
            "tools/list held to learn annotations",
            &learning_only,
            "demo-agent",
            "POST",
            no_routing.clone(),
            false,
            list.to_owned(),
            Said::Forward {
                tags: tags(&[("x-mcp-method", "tools/list")]),
                curation: Some(ListKind::Tools),
                expected: 1,
            },
        ),
        (
            "RLS asked",
            &rls,
            "demo-agent",
            "POST",
            no_routing.clone(),
            false,
            call_json(1, "echo"),
            Said::AskRls(vec![
                vec![("agent", "demo-agent".into())],
                vec![("tool", "echo".into())],
                vec![("agent", "demo-agent".into()), ("tool", "echo".into())],
                vec![("method", "tools/call".into())],
            ]),
        ),
        (
            "GET without body",
            &plain,
            "demo-agent",
            "GET",
            no_routing.clone(),
            false,
            String::new(),
            Said::Pass,
        ),
        (
            "GET with body",
            &plain,
            "demo-agent",
            "GET",
            no_routing.clone(),
            false,
            "x".to_owned(),
            Said::Refuse(
                Refusal::BodyNotAllowed {
                    http_method: "GET".into(),
                },
                vec!["deny"],
            ),
        ),
    ];
    for (name, config, agent, method, routing, streamed, body, expected) in rows {
        let known = Known {
            agent_id: agent,
            http_method: method,
            routing: &routing,
            streamed,
            params: &[],
            server_id: "srv",
        };
        let got = said(decide(config, &known, body.as_bytes(), &mut no_hints));
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn the_annotations_rule_uses_the_hints_it_is_given_and_only_for_unnamed_tools() {
    let config = config(
        r#"{"annotations": {"refuse": "destructive"},
            "policy": {"agents": {"ops": {"tools": ["*"]}, "janitor": {"tools": ["*", "delete_repo"]}}}}"#,
    );
    let destructive = ToolHints {
        read_only: None,
        destructive: Some(true),
    };
    let no_routing = routing(&[], &[]);
    for (agent, expected_asked, expected) in [
        ("ops", 1, Some(Refusal::Denied { by_annotations: 1 })),
        ("janitor", 0, None), // names the tool exactly: not asked, allowed
    ] {
        let mut asked = 0;
        let mut hints = |tool: &str| {
            asked += 1;
            assert_eq!(tool, "delete_repo");
            Ok(Some(destructive))
        };
        let known = Known {
            agent_id: agent,
            http_method: "POST",
            routing: &no_routing,
            streamed: false,
            params: &[],
            server_id: "srv",
        };
        let v = decide(
            &config,
            &known,
            call_json(1, "delete_repo").as_bytes(),
            &mut hints,
        );
        let refusal = match v {
            Verdict::Refuse { refusal, .. } => Some(refusal),
            _ => None,
        };
        assert_eq!((asked, refusal), (expected_asked, expected), "{agent}");
    }
}

#[test]
fn the_header_verdict_table() {
    let plain = config(POLICY);
    let early = with(r#""decide_at_headers": true"#);
    let none = routing(&[], &[]);
    // decide_at_headers needs an accepted 2026-07-28 version header (src/verdict/version_tests.rs).
    let echo = routing::RoutingHeaders {
        version: vec!["2026-07-28".to_owned()],
        ..routing(&["tools/call"], &["echo"])
    };
    let rm = routing(&["tools/call"], &["rm"]);
    let twice = routing(&["tools/call", "tools/call"], &["echo"]);
    let echo_tags = vec![
        ("x-mcp-method", "tools/call".to_owned()),
        ("x-mcp-tool-name", "echo".to_owned()),
        ("x-mcp-call-round", "first".to_owned()),
    ];
    use Identity::*;
    let rows: Vec<HeaderRow<'_>> = vec![
        (
            "unreadable identity",
            &plain,
            Unreadable,
            "POST",
            true,
            false,
            &none,
            AtHeaders::Refuse(Refusal::IdentityUnreadable),
        ),
        (
            "unidentified",
            &plain,
            Unidentified,
            "POST",
            true,
            false,
            &none,
            AtHeaders::Refuse(Refusal::Unidentified),
        ),
        (
            "encoded body",
            &plain,
            Agent("demo-agent"),
            "POST",
            true,
            true,
            &none,
            AtHeaders::Refuse(Refusal::Encoded),
        ),
        (
            "encoded GET body",
            &plain,
            Agent("demo-agent"),
            "GET",
            true,
            true,
            &none,
            AtHeaders::Refuse(Refusal::Encoded),
        ),
        (
            "POST without body",
            &plain,
            Agent("demo-agent"),
            "POST",
            false,
            true,
            &none,
            AtHeaders::Refuse(Refusal::EmptyBody),
        ),
        (
            "GET",
            &plain,
            Agent("demo-agent"),
            "GET",
            false,
            false,
            &none,
            AtHeaders::Pass,
        ),
        (
            "GET with body",
            &plain,
            Agent("demo-agent"),
            "GET",
            true,
            false,
            &none,
            AtHeaders::Examine,
        ),
        (
            "POST",
            &plain,
            Agent("demo-agent"),
            "POST",
            true,
            false,
            &echo,
            AtHeaders::Examine,
        ),
        (
            "decided at headers",
            &early,
            Agent("demo-agent"),
            "POST",
            true,
            false,
            &echo,
            AtHeaders::Stream(echo_tags),
        ),
        (
            "denied name: left to the body",
            &early,
            Agent("demo-agent"),
            "POST",
            true,
            false,
            &rm,
            AtHeaders::Examine,
        ),
        (
            "repeated header: left to the body",
            &early,
            Agent("demo-agent"),
            "POST",
            true,
            false,
            &twice,
            AtHeaders::Examine,
        ),
        (
            "no routing headers",
            &early,
            Agent("demo-agent"),
            "POST",
            true,
            false,
            &none,
            AtHeaders::Examine,
        ),
    ];
    for (name, config, identity, http_method, has_body, encoded, routing, expected) in rows {
        let facts = AtHeadersFacts {
            identity,
            http_method,
            has_body,
            encoded,
            routing,
        };
        assert_eq!(at_headers(config, &facts), expected, "{name}");
    }
}

fn named(metrics: Vec<(Metric<'static>, u64)>) -> Vec<(String, u64)> {
    let mut labels = crate::metrics::ToolLabels::default();
    metrics
        .into_iter()
        .map(|(m, n)| (m.name(&mut labels), n))
        .collect()
}

#[test]
fn each_refusal_owns_its_status_code_metric_and_audit_status() {
    let parse = ParseError {
        code: jsonrpc::PARSE_ERROR,
        message: "Parse error: x".into(),
        id: None,
        method: None,
    };
    let mismatch = Refusal::HeaderMismatch {
        header: "Mcp-Name",
        id: None,
        method: None,
    };
    let rows: Vec<(Refusal, u32, i32, &str, &str)> = vec![
        (
            Refusal::Unidentified,
            401,
            DENIED,
            "denials.reason.unidentified",
            "denied",
        ),
        (
            Refusal::IdentityUnreadable,
            500,
            INTERNAL_ERROR,
            "denials.reason.identity_unreadable",
            "denied",
        ),
        (
            Refusal::RequestUnread {
                what: "request body",
            },
            500,
            INTERNAL_ERROR,
            "refusals.reason.request_read",
            "denied",
        ),
        (
            Refusal::Encoded,
            415,
            jsonrpc::INVALID_REQUEST,
            "refusals.reason.encoding",
            "invalid_request",
        ),
        (
            Refusal::EmptyBody,
            400,
            jsonrpc::PARSE_ERROR,
            "refusals.reason.parse",
            "invalid_request",
        ),
        (
            Refusal::TooLarge { max: 10 },
            413,
            jsonrpc::INVALID_REQUEST,
            "refusals.reason.too_large",
            "invalid_request",
        ),
        (
            Refusal::BodyNotAllowed {
                http_method: "GET".into(),
            },
            400,
            jsonrpc::INVALID_REQUEST,
            "refusals.reason.parse",
            "invalid_request",
        ),
        (
            Refusal::Parse(parse),
            400,
            jsonrpc::PARSE_ERROR,
            "refusals.reason.parse",
            "invalid_request",
        ),
        (
            mismatch,
            400,
            routing::HEADER_MISMATCH,
            "refusals.reason.header_mismatch",
            "invalid_request",
        ),
    ];
    for (refusal, status, code, metric, output) in rows {
        let mut calls: Vec<Call> = refusal.request_call().into_iter().collect();
        assert_eq!(calls.len(), 1, "{refusal:?}");
        let metrics = named(refusal.metrics(&calls));
        assert_eq!(metrics.len(), 1, "{refusal:?}");
        assert!(metrics[0].0.ends_with(metric), "{refusal:?}: {metrics:?}");
        let reply = refusal.reply(&mut calls, "a", &config(POLICY));
        assert_eq!(reply.status, status, "{refusal:?}");
        let body: Value = serde_json::from_str(&reply.body).expect("JSON");
        assert_eq!(body["error"]["code"], code, "{refusal:?}");
        assert_eq!(body["id"], Value::Null, "{refusal:?}");
        let record = serde_json::to_value(calls[0].output_status).expect("status");
        assert_eq!(record, json!(output), "{refusal:?}");
        assert_eq!(calls[0].error_code, Some(i64::from(code)), "{refusal:?}");
        assert_eq!(calls[0].decision, Decision::Deny, "{refusal:?}");
    }
}

fn evaluated(config: &Config, agent: &str, body: &str) -> Vec<Call> {
    let none = routing(&[], &[]);
    let known = Known {
        agent_id: agent,
        http_method: "POST",
        routing: &none,
        streamed: false,
        params: &[],
        server_id: "srv",
    };
    match decide(config, &known, body.as_bytes(), &mut no_hints) {
        Verdict::Refuse { calls, .. } => calls,
        Verdict::Forward(f) | Verdict::AskRls { forward: f, .. } => f.calls,
        Verdict::Pass => Vec::new(),
    }
}

#[test]
fn a_denied_batch_answers_every_request_and_counts_denials() {
    let config = config(POLICY);
    let body = format!("[{},{}]", call_json(1, "echo"), call_json(2, "rm"));
    let mut calls = evaluated(&config, "demo-agent", &body);
    let refusal = Refusal::Denied { by_annotations: 0 };
    let metrics = named(refusal.metrics(&calls));
    assert!(metrics
        .iter()
        .any(|(n, c)| n.ends_with("denials.reason.policy") && *c == 1));
    assert!(metrics
        .iter()
        .any(|(n, c)| n.ends_with("denials.reason.annotations") && *c == 0));
    let reply = refusal.reply(&mut calls, "demo-agent", &config);
    assert_eq!(reply.status, 200);
    let body: Value = serde_json::from_str(&reply.body).expect("JSON");
    assert_eq!(body[0]["id"], 1);
    assert!(body[0]["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Batch refused"));
    assert_eq!(
        body[1]["error"]["message"],
        r#"Tool "rm" is not allowed for agent "demo-agent""#
    );
    assert!(calls
        .iter()
        .all(|c| c.output_status == Some(OutputStatus::Denied)));
}

#[test]
fn hide_denied_tools_answers_a_single_denied_call_as_a_missing_tool() {
    let config = with(r#""hide_denied_tools": {"tool_error": "Unknown tool: {name}"}"#);
    let mut calls = evaluated(&config, "demo-agent", &call_json(4, "rm"));
    let reply = Refusal::Denied { by_annotations: 0 }.reply(&mut calls, "demo-agent", &config);
    assert_eq!(reply.status, 200);
    let body: Value = serde_json::from_str(&reply.body).expect("JSON");
    assert_eq!(body["id"], 4);
    assert_eq!(body["result"]["isError"], true);
    assert_eq!(body["result"]["content"][0]["text"], "Unknown tool: rm");
    // The record still says denied.
    assert_eq!(calls[0].output_status, Some(OutputStatus::Denied));
}

#[test]
fn a_refused_batch_is_recorded_as_deny_after_its_decisions_were_counted() {
    let config = config(POLICY);
    let body = format!("[{},{}]", call_json(1, "echo"), call_json(2, "echo"));
    let mut calls = evaluated(&config, "demo-agent", &body);
    assert!(calls.iter().all(|c| c.decision == Decision::Allow));
    let reply = Refusal::Batch { max: 1 }.reply(&mut calls, "demo-agent", &config);
    assert_eq!(reply.status, 400);
    let body: Value = serde_json::from_str(&reply.body).expect("JSON");
    assert_eq!(body.as_array().map(Vec::len), Some(2));
    assert_eq!(body[1]["error"]["code"], jsonrpc::INVALID_REQUEST);
    assert!(calls
        .iter()
        .all(|c| c.decision == Decision::Deny
            && c.output_status == Some(OutputStatus::InvalidRequest)));
}

#[test]
fn rate_limits_and_refused_responses_settle_only_open_calls() {
    let config = config(POLICY);
    let body = format!("[{},{}]", call_json(1, "echo"), call_json(2, "echo"));
    for (refusal, status, code, output) in [
        (
            Refusal::RateLimited {
                retry_after_s: Some(3),
            },
            429,
            RATE_LIMITED,
            OutputStatus::RateLimited,
        ),
        (
            Refusal::Response(Unreadable::Encoding),
            502,
            INTERNAL_ERROR,
            OutputStatus::UpstreamError,
        ),
    ] {
        let mut calls = evaluated(&config, "demo-agent", &body);
        calls[0].output_status = Some(OutputStatus::Success);
        let metrics = named(refusal.metrics(&calls));
        assert_eq!(metrics.len(), 1, "{refusal:?}");
        let reply = refusal.reply(&mut calls, "demo-agent", &config);
        assert_eq!(reply.status, status);
        assert_eq!(
            calls[0].output_status,
            Some(OutputStatus::Success),
            "{refusal:?}"
        );
        assert_eq!(calls[1].output_status, Some(output), "{refusal:?}");
        assert_eq!(calls[1].error_code, Some(i64::from(code)), "{refusal:?}");
        let body: Value = serde_json::from_str(&reply.body).expect("JSON");
        assert_eq!(body[1]["error"]["code"], code, "{refusal:?}");
    }
    let mut calls = evaluated(&config, "demo-agent", &call_json(1, "echo"));
    let reply = Refusal::RateLimited {
        retry_after_s: Some(3),
    }
    .reply(&mut calls, "a", &config);
    assert_eq!(reply.headers, vec![("retry-after", "3".to_owned())]);
    let reply = Refusal::RateLimited {
        retry_after_s: None,
    }
    .reply(&mut calls, "a", &config);
    assert!(reply.headers.is_empty());
}

#[test]
fn an_rls_failure_refuses_only_under_failure_mode_deny() {
    let rls = |deny: bool| {
        with(&format!(
            r#""rate_limit_service": {{"cluster": "rls", "domain": "mcp", "failure_mode_deny": {deny}}}"#
        ))
    };
    assert_eq!(rls_failed(&rls(true)), Some(Refusal::RlsUnavailable));
    assert_eq!(rls_failed(&rls(false)), None);
    assert_eq!(rls_failed(&config(POLICY)), None);
    assert_eq!(Refusal::RlsUnavailable.status(), 500);
}

#[test]
fn an_annotations_store_that_cannot_be_read_refuses_the_call() {
    let config = config(
        r#"{"annotations": {"refuse": "destructive", "unseen": "allow"},
            "policy": {"agents": {"ops": {"tools": ["*"]}}}}"#,
    );
    let none = routing(&[], &[]);
    let known = Known {
        agent_id: "ops",
        http_method: "POST",
        routing: &none,
        streamed: false,
        params: &[],
        server_id: "srv",
    };
    let body = call_json(1, "echo");
    let mut never_shown = |_: &str| Ok(None);
    let allowed = decide(&config, &known, body.as_bytes(), &mut never_shown);
    assert!(matches!(allowed, Verdict::Forward(_)), "{allowed:?}");
    let mut unreadable = |_: &str| Err(ReadError);
    let refused = decide(&config, &known, body.as_bytes(), &mut unreadable);
    let Verdict::Refuse { refusal, .. } = refused else {
        panic!("not refused: {refused:?}");
    };
    assert_eq!(refusal, Refusal::Denied { by_annotations: 1 });
}

/// [`Lookups`] with one known tool's parameter markings (or a store that cannot be read).
struct Markings(Result<Option<ToolParams>, ReadError>);

impl Lookups for Markings {
    fn tool_hints(&mut self, _: &str) -> Result<Option<ToolHints>, ReadError> {
        Ok(None)
    }
    fn tool_params(&mut self, tool: &str) -> Result<Option<ToolParams>, ReadError> {
        if tool == "add" {
            self.0.clone()
        } else {
            Ok(None)
        }
    }
    fn claim_round(&mut self, _: &str) -> Result<Option<u32>, ReadError> {
        Ok(None)
    }
    fn tool_def(&mut self, _: &str) -> Result<Option<crate::pins::Def>, ReadError> {
        Ok(None)
    }
}

#[test]
fn mcp_param_headers_are_checked_against_the_body_and_tagged_when_configured() {
    let plain = config(POLICY);
    let tagged = with(r#""param_tags": {"add": {"n": "x-add-n"}}"#);
    let marked = Ok(Some(ToolParams::Marked(vec![params::Marking {
        token: "N".into(),
        path: vec!["a".into()],
        kind: params::ParamType::Integer,
    }])));
    let body = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add","arguments":{"a":7,"b":1}}}"#;
    let run = |config: &Config, headers: &[(&str, &str)], lookups: &mut Markings| {
        let params: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        let no_routing = routing(&[], &[]);
        let known = Known {
            agent_id: "demo-agent",
            http_method: "POST",
            routing: &no_routing,
            streamed: false,
            params: &params,
            server_id: "srv",
        };
        // Owned, so the verdict outlives the local headers.
        match decide(config, &known, body.as_bytes(), lookups) {
            Verdict::Forward(f) => Ok((
                f.tags
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), v.clone()))
                    .collect::<Vec<_>>(),
                f.calls[0].params.clone(),
            )),
            Verdict::Refuse { refusal, calls } => Err(Box::new((refusal, calls))),
            other => panic!("{other:?}"),
        }
    };
    // Agreeing (numerically): forwarded; without param_tags nothing more is tagged.
    let (tags, params) = run(
        &plain,
        &[("mcp-param-n", "7.0")],
        &mut Markings(marked.clone()),
    )
    .unwrap();
    assert!(!tags.iter().any(|(n, _)| n == "x-add-n"));
    assert!(params.is_empty());
    // With param_tags: the tag and the hashed value.
    let (tags, params) = run(
        &tagged,
        &[("mcp-param-n", "7")],
        &mut Markings(marked.clone()),
    )
    .unwrap();
    assert!(
        tags.contains(&("x-add-n".to_owned(), "7".to_owned())),
        "{tags:?}"
    );
    assert_eq!(
        params,
        vec![("N".to_owned(), crate::audit::input_hash(b"7"))]
    );
    // Disagreeing: refused -32020 with the id and the tool.
    let (refusal, calls) = *run(
        &plain,
        &[("mcp-param-n", "8")],
        &mut Markings(marked.clone()),
    )
    .unwrap_err();
    assert_eq!((refusal.status(), refusal.code()), (400, -32020));
    assert_eq!(calls[0].request_id, Some(Id::Number("3".into())));
    assert_eq!(calls[0].tool_name.as_deref(), Some("add"));
    // The store could not be read: refused 500, never "nothing there".
    let (refusal, _) = *run(
        &plain,
        &[("mcp-param-n", "7")],
        &mut Markings(Err(ReadError)),
    )
    .unwrap_err();
    assert_eq!((refusal.status(), refusal.code()), (500, INTERNAL_ERROR));
    // Tagged but unknown: refused rather than forwarded without its tag.
    let (refusal, _) = *run(&tagged, &[], &mut Markings(Ok(None))).unwrap_err();
    assert_eq!(refusal.code(), -32020);
    // No header, no tag, an older client: nothing is looked up or refused.
    assert!(run(&plain, &[], &mut Markings(Err(ReadError))).is_ok());
}

/// [`Lookups`] with a set of open round links (claimed once each) and a record of the claims
/// asked for; `unreadable`: every claim fails to read the store.
#[derive(Default)]
struct Rounds {
    open: Vec<String>,
    asked: Vec<String>,
    unreadable: bool,
}

impl Lookups for Rounds {
    fn tool_hints(&mut self, _: &str) -> Result<Option<ToolHints>, ReadError> {
        Ok(None)
    }
    fn tool_params(&mut self, _: &str) -> Result<Option<ToolParams>, ReadError> {
        Ok(None)
    }
    fn claim_round(&mut self, link: &str) -> Result<Option<u32>, ReadError> {
        self.asked.push(link.to_owned());
        if self.unreadable {
            return Err(ReadError);
        }
        let at = self.open.iter().position(|l| l == link);
        Ok(at.map(|i| self.open.remove(i)).map(|_| 1))
    }
    fn tool_def(&mut self, _: &str) -> Result<Option<crate::pins::Def>, ReadError> {
        Ok(None)
    }
}

fn retry_json(id: i64, tool: &str, state: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{}},"inputResponses":{{"q":{{"action":"accept","content":{{"ok":true}}}}}},"requestState":"{state}"}}}}"#
    )
}

fn decide_round<'c>(
    config: &'c Config,
    agent: &str,
    streamed: bool,
    body: &str,
    rounds: &mut Rounds,
) -> Verdict<'c> {
    let none = routing(&[], &[]);
    let known = Known {
        agent_id: agent,
        http_method: "POST",
        routing: &none,
        streamed,
        params: &[],
        server_id: "demo-server",
    };
    decide(config, &known, body.as_bytes(), rounds)
}

/// The link of a round of `echo` called with `{}` (as [`retry_json`] does) by `agent`.
fn echo_link(agent: &str, state: &str) -> String {
    let arguments = crate::audit::input_hash(b"{}");
    rounds::link(
        &crate::audit::InputHasher::Sha256,
        "demo-server",
        agent,
        ("tools/call", "echo", &arguments),
        state,
    )
}

fn round_tag(f: &Forward<'_>) -> Option<String> {
    f.tags
        .iter()
        .find(|(n, _)| *n == "x-mcp-call-round")
        .map(|(_, v)| v.clone())
}

#[test]
fn a_retry_that_claims_an_open_round_is_not_asked_of_the_rls_again() {
    let rls = with(r#""rate_limit_service": {"cluster": "rls", "domain": "mcp"}"#);
    let link = echo_link("demo-agent", "st-1");
    let mut rounds = Rounds {
        open: vec![link.clone()],
        ..Rounds::default()
    };
    let body = retry_json(2, "echo", "st-1");
    let Verdict::Forward(f) = decide_round(&rls, "demo-agent", false, &body, &mut rounds) else {
        panic!("a verified continuation is forwarded without asking the RLS");
    };
    assert_eq!(round_tag(&f).as_deref(), Some("continuation"));
    assert_eq!(
        f.calls[0].round.continues,
        Some(Continuation {
            link: Some(link.clone()),
            matched: true,
            round: 1
        })
    );
    // Single use: the same retry again is a new call, asked of the RLS.
    let again = decide_round(&rls, "demo-agent", false, &body, &mut rounds);
    let Verdict::AskRls { forward, .. } = again else {
        panic!("a replayed retry is counted");
    };
    assert_eq!(round_tag(&forward).as_deref(), Some("first"));
    assert!(!forward.calls[0].round.continues.as_ref().unwrap().matched);
    assert_eq!(rounds.asked, vec![link.clone(), link]);
}

#[test]
fn a_retry_matching_no_round_is_counted_like_a_new_call() {
    let rls = with(r#""rate_limit_service": {"cluster": "rls", "domain": "mcp"}"#);
    let opened = echo_link("demo-agent", "st-1");
    for (agent, body) in [
        // A forged state, other arguments, another agent's round, another tool, no state.
        ("demo-agent", retry_json(2, "echo", "forged")),
        (
            "demo-agent",
            retry_json(2, "echo", "st-1").replace(r#""arguments":{}"#, r#""arguments":{"n":2}"#),
        ),
        ("default", retry_json(2, "echo", "st-1")),
        ("demo-agent", retry_json(2, "add", "st-1")),
        (
            "demo-agent",
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","inputResponses":{}}}"#.to_owned(),
        ),
    ] {
        let mut rounds = Rounds {
            open: vec![opened.clone()],
            ..Rounds::default()
        };
        let v = decide_round(&rls, agent, false, &body, &mut rounds);
        let Verdict::AskRls { forward, descriptors } = v else {
            panic!("{agent} {body}: counted");
        };
        assert!(!descriptors.is_empty());
        assert_eq!(round_tag(&forward).as_deref(), Some("first"), "{body}");
        let retry = forward.calls[0].round.continues.clone().expect("a retry");
        assert!(!retry.matched && retry.link.is_some(), "{body}");
        assert_eq!(rounds.open, vec![opened.clone()], "nothing claimed: {body}");
    }
    // A store that cannot be read: counted (fail closed for limits), not refused.
    let mut rounds = Rounds {
        open: vec![opened.clone()],
        unreadable: true,
        ..Rounds::default()
    };
    let body = retry_json(2, "echo", "st-1");
    let v = decide_round(&rls, "demo-agent", false, &body, &mut rounds);
    assert!(matches!(v, Verdict::AskRls { .. }), "{v:?}");
}

#[test]
fn policy_is_decided_again_on_every_round() {
    // The first round was allowed under the old policy; the retry, after a policy push that
    // no longer lets the agent use `echo`, is refused, and its open round is left unclaimed.
    let pushed = config(
        r#"{"server_id": "demo-server",
            "policy": {"mode": "enforce", "agents": {"demo-agent": {"tools": ["add"]}}}}"#,
    );
    let link = echo_link("demo-agent", "st-1");
    let mut rounds = Rounds {
        open: vec![link.clone()],
        ..Rounds::default()
    };
    let body = retry_json(2, "echo", "st-1");
    let Verdict::Refuse { refusal, calls } =
        decide_round(&pushed, "demo-agent", false, &body, &mut rounds)
    else {
        panic!("denied on round 2");
    };
    assert_eq!(refusal, Refusal::Denied { by_annotations: 0 });
    assert_eq!(calls[0].decision, Decision::Deny);
    assert_eq!(
        calls[0].round.continues,
        Some(Continuation {
            link: Some(link.clone()),
            matched: false,
            round: 0
        })
    );
    assert!(rounds.asked.is_empty(), "a refused retry claims nothing");
    assert_eq!(rounds.open, vec![link]);
}

#[test]
fn what_is_not_a_linkable_retry_claims_nothing() {
    let rls =
        with(r#""rate_limit_service": {"cluster": "rls", "domain": "mcp"}, "max_batch_calls": 5"#);
    let early = with(r#""decide_at_headers": true"#);
    let long = "s".repeat(crate::response::MAX_REQUEST_STATE_LEN + 1);
    let batch = format!(
        "[{},{}]",
        retry_json(1, "echo", "st-1"),
        retry_json(2, "echo", "st-1")
    );
    let list = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"requestState":"st-1"}}"#;
    let cases: [(&Config, bool, String, Option<&str>); 5] = [
        // A state longer than any round could have: linked to nothing.
        (&rls, false, retry_json(2, "echo", &long), Some("first")),
        // Batches (none after 2025-03-26) are never continuations.
        (&rls, false, batch, Some("first")),
        // Not a method that can be answered input_required: no round tag at all.
        (&rls, false, list.to_owned(), None),
        // A first call.
        (&rls, false, call_json(1, "echo"), Some("first")),
        // Streamed from its headers (tagged `first` there): counted, never claimed.
        (&early, true, retry_json(2, "echo", "st-1"), None),
    ];
    for (config, streamed, body, tag) in cases {
        let mut rounds = Rounds {
            open: vec![echo_link("demo-agent", "st-1")],
            ..Rounds::default()
        };
        let v = decide_round(config, "demo-agent", streamed, &body, &mut rounds);
        let forward = match v {
            Verdict::AskRls { forward, .. } => forward,
            Verdict::Forward(f) if config.rate_limit_service.is_none() => f,
            other => panic!("{body}: {other:?}"),
        };
        assert!(rounds.asked.is_empty(), "{body}");
        assert_eq!(round_tag(&forward).as_deref(), tag, "{body}");
    }
    let mut rounds = Rounds::default();
    let body = retry_json(2, "echo", &long);
    let v = decide_round(&rls, "demo-agent", false, &body, &mut rounds);
    let Verdict::AskRls { forward, .. } = v else {
        panic!("counted");
    };
    assert_eq!(
        forward.calls[0].round.continues,
        Some(Continuation {
            link: None,
            matched: false,
            round: 0
        })
    );
}
