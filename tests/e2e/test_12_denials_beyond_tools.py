"""Denials of prompts/get, resources/read and of a method a rule set does not allow, through the
real Envoy with the official Python SDK client (demo server upstream), and a `dry_run_deny`
entry that stays visible in a curated tools/list.

Each denial is shown four ways: the JSON-RPC error the SDK raises (-32003), the HTTP status of
that POST, its audit record, and the denial counters (before/after in the same test); and it
never reached the server (the demo server's log of every HTTP request, --log-http-requests,
has none tagged with that agent and method).
"""
from __future__ import annotations

import copy
import re
from typing import Any, Awaitable, Callable

import pytest
from conftest import start_stack
from helpers import DENIED, audit_for, mcp_session
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.anyio

# Methods the `lister` rule set allows: enough for a session and its tools, not prompts/list.
LISTER_METHODS = ["initialize", "notifications/*", "ping", "tools/list"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, base_policy):
    policy = copy.deepcopy(base_policy)
    agents = policy["policy"]["agents"]
    # demo-agent (as shipped): prompts greet only, resources demo://docs/* only.
    agents["lister"] = {"tools": ["echo"], "methods": LISTER_METHODS}
    # Same lists, one enforced and one in dry-run: delete_repo is denied by a deny pattern.
    # Both may call echo and delete_repo by their own (enforced) entry; a group denies them
    # delete_repo, enforced for one and in dry-run for the other. Every other tool is refused
    # by their own entry (nothing allows it), enforced.
    agents["enforced"] = {"tools": ["echo", "delete_repo"]}
    agents["trial"] = {"tools": ["echo", "delete_repo"]}
    policy["policy"]["groups"] = {
        "no-delete": {"members": ["enforced"], "tools": {"allow": [], "deny": ["delete_repo"]}},
        "no-delete-trial": {"members": ["trial"], "tools": {"allow": [], "deny": ["delete_repo"]}, "mode": "dry_run"},
    }
    yield from start_stack(tmp_path_factory, policy, server_args=["--log-http-requests"])


def counters(stack) -> dict[str, int]:
    """mcp_guard_denials by reason and mcp_guard_requests by method/decision (prometheus)."""
    out: dict[str, int] = {}
    for m in re.finditer(r"^(mcp_guard_(?:denials|requests|list_rewrites))\{([^}]*)\} (\d+)$",
                         stack.admin_get("/stats/prometheus"), re.M):  # fmt: skip
        labels = ",".join(sorted(x for x in m[2].split(",") if not x.startswith("envoy_")))
        out[f"{m[1]}{{{labels}}}"] = int(m[3])
    return out


def moved(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in before.keys() | after.keys()
            if after.get(k, 0) != before.get(k, 0)}  # fmt: skip


def reached_server(stack, agent: str, method: str) -> list[dict]:
    """HTTP requests the demo server received from `agent` tagged with this MCP method."""
    return [e for e in stack.calls("http")
            if e["headers"].get("x-agent-id") == [agent] and e["headers"].get("x-mcp-method") == [method]]  # fmt: skip


# What a session around the denied call adds to the request counters (its GET stream and DELETE
# carry no JSON-RPC message and are not counted).
SESSION = {'mcp_guard_requests{mcp_decision="allow",mcp_method="initialize"}': 1,
           'mcp_guard_requests{mcp_decision="allow",mcp_method="notifications/initialized"}': 1}  # fmt: skip


async def denied_through_the_sdk(stack, agent: str, method: str,
                                 call: Callable[[Any], Awaitable[Any]]) -> tuple[MCPError, int, dict]:  # fmt: skip
    """Runs `call(session)` in a fresh SDK session of `agent`; it must raise. Returns the error,
    the HTTP status of that POST, and how the denial and request counters moved across the
    session (nothing else ran on the stack meanwhile). `method` never reached the server."""
    before = counters(stack)
    async with mcp_session(stack.url, agent=agent) as conn:
        seen = len(conn.recorder.responses)
        with pytest.raises(MCPError) as exc:
            await call(conn.session)
        # The POSTs answered meanwhile: the call, and maybe the 202 of notifications/initialized
        # (the SDK does not wait for it).
        posts = [r for r in conn.recorder.responses[seen:] if r.method == "POST" and r.status != 202]
        assert len(posts) == 1, posts
        (post,) = posts
        assert post.headers["content-type"] == "application/json", post
    after = counters(stack)
    assert reached_server(stack, agent, method) == []
    return exc.value, post.status, moved(before, after)


async def test_a_prompt_the_agent_may_not_get_is_denied(stack):
    err, status, counted = await denied_through_the_sdk(
        stack, "demo-agent", "prompts/get", lambda s: s.get_prompt("incident_report", {"summary": "x"}))
    assert err.code == DENIED, err
    assert "incident_report" in str(err), err
    assert status == 200
    assert counted == SESSION | {"mcp_guard_denials{mcp_reason=\"policy\"}": 1,
                       "mcp_guard_requests{mcp_decision=\"deny\",mcp_method=\"prompts/get\"}": 1}, counted
    (rec,) = audit_for(stack, agent_id="demo-agent", method="prompts/get")
    assert (rec["decision"], rec["output_status"], rec["error_code"], rec["http_status"]) == (
        "deny", "denied", DENIED, 200), rec  # fmt: skip
    assert (rec["prompt_name"], rec["tool_name"], rec["resource_uri"]) == ("incident_report", None, None), rec


async def test_a_resource_the_agent_may_not_read_is_denied(stack):
    err, status, counted = await denied_through_the_sdk(
        stack, "demo-agent", "resources/read", lambda s: s.read_resource("secret://keys"))
    assert err.code == DENIED, err
    assert status == 200
    assert counted == SESSION | {"mcp_guard_denials{mcp_reason=\"policy\"}": 1,
                       "mcp_guard_requests{mcp_decision=\"deny\",mcp_method=\"resources/read\"}": 1}, counted
    (rec,) = audit_for(stack, agent_id="demo-agent", method="resources/read")
    assert (rec["decision"], rec["output_status"], rec["error_code"], rec["http_status"]) == (
        "deny", "denied", DENIED, 200), rec  # fmt: skip
    assert (rec["resource_uri"], rec["tool_name"], rec["prompt_name"]) == ("secret://keys", None, None), rec
    assert [c for c in stack.calls("resource") if c["resource"] == "secret://keys"] == []


async def test_a_method_the_rule_set_does_not_allow_is_denied(stack):
    err, status, counted = await denied_through_the_sdk(stack, "lister", "prompts/list", lambda s: s.list_prompts())
    assert err.code == DENIED, err
    assert status == 200
    assert counted == SESSION | {"mcp_guard_denials{mcp_reason=\"policy\"}": 1,
                       "mcp_guard_requests{mcp_decision=\"deny\",mcp_method=\"prompts/list\"}": 1}, counted
    (rec,) = audit_for(stack, agent_id="lister", method="prompts/list")
    assert (rec["decision"], rec["output_status"], rec["error_code"], rec["http_status"]) == (
        "deny", "denied", DENIED, 200), rec  # fmt: skip
    # The methods it does allow still work (the session itself, tools/list).
    async with mcp_session(stack.url, agent="lister") as conn:
        tools = await conn.session.list_tools()
    assert [t.name for t in tools.tools] == ["echo"]


async def test_a_dry_run_deny_entry_stays_visible_in_the_curated_list(stack):
    async with mcp_session(stack.url, agent="enforced") as conn:
        enforced = {t.name for t in (await conn.session.list_tools()).tools}
    before = counters(stack)
    async with mcp_session(stack.url, agent="trial") as conn:
        trial = {t.name for t in (await conn.session.list_tools()).tools}
    counted = moved(before, counters(stack))
    # Enforced, delete_repo is refused and hidden; in dry-run the same refusal is dry_run_deny,
    # so the entry stays, and the list is still curated (the other tools are hidden).
    assert enforced == {"echo"}, enforced
    assert reached_server(stack, "trial", "tools/list"), "the list came from the server"
    assert trial == {"echo", "delete_repo"}, trial
    assert counted["mcp_guard_list_rewrites{mcp_list=\"tools\"}"] == 1, counted
    (rec,) = audit_for(stack, agent_id="trial", method="tools/list")
    assert (rec["decision"], rec["output_status"], rec["http_status"]) == ("allow", "success", 200), rec
