"""Curated tool surfaces: each agent's tools/list, prompts/list and resources/list, as the
official SDK client receives them through mcp-guard, show exactly what the policy lets that
agent use — over SSE (the shared stack) and application/json responses (a second stack)."""
from __future__ import annotations

import pytest
from conftest import start_stack
from helpers import audit_for, mcp_session

pytestmark = pytest.mark.anyio

ALL_TOOLS = {"echo", "add", "search", "fail", "countdown", "delete_repo"}


@pytest.fixture(scope="module")
def json_stack(tmp_path_factory: pytest.TempPathFactory, base_policy: dict):
    yield from start_stack(tmp_path_factory, base_policy, server_args=["--json-response"])


@pytest.fixture(params=["sse", "json"])
def any_stack(request, stack, json_stack):
    return stack if request.param == "sse" else json_stack


@pytest.mark.parametrize(
    "agent, tools, prompts, resources",
    [
        # examples/policy.json: demo-agent's lists; admin-agent "*"; unknown agents `default`.
        ("demo-agent", {"echo", "add", "search", "fail"}, {"greet"}, {"demo://docs/index"}),
        ("admin-agent", ALL_TOOLS, {"greet", "incident_report"}, {"demo://docs/index", "secret://keys"}),
        ("stranger", {"echo"}, set(), set()),
    ],
)
async def test_each_agent_lists_exactly_what_it_may_use(any_stack, agent, tools, prompts, resources):
    async with mcp_session(any_stack.url, agent=agent) as conn:
        listed_tools = await conn.session.list_tools()
        listed_prompts = await conn.session.list_prompts()
        listed_resources = await conn.session.list_resources()
        sid = conn.session_id
    assert {t.name for t in listed_tools.tools} == tools
    assert {p.name for p in listed_prompts.prompts} == prompts
    assert {str(r.uri) for r in listed_resources.resources} == resources
    # Entries are the server's own, untouched (schemas survive the rewrite).
    for tool in listed_tools.tools:
        assert tool.input_schema["type"] == "object", tool
    (rec,) = audit_for(any_stack, agent_id=agent, session_id=sid, method="tools/list")
    assert (rec["decision"], rec["output_status"], rec["http_status"]) == ("allow", "success", 200)
