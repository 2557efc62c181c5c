-- wrk script for `make bench`: POSTs one MCP body read from $BENCH_BODY, with the headers a
-- Streamable HTTP client sends; $BENCH_RESP (x-bench-resp) picks the upstream's canned answer.
-- done() prints one line "WRK_JSON {...}" that bench/run.py reads (latencies in microseconds).
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["X-Agent-Id"] = os.getenv("BENCH_AGENT") or "demo-agent"
wrk.headers["X-Bench-Resp"] = os.getenv("BENCH_RESP")
wrk.headers["MCP-Protocol-Version"] = os.getenv("BENCH_PROTOCOL") or "2025-06-18"
-- MCP 2026-07-28 routing headers, for the workloads that model such a client.
if os.getenv("BENCH_MCP_METHOD") then
  wrk.headers["Mcp-Method"] = os.getenv("BENCH_MCP_METHOD")
  wrk.headers["Mcp-Name"] = os.getenv("BENCH_MCP_NAME")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
