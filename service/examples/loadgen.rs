//! Load driver for the benchmarks (`bench/load.py` runs it; see BENCHMARKS.md).
//!
//! ```text
//! loadgen stream --addr 127.0.0.1:50051 --streams 1000 --rate 50 --seconds 60 [--server-pid PID] [--transport websocket] [--runtime cpython] [--phase spread]
//! loadgen pingpong --addr 127.0.0.1:50051 --chunks 5000 [--transport websocket]
//! loadgen unary --addr 127.0.0.1:50051 --seconds 10 [--audio-seconds 1] [--concurrency 16]
//! ```
//!
//! `stream`: real-time streams of 20 ms 48 kHz chunks through resample (→ 16 kHz) + VAD, each
//! sending `rate` chunks per second; reports errors, out-of-order results and the round trip of
//! every chunk (send → its result). `pingpong`: one stream, each chunk sent when the previous
//! result arrives. `unary`: back-to-back ExecutePipeline of `audio-seconds` of 48 kHz audio
//! through the resampler from `concurrency` callers spread over up to `connections` connections,
//! reporting latency, requests per second and the server's serialization / wall time ratio.
//! Streams travel over HTTP/2 gRPC, or with `--transport websocket` over the server's WebSocket
//! endpoint (one connection per stream, as browsers have). With `--runtime cpython` the stream's
//! second node is the Python `GainNode` instead of the VAD, so the load measures the cost of a
//! Python node's call per chunk. The streams send in step (`--phase aligned`, the default: every
//! stream's chunk of a period leaves at once, the burstiest load) or with `--phase spread` at
//! start times spread evenly over one period, as independent live callers do. Output: one JSON
//! object on stdout.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use prost::Message as _;
use remotemedia::proto::pipeline_service_client::PipelineServiceClient;
use remotemedia::proto::{self, stream_request, stream_response};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tonic::Streaming;
use tonic::transport::Channel;

#[derive(Clone)]
struct Args {
    mode: String,
    addr: String,
    streams: usize,
    rate: u64,
    seconds: u64,
    chunks: u64,
    connections: usize,
    audio_seconds: u64,
    concurrency: usize,
    server_pid: Option<u32>,
    websocket: bool,
    /// The stream's second node: the native VAD, or a Python node (`cpython`).
    python: bool,
    /// Streams start their chunk clocks spread over one period instead of together.
    spread: bool,
}

fn parse() -> Args {
    let mut a = Args {
        mode: String::new(),
        addr: "127.0.0.1:50051".into(),
        streams: 100,
        rate: 50,
        seconds: 10,
        chunks: 2_000,
        connections: 16,
        audio_seconds: 1,
        concurrency: 1,
        server_pid: None,
        websocket: false,
        python: false,
        spread: false,
    };
    let mut it = std::env::args().skip(1);
    a.mode = it.next().unwrap_or_default();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => a.addr = value,
            "--streams" => a.streams = value.parse().unwrap(),
            "--rate" => a.rate = value.parse().unwrap(),
            "--seconds" => a.seconds = value.parse().unwrap(),
            "--chunks" => a.chunks = value.parse().unwrap(),
            "--connections" => a.connections = value.parse().unwrap(),
            "--audio-seconds" => a.audio_seconds = value.parse().unwrap(),
            "--concurrency" => a.concurrency = value.parse().unwrap(),
            "--server-pid" => a.server_pid = Some(value.parse().unwrap()),
            "--transport" => {
                a.websocket = match value.as_str() {
                    "grpc" => false,
                    "websocket" => true,
                    other => panic!("--transport is grpc or websocket, got {other}"),
                }
            }
            "--phase" => {
                a.spread = match value.as_str() {
                    "aligned" => false,
                    "spread" => true,
                    other => panic!("--phase is aligned or spread, got {other}"),
                }
            }
            "--runtime" => {
                a.python = match value.as_str() {
                    "rust" => false,
                    "cpython" => true,
                    other => panic!("--runtime is rust or cpython, got {other}"),
                }
            }
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn audio(frames: usize) -> proto::AudioBuffer {
    let samples: Vec<u8> = (0..frames)
        .flat_map(|i| ((i as f32 * 0.0575).sin() * 0.3 + (i as f32 * 0.39).sin() * 0.1).to_le_bytes())
        .collect();
    proto::AudioBuffer {
        samples: Bytes::from(samples),
        sample_rate: 48_000,
        channels: 1,
        format: proto::AudioFormat::F32 as i32,
        num_samples: frames as u64,
    }
}

fn node(id: &str, node_type: &str, params: &str) -> proto::NodeManifest {
    proto::NodeManifest { id: id.into(), node_type: node_type.into(), params: params.into(), ..Default::default() }
}

/// resample → VAD, or with `python` resample → the Python `GainNode`.
fn stream_manifest(python: bool) -> proto::PipelineManifest {
    let second = if python {
        proto::NodeManifest {
            runtime_hint: proto::RuntimeHint::Cpython as i32,
            ..node("vad", "GainNode", r#"{"gain_db": -6}"#)
        }
    } else {
        node("vad", "VADNode", "")
    };
    proto::PipelineManifest {
        version: "v1".into(),
        metadata: None,
        nodes: vec![node("rs", "AudioResampleNode", r#"{"output_rate": 16000}"#), second],
        connections: vec![proto::Connection { from: "rs".into(), to: "vad".into(), ..Default::default() }],
        config: Some(proto::PipelineConfig { enable_metrics: Some(false), ..Default::default() }),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(latencies_ms: &mut [f64]) -> serde_json::Value {
    latencies_ms.sort_by(|a, b| a.total_cmp(b));
    serde_json::json!({
        "count": latencies_ms.len(),
        "p50_ms": percentile(latencies_ms, 0.50),
        "p90_ms": percentile(latencies_ms, 0.90),
        "p99_ms": percentile(latencies_ms, 0.99),
        "max_ms": latencies_ms.last().copied().unwrap_or(f64::NAN),
    })
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

async fn channels(addr: &str, n: usize) -> Vec<Channel> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .initial_stream_window_size(1 << 20)
                .initial_connection_window_size(8 << 20)
                .connect()
                .await
                .expect("connect"),
        );
    }
    out
}

/// The sending half of a stream, over either transport.
enum Outbound {
    Grpc(tokio::sync::mpsc::Sender<proto::StreamRequest>),
    WebSocket(SplitSink<WebSocketStream<TcpStream>, Message>),
}

/// The receiving half of a stream, over either transport. The gRPC one is boxed: it is much the
/// larger, and each stream holds one for its whole life.
enum Inbound {
    Grpc(Box<Streaming<proto::StreamResponse>>),
    WebSocket(SplitStream<WebSocketStream<TcpStream>>),
}

impl Outbound {
    async fn send(&mut self, request: stream_request::Request) -> Result<(), String> {
        let message = proto::StreamRequest { request: Some(request) };
        match self {
            Outbound::Grpc(tx) => tx.send(message).await.map_err(|e| e.to_string()),
            Outbound::WebSocket(sink) => {
                sink.send(Message::Binary(message.encode_to_vec().into())).await.map_err(|e| e.to_string())
            }
        }
    }
}

impl Inbound {
    /// The next response; `None` once the stream ended with OK.
    async fn next(&mut self) -> Option<Result<proto::StreamResponse, String>> {
        match self {
            Inbound::Grpc(responses) => responses.next().await.map(|r| r.map_err(|s| format!("{s:?}"))),
            Inbound::WebSocket(frames) => loop {
                match frames.next().await? {
                    Ok(Message::Binary(data)) => {
                        return Some(proto::StreamResponse::decode(data).map_err(|e| e.to_string()));
                    }
                    Ok(Message::Close(Some(close))) if u16::from(close.code) != 1000 => {
                        return Some(Err(format!("closed {}: {}", u16::from(close.code), close.reason)));
                    }
                    Ok(Message::Close(_)) => return None,
                    Ok(_) => {}
                    Err(e) => return Some(Err(e.to_string())),
                }
            },
        }
    }
}

/// Opens a stream of the benchmark pipeline and waits for `ready`: a call on `channel`, or with
/// `--transport websocket` a WebSocket of its own.
async fn open_stream(args: &Args, channel: Option<Channel>) -> Result<(Outbound, Inbound), String> {
    let manifest = stream_request::Request::Manifest(stream_manifest(args.python));
    let (outbound, mut inbound) = if args.websocket {
        let mut request = format!("ws://{}/ws/StreamPipeline", args.addr).into_client_request().unwrap();
        request.headers_mut().insert(http::header::SEC_WEBSOCKET_PROTOCOL, "remotemedia.v1".parse().unwrap());
        let tcp = TcpStream::connect(&args.addr).await.map_err(|e| e.to_string())?;
        // As on the server's side: a small frame must not wait for the peer's delayed ACK.
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (socket, _) = tokio_tungstenite::client_async(request, tcp).await.map_err(|e| e.to_string())?;
        let (sink, frames) = socket.split();
        let mut outbound = Outbound::WebSocket(sink);
        outbound.send(manifest).await?;
        (outbound, Inbound::WebSocket(frames))
    } else {
        let channel = match channel {
            Some(c) => c,
            None => channels(&args.addr, 1).await.remove(0),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tx.send(proto::StreamRequest { request: Some(manifest) }).await.map_err(|e| e.to_string())?;
        let mut client = PipelineServiceClient::new(channel);
        let responses = client.stream_pipeline(ReceiverStream::new(rx)).await.map_err(|s| format!("{s:?}"))?;
        (Outbound::Grpc(tx), Inbound::Grpc(Box::new(responses.into_inner())))
    };
    match inbound.next().await {
        Some(Ok(proto::StreamResponse { response: Some(stream_response::Response::Ready(_)) })) => {}
        other => return Err(format!("expected ready, got {other:?}")),
    }
    Ok((outbound, inbound))
}

#[derive(Default)]
struct Totals {
    errors: AtomicU64,
    out_of_order: AtomicU64,
    results: AtomicU64,
}

/// One real-time stream: sends a chunk every 1/rate s, matches results to send times. With
/// `--phase spread`, stream `index` of `args.streams` starts `index / streams` of a period late.
async fn realtime_stream(
    channel: Channel,
    index: usize,
    args: Args,
    totals: Arc<Totals>,
    latencies: Arc<Mutex<Vec<f64>>>,
    ready: Arc<tokio::sync::Barrier>,
) {
    let (mut outbound, mut responses) = match open_stream(&args, Some(channel)).await {
        Ok(stream) => stream,
        Err(_) => {
            totals.errors.fetch_add(1, Ordering::Relaxed);
            ready.wait().await;
            return;
        }
    };
    ready.wait().await;
    let sent: Arc<Mutex<VecDeque<(u64, Instant)>>> = Arc::new(Mutex::new(VecDeque::new()));
    let chunk = audio(960);
    let total = args.rate * args.seconds;
    let sender = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let period = Duration::from_micros(1_000_000 / args.rate);
            let offset = if args.spread { period * index as u32 / args.streams as u32 } else { Duration::ZERO };
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for seq in 0..total {
                ticker.tick().await;
                sent.lock().await.push_back((seq, Instant::now()));
                let msg = proto::AudioChunk { node_id: "rs".into(), buffer: Some(chunk.clone()), sequence: seq };
                if outbound.send(stream_request::Request::AudioChunk(msg)).await.is_err() {
                    return;
                }
            }
            let close = proto::StreamControl { command: proto::stream_control::Command::Close as i32 };
            let _ = outbound.send(stream_request::Request::Control(close)).await;
        })
    };
    let mut local = Vec::with_capacity(total as usize);
    let mut expected = 0;
    while let Some(message) = responses.next().await {
        match message {
            Ok(proto::StreamResponse { response: Some(stream_response::Response::Result(r)) }) if expected < total => {
                let at = Instant::now();
                if let Some((seq, when)) = sent.lock().await.pop_front() {
                    if seq != r.sequence {
                        totals.out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                    local.push(at.duration_since(when).as_secs_f64() * 1e3);
                }
                expected += 1;
                totals.results.fetch_add(1, Ordering::Relaxed);
            }
            Ok(proto::StreamResponse { response: Some(stream_response::Response::Error(_)) }) | Err(_) => {
                totals.errors.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
        }
    }
    let _ = sender.await;
    if expected != total {
        totals.errors.fetch_add(1, Ordering::Relaxed);
    }
    latencies.lock().await.extend(local);
}

async fn stream_mode(args: Args) -> serde_json::Value {
    let chans = channels(&args.addr, args.connections).await;
    let idle_rss = args.server_pid.and_then(rss_bytes);
    let totals = Arc::new(Totals::default());
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let ready = Arc::new(tokio::sync::Barrier::new(args.streams + 1));
    let tasks: Vec<_> = (0..args.streams)
        .map(|i| {
            tokio::spawn(realtime_stream(
                chans[i % chans.len()].clone(),
                i,
                args.clone(),
                totals.clone(),
                latencies.clone(),
                ready.clone(),
            ))
        })
        .collect();
    ready.wait().await;
    let started = Instant::now();
    // Sample the server's memory halfway through, with every stream open.
    tokio::time::sleep(Duration::from_secs(args.seconds / 2)).await;
    let busy_rss = args.server_pid.and_then(rss_bytes);
    for t in tasks {
        let _ = t.await;
    }
    let mut all = std::mem::take(&mut *latencies.lock().await);
    serde_json::json!({
        "mode": "stream",
        "transport": if args.websocket { "websocket" } else { "grpc" },
        "streams": args.streams,
        "phase": if args.spread { "spread" } else { "aligned" },
        "chunks_per_second_each": args.rate,
        "seconds": started.elapsed().as_secs_f64(),
        "results": totals.results.load(Ordering::Relaxed),
        "errors": totals.errors.load(Ordering::Relaxed),
        "out_of_order": totals.out_of_order.load(Ordering::Relaxed),
        "round_trip": summary(&mut all),
        "server_rss_idle_bytes": idle_rss,
        "server_rss_busy_bytes": busy_rss,
        "rss_per_stream_bytes": match (idle_rss, busy_rss) {
            (Some(i), Some(b)) => Some(b.saturating_sub(i) / args.streams as u64),
            _ => None,
        },
    })
}

async fn pingpong_mode(args: Args) -> serde_json::Value {
    let (mut outbound, mut responses) = open_stream(&args, None).await.expect("the stream opens");
    let chunk = audio(960);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for seq in 0..args.chunks + 200 {
        let start = Instant::now();
        let msg = proto::AudioChunk { node_id: "rs".into(), buffer: Some(chunk.clone()), sequence: seq };
        outbound.send(stream_request::Request::AudioChunk(msg)).await.unwrap();
        // The periodic metrics are no answer to the chunk: the result comes after them.
        let answer = loop {
            match responses.next().await {
                Some(Ok(proto::StreamResponse { response: Some(stream_response::Response::Metrics(_)) })) => {}
                other => break other,
            }
        };
        match answer {
            Some(Ok(proto::StreamResponse { response: Some(stream_response::Response::Result(r)) }))
                if r.sequence == seq =>
            {
                if seq >= 200 {
                    latencies.push(start.elapsed().as_secs_f64() * 1e3);
                }
            }
            _ => errors += 1,
        }
    }
    let transport = if args.websocket { "websocket" } else { "grpc" };
    serde_json::json!({ "mode": "pingpong", "transport": transport, "errors": errors, "round_trip": summary(&mut latencies) })
}

/// What one unary caller saw.
#[derive(Default)]
struct UnaryTally {
    latencies: Vec<f64>,
    serialization_ms: f64,
    wall_ms: f64,
    errors: u64,
    calls: u64,
}

async fn unary_caller(
    mut client: PipelineServiceClient<Channel>,
    request: proto::ExecuteRequest,
    warmup: usize,
    until: Instant,
) -> UnaryTally {
    let mut t = UnaryTally::default();
    let mut n = 0;
    while Instant::now() < until {
        let start = Instant::now();
        match client.execute_pipeline(request.clone()).await.map(|r| r.into_inner().outcome) {
            Ok(Some(proto::execute_response::Outcome::Result(r))) => {
                if n >= warmup {
                    t.latencies.push(start.elapsed().as_secs_f64() * 1e3);
                    let m = r.metrics.unwrap_or_default();
                    t.serialization_ms += m.serialization_time_ms;
                    t.wall_ms += m.wall_time_ms;
                }
                n += 1;
            }
            _ => t.errors += 1,
        }
    }
    t.calls = n as u64;
    t
}

async fn unary_mode(args: Args) -> serde_json::Value {
    let concurrency = args.concurrency.max(1);
    let conns = channels(&args.addr, args.connections.clamp(1, concurrency)).await;
    let request = proto::ExecuteRequest {
        manifest: Some(proto::PipelineManifest {
            version: "v1".into(),
            metadata: None,
            nodes: vec![node("rs", "AudioResampleNode", r#"{"output_rate": 16000}"#)],
            connections: vec![],
            config: None,
        }),
        audio_inputs: [("rs".to_owned(), audio(48_000 * args.audio_seconds as usize))].into(),
        ..Default::default()
    };
    // The first calls of each caller warm connections and the server's resampler pool.
    let warmup = (50 / concurrency).max(3);
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let callers: Vec<_> = (0..concurrency)
        .map(|i| {
            let client = PipelineServiceClient::new(conns[i % conns.len()].clone());
            tokio::spawn(unary_caller(client, request.clone(), warmup, until))
        })
        .collect();
    let mut all = UnaryTally::default();
    for caller in callers {
        let t = caller.await.expect("unary caller panicked");
        all.latencies.extend(t.latencies);
        all.serialization_ms += t.serialization_ms;
        all.wall_ms += t.wall_ms;
        all.errors += t.errors;
        all.calls += t.calls;
    }
    serde_json::json!({
        "mode": "unary",
        "audio_seconds": args.audio_seconds,
        "concurrency": concurrency,
        "errors": all.errors,
        "rps": all.calls as f64 / started.elapsed().as_secs_f64(),
        "latency": summary(&mut all.latencies),
        "server_serialization_over_wall": if all.wall_ms > 0.0 { all.serialization_ms / all.wall_ms } else { 0.0 },
    })
}

#[tokio::main]
async fn main() {
    let args = parse();
    let result = match args.mode.as_str() {
        "stream" => stream_mode(args).await,
        "pingpong" => pingpong_mode(args).await,
        "unary" => unary_mode(args).await,
        other => panic!("mode must be stream, pingpong or unary, got {other:?}"),
    };
    println!("{result}");
}
