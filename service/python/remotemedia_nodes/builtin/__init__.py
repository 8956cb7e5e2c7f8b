"""Built-in Python nodes: a Python twin of every native node (used with RUNTIME_HINT_CPYTHON and
as a reference) and nodes that exist only in Python, the speech model nodes among them."""

from remotemedia_nodes.builtin import bandpass, basic, chunker, loudness, recognition, resample, silero, tts, vad  # noqa: F401
