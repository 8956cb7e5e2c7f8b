"""Built-in Python nodes: a Python twin of every native node (used with RUNTIME_HINT_CPYTHON and
as a reference) and nodes that exist only in Python."""

from remotemedia_nodes.builtin import basic, bandpass, chunker, loudness, resample, vad  # noqa: F401
