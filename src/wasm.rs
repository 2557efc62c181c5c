//! proxy-wasm glue (proxy-wasm ABI 0.2.1, Rust SDK `proxy-wasm` 0.2): the root context parses
//! the plugin configuration once per `on_configure`; each HTTP context forwards Envoy's
//! callbacks to a [`Stream`] through [`WasmHost`], which maps [`Host`] onto hostcalls.
//!
//! Hostcalls go through the `Result`-returning `proxy_wasm::hostcalls` functions, never the
//! context-trait helpers that unwrap. The reads the filter acts on (header maps, body buffers,
//! shared data) go further: the SDK's `get_map_bytes`, `get_buffer` and `get_shared_data`
//! panic on any status other than `Ok` / `NotFound` (and `get_map_bytes` unwraps UTF-8 on
//! header names), so they are made here through the ABI functions themselves ([`abi`]), and
//! every status other than `Ok` / `NotFound` is a [`ReadError`] the stream acts on (fail
//! closed). A failed write, or a failed best-effort read, is logged and reads as "absent". A
//! panic would trap the VM for every stream on the worker.

use crate::config::Config;
use crate::filter::{self, Stream};
use crate::host::{Action, Headers, Host, ReadError, SharedData};
use crate::metrics::{Metric, Stats};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action as WasmAction, BufferType, ContextType, MapType, MetricType};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

/// Filter state key of the audit records; Envoy's access log reads it as
/// `%FILTER_STATE(wasm.mcp_audit:PLAIN)%`.
pub const AUDIT_PROPERTY: &str = "mcp_audit";

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// The root context: holds the compiled configuration shared by every stream.
#[derive(Default)]
pub struct Root {
    config: Option<Rc<Config>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        match Config::from_json(&bytes) {
            Ok(config) => {
                count(&Metric::ConfigLoad, 1);
                log::info!("mcp-guard: configuration loaded");
                self.config = Some(Rc::new(config));
                true
            }
            Err(errors) => {
                count(&Metric::ConfigReject, 1);
                // One log line listing every problem, each with its field's path.
                let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
                log::error!(
                    "mcp-guard: invalid plugin configuration ({} problem(s)): {}",
                    all.len(),
                    all.join("; ")
                );
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            stream: self.config.clone().map(Stream::new),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP stream. `stream` is `None` only if no configuration was ever accepted, in which
/// case every request is refused (fail closed).
pub struct Http {
    stream: Option<Stream>,
}

impl Context for Http {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let message = if response_size > 0 {
            logged(
                "get gRPC response",
                hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, response_size),
            )
        } else {
            None
        };
        stream.on_grpc_response(&mut WasmHost, token_id, status_code, message.as_deref());
    }
}

fn to_wasm(action: Action) -> WasmAction {
    match action {
        Action::Continue => WasmAction::Continue,
        Action::Pause => WasmAction::Pause,
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> WasmAction {
        fault_injection::maybe_trap();
        match self.stream.as_mut() {
            Some(s) => to_wasm(s.on_request_headers(&mut WasmHost, end_of_stream)),
            None => {
                let body = crate::jsonrpc::error_response(
                    None,
                    filter::NOT_CONFIGURED,
                    "mcp-guard is not configured",
                );
                WasmHost.send_local_reply(503, &[], body.as_bytes());
                WasmAction::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> WasmAction {
        self.stream.as_mut().map_or(WasmAction::Continue, |s| {
            to_wasm(s.on_request_body(&mut WasmHost, body_size, end_of_stream))
        })
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> WasmAction {
        self.stream.as_mut().map_or(WasmAction::Continue, |s| {
            to_wasm(s.on_request_trailers(&mut WasmHost))
        })
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> WasmAction {
        self.stream.as_mut().map_or(WasmAction::Continue, |s| {
            to_wasm(s.on_response_headers(&mut WasmHost, end_of_stream))
        })
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> WasmAction {
        self.stream.as_mut().map_or(WasmAction::Continue, |s| {
            to_wasm(s.on_response_body(&mut WasmHost, body_size, end_of_stream))
        })
    }

    fn on_log(&mut self) {
        if let Some(s) = self.stream.as_mut() {
            s.on_stream_end(&mut WasmHost);
        }
    }
}

/// Test-only fault injection. Built only with `--features fault-injection` (`make wasm-fault`,
/// a separate module that is never shipped): a request carrying `x-mcp-guard-fault: trap` traps
/// the Wasm VM, so the e2e suite can show what `failure_policy: FAIL_CLOSED` does when the VM
/// fails. The shipped build compiles this to nothing.
mod fault_injection {
    #[cfg(all(feature = "fault-injection", target_arch = "wasm32"))]
    pub fn maybe_trap() {
        let value = proxy_wasm::hostcalls::get_map_value(
            proxy_wasm::types::MapType::HttpRequestHeaders,
            "x-mcp-guard-fault",
        );
        if matches!(value, Ok(Some(v)) if v == "trap") {
            core::arch::wasm32::unreachable();
        }
    }

    #[cfg(not(all(feature = "fault-injection", target_arch = "wasm32")))]
    pub fn maybe_trap() {}
}

/// This worker's stats (one VM per worker thread; stats are defined once per VM): stat ids by
/// bounded key, at most `crate::metrics::MAX_STATS` of them (see `crate::metrics` "Bounds").
type Metrics = Stats<u32>;

fn define(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, name)
        .map_err(|status| log::warn!("mcp-guard: cannot define stat {name}: {status:?}"))
        .ok()
}

thread_local! {
    static METRICS: RefCell<Metrics> = RefCell::new(Metrics::default());
}

/// Adds `by` to the counter for `metric`, defining it on first use. A failed hostcall is
/// logged and otherwise ignored: metrics never affect a request.
fn count(metric: &Metric<'_>, by: u64) {
    if by == 0 {
        return;
    }
    METRICS.with(|cell| {
        let Ok(mut metrics) = cell.try_borrow_mut() else {
            return;
        };
        let Some(id) = metrics.id(metric, define) else {
            return;
        };
        let by = i64::try_from(by).unwrap_or(i64::MAX);
        if let Err(status) = hostcalls::increment_metric(id, by) {
            log::debug!("mcp-guard: cannot increment a stat: {status:?}");
        }
    });
}

/// Logs a failed read and returns the [`ReadError`] the stream acts on.
fn read_failed(what: &str, status: u32) -> ReadError {
    log::warn!("mcp-guard: hostcall {what} failed: status {status}");
    ReadError
}

/// [`Host`] over proxy-wasm hostcalls, for the stream whose callback is running.
pub struct WasmHost;

fn logged<T: Default>(what: &str, result: Result<T, proxy_wasm::types::Status>) -> T {
    result.unwrap_or_else(|status| {
        log::warn!("mcp-guard: hostcall {what} failed: {status:?}");
        T::default()
    })
}

impl Host for WasmHost {
    fn request_headers(&self) -> Result<Headers, ReadError> {
        abi::header_pairs(MapType::HttpRequestHeaders)
            .map_err(|e| read_failed("get request headers", e))
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        logged(
            "set request header",
            hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value),
        );
    }

    fn request_body(&self, size: usize) -> Result<Option<Vec<u8>>, ReadError> {
        abi::buffer(BufferType::HttpRequestBody, 0, size)
            .map_err(|e| read_failed("get request body", e))
    }

    fn response_headers(&self) -> Result<Headers, ReadError> {
        abi::header_pairs(MapType::HttpResponseHeaders)
            .map_err(|e| read_failed("get response headers", e))
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        logged(
            "set response header",
            hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value),
        );
    }

    fn response_body(&self, start: usize, size: usize) -> Result<Option<Vec<u8>>, ReadError> {
        abi::buffer(BufferType::HttpResponseBody, start, size)
            .map_err(|e| read_failed("get response body", e))
    }

    fn set_response_body(&mut self, size: usize, data: &[u8]) {
        logged(
            "set response body",
            hostcalls::set_buffer(BufferType::HttpResponseBody, 0, size, data),
        );
    }

    fn send_local_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let mut all = Vec::with_capacity(headers.len() + 1);
        all.push(("content-type", "application/json"));
        all.extend_from_slice(headers);
        logged(
            "send local reply",
            hostcalls::send_http_response(status, all, Some(body)),
        );
    }

    fn grpc_call(
        &mut self,
        grpc_service: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout_ms: u64,
    ) -> Option<u32> {
        // Envoy answers ParseFailure / InternalFailure when it cannot start the call (which
        // the SDK returns as errors); an unreachable cluster is a later UNAVAILABLE answer.
        hostcalls::dispatch_grpc_call(
            grpc_service,
            service,
            method,
            Vec::new(),
            Some(message),
            std::time::Duration::from_millis(timeout_ms),
        )
        .map_err(|status| log::warn!("mcp-guard: cannot start a gRPC call: {status:?}"))
        .ok()
    }

    fn resume_request(&mut self) {
        logged("resume request", hostcalls::resume_http_request());
    }

    fn upstream_cluster(&self) -> Option<String> {
        logged(
            "get property xds.cluster_name",
            hostcalls::get_property(vec!["xds", "cluster_name"]),
        )
        .and_then(|bytes| String::from_utf8(bytes).ok())
    }

    fn write_audit(&mut self, records: &[u8]) {
        logged(
            "set filter state",
            hostcalls::set_property(vec![AUDIT_PROPERTY], Some(records)),
        );
    }

    fn write_filter_state(&mut self, key: &str, value: &[u8]) {
        logged(
            "set filter state",
            hostcalls::set_property(vec![key], Some(value)),
        );
    }

    fn shared(&mut self) -> &mut dyn SharedData {
        self
    }

    fn property(&self, path: &[&str]) -> Result<Option<String>, ReadError> {
        // proxy-wasm maps Envoy's NotFound to Ok(None); SerializationFailure and
        // InternalFailure are errors: the value exists (or may) and could not be read.
        match hostcalls::get_property(path.to_vec()) {
            Ok(bytes) => Ok(bytes.map(|bytes| String::from_utf8_lossy(&bytes).into_owned())),
            Err(status) => {
                log::warn!("mcp-guard: hostcall get property failed: {status:?}");
                Err(ReadError)
            }
        }
    }

    fn count(&mut self, metric: Metric<'_>, by: u64) {
        count(&metric, by);
    }

    fn response_code_details(&self) -> Option<String> {
        logged(
            "get property response.code_details",
            hostcalls::get_property(vec!["response", "code_details"]),
        )
        .and_then(|bytes| String::from_utf8(bytes).ok())
    }

    fn now_ms(&self) -> u64 {
        logged("get current time", hostcalls::get_current_time().map(Some))
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_millis()).ok())
            .unwrap_or(0)
    }
}

impl SharedData for WasmHost {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Option<u32>)>, ReadError> {
        match abi::shared_data(key).map_err(|e| read_failed("get shared data", e))? {
            (Some(value), cas) if !value.is_empty() => Ok(Some((value, cas))),
            _ => Ok(None),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        // A CAS mismatch is an expected race (another worker took the slot), not a failure.
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }
}

/// The proxy-wasm ABI 0.2.1 reads the filter acts on, made directly so that every status is an
/// answer: `Ok` with data, `Ok` without data or `NotFound` (absent), anything else
/// (`BadArgument`, `SerializationFailure`, `InternalFailure`, or a status the ABI does not
/// define) an error carrying the raw status. The SDK's wrappers of the same calls panic on the
/// latter. The host writes the returned data into a buffer it obtained from the SDK's
/// `proxy_on_memory_allocate` (a boxed `[u8]` of exactly the returned size), which is taken back
/// here as a `Vec` of that length and capacity, as the SDK does.
mod abi {
    use crate::host::Headers;
    use proxy_wasm::types::{BufferType, MapType};
    use std::ptr::null_mut;

    /// ABI status `Ok` and `NotFound` (proxy-wasm spec, "Status codes").
    const OK: u32 = 0;
    const NOT_FOUND: u32 = 1;

    // The same imports the SDK declares, with the status as a plain `u32`: a status outside
    // the SDK's `Status` enum must not be read as that enum.
    #[allow(clashing_extern_declarations)]
    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_get_buffer_bytes(
            buffer_type: u32,
            start: usize,
            max_size: usize,
            return_buffer_data: *mut *mut u8,
            return_buffer_size: *mut usize,
        ) -> u32;
        fn proxy_get_header_map_pairs(
            map_type: u32,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> u32;
        fn proxy_get_shared_data(
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
            return_cas: *mut u32,
        ) -> u32;
    }

    /// Takes ownership of a buffer the host returned (`None` for a null pointer).
    ///
    /// # Safety
    /// `data` is null or was allocated by `proxy_on_memory_allocate(size)`.
    unsafe fn owned(data: *mut u8, size: usize) -> Option<Vec<u8>> {
        if data.is_null() {
            None
        } else {
            // SAFETY: the SDK's allocator made a boxed slice of exactly `size` bytes there.
            Some(unsafe { Vec::from_raw_parts(data, size, size) })
        }
    }

    /// `proxy_get_buffer_bytes`: up to `max_size` bytes from `start` of a buffer.
    pub fn buffer(kind: BufferType, start: usize, max_size: usize) -> Result<Option<Vec<u8>>, u32> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: the host writes only the two return slots passed here.
        let status =
            unsafe { proxy_get_buffer_bytes(kind as u32, start, max_size, &mut data, &mut size) };
        // SAFETY: on any status, a non-null `data` is a buffer the host allocated for us.
        let bytes = unsafe { owned(data, size) };
        match status {
            OK => Ok(bytes),
            NOT_FOUND => Ok(None),
            other => Err(other),
        }
    }

    /// `proxy_get_header_map_pairs`: every pair of a header map ([`decode_pairs`]).
    pub fn header_pairs(map: MapType) -> Result<Headers, u32> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: the host writes only the two return slots passed here.
        let status = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
        // SAFETY: as in `buffer`.
        let bytes = unsafe { owned(data, size) };
        match status {
            OK => match bytes {
                Some(bytes) => decode_pairs(&bytes).map(Headers::from).ok_or(OK),
                None => Ok(Headers::default()),
            },
            NOT_FOUND => Ok(Headers::default()),
            other => Err(other),
        }
    }

    /// `proxy_get_shared_data`: the value of `key` and its CAS token (`None` for token 0).
    pub fn shared_data(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), u32> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        let mut cas: u32 = 0;
        // SAFETY: `key` is read for `key.len()` bytes; the host writes only the return slots.
        let status = unsafe {
            proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
        };
        // SAFETY: as in `buffer`.
        let bytes = unsafe { owned(data, size) };
        match status {
            OK => Ok((bytes, (cas != 0).then_some(cas))),
            NOT_FOUND => Ok((None, None)),
            other => Err(other),
        }
    }

    /// Decodes a serialized header map (proxy-wasm ABI: a little-endian `u32` pair count, then
    /// a `u32` name size and a `u32` value size per pair, then each name and value followed by
    /// a NUL byte). `None` if the bytes do not have that shape: a map that cannot be decoded is
    /// a failed read, never a shorter map. Names and values are read as bytes: Envoy passes
    /// header values with bytes that are not UTF-8 (obs-text, RFC 9110 §5.5), and the SDK's
    /// `get_map` unwraps a UTF-8 conversion on them (its `get_map_bytes`, on names), so one such
    /// header would trap the VM. Invalid bytes become U+FFFD, which no agent id, routing header
    /// or encoding name accepts: the value is refused or ignored, never trusted. One hostcall
    /// for the whole map: each hostcall that returns data also calls back into the VM to
    /// allocate its buffer, so reading header by header costs one round trip per header.
    pub fn decode_pairs(bytes: &[u8]) -> Option<Vec<(String, String)>> {
        fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
            let word: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
            usize::try_from(u32::from_le_bytes(word)).ok()
        }
        let count = u32_at(bytes, 0)?;
        let mut sizes = 4usize;
        let mut data = count.checked_mul(8)?.checked_add(4)?;
        let mut pairs = Vec::with_capacity(count.min(bytes.len() / 8));
        for _ in 0..count {
            let name_len = u32_at(bytes, sizes)?;
            let value_len = u32_at(bytes, sizes.checked_add(4)?)?;
            sizes = sizes.checked_add(8)?;
            let name = bytes.get(data..data.checked_add(name_len)?)?;
            data = data.checked_add(name_len)?;
            if bytes.get(data) != Some(&0) {
                return None;
            }
            data = data.checked_add(1)?;
            let value = bytes.get(data..data.checked_add(value_len)?)?;
            data = data.checked_add(value_len)?;
            if bytes.get(data) != Some(&0) {
                return None;
            }
            data = data.checked_add(1)?;
            pairs.push((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ));
        }
        Some(pairs)
    }

    #[cfg(test)]
    mod tests {
        use super::decode_pairs;

        fn encode(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
            let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
            for (n, v) in pairs {
                out.extend_from_slice(&(n.len() as u32).to_le_bytes());
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            }
            for (n, v) in pairs {
                out.extend_from_slice(n);
                out.push(0);
                out.extend_from_slice(v);
                out.push(0);
            }
            out
        }

        #[test]
        fn header_maps_decode_and_malformed_ones_are_errors() {
            let bytes = encode(&[
                (b":method", b"POST"),
                (b"x-agent-id", b"a\xffb"),
                (b"e", b""),
            ]);
            assert_eq!(
                decode_pairs(&bytes),
                Some(vec![
                    (":method".to_owned(), "POST".to_owned()),
                    ("x-agent-id".to_owned(), "a\u{fffd}b".to_owned()),
                    ("e".to_owned(), String::new()),
                ])
            );
            assert_eq!(decode_pairs(&encode(&[])), Some(Vec::new()));
            // Cut short anywhere, or a missing NUL: an error, never a shorter map.
            for cut in 0..bytes.len() {
                assert_eq!(decode_pairs(&bytes[..cut]), None, "cut at {cut}");
            }
            let mut no_nul = bytes.clone();
            let last = no_nul.len() - 1;
            no_nul[last] = b'x';
            assert_eq!(decode_pairs(&no_nul), None);
            // A count that claims more pairs than the bytes hold.
            let mut huge = bytes;
            huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
            assert_eq!(decode_pairs(&huge), None);
        }
    }
}
