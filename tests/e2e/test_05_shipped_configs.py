"""Static checks of every Envoy configuration the repository ships: each Wasm filter config in
it (inline in a bootstrap, or in the ECDS resource scripts/render_ecds.py writes) fails closed
and may set headers after reading the body. `make validate` separately runs each through
`envoy --mode validate`."""
from __future__ import annotations

import json
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
    assert_fails_closed(found[0], "render_ecds.ecds_resource")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(Path(p).relative_to(REPO)))
def test_every_shipped_wasm_config_fails_closed(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert docs, f"{path} is empty"
    for config in (c for d in docs for c in wasm_configs(d)):
        assert_fails_closed(config, str(path))
