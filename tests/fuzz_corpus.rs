//! Replays the fuzz seed corpora through the fuzz targets' checks, on stable and without
//! libFuzzer, so `cargo test` exercises every target on real SDK traffic.
//!
//! The checks live in `fuzz/src/lib.rs` (the cargo-fuzz crate's library), compiled here as a
//! module: one definition for `make fuzz` and for this test. Inputs replayed:
//! - `fuzz/corpus/<target>/*`: the committed seeds (`scripts/capture_corpus.py` writes them);
//! - `fuzz/regressions/<target>/*`: inputs that once failed (minimized crashes), if any;
//! - `tests/e2e/data/sse/*`: raw SSE captures of other SDK servers, if present, as
//!   `sse_scanner` and `response_scanner` inputs.

#![allow(clippy::unwrap_used)] // test code: a missing corpus file should fail loudly

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz_targets;

use std::path::{Path, PathBuf};

#[global_allocator]
static ALLOC: fuzz_targets::CountingAlloc = fuzz_targets::CountingAlloc;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

fn replay(target: &str, run: fuzz_targets::Target) -> usize {
    let mut n = 0;
    for sub in ["fuzz/corpus", "fuzz/regressions"] {
        for path in files(&Path::new(REPO).join(sub).join(target)) {
            let data = std::fs::read(&path).unwrap();
            eprintln!("replaying {}", path.display());
            run(&data);
            n += 1;
        }
    }
    n
}

fn target(name: &str) -> fuzz_targets::Target {
    fuzz_targets::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap()
}

#[test]
fn counting_allocator_is_installed() {
    assert!(fuzz_targets::counting_installed());
}

#[test]
fn request_parser_corpus() {
    let n = replay("request_parser", target("request_parser"));
    assert!(n >= 5, "only {n} request_parser seeds");
}

#[test]
fn sse_scanner_corpus() {
    let n = replay("sse_scanner", target("sse_scanner"));
    assert!(n >= 3, "only {n} sse_scanner seeds");
}

#[test]
fn response_scanner_corpus() {
    let n = replay("response_scanner", target("response_scanner"));
    assert!(n >= 3, "only {n} response_scanner seeds");
}

/// The serde_json oracle of `response_scanner` must cover real SDK responses (else its check
/// would pass vacuously).
#[test]
fn response_oracle_covers_sdk_responses() {
    use mcp_guard::response::BodyKind;
    let dir = Path::new(REPO).join("fuzz/corpus/response_scanner");
    let (mut seeds, mut covered) = (0, 0);
    for path in files(&dir) {
        let data = std::fs::read(&path).unwrap();
        let Some((&kind, body)) = data.split_first() else {
            continue;
        };
        let kind = if kind == b'J' {
            BodyKind::Json
        } else {
            BodyKind::EventStream
        };
        seeds += 1;
        covered += usize::from(fuzz_targets::oracle_fingerprint(kind, body).is_some());
    }
    assert!(
        covered * 10 >= seeds * 9,
        "oracle covers {covered} of {seeds} seeds"
    );
}

#[test]
fn stream_corpus() {
    let n = replay("stream", target("stream"));
    assert!(n >= 3, "only {n} stream seeds");
}

#[test]
fn other_sdk_sse_captures() {
    for path in files(&Path::new(REPO).join("tests/e2e/data/sse")) {
        let data = std::fs::read(&path).unwrap();
        eprintln!("replaying {}", path.display());
        fuzz_targets::sse_scanner(&data);
        let mut tagged = b"S".to_vec();
        tagged.extend_from_slice(&data);
        fuzz_targets::response_scanner(&tagged);
    }
}

/// Large bodies: the scanners' heap bound must hold far beyond what a short fuzzing run
/// reaches (libFuzzer grows inputs slowly).
#[test]
fn large_responses_stay_within_the_heap_bound() {
    let big = "x".repeat(256 * 1024);
    let sse = format!(
        "event: message\r\ndata: {{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{{\"content\":[{{\"text\":\"{big}\"}}],\"isError\":true}}}}\r\n\r\n"
    );
    let deep = format!("{}{}", "[{\"a\":".repeat(2000), "1}]".repeat(2000));
    let long_id = format!("{{\"jsonrpc\":\"2.0\",\"id\":\"{big}\",\"result\":{{}}}}");
    for (prefix, body) in [
        ("S", sse.as_str()),
        ("T", sse.as_str()),
        ("J", deep.as_str()),
        ("J", long_id.as_str()),
    ] {
        fuzz_targets::response_scanner(format!("{prefix}{body}").as_bytes());
    }
    fuzz_targets::sse_scanner(sse.as_bytes());
    fuzz_targets::sse_scanner(&b"\r\n\rdata:\r".repeat(30_000));
}

/// Hand-made inputs for paths SDK traffic never takes (rate limit rewrite, early replies,
/// trailers, odd statuses), so the replay covers them even before any fuzzing.
#[test]
fn synthetic_stream_inputs() {
    let call = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
    let sse = b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"isError\":false}}\r\n\r\n";
    for c0 in [0u8, 0x40, 0x80, 0x20, 0x02, 0x03, 0x0c] {
        for status in 0u8..16 {
            for c5 in 0u8..16 {
                for ct in [0u8, 1, 4] {
                    let control = [c0, 0, 3, status, ct, c5, 4, status ^ c5];
                    fuzz_targets::stream(&fuzz_targets::stream_input(control, call, sse));
                    fuzz_targets::stream(&fuzz_targets::stream_input(control, b"", b""));
                }
            }
        }
    }
    // Every policy, with and without the 2026-07-28 routing headers and the GET server stream
    // that follows (correlation through shared data).
    for policy in 0u8..4 {
        for extra in [0u8, 0x04, 0x24, 0x40, 0x80, 0xc0] {
            let control = [0, policy | extra, 1, 0, 0, 0, 2, 9];
            fuzz_targets::stream(&fuzz_targets::stream_input(control, call, sse));
        }
    }
}
