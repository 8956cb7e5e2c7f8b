// Requests too large for the server: refused at once with the RESOURCE_LIMIT kind over gRPC, in a
// stream and over gRPC-Web, with nothing left keeping Node alive; and errors of inputs too long
// for one request name the ways past the limit.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Audio, Code, Pipeline, RemoteMediaError, type RemoteMediaClient, createClient } from "../src/index.js";
import { create } from "@bufbuild/protobuf";
import { ExecuteRequestSchema } from "../src/gen/remotemedia/v1/execution_pb.js";
import { explainLengthLimit } from "../src/length-limit.js";
import { RunningServer } from "./server.js";

const TOKEN = "limits-token-8f1d";
const DEFAULT_AUDIO_SAMPLES = 48_000;
const OVERSIZED_CALL = join(dirname(fileURLToPath(import.meta.url)), "oversized-call.js");
/** A bound on how long a child may live: one that outlives it did not exit by itself. */
const CHILD_LIMIT_MS = 180_000;

let server: RunningServer;
let client: RemoteMediaClient;

before(async () => {
  server = await RunningServer.start(["--auth-tokens", TOKEN, "--default-audio-samples", String(DEFAULT_AUDIO_SAMPLES)]);
  client = createClient({ address: server.address, token: TOKEN });
});

after(async () => {
  client.close();
  assert.equal(await server.stop(), 0);
});

interface Outcome {
  outcome: "ok" | "error";
  kind?: string;
  code?: number;
  limit?: string;
  hint?: string;
}

/** Runs oversized-call.js in its own Node process; resolves with what it printed once it exited. */
async function oversizedCall(how: "execute" | "execute-web" | "stream", token: string | null = TOKEN): Promise<Outcome> {
  const args = [OVERSIZED_CALL, server.address, how, ...(token === null ? [] : [token])];
  try {
    const { stdout } = await promisify(execFile)(process.execPath, args, { timeout: CHILD_LIMIT_MS });
    return JSON.parse(stdout) as Outcome;
  } catch (e) {
    const killed = (e as { killed?: boolean }).killed === true;
    assert.fail(killed ? `the ${how} process did not exit within ${CHILD_LIMIT_MS} ms` : `the ${how} process failed: ${String(e)}`);
  }
}

function assertTooLarge(got: Outcome): void {
  assert.equal(got.outcome, "error");
  assert.equal(got.kind, "RESOURCE_LIMIT", JSON.stringify(got));
  assert.equal(got.code, Code.ResourceExhausted);
  assert.equal(got.limit, "max_message_bytes");
}

test("execute() with 69 MB of audio is refused as RESOURCE_LIMIT, and the process exits", async () => {
  const got = await oversizedCall("execute");
  assertTooLarge(got);
  assert.match(got.hint ?? "", /17,280,000 samples/);
  assert.match(got.hint ?? "", /client\.stream\(pipeline\)/);
  assert.match(got.hint ?? "", /--max-message-bytes/);
});

test("the same request over gRPC-Web (HTTP/1.1) is refused as RESOURCE_LIMIT too", async () => {
  assertTooLarge(await oversizedCall("execute-web"));
});

test("a stream chunk of 69 MB ends the stream with RESOURCE_LIMIT, and the process exits", async () => {
  const got = await oversizedCall("stream");
  assert.equal(got.outcome, "error");
  assert.equal(got.kind, "RESOURCE_LIMIT", JSON.stringify(got));
  assert.equal(got.code, Code.ResourceExhausted);
});

test("a 69 MB request refused for its missing token is answered at once as AUTHENTICATION", async () => {
  const got = await oversizedCall("execute", null);
  assert.equal(got.outcome, "error");
  assert.equal(got.kind, "AUTHENTICATION", JSON.stringify(got));
});

test("input over the samples limit names both ways past it, and raising the limit works", async () => {
  const pipeline = new Pipeline("long").gain("gain", { gain_db: -6 });
  const audio = new Audio(new Float32Array(2 * DEFAULT_AUDIO_SAMPLES), 48_000);
  const error = await client.execute(pipeline, audio).then(
    () => assert.fail("expected a RESOURCE_LIMIT error"),
    (e: unknown) => e,
  );
  assert.ok(error instanceof RemoteMediaError);
  assert.equal(error.kind, "RESOURCE_LIMIT");
  assert.equal(error.limit, "max_audio_samples");
  assert.match(error.hint ?? "", /client\.stream\(pipeline\)/);
  assert.match(error.hint ?? "", /limits: \{ maxAudioSamples: \.\.\. \}/);
  assert.ok(error.message.endsWith(error.hint ?? "-"), "the message ends with the hint");

  const result = await client.execute(pipeline, { audio: { gain: audio }, limits: { maxAudioSamples: 4 * DEFAULT_AUDIO_SAMPLES } });
  assert.equal(result.output().samples.length, 2 * DEFAULT_AUDIO_SAMPLES);
});

test("a time limit on a short input gets no hint to send long audio in chunks", () => {
  // The time went to the nodes' work, not to the audio's length: chunks would not help.
  const timedOut = (): RemoteMediaError => new RemoteMediaError({ kind: "RESOURCE_LIMIT", message: "time limit", context: { limit: "max_timeout_ms" } });
  const request = (audio: Audio) => create(ExecuteRequestSchema, { audioInputs: { s: audio.toProto() } });
  assert.equal(explainLengthLimit(timedOut(), request(new Audio(new Float32Array(160), 16_000))).hint, undefined);
  const long = explainLengthLimit(timedOut(), request(new Audio(new Float32Array(16_000 * 30), 16_000)));
  assert.match(long.hint ?? "", /client\.stream\(pipeline\)/);
});
