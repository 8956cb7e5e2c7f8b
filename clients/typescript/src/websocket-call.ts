// StreamPipeline over WebSocket (docs/websocket.md): each binary frame carries one StreamRequest
// or one StreamResponse, and the close code carries the gRPC status the session ended with. It
// gives StreamSession the same StreamCall as the gRPC transport, so results, errors and
// backpressure are the same on both: requests are taken from the session's queue only while the
// socket buffers less than maxBufferedBytes and fewer than MAX_UNREAD_RESPONSES responses wait
// to be read, so `send` waits behind a slow network or a slow reader.
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type StreamRequest, StreamRequestSchema, type StreamResponse, StreamResponseSchema } from "./gen/remotemedia/v1/streaming_pb.js";
import type { StreamCall } from "./stream-session.js";

/** The server's WebSocket endpoint, under the client's base URL. */
export const WEBSOCKET_PATH = "/ws/StreamPipeline";
/** Close code of a session that ended with OK; errors close with 4000 + their gRPC code. */
export const CLOSE_NORMAL = 1000;
export const CLOSE_STATUS_BASE = 4000;
/** Bytes a socket may buffer before requests wait (about a second of 48 kHz stereo f32). */
export const DEFAULT_MAX_BUFFERED_BYTES = 1 << 20;
/** Responses received and not yet read before requests wait, as HTTP/2 flow control would. */
export const MAX_UNREAD_RESPONSES = 16;
/** The gRPC codes a close code may carry (every one but OK). */
const STATUS_CODES: readonly Code[] = [
  Code.Canceled,
  Code.Unknown,
  Code.InvalidArgument,
  Code.DeadlineExceeded,
  Code.NotFound,
  Code.AlreadyExists,
  Code.PermissionDenied,
  Code.ResourceExhausted,
  Code.FailedPrecondition,
  Code.Aborted,
  Code.OutOfRange,
  Code.Unimplemented,
  Code.Internal,
  Code.Unavailable,
  Code.DataLoss,
  Code.Unauthenticated,
];
/** How often a waiting request looks at the socket's buffer (browsers signal nothing when it drains). */
const BUFFER_POLL_MS = 2;

/** What a platform's WebSocket reports (transport-node.ts: `ws`; transport-web.ts: the browser's). */
export interface SocketEvents {
  open(): void;
  /** A frame: an ArrayBuffer for a binary one, a string for a text one. */
  message(data: unknown): void;
  /** The transport's own error (a refused handshake, a reset); `close` follows. */
  error(message: string | undefined): void;
  close(code: number, reason: string): void;
}

/** A platform's open WebSocket. */
export interface Socket {
  readonly bufferedAmount: number;
  send(data: Uint8Array): void;
  close(code: number, reason: string): void;
}

export type OpenSocket = (url: string, protocols: string[], events: SocketEvents) => Socket;

export interface WebSocketCallSettings {
  baseUrl: string;
  token: string | undefined;
  protocolVersion: string;
  open: OpenSocket;
  maxBufferedBytes?: number;
}

/** A StreamCall over WebSocket. */
export function webSocketCall(settings: WebSocketCallSettings): StreamCall {
  const url = webSocketUrl(settings.baseUrl);
  const protocols = [`remotemedia.${settings.protocolVersion}`];
  if (settings.token !== undefined && settings.token !== "") protocols.push(`bearer.${base64url(settings.token)}`);
  return (requests, options) => ({
    [Symbol.asyncIterator]: () =>
      new WebSocketStream(
        settings,
        url,
        // The deadline goes to the server too, which ends the session with DEADLINE_EXCEEDED
        // and counts it so (a socket the client closes would count as cancelled).
        options.timeoutMs === undefined ? protocols : [...protocols, `timeout.${grpcTimeout(options.timeoutMs)}`],
        requests[Symbol.asyncIterator](),
        options.signal,
        options.timeoutMs,
      ),
  });
}

/** `ms` as a `grpc-timeout` value: at most 8 digits and a unit, rounded up. */
export function grpcTimeout(ms: number): string {
  const whole = Math.max(0, Math.ceil(ms));
  return whole < 1e8 ? `${whole}m` : `${Math.min(Math.ceil(whole / 1000), 99_999_999)}S`;
}

/** `http(s)://host[:port][/prefix]` → `ws(s)://host[:port][/prefix]/ws/StreamPipeline`. */
export function webSocketUrl(baseUrl: string): string {
  const url = new URL(baseUrl);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.pathname = `${url.pathname.replace(/\/+$/, "")}${WEBSOCKET_PATH}`;
  return url.toString();
}

/** The token as a subprotocol entry can hold it: base64url of its UTF-8 bytes, no padding. */
export function base64url(text: string): string {
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** The error a close frame carries; none for a normal close. */
export function closeError(code: number, reason: string, opened: boolean, detail?: string): ConnectError | undefined {
  if (code === CLOSE_NORMAL) return undefined;
  const status = STATUS_CODES.find((c) => CLOSE_STATUS_BASE + c === code);
  if (status !== undefined) {
    const message = /^[A-Z_]+: /.test(reason) ? reason.slice(reason.indexOf(": ") + 2) : reason;
    return new ConnectError(message, status);
  }
  const why = [reason, detail].filter((s) => s !== undefined && s !== "").join("; ");
  const message = opened
    ? `the WebSocket closed (${code}${why === "" ? "" : `: ${why}`}) before the stream ended`
    : `cannot open a WebSocket to the server (${code}${why === "" ? "" : `: ${why}`}): unreachable, or the handshake was refused (an Origin missing from cors_allowed_origins?)`;
  return new ConnectError(message, Code.Unavailable);
}

/** One call: the socket, the responses not yet read, and the pump of requests. */
class WebSocketStream implements AsyncIterator<StreamResponse> {
  readonly #socket: Socket;
  readonly #requests: AsyncIterator<StreamRequest>;
  readonly #maxBufferedBytes: number;
  readonly #unread: StreamResponse[] = [];
  /** `next()` calls waiting for a response, in call order (concurrent calls each get their own). */
  readonly #readers: { resolve: (r: IteratorResult<StreamResponse>) => void; reject: (e: unknown) => void }[] = [];
  #readerWait: (() => void) | undefined;
  #opened = false;
  #lastError: string | undefined;
  /** Set once the call is over: undefined error for a normal end. */
  #end: { error: ConnectError | undefined } | undefined;
  readonly #cleanup: () => void;

  constructor(
    settings: WebSocketCallSettings,
    url: string,
    protocols: string[],
    requests: AsyncIterator<StreamRequest>,
    signal: AbortSignal,
    timeoutMs: number | undefined,
  ) {
    this.#requests = requests;
    this.#maxBufferedBytes = settings.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
    this.#socket = settings.open(url, protocols, {
      open: () => {
        this.#opened = true;
        void this.#pump();
      },
      message: (data) => {
        this.#received(data);
      },
      error: (message) => {
        this.#lastError = message;
      },
      close: (code, reason) => {
        this.#finish(closeError(code, reason, this.#opened, this.#lastError));
      },
    });
    const onAbort = (): void => {
      this.#stop(Code.Canceled, "the stream was cancelled by the client");
    };
    signal.addEventListener("abort", onAbort, { once: true });
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            this.#stop(Code.DeadlineExceeded, `the stream's deadline passed (timeoutMs ${timeoutMs})`);
          }, timeoutMs);
    this.#cleanup = () => {
      signal.removeEventListener("abort", onAbort);
      clearTimeout(timer);
    };
    if (signal.aborted) onAbort();
  }

  next(): Promise<IteratorResult<StreamResponse>> {
    const head = this.#unread.shift();
    if (head !== undefined) {
      this.#wakePump();
      return Promise.resolve({ done: false, value: head });
    }
    if (this.#end !== undefined) {
      return this.#end.error === undefined ? Promise.resolve({ done: true, value: undefined }) : Promise.reject(this.#end.error);
    }
    return new Promise((resolve, reject) => {
      this.#readers.push({ resolve, reject });
    });
  }

  return(): Promise<IteratorResult<StreamResponse>> {
    this.#stop(Code.Canceled, "the stream was abandoned by its reader");
    return Promise.resolve({ done: true, value: undefined });
  }

  /** Sends requests as they come, while the socket and the reader keep up. */
  async #pump(): Promise<void> {
    try {
      for (;;) {
        await this.#room();
        if (this.#ended()) return;
        const next = await this.#requests.next();
        if (next.done === true || this.#ended()) return;
        this.#socket.send(toBinary(StreamRequestSchema, next.value));
      }
    } catch (e) {
      this.#stop(Code.Internal, `the request stream failed: ${String(e)}`);
    }
  }

  /** Resolves once the socket buffers at most maxBufferedBytes and few responses wait unread. */
  async #room(): Promise<void> {
    while (this.#end === undefined) {
      if (this.#unread.length >= MAX_UNREAD_RESPONSES) {
        await new Promise<void>((resolve) => {
          this.#readerWait = resolve;
        });
      } else if (this.#socket.bufferedAmount > this.#maxBufferedBytes) {
        await new Promise((resolve) => setTimeout(resolve, BUFFER_POLL_MS));
      } else {
        return;
      }
    }
  }

  #ended(): boolean {
    return this.#end !== undefined;
  }

  #wakePump(): void {
    const wake = this.#readerWait;
    this.#readerWait = undefined;
    wake?.();
  }

  #received(data: unknown): void {
    if (this.#end !== undefined) return;
    if (!(data instanceof ArrayBuffer)) {
      this.#stop(Code.Internal, "the server sent a frame that is not binary");
      return;
    }
    let response: StreamResponse;
    try {
      response = fromBinary(StreamResponseSchema, new Uint8Array(data));
    } catch (e) {
      this.#stop(Code.Internal, `the server sent a frame that is not a StreamResponse: ${String(e)}`);
      return;
    }
    const reader = this.#readers.shift();
    if (reader !== undefined) {
      reader.resolve({ done: false, value: response });
    } else {
      this.#unread.push(response);
    }
  }

  /** Ends the call from this side: the server sees the socket close and frees the session. */
  #stop(code: Code, message: string): void {
    if (this.#end !== undefined) return;
    this.#socket.close(CLOSE_STATUS_BASE + code, message.slice(0, 123));
    this.#finish(new ConnectError(message, code));
  }

  #finish(error: ConnectError | undefined): void {
    if (this.#end !== undefined) return;
    this.#end = { error };
    this.#cleanup();
    this.#wakePump();
    // The request side learns why the call ended, so a waiting or later send() can say it.
    if (error === undefined) void this.#requests.return?.();
    else void this.#requests.throw?.(error);
    // Responses still unread are delivered first; the end is seen once they are read.
    for (const reader of this.#readers.splice(0)) {
      if (error === undefined) reader.resolve({ done: true, value: undefined });
      else reader.reject(error);
    }
  }
}
