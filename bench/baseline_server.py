"""The baseline for the load benchmarks: a plain grpcio server over the same `remotemedia.v1`
proto that does what a Python team would write by hand for the benchmarked pipeline.

It implements `ExecutePipeline` for one-node `AudioResampleNode` manifests: decode the f32
samples with numpy, resample with soxr (HQ, the quality our `high` matches), encode the
result. Anything else gets UNIMPLEMENTED. A thread pool serves the calls, as grpcio servers do.

    python bench/baseline_server.py --listen 127.0.0.1:50071 [--workers 16]

Prints one line, `listening on ADDRESS`, once it serves.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent import futures

import grpc
import numpy as np
import soxr

from remotemedia_client import pb
from remotemedia_client._proto.remotemedia.v1 import service_pb2_grpc


class Baseline(service_pb2_grpc.PipelineServiceServicer):
    def ExecutePipeline(self, request: pb.ExecuteRequest, context: grpc.ServicerContext) -> pb.ExecuteResponse:
        started = time.perf_counter()
        nodes = request.manifest.nodes
        if len(nodes) != 1 or nodes[0].node_type != "AudioResampleNode":
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "the baseline runs one AudioResampleNode")
        node = nodes[0]
        params = json.loads(node.params or "{}")
        buf = request.audio_inputs[node.id]
        if buf.format != pb.AUDIO_FORMAT_F32 or buf.channels != 1:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "the baseline takes mono f32")
        x = np.frombuffer(buf.samples, dtype="<f4")
        rate = int(params.get("output_rate", 16_000))
        y = soxr.resample(x, buf.sample_rate, rate, quality="HQ").astype("<f4", copy=False)
        out = pb.AudioBuffer(samples=y.tobytes(), sample_rate=rate, channels=1, format=pb.AUDIO_FORMAT_F32, num_samples=y.size)
        wall_ms = (time.perf_counter() - started) * 1e3
        return pb.ExecuteResponse(
            result=pb.ExecutionResult(
                audio_outputs={node.id: out},
                metrics=pb.ExecutionMetrics(wall_time_ms=wall_ms),
            )
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", default="127.0.0.1:50071")
    ap.add_argument("--workers", type=int, default=16)
    opts = ap.parse_args()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=opts.workers),
        options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)],
    )
    service_pb2_grpc.add_PipelineServiceServicer_to_server(Baseline(), server)
    port = server.add_insecure_port(opts.listen)
    server.start()
    host = opts.listen.rsplit(":", 1)[0]
    print(f"listening on {host}:{port}", flush=True)
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
