#!/usr/bin/env python3
"""The demo MCP server (examples/demo_server.py) on the official MCP Python SDK **1.x**
(`mcp<2`, FastMCP), for the e2e SDK matrix. Run it with .venv-mcp1/bin/python.

    python examples/sdk/py1/server.py [--host 127.0.0.1] [--port 8000] [--call-log FILE]
                                      [--transport streamable-http|sse] [--json-response]

Streamable HTTP at /mcp, or the legacy HTTP+SSE transport (2024-11-05) at GET /sse +
POST /messages/?session_id=... Same tools as demo_server.py: echo(text), add(a, b),
search(query), fail(reason) (a result with isError: true), delete_repo(name).

--call-log FILE appends one JSON line per tool invocation that reached this server, in the
format of demo_server.py: {"tool": NAME, "arguments": {...}, "headers": {name: [values]}}.
"""
from __future__ import annotations

import argparse
import json
import os
import threading
from typing import Any

from mcp.server.fastmcp import Context, FastMCP
from mcp.server.fastmcp.exceptions import ToolError

LOGGED_HEADERS = (
    "x-agent-id", "x-mcp-method", "x-mcp-tool-name", "x-mcp-prompt-name", "x-mcp-resource-uri",
    "mcp-session-id", "x-request-id", "traceparent",
)  # fmt: skip

FAKE_INDEX = [
    ("Model Context Protocol", "https://modelcontextprotocol.io/"),
    ("Envoy proxy", "https://www.envoyproxy.io/"),
]


class CallLog:
    def __init__(self, path: str | None) -> None:
        self._path = path
        self._lock = threading.Lock()

    def record(self, tool: str, arguments: dict[str, Any], ctx: Context) -> None:
        if not self._path:
            return
        headers: dict[str, list[str]] = {}
        request = ctx.request_context.request  # the starlette Request of this call's POST
        if request is not None:
            for name in LOGGED_HEADERS:
                values = request.headers.getlist(name)
                if values:
                    headers[name] = list(values)
        line = json.dumps({"tool": tool, "arguments": arguments, "headers": headers}, sort_keys=True)
        with self._lock, open(self._path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def build_server(call_log: CallLog, **settings: Any) -> FastMCP:
    mcp = FastMCP("mcp-guard-demo-py1", **settings)

    @mcp.tool()
    def echo(text: str, ctx: Context) -> str:
        """Return the text unchanged."""
        call_log.record("echo", {"text": text}, ctx)
        return text

    @mcp.tool()
    def add(a: int, b: int, ctx: Context) -> int:
        """Add two integers."""
        call_log.record("add", {"a": a, "b": b}, ctx)
        return a + b

    @mcp.tool()
    def search(query: str, ctx: Context) -> str:
        """Search a tiny fake index."""
        call_log.record("search", {"query": query}, ctx)
        return "\n".join(f"{t} - {u}" for t, u in FAKE_INDEX)

    @mcp.tool()
    def fail(reason: str, ctx: Context) -> str:
        """Always fails: a tool error (isError: true) carrying the reason."""
        call_log.record("fail", {"reason": reason}, ctx)
        raise ToolError(reason)

    @mcp.tool()
    def delete_repo(name: str, ctx: Context) -> str:
        """Pretend to delete a repository (a dangerous tool for the allowlist to deny)."""
        call_log.record("delete_repo", {"name": name}, ctx)
        return f"deleted {name}"

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--transport", choices=["streamable-http", "sse"], default="streamable-http")
    parser.add_argument("--json-response", action="store_true")
    parser.add_argument("--call-log", metavar="FILE")
    args = parser.parse_args()
    server = build_server(
        CallLog(args.call_log), host=args.host, port=args.port, streamable_http_path="/mcp",
        json_response=args.json_response, log_level="WARNING",
    )  # fmt: skip
    server.run(transport=args.transport)


if __name__ == "__main__":
    main()
