// Audio: interleaved samples with their rate and channel count, and the conversions to and from
// the wire AudioBuffer (little-endian bytes, num_samples counting every channel).
import { create } from "@bufbuild/protobuf";
import { validationError } from "./error.js";
import { describe } from "./options-check.js";
import { type AudioBuffer, AudioBufferSchema } from "./gen/remotemedia/v1/common_pb.js";
import {
  type SampleFormat,
  type Samples,
  bytesPerSample,
  decodeSamples,
  encodeSamples,
  formatOf,
  fromWireFormat,
  toWireFormat,
} from "./sample-format.js";

/** The most channels the service accepts in one buffer. */
export const MAX_CHANNELS = 256;

/**
 * `Audio.fromChannels` refuses more arrays than this when they are shorter than their count:
 * those are frames (one array per sample instant), not channels. Up to 7.1 (8 channels), a
 * short chunk passes as it is.
 */
export const LAYOUT_CHECK_CHANNELS = 8;

/**
 * Interleaved multi-channel audio (L, R, L, R, ... for stereo). The typed array decides the
 * sample format: `Float32Array` is f32, `Int16Array` i16, `Int32Array` i32.
 */
export class Audio<S extends Samples = Samples> {
  readonly samples: S;
  readonly sampleRate: number;
  readonly channels: number;

  constructor(samples: S, sampleRate: number, channels = 1) {
    formatOf(samples);
    // The wire's sample_rate is a uint32.
    if (!Number.isInteger(sampleRate) || sampleRate <= 0 || sampleRate > 0xffff_ffff) {
      throw invalid(`sampleRate must be a whole number of Hz from 1 to 4294967295, got ${describe(sampleRate)}`);
    }
    if (!Number.isInteger(channels) || channels < 1 || channels > MAX_CHANNELS) {
      throw invalid(`channels must be an integer from 1 to ${MAX_CHANNELS}, got ${describe(channels)}`);
    }
    if (samples.length % channels !== 0) {
      throw invalid(`${samples.length} samples do not make whole frames of ${channels} channels`);
    }
    if (samples instanceof Float32Array) {
      // As the Python client refuses them: the service would fail the node that reads them.
      const index = samples.findIndex((s) => !Number.isFinite(s));
      if (index >= 0) throw invalid(`samples must be finite; sample ${index} is ${String(samples[index])}`);
    }
    this.samples = samples;
    this.sampleRate = sampleRate;
    this.channels = channels;
  }

  /**
   * Interleaves one array per channel (all of the same length and type): channels first, as Web
   * Audio's `getChannelData(i)` and most decoders give them. More than 8 arrays, each shorter
   * than their count, are refused as one array per frame; interleave those into `new Audio`.
   */
  static fromChannels<S extends Samples>(channels: readonly S[], sampleRate: number): Audio<S> {
    const given: unknown = channels;
    if (!Array.isArray(given)) {
      throw invalid(`channels must be an array of sample arrays, one per channel, got ${describe(channels)}`);
    }
    const first = channels[0];
    if (first === undefined) throw invalid("at least one channel is required");
    const bad = channels.findIndex((c: unknown) => !ArrayBuffer.isView(c));
    if (bad >= 0) throw invalid(`channel ${bad} must be a typed array of samples, got ${describe(channels[bad])}`);
    const frames = first.length;
    if (channels.length > LAYOUT_CHECK_CHANNELS && frames < channels.length) {
      throw invalid(
        `Audio.fromChannels takes one array per channel, but got ${channels.length} arrays of ${frames} samples: ` +
          `these look like frames (one array per sample instant); pass one array per channel, or the ` +
          `interleaved samples with their channel count: new Audio(samples, rate, ${frames})`,
      );
    }
    const out = new (first.constructor as new (n: number) => S)(frames * channels.length);
    channels.forEach((channel, c) => {
      if (channel.length !== frames || channel.constructor !== first.constructor) {
        throw invalid(`channel ${c} differs from channel 0 in length or sample type`);
      }
      for (let i = 0; i < frames; i++) out[i * channels.length + c] = channel[i] as number;
    });
    return new Audio(out, sampleRate, channels.length);
  }

  /** Decodes a wire AudioBuffer, refusing buffers whose byte count does not match `num_samples`. */
  static fromProto(buffer: AudioBuffer): Audio {
    const format = fromWireFormat(buffer.format);
    const expected = Number(buffer.numSamples) * bytesPerSample(format);
    if (buffer.samples.byteLength !== expected) {
      throw invalid(
        `audio buffer holds ${buffer.samples.byteLength} bytes, expected ${expected} (${buffer.numSamples} ${format} samples)`,
      );
    }
    return new Audio(decodeSamples(buffer.samples, format), buffer.sampleRate, buffer.channels);
  }

  get format(): SampleFormat {
    return formatOf(this.samples);
  }

  /** Samples per channel. */
  get frames(): number {
    return this.samples.length / this.channels;
  }

  get durationSeconds(): number {
    return this.frames / this.sampleRate;
  }

  /** One channel, de-interleaved into a new array. */
  channel(index: number): S {
    if (!Number.isInteger(index) || index < 0 || index >= this.channels) {
      throw new RangeError(`channel ${index} does not exist (${this.channels} channels)`);
    }
    const out = new (this.samples.constructor as new (n: number) => S)(this.frames);
    for (let i = 0; i < out.length; i++) out[i] = this.samples[i * this.channels + index] as number;
    return out;
  }

  /** Every channel, de-interleaved. */
  toChannels(): S[] {
    return Array.from({ length: this.channels }, (_, c) => this.channel(c));
  }

  /** The samples as floats: integers divided by 2^15 (i16) or 2^31 (i32), as the server converts. */
  toFloat32(): Audio<Float32Array> {
    if (this.samples instanceof Float32Array) return this as Audio<Float32Array>;
    const scale = this.samples instanceof Int16Array ? 2 ** 15 : 2 ** 31;
    const out = new Float32Array(this.samples.length);
    for (let i = 0; i < out.length; i++) out[i] = (this.samples[i] as number) / scale;
    return new Audio(out, this.sampleRate, this.channels);
  }

  /** The wire form; shares the sample memory on little-endian hosts. */
  toProto(): AudioBuffer {
    return create(AudioBufferSchema, {
      samples: encodeSamples(this.samples),
      sampleRate: this.sampleRate,
      channels: this.channels,
      format: toWireFormat(this.format),
      numSamples: BigInt(this.samples.length),
    });
  }
}

function invalid(description: string): Error {
  return validationError([{ field: "audio", description }]);
}
