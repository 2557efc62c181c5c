//! The `mcp-guard` binary end to end: exit statuses, messages, and renderings parsed back.

// Test code: a failed step should fail the test loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
use common::*;

use mcp_guard::config::Config;
use std::path::PathBuf;
use std::process::Output;

fn demo_policy() -> String {
    repo().join("examples/policy.json").display().to_string()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A temp file with this content and extension, removed on drop.
struct Temp(PathBuf);

impl Temp {
    fn new(name: &str, content: &str) -> Temp {
        let dir = std::env::temp_dir().join(format!("mcp-guard-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        Temp(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A policy exercising groups (deny wins), the default agent and the default methods.
const GROUPS_YAML: &str = r#"
# YAML, with comments.
policy:
  name: ci
  agents:
    admin-agent:
      tools: ["*"]
    demo-agent:
      tools: [echo, search]
    default:
      tools: [echo]
  groups:
    ops:
      members: ["ops-*", admin-agent]
      tools:
        allow: ["git_*"]
        deny: [git_push_force, "*delete*"]
"#;

#[test]
fn check_valid_json_and_yaml() {
    let o = run(&["check", &demo_policy()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("valid"), "{out}");

    let yaml = Temp::new("groups.yaml", GROUPS_YAML);
    let o = run(&["check", yaml.path()]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));

    // By content, on stdin.
    let o = run_stdin(&["check", "-"], GROUPS_YAML);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}

#[test]
fn check_invalid_reports_every_problem_with_its_path() {
    let bad = Temp::new(
        "bad.yaml",
        "policy:\n  agents:\n    bot: {tools: [echo, \"\"], extra: 1}\n  mode: sometimes\nmax_body_bytes: 0\n",
    );
    let o = run(&["check", bad.path()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    for want in [
        "policy.agents.bot.tools[1]: empty pattern",
        "policy.agents.bot.extra: unknown field `extra`",
        "policy.mode: unknown variant `sometimes`",
        "max_body_bytes: must be greater than 0",
        "invalid (4 problem(s))",
    ] {
        assert!(err.contains(want), "{want:?} not in {err}");
    }

    let o = run(&["check", "--json", bad.path()]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let fields: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"policy.agents.bot.tools[1]"), "{fields:?}");

    // JSON: the first problem with the file's line; a duplicate key with its path.
    let bad = Temp::new("bad.json", "{\"policy\": {\"agents\": {}},\n \"bogus\": 1}");
    let (_, err) = text(&run(&["check", bad.path()]));
    assert!(
        err.contains("unknown field `bogus`") && err.contains("line 2"),
        "{err}"
    );
    let dup = Temp::new(
        "dup.json",
        r#"{"policy": {"agents": {"a": {}, "a": {"tools": ["*"]}}}}"#,
    );
    let o = run(&["check", dup.path()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("policy.agents.a: duplicate key"),
        "{:?}",
        text(&o)
    );
    let notyaml = Temp::new("x.yaml", "policy: [unclosed\n");
    assert_eq!(run(&["check", notyaml.path()]).status.code(), Some(1));

    // Several files: the worst status.
    let o = run(&["check", &demo_policy(), dup.path()]);
    assert_eq!(o.status.code(), Some(1));
}

/// Several problems inside one field (a list, the identity sources, the RLS section) are all
/// reported: the filter's parser checks each value, where cutting the document into fields
/// found only the first problem of each (3 of these 6).
#[test]
fn check_reports_every_problem_inside_one_field() {
    let bad = Temp::new(
        "many.yaml",
        "identity:\n  sources: [{header: \"bad name\"}, {header: \":path\"}]\n\
         policy:\n  agents:\n    bot: {tools: [\"\", echo, \"\"]}\n\
         rate_limit_service: {cluster: rls, domain: \"\", timeout_ms: 0}\n",
    );
    let o = run(&["check", bad.path()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    let lines: Vec<&str> = err.lines().collect();
    let file = bad.path();
    assert_eq!(
        lines,
        [
            format!(
                "{file}: identity.sources[0].header: \"bad name\" is not a valid HTTP header name"
            ),
            format!(
                "{file}: identity.sources[1].header: \":path\" is not a valid HTTP header name"
            ),
            format!("{file}: policy.agents.bot.tools[0]: empty pattern"),
            format!("{file}: policy.agents.bot.tools[2]: empty pattern"),
            format!("{file}: rate_limit_service.domain: must not be empty"),
            format!("{file}: rate_limit_service.timeout_ms: must be between 1 and 60000"),
            format!("{file}: invalid (6 problem(s))"),
        ],
        "{err}"
    );
}

#[test]
fn usage_and_io_errors_exit_2() {
    assert_eq!(
        run(&["check", "/nonexistent/policy.json"]).status.code(),
        Some(2)
    );
    assert_eq!(run(&["check"]).status.code(), Some(2));
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        run(&["render", &demo_policy(), "--format", "nginx"])
            .status
            .code(),
        Some(2)
    );
    let o = run(&[
        "explain",
        &demo_policy(),
        "--agent",
        "a",
        "--method",
        "tools/call",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("needs --name"));
    assert_eq!(run(&["--help"]).status.code(), Some(0));
}

fn explain(policy: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["explain", policy];
    all.extend_from_slice(args);
    let o = run(&all);
    let (out, err) = text(&o);
    (o.status.code(), format!("{out}{err}"))
}

#[test]
fn explain_decisions_and_rules() {
    let yaml = Temp::new("explain.yaml", GROUPS_YAML);
    let p = yaml.path();

    // Deny wins: admin-agent's own "*" allows, its group's deny refuses.
    let (code, out) = explain(
        p,
        &[
            "--agent",
            "admin-agent",
            "--method",
            "tools/call",
            "--name",
            "delete_repo",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("decision: deny"), "{out}");
    assert!(
        out.contains(r#"rule: groups.ops.tools.deny[1] "*delete*""#),
        "{out}"
    );
    assert!(
        out.contains("rule sets: agents.admin-agent, groups.ops"),
        "{out}"
    );

    let (_, out) = explain(
        p,
        &[
            "--agent",
            "admin-agent",
            "--method",
            "tools/call",
            "--name",
            "echo",
        ],
    );
    assert!(
        out.contains("decision: allow") && out.contains(r#"agents.admin-agent.tools.allow[0] "*""#),
        "{out}"
    );

    // Group membership by pattern; the default set does not apply to group members.
    let (_, out) = explain(
        p,
        &[
            "--agent",
            "ops-7",
            "--method",
            "tools/call",
            "--name",
            "git_log",
        ],
    );
    assert!(
        out.contains("decision: allow") && out.contains(r#"groups.ops.tools.allow[0] "git_*""#),
        "{out}"
    );

    // Default agent.
    let (_, out) = explain(
        p,
        &[
            "--agent",
            "stranger",
            "--method",
            "tools/call",
            "--name",
            "echo",
        ],
    );
    assert!(
        out.contains("decision: allow") && out.contains(r#"agents.default.tools.allow[0] "echo""#),
        "{out}"
    );
    let (_, out) = explain(
        p,
        &[
            "--agent",
            "stranger",
            "--method",
            "tools/call",
            "--name",
            "search",
        ],
    );
    assert!(
        out.contains("decision: deny")
            && out.contains("no tools pattern allows it in agents.default"),
        "{out}"
    );

    // Default method list (a set without `methods`).
    let (_, out) = explain(
        p,
        &[
            "--agent",
            "demo-agent",
            "--method",
            "notifications/initialized",
        ],
    );
    assert!(
        out.contains("decision: allow")
            && out.contains(r#"agents.demo-agent.methods.allow[3] "notifications/*""#),
        "{out}"
    );
    let (_, out) = explain(p, &["--agent", "demo-agent", "--method", "x-vendor/run"]);
    assert!(
        out.contains("decision: deny") && out.contains("no methods pattern allows it"),
        "{out}"
    );

    // --json and --expect.
    let o = run(&[
        "explain",
        p,
        "--agent",
        "ops-1",
        "--method",
        "tools/call",
        "--name",
        "git_push_force",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["rule"], r#"groups.ops.tools.deny[0] "git_push_force""#);
    assert_eq!(v["rule_sets"], serde_json::json!(["groups.ops"]));
    let (code, _) = explain(
        p,
        &[
            "--agent",
            "ops-1",
            "--method",
            "tools/call",
            "--name",
            "git_log",
            "--expect",
            "allow",
        ],
    );
    assert_eq!(code, Some(0));
    let (code, out) = explain(
        p,
        &[
            "--agent",
            "ops-1",
            "--method",
            "tools/call",
            "--name",
            "git_log",
            "--expect",
            "deny",
        ],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("expected deny, got allow"), "{out}");
}

#[test]
fn explain_dry_run() {
    let yaml = Temp::new(
        "dry.yaml",
        "policy:\n  agents:\n    trial: {tools: [echo], mode: dry_run}\n",
    );
    let (_, out) = explain(
        yaml.path(),
        &["--agent", "trial", "--method", "tools/call", "--name", "rm"],
    );
    assert!(out.contains("decision: dry_run_deny"), "{out}");
}

#[test]
fn invalid_policy_is_not_explained_or_rendered() {
    let bad = Temp::new(
        "bad2.json",
        r#"{"policy": {"agents": {"a": {"tools": [""]}}}}"#,
    );
    let (code, out) = explain(bad.path(), &["--agent", "a", "--method", "ping"]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("policy.agents.a.tools[0]: empty pattern"),
        "{out}"
    );
    let o = run(&["render", bad.path(), "--format", "ecds"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    // --no-check renders it anyway (for showing the filter reject it).
    let o = run(&["render", bad.path(), "--format", "ecds", "--no-check"]);
    assert_eq!(o.status.code(), Some(0));
}

fn wasm_config(resource: &serde_json::Value) -> &serde_json::Value {
    assert_eq!(
        resource["@type"],
        "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
    );
    let typed = &resource["typed_config"];
    assert_eq!(
        typed["@type"],
        "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
    );
    &typed["config"]
}

fn assert_fails_closed_and_parses(config: &serde_json::Value) {
    assert_eq!(config["failure_policy"], "FAIL_CLOSED");
    assert_eq!(config["allow_on_headers_stop_iteration"], true);
    assert_eq!(
        config["configuration"]["@type"],
        "type.googleapis.com/google.protobuf.StringValue"
    );
    let value = config["configuration"]["value"].as_str().unwrap();
    Config::from_json(value.as_bytes()).unwrap();
}

#[test]
fn render_ecds_parses_back() {
    let o = run(&[
        "render",
        &demo_policy(),
        "--format",
        "ecds",
        "--wasm",
        "/opt/mcp_guard.wasm",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let resources = v["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 1);
    assert_eq!(resources[0]["name"], "mcp-guard");
    let config = wasm_config(&resources[0]);
    assert_fails_closed_and_parses(config);
    assert_eq!(config["root_id"], "mcp-guard");
    assert_eq!(config["vm_config"]["runtime"], "envoy.wasm.runtime.v8");
    assert_eq!(
        config["vm_config"]["code"]["local"]["filename"],
        "/opt/mcp_guard.wasm"
    );
    // The configuration is the file's, compacted.
    let shipped: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo_policy()).unwrap()).unwrap();
    let value: serde_json::Value =
        serde_json::from_str(config["configuration"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(value, shipped);

    // --bare, YAML input, YAML output, --out.
    let yaml = Temp::new("ecds.yaml", GROUPS_YAML);
    let out = Temp::new("ecds-out.yaml", "old");
    let o = run(&[
        "render",
        yaml.path(),
        "--format",
        "ecds",
        "--bare",
        "--output",
        "yaml",
        "--out",
        out.path(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(o.stdout.is_empty());
    let written = std::fs::read_to_string(out.path()).unwrap();
    let v: serde_json::Value = serde_saphyr::from_str(&written).unwrap();
    assert_fails_closed_and_parses(wasm_config(&v));
}

/// Every `"@type": ...Wasm` config anywhere in a document.
fn wasm_configs<'a>(v: &'a serde_json::Value, found: &mut Vec<&'a serde_json::Value>) {
    match v {
        serde_json::Value::Object(m) => {
            if m.get("@type").and_then(|t| t.as_str())
                == Some("type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm")
            {
                if let Some(c) = m.get("config") {
                    found.push(c);
                }
            }
            m.values().for_each(|x| wasm_configs(x, found));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| wasm_configs(x, found)),
        _ => {}
    }
}

fn yaml_docs(bytes: &[u8]) -> Vec<serde_json::Value> {
    serde_saphyr::from_str_multiple(std::str::from_utf8(bytes).unwrap()).unwrap()
}

#[test]
fn render_istio() {
    let o = run(&[
        "render",
        &demo_policy(),
        "--format",
        "istio",
        "--namespace",
        "mcp",
        "--selector",
        "app=mcp-server",
        "--image",
        "oci://registry.example/mcp-guard:1",
        "--sha256",
        "ab12",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let docs = yaml_docs(&o.stdout);
    assert_eq!(docs.len(), 1);
    let ef = &docs[0];
    assert_eq!(ef["apiVersion"], "networking.istio.io/v1alpha3");
    assert_eq!(ef["kind"], "EnvoyFilter");
    assert_eq!(ef["metadata"]["namespace"], "mcp");
    assert_eq!(
        ef["spec"]["workloadSelector"]["labels"]["app"],
        "mcp-server"
    );
    let patches = ef["spec"]["configPatches"].as_array().unwrap();
    assert_eq!(patches[0]["applyTo"], "EXTENSION_CONFIG");
    assert_eq!(patches[0]["patch"]["operation"], "ADD");
    let ext = &patches[0]["patch"]["value"];
    assert_eq!(ext["name"], "mcp.mcp-guard");
    let mut found = Vec::new();
    wasm_configs(ef, &mut found);
    assert_eq!(found.len(), 1);
    assert_fails_closed_and_parses(found[0]);
    let remote = &found[0]["vm_config"]["code"]["remote"];
    assert_eq!(
        remote["http_uri"]["uri"],
        "oci://registry.example/mcp-guard:1"
    );
    assert_eq!(remote["sha256"], "ab12");
    // The HTTP filter loads that extension config by ECDS, before the router.
    assert_eq!(patches[1]["applyTo"], "HTTP_FILTER");
    assert_eq!(patches[1]["patch"]["operation"], "INSERT_BEFORE");
    assert_eq!(
        patches[1]["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
        "envoy.filters.http.router"
    );
    let filter = &patches[1]["patch"]["value"];
    assert_eq!(filter["name"], ext["name"]);
    assert_eq!(
        filter["config_discovery"]["type_urls"][0],
        "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
    );

    // JSON output: a v1 List holding the same document.
    let o = run(&[
        "render",
        &demo_policy(),
        "--format",
        "istio",
        "--output",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "EnvoyFilter");
}

#[test]
fn render_envoy_gateway() {
    let o = run(&[
        "render",
        &demo_policy(),
        "--format",
        "envoy-gateway",
        "--namespace",
        "mcp",
        "--target-ref",
        "HTTPRoute/mcp-route",
        "--target-ref",
        "Gateway/edge",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let docs = yaml_docs(&o.stdout);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["EnvoyExtensionPolicy", "EnvoyPatchPolicy"]);
    let policy = &docs[0];
    assert_eq!(policy["apiVersion"], "gateway.envoyproxy.io/v1alpha1");
    let refs = policy["spec"]["targetRefs"].as_array().unwrap();
    assert_eq!(refs[0]["kind"], "HTTPRoute");
    assert_eq!(refs[0]["name"], "mcp-route");
    assert_eq!(refs[1]["group"], "gateway.networking.k8s.io");
    let wasm = &policy["spec"]["wasm"][0];
    assert_eq!(wasm["failOpen"], false);
    assert_eq!(wasm["code"]["type"], "Image");
    // The config is the plugin configuration as an object, accepted by the filter.
    let config = serde_json::to_string(&wasm["config"]).unwrap();
    Config::from_json(config.as_bytes()).unwrap();

    let patch = &docs[1];
    assert_eq!(patch["spec"]["targetRef"]["name"], "edge");
    let op = &patch["spec"]["jsonPatches"][0];
    assert_eq!(op["name"], "mcp/edge/http");
    assert_eq!(
        op["operation"]["path"],
        "/typed_config/config/allow_on_headers_stop_iteration"
    );
    assert_eq!(op["operation"]["value"], true);
    assert!(op["operation"]["jsonPath"]
        .as_str()
        .unwrap()
        .contains("envoy.filters.http.wasm/envoyextensionpolicy/mcp/mcp-guard/wasm/0"));

    // An https:// module is an HTTP code source.
    let o = run(&[
        "render",
        &demo_policy(),
        "--format",
        "envoy-gateway",
        "--image",
        "https://x/m.wasm",
        "--sha256",
        "ff",
    ]);
    let docs = yaml_docs(&o.stdout);
    assert_eq!(docs[0]["spec"]["wasm"][0]["code"]["type"], "HTTP");
    assert_eq!(docs[0]["spec"]["wasm"][0]["code"]["http"]["sha256"], "ff");
}

#[test]
fn render_istio_wasmplugin() {
    let o = run(&[
        "render",
        &demo_policy(),
        "--format",
        "istio-wasmplugin",
        "--namespace",
        "mcp",
        "--selector",
        "app=mcp-server",
        "--image",
        "oci://registry.example/mcp-guard:1",
        "--rls-host",
        "rls.ops.svc.cluster.local",
        "--rls-port",
        "9000",
        "--rls-domain",
        "agents",
        "--rls-timeout-ms",
        "250",
        "--rls-failure-mode",
        "allow",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let docs = yaml_docs(&o.stdout);
    assert_eq!(docs.len(), 1, "a WasmPlugin and no EnvoyFilter");
    let wp = &docs[0];
    assert_eq!(wp["apiVersion"], "extensions.istio.io/v1alpha1");
    assert_eq!(wp["kind"], "WasmPlugin");
    assert_eq!(wp["metadata"]["namespace"], "mcp");
    let spec = &wp["spec"];
    assert_eq!(spec["selector"]["matchLabels"]["app"], "mcp-server");
    assert_eq!(spec["url"], "oci://registry.example/mcp-guard:1");
    assert_eq!(spec["pluginName"], "mcp-guard");
    assert_eq!(spec["failStrategy"], "FAIL_CLOSE");
    assert_eq!(spec["match"][0]["mode"], "SERVER");
    assert!(spec.get("sha256").is_none());

    // The filter's own parser accepts the plugin configuration: headers not held, the RLS
    // on Istio's outbound cluster of its Service.
    let compiled = Config::from_json(
        serde_json::to_string(&spec["pluginConfig"])
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    assert!(!compiled.hold_request_headers);
    assert_eq!(
        compiled.rate_limit_service,
        mcp_guard::ratelimit::RateLimitService::new(
            "outbound|9000||rls.ops.svc.cluster.local",
            "agents".into(),
            250,
            false
        )
    );

    // It is the policy file as written, plus those two fields.
    let mut config = spec["pluginConfig"].clone();
    let fields = config.as_object_mut().unwrap();
    assert_eq!(
        fields.remove("hold_request_headers"),
        Some(serde_json::json!(false))
    );
    assert_eq!(
        fields.remove("rate_limit_service"),
        Some(serde_json::json!({
            "cluster": "outbound|9000||rls.ops.svc.cluster.local",
            "domain": "agents",
            "timeout_ms": 250,
            "failure_mode_deny": false,
        }))
    );
    let policy: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo_policy()).unwrap()).unwrap();
    assert_eq!(config, policy);

    // The defaults; a gateway's listeners are CLIENT ones.
    let o = run(&[
        "render",
        &demo_policy(),
        "--format",
        "istio-wasmplugin",
        "--context",
        "gateway",
        "--sha256",
        &"ab".repeat(32),
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let spec = &yaml_docs(&o.stdout)[0]["spec"];
    assert_eq!(spec["match"][0]["mode"], "CLIENT");
    assert_eq!(spec["sha256"], "ab".repeat(32));
    assert!(spec.get("selector").is_none());
    assert_eq!(
        spec["pluginConfig"]["rate_limit_service"],
        serde_json::json!({
            "cluster": "outbound|8081||ratelimit.ratelimit.svc.cluster.local",
            "domain": "mcp",
            "timeout_ms": 500,
            "failure_mode_deny": true,
        })
    );

    // --no-rls: no rate_limit_service added.
    let o = run(&[
        "render",
        &demo_policy(),
        "--format",
        "istio-wasmplugin",
        "--no-rls",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let config = &yaml_docs(&o.stdout)[0]["spec"]["pluginConfig"];
    assert!(config.get("rate_limit_service").is_none());
    assert_eq!(config["hold_request_headers"], false);
}

#[test]
fn render_istio_wasmplugin_refuses_a_file_that_contradicts_it() {
    // Built without the filter's check (--no-check), so only the rendering's own rule applies.
    let policy =
        r#"{"policy": {"agents": {"default": {"tools": ["echo"]}}}, "hold_request_headers": true}"#;
    let o = run_stdin(
        &["render", "-", "--format", "istio-wasmplugin", "--no-check"],
        policy,
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out} {err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("hold_request_headers: the file sets true"),
        "{err}"
    );

    let policy = r#"{"policy": {"agents": {"default": {"tools": ["echo"]}}},
        "rate_limit_service": {"cluster": "rls", "domain": "mcp", "timeout_ms": 500, "failure_mode_deny": true}}"#;
    let args = ["render", "-", "--format", "istio-wasmplugin", "--no-check"];
    let o = run_stdin(&args, policy);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("rate_limit_service: the file sets"), "{err}");
    // What the filter's parser refuses in the rendered configuration is refused too: an RLS
    // cluster name over its 100 bytes.
    let long_host = format!("{}.svc.cluster.local", "r".repeat(90));
    let o = run(&[
        "render",
        &demo_policy(),
        "--format",
        "istio-wasmplugin",
        "--rls-host",
        &long_host,
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out} {err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(
            "rate_limit_service.cluster: must be 1-100 bytes (in the rendered pluginConfig)"
        ),
        "{err}"
    );

    // --no-rls keeps the file's own rate_limit_service as written.
    let o = run_stdin(&[&args[..], &["--no-rls"]].concat(), policy);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert_eq!(
        yaml_docs(&o.stdout)[0]["spec"]["pluginConfig"]["rate_limit_service"]["cluster"],
        "rls"
    );
}
