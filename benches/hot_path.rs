//! Criterion micro-benchmarks of mcp-guard's hot path, run natively (`make bench` runs them
//! before the Envoy benchmark; alone: `cargo bench --bench hot_path`).
//!
//! - `request_parser/*`: `jsonrpc::parse_body` on the bench request bodies (bench/data/);
//! - `policy/*`: `Policy::decide` for the demo policy;
//! - `sse_scanner/*` and `response_scanner/*`: the streaming SSE and JSON-RPC response scanners on
//!   a 10 MB single-event tool result fed in 64 KiB chunks, and on the 1 KB call response;
//! - `curation/*`: `curation::rewrite_document` / `curate_json` / `rewrite_sse` on a 100-tool
//!   `tools/list` (and `curate_json` with tool pins, every entry hashed);
//! - `filter/*`: one whole HTTP stream through `filter::Stream` with an in-memory host (request
//!   headers, body, response headers, body, end), what the Wasm glue drives per request.
//!
//! The stream benches drive the crate's one fake host (`mcp_guard::host::fake::FakeHost`, feature
//! `fake-host`, which the dev-dependency on this crate turns on). Its counting global allocator
//! measures, for each benchmark, the heap allocations and bytes of
//! one iteration (the average of 50 after a warm-up call). They are written with the bytes per
//! iteration to `target/bench/micro.json` (or `$MCP_GUARD_BENCH_META`), which bench/run.py
//! joins with criterion's medians (target/criterion/<id>/new/estimates.json). For `filter/*`
//! the count includes the copies the host makes (`request_body`/`response_body` return owned
//! buffers, as the proxy-wasm hostcalls do).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use criterion::{BenchmarkId, Criterion, Throughput};
use mcp_guard::config::Config;
use mcp_guard::curation::{self, ListKind, Rewrite};
use mcp_guard::filter::Stream;
use mcp_guard::host::fake::{CountingAlloc, FakeHost, Meter, SharedStore};
use mcp_guard::host::Action;
use mcp_guard::jsonrpc::{self, Id};
use mcp_guard::policy::Subject;
use mcp_guard::response::{BodyKind, Correlator, ResponseScanner};
use mcp_guard::sse::{EventSink, SseScanner};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::rc::Rc;

// ------------------------------------------------------------------ counting allocator

// The one counting allocator of the crate's test support (src/host/fake.rs).
#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Per benchmark id: bytes per iteration (for MB/s), allocations and allocated bytes per
/// iteration, and what it measures.
#[derive(Default)]
struct Meta(BTreeMap<String, serde_json::Value>);

impl Meta {
    /// Counts the allocations of `f` (average of 50 calls after one warm-up call) and records them.
    fn record<R>(&mut self, id: &str, bytes: usize, what: &str, mut f: impl FnMut() -> R) {
        black_box(f());
        const N: u64 = 50;
        let meter = Meter::start();
        for _ in 0..N {
            black_box(f());
        }
        let allocs = meter.allocs() as f64 / N as f64;
        let alloc_bytes = meter.allocated() as f64 / N as f64;
        self.0.insert(
            id.to_owned(),
            serde_json::json!({
                "bytes": bytes,
                "allocs": (allocs * 10.0).round() / 10.0,
                "alloc_bytes": alloc_bytes.round(),
                "what": what,
            }),
        );
    }
}

// ------------------------------------------------------------------ inputs

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn data(name: &str) -> Vec<u8> {
    let path = root().join("bench/data").join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (python3 bench/gen_payloads.py --out bench/data)",
            path.display()
        )
    })
}

/// The demo policy (examples/policy.json) with `max_batch_calls: 10`, as `make bench` runs it.
fn config() -> Config {
    let text = std::fs::read(root().join("examples/policy.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_slice(&text).unwrap();
    value["max_batch_calls"] = serde_json::json!(10);
    Config::from_json(&serde_json::to_vec(&value).unwrap()).unwrap()
}

/// One 10 MB SSE event carrying a tools/call result (as bench/gen_payloads.py --big-out).
fn big_sse() -> Vec<u8> {
    let head: &[u8] =
        b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"";
    let tail: &[u8] = b"\"}],\"isError\":false}}\n\n";
    let total = 10 * 1024 * 1024;
    let alphabet = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/";
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(head);
    while out.len() < total - tail.len() {
        let n = (total - tail.len() - out.len()).min(alphabet.len());
        out.extend_from_slice(&alphabet[..n]);
    }
    out.extend_from_slice(tail);
    out
}

/// A tools/call whose `arguments.text` is about 1 MiB.
fn call_1mib() -> Vec<u8> {
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(1024 * 1024 / 45);
    serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": text}}
    }))
    .unwrap()
}

const CHUNK: usize = 64 * 1024;

struct NullSink(u64);

impl EventSink for NullSink {
    fn data(&mut self, bytes: &[u8]) {
        self.0 += bytes.len() as u64;
    }
    fn data_line_end(&mut self) {}
    fn dispatch(&mut self) {
        self.0 += 1;
    }
}

// ------------------------------------------------------------------ in-memory host

/// A request as the bench's wrk client sends it.
fn host_for(body: &[u8], protocol: &str) -> FakeHost {
    let mut h = FakeHost::new(SharedStore::default(), 1_700_000_000_000);
    h.upstream_cluster = Some("upstream".to_owned());
    h.lean = true; // no copies or stat names the filter does not cause
    for (k, v) in [
        (":method", "POST"),
        (":path", "/mcp"),
        (":authority", "127.0.0.1"),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("x-agent-id", "demo-agent"),
        ("mcp-protocol-version", protocol),
    ] {
        h.request_headers.insert(k.to_owned(), v.to_owned());
    }
    h.request_body = body.to_vec();
    h
}

/// One whole stream: request headers and body, then the response in `chunk`-byte pieces.
/// Returns the audit bytes written (so nothing is optimized away).
fn run_stream(
    config: &Rc<Config>,
    host: &mut FakeHost,
    content_type: &str,
    response: &[u8],
    chunk: usize,
) -> usize {
    host.response_headers.clear();
    host.audit_len = 0;
    host.replaced_len = 0;
    let mut stream = Stream::new(Rc::clone(config));
    stream.on_request_headers(host, false);
    let len = host.request_body.len();
    stream.on_request_body(host, len, true);
    assert!(host.local_reply.is_none(), "the bench request was refused");
    host.response_headers
        .insert(":status".to_owned(), "200".to_owned());
    host.response_headers
        .insert("content-type".to_owned(), content_type.to_owned());
    stream.on_response_headers(host, false);
    // Envoy's semantics: after the filter paused on a chunk, the next callback sees the whole
    // buffered body so far (as curation needs it), otherwise only the new chunk.
    let mut pieces = response.chunks(chunk).peekable();
    let mut paused = false;
    while let Some(piece) = pieces.next() {
        if !paused {
            host.response_chunk.clear();
        }
        host.response_chunk.extend_from_slice(piece);
        let size = host.response_chunk.len();
        paused = stream.on_response_body(host, size, pieces.peek().is_none()) == Action::Pause;
    }
    stream.on_stream_end(host);
    host.audit_len
}

// ------------------------------------------------------------------ benchmarks

/// One whole-stream case of the `filter` group.
struct Case<'a> {
    name: &'a str,
    req: &'a [u8],
    protocol: &'a str,
    ctype: &'a str,
    resp: &'a [u8],
    what: &'a str,
}

fn bench_all(c: &mut Criterion, meta: &mut Meta) {
    let call = data("call_request.json");
    let batch = data("batch_request.json");
    let big_call = call_1mib();
    let cfg = config();

    // Request parser.
    let mut g = c.benchmark_group("request_parser");
    for (name, body, what) in [
        (
            "tools_call_1k",
            &call,
            "parse_body: tools/call, 1 KB arguments",
        ),
        ("batch10", &batch, "parse_body: batch of 10 tools/call"),
        (
            "tools_call_1mib",
            &big_call,
            "parse_body: tools/call, 1 MiB arguments",
        ),
    ] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        meta.record(&format!("request_parser/{name}"), body.len(), what, || {
            jsonrpc::parse_body(body, cfg.max_json_depth).map(|b| b.messages().len())
        });
        g.bench_function(name, |b| {
            b.iter(|| {
                jsonrpc::parse_body(black_box(body), cfg.max_json_depth).map(|b| b.messages().len())
            })
        });
    }
    g.finish();

    // Policy match.
    let mut g = c.benchmark_group("policy");
    for (name, agent, tool) in [
        ("allow_demo_agent_echo", "demo-agent", "echo"),
        ("deny_demo_agent_delete_repo", "demo-agent", "delete_repo"),
        ("default_agent_echo", "someone-else", "echo"),
    ] {
        let what = format!("Policy::decide({agent}, tools/call {tool})");
        meta.record(&format!("policy/{name}"), 0, &what, || {
            cfg.policy.decide(agent, Subject::Tool(tool))
        });
        g.bench_function(name, |b| {
            b.iter(|| {
                cfg.policy
                    .decide(black_box(agent), Subject::Tool(black_box(tool)))
            })
        });
    }
    g.finish();

    // SSE scanner and response scanner on a 10 MB event, 64 KiB chunks.
    let big = big_sse();
    let id = Id::from_raw("1").unwrap();
    let mut g = c.benchmark_group("sse_scanner");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(big.len() as u64));
    let scan_raw = || {
        let mut s = SseScanner::new();
        let mut sink = NullSink(0);
        for piece in big.chunks(CHUNK) {
            s.feed(piece, &mut sink);
        }
        s.finish(&mut sink);
        sink.0
    };
    meta.record(
        "sse_scanner/event_10mb",
        big.len(),
        "SseScanner: one 10 MB event, 64 KiB chunks",
        scan_raw,
    );
    g.bench_function("event_10mb", |b| b.iter(scan_raw));
    let scan_full = || {
        let mut s = ResponseScanner::new(BodyKind::EventStream);
        let mut corr = Correlator::new(vec![id.clone()]);
        for piece in big.chunks(CHUNK) {
            s.feed(piece, &mut corr);
        }
        s.finish(&mut corr);
        corr.outcome(&id)
    };
    meta.record(
        "sse_scanner/response_10mb",
        big.len(),
        "ResponseScanner (SSE + JSON-RPC correlation): one 10 MB event, 64 KiB chunks",
        scan_full,
    );
    g.bench_function("response_10mb", |b| b.iter(scan_full));
    g.finish();

    let call_resp = data("call_response.json");
    let mut g = c.benchmark_group("response_scanner");
    g.throughput(Throughput::Bytes(call_resp.len() as u64));
    let scan_json = || {
        let mut s = ResponseScanner::new(BodyKind::Json);
        let mut corr = Correlator::new(vec![id.clone()]);
        s.feed(&call_resp, &mut corr);
        s.finish(&mut corr);
        corr.outcome(&id)
    };
    meta.record(
        "response_scanner/call_json_1k",
        call_resp.len(),
        "ResponseScanner: 1 KB JSON call response",
        scan_json,
    );
    g.bench_function("call_json_1k", |b| b.iter(scan_json));
    g.finish();

    // tools/list curation.
    let list = data("list_response.json");
    let list_text = std::str::from_utf8(&list).unwrap();
    let list_sse = data("list_response.sse");
    let ids = vec![id.clone()];
    // As the filter decides each entry (filter.rs curate_held): the policy's decision for it.
    let keep = |name: &str| {
        !cfg.policy
            .decide("demo-agent", Subject::Tool(name))
            .blocks()
    };
    let mut g = c.benchmark_group("curation");
    g.throughput(Throughput::Bytes(list.len() as u64));
    let doc = || {
        let mut stats = Rewrite::default();
        curation::rewrite_document(list_text, ListKind::Tools, &ids, &keep, &mut stats)
            .map(|s| s.len())
    };
    meta.record(
        "curation/rewrite_document_100_tools",
        list.len(),
        "rewrite_document: tools/list of 100 tools to demo-agent's 4",
        doc,
    );
    g.bench_function("rewrite_document_100_tools", |b| b.iter(doc));
    // What the filter runs on a held JSON list: the checks (one document, ids, shape) and then
    // rewrite_document.
    let curate = || {
        let mut stats = Rewrite::default();
        match curation::curate_json(&list, ListKind::Tools, &ids, &keep, &mut stats) {
            curation::Curation::Rewritten(out) => out.len(),
            _ => 0,
        }
    };
    meta.record(
        "curation/curate_json_100_tools",
        list.len(),
        "curate_json: the same list checked, then rewritten",
        curate,
    );
    g.bench_function("curate_json_100_tools", |b| b.iter(curate));
    // The same with tool pins active (`learn_pins`, nothing learned yet): every entry is also
    // hashed (RFC 8785 + SHA-256, mcp_guard::pins) as the curation pass meets it.
    let learn = mcp_guard::pins::PinConfig {
        learn_pins: true,
        ..Default::default()
    };
    let pinned = || {
        let check = mcp_guard::pins::ListCheck::new(&learn, Ok(BTreeMap::new()), false);
        let keep = PinnedKeep {
            check: &check,
            keep: &keep,
        };
        let mut stats = Rewrite::default();
        match curation::curate_json(&list, ListKind::Tools, &ids, &keep, &mut stats) {
            curation::Curation::Rewritten(out) => out.len() + check.first_sightings().len(),
            _ => 0,
        }
    };
    meta.record(
        "curation/curate_json_100_tools_pinned",
        list.len(),
        "curate_json with tool pins: each of the 100 entries hashed as well",
        pinned,
    );
    g.bench_function("curate_json_100_tools_pinned", |b| b.iter(pinned));
    let sse = || {
        let mut stats = Rewrite::default();
        curation::rewrite_sse(&list_sse, ListKind::Tools, &ids, &keep, &mut stats).map(|s| s.len())
    };
    meta.record(
        "curation/rewrite_sse_100_tools",
        list_sse.len(),
        "rewrite_sse: the same list as one SSE event",
        sse,
    );
    g.bench_function("rewrite_sse_100_tools", |b| b.iter(sse));
    g.finish();

    // Whole streams through the filter state machine.
    let cfg = Rc::new(cfg);
    let list_req = data("list_request.json");
    let call_sse = data("call_response.sse");
    let batch_resp = data("batch_response.json");
    let mut g = c.benchmark_group("filter");
    let cases = [
        Case {
            name: "tools_call_json",
            req: &call,
            protocol: "2025-06-18",
            ctype: "application/json",
            resp: &call_resp,
            what: "filter::Stream: tools/call 1 KB + JSON response (allowed, tagged, audited)",
        },
        Case {
            name: "tools_call_sse",
            req: &call,
            protocol: "2025-06-18",
            ctype: "text/event-stream",
            resp: &call_sse,
            what: "filter::Stream: tools/call 1 KB + SSE response",
        },
        Case {
            name: "tools_list_curated",
            req: &list_req,
            protocol: "2025-06-18",
            ctype: "application/json",
            resp: &list,
            what: "filter::Stream: tools/list + 100-tool JSON response, curated",
        },
        Case {
            name: "batch10",
            req: &batch,
            protocol: "2025-03-26",
            ctype: "application/json",
            resp: &batch_resp,
            what: "filter::Stream: batch of 10 tools/call + JSON array response",
        },
        Case {
            name: "tools_call_sse_10mb",
            req: &call,
            protocol: "2025-06-18",
            ctype: "text/event-stream",
            resp: &big,
            what: "filter::Stream: tools/call + one 10 MB SSE event in 64 KiB chunks",
        },
    ];
    for Case {
        name,
        req,
        protocol,
        ctype,
        resp,
        what,
    } in cases
    {
        let chunk = CHUNK;
        let mut host = host_for(req, protocol);
        if resp.len() > 1 << 20 {
            g.sample_size(10);
        }
        g.throughput(Throughput::Bytes((req.len() + resp.len()) as u64));
        let written = run_stream(&cfg, &mut host, ctype, resp, chunk);
        assert!(written > 0, "{name}: no audit record");
        if name == "tools_list_curated" {
            assert!(
                host.replaced_len > 0 && host.replaced_len < resp.len(),
                "{name}: the list was not curated"
            );
        }
        meta.record(
            &format!("filter/{name}"),
            req.len() + resp.len(),
            what,
            || run_stream(&cfg, &mut host, ctype, resp, chunk),
        );
        g.bench_with_input(BenchmarkId::from_parameter(name), &(), |b, _| {
            b.iter(|| run_stream(&cfg, &mut host, ctype, resp, chunk))
        });
    }
    g.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let mut meta = Meta::default();
    bench_all(&mut criterion, &mut meta);
    criterion.final_summary();
    let out = std::env::var_os("MCP_GUARD_BENCH_META")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/bench/micro.json"));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let json = serde_json::Value::Object(meta.0.into_iter().collect());
    std::fs::write(&out, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    eprintln!("allocation counts: {}", out.display());
}

/// The filter's keep decision under tool pins (filter/response.rs `ListKeep`): the pin check of
/// the entry, then the policy.
struct PinnedKeep<'a> {
    check: &'a mcp_guard::pins::ListCheck<'a>,
    keep: &'a dyn Fn(&str) -> bool,
}

impl curation::Keep for PinnedKeep<'_> {
    fn keep(&self, name: &str, entry: &str) -> bool {
        self.check.entry(name, entry) && (self.keep)(name)
    }
}
