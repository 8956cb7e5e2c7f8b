// The example page, served locally and opened in headless Chromium (Debian's package, driven by
// playwright-core), calls GetVersion and ExecutePipeline over gRPC-Web with CORS.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { type Browser, chromium } from "playwright-core";
import { type ExamplePages, serveExamples } from "./example-page.js";
import { RunningServer } from "./server.js";

const TOKEN = "browser-token-2c7e";
const CHROMIUM = process.env["REMOTEMEDIA_CHROMIUM"] ?? "/usr/bin/chromium";

let pages: ExamplePages;
let pageUrl: string;
let server: RunningServer;
let browser: Browser;

before(async () => {
  pages = await serveExamples();
  pageUrl = pages.url;
  const origin = new URL(pageUrl).origin;
  server = await RunningServer.start(["--cors-allowed-origins", origin, "--auth-tokens", TOKEN]);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
});

after(async () => {
  await browser.close();
  pages.stop();
  assert.equal(await server.stop(), 0);
});

/** Opens the page for `token`, waits for it to finish and returns what it shows. */
async function open(token: string, serverUrl = server.url): Promise<{ version: string; result: string; error: string }> {
  const tab = await browser.newPage();
  try {
    const query = new URLSearchParams({ server: serverUrl, token });
    await tab.goto(`${pageUrl}?${query.toString()}`);
    await tab.waitForFunction(() => {
      const text = (id: string): string => document.getElementById(id)?.textContent ?? "";
      return (text("result") !== "" && text("result") !== "…") || text("error") !== "";
    });
    const text = async (id: string): Promise<string> => (await tab.locator(`#${id}`).textContent()) ?? "";
    return { version: await text("version"), result: await text("result"), error: await text("error") };
  } finally {
    await tab.close();
  }
}

test("the page shows the server's version and the result of a pipeline run", async () => {
  const shown = await open(TOKEN);
  assert.equal(shown.error, "");
  assert.match(shown.version, /^remotemedia-server \S+, protocols v1, compatible, \d+ node types$/);
  const result = /^(\d+) samples at (\d+) Hz, peak ([\d.]+)/.exec(shown.result);
  assert.ok(result, shown.result);
  assert.equal(Number(result[1]), 1_600);
  assert.equal(Number(result[2]), 16_000);
  // A 0.5 tone 6 dB down.
  assert.ok(Math.abs(Number(result[3]) - 0.5 * 10 ** (-6 / 20)) < 0.01, shown.result);
});

test("without the token the page shows the AUTHENTICATION error, after the version (which needs none)", async () => {
  const shown = await open("");
  assert.match(shown.version, /compatible/);
  assert.match(shown.error, /^AUTHENTICATION: /);
});

test("a server out of reach shows UNAVAILABLE (retried), not INTERNAL", async () => {
  // Nothing listens on port 1: the browser's fetch rejects before any response.
  const shown = await open(TOKEN, "http://127.0.0.1:1");
  assert.match(shown.error, /^UNAVAILABLE: the server could not be reached/);
});

test("a page whose origin the server does not allow is told that may be why it got no answer", async () => {
  // The browser hides the CORS refusal behind the error a server that is down gives.
  const other = await RunningServer.start(["--cors-allowed-origins", "https://app.example.com", "--auth-tokens", TOKEN]);
  try {
    const shown = await open(TOKEN, other.url);
    assert.match(shown.error, /^UNAVAILABLE: the server could not be reached: .*cors_allowed_origins/);
    assert.ok(shown.error.includes(new URL(pageUrl).origin), shown.error);
  } finally {
    assert.equal(await other.stop(), 0);
  }
});

test("a 69 MB gRPC-Web request from the page is answered with its RESOURCE_EXHAUSTED status", async () => {
  const tab = await browser.newPage();
  try {
    await tab.goto(pageUrl);
    // 180 s of 48 kHz stereo f32 in one message frame, past the server's 64 MiB cap.
    const answer = await tab.evaluate(
      async ({ url, token }) => {
        const size = 180 * 48_000 * 2 * 4 + 79;
        const body = new Uint8Array(5 + size);
        new DataView(body.buffer).setUint32(1, size);
        try {
          const r = await fetch(`${url}/remotemedia.v1.PipelineService/ExecutePipeline`, {
            method: "POST",
            headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", authorization: `Bearer ${token}` },
            body,
          });
          return { status: r.headers.get("grpc-status"), message: decodeURIComponent(r.headers.get("grpc-message") ?? "") };
        } catch (e) {
          return { status: null, message: String(e) };
        }
      },
      { url: server.url, token: TOKEN },
    );
    assert.equal(answer.status, "8", answer.message);
    assert.match(answer.message, /max_message_bytes/);
  } finally {
    await tab.close();
  }
});
