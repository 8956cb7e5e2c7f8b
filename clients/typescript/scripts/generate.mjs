// Generates src/gen from ../../proto (remotemedia.v1) and third_party/proto (google.rpc) with
// buf and protoc-gen-es from node_modules. With --check, generates into a temporary directory
// and fails when the result differs from the committed src/gen.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const inputs = [join(root, "..", "..", "proto"), join(root, "third_party", "proto")];
const committed = join(root, "src", "gen");
const check = process.argv.includes("--check");

function generate(outRoot) {
  const env = { ...process.env, PATH: `${join(root, "node_modules", ".bin")}:${process.env.PATH ?? ""}` };
  for (const input of inputs) {
    execFileSync("buf", ["generate", input, "--template", join(root, "buf.gen.yaml"), "--output", outRoot], {
      cwd: root,
      env,
      stdio: "inherit",
    });
  }
}

function files(dir) {
  const out = new Map();
  const walk = (d) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.set(relative(dir, p), readFileSync(p, "utf8"));
    }
  };
  try {
    walk(dir);
  } catch (e) {
    if (e.code !== "ENOENT") throw e;
  }
  return out;
}

if (check) {
  const tmp = mkdtempSync(join(tmpdir(), "remotemedia-gen-"));
  try {
    generate(tmp);
    const fresh = files(join(tmp, "src", "gen"));
    const current = files(committed);
    const problems = [];
    for (const [name, text] of fresh) {
      if (!current.has(name)) problems.push(`missing: src/gen/${name}`);
      else if (current.get(name) !== text) problems.push(`differs: src/gen/${name}`);
    }
    for (const name of current.keys()) {
      if (!fresh.has(name)) problems.push(`stale: src/gen/${name}`);
    }
    if (problems.length > 0) {
      process.stderr.write(`generated code does not match proto/ (run \`npm run generate\`):\n  ${problems.join("\n  ")}\n`);
      process.exit(1);
    }
    process.stdout.write(`src/gen matches proto/ (${fresh.size} files)\n`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
} else {
  rmSync(committed, { recursive: true, force: true });
  generate(root);
}
