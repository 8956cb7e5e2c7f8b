// ReadAhead: a stream's responses read ahead of the application, up to a bound.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ReadAhead } from "../src/read-ahead.js";

/** A source of `count` numbers that records how many have been read from it. */
function source(count: number, end?: Error): { iterator: AsyncIterator<number>; read: () => number } {
  let read = 0;
  return {
    iterator: {
      next: () => {
        if (read < count) return Promise.resolve({ done: false, value: read++ });
        return end === undefined ? Promise.resolve({ done: true, value: undefined }) : Promise.reject(end);
      },
    },
    read: () => read,
  };
}

/** Lets the read-ahead run until it waits. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

test("reads ahead of next() up to its bound, and one more as each item is taken", async () => {
  const { iterator, read } = source(10);
  const ahead = new ReadAhead(iterator, 3);
  await settle();
  assert.equal(read(), 3, "the bound, before anything is taken");
  assert.deepEqual(await ahead.next(), { done: false, value: 0 });
  await settle();
  assert.equal(read(), 4);
  const rest: number[] = [];
  for (let r = await ahead.next(); r.done !== true; r = await ahead.next()) rest.push(r.value);
  assert.deepEqual(rest, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal((await ahead.next()).done, true, "the end stays the end");
});

test("an error that ends the source comes after every item read before it, on every later next()", async () => {
  const ahead = new ReadAhead(source(2, new Error("reset")).iterator, 8);
  assert.deepEqual(await ahead.next(), { done: false, value: 0 });
  assert.deepEqual(await ahead.next(), { done: false, value: 1 });
  await assert.rejects(ahead.next(), /reset/);
  await assert.rejects(ahead.next(), /reset/);
});

test("concurrent next() calls each get an item, in order", async () => {
  let release: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const { iterator } = source(2);
  const ahead = new ReadAhead<number>({ next: async () => gate.then(() => iterator.next()) }, 4);
  const both = Promise.all([ahead.next(), ahead.next()]);
  release();
  assert.deepEqual(await both, [
    { done: false, value: 0 },
    { done: false, value: 1 },
  ]);
});
