#!/usr/bin/env python3
"""Demo MCP server behind mcp-guard: the official MCP Python SDK (mcp 2.x), Streamable HTTP.

    python examples/demo_server.py [--host 127.0.0.1] [--port 8000] [--json-response] [--call-log FILE]
                                   [--resumable [--retry-ms N]] [--log-http-requests]
                                   [--modern-tools] [--public-lists-ttl-ms N]
                                   [--describe TOOL=TEXT ...] [--server-version V]

Serves MCP at http://HOST:PORT/mcp. Responses to POSTs are SSE streams (the SDK
default) unless --json-response is given. Tools:

    echo(text) -> text          add(a, b) -> a + b          search(query) -> fake results
    fail(reason) -> tool error (a result with isError: true, not a JSON-RPC error)
    countdown(steps, delay_ms) -> progress notifications over time, then "counted <steps>"
    delete_repo(name) -> "deleted <name>" (nothing is deleted: it exists to be denied)

Also prompts greet(name) and incident_report(summary), the resource template
demo://docs/{name} and the listed resources demo://docs/index and secret://keys, for the
prompt/resource tags and curated lists.

--resumable turns on stream resumability (SEP-1699, protocol 2025-11-25): an in-memory event
store, so every POST SSE stream starts with a priming event (`id:`, empty data, `retry:` N ms
from --retry-ms) and events can be replayed on a GET carrying Last-Event-ID; plus two tools
for the session's other streams:

    resume_echo(text, delay_ms, closes=1) -> text, but first closes the POST's SSE stream (no
        result on it) and waits delay_ms, `closes` times (the 2nd and later close the client's
        GET reconnection stream, if it has reconnected by then), then returns: the client gets
        the result on its last GET reconnection (Last-Event-ID), live or from the event store.
    server_push() -> the root URIs the client listed, one per line: sends, on the session's
        standalone GET stream (not on this request's stream), notifications/tools/list_changed
        and a roots/list request, whose answer the client POSTs back.

--modern-tools adds two tools for MCP 2026-07-28 features (not listed otherwise, so the
default tool set stays as above):

    confirm_delete(name) -> "deleted <name>" once the client confirmed, "kept <name>" if it
        did not: asks the client for a confirmation (form elicitation) through the SDK's
        resolver API (`Resolve` + `Elicit`). At 2026-07-28 the first round is answered with a
        result `resultType: "input_required"` (inputRequests + requestState) and the tool runs
        on the client's retry carrying inputResponses; older protocols get an
        elicitation/create request in the middle of the call instead.
    run_query(region, sql) -> "<region>: <sql>": `region` is marked `x-mcp-header: Region` in
        the inputSchema, so a 2026-07-28 client mirrors it into an `Mcp-Param-Region` header.

Each round of confirm_delete that reaches the server is also logged, as {"round":
"confirm_delete", "arguments": {...}, "headers": {...}, "answered": bool} (answered: the round
carried the client's answer), read with stack.calls("round").

--public-lists-ttl-ms N makes tools/list, prompts/list and resources/list results carry the
cache hints `ttlMs: N, cacheScope: "public"` (SEP-2549; the SDK sends them to 2026-07-28
clients only), so a test can see mcp-guard keep ttlMs and turn a curated list's scope into
"private".

--describe TOOL=TEXT (repeatable) lists TOOL with TEXT as its description instead of its
docstring, and --server-version V sets the serverInfo version of the initialize result (empty
by default, as the SDK leaves it): restarting the server with --describe is a "rug pull", a
changed tool definition behind an unchanged name, for the e2e tests of mcp-guard's tool pins
(tests/e2e/test_72_tool_pins.py). A --describe naming no tool of this server is an error.

--log-http-requests appends, besides the tool calls, one line per HTTP request this server
received to the call log: {"http": METHOD, "path": PATH, "headers": {...}} (the headers below
plus mcp-method, mcp-name, mcp-protocol-version, last-event-id), so tests can see what
Envoy forwarded for GET / DELETE and that a refused request never arrived.

--call-log FILE appends one JSON line per tool invocation that reached this server:
    {"tool": NAME, "arguments": {...}, "headers": {...}}
(prompts/get and resources/read log {"prompt": NAME, ...} / {"resource": URI, ...})
where "headers" maps each of the x-agent-id / x-mcp-* / mcp-session-id / x-request-id /
traceparent request headers, and every `mcp-param-*` / `x-mcp-param-*` header, to the list
of values this server received (after Envoy), so tests can prove what the filter forwarded,
and that a denied call never arrived.
"""
# No `from __future__ import annotations`: the SDK reads the tools' annotations with
# typing.get_type_hints, and those of --modern-tools name objects local to build_server
# (`Resolve(ask_confirmation)`), which string annotations could not resolve.
import argparse
import json
import os
import threading
import uuid
from typing import Annotated, Any

import anyio
from mcp.server.caching import CacheHint
from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId

# Request headers copied into the call log (lower-case; as received from Envoy).
LOGGED_HEADERS = (
    "x-agent-id",
    "x-mcp-method",
    "x-mcp-tool-name",
    "x-mcp-prompt-name",
    "x-mcp-resource-uri",
    "x-mcp-call-round",
    "mcp-session-id",
    "x-request-id",
    "traceparent",
)

# Request header name prefixes also copied into the call log: the 2026-07-28 Mcp-Param-*
# headers a client mirrors from x-mcp-header arguments, and tags derived from them.
LOGGED_HEADER_PREFIXES = ("mcp-param-", "x-mcp-param-")

# Extra request headers in --log-http-requests lines.
HTTP_LOGGED_HEADERS = LOGGED_HEADERS + ("mcp-method", "mcp-name", "mcp-protocol-version", "last-event-id")

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

    def record(
        self, tool: str, arguments: dict[str, Any], ctx: Context | None, kind: str = "tool", **extra: Any
    ) -> None:
        if not self._path:
            return
        # name -> every value received (a list, so a duplicated header is visible)
        headers: dict[str, list[str]] = {}
        raw = ctx.headers if ctx is not None else None
        if raw is not None:
            getlist = getattr(raw, "getlist", None)  # starlette Headers
            names = list(LOGGED_HEADERS)
            names += sorted({k.lower() for k in raw.keys() if k.lower().startswith(LOGGED_HEADER_PREFIXES)})
            for name in names:
                values = list(getlist(name)) if getlist else ([raw[name]] if name in raw else [])
                if values:
                    headers[name] = values
        self._append({kind: tool, "arguments": arguments, "headers": headers, **extra})

    def record_http(self, method: str, path: str, raw_headers: list[tuple[bytes, bytes]]) -> None:
        """One HTTP request as received (--log-http-requests)."""
        if not self._path:
            return
        headers: dict[str, list[str]] = {}
        for k, v in raw_headers:
            name = k.decode("latin-1").lower()
            if name in HTTP_LOGGED_HEADERS:
                headers.setdefault(name, []).append(v.decode("latin-1"))
        self._append({"http": method, "path": path, "headers": headers})

    def _append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True)
        with self._lock, open(self._path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


class InMemoryEventStore(EventStore):
    """Keeps every SSE event of the process's lifetime (a demo: nothing is ever evicted).

    Event ids are random (not guessable across sessions); replay sends the events of the same
    stream stored after the given id, in order (priming events, stored as None, are not sent)."""

    def __init__(self) -> None:
        self._events: list[tuple[EventId, StreamId, Any]] = []

    async def store_event(self, stream_id: StreamId, message: Any) -> EventId:
        event_id = uuid.uuid4().hex
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        stream_id = next((s for e, s, _ in self._events if e == last_event_id), None)
        if stream_id is None:
            return None
        after = False
        for event_id, sid, message in list(self._events):
            if event_id == last_event_id:
                after = True
            elif after and sid == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


class HttpRequestLog:
    """ASGI wrapper: logs each HTTP request (method, path, headers) before the app sees it."""

    def __init__(self, app: Any, call_log: CallLog) -> None:
        self.app = app
        self.call_log = call_log

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.call_log.record_http(scope["method"], scope["path"], list(scope["headers"]))
        await self.app(scope, receive, send)


class Confirmation(BaseModel):
    """What confirm_delete asks the client (a form elicitation)."""

    confirm: bool = Field(description="Delete it?")


# The property of run_query's inputSchema that a 2026-07-28 client mirrors into a header
# (`x-mcp-header: Region` -> `Mcp-Param-Region`).
REGION_HEADER = "Region"

# The lists whose cache hints --public-lists-ttl-ms sets.
LIST_METHODS = ("tools/list", "prompts/list", "resources/list")


def build_server(
    call_log: CallLog,
    log_level: str = "INFO",
    resumable: bool = False,
    modern_tools: bool = False,
    public_lists_ttl_ms: int | None = None,
    describe: dict[str, str] | None = None,
    server_version: str = "",
) -> MCPServer:
    """The demo server. `describe` maps a tool name to the description it is listed with
    instead of its docstring (--describe; a name no tool has is a ValueError); `server_version`
    is the serverInfo version of the initialize result (--server-version; the SDK's default,
    empty, when not given)."""
    cache_hints = None
    if public_lists_ttl_ms is not None:
        hint = CacheHint(ttl_ms=public_lists_ttl_ms, scope="public")
        cache_hints = {method: hint for method in LIST_METHODS}
    mcp = MCPServer(
        "mcp-guard-demo",
        instructions="Demo server for the mcp-guard Envoy filter.",
        log_level=log_level,  # type: ignore[arg-type]
        cache_hints=cache_hints,  # type: ignore[arg-type]
        version=server_version,
    )
    descriptions = dict(describe or {})

    def tool(**options: Any) -> Any:
        """mcp.tool(**options), with the description --describe gave this tool, if any (else
        the SDK takes the function's docstring, as before)."""

        def register(fn: Any) -> Any:
            return mcp.tool(description=descriptions.pop(fn.__name__, None), **options)(fn)

        return register

    # Annotations (MCP ToolAnnotations) for mcp-guard's optional annotations rule.
    read_only = ToolAnnotations(readOnlyHint=True)

    @tool(annotations=read_only)
    def echo(text: str, ctx: Context) -> str:
        """Return the text unchanged."""
        call_log.record("echo", {"text": text}, ctx)
        return text

    @tool()
    def add(a: int, b: int, ctx: Context) -> int:
        """Add two integers."""
        call_log.record("add", {"a": a, "b": b}, ctx)
        return a + b

    @tool(annotations=read_only)
    def search(query: str, ctx: Context) -> str:
        """Search a tiny fake index; returns one result per line."""
        call_log.record("search", {"query": query}, ctx)
        words = query.lower().split()
        hits = [f"{title} - {url}" for title, url in FAKE_INDEX if any(w in title.lower() for w in words)]
        if not hits:
            hits = [f"{title} - {url}" for title, url in FAKE_INDEX[:2]]
        return f"{len(hits)} result(s) for {query!r}:\n" + "\n".join(hits)

    @tool()
    def fail(reason: str, ctx: Context) -> str:
        """Always fails: returns a tool error (isError: true) carrying the reason."""
        call_log.record("fail", {"reason": reason}, ctx)
        # ToolError -> CallToolResult(is_error=True, content=[text]) in SDK 2.x.
        raise ToolError(reason)

    @tool()
    async def countdown(steps: int, delay_ms: int, ctx: Context) -> str:
        """Send `steps` progress notifications `delay_ms` apart on the response stream, then
        return. Shows that SSE responses stream through Envoy and mcp-guard unbuffered."""
        call_log.record("countdown", {"steps": steps, "delay_ms": delay_ms}, ctx)
        steps = max(0, min(steps, 20))
        for i in range(steps):
            await ctx.report_progress(i + 1, steps, f"step {i + 1}/{steps}")
            await anyio.sleep(max(0, min(delay_ms, 5000)) / 1000)
        return f"counted {steps}"

    @tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True))
    def delete_repo(name: str, ctx: Context) -> str:
        """Pretend to delete a repository (a dangerous tool for the allowlist to deny)."""
        call_log.record("delete_repo", {"name": name}, ctx)
        return f"deleted {name}"

    if resumable:

        @tool()
        async def resume_echo(text: str, delay_ms: int, ctx: Context, closes: int = 1) -> str:
            """Close this request's SSE stream (SEP-1699) and wait delay_ms, `closes` times, then
            return the text: the result reaches the client on a GET reconnection with
            Last-Event-ID."""
            call_log.record("resume_echo", {"text": text, "delay_ms": delay_ms, "closes": closes}, ctx)
            for _ in range(max(1, min(closes, 5))):
                await ctx.close_sse_stream()
                await anyio.sleep(max(0, min(delay_ms, 5000)) / 1000)
            return text

        @tool()
        async def server_push(ctx: Context) -> str:
            """Server-initiated messages on the standalone GET stream: tools/list_changed, then
            roots/list; returns the client's root URIs."""
            call_log.record("server_push", {}, ctx)
            await ctx.session.send_tool_list_changed()
            roots = await ctx.session.list_roots()
            return "\n".join(str(r.uri) for r in roots.roots)

    if modern_tools:

        def ask_confirmation(name: str, ctx: Context) -> Elicit[Confirmation]:
            """The resolver of confirm_delete's `answer`: runs on every round (the SDK hands the
            client's answer in on the retry), so every round is logged."""
            answered = bool(ctx.input_responses)
            call_log.record("confirm_delete", {"name": name}, ctx, kind="round", answered=answered)
            return Elicit(f"Delete {name}?", Confirmation)

        @tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True))
        def confirm_delete(
            name: str,
            ctx: Context,
            answer: Annotated[ElicitationResult[Confirmation], Resolve(ask_confirmation)],
        ) -> str:
            """Pretend to delete `name` after the client confirmed it (asked by elicitation; at
            MCP 2026-07-28 as a multi-round-trip call: input_required, then the retry)."""
            call_log.record("confirm_delete", {"name": name}, ctx)
            if isinstance(answer, AcceptedElicitation) and answer.data.confirm:
                return f"deleted {name}"
            return f"kept {name}"

        @tool(annotations=read_only)
        def run_query(
            region: Annotated[str, Field(json_schema_extra={"x-mcp-header": REGION_HEADER})],
            sql: str,
            ctx: Context,
        ) -> str:
            """Pretend to run a query in a region; `region` is mirrored by 2026-07-28 clients
            into the Mcp-Param-Region header (x-mcp-header)."""
            call_log.record("run_query", {"region": region, "sql": sql}, ctx)
            return f"{region}: {sql}"

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

    # Listed resources and a second prompt, so resources/list and prompts/list have entries an
    # agent may and may not use (curated per agent by mcp-guard).
    @mcp.resource("demo://docs/index", mime_type="text/plain")
    def docs_index() -> str:
        """The demo documents' index."""
        return "mcp-guard demo documents"

    @mcp.resource("secret://keys", mime_type="text/plain")
    def secret_keys() -> str:
        """Pretend secrets (a resource the demo policy gives only to admin-agent)."""
        return "nothing secret here"

    @mcp.prompt()
    def incident_report(summary: str) -> str:
        """A prompt the demo policy gives only to admin-agent."""
        return f"Write an incident report: {summary}"

    if descriptions:
        raise ValueError(f"--describe names no tool of this server: {sorted(descriptions)}")
    return mcp


def parse_describe(values: list[str] | None) -> dict[str, str]:
    """--describe TOOL=TEXT arguments as {tool: text} (split at the first `=`; a later one for
    the same tool wins). A value without `=` or with an empty tool name is a ValueError."""
    out: dict[str, str] = {}
    for value in values or []:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise ValueError(f"--describe wants TOOL=TEXT, got {value!r}")
        out[name] = text
    return out


def add_definition_flags(parser: argparse.ArgumentParser) -> None:
    """--describe and --server-version (shared with examples/sdk/py2/server.py)."""
    parser.add_argument("--describe", action="append", metavar="TOOL=TEXT",
                        help="list TOOL with this description instead of its own (repeatable): restarting "
                             "with it changes the tool's definition, a 'rug pull' for tool pins to catch")
    parser.add_argument("--server-version", default="", metavar="V",
                        help="the serverInfo version of the initialize result (default: empty, the SDK's)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--json-response", action="store_true", help="answer POSTs with application/json, not SSE")
    parser.add_argument("--call-log", metavar="FILE", help="append one JSON line per tool invocation")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--resumable", action="store_true",
                        help="in-memory event store (priming events, Last-Event-ID replay) and the resume_echo tool")
    parser.add_argument("--retry-ms", type=int, default=100, metavar="N",
                        help="with --resumable: the retry: field of priming events (default 100)")
    parser.add_argument("--log-http-requests", action="store_true",
                        help="also log every HTTP request (method, path, MCP headers) to the call log")
    parser.add_argument("--modern-tools", action="store_true",
                        help="add confirm_delete (elicitation; input_required at 2026-07-28) and run_query "
                             "(x-mcp-header Region)")
    parser.add_argument("--public-lists-ttl-ms", type=int, metavar="N",
                        help="list results carry ttlMs N and cacheScope public (2026-07-28 clients)")
    add_definition_flags(parser)
    args = parser.parse_args()

    call_log = CallLog(args.call_log)
    try:
        server = build_server(call_log, args.log_level, resumable=args.resumable, modern_tools=args.modern_tools,
                              public_lists_ttl_ms=args.public_lists_ttl_ms, describe=parse_describe(args.describe),
                              server_version=args.server_version)  # fmt: skip
    except ValueError as exc:
        parser.error(str(exc))
    options: dict[str, Any] = {"streamable_http_path": "/mcp", "json_response": args.json_response}
    if args.resumable:
        options.update(event_store=InMemoryEventStore(), retry_interval=args.retry_ms)
    if not args.log_http_requests:
        server.run(transport="streamable-http", host=args.host, port=args.port, **options)
        return
    # The same app and uvicorn settings MCPServer.run uses, wrapped in the request logger.
    import uvicorn

    app = HttpRequestLog(server.streamable_http_app(host=args.host, **options), call_log)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower())


if __name__ == "__main__":
    main()
