// Types about nodes that no declaration generates: where a node runs, and the shape of a VAD
// segment. Parameter types and builders are generated from the node catalogue (gen/nodes.ts).

/** One `segments` entry of a VADNode. */
export interface SpeechSegment {
  start_s: number;
  end_s: number;
  energy_db: number;
}

/**
 * Where a node runs: "auto" prefers the native implementation, "rust" requires it, "cpython"
 * requires the Python one (run by the server's embedded interpreter).
 */
export type Runtime = "auto" | "rust" | "cpython";
