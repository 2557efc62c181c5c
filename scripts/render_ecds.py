#!/usr/bin/env python3
"""Render the mcp-guard ECDS resource file and write it atomically.

Usage: render_ecds.py POLICY_JSON WASM_PATH OUT_FILE

POLICY_JSON is the plugin configuration (see examples/policy.json). It is
passed to the filter verbatim, as the string value of the Wasm plugin's
``configuration`` (google.protobuf.StringValue): the filter, not this script,
decides whether it is valid. This script only checks that it is UTF-8 JSON, so
that a typo is reported here instead of as an ECDS rejection in Envoy's log.

OUT_FILE is replaced atomically: the new content is written to a temporary file
in the same directory, flushed, then renamed over OUT_FILE (rename(2), as
``mv`` does). Envoy's path_config_source watches the directory and reloads on
the rename, so it never sees a half-written file.

Stdlib only, so it runs with any python3 (no venv needed).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

FILTER_NAME = "mcp-guard"
TYPED_EXTENSION_CONFIG = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue"


def ecds_resource(policy_text: str, wasm_path: str | os.PathLike[str]) -> dict:
    """The ECDS discovery document for one plugin configuration."""
    return {
        "resources": [
            {
                "@type": TYPED_EXTENSION_CONFIG,
                "name": FILTER_NAME,
                "typed_config": wasm_typed_config(policy_text, wasm_path),
            }
        ]
    }


def wasm_typed_config(policy_text: str, wasm_path: str | os.PathLike[str]) -> dict:
    """The envoy.extensions.filters.http.wasm.v3.Wasm message (shared with `make validate`)."""
    return {
        "@type": WASM_TYPE,
        "config": {
            "name": FILTER_NAME,
            "root_id": FILTER_NAME,
            "vm_config": {
                "vm_id": FILTER_NAME,
                "runtime": "envoy.wasm.runtime.v8",
                "code": {"local": {"filename": str(Path(wasm_path).resolve())}},
            },
            "configuration": {"@type": STRING_VALUE, "value": policy_text},
            # PluginConfig.failure_policy (Envoy >= 1.31, replaces fail_open):
            # a crashed VM answers 503 instead of letting traffic through unchecked.
            "failure_policy": "FAIL_CLOSED",
            # Lets the filter return StopIteration from the headers callback and
            # still add request headers (the tags) once it has read the body.
            "allow_on_headers_stop_iteration": True,
        },
    }


def write_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write text to path via a temp file in the same directory and rename(2)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def render(policy_text: str, wasm_path: str | os.PathLike[str], out_file: str | os.PathLike[str]) -> None:
    json.loads(policy_text)  # fail early on a syntax error; semantics are the filter's job
    write_atomically(out_file, json.dumps(ecds_resource(policy_text, wasm_path), indent=2) + "\n")


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    policy_file, wasm_path, out_file = argv[1:]
    try:
        policy_text = Path(policy_file).read_text(encoding="utf-8")
        render(policy_text, wasm_path, out_file)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"render_ecds: {exc}", file=sys.stderr)
        return 1
    if not Path(wasm_path).is_file():
        print(f"render_ecds: warning: {wasm_path} does not exist (yet); Envoy will reject the config", file=sys.stderr)
    print(f"render_ecds: wrote {out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
