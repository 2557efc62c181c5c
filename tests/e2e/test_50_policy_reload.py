"""Policy changes through the ECDS file, with Envoy running: applied, or rejected and ignored.

Every push waits (helpers.push_policy) until Envoy counted the update and every worker has
loaded the new configuration (mcp-guard's `config.loads` counter), or the filter refused it
(`config.rejects`); then one call shows what is enforced. Each test restores the session's base
policy before it ends.
"""
from __future__ import annotations

import copy

import pytest
from helpers import DENIED, audit_for, mcp_session, push_policy
from mcp.shared.exceptions import MCPError
from stack import wait_until

pytestmark = pytest.mark.anyio



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
    push_policy(stack, base_policy)
    assert await delete_repo_outcome(stack, "demo-agent", "probe-restore") == "denied"


async def test_policy_change_takes_effect_without_restart(stack, base_policy):
    envoy_pid = stack.envoy.pid
    assert await delete_repo_outcome(stack, "demo-agent", "before") == "denied"

    widened = copy.deepcopy(base_policy)
    widened["policy"]["agents"]["demo-agent"]["tools"].append("delete_repo")
    try:
        push_policy(stack, widened)
        assert await delete_repo_outcome(stack, "demo-agent", "reload-1") == "allowed"
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
        push_policy(stack, dry)
        assert await delete_repo_outcome(stack, "demo-agent", "dry-run") == "allowed"
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
        push_policy(stack, bad, accepted=False)  # refused by the filter, loaded by no worker
        assert await delete_repo_outcome(stack, "demo-agent", "after-bad-push") == "denied"
        async with mcp_session(stack.url, agent="demo-agent") as conn:
            ok = await conn.session.call_tool("echo", {"text": "still enforcing"})
        assert ok.is_error is False

        def new_log() -> str:
            return stack.envoy_log.read_bytes()[log_offset:].decode("utf-8", "replace")

        # Envoy logs the rejection right after counting it: a bounded wait for the line.
        wait_until(lambda: "Filesystem config update rejected" in new_log(), 5.0, "Envoy's rejection log line")
        new_log = new_log()
        filter_lines = [ln for ln in new_log.splitlines() if "wasm log" in ln and field in ln]
        assert len(filter_lines) == 1, f"expected one filter log line naming {field!r}:\n{new_log[-3000:]}"
        assert "[error]" in filter_lines[0]
    finally:
        await restore(stack, base_policy)
    assert [c for c in stack.calls() if c["arguments"] == {"name": "after-bad-push"}] == []
