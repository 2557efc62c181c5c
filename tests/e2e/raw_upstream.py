#!/usr/bin/env python3
"""A raw HTTP/1.1 test upstream for what no MCP SDK would send (stdlib asyncio only).

    python tests/e2e/raw_upstream.py --host 127.0.0.1 --port N --call-log FILE

Started by the e2e tests through `start_stack(..., server_command=[...])` in place of the demo
server. It logs every request that reaches it (one JSON line in FILE, fsynced before it
answers), so a test can prove that a refused request never arrived:

    {"http": "POST", "path": "/mcp", "headers": {name: [values]}, "body_len": N,
     "method": "tools/call", "id": <id as sent>, "tool": "echo", "arguments": {...}}

("method"/"id"/"tool"/"arguments" only when the body is a JSON-RPC object; "tool" only for
tools/call, so Stack.calls() lists the tool calls as for the demo server.)

It answers `initialize` (with an Mcp-Session-Id), notifications (202) and DELETE like a minimal
server. A `tools/call` is answered with the exact bytes of the scenario named by
`params.arguments.scenario` (see SCENARIOS), echoing the request id (same JSON value and
type; json.dumps escapes non-ASCII as \\uXXXX). One body byte per write means one chunk per write.
`GET /mcp?events=<url-encoded JSON list of {"id": ..., "is_error": bool}>` is a server stream
carrying one result event per entry (for cross-stream correlation), then its end; an entry
`{"id": ..., "list": NAME}` carries list scenario NAME's JSON body instead (x-list-scenario
`accepted` answers the tools/list POST 202, for its answer to come on the GET stream). A
`tools/list` is answered with two tools, echo and delete_repo, as JSON; with
`params.cursor` "gzip-anyway" gzip-compressed whatever the request's Accept-Encoding says (a
server that ignores it). A `tools/list` with an `x-list-scenario` header is answered with the
same two tools as that scenario's exact bytes (see list_scenario: not UTF-8, a BOM, UTF-16,
another content type, trailing bytes, another shape, another id spelling, cacheScope public),
or (`params`, `params-sse`) with tools whose inputSchema carries x-mcp-header markings.
A `tools/call` with `arguments.scenario` "input-required" is a multi round-trip tool (MCP
2026-07-28, see input_required): without `inputResponses` / `requestState` in its params it
is answered `resultType: "input_required"`, else with a complete result naming the echoed state.
"""
from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import socket
import struct
import sys
import urllib.parse
import uuid
from typing import Any, Awaitable, Callable

SSE = "text/event-stream"
BIG_EVENT_BYTES = 30 * 1024 * 1024  # the text of the sse-30mb result


def result_json(rid: Any, text: str, is_error: bool = False) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": rid,
         "result": {"content": [{"type": "text", "text": text}], "isError": is_error}},
        separators=(",", ":"),
    ).encode()  # fmt: skip


def other_type(rid: Any) -> Any:
    """The same id with the other JSON type: 1 -> "1", "1" -> 1."""
    if isinstance(rid, str):
        return int(rid) if rid.lstrip("-").isdigit() else rid + "-x"
    return json.dumps(rid)


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.request_headers: dict[str, list[str]] = {}

    async def head(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await self.writer.drain()

    async def chunk(self, data: bytes) -> None:
        if data:
            self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await self.writer.drain()

    async def end_chunks(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    async def sse(self, body: bytes, piece: int | None = None, pause: float = 0.0) -> None:
        """A chunked text/event-stream response carrying `body`, `piece` bytes per write."""
        await self.head(200, "OK", [("content-type", SSE), ("cache-control", "no-cache"),
                                    ("transfer-encoding", "chunked")])  # fmt: skip
        step = piece or len(body)
        for i in range(0, len(body), step):
            await self.chunk(body[i : i + step])
            if pause:
                await asyncio.sleep(pause)
        await self.end_chunks()

    async def plain(self, status: int, reason: str, body: bytes, ctype: str = "text/plain") -> None:
        await self.head(status, reason, [("content-type", ctype), ("content-length", str(len(body)))])
        self.writer.write(body)
        await self.writer.drain()

    def reset(self) -> None:
        """Close the TCP connection with a RST (SO_LINGER 0)."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Scenario = Callable[[Conn, Any], Awaitable[bool]]  # returns False when the connection is gone


async def sse_bytewise(c: Conn, rid: Any) -> bool:
    # One byte per chunk, each its own write and TCP segment (TCP_NODELAY, a pause between).
    event = b"event: message\r\ndata: " + result_json(rid, "bytewise") + b"\r\n\r\n"
    await c.sse(event, piece=1, pause=0.002)
    return True


async def sse_cr_only(c: Conn, rid: Any) -> bool:
    await c.sse(b"event: message\rdata: " + result_json(rid, "cr only") + b"\r\r")
    return True


async def sse_comments_retry(c: Conn, rid: Any) -> bool:
    body = (b": ping - keepalive\n\nretry: 1500\n\n: a comment inside the event\nretry: 3000\n"
            b"event: message\nid: evt-7\ndata: " + result_json(rid, "after comments") + b"\n\n")  # fmt: skip
    await c.sse(body, piece=16, pause=0.001)
    return True


async def sse_priming(c: Conn, rid: Any) -> bool:
    await c.sse(b"id: prime-0\ndata: \n\n", piece=None)
    return True


async def sse_priming_then_result(c: Conn, rid: Any) -> bool:
    body = b"id: prime-0\ndata: \n\n" + b"id: evt-1\nevent: message\ndata: " + result_json(rid, "primed") + b"\n\n"
    await c.sse(body)
    return True


async def sse_multiline_data(c: Conn, rid: Any) -> bool:
    doc = result_json(rid, "multi-line")
    mid = doc.index(b',"result"')
    await c.sse(b"data: " + doc[:mid] + b"\r\ndata: " + doc[mid:] + b"\r\n\r\n")
    return True


async def sse_30mb(c: Conn, rid: Any) -> bool:
    head = b'event: message\r\ndata: {"jsonrpc":"2.0","id":' + json.dumps(rid).encode() + \
        b',"result":{"content":[{"type":"text","text":"'
    tail = b'"}],"isError":false}}\r\n\r\n'
    await c.head(200, "OK", [("content-type", SSE), ("transfer-encoding", "chunked")])
    await c.chunk(head)
    block = b"A" * (256 * 1024)
    left = BIG_EVENT_BYTES
    while left > 0:
        n = min(left, len(block))
        await c.chunk(block[:n])
        left -= n
    await c.chunk(tail)
    await c.end_chunks()
    return True


async def tool_error(c: Conn, rid: Any) -> bool:
    await c.sse(b"event: message\r\ndata: " + result_json(rid, "it failed", is_error=True) + b"\r\n\r\n")
    return True


async def text_404(c: Conn, rid: Any) -> bool:
    await c.plain(404, "Not Found", b"Not Found")
    return True


async def html_500(c: Conn, rid: Any) -> bool:
    await c.plain(500, "Internal Server Error", b"<html><body>oops</body></html>", "text/html")
    return True


async def accepted_202(c: Conn, rid: Any) -> bool:
    await c.plain(202, "Accepted", b"Accepted")
    return True


async def reset_mid_event(c: Conn, rid: Any) -> bool:
    await c.head(200, "OK", [("content-type", SSE), ("transfer-encoding", "chunked")])
    doc = result_json(rid, "never finished")
    await c.chunk(b"event: message\r\ndata: " + doc[: len(doc) // 2])
    await asyncio.sleep(0.3)
    c.reset()
    return False


async def close_mid_event(c: Conn, rid: Any) -> bool:
    """FIN (not RST) inside an unterminated chunked body."""
    await c.head(200, "OK", [("content-type", SSE), ("transfer-encoding", "chunked")])
    doc = result_json(rid, "never finished")
    await c.chunk(b"event: message\r\ndata: " + doc[: len(doc) // 2])
    await asyncio.sleep(0.3)
    c.writer.close()
    return False


async def wrong_id_type(c: Conn, rid: Any) -> bool:
    await c.sse(b"event: message\r\ndata: " + result_json(other_type(rid), "wrong id type") + b"\r\n\r\n")
    return True


async def wrong_then_right(c: Conn, rid: Any) -> bool:
    """A success for the other-typed id first, then this request's own response (a tool error)."""
    body = (b"event: message\r\ndata: " + result_json(other_type(rid), "not yours") + b"\r\n\r\n"
            b"event: message\r\ndata: " + result_json(rid, "yours", is_error=True) + b"\r\n\r\n")  # fmt: skip
    await c.sse(body)
    return True


async def sse_slow(c: Conn, rid: Any) -> bool:
    """A progress notification at once, the result 2 s later (for a client that leaves)."""
    await c.head(200, "OK", [("content-type", SSE), ("transfer-encoding", "chunked")])
    note = {"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": "p", "progress": 1, "total": 2}}  # fmt: skip
    await c.chunk(b"event: message\r\ndata: " + json.dumps(note).encode() + b"\r\n\r\n")
    await asyncio.sleep(2.0)
    await c.chunk(b"event: message\r\ndata: " + result_json(rid, "too late") + b"\r\n\r\n")
    await c.end_chunks()
    return True


async def json_maybe_gzip(c: Conn, body: bytes, compress: bool) -> bool:
    """A 200 application/json answer with `body`, gzip-compressed (content-encoding: gzip) when
    `compress`."""
    headers = [("content-type", "application/json")]
    if compress:
        body = gzip.compress(body)
        headers.append(("content-encoding", "gzip"))
    await c.head(200, "OK", headers + [("content-length", str(len(body)))])
    c.writer.write(body)
    await c.writer.drain()
    return True


async def json_gzip(c: Conn, rid: Any) -> bool:
    """A JSON result, gzip-compressed when the request's Accept-Encoding allows gzip (what a
    server behind a compression middleware does), else plain."""
    accepts_gzip = "gzip" in ",".join(c.request_headers.get("accept-encoding", [])).lower()
    return await json_maybe_gzip(c, result_json(rid, "compressed"), accepts_gzip)


async def json_id_last(c: Conn, rid: Any) -> bool:
    doc = b'{"jsonrpc":"2.0","result":{"content":[{"type":"text","text":"id last"}],"isError":false},"id":' + \
        json.dumps(rid).encode() + b"}"
    await c.plain(200, "OK", doc, "application/json")
    return True


async def json_batch_array(c: Conn, rid: Any) -> bool:
    await c.plain(200, "OK", b"[" + result_json(rid, "in an array") + b"]", "application/json")
    return True


async def nested_decoys(c: Conn, rid: Any) -> bool:
    """id / isError / error members nested inside the result must not count."""
    doc = {"jsonrpc": "2.0", "id": rid, "result": {
        "content": [{"type": "text", "text": "decoys", "id": "other", "isError": True}],
        "structuredContent": {"error": {"code": -1}, "id": rid, "isError": True}, "isError": False}}  # fmt: skip
    await c.sse(b"event: message\ndata: " + json.dumps(doc).encode() + b"\n\n")
    return True


async def server_request_same_id(c: Conn, rid: Any) -> bool:
    """A server-to-client request that happens to reuse the client's id, then the response."""
    req = {"jsonrpc": "2.0", "id": rid, "method": "sampling/createMessage",
           "params": {"messages": [], "maxTokens": 1}}  # fmt: skip
    body = (b"event: message\ndata: " + json.dumps(req).encode() + b"\n\n"
            b"event: message\ndata: " + result_json(rid, "after a server request", is_error=True) + b"\n\n")  # fmt: skip
    await c.sse(body)
    return True


async def jsonrpc_error(c: Conn, rid: Any) -> bool:
    doc = {"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": "bad arguments"}}
    await c.sse(b"event: message\r\ndata: " + json.dumps(doc).encode() + b"\r\n\r\n")
    return True


async def json_ok(c: Conn, rid: Any) -> bool:
    await c.plain(200, "OK", result_json(rid, "json ok"), "application/json")
    return True


LIST_TOOLS = [
    {"name": "echo", "description": "Echo the text", "inputSchema": {"type": "object"}},
    {"name": "delete_repo", "description": "Deletes a repository", "inputSchema": {"type": "object"}},
]
BOM = b"\xef\xbb\xbf"


def list_json(rid: Any, **result: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rid, "result": {"tools": LIST_TOOLS, **result}},
                      separators=(",", ":")).encode()  # fmt: skip


def sse_event(doc: bytes) -> bytes:
    return b"event: message\r\ndata: " + doc + b"\r\n\r\n"


def with_id(doc: bytes, rid: Any, spelled: bytes) -> bytes:
    """`doc` with its id spelled `spelled` (the same value in another spelling, or another)."""
    return doc.replace(b'"id":' + json.dumps(rid).encode(), b'"id":' + spelled, 1)


# Tools whose inputSchema marks properties with x-mcp-header (MCP 2026-07-28): execute_sql
# (Region, a string; Limit, an integer, nested under options), broken (an annotation on a
# `number`, which makes the tool definition invalid), unlisted_elsewhere (none).
PARAM_TOOLS = [
    {"name": "execute_sql", "inputSchema": {"type": "object", "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "options": {"type": "object", "properties": {
            "limit": {"type": "integer", "x-mcp-header": "Limit"}}},
        "query": {"type": "string"}}, "required": ["region", "query"]}},
    {"name": "broken", "inputSchema": {"type": "object", "properties": {
        "ratio": {"type": "number", "x-mcp-header": "Ratio"}}}},
    {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
]  # fmt: skip
# Listed only on SSE: proves markings are learned from an event-stream answer too.
PARAM_TOOLS_SSE = [
    {"name": "zone_lookup", "inputSchema": {"type": "object", "properties": {
        "zone": {"type": "string", "x-mcp-header": "Zone"}}}},
]  # fmt: skip


def params_json(rid: Any, tools: list[dict]) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rid, "result": {"tools": tools}}, separators=(",", ":")).encode()


JSON = [("content-type", "application/json")]
SSE_HEADERS = [("content-type", SSE), ("cache-control", "no-cache")]


def list_scenario(name: str, rid: Any) -> tuple[list[tuple[str, str]], bytes] | None:
    """The headers (besides content-length) and body of the tools/list answer named by the
    request's `x-list-scenario` header: the two tools in a form a client still reads but that
    is not exactly one UTF-8 JSON(-RPC) document of the expected shape and id."""
    doc = list_json(rid)
    n = rid if isinstance(rid, int) else 7
    table: dict[str, tuple[list[tuple[str, str]], bytes]] = {
        "plain": (JSON, doc),
        "plain-sse": (SSE_HEADERS, sse_event(doc)),
        "bad-utf8-json": (JSON, doc.replace(b"Deletes a", b"Deletes \xff a")),
        "bad-utf8-sse": (SSE_HEADERS, sse_event(doc.replace(b"Deletes a", b"Deletes \xc3\x28 a"))),
        "bom-json": (JSON, BOM + doc),
        "charset-utf16": ([("content-type", "application/json; charset=utf-16")], doc.decode().encode("utf-16")),
        "ctype-prefix": ([("content-type", "application/json-x")], doc),
        "ctype-text-plain": ([("content-type", "text/plain")], doc),
        "ctype-missing": ([], doc),
        "ctype-two-headers": ([("content-type", "text/plain"), ("content-type", "application/json")], doc),
        "ctype-merged": ([("content-type", "text/plain, application/json")], doc),
        "trailing-garbage": (JSON, doc + b"\n}x"),
        "second-document": (JSON, list_json(rid, note="first") + list_json(rid)),
        "tools-object": (JSON, json.dumps({"jsonrpc": "2.0", "id": rid, "result": {
            "tools": {t["name"]: t for t in LIST_TOOLS}}}).encode()),  # fmt: skip
        "id-string": (JSON, with_id(doc, rid, json.dumps(str(rid)).encode())),
        "id-float": (JSON, with_id(doc, rid, b"%d.0" % n)),
        "id-exponent": (JSON, with_id(doc, rid, b"%de0" % n)),
        "id-other-sse": (SSE_HEADERS, sse_event(with_id(doc, rid, b"424242"))),
        "cache-public": (JSON, list_json(rid, ttlMs=60000, cacheScope="public")),
        "params": (JSON, params_json(rid, PARAM_TOOLS)),
        "params-sse": (SSE_HEADERS, sse_event(params_json(rid, PARAM_TOOLS_SSE))),
    }
    return table.get(name)


async def list_answer(c: Conn, rid: Any, name: str) -> bool:
    if name == "accepted":  # answered later, on the session's GET stream
        await c.plain(202, "Accepted", b"Accepted")
        return True
    answer = list_scenario(name, rid)
    if answer is None:
        await c.plain(400, "Bad Request", b"unknown list scenario")
        return True
    headers, body = answer
    await c.head(200, "OK", headers + [("content-length", str(len(body)))])
    c.writer.write(body)
    await c.writer.drain()
    return True


def deep_schema(depth: int) -> str:
    """A JSON Schema nested `depth` levels deep (objects of `properties`)."""
    return '{"type":"object","properties":{"p":' * (depth // 2) + '{"type":"string"}' + "}}" * (depth // 2)


def exact(template: str) -> Callable[[str], Scenario]:
    """Scenarios answering `template` (with RID the request id as JSON) byte for byte, as
    application/json or as one SSE event."""
    def make(kind: str) -> Scenario:
        async def answer(c: Conn, rid: Any) -> bool:
            doc = template.replace("RID", json.dumps(rid)).encode()
            if kind == "json":
                await c.plain(200, "OK", doc, "application/json")
            else:
                await c.sse(b"event: message\r\ndata: " + doc + b"\r\n\r\n")
            return True
        return answer
    return make


# Member names spelled with escapes (any JSON reader decodes them), a deep but valid result,
# and a duplicated isError (the SDKs keep the last, serde_json refuses the message).
ESCAPED_TOOL_ERROR = exact(r'{"jsonrpc":"2.0","id":RID,"r\u0065sult":{"content":[{"type":"text","text":"escaped"}],'
                           r'"is\u0045rror":true}}')  # fmt: skip
ESCAPED_IS_ERROR = exact(r'{"jsonrpc":"2.0","id":RID,"result":{"content":[{"type":"text","text":"escaped"}],'
                         r'"is\u0045rror":true}}')  # fmt: skip
ESCAPED_ERROR = exact(r'{"jsonrpc":"2.0","id":RID,"\u0065rror":{"code":-32000,"message":"escaped"}}')
DEEP_SCHEMA = exact('{"jsonrpc":"2.0","id":RID,"result":{"content":[{"type":"text","text":"deep"}],'
                    '"structuredContent":{"inputSchema":' + deep_schema(400) + '},"isError":false}}')  # fmt: skip
DUPLICATE_IS_ERROR = exact('{"jsonrpc":"2.0","id":RID,"result":{"content":[{"type":"text","text":"duplicate"}],'
                           '"isError":true,"isError":false}}')  # fmt: skip


async def input_required(c: Conn, rid: Any, params: dict, args: dict) -> bool:
    """A multi round-trip tool (MCP 2026-07-28 basic/patterns/mrtr): a first call is answered
    `resultType: "input_required"` with one elicitation request and `requestState`
    `args["state"]` (default "v1.opaque-state"; "" sends none); a retry (params with
    `inputResponses` or `requestState`) gets a complete result whose text names the state it
    echoed. Like a server that does not verify the state (mcp-guard must not rely on it). As one
    SSE event when `args["sse"]` is true, else application/json."""
    if "inputResponses" in params or "requestState" in params:
        result: dict[str, Any] = {"resultType": "complete", "content": [
            {"type": "text", "text": f"done with {params.get('requestState')!r}"}], "isError": False}  # fmt: skip
    else:
        result = {"resultType": "input_required", "inputRequests": {"confirm": {
            "method": "elicitation/create",
            "params": {"mode": "form", "message": "Proceed?",
                       "requestedSchema": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}}}}  # fmt: skip
        state = args.get("state", "v1.opaque-state")
        if state:
            result["requestState"] = state
    doc = json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}, separators=(",", ":")).encode()
    if args.get("sse"):
        await c.sse(b"event: message\r\ndata: " + doc + b"\r\n\r\n")
    else:
        await c.plain(200, "OK", doc, "application/json")
    return True


SCENARIOS: dict[str, Scenario] = {
    "sse-bytewise": sse_bytewise,
    "sse-cr-only": sse_cr_only,
    "sse-comments-retry": sse_comments_retry,
    "sse-priming-only": sse_priming,
    "sse-priming-then-result": sse_priming_then_result,
    "sse-multiline-data": sse_multiline_data,
    "sse-30mb": sse_30mb,
    "tool-error": tool_error,
    "text-404": text_404,
    "html-500": html_500,
    "accepted-202": accepted_202,
    "reset-mid-event": reset_mid_event,
    "close-mid-event": close_mid_event,
    "wrong-id-type": wrong_id_type,
    "wrong-then-right": wrong_then_right,
    "sse-slow": sse_slow,
    "json-gzip": json_gzip,
    "json-id-last": json_id_last,
    "json-batch-array": json_batch_array,
    "nested-decoys": nested_decoys,
    "server-request-same-id": server_request_same_id,
    "jsonrpc-error": jsonrpc_error,
    "json-ok": json_ok,
    "escaped-tool-error-json": ESCAPED_TOOL_ERROR("json"),
    "escaped-tool-error-sse": ESCAPED_TOOL_ERROR("sse"),
    "escaped-error-json": ESCAPED_ERROR("json"),
    "escaped-error-sse": ESCAPED_ERROR("sse"),
    "deep-schema-json": DEEP_SCHEMA("json"),
    "deep-schema-sse": DEEP_SCHEMA("sse"),
    "duplicate-is-error-json": DUPLICATE_IS_ERROR("json"),
    "duplicate-is-error-sse": DUPLICATE_IS_ERROR("sse"),
    "escaped-is-error-json": ESCAPED_IS_ERROR("json"),
    "escaped-is-error-sse": ESCAPED_IS_ERROR("sse"),
}


class Server:
    def __init__(self, call_log: str | None) -> None:
        self.call_log = call_log

    def log(self, entry: dict) -> None:
        if not self.call_log:
            return
        with open(self.call_log, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(reader, writer)
        try:
            while await self.one(conn):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()

    async def one(self, c: Conn) -> bool:
        line = await c.reader.readline()
        if not line:
            return False
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, list[str]] = {}
        while True:
            h = (await c.reader.readline()).decode("latin-1").rstrip("\r\n")
            if not h:
                break
            name, _, value = h.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        body = b""
        if "chunked" in ",".join(headers.get("transfer-encoding", [])).lower():
            while True:
                size = int((await c.reader.readline()).split(b";")[0].strip(), 16)
                if size == 0:
                    while (await c.reader.readline()).strip():  # trailers
                        pass
                    break
                body += await c.reader.readexactly(size)
                await c.reader.readexactly(2)
        elif "content-length" in headers:
            body = await c.reader.readexactly(int(headers["content-length"][0]))

        c.request_headers = headers
        entry: dict[str, Any] = {"http": method, "path": path, "headers": headers, "body_len": len(body)}
        msg: Any = None
        try:
            msg = json.loads(body) if body else None
        except ValueError:
            pass
        if isinstance(msg, dict):
            entry["method"] = msg.get("method")
            if "id" in msg:
                entry["id"] = msg["id"]
            params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
            if msg.get("method") == "tools/call":
                entry["tool"] = params.get("name")
                entry["arguments"] = params.get("arguments")
        self.log(entry)

        if method == "GET" and "?events=" in path:
            # A server stream carrying the responses the query names, then its end:
            # GET /mcp?events=<url-encoded JSON list of {"id": ..., "is_error": bool}>
            # An entry with "list" carries that list scenario's JSON body (list_scenario) as
            # its event's data instead: {"id": ..., "list": "plain"}.
            spec = json.loads(urllib.parse.unquote(path.split("?events=", 1)[1]))
            body = b"".join(sse_event(list_scenario(e["list"], e["id"])[1]) if "list" in e else
                            b"event: message\r\ndata: " + result_json(e["id"], "on the GET stream",
                            e.get("is_error", False)) + b"\r\n\r\n" for e in spec)  # fmt: skip
            await c.sse(body, piece=None)
            return True
        if method != "POST":
            await c.plain(200 if method == "DELETE" else 405, "OK" if method == "DELETE" else "Method Not Allowed", b"")
            return True
        if not isinstance(msg, dict):
            await c.plain(400, "Bad Request", b"not a JSON-RPC object")
            return True
        rid = msg.get("id")
        if "id" not in msg:
            await c.plain(202, "Accepted", b"")
            return True
        if msg.get("method") == "initialize":
            doc = json.dumps({"jsonrpc": "2.0", "id": rid, "result": {
                "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                "serverInfo": {"name": "raw-upstream", "version": "0"}}}).encode()  # fmt: skip
            await c.head(200, "OK", [("content-type", "application/json"), ("content-length", str(len(doc))),
                                     ("mcp-session-id", uuid.uuid4().hex)])  # fmt: skip
            c.writer.write(doc)
            await c.writer.drain()
            return True
        params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
        if msg.get("method") == "tools/list" and headers.get("x-list-scenario"):
            return await list_answer(c, rid, headers["x-list-scenario"][0])
        if msg.get("method") == "tools/list":
            doc = json.dumps({"jsonrpc": "2.0", "id": rid, "result": {"tools": [
                {"name": "echo", "inputSchema": {"type": "object"}},
                {"name": "delete_repo", "inputSchema": {"type": "object"}}]}}).encode()  # fmt: skip
            return await json_maybe_gzip(c, doc, params.get("cursor") == "gzip-anyway")
        args = params.get("arguments")
        if isinstance(args, dict) and args.get("scenario") == "input-required":
            return await input_required(c, rid, params, args)
        scenario = SCENARIOS.get(args.get("scenario", "json-ok") if isinstance(args, dict) else "json-ok")
        if scenario is None:
            await c.plain(400, "Bad Request", b"unknown scenario")
            return True
        return await scenario(c, rid)


async def main_async(host: str, port: int, call_log: str | None) -> None:
    srv = Server(call_log)
    server = await asyncio.start_server(srv.handle, host, port, limit=1 << 20)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--call-log")
    args = parser.parse_args()
    try:
        asyncio.run(main_async(args.host, args.port, args.call_log))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
