#!/usr/bin/env node
// An MCP client on the official MCP TypeScript SDK (npm @modelcontextprotocol/sdk), for the
// e2e SDK matrix: runs one scenario through the SDK's Client and prints one JSON object with
// what it observed -- the same shape as examples/sdk/py_client.py (see its docstring).
//
//   node examples/sdk/ts/client.mjs --url URL [--agent ID] [--transport streamable-http|sse]
//                                   [--scenario basic] [--timeout 20] [--deny-timeout 3]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';

const SCENARIOS = {
  basic: [['echo', { text: 'hello from the matrix' }], ['fail', { reason: 'matrix says no' }],
    ['delete_repo', { name: 'prod' }]],
};

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    agent: { type: 'string' },
    transport: { type: 'string', default: 'streamable-http' },
    scenario: { type: 'string', default: 'basic' },
    timeout: { type: 'string', default: '20' },
    'deny-timeout': { type: 'string', default: '3' },
  },
});
if (!args.url || !SCENARIOS[args.scenario] || !['streamable-http', 'sse'].includes(args.transport)) {
  console.error('usage: client.mjs --url URL [--agent ID] [--transport streamable-http|sse] [--scenario basic]');
  process.exit(2);
}
const timeoutMs = Number(args.timeout) * 1000;
const denyTimeoutMs = Number(args['deny-timeout']) * 1000;
const sdkVersion = JSON.parse(readFileSync(new URL(
  './node_modules/@modelcontextprotocol/sdk/package.json', import.meta.url))).version;

// fetch wrapper: every POST's JSON-RPC message and how it was answered (the parsed body when
// it is application/json, read from a clone so the SDK still gets the original).
const posts = [];
let sessionId = null;
async function recordingFetch(input, init) {
  const url = String(input instanceof Request ? input.url : input);
  const method = (init?.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
  let entry = null;
  if (method === 'POST') {
    let request = null;
    try { request = JSON.parse(String(init?.body ?? '')); } catch { request = null; }
    // Legacy transport: the session is in the POST URL (TypeScript servers: sessionId,
    // Python servers: session_id).
    const query = new URL(url).searchParams;
    const sid = query.get('sessionId') ?? query.get('session_id');
    if (sid) sessionId = sid;
    entry = { url, request, status: null, content_type: null, response: null };
    posts.push(entry);
  }
  const res = await fetch(input, init);
  const sid = res.headers.get('mcp-session-id');
  if (sid) sessionId = sid;
  if (entry) {
    const ctype = res.headers.get('content-type') ?? '';
    entry.status = res.status;
    entry.content_type = ctype;
    if (ctype.split(';')[0].trim().toLowerCase() === 'application/json') {
      const text = await res.clone().text();
      entry.response = text.trim() ? JSON.parse(text) : null;
    }
  }
  return res;
}

function requestId(tool) {
  const p = posts.find((p) => p.request?.method === 'tools/call' && p.request?.params?.name === tool);
  return p ? p.request.id : null;
}

async function main() {
  const headers = args.agent ? { 'x-agent-id': args.agent } : {};
  const url = new URL(args.url);
  const transport = args.transport === 'sse'
    ? new SSEClientTransport(url, { requestInit: { headers }, fetch: recordingFetch })
    : new StreamableHTTPClientTransport(url, { requestInit: { headers }, fetch: recordingFetch });
  const client = new Client({ name: 'mcp-guard-e2e-ts', version: '0.0.0' });
  const out = { sdk: 'ts', sdk_version: sdkVersion, transport: args.transport };
  await client.connect(transport, { timeout: timeoutMs });
  out.protocol_version = transport.protocolVersion ?? transport._protocolVersion ?? null;
  out.server_name = client.getServerVersion()?.name ?? null;
  const listed = await client.listTools(undefined, { timeout: timeoutMs });
  out.tools = listed.tools.map((t) => t.name).sort();
  out.calls = [];
  for (const [tool, toolArgs] of SCENARIOS[args.scenario]) {
    const entry = { tool, arguments: toolArgs };
    out.calls.push(entry);
    const limit = args.transport === 'sse' ? denyTimeoutMs : timeoutMs;
    try {
      const result = await client.callTool({ name: tool, arguments: toolArgs }, undefined, { timeout: limit });
      entry.result = {
        is_error: Boolean(result.isError),
        text: (result.content ?? []).filter((c) => c.type === 'text').map((c) => c.text),
      };
    } catch (err) {
      if (!(err instanceof McpError)) throw err;
      // The SDK's own request timeout is an McpError too (code -32001, RequestTimeout):
      // report it as a timeout, not as a JSON-RPC error from the peer.
      if (err.data?.timeout !== undefined || /timed out/i.test(err.message)) entry.timeout = limit / 1000;
      else entry.error = { code: err.code, message: err.message.replace(/^MCP error -?\d+: /, '') };
    }
    entry.request_id = requestId(tool);
  }
  out.session_id = sessionId;
  out.posts = posts;
  await client.close();
  process.stdout.write(JSON.stringify(out) + '\n');
}

const guard = setTimeout(() => { console.error('client: overall timeout'); process.exit(3); }, timeoutMs * 3);
main().then(() => { clearTimeout(guard); process.exit(0); }, (err) => {
  console.error(err?.stack ?? String(err));
  process.exit(1);
});
