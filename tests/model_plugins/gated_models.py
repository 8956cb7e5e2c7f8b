"""Test-only models for the preloading tests (loaded with --python-nodes-path tests/model_plugins).

`gated-test-model` loads only once something is written to the FIFO named by MODEL_GATE_FIFO
(so a test decides when preloading ends); `broken-test-model` always fails to load.
"""

from __future__ import annotations

import os

from remotemedia_nodes import models


def _load_gated() -> object:
    gate = os.environ.get("MODEL_GATE_FIFO")
    if gate:
        with open(gate) as fifo:
            fifo.read()
    return object()


def _load_broken() -> object:
    raise OSError("weights file /nonexistent/broken.bin is missing")


models.register(models.Model(name="gated-test-model", load=_load_gated, description="loads when the test opens its gate"))
models.register(models.Model(name="broken-test-model", load=_load_broken, description="never loads"))
