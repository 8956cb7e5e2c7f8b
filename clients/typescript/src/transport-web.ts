// Transports in browsers: gRPC-Web over fetch. Unary calls only: fetch cannot stream a request
// body, so bidirectional streams need the Node gRPC transport.
import type { Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { TransportKind, TransportSettings } from "./transport-settings.js";

/** Browsers speak gRPC-Web. */
export const DEFAULT_TRANSPORT: TransportKind = "grpc-web";

export interface OpenTransport {
  transport: Transport;
  close(): void;
}

export function openTransport(settings: TransportSettings): OpenTransport {
  if (settings.kind !== "grpc-web") {
    throw new TypeError('browsers cannot speak gRPC over HTTP/2 directly; use transport: "grpc-web"');
  }
  return {
    transport: createGrpcWebTransport({ baseUrl: settings.baseUrl, interceptors: settings.interceptors }),
    close: () => undefined,
  };
}
