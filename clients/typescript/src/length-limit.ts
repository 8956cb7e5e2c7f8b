// The ways past a limit that a long input runs into (message size, samples, memory, time):
// streaming, and the request's own `limits` where the request may raise that limit itself.
import type { RemoteMediaError } from "./error.js";
import type { ExecuteRequest } from "./gen/remotemedia/v1/execution_pb.js";

/** The limits a long input runs into, and the `limits` field that raises each (undefined: only the server's operator can). */
const LENGTH_LIMITS: Record<string, "maxAudioSamples" | "maxMemoryBytes" | "maxTimeoutMs" | undefined> = {
  max_message_bytes: undefined,
  max_audio_samples: "maxAudioSamples",
  max_memory_bytes: "maxMemoryBytes",
  max_timeout_ms: "maxTimeoutMs",
};

/** Inputs shorter than this (seconds of audio) did not run out of time for their length. */
const SHORT_INPUT_S = 1;

/**
 * Adds to a RESOURCE_LIMIT error that `request` ran into because of its length a `hint` (also
 * appended to the message) naming the ways past it. A limit the request set itself gets no hint:
 * its value, or the server's cap on it, is the problem. Returns `error`.
 */
export function explainLengthLimit(error: RemoteMediaError, request: ExecuteRequest): RemoteMediaError {
  const limit = error.limit;
  if (error.kind !== "RESOURCE_LIMIT" || limit === undefined || !(limit in LENGTH_LIMITS)) return error;
  const field = LENGTH_LIMITS[limit];
  if (field !== undefined && (request.resourceLimits?.[field] ?? 0n) > 0n) return error;
  let samples = 0n;
  let bytes = 0;
  let longestS = 0;
  for (const buffer of Object.values(request.audioInputs)) {
    samples += buffer.numSamples;
    bytes += buffer.samples.byteLength;
    if (buffer.sampleRate > 0) longestS = Math.max(longestS, Number(buffer.numSamples) / Math.max(buffer.channels, 1) / buffer.sampleRate);
  }
  // Under a second of audio did not run out of time for its length: chunks would not help.
  if (limit === "max_timeout_ms" && longestS < SHORT_INPUT_S) return error;
  const stream = "send long audio in chunks instead: client.stream(pipeline), then session.send(chunk) for each chunk";
  const raise =
    field === undefined
      ? "execute(pipeline, { audio, limits: { maxAudioSamples, maxMemoryBytes, maxTimeoutMs } }) raises the other " +
        "per-request limits up to the server's caps, but not the message size, which is the server's --max-message-bytes"
      : `or raise the limit for this request: execute(pipeline, { audio, limits: { ${field}: ... } }), up to the server's cap`;
  error.hint = `The request carries ${samples.toLocaleString("en")} samples (${(bytes / 2 ** 20).toFixed(1)} MiB): ${stream}; ${raise}.`;
  error.message = `${error.message}\n${error.hint}`;
  return error;
}
