// Audio: checks, interleaving, and the wire AudioBuffer in each sample format.
import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Audio, pb } from "../src/index.js";
import { validationOf } from "./expect.js";

test("the typed array decides the sample format", () => {
  assert.equal(new Audio(new Float32Array(2), 8_000).format, "f32");
  assert.equal(new Audio(new Int16Array(2), 8_000).format, "i16");
  assert.equal(new Audio(new Int32Array(2), 8_000).format, "i32");
  validationOf(() => new Audio(new Float64Array(2) as unknown as Float32Array, 8_000));
});

test("rates, channel counts and partial frames are refused", () => {
  validationOf(() => new Audio(new Float32Array(4), 0));
  validationOf(() => new Audio(new Float32Array(4), 44_100.5));
  validationOf(() => new Audio(new Float32Array(4), 8_000, 0));
  const e = validationOf(() => new Audio(new Float32Array(5), 8_000, 2));
  assert.match(e.violations[0]?.description ?? "", /whole frames of 2 channels/);
});

test("NaN and infinite float samples are refused, naming the first, as the Python client refuses them", () => {
  for (const [bad, shown] of [
    [Number.NaN, "NaN"],
    [Number.POSITIVE_INFINITY, "Infinity"],
  ] as const) {
    const e = validationOf(() => new Audio(Float32Array.from([0, 0.5, bad, bad]), 8_000));
    assert.equal(e.violations[0]?.description, `samples must be finite; sample 2 is ${shown}`);
  }
  assert.equal(new Audio(Float32Array.from([0, -1, 1]), 8_000).samples.length, 3);
});

test("channels interleave and de-interleave in every format", () => {
  for (const Type of [Float32Array, Int16Array, Int32Array] as const) {
    const left = Type.from([1, 2, 3]);
    const right = Type.from([-1, -2, -3]);
    const audio = Audio.fromChannels([left, right], 48_000);
    assert.ok(audio.samples instanceof Type);
    assert.deepEqual(Array.from(audio.samples), [1, -1, 2, -2, 3, -3]);
    assert.equal(audio.channels, 2);
    assert.equal(audio.frames, 3);
    assert.deepEqual(audio.toChannels().map((c) => Array.from(c)), [[1, 2, 3], [-1, -2, -3]]);
    assert.throws(() => audio.channel(2), RangeError);
  }
  validationOf(() => Audio.fromChannels([Float32Array.from([1, 2]), Float32Array.from([1])], 8_000));
  validationOf(() => Audio.fromChannels([], 8_000));
});

test("the wire form is little-endian bytes with num_samples counting every channel", () => {
  const audio = new Audio(Int16Array.from([1, -2, 258, 0]), 16_000, 2);
  const wire = audio.toProto();
  assert.equal(wire.format, pb.AudioFormat.I16);
  assert.equal(wire.numSamples, 4n);
  assert.equal(wire.channels, 2);
  assert.equal(wire.sampleRate, 16_000);
  assert.deepEqual(Array.from(wire.samples), [1, 0, 0xfe, 0xff, 2, 1, 0, 0]);

  for (const samples of [Float32Array.from([0.25, -1, 3.5]), Int16Array.from([7, -7, 32_767]), Int32Array.from([2 ** 31 - 1, -(2 ** 31), 5])]) {
    const back = Audio.fromProto(new Audio(samples, 22_050, 3).toProto());
    assert.equal(back.samples.constructor, samples.constructor);
    assert.deepEqual(Array.from(back.samples), Array.from(samples));
    assert.equal(back.channels, 3);
    assert.equal(back.sampleRate, 22_050);
  }
});

test("unaligned wire bytes decode, and a byte count that disagrees with num_samples is refused", () => {
  const bytes = new Uint8Array(9);
  new DataView(bytes.buffer).setFloat32(1, 0.5, true);
  new DataView(bytes.buffer).setFloat32(5, -2, true);
  const unaligned = bytes.subarray(1);
  const audio = Audio.fromProto(
    create(pb.AudioBufferSchema, { samples: unaligned, sampleRate: 8_000, channels: 1, format: pb.AudioFormat.F32, numSamples: 2n }),
  );
  assert.deepEqual(Array.from(audio.samples), [0.5, -2]);

  const wrong = create(pb.AudioBufferSchema, { samples: new Uint8Array(6), sampleRate: 8_000, channels: 1, format: pb.AudioFormat.F32, numSamples: 2n });
  assert.match(validationOf(() => Audio.fromProto(wrong)).message, /holds 6 bytes, expected 8/);
  const unspecified = create(pb.AudioBufferSchema, { samples: new Uint8Array(4), sampleRate: 8_000, channels: 1, numSamples: 1n });
  validationOf(() => Audio.fromProto(unspecified));
});

test("toFloat32 scales integers as the server's format converter does", () => {
  assert.deepEqual(Array.from(new Audio(Int16Array.from([-32_768, 16_384]), 8_000).toFloat32().samples), [-1, 0.5]);
  assert.deepEqual(Array.from(new Audio(Int32Array.from([-(2 ** 31), 2 ** 29]), 8_000).toFloat32().samples), [-1, 0.25]);
  const f = new Audio(Float32Array.from([0.1]), 8_000);
  assert.equal(f.toFloat32(), f);
  assert.equal(new Audio(new Float32Array(8_000 * 2), 8_000, 2).durationSeconds, 1);
});

test("fromChannels refuses one array per frame, the layout of frames-first data, and says what to pass", () => {
  // 160 frames of stereo given as 160 arrays of 2 samples would be 160 channels of 2 frames.
  const frames = Array.from({ length: 160 }, (_, i) => Float32Array.from([i / 160, -i / 160]));
  const e = validationOf(() => Audio.fromChannels(frames, 16_000));
  assert.match(e.message, /160 arrays of 2 samples/);
  assert.match(e.message, /one array per channel/);
  assert.match(e.message, /new Audio\(samples, rate, 2\)/);
  // Short chunks of real layouts pass: one frame of stereo, two frames of 7.1.
  assert.equal(Audio.fromChannels([Float32Array.of(0.1), Float32Array.of(0.2)], 48_000).frames, 1);
  assert.equal(Audio.fromChannels(Array.from({ length: 8 }, () => new Float32Array(2)), 48_000).channels, 8);
});

test("plain arrays are refused with what to pass instead", () => {
  const numbers = validationOf(() => new Audio([0.1, 0.2] as unknown as Float32Array, 8_000));
  assert.match(numbers.message, /Float32Array\.from\(values\)/);
  const channels = validationOf(() => new Audio([new Float32Array(2), new Float32Array(2)] as unknown as Float32Array, 8_000));
  assert.match(channels.message, /Audio\.fromChannels/);
});

test("a channel that is not a typed array, and a channel count that is not a number, are VALIDATION errors saying so", () => {
  const missing = validationOf(() => Audio.fromChannels([new Float32Array(2), undefined as unknown as Float32Array], 8_000));
  assert.match(missing.message, /channel 1 must be a typed array of samples, got undefined/);
  const text = validationOf(() => new Audio(new Float32Array(4), 8_000, "2" as unknown as number));
  assert.match(text.message, /channels must be an integer from 1 to 256, got "2"/);
});
