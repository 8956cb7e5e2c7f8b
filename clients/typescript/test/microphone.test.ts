// The microphone page (examples/browser/microphone.html) in headless Chromium, whose fake
// microphone plays a WAV of speech and silence made here with espeak-ng and sox: the page streams
// it over WebSocket, with auth on, through resample → VAD, shows speech segments at the file's
// speech times, closes cleanly, leaves no session open, and plays the processed audio back; with
// transcription on it also shows what the speech recogniser hears, live. Screenshots go to
// build/artifacts/.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { type Browser, chromium } from "playwright-core";
import { type ExamplePages, serveExamples } from "./example-page.js";
import { PACKAGE, RunningServer, waitFor } from "./server.js";

const TOKEN = "microphone-token-91";
const CHROMIUM = process.env["REMOTEMEDIA_CHROMIUM"] ?? "/usr/bin/chromium";
const ARTIFACTS = join(PACKAGE, "build", "artifacts");
/** How far the page's segments may be from the file's speech, in seconds. */
const TOLERANCE_S = 0.15;
/** The level above which the reference calls a 10 ms frame speech (the silence is digital zero). */
const SPEECH_DB = -45;
/** Gaps shorter than this inside a phrase are not silence (the VAD's default hangover). */
const HANGOVER_S = 0.3;

let dir: string;
let wav: string;
let pages: ExamplePages;
let server: RunningServer;
let browser: Browser;

/** Speaks `text` with espeak-ng into a WAV file. */
function speak(text: string, file: string): void {
  execFileSync("espeak-ng", ["-v", "en", "-s", "150", "-w", file, text]);
}

/** 1 s of silence, a phrase, 1.5 s of silence, another phrase, 1.5 s of silence; 48 kHz 16-bit. */
function speechFile(): string {
  const one = join(dir, "one.wav");
  const two = join(dir, "two.wav");
  // Voiced from the first sound to the last: the VAD discounts unvoiced sounds (an "s" is
  // noise-like), which the level reference below cannot tell from speech.
  speak("one more morning on the moon", one);
  speak("all of the bells rang along the lane", two);
  const silence = (seconds: number): string => {
    const file = join(dir, `silence-${seconds}.wav`);
    execFileSync("sox", ["-n", "-r", "22050", "-c", "1", "-b", "16", file, "trim", "0", String(seconds)]);
    return file;
  };
  const out = join(dir, "speech.wav");
  execFileSync("sox", [silence(1), one, silence(1.5), two, silence(1.5), "-r", "48000", "-b", "16", out, "norm", "-3"]);
  return out;
}

/** The file's samples, mono f32 at `rate`, decoded by sox. */
function samples(file: string, rate: number): Float32Array {
  const raw = join(dir, "speech.f32");
  execFileSync("sox", [file, "-t", "f32", "-r", String(rate), "-c", "1", raw]);
  const bytes = readFileSync(raw);
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

interface Span {
  start: number;
  end: number;
}

/** The speech of the file from its levels: 10 ms frames above SPEECH_DB, short gaps bridged. */
function speechTimes(file: string): Span[] {
  const rate = 16_000;
  const x = samples(file, rate);
  const frame = rate / 100;
  const spans: Span[] = [];
  for (let i = 0; i + frame <= x.length; i += frame) {
    let energy = 0;
    for (let j = i; j < i + frame; j++) energy += (x[j] ?? 0) ** 2;
    const db = 10 * Math.log10(energy / frame + 1e-20);
    if (db < SPEECH_DB) continue;
    const [start, end] = [i / rate, (i + frame) / rate];
    const last = spans.at(-1);
    if (last !== undefined && start - last.end < HANGOVER_S) last.end = end;
    else spans.push({ start, end });
  }
  return spans;
}

function duration(file: string): number {
  return samples(file, 16_000).length / 16_000;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "remotemedia-microphone-"));
  wav = speechFile();
  pages = await serveExamples();
  server = await RunningServer.start(["--cors-allowed-origins", new URL(pages.url).origin, "--auth-tokens", TOKEN]);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--use-fake-device-for-media-stream",
      "--use-fake-ui-for-media-stream",
      // Played once from the moment the page opens the microphone.
      `--use-file-for-fake-audio-capture=${wav}%noloop`,
    ],
  });
});

after(async () => {
  await browser.close();
  pages.stop();
  assert.equal(await server.stop(), 0);
  rmSync(dir, { recursive: true, force: true });
});

test("the page streams the microphone, shows the file's speech segments live, closes cleanly and plays the audio back", async () => {
  const expected = speechTimes(wav);
  assert.equal(expected.length, 2, `the file has two phrases: ${JSON.stringify(expected)}`);
  const seconds = duration(wav);
  const tab = await browser.newPage();
  const errors: string[] = [];
  tab.on("pageerror", (e) => errors.push(e.message));
  try {
    const query = new URLSearchParams({ server: server.url, token: TOKEN, transcribe: "0", seconds: seconds.toFixed(2) });
    await tab.goto(`${pages.url}microphone.html?${query.toString()}`);
    await tab.click("#start");

    // Live: the first phrase's segment is shown while the stream is still open.
    await tab.waitForSelector("#segments li", { timeout: 30_000 });
    assert.match((await tab.textContent("#status")) ?? "", /^streaming at \d+ Hz/);
    await tab.waitForFunction(() => (document.getElementById("status")?.textContent ?? "").startsWith("closed"), undefined, {
      timeout: 60_000,
    });
    assert.equal(await tab.textContent("#error"), "");
    const shown = await tab.$$eval("#segments li", (items) =>
      items.map((li) => ({ start: Number(li.getAttribute("data-start")), end: Number(li.getAttribute("data-end")) })),
    );
    assert.equal(shown.length, expected.length, `segments ${JSON.stringify(shown)}, speech ${JSON.stringify(expected)}`);
    shown.forEach((s, i) => {
      const e = expected[i] ?? { start: NaN, end: NaN };
      const off = { start: s.start - e.start, end: s.end - e.end };
      assert.ok(
        Math.abs(off.start) <= TOLERANCE_S && Math.abs(off.end) <= TOLERANCE_S,
        `segment ${i}: shown ${s.start.toFixed(3)}–${s.end.toFixed(3)} s, speech ${e.start.toFixed(3)}–${e.end.toFixed(3)} s`,
      );
    });
    assert.match((await tab.textContent("#status")) ?? "", /^closed: \d+ chunks/);
    await waitFor("no open stream on the server", async () => (await server.metric("remotemedia_active_streams")) === 0);
    assert.equal(await server.metric("remotemedia_requests_total", { rpc: "StreamPipeline", code: "OK" }), 1);

    // The processed audio (16 kHz) plays back in full.
    await tab.click("#play");
    await tab.waitForFunction(() => (document.getElementById("playback")?.textContent ?? "").startsWith("played"), undefined, {
      timeout: 60_000,
    });
    const played = /^played ([\d.]+) s/.exec((await tab.textContent("#playback")) ?? "");
    assert.ok(played?.[1] !== undefined);
    assert.ok(Math.abs(Number(played[1]) - seconds) < 0.1, `played ${played[1]} s of ${seconds.toFixed(2)} s`);

    mkdirSync(ARTIFACTS, { recursive: true });
    await tab.screenshot({ path: join(ARTIFACTS, "microphone.png"), fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await tab.close();
  }
});

test("with transcription on, the page shows what the recogniser hears while it streams", async () => {
  const seconds = duration(wav);
  const tab = await browser.newPage();
  const errors: string[] = [];
  tab.on("pageerror", (e) => errors.push(e.message));
  try {
    const query = new URLSearchParams({ server: server.url, token: TOKEN, transcribe: "1", seconds: seconds.toFixed(2) });
    await tab.goto(`${pages.url}microphone.html?${query.toString()}`);
    await tab.click("#start");

    // Live: a finished utterance is shown while the stream is still open. The status is read in
    // the same poll that sees its words.
    const statusWhenHeard = await tab.waitForFunction(
      () => {
        const heard = document.getElementById("transcript")?.dataset["final"] ?? "";
        return heard === "" ? false : (document.getElementById("status")?.textContent ?? "");
      },
      undefined,
      { timeout: 60_000 },
    );
    assert.match(String(await statusWhenHeard.jsonValue()), /^streaming at \d+ Hz/);
    await tab.waitForFunction(() => (document.getElementById("status")?.textContent ?? "").startsWith("closed"), undefined, {
      timeout: 60_000,
    });
    assert.equal(await tab.textContent("#error"), "");
    // Words were heard (what pocketsphinx makes of espeak's voice is not the phrases' words),
    // and the close ended the open utterance: no partial hypothesis is left after them.
    const heard = (await tab.getAttribute("#transcript", "data-final")) ?? "";
    assert.ok(heard.split(" ").length >= 4, `the transcript: ${JSON.stringify(heard)}`);
    assert.equal(await tab.textContent("#transcript"), heard);
    assert.equal((await tab.$$("#segments li")).length, 2);
    await waitFor("no open stream on the server", async () => (await server.metric("remotemedia_active_streams")) === 0);
    await waitFor(
      "the recogniser to be returned to its pool",
      async () => (await server.metric("remotemedia_model_instances_in_use", { model: "pocketsphinx-en-us" })) === 0,
    );
    mkdirSync(ARTIFACTS, { recursive: true });
    await tab.screenshot({ path: join(ARTIFACTS, "microphone-transcript.png"), fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await tab.close();
  }
});

test("with a wrong token the page shows the AUTHENTICATION error and starts no session", async () => {
  const tab = await browser.newPage();
  try {
    const query = new URLSearchParams({ server: server.url, token: "not-the-token", transcribe: "0" });
    await tab.goto(`${pages.url}microphone.html?${query.toString()}`);
    await tab.click("#start");
    await tab.waitForFunction(() => (document.getElementById("error")?.textContent ?? "") !== "");
    assert.equal(await tab.textContent("#error"), "AUTHENTICATION: the bearer token is not valid");
    assert.equal(await tab.textContent("#status"), "failed");
    assert.equal(await server.metric("remotemedia_active_streams"), 0);
  } finally {
    await tab.close();
  }
});
