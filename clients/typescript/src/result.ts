// PipelineResult: the outputs of one run or one stream chunk, decoded: audio as Audio, data
// outputs parsed from JSON, VAD segments, metrics and how each node fared.
import { Audio } from "./audio.js";
import type { RemoteMediaError } from "./error.js";
import { ExecutionStatus, type ExecutionResult, NodeStatus } from "./gen/remotemedia/v1/execution_pb.js";
import { type ExecutionMetrics, executionMetrics } from "./metrics.js";
import type { SpeechSegment } from "./nodes.js";
import { fromErrorResponse } from "./to-error.js";

export type RunStatus = "success" | "partial_success" | "failed" | "unspecified";

/** One utterance a SpeechRecognitionNode recognised, in seconds from the start of the input;
 * `confidence` is the mean posterior probability of its words (0 to 1). */
export interface Utterance {
  start_s: number;
  end_s: number;
  text: string;
  confidence: number;
}

/** What a speech recognition node reported in one result: the text of the utterances that
 * ended (at the end of a run, the whole transcript), those utterances, and while streaming the
 * partial hypothesis of the utterance still open (undefined when none is). */
export interface Transcript {
  text: string;
  utterances: Utterance[];
  partial: string | undefined;
}

/** How one node fared: its status, the error when it failed, and its output metadata. */
export interface NodeOutcome {
  nodeId: string;
  status: "success" | "skipped" | "failed" | "unspecified";
  error: RemoteMediaError | undefined;
  metadata: Record<string, unknown>;
}

const RUN_STATUS: Partial<Record<ExecutionStatus, RunStatus>> = {
  [ExecutionStatus.UNSPECIFIED]: "unspecified",
  [ExecutionStatus.SUCCESS]: "success",
  [ExecutionStatus.PARTIAL_SUCCESS]: "partial_success",
  [ExecutionStatus.FAILED]: "failed",
};

const NODE_STATUS: Partial<Record<NodeStatus, NodeOutcome["status"]>> = {
  [NodeStatus.UNSPECIFIED]: "unspecified",
  [NodeStatus.SUCCESS]: "success",
  [NodeStatus.SKIPPED]: "skipped",
  [NodeStatus.FAILED]: "failed",
};

export class PipelineResult {
  /** The `output` audio of every sink node (and of requested output nodes), keyed by node id. */
  readonly audio: Record<string, Audio>;
  /** Each node's non-audio outputs, keyed by node id, then by port (`data.vad.segments`). */
  readonly data: Record<string, Record<string, unknown>>;
  /** The run's figures (zeros when the server sent none). */
  readonly metrics: ExecutionMetrics;
  /** How each node fared, keyed by node id. */
  readonly nodes: Record<string, NodeOutcome>;
  readonly status: RunStatus;
  /** In a stream, the sequence of the chunk this result answers; undefined for ExecutePipeline. */
  readonly sequence: number | undefined;
  /** The wire message, for anything not decoded here. */
  readonly raw: ExecutionResult;

  constructor(result: ExecutionResult, sequence?: number) {
    this.raw = result;
    this.sequence = sequence;
    this.audio = {};
    for (const [id, buffer] of Object.entries(result.audioOutputs)) this.audio[id] = Audio.fromProto(buffer);
    this.data = {};
    for (const [id, text] of Object.entries(result.dataOutputs)) {
      const value = parseJson(text);
      this.data[id] = isRecord(value) ? value : { value };
    }
    this.metrics = executionMetrics(result.metrics);
    this.nodes = {};
    for (const n of result.nodeResults) {
      const metadata = parseJson(n.outputMetadata);
      this.nodes[n.nodeId] = {
        nodeId: n.nodeId,
        status: NODE_STATUS[n.status] ?? "unspecified",
        error: n.error !== undefined && n.error.message !== "" ? fromErrorResponse(n.error) : undefined,
        metadata: isRecord(metadata) ? metadata : {},
      };
    }
    this.status = RUN_STATUS[result.status] ?? "unspecified";
  }

  /** The VAD segments of every node that reported a `segments` list (not a recogniser's
   * utterances: see `transcripts`). */
  get segments(): Record<string, SpeechSegment[]> {
    const out: Record<string, SpeechSegment[]> = {};
    for (const [id, ports] of Object.entries(this.data)) {
      const raw = ports["segments"];
      // A recogniser's utterances are its transcript, even when none ended (an empty list).
      const transcript = "text" in ports || "partial" in ports;
      if (!transcript && Array.isArray(raw) && raw.every((s) => isRecord(s) && "start_s" in s && "end_s" in s && !("text" in s))) {
        out[id] = raw as SpeechSegment[];
      }
    }
    return out;
  }

  /** What each speech recognition node heard (nodes whose data has `text`, `partial` or
   * utterance `segments`). `text` falls back to the utterances' texts when the node's `text`
   * port feeds another node (a connected port's data is not returned). */
  get transcripts(): Record<string, Transcript> {
    const out: Record<string, Transcript> = {};
    for (const [id, ports] of Object.entries(this.data)) {
      const raw = ports["segments"];
      const utterances = Array.isArray(raw) ? raw.filter((s): s is Utterance => isRecord(s) && typeof s["text"] === "string") : [];
      if (!("text" in ports) && !("partial" in ports) && utterances.length === 0) continue;
      const partial = ports["partial"];
      const text = ports["text"];
      out[id] = {
        text: typeof text === "string" ? text : utterances.map((u) => u.text).filter((t) => t !== "").join(" "),
        utterances,
        partial: isRecord(partial) && typeof partial["text"] === "string" ? partial["text"] : undefined,
      };
    }
    return out;
  }

  /** The audio output of `nodeId`, or the only audio output when there is just one. */
  output(nodeId?: string): Audio {
    const names = Object.keys(this.audio);
    const key = nodeId ?? (names.length === 1 ? names[0] : undefined);
    const audio = key === undefined ? undefined : this.audio[key];
    if (audio === undefined) {
      throw new RangeError(
        nodeId === undefined
          ? `name the node: this result has ${names.length} audio outputs (${names.join(", ") || "none"})`
          : `no audio output from "${nodeId}" (outputs: ${names.join(", ") || "none"})`,
      );
    }
    return audio;
  }
}

function parseJson(text: string): unknown {
  if (text === "") return {};
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return { raw: text };
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
