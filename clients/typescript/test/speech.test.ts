// The speech model nodes through the TypeScript client: their generated typed builders, and the
// transcript of a recording of read speech in one call and in 20 ms stream chunks, with partial
// hypotheses while an utterance is open.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Audio, Pipeline, type RemoteMediaClient, createClient } from "../src/index.js";
import { REPO, RunningServer, waitFor } from "./server.js";

/** 10 s of read speech, 16 kHz mono int16, fetched by `make test-data`. */
const RECORDING = join(REPO, "tests", "data", "speech", "beckett.wav");

let server: RunningServer;
let client: RemoteMediaClient;

before(async () => {
  // Recognising 10 s of speech may take longer than the 5 s default time limit on a busy machine.
  server = await RunningServer.start(["--default-timeout-ms", "30000"]);
  client = createClient({ address: server.address, timeoutMs: 120_000 });
});

after(async () => {
  client.close();
  assert.equal(await server.stop(), 0);
});

/** The samples of a mono 16-bit PCM WAV file. */
function readWav(path: string): Audio<Int16Array> {
  if (!existsSync(path)) throw new Error(`${path} is missing: run \`make test-data\` (make test does)`);
  const file = readFileSync(path);
  assert.equal(file.toString("ascii", 0, 4), "RIFF");
  assert.equal(file.toString("ascii", 8, 12), "WAVE");
  let rate = 0;
  for (let pos = 12; pos + 8 <= file.length; ) {
    const id = file.toString("ascii", pos, pos + 4);
    const size = file.readUInt32LE(pos + 4);
    if (id === "fmt ") {
      assert.deepEqual([file.readUInt16LE(pos + 8), file.readUInt16LE(pos + 10), file.readUInt16LE(pos + 22)], [1, 1, 16], "mono 16-bit PCM");
      rate = file.readUInt32LE(pos + 12);
    } else if (id === "data") {
      const samples = new Int16Array(size / 2);
      for (let i = 0; i < samples.length; i++) samples[i] = file.readInt16LE(pos + 8 + 2 * i);
      return new Audio(samples, rate);
    }
    pos += 8 + size + (size % 2);
  }
  throw new Error(`${path} has no data chunk`);
}

function speechPipeline(): Pipeline {
  return new Pipeline("hear").sileroVAD("vad").speechRecognition("asr", { search: "fast" }).connect("vad", "asr");
}

test("the typed builders add the speech nodes with their declared parameters", () => {
  const p = new Pipeline("speak").textToSpeech("tts", { voice: "en-gb", rate_wpm: 150 }).audioResample("rs", { output_rate: 16_000 });
  assert.deepEqual(
    [...speechPipeline().nodes, ...p.nodes].map((n) => [n.id, n.type, n.params]),
    [
      ["vad", "SileroVADNode", {}],
      ["asr", "SpeechRecognitionNode", { search: "fast" }],
      ["tts", "TextToSpeechNode", { voice: "en-gb", rate_wpm: 150 }],
      ["rs", "AudioResampleNode", { output_rate: 16_000 }],
    ],
  );
  // @ts-expect-error search is "fast" or "accurate"
  new Pipeline("typo").speechRecognition("asr", { search: "slow" });
  assert.deepEqual(
    new Pipeline("bad").sileroVAD("vad", { threshold: 2 }).violations().map((v) => v.description),
    ["node `vad` (SileroVADNode): parameter `threshold` must be a number between 0.15 and 0.99, got 2 (a number)"],
  );
});

test("a recording's transcript is the same in one call and in 20 ms stream chunks, with partials on the way", async () => {
  const speech = readWav(RECORDING);
  assert.equal(speech.sampleRate, 16_000);

  const once = await client.execute(speechPipeline(), { audio: { vad: speech }, outputNodes: ["vad"] });
  const transcript = once.transcripts["asr"];
  assert.ok(transcript !== undefined && transcript.text !== "", "words are heard");
  const texts = transcript.utterances.map((u) => u.text).filter((t) => t !== "");
  assert.equal(transcript.text, texts.join(" "));
  for (const u of transcript.utterances) assert.ok(u.start_s < u.end_s && u.confidence >= 0 && u.confidence <= 1, JSON.stringify(u));
  assert.equal(once.segments["vad"]?.length, 6, "the six phrases read, as Silero VAD segments");

  const session = await client.stream(speechPipeline());
  const sender = (async () => {
    for (let i = 0; i < speech.samples.length; i += 320) await session.send(new Audio(speech.samples.subarray(i, i + 320), 16_000));
    await session.close();
  })();
  const streamed: string[] = [];
  let partials = 0;
  for await (const r of session) {
    const t = r.transcripts["asr"];
    if (t === undefined) continue;
    if (t.partial !== undefined) partials++;
    streamed.push(...t.utterances.map((u) => u.text).filter((text) => text !== ""));
  }
  await sender;
  assert.deepEqual(streamed, texts, "each utterance decoded as in the one call");
  assert.ok(partials > 0, "partial hypotheses arrive while an utterance is open");
  await waitFor("the session to be freed", async () => (await server.metric("remotemedia_active_streams")) === 0);
  await waitFor(
    "the recogniser to be returned",
    async () => (await server.metric("remotemedia_model_instances_in_use", { model: "pocketsphinx-en-us" })) === 0,
  );
});
