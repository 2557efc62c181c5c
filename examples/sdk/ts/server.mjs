#!/usr/bin/env node
// The demo MCP server (examples/demo_server.py) on the official MCP TypeScript SDK
// (npm @modelcontextprotocol/sdk), for the e2e SDK matrix. Plain ESM, no build step.
//
//   node examples/sdk/ts/server.mjs [--host 127.0.0.1] [--port 8000] [--call-log FILE]
//                                   [--transport streamable-http|sse] [--json-response]
//                                   [--describe TOOL=TEXT ...] [--server-version V]
//
// streamable-http: stateful Streamable HTTP at /mcp (one transport + McpServer per session).
// sse: the legacy HTTP+SSE transport (2024-11-05): GET /sse, POST /messages?sessionId=...
// Same tools as demo_server.py: echo(text), add(a, b), search(query), fail(reason) (a result
// with isError: true), delete_repo(name).
//
// --call-log FILE appends one JSON line per tool invocation that reached this server, in the
// format of demo_server.py: {"arguments": {...}, "headers": {name: [values]}, "tool": NAME}.
// The header lists are node's req.headersDistinct (a duplicated header shows as two values);
// they reach the tool handler through the SDK's per-request `authInfo` (req.auth), which both
// server transports hand to the handler as extra.authInfo.
//
// --describe TOOL=TEXT (repeatable) lists TOOL with TEXT as its description instead of its own;
// --server-version V is the serverInfo version (default 0.0.0), as in demo_server.py: restarting
// with --describe changes a tool's definition behind its name (a "rug pull" for tool pins).
// A --describe naming no tool of this server is an error (exit 2).
import { randomUUID } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { SSEServerTransport } from '@modelcontextprotocol/sdk/server/sse.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import * as z from 'zod';

const LOGGED_HEADERS = [
  'x-agent-id', 'x-mcp-method', 'x-mcp-tool-name', 'x-mcp-prompt-name', 'x-mcp-resource-uri',
  'mcp-session-id', 'x-request-id', 'traceparent',
];

const { values: args } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '8000' },
    transport: { type: 'string', default: 'streamable-http' },
    'json-response': { type: 'boolean', default: false },
    'call-log': { type: 'string' },
    describe: { type: 'string', multiple: true, default: [] },
    'server-version': { type: 'string', default: '0.0.0' },
  },
});
if (!['streamable-http', 'sse'].includes(args.transport)) {
  console.error(`unknown --transport ${args.transport}`);
  process.exit(2);
}
// --describe TOOL=TEXT, split at the first '='.
const descriptions = new Map();
for (const value of args.describe) {
  const at = value.indexOf('=');
  if (at < 1) {
    console.error(`--describe wants TOOL=TEXT, got ${JSON.stringify(value)}`);
    process.exit(2);
  }
  descriptions.set(value.slice(0, at), value.slice(at + 1));
}
const TOOL_NAMES = ['echo', 'add', 'search', 'fail', 'delete_repo'];
const unknown = [...descriptions.keys()].filter((name) => !TOOL_NAMES.includes(name));
if (unknown.length) {
  console.error(`--describe names no tool of this server: ${unknown.join(', ')}`);
  process.exit(2);
}

function record(tool, toolArgs, extra) {
  if (!args['call-log']) return;
  const distinct = extra?.authInfo?.extra?.headersDistinct ?? {};
  const headers = {};
  for (const name of LOGGED_HEADERS) {
    if (distinct[name]?.length) headers[name] = distinct[name];
  }
  // Keys sorted like the Python servers' json.dumps(sort_keys=True).
  const line = JSON.stringify({ arguments: toolArgs, headers, tool });
  appendFileSync(args['call-log'], line + '\n');
}

function buildServer() {
  const server = new McpServer({ name: 'mcp-guard-demo-ts', version: args['server-version'] });
  const text = (t) => ({ content: [{ type: 'text', text: String(t) }] });
  const tool = (name, description, inputSchema, run) =>
    server.registerTool(name, { description: descriptions.get(name) ?? description, inputSchema }, async (toolArgs, extra) => {
      record(name, toolArgs, extra);
      return run(toolArgs);
    });
  tool('echo', 'Return the text unchanged.', { text: z.string() }, ({ text: t }) => text(t));
  tool('add', 'Add two integers.', { a: z.number().int(), b: z.number().int() }, ({ a, b }) => text(a + b));
  tool('search', 'Search a tiny fake index.', { query: z.string() }, () =>
    text('Model Context Protocol - https://modelcontextprotocol.io/\nEnvoy proxy - https://www.envoyproxy.io/'));
  tool('fail', 'Always fails: a tool error (isError: true).', { reason: z.string() },
    ({ reason }) => ({ ...text(reason), isError: true }));
  tool('delete_repo', 'Pretend to delete a repository.', { name: z.string() }, ({ name }) => text(`deleted ${name}`));
  return server;
}

async function readJson(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const body = Buffer.concat(chunks).toString('utf-8');
  return body ? JSON.parse(body) : undefined;
}

function plain(res, status, message) {
  if (!res.headersSent) res.writeHead(status, { 'content-type': 'text/plain' });
  res.end(message);
}

const shttpSessions = new Map(); // mcp-session-id -> StreamableHTTPServerTransport
const sseSessions = new Map(); // sessionId -> SSEServerTransport

async function handleStreamableHttp(req, res, url) {
  if (url.pathname !== '/mcp') return plain(res, 404, 'not found');
  const sid = req.headers['mcp-session-id'];
  let body;
  if (req.method === 'POST') {
    try { body = await readJson(req); } catch {
      res.writeHead(400, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } }));
    }
  }
  let transport = sid ? shttpSessions.get(sid) : undefined;
  if (!transport) {
    if (sid || req.method !== 'POST' || Array.isArray(body) || !isInitializeRequest(body)) {
      return plain(res, sid ? 404 : 400, sid ? 'unknown session' : 'no session');
    }
    transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      enableJsonResponse: args['json-response'],
      onsessioninitialized: (id) => shttpSessions.set(id, transport),
    });
    transport.onclose = () => { if (transport.sessionId) shttpSessions.delete(transport.sessionId); };
    await buildServer().connect(transport);
  }
  await transport.handleRequest(req, res, body);
}

async function handleSse(req, res, url) {
  if (req.method === 'GET' && url.pathname === '/sse') {
    const transport = new SSEServerTransport('/messages', res);
    sseSessions.set(transport.sessionId, transport);
    res.on('close', () => sseSessions.delete(transport.sessionId));
    await buildServer().connect(transport); // starts the stream: first event `endpoint`
    return;
  }
  if (req.method === 'POST' && url.pathname === '/messages') {
    const transport = sseSessions.get(url.searchParams.get('sessionId') ?? '');
    if (!transport) return plain(res, 404, 'unknown session');
    return transport.handlePostMessage(req, res);
  }
  return plain(res, 404, 'not found');
}

const http = createServer((req, res) => {
  req.auth = { token: '', clientId: 'mcp-guard-e2e', scopes: [], extra: { headersDistinct: req.headersDistinct } };
  const url = new URL(req.url, `http://${req.headers.host ?? 'localhost'}`);
  const handler = args.transport === 'sse' ? handleSse : handleStreamableHttp;
  handler(req, res, url).catch((err) => {
    console.error(err);
    plain(res, 500, 'internal error');
  });
});
http.listen(Number(args.port), args.host, () => {
  console.log(`mcp-guard-demo-ts (${args.transport}) listening on ${args.host}:${args.port}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => { http.close(); process.exit(0); });
}
