#!/usr/bin/env python3
"""Demo MCP server behind mcp-guard: the official MCP Python SDK (mcp 2.x), Streamable HTTP.

    python examples/demo_server.py [--host 127.0.0.1] [--port 8000] [--json-response] [--call-log FILE]

Serves MCP at http://HOST:PORT/mcp. Responses to POSTs are SSE streams (the SDK
default) unless --json-response is given. Tools:

    echo(text) -> text          add(a, b) -> a + b          search(query) -> fake results
    fail(reason) -> tool error (a result with isError: true, not a JSON-RPC error)
    countdown(steps, delay_ms) -> progress notifications over time, then "counted <steps>"
    delete_repo(name) -> "deleted <name>" (nothing is deleted: it exists to be denied)

Also a prompt greet(name) and resources demo://docs/{name}, for the prompt/resource tags.

--call-log FILE appends one JSON line per tool invocation that reached this server:
    {"tool": NAME, "arguments": {...}, "headers": {...}}
(prompts/get and resources/read log {"prompt": NAME, ...} / {"resource": URI, ...})
where "headers" maps each of the x-agent-id / x-mcp-* / mcp-session-id / x-request-id /
traceparent request headers to the list of values this server received (after Envoy), so
tests can prove what the filter forwarded, and that a denied call never arrived.
"""
from __future__ import annotations

import argparse
import json
import os
import threading
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

# Request headers copied into the call log (lower-case; as received from Envoy).
LOGGED_HEADERS = (
    "x-agent-id",
    "x-mcp-method",
    "x-mcp-tool-name",
    "x-mcp-prompt-name",
    "x-mcp-resource-uri",
    "mcp-session-id",
    "x-request-id",
    "traceparent",
)

FAKE_INDEX = [
    ("Model Context Protocol", "https://modelcontextprotocol.io/"),
    ("Envoy proxy", "https://www.envoyproxy.io/"),
    ("proxy-wasm ABI", "https://github.com/proxy-wasm/spec"),
    ("JSON-RPC 2.0", "https://www.jsonrpc.org/specification"),
]


class CallLog:
    """Appends one JSON line per tool call; safe to call from any thread."""

    def __init__(self, path: str | None) -> None:
        self._path = path
        self._lock = threading.Lock()

    def record(self, tool: str, arguments: dict[str, Any], ctx: Context | None, kind: str = "tool") -> None:
        if not self._path:
            return
        # name -> every value received (a list, so a duplicated header is visible)
        headers: dict[str, list[str]] = {}
        raw = ctx.headers if ctx is not None else None
        if raw is not None:
            getlist = getattr(raw, "getlist", None)  # starlette Headers
            for name in LOGGED_HEADERS:
                values = list(getlist(name)) if getlist else ([raw[name]] if name in raw else [])
                if values:
                    headers[name] = values
        line = json.dumps({kind: tool, "arguments": arguments, "headers": headers}, sort_keys=True)
        with self._lock, open(self._path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def build_server(call_log: CallLog, log_level: str = "INFO") -> MCPServer:
    mcp = MCPServer(
        "mcp-guard-demo",
        instructions="Demo server for the mcp-guard Envoy filter.",
        log_level=log_level,  # type: ignore[arg-type]
    )

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
        """Search a tiny fake index; returns one result per line."""
        call_log.record("search", {"query": query}, ctx)
        words = query.lower().split()
        hits = [f"{title} - {url}" for title, url in FAKE_INDEX if any(w in title.lower() for w in words)]
        if not hits:
            hits = [f"{title} - {url}" for title, url in FAKE_INDEX[:2]]
        return f"{len(hits)} result(s) for {query!r}:\n" + "\n".join(hits)

    @mcp.tool()
    def fail(reason: str, ctx: Context) -> str:
        """Always fails: returns a tool error (isError: true) carrying the reason."""
        call_log.record("fail", {"reason": reason}, ctx)
        # ToolError -> CallToolResult(is_error=True, content=[text]) in SDK 2.x.
        raise ToolError(reason)

    @mcp.tool()
    async def countdown(steps: int, delay_ms: int, ctx: Context) -> str:
        """Send `steps` progress notifications `delay_ms` apart on the response stream, then
        return. Shows that SSE responses stream through Envoy and mcp-guard unbuffered."""
        call_log.record("countdown", {"steps": steps, "delay_ms": delay_ms}, ctx)
        steps = max(0, min(steps, 20))
        for i in range(steps):
            await ctx.report_progress(i + 1, steps, f"step {i + 1}/{steps}")
            await anyio.sleep(max(0, min(delay_ms, 5000)) / 1000)
        return f"counted {steps}"

    @mcp.tool()
    def delete_repo(name: str, ctx: Context) -> str:
        """Pretend to delete a repository (a dangerous tool for the allowlist to deny)."""
        call_log.record("delete_repo", {"name": name}, ctx)
        return f"deleted {name}"

    @mcp.prompt()
    def greet(name: str, ctx: Context) -> str:
        """A prompt (its name is tagged as x-mcp-prompt-name)."""
        call_log.record("greet", {"name": name}, ctx, kind="prompt")
        return f"Say hello to {name}."

    @mcp.resource("demo://docs/{name}", mime_type="text/plain")
    def doc(name: str, ctx: Context) -> str:
        """A resource template (the URI read is tagged as x-mcp-resource-uri)."""
        call_log.record(f"demo://docs/{name}", {"name": name}, ctx, kind="resource")
        return f"mcp-guard demo document {name}"

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--json-response", action="store_true", help="answer POSTs with application/json, not SSE")
    parser.add_argument("--call-log", metavar="FILE", help="append one JSON line per tool invocation")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args()

    server = build_server(CallLog(args.call_log), args.log_level)
    server.run(
        transport="streamable-http",
        host=args.host,
        port=args.port,
        streamable_http_path="/mcp",
        json_response=args.json_response,
    )


if __name__ == "__main__":
    main()
