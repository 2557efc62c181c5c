"""Runs last: the whole access log written during the session is audit records only."""
from __future__ import annotations

import json

import pytest
from helpers import AUDIT_FIELDS, RawSession, audit_for, check_record

pytestmark = pytest.mark.anyio


async def test_every_access_log_line_is_a_schema_valid_audit_record(stack):
    # Some traffic of its own, so the check is meaningful when run alone.
    s = RawSession(stack.url, agent="log-agent")
    await s.initialize()
    await s.delete()
    audit_for(stack, agent_id="log-agent", http_method="DELETE")

    lines = stack.access_log.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 3
    for n, line in enumerate(lines, 1):
        # Every request in this session went to /mcp, so none may lack a record ("-").
        assert line not in ("", "-"), f"line {n}: request without an audit record"
        record = json.loads(line)
        assert isinstance(record, dict), f"line {n}: {line}"
        check_record(record)
        assert set(record) == AUDIT_FIELDS, f"line {n}: unexpected fields {set(record) ^ AUDIT_FIELDS}"
