#!/usr/bin/env python3
"""An official MCP Python SDK 2.x server (MCPServer, Streamable HTTP at /mcp) for test_63: it
publishes `subscriptions/listen` events on demand and gives every cacheable result public cache
hints, so the test can see what mcp-guard does to both.

    python tests/e2e/listen_server.py --host 127.0.0.1 --port 8000 [--call-log FILE]

Tools:
    touch(uri)      -> publishes notifications/resources/updated for uri (ctx.notify_resource_updated)
    touch_session(uri) -> the same notification on the session's GET stream (2025-11-25 sessions)
    change_tools()  -> publishes notifications/tools/list_changed (ctx.notify_tools_changed)
    echo(text)      -> text
    delete_repo(name) -> "deleted <name>" (exists to be hidden and denied)
Resources: demo://docs/a, demo://docs/b, secret://keys.
Cache hints (SEP-2549): ttlMs 60000, cacheScope "public" on every cacheable method.
"""
from __future__ import annotations

import argparse
from typing import Any

import mcp_types as types

from mcp.server.caching import CACHEABLE_METHODS, CacheHint
from mcp.server.mcpserver import Context, MCPServer

TTL_MS = 60000


def build() -> MCPServer:
    server = MCPServer(
        "mcp-guard-listen",
        instructions="Publishes subscription events on demand.",
        log_level="WARNING",
        cache_hints={method: CacheHint(ttl_ms=TTL_MS, scope="public") for method in CACHEABLE_METHODS},
    )

    @server.tool()
    async def touch(uri: str, ctx: Context) -> str:
        """Publish notifications/resources/updated for uri to listen streams."""
        await ctx.notify_resource_updated(uri)
        return f"touched {uri}"

    @server.tool()
    async def touch_session(uri: str, ctx: Context) -> str:
        """Send notifications/resources/updated for uri on the session's standalone GET stream
        (a client before 2026-07-28 that sent resources/subscribe)."""
        await ctx.session.send_resource_updated(uri)
        return f"touched {uri}"

    @server.tool()
    async def change_tools(ctx: Context) -> str:
        """Publish notifications/tools/list_changed to listen streams."""
        await ctx.notify_tools_changed()
        return "changed"

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def delete_repo(name: str) -> str:
        """Pretends to delete a repository (exists to be denied)."""
        return f"deleted {name}"

    @server.resource("demo://docs/a")
    def doc_a() -> str:
        return "document a"

    @server.resource("demo://docs/b")
    def doc_b() -> str:
        return "document b"

    @server.resource("secret://keys")
    def keys() -> str:
        return "not for every agent"

    # resources/subscribe (before 2026-07-28): accepted; touch_session sends the updates.
    async def subscribe(_ctx: Any, _params: types.SubscribeRequestParams) -> types.EmptyResult:
        return types.EmptyResult()

    server._lowlevel_server.add_request_handler(  # noqa: SLF001 (no MCPServer API for it)
        "resources/subscribe", types.SubscribeRequestParams, subscribe
    )
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--call-log", metavar="FILE")  # accepted for the stack; unused
    args = parser.parse_args()
    build().run(transport="streamable-http", host=args.host, port=args.port, streamable_http_path="/mcp")


if __name__ == "__main__":
    main()
