"""A list response reaches the agent curated, or not at all.

The raw upstream (tests/e2e/raw_upstream.py, `x-list-scenario`) answers tools/list with the
tools echo and delete_repo in a form a client still reads but mcp-guard cannot curate as it
is: not UTF-8, a byte order mark, UTF-16, another content type (a prefix variant, text/plain,
none, two headers, two types merged), bytes after the document, `tools` as an object, an id
spelled otherwise (`"1"` for `1`, `1.0`, `1e0`) or answering nothing (on SSE, which the Python
SDK client takes as the request's answer whatever its id). The agent (the `default` rule set)
may use echo only.

Each answer is read three ways: the raw HTTP body with `json.loads` and lenient decoders (UTF-8
with replacement, UTF-16, a first-document reader), the official Python SDK 2.x client
(ClientSession.list_tools) and the official TypeScript SDK client (Client.listTools). None may
show delete_repo; the refusal is a JSON-RPC -32603 per request, audited `upstream_error` with
error_code -32603 and `refusal` naming the reason, and counted as `mcp_guard_refusals{mcp_reason="response_..."}`. A readable
list is curated and its `cacheScope: "public"` leaves as `"private"`. The same lists answered on
a session's GET stream (a tools/list POST answered 202) are curated or refused there.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from conftest import start_stack
from helpers import ACCEPT, HTTP_TIMEOUT, assert_access_log_valid, wait_for_audit
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.anyio

E2E = Path(__file__).resolve().parent
RAW_UPSTREAM = E2E / "raw_upstream.py"
TS_DIR = E2E.parents[1] / "examples" / "sdk" / "ts"
DENIED_TOOL = "delete_repo"
SDK_TIMEOUT = 10.0
INTERNAL_ERROR = -32603

# scenario, HTTP status the client sees, refusal reason
REFUSED = [
    ("bad-utf8-json", 200, "response_utf8"),
    ("bad-utf8-sse", 200, "response_utf8"),
    ("bom-json", 200, "response_utf8"),
    ("charset-utf16", 502, "response_charset"),
    ("ctype-prefix", 502, "response_content_type"),
    ("ctype-text-plain", 502, "response_content_type"),
    ("ctype-missing", 502, "response_content_type"),
    ("ctype-two-headers", 502, "response_content_type"),
    ("ctype-merged", 502, "response_content_type"),
    ("trailing-garbage", 200, "response_trailing"),
    ("second-document", 200, "response_trailing"),
    ("tools-object", 200, "response_shape"),
    ("id-string", 200, "response_id"),
    ("id-float", 200, "response_id"),
    ("id-exponent", 200, "response_id"),
    ("id-other-sse", 200, "response_id"),
]
SCENARIOS = [name for name, _, _ in REFUSED]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, base_policy):
    cmd = [sys.executable, str(RAW_UPSTREAM), "--host", "{host}", "--port", "{port}", "--call-log", "{call_log}"]
    yield from start_stack(tmp_path_factory, base_policy, server_command=cmd)


def texts(body: bytes) -> list[str]:
    """`body` as every decoder a client might use reads it."""
    out = [body.decode("utf-8", errors="replace"), body.decode("latin-1")]
    for codec in ("utf-16", "utf-16-le", "utf-16-be"):
        out.append(body.decode(codec, errors="ignore"))
    return out


def json_docs(body: bytes) -> list[Any]:
    """What `json.loads` (which detects UTF-16 and a BOM in bytes) and a first-document reader
    make of the body and of each SSE data field in it."""
    docs: list[Any] = []
    candidates = [body] + [m.group(1) for m in re.finditer(rb"data: ?([^\r\n]*)", body)]
    for raw in candidates:
        try:
            docs.append(json.loads(raw))
        except ValueError:
            pass
        text = raw.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
        try:
            docs.append(json.JSONDecoder().raw_decode(text)[0])
        except ValueError:
            pass
    unique: dict[str, Any] = {}
    for doc in docs:
        unique.setdefault(json.dumps(doc, sort_keys=True), doc)
    return list(unique.values())


def assert_no_denied_tool(what: str, body: bytes) -> None:
    for text in texts(body):
        assert DENIED_TOOL not in text, (what, body[:300])
    for doc in json_docs(body):
        assert DENIED_TOOL not in json.dumps(doc), (what, doc)


def list_body(rid: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/list"}).encode()


async def raw_list(stack, agent: str, scenario: str, rid: Any = 7) -> httpx2.Response:
    headers = {"accept": ACCEPT, "content-type": "application/json", "x-agent-id": agent,
               "x-list-scenario": scenario}  # fmt: skip
    async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        resp = await http.post(stack.url, content=list_body(rid), headers=headers)
        await resp.aread()
    return resp


def refusal(resp: httpx2.Response) -> dict:
    """The JSON-RPC error the client got (JSON body, or the data of the one SSE event)."""
    ctype = resp.headers.get("content-type", "")
    body = resp.content
    if ctype.startswith("text/event-stream"):
        (data,) = re.findall(rb"^data: (.*)$", body, re.M)
        body = data
    else:
        assert ctype == "application/json", ctype
    return json.loads(body)


def refusal_counts(stack) -> dict[str, int]:
    """mcp_guard_refusals by reason (/stats/prometheus, summed over the workers)."""
    prom = stack.admin_get("/stats/prometheus")
    return {m[1]: int(m[2]) for m in re.finditer(
        r'^mcp_guard_refusals\{[^}]*mcp_reason="([^"]+)"[^}]*\} (\d+)$', prom, re.M)}  # fmt: skip


def moved(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in before.keys() | after.keys()
            if after.get(k, 0) != before.get(k, 0)}  # fmt: skip


@pytest.mark.parametrize(("scenario", "status", "reason"), REFUSED, ids=SCENARIOS)
async def test_a_list_response_that_cannot_be_curated_is_refused_raw(stack, scenario, status, reason):
    agent = f"lst-raw-{scenario}"
    before = refusal_counts(stack)
    resp = await raw_list(stack, agent, scenario)
    assert_no_denied_tool(scenario, resp.content)
    assert resp.status_code == status, (resp.status_code, resp.content[:300])
    err = refusal(resp)
    assert (err["id"], err["error"]["code"]) == (7, INTERNAL_ERROR), err
    assert "result" not in err
    (rec,) = wait_for_audit(stack, lambda r: r["agent_id"] == agent)
    assert (rec["method"], rec["output_status"], rec["error_code"], rec["http_status"], rec["refusal"]) == (
        "tools/list", "upstream_error", INTERNAL_ERROR, status, reason), rec  # fmt: skip
    # Counted once, under its reason only (the record is written at the end of the stream,
    # after the count).
    assert moved(before, refusal_counts(stack)) == {reason: 1}


async def test_a_readable_list_is_curated_and_leaves_private(stack):
    for scenario in ("plain", "plain-sse", "cache-public"):
        resp = await raw_list(stack, f"lst-ok-{scenario}", scenario)
        assert resp.status_code == 200
        assert_no_denied_tool(scenario, resp.content)
        (doc,) = [d for d in json_docs(resp.content) if isinstance(d, dict)][:1]
        assert [t["name"] for t in doc["result"]["tools"]] == ["echo"], doc
        if scenario == "cache-public":
            assert (doc["result"]["cacheScope"], doc["result"]["ttlMs"]) == ("private", 60000), doc


async def python_sdk_list(url: str, agent: str, scenario: str) -> str:
    """What the Python SDK 2.x client's list_tools gave: the tool names, or the error."""
    headers = {"x-agent-id": agent, "x-list-scenario": scenario}
    try:
        with anyio.fail_after(SDK_TIMEOUT):
            async with httpx2.AsyncClient(headers=headers, timeout=SDK_TIMEOUT) as http:
                async with streamable_http_client(url, http_client=http) as streams:
                    async with ClientSession(streams[0], streams[1]) as session:
                        await session.initialize()
                        listed = await session.list_tools()
                        return "tools: " + json.dumps(listed.model_dump(mode="json", by_alias=True))
    except BaseException as exc:  # noqa: BLE001 - any failure is "no list"; its text is checked too
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return f"error: {exc!r}"


async def test_the_python_sdk_client_never_lists_a_denied_tool(stack):
    got = {s: await python_sdk_list(stack.url, f"lst-py-{s}", s) for s in SCENARIOS + ["cache-public"]}
    leaked = {s: what for s, what in got.items() if DENIED_TOOL in what}
    assert not leaked, sorted(leaked)
    assert got["cache-public"].startswith("tools: ") and '"echo"' in got["cache-public"], got


TS_LIST = """
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
const [url, agent, ...scenarios] = process.argv.slice(1);
const out = {};
for (const scenario of scenarios) {
  const headers = { 'x-agent-id': agent + scenario, 'x-list-scenario': scenario };
  const client = new Client({ name: 'mcp-guard-e2e-lists', version: '0.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
  try {
    await client.connect(transport, { timeout: 8000 });
    const listed = await client.listTools(undefined, { timeout: 8000 });
    out[scenario] = 'tools: ' + JSON.stringify(listed);
  } catch (e) {
    out[scenario] = 'error: ' + String(e && e.stack || e);
  }
  try { await client.close(); } catch {}
}
console.log(JSON.stringify(out));
"""


def test_the_typescript_sdk_client_never_lists_a_denied_tool(stack):
    scenarios = SCENARIOS + ["cache-public"]
    proc = subprocess.run(
        ["node", "--input-type=module", "-e", TS_LIST, stack.url, "lst-ts-", *scenarios],
        cwd=TS_DIR, capture_output=True, text=True, timeout=20 + 10 * len(scenarios),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(got) == sorted(scenarios), got
    leaked = {s: what for s, what in got.items() if DENIED_TOOL in what}
    assert not leaked, sorted(leaked)
    assert got["cache-public"].startswith("tools: ") and '"echo"' in got["cache-public"], got


# list scenario carried on the GET stream, whether it answers the pending request (claimed),
# the refusal reason (None: curated)
GET_STREAM = [
    ("plain", True, None),
    ("cache-public", True, None),
    ("second-document", True, "response_trailing"),
    ("tools-object", True, "response_shape"),
    ("id-float", False, "response_id"),
    ("id-string", False, "response_id"),
]


@pytest.mark.parametrize(("scenario", "claimed", "reason"), GET_STREAM, ids=[g[0] for g in GET_STREAM])
async def test_a_list_answered_on_the_sessions_get_stream_is_curated_or_refused(stack, scenario, claimed, reason):
    """tools/list POSTed in a session is answered 202; its answer comes on the session's GET
    stream (as on the legacy transport), where other requests' answers pass too."""
    agent, session = f"lst-get-{scenario}", f"sess-lst-{scenario}"
    headers = {"accept": ACCEPT, "content-type": "application/json", "x-agent-id": agent,
               "mcp-session-id": session, "x-list-scenario": "accepted"}  # fmt: skip
    async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        post = await http.post(stack.url, content=list_body(4), headers=headers)
        assert post.status_code == 202, (post.status_code, post.content)
        (rec,) = wait_for_audit(stack, lambda r: r["agent_id"] == agent)
        assert rec["output_status"] == "deferred", rec
        events = json.dumps([{"id": 9}, {"id": 4, "list": scenario}], separators=(",", ":"))
        get = await http.get(stack.url + "?events=" + urllib.parse.quote(events),
                             headers={"accept": "text/event-stream", "x-agent-id": agent, "mcp-session-id": session})  # fmt: skip
        await get.aread()
    assert get.status_code == 200
    assert_no_denied_tool(scenario, get.content)
    docs = [d for d in json_docs(get.content) if isinstance(d, dict)]
    assert docs[0]["id"] == 9 and docs[0]["result"]["content"][0]["text"] == "on the GET stream", docs
    if reason is None:
        (doc,) = [d for d in docs if d.get("id") == 4]
        assert [t["name"] for t in doc["result"]["tools"]] == ["echo"], doc
        if scenario == "cache-public":
            assert doc["result"]["cacheScope"] == "private", doc
    else:
        (err,) = [d for d in docs if "error" in d]
        assert err["error"]["code"] == INTERNAL_ERROR, err
    if claimed:
        (corr,) = wait_for_audit(stack, lambda r: r["agent_id"] == agent and r.get("correlated") is True)
        want = ("success", None, None) if reason is None else ("upstream_error", INTERNAL_ERROR, reason)
        got = (corr["method"], corr["output_status"], corr["error_code"], corr.get("refusal"))
        assert got == ("tools/list", *want), corr
    # The 202's own body (no SDK reads it) is dropped, so no reader finds a list in it.
    assert post.content == b"", post.content


def test_every_line_of_this_stacks_access_log_is_a_schema_valid_record(stack):
    assert_access_log_valid(stack)
