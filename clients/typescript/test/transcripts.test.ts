// PipelineResult.transcripts: what speech recognition nodes heard, from their data outputs.
import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { PipelineResult, pb } from "../src/index.js";

function result(dataOutputs: Record<string, unknown>): PipelineResult {
  const data = Object.fromEntries(Object.entries(dataOutputs).map(([id, v]) => [id, JSON.stringify(v)]));
  return new PipelineResult(create(pb.ExecutionResultSchema, { dataOutputs: data }));
}

const utterance = { start_s: 0.3, end_s: 4.29, text: "it was the best of times", confidence: 0.61 };

test("a request's transcript: its text and utterances; VAD segments stay segments", () => {
  const r = result({
    asr: { text: "it was the best of times", segments: [utterance], partial: null },
    vad: { segments: [{ start_s: 0.32, end_s: 1.25, energy_db: -29 }] },
  });
  assert.deepEqual(r.transcripts, { asr: { text: "it was the best of times", utterances: [utterance], partial: undefined } });
  assert.deepEqual(Object.keys(r.segments), ["vad"]);
  // A stream chunk in which no utterance ended: an empty list, still not VAD segments.
  const none = result({ asr: { text: "", segments: [], partial: { start_s: 1.2, text: "it was" } }, vad: { segments: [] } });
  assert.deepEqual(Object.keys(none.segments), ["vad"]);
});

test("a stream chunk's partial hypothesis, and text from the utterances when the text port feeds a node", () => {
  assert.equal(result({ asr: { partial: { start_s: 8.01, text: "fail that" } } }).transcripts["asr"]?.partial, "fail that");
  const connected = result({ asr: { segments: [utterance, { ...utterance, text: "" }, { ...utterance, text: "again" }] } });
  assert.equal(connected.transcripts["asr"]?.text, "it was the best of times again");
  assert.deepEqual(result({ gain: { lufs: -23 } }).transcripts, {});
});
