"""The node catalogue: each node declares itself once; the server validates from that
declaration and serves it; both clients check parameters from it with the server's rules and
words; the checked-in snapshot, the generated builders and docs/nodes.md follow it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from conftest import PLUGINS, REPO, SERVER_BIN, RunningServer, server_env, start_server
from helpers import manifest, node
from remotemedia_client import BUILTIN_CATALOGUE, Catalogue, Client, Node, Pipeline, ValidationError, pb
from remotemedia_client._proto.remotemedia.v1 import service_pb2_grpc

SNAPSHOT = REPO / "clients" / "catalogue.json"
TS_DIST = REPO / "clients" / "typescript" / "dist" / "esm" / "index.js"
UNKNOWN = "no_such_param"


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    s = start_server("--python-nodes-path", str(PLUGINS))
    yield s
    assert s.stop() == 0


def server_catalogue(s: RunningServer) -> Catalogue:
    with Client(s.address) as client:
        return client.catalogue()


# --- one declaration, served ---------------------------------------------------------------


def test_the_checked_in_catalogue_is_what_the_nodes_declare() -> None:
    out = subprocess.run([str(SERVER_BIN), "--python", "true", "--metrics-listen", "off", "catalogue"], capture_output=True, text=True, timeout=120, env=server_env())
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == json.loads(SNAPSHOT.read_text()), "clients/catalogue.json is stale: run `make catalogue`"


def test_the_generated_builders_and_docs_follow_the_snapshot() -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "catalogue.py"), "--check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_changed_declaration_without_regenerating_fails_with_what_to_run(tmp_path: Path) -> None:
    # A parameter's range changed in a node file, and the snapshot regenerated but nothing else.
    doc = json.loads(SNAPSHOT.read_text())
    resample = next(t for t in doc["node_types"] if t["name"] == "AudioResampleNode")
    resample["params_schema"]["properties"]["output_rate"]["maximum"] = 384_000
    changed = tmp_path / "catalogue.json"
    changed.write_text(json.dumps(doc))
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "catalogue.py"), "--check", "--catalogue", str(changed)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "run `make catalogue`" in done.stderr and "nodes.py" in done.stderr and "docs/nodes.md" in done.stderr


def test_a_range_changed_in_a_node_file_fails_make_check_catalogue(tmp_path: Path) -> None:
    # A copy of the Python nodes with one range changed, first on the interpreter's path: what
    # the server declares no longer matches the checked-in snapshot.
    shutil.copytree(REPO / "service" / "python" / "remotemedia_nodes", tmp_path / "remotemedia_nodes")
    bandpass = tmp_path / "remotemedia_nodes" / "builtin" / "bandpass.py"
    text = bandpass.read_text()
    assert 'Param(1, 12, doc="filter order")' in text
    bandpass.write_text(text.replace('Param(1, 12, doc="filter order")', 'Param(1, 16, doc="filter order")'))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(["make", "-s", "--no-print-directory", "check-catalogue"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "clients/catalogue.json differs from what the nodes declare; run `make catalogue`" in done.stderr
    # Unchanged, it passes; and make test runs it.
    assert subprocess.run(["make", "-s", "--no-print-directory", "check-catalogue"], cwd=REPO, capture_output=True, timeout=600).returncode == 0
    makefile = (REPO / "Makefile").read_text()
    assert "check-catalogue" in makefile.split("\ntest:", 1)[1].split("\n", 1)[0], "make test runs check-catalogue"


def test_get_version_serves_every_declaration(srv: RunningServer) -> None:
    with Client(srv.address) as client:
        info = client.version().version_info
    assert sorted(t.name for t in info.node_types) == sorted(info.supported_node_types)
    resample = next(t for t in info.node_types if t.name == "AudioResampleNode")
    schema = json.loads(resample.params_schema)
    assert schema["properties"]["output_rate"] == {
        "type": "integer",
        "minimum": 1000,
        "maximum": 768000,
        "x-unit": "Hz",
        "description": "target sample rate",
    }
    assert schema["required"] == ["output_rate"] and schema["additionalProperties"] is False
    assert list(resample.aliases) == ["AudioResample"]
    assert list(resample.runtimes) == [pb.RUNTIME_HINT_RUST, pb.RUNTIME_HINT_CPYTHON]
    vad = next(t for t in info.node_types if t.name == "VADNode")
    assert [(p.name, p.kind) for p in vad.outputs] == [("output", pb.PORT_KIND_AUDIO), ("segments", pb.PORT_KIND_DATA)]


def test_a_plugin_node_is_served_with_its_declaration(srv: RunningServer) -> None:
    echo = server_catalogue(srv).get("EchoNode")
    assert echo is not None, "the plug-in declared in tests/plugins is served"
    assert echo.runtimes == ("python",)
    assert echo.description == "Repeats the audio after a delay, mixed in at a gain."
    props = echo.properties
    assert props["delay_ms"] == {"type": "integer", "minimum": 1, "maximum": 2000, "x-unit": "ms", "default": 250, "description": "echo delay"}
    assert props["mode"]["enum"] == ["mono", "stereo"]
    assert echo.required == ("gain",)
    assert [(p["name"], p["kind"]) for p in echo.outputs] == [("output", "audio"), ("echoes", "data")]


def test_a_plugin_without_a_docstring_is_served_without_its_base_classes_description(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "bare.py").write_text(
        "from remotemedia_nodes import Node, node\n\n\n"
        "class Documented(Node):\n"
        '    """A base with its own docstring.\n\n    Its details.\n    """\n\n'
        "    def process(self, inputs):\n"
        '        return {"output": inputs["input"]}\n\n\n'
        '@node("BareNode")\n'
        "class Bare(Node):\n"
        "    def process(self, inputs):\n"
        '        return {"output": inputs["input"]}\n\n\n'
        '@node("DerivedNode")\n'
        "class Derived(Documented):\n"
        "    pass\n"
    )
    s = start_server("--python-nodes-path", str(plugins))
    try:
        catalogue = server_catalogue(s)
        with Client(s.address) as client:
            result = client.run(Pipeline.chain(Node("BareNode", "bare"), Node("DerivedNode", "derived")), [0.25] * 4, sample_rate=16_000)
    finally:
        assert s.stop() == 0
    for name in ("BareNode", "DerivedNode"):
        entry = catalogue.get(name)
        assert entry is not None and (entry.description, entry.details) == ("", ""), entry
    assert result.audio["derived"].frames == 4


def test_the_python_client_builds_and_checks_a_plugin_pipeline_with_no_change(srv: RunningServer) -> None:
    assert not BUILTIN_CATALOGUE.knows("EchoNode")
    with Client(srv.address) as client:
        bad = Pipeline.chain(Node("EchoNode", "echo", gain=0.5, delay_ms=5000))
        with pytest.raises(ValidationError) as info:
            client.run(bad, [0.0] * 160, sample_rate=16_000)
        assert [v.field for v in info.value.violations] == ["nodes[0].params.delay_ms"]
        assert info.value.code is None, "refused by the client, before any call that runs it"
        result = client.run(Pipeline.chain(Node("EchoNode", "echo", gain=0.5)), [0.5] + [0.0] * 159, sample_rate=16_000)
    assert result.audio["echo"].frames == 160


def test_a_twin_is_refused_exactly_as_its_native_node() -> None:
    # AudioChunkerNode run by the Python runtime took chunk_samples 0 (then divided by it) and
    # 2^64+160; the native declaration now governs both runtimes.
    s = start_server()
    try:
        stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(s.address))
        for value in (0, 18446744073709551776):
            answers = []
            for runtime in (pb.RUNTIME_HINT_RUST, pb.RUNTIME_HINT_CPYTHON):
                m = manifest([node("c", "AudioChunkerNode", runtime=runtime, chunk_samples=value)])
                answers.append(first_answer(stub, m))
            assert answers[0] == answers[1], answers
            (field, message), = answers[0]
            assert field == "nodes[0].params.chunk_samples"
            assert "must be an integer between 1 and 10000000" in message
    finally:
        s.stop()


# --- the contract: server and both clients refuse the same inputs --------------------------


def first_answer(stub: Any, m: pb.PipelineManifest) -> list[tuple[str, str]]:
    """The violations the server answers a stream's manifest with ([] when it is ready)."""
    call = stub.StreamPipeline(iter([pb.StreamRequest(manifest=m)]), timeout=60)
    try:
        first = next(call)
    except grpc.RpcError as e:
        raise AssertionError(f"no answer to the manifest: {e}") from e
    finally:
        call.cancel()
    if first.WhichOneof("response") == "ready":
        return []
    assert first.WhichOneof("response") == "error", first
    return [(v["field"], v["description"]) for v in json.loads(first.error.context)["violations"]]


def valid_value(schema: dict[str, Any]) -> Any:
    if "default" in schema:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind in ("integer", "number"):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        value = lo if lo is not None else (hi if hi is not None else 1)
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    return "x"


def bad_values(schema: dict[str, Any]) -> list[tuple[str, Any]]:
    """Values a parameter of `schema` must refuse: a wrong type, and outside its range or choices."""
    kind = schema.get("type")
    out: list[tuple[str, Any]] = [("wrong type", 12345 if kind in ("string", "boolean") else "twelve")]
    if kind == "boolean":
        out[0] = ("wrong type", "yes")
    if "enum" in schema:
        choices = schema["enum"]
        out.append(("not a choice", max(choices) + 7 if kind == "integer" else "no-such-choice"))
    if kind in ("integer", "number"):
        if "maximum" in schema:
            out.append(("above the maximum", schema["maximum"] + 1 if kind == "integer" else schema["maximum"] * 2 + 1))
        if "minimum" in schema:
            out.append(("below the minimum", schema["minimum"] - 1 if kind == "integer" else schema["minimum"] - 1 - abs(schema["minimum"])))
        if kind == "integer":
            out.append(("not whole", (schema.get("minimum", 0) or 0) + 0.5))
    if kind == "string" and "maxLength" in schema:
        out.append(("too long", "x" * (schema["maxLength"] + 1)))
    return out


def cases(catalogue: Catalogue) -> list[dict[str, Any]]:
    """For every node type and parameter: params that must be refused naming that parameter."""
    out = []
    for t in catalogue:
        props = dict(t.properties)
        examples = t.params_schema.get("examples") or [{n: valid_value(props[n]) for n in t.required}]
        base = dict(examples[0])
        out.append({"type": t.name, "params": base, "refused": None, "why": "the valid example"})
        for name, schema in props.items():
            for why, value in bad_values(dict(schema)):
                out.append({"type": t.name, "params": {**base, name: value}, "refused": name, "why": why})
        out.append({"type": t.name, "params": {**base, UNKNOWN: 1}, "refused": UNKNOWN, "why": "an unknown parameter"})
        for group in t.exclusive:
            names = list(group["params"])
            together = {**base, **{n: valid_value(dict(props[n])) for n in names}}
            out.append({"type": t.name, "params": together, "refused": names[1], "why": "exclusive parameters together"})
            if group["required"]:
                none = {k: v for k, v in base.items() if k not in names}
                out.append({"type": t.name, "params": none, "refused": names[0], "why": "none of a required group"})
        for rule in t.above:
            than = base.get(rule["than"], valid_value(dict(props[rule["than"]])))
            equal = {**base, rule["than"]: than, rule["param"]: than}
            out.append({"type": t.name, "params": equal, "refused": rule["param"], "why": "a parameter not above the one it must exceed"})
    return out


def typescript_checks(catalogue_doc: dict[str, Any], all_cases: list[dict[str, Any]]) -> list[list[dict[str, str]]]:
    """What the TypeScript client's local check says about each case."""
    node_bin = shutil.which("node")
    assert node_bin and TS_DIST.exists(), f"{TS_DIST} is missing: `make ts-build` builds it (make test does)"
    script = f"""
import {{ BUILTIN_CATALOGUE, Catalogue }} from {json.dumps(TS_DIST.as_uri())};
const input = JSON.parse(await new Response(process.stdin).text());
const catalogue = BUILTIN_CATALOGUE.merged(Catalogue.fromJson(input.catalogue));
process.stdout.write(JSON.stringify(input.cases.map((c) => catalogue.check(c.type, c.params))));
"""
    done = subprocess.run(
        [node_bin, "--input-type=module", "-e", script],
        input=json.dumps({"catalogue": catalogue_doc, "cases": all_cases}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: list[list[dict[str, str]]] = json.loads(done.stdout)
    return result


def test_server_and_both_clients_refuse_the_same_inputs_naming_the_same_parameter(srv: RunningServer) -> None:
    catalogue = server_catalogue(srv)
    all_cases = cases(catalogue)
    assert len(all_cases) > 100 and {c["type"] for c in all_cases} >= {"AudioResampleNode", "VADNode", "EchoNode"}
    assert any(c["why"] == "a parameter not above the one it must exceed" for c in all_cases)
    doc = {"node_types": [{"name": t.name, "aliases": list(t.aliases), "description": t.description, "details": t.details,
                           "params_schema": dict(t.params_schema), "inputs": list(t.inputs), "outputs": list(t.outputs),
                           "runtimes": list(t.runtimes)} for t in catalogue]}
    ts = typescript_checks(doc, all_cases)
    stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(srv.address))
    failures = []
    for case, ts_problems in zip(all_cases, ts):
        label = f"{case['type']} {case['why']} {json.dumps(case['params'])[:80]}"
        server = first_answer(stub, manifest([pb.NodeManifest(id="n", node_type=case["type"], params=json.dumps(case["params"]))]))
        server_named = {f.removeprefix("nodes[0].params."): d.split(": parameter ", 1)[-1] for f, d in server}
        python_named = {p: f"`{p}` {problem}" for p, problem in catalogue.check(case["type"], case["params"])}
        ts_named = {p["param"]: f"`{p['param']}` {p['problem']}" for p in ts_problems}
        if case["refused"] is None:
            if server or python_named or ts_named:
                failures.append(f"{label}: refused (server {server}, python {python_named}, ts {ts_named})")
            continue
        name = case["refused"]
        if not (name in server_named and name in python_named and name in ts_named):
            failures.append(f"{label}: {name} named by server {sorted(server_named)}, python {sorted(python_named)}, ts {sorted(ts_named)}")
            continue
        if not (server_named[name] == python_named[name] == ts_named[name]):
            failures.append(f"{label}: the words differ:\n  {server_named[name]}\n  {python_named[name]}\n  {ts_named[name]}")
    assert not failures, "\n".join(failures)


def test_server_and_both_clients_agree_on_where_each_node_type_can_run(srv: RunningServer) -> None:
    # Every node type with each runtime hint: the server refuses a runtime the catalogue does
    # not list for the type, and so does each client's check before sending, on the same field.
    catalogue = server_catalogue(srv)
    stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(srv.address))
    hints = {"rust": pb.RUNTIME_HINT_RUST, "cpython": pb.RUNTIME_HINT_CPYTHON}
    cases = []
    for t in catalogue:
        params = dict((t.params_schema.get("examples") or [{n: valid_value(dict(t.properties[n])) for n in t.required}])[0])
        cases += [(t, params, runtime) for runtime in hints]
    node_bin = shutil.which("node")
    assert node_bin and TS_DIST.exists(), f"{TS_DIST} is missing: `make ts-build` builds it (make test does)"
    doc = {"node_types": [{"name": t.name, "aliases": list(t.aliases), "description": t.description, "details": t.details,
                           "params_schema": dict(t.params_schema), "inputs": list(t.inputs), "outputs": list(t.outputs),
                           "runtimes": list(t.runtimes)} for t in catalogue]}
    script = f"""
import {{ BUILTIN_CATALOGUE, Catalogue, Pipeline }} from {json.dumps(TS_DIST.as_uri())};
const input = JSON.parse(await new Response(process.stdin).text());
const catalogue = BUILTIN_CATALOGUE.merged(Catalogue.fromJson(input.catalogue));
process.stdout.write(JSON.stringify(input.cases.map(([type, params, runtime]) =>
  new Pipeline().node("n", type, params, {{ runtime }}).violations(catalogue))));
"""
    done = subprocess.run(
        [node_bin, "--input-type=module", "-e", script],
        input=json.dumps({"catalogue": doc, "cases": [[t.name, p, r] for t, p, r in cases]}),
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    ts_answers = json.loads(done.stdout)
    refused, failures = 0, []
    for (t, params, runtime), ts in zip(cases, ts_answers):
        m = manifest([pb.NodeManifest(id="n", node_type=t.name, params=json.dumps(params), runtime_hint=hints[runtime])])
        server = [f for f, _ in first_answer(stub, m)]
        python = [v.field for v in Pipeline.chain(Node(t.name, "n", runtime=runtime, params=params)).violations(catalogue)]
        typescript = [v["field"] for v in ts]
        listed = ("python" if runtime == "cpython" else "rust") in t.runtimes
        expected = [] if listed else ["nodes[0].runtime_hint"]
        refused += not listed
        if not server == python == typescript == expected:
            failures.append(f"{t.name} with {runtime}: server {server}, python {python}, ts {typescript}, catalogue {t.runtimes}")
    assert not failures, "\n".join(failures)
    assert refused >= 5, "the Python-only nodes (SileroVADNode and others) have no Rust runtime"


def test_docs_nodes_md_lists_every_node_and_parameter() -> None:
    text = (REPO / "docs" / "nodes.md").read_text()
    for t in BUILTIN_CATALOGUE:
        assert f"## {t.name}" in text
        for name in t.properties:
            assert f"| `{name}` |" in text, f"{t.name}.{name}"


def test_a_built_in_typed_builder_names_its_parameters() -> None:
    from remotemedia_client import AudioResampleNode

    doc = AudioResampleNode.__doc__ or ""
    assert "Sample-rate conversion" in doc and "``output_rate`` (integer, 1000–768000, in Hz, required)" in doc
    n = AudioResampleNode("rs", output_rate=16_000)
    assert (n.type, n.params) == ("AudioResampleNode", {"output_rate": 16_000})
