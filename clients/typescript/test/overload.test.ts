// A server at its concurrency cap answers RESOURCE_EXHAUSTED with a RetryInfo: the client
// reports it as RESOURCE_LIMIT with the delay, and with retries on waits and gets through. The
// client's default deadline ends a call that runs too long.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Audio, Code, Pipeline, RemoteMediaError, type RemoteMediaClient, createClient } from "../src/index.js";
import { PLUGINS, RunningServer, waitFor } from "./server.js";

const REJECTIONS = "remotemedia_limit_rejections_total";

let server: RunningServer;
let dir: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "remotemedia-ts-overload-"));
  server = await RunningServer.start(["--max-concurrent-executions", "1", "--python-nodes-path", PLUGINS]);
});

after(async () => {
  assert.equal(await server.stop(), 0);
  rmSync(dir, { recursive: true, force: true });
});

/** Occupies the server's only execution slot until `release()`. */
async function occupy(client: RemoteMediaClient, name: string): Promise<{ done: Promise<unknown>; release: () => void }> {
  const marker = join(dir, `${name}.started`);
  const release = join(dir, `${name}.release`);
  const gated = new Pipeline(name).node("gate", "GateNode", { marker, release });
  const done = client.execute(gated, { audio: { gate: new Audio(new Float32Array(16), 8_000) }, limits: { maxTimeoutMs: 30_000 } });
  await waitFor("the gate to hold the execution slot", () => existsSync(marker));
  return {
    done,
    release: () => {
      writeFileSync(release, "go");
    },
  };
}

const small = new Pipeline("small").passThrough("in");
const input = new Audio(Float32Array.from([0.5]), 8_000);

test("without retries, the cap is a RESOURCE_LIMIT error carrying the server's retry delay", async () => {
  const client = createClient({ address: server.address, retry: false });
  try {
    const slot = await occupy(client, "first");
    try {
      await client.execute(small, input);
      assert.fail("the second execution was admitted");
    } catch (e) {
      assert.ok(e instanceof RemoteMediaError);
      assert.equal(e.kind, "RESOURCE_LIMIT");
      assert.equal(e.code, Code.ResourceExhausted);
      assert.equal(e.reason, "RESOURCE_LIMIT");
      assert.ok(e.retryDelayMs !== undefined && e.retryDelayMs > 0, `retryDelayMs ${e.retryDelayMs}`);
      assert.match(e.message, /max_concurrent_executions/);
    } finally {
      slot.release();
    }
    await slot.done;
  } finally {
    client.close();
  }
});

test("with retries, a call refused at the cap waits as RetryInfo says and then runs", async () => {
  const client = createClient({ address: server.address, retry: { maxAttempts: 20, initialBackoffMs: 1 } });
  try {
    const slot = await occupy(client, "second");
    const before = await server.metric(REJECTIONS, { limit: "max_concurrent_executions" });
    const retried = client.execute(small, input);
    // Free the slot only once the server has refused the call at least once.
    await waitFor(
      "the server to refuse the call",
      async () => (await server.metric(REJECTIONS, { limit: "max_concurrent_executions" })) > before,
    );
    slot.release();
    await slot.done;
    assert.deepEqual(Array.from((await retried).output().samples), [0.5]);
  } finally {
    client.close();
  }
});

test("the client's default deadline ends a call that runs too long as DEADLINE_EXCEEDED", async () => {
  const client = createClient({ address: server.address, timeoutMs: 300, retry: false });
  const release = join(dir, "deadline.release");
  try {
    const gated = new Pipeline("slow").node("gate", "GateNode", { marker: join(dir, "deadline.started"), release });
    await assert.rejects(client.execute(gated, { audio: { gate: input }, limits: { maxTimeoutMs: 30_000 } }), (e: unknown) => {
      assert.ok(e instanceof RemoteMediaError);
      assert.equal(e.kind, "DEADLINE_EXCEEDED");
      assert.equal(e.code, Code.DeadlineExceeded);
      return true;
    });
  } finally {
    writeFileSync(release, "go");
    client.close();
  }
  await waitFor("the server to free the execution slot", async () => (await server.metric("remotemedia_active_executions")) === 0);
});
