// Checks of the option objects callers pass (createClient's, a call's, a stream's, retry's): a
// value of the wrong kind or an option this client does not have is a VALIDATION error naming
// it, before anything is sent. TypeScript catches most of these at compile time; plain
// JavaScript, and values read from configuration, reach them here.
import { type Violation, validationError } from "./error.js";

/** A check of one option's value: why it is wrong, or undefined when it is fine. */
export type Check = (value: unknown) => string | undefined;

/** What a value is, for error messages: its type, and the value itself when it is short. */
export function describe(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string") return value.length <= 40 ? JSON.stringify(value) : "a long string";
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (typeof value === "bigint") return `${value}n`;
  // "[object Map]", "[object AbortSignal]": the built-in tag says what an object is.
  const kind = typeof value === "object" ? Object.prototype.toString.call(value).slice(8, -1) : typeof value;
  return `${/^[aeiou]/i.test(kind) ? "an" : "a"} ${kind}`;
}

/** An object literal (or one made without a prototype): not an array, a typed array, a class instance. */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

export const isString: Check = (v) => (typeof v === "string" ? undefined : `must be a string, got ${describe(v)}`);

export const oneOf =
  (...choices: readonly unknown[]): Check =>
  (v) =>
    choices.includes(v) ? undefined : `must be ${choices.map((c) => JSON.stringify(c)).join(" or ")}, got ${describe(v)}`;

/** Milliseconds: finite and not negative. */
export const isDurationMs: Check = (v) =>
  typeof v === "number" && Number.isFinite(v) && v >= 0 ? undefined : `must be a finite number of milliseconds, 0 or more, got ${describe(v)}`;

export const isCount: Check = (v) =>
  Number.isSafeInteger(v) && (v as number) >= 1 ? undefined : `must be a whole number, 1 or more, got ${describe(v)}`;

export const isSignal: Check = (v) => (v instanceof AbortSignal ? undefined : `must be an AbortSignal, got ${describe(v)}`);

/**
 * The problems of `options` (undefined is fine): an object whose every key is in `spec` and
 * whose values pass their checks (an undefined value counts as unset). `prefix` goes before
 * each field name ("retry." for the retry options).
 */
export function optionViolations(options: unknown, spec: Readonly<Record<string, Check>>, prefix = ""): Violation[] {
  if (options === undefined) return [];
  const what = prefix === "" ? "options" : prefix.replace(/\.$/, "");
  if (!isPlainObject(options)) return [{ field: what, description: `must be an object, got ${describe(options)}` }];
  const problems: Violation[] = [];
  for (const [key, value] of Object.entries(options)) {
    const check = spec[key];
    if (check === undefined) {
      problems.push({ field: `${prefix}${key}`, description: `is not an option here; the options are: ${Object.keys(spec).join(", ")}` });
    } else if (value !== undefined) {
      const wrong = check(value);
      if (wrong !== undefined) problems.push({ field: `${prefix}${key}`, description: wrong });
    }
  }
  return problems;
}

/** Throws one VALIDATION error listing every problem `optionViolations` finds. */
export function checkOptions(options: unknown, spec: Readonly<Record<string, Check>>, prefix = ""): void {
  const problems = optionViolations(options, spec, prefix);
  if (problems.length > 0) throw validationError(problems);
}

/** The options every call takes. */
export const CALL_OPTIONS: Readonly<Record<string, Check>> = { signal: isSignal, timeoutMs: isDurationMs };
