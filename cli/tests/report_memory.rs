//! `mcp-guard report` reads an audit log in constant memory: a log streamed through standard
//! input from a generator, with more distinct agents, tools and servers than the report's
//! tables keep, leaves the same peak RSS at 20 000 and at 200 000 lines.
//!
//! Its own test binary, so that no other test's child runs in this process; the peak RSS of
//! the child is read from wait4(2).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mcp-guard");

/// One generated audit record; agents, tools and servers cycle through more distinct values
/// than the report keeps (MAX_AGENTS 256, MAX_TOOLS 256, MAX_SERVERS 64).
fn record(i: u64) -> String {
    let decision = if i.is_multiple_of(7) { "deny" } else { "allow" };
    let status = match i % 7 {
        0 => "denied",
        1 => "error",
        2 => "rate_limited",
        _ => "success",
    };
    format!(
        concat!(
            r#"{{"timestamp":"2026-12-03T10:{:02}:{:02}.{:03}Z","agent_id":"agent-{}","identity_source":"header","#,
            r#""identity_error":null,"server_id":"server-{}","server_name":"srv-{}","server_version":"1.{}","#,
            r#""method":"tools/call","http_method":"POST","tool_name":"tool-{}","prompt_name":null,"#,
            r#""resource_uri":null,"request_id":{},"input_hash":null,"decision":"{}","output_status":"{}","#,
            r#""error_code":null,"latency_ms":3,"http_status":200,"session_id":"s-{}","trace_id":null,"#,
            r#""policy_name":null,"policy_version":null,"protocol_version":"2025-11-25","#,
            r#""drift":[{{"tool":"tool-{}","hash":"sha256:{:064x}","pin":null}}]}}"#,
            "\n"
        ),
        (i / 60_000) % 60,
        (i / 1000) % 60,
        i % 1000,
        i % 1500,
        i % 100,
        i % 100,
        i % 20,
        i % 3000,
        i,
        decision,
        status,
        i,
        i % 2000,
        i
    )
}

/// Runs `report --json -` over `lines` generated records; (its peak RSS in KiB, its output).
// The child is reaped by wait4(2), which also gives its rusage; Child::wait cannot.
#[allow(clippy::zombie_processes)]
fn report(lines: u64) -> (i64, serde_json::Value) {
    let mut child = Command::new(BIN)
        .args(["report", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // The output is read on a thread so that a full stdout pipe cannot stall the child.
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).map(|_| out)
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut chunk = String::with_capacity(1 << 16);
    for i in 0..lines {
        chunk.push_str(&record(i));
        if chunk.len() >= 1 << 16 {
            stdin.write_all(chunk.as_bytes()).unwrap();
            chunk.clear();
            assert!(Instant::now() < deadline, "generator too slow");
        }
    }
    stdin.write_all(chunk.as_bytes()).unwrap();
    drop(stdin);
    let out = reader.join().unwrap().unwrap();
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: rusage is a plain C struct, zero is a valid value; wait4 writes into both
    // out-parameters, which live for the call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    (usage.ru_maxrss, serde_json::from_str(&out).unwrap())
}

#[test]
fn report_runs_in_constant_memory() {
    let (small_rss, small) = report(20_000);
    let (large_rss, large) = report(200_000);
    // The whole log was read, and every table is at its bound with the rest under other.
    assert_eq!(small["lines"]["records"], 20_000);
    assert_eq!(large["lines"]["records"], 200_000);
    assert_eq!(large["lines"]["invalid"], 0);
    assert_eq!(large["agents"].as_array().unwrap().len(), 256);
    assert_eq!(large["tools"].as_array().unwrap().len(), 256);
    assert_eq!(large["servers"].as_array().unwrap().len(), 64);
    assert_eq!(large["calls"], 200_000);
    let tools_total: u64 = large["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["calls"].as_u64().unwrap())
        .sum::<u64>()
        + large["tools_other"]["calls"].as_u64().unwrap();
    assert_eq!(tools_total, 200_000);
    eprintln!("peak RSS: {small_rss} KiB at 20k lines, {large_rss} KiB at 200k");
    // Ten times the input, the same peak (within 2 MiB of allocator noise).
    assert!(
        large_rss <= small_rss + 2048,
        "peak RSS grew with the input: {small_rss} KiB at 20k lines, {large_rss} KiB at 200k"
    );
}
