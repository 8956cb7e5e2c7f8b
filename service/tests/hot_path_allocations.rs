//! In steady state, processing a stream chunk allocates nothing: every native node reuses its
//! buffers, and its outputs come from an arena whose memory is reclaimed once the previous
//! outputs are dropped. A counting allocator, switched on for the calling thread only around
//! the measured calls, proves it for each node and for a session's whole chunk path (wire
//! buffer to executor run to wire result).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use remotemedia::audio::{AudioBuffer, OutputArena};
use remotemedia::graph::{CircuitBreakers, Engine, Feed, Manifest, Mode, RequestShape, RunLimits};
use remotemedia::grpc::convert::{audio_from_proto, audio_to_proto, result_to_proto};
use remotemedia::nodes::{INPUT, Node, NodeContext, PortValue, Ports, Registry};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are plain
// thread-local cells that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by `process` over the measured chunks (after a warm-up), and how many of
/// those calls produced output audio.
fn steady_state_allocations(node_type: &str, params: Value, chunk: impl Fn(usize) -> AudioBuffer) -> (u64, usize) {
    let registry = Registry::builtin();
    let factory = registry.native_factory(node_type).unwrap();
    let mut node: Box<dyn Node> = factory.build(params.as_object().unwrap()).unwrap();
    let ctx = NodeContext::new("n", node_type, CancellationToken::new());
    let (warmup, measured) = (100, 400);
    let mut total = 0;
    let mut produced = 0;
    for i in 0..warmup + measured {
        let inputs = Ports::new().with(INPUT, PortValue::Audio(chunk(i)));
        COUNTING.with(|c| c.set(i >= warmup));
        let before = ALLOCATIONS.with(Cell::get);
        let outputs = node.process(inputs, &ctx).unwrap();
        total += ALLOCATIONS.with(Cell::get) - before;
        COUNTING.with(|c| c.set(false));
        if i >= warmup && outputs.audio(remotemedia::nodes::OUTPUT).is_ok_and(|a| !a.is_empty()) {
            produced += 1;
        }
        drop(outputs);
    }
    (total, produced)
}

/// A 20 ms chunk of a 440 Hz tone at `rate`, continuing across chunks.
fn tone(rate: u32, channels: u32) -> impl Fn(usize) -> AudioBuffer {
    move |i| {
        let n = rate as usize / 50;
        let samples = (0..n * channels as usize)
            .map(|k| {
                let t = (i * n + k / channels as usize) as f32 / rate as f32;
                0.3 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
            })
            .collect();
        AudioBuffer::from_f32(samples, rate, channels)
    }
}

/// The tone of [`tone`] with a 4 Hz syllable-rate envelope, as speech has: the VAD keeps one
/// segment open over it. (A steady tone becomes background after the VAD's 3 s adaptation
/// window, and the segment it closes is output, which allocates.)
fn syllables(rate: u32) -> impl Fn(usize) -> AudioBuffer {
    let carrier = tone(rate, 1);
    move |i| {
        let a = carrier(i);
        let n = a.frames();
        let samples = a
            .as_f32()
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let t = (i * n + k) as f32 / rate as f32;
                s * (0.6 + 0.4 * (2.0 * std::f32::consts::PI * 4.0 * t).sin())
            })
            .collect();
        AudioBuffer::from_f32(samples, rate, 1)
    }
}

type ChunkSource = Box<dyn Fn(usize) -> AudioBuffer>;

#[test]
fn native_nodes_do_not_allocate_per_chunk() {
    let cases: Vec<(&str, Value, ChunkSource)> = vec![
        ("AudioResampleNode", json!({"output_rate": 16_000}), Box::new(tone(48_000, 1))),
        ("AudioResampleNode", json!({"output_rate": 44_100, "quality": "medium"}), Box::new(tone(48_000, 2))),
        ("VADNode", json!({}), Box::new(syllables(16_000))),
        ("FormatConverterNode", json!({"target_format": "i16"}), Box::new(tone(16_000, 1))),
        ("ChannelMixerNode", json!({"output_channels": 1}), Box::new(tone(48_000, 2))),
        ("ChannelMixerNode", json!({"output_channels": 2}), Box::new(tone(48_000, 1))),
        ("ChannelMixerNode", json!({"output_channels": 2}), Box::new(tone(48_000, 6))),
        ("AudioChunkerNode", json!({"chunk_ms": 50}), Box::new(tone(16_000, 1))),
        ("GainNode", json!({"gain_db": -3}), Box::new(tone(16_000, 1))),
        ("PassThroughNode", json!({}), Box::new(tone(16_000, 1))),
    ];
    for (node_type, params, chunk) in cases {
        let (n, produced) = steady_state_allocations(node_type, params.clone(), chunk);
        assert_eq!(n, 0, "{node_type} {params} allocated {n} times in 400 chunks");
        assert!(produced >= 100, "{node_type} {params} produced output on only {produced} of 400 chunks");
    }
}

/// Allocations of one stream chunk's whole path in a session, after a warm-up: the chunk's wire
/// buffer viewed as audio, the resample → VAD pipeline run in chunk mode (timeout and memory
/// limit armed, as sessions run it), and the result converted back to its wire message.
#[test]
fn a_stream_chunk_through_resample_and_vad_does_not_allocate() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let engine = Engine::new(Registry::builtin(), CircuitBreakers::default());
    let manifest = Manifest::new("chunk-path")
        .node("rs", "AudioResampleNode", r#"{"output_rate": 16000}"#)
        .node("vad", "VADNode", "")
        .connect("rs", "vad");
    let mut pipeline = rt.block_on(engine.build(&manifest, &RequestShape::stream())).unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let limits = RunLimits { timeout: Some(Duration::from_secs(10)), max_memory_bytes: Some(1 << 30) };
    let source = syllables(48_000);
    let rs = pipeline.index_of("rs").unwrap();
    let (warmup, measured) = (100, 400);
    // One task runs every chunk, as a session does (each `block_on` would box its future).
    let mut inputs = OutputArena::new();
    let (executor, conversion, produced) = rt.block_on(async {
        let (mut executor, mut conversion, mut produced) = (0, 0, 0);
        for i in 0..warmup + measured {
            // The wire message is built outside the count: in the server, the transport decodes it.
            // Every other chunk's samples start at an odd address, as bytes cut out of a request
            // frame can: the session copies them to aligned memory, which must not allocate either.
            let mut wire = audio_to_proto(&source(i));
            if i % 2 == 1 {
                let mut shifted = bytes::BytesMut::with_capacity(wire.samples.len() + 1);
                shifted.extend_from_slice(&[0]);
                shifted.extend_from_slice(&wire.samples);
                wire.samples = shifted.freeze().slice(1..);
                assert!(wire.samples.as_ptr().addr() % 2 == 1);
            }
            COUNTING.with(|c| c.set(i >= warmup));
            let before = ALLOCATIONS.with(Cell::get);
            let audio = inputs.aligned(audio_from_proto(&wire, "audio_chunk").unwrap());
            let feed = Feed::from_buf([(rs, Ports::new().with(INPUT, PortValue::Audio(audio)))]);
            let out = pipeline.run_fed(feed, Mode::Chunk, limits, &cancel).await.unwrap();
            let ran = ALLOCATIONS.with(Cell::get);
            let message = result_to_proto(&out, true, Duration::ZERO, Duration::ZERO);
            pipeline.recycle(out);
            let converted = ALLOCATIONS.with(Cell::get);
            COUNTING.with(|c| c.set(false));
            executor += ran - before;
            conversion += converted - ran;
            if i >= warmup && message.audio_outputs.contains_key("vad") {
                produced += 1;
            }
        }
        (executor, conversion, produced)
    });
    assert_eq!(executor, 0, "decoding and running a chunk allocated {executor} times in {measured} chunks");
    // The result message owns its strings and maps (prost's types): `audio_outputs` (table and
    // key), `node_results` (vector, and per node its id and `output_metadata`), and with
    // metrics `node_metrics` (table, and per node its key and `custom_metrics`).
    const RESULT_MESSAGE: u64 = 2 + (1 + 2 * 2) + (1 + 2 * 2);
    assert_eq!(
        conversion,
        RESULT_MESSAGE * measured as u64,
        "the result message allocated {conversion} times in {measured} chunks, not {RESULT_MESSAGE} per chunk"
    );
    assert!(produced >= 100, "the pipeline returned audio on only {produced} of {measured} chunks");
}

#[test]
fn the_counter_does_count() {
    COUNTING.with(|c| c.set(true));
    let before = ALLOCATIONS.with(Cell::get);
    let v = std::hint::black_box(vec![1u8; 64]);
    let after = ALLOCATIONS.with(Cell::get);
    COUNTING.with(|c| c.set(false));
    drop(v);
    assert_eq!(after - before, 1);
}
