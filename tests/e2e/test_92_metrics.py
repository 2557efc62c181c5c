"""mcp-guard's Envoy stats after known traffic, read from the admin `/stats/prometheus` as
labelled metrics (the shipped stats_tags), on a stack of their own (one Envoy worker) so the
counts are exact."""
from __future__ import annotations

import copy
import json
import re

import pytest
from conftest import start_stack
from helpers import DENIED, RATE_LIMITED, RawSession, mcp_session
from mcp.shared.exceptions import MCPError
from stack import wait_until

pytestmark = pytest.mark.anyio

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metrics(stack) -> dict[tuple[str, frozenset], float]:
    """Every sample of /stats/prometheus: (name, labels) -> value."""
    out: dict[tuple[str, frozenset], float] = {}
    for line in stack.admin_get("/stats/prometheus").splitlines():
        m = SAMPLE.match(line)
        if m and not line.startswith("#"):
            labels = frozenset(LABEL.findall(m["labels"] or ""))
            out[(m["name"], labels)] = float(m["value"])
    return out


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, base_policy: dict):
    policy = copy.deepcopy(base_policy)
    policy["max_tool_metrics"] = 2  # the third distinct tool is counted as "other"
    policy["policy"]["agents"]["metrics-agent"] = copy.deepcopy(policy["policy"]["agents"]["demo-agent"])
    # One worker: the tool-label cap is per worker VM, so one worker makes the labels exact.
    yield from start_stack(tmp_path_factory, policy, concurrency=1)


async def test_stats_after_known_traffic(stack):
    async with mcp_session(stack.url, agent="metrics-agent") as conn:
        await conn.session.call_tool("echo", {"text": "1"})
        await conn.session.call_tool("echo", {"text": "2"})
        await conn.session.call_tool("add", {"a": 1, "b": 2})
        with pytest.raises(MCPError) as denied:
            await conn.session.call_tool("delete_repo", {"name": "x"})
        assert denied.value.code == DENIED
        listed = await conn.session.list_tools()
        # The local rate limit allows 5 search calls per agent per minute: the 6th is a 429.
        for n in range(5):
            await conn.session.call_tool("search", {"query": str(n)})
        with pytest.raises(MCPError) as limited:
            await conn.session.call_tool("search", {"query": "over"})
        assert limited.value.code == RATE_LIMITED
    assert "delete_repo" not in {t.name for t in listed.tools}
    raw = RawSession(stack.url, agent="metrics-agent")
    bad = await raw.post(b"{not json")
    assert bad.status == 400

    s = metrics(stack)
    assert value(s, "mcp_guard_requests", mcp_method="tools/call", mcp_decision="allow") == 9  # 2 echo, add, 6 search
    assert value(s, "mcp_guard_requests", mcp_method="tools/call", mcp_decision="deny") == 1
    assert value(s, "mcp_guard_requests", mcp_method="initialize", mcp_decision="allow") == 1
    # Bounded tool labels: echo and add got their own (first two), everything later is "other".
    assert value(s, "mcp_guard_tool_calls", mcp_tool="echo", mcp_decision="allow") == 2
    assert value(s, "mcp_guard_tool_calls", mcp_tool="add", mcp_decision="allow") == 1
    assert value(s, "mcp_guard_tool_calls", mcp_tool="other", mcp_decision="deny") == 1
    assert value(s, "mcp_guard_tool_calls", mcp_tool="other", mcp_decision="allow") == 6
    assert not [k for k in s if k[0] == "mcp_guard_tool_calls" and ("mcp_tool", "search") in k[1]]
    assert value(s, "mcp_guard_denials", mcp_reason="policy") == 1
    assert value(s, "mcp_guard_refusals", mcp_reason="parse") == 1
    assert value(s, "mcp_guard_rate_limited") == 1
    assert value(s, "mcp_guard_list_rewrites", mcp_list="tools") >= 1
    assert value(s, "mcp_guard_sse_events") >= 9  # every allowed call's SSE response
    assert value(s, "mcp_guard_config_loads") >= 1


async def test_config_rejects_are_counted(stack):
    before = value(metrics(stack), "mcp_guard_config_rejects")
    bad = json.loads(stack.policy.read_text(encoding="utf-8"))
    bad["no_such_field"] = True
    stack.push_policy(json.dumps(bad))
    wait_until(lambda: value(metrics(stack), "mcp_guard_config_rejects") > before, 15.0, "a counted config reject")
    # Restore the policy for any later test of this module.
    stack.push_policy(stack.policy.read_text(encoding="utf-8"))
