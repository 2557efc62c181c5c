#!/usr/bin/env python3
"""An MCP client on the official MCP Python SDK, for the e2e SDK matrix: runs one scenario
through the SDK's own client session and prints one JSON object with what it observed.
The same file runs under the SDK 2.x venv (.venv, httpx2) and the SDK 1.x venv (.venv-mcp1,
httpx); it picks the SDK's own names for the few things that differ.

    python examples/sdk/py_client.py --url URL [--agent ID] [--transport streamable-http|sse]
                                     [--mode legacy|auto|2026-07-28] [--scenario basic|modern]
                                     [--timeout 20] [--deny-timeout 3]

URL is the Streamable HTTP endpoint (.../mcp) or, for --transport sse, the legacy
HTTP+SSE stream (.../sse). Every request carries `x-agent-id: ID`.

--mode legacy (the default; SDK 1.x and 2.x): the SDK's ClientSession with the initialize
handshake (a session, protocol <= 2025-11-25). --mode auto / 2026-07-28 (SDK 2.x, Streamable
HTTP only): the SDK's `Client` in that mode: `auto` probes `server/discover` (and would fall
back to initialize on a server that does not know it: the output's protocol_version and
session_id show which happened), `2026-07-28` adopts that revision without a probe. Either way
at 2026-07-28 every request is stateless (no session; `_meta` with the protocol version and
client capabilities; MCP-Protocol-Version, Mcp-Method, Mcp-Name and, for arguments whose
inputSchema property has `x-mcp-header`, Mcp-Param-* headers, all set by the SDK), and a call
answered `resultType: "input_required"` is retried by the SDK's own multi-round-trip driver,
which hands each input request to this client's callbacks: the elicitation callback accepts
with `{"confirm": true}` (what the demo server's confirm_delete asks for) and records the
question in `elicitations` (in legacy mode the same callback answers the server's
elicitation/create request sent in the middle of the call).

Scenario `basic`: (initialize or discover,) tools/list, then tools/call echo, fail,
delete_repo (in that order). Scenario `modern` (the demo server with --modern-tools): echo,
confirm_delete (an elicitation; at 2026-07-28 a multi-round-trip call), run_query (region
mirrored into Mcp-Param-Region), delete_repo. Output:
  {"sdk": "py1"|"py2", "sdk_version", "transport", "mode", "protocol_version", "server_name",
   "session_id", "tools": [names], "list_cache": {"ttlMs", "cacheScope"} (2026-07-28 only),
   "elicitations": [messages], "calls": [{"tool", "arguments", "request_id", "request_ids",
   "result": {"is_error", "text": [...]}} | ... "error": {"code", "message"}} |
   ... "timeout": seconds}],
   "posts": [{"url", "headers", "request", "status", "content_type", "response"}]}
`request_id` is the id of the call's first tools/call POST, `request_ids` those of all its
rounds (one unless the server answered input_required). `posts` is every POST the SDK sent
(its JSON-RPC message, and its MCP-Protocol-Version / Mcp-* request headers) with the HTTP
status and, when the answer was application/json, the parsed body (so what the proxy answered
on the wire shows even when the SDK itself ignores it, as the legacy transport's POST does).
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

MODERN_VERSIONS = ("2026-07-28",)  # revisions without sessions whose lists carry cache hints

SCENARIOS = {
    "basic": [("echo", {"text": "hello from the matrix"}), ("fail", {"reason": "matrix says no"}),
              ("delete_repo", {"name": "prod"})],
    "modern": [("echo", {"text": "hello at 2026-07-28"}), ("confirm_delete", {"name": "staging"}),
               ("run_query", {"region": "eu-west", "sql": "select 1"}), ("delete_repo", {"name": "prod"})],
}  # fmt: skip
MODES = ("legacy", "auto", "2026-07-28")
# The request headers a POST entry reports: the 2026-07-28 routing headers and Mcp-Param-*.
WIRE_HEADERS = ("mcp-protocol-version", "mcp-method", "mcp-name", "mcp-session-id")


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
            headers = {k.lower(): v for k, v in request.headers.items()
                       if k.lower() in WIRE_HEADERS or k.lower().startswith("mcp-param-")}  # fmt: skip
            self.posts.append({"url": str(request.url), "headers": headers, "request": message, "status": None,
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
        ids = self.request_ids(tool)
        return ids[0] if ids else None

    def request_ids(self, tool: str) -> list[Any]:
        """The ids of every tools/call POST of this tool, in order."""
        return [
            p["request"].get("id")
            for p in self.posts
            if isinstance(p["request"], dict)
            and p["request"].get("method") == "tools/call"
            and p["request"].get("params", {}).get("name") == tool
        ]


def dump(model: Any) -> dict[str, Any]:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)



def elicitation_callback(out: dict[str, Any]) -> Any:
    """The SDK elicitation callback: accepts with {"confirm": true}, records each question in
    out["elicitations"]. At 2026-07-28 the SDK's multi-round-trip driver calls it for each
    elicitation in an input_required result; before, the server's elicitation/create request
    in the middle of a call does."""
    from mcp.types import ElicitResult

    elicitations: list[str] = []
    out["elicitations"] = elicitations

    async def on_elicit(context: Any, params: Any) -> Any:
        elicitations.append(params.message)
        return ElicitResult(action="accept", content={"confirm": True})

    return on_elicit


async def call(entry: dict[str, Any], limit: float, invoke: Any) -> None:
    """Runs one tools/call through the SDK; records its result, JSON-RPC error or timeout."""
    with anyio.move_on_after(limit) as scope:
        try:
            result = dump(await invoke())
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


async def run_modern(args: argparse.Namespace, wire: Wire, out: dict[str, Any], hooks: dict) -> None:
    """SDK 2.x `Client` in mode auto / 2026-07-28 over Streamable HTTP."""
    from mcp import Client

    on_elicit = elicitation_callback(out)
    headers = {"x-agent-id": args.agent} if args.agent else {}
    timeout = http_lib.Timeout(args.timeout, read=args.timeout * 3)
    async with http_lib.AsyncClient(headers=headers, timeout=timeout, event_hooks=hooks) as http:
        transport = streamable_http_client(args.url, http_client=http)
        async with Client(transport, mode=args.mode, elicitation_callback=on_elicit) as client:
            out["protocol_version"] = client.protocol_version
            info = client.server_info
            out["server_name"] = info.name if info is not None else None
            listed = await client.list_tools()
            out["tools"] = sorted(t.name for t in listed.tools)
            if client.protocol_version in MODERN_VERSIONS:
                out["list_cache"] = {"ttlMs": listed.ttl_ms, "cacheScope": listed.cache_scope}
            calls = out["calls"] = []
            for tool, arguments in SCENARIOS[args.scenario]:
                entry: dict[str, Any] = {"tool": tool, "arguments": arguments}
                calls.append(entry)
                await call(entry, args.timeout, lambda: client.call_tool(tool, arguments))
                entry["request_id"] = wire.request_id(tool)
                entry["request_ids"] = wire.request_ids(tool)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    wire = Wire()
    headers = {"x-agent-id": args.agent} if args.agent else {}
    hooks = {"request": [wire.on_request], "response": [wire.on_response]}
    timeout = http_lib.Timeout(args.timeout, read=args.timeout * 3)
    out: dict[str, Any] = {"sdk": SDK, "sdk_version": SDK_VERSION, "transport": args.transport, "mode": args.mode}

    def client_factory(headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None) -> Any:
        return http_lib.AsyncClient(headers=headers, timeout=timeout, auth=auth, event_hooks=hooks)

    async def scenario(read: Any, write: Any) -> None:
        async with ClientSession(read, write, elicitation_callback=elicitation_callback(out)) as session:
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
                await call(entry, limit, lambda: session.call_tool(tool, arguments))
                entry["request_id"] = wire.request_id(tool)
                entry["request_ids"] = wire.request_ids(tool)

    with anyio.fail_after(args.timeout * 3):
        if args.mode != "legacy":
            await run_modern(args, wire, out, hooks)
        elif args.transport == "sse":
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
    parser.add_argument("--mode", choices=MODES, default="legacy")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="basic")
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--deny-timeout", type=float, default=3.0)
    args = parser.parse_args()
    if args.mode != "legacy" and (SDK == "py1" or args.transport != "streamable-http"):
        parser.error("--mode auto / 2026-07-28 needs the SDK 2.x and --transport streamable-http")
    print(json.dumps(anyio.run(run, args), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
