#!/usr/bin/env python3
"""A raw HTTP/1.1 upstream for test_63: answers a `subscriptions/listen` POST with an SSE stream
no MCP SDK server would send (stdlib asyncio only).

    python tests/e2e/listen_raw_upstream.py --host 127.0.0.1 --port N [--call-log FILE]

The stream, in chunks cut at awkward places (inside a CRLF, inside a member name), for the
request id as sent:
  1. notifications/subscriptions/acknowledged honouring demo://docs/a and secret://keys;
  2. notifications/resources/updated with `uri` twice: demo://docs/a first, secret://keys last
     (the Python SDK and JSON.parse keep the last);
  3. notifications/resources/updated for `secret:\\/\\/keys` (escaped);
  4. notifications/resources/updated for secret://keys padded past 4 MiB (too large to hold);
  5. notifications/resources/updated for demo://docs/a (the agent may read it);
  6. notifications/tools/list_changed;
  7. the listen request's result (the server ends the subscription), then the end of the body.
Any other POST gets 202 with no body.
"""
from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

PAD = 5 * 1024 * 1024


def event(doc: str) -> bytes:
    return f"event: message\r\ndata: {doc}\r\n\r\n".encode()


def stream_chunks(rid: Any) -> list[bytes]:
    sub = json.dumps(rid)
    meta = f'"_meta":{{"io.modelcontextprotocol/subscriptionId":{sub}}}'
    upd = '{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{' + meta + ",PARAMS}}"
    events = [
        event(
            '{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{'
            + meta
            + ',"notifications":{"toolsListChanged":true,"resourceSubscriptions":["demo://docs/a","secret://keys"]}}}'
        ),
        event(upd.replace("PARAMS", '"uri":"demo://docs/a","uri":"secret://keys"')),
        event(upd.replace("PARAMS", '"uri":"secret:\\/\\/keys"')),
        event(upd.replace("PARAMS", '"uri":"secret://keys","pad":"' + "x" * PAD + '"')),
        event(upd.replace("PARAMS", '"uri":"demo://docs/a"')),
        event('{"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{' + meta + "}}"),
        event('{"jsonrpc":"2.0","id":' + sub + ',"result":{"resultType":"complete",' + meta + "}}"),
    ]
    body = b"".join(events)
    # Cut inside the first CRLF pair that ends an event, inside a member name, and in the pad.
    cuts = sorted({body.index(b"\r\n\r\n") + 3, body.index(b'"uri"') + 2, body.index(b"xxxx") + 1000, len(body) - 10})
    out, start = [], 0
    for cut in cuts:
        out.append(body[start:cut])
        start = cut
    out.append(body[start:])
    return [c for c in out if c]


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            try:
                message = json.loads(body)
            except ValueError:
                message = {}
            if isinstance(message, dict) and message.get("method") == "subscriptions/listen":
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
                )
                for chunk in stream_chunks(message.get("id")):
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await writer.drain()
                    await asyncio.sleep(0.05)
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main_async(host: str, port: int) -> None:
    server = await asyncio.start_server(handle, host, port, limit=1 << 20)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--call-log", metavar="FILE")  # accepted for the stack; unused
    args = parser.parse_args()
    asyncio.run(main_async(args.host, args.port))


if __name__ == "__main__":
    main()
