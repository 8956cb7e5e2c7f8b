"""Runs the speech-to-speech example on a WAV file and writes the spoken answer.

    python examples/speech_to_speech/run.py question.wav answer.wav            # one ExecutePipeline call
    python examples/speech_to_speech/run.py question.wav answer.wav --stream   # StreamPipeline, 20 ms chunks

The server must load the example's text step: start it with
``--python-nodes-path examples/speech_to_speech/nodes``. Prints what was heard (with partial
hypotheses when streaming) and the answer's length; ``--address`` and ``REMOTEMEDIA_TOKEN``
reach a server elsewhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from remotemedia_client import AudioBuffer, Client, Pipeline, ResourceLimits

HERE = Path(__file__).resolve().parent
PIPELINE = HERE / "pipeline.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="a WAV (or any soundfile-readable) file of speech")
    parser.add_argument("output", type=Path, help="where to write the spoken answer (WAV)")
    parser.add_argument("--address", default=None, help="server host:port (default $REMOTEMEDIA_ADDRESS or 127.0.0.1:50051)")
    parser.add_argument("--stream", action="store_true", help="stream the file in 20 ms chunks instead of one call")
    args = parser.parse_args(argv)

    pipeline = Pipeline.load(PIPELINE)
    speech: list[AudioBuffer] = []
    heard: list[str] = []
    with Client(args.address, timeout=None) as client:
        if args.stream:
            for result in client.stream_file(args.input, pipeline, chunk_ms=20):
                transcript = result.transcripts.get("asr")
                if transcript is not None and transcript.partial:
                    print(f"  … {transcript.partial}", file=sys.stderr)
                if transcript is not None and transcript.text:
                    heard.append(transcript.text)
                    print(f"heard: {transcript.text}")
                if "tts" in result.audio and result.audio["tts"].frames:
                    speech.append(result.audio["tts"])
        else:
            # Recognition runs at about a quarter of real time: give a long file the time it needs.
            result = client.run(
                pipeline,
                AudioBuffer.from_file(args.input),
                output_nodes=["asr"],
                limits=ResourceLimits(max_timeout_ms=30_000),
                timeout=60,
            )
            transcript = result.transcripts["asr"]
            for u in transcript.utterances:
                print(f"heard [{u.start_s:6.2f} – {u.end_s:6.2f} s, confidence {u.confidence:.2f}]: {u.text}")
            if "tts" in result.audio and result.audio["tts"].frames:
                speech.append(result.audio["tts"])
    if not speech:
        print("no speech recognised; nothing to answer", file=sys.stderr)
        return 1
    answer = AudioBuffer.concatenate(speech)
    answer.to_file(args.output)
    print(f"answer: {answer.duration:.2f} s of speech in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
