// Bundles the example pages' scripts (main.ts, microphone.ts and its AudioWorklet) with the built
// package (dist/esm, so run `npm run build` first) into examples/browser/dist/ for browsers: the
// package's "browser" field swaps its Node transports for gRPC-Web and the browser's WebSocket.
// With --serve [port] it then serves the pages on http://127.0.0.1:<port>/ (index.html and
// microphone.html; default port 8080, 0 picks a free one) and prints that address.
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, extname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");

await build({
  entryPoints: ["main.ts", "microphone.ts", "chunker-worklet.ts"].map((name) => join(here, name)),
  outdir: join(here, "dist"),
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
