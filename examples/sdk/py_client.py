#!/usr/bin/env python3
"""An MCP client on the official MCP Python SDK, for the e2e SDK matrix: runs one scenario
through the SDK's own client session and prints one JSON object with what it observed.
The same file runs under the SDK 2.x venv (.venv, httpx2) and the SDK 1.x venv (.venv-mcp1,
httpx); it picks the SDK's own names for the few things that differ.

    python examples/sdk/py_client.py --url URL [--agent ID] [--transport streamable-http|sse]
                                     [--scenario basic] [--timeout 20] [--deny-timeout 3]

URL is the Streamable HTTP endpoint (.../mcp) or, for --transport sse, the legacy
HTTP+SSE stream (.../sse). Every request carries `x-agent-id: ID`.

Scenario `basic`: initialize, tools/list, then tools/call echo, fail, delete_repo (in that
order). Output:
  {"sdk": "py1"|"py2", "sdk_version", "transport", "protocol_version", "server_name",
   "session_id", "tools": [names], "calls": [{"tool", "arguments", "request_id",
   "result": {"is_error", "text": [...]}} | ... "error": {"code", "message"}} |
   ... "timeout": seconds}],
   "posts": [{"url", "request", "status", "content_type", "response"}]}
`posts` is every POST the SDK sent (its JSON-RPC message) with the HTTP status and, when the
answer was application/json, the parsed body (so what the proxy answered on the wire shows
even when the SDK itself ignores it, as the legacy transport's POST does).
With the legacy transport the response to a call arrives on the GET stream; a call whose
answer never arrives there (a POST refused by the proxy) ends after --deny-timeout seconds
and is reported as {"timeout": seconds}.
"""
from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import version
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
from mcp import ClientSession

SDK_VERSION = version("mcp")
SDK = "py%s" % SDK_VERSION.split(".")[0]
if SDK == "py1":
    import httpx as http_lib
    from mcp.client.sse import sse_client
    from mcp.client.streamable_http import streamable_http_client
else:
    import httpx2 as http_lib
    from mcp.client.sse import sse_client
    from mcp.client.streamable_http import streamable_http_client

SCENARIOS = {
    "basic": [("echo", {"text": "hello from the matrix"}), ("fail", {"reason": "matrix says no"}),
              ("delete_repo", {"name": "prod"})],
}  # fmt: skip


class Wire:
    """httpx event hooks: every POST's JSON-RPC message and how it was answered."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.session_id: str | None = None

    async def on_request(self, request: Any) -> None:
        if request.method == "POST":
            try:
                message = json.loads(request.content)
            except ValueError:
                message = None
            query = parse_qs(urlsplit(str(request.url)).query)
            for name in ("session_id", "sessionId"):  # legacy transport: the session is in the
                if name in query:  # POST URL (Python servers: session_id, TypeScript: sessionId)
                    self.session_id = query[name][0]
            self.posts.append({"url": str(request.url), "request": message, "status": None,
                               "content_type": None, "response": None})  # fmt: skip

    async def on_response(self, response: Any) -> None:
        sid = response.headers.get("mcp-session-id")
        if sid:
            self.session_id = sid
        if response.request.method != "POST":
            return
        entry = next((p for p in reversed(self.posts) if p["status"] is None), None)
        if entry is None:
            return
        ctype = response.headers.get("content-type", "")
        entry["status"] = response.status_code
        entry["content_type"] = ctype
        if ctype.split(";")[0].strip().lower() == "application/json":
            body = await response.aread()
            entry["response"] = json.loads(body) if body.strip() else None

    def request_id(self, tool: str) -> Any:
        for p in self.posts:
            m = p["request"]
            if isinstance(m, dict) and m.get("method") == "tools/call" and m.get("params", {}).get("name") == tool:
                return m.get("id")
        return None


def dump(model: Any) -> dict[str, Any]:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)



async def run(args: argparse.Namespace) -> dict[str, Any]:
    wire = Wire()
    headers = {"x-agent-id": args.agent} if args.agent else {}
    hooks = {"request": [wire.on_request], "response": [wire.on_response]}
    timeout = http_lib.Timeout(args.timeout, read=args.timeout * 3)
    out: dict[str, Any] = {"sdk": SDK, "sdk_version": SDK_VERSION, "transport": args.transport}

    def client_factory(headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None) -> Any:
        return http_lib.AsyncClient(headers=headers, timeout=timeout, auth=auth, event_hooks=hooks)

    async def scenario(read: Any, write: Any) -> None:
        async with ClientSession(read, write) as session:
            init = dump(await session.initialize())
            out["protocol_version"] = init.get("protocolVersion")
            out["server_name"] = init.get("serverInfo", {}).get("name")
            listed = dump(await session.list_tools())
            out["tools"] = sorted(t["name"] for t in listed["tools"])
            calls = out["calls"] = []
            for tool, arguments in SCENARIOS[args.scenario]:
                entry: dict[str, Any] = {"tool": tool, "arguments": arguments}
                calls.append(entry)
                limit = args.deny_timeout if args.transport == "sse" else args.timeout
                with anyio.move_on_after(limit) as scope:
                    try:
                        result = dump(await session.call_tool(tool, arguments))
                        entry["result"] = {
                            "is_error": bool(result.get("isError", False)),
                            "text": [c.get("text") for c in result.get("content", []) if c.get("type") == "text"],
                        }
                    except Exception as exc:  # noqa: BLE001 - JSON-RPC errors (McpError/MCPError)
                        error = getattr(exc, "error", None)
                        if error is None:
                            raise
                        entry["error"] = {"code": error.code, "message": error.message}
                if scope.cancelled_caught:
                    entry["timeout"] = limit
                entry["request_id"] = wire.request_id(tool)

    with anyio.fail_after(args.timeout * 3):
        if args.transport == "sse":
            async with sse_client(args.url, headers=headers, timeout=args.timeout,
                                  httpx_client_factory=client_factory) as (read, write):  # fmt: skip
                await scenario(read, write)
        else:
            async with client_factory(headers=headers, timeout=timeout) as http:
                async with streamable_http_client(args.url, http_client=http) as streams:
                    await scenario(streams[0], streams[1])
    out["session_id"] = wire.session_id
    out["posts"] = wire.posts
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--agent")
    parser.add_argument("--transport", choices=["streamable-http", "sse"], default="streamable-http")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="basic")
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--deny-timeout", type=float, default=3.0)
    args = parser.parse_args()
    print(json.dumps(anyio.run(run, args), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
