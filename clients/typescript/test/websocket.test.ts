// stream() over the server's WebSocket endpoint from Node (the `ws` package; browsers use their
// own WebSocket through the same code, tested by microphone.test.ts): results in order, the same
// error kinds, codes and messages as over HTTP/2 gRPC, and send() waiting while the socket's
// buffer is full.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import {
  Audio,
  type ClientOptions,
  Code,
  Pipeline,
  RemoteMediaError,
  type RemoteMediaClient,
  type StreamSession,
  createClient,
} from "../src/index.js";
import { PLUGINS, RunningServer, waitFor } from "./server.js";

const TOKEN = "ws-node-token-77";
const ACTIVE_STREAMS = "remotemedia_active_streams";

let server: RunningServer;
let dir: string;
const clients: RemoteMediaClient[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "remotemedia-ts-websocket-"));
  server = await RunningServer.start([
    "--auth-tokens",
    TOKEN,
    "--python-nodes-path",
    PLUGINS,
    "--max-concurrent-streams",
    "2",
    "--default-timeout-ms",
    "30000",
  ]);
});

after(async () => {
  for (const c of clients) c.close();
  assert.equal(await server.stop(), 0);
  rmSync(dir, { recursive: true, force: true });
});

function client(options: Partial<ClientOptions> = {}): RemoteMediaClient {
  const c = createClient({ address: server.address, token: TOKEN, retry: false, ...options });
  clients.push(c);
  return c;
}

const overWebSocket = (options: Partial<ClientOptions> = {}): RemoteMediaClient => client({ streamTransport: "websocket", ...options });
const overGrpc = (options: Partial<ClientOptions> = {}): RemoteMediaClient => client({ streamTransport: "grpc", ...options });

function doubling(): Pipeline {
  return new Pipeline("double").node("src", "PassThroughNode").node("gain", "GainNode", { gain: 2 }).connect("src", "gain");
}

async function streamsDrainTo(count: number): Promise<void> {
  await waitFor(`${ACTIVE_STREAMS} == ${count}`, async () => (await server.metric(ACTIVE_STREAMS)) === count);
}

test("over WebSocket, 200 chunks come back as 200 results in order, then the final metrics", async () => {
  const session = await overWebSocket().stream(doubling());
  assert.notEqual(session.sessionId, "");
  const sender = (async () => {
    for (let i = 0; i < 200; i++) await session.send(new Audio(new Float32Array(320).fill(i / 1000), 16_000));
    await session.close();
  })();
  const sequences: number[] = [];
  for await (const result of session) {
    const seq = result.sequence ?? -1;
    sequences.push(seq);
    assert.ok(result.output("gain").samples.every((x) => x === Math.fround(2 * Math.fround(seq / 1000))), `chunk ${seq}`);
  }
  await sender;
  assert.deepEqual(sequences, Array.from({ length: 200 }, (_, i) => i));
  assert.equal(session.state, "ended");
  assert.deepEqual({ chunks: session.metrics?.chunksProcessed, samples: session.metrics?.totalSamples }, { chunks: 200, samples: 64_000 });
  await streamsDrainTo(0);
});

test("gRPC-Web in Node streams over WebSocket, as browsers do", async () => {
  const session = await client({ transport: "grpc-web" }).stream(doubling());
  await session.send(new Audio(new Float32Array([0.25]), 16_000));
  await session.close();
  const results = [];
  for await (const r of session) results.push(r.output("gain").samples[0]);
  assert.deepEqual(results, [0.5]);
});

/** What an error says, field by field, for comparing transports. */
function summary(e: unknown): Record<string, unknown> {
  assert.ok(e instanceof RemoteMediaError, `expected a RemoteMediaError, got ${String(e)}`);
  return {
    kind: e.kind,
    code: e.code,
    message: e.message,
    nodeId: e.nodeId,
    sequence: e.sequence,
    violations: e.violations,
    supportedVersions: e.supportedVersions,
    retryDelayMs: e.retryDelayMs,
  };
}

async function failure(run: () => Promise<unknown>): Promise<Record<string, unknown>> {
  try {
    await run();
  } catch (e) {
    return summary(e);
  }
  assert.fail("expected a failure");
}

/** Opens a stream and reads its first result or error. */
async function firstResult(session: StreamSession): Promise<unknown> {
  const results = session[Symbol.asyncIterator]();
  try {
    return await results.next();
  } finally {
    session.cancel();
  }
}

const failures: [string, (c: (options?: Partial<ClientOptions>) => RemoteMediaClient) => Promise<unknown>][] = [
  ["a wrong token", (c) => c({ token: "not-the-token" }).stream(doubling())],
  ["an unsupported protocol version", (c) => c({ protocolVersion: "v2" }).stream(doubling())],
  ["an invalid manifest", (c) => c().stream(new Pipeline("bad").node("x", "NoSuchNode").node("g", "GainNode", { gain: "loud" }))],
  [
    "a chunk for a node the pipeline lacks",
    async (c) => {
      // Refused by the session before it is sent, which leaves the session open: cancel it.
      const session = await c().stream(doubling());
      try {
        return await session.send(new Audio(new Float32Array(4), 16_000), { nodeId: "nowhere" });
      } finally {
        session.cancel();
      }
    },
  ],
  [
    "a node failing on a chunk",
    async (c) => {
      const raising = new Pipeline("raising").node("boom", "RaiseNode", { kind: "ValueError", message: "bad chunk" }).configure({ maxRetries: 0 });
      const session = await c().stream(raising);
      await session.send(new Audio(new Float32Array(4), 16_000));
      return firstResult(session);
    },
  ],
  [
    "cancel()",
    async (c) => {
      const session = await c().stream(doubling());
      const results = session[Symbol.asyncIterator]();
      const pending = results.next();
      session.cancel();
      return pending;
    },
  ],
];

for (const [what, run] of failures) {
  test(`${what}: the same error kind, code and message over WebSocket as over gRPC`, async () => {
    const grpc = await failure(() => run(overGrpc));
    const ws = await failure(() => run(overWebSocket));
    assert.deepEqual(ws, grpc);
    await streamsDrainTo(0);
  });
}

test("the concurrency cap: RESOURCE_LIMIT with the retry delay over both transports, the cap counting both", async () => {
  const open = [await overGrpc().stream(doubling()), await overWebSocket().stream(doubling())];
  const grpc = await failure(() => overGrpc().stream(doubling()));
  const ws = await failure(() => overWebSocket().stream(doubling()));
  assert.deepEqual(ws, grpc);
  assert.equal(ws["kind"], "RESOURCE_LIMIT");
  assert.equal(ws["code"], Code.ResourceExhausted);
  assert.equal(ws["retryDelayMs"], 250);
  for (const s of open) s.cancel();
  await streamsDrainTo(0);
});

test("an AbortSignal cancels a WebSocket stream and the server frees the session", async () => {
  const controller = new AbortController();
  const session = await overWebSocket().stream(doubling(), { signal: controller.signal });
  await session.send(new Audio(new Float32Array(16), 16_000));
  const results = session[Symbol.asyncIterator]();
  assert.equal((await results.next()).done, false);
  assert.equal(await server.metric(ACTIVE_STREAMS), 1);
  controller.abort();
  const error = await failure(() => results.next());
  assert.equal(error["kind"], "CANCELLED");
  await streamsDrainTo(0);
});

test("a WebSocket stream's deadline reaches the server, which counts DEADLINE_EXCEEDED, not a client cancel", async () => {
  const labels = { rpc: "StreamPipeline", code: "DEADLINE_EXCEEDED" };
  const before = await server.metric("remotemedia_requests_total", labels);
  const session = await overWebSocket().stream(doubling(), { timeoutMs: 400 });
  await session.send(new Audio(new Float32Array(16), 16_000));
  const results = session[Symbol.asyncIterator]();
  assert.equal((await results.next()).done, false);
  const error = await failure(async () => {
    for (;;) if ((await results.next()).done === true) return;
  });
  assert.equal(error["kind"], "DEADLINE_EXCEEDED");
  // close() after the iteration threw says the same, as send() does.
  assert.equal((await failure(() => session.close()))["kind"], "DEADLINE_EXCEEDED");
  await waitFor("the deadline counted", async () => (await server.metric("remotemedia_requests_total", labels)) === before + 1);
  await streamsDrainTo(0);
});

test("send() waits while the socket buffers more than its bound, instead of buffering without bound", async () => {
  const marker = join(dir, "gate.started");
  const release = join(dir, "gate.release");
  const gated = new Pipeline("gated").node("gate", "GateNode", { marker, release });
  const session = await overWebSocket().stream(gated, { maxBufferedChunks: 4 });
  const total = 200;
  const chunk = new Audio(new Float32Array(65_536), 16_000); // 256 KiB: 50 MiB in all
  let sent = 0;
  const progress = { senderDone: false };
  const sender = (async () => {
    for (let i = 0; i < total; i++) {
      await session.send(chunk);
      sent++;
    }
    await session.close();
    progress.senderDone = true;
  })();

  await waitFor("the first chunk at the gate", () => existsSync(marker));
  // The server holds the pipeline's chunk and its small queue and stops reading; the kernel's
  // buffers fill, then the socket's, and send() must wait rather than queue all 50 MiB.
  await waitFor("send() to wait for room", () => session.pendingSends > 0 || progress.senderDone);
  assert.equal(progress.senderDone, false, "send() never waited");
  assert.ok(sent <= 80, `${sent} chunks of 256 KiB were taken while the pipeline was stuck`);

  writeFileSync(release, "go");
  const sequences = [];
  for await (const r of session) sequences.push(r.sequence);
  await sender;
  assert.deepEqual(sequences, Array.from({ length: total }, (_, i) => i));
});
