// The TypeScript client against a real capsule serve ($CAPSULE_SERVER, $CAPSULE_TOKEN), run by
// node's test runner: `node --test test/` beside the compiled dist/ (tests/e2e/test_typescript.py
// builds it, starts the server and runs this).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { CapsuleError, Sandbox } from "../dist/index.js";

let sb;

before(async () => {
  sb = await Sandbox.create({ labels: { suite: "typescript" }, timeout: 600 });
});

after(async () => {
  if (sb) await sb.remove();
});

test("create, connect, list and remove", async () => {
  assert.match(sb.id, /^sbx-/);
  assert.equal(sb.info.state, "running");
  const again = await Sandbox.connect(sb.id);
  assert.equal(again.id, sb.id);
  const listed = await Sandbox.list({ labels: { suite: "typescript" } });
  assert.deepEqual(listed.map((s) => s.id), [sb.id]);
  const other = await Sandbox.create();
  await other.remove();
  await assert.rejects(Sandbox.connect(other.id), (e) => e instanceof CapsuleError && e.status === 404 &&
    e.code === "not_found");
  await assert.rejects(Sandbox.create({ token: "capsule_not-a-token" }),
    (e) => e instanceof CapsuleError && e.status === 401);
});

test("execute: output, exit codes, stdin, binary bytes", async () => {
  const r = await sb.execute("echo hello; echo oops >&2; exit 3");
  assert.equal(r.stdout, "hello\n");
  assert.equal(r.stderr, "oops\n");
  assert.equal(r.exitCode, 3);
  assert.equal(r.ok, false);
  assert.equal((await sb.execute(["printf", "%s", "a b"])).stdout, "a b");
  assert.equal((await sb.execute("cat", { stdin: "from stdin" })).stdout, "from stdin");
  assert.equal((await sb.execute(["no-such-command"])).exitCode, 127);
  const bin = await sb.execute("printf '\\377\\000\\001'");
  assert.deepEqual([...bin.stdoutBytes], [255, 0, 1]);
  const t = await sb.execute("sleep 60", { timeout: 0.3 });
  assert.equal(t.timedOut, true);
  // Binary stdin goes through a streaming exec.
  const back = await sb.execute("od -An -tu1", { stdin: new Uint8Array([0, 200, 7]) });
  assert.deepEqual(back.stdout.trim().split(/\s+/).map(Number), [0, 200, 7]);
});

test("execute with callbacks streams the output", async () => {
  const seen = [];
  const r = await sb.execute("for i in 1 2 3; do echo line $i; done; echo done >&2", {
    onStdout: (t) => seen.push(["out", t]),
    onStderr: (t) => seen.push(["err", t]),
  });
  assert.equal(r.exitCode, 0);
  assert.equal(seen.filter(([s]) => s === "out").map(([, t]) => t).join(""), "line 1\nline 2\nline 3\n");
  assert.deepEqual(seen.filter(([s]) => s === "err"), [["err", "done\n"]]);
  assert.equal(r.stdout, "line 1\nline 2\nline 3\n");
});

test("spawn: stdin through cat, output as an async iterator", async () => {
  const p = await sb.spawn(["cat"]);
  assert.match(p.id, /^exec-/);
  assert.ok(p.pid > 0);
  assert.equal(await p.write("one "), 4);
  await p.write(new Uint8Array([0xe2, 0x82]));  // a character split between two writes
  await p.write(new Uint8Array([0xac]));
  await p.closeStdin();
  const parts = [];
  for await (const { stream, data } of p) {
    assert.equal(stream, "stdout");
    parts.push(Buffer.from(data));
  }
  assert.equal(Buffer.concat(parts).toString(), "one €");
  assert.deepEqual(p.status, { exitCode: 0, signal: 0, timedOut: false });
});

test("spawn: a long-running command, read line by line, then signalled", async () => {
  const p = await sb.spawn("i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done");
  const lines = [];
  for await (const text of p.stdoutText()) {
    lines.push(...text.split("\n").filter(Boolean));
    if (lines.length >= 3) break;
  }
  assert.deepEqual(lines.slice(0, 3), ["tick 1", "tick 2", "tick 3"]);
  await p.signal("INT");
  const st = await p.wait();
  assert.equal(st.signal, 2);
  assert.equal(st.exitCode, 130);
});

test("spawn with callbacks, and wait", async () => {
  let out = "";
  const p = await sb.spawn("read x; echo got $x; exit 4", { onStdout: (t) => { out += t; } });
  await p.write("it\n");
  const st = await p.wait();
  assert.equal(st.exitCode, 4);
  assert.equal(out, "got it\n");
  await assert.rejects(p.signal("TERM"), (e) => e instanceof CapsuleError && e.status === 404);
  // Given stdin is all the command gets: cat ends.
  const q = await sb.spawn(["cat"], { stdin: "given" });
  let got = "";
  for await (const text of q.stdoutText()) got += text;
  assert.equal(got, "given");
  assert.equal(q.status.exitCode, 0);
});

test("fs: write, read, list, stream, remove", async () => {
  assert.equal(await sb.fs.write("/tmp/ts/a.txt", "hello file"), 10);
  assert.equal(await sb.fs.readText("/tmp/ts/a.txt"), "hello file");
  const bytes = new Uint8Array(256).map((_, i) => i);
  await sb.fs.write("/tmp/ts/b.bin", bytes);
  assert.deepEqual([...await sb.fs.read("/tmp/ts/b.bin")], [...bytes]);
  async function* pieces() {
    for (let i = 0; i < 64; i++) yield new Uint8Array(65536).fill(i);
  }
  assert.equal(await sb.fs.write("/tmp/ts/big", pieces()), 64 * 65536);
  let total = 0;
  let last = -1;
  for await (const chunk of await sb.fs.readStream("/tmp/ts/big")) {
    total += chunk.length;
    last = chunk[chunk.length - 1];
  }
  assert.equal(total, 64 * 65536);
  assert.equal(last, 63);
  const names = (await sb.fs.list("/tmp/ts")).map((e) => [e.name, e.type, e.path]);
  assert.deepEqual(names, [["a.txt", "file", "/tmp/ts/a.txt"], ["b.bin", "file", "/tmp/ts/b.bin"],
    ["big", "file", "/tmp/ts/big"]]);
  await assert.rejects(sb.fs.read("/tmp/ts/missing"), (e) => e instanceof CapsuleError && e.code === "not_found");
  await assert.rejects(sb.fs.remove("/tmp/ts"), (e) => e instanceof CapsuleError && e.status === 400);
  await sb.fs.remove("/tmp/ts", { recursive: true });
  await assert.rejects(sb.fs.list("/tmp/ts"), (e) => e instanceof CapsuleError && e.code === "not_found");
});

test("diff, watch, pause and resume", async () => {
  await sb.execute("mkdir -p /tw");
  const w = await sb.watch("/tw", { recursive: true });
  await sb.execute("echo x > /tw/a && mv /tw/a /tw/b && rm -rf /tw");
  const seen = [];
  for await (const e of w) seen.push([e.kind, e.from ?? null, e.path]);
  // The watched folder going ends the iteration, after its own delete.
  assert.deepEqual(seen.slice(0, 3), [["create", null, "/tw/a"], ["modify", null, "/tw/a"], ["move", "/tw/a", "/tw/b"]]);
  assert.deepEqual(seen.at(-1), ["delete", null, "/tw"]);

  await sb.execute("mkdir -p /td && printf hi > /td/f");
  const changes = (await sb.diff()).filter((c) => c.path.startsWith("/td"));
  assert.deepEqual(changes.map((c) => [c.kind, c.path, c.size]), [["added", "/td", 0], ["added", "/td/f", 2]]);
  await assert.rejects(sb.diff({ since: "no-such-checkpoint" }), (e) => e instanceof CapsuleError &&
    e.status === 404);

  const info = await sb.pause();
  assert.equal(info.state, "paused");
  assert.equal(info.paused, true);
  await assert.rejects(sb.execute("true"), (e) => e instanceof CapsuleError && e.status === 409 &&
    e.code === "sandbox_paused");
  await assert.rejects(sb.watch("/tmp"), (e) => e instanceof CapsuleError && e.code === "sandbox_paused");
  assert.equal((await sb.resume()).paused, false);
  assert.equal((await sb.execute("cat /td/f")).stdout, "hi");
});
