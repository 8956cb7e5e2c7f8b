// Pipeline: a builder for pipeline manifests. Its JSON form is the Python client's: the
// executor's manifest model with `params` as a JSON object, `runtime_hint` in lower case, `edges`
// naming both ports and a flat `config`.
import { create } from "@bufbuild/protobuf";
import { type Violation, validationError } from "./error.js";
import { checkOptions, describe, isPlainObject, isString } from "./options-check.js";
import {
  type PipelineManifest,
  PipelineManifestSchema,
  RetryPolicy_Backoff,
  RuntimeHint,
} from "./gen/remotemedia/v1/manifest_pb.js";
import { BUILTIN_CATALOGUE, type Catalogue, type NodeTypeJson, type PortJson } from "./catalogue.js";
import {
  type AudioChunkerParams,
  type AudioResampleParams,
  type CatalogueNodeType,
  NodeBuilders,
} from "./gen-catalogue/nodes.js";
import type { Runtime } from "./nodes.js";

/** The node types the client was built with, by their canonical names. */
export type BuiltinNodeType = CatalogueNodeType;

/** The only manifest schema version the service accepts. */
export const MANIFEST_VERSION = "v1";
/** The ports a connection joins when it names none. */
export const OUTPUT_PORT = "output";
export const INPUT_PORT = "input";

export interface PipelineNode {
  id: string;
  type: string;
  params: Record<string, unknown>;
  runtime: Runtime;
}

export interface PipelineEdge {
  from: string;
  to: string;
  /** Output port of `from` (default "output"). */
  outputKey: string;
  /** Input port of `to` (default "input"). */
  inputKey: string;
}

export type Backoff = "exponential" | "fixed" | "none";

/** How the service runs the pipeline; unset fields keep the service defaults. */
export interface PipelineConfig {
  /** Collect per-node metrics (default true). */
  enableMetrics?: boolean;
  /** Retries after a node's first retryable failure (default 3, at most 10). */
  maxRetries?: number;
  /** Delay growth between retries (default exponential). */
  backoff?: Backoff;
  /** First retry delay in ms (default 100). */
  initialDelayMs?: number;
  /** Exponential multiplier (default 2). */
  multiplier?: number;
  /** Consecutive failures that open a node type's circuit breaker (default 5, 0 disables). */
  circuitBreakerThreshold?: number;
}

export interface NodeOptions {
  runtime?: Runtime;
}

/** A node type: a built-in one (offered by editors) or any other registered type, such as a plug-in. */
export type NodeType = BuiltinNodeType | (string & {});

/**
 * The id argument of `Pipeline.node`: any string except a built-in node type's name, so that
 * `node("GainNode", "gain")` (the type first, as in the Python client's `Node(type, id)`) fails
 * to compile instead of making a node of type "gain".
 */
export type NodeId<I extends string> = I extends BuiltinNodeType
  ? `the node id comes first: node(id, type, params); "${I}" is a node type`
  : I;

/**
 * The JSON manifest, as the Python client writes it: what `JSON.stringify(pipeline)` writes and
 * `Pipeline.fromJSON` reads. `config` holds only the settings that are set.
 */
export interface ManifestJson {
  version: string;
  metadata: { name: string; description?: string };
  nodes: { id: string; node_type: string; params: Record<string, unknown>; runtime_hint: Runtime }[];
  edges: { from: string; to: string; output_key: string; input_key: string }[];
  config?: {
    enable_metrics?: boolean;
    /** The retry backoff. */
    retry_policy?: Backoff;
    max_retries?: number;
    initial_delay_ms?: number;
    multiplier?: number;
    circuit_breaker_threshold?: number;
  };
}

const RUNTIME_HINTS: Record<Runtime, RuntimeHint> = {
  auto: RuntimeHint.AUTO,
  rust: RuntimeHint.RUST,
  cpython: RuntimeHint.CPYTHON,
};

const BACKOFFS: Record<Backoff, RetryPolicy_Backoff> = {
  exponential: RetryPolicy_Backoff.EXPONENTIAL,
  fixed: RetryPolicy_Backoff.FIXED,
  none: RetryPolicy_Backoff.NONE,
};

/**
 * A pipeline: nodes and the connections between them. Builder methods return the pipeline, so
 * calls chain:
 *
 * ```ts
 * const p = new Pipeline("to-16k")
 *   .passThrough("in")
 *   .audioResample("rs", { output_rate: 16000 })
 *   .connect("in", "rs");
 * ```
 *
 * There is a typed builder method per node type (`audioResample`, `vad`, `gain`, ...), generated
 * from the service's node declarations, and `node(id, type, params)` for any type.
 */
/** The kinds of `node()`'s arguments; a typed builder's params go through it too. */
const NODE_ARGUMENTS = {
  id: isString,
  type: isString,
  params: (v: unknown) => (isPlainObject(v) ? undefined : `must be an object of parameter names to values, got ${describe(v)}`),
};

export class Pipeline extends NodeBuilders {
  name: string;
  description: string;
  config: PipelineConfig = {};
  readonly #nodes: PipelineNode[] = [];
  readonly #edges: PipelineEdge[] = [];

  constructor(name = "pipeline", description = "") {
    super();
    checkOptions({ name, description }, { name: isString, description: isString });
    this.name = name;
    this.description = description;
  }

  get nodes(): readonly PipelineNode[] {
    return this.#nodes;
  }

  get connections(): readonly PipelineEdge[] {
    return this.#edges;
  }

  /**
   * Adds node `id` of any registered `type`; `params` is the node's JSON parameter object. The
   * id comes first, as in the typed helpers (`gain(id, params)`); a built-in type's name given
   * as the id is a compile error.
   */
  node<const I extends string>(
    id: NodeId<I>,
    type: NodeType,
    params: Record<string, unknown> = {},
    options: NodeOptions = {},
  ): this {
    const index = this.#nodes.length;
    checkOptions({ id, type, params }, NODE_ARGUMENTS, `nodes[${index}].`);
    checkOptions(options, { runtime: () => undefined }, `nodes[${index}].`);
    if (id === "") throw validationError([{ field: `nodes[${index}].id`, description: "node ids must not be empty" }]);
    const other = this.#nodes.findIndex((n) => n.id === id);
    if (other >= 0) {
      throw validationError([
        { field: `nodes[${index}].id`, description: `duplicate node id "${id}" (also nodes[${other}])`, nodeId: id },
      ]);
    }
    // Read as `fromJSON` reads it (any case, `native`, `python`), so a pipeline runs where it
    // did after a save and a load; anything else is refused here, not sent as AUTO.
    const problems: Violation[] = [];
    const runtime = options.runtime === undefined ? "auto" : runtimeOf(options.runtime, `nodes[${index}].runtime`, id, problems);
    if (runtime === undefined) throw validationError(problems);
    // null (and undefined) is unset, as the service reads it: the manifest leaves it out.
    const set = Object.fromEntries(Object.entries(params).filter(([, v]) => v !== null && v !== undefined));
    this.#nodes.push({ id, type, params: set, runtime });
    return this;
  }

  /** @deprecated The earlier name of {@link NodeBuilders.audioResample}. */
  resample(id: string, params: AudioResampleParams, options?: NodeOptions): this {
    return this.audioResample(id, params, options);
  }

  /** @deprecated The earlier name of {@link NodeBuilders.audioChunker}. */
  chunker(id: string, params: AudioChunkerParams, options?: NodeOptions): this {
    return this.audioChunker(id, params, options);
  }

  /**
   * Every problem the service would report of the nodes' parameters and of the ports the
   * connections join, checked against `catalogue` (the service's built-in nodes by default;
   * `client.catalogue()` adds the server's plug-ins): parameter problems in node order, then,
   * in connection order, a connection naming an output or input port its node does not have,
   * or joining an audio port to a data port. Node types the catalogue does not know are left to
   * the service.
   */
  violations(catalogue: Catalogue = BUILTIN_CATALOGUE): Violation[] {
    return pipelineViolations(this.#nodes, this.#edges, catalogue);
  }

  /** Connects `from`'s output port to `to`'s input port (default ports "output" and "input"). */
  connect(from: string, to: string, ports: { outputKey?: string; inputKey?: string } = {}): this {
    const index = this.#edges.length;
    // Left out in plain JavaScript, an end is as wrong as any other non-string.
    const ends: [string, unknown][] = [
      ["from", from],
      ["to", to],
    ];
    const wrong = ends.filter(([, id]) => typeof id !== "string");
    if (wrong.length > 0) {
      throw validationError(
        wrong.map(([end, id]) => ({ field: `connections[${index}].${end}`, description: `must be a node id, got ${describe(id)}` })),
      );
    }
    checkOptions(ports, { outputKey: isString, inputKey: isString }, `connections[${index}].`);
    const missing: Violation[] = [];
    for (const [end, id] of [["from", from], ["to", to]] as const) {
      if (!this.#nodes.some((n) => n.id === id)) {
        missing.push({ field: `connections[${index}].${end}`, description: `no node "${id}" in this pipeline` });
      }
    }
    if (missing.length > 0) throw validationError(missing);
    this.#edges.push({ from, to, outputKey: ports.outputKey || OUTPUT_PORT, inputKey: ports.inputKey || INPUT_PORT });
    return this;
  }

  /** Sets the execution configuration; fields left out keep the service defaults. */
  /**
   * Sets the pipeline's execution settings. A setting of the wrong type, out of the server's
   * range or unknown is a VALIDATION error naming it, before anything is sent.
   */
  configure(config: PipelineConfig): this {
    const problems = configViolations(config);
    if (problems.length > 0) throw validationError(problems);
    this.config = { ...config };
    return this;
  }

  /** Nodes nothing connects into: each needs an input. */
  sources(): string[] {
    const fed = new Set(this.#edges.map((e) => e.to));
    return this.#nodes.filter((n) => !fed.has(n.id)).map((n) => n.id);
  }

  /** Nodes that feed nothing: their outputs are the results. */
  sinks(): string[] {
    const feeding = new Set(this.#edges.map((e) => e.from));
    return this.#nodes.filter((n) => !feeding.has(n.id)).map((n) => n.id);
  }

  toJSON(): ManifestJson {
    this.#assertSendable();
    const metadata: ManifestJson["metadata"] = { name: this.name };
    if (this.description !== "") metadata.description = this.description;
    const json: ManifestJson = {
      version: MANIFEST_VERSION,
      metadata,
      nodes: this.#nodes.map((n) => ({ id: n.id, node_type: n.type, params: { ...n.params }, runtime_hint: n.runtime })),
      edges: this.#edges.map((e) => ({ from: e.from, to: e.to, output_key: e.outputKey, input_key: e.inputKey })),
    };
    const c = this.config;
    const config = defined({
      enable_metrics: c.enableMetrics,
      retry_policy: c.backoff,
      max_retries: c.maxRetries,
      initial_delay_ms: c.initialDelayMs,
      multiplier: c.multiplier,
      circuit_breaker_threshold: c.circuitBreakerThreshold,
    });
    if (Object.keys(config).length > 0) json.config = config;
    return json;
  }

  /**
   * Reads a JSON manifest (text or parsed). Besides what `toJSON` writes it accepts `type` for
   * `node_type`, `connections` for `edges`, `params` as JSON text, `runtime_hint` as
   * "RUNTIME_HINT_AUTO" or a number, versions "1.0" and "v1", and `config.retry` as an object
   * (the protobuf JSON mapping, as grpcurl writes it). Every problem is reported at once, as a
   * VALIDATION RemoteMediaError.
   */
  static fromJSON(json: string | ManifestJson | Record<string, unknown>): Pipeline {
    const problems: Violation[] = [];
    let doc: unknown = json;
    if (typeof json === "string") {
      try {
        doc = JSON.parse(json);
      } catch (e) {
        throw validationError([{ field: "manifest", description: `not valid JSON: ${(e as Error).message}` }]);
      }
    }
    if (!isRecord(doc)) throw validationError([{ field: "manifest", description: "a manifest is a JSON object" }]);
    const version = text(doc["version"] ?? MANIFEST_VERSION);
    if (!/^v?1(\.\d+){0,2}$/i.test(version.trim())) {
      problems.push({ field: "version", description: `manifest version must be "v1", got "${version}"` });
    }
    const meta = doc["metadata"] ?? {};
    if (!isRecord(meta)) problems.push({ field: "metadata", description: "must be an object" });
    const name = isRecord(meta) && typeof meta["name"] === "string" && meta["name"] !== "" ? meta["name"] : undefined;
    const p = new Pipeline(
      name ?? (typeof doc["name"] === "string" ? doc["name"] : "pipeline"),
      isRecord(meta) && typeof meta["description"] === "string" ? meta["description"] : "",
    );
    // Ids as declared, with their manifest index: problems name manifest positions even when
    // earlier nodes were skipped for their own problems.
    const declared = new Map<string, number>();
    const nodes = doc["nodes"] ?? [];
    if (!Array.isArray(nodes)) problems.push({ field: "nodes", description: "must be a list" });
    (Array.isArray(nodes) ? nodes : []).forEach((raw: unknown, i) => {
      if (!isRecord(raw)) {
        problems.push({ field: `nodes[${i}]`, description: "must be an object" });
        return;
      }
      const id = text(raw["id"]);
      const other = declared.get(id);
      if (id === "") problems.push({ field: `nodes[${i}].id`, description: "node ids must not be empty" });
      else if (other !== undefined) {
        problems.push({ field: `nodes[${i}].id`, description: `duplicate node id "${id}" (also nodes[${other}])`, nodeId: id });
      } else declared.set(id, i);
      const params = nodeParams(raw["params"], `nodes[${i}].params`, id, problems);
      const runtime = runtimeOf(raw["runtime_hint"], `nodes[${i}].runtime_hint`, id, problems);
      if (declared.get(id) === i && params !== undefined && runtime !== undefined) {
        p.node(id, text(raw["node_type"] ?? raw["type"]), params, { runtime });
      }
    });
    const added = new Set(p.nodes.map((n) => n.id));
    const edges = doc["edges"] ?? doc["connections"] ?? [];
    if (!Array.isArray(edges)) problems.push({ field: "edges", description: "must be a list" });
    (Array.isArray(edges) ? edges : []).forEach((raw: unknown, j) => {
      if (!isRecord(raw) || raw["from"] === undefined || raw["to"] === undefined) {
        problems.push({ field: `connections[${j}]`, description: "must be an object with `from` and `to`" });
        return;
      }
      const from = text(raw["from"]);
      const to = text(raw["to"]);
      for (const [end, id] of [["from", from], ["to", to]] as const) {
        if (!declared.has(id)) problems.push({ field: `connections[${j}].${end}`, description: `no node "${id}" in this pipeline` });
      }
      if (added.has(from) && added.has(to)) {
        p.connect(from, to, {
          outputKey: typeof raw["output_key"] === "string" ? raw["output_key"] : OUTPUT_PORT,
          inputKey: typeof raw["input_key"] === "string" ? raw["input_key"] : INPUT_PORT,
        });
      }
    });
    const config = doc["config"] ?? {};
    if (isRecord(config)) p.configure(configOf(config, problems));
    else problems.push({ field: "config", description: "must be an object" });
    if (problems.length > 0) throw validationError(problems);
    return p;
  }

  /**
   * Throws a VALIDATION error naming every parameter that holds NaN or ±Infinity: JSON has no
   * form for them (JSON.stringify writes null, which the service reads as unset, so the node
   * would run silently at its default).
   */
  #assertSendable(): void {
    const problems: Violation[] = [];
    this.#nodes.forEach((n, i) => {
      // The objects around the value being visited: one met again is a cycle.
      const around: object[] = [];
      const visit = (value: unknown, field: string, param: string): void => {
        const refuse = (what: string): void => {
          const where = field === `nodes[${i}].params.${param}` ? "" : ` (at ${field})`;
          problems.push({ field, description: `node \`${n.id}\` (${n.type}): parameter \`${param}\`${where} ${what}`, nodeId: n.id });
        };
        if (typeof value === "number" && !Number.isFinite(value)) {
          refuse(`is ${String(value)}, a number JSON has no form for`);
        } else if (typeof value === "bigint") {
          refuse(`is a BigInt (${String(value)}n), which JSON has no form for: pass a number`);
        } else if (typeof value === "function" || typeof value === "symbol") {
          refuse(`is a ${typeof value}, which JSON has no form for`);
        } else if (typeof value === "object" && value !== null && around.includes(value)) {
          refuse("contains itself, which JSON cannot write");
        } else if (Array.isArray(value) || isRecord(value)) {
          around.push(value);
          const entries: [string, unknown][] = Array.isArray(value)
            ? value.map((v, k) => [`[${k}]`, v])
            : Object.entries(value).map(([k, v]) => [`.${k}`, v]);
          for (const [at, v] of entries) visit(v, `${field}${at}`, param);
          around.pop();
        }
      };
      for (const [param, value] of Object.entries(n.params)) visit(value, `nodes[${i}].params.${param}`, param);
    });
    if (problems.length > 0) throw validationError(problems);
  }

  /** The wire PipelineManifest; a parameter JSON cannot carry is a VALIDATION error. */
  toProto(): PipelineManifest {
    this.#assertSendable();
    const c = this.config;
    const retry = {
      ...(c.maxRetries === undefined ? {} : { maxRetries: c.maxRetries }),
      ...(c.backoff === undefined ? {} : { backoff: BACKOFFS[c.backoff] }),
      ...(c.initialDelayMs === undefined ? {} : { initialDelayMs: BigInt(c.initialDelayMs) }),
      ...(c.multiplier === undefined ? {} : { multiplier: c.multiplier }),
    };
    const config = {
      ...(c.enableMetrics === undefined ? {} : { enableMetrics: c.enableMetrics }),
      ...(c.circuitBreakerThreshold === undefined ? {} : { circuitBreakerThreshold: c.circuitBreakerThreshold }),
      ...(Object.keys(retry).length === 0 ? {} : { retry }),
    };
    return create(PipelineManifestSchema, {
      version: MANIFEST_VERSION,
      metadata: { name: this.name, description: this.description },
      nodes: this.#nodes.map((n) => ({
        id: n.id,
        nodeType: n.type,
        params: Object.keys(n.params).length > 0 ? JSON.stringify(n.params) : "",
        runtimeHint: RUNTIME_HINTS[n.runtime],
      })),
      connections: this.#edges.map((e) => ({ from: e.from, to: e.to, outputKey: e.outputKey, inputKey: e.inputKey })),
      ...(Object.keys(config).length === 0 ? {} : { config }),
    });
  }
}

/** A node as the local checks see it; `params` is undefined when they are not a JSON object. */
export interface CheckedNode {
  id: string;
  type: string;
  params: Record<string, unknown> | undefined;
  /** Where the node is to run; AUTO when left out. */
  runtime?: Runtime;
}

/**
 * The problems the service would report of `nodes`' parameters (in node order) and of the ports
 * `edges` join (in connection order), in its words, checked against `catalogue`. As the
 * service does, it checks the ports of a connection only between two nodes of the pipeline
 * whose types the catalogue knows and whose parameters are valid, and not those of a node
 * connected to itself or of a connection that repeats an earlier one (the service refuses
 * those for what they are).
 */
/** Each cycle of the graph once, as a path from its node listed first back to it (self loops are reported apart). */
function cycles(nodes: readonly CheckedNode[], edges: readonly PipelineEdge[]): string[][] {
  const order = new Map<string, number>();
  nodes.forEach((n, i) => {
    if (!order.has(n.id)) order.set(n.id, i);
  });
  const next = new Map<string, string[]>([...order.keys()].map((id) => [id, []]));
  for (const e of edges) {
    const out = next.get(e.from);
    if (out !== undefined && order.has(e.to) && e.from !== e.to && !out.includes(e.to)) out.push(e.to);
  }
  const found = new Map<string, string[]>();
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (id: string): void => {
    state.set(id, "open");
    path.push(id);
    for (const to of next.get(id) ?? []) {
      if (state.get(to) === "open") {
        const cycle = path.slice(path.indexOf(to));
        const rank = (k: string): number => order.get(k) ?? 0;
        const first = cycle.reduce((best, k, i) => (rank(k) < rank(cycle[best] ?? k) ? i : best), 0);
        const ordered = [...cycle.slice(first), ...cycle.slice(0, first)];
        const key = [...cycle].sort().join("\u0000");
        if (!found.has(key)) found.set(key, [...ordered, ordered[0] ?? to]);
      } else if (!state.has(to)) {
        visit(to);
      }
    }
    path.pop();
    state.set(id, "done");
  };
  for (const id of order.keys()) if (!state.has(id)) visit(id);
  return [...found.values()];
}

export function pipelineViolations(nodes: readonly CheckedNode[], edges: readonly PipelineEdge[], catalogue: Catalogue): Violation[] {
  // Each node id (its first node, as the service indexes them) with the type whose ports are
  // checked, or undefined when they are not.
  const planned = new Map<string, NodeTypeJson | undefined>();
  const problems: Violation[] = nodes.flatMap((n, i) => {
    const found = n.params === undefined ? [] : catalogue.check(n.type, n.params);
    const unavailable = catalogue.runtimeProblem(n.type, n.runtime ?? "auto");
    if (n.id !== "" && !planned.has(n.id)) {
      const checked = n.params !== undefined && found.length === 0 && unavailable === undefined;
      planned.set(n.id, checked ? catalogue.get(n.type) : undefined);
    }
    const problems: Violation[] = found.map(({ param, problem }) => ({
      field: `nodes[${i}].params.${param}`,
      description: `node \`${n.id}\` (${n.type}): parameter \`${param}\` ${problem}`,
      nodeId: n.id,
    }));
    if (unavailable !== undefined) {
      problems.push({ field: `nodes[${i}].runtime_hint`, description: `node \`${n.id}\`: ${unavailable}`, nodeId: n.id });
    }
    return problems;
  });
  const seen = new Set<string>();
  edges.forEach((e, j) => {
    if (e.from === e.to) {
      problems.push({ field: `connections[${j}]`, description: `node "${e.from}" connects to itself`, nodeId: e.from });
    }
    if (!planned.has(e.from) || !planned.has(e.to) || e.from === e.to) return;
    const key = JSON.stringify([e.from, e.outputKey, e.to, e.inputKey]);
    if (seen.has(key)) return;
    seen.add(key);
    const port = (id: string, name: string, dir: "output" | "input"): PortJson["kind"] | undefined => {
      const t = planned.get(id);
      if (t === undefined) return undefined;
      const ports = dir === "output" ? t.outputs : t.inputs;
      const found = ports.find((p) => p.name === name);
      if (found === undefined) {
        problems.push({
          field: `connections[${j}].${dir === "output" ? "output_key" : "input_key"}`,
          description: `node \`${id}\` (${t.name}) has no ${dir} port \`${name}\`; its ${dir} ports are: ${ports.map((p) => p.name).join(", ")}`,
          nodeId: id,
        });
      }
      return found?.kind;
    };
    const produced = port(e.from, e.outputKey, "output");
    const taken = port(e.to, e.inputKey, "input");
    if (produced !== undefined && taken !== undefined && produced !== taken) {
      problems.push({
        field: `connections[${j}]`,
        description: `output port \`${e.outputKey}\` carries ${produced}, but input port \`${e.inputKey}\` of node \`${e.to}\` takes ${taken}; connect ports of the same kind`,
        nodeId: e.to,
      });
    }
  });
  for (const path of cycles(nodes, edges)) {
    problems.push({ field: "connections", description: `connections form a cycle: ${path.join(" → ")}` });
  }
  return problems;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A JSON scalar as text ("" for null, undefined, objects and lists). */
function text(value: unknown): string {
  return typeof value === "string" || typeof value === "number" || typeof value === "boolean" ? String(value) : "";
}

/** `obj` without its undefined fields. */
function defined<T extends Record<string, unknown>>(obj: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined)) as {
    [K in keyof T]?: Exclude<T[K], undefined>;
  };
}

function nodeParams(value: unknown, field: string, nodeId: string, problems: Violation[]): Record<string, unknown> | undefined {
  let params: unknown = value ?? {};
  if (typeof params === "string") {
    try {
      params = params === "" ? {} : (JSON.parse(params) as unknown);
    } catch (e) {
      problems.push({ field, description: `params are not valid JSON: ${(e as Error).message}`, nodeId });
      return undefined;
    }
  }
  if (!isRecord(params)) {
    problems.push({ field, description: "params must be a JSON object", nodeId });
    return undefined;
  }
  return params;
}

/** RuntimeHint numbers the service runs (RUSTPYTHON and CPYTHON_WASM it refuses). */
const RUNTIME_NUMBERS: Partial<Record<number, Runtime>> = {
  [RuntimeHint.UNSPECIFIED]: "auto",
  [RuntimeHint.AUTO]: "auto",
  [RuntimeHint.RUST]: "rust",
  [RuntimeHint.CPYTHON]: "cpython",
};

function runtimeOf(value: unknown, field: string, nodeId: string, problems: Violation[]): Runtime | undefined {
  const runtime = typeof value === "number" ? RUNTIME_NUMBERS[value] : runtimeNamed(text(value));
  if (runtime === undefined) {
    problems.push({ field, description: `runtime ${JSON.stringify(value)} is not supported; use auto, rust or cpython`, nodeId });
  }
  return runtime;
}

function runtimeNamed(name: string): Runtime | undefined {
  switch (name.trim().toLowerCase().replace(/^runtime_hint_/, "")) {
    case "":
    case "auto":
    case "unspecified":
      return "auto";
    case "rust":
    case "native":
      return "rust";
    case "cpython":
    case "python":
      return "cpython";
    default:
      return undefined;
  }
}

/** The flat config `toJSON` writes, or the protobuf form with a nested `retry` object. */
function configOf(c: Record<string, unknown>, problems: Violation[]): PipelineConfig {
  const retry = isRecord(c["retry"]) ? c["retry"] : {};
  const setting = (name: string): unknown => retry[name] ?? c[name];
  const config = defined({
    enableMetrics: c["enable_metrics"],
    maxRetries: setting("max_retries"),
    initialDelayMs: setting("initial_delay_ms"),
    multiplier: setting("multiplier"),
    circuitBreakerThreshold: c["circuit_breaker_threshold"],
  }) as Record<string, unknown>;
  const backoffName = retry["backoff"] ?? c["retry_policy"] ?? c["backoff"];
  if (typeof backoffName === "string") {
    const b = backoffName.toLowerCase().replace(/^backoff_/, "");
    if (b === "exponential" || b === "fixed" || b === "none") config["backoff"] = b;
    else problems.push({ field: "config.retry_policy", description: `must be one of exponential, fixed, none, got "${backoffName}"` });
  } else if (backoffName !== undefined) {
    problems.push({ field: "config.retry_policy", description: `must be one of exponential, fixed, none, got ${describe(backoffName)}` });
  }
  const bad = configViolations(config);
  problems.push(...bad);
  return bad.length > 0 ? {} : config;
}

/** The server's range of each PipelineConfig setting (proto/remotemedia/v1/manifest.proto). */
const CONFIG_RULES: Record<keyof PipelineConfig, [wire: string, check: (v: unknown) => string | undefined]> = {
  enableMetrics: ["enable_metrics", (v) => (typeof v === "boolean" ? undefined : "must be true or false")],
  maxRetries: ["max_retries", (v) => integerIn(v, 0, 10)],
  backoff: ["retry_policy", (v) => (v === "exponential" || v === "fixed" || v === "none" ? undefined : "must be one of exponential, fixed, none")],
  initialDelayMs: ["initial_delay_ms", (v) => integerIn(v, 0, 30_000)],
  multiplier: ["multiplier", (v) => (typeof v === "number" && v >= 1 && v <= 10 ? undefined : "must be a number from 1 to 10")],
  circuitBreakerThreshold: ["circuit_breaker_threshold", (v) => integerIn(v, 0, 2 ** 32 - 1)],
};

function integerIn(v: unknown, min: number, max: number): string | undefined {
  return Number.isSafeInteger(v) && (v as number) >= min && (v as number) <= max
    ? undefined
    : `must be a whole number from ${min} to ${max}`;
}

/** What is wrong with each setting of `config` (unknown keys included), as violations. */
function configViolations(config: unknown): Violation[] {
  if (!isRecord(config)) return [{ field: "config", description: `must be an object, got ${describe(config)}` }];
  const problems: Violation[] = [];
  for (const [key, value] of Object.entries(config)) {
    const rule = CONFIG_RULES[key as keyof PipelineConfig] as (typeof CONFIG_RULES)[keyof PipelineConfig] | undefined;
    if (rule === undefined) {
      problems.push({ field: `config.${key}`, description: `is not a setting; the settings are ${Object.keys(CONFIG_RULES).join(", ")}` });
      continue;
    }
    if (value === undefined) continue;
    const problem = rule[1](value);
    if (problem !== undefined) problems.push({ field: `config.${rule[0]}`, description: `${problem}, got ${describe(value)}` });
  }
  return problems;
}
