"""The SDK matrix: the same end-to-end scenario for every pairing of an official MCP SDK as
client with an official MCP SDK as server, through Envoy + mcp-guard, over both transports.

SDKs (installed by `make sdks` besides `make venv`):
  py2  Python SDK 2.x (PyPI mcp, the project venv): server examples/sdk/py2/server.py (the demo
       server's build_server), client examples/sdk/py_client.py;
  py1  Python SDK 1.x (PyPI mcp<2, .venv-mcp1/): examples/sdk/py1/server.py, the same py_client.py;
  ts   TypeScript SDK (npm @modelcontextprotocol/sdk, examples/sdk/ts/node_modules):
       examples/sdk/ts/server.mjs, client.mjs.
Transports: Streamable HTTP (/mcp) and the legacy HTTP+SSE transport of 2024-11-05 (GET /sse,
POST /messages...; the response comes on the GET stream, the POST is answered 202).

Each client is a CLI that drives the SDK's own client session (initialize, tools/list,
tools/call echo, fail, delete_repo) and prints one JSON object with what it observed; each
server implements the demo server's tools and writes the demo server's call log (tools that
reached it, with the tag headers it received). One stack per (server SDK, transport), started on
first use and kept for the module. Every pairing has its own agent id (a clone of demo-agent),
so its audit records and call-log lines are told apart from the others'.

MCP 2026-07-28: the Python SDK 2.x client also runs in its 2026 mode (`Client(mode="auto")`:
server/discover, then stateless requests with `_meta`, MCP-Protocol-Version / Mcp-Method /
Mcp-Name, no session) against each server SDK over Streamable HTTP. The Python SDK 2.x server
answers it at 2026-07-28; the Python SDK 1.x and TypeScript (1.32.2, whose newest revision is
2025-11-25) servers do not know server/discover, so the SDK client falls back to the initialize
handshake, through the same endpoint. tests/e2e/test_71_sdk_2026.py covers the 2026 pair in depth.

SSE framing seen per SDK server (saved, byte for byte, under tests/e2e/data/sse/ for the fuzz
corpus): Python 1.x and 2.x (sse-starlette) `event: message\\r\\ndata: ...\\r\\n\\r\\n` (CRLF);
TypeScript `event: message\\ndata: ...\\n\\n` (LF).
"""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import start_stack, test_policy
from helpers import (
    ACCEPT,
    DENIED,
    INVALID_REQUEST,
    audit_for,
    raw_request,
    upstream_requests,
)

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
SDK_DIR = REPO / "examples" / "sdk"
PY2 = sys.executable  # the project venv (.venv), Python SDK 2.x
PY1 = REPO / ".venv-mcp1" / "bin" / "python"
NODE = shutil.which("node") or "/usr/bin/node"
TS_MODULES = SDK_DIR / "ts" / "node_modules" / "@modelcontextprotocol" / "sdk"
CORPUS = Path(__file__).resolve().parent / "data" / "sse"

SDKS = ("py2", "py1", "ts")
TRANSPORTS = ("streamable-http", "sse")
SHORT = {"streamable-http": "shttp", "sse": "sse"}
SERVER_NAMES = {"py2": "mcp-guard-demo", "py1": "mcp-guard-demo-py1", "ts": "mcp-guard-demo-ts"}
# What every pairing's agent (a clone of demo-agent) may call; mcp-guard curates tools/list to
# exactly these (each server SDK implements all of them, plus delete_repo).
DEMO_TOOLS = {"echo", "add", "search", "fail"}
# Legacy transport: a call whose response never comes on the GET stream (the POST was refused
# by mcp-guard, which the SDK clients do not read) is given up after this many seconds.
DENY_TIMEOUT = 2.0
CLIENT_TIMEOUT = 90.0  # above the clients' own overall limit (3 x --timeout), so they report first
BATCH_AGENT = "mx-batch"
FRAMING_AGENT = "mx-framing"
BATCH_VERSION = "2025-03-26"  # the one protocol version with JSON-RPC batches
# The plugin's max_batch_calls in the batch tests' policy (the default 1 forwards no batch of
# more than one call): a batch of up to this many calls of one tool is forwarded.
MAX_BATCH_CALLS = 2


def agent_for(client: str, server: str, transport: str) -> str:
    return f"mx-{client}-{server}-{SHORT[transport]}"


MODERN = "2026-07-28"
# The Python SDK 2.x client in its 2026-07-28 mode ("auto": server/discover, falling back to
# initialize on a server that does not know it).
MODERN_CLIENT = "py2"
# What each server SDK ends up speaking with that client.
MODERN_OUTCOME = {"py2": MODERN, "py1": "2025-11-25", "ts": "2025-11-25"}


def modern_agent_for(server: str) -> str:
    return f"mx-py2m-{server}-shttp"


ALL_AGENTS = [agent_for(c, s, t) for c in SDKS for s in SDKS for t in TRANSPORTS] + [
    modern_agent_for(s) for s in SDKS
] + [BATCH_AGENT, FRAMING_AGENT]


def server_command(server: str, transport: str) -> list[str]:
    args = ["--host", "{host}", "--port", "{port}", "--call-log", "{call_log}", "--transport", transport]
    if server == "py2":
        return [PY2, str(SDK_DIR / "py2" / "server.py"), *args]
    if server == "py1":
        return [str(PY1), str(SDK_DIR / "py1" / "server.py"), *args]
    return [NODE, str(SDK_DIR / "ts" / "server.mjs"), *args]


def client_command(client: str) -> list[str]:
    if client == "py2":
        return [PY2, str(SDK_DIR / "py_client.py")]
    if client == "py1":
        return [str(PY1), str(SDK_DIR / "py_client.py")]
    return [NODE, str(SDK_DIR / "ts" / "client.mjs")]


def require_sdks(*sdks: str) -> None:
    if "py1" in sdks and not PY1.exists():
        pytest.fail(f"{PY1} is missing: install the Python SDK 1.x venv with `make sdks`", pytrace=False)
    if "ts" in sdks and not TS_MODULES.is_dir():
        pytest.fail(f"{TS_MODULES} is missing: install the TypeScript SDK with `make sdks`", pytrace=False)


# --------------------------------------------------------------------------- fixtures


class Stacks:
    """One stack per (server SDK, transport), started on first use, stopped at module end."""

    def __init__(self, factory: pytest.TempPathFactory, policy: dict) -> None:
        self._factory = factory
        self._policy = policy
        self._running: dict[tuple[str, str, int | None], tuple[Any, Any]] = {}

    def get(self, server: str, transport: str, max_batch_calls: int | None = None) -> Any:
        """The stack of this server SDK and transport; with max_batch_calls, a separate one whose
        policy sets it (so that only the batch tests depend on that setting)."""
        key = (server, transport, max_batch_calls)
        if key not in self._running:
            require_sdks(server)
            policy = copy.deepcopy(self._policy)
            if max_batch_calls is not None:
                policy["max_batch_calls"] = max_batch_calls
            gen = start_stack(self._factory, policy, server_command=server_command(server, transport))
            self._running[key] = (gen, next(gen))
        return self._running[key][1]

    def close(self) -> None:
        """Stops every stack, then fails if any access log did not validate (start_stack's
        teardown after Stack.stop(): helpers.validate_at_teardown)."""
        failures = []
        for key, (gen, _) in self._running.items():
            try:
                next(gen)  # runs start_stack to its end: Stack.stop(), then the log check
            except StopIteration:
                pass
            except AssertionError as exc:
                failures.append(f"{key}: {exc}")
        self._running.clear()
        assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory):
    policy = test_policy()
    agents = policy["policy"]["agents"]
    for name in ALL_AGENTS:
        agents[name] = copy.deepcopy(agents["demo-agent"])  # echo, add, search, fail
    s = Stacks(tmp_path_factory, policy)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def stack(stacks: Stacks, server: str, transport: str):
    """This test's stack (named `stack` so conftest attaches its logs to a failure report)."""
    return stacks.get(server, transport)


# One client run per pairing, shared by the tests that read its outcome (the audit tests of the
# legacy transport read the records the pairing test's run left); a test run alone runs it.
_runs: dict[tuple[str, str, str], dict] = {}


def run_pairing(stack: Any, client: str, server: str, transport: str) -> dict:
    key = (client, server, transport)
    if key not in _runs:
        require_sdks(client)
        path = "/sse" if transport == "sse" else "/mcp"
        url = f"http://127.0.0.1:{stack.listen_port}{path}"
        cmd = [
            *client_command(client), "--url", url, "--agent", agent_for(client, server, transport),
            "--transport", transport, "--scenario", "basic", "--timeout", "20",
            "--deny-timeout", str(DENY_TIMEOUT),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, cwd=REPO)
        assert proc.returncode == 0, f"{client} client failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["sdk"] == client and out["transport"] == transport, out
        _runs[key] = out
    return _runs[key]


def call_of(out: dict, tool: str) -> dict:
    (entry,) = [c for c in out["calls"] if c["tool"] == tool]
    return entry


def post_of(out: dict, request_id: Any) -> dict:
    """The one POST whose JSON-RPC message had this id (a call is sent once)."""
    posts = [p for p in out["posts"] if isinstance(p["request"], dict) and p["request"].get("id") == request_id]
    assert len(posts) == 1, (request_id, out["posts"])
    return posts[0]


def pairings(transports: tuple[str, ...] = TRANSPORTS) -> Callable:
    """Parametrize over server SDK (outermost, so one stack's tests run together) x transport
    x client SDK."""
    params = [
        pytest.param(s, t, c, id=f"{c}-client-{s}-server-{SHORT[t]}") for s in SDKS for t in transports for c in SDKS
    ]
    return pytest.mark.parametrize(("server", "transport", "client"), params)


# --------------------------------------------------------------------------- the matrix


@pairings()
def test_pairing_tags_enforces_and_audits(stack, server, transport, client):
    agent = agent_for(client, server, transport)
    out = run_pairing(stack, client, server, transport)

    # initialize + tools/list through the proxy, answered by this server SDK and curated by
    # mcp-guard to the agent's allowed tools (delete_repo is hidden).
    assert out["server_name"] == SERVER_NAMES[server], out
    assert isinstance(out["protocol_version"], str) and out["protocol_version"], out
    assert set(out["tools"]) == DEMO_TOOLS, out["tools"]

    # The allowed calls came back through the SDK: echo's text, fail as a tool error.
    echo, fail, denied = call_of(out, "echo"), call_of(out, "fail"), call_of(out, "delete_repo")
    assert echo.get("result") == {"is_error": False, "text": [echo["arguments"]["text"]]}, echo
    assert fail.get("result", {}).get("is_error") is True, fail
    assert any(fail["arguments"]["reason"] in t for t in fail["result"]["text"]), fail

    # The denied call: mcp-guard answered the POST itself with JSON-RPC error -32003 (HTTP 200,
    # application/json), carrying the call's id.
    wire = post_of(out, denied["request_id"])
    assert wire["status"] == 200 and wire["content_type"].split(";")[0] == "application/json", wire
    error = wire["response"]
    assert error["jsonrpc"] == "2.0" and error["id"] == denied["request_id"] and "result" not in error, error
    assert error["error"]["code"] == DENIED and error["error"]["message"], error
    assert "result" not in denied, denied
    if transport == "streamable-http":
        # ... and the SDK client surfaced it as a JSON-RPC error with that code and message.
        assert denied.get("error") == {"code": DENIED, "message": error["error"]["message"]}, denied
    else:
        # Legacy transport: the SDKs do not read a POST's body (they expect 202 and the answer on
        # the GET stream), so the SDK call only ends by its timeout; the refusal is on the wire.
        assert denied.get("timeout") == DENY_TIMEOUT, denied
        # The allowed calls were answered 202 and their results came on the GET stream.
        for call in (echo, fail):
            assert post_of(out, call["request_id"])["status"] == 202, out["posts"]

    # What reached the server: echo and fail, each with exactly one value of each tag header
    # (the filter's), never delete_repo.
    reached = [c for c in stack.calls() if agent in c["headers"].get("x-agent-id", [])]
    assert [c["tool"] for c in reached] == ["echo", "fail"], reached
    for c in reached:
        h = c["headers"]
        assert h["x-agent-id"] == [agent], h
        assert h["x-mcp-method"] == ["tools/call"], h
        assert h["x-mcp-tool-name"] == [c["tool"]], h
        if transport == "streamable-http":
            assert h["mcp-session-id"] == [out["session_id"]], h
    assert not [c for c in stack.calls() if c["tool"] == "delete_repo"], "a denied call reached the server"

    # Audit: one record per call on its POST, schema-checked (wait_for_audit), right id/decision.
    (rec,) = audit_for(stack, agent_id=agent, tool_name="delete_repo", http_method="POST")
    assert (rec["method"], rec["decision"], rec["output_status"]) == ("tools/call", "deny", "denied"), rec
    assert (rec["error_code"], rec["http_status"], rec["request_id"]) == (DENIED, 200, denied["request_id"]), rec
    if transport == "streamable-http":
        assert rec["session_id"] == out["session_id"], rec
        for call, status in ((echo, "success"), (fail, "tool_error")):
            (rec,) = audit_for(stack, agent_id=agent, tool_name=call["tool"], http_method="POST")
            assert (rec["method"], rec["decision"], rec["output_status"]) == ("tools/call", "allow", status), rec
            assert (rec["error_code"], rec["http_status"]) == (None, 200), rec
            assert (rec["request_id"], rec["session_id"]) == (call["request_id"], out["session_id"]), rec
        (rec,) = audit_for(stack, agent_id=agent, method="initialize")
        assert (rec["decision"], rec["output_status"]) == ("allow", "success"), rec
        (rec,) = audit_for(stack, agent_id=agent, method="tools/list")
        assert (rec["decision"], rec["output_status"]) == ("allow", "success"), rec


@pairings(("sse",))
def test_legacy_post_answered_202_is_audited_deferred(stack, server, transport, client):
    """Legacy transport, the POST side: a forwarded call answered 202 is recorded with
    output_status "deferred" (its outcome comes on the GET stream), one record per call, with
    the session id the endpoint event gave (Python `session_id=`, TypeScript `sessionId=`)."""
    agent = agent_for(client, server, transport)
    out = run_pairing(stack, client, server, transport)
    assert out["session_id"], out
    for tool in ("echo", "fail"):
        call = call_of(out, tool)
        (rec,) = audit_for(stack, agent_id=agent, tool_name=tool, http_method="POST")
        assert (rec["method"], rec["decision"], rec["output_status"]) == ("tools/call", "allow", "deferred"), rec
        assert (rec["error_code"], rec["http_status"], rec["request_id"]) == (None, 202, call["request_id"]), rec
        assert rec["session_id"] == out["session_id"], rec
    (rec,) = audit_for(stack, agent_id=agent, tool_name="delete_repo", http_method="POST")
    assert rec["session_id"] == out["session_id"], rec


@pairings(("sse",))
def test_legacy_get_stream_line_carries_correlated_records(stack, server, transport, client):
    """The GET /sse stream's access-log line carries one extra record per response it
    matched by (session, id) to a deferred POST: "correlated": true, the POST's method, tool,
    request id, input hash, session and trace id, and the outcome read from the stream. A denied
    call (never forwarded) has none. The line is written when the client closes the stream.
    (Seen with the filter of 4bdf8f7, about once in 30 pairings: a response on the stream with
    no correlated record, as if it came before its POST stored the deferred call; the POST
    stores it only when its own 202 stream ends.)"""
    agent = agent_for(client, server, transport)
    out = run_pairing(stack, client, server, transport)
    for tool, status in (("echo", "success"), ("fail", "tool_error")):
        call = call_of(out, tool)
        (post,) = audit_for(stack, agent_id=agent, tool_name=tool, http_method="POST")
        (rec,) = audit_for(stack, agent_id=agent, tool_name=tool, correlated=True)
        assert (rec["method"], rec["decision"], rec["output_status"]) == ("tools/call", "allow", status), rec
        assert (rec["request_id"], rec["session_id"]) == (call["request_id"], out["session_id"]), rec
        for field in ("input_hash", "trace_id", "session_id"):
            assert rec[field] == post[field], (field, rec, post)
        assert rec["error_code"] is None, rec
    # The correlated records ride on the GET stream's one access-log line, awaited above: a
    # correlated record of the denied call would be there by now.
    assert [r for r in stack.audit_records()
            if r["agent_id"] == agent and r["tool_name"] == "delete_repo" and r.get("correlated")] == []  # fmt: skip


@pairings(("sse",))
def test_correlated_record_latency_ends_at_the_response(stack, server, transport, client):
    """A correlated record's latency_ms runs from the POST to the moment its response was
    seen on the GET stream (schema: "to the moment the outcome was known (the matching
    response ...)"), not to the end of the GET stream. Here the response follows the POST within
    milliseconds, while the stream stays open for more than DENY_TIMEOUT (the denied call's
    timeout), so a latency above that measures the stream's lifetime."""
    agent = agent_for(client, server, transport)
    run_pairing(stack, client, server, transport)
    for tool in ("echo", "fail"):
        (rec,) = audit_for(stack, agent_id=agent, tool_name=tool, correlated=True)
        assert rec["latency_ms"] < DENY_TIMEOUT * 1000, rec


# --------------------------------------------------------------------------- MCP 2026-07-28

_modern_runs: dict[str, dict] = {}


def run_modern(stack: Any, server: str) -> dict:
    """The Python SDK 2.x client in mode auto (2026-07-28 when the server knows it), scenario
    basic, against this server SDK over Streamable HTTP; one run per server, shared."""
    if server not in _modern_runs:
        url = f"http://127.0.0.1:{stack.listen_port}/mcp"
        cmd = [
            *client_command(MODERN_CLIENT), "--url", url, "--agent", modern_agent_for(server),
            "--transport", "streamable-http", "--mode", "auto", "--scenario", "basic", "--timeout", "20",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, cwd=REPO)
        assert proc.returncode == 0, f"2026 client failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["sdk"] == MODERN_CLIENT and out["mode"] == "auto", out
        _modern_runs[server] = out
    return _modern_runs[server]


def modern_pairings() -> Callable:
    params = [pytest.param(s, "streamable-http", id=f"py2-2026-client-{s}-server-shttp") for s in SDKS]
    return pytest.mark.parametrize(("server", "transport"), params)


@modern_pairings()
def test_2026_client_pairing_tags_enforces_and_audits(stack, server, transport):
    """The 2026-07-28 pair (Python SDK 2.x client and server): server/discover, then stateless
    requests (no Mcp-Session-Id anywhere, every POST with MCP-Protocol-Version: 2026-07-28 and
    `_meta`); tools/list curated, echo and fail forwarded and tagged, delete_repo denied by
    mcp-guard (-32003 surfaced by the SDK), one audit record per call with no session. Against
    the 1.x and TypeScript servers the same client falls back to initialize and gets a session,
    and mcp-guard treats it as it treats any 2025 client."""
    agent = modern_agent_for(server)
    out = run_modern(stack, server)
    modern = MODERN_OUTCOME[server] == MODERN

    assert out["protocol_version"] == MODERN_OUTCOME[server], out
    assert out["server_name"] == SERVER_NAMES[server], out
    assert set(out["tools"]) == DEMO_TOOLS, out["tools"]
    first = out["posts"][0]["request"]
    assert first["method"] == "server/discover", out["posts"][0]
    if modern:
        assert out["session_id"] is None, out
        for post in out["posts"]:
            message = post["request"]
            assert post["headers"].get("mcp-protocol-version") == MODERN, post
            assert post["headers"].get("mcp-method") == message["method"], post
            assert "mcp-session-id" not in post["headers"], post
            assert message["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] == MODERN, post
        assert [p["request"]["method"] for p in out["posts"]][:2] == ["server/discover", "tools/list"], out["posts"]
        # A curated list leaves mcp-guard as private, whatever the server said.
        assert out["list_cache"]["cacheScope"] == "private", out["list_cache"]
    else:
        assert out["session_id"], out
        assert "initialize" in [p["request"]["method"] for p in out["posts"]], out["posts"]

    echo, fail, denied = call_of(out, "echo"), call_of(out, "fail"), call_of(out, "delete_repo")
    assert echo.get("result") == {"is_error": False, "text": [echo["arguments"]["text"]]}, echo
    assert fail.get("result", {}).get("is_error") is True, fail
    wire = post_of(out, denied["request_id"])
    assert wire["status"] == 200 and wire["content_type"].split(";")[0] == "application/json", wire
    assert wire["response"]["id"] == denied["request_id"], wire
    assert wire["response"]["error"]["code"] == DENIED, wire
    assert denied.get("error") == {"code": DENIED, "message": wire["response"]["error"]["message"]}, denied
    if modern:
        assert wire["headers"]["mcp-name"] == "delete_repo", wire

    reached = [c for c in stack.calls() if agent in c["headers"].get("x-agent-id", [])]
    assert [c["tool"] for c in reached] == ["echo", "fail"], reached
    for c in reached:
        h = c["headers"]
        assert (h["x-agent-id"], h["x-mcp-method"], h["x-mcp-tool-name"]) == ([agent], ["tools/call"], [c["tool"]]), h
        assert ("mcp-session-id" in h) is not modern, h

    session = None if modern else out["session_id"]
    for call, decision, status in ((echo, "allow", "success"), (fail, "allow", "tool_error"),
                                   (denied, "deny", "denied")):  # fmt: skip
        (rec,) = audit_for(stack, agent_id=agent, tool_name=call["tool"], http_method="POST")
        assert (rec["method"], rec["decision"], rec["output_status"]) == ("tools/call", decision, status), rec
        assert (rec["request_id"], rec["session_id"], rec["http_status"]) == (call["request_id"], session, 200), rec
    (rec,) = audit_for(stack, agent_id=agent, method="server/discover")
    if modern:
        assert (rec["decision"], rec["output_status"], rec["session_id"]) == ("allow", "success", None), rec
    else:
        # Forwarded; the older server refused the method it does not know (the Python SDK 1.x
        # server with 400 -32600 and, oddly, an Mcp-Session-Id), so the client fell back.
        assert (rec["decision"], rec["output_status"]) == ("allow", "error"), rec
        assert rec["http_status"] >= 400, rec
    (rec,) = audit_for(stack, agent_id=agent, method="tools/list")
    assert (rec["decision"], rec["output_status"], rec["session_id"]) == ("allow", "success", session), rec
    if modern:
        assert [r for r in stack.audit_records() if r["agent_id"] == agent and r["method"] == "initialize"] == []


@modern_pairings()
def test_2026_client_pairing_audit_records_the_protocol_version(stack, server, transport):
    """Every audit record of the 2026 client's calls carries the protocol version the call was
    made at: 2026-07-28 (header and `_meta`) with the Python SDK 2.x server; the negotiated
    version (MCP-Protocol-Version header) after the fallback to initialize with the others.
    (Needs the audit field `protocol_version`, branch h-version.)"""
    agent = modern_agent_for(server)
    out = run_modern(stack, server)
    for tool in ("echo", "fail", "delete_repo"):
        (rec,) = audit_for(stack, agent_id=agent, tool_name=tool, http_method="POST")
        assert rec["protocol_version"] == MODERN_OUTCOME[server], rec
    (rec,) = audit_for(stack, agent_id=agent, method="server/discover")
    assert rec["protocol_version"] == MODERN, rec
    assert out["protocol_version"] == MODERN_OUTCOME[server], out


# --------------------------------------------------------------------------- SSE framing


@pytest.mark.parametrize("transport", ["streamable-http"])
@pytest.mark.parametrize("server", SDKS)
async def test_sse_framing_of_each_server_sdk_passes_through_unchanged(stack, server, transport):
    """A tools/call answered as an SSE stream reaches the client byte for byte as this SDK
    server frames it: the same bytes as the corpus file captured from it
    (tests/e2e/data/sse/<sdk>-streamable-http-post.sse; regenerate it if an SDK upgrade changes
    the framing)."""
    headers = await raw_initialize(stack.url, FRAMING_AGENT, "2025-06-18")
    body = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"corpus"}}}'
    resp = await raw_request(stack.url, "POST", body, headers)
    assert resp.status == 200 and resp.content_type.startswith("text/event-stream"), resp
    assert resp.messages and resp.messages[-1]["id"] == 7, resp
    expected = (CORPUS / f"{server}-streamable-http-post.sse").read_bytes()
    assert resp.body == expected, (resp.body, expected)
    if server == "ts":
        assert b"\r" not in resp.body and resp.body.startswith(b"event: message\ndata: "), resp.body
    else:
        assert resp.body.startswith(b"event: message\r\ndata: ") and resp.body.endswith(b"\r\n\r\n"), resp.body


# --------------------------------------------------------------------------- batches (TS server)


async def raw_initialize(url: str, agent: str, version: str) -> dict[str, str]:
    """Initialize a session by raw HTTP; the headers for its later requests."""
    init = {
        "jsonrpc": "2.0", "id": "init", "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "mx-raw", "version": "0"}},
    }  # fmt: skip
    base = {"x-agent-id": agent, "accept": ACCEPT}
    resp = await raw_request(url, "POST", json.dumps(init).encode(), base)
    assert resp.status == 200, resp
    assert resp.single()["result"]["protocolVersion"] == version, resp.messages
    headers = dict(base, **{"mcp-session-id": resp.headers["mcp-session-id"], "mcp-protocol-version": version})
    note = await raw_request(url, "POST", b'{"jsonrpc":"2.0","method":"notifications/initialized"}', headers)
    assert note.status == 202, note
    return headers


def batch(*calls: tuple[str, str, dict]) -> bytes:
    return json.dumps(
        [{"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": name, "arguments": args}}
         for rid, name, args in calls]  # fmt: skip
    ).encode()


def batch_calls(stack: Any) -> list[dict]:
    return [c for c in stack.calls() if BATCH_AGENT in c["headers"].get("x-agent-id", [])]


@pytest.fixture
def ts_stack(stacks: Stacks):
    return stacks.get("ts", "streamable-http", max_batch_calls=MAX_BATCH_CALLS)


async def test_python_sdk_servers_refuse_batches(stacks):
    """Why the batch tests use the TS server: the Python SDK servers (1.x and 2.x) answer a
    2025-03-26 batch with HTTP 400 and a JSON-RPC error instead of processing it. Sent to the
    upstream directly (not through mcp-guard), to see the server's own behaviour."""
    for server in ("py2", "py1"):
        s = stacks.get(server, "streamable-http")
        upstream = f"http://127.0.0.1:{s.upstream_port}/mcp"
        headers = await raw_initialize(upstream, BATCH_AGENT, BATCH_VERSION)
        before = len(batch_calls(s))
        body = batch(("p1", "echo", {"text": "a"}), ("p2", "echo", {"text": "b"}))
        resp = await raw_request(upstream, "POST", body, headers)
        assert resp.status == 400, (server, resp.status, resp.body[:300])
        assert "error" in resp.single(), (server, resp.messages)
        assert len(batch_calls(s)) == before, server


async def test_batch_of_two_echo_calls_is_forwarded_and_audited(ts_stack):
    """A 2025-03-26 batch of calls to one tool is forwarded whole; the TS server answers
    both (one SSE stream, two events); two audit records; both calls reached the server tagged."""
    stack = ts_stack
    headers = await raw_initialize(stack.url, BATCH_AGENT, BATCH_VERSION)
    before = len(batch_calls(stack))
    body = batch(("e1", "echo", {"text": "one"}), ("e2", "echo", {"text": "two"}))
    resp = await raw_request(stack.url, "POST", body, headers)
    assert resp.status == 200, (resp.status, resp.body[:400])
    by_id = {m["id"]: m for m in resp.messages}
    assert set(by_id) == {"e1", "e2"}, resp.messages
    assert by_id["e1"]["result"]["content"][0]["text"] == "one", by_id
    assert by_id["e2"]["result"]["content"][0]["text"] == "two", by_id
    reached = batch_calls(stack)[before:]
    assert [(c["tool"], c["arguments"]["text"]) for c in reached] == [("echo", "one"), ("echo", "two")], reached
    for c in reached:
        assert (c["headers"]["x-mcp-tool-name"], c["headers"]["x-mcp-method"]) == (["echo"], ["tools/call"]), c
    for rid in ("e1", "e2"):
        (rec,) = audit_for(stack, agent_id=BATCH_AGENT, request_id=rid)
        assert (rec["tool_name"], rec["decision"], rec["output_status"]) == ("echo", "allow", "success"), rec
        assert rec["session_id"] == headers["mcp-session-id"], rec


async def test_batch_with_a_denied_call_is_refused_whole_with_denied_errors(ts_stack):
    """echo + delete_repo in one batch: HTTP 200 with an array of two -32003 (denied) errors (one
    per id); nothing reaches the server. Audit: both calls `denied`, each with its own policy
    decision (echo allowed, delete_repo denied), as src/filter/tests.rs has it."""
    stack = ts_stack
    headers = await raw_initialize(stack.url, BATCH_AGENT, BATCH_VERSION)
    calls_before, upstream_before = len(batch_calls(stack)), upstream_requests(stack)
    body = batch(("d1", "echo", {"text": "x"}), ("d2", "delete_repo", {"name": "prod"}))
    resp = await raw_request(stack.url, "POST", body, headers)
    assert resp.status == 200, (resp.status, resp.body[:400])
    assert resp.content_type.split(";")[0] == "application/json", resp.content_type
    array = json.loads(resp.body)
    assert isinstance(array, list) and len(array) == 2, array
    assert sorted(m["id"] for m in array) == ["d1", "d2"], array
    for m in array:
        assert m["jsonrpc"] == "2.0" and "result" not in m and m["error"]["code"] == DENIED and m["error"]["message"], m
    assert len(batch_calls(stack)) == calls_before
    assert upstream_requests(stack) == upstream_before, "the batch was forwarded"
    for rid, tool, decision in (("d1", "echo", "allow"), ("d2", "delete_repo", "deny")):
        (rec,) = audit_for(stack, agent_id=BATCH_AGENT, request_id=rid)
        assert (rec["tool_name"], rec["decision"], rec["output_status"]) == (tool, decision, "denied"), rec
        assert (rec["error_code"], rec["http_status"]) == (DENIED, 200), rec


BATCHES_REFUSED_WITH_32600 = {
    # tags could not name both tools
    "different-tools": [("m1", "echo", {"text": "x"}), ("m2", "add", {"a": 1, "b": 2})],
    # more calls than max_batch_calls
    "too-many-calls": [(f"n{i}", "echo", {"text": str(i)}) for i in range(MAX_BATCH_CALLS + 1)],
}


@pytest.mark.parametrize("calls", list(BATCHES_REFUSED_WITH_32600.values()), ids=list(BATCHES_REFUSED_WITH_32600))
async def test_batch_that_tags_cannot_cover_is_refused_with_32600_and_not_forwarded(ts_stack, calls):
    """echo + add in one batch, or more calls than max_batch_calls: HTTP 400 with an array of
    -32600 errors, one per id; nothing reaches the server; one invalid_request record per call."""
    stack = ts_stack
    headers = await raw_initialize(stack.url, BATCH_AGENT, BATCH_VERSION)
    calls_before, upstream_before = len(batch_calls(stack)), upstream_requests(stack)
    ids = sorted(rid for rid, _, _ in calls)
    body = batch(*calls)
    resp = await raw_request(stack.url, "POST", body, headers)
    assert resp.status == 400, (resp.status, resp.body[:400])
    assert resp.content_type.split(";")[0] == "application/json", resp.content_type
    array = json.loads(resp.body)
    assert isinstance(array, list) and sorted(m["id"] for m in array) == ids, array
    for m in array:
        assert "result" not in m and m["error"]["code"] == INVALID_REQUEST and m["error"]["message"], m
    assert len(batch_calls(stack)) == calls_before
    assert upstream_requests(stack) == upstream_before, "the batch was forwarded"
    for rid, tool, _ in calls:
        (rec,) = audit_for(stack, agent_id=BATCH_AGENT, request_id=rid)
        assert (rec["tool_name"], rec["output_status"]) == (tool, "invalid_request"), rec
        assert rec["error_code"] == INVALID_REQUEST, rec
        assert rec["http_status"] == 400, rec
