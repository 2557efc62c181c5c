//! `mcp-guard pin` and `mcp-guard report` end to end: saved lists, a live MCP server (the
//! official Python SDK demo server, examples/sdk/py2/server.py, when the project venv exists),
//! and audit logs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
use common::*;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ECHO: &str = r#"{"name":"echo","description":"Echo the input","inputSchema":{"type":"object","properties":{"text":{"type":"string"}}},"_meta":{"x":1}}"#;
const ADD: &str = r#"{"name":"add","title":"Add","inputSchema":{"type":"object"},"annotations":{"readOnlyHint":true}}"#;

fn hash(entry: &str) -> String {
    mcp_guard::pins::definition_hash(entry).unwrap()
}

#[test]
fn pin_prints_the_filters_hashes_from_a_saved_list() {
    let dir = TempDir::new("pin", "saved");
    let response =
        format!(r#"{{"jsonrpc":"2.0","id":2,"result":{{"tools":[{ECHO}],"nextCursor":"p2"}}}}"#);
    let page2 = format!(r#"{{"tools":[{ADD}]}}"#);
    let file = dir.file("list.json", &format!("{response}\n{page2}\n"));
    let o = run(&["pin", &file]);
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"tool_pins": {"add": hash(ADD), "echo": hash(ECHO)}})
    );
    // The same from standard input, as YAML.
    let o = run_stdin(
        &["pin", "-", "--format", "yaml"],
        &format!("[{response}, {page2}]"),
    );
    assert!(o.status.success(), "{}", err(&o));
    let y = out(&o);
    assert!(y.starts_with("tool_pins:\n"), "{y}");
    assert!(y.contains(&format!("  echo: {}\n", hash(ECHO))), "{y}");
    assert!(y.contains(&format!("  add: {}\n", hash(ADD))), "{y}");
}

#[test]
fn pin_refuses_what_it_cannot_pin() {
    for (input, want) in [
        (
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32601,\"message\":\"no\"}}",
            "error response",
        ),
        ("not json", "not JSON"),
        // A duplicated member: the filter cannot hash it, so there is no pin for it.
        (
            r#"{"tools":[{"name":"echo","description":"a","description":"b"}]}"#,
            "echo",
        ),
        // One name, two definitions.
        (
            r#"{"tools":[{"name":"x","description":"a"},{"name":"x","description":"b"}]}"#,
            "twice",
        ),
    ] {
        let o = run_stdin(&["pin", "-"], input);
        assert_eq!(o.status.code(), Some(1), "{input}: {}", err(&o));
        assert!(out(&o).is_empty());
        assert!(err(&o).contains(want), "{input}: {}", err(&o));
    }
    let o = run(&["pin", "/nonexistent/list.json"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["pin"]);
    assert_eq!(o.status.code(), Some(2), "a file or --url is required");
}

#[test]
fn pin_url_reports_an_unreachable_server() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let o = run(&["pin", "--url", &url, "--timeout", "5"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("initialize"), "{}", err(&o));
}

/// The official Python SDK demo server on a free port, killed on drop.
struct DemoServer {
    child: Child,
    port: u16,
}

impl DemoServer {
    /// `script` (under examples/) with `args`; `None` when the project venv (make venv) is
    /// missing.
    fn start(script: &str, args: &[&str]) -> Option<DemoServer> {
        let python = repo().join(".venv/bin/python");
        if !python.exists() {
            eprintln!("skipped: {} is missing (make venv)", python.display());
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(python)
            .arg(repo().join("examples").join(script))
            .args(["--port", &port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = DemoServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the demo server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(server)
    }
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn pin_url_lists_a_live_sdk_server() {
    // The SDK's default: every POST answered with an SSE stream.
    let Some(server) = DemoServer::start("sdk/py2/server.py", &[]) else {
        return;
    };
    let o = run(&[
        "pin",
        "--url",
        &server.url(),
        "--header",
        "x-agent-id: demo-agent",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    let pins = v["tool_pins"].as_object().unwrap();
    let mut names: Vec<&str> = pins.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["add", "countdown", "delete_repo", "echo", "fail", "search"]
    );
    for (tool, h) in pins {
        let h = h.as_str().unwrap();
        assert!(
            h.len() == 71
                && h.starts_with("sha256:")
                && h[7..]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "{tool}: {h}"
        );
    }
    // A second session lists the same definitions.
    let again = run(&["pin", "--url", &server.url()]);
    assert_eq!(out(&again), out(&o));
    // The same server answering application/json: the same definitions, the same pins.
    let json_server = DemoServer::start("demo_server.py", &["--json-response"]).unwrap();
    let json = run(&["pin", "--url", &json_server.url(), "--format", "json"]);
    assert!(json.status.success(), "{}", err(&json));
    assert_eq!(out(&json), out(&o));
    // A path the server does not serve: the HTTP status is reported.
    let bad = run(&[
        "pin",
        "--url",
        &format!("http://127.0.0.1:{}/nope", server.port),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(err(&bad).contains("HTTP 404"), "{}", err(&bad));
}

/// A log with what a short scenario leaves: two agents, allowed and denied calls, a
/// rate-limited call, a tool error, a drift, a refused request and a line that is not JSON.
const LOG: &str = concat!(
    r#"{"timestamp":"2026-12-03T10:00:00.100Z","agent_id":"demo-agent","server_id":"demo","server_name":"demo-server","server_version":"1.2.0","method":"initialize","tool_name":null,"decision":"allow","output_status":"success","error_code":null,"protocol_version":null}"#,
    "\n",
    r#"{"timestamp":"2026-12-03T10:00:01.000Z","agent_id":"demo-agent","server_id":"demo","server_name":"demo-server","server_version":"1.2.0","method":"tools/call","tool_name":"echo","decision":"allow","output_status":"success","error_code":null,"protocol_version":"2025-11-25"}"#,
    "\n",
    r#"{"timestamp":"2026-12-03T10:00:02.000Z","agent_id":"demo-agent","server_id":"demo","server_name":"demo-server","server_version":"1.2.0","method":"tools/call","tool_name":"fail","decision":"allow","output_status":"tool_error","error_code":null,"protocol_version":"2025-11-25"}"#,
    "\n",
    r#"{"timestamp":"2026-12-03T10:00:03.000Z","agent_id":"readonly-agent","server_id":"demo","server_name":"demo-server","server_version":"1.2.0","method":"tools/call","tool_name":"delete_repo","decision":"deny","output_status":"denied","error_code":-32003,"protocol_version":"2025-11-25"}"#,
    "\n",
    r#"{"timestamp":"2026-12-03T10:00:04.000Z","agent_id":"demo-agent","server_id":"demo","server_name":"demo-server","server_version":"1.2.0","method":"tools/call","tool_name":"search","decision":"allow","output_status":"rate_limited","error_code":-32004,"protocol_version":"2025-11-25"}"#,
    "\n",
    r#"{"timestamp":"2026-12-03T10:00:05.000Z","agent_id":"demo-agent","server_id":"demo","server_name":"demo-server","server_version":"1.3.0","method":"tools/list","tool_name":null,"decision":"allow","output_status":"success","error_code":null,"protocol_version":"2025-11-25","drift":[{"tool":"echo","hash":"sha256:aa","pin":"sha256:bb"}]}"#,
    "\n",
    r#"{"timestamp":"2026-12-03T09:59:59.999Z","decision":"refused","reason":"proxy_rejected","output_status":"refused","latency_ms":0,"http_status":400}"#,
    "\n",
    "not json\n",
);

#[test]
fn report_summarises_a_log_as_json_and_text() {
    let dir = TempDir::new("pin", "report");
    let log = dir.file("access.log", LOG);
    let o = run(&["report", "--json", &log]);
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["lines"]["total"], 8);
    assert_eq!(v["lines"]["records"], 7);
    assert_eq!(v["lines"]["invalid"], 1);
    assert_eq!(v["first_timestamp"], "2026-12-03T09:59:59.999Z");
    assert_eq!(v["last_timestamp"], "2026-12-03T10:00:05.000Z");
    assert_eq!(v["rate_limited"], 1);
    let server = &v["servers"][0];
    assert_eq!(server["server_id"], "demo");
    assert_eq!(server["versions"].as_array().unwrap().len(), 2);
    assert_eq!(server["protocol_versions"]["2025-11-25"], 5);
    let agents = v["agents"].as_array().unwrap();
    assert_eq!(agents[0]["agent_id"], "demo-agent");
    assert_eq!(agents[0]["calls"], 5);
    assert_eq!(agents[0]["tools"].as_array().unwrap().len(), 3);
    assert_eq!(agents[1]["agent_id"], "readonly-agent");
    assert_eq!(agents[1]["denied"], 1);
    let denials = v["denials"].as_array().unwrap();
    assert_eq!(denials.len(), 2);
    assert!(denials.contains(
        &serde_json::json!({"reason": "policy", "deny": 1, "dry_run_deny": 0, "refused": 0})
    ));
    assert!(denials.contains(
        &serde_json::json!({"reason": "proxy_rejected", "deny": 0, "dry_run_deny": 0, "refused": 1})
    ));
    let fail = v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tool"] == "fail")
        .unwrap();
    assert_eq!(fail["error_rate"], 1.0);
    assert_eq!(v["drift"]["tools"][0]["tool"], "echo");
    assert_eq!(v["drift"]["tools"][0]["hash"], "sha256:aa");

    // The same log from standard input, as text.
    let o = run_stdin(&["report", "-"], LOG);
    assert!(o.status.success(), "{}", err(&o));
    let t = out(&o);
    for want in [
        "audit log: <stdin>",
        "lines: 8 (7 records, 1 invalid, 0 over 1048576 bytes)",
        "period: 2026-12-03T09:59:59.999Z .. 2026-12-03T10:00:05.000Z",
        "calls: 7 (rate-limited 1)",
        "demo-server",
        "readonly-agent",
        "proxy_rejected",
        "100.0%",
        "sha256:aa",
    ] {
        assert!(t.contains(want), "{want} not in\n{t}");
    }
    let o = run(&["report", "/nonexistent/access.log"]);
    assert_eq!(o.status.code(), Some(2));
}
