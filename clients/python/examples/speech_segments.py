"""Finds the speech in two seconds of audio and returns it 6 dB quieter, in one call.

Run it against a local server (`make run`), or set REMOTEMEDIA_ADDRESS:

    python clients/python/examples/speech_segments.py
"""

import numpy as np

from remotemedia_client import Client, GainNode, PassThroughNode, Pipeline, VADNode

pipeline = Pipeline("speech")
pipeline.add(PassThroughNode("in")) >> VADNode("vad", threshold_db=-35) >> GainNode("gain", gain_db=-6)

rate = 16_000
t = np.arange(2 * rate) / rate
audio = (0.5 * np.sin(2 * np.pi * 440 * t) * ((t > 0.5) & (t < 1.5))).astype(np.float32)

with Client() as client:  # 127.0.0.1:50051, or $REMOTEMEDIA_ADDRESS
    result = client.run(pipeline, audio, sample_rate=rate)

quieter = result.output("gain").to_numpy()  # float32, one sample per input sample
print(f"{quieter.size} samples back, peak {np.abs(quieter).max():.2f}")
for segment in result.segments["vad"]:
    print(f"speech {segment.start_s:.2f}-{segment.end_s:.2f} s at {segment.energy_db:.1f} dB")
print(f"{result.metrics.wall_time_ms:.2f} ms on the server")
