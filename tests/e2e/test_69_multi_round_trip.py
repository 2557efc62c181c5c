"""Multi round-trip calls (MCP 2026-07-28 basic/patterns/mrtr, SEP-2322) through the real Envoy.

A raw upstream (tests/e2e/raw_upstream.py, scenario "input-required") answers a first
`tools/call` with `resultType: "input_required"` and a `requestState`, and the retry (new id,
`inputResponses`, the state echoed) with a complete result. The client is raw HTTP with
2026-07-28 requests (`_meta`, MCP-Protocol-Version, Mcp-Method, Mcp-Name), as the Python SDK 2.x
sends them, so a test can forge what no SDK would (a `requestState` the server never gave, a
client-sent `x-mcp-call-round`).

The stack is the shipped envoy/envoy.yaml (mcp-guard, then Envoy's local rate limit: 5 `search`
calls per agent per minute, keyed on mcp-guard's tags) plus mcp-guard's own
`rate_limit_service` (a `ratelimit` cluster to the real-gRPC test RLS, tests/e2e/rls_server.py),
with the request headers held, on two workers. Checked:
- the first round is audited `input_required` with `round_opens`, the retry `success` with the
  same link in `round_continues` and `round_matched: true`; JSON and SSE answers;
- a continuation is not asked of the RLS again and takes no local token: five two-round calls
  pass the local limit of five, the sixth first call is refused 429;
- a forged `requestState` (and a client-sent `x-mcp-call-round: continuation`) is counted like a
  new call: refused 429 while the agent is over its RLS limit, when the genuine continuation
  passes;
- policy is decided on every round: a policy push between the rounds denies round two.
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import start_stack, test_policy
from helpers import DENIED, RATE_LIMITED, RawResponse, audit_for, push_policy, raw_request
from rls_server import RateLimitServer, rls_cluster
from stack import Stack

pytestmark = pytest.mark.anyio

RAW_UPSTREAM = Path(__file__).resolve().parent / "raw_upstream.py"
RAW_UPSTREAM_COMMAND = [sys.executable, str(RAW_UPSTREAM), "--host", "{host}", "--port", "{port}",
                        "--call-log", "{call_log}"]  # fmt: skip
VERSION = "2026-07-28"
# One agent per test (each has its own local token bucket and RLS rule), all like demo-agent.
AGENTS = ("mrtr-json", "mrtr-sse", "mrtr-local", "mrtr-forged", "mrtr-policy")


def mrtr_policy() -> dict:
    policy = test_policy()
    agents = policy["policy"]["agents"]
    for name in AGENTS:
        agents[name] = copy.deepcopy(agents["demo-agent"])
    policy["rate_limit_service"] = {"cluster": "ratelimit", "domain": "mcp", "timeout_ms": 2000,
                                    "failure_mode_deny": True}  # fmt: skip
    return policy


def with_rls_cluster(rls_port: int):
    """The bootstrap hook: the shipped envoy/envoy.yaml plus a `ratelimit` cluster (HTTP/2)."""

    def hook(bootstrap: dict) -> dict:
        bootstrap = copy.deepcopy(bootstrap)
        bootstrap["static_resources"]["clusters"].append(rls_cluster(rls_port))
        return bootstrap

    return hook


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    rls = RateLimitServer(retry_after_s=30)
    rls.start()
    try:
        for s in start_stack(tmp_path_factory, mrtr_policy(), server_command=RAW_UPSTREAM_COMMAND,
                             bootstrap_hook=with_rls_cluster(rls.port)):  # fmt: skip
            s.rls = rls  # type: ignore[attr-defined]
            yield s
    finally:
        rls.stop()


def rls(s: Stack) -> RateLimitServer:
    return s.rls  # type: ignore[attr-defined]


def rls_calls(s: Stack, agent: str) -> int:
    """ShouldRateLimit requests mcp-guard sent for `agent` (each carries its agent descriptor)."""
    return sum(1 for r in rls(s).requests if (("agent", agent),) in r.descriptors)


def upstream(s: Stack, agent: str) -> list[dict]:
    """Every request from `agent` that reached the raw upstream, in order."""
    if not s.call_log.exists():
        return []
    entries = [json.loads(ln) for ln in s.call_log.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [e for e in entries if e["headers"].get("x-agent-id") == [agent]]


def call_body(rid: int, tool: str, arguments: dict, state: str | None = None, responses: bool = False) -> bytes:
    """A 2026-07-28 tools/call; a retry when `state` or `responses` is given."""
    params: dict[str, Any] = {
        "name": tool,
        "arguments": arguments,
        "_meta": {"io.modelcontextprotocol/protocolVersion": VERSION,
                  "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}},
                  "io.modelcontextprotocol/clientInfo": {"name": "mcp-guard-e2e", "version": "0"}},
    }  # fmt: skip
    if responses:
        params["inputResponses"] = {"confirm": {"action": "accept", "content": {"ok": True}}}
    if state is not None:
        params["requestState"] = state
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}).encode()


async def call(s: Stack, agent: str, body: bytes, tool: str, extra: dict[str, str] | None = None) -> RawResponse:
    headers = {"x-agent-id": agent, "mcp-protocol-version": VERSION, "mcp-method": "tools/call", "mcp-name": tool}
    headers.update(extra or {})
    return await raw_request(s.url, "POST", body, headers)


def record(s: Stack, agent: str, rid: int) -> dict:
    (rec,) = audit_for(s, agent_id=agent, request_id=rid)
    return rec


@pytest.mark.parametrize("sse", [False, True], ids=["json", "sse"])
async def test_the_rounds_of_one_call_are_linked_and_counted_once(stack, sse):
    agent = "mrtr-sse" if sse else "mrtr-json"
    args = {"scenario": "input-required", "sse": sse}
    first = await call(stack, agent, call_body(1, "echo", args), "echo")
    assert first.status == 200, first
    result = first.single()["result"]
    assert result["resultType"] == "input_required" and result["requestState"] == "v1.opaque-state", result
    opened = record(stack, agent, 1)
    assert (opened["output_status"], opened["decision"]) == ("input_required", "allow"), opened
    assert opened["protocol_version"] == VERSION, opened
    link = opened["round_opens"]
    assert link.startswith("sha256:") and "opaque" not in json.dumps(opened), opened
    assert "round_continues" not in opened
    assert rls_calls(stack, agent) == 1

    retry = await call(stack, agent, call_body(2, "echo", args, "v1.opaque-state", responses=True), "echo")
    assert retry.status == 200, retry
    assert retry.single()["result"]["resultType"] == "complete"
    done = record(stack, agent, 2)
    assert done["output_status"] == "success", done
    assert (done["round_continues"], done["round_matched"]) == (link, True), done
    # The RLS answered the first round only (mcp-guard waits for its answer before it forwards).
    assert rls_calls(stack, agent) == 1
    rounds = [e["headers"].get("x-mcp-call-round") for e in upstream(stack, agent)]
    assert rounds == [["first"], ["continuation"]], rounds


async def test_envoy_local_limit_counts_a_logical_call_once(stack):
    """envoy/envoy.yaml: 5 `search` calls per agent per minute. Five two-round calls (ten
    requests) pass; the next first call is the sixth logical call and gets the 429."""
    agent = "mrtr-local"
    args = {"scenario": "input-required", "state": "v1.local"}
    for n in range(5):
        first = await call(stack, agent, call_body(10 * n + 1, "search", args), "search")
        assert first.status == 200 and first.single()["result"]["resultType"] == "input_required", (n, first)
        retry = await call(stack, agent, call_body(10 * n + 2, "search", args, "v1.local", True), "search")
        assert retry.status == 200 and retry.single()["result"]["resultType"] == "complete", (n, retry)
    over = await call(stack, agent, call_body(99, "search", args), "search")
    over.jsonrpc_error(429, 99, RATE_LIMITED)
    assert record(stack, agent, 99)["output_status"] == "rate_limited"
    assert len(upstream(stack, agent)) == 10


async def test_a_forged_request_state_is_rate_limited_like_a_new_call(stack):
    agent = "mrtr-forged"
    args = {"scenario": "input-required", "state": "v1.genuine"}
    first = await call(stack, agent, call_body(1, "echo", args), "echo")
    assert first.status == 200 and first.single()["result"]["resultType"] == "input_required", first
    link = record(stack, agent, 1)["round_opens"]
    rls(stack).over_limit(lambda descriptors: (("agent", agent),) in descriptors)
    try:
        # A requestState the server never gave, with a client-sent round tag: a new call,
        # refused while the agent is over its limit. It never reaches the server.
        forged = await call(stack, agent, call_body(2, "echo", args, "v1.forged", True), "echo",
                            {"x-mcp-call-round": "continuation"})  # fmt: skip
        forged.jsonrpc_error(429, 2, RATE_LIMITED)
        rec = record(stack, agent, 2)
        assert (rec["output_status"], rec["round_matched"]) == ("rate_limited", False), rec
        assert rec["round_continues"] not in (None, link), rec
        # Only inputResponses, no state: the round had a state, so this matches nothing either.
        bare = await call(stack, agent, call_body(3, "echo", args, None, True), "echo")
        bare.jsonrpc_error(429, 3, RATE_LIMITED)
        # The genuine state on a retry with other arguments: another call, counted and refused.
        other = await call(stack, agent, call_body(6, "echo", {**args, "extra": 1}, "v1.genuine", True), "echo")
        other.jsonrpc_error(429, 6, RATE_LIMITED)
        # The genuine continuation of the open round is not counted again: it passes.
        asked = rls_calls(stack, agent)
        genuine = await call(stack, agent, call_body(4, "echo", args, "v1.genuine", True), "echo")
        assert genuine.status == 200 and genuine.single()["result"]["resultType"] == "complete", genuine
        assert rls_calls(stack, agent) == asked
        rec = record(stack, agent, 4)
        assert (rec["round_continues"], rec["round_matched"], rec["output_status"]) == (link, True, "success")
        # Replayed: the round is used up, so it is counted, and refused.
        replay = await call(stack, agent, call_body(5, "echo", args, "v1.genuine", True), "echo")
        replay.jsonrpc_error(429, 5, RATE_LIMITED)
    finally:
        rls(stack).over_limit(None)
    ids = [e.get("id") for e in upstream(stack, agent)]
    assert ids == [1, 4], ids


async def test_policy_is_decided_again_on_every_round(stack):
    agent = "mrtr-policy"
    args = {"scenario": "input-required", "state": "v1.policy"}
    first = await call(stack, agent, call_body(1, "add", args), "add")
    assert first.status == 200 and first.single()["result"]["resultType"] == "input_required", first
    link = record(stack, agent, 1)["round_opens"]
    pushed = mrtr_policy()
    pushed["policy"]["agents"][agent]["tools"] = ["echo"]
    push_policy(stack, pushed)
    try:
        retry = await call(stack, agent, call_body(2, "add", args, "v1.policy", True), "add")
        retry.jsonrpc_error(200, 2, DENIED)
        rec = record(stack, agent, 2)
        assert (rec["decision"], rec["output_status"]) == ("deny", "denied"), rec
        assert (rec["round_continues"], rec["round_matched"]) == (link, False), rec
    finally:
        push_policy(stack, mrtr_policy())
    assert [e.get("id") for e in upstream(stack, agent)] == [1]
