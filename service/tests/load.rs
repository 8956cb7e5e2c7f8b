//! A bounded load test: 200 concurrent real-time streams (20 ms chunks at 50 per second) through
//! resample + VAD for two seconds. Every result must come back, in order, without an error, and
//! every session must be gone afterwards.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use remotemedia::proto::{
    self, AudioChunk, StreamControl, StreamRequest, stream_control, stream_request, stream_response,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const STREAMS: usize = 200;
const CHUNKS: u64 = 100;
const CONNECTIONS: usize = 8;

async fn one_stream(channel: Channel, index: usize) -> Result<(), String> {
    let mut client = proto::pipeline_service_client::PipelineServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let m = manifest(
        vec![node("rs", "AudioResampleNode", r#"{"output_rate": 16000}"#), node("vad", "VADNode", "")],
        vec![connect("rs", "vad")],
    );
    tx.send(StreamRequest { request: Some(stream_request::Request::Manifest(m)) }).await.map_err(|e| e.to_string())?;
    let mut responses = client.stream_pipeline(ReceiverStream::new(rx)).await.map_err(|e| e.to_string())?.into_inner();
    match responses.next().await {
        Some(Ok(proto::StreamResponse { response: Some(stream_response::Response::Ready(_)) })) => {}
        other => return Err(format!("stream {index}: expected ready, got {other:?}")),
    }
    let sender = tokio::spawn(async move {
        let tone: Vec<f32> = (0..960).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        for seq in 0..CHUNKS {
            ticker.tick().await;
            let chunk = AudioChunk { node_id: "rs".into(), buffer: Some(f32_audio(&tone, 48_000, 1)), sequence: seq };
            if tx.send(StreamRequest { request: Some(stream_request::Request::AudioChunk(chunk)) }).await.is_err() {
                return;
            }
        }
        let close = StreamControl { command: stream_control::Command::Close as i32 };
        let _ = tx.send(StreamRequest { request: Some(stream_request::Request::Control(close)) }).await;
    });
    let mut expected = 0u64;
    let mut final_chunks = None;
    while let Some(message) = responses.next().await {
        match message.map_err(|s| format!("stream {index}: {s:?}"))?.response {
            Some(stream_response::Response::Result(r)) if expected < CHUNKS => {
                if r.sequence != expected {
                    return Err(format!("stream {index}: result {} arrived when {expected} was due", r.sequence));
                }
                expected += 1;
            }
            Some(stream_response::Response::Result(_)) => {} // the flush result after close
            Some(stream_response::Response::Metrics(m)) => final_chunks = Some(m.chunks_processed),
            Some(stream_response::Response::Error(e)) => return Err(format!("stream {index}: error {}", e.message)),
            other => return Err(format!("stream {index}: unexpected {other:?}")),
        }
    }
    sender.await.map_err(|e| e.to_string())?;
    if expected != CHUNKS || final_chunks != Some(CHUNKS) {
        return Err(format!("stream {index}: {expected} results, final metrics {final_chunks:?}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_streams_get_every_result_in_order() {
    let s = start(&[]).await;
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(s.channel().await);
    }
    let tasks: Vec<_> = (0..STREAMS).map(|i| tokio::spawn(one_stream(channels[i % CONNECTIONS].clone(), i))).collect();
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{} of {STREAMS} streams failed; first: {:?}", failures.len(), failures.first());
    s.wait_sessions(0).await;
    assert_eq!(s.state.inflight.count(), 0);
    s.stop().await;
}
