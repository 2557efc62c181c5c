#!/usr/bin/env python3
"""Capture fuzz seed corpora from real MCP SDK traffic through Envoy + mcp-guard.

    .venv/bin/python scripts/capture_corpus.py [--out fuzz/corpus] [--wasm target/.../mcp_guard.wasm]

Starts two stacks with scripts/stack.py (the demo server answering POSTs with SSE, and with
JSON), drives the official MCP Python SDK client through each (initialize, list and call tools
including a tool error, a denied tool, a progress-reporting tool, prompts, resources, ping),
and records every HTTP exchange below the SDK: the request body as sent and the response body
exactly as received (SSE bytes untouched). It then writes, with content-hash file names:

  fuzz/corpus/request_parser/    POST bodies
  fuzz/corpus/sse_scanner/       text/event-stream response bodies
  fuzz/corpus/response_scanner/  response bodies prefixed with J (JSON), S (SSE) or T (a GET
                                 server stream, scanned keeping non-JSON events)
  fuzz/corpus/stream/            control bytes + request + separator + response (the format
                                 of the `stream` target, fuzz/src/lib.rs)

Raw SSE captures of other SDKs' servers in tests/e2e/data/sse/ (if any) are added to
sse_scanner and response_scanner too. Existing seeds are kept; identical ones are not
duplicated. Needs `make venv wasm`.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import httpx2  # noqa: E402
from mcp import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from stack import DEFAULT_POLICY, DEFAULT_WASM, Stack, free_port  # noqa: E402

# Must match fuzz/src/lib.rs (STREAM_SEPARATOR, STATUSES, CONTENT_TYPES, control bytes).
STREAM_SEPARATOR = b"\n--mcp-guard-fuzz-response--\n"
STATUS_INDEX = {"200": 0, "202": 2, "400": 3, "404": 4, "413": 5, "429": 6, "500": 8, "503": 9, "204": 15}
CONTENT_TYPE_INDEX = {"text/event-stream": 0, "application/json": 1}
OTHER_SDK_SSE = REPO / "tests" / "e2e" / "data" / "sse"
MAX_SEED_BYTES = 64 * 1024


@dataclass
class Exchange:
    method: str
    request: bytes
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    response: bytearray = field(default_factory=bytearray)

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


class TeeStream(httpx2.AsyncByteStream):
    """Passes the response body through, keeping a copy of every byte."""

    def __init__(self, inner: httpx2.AsyncByteStream, exchange: Exchange) -> None:
        self.inner = inner
        self.exchange = exchange

    async def __aiter__(self):
        async for chunk in self.inner:
            self.exchange.response.extend(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class CaptureTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport that records each request body and raw response body."""

    def __init__(self, exchanges: list[Exchange]) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.exchanges = exchanges

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        exchange = Exchange(request.method, bytes(body))
        self.exchanges.append(exchange)
        response = await self.inner.handle_async_request(request)
        exchange.status = response.status_code
        exchange.headers = {k.lower(): v for k, v in response.headers.items()}
        response.stream = TeeStream(response.stream, exchange)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def drive(url: str, agent: str, exchanges: list[Exchange]) -> None:
    """One SDK session doing what real clients do. As demo-agent: a tool error (isError) and a
    call mcp-guard denies; as admin-agent: a tool that streams progress notifications."""
    transport = CaptureTransport(exchanges)
    async with httpx2.AsyncClient(
        transport=transport, headers={"x-agent-id": agent}, timeout=httpx2.Timeout(30.0)
    ) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                await session.list_tools()
                await session.call_tool("echo", {"text": "hello \u00e9\u4e16 \"quoted\" \\ back"})
                if agent == "admin-agent":
                    await session.call_tool("countdown", {"steps": 3, "delay_ms": 1})
                    await session.list_resource_templates()
                    await session.read_resource("demo://docs/readme")
                    await session.send_ping()
                    return
                await session.call_tool("add", {"a": 2, "b": 40})
                await session.call_tool("search", {"query": "mcp"})
                await session.call_tool("fail", {"reason": "boom"})  # isError: true
                try:
                    await session.call_tool("delete_repo", {"name": "x"})  # denied by mcp-guard
                except Exception as e:  # noqa: BLE001  the SDK raises on the JSON-RPC error
                    print(f"  denied as expected: {e}")
                await session.list_prompts()
                await session.get_prompt("greet", {"name": "Ada"})


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class Corpus:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.added: dict[str, int] = {}

    def add(self, target: str, data: bytes) -> None:
        if not data or len(data) > MAX_SEED_BYTES:
            return
        d = self.root / target
        d.mkdir(parents=True, exist_ok=True)
        path = d / digest(data)
        if not path.exists():
            path.write_bytes(data)
            self.added[target] = self.added.get(target, 0) + 1


def stream_control(ex: Exchange, session: bool) -> bytes:
    """Control bytes of the `stream` target for a captured exchange (fuzz/src/lib.rs)."""
    method = {"POST": 0, "GET": 2, "DELETE": 3}.get(ex.method, 0)
    c0 = method | (0x20 if not ex.request else 0)  # agent 0 = demo-agent; empty body ends at headers
    c1 = 0x04 if session else 0  # policy 0 (the demo policy), mcp-session-id on the request
    c3 = STATUS_INDEX.get(str(ex.status), 0)
    c4 = CONTENT_TYPE_INDEX.get(ex.media_type, 5)
    c5 = 0x01 if not ex.response else 0  # no body: the response ends at its headers
    return bytes([c0, c1, 4, c3, c4, c5, 5, 0])


def write_corpus(corpus: Corpus, exchanges: list[Exchange]) -> None:
    session = False
    for ex in exchanges:
        body = bytes(ex.response)
        if ex.method == "POST" and ex.request:
            corpus.add("request_parser", ex.request)
        if ex.media_type == "text/event-stream":
            corpus.add("sse_scanner", body)
            corpus.add("response_scanner", (b"T" if ex.method == "GET" else b"S") + body)
        elif ex.media_type == "application/json":
            corpus.add("response_scanner", b"J" + body)
        if ex.method in ("POST", "GET"):
            corpus.add("stream", stream_control(ex, session) + ex.request + STREAM_SEPARATOR + body)
        session = session or "mcp-session-id" in ex.headers


def other_sdk_captures(corpus: Corpus) -> None:
    if not OTHER_SDK_SSE.is_dir():
        return
    for path in sorted(OTHER_SDK_SSE.iterdir()):
        if path.is_file():
            data = path.read_bytes()
            corpus.add("sse_scanner", data)
            # A server stream (GET) is scanned keeping non-JSON events (the legacy endpoint).
            corpus.add("response_scanner", (b"T" if "get-stream" in path.name else b"S") + data)


def capture(wasm: Path, json_response: bool) -> list[Exchange]:
    exchanges: list[Exchange] = []
    with tempfile.TemporaryDirectory(prefix="mcp-guard-capture-") as tmp:
        stack = Stack(
            workdir=Path(tmp),
            listen_port=free_port(),
            admin_port=free_port(),
            upstream_port=free_port(),
            policy=DEFAULT_POLICY,
            wasm=wasm,
            component_log_level=None,
            server_args=["--json-response"] if json_response else [],
        )
        with stack:
            for agent in ("demo-agent", "admin-agent"):
                asyncio.run(drive(stack.url, agent, exchanges))
    return exchanges


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "fuzz" / "corpus"))
    parser.add_argument("--wasm", default=str(DEFAULT_WASM))
    args = parser.parse_args(argv)
    corpus = Corpus(Path(args.out))
    for json_response in (False, True):
        exchanges = capture(Path(args.wasm), json_response)
        kinds = sorted({f"{e.method} {e.status} {e.media_type or '-'}" for e in exchanges})
        print(f"{'JSON' if json_response else 'SSE'} stack: {len(exchanges)} exchanges: {', '.join(kinds)}")
        write_corpus(corpus, exchanges)
    other_sdk_captures(corpus)
    for target in ("request_parser", "sse_scanner", "response_scanner", "stream"):
        files = list((corpus.root / target).glob("*"))
        size = sum(f.stat().st_size for f in files)
        print(f"{target}: {len(files)} seeds ({corpus.added.get(target, 0)} new), {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
