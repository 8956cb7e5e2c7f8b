// RemoteMediaError from in-band ErrorResponses and from statuses with google.rpc details; the
// kinds follow the Python client's precedence.
import assert from "node:assert/strict";
import { test } from "node:test";
import { create, fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ERROR_KINDS, type ErrorKind, pb } from "../src/index.js";
import { fromErrorResponse, mergeStatus, toRemoteMediaError } from "../src/to-error.js";

function errorInfo(reason: string, metadata: Record<string, string> = {}) {
  return { desc: pb.ErrorInfoSchema, value: { reason, domain: "remotemedia.v1", metadata } };
}

function retryInfo(ms: number) {
  return { desc: pb.RetryInfoSchema, value: { retryDelay: { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 } } };
}

test("in-band errors keep their type, node, context, traceback and violations", () => {
  const node = fromErrorResponse(
    create(pb.ErrorResponseSchema, {
      errorType: pb.ErrorType.NODE_EXECUTION,
      message: "node `py` (RaiseNode) failed: boom",
      failingNodeId: "py",
      context: JSON.stringify({ node_type: "RaiseNode", attempts: 4, sequence: 7 }),
      stackTrace: "Traceback (most recent call last): ...",
    }),
  );
  assert.equal(node.kind, "NODE_EXECUTION");
  assert.equal(node.nodeId, "py");
  assert.equal(node.context["node_type"], "RaiseNode");
  assert.equal(node.sequence, 7);
  assert.match(node.stackTrace ?? "", /^Traceback/);
  assert.equal(node.code, undefined);

  const invalid = fromErrorResponse(
    create(pb.ErrorResponseSchema, {
      errorType: pb.ErrorType.VALIDATION,
      message: "2 problems",
      context: JSON.stringify({ violations: [{ field: "nodes[0].params.gain", description: "must be a number", node_id: "g" }, { field: "connections", description: "a → b → a" }] }),
    }),
  );
  assert.deepEqual(invalid.violations, [
    { field: "nodes[0].params.gain", description: "must be a number", nodeId: "g" },
    { field: "connections", description: "a → b → a" },
  ]);

  const limit = fromErrorResponse(
    create(pb.ErrorResponseSchema, { errorType: pb.ErrorType.RESOURCE_LIMIT, message: "too slow", context: '{"limit": "max_timeout_ms"}' }),
  );
  assert.equal(limit.kind, "RESOURCE_LIMIT");
  assert.equal(limit.limit, "max_timeout_ms");

  // error_type 42 (a type this client does not know) and context "not json", as a newer server might send.
  const odd = fromErrorResponse(fromBinary(pb.ErrorResponseSchema, Uint8Array.from([0x08, 42, 0x22, 8, ...Buffer.from("not json")])));
  assert.equal(odd.kind, "INTERNAL");
  assert.deepEqual(odd.context, { raw: "not json" });
});

test("a status's ErrorInfo, RetryInfo and BadRequest details are read", () => {
  const overloaded = toRemoteMediaError(
    new ConnectError("at the maximum of 1 concurrent executions", Code.ResourceExhausted, undefined, [errorInfo("RESOURCE_LIMIT"), retryInfo(1_250)]),
  );
  assert.equal(overloaded.kind, "RESOURCE_LIMIT");
  assert.equal(overloaded.code, Code.ResourceExhausted);
  assert.equal(overloaded.retryDelayMs, 1_250);
  assert.equal(overloaded.reason, "RESOURCE_LIMIT");
  assert.equal(overloaded.domain, "remotemedia.v1");
  assert.equal(overloaded.message, "at the maximum of 1 concurrent executions");

  const invalid = toRemoteMediaError(
    new ConnectError("bad", Code.InvalidArgument, undefined, [
      errorInfo("VALIDATION", { violations: "1" }),
      { desc: pb.BadRequestSchema, value: { fieldViolations: [{ field: "audio_inputs[in]", description: "num_samples is 3" }] } },
    ]),
  );
  assert.equal(invalid.kind, "VALIDATION");
  assert.deepEqual(invalid.violations, [{ field: "audio_inputs[in]", description: "num_samples is 3" }]);

  const version = toRemoteMediaError(
    new ConnectError("v9 is not supported", Code.FailedPrecondition, undefined, [errorInfo("VERSION_MISMATCH", { requested: "v9", supported_versions: "v1,v2" })]),
  );
  assert.equal(version.kind, "VERSION_MISMATCH");
  assert.deepEqual(version.supportedVersions, ["v1", "v2"]);
  assert.equal(version.context["requested"], "v9");
});

test("the kind of a status: version first, then what happened to the call, then the reason, then the code", () => {
  const kindOf = (code: Code, details: ReturnType<typeof errorInfo>[] = [], metadata?: HeadersInit): ErrorKind =>
    toRemoteMediaError(new ConnectError("m", code, metadata, details)).kind;

  assert.equal(kindOf(Code.Unavailable, [errorInfo("INTERNAL")]), "UNAVAILABLE", "a draining server says INTERNAL");
  assert.equal(kindOf(Code.DeadlineExceeded, [errorInfo("RESOURCE_LIMIT")]), "DEADLINE_EXCEEDED");
  assert.equal(kindOf(Code.Canceled), "CANCELLED");
  assert.equal(kindOf(Code.Unavailable, [errorInfo("VERSION_MISMATCH")]), "VERSION_MISMATCH");
  assert.equal(kindOf(Code.FailedPrecondition, [], { "remotemedia-supported-versions": "v1" }), "VERSION_MISMATCH");
  assert.equal(kindOf(Code.FailedPrecondition), "VALIDATION");
  assert.equal(kindOf(Code.Internal, [errorInfo("NODE_EXECUTION")]), "NODE_EXECUTION");
  assert.equal(kindOf(Code.InvalidArgument, [errorInfo("NO_SUCH_REASON")]), "VALIDATION");
  assert.equal(kindOf(Code.InvalidArgument), "VALIDATION");
  assert.equal(kindOf(Code.OutOfRange), "VALIDATION");
  assert.equal(kindOf(Code.Unauthenticated), "AUTHENTICATION");
  assert.equal(kindOf(Code.PermissionDenied), "AUTHENTICATION");
  assert.equal(kindOf(Code.ResourceExhausted), "RESOURCE_LIMIT");
  assert.equal(kindOf(Code.Aborted), "NODE_EXECUTION");
  assert.equal(kindOf(Code.Unknown), "INTERNAL");
  assert.equal(kindOf(Code.Unimplemented), "INTERNAL");
  // A fetch that got no response (the server out of reach) is UNAVAILABLE; any other TypeError
  // is a mistake in the calling code.
  assert.equal(toRemoteMediaError(new TypeError("fetch failed")).kind, "UNAVAILABLE");
  assert.equal(toRemoteMediaError(new TypeError("x.map is not a function")).kind, "INTERNAL");
  assert.deepEqual(
    [...ERROR_KINDS].sort(),
    ["AUTHENTICATION", "CANCELLED", "DEADLINE_EXCEEDED", "INTERNAL", "NODE_EXECUTION", "RESOURCE_LIMIT", "UNAVAILABLE", "VALIDATION", "VERSION_MISMATCH"],
  );
});

test("a stream's in-band error is completed by the status that ended the stream", () => {
  const inBand = fromErrorResponse(
    create(pb.ErrorResponseSchema, { errorType: pb.ErrorType.VALIDATION, message: "second manifest", context: "{}" }),
  );
  const status = toRemoteMediaError(
    new ConnectError("second manifest", Code.FailedPrecondition, undefined, [
      errorInfo("VALIDATION"),
      { desc: pb.BadRequestSchema, value: { fieldViolations: [{ field: "manifest", description: "only one" }] } },
    ]),
  );
  const merged = mergeStatus(inBand, status);
  assert.equal(merged, inBand);
  assert.equal(merged.code, Code.FailedPrecondition);
  assert.deepEqual(merged.violations, [{ field: "manifest", description: "only one" }]);

  // A status that says what happened to the call wins over the in-band type.
  const failing = fromErrorResponse(
    create(pb.ErrorResponseSchema, { errorType: pb.ErrorType.NODE_EXECUTION, message: "interrupted", failingNodeId: "py", context: '{"sequence": 3}' }),
  );
  const cancelled = mergeStatus(failing, toRemoteMediaError(new ConnectError("shutting down", Code.Canceled)));
  assert.equal(cancelled.kind, "CANCELLED");
  assert.equal(cancelled.code, Code.Canceled);
  assert.equal(cancelled.message, "interrupted");
  assert.equal(cancelled.nodeId, "py");
  assert.equal(cancelled.sequence, 3);
});

test("a stream's end the transport lost keeps the code the server ends such a stream with", () => {
  // Node's HTTP/2 client drops the trailers of a stream whose unread responses outgrew the
  // read-ahead ("Premature close", UNKNOWN): the in-band error's kind says what the status was.
  const pool = fromErrorResponse(
    create(pb.ErrorResponseSchema, {
      errorType: pb.ErrorType.RESOURCE_LIMIT,
      message: "model busy",
      context: '{"limit": "model_wait_ms", "retry_after_ms": 250}',
    }),
  );
  const merged = mergeStatus(pool, toRemoteMediaError(new ConnectError("Premature close", Code.Unknown)));
  assert.equal(merged.kind, "RESOURCE_LIMIT");
  assert.equal(merged.code, Code.ResourceExhausted);
  assert.equal(merged.retryDelayMs, 250);
  // A status the server sent keeps its own code, UNKNOWN included.
  const internal = fromErrorResponse(create(pb.ErrorResponseSchema, { errorType: pb.ErrorType.INTERNAL, message: "x", context: "{}" }));
  const sent = mergeStatus(internal, toRemoteMediaError(new ConnectError("odd", Code.Unknown, undefined, [errorInfo("INTERNAL")])));
  assert.equal(sent.code, Code.Unknown);
});
