"""Adversarial responses: a raw upstream (tests/e2e/raw_upstream.py) answers an allowed
tools/call with exact bytes no SDK would send (SSE split at every byte, CR-only line
endings, comments and retry fields, priming events, a 30 MB event, non-JSON error bodies,
202 Accepted, a reset or close mid-event, ids of the other JSON type, member names spelled with
escapes, a result 400 levels deep, a duplicated isError), and the audit record's output_status
is checked. Also: a response gzip-compressed because the client accepted gzip,
a client that leaves mid-response, ids of the other type on a session's GET stream
(cross-stream correlation), the tags an allowed call with a wrong or missing Content-Type
carries upstream (the raw upstream logs every request's headers), and Envoy's memory while a
30 MB event streams through.

Calls are sent without Mcp-Session-Id unless a test says otherwise: without a session the
filter cannot expect the response on another stream, so a response that never came is
`upstream_error`; with one (and an SSE or 202 response) it is `deferred`.
"""
from __future__ import annotations

import json
import re
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from conftest import start_stack
from helpers import (
    ACCEPT,
    HTTP_TIMEOUT,
    RawResponse,
    assert_access_log_valid,
    audit_for,
    raw_request,
    tools_call_body,
    wait_for_audit,
)

pytestmark = pytest.mark.anyio

RAW_UPSTREAM = Path(__file__).resolve().parent / "raw_upstream.py"
IO_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory, base_policy):
    cmd = [sys.executable, str(RAW_UPSTREAM), "--host", "{host}", "--port", "{port}", "--call-log", "{call_log}"]
    yield from start_stack(tmp_path_factory, base_policy, server_command=cmd)


def upstream_log(stack) -> list[dict]:
    if not stack.call_log.exists():
        return []
    return [json.loads(ln) for ln in stack.call_log.read_text(encoding="utf-8").splitlines() if ln.strip()]


def arrived(stack, agent: str) -> list[dict]:
    return [e for e in upstream_log(stack) if e["headers"].get("x-agent-id") == [agent]]


def same_json(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


async def call_scenario(stack, agent: str, scenario: str, rid: Any, session: str | None = None) -> RawResponse | Exception:
    """POST an allowed tools/call (echo: `default` allows it) naming the raw upstream's
    scenario; the response, or the transport error the client saw."""
    headers = {"x-agent-id": agent}
    if session:
        headers["mcp-session-id"] = session
    # The id as raw UTF-8 (the raw upstream's json.dumps answers it \u-escaped).
    body = (f'{{"jsonrpc":"2.0","id":{json.dumps(rid, ensure_ascii=False)},"method":"tools/call",'
            f'"params":{{"name":"echo","arguments":{json.dumps({"scenario": scenario})}}}}}').encode()
    try:
        with anyio.fail_after(IO_TIMEOUT):
            return await raw_request(stack.url, "POST", body, headers)
    except (httpx2.HTTPError, anyio.EndOfStream, ConnectionError) as exc:
        return exc


def record_for(stack, agent: str, rid: Any) -> dict:
    (rec,) = wait_for_audit(
        stack, lambda r: r["agent_id"] == agent and same_json(r["request_id"], rid) and not r.get("correlated")
    )
    assert (rec["method"], rec["tool_name"], rec["decision"]) == ("tools/call", "echo", "allow"), rec
    return rec


def forwarded_once(stack, agent: str, rid: Any, scenario: str) -> dict:
    (entry,) = arrived(stack, agent)
    assert same_json(entry["id"], rid) and entry["arguments"] == {"scenario": scenario}, entry
    assert entry["headers"]["x-mcp-tool-name"] == ["echo"]
    assert entry["headers"]["x-mcp-method"] == ["tools/call"]
    return entry


# scenario, request id, HTTP status the client sees, output_status, error_code, the result text
# the client receives (None: not checked)
RESPONSES = [
    pytest.param("sse-bytewise", "r-bytes", 200, "success", None, "bytewise", id="sse-split-at-every-byte"),
    pytest.param("sse-cr-only", "r-cr", 200, "success", None, "cr only", id="sse-cr-only-line-endings"),
    pytest.param("sse-comments-retry", 7, 200, "success", None, "after comments", id="sse-comments-and-retry"),
    pytest.param("sse-priming-then-result", "r-prime", 200, "success", None, "primed", id="sse-empty-priming-event-first"),
    pytest.param("sse-multiline-data", "r-multi", 200, "success", None, "multi-line", id="sse-data-over-two-lines"),
    pytest.param("sse-priming-only", "r-prime-only", 200, "upstream_error", None, None, id="sse-only-a-priming-event"),
    pytest.param("tool-error", "r-toolerr", 200, "tool_error", None, "it failed", id="result-isError-true"),
    pytest.param("jsonrpc-error", "r-rpcerr", 200, "error", -32602, None, id="jsonrpc-error-on-sse"),
    pytest.param("nested-decoys", "r-decoys", 200, "success", None, "decoys", id="nested-id-isError-error-decoys"),
    pytest.param("server-request-same-id", 5, 200, "tool_error", None, None, id="server-request-reusing-the-id-first"),
    pytest.param("text-404", "r-404", 404, "error", None, None, id="plain-text-404"),
    pytest.param("html-500", "r-500", 500, "upstream_error", None, None, id="html-500"),
    pytest.param("accepted-202", "r-202", 202, "upstream_error", None, None, id="202-accepted-text-no-session"),
    pytest.param("wrong-id-type", 1, 200, "upstream_error", None, None, id="response-id-string-1-for-request-1"),
    pytest.param("wrong-id-type", "1", 200, "upstream_error", None, None, id="response-id-1-for-request-string-1"),
    pytest.param("wrong-then-right", 1, 200, "tool_error", None, None, id="string-1-success-then-own-1-tool-error"),
    pytest.param("wrong-then-right", "1", 200, "tool_error", None, None, id="1-success-then-own-string-1-tool-error"),
    pytest.param("json-ok", "r-\u00e9-\u00fc", 200, "success", None, "json ok", id="response-id-with-u-escapes"),
    pytest.param("json-id-last", "r-last", 200, "success", None, "id last", id="json-id-after-the-result"),
    pytest.param("json-batch-array", "r-array", 200, "success", None, "in an array", id="json-response-in-an-array"),
    pytest.param("json-ok", "r-json", 200, "success", None, "json ok", id="plain-json-control"),
    # Escaped member names are the members every JSON reader decodes them to.
    pytest.param("escaped-tool-error-json", "r-esc-te-j", 200, "tool_error", None, "escaped", id="escaped-result-isError-json"),
    pytest.param("escaped-tool-error-sse", "r-esc-te-s", 200, "tool_error", None, "escaped", id="escaped-result-isError-sse"),
    pytest.param("escaped-is-error-json", "r-esc-ie-j", 200, "tool_error", None, "escaped", id="escaped-isError-only-json"),
    pytest.param("escaped-is-error-sse", "r-esc-ie-s", 200, "tool_error", None, "escaped", id="escaped-isError-only-sse"),
    pytest.param("escaped-error-json", "r-esc-e-j", 200, "error", -32000, None, id="escaped-error-json"),
    pytest.param("escaped-error-sse", "r-esc-e-s", 200, "error", -32000, None, id="escaped-error-sse"),
    # A valid result 400 levels deep is read like any other.
    pytest.param("deep-schema-json", "r-deep-j", 200, "success", None, "deep", id="input-schema-400-deep-json"),
    pytest.param("deep-schema-sse", "r-deep-s", 200, "success", None, "deep", id="input-schema-400-deep-sse"),
    # isError twice: the SDKs keep the last (false), serde_json refuses it; never success.
    pytest.param("duplicate-is-error-json", "r-dup-j", 200, "upstream_error", None, "duplicate", id="duplicate-isError-json"),
    pytest.param("duplicate-is-error-sse", "r-dup-s", 200, "upstream_error", None, "duplicate", id="duplicate-isError-sse"),
]  # fmt: skip


@pytest.mark.parametrize(("scenario", "rid", "status", "output", "code", "text"), RESPONSES)
async def test_response_outcome_is_read_from_the_exact_bytes(stack, request, scenario, rid, status, output, code, text):
    agent = "rsp-" + request.node.callspec.id
    resp = await call_scenario(stack, agent, scenario, rid)
    assert isinstance(resp, RawResponse), resp
    assert resp.status == status, (resp.status, resp.body[:200])
    if text is not None:  # the client got the response unchanged
        (msg,) = [m for m in (resp.messages[0] if resp.messages and isinstance(resp.messages[0], list)
                              else resp.messages) if same_json(m.get("id"), rid)]  # fmt: skip
        assert msg["result"]["content"][0]["text"] == text
    forwarded_once(stack, agent, rid, scenario)
    rec = record_for(stack, agent, rid)
    assert (rec["output_status"], rec["http_status"], rec["error_code"]) == (output, status, code), rec


@pytest.mark.parametrize("scenario", ["reset-mid-event", "close-mid-event"])
async def test_upstream_reset_or_close_mid_event_is_upstream_error(stack, scenario):
    agent, rid = f"rsp-{scenario}", f"r-{scenario}"
    resp = await call_scenario(stack, agent, scenario, rid)
    # The client got the headers and half an event, then the stream broke.
    if isinstance(resp, RawResponse):
        assert not any(same_json(m.get("id"), rid) for m in resp.messages), resp
    forwarded_once(stack, agent, rid, scenario)
    rec = record_for(stack, agent, rid)
    assert rec["output_status"] == "upstream_error", rec
    assert rec["http_status"] == 200, rec


async def test_upstream_reset_mid_event_in_a_session_is_deferred(stack):
    """Same reset, but the call belongs to a session: the server may still answer it on a
    resumed stream (GET + Last-Event-ID), so the schema calls it `deferred` ("a Streamable
    HTTP SSE stream that ended before the response")."""
    agent, rid = "rsp-reset-session", "r-reset-s"
    await call_scenario(stack, agent, "reset-mid-event", rid, session="sess-reset-1")
    forwarded_once(stack, agent, rid, "reset-mid-event")
    rec = record_for(stack, agent, rid)
    assert (rec["output_status"], rec["session_id"]) == ("deferred", "sess-reset-1"), rec


async def test_202_in_a_session_is_deferred_and_a_wrong_typed_id_on_the_get_stream_does_not_settle_it(stack):
    """1 vs "1" across streams: POSTs with ids 1 and "2" are answered 202 (legacy style).
    Another session's GET stream answering 1 and "2" settles nothing; the own session's GET
    stream then carries successes for "1" and 2 before tool errors for 1 and "2": the
    correlated records must be the tool errors."""
    agent, session = "rsp-cross-stream", "sess-cross-1"
    for rid in (1, "2"):
        resp = await call_scenario(stack, agent, "accepted-202", rid, session=session)
        assert isinstance(resp, RawResponse) and resp.status == 202, resp
        rec = record_for(stack, agent, rid)
        assert rec["output_status"] == "deferred", rec
    def stream(events: list[dict]) -> str:
        return stack.url + "?events=" + urllib.parse.quote(json.dumps(events, separators=(",", ":")))

    # Another session's stream answering the same ids settles nothing.
    other = await raw_request(stream([{"id": 1}, {"id": "2"}]), "GET", None,
                              {"x-agent-id": agent, "mcp-session-id": "sess-cross-OTHER"})  # fmt: skip
    assert other.status == 200 and len(other.messages) == 2, other
    # That GET stream's access-log line is written when it ends, with any record it correlated:
    # once its own record is there, so would be a wrongly settled call.
    (get,) = audit_for(stack, agent_id=agent, session_id="sess-cross-OTHER", http_method="GET")
    assert (get["http_status"], get["correlated"] if "correlated" in get else None) == (200, None), get
    assert [r for r in stack.audit_records() if r["agent_id"] == agent and r.get("correlated")] == []

    events = [{"id": "1", "is_error": False}, {"id": 2, "is_error": False},
              {"id": 1, "is_error": True}, {"id": "2", "is_error": True}]  # fmt: skip
    get = await raw_request(stream(events), "GET", None, {"x-agent-id": agent, "mcp-session-id": session})
    assert get.status == 200 and len(get.messages) == 4, get
    corr = wait_for_audit(stack, lambda r: r["agent_id"] == agent and r.get("correlated") is True, count=2)
    got = {json.dumps(r["request_id"]): r["output_status"] for r in corr}
    assert got == {"1": "tool_error", '"2"': "tool_error"}, corr


async def test_client_disconnect_mid_response_without_a_session_is_client_disconnected(stack):
    """The client leaves after the first event; with no session the response cannot come
    later on another stream, so the call ends client_disconnected."""
    agent, rid = "rsp-client-gone", "r-gone"
    body = tools_call_body(rid, "echo", '{"scenario":"sse-slow"}')
    got = b""
    with anyio.fail_after(IO_TIMEOUT):
        async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            async with http.stream("POST", stack.url, content=body, headers={
                    "x-agent-id": agent, "content-type": "application/json", "accept": ACCEPT}) as resp:  # fmt: skip
                assert resp.status_code == 200
                async for chunk in resp.aiter_raw():
                    got += chunk
                    if b"notifications/progress" in got:
                        break  # leaving the block closes the connection mid-stream
    assert b"too late" not in got
    forwarded_once(stack, agent, rid, "sse-slow")
    rec = record_for(stack, agent, rid)
    assert (rec["output_status"], rec["http_status"]) == ("client_disconnected", 200), rec


@pytest.mark.parametrize("content_type", ["text/plain", None], ids=["text-plain", "missing"])
async def test_allowed_call_with_wrong_or_missing_content_type_is_tagged_upstream(stack, content_type):
    agent = f"ct-up-{content_type or 'none'}".replace("/", "-")
    headers = {"x-agent-id": agent, "accept": ACCEPT}
    if content_type:
        headers["content-type"] = content_type
    body = tools_call_body("ct-ok", "echo", '{"scenario":"json-ok"}')
    async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        resp = await http.post(stack.url, content=body, headers=headers)
    assert resp.status_code == 200
    (entry,) = arrived(stack, agent)
    assert entry["headers"].get("content-type") == ([content_type] if content_type else None)
    assert entry["headers"]["x-mcp-tool-name"] == ["echo"]
    assert entry["headers"]["x-mcp-method"] == ["tools/call"]
    assert entry["headers"]["x-agent-id"] == [agent]
    rec = record_for(stack, agent, "ct-ok")
    assert rec["output_status"] == "success"


async def test_outcome_of_a_response_compressed_for_the_client_is_still_read(stack):
    """SDK clients send Accept-Encoding: gzip (httpx default). A server behind a compression
    middleware then gzips its JSON response; the audit must still show the outcome (the
    filter may strip Accept-Encoding upstream, or read the body decompressed)."""
    agent, rid = "rsp-gzip", "r-gzip"
    headers = {"x-agent-id": agent, "accept-encoding": "gzip, deflate"}
    resp = await raw_request(stack.url, "POST", tools_call_body(rid, "echo", '{"scenario":"json-gzip"}'), headers)
    assert resp.status == 200
    assert resp.single()["result"]["content"][0]["text"] == "compressed"  # httpx decoded it if gzipped
    forwarded_once(stack, agent, rid, "json-gzip")
    rec = record_for(stack, agent, rid)
    assert rec["output_status"] == "success", rec


async def test_a_list_response_encoded_despite_accept_encoding_is_refused_not_forwarded(stack):
    """mcp-guard asks the server for an identity-encoded body; one that gzips its tools/list
    anyway cannot be curated, and the client must not get every tool it lists: a 502 with a
    JSON-RPC error instead. The same list sent plain is curated."""
    agent = "rsp-list-gzip"  # the `default` rule set: echo only
    body = json.dumps({"jsonrpc": "2.0", "id": "l-gz", "method": "tools/list",
                       "params": {"cursor": "gzip-anyway"}}).encode()  # fmt: skip
    refused = r'^mcp_guard_refusals\{[^}]*mcp_reason="response_encoding"[^}]*\} (\d+)$'

    def count() -> int:
        m = re.search(refused, stack.admin_get("/stats/prometheus"), re.M)
        return int(m.group(1)) if m else 0

    before = count()
    resp = await raw_request(stack.url, "POST", body, {"x-agent-id": agent})
    resp.jsonrpc_error(502, "l-gz", -32603)
    assert "content-encoding" not in resp.headers
    assert b"delete_repo" not in resp.body
    (entry,) = arrived(stack, agent)
    assert entry["headers"]["accept-encoding"] == ["identity"]
    (rec,) = wait_for_audit(stack, lambda r: r["agent_id"] == agent)
    assert (rec["method"], rec["output_status"], rec["error_code"], rec["http_status"]) == (
        "tools/list", "upstream_error", -32603, 502), rec  # fmt: skip
    assert (rec["refusal"], count()) == ("response_encoding", before + 1), rec

    agent = "rsp-list-plain"
    body = json.dumps({"jsonrpc": "2.0", "id": "l-pl", "method": "tools/list"}).encode()
    resp = await raw_request(stack.url, "POST", body, {"x-agent-id": agent})
    assert resp.status == 200
    assert [t["name"] for t in resp.single()["result"]["tools"]] == ["echo"]


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


async def test_30mb_single_sse_event_is_success_without_envoy_holding_it(stack):
    pid = stack.envoy.pid
    # Warm up both workers' VMs and connection pools with a couple of normal calls.
    for i in range(4):
        warm = await call_scenario(stack, "rsp-warm", "json-ok", f"warm-{i}")
        assert isinstance(warm, RawResponse) and warm.status == 200
    rss_before, hwm_before = vm_kib(pid, "VmRSS"), vm_kib(pid, "VmHWM")

    agent, rid = "rsp-30mb", "r-30mb"
    body = tools_call_body(rid, "echo", '{"scenario":"sse-30mb"}')
    size, head, tail = 0, b"", b""
    t0 = time.monotonic()
    with anyio.fail_after(IO_TIMEOUT):
        async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            async with http.stream("POST", stack.url, content=body, headers={
                    "x-agent-id": agent, "content-type": "application/json", "accept": ACCEPT}) as resp:  # fmt: skip
                assert resp.status_code == 200
                async for chunk in resp.aiter_raw():
                    if len(head) < 200:
                        head += chunk[:200]
                    size += len(chunk)
                    tail = (tail + chunk)[-200:]
    elapsed = time.monotonic() - t0
    rss_after, hwm_after = vm_kib(pid, "VmRSS"), vm_kib(pid, "VmHWM")
    assert size > 30 * 1024 * 1024, size
    assert head.startswith(b'event: message\r\ndata: {"jsonrpc":"2.0","id":"r-30mb","result"'), head[:80]
    assert tail.endswith(b'"}],"isError":false}}\r\n\r\n'), tail

    forwarded_once(stack, agent, rid, "sse-30mb")
    rec = record_for(stack, agent, rid)
    assert (rec["output_status"], rec["http_status"], rec["error_code"]) == ("success", 200, None), rec
    growth_mib, hwm_growth_mib = (rss_after - rss_before) / 1024, (hwm_after - hwm_before) / 1024
    print(f"30 MB SSE event: {size} bytes in {elapsed:.2f}s; Envoy VmRSS {rss_before} -> {rss_after} kB "
          f"({growth_mib:+.1f} MiB), VmHWM {hwm_before} -> {hwm_after} kB ({hwm_growth_mib:+.1f} MiB)")
    # Held whole anywhere in Envoy (or in the Wasm VM's linear memory, which never shrinks),
    # the event would raise the peak by >= 30 MiB.
    assert hwm_growth_mib < 10, f"Envoy's peak RSS grew by {hwm_growth_mib:.1f} MiB for a 30 MiB event"
    assert growth_mib < 10, f"Envoy's RSS grew by {growth_mib:.1f} MiB for a 30 MiB event"


def test_every_line_of_this_stacks_access_log_is_a_schema_valid_record(stack):
    assert_access_log_valid(stack)
