// Compiles src/, test/ and the example page's script into build/ with tsc, then runs every
// build/test/*.test.js with Node's test runner. Arguments are passed on to `node --test`
// (e.g. `npm test -- --test-name-pattern=stream`).
import { execFileSync } from "node:child_process";
import { readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
const out = join(root, "build");

rmSync(out, { recursive: true, force: true });
execFileSync(process.execPath, [tsc, "-p", join(root, "tsconfig.test.json")], { cwd: root, stdio: "inherit" });

const dir = join(out, "test");
const files = readdirSync(dir)
  .filter((name) => name.endsWith(".test.js"))
  .sort()
  .map((name) => join(dir, name));
try {
  execFileSync(process.execPath, ["--test", ...process.argv.slice(2), ...files], { cwd: root, stdio: "inherit" });
} catch {
  process.exitCode = 1;
}
