"""The Kubernetes manifests `make manifests` renders (examples/mesh/*.yaml) against the published
CRDs of their kinds, vendored unmodified in schemas/crds/ (provenance in its README: Istio
1.30.3 EnvoyFilter and WasmPlugin, Envoy Gateway v1.9.0 EnvoyExtensionPolicy and
EnvoyPatchPolicy). No cluster and no Envoy: the schema is applied here as an API server with
strict field validation (`kubectl apply`'s default) would apply it.

For every document: the CRD is found by the group of its apiVersion and its kind; the
apiVersion's version must be one the CRD serves (and not deprecated); the document is validated
against that version's openAPIV3Schema with openapi-schema-validator's OAS30Validator (the
Kubernetes schema dialect is OpenAPI 3.0: `nullable` is honoured) and its OAS 3.0 format checker.
As Kubernetes reads a structural schema:

- an object's fields not in its `properties` are errors (the API server prunes them, and
  rejects them under strict field validation), except under
  `x-kubernetes-preserve-unknown-fields: true` (e.g. WasmPlugin `pluginConfig`, EnvoyFilter
  `patch.value`, EnvoyExtensionPolicy `wasm[].config`: free-form here; the plugin
  configurations in them are parsed with the filter's own parser by cli/tests/cli.rs);
- `x-kubernetes-int-or-string: true` accepts an integer or a string (the published CRDs spell
  it out as `anyOf`; one that does not gets that `anyOf` added);
- `apiVersion`, `kind` and `metadata` are implicit at the root (and under
  `x-kubernetes-embedded-resource`); `metadata` is checked here for what a client may send
  (a DNS-1123 subdomain `name`, a DNS-1123 label `namespace`, string `labels`/`annotations`).

NOT checked: the CEL rules (`x-kubernetes-validations`, e.g. WasmPlugin "only one of targetRefs
or selector can be set" and its `url` scheme rule, EnvoyExtensionPolicy "If type is Image, image
field needs to be set" and "either targetRef or targetRefs must be used"); list uniqueness of
`x-kubernetes-list-type: set|map`; what the API server does before validating (defaults,
pruning instead of rejecting without strict validation); formats Kubernetes checks but OAS 3.0
does not (`date-time`, only in status fields here), while the OAS int32/int64 range checks are
stricter than Kubernetes; regular expressions are Python's, not Go's RE2 (the same for the
patterns these CRDs use); and whether the controllers (istiod, Envoy Gateway) accept the
object's meaning. Envoy itself never sees these files here: `make validate` and test_05 cover
the Wasm configs inside them.
"""
from __future__ import annotations

import copy
import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from conftest import REPO

CRD_DIR = REPO / "schemas" / "crds"
MESH_DIR = REPO / "examples" / "mesh"
MESH_FILES = sorted(MESH_DIR.glob("*.yaml"))

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# ObjectMeta fields a client may set (the rest are written by the API server).
CLIENT_METADATA = {"name", "generateName", "namespace", "labels", "annotations", "finalizers", "ownerReferences"}


# --- the vendored CRDs ------------------------------------------------------------------------


@lru_cache(maxsize=None)
def crds() -> dict[tuple[str, str], dict]:
    """(group, kind) -> the CustomResourceDefinition, for every file in schemas/crds/."""
    found: dict[tuple[str, str], dict] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
        assert len(docs) == 1, f"{path}: one CRD per file"
        (crd,) = docs
        assert (crd["apiVersion"], crd["kind"]) == ("apiextensions.k8s.io/v1", "CustomResourceDefinition"), path
        key = (crd["spec"]["group"], crd["spec"]["names"]["kind"])
        assert key not in found, f"{path}: a second CRD for {key}"
        found[key] = crd
    return found


def provenance() -> dict[str, str]:
    """file name -> SHA-256, from the table in schemas/crds/README.md."""
    rows = re.findall(r"^\| `([^`]+\.yaml)` \|.*\| `([0-9a-f]{64})` \|$", (CRD_DIR / "README.md").read_text(encoding="utf-8"), re.M)
    return dict(rows)


def test_every_vendored_crd_is_as_recorded_in_its_provenance() -> None:
    recorded = provenance()
    files = {p.name for p in CRD_DIR.glob("*.yaml")}
    assert set(recorded) == files, "schemas/crds/README.md must list exactly the vendored files"
    for name, sha in recorded.items():
        actual = hashlib.sha256((CRD_DIR / name).read_bytes()).hexdigest()
        assert actual == sha, f"{name} was changed after it was vendored (SHA-256 {actual}, recorded {sha})"
    assert (CRD_DIR / "LICENSE").read_text(encoding="utf-8").lstrip().startswith("Apache License")


# --- the schema, as Kubernetes reads it --------------------------------------------------------


def structural(schema: dict, root: bool = False) -> dict:
    """A copy of a CRD schema in which what Kubernetes does implicitly is explicit (see the module
    docstring). Only the structural part (properties, items, additionalProperties) is rewritten:
    the branches of allOf/anyOf/oneOf/not only constrain values of fields declared there."""
    s = copy.deepcopy(schema)

    def walk(node: dict, at_root: bool) -> None:
        if node.get("x-kubernetes-int-or-string") and "anyOf" not in node and "type" not in node:
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        props = node.get("properties")
        if at_root or node.get("x-kubernetes-embedded-resource"):
            props = node.setdefault("properties", {})
            props.setdefault("apiVersion", {"type": "string"})
            props.setdefault("kind", {"type": "string"})
            props["metadata"] = {"type": "object"}  # checked by check_metadata
            node.setdefault("type", "object")
        for child in (props or {}).values():
            walk(child, False)
        if isinstance(node.get("items"), dict):
            walk(node["items"], False)
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], False)
        is_object = node.get("type") == "object" or props is not None
        if is_object and not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
            node["additionalProperties"] = False

    walk(s, root)
    # metadata itself is free-form for the validator; check_metadata reads it.
    s["properties"]["metadata"]["x-kubernetes-preserve-unknown-fields"] = True
    s["properties"]["metadata"].pop("additionalProperties", None)
    return s


def served_schema(doc: dict) -> dict:
    """The openAPIV3Schema of the CRD version doc's apiVersion names; fails if there is none."""
    api_version = doc.get("apiVersion", "")
    group, _, version = api_version.rpartition("/")
    crd = crds().get((group, doc.get("kind")))
    assert crd is not None, f"no CRD in schemas/crds/ for kind {doc.get('kind')!r} of group {group!r}"
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert version in versions, f"{api_version}: the CRD has versions {sorted(versions)}"
    assert versions[version].get("served") is True, f"{api_version} is not served"
    assert not versions[version].get("deprecated"), f"{api_version} is deprecated"
    return versions[version]["schema"]["openAPIV3Schema"]


def check_metadata(meta: Any) -> list[str]:
    if not isinstance(meta, dict):
        return [f"metadata: {meta!r} is not an object"]
    errors = [f"metadata.{k}: not a field a client sets" for k in sorted(set(meta) - CLIENT_METADATA)]
    name = meta.get("name")
    if not (isinstance(name, str) and len(name) <= 253 and DNS1123_SUBDOMAIN.match(name)):
        errors.append(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    ns = meta.get("namespace")
    if ns is not None and not (isinstance(ns, str) and len(ns) <= 63 and DNS1123_LABEL.match(ns)):
        errors.append(f"metadata.namespace: {ns!r} is not a DNS-1123 label")
    for field in ("labels", "annotations"):
        value = meta.get(field, {})
        if not (isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
            errors.append(f"metadata.{field}: not a map of strings")
    return errors


@lru_cache(maxsize=None)
def _validator(key: tuple[str, str, str]) -> Any:
    group, version, kind = key
    schema = structural(served_schema({"apiVersion": f"{group}/{version}", "kind": kind}), root=True)
    OAS30Validator.check_schema(schema)
    return OAS30Validator(schema, format_checker=oas30_format_checker)


def validation_errors(doc: Any) -> list[str]:
    """Every problem the CRD schema finds in doc, as `path: message` lines; [] if valid."""
    if not isinstance(doc, dict):
        return [f"{doc!r} is not an object"]
    group, _, version = str(doc.get("apiVersion", "")).rpartition("/")
    try:
        validator = _validator((group, version, str(doc.get("kind"))))
    except AssertionError as e:
        return [str(e).splitlines()[0]]
    errors = [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]
    return errors + check_metadata(doc.get("metadata"))


# --- the rendered manifests --------------------------------------------------------------------


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def mesh_documents() -> Iterator[tuple[str, dict]]:
    for path in MESH_FILES:
        for i, doc in enumerate(documents(path)):
            yield f"{path.relative_to(REPO)}[{i}] {doc.get('kind')}", doc


MESH_DOCS = list(mesh_documents())


def test_the_vendored_crds_are_exactly_the_rendered_kinds() -> None:
    assert MESH_FILES, f"nothing in {MESH_DIR} (make manifests)"
    rendered = {(d["apiVersion"].rpartition("/")[0], d["kind"]) for _, d in MESH_DOCS}
    assert rendered == set(crds()), "vendor a CRD for each rendered kind, and none other"


@pytest.mark.parametrize("doc", [d for _, d in MESH_DOCS], ids=[n for n, _ in MESH_DOCS])
def test_rendered_manifest_is_valid_against_its_crd(doc: dict) -> None:
    assert validation_errors(doc) == []


# --- the validator rejects what Kubernetes would reject ----------------------------------------


def mesh_doc(kind: str) -> dict:
    (doc,) = [d for _, d in MESH_DOCS if d["kind"] == kind][:1]
    return copy.deepcopy(doc)


def edited(kind: str, edit: Any) -> dict:
    doc = mesh_doc(kind)
    edit(doc)
    return doc


BROKEN = {
    # wrong type: an int32 field given a string
    "EnvoyFilter priority is a string": (
        edited("EnvoyFilter", lambda d: d["spec"].__setitem__("priority", "-10")),
        "spec.priority: '-10' is not of type 'integer'",
    ),
    # enum: Envoy's spelling instead of Istio's
    "WasmPlugin failStrategy FAIL_CLOSED": (
        edited("WasmPlugin", lambda d: d["spec"].__setitem__("failStrategy", "FAIL_CLOSED")),
        "spec.failStrategy: 'FAIL_CLOSED' is not one of",
    ),
    # required field missing
    "WasmPlugin without url": (
        edited("WasmPlugin", lambda d: d["spec"].pop("url")),
        "spec: 'url' is a required property",
    ),
    # unknown field (a typo) in a structural object
    "EnvoyExtensionPolicy wasm[0].failOpn": (
        edited("EnvoyExtensionPolicy", lambda d: d["spec"]["wasm"][0].__setitem__("failOpn", False)),
        "spec.wasm.0: Additional properties are not allowed ('failOpn' was unexpected)",
    ),
    # pattern
    "WasmPlugin sha256 not hex": (
        edited("WasmPlugin", lambda d: d["spec"].__setitem__("sha256", "ab12")),
        "spec.sha256: 'ab12' does not match",
    ),
    # null where the field is not nullable
    "WasmPlugin url null": (
        edited("WasmPlugin", lambda d: d["spec"].__setitem__("url", None)),
        "spec.url: None for not nullable",
    ),
    # required field of a nested object
    "EnvoyPatchPolicy patch without op": (
        edited("EnvoyPatchPolicy", lambda d: d["spec"]["jsonPatches"][0]["operation"].pop("op")),
        "spec.jsonPatches.0.operation: 'op' is a required property",
    ),
    # a version the CRD does not have
    "WasmPlugin v1": (
        edited("WasmPlugin", lambda d: d.__setitem__("apiVersion", "extensions.istio.io/v1")),
        "extensions.istio.io/v1: the CRD has versions ['v1alpha1']",
    ),
    # a kind with no vendored CRD
    "unknown kind": (
        edited("WasmPlugin", lambda d: d.__setitem__("kind", "WasmPlugins")),
        "no CRD in schemas/crds/ for kind 'WasmPlugins'",
    ),
    # metadata
    "EnvoyFilter name with capitals": (
        edited("EnvoyFilter", lambda d: d["metadata"].__setitem__("name", "MCP-Guard")),
        "metadata.name: 'MCP-Guard' is not a DNS-1123 subdomain",
    ),
}


@pytest.mark.parametrize("doc, expected", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_manifest_is_rejected(doc: dict, expected: str) -> None:
    errors = validation_errors(doc)
    assert any(e.startswith(expected) for e in errors), errors


ACCEPTED = {
    # nullable: true on an int32 field
    "WasmPlugin priority null": lambda d: d["spec"].__setitem__("priority", None),
    # x-kubernetes-preserve-unknown-fields: anything goes in pluginConfig
    "WasmPlugin pluginConfig free-form": lambda d: d["spec"]["pluginConfig"].__setitem__("x", {"y": [1, None]}),
    # x-kubernetes-int-or-string, both ways
    "WasmPlugin status observedGeneration int": lambda d: d.__setitem__("status", {"observedGeneration": 3}),
    "WasmPlugin status observedGeneration string": lambda d: d.__setitem__("status", {"observedGeneration": "3"}),
}


@pytest.mark.parametrize("edit", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_what_the_schema_allows_is_accepted(edit: Any) -> None:
    assert validation_errors(edited("WasmPlugin", edit)) == []


def test_int_or_string_refuses_other_types() -> None:
    doc = edited("WasmPlugin", lambda d: d.__setitem__("status", {"observedGeneration": 2.5}))
    assert any(e.startswith("status.observedGeneration:") for e in validation_errors(doc))
