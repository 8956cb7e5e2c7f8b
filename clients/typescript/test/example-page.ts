// Serves the example pages (examples/browser, built by its build.mjs) for the browser tests.
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { PACKAGE } from "./server.js";

export interface ExamplePages {
  /** `http://127.0.0.1:<port>/` */
  url: string;
  stop(): void;
}

/** Builds the example pages and serves them on a free port. */
export async function serveExamples(): Promise<ExamplePages> {
  const proc: ChildProcess = spawn(process.execPath, [join(PACKAGE, "examples", "browser", "build.mjs"), "--serve", "0"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: proc.stdout as NodeJS.ReadableStream });
  for await (const line of lines) {
    const match = /(http:\/\/127\.0\.0\.1:\d+\/)/.exec(line);
    if (match?.[1] !== undefined) {
      return {
        url: match[1],
        stop: () => {
          proc.kill();
        },
      };
    }
  }
  throw new Error("the example page server exited without serving");
}
