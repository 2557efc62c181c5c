//! mcp-guard: a proxy-wasm HTTP filter for Envoy that governs Model Context Protocol traffic.
//!
//! It reads the JSON-RPC messages of MCP Streamable HTTP requests, tags each request with
//! headers Envoy's rate-limit filters can use as descriptors (`x-mcp-method`,
//! `x-mcp-tool-name`, `x-agent-id`, ...), enforces per-agent tool allowlists, scans responses
//! to learn each call's outcome, and writes one audit record per call to Envoy's access log
//! through filter state.
//!
//! Layout: the protocol and policy logic are plain Rust modules tested natively
//! ([`mcp`] names, [`json`] framing, [`jsonrpc`], [`sse`], [`annotations`], [`response`], [`routing`], [`version`], [`params`], [`pins`], [`correlation`],
//! [`rounds`], [`curation`], [`metrics`], [`policy`], [`ratelimit`], [`identity`], [`tags`], [`tool_store`], [`audit`], [`config`], the host
//! interface [`host`], the pure request decision [`verdict`], and the per-stream state machine [`filter`], which
//! enacts it); [`wasm`] is the thin proxy-wasm glue (root context and HTTP context) that maps hostcalls onto
//! [`host::Host`].

pub mod annotations;
pub mod audit;
pub mod config;
pub mod correlation;
pub mod curation;
pub mod filter;
pub mod host;
pub mod identity;
pub mod json;
pub mod jsonrpc;
pub mod mcp;
pub mod metrics;
pub mod params;
pub mod pins;
pub mod policy;
pub mod ratelimit;
pub mod response;
pub mod rounds;
pub mod routing;
pub mod sse;
pub mod tags;
pub mod tool_store;
pub mod verdict;
pub mod version;
pub mod wasm;
