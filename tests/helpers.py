"""Message builders shared by the integration tests."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from remotemedia_client import pb


def node(id: str, node_type: str, runtime: int = 0, **params: Any) -> pb.NodeManifest:
    return pb.NodeManifest(id=id, node_type=node_type, params=json.dumps(params) if params else "", runtime_hint=runtime)


def manifest(nodes: list[pb.NodeManifest], edges: list[tuple[str, str]] = ()) -> pb.PipelineManifest:  # type: ignore[assignment]
    return pb.PipelineManifest(
        version="v1",
        metadata=pb.ManifestMetadata(name="pytest"),
        nodes=nodes,
        connections=[pb.Connection(**{"from": a, "to": b}) for a, b in edges],
    )


def f32(samples: np.ndarray, rate: int = 16_000, channels: int = 1) -> pb.AudioBuffer:
    a = np.ascontiguousarray(samples, dtype="<f4")
    return pb.AudioBuffer(samples=a.tobytes(), sample_rate=rate, channels=channels, format=pb.AUDIO_FORMAT_F32, num_samples=a.size)


def samples(buf: pb.AudioBuffer) -> np.ndarray:
    dtype = {pb.AUDIO_FORMAT_F32: "<f4", pb.AUDIO_FORMAT_I16: "<i2", pb.AUDIO_FORMAT_I32: "<i4"}[buf.format]
    return np.frombuffer(buf.samples, dtype=dtype)


def violations(err: pb.ErrorResponse) -> list[dict[str, Any]]:
    return list(json.loads(err.context)["violations"])
