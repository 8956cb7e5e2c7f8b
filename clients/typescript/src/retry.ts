// Retries of unary calls, as the Python client retries them: UNAVAILABLE (unreachable or
// draining), and RESOURCE_EXHAUSTED only with a google.rpc.RetryInfo (a concurrency cap that says
// when to come back). Other rejections would fail the same way again; in-band pipeline errors are
// never retried (the service retries failing nodes itself), and neither is an open stream.
import { Code } from "@connectrpc/connect";
import { type ErrorKind, RemoteMediaError } from "./error.js";
import { checkOptions, describe, isCount, isDurationMs } from "./options-check.js";
import { toRemoteMediaError } from "./to-error.js";

export interface RetryOptions {
  /** Attempts in all, the first included (default 4: three retries). 1 disables retries. */
  maxAttempts?: number | undefined;
  /** Backoff after the first failure (default 100 ms), times `multiplier` after each further one. */
  initialBackoffMs?: number | undefined;
  /** Longest backoff (default 5000 ms). */
  maxBackoffMs?: number | undefined;
  /** Growth of the backoff per attempt (default 2). */
  multiplier?: number | undefined;
  /** Spread of each backoff, ± this fraction (default 0.2), so clients do not retry in step. */
  jitter?: number | undefined;
}

export type RetryPolicy = Required<RetryOptions>;

export const DEFAULT_RETRY: RetryPolicy = {
  maxAttempts: 4,
  initialBackoffMs: 100,
  maxBackoffMs: 5000,
  multiplier: 2,
  jitter: 0.2,
};

/** Each retry option and its check. */
const RETRY_OPTIONS = {
  maxAttempts: isCount,
  initialBackoffMs: isDurationMs,
  maxBackoffMs: isDurationMs,
  multiplier: (v: unknown) =>
    typeof v === "number" && Number.isFinite(v) && v >= 1 ? undefined : `must be a finite number, at least 1, got ${describe(v)}`,
  jitter: (v: unknown) => (typeof v === "number" && v >= 0 && v < 1 ? undefined : `must be a number in [0, 1), got ${describe(v)}`),
};

/**
 * The policy of createClient's `retry` option (`false`: one attempt). A value of the wrong
 * kind, or an option retry does not have, is a VALIDATION error naming `retry.<option>`.
 */
export function retryPolicy(options: RetryOptions | false | undefined): RetryPolicy {
  if (options === false) return { ...DEFAULT_RETRY, maxAttempts: 1 };
  checkOptions(options, RETRY_OPTIONS, "retry.");
  return { ...DEFAULT_RETRY, ...definedOnly(options ?? {}) };
}

function definedOnly(options: RetryOptions): RetryOptions {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
}

/** Whether the same call may pass if it is made again. */
export function isRetryable(error: RemoteMediaError): boolean {
  return error.code === Code.Unavailable || (error.code === Code.ResourceExhausted && error.retryDelayMs !== undefined);
}

/**
 * Milliseconds to wait after attempt `attempt` (1-based) failed with `error`, or undefined when
 * the call must not be tried again: the jittered backoff, never shorter than a RetryInfo delay.
 */
export function retryDelay(
  error: RemoteMediaError,
  attempt: number,
  policy: RetryPolicy,
  random: () => number = Math.random,
): number | undefined {
  if (attempt >= policy.maxAttempts || !isRetryable(error)) return undefined;
  const backoff = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * policy.multiplier ** (attempt - 1));
  const jittered = backoff * (1 + policy.jitter * (2 * random() - 1));
  return Math.max(jittered, error.retryDelayMs ?? 0);
}

/** Waits `ms` milliseconds, or less when `signal` aborts first. */
export type Sleep = (ms: number, signal: AbortSignal | undefined) => Promise<void>;

export const sleep: Sleep = (ms, signal) =>
  new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });

export interface RetryContext {
  policy: RetryPolicy;
  /** Overall deadline of the call, all attempts and delays included. */
  timeoutMs: number | undefined;
  signal: AbortSignal | undefined;
  sleep?: Sleep;
  now?: () => number;
}

/**
 * Runs `attempt` until it succeeds, fails for good, or the deadline would pass. Each attempt gets
 * the time left of the deadline. Failures are thrown as RemoteMediaError.
 */
export async function withRetry<T>(attempt: (timeoutMs: number | undefined) => Promise<T>, ctx: RetryContext): Promise<T> {
  const now = ctx.now ?? Date.now;
  const wait = ctx.sleep ?? sleep;
  const deadline = ctx.timeoutMs === undefined ? undefined : now() + ctx.timeoutMs;
  const aborted = (): boolean => ctx.signal?.aborted === true;
  for (let n = 1; ; n++) {
    const left = deadline === undefined ? undefined : deadline - now();
    // A deadline already passed (`timeoutMs: 0`) sends nothing: a call sent with the 1 ms
    // the transport would make of it could still run, and succeed.
    if (left !== undefined && left <= 0) throw deadlineExceededError(ctx.timeoutMs ?? 0);
    try {
      return await attempt(left);
    } catch (e) {
      let error = toRemoteMediaError(e);
      // Past its deadline, a call the transport broke off (a reset, EPIPE on a gRPC-Web upload)
      // failed because of the deadline, as the server counts it.
      if (deadline !== undefined && now() >= deadline && BROKEN_OFF.includes(error.kind) && !aborted()) {
        error = deadlineExceededError(ctx.timeoutMs ?? 0, error);
      }
      const delay = retryDelay(error, n, ctx.policy);
      if (delay === undefined || aborted()) throw error;
      if (deadline !== undefined && now() + delay >= deadline) throw error;
      await wait(delay, ctx.signal);
      if (aborted()) throw cancelledError(error);
    }
  }
}

/** Kinds of the errors of a call the transport broke off, rather than one the server answered. */
const BROKEN_OFF: readonly ErrorKind[] = ["INTERNAL", "CANCELLED"];

function deadlineExceededError(timeoutMs: number, cause?: RemoteMediaError): RemoteMediaError {
  return new RemoteMediaError({
    kind: "DEADLINE_EXCEEDED",
    code: Code.DeadlineExceeded,
    message: `the call's deadline (timeoutMs ${timeoutMs}) passed`,
    ...(cause === undefined ? {} : { cause }),
  });
}

function cancelledError(last: RemoteMediaError): RemoteMediaError {
  return new RemoteMediaError({
    kind: "CANCELLED",
    code: Code.Canceled,
    message: `the call was cancelled while waiting to retry (last attempt: ${last.message})`,
    cause: last,
  });
}
