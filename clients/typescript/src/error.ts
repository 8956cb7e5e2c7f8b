// RemoteMediaError: the one error type of the client. `kind` says what went wrong, whether the
// error came back in-band (ExecuteResponse.error, StreamResponse.error) or as a gRPC status.
import { Code } from "@connectrpc/connect";

/**
 * What went wrong, as the service's ErrorType names it, plus what happened to the call itself:
 * UNAVAILABLE (unreachable or draining: retry later, maybe elsewhere), DEADLINE_EXCEEDED (the
 * call's deadline passed) and CANCELLED. The same kinds as the Python client's error classes.
 */
export type ErrorKind =
  | "VALIDATION"
  | "NODE_EXECUTION"
  | "RESOURCE_LIMIT"
  | "AUTHENTICATION"
  | "VERSION_MISMATCH"
  | "UNAVAILABLE"
  | "DEADLINE_EXCEEDED"
  | "CANCELLED"
  | "INTERNAL";

/** Every ErrorKind, for exhaustive checks and lookups. */
export const ERROR_KINDS: readonly ErrorKind[] = [
  "VALIDATION",
  "NODE_EXECUTION",
  "RESOURCE_LIMIT",
  "AUTHENTICATION",
  "VERSION_MISMATCH",
  "UNAVAILABLE",
  "DEADLINE_EXCEEDED",
  "CANCELLED",
  "INTERNAL",
];

/** One broken rule of a request, from the in-band `context.violations` or a `google.rpc.BadRequest`. */
export interface Violation {
  /** The field concerned, e.g. `nodes[1].params.gain_db` or `audio_inputs[mic]`. */
  field: string;
  description: string;
  /** The node concerned, when the server names one. */
  nodeId?: string;
}

export interface RemoteMediaErrorInit {
  kind: ErrorKind;
  message: string;
  code?: Code | undefined;
  nodeId?: string | undefined;
  context?: Record<string, unknown> | undefined;
  violations?: Violation[] | undefined;
  retryDelayMs?: number | undefined;
  reason?: string | undefined;
  domain?: string | undefined;
  metadata?: Record<string, string> | undefined;
  supportedVersions?: string[] | undefined;
  stackTrace?: string | undefined;
  sequence?: number | undefined;
  cause?: unknown;
}

export class RemoteMediaError extends Error {
  override name = "RemoteMediaError";
  readonly kind: ErrorKind;
  /** The gRPC status code; absent for in-band errors of a successful call and for client-side checks. */
  code: Code | undefined;
  /** The node that failed (`failing_node_id`). */
  readonly nodeId: string | undefined;
  /** The in-band error's `context` JSON object, or a status's `ErrorInfo.metadata` (`{}` when there is none). */
  readonly context: Record<string, unknown>;
  /** Every violation of a VALIDATION error. */
  violations: Violation[];
  /** How long to wait before retrying (`google.rpc.RetryInfo` or `context.retry_after_ms`). */
  retryDelayMs: number | undefined;
  /** `google.rpc.ErrorInfo.reason` / `.domain` / `.metadata` of a status. */
  readonly reason: string | undefined;
  readonly domain: string | undefined;
  readonly metadata: Record<string, string>;
  /** The protocol versions the server supports (VERSION_MISMATCH). */
  readonly supportedVersions: string[];
  /** The Python traceback of a failing Python node. */
  readonly stackTrace: string | undefined;
  /** In a stream: the sequence of the chunk the error answers. */
  readonly sequence: number | undefined;
  /** What the client suggests doing about it, when it has something to add; `message` ends with it. */
  hint: string | undefined;

  constructor(init: RemoteMediaErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.kind = init.kind;
    this.code = init.code;
    this.nodeId = init.nodeId || undefined;
    this.context = init.context ?? {};
    this.violations = init.violations ?? [];
    this.retryDelayMs = init.retryDelayMs;
    this.reason = init.reason;
    this.domain = init.domain;
    this.metadata = init.metadata ?? {};
    this.supportedVersions = init.supportedVersions ?? [];
    this.stackTrace = init.stackTrace || undefined;
    this.sequence = init.sequence;
    this.hint = undefined;
  }

  /** The limit a RESOURCE_LIMIT error names (`max_timeout_ms`, `max_message_bytes`, ...), when it names one. */
  get limit(): string | undefined {
    const value = this.context["limit"];
    return typeof value === "string" ? value : undefined;
  }
}

/** A VALIDATION error found before anything is sent, listing every violation. */
export function validationError(violations: Violation[]): RemoteMediaError {
  const lines = violations.map((v) => `  - ${v.field === "" ? "" : `${v.field}: `}${v.description}`).join("\n");
  const n = violations.length;
  return new RemoteMediaError({
    kind: "VALIDATION",
    message: `${n} validation error${n === 1 ? "" : "s"}:\n${lines}`,
    violations,
  });
}

/**
 * The CANCELLED error of a call made after `client.close()`, and of a stream the close ended:
 * the client's connections are gone, and it makes no new ones.
 */
export function clientClosedError(): RemoteMediaError {
  return new RemoteMediaError({
    kind: "CANCELLED",
    code: Code.Canceled,
    message: "the client is closed; create a new client to make more calls",
  });
}
