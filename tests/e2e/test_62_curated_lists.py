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


@pytest.fixture(scope="module")
def annotated_stack(tmp_path_factory: pytest.TempPathFactory, base_policy: dict):
    """Agents allowed every tool by glob, with the annotations rule refusing destructive tools;
    `janitor` names delete_repo exactly and is exempt."""
    import copy

    policy = copy.deepcopy(base_policy)
    policy["annotations"] = {"refuse": "destructive", "unseen": "refuse"}
    policy["policy"]["agents"]["ops-agent"] = {"tools": ["*"]}
    policy["policy"]["agents"]["janitor"] = {"tools": ["*", "delete_repo"]}
    yield from start_stack(tmp_path_factory, policy)


async def test_annotations_from_tools_list_refuse_destructive_tools(annotated_stack):
    from helpers import DENIED
    from mcp.shared.exceptions import MCPError

    s = annotated_stack
    async with mcp_session(s.url, agent="ops-agent") as conn:
        # Before any tools/list, nothing is known: every tool is refused (unseen: refuse).
        with pytest.raises(MCPError) as unseen:
            await conn.session.call_tool("echo", {"text": "too early"})
        assert unseen.value.code == DENIED
        listed = await conn.session.list_tools()  # the server's annotations are learned here
        assert "delete_repo" in {t.name for t in listed.tools}  # its "*" shows it
        echoed = await conn.session.call_tool("echo", {"text": "read-only"})
        with pytest.raises(MCPError) as destructive:
            await conn.session.call_tool("delete_repo", {"name": "r"})
    assert [c.text for c in echoed.content] == ["read-only"]
    assert destructive.value.code == DENIED
    # Learned in shared data: another session (any worker) sees it, and a rule set that names
    # the tool exactly is exempt.
    async with mcp_session(s.url, agent="janitor") as conn:
        deleted = await conn.session.call_tool("delete_repo", {"name": "r2"})
    assert [c.text for c in deleted.content] == ["deleted r2"]
    assert [c["arguments"]["name"] for c in s.calls() if c["tool"] == "delete_repo"] == ["r2"]
    (rec,) = audit_for(s, agent_id="ops-agent", tool_name="delete_repo")
    assert (rec["decision"], rec["output_status"]) == ("deny", "denied")


@pytest.fixture(scope="module")
def hiding_stack(tmp_path_factory: pytest.TempPathFactory, base_policy: dict):
    """hide_denied_tools set to the Python SDK server's own unknown-tool answer."""
    import copy

    policy = copy.deepcopy(base_policy)
    policy["hide_denied_tools"] = {"tool_error": "Unknown tool: {name}"}
    yield from start_stack(tmp_path_factory, policy)


async def test_a_hidden_denial_is_answered_like_a_tool_the_server_lacks(hiding_stack):
    s = hiding_stack
    # The server's own answer to a tool it does not have (admin-agent may call anything).
    async with mcp_session(s.url, agent="admin-agent") as conn:
        missing = await conn.session.call_tool("no_such_tool", {})
    # demo-agent may not call delete_repo: not listed, and answered the same way.
    async with mcp_session(s.url, agent="demo-agent") as conn:
        listed = {t.name for t in (await conn.session.list_tools()).tools}
        hidden = await conn.session.call_tool("delete_repo", {"name": "x"})
    assert "delete_repo" not in listed
    assert missing.is_error is True and hidden.is_error is True
    assert [c.text for c in missing.content] == ["Unknown tool: no_such_tool"]
    assert [c.text for c in hidden.content] == ["Unknown tool: delete_repo"]
    assert not [c for c in s.calls() if c["tool"] == "delete_repo"]
    (rec,) = audit_for(s, agent_id="demo-agent", tool_name="delete_repo")
    assert (rec["decision"], rec["output_status"]) == ("deny", "denied")
