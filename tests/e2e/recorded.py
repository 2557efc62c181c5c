"""What the test-only gRPC peers (xds_server, rls_server, otlp_receiver) share: starting and
stopping their gRPC server, and bounded waiting on what they have recorded."""
from __future__ import annotations

import os
import threading
import time
from concurrent import futures
from typing import Callable, TypeVar

# Envoy and the MCP server are forked (subprocess) while a peer's threads run; the child execs at
# once, so gRPC's fork handlers are not needed.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402

T = TypeVar("T")


def serve(register: Callable[[grpc.Server], None], host: str, port: int, name: str, workers: int = 8) -> tuple[grpc.Server, int]:
    """A started gRPC server on host:port (0: a free port the kernel chooses, so no race) with the
    servicer `register` adds; returns it and the bound port. RuntimeError when it cannot bind."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name))
    register(server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise RuntimeError(f"could not bind {host}:{port}")
    server.start()
    return server, bound


def shutdown(server: grpc.Server | None, grace: float) -> None:
    """Stops `server` (if any), waiting at most `grace` + 5 seconds."""
    if server is not None:
        server.stop(grace).wait(grace + 5)


def first_match(
    cond: threading.Condition,
    items: list[T],
    match: Callable[[T], bool],
    timeout: float,
    timeout_message: Callable[[], str],
) -> T:
    """The first element of `items` (a list appended to under `cond`, which is notified on each
    append) satisfying `match`, waiting up to `timeout` seconds; TimeoutError with
    `timeout_message()` (evaluated under `cond`) otherwise."""
    deadline = time.monotonic() + timeout
    with cond:
        while True:
            for item in items:
                if match(item):
                    return item
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(timeout_message())
            cond.wait(left)
