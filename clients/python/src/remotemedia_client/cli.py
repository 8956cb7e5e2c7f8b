"""``remotemedia``: run pipelines on sound files from the command line.

Exit codes (also in ``remotemedia --help``):

== ======================================================================================
0  success
1  an unexpected error (a bug: please report it)
2  usage error: bad arguments, an unreadable input or manifest file
3  connection error: the server is unreachable, draining or not serving, or the deadline passed
4  refused: a missing or wrong token, or a protocol version the server does not speak
5  pipeline error: the pipeline or its inputs are invalid, a node failed, a limit was hit,
   or the work was cancelled
130 interrupted (Ctrl-C): a running request or stream is cancelled first
141 the reader of stdout went away (``remotemedia nodes | head -1``): stopped quietly, as a
   Unix tool that SIGPIPE ends
== ======================================================================================

``run`` sends each input file whole, in one request, and never streams on its own: a stream
runs the nodes chunk by chunk, which changes what some of them report (loudness, per-chunk
data) and cannot carry ``--data`` or several inputs. A file over the server's limits fails with
exit code 5 and a message naming ``remotemedia stream`` and the ``--max-*`` options.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

import soundfile
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from remotemedia_client import __version__
from remotemedia_client._core import ADDRESS_ENV, DEFAULT_ADDRESS, TLS, TOKEN_ENV, ResourceLimits
from remotemedia_client._log import enable_logging
from remotemedia_client.audio import AudioBuffer, SampleFormat, sound_file_format
from remotemedia_client.client import Client
from remotemedia_client.errors import (
    AuthenticationError,
    DeadlineExceededError,
    RemoteMediaError,
    ResourceLimitError,
    ServiceUnavailableError,
    ValidationError,
    VersionMismatchError,
)
from remotemedia_client.pipeline import Pipeline
from remotemedia_client.results import Result, Segment, Utterance

EXIT_OK, EXIT_BUG, EXIT_USAGE, EXIT_CONNECTION, EXIT_REFUSED, EXIT_PIPELINE = 0, 1, 2, 3, 4, 5
#: Exit status when the reader of stdout went away: what a shell reports for a tool that
#: SIGPIPE ended (128 + 13).
EXIT_BROKEN_PIPE = 141
#: Exit status when interrupted (Ctrl-C): what a shell reports for SIGINT (128 + 2).
EXIT_INTERRUPTED = 130
#: Files at least this long get a progress bar while they stream.
PROGRESS_MIN_SECONDS = 10.0

EPILOG = """\
environment:
  REMOTEMEDIA_ADDRESS   default for --address (else 127.0.0.1:50051)
  REMOTEMEDIA_TOKEN     default for --token

exit codes:
  0  success
  1  unexpected error (a bug)
  2  usage error: bad arguments, unreadable input or manifest file
  3  connection error: server unreachable, draining or not serving, deadline passed
  4  refused: missing or wrong token, unsupported protocol version
  5  pipeline error: invalid pipeline or inputs, node failure, limit hit, cancelled
  130 interrupted (Ctrl-C); the running call is cancelled
  141 stdout closed early (| head): stopped quietly

run sends each file whole, in one request; files over the server's limits need
--max-audio-samples (and the other --max-* options) or `remotemedia stream`.
"""


class UsageError(Exception):
    """A problem with the command line or its files."""


def _exit_code(e: RemoteMediaError) -> int:
    if isinstance(e, (ServiceUnavailableError, DeadlineExceededError)):
        return EXIT_CONNECTION
    if isinstance(e, (AuthenticationError, VersionMismatchError)):
        return EXIT_REFUSED
    return EXIT_PIPELINE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="remotemedia",
        description="Run RemoteMedia pipelines on sound files and query a RemoteMedia server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--address", default=os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS, help="server host:port (default: %(default)s)")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV), help="bearer token (default: $REMOTEMEDIA_TOKEN)")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds for unary calls (default: %(default)s)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS (implied by --ca/--cert/--key)")
    parser.add_argument("--ca", metavar="PEM", help="CA certificates to trust")
    parser.add_argument("--cert", metavar="PEM", help="client certificate, for mutual TLS")
    parser.add_argument("--key", metavar="PEM", help="client private key, for mutual TLS")
    parser.add_argument("--json", action="store_true", help="print JSON (results and errors) on stdout, for scripts")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log the client's calls, retries and streams on stderr")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a pipeline once over sound files", description="Run a pipeline once over whole sound files.")
    run.add_argument("manifest", help="pipeline manifest (JSON)")
    run.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="[NODE=]PATH",
        help="sound file for the source node (repeat for several sources)",
    )
    run.add_argument(
        "--output", "-o", action="append", default=[], metavar="[NODE=]PATH", help="write a node's audio output to a sound file"
    )
    run.add_argument("--data", action="append", default=[], metavar="NODE=JSON", help="JSON value for a node's data port")
    _audio_options(run)
    limits = run.add_argument_group(
        "limits", "raise (or lower) this request's limits, up to the server's caps; files over them are better streamed"
    )
    limits.add_argument("--max-audio-samples", type=_positive_int, metavar="N", help="samples per input buffer, all channels")
    limits.add_argument("--max-memory-bytes", type=_positive_int, metavar="N", help="memory the pipeline may hold")
    limits.add_argument("--max-timeout-ms", type=_positive_int, metavar="MS", help="time the pipeline may take")

    stream = sub.add_parser(
        "stream",
        help="stream a sound file through a pipeline in chunks",
        description="Stream a sound file through a pipeline chunk by chunk.",
    )
    stream.add_argument("manifest", help="pipeline manifest (JSON)")
    stream.add_argument("--input", "-i", required=True, metavar="PATH", help="sound file to stream")
    stream.add_argument(
        "--output", "-o", action="append", default=[], metavar="[NODE=]PATH", help="write the streamed audio output to a sound file"
    )
    stream.add_argument("--node", metavar="NODE", help="node the chunks go to (default: the only source node)")
    stream.add_argument("--chunk-ms", type=float, default=20.0, help="chunk length in milliseconds (default: %(default)s)")
    stream.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    _audio_options(stream)

    sub.add_parser("version", help="the server's versions and whether it speaks this client's protocol")
    health = sub.add_parser("health", help="the server's health status (exit 0 when SERVING, else 3)")
    health.add_argument("--service", default="", help="service to ask about (default: the whole server)")
    sub.add_parser("nodes", help="the node types the server runs")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _audio_options(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group("sound files")
    group.add_argument(
        "--sample-format",
        choices=("file", "f32", "i16", "i32"),
        default="file",
        help="samples sent to the server: the input file's own (default: 16-bit stays 16-bit), or this format",
    )
    group.add_argument(
        "--subtype",
        metavar="SUBTYPE",
        help="sample encoding of the output file, as soundfile names it (PCM_16, PCM_24, FLOAT, VORBIS, ...); "
        "default: the output's sample format where the file format holds it, else the format's default",
    )


#: The limits `run` can raise with options, by the name the server gives them.
_LIMIT_OPTIONS = {
    "max_audio_samples": "--max-audio-samples",
    "max_memory_bytes": "--max-memory-bytes",
    "max_timeout_ms": "--max-timeout-ms",
}


class _Console(Console):
    """rich's Console, with a reader that went away reported as ``BrokenPipeError``, which
    :func:`main` turns into the quiet exit every command makes then (rich would exit 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


class _Cli:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = _Console(highlight=False, soft_wrap=True)
        self.err = _Console(stderr=True, highlight=False)

    def client(self) -> Client:
        a = self.args
        tls: TLS | bool | None = None
        if a.ca or a.cert or a.key:
            try:
                tls = TLS.from_files(a.ca, a.cert, a.key)
            except (OSError, ValueError) as e:
                raise UsageError(f"cannot use the TLS files: {e}") from None
        elif a.tls:
            tls = True
        try:
            return Client(a.address, token=a.token or None, tls=tls, timeout=a.timeout)
        except (TypeError, ValueError) as e:
            # The client names the bad setting (`timeout must be ...`, `address ... port`); the
            # flags are where it came from.
            raise UsageError(str(e)) from None

    def emit(self, payload: Any) -> None:
        print(json.dumps(payload, indent=2, default=str))

    # --- commands ---------------------------------------------------------------------------

    def version(self) -> int:
        with self.client() as c:
            v = c.version()
        info = v.version_info
        if self.args.json:
            self.emit(
                {
                    "client_version": __version__,
                    "protocol_version": info.protocol_version,
                    "runtime_version": info.runtime_version,
                    "supported_protocols": list(info.supported_protocols),
                    "build_timestamp": info.build_timestamp,
                    "compatible": v.compatible,
                    "compatibility_message": v.compatibility_message,
                }
            )
        else:
            self.out.print(f"server    remotemedia-server {info.runtime_version} (built {info.build_timestamp})")
            self.out.print(f"protocol  {info.protocol_version} (supported: {', '.join(info.supported_protocols)})")
            self.out.print(f"client    remotemedia-client {__version__}: {'compatible' if v.compatible else 'NOT compatible'}")
            if not v.compatible:
                self.err.print(v.compatibility_message)
        return EXIT_OK if v.compatible else EXIT_REFUSED

    def health(self) -> int:
        with self.client() as c:
            status = c.health(self.args.service)
        if self.args.json:
            self.emit({"service": self.args.service, "status": status})
        else:
            self.out.print(status)
        return EXIT_OK if status == "SERVING" else EXIT_CONNECTION

    def nodes(self) -> int:
        with self.client() as c:
            types = c.nodes()
        if self.args.json:
            self.emit(types)
        else:
            for t in types:
                self.out.print(t)
        return EXIT_OK

    def run(self) -> int:
        pipeline = self.load(self.args.manifest)
        ids = {n.id for n in pipeline.nodes}
        inputs: dict[str, AudioBuffer] = {}
        for spec in self.args.input:
            node, path = self.target(spec, ids, pipeline, "--input")
            inputs[node] = self.read(path, self.args.sample_format)
        data = {}
        for spec in self.args.data:
            node, _, text = spec.partition("=")
            try:
                data[node] = json.loads(text)
            except json.JSONDecodeError as e:
                raise UsageError(f"--data {spec!r}: not JSON: {e}") from None
        outputs = [self.target(spec, ids, pipeline, "--output", sinks=True) for spec in self.args.output]
        for _, path in outputs:
            self.check_output(path)
        a = self.args
        limits = None
        if a.max_audio_samples or a.max_memory_bytes or a.max_timeout_ms:
            limits = ResourceLimits(
                max_audio_samples=a.max_audio_samples, max_memory_bytes=a.max_memory_bytes, max_timeout_ms=a.max_timeout_ms
            )
        with self.client() as c:
            try:
                result = c.run(pipeline, inputs, data=data, output_nodes=[n for n, _ in outputs if n in ids], limits=limits)
            except ResourceLimitError as e:
                if e.hint is not None:
                    e.hint = self.limit_hint(e)
                raise
        written = {}
        for node, path in outputs:
            if node not in result.audio:
                raise RemoteMediaError(f"node {node!r} returned no audio (audio outputs: {', '.join(result.audio) or 'none'})")
            self.write(result.audio[node], path)
            written[node] = path
        if self.args.json:
            self.emit(self.summary(result, written))
        else:
            self.print_result(result, written)
        return EXIT_OK

    def stream(self) -> int:
        pipeline = self.load(self.args.manifest)
        ids = {n.id for n in pipeline.nodes}
        path = self.args.input
        try:
            info = soundfile.info(path)
        except Exception as e:  # noqa: BLE001 - soundfile raises several types for unreadable files
            raise UsageError(f"cannot read {path}: {e}") from None
        if not math.isfinite(self.args.chunk_ms) or self.args.chunk_ms <= 0:
            raise UsageError(f"--chunk-ms must be a positive number of milliseconds, got {self.args.chunk_ms:g}")
        if self.args.node is None and len(pipeline.sources) > 1:
            names = ", ".join(n.id for n in pipeline.sources)
            raise UsageError(f"the pipeline has {len(pipeline.sources)} source nodes ({names}); name the one to stream into with --node")
        if self.args.node is not None and self.args.node not in ids:
            raise UsageError(f"--node {self.args.node!r}: no such node (nodes: {', '.join(sorted(ids))})")
        if len(self.args.output) > 1:
            raise UsageError(f"--output is given {len(self.args.output)} times; stream writes one node's audio output")
        output = self.target(self.args.output[0], ids, pipeline, "--output", sinks=True) if self.args.output else None
        if output is not None:
            self.check_output(output[1])
        chunk_frames = max(1, round(info.samplerate * self.args.chunk_ms / 1000))
        # An empty file is sent as one empty chunk (see AudioBuffer.iter_file).
        chunks = max(1, -(-info.frames // chunk_frames))
        show = not self.args.json and not self.args.no_progress and info.duration >= PROGRESS_MIN_SECONDS
        pieces: list[AudioBuffer] = []
        segments: dict[str, list[Segment]] = {}
        utterances: dict[str, list[Utterance]] = {}
        # Every other node's data outputs, one entry per result that had them.
        data: dict[str, list[Any]] = {}
        results = 0
        progress = Progress(
            TextColumn("streaming {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=self.err,
            transient=True,
            disable=not show,
        )
        with self.client() as c, progress:
            task = progress.add_task(Path(path).name, total=chunks)
            dtype = self.sample_format(path, self.args.sample_format)
            for result in c.stream_file(path, pipeline, chunk_ms=self.args.chunk_ms, source=self.args.node, dtype=dtype):
                results += 1
                progress.update(task, completed=min(chunks, results))
                if output is not None and output[0] in result.audio:
                    pieces.append(result.audio[output[0]])
                for node, found in result.segments.items():
                    segments.setdefault(node, []).extend(found)
                for node, transcript in result.transcripts.items():
                    utterances.setdefault(node, []).extend(u for u in transcript.utterances if u.text)
                for node, ports in result.data.items():
                    if node not in segments and node not in utterances:
                        data.setdefault(node, []).append(ports)
        written = {}
        if output is not None:
            if not pieces:
                raise RemoteMediaError(f"node {output[0]!r} produced no audio")
            self.write(AudioBuffer.concatenate(pieces), output[1])
            written[output[0]] = output[1]
        summary = {
            "input": path,
            "chunks": chunks,
            "results": results,
            "outputs": written,
            "segments": {node: [dataclasses.asdict(s) for s in segs] for node, segs in segments.items()},
            "transcripts": {
                node: {"text": " ".join(u.text for u in utts), "utterances": [dataclasses.asdict(u) for u in utts]}
                for node, utts in utterances.items()
            },
            "data": data,
        }
        if self.args.json:
            self.emit(summary)
        else:
            self.out.print(f"streamed {chunks} chunks of {self.args.chunk_ms:g} ms from {path}: {results} results")
            for node, out_path in written.items():
                self.out.print(f"wrote {node} → {out_path}")
            for node, segs in segments.items():
                self.out.print(f"{node}: {len(segs)} speech segments")
                for s in segs:
                    self.out.print(f"  {s.start_s:8.3f} – {s.end_s:8.3f} s  {s.energy_db:6.1f} dB")
            for node, utts in utterances.items():
                self.out.print(f"{node}: {len(utts)} utterances")
                for u in utts:
                    self.out.print(f"  {u.start_s:8.3f} – {u.end_s:8.3f} s  {u.text}", highlight=False)
            for node, outputs in data.items():
                self.out.print(f"{node}: {len(outputs)} data outputs, the last {json.dumps(outputs[-1])}", highlight=False)
        return EXIT_OK

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    def load(path: str) -> Pipeline:
        try:
            return Pipeline.load(path)
        except OSError as e:
            raise UsageError(f"cannot read the manifest {path}: {e.strerror or e}") from None
        except ValidationError as e:
            raise UsageError(f"{path} is not a usable manifest: {e}") from None

    @staticmethod
    def target(spec: str, ids: set[str], pipeline: Pipeline, flag: str, *, sinks: bool = False) -> tuple[str, str]:
        """Splits ``NODE=PATH``; a bare path goes to the only source (or sink) node."""
        node, sep, path = spec.partition("=")
        if sep and node in ids:
            return node, path
        if sep and "/" not in node and not Path(spec).exists():
            # Most likely a misspelt node, not a file to be named "nope=out.wav".
            raise UsageError(
                f"{flag} {spec!r}: the pipeline has no node {node!r} (nodes: {', '.join(sorted(ids))}); "
                f"for a file whose name has '=' in it, write ./{spec}"
            )
        candidates = [n.id for n in (pipeline.sinks if sinks else pipeline.sources)]
        if len(candidates) != 1:
            kind = "sink" if sinks else "source"
            raise UsageError(f"{flag} {spec!r}: the pipeline has {len(candidates)} {kind} nodes ({', '.join(candidates)}); write NODE=PATH")
        return candidates[0], spec

    @staticmethod
    def sample_format(path: str, choice: str) -> SampleFormat:
        """``--sample-format``: the file's own format for ``file``, else the one named."""
        if choice != "file":
            return cast(SampleFormat, choice)  # argparse's choices are the three formats and "file"
        try:
            return AudioBuffer.file_format(path)
        except Exception as e:  # noqa: BLE001 - soundfile raises several types for unreadable files
            raise UsageError(f"cannot read {path}: {e}") from None

    def read(self, path: str, choice: str) -> AudioBuffer:
        dtype = self.sample_format(path, choice)
        try:
            return AudioBuffer.from_file(path, dtype=dtype)
        except Exception as e:  # noqa: BLE001 - soundfile raises several types for unreadable files
            raise UsageError(f"cannot read {path}: {e}") from None

    def check_output(self, path: str) -> None:
        """Refuses an output file that cannot be written before any work is done."""
        try:
            sound_file_format(path, subtype=self.args.subtype)
        except ValueError as e:
            raise UsageError(f"--output {path}: {e}") from None

    def write(self, buf: AudioBuffer, path: str) -> None:
        try:
            buf.to_file(path, subtype=self.args.subtype)
        except Exception as e:  # noqa: BLE001 - soundfile raises several types
            raise UsageError(f"cannot write {path}: {e}") from None

    def limit_hint(self, e: ResourceLimitError) -> str:
        """What to do about a file too long for one request, in this command's terms."""
        inputs = " ".join(f"--input {spec}" for spec in self.args.input)
        stream = f"stream the file instead (remotemedia stream {self.args.manifest} {inputs} ...), which sends it in chunks"
        option = _LIMIT_OPTIONS.get(e.limit or "")
        if option is None:
            others = ", ".join(_LIMIT_OPTIONS.values())
            return (
                f"{stream}; {others} raise the other limits of a request, but the message size is the server's own (--max-message-bytes)."
            )
        return f"{stream}, or raise the limit with {option} N (up to the server's cap)."

    @staticmethod
    def summary(result: Result, written: dict[str, str]) -> dict[str, Any]:
        return {
            "status": result.status,
            "audio": {
                k: {"sample_rate": b.sample_rate, "channels": b.channels, "frames": b.frames, "format": b.format, "path": written.get(k)}
                for k, b in result.audio.items()
            },
            "data": result.data,
            "metrics": {
                "wall_time_ms": result.metrics.wall_time_ms,
                "cpu_time_ms": result.metrics.cpu_time_ms,
                "memory_used_bytes": result.metrics.memory_used_bytes,
                "nodes": {
                    k: {"execution_time_ms": m.execution_time_ms, "samples_processed": m.samples_processed, "runtime": m.runtime}
                    for k, m in result.metrics.nodes.items()
                },
            },
        }

    def print_result(self, result: Result, written: dict[str, str]) -> None:
        for node, buf in result.audio.items():
            where = f" → {written[node]}" if node in written else ""
            self.out.print(f"{node}: {buf.frames} frames × {buf.channels} ch at {buf.sample_rate} Hz ({buf.duration:.3f} s){where}")
        for node, ports in result.data.items():
            self.out.print(f"{node}: {json.dumps(ports)}")
        m = result.metrics
        table = Table("node", "runtime", "time (ms)", "samples", title=f"wall {m.wall_time_ms:.2f} ms, cpu {m.cpu_time_ms:.2f} ms")
        for node, nm in m.nodes.items():
            table.add_row(node, nm.runtime or "", f"{nm.execution_time_ms:.3f}", str(nm.samples_processed))
        self.out.print(table)

    def fail(self, code: int, kind: str, message: str, extra: dict[str, Any] | None = None) -> int:
        if self.args.json:
            self.emit({"error": {"kind": kind, "message": message, **(extra or {})}})
        else:
            self.err.print(f"[bold red]error[/]: {message}", markup=True, highlight=False)
        return code


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`remotemedia nodes | head -1`): stop quietly, as Unix tools do,
        # and keep the interpreter's final flush of stdout from reporting the same pipe again.
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # stdout is not a file descriptor (an embedding); nothing will flush into a pipe


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.verbose:
        # The calls themselves are the client's debug events.
        enable_logging("DEBUG")
    cli = _Cli(args)
    try:
        code: int = getattr(cli, args.command)()
        return code
    except UsageError as e:
        return cli.fail(EXIT_USAGE, "usage", str(e))
    except RemoteMediaError as e:
        extra: dict[str, Any] = {"type": type(e).__name__, "code": e.code.name if e.code else None, "node_id": e.node_id}
        if isinstance(e, ValidationError):
            extra["violations"] = [{"field": v.field, "description": v.description} for v in e.violations]
        if isinstance(e, VersionMismatchError):
            extra["supported_versions"] = e.supported_versions
        if isinstance(e, ResourceLimitError):
            extra["limit"] = e.limit
        if e.hint is not None:
            extra["hint"] = e.hint
        message = str(e) if not args.json else e.message
        trace = getattr(e, "traceback", None)
        if trace and not args.json:
            message += "\n" + str(trace).rstrip()
        elif trace:
            extra["traceback"] = trace
        return cli.fail(_exit_code(e), type(e).__name__, message, extra)
    except KeyboardInterrupt:
        return cli.fail(EXIT_INTERRUPTED, "interrupted", "interrupted")


def entry() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    entry()
