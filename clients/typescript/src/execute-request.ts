// The inputs of one ExecutePipeline call and the request built from them.
import { create, isMessage } from "@bufbuild/protobuf";
import { Audio } from "./audio.js";
import { type Violation, validationError } from "./error.js";
import { checkOptions, describe, isPlainObject, optionViolations } from "./options-check.js";
import { type ExecuteRequest, ExecuteRequestSchema } from "./gen/remotemedia/v1/execution_pb.js";
import { type PipelineManifest, PipelineManifestSchema, RuntimeHint } from "./gen/remotemedia/v1/manifest_pb.js";
import { BUILTIN_CATALOGUE, type Catalogue } from "./catalogue.js";
import {
  type CheckedNode,
  INPUT_PORT,
  type ManifestJson,
  OUTPUT_PORT,
  Pipeline,
  type PipelineEdge,
  pipelineViolations,
} from "./pipeline.js";

/** A pipeline as a builder, a JSON manifest (text or parsed) or the wire message. */
export type PipelineLike = Pipeline | PipelineManifest | ManifestJson | string;

export interface ResourceLimits {
  maxMemoryBytes?: number;
  maxTimeoutMs?: number;
  maxAudioSamples?: number;
}

/** Each limit and its field in `ResourceLimits`. */
const LIMIT_FIELDS = [
  ["maxMemoryBytes", "max_memory_bytes"],
  ["maxTimeoutMs", "max_timeout_ms"],
  ["maxAudioSamples", "max_audio_samples"],
] as const;

export interface ExecuteInputs {
  /**
   * Audio for each source node's "input" port, keyed by node id; or one Audio for the
   * pipeline's only source node that `data` does not feed.
   */
  audio?: Record<string, Audio> | Audio;
  /** JSON values for nodes' "data" port, keyed by node id (serialised with JSON.stringify). */
  data?: Record<string, unknown>;
  /** Non-sink nodes whose outputs are returned as well. */
  outputNodes?: string[];
  /** Per-request limits; unset fields take the server defaults. */
  limits?: ResourceLimits;
}

export function toManifest(pipeline: PipelineLike): PipelineManifest {
  if (pipeline instanceof Pipeline) return pipeline.toProto();
  if (isMessage(pipeline, PipelineManifestSchema)) return pipeline;
  return Pipeline.fromJSON(pipeline).toProto();
}

/** Whether a node type of the manifest is unknown even to `catalogue`: only the service can judge it. */
function unknownTo(manifest: PipelineManifest, catalogue: Catalogue): boolean {
  return manifest.nodes.some((n) => n.nodeType !== "" && !catalogue.knows(n.nodeType));
}

/** Whether the manifest uses node types the client's built-in catalogue does not know (plug-ins). */
export function unknownNodeTypes(manifest: PipelineManifest): boolean {
  return unknownTo(manifest, BUILTIN_CATALOGUE);
}

/**
 * Every problem of the manifest's node parameters, connection ports and graph the service would
 * report, checked against `catalogue` (see `pipelineViolations`). A manifest with a node type
 * `catalogue` does not know gets none: the service reports every violation at once, the unknown
 * type among them, where a list made here would miss it.
 */
export function manifestViolations(manifest: PipelineManifest, catalogue: Catalogue): Violation[] {
  if (unknownTo(manifest, catalogue)) return [];
  const nodes: CheckedNode[] = manifest.nodes.map((n) => ({
    id: n.id,
    type: n.nodeType,
    params: paramsOf(n.params),
    runtime: n.runtimeHint === RuntimeHint.RUST ? "rust" : n.runtimeHint === RuntimeHint.CPYTHON ? "cpython" : "auto",
  }));
  const edges: PipelineEdge[] = manifest.connections.map((c) => ({
    from: c.from,
    to: c.to,
    outputKey: c.outputKey || OUTPUT_PORT,
    inputKey: c.inputKey || INPUT_PORT,
  }));
  return pipelineViolations(nodes, edges, catalogue);
}

/** A node's JSON parameter text as an object; undefined for anything else (the server names it). */
function paramsOf(text: string): Record<string, unknown> | undefined {
  let params: unknown;
  try {
    params = text === "" ? {} : (JSON.parse(text) as unknown);
  } catch {
    return undefined;
  }
  return typeof params === "object" && params !== null && !Array.isArray(params) ? (params as Record<string, unknown>) : undefined;
}

/** Ids of the manifest's nodes that nothing connects into, in manifest order. */
export function sourceNodes(manifest: PipelineManifest): string[] {
  const fed = new Set(manifest.connections.map((c) => c.to));
  return manifest.nodes.map((n) => n.id).filter((id) => !fed.has(id));
}

/**
 * The request's `what` feeds `node` on `port`, which must be an input port of `kind`, as the
 * service checks it (in the service's words). A type `catalogue` does not know is left to the
 * service.
 */
function inputPortViolations(
  what: "audio_inputs" | "data_inputs",
  node: PipelineManifest["nodes"][number],
  port: string,
  kind: "audio" | "data",
  catalogue: Catalogue,
): Violation[] {
  const t = catalogue.get(node.nodeType);
  if (t === undefined) return [];
  const field = `${what}[${node.id}]`;
  const taken = t.inputs.find((p) => p.name === port)?.kind;
  if (taken === undefined) {
    const names = t.inputs.map((p) => p.name).join(", ");
    return [{ field, description: `${what}: node \`${node.id}\` (${t.name}) has no input port \`${port}\`; its input ports are: ${names}`, nodeId: node.id }];
  }
  if (taken !== kind) {
    return [{ field, description: `${what}: input port \`${port}\` of node \`${node.id}\` takes ${taken}, not ${kind}`, nodeId: node.id }];
  }
  return [];
}

/**
 * The request for `inputs` (a bare Audio feeds the pipeline's only source node), after the
 * checks that need no server: node parameters and connection ports against `catalogue`, inputs
 * and output nodes name nodes of the pipeline, and every source node has an input. Problems are
 * thrown together as one VALIDATION error.
 */
export function executeRequest(
  manifest: PipelineManifest,
  inputs: ExecuteInputs | Audio,
  clientVersion: string,
  catalogue: Catalogue = BUILTIN_CATALOGUE,
): ExecuteRequest {
  if (!(inputs instanceof Audio) && !isPlainObject(inputs)) {
    throw validationError([
      {
        field: "inputs",
        description: `must be an Audio or { audio, data, outputNodes, limits }, got ${describe(inputs)}${
          ArrayBuffer.isView(inputs) ? ": wrap samples in new Audio(samples, sampleRate)" : ""
        }`,
      },
    ]);
  }
  const problems: Violation[] = manifestViolations(manifest, catalogue);
  // With a node type only the service can judge, it reports every problem, those found here too.
  const serviceJudges = unknownTo(manifest, catalogue);
  // One Audio, as `inputs` or as `inputs.audio`, feeds the pipeline's only source node.
  const single = inputs instanceof Audio ? inputs : inputs.audio instanceof Audio ? inputs.audio : undefined;
  let resolved: ExecuteInputs = inputs instanceof Audio ? {} : inputs;
  if (single !== undefined) {
    // The pipeline's own problems (a self loop leaves no source) come first, with this one.
    const fed = inputs instanceof Audio ? {} : (inputs.data ?? {});
    const sources = sourceNodes(manifest).filter((id) => !Object.hasOwn(fed, id));
    const [only] = sources;
    if (only !== undefined && sources.length === 1) {
      resolved = { ...resolved, audio: { [only]: single } };
    } else if (serviceJudges) {
      resolved = { ...resolved, audio: {} }; // the service names the unknown type and the sources left without input
    } else {
      throw validationError([...problems, sourceViolation(sources, inputs instanceof Audio ? "inputs" : "inputs.audio")]);
    }
  }
  checkOptions(resolved, INPUT_FIELDS, "inputs.");
  const ids = new Set(manifest.nodes.map((n) => n.id));
  const audioInputs: ExecuteRequest["audioInputs"] = {};
  for (const [id, audio] of Object.entries(resolved.audio ?? {})) {
    if (audio instanceof Audio) audioInputs[id] = audio.toProto();
    else problems.push({ field: `audio_inputs[${id}]`, description: `must be an Audio, got ${describe(audio)}`, nodeId: id });
  }
  const dataInputs: Record<string, string> = {};
  for (const [id, value] of Object.entries(resolved.data ?? {})) {
    const text = jsonText(value);
    if (typeof text === "string") dataInputs[id] = text;
    else problems.push({ field: `data_inputs[${id}]`, description: `is not JSON-serialisable${text.reason}`, nodeId: id });
  }
  const feeds = [
    ["audio_inputs", Object.keys(audioInputs), INPUT_PORT, "audio"],
    ["data_inputs", Object.keys(dataInputs), "data", "data"],
  ] as const;
  for (const [what, names, port, kind] of feeds) {
    for (const id of names) {
      const node = manifest.nodes.find((n) => n.id === id);
      if (node === undefined) problems.push({ field: `${what}[${id}]`, description: `no node "${id}" in this pipeline`, nodeId: id });
      else problems.push(...inputPortViolations(what, node, port, kind, catalogue));
    }
  }
  const outputNodes = resolved.outputNodes ?? [];
  for (const id of outputNodes) {
    if (!ids.has(id)) problems.push({ field: "output_nodes", description: `no node "${id}" in this pipeline`, nodeId: id });
  }
  manifest.nodes.forEach((n, i) => {
    // An input given but refused above is named there, not again as missing.
    const given = n.id in (resolved.audio ?? {}) || n.id in (resolved.data ?? {});
    if (sourceNodes(manifest).includes(n.id) && !given) {
      problems.push({ field: `nodes[${i}]`, description: `source node "${n.id}" has no input (give it audio or data)`, nodeId: n.id });
    }
  });
  const limits = resolved.limits;
  problems.push(...optionViolations(limits, LIMIT_KEYS, "limits."));
  for (const [name, field] of LIMIT_FIELDS) {
    const value = limits?.[name];
    if (value !== undefined && !(Number.isSafeInteger(value) && value >= 0)) {
      problems.push({
        field: `resource_limits.${field}`,
        description: `limits.${name} must be a whole number from 0 (the server default) to ${Number.MAX_SAFE_INTEGER}, got ${String(value)}`,
      });
    }
  }
  if (problems.length > 0 && !serviceJudges) throw validationError(problems);
  return create(ExecuteRequestSchema, {
    manifest,
    audioInputs,
    dataInputs,
    clientVersion,
    outputNodes,
    ...(limits === undefined
      ? {}
      : {
          resourceLimits: {
            maxMemoryBytes: BigInt(limits.maxMemoryBytes ?? 0),
            maxTimeoutMs: BigInt(limits.maxTimeoutMs ?? 0),
            maxAudioSamples: BigInt(limits.maxAudioSamples ?? 0),
          },
        }),
  });
}

/** `value` as JSON text, or why JSON.stringify cannot write it. */
function jsonText(value: unknown): string | { reason: string } {
  try {
    const text = JSON.stringify(value) as string | undefined;
    return text ?? { reason: ` (${describe(value)} has no JSON form)` };
  } catch (e) {
    return { reason: `: ${e instanceof Error ? e.message : String(e)}` };
  }
}

/** The keys of ExecuteInputs and the kind of each; the contents are checked where they are read. */
const INPUT_FIELDS = {
  audio: (v: unknown) =>
    isPlainObject(v) || v instanceof Audio ? undefined : `must be an Audio or an object of node id to Audio, got ${describe(v)}`,
  data: (v: unknown) => (isPlainObject(v) ? undefined : `must be an object of node id to a JSON value, got ${describe(v)}`),
  outputNodes: (v: unknown) =>
    Array.isArray(v) && v.every((id) => typeof id === "string") ? undefined : `must be an array of node ids, got ${describe(v)}`,
  limits: (v: unknown) => (isPlainObject(v) ? undefined : `must be an object, got ${describe(v)}`),
};

/** The keys `limits` may have; their values are checked with the request's other problems. */
const LIMIT_KEYS = Object.fromEntries(LIMIT_FIELDS.map(([name]) => [name, () => undefined]));

/** Why a bare Audio cannot be fed: the pipeline has no source node, or several. */
function sourceViolation(sources: string[], field: string): Violation {
  return {
    field,
    description: `the pipeline has ${sources.length} source nodes (${sources.join(", ") || "none"}); name the node to feed`,
  };
}
