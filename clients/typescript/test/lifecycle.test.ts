// The client and its streams used in every order against the real server: calls after
// client.close(), streams the close ends, stream calls in unusual orders (concurrent reads,
// send and close after the call ended), and a node failing in the flush of close(). Each
// settles at once, with a RemoteMediaError or (for a programming mistake) a TypeError.
import assert from "node:assert/strict";
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
import { failure } from "./expect.js";
import { PLUGINS, RunningServer, waitFor } from "./server.js";

const ACTIVE_STREAMS = "remotemedia_active_streams";
const REQUESTS = "remotemedia_requests_total";
/** Longer than any of these calls takes when it settles; a call still pending then hangs. */
const PROMPTLY_MS = 5_000;

let server: RunningServer;
const clients: RemoteMediaClient[] = [];

before(async () => {
  server = await RunningServer.start(["--python-nodes-path", PLUGINS]);
});

after(async () => {
  for (const c of clients) c.close();
  assert.equal(await server.stop(), 0);
});

function client(options: Partial<ClientOptions> = {}): RemoteMediaClient {
  const c = createClient({ address: server.address, retry: false, ...options });
  clients.push(c);
  return c;
}

const STREAM_TRANSPORTS = ["grpc", "websocket"] as const;

function doubling(): Pipeline {
  return new Pipeline("double").passThrough("src").gain("gain", { gain: 2 }).connect("src", "gain");
}

const chunk = (): Audio => new Audio(new Float32Array(160), 16_000);

/** `promise`, or a failure naming `what` when it has not settled within PROMPTLY_MS. */
async function promptly<T>(what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`${what} has not settled after ${PROMPTLY_MS} ms`));
    }, PROMPTLY_MS);
  });
  try {
    return await Promise.race([promise, hang]);
  } finally {
    clearTimeout(timer);
  }
}

function assertClientClosed(e: RemoteMediaError, what: string): void {
  assert.equal(e.kind, "CANCELLED", `${what}: ${e.message}`);
  assert.equal(e.code, Code.Canceled, what);
  assert.match(e.message, /the client is closed/, what);
}

async function streamsDrainTo(count: number): Promise<void> {
  await waitFor(`${ACTIVE_STREAMS} == ${count}`, async () => (await server.metric(ACTIVE_STREAMS)) === count);
}

const CLIENTS: [string, Partial<ClientOptions>][] = [
  ["gRPC", {}],
  ["gRPC with WebSocket streams", { streamTransport: "websocket" }],
  ["gRPC-Web", { transport: "grpc-web" }],
];

for (const [name, options] of CLIENTS) {
  test(`${name}: every call after close() rejects with a CANCELLED error saying the client is closed, and reaches no server`, async () => {
    const c = client(options);
    await c.getVersion();
    c.close();
    c.close(); // closing again does nothing
    const before = await server.metric(REQUESTS);
    const calls: [string, () => Promise<unknown>][] = [
      ["execute", () => c.execute(doubling(), chunk())],
      ["getVersion", () => c.getVersion()],
      ["checkCompatibility", () => c.checkCompatibility()],
      ["catalogue", () => c.catalogue()],
      ["stream", () => c.stream(doubling())],
    ];
    for (const [what, call] of calls) assertClientClosed(await promptly(what, failure(call)), what);
    assert.equal(await server.metric(REQUESTS), before, "a closed client made calls");
  });

  test(`${name}: close() stops a call in flight with that error, and timeoutMs 0 sends nothing`, async () => {
    const c = client(options);
    const before = await server.metric(REQUESTS);
    const zero = await promptly("timeoutMs 0", failure(() => c.getVersion({ timeoutMs: 0 })));
    assert.equal(zero.kind, "DEADLINE_EXCEEDED", zero.message);
    assert.equal(await server.metric(REQUESTS), before, "a call with no time left was sent");

    const slow = new Pipeline("slow").node("spin", "SpinNode", { seconds: 3 });
    const running = failure(() => c.execute(slow, chunk()));
    await waitFor("the call to run", async () => (await server.metric("remotemedia_active_executions")) === 1);
    c.close();
    assertClientClosed(await promptly("the call in flight", running), "execute in flight");
    await waitFor("the server to drop the call", async () => (await server.metric("remotemedia_active_executions")) === 0);
  });
}

for (const transport of STREAM_TRANSPORTS) {
  test(`over ${transport}, close() ends the client's open streams with that error and the server frees them`, async () => {
    const c = client({ streamTransport: transport });
    const session = await c.stream(doubling());
    await session.send(chunk());
    const results = session[Symbol.asyncIterator]();
    assert.equal((await results.next()).done, false);
    const waiting = results.next();

    c.close();

    assertClientClosed(await promptly("a pending next()", failure(() => waiting)), "next");
    assertClientClosed(await promptly("send()", failure(() => session.send(chunk()))), "send");
    assert.equal(session.state, "ended");
    await promptly("close()", session.close());
    await streamsDrainTo(0);
  });

  test(`over ${transport}, concurrent reads each get a result in order`, async () => {
    const session = await client({ streamTransport: transport }).stream(doubling());
    // Two loops reading one session: each next() is answered, none is lost.
    const first = session[Symbol.asyncIterator]().next();
    const second = session[Symbol.asyncIterator]().next();
    await session.send(chunk());
    await session.send(chunk());
    const answers = await promptly("two concurrent next() calls", Promise.all([first, second]));
    assert.deepEqual(
      answers.map((r) => (r.done === true ? "done" : r.value.sequence)),
      [0, 1],
    );
    await session.close();
    const third = session[Symbol.asyncIterator]().next();
    const fourth = session[Symbol.asyncIterator]().next();
    assert.deepEqual(
      (await promptly("next() calls at the end", Promise.all([third, fourth]))).map((r) => r.done),
      [true, true],
    );
    await streamsDrainTo(0);
  });

  test(`over ${transport}, send() and close() after the stream's deadline passed reject with DEADLINE_EXCEEDED`, async () => {
    const session = await client({ streamTransport: transport }).stream(doubling(), { timeoutMs: 300 });
    await new Promise((r) => setTimeout(r, 1_000));
    // Nothing has read the stream yet: send and close learn of its end from the transport.
    for (const [what, call] of [
      ["send", () => session.send(chunk())],
      ["close", () => session.close()],
      ["next", () => session[Symbol.asyncIterator]().next()],
    ] as const) {
      const error = await promptly(what, failure(call));
      assert.equal(error.kind, "DEADLINE_EXCEEDED", `${what}: ${error.message}`);
      assert.equal(error.code, Code.DeadlineExceeded, what);
    }
    await streamsDrainTo(0);
  });

  test(`over ${transport}, close and cancel in any order settle at once`, async () => {
    const c = client({ streamTransport: transport });

    let session: StreamSession = await c.stream(doubling());
    await session.close();
    await promptly("close() twice", session.close());
    await assert.rejects(session.send(chunk()), TypeError, "send after close is a mistake");
    const results: unknown[] = [];
    for await (const r of session) results.push(r);
    for await (const r of session) results.push(r); // iterating again: already at the end
    assert.deepEqual(results, []);
    session.cancel(); // after the end: nothing to cancel
    assert.equal(session.state, "ended");

    session = await c.stream(doubling());
    await session.close();
    session.cancel();
    assert.equal((await promptly("next() after close and cancel", failure(() => session[Symbol.asyncIterator]().next()))).kind, "CANCELLED");

    session = await c.stream(doubling());
    session.cancel();
    await promptly("close() after cancel", session.close());
    assert.equal((await promptly("send() after cancel", failure(() => session.send(chunk())))).kind, "CANCELLED");
    await streamsDrainTo(0);
  });

  test(`over ${transport}, a node failing in the flush of close() is that flush's NODE_EXECUTION error, then the stream ends normally`, async () => {
    const session = await client({ streamTransport: transport }).stream(new Pipeline("flush").node("f", "FlushFailNode"));
    for (let i = 0; i < 3; i++) await session.send(chunk());
    await session.close();

    const seen: (number | string)[] = [];
    let flushError: RemoteMediaError | undefined;
    await promptly(
      "iteration",
      (async () => {
        for (;;) {
          try {
            for await (const r of session) seen.push(r.sequence ?? -1);
            break;
          } catch (e) {
            assert.ok(e instanceof RemoteMediaError, String(e));
            flushError = e;
            seen.push(`error ${e.sequence}`);
          }
        }
      })(),
    );

    assert.deepEqual(seen, [0, 1, 2, "error 3"]);
    assert.ok(flushError);
    assert.equal(flushError.kind, "NODE_EXECUTION");
    assert.equal(flushError.nodeId, "f");
    assert.equal(flushError.code, undefined, "in-band: the stream itself ended OK");
    assert.match(flushError.message, /flush failed/);
    assert.match(flushError.stackTrace ?? "", /RuntimeError: flush failed/);
    assert.equal(session.state, "ended");
    assert.equal(session.metrics?.chunksProcessed, 3);
    await streamsDrainTo(0);
  });
}

for (const transport of STREAM_TRANSPORTS) {
  test(`over ${transport}, a stream the server ends while the application is not reading keeps its results and status`, async () => {
    // Node's HTTP/2 client drops what it has received but not read when the server resets the
    // request side after its status (as HTTP/2 lets it); the client reads ahead to keep it.
    const own = await RunningServer.start(["--stream-idle-timeout-ms", "300"]);
    const shutdown = await RunningServer.start();
    const opened: RemoteMediaClient[] = [];
    try {
      const idle = createClient({ address: own.address, retry: false, streamTransport: transport });
      const draining = createClient({ address: shutdown.address, retry: false, streamTransport: transport });
      opened.push(idle, draining);
      const cases: [StreamSession, RunningServer, () => Promise<unknown>, string, Code][] = [
        [await idle.stream(doubling()), own, () => waitFor("the idle session to end", async () => (await own.metric(ACTIVE_STREAMS)) === 0), "RESOURCE_LIMIT", Code.ResourceExhausted],
        [await draining.stream(doubling()), shutdown, () => shutdown.stop(), "UNAVAILABLE", Code.Unavailable],
      ];
      for (const [stream, server_, end, kind, code] of cases) {
        const chunks = await server_.metric("remotemedia_stream_chunks_total");
        await stream.send(chunk());
        await stream.send(chunk());
        // Both results are on their way before the server ends the stream.
        await waitFor("both chunks to run", async () => (await server_.metric("remotemedia_stream_chunks_total")) === chunks + 2);
        await end();
        const sequences: number[] = [];
        const e = await failure(async () => {
          for await (const r of stream) sequences.push(r.sequence ?? -1);
        });
        assert.deepEqual(sequences, [0, 1], kind);
        assert.equal(e.kind, kind, e.message);
        assert.equal(e.code, code, `${kind}: ${e.message}`);
      }
    } finally {
      for (const c of opened) c.close();
      await own.stop();
      await shutdown.stop();
    }
  });
}
