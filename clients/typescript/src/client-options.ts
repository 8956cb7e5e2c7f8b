// Options of createClient and of each call.
import type { RetryOptions } from "./retry.js";
import type { StreamTransportKind, TransportKind } from "./transport-settings.js";

export interface ClientOptions {
  /** `host:port` of the server, reached over plain HTTP (`http://host:port`). */
  address?: string | undefined;
  /** Full URL of the server (`https://media.example.com`); takes precedence over `address`. */
  baseUrl?: string | undefined;
  /** Bearer token sent as `authorization: Bearer <token>`. */
  token?: string | undefined;
  /** Protocol version declared in the `remotemedia-protocol-version` header and in requests (default "v1"). */
  protocolVersion?: string | undefined;
  /** Default deadline of unary calls, retries included (none when unset). */
  timeoutMs?: number | undefined;
  /**
   * "gzip" compresses requests and asks for compressed responses (Node only; browsers send
   * uncompressed). Default "none": audio rarely compresses enough to pay for the CPU.
   */
  compression?: "gzip" | "none" | undefined;
  /**
   * "grpc" (HTTP/2, Node's default) or "grpc-web" (browsers' default and only choice: "grpc" in a
   * browser is a VALIDATION error).
   */
  transport?: TransportKind | undefined;
  /**
   * How `stream()` travels: "grpc" (HTTP/2; Node's default with the "grpc" transport) or
   * "websocket" (the server's WebSocket endpoint; the default of browsers and of "grpc-web",
   * which carries no bidirectional stream: "grpc" with it is a VALIDATION error). The same
   * results and errors either way.
   */
  streamTransport?: StreamTransportKind | undefined;
  /** Retries of unary calls; `false` disables them. */
  retry?: RetryOptions | false | undefined;
}

export interface CallOptions {
  /** Aborts the call (it then fails with a CANCELLED error). */
  signal?: AbortSignal | undefined;
  /** Deadline of this call, overriding the client's timeoutMs. */
  timeoutMs?: number | undefined;
}
