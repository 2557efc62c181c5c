"""Requests Envoy refuses before mcp-guard runs still leave one JSON object in the audit log.

Envoy's codecs and connection manager refuse some requests before any HTTP filter runs:
Content-Length together with Transfer-Encoding, a lower-case method, HTTP/1.0, a NUL or VT
byte in a header value, an upper-case header name over HTTP/2 (no response). mcp-guard never
sees them, so filter state `wasm.mcp_audit` is absent, and the old one-logger config printed
`-` for them: a line `jq` (and the audit queries of docs/audit-record.md, and a SIEM parser) stops at. The
shipped bootstrap (envoy/envoy.yaml, via scripts/stack.py) now has a second file logger on the
same path, chosen by a CEL filter on that filter state, which prints a fixed JSON record:
decision "refused", reason "proxy_rejected", Envoy's status and response code details, and
null for everything only mcp-guard could know. Nothing the client sent is printed there.

No HTTP library sends these requests, so raw sockets (HTTP/1.1) and `h2` (h2c with prior
knowledge, its own header validation off) send them. This module has its own stack, so the
whole access log holds only what these tests sent, and every line of it is checked.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import pytest
import yaml
from conftest import REPO, start_stack
from helpers import (
    ACCEPT,
    PROTOCOL_VERSION,
    access_log_objects,
    assert_access_log_valid,
    audit_for,
    check_record,
    is_refused,
    mcp_session,
    schema_validator,
)

pytestmark = pytest.mark.anyio

IO_TIMEOUT = 10.0  # every socket exchange is bounded by this
AUDIT_TIMEOUT = 10.0
# Client-controlled bytes every refused request carries (path, agent header, a header value
# that would break a JSON string if it were printed unescaped). None may reach the log.
MARKER = "refusedmarker"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, base_policy):
    """This module's own stack (shipped bootstrap, demo server). Its refused-request records are
    counted by the tests (test_every_line_...); the teardown check takes any number."""
    yield from start_stack(tmp_path_factory, base_policy, refused_records=None)


# What this module sent that Envoy refused, in order: (case, expected response_code_details).
SENT: list[tuple[str, str]] = []


@dataclass(frozen=True)
class Case:
    name: str
    request: bytes
    status: int  # what Envoy answers
    details: str  # Envoy's %RESPONSE_CODE_DETAILS% for it (seen with Envoy 1.40.0)


def _head(method: bytes = b"POST", version: bytes = b"HTTP/1.1", extra: bytes = b"") -> bytes:
    return (
        method + b" /mcp?" + MARKER.encode() + b'="},{"decision":"allow" ' + version + b"\r\n"
        b"host: 127.0.0.1\r\ncontent-type: application/json\r\naccept: " + ACCEPT.encode() + b"\r\n"
        b"x-agent-id: " + MARKER.encode() + b"-agent\r\n" + extra
    )


BODY = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
CL = b"content-length: %d\r\n" % len(BODY)

CASES = [
    Case("content_length_and_transfer_encoding",
         _head(extra=CL + b"transfer-encoding: chunked\r\n") + b"\r\n" + b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n",
         400, "http1.content_length_and_chunked_not_allowed"),
    Case("lower_case_method", _head(method=b"post", extra=CL) + b"\r\n" + BODY, 400, "http1.codec_error"),
    Case("http_1_0", _head(version=b"HTTP/1.0", extra=CL) + b"\r\n" + BODY, 426, "low_version"),
    Case("nul_in_header_value", _head(extra=CL + b"x-note: a\x00" + MARKER.encode() + b"\r\n") + b"\r\n" + BODY,
         400, "http1.invalid_characters"),
    Case("vt_in_header_value", _head(extra=CL + b"x-note: a\x0b" + MARKER.encode() + b"\r\n") + b"\r\n" + BODY,
         400, "http1.invalid_characters"),
]  # fmt: skip


def http1_exchange(port: int, request: bytes) -> int:
    """Send `request` on a fresh connection and read until Envoy closes it (bounded); the
    response's status code."""
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as s:
        s.sendall(request)
        deadline = time.monotonic() + IO_TIMEOUT
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    status_line = data.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 "), data[:200]
    return int(status_line.split(b" ", 2)[1])


def h2_upper_case_header_name(port: int) -> tuple[list[str], str]:
    """One h2c request (prior knowledge) whose header block has an upper-case name, which
    HTTP/2 forbids (RFC 9113 §8.2.1): the h2 events the client saw for it, and how the
    exchange ended ("closed", "reset", or the h2 event that ended it; "timeout" if none did
    within IO_TIMEOUT)."""
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=config)
    seen: list[str] = []
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as s:
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        headers = [
            (b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"127.0.0.1"),
            (b":path", b"/mcp?" + MARKER.encode()), (b"content-type", b"application/json"),
            (b"X-Agent-Id", MARKER.encode() + b"-h2"),
        ]  # fmt: skip
        conn.send_headers(1, headers, end_stream=False)
        conn.send_data(1, BODY, end_stream=True)
        s.sendall(conn.data_to_send())
        deadline = time.monotonic() + IO_TIMEOUT
        ended = "timeout"
        while ended == "timeout" and time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                ended = "reset"
                break
            if not chunk:
                ended = "closed"
                break
            for event in conn.receive_data(chunk):
                seen.append(type(event).__name__)
                if isinstance(event, (h2.events.StreamReset, h2.events.StreamEnded, h2.events.ConnectionTerminated)):
                    ended = type(event).__name__
            try:
                s.sendall(conn.data_to_send())
            except OSError:
                ended = "reset"
    return seen, ended


def refused_records(stack) -> list[dict]:
    return [r for r in access_log_objects(stack) if is_refused(r)]


def wait_refused(stack, count: int) -> list[dict]:
    """Poll (bounded) until the log holds at least `count` refused records; all of them."""
    deadline = time.monotonic() + AUDIT_TIMEOUT
    while True:
        found = refused_records(stack)
        if len(found) >= count or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def assert_refused_record(record: dict, status: int, details: str) -> None:
    check_record(record)  # schema, and exactly the documented fields with their nulls
    assert (record["decision"], record["reason"], record["output_status"]) == ("refused", "proxy_rejected", "refused")
    assert (record["http_status"], record["response_code_details"]) == (status, details), record
    assert record["response_flags"] == "DPE", record  # downstream protocol error
    assert record["method"] is None and record["agent_id"] is None, record
    assert isinstance(record["latency_ms"], int) and record["latency_ms"] >= 0, record


def assert_no_client_bytes_in_log(stack) -> None:
    text = stack.access_log.read_text(encoding="utf-8")
    assert MARKER not in text, "a refused request's client-sent bytes reached the audit log"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_request_envoy_refuses_gets_one_refused_record(stack, case: Case):
    before = len(refused_records(stack))
    assert http1_exchange(stack.listen_port, case.request) == case.status
    SENT.append((case.name, case.details))
    found = wait_refused(stack, before + 1)
    assert len(found) == before + 1, f"expected one new refused record, found {found[before:]}"
    assert_refused_record(found[before], case.status, case.details)
    assert_no_client_bytes_in_log(stack)


def test_an_http2_request_envoy_drops_gets_a_refused_record_with_status_0(stack):
    before = len(refused_records(stack))
    events, ended = h2_upper_case_header_name(stack.listen_port)
    # No response headers: Envoy 1.40 ends the exchange (seen here: its SETTINGS, then the
    # connection closed) instead of answering.
    assert "ResponseReceived" not in events and ended != "timeout", (events, ended)
    SENT.append(("h2_upper_case_header_name", "http2.invalid.header.field"))
    found = wait_refused(stack, before + 1)
    assert len(found) == before + 1, f"expected one new refused record, found {found[before:]}"
    # No response was sent, so Envoy's %RESPONSE_CODE% is 0 (schema: refused records only).
    assert_refused_record(found[before], 0, "http2.invalid.header.field")
    assert_no_client_bytes_in_log(stack)


ROUNDS = 5
THREADS = 8


def test_refused_and_audited_lines_never_interleave(stack):
    """Both loggers write one file (Envoy opens a path once): under concurrent traffic of both
    kinds, on both workers, every line is still exactly one object."""
    port = stack.listen_port
    errors: list[BaseException] = []
    init = json.dumps({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                   "clientInfo": {"name": "interleave", "version": "1"}},
    }).encode()  # fmt: skip
    good = (
        b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n" % port
        + b"accept: " + ACCEPT.encode() + b"\r\nx-agent-id: interleave-agent\r\nconnection: close\r\n"
        + b"content-length: %d\r\n\r\n" % len(init)
    ) + init
    bad = CASES[1]

    def worker() -> None:
        try:
            for _ in range(ROUNDS):
                assert http1_exchange(port, bad.request) == bad.status
                assert http1_exchange(port, good) == 200
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    before = len(refused_records(stack))
    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a worker thread did not finish in 60 s"
    assert errors == [], errors
    SENT.extend([(bad.name, bad.details)] * (ROUNDS * THREADS))
    audit_for(stack, count=ROUNDS * THREADS, timeout=AUDIT_TIMEOUT, agent_id="interleave-agent", method="initialize")
    found = wait_refused(stack, before + ROUNDS * THREADS)
    assert len(found) == before + ROUNDS * THREADS
    for record in found[before:]:
        assert_refused_record(record, bad.status, bad.details)


async def test_every_line_of_the_access_log_is_a_json_object(stack):
    # A normal call through the official SDK, so mcp-guard's own records are in the log too.
    async with mcp_session(stack.url, agent="refused-module-agent") as conn:
        result = await conn.session.call_tool("echo", {"text": "hello"})
        assert not result.is_error
    audit_for(stack, agent_id="refused-module-agent", tool_name="echo", timeout=AUDIT_TIMEOUT)

    # Every line parses as one JSON object and is a schema-valid record; exactly one refused
    # record per refused request this module sent, each with the details Envoy gave.
    records = access_log_objects(stack)
    assert_access_log_valid(stack, refused=len(SENT))
    got = [r["response_code_details"] for r in records if is_refused(r)]
    assert sorted(got) == sorted(d for _, d in SENT), (got, SENT)
    assert any(not is_refused(r) for r in records)
    assert_no_client_bytes_in_log(stack)


def test_the_schema_accepts_the_refused_record_only_in_its_own_shape():
    """The record without its null fields (what the Istio and Envoy Gateway snippets of
    docs/operator-guide.md print: Envoy Gateway's JSON format cannot print null) is valid; a
    refused record claiming an agent or a method, or an mcp-guard record with `reason`, is not."""
    short = {
        "timestamp": "2026-12-03T09:23:40.855Z", "decision": "refused", "reason": "proxy_rejected",
        "output_status": "refused", "latency_ms": 0, "http_status": 400, "response_flags": "DPE",
        "response_code_details": "http1.codec_error",
    }  # fmt: skip
    validator = schema_validator()
    assert list(validator.iter_errors(short)) == []
    for bad in ({"agent_id": "admin-agent"}, {"method": "tools/call"}, {"output_status": "success"},
                {"reason": "other"}, {"correlated": True}):  # fmt: skip
        assert list(validator.iter_errors({**short, **bad})), bad
    assert list(validator.iter_errors({k: v for k, v in short.items() if k != "reason"}))
    ok = {
        "timestamp": "2026-12-03T09:23:40.855Z", "agent_id": "a", "identity_source": "header",
        "identity_error": None, "server_id": "s", "method": "ping",
        "http_method": "POST", "tool_name": None, "prompt_name": None, "resource_uri": None,
        "request_id": 1, "input_hash": None, "decision": "allow", "output_status": "success",
        "error_code": None, "latency_ms": 1, "http_status": 200, "session_id": None, "trace_id": None,
        "policy_name": None, "policy_version": None, "protocol_version": None,
        "server_name": None, "server_version": None,
    }  # fmt: skip
    assert list(validator.iter_errors(ok)) == []
    for bad in ({"reason": "proxy_rejected"}, {"agent_id": None}, {"http_status": 0},
                {"output_status": "refused"}, {"response_code_details": "x"}):  # fmt: skip
        assert list(validator.iter_errors({**ok, **bad})), bad
    assert list(validator.iter_errors({k: v for k, v in ok.items() if k != "method"}))


# Every Envoy bootstrap the project ships with the mcp-guard audit log.
SHIPPED_BOOTSTRAPS = ["envoy/envoy.yaml", "envoy/envoy-rls.yaml", "envoy/envoy-otel.yaml", "examples/compose/envoy.yaml"]


def http_connection_managers(node):
    if isinstance(node, dict):
        if node.get("name") == "envoy.filters.network.http_connection_manager":
            yield node["typed_config"]
        for value in node.values():
            yield from http_connection_managers(value)
    elif isinstance(node, list):
        for value in node:
            yield from http_connection_managers(value)


@pytest.mark.parametrize("path", SHIPPED_BOOTSTRAPS)
def test_every_shipped_bootstrap_has_both_loggers_on_one_path(path):
    """The e2e stacks run envoy/envoy.yaml (and envoy-rls.yaml, envoy-otel.yaml); the compose
    file is only validated. All carry the same two file loggers as envoy/envoy.yaml, on one
    path each; envoy-otel.yaml has Envoy's OpenTelemetry logger besides (test_95)."""
    (reference,) = http_connection_managers(yaml.safe_load((REPO / "envoy/envoy.yaml").read_text(encoding="utf-8")))
    (hcm,) = http_connection_managers(yaml.safe_load((REPO / path).read_text(encoding="utf-8")))
    loggers = [lg for lg in hcm["access_log"] if lg["name"] == "envoy.access_loggers.file"]
    others = [lg["name"] for lg in hcm["access_log"] if lg["name"] != "envoy.access_loggers.file"]
    assert others == (["envoy.access_loggers.open_telemetry"] if path == "envoy/envoy-otel.yaml" else [])
    assert len({logger["typed_config"]["path"] for logger in loggers}) == 1, loggers

    def without_path(logs):
        out = []
        for logger in logs:
            logger = json.loads(json.dumps(logger))
            del logger["typed_config"]["path"]
            out.append(logger)
        return out

    assert without_path(loggers) == without_path(reference["access_log"])
    expressions = [lg["filter"]["extension_filter"]["typed_config"]["expression"] for lg in loggers]
    assert expressions == ["'wasm.mcp_audit' in filter_state", "!('wasm.mcp_audit' in filter_state)"]
