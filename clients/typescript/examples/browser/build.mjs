// Bundles the example page's script (main.ts) with the built package (dist/esm, so run
// `npm run build` first) into examples/browser/dist/main.js for browsers: the package's
// "browser" field swaps its Node transport for the fetch-based gRPC-Web one.
// With --serve [port] it then serves the page on http://127.0.0.1:<port>/ (default 8080; 0 picks
// a free port) and prints that address.
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, extname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");

await build({
  entryPoints: [join(here, "main.ts")],
  outfile: join(here, "dist", "main.js"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  sourcemap: true,
  // The page imports the package by name, as an application would; it resolves to this package.
  alias: { "@remotemedia/client": root },
  logLevel: "warning",
});

const serveAt = process.argv.indexOf("--serve");
if (serveAt >= 0) {
  const port = Number(process.argv[serveAt + 1] ?? 8080);
  const types = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".map": "application/json" };
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname));
    const file = join(here, path.endsWith("/") ? join(path, "index.html") : path);
    if (!file.startsWith(here + sep)) {
      res.writeHead(403).end();
      return;
    }
    readFile(file).then(
      (body) => res.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" }).end(body),
      () => res.writeHead(404).end(),
    );
  });
  server.listen(port, "127.0.0.1", () => {
    const address = server.address();
    process.stdout.write(`serving the example page on http://127.0.0.1:${address.port}/\n`);
  });
}
