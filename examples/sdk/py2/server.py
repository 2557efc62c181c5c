#!/usr/bin/env python3
"""examples/demo_server.py (official MCP Python SDK 2.x) served over a chosen transport, for
the e2e SDK matrix: the same server object (build_server), tools and --call-log format.

    python examples/sdk/py2/server.py [--host 127.0.0.1] [--port 8000] [--call-log FILE]
                                      [--transport streamable-http|sse]
                                      [--modern-tools] [--public-lists-ttl-ms N]
                                      [--json-response] [--describe TOOL=TEXT ...] [--server-version V]

streamable-http serves /mcp exactly like demo_server.py (which also answers MCP 2026-07-28
clients: stateless requests, server/discover); sse serves the legacy HTTP+SSE transport
(2024-11-05): GET /sse, POST /messages/?session_id=... --modern-tools and
--public-lists-ttl-ms as in demo_server.py (confirm_delete, a multi-round-trip elicitation at
2026-07-28; run_query with an x-mcp-header property; public cache hints on the lists);
--json-response (streamable-http: POSTs answered application/json, not SSE), --describe TOOL=TEXT
(TOOL listed with this description: a changed definition for tool pins to catch) and
--server-version V (the serverInfo version) as in demo_server.py too.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # examples/
from demo_server import CallLog, add_definition_flags, build_server, parse_describe  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--transport", choices=["streamable-http", "sse"], default="streamable-http")
    parser.add_argument("--call-log", metavar="FILE")
    parser.add_argument("--modern-tools", action="store_true")
    parser.add_argument("--public-lists-ttl-ms", type=int, metavar="N")
    parser.add_argument("--json-response", action="store_true",
                        help="streamable-http: answer POSTs with application/json, not SSE")
    add_definition_flags(parser)
    args = parser.parse_args()
    try:
        server = build_server(CallLog(args.call_log), "WARNING", modern_tools=args.modern_tools,
                              public_lists_ttl_ms=args.public_lists_ttl_ms, describe=parse_describe(args.describe),
                              server_version=args.server_version)  # fmt: skip
    except ValueError as exc:
        parser.error(str(exc))
    if args.transport == "sse":
        if args.json_response:
            parser.error("--json-response is for --transport streamable-http")
        server.run(transport="sse", host=args.host, port=args.port)
    else:
        server.run(transport="streamable-http", host=args.host, port=args.port, streamable_http_path="/mcp",
                   json_response=args.json_response)  # fmt: skip


if __name__ == "__main__":
    main()
