use super::*;
use crate::identity::Source;
use crate::policy::Mode;
use crate::ratelimit::MAX_CLUSTER_NAME;
use std::collections::HashMap;

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
    assert!(c.policy.decide_tool("admin-agent", "delete_repo") == crate::policy::Decision::Allow);
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
            param_tags: Default::default(),
            versions: crate::version::Versions::default(),
            pins: crate::pins::PinConfig::default(),
        }
    );
}

const PIN_A: &str = "sha256:e4ac0203dc429d6e61da2239cefb0496adabf23d3fe3a7ca5f98aa79fe6d772d";

#[test]
fn tool_pins_compile_with_their_modes() {
    let json = format!(
        r#"{{"policy":{{"agents":{{}}}},"tool_pins":{{"search":"{PIN_A}","Search ":"{PIN_A}"}},
            "on_drift":"audit","unpinned":"hide","learn_pins":true}}"#
    );
    let c = Config::from_json(json.as_bytes()).unwrap();
    let p = &c.pins;
    assert_eq!(p.configured("search"), Some(PIN_A));
    // Names are exact: no trimming or case folding.
    assert_eq!(p.configured("Search "), Some(PIN_A));
    assert_eq!(p.configured("Search"), None);
    assert_eq!(p.on_drift, crate::pins::OnDrift::Audit);
    assert_eq!(p.unpinned, crate::pins::Unpinned::Hide);
    assert!(p.learn_pins && p.active() && p.can_deny());
    // Defaults: hide, allow, no learning; inactive without pins.
    let c = Config::from_json(br#"{"policy":{"agents":{}}}"#).unwrap();
    assert!(!c.pins.active());
    assert_eq!(c.pins.on_drift, crate::pins::OnDrift::Hide);
    assert_eq!(c.pins.unpinned, crate::pins::Unpinned::Allow);
}

#[test]
fn malformed_pins_are_errors_with_their_paths() {
    let upper = PIN_A.to_uppercase().replace("SHA256", "sha256");
    let short = &PIN_A[..PIN_A.len() - 1];
    let json = format!(
        r#"{{"policy":{{"agents":{{}}}},"tool_pins":{{"a":"{upper}","b":"{short}","c":7,
            "d":"md5:00","":"{PIN_A}","e":"{PIN_A}","e":"{PIN_A}"}},
            "on_drift":"block","unpinned":"deny","learn_pins":"yes"}}"#
    );
    let got = problems(&json);
    for field in [
        "tool_pins.a:",
        "tool_pins.b:",
        "tool_pins.c:",
        "tool_pins.d:",
        "tool_pins.:",
        "tool_pins.e: the tool is pinned twice",
        "on_drift:",
        "unpinned:",
        "learn_pins:",
    ] {
        assert!(
            got.iter().any(|p| p.starts_with(field)),
            "{field} in {got:#?}"
        );
    }
    assert_eq!(got.len(), 9, "{got:#?}");
    assert!(problems(r#"{"policy":{"agents":{}},"tool_pins":[]}"#)
        .iter()
        .any(|p| p.starts_with("tool_pins")));
}

#[test]
fn newest_protocol_version_is_one_of_the_known_revisions() {
    let c =
        Config::from_json(br#"{"policy":{"agents":{}},"newest_protocol_version":"2025-11-25"}"#)
            .unwrap();
    assert_eq!(c.versions.newest(), "2025-11-25");
    assert!(!c.versions.supports("2026-07-28"));
    assert_eq!(
        Config::from_json(br#"{"policy":{"agents":{}}}"#)
            .unwrap()
            .versions
            .newest(),
        "2026-07-28"
    );
    for bad in [
        r#""2027-01-01""#,
        r#""2026-07-28 ""#,
        r#""2026-07-2""#,
        "20260728",
    ] {
        let doc = format!(r#"{{"policy":{{"agents":{{}}}},"newest_protocol_version":{bad}}}"#);
        let errors = Config::from_json(doc.as_bytes()).unwrap_err();
        assert!(
            errors.iter().any(|e| e.field == "newest_protocol_version"),
            "{bad}: {errors}"
        );
    }
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
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, [field], "{bad}: {e}");
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

/// The `field: problem` lines of a refused configuration.
fn problems(json: &str) -> Vec<String> {
    Config::from_json(json.as_bytes())
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn every_independent_problem_is_reported_with_its_path() {
    // Ten independent problems, in ten different places; each would refuse the
    // configuration alone, and none hides another (the first one used to stop the check).
    let json = r#"{
      "server_id": "",
      "identity": {"sources": [{"header": "x-agent-id"}, {"header": "bad name"}]},
      "headers": {"tool_name": ":path"},
      "policy": {"mode": "sometimes", "agents": {
          "bot-a": {"tools": {"allow": ["echo", "search", ""]}, "extra": 1},
          "bad agent": {"tools": ["echo"]}},
        "groups": {"ops": {"members": [], "tools": ["x"]}}},
      "max_json_depth": 0,
      "bogus": true
    }"#;
    let got = problems(json);
    let fields: Vec<&str> = got.iter().map(|p| p.split(": ").next().unwrap()).collect();
    let mut sorted = fields.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "bogus",
            "headers.tool_name",
            "identity.sources[1].header",
            "max_json_depth",
            "policy.agents.bad agent",
            "policy.agents.bot-a.extra",
            "policy.agents.bot-a.tools[2]",
            "policy.groups.ops.members",
            "policy.mode",
            "server_id",
        ],
        "{got:#?}"
    );
    for want in [
        r#"identity.sources[1].header: "bad name" is not a valid HTTP header name"#,
        "policy.agents.bot-a.extra: unknown field `extra`",
        "policy.groups.ops.members: needs at least one member pattern",
        "max_json_depth: must be between 1 and 128",
        "server_id: must not be empty",
    ] {
        assert!(got.iter().any(|p| p.starts_with(want)), "{want}: {got:#?}");
    }
    // Every bad pattern of a list, not only the first (the previous implementation stopped
    // at `tools[1]`); `mcp-guard check` printed the mode's line with this position.
    let got = problems(
        "{\"policy\": {\"agents\": {\"bot-a\": {\"tools\": {\"allow\": [\"echo\", \"\", \"x\", \"\"]},\n  \
         \"prompts\": [\"\", \"p\"], \"mode\": \"never\"}}}}",
    );
    assert_eq!(
        got,
        [
            "policy.agents.bot-a.tools[1]: empty pattern",
            "policy.agents.bot-a.tools[3]: empty pattern",
            "policy.agents.bot-a.prompts[0]: empty pattern",
            "policy.agents.bot-a.mode: unknown variant `never`, expected `enforce` or `dry_run` at line 2 column 39",
        ]
    );
}

#[test]
fn a_mistyped_section_does_not_hide_the_others() {
    let got = problems(
        r#"{"identity": "x-agent-id", "headers": [], "policy": {"agents": {"a": {"tools": [""]}}},
            "rate_limit_service": {"cluster": "", "domain": "", "timeout_ms": 0},
            "input_hash": {"hmac_key": "%%%", "key_id": "has space"},
            "max_body_bytes": "big", "max_batch_calls": 101}"#,
    );
    let fields: Vec<&str> = got.iter().map(|p| p.split(": ").next().unwrap()).collect();
    assert_eq!(
        fields,
        [
            "identity",
            "headers",
            "policy.agents.a.tools[0]",
            "input_hash.hmac_key",
            "input_hash.key_id",
            "max_body_bytes",
            "max_batch_calls",
            "rate_limit_service.domain",
            "rate_limit_service.timeout_ms",
            "rate_limit_service.cluster",
        ],
        "{got:#?}"
    );
    assert!(got[0].contains("invalid type: string \"x-agent-id\", expected an object"));
}

#[test]
fn positions_are_the_documents_as_serde_json_gave_them() {
    // Each expected line was printed by the previous implementation, which deserialized the
    // whole document at once (`mcp-guard check` on the same text).
    for (json, want) in [
        (
            "{\"policy\": {\"agents\": {}},\n \"bogus\": 1}",
            "bogus: unknown field `bogus`, expected one of `server_id`, `identity`, `headers`, \
             `policy`, `max_body_bytes`, `max_json_depth`, `max_batch_calls`, `input_hash`, \
             `curate_lists`, `annotations`, `hide_denied_tools`, `max_tool_metrics`, \
             `hold_request_headers`, `rate_limit_service`, `decide_at_headers`, `param_tags`, `newest_protocol_version`, `tool_pins`, `on_drift`, `unpinned`, `learn_pins` at line 2 column 8",
        ),
        (
            "{\n \"policy\": {\"agents\": {\"a\": {\"tools\": [\"x\", 3]}}}}",
            "policy.agents.a.tools[1]: invalid type: integer `3`, expected a string at line 2 column 45",
        ),
        (
            "{\n\"max_body_bytes\": \"big\",\n  \"policy\": {\"agents\": {}}}",
            "max_body_bytes: invalid type: string \"big\", expected usize at line 2 column 23",
        ),
        (
            "{\"policy\":\n  {\"agents\": {\"bot\": {\"tools\": [\"x\"],\n    \"extra\": 1}}}}",
            "policy.agents.bot.extra: unknown field `extra`, expected one of `tools`, `prompts`, \
             `resources`, `methods`, `mode` at line 3 column 11",
        ),
        (
            "{\"policy\": {\"mode\": \"x\",\n \"agents\": {\"g\": {}}}}",
            "policy.mode: unknown variant `x`, expected `enforce` or `dry_run` at line 1 column 23",
        ),
        (
            "{\"identity\": null}",
            "missing field `policy` at line 1 column 18",
        ),
        (
            "{\"policy\": {\"agents\": {}}, \"server_id\": \"a\",\n\"server_id\": \"b\"}",
            "server_id: duplicate field `server_id` at line 2 column 11",
        ),
        (
            "{\"policy\": {\"agents\": {}}} trailing",
            "trailing characters at line 1 column 28",
        ),
    ] {
        assert_eq!(problems(json), [want], "{json}");
    }
    let e = Config::from_json(b"{\"policy\": {\"agents\": {}},\n \"bogus\": 1}").unwrap_err();
    assert_eq!(
        e.errors()[0].position,
        Some(Position { line: 2, column: 8 })
    );
    assert!(!e.errors()[0].problem.contains(" at line "));
}

#[test]
fn nulls_and_repeated_map_keys_read_as_before() {
    // An optional field set to null is absent; a required one is mistyped.
    let c = Config::from_json(
        br#"{"identity": null, "headers": null, "server_id": null,
             "policy": {"mode": null, "agents": {"a": {"tools": null, "mode": null}}}}"#,
    )
    .unwrap();
    assert_eq!(
        c.identity,
        Config::from_json(br#"{"policy":{"agents":{}}}"#)
            .unwrap()
            .identity
    );
    assert_eq!(
        c.policy.decide_tool("a", "echo"),
        crate::policy::Decision::Deny
    );
    for (json, want) in [
        (r#"{"policy": null}"#, "policy: invalid type: null"),
        (
            r#"{"policy": {"agents": null}}"#,
            "policy.agents: invalid type: null",
        ),
        (
            r#"{"policy": {"agents": {}, "groups": null}}"#,
            "policy.groups: invalid type: null",
        ),
        (
            r#"{"policy": {"agents": {}}, "identity": {"sources": null}}"#,
            "identity.sources: invalid type: null",
        ),
    ] {
        let got = problems(json);
        assert!(
            got.len() == 1 && got[0].starts_with(want),
            "{json}: {got:?}"
        );
    }
    // A key repeated in `agents` keeps its last value (serde's BTreeMap), and the first
    // copy is not checked; a repeated field of an object is refused.
    let c = Config::from_json(
        br#"{"policy": {"agents": {"a": {"tools": [""]}, "a": {"tools": ["echo"]}}}}"#,
    )
    .unwrap();
    assert_eq!(
        c.policy.decide_tool("a", "echo"),
        crate::policy::Decision::Allow
    );
    assert_eq!(
        problems(r#"{"policy": {"agents": {"a": {"tools": ["x"], "tools": ["y"]}}}}"#),
        ["policy.agents.a.tools: duplicate field `tools` at line 1 column 52"]
    );
}

#[test]
fn errors_display_one_per_line() {
    let e =
        Config::from_json(br#"{"server_id": "", "policy": {"agents": {}}, "max_body_bytes": 0}"#)
            .unwrap_err();
    assert_eq!(e.len(), 2);
    assert_eq!(
        e.to_string(),
        "server_id: must not be empty\nmax_body_bytes: must be greater than 0"
    );
}

#[test]
fn objects_written_as_arrays_are_refused() {
    // serde's derived structs also read a JSON array as the fields in declaration order, so
    // the previous implementation accepted `"demo-agent": []` (an agent with no lists) or a
    // whole document `[null, null, null, {"agents": {}}]`. The objects read field by field
    // are objects only (the documented shape): anything else is refused.
    for (json, want) in [
        (
            r#"{"policy": {"agents": {"a": []}}}"#,
            "policy.agents.a: invalid type: sequence, expected an object",
        ),
        (
            r#"[null, null, null, {"agents": {}}]"#,
            "invalid type: sequence, expected an object",
        ),
        (
            r#"{"policy": [null, null, null, {}]}"#,
            "policy: invalid type: sequence, expected an object",
        ),
        (
            r#"{"policy": {"agents": {}}, "headers": ["x-m"]}"#,
            "headers: invalid type: sequence, expected an object",
        ),
    ] {
        let got = problems(json);
        assert!(
            got.len() == 1 && got[0].starts_with(want),
            "{json}: {got:?}"
        );
    }
}

/// Cut or altered documents never panic, a refusal always lists at least one problem, and
/// every position is inside the document (positions are computed from byte offsets).
#[test]
fn damaged_documents_are_refused_with_positions_inside_them() {
    let doc = DEMO.as_bytes();
    // A fixed linear congruential generator: the same 3,000 documents on every run.
    let mut state: u64 = 14;
    let mut next = |bound: usize| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(state >> 33).unwrap() % bound
    };
    let replacements = b"{}[],:\"0 \nx-";
    let mut positioned = 0;
    for round in 0..3_000 {
        let mut d = doc.to_vec();
        if round % 3 == 0 {
            d.truncate(next(doc.len()));
        } else {
            for _ in 0..1 + next(3) {
                let at = next(d.len());
                d[at] = replacements[next(replacements.len())];
            }
        }
        let lines = 1 + d.iter().filter(|&&b| b == b'\n').count();
        if let Err(errors) = Config::from_json(&d) {
            assert!(!errors.is_empty());
            for e in &errors {
                if let Some(p) = e.position {
                    assert!(p.line >= 1 && p.line <= lines, "{e}");
                    let line = d.split(|&b| b == b'\n').nth(p.line - 1).unwrap();
                    assert!(p.column <= line.len(), "{e}");
                    positioned += 1;
                }
            }
        }
    }
    assert!(positioned > 1_000, "{positioned}");
}

#[test]
fn param_tags_are_off_by_default_and_every_entry_is_checked() {
    let c = Config::from_json(br#"{"policy":{"agents":{}}}"#).unwrap();
    assert!(c.param_tags.is_empty());
    let c = Config::from_json(
        br#"{"policy":{"agents":{}},
             "param_tags":{"execute_sql":{"Region":"X-MCP-Param-Region"},
                           "copy":{"Region":"x-mcp-param-region","Repo":"x-repo"}}}"#,
    )
    .unwrap();
    assert_eq!(
        c.param_tags.for_tool("execute_sql"),
        Some(&[("Region".to_owned(), "x-mcp-param-region".to_owned())][..])
    );
    assert_eq!(c.param_tags.headers(), vec!["x-mcp-param-region", "x-repo"]);
    let got = problems(
        r#"{"policy":{"agents":{}},
            "param_tags":{"":{"A":"x-a"},
                          "t":{"Bad Name":"x-b","C":"bad header","D":"mcp-param-d",
                               "E":"x-mcp-tool-name","F":"x-f","G":"x-f","h":"x-h","H":"x-h2"}}}"#,
    );
    let expected = [
        "param_tags.: the tool name must not be empty",
        "param_tags.t.Bad Name: not a valid x-mcp-header name",
        "param_tags.t.C: \"bad header\" is not a valid HTTP header name",
        "param_tags.t.D: must not start with mcp-",
        "param_tags.t.E: header \"x-mcp-tool-name\" is already a tag",
        "param_tags.t.G: header \"x-f\" is used twice for this tool",
        "param_tags.t.h: names the same header as another entry",
    ];
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for want in expected {
        assert!(got.iter().any(|g| g.starts_with(want)), "{want}: {got:#?}");
    }
    // Tag headers come after `headers`: a renamed tag may not be reused either.
    let got = problems(
        r#"{"policy":{"agents":{}},"headers":{"method":"x-m"},"param_tags":{"t":{"A":"x-m"}}}"#,
    );
    assert_eq!(got, vec!["param_tags.t.A: header \"x-m\" is already a tag"]);
}

#[test]
fn the_call_round_tag_is_named_like_every_tag() {
    let c = Config::from_json(br#"{"policy":{"agents":{}}}"#).unwrap();
    assert_eq!(c.headers.call_round, "x-mcp-call-round");
    let c = Config::from_json(br#"{"policy":{"agents":{}},"headers":{"call_round":"X-Round"}}"#)
        .unwrap();
    assert_eq!(c.headers.call_round, "x-round");
    assert!(
        c.headers.all().contains(&"x-round"),
        "client copies are removed"
    );
    let clash = br#"{"policy":{"agents":{}},"headers":{"call_round":"x-mcp-method"}}"#;
    assert!(Config::from_json(clash).is_err(), "one header for two tags");
}
