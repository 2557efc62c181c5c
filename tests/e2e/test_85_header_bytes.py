"""Header values that are not UTF-8 (HTTP obs-text bytes, which Envoy passes through) must not
trap the Wasm VM. The proxy-wasm Rust SDK's `get_map_value` unwraps a UTF-8 conversion; before
mcp-guard read header values as bytes, one such request panicked the VM and every later request
on that worker got 503 (FAIL_CLOSED). No HTTP library sends these bytes, so raw sockets."""
from __future__ import annotations

import json
import socket
import time

from helpers import DENIED, audit_for

BODY = b'{"jsonrpc":"2.0","id":"ff-%d","method":"tools/call","params":{"name":"delete_repo","arguments":{}}}'


def raw_post(port: int, body: bytes, extra_headers: bytes = b"") -> tuple[int, bytes]:
    """One HTTP/1.1 POST on a fresh connection; (status, body). Bounded by a 10 s timeout."""
    head = (
        b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
        b"accept: application/json, text/event-stream\r\nconnection: close\r\n" % port
        + extra_headers
        + b"content-length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + body)
        data = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    return status, payload


def test_non_utf8_header_values_neither_trap_the_vm_nor_pass_as_identity(stack) -> None:
    port = stack.listen_port
    # A would-be admin id with a 0xFF byte: not a valid agent id, so the fallback applies
    # (`default` may call only echo) and delete_repo is denied.
    status, payload = raw_post(port, BODY % 0, b"x-agent-id: admin-agent\xff\r\n")
    assert status == 200, payload
    assert json.loads(payload)["error"]["code"] == DENIED
    (record,) = audit_for(stack, request_id="ff-0")
    assert record["agent_id"] == "anonymous"
    assert record["output_status"] == "denied"

    # Routing headers and the encoding header with such bytes are refused, not trusted.
    status, payload = raw_post(port, BODY % 1, b"x-agent-id: admin-agent\r\nmcp-name: delete\xffrepo\r\n")
    assert (status, json.loads(payload)["error"]["code"]) == (400, -32020)
    status, payload = raw_post(port, BODY % 2, b"content-encoding: \xff\r\n")
    assert status == 415, payload

    # Every worker still answers from the filter (a trapped VM would answer 503).
    for n in range(3, 13):
        status, payload = raw_post(port, BODY % n, b"x-agent-id: \xfe\xff\r\ntraceparent: \xff\r\n")
        assert status == 200, (n, status, payload)
        assert json.loads(payload)["error"]["code"] == DENIED
