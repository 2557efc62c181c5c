"""The shared stack's access log is audit records only. (Every stack's whole log is validated
again at teardown, conftest.start_stack; this test needs no other test's traffic.)"""
from __future__ import annotations

import pytest
from helpers import RawSession, assert_access_log_valid, audit_for

pytestmark = pytest.mark.anyio


async def test_every_access_log_line_is_a_schema_valid_audit_record(stack):
    # Some traffic of its own, so the check is meaningful when run alone.
    s = RawSession(stack.url, agent="log-agent")
    await s.initialize()
    await s.delete()
    audit_for(stack, agent_id="log-agent", http_method="DELETE")

    assert_access_log_valid(stack)
