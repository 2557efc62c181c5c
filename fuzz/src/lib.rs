//! The fuzz targets of mcp-guard, as plain functions over bytes.
//!
//! Each `fuzz/fuzz_targets/<name>.rs` binary is a one-line libFuzzer wrapper around the function
//! of the same name here, and `tests/fuzz_corpus.rs` in the main crate compiles this file (by
//! `#[path]`) to replay every seed in `fuzz/corpus/<name>/` under `cargo test` on stable. So the
//! checks below run in both places and exist once.
//!
//! A check that fails panics (that is how libFuzzer learns of it). What is checked:
//!
//! - [`request_parser`]: `jsonrpc::parse_body` never panics; a body it accepts is valid JSON
//!   whose `method`, `params.name`/`params.uri` and `id` agree with what serde_json reads; a body
//!   serde_json calls syntactically invalid is refused with -32700; every refusal has a
//!   JSON-RPC code and renders as a valid error response; a stricter depth limit never accepts
//!   what a looser one refuses. Peak heap stays within a constant factor of the body length (the
//!   body itself is capped by `max_body_bytes`).
//! - [`sse_scanner`]: `sse::SseScanner` reports the same events whether the stream comes in one
//!   chunk, byte by byte, or in pseudo-random chunks, and the same as a whole-input reference
//!   parser written from the WHATWG algorithm; feeding it allocates nothing at all.
//! - [`response_scanner`]: `response::ResponseScanner` + `Correlator` (JSON and SSE bodies) and
//!   the raw `JsonScanner` give identical results for every chunking; the heap they hold never
//!   exceeds [`RESPONSE_SCANNER_HEAP_BOUND`] whatever the body length.
//! - [`stream`]: a whole `filter::Stream` driven through the crate's one fake host
//!   (`mcp_guard::host::fake::FakeHost`, with its phase set before each callback), which models
//!   Envoy's buffering and records a hostcall made in the wrong phase: every stream that reaches the
//!   response (or a local reply) leaves audit records that are JSON objects, local replies and
//!   the 429 → JSON-RPC rewrite are valid JSON-RPC error bodies, and response chunks do not
//!   grow the heap the filter holds. Authorization ([`oracle`], serde_json readers independent
//!   of mcp-guard's parser): a forwarded request names only what the stream's agent may use and
//!   its tag headers say what it names, and the answer a client gets to a forwarded list
//!   request lists only entries the agent may use.
//!
//! Heap figures come from [`CountingAlloc`] (`mcp_guard::host::fake`, re-exported here), a
//! global allocator that counts live bytes per thread; every binary that calls these functions
//! installs it.
//!
//! Layout: one module per target (`request_parser.rs`, `sse_scanner.rs`,
//! `response_scanner.rs`, `stream.rs`), the authorization oracles in `oracle.rs`, and here what
//! they share: heap bounds and meters, chunkings, fingerprints, the target table.

// A fuzz harness reports a failed check by panicking (libFuzzer records the input); the
// filter's no-panic lints do not apply here.
#![allow(clippy::panic)]

pub mod oracle;
pub mod reference;

use mcp_guard::config::{Config, DEFAULT_MAX_JSON_DEPTH, MAX_MAX_JSON_DEPTH};
use mcp_guard::filter::{Stream, RATE_LIMITED};
use mcp_guard::host::fake::{FakeHost, Phase, SharedStore};
use mcp_guard::host::{Action, Host};
use mcp_guard::identity::{Presented, Source};
use mcp_guard::jsonrpc::{self, Body, Id, Kind, Message};
use mcp_guard::policy::{Decision, Mode, Subject};
use mcp_guard::response::{BodyKind, Correlator, JsonScanner, ResponseScanner, Summary};
use mcp_guard::sse::{EventSink, SseScanner};
use oracle::{ListAsk, Named};
use serde_json::value::RawValue;
use serde_json::Value;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

// ------------------------------------------------------------------------- heap accounting

pub use mcp_guard::host::fake::{counting_installed, CountingAlloc, Meter, Rng};

fn require_counting() {
    static CHECKED: AtomicUsize = AtomicUsize::new(0);
    if CHECKED.load(Ordering::Relaxed) == 0 {
        assert!(
            counting_installed(),
            "install mcp_guard_fuzz::CountingAlloc as the global allocator"
        );
        CHECKED.store(1, Ordering::Relaxed);
    }
}

/// Largest peak heap seen so far by each target (bytes), printed when it grows.
static MAX_SCANNER_HEAP: AtomicUsize = AtomicUsize::new(0);
static MAX_STREAM_HEAP: AtomicUsize = AtomicUsize::new(0);
static MAX_PARSER_RATIO: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    /// How many forwarded requests, and list responses, the authorization oracles checked on
    /// this thread (so a test can tell they do not pass vacuously; per thread, so that the
    /// tests of one binary, which run in parallel, cannot count each other's checks).
    static ORACLE_REQUESTS: Cell<usize> = const { Cell::new(0) };
    static ORACLE_LISTS: Cell<usize> = const { Cell::new(0) };
}

/// Forwarded requests and list responses the authorization oracles have checked so far on
/// this thread.
pub fn oracle_checks() -> (usize, usize) {
    (
        ORACLE_REQUESTS.with(Cell::get),
        ORACLE_LISTS.with(Cell::get),
    )
}

fn note_max(slot: &AtomicUsize, value: usize, what: &str) {
    if value > slot.fetch_max(value, Ordering::Relaxed)
        && std::env::var_os("MCP_GUARD_FUZZ_QUIET").is_none()
    {
        eprintln!("mcp-guard-fuzz: new maximum {what}: {value}");
    }
}

/// The heap the response scanner (no JSON stack: three parsed levels inline and a counter for
/// skipped values; an id capture ≤ `MAX_ID_LEN` = 768 bytes and one copy of it in the summary;
/// an escaped member name ≤ 44 bytes while it is decoded; a text event ≤ 512 bytes and its
/// lossy UTF-8 copy) and the correlator may hold or touch while a chunk is fed, whatever the
/// body size.
pub const RESPONSE_SCANNER_HEAP_BOUND: usize = 8192;
/// The heap a stream may gain over all response chunks that do not end it (the scanner and the
/// settled calls; the host's copy of the audit records is not counted).
pub const STREAM_RESPONSE_HEAP_BOUND: usize = 16 * 1024;
/// Peak heap of `parse_body` per byte of body (plus a constant): the parser borrows from the
/// body, so it may only copy out names and build one small struct per batch element.
pub const PARSER_HEAP_PER_BYTE: usize = 8;
const PARSER_HEAP_CONSTANT: usize = 64 * 1024;

// ------------------------------------------------------------------------- chunking

/// How a byte stream is cut into chunks.
#[derive(Debug, Clone)]
pub enum Chunking {
    /// One chunk.
    Whole,
    /// One byte per chunk.
    Bytewise,
    /// Sizes drawn uniformly from `1..=max`.
    Random { rng: Rng, max: usize },
}

/// Splits `data` into chunks without allocating.
pub struct Chunks<'a> {
    rest: &'a [u8],
    how: Chunking,
}

impl<'a> Chunks<'a> {
    /// The chunks of `data` cut as `how` says.
    pub fn new(data: &'a [u8], how: Chunking) -> Self {
        Chunks { rest: data, how }
    }
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let n = match &mut self.how {
            Chunking::Whole => self.rest.len(),
            Chunking::Bytewise => 1,
            Chunking::Random { rng, max } => 1 + rng.below(*max),
        };
        let (chunk, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        Some(chunk)
    }
}

/// The chunkings every scanner input is checked under (all must agree).
fn chunkings(data: &[u8]) -> [Chunking; 4] {
    [
        Chunking::Whole,
        Chunking::Bytewise,
        Chunking::Random {
            rng: Rng::from_bytes(data),
            max: 7,
        },
        Chunking::Random {
            rng: Rng::from_bytes(data.get(..data.len() / 2).unwrap_or_default()),
            max: 1 + data.len() / 3,
        },
    ]
}

// ------------------------------------------------------------------------- fingerprints

/// An allocation-free fingerprint of a stream of tagged byte strings. Data bytes are hashed
/// with `0xff` escaped, so markers cannot be forged by data and the split of data into pieces
/// does not matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    a: u64,
    b: u64,
    /// Bytes of data seen.
    pub bytes: u64,
    /// Markers seen.
    pub marks: u64,
}

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint {
            a: 0xcbf2_9ce4_8422_2325,
            b: 0x9e37_79b9_7f4a_7c15,
            bytes: 0,
            marks: 0,
        }
    }
}

impl Fingerprint {
    fn byte(&mut self, x: u8) {
        self.a = (self.a ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        self.b = (self.b.rotate_left(5) ^ u64::from(x)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    }
    /// Data bytes.
    pub fn data(&mut self, bytes: &[u8]) {
        for &x in bytes {
            if x == 0xff {
                self.byte(0xff);
                self.byte(0);
            } else {
                self.byte(x);
            }
        }
        self.bytes += bytes.len() as u64;
    }
    /// A marker (1..=254).
    pub fn mark(&mut self, tag: u8) {
        self.byte(0xff);
        self.byte(tag);
        self.marks += 1;
    }
    /// A number, as a marker followed by its bytes.
    pub fn number(&mut self, tag: u8, n: i64) {
        self.mark(tag);
        for x in n.to_le_bytes() {
            self.byte(x);
        }
    }
}

// ------------------------------------------------------------------------- the targets

mod request_parser;
mod response_scanner;
mod sse_scanner;
mod stream;

pub use request_parser::*;
pub use response_scanner::*;
pub use sse_scanner::*;
pub use stream::*;

/// A target: checks one input, panics on a finding.
pub type Target = fn(&[u8]);

/// The targets by name, for replaying corpora.
pub const TARGETS: [(&str, Target); 4] = [
    ("request_parser", request_parser),
    ("sse_scanner", sse_scanner),
    ("response_scanner", response_scanner),
    ("stream", stream),
];
