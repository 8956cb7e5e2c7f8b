// Run by limits.test.ts as a Node process of its own: one call carrying 180 s of 48 kHz stereo f32
// (69 MB), which the server refuses for its size (or for a missing token). Prints what the call
// failed with as JSON. It never closes the client: the process must exit by itself once the call
// has settled, with nothing left keeping it alive.
//
//   node oversized-call.js ADDRESS execute|execute-web|stream [TOKEN]
import { Audio, Pipeline, RemoteMediaError, createClient } from "../src/index.js";

const [address, how, token] = process.argv.slice(2);
const RATE = 48_000;
const audio = new Audio(new Float32Array(180 * RATE * 2), RATE, 2);
const pipeline = new Pipeline("oversized").gain("gain", { gain_db: -6 });
// A deadline far beyond what a refusal takes: hanging until it would report DEADLINE_EXCEEDED.
const timeoutMs = 120_000;

async function call(): Promise<void> {
  const client = createClient({
    address: address ?? "",
    ...(token === undefined ? {} : { token }),
    timeoutMs,
    transport: how === "execute-web" ? "grpc-web" : "grpc",
  });
  if (how !== "stream") {
    await client.execute(pipeline, audio);
    return;
  }
  const session = await client.stream(pipeline, { timeoutMs });
  const sending = session.send(audio).then(() => session.close());
  try {
    // The results themselves do not matter: the stream must end with the refusal.
    const results = session[Symbol.asyncIterator]();
    while ((await results.next()).done !== true);
  } finally {
    await sending.catch(() => undefined);
  }
}

try {
  await call();
  console.log(JSON.stringify({ outcome: "ok" }));
} catch (e) {
  if (!(e instanceof RemoteMediaError)) throw e;
  console.log(JSON.stringify({ outcome: "error", kind: e.kind, code: e.code, limit: e.limit, hint: e.hint ?? "" }));
}
