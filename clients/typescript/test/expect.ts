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
