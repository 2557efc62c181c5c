"""Test-only ECDS control plane: Envoy's ExtensionConfigDiscoveryService over a real gRPC stream.

Built on grpcio and the Envoy xDS protos the gRPC project generates and publishes on PyPI
(`xds-protos`): the service, its stream and the messages are the library's; this module only
keeps the state of the world (one TypedExtensionConfig, one version) and a log of what Envoy
said. State-of-the-world protocol, as Envoy's gRPC subscription speaks it:

  Envoy  -> DiscoveryRequest{resource_names: [mcp-guard], version_info: "", response_nonce: ""}
  server -> DiscoveryResponse{version_info: V, resources: [TypedExtensionConfig], nonce: N}
  Envoy  -> DiscoveryRequest{version_info: V, response_nonce: N}                        (ACK)
         or DiscoveryRequest{version_info: <last accepted>, response_nonce: N,
                             error_detail: {code, message}}                             (NACK)

Every DiscoveryRequest is recorded (`requests`), every response sent too (`responses`);
`push()` sets a new version and sends it on every open stream at once. Loopback only.
"""
from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

# The stack forks Envoy and the demo server (subprocess) while this server's threads run; the
# child execs at once, so gRPC's fork handlers are not needed (they only log that they skip).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402
from recorded import first_match, serve, shutdown  # noqa: E402
from envoy.config.core.v3 import extension_pb2  # noqa: E402,F401  (registers TypedExtensionConfig)
from envoy.extensions.filters.http.wasm.v3 import wasm_pb2  # noqa: E402,F401  (registers the Wasm config)
from envoy.service.discovery.v3 import discovery_pb2  # noqa: E402
from envoy.service.extension.v3 import config_discovery_pb2_grpc  # noqa: E402
from google.protobuf import any_pb2, json_format  # noqa: E402
from google.protobuf import wrappers_pb2  # noqa: E402,F401  (registers StringValue)

TYPED_EXTENSION_CONFIG = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"


def extension_config_from_json(resource: dict) -> any_pb2.Any:
    """A TypedExtensionConfig (as Any) from its proto-JSON form, e.g. one element of the
    `resources` list that scripts/render_ecds.py writes for the file-based ECDS. The JSON is
    parsed against the generated descriptors, so an unknown field or enum name fails here."""
    msg = json_format.ParseDict(resource, any_pb2.Any())
    if msg.type_url != TYPED_EXTENSION_CONFIG:
        raise ValueError(f"expected a {TYPED_EXTENSION_CONFIG}, got {msg.type_url}")
    return msg


@dataclass(frozen=True)
class SeenRequest:
    """One DiscoveryRequest Envoy sent, as received."""

    at: float  # time.monotonic()
    stream: int
    type_url: str
    node_id: str
    resource_names: tuple[str, ...]
    version_info: str
    response_nonce: str
    error_code: int | None  # error_detail.code of a NACK (google.rpc.Status), else None
    error_message: str | None

    @property
    def is_nack(self) -> bool:
        return self.error_code is not None


@dataclass(frozen=True)
class SentResponse:
    at: float
    stream: int
    version_info: str
    nonce: str


class _Stream:
    def __init__(self, number: int) -> None:
        self.number = number
        self.wake: "queue.Queue[str]" = queue.Queue()
        self.subscribed = False
        self.sent_version: str | None = None


class EcdsControlPlane(config_discovery_pb2_grpc.ExtensionConfigDiscoveryServiceServicer):
    """Serves one TypedExtensionConfig (state of the world) to every ECDS stream."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._lock = threading.Condition()
        self._version: str | None = None
        self._resource: any_pb2.Any | None = None
        self._streams: dict[int, _Stream] = {}
        self._stream_numbers = itertools.count(1)
        self._nonces = itertools.count(1)
        self._requests: list[SeenRequest] = []
        self._responses: list[SentResponse] = []
        self._stopping = threading.Event()
        self._server: grpc.Server | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> int:
        """Listen on host:<free port> (chosen by the kernel, so no race); return the port."""
        add = lambda server: config_discovery_pb2_grpc.add_ExtensionConfigDiscoveryServiceServicer_to_server(self, server)  # noqa: E731
        self._server, self.port = serve(add, self._host, 0, "ecds")
        return self.port

    def stop(self, grace: float = 1.0) -> None:
        self._stopping.set()
        with self._lock:
            for s in self._streams.values():
                s.wake.put("stop")
        shutdown(self._server, grace)

    # ------------------------------------------------------------------ state of the world
    def push(self, version: str, resource: any_pb2.Any) -> None:
        """Make (version, resource) the current config and send it on every open stream."""
        with self._lock:
            self._version, self._resource = version, resource
            for s in self._streams.values():
                s.wake.put("push")
            self._lock.notify_all()

    @property
    def version(self) -> str | None:
        with self._lock:
            return self._version

    @property
    def requests(self) -> list[SeenRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def responses(self) -> list[SentResponse]:
        with self._lock:
            return list(self._responses)

    def open_streams(self) -> int:
        with self._lock:
            return len(self._streams)

    def wait_for_request(self, match: Callable[[SeenRequest], bool], timeout: float, what: str) -> SeenRequest:
        """The first recorded request satisfying `match` (waits up to `timeout` seconds)."""

        def seen() -> str:
            listed = "\n  ".join(map(repr, self._requests)) or "(none)"
            return f"timed out after {timeout}s waiting for {what}; requests seen:\n  {listed}"

        return first_match(self._lock, self._requests, match, timeout, seen)

    def wait_for_response(self, version: str, timeout: float) -> SentResponse:
        """The response that carried `version` (the nonce Envoy's ACK/NACK must echo)."""
        return first_match(
            self._lock, self._responses, lambda r: r.version_info == version, timeout,
            lambda: f"no response with version {version!r} sent within {timeout}s (open streams: {len(self._streams)})",
        )  # fmt: skip

    # ------------------------------------------------------------------ the gRPC service
    def StreamExtensionConfigs(self, request_iterator, context):  # noqa: N802 (generated name)
        with self._lock:
            stream = _Stream(next(self._stream_numbers))
            self._streams[stream.number] = stream
        reader = threading.Thread(
            target=self._read, args=(stream, request_iterator), name=f"ecds-read-{stream.number}", daemon=True
        )
        reader.start()
        try:
            while context.is_active() and not self._stopping.is_set():
                try:
                    event = stream.wake.get(timeout=0.2)
                except queue.Empty:
                    continue
                if event in ("stop", "closed"):
                    return
                with self._lock:
                    if not stream.subscribed or self._resource is None or self._version == stream.sent_version:
                        continue  # nothing new for this stream (an ACK or NACK needs no answer)
                    nonce = str(next(self._nonces))
                    response = discovery_pb2.DiscoveryResponse(
                        version_info=self._version,
                        resources=[self._resource],
                        type_url=TYPED_EXTENSION_CONFIG,
                        nonce=nonce,
                    )
                    stream.sent_version = self._version
                    self._responses.append(SentResponse(time.monotonic(), stream.number, self._version, nonce))
                    self._lock.notify_all()
                yield response
        finally:
            with self._lock:
                self._streams.pop(stream.number, None)
                self._lock.notify_all()

    def _read(self, stream: _Stream, request_iterator) -> None:
        try:
            for req in request_iterator:
                err = req.error_detail if req.HasField("error_detail") else None
                seen = SeenRequest(
                    at=time.monotonic(),
                    stream=stream.number,
                    type_url=req.type_url,
                    node_id=req.node.id,
                    resource_names=tuple(req.resource_names),
                    version_info=req.version_info,
                    response_nonce=req.response_nonce,
                    error_code=None if err is None else err.code,
                    error_message=None if err is None else err.message,
                )
                with self._lock:
                    self._requests.append(seen)
                    if req.type_url == TYPED_EXTENSION_CONFIG:
                        stream.subscribed = True
                    self._lock.notify_all()
                stream.wake.put("request")
        except grpc.RpcError:
            pass  # stream cancelled (Envoy stopped, or the server is stopping)
        finally:
            stream.wake.put("closed")
