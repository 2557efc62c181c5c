"""Bounded waiting on what a test-only gRPC peer (xds_server, rls_server) has recorded."""
from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

T = TypeVar("T")


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
