// Builds a RemoteMediaError from what the service sends: an in-band ErrorResponse, or a status
// whose grpc-status-details-bin carries google.rpc ErrorInfo, RetryInfo and BadRequest.
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { type ErrorResponse, ErrorType } from "./gen/remotemedia/v1/common_pb.js";
import { type ErrorKind, RemoteMediaError, type Violation } from "./error.js";
import { SUPPORTED_VERSIONS_TRAILER } from "./protocol.js";

/** The kinds the service's ErrorType names (and ErrorInfo.reason spells). */
const IN_BAND_NAMES: readonly ErrorKind[] = [
  "VALIDATION",
  "NODE_EXECUTION",
  "RESOURCE_LIMIT",
  "AUTHENTICATION",
  "VERSION_MISMATCH",
  "INTERNAL",
];

const IN_BAND_KINDS: Partial<Record<ErrorType, ErrorKind>> = {
  [ErrorType.UNSPECIFIED]: "INTERNAL",
  [ErrorType.VALIDATION]: "VALIDATION",
  [ErrorType.NODE_EXECUTION]: "NODE_EXECUTION",
  [ErrorType.RESOURCE_LIMIT]: "RESOURCE_LIMIT",
  [ErrorType.AUTHENTICATION]: "AUTHENTICATION",
  [ErrorType.VERSION_MISMATCH]: "VERSION_MISMATCH",
  [ErrorType.INTERNAL]: "INTERNAL",
};

/** An in-band error (`ExecuteResponse.error`, `StreamResponse.error`). */
export function fromErrorResponse(error: ErrorResponse): RemoteMediaError {
  const context = parseContext(error.context);
  const retryAfter = context["retry_after_ms"];
  const sequence = context["sequence"];
  const kind = IN_BAND_KINDS[error.errorType] ?? "INTERNAL";
  return new RemoteMediaError({
    kind,
    message: error.message,
    // The server's ErrorInfo.reason is the ErrorType's name: the same on every transport, a
    // WebSocket close frame carrying no ErrorInfo.
    reason: kind,
    nodeId: error.failingNodeId,
    context,
    violations: contextViolations(context),
    retryDelayMs: typeof retryAfter === "number" ? retryAfter : undefined,
    supportedVersions: stringList(context["supported_versions"]),
    stackTrace: error.stackTrace,
    sequence: typeof sequence === "number" ? sequence : undefined,
  });
}

/** What the fetch API of Chromium, Firefox, Safari and Node rejects with when no response came. */
const FETCH_FAILURES: readonly string[] = [
  "Failed to fetch",
  "NetworkError when attempting to fetch resource.",
  "Load failed",
  "fetch failed",
];

/**
 * Whether a call failed before any response came: the fetch API rejects with a TypeError of a
 * known message when the server is down, refuses the connection or (in a browser) the page's
 * origin is not allowed, which Connect passes on as UNKNOWN. Other TypeErrors (a mistake in
 * the calling code) stay INTERNAL.
 */
function isNetworkFailure(reason: unknown): boolean {
  const cause = reason instanceof ConnectError && reason.code === Code.Unknown ? reason.cause : reason;
  return cause instanceof TypeError && FETCH_FAILURES.includes(cause.message);
}

/**
 * In a page, what else a failed fetch may mean: a browser hides a CORS refusal (an origin
 * missing from the server's cors_allowed_origins) behind the same error as a server that is
 * down, and tells the page nothing more.
 */
function originHint(): string {
  const origin = (globalThis as { location?: { origin?: unknown } }).location?.origin;
  return typeof origin === "string" && origin !== "null"
    ? ` (a server that is down, or one whose cors_allowed_origins does not list this page's origin, ${origin})`
    : "";
}

/** Any failure of a call: a ConnectError with its details, or an error already converted. */
export function toRemoteMediaError(reason: unknown): RemoteMediaError {
  if (reason instanceof RemoteMediaError) return reason;
  // Unreachable over fetch (gRPC-Web) is UNAVAILABLE, as it is over HTTP/2, so it is retried.
  const error = isNetworkFailure(reason)
    ? new ConnectError(
        `the server could not be reached: ${ConnectError.from(reason).rawMessage}${originHint()}`,
        Code.Unavailable,
        undefined,
        undefined,
        reason,
      )
    : ConnectError.from(reason);
  const info = error.findDetails(ErrorInfoSchema)[0];
  const retry = error.findDetails(RetryInfoSchema)[0];
  const badRequest = error.findDetails(BadRequestSchema)[0];
  const violations: Violation[] = (badRequest?.fieldViolations ?? []).map((v) => ({
    field: v.field,
    description: v.description,
  }));
  const delay = retry?.retryDelay;
  const metadata = info === undefined ? {} : { ...info.metadata };
  const supported = stringList(metadata["supported_versions"] ?? error.metadata.get(SUPPORTED_VERSIONS_TRAILER));
  return new RemoteMediaError({
    kind: statusKind(error.code, info?.reason, supported.length > 0),
    message: error.rawMessage,
    code: error.code,
    nodeId: metadata["failing_node_id"],
    context: metadata,
    violations,
    retryDelayMs: delay === undefined ? undefined : Number(delay.seconds) * 1000 + delay.nanos / 1e6,
    reason: info?.reason,
    domain: info?.domain,
    metadata,
    supportedVersions: supported,
    cause: reason,
  });
}

/** The status code the server ends a stream with after an in-band error of each kind. */
const STREAM_END_CODES: Partial<Record<ErrorKind, Code>> = {
  VALIDATION: Code.InvalidArgument,
  NODE_EXECUTION: Code.Aborted,
  RESOURCE_LIMIT: Code.ResourceExhausted,
  AUTHENTICATION: Code.Unauthenticated,
  VERSION_MISMATCH: Code.FailedPrecondition,
  INTERNAL: Code.Internal,
};

/** Kinds that say what happened to the call itself, whatever error the server reported. */
const CALL_KINDS: readonly ErrorKind[] = ["UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"];

/**
 * A stream's in-band error completed by the status that ended the stream: the in-band error has
 * the context and the traceback, the status the code, the retry delay and BadRequest violations.
 * When the status says what happened to the call (cancelled, draining, deadline), its kind wins.
 */
export function mergeStatus(inBand: RemoteMediaError, status: RemoteMediaError): RemoteMediaError {
  if (CALL_KINDS.includes(status.kind) && inBand.kind !== status.kind) {
    return new RemoteMediaError({
      kind: status.kind,
      message: inBand.message,
      reason: status.reason ?? inBand.reason,
      code: status.code,
      nodeId: inBand.nodeId,
      context: inBand.context,
      violations: inBand.violations,
      retryDelayMs: status.retryDelayMs ?? inBand.retryDelayMs,
      supportedVersions: inBand.supportedVersions,
      stackTrace: inBand.stackTrace,
      sequence: inBand.sequence,
      cause: status,
    });
  }
  // A status the transport made up (Node's HTTP/2 client reports "Premature close", UNKNOWN, when
  // the server's trailers came after more unread responses than the read-ahead holds) says
  // nothing of the server's: the code the server ends a stream with for this kind stands in.
  const lost = status.code === Code.Unknown && status.reason === undefined;
  inBand.code ??= lost ? (STREAM_END_CODES[inBand.kind] ?? status.code) : status.code;
  inBand.retryDelayMs ??= status.retryDelayMs;
  if (inBand.violations.length === 0) inBand.violations = status.violations;
  return inBand;
}

/**
 * The kind of a status, decided as the Python client decides it: a version refusal first; then
 * the codes that say what happened to the call itself (a draining server's ErrorInfo says
 * INTERNAL, but the caller should retry elsewhere); then ErrorInfo's reason; then the code, for
 * statuses without details (proxies, the transport itself).
 */
function statusKind(code: Code, reason: string | undefined, listsVersions: boolean): ErrorKind {
  if (reason === "VERSION_MISMATCH" || (reason === undefined && code === Code.FailedPrecondition && listsVersions)) {
    return "VERSION_MISMATCH";
  }
  if (code === Code.Unavailable) return "UNAVAILABLE";
  if (code === Code.DeadlineExceeded) return "DEADLINE_EXCEEDED";
  if (code === Code.Canceled) return "CANCELLED";
  const named = IN_BAND_NAMES.find((k) => k === reason);
  if (named !== undefined) return named;
  switch (code) {
    case Code.InvalidArgument:
    case Code.FailedPrecondition:
    case Code.OutOfRange:
      return "VALIDATION";
    case Code.Unauthenticated:
    case Code.PermissionDenied:
      return "AUTHENTICATION";
    case Code.ResourceExhausted:
      return "RESOURCE_LIMIT";
    case Code.Aborted:
      return "NODE_EXECUTION";
    default:
      return "INTERNAL";
  }
}

function parseContext(text: string): Record<string, unknown> {
  if (text === "") return {};
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === "object" && value !== null && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : { value };
  } catch {
    return { raw: text };
  }
}

function contextViolations(context: Record<string, unknown>): Violation[] {
  const list = context["violations"];
  if (!Array.isArray(list)) return [];
  return list.flatMap((v: unknown): Violation[] => {
    if (typeof v !== "object" || v === null) return [];
    const r = v as Record<string, unknown>;
    const violation: Violation = { field: text(r["field"]), description: text(r["description"]) };
    if (typeof r["node_id"] === "string" && r["node_id"] !== "") violation.nodeId = r["node_id"];
    return [violation];
  });
}

function text(value: unknown): string {
  return typeof value === "string" || typeof value === "number" ? String(value) : "";
}

function stringList(value: unknown): string[] {
  if (Array.isArray(value)) return value.map(String);
  if (typeof value === "string" && value !== "") return value.split(",").map((s) => s.trim());
  return [];
}
