"""Policy features a security team relies on, in a real Envoy: policy name and version in every
record, keyed input_hash (HMAC-SHA256), groups with deny-wins, and dry-run per rule set."""
from __future__ import annotations

import base64
import copy
import hashlib
import hmac

import pytest
from conftest import start_stack
from helpers import DENIED, RawSession, audit_for, tools_call_body

pytestmark = pytest.mark.anyio

KEY = bytes(range(32))
KEY_ID = "2026-11"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, base_policy: dict):
    policy = copy.deepcopy(base_policy)
    policy["policy"]["name"] = "prod-mcp"
    policy["policy"]["version"] = "42"
    policy["input_hash"] = {"hmac_key": base64.b64encode(KEY).decode(), "key_id": KEY_ID}
    agents = policy["policy"]["agents"]
    agents["ops-1"] = {"tools": ["echo", "add"]}
    agents["trial-1"] = {"tools": ["echo"], "mode": "dry_run"}
    policy["policy"]["groups"] = {
        # Members get everything but the destructive tool: deny wins over every allow.
        "ops": {"members": ["ops-*"], "tools": {"allow": ["*"], "deny": ["delete_*"]}},
    }
    yield from start_stack(tmp_path_factory, policy)


async def call(stack, agent: str, request_id: str, tool: str, args: str):
    s = RawSession(stack.url, agent=agent)
    await s.initialize(request_id=f"{request_id}-init")
    return await s.post(tools_call_body(request_id, tool, args))


async def test_records_name_the_policy_and_hash_arguments_with_the_key(stack):
    args = '{"text":"account 12345"}'
    resp = await call(stack, "ops-1", "k-1", "echo", args)
    assert resp.status == 200
    (rec,) = audit_for(stack, request_id="k-1")
    expected = hmac.new(KEY, args.encode(), hashlib.sha256).hexdigest()
    assert rec["input_hash"] == f"hmac-sha256:{KEY_ID}:{expected}"
    assert rec["input_hash"] != "sha256:" + hashlib.sha256(args.encode()).hexdigest()
    assert (rec["policy_name"], rec["policy_version"]) == ("prod-mcp", "42")


async def test_group_grants_and_its_deny_wins(stack):
    # ops-1's own entry allows echo and add; its group allows "*" but denies delete_*.
    resp = await call(stack, "ops-1", "g-1", "search", '{"query":"x"}')
    assert resp.status == 200 and "result" in resp.single(), resp.body
    resp = await call(stack, "ops-1", "g-2", "delete_repo", '{"name":"x"}')
    assert resp.jsonrpc_error(200, "g-2", DENIED)
    assert not [c for c in stack.calls() if c["tool"] == "delete_repo"]


async def test_dry_run_rule_set_forwards_and_records_the_would_be_denial(stack):
    resp = await call(stack, "trial-1", "d-1", "delete_repo", '{"name":"trial"}')
    assert resp.status == 200 and "result" in resp.single(), resp.body
    assert [c["arguments"]["name"] for c in stack.calls() if c["tool"] == "delete_repo"] == ["trial"]
    (rec,) = audit_for(stack, request_id="d-1")
    assert (rec["decision"], rec["output_status"]) == ("dry_run_deny", "success")
