// Transports in Node: gRPC over HTTP/2 (full bidirectional streaming) and gRPC-Web over
// HTTP/1.1, and streams over WebSocket (the `ws` package) when asked. Bundlers targeting browsers
// substitute transport-web.ts (package.json "browser").
import type { Interceptor, Transport } from "@connectrpc/connect";
import {
  Http2SessionManager,
  compressionGzip,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { WebSocket } from "ws";
import type { TransportKind, TransportSettings } from "./transport-settings.js";
import type { Socket, SocketEvents } from "./websocket-call.js";

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

/** Opens a WebSocket with `ws`, frames as ArrayBuffers, without compression (audio barely compresses). */
export function openSocket(url: string, protocols: string[], events: SocketEvents): Socket {
  const socket = new WebSocket(url, protocols, { perMessageDeflate: false });
  socket.binaryType = "arraybuffer";
  socket.on("open", () => {
    events.open();
  });
  socket.on("message", (data, isBinary) => {
    // With binaryType "arraybuffer" every frame arrives as an ArrayBuffer; text is decoded.
    events.message(isBinary || !(data instanceof ArrayBuffer) ? data : new TextDecoder().decode(data));
  });
  socket.on("error", (error) => {
    events.error(error.message);
  });
  socket.on("close", (code, reason) => {
    events.close(code, reason.toString());
  });
  return {
    get bufferedAmount() {
      return socket.bufferedAmount;
    },
    send: (data) => {
      socket.send(data);
    },
    close: (code, reason) => {
      socket.close(code, reason);
    },
  };
}
