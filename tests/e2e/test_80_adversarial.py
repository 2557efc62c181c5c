"""Adversarial requests against the real Envoy + mcp-guard, with the official-SDK demo server
upstream (examples/demo_server.py): duplicate members, escapes, ids, body framing (1-byte
HTTP/1.1 chunks, HTTP/2 with trailers), Content-Encoding, Content-Type, body size, BOM,
trailing bytes, nesting depth, and a client that disconnects mid-response.

Every refused request is shown absent upstream twice: Envoy's upstream request counter did
not move, and the server's call log has no entry for the test's agent. Each test uses its
own agent id(s) (agents without an entry get the `default` allowlist: echo only), so audit
records are found by agent.
"""
from __future__ import annotations

import copy
import gzip
import json
import socket
import time
from typing import Any

import anyio
import httpx2
import pytest
from conftest import start_stack
from helpers import (
    ACCEPT,
    DENIED,
    HTTP_TIMEOUT,
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    PROTOCOL_VERSION,
    RawResponse,
    RawSession,
    assert_access_log_valid,
    audit_for,
    parse_messages,
    push_policy,
    tools_call_body,
    upstream_requests,
    wait_for_audit,
)

pytestmark = pytest.mark.anyio

IO_TIMEOUT = 20.0  # every raw socket exchange is bounded by this


@pytest.fixture(scope="module")
def adv_policy(base_policy: dict) -> dict:
    policy = copy.deepcopy(base_policy)
    policy["policy"]["agents"]["adv-countdown"] = {"tools": ["countdown"]}
    return policy


@pytest.fixture(scope="module")
def stack(tmp_path_factory, adv_policy):
    """This module's own stack (demo server, SSE responses), so its odd traffic stays out of
    the shared stack's access log."""
    yield from start_stack(tmp_path_factory, adv_policy)


# --------------------------------------------------------------------------- helpers


def calls_by(stack, agent: str) -> list[dict]:
    """Tool / prompt / resource invocations the demo server executed for `agent`."""
    if not stack.call_log.exists():
        return []
    lines = [json.loads(ln) for ln in stack.call_log.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [e for e in lines if e["headers"].get("x-agent-id") == [agent]]


async def session(stack, agent: str) -> RawSession:
    s = RawSession(stack.url, agent=agent)
    await s.initialize()
    return s


def session_headers(s: RawSession) -> dict[str, str]:
    return {"x-agent-id": s.headers["x-agent-id"], "mcp-session-id": s.session_id or "",
            "mcp-protocol-version": PROTOCOL_VERSION}  # fmt: skip


def refusal(resp: RawResponse, status: int, codes: set[int], ids: tuple = (None,)) -> dict:
    """The filter's refusal shape with a code from `codes` and an id from `ids`."""
    assert resp.status == status, (resp.status, resp.body[:300])
    assert resp.content_type.split(";")[0] == "application/json", resp.content_type
    msg = resp.single()
    assert msg["jsonrpc"] == "2.0" and "result" not in msg, msg
    assert msg["error"]["code"] in codes, msg
    assert msg["id"] in ids and type(msg["id"]) in {type(i) for i in ids}, msg
    assert isinstance(msg["error"]["message"], str) and msg["error"]["message"]
    return msg


def result_text(resp: RawResponse) -> str:
    assert resp.status == 200, (resp.status, resp.body[:300])
    msg = resp.single()
    assert "error" not in msg, msg
    return msg["result"]["content"][0]["text"]


def same_json(a: Any, b: Any) -> bool:
    """Equal JSON values with equal types (1 != "1", 1 != True, 1 != 1.0)."""
    return type(a) is type(b) and a == b


# --------------------------------------------------------------------------- 1. duplicates

TOP, PARAMS = {INVALID_REQUEST, PARSE_ERROR}, {INVALID_REQUEST, PARSE_ERROR, INVALID_PARAMS}
DUPLICATES = [
    pytest.param(b'{"jsonrpc":"2.0","jsonrpc":"1.0","id":1,"method":"tools/call",'
                 b'"params":{"name":"echo","arguments":{"text":"a"}}}', TOP, id="jsonrpc"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call",'
                 b'"params":{"name":"echo","arguments":{"text":"a"}}}', TOP, id="id"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call",'
                 b'"params":{"name":"delete_repo","arguments":{"name":"prod"}}}', TOP, id="method"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"ping","m\\u0065thod":"tools/call",'
                 b'"params":{"name":"delete_repo","arguments":{"name":"prod"}}}', TOP, id="method-escaped-key"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a"}},'
                 b'"params":{"name":"delete_repo","arguments":{"name":"prod"}}}', TOP, id="params"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
                 b'"params":{"name":"echo","name":"delete_repo","arguments":{"name":"prod","text":"a"}}}',
                 PARAMS, id="params.name"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
                 b'"params":{"name":"echo","n\\u0061me":"delete_repo","arguments":{"name":"prod","text":"a"}}}',
                 PARAMS, id="params.name-escaped-key"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
                 b'"params":{"name":"echo","arguments":{"text":"a"},"arguments":{"text":"b"}}}', PARAMS, id="params.arguments"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"resources/read",'
                 b'"params":{"uri":"demo://docs/a","uri":"demo://docs/b"}}', PARAMS, id="params.uri"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"prompts/get",'
                 b'"params":{"name":"greet","name":"other","arguments":{"name":"x"}}}', PARAMS, id="prompts.name"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "codes"), DUPLICATES)
async def test_duplicate_members_are_refused_and_never_forwarded(stack, request, body, codes):
    agent = "dup-" + request.node.callspec.id
    s = await session(stack, agent)  # a live session: had it been forwarded, the server would run it
    before = upstream_requests(stack)
    resp = await s.post(body)
    # A duplicated top-level member makes the id untrustworthy (null); inside params the id
    # (1) was readable.
    msg = refusal(resp, 400, codes, ids=(None,) if codes is TOP else (None, 1))
    assert upstream_requests(stack) == before, "a body with a duplicated member reached the upstream"
    assert calls_by(stack, agent) == []
    (rec,) = audit_for(stack, agent_id=agent, http_status=400)
    assert rec == rec | {"decision": "deny", "output_status": "invalid_request", "error_code": msg["error"]["code"],
                         "session_id": s.session_id}  # fmt: skip


# --------------------------------------------------------------------------- 2. escapes

ESCAPED_DENIED = [
    pytest.param("tools/call", "delete\\u005frepo", id="name-u005f"),
    pytest.param("tools/call", "\\u0064elete\\u005Frepo", id="name-upper-hex"),
    pytest.param("tools\\u002fcall", "delete_repo", id="method-u002f"),
    pytest.param("tools\\/c\\u0061ll", "d\\u0065lete_repo", id="both"),
]


@pytest.mark.parametrize(("method", "name"), ESCAPED_DENIED)
async def test_escapes_are_decoded_before_matching_denied_and_tagged_decoded(stack, request, method, name):
    agent = "esc-" + request.node.callspec.id
    s = await session(stack, agent)
    before = upstream_requests(stack)
    body = f'{{"jsonrpc":"2.0","id":"e1","method":"{method}","params":{{"name":"{name}","arguments":{{"name":"prod"}}}}}}'
    resp = await s.post(body.encode())
    msg = refusal(resp, 200, {DENIED}, ids=("e1",))
    assert "delete_repo" in msg["error"]["message"], msg
    assert upstream_requests(stack) == before
    assert calls_by(stack, agent) == []
    (rec,) = audit_for(stack, agent_id=agent, request_id="e1")
    assert rec == rec | {"method": "tools/call", "tool_name": "delete_repo", "decision": "deny",
                         "output_status": "denied", "error_code": DENIED}  # fmt: skip


async def test_escaped_allowed_call_is_forwarded_with_decoded_tags(stack):
    agent = "esc-allowed"
    s = await session(stack, agent)
    body = b'{"jsonrpc":"2.0","id":"e2","method":"tools\\/c\\u0061ll","params":{"name":"\\u0065cho","arguments":{"text":"hi"}}}'
    resp = await s.post(body)
    assert result_text(resp) == "hi"
    (call,) = calls_by(stack, agent)
    assert call["tool"] == "echo"
    assert call["headers"]["x-mcp-method"] == ["tools/call"]
    assert call["headers"]["x-mcp-tool-name"] == ["echo"]
    (rec,) = audit_for(stack, agent_id=agent, request_id="e2")
    assert (rec["method"], rec["tool_name"], rec["decision"], rec["output_status"]) == (
        "tools/call", "echo", "allow", "success")


# --------------------------------------------------------------------------- 3. ids

BIG = 123456789012345678901234567890  # beyond i64 and beyond a double's exact integers


async def test_integer_id_beyond_i64_keeps_every_digit(stack):
    agent = "id-big"
    s = await session(stack, agent)
    resp = await s.post(tools_call_body(BIG, "echo", '{"text":"big"}'))
    assert result_text(resp) == "big"
    assert same_json(resp.single()["id"], BIG)
    (rec,) = wait_for_audit(stack, lambda r: r["agent_id"] == agent and r["method"] == "tools/call")
    assert same_json(rec["request_id"], BIG), rec["request_id"]
    assert str(BIG).encode() in stack.access_log.read_bytes()  # written as digits, not 1.2e29
    assert (rec["decision"], rec["output_status"]) == ("allow", "success")  # correlated by exact text

    before = upstream_requests(stack)
    resp = await s.post(tools_call_body(BIG + 1, "delete_repo", '{"name":"prod"}'))
    assert str(BIG + 1).encode() in resp.body
    refusal(resp, 200, {DENIED}, ids=(BIG + 1,))
    assert upstream_requests(stack) == before
    (rec,) = wait_for_audit(stack, lambda r: r["agent_id"] == agent and same_json(r["request_id"], BIG + 1))
    assert rec["output_status"] == "denied"


async def test_number_and_string_ids_stay_distinct(stack):
    """1 and "1" in one session: two calls, two records, each with its own JSON type."""
    agent = "id-types"
    s = await session(stack, agent)
    for rid, text in ((1, "number one"), ("1", "string one"), ("x-\u00e9", "string")):
        resp = await s.post(tools_call_body(rid, "echo", json.dumps({"text": text})))
        assert result_text(resp) == text
        assert same_json(resp.single()["id"], rid)
    recs = wait_for_audit(stack, lambda r: r["agent_id"] == agent and r["method"] == "tools/call", count=3)
    assert [(type(r["request_id"]), r["request_id"]) for r in recs] == [(int, 1), (str, "1"), (str, "x-\u00e9")]
    assert all(r["output_status"] == "success" for r in recs), recs


async def test_null_id_request_is_invalid_request(stack):
    agent = "id-null"
    s = await session(stack, agent)
    before = upstream_requests(stack)
    resp = await s.post(b'{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"echo","arguments":{"text":"n"}}}')
    refusal(resp, 400, {INVALID_REQUEST})
    assert upstream_requests(stack) == before
    assert calls_by(stack, agent) == []
    (rec,) = audit_for(stack, agent_id=agent, http_status=400)
    assert rec == rec | {"request_id": None, "decision": "deny", "output_status": "invalid_request",
                         "error_code": INVALID_REQUEST}  # fmt: skip


# --------------------------------------------------------------------------- 4. framing


def read_http1_response(data: bytes) -> RawResponse:
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    body = b""
    if "chunked" in headers.get("transfer-encoding", ""):
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2 :]
    else:
        body = rest[: int(headers["content-length"])] if "content-length" in headers else rest
    return RawResponse(status, headers, body, parse_messages(headers.get("content-type", ""), body))


async def post_bytewise_chunked(port: int, headers: dict[str, str], body: bytes, pause: float = 0.002) -> RawResponse:
    """HTTP/1.1 POST with Transfer-Encoding: chunked, one body byte per chunk, each chunk its
    own write (TCP_NODELAY, a short pause between); Connection: close, read to EOF."""

    def run() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            head = ["POST /mcp HTTP/1.1", f"host: 127.0.0.1:{port}", "transfer-encoding: chunked",
                    "connection: close"] + [f"{k}: {v}" for k, v in headers.items()]  # fmt: skip
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            for i in range(len(body)):
                sock.sendall(b"1\r\n" + body[i : i + 1] + b"\r\n")
                time.sleep(pause)
            sock.sendall(b"0\r\n\r\n")
            out = b""
            while chunk := sock.recv(65536):
                out += chunk
            return out

    return read_http1_response(await anyio.to_thread.run_sync(run))


async def test_body_in_one_byte_chunks_is_parsed_denied_and_allowed(stack):
    agent = "frame-bytes"
    s = await session(stack, agent)
    hdrs = session_headers(s) | {"content-type": "application/json", "accept": ACCEPT}
    before = upstream_requests(stack)
    denied = await post_bytewise_chunked(stack.listen_port, hdrs, tools_call_body("b1", "delete_repo", '{"name":"prod"}'))
    refusal(denied, 200, {DENIED}, ids=("b1",))
    assert upstream_requests(stack) == before

    allowed = await post_bytewise_chunked(stack.listen_port, hdrs, tools_call_body("b2", "echo", '{"text":"bytes"}'))
    assert result_text(allowed) == "bytes"
    (call,) = calls_by(stack, agent)
    assert (call["tool"], call["headers"]["x-mcp-tool-name"], call["headers"]["x-mcp-method"]) == (
        "echo", ["echo"], ["tools/call"])
    recs = wait_for_audit(stack, lambda r: r["agent_id"] == agent and r["method"] == "tools/call", count=2)
    assert [(r["request_id"], r["tool_name"], r["output_status"]) for r in recs] == [
        ("b1", "delete_repo", "denied"), ("b2", "echo", "success")]


# HTTP/2 (h2c, prior knowledge) by hand: the venv has no `h2` package (httpx2 is installed
# without its http2 extra), so frames are written here. HPACK: requests use literal fields
# without indexing (no Huffman); of the response only :status is decoded.

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
STATIC_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}
HUFFMAN_DIGITS = {"00000": "0", "00001": "1", "00010": "2", "011001": "3", "011010": "4",
                  "011011": "5", "011100": "6", "011101": "7", "011110": "8", "011111": "9"}  # fmt: skip


def h2_frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") + payload


def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out, value = bytearray([first | limit]), value - limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def hpack_literal(headers: list[tuple[str, str]]) -> bytes:
    out = b""
    for name, value in headers:
        n, v = name.encode(), value.encode()
        out += b"\x00" + hpack_int(len(n), 7) + n + hpack_int(len(v), 7) + v
    return out


def hpack_status(block: bytes) -> int:
    """:status from the first field of a response header block (HPACK, RFC 7541)."""
    b = block[0]
    if b & 0x80:
        return STATIC_STATUS[b & 0x7F]
    index = b & (0x3F if b & 0x40 else 0x0F)
    assert index == 8, f"first response field is not :status: {block[:8]!r}"
    huffman, length = block[1] & 0x80, block[1] & 0x7F
    raw = block[2 : 2 + length]
    if not huffman:
        return int(raw)
    bits, digits, code = "".join(f"{x:08b}" for x in raw), "", ""
    for bit in bits:
        code += bit
        if code in HUFFMAN_DIGITS:
            digits, code = digits + HUFFMAN_DIGITS[code], ""
        if len(digits) == 3:
            break
    return int(digits)


async def post_h2_with_trailers(port: int, headers: dict[str, str], body: bytes) -> RawResponse:
    """One POST over h2c with the body in several DATA frames and then request trailers
    (END_STREAM on the trailers, never on a DATA frame)."""

    def run() -> RawResponse:
        with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
            fields = [(":method", "POST"), (":scheme", "http"), (":path", "/mcp"),
                      (":authority", f"127.0.0.1:{port}")] + list(headers.items())  # fmt: skip
            out = H2_PREFACE + h2_frame(SETTINGS, 0, 0, b"")
            out += h2_frame(HEADERS, END_HEADERS, 1, hpack_literal(fields))
            for i in range(0, len(body), 40):
                out += h2_frame(DATA, 0, 1, body[i : i + 40])
            out += h2_frame(HEADERS, END_HEADERS | END_STREAM, 1, hpack_literal([("x-body-checksum", "sha0")]))
            sock.sendall(out)
            buf, status, data, done = b"", None, b"", False
            while not done:
                chunk = sock.recv(65536)
                if not chunk:
                    raise AssertionError(f"h2 connection closed early (status {status}, data {data[:200]!r})")
                buf += chunk
                while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                    n = int.from_bytes(buf[:3], "big")
                    ftype, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                    payload, buf = buf[9 : 9 + n], buf[9 + n :]
                    if ftype == SETTINGS and not flags & ACK:
                        sock.sendall(h2_frame(SETTINGS, ACK, 0, b""))
                    elif ftype == PING and not flags & ACK:
                        sock.sendall(h2_frame(PING, ACK, 0, payload))
                    elif ftype == HEADERS and stream == 1:
                        if status is None:
                            assert flags & END_HEADERS, "CONTINUATION not supported here"
                            status = hpack_status(payload)
                        done = done or bool(flags & END_STREAM)
                    elif ftype == DATA and stream == 1:
                        data += payload
                        if payload:
                            sock.sendall(h2_frame(WINDOW_UPDATE, 0, 0, len(payload).to_bytes(4, "big"))
                                         + h2_frame(WINDOW_UPDATE, 0, 1, len(payload).to_bytes(4, "big")))
                        done = done or bool(flags & END_STREAM)
                    elif ftype in (RST_STREAM, GOAWAY) and stream in (0, 1):
                        if ftype == RST_STREAM or status is None:
                            raise AssertionError(f"h2 stream reset/goaway (type {ftype}): {payload!r}")
        assert status is not None
        # No content-type decoding: the body is JSON-RPC JSON or SSE; try both.
        kind = "text/event-stream" if data.lstrip().startswith((b"event:", b"data:", b"id:", b":")) else "application/json"
        return RawResponse(status, {"content-type": kind}, data, parse_messages(kind, data))

    return await anyio.to_thread.run_sync(run)


async def test_http2_with_request_trailers_is_parsed_denied_and_allowed(stack):
    agent = "frame-h2"
    s = await session(stack, agent)
    hdrs = session_headers(s) | {"content-type": "application/json", "accept": ACCEPT}
    before = upstream_requests(stack)
    denied = await post_h2_with_trailers(stack.listen_port, hdrs, tools_call_body("h1", "delete_repo", '{"name":"prod"}'))
    refusal(denied, 200, {DENIED}, ids=("h1",))
    assert upstream_requests(stack) == before
    assert calls_by(stack, agent) == []

    allowed = await post_h2_with_trailers(stack.listen_port, hdrs, tools_call_body("h2", "echo", '{"text":"over h2"}'))
    assert result_text(allowed) == "over h2"
    (call,) = calls_by(stack, agent)
    assert (call["tool"], call["headers"]["x-mcp-tool-name"], call["headers"]["x-mcp-method"]) == (
        "echo", ["echo"], ["tools/call"])
    recs = wait_for_audit(stack, lambda r: r["agent_id"] == agent and r["method"] == "tools/call", count=2)
    assert [(r["request_id"], r["tool_name"], r["decision"], r["output_status"]) for r in recs] == [
        ("h1", "delete_repo", "deny", "denied"), ("h2", "echo", "allow", "success")]


# --------------------------------------------------------------------------- 5. Content-Encoding

ENCODED = [
    pytest.param("gzip", lambda b: gzip.compress(b), id="gzip"),
    # A plain JSON body labelled br: a server that honoured the label would decode garbage;
    # one that ignored it would run the call. Either way the filter must not guess.
    pytest.param("br", lambda b: b, id="br-label-on-plain-json"),
    pytest.param("GZIP", lambda b: gzip.compress(b), id="gzip-upper-case"),
]


@pytest.mark.parametrize(("encoding", "encode"), ENCODED)
async def test_content_encoded_request_is_415_and_never_forwarded(stack, request, encoding, encode):
    agent = "ce-" + request.node.callspec.id
    s = await session(stack, agent)
    before = upstream_requests(stack)
    body = encode(tools_call_body("ce1", "echo", '{"text":"compressed"}'))
    resp = await s.post(body, headers={"content-encoding": encoding})
    refusal(resp, 415, {INVALID_REQUEST}, ids=(None, "ce1"))
    assert upstream_requests(stack) == before
    assert calls_by(stack, agent) == []
    (rec,) = audit_for(stack, agent_id=agent, http_status=415)
    assert rec == rec | {"decision": "deny", "output_status": "invalid_request", "error_code": INVALID_REQUEST}


async def test_identity_content_encoding_is_examined_as_usual(stack):
    agent = "ce-identity"
    s = await session(stack, agent)
    before = upstream_requests(stack)
    denied = await s.post(tools_call_body("ci1", "delete_repo", '{"name":"prod"}'), headers={"content-encoding": "identity"})
    refusal(denied, 200, {DENIED}, ids=("ci1",))
    assert upstream_requests(stack) == before
    allowed = await s.post(tools_call_body("ci2", "echo", '{"text":"plain"}'), headers={"content-encoding": "identity"})
    assert result_text(allowed) == "plain"
    assert [c["headers"]["x-mcp-tool-name"] for c in calls_by(stack, agent)] == [["echo"]]


# --------------------------------------------------------------------------- 6. Content-Type


async def post_with_content_type(stack, s: RawSession, body: bytes, content_type: str | None) -> RawResponse:
    hdrs = session_headers(s) | {"accept": ACCEPT}
    if content_type is not None:
        hdrs["content-type"] = content_type
    async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        resp = await http.post(stack.url, content=body, headers=hdrs)
        data = await resp.aread()
    assert content_type is not None or "content-type" not in resp.request.headers
    h = {k.lower(): v for k, v in resp.headers.items()}
    return RawResponse(resp.status_code, h, data, parse_messages(h.get("content-type", ""), data))


@pytest.mark.parametrize("content_type", ["text/plain", None], ids=["text-plain", "missing"])
async def test_wrong_or_missing_content_type_is_still_examined(stack, content_type):
    agent = f"ct-{content_type or 'none'}".replace("/", "-")
    s = await session(stack, agent)
    before = upstream_requests(stack)
    denied = await post_with_content_type(stack, s, tools_call_body("ct1", "delete_repo", '{"name":"prod"}'), content_type)
    refusal(denied, 200, {DENIED}, ids=("ct1",))
    assert upstream_requests(stack) == before
    assert calls_by(stack, agent) == []

    # Allowed: forwarded (the SDK server itself then refuses the media type; the tags it
    # received are shown with the raw upstream in test_81).
    allowed = await post_with_content_type(stack, s, tools_call_body("ct2", "echo", '{"text":"t"}'), content_type)
    assert upstream_requests(stack) == before + 1
    recs = wait_for_audit(stack, lambda r: r["agent_id"] == agent and r["method"] == "tools/call", count=2)
    assert [(r["request_id"], r["tool_name"], r["decision"]) for r in recs] == [
        ("ct1", "delete_repo", "deny"), ("ct2", "echo", "allow")]
    assert recs[1]["http_status"] == allowed.status


# --------------------------------------------------------------------------- 7. body size

MAX_BODY_BYTES = 4 * 1024 * 1024  # examples/policy.json
ROUTE_BUFFER = 8 * 1024 * 1024  # envoy/envoy.yaml request_body_buffer_limit


def padded_call(rid: str, tool: str, size: int) -> bytes:
    return tools_call_body(rid, tool, '{"name":"prod","pad":"' + "x" * size + '"}')


async def test_chunked_body_over_max_body_bytes_is_413_never_forwarded(stack):
    """No Content-Length: the size is only known while the chunks arrive."""
    agent = "size-chunked"
    s = await session(stack, agent)
    body = padded_call("big1", "delete_repo", MAX_BODY_BYTES + 4096)

    async def chunks():
        for i in range(0, len(body), 256 * 1024):
            yield body[i : i + 256 * 1024]

    before = upstream_requests(stack)
    async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        try:
            resp = await http.post(stack.url, content=chunks(), headers=session_headers(s)
                                   | {"content-type": "application/json", "accept": ACCEPT})  # fmt: skip
            status, data, ctype = resp.status_code, resp.content, resp.headers.get("content-type", "")
        except httpx2.HTTPError as exc:  # Envoy may answer and close before the last chunk
            pytest.fail(f"no response to the oversized chunked body: {exc!r}")
    assert "chunked" in resp.request.headers.get("transfer-encoding", "")
    refusal(RawResponse(status, {"content-type": ctype}, data, parse_messages(ctype, data)), 413, {INVALID_REQUEST})
    assert upstream_requests(stack) == before
    assert calls_by(stack, agent) == []
    (rec,) = audit_for(stack, agent_id=agent, http_status=413)
    assert rec == rec | {"decision": "deny", "output_status": "invalid_request", "error_code": INVALID_REQUEST}


async def test_body_over_envoys_route_buffer_is_envoys_413_never_forwarded_but_audited(stack, adv_policy):
    """With max_body_bytes above the route's 8 MiB buffer (a misconfiguration), Envoy's own
    plain-text 413 answers first: still not forwarded, still audited."""
    policy = copy.deepcopy(adv_policy)
    policy["max_body_bytes"] = 2 * ROUTE_BUFFER
    push_policy(stack, policy)  # every worker runs it from here on
    try:
        agent = "size-envoy"
        s = await session(stack, agent)
        before = upstream_requests(stack)
        try:
            resp = await s.post(padded_call("big2", "delete_repo", ROUTE_BUFFER + 4096))
        except httpx2.HTTPError as exc:
            pytest.fail(f"no response to the body over Envoy's buffer: {exc!r}")
        # Envoy's own reply, not the filter's JSON-RPC one (that one would carry -32600).
        assert resp.status == 413, (resp.status, resp.body[:200])
        assert resp.content_type.startswith("text/plain") and b"Payload Too Large" in resp.body, resp
        assert upstream_requests(stack) == before
        assert calls_by(stack, agent) == []
        (rec,) = audit_for(stack, agent_id=agent, http_status=413)
        assert rec == rec | {"decision": "deny", "output_status": "invalid_request", "method": None,
                             "request_id": None, "error_code": None}  # fmt: skip
    finally:
        push_policy(stack, adv_policy)


# --------------------------------------------------------------------------- 8. BOM, trailing bytes, depth

DENIED_CALL = tools_call_body("p1", "delete_repo", '{"name":"prod"}')
ALLOWED_CALL = tools_call_body("p1", "echo", '{"text":"t"}')
UNPARSABLE = [
    pytest.param(b"\xef\xbb\xbf" + ALLOWED_CALL, id="utf8-bom"),
    pytest.param(ALLOWED_CALL + b"x", id="trailing-garbage"),
    pytest.param(ALLOWED_CALL + DENIED_CALL, id="trailing-second-object"),
    pytest.param(ALLOWED_CALL + b"\x00", id="trailing-nul"),
]


@pytest.mark.parametrize("body", UNPARSABLE)
async def test_bom_and_trailing_bytes_are_parse_errors_never_forwarded(stack, request, body):
    agent = "parse-" + request.node.callspec.id
    s = await session(stack, agent)
    before = upstream_requests(stack)
    refusal(await s.post(body), 400, {PARSE_ERROR})
    assert upstream_requests(stack) == before
    assert calls_by(stack, agent) == []
    (rec,) = audit_for(stack, agent_id=agent, http_status=400)
    assert rec == rec | {"decision": "deny", "output_status": "invalid_request", "error_code": PARSE_ERROR}


def nested_ping(rid: str, depth: int) -> bytes:
    """A ping whose JSON nests exactly `depth` levels (root object 1, params 2, arrays below)."""
    n = depth - 2
    return f'{{"jsonrpc":"2.0","id":"{rid}","method":"ping","params":{{"a":{"[" * n}1{"]" * n}}}}}'.encode()


async def depth_outcome(stack, s: RawSession, depth: int) -> str:
    before = upstream_requests(stack)
    resp = await s.post(nested_ping(f"d{depth}", depth))
    if resp.status == 400:
        refusal(resp, 400, {PARSE_ERROR})
        assert upstream_requests(stack) == before
        return "refused"
    assert resp.status == 200 and resp.single().get("result") == {}, resp
    assert upstream_requests(stack) == before + 1
    return "forwarded"


async def test_nesting_beyond_the_default_depth_limit_is_a_parse_error(stack):
    s = await session(stack, "depth-default")
    assert await depth_outcome(stack, s, 64) == "forwarded"
    assert await depth_outcome(stack, s, 65) == "refused"
    assert await depth_outcome(stack, s, 500) == "refused"


async def test_max_json_depth_is_configurable(stack, adv_policy):
    policy = copy.deepcopy(adv_policy)
    policy["max_json_depth"] = 8
    push_policy(stack, policy)  # every worker runs it from here on
    try:
        s = await session(stack, "depth-8")
        for _ in range(4):  # both workers, whichever takes each request
            assert await depth_outcome(stack, s, 8) == "forwarded"
            assert await depth_outcome(stack, s, 9) == "refused"
    finally:
        push_policy(stack, adv_policy)


# --------------------------------------------------------------------------- client disconnect


async def test_client_that_stops_mid_body_is_audited_and_nothing_is_forwarded(stack):
    """Headers and half of a denied call's body, then the client closes the connection."""
    agent = "gone-mid-body"
    s = await session(stack, agent)
    body = tools_call_body("half", "delete_repo", '{"name":"prod"}')
    before = upstream_requests(stack)

    def run() -> None:
        with socket.create_connection(("127.0.0.1", stack.listen_port), timeout=IO_TIMEOUT) as sock:
            head = ["POST /mcp HTTP/1.1", f"host: 127.0.0.1:{stack.listen_port}", f"content-length: {len(body)}",
                    "content-type: application/json", f"accept: {ACCEPT}"] + [
                    f"{k}: {v}" for k, v in session_headers(s).items()]  # fmt: skip
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[: len(body) // 2])
            time.sleep(0.3)

    await anyio.to_thread.run_sync(run)
    (rec,) = audit_for(stack, agent_id=agent, http_method="POST", method=None)
    assert rec == rec | {"decision": "deny", "output_status": "client_disconnected", "request_id": None}
    assert upstream_requests(stack) == before
    assert calls_by(stack, agent) == []


async def test_shipped_build_ignores_the_fault_injection_header(stack):
    """x-mcp-guard-fault only exists in the test-only build; the shipped module examines the
    request as usual (and its worker keeps working)."""
    agent = "fault-header"
    s = await session(stack, agent)
    trap = {"x-mcp-guard-fault": "trap"}
    refusal(await s.post(tools_call_body("f1", "delete_repo", '{"name":"prod"}'), headers=trap), 200, {DENIED}, ids=("f1",))
    assert result_text(await s.post(tools_call_body("f2", "echo", '{"text":"still here"}'), headers=trap)) == "still here"
    assert [c["tool"] for c in calls_by(stack, agent)] == ["echo"]



async def test_client_disconnect_mid_sse_response_still_leaves_an_audit_record(stack):
    agent = "adv-countdown"
    s = await session(stack, agent)
    body = json.dumps({"jsonrpc": "2.0", "id": "cd-1", "method": "tools/call",
                       "params": {"name": "countdown", "arguments": {"steps": 6, "delay_ms": 400},
                                  "_meta": {"progressToken": "p-1"}}}).encode()  # fmt: skip
    got = b""
    with anyio.fail_after(IO_TIMEOUT):
        async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            async with http.stream("POST", stack.url, content=body,
                                   headers=session_headers(s) | {"content-type": "application/json",
                                                                 "accept": ACCEPT}) as resp:  # fmt: skip
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("text/event-stream")
                async for chunk in resp.aiter_raw():
                    got += chunk
                    if b"notifications/progress" in got:
                        break  # leaving the block closes the connection mid-stream
    assert b'"result"' not in got, "the response completed before the client left"
    (rec,) = audit_for(stack, agent_id=agent, request_id="cd-1", timeout=15)
    assert rec == rec | {"method": "tools/call", "tool_name": "countdown", "decision": "allow",
                         "http_status": 200, "session_id": s.session_id}  # fmt: skip
    print(f"client disconnect mid-response: output_status={rec['output_status']!r} "
          f"error_code={rec['error_code']!r} latency_ms={rec['latency_ms']}")
    # The server did run the call (it was allowed and forwarded).
    assert [c["tool"] for c in calls_by(stack, agent)] == ["countdown"]


def test_every_line_of_this_stacks_access_log_is_a_schema_valid_record(stack):
    assert_access_log_valid(stack)
