// `npm pack` makes a tarball that installs into an empty project (its dependencies from the
// registry), type-checks there, and works from both ES modules and CommonJS.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { PACKAGE, RunningServer } from "./server.js";

const NPM = process.env["npm_execpath"];
let server: RunningServer;
let work: string;
let project: string;

/** Runs npm (the one running this test, when there is one) in `cwd`. */
function npm(args: string[], cwd: string): string {
  const [file, prefix] = NPM !== undefined && NPM.endsWith(".js") ? [process.execPath, [NPM]] : ["npm", []];
  return execFileSync(file, [...prefix, ...args, "--no-audit", "--no-fund", "--loglevel=error"], { cwd, encoding: "utf8" });
}

function node(script: string): string {
  return execFileSync(process.execPath, [script, server.address], { cwd: project, encoding: "utf8" });
}

before(async () => {
  server = await RunningServer.start();
  work = mkdtempSync(join(tmpdir(), "remotemedia-ts-pack-"));
  project = join(work, "consumer");
});

after(async () => {
  assert.equal(await server.stop(), 0);
  rmSync(work, { recursive: true, force: true });
});

test("the packed package installs into an empty project and imports as ESM and CJS", { timeout: 300_000 }, () => {
  const packed = JSON.parse(npm(["pack", "--json", "--pack-destination", work], PACKAGE)) as {
    filename: string;
    files: { path: string }[];
  }[];
  const tarball = packed[0];
  assert.ok(tarball !== undefined);
  const paths = tarball.files.map((f) => f.path);
  for (const path of ["package.json", "README.md", "dist/esm/index.js", "dist/esm/index.d.ts", "dist/cjs/index.js", "dist/cjs/package.json"]) {
    assert.ok(paths.includes(path), `${path} is in the tarball`);
  }
  assert.deepEqual(
    paths.filter((p) => !/^(package\.json|README\.md|dist\/(esm|cjs)\/)/.test(p)),
    [],
    "nothing but the builds, the README and package.json",
  );

  execFileSync("mkdir", ["-p", project]);
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
  npm(["install", join(work, tarball.filename)], project);
  assert.ok(readdirSync(join(project, "node_modules", "@connectrpc")).includes("connect-node"));

  writeFileSync(
    join(project, "esm.mjs"),
    `import { createClient, Pipeline, Audio, RemoteMediaError } from "@remotemedia/client";
const client = createClient({ address: process.argv[2] });
const version = await client.getVersion();
const result = await client.execute(new Pipeline("p").passThrough("in"), new Audio(Float32Array.from([0.25]), 8000));
console.log(JSON.stringify({ compatible: version.compatible, out: Array.from(result.output().samples), error: typeof RemoteMediaError }));
client.close();
`,
  );
  writeFileSync(
    join(project, "cjs.cjs"),
    `const { createClient, PROTOCOL_VERSION } = require("@remotemedia/client");
const client = createClient({ address: process.argv[2] });
client.getVersion().then((v) => {
  console.log(JSON.stringify({ compatible: v.compatible, protocol: PROTOCOL_VERSION }));
  client.close();
});
`,
  );
  assert.deepEqual(JSON.parse(node("esm.mjs")), { compatible: true, out: [0.25], error: "function" });
  assert.deepEqual(JSON.parse(node("cjs.cjs")), { compatible: true, protocol: "v1" });

  // The declarations type-check a consumer under strict settings, exactOptionalPropertyTypes
  // included: an option read from the environment may be undefined, which counts as unset.
  writeFileSync(
    join(project, "typed.ts"),
    `import { type ErrorKind, type PipelineResult, Audio, createClient } from "@remotemedia/client";
const kind: ErrorKind = "VALIDATION";
const audio: Audio<Int16Array> = new Audio(new Int16Array(4), 16000, 2);
declare const env: Record<string, string | undefined>;
export async function run(address: string): Promise<PipelineResult> {
  const client = createClient({ address, compression: "gzip", token: env["TOKEN"], timeoutMs: undefined });
  return client.execute('{"version": "v1", "nodes": []}', audio, { signal: undefined });
}
export { kind };
`,
  );
  writeFileSync(
    join(project, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        exactOptionalPropertyTypes: true,
        module: "NodeNext",
        moduleResolution: "NodeNext",
        target: "ES2022",
        lib: ["ES2022", "DOM"],
        noEmit: true,
        skipLibCheck: true,
        types: [],
      },
      files: ["typed.ts"],
    }),
  );
  execFileSync(process.execPath, [join(PACKAGE, "node_modules", "typescript", "bin", "tsc"), "-p", project], { encoding: "utf8" });
});
