//! Rendering the plugin configuration into what each platform loads.
//!
//! Every rendering carries the two Wasm `PluginConfig` settings mcp-guard depends on
//! (README "Loading mcp-guard into Envoy"): `failure_policy: FAIL_CLOSED` (or the platform's
//! spelling of it) and `allow_on_headers_stop_iteration: true`, without which the filter
//! cannot set its tags after reading the body and requests stall.

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
# that loads it by ECDS over ADS.
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
