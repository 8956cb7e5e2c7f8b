// Parameter types of the built-in node types (docs/nodes.md), used by Pipeline's typed helpers.
// Keys are spelled as the server reads them.
import type { SampleFormat } from "./sample-format.js";

export interface AudioResampleParams {
  /** Target sample rate, Hz (1000–768000). */
  output_rate: number;
  /** If given, input at another rate is refused. */
  input_rate?: number;
  quality?: "low" | "medium" | "high";
}

export interface VADParams {
  /** Quietest frame level (RMS, dBFS) that may be speech; default -30. */
  threshold_db?: number;
  frame_ms?: 10 | 20 | 30;
  min_speech_ms?: number;
  /** Hangover: silence this long closes a segment. */
  min_silence_ms?: number;
}

/** One `segments` entry of a VADNode. */
export interface SpeechSegment {
  start_s: number;
  end_s: number;
  energy_db: number;
}

export interface FormatConverterParams {
  target_format: SampleFormat;
}

export interface ChannelMixerParams {
  output_channels: number;
}

export type AudioChunkerParams = { chunk_ms: number; chunk_samples?: never } | { chunk_samples: number; chunk_ms?: never };

export type GainParams = { gain_db?: number; gain?: never } | { gain: number; gain_db?: never };

/** The built-in node types, by their full names (each also has an alias without "Node", except the Python-only ones). */
export type BuiltinNodeType =
  | "AudioResampleNode"
  | "VADNode"
  | "FormatConverterNode"
  | "ChannelMixerNode"
  | "AudioChunkerNode"
  | "GainNode"
  | "PassThroughNode"
  | "BandpassFilterNode"
  | "LoudnessNode";

/**
 * Where a node runs: "auto" prefers the native implementation, "rust" requires it, "cpython"
 * requires the Python one (run by the server's embedded interpreter).
 */
export type Runtime = "auto" | "rust" | "cpython";
