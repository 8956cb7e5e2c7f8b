// ExecutePipeline and GetVersion against the real server: audio in and out in every sample
// format, and the error kinds of validation, authentication and version refusals.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code as ConnectCode, ConnectError, createClient as createRawClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { Audio, Code, Pipeline, type RemoteMediaClient, RemoteMediaError, createClient, pb } from "../src/index.js";
import { toRemoteMediaError } from "../src/to-error.js";
import { openTransport as openBrowserTransport } from "../src/transport-web.js";
import { RunningServer } from "./server.js";
import { failure } from "./expect.js";

const TOKEN = "ts-client-token-81f3";

let server: RunningServer;
let client: RemoteMediaClient;

before(async () => {
  server = await RunningServer.start(["--auth-tokens", TOKEN]);
  client = createClient({ address: server.address, token: TOKEN, timeoutMs: 30_000 });
});

after(async () => {
  client.close();
  assert.equal(await server.stop(), 0);
});

describe("execute", () => {
  test("f32 audio in, gained f32 audio out, with metrics", async () => {
    const input = new Audio(Float32Array.from({ length: 480 }, (_, i) => Math.sin(i / 10) / 4), 48_000);
    const pipeline = new Pipeline("louder").passThrough("in").gain("gain", { gain: 2 }).connect("in", "gain");

    const result = await client.execute(pipeline, input);

    const out: Audio = result.output("gain");
    assert.ok(out.samples instanceof Float32Array);
    assert.equal(out.sampleRate, 48_000);
    assert.equal(out.channels, 1);
    assert.deepEqual(Array.from(out.samples), Array.from(input.samples, (x) => Math.fround(2 * x)));
    assert.equal(result.status, "success");
    assert.equal(result.sequence, undefined);
    const gain = result.metrics.nodes["gain"];
    assert.ok(gain);
    assert.equal(gain.samplesProcessed, 480);
    assert.equal(gain.customMetrics["runtime"], "rust");
    assert.equal(gain.custom, gain.customMetrics, "custom is the same object by its shorter name");
    assert.ok(result.metrics.wallTimeMs > 0);
  });

  test("i16 interleaved stereo in, f32 mono out", async () => {
    const left = Int16Array.from([0, 16_384, -16_384, 32_767]);
    const right = Int16Array.from([16_384, 16_384, 0, 32_767]);
    const input = Audio.fromChannels([left, right], 16_000);
    assert.deepEqual(Array.from(input.samples), [0, 16_384, 16_384, 16_384, -16_384, 0, 32_767, 32_767]);

    const pipeline = new Pipeline("mono-float")
      .channelMixer("mix", { output_channels: 1 })
      .formatConverter("f32", { target_format: "f32" })
      .connect("mix", "f32");
    const out = (await client.execute(pipeline, { audio: { mix: input } })).output();

    assert.ok(out.samples instanceof Float32Array);
    assert.equal(out.channels, 1);
    assert.equal(out.format, "f32");
    const expected = [8_192, 16_384, -8_192, 32_767].map((x) => x / 2 ** 15);
    out.samples.forEach((x, i) => {
      assert.ok(Math.abs(x - (expected[i] ?? NaN)) < 1e-4, `sample ${i}: ${x} vs ${expected[i]}`);
    });
  });

  test("f32 in, i32 and i16 out, both outputs of a fan-out", async () => {
    const input = new Audio(Float32Array.from([0, 0.5, -0.5, 2]), 8_000);
    const pipeline = new Pipeline("fan-out")
      .passThrough("in")
      .formatConverter("to_i32", { target_format: "i32" })
      .formatConverter("to_i16", { target_format: "i16" })
      .connect("in", "to_i32")
      .connect("in", "to_i16");

    const result = await client.execute(pipeline, input);

    const i32 = result.output("to_i32");
    const i16 = result.output("to_i16");
    assert.ok(i32.samples instanceof Int32Array);
    assert.ok(i16.samples instanceof Int16Array);
    assert.deepEqual(Array.from(i16.samples), [0, 16_384, -16_384, 32_767]);
    assert.deepEqual(Array.from(i32.samples), [0, 2 ** 30, -(2 ** 30), 2 ** 31 - 1]);
    assert.deepEqual(Array.from(i16.toFloat32().samples), [0, 0.5, -0.5, 32_767 / 2 ** 15]);
  });

  test("a JSON manifest runs like the builder that wrote it", async () => {
    const pipeline = new Pipeline("halve").passThrough("in").gain("gain", { gain: 0.5 }).connect("in", "gain");
    const text = JSON.stringify(pipeline);
    const result = await client.execute(text, new Audio(Float32Array.from([1, -1]), 8_000));
    assert.deepEqual(Array.from(result.output().samples), [0.5, -0.5]);
  });

  test("the gRPC-Web transport runs unary calls from Node too, and carries no stream (those go over WebSocket)", async () => {
    const web = createClient({ address: server.address, token: TOKEN, transport: "grpc-web" });
    try {
      assert.equal((await web.getVersion()).compatible, true);
      const result = await web.execute(new Pipeline("web").passThrough("in"), new Audio(Int32Array.from([7, -7]), 8_000));
      assert.deepEqual(Array.from(result.output().samples), [7, -7]);
    } finally {
      web.close();
    }
  });

  test("gzip-compressed requests are accepted", async () => {
    const gzip = createClient({ address: server.address, token: TOKEN, compression: "gzip" });
    try {
      const input = new Audio(new Float32Array(16_000), 16_000);
      const result = await gzip.execute(new Pipeline("quiet").passThrough("in"), input);
      assert.equal(result.output().samples.length, 16_000);
    } finally {
      gzip.close();
    }
  });

  test("a gRPC-Web call in JSON (useBinaryFormat: false) is told to send protobuf", async () => {
    const json = createRawClient(pb.PipelineService, createGrpcWebTransport({ baseUrl: server.url, httpVersion: "1.1", useBinaryFormat: false }));
    for (const call of [() => json.getVersion({}), () => json.executePipeline({}, { headers: { authorization: `Bearer ${TOKEN}` } })]) {
      const e = await call().then(
        () => assert.fail("the call succeeded"),
        (err: unknown) => err,
      );
      assert.ok(e instanceof ConnectError, String(e));
      assert.equal(e.code, ConnectCode.Unimplemented, e.message);
      assert.match(e.message, /send protobuf messages \(connect-web: useBinaryFormat: true\): messages encoded as `json` are not supported \(the call's content-type is `application\/grpc-web\+json`\)/);
      const error = toRemoteMediaError(e);
      assert.equal(error.kind, "VALIDATION");
      assert.deepEqual(
        error.violations.map((v) => v.field),
        ["content-type"],
      );
    }
  });

  test("a call made with the Connect protocol is told which transports the server speaks", async () => {
    for (const useBinaryFormat of [false, true]) {
      const connect = createRawClient(pb.PipelineService, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", useBinaryFormat }));
      const e = await connect.getVersion({}).then(
        () => assert.fail("the call succeeded"),
        (err: unknown) => err,
      );
      assert.ok(e instanceof ConnectError, String(e));
      assert.equal(e.code, ConnectCode.Unimplemented, e.message);
      assert.match(e.message, /not the Connect protocol: call it through createGrpcWebTransport \(browsers\) or createGrpcTransport \(Node\)/);
    }
    // A stream's error is its end-of-stream message, the only place a Connect client reads it.
    const streaming = createRawClient(pb.PipelineService, createConnectTransport({ baseUrl: server.url, httpVersion: "2" }));
    const e = await (async () => {
      for await (const response of streaming.streamPipeline((async function* () {})())) assert.fail(`a response arrived: ${response.response.case}`);
    })().then(
      () => assert.fail("the stream succeeded"),
      (err: unknown) => err,
    );
    assert.ok(e instanceof ConnectError, String(e));
    assert.equal(e.code, ConnectCode.Unimplemented, e.message);
    assert.match(e.message, /not the Connect protocol/);
  });
});

describe("errors", () => {
  test("a token a header cannot carry is refused without being shown; one read with its newline works", async () => {
    assert.throws(
      () => createClient({ address: server.address, token: "sec\u0000ret" }),
      (e: unknown) =>
        e instanceof RemoteMediaError && e.kind === "VALIDATION" && e.message.includes("only visible ASCII") && !e.message.includes("sec"),
    );
    const trimmed = createClient({ address: server.address, token: `${TOKEN}\n` });
    try {
      const result = await trimmed.execute(new Pipeline("p").gain("g", { gain: 2 }), new Audio(new Float32Array(4), 8_000));
      assert.equal(result.output("g").samples.length, 4);
    } finally {
      trimmed.close();
    }
  });

  test("limits that are not whole numbers from 0 are a validation error naming them", async () => {
    for (const limits of [{ maxTimeoutMs: -1 }, { maxTimeoutMs: 1.5 }, { maxMemoryBytes: 2 ** 70 }]) {
      const error = await failure(() =>
        client.execute(new Pipeline("p").gain("g"), { audio: { g: new Audio(new Float32Array(4), 8_000) }, limits }),
      );
      assert.equal(error.kind, "VALIDATION");
      const [name, value] = Object.entries(limits)[0] as [string, number];
      assert.match(error.message, new RegExp(`limits\\.${name} must be a whole number from 0`));
      assert.ok(error.message.includes(String(value)), error.message);
    }
  });

  test("options and inputs of the wrong kind are a VALIDATION error naming them, before anything is sent", async () => {
    // What plain JavaScript (or settings read from a file) can pass where TypeScript would not compile.
    const loose = (value: unknown): never => value as never;
    const refused = async (call: () => unknown, field: string, says: RegExp): Promise<void> => {
      const error = await failure(async () => {
        await call();
      });
      assert.equal(error.kind, "VALIDATION", error.message);
      const violation = error.violations.find((v) => v.field === field);
      assert.ok(violation !== undefined, `${field} not named in: ${error.message}`);
      assert.match(violation.description, says);
    };
    const audio = new Audio(new Float32Array(4), 8_000);
    const p = new Pipeline("p").gain("g");
    await refused(() => createClient({ address: loose(5) }), "address", /must be a string, got 5/);
    await refused(() => createClient({ address: "a:b:c" }), "address", /"a:b:c" is not a host:port or an http\(s\) URL/);
    await refused(() => createClient({ baseUrl: "ws://127.0.0.1:1" }), "baseUrl", /the scheme must be http or https, got ws/);
    // A host:port is not a URL of scheme "localhost" (nor refused as no URL at all).
    for (const [given, url] of [
      ["localhost:50051", "http://localhost:50051"],
      ["127.0.0.1:50051/", "http://127.0.0.1:50051"],
    ] as const) {
      const c = createClient({ baseUrl: given });
      assert.equal(c.baseUrl, url);
      c.close();
    }
    await refused(() => new Audio(new Float32Array(4), 2 ** 32), "audio", /sampleRate must be a whole number of Hz from 1 to 4294967295/);
    await refused(() => createClient({ address: server.address, timeoutMs: -1 }), "timeoutMs", /0 or more, got -1/);
    await refused(() => createClient({ address: server.address, transport: loose("udp") }), "transport", /"grpc" or "grpc-web", got "udp"/);
    // gRPC-Web has no bidirectional calls; a browser has no HTTP/2 gRPC (its transport factory, tried here).
    await refused(() => createClient({ address: server.address, transport: "grpc-web", streamTransport: "grpc" }), "streamTransport", /unary calls only/);
    await refused(() => openBrowserTransport({ kind: "grpc", baseUrl: server.url, interceptors: [], gzip: false }), "transport", /use "grpc-web", got "grpc"/);
    await refused(() => createClient({ address: server.address, retry: loose({ maxRetries: 0 }) }), "retry.maxRetries", /not an option.*maxAttempts/);
    await refused(() => createClient({ address: server.address, retry: { jitter: 1 } }), "retry.jitter", /\[0, 1\), got 1/);
    await refused(() => createClient(loose({ adress: server.address })), "adress", /not an option here/);
    await refused(() => client.execute(p, audio, { timeoutMs: -5 }), "timeoutMs", /0 or more, got -5/);
    await refused(() => client.execute(p, audio, { signal: loose(5) }), "signal", /must be an AbortSignal/);
    await refused(() => client.execute(p, loose("abc")), "inputs", /must be an Audio or \{ audio, data, outputNodes, limits \}/);
    await refused(() => client.execute(p, { audio: { g: audio }, outputNodes: loose("g") }), "inputs.outputNodes", /array of node ids/);
    await refused(() => client.execute(p, { audio: { g: audio }, data: loose(["x"]) }), "inputs.data", /object of node id/);
    await refused(() => client.execute(p, { audio: { g: loose("x") } }), "audio_inputs[g]", /must be an Audio, got "x"/);
    await refused(() => client.execute(p, { audio: { g: audio }, data: { g: 10n } }), "data_inputs[g]", /not JSON-serialisable: .*BigInt/);
    // A source fed data JSON cannot write is named for that, not also as a source without input.
    const unwritable = await failure(() => client.execute(new Pipeline("t").textToSpeech("t"), { data: { t: 10n } }));
    assert.deepEqual(
      unwritable.violations.map((v) => v.field),
      ["data_inputs[t]"],
    );
    await refused(() => client.execute(p, { audio: { g: audio }, limits: loose({ timeoutMs: 5 }) }), "limits.timeoutMs", /not an option/);
    await refused(() => client.stream(p, { inputNode: "nope" }), "inputNode", /no node "nope" in this pipeline/);
    await refused(() => client.stream(p, { maxBufferedChunks: 0 }), "maxBufferedChunks", /1 or more, got 0/);
    await refused(() => new Pipeline(loose(5)), "name", /must be a string, got 5/);
    await refused(() => new Pipeline("q").gain(loose(7)), "nodes[0].id", /must be a string, got 7/);
    await refused(() => new Pipeline("q").gain("g", loose(5)), "nodes[0].params", /object of parameter names/);
    await refused(() => new Pipeline("q").gain("g", {}, loose(5)), "nodes[0]", /must be an object, got 5/);
    await refused(() => new Pipeline("q").gain("g").connect("g", loose(undefined)), "connections[0].to", /must be a node id, got undefined/);
    await refused(() => Audio.fromChannels(loose("x"), 8_000), "audio", /array of sample arrays/);
    // JSON.stringify would send NaN as null, which the service reads as "use the default".
    await refused(() => client.execute(new Pipeline("n").gain("g", { gain_db: NaN }), audio), "nodes[0].params.gain_db", /is NaN/);
    await refused(() => client.stream(new Pipeline("n").gain("g", { gain: Infinity })), "nodes[0].params.gain", /is Infinity/);
    const cycle: Record<string, unknown> = {};
    cycle["self"] = cycle;
    await refused(() => client.execute(new Pipeline("n").node("x", "SomePluginNode", { cycle }), audio), "nodes[0].params.cycle.self", /contains itself/);
    await refused(() => client.stream(new Pipeline("n").gain("g", { gain_db: 3n as unknown as number })), "nodes[0].params.gain_db", /BigInt/);
    await refused(() => client.execute(p, loose(new Float32Array(4))), "inputs", /wrap samples in new Audio/);
    const twoSources = new Pipeline("two").gain("a").gain("b");
    await refused(() => client.execute(twoSources, { audio }), "inputs.audio", /2 source nodes \(a, b\); name the node to feed/);
    // The client is unharmed: a correct call still runs.
    assert.equal((await client.execute(p, audio, { timeoutMs: 10_000 })).output("g").samples.length, 4);
    // One Audio as `inputs.audio` feeds the only source, beside limits.
    assert.equal((await client.execute(p, { audio, limits: { maxAudioSamples: 100 } })).output("g").samples.length, 4);
  });

  test("an invalid pipeline is a VALIDATION error listing every violation", async () => {
    const pipeline = new Pipeline("broken")
      .passThrough("in")
      .node("ghost", "NoSuchNode")
      .gain("a", { gain: 2 })
      .gain("b", { gain: 2 })
      .connect("in", "a")
      .connect("a", "b")
      .connect("b", "a")
      .connect("in", "ghost");

    const error = await failure(() => client.execute(pipeline, new Audio(new Float32Array(4), 8_000)));

    assert.equal(error.kind, "VALIDATION");
    assert.ok(error.violations.length >= 2, JSON.stringify(error.violations));
    const text = error.violations.map((v) => `${v.field}: ${v.description}`).join("\n");
    assert.match(text, /NoSuchNode/);
    // The available types are listed once, in the message, not once per violation.
    assert.doesNotMatch(text, /GainNode/);
    assert.equal(error.message.match(/GainNode/g)?.length, 1, error.message);
    assert.match(text, /a → b → a|b → a → b/);
    assert.ok(error.violations.some((v) => v.nodeId === "ghost"));
  });

  test("an unknown node type beside other problems: the service lists them all, even for a bare Audio", async () => {
    // Two sources, so a bare Audio has no node to go to; only the service can name the type.
    const pipeline = new Pipeline("two").node("ghost", "NoSuchNode").gain("g", { gain_db: 500 });
    const error = await failure(() => client.execute(pipeline, new Audio(new Float32Array(4), 8_000)));
    assert.equal(error.kind, "VALIDATION");
    const text = error.violations.map((v) => `${v.field}: ${v.description}`).join("\n");
    assert.match(text, /NoSuchNode/);
    assert.match(text, /gain_db/);
    assert.ok(error.violations.length >= 3, text);
  });

  test("bad node parameters name the node and the parameter", async () => {
    const pipeline = new Pipeline("bad-rate").audioResample("rs", { output_rate: -5 });
    const error = await failure(() => client.execute(pipeline, new Audio(new Float32Array(4), 8_000)));
    assert.equal(error.kind, "VALIDATION");
    assert.ok(error.violations.some((v) => v.nodeId === "rs" && /output_rate/.test(`${v.field} ${v.description}`)));
  });

  test("inputs for nodes the pipeline does not have are refused before sending", async () => {
    const error = await failure(() =>
      client.execute(new Pipeline("p").passThrough("in"), { audio: { in: new Audio(new Float32Array(2), 8_000), nope: new Audio(new Float32Array(2), 8_000) } }),
    );
    assert.equal(error.kind, "VALIDATION");
    assert.equal(error.code, undefined);
    assert.deepEqual(
      error.violations.map((v) => v.field),
      ["audio_inputs[nope]"],
    );
  });

  test("a missing or wrong token is an AUTHENTICATION error; GetVersion needs none", async () => {
    const pipeline = new Pipeline("p").passThrough("in");
    const input = new Audio(new Float32Array(2), 8_000);
    for (const token of [undefined, "wrong-token"]) {
      const anonymous = createClient({ address: server.address, ...(token === undefined ? {} : { token }) });
      try {
        const error = await failure(() => anonymous.execute(pipeline, input));
        assert.equal(error.kind, "AUTHENTICATION");
        assert.equal(error.code, Code.Unauthenticated);
        assert.equal(error.reason, "AUTHENTICATION");
        assert.equal(error.domain, "remotemedia.v1");
        assert.doesNotMatch(error.message, new RegExp(TOKEN));
        assert.equal((await anonymous.getVersion()).compatible, true);
        // A stream's refusal names the same reason over either transport.
        for (const streamTransport of ["grpc", "websocket"] as const) {
          const refused = createClient({ address: server.address, streamTransport, ...(token === undefined ? {} : { token }) });
          try {
            const e = await failure(() => refused.stream(pipeline));
            assert.equal(e.kind, "AUTHENTICATION", streamTransport);
            assert.equal(e.reason, "AUTHENTICATION", streamTransport);
          } finally {
            refused.close();
          }
        }
      } finally {
        anonymous.close();
      }
    }
  });

  test("an unsupported protocol version is a VERSION_MISMATCH error listing the supported ones", async () => {
    const future = createClient({ address: server.address, token: TOKEN, protocolVersion: "v9" });
    try {
      const error = await failure(() => future.execute(new Pipeline("p").passThrough("in"), new Audio(new Float32Array(2), 8_000)));
      assert.equal(error.kind, "VERSION_MISMATCH");
      assert.equal(error.code, Code.FailedPrecondition);
      assert.equal(error.reason, "VERSION_MISMATCH");
      assert.deepEqual(error.supportedVersions, ["v1"]);
      assert.match(error.message, /v1/);

      // A stream carries no client_version field: the refusal comes from the header.
      const stream = await failure(() => future.stream(new Pipeline("p").passThrough("in")));
      assert.equal(stream.kind, "VERSION_MISMATCH");
      assert.deepEqual(stream.supportedVersions, ["v1"]);

      const version = await future.getVersion();
      assert.equal(version.compatible, false);
      const refused = await failure(() => future.checkCompatibility());
      assert.equal(refused.kind, "VERSION_MISMATCH");
      assert.deepEqual(refused.supportedVersions, ["v1"]);
    } finally {
      future.close();
    }
  });
});

test("getVersion reports the protocols and every node type", async () => {
  const version = await client.getVersion();
  assert.equal(version.compatible, true);
  assert.equal(version.protocolVersion, "v1");
  assert.ok(version.supportedProtocols.includes("v1"));
  for (const type of ["AudioResampleNode", "VADNode", "FormatConverterNode", "ChannelMixerNode", "AudioChunkerNode"]) {
    assert.ok(version.supportedNodeTypes.includes(type), `${type} in ${version.supportedNodeTypes.join(", ")}`);
  }
  assert.notEqual(version.runtimeVersion, "");
  await client.checkCompatibility();
});
