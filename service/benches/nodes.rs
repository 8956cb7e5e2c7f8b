//! Node and executor timings: `make bench` (or `cargo bench --bench nodes`).
//!
//! The inputs match `bench/compare_python.py`, which times the Python tools a user would
//! otherwise reach for on the same signals and prints the ratios.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use remotemedia::audio::{AudioBuffer, OutputArena, SampleFormat};
use remotemedia::graph::{CircuitBreakers, Engine, Feed, Manifest, Mode, RequestShape, RunLimits};
use remotemedia::grpc::convert::result_to_proto;
use remotemedia::nodes::{INPUT, Node, NodeContext, OUTPUT, PortValue, Ports, Registry, convert_format};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A 440 Hz + 3 kHz tone with a little noise, as in the Python script.
fn signal(rate: u32, frames: usize) -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..frames)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            let t = i as f32 / rate as f32;
            0.4 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
                + 0.2 * (2.0 * std::f32::consts::PI * 3_000.0 * t).sin()
                + 0.01 * noise
        })
        .collect()
}

fn create(node_type: &str, params: Value) -> Box<dyn Node> {
    Registry::builtin().native_factory(node_type).unwrap().build(params.as_object().unwrap()).unwrap()
}

fn inputs(a: &AudioBuffer) -> Ports {
    Ports::new().with(INPUT, PortValue::Audio(a.clone()))
}

fn resample(c: &mut Criterion) {
    let ctx = NodeContext::new("rs", "AudioResampleNode", CancellationToken::new());
    let one_second = AudioBuffer::from_f32(signal(48_000, 48_000), 48_000, 1);
    let mut g = c.benchmark_group("resample_48k_to_16k");
    for quality in ["high", "medium", "low"] {
        // A unary request: a fresh node (resampler planning included), process and flush.
        g.bench_function(format!("1s_{quality}_with_setup"), |b| {
            b.iter(|| {
                let mut n = create("AudioResampleNode", json!({"output_rate": 16_000, "quality": quality}));
                let mut out = n.process(inputs(&one_second), &ctx).unwrap();
                out.append(n.flush(&ctx).unwrap()).unwrap();
                black_box(out)
            })
        });
    }
    // A stream in steady state: 1 s worth of 20 ms chunks through one node.
    let chunk = AudioBuffer::from_f32(signal(48_000, 960), 48_000, 1);
    let mut n = create("AudioResampleNode", json!({"output_rate": 16_000}));
    g.bench_function("1s_high_streamed_in_20ms_chunks", |b| {
        b.iter(|| {
            for _ in 0..50 {
                black_box(n.process(inputs(&chunk), &ctx).unwrap());
            }
        })
    });
    // 200 streams served in turn, as a server with 200 live streams runs them: each node's
    // state (FFT plans, filter spectrum, scratch) has left the cache by its next chunk.
    let mut nodes: Vec<_> = (0..200).map(|_| create("AudioResampleNode", json!({"output_rate": 16_000}))).collect();
    g.bench_function("1s_high_streamed_in_20ms_chunks_200_streams_in_turn", |b| {
        let mut next = 0;
        b.iter(|| {
            for _ in 0..50 {
                next = (next + 1) % nodes.len();
                black_box(nodes[next].process(inputs(&chunk), &ctx).unwrap());
            }
        })
    });
    g.finish();
}

fn vad(c: &mut Criterion) {
    let ctx = NodeContext::new("vad", "VADNode", CancellationToken::new());
    let frame = AudioBuffer::from_f32(signal(16_000, 480), 16_000, 1);
    let mut n = create("VADNode", json!({"frame_ms": 30}));
    c.bench_function("vad_one_30ms_frame_16k", |b| b.iter(|| black_box(n.process(inputs(&frame), &ctx).unwrap())));
}

fn format(c: &mut Criterion) {
    let x: Vec<i16> = signal(16_000, 1_000_000).iter().map(|v| (v * 32_767.0) as i16).collect();
    let ints = AudioBuffer::from_i16(x, 16_000, 1);
    let floats = AudioBuffer::from_f32(signal(16_000, 1_000_000), 16_000, 1);
    let mut arena = OutputArena::new();
    let mut g = c.benchmark_group("format_1M_samples");
    g.bench_function("i16_to_f32", |b| b.iter(|| black_box(convert_format(&ints, SampleFormat::F32, &mut arena))));
    g.bench_function("f32_to_i16", |b| b.iter(|| black_box(convert_format(&floats, SampleFormat::I16, &mut arena))));
    g.finish();
}

fn executor(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let engine = Engine::new(Registry::builtin(), CircuitBreakers::default());
    let manifest = Manifest::new("bench")
        .node("in", "PassThroughNode", "")
        .node("gain", "GainNode", r#"{"gain_db": -3}"#)
        .node("out", "PassThroughNode", "")
        .connect("in", "gain")
        .connect("gain", "out");
    let mut pipeline = rt.block_on(engine.build(&manifest, &RequestShape::stream())).unwrap();
    let chunk = AudioBuffer::from_f32(signal(16_000, 320), 16_000, 1);
    let cancel = CancellationToken::new();
    c.bench_function("executor_3_node_chunk_20ms", |b| {
        b.iter_batched(
            || BTreeMap::from([("in".to_owned(), inputs(&chunk))]),
            |feed| rt.block_on(pipeline.run(feed, Mode::Chunk, RunLimits::default(), &cancel)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let shape = RequestShape { audio_inputs: Some(["in".to_owned()].into()), ..RequestShape::default() };
    c.bench_function("executor_build_3_node_pipeline", |b| {
        b.iter(|| black_box(rt.block_on(engine.build(&manifest, &shape)).unwrap()))
    });
}

/// The reference `bench/load.py` divides the server's CPU time by: the nodes' own work on one
/// second of 48 kHz audio through resample → VAD, in one call each on warm nodes (÷ 50 for a
/// 20 ms chunk), and the same second as 50 chunks through the executor, with each result
/// converted to its wire message as a session does (the executor's share of the overhead).
fn reference(c: &mut Criterion) {
    let mut g = c.benchmark_group("reference");
    let one_second = AudioBuffer::from_f32(signal(48_000, 48_000), 48_000, 1);
    let rs_ctx = NodeContext::new("rs", "AudioResampleNode", CancellationToken::new());
    let vad_ctx = NodeContext::new("vad", "VADNode", CancellationToken::new());
    let mut rs = create("AudioResampleNode", json!({"output_rate": 16_000}));
    let mut vad = create("VADNode", json!({}));
    g.bench_function("resample_vad_1s_in_one_call", |b| {
        b.iter(|| {
            let out = rs.process(inputs(&one_second), &rs_ctx).unwrap();
            let audio = out.audio(OUTPUT).unwrap().clone();
            black_box(vad.process(inputs(&audio), &vad_ctx).unwrap())
        })
    });

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let engine = Engine::new(Registry::builtin(), CircuitBreakers::default());
    let manifest = Manifest::new("bench")
        .node("rs", "AudioResampleNode", r#"{"output_rate": 16000}"#)
        .node("vad", "VADNode", "")
        .connect("rs", "vad");
    let mut pipeline = rt.block_on(engine.build(&manifest, &RequestShape::stream())).unwrap();
    let index = pipeline.index_of("rs").unwrap();
    let chunks: Vec<AudioBuffer> =
        signal(48_000, 48_000).chunks(960).map(|c| AudioBuffer::from_f32(c.to_vec(), 48_000, 1)).collect();
    let cancel = CancellationToken::new();
    let limits = RunLimits { timeout: Some(std::time::Duration::from_secs(10)), max_memory_bytes: Some(1 << 30) };
    g.bench_function("resample_vad_1s_as_50_chunks_through_the_executor", |b| {
        b.iter(|| {
            rt.block_on(async {
                for chunk in &chunks {
                    let feed = Feed::from_buf([(index, inputs(chunk))]);
                    let out = pipeline.run_fed(feed, Mode::Chunk, limits, &cancel).await.unwrap();
                    black_box(result_to_proto(&out, true, Default::default(), Default::default()));
                    pipeline.recycle(out);
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, resample, vad, format, executor, reference);
criterion_main!(benches);
