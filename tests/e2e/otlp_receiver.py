"""Test-only OTLP log receiver: the OpenTelemetry LogsService (OTLP/gRPC) over a real gRPC
connection, for tests/e2e/test_95_otel.py.

Built on grpcio and the official OpenTelemetry protos (PyPI `opentelemetry-proto`): the service,
the messages and the HTTP/2 transport are the libraries'. This module only

  - records every LogRecord of every ExportLogsServiceRequest Envoy's OpenTelemetry access
    logger (`envoy.access_loggers.open_telemetry`) sends, flattened with the resource
    attributes and the scope it came under, in arrival order, with bounded waits on them;
  - answers each export with an empty ExportLogsServiceResponse (everything accepted).

It never interprets a record: the test compares what arrived with the JSON file log. Loopback
only.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

# Envoy and the MCP server are forked (subprocess) while this server's threads run; the child
# execs at once, so gRPC's fork handlers are not needed.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc  # noqa: E402
from opentelemetry.proto.common.v1 import common_pb2  # noqa: E402
from opentelemetry.proto.logs.v1 import logs_pb2  # noqa: E402
from recorded import first_match, serve, shutdown  # noqa: E402
from stack import grpc_cluster  # noqa: E402

if "scope_logs" not in logs_pb2.ResourceLogs.DESCRIPTOR.fields_by_name:
    # xds-protos' older copy of these files replaced opentelemetry-proto's (see the Makefile's venv
    # recipe): that OTLP has no scope_logs, which is what Envoy sends.
    raise ImportError(
        f"{logs_pb2.__file__} is not opentelemetry-proto's OTLP (no ResourceLogs.scope_logs): "
        "reinstall it with `make venv` (or pip install --force-reinstall --no-deps opentelemetry-proto)"
    )

# The Envoy cluster name the shipped config (envoy/envoy-otel.yaml) sends OTLP logs to.
CLUSTER = "otel_collector"


def collector_cluster(port: int, name: str = CLUSTER) -> dict:
    """The Envoy cluster `otel_collector` (HTTP/2, gRPC) that reaches this receiver on `port`."""
    return grpc_cluster(name, port)


def any_value(value: common_pb2.AnyValue) -> Any:
    """An OTLP AnyValue as Python: str, bool, int, float, bytes, list or dict (None if unset)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return None if kind is None else getattr(value, kind)


@dataclass(frozen=True)
class SeenLog:
    """One LogRecord as received."""

    at: float  # time.monotonic()
    resource: dict[str, Any]  # the ResourceLogs' resource attributes
    scope: str  # the ScopeLogs' scope name
    time_unix_nano: int
    body: Any  # the body AnyValue as Python (a str for the shipped config)
    attributes: dict[str, Any]  # a key sent twice keeps its last value; see `attribute_keys`
    attribute_keys: tuple[str, ...]  # every key in the order sent
    trace_id: bytes
    span_id: bytes


class OtlpLogReceiver(logs_service_pb2_grpc.LogsServiceServicer):
    """LogsService/Export: record every LogRecord, accept everything."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._cond = threading.Condition()
        self._logs: list[SeenLog] = []
        self._exports = 0
        self._server: grpc.Server | None = None
        self.port: int | None = None

    def start(self, port: int = 0) -> int:
        """Listen on host:port (0: a free port chosen by the kernel); return the port."""
        add = lambda server: logs_service_pb2_grpc.add_LogsServiceServicer_to_server(self, server)  # noqa: E731
        self._server, self.port = serve(add, self._host, port, "otlp", workers=4)
        return self.port

    def stop(self, grace: float = 0.5) -> None:
        shutdown(self._server, grace)
        self._server = None

    @property
    def logs(self) -> list[SeenLog]:
        with self._cond:
            return list(self._logs)

    @property
    def exports(self) -> int:
        """How many ExportLogsServiceRequests arrived."""
        with self._cond:
            return self._exports

    def wait_for(self, match: Callable[[SeenLog], bool], timeout: float, what: str) -> SeenLog:
        """The first received LogRecord satisfying `match` (bounded wait)."""

        def seen() -> str:
            listed = "\n  ".join(f"{log.attributes} {log.body!r}"[:600] for log in self._logs) or "(none)"
            return f"timed out after {timeout}s waiting for {what}; log records seen:\n  {listed}"

        return first_match(self._cond, self._logs, match, timeout, seen)

    # ------------------------------------------------------------------ the gRPC service
    def Export(self, request, context):  # noqa: N802 (generated name)
        now = time.monotonic()
        seen = []
        for resource_logs in request.resource_logs:
            resource = {kv.key: any_value(kv.value) for kv in resource_logs.resource.attributes}
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    seen.append(SeenLog(
                        at=now,
                        resource=resource,
                        scope=scope_logs.scope.name,
                        time_unix_nano=record.time_unix_nano,
                        body=any_value(record.body),
                        attributes={kv.key: any_value(kv.value) for kv in record.attributes},
                        attribute_keys=tuple(kv.key for kv in record.attributes),
                        trace_id=bytes(record.trace_id),
                        span_id=bytes(record.span_id),
                    ))  # fmt: skip
        with self._cond:
            self._exports += 1
            self._logs.extend(seen)
            self._cond.notify_all()
        return logs_service_pb2.ExportLogsServiceResponse()
