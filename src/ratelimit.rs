//! Global rate limiting by mcp-guard itself: one call to Envoy's rate limit service (RLS) per
//! forwarded JSON-RPC request body, for hosts whose Wasm filter cannot hold request headers
//! until the body has been read (no `allow_on_headers_stop_iteration`, e.g. Istio's
//! `WasmPlugin`), where `envoy.filters.http.ratelimit` would never see mcp-guard's tags.
//!
//! The call is the RLS v3 unary RPC `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`
//! (Envoy API `envoy/service/ratelimit/v3/rls.proto`), made with proxy-wasm's
//! `dispatch_grpc_call`. The descriptors are those the shipped `envoy/envoy-rls.yaml` route
//! builds from mcp-guard's tags with `request_headers` actions, so one RLS configuration serves
//! both modes ([`descriptors`]).
//!
//! The messages are encoded with `prost` from hand-declared structs that carry only the fields
//! mcp-guard uses (field numbers as in `rls.proto`); a decoder skips unknown fields, so the
//! service's other fields are ignored.

use prost::Message as _;

/// The RLS gRPC service name (`rls.proto`, package `envoy.service.ratelimit.v3`).
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
/// The RLS method.
pub const METHOD: &str = "ShouldRateLimit";
/// Longest accepted cluster name, in bytes: the serialized `GrpcService` naming it must stay
/// 7-bit ASCII (one-byte protobuf lengths), because the proxy-wasm Rust SDK passes it as `&str`.
pub const MAX_CLUSTER_NAME: usize = 100;

/// `rate_limit_service` of the plugin configuration, compiled ([`RateLimitService::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitService {
    /// The serialized `GrpcService` naming the RLS cluster ([`RateLimitService::grpc_service`]),
    /// built once here rather than for every request.
    grpc_service: String,
    /// The RLS domain (`RateLimitRequest.domain`).
    pub domain: String,
    /// Deadline of one RLS call, in milliseconds.
    pub timeout_ms: u64,
    /// When the RLS cannot answer (unreachable, error, deadline, unreadable reply): refuse the
    /// request (HTTP 500) if true, forward it if false. Envoy's ratelimit filter's
    /// `failure_mode_deny` means the same.
    pub failure_mode_deny: bool,
}

/// What the RLS said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `overall_code: OK` (or `UNKNOWN`, which Envoy's ratelimit filter also forwards).
    Allow,
    /// `overall_code: OVER_LIMIT`; `retry_after_s` is the longest `duration_until_reset` among
    /// the descriptors over their limit, rounded up to whole seconds (0 when none was given).
    OverLimit {
        /// Seconds until the limit resets, for `Retry-After` (RFC 9110 §10.2.3).
        retry_after_s: u64,
    },
}

/// One descriptor: `(key, value)` entries, in order. Keys are fixed names or, for parameter
/// tags, configured header names (borrowed from the plugin configuration).
pub type Descriptor<'k> = Vec<(&'k str, String)>;

/// The descriptors of one request, as `envoy/envoy-rls.yaml`'s `rate_limits` build them from
/// mcp-guard's tag headers: `(agent)`; `(tool)` and `(agent, tool)` when the request names a
/// tool (`tool`: the `x-mcp-tool-name` tag value); `(method)` when it has one (the
/// `x-mcp-method` tag value); and per parameter tag set on the request (`params`: the
/// `param_tags` header name and its value, `crate::params`) `(agent, tool, <header name>)`,
/// which is what an Envoy route's `request_headers` action with `descriptor_key` equal to the
/// header name builds. Envoy skips a descriptor whose header is absent; so does this.
pub fn descriptors<'k>(
    agent: &str,
    method: Option<&str>,
    tool: Option<&str>,
    params: &[(&'k str, String)],
) -> Vec<Descriptor<'k>> {
    let mut out = vec![vec![("agent", agent.to_owned())]];
    if let Some(tool) = tool {
        out.push(vec![("tool", tool.to_owned())]);
        out.push(vec![("agent", agent.to_owned()), ("tool", tool.to_owned())]);
    }
    if let Some(method) = method {
        out.push(vec![("method", method.to_owned())]);
    }
    if let Some(tool) = tool {
        for (key, value) in params {
            out.push(vec![
                ("agent", agent.to_owned()),
                ("tool", tool.to_owned()),
                (key, value.clone()),
            ]);
        }
    }
    out
}

impl RateLimitService {
    /// The RLS on Envoy cluster `cluster` (HTTP/2), for `domain`. `None` when the cluster
    /// name is empty or its serialized `GrpcService` would not be ASCII (names over
    /// [`MAX_CLUSTER_NAME`] bytes can need two-byte protobuf lengths).
    pub fn new(
        cluster: &str,
        domain: String,
        timeout_ms: u64,
        failure_mode_deny: bool,
    ) -> Option<Self> {
        if cluster.is_empty() || cluster.len() > MAX_CLUSTER_NAME {
            return None;
        }
        let service = GrpcService {
            envoy_grpc: Some(EnvoyGrpc {
                cluster_name: cluster.to_owned(),
            }),
        };
        let grpc_service = String::from_utf8(service.encode_to_vec())
            .ok()
            .filter(|s| s.is_ascii())?;
        Some(RateLimitService {
            grpc_service,
            domain,
            timeout_ms,
            failure_mode_deny,
        })
    }

    /// The `upstream` argument of `dispatch_grpc_call`: a serialized
    /// `envoy.config.core.v3.GrpcService` with `envoy_grpc.cluster_name` set, ASCII. (Envoy
    /// also accepts a bare cluster name, but only when the bytes do not happen to parse as a
    /// `GrpcService`; the serialized form is never ambiguous.)
    pub fn grpc_service(&self) -> &str {
        &self.grpc_service
    }

    /// The serialized `RateLimitRequest` for these descriptors (`hits_addend` unset: 1).
    pub fn request(&self, descriptors: &[Descriptor]) -> Vec<u8> {
        RateLimitRequest {
            domain: self.domain.clone(),
            descriptors: descriptors
                .iter()
                .map(|d| RateLimitDescriptor {
                    entries: d
                        .iter()
                        .map(|(key, value)| Entry {
                            key: (*key).to_owned(),
                            value: value.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
        .encode_to_vec()
    }
}

/// Reads a serialized `RateLimitResponse`.
///
/// Errors: bytes that are not a `RateLimitResponse`, or an `overall_code` other than
/// `UNKNOWN` (0), `OK` (1) and `OVER_LIMIT` (2). The caller treats both as an RLS failure.
pub fn verdict(bytes: &[u8]) -> Result<Verdict, String> {
    let response = RateLimitResponse::decode(bytes).map_err(|e| e.to_string())?;
    match response.overall_code {
        0 | 1 => Ok(Verdict::Allow),
        2 => {
            let retry_after_s = response
                .statuses
                .iter()
                .filter(|s| s.code == 2)
                .filter_map(|s| s.duration_until_reset.as_ref())
                .map(|d| {
                    let whole = u64::try_from(d.seconds).unwrap_or(0);
                    whole.saturating_add(u64::from(d.nanos > 0))
                })
                .max()
                .unwrap_or(0);
            Ok(Verdict::OverLimit { retry_after_s })
        }
        code => Err(format!("unknown RateLimitResponse.Code {code}")),
    }
}

// The messages, with the fields mcp-guard reads or writes (rls.proto, grpc_service.proto,
// google/protobuf/duration.proto).

/// `envoy.config.core.v3.GrpcService`.
#[derive(Clone, PartialEq, prost::Message)]
struct GrpcService {
    #[prost(message, optional, tag = "1")]
    envoy_grpc: Option<EnvoyGrpc>,
}

/// `envoy.config.core.v3.GrpcService.EnvoyGrpc`.
#[derive(Clone, PartialEq, prost::Message)]
struct EnvoyGrpc {
    #[prost(string, tag = "1")]
    cluster_name: String,
}

/// `envoy.service.ratelimit.v3.RateLimitRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct RateLimitRequest {
    #[prost(string, tag = "1")]
    domain: String,
    #[prost(message, repeated, tag = "2")]
    descriptors: Vec<RateLimitDescriptor>,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor`.
#[derive(Clone, PartialEq, prost::Message)]
struct RateLimitDescriptor {
    #[prost(message, repeated, tag = "1")]
    entries: Vec<Entry>,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.Entry`.
#[derive(Clone, PartialEq, prost::Message)]
struct Entry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// `envoy.service.ratelimit.v3.RateLimitResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct RateLimitResponse {
    #[prost(int32, tag = "1")]
    overall_code: i32,
    #[prost(message, repeated, tag = "2")]
    statuses: Vec<DescriptorStatus>,
}

/// `envoy.service.ratelimit.v3.RateLimitResponse.DescriptorStatus`.
#[derive(Clone, PartialEq, prost::Message)]
struct DescriptorStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(message, optional, tag = "4")]
    duration_until_reset: Option<Duration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
struct Duration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(cluster: &str) -> Option<RateLimitService> {
        RateLimitService::new(cluster, "mcp".into(), 500, true)
    }

    #[test]
    fn descriptors_follow_the_shipped_route() {
        let d = descriptors("a1", Some("tools/call"), Some("echo"), &[]);
        assert_eq!(
            d,
            vec![
                vec![("agent", "a1".to_owned())],
                vec![("tool", "echo".to_owned())],
                vec![("agent", "a1".to_owned()), ("tool", "echo".to_owned())],
                vec![("method", "tools/call".to_owned())],
            ]
        );
        // No tool (e.g. initialize): only agent and method.
        assert_eq!(descriptors("a1", Some("initialize"), None, &[]).len(), 2);
        // A JSON-RPC response sent by the client has no method either.
        assert_eq!(
            descriptors("a1", None, None, &[]),
            vec![vec![("agent", "a1".to_owned())]]
        );
    }

    #[test]
    fn a_parameter_tag_is_one_more_descriptor_per_agent_and_tool() {
        let params = [("x-mcp-param-region", "us-west1".to_owned())];
        let d = descriptors("a1", Some("tools/call"), Some("sql"), &params);
        assert_eq!(d.len(), 5);
        assert_eq!(
            d[4],
            vec![
                ("agent", "a1".to_owned()),
                ("tool", "sql".to_owned()),
                ("x-mcp-param-region", "us-west1".to_owned()),
            ]
        );
    }

    #[test]
    fn request_bytes_are_the_rls_wire_format() {
        let bytes = service("rls")
            .unwrap()
            .request(&[vec![("agent", "a".to_owned())]]);
        // domain (1) "mcp"; descriptors (2) { entries (1) { key (1) "agent", value (2) "a" } }
        let expected: Vec<u8> = [
            &[0x0a, 3][..],
            b"mcp",
            &[0x12, 12, 0x0a, 10, 0x0a, 5],
            b"agent",
            &[0x12, 1],
            b"a",
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn grpc_service_names_the_cluster_and_stays_ascii() {
        let name = "outbound|8081||ratelimit.ratelimit.svc.cluster.local";
        let s = service(name).unwrap();
        let text = s.grpc_service();
        assert!(text.is_ascii());
        let decoded = GrpcService::decode(text.as_bytes()).ok();
        let cluster = decoded.and_then(|g| g.envoy_grpc).map(|e| e.cluster_name);
        assert_eq!(cluster.as_deref(), Some(name));
        // A name whose length needs a two-byte varint is refused, not sent mangled.
        assert_eq!(service(&"c".repeat(200)), None);
        assert_eq!(service(""), None);
    }

    fn response(code: i32, statuses: Vec<DescriptorStatus>) -> Vec<u8> {
        RateLimitResponse {
            overall_code: code,
            statuses,
        }
        .encode_to_vec()
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(&response(1, vec![])).ok(), Some(Verdict::Allow));
        assert_eq!(verdict(&[]).ok(), Some(Verdict::Allow)); // UNKNOWN: forwarded, as Envoy does
        let over = vec![
            DescriptorStatus {
                code: 1,
                duration_until_reset: Some(Duration {
                    seconds: 90,
                    nanos: 0,
                }),
            },
            DescriptorStatus {
                code: 2,
                duration_until_reset: Some(Duration {
                    seconds: 7,
                    nanos: 1,
                }),
            },
            DescriptorStatus {
                code: 2,
                duration_until_reset: Some(Duration {
                    seconds: 3,
                    nanos: 0,
                }),
            },
        ];
        assert_eq!(
            verdict(&response(2, over)).ok(),
            Some(Verdict::OverLimit { retry_after_s: 8 })
        );
        assert_eq!(
            verdict(&response(2, vec![])).ok(),
            Some(Verdict::OverLimit { retry_after_s: 0 })
        );
        assert!(verdict(&response(7, vec![])).is_err());
        assert!(verdict(b"\xff\xff\xff").is_err());
    }
}
