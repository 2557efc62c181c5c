"""mcp-guard's Envoy stats after known traffic, read from the admin `/stats/prometheus` as
labelled metrics (the shipped stats_tags), on stacks of their own with one Envoy worker so the
counts are exact.

Every test reads every mcp_guard sample before and after its own traffic and compares the whole
difference with what that traffic must change: a counter that moved by one too many, or one
that should not have moved, fails. So each test stands alone (no test relies on another's
traffic), and every request-side refusal and denial reason is asserted. Elsewhere, with the
parts they need: `identity_unreadable` (a verified JWT claim that is null, which Envoy cannot
hand to Wasm) in test_45; the `response_*` refusals (an upstream sending unreadable lists) in
test_83 and test_81 (response_encoding); `rls_errors` needs the RLS (test_26).
"""
from __future__ import annotations

import copy
import gzip
import json
import re

import httpx2
import pytest
from conftest import start_stack
from helpers import (
    ACCEPT,
    DENIED,
    HTTP_TIMEOUT,
    RATE_LIMITED,
    RawSession,
    loads_per_config,
    mcp_session,
    push_policy,
    raw_request,
    tools_call_body,
)
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.anyio

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
MAX_BODY = 64 * 1024  # the reasons stack's max_body_bytes
MODERN = "2026-07-28"
HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022
INVALID_REQUEST = -32600
PARSE_ERROR = -32700

Key = tuple[str, frozenset]


def metrics(stack) -> dict[Key, float]:
    """Every mcp_guard sample of /stats/prometheus: (name, labels) -> value."""
    out: dict[Key, float] = {}
    for line in stack.admin_get("/stats/prometheus").splitlines():
        m = SAMPLE.match(line)
        if m and not line.startswith("#") and m["name"].startswith("mcp_guard_"):
            labels = frozenset(LABEL.findall(m["labels"] or ""))
            out[(m["name"], labels)] = float(m["value"])
    return out


def key(name: str, **labels: str) -> Key:
    return (name, frozenset(labels.items()))


def delta(before: dict[Key, float], after: dict[Key, float]) -> dict[Key, float]:
    """Every sample that changed, by how much."""
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in before.keys() | after.keys()
            if after.get(k, 0.0) != before.get(k, 0.0)}  # fmt: skip


def show(d: dict[Key, float]) -> list[str]:
    return sorted(f"{n}{{{','.join(f'{a}={b}' for a, b in sorted(ls))}}} {v:+g}" for (n, ls), v in d.items())


def assert_delta(got: dict[Key, float], want: dict[Key, float]) -> None:
    assert got == want, f"\ngot:  {show(got)}\nwant: {show(want)}"


def requests(method: str, decision: str) -> Key:
    return key("mcp_guard_requests", mcp_method=method, mcp_decision=decision)


def tool_calls(tool: str, decision: str) -> Key:
    return key("mcp_guard_tool_calls", mcp_tool=tool, mcp_decision=decision)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, base_policy: dict):
    policy = copy.deepcopy(base_policy)
    policy["max_tool_metrics"] = 2  # the third distinct tool is counted as "other"
    policy["policy"]["agents"]["metrics-agent"] = copy.deepcopy(policy["policy"]["agents"]["demo-agent"])
    # One worker: the tool-label cap is per worker VM, so one worker makes the labels exact.
    yield from start_stack(tmp_path_factory, policy, concurrency=1)


@pytest.fixture(scope="module")
def reasons_stack(tmp_path_factory: pytest.TempPathFactory, base_policy: dict):
    """One worker; requests without x-agent-id are refused (unidentified); the annotations rule
    refuses tools no rule set names exactly that the server marked destructive or that were not
    seen in a tools/list (ops-agent may call "*"); bodies over MAX_BODY are refused."""
    policy = copy.deepcopy(base_policy)
    policy["identity"] = {"sources": [{"header": "x-agent-id"}], "unidentified": "reject"}
    policy["annotations"] = {"refuse": "destructive", "unseen": "refuse"}
    policy["max_body_bytes"] = MAX_BODY
    policy["policy"]["agents"]["ops-agent"] = {"tools": ["*"]}
    # Tool pins: "fail" (which demo-agent may call by name, so the annotations rule leaves it
    # alone) is pinned, and no tools/list is ever read on this stack: its calls are unverified.
    # (tool_drift and tool_unpinned need a tools/list first: test_72_tool_pins counts them.)
    policy["tool_pins"] = {"fail": "sha256:" + "0" * 64}
    yield from start_stack(tmp_path_factory, policy, concurrency=1)


async def test_stats_after_known_traffic(stack):
    before = metrics(stack)
    async with mcp_session(stack.url, agent="metrics-agent") as conn:
        await conn.session.call_tool("echo", {"text": "1"})
        await conn.session.call_tool("echo", {"text": "2"})
        await conn.session.call_tool("add", {"a": 1, "b": 2})
        with pytest.raises(MCPError) as denied:
            await conn.session.call_tool("delete_repo", {"name": "x"})
        assert denied.value.code == DENIED
        listed = await conn.session.list_tools()
        prompts = await conn.session.list_prompts()
        resources = await conn.session.list_resources()
        # The local rate limit allows 5 search calls per agent per minute: the 6th is a 429.
        for n in range(5):
            await conn.session.call_tool("search", {"query": str(n)})
        with pytest.raises(MCPError) as limited:
            await conn.session.call_tool("search", {"query": "over"})
        assert limited.value.code == RATE_LIMITED
    assert "delete_repo" not in {t.name for t in listed.tools}
    assert [p.name for p in prompts.prompts] == ["greet"]
    assert [str(r.uri) for r in resources.resources] == ["demo://docs/index"]

    # Bounded tool labels: echo and add got their own (the worker's first two), everything
    # later is "other" (search never gets a label).
    want = {
        requests("initialize", "allow"): 1,
        requests("notifications/initialized", "allow"): 1,
        requests("tools/call", "allow"): 9,  # 2 echo, add, 6 search (the 429 was allowed, then limited)
        requests("tools/call", "deny"): 1,
        # The SDK lists the tools once by itself (before its first call_tool, for their output
        # schemas), and once for list_tools.
        requests("tools/list", "allow"): 2,
        requests("prompts/list", "allow"): 1,
        requests("resources/list", "allow"): 1,
        tool_calls("echo", "allow"): 2,
        tool_calls("add", "allow"): 1,
        tool_calls("other", "allow"): 6,
        tool_calls("other", "deny"): 1,
        key("mcp_guard_denials", mcp_reason="policy"): 1,
        key("mcp_guard_rate_limited"): 1,
        key("mcp_guard_list_rewrites", mcp_list="tools"): 2,
        key("mcp_guard_list_rewrites", mcp_list="prompts"): 1,
        key("mcp_guard_list_rewrites", mcp_list="resources"): 1,
        # One SSE event per response the server streamed: initialize, 8 calls, 4 lists. (The
        # GET stream and the DELETE carry no JSON-RPC message and are not counted as requests.)
        key("mcp_guard_sse_events"): 13,
    }
    assert_delta(delta(before, metrics(stack)), want)


async def test_config_loads_and_rejects_are_counted(stack):
    policy = json.loads(stack.policy.read_text(encoding="utf-8"))
    loads, rejects = key("mcp_guard_config_loads"), key("mcp_guard_config_rejects")

    before = metrics(stack)
    bad = copy.deepcopy(policy)
    bad["no_such_field"] = True
    push_policy(stack, bad, accepted=False)
    assert_delta(delta(before, metrics(stack)), {rejects: 1})  # refused once, loaded nowhere

    before = metrics(stack)
    push_policy(stack, policy)  # the same policy, a new configuration text
    # Envoy's check on the main thread, the main thread's plugin, the one worker.
    assert loads_per_config(stack) == 3
    assert_delta(delta(before, metrics(stack)), {loads: 3})


def modern_call(rid: str, name: str, arguments: dict) -> bytes:
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientInfo": {"name": "mcp-guard-e2e", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {}}  # fmt: skip
    body = {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
            "params": {"name": name, "arguments": arguments, "_meta": meta}}  # fmt: skip
    return json.dumps(body, separators=(",", ":")).encode()


ECHO = tools_call_body("m-1", "echo", '{"text":"x"}')
# (id, headers, body, HTTP status, JSON-RPC code, the samples that must move by one)
REASONS = [
    pytest.param({"x-agent-id": "demo-agent"}, tools_call_body("m-1", "delete_repo", '{"name":"x"}'), 200, DENIED,
                 [requests("tools/call", "deny"), tool_calls("delete_repo", "deny"),
                  key("mcp_guard_denials", mcp_reason="policy")], id="denial-policy"),
    pytest.param({"x-agent-id": "ops-agent"}, tools_call_body("m-1", "delete_repo", '{"name":"x"}'), 200, DENIED,
                 [requests("tools/call", "deny"), tool_calls("delete_repo", "deny"),
                  key("mcp_guard_denials", mcp_reason="annotations")], id="denial-annotations"),
    pytest.param({"x-agent-id": "demo-agent"}, tools_call_body("m-1", "fail", "{}"), 200, DENIED,
                 [requests("tools/call", "deny"), tool_calls("fail", "deny"),
                  key("mcp_guard_denials", mcp_reason="tool_unverified")], id="denial-tool_unverified"),
    pytest.param({}, ECHO, 401, DENIED,
                 [requests("-", "deny"), key("mcp_guard_denials", mcp_reason="unidentified")], id="denial-unidentified"),
    pytest.param({"x-agent-id": "demo-agent"}, b"{not json", 400, PARSE_ERROR,
                 [requests("-", "deny"), key("mcp_guard_refusals", mcp_reason="parse")], id="refusal-parse"),
    pytest.param({"x-agent-id": "demo-agent", "mcp-protocol-version": MODERN, "mcp-method": "tools/call",
                  "mcp-name": "add"}, modern_call("m-1", "echo", {"text": "x"}), 400, HEADER_MISMATCH,
                 [requests("tools/call", "deny"),  # refused before the tool is read: no tool label
                  key("mcp_guard_refusals", mcp_reason="header_mismatch")], id="refusal-header_mismatch"),
    # A header naming no revision mcp-guard accepts (test_67 has every version case).
    pytest.param({"x-agent-id": "demo-agent", "mcp-protocol-version": "2025-01-01"}, ECHO, 400,
                 UNSUPPORTED_PROTOCOL_VERSION,
                 [requests("tools/call", "deny"),  # refused before the tool is read: no tool label
                  key("mcp_guard_refusals", mcp_reason="unsupported_version")], id="refusal-unsupported_version"),
    pytest.param({"x-agent-id": "demo-agent"}, b"[" + ECHO + b"," + tools_call_body("m-2", "echo", "{}") + b"]",
                 400, INVALID_REQUEST,
                 # The batch is refused as a whole; its two calls are counted with the policy's
                 # decision for each (echo: allow), as the filter does today.
                 [(requests("tools/call", "allow"), 2), (tool_calls("echo", "allow"), 2),
                  key("mcp_guard_refusals", mcp_reason="batch")], id="refusal-batch"),
    pytest.param({"x-agent-id": "demo-agent", "content-encoding": "gzip"}, gzip.compress(ECHO), 415, INVALID_REQUEST,
                 [requests("-", "deny"), key("mcp_guard_refusals", mcp_reason="encoding")], id="refusal-encoding"),
    pytest.param({"x-agent-id": "demo-agent"}, tools_call_body("m-1", "echo", json.dumps({"text": "x" * MAX_BODY})),
                 413, INVALID_REQUEST,
                 [requests("-", "deny"), key("mcp_guard_refusals", mcp_reason="too_large")], id="refusal-too_large"),
]  # fmt: skip


@pytest.mark.parametrize(("headers", "body", "status", "code", "moved"), REASONS)
async def test_each_denial_and_refusal_reason_is_counted_once(reasons_stack, headers, body, status, code, moved):
    """One request no SDK would send (or one the policy refuses), without a session; refused by
    the filter before the upstream. Exactly its samples move: the reason, and the request (and
    tool) counted with decision deny."""
    before = metrics(reasons_stack)
    resp = await raw_request(reasons_stack.url, "POST", body, headers)
    assert resp.status == status, (resp.status, resp.body[:300])
    assert resp.messages, resp.body[:300]
    msgs = resp.messages[0] if isinstance(resp.messages[0], list) else resp.messages  # a batch's answer
    assert {m["error"]["code"] for m in msgs} == {code}, msgs
    want = dict(m if isinstance(m[1], int) else (m, 1) for m in moved)
    assert_delta(delta(before, metrics(reasons_stack)), want)
