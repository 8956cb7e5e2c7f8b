// The microphone page's script: captures the microphone, cuts it into 20 ms chunks at the
// device's rate in an AudioWorklet, streams them over WebSocket through resample to 16 kHz →
// VAD (and speech recognition when the server has it), shows each speech segment as it closes,
// and plays the processed audio back.
import {
  Audio,
  Pipeline,
  type RemoteMediaClient,
  RemoteMediaError,
  type SpeechSegment,
  type StreamSession,
  type Transcript,
  createClient,
} from "@remotemedia/client";

const OUTPUT_RATE = 16_000;
const CHUNK_SECONDS = 0.02;

function element<T extends HTMLElement>(id: string, type: new () => T): T {
  const found = document.getElementById(id);
  if (!(found instanceof type)) throw new Error(`the page has no ${type.name} #${id}`);
  return found;
}

const form = element("connect", HTMLFormElement);
const serverInput = element("server", HTMLInputElement);
const tokenInput = element("token", HTMLInputElement);
const transcribeInput = element("transcribe", HTMLInputElement);
const startButton = element("start", HTMLButtonElement);
const stopButton = element("stop", HTMLButtonElement);
const playButton = element("play", HTMLButtonElement);
const statusOut = element("status", HTMLOutputElement);
const progressOut = element("progress", HTMLOutputElement);
const errorOut = element("error", HTMLOutputElement);
const segmentList = element("segments", HTMLOListElement);
const transcriptOut = element("transcript", HTMLOutputElement);
const playbackOut = element("playback", HTMLOutputElement);

/** The capture: the audio graph from the microphone to the chunker. */
interface Capture {
  context: AudioContext;
  media: MediaStream;
  worklet: AudioWorkletNode;
}

let capture: Capture | undefined;
let session: StreamSession | undefined;
/** The pipeline's output audio (16 kHz), chunk by chunk, for playback. */
let processed: Float32Array[] = [];
/** The texts of the utterances the recogniser has finished, in order. */
let heard: string[] = [];

function showError(e: unknown): void {
  errorOut.textContent = e instanceof RemoteMediaError ? `${e.kind}: ${e.message}` : String(e);
}

function showSegment(segment: SpeechSegment): void {
  const item = document.createElement("li");
  item.dataset["start"] = String(segment.start_s);
  item.dataset["end"] = String(segment.end_s);
  item.textContent = `${segment.start_s.toFixed(2)} s – ${segment.end_s.toFixed(2)} s (${segment.energy_db.toFixed(1)} dBFS)`;
  segmentList.append(item);
}

/** The utterances heard so far, then the open one's hypothesis while it lasts. */
function showTranscript(transcript: Transcript): void {
  heard.push(...transcript.utterances.map((u) => u.text).filter((text) => text !== ""));
  transcriptOut.dataset["final"] = heard.join(" ");
  transcriptOut.textContent = [...heard, transcript.partial ?? ""].join(" ").trim();
}

function processedSeconds(): number {
  return processed.reduce((n, chunk) => n + chunk.length, 0) / OUTPUT_RATE;
}

async function start(server: string, token: string, transcribe: boolean, stopAfterSeconds: number | undefined): Promise<void> {
  startButton.disabled = true;
  playButton.disabled = true;
  errorOut.textContent = "";
  transcriptOut.textContent = "";
  delete transcriptOut.dataset["final"];
  heard = [];
  segmentList.replaceChildren();
  processed = [];
  statusOut.textContent = "connecting";
  let client: RemoteMediaClient | undefined;
  try {
    // Inside the try: a server address that is not a URL is a VALIDATION error to show.
    client = createClient({ baseUrl: server, ...(token === "" ? {} : { token }), timeoutMs: 10_000 });
    const version = await client.getVersion();
    const recognise = transcribe && version.supportedNodeTypes.includes("SpeechRecognitionNode");
    const context = new AudioContext();
    await context.audioWorklet.addModule(new URL("chunker-worklet.js", import.meta.url));
    const rate = context.sampleRate;
    const pipeline = new Pipeline("microphone")
      .node("resample", "AudioResampleNode", { input_rate: rate, output_rate: OUTPUT_RATE })
      .node("vad", "VADNode")
      .connect("resample", "vad");
    if (recognise) pipeline.node("asr", "SpeechRecognitionNode").connect("resample", "asr");
    // The stream is ready before the microphone opens, so no captured audio waits for it.
    const stream = await client.stream(pipeline, { inputNode: "resample" });
    session = stream;
    const media = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
    });
    const worklet = new AudioWorkletNode(context, "chunker", {
      processorOptions: { chunkFrames: Math.round(rate * CHUNK_SECONDS) },
    });
    // The worklet must be pulled by the graph to run; its output is silence.
    const mute = context.createGain();
    mute.gain.value = 0;
    context.createMediaStreamSource(media).connect(worklet).connect(mute).connect(context.destination);
    await context.resume();
    capture = { context, media, worklet };
    let sentFrames = 0;
    worklet.port.onmessage = (event: MessageEvent<Float32Array>) => {
      sentFrames += event.data.length;
      stream.send(new Audio(event.data, rate)).catch(showError);
      progressOut.textContent = `${(sentFrames / rate).toFixed(2)} s sent at ${rate} Hz, ${processedSeconds().toFixed(2)} s processed`;
      if (stopAfterSeconds !== undefined && sentFrames >= stopAfterSeconds * rate) void stop();
    };
    statusOut.textContent = `streaming at ${rate} Hz to session ${stream.sessionId}`;
    stopButton.disabled = false;

    for await (const result of stream) {
      for (const segment of result.segments["vad"] ?? []) showSegment(segment);
      const audio = result.audio["vad"];
      if (audio !== undefined) processed.push(audio.toFloat32().samples);
      const transcript = result.transcripts["asr"];
      if (transcript !== undefined) showTranscript(transcript);
    }
    const metrics = stream.metrics;
    statusOut.textContent = `closed: ${metrics?.chunksProcessed ?? 0} chunks, ${metrics?.averageLatencyMs.toFixed(2) ?? "?"} ms per chunk on the server`;
  } catch (e) {
    statusOut.textContent = "failed";
    showError(e);
    stopCapture();
  } finally {
    client?.close();
    session = undefined;
    startButton.disabled = false;
    stopButton.disabled = true;
    playButton.disabled = processed.length === 0;
  }
}

function stopCapture(): void {
  if (capture === undefined) return;
  const { context, media, worklet } = capture;
  capture = undefined;
  worklet.port.onmessage = null;
  for (const track of media.getTracks()) track.stop();
  void context.close();
}

/** Stops capturing and closes the stream: the pipeline flushes, the last segment arrives. */
async function stop(): Promise<void> {
  stopCapture();
  stopButton.disabled = true;
  statusOut.textContent = "closing";
  await session?.close();
}

function play(): void {
  const frames = processed.reduce((n, chunk) => n + chunk.length, 0);
  const context = new AudioContext();
  const buffer = context.createBuffer(1, frames, OUTPUT_RATE);
  const samples = buffer.getChannelData(0);
  let at = 0;
  for (const chunk of processed) {
    samples.set(chunk, at);
    at += chunk.length;
  }
  const source = context.createBufferSource();
  source.buffer = buffer;
  source.connect(context.destination);
  source.onended = () => {
    playbackOut.textContent = `played ${buffer.duration.toFixed(2)} s of processed audio at ${OUTPUT_RATE} Hz`;
    void context.close();
  };
  playbackOut.textContent = `playing ${buffer.duration.toFixed(2)} s`;
  source.start();
}

const params = new URLSearchParams(location.search);
serverInput.value = params.get("server") ?? "http://localhost:50051";
tokenInput.value = params.get("token") ?? "";
transcribeInput.checked = params.get("transcribe") !== "0";
const seconds = params.get("seconds");
const begin = (): void => {
  void start(serverInput.value, tokenInput.value, transcribeInput.checked, seconds === null ? undefined : Number(seconds));
};
form.addEventListener("submit", (event) => {
  event.preventDefault();
  begin();
});
if (params.get("autostart") === "1") begin();
stopButton.addEventListener("click", () => {
  void stop();
});
playButton.addEventListener("click", play);
