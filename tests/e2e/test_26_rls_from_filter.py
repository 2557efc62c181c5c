"""Global rate limits on a host without `allow_on_headers_stop_iteration` (Istio's WasmPlugin API
today): mcp-guard calls the RLS itself (`rate_limit_service`, proxy-wasm dispatch_grpc_call)
with the descriptors envoy/envoy-rls.yaml's route builds from its tags, and holds only the
body (`hold_request_headers: false`).

The stack is the real Envoy with the shipped envoy/envoy.yaml, reduced to what such a host has:
mcp-guard (ECDS) and the router, no Envoy rate-limit filter, plus a `ratelimit` cluster for the
test RLS (tests/e2e/rls_server.py, grpcio). The ECDS config the CLI renders for this plugin
configuration has allow_on_headers_stop_iteration: false, as a WasmPlugin's has.

The module runs twice: as above (`held-headers-off`), and with `hold_request_headers: true` on
a host that has the flag (`held-headers-on`): the same RLS calls, and the tags reach the server.
"""
from __future__ import annotations

import copy
import json

import pytest
from conftest import WASM, test_policy
from helpers import (
    RATE_LIMITED,
    RawSession,
    audit_for,
    mcp_session,
    push_policy,
    tools_call_body,
    upstream_requests,
    validate_at_teardown,
)
from mcp.shared.exceptions import MCPError
from rls_server import RateLimitServer, rls_cluster
from stack import Stack, free_port
from test_25_global_rate_limit import _recovers, for_agent, rls

pytestmark = pytest.mark.anyio

RETRY_AFTER_S = 30  # the test RLS's duration_until_reset
INTERNAL_ERROR = -32603


def rls_policy(failure_mode_deny: bool, hold: bool = False) -> dict:
    policy = test_policy()
    policy["hold_request_headers"] = hold
    policy["rate_limit_service"] = {
        "cluster": "ratelimit",
        "domain": "mcp",
        "timeout_ms": 500,
        "failure_mode_deny": failure_mode_deny,
    }
    return policy


def as_wasmplugin_host(rls_port: int):
    """The bootstrap hook: only mcp-guard and the router; a `ratelimit` cluster (HTTP/2)."""

    def hook(bootstrap: dict) -> dict:
        bootstrap = copy.deepcopy(bootstrap)
        (listener,) = bootstrap["static_resources"]["listeners"]
        (chain,) = listener["filter_chains"]
        (hcm,) = chain["filters"]
        filters = hcm["typed_config"]["http_filters"]
        hcm["typed_config"]["http_filters"] = [
            f for f in filters if f["name"] in ("mcp-guard", "envoy.filters.http.router")
        ]
        bootstrap["static_resources"]["clusters"].append(rls_cluster(rls_port))
        return bootstrap

    return hook


@pytest.fixture(scope="module", params=[False, True], ids=["held-headers-off", "held-headers-on"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    if not WASM.is_file():
        pytest.fail(f"{WASM} is missing: build it with `make wasm`", pytrace=False)
    rls = RateLimitServer(retry_after_s=RETRY_AFTER_S)
    rls.start()
    workdir = tmp_path_factory.mktemp("rls-filter-stack")
    policy_file = workdir / "policy.json"
    policy_file.write_text(json.dumps(rls_policy(True, request.param), indent=2), encoding="utf-8")
    s = Stack(
        workdir=workdir,
        listen_port=free_port(),
        admin_port=free_port(),
        upstream_port=free_port(),
        policy=policy_file,
        wasm=WASM,
        concurrency=2,
        component_log_level="wasm:debug",
        bootstrap_hook=as_wasmplugin_host(rls.port),
    )
    s.rls = rls  # type: ignore[attr-defined]
    s.hold = request.param  # type: ignore[attr-defined]
    try:
        s.start()
        yield s
    finally:
        s.stop()
        rls.stop()
    validate_at_teardown(s)


def holds(s: Stack) -> bool:
    return s.hold  # type: ignore[attr-defined]


def policy_of(s: Stack, failure_mode_deny: bool) -> str:
    return json.dumps(rls_policy(failure_mode_deny, holds(s)))


def test_the_host_is_configured_like_a_wasmplugin(stack):
    """No Envoy rate-limit filter; the Wasm config allows stopping at headers only when the
    plugin configuration holds them."""
    (resource,) = json.loads(stack.ecds_path.read_text(encoding="utf-8"))["resources"]
    config = resource["typed_config"]["config"]
    assert config["allow_on_headers_stop_iteration"] is holds(stack)
    assert json.loads(config["configuration"]["value"])["hold_request_headers"] is holds(stack)
    dump = stack.admin_get("/config_dump?resource=dynamic_listeners")
    assert "envoy.filters.http.ratelimit" not in dump and "local_ratelimit" not in dump


async def test_descriptors_are_those_of_the_shipped_route(stack):
    agent = "sdk-agent"
    spoofed = {"x-mcp-tool-name": "echo", "x-mcp-method": "ping"}
    async with mcp_session(stack.url, agent=agent, headers=spoofed) as conn:
        result = await conn.session.call_tool("search", {"query": "descriptors"})
        assert result.is_error is False, result
    # The request waited for the RLS's answer, so it is recorded by now; the wait is a bound.
    rls(stack).wait_for(
        lambda r: for_agent(agent)(r) and (("method", "tools/call"),) in r.descriptors, 5.0, "the tools/call check"
    )
    seen = [r for r in rls(stack).requests if for_agent(agent)(r)]
    assert all(r.domain == "mcp" and r.hits_addend == 0 for r in seen), seen
    (call,) = [r for r in seen if (("method", "tools/call"),) in r.descriptors]
    assert call.descriptors == (
        (("agent", agent),),
        (("tool", "search"),),
        (("agent", agent), ("tool", "search")),
        (("method", "tools/call"),),
    ), call
    (init,) = [r for r in seen if (("method", "initialize"),) in r.descriptors]
    assert init.descriptors == ((("agent", agent),), (("method", "initialize"),)), init
    assert not [r for r in seen if (("tool", "echo"),) in r.descriptors or (("method", "ping"),) in r.descriptors]
    # The server got the call, with the agent tag and never the client's forged tags; mcp-guard's
    # own body tags only where the headers were held.
    (forwarded,) = [c for c in stack.calls() if c["headers"].get("x-agent-id") == [agent]]
    assert forwarded["tool"] == "search"
    if holds(stack):
        assert forwarded["headers"]["x-mcp-tool-name"] == ["search"]
        assert forwarded["headers"]["x-mcp-method"] == ["tools/call"]
    else:
        assert "x-mcp-tool-name" not in forwarded["headers"] and "x-mcp-method" not in forwarded["headers"]


async def test_over_limit_is_http_429_with_the_request_id_and_retry_after(stack):
    agent = "rl-agent"
    server = rls(stack)
    server.over_limit(lambda ds: (("agent", agent), ("tool", "search")) in ds)
    try:
        async with mcp_session(stack.url, agent=agent) as conn:
            with pytest.raises(MCPError) as excinfo:
                await conn.session.call_tool("search", {"query": "limited"})
            assert excinfo.value.code == RATE_LIMITED
            last = [r for r in conn.recorder.responses if r.method == "POST"][-1]
            assert last.status == 429
            assert last.headers.get("retry-after") == str(RETRY_AFTER_S), last.headers
            echoed = await conn.session.call_tool("echo", {"text": "not limited"})
            assert echoed.is_error is False

        raw = RawSession(stack.url, agent=agent)
        await raw.initialize()
        before = upstream_requests(stack)
        resp = await raw.post(tools_call_body("rls-429", "search", '{"query":"raw"}'))
        resp.jsonrpc_error(429, "rls-429", RATE_LIMITED)
        assert resp.headers.get("retry-after") == str(RETRY_AFTER_S), resp.headers
        resp = await raw.post(tools_call_body(4242, "search", '{"query":"raw"}'))
        resp.jsonrpc_error(429, 4242, RATE_LIMITED)
        # The headers went upstream before the body was examined, but no limited call's body
        # did: the demo server ran none of them.
        await raw.delete()
        # Upstream: the DELETE, and with headers not held also the two limited calls' headers
        # (each stream then reset before its body).
        assert upstream_requests(stack) == before + (1 if holds(stack) else 3)
    finally:
        server.over_limit(None)

    assert len([r for r in server.requests if r.answered == "OVER_LIMIT"]) == 3
    assert [c["tool"] for c in stack.calls() if c["headers"].get("x-agent-id") == [agent]] == ["echo"]
    limited = audit_for(stack, 3, agent_id=agent, tool_name="search", output_status="rate_limited")
    for record in limited:
        assert record["http_status"] == 429
        assert record["error_code"] == RATE_LIMITED
        assert record["decision"] == "allow"
    assert {r["request_id"] for r in limited} >= {"rls-429", 4242}


async def test_denied_calls_are_refused_before_the_rls_is_asked(stack):
    agent = "demo-agent"
    raw = RawSession(stack.url, agent=agent)
    await raw.initialize()
    seen_before = len(rls(stack).requests)
    resp = await raw.post(tools_call_body("deny-1", "delete_repo", '{"repo":"x"}'))
    assert resp.single()["error"]["code"] == -32003
    assert len(rls(stack).requests) == seen_before
    await raw.delete()


def rls_errors(s: Stack) -> int:
    """wasmcustom.mcp_guard.rls_errors, summed over the lines Envoy prints (one counter)."""
    total = 0
    for line in s.admin_get("/stats?filter=mcp_guard\\.rls_errors$").splitlines():
        name, _, value = line.partition(": ")
        if name.strip() == "wasmcustom.mcp_guard.rls_errors":
            total += int(value)
    return total


async def _call_while_rls_down(s: Stack, agent: str, request_id: str):
    raw = RawSession(s.url, agent=agent)
    await raw.initialize()
    calls_before = len(s.calls())
    with rls(s).down():
        resp = await raw.post(tools_call_body(request_id, "echo", '{"text":"rls down"}'))
    return raw, resp, calls_before


async def test_rls_down_with_failure_mode_deny_refuses_with_a_jsonrpc_error(stack):
    push_policy(stack, json.loads(policy_of(stack, True)))  # every worker runs it from here on
    agent = "audit-agent"
    errors_before = rls_errors(stack)
    raw, resp, calls_before = await _call_while_rls_down(stack, agent, "down-deny")
    assert rls_errors(stack) == errors_before + 1
    error = resp.jsonrpc_error(500, "down-deny", INTERNAL_ERROR)
    assert "rate limit service" in error["error"]["message"]
    assert len(stack.calls()) == calls_before, "a call reached the server while the RLS was down"
    (record,) = audit_for(stack, agent_id=agent, request_id="down-deny")
    assert record["output_status"] == "upstream_error" and record["http_status"] == 500, record
    assert record["decision"] == "allow"
    await _recovers(stack, raw, "down-deny-after")
    await raw.delete()


async def test_rls_down_without_failure_mode_deny_lets_the_call_through(stack):
    push_policy(stack, json.loads(policy_of(stack, False)))  # every worker runs it from here on
    try:
        agent = "audit-agent"
        raw, resp, calls_before = await _call_while_rls_down(stack, agent, "down-allow")
        assert resp.status == 200, (resp.status, resp.body[:200])
        assert resp.single()["id"] == "down-allow"
        assert [c["tool"] for c in stack.calls()[calls_before:]] == ["echo"]
        (record,) = audit_for(stack, agent_id=agent, request_id="down-allow")
        assert record["output_status"] == "success", record
        await _recovers(stack, raw, "down-allow-after")
        await raw.delete()
    finally:
        push_policy(stack, json.loads(policy_of(stack, True)))
