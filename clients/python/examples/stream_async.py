"""Streams ten seconds of audio in 20 ms chunks with the asyncio client and prints each speech
segment as the server closes it. `send` waits while the server is busy, so a slow pipeline
slows this loop down instead of queueing audio without bound.

    python clients/python/examples/stream_async.py
"""

import asyncio

import numpy as np

from remotemedia_client import AsyncClient, AudioResampleNode, Pipeline, VADNode

RATE = 48_000


def bursts(seconds: int) -> np.ndarray:
    """A 300 Hz tone that is on for the first half of every second."""
    t = np.arange(seconds * RATE) / RATE
    return (0.4 * np.sin(2 * np.pi * 300 * t) * (t % 1 < 0.5)).astype(np.float32)


async def main() -> None:
    pipeline = Pipeline.chain(AudioResampleNode("down", output_rate=16_000), VADNode("vad"), name="live")
    audio = bursts(10)
    chunk = RATE // 50
    async with AsyncClient() as client, client.stream(pipeline, sample_rate=RATE) as stream:

        async def produce() -> None:
            for start in range(0, audio.size, chunk):
                await stream.send(audio[start : start + chunk])
            await stream.close()

        producer = asyncio.create_task(produce())
        frames = 0
        async for result in stream:
            frames += result.audio["vad"].frames if "vad" in result.audio else 0
            for segment in result.segments.get("vad", []):
                print(f"chunk {result.sequence}: speech {segment.start_s:.2f}-{segment.end_s:.2f} s")
        await producer
    print(f"{stream.stats.chunks_processed} chunks, {frames} frames at 16 kHz back")


asyncio.run(main())
