// The example page's script: asks the server for its version, then runs a small pipeline on a
// generated tone, over gRPC-Web from the browser.
import { Audio, Pipeline, type RemoteMediaClient, RemoteMediaError, createClient } from "@remotemedia/client";

function element<T extends HTMLElement>(id: string, type: new () => T): T {
  const found = document.getElementById(id);
  if (!(found instanceof type)) throw new Error(`the page has no ${type.name} #${id}`);
  return found;
}

const form = element("connect", HTMLFormElement);
const serverInput = element("server", HTMLInputElement);
const tokenInput = element("token", HTMLInputElement);
const versionOut = element("version", HTMLOutputElement);
const resultOut = element("result", HTMLOutputElement);
const errorOut = element("error", HTMLOutputElement);

/** 100 ms of a 440 Hz tone at 48 kHz. */
function tone(): Audio<Float32Array> {
  const rate = 48_000;
  return new Audio(Float32Array.from({ length: rate / 10 }, (_, i) => 0.5 * Math.sin((2 * Math.PI * 440 * i) / rate)), rate);
}

async function run(server: string, token: string): Promise<void> {
  versionOut.textContent = "…";
  resultOut.textContent = "…";
  errorOut.textContent = "";
  let client: RemoteMediaClient | undefined;
  try {
    // Inside the try: a server address that is not a URL is a VALIDATION error to show.
    client = createClient({ baseUrl: server, ...(token === "" ? {} : { token }), timeoutMs: 10_000 });
    const version = await client.getVersion();
    versionOut.textContent = `remotemedia-server ${version.runtimeVersion}, protocols ${version.supportedProtocols.join(", ")}, ${
      version.compatible ? "compatible" : "not compatible"
    }, ${version.supportedNodeTypes.length} node types`;

    const pipeline = new Pipeline("browser-example")
      .audioResample("resample", { output_rate: 16_000 })
      .gain("gain", { gain_db: -6 })
      .connect("resample", "gain");
    const result = await client.execute(pipeline, tone());
    const out = result.output("gain").toFloat32();
    const peak = out.samples.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
    resultOut.textContent = `${out.samples.length} samples at ${out.sampleRate} Hz, peak ${peak.toFixed(3)}, ${result.metrics.wallTimeMs.toFixed(2)} ms`;
  } catch (e) {
    versionOut.textContent = versionOut.textContent === "…" ? "" : versionOut.textContent;
    resultOut.textContent = "";
    errorOut.textContent = e instanceof RemoteMediaError ? `${e.kind}: ${e.message}` : String(e);
  } finally {
    client?.close();
  }
}

const params = new URLSearchParams(location.search);
serverInput.value = params.get("server") ?? "http://localhost:50051";
tokenInput.value = params.get("token") ?? "";
form.addEventListener("submit", (event) => {
  event.preventDefault();
  void run(serverInput.value, tokenInput.value);
});
if (params.has("server")) void run(serverInput.value, tokenInput.value);
