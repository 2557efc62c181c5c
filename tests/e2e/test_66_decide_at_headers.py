"""`decide_at_headers`: for MCP 2026-07-28 requests, mcp-guard decides and tags from the routing
headers (`Mcp-Method`, `Mcp-Name`) at header time and lets the body stream to the server,
keeping a copy; at the end of the body it runs every usual check, and a body that disagrees
with its headers is refused (HTTP 400, -32020) before its last chunk, which resets the upstream
stream: the server may see the headers, never a complete request, and runs nothing.

The official Python SDK client on protocol 2026-07-28 drives the allowed paths; raw HTTP sends
what no SDK would (headers that disagree with the body).
"""
from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from conftest import start_stack
from helpers import DENIED, audit_for
from test_65_transports import (
    DELETE_REPO,
    ECHO,
    HEADER_MISMATCH,
    MODERN,
    modern_body,
    modern_post,
    modern_session,
    upstream_http,
)

pytestmark = pytest.mark.anyio

ALL_TOOLS = ["t66-modern", "t66-mm-name", "t66-mm-method", "t66-big-ok", "t66-big-mm"]
ECHO_ONLY = "t66-echo-only"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, base_policy: dict):
    policy = copy.deepcopy(base_policy)
    policy["decide_at_headers"] = True
    for agent in ALL_TOOLS:
        policy["policy"]["agents"][agent] = {"tools": ["*"], "prompts": ["*"], "resources": ["*"]}
    policy["policy"]["agents"][ECHO_ONLY] = {"tools": ["echo"]}
    yield from start_stack(tmp_path_factory, policy, server_args=["--log-http-requests"])


def tool_calls(stack: Any, agent: str) -> list[dict]:
    """tools/call the demo server ran for this agent."""
    return [c for c in stack.calls() if c.get("tool") and c["headers"].get("x-agent-id") == [agent]]


async def test_sdk_2026_client_is_tagged_from_its_headers(stack):
    agent = "t66-modern"
    async with modern_session(stack.url, agent) as conn:
        echoed = await conn.session.call_tool("echo", {"text": "early \u00e9"})
        doc = await conn.session.read_resource("demo://docs/early")
        prompt = await conn.session.get_prompt("greet", {"name": "Ada"})
    assert [c.text for c in echoed.content] == ["early \u00e9"]
    assert doc.contents[0].text == "mcp-guard demo document early"
    assert prompt.messages[0].content.text == "Say hello to Ada."

    http = upstream_http(stack, x_agent_id=agent, mcp_protocol_version=MODERN)
    by_method = {e["headers"]["mcp-method"][0]: e["headers"] for e in http}
    assert by_method["tools/call"]["x-mcp-tool-name"] == ["echo"]
    assert by_method["resources/read"]["x-mcp-resource-uri"] == ["demo://docs/early"]
    assert by_method["prompts/get"]["x-mcp-prompt-name"] == ["greet"]
    for method, h in by_method.items():
        assert h["x-mcp-method"] == [method]
    (rec,) = audit_for(stack, agent_id=agent, tool_name="echo")
    assert (rec["decision"], rec["output_status"], rec["http_status"]) == ("allow", "success", 200)


@pytest.mark.parametrize(
    "agent, body, mcp_method, mcp_name",
    [
        ("t66-mm-name", DELETE_REPO, "tools/call", "echo"),
        ("t66-mm-method", ECHO, "tools/list", "echo"),
    ],
    ids=["name", "method"],
)
async def test_a_body_that_disagrees_is_refused_and_never_runs(stack, agent, body, mcp_method, mcp_name):
    rid = f"mm-{agent}"
    method, params = body
    resp = await modern_post(stack, agent, modern_body(rid, method, params), mcp_method=mcp_method, mcp_name=mcp_name)
    resp.jsonrpc_error(400, rid, HEADER_MISMATCH)
    assert tool_calls(stack, agent) == []
    (rec,) = audit_for(stack, agent_id=agent, request_id=rid)
    assert (rec["output_status"], rec["error_code"], rec["decision"]) == ("invalid_request", HEADER_MISMATCH, "deny")
    assert rec["tool_name"] != mcp_name or params["name"] == mcp_name  # never the header's name


async def test_headers_naming_a_refused_tool_are_held_and_denied_with_the_id(stack):
    """The decision needs the request's id for the JSON-RPC error: such a request is held as
    without the option, and never reaches the server, not even its headers."""
    rid = "t66-denied"
    resp = await modern_post(stack, ECHO_ONLY, modern_body(rid, *DELETE_REPO), mcp_method="tools/call", mcp_name="delete_repo")
    resp.jsonrpc_error(200, rid, DENIED)
    assert upstream_http(stack, x_agent_id=ECHO_ONLY) == []
    (rec,) = audit_for(stack, agent_id=ECHO_ONLY, request_id=rid)
    assert rec["output_status"] == "denied"


BIG_TEXT = "x" * (512 * 1024)  # arrives in many chunks


async def test_a_large_streamed_body_arrives_whole(stack):
    agent = "t66-big-ok"
    rid = "t66-big"
    params = {"name": "echo", "arguments": {"text": BIG_TEXT}}
    resp = await modern_post(stack, agent, modern_body(rid, "tools/call", params), mcp_method="tools/call", mcp_name="echo")
    assert resp.status == 200, (resp.status, resp.body[:200])
    msg = resp.single()
    assert msg["id"] == rid
    assert msg["result"]["content"][0]["text"] == BIG_TEXT
    (rec,) = audit_for(stack, agent_id=agent, request_id=rid)
    assert rec["output_status"] == "success"


async def test_a_large_streamed_body_that_disagrees_never_runs(stack):
    """Most of the body has reached the server when the mismatch is found at its end: the
    stream is reset before the last chunk, so the server never has a complete request."""
    agent = "t66-big-mm"
    rid = "t66-big-mm"
    params = {"name": "delete_repo", "arguments": {"name": "prod", "pad": BIG_TEXT}}
    body = modern_body(rid, "tools/call", params)
    resp = await modern_post(stack, agent, body, mcp_method="tools/call", mcp_name="echo")
    resp.jsonrpc_error(400, rid, HEADER_MISMATCH)
    assert tool_calls(stack, agent) == []
    (rec,) = audit_for(stack, agent_id=agent, request_id=rid)
    assert (rec["output_status"], rec["error_code"]) == ("invalid_request", HEADER_MISMATCH)
    assert json.loads(body)["params"]["name"] == "delete_repo"
