// A failing Python node (the RaiseNode test plug-in): a NODE_EXECUTION error naming the node,
// with its traceback, from a unary run and from one chunk of a stream that then goes on.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Audio, Pipeline, RemoteMediaError, type RemoteMediaClient, createClient } from "../src/index.js";
import { PLUGINS, RunningServer } from "./server.js";

let server: RunningServer;
let client: RemoteMediaClient;

before(async () => {
  server = await RunningServer.start(["--python-nodes-path", PLUGINS]);
  client = createClient({ address: server.address });
});

after(async () => {
  client.close();
  assert.equal(await server.stop(), 0);
});

const raising = new Pipeline("raising").node("boom", "RaiseNode", { kind: "ValueError", message: "bad chunk" }).configure({ maxRetries: 0 });
const input = new Audio(new Float32Array(32), 16_000);

function assertNodeFailure(e: unknown): asserts e is RemoteMediaError {
  assert.ok(e instanceof RemoteMediaError, String(e));
  assert.equal(e.kind, "NODE_EXECUTION");
  assert.equal(e.nodeId, "boom");
  assert.match(e.message, /bad chunk/);
  assert.match(e.stackTrace ?? "", /helper_that_fails/);
  assert.match(e.stackTrace ?? "", /ValueError: bad chunk/);
}

test("a failing node in a unary run is a NODE_EXECUTION error with the Python traceback", async () => {
  await assert.rejects(client.execute(raising, input), (e: unknown) => {
    assertNodeFailure(e);
    assert.equal(e.code, undefined, "in-band: the call itself succeeded");
    return true;
  });
});

test("a node failing on one chunk fails that chunk only; iteration goes on to the end", async () => {
  const session = await client.stream(raising);
  for (let i = 0; i < 3; i++) await session.send(input);
  await session.close();

  // Each chunk's error ends the `for await` loop it is thrown into, not the session: iterating
  // again goes on with the next chunk.
  const failed: number[] = [];
  for (;;) {
    try {
      for await (const result of session) assert.fail(`unexpected result for chunk ${result.sequence}`);
      break;
    } catch (e) {
      assertNodeFailure(e);
      failed.push(e.sequence ?? -1);
      if (e.sequence !== 2) assert.notEqual(session.state, "ended", `the session went on after chunk ${e.sequence}`);
    }
  }

  assert.deepEqual(failed, [0, 1, 2]);
  assert.equal(session.state, "ended");
  assert.equal(session.metrics?.chunksProcessed, 3);
});
