//! `mcp-guard render --otel-collector HOST:PORT`: Envoy's OpenTelemetry access logger in the
//! mesh renderings, the same logger as the shipped envoy/envoy-otel.yaml (which `make
//! validate` runs through `envoy --mode validate`, and tests/e2e/test_95_otel.py through real
//! traffic), and `audit_attributes: true` in the plugin configuration they carry.

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
use serde_json::Value;
use std::process::{Command, Output};

const COLLECTOR: &str = "otel-collector.observability.svc.cluster.local:4317";
const ISTIO_CLUSTER: &str = "outbound|4317||otel-collector.observability.svc.cluster.local";

fn render(args: &[&str]) -> Output {
    let policy = repo().join("examples/policy.json");
    Command::new(BIN)
        .arg("render")
        .arg(policy)
        .args(args)
        .output()
        .unwrap()
}

fn docs(o: &Output) -> Vec<Value> {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_saphyr::from_str_multiple(std::str::from_utf8(&o.stdout).unwrap()).unwrap()
}

/// The OpenTelemetry access logger of envoy/envoy-otel.yaml, with its cluster name replaced.
fn shipped_logger(cluster: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("envoy/envoy-otel.yaml")).unwrap();
    let bootstrap: Value = serde_saphyr::from_str(&text).unwrap();
    let hcm = &bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"];
    let loggers = hcm["access_log"].as_array().unwrap();
    let otel: Vec<&Value> = loggers
        .iter()
        .filter(|l| l["name"] == "envoy.access_loggers.open_telemetry")
        .collect();
    assert_eq!(
        otel.len(),
        1,
        "envoy-otel.yaml has one OpenTelemetry logger"
    );
    // The file log stays.
    assert_eq!(
        loggers
            .iter()
            .filter(|l| l["name"] == "envoy.access_loggers.file")
            .count(),
        2
    );
    let mut logger = otel[0].clone();
    assert_eq!(
        logger["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"],
        "otel_collector"
    );
    logger["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] = cluster.into();
    logger
}

fn plugin_config(text: &str) -> Config {
    Config::from_json(text.as_bytes()).unwrap()
}

#[test]
fn istio_appends_the_shipped_logger_to_every_connection_manager() {
    let docs = docs(&render(&[
        "--format",
        "istio",
        "--context",
        "gateway",
        "--otel-collector",
        COLLECTOR,
    ]));
    assert_eq!(docs.len(), 1);
    let patches = docs[0]["spec"]["configPatches"].as_array().unwrap();
    assert_eq!(patches.len(), 3, "the two Wasm patches and the access log");
    let p = &patches[2];
    assert_eq!(p["applyTo"], "NETWORK_FILTER");
    assert_eq!(p["match"]["context"], "GATEWAY");
    assert_eq!(
        p["match"]["listener"]["filterChain"]["filter"]["name"],
        "envoy.filters.network.http_connection_manager"
    );
    // MERGE appends to the repeated access_log: Istio's own loggers stay.
    assert_eq!(p["patch"]["operation"], "MERGE");
    let hcm = &p["patch"]["value"]["typed_config"];
    assert_eq!(
        hcm["@type"],
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    );
    assert_eq!(
        hcm["access_log"],
        Value::Array(vec![shipped_logger(ISTIO_CLUSTER)])
    );
    // The filter writes the attributes' filter state.
    let wasm = &patches[0]["patch"]["value"]["typed_config"]["config"];
    let config = plugin_config(wasm["configuration"]["value"].as_str().unwrap());
    assert!(config.audit_attributes);
    assert!(config.hold_request_headers);
}

#[test]
fn without_the_flag_nothing_changes() {
    for format in ["istio", "istio-wasmplugin", "envoy-gateway"] {
        let plain = render(&["--format", format]);
        let text = String::from_utf8_lossy(&plain.stdout);
        assert!(!text.contains("open_telemetry"), "{format}");
        assert!(!text.contains("audit_attributes"), "{format}");
    }
}

#[test]
fn istio_wasmplugin_gets_a_second_document_an_envoyfilter_with_the_logger() {
    let docs = docs(&render(&[
        "--format",
        "istio-wasmplugin",
        "--namespace",
        "mcp",
        "--selector",
        "app=mcp-server",
        "--otel-collector",
        COLLECTOR,
    ]));
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["kind"], "WasmPlugin");
    let config = plugin_config(&docs[0]["spec"]["pluginConfig"].to_string());
    assert!(config.audit_attributes);
    assert!(!config.hold_request_headers);
    let ef = &docs[1];
    assert_eq!(ef["kind"], "EnvoyFilter");
    assert_eq!(ef["metadata"]["name"], "mcp-guard-otel");
    assert_eq!(ef["metadata"]["namespace"], "mcp");
    assert_eq!(
        ef["spec"]["workloadSelector"]["labels"]["app"],
        "mcp-server"
    );
    let patches = ef["spec"]["configPatches"].as_array().unwrap();
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0]["match"]["context"], "SIDECAR_INBOUND");
    assert_eq!(
        patches[0]["patch"]["value"]["typed_config"]["access_log"],
        Value::Array(vec![shipped_logger(ISTIO_CLUSTER)])
    );
}

#[test]
fn envoy_gateway_adds_a_collector_cluster_and_the_logger_by_patch() {
    let docs = docs(&render(&[
        "--format",
        "envoy-gateway",
        "--otel-collector",
        COLLECTOR,
    ]));
    assert_eq!(docs.len(), 2);
    let config = plugin_config(&docs[0]["spec"]["wasm"][0]["config"].to_string());
    assert!(config.audit_attributes);
    let patches = docs[1]["spec"]["jsonPatches"].as_array().unwrap();
    assert_eq!(patches.len(), 3, "stop iteration, cluster, access log");
    let cluster = &patches[1];
    assert_eq!(
        cluster["type"],
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    );
    // Envoy Gateway adds a whole resource for op add with an empty path.
    assert_eq!(
        (&cluster["operation"]["op"], &cluster["operation"]["path"]),
        (&Value::from("add"), &Value::from(""))
    );
    let c = &cluster["operation"]["value"];
    assert_eq!(c["name"], "mcp-guard-otel-collector");
    assert_eq!(
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"],
        serde_json::json!({"address": "otel-collector.observability.svc.cluster.local", "port_value": 4317})
    );
    assert!(c["typed_extension_protocol_options"]
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]
        .get("http2_protocol_options")
        .is_some());
    let log = &patches[2];
    assert_eq!(log["name"], "default/eg/http");
    assert_eq!(log["operation"]["op"], "add");
    assert_eq!(
        log["operation"]["jsonPath"],
        "$..filters[?(@.name=='envoy.filters.network.http_connection_manager')]"
    );
    assert_eq!(log["operation"]["path"], "/typed_config/access_log/-");
    assert_eq!(
        log["operation"]["value"],
        shipped_logger("mcp-guard-otel-collector")
    );
}

#[test]
fn ecds_and_bad_collectors_are_refused() {
    let o = render(&["--format", "ecds", "--otel-collector", COLLECTOR]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("envoy/envoy-otel.yaml"), "{err}");
    for bad in ["collector", "host:0", "host:70000", "ho st:4317", ":4317"] {
        let o = render(&["--format", "istio", "--otel-collector", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(o.stdout.is_empty(), "{bad}");
    }
}

#[test]
fn a_file_that_turns_audit_attributes_off_is_refused() {
    let dir = std::env::temp_dir().join(format!("mcp-guard-otel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("off.json");
    std::fs::write(
        &file,
        r#"{"policy": {"agents": {}}, "audit_attributes": false}"#,
    )
    .unwrap();
    let o = Command::new(BIN)
        .arg("render")
        .arg(&file)
        .args(["--format", "istio", "--otel-collector", COLLECTOR])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("audit_attributes"), "{err}");
}
