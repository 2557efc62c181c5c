"""Streamable HTTP transport features end to end, 2025-03-26 ... 2026-07-28:

- resumability (SEP-1699, 2025-11-25): the server closes a POST's SSE stream before the result;
  the SDK client reconnects with GET + Last-Event-ID and gets the result there;
- the standalone GET stream and the DELETE that ends a session;
- the 2026-07-28 routing headers `Mcp-Method` / `Mcp-Name`, which the filter checks against the
  body (a mismatch is HTTP 400 with JSON-RPC error -32020 and is never forwarded).

The SDK (mcp 2.x) drives everything it can send; raw HTTP only for what no SDK sends
(mismatched or malformed routing headers). The demo server runs with --resumable (event store,
resume_echo tool) and --log-http-requests (every HTTP request it received, with its headers,
in the call log), so the tests see what Envoy forwarded for GET / DELETE and that refused
requests never arrived.
"""
from __future__ import annotations

import base64
import copy
import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import anyio
import httpx2
import mcp_types as types
import pytest
from conftest import start_stack
from helpers import (
    DENIED,
    HTTP_TIMEOUT,
    Conn,
    RawSession,
    Recorder,
    audit_for,
    mcp_session,
    raw_request,
    sha256_tag,
    tools_call_body,
)
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.anyio

HEADER_MISMATCH = -32020  # 2026-07-28 HeaderMismatch
MODERN = "2026-07-28"
TAGS = ("x-mcp-method", "x-mcp-tool-name", "x-mcp-prompt-name", "x-mcp-resource-uri")
SPOOFED_TAGS = {
    "x-mcp-method": "tools/call",
    "x-mcp-tool-name": "echo",
    "x-mcp-prompt-name": "spoofed",
    "x-mcp-resource-uri": "spoofed://x",
}

# Agents of this module. ALL_TOOLS ones may call any tool, prompt and resource, so a refusal seen here comes from the
# routing-header check, not from the allowlist; ECHO_ONLY ones may call only echo.
ALL_TOOLS = [
    "t65-resume-0-1", "t65-resume-400-1", "t65-resume-800-2", "t65-delete", "t65-get", "t65-push",
    "t65-modern", "t65-nonascii", "t65-dup", "t65-legacy", "t65-task-ok", "t65-task-bad",
]  # fmt: skip
ECHO_ONLY = ["t65-echo-only"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, base_policy: dict):
    """A stack whose demo server is resumable and logs every HTTP request it receives."""
    policy = copy.deepcopy(base_policy)
    for agent in ALL_TOOLS + [f"t65-mm-{m[0]}" for m in MISMATCHES] + [f"t65-ok-{m[0]}" for m in MATCHES]:
        policy["policy"]["agents"][agent] = {"tools": ["*"], "prompts": ["*"], "resources": ["*"]}
    for agent in ECHO_ONLY:
        policy["policy"]["agents"][agent] = {"tools": ["echo"]}
    yield from start_stack(tmp_path_factory, policy, server_args=["--resumable", "--log-http-requests"])


def upstream_http(stack: Any, **headers: str) -> list[dict]:
    """HTTP requests the demo server received whose logged headers include these values."""
    return [
        e for e in stack.calls("http")
        if all(e["headers"].get(k.replace("_", "-")) == [v] for k, v in headers.items())
    ]  # fmt: skip


# --------------------------------------------------------------------------- A. resumption


@pytest.mark.parametrize(
    "delay_ms, closes",
    [(0, 1), (400, 1), (800, 2)],  # 800 ms: ample time to reconnect (retry: 100 ms) before the 2nd close
    ids=["replayed-from-store", "live-after-reconnect", "second-reconnect"],
)
async def test_result_delivered_on_get_reconnection_is_correlated(stack, delay_ms, closes):
    """resume_echo closes its POST's SSE stream after the priming event (id + retry), then
    returns: with delay 0 the result is stored before the client reconnects and is replayed on
    the GET; after 400 ms the client is already reconnected and gets it live. With closes=2 the
    server also closes the first reconnection GET before the result: the client reconnects
    again and the result comes on the second GET."""
    agent = f"t65-resume-{delay_ms}-{closes}"
    text = f"resumed after {delay_ms} ms, {closes} close(s)"
    arguments = {"text": text, "delay_ms": delay_ms, "closes": closes}
    async with mcp_session(stack.url, agent=agent) as conn:
        result = await conn.session.call_tool("resume_echo", arguments)
        sid = conn.session_id
    # The SDK client got the result, although not on the POST that asked for it.
    assert result.is_error is False
    assert [c.text for c in result.content] == [text]
    assert sid

    # What reached the server: the POST once (the tool ran once), the standalone GET, the
    # reconnection GET(s) carrying Last-Event-ID, the DELETE.
    assert [c["tool"] for c in stack.calls() if c["headers"].get("mcp-session-id") == [sid]] == ["resume_echo"]
    http = upstream_http(stack, mcp_session_id=sid)
    gets = [e for e in http if e["http"] == "GET"]
    assert len(gets) == 1 + closes, http
    standalone = [g for g in gets if "last-event-id" not in g["headers"]]
    reconnect = [g for g in gets if "last-event-id" in g["headers"]]
    assert len(standalone) == 1 and len(reconnect) == closes, gets
    for g in gets:
        assert g["headers"]["x-agent-id"] == [agent]
        assert not set(TAGS) & set(g["headers"]), g  # a GET carries no call: no call tags
    assert [e["http"] for e in http].count("DELETE") == 1

    # The POST's record: allowed, answered 200 with an event stream that ended without the
    # result, which the server announced as resumable (priming event id): "deferred".
    (post,) = audit_for(stack, agent_id=agent, session_id=sid, tool_name="resume_echo", http_method="POST")
    assert (post["method"], post["decision"], post["http_status"]) == ("tools/call", "allow", 200)
    assert post["output_status"] == "deferred", post
    assert post["error_code"] is None
    assert post["input_hash"] == sha256_tag(json.dumps(arguments, separators=(",", ":")).encode())

    # The reconnection GET's access-log line carries its own record and one for the call,
    # correlated by session + request id, with the outcome read on the GET stream.
    (corr,) = audit_for(stack, agent_id=agent, session_id=sid, correlated=True)
    assert corr["http_method"] == "GET"
    assert corr["method"] == "tools/call"
    for field in ("tool_name", "request_id", "input_hash", "agent_id", "session_id", "decision", "timestamp"):
        assert corr[field] == post[field], field
    assert (corr["output_status"], corr["error_code"], corr["http_status"]) == ("success", None, 200)
    assert corr["latency_ms"] >= delay_ms * closes, corr  # from the POST's start to the result on the GET

    # The GETs' own records: method null, no call fields, not correlated; one per GET (the
    # standalone stream and the reconnections), one of which shares its log line with `corr`.
    get_records = audit_for(stack, 1 + closes, agent_id=agent, session_id=sid, http_method="GET", method=None)
    for rec in get_records:
        assert not rec.get("correlated"), rec
        assert (rec["request_id"], rec["tool_name"], rec["input_hash"]) == (None, None, None)
        assert (rec["decision"], rec["http_status"]) == ("allow", 200)
    mine = [r for r in stack.audit_records() if r.get("session_id") == sid]
    i = mine.index(corr)
    neighbours = mine[max(0, i - 1):i] + mine[i + 1:i + 2]
    assert any(r in get_records for r in neighbours), "the correlated record is not on a GET stream's line"


async def test_standalone_get_stream_is_opened_after_initialize_and_audited(stack):
    """The SDK opens the GET stream for server-initiated messages right after
    notifications/initialized; it passes (200, text/event-stream) and has a record without a
    JSON-RPC method. Nothing is correlated on it."""
    agent = "t65-get"
    async with mcp_session(stack.url, agent=agent) as conn:
        await conn.session.call_tool("echo", {"text": "x"})
        sid = conn.session_id
    methods = [r.method for r in conn.recorder.responses]
    assert methods[0] == "POST" and methods.count("GET") == 1, methods  # initialize first, then one GET
    (get,) = [r for r in conn.recorder.responses if r.method == "GET"]
    assert get.status == 200 and get.headers["content-type"].startswith("text/event-stream")

    (rec,) = audit_for(stack, agent_id=agent, session_id=sid, http_method="GET")
    assert (rec["method"], rec["tool_name"], rec["request_id"], rec["input_hash"]) == (None, None, None, None)
    assert (rec["decision"], rec["http_status"]) == ("allow", 200)
    assert not rec.get("correlated")
    (call,) = audit_for(stack, agent_id=agent, session_id=sid, tool_name="echo")
    assert call["output_status"] == "success"  # a result on the POST stream is not deferred


async def test_server_initiated_messages_on_the_get_stream_pass_and_are_not_correlated(stack):
    """server_push sends, on the standalone GET stream, notifications/tools/list_changed and a
    roots/list request; the client answers the request with a POST (a JSON-RPC response). All
    of it passes the filter; the server's request on the GET stream is not taken for the
    outcome of a call (no correlated record); the client's response is audited with method
    null."""
    agent = "t65-push"
    seen: list[str] = []
    changed = anyio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            seen.append(message.method)
            changed.set()

    async def list_roots(_ctx: object) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri="file:///t65/root", name="t65")])

    recorder = Recorder()
    async with httpx2.AsyncClient(
        headers={"x-agent-id": agent}, timeout=HTTP_TIMEOUT, event_hooks={"response": [recorder.hook]}
    ) as http:
        async with streamable_http_client(stack.url, http_client=http) as (read, write):
            session = ClientSession(read, write, list_roots_callback=list_roots, message_handler=on_message)
            async with session:
                await session.initialize()
                result = await session.call_tool("server_push", {})
                with anyio.fail_after(10):
                    await changed.wait()
    sid = recorder.session_id
    assert [c.text for c in result.content] == ["file:///t65/root"]  # the roots/list round trip worked
    assert seen == ["notifications/tools/list_changed"]

    (call,) = audit_for(stack, agent_id=agent, session_id=sid, tool_name="server_push")
    assert (call["output_status"], call["http_status"]) == ("success", 200)
    # The client's answer to roots/list: a POST carrying a JSON-RPC response (no method), 202.
    (answer,) = audit_for(stack, agent_id=agent, session_id=sid, http_method="POST", method=None)
    assert (answer["decision"], answer["http_status"], answer["tool_name"]) == ("allow", 202, None)
    assert answer["request_id"] is not None  # the server's request id, as the client echoed it
    (get,) = audit_for(stack, agent_id=agent, session_id=sid, http_method="GET")
    assert (get["method"], get["decision"], get["http_status"]) == (None, "allow", 200)
    assert [r for r in stack.audit_records() if r.get("session_id") == sid and r.get("correlated")] == []


# --------------------------------------------------------------------------- B. DELETE


@pytest.mark.parametrize(
    "client_agent, resolved",
    [("t65-delete", "t65-delete"), (None, "anonymous"), ("bad,agent", "anonymous")],
    ids=["header-identity", "no-header-fallback", "invalid-header-fallback"],
)
async def test_sdk_delete_ends_the_session_tags_stripped_agent_set(stack, client_agent, resolved):
    """The SDK sends DELETE on exit; the filter forwards it with the client's tag headers
    removed and x-agent-id set to the resolved identity (as for GET), and audits it."""
    headers = dict(SPOOFED_TAGS)
    if client_agent is not None:
        headers["x-agent-id"] = client_agent
    async with mcp_session(stack.url, headers=headers) as conn:
        echoed = await conn.session.call_tool("echo", {"text": "before delete"})
        sid = conn.session_id
    assert [c.text for c in echoed.content] == ["before delete"]
    deletes = [r for r in conn.recorder.responses if r.method == "DELETE"]
    assert [r.status for r in deletes] == [200]

    http = upstream_http(stack, mcp_session_id=sid)
    (delete,) = [e for e in http if e["http"] == "DELETE"]
    (get,) = [e for e in http if e["http"] == "GET"]
    for forwarded in (delete, get):
        assert forwarded["headers"]["x-agent-id"] == [resolved], forwarded
        assert not set(TAGS) & set(forwarded["headers"]), forwarded  # spoofed copies removed
    (call,) = [e for e in http if e["headers"].get("x-mcp-method") == ["tools/call"]]
    assert call["headers"]["x-mcp-tool-name"] == ["echo"]  # the filter's one value, not the client's copy
    assert call["headers"]["x-agent-id"] == [resolved]
    assert "x-mcp-prompt-name" not in call["headers"] and "x-mcp-resource-uri" not in call["headers"]

    (rec,) = audit_for(stack, session_id=sid, http_method="DELETE")
    assert rec["agent_id"] == resolved
    assert (rec["method"], rec["tool_name"], rec["request_id"], rec["input_hash"]) == (None, None, None, None)
    assert (rec["decision"], rec["output_status"], rec["error_code"], rec["http_status"]) == (
        "allow", "success", None, 200)  # fmt: skip

    # The session is gone at the server: a request on it now fails (404 from the server).
    gone = await raw_request(
        stack.url, "POST", b'{"jsonrpc":"2.0","id":"after-delete","method":"tools/list"}',
        {"mcp-session-id": sid, "mcp-protocol-version": "2025-11-25", "x-agent-id": resolved},
    )  # fmt: skip
    assert gone.status == 404, gone


# --------------------------------------------------------------------------- C. 2026-07-28


@asynccontextmanager
async def modern_session(url: str, agent: str) -> AsyncIterator[Conn]:
    """An SDK client on protocol 2026-07-28: server/discover instead of initialize, no
    session; every request carries MCP-Protocol-Version, Mcp-Method and (tools/call,
    prompts/get, resources/read) Mcp-Name."""
    recorder = Recorder()
    async with httpx2.AsyncClient(
        headers={"x-agent-id": agent}, timeout=HTTP_TIMEOUT, event_hooks={"response": [recorder.hook]}
    ) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.discover()
                assert session.protocol_version == MODERN
                yield Conn(session, recorder)


async def test_sdk_2026_client_sends_routing_headers_and_is_tagged(stack):
    agent = "t65-modern"
    async with modern_session(stack.url, agent) as conn:
        echoed = await conn.session.call_tool("echo", {"text": "modern \u00e9"})
        doc = await conn.session.read_resource("demo://docs/modern")
        prompt = await conn.session.get_prompt("greet", {"name": "Ada"})
    assert [c.text for c in echoed.content] == ["modern \u00e9"]
    assert doc.contents[0].text == "mcp-guard demo document modern"
    assert prompt.messages[0].content.text == "Say hello to Ada."
    assert conn.session_id is None  # 2026-07-28 has no sessions

    http = upstream_http(stack, x_agent_id=agent, mcp_protocol_version=MODERN)
    by_method = {e["headers"]["mcp-method"][0]: e["headers"] for e in http}
    # The SDK's own routing headers, forwarded unchanged next to the filter's tags.
    assert by_method["tools/call"]["mcp-name"] == ["echo"]
    assert by_method["tools/call"]["x-mcp-tool-name"] == ["echo"]
    assert by_method["resources/read"]["mcp-name"] == ["demo://docs/modern"]
    assert by_method["resources/read"]["x-mcp-resource-uri"] == ["demo://docs/modern"]
    assert by_method["prompts/get"]["mcp-name"] == ["greet"]
    assert by_method["prompts/get"]["x-mcp-prompt-name"] == ["greet"]
    for method, h in by_method.items():
        assert h["x-mcp-method"] == [method]

    (rec,) = audit_for(stack, agent_id=agent, tool_name="echo")
    assert (rec["decision"], rec["output_status"], rec["http_status"], rec["session_id"]) == (
        "allow", "success", 200, None)  # fmt: skip
    (rec,) = audit_for(stack, agent_id=agent, method="resources/read")
    assert (rec["resource_uri"], rec["output_status"]) == ("demo://docs/modern", "success")


async def test_sdk_2026_non_ascii_tool_name_is_base64_and_evaluated_by_name(stack):
    """The SDK sends a non-ASCII tool name as Mcp-Name: =?base64?...?=. The filter decodes it,
    finds it equal to the body and applies the allowlist by that name: denied (-32003) for an
    echo-only agent, forwarded (tagged percent-encoded) for an all-tools agent."""
    name = "gr\u00fc\u00dfe"
    encoded = "=?base64?" + base64.b64encode(name.encode()).decode() + "?="

    denied_agent = ECHO_ONLY[0]
    async with modern_session(stack.url, denied_agent) as conn:
        with pytest.raises(MCPError) as excinfo:
            await conn.session.call_tool(name, {"text": "x"})
    assert excinfo.value.code == DENIED
    assert upstream_http(stack, x_agent_id=denied_agent, mcp_method="tools/call") == []
    (rec,) = audit_for(stack, agent_id=denied_agent, tool_name=name)
    assert (rec["decision"], rec["output_status"], rec["error_code"]) == ("deny", "denied", DENIED)

    allowed_agent = "t65-nonascii"
    async with modern_session(stack.url, allowed_agent) as conn:
        result = await conn.session.call_tool(name, {"text": "x"})
    assert result.is_error is True  # the demo server has no such tool: a tool error from it
    (fwd,) = upstream_http(stack, x_agent_id=allowed_agent, mcp_method="tools/call")
    assert fwd["headers"]["mcp-name"] == [encoded]  # what the SDK sent
    assert fwd["headers"]["x-mcp-tool-name"] == ["gr%C3%BC%C3%9Fe"]
    (rec,) = audit_for(stack, agent_id=allowed_agent, tool_name=name)
    assert (rec["decision"], rec["output_status"]) == ("allow", "tool_error")


def modern_body(request_id: Any, method: str, params: dict) -> bytes:
    envelope = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "mcp-guard-e2e", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**params, "_meta": envelope}}
    return json.dumps(body, separators=(",", ":")).encode()


async def modern_post(stack: Any, agent: str, body: bytes, **routing: str) -> Any:
    headers = {"x-agent-id": agent, "mcp-protocol-version": MODERN}
    headers.update({k.replace("_", "-"): v for k, v in routing.items()})
    return await raw_request(stack.url, "POST", body, headers)


ECHO = ("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
DELETE_REPO = ("tools/call", {"name": "delete_repo", "arguments": {"name": "prod"}})
READ_DOC = ("resources/read", {"uri": "demo://docs/readme"})
GREET = ("prompts/get", {"name": "greet", "arguments": {"name": "Ada"}})

# (id, body (method, params), Mcp-Method, Mcp-Name): refused with 400 / -32020.
MISMATCHES = [
    ("method-other", ECHO, "tools/list", "echo"),
    ("method-case", ECHO, "Tools/Call", "echo"),  # header values are case-sensitive
    ("name-echo-body-delete_repo", DELETE_REPO, "tools/call", "echo"),
    ("name-case", ECHO, "tools/call", "Echo"),
    ("name-base64-other", DELETE_REPO, "tools/call", "=?base64?ZWNobw==?="),  # "echo"
    ("base64-bad-padding", ECHO, "tools/call", "=?base64?ZWNobw=?="),
    ("base64-unpadded", ECHO, "tools/call", "=?base64?ZWNobw?="),  # SEP-2243 conformance: reject
    ("base64-bad-chars", ECHO, "tools/call", "=?base64?ZW*obw==?="),
    ("base64-not-utf8", ECHO, "tools/call", "=?base64?/w==?="),
    ("resource-uri-other", READ_DOC, "resources/read", "demo://docs/other"),
    ("prompt-name-other", GREET, "prompts/get", "other"),
    # The sentinel is case-sensitive (spec: "MUST appear exactly as shown (lowercase)"; SEP-2243
    # conformance: "Non-lowercase prefix ... treats as literal value"): this is the literal
    # value "=?BASE64?ZWNobw==?=", not "echo".
    ("base64-label-uppercase", ECHO, "tools/call", "=?BASE64?ZWNobw==?="),
    ("base64-non-canonical", ECHO, "tools/call", "=?base64?ZWNobx==?="),  # non-zero pad bits
]


@pytest.mark.parametrize("case, body, mcp_method, mcp_name", MISMATCHES, ids=[m[0] for m in MISMATCHES])
async def test_routing_header_mismatch_is_refused_and_not_forwarded(stack, case, body, mcp_method, mcp_name):
    agent = f"t65-mm-{case}"  # may call every tool: the refusal is the header check's
    rid = f"mismatch-{case}"
    method, params = body
    resp = await modern_post(stack, agent, modern_body(rid, method, params), mcp_method=mcp_method, mcp_name=mcp_name)
    resp.jsonrpc_error(400, rid, HEADER_MISMATCH)

    assert upstream_http(stack, x_agent_id=agent) == []  # never forwarded, under no tag

    (rec,) = audit_for(stack, agent_id=agent, request_id=rid)
    assert (rec["output_status"], rec["error_code"], rec["http_status"]) == ("invalid_request", HEADER_MISMATCH, 400)
    assert rec["decision"] == "deny"  # refused requests are recorded as deny
    assert rec["method"] == method
    if params.get("name") != "echo":
        assert rec["tool_name"] != "echo", rec  # the header's name is never taken for the body's


# (id, body, Mcp-Method, Mcp-Name, tag header expected upstream): forwarded and answered.
MATCHES = [
    ("plain", ECHO, "tools/call", "echo", ("x-mcp-tool-name", "echo")),
    ("base64", ECHO, "tools/call", "=?base64?ZWNobw==?=", ("x-mcp-tool-name", "echo")),
    ("resource-uri", READ_DOC, "resources/read", "demo://docs/readme", ("x-mcp-resource-uri", "demo://docs/readme")),
]


@pytest.mark.parametrize("case, body, mcp_method, mcp_name, tag", MATCHES, ids=[m[0] for m in MATCHES])
async def test_routing_headers_matching_the_body_are_forwarded(stack, case, body, mcp_method, mcp_name, tag):
    agent = f"t65-ok-{case}"
    rid = f"match-{case}"
    method, params = body
    resp = await modern_post(stack, agent, modern_body(rid, method, params), mcp_method=mcp_method, mcp_name=mcp_name)
    assert resp.status == 200, (resp.status, resp.body[:300])
    msg = resp.single()
    assert msg["id"] == rid and "result" in msg, msg

    (fwd,) = upstream_http(stack, x_agent_id=agent)
    assert fwd["headers"]["mcp-method"] == [mcp_method]
    assert fwd["headers"]["mcp-name"] == [mcp_name]  # forwarded as sent
    assert fwd["headers"]["x-mcp-method"] == [method]
    assert fwd["headers"][tag[0]] == [tag[1]]

    (rec,) = audit_for(stack, agent_id=agent, request_id=rid)
    assert (rec["decision"], rec["output_status"], rec["http_status"]) == ("allow", "success", 200)


async def test_mismatch_is_refused_on_a_pre_2026_session_too(stack):
    """A client on 2025-06-18 has no reason to send Mcp-Method, but a proxy after mcp-guard may
    still route on it: a disagreeing one is refused whatever the protocol version."""
    agent = "t65-legacy"
    s = RawSession(stack.url, agent=agent)
    await s.initialize()
    resp = await s.post(tools_call_body("legacy-mm", "echo", '{"text":"hi"}'), headers={"mcp-method": "tools/list"})
    resp.jsonrpc_error(400, "legacy-mm", HEADER_MISMATCH)
    ok = await s.post(tools_call_body("legacy-ok", "echo", '{"text":"hi"}'), headers={"mcp-method": "tools/call"})
    assert ok.status == 200 and ok.single()["result"]["content"][0]["text"] == "hi"
    await s.delete()
    # Only the matching call reached the server.
    forwarded = upstream_http(stack, x_agent_id=agent, x_mcp_method="tools/call")
    assert [e["headers"].get("mcp-method") for e in forwarded] == [["tools/call"]]
    (rec,) = audit_for(stack, agent_id=agent, request_id="legacy-mm")
    assert (rec["output_status"], rec["error_code"], rec["http_status"]) == ("invalid_request", HEADER_MISMATCH, 400)


async def test_duplicated_routing_header_is_refused(stack):
    """Two Mcp-Name values (the body's and another): whichever one a proxy reads, some reader
    of the request sees a name the body does not carry. Refused like a mismatch (the SDK server
    does the same: "mcp-name header appears more than once")."""
    agent, rid = "t65-dup", "dup-1"
    body = modern_body(rid, *ECHO)
    headers = [
        ("accept", "application/json, text/event-stream"), ("content-type", "application/json"),
        ("x-agent-id", agent), ("mcp-protocol-version", MODERN), ("mcp-method", "tools/call"),
        ("mcp-name", "echo"), ("mcp-name", "delete_repo"),
    ]  # fmt: skip
    async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        r = await http.post(stack.url, content=body, headers=headers)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    msg = r.json()
    assert (msg["id"], msg["error"]["code"]) == (rid, HEADER_MISMATCH), msg
    assert upstream_http(stack, x_agent_id=agent) == []
    (rec,) = audit_for(stack, agent_id=agent, request_id=rid)
    assert (rec["output_status"], rec["error_code"], rec["http_status"]) == ("invalid_request", HEADER_MISMATCH, 400)


async def test_task_id_routing_header_is_checked_not_refused(stack):
    """Tasks extension (SEP-2663, Final): tasks/get, tasks/update and tasks/cancel carry
    Mcp-Name = params.taskId so that load balancers can route to the instance holding the task.
    A matching one is forwarded (whatever the server then says); one naming another task is a
    mismatch, refused like the others."""
    body = modern_body("task-ok", "tasks/get", {"taskId": "t65-task-1"})
    ok = await modern_post(stack, "t65-task-ok", body, mcp_method="tasks/get", mcp_name="t65-task-1")
    # Forwarded (the demo server has no tasks: its answer does not matter here).
    forwarded = upstream_http(stack, x_agent_id="t65-task-ok")
    assert len(forwarded) == 1, f"not forwarded; the client got {ok.status} {ok.body[:300]!r}"
    assert forwarded[0]["headers"]["mcp-name"] == ["t65-task-1"]
    (rec,) = audit_for(stack, agent_id="t65-task-ok", request_id="task-ok")
    assert (rec["method"], rec["decision"]) == ("tasks/get", "allow")

    body = modern_body("task-bad", "tasks/get", {"taskId": "t65-task-1"})
    bad = await modern_post(stack, "t65-task-bad", body, mcp_method="tasks/get", mcp_name="t65-task-2")
    bad.jsonrpc_error(400, "task-bad", HEADER_MISMATCH)
    assert upstream_http(stack, x_agent_id="t65-task-bad") == []
