//! proxy-wasm glue (proxy-wasm ABI 0.2.1, Rust SDK `proxy-wasm` 0.2): the root context parses
//! the plugin configuration once per `on_configure`; each HTTP context forwards Envoy's
//! callbacks to a [`Stream`] through [`WasmHost`], which maps [`Host`] onto hostcalls.
//!
//! Hostcalls go through the `Result`-returning `proxy_wasm::hostcalls` functions, never the
//! context-trait helpers that unwrap: a failed hostcall is logged and reads as "absent". (The SDK
//! still panics on a status the ABI does not define for a call; Envoy does not return those.) A
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
            Err(e) => {
                count(&Metric::ConfigReject, 1);
                log::error!("mcp-guard: invalid plugin configuration: {e}");
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

/// [`Host`] over proxy-wasm hostcalls, for the stream whose callback is running.
pub struct WasmHost;

fn logged<T: Default>(what: &str, result: Result<T, proxy_wasm::types::Status>) -> T {
    result.unwrap_or_else(|status| {
        log::warn!("mcp-guard: hostcall {what} failed: {status:?}");
        T::default()
    })
}

/// Every header of `map` with one hostcall (`get_header_map_pairs`): each hostcall that
/// returns data also calls back into the VM to allocate its buffer, so reading header by header
/// costs one round trip per header. Values are read as bytes: Envoy passes header values with
/// bytes that are not UTF-8 (obs-text, RFC 9110 §5.5), and the SDK's `get_map` unwraps a UTF-8
/// conversion on them, so one such header would trap the VM. Invalid bytes become U+FFFD, which
/// no agent id, routing header or encoding name accepts: the value is refused or ignored, never
/// trusted. (The SDK also unwraps UTF-8 on names, which Envoy's HTTP/1, HTTP/2 and HTTP/3 codecs
/// only accept as RFC 9110 tokens, ASCII.)
fn header_pairs(map: MapType) -> Headers {
    logged("get headers", hostcalls::get_map_bytes(map))
        .into_iter()
        .map(|(name, value)| {
            let value = String::from_utf8(value)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            (name, value)
        })
        .collect::<Vec<_>>()
        .into()
}

impl Host for WasmHost {
    fn request_headers(&self) -> Headers {
        header_pairs(MapType::HttpRequestHeaders)
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        logged(
            "set request header",
            hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value),
        );
    }

    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        logged(
            "get request body",
            hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size),
        )
    }

    fn response_headers(&self) -> Headers {
        header_pairs(MapType::HttpResponseHeaders)
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        logged(
            "set response header",
            hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value),
        );
    }

    fn response_body(&self, start: usize, size: usize) -> Option<Vec<u8>> {
        logged(
            "get response body",
            hostcalls::get_buffer(BufferType::HttpResponseBody, start, size),
        )
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
    fn get(&self, key: &str) -> Option<(Vec<u8>, Option<u32>)> {
        match logged("get shared data", hostcalls::get_shared_data(key).map(Some)) {
            Some((Some(value), cas)) if !value.is_empty() => Some((value, cas)),
            _ => None,
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        // A CAS mismatch is an expected race (another worker took the slot), not a failure.
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }
}
