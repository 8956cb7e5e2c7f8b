// Sample formats: typed-array kinds, their wire enum and little-endian byte conversion.
import { validationError } from "./error.js";
import { AudioFormat } from "./gen/remotemedia/v1/common_pb.js";

/** Interleaved samples of one of the three wire formats. */
export type Samples = Float32Array | Int16Array | Int32Array;

/** Short name of a sample format, as node parameters spell it (`target_format`). */
export type SampleFormat = "f32" | "i16" | "i32";

const littleEndianHost = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function formatOf(samples: Samples): SampleFormat {
  if (samples instanceof Float32Array) return "f32";
  if (samples instanceof Int16Array) return "i16";
  if (samples instanceof Int32Array) return "i32";
  const given: unknown = samples;
  let hint = "";
  if (Array.isArray(given)) {
    hint = given.some((x) => ArrayBuffer.isView(x) || Array.isArray(x))
      ? ": for one array per channel, use Audio.fromChannels(channels, rate)"
      : ": wrap a plain array of numbers, e.g. Float32Array.from(values)";
  }
  throw validationError([{ field: "audio", description: `samples must be a Float32Array, Int16Array or Int32Array${hint}` }]);
}

export function toWireFormat(format: SampleFormat): AudioFormat {
  switch (format) {
    case "f32":
      return AudioFormat.F32;
    case "i16":
      return AudioFormat.I16;
    case "i32":
      return AudioFormat.I32;
  }
}

export function fromWireFormat(format: AudioFormat): SampleFormat {
  switch (format) {
    case AudioFormat.F32:
      return "f32";
    case AudioFormat.I16:
      return "i16";
    case AudioFormat.I32:
      return "i32";
    default:
      throw validationError([{ field: "audio.format", description: `unknown audio format ${String(format)}` }]);
  }
}

export function bytesPerSample(format: SampleFormat): number {
  return format === "i16" ? 2 : 4;
}

/** The samples as little-endian bytes; a view of the same memory on little-endian hosts. */
export function encodeSamples(samples: Samples): Uint8Array {
  const bytes = new Uint8Array(samples.buffer, samples.byteOffset, samples.byteLength);
  if (littleEndianHost) return bytes;
  const out = new Uint8Array(samples.byteLength);
  const view = new DataView(out.buffer);
  const width = samples.BYTES_PER_ELEMENT;
  for (let i = 0; i < samples.length; i++) {
    const v = samples[i] as number;
    if (samples instanceof Float32Array) view.setFloat32(i * width, v, true);
    else if (samples instanceof Int16Array) view.setInt16(i * width, v, true);
    else view.setInt32(i * width, v, true);
  }
  return out;
}

/** Little-endian bytes as a typed array of `format`; copies only when alignment or byte order requires it. */
export function decodeSamples(bytes: Uint8Array, format: SampleFormat): Samples {
  const width = bytesPerSample(format);
  if (bytes.byteLength % width !== 0) {
    throw validationError([
      { field: "audio.samples", description: `${bytes.byteLength} bytes is not a whole number of ${format} samples` },
    ]);
  }
  const count = bytes.byteLength / width;
  if (littleEndianHost) {
    // A copy, not `slice()`: on a Node Buffer slice() is a view at the same unaligned offset.
    const aligned = bytes.byteOffset % width === 0 ? bytes : new Uint8Array(bytes);
    switch (format) {
      case "f32":
        return new Float32Array(aligned.buffer, aligned.byteOffset, count);
      case "i16":
        return new Int16Array(aligned.buffer, aligned.byteOffset, count);
      case "i32":
        return new Int32Array(aligned.buffer, aligned.byteOffset, count);
    }
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (format) {
    case "f32":
      return Float32Array.from({ length: count }, (_, i) => view.getFloat32(i * 4, true));
    case "i16":
      return Int16Array.from({ length: count }, (_, i) => view.getInt16(i * 2, true));
    case "i32":
      return Int32Array.from({ length: count }, (_, i) => view.getInt32(i * 4, true));
  }
}
