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
//! - [`stream`]: a whole `filter::Stream` driven through [`FuzzHost`], which models Envoy's
//!   buffering and refuses a hostcall made in the wrong phase: every stream that reaches the
//!   response (or a local reply) leaves audit records that are JSON objects, local replies and
//!   the 429 → JSON-RPC rewrite are valid JSON-RPC error bodies, and response chunks do not
//!   grow the heap the filter holds. Authorization ([`oracle`], serde_json readers independent
//!   of mcp-guard's parser): a forwarded request names only what the stream's agent may use and
//!   its tag headers say what it names, and the answer a client gets to a forwarded list
//!   request lists only entries the agent may use.
//!
//! Heap figures come from [`CountingAlloc`], a global allocator that counts live bytes per
//! thread; every binary that calls these functions installs it.

// A fuzz harness reports a failed check by panicking (libFuzzer records the input); the
// filter's no-panic lints do not apply here.
#![allow(clippy::panic)]

pub mod oracle;
pub mod reference;

use mcp_guard::config::{Config, DEFAULT_MAX_JSON_DEPTH, MAX_MAX_JSON_DEPTH};
use mcp_guard::filter::{Action, Host, ReadError, Stream, RATE_LIMITED};
use mcp_guard::identity::{Presented, Source};
use mcp_guard::jsonrpc::{self, Body, Id, Kind, Message};
use mcp_guard::policy::{Decision, Mode, Subject};
use mcp_guard::response::{BodyKind, Correlator, JsonScanner, ResponseScanner, Summary};
use mcp_guard::sse::{EventSink, SseScanner};
use oracle::{ListAsk, Named};
use serde_json::value::RawValue;
use serde_json::Value;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

// ------------------------------------------------------------------------- heap accounting

/// A global allocator that counts the live heap bytes of the current thread (and their peak).
/// Install it with `#[global_allocator] static A: CountingAlloc = CountingAlloc;`.
pub struct CountingAlloc;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn account(delta: isize) {
    // Const-initialized, no destructor: always accessible, never allocates.
    let _ = LIVE.try_with(|live| {
        let now = live.get().wrapping_add(delta);
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

fn size_of_layout(layout: Layout) -> isize {
    isize::try_from(layout.size()).unwrap_or(isize::MAX)
}

// SAFETY: every call is forwarded unchanged to the system allocator; only counters are added.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            account(size_of_layout(layout));
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            account(size_of_layout(layout));
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        account(-size_of_layout(layout));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            account(isize::try_from(new_size).unwrap_or(isize::MAX) - size_of_layout(layout));
        }
        p
    }
}

/// Measures the heap of the current thread from the moment it is started.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    base: isize,
}

impl Meter {
    /// Starts measuring: the peak is reset to the current live size.
    pub fn start() -> Meter {
        let base = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(base));
        Meter { base }
    }
    /// Highest live size since `start`, minus the live size at `start`.
    pub fn peak(&self) -> usize {
        usize::try_from(PEAK.with(Cell::get) - self.base).unwrap_or(0)
    }
    /// Live size now, minus the live size at `start` (negative: more was freed).
    pub fn net(&self) -> isize {
        LIVE.with(Cell::get) - self.base
    }
}

/// Whether [`CountingAlloc`] is this binary's global allocator (if not, every heap check
/// would pass vacuously).
pub fn counting_installed() -> bool {
    let m = Meter::start();
    let b = std::hint::black_box(Box::new([0u8; 64]));
    let seen = m.peak() >= 64;
    drop(b);
    seen
}

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
/// How many forwarded requests, and list responses, the authorization oracles checked (so a
/// test can tell they do not pass vacuously).
static ORACLE_REQUESTS: AtomicUsize = AtomicUsize::new(0);
static ORACLE_LISTS: AtomicUsize = AtomicUsize::new(0);

/// Forwarded requests and list responses the authorization oracles have checked so far in
/// this process.
pub fn oracle_checks() -> (usize, usize) {
    (
        ORACLE_REQUESTS.load(Ordering::Relaxed),
        ORACLE_LISTS.load(Ordering::Relaxed),
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

/// Deterministic xorshift generator, seeded from input bytes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with the FNV-1a hash of `seed` (never zero).
    pub fn from_bytes(seed: &[u8]) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in seed {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

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

// ------------------------------------------------------------------------- request_parser

/// Target `request_parser`: `jsonrpc::parse_body` on arbitrary bytes.
pub fn request_parser(data: &[u8]) {
    require_counting();
    let meter = Meter::start();
    let parsed = jsonrpc::parse_body(data, DEFAULT_MAX_JSON_DEPTH);
    let peak = meter.peak();
    assert!(
        peak <= PARSER_HEAP_PER_BYTE * data.len() + PARSER_HEAP_CONSTANT,
        "parse_body of {} bytes peaked at {peak} heap bytes",
        data.len()
    );
    if data.len() >= 256 {
        note_max(
            &MAX_PARSER_RATIO,
            peak * 100 / data.len(),
            "parser peak heap as % of the body (bodies of 256 bytes or more)",
        );
    }

    let text = std::str::from_utf8(data).ok();
    let syntax = text.map(serde_json::from_str::<serde::de::IgnoredAny>);
    let invalid_json = matches!(&syntax, Some(Err(e)) if e.is_syntax() || e.is_eof());

    match &parsed {
        Ok(body) => {
            assert!(
                !invalid_json,
                "accepted a body serde_json calls invalid: {syntax:?}"
            );
            assert!(
                matches!(syntax, Some(Ok(_))),
                "accepted a body that is not valid JSON"
            );
            check_accepted(data, text.unwrap_or_default(), body);
        }
        Err(e) => {
            if invalid_json || text.is_none() {
                assert_eq!(
                    e.code,
                    jsonrpc::PARSE_ERROR,
                    "invalid JSON refused with {e:?}"
                );
            }
            assert!(
                [
                    jsonrpc::PARSE_ERROR,
                    jsonrpc::INVALID_REQUEST,
                    jsonrpc::INVALID_PARAMS
                ]
                .contains(&e.code),
                "unexpected code {e:?}"
            );
            let reply = jsonrpc::error_response(e.id.as_ref(), e.code, &e.message);
            let Some(v) = strict_json(&reply, "error response") else {
                return;
            };
            assert_eq!(
                v.get("error")
                    .and_then(|e| e.get("code"))
                    .and_then(Value::as_i64),
                Some(i64::from(e.code))
            );
        }
    }

    // A looser depth limit accepts at least what a stricter one accepts, with the same result.
    let loose = jsonrpc::parse_body(data, MAX_MAX_JSON_DEPTH);
    if let Ok(strict) = &parsed {
        match &loose {
            Ok(loose) => assert_eq!(
                format!("{:?}", strict.messages()),
                format!("{:?}", loose.messages())
            ),
            Err(e) => panic!("accepted at depth {DEFAULT_MAX_JSON_DEPTH}, refused at {MAX_MAX_JSON_DEPTH}: {e:?}"),
        }
    }
}

/// `text` as JSON, for output the filter produces (audit records, replies): it must parse
/// with a strict parser (a number id such as `8e400` once made records unreadable: now refused,
/// regression seeds in fuzz/regressions/).
fn strict_json(text: &str, what: &str) -> Option<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Some(v),
        Err(e) => panic!("{what} is not strict JSON ({e}): {text}"),
    }
}

/// What serde_json reads in an accepted body must be what mcp-guard tagged and enforced on.
fn check_accepted(data: &[u8], text: &str, body: &Body<'_>) {
    let range = data.as_ptr_range();
    let root: Option<Value> = serde_json::from_str(text).ok(); // numbers out of f64 range fail
    let elements: Vec<Option<&Value>> = match (&root, body) {
        (Some(Value::Array(items)), Body::Batch(msgs)) => {
            assert_eq!(items.len(), msgs.len(), "batch length");
            items.iter().map(Some).collect()
        }
        (Some(v @ Value::Object(_)), Body::Single(_)) => vec![Some(v)],
        (None, _) => vec![None; body.messages().len()],
        (Some(v), _) => panic!("accepted {v} as {body:?}"),
    };
    for (m, v) in body.messages().iter().zip(elements) {
        if let Some(id) = m.id() {
            // The id is echoed into audit records and replies: it must read back as JSON.
            strict_json(&id.to_json(), "request id");
        }
        if let Some(input) = m.hash_input {
            assert!(
                range.contains(&input.as_ptr()),
                "hash input is not a slice of the body"
            );
        }
        let Some(v) = v else { continue };
        check_message(m, v);
    }
}

fn check_message(m: &Message<'_>, v: &Value) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("message {v} is not an object"));
    assert_eq!(obj.get("jsonrpc").and_then(Value::as_str), Some("2.0"));
    assert_eq!(
        m.method.as_deref(),
        obj.get("method").and_then(Value::as_str),
        "method of {v}"
    );
    let params = obj.get("params");
    let member = |name: &str| params.and_then(|p| p.get(name)).and_then(Value::as_str);
    match m.method.as_deref() {
        Some(jsonrpc::TOOLS_CALL) => assert_eq!(m.tool_name.as_deref(), member("name"), "{v}"),
        Some(jsonrpc::PROMPTS_GET) => assert_eq!(m.prompt_name.as_deref(), member("name"), "{v}"),
        Some(jsonrpc::RESOURCES_READ) => {
            assert_eq!(m.resource_uri.as_deref(), member("uri"), "{v}")
        }
        _ => assert!(m.tool_name.is_none() && m.prompt_name.is_none() && m.resource_uri.is_none()),
    }
    let id = obj.get("id");
    match &m.kind {
        Kind::Request(i) | Kind::Response(i) => match (i, id) {
            (Id::Str(s), Some(Value::String(w))) => assert_eq!(s, w),
            (Id::Number(n), Some(w @ Value::Number(_))) => {
                // Same number (serde_json may reformat it, so compare parsed).
                let again: Value = serde_json::from_str(n).unwrap_or(Value::Null);
                assert_eq!(&again, w, "id {n} vs {w}");
            }
            (i, w) => panic!("id {i:?} vs {w:?}"),
        },
        Kind::Notification => assert!(id.is_none(), "notification with id in {v}"),
    }
    if matches!(m.kind, Kind::Response(_)) {
        assert!(m.method.is_none() && (obj.contains_key("result") ^ obj.contains_key("error")));
    }
}

// ------------------------------------------------------------------------- sse_scanner

/// Fingerprints the events an [`SseScanner`] reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct SseFingerprint(Fingerprint);

impl EventSink for SseFingerprint {
    fn data(&mut self, bytes: &[u8]) {
        self.0.data(bytes);
    }
    fn data_line_end(&mut self) {
        self.0.mark(1);
    }
    fn dispatch(&mut self) {
        self.0.mark(2);
    }
}

/// Reference: the WHATWG "interpreting an event stream" algorithm over the whole input, with
/// the scanner's one documented leniency (an unterminated last event is dispatched). Like the
/// scanner, it does not strip a leading U+FEFF (byte-order mark).
fn reference_sse(data: &[u8], sink: &mut impl EventSink) -> u64 {
    let (mut has_data, mut events) = (false, 0u64);
    let mut rest = data;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&c| c == b'\n' || c == b'\r')
            .unwrap_or(rest.len());
        let (line, after) = rest.split_at(end);
        rest = match after {
            [b'\r', b'\n', tail @ ..] | [b'\r', tail @ ..] | [b'\n', tail @ ..] => tail,
            _ => &[],
        };
        if line.is_empty() {
            if has_data {
                has_data = false;
                events += 1;
                sink.dispatch();
            }
            continue;
        }
        if line.first() == Some(&b':') {
            continue;
        }
        let (name, value) = match line.iter().position(|&c| c == b':') {
            Some(i) => {
                let (n, v) = line.split_at(i);
                let v = v.get(1..).unwrap_or_default();
                (n, v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        if name == b"data" {
            sink.data(value);
            sink.data_line_end();
            has_data = true;
        }
    }
    if has_data {
        events += 1;
        sink.dispatch();
    }
    events
}

/// Target `sse_scanner`: [`SseScanner`] on arbitrary bytes under several chunkings.
pub fn sse_scanner(data: &[u8]) {
    require_counting();
    let mut want = SseFingerprint::default();
    let want_events = reference_sse(data, &mut want);
    for how in chunkings(data) {
        let label = format!("{how:?}");
        let mut scanner = SseScanner::new();
        let mut got = SseFingerprint::default();
        let meter = Meter::start();
        for chunk in Chunks::new(data, how) {
            scanner.feed(chunk, &mut got);
        }
        scanner.finish(&mut got);
        let peak = meter.peak();
        assert_eq!(peak, 0, "SseScanner allocated {peak} bytes ({label})");
        assert_eq!(got, want, "events differ from the reference ({label})");
        assert_eq!(scanner.events(), want_events, "event count ({label})");
    }
}

// ------------------------------------------------------------------------- response_scanner

/// Ids the correlator waits for in [`response_scanner`]: what SDKs send, and look-alikes.
fn expected_ids() -> Vec<Id> {
    ["0", "1", "2", "3", "7", "-1", "10000000000000000000000"]
        .into_iter()
        .map(|n| Id::Number(n.to_owned()))
        .chain(
            ["1", "abc", "", "a\"b"]
                .into_iter()
                .map(|s| Id::Str(s.to_owned())),
        )
        .collect()
}

fn summary_fingerprint(f: &mut Fingerprint, s: &Summary) {
    f.mark(3);
    if let Some(id) = &s.id {
        f.mark(4);
        f.data(id);
    }
    let flags = [
        s.has_method,
        s.has_result,
        s.has_error,
        s.is_error,
        s.malformed,
    ];
    for (i, flag) in flags.into_iter().enumerate() {
        if flag {
            f.mark(10 + i as u8);
        }
    }
    if let Some(code) = s.error_code {
        f.number(20, code);
    }
}

/// SSE data into a JsonScanner, one document per event (as `ResponseScanner` does inside).
struct SseToJson<'a> {
    json: &'a mut JsonScanner,
    out: &'a mut Fingerprint,
}

impl EventSink for SseToJson<'_> {
    fn data(&mut self, bytes: &[u8]) {
        let out = &mut *self.out;
        self.json
            .feed(bytes, &mut |s: &Summary| summary_fingerprint(out, s));
    }
    fn data_line_end(&mut self) {
        let out = &mut *self.out;
        self.json
            .feed(b"\n", &mut |s: &Summary| summary_fingerprint(out, s));
    }
    fn dispatch(&mut self) {
        self.json.end_document();
        self.out.mark(5);
    }
}

/// The members of one JSON object, in order, with their names decoded (as the scanner and the
/// SDK readers compare them) and their raw values; `None` when the text is not an object
/// serde_json reads.
fn members(raw: &str) -> Option<Vec<(String, &str)>> {
    struct Members<'a>(Vec<(String, &'a RawValue)>);
    struct Visit;
    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = Members<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Members<'de>, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                out.push((k, v));
            }
            Ok(Members(out))
        }
    }
    impl<'de> serde::Deserialize<'de> for Members<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(Visit)
        }
    }
    let Members(list) = serde_json::from_str::<Members<'_>>(raw).ok()?;
    Some(list.into_iter().map(|(k, v)| (k, v.get())).collect())
}

/// What the response scanner must report for one JSON document, from serde_json; `None` when
/// the document is outside what the oracle covers (not valid JSON, which includes member names
/// with lone surrogates).
///
/// The rules are `response::Summary`'s: names decoded; the last `id`, `isError` and `code`
/// count; a duplicated `jsonrpc`, `id`, `result`, `error`, `result.isError` or `error.code`, a
/// `jsonrpc` other than "2.0", a `result` that is not an object or an `isError` that is not a
/// boolean marks the message malformed.
fn oracle_summaries(doc: &str) -> Option<Vec<Summary>> {
    if !doc
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with(['{', '['])
    {
        // Empty (SSE priming), a scalar, or not JSON (the legacy `endpoint` URI): no message.
        return Some(Vec::new());
    }
    let root: &RawValue = serde_json::from_str(doc).ok()?;
    let text = root.get();
    let objects: Vec<&str> = match text.as_bytes().first() {
        Some(b'{') => vec![text],
        Some(b'[') => serde_json::from_str::<Vec<&RawValue>>(text)
            .ok()?
            .into_iter()
            .map(RawValue::get)
            .filter(|t| t.starts_with('{'))
            .collect(),
        _ => Vec::new(),
    };
    let scalar = |raw: &str| !raw.starts_with(['{', '[']);
    let mut out = Vec::new();
    for object in objects {
        let mut s = Summary::default();
        let mut counts = [0usize; 6]; // jsonrpc, id, result, error, isError, code
        let mut version_ok = false;
        for (key, raw) in members(object)? {
            match key.as_str() {
                "jsonrpc" => {
                    counts[0] += 1;
                    version_ok = serde_json::from_str::<String>(raw).is_ok_and(|v| v == "2.0");
                }
                "id" => {
                    counts[1] += 1;
                    s.id = (scalar(raw) && raw.len() <= mcp_guard::response::MAX_ID_LEN)
                        .then(|| raw.as_bytes().to_vec());
                }
                "method" => s.has_method = true,
                "result" => {
                    counts[2] += 1;
                    s.has_result = true;
                    s.malformed |= !raw.starts_with('{');
                    if raw.starts_with('{') {
                        for (k, v) in members(raw)? {
                            if k == "isError" {
                                counts[4] += 1;
                                s.is_error = v == "true";
                                s.malformed |= v != "true" && v != "false";
                            }
                        }
                    }
                }
                "error" => {
                    counts[3] += 1;
                    s.has_error = true;
                    if raw.starts_with('{') {
                        for (k, v) in members(raw)? {
                            if k == "code" {
                                counts[5] += 1;
                                s.error_code = (scalar(v) && v.len() <= 32)
                                    .then(|| v.parse::<i64>().ok())
                                    .flatten();
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        s.malformed |= !version_ok || counts.iter().any(|&n| n > 1);
        out.push(s);
    }
    Some(out)
}

/// Collects whole SSE events (data lines joined by `\n`, with the final `\n` the scanner also
/// feeds), for the oracle.
#[derive(Default)]
struct Events {
    current: Vec<u8>,
    all: Vec<Vec<u8>>,
}

impl EventSink for Events {
    fn data(&mut self, bytes: &[u8]) {
        self.current.extend_from_slice(bytes);
    }
    fn data_line_end(&mut self) {
        self.current.push(b'\n');
    }
    fn dispatch(&mut self) {
        self.all.push(std::mem::take(&mut self.current));
    }
}

/// The summaries fingerprint serde_json predicts for a whole body, if it covers all of it.
pub fn oracle_fingerprint(kind: BodyKind, body: &[u8]) -> Option<Fingerprint> {
    let mut f = Fingerprint::default();
    match kind {
        BodyKind::Json => {
            for s in oracle_summaries(std::str::from_utf8(body).ok()?)? {
                summary_fingerprint(&mut f, &s);
            }
        }
        _ => {
            let mut events = Events::default();
            reference_sse(body, &mut events);
            for event in events.all {
                for s in oracle_summaries(std::str::from_utf8(&event).ok()?)? {
                    summary_fingerprint(&mut f, &s);
                }
                f.mark(5);
            }
        }
    }
    Some(f)
}

/// What a correlator learned, comparable across runs.
fn correlator_view(c: &Correlator, ids: &[Id]) -> String {
    let outcomes: Vec<_> = ids.iter().map(|id| c.outcome(id)).collect();
    format!(
        "messages={} complete={} unmatched={:?} outcomes={outcomes:?}",
        c.messages(),
        c.complete(),
        c.unmatched_error()
    )
}

/// Target `response_scanner`: the first byte picks the body kind (`J`: `application/json`,
/// `S`: `text/event-stream`, `T`: `text/event-stream` keeping non-JSON events as a server
/// stream does; any other byte by its value mod 3), the rest is the body.
pub fn response_scanner(data: &[u8]) {
    require_counting();
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let (kind, text_events) = match selector {
        b'J' => (BodyKind::Json, false),
        b'S' => (BodyKind::EventStream, false),
        b'T' => (BodyKind::EventStream, true),
        x => match x % 3 {
            0 => (BodyKind::Json, false),
            1 => (BodyKind::EventStream, false),
            _ => (BodyKind::EventStream, true),
        },
    };
    let ids = expected_ids();
    let mut views: Vec<(String, String, Fingerprint)> = Vec::new();
    for how in chunkings(body) {
        let label = format!("{how:?}");
        // 1. The production path: ResponseScanner into a Correlator.
        let mut correlator = Correlator::new(ids.clone());
        let mut scanner = if text_events {
            ResponseScanner::with_text_events(kind)
        } else {
            ResponseScanner::new(kind)
        };
        let mut worst = 0usize;
        let meter = Meter::start();
        for chunk in Chunks::new(body, how.clone()) {
            let m = Meter::start();
            scanner.feed(chunk, &mut correlator);
            worst = worst.max(m.peak());
        }
        scanner.finish(&mut correlator);
        worst = worst.max(meter.peak());
        assert!(
            worst <= RESPONSE_SCANNER_HEAP_BOUND,
            "response scanner peaked at {worst} heap bytes on a {} byte body ({label})",
            body.len()
        );
        note_max(&MAX_SCANNER_HEAP, worst, "response scanner peak heap bytes");
        // The latest non-JSON event (the legacy `endpoint` URI) does not depend on chunking.
        let text = scanner.take_text_event();
        drop(scanner);

        // 2. The raw JSON scanner: every message summary, in order.
        let mut summaries = Fingerprint::default();
        let mut json = JsonScanner::new();
        match kind {
            BodyKind::EventStream => {
                let mut sse = SseScanner::new();
                for chunk in Chunks::new(body, how) {
                    sse.feed(
                        chunk,
                        &mut SseToJson {
                            json: &mut json,
                            out: &mut summaries,
                        },
                    );
                }
                sse.finish(&mut SseToJson {
                    json: &mut json,
                    out: &mut summaries,
                });
            }
            _ => {
                for chunk in Chunks::new(body, how) {
                    json.feed(chunk, &mut |s: &Summary| {
                        summary_fingerprint(&mut summaries, s)
                    });
                }
                json.end_document();
            }
        }
        let view = format!("{} text={text:?}", correlator_view(&correlator, &ids));
        views.push((label, view, summaries));
    }
    // serde_json's reading of the same body, where it covers it (valid JSON documents, member
    // names decoded, duplicates included): the same messages, ids, outcomes and codes.
    if let (Some(want), Some((_, _, got))) = (oracle_fingerprint(kind, body), views.first()) {
        assert_eq!(got, &want, "the scanner disagrees with serde_json");
    }
    if let Some((first_label, first_view, first_summaries)) = views.first() {
        for (label, view, summaries) in &views {
            assert_eq!(
                view, first_view,
                "correlator differs: {label} vs {first_label}"
            );
            assert_eq!(
                summaries, first_summaries,
                "summaries differ: {label} vs {first_label}"
            );
        }
    }
}

// ------------------------------------------------------------------------- stream

/// The policy every fuzzed stream runs under, by index (control byte 1).
const POLICIES: [&str; 4] = [
    r#"{"server_id":"fuzz","policy":{"mode":"enforce","agents":{
        "demo-agent":{"tools":["echo","add","search","fail"]},
        "admin-agent":{"tools":["*"]},"default":{"tools":["echo"]}}}}"#,
    r#"{"policy":{"mode":"dry_run","agents":{"demo-agent":{"tools":["echo"]},"default":{"tools":[]}}}}"#,
    r#"{"policy":{"agents":{"default":{"tools":["echo","add"]}}},"max_body_bytes":96}"#,
    r#"{"identity":{"sources":[{"header":"x-agent-id"},{"header":"x-user"}],"fallback":"anonymous"},
        "policy":{"agents":{"default":{"tools":["echo"]}}},"max_json_depth":3}"#,
];
const METHODS: [&str; 4] = ["POST", "POST", "GET", "DELETE"];
const AGENTS: [Option<&str>; 8] = [
    Some("demo-agent"),
    Some("admin-agent"),
    None,
    Some("other"),
    Some(""),
    Some("demo-agent, admin-agent"),
    Some("d\u{e9}mo"),
    Some("DEMO-AGENT"),
];
const STATUSES: [&str; 16] = [
    "200",
    "200",
    "202",
    "400",
    "404",
    "413",
    "429",
    "429",
    "500",
    "503",
    " 200 ",
    "abc",
    "",
    "99999999999",
    "-1",
    "204",
];
const CONTENT_TYPES: [Option<&str>; 8] = [
    Some("text/event-stream"),
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("TEXT/EVENT-STREAM;charset=UTF-8"),
    None,
    Some("text/plain"),
    Some(" application/json "),
    Some("application/jsonx"),
];
/// 2026-07-28 routing headers (`Mcp-Method`, `Mcp-Name`) sent with the request, by selector
/// (control byte 1, bits 6-7): none, a plain pair, duplicated values with a base64 name, a
/// method alone.
const ROUTING_HEADERS: [&[(&str, &str)]; 4] = [
    &[],
    &[("mcp-method", "tools/call"), ("mcp-name", "echo")],
    &[
        ("mcp-method", "tools/call"),
        ("mcp-method", "ping"),
        ("mcp-name", "=?base64?ZWNobw==?="),
    ],
    &[("mcp-method", "initialize")],
];
const CODE_DETAILS: [Option<&str>; 4] = [
    None,
    Some("via_upstream"),
    Some("downstream_remote_disconnect"),
    Some("upstream_reset_before_response_started{connection_termination}"),
];
/// Largest chunk, by selector (control bytes 2 and 6); 0 = the whole body in one chunk.
const CHUNK_MAX: [usize; 8] = [0, 1, 2, 3, 7, 64, 4096, 0];

/// Between the request body and the response body in a `stream` input.
pub const STREAM_SEPARATOR: &[u8] = b"\n--mcp-guard-fuzz-response--\n";
/// Control bytes at the start of a `stream` input.
pub const STREAM_CONTROL_LEN: usize = 8;

/// proxy-wasm shared data: key → (value, compare-and-swap token).
type SharedStore = BTreeMap<String, (Vec<u8>, u32)>;

/// The callback the host is in: which hostcalls are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    Log,
    Outside,
}

/// A host that behaves like Envoy for one stream: body buffering while the filter pauses,
/// header maps, local replies, filter state, shared data with compare-and-swap, and the phase
/// rules of proxy-wasm hostcalls (a hostcall in the wrong phase is a finding: in Envoy it
/// fails, and the SDK panics on some).
#[derive(Debug)]
pub struct FuzzHost {
    phase: Phase,
    /// Request headers released upstream (a request callback returned Continue).
    request_released: bool,
    /// Response headers went downstream.
    response_started: bool,
    request_headers: BTreeMap<String, Vec<String>>,
    request_buffer: Vec<u8>,
    /// The request body bytes passed on upstream so far.
    upstream: Vec<u8>,
    response_headers: BTreeMap<String, String>,
    response_buffer: Vec<u8>,
    rewritten_response: Option<Vec<u8>>,
    /// The response body bytes passed on to the client so far.
    downstream: Vec<u8>,
    tool_labels: mcp_guard::metrics::ToolLabels,
    local_reply: Option<(u32, Vec<u8>)>,
    audit: Option<Vec<u8>>,
    code_details: Option<&'static str>,
    /// Shared data: value and CAS token (kept across the streams of one input).
    shared: SharedStore,
    now: u64,
    violations: std::cell::RefCell<Vec<String>>,
}

impl FuzzHost {
    fn new(shared: SharedStore, now: u64) -> Self {
        FuzzHost {
            phase: Phase::Outside,
            request_released: false,
            response_started: false,
            request_headers: BTreeMap::new(),
            request_buffer: Vec::new(),
            upstream: Vec::new(),
            response_headers: BTreeMap::new(),
            response_buffer: Vec::new(),
            rewritten_response: None,
            downstream: Vec::new(),
            tool_labels: mcp_guard::metrics::ToolLabels::default(),
            local_reply: None,
            audit: None,
            code_details: None,
            shared,
            now,
            violations: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// Adds one value of a request header (a header may be sent more than once).
    fn add_request_header(&mut self, name: &str, value: &str) {
        self.request_headers
            .entry(name.to_owned())
            .or_default()
            .push(value.to_owned());
    }

    /// After a request callback: on `Continue` Envoy passes the buffered body on upstream.
    fn pass_request(&mut self, action: Action) {
        if action == Action::Continue {
            let chunk = std::mem::take(&mut self.request_buffer);
            self.upstream.extend_from_slice(&chunk);
        }
    }

    /// After a response callback: on `Continue` Envoy passes the buffered body on downstream.
    fn pass_response(&mut self, action: Action) {
        if action == Action::Continue {
            let chunk = std::mem::take(&mut self.response_buffer);
            self.downstream.extend_from_slice(&chunk);
        }
    }

    /// Records a hostcall Envoy would fail in this phase (proxy-wasm 0.2 panics on several
    /// such failures, which traps the VM).
    fn violation(&self, what: &str) {
        let text = format!("{what} in {:?}", self.phase);
        self.violations.borrow_mut().push(text);
    }

    fn check_no_violations(&self) {
        let v = self.violations.borrow();
        assert!(v.is_empty(), "hostcalls in the wrong phase: {v:?}");
    }
}

impl Host for FuzzHost {
    fn request_headers(&self) -> Vec<(String, String)> {
        self.request_headers
            .iter()
            .flat_map(|(name, values)| values.iter().map(move |v| (name.clone(), v.clone())))
            .collect()
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        let allowed = matches!(
            self.phase,
            Phase::RequestHeaders | Phase::RequestBody | Phase::RequestTrailers
        ) && !self.request_released;
        if !allowed {
            self.violation("set_request_header after the request headers went upstream");
        }
        match value {
            Some(v) => self
                .request_headers
                .insert(name.to_owned(), vec![v.to_owned()]),
            None => self.request_headers.remove(name),
        };
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        if !matches!(self.phase, Phase::RequestBody | Phase::RequestTrailers) {
            self.violation("request_body outside the request body/trailers callbacks");
            return None;
        }
        self.request_buffer.get(..size).map(<[u8]>::to_vec)
    }
    fn response_headers(&self) -> Vec<(String, String)> {
        if self.phase != Phase::ResponseHeaders {
            // Seen with Envoy: reading a response header in the body callback panicked in
            // proxy-wasm's hostcalls and trapped the VM.
            self.violation("response_headers outside the response headers callback");
            return Vec::new();
        }
        self.response_headers
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        if self.phase != Phase::ResponseHeaders {
            self.violation("set_response_header outside the response headers callback");
        }
        match value {
            Some(v) => self.response_headers.insert(name.to_owned(), v.to_owned()),
            None => self.response_headers.remove(name),
        };
    }
    fn response_body(&self, start: usize, size: usize) -> Option<Vec<u8>> {
        if self.phase != Phase::ResponseBody {
            self.violation("response_body outside the response body callback");
            return None;
        }
        self.response_buffer
            .get(start..start.checked_add(size)?)
            .map(<[u8]>::to_vec)
    }
    fn set_response_body(&mut self, size: usize, data: &[u8]) {
        if self.phase != Phase::ResponseBody {
            self.violation("set_response_body outside the response body callback");
            return;
        }
        let keep = self
            .response_buffer
            .get(size..)
            .unwrap_or_default()
            .to_vec();
        let mut body = data.to_vec();
        body.extend_from_slice(&keep);
        self.response_buffer = body.clone();
        self.rewritten_response = Some(body);
    }
    fn send_local_reply(&mut self, status: u32, _headers: &[(&str, &str)], body: &[u8]) {
        if self.response_started || self.local_reply.is_some() || self.phase == Phase::Log {
            self.violation("send_local_reply after the response started");
        }
        self.local_reply = Some((status, body.to_vec()));
    }
    fn grpc_call(
        &mut self,
        _grpc_service: &str,
        _service: &str,
        _method: &str,
        _message: &[u8],
        _timeout_ms: u64,
    ) -> Option<u32> {
        // The fuzzed configurations have no rate_limit_service.
        self.violation("grpc_call without a rate_limit_service");
        None
    }
    fn resume_request(&mut self) {
        self.violation("resume_request without a pending call");
    }
    fn upstream_cluster(&self) -> Option<String> {
        Some("mcp_fuzz".to_owned())
    }
    fn write_audit(&mut self, records: &[u8]) {
        self.audit = Some(records.to_vec());
    }
    fn now_ms(&self) -> u64 {
        self.now
    }
    fn shared_data(&self, key: &str) -> Option<(Vec<u8>, Option<u32>)> {
        match self.shared.get(key) {
            Some((v, cas)) if !v.is_empty() => Some((v.clone(), Some(*cas))),
            _ => None,
        }
    }
    fn set_shared_data(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let current = self.shared.get(key).map(|(_, c)| *c);
        if let (Some(want), Some(have)) = (cas, current) {
            if want != have {
                return false;
            }
        }
        let next = current.unwrap_or(0).wrapping_add(1);
        self.shared.insert(key.to_owned(), (value.to_vec(), next));
        true
    }
    fn count(&mut self, metric: mcp_guard::metrics::Metric<'_>, _by: u64) {
        // Stat names must be valid for Envoy: no empty segment, bounded length.
        let name = metric.name(&mut self.tool_labels);
        assert!(
            !name.contains("..") && name.len() < 256,
            "bad stat name {name:?}"
        );
    }
    fn property(&self, _path: &[&str]) -> Result<Option<String>, ReadError> {
        // The fuzzed configurations use header identity; attribute sources read nothing here.
        Ok(None)
    }
    fn response_code_details(&self) -> Option<String> {
        if self.phase != Phase::Log {
            return None; // only meaningful once the stream is over
        }
        self.code_details.map(str::to_owned)
    }
}

/// Checks an audit value: one JSON object per line, each with a decision and an outcome.
fn check_audit(audit: Option<&[u8]>, what: &str) {
    let audit = audit.unwrap_or_else(|| panic!("no audit record {what}"));
    let text = std::str::from_utf8(audit).unwrap_or_else(|e| panic!("audit is not UTF-8: {e}"));
    assert!(!text.is_empty(), "empty audit value {what}");
    for line in text.split('\n') {
        let Some(v) = strict_json(line, &format!("audit line {what}")) else {
            continue;
        };
        assert!(
            v.get("decision").is_some_and(Value::is_string),
            "{what}: {line}"
        );
        assert!(
            v.get("output_status").is_some_and(Value::is_string),
            "{what}: {line}"
        );
    }
}

/// Checks a JSON-RPC error body: one error object, or a non-empty array of them, with `code`.
fn check_error_body(body: &[u8], code: Option<i64>, what: &str) {
    let text = std::str::from_utf8(body).unwrap_or_else(|e| panic!("{what} is not UTF-8: {e}"));
    let Some(v) = strict_json(text, what) else {
        return;
    };
    let objects: Vec<&Value> = match &v {
        Value::Array(items) => {
            assert!(!items.is_empty(), "{what}: empty array");
            items.iter().collect()
        }
        other => vec![other],
    };
    for o in objects {
        assert_eq!(
            o.get("jsonrpc").and_then(Value::as_str),
            Some("2.0"),
            "{what}: {v}"
        );
        let got = o
            .get("error")
            .and_then(|e| e.get("code"))
            .and_then(Value::as_i64);
        assert!(got.is_some(), "{what} without an integer error code: {v}");
        if code.is_some() {
            assert_eq!(got, code, "{what}: {v}");
        }
        assert!(
            o.get("error")
                .and_then(|e| e.get("message"))
                .is_some_and(Value::is_string),
            "{what}: {v}"
        );
        assert!(
            matches!(
                o.get("id"),
                Some(Value::String(_) | Value::Number(_) | Value::Null)
            ),
            "{what}: id {v}"
        );
    }
}

/// The input of the `stream` target, decoded.
struct Plan<'a> {
    control: [u8; STREAM_CONTROL_LEN],
    request: &'a [u8],
    response: &'a [u8],
    rng: Rng,
}

impl<'a> Plan<'a> {
    fn decode(data: &'a [u8]) -> Self {
        let mut control = [0u8; STREAM_CONTROL_LEN];
        let (head, rest) = data.split_at(data.len().min(STREAM_CONTROL_LEN));
        for (slot, b) in control.iter_mut().zip(head) {
            *slot = *b;
        }
        let (request, response) = match rest
            .windows(STREAM_SEPARATOR.len())
            .position(|w| w == STREAM_SEPARATOR)
        {
            Some(i) => {
                let (req, resp) = rest.split_at(i);
                (req, resp.get(STREAM_SEPARATOR.len()..).unwrap_or_default())
            }
            None => (rest, &[][..]),
        };
        Plan {
            control,
            request,
            response,
            rng: Rng::from_bytes(&control),
        }
    }
    fn c(&self, i: usize) -> u8 {
        self.control.get(i).copied().unwrap_or(0)
    }
    fn bit(&self, i: usize, bit: u8) -> bool {
        self.c(i) & (1 << bit) != 0
    }
    fn pick<T: Copy>(&self, i: usize, shift: u8, table: &[T]) -> T {
        let n = usize::from(self.c(i) >> shift) % table.len().max(1);
        match table.get(n).or(table.first()) {
            Some(t) => *t,
            None => panic!("empty table"),
        }
    }
    fn chunking(&mut self, selector: u8) -> Chunking {
        let max = CHUNK_MAX
            .get(usize::from(selector) % CHUNK_MAX.len())
            .copied()
            .unwrap_or(0);
        if max == 0 {
            Chunking::Whole
        } else {
            Chunking::Random {
                rng: Rng(self.rng.next() | 1),
                max,
            }
        }
    }
}

/// What one HTTP stream does, as Envoy would call the filter.
struct Exchange<'a> {
    method: &'static str,
    agent: Option<&'static str>,
    session: bool,
    forged_tag: bool,
    traceparent: bool,
    routing: &'static [(&'static str, &'static str)],
    /// The request ends at its headers (only when its body is empty).
    headers_eos: bool,
    trailers: bool,
    /// Envoy answers before the request body is complete (after this many chunks).
    early_response: bool,
    request: &'a [u8],
    request_chunking: Chunking,
    status: &'static str,
    content_type: Option<&'static str>,
    response_session: bool,
    response_headers_eos: bool,
    /// The response ends without end_of_stream (upstream reset, client gone, or trailers).
    reset: bool,
    response: &'a [u8],
    response_chunking: Chunking,
    /// A local reply still goes through the response callbacks.
    reply_through_filter: bool,
    code_details: Option<&'static str>,
}

/// Target `stream`: whole [`Stream`]s through [`FuzzHost`].
///
/// Input: 8 control bytes, then the request body, then optionally [`STREAM_SEPARATOR`] and the
/// response body. Control bytes: 0: bits 0-1 method (`POST`, `POST`, `GET`, `DELETE`), bits 2-4
/// agent, bit 5 request ends at its headers when the body is empty, bit 6 request trailers,
/// bit 7 Envoy answers before the request body is complete; 1: bits 0-1 policy, bit 2
/// `mcp-session-id` on the request, bit 3 a forged `x-mcp-tool-name`, bit 4 a `traceparent`,
/// bits 6-7 `Mcp-Method`/`Mcp-Name` routing headers, bit 5 a second stream follows: a `GET` server stream of the same session whose SSE body is
/// the response body (correlation through shared data); 2: request chunking; 3: response
/// status (low 4 bits); 4: bits 0-2 content type; 5: bit 0 response ends at its headers, bit 1
/// response ends without end_of_stream, bit 2 `mcp-session-id` on the response, bit 3 the
/// response callbacks still run after a local reply, bits 4-5 Envoy's
/// `response.code_details`; 6: response chunking; 7: seed for chunk sizes.
pub fn stream(data: &[u8]) {
    require_counting();
    let mut plan = Plan::decode(data);
    let config = match Config::from_json(plan.pick::<&str>(1, 0, &POLICIES).as_bytes()) {
        Ok(c) => Rc::new(c),
        Err(e) => panic!("fuzz policy rejected: {e:?}"),
    };
    let first = Exchange {
        method: plan.pick(0, 0, &METHODS),
        agent: plan.pick(0, 2, &AGENTS),
        session: plan.bit(1, 2),
        forged_tag: plan.bit(1, 3),
        traceparent: plan.bit(1, 4),
        routing: plan.pick(1, 6, &ROUTING_HEADERS),
        headers_eos: plan.request.is_empty() && plan.bit(0, 5) && !plan.bit(0, 6),
        trailers: plan.bit(0, 6),
        early_response: plan.bit(0, 7),
        request: plan.request,
        request_chunking: plan.chunking(plan.c(2)),
        status: plan.pick(3, 0, &STATUSES),
        content_type: plan.pick(4, 0, &CONTENT_TYPES),
        response_session: plan.bit(5, 2),
        response_headers_eos: plan.bit(5, 0),
        reset: plan.bit(5, 1),
        response: plan.response,
        response_chunking: plan.chunking(plan.c(6)),
        reply_through_filter: plan.bit(5, 3),
        code_details: plan.pick(5, 4, &CODE_DETAILS),
    };
    let (shared, awaited) = run_exchange(&config, &first, BTreeMap::new(), &[], &mut plan.rng);
    if plan.bit(1, 5) {
        // The server stream (GET) of the same session, carrying the response body as SSE: the
        // answer to a call POSTed on the first stream may arrive here (correlation).
        let second = Exchange {
            method: "GET",
            session: true,
            forged_tag: false,
            traceparent: false,
            routing: &[],
            headers_eos: true,
            trailers: false,
            early_response: false,
            request: b"",
            request_chunking: Chunking::Whole,
            status: "200",
            content_type: Some("text/event-stream"),
            response_session: false,
            response_headers_eos: false,
            reset: plan.bit(5, 1),
            reply_through_filter: false,
            response_chunking: plan.chunking(plan.c(6) >> 3),
            ..first
        };
        run_exchange(&config, &second, shared, &awaited, &mut plan.rng);
    }
}

/// The oracles' view of the policy for `agent` ([`oracle::Permits`]): `Ok` for what the
/// policy allows, and for `dry_run_deny` (forwarded, and still listed) only when dry-run mode
/// applies to the agent (the policy's own mode or one of its rule sets).
fn permits<'a>(
    config: &'a Config,
    agent: &'a str,
) -> impl Fn(Named<'_>) -> Result<(), String> + 'a {
    move |named| {
        let subject = match named {
            Named::Tool(n) => Subject::Tool(n),
            Named::Prompt(n) => Subject::Prompt(n),
            Named::Resource(n) => Subject::Resource(n),
            Named::Method(m) => Subject::Method(m),
        };
        let policy = &config.policy;
        match policy.decide(agent, subject) {
            Decision::Allow => Ok(()),
            Decision::DryRunDeny
                if policy.mode() == Mode::DryRun
                    || policy
                        .rule_sets(agent)
                        .iter()
                        .any(|s| s.mode == Mode::DryRun) =>
            {
                Ok(())
            }
            Decision::DryRunDeny => Err(format!("dry_run_deny for {agent:?} outside dry-run mode")),
            Decision::Deny => Err(format!(
                "denied for {agent:?}: {}",
                policy.evaluate(agent, subject).rule
            )),
        }
    }
}

/// The configured tag header names, for [`oracle::check_request`].
fn tag_names(config: &Config) -> oracle::TagNames<'_> {
    let h = &config.headers;
    oracle::TagNames {
        agent: &h.agent_id,
        method: &h.method,
        tool: &h.tool_name,
        prompt: &h.prompt_name,
        resource: &h.resource_uri,
    }
}

/// Drives one stream; `awaited` are list requests POSTed on an earlier stream of the session
/// whose answers the client still waits for (they may come on this one). Returns the shared
/// data store for the next stream and the list requests forwarded here whose answers the
/// client still waits for.
fn run_exchange(
    config: &Rc<Config>,
    x: &Exchange<'_>,
    shared: SharedStore,
    awaited: &[ListAsk],
    rng: &mut Rng,
) -> (SharedStore, Vec<ListAsk>) {
    let mut s = Stream::new(Rc::clone(config));
    let mut h = FuzzHost::new(shared, 1_795_306_541_000);
    h.code_details = x.code_details;

    // --- request headers
    h.add_request_header(":method", x.method);
    h.add_request_header(":path", "/mcp");
    h.add_request_header("x-request-id", "fuzz-req");
    if let Some(agent) = x.agent {
        h.add_request_header("x-agent-id", agent);
    }
    if x.session {
        h.add_request_header("mcp-session-id", "sess-fuzz");
    }
    if x.forged_tag {
        h.add_request_header("x-mcp-tool-name", "forged");
    }
    if x.traceparent {
        h.add_request_header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
    }
    for (name, value) in x.routing {
        h.add_request_header(name, value);
    }
    // The agent the request is from, as the configured identity sources name it (a header
    // counts only when sent once).
    let agent = config
        .identity
        .resolve(|source| match source {
            Source::Header(name) => match h.request_headers.get(name).map(Vec::as_slice) {
                None | Some([]) => Presented::Absent,
                Some([one]) => Presented::Value(one.clone()),
                Some(_) => Presented::Repeated,
            },
            _ => Presented::Absent,
        })
        .agent_id;
    h.phase = Phase::RequestHeaders;
    let mut action = s.on_request_headers(&mut h, x.headers_eos);
    h.request_released |= action == Action::Continue;

    // --- request body (Envoy buffers while the filter pauses)
    let mut request_ended = x.headers_eos;
    if !x.headers_eos && h.local_reply.is_none() {
        let chunks: Vec<&[u8]> = Chunks::new(x.request, x.request_chunking.clone()).collect();
        let total = chunks.len();
        let cut = if x.early_response {
            rng.below(total + 1)
        } else {
            total
        };
        for (i, chunk) in chunks.into_iter().take(cut).enumerate() {
            h.request_buffer.extend_from_slice(chunk);
            let eos = i + 1 == total && !x.trailers;
            let size = h.request_buffer.len();
            h.phase = Phase::RequestBody;
            action = s.on_request_body(&mut h, size, eos);
            h.request_released |= action == Action::Continue;
            h.pass_request(action);
            request_ended = eos;
            if h.local_reply.is_some() {
                break;
            }
        }
        if h.local_reply.is_none() && !x.early_response {
            if x.trailers {
                h.phase = Phase::RequestTrailers;
                action = s.on_request_trailers(&mut h);
                h.request_released |= action == Action::Continue;
                h.pass_request(action);
                request_ended = true;
            } else if total == 0 {
                h.phase = Phase::RequestBody;
                action = s.on_request_body(&mut h, 0, true);
                h.request_released |= action == Action::Continue;
                h.pass_request(action);
                request_ended = true;
            }
        }
    }
    h.phase = Phase::Outside;

    if let Some((status, body)) = h.local_reply.clone() {
        assert_eq!(
            action,
            Action::Pause,
            "a local reply must stop the filter chain"
        );
        assert!(
            status == 200 || (400..=599).contains(&status),
            "local reply status {status}"
        );
        check_error_body(&body, None, "local reply");
        check_audit(h.audit.as_deref(), "after a local reply");
        let audit = h.audit.clone();
        if x.reply_through_filter {
            // The local reply passes back through the filter's response callbacks.
            h.response_headers
                .insert(":status".into(), status.to_string());
            h.response_headers
                .insert("content-type".into(), "application/json".into());
            h.phase = Phase::ResponseHeaders;
            s.on_response_headers(&mut h, false);
            h.response_started = true;
            h.response_buffer = body;
            let size = h.response_buffer.len();
            h.phase = Phase::ResponseBody;
            s.on_response_body(&mut h, size, true);
            assert!(
                h.rewritten_response.is_none(),
                "a local reply was rewritten"
            );
        }
        h.phase = Phase::Log;
        s.on_stream_end(&mut h);
        assert_eq!(h.audit, audit, "audit changed after the local reply");
        h.check_no_violations();
        return (h.shared, Vec::new());
    }
    if !request_ended && !x.early_response {
        // The client never finished its request (no end_of_stream): the stream ends there.
        h.phase = Phase::Log;
        s.on_stream_end(&mut h);
        check_audit(h.audit.as_deref(), "for a request that never ended");
        h.check_no_violations();
        return (h.shared, Vec::new());
    }
    if action == Action::Pause && !x.early_response {
        panic!("request ended, filter paused, no local reply: the request would hang");
    }
    // The request went upstream whole: it may name only what the agent may use, and its tags
    // must say what it names (oracle.rs, readers independent of mcp-guard's parser).
    let mut asks: Vec<ListAsk> = Vec::new();
    if h.request_released && request_ended {
        let Some(agent) = agent.as_deref() else {
            panic!("forwarded a request no identity source identified");
        };
        let headers = h.request_headers();
        let forwarded = oracle::Forwarded {
            http_method: x.method,
            headers: &headers,
            body: &h.upstream,
        };
        asks = oracle::check_request(
            &forwarded,
            agent,
            &tag_names(config),
            &permits(config, agent),
        )
        .unwrap_or_else(|e| panic!("forwarded request: {e}"));
        ORACLE_REQUESTS.fetch_add(1, Ordering::Relaxed);
    }

    // --- response headers
    h.response_headers.insert(":status".into(), x.status.into());
    if let Some(ct) = x.content_type {
        h.response_headers.insert("content-type".into(), ct.into());
    }
    h.response_headers
        .insert("content-length".into(), x.response.len().to_string());
    if x.response_session {
        h.response_headers
            .insert("mcp-session-id".into(), "sess-upstream".into());
    }
    h.now += 7;
    h.phase = Phase::ResponseHeaders;
    let raction = s.on_response_headers(&mut h, x.response_headers_eos);
    h.phase = Phase::Outside;
    assert_eq!(raction, Action::Continue, "response headers must continue");
    h.response_started = true;
    let is_429 = x.status == "429";
    // Responses mcp-guard may rewrite besides a 429: a curated list response, and the events of
    // a server stream (held back until complete, list responses curated).
    let is_sse = x
        .content_type
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("text/event-stream"));
    let server_stream = x.method != "POST" && is_sse;
    let list_request = ["\"tools/list\"", "\"prompts/list\"", "\"resources/list\""]
        .iter()
        .any(|m| x.request.windows(m.len()).any(|w| w == m.as_bytes()));
    if is_429 && !x.response_headers_eos {
        assert_eq!(
            h.response_headers.get("content-type").map(String::as_str),
            Some("application/json"),
            "a 429 about to be rewritten must be labelled JSON"
        );
        assert!(
            !h.response_headers.contains_key("content-length"),
            "stale content-length on a rewritten 429"
        );
    }
    // A record is written at response headers only when they settle the stream (no body, or a
    // 429); otherwise once the outcome is known, or at the end of the stream (checked below).
    if x.response_headers_eos || is_429 {
        check_audit(
            h.audit.as_deref(),
            "once the response headers ended the stream or were a 429",
        );
    } else if h.audit.is_some() {
        check_audit(h.audit.as_deref(), "after the response headers");
    }

    // --- response body
    let mut ended = x.response_headers_eos;
    if !x.response_headers_eos {
        let chunks: Vec<&[u8]> = Chunks::new(x.response, x.response_chunking.clone()).collect();
        let total = chunks.len();
        let mut growth: isize = 0;
        for (i, chunk) in chunks.iter().enumerate() {
            h.response_buffer.extend_from_slice(chunk);
            let eos = i + 1 == total && !x.reset;
            let size = h.response_buffer.len();
            h.now += 1;
            h.phase = Phase::ResponseBody;
            let audit_before = h.audit.as_ref().map_or(0, Vec::capacity);
            let meter = Meter::start();
            let a = s.on_response_body(&mut h, size, eos);
            if !eos {
                // The host's copy of the audit records is not the stream's heap (it was
                // first written here once the outcome was found early).
                let audit_after = h.audit.as_ref().map_or(0, Vec::capacity);
                growth += meter.net() - (audit_after as isize - audit_before as isize);
            }
            h.phase = Phase::Outside;
            h.pass_response(a);
            ended = eos;
        }
        if total == 0 && !x.reset {
            h.phase = Phase::ResponseBody;
            let a = s.on_response_body(&mut h, 0, true);
            h.phase = Phase::Outside;
            h.pass_response(a);
            ended = true;
        }
        let growth = usize::try_from(growth).unwrap_or(0);
        // A server stream holds back an incomplete SSE event for curation (bounded by
        // curation::MAX_HELD_EVENT); a list response is held whole (bounded by Envoy's buffer).
        let bound = if server_stream || list_request {
            STREAM_RESPONSE_HEAP_BOUND + 2 * x.response.len()
        } else {
            STREAM_RESPONSE_HEAP_BOUND
        };
        assert!(
            growth <= bound,
            "the stream kept {growth} more heap bytes over {} response bytes",
            x.response.len()
        );
        note_max(
            &MAX_STREAM_HEAP,
            growth,
            "stream heap growth over response chunks",
        );
    }
    if is_429 && ended && !x.response_headers_eos {
        let body = h
            .rewritten_response
            .clone()
            .unwrap_or_else(|| panic!("429 body not rewritten"));
        check_error_body(&body, Some(i64::from(RATE_LIMITED)), "rewritten 429 body");
    } else if !is_429 && !server_stream && !list_request {
        assert!(
            h.rewritten_response.is_none(),
            "a {} response body was rewritten",
            x.status
        );
    }

    // What the client got for a list request (POSTed here, or awaited from an earlier POST):
    // only entries the agent may use, however a client reads it.
    let lists: Vec<ListAsk> = asks.iter().chain(awaited).cloned().collect();
    if let (false, Some(agent)) = (lists.is_empty(), agent.as_deref()) {
        oracle::check_list_response(&h.downstream, &lists, &permits(config, agent))
            .unwrap_or_else(|e| panic!("list response: {e}"));
        ORACLE_LISTS.fetch_add(1, Ordering::Relaxed);
    }
    // A client still waits for an answer on the session's server stream when the POST's
    // response was a 202 or an SSE stream that did not carry it (Streamable HTTP, resumable).
    let status = x.status.trim().parse::<u16>().ok();
    let waits = x.session && matches!(status, Some(200..=299)) && (status == Some(202) || is_sse);
    let still = if waits {
        oracle::unanswered(&h.downstream, &asks)
    } else {
        Vec::new()
    };

    // --- the stream is over (Envoy's log callback): its records must be there.
    h.phase = Phase::Log;
    s.on_stream_end(&mut h);
    check_audit(h.audit.as_deref(), "at the end of the stream");
    h.check_no_violations();
    (h.shared, still)
}

/// Builds a `stream` input (for seed files): control bytes, request, separator, response.
pub fn stream_input(control: [u8; STREAM_CONTROL_LEN], request: &[u8], response: &[u8]) -> Vec<u8> {
    let mut v = control.to_vec();
    v.extend_from_slice(request);
    v.extend_from_slice(STREAM_SEPARATOR);
    v.extend_from_slice(response);
    v
}

/// A target: checks one input, panics on a finding.
pub type Target = fn(&[u8]);

/// The targets by name, for replaying corpora.
pub const TARGETS: [(&str, Target); 4] = [
    ("request_parser", request_parser),
    ("sse_scanner", sse_scanner),
    ("response_scanner", response_scanner),
    ("stream", stream),
];
