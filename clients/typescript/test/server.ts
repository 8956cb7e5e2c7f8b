// Starts the real remotemedia-server binary on port 0 and reads its log and metrics.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** The package root, clients/typescript (this file runs from its build/test). */
export const PACKAGE = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
/** The repository root. */
export const REPO = resolve(PACKAGE, "..", "..");
export const SERVER_BIN =
  process.env["REMOTEMEDIA_SERVER_BIN"] ?? join(REPO, "service", "target", "debug", "remotemedia-server");
/** Test-only Python plug-in nodes (GateNode, SpinNode, ...). */
export const PLUGINS = join(REPO, "tests", "plugins");

const READY_TIMEOUT_MS = 120_000;

export interface LogRecord {
  message?: string;
  [key: string]: unknown;
}

export class RunningServer {
  readonly address: string;
  readonly metricsAddress: string;
  readonly records: LogRecord[];
  readonly #proc: ChildProcess;
  readonly #exited: Promise<number | null>;

  private constructor(proc: ChildProcess, exited: Promise<number | null>, records: LogRecord[], ready: LogRecord) {
    this.#proc = proc;
    this.#exited = exited;
    this.records = records;
    this.address = String(ready["address"]);
    this.metricsAddress = String(ready["metrics_address"]);
  }

  get url(): string {
    return `http://${this.address}`;
  }

  /**
   * Starts the server with `args` after `--listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0`,
   * REMOTEMEDIA_* variables of this process removed and `env` added.
   */
  static async start(args: string[] = [], env: Record<string, string> = {}): Promise<RunningServer> {
    if (!existsSync(SERVER_BIN)) throw new Error(`${SERVER_BIN} is missing; build the server (make build)`);
    const childEnv: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) {
      if (!k.startsWith("REMOTEMEDIA_") && v !== undefined) childEnv[k] = v;
    }
    Object.assign(childEnv, env);
    const proc = spawn(SERVER_BIN, ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", ...args], {
      env: childEnv,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = new Promise<number | null>((resolveExit) => {
      proc.once("exit", (code) => {
        resolveExit(code);
      });
    });
    let stderr = "";
    proc.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    const records: LogRecord[] = [];
    const lines = createInterface({ input: proc.stdout });
    const ready = await new Promise<LogRecord>((resolveReady, reject) => {
      const timer = setTimeout(() => {
        proc.kill("SIGKILL");
        reject(new Error(`no "listening" log line within ${READY_TIMEOUT_MS} ms:\n${stderr}`));
      }, READY_TIMEOUT_MS);
      lines.on("line", (line) => {
        let rec: LogRecord;
        try {
          rec = JSON.parse(line) as LogRecord;
        } catch {
          return;
        }
        records.push(rec);
        if ((rec.message ?? "").startsWith("remotemedia-server listening")) {
          clearTimeout(timer);
          resolveReady(rec);
        }
      });
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`the server exited (${code}) before listening:\n${stderr}`));
      });
    });
    return new RunningServer(proc, exited, records, ready);
  }

  async metricsText(): Promise<string> {
    const res = await fetch(`http://${this.metricsAddress}/metrics`);
    return res.text();
  }

  /** Sum of the samples of `name` whose labels include `labels`. */
  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    let total = 0;
    for (const line of (await this.metricsText()).split("\n")) {
      if (line.startsWith("#") || !line.startsWith(name)) continue;
      const cut = line.lastIndexOf(" ");
      const series = line.slice(0, cut);
      if (series !== name && !series.startsWith(`${name}{`)) continue;
      if (Object.entries(labels).every(([k, v]) => series.includes(`${k}="${v}"`))) total += Number(line.slice(cut + 1));
    }
    return total;
  }

  /** Stops the server with SIGTERM and resolves with its exit code. */
  async stop(): Promise<number | null> {
    if (this.#proc.exitCode === null && this.#proc.signalCode === null) this.#proc.kill("SIGTERM");
    return this.#exited;
  }
}

/** Polls `condition` every 10 ms until it holds; fails with `what` after `timeoutMs`. */
export async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
