"""Audit records: exact values for a session spoken byte by byte, and for the SDK's own traffic."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from helpers import (
    DENIED,
    RawSession,
    audit_for,
    mcp_session,
    sha256_tag,
    tools_call_body,
)

pytestmark = pytest.mark.anyio

TRACE_1 = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_2 = "0af7651916cd43dd8448eb211c80319c"


def traceparent(trace_id: str) -> dict[str, str]:
    return {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}


def parse_ts(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


async def test_audit_records_have_exact_values(stack):
    agent = "audit-agent"
    started = datetime.now(timezone.utc)
    s = RawSession(stack.url, agent=agent)

    init = await s.initialize(request_id=1, headers=traceparent(TRACE_1))
    sid = s.session_id
    assert init.single()["result"]["serverInfo"]["name"] == "mcp-guard-demo"
    init_params = {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "mcp-guard-e2e", "version": "0"},
    }  # fmt: skip

    # Arguments with odd spacing and non-ASCII: the hash is over the bytes as sent.
    echo_args = '{ "text" :  "hash me: \u00e9 \u2713" }'
    r = await s.post(tools_call_body("audit-echo", "echo", echo_args), headers=traceparent(TRACE_2))
    assert r.status == 200
    assert r.single() ["id"] == "audit-echo"
    assert r.single()["result"]["content"][0]["text"] == "hash me: \u00e9 \u2713"

    add_args = '{"a":40,"b":2}'
    r = await s.post(tools_call_body(42, "add", add_args), headers={"x-request-id": "e2e-request-42"})
    assert r.single()["id"] == 42 and r.single()["result"]["content"][0]["text"] == "42"

    fail_args = '{"reason":"on purpose"}'
    r = await s.post(tools_call_body("audit-fail", "fail", fail_args))
    assert r.single()["result"]["isError"] is True

    deny_args = '{"name":"everything"}'
    r = await s.post(tools_call_body("audit-deny", "delete_repo", deny_args))
    assert r.single()["error"]["code"] == DENIED

    d = await s.delete()
    assert d.status == 200

    def one(**fields):
        (record,) = audit_for(stack, agent_id=agent, session_id=sid, **fields)
        return record

    common = {"agent_id": agent, "server_id": "demo-server", "http_method": "POST",
              "prompt_name": None, "resource_uri": None, "session_id": sid}  # fmt: skip

    rec = one(method="initialize")
    assert rec == rec | common | {
        "tool_name": None, "request_id": 1, "decision": "allow", "output_status": "success",
        "error_code": None, "http_status": 200, "trace_id": TRACE_1,
        "input_hash": sha256_tag(json.dumps(init_params, separators=(",", ":")).encode()),
    }  # fmt: skip

    rec = one(method="notifications/initialized")
    assert rec == rec | common | {
        "tool_name": None, "request_id": None, "input_hash": None, "decision": "allow",
        "output_status": "success", "error_code": None, "http_status": 202,
    }  # fmt: skip

    rec = one(request_id="audit-echo")
    assert rec == rec | common | {
        "method": "tools/call", "tool_name": "echo", "decision": "allow", "output_status": "success",
        "error_code": None, "http_status": 200, "trace_id": TRACE_2,
        "input_hash": sha256_tag(echo_args.encode("utf-8")),
    }  # fmt: skip

    rec = one(request_id=42)
    (add_call,) = [c for c in stack.calls() if c["tool"] == "add" and c["headers"]["x-agent-id"] == [agent]]
    assert rec == rec | common | {
        "method": "tools/call", "tool_name": "add", "decision": "allow", "output_status": "success",
        "error_code": None, "http_status": 200, "input_hash": sha256_tag(add_args.encode()),
        # no traceparent: the x-request-id the request carried (as the upstream saw it)
        "trace_id": add_call["headers"]["x-request-id"][0],
    }  # fmt: skip

    rec = one(request_id="audit-fail")
    assert rec == rec | common | {
        "method": "tools/call", "tool_name": "fail", "decision": "allow", "output_status": "tool_error",
        "error_code": None, "http_status": 200, "input_hash": sha256_tag(fail_args.encode()),
    }  # fmt: skip

    rec = one(request_id="audit-deny")
    assert rec == rec | common | {
        "method": "tools/call", "tool_name": "delete_repo", "decision": "deny", "output_status": "denied",
        "error_code": DENIED, "http_status": 200, "input_hash": sha256_tag(deny_args.encode()),
    }  # fmt: skip

    rec = one(http_method="DELETE")
    assert rec == rec | common | {
        "http_method": "DELETE", "method": None, "tool_name": None, "request_id": None,
        "input_hash": None, "http_status": 200, "decision": "allow", "output_status": "success",
        "error_code": None,
    }  # fmt: skip

    # One record per message, nothing else for this session; sane timestamps.
    mine = [r for r in stack.audit_records() if r.get("session_id") == sid]
    assert len(mine) == 7
    for r in mine:
        assert started - timedelta(seconds=1) <= parse_ts(r["timestamp"]) <= datetime.now(timezone.utc)


async def test_sdk_session_tool_error_get_and_delete_are_audited(stack):
    agent = "sdk-agent"
    async with mcp_session(stack.url, agent=agent) as conn:
        failed = await conn.session.call_tool("fail", {"reason": "sdk"})
        total = await conn.session.call_tool("add", {"a": 2, "b": 3})
        sid = conn.session_id
    assert failed.is_error is True
    assert [c.text for c in failed.content] == ["Error executing tool fail: sdk"]  # SDK 2.x wording
    assert total.is_error is False and [c.text for c in total.content] == ["5"]
    assert sid

    (rec,) = audit_for(stack, agent_id=agent, session_id=sid, tool_name="fail")
    assert (rec["decision"], rec["output_status"], rec["error_code"], rec["http_status"]) == (
        "allow", "tool_error", None, 200)  # fmt: skip

    (rec,) = audit_for(stack, agent_id=agent, session_id=sid, tool_name="add")
    assert (rec["output_status"], rec["input_hash"]) == ("success", sha256_tag(b'{"a":2,"b":3}'))

    # The SDK closes with DELETE (terminate_on_close); it passes through and is audited.
    deletes = [r for r in conn.recorder.responses if r.method == "DELETE"]
    assert [r.status for r in deletes] == [200]
    (rec,) = audit_for(stack, agent_id=agent, session_id=sid, http_method="DELETE")
    assert (rec["method"], rec["request_id"], rec["tool_name"], rec["http_status"]) == (None, None, None, 200)

    # The SDK also opened the standalone GET stream; it passed through (200) and was audited.
    gets = [r for r in conn.recorder.responses if r.method == "GET"]
    assert [r.status for r in gets] == [200]
    (rec,) = audit_for(stack, agent_id=agent, session_id=sid, http_method="GET")
    assert (rec["method"], rec["request_id"], rec["tool_name"], rec["input_hash"], rec["http_status"]) == (
        None, None, None, None, 200)  # fmt: skip
    assert rec["decision"] == "allow"
