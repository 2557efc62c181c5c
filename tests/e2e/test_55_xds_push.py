"""Policy pushes over a real gRPC xDS stream (ECDS) to a real Envoy.

The control plane (tests/e2e/xds_server.py) is test-only, built on grpcio and the gRPC
project's generated Envoy xDS protos (PyPI xds-protos). Envoy runs the shipped bootstrap with
one change (scripts/stack.py ecds_over_grpc): the mcp-guard filter's config_discovery uses an
api_config_source (GRPC, V3) to a static HTTP/2 cluster pointing at that control plane on a
free loopback port, instead of the ECDS file. The resource served is the one
scripts/render_ecds.py renders for the file, parsed into the proto messages.

What is shown: the initial policy comes from the control plane and enforces; a pushed policy is
ACKed by Envoy on the stream and then enforces; a rejected policy (the filter's on_configure
refuses an unknown field) is NACKed on the stream, counted as update_rejected, and the previous
policy keeps enforcing. Each test leaves the base policy in force.
"""
from __future__ import annotations

import copy
import itertools
import json

import pytest
import render_ecds
from conftest import WASM
from helpers import (
    DENIED,
    RawSession,
    audit_for,
    config_change,
    config_text,
    mcp_session,
    tools_call_body,
    validate_at_teardown,
)
from mcp.shared.exceptions import MCPError
from stack import ECDS_STAT_PREFIX, XDS_CLUSTER, Stack, free_port
from xds_server import TYPED_EXTENSION_CONFIG, EcdsControlPlane, SentResponse, SeenRequest, extension_config_from_json

pytestmark = pytest.mark.anyio

RESOURCE_NAME = "mcp-guard"  # the ECDS resource = the filter's name in the bootstrap
NODE_ID = "mcp-guard-demo"  # node.id of envoy/envoy.yaml
XDS_TIMEOUT = 10.0  # seconds for Envoy to answer a push on the stream

_versions = itertools.count(1)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def control_plane():
    cp = EcdsControlPlane("127.0.0.1")
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, base_policy, control_plane):
    """A stack of its own (overrides the session's): the same bootstrap, but the mcp-guard
    config comes over gRPC from `control_plane`, which serves the base policy as version 1
    before Envoy starts (Stack.start waits until Envoy has accepted it)."""
    if not WASM.is_file():
        pytest.fail(f"{WASM} is missing: build it with `make wasm`", pytrace=False)
    assert push(control_plane, base_policy) == "v1"
    workdir = tmp_path_factory.mktemp("xds-stack")
    (workdir / "policy.json").write_text(json.dumps(base_policy, indent=2), encoding="utf-8")
    s = Stack(
        workdir=workdir,
        listen_port=free_port(),
        admin_port=free_port(),
        upstream_port=free_port(),
        policy=workdir / "policy.json",  # not read: the control plane serves the policy
        wasm=WASM,
        concurrency=2,
        component_log_level="wasm:debug",
        xds_port=control_plane.port,
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()
    validate_at_teardown(s)


# --------------------------------------------------------------------------- helpers


def push(cp: EcdsControlPlane, policy: dict | str) -> str:
    """Serve `policy` (the plugin configuration; a dict as helpers.config_text) as the next
    version; return the version. Tests wrap it in helpers.config_change."""
    text = policy if isinstance(policy, str) else config_text(policy)
    (resource,) = render_ecds.ecds_resource(text, WASM)["resources"]
    version = f"v{next(_versions)}"
    cp.push(version, extension_config_from_json(resource))
    return version


def answer_to(cp: EcdsControlPlane, version: str) -> tuple[SentResponse, SeenRequest]:
    """The response that carried `version` and Envoy's answer to it (the request echoing its nonce)."""
    sent = cp.wait_for_response(version, XDS_TIMEOUT)
    answer = cp.wait_for_request(lambda r: r.response_nonce == sent.nonce, XDS_TIMEOUT,
                                 f"Envoy's ACK/NACK of {version} (nonce {sent.nonce})")  # fmt: skip
    return sent, answer


def assert_ack(cp: EcdsControlPlane, version: str) -> SeenRequest:
    sent, ack = answer_to(cp, version)
    assert not ack.is_nack, f"Envoy NACKed {version}: {ack.error_code} {ack.error_message}"
    assert ack.version_info == version, ack
    assert (ack.type_url, ack.resource_names, ack.node_id) == (TYPED_EXTENSION_CONFIG, (RESOURCE_NAME,), NODE_ID), ack
    assert ack.stream == sent.stream, (sent, ack)
    return ack


def stat_text(s: Stack, name: str) -> str:
    """A text stat of the mcp-guard ECDS subscription (e.g. version_text), unquoted."""
    full = ECDS_STAT_PREFIX + name
    text = s.admin_get("/stats?filter=^" + full.replace(".", r"\.") + "$")
    key, _, value = text.partition(": ")
    assert key == full, text
    return value.strip().strip('"')


def widened(base_policy: dict) -> dict:
    policy = copy.deepcopy(base_policy)
    policy["policy"]["agents"]["demo-agent"]["tools"].append("delete_repo")
    return policy


async def delete_repo_outcome(s: Stack, agent: str, name: str) -> str:
    """'allowed' or 'denied' for one delete_repo call in a fresh official-SDK session."""
    async with mcp_session(s.url, agent=agent) as conn:
        try:
            result = await conn.session.call_tool("delete_repo", {"name": name})
        except MCPError as exc:
            assert exc.code == DENIED, exc
            return "denied"
    assert [c.text for c in result.content] == [f"deleted {name}"]
    return "allowed"


def upstream_calls(s: Stack, name: str) -> list[dict]:
    """delete_repo calls with this name that reached the demo server."""
    return [c for c in s.calls() if c["tool"] == "delete_repo" and c["arguments"] == {"name": name}]


async def restore(cp: EcdsControlPlane, s: Stack, base_policy: dict) -> None:
    with config_change(s):
        assert_ack(cp, push(cp, base_policy))
    assert await delete_repo_outcome(s, "demo-agent", "probe-restore") == "denied"


# --------------------------------------------------------------------------- tests


async def test_initial_policy_comes_over_the_grpc_stream_and_enforces(stack, control_plane):
    # Envoy subscribed on the ECDS stream and ACKed the first response (v1, served before it started).
    first = control_plane.requests[0]
    assert (first.type_url, first.resource_names, first.node_id) == (TYPED_EXTENSION_CONFIG, (RESOURCE_NAME,), NODE_ID)
    assert (first.version_info, first.response_nonce, first.is_nack) == ("", "", False), first
    assert control_plane.responses[0].version_info == "v1"
    assert_ack(control_plane, "v1")
    stats = stack.ecds_stats()
    assert stats["control_plane.connected_state"] == 1, stats  # a live gRPC stream, not a file
    assert stats["update_success"] >= 1, stats
    upstream = stack.admin_get(rf"/stats?filter=^cluster\.{XDS_CLUSTER}\.upstream_rq_active$")
    assert upstream == f"cluster.{XDS_CLUSTER}.upstream_rq_active: 1", upstream  # the one ECDS stream

    # demo-agent may not call delete_repo: JSON-RPC -32003 with HTTP 200, never forwarded.
    raw = RawSession(stack.url, agent="demo-agent")
    await raw.initialize()
    resp = await raw.post(tools_call_body(7, "delete_repo", '{"name":"initial"}'))
    msg = resp.jsonrpc_error(200, 7, DENIED)
    assert "delete_repo" in msg["error"]["message"]
    # echo is allowed and reaches the server (official SDK client).
    async with mcp_session(stack.url, agent="demo-agent") as conn:
        ok = await conn.session.call_tool("echo", {"text": "over xds"})
    assert ok.is_error is False and [c.text for c in ok.content] == ["over xds"]
    assert upstream_calls(stack, "initial") == []
    assert [c for c in stack.calls() if c["tool"] == "echo" and c["arguments"] == {"text": "over xds"}]
    audit_for(stack, agent_id="demo-agent", tool_name="delete_repo", request_id=7, decision="deny")


async def test_pushed_policy_is_acked_and_enforces(stack, control_plane, base_policy):
    envoy_pid = stack.envoy.pid
    before = stack.ecds_stats()
    try:
        with config_change(stack):  # ... and every worker loaded it
            version = push(control_plane, widened(base_policy))
            ack = assert_ack(control_plane, version)
        assert ack.stream == 1  # the same stream as the initial config: pushed, not re-fetched
        stats = stack.ecds_stats()
        assert stats["update_success"] == before["update_success"] + 1, (before, stats)
        assert stats["update_rejected"] == before["update_rejected"], (before, stats)
        assert stat_text(stack, "version_text") == version
        assert await delete_repo_outcome(stack, "demo-agent", "pushed") == "allowed"
        (call,) = upstream_calls(stack, "pushed")  # it reached the demo server, tagged
        assert call["headers"]["x-agent-id"] == ["demo-agent"]
        assert call["headers"]["x-mcp-tool-name"] == ["delete_repo"]
        (rec,) = audit_for(stack, agent_id="demo-agent", tool_name="delete_repo", decision="allow")
        assert rec["output_status"] == "success"
        assert stack.envoy.pid == envoy_pid and stack.envoy.poll() is None  # no restart
    finally:
        await restore(control_plane, stack, base_policy)


async def test_rejected_push_is_nacked_and_previous_policy_keeps_enforcing(stack, control_plane, base_policy):
    # The previous policy: demo-agent may call delete_repo, other agents (default) may not.
    try:
        with config_change(stack):
            previous = push(control_plane, widened(base_policy))
            assert_ack(control_plane, previous)
        assert await delete_repo_outcome(stack, "demo-agent", "before-bad-push") == "allowed"

        # The bad one flips both (demo-agent denied, default allowed) if it were applied, and
        # carries a field the filter does not know, so its on_configure refuses it.
        bad = copy.deepcopy(base_policy)
        bad["policy"]["agents"]["default"]["tools"].append("delete_repo")
        bad["bogus_top_level_field"] = True
        before = stack.ecds_stats()
        log_offset = stack.envoy_log.stat().st_size
        with config_change(stack, accepted=False):  # refused by on_configure, loaded by no worker
            rejected = push(control_plane, bad)
            sent, nack = answer_to(control_plane, rejected)
        assert nack.is_nack, f"Envoy accepted the invalid config {rejected}: {nack}"
        assert nack.version_info == previous, nack  # the version Envoy still runs
        assert nack.error_code != 0 and nack.error_message, nack  # google.rpc.Status
        assert "mcp-guard" in nack.error_message, nack
        assert not [r for r in control_plane.requests if r.version_info == rejected], "Envoy ACKed it later"

        stats = stack.ecds_stats()
        assert stats["update_rejected"] == before["update_rejected"] + 1, (before, stats)
        assert stats["update_success"] == before["update_success"], (before, stats)
        assert stat_text(stack, "version_text") == previous
        new_log = stack.envoy_log.read_bytes()[log_offset:].decode("utf-8", "replace")
        filter_lines = [ln for ln in new_log.splitlines() if "wasm log" in ln and "bogus_top_level_field" in ln]
        assert len(filter_lines) == 1 and "[error]" in filter_lines[0], new_log[-3000:]
        assert f"gRPC config for {TYPED_EXTENSION_CONFIG} rejected" in new_log, new_log[-3000:]

        assert await delete_repo_outcome(stack, "demo-agent", "after-bad-push") == "allowed"
        assert await delete_repo_outcome(stack, "other-agent", "after-bad-push-default") == "denied"
        assert len(upstream_calls(stack, "after-bad-push")) == 1
        assert upstream_calls(stack, "after-bad-push-default") == []
    finally:
        # The control plane goes on after a NACK: the next push is ACKed.
        await restore(control_plane, stack, base_policy)
