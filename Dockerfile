# The mcp-guard Wasm module as an OCI image, for Istio's WasmPlugin (`url: oci://...`) and
# Envoy Gateway's EnvoyExtensionPolicy (`wasm: [{code: {type: Image, image: {url: ...}}}]`).
#
# The "compat" variant of the Wasm image specification
# (https://github.com/solo-io/wasm/blob/master/spec/spec-compat.md), which both fetch: an
# image FROM scratch with exactly one layer, a tar holding the module as `plugin.wasm`. So
# exactly one COPY (one layer), no RUN/ADD; LABELs add no layer.
#
#   make wasm
#   docker build --platform linux/amd64 --provenance=false -t ghcr.io/OWNER/mcp-guard:0.1.0 .
#   docker push ghcr.io/OWNER/mcp-guard:0.1.0
#   target/release/mcp-guard render examples/policy.json --format istio \
#     --image oci://ghcr.io/OWNER/mcp-guard:0.1.0 --selector app=mcp-server
#
# The build context is the repository root; .dockerignore admits only the module.
# --provenance=false: no attestation manifest, so the registry holds one plain image manifest;
# --platform linux/amd64: the platform Istio's fetcher picks when it meets an image index (the
# module itself runs anywhere). The layer must stay gzip-compressed (the default): the
# fetchers accept no other layer media type.
# tests/e2e/test_06_compose_static.py checks that the COPY source is the Makefile's $(WASM).
FROM scratch

# The crate's version (Cargo.toml); the test keeps them equal.
ARG VERSION=0.1.0

LABEL org.opencontainers.image.title="mcp-guard" \
      org.opencontainers.image.description="proxy-wasm filter for Envoy that tags, allowlists and audits MCP (JSON-RPC) traffic; Wasm module as plugin.wasm" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

COPY target/wasm32-wasip1/release/mcp_guard.wasm ./plugin.wasm
