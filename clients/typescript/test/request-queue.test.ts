// RequestQueue: the bounded buffer behind StreamSession.send().
import assert from "node:assert/strict";
import { test } from "node:test";
import { RequestQueue } from "../src/request-queue.js";

test("push waits while the queue is full and is admitted, in order, as the reader takes items", async () => {
  const queue = new RequestQueue<number>(2);
  const admitted: number[] = [];
  const pushes = [1, 2, 3, 4].map((n) => queue.push(n, 10).then(() => admitted.push(n)));
  await Promise.resolve();
  assert.deepEqual(admitted, [1, 2]);
  assert.equal(queue.length, 2);
  assert.equal(queue.bytes, 20);
  assert.equal(queue.waiting, 2);

  const reader = queue[Symbol.asyncIterator]();
  assert.deepEqual(await reader.next(), { done: false, value: 1 });
  await Promise.resolve();
  assert.deepEqual(admitted, [1, 2, 3]);
  assert.equal(queue.length, 2);

  queue.end();
  const taken: number[] = [];
  for (let r = await reader.next(); r.done !== true; r = await reader.next()) taken.push(r.value);
  await Promise.all(pushes);
  assert.deepEqual(taken, [2, 3, 4]);
  assert.deepEqual(admitted, [1, 2, 3, 4]);
  await assert.rejects(queue.push(5), TypeError);
});

test("a reader waiting on an empty queue gets the next push", async () => {
  const queue = new RequestQueue<string>(1);
  const next = queue[Symbol.asyncIterator]().next();
  await queue.push("a");
  assert.deepEqual(await next, { done: false, value: "a" });
});

test("pushNow jumps the limit; fail drops everything and rejects waiting pushes", async () => {
  const queue = new RequestQueue<string>(1);
  await queue.push("data");
  queue.pushNow("control");
  assert.equal(queue.length, 2);
  const waiting = queue.push("more");
  const reason = new Error("cancelled");
  queue.fail(reason);
  await assert.rejects(waiting, reason);
  await assert.rejects(queue.push("late"), reason);
  assert.equal(queue.length, 0);
  assert.deepEqual(await queue[Symbol.asyncIterator]().next(), { done: true, value: undefined });
  assert.throws(() => new RequestQueue(0), RangeError);
});
