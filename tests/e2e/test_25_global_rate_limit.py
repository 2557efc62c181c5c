"""Global rate limits: envoy/envoy-rls.yaml (envoy.filters.http.ratelimit, RLS v3 over gRPC) in a
real Envoy, with a test-only rate limit service (tests/e2e/rls_server.py, grpcio + xds-protos)
that records the descriptors Envoy sends and answers OVER_LIMIT when a test asks it to.

Two module stacks, each with its own RLS: the shipped bootstrap (failure_mode_deny: true) and
the same with failure_mode_deny: false. "RLS down" stops the service (its port refuses
connections) and brings it back on the same port afterwards.

Also static: examples/ratelimit/config.yaml (the envoyproxy/ratelimit service's own format)
parses and has an entry for each descriptor the Envoy config sends, and nothing else.
"""
from __future__ import annotations

import json
import time

import anyio
import pytest
import yaml
from conftest import REPO, WASM, test_policy
from helpers import (
    RATE_LIMITED,
    RawSession,
    audit_for,
    mcp_session,
    tools_call_body,
    upstream_requests,
    validate_at_teardown,
)
from mcp.shared.exceptions import MCPError
from rls_server import RateLimitServer
from stack import RLS_BOOTSTRAP, Stack, free_port

pytestmark = pytest.mark.anyio

EXAMPLE_CONFIG = REPO / "examples" / "ratelimit" / "config.yaml"
RETRY_AFTER_S = 30  # the test RLS's duration_until_reset

# --------------------------------------------------------------------------- the shipped config


def shipped() -> dict:
    return yaml.safe_load(RLS_BOOTSTRAP.read_text(encoding="utf-8"))


def _hcm(bootstrap: dict) -> dict:
    (listener,) = bootstrap["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    return hcm["typed_config"]


def ratelimit_filter(bootstrap: dict) -> dict:
    (f,) = [f for f in _hcm(bootstrap)["http_filters"] if f["name"] == "envoy.filters.http.ratelimit"]
    return f["typed_config"]


def counted_route(bootstrap: dict) -> dict:
    """The route every request but a multi round-trip continuation takes (the last one); the
    first route matches `x-mcp-call-round: continuation` and has no rate_limits
    (docs/rate-limiting.md "Multi round-trip calls count once")."""
    (vhost,) = _hcm(bootstrap)["route_config"]["virtual_hosts"]
    continuation, counted = vhost["routes"]
    assert continuation["match"]["headers"] == [
        {"name": "x-mcp-call-round", "string_match": {"exact": "continuation"}}
    ], continuation
    assert "rate_limits" not in continuation["route"], continuation
    assert continuation["route"]["cluster"] == counted["route"]["cluster"]
    assert counted["match"] == {"prefix": "/"}, counted
    return counted


def route_descriptor_keys(bootstrap: dict) -> list[tuple[str, ...]]:
    """The descriptors the route's rate_limits produce, as tuples of descriptor keys."""
    route = counted_route(bootstrap)
    out = []
    for limit in route["route"]["rate_limits"]:
        keys = []
        for action in limit["actions"]:
            (kind, spec), = action.items()
            assert kind == "request_headers", action
            keys.append(spec["descriptor_key"])
        out.append(tuple(keys))
    return out


HEADER_OF = {"agent": "x-agent-id", "tool": "x-mcp-tool-name", "method": "x-mcp-method"}
EXPECTED_DESCRIPTORS = [("agent",), ("tool",), ("agent", "tool"), ("method",)]


def test_shipped_rls_bootstrap_shape() -> None:
    """The filter order, the RLS settings and the descriptors the issue asks for."""
    bootstrap = shipped()
    names = [f["name"] for f in _hcm(bootstrap)["http_filters"]]
    assert names == ["mcp-guard", "envoy.filters.http.ratelimit", "envoy.filters.http.router"]
    rl = ratelimit_filter(bootstrap)
    assert rl["domain"] == "mcp"
    assert rl["failure_mode_deny"] is True
    assert rl["enable_x_ratelimit_headers"] == "DRAFT_VERSION_03"
    service = rl["rate_limit_service"]
    assert service["transport_api_version"] == "V3"
    assert service["grpc_service"]["envoy_grpc"]["cluster_name"] == "ratelimit"
    (cluster,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "ratelimit"]
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in options["explicit_http_config"]
    assert route_descriptor_keys(bootstrap) == EXPECTED_DESCRIPTORS
    for limit in counted_route(bootstrap)["route"]["rate_limits"]:
        for action in limit["actions"]:
            spec = action["request_headers"]
            assert spec["header_name"] == HEADER_OF[spec["descriptor_key"]], spec


# --------------------------------------------------------------------------- the example RLS config

UNITS = {"second", "minute", "hour", "day", "week", "month", "year"}


def example_paths(entries: list[dict], prefix: tuple[str, ...] = (), where: str = "descriptors") -> list[tuple[str, ...]]:
    """Every entry of the envoyproxy/ratelimit descriptor tree that carries a limit, as its
    key path; checks each entry's shape on the way."""
    assert isinstance(entries, list) and entries, where
    out = []
    seen = set()
    for n, entry in enumerate(entries):
        at = f"{where}[{n}]"
        assert set(entry) <= {"key", "value", "rate_limit", "descriptors", "shadow_mode", "detailed_metric"}, at
        assert isinstance(entry["key"], str) and entry["key"], at
        value = entry.get("value")
        assert value is None or (isinstance(value, str) and value), at
        composite = (entry["key"], value)
        assert composite not in seen, f"{at}: duplicate {composite}"  # the service refuses these
        seen.add(composite)
        path = prefix + (entry["key"],)
        if "rate_limit" in entry:
            limit = entry["rate_limit"]
            if limit.get("unlimited") is not True:
                assert limit["unit"] in UNITS, at
                assert isinstance(limit["requests_per_unit"], int) and limit["requests_per_unit"] > 0, at
            out.append(path)
        else:
            assert "descriptors" in entry, f"{at}: neither rate_limit nor descriptors"
        if "descriptors" in entry:
            out += example_paths(entry["descriptors"], path, f"{at}.descriptors")
    return out


def test_example_ratelimit_config_matches_the_envoy_descriptors() -> None:
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    assert set(config) == {"domain", "descriptors"}
    assert config["domain"] == ratelimit_filter(shipped())["domain"]
    paths = example_paths(config["descriptors"])
    # An example limit for every descriptor Envoy sends, and no entry Envoy never matches.
    assert set(paths) == set(route_descriptor_keys(shipped())) == set(EXPECTED_DESCRIPTORS)


# --------------------------------------------------------------------------- stacks


def _rls_stack(tmp_path_factory: pytest.TempPathFactory, deny: bool):
    if not WASM.is_file():
        pytest.fail(f"{WASM} is missing: build it with `make wasm`", pytrace=False)
    rls = RateLimitServer(retry_after_s=RETRY_AFTER_S)
    rls.start()
    workdir = tmp_path_factory.mktemp("rls-stack")
    policy_file = workdir / "policy.json"
    policy_file.write_text(json.dumps(test_policy(), indent=2), encoding="utf-8")

    def set_failure_mode(bootstrap: dict) -> dict:
        ratelimit_filter(bootstrap)["failure_mode_deny"] = deny
        return bootstrap

    s = Stack(
        workdir=workdir,
        listen_port=free_port(),
        admin_port=free_port(),
        upstream_port=free_port(),
        policy=policy_file,
        wasm=WASM,
        concurrency=2,
        component_log_level="wasm:debug",
        bootstrap=RLS_BOOTSTRAP,
        ratelimit_port=rls.port,
        bootstrap_hook=set_failure_mode,
    )
    s.rls = rls  # type: ignore[attr-defined]
    try:
        s.start()
        yield s
    finally:
        s.stop()
        rls.stop()
    validate_at_teardown(s)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """The shipped envoy/envoy-rls.yaml: failure_mode_deny: true. (Named `stack` so that the
    conftest attaches its logs to a failure report.)"""
    yield from _rls_stack(tmp_path_factory, deny=True)


@pytest.fixture(scope="module")
def allow_stack(tmp_path_factory: pytest.TempPathFactory):
    """The same with failure_mode_deny: false."""
    yield from _rls_stack(tmp_path_factory, deny=False)


def rls(s: Stack) -> RateLimitServer:
    return s.rls  # type: ignore[attr-defined]


def ratelimit_stats(s: Stack) -> dict[str, int]:
    """cluster.mcp_demo.ratelimit.* (the filter counts per route cluster)."""
    prefix = "cluster.mcp_demo.ratelimit."
    out = {}
    for line in s.admin_get(r"/stats?filter=^cluster\.mcp_demo\.ratelimit\.").splitlines():
        name, _, value = line.partition(": ")
        if name.startswith(prefix) and value.strip().isdigit():
            out[name[len(prefix):]] = int(value)
    return out


def for_agent(agent: str):
    return lambda r: (("agent", agent),) in r.descriptors


# --------------------------------------------------------------------------- descriptors


async def test_descriptors_envoy_sends_are_the_filters_tags(stack):
    agent = "sdk-agent"
    # Client-sent tags are removed by mcp-guard: they must not reach the descriptors.
    spoofed = {"x-mcp-tool-name": "echo", "x-mcp-method": "ping"}
    async with mcp_session(stack.url, agent=agent, headers=spoofed) as conn:
        result = await conn.session.call_tool("search", {"query": "descriptors"})
        assert result.is_error is False, result

    # Envoy waits for the RLS's answer before forwarding, so the request is recorded by now;
    # the wait is only a bound.
    rls(stack).wait_for(
        lambda r: for_agent(agent)(r) and (("method", "tools/call"),) in r.descriptors, 5.0, "the tools/call check"
    )
    seen = [r for r in rls(stack).requests if for_agent(agent)(r)]
    assert all(r.domain == "mcp" for r in seen), seen
    (call,) = [r for r in seen if (("method", "tools/call"),) in r.descriptors]
    # In the order of the route's rate_limits: agent; tool; agent x tool; method.
    assert call.descriptors == (
        (("agent", agent),),
        (("tool", "search"),),
        (("agent", agent), ("tool", "search")),
        (("method", "tools/call"),),
    ), call
    assert call.answered == "OK"
    # initialize has no tool name: only (agent) and (method).
    (init,) = [r for r in seen if (("method", "initialize"),) in r.descriptors]
    assert init.descriptors == ((("agent", agent),), (("method", "initialize"),)), init
    # Every MCP request of the session went through the RLS, none with a spoofed tag.
    assert not [r for r in seen if (("tool", "echo"),) in r.descriptors or (("method", "ping"),) in r.descriptors]


# --------------------------------------------------------------------------- OVER_LIMIT


async def test_over_limit_is_http_429_with_a_jsonrpc_error_and_retry_after(stack):
    agent = "rl-agent"
    server = rls(stack)
    # Over limit: `search` for this agent (the agent x tool descriptor), nothing else.
    server.over_limit(lambda ds: (("agent", agent), ("tool", "search")) in ds)
    over_limit_before = ratelimit_stats(stack).get("over_limit", 0)
    try:
        async with mcp_session(stack.url, agent=agent) as conn:
            # The official SDK client: a JSON-RPC error, code -32004. (Whether it reached the
            # server is checked on the server's call log below: the session's own GET stream
            # makes Envoy's upstream request count move meanwhile.)
            with pytest.raises(MCPError) as excinfo:
                await conn.session.call_tool("search", {"query": "limited"})
            assert excinfo.value.code == RATE_LIMITED
            last = [r for r in conn.recorder.responses if r.method == "POST"][-1]
            assert last.status == 429
            assert last.headers.get("retry-after") == str(RETRY_AFTER_S), last.headers
            # The same agent's other tools pass.
            echoed = await conn.session.call_tool("echo", {"text": "not limited"})
            assert echoed.is_error is False

        # Raw HTTP: 429, application/json, the request's id, Retry-After, X-RateLimit-*.
        raw = RawSession(stack.url, agent=agent)
        await raw.initialize()
        before = upstream_requests(stack)
        resp = await raw.post(tools_call_body("rls-429", "search", '{"query":"raw"}'))
        resp.jsonrpc_error(429, "rls-429", RATE_LIMITED)
        assert resp.headers.get("retry-after") == str(RETRY_AFTER_S), resp.headers
        assert int(resp.headers["retry-after"]) > 0
        assert resp.headers.get("x-ratelimit-remaining") == "0", resp.headers
        assert resp.headers.get("x-ratelimit-reset") == str(RETRY_AFTER_S), resp.headers
        assert resp.headers.get("x-envoy-ratelimited") == "true", resp.headers
        # An integer id too.
        resp = await raw.post(tools_call_body(4242, "search", '{"query":"raw"}'))
        resp.jsonrpc_error(429, 4242, RATE_LIMITED)
        assert upstream_requests(stack) == before, "a limited call reached the server"
        await raw.delete()

        # The same tool for another agent passes.
        async with mcp_session(stack.url, agent="demo-agent") as other:
            result = await other.session.call_tool("search", {"query": "other agent"})
            assert result.is_error is False
    finally:
        server.over_limit(None)

    limited_seen = [r for r in server.requests if r.answered == "OVER_LIMIT"]
    assert len(limited_seen) == 3, limited_seen
    assert not [c for c in stack.calls() if c["tool"] == "search" and c["headers"]["x-agent-id"] == [agent]]
    assert [c["tool"] for c in stack.calls() if c["headers"]["x-agent-id"] == [agent]] == ["echo"]

    limited = audit_for(stack, 3, agent_id=agent, tool_name="search", output_status="rate_limited")
    for record in limited:
        assert record["http_status"] == 429
        assert record["error_code"] == RATE_LIMITED
        assert record["decision"] == "allow"  # the allowlist allowed it; the RLS refused it
    assert {r["request_id"] for r in limited} >= {"rls-429", 4242}
    # Envoy's rate limit filter counted exactly the three answers the RLS gave as OVER_LIMIT.
    assert ratelimit_stats(stack).get("over_limit", 0) == over_limit_before + 3


async def test_retry_after_from_the_rls_wins_and_defaults_to_the_reset(stack):
    """Retry-After comes from the bootstrap's local_reply_config (X-RateLimit-Reset), unless the
    RLS sends its own in response_headers_to_add: then that one, once."""
    agent = "batch-agent"
    server = rls(stack)
    raw = RawSession(stack.url, agent=agent)
    await raw.initialize()
    server.over_limit(lambda ds: (("agent", agent), ("tool", "search")) in ds)
    try:
        server.retry_after_header = "45"
        resp = await raw.post(tools_call_body("ra-rls", "search", '{"query":"q"}'))
        resp.jsonrpc_error(429, "ra-rls", RATE_LIMITED)
        assert resp.headers.get("retry-after") == "45", resp.headers  # httpx joins repeats with ", "
        server.retry_after_header = None
        server.retry_after_s = None  # the RLS reports no reset: X-RateLimit-Reset 0
        resp = await raw.post(tools_call_body("ra-none", "search", '{"query":"q"}'))
        resp.jsonrpc_error(429, "ra-none", RATE_LIMITED)
        assert resp.headers.get("x-ratelimit-reset") == "0", resp.headers
        assert resp.headers.get("retry-after") == "0", resp.headers
    finally:
        server.over_limit(None)
        server.retry_after_header = None
        server.retry_after_s = RETRY_AFTER_S
    await raw.delete()
    audit_for(stack, 2, agent_id=agent, tool_name="search", output_status="rate_limited")


# --------------------------------------------------------------------------- RLS down


async def _call_while_rls_down(s: Stack, agent: str, request_id: str):
    raw = RawSession(s.url, agent=agent)
    await raw.initialize()  # RLS up
    seen_before = len(rls(s).requests)
    before = upstream_requests(s)
    calls_before = len(s.calls())
    with rls(s).down():
        resp = await raw.post(tools_call_body(request_id, "echo", '{"text":"rls down"}'))
    # The RLS was never asked (it was not running).
    assert len(rls(s).requests) == seen_before
    return raw, resp, before, calls_before


async def _recovers(s: Stack, raw: RawSession, request_id: str) -> None:
    """With the RLS back, calls pass again (Envoy reconnects on the next request)."""
    deadline = time.monotonic() + 10
    while True:
        resp = await raw.post(tools_call_body(request_id, "echo", '{"text":"rls back"}'))
        if resp.status == 200 or time.monotonic() >= deadline:
            break
        await anyio.sleep(0.2)
    assert resp.status == 200, (resp.status, resp.body[:200])
    assert resp.single()["result"]["isError"] is False


async def test_rls_down_with_failure_mode_deny_refuses_the_call(stack):
    agent = "audit-agent"
    stats_before = ratelimit_stats(stack)
    raw, resp, before, calls_before = await _call_while_rls_down(stack, agent, "down-deny")
    # Envoy's own answer: HTTP 500, empty body (the ratelimit filter's RLS error reply;
    # response flag RLSE). mcp-guard only rewrites 429s, so it is not a JSON-RPC message.
    assert resp.status == 500, (resp.status, resp.headers, resp.body[:200])
    assert resp.body == b"", resp.body[:200]
    assert upstream_requests(stack) == before, "a call reached the server while the RLS was down"
    assert len(stack.calls()) == calls_before
    (record,) = audit_for(stack, agent_id=agent, request_id="down-deny")
    assert record["http_status"] == 500
    assert record["output_status"] == "upstream_error", record
    assert record["decision"] == "allow"  # the allowlist allowed it; the RLS failure refused it
    stats = ratelimit_stats(stack)
    assert stats.get("error", 0) > stats_before.get("error", 0), stats
    assert stats.get("failure_mode_allowed", 0) == stats_before.get("failure_mode_allowed", 0), stats
    await _recovers(stack, raw, "down-deny-after")
    await raw.delete()


async def test_rls_down_without_failure_mode_deny_lets_the_call_through(allow_stack):
    s = allow_stack
    agent = "audit-agent"
    stats_before = ratelimit_stats(s)
    raw, resp, before, calls_before = await _call_while_rls_down(s, agent, "down-allow")
    assert resp.status == 200, (resp.status, resp.body[:200])
    assert resp.single()["id"] == "down-allow"
    assert resp.single()["result"]["isError"] is False
    assert upstream_requests(s) == before + 1
    assert [c["tool"] for c in s.calls()[calls_before:]] == ["echo"]
    (record,) = audit_for(s, agent_id=agent, request_id="down-allow")
    assert record["output_status"] == "success" and record["http_status"] == 200, record
    stats = ratelimit_stats(s)
    assert stats.get("failure_mode_allowed", 0) > stats_before.get("failure_mode_allowed", 0), stats
    await _recovers(s, raw, "down-allow-after")
    # Limits apply again once the RLS is back.
    rls(s).over_limit(lambda ds: (("agent", agent),) in ds)
    try:
        limited = await raw.post(tools_call_body("allow-429", "echo", '{"text":"x"}'))
    finally:
        rls(s).over_limit(None)
    limited.jsonrpc_error(429, "allow-429", RATE_LIMITED)
    await raw.delete()
