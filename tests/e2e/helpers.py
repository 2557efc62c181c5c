"""Test helpers: SDK sessions with a response recorder, raw HTTP for what no SDK sends,
audit-log polling with schema validation. Every wait is bounded."""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import httpx2
import jsonschema
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "schemas" / "audit-record.schema.json"

ACCEPT = "application/json, text/event-stream"
PROTOCOL_VERSION = "2025-06-18"
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
HTTP_TIMEOUT = httpx2.Timeout(30.0)

# Error codes (the filter's, and JSON-RPC 2.0's).
DENIED = -32003
RATE_LIMITED = -32004
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602

AUDIT_FIELDS = {
    "timestamp", "agent_id", "identity_source", "identity_error", "server_id", "method", "http_method", "tool_name", "prompt_name",
    "resource_uri", "request_id", "input_hash", "decision", "output_status", "error_code",
    "latency_ms", "http_status", "session_id", "trace_id", "policy_name", "policy_version",
    "protocol_version",
}  # fmt: skip


# Present only on some records: "correlated" on the outcome record of a deferred call; "refusal"
# on a call whose list response mcp-guard refused; "params" on a tools/call with param_tags;
# "round_opens" on a call answered input_required, "round_continues" and "round_matched" on a
# multi round-trip retry.
OPTIONAL_AUDIT_FIELDS = {
    "correlated", "refusal", "params", "round_opens", "round_continues", "round_matched", "drift", "drift_truncated",
}

# The record the shipped Envoy configs print for a request mcp-guard never saw (Envoy refused
# it before the filter ran): the audit fields, plus why Envoy answered as it did.
REFUSED_FIELDS = AUDIT_FIELDS | {"reason", "response_flags", "response_code_details"}
# Its fields that are null by construction (the client's bytes are never printed there).
REFUSED_NULL_FIELDS = AUDIT_FIELDS - {"timestamp", "decision", "output_status", "latency_ms", "http_status"}


def sha256_tag(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- audit log

_validator: jsonschema.protocols.Validator | None = None


def schema_validator() -> jsonschema.protocols.Validator:
    global _validator
    if _validator is None:
        schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
        _validator = jsonschema.Draft202012Validator(schema)
    return _validator


def check_record(record: dict) -> dict:
    """Schema (Draft 2020-12) + the fixed shape every record must have."""
    errors = sorted(schema_validator().iter_errors(record), key=lambda e: list(e.path))
    assert not errors, f"audit record fails the schema: {[e.message for e in errors]}\n{record}"
    assert set(record) >= AUDIT_FIELDS, f"missing fields {AUDIT_FIELDS - set(record)} in {record}"
    if is_refused(record):
        assert set(record) == REFUSED_FIELDS, f"unexpected fields {set(record) ^ REFUSED_FIELDS} in {record}"
        assert all(record[k] is None for k in REFUSED_NULL_FIELDS), record
    assert TIMESTAMP_RE.match(record["timestamp"]), record["timestamp"]
    assert isinstance(record["latency_ms"], (int, float)) and record["latency_ms"] >= 0, record
    return record


def is_refused(record: dict) -> bool:
    """The fixed record of a request Envoy refused before mcp-guard ran (docs/audit-record.md
    "Requests Envoy refused")."""
    return record.get("decision") == "refused"


def access_log_objects(stack: Any) -> list[dict]:
    """Every line of the stack's access log parsed as JSON; each must be one JSON object (no
    blank line, no "-", nothing `jq` would stop at)."""
    objects = []
    for n, line in enumerate(stack.access_log.read_text(encoding="utf-8").splitlines(), 1):
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"access log line {n} is not JSON ({exc}): {line!r}") from None
        assert isinstance(value, dict), f"access log line {n} is not a JSON object: {line!r}"
        objects.append(value)
    return objects


def assert_access_log_valid(stack: Any, refused: int | None = 0, minimum: int = 3) -> list[dict]:
    """Every line of the stack's access log is one JSON object, a schema-valid record with
    exactly the documented fields (check_record); at least `minimum` lines; exactly `refused`
    of them (any number if None) are the record of a request Envoy refused before mcp-guard ran
    (the other tests send only what Envoy accepts, so by default every line is mcp-guard's own
    record). Returns the records."""
    records = access_log_objects(stack)
    assert len(records) >= minimum, f"{len(records)} access-log line(s), expected at least {minimum}"
    for n, record in enumerate(records, 1):
        try:
            check_record(record)
        except AssertionError as exc:
            raise AssertionError(f"{stack.access_log} line {n}: {exc}") from None
        if not is_refused(record):
            extra = set(record) - AUDIT_FIELDS
            assert extra <= OPTIONAL_AUDIT_FIELDS, f"line {n}: unexpected fields {extra}"
    got = [r for r in records if is_refused(r)]
    if refused is not None:
        assert len(got) == refused, f"expected {refused} refused-request record(s), found {len(got)}: {got}"
    return records


def validate_at_teardown(stack: Any, refused: int | None = 0) -> None:
    """What every stack fixture runs after its stack stopped (Envoy flushed and closed the log):
    the whole access log is validated (assert_access_log_valid), so every record any test on
    the stack produced was checked against the schema. A failure is an error at teardown."""
    assert_access_log_valid(stack, refused=refused, minimum=0)


def wait_for_audit(stack: Any, match: Callable[[dict], bool], count: int = 1, timeout: float = 10.0) -> list[dict]:
    """Poll the access log until `count` records satisfy `match`; return them (schema-checked).

    Fails if more than `count` match, so a duplicated record is caught. `count` must be at least
    1: "no such record" cannot be waited for (the wait would end at once); check it directly,
    after waiting for a record written at the same time or later.
    """
    if count < 1:
        raise ValueError("wait_for_audit(count=0) does not wait: check the absence directly, "
                         "after a record that proves the line was written")
    deadline = time.monotonic() + timeout
    found: list[dict] = []
    while True:
        found = [r for r in stack.audit_records() if match(r)]
        if len(found) >= count or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    assert len(found) == count, f"expected {count} matching audit record(s), found {len(found)}: {found}"
    return [check_record(r) for r in found]


def audit_for(stack: Any, count: int = 1, timeout: float = 10.0, **fields: Any) -> list[dict]:
    """wait_for_audit for records whose fields equal the given values."""
    return wait_for_audit(stack, lambda r: all(r.get(k) == v for k, v in fields.items()), count, timeout)


def upstream_requests(stack: Any) -> int:
    """Envoy's count of requests sent to the demo server (cluster mcp_demo)."""
    text = stack.admin_get(r"/stats?filter=^cluster\.mcp_demo\.upstream_rq_total$")
    name, _, value = text.partition(": ")
    assert name == "cluster.mcp_demo.upstream_rq_total", text
    return int(value)


# --------------------------------------------------------------------------- configuration loads

# mcp-guard's own counters of plugin configurations accepted / refused by on_configure
# (src/metrics.rs; Envoy prefixes stats defined by a Wasm module with `wasmcustom.`).
CONFIG_LOADS = "wasmcustom.mcp_guard.config.loads"
CONFIG_REJECTS = "wasmcustom.mcp_guard.config.rejects"
# Envoy's counters of the ECDS subscription of the filter (file or gRPC alike).
ECDS_SUCCESS = "extension_config_discovery.http_filter.mcp-guard.update_success"
ECDS_REJECTED = "extension_config_discovery.http_filter.mcp-guard.update_rejected"
CONFIG_TIMEOUT = 15.0  # seconds for Envoy and every worker to take (or refuse) a pushed config
CONFIG_POLL = 0.05  # seconds between two reads of the admin /stats
_CONFIG_STATS = (CONFIG_LOADS, CONFIG_REJECTS, ECDS_SUCCESS, ECDS_REJECTED)


def config_counters(stack: Any) -> dict[str, int]:
    """The four counters above from Envoy's admin /stats (absent = 0: Envoy creates a Wasm
    counter only when the module first increments it)."""
    text = stack.admin_get("/stats?filter=" + "|".join("^" + re.escape(n) + "$" for n in _CONFIG_STATS))
    out = dict.fromkeys(_CONFIG_STATS, 0)
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if name in out:
            out[name] = int(value)
    return out


def loads_per_config(stack: Any) -> int:
    """How far CONFIG_LOADS rises for one accepted configuration: on_configure runs in Envoy's
    main-thread VM that checks the configuration before accepting it, in the main thread's own
    thread-local plugin, and in the plugin of each of the `--concurrency` workers (seen with
    Envoy 1.40: +3, +4, +5 per push with 1, 2, 3 workers). A rejected configuration is refused
    by the first of these: CONFIG_REJECTS rises by 1 and no worker sees it."""
    return int(stack.concurrency) + 2


_pushes = itertools.count(1)


def config_text(policy: dict) -> str:
    """`policy` as plugin-configuration JSON whose text differs from every earlier push of this
    test process with the same content: the top-level members in the next of their orders
    (the CLI keeps member order; the meaning is the same). Envoy's Wasm host reuses a thread's
    plugin whose configuration text is identical to the new one while anything still holds it
    (proxy-wasm-cpp-host keys thread-local plugins by their configuration), and then runs no
    on_configure there; a distinct text makes every thread load the pushed configuration, so
    config_change can count the loads exactly. The initial order is never repeated."""
    variants = math.factorial(len(policy))
    index = 1 + (next(_pushes) - 1) % (variants - 1) if variants > 1 else 0
    keys, order = list(policy), []
    for i in range(len(keys), 0, -1):  # the index-th permutation (factorial number system)
        pick, index = divmod(index, math.factorial(i - 1))
        order.append(keys.pop(pick))
    return json.dumps({k: policy[k] for k in order})


def push_policy(stack: Any, policy: dict, accepted: bool = True) -> None:
    """Write `policy` (config_text) to a stack's ECDS file; return once every worker runs it
    (accepted) or the filter refused it (rejected): config_change."""
    with config_change(stack, accepted=accepted):
        stack.push_policy(config_text(policy))


@contextmanager
def config_change(stack: Any, accepted: bool = True, timeout: float = CONFIG_TIMEOUT) -> Iterator[None]:
    """Wraps the push of one plugin configuration (ECDS file or xDS): after the body, waits until
    Envoy's subscription counted it (update_success / update_rejected +1) and, for an accepted
    one, every worker has loaded it (CONFIG_LOADS + loads_per_config), for a rejected one the
    filter refused it (CONFIG_REJECTS + 1, CONFIG_LOADS unchanged). The counters must reach
    exactly those values (a counter past its target fails at once), within `timeout` seconds,
    polled at most timeout / CONFIG_POLL + 1 times. Then every new stream on every worker runs
    the new configuration (accepted) or still the old one (rejected)."""
    before = config_counters(stack)
    yield
    want = dict(before)
    if accepted:
        want[CONFIG_LOADS] += loads_per_config(stack)
        want[ECDS_SUCCESS] += 1
    else:
        want[CONFIG_REJECTS] += 1
        want[ECDS_REJECTED] += 1
    now = before
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / CONFIG_POLL) + 1):
        now = config_counters(stack)
        over = {k: (now[k], want[k]) for k in want if now[k] > want[k]}
        assert not over, f"config counters past their target (now, want): {over}; before {before}"
        if now == want or time.monotonic() >= deadline:
            break
        time.sleep(CONFIG_POLL)
    what = "accepted by Envoy and loaded by every worker" if accepted else "rejected by the filter"
    assert now == want, f"the pushed config was not {what} within {timeout}s: before {before}, now {now}, want {want}"


# --------------------------------------------------------------------------- SDK


@dataclass
class Seen:
    method: str
    status: int
    headers: dict[str, str]


@dataclass
class Recorder:
    """Every HTTP response the SDK's httpx2 client received (status and headers)."""

    responses: list[Seen] = field(default_factory=list)

    async def hook(self, response: httpx2.Response) -> None:
        self.responses.append(
            Seen(response.request.method, response.status_code, {k.lower(): v for k, v in response.headers.items()})
        )

    @property
    def session_id(self) -> str | None:
        for r in self.responses:
            if "mcp-session-id" in r.headers:
                return r.headers["mcp-session-id"]
        return None


@dataclass
class Conn:
    session: ClientSession
    recorder: Recorder

    @property
    def session_id(self) -> str | None:
        return self.recorder.session_id


@asynccontextmanager
async def mcp_session(url: str, agent: str | None = None, headers: dict[str, str] | None = None) -> AsyncIterator[Conn]:
    """An initialized official-SDK session through Envoy; DELETE is sent on exit (SDK default)."""
    all_headers = {} if agent is None else {"x-agent-id": agent}
    all_headers.update(headers or {})
    recorder = Recorder()
    async with httpx2.AsyncClient(
        headers=all_headers, timeout=HTTP_TIMEOUT, event_hooks={"response": [recorder.hook]}
    ) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield Conn(session, recorder)


# --------------------------------------------------------------------------- raw HTTP


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    messages: list[Any]

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def single(self) -> dict:
        assert len(self.messages) == 1, f"expected one JSON-RPC message, got {self.messages!r} ({self.body!r})"
        return self.messages[0]

    def jsonrpc_error(self, status: int, request_id: Any, code: int) -> dict:
        """Assert this is the filter's refusal shape: HTTP `status`, application/json, one
        JSON-RPC error object carrying `request_id` and `code` with a message. Returns it."""
        assert self.status == status, (self.status, self.body[:300])
        assert self.content_type.split(";")[0] == "application/json", self.content_type
        msg = self.single()
        assert msg["jsonrpc"] == "2.0"
        assert msg["id"] == request_id
        assert msg["error"]["code"] == code
        assert isinstance(msg["error"]["message"], str) and msg["error"]["message"]
        assert "result" not in msg
        return msg


def parse_messages(content_type: str, body: bytes) -> list[Any]:
    """JSON-RPC messages in a JSON body or in the data: fields of an SSE body."""
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json":
        return [json.loads(body)] if body.strip() else []
    if media == "text/event-stream":
        out = []
        for event in re.split(r"\r\n\r\n|\n\n|\r\r", body.decode("utf-8")):
            data = [ln[5:].lstrip(" ") for ln in re.split(r"\r\n|\n|\r", event) if ln.startswith("data:")]
            text = "\n".join(data).strip()
            if text:
                out.append(json.loads(text))
        return out
    return []


async def raw_request(
    url: str, method: str = "POST", body: bytes | None = None, headers: dict[str, str] | None = None
) -> RawResponse:
    base = {"accept": ACCEPT}
    if body is not None:
        base["content-type"] = "application/json"
    base.update(headers or {})
    async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        resp = await http.request(method, url, content=body, headers=base)
        data = await resp.aread()
    hdrs = {k.lower(): v for k, v in resp.headers.items()}
    return RawResponse(resp.status_code, hdrs, data, parse_messages(hdrs.get("content-type", ""), data))


class RawSession:
    """An MCP session spoken byte by byte (for exact input_hash, ids, spoofed headers)."""

    def __init__(self, url: str, agent: str | None = None, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = {} if agent is None else {"x-agent-id": agent}
        self.headers.update(headers or {})
        self.session_id: str | None = None

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        h = dict(self.headers)
        if self.session_id:
            h["mcp-session-id"] = self.session_id
            h["mcp-protocol-version"] = PROTOCOL_VERSION
        h.update(extra or {})
        return h

    async def post(self, body: bytes | str | dict, headers: dict[str, str] | None = None) -> RawResponse:
        if isinstance(body, dict):
            body = json.dumps(body, separators=(",", ":"))
        if isinstance(body, str):
            body = body.encode("utf-8")
        return await raw_request(self.url, "POST", body, self._headers(headers))

    async def initialize(self, request_id: Any = 1, headers: dict[str, str] | None = None) -> RawResponse:
        resp = await self.post(
            {
                "jsonrpc": "2.0", "id": request_id, "method": "initialize",
                "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                           "clientInfo": {"name": "mcp-guard-e2e", "version": "0"}},
            },
            headers,
        )  # fmt: skip
        assert resp.status == 200, resp
        self.session_id = resp.headers.get("mcp-session-id")
        assert self.session_id, f"no Mcp-Session-Id in {resp.headers}"
        assert resp.single()["id"] == request_id
        note = await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert note.status == 202, note
        return resp

    async def delete(self, headers: dict[str, str] | None = None) -> RawResponse:
        return await raw_request(self.url, "DELETE", None, self._headers(headers))


def tools_call_body(request_id: Any, name: str, arguments_json: str) -> bytes:
    """A tools/call body with `arguments_json` spliced in verbatim (its exact bytes are hashed)."""
    rid = json.dumps(request_id)
    return (
        f'{{"jsonrpc":"2.0","id":{rid},"method":"tools/call",'
        f'"params":{{"name":{json.dumps(name)},"arguments":{arguments_json}}}}}'
    ).encode("utf-8")
