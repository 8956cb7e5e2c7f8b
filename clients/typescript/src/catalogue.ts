// The node catalogue: each node type's parameters (as JSON Schema), ports and runtimes, as the
// service declares them. The client ships the catalogue of the service's built-in nodes
// (BUILTIN_CATALOGUE, generated from the service's own declarations) and checks a pipeline's
// parameters and connection ports against it before sending, with the service's rules and
// messages; a pipeline with node types the client was not built with (plug-ins) is checked
// against the catalogue the server returns (`client.catalogue()`), fetched once when needed.
import { CATALOGUE } from "./gen-catalogue/catalogue.js";
import { PortKind, type NodeTypeInfo } from "./gen/remotemedia/v1/service_pb.js";
import { RuntimeHint } from "./gen/remotemedia/v1/manifest_pb.js";

/** The JSON Schema of one parameter, as the service writes it. */
export interface ParamSchema {
  type?: "integer" | "number" | "string" | "boolean";
  minimum?: number;
  maximum?: number;
  enum?: (string | number)[];
  maxLength?: number;
  default?: unknown;
  description?: string;
  /** The parameter's unit ("Hz", "ms", "dBFS", ...). */
  "x-unit"?: string;
}

/** Parameters of which at most one may be given; with `required`, exactly one. */
export interface ExclusiveGroup {
  params: string[];
  required: boolean;
}

/** Number parameter `param` must be greater than `than` when both have a value (given or default). */
export interface AboveRule {
  param: string;
  than: string;
}

/** One port of a node type. */
export interface PortJson {
  name: string;
  kind: "audio" | "data";
  description: string;
}

/** One node type of the catalogue, as `remotemedia-server catalogue` writes it. */
export interface NodeTypeJson {
  name: string;
  aliases: string[];
  description: string;
  details: string;
  params_schema: {
    properties?: Record<string, ParamSchema>;
    required?: string[];
    /** Groups of parameters that exclude each other. */
    "x-exclusive"?: ExclusiveGroup[];
    /** Number parameters that must exceed another. */
    "x-above"?: AboveRule[];
  } & Record<string, unknown>;
  inputs: PortJson[];
  outputs: PortJson[];
  runtimes: ("rust" | "python")[];
}

export interface CatalogueJson {
  node_types: NodeTypeJson[];
}

/** A parameter the service would refuse, and why (in the service's words). */
export interface ParamProblem {
  param: string;
  problem: string;
}

/** Node types by name and alias. */
export class Catalogue {
  readonly #types: Map<string, NodeTypeJson>;

  constructor(types: Iterable<NodeTypeJson>) {
    this.#types = new Map([...types].map((t) => [t.name, t]));
  }

  /** The catalogue as `remotemedia-server catalogue` writes it. */
  static fromJson(doc: CatalogueJson): Catalogue {
    return new Catalogue(doc.node_types);
  }

  /** The catalogue a server returns in `GetVersion` (`VersionInfo.nodeTypes`). */
  static fromProto(infos: readonly NodeTypeInfo[]): Catalogue {
    const kind = (k: PortKind): "audio" | "data" => (k === PortKind.AUDIO ? "audio" : "data");
    const ports = (ps: NodeTypeInfo["inputs"]): PortJson[] =>
      ps.map((p) => ({ name: p.name, kind: kind(p.kind), description: p.description }));
    return new Catalogue(
      infos.map((t) => ({
        name: t.name,
        aliases: [...t.aliases],
        description: t.description,
        details: t.details,
        params_schema: JSON.parse(t.paramsSchema === "" ? "{}" : t.paramsSchema) as NodeTypeJson["params_schema"],
        inputs: ports(t.inputs),
        outputs: ports(t.outputs),
        runtimes: t.runtimes.map((r) => (r === RuntimeHint.RUST ? "rust" : "python")),
      })),
    );
  }

  /** The node type named `name` or one of its aliases. */
  get(name: string): NodeTypeJson | undefined {
    return this.#types.get(name) ?? [...this.#types.values()].find((t) => t.aliases.includes(name));
  }

  knows(name: string): boolean {
    return this.get(name) !== undefined;
  }

  /** Every node type, sorted by name. */
  types(): NodeTypeJson[] {
    return [...this.#types.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** This catalogue with `other`'s types added (`other` wins on a name both have). */
  merged(other: Catalogue): Catalogue {
    return new Catalogue([...this.#types.values(), ...other.types()]);
  }

  /**
   * Why a `nodeType` node cannot run in `runtime` (`"auto"` always can), as the service words
   * it; undefined when it can, or when this catalogue does not know the type (the service
   * checks it).
   */
  runtimeProblem(nodeType: string, runtime: "auto" | "rust" | "cpython"): string | undefined {
    const t = this.get(nodeType);
    if (t === undefined || runtime === "auto") return undefined;
    if (t.runtimes.includes(runtime === "cpython" ? "python" : "rust")) return undefined;
    const [what, other] = runtime === "rust" ? ["native Rust", "cpython"] : ["Python", "rust"];
    return `node type \`${t.name}\` has no ${what} implementation; use runtime auto or ${other}`;
  }

  /**
   * Each parameter of a `nodeType` node the service would refuse by the declaration's rules,
   * declared parameters first, then unknown ones, then groups of parameters that exclude each
   * other, then parameters that must exceed another; nothing for a type this catalogue does not
   * know (the service checks it), nor what only the server can know (whether its espeak-ng has
   * a voice).
   */
  check(nodeType: string, params: Record<string, unknown>): ParamProblem[] {
    const t = this.get(nodeType);
    if (t === undefined) return [];
    const props = t.params_schema.properties ?? {};
    const required = new Set(t.params_schema.required ?? []);
    const problems: ParamProblem[] = [];
    for (const [name, schema] of Object.entries(props)) {
      const value = params[name];
      if (value === undefined || value === null) {
        if (required.has(name)) problems.push({ param: name, problem: `is required (${expected(schema)})` });
        continue;
      }
      if (!accepts(schema, value)) {
        problems.push({ param: name, problem: `must be ${expected(schema)}, got ${shown(value)} (${typeName(value)})` });
      }
    }
    const names = Object.keys(props);
    for (const name of Object.keys(params)) {
      if (Object.hasOwn(props, name)) continue;
      const hint =
        names.length > 0 ? `is not accepted (accepted: ${[...names].sort().join(", ")})` : "is not accepted (this node takes no parameters)";
      problems.push({ param: name, problem: hint });
    }
    for (const group of t.params_schema["x-exclusive"] ?? []) {
      const given = group.params.filter((n) => params[n] !== undefined && params[n] !== null);
      const [first, ...rest] = given;
      if (first !== undefined) {
        for (const n of rest) problems.push({ param: n, problem: `cannot be combined with \`${first}\`; give one of them` });
      } else if (group.required && group.params.length > 0) {
        const others = group.params.slice(1).map((n) => `\`${n}\``).join(" or ");
        problems.push({ param: group.params[0] ?? "", problem: `or ${others} is required (give one of them)` });
      }
    }
    // The value the service would use: a given one that passed its check, or the default.
    const settled = (name: string): unknown => {
      const schema = props[name];
      const value = params[name];
      if (value === undefined || value === null) return schema?.default;
      return schema !== undefined && accepts(schema, value) ? value : undefined;
    };
    for (const rule of t.params_schema["x-above"] ?? []) {
      const x = settled(rule.param);
      const y = settled(rule.than);
      if (isNumber(x) && isNumber(y) && x <= y) {
        problems.push({ param: rule.param, problem: `must be above \`${rule.than}\` (${shown(y)}), got ${shown(x)}` });
      }
    }
    return problems;
  }
}

/** The catalogue of the service's built-in nodes this client was built with. */
export const BUILTIN_CATALOGUE: Catalogue = Catalogue.fromJson(CATALOGUE);

function isNumber(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v);
}

function whole(v: unknown): v is number {
  return isNumber(v) && Number.isInteger(v) && v >= -(2 ** 63) && v < 2 ** 63;
}

function within(schema: ParamSchema, v: number): boolean {
  return (schema.minimum === undefined || v >= schema.minimum) && (schema.maximum === undefined || v <= schema.maximum);
}

/** Whether the service takes `value` for a parameter of `schema`. */
export function accepts(schema: ParamSchema, value: unknown): boolean {
  if (schema.enum !== undefined) {
    if (schema.type === "integer") return whole(value) && schema.enum.includes(value);
    return typeof value === "string" && schema.enum.some((c) => String(c).toLowerCase() === value.toLowerCase());
  }
  switch (schema.type) {
    case "integer":
      return whole(value) && within(schema, value);
    case "number":
      return isNumber(value) && within(schema, value);
    case "string":
      // Code points, as the service counts characters (a surrogate pair is one).
      // eslint-disable-next-line @typescript-eslint/no-misused-spread
      return typeof value === "string" && [...value].length <= (schema.maxLength ?? Infinity);
    case "boolean":
      return typeof value === "boolean";
    default:
      return true;
  }
}

function range(schema: ParamSchema): string {
  const { minimum: lo, maximum: hi } = schema;
  if (lo !== undefined && hi !== undefined) return ` between ${lo} and ${hi}`;
  if (lo !== undefined) return ` of at least ${lo}`;
  if (hi !== undefined) return ` of at most ${hi}`;
  return "";
}

/** What a value of `schema` is, in the service's words. */
export function expected(schema: ParamSchema): string {
  if (schema.enum !== undefined) {
    if (schema.type === "integer") {
      const names = schema.enum.map(String);
      return names.length > 1 ? `${names.slice(0, -1).join(", ")} or ${names[names.length - 1]}` : names.join("");
    }
    return `one of ${schema.enum.map((c) => `"${c}"`).join(", ")}`;
  }
  switch (schema.type) {
    case "integer":
      return `an integer${range(schema)}`;
    case "number":
      return `a number${range(schema)}`;
    case "string":
      return `a string of at most ${schema.maxLength} characters`;
    case "boolean":
      return "true or false";
    default:
      return "any JSON value";
  }
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (typeof v === "boolean") return "a boolean";
  if (typeof v === "bigint") return "a BigInt, which JSON has no form for; pass a number";
  if (typeof v === "number") return Number.isFinite(v) ? "a number" : "a number JSON has no form for";
  if (typeof v === "string") return "a string";
  if (Array.isArray(v)) return "an array";
  return "an object";
}

/** A value as the service quotes it: its JSON text, cut to 40 bytes. */
function shown(v: unknown): string {
  // JSON has no form for a BigInt (JSON.stringify throws) nor for NaN or ±Infinity (it writes null).
  const text =
    typeof v === "bigint" ? `${v}n` : typeof v === "number" && !Number.isFinite(v) ? String(v) : ((JSON.stringify(v) as string | undefined) ?? String(v));
  const bytes = new TextEncoder().encode(text);
  if (bytes.length <= 40) return text;
  return `${new TextDecoder().decode(bytes.slice(0, 40)).replace(/\uFFFD$/, "")}…`;
}
