// Retries of unary calls: which failures are retried, the backoff, RetryInfo and the deadline.
// A recording sleep and a fake clock stand in for time.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { RemoteMediaError, pb } from "../src/index.js";
import { DEFAULT_RETRY, type RetryPolicy, retryDelay, retryPolicy, withRetry } from "../src/retry.js";
import { toRemoteMediaError } from "../src/to-error.js";

const NO_JITTER: RetryPolicy = { ...DEFAULT_RETRY, jitter: 0 };

function overloaded(ms: number): ConnectError {
  return new ConnectError("busy", Code.ResourceExhausted, undefined, [
    { desc: pb.RetryInfoSchema, value: { retryDelay: { seconds: 0n, nanos: ms * 1e6 } } },
  ]);
}

/** A clock that only moves when the retry loop sleeps. */
function fakeTime() {
  let now = 0;
  const slept: number[] = [];
  return {
    slept,
    now: () => now,
    sleep: (ms: number) => {
      slept.push(ms);
      now += ms;
      return Promise.resolve();
    },
  };
}

/** An attempt function failing with `failures` in turn, then answering "ok". */
function script(failures: Error[]) {
  const deadlines: (number | undefined)[] = [];
  return {
    deadlines,
    attempt: (timeoutMs: number | undefined) => {
      deadlines.push(timeoutMs);
      const next = failures.shift();
      return next === undefined ? Promise.resolve("ok") : Promise.reject(next);
    },
  };
}

test("UNAVAILABLE and RESOURCE_EXHAUSTED with RetryInfo are retried; the RetryInfo delay is a floor", async () => {
  const time = fakeTime();
  const calls = script([new ConnectError("down", Code.Unavailable), overloaded(700), new ConnectError("down", Code.Unavailable)]);
  const answer = await withRetry(calls.attempt, { policy: NO_JITTER, timeoutMs: undefined, signal: undefined, ...time });
  assert.equal(answer, "ok");
  assert.deepEqual(time.slept, [100, 700, 400]);
});

test("failures that would repeat are not retried", async () => {
  for (const failure of [
    new ConnectError("too big", Code.ResourceExhausted),
    new ConnectError("bad", Code.InvalidArgument),
    new ConnectError("who", Code.Unauthenticated),
    new ConnectError("late", Code.DeadlineExceeded),
  ]) {
    const time = fakeTime();
    const calls = script([failure]);
    await assert.rejects(withRetry(calls.attempt, { policy: NO_JITTER, timeoutMs: undefined, signal: undefined, ...time }), RemoteMediaError);
    assert.deepEqual(time.slept, []);
  }
});

test("attempts stop at maxAttempts and the last error is thrown", async () => {
  const time = fakeTime();
  const calls = script(Array.from({ length: 5 }, () => new ConnectError("down", Code.Unavailable)));
  const policy = { ...NO_JITTER, maxAttempts: 3 };
  await assert.rejects(withRetry(calls.attempt, { policy, timeoutMs: undefined, signal: undefined, ...time }), (e: unknown) => {
    assert.ok(e instanceof RemoteMediaError);
    assert.equal(e.kind, "UNAVAILABLE");
    return true;
  });
  assert.deepEqual(time.slept, [100, 200]);
});

test("the deadline covers every attempt: each gets the time left, and no retry outlives it", async () => {
  const time = fakeTime();
  const calls = script([new ConnectError("down", Code.Unavailable), overloaded(2_000)]);
  await assert.rejects(withRetry(calls.attempt, { policy: NO_JITTER, timeoutMs: 1_000, signal: undefined, ...time }), (e: unknown) => {
    assert.ok(e instanceof RemoteMediaError);
    assert.equal(e.retryDelayMs, 2_000);
    return true;
  });
  assert.deepEqual(calls.deadlines, [1_000, 900]);
  assert.deepEqual(time.slept, [100]);
});

test("an abort while waiting to retry ends the call as CANCELLED", async () => {
  const controller = new AbortController();
  const calls = script([new ConnectError("down", Code.Unavailable), new ConnectError("down", Code.Unavailable)]);
  const sleep = (): Promise<void> => {
    controller.abort();
    return Promise.resolve();
  };
  await assert.rejects(withRetry(calls.attempt, { policy: NO_JITTER, timeoutMs: undefined, signal: controller.signal, sleep }), (e: unknown) => {
    assert.ok(e instanceof RemoteMediaError);
    assert.equal(e.kind, "CANCELLED");
    return true;
  });
  assert.equal(calls.deadlines.length, 1);
});

test("backoff grows, is capped and jittered within bounds", () => {
  const unavailable = toRemoteMediaError(new ConnectError("down", Code.Unavailable));
  const policy = retryPolicy({ maxAttempts: 10, initialBackoffMs: 100, maxBackoffMs: 1_000, multiplier: 3, jitter: 0.5 });
  assert.equal(retryDelay(unavailable, 1, policy, () => 0.5), 100);
  assert.equal(retryDelay(unavailable, 3, policy, () => 0.5), 900);
  assert.equal(retryDelay(unavailable, 5, policy, () => 0.5), 1_000);
  assert.equal(retryDelay(unavailable, 1, policy, () => 0), 50);
  assert.equal(retryDelay(unavailable, 1, policy, () => 1), 150);
  assert.equal(retryDelay(unavailable, 10, policy), undefined);
  assert.equal(retryPolicy(false).maxAttempts, 1);
  for (const [options, field] of [
    [{ maxAttempts: 0 }, "retry.maxAttempts"],
    [{ jitter: 1 }, "retry.jitter"],
    [{ multiplier: 0.5 }, "retry.multiplier"],
    [{ initialBackoffMs: -1 }, "retry.initialBackoffMs"],
  ] as const) {
    assert.throws(
      () => retryPolicy(options),
      (e: unknown) => e instanceof RemoteMediaError && e.kind === "VALIDATION" && e.violations[0]?.field === field,
    );
  }
  // Unset (undefined) options take their defaults.
  assert.equal(retryPolicy({ maxAttempts: undefined }).maxAttempts, 4);
});

test("a fetch that failed before any response (gRPC-Web to a server out of reach) is UNAVAILABLE", () => {
  // What Chromium's fetch rejects with, bare and as Connect's web transport passes it on.
  const refused = new TypeError("Failed to fetch");
  for (const reason of [refused, new ConnectError(refused.message, Code.Unknown, undefined, undefined, refused)]) {
    const e = toRemoteMediaError(reason);
    assert.equal(e.kind, "UNAVAILABLE");
    assert.equal(e.code, Code.Unavailable);
    assert.match(e.message, /could not be reached: Failed to fetch/);
    assert.equal(retryDelay(e, 1, DEFAULT_RETRY) !== undefined, true, "retried");
  }
  // An UNKNOWN status the server sent is not a network failure.
  assert.equal(toRemoteMediaError(new ConnectError("boom", Code.Unknown)).kind, "INTERNAL");
});

test("a deadline already passed sends nothing, and a call broken off past its deadline is DEADLINE_EXCEEDED", async () => {
  const time = fakeTime();
  let attempts = 0;
  const never = await withRetry(
    () => {
      attempts++;
      return Promise.resolve("sent");
    },
    { policy: NO_JITTER, timeoutMs: 0, signal: undefined, now: time.now, sleep: time.sleep },
  ).catch((e: unknown) => e);
  assert.ok(never instanceof RemoteMediaError && never.kind === "DEADLINE_EXCEEDED", String(never));
  assert.equal(attempts, 0, "timeoutMs 0 makes no call");

  // The transport broke the call off (gRPC-Web's EPIPE on an upload cut by its deadline).
  const broken = await withRetry(
    () => {
      time.sleep(60);
      return Promise.reject(new ConnectError("write EPIPE", Code.Internal));
    },
    { policy: NO_JITTER, timeoutMs: 50, signal: undefined, now: time.now, sleep: time.sleep },
  ).catch((e: unknown) => e);
  assert.ok(broken instanceof RemoteMediaError, String(broken));
  assert.equal(broken.kind, "DEADLINE_EXCEEDED", broken.message);
  assert.equal(broken.code, Code.DeadlineExceeded);
  // An answer of the server's own stays what it is.
  const answered = await withRetry(
    () => {
      time.sleep(60);
      return Promise.reject(new ConnectError("bad", Code.InvalidArgument));
    },
    { policy: NO_JITTER, timeoutMs: 50, signal: undefined, now: time.now, sleep: time.sleep },
  ).catch((e: unknown) => e);
  assert.ok(answered instanceof RemoteMediaError && answered.kind === "VALIDATION", String(answered));
});
