"""MCP 2026-07-28 end to end with the official Python SDK 2.x on both sides: the SDK's `Client`
(mode "auto": server/discover, then stateless requests) through the real Envoy + mcp-guard to
the demo server (SDK 2.x `MCPServer`) started with --modern-tools and public list cache hints.

What a 2026-07-28 client sends (all set by the SDK): no initialize and no Mcp-Session-Id; every
request carries `params._meta` with `io.modelcontextprotocol/protocolVersion` and
`clientCapabilities`, and the headers MCP-Protocol-Version, Mcp-Method, Mcp-Name (tools/call,
prompts/get, resources/read) and Mcp-Param-<Name> for each argument whose inputSchema property
has `x-mcp-header`. A call may be answered `resultType: "input_required"`; the SDK's own
multi-round-trip driver hands the input requests to the client's callbacks and retries the call
with a new id, `inputResponses` and the echoed `requestState`.

Covered: stateless calls allowed, tagged and audited; a denied call; curated lists (cacheScope
private, ttlMs kept); a 429; the audit record's protocol_version; the multi-round-trip tool
(confirm_delete: elicitation); the x-mcp-header argument (run_query's region) mirrored by the
SDK, verified by mcp-guard and offered as a rate-limit descriptor.

Tests that need a feature of another branch of issue 15 say so in their docstring:
h-version (audit protocol_version), h-mrtr (input_required outcome, linked rounds, the round
tag a rate limit uses to count a logical call once), h-params (param_tags: Mcp-Param verified
by mcp-guard, tag header, audit hash). The others pass on main's filter.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import httpx2
import mcp_types as types
import pytest
from conftest import start_stack, test_policy
from helpers import DENIED, HTTP_TIMEOUT, RATE_LIMITED, audit_for
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "examples" / "sdk"))
from py_client import Wire  # noqa: E402  (the example client's wire recorder)

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"
HEADER_MISMATCH = -32020  # 2026-07-28 HeaderMismatch
LIST_TTL_MS = 60000  # the demo server's --public-lists-ttl-ms: its lists say ttlMs 60000, public
SERVER_ARGS = ["--modern-tools", "--public-lists-ttl-ms", str(LIST_TTL_MS), "--log-http-requests"]
SEARCH_LIMIT = 5  # envoy/envoy.yaml: 5 `search` calls per agent per minute

# Each test its own agent (its own rate-limit buckets, audit records and call-log lines).
TOOLS = ["echo", "add", "search", "fail", "confirm_delete", "run_query"]
AGENTS = ("s71-calls", "s71-deny", "s71-lists", "s71-rl", "s71-audit", "s71-mrtr", "s71-mrtr-audit", "s71-param",
          "s71-relist", f"s71-example-{MODERN}", "s71-example-legacy")  # fmt: skip
HIDDEN_TOOLS = {"countdown", "delete_repo"}  # the demo server has them; the agents may not call them


def policy_2026() -> dict:
    policy = test_policy()
    for agent in AGENTS:
        policy["policy"]["agents"][agent] = {"tools": list(TOOLS), "prompts": ["greet"], "resources": ["demo://docs/*"]}
    return policy


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    yield from start_stack(tmp_path_factory, policy_2026(), server_args=SERVER_ARGS)


@asynccontextmanager
async def modern_client(url: str, agent: str, answers: list[str] | None = None) -> AsyncIterator[tuple[Client, Wire]]:
    """The SDK's Client in mode auto, with x-agent-id; its elicitation callback accepts with
    {"confirm": true} and appends each question to `answers`. Yields the client and the wire
    record (every POST: request headers and message, status, JSON answer)."""
    wire = Wire()

    async def on_elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        if answers is not None:
            answers.append(params.message)
        return types.ElicitResult(action="accept", content={"confirm": True})

    hooks = {"request": [wire.on_request], "response": [wire.on_response, record_headers(wire)]}
    async with httpx2.AsyncClient(headers={"x-agent-id": agent}, timeout=HTTP_TIMEOUT, event_hooks=hooks) as http:
        async with Client(streamable_http_client(url, http_client=http), mode="auto",
                          elicitation_callback=on_elicit) as client:  # fmt: skip
            assert client.protocol_version == MODERN, "the SDK fell back to initialize"
            yield client, wire


def record_headers(wire: Wire) -> Any:
    """A response hook keeping every response's headers (wire.response_headers)."""
    wire.response_headers = []  # type: ignore[attr-defined]

    async def hook(response: httpx2.Response) -> None:
        wire.response_headers.append({k.lower(): v for k, v in response.headers.items()})  # type: ignore[attr-defined]

    return hook


def posts_of(wire: Wire, method: str, name: str | None = None) -> list[dict]:
    return [
        p for p in wire.posts
        if isinstance(p["request"], dict) and p["request"].get("method") == method
        and (name is None or p["request"].get("params", {}).get("name") == name)
    ]  # fmt: skip


def calls_by(stack: Any, agent: str, kind: str = "tool") -> list[dict]:
    return [c for c in stack.calls(kind) if c["headers"].get("x-agent-id") == [agent]]


# --------------------------------------------------------------------------- stateless calls


async def test_stateless_calls_are_allowed_tagged_and_audited(stack):
    agent = "s71-calls"
    async with modern_client(stack.url, agent) as (client, wire):
        echoed = await client.call_tool("echo", {"text": "stateless \u00e9"})
        added = await client.call_tool("add", {"a": 2, "b": 3})
        prompt = await client.get_prompt("greet", {"name": "Ada"})
        doc = await client.read_resource("demo://docs/modern")
    assert [c.text for c in echoed.content] == ["stateless \u00e9"]
    assert [c.text for c in added.content] == ["5"]
    assert prompt.messages[0].content.text == "Say hello to Ada."
    assert doc.contents[0].text == "mcp-guard demo document modern"

    # Stateless on the wire: no request and no response carried a session id; every POST
    # said 2026-07-28 in its header and in its _meta.
    methods = [p["request"]["method"] for p in wire.posts]
    assert methods[0] == "server/discover" and "initialize" not in methods, methods
    for post in wire.posts:
        assert post["status"] == 200, post
        assert post["headers"]["mcp-protocol-version"] == MODERN and "mcp-session-id" not in post["headers"], post
        assert post["request"]["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] == MODERN, post
    assert all("mcp-session-id" not in h for h in wire.response_headers), wire.response_headers

    # What the server received: only POSTs (no GET stream, no DELETE), and the calls tagged.
    http = [e for e in stack.calls("http") if e["headers"].get("x-agent-id") == [agent]]
    assert {e["http"] for e in http} == {"POST"}, http
    assert all(e["headers"]["mcp-protocol-version"] == [MODERN] for e in http), http
    tools = calls_by(stack, agent)
    assert [c["tool"] for c in tools] == ["echo", "add"], tools
    for c in tools:
        assert (c["headers"]["x-mcp-method"], c["headers"]["x-mcp-tool-name"]) == (["tools/call"], [c["tool"]]), c
        assert "mcp-session-id" not in c["headers"], c
    (p,) = calls_by(stack, agent, "prompt")
    assert p["headers"]["x-mcp-prompt-name"] == ["greet"], p
    (r,) = calls_by(stack, agent, "resource")
    assert r["headers"]["x-mcp-resource-uri"] == ["demo://docs/modern"], r

    for tool in ("echo", "add"):
        (post,) = posts_of(wire, "tools/call", tool)
        (rec,) = audit_for(stack, agent_id=agent, tool_name=tool)
        assert (rec["method"], rec["decision"], rec["output_status"]) == ("tools/call", "allow", "success"), rec
        assert (rec["request_id"], rec["session_id"], rec["http_status"]) == (post["request"]["id"], None, 200), rec
    (rec,) = audit_for(stack, agent_id=agent, method="prompts/get")
    assert (rec["prompt_name"], rec["output_status"], rec["session_id"]) == ("greet", "success", None), rec
    (rec,) = audit_for(stack, agent_id=agent, method="resources/read")
    assert (rec["resource_uri"], rec["output_status"], rec["session_id"]) == ("demo://docs/modern", "success", None)
    (rec,) = audit_for(stack, agent_id=agent, method="server/discover")
    assert (rec["decision"], rec["output_status"], rec["session_id"]) == ("allow", "success", None), rec


async def test_denied_call_is_refused_by_mcp_guard_and_never_runs(stack):
    """A tool the agent may not call (hidden from its list; the SDK sends it anyway): mcp-guard
    answers the POST itself with JSON-RPC -32003 and the call's id; the SDK raises it."""
    agent = "s71-deny"
    async with modern_client(stack.url, agent) as (client, wire):
        with pytest.raises(MCPError) as excinfo:
            await client.call_tool("delete_repo", {"name": "prod"})
        echoed = await client.call_tool("echo", {"text": "still allowed"})
    assert excinfo.value.code == DENIED
    assert [c.text for c in echoed.content] == ["still allowed"]
    (post,) = posts_of(wire, "tools/call", "delete_repo")
    assert post["status"] == 200 and post["content_type"].split(";")[0] == "application/json", post
    assert post["response"]["id"] == post["request"]["id"] and post["response"]["error"]["code"] == DENIED, post
    assert post["headers"]["mcp-name"] == "delete_repo", post
    assert [c["tool"] for c in calls_by(stack, agent)] == ["echo"]
    (rec,) = audit_for(stack, agent_id=agent, tool_name="delete_repo")
    assert (rec["decision"], rec["output_status"], rec["error_code"]) == ("deny", "denied", DENIED), rec
    assert (rec["request_id"], rec["session_id"]) == (post["request"]["id"], None), rec


# --------------------------------------------------------------------------- curated lists


async def test_curated_lists_are_private_and_keep_their_ttl(stack):
    """The server says `ttlMs: 60000, cacheScope: "public"` on its lists (asked directly);
    through mcp-guard each list is curated for the agent, so it leaves as private, ttlMs kept:
    a shared cache must not serve one agent's view to another."""
    async with Client(f"http://127.0.0.1:{stack.upstream_port}/mcp", mode="auto") as direct:
        raw_tools = await direct.list_tools()
        raw_prompts = await direct.list_prompts()
        raw_resources = await direct.list_resources()
    for raw in (raw_tools, raw_prompts, raw_resources):
        assert (raw.ttl_ms, raw.cache_scope) == (LIST_TTL_MS, "public"), raw
    assert HIDDEN_TOOLS <= {t.name for t in raw_tools.tools}

    agent = "s71-lists"
    async with modern_client(stack.url, agent) as (client, wire):
        tools = await client.list_tools()
        prompts = await client.list_prompts()
        resources = await client.list_resources()
    assert {t.name for t in tools.tools} == set(TOOLS), tools.tools
    assert {p.name for p in prompts.prompts} == {"greet"}, prompts.prompts
    assert {str(r.uri) for r in resources.resources} == {"demo://docs/index"}, resources.resources
    for curated in (tools, prompts, resources):
        assert (curated.ttl_ms, curated.cache_scope) == (LIST_TTL_MS, "private"), curated
        assert curated.result_type == "complete", curated
    # The x-mcp-header annotation survives curation (the client needs it to send Mcp-Param-*).
    (run_query,) = [t for t in tools.tools if t.name == "run_query"]
    assert run_query.input_schema["properties"]["region"]["x-mcp-header"] == "Region", run_query.input_schema
    for method in ("tools/list", "prompts/list", "resources/list"):
        (rec,) = audit_for(stack, agent_id=agent, method=method)
        assert (rec["decision"], rec["output_status"], rec["session_id"]) == ("allow", "success", None), rec


# --------------------------------------------------------------------------- 429


async def test_sixth_search_is_429_and_the_sdk_raises_the_jsonrpc_error(stack):
    agent = "s71-rl"
    async with modern_client(stack.url, agent) as (client, wire):
        for i in range(SEARCH_LIMIT):
            result = await client.call_tool("search", {"query": f"envoy {i}"})
            assert result.is_error is False, (i, result)
        with pytest.raises(MCPError) as excinfo:
            await client.call_tool("search", {"query": "one too many"})
        echoed = await client.call_tool("echo", {"text": "echo is not limited"})
    assert excinfo.value.code == RATE_LIMITED
    assert echoed.is_error is False
    last = posts_of(wire, "tools/call", "search")[-1]
    assert last["status"] == 429 and last["response"]["error"]["code"] == RATE_LIMITED, last
    assert last["response"]["id"] == last["request"]["id"], last
    assert len([c for c in calls_by(stack, agent) if c["tool"] == "search"]) == SEARCH_LIMIT
    (rec,) = audit_for(stack, agent_id=agent, tool_name="search", output_status="rate_limited")
    assert (rec["http_status"], rec["error_code"], rec["decision"]) == (429, RATE_LIMITED, "allow"), rec
    assert (rec["request_id"], rec["session_id"]) == (last["request"]["id"], None), rec


# --------------------------------------------------------------------------- audit fields


async def test_audit_records_carry_the_protocol_version_and_no_session(stack):
    """Every record of a 2026-07-28 client's requests says protocol_version "2026-07-28"
    (needs h-version: the audit field protocol_version) and session_id null."""
    agent = "s71-audit"
    async with modern_client(stack.url, agent) as (client, wire):
        await client.list_tools()
        await client.call_tool("echo", {"text": "audited"})
        with pytest.raises(MCPError):
            await client.call_tool("countdown", {"steps": 1, "delay_ms": 0})
    records = audit_for(stack, 4, agent_id=agent)
    assert sorted(r["method"] for r in records) == ["server/discover", "tools/call", "tools/call", "tools/list"]
    for rec in records:
        assert rec["protocol_version"] == MODERN, rec
        assert rec["session_id"] is None, rec


# --------------------------------------------------------------------------- multi-round trip


async def test_multi_round_trip_call_passes_through_both_rounds(stack):
    """confirm_delete asks for a confirmation: the server answers the first tools/call with
    `resultType: "input_required"`; the SDK asks this client's elicitation callback and retries
    with a new id, `inputResponses` and the same `requestState`. mcp-guard forwards both
    rounds, each checked and tagged as a tools/call of confirm_delete."""
    agent = "s71-mrtr"
    questions: list[str] = []
    async with modern_client(stack.url, agent, questions) as (client, wire):
        result = await client.call_tool("confirm_delete", {"name": "staging"})
    assert [c.text for c in result.content] == ["deleted staging"], result
    assert questions == ["Delete staging?"]

    first, retry = posts_of(wire, "tools/call", "confirm_delete")
    assert first["request"]["id"] != retry["request"]["id"]
    opened = first["response"]["result"]
    assert opened["resultType"] == "input_required" and opened["inputRequests"] and opened["requestState"], opened
    assert retry["request"]["params"]["requestState"] == opened["requestState"]
    assert set(retry["request"]["params"]["inputResponses"]) == set(opened["inputRequests"])
    assert retry["response"]["result"]["resultType"] == "complete", retry
    for post in (first, retry):
        assert post["status"] == 200 and post["headers"]["mcp-name"] == "confirm_delete", post

    rounds = calls_by(stack, agent, "round")
    assert [r["answered"] for r in rounds] == [False, True], rounds
    for r in rounds:
        assert r["headers"]["x-mcp-tool-name"] == ["confirm_delete"], r
    assert [c["tool"] for c in calls_by(stack, agent)] == ["confirm_delete"]
    records = audit_for(stack, 2, agent_id=agent, tool_name="confirm_delete")
    assert [r["request_id"] for r in records] == [first["request"]["id"], retry["request"]["id"]], records
    assert all(r["decision"] == "allow" and r["session_id"] is None for r in records), records


async def test_multi_round_trip_audit_says_input_required_and_links_the_rounds(stack):
    """The first round's record says output_status "input_required" (not success) and opens a
    round link; the retry's record says success, continues that link and matched it. The link
    is a hash, never the raw requestState. (Needs h-mrtr.)"""
    agent = "s71-mrtr-audit"
    async with modern_client(stack.url, agent, []) as (client, wire):
        result = await client.call_tool("confirm_delete", {"name": "qa"})
    assert [c.text for c in result.content] == ["deleted qa"]
    first, retry = posts_of(wire, "tools/call", "confirm_delete")
    state = first["response"]["result"]["requestState"]
    (opened,) = audit_for(stack, agent_id=agent, request_id=first["request"]["id"])
    (continued,) = audit_for(stack, agent_id=agent, request_id=retry["request"]["id"])
    assert (opened["output_status"], opened["http_status"]) == ("input_required", 200), opened
    assert (continued["output_status"], continued["http_status"]) == ("success", 200), continued
    assert isinstance(opened["round_opens"], str) and opened["round_opens"], opened
    assert continued["round_continues"] == opened["round_opens"], (opened, continued)
    assert continued["round_matched"] is True, continued
    for rec in (opened, continued):
        assert state not in json.dumps(rec), rec


# --------------------------------------------------------------------------- x-mcp-header


async def test_sdk_mirrors_the_x_mcp_header_argument_into_mcp_param(stack):
    """run_query's `region` is marked `x-mcp-header: Region`: the SDK client (having listed the
    tool through mcp-guard) sends `Mcp-Param-Region: <region>` with the call; it reaches the
    server with the body's value."""
    agent = "s71-param"
    async with modern_client(stack.url, agent) as (client, wire):
        await client.list_tools()
        result = await client.call_tool("run_query", {"region": "eu-west", "sql": "select 1"})
    assert [c.text for c in result.content] == ["eu-west: select 1"]
    (post,) = posts_of(wire, "tools/call", "run_query")
    assert post["headers"]["mcp-param-region"] == "eu-west", post
    (call,) = calls_by(stack, agent)
    assert call["headers"]["mcp-param-region"] == ["eu-west"], call
    (rec,) = audit_for(stack, agent_id=agent, tool_name="run_query")
    assert (rec["decision"], rec["output_status"]) == ("allow", "success"), rec
    assert "eu-west" not in json.dumps(rec) and "select 1" not in json.dumps(rec), rec


async def test_sdk_relists_and_resends_after_a_header_mismatch(stack):
    """A client that calls run_query before listing it cannot know `region` is mirrored, so it
    sends no Mcp-Param-Region: the call is refused with HTTP 400 / -32020 (by the server, or by
    mcp-guard once it knows the marking); the SDK's recovery re-lists the tools through
    mcp-guard and resends once, now with the header, and that call succeeds."""
    agent = "s71-relist"
    async with modern_client(stack.url, agent) as (client, wire):
        result = await client.call_tool("run_query", {"region": "eu-west", "sql": "select 2"})
    assert [c.text for c in result.content] == ["eu-west: select 2"]
    refused, resent = posts_of(wire, "tools/call", "run_query")
    assert "mcp-param-region" not in refused["headers"], refused
    assert refused["status"] == 400 and refused["response"]["error"]["code"] == HEADER_MISMATCH, refused
    assert refused["response"]["id"] == refused["request"]["id"], refused
    assert resent["status"] == 200 and resent["headers"]["mcp-param-region"] == "eu-west", resent
    methods = [p["request"]["method"] for p in wire.posts]
    assert methods.index("tools/list") > methods.index("tools/call"), methods  # re-listed in between
    (call,) = calls_by(stack, agent)
    assert call["headers"]["mcp-param-region"] == ["eu-west"], call


# --------------------------------------------------------------------------- the example client


@pytest.mark.parametrize("mode", [MODERN, "legacy"])
def test_example_client_runs_the_modern_scenario_through_mcp_guard(stack, mode):
    """examples/sdk/py_client.py --scenario modern, as the README shows it: echo,
    confirm_delete (answered by the client's elicitation callback), run_query and delete_repo
    (denied by mcp-guard). At 2026-07-28 (stateless) confirm_delete is a multi-round-trip call
    (two tools/call POSTs) and run_query carries Mcp-Param-Region; in legacy mode (an
    initialized 2025-11-25 session) the same tool sends an elicitation/create request on the
    call's SSE stream and the client POSTs its answer back, all through mcp-guard."""
    agent = f"s71-example-{mode}"
    cmd = [sys.executable, str(REPO / "examples" / "sdk" / "py_client.py"), "--url", stack.url, "--agent", agent,
           "--mode", mode, "--scenario", "modern", "--timeout", "20"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    modern = mode == MODERN
    if modern:
        assert (out["protocol_version"], out["session_id"]) == (MODERN, None), out
        assert out["list_cache"] == {"ttlMs": LIST_TTL_MS, "cacheScope": "private"}, out["list_cache"]
    else:
        assert out["protocol_version"] == "2025-11-25" and out["session_id"], out
    assert set(out["tools"]) == set(TOOLS), out["tools"]
    assert out["elicitations"] == ["Delete staging?"], out
    by_tool = {c["tool"]: c for c in out["calls"]}
    assert by_tool["echo"]["result"]["text"] == ["hello at 2026-07-28"], by_tool
    assert by_tool["confirm_delete"]["result"]["text"] == ["deleted staging"], by_tool
    assert len(by_tool["confirm_delete"]["request_ids"]) == (2 if modern else 1), by_tool
    assert by_tool["run_query"]["result"]["text"] == ["eu-west: select 1"], by_tool
    assert by_tool["delete_repo"]["error"]["code"] == DENIED, by_tool
    assert [c["tool"] for c in calls_by(stack, agent)] == ["echo", "confirm_delete", "run_query"]
    if not modern:
        # The client's answer to elicitation/create: a JSON-RPC response POSTed on the session.
        answers = [p for p in out["posts"] if isinstance(p["request"], dict) and "result" in p["request"]]
        assert len(answers) == 1 and answers[0]["request"]["result"]["action"] == "accept", out["posts"]
        assert answers[0]["status"] == 202, answers


# --------------------------------------------------------------------------- rate limits on tags

PARAM_AGENT = "s71-region"
REGION_TAG = "x-mcp-param-region"  # the tag header param_tags sets from the verified Mcp-Param-Region
REGION_LIMIT = 2  # run_query calls per agent per minute in region eu-west (Envoy local rate limit)
ROUND_AGENT = "s71-round-rl"
ROUND_TAG = "x-mcp-call-round"  # mcp-guard's round tag: "first" or "continuation" (h-mrtr)


def with_local_limit(actions: list[tuple[str, str]] | None, entries: list[dict], max_tokens: int) -> Any:
    """A bootstrap hook: Envoy's local_ratelimit (after mcp-guard) gains one descriptor built
    from these (header, descriptor key) actions on mcp-guard's tags (None: the shipped
    `rate_limits` only), limited to max_tokens a minute for the given entries; everything else
    only as shipped."""

    def hook(bootstrap: dict) -> dict:
        bootstrap = copy.deepcopy(bootstrap)
        (listener,) = bootstrap["static_resources"]["listeners"]
        (chain,) = listener["filter_chains"]
        (hcm,) = chain["filters"]
        filters = hcm["typed_config"]["http_filters"]
        (limiter,) = [f for f in filters if f["name"] == "envoy.filters.http.local_ratelimit"]
        config = limiter["typed_config"]
        if actions is not None:
            config["rate_limits"].append({"actions": [
                {"request_headers": {"header_name": header, "descriptor_key": key}} for header, key in actions
            ]})  # fmt: skip
        config["descriptors"].append({
            "entries": entries,
            "token_bucket": {"max_tokens": max_tokens, "tokens_per_fill": max_tokens, "fill_interval": "60s"},
        })  # fmt: skip
        return bootstrap

    return hook


def limited_stack(tmp_path_factory: pytest.TempPathFactory, policy: dict, hook: Any):
    """The demo server (--modern-tools) behind mcp-guard with this policy and bootstrap hook."""
    yield from start_stack(tmp_path_factory, policy, server_args=SERVER_ARGS, bootstrap_hook=hook)


@pytest.fixture(scope="module")
def round_stack(tmp_path_factory: pytest.TempPathFactory):
    """At most one confirm_delete per agent per minute, counting only rounds not tagged
    "continuation" (the shipped local rate limit's `round` entry)."""
    policy = policy_2026()
    policy["policy"]["agents"][ROUND_AGENT] = {"tools": list(TOOLS)}
    # The shipped envoy/envoy.yaml already builds (agent, tool, round: first) for every
    # tools/call that is not tagged a continuation; one more descriptor limits confirm_delete.
    hook = with_local_limit(
        None,
        [{"key": "agent"}, {"key": "tool", "value": "confirm_delete"}, {"key": "round", "value": "first"}],
        1,
    )
    yield from limited_stack(tmp_path_factory, policy, hook)


async def test_a_multi_round_trip_call_is_counted_once(round_stack):
    """A rate limit of one confirm_delete a minute, on mcp-guard's round tag: the first logical
    call passes both its rounds (the retry that answers the input request mcp-guard saw is
    tagged "continuation", which the descriptor does not count); the second logical call is
    refused (429) at its first round and never reaches the server. (Needs h-mrtr.)"""
    stack = round_stack
    async with modern_client(stack.url, ROUND_AGENT, []) as (client, wire):
        result = await client.call_tool("confirm_delete", {"name": "once"})
        assert [c.text for c in result.content] == ["deleted once"], result
        with pytest.raises(MCPError) as excinfo:
            await client.call_tool("confirm_delete", {"name": "twice"})
    assert excinfo.value.code == RATE_LIMITED
    assert [p["status"] for p in posts_of(wire, "tools/call", "confirm_delete")] == [200, 200, 429]
    rounds = calls_by(stack, ROUND_AGENT, "round")
    assert [(r["arguments"]["name"], r["answered"]) for r in rounds] == [("once", False), ("once", True)], rounds
    assert [r["headers"][ROUND_TAG] for r in rounds] == [["first"], ["continuation"]], rounds
    (rec,) = audit_for(stack, agent_id=ROUND_AGENT, tool_name="confirm_delete", output_status="rate_limited")
    assert rec["http_status"] == 429, rec


@pytest.fixture(scope="module")
def param_stack(tmp_path_factory: pytest.TempPathFactory):
    """`param_tags` for run_query's Region (needs h-params), and at most REGION_LIMIT run_query
    calls per agent per minute in eu-west, on the tag."""
    policy = policy_2026()
    for agent in (PARAM_AGENT, PARAM_AGENT + "-relist"):
        policy["policy"]["agents"][agent] = {"tools": list(TOOLS)}
    policy["param_tags"] = {"run_query": {"Region": REGION_TAG}}
    hook = with_local_limit(
        [("x-agent-id", "agent"), ("x-mcp-tool-name", "tool"), (REGION_TAG, "region")],
        [{"key": "agent"}, {"key": "tool", "value": "run_query"}, {"key": "region", "value": "eu-west"}],
        REGION_LIMIT,
    )
    yield from limited_stack(tmp_path_factory, policy, hook)


async def test_a_call_without_its_param_header_is_refused_by_mcp_guard(param_stack):
    """With param_tags for run_query, mcp-guard never forwards a run_query whose Region it
    cannot verify: the SDK's first, header-less call (it had not listed the tool) is refused
    by mcp-guard itself (400, -32020: it never reaches the server), and the SDK's re-list and
    resend passes, tagged. (Needs h-params.)"""
    stack = param_stack
    agent = PARAM_AGENT + "-relist"
    async with modern_client(stack.url, agent) as (client, wire):
        result = await client.call_tool("run_query", {"region": "us-east", "sql": "select 3"})
    assert [c.text for c in result.content] == ["us-east: select 3"]
    refused, resent = posts_of(wire, "tools/call", "run_query")
    assert refused["status"] == 400 and refused["response"]["error"]["code"] == HEADER_MISMATCH, refused
    assert resent["status"] == 200, resent
    arrived = [e for e in stack.calls("http") if e["headers"].get("x-agent-id") == [agent]
               and e["headers"].get("mcp-method") == ["tools/call"]]  # fmt: skip
    assert len(arrived) == 1, arrived  # only the resent call reached the server
    (call,) = calls_by(stack, agent)
    assert call["headers"][REGION_TAG] == ["us-east"], call
    (rec,) = audit_for(stack, agent_id=agent, tool_name="run_query", http_status=400)
    assert rec["error_code"] == HEADER_MISMATCH, rec


async def test_verified_param_is_a_rate_limit_descriptor(param_stack):
    """The SDK mirrors `region` into Mcp-Param-Region; mcp-guard verifies it against the body
    and sets it as the tag header x-mcp-param-region (client copies removed), which Envoy's
    local rate limit uses as a descriptor entry: the 3rd eu-west run_query of the agent in a
    minute is 429, while us-east calls go on. The audit record carries the region hashed,
    never raw. (Needs h-params.)"""
    stack = param_stack
    async with modern_client(stack.url, PARAM_AGENT) as (client, wire):
        await client.list_tools()  # the SDK needs the listing to send Mcp-Param-*; so does mcp-guard
        for i in range(REGION_LIMIT):
            result = await client.call_tool("run_query", {"region": "eu-west", "sql": f"select {i}"})
            assert result.is_error is False, (i, result)
        with pytest.raises(MCPError) as excinfo:
            await client.call_tool("run_query", {"region": "eu-west", "sql": "select 'over'"})
        for i in range(REGION_LIMIT + 1):
            result = await client.call_tool("run_query", {"region": "us-east", "sql": f"select {i}"})
            assert result.is_error is False, (i, result)
        # A value that is not plain ASCII travels in the header's Base64 form (=?base64?...?=),
        # which mcp-guard decodes and verifies like any other.
        result = await client.call_tool("run_query", {"region": "z\u00fcrich", "sql": "select 4"})
        assert [c.text for c in result.content] == ["z\u00fcrich: select 4"], result
    assert excinfo.value.code == RATE_LIMITED
    (zurich,) = [p for p in posts_of(wire, "tools/call", "run_query") if p["request"]["params"]["arguments"]["region"]
                 == "z\u00fcrich"]  # fmt: skip
    assert zurich["headers"]["mcp-param-region"].startswith("=?base64?"), zurich
    last_eu = [p for p in posts_of(wire, "tools/call", "run_query") if p["headers"]["mcp-param-region"] == "eu-west"]
    assert [p["status"] for p in last_eu] == [200] * REGION_LIMIT + [429], last_eu

    calls = calls_by(stack, PARAM_AGENT)
    assert [c["arguments"]["region"] for c in calls] == (
        ["eu-west"] * REGION_LIMIT + ["us-east"] * (REGION_LIMIT + 1) + ["z\u00fcrich"])  # fmt: skip
    for c in calls[:-1]:
        assert c["headers"][REGION_TAG] == [c["arguments"]["region"]], c
    assert calls[-1]["headers"].get(REGION_TAG), calls[-1]  # tagged (its encoding is the filter's)
    limited = audit_for(stack, agent_id=PARAM_AGENT, tool_name="run_query", output_status="rate_limited")
    assert limited[0]["http_status"] == 429, limited
    for rec in audit_for(stack, 2 * REGION_LIMIT + 3, agent_id=PARAM_AGENT, tool_name="run_query"):
        text = json.dumps(rec, ensure_ascii=False)
        assert "eu-west" not in text and "us-east" not in text and "z\u00fcrich" not in text, rec
        assert rec["params"]["Region"].startswith("sha256:"), rec


# --------------------------------------------------------------------------- dry-run, annotations

GUARD_AGENT = "s71-annotations"  # every tool by a glob: the annotations rule applies
DRY_AGENT = "s71-dry-run"  # echo only, in dry-run mode


@pytest.fixture(scope="module")
def guarded_stack(tmp_path_factory: pytest.TempPathFactory):
    """The annotations rule (destructive tools no rule names exactly are refused) and a
    dry-run rule set, for clients without a session."""
    policy = policy_2026()
    policy["annotations"] = {"refuse": "destructive", "unseen": "refuse"}
    policy["policy"]["agents"][GUARD_AGENT] = {"tools": ["*"]}
    policy["policy"]["agents"][DRY_AGENT] = {"tools": ["echo"], "mode": "dry_run"}
    yield from limited_stack(tmp_path_factory, policy, None)


async def test_annotations_learned_without_a_session_refuse_a_destructive_tool(guarded_stack):
    """2026-07-28 has no session: the annotations the server's tools/list gave are kept per
    server id, so a stateless client's later call of the destructive confirm_delete is refused
    (-32003) while the read-only echo passes; the refusal never reaches the server."""
    stack = guarded_stack
    async with modern_client(stack.url, GUARD_AGENT, []) as (client, wire):
        listed = await client.list_tools()
        assert "confirm_delete" in {t.name for t in listed.tools}  # allowed by name (glob)
        with pytest.raises(MCPError) as excinfo:
            await client.call_tool("confirm_delete", {"name": "prod"})
        echoed = await client.call_tool("echo", {"text": "read-only"})
    assert excinfo.value.code == DENIED
    assert [c.text for c in echoed.content] == ["read-only"]
    assert [c["tool"] for c in calls_by(stack, GUARD_AGENT)] == ["echo"]
    assert calls_by(stack, GUARD_AGENT, "round") == [], "confirm_delete never ran"
    (rec,) = audit_for(stack, agent_id=GUARD_AGENT, tool_name="confirm_delete")
    assert (rec["decision"], rec["output_status"], rec["session_id"]) == ("deny", "denied", None), rec
    assert rec["protocol_version"] == MODERN, rec
    assert all("mcp-session-id" not in p["headers"] for p in wire.posts)


async def test_dry_run_forwards_a_stateless_call_and_records_the_would_be_denial(guarded_stack):
    """A dry-run rule set with a 2026-07-28 client: `add` (not in its list) runs and answers,
    and its record says dry_run_deny with the outcome."""
    stack = guarded_stack
    async with modern_client(stack.url, DRY_AGENT) as (client, _wire):
        added = await client.call_tool("add", {"a": 20, "b": 22})
    assert [c.text for c in added.content] == ["42"]
    assert [c["tool"] for c in calls_by(stack, DRY_AGENT)] == ["add"]
    (rec,) = audit_for(stack, agent_id=DRY_AGENT, tool_name="add")
    assert (rec["decision"], rec["output_status"], rec["protocol_version"]) == ("dry_run_deny", "success", MODERN)
