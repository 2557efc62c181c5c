"""The server inventory (issue 16, src/inventory.rs) end to end: the real Envoy 1.40 + mcp-guard
in front of the official SDK servers, driven by the official Python SDK 2.x client.

What the SDK client itself was told by the server (its `initialize` result's serverInfo and
negotiated protocolVersion, or the 2026-07-28 `server/discover` result's serverInfo stamp) must
be what every audit record of that session carries afterwards (`server_name`,
`server_version`, `protocol_version`), also for a request that claims no revision; and Envoy's
admin `/stats` counts the server under `mcp_guard.servers_seen.<name>.<version>`.

Servers: the Python SDK 2.x demo server (examples/demo_server.py: name `mcp-guard-demo`, the
SDK's default version, which is empty), answering both an initialize handshake and a 2026-07-28
client; and the TypeScript SDK server (examples/sdk/ts/server.mjs: `mcp-guard-demo-ts`
`0.0.0`) over Streamable HTTP.
"""
from __future__ import annotations

import copy
import re
import shutil
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import httpx2
import pytest
from conftest import start_stack, test_policy
from helpers import HTTP_TIMEOUT, RawSession, audit_for, raw_request, tools_call_body
from mcp import Client, ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
TS_SERVER = REPO / "examples" / "sdk" / "ts" / "server.mjs"
TS_MODULES = REPO / "examples" / "sdk" / "ts" / "node_modules" / "@modelcontextprotocol" / "sdk"
NODE = shutil.which("node") or "/usr/bin/node"
MODERN = "2026-07-28"
AGENTS = ("t73-init", "t73-raw", "t73-modern", "t73-ts", "t73-legacy")
PY2_SERVER = REPO / "examples" / "sdk" / "py2" / "server.py"
STAT_TIMEOUT = 10.0


def inventory_policy() -> dict:
    policy = test_policy()
    agents = policy["policy"]["agents"]
    for name in AGENTS:
        agents[name] = copy.deepcopy(agents["demo-agent"])  # echo, add, search, fail
    return policy


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """The Python SDK 2.x demo server (it answers 2026-07-28 clients too)."""
    yield from start_stack(tmp_path_factory, inventory_policy())


@pytest.fixture(scope="module")
def ts_stack(tmp_path_factory: pytest.TempPathFactory):
    """The TypeScript SDK server over Streamable HTTP."""
    if not TS_MODULES.is_dir():
        pytest.fail(f"{TS_MODULES} is missing: install the TypeScript SDK with `make sdks`", pytrace=False)
    command = [NODE, str(TS_SERVER), "--host", "{host}", "--port", "{port}", "--call-log", "{call_log}",
               "--transport", "streamable-http"]  # fmt: skip
    yield from start_stack(tmp_path_factory, inventory_policy(), server_command=command)


@pytest.fixture(scope="module")
def legacy_stack(tmp_path_factory: pytest.TempPathFactory):
    """The Python SDK 2.x demo server over the legacy HTTP+SSE transport (2024-11-05): the
    initialize result comes on the GET /sse stream, the POST is answered 202."""
    command = [sys.executable, str(PY2_SERVER), "--host", "{host}", "--port", "{port}", "--call-log",
               "{call_log}", "--transport", "sse"]  # fmt: skip
    yield from start_stack(tmp_path_factory, inventory_policy(), server_command=command)


@asynccontextmanager
async def initialized(url: str, agent: str) -> AsyncIterator[tuple[ClientSession, Any]]:
    """An official-SDK session through Envoy, and the initialize result the SDK got."""
    async with httpx2.AsyncClient(headers={"x-agent-id": agent}, timeout=HTTP_TIMEOUT) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                result = await session.initialize()
                yield session, result


def servers_seen(stack: Any) -> dict[str, int]:
    """mcp-guard's servers_seen counters on Envoy's admin /stats, by stat name."""
    out = {}
    for line in stack.admin_get("/stats?filter=servers_seen").splitlines():
        name, _, value = line.partition(": ")
        if name.startswith("wasmcustom.mcp_guard.servers_seen."):
            out[name] = int(value)
    return out


def wait_for_stat(stack: Any, name: str, at_least: int = 1) -> dict[str, int]:
    deadline = time.monotonic() + STAT_TIMEOUT
    while True:
        stats = servers_seen(stack)
        if stats.get(name, 0) >= at_least or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def segment(value: str) -> str:
    """src/metrics.rs segment(): the stat-name form of a label value."""
    out = re.sub(r"[^A-Za-z0-9_\-/:]", "_", value)[:64]
    return out or "_"


def inventory(record: dict) -> tuple[Any, Any, Any]:
    return record["server_name"], record["server_version"], record["protocol_version"]


async def test_the_initialize_result_names_the_server_in_every_later_record(stack):
    agent = "t73-init"
    async with initialized(stack.url, agent) as (session, init):
        name, version = init.server_info.name, init.server_info.version
        negotiated = init.protocol_version
        assert name == "mcp-guard-demo", init.server_info
        result = await session.call_tool("echo", {"text": "inventory"})
        assert not result.is_error
    (init_rec,) = audit_for(stack, agent_id=agent, method="initialize")
    (call_rec,) = audit_for(stack, agent_id=agent, tool_name="echo")
    session_id = init_rec["session_id"]
    assert session_id and call_rec["session_id"] == session_id
    # What the SDK client was told is what the records say.
    assert inventory(init_rec) == (name, version, negotiated), init_rec
    assert inventory(call_rec) == (name, version, negotiated), call_rec
    assert "inventory_error" not in call_rec
    stat = f"wasmcustom.mcp_guard.servers_seen.{segment(name)}.{segment(version)}"
    assert wait_for_stat(stack, stat).get(stat, 0) >= 1, servers_seen(stack)
    # The Prometheus view carries both labels.
    prom = stack.admin_get("/stats/prometheus")
    assert re.search(r'mcp_guard_servers_seen\{[^}]*mcp_server_name="mcp-guard-demo"', prom), prom[-2000:]


async def test_a_request_that_claims_no_revision_gets_the_negotiated_one(stack):
    """A request of the session without MCP-Protocol-Version (and no _meta version): the
    record's protocol_version is the one the initialize result negotiated."""
    agent = "t73-raw"
    s = RawSession(stack.url, agent=agent)
    init = await s.initialize()
    negotiated = init.single()["result"]["protocolVersion"]
    server_info = init.single()["result"]["serverInfo"]
    assert s.session_id
    # The session's id, and no MCP-Protocol-Version header (RawSession.post would add one).
    headers = {"x-agent-id": agent, "mcp-session-id": s.session_id}
    resp = await raw_request(stack.url, "POST", tools_call_body("t73-raw-1", "echo", '{"text":"y"}'), headers)
    assert resp.status == 200, resp
    (rec,) = audit_for(stack, agent_id=agent, request_id="t73-raw-1")
    assert inventory(rec) == (server_info["name"], server_info["version"], negotiated), rec
    assert rec["session_id"] == s.session_id


async def test_a_2026_client_is_named_from_the_discover_results_serverinfo_stamp(stack):
    agent = "t73-modern"
    async with httpx2.AsyncClient(headers={"x-agent-id": agent}, timeout=HTTP_TIMEOUT) as http:
        async with Client(streamable_http_client(stack.url, http_client=http), mode="auto") as client:
            assert client.protocol_version == MODERN
            info = client.server_info
            assert info is not None and info.name == "mcp-guard-demo", info
            await client.call_tool("echo", {"text": "modern"})
    (discover,) = audit_for(stack, agent_id=agent, method="server/discover")
    (call,) = audit_for(stack, agent_id=agent, tool_name="echo")
    for rec in (discover, call):
        assert rec["session_id"] is None, rec
        assert inventory(rec) == (info.name, info.version, MODERN), rec


async def test_the_typescript_sdk_server_is_named_too(ts_stack):
    agent = "t73-ts"
    async with initialized(ts_stack.url, agent) as (session, init):
        assert (init.server_info.name, init.server_info.version) == ("mcp-guard-demo-ts", "0.0.0")
        await session.call_tool("echo", {"text": "ts"})
    (call_rec,) = audit_for(ts_stack, agent_id=agent, tool_name="echo")
    assert inventory(call_rec) == ("mcp-guard-demo-ts", "0.0.0", init.protocol_version), call_rec
    stat = "wasmcustom.mcp_guard.servers_seen.mcp-guard-demo-ts.0_0_0"
    assert wait_for_stat(ts_stack, stat).get(stat, 0) >= 1, servers_seen(ts_stack)


async def test_a_legacy_initialize_answered_on_the_get_stream_names_the_session(legacy_stack):
    agent = "t73-legacy"
    url = f"http://127.0.0.1:{legacy_stack.listen_port}/sse"
    async with sse_client(url, headers={"x-agent-id": agent}) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            await session.call_tool("echo", {"text": "legacy"})
    name, version = init.server_info.name, init.server_info.version
    # The outcome records of the POSTs are correlated on the GET stream; the POSTs' own
    # (deferred) records come first.
    (init_rec,) = audit_for(legacy_stack, agent_id=agent, method="initialize", correlated=True)
    (call_rec,) = audit_for(legacy_stack, agent_id=agent, tool_name="echo", correlated=True)
    (posted,) = audit_for(legacy_stack, agent_id=agent, tool_name="echo", output_status="deferred")
    for rec in (init_rec, call_rec, posted):
        assert inventory(rec) == (name, version, init.protocol_version), rec
