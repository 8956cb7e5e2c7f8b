//! `StreamPipeline` over WebSocket with the server in process: 200 real-time WebSocket streams
//! alongside gRPC streams under one concurrency cap, keepalive, the idle timeout, a disconnect
//! in the middle of a chunk, connection age, and shutdown. The protocol's other cases are tested
//! against the binary (tests/test_websocket.py).

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use prost::Message as _;
use remotemedia::proto::{
    self, AudioChunk, StreamControl, StreamRequest, StreamResponse, stream_control, stream_request, stream_response,
};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket = WebSocketStream<TcpStream>;

/// What the server sent next: a response, or its close frame.
#[derive(Debug)]
enum Event {
    Response(stream_response::Response),
    Closed(u16, String),
    Ping,
}

async fn open_ws(s: &TestServer) -> Socket {
    let mut request = format!("ws://{}/ws/StreamPipeline", s.addr).into_client_request().unwrap();
    request.headers_mut().insert(http::header::SEC_WEBSOCKET_PROTOCOL, "remotemedia.v1".parse().unwrap());
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let (socket, response) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    assert_eq!(response.headers()[http::header::SEC_WEBSOCKET_PROTOCOL], "remotemedia.v1");
    socket
}

async fn send(ws: &mut Socket, request: stream_request::Request) {
    let message = StreamRequest { request: Some(request) };
    ws.send(Message::Binary(message.encode_to_vec().into())).await.unwrap();
}

async fn next(ws: &mut Socket) -> Event {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(data))) => {
                let response = StreamResponse::decode(data).unwrap().response.expect("a response is set");
                return Event::Response(response);
            }
            Some(Ok(Message::Close(Some(frame)))) => return Event::Closed(frame.code.into(), frame.reason.to_string()),
            Some(Ok(Message::Ping(_))) => return Event::Ping,
            Some(Ok(Message::Pong(_))) => {}
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

/// The next response or close, skipping pings.
async fn next_event(ws: &mut Socket) -> Event {
    loop {
        match next(ws).await {
            Event::Ping => {}
            event => return event,
        }
    }
}

async fn ready(ws: &mut Socket, m: proto::PipelineManifest) {
    send(ws, stream_request::Request::Manifest(m)).await;
    match next_event(ws).await {
        Event::Response(stream_response::Response::Ready(r)) => assert!(!r.session_id.is_empty()),
        other => panic!("expected ready, got {other:?}"),
    }
}

fn chunk(node: &str, sequence: u64, audio: proto::AudioBuffer) -> stream_request::Request {
    stream_request::Request::AudioChunk(AudioChunk { node_id: node.into(), buffer: Some(audio), sequence })
}

fn close_request() -> stream_request::Request {
    stream_request::Request::Control(StreamControl { command: stream_control::Command::Close as i32 })
}

fn speech_pipeline() -> proto::PipelineManifest {
    manifest(
        vec![node("rs", "AudioResampleNode", r#"{"output_rate": 16000}"#), node("vad", "VADNode", "")],
        vec![connect("rs", "vad")],
    )
}

const STREAMS_WS: usize = 200;
const STREAMS_GRPC: usize = 40;
const CHUNKS: u64 = 100;

fn tone() -> proto::AudioBuffer {
    let samples: Vec<f32> = (0..960).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
    f32_audio(&samples, 48_000, 1)
}

/// One WebSocket stream: open, wait at `all_open`, then 100 chunks at 50 per second.
async fn one_ws_stream(
    s: Arc<TestServer>,
    index: usize,
    all_open: Arc<Barrier>,
    go: Arc<Barrier>,
) -> Result<(), String> {
    let mut ws = open_ws(&s).await;
    ready(&mut ws, speech_pipeline()).await;
    all_open.wait().await;
    go.wait().await;
    let (mut sink, mut stream) = ws.split();
    let sender = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        for seq in 0..CHUNKS {
            ticker.tick().await;
            let message = StreamRequest { request: Some(chunk("rs", seq, tone())) };
            sink.send(Message::Binary(message.encode_to_vec().into())).await.map_err(|e| e.to_string())?;
        }
        let message = StreamRequest { request: Some(close_request()) };
        sink.send(Message::Binary(message.encode_to_vec().into())).await.map_err(|e| e.to_string())
    });
    let mut expected = 0;
    let mut final_chunks = None;
    let close = loop {
        match stream.next().await {
            Some(Ok(Message::Binary(data))) => {
                match StreamResponse::decode(data).map_err(|e| e.to_string())?.response {
                    Some(stream_response::Response::Result(r)) if expected < CHUNKS => {
                        if r.sequence != expected {
                            return Err(format!("ws {index}: result {} arrived when {expected} was due", r.sequence));
                        }
                        expected += 1;
                    }
                    Some(stream_response::Response::Result(_)) => {} // the flush result after close
                    Some(stream_response::Response::Metrics(m)) => final_chunks = Some(m.chunks_processed),
                    other => return Err(format!("ws {index}: unexpected {other:?}")),
                }
            }
            Some(Ok(Message::Close(frame))) => break frame.map(|f| (u16::from(f.code), f.reason.to_string())),
            Some(Ok(_)) => {}
            other => return Err(format!("ws {index}: the connection ended without a close: {other:?}")),
        }
    };
    sender.await.map_err(|e| e.to_string())??;
    if expected != CHUNKS || final_chunks != Some(CHUNKS) || close != Some((1000, "OK".into())) {
        return Err(format!("ws {index}: {expected} results, final metrics {final_chunks:?}, close {close:?}"));
    }
    Ok(())
}

/// One gRPC stream, opened and run alongside the WebSocket ones.
async fn one_grpc_stream(
    channel: tonic::transport::Channel,
    index: usize,
    all_open: Arc<Barrier>,
    go: Arc<Barrier>,
) -> Result<(), String> {
    let mut client = proto::pipeline_service_client::PipelineServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(StreamRequest { request: Some(stream_request::Request::Manifest(speech_pipeline())) }).await.unwrap();
    let mut responses = client.stream_pipeline(ReceiverStream::new(rx)).await.map_err(|e| e.to_string())?.into_inner();
    match responses.next().await {
        Some(Ok(StreamResponse { response: Some(stream_response::Response::Ready(_)) })) => {}
        other => return Err(format!("grpc {index}: expected ready, got {other:?}")),
    }
    all_open.wait().await;
    go.wait().await;
    let sender = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        for seq in 0..CHUNKS {
            ticker.tick().await;
            let _ = tx.send(StreamRequest { request: Some(chunk("rs", seq, tone())) }).await;
        }
        let _ = tx.send(StreamRequest { request: Some(close_request()) }).await;
    });
    let mut results = 0;
    while let Some(message) = responses.next().await {
        match message.map_err(|s| format!("grpc {index}: {s:?}"))?.response {
            Some(stream_response::Response::Result(r)) if r.sequence < CHUNKS => results += 1,
            Some(stream_response::Response::Error(e)) => return Err(format!("grpc {index}: {}", e.message)),
            _ => {}
        }
    }
    sender.await.map_err(|e| e.to_string())?;
    if results != CHUNKS {
        return Err(format!("grpc {index}: {results} results"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_websocket_streams_run_alongside_grpc_streams_under_one_cap() {
    let cap = (STREAMS_WS + STREAMS_GRPC).to_string();
    let s = Arc::new(start(&[("max_concurrent_streams", cap.as_str())]).await);
    let channel = s.channel().await;
    let all_open = Arc::new(Barrier::new(STREAMS_WS + STREAMS_GRPC + 1));
    let go = Arc::new(Barrier::new(STREAMS_WS + STREAMS_GRPC + 1));
    let mut tasks = Vec::new();
    for i in 0..STREAMS_WS {
        tasks.push(tokio::spawn(one_ws_stream(s.clone(), i, all_open.clone(), go.clone())));
    }
    for i in 0..STREAMS_GRPC {
        tasks.push(tokio::spawn(one_grpc_stream(channel.clone(), i, all_open.clone(), go.clone())));
    }
    all_open.wait().await;

    // Every slot is taken, by both kinds: one more of either kind is refused.
    assert_eq!(s.state.sessions.count(), STREAMS_WS + STREAMS_GRPC);
    let mut extra = open_ws(&s).await;
    match next_event(&mut extra).await {
        Event::Response(stream_response::Response::Error(e)) => assert!(e.message.contains("max_concurrent_streams")),
        other => panic!("expected the in-band refusal, got {other:?}"),
    }
    match next_event(&mut extra).await {
        Event::Closed(code, reason) => {
            assert_eq!(code, 4008);
            assert!(
                reason.starts_with("RESOURCE_EXHAUSTED: ") && reason.contains("max_concurrent_streams"),
                "{reason}"
            );
        }
        other => panic!("expected the close, got {other:?}"),
    }
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(StreamRequest { request: Some(stream_request::Request::Manifest(speech_pipeline())) }).await.unwrap();
    let mut client = proto::pipeline_service_client::PipelineServiceClient::new(channel.clone());
    let refused = client.stream_pipeline(ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");

    go.wait().await;
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{} streams failed; first: {:?}", failures.len(), failures.first());
    s.wait_sessions(0).await;
    let text = s.metrics_text().await;
    assert!(text.lines().any(|l| l == "remotemedia_active_streams 0"), "{text}");
    Arc::into_inner(s).expect("every task is done").stop().await;
}

#[tokio::test]
async fn a_client_that_answers_no_ping_is_closed_and_one_that_reads_stays() {
    let s = start(&[("keepalive_interval_ms", "100"), ("keepalive_timeout_ms", "100")]).await;
    // Sends its manifest, then never reads: its pongs never come.
    let mut silent = open_ws(&s).await;
    send(&mut silent, stream_request::Request::Manifest(gain_manifest())).await;
    let mut reader = open_ws(&s).await;
    ready(&mut reader, gain_manifest()).await;

    // Reading answers the server's pings; the silent client's session goes meanwhile.
    let mut pings = 0;
    while pings < 5 {
        if let Event::Ping = next(&mut reader).await {
            pings += 1;
        }
    }
    s.wait_sessions(1).await;
    send(&mut reader, chunk("g", 0, f32_audio(&[0.5; 16], 16_000, 1))).await;
    match next_event(&mut reader).await {
        Event::Response(stream_response::Response::Result(r)) => assert_eq!(r.sequence, 0),
        other => panic!("expected a result, got {other:?}"),
    }
    drop(silent);
    drop(reader);
    s.wait_sessions(0).await;
    s.stop().await;
}

fn gain_manifest() -> proto::PipelineManifest {
    manifest(vec![node("g", "GainNode", r#"{"gain_db": 0}"#)], vec![])
}

#[tokio::test]
async fn an_idle_session_is_closed_naming_the_limit() {
    let s = start(&[("stream_idle_timeout_ms", "300")]).await;
    let mut ws = open_ws(&s).await;
    ready(&mut ws, gain_manifest()).await;
    match next_event(&mut ws).await {
        Event::Response(stream_response::Response::Error(e)) => assert!(e.message.contains("stream_idle_timeout_ms")),
        other => panic!("expected the in-band error, got {other:?}"),
    }
    match next_event(&mut ws).await {
        Event::Closed(code, reason) => {
            assert_eq!(code, 4008);
            assert!(reason.contains("stream_idle_timeout_ms"), "{reason}");
        }
        other => panic!("expected the close, got {other:?}"),
    }
    s.wait_sessions(0).await;
    s.stop().await;
}

#[tokio::test]
async fn a_disconnect_in_the_middle_of_a_chunk_cancels_it_at_once() {
    let (s, gate) = gated_server(&[]).await;
    let mut ws = open_ws(&s).await;
    ready(&mut ws, manifest(vec![node("gate", "TestGate", "")], vec![])).await;
    send(&mut ws, chunk("gate", 0, f32_audio(&[0.0; 16], 16_000, 1))).await;
    wait_until(|| gate.entered.load(Ordering::SeqCst) == 1, "the chunk at the gate").await;

    drop(ws);

    wait_until(|| gate.cancelled.load(Ordering::SeqCst) == 1, "the chunk cancelled").await;
    s.wait_sessions(0).await;
    assert!(!gate.open.load(Ordering::SeqCst));
    s.stop().await;
}

#[tokio::test]
async fn max_connection_age_leaves_an_upgraded_session_alone() {
    // The age closes HTTP connections gracefully; an upgraded socket is a session, which ends
    // with its stream.
    let s = start(&[("max_connection_age_ms", "100")]).await;
    let mut ws = open_ws(&s).await;
    ready(&mut ws, gain_manifest()).await;
    for sequence in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        send(&mut ws, chunk("g", sequence, f32_audio(&[0.5; 16], 16_000, 1))).await;
        loop {
            match next_event(&mut ws).await {
                Event::Response(stream_response::Response::Result(r)) => break assert_eq!(r.sequence, sequence),
                Event::Response(stream_response::Response::Metrics(_)) => {} // periodic, on a slow machine
                other => panic!("expected result {sequence}, got {other:?}"),
            }
        }
    }
    send(&mut ws, close_request()).await;
    loop {
        match next_event(&mut ws).await {
            Event::Closed(code, reason) => break assert_eq!((code, reason.as_str()), (1000, "OK")),
            Event::Response(stream_response::Response::Metrics(m)) => assert_eq!(m.chunks_processed, 5),
            other => panic!("expected the final metrics and the close, got {other:?}"),
        }
    }
    s.wait_sessions(0).await;
    s.stop().await;
}

#[tokio::test]
async fn shutdown_ends_websocket_sessions_with_final_metrics_and_unavailable() {
    let mut s = start(&[]).await;
    let mut ws = open_ws(&s).await;
    ready(&mut ws, gain_manifest()).await;
    send(&mut ws, chunk("g", 0, f32_audio(&[0.5; 16], 16_000, 1))).await;
    assert!(matches!(next_event(&mut ws).await, Event::Response(stream_response::Response::Result(_))));

    s.begin_shutdown();

    match next_event(&mut ws).await {
        Event::Response(stream_response::Response::Metrics(m)) => assert_eq!(m.chunks_processed, 1),
        other => panic!("expected the final metrics, got {other:?}"),
    }
    match next_event(&mut ws).await {
        Event::Closed(code, reason) => {
            assert_eq!(code, 4014);
            assert_eq!(reason, "UNAVAILABLE: the server is shutting down; retry on another instance");
        }
        other => panic!("expected the close, got {other:?}"),
    }
    // The client answers the close; the server then lets go of the connection and stops.
    assert!(ws.next().await.is_none_or(|m| m.is_err()));
    s.stop().await;
}
