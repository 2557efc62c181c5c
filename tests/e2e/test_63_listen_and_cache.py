"""MCP 2026-07-28 `subscriptions/listen` and cache hints through the real Envoy, with the official
Python SDK 2.x as a 2026-07-28 client (`mcp.Client`, `Client.listen()`) and server (MCPServer,
tests/e2e/listen_server.py: publishes `notifications/resources/updated` and
`notifications/tools/list_changed` on demand, public cache hints on every cacheable result).

- A listen stream reaches each agent without the `notifications/resources/updated` events about
  resources it may not read, and with everything else, live (the stream is never held).
- The listen call's audit record settles when the stream ends.
- Curated lists leave with `cacheScope: "private"` and the server's `ttlMs`; results mcp-guard
  does not curate (`server/discover`, `resources/read`, `resources/templates/list`) keep the
  server's hints.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from conftest import shipped_policy, start_stack
from helpers import HTTP_TIMEOUT, wait_for_audit
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourceUpdated, ToolsListChanged
from mcp_types import ResourceUpdatedNotification

pytestmark = pytest.mark.anyio

SERVER = Path(__file__).resolve().parent / "listen_server.py"
RAW_SERVER = Path(__file__).resolve().parent / "listen_raw_upstream.py"
MODERN = "2026-07-28"
# Bound on every wait for an event on a listen stream, in seconds.
EVENT_WAIT = 10.0


def listen_policy() -> dict:
    policy = copy.deepcopy(shipped_policy())
    policy["policy"]["agents"] = {
        # Reads demo://docs/* only; may call the tools that publish events.
        "reader": {"tools": ["touch", "touch_session", "change_tools", "echo"], "resources": ["demo://docs/*"]},
        "admin-agent": {"tools": ["*"], "prompts": ["*"], "resources": ["*"]},
    }
    return policy


@pytest.fixture(scope="module")
def listen_stack(tmp_path_factory: pytest.TempPathFactory):
    command = [sys.executable, str(SERVER), "--host", "{host}", "--port", "{port}", "--call-log", "{call_log}"]
    yield from start_stack(tmp_path_factory, listen_policy(), server_command=command)


def client(url: str, agent: str) -> tuple[httpx2.AsyncClient, Client]:
    """A 2026-07-28 SDK client for `agent` (no initialize, no session), with no response cache, so
    that every call reaches the server through Envoy."""
    http = httpx2.AsyncClient(headers={"x-agent-id": agent}, timeout=HTTP_TIMEOUT)
    return http, Client(streamable_http_client(url, http_client=http), mode=MODERN, cache=None)


async def next_events(sub: Any, count: int) -> list[Any]:
    got: list[Any] = []
    with anyio.fail_after(EVENT_WAIT):
        async for event in sub:
            got.append(event)
            if len(got) == count:
                break
    return got


async def test_listen_stream_drops_updates_for_resources_the_agent_may_not_read(listen_stack) -> None:
    subscribed = ["demo://docs/a", "secret://keys"]
    http, reader = client(listen_stack.url, "reader")
    async with http, reader:
        async with reader.listen(tools_list_changed=True, resource_subscriptions=subscribed) as sub:
            # The server honoured both; the acknowledgement the agent gets names only the one it
            # may read (no update about the other will reach it).
            assert sub.honored.resource_subscriptions == ["demo://docs/a"]
            assert sub.honored.tools_list_changed is True
            # Published in this order; the denied update first, so that it would be the first
            # event the client sees if it got through.
            for uri in ("secret://keys", "demo://docs/a"):
                result = await reader.call_tool("touch", {"uri": uri})
                assert not result.is_error, result
            # Live: this event reaches the client while the stream stays open.
            assert await next_events(sub, 1) == [ResourceUpdated(uri="demo://docs/a")]
            await reader.call_tool("touch", {"uri": "secret://keys"})
            await reader.call_tool("change_tools", {})
            assert await next_events(sub, 1) == [ToolsListChanged()]
    # The client closed the acknowledged subscription (its normal end): recorded once, success.
    [record] = wait_for_audit(
        listen_stack, lambda r: r.get("agent_id") == "reader" and r.get("method") == "subscriptions/listen"
    )
    assert record["decision"] == "allow"
    assert record["output_status"] == "success", record


async def test_an_agent_that_may_read_everything_gets_every_update(listen_stack) -> None:
    http, admin = client(listen_stack.url, "admin-agent")
    async with http, admin:
        async with admin.listen(resource_subscriptions=["demo://docs/b", "secret://keys"]) as sub:
            for uri in ("secret://keys", "demo://docs/b"):
                await admin.call_tool("touch", {"uri": uri})
            assert sorted(sub.honored.resource_subscriptions or []) == ["demo://docs/b", "secret://keys"]
            got = await next_events(sub, 2)
    assert got == [ResourceUpdated(uri="secret://keys"), ResourceUpdated(uri="demo://docs/b")]


async def test_before_2026_a_subscribed_update_on_the_get_stream_is_curated_too(listen_stack) -> None:
    """A 2025-11-25 session (initialize, Mcp-Session-Id, the GET stream): resources/subscribe is
    decided by method, and the updates it brings on the GET stream are curated like a listen
    stream's."""
    updates: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updates.append(str(message.params.uri))

    http = httpx2.AsyncClient(headers={"x-agent-id": "reader"}, timeout=HTTP_TIMEOUT)
    legacy = Client(
        streamable_http_client(listen_stack.url, http_client=http), mode="legacy", cache=None, message_handler=on_message
    )
    async with http, legacy:
        assert legacy.protocol_version < MODERN
        for uri in ("secret://keys", "demo://docs/a"):
            await legacy.subscribe_resource(uri)
        for uri in ("secret://keys", "demo://docs/a", "secret://keys", "demo://docs/b"):
            await legacy.call_tool("touch_session", {"uri": uri})
        with anyio.fail_after(EVENT_WAIT):
            while len(updates) < 2:
                await anyio.sleep(0.05)
        # The GET stream carried all four; the two the agent may read arrived, in order.
        assert updates == ["demo://docs/a", "demo://docs/b"], updates


async def test_cache_hints_private_on_curated_lists_and_kept_elsewhere(listen_stack) -> None:
    http, reader = client(listen_stack.url, "reader")
    async with http, reader:
        tools = await reader.list_tools()
        names = sorted(t.name for t in tools.tools)
        assert names == ["change_tools", "echo", "touch", "touch_session"], names  # delete_repo curated away
        # The server said public: a list curated for this agent must not be shared.
        assert (tools.cache_scope, tools.ttl_ms) == ("private", 60000)
        resources = await reader.list_resources()
        assert sorted(str(r.uri) for r in resources.resources) == ["demo://docs/a", "demo://docs/b"]
        assert (resources.cache_scope, resources.ttl_ms) == ("private", 60000)
        # Not curated: the server's hints as sent.
        read = await reader.read_resource("demo://docs/a")
        assert (read.cache_scope, read.ttl_ms) == ("public", 60000)
        templates = await reader.list_resource_templates()
        assert (templates.cache_scope, templates.ttl_ms) == ("public", 60000)
        # server/discover names no tool, prompt or resource: nothing to curate. (send_discover:
        # a client pinned to 2026-07-28 does not probe on connect.)
        discover = await reader.session.send_discover(MODERN)
        assert (discover["cacheScope"], discover["ttlMs"]) == ("public", 60000)
        assert MODERN in discover["supportedVersions"]
    # An agent allowed everything sees the whole list, still private (curated per agent).
    http, admin = client(listen_stack.url, "admin-agent")
    async with http, admin:
        tools = await admin.list_tools()
        assert "delete_repo" in {t.name for t in tools.tools}
        assert tools.cache_scope == "private"


@pytest.fixture(scope="module")
def raw_listen_stack(tmp_path_factory: pytest.TempPathFactory):
    command = [sys.executable, str(RAW_SERVER), "--host", "{host}", "--port", "{port}", "--call-log", "{call_log}"]
    yield from start_stack(tmp_path_factory, listen_policy(), server_command=command)


async def test_updates_no_sdk_server_would_send_are_dropped_for_every_reader(raw_listen_stack) -> None:
    """What no SDK server sends (tests/e2e/listen_raw_upstream.py): an update with `uri` twice,
    the last one denied (the Python SDK keeps the last); an escaped denied URI; a denied update
    padded past 4 MiB; all cut into chunks at awkward places. The SDK 2.x client, through
    Envoy, gets only the update it may read and the list change, then the graceful end."""
    http, reader = client(raw_listen_stack.url, "reader")
    async with http, reader:
        async with reader.listen(tools_list_changed=True, resource_subscriptions=["demo://docs/a", "secret://keys"]) as sub:
            honored = sub.honored.resource_subscriptions
            got: list[Any] = []
            failure: Exception | None = None
            with anyio.fail_after(EVENT_WAIT):
                try:
                    async for event in sub:  # ends at the server's result
                        got.append(event)
                except Exception as exc:  # noqa: BLE001 (the SDK refuses an SSE event over 1 MiB)
                    failure = exc
    assert got == [ResourceUpdated(uri="demo://docs/a"), ToolsListChanged()], (got, failure)
    # The padded event (over 4 MiB, dropped whole) never reached the SDK, whose SSE reader
    # refuses events over 1 MiB: the subscription ended as the server ended it.
    assert failure is None, failure
    assert honored == ["demo://docs/a"]
    [record] = wait_for_audit(raw_listen_stack, lambda r: r.get("method") == "subscriptions/listen")
    assert (record["agent_id"], record["output_status"]) == ("reader", "success"), record
