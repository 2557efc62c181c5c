"""Test-only rate limit service (RLS): Envoy's envoy.service.ratelimit.v3.RateLimitService over a
real gRPC connection, for tests/e2e/test_25_global_rate_limit.py.

Built on grpcio and the Envoy protos the gRPC project generates and publishes on PyPI
(`xds-protos`), like tests/e2e/xds_server.py: the service, the messages and the HTTP/2 transport
are the library's. This module only

  - records every ShouldRateLimit request Envoy sends (domain, descriptors as tuples of
    (key, value) pairs, hits_addend), in arrival order, with bounded waits on them;
  - answers each one with a rule the test sets: `over_limit(match)` makes every request for
    which `match(descriptors)` is true OVER_LIMIT, every other request OK; each answer has a
    status per descriptor (limit, remaining, duration_until_reset), as envoyproxy/ratelimit
    sends them; optionally (`retry_after_header`) a `retry-after` response header too;
  - can be taken down and brought back on the same port (`down()`), so Envoy sees a
    connection refused, not an answer.

It never counts anything itself: the limits a real deployment would enforce live in the
ratelimit service's own config (examples/ratelimit/config.yaml). Loopback only.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

# Envoy and the demo server are forked (subprocess) while this server's threads run; the child
# execs at once, so gRPC's fork handlers are not needed.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402
from recorded import first_match, serve, shutdown  # noqa: E402
from stack import grpc_cluster  # noqa: E402
from envoy.config.core.v3 import base_pb2  # noqa: E402
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc  # noqa: E402
from google.protobuf import duration_pb2  # noqa: E402

Descriptor = tuple[tuple[str, str], ...]  # one RateLimitDescriptor: its (key, value) entries


def rls_cluster(port: int) -> dict:
    """The Envoy cluster `ratelimit` (HTTP/2, gRPC) that reaches this server on `port`, for a
    bootstrap's `static_resources.clusters`."""
    return grpc_cluster("ratelimit", port)
Rule = Callable[[tuple[Descriptor, ...]], bool]


@dataclass(frozen=True)
class SeenRateLimitRequest:
    at: float  # time.monotonic()
    domain: str
    descriptors: tuple[Descriptor, ...]
    hits_addend: int
    answered: str  # "OK" or "OVER_LIMIT"


def _never(_descriptors: tuple[Descriptor, ...]) -> bool:
    return False


class RateLimitServer(rls_pb2_grpc.RateLimitServiceServicer):
    """ShouldRateLimit: record, then OK or OVER_LIMIT per the current rule."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        retry_after_s: int | None = 30,
        limit_per_unit: int = 5,
        retry_after_header: str | None = None,
    ) -> None:
        self._host = host
        self._cond = threading.Condition()
        self._requests: list[SeenRateLimitRequest] = []
        self._rule: Rule = _never
        self._server: grpc.Server | None = None
        self.port: int | None = None
        self.limit_per_unit = limit_per_unit
        # duration_until_reset of every descriptor status (None: not set).
        self.retry_after_s = retry_after_s
        # A `retry-after` value an OVER_LIMIT answer carries in response_headers_to_add (None:
        # none). The envoyproxy/ratelimit service sends none, so the shipped bootstrap must
        # not depend on it: none by default.
        self.retry_after_header = retry_after_header

    # ------------------------------------------------------------------ lifecycle
    def start(self, port: int = 0) -> int:
        """Listen on host:port (0: a free port chosen by the kernel); return the port."""
        add = lambda server: rls_pb2_grpc.add_RateLimitServiceServicer_to_server(self, server)  # noqa: E731
        self._server, self.port = serve(add, self._host, port, "rls")
        return self.port

    def stop(self, grace: float = 0.5) -> None:
        shutdown(self._server, grace)
        self._server = None

    @contextlib.contextmanager
    def down(self, timeout: float = 10.0) -> Iterator[None]:
        """The service is not running inside the block (its port refuses connections; Envoy's
        open HTTP/2 connection to it is closed); it listens on the same port again after."""
        port = self.port
        assert port, "not started"
        self.stop(grace=0)
        try:
            yield
        finally:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    self.start(port)
                    break
                except RuntimeError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.1)

    # ------------------------------------------------------------------ rule and record
    def over_limit(self, rule: Rule | None) -> None:
        """From now on, answer OVER_LIMIT to requests whose descriptors satisfy `rule`
        (None: answer OK to everything)."""
        with self._cond:
            self._rule = rule or _never

    @property
    def requests(self) -> list[SeenRateLimitRequest]:
        with self._cond:
            return list(self._requests)

    def wait_for(self, match: Callable[[SeenRateLimitRequest], bool], timeout: float, what: str) -> SeenRateLimitRequest:
        """The first recorded request satisfying `match` (bounded wait)."""

        def seen() -> str:
            listed = "\n  ".join(map(repr, self._requests)) or "(none)"
            return f"timed out after {timeout}s waiting for {what}; requests seen:\n  {listed}"

        return first_match(self._cond, self._requests, match, timeout, seen)

    # ------------------------------------------------------------------ the gRPC service
    def ShouldRateLimit(self, request, context):  # noqa: N802 (generated name)
        descriptors = tuple(tuple((e.key, e.value) for e in d.entries) for d in request.descriptors)
        with self._cond:
            over = bool(self._rule(descriptors))
            self._requests.append(SeenRateLimitRequest(
                at=time.monotonic(), domain=request.domain, descriptors=descriptors,
                hits_addend=request.hits_addend, answered="OVER_LIMIT" if over else "OK",
            ))  # fmt: skip
            self._cond.notify_all()
        code = rls_pb2.RateLimitResponse.OVER_LIMIT if over else rls_pb2.RateLimitResponse.OK
        unit_limit = rls_pb2.RateLimitResponse.RateLimit(
            requests_per_unit=self.limit_per_unit, unit=rls_pb2.RateLimitResponse.RateLimit.MINUTE
        )
        statuses = [
            rls_pb2.RateLimitResponse.DescriptorStatus(
                code=code,
                current_limit=unit_limit,
                limit_remaining=0 if over else self.limit_per_unit - 1,
                duration_until_reset=(
                    None if self.retry_after_s is None else duration_pb2.Duration(seconds=self.retry_after_s)
                ),
            )
            for _ in descriptors
        ]
        headers = []
        if over and self.retry_after_header is not None:
            headers.append(base_pb2.HeaderValue(key="retry-after", value=self.retry_after_header))
        return rls_pb2.RateLimitResponse(overall_code=code, statuses=statuses, response_headers_to_add=headers)
