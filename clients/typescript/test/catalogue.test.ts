// The node catalogue: the generated typed builders, the local parameter check with the server's
// words, and the server's catalogue for plug-in node types.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createClient as createRawClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Audio, BUILTIN_CATALOGUE, Pipeline, type RemoteMediaClient, createClient, pb } from "../src/index.js";
import { PLUGINS, RunningServer } from "./server.js";
import { failure } from "./expect.js";

let server: RunningServer;
let client: RemoteMediaClient;

before(async () => {
  server = await RunningServer.start(["--python-nodes-path", PLUGINS]);
  client = createClient({ address: server.address, timeoutMs: 30_000 });
});

after(async () => {
  client.close();
  assert.equal(await server.stop(), 0);
});

describe("the built-in catalogue", () => {
  test("typed builders write the node type the catalogue names", () => {
    const p = new Pipeline("typed").audioResample("rs", { output_rate: 16_000 }).vad("vad", { threshold_db: -40 }).connect("rs", "vad");
    assert.deepEqual(
      p.nodes.map((n) => [n.id, n.type, n.params]),
      [
        ["rs", "AudioResampleNode", { output_rate: 16_000 }],
        ["vad", "VADNode", { threshold_db: -40 }],
      ],
    );
    for (const n of p.nodes) assert.ok(BUILTIN_CATALOGUE.knows(n.type), n.type);
    // The earlier names build the same node.
    // eslint-disable-next-line @typescript-eslint/no-deprecated
    assert.deepEqual(new Pipeline("typed").resample("rs", { output_rate: 16_000 }).toProto().nodes, p.toProto().nodes.slice(0, 1));
    // A parameter the declaration does not have, or of the wrong kind, does not compile.
    // @ts-expect-error `outputRate` is not a parameter of AudioResampleNode
    new Pipeline("typo").audioResample("rs", { outputRate: 16_000 });
    // @ts-expect-error quality is one of "low", "medium", "high"
    new Pipeline("typo").audioResample("rs", { output_rate: 16_000, quality: "best" });
  });

  test("violations() are the server's, in its words, for every node at once", () => {
    const p = new Pipeline("bad")
      .node("rs", "AudioResampleNode", { output_rate: 5, quality: "best" })
      .node("g", "GainNode", { gain_db: "loud", extra: 1 });
    assert.deepEqual(
      p.violations().map((v) => [v.field, v.description]),
      [
        ["nodes[0].params.output_rate", "node `rs` (AudioResampleNode): parameter `output_rate` must be an integer between 1000 and 768000, got 5 (a number)"],
        ["nodes[0].params.quality", 'node `rs` (AudioResampleNode): parameter `quality` must be one of "low", "medium", "high", got "best" (a string)'],
        ["nodes[1].params.gain_db", 'node `g` (GainNode): parameter `gain_db` must be a number between -120 and 60, got "loud" (a string)'],
        ["nodes[1].params.extra", "node `g` (GainNode): parameter `extra` is not accepted (accepted: gain, gain_db)"],
      ],
    );
    assert.deepEqual(new Pipeline("good").audioResample("rs", { output_rate: 16_000 }).violations(), []);
  });

  test("violations() name connections' missing ports and ports of different kinds, after the parameters", () => {
    const p = new Pipeline("bad-ports")
      .vad("vad")
      .audioResample("rs", { output_rate: 16_000 })
      .connect("vad", "rs", { outputKey: "segments" })
      .connect("vad", "rs", { outputKey: "speech" })
      .connect("vad", "rs", { inputKey: "sidechain" });
    assert.deepEqual(
      p.violations().map((v) => [v.field, v.description, v.nodeId]),
      [
        [
          "connections[0]",
          "output port `segments` carries data, but input port `input` of node `rs` takes audio; connect ports of the same kind",
          "rs",
        ],
        ["connections[1].output_key", "node `vad` (VADNode) has no output port `speech`; its output ports are: output, segments", "vad"],
        ["connections[2].input_key", "node `rs` (AudioResampleNode) has no input port `sidechain`; its input ports are: input", "rs"],
      ],
    );
    assert.deepEqual(new Pipeline("good").vad("vad").audioResample("rs", { output_rate: 16_000 }).connect("vad", "rs").violations(), []);
  });

  test("a required parameter left out is named with what it takes", () => {
    assert.deepEqual(BUILTIN_CATALOGUE.check("AudioResampleNode", {}), [
      { param: "output_rate", problem: "is required (an integer between 1000 and 768000)" },
    ]);
  });
});

describe("against the server", () => {
  test("bad parameters are refused before any call, in the server's words", async () => {
    const pipeline = new Pipeline("bad-rate").audioResample("rs", { output_rate: -5 });
    const local = await failure(() => client.execute(pipeline, new Audio(new Float32Array(4), 8_000)));
    assert.equal(local.kind, "VALIDATION");
    assert.equal(local.code, undefined, "refused by the client");
    // The server, sent the same manifest by the bare generated stub, says the same.
    const raw = createRawClient(pb.PipelineService, createGrpcTransport({ baseUrl: server.url }));
    const response = await raw.executePipeline(
      create(pb.ExecuteRequestSchema, {
        manifest: pipeline.toProto(),
        audioInputs: { rs: new Audio(new Float32Array(4), 8_000).toProto() },
        clientVersion: "v1",
      }),
    );
    assert.equal(response.outcome.case, "error");
    const answer = JSON.parse(response.outcome.value.context) as { violations: { field: string; description: string }[] };
    assert.deepEqual(
      answer.violations.map((v) => [v.field, v.description]),
      local.violations.map((v) => [v.field, v.description]),
    );
  });

  test("inputs for a port the node lacks are refused before any call, in the server's words", async () => {
    // GainNode has no `data` port; TextToSpeechNode takes no audio.
    const pipeline = new Pipeline("bad-inputs").gain("g").textToSpeech("t");
    const audio = new Audio(new Float32Array(4), 16_000);
    const local = await failure(() => client.execute(pipeline, { audio: { t: audio }, data: { g: 1 } }));
    assert.equal(local.kind, "VALIDATION");
    assert.equal(local.code, undefined, "refused by the client");
    assert.deepEqual(
      local.violations.map((v) => [v.field, v.description, v.nodeId]),
      [
        ["audio_inputs[t]", "audio_inputs: node `t` (TextToSpeechNode) has no input port `input`; its input ports are: data", "t"],
        ["data_inputs[g]", "data_inputs: node `g` (GainNode) has no input port `data`; its input ports are: input", "g"],
      ],
    );
    const raw = createRawClient(pb.PipelineService, createGrpcTransport({ baseUrl: server.url }));
    const response = await raw.executePipeline(
      create(pb.ExecuteRequestSchema, {
        manifest: pipeline.toProto(),
        audioInputs: { t: audio.toProto() },
        dataInputs: { g: "1" },
        clientVersion: "v1",
      }),
    );
    assert.equal(response.outcome.case, "error");
    const answer = JSON.parse(response.outcome.value.context) as { violations: { field: string; description: string }[] };
    assert.deepEqual(
      answer.violations.map((v) => [v.field, v.description]).sort(),
      local.violations.map((v) => [v.field, v.description]).sort(),
    );
  });

  test("connections between missing ports or ports of different kinds are refused before any call", async () => {
    const pipeline = new Pipeline("bad-ports")
      .vad("vad")
      .audioResample("rs", { output_rate: 16_000 })
      .connect("vad", "rs", { outputKey: "segments" });
    const expected = pipeline.violations().map((v) => [v.field, v.description]);
    assert.equal(expected.length, 1);
    const audio = new Audio(new Float32Array(160), 16_000);
    for (const call of [
      () => client.execute(pipeline, audio),
      () => client.execute(JSON.stringify(pipeline), audio),
      () => client.stream(pipeline.toProto()),
    ]) {
      const error = await failure(call);
      assert.equal(error.kind, "VALIDATION");
      assert.equal(error.code, undefined, "refused by the client");
      assert.deepEqual(error.violations.map((v) => [v.field, v.description]), expected);
    }
  });

  test("the server's catalogue adds its plug-ins, and they are checked with no change to the client", async () => {
    const catalogue = await client.catalogue();
    const echo = catalogue.get("EchoNode");
    assert.ok(echo, "the plug-in declared in tests/plugins");
    assert.equal(BUILTIN_CATALOGUE.knows("EchoNode"), false);
    assert.deepEqual(echo.runtimes, ["python"]);
    assert.deepEqual(echo.params_schema.required, ["gain"]);
    const tooLong = new Pipeline("echo").node("echo", "EchoNode", { gain: 0.5, delay_ms: 5000 });
    const error = await failure(() => client.execute(tooLong, new Audio(new Float32Array(160), 16_000)));
    assert.equal(error.code, undefined, "refused by the client");
    assert.deepEqual(
      error.violations.map((v) => v.field),
      ["nodes[0].params.delay_ms"],
    );
    const impulse = new Float32Array(160);
    impulse[0] = 0.5;
    const result = await client.execute(new Pipeline("echo").node("echo", "EchoNode", { gain: 0.5 }), new Audio(impulse, 16_000));
    assert.equal(result.output("echo").frames, 160);
  });
});
