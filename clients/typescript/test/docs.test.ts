// Every TypeScript block of the README files and docs/ runs as written: each is type-checked
// against the package's sources under strict settings, then run by Node against the real server
// (found through REMOTEMEDIA_ADDRESS, as the examples read it) and must exit by itself.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import ts from "typescript";
import { PACKAGE, REPO, RunningServer } from "./server.js";

const TSC = join(PACKAGE, "node_modules", "typescript", "bin", "tsc");
/** A bound on how long an example may run: one that outlives it did not exit by itself. */
const EXAMPLE_LIMIT_MS = 120_000;

/** What each block prints, keyed by file and block number; every block must be listed. */
const EXPECTED: Record<string, string[]> = {
  "README.md#0": ["16000 samples at 16000 Hz", "16000 frames streamed back"],
  "clients/typescript/README.md#0": ["1600 samples at 16000 Hz", "resampled in Rust: true", "speech 0.48-1.50 s", "100 chunks"],
};

interface Block {
  key: string;
  code: string;
}

function markdownFiles(): string[] {
  const docs = readdirSync(join(REPO, "docs"))
    .filter((name) => name.endsWith(".md"))
    .map((name) => join(REPO, "docs", name));
  return [join(REPO, "README.md"), join(REPO, "clients", "python", "README.md"), join(PACKAGE, "README.md"), ...docs];
}

function typescriptBlocks(): Block[] {
  return markdownFiles().flatMap((file) =>
    [...readFileSync(file, "utf8").matchAll(/^```(?:ts|typescript)\n([\s\S]*?)^```$/gm)].map((m, i) => ({
      key: `${relative(REPO, file)}#${i}`,
      code: m[1] ?? "",
    })),
  );
}

/** What a failed child process wrote on `stream`, or the error itself. */
function output(e: unknown, stream: "stdout" | "stderr"): string {
  const text = (e as Partial<Record<"stdout" | "stderr", unknown>>)[stream];
  return typeof text === "string" && text !== "" ? text : e instanceof Error ? e.message : "no output";
}

let server: RunningServer;
let project: string;

before(async () => {
  server = await RunningServer.start();
  project = mkdtempSync(join(tmpdir(), "remotemedia-ts-docs-"));
  writeFileSync(join(project, "package.json"), JSON.stringify({ type: "module" }));
  // `@remotemedia/client` resolves to this test run's build of the sources.
  const pkg = join(project, "node_modules", "@remotemedia", "client");
  mkdirSync(pkg, { recursive: true });
  writeFileSync(join(pkg, "package.json"), JSON.stringify({ name: "@remotemedia/client", type: "module", exports: "./index.js" }));
  writeFileSync(join(pkg, "index.js"), `export * from ${JSON.stringify(join(PACKAGE, "build", "src", "index.js"))};\n`);
});

after(async () => {
  assert.equal(await server.stop(), 0);
  rmSync(project, { recursive: true, force: true });
});

test("the README files' TypeScript blocks are the ones this file checks", () => {
  assert.deepEqual(
    typescriptBlocks().map((b) => b.key),
    Object.keys(EXPECTED),
  );
});

for (const block of typescriptBlocks()) {
  test(`${block.key} type-checks and runs as written`, { timeout: 2 * EXAMPLE_LIMIT_MS }, async () => {
    const name = block.key.replace(/[^A-Za-z0-9]+/g, "-");
    writeFileSync(join(project, `${name}.ts`), block.code);
    writeFileSync(
      join(project, `${name}.tsconfig.json`),
      JSON.stringify({
        extends: join(PACKAGE, "tsconfig.json"),
        compilerOptions: {
          noEmit: true,
          rootDir: "/",
          typeRoots: [join(PACKAGE, "node_modules", "@types")],
          paths: { "@remotemedia/client": [join(PACKAGE, "src", "index.ts")] },
        },
        include: [],
        files: [`${name}.ts`],
      }),
    );
    const run = promisify(execFile);
    await run(process.execPath, [TSC, "-p", join(project, `${name}.tsconfig.json`)], { cwd: project }).catch((e: unknown) =>
      assert.fail(`${block.key} does not type-check:\n${output(e, "stdout")}`),
    );
    const js = ts.transpileModule(block.code, {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    }).outputText;
    writeFileSync(join(project, `${name}.js`), js);
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("REMOTEMEDIA_") && v !== undefined) env[k] = v;
    env["REMOTEMEDIA_ADDRESS"] = server.address;
    const done = await run(process.execPath, [join(project, `${name}.js`)], { cwd: project, env, timeout: EXAMPLE_LIMIT_MS }).catch(
      (e: unknown) =>
        assert.fail(
          (e as { killed?: boolean }).killed === true ? `${block.key} did not exit by itself` : `${block.key} failed:\n${output(e, "stderr")}`,
        ),
    );
    assert.deepEqual(done.stdout.trimEnd().split("\n"), EXPECTED[block.key]);
  });
}
