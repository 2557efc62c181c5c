"""SSE responses stream through Envoy and mcp-guard as the server writes them."""
from __future__ import annotations

import time

import pytest
from helpers import audit_for, mcp_session

pytestmark = pytest.mark.anyio

STEPS, DELAY_MS = 3, 400  # the tool spends about STEPS * DELAY_MS after its first event


async def test_progress_events_arrive_before_the_result(stack):
    arrivals: list[tuple[float, float]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        arrivals.append((time.monotonic(), progress))

    # admin-agent's allowlist is ["*"]: countdown is in no other agent's list.
    async with mcp_session(stack.url, agent="admin-agent") as conn:
        result = await conn.session.call_tool(
            "countdown", {"steps": STEPS, "delay_ms": DELAY_MS}, progress_callback=on_progress
        )
        done = time.monotonic()
        sid = conn.session_id
    assert result.is_error is False
    assert [c.text for c in result.content] == [f"counted {STEPS}"]
    assert [p for _, p in arrivals] == [1, 2, 3]
    # Buffered, every event would arrive together with the result.
    first = arrivals[0][0]
    assert done - first >= 0.6 * STEPS * DELAY_MS / 1000, f"first event {done - first:.3f}s before the result"

    (rec,) = audit_for(stack, agent_id="admin-agent", session_id=sid, tool_name="countdown")
    assert (rec["decision"], rec["output_status"], rec["http_status"]) == ("allow", "success", 200)
    assert rec["latency_ms"] >= STEPS * DELAY_MS * 0.9
