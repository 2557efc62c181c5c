//! Rendering the plugin configuration into what each platform loads.
//!
//! Every rendering fails closed (`failure_policy: FAIL_CLOSED`, or the platform's spelling of
//! it: Istio WasmPlugin `failStrategy: FAIL_CLOSE`, Envoy Gateway `failOpen: false`), and each
//! either sets the Wasm `PluginConfig` flag `allow_on_headers_stop_iteration: true` (docs/deployment.md
//! "Loading mcp-guard into Envoy"), without which a filter that holds request headers until it
//! has read the body stalls the request, or, where the platform's API cannot set it, tells the
//! filter not to hold them:
//!
//! - `ecds`, `istio` (an EnvoyFilter that adds the whole Wasm config as an ECDS extension
//!   config): the flag, in the Wasm config itself (false only for a file that sets
//!   `hold_request_headers: false` itself). This is the full-fidelity form: the tags are set
//!   before the request goes on, for Envoy's rate-limit and RBAC filters after it.
//! - `envoy-gateway`: the flag, patched into the generated listener by an EnvoyPatchPolicy.
//! - `istio-wasmplugin`: Istio's WasmPlugin API has no field for the flag, and an EnvoyFilter
//!   cannot patch it into the config istiod serves for a WasmPlugin (see [`ISTIO_NOTE`]), so
//!   the plugin configuration gets `hold_request_headers: false` (headers forwarded at once,
//!   the body still decided before it is forwarded) and `rate_limit_service` (mcp-guard calls
//!   the RLS itself, on Istio's `outbound|<port>||<host>` cluster of the RLS Service, since
//!   Envoy's ratelimit filter would see the request before the tags). No EnvoyFilter needed.

use crate::doc::Doc;

/// Name of the filter, its root context and its VM.
pub const FILTER_NAME: &str = "mcp-guard";
/// Type URL of an ECDS resource.
pub const TYPED_EXTENSION_CONFIG: &str =
    "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
/// Type URL of the Wasm HTTP filter's configuration.
pub const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
/// Type URL of the plugin configuration's wrapper.
pub const STRING_VALUE: &str = "type.googleapis.com/google.protobuf.StringValue";
/// Envoy's V8 Wasm runtime.
pub const V8: &str = "envoy.wasm.runtime.v8";

/// Where the Wasm module comes from.
#[derive(Debug, Clone)]
pub enum Code {
    /// A file on the proxy's file system.
    Local(String),
    /// A URL (`oci://`, `https://`) the platform fetches, with an optional SHA-256.
    Remote {
        /// The module's URL.
        url: String,
        /// Its SHA-256 (hex), if pinned.
        sha256: Option<String>,
    },
}

/// The `envoy.extensions.filters.http.wasm.v3.Wasm` message (`@type` included).
pub fn wasm_typed_config(name: &str, plugin_config_json: &str, code: &Code) -> Doc {
    let code = match code {
        Code::Local(filename) => {
            Doc::map([("local", Doc::map([("filename", Doc::str(filename))]))])
        }
        Code::Remote { url, sha256 } => {
            let mut remote = vec![(
                "http_uri".to_owned(),
                Doc::map([
                    ("uri", Doc::str(url)),
                    ("timeout", Doc::str("30s")),
                    // Istio's agent (or the platform) fetches the module and rewrites this
                    // to a local file before Envoy sees it; Envoy still wants a cluster name.
                    ("cluster", Doc::str("_")),
                ]),
            )];
            if let Some(sha) = sha256 {
                remote.push(("sha256".to_owned(), Doc::str(sha)));
            }
            Doc::map([("remote", Doc::Map(remote))])
        }
    };
    Doc::map([
        ("@type", Doc::str(WASM_TYPE)),
        (
            "config",
            Doc::map([
                ("name", Doc::str(name)),
                ("root_id", Doc::str(FILTER_NAME)),
                (
                    "vm_config",
                    Doc::map([
                        ("vm_id", Doc::str(name)),
                        ("runtime", Doc::str(V8)),
                        ("code", code),
                    ]),
                ),
                (
                    "configuration",
                    Doc::map([
                        ("@type", Doc::str(STRING_VALUE)),
                        ("value", Doc::str(plugin_config_json)),
                    ]),
                ),
                // A failed VM answers 503 instead of letting traffic through unchecked.
                ("failure_policy", Doc::str("FAIL_CLOSED")),
                // Lets the filter pause at headers and still set the tags after the body;
                // false only for a plugin configuration that does not hold them
                // (`hold_request_headers: false`, as on hosts that cannot set this flag).
                (
                    "allow_on_headers_stop_iteration",
                    Doc::Bool(holds_request_headers(plugin_config_json)),
                ),
            ]),
        ),
    ])
}

/// The plugin configuration's `hold_request_headers` (default true; also true for a text
/// that is not a JSON object, which `check` reports).
fn holds_request_headers(plugin_config_json: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(plugin_config_json)
        .ok()
        .and_then(|v| {
            v.get("hold_request_headers")
                .and_then(serde_json::Value::as_bool)
        })
        .unwrap_or(true)
}

/// The ECDS resource: a `TypedExtensionConfig` named `name` (the HTTP filter's name in the
/// listener), wrapped as `{"resources": [...]}` (the file format of a `path_config_source`)
/// unless `bare`.
pub fn ecds(name: &str, plugin_config_json: &str, wasm_path: &str, bare: bool) -> Doc {
    let resource = Doc::map([
        ("@type", Doc::str(TYPED_EXTENSION_CONFIG)),
        ("name", Doc::str(name)),
        (
            "typed_config",
            wasm_typed_config(
                FILTER_NAME,
                plugin_config_json,
                &Code::Local(wasm_path.to_owned()),
            ),
        ),
    ]);
    if bare {
        resource
    } else {
        Doc::map([("resources", Doc::seq([resource]))])
    }
}

/// Where in Istio the filter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IstioContext {
    /// Inbound listeners of sidecars (in front of the MCP servers).
    SidecarInbound,
    /// Outbound listeners of sidecars (in front of the agents).
    SidecarOutbound,
    /// Gateways.
    Gateway,
}

impl IstioContext {
    fn as_istio(self) -> &'static str {
        match self {
            IstioContext::SidecarInbound => "SIDECAR_INBOUND",
            IstioContext::SidecarOutbound => "SIDECAR_OUTBOUND",
            IstioContext::Gateway => "GATEWAY",
        }
    }

    /// The WasmPlugin `match[].mode` that selects this context's listeners: istiod maps
    /// inbound sidecar listeners to `SERVER`, outbound sidecar and gateway listeners to
    /// `CLIENT` (pilot/pkg/model/extensions.go, `workloadModeForListenerClass`).
    fn workload_mode(self) -> &'static str {
        match self {
            IstioContext::SidecarInbound => "SERVER",
            IstioContext::SidecarOutbound | IstioContext::Gateway => "CLIENT",
        }
    }
}

/// Options of the Istio rendering.
#[derive(Debug, Clone)]
pub struct Istio {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// Module URL (`oci://…`, `https://…`) and optional SHA-256.
    pub code: Code,
    /// `workloadSelector.labels` (none: every workload of the namespace).
    pub selector: Vec<(String, String)>,
    /// Listener context.
    pub context: IstioContext,
}

/// The comment put before the Istio rendering (YAML only).
pub const ISTIO_NOTE: &str = "\
# mcp-guard for Istio: one EnvoyFilter, rendered by `mcp-guard render --format istio`.
#
# Why not a WasmPlugin: mcp-guard needs the Wasm PluginConfig flag
# allow_on_headers_stop_iteration: true (without it requests stall), which the WasmPlugin API
# does not expose, and it cannot be patched in afterwards: istiod serves a WasmPlugin's
# config by ECDS (resource extensions.istio.io/wasmplugin/<namespace>.<name>, from Istio 1.30
# extensions.istio.io/trafficextension/<namespace>.<name>), EnvoyFilter EXTENSION_CONFIG
# patches other than ADD are ignored, an HTTP_FILTER patch only reaches the listener's
# config_discovery stub, and Envoy refuses an ECDS response with two resources of one name.
# So the EnvoyFilter below ADDs the whole Wasm config as an extension config (istio-agent
# fetches the oci:// or https:// module and rewrites it to a local file, as for a WasmPlugin;
# if it cannot, a FAIL_CLOSED config becomes a deny-all filter) and inserts the HTTP filter
# that loads it by ECDS over ADS. (`--format istio-wasmplugin` renders a WasmPlugin instead,
# with the filter not holding request headers and calling the rate limit service itself.)
#
# Order: INSERT_BEFORE envoy.filters.http.router puts mcp-guard after Istio's authn
# (jwt_authn, whose claims mcp-guard may read) and authz filters. Rate-limit filters that use
# its tags are usually also inserted before the router by EnvoyFilters of default priority 0;
# priority -10 makes this patch apply first, so they land between mcp-guard and the router.
";

/// The Istio rendering: one `networking.istio.io/v1alpha3` EnvoyFilter.
pub fn istio(opts: &Istio, plugin_config_json: &str) -> Vec<Doc> {
    let resource_name = format!("{}.{}", opts.namespace, opts.name);
    let context = opts.context.as_istio();
    let mut spec = Vec::new();
    if !opts.selector.is_empty() {
        spec.push((
            "workloadSelector".to_owned(),
            Doc::map([(
                "labels",
                Doc::map(opts.selector.iter().map(|(k, v)| (k.clone(), Doc::str(v)))),
            )]),
        ));
    }
    spec.push(("priority".to_owned(), Doc::Number((-10).into())));
    spec.push((
        "configPatches".to_owned(),
        Doc::seq([
            Doc::map([
                ("applyTo", Doc::str("EXTENSION_CONFIG")),
                ("match", Doc::map([("context", Doc::str(context))])),
                (
                    "patch",
                    Doc::map([
                        ("operation", Doc::str("ADD")),
                        (
                            "value",
                            Doc::map([
                                ("name", Doc::str(&resource_name)),
                                (
                                    "typed_config",
                                    wasm_typed_config(
                                        &resource_name,
                                        plugin_config_json,
                                        &opts.code,
                                    ),
                                ),
                            ]),
                        ),
                    ]),
                ),
            ]),
            Doc::map([
                ("applyTo", Doc::str("HTTP_FILTER")),
                (
                    "match",
                    Doc::map([
                        ("context", Doc::str(context)),
                        (
                            "listener",
                            Doc::map([(
                                "filterChain",
                                Doc::map([(
                                    "filter",
                                    Doc::map([
                                        (
                                            "name",
                                            Doc::str(
                                                "envoy.filters.network.http_connection_manager",
                                            ),
                                        ),
                                        (
                                            "subFilter",
                                            Doc::map([(
                                                "name",
                                                Doc::str("envoy.filters.http.router"),
                                            )]),
                                        ),
                                    ]),
                                )]),
                            )]),
                        ),
                    ]),
                ),
                (
                    "patch",
                    Doc::map([
                        ("operation", Doc::str("INSERT_BEFORE")),
                        (
                            "value",
                            Doc::map([
                                ("name", Doc::str(&resource_name)),
                                (
                                    "config_discovery",
                                    Doc::map([
                                        (
                                            "config_source",
                                            Doc::map([
                                                ("ads", Doc::Map(Vec::new())),
                                                ("resource_api_version", Doc::str("V3")),
                                                // Block the listener until the policy is
                                                // loaded, as istiod does for WasmPlugins.
                                                ("initial_fetch_timeout", Doc::str("0s")),
                                            ]),
                                        ),
                                        ("type_urls", Doc::seq([Doc::str(WASM_TYPE)])),
                                    ]),
                                ),
                            ]),
                        ),
                    ]),
                ),
            ]),
        ]),
    ));
    vec![Doc::map([
        ("apiVersion", Doc::str("networking.istio.io/v1alpha3")),
        ("kind", Doc::str("EnvoyFilter")),
        (
            "metadata",
            Doc::map([
                ("name", Doc::str(&opts.name)),
                ("namespace", Doc::str(&opts.namespace)),
            ]),
        ),
        ("spec", Doc::Map(spec)),
    ])]
}

/// The rate limit service mcp-guard calls itself (plugin configuration `rate_limit_service`)
/// when it cannot hold request headers for Envoy's own ratelimit filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitService {
    /// The RLS Service's host name, e.g. `ratelimit.ratelimit.svc.cluster.local`.
    pub host: String,
    /// Its gRPC port.
    pub port: u16,
    /// The RLS domain (`RateLimitRequest.domain`; the ratelimit service's config `domain`).
    pub domain: String,
    /// Deadline of one RLS call, in milliseconds.
    pub timeout_ms: u64,
    /// Refuse requests while the RLS cannot answer (true), or forward them unlimited (false).
    pub failure_mode_deny: bool,
}

impl RateLimitService {
    /// The Envoy cluster istiod builds for the Service's port: `outbound|<port>||<host>`.
    pub fn istio_cluster(&self) -> String {
        format!("outbound|{}||{}", self.port, self.host)
    }

    /// The `rate_limit_service` object of the plugin configuration, for `cluster`.
    pub fn plugin_config(&self, cluster: &str) -> Doc {
        Doc::map([
            ("cluster", Doc::str(cluster)),
            ("domain", Doc::str(&self.domain)),
            ("timeout_ms", Doc::Number(self.timeout_ms.into())),
            ("failure_mode_deny", Doc::Bool(self.failure_mode_deny)),
        ])
    }
}

/// The plugin configuration of the Istio WasmPlugin rendering: the policy document with
/// `hold_request_headers: false` (a WasmPlugin cannot set `allow_on_headers_stop_iteration`)
/// and, if `rls` is given, `rate_limit_service` on Istio's outbound cluster of the RLS
/// (without `rls`, a `rate_limit_service` the document has is kept as written).
///
/// Errors: the document is not a map, or already sets one of the added fields to another
/// value (the message names the field).
pub fn istio_wasmplugin_config(
    policy: &Doc,
    rls: Option<&RateLimitService>,
) -> Result<Doc, String> {
    let Some(entries) = policy.entries() else {
        return Err("the plugin configuration is not an object".to_owned());
    };
    let mut wanted = vec![(
        "hold_request_headers",
        Doc::Bool(false),
        "a WasmPlugin cannot hold request headers; `--format istio` can",
    )];
    if let Some(rls) = rls {
        wanted.push((
            "rate_limit_service",
            rls.plugin_config(&rls.istio_cluster()),
            "remove it from the file, give the same with the --rls-* options, \
             or keep the file's with --no-rls",
        ));
    }
    let mut out = entries.to_vec();
    for (key, value, hint) in wanted {
        match policy.get(key) {
            None => out.push((key.to_owned(), value)),
            Some(have) if *have == value => {}
            Some(have) => {
                let show = |d: &Doc| d.to_compact_json().unwrap_or_default();
                return Err(format!(
                    "{key}: the file sets {}, the istio-wasmplugin rendering sets {} ({hint})",
                    show(have),
                    show(&value)
                ));
            }
        }
    }
    Ok(Doc::Map(out))
}

/// Options of the Istio WasmPlugin rendering.
#[derive(Debug, Clone)]
pub struct IstioWasmPlugin {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// Module URL (`oci://…`, `https://…`).
    pub url: String,
    /// The module's SHA-256 (hex), if pinned.
    pub sha256: Option<String>,
    /// `selector.matchLabels` (none: every workload of the namespace).
    pub selector: Vec<(String, String)>,
    /// Listener context, as a `match[].mode`.
    pub context: IstioContext,
}

/// The comment put before the Istio WasmPlugin rendering (YAML only).
pub const ISTIO_WASMPLUGIN_NOTE: &str = "\
# mcp-guard for Istio as a WasmPlugin (extensions.istio.io/v1alpha1), rendered by
# `mcp-guard render --format istio-wasmplugin`. No EnvoyFilter is needed.
#
# A WasmPlugin cannot set allow_on_headers_stop_iteration (`--format istio`, an EnvoyFilter,
# is the full-fidelity alternative), so the plugin configuration sets
# hold_request_headers: false: request headers go on at once (client-sent tag headers removed,
# x-agent-id set) and the body is held and decided before any of it is forwarded (the server
# never gets a refused request's body). No tag read from the body (x-mcp-method,
# x-mcp-tool-name, ...) reaches later filters or the server, so Envoy's ratelimit filter could
# not key on them: rate_limit_service makes mcp-guard call the rate limit service itself, one
# RLS v3 ShouldRateLimit per allowed request, with the descriptors of envoy/envoy-rls.yaml
# (agent, tool, agent+tool, method), on the cluster istiod builds for the RLS Service,
# outbound|<port>||<host>. That Service must be visible to the selected workloads (Sidecar
# egress scope) and its port must speak gRPC (port name grpc, or appProtocol: grpc) so the
# cluster is HTTP/2. failure_mode_deny: true refuses calls (500, JSON-RPC -32603) while the
# RLS cannot answer.
#
# failStrategy: FAIL_CLOSE answers 503 when the VM fails. No phase (UNSPECIFIED): istiod puts
# the filter after Istio's authn (jwt_authn, whose claims mcp-guard may read) and authz
# filters, before its fault, cors and telemetry filters and the router. pluginConfig reaches
# the filter as JSON (istiod converts the protobuf Struct; numbers are exact up to 2^53).
";

/// The Istio WasmPlugin rendering: one `extensions.istio.io/v1alpha1` WasmPlugin carrying
/// `plugin_config` (from [`istio_wasmplugin_config`]) as `pluginConfig`.
pub fn istio_wasmplugin(opts: &IstioWasmPlugin, plugin_config: &Doc) -> Vec<Doc> {
    let mut spec = Vec::new();
    if !opts.selector.is_empty() {
        spec.push((
            "selector".to_owned(),
            Doc::map([(
                "matchLabels",
                Doc::map(opts.selector.iter().map(|(k, v)| (k.clone(), Doc::str(v)))),
            )]),
        ));
    }
    spec.push(("url".to_owned(), Doc::str(&opts.url)));
    if let Some(sha) = &opts.sha256 {
        spec.push(("sha256".to_owned(), Doc::str(sha)));
    }
    spec.push(("pluginName".to_owned(), Doc::str(FILTER_NAME)));
    spec.push(("type".to_owned(), Doc::str("HTTP")));
    spec.push((
        "match".to_owned(),
        Doc::seq([Doc::map([("mode", Doc::str(opts.context.workload_mode()))])]),
    ));
    // A failed VM answers 503 instead of letting traffic through unchecked.
    spec.push(("failStrategy".to_owned(), Doc::str("FAIL_CLOSE")));
    spec.push(("pluginConfig".to_owned(), plugin_config.clone()));
    vec![Doc::map([
        ("apiVersion", Doc::str("extensions.istio.io/v1alpha1")),
        ("kind", Doc::str("WasmPlugin")),
        (
            "metadata",
            Doc::map([
                ("name", Doc::str(&opts.name)),
                ("namespace", Doc::str(&opts.namespace)),
            ]),
        ),
        ("spec", Doc::Map(spec)),
    ])]
}

/// A Gateway API object an EnvoyExtensionPolicy attaches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRef {
    /// `Gateway` or `HTTPRoute`.
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// Options of the Envoy Gateway rendering.
#[derive(Debug, Clone)]
pub struct EnvoyGateway {
    /// `metadata.name` of the EnvoyExtensionPolicy.
    pub name: String,
    /// `metadata.namespace` of both objects.
    pub namespace: String,
    /// Module URL: an OCI image (`oci://…`), or `https://…`.
    pub url: String,
    /// The module's SHA-256 (hex), if pinned.
    pub sha256: Option<String>,
    /// What the policy attaches to.
    pub target_refs: Vec<TargetRef>,
    /// The Gateway whose listener the EnvoyPatchPolicy patches.
    pub gateway: String,
    /// The xDS Listener's name (Envoy Gateway's `<namespace>/<gateway>/<listener>`).
    pub listener: String,
}

/// The comment put before the Envoy Gateway rendering (YAML only).
pub const ENVOY_GATEWAY_NOTE: &str = "\
# mcp-guard for Envoy Gateway, rendered by `mcp-guard render --format envoy-gateway`.
#
# The EnvoyExtensionPolicy loads the module with the plugin configuration, failing closed
# (failOpen: false). Envoy Gateway orders its HTTP filters itself: Wasm comes after jwt_authn
# and before rbac, local_ratelimit and ratelimit, which is what mcp-guard needs.
# Its API has no allow_on_headers_stop_iteration, without which mcp-guard's requests stall,
# so the EnvoyPatchPolicy sets it in the generated Listener (Envoy Gateway inlines the Wasm
# filter there, named envoy.filters.http.wasm/envoyextensionpolicy/<namespace>/<name>/wasm/0).
# EnvoyPatchPolicy must be enabled (EnvoyGateway config: extensionApis.enableEnvoyPatchPolicy:
# true). Assumed: the Listener is named <namespace>/<gateway>/<listener section name> (the
# default naming; with xdsNameSchemeV2 pass the new name with --listener).
";

/// The Envoy Gateway rendering: an EnvoyExtensionPolicy and an EnvoyPatchPolicy.
pub fn envoy_gateway(opts: &EnvoyGateway, plugin_config: &Doc) -> Vec<Doc> {
    let (kind, field) = if opts.url.starts_with("http://") || opts.url.starts_with("https://") {
        ("HTTP", "http")
    } else {
        ("Image", "image")
    };
    let mut source = vec![("url".to_owned(), Doc::str(&opts.url))];
    if let Some(sha) = &opts.sha256 {
        source.push(("sha256".to_owned(), Doc::str(sha)));
    }
    let code = Doc::map([
        ("type".to_owned(), Doc::str(kind)),
        (field.to_owned(), Doc::Map(source)),
    ]);
    let target_refs = opts.target_refs.iter().map(|t| {
        Doc::map([
            ("group", Doc::str("gateway.networking.k8s.io")),
            ("kind", Doc::str(&t.kind)),
            ("name", Doc::str(&t.name)),
        ])
    });
    let policy = Doc::map([
        ("apiVersion", Doc::str("gateway.envoyproxy.io/v1alpha1")),
        ("kind", Doc::str("EnvoyExtensionPolicy")),
        (
            "metadata",
            Doc::map([
                ("name", Doc::str(&opts.name)),
                ("namespace", Doc::str(&opts.namespace)),
            ]),
        ),
        (
            "spec",
            Doc::map([
                ("targetRefs", Doc::seq(target_refs)),
                (
                    "wasm",
                    Doc::seq([Doc::map([
                        ("name", Doc::str(FILTER_NAME)),
                        ("rootID", Doc::str(FILTER_NAME)),
                        ("code", code),
                        ("config", plugin_config.clone()),
                        ("failOpen", Doc::Bool(false)),
                    ])]),
                ),
            ]),
        ),
    ]);
    let filter = format!(
        "envoy.filters.http.wasm/envoyextensionpolicy/{}/{}/wasm/0",
        opts.namespace, opts.name
    );
    let patch = Doc::map([
        ("apiVersion", Doc::str("gateway.envoyproxy.io/v1alpha1")),
        ("kind", Doc::str("EnvoyPatchPolicy")),
        (
            "metadata",
            Doc::map([
                ("name", Doc::str(format!("{}-stop-iteration", opts.name))),
                ("namespace", Doc::str(&opts.namespace)),
            ]),
        ),
        (
            "spec",
            Doc::map([
                (
                    "targetRef",
                    Doc::map([
                        ("group", Doc::str("gateway.networking.k8s.io")),
                        ("kind", Doc::str("Gateway")),
                        ("name", Doc::str(&opts.gateway)),
                    ]),
                ),
                ("type", Doc::str("JSONPatch")),
                (
                    "jsonPatches",
                    Doc::seq([Doc::map([
                        (
                            "type",
                            Doc::str("type.googleapis.com/envoy.config.listener.v3.Listener"),
                        ),
                        ("name", Doc::str(&opts.listener)),
                        (
                            "operation",
                            Doc::map([
                                ("op", Doc::str("add")),
                                (
                                    "jsonPath",
                                    Doc::str(format!("$..http_filters[?(@.name=='{filter}')]")),
                                ),
                                (
                                    "path",
                                    Doc::str(
                                        "/typed_config/config/allow_on_headers_stop_iteration",
                                    ),
                                ),
                                ("value", Doc::Bool(true)),
                            ]),
                        ),
                    ])]),
                ),
            ]),
        ),
    ]);
    vec![policy, patch]
}

/// An OTLP/gRPC log collector (an OpenTelemetry Collector's `otlp` receiver, default port
/// 4317) that Envoy's OpenTelemetry access logger sends the audit records to
/// (`--otel-collector HOST:PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelCollector {
    /// Its host name, e.g. `otel-collector.observability.svc.cluster.local`.
    pub host: String,
    /// Its OTLP/gRPC port.
    pub port: u16,
}

/// Name of Envoy's OpenTelemetry access logger extension.
pub const OTEL_ACCESS_LOGGER: &str = "envoy.access_loggers.open_telemetry";
/// Type URL of its configuration.
pub const OTEL_ACCESS_LOG_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig";
/// Type URL of the HTTP connection manager.
pub const HCM_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
/// Name of the HTTP connection manager network filter.
pub const HCM: &str = "envoy.filters.network.http_connection_manager";
/// The cluster the Envoy Gateway rendering adds for the collector.
pub const EG_OTEL_CLUSTER: &str = "mcp-guard-otel-collector";

/// The log record attributes: OpenTelemetry attribute name and the filter-state value
/// (`wasm.<key>`, written by mcp-guard with `audit_attributes: true`, `src/attributes.rs`) or
/// Envoy command that fills it. The same list as envoy/envoy-otel.yaml (a test compares them).
pub const OTEL_ATTRIBUTES: &[(&str, &str)] = &[
    ("mcp.method.name", "%FILTER_STATE(wasm.mcp.method:PLAIN)%"),
    (
        "gen_ai.operation.name",
        "%FILTER_STATE(wasm.mcp.operation_name:PLAIN)%",
    ),
    (
        "gen_ai.tool.name",
        "%FILTER_STATE(wasm.mcp.tool_name:PLAIN)%",
    ),
    (
        "gen_ai.prompt.name",
        "%FILTER_STATE(wasm.mcp.prompt_name:PLAIN)%",
    ),
    (
        "mcp.resource.uri",
        "%FILTER_STATE(wasm.mcp.resource_uri:PLAIN)%",
    ),
    (
        "jsonrpc.request.id",
        "%FILTER_STATE(wasm.mcp.request_id:PLAIN)%",
    ),
    (
        "mcp.session.id",
        "%FILTER_STATE(wasm.mcp.session_id:PLAIN)%",
    ),
    (
        "mcp.protocol.version",
        "%FILTER_STATE(wasm.mcp.protocol_version:PLAIN)%",
    ),
    (
        "rpc.response.status_code",
        "%FILTER_STATE(wasm.mcp.error_code:PLAIN)%",
    ),
    ("error.type", "%FILTER_STATE(wasm.mcp.error_type:PLAIN)%"),
    (
        "mcp_guard.agent_id",
        "%FILTER_STATE(wasm.mcp.agent_id:PLAIN)%",
    ),
    (
        "mcp_guard.server_id",
        "%FILTER_STATE(wasm.mcp.server_id:PLAIN)%",
    ),
    (
        "mcp_guard.server.name",
        "%FILTER_STATE(wasm.mcp.server_name:PLAIN)%",
    ),
    (
        "mcp_guard.server.version",
        "%FILTER_STATE(wasm.mcp.server_version:PLAIN)%",
    ),
    (
        "mcp_guard.decision",
        "%FILTER_STATE(wasm.mcp.decision:PLAIN)%",
    ),
    (
        "mcp_guard.output_status",
        "%FILTER_STATE(wasm.mcp.output_status:PLAIN)%",
    ),
    ("http.response.status_code", "%RESPONSE_CODE%"),
    ("client.address", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
    ("client.port", "%DOWNSTREAM_REMOTE_PORT%"),
];

/// The access logger (an `envoy.config.accesslog.v3.AccessLog`) that sends each audit record
/// as an OTLP log record over gRPC to `cluster`: only requests mcp-guard examined (CEL filter
/// on filter state `wasm.mcp_audit`), body the record text as the file log has it, resource
/// `service.name: mcp-guard`, attributes [`OTEL_ATTRIBUTES`]. The logger of
/// envoy/envoy-otel.yaml, with its cluster.
pub fn otel_access_log(cluster: &str) -> Doc {
    let attributes = OTEL_ATTRIBUTES.iter().map(|(key, value)| {
        Doc::map([
            ("key", Doc::str(*key)),
            ("value", Doc::map([("string_value", Doc::str(*value))])),
        ])
    });
    Doc::map([
        ("name", Doc::str(OTEL_ACCESS_LOGGER)),
        (
            "filter",
            Doc::map([(
                "extension_filter",
                Doc::map([
                    ("name", Doc::str("envoy.access_loggers.extension_filters.cel")),
                    (
                        "typed_config",
                        Doc::map([
                            (
                                "@type",
                                Doc::str(
                                    "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                                ),
                            ),
                            ("expression", Doc::str("'wasm.mcp_audit' in filter_state")),
                        ]),
                    ),
                ]),
            )]),
        ),
        (
            "typed_config",
            Doc::map([
                ("@type", Doc::str(OTEL_ACCESS_LOG_TYPE)),
                (
                    "grpc_service",
                    Doc::map([
                        (
                            "envoy_grpc",
                            Doc::map([("cluster_name", Doc::str(cluster))]),
                        ),
                        ("timeout", Doc::str("5s")),
                    ]),
                ),
                ("log_name", Doc::str("mcp_guard.audit")),
                ("stat_prefix", Doc::str("mcp_guard")),
                ("buffer_flush_interval", Doc::str("1s")),
                (
                    "resource_attributes",
                    Doc::map([(
                        "values",
                        Doc::seq([Doc::map([
                            ("key", Doc::str("service.name")),
                            ("value", Doc::map([("string_value", Doc::str("mcp-guard"))])),
                        ])]),
                    )]),
                ),
                (
                    "body",
                    Doc::map([(
                        "string_value",
                        Doc::str("%FILTER_STATE(wasm.mcp_audit:PLAIN)%"),
                    )]),
                ),
                ("attributes", Doc::map([("values", Doc::seq(attributes))])),
            ]),
        ),
    ])
}

/// The plugin configuration `policy` with `audit_attributes: true` added (the access logger's
/// attributes are read from the filter state it makes mcp-guard write). Errors: the document
/// is not a map, or sets `audit_attributes` to something else.
pub fn with_audit_attributes(policy: &Doc) -> Result<Doc, String> {
    let Some(entries) = policy.entries() else {
        return Err("the plugin configuration is not an object".to_owned());
    };
    match policy.get("audit_attributes") {
        None => {
            let mut out = entries.to_vec();
            out.push(("audit_attributes".to_owned(), Doc::Bool(true)));
            Ok(Doc::Map(out))
        }
        Some(Doc::Bool(true)) => Ok(policy.clone()),
        Some(have) => Err(format!(
            "audit_attributes: the file sets {}, --otel-collector needs true (the log \
             record attributes come from the filter state it writes)",
            have.to_compact_json().unwrap_or_default()
        )),
    }
}

/// The Istio EnvoyFilter `configPatches` entry that appends [`otel_access_log`] to the access
/// loggers of every HTTP connection manager in `context` (MERGE appends to a repeated field;
/// Istio's own access logs stay), sending to `cluster`: Istio's `outbound|<port>||<host>`
/// cluster of the collector's Service.
pub fn istio_otel_patch(context: IstioContext, cluster: &str) -> Doc {
    Doc::map([
        ("applyTo", Doc::str("NETWORK_FILTER")),
        (
            "match",
            Doc::map([
                ("context", Doc::str(context.as_istio())),
                (
                    "listener",
                    Doc::map([(
                        "filterChain",
                        Doc::map([("filter", Doc::map([("name", Doc::str(HCM))]))]),
                    )]),
                ),
            ]),
        ),
        (
            "patch",
            Doc::map([
                ("operation", Doc::str("MERGE")),
                (
                    "value",
                    Doc::map([(
                        "typed_config",
                        Doc::map([
                            ("@type", Doc::str(HCM_TYPE)),
                            ("access_log", Doc::seq([otel_access_log(cluster)])),
                        ]),
                    )]),
                ),
            ]),
        ),
    ])
}

impl OtelCollector {
    /// The Envoy cluster istiod builds for the collector Service's port:
    /// `outbound|<port>||<host>`.
    pub fn istio_cluster(&self) -> String {
        format!("outbound|{}||{}", self.port, self.host)
    }
}

/// Appends the OpenTelemetry access log patch ([`istio_otel_patch`]) to the EnvoyFilter of
/// the Istio rendering ([`istio`]'s single document).
pub fn istio_add_otel(docs: &mut [Doc], context: IstioContext, collector: &OtelCollector) {
    for doc in docs.iter_mut() {
        let Doc::Map(top) = doc else { continue };
        for (key, spec) in top.iter_mut() {
            let (true, Doc::Map(spec)) = (key == "spec", spec) else {
                continue;
            };
            for (key, patches) in spec.iter_mut() {
                if let (true, Doc::Seq(patches)) = (key == "configPatches", patches) {
                    patches.push(istio_otel_patch(context, &collector.istio_cluster()));
                }
            }
        }
    }
}

/// The comment put before the EnvoyFilter of the Istio WasmPlugin rendering with
/// `--otel-collector`.
pub const ISTIO_WASMPLUGIN_OTEL_NOTE: &str = "\
#
# --otel-collector: a WasmPlugin cannot add an access logger, so an EnvoyFilter (second
# document) appends Envoy's OpenTelemetry access logger to the selected workloads' HTTP
# connection managers; the pluginConfig gets audit_attributes: true (the log record
# attributes are read from the filter state it writes; this works without held headers).
";

/// The EnvoyFilter that only adds the OpenTelemetry access logger (for the Istio WasmPlugin
/// rendering, whose API cannot).
pub fn istio_otel_envoyfilter(
    name: &str,
    namespace: &str,
    selector: &[(String, String)],
    context: IstioContext,
    collector: &OtelCollector,
) -> Doc {
    let mut spec = Vec::new();
    if !selector.is_empty() {
        spec.push((
            "workloadSelector".to_owned(),
            Doc::map([(
                "labels",
                Doc::map(selector.iter().map(|(k, v)| (k.clone(), Doc::str(v)))),
            )]),
        ));
    }
    spec.push((
        "configPatches".to_owned(),
        Doc::seq([istio_otel_patch(context, &collector.istio_cluster())]),
    ));
    Doc::map([
        ("apiVersion", Doc::str("networking.istio.io/v1alpha3")),
        ("kind", Doc::str("EnvoyFilter")),
        (
            "metadata",
            Doc::map([
                ("name", Doc::str(format!("{name}-otel"))),
                ("namespace", Doc::str(namespace)),
            ]),
        ),
        ("spec", Doc::Map(spec)),
    ])
}

/// The EnvoyPatchPolicy `jsonPatches` entries for Envoy Gateway: a new Cluster
/// [`EG_OTEL_CLUSTER`] (HTTP/2, DNS) to the collector, and [`otel_access_log`] appended to the
/// access loggers of every HTTP connection manager of `listener`.
pub fn envoy_gateway_otel_patches(listener: &str, collector: &OtelCollector) -> Vec<Doc> {
    let cluster = Doc::map([
        ("name", Doc::str(EG_OTEL_CLUSTER)),
        ("type", Doc::str("STRICT_DNS")),
        ("connect_timeout", Doc::str("5s")),
        (
            "typed_extension_protocol_options",
            Doc::map([(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                Doc::map([
                    (
                        "@type",
                        Doc::str(
                            "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        ),
                    ),
                    (
                        "explicit_http_config",
                        Doc::map([("http2_protocol_options", Doc::Map(Vec::new()))]),
                    ),
                ]),
            )]),
        ),
        (
            "load_assignment",
            Doc::map([
                ("cluster_name", Doc::str(EG_OTEL_CLUSTER)),
                (
                    "endpoints",
                    Doc::seq([Doc::map([(
                        "lb_endpoints",
                        Doc::seq([Doc::map([(
                            "endpoint",
                            Doc::map([(
                                "address",
                                Doc::map([(
                                    "socket_address",
                                    Doc::map([
                                        ("address", Doc::str(&collector.host)),
                                        ("port_value", Doc::Number(collector.port.into())),
                                    ]),
                                )]),
                            )]),
                        )])]),
                    )])]),
                ),
            ]),
        ),
    ]);
    vec![
        Doc::map([
            (
                "type",
                Doc::str("type.googleapis.com/envoy.config.cluster.v3.Cluster"),
            ),
            ("name", Doc::str(EG_OTEL_CLUSTER)),
            (
                "operation",
                Doc::map([
                    ("op", Doc::str("add")),
                    ("path", Doc::str("")),
                    ("value", cluster),
                ]),
            ),
        ]),
        Doc::map([
            (
                "type",
                Doc::str("type.googleapis.com/envoy.config.listener.v3.Listener"),
            ),
            ("name", Doc::str(listener)),
            (
                "operation",
                Doc::map([
                    ("op", Doc::str("add")),
                    (
                        "jsonPath",
                        Doc::str(format!("$..filters[?(@.name=='{HCM}')]")),
                    ),
                    ("path", Doc::str("/typed_config/access_log/-")),
                    ("value", otel_access_log(EG_OTEL_CLUSTER)),
                ]),
            ),
        ]),
    ]
}

/// Appends [`envoy_gateway_otel_patches`] to the EnvoyPatchPolicy of the Envoy Gateway
/// rendering ([`envoy_gateway`]'s second document).
pub fn envoy_gateway_add_otel(docs: &mut [Doc], listener: &str, collector: &OtelCollector) {
    for doc in docs.iter_mut() {
        if doc.get("kind") != Some(&Doc::str("EnvoyPatchPolicy")) {
            continue;
        }
        let Doc::Map(top) = doc else { continue };
        for (key, spec) in top.iter_mut() {
            let (true, Doc::Map(spec)) = (key == "spec", spec) else {
                continue;
            };
            for (key, patches) in spec.iter_mut() {
                if let (true, Doc::Seq(patches)) = (key == "jsonPatches", patches) {
                    patches.extend(envoy_gateway_otel_patches(listener, collector));
                }
            }
        }
    }
}

/// The comment put before the Istio rendering with `--otel-collector`.
pub const ISTIO_OTEL_NOTE: &str = "\
#
# --otel-collector: a third patch (NETWORK_FILTER, MERGE) appends Envoy's OpenTelemetry access
# logger to the HTTP connection managers of the selected workloads (Istio's own access logs
# stay); each request mcp-guard examined becomes one OTLP log record (body: the audit record(s);
# attributes: the call in OpenTelemetry's MCP/GenAI names, from filter state mcp-guard writes
# with audit_attributes: true, which the plugin configuration gets). It is sent to
# outbound|<port>||<host>, the cluster istiod builds for the collector's Service: the Service
# must be visible to the workloads (Sidecar egress scope) and its port must speak gRPC (port
# name grpc, or appProtocol: grpc) so the cluster is HTTP/2.
";

/// The comment put before the Envoy Gateway rendering with `--otel-collector`.
pub const ENVOY_GATEWAY_OTEL_NOTE: &str = "\
#
# --otel-collector: the EnvoyPatchPolicy also adds a cluster mcp-guard-otel-collector (HTTP/2,
# DNS) to the collector and appends Envoy's OpenTelemetry access logger to the Listener's
# HTTP connection managers (Envoy Gateway's own access logs stay); the EnvoyExtensionPolicy's
# plugin configuration gets audit_attributes: true. (Envoy Gateway's own access-log settings,
# EnvoyProxy spec.telemetry.accessLog, belong to the EnvoyProxy, outside these two objects.)
";
