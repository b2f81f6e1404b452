// A real MCP client for capsule's tests: the official TypeScript SDK (@modelcontextprotocol/sdk,
// installed outside the clone by scripts/install-npm-deps), driven by tests/e2e/test_mcp.py
// one step at a time, so that the test decides and checks everything.
//
//   node client.mjs stdio COMMAND [ARGS...]   starts COMMAND (capsule mcp) as its subprocess
//   node client.mjs http URL [TOKEN]          capsule serve's /mcp, with the token if given
//
// Each line on stdin is a step, answered by one line on stdout:
//   {"op": "connect"}                         -> {"ok": {"server", "protocol", "session"}}
//   {"op": "tools"}                           -> {"ok": [tools]}
//   {"op": "call", "name", "arguments"}       -> {"ok": result}   (isError results included)
//   {"op": "ping"} | {"op": "terminate"} | {"op": "close"}
// A step that throws answers {"error": {"name", "message", "code"}}. The SDK checks every
// answer against the protocol's schemas, and callTool checks structuredContent against the
// tool's outputSchema, so a malformed answer from capsule is an error here.
import { createRequire } from 'node:module';
import readline from 'node:readline';

const prefix = process.env.CAPSULE_NPM_PREFIX || '/var/cache/capsule/npm';
const require = createRequire(prefix + '/node_modules/');
const { Client } = require('@modelcontextprotocol/sdk/client/index.js');

const [mode, ...rest] = process.argv.slice(2);
let transport;
if (mode === 'stdio') {
	const { StdioClientTransport } = require('@modelcontextprotocol/sdk/client/stdio.js');
	// The SDK passes a child only a few variables by default: capsule needs CAPSULE_HOME.
	transport = new StdioClientTransport({ command: rest[0], args: rest.slice(1), env: process.env, stderr: 'inherit' });
} else if (mode === 'http') {
	const { StreamableHTTPClientTransport } = require('@modelcontextprotocol/sdk/client/streamableHttp.js');
	const headers = rest[1] ? { Authorization: `Bearer ${rest[1]}` } : {};
	transport = new StreamableHTTPClientTransport(new URL(rest[0]), { requestInit: { headers } });
} else {
	console.error('usage: client.mjs stdio COMMAND [ARGS...] | http URL [TOKEN]');
	process.exit(2);
}

const client = new Client({ name: 'capsule-tests', version: '1.0.0' });

async function step(s) {
	switch (s.op) {
	case 'connect':
		await client.connect(transport);
		return { server: client.getServerVersion(), protocol: transport.protocolVersion ?? null,
			 session: transport.sessionId ?? null, instructions: client.getInstructions() ?? null };
	case 'tools':
		return (await client.listTools()).tools;
	case 'call':
		return await client.callTool({ name: s.name, arguments: s.arguments ?? {} }, undefined,
					      { timeout: (s.timeout_s ?? 120) * 1000 });
	case 'ping':
		return await client.ping();
	case 'terminate':
		await transport.terminateSession();
		return { session: transport.sessionId ?? null };
	case 'close':
		await client.close();
		return {};
	default:
		throw new Error(`unknown step '${s.op}'`);
	}
}

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
	const s = JSON.parse(line);
	let answer;
	try {
		answer = { ok: await step(s) };
	} catch (e) {
		answer = { error: { name: e?.name ?? 'Error', message: String(e?.message ?? e), code: e?.code ?? null } };
	}
	process.stdout.write(JSON.stringify(answer) + '\n');
	if (s.op === 'close')
		break;
}
process.exit(0);
