//! THE fake host: an in-memory [`Host`] for the unit tests (`cfg(test)`), the fuzz targets and
//! the benches (feature `fake-host`), with the tools they share: a counting global allocator
//! ([`CountingAlloc`], [`Meter`]) and a deterministic generator ([`Rng`]). Never part of the
//! shipped module.
//!
//! [`FakeHost`] behaves like Envoy for one stream: header maps (a header sent twice is two
//! pairs), the buffered request body and the current response chunk, local replies, filter
//! state, shared data with compare-and-swap, counters by stat name, gRPC calls, and reads that
//! fail on demand ([`FakeHost::failing`]). With [`FakeHost::phase`] set (a driver that says
//! which callback runs, as the fuzz target and the scenario helpers do), it also checks the
//! phase rules of proxy-wasm hostcalls: a hostcall Envoy would fail in that callback (and on
//! which the SDK may panic, trapping the VM) is recorded in [`FakeHost::violations`], and a
//! read made there fails.

// Test support: a failed check is reported, not recovered from.
#![allow(clippy::indexing_slicing)]

use super::{Action, Headers, Host, ReadError, SharedData};
use crate::metrics::{Metric, ToolLabels};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

/// proxy-wasm shared data as Envoy keeps it: one map for every worker's VM (shared between the
/// fake hosts of several streams by cloning the `Rc`), key → (value, CAS token); the token
/// changes on every write.
pub type SharedStore = Rc<RefCell<BTreeMap<String, (Vec<u8>, u32)>>>;

impl SharedData for SharedStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Option<u32>)>, ReadError> {
        Ok(match self.borrow().get(key) {
            Some((v, cas)) if !v.is_empty() => Some((v.clone(), Some(*cas))),
            _ => None,
        })
    }
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut map = self.borrow_mut();
        let current = map.get(key).map(|(_, c)| *c);
        // As Envoy: a token is compared only with an existing key's.
        if let (Some(want), Some(have)) = (cas, current) {
            if want != have {
                return false;
            }
        }
        let next = current.unwrap_or(0).wrapping_add(1);
        map.insert(key.to_owned(), (value.to_vec(), next));
        true
    }
}

/// Shared data whose every read fails and whose writes are refused ([`Read::SharedData`]).
#[derive(Debug, Default)]
pub struct UnreadableStore;

impl SharedData for UnreadableStore {
    fn get(&self, _key: &str) -> Result<Option<(Vec<u8>, Option<u32>)>, ReadError> {
        Err(ReadError)
    }
    fn set(&mut self, _key: &str, _value: &[u8], _cas: Option<u32>) -> bool {
        false
    }
}

/// A host read [`FakeHost`] can fail ([`FakeHost::failing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// [`Host::request_headers`].
    RequestHeaders,
    /// [`Host::request_body`].
    RequestBody,
    /// [`Host::response_headers`].
    ResponseHeaders,
    /// [`Host::response_body`].
    ResponseBody,
    /// [`SharedData::get`] (and writes are refused).
    SharedData,
}

/// The callback Envoy is running, which decides the hostcalls it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `on_http_request_headers`.
    RequestHeaders,
    /// `on_http_request_body`.
    RequestBody,
    /// `on_http_request_trailers`.
    RequestTrailers,
    /// `on_grpc_call_response`.
    GrpcResponse,
    /// `on_http_response_headers`.
    ResponseHeaders,
    /// `on_http_response_body`.
    ResponseBody,
    /// `on_log`.
    Log,
    /// Between callbacks: no hostcall is valid.
    Outside,
}

/// A gRPC call the filter started: (gRPC service, service, method, message, timeout in ms).
pub type GrpcCall = (String, String, String, Vec<u8>, u64);

/// The in-memory host of one stream. Every field is public: a test sets up the request and
/// response in them and reads back what the filter did.
#[derive(Debug, Default)]
pub struct FakeHost {
    /// Request headers by lower-case name (the first value of each).
    pub request_headers: BTreeMap<String, String>,
    /// Further values of a request header sent more than once (after the one above).
    pub repeated_headers: BTreeMap<String, Vec<String>>,
    /// The buffered request body (what [`Host::request_body`] reads).
    pub request_body: Vec<u8>,
    /// Request headers replaced or removed, by name, in order.
    pub request_header_writes: Vec<String>,
    /// Response headers by lower-case name (the first value of each).
    pub response_headers: BTreeMap<String, String>,
    /// Further values of a response header sent more than once.
    pub repeated_response_headers: BTreeMap<String, Vec<String>>,
    /// The current (or buffered) response body (what [`Host::response_body`] reads).
    pub response_chunk: Vec<u8>,
    /// The response body after the filter's last [`Host::set_response_body`].
    pub replaced_response_body: Option<Vec<u8>>,
    /// The local reply sent: status and body.
    pub local_reply: Option<(u32, Vec<u8>)>,
    /// Headers of the local reply besides content-type.
    pub reply_headers: Vec<(String, String)>,
    /// The audit records last written to filter state.
    pub audit: Vec<u8>,
    /// How often the audit records were written.
    pub audit_writes: usize,
    /// Length of the audit records last written (kept in [`FakeHost::lean`] mode too).
    pub audit_len: usize,
    /// Other filter state written ([`Host::write_filter_state`]), by key: the last value.
    pub filter_state: BTreeMap<String, Vec<u8>>,
    /// How many [`Host::write_filter_state`] calls were made.
    pub filter_state_writes: usize,
    /// Wall-clock time, Unix ms.
    pub now: u64,
    /// Shared data (clone the `Rc` to share it between streams).
    pub shared: SharedStore,
    /// Envoy's `response.code_details`.
    pub code_details: Option<String>,
    /// The route's upstream cluster (`None`: unknown).
    pub upstream_cluster: Option<String>,
    /// Envoy attributes by path joined with `/`.
    pub properties: BTreeMap<String, String>,
    /// Attribute paths (joined with `/`) whose read fails.
    pub unreadable: Vec<String>,
    /// Reads whose hostcall fails.
    pub failing: Vec<Read>,
    /// Counters by stat name.
    pub counters: BTreeMap<String, u64>,
    /// The tool labels of this host's counters (as a worker keeps them).
    pub labels: ToolLabels,
    /// gRPC calls started.
    pub grpc_calls: Vec<GrpcCall>,
    /// The host refuses to start gRPC calls.
    pub grpc_refused: bool,
    /// How often the request was resumed.
    pub resumed: usize,
    /// The callback running, when a driver says so (`None`: phase rules are not checked).
    pub phase: Option<Phase>,
    /// The request headers went upstream (a request callback returned Continue).
    pub request_released: bool,
    /// The response headers went downstream.
    pub response_started: bool,
    /// The request body bytes passed on upstream so far ([`FakeHost::pass_request`]).
    pub upstream: Vec<u8>,
    /// The response body bytes passed on to the client so far ([`FakeHost::pass_response`]).
    pub downstream: Vec<u8>,
    /// Hostcalls made in a phase where Envoy fails them, and invalid stat names.
    pub violations: RefCell<Vec<String>>,
    /// For benches: keep no copies the filter does not cause. Counters are only summed into
    /// [`FakeHost::counted`] (no stat names), request-header writes are not logged, and a
    /// replaced response body and the audit records are kept only as their lengths
    /// ([`FakeHost::replaced_len`], [`FakeHost::audit_len`]).
    pub lean: bool,
    /// Every counter increment summed ([`FakeHost::lean`]).
    pub counted: u64,
    /// Length of the response body after the last [`Host::set_response_body`].
    pub replaced_len: usize,
    unreadable_store: UnreadableStore,
}

impl FakeHost {
    /// A host at time `now` (Unix ms) on the shared data `shared`.
    pub fn new(shared: SharedStore, now: u64) -> Self {
        FakeHost {
            shared,
            now,
            upstream_cluster: Some("mcp_demo".to_owned()),
            ..FakeHost::default()
        }
    }

    /// Adds one value of a request header (a header may be sent more than once).
    pub fn add_request_header(&mut self, name: &str, value: &str) {
        if self.request_headers.contains_key(name) {
            self.repeated_headers
                .entry(name.to_owned())
                .or_default()
                .push(value.to_owned());
        } else {
            self.request_headers
                .insert(name.to_owned(), value.to_owned());
        }
    }

    /// Adds one value of a response header.
    pub fn add_response_header(&mut self, name: &str, value: &str) {
        if self.response_headers.contains_key(name) {
            self.repeated_response_headers
                .entry(name.to_owned())
                .or_default()
                .push(value.to_owned());
        } else {
            self.response_headers
                .insert(name.to_owned(), value.to_owned());
        }
    }

    /// The audit records written, if any were.
    pub fn audit(&self) -> Option<&[u8]> {
        (self.audit_writes > 0).then_some(self.audit.as_slice())
    }

    /// After a request callback: on `Continue` the headers have gone upstream, and Envoy passes
    /// the buffered body on.
    pub fn pass_request(&mut self, action: Action) {
        if action == Action::Continue {
            self.request_released = true;
            let chunk = std::mem::take(&mut self.request_body);
            self.upstream.extend_from_slice(&chunk);
        }
    }

    /// After a response callback: on `Continue` Envoy passes the buffered body on downstream.
    pub fn pass_response(&mut self, action: Action) {
        if action == Action::Continue {
            let chunk = std::mem::take(&mut self.response_chunk);
            self.downstream.extend_from_slice(&chunk);
        }
    }

    /// Hostcalls made in the wrong phase so far (empty when every one was valid).
    pub fn violations(&self) -> Vec<String> {
        self.violations.borrow().clone()
    }

    fn violation(&self, what: &str) {
        let text = format!("{what} in {:?}", self.phase);
        self.violations.borrow_mut().push(text);
    }

    /// Whether the driver says the callback running is none of `allowed` (unchecked: never).
    fn outside(&self, allowed: &[Phase]) -> bool {
        self.phase.is_some_and(|p| !allowed.contains(&p))
    }

    fn read(&self, read: Read) -> Result<(), ReadError> {
        if self.failing.contains(&read) {
            Err(ReadError)
        } else {
            Ok(())
        }
    }

    fn pairs(
        first: &BTreeMap<String, String>,
        more: &BTreeMap<String, Vec<String>>,
    ) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        for (name, value) in first {
            pairs.push((name.clone(), value.clone()));
            for extra in more.get(name).into_iter().flatten() {
                pairs.push((name.clone(), extra.clone()));
            }
        }
        pairs
    }
}

impl Host for FakeHost {
    fn request_headers(&self) -> Result<Headers, ReadError> {
        self.read(Read::RequestHeaders)?;
        Ok(Self::pairs(&self.request_headers, &self.repeated_headers).into())
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        use Phase::{GrpcResponse, RequestBody, RequestHeaders, RequestTrailers};
        if self.outside(&[RequestHeaders, RequestBody, RequestTrailers, GrpcResponse])
            || (self.phase.is_some() && self.request_released)
        {
            self.violation("set_request_header after the request headers went upstream");
        }
        if !self.lean {
            self.request_header_writes.push(name.to_owned());
        }
        // As Envoy: a removal removes every copy; a replace (`setCopy`, without the runtime
        // feature `http_set_copy_replace_all_headers`) may leave further copies.
        match value {
            Some(v) => {
                self.request_headers.insert(name.to_owned(), v.to_owned());
            }
            None => {
                self.request_headers.remove(name);
                self.repeated_headers.remove(name);
            }
        }
    }
    fn request_body(&self, size: usize) -> Result<Option<Vec<u8>>, ReadError> {
        if self.outside(&[Phase::RequestBody, Phase::RequestTrailers]) {
            self.violation("request_body outside the request body/trailers callbacks");
            return Err(ReadError);
        }
        self.read(Read::RequestBody)?;
        Ok(self.request_body.get(..size).map(<[u8]>::to_vec))
    }
    fn response_headers(&self) -> Result<Headers, ReadError> {
        if self.outside(&[Phase::ResponseHeaders]) {
            // Seen with Envoy: reading a response header in the body callback panicked in
            // proxy-wasm's hostcalls and trapped the VM.
            self.violation("response_headers outside the response headers callback");
            return Err(ReadError);
        }
        self.read(Read::ResponseHeaders)?;
        Ok(Self::pairs(&self.response_headers, &self.repeated_response_headers).into())
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        if self.outside(&[Phase::ResponseHeaders]) {
            self.violation("set_response_header outside the response headers callback");
        }
        match value {
            Some(v) => {
                self.response_headers.insert(name.to_owned(), v.to_owned());
            }
            None => {
                self.response_headers.remove(name);
                self.repeated_response_headers.remove(name);
            }
        }
    }
    fn response_body(&self, start: usize, size: usize) -> Result<Option<Vec<u8>>, ReadError> {
        if self.outside(&[Phase::ResponseBody]) {
            self.violation("response_body outside the response body callback");
            return Err(ReadError);
        }
        self.read(Read::ResponseBody)?;
        let end = start.saturating_add(size);
        Ok(self.response_chunk.get(start..end).map(<[u8]>::to_vec))
    }
    fn set_response_body(&mut self, size: usize, data: &[u8]) {
        if self.outside(&[Phase::ResponseBody]) {
            self.violation("set_response_body outside the response body callback");
            return;
        }
        if self.lean {
            let rest = self.response_chunk.len().saturating_sub(size);
            self.replaced_len = data.len() + rest;
            return;
        }
        // Replaces the first `size` bytes; what follows them stays.
        let keep = self.response_chunk.get(size..).unwrap_or_default().to_vec();
        let mut body = data.to_vec();
        body.extend_from_slice(&keep);
        self.replaced_len = body.len();
        self.response_chunk = body.clone();
        self.replaced_response_body = Some(body);
    }
    fn send_local_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        if self.phase.is_some()
            && (self.response_started
                || self.local_reply.is_some()
                || self.phase == Some(Phase::Log))
        {
            self.violation("send_local_reply after the response started");
        }
        self.local_reply = Some((status, body.to_vec()));
        self.reply_headers = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    }
    fn grpc_call(
        &mut self,
        grpc_service: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout_ms: u64,
    ) -> Option<u32> {
        if self.outside(&[Phase::RequestBody, Phase::RequestTrailers]) {
            self.violation("grpc_call outside the request body/trailers callbacks");
        }
        if self.grpc_refused {
            return None;
        }
        self.grpc_calls.push((
            grpc_service.to_owned(),
            service.to_owned(),
            method.to_owned(),
            message.to_vec(),
            timeout_ms,
        ));
        u32::try_from(40 + self.grpc_calls.len()).ok()
    }
    fn resume_request(&mut self) {
        if self.outside(&[Phase::GrpcResponse]) || self.grpc_calls.is_empty() {
            self.violation("resume_request without a pending call");
        }
        self.resumed += 1;
    }
    fn upstream_cluster(&self) -> Option<String> {
        self.upstream_cluster.clone()
    }
    fn write_audit(&mut self, records: &[u8]) {
        self.audit_len = records.len();
        self.audit_writes += 1;
        if self.lean {
            return;
        }
        self.audit = records.to_vec();
    }
    fn write_filter_state(&mut self, key: &str, value: &[u8]) {
        self.filter_state_writes += 1;
        if self.lean {
            return;
        }
        self.filter_state.insert(key.to_owned(), value.to_vec());
    }
    fn now_ms(&self) -> u64 {
        self.now
    }
    fn shared(&mut self) -> &mut dyn SharedData {
        if self.failing.contains(&Read::SharedData) {
            return &mut self.unreadable_store;
        }
        &mut self.shared
    }
    fn property(&self, path: &[&str]) -> Result<Option<String>, ReadError> {
        let path = path.join("/");
        if self.unreadable.contains(&path) {
            return Err(ReadError);
        }
        Ok(self.properties.get(&path).cloned())
    }
    fn count(&mut self, metric: Metric<'_>, by: u64) {
        self.counted += by;
        if self.lean {
            return;
        }
        let name = metric.name(&mut self.labels);
        // Stat names must be valid for Envoy: no empty segment, bounded length.
        if name.contains("..") || name.len() >= 256 {
            self.violation(&format!("bad stat name {name:?}"));
        }
        *self.counters.entry(name).or_insert(0) += by;
    }
    fn response_code_details(&self) -> Option<String> {
        if self.outside(&[Phase::Log]) {
            return None; // only meaningful once the stream is over
        }
        self.code_details.clone()
    }
}

// ------------------------------------------------------------------------- heap accounting

/// A global allocator that counts, per thread, the live heap bytes (and their peak) and the
/// allocations made (and their bytes), forwarding every call to the system allocator. Install
/// it with `#[global_allocator] static A: CountingAlloc = CountingAlloc;` and read it with
/// [`Meter`].
pub struct CountingAlloc;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
}

fn account(delta: isize, allocated: Option<usize>) {
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
    if let Some(bytes) = allocated {
        let _ = ALLOCS.try_with(|n| n.set(n.get().wrapping_add(1)));
        let _ = ALLOCATED.try_with(|n| n.set(n.get().wrapping_add(bytes as u64)));
    }
}

fn size_of_layout(layout: Layout) -> isize {
    isize::try_from(layout.size()).unwrap_or(isize::MAX)
}

// SAFETY: every call is forwarded unchanged to the system allocator; only counters are added.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            account(size_of_layout(layout), Some(layout.size()));
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            account(size_of_layout(layout), Some(layout.size()));
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) };
        account(-size_of_layout(layout), None);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            let delta = isize::try_from(new_size).unwrap_or(isize::MAX) - size_of_layout(layout);
            account(delta, Some(new_size));
        }
        p
    }
}

/// Measures the heap of the current thread from the moment it is started ([`CountingAlloc`]).
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    base: isize,
    allocs: u64,
    allocated: u64,
}

impl Meter {
    /// Starts measuring: the peak is reset to the current live size.
    pub fn start() -> Meter {
        let base = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(base));
        Meter {
            base,
            allocs: ALLOCS.with(Cell::get),
            allocated: ALLOCATED.with(Cell::get),
        }
    }
    /// Highest live size since `start`, minus the live size at `start`.
    pub fn peak(&self) -> usize {
        usize::try_from(PEAK.with(Cell::get) - self.base).unwrap_or(0)
    }
    /// Live size now, minus the live size at `start` (negative: more was freed).
    pub fn net(&self) -> isize {
        LIVE.with(Cell::get) - self.base
    }
    /// Allocations (and reallocations) since `start`.
    pub fn allocs(&self) -> u64 {
        ALLOCS.with(Cell::get).wrapping_sub(self.allocs)
    }
    /// Bytes requested by those allocations (a reallocation counts its new size).
    pub fn allocated(&self) -> u64 {
        ALLOCATED.with(Cell::get).wrapping_sub(self.allocated)
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

// ------------------------------------------------------------------------- randomness

/// Deterministic xorshift generator (no dependency), for chunkings and mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator with this seed (0 becomes 1: xorshift stays at 0 forever).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    /// A generator seeded with the FNV-1a hash of `seed` (never zero).
    pub fn from_bytes(seed: &[u8]) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in seed {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h | 1)
    }
    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % (n.max(1) as u64)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostcalls_in_the_wrong_phase_are_recorded_and_reads_there_fail() {
        let mut h = FakeHost::new(SharedStore::default(), 0);
        h.response_headers.insert(":status".into(), "200".into());
        // Unchecked (no driver): everything answers.
        assert!(h.response_headers().is_ok());
        h.phase = Some(Phase::ResponseHeaders);
        assert!(h.response_headers().is_ok());
        assert!(h.violations().is_empty());
        // As Envoy: response headers cannot be read in the body callback.
        h.phase = Some(Phase::ResponseBody);
        assert_eq!(h.response_headers(), Err(ReadError));
        h.set_request_header("x", Some("y"));
        assert_eq!(h.violations().len(), 2, "{:?}", h.violations());
        // A failing read fails in its own phase too.
        h.failing = vec![Read::ResponseBody];
        assert_eq!(h.response_body(0, 1), Err(ReadError));
    }
}
