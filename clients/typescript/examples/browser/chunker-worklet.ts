// The microphone page's AudioWorklet: cuts the captured audio into chunks of `chunkFrames`
// frames (20 ms at the device's rate), averaging the channels, and posts each to the page.
// It runs on the audio rendering thread, in its own global scope (a module: nothing leaks out).

/** The AudioWorkletGlobalScope names this file uses (TypeScript's DOM library has none of them). */
declare abstract class AudioWorkletProcessor {
  readonly port: MessagePort;
  constructor(options?: { processorOptions?: unknown });
  abstract process(inputs: Float32Array[][], outputs: Float32Array[][], parameters: Record<string, Float32Array>): boolean;
}
declare function registerProcessor(name: string, processor: new (options: { processorOptions?: unknown }) => AudioWorkletProcessor): void;

interface ChunkerOptions {
  chunkFrames: number;
}

class Chunker extends AudioWorkletProcessor {
  readonly #frames: number;
  #chunk: Float32Array;
  #filled = 0;

  constructor(options: { processorOptions?: unknown }) {
    super(options);
    this.#frames = (options.processorOptions as ChunkerOptions).chunkFrames;
    this.#chunk = new Float32Array(this.#frames);
  }

  process(inputs: Float32Array[][]): boolean {
    const channels = inputs[0] ?? [];
    const first = channels[0];
    if (first === undefined) return true;
    for (let i = 0; i < first.length; i++) {
      let sum = 0;
      for (const channel of channels) sum += channel[i] ?? 0;
      this.#chunk[this.#filled++] = sum / channels.length;
      if (this.#filled === this.#frames) {
        this.port.postMessage(this.#chunk, [this.#chunk.buffer]);
        this.#chunk = new Float32Array(this.#frames);
        this.#filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("chunker", Chunker);
export {};
