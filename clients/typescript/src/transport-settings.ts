// What the client tells the platform's transport factory (transport-node.ts or transport-web.ts).
import type { Interceptor } from "@connectrpc/connect";

/** "grpc": gRPC over HTTP/2 (Node; bidirectional streams). "grpc-web": gRPC-Web (browsers, proxies). */
export type TransportKind = "grpc" | "grpc-web";

/**
 * How `stream()` travels. "grpc": a StreamPipeline call over HTTP/2 (Node). "websocket": the
 * server's WebSocket endpoint, the same messages one per frame (browsers; Node when asked).
 */
export type StreamTransportKind = "grpc" | "websocket";

export interface TransportSettings {
  kind: TransportKind;
  baseUrl: string;
  interceptors: Interceptor[];
  /** Compress requests with gzip and accept gzip responses (Node; browsers send uncompressed). */
  gzip: boolean;
}
