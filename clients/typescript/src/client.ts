// createClient: the RemoteMedia client over a Connect transport (gRPC in Node, gRPC-Web in browsers)
// for unary calls, and over HTTP/2 gRPC or WebSocket for streams.
import { create } from "@bufbuild/protobuf";
import { type Client, createClient as createConnectClient } from "@connectrpc/connect";
import type { Audio } from "./audio.js";
import type { CallOptions, ClientOptions } from "./client-options.js";
import { BUILTIN_CATALOGUE, type Catalogue } from "./catalogue.js";
import { RemoteMediaError, clientClosedError, validationError } from "./error.js";
import {
  type ExecuteInputs,
  type PipelineLike,
  executeRequest,
  manifestViolations,
  sourceNodes,
  toManifest,
  unknownNodeTypes,
} from "./execute-request.js";
import { PipelineService, VersionRequestSchema } from "./gen/remotemedia/v1/service_pb.js";
import { headersInterceptor } from "./headers.js";
import { PROTOCOL_VERSION } from "./protocol.js";
import { PipelineResult } from "./result.js";
import { retryPolicy, withRetry } from "./retry.js";
import { type StreamCall, type StreamOptions, StreamSession } from "./stream-session.js";
import { explainLengthLimit } from "./length-limit.js";
import { fromErrorResponse, toRemoteMediaError } from "./to-error.js";
import { DEFAULT_TRANSPORT, openSocket, openTransport } from "./transport-node.js";
import { CALL_OPTIONS, checkOptions, describe, isCount, isDurationMs, isString, oneOf } from "./options-check.js";
import { type VersionInfo, versionInfo } from "./version-info.js";
import { webSocketCall } from "./websocket-call.js";

export interface RemoteMediaClient {
  /** The server URL calls go to. */
  readonly baseUrl: string;
  /**
   * Runs `pipeline` once over `inputs` (or over one Audio for the pipeline's only source node).
   * Pipeline errors, rejections and transport failures are thrown as RemoteMediaError. Input
   * too long for one request (message size, samples, memory, time) is a RESOURCE_LIMIT error
   * whose `hint` names the ways past it: `stream()`, and `inputs.limits`.
   */
  execute(pipeline: PipelineLike, inputs?: ExecuteInputs | Audio, options?: CallOptions): Promise<PipelineResult>;
  /** What the server runs and whether it supports `clientVersion` (default: the client's protocol version). */
  getVersion(options?: CallOptions & { clientVersion?: string }): Promise<VersionInfo>;
  /**
   * Asks the server whether it serves this client's protocol version; throws a VERSION_MISMATCH
   * RemoteMediaError listing the versions it supports when it does not.
   */
  checkCompatibility(options?: CallOptions): Promise<VersionInfo>;
  /**
   * The server's node catalogue: every node type's parameters, ports and runtimes, plug-ins
   * included. Fetched once (GetVersion) and kept; `execute()` and `stream()` use it to check
   * pipelines with node types this client was not built with.
   */
  catalogue(options?: CallOptions): Promise<Catalogue>;
  /**
   * Opens a StreamPipeline session; resolves once every node is built. Opening is retried as
   * unary calls are; an open stream never is. Travels over HTTP/2 gRPC or WebSocket, as the
   * client's `streamTransport` says.
   */
  stream(pipeline: PipelineLike, options?: StreamOptions): Promise<StreamSession>;
  /**
   * Closes the client's connections and ends its open streams (iteration and `send` reject with
   * a CANCELLED error saying the client is closed). Calls made afterwards reject with that
   * error too; closing again does nothing.
   */
  close(): void;
}

/** createClient's options and their checks (`retry` is checked by retryPolicy). */
const CLIENT_OPTIONS = {
  address: isString,
  baseUrl: isString,
  token: isString,
  protocolVersion: isString,
  timeoutMs: isDurationMs,
  compression: oneOf("gzip", "none"),
  transport: oneOf("grpc", "grpc-web"),
  streamTransport: oneOf("grpc", "websocket"),
  retry: () => undefined,
};
const STREAM_OPTIONS = { ...CALL_OPTIONS, inputNode: isString, maxBufferedChunks: isCount };
const VERSION_OPTIONS = { ...CALL_OPTIONS, clientVersion: isString };

export function createClient(options: ClientOptions): RemoteMediaClient {
  checkOptions(options, CLIENT_OPTIONS);
  options = { ...options, ...(options.token === undefined ? {} : { token: bearerToken(options.token) }) };
  const baseUrl = resolveBaseUrl(options);
  const protocolVersion = options.protocolVersion ?? PROTOCOL_VERSION;
  const kind = options.transport ?? DEFAULT_TRANSPORT;
  if (kind === "grpc-web" && options.streamTransport === "grpc") {
    // fetch cannot stream a request body, so gRPC-Web has no bidirectional calls.
    throw validationError([
      { field: "streamTransport", description: 'gRPC-Web carries unary calls only: with transport "grpc-web", stream over "websocket"' },
    ]);
  }
  const policy = retryPolicy(options.retry);
  const opened = openTransport({
    kind,
    baseUrl,
    interceptors: [headersInterceptor(options.token, protocolVersion)],
    gzip: options.compression === "gzip",
  });
  const rpc: Client<typeof PipelineService> = createConnectClient(PipelineService, opened.transport);
  const streamKind = options.streamTransport ?? (kind === "grpc" ? "grpc" : "websocket");

  const streamCall = (): StreamCall => {
    if (streamKind === "websocket") {
      return webSocketCall({ baseUrl, token: options.token, protocolVersion, open: openSocket });
    }
    return (requests, callOptions) => rpc.streamPipeline(requests, callOptions);
  };
  let serverCatalogue: Promise<Catalogue> | undefined;
  // Aborted by close(): new calls and retries refuse to start, open streams end.
  const closing = new AbortController();
  const assertOpen = (): void => {
    if (closing.signal.aborted) throw clientClosedError();
  };

  const unary = <T>(
    call: (options: CallOptions) => Promise<T>,
    callOptions: CallOptions,
  ): Promise<T> =>
    withRetry(
      async (timeoutMs) => {
        // Without this check, the transport would quietly open a new connection.
        assertOpen();
        // close() stops calls in flight on every transport: closing an HTTP/2 connection
        // resets its calls, but a gRPC-Web request (fetch, HTTP/1.1) runs on unless aborted.
        const either = new AbortController();
        const signals = [callOptions.signal, closing.signal].filter((x) => x !== undefined);
        const abort = (): void => {
          either.abort(signals.find((x) => x.aborted)?.reason);
        };
        for (const signal of signals) {
          if (signal.aborted) abort();
          signal.addEventListener("abort", abort, { once: true });
        }
        try {
          return await call(callArgs(either.signal, timeoutMs));
        } catch (e) {
          // A call in flight when close() was called.
          assertOpen();
          throw e;
        } finally {
          for (const signal of signals) signal.removeEventListener("abort", abort);
        }
      },
      { policy, timeoutMs: callOptions.timeoutMs ?? options.timeoutMs, signal: callOptions.signal },
    );

  return {
    baseUrl,

    async execute(pipeline, inputs = {}, callOptions = {}) {
      assertOpen();
      checkOptions(callOptions, CALL_OPTIONS);
      const manifest = toManifest(pipeline);
      const known = unknownNodeTypes(manifest) ? await this.catalogue(callOptions) : BUILTIN_CATALOGUE;
      const request = executeRequest(manifest, inputs, protocolVersion, known);
      let response;
      try {
        response = await unary((args) => rpc.executePipeline(request, args), callOptions);
      } catch (e) {
        throw explainLengthLimit(toRemoteMediaError(e), request);
      }
      switch (response.outcome.case) {
        case "result":
          return new PipelineResult(response.outcome.value);
        case "error":
          throw explainLengthLimit(fromErrorResponse(response.outcome.value), request);
        default:
          throw new RemoteMediaError({
            kind: "INTERNAL",
            message: "the server answered ExecutePipeline with neither a result nor an error",
          });
      }
    },

    async getVersion(callOptions = {}) {
      assertOpen();
      checkOptions(callOptions, VERSION_OPTIONS);
      const request = create(VersionRequestSchema, { clientVersion: callOptions.clientVersion ?? protocolVersion });
      const response = await unary((args) => rpc.getVersion(request, args), callOptions);
      return versionInfo(response);
    },

    catalogue(callOptions = {}) {
      checkOptions(callOptions, CALL_OPTIONS);
      serverCatalogue ??= this.getVersion(callOptions).then((info) => BUILTIN_CATALOGUE.merged(info.catalogue));
      // A failed fetch is not kept: the next call asks again.
      serverCatalogue.catch(() => (serverCatalogue = undefined));
      return serverCatalogue;
    },

    async checkCompatibility(callOptions = {}) {
      const info = await this.getVersion(callOptions);
      if (info.compatible) return info;
      const supported = info.supportedProtocols.join(", ");
      throw new RemoteMediaError({
        kind: "VERSION_MISMATCH",
        message:
          info.compatibilityMessage ||
          `protocol version "${protocolVersion}" is not supported; supported versions: ${supported}`,
        context: { requested: protocolVersion },
        supportedVersions: info.supportedProtocols,
      });
    },

    async stream(pipeline, streamOptions = {}) {
      assertOpen();
      checkOptions(streamOptions, STREAM_OPTIONS);
      const call = streamCall();
      const manifest = toManifest(pipeline);
      const known = unknownNodeTypes(manifest)
        ? await this.catalogue(callArgs(streamOptions.signal, streamOptions.timeoutMs))
        : BUILTIN_CATALOGUE;
      const problems = manifestViolations(manifest, known);
      const { inputNode: named } = streamOptions;
      if (named !== undefined && !manifest.nodes.some((n) => n.id === named)) {
        problems.push({ field: "inputNode", description: `no node "${named}" in this pipeline`, nodeId: named });
      }
      if (problems.length > 0) throw validationError(problems);
      const sources = sourceNodes(manifest);
      const inputNode = streamOptions.inputNode ?? (sources.length === 1 ? sources[0] : undefined);
      return withRetry(
        (timeoutMs) =>
          StreamSession.open(
            call,
            manifest,
            inputNode,
            { ...streamOptions, ...(timeoutMs === undefined ? {} : { timeoutMs }) },
            closing.signal,
          ),
        { policy, timeoutMs: streamOptions.timeoutMs, signal: streamOptions.signal },
      );
    },

    close() {
      if (closing.signal.aborted) return;
      // Streams first, so they end with the client's error rather than the connection's.
      closing.abort();
      opened.close();
    },
  };
}

function callArgs(signal: AbortSignal | undefined, timeoutMs: number | undefined): CallOptions {
  return { ...(signal === undefined ? {} : { signal }), ...(timeoutMs === undefined ? {} : { timeoutMs }) };
}

function resolveBaseUrl(options: ClientOptions): string {
  const { baseUrl, address } = options;
  if (baseUrl !== undefined && baseUrl !== "") return parsedUrl("baseUrl", baseUrl).replace(/\/+$/, "");
  if (address !== undefined && address !== "") return parsedUrl("address", address);
  throw validationError([{ field: "address", description: "createClient needs an address (host:port) or a baseUrl" }]);
}

/**
 * Option `field`'s `value` as the server's http(s) URL: a URL, or a host:port (`localhost:50051`,
 * read as http://, not as a URL of scheme "localhost"); a VALIDATION error naming the option
 * otherwise. The WebSocket URL of streams is derived from it, so ws:// is refused here.
 */
function parsedUrl(field: string, value: string): string {
  const url = /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw validationError([{ field, description: `${describe(value)} is not a host:port or an http(s) URL` }]);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw validationError([
      {
        field,
        description: `${describe(value)}: the scheme must be http or https, got ${parsed.protocol.slice(0, -1)} (streams over WebSocket use the same address; the client derives ws:// or wss:// from it)`,
      },
    ]);
  }
  return url;
}

/**
 * `token` without surrounding whitespace (a token read from a file keeps its newline); a
 * VALIDATION error, which never shows the token, if an HTTP header cannot carry it.
 */
function bearerToken(token: string): string {
  const trimmed = token.trim();
  if (!/^[\x21-\x7e]*$/.test(trimmed)) {
    throw validationError([
      { field: "token", description: "holds a character an HTTP header cannot carry (only visible ASCII); its value is not shown" },
    ]);
  }
  return trimmed;
}
