"""Static checks of every Envoy configuration the repository ships or renders: each Wasm filter
config in it (inline in a bootstrap, in the ECDS resource `mcp-guard render --format ecds`
writes, in the Istio EnvoyFilter it renders, in examples/mesh/) fails closed and may set
headers after reading the body; the Envoy Gateway rendering fails closed (failOpen: false) and
patches allow_on_headers_stop_iteration in; the Istio WasmPlugin rendering, whose API cannot set
that flag, fails closed (failStrategy: FAIL_CLOSE) and tells the filter not to hold request
headers. `make validate` separately runs the bootstraps and the ECDS resource through
`envoy --mode validate`; tests/e2e/test_07_mesh_crds.py checks examples/mesh/ against the CRDs.
The shipped documentation's relative links (README.md, docs/, every other tracked Markdown file)
must name files that exist and headings those files have: the docs point into each other by
section, and a renamed heading or moved file must not leave a dead link."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

import render_ecds
from conftest import REPO
from stack import DEFAULT_POLICY, DEFAULT_WASM

WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
SHIPPED = sorted((REPO / "envoy").rglob("*.yaml")) + sorted((REPO / "examples").rglob("*.yaml"))


def wasm_configs(node: Any) -> Iterator[dict]:
    """Every `config` (PluginConfig) of a Wasm HTTP filter anywhere in a document."""
    if isinstance(node, dict):
        if node.get("@type") == WASM_TYPE:
            yield node.get("config", {})
        for value in node.values():
            yield from wasm_configs(value)
    elif isinstance(node, list):
        for value in node:
            yield from wasm_configs(value)


def assert_fails_closed(config: dict, where: str) -> None:
    assert config.get("failure_policy") == "FAIL_CLOSED", f"{where}: failure_policy is {config.get('failure_policy')!r}"
    assert config.get("allow_on_headers_stop_iteration") is True, f"{where}: allow_on_headers_stop_iteration not set"


def test_the_rendered_ecds_resource_fails_closed() -> None:
    resource = render_ecds.ecds_resource(DEFAULT_POLICY.read_text(encoding="utf-8"), DEFAULT_WASM)
    found = list(wasm_configs(json.loads(json.dumps(resource))))
    assert len(found) == 1
    assert_fails_closed(found[0], "render_ecds.ecds_resource (mcp-guard render --format ecds)")


def cli_render(fmt: str, output: str = "yaml") -> list[dict]:
    """The documents `mcp-guard render examples/policy.json --format FMT` prints."""
    proc = subprocess.run(
        [str(render_ecds.cli_path()), "render", str(DEFAULT_POLICY), "--format", fmt, "--output", output],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [d for d in yaml.safe_load_all(proc.stdout) if d is not None]


@pytest.mark.parametrize("fmt", ["ecds", "istio"])
def test_the_clis_wasm_renderings_fail_closed(fmt: str) -> None:
    (doc,) = cli_render(fmt)
    found = list(wasm_configs(doc))
    assert len(found) == 1, doc
    assert_fails_closed(found[0], f"mcp-guard render --format {fmt}")


def assert_envoy_gateway_fails_closed(docs: list[dict], where: str) -> None:
    kinds = [d["kind"] for d in docs]
    assert kinds == ["EnvoyExtensionPolicy", "EnvoyPatchPolicy"], where
    (wasm,) = docs[0]["spec"]["wasm"]
    assert wasm["failOpen"] is False, f"{where}: failOpen is {wasm.get('failOpen')!r}"
    (patch,) = docs[1]["spec"]["jsonPatches"]
    op = patch["operation"]
    assert (op["op"], op["path"], op["value"]) == ("add", "/typed_config/config/allow_on_headers_stop_iteration", True), where


def test_the_clis_envoy_gateway_rendering_fails_closed() -> None:
    assert_envoy_gateway_fails_closed(cli_render("envoy-gateway"), "mcp-guard render --format envoy-gateway")
    path = REPO / "examples" / "mesh" / "envoy-gateway.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert_envoy_gateway_fails_closed(docs, str(path))


def assert_wasmplugin_fails_closed(doc: dict, where: str) -> None:
    """An Istio WasmPlugin: FAIL_CLOSE, and (no allow_on_headers_stop_iteration in its API) a
    plugin configuration that does not hold request headers, which would stall requests."""
    spec = doc["spec"]
    assert spec.get("failStrategy") == "FAIL_CLOSE", f"{where}: failStrategy is {spec.get('failStrategy')!r}"
    assert spec["pluginConfig"].get("hold_request_headers") is False, f"{where}: hold_request_headers not false"


def test_the_clis_wasmplugin_rendering_fails_closed() -> None:
    (doc,) = cli_render("istio-wasmplugin")
    assert doc["kind"] == "WasmPlugin"
    assert not list(wasm_configs(doc))
    assert_wasmplugin_fails_closed(doc, "mcp-guard render --format istio-wasmplugin")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(Path(p).relative_to(REPO)))
def test_every_shipped_wasm_config_fails_closed(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert docs, f"{path} is empty"
    for config in (c for d in docs for c in wasm_configs(d)):
        assert_fails_closed(config, str(path))
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "WasmPlugin":
            assert_wasmplugin_fails_closed(doc, str(path))


# --- Links in the shipped Markdown.
MARKDOWN = sorted(
    REPO / p for p in subprocess.run(
        ["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()
)  # fmt: skip
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def heading_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file: lower-cased, every character
    but letters, digits, `_`, `-` and spaces dropped, spaces as `-`, `-1`, `-2` ... on repeats."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1)).strip().lower()
            slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_markdown_is_shipped() -> None:
    assert REPO / "README.md" in MARKDOWN and any(p.parent == REPO / "docs" for p in MARKDOWN)


@pytest.mark.parametrize("doc", MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc: Path) -> None:
    dead = []
    for target in LINK.findall(FENCE.sub("", doc.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not ours to check
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            dead.append(f"{target}: no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest):
            dead.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(REPO)}")
    assert dead == [], f"{doc.relative_to(REPO)} has dead links:\n" + "\n".join(dead)
