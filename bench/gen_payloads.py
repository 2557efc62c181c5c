#!/usr/bin/env python3
"""Writes the request and response bodies of `make bench` (deterministic, no randomness).

Small bodies are committed under bench/data/ (the criterion benches in benches/ read them too);
the 10 MB SSE tool result is written only into the run directory (--big-out).

    python3 bench/gen_payloads.py --out bench/data [--big-out DIR]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

# The demo policy lets demo-agent call echo, add, search and fail: four of the 100 tools below
# survive curation for it.
DEMO_TOOLS = ["echo", "add", "search", "fail"]
VERBS = ["create", "get", "list", "update", "delete", "search", "archive", "merge", "comment", "assign"]
NOUNS = ["issue", "pull_request", "repository", "branch", "release", "workflow", "deployment",
         "secret", "webhook", "milestone"]


def call_body(req_id: int, tool: str = "echo", arg_bytes: int = 1024) -> dict:
    """A tools/call whose `arguments` serialize to about `arg_bytes` bytes."""
    text = ("The quick brown fox jumps over the lazy dog. " * ((arg_bytes // 45) + 1))
    args = {"text": "", "mode": "verbatim", "repeat": 1}
    overhead = len(json.dumps(args, separators=(",", ":")))
    args["text"] = text[: max(0, arg_bytes - overhead)]
    return {"jsonrpc": "2.0", "id": req_id, "method": "tools/call",
            "params": {"name": tool, "arguments": args, "_meta": {"progressToken": f"bench-{req_id}"}}}


def call_result(req_id: int, text: str) -> dict:
    return {"jsonrpc": "2.0", "id": req_id,
            "result": {"content": [{"type": "text", "text": text}], "isError": False}}


def tool_entry(i: int) -> dict:
    if i < len(DEMO_TOOLS):
        name = DEMO_TOOLS[i]
    else:
        j = i - len(DEMO_TOOLS)
        name = f"{VERBS[j % 10]}_{NOUNS[(j // 10) % 10]}" + ("" if j < 100 else f"_{j}")
    words = name.replace("_", " ")
    return {
        "name": name,
        "title": words.title(),
        "description": (f"{words.capitalize()} in the connected project. Use this tool when the user "
                        f"asks to {words}; it returns the affected object as JSON, including its id, "
                        f"URL, timestamps and author. Fails when the object does not exist."),
        "inputSchema": {
            "type": "object",
            "properties": {
                "owner": {"type": "string", "description": "Account or organization that owns the repository."},
                "repo": {"type": "string", "description": "Repository name, without the owner."},
                "number": {"type": "integer", "description": "Issue or pull request number.", "minimum": 1},
                "body": {"type": "string", "description": "Markdown text; at most 65536 characters."},
            },
            "required": ["owner", "repo"],
            "additionalProperties": False,
        },
        "annotations": {"readOnlyHint": name.startswith(("get", "list", "search")),
                        "destructiveHint": name.startswith("delete")},
    }


def sse(message: dict | list) -> bytes:
    return b"event: message\ndata: " + json.dumps(message, separators=(",", ":")).encode() + b"\n\n"


def dump(path: Path, obj) -> None:
    data = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode()
    path.write_bytes(data)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--big-out", type=Path)
    ap.add_argument("--big-bytes", type=int, default=10 * 1024 * 1024)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    call = call_body(1)
    dump(a.out / "call_request.json", call)
    # A 2026-07-28 request carries its revision and the client's capabilities in `_meta`
    # (SEP-2575); mcp-guard refuses a 2026 header without them (-32602).
    modern = call_body(1)
    modern["params"]["_meta"].update({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                      "io.modelcontextprotocol/clientCapabilities": {}})
    dump(a.out / "call_request_2026.json", modern)
    result = call_result(1, "echo: " + call["params"]["arguments"]["text"])
    dump(a.out / "call_response.json", result)
    dump(a.out / "call_response.sse", sse(result))
    dump(a.out / "list_request.json", {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
    tools = [tool_entry(i) for i in range(100)]
    listing = {"jsonrpc": "2.0", "id": 1, "result": {"tools": tools, "nextCursor": None}}
    del listing["result"]["nextCursor"]
    dump(a.out / "list_response.json", listing)
    dump(a.out / "list_response.sse", sse(listing))
    batch = [call_body(i, arg_bytes=100) for i in range(1, 11)]
    dump(a.out / "batch_request.json", batch)
    dump(a.out / "batch_response.json", [call_result(i, f"echo {i}") for i in range(1, 11)])
    if a.big_out:
        a.big_out.mkdir(parents=True, exist_ok=True)
        head = b'event: message\ndata: {"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"'
        tail = b'"}],"isError":false}}\n\n'
        filler = (b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/" * (a.big_bytes // 64 + 1))
        filler = filler[: a.big_bytes - len(head) - len(tail)]
        (a.big_out / "big_response.sse").write_bytes(head + filler + tail)


if __name__ == "__main__":
    main()
