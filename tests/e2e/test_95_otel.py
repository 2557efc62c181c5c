"""Audit records as OpenTelemetry log records: envoy/envoy-otel.yaml's OpenTelemetry access
logger (Envoy's own `envoy.access_loggers.open_telemetry`) sends each record over OTLP/gRPC to a
test receiver built on the official `opentelemetry-proto` package and grpcio
(tests/e2e/otlp_receiver.py), while the JSON file log stays. Real traffic: the official MCP SDK
client and the demo server (official SDK) through Envoy + mcp-guard.

Each OTLP log record's body parses to exactly the record(s) of the file log line(s) of its
request, and its attributes (OpenTelemetry semantic conventions for MCP and GenAI, and
mcp_guard.*) carry the same values as the first of those records."""
from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from typing import Any

import pytest
from conftest import start_stack
from helpers import DENIED, RawSession, audit_for, mcp_session, tools_call_body
from mcp.shared.exceptions import MCPError
from otlp_receiver import OtlpLogReceiver, SeenLog
from stack import OTEL_BOOTSTRAP

pytestmark = pytest.mark.anyio

WAIT = 15.0  # the logger flushes every second (buffer_flush_interval)

# The call's attributes (filter state `wasm.mcp.*`) and the record field each repeats.
FROM_RECORD = {
    "mcp.method.name": "method",
    "gen_ai.tool.name": "tool_name",
    "gen_ai.prompt.name": "prompt_name",
    "mcp.resource.uri": "resource_uri",
    "jsonrpc.request.id": "request_id",
    "mcp.session.id": "session_id",
    "mcp.protocol.version": "protocol_version",
    "rpc.response.status_code": "error_code",
    "mcp_guard.agent_id": "agent_id",
    "mcp_guard.server_id": "server_id",
    "mcp_guard.server.name": "server_name",
    "mcp_guard.server.version": "server_version",
    "mcp_guard.decision": "decision",
    "mcp_guard.output_status": "output_status",
}
SHIPPED_ATTRIBUTES = [
    "mcp.method.name", "gen_ai.operation.name", "gen_ai.tool.name", "gen_ai.prompt.name",
    "mcp.resource.uri", "jsonrpc.request.id", "mcp.session.id", "mcp.protocol.version",
    "rpc.response.status_code", "error.type", "mcp_guard.agent_id", "mcp_guard.server_id",
    "mcp_guard.server.name", "mcp_guard.server.version",
    "mcp_guard.decision", "mcp_guard.output_status", "http.response.status_code",
    "client.address", "client.port",
]  # fmt: skip


def as_attribute(value: Any) -> str:
    """A record value as the attribute spells it: text, numbers in decimal, absent as "-"."""
    return "-" if value is None else str(value)


def expected_attributes(record: dict) -> dict[str, str]:
    """The attributes a log record whose body starts with `record` must carry."""
    out = {attr: as_attribute(record[field]) for attr, field in FROM_RECORD.items()}
    out["gen_ai.operation.name"] = "execute_tool" if record["method"] == "tools/call" else "-"
    if record["error_code"] is not None:
        error_type = str(record["error_code"])
    elif record["output_status"] not in ("success", "deferred", "input_required"):
        error_type = record["output_status"]
    else:
        error_type = "-"
    out["error.type"] = error_type
    out["http.response.status_code"] = as_attribute(record["http_status"])
    return out


def body_records(log: SeenLog) -> list[dict]:
    assert isinstance(log.body, str), f"the body is not a string: {log.body!r}"
    return [json.loads(line) for line in log.body.split("\n")]


def log_of(receiver: OtlpLogReceiver, records: list[dict]) -> SeenLog:
    """The one OTLP log record whose body is exactly `records` (waiting for it)."""
    log = receiver.wait_for(lambda log: isinstance(log.body, str) and body_records(log) == records,
                            WAIT, f"the log record of {records}")  # fmt: skip
    same = [x for x in receiver.logs if isinstance(x.body, str) and body_records(x) == records]
    assert len(same) == 1, f"{len(same)} log records carry {records}"
    return log


def assert_log_has(log: SeenLog, record: dict) -> None:
    """The log record carries the audit record's fields: as attributes, and in its time."""
    assert list(log.attribute_keys) == SHIPPED_ATTRIBUTES, log.attribute_keys
    got = {k: log.attributes[k] for k in expected_attributes(record)}
    assert got == expected_attributes(record)
    assert log.attributes["client.address"] == "127.0.0.1"
    assert log.attributes["client.port"].isdigit()
    assert log.resource["service.name"] == "mcp-guard"
    assert log.resource["log_name"] == "mcp_guard.audit"
    # Envoy stamps the request's start; the record's timestamp is mcp-guard's view of it (ms).
    ts = datetime.strptime(record["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs(log.time_unix_nano / 1e9 - ts.timestamp()) < 1.0, (log.time_unix_nano, record["timestamp"])


@pytest.fixture(scope="module")
def receiver():
    r = OtlpLogReceiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, base_policy: dict, receiver: OtlpLogReceiver):
    """envoy/envoy-otel.yaml with its collector at the test receiver; the test policy with
    `audit_attributes: true`."""
    policy = copy.deepcopy(base_policy)
    policy["audit_attributes"] = True
    yield from start_stack(tmp_path_factory, policy, bootstrap=OTEL_BOOTSTRAP, otel_port=receiver.port)


async def test_allowed_and_denied_calls_arrive_as_otlp_log_records(stack, receiver):
    async with mcp_session(stack.url, agent="demo-agent") as conn:
        result = await conn.session.call_tool("echo", {"text": "to the collector"})
        with pytest.raises(MCPError) as excinfo:
            await conn.session.call_tool("delete_repo", {"name": "prod"})
        sid = conn.session_id
    assert result.is_error is False
    assert excinfo.value.code == DENIED

    (allowed,) = audit_for(stack, session_id=sid, method="tools/call", tool_name="echo")
    (denied,) = audit_for(stack, session_id=sid, method="tools/call", tool_name="delete_repo")
    assert (allowed["decision"], allowed["output_status"]) == ("allow", "success")
    assert (denied["decision"], denied["output_status"], denied["error_code"]) == ("deny", "denied", DENIED)

    for record in (allowed, denied):
        assert_log_has(log_of(receiver, [record]), record)
    log = log_of(receiver, [denied])
    assert log.attributes["error.type"] == str(DENIED)
    assert log.attributes["gen_ai.tool.name"] == "delete_repo"
    assert log.attributes["gen_ai.operation.name"] == "execute_tool"
    # Raw arguments never leave: not in the record, so not in the log record either.
    assert "prod" not in log.body and "prod" not in json.dumps(log.attributes)

    # Every other request of the session too (initialize, whose record has the session id the
    # response assigned, notifications/initialized, the DELETE, the SDK's GET stream): one log
    # record each, same body, same attributes.
    session = [r for r in stack.audit_records() if r.get("session_id") == sid]
    assert {"initialize", "notifications/initialized"} <= {r["method"] for r in session}
    for record in session:
        assert_log_has(log_of(receiver, [record]), record)


async def test_a_batch_is_one_log_record_whose_body_has_every_record(stack, receiver):
    """A JSON-RPC batch (MCP 2025-03-26) is one HTTP request: one log record, its body every
    record of the batch (one JSON object per line, as in the file), its attributes the first
    call's."""
    s = RawSession(stack.url, agent="batch-agent")
    await s.initialize(request_id="otel-init")
    batch = b"[" + tools_call_body("otel-b1", "echo", '{"text":"one"}') + b"," + \
        tools_call_body("otel-b2", "add", '{"a":1,"b":2}') + b"]"  # fmt: skip
    r = await s.post(batch)
    # Two calls of two tools: refused whole (docs/protocol.md "Batches"), one record each.
    assert r.status == 400, r.body
    (first,) = audit_for(stack, request_id="otel-b1")
    (second,) = audit_for(stack, request_id="otel-b2")
    assert (first["tool_name"], second["tool_name"]) == ("echo", "add")
    log = log_of(receiver, [first, second])
    assert_log_has(log, first)
    assert log.attributes["jsonrpc.request.id"] == "otel-b1"
    assert log.attributes["mcp_guard.decision"] == first["decision"]
