"""MCP 2026-07-28 `Mcp-Param-{Name}` headers through the real Envoy.

The raw upstream (tests/e2e/raw_upstream.py, `x-list-scenario: params` / `params-sse`) lists
tools whose inputSchema marks properties with `x-mcp-header`: execute_sql (`Region`, a string;
`Limit`, an integer under `options`), broken (an annotation on a `number`: an invalid tool
definition) and, on SSE only, zone_lookup (`Zone`). mcp-guard learns these markings from the
tools/list answers that pass through it and checks every `Mcp-Param-*` header of a tools/call
against the body: a header that disagrees, is missing while the body has the value, is sent
twice, carries a malformed `=?base64?...?=` value, or names an argument the body lacks is
refused with HTTP 400 and JSON-RPC -32020, and never reaches the server. With `param_tags`
(configured here for execute_sql), a verified value is set as a tag header (client copies
removed) that the upstream sees, and audited only as a hash.

Raw HTTP: these are what no SDK would send (headers that disagree with the body).
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from conftest import start_stack
from helpers import ACCEPT, HTTP_TIMEOUT, RawResponse, audit_for, parse_messages, sha256_tag
from rls_server import RateLimitServer
from test_26_rls_from_filter import as_wasmplugin_host

pytestmark = pytest.mark.anyio

E2E = Path(__file__).resolve().parent
RAW_UPSTREAM = E2E / "raw_upstream.py"
RAW_UPSTREAM_COMMAND = [sys.executable, str(RAW_UPSTREAM), "--host", "{host}", "--port", "{port}",
                        "--call-log", "{call_log}"]  # fmt: skip
MODERN = "2026-07-28"
HEADER_MISMATCH = -32020
AGENT = "t68-agent"
TAGS = {"Region": "x-mcp-param-region", "Limit": "x-mcp-param-limit"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, base_policy: dict):
    policy = copy.deepcopy(base_policy)
    policy["policy"]["agents"][AGENT] = {"tools": ["*"]}
    policy["param_tags"] = {"execute_sql": TAGS, "never_listed": {"Region": "x-mcp-param-region"}}
    yield from start_stack(tmp_path_factory, policy, server_command=RAW_UPSTREAM_COMMAND)


async def post(stack: Any, body: bytes, headers: list[tuple[str, str]], agent: str = AGENT) -> RawResponse:
    """POST `body` with `headers` (a list: a name may repeat) as `agent`."""
    base = [("accept", ACCEPT), ("content-type", "application/json"), ("x-agent-id", agent)]
    async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        resp = await http.request("POST", stack.url, content=body, headers=base + headers)
        data = await resp.aread()
    hdrs = {k.lower(): v for k, v in resp.headers.items()}
    return RawResponse(resp.status_code, hdrs, data, parse_messages(hdrs.get("content-type", ""), data))


async def list_tools(stack: Any, scenario: str = "params") -> list[str]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    resp = await post(stack, body, [("x-list-scenario", scenario)])
    assert resp.status == 200, resp
    return [t["name"] for t in resp.single()["result"]["tools"]]


def call_body(rid: str, tool: str, arguments: dict, modern: bool = True) -> bytes:
    params: dict[str, Any] = {"name": tool, "arguments": arguments}
    if modern:
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientInfo": {"name": "mcp-guard-e2e", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}).encode()


def routing(tool: str) -> list[tuple[str, str]]:
    return [("mcp-protocol-version", MODERN), ("mcp-method", "tools/call"), ("mcp-name", tool)]


def reached(stack: Any, rid: str) -> list[dict]:
    """The requests with this JSON-RPC id the upstream received."""
    return [c for c in stack.calls("http") if c.get("id") == rid]


SQL = {"region": "us-west1", "options": {"limit": 42}, "query": "SELECT 1"}


async def test_matching_params_are_forwarded_and_tagged_and_audited_as_hashes(stack):
    assert "execute_sql" in await list_tools(stack)
    rid = "t68-ok"
    headers = routing("execute_sql") + [
        ("mcp-param-region", "us-west1"),
        ("Mcp-Param-Limit", "42.0"),  # integers compare numerically; names case-insensitively
        ("x-mcp-param-region", "forged"),  # a client copy of the tag: removed
    ]
    resp = await post(stack, call_body(rid, "execute_sql", SQL), headers)
    assert resp.status == 200, resp
    assert resp.single()["id"] == rid
    (seen,) = reached(stack, rid)
    assert seen["headers"]["x-mcp-param-region"] == ["us-west1"]
    assert seen["headers"]["x-mcp-param-limit"] == ["42"]
    # The client's own Mcp-Param headers pass on untouched (the server checks them too).
    assert seen["headers"]["mcp-param-limit"] == ["42.0"]
    (rec,) = audit_for(stack, agent_id=AGENT, request_id=rid)
    assert (rec["decision"], rec["output_status"]) == ("allow", "success")
    assert rec["params"] == {"Region": sha256_tag(b"us-west1"), "Limit": sha256_tag(b"42")}
    assert "us-west1" not in stack.access_log.read_text(encoding="utf-8")


async def test_a_base64_value_is_decoded_and_tagged_percent_encoded(stack):
    await list_tools(stack)
    rid = "t68-b64"
    args = {"region": "Z\u00fcrich", "query": "SELECT 1"}
    headers = routing("execute_sql") + [("mcp-param-region", "=?base64?WsO8cmljaA==?=")]
    resp = await post(stack, call_body(rid, "execute_sql", args), headers)
    assert resp.status == 200, resp
    (seen,) = reached(stack, rid)
    assert seen["headers"]["x-mcp-param-region"] == ["Z%C3%BCrich"]
    assert "x-mcp-param-limit" not in seen["headers"]  # no value, no tag


MISMATCHES = [
    ("differs", SQL, [("mcp-param-region", "eu-west1"), ("mcp-param-limit", "42")]),
    ("case", SQL, [("mcp-param-region", "US-WEST1"), ("mcp-param-limit", "42")]),
    ("missing", SQL, [("mcp-param-limit", "42")]),
    ("integer-differs", SQL, [("mcp-param-region", "us-west1"), ("mcp-param-limit", "42.5")]),
    ("twice", SQL, [("mcp-param-region", "us-west1"), ("mcp-param-region", "eu-west1"), ("mcp-param-limit", "42")]),
    ("bad-base64", SQL, [("mcp-param-region", "=?base64?dXMtd2VzdDE?="), ("mcp-param-limit", "42")]),
    ("no-value", {"query": "SELECT 1"}, [("mcp-param-region", "us-west1")]),
    ("null-value", {"region": None, "query": "x"}, [("mcp-param-region", "null")]),
]


@pytest.mark.parametrize("case, arguments, params", MISMATCHES, ids=[m[0] for m in MISMATCHES])
async def test_a_disagreeing_param_header_is_refused_and_never_reaches_the_server(stack, case, arguments, params):
    await list_tools(stack)
    rid = f"t68-mm-{case}"
    resp = await post(stack, call_body(rid, "execute_sql", arguments), routing("execute_sql") + params)
    msg = resp.jsonrpc_error(400, rid, HEADER_MISMATCH)
    assert "Mcp-Param-" in msg["error"]["message"]
    assert "west" not in msg["error"]["message"]  # values are never echoed
    assert reached(stack, rid) == []
    (rec,) = audit_for(stack, agent_id=AGENT, request_id=rid)
    assert (rec["decision"], rec["output_status"], rec["error_code"]) == ("deny", "invalid_request", HEADER_MISMATCH)
    assert rec["tool_name"] == "execute_sql"
    assert "params" not in rec


async def test_an_older_client_needs_no_header_and_is_tagged_from_its_body(stack):
    """A 2025-11-25 request (no `_meta`) carries no Mcp-Param headers; the body value is
    still what is tagged, so speaking an older revision skips no parameter limit."""
    await list_tools(stack)
    rid = "t68-old"
    resp = await post(stack, call_body(rid, "execute_sql", SQL, modern=False), [("x-mcp-param-region", "forged")])
    assert resp.status == 200, resp
    (seen,) = reached(stack, rid)
    assert seen["headers"]["x-mcp-param-region"] == ["us-west1"]


async def test_markings_are_learned_from_an_sse_tools_list(stack):
    assert await list_tools(stack, "params-sse") == ["zone_lookup"]
    rid = "t68-sse"
    resp = await post(stack, call_body(rid, "zone_lookup", {"zone": "a"}), routing("zone_lookup") + [("mcp-param-zone", "b")])
    resp.jsonrpc_error(400, rid, HEADER_MISMATCH)
    assert reached(stack, rid) == []


async def test_a_tool_with_invalid_annotations_takes_no_param_header(stack):
    await list_tools(stack)
    ok = "t68-broken-none"
    resp = await post(stack, call_body(ok, "broken", {"ratio": 0.5}), routing("broken"))
    assert resp.status == 200, resp
    rid = "t68-broken-hdr"
    resp = await post(stack, call_body(rid, "broken", {"ratio": 0.5}), routing("broken") + [("mcp-param-ratio", "0.5")])
    resp.jsonrpc_error(400, rid, HEADER_MISMATCH)
    assert reached(stack, rid) == []


async def test_a_tagged_tool_whose_markings_are_unknown_is_refused(stack):
    """`never_listed` has a param_tags entry but no tools/list showed it: its tag could not be
    set, so the call is refused (-32020; a 2026-07-28 client lists the tools and retries)
    rather than forwarded without the rate-limit key."""
    rid = "t68-unknown"
    resp = await post(stack, call_body(rid, "never_listed", {"region": "x"}), routing("never_listed") + [("mcp-param-region", "x")])
    msg = resp.jsonrpc_error(400, rid, HEADER_MISMATCH)
    assert "tools/list" in msg["error"]["message"]
    assert reached(stack, rid) == []


# --------------------------------------------------------------------------- the RLS


RLS_AGENT = "t68-rls"


@pytest.fixture(scope="module")
def rls_stack(tmp_path_factory: pytest.TempPathFactory, base_policy: dict):
    """mcp-guard asking the RLS itself (`rate_limit_service`, headers not held: Istio's
    WasmPlugin), with param_tags for execute_sql's Region; the test RLS records descriptors."""
    policy = copy.deepcopy(base_policy)
    policy["policy"]["agents"][RLS_AGENT] = {"tools": ["*"]}
    policy["param_tags"] = {"execute_sql": {"Region": "x-mcp-param-region"}}
    policy["hold_request_headers"] = False
    policy["rate_limit_service"] = {"cluster": "ratelimit", "domain": "mcp", "timeout_ms": 500, "failure_mode_deny": True}
    rls = RateLimitServer(retry_after_s=30)
    rls.start()
    try:
        for s in start_stack(tmp_path_factory, policy, server_command=RAW_UPSTREAM_COMMAND,
                             bootstrap_hook=as_wasmplugin_host(rls.port)):  # fmt: skip
            s.rls = rls  # type: ignore[attr-defined]
            yield s
    finally:
        rls.stop()


async def test_the_rls_limits_on_the_verified_parameter(rls_stack):
    """The RLS gets (agent, tool, x-mcp-param-region) with the verified value; over its limit
    for one region, that region's calls are 429 while another region's go on."""
    stack = rls_stack
    rls: RateLimitServer = stack.rls  # type: ignore[attr-defined]
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    assert (await post(stack, body, [("x-list-scenario", "params")], RLS_AGENT)).status == 200
    entry = lambda region: (("agent", RLS_AGENT), ("tool", "execute_sql"), ("x-mcp-param-region", region))  # noqa: E731
    rls.over_limit(lambda descriptors: entry("eu-west1") in descriptors)
    try:
        for region, status in [("us-west1", 200), ("eu-west1", 429), ("us-west1", 200)]:
            rid = f"t68-rls-{region}-{status}"
            args = {"region": region, "query": "SELECT 1"}
            resp = await post(stack, call_body(rid, "execute_sql", args),
                              routing("execute_sql") + [("mcp-param-region", region)], RLS_AGENT)  # fmt: skip
            assert resp.status == status, (region, resp)
            seen = rls.wait_for(lambda r: entry(region) in r.descriptors, 5.0, f"the {region} descriptor")
            assert (("agent", RLS_AGENT),) in seen.descriptors
        # A header that disagrees is refused before the RLS is asked (it costs no hit).
        before = len(rls.requests)
        rid = "t68-rls-mismatch"
        resp = await post(stack, call_body(rid, "execute_sql", {"region": "us-west1", "query": "x"}),
                          routing("execute_sql") + [("mcp-param-region", "eu-west1")], RLS_AGENT)  # fmt: skip
        resp.jsonrpc_error(400, rid, HEADER_MISMATCH)
        assert len(rls.requests) == before
    finally:
        rls.over_limit(None)
    (limited,) = audit_for(stack, agent_id=RLS_AGENT, output_status="rate_limited")
    assert limited["params"] == {"Region": sha256_tag(b"eu-west1")}
