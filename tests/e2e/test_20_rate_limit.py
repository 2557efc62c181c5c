"""Envoy's local rate limit keyed on the filter's tags: 5 `search` calls per agent per minute."""
from __future__ import annotations

import pytest
from helpers import INVALID_REQUEST, RATE_LIMITED, RawSession, audit_for, mcp_session, tools_call_body, upstream_requests
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.anyio

SEARCH_LIMIT = 5  # envoy/envoy.yaml: token_bucket {max_tokens: 5, tokens_per_fill: 5, fill_interval: 60s}


async def test_sixth_search_in_a_minute_is_http_429_with_a_jsonrpc_error(stack):
    agent = "rl-agent"
    async with mcp_session(stack.url, agent=agent) as conn:
        for i in range(SEARCH_LIMIT):
            result = await conn.session.call_tool("search", {"query": f"envoy {i}"})
            assert result.is_error is False, result

        # 6th, raw: HTTP 429 with a JSON-RPC error that carries this request's id.
        raw = RawSession(stack.url, agent=agent)
        await raw.initialize()
        resp = await raw.post(tools_call_body("rl-6", "search", '{"query":"one too many"}'))
        resp.jsonrpc_error(429, "rl-6", RATE_LIMITED)
        await raw.delete()

        # 7th, SDK: it surfaces the JSON-RPC error from the 429 body as MCPError.
        with pytest.raises(MCPError) as excinfo:
            await conn.session.call_tool("search", {"query": "still too many"})
        assert excinfo.value.code == RATE_LIMITED
        assert [r.status for r in conn.recorder.responses if r.method == "POST"][-1] == 429

        # Other tools of the same agent are not limited.
        echoed = await conn.session.call_tool("echo", {"text": "not limited"})
        assert echoed.is_error is False

    searches = [c for c in stack.calls() if c["tool"] == "search" and c["headers"]["x-agent-id"] == [agent]]
    assert len(searches) == SEARCH_LIMIT

    audit_for(stack, SEARCH_LIMIT, agent_id=agent, tool_name="search", output_status="success")
    limited = audit_for(stack, 2, agent_id=agent, tool_name="search", output_status="rate_limited")
    for record in limited:
        assert record["http_status"] == 429
        assert record["error_code"] == RATE_LIMITED
        assert record["decision"] == "allow"  # the allowlist allowed it; the rate limiter refused
    assert {r["request_id"] for r in limited} >= {"rl-6"}


async def test_other_agents_have_their_own_search_bucket(stack):
    # rl-agent's bucket is empty after the test above; demo-agent's is not.
    async with mcp_session(stack.url, agent="demo-agent") as conn:
        result = await conn.session.call_tool("search", {"query": "mine"})
    assert result.is_error is False


async def test_client_sent_tags_are_overwritten_before_rate_limit_and_upstream(stack):
    agent = "spoof-agent"
    # 1) echo while claiming to be `search`: never limited, so the client's header was not used.
    async with mcp_session(
        stack.url, agent=agent, headers={"x-mcp-tool-name": "search", "x-mcp-method": "ping"}
    ) as conn:
        for i in range(SEARCH_LIMIT + 2):
            result = await conn.session.call_tool("echo", {"text": f"e{i}"})
            assert result.is_error is False, (i, result)
    # 2) search while claiming to be `echo`: still limited as search on the 6th.
    spoofed = {
        "x-mcp-tool-name": "echo",
        "x-mcp-method": "ping",
        "x-mcp-prompt-name": "evil-prompt",
        "x-mcp-resource-uri": "file:///etc/passwd",
    }
    async with mcp_session(stack.url, agent=agent, headers=spoofed) as conn:
        for i in range(SEARCH_LIMIT):
            result = await conn.session.call_tool("search", {"query": f"s{i}"})
            assert result.is_error is False, (i, result)
        with pytest.raises(MCPError) as excinfo:
            await conn.session.call_tool("search", {"query": "sixth"})
        assert excinfo.value.code == RATE_LIMITED

    # What the upstream received: the filter's tags only, each exactly once.
    mine = [c for c in stack.calls() if c["headers"]["x-agent-id"] == [agent]]
    assert [c["tool"] for c in mine] == ["echo"] * (SEARCH_LIMIT + 2) + ["search"] * SEARCH_LIMIT
    for call in mine:
        assert call["headers"]["x-mcp-tool-name"] == [call["tool"]]
        assert call["headers"]["x-mcp-method"] == ["tools/call"]


async def test_client_sent_tags_that_do_not_apply_are_removed(stack):
    """x-mcp-prompt-name / x-mcp-resource-uri are set only for prompts/get / resources/read;
    a client-sent copy on a tools/call must not reach the upstream either."""
    spoofed = {"x-mcp-prompt-name": "evil-prompt", "x-mcp-resource-uri": "file:///etc/passwd"}
    async with mcp_session(stack.url, agent="demo-agent", headers=spoofed) as conn:
        await conn.session.call_tool("echo", {"text": "strip"})
        sid = conn.session_id
    (call,) = [c for c in stack.calls() if c["headers"].get("mcp-session-id") == [sid]]
    assert "x-mcp-prompt-name" not in call["headers"]
    assert "x-mcp-resource-uri" not in call["headers"]


async def test_a_batch_cannot_carry_search_past_the_limit(stack):
    """Tags describe one HTTP request, so a batch with two calls would let one pass under the
    other's name (`search,echo` matches no `tool: search` descriptor) or cost one token for two
    searches. The filter refuses any batch with more than one call; none of it is forwarded."""
    agent = "batch-agent"
    s = RawSession(stack.url, agent=agent)
    await s.initialize()
    for i in range(SEARCH_LIMIT):
        resp = await s.post(tools_call_body(f"batch-s{i}", "search", '{"query":"q"}'))
        assert resp.status == 200
    for second in ("echo", "search"):
        batch = (
            b"["
            + tools_call_body("batch-1", "search", '{"query":"q"}')
            + b","
            + tools_call_body("batch-2", second, '{"text":"t"}' if second == "echo" else '{"query":"q"}')
            + b"]"
        )
        before = upstream_requests(stack)
        resp = await s.post(batch)
        assert upstream_requests(stack) == before, f"[search, {second}] reached the upstream"
        assert resp.status == 400, resp.body[:200]
        errors = resp.single()
        assert isinstance(errors, list), errors
        assert [e["id"] for e in errors] == ["batch-1", "batch-2"]
        assert all(e["error"]["code"] == INVALID_REQUEST for e in errors)
    await s.delete()
    refused = audit_for(stack, 4, agent_id=agent, output_status="invalid_request")
    assert {r["request_id"] for r in refused} == {"batch-1", "batch-2"}
    assert all(r["error_code"] == INVALID_REQUEST and r["http_status"] == 400 for r in refused)
