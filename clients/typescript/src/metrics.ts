// Execution and stream metrics in plain numbers (the wire's uint64 fields become numbers).
import type { ExecutionMetrics as WireExecutionMetrics } from "./gen/remotemedia/v1/execution_pb.js";
import type { StreamMetrics as WireStreamMetrics } from "./gen/remotemedia/v1/streaming_pb.js";

export interface NodeMetrics {
  /** Time spent in the node, milliseconds with microsecond precision. */
  executionTimeMs: number;
  /** Bytes held by the node's outputs. */
  memoryBytes: number;
  /** Input samples processed, all channels. */
  samplesProcessed: number;
  /** Node-specific figures (the wire's `custom_metrics`); always has `runtime` ("rust" or "python"). */
  customMetrics: Record<string, unknown>;
  /** The same object as `customMetrics`, by its shorter name. */
  custom: Record<string, unknown>;
}

export interface ExecutionMetrics {
  wallTimeMs: number;
  cpuTimeMs: number;
  /** Peak bytes held by the pipeline's inputs and node outputs. */
  memoryUsedBytes: number;
  serializationTimeMs: number;
  /** Keyed by node id; empty when the pipeline disabled metrics. */
  nodes: Record<string, NodeMetrics>;
}

export interface StreamMetrics {
  chunksProcessed: number;
  averageLatencyMs: number;
  totalSamples: number;
}

/** Plain-number metrics; zeros when the server sent none. */
export function executionMetrics(m: WireExecutionMetrics | undefined): ExecutionMetrics {
  if (m === undefined) return { wallTimeMs: 0, cpuTimeMs: 0, memoryUsedBytes: 0, serializationTimeMs: 0, nodes: {} };
  const nodes: Record<string, NodeMetrics> = {};
  for (const [id, n] of Object.entries(m.nodeMetrics)) {
    const custom = jsonObject(n.customMetrics);
    nodes[id] = {
      executionTimeMs: n.executionTimeMs,
      memoryBytes: Number(n.memoryBytes),
      samplesProcessed: Number(n.samplesProcessed),
      customMetrics: custom,
      custom,
    };
  }
  return {
    wallTimeMs: m.wallTimeMs,
    cpuTimeMs: m.cpuTimeMs,
    memoryUsedBytes: Number(m.memoryUsedBytes),
    serializationTimeMs: m.serializationTimeMs,
    nodes,
  };
}

export function streamMetrics(m: WireStreamMetrics): StreamMetrics {
  return {
    chunksProcessed: Number(m.chunksProcessed),
    averageLatencyMs: m.averageLatencyMs,
    totalSamples: Number(m.totalSamples),
  };
}

function jsonObject(text: string): Record<string, unknown> {
  if (text === "") return {};
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}
