// Assertions shared by the unit tests.
import assert from "node:assert/strict";
import { RemoteMediaError } from "../src/index.js";

/** Runs `build`, which must throw a VALIDATION error, and returns that error. */
export function validationOf(build: () => unknown): RemoteMediaError {
  try {
    build();
  } catch (e) {
    assert.ok(e instanceof RemoteMediaError);
    assert.equal(e.kind, "VALIDATION");
    return e;
  }
  assert.fail("expected a VALIDATION error");
}

/** Runs `call`, which must fail, and returns its RemoteMediaError. */
export async function failure(call: () => Promise<unknown>): Promise<RemoteMediaError> {
  try {
    await call();
  } catch (e) {
    assert.ok(e instanceof RemoteMediaError, `expected a RemoteMediaError, got ${String(e)}`);
    return e;
  }
  assert.fail("the call succeeded");
}
