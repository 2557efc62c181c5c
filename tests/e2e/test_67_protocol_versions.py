"""MCP protocol versions through the real Envoy, both directions (issue 15): the
`MCP-Protocol-Version` header and the body's `params._meta` must agree whichever of them claims
2026-07-28; a revision the configuration does not accept is refused with -32022 and the list of
accepted ones; GET and DELETE from a 2026-07-28 client get 405; every audit record names the
revision. The official Python SDK 2.x server is behind (the demo server); the refused requests
are sent raw, since no SDK sends them. Sources: MCP 2026-07-28 Streamable HTTP ("Protocol
Version Header", "Server Validation", "Backward Compatibility"), the SDK's validation ladder
(mcp/shared/inbound.py).

Envoy 1.40's own MCP filter skips every header check when the body's `_meta` says 2026-07-28 and
the header is absent or says 2025-11-25 (/work/shared/notes/envoy-wasm-mcp-facts.md); the first
two refusal cases below are those."""

from __future__ import annotations

import copy
import json
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import httpx2
import pytest
from conftest import start_stack
from helpers import (
    ACCEPT,
    HTTP_TIMEOUT,
    INVALID_PARAMS,
    INVALID_REQUEST,
    PROTOCOL_VERSION,
    Conn,
    RawSession,
    Recorder,
    access_log_objects,
    audit_for,
    raw_request,
    tools_call_body,
)
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"
OLD = "2025-11-25"
KNOWN = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"]
HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022


def envelope(version: Any = MODERN, capabilities: bool = True) -> dict:
    meta = {"io.modelcontextprotocol/protocolVersion": version,
            "io.modelcontextprotocol/clientInfo": {"name": "mcp-guard-e2e", "version": "0"}}  # fmt: skip
    if capabilities:
        meta["io.modelcontextprotocol/clientCapabilities"] = {}
    return meta


def echo_body(rid: str, meta: Any = None) -> bytes:
    params: dict = {"name": "echo", "arguments": {"text": "hi"}}
    if meta is not None:
        params["_meta"] = meta
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}).encode()


ROUTING = {"mcp-method": "tools/call", "mcp-name": "echo"}

# (id, headers besides x-agent-id, body meta (None: no _meta), HTTP status, JSON-RPC code,
# the record's protocol_version). Each is refused by mcp-guard, never forwarded.
REFUSALS = [
    # Body → header: what Envoy 1.40's MCP filter lets through.
    ("meta-2026-no-header", {**ROUTING}, envelope(), 400, HEADER_MISMATCH, MODERN),
    ("meta-2026-header-2025", {"mcp-protocol-version": OLD, **ROUTING}, envelope(), 400, HEADER_MISMATCH, OLD),
    # Header → body.
    ("header-2026-meta-2025", {"mcp-protocol-version": MODERN, **ROUTING}, envelope(OLD), 400, HEADER_MISMATCH, MODERN),
    ("header-2026-no-meta", {"mcp-protocol-version": MODERN, **ROUTING}, None, 400, INVALID_PARAMS, MODERN),
    ("header-2026-meta-not-object", {"mcp-protocol-version": MODERN, **ROUTING}, MODERN, 400, INVALID_PARAMS, MODERN),
    ("header-2026-no-capabilities", {"mcp-protocol-version": MODERN, **ROUTING}, envelope(capabilities=False), 400,
     INVALID_PARAMS, MODERN),
    ("header-2026-version-not-string", {"mcp-protocol-version": MODERN, **ROUTING}, envelope(20260728), 400,
     HEADER_MISMATCH, MODERN),
    # The routing headers a 2026-07-28 request must carry.
    ("no-mcp-method", {"mcp-protocol-version": MODERN, "mcp-name": "echo"}, envelope(), 400, HEADER_MISMATCH, MODERN),
    ("no-mcp-name", {"mcp-protocol-version": MODERN, "mcp-method": "tools/call"}, envelope(), 400, HEADER_MISMATCH,
     MODERN),
    # Revisions not accepted.
    ("future-both", {"mcp-protocol-version": "2099-01-01", **ROUTING}, envelope("2099-01-01"), 400,
     UNSUPPORTED_PROTOCOL_VERSION, "2099-01-01"),
    ("unknown-old-header", {"mcp-protocol-version": "2025-01-01"}, None, 400, UNSUPPORTED_PROTOCOL_VERSION,
     "2025-01-01"),
    ("not-a-date", {"mcp-protocol-version": "latest"}, None, 400, UNSUPPORTED_PROTOCOL_VERSION, "latest"),
]  # fmt: skip

AGENTS = [f"t67-{r[0]}" for r in REFUSALS] + [
    "t67-sdk", "t67-legacy", "t67-twice", "t67-batch", "t67-get", "t67-notify", "t67-ok-raw"]  # fmt: skip


def policy_with_agents(base_policy: dict, **extra: Any) -> dict:
    policy = copy.deepcopy(base_policy)
    for agent in AGENTS:
        policy["policy"]["agents"][agent] = {"tools": ["*"], "prompts": ["*"], "resources": ["*"]}
    policy.update(extra)
    return policy


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, base_policy: dict):
    """Default configuration (newest_protocol_version 2026-07-28); the demo server logs every
    HTTP request it receives."""
    yield from start_stack(tmp_path_factory, policy_with_agents(base_policy), server_args=["--log-http-requests"])


@pytest.fixture(scope="module")
def older_stack(tmp_path_factory: pytest.TempPathFactory, base_policy: dict):
    """newest_protocol_version: 2025-11-25 (2026-07-28 not accepted)."""
    policy = policy_with_agents(base_policy, newest_protocol_version=OLD)
    yield from start_stack(tmp_path_factory, policy, server_args=["--log-http-requests"])


def upstream_http(stack: Any, agent: str) -> list[dict]:
    """HTTP requests of `agent` the demo server received."""
    return [e for e in stack.calls("http") if e["headers"].get("x-agent-id") == [agent]]


def counter(stack: Any, reason: str) -> int:
    """mcp_guard.refusals.reason.<reason> summed over Envoy's stats (0 when never defined)."""
    total = 0
    for line in stack.admin_get("/stats?filter=mcp_guard.refusals").splitlines():
        name, _, value = line.partition(": ")
        if name.endswith(f"mcp_guard.refusals.reason.{reason}"):
            total += int(value)
    return total


@asynccontextmanager
async def modern_session(url: str, agent: str) -> AsyncIterator[Conn]:
    """The SDK 2.x client on 2026-07-28 (server/discover, no session, _meta and routing
    headers on every request)."""
    recorder = Recorder()
    async with httpx2.AsyncClient(
        headers={"x-agent-id": agent}, timeout=HTTP_TIMEOUT, event_hooks={"response": [recorder.hook]}
    ) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.discover()
                assert session.protocol_version == MODERN
                yield Conn(session, recorder)


@pytest.mark.parametrize("case, headers, meta, status, code, recorded", REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_each_version_refusal(stack, case, headers, meta, status, code, recorded):
    agent = f"t67-{case}"
    rid = f"v-{case}"
    before = counter(stack, "unsupported_version")
    resp = await raw_request(stack.url, "POST", echo_body(rid, meta), {"x-agent-id": agent, **headers})
    msg = resp.jsonrpc_error(status, rid, code)
    if code == UNSUPPORTED_PROTOCOL_VERSION:
        assert msg["error"]["data"] == {"supported": KNOWN, "requested": recorded}, msg
        assert counter(stack, "unsupported_version") == before + 1
    assert upstream_http(stack, agent) == []  # never forwarded
    (rec,) = audit_for(stack, agent_id=agent, request_id=rid)
    assert (rec["decision"], rec["output_status"], rec["error_code"], rec["http_status"]) == (
        "deny", "invalid_request", code, status)  # fmt: skip
    assert rec["protocol_version"] == recorded
    assert rec["method"] == "tools/call"


async def test_sdk_2026_client_passes_and_every_record_names_the_revision(stack):
    """The official SDK 2.x client on 2026-07-28 (it sends _meta and the headers correctly)."""
    agent = "t67-sdk"
    async with modern_session(stack.url, agent) as conn:
        echoed = await conn.session.call_tool("echo", {"text": "v"})
        tools = await conn.session.list_tools()
    assert [c.text for c in echoed.content] == ["v"]
    assert "echo" in {t.name for t in tools.tools}
    assert conn.session_id is None
    (rec,) = audit_for(stack, agent_id=agent, tool_name="echo")
    assert (rec["decision"], rec["output_status"], rec["protocol_version"], rec["session_id"]) == (
        "allow", "success", MODERN, None)  # fmt: skip
    (rec,) = audit_for(stack, agent_id=agent, method="server/discover")
    assert rec["protocol_version"] == MODERN, rec
    # The list_tools record is written when its stream ends, which can be just after the
    # client has its answer: wait for it (the SDK may list tools more than once, so no count).
    deadline = time.monotonic() + 10
    while True:
        mine = [r for r in access_log_objects(stack) if r.get("agent_id") == agent]
        if "tools/list" in {r["method"] for r in mine} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert {r["method"] for r in mine} >= {"server/discover", "tools/call", "tools/list"}, mine
    assert {r["protocol_version"] for r in mine} == {MODERN}, mine
    # What reached the server: the SDK's headers, unchanged.
    http = [e for e in upstream_http(stack, agent) if e["headers"].get("mcp-method") == ["tools/call"]]
    assert [e["headers"]["mcp-protocol-version"] for e in http] == [[MODERN]]


async def test_a_raw_2026_request_with_everything_right_is_forwarded(stack):
    agent, rid = "t67-ok-raw", "v-ok"
    headers = {"x-agent-id": agent, "mcp-protocol-version": MODERN, **ROUTING}
    resp = await raw_request(stack.url, "POST", echo_body(rid, envelope()), headers)
    assert resp.status == 200, (resp.status, resp.body[:300])
    assert resp.single()["result"]["content"][0]["text"] == "hi"
    (rec,) = audit_for(stack, agent_id=agent, request_id=rid)
    assert (rec["output_status"], rec["protocol_version"]) == ("success", MODERN)


async def test_a_2025_session_still_passes_and_records_its_version(stack):
    """A 2025-11-25 client (initialize, session, header after initialization, GET and DELETE)
    is unchanged."""
    agent = "t67-legacy"
    s = RawSession(stack.url, agent=agent, headers={})
    await s.initialize()
    ok = await s.post(tools_call_body("legacy-1", "echo", '{"text":"old"}'), headers={"mcp-protocol-version": OLD})
    assert ok.status == 200 and ok.single()["result"]["content"][0]["text"] == "old"
    gone = await s.delete(headers={"mcp-protocol-version": OLD})
    assert gone.status in (200, 202, 204), gone
    (rec,) = audit_for(stack, agent_id=agent, request_id="legacy-1")
    assert (rec["output_status"], rec["protocol_version"], rec["session_id"]) == ("success", OLD, s.session_id)
    (init,) = audit_for(stack, agent_id=agent, method="initialize")
    # No header before initialization and no _meta version: the revision the initialize
    # result negotiated (the server inventory's fallback, docs/audit-record.md).
    assert init["protocol_version"] == PROTOCOL_VERSION
    (delete,) = audit_for(stack, agent_id=agent, http_method="DELETE")
    assert (delete["decision"], delete["protocol_version"]) == ("allow", OLD)


@pytest.mark.parametrize("http_method", ["GET", "DELETE"])
async def test_get_and_delete_from_a_2026_client_are_405(stack, http_method):
    agent = "t67-get"
    before = counter(stack, "method_not_allowed")
    resp = await raw_request(stack.url, http_method, None, {"x-agent-id": agent, "mcp-protocol-version": MODERN})
    assert resp.status == 405, (resp.status, resp.body[:300])
    assert resp.headers.get("allow") == "POST", resp.headers
    assert counter(stack, "method_not_allowed") == before + 1
    assert [e for e in upstream_http(stack, agent) if e.get("http") == http_method] == []
    recs = audit_for(stack, agent_id=agent, http_method=http_method)
    assert [(r["decision"], r["http_status"], r["protocol_version"]) for r in recs] == [("deny", 405, MODERN)]


async def test_the_version_header_twice_is_refused(stack):
    agent, rid = "t67-twice", "v-twice"
    headers = [
        ("accept", ACCEPT), ("content-type", "application/json"), ("x-agent-id", agent),
        ("mcp-protocol-version", MODERN), ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/call"), ("mcp-name", "echo"),
    ]  # fmt: skip
    async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        r = await http.post(stack.url, content=echo_body(rid, envelope()), headers=headers)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    body = r.json()
    assert (body["id"], body["error"]["code"]) == (rid, HEADER_MISMATCH)
    assert upstream_http(stack, agent) == []


async def test_a_batch_claiming_2026_is_refused(stack):
    agent = "t67-batch"
    one = json.loads(echo_body("b-1", envelope()))
    two = json.loads(echo_body("b-2", envelope()))
    body = json.dumps([one, two]).encode()
    resp = await raw_request(stack.url, "POST", body, {"x-agent-id": agent, "mcp-protocol-version": MODERN})
    resp.jsonrpc_error(400, None, INVALID_REQUEST)
    assert upstream_http(stack, agent) == []
    # Without the header too: the _meta of an element claims 2026-07-28.
    resp = await raw_request(stack.url, "POST", body, {"x-agent-id": agent})
    resp.jsonrpc_error(400, None, INVALID_REQUEST)
    assert upstream_http(stack, agent) == []


async def test_a_2026_notification_needs_only_the_version_header(stack):
    """2026-07-28 defines no header requirements for notification POSTs: no Mcp-Method or _meta
    envelope is asked for, but a body claiming 2026-07-28 still needs the version header."""
    agent = "t67-notify"
    note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "x"}}
    resp = await raw_request(stack.url, "POST", json.dumps(note).encode(),
                             {"x-agent-id": agent, "mcp-protocol-version": MODERN})  # fmt: skip
    assert resp.status == 202, (resp.status, resp.body[:300])
    note["params"]["_meta"] = envelope()
    resp = await raw_request(stack.url, "POST", json.dumps(note).encode(), {"x-agent-id": agent})
    resp.jsonrpc_error(400, None, HEADER_MISMATCH)


async def test_newest_protocol_version_2025_refuses_2026_with_the_accepted_list(older_stack):
    agent, rid = "t67-ok-raw", "v-older"
    headers = {"x-agent-id": agent, "mcp-protocol-version": MODERN, **ROUTING}
    resp = await raw_request(older_stack.url, "POST", echo_body(rid, envelope()), headers)
    msg = resp.jsonrpc_error(400, rid, UNSUPPORTED_PROTOCOL_VERSION)
    assert msg["error"]["data"] == {"supported": KNOWN[:4], "requested": MODERN}
    assert upstream_http(older_stack, agent) == []
    # A 2025-11-25 session is served.
    s = RawSession(older_stack.url, agent=agent)
    await s.initialize()
    ok = await s.post(tools_call_body("older-1", "echo", '{"text":"x"}'), headers={"mcp-protocol-version": OLD})
    assert ok.status == 200, ok
