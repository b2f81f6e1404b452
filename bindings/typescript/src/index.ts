/**
 * A client for capsule serve's HTTP API (docs/serve.md), with the Python SDK's names:
 * `Sandbox.create()`, `sb.execute(cmd)`, `sb.fs.write/read/list`, `sb.spawn(cmd, {onStdout})`,
 * `sb.diff()`, `sb.watch(path)`, `sb.pause()`, `sb.resume()`, and async iterators for a
 * command's output, a folder's changes and a file's bytes.
 *
 * Node 18 or later, no dependencies: node:http only. Requests on one server share a
 * keep-alive agent whose idle sockets do not keep the process alive.
 */
import * as http from "node:http";
import { Readable } from "node:stream";

// ---- connection -------------------------------------------------------------------------------

export interface ClientOptions {
  /** `http://HOST:PORT` or `unix:/PATH`; default $CAPSULE_SERVER. */
  server?: string;
  /** A token from `capsule token create`; default $CAPSULE_TOKEN. */
  token?: string;
}

/** An error the server answered (`{"error": {"code", "message"}}`), or a broken connection
 * (status 0, code `connection`). */
export class CapsuleError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = "CapsuleError";
    this.status = status;
    this.code = code;
  }
}

type Body = string | Uint8Array | AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

class Client {
  private readonly target: http.RequestOptions;
  private readonly base: string;
  private readonly agent: http.Agent;
  private readonly auth: string;

  constructor(opts: ClientOptions = {}) {
    const server = opts.server ?? process.env.CAPSULE_SERVER;
    const token = opts.token ?? process.env.CAPSULE_TOKEN;
    if (!server) throw new CapsuleError(0, "invalid_argument", "no server given (server, or $CAPSULE_SERVER)");
    if (!token) throw new CapsuleError(0, "invalid_argument", "no token given (token, or $CAPSULE_TOKEN)");
    this.agent = new http.Agent({ keepAlive: true });
    this.auth = `Bearer ${token}`;
    if (server.startsWith("unix:")) {
      this.target = { socketPath: server.slice(5) };
      this.base = "";
    } else {
      const u = new URL(server);
      if (u.protocol !== "http:") {
        throw new CapsuleError(0, "invalid_argument", `server '${server}': expected http://HOST:PORT or unix:/PATH`);
      }
      this.target = { hostname: u.hostname.replace(/^\[|\]$/g, ""), port: u.port || 80 };
      this.base = u.pathname.replace(/\/+$/, "");
    }
  }

  /** The response, whatever its status; its body is not read. */
  request(method: string, path: string, body?: Body, headers: Record<string, string> = {}):
    Promise<http.IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = http.request({
        ...this.target,
        agent: this.agent,
        method,
        path: this.base + path,
        headers: { Authorization: this.auth, ...headers },
      }, resolve);
      req.on("error", (e) => reject(new CapsuleError(0, "connection", `${method} ${path}: ${e.message}`)));
      if (body === undefined) {
        req.end();
      } else if (typeof body === "string" || body instanceof Uint8Array) {
        req.end(body);
      } else {
        // An iterable body goes out chunked, as it is produced: a file of any size in
        // constant memory, under the socket's back-pressure.
        const src = Readable.from(body as AsyncIterable<Uint8Array>, { objectMode: false });
        src.on("error", (e) => req.destroy(e));
        src.pipe(req);
      }
    });
  }

  /** A JSON answer, or the server's error thrown as a CapsuleError. */
  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.request(method, path, body === undefined ? undefined : JSON.stringify(body),
      body === undefined ? {} : { "Content-Type": "application/json" });
    return (await readJson(res, method, path)) as T;
  }
}

async function readAll(res: AsyncIterable<Uint8Array | string>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of res) parts.push(typeof c === "string" ? Buffer.from(c) : Buffer.from(c.buffer, c.byteOffset, c.byteLength));
  return Buffer.concat(parts);
}

async function readJson(res: http.IncomingMessage, method: string, path: string): Promise<unknown> {
  const data = await readAll(res);
  let doc: any = null;
  try {
    doc = data.length ? JSON.parse(data.toString("utf8")) : null;
  } catch {
    throw new CapsuleError(res.statusCode ?? 0, "bad_response", `${method} ${path}: an answer that is not JSON`);
  }
  if ((res.statusCode ?? 0) >= 400) throw toError(res.statusCode ?? 0, doc, `${method} ${path}`);
  return doc;
}

function toError(status: number, doc: any, what: string): CapsuleError {
  const e = doc && typeof doc === "object" ? doc.error : undefined;
  if (e && typeof e.code === "string") return new CapsuleError(status, e.code, e.message ?? e.code);
  return new CapsuleError(status, "http_error", `${what}: HTTP ${status}`);
}

const clients = new Map<string, Client>();

function clientFor(opts: ClientOptions = {}): Client {
  const key = `${opts.server ?? process.env.CAPSULE_SERVER}\0${opts.token ?? process.env.CAPSULE_TOKEN}`;
  let c = clients.get(key);
  if (!c) {
    c = new Client(opts);
    clients.set(key, c);
  }
  return c;
}

// ---- sandboxes --------------------------------------------------------------------------------

export interface CreateOptions extends ClientOptions {
  image?: string;
  isolation?: "container" | "vm";
  memory?: string | number;
  cpus?: string | number;
  network?: "none" | "mounts-only" | "full";
  env?: Record<string, string>;
  labels?: Record<string, string>;
  /** Seconds of life; the server removes the sandbox after it. */
  timeout?: number;
}

export interface SandboxInfo {
  id: string;
  state: string;
  /** Every process is held still (pause) until resume. */
  paused: boolean;
  image: string;
  isolation: string;
  memory: number;
  cpus: string | null;
  network: string;
  labels: Record<string, string>;
  created_at: string;
  timeout: number;
  expires_at: string;
  [more: string]: unknown;
}

export interface ExecOptions {
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  /** Seconds; the command and its process group are killed after it. */
  timeout?: number;
  stdin?: string | Uint8Array;
  /** Output as it comes, decoded as UTF-8. With either, execute streams. */
  onStdout?: (text: string) => unknown;
  onStderr?: (text: string) => unknown;
}

export interface ExitStatus {
  exitCode: number;
  signal: number;
  timedOut: boolean;
}

export class ExecResult implements ExitStatus {
  constructor(
    readonly stdoutBytes: Uint8Array,
    readonly stderrBytes: Uint8Array,
    readonly exitCode: number,
    readonly signal: number,
    readonly timedOut: boolean,
    /** Output past the server's --exec-output-max was dropped (execute without callbacks). */
    readonly truncated = false,
  ) {}
  get stdout(): string {
    return Buffer.from(this.stdoutBytes).toString("utf8");
  }
  get stderr(): string {
    return Buffer.from(this.stderrBytes).toString("utf8");
  }
  get ok(): boolean {
    return this.exitCode === 0;
  }
}

function commandFields(cmd: string | string[]): Record<string, unknown> {
  if (typeof cmd === "string") {
    if (!cmd) throw new CapsuleError(0, "invalid_argument", "no command given");
    return { command: cmd };
  }
  if (!Array.isArray(cmd) || cmd.length === 0) {
    throw new CapsuleError(0, "invalid_argument", "no command given (an empty argv)");
  }
  return { cmd: cmd.map(String) };
}

function execBody(cmd: string | string[], o: ExecOptions, stdinText?: string): Record<string, unknown> {
  const b: Record<string, unknown> = commandFields(cmd);
  if (o.env) b.env = o.env;
  if (o.cwd !== undefined) b.cwd = o.cwd;
  if (o.user !== undefined) b.user = String(o.user);
  if (o.timeout !== undefined) b.timeout = o.timeout;
  if (stdinText !== undefined) b.stdin = stdinText;
  return b;
}

function decodeOutput(doc: any, key: string): Buffer {
  const text: string = doc[key] ?? "";
  return doc[`${key}_encoding`] === "base64" ? Buffer.from(text, "base64") : Buffer.from(text, "utf8");
}

const enc = (id: string) => encodeURIComponent(id);

export class Sandbox {
  readonly id: string;
  info: SandboxInfo;
  readonly fs: FileSystem;
  /** @internal */
  readonly client: Client;

  private constructor(client: Client, info: SandboxInfo) {
    this.client = client;
    this.id = info.id;
    this.info = info;
    this.fs = new FileSystem(this);
  }

  /** A new sandbox on the server (POST /v1/sandboxes). */
  static async create(opts: CreateOptions = {}): Promise<Sandbox> {
    const { server, token, ...cfg } = opts;
    const c = clientFor({ server, token });
    const info = await c.json<SandboxInfo>("POST", "/v1/sandboxes", cfg);
    return new Sandbox(c, info);
  }

  /** A sandbox this token made earlier, by its id. */
  static async connect(id: string, opts: ClientOptions = {}): Promise<Sandbox> {
    const c = clientFor(opts);
    const info = await c.json<SandboxInfo>("GET", `/v1/sandboxes/${enc(id)}`);
    return new Sandbox(c, info);
  }

  /** This token's sandboxes, those with every label of LABELS. */
  static async list(opts: ClientOptions & { labels?: Record<string, string> } = {}): Promise<SandboxInfo[]> {
    const q = Object.entries(opts.labels ?? {})
      .map(([k, v]) => `label=${encodeURIComponent(`${k}=${v}`)}`).join("&");
    const doc = await clientFor(opts).json<{ sandboxes: SandboxInfo[] }>("GET", `/v1/sandboxes${q ? `?${q}` : ""}`);
    return doc.sandboxes;
  }

  async refresh(): Promise<SandboxInfo> {
    this.info = await this.client.json<SandboxInfo>("GET", `/v1/sandboxes/${enc(this.id)}`);
    return this.info;
  }

  /** Kill what runs in it and remove it with everything it owns. */
  async remove(): Promise<void> {
    await this.client.json("DELETE", `/v1/sandboxes/${enc(this.id)}`);
  }

  /** Run CMD (a string runs as `sh -c CMD`; an array is the argv) to its end. With onStdout
   * or onStderr, or binary stdin, the output streams (a streaming exec); otherwise one
   * request collects it. A timed-out command comes back with timedOut true. */
  async execute(cmd: string | string[], opts: ExecOptions = {}): Promise<ExecResult> {
    if (opts.stdin instanceof Uint8Array) {
      // Bytes a JSON string carries exactly go in the request.
      const text = Buffer.from(opts.stdin).toString("utf8");
      if (!text.includes("\0") && Buffer.from(text, "utf8").equals(Buffer.from(opts.stdin))) {
        opts = { ...opts, stdin: text };
      }
    }
    if (opts.onStdout || opts.onStderr || opts.stdin instanceof Uint8Array) {
      const p = await this.spawn(cmd, { ...opts, stdin: opts.stdin ?? "", collect: true });
      await p.wait();
      return p.result();
    }
    const doc: any = await this.client.json("POST", `/v1/sandboxes/${enc(this.id)}/exec`,
      execBody(cmd, opts, opts.stdin as string | undefined));
    return new ExecResult(decodeOutput(doc, "stdout"), decodeOutput(doc, "stderr"), doc.exit_code, 0,
      doc.timed_out, doc.stdout_truncated || doc.stderr_truncated);
  }

  /** What changed in the sandbox's filesystem since it was made, or since `since`: its
   * checkpoint of that name, else the token's save of that name (`"checkpoint:NAME"` or
   * `"save:NAME"` says which), in the order of a walk of the tree. Container level only. */
  async diff(opts: { since?: string } = {}): Promise<Change[]> {
    const q = opts.since === undefined ? "" : `?since=${encodeURIComponent(opts.since)}`;
    const doc = await this.client.json<{ changes: Change[] }>("GET", `/v1/sandboxes/${enc(this.id)}/diff${q}`);
    return doc.changes;
  }

  /** Watch PATH (its whole tree with recursive): resolves once the sandbox watches, so every
   * change after it is seen; `for await (const e of w)` reads the events until PATH is gone,
   * the sandbox stops, or close(). */
  async watch(path: string, opts: { recursive?: boolean } = {}): Promise<Watch> {
    const url = `/v1/sandboxes/${enc(this.id)}/watch?path=${encodeURIComponent(path)}` +
      (opts.recursive ? "&recursive=1" : "");
    const res = await this.client.request("GET", url);
    if ((res.statusCode ?? 0) >= 400) await readJson(res, "GET", url);
    return new Watch(res);
  }

  /** Hold every process still, in memory, until resume(); meanwhile execute, spawn and fs
   * fail with code `sandbox_paused`. Pausing twice is fine. */
  async pause(): Promise<SandboxInfo> {
    this.info = await this.client.json<SandboxInfo>("POST", `/v1/sandboxes/${enc(this.id)}/pause`, {});
    return this.info;
  }

  /** Let a paused sandbox run again (a running one is left as it is). */
  async resume(): Promise<SandboxInfo> {
    this.info = await this.client.json<SandboxInfo>("POST", `/v1/sandboxes/${enc(this.id)}/resume`, {});
    return this.info;
  }

  /** Start CMD with its output streaming. Given stdin is all it gets; without, its stdin
   * stays open for write() until closeStdin(). With onStdout/onStderr the output goes to
   * them; otherwise iterate the Process (`for await (const chunk of p)`). */
  async spawn(cmd: string | string[], opts: SpawnOptions = {}): Promise<Process> {
    let stdinText: string | undefined;
    if (typeof opts.stdin === "string") stdinText = opts.stdin;
    const doc: any = await this.client.json("POST", `/v1/sandboxes/${enc(this.id)}/execs`,
      execBody(cmd, opts, stdinText));
    const p = new Process(this, doc.id, doc.pid, opts);
    await p.attach();
    if (opts.stdin instanceof Uint8Array) {
      // Given stdin is all the command gets (a string went in the request, which closed it).
      // A command that ended without reading it drops it, as a pipe's reader would.
      try {
        await p.write(opts.stdin, { close: true });
      } catch (e) {
        if (!(e instanceof CapsuleError && (e.code === "not_found" || e.code === "stdin_closed"))) throw e;
      }
    }
    return p;
  }
}

// ---- streaming commands -------------------------------------------------------------------------

export interface SpawnOptions extends ExecOptions {
  /** Keep the output for result() (at most maxOutput bytes a stream). */
  collect?: boolean;
  maxOutput?: number;
}

export interface OutputChunk {
  stream: "stdout" | "stderr";
  data: Uint8Array;
}

/** Server-sent events of a response, parsed: [event, data]. */
async function* sseEvents(res: AsyncIterable<Buffer | string>): AsyncGenerator<[string, string]> {
  let buf = "";
  const decoder = new TextDecoder();
  for await (const chunk of res) {
    buf += typeof chunk === "string" ? chunk : decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let name = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") name = value;
        else if (field === "data") data.push(value);
      }
      if (data.length) yield [name, data.join("\n")];
    }
  }
}

export class Process implements AsyncIterable<OutputChunk> {
  readonly id: string;
  readonly pid: number;
  readonly sandbox: Sandbox;
  /** The exit status once known. */
  status: ExitStatus | null = null;
  private readonly opts: SpawnOptions;
  private events: AsyncGenerator<[string, string]> | null = null;
  private iterating = false;
  private driving: Promise<ExitStatus> | null = null;
  private readonly out: Record<"stdout" | "stderr", Buffer[]> = { stdout: [], stderr: [] };
  private readonly outLen = { stdout: 0, stderr: 0 };
  private readonly decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };

  /** @internal */
  constructor(sandbox: Sandbox, id: string, pid: number, opts: SpawnOptions) {
    this.sandbox = sandbox;
    this.id = id;
    this.pid = pid;
    this.opts = opts;
  }

  private get path(): string {
    return `/v1/sandboxes/${enc(this.sandbox.id)}/execs/${enc(this.id)}`;
  }

  /** @internal Open the event stream at once: no output is lost and the server's grace for
   * unread commands does not run while this client is there. */
  async attach(): Promise<void> {
    const res = await this.sandbox.client.request("GET", `${this.path}/events`);
    if ((res.statusCode ?? 0) >= 400) await readJson(res, "GET", `${this.path}/events`);
    this.events = sseEvents(res);
    if (this.opts.onStdout || this.opts.onStderr || this.opts.collect) this.driving = this.drive();
  }

  /** One chunk, or null at the end (the exit status is set then). */
  private async next(): Promise<OutputChunk | null> {
    if (!this.events) return null;
    const r = await this.events.next();
    if (r.done) {
      this.events = null;
      if (!this.status) throw new CapsuleError(0, "connection", `the output of command ${this.id} ended early`);
      return null;
    }
    const [name, text] = r.value;
    const doc = JSON.parse(text);
    if (name === "stdout" || name === "stderr") {
      const data = doc.encoding === "base64" ? Buffer.from(doc.data, "base64") : Buffer.from(doc.data, "utf8");
      return { stream: name, data };
    }
    if (name === "exit") {
      this.status = { exitCode: doc.exit_code, signal: doc.signal, timedOut: doc.timed_out };
      return this.next();
    }
    if (name === "error") {
      this.events = null;
      throw toError(0, doc, `command ${this.id}`);
    }
    return this.next();
  }

  private keep(c: OutputChunk): void {
    const max = this.opts.maxOutput ?? 64 << 20;
    const room = max - this.outLen[c.stream];
    if (room <= 0) return;
    const b = Buffer.from(c.data.subarray(0, room));
    this.out[c.stream].push(b);
    this.outLen[c.stream] += b.length;
  }

  private async drive(): Promise<ExitStatus> {
    for (;;) {
      const c = await this.next();
      if (!c) break;
      if (this.opts.collect) this.keep(c);
      const cb = c.stream === "stdout" ? this.opts.onStdout : this.opts.onStderr;
      if (cb) {
        const text = this.decoders[c.stream].decode(c.data, { stream: true });
        if (text) await cb(text);
      }
    }
    for (const s of ["stdout", "stderr"] as const) {
      const cb = s === "stdout" ? this.opts.onStdout : this.opts.onStderr;
      const tail = this.decoders[s].decode();
      if (cb && tail) await cb(tail);
    }
    return this.status!;
  }

  /** The output as it comes: `for await (const {stream, data} of proc)`. Not with
   * onStdout/onStderr, which take it. */
  async *[Symbol.asyncIterator](): AsyncGenerator<OutputChunk> {
    if (this.driving) throw new CapsuleError(0, "invalid_argument", "the output goes to onStdout/onStderr");
    if (this.iterating) throw new CapsuleError(0, "invalid_argument", "the output is already being read");
    this.iterating = true;
    try {
      for (;;) {
        const c = await this.next();
        if (!c) return;
        yield c;
      }
    } finally {
      this.iterating = false;
    }
  }

  /** Only stdout, decoded as UTF-8 (stderr is read and dropped). */
  async *stdoutText(): AsyncGenerator<string> {
    const d = new TextDecoder();
    for await (const c of this) if (c.stream === "stdout") yield d.decode(c.data, { stream: true });
    const tail = d.decode();
    if (tail) yield tail;
  }

  /** Write DATA to the command's stdin (then close it, with close); resolves once the
   * server has taken all of it. */
  async write(data: string | Uint8Array | AsyncIterable<Uint8Array>, opts: { close?: boolean } = {}):
    Promise<number> {
    const res = await this.sandbox.client.request("POST", `${this.path}/stdin${opts.close ? "?close=1" : ""}`, data,
      { "Content-Type": "application/octet-stream" });
    const doc: any = await readJson(res, "POST", `${this.path}/stdin`);
    return doc.written;
  }

  /** Close the command's stdin (it reads end of file once what was written is read). */
  async closeStdin(): Promise<void> {
    const res = await this.sandbox.client.request("POST", `${this.path}/stdin?close=1`, "",
      { "Content-Type": "application/octet-stream" });
    await readJson(res, "POST", `${this.path}/stdin`);
  }

  /** Send SIGNAL (a name such as "TERM" or "SIGINT", or a number). */
  async signal(sig: string | number = "TERM"): Promise<void> {
    await this.sandbox.client.json("POST", `${this.path}/signal`, { signal: sig });
  }

  async kill(): Promise<void> {
    await this.signal("KILL");
  }

  /** Wait for the command to end. Output nobody reads is read and dropped (or kept, with
   * collect). */
  async wait(): Promise<ExitStatus> {
    if (this.status && !this.events) return this.status;
    if (!this.driving) {
      if (this.iterating) throw new CapsuleError(0, "invalid_argument", "the output is being iterated");
      this.driving = this.drive();
    }
    return this.driving;
  }

  /** The result of a command spawned with collect (execute uses it), once it ended. */
  result(): ExecResult {
    const s = this.status;
    if (!s) throw new CapsuleError(0, "invalid_argument", `command ${this.id} has not ended`);
    return new ExecResult(Buffer.concat(this.out.stdout), Buffer.concat(this.out.stderr), s.exitCode, s.signal,
      s.timedOut);
  }
}

// ---- what changed, and watching ------------------------------------------------------------------

/** One change of diff(). `mtime_ns` is past 2^53: as a JavaScript number its last digits are
 * not exact. */
export interface Change {
  path: string;
  kind: "added" | "modified" | "deleted";
  type: "file" | "dir" | "symlink" | "other";
  size?: number;
  mode?: string;
  mtime_ns?: number;
  link_target?: string;
}

/** One event of a watch: `overflow` (no path) says events were lost; look again at what is
 * watched. */
export interface WatchEvent {
  kind: "create" | "modify" | "delete" | "move" | "overflow";
  path?: string;
  /** A move's old path. */
  from?: string;
  time: string;
  time_ns: number;
  dir?: boolean;
}

/** A watch started by sb.watch(): an async iterable of its events, read as the loop takes
 * them (a reader that falls behind gets an overflow event, not a growing buffer). */
export class Watch implements AsyncIterable<WatchEvent> {
  private readonly res: http.IncomingMessage;
  private events: AsyncGenerator<[string, string]> | null;
  private closed = false;

  /** @internal */
  constructor(res: http.IncomingMessage) {
    this.res = res;
    this.events = sseEvents(res);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<WatchEvent> {
    try {
      for (;;) {
        if (!this.events) return;
        let r: IteratorResult<[string, string]>;
        try {
          r = await this.events.next();
        } catch (e) {
          if (this.closed) return;
          throw new CapsuleError(0, "connection", `watch: ${(e as Error).message}`);
        }
        if (r.done) return;
        const [name, text] = r.value;
        const doc = JSON.parse(text);
        if (name === "end") return;
        if (name === "error") {
          // The sandbox stopping ends a watch, as it ends the Python SDK's.
          if (doc?.error?.code === "sandbox_not_running") return;
          throw toError(0, doc, "watch");
        }
        yield doc as WatchEvent;
      }
    } finally {
      this.close();
    }
  }

  /** Stop watching. */
  close(): void {
    this.closed = true;
    this.events = null;
    this.res.destroy();
  }
}

// ---- files ------------------------------------------------------------------------------------

export interface FileEntry {
  name: string;
  path: string;
  type: "file" | "dir" | "symlink" | "other";
  size: number;
  mode: number;
  mtime_ns: number;
  uid: number;
  gid: number;
  link_target?: string;
}

export class FileSystem {
  private readonly sb: Sandbox;

  /** @internal */
  constructor(sb: Sandbox) {
    this.sb = sb;
  }

  private url(path: string, extra = ""): string {
    return `/v1/sandboxes/${enc(this.sb.id)}/files?path=${encodeURIComponent(path)}${extra}`;
  }

  /** Write DATA (a string as UTF-8, bytes, or an async iterable of bytes, streamed) to PATH,
   * making missing folders; the file appears whole or not at all. Returns its size. */
  async write(path: string, data: string | Uint8Array | AsyncIterable<Uint8Array>): Promise<number> {
    const res = await this.sb.client.request("PUT", this.url(path), data,
      { "Content-Type": "application/octet-stream" });
    const doc: any = await readJson(res, "PUT", this.url(path));
    return doc.size;
  }

  /** The bytes of the file at PATH. */
  async read(path: string): Promise<Uint8Array> {
    return readAll(await this.readStream(path));
  }

  async readText(path: string): Promise<string> {
    return Buffer.from(await this.read(path)).toString("utf8");
  }

  /** The file's bytes as they come, in constant memory. */
  async readStream(path: string): Promise<AsyncIterable<Uint8Array>> {
    const res = await this.sb.client.request("GET", this.url(path));
    if ((res.statusCode ?? 0) >= 400) await readJson(res, "GET", this.url(path));
    return res;
  }

  /** The entries of the folder PATH, sorted by name. */
  async list(path: string): Promise<FileEntry[]> {
    const doc: any = await this.sb.client.json("GET", this.url(path, "&list=1"));
    const base = path.endsWith("/") ? path : `${path}/`;
    return doc.entries.map((e: any) => ({ ...e, path: base + e.name }));
  }

  /** Remove a file or an empty folder; with recursive, a folder and what is in it. */
  async remove(path: string, opts: { recursive?: boolean } = {}): Promise<void> {
    await this.sb.client.json("DELETE", this.url(path, opts.recursive ? "&recursive=1" : ""));
  }
}
