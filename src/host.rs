//! What the filter needs from its host, as traits: [`Host`] (the per-stream hostcalls of one
//! HTTP stream, proxy-wasm ABI 0.2.1) and [`SharedData`] (proxy-wasm shared data, the only
//! state shared by every worker's VM), plus the values that cross them: [`Headers`],
//! [`Action`] and [`ReadError`].
//!
//! `crate::wasm` implements both traits with proxy-wasm hostcalls; the tests, the fuzz targets
//! and the benches use the one in-memory fake (`fake`, under `cfg(test)` or the `fake-host`
//! feature). [`crate::annotations`] and [`crate::correlation`] take only [`SharedData`].

use crate::identity::Presented;
use crate::metrics::Metric;

#[cfg(any(test, feature = "fake-host"))]
pub mod fake;

/// A host read that failed (the hostcall returned an error), as opposed to a value that is not
/// there: "could not read it" is never "nothing there".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadError;

/// What an HTTP callback returns to Envoy (proxy-wasm `Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Continue the filter chain.
    Continue,
    /// Stop iteration (and buffer, in body callbacks).
    Pause,
}

/// A shared-data value and its compare-and-swap token (`None`: the host gave none).
pub type SharedValue = (Vec<u8>, Option<u32>);

/// proxy-wasm shared data: one key/value store per VM id, shared by every worker thread, with
/// a compare-and-swap token per key that changes on every write (proxy-wasm
/// `get_shared_data` / `set_shared_data`).
pub trait SharedData {
    /// The value of `key` and its compare-and-swap token: `Ok(None)` when absent or empty,
    /// [`ReadError`] when the hostcall failed.
    fn get(&self, key: &str) -> Result<Option<SharedValue>, ReadError>;
    /// Writes `value` under `key`; with `cas`, only if the value is unchanged since that token
    /// was read (a mismatch is an expected race, not a failure). Returns whether the write
    /// happened.
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// The per-stream host operations the filter needs.
///
/// Reads the filter acts on are fallible: a hostcall that fails is a [`ReadError`], never an
/// empty value (the headers and bodies of the stream, Envoy attributes, shared data), so the
/// stream can fail closed. Absence, where it is a real answer, is `Ok(None)`. Writes, and the
/// best-effort reads that only describe the stream in its audit record
/// ([`Host::upstream_cluster`], [`Host::response_code_details`], [`Host::now_ms`]), are
/// infallible from the filter's point of view: a failed hostcall is logged by the
/// implementation and reads as absent (or 0).
pub trait Host {
    /// Every request header as `(lower-case name, value)` pairs in order, pseudo-headers such
    /// as `:method` included, a header sent twice as two pairs. Bytes that are not UTF-8 read
    /// as U+FFFD. Read once per stream, in the request-headers callback (one hostcall, where
    /// reading header by header costs one each). [`ReadError`] when the hostcall failed.
    fn request_headers(&self) -> Result<Headers, ReadError>;
    /// Replaces (`Some`) or removes (`None`) a request header.
    fn set_request_header(&mut self, name: &str, value: Option<&str>);
    /// The first `size` bytes of the buffered request body (fewer if less is buffered);
    /// `Ok(None)` when there is no body buffer (Envoy `NotFound`), [`ReadError`] when the
    /// hostcall failed.
    fn request_body(&self, size: usize) -> Result<Option<Vec<u8>>, ReadError>;
    /// Every response header as `(lower-case name, value)` pairs, `:status` included, as
    /// [`Host::request_headers`]. Valid only in the response-headers callback; read once there.
    /// [`ReadError`] when the hostcall failed.
    fn response_headers(&self) -> Result<Headers, ReadError>;
    /// Replaces or removes a response header. Valid only in the response-headers callback.
    fn set_response_header(&mut self, name: &str, value: Option<&str>);
    /// `size` bytes from offset `start` of the current (or buffered) response body (fewer at
    /// its end); `Ok(None)` when there is nothing there (Envoy `NotFound`), [`ReadError`] when
    /// the hostcall failed.
    fn response_body(&self, start: usize, size: usize) -> Result<Option<Vec<u8>>, ReadError>;
    /// Replaces the first `size` bytes of the response body with `data`.
    fn set_response_body(&mut self, size: usize, data: &[u8]);
    /// Sends a local reply with `content-type: application/json`, the extra `headers` and
    /// `body`.
    fn send_local_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]);
    /// Starts a unary gRPC call (proxy-wasm `dispatch_grpc_call`) to `grpc_service` (a
    /// serialized `envoy.config.core.v3.GrpcService`, see
    /// [`crate::ratelimit::RateLimitService::grpc_service`]) with a deadline of `timeout_ms`.
    /// Returns the call's token, whose answer comes to `Stream::on_grpc_response`; `None` if
    /// the host refused to start it.
    fn grpc_call(
        &mut self,
        grpc_service: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout_ms: u64,
    ) -> Option<u32>;
    /// Resumes the request paused by an earlier callback (`resume_http_request`).
    fn resume_request(&mut self);
    /// The upstream cluster the route selected (Envoy attribute `xds.cluster_name`).
    fn upstream_cluster(&self) -> Option<String>;
    /// Stores the audit records in filter state for the access log.
    fn write_audit(&mut self, records: &[u8]);
    /// Stores `value` in filter state under `key` (one property path segment: Envoy's key is
    /// `wasm.<key>`), for the access log ([`crate::attributes`]).
    fn write_filter_state(&mut self, key: &str, value: &[u8]);
    /// Wall-clock time, Unix milliseconds.
    fn now_ms(&self) -> u64;
    /// The shared-data store of this VM ([`SharedData`]).
    fn shared(&mut self) -> &mut dyn SharedData;
    /// An Envoy attribute (`get_property`), e.g. `["connection", "uri_san_peer_certificate"]`
    /// or a dynamic-metadata leaf; bytes that are not UTF-8 read as U+FFFD. `Ok(None)` when
    /// the attribute does not exist (proxy-wasm `Ok(None)`, Envoy `NotFound`); [`ReadError`]
    /// when the hostcall failed (proxy-wasm `Err`: Envoy `SerializationFailure` or
    /// `InternalFailure`, e.g. a metadata value that is not a scalar).
    fn property(&self, path: &[&str]) -> Result<Option<String>, ReadError>;
    /// Adds `by` to a counter (`crate::metrics`).
    fn count(&mut self, metric: Metric<'_>, by: u64);
    /// Envoy's `response.code_details` attribute (why the stream ended, e.g.
    /// `downstream_remote_disconnect`); read only when a stream ends unfinished.
    fn response_code_details(&self) -> Option<String>;
}

/// A header map read once in its callback ([`Host::request_headers`],
/// [`Host::response_headers`]): `(lower-case name, value)` pairs in the order Envoy holds
/// them, a header sent twice as two pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl From<Vec<(String, String)>> for Headers {
    fn from(pairs: Vec<(String, String)>) -> Self {
        Headers(pairs)
    }
}

impl Headers {
    /// Every pair, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// The first value of `name` (lower-case).
    pub fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name` if it was sent exactly once.
    pub fn only(&self, name: &str) -> Option<&str> {
        let mut values = self.0.iter().filter(|(n, _)| n == name);
        match (values.next(), values.next()) {
            (Some((_, v)), None) => Some(v.as_str()),
            _ => None,
        }
    }

    /// `name` as an identity source: absent, its one value, or repeated (sent more than once,
    /// it names no one: an edge that appends instead of replacing must not let the client's
    /// copy win).
    pub fn presented(&self, name: &str) -> Presented {
        let mut values = self.0.iter().filter(|(n, _)| n == name);
        match (values.next(), values.next()) {
            (None, _) => Presented::Absent,
            (Some((_, v)), None) => Presented::Value(v.clone()),
            (Some(_), Some(_)) => Presented::Repeated,
        }
    }

    /// Every value of `name`, in order.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Whether `name` was sent at all.
    pub fn has(&self, name: &str) -> bool {
        self.first(name).is_some()
    }

    /// Whether the message's body has a content coding (RFC 9110 §8.4): any `content-encoding`
    /// header, each copy counted, whose value is not exactly `identity`.
    pub fn encoded(&self) -> bool {
        self.0
            .iter()
            .any(|(n, v)| n == "content-encoding" && !v.trim().eq_ignore_ascii_case("identity"))
    }
}
