"""VM failure with the shipped FAIL_CLOSED policy: a test-only build of the filter
(`make wasm-fault`, feature fault-injection) traps its Wasm VM when a request carries
`x-mcp-guard-fault: trap`. After that, requests on the trapped worker must be refused (5xx)
and never reach the upstream, rather than pass unexamined.

Envoy runs two workers here (as in every test stack), one VM each, and the kernel spreads
new connections over them (SO_REUSEPORT). So the test traps on fresh connections until
PROBES consecutive fresh-connection probes are all refused (a healthy worker would answer one
of them with probability 1 - 2**-PROBES), bounded by MAX_ROUNDS, and then shows that
neither an allowed nor a denied call gets through.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import httpx2
import pytest
from conftest import REPO, shipped_policy, start_stack
from helpers import ACCEPT, RawResponse, RawSession, access_log_objects, parse_messages, tools_call_body

pytestmark = pytest.mark.anyio

FAULT_WASM = Path(
    os.environ.get("MCP_GUARD_WASM_FAULT", REPO / "target" / "fault" / "wasm32-wasip1" / "release" / "mcp_guard.wasm")
).resolve()
PROBES = 12
MAX_ROUNDS = 40


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not FAULT_WASM.is_file():
        pytest.fail(f"{FAULT_WASM} is missing: build it with `make wasm-fault`", pytrace=False)
    # Envoy answers the trapped VM's requests itself (503 wasm_fail_stream): those lines are the
    # record of a request mcp-guard never saw, as many as the test happened to send; the
    # teardown check validates each against the schema and takes any number of them.
    yield from start_stack(tmp_path_factory, shipped_policy(), wasm=FAULT_WASM, refused_records=None)


async def fresh_post(stack, body: bytes, headers: dict[str, str]) -> RawResponse | Exception:
    """One POST on a new TCP connection (so the kernel picks a worker afresh)."""
    hdrs = {"content-type": "application/json", "accept": ACCEPT, "connection": "close"} | headers
    try:
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(10.0)) as http:
            resp = await http.post(stack.url, content=body, headers=hdrs)
            data = await resp.aread()
    except httpx2.HTTPError as exc:
        return exc
    h = {k.lower(): v for k, v in resp.headers.items()}
    return RawResponse(resp.status_code, h, data, parse_messages(h.get("content-type", ""), data))


def refused(resp: RawResponse | Exception) -> bool:
    """A 5xx, or a connection Envoy closed without an answer: either way not a forward."""
    return isinstance(resp, Exception) or resp.status >= 500


def calls_with_marker(stack, marker: str) -> list[dict]:
    return [c for c in stack.calls() if marker in json.dumps(c["arguments"])]


async def test_trapped_vm_refuses_every_request_and_forwards_nothing(stack):
    (resource,) = json.loads(stack.ecds_path.read_text(encoding="utf-8"))["resources"]
    assert resource["typed_config"]["config"]["failure_policy"] == "FAIL_CLOSED"

    # Baseline: without the header the fault build is the normal filter.
    s = RawSession(stack.url, agent="demo-agent")
    await s.initialize()
    sess = {"x-agent-id": "demo-agent", "mcp-session-id": s.session_id or "", "mcp-protocol-version": "2025-06-18"}
    ok = await fresh_post(stack, tools_call_body("base", "echo", '{"text":"baseline"}'), sess)
    assert isinstance(ok, RawResponse) and ok.status == 200, ok
    assert len(calls_with_marker(stack, "baseline")) == 1

    # Trap, on fresh connections, until PROBES consecutive probes are refused.
    statuses: list[str] = []
    consecutive = 0
    for round_ in range(MAX_ROUNDS):
        trap = await fresh_post(stack, tools_call_body(f"trap-{round_}", "echo", f'{{"text":"trap-{round_}"}}'),
                                sess | {"x-mcp-guard-fault": "trap"})  # fmt: skip
        statuses.append(f"trap:{trap if isinstance(trap, Exception) else trap.status}")
        assert refused(trap), f"the trapping request was answered {trap.status}: {trap.body[:200]!r}"
        probe = await fresh_post(stack, tools_call_body(f"probe-{round_}", "echo", f'{{"text":"probe-{round_}"}}'), sess)
        statuses.append(f"probe:{probe if isinstance(probe, Exception) else probe.status}")
        consecutive = consecutive + 1 if refused(probe) else 0
        if consecutive >= PROBES:
            break
    else:
        pytest.fail(f"no {PROBES} consecutive refusals after {MAX_ROUNDS} traps: {statuses}")
    print(f"fail-closed: trap/probe statuses: {statuses}")

    # No trapping request ever reached the server (the VM failed before it was examined).
    assert calls_with_marker(stack, "trap-") == []

    # Both workers failed: allowed and denied calls are refused and absent, and Envoy's
    # per-worker connection counters show that each worker took several of them.
    start = worker_connections(stack)
    for i in range(MAX_ROUNDS):
        for tool, args in (("echo", f'{{"text":"after-{i}"}}'), ("delete_repo", f'{{"name":"after-{i}"}}')):
            resp = await fresh_post(stack, tools_call_body(f"after-{tool}-{i}", tool, args), sess)
            assert refused(resp), f"{tool} after the traps: {resp.status} {resp.body[:200]!r}"
            if isinstance(resp, RawResponse):
                assert 500 <= resp.status <= 599
        now = worker_connections(stack)
        if len(now) >= 2 and all(now[w] - start.get(w, 0) >= 3 for w in now):
            break
    else:
        pytest.fail(f"the refused calls did not reach both workers: {start} -> {worker_connections(stack)}")
    print(f"fail-closed: connections per worker in the final phase: "
          f"{ {w: n - start.get(w, 0) for w, n in worker_connections(stack).items()} }")
    assert calls_with_marker(stack, "after-") == []
    assert [c for c in stack.calls() if c["tool"] == "delete_repo"] == []
    # What a refused client sees, and what the access log holds for requests the dead VM
    # never examined (reported, not asserted: Envoy's behaviour, not the filter's).
    sample = await fresh_post(stack, tools_call_body("sample", "echo", '{"text":"after-sample"}'), sess)
    await anyio.sleep(0.5)
    records = access_log_objects(stack)  # every line is still one JSON object
    envoy_refused = [r for r in records if r["decision"] == "refused"]
    print(f"fail-closed: sample refusal {getattr(sample, 'status', sample)} {getattr(sample, 'body', b'')[:120]!r}; "
          f"access log: {len(records)} records, {len(envoy_refused)} of requests mcp-guard never saw (decision refused): "
          f"{sorted({(r['http_status'], r['response_code_details']) for r in envoy_refused})}")


def worker_connections(stack) -> dict[str, int]:
    """Envoy's per-worker count of downstream connections on the MCP listener."""
    out = {}
    for line in stack.admin_get("/stats?filter=" + r"^listener\..*\.worker_[0-9]+\.downstream_cx_total$").splitlines():
        name, _, value = line.partition(": ")
        out[name.split(".")[-2]] = int(value)
    return out
