"""Policy changes through the ECDS file, with Envoy running: applied, or rejected and ignored.

Each test restores the session's base policy before it ends.
"""
from __future__ import annotations

import copy
import json
import time
from typing import Awaitable, Callable

import anyio
import pytest
from helpers import DENIED, audit_for, mcp_session
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.anyio

SWITCH_TIMEOUT = 10.0  # seconds for every worker to pick up an accepted config


async def eventually(probe: Callable[[], Awaitable[bool]], what: str, timeout: float = SWITCH_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s: {what}")
        await anyio.sleep(0.2)


async def delete_repo_outcome(stack, agent: str, name: str) -> str:
    """'allowed' or 'denied' for one delete_repo call in a fresh SDK session."""
    async with mcp_session(stack.url, agent=agent) as conn:
        try:
            result = await conn.session.call_tool("delete_repo", {"name": name})
        except MCPError as exc:
            assert exc.code == DENIED, exc
            return "denied"
    assert [c.text for c in result.content] == [f"deleted {name}"]
    return "allowed"


async def restore(stack, base_policy: dict) -> None:
    assert stack.push_policy_and_wait(json.dumps(base_policy)), "base policy was rejected"

    async def denied_again() -> bool:
        return await delete_repo_outcome(stack, "demo-agent", "probe-restore") == "denied"

    await eventually(denied_again, "the base policy to be enforced again")


async def test_policy_change_takes_effect_without_restart(stack, base_policy):
    envoy_pid = stack.envoy.pid
    assert await delete_repo_outcome(stack, "demo-agent", "before") == "denied"

    widened = copy.deepcopy(base_policy)
    widened["policy"]["agents"]["demo-agent"]["tools"].append("delete_repo")
    try:
        assert stack.push_policy_and_wait(json.dumps(widened)) is True

        async def allowed() -> bool:
            return await delete_repo_outcome(stack, "demo-agent", "reload-1") == "allowed"

        await eventually(allowed, "demo-agent to be allowed delete_repo")
        assert stack.envoy.pid == envoy_pid and stack.envoy.poll() is None  # same process, no restart
        assert [c["arguments"] for c in stack.calls() if c["tool"] == "delete_repo"] == [{"name": "reload-1"}]
        (rec,) = audit_for(stack, agent_id="demo-agent", tool_name="delete_repo", decision="allow")
        assert rec["output_status"] == "success"
    finally:
        await restore(stack, base_policy)


async def test_dry_run_forwards_and_audits_would_be_denials(stack, base_policy):
    dry = copy.deepcopy(base_policy)
    dry["policy"]["mode"] = "dry_run"
    try:
        assert stack.push_policy_and_wait(json.dumps(dry)) is True

        async def forwarded() -> bool:
            return await delete_repo_outcome(stack, "demo-agent", "dry-run") == "allowed"

        await eventually(forwarded, "dry_run mode to forward a non-allowlisted call")
        (rec,) = audit_for(stack, agent_id="demo-agent", tool_name="delete_repo", decision="dry_run_deny")
        assert (rec["output_status"], rec["error_code"], rec["http_status"]) == ("success", None, 200)
    finally:
        await restore(stack, base_policy)


def _unknown_top_level(policy: dict) -> tuple[dict, str]:
    bad = copy.deepcopy(policy)
    bad["bogus_top_level_field"] = True
    return bad, "bogus_top_level_field"


def _unknown_agent_field(policy: dict) -> tuple[dict, str]:
    bad = copy.deepcopy(policy)
    bad["policy"]["agents"]["demo-agent"]["delete_repo_toolz"] = ["delete_repo"]
    return bad, "delete_repo_toolz"


@pytest.mark.parametrize("make_bad", [_unknown_top_level, _unknown_agent_field], ids=["top-level", "in-agent"])
async def test_invalid_policy_is_rejected_and_previous_policy_keeps_enforcing(stack, base_policy, make_bad):
    bad, field = make_bad(base_policy)
    # Widen the bad policy too, so that if it were applied the denial below would flip.
    bad["policy"]["agents"]["demo-agent"]["tools"].append("delete_repo")
    log_offset = stack.envoy_log.stat().st_size
    try:
        assert stack.push_policy_and_wait(json.dumps(bad)) is False
        await anyio.sleep(1.0)  # give workers time to (wrongly) switch
        assert await delete_repo_outcome(stack, "demo-agent", "after-bad-push") == "denied"
        async with mcp_session(stack.url, agent="demo-agent") as conn:
            ok = await conn.session.call_tool("echo", {"text": "still enforcing"})
        assert ok.is_error is False

        new_log = stack.envoy_log.read_bytes()[log_offset:].decode("utf-8", "replace")
        filter_lines = [ln for ln in new_log.splitlines() if "wasm log" in ln and field in ln]
        assert len(filter_lines) == 1, f"expected one filter log line naming {field!r}:\n{new_log[-3000:]}"
        assert "[error]" in filter_lines[0]
        assert "Filesystem config update rejected" in new_log
    finally:
        await restore(stack, base_policy)
    assert [c for c in stack.calls() if c["arguments"] == {"name": "after-bad-push"}] == []
