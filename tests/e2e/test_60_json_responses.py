"""The same calls when the server answers POSTs with `application/json` instead of SSE: the
filter correlates the JSON body's response with the request and audits its outcome."""
from __future__ import annotations

import pytest
from conftest import start_stack
from helpers import DENIED, assert_access_log_valid, audit_for, mcp_session
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, base_policy: dict):
    """A second stack whose demo server runs with --json-response (module-scoped)."""
    yield from start_stack(tmp_path_factory, base_policy, server_args=["--json-response"])


async def test_json_responses_are_correlated_and_audited(stack):
    async with mcp_session(stack.url, agent="demo-agent") as conn:
        echoed = await conn.session.call_tool("echo", {"text": "json body"})
        failed = await conn.session.call_tool("fail", {"reason": "json"})
        with pytest.raises(MCPError) as denied:
            await conn.session.call_tool("delete_repo", {"name": "x"})
        sid = conn.session_id
    assert [c.text for c in echoed.content] == ["json body"]
    assert failed.is_error is True
    assert denied.value.code == DENIED

    # Every POST answer the SDK read was application/json, none an event stream.
    posts = [r for r in conn.recorder.responses if r.method == "POST" and r.status == 200]
    assert posts and all(r.headers["content-type"].startswith("application/json") for r in posts)

    (rec,) = audit_for(stack, agent_id="demo-agent", session_id=sid, tool_name="echo")
    assert (rec["output_status"], rec["error_code"], rec["http_status"]) == ("success", None, 200)
    (rec,) = audit_for(stack, agent_id="demo-agent", session_id=sid, tool_name="fail")
    assert (rec["output_status"], rec["error_code"]) == ("tool_error", None)
    (rec,) = audit_for(stack, agent_id="demo-agent", session_id=sid, method="initialize")
    assert rec["output_status"] == "success"


async def test_a_jsonrpc_error_from_the_server_is_audited_with_its_code(stack):
    # The demo server does not offer completion/complete: it answers with a JSON-RPC error.
    async with mcp_session(stack.url, agent="admin-agent") as conn:
        await conn.session.send_ping()
        with pytest.raises(MCPError) as excinfo:
            await conn.session.complete(  # completion is not offered by the demo server
                ref={"type": "ref/prompt", "name": "greet"}, argument={"name": "name", "value": "a"}
            )
        sid = conn.session_id
    (rec,) = audit_for(stack, agent_id="admin-agent", session_id=sid, method="ping")
    assert (rec["output_status"], rec["error_code"]) == ("success", None)
    code = excinfo.value.code
    (rec,) = audit_for(stack, agent_id="admin-agent", session_id=sid, method="completion/complete")
    assert (rec["output_status"], rec["error_code"], rec["http_status"]) == ("error", code, 200)


def test_every_line_of_this_stacks_access_log_is_a_schema_valid_record(stack):
    # Runs after the tests above (file order) on this module's own stack.
    assert_access_log_valid(stack)
