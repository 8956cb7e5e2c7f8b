// Transports in browsers: gRPC-Web over fetch for unary calls, and the browser's WebSocket for
// streams (fetch cannot stream a request body, so gRPC-Web carries no bidirectional stream).
import type { Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { validationError } from "./error.js";
import type { TransportKind, TransportSettings } from "./transport-settings.js";
import type { Socket, SocketEvents } from "./websocket-call.js";

/** Browsers speak gRPC-Web. */
export const DEFAULT_TRANSPORT: TransportKind = "grpc-web";

export interface OpenTransport {
  transport: Transport;
  close(): void;
}

export function openTransport(settings: TransportSettings): OpenTransport {
  if (settings.kind !== "grpc-web") {
    // An option mistake, reported as createClient reports its others.
    throw validationError([
      { field: "transport", description: `browsers cannot speak gRPC over HTTP/2 directly: use "grpc-web", got ${JSON.stringify(settings.kind)}` },
    ]);
  }
  return {
    transport: createGrpcWebTransport({ baseUrl: settings.baseUrl, interceptors: settings.interceptors }),
    close: () => undefined,
  };
}

/** Opens the browser's WebSocket, frames as ArrayBuffers. */
export function openSocket(url: string, protocols: string[], events: SocketEvents): Socket {
  const socket = new WebSocket(url, protocols);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => {
    events.open();
  };
  socket.onmessage = (event: MessageEvent) => {
    events.message(event.data);
  };
  // A browser says nothing of why (a refused handshake looks like an unreachable server).
  socket.onerror = () => {
    events.error(undefined);
  };
  socket.onclose = (event: CloseEvent) => {
    events.close(event.code, event.reason);
  };
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
