// StreamPipeline sessions against the real server: ordered results and final metrics, cancel()
// and AbortSignal freeing the server's session, and send() waiting behind a slow consumer.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Audio, Code, Pipeline, RemoteMediaError, type RemoteMediaClient, createClient } from "../src/index.js";
import { RunningServer, waitFor } from "./server.js";

const ACTIVE_STREAMS = "remotemedia_active_streams";

let server: RunningServer;
let client: RemoteMediaClient;

before(async () => {
  server = await RunningServer.start();
  client = createClient({ address: server.address });
});

after(async () => {
  client.close();
  assert.equal(await server.stop(), 0);
});

function doubling(): Pipeline {
  return new Pipeline("double").passThrough("src").gain("gain", { gain: 2 }).connect("src", "gain");
}

async function rejection(promise: Promise<unknown>): Promise<RemoteMediaError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof RemoteMediaError, `expected a RemoteMediaError, got ${String(e)}`);
    return e;
  }
  assert.fail("expected a RemoteMediaError");
}

async function streamsDrainTo(count: number): Promise<void> {
  await waitFor(`${ACTIVE_STREAMS} == ${count}`, async () => (await server.metric(ACTIVE_STREAMS)) === count);
}

test("200 chunks come back as 200 results in sequence order, then the final metrics", async () => {
  const session = await client.stream(doubling());
  assert.notEqual(session.sessionId, "");
  const sender = (async () => {
    for (let i = 0; i < 200; i++) {
      const sequence = await session.send(new Audio(new Float32Array(320).fill(i / 1000), 16_000));
      assert.equal(sequence, i);
    }
    await session.close();
  })();

  const sequences: number[] = [];
  for await (const result of session) {
    const seq = result.sequence ?? -1;
    sequences.push(seq);
    const out = result.output("gain");
    assert.ok(out.samples instanceof Float32Array);
    assert.equal(out.samples.length, 320);
    assert.ok(out.samples.every((x) => x === Math.fround(2 * Math.fround(seq / 1000))), `chunk ${seq}`);
  }
  await sender;

  assert.deepEqual(sequences, Array.from({ length: 200 }, (_, i) => i));
  assert.equal(session.state, "ended");
  assert.deepEqual(
    { chunks: session.metrics?.chunksProcessed, samples: session.metrics?.totalSamples },
    { chunks: 200, samples: 200 * 320 },
  );
  await streamsDrainTo(0);
});

test("cancel() ends the stream with the CANCELLED kind and the server frees the session", async () => {
  const session = await client.stream(doubling());
  const results = session[Symbol.asyncIterator]();
  await session.send(new Audio(new Float32Array(160), 16_000));
  const first = await results.next();
  assert.equal(first.done, false);
  assert.equal(await server.metric(ACTIVE_STREAMS), 1);

  const waiting = results.next();
  session.cancel();

  const error = await rejection(waiting);
  assert.equal(error.kind, "CANCELLED");
  assert.equal(error.code, Code.Canceled);
  assert.equal((await rejection(session.send(new Audio(new Float32Array(160), 16_000)))).kind, "CANCELLED");
  assert.equal(session.state, "ended");
  await streamsDrainTo(0);
});

test("an AbortSignal cancels the stream like cancel()", async () => {
  const controller = new AbortController();
  const session = await client.stream(doubling(), { signal: controller.signal });
  await session.send(new Audio(new Float32Array(160), 16_000));
  const results = session[Symbol.asyncIterator]();
  assert.equal((await results.next()).done, false);

  controller.abort();

  assert.equal((await rejection(results.next())).kind, "CANCELLED");
  await streamsDrainTo(0);
  const late = await rejection(client.stream(doubling(), { signal: controller.signal }));
  assert.equal(late.kind, "CANCELLED");
});

test("a slow consumer makes send() wait instead of buffering without bound", async () => {
  // 256 KiB chunks: a handful fill the HTTP/2 windows, so the transport stops taking chunks
  // soon after the consumer stops reading.
  const frames = 65_536;
  const total = 120;
  const queue = 4;
  const session = await client.stream(doubling(), { maxBufferedChunks: queue });
  let sent = 0;
  let received = 0;
  let mostAhead = 0;
  const progress = { senderDone: false };
  const sender = (async () => {
    for (let i = 0; i < total; i++) {
      await session.send(new Audio(new Float32Array(frames).fill(i), 48_000));
      sent++;
      mostAhead = Math.max(mostAhead, sent - received);
      assert.ok(session.bufferedChunks <= queue);
    }
    await session.close();
    progress.senderDone = true;
  })();

  // The consumer takes a result only while the sender is stuck waiting for room, so a send()
  // that never waited would run `total` chunks ahead of it.
  let stalls = 0;
  const results = session[Symbol.asyncIterator]();
  for (;;) {
    await waitFor("send() to wait for room", () => session.pendingSends > 0 || progress.senderDone);
    if (!progress.senderDone) stalls++;
    const r = await results.next();
    if (r.done === true) break;
    assert.equal(r.value.sequence, received);
    assert.equal(r.value.output().samples[0], 2 * received);
    received++;
  }
  await sender;

  assert.equal(received, total);
  assert.ok(stalls > 0, "send() never waited");
  // What may be in flight: the session's queue, about 1 MiB of HTTP/2 window (4 chunks), the
  // server's 8 buffered results and the chunks being read and processed: about 20.
  assert.ok(mostAhead <= 40, `the sender ran ${mostAhead} chunks ahead of the consumer`);
  assert.equal(session.metrics?.chunksProcessed, total);
});

test("a sequence that is not a non-negative safe integer is a VALIDATION error naming it, and the session goes on", async () => {
  const session = await client.stream(doubling());
  const chunk = new Audio(new Float32Array(160), 16_000);
  for (const sequence of [-1, 2 ** 64, 1.5, Number.NaN, Number.MAX_SAFE_INTEGER + 1, 7n as unknown as number]) {
    const error = await rejection(session.send(chunk, { sequence }));
    assert.equal(error.kind, "VALIDATION", `sequence ${String(sequence)}: ${error.message}`);
    assert.deepEqual(
      error.violations.map((v) => v.field),
      ["sequence"],
    );
    assert.match(error.message, /sequence: must be a non-negative integer/);
    assert.equal(session.state, "open");
  }
  assert.equal(await session.send(chunk, { sequence: Number.MAX_SAFE_INTEGER }), Number.MAX_SAFE_INTEGER);
  // Automatic numbering cannot go past the largest safe integer either.
  const next = await rejection(session.send(chunk));
  assert.equal(next.kind, "VALIDATION");
  assert.match(next.message, /sequence: /);
  assert.equal(await session.send(chunk, { sequence: 3 }), 3);
  await session.close();
  const sequences: number[] = [];
  for await (const result of session) sequences.push(result.sequence ?? -1);
  assert.deepEqual(sequences.slice(0, 2), [Number.MAX_SAFE_INTEGER, 3]);
  await streamsDrainTo(0);
});

test("send() arguments of the wrong kind are VALIDATION errors naming them, and the session goes on", async () => {
  const session = await client.stream(doubling());
  const chunk = new Audio(new Float32Array(160), 16_000);
  const loose = (value: unknown): never => value as never;
  const cases: [Promise<number>, string, RegExp][] = [
    [session.send(loose(new Float32Array(160))), "audio", /must be an Audio, got a Float32Array/],
    [session.send(chunk, loose(null)), "options", /must be an object, got null/],
    [session.send(chunk, { nodeId: "nope" }), "nodeId", /no node "nope" in this pipeline/],
    [session.send(chunk, { nodeId: loose(5) }), "nodeId", /must be a string, got 5/],
  ];
  for (const [sent, field, says] of cases) {
    const error = await rejection(sent);
    assert.equal(error.kind, "VALIDATION", error.message);
    assert.deepEqual(
      error.violations.map((v) => v.field),
      [field],
    );
    assert.match(error.message, says);
    assert.equal(session.state, "open");
  }
  // Nothing was sent for the refused chunks: the first chunk sent gets sequence 0.
  assert.equal(await session.send(chunk), 0);
  await session.close();
  const sequences: number[] = [];
  for await (const result of session) sequences.push(result.sequence ?? -1);
  assert.equal(sequences[0], 0);
  await streamsDrainTo(0);
});

test("a chunk without a nodeId for a pipeline of several sources is a VALIDATION error, and the session goes on", async () => {
  const two = new Pipeline("two").gain("a", { gain: 2 }).gain("b", { gain: 3 });
  const session = await client.stream(two);
  const chunk = new Audio(new Float32Array(160).fill(0.25), 16_000);
  const error = await rejection(session.send(chunk));
  assert.equal(error.kind, "VALIDATION", error.message);
  assert.deepEqual(
    error.violations.map((v) => v.field),
    ["nodeId"],
  );
  assert.equal(session.state, "open");
  await session.send(chunk, { nodeId: "b" });
  await session.close();
  const outputs: number[] = [];
  for await (const result of session) outputs.push(result.output("b").samples[0] ?? Number.NaN);
  assert.deepEqual(outputs, [0.75]);
  await streamsDrainTo(0);
});

test("automatic numbering continues from the last sequence sent, and results carry the chunk's", async () => {
  const session = await client.stream(doubling());
  const chunk = new Audio(new Float32Array(160), 16_000);
  const sent = [
    await session.send(chunk),
    await session.send(chunk, { sequence: 0 }),
    await session.send(chunk),
    await session.send(chunk, { sequence: 10 }),
    await session.send(chunk),
  ];
  assert.deepEqual(sent, [0, 0, 1, 10, 11]);
  await session.close();
  const sequences: number[] = [];
  for await (const result of session) sequences.push(result.sequence ?? -1);
  assert.deepEqual(sequences.slice(0, sent.length), sent);
  await streamsDrainTo(0);
});
