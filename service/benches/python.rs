//! The cost of Python nodes: one call into a trivial Python node from the executor, and each
//! Python implementation against its native twin on the same input. `make bench`.

use std::collections::BTreeMap;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use remotemedia::audio::AudioBuffer;
use remotemedia::graph::{CircuitBreakers, Engine, Manifest, Mode, Pipeline, RequestShape, RunLimits, RuntimeHint};
use remotemedia::nodes::{INPUT, PortValue, Ports, Registry};
use remotemedia::python::PythonRuntime;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

fn signal(rate: u32, frames: usize, channels: u32) -> AudioBuffer {
    let samples = (0..frames * channels as usize)
        .map(|i| {
            let t = (i / channels as usize) as f32 / rate as f32;
            0.3 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
                + 0.1 * (2.0 * std::f32::consts::PI * 2_500.0 * t).sin()
        })
        .collect();
    AudioBuffer::from_f32(samples, rate, channels)
}

fn engine() -> Engine {
    let mut registry = Registry::builtin();
    registry
        .attach_foreign(
            PythonRuntime::start(None, 2, &[], &Default::default()).expect("make venv sets up the Python environment"),
        )
        .expect("the Python twins agree with the native nodes");
    Engine::new(registry, CircuitBreakers::default())
}

fn pipeline(rt: &Runtime, engine: &Engine, node_type: &str, params: &str, hint: RuntimeHint, stream: bool) -> Pipeline {
    let mut m = Manifest::new("bench").node("n", node_type, params);
    m.nodes[0].runtime = hint;
    let shape = if stream {
        RequestShape::stream()
    } else {
        RequestShape { audio_inputs: Some(["n".to_owned()].into()), ..RequestShape::default() }
    };
    rt.block_on(engine.build(&m, &shape)).unwrap()
}

fn feed(audio: &AudioBuffer) -> BTreeMap<String, Ports> {
    BTreeMap::from([("n".to_owned(), Ports::new().with(INPUT, PortValue::Audio(audio.clone())))])
}

fn call_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let engine = engine();
    let chunk = signal(16_000, 320, 1);
    let cancel = CancellationToken::new();
    let py = PythonRuntime::start(None, 2, &[], &Default::default()).unwrap();
    c.bench_function("worker_round_trip_noop", |b| b.iter(|| rt.block_on(py.run(|_| 1))));
    let mut g = c.benchmark_group("call_20ms_chunk");
    for (name, hint) in [("python_passthrough", RuntimeHint::CPython), ("native_passthrough", RuntimeHint::Rust)] {
        let mut p = pipeline(&rt, &engine, "PassThroughNode", "", hint, true);
        g.bench_function(name, |b| {
            b.iter_batched(
                || feed(&chunk),
                |f| rt.block_on(p.run(f, Mode::Chunk, RunLimits::default(), &cancel)).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn twins(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let engine = engine();
    let cancel = CancellationToken::new();
    let cases: [(&str, &str, &str, AudioBuffer); 8] = [
        ("gain", "GainNode", r#"{"gain_db": -6}"#, signal(16_000, 16_000, 1)),
        ("format_to_i16", "FormatConverterNode", r#"{"target_format": "i16"}"#, signal(16_000, 16_000, 1)),
        ("mix_stereo_to_mono", "ChannelMixerNode", r#"{"output_channels": 1}"#, signal(48_000, 48_000, 2)),
        ("chunker_20ms", "AudioChunkerNode", r#"{"chunk_ms": 20}"#, signal(16_000, 16_000, 1)),
        ("resample_48k_16k", "AudioResampleNode", r#"{"output_rate": 16000}"#, signal(48_000, 48_000, 1)),
        ("vad", "VADNode", "{}", signal(16_000, 16_000, 1)),
        ("bandpass", "BandpassFilterNode", r#"{"low_hz": 300, "high_hz": 3400}"#, signal(16_000, 16_000, 1)),
        ("loudness", "LoudnessNode", "{}", signal(48_000, 48_000, 1)),
    ];
    let mut g = c.benchmark_group("one_second_python_vs_native");
    for (name, node_type, params, audio) in cases {
        let has_native = !matches!(node_type, "BandpassFilterNode" | "LoudnessNode");
        let hints: &[(&str, RuntimeHint)] = if has_native {
            &[("python", RuntimeHint::CPython), ("native", RuntimeHint::Rust)]
        } else {
            &[("python", RuntimeHint::CPython)]
        };
        for (runtime, hint) in hints {
            g.bench_function(format!("{name}/{runtime}"), |b| {
                b.iter_batched(
                    || (pipeline(&rt, &engine, node_type, params, *hint, false), feed(&audio)),
                    |(mut p, f)| rt.block_on(p.run(f, Mode::Once, RunLimits::default(), &cancel)).unwrap(),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();
}

criterion_group!(benches, call_overhead, twins);
criterion_main!(benches);
