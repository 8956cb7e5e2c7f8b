// Transports in Node: gRPC over HTTP/2 (full bidirectional streaming) and gRPC-Web over
// HTTP/1.1. Bundlers targeting browsers substitute transport-web.ts (package.json "browser").
import type { Interceptor, Transport } from "@connectrpc/connect";
import {
  Http2SessionManager,
  compressionGzip,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import type { TransportKind, TransportSettings } from "./transport-settings.js";

/** Node speaks gRPC unless told otherwise. */
export const DEFAULT_TRANSPORT: TransportKind = "grpc";

/**
 * Node's HTTP/2 session memory cap, in MB (Node's default is 10). Node counts request bytes still
 * waiting to be sent against it and, while over it, refuses every incoming header block with
 * ENHANCE_YOUR_CALM. A request larger than the cap that the server refuses before reading it
 * (too large, a wrong token) would then never see the server's answer, and the stream, reset by
 * the server with NO_ERROR, would wait for an end that never comes and keep Node alive. The
 * largest message protobuf can encode is 2 GiB, so above that nothing this client sends counts
 * against the cap.
 */
export const HTTP2_SESSION_MEMORY_MB = 4096;

export interface OpenTransport {
  transport: Transport;
  /** Closes the transport's connections; calls in flight fail. */
  close(): void;
}

export function openTransport(settings: TransportSettings): OpenTransport {
  const interceptors: Interceptor[] = settings.interceptors;
  // Audio barely compresses: gzip is used both ways when asked for, and not at all otherwise
  // (accepting it would make the server spend CPU compressing every response).
  const compression = settings.gzip
    ? { acceptCompression: [compressionGzip], sendCompression: compressionGzip }
    : { acceptCompression: [] };
  if (settings.kind === "grpc-web") {
    return {
      transport: createGrpcWebTransport({ baseUrl: settings.baseUrl, httpVersion: "1.1", interceptors, ...compression }),
      close: () => undefined,
    };
  }
  const sessionManager = new Http2SessionManager(settings.baseUrl, undefined, { maxSessionMemory: HTTP2_SESSION_MEMORY_MB });
  return {
    transport: createGrpcTransport({ baseUrl: settings.baseUrl, sessionManager, interceptors, ...compression }),
    close: () => {
      sessionManager.abort();
    },
  };
}
