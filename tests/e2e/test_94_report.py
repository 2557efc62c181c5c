"""`mcp-guard report` over an access log the real stack wrote (Envoy + mcp-guard + the official
Python SDK demo server + the official SDK client): a short scenario whose every count is known,
then the report as JSON and as text must say exactly what happened."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
from conftest import REPO, start_stack, test_policy
from helpers import DENIED, audit_for, mcp_session
from mcp.shared.exceptions import MCPError

sys.path.insert(0, str(REPO / "scripts"))
from render_ecds import cli_path  # noqa: E402

pytestmark = pytest.mark.anyio

CALLER = "report-caller"  # a clone of demo-agent: echo, add, search, fail
GUEST = "report-guest"  # not in the policy: `default` (echo only)
SEARCH_LIMIT = 5  # envoy/envoy.yaml: 5 search calls per agent per minute


@pytest.fixture(scope="module")
def report_stack(tmp_path_factory):
    """A stack of its own, so that its access log holds only this scenario."""
    policy = test_policy()
    policy["policy"]["agents"][CALLER] = copy.deepcopy(policy["policy"]["agents"]["demo-agent"])
    yield from start_stack(tmp_path_factory, policy)


def report(log, *args: str) -> str:
    done = subprocess.run(
        [str(cli_path()), "report", *args, str(log)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_report_counts_what_the_scenario_did(report_stack):
    stack = report_stack
    async with mcp_session(stack.url, agent=CALLER) as c:
        await c.session.list_tools()
        for text in ("one", "two"):
            await c.session.call_tool("echo", {"text": text})
        await c.session.call_tool("add", {"a": 1, "b": 2})
        failed = await c.session.call_tool("fail", {"reason": "on purpose"})
        assert failed.is_error
        with pytest.raises(MCPError) as denied:
            await c.session.call_tool("delete_repo", {"name": "everything"})
        assert denied.value.error.code == DENIED
        for i in range(SEARCH_LIMIT):
            await c.session.call_tool("search", {"query": f"q{i}"})
        with pytest.raises(MCPError):
            await c.session.call_tool("search", {"query": "one too many"})
    async with mcp_session(stack.url, agent=GUEST) as c:
        await c.session.call_tool("echo", {"text": "hi"})
        with pytest.raises(MCPError) as denied:
            await c.session.call_tool("add", {"a": 1, "b": 1})
        assert denied.value.error.code == DENIED

    # Every record of the scenario is in the log (the sessions' DELETEs are the last).
    audit_for(stack, count=2, http_method="DELETE")
    audit_for(stack, count=SEARCH_LIMIT, agent_id=CALLER, tool_name="search", output_status="success")
    records = [json.loads(line) for line in stack.access_log.read_text(encoding="utf-8").splitlines()]
    calls = [r for r in records if r["method"] == "tools/call"]
    assert len(calls) == 2 + 1 + 1 + 1 + SEARCH_LIMIT + 1 + 2

    r = json.loads(report(stack.access_log, "--json"))
    assert r["lines"] == {"total": len(records), "records": len(records), "invalid": 0, "oversized": 0}
    assert r["first_timestamp"] == min(x["timestamp"] for x in records)
    assert r["last_timestamp"] == max(x["timestamp"] for x in records)
    assert r["calls"] == len(records)
    assert r["rate_limited"] == 1
    assert r["decisions"] == {"allow": len(records) - 2, "deny": 2}

    # Servers: the one demo server, with the server names/versions and revisions the records carry.
    (server,) = r["servers"]
    assert server["server_id"] == "demo-server" and server["records"] == len(records)
    revisions = {}
    for x in records:
        if x["protocol_version"] is not None:
            revisions[x["protocol_version"]] = revisions.get(x["protocol_version"], 0) + 1
    assert server["protocol_versions"] == revisions and revisions
    versions = {(x.get("server_name"), x.get("server_version")) for x in records} - {(None, None)}
    assert {(v["server_name"], v["server_version"]) for v in server["versions"]} == versions

    # Agents and the tools each called.
    agents = {a["agent_id"]: a for a in r["agents"]}
    assert set(agents) == {CALLER, GUEST}
    assert r["agents_other"] is None
    caller_tools = {t["tool"]: (t["calls"], t["denied"]) for t in agents[CALLER]["tools"]}
    assert caller_tools == {"echo": (2, 0), "add": (1, 0), "fail": (1, 0), "delete_repo": (1, 1),
                            "search": (SEARCH_LIMIT + 1, 0)}  # fmt: skip
    assert agents[CALLER]["denied"] == 1 and agents[CALLER]["rate_limited"] == 1
    assert {t["tool"]: (t["calls"], t["denied"]) for t in agents[GUEST]["tools"]} == {"echo": (1, 0), "add": (1, 1)}

    # Denials by reason: two policy denials (-32003).
    assert r["denials"] == [{"reason": "policy", "deny": 2, "dry_run_deny": 0, "refused": 0}]

    # Per tool: outcomes and error rates.
    tools = {t["tool"]: t for t in r["tools"]}
    assert tools["echo"]["calls"] == 3 and tools["echo"]["success"] == 3 and tools["echo"]["error_rate"] == 0.0
    assert tools["fail"]["tool_error"] == 1 and tools["fail"]["error_rate"] == 1.0
    assert tools["search"]["success"] == SEARCH_LIMIT and tools["search"]["rate_limited"] == 1
    assert tools["add"]["calls"] == 2 and tools["add"]["denied"] == 1 and tools["add"]["success"] == 1
    assert tools["delete_repo"]["denied"] == 1 and tools["delete_repo"]["error_rate"] is None
    assert r["drift"]["records"] == 0 and r["drift"]["tools"] == []

    # The same, for a human.
    text = report(stack.access_log)
    assert f"lines: {len(records)} ({len(records)} records, 0 invalid" in text
    assert f"period: {r['first_timestamp']} .. {r['last_timestamp']}" in text
    assert "calls: {} (rate-limited 1)".format(len(records)) in text
    for word in (CALLER, GUEST, "delete_repo", "policy", "demo-server", "100.0%"):
        assert word in text, f"{word} not in\n{text}"
