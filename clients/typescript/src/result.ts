// PipelineResult: the outputs of one run or one stream chunk, decoded: audio as Audio, data
// outputs parsed from JSON, VAD segments, metrics and how each node fared.
import { Audio } from "./audio.js";
import type { RemoteMediaError } from "./error.js";
import { ExecutionStatus, type ExecutionResult, NodeStatus } from "./gen/remotemedia/v1/execution_pb.js";
import { type ExecutionMetrics, executionMetrics } from "./metrics.js";
import type { SpeechSegment } from "./nodes.js";
import { fromErrorResponse } from "./to-error.js";

export type RunStatus = "success" | "partial_success" | "failed" | "unspecified";

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

  /** The VAD segments of every node that reported a `segments` list. */
  get segments(): Record<string, SpeechSegment[]> {
    const out: Record<string, SpeechSegment[]> = {};
    for (const [id, ports] of Object.entries(this.data)) {
      const raw = ports["segments"];
      if (Array.isArray(raw) && raw.every((s) => isRecord(s) && "start_s" in s && "end_s" in s)) {
        out[id] = raw as SpeechSegment[];
      }
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
