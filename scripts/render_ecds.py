#!/usr/bin/env python3
"""The mcp-guard ECDS resource, from the `mcp-guard` CLI (cli/, `make cli`).

There is one implementation of the resource: `mcp-guard render --format ecds` (Rust, the
filter's own crate). This module only calls it, for the Python callers: scripts/stack.py
(the demo, `make policy`, `make validate`) and the e2e tests.

The CLI is target/release/mcp-guard, or $MCP_GUARD_CLI. The ECDS file is replaced
atomically (the CLI writes it next to the old one, then renames it over it), so Envoy's
path_config_source watch never sees half a file. Stdlib only.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CLI = REPO / "target" / "release" / "mcp-guard"


class RenderError(RuntimeError):
    """The CLI refused the policy (its problems are the message) or could not run."""


def cli_path() -> Path:
    """The mcp-guard CLI binary: $MCP_GUARD_CLI, else target/release/mcp-guard."""
    path = Path(os.environ.get("MCP_GUARD_CLI", DEFAULT_CLI))
    if not path.is_file():
        raise RenderError(f"{path} is missing: build the CLI with `make cli`")
    return path


def render_with_cli(
    policy_text: str,
    wasm_path: str | os.PathLike[str],
    *,
    check: bool = False,
    bare: bool = False,
    out_file: str | os.PathLike[str] | None = None,
) -> str:
    """`mcp-guard render - --format ecds` with the policy on stdin; the CLI's stdout.

    check=False passes --no-check: the policy must be JSON/YAML but may be invalid, so tests
    can show Envoy (the filter's on_configure) rejecting it. The Wasm path is made absolute,
    since Envoy resolves a relative one against its own working directory."""
    cmd = [str(cli_path()), "render", "-", "--format", "ecds", "--wasm", str(Path(wasm_path).resolve())]
    if not check:
        cmd.append("--no-check")
    if bare:
        cmd.append("--bare")
    if out_file is not None:
        cmd += ["--out", str(out_file)]
    proc = subprocess.run(cmd, input=policy_text, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RenderError(proc.stderr.strip() or f"{cmd[0]} exited with {proc.returncode}")
    return proc.stdout


def ecds_resource(policy_text: str, wasm_path: str | os.PathLike[str]) -> dict:
    """The ECDS discovery document ({"resources": [TypedExtensionConfig]}) for one plugin
    configuration, as the CLI renders it (not checked: see render_with_cli)."""
    return json.loads(render_with_cli(policy_text, wasm_path))


def render(
    policy_text: str,
    wasm_path: str | os.PathLike[str],
    out_file: str | os.PathLike[str],
    check: bool = False,
) -> None:
    """Write the ECDS file for this plugin configuration atomically (the CLI's --out)."""
    render_with_cli(policy_text, wasm_path, check=check, out_file=out_file)


def write_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write text to path via a temp file in the same directory and rename(2) (used for the
    bootstraps scripts/stack.py writes)."""
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
