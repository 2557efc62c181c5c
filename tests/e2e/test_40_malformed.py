"""Bodies no SDK would send, posted raw: refused by the filter, never forwarded, audited."""
from __future__ import annotations

import pytest
from helpers import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    RawSession,
    audit_for,
    raw_request,
    upstream_requests,
)

pytestmark = pytest.mark.anyio

MALFORMED = [
    pytest.param("bad-json", b"this is {not json", PARSE_ERROR, id="not-json"),
    pytest.param("bad-version", b'{"jsonrpc":"1.0","id":1,"method":"x"}', INVALID_REQUEST, id="jsonrpc-1.0"),
    pytest.param("bad-batch", b"[]", INVALID_REQUEST, id="empty-batch"),
]


@pytest.mark.parametrize(("agent", "body", "code"), MALFORMED)
async def test_malformed_body_is_400_jsonrpc_error_not_forwarded(stack, agent, body, code):
    before = upstream_requests(stack)
    resp = await raw_request(stack.url, "POST", body, {"x-agent-id": agent})
    # The id could not be determined, so it is null (JSON-RPC 2.0 §5).
    resp.jsonrpc_error(400, None, code)
    assert upstream_requests(stack) == before, "a malformed body reached the upstream"

    (rec,) = audit_for(stack, agent_id=agent)
    assert rec == rec | {
        "http_method": "POST", "method": None, "tool_name": None, "request_id": None,
        "input_hash": None, "decision": "deny", "output_status": "invalid_request", "error_code": code,
        "http_status": 400, "server_id": "demo-server", "session_id": None,
    }  # fmt: skip


async def test_tools_call_without_a_tool_name_is_invalid_params(stack):
    s = RawSession(stack.url, agent="params-agent")
    await s.initialize()
    before = upstream_requests(stack)
    resp = await s.post(b'{"jsonrpc":"2.0","id":"no-name","method":"tools/call","params":{"arguments":{}}}')
    resp.jsonrpc_error(400, "no-name", INVALID_PARAMS)  # the id was readable, so it is echoed
    assert upstream_requests(stack) == before
    await s.delete()

    (rec,) = audit_for(stack, agent_id="params-agent", request_id="no-name")
    assert rec == rec | {
        "method": "tools/call", "tool_name": None, "decision": "deny", "output_status": "invalid_request",
        "error_code": INVALID_PARAMS, "http_status": 400, "session_id": s.session_id,
    }  # fmt: skip


MAX_BODY_BYTES = 4 * 1024 * 1024  # examples/policy.json


def echo_body(request_id: str, size: int) -> bytes:
    return (
        f'{{"jsonrpc":"2.0","id":"{request_id}","method":"tools/call",'
        f'"params":{{"name":"echo","arguments":{{"text":"'
    ).encode() + b"x" * size + b'"}}}'


async def test_body_above_envoys_default_buffer_but_within_max_body_bytes_passes(stack):
    """2 MiB: over Envoy's default 1 MiB buffer limit, so this needs the route's
    request_body_buffer_limit in envoy/envoy.yaml; the policy allows 4 MiB."""
    s = RawSession(stack.url, agent="big-agent")
    await s.initialize()
    resp = await s.post(echo_body("big-ok", 2 * 1024 * 1024))
    assert resp.status == 200
    assert len(resp.single()["result"]["content"][0]["text"]) == 2 * 1024 * 1024
    await s.delete()
    (rec,) = audit_for(stack, agent_id="big-agent", request_id="big-ok")
    assert (rec["decision"], rec["output_status"], rec["http_status"]) == ("allow", "success", 200)


async def test_body_over_max_body_bytes_is_413_jsonrpc_error_not_forwarded(stack):
    s = RawSession(stack.url, agent="huge-agent")
    await s.initialize()
    before = upstream_requests(stack)
    resp = await s.post(echo_body("too-big", MAX_BODY_BYTES + 1024))
    resp.jsonrpc_error(413, None, INVALID_REQUEST)  # refused before the body was parsed: id null
    assert upstream_requests(stack) == before
    await s.delete()
    (rec,) = audit_for(stack, agent_id="huge-agent", http_status=413)
    assert rec == rec | {
        "method": None, "request_id": None, "decision": "deny", "output_status": "invalid_request",
        "error_code": INVALID_REQUEST, "session_id": s.session_id,
    }  # fmt: skip
