"""Allowlist enforcement, driven by the official MCP SDK client through Envoy + mcp-guard."""
from __future__ import annotations

import pytest
from helpers import (
    DENIED,
    RawSession,
    audit_for,
    mcp_session,
    sha256_tag,
    tools_call_body,
)
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.anyio


async def test_allowed_call_succeeds_and_is_tagged(stack):
    async with mcp_session(stack.url, agent="demo-agent") as conn:
        result = await conn.session.call_tool("echo", {"text": "hello through envoy"})
        sid = conn.session_id
    assert result.is_error is False
    assert [c.text for c in result.content] == ["hello through envoy"]

    # The server executed it, and saw the tags the filter set (one value each).
    calls = [c for c in stack.calls() if c["headers"].get("mcp-session-id") == [sid]]
    assert len(calls) == 1
    assert calls[0]["tool"] == "echo"
    assert calls[0]["arguments"] == {"text": "hello through envoy"}
    headers = calls[0]["headers"]
    assert headers["x-agent-id"] == ["demo-agent"]
    assert headers["x-mcp-method"] == ["tools/call"]
    assert headers["x-mcp-tool-name"] == ["echo"]
    assert "x-mcp-prompt-name" not in headers
    assert "x-mcp-resource-uri" not in headers

    (record,) = audit_for(stack, agent_id="demo-agent", session_id=sid, method="tools/call")
    assert record["tool_name"] == "echo"
    assert record["decision"] == "allow"
    assert record["output_status"] == "success"
    assert record["error_code"] is None
    assert record["http_status"] == 200
    assert record["http_method"] == "POST"
    assert record["server_id"] == "demo-server"
    # The SDK serializes arguments compactly (pydantic mode="json" then httpx json=).
    assert record["input_hash"] == sha256_tag(b'{"text":"hello through envoy"}')


async def test_denied_call_is_a_jsonrpc_error_and_never_reaches_the_server(stack):
    # SDK: the call raises the JSON-RPC error the filter answered with.
    async with mcp_session(stack.url, agent="demo-agent") as conn:
        with pytest.raises(MCPError) as excinfo:
            await conn.session.call_tool("delete_repo", {"name": "prod"})
        sdk_sid = conn.session_id
    assert excinfo.value.code == DENIED
    assert "delete_repo" in excinfo.value.message
    assert "demo-agent" in excinfo.value.message
    posts = [r for r in conn.recorder.responses if r.method == "POST"]
    # initialize, notifications/initialized, the denied tools/call: all HTTP 200/202.
    assert [r.status for r in posts] == [200, 202, 200]

    # Raw: exact HTTP shape, and the error carries the request's own id.
    raw = RawSession(stack.url, agent="demo-agent")
    await raw.initialize()
    resp = await raw.post(tools_call_body("deny-7", "delete_repo", '{"name":"prod"}'))
    body = resp.jsonrpc_error(200, "deny-7", DENIED)
    assert "delete_repo" in body["error"]["message"] and "demo-agent" in body["error"]["message"]
    await raw.delete()

    assert [c for c in stack.calls() if c["tool"] == "delete_repo"] == []

    for sid in (sdk_sid, raw.session_id):
        (record,) = audit_for(stack, session_id=sid, method="tools/call")
        assert record["agent_id"] == "demo-agent"
        assert record["tool_name"] == "delete_repo"
        assert record["decision"] == "deny"
        assert record["output_status"] == "denied"
        assert record["error_code"] == DENIED
        assert record["http_status"] == 200
    (raw_record,) = audit_for(stack, session_id=raw.session_id, request_id="deny-7")
    assert raw_record["input_hash"] == sha256_tag(b'{"name":"prod"}')


async def test_no_agent_header_is_anonymous_with_the_default_allowlist(stack):
    async with mcp_session(stack.url) as conn:  # no x-agent-id
        echoed = await conn.session.call_tool("echo", {"text": "anon"})
        with pytest.raises(MCPError) as excinfo:
            await conn.session.call_tool("add", {"a": 1, "b": 2})
        sid = conn.session_id
    assert echoed.is_error is False
    assert [c.text for c in echoed.content] == ["anon"]
    assert excinfo.value.code == DENIED
    assert "add" in excinfo.value.message and "anonymous" in excinfo.value.message

    calls = [c for c in stack.calls() if c["headers"].get("mcp-session-id") == [sid]]
    assert [c["tool"] for c in calls] == ["echo"]
    assert calls[0]["headers"]["x-agent-id"] == ["anonymous"]  # resolved identity is forwarded

    (allowed,) = audit_for(stack, session_id=sid, tool_name="echo")
    (denied,) = audit_for(stack, session_id=sid, tool_name="add")
    assert (allowed["agent_id"], allowed["decision"], allowed["output_status"]) == ("anonymous", "allow", "success")
    assert (denied["agent_id"], denied["decision"], denied["output_status"]) == ("anonymous", "deny", "denied")
    assert denied["error_code"] == DENIED


async def test_prompt_and_resource_requests_are_tagged_and_audited(stack):
    async with mcp_session(stack.url, agent="demo-agent", headers={"x-mcp-tool-name": "spoofed"}) as conn:
        prompt = await conn.session.get_prompt("greet", {"name": "Ada"})
        resource = await conn.session.read_resource("demo://docs/readme")
        sid = conn.session_id
    assert prompt.messages[0].content.text == "Say hello to Ada."
    assert resource.contents[0].text == "mcp-guard demo document readme"

    (p,) = [c for c in stack.calls("prompt") if c["headers"].get("mcp-session-id") == [sid]]
    assert p["prompt"] == "greet"
    assert p["headers"]["x-mcp-method"] == ["prompts/get"]
    assert p["headers"]["x-mcp-prompt-name"] == ["greet"]
    assert "x-mcp-tool-name" not in p["headers"]  # the client's copy was removed
    assert "x-mcp-resource-uri" not in p["headers"]
    (r,) = [c for c in stack.calls("resource") if c["headers"].get("mcp-session-id") == [sid]]
    assert r["headers"]["x-mcp-method"] == ["resources/read"]
    assert r["resource"] == "demo://docs/readme"
    assert r["headers"]["x-mcp-resource-uri"] == ["demo://docs/readme"]
    assert "x-mcp-tool-name" not in r["headers"] and "x-mcp-prompt-name" not in r["headers"]

    (rec,) = audit_for(stack, session_id=sid, method="prompts/get")
    assert (rec["prompt_name"], rec["resource_uri"], rec["tool_name"]) == ("greet", None, None)
    assert (rec["decision"], rec["output_status"]) == ("allow", "success")
    (rec,) = audit_for(stack, session_id=sid, method="resources/read")
    assert (rec["prompt_name"], rec["resource_uri"], rec["tool_name"]) == (None, "demo://docs/readme", None)
    assert (rec["decision"], rec["output_status"]) == ("allow", "success")
