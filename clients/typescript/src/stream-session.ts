// StreamSession: one StreamPipeline call. `send` queues audio chunks through a bounded queue
// (waiting while it is full), iteration yields the results in the order the server answers them
// (chunk sequence order), `close` flushes the pipeline and `cancel` stops it at once.
//
// The server answers every chunk and waits while its answers are not read, so results must be
// read while chunks are sent (two loops, or one that alternates); otherwise `send` waits forever.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { Audio } from "./audio.js";
import { RemoteMediaError, clientClosedError, validationError } from "./error.js";
import type { ErrorResponse } from "./gen/remotemedia/v1/common_pb.js";
import type { PipelineManifest } from "./gen/remotemedia/v1/manifest_pb.js";
import {
  StreamControl_Command,
  type StreamRequest,
  StreamRequestSchema,
  type StreamResponse,
} from "./gen/remotemedia/v1/streaming_pb.js";
import { type StreamMetrics, streamMetrics } from "./metrics.js";
import { checkOptions, describe, isString } from "./options-check.js";
import { RequestQueue } from "./request-queue.js";
import { ReadAhead } from "./read-ahead.js";
import { PipelineResult } from "./result.js";
import { fromErrorResponse, mergeStatus, toRemoteMediaError } from "./to-error.js";

export interface StreamOptions {
  /** Cancels the stream when aborted. */
  signal?: AbortSignal | undefined;
  /** Deadline of the whole stream (none unless given; the client's timeoutMs applies to unary calls). */
  timeoutMs?: number | undefined;
  /** Node that receives chunks sent without a `nodeId` (default: the pipeline's only source node). */
  inputNode?: string | undefined;
  /** Chunks `send` may queue ahead of the transport before it waits (default 8). */
  maxBufferedChunks?: number | undefined;
}

export interface SendOptions {
  /** Node whose "input" port receives the chunk (default: the session's input node). */
  nodeId?: string | undefined;
  /**
   * Sequence number echoed by the result: a non-negative integer up to Number.MAX_SAFE_INTEGER
   * (default: one more than the previous chunk's, from 0). The server takes repeated and
   * decreasing numbers as they are; each result carries the number its chunk was sent with.
   */
  sequence?: number | undefined;
}

/** Starts the call: sends `requests`, returns the responses. */
export type StreamCall = (
  requests: AsyncIterable<StreamRequest>,
  options: { signal: AbortSignal; timeoutMs?: number },
) => AsyncIterable<StreamResponse>;

const DEFAULT_MAX_BUFFERED_CHUNKS = 8;
/**
 * Responses read ahead of the application (see ReadAhead): a stream the server ends while the
 * application is busy keeps its last results and its status.
 */
const READ_AHEAD_RESPONSES = 64;
/** send()'s options; `sequence` has its own check, which says what the default would have been. */
const SEND_OPTIONS = { nodeId: isString, sequence: () => undefined };

export class StreamSession implements AsyncIterable<PipelineResult> {
  /** The server's id for the session (StreamReady.session_id). */
  readonly sessionId: string;
  readonly #queue: RequestQueue<StreamRequest>;
  readonly #responses: AsyncIterator<StreamResponse>;
  readonly #abort: AbortController;
  readonly #inputNode: string | undefined;
  /** The pipeline's node ids, which a chunk's nodeId must be one of. */
  readonly #nodeIds: ReadonlySet<string>;
  readonly #unlinkSignals: () => void;
  #nextSequence = 0;
  #metrics: StreamMetrics | undefined;
  #state: "open" | "closing" | "ended" = "open";
  #error: RemoteMediaError | undefined;
  /** A protocol error received in-band; the status that ends the stream follows it. */
  #fatal: ErrorResponse | undefined;

  private constructor(
    sessionId: string,
    queue: RequestQueue<StreamRequest>,
    responses: AsyncIterator<StreamResponse>,
    abort: AbortController,
    inputNode: string | undefined,
    nodeIds: ReadonlySet<string>,
    signal: AbortSignal | undefined,
    clientClosed: AbortSignal | undefined,
  ) {
    this.sessionId = sessionId;
    this.#queue = queue;
    this.#responses = new ReadAhead(responses, READ_AHEAD_RESPONSES);
    this.#abort = abort;
    this.#inputNode = inputNode;
    this.#nodeIds = nodeIds;
    const onAbort = (): void => {
      this.cancel();
    };
    const onClientClosed = (): void => {
      this.#cancel(clientClosedError());
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    clientClosed?.addEventListener("abort", onClientClosed, { once: true });
    this.#unlinkSignals = () => {
      signal?.removeEventListener("abort", onAbort);
      clientClosed?.removeEventListener("abort", onClientClosed);
    };
  }

  /**
   * Sends the manifest and resolves once the server has built every node (`ready`).
   * `clientClosed` is the client's: aborting it (`client.close()`) ends the session with a
   * CANCELLED error saying the client is closed.
   */
  static async open(
    call: StreamCall,
    manifest: PipelineManifest,
    inputNode: string | undefined,
    options: StreamOptions = {},
    clientClosed?: AbortSignal,
  ): Promise<StreamSession> {
    const { signal } = options;
    if (clientClosed?.aborted === true) throw clientClosedError();
    if (signal?.aborted === true) throw cancelledError("the stream was cancelled before it opened");
    const queue = new RequestQueue<StreamRequest>(options.maxBufferedChunks ?? DEFAULT_MAX_BUFFERED_CHUNKS);
    const abort = new AbortController();
    const onAbort = (): void => {
      abort.abort(cancelledReason());
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    clientClosed?.addEventListener("abort", onAbort, { once: true });
    const unlink = (): void => {
      signal?.removeEventListener("abort", onAbort);
      clientClosed?.removeEventListener("abort", onAbort);
    };
    const fail = (error: RemoteMediaError): RemoteMediaError => {
      unlink();
      const reported = clientClosed?.aborted === true ? clientClosedError() : error;
      queue.fail(reported);
      abort.abort(cancelledReason());
      return reported;
    };
    queue.pushNow(create(StreamRequestSchema, { request: { case: "manifest", value: manifest } }));
    const responses = call(transportSide(queue), {
      signal: abort.signal,
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
    })[Symbol.asyncIterator]();
    let first: IteratorResult<StreamResponse>;
    try {
      first = await responses.next();
    } catch (e) {
      throw fail(toRemoteMediaError(e));
    }
    if (first.done !== true && first.value.response.case === "ready") {
      unlink();
      const session = new StreamSession(
        first.value.response.value.sessionId,
        queue,
        responses,
        abort,
        inputNode,
        new Set(manifest.nodes.map((n) => n.id)),
        signal,
        clientClosed,
      );
      // Aborted while the ready was on its way: the session's own listeners came too late.
      if (isAborted(clientClosed)) session.#cancel(clientClosedError());
      else if (isAborted(signal)) session.cancel();
      return session;
    }
    if (first.done !== true && first.value.response.case === "error") {
      let error = fromErrorResponse(first.value.response.value);
      try {
        while ((await responses.next()).done !== true);
      } catch (e) {
        error = mergeStatus(error, toRemoteMediaError(e));
      }
      throw fail(error);
    }
    throw fail(
      new RemoteMediaError({ kind: "INTERNAL", message: "the stream ended before the server reported it ready" }),
    );
  }

  /** The latest StreamMetrics; the final ones once iteration has finished. */
  get metrics(): StreamMetrics | undefined {
    return this.#metrics;
  }

  /** Chunks queued by `send` and not yet taken by the transport (at most maxBufferedChunks). */
  get bufferedChunks(): number {
    return this.#queue.length;
  }

  /** Sample bytes of the queued chunks. */
  get bufferedBytes(): number {
    return this.#queue.bytes;
  }

  /** `send` calls waiting for room in the queue. */
  get pendingSends(): number {
    return this.#queue.waiting;
  }

  /** "open", "closing" after close(), "ended" once the stream finished or was cancelled. */
  get state(): "open" | "closing" | "ended" {
    return this.#state;
  }

  /**
   * Queues one chunk and resolves with its sequence number once it is queued; waits while
   * maxBufferedChunks chunks are already waiting for the transport. A `sequence` that is not a
   * non-negative safe integer, or no `nodeId` for a pipeline of several source nodes without
   * the stream's `inputNode`, rejects with a VALIDATION error and leaves the session open.
   */
  async send(audio: Audio, options: SendOptions = {}): Promise<number> {
    this.#assertOpen();
    checkOptions(options, SEND_OPTIONS);
    if (!(audio instanceof Audio)) {
      throw validationError([{ field: "audio", description: `must be an Audio, got ${describe(audio)}` }]);
    }
    const nodeId = options.nodeId ?? this.#inputNode;
    if (nodeId === undefined) {
      throw validationError([
        {
          field: "nodeId",
          description: "the pipeline has several source nodes: pass the chunk's nodeId or the stream's inputNode",
        },
      ]);
    }
    if (!this.#nodeIds.has(nodeId)) {
      throw validationError([{ field: "nodeId", description: `no node "${nodeId}" in this pipeline`, nodeId }]);
    }
    const sequence = checkSequence(options.sequence ?? this.#nextSequence, options.sequence === undefined);
    this.#nextSequence = sequence + 1;
    const buffer = audio.toProto();
    const request = create(StreamRequestSchema, {
      request: { case: "audioChunk", value: { nodeId, buffer, sequence: BigInt(sequence) } },
    });
    await this.#queue.push(request, buffer.samples.byteLength);
    return sequence;
  }

  /**
   * Asks the server to flush the pipeline and finish: the remaining results, then the final
   * metrics, then the end of iteration. Resolves once the request is queued.
   */
  async close(): Promise<void> {
    // A session the call's failure ended (its deadline, the idle limit, a reset) says so here
    // too, as send() does, even once iteration has thrown it; after cancel() or client.close()
    // (CANCELLED, the caller's own doing) closing is the no-op clean-up it always is.
    if (this.#state === "ended" && this.#error !== undefined && this.#error.kind !== "CANCELLED") throw this.#error;
    if (this.#state !== "open") return;
    this.#state = "closing";
    const request = create(StreamRequestSchema, {
      request: { case: "control", value: { command: StreamControl_Command.CLOSE } },
    });
    await this.#queue.push(request);
    this.#queue.end();
  }

  /**
   * Stops the stream at once: queued chunks are dropped, pending sends and iteration fail with a
   * CANCELLED error, and the call is reset so the server frees the session.
   */
  cancel(): void {
    this.#cancel(cancelledError("the stream was cancelled by the client"));
  }

  #cancel(error: RemoteMediaError): void {
    if (this.#state === "ended") return;
    this.#finish(error);
    this.#abort.abort(cancelledReason());
  }

  /**
   * Results in the server's order. A node that failed on one chunk makes `next()` throw that
   * chunk's NODE_EXECUTION error (with its `sequence`). Like any exception, that ends a
   * `for await` loop, but not the session: it stays open, and iterating again (another
   * `for await`, or `next()`) continues with the next chunk's result. Leaving a loop early
   * (`break`, `return`, or an exception thrown by the loop's body) cancels the stream.
   */
  [Symbol.asyncIterator](): AsyncIterator<PipelineResult> {
    return {
      next: () => this.#next(),
      return: () => {
        this.cancel();
        return Promise.resolve({ done: true, value: undefined });
      },
    };
  }

  async #next(): Promise<IteratorResult<PipelineResult>> {
    for (;;) {
      if (this.#state === "ended") {
        if (this.#error !== undefined) throw this.#error;
        return { done: true, value: undefined };
      }
      let r: IteratorResult<StreamResponse>;
      try {
        r = await this.#responses.next();
      } catch (e) {
        const status = toRemoteMediaError(e);
        const error = this.#fatal === undefined ? status : mergeStatus(fromErrorResponse(this.#fatal), status);
        this.#finish(error);
        // A cancel() while waiting has already recorded its own error.
        throw this.#error ?? error;
      }
      if (r.done === true) {
        this.#finish(this.#fatal === undefined ? undefined : fromErrorResponse(this.#fatal));
        continue;
      }
      const message = r.value.response;
      switch (message.case) {
        case "result":
          return { done: false, value: new PipelineResult(message.value, Number(message.value.sequence)) };
        case "metrics":
          this.#metrics = streamMetrics(message.value);
          continue;
        case "error": {
          const error = fromErrorResponse(message.value);
          // A node that failed on one chunk: that chunk's answer; the session goes on.
          if (error.sequence !== undefined) throw error;
          this.#fatal = message.value;
          continue;
        }
        default:
          continue;
      }
    }
  }

  #assertOpen(): void {
    if (this.#state === "open") return;
    throw this.#error ?? new TypeError("the stream session is closed");
  }

  #finish(error: RemoteMediaError | undefined): void {
    if (this.#state === "ended") return;
    this.#state = "ended";
    this.#error = error;
    this.#queue.fail(error ?? new TypeError("the stream session has ended"));
    this.#unlinkSignals();
  }
}

/** `sequence` if it is a valid chunk sequence, else the VALIDATION error naming the field. */
function checkSequence(sequence: unknown, automatic: boolean): number {
  if (typeof sequence === "number" && Number.isSafeInteger(sequence) && sequence >= 0) return sequence;
  const got = typeof sequence === "number" ? String(sequence) : `a ${typeof sequence}`;
  const description = automatic
    ? `must be a non-negative integer up to Number.MAX_SAFE_INTEGER: automatic numbering reached ${got}; pass sequence explicitly`
    : `must be a non-negative integer up to Number.MAX_SAFE_INTEGER, got ${got}`;
  throw validationError([{ field: "sequence", description }]);
}

/**
 * The queue as the transport sees it. A transport that ends the call stops taking requests with
 * `throw(reason)` (the call's failure: a deadline, a reset, a closed socket) or `return()`;
 * `send` and `close` then reject with that failure as a RemoteMediaError, as iteration does.
 */
function transportSide(queue: RequestQueue<StreamRequest>): AsyncIterable<StreamRequest> {
  return {
    [Symbol.asyncIterator]: () => {
      const requests = queue[Symbol.asyncIterator]();
      const done = { done: true as const, value: undefined };
      return {
        next: () => requests.next(),
        return: () => {
          queue.fail(new TypeError("the stream session has ended"));
          return Promise.resolve(done);
        },
        throw: (reason: unknown) => {
          queue.fail(toRemoteMediaError(reason));
          return Promise.resolve(done);
        },
      };
    },
  };
}

/** Whether `signal` is aborted now (a call, so that TypeScript does not narrow it for good). */
function isAborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}

function cancelledReason(): ConnectError {
  return new ConnectError("the stream was cancelled by the client", Code.Canceled);
}

function cancelledError(message: string): RemoteMediaError {
  return new RemoteMediaError({ kind: "CANCELLED", code: Code.Canceled, message });
}
