//! `StreamPipeline` session life cycle against an in-process server.

mod common;

use common::*;
use futures::StreamExt;
use remotemedia::proto::{
    self, AudioChunk, ErrorType, StreamControl, StreamRequest, StreamResponse, stream_control, stream_request,
    stream_response,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

fn manifest_msg(m: proto::PipelineManifest) -> StreamRequest {
    StreamRequest { request: Some(stream_request::Request::Manifest(m)) }
}

fn chunk_msg(node: &str, seq: u64, samples: &[f32]) -> StreamRequest {
    StreamRequest {
        request: Some(stream_request::Request::AudioChunk(AudioChunk {
            node_id: node.into(),
            buffer: Some(f32_audio(samples, 16_000, 1)),
            sequence: seq,
        })),
    }
}

fn control_msg(c: stream_control::Command) -> StreamRequest {
    StreamRequest { request: Some(stream_request::Request::Control(StreamControl { command: c as i32 })) }
}

fn gain_manifest() -> proto::PipelineManifest {
    manifest(vec![node("in", "PassThroughNode", ""), node("g", "GainNode", r#"{"gain": 2}"#)], vec![connect("in", "g")])
}

/// An open stream: a sender for requests and the response stream.
struct Open {
    tx: mpsc::Sender<StreamRequest>,
    rx: Streaming<StreamResponse>,
}

async fn open(s: &TestServer) -> Open {
    let (tx, rx) = mpsc::channel(16);
    let resp = s.client().await.stream_pipeline(ReceiverStream::new(rx)).await.expect("stream opens");
    Open { tx, rx: resp.into_inner() }
}

impl Open {
    async fn send(&self, m: StreamRequest) {
        self.tx.send(m).await.expect("request channel open");
    }

    async fn next(&mut self) -> Result<StreamResponse, Status> {
        match self.rx.next().await {
            Some(r) => r,
            None => Err(Status::ok("stream ended")),
        }
    }

    async fn next_response(&mut self) -> stream_response::Response {
        self.next().await.expect("a response").response.expect("response set")
    }

    /// Reads until the stream ends; returns the final status code.
    async fn finish(&mut self) -> (Vec<stream_response::Response>, Code) {
        let mut seen = Vec::new();
        loop {
            match self.rx.next().await {
                Some(Ok(r)) => seen.push(r.response.unwrap()),
                Some(Err(s)) => return (seen, s.code()),
                None => return (seen, Code::Ok),
            }
        }
    }

    async fn ready(&mut self, m: proto::PipelineManifest) -> String {
        self.send(manifest_msg(m)).await;
        match self.next_response().await {
            stream_response::Response::Ready(r) => r.session_id,
            other => panic!("expected ready, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_hundred_chunks_come_back_in_order_then_close_sends_final_metrics() {
    let s = start(&[]).await;
    let mut st = open(&s).await;
    let session = st.ready(gain_manifest()).await;
    assert!(!session.is_empty());
    assert_eq!(s.state.sessions.count(), 1);

    let sender = {
        let tx = st.tx.clone();
        tokio::spawn(async move {
            for seq in 0..100u64 {
                tx.send(chunk_msg("in", seq, &[seq as f32 / 1000.0; 320])).await.unwrap();
            }
            tx.send(control_msg(stream_control::Command::Close)).await.unwrap();
        })
    };
    let mut results = Vec::new();
    let (rest, code) = loop {
        match st.next().await {
            Ok(StreamResponse { response: Some(stream_response::Response::Result(r)) }) => results.push(r),
            Ok(StreamResponse { response: Some(stream_response::Response::Metrics(_)) }) if results.len() < 100 => {}
            Ok(other) => {
                let (mut rest, code) = st.finish().await;
                rest.insert(0, other.response.unwrap());
                break (rest, code);
            }
            Err(e) => panic!("stream failed: {e:?}"),
        }
    };
    sender.await.unwrap();
    assert_eq!(code, Code::Ok);
    assert_eq!(results.len(), 100);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.sequence, i as u64);
        let out = f32_samples(&r.audio_outputs["g"]);
        assert_eq!(out.len(), 320);
        assert!((out[0] - 2.0 * i as f32 / 1000.0).abs() < 1e-6);
    }
    match rest.last() {
        Some(stream_response::Response::Metrics(m)) => {
            assert_eq!(m.chunks_processed, 100);
            assert_eq!(m.total_samples, 32_000);
            assert!(m.average_latency_ms > 0.0);
        }
        other => panic!("expected final metrics, got {other:?}"),
    }
    s.wait_sessions(0).await;
    s.stop().await;
}

#[tokio::test]
async fn cancel_ends_the_stream_with_cancelled_and_frees_the_session() {
    let s = start(&[]).await;
    let mut st = open(&s).await;
    st.ready(gain_manifest()).await;
    st.send(chunk_msg("in", 7, &[0.5; 160])).await;
    match st.next_response().await {
        stream_response::Response::Result(r) => assert_eq!(r.sequence, 7),
        other => panic!("{other:?}"),
    }
    st.send(control_msg(stream_control::Command::Cancel)).await;
    let (_, code) = st.finish().await;
    assert_eq!(code, Code::Cancelled);
    s.wait_sessions(0).await;
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_vanishes_leaves_no_session_behind() {
    let s = start(&[]).await;
    for _ in 0..3 {
        let mut st = open(&s).await;
        st.ready(gain_manifest()).await;
        st.send(chunk_msg("in", 0, &[0.1; 160])).await;
        let _ = st.next_response().await;
        assert_eq!(s.state.sessions.count(), 1);
        drop(st);
        s.wait_sessions(0).await;
    }
    assert_eq!(s.state.inflight.count(), 0);
    s.stop().await;
}

#[tokio::test]
async fn half_closing_without_a_command_closes_gracefully() {
    let s = start(&[]).await;
    let mut st = open(&s).await;
    st.ready(gain_manifest()).await;
    st.send(chunk_msg("in", 0, &[0.1; 16])).await;
    let Open { tx, mut rx } = st;
    drop(tx);
    let mut kinds = Vec::new();
    while let Some(m) = rx.next().await {
        kinds.push(match m.expect("no error").response.unwrap() {
            stream_response::Response::Result(_) => "result",
            stream_response::Response::Metrics(_) => "metrics",
            _ => "other",
        });
    }
    assert_eq!(kinds, ["result", "metrics"]);
    s.stop().await;
}

#[tokio::test]
async fn a_chunk_before_the_manifest_is_failed_precondition() {
    let s = start(&[]).await;
    let mut st = open(&s).await;
    st.send(chunk_msg("in", 0, &[0.0])).await;
    let (seen, code) = st.finish().await;
    assert_eq!(code, Code::FailedPrecondition);
    match &seen[..] {
        [stream_response::Response::Error(e)] => {
            assert!(e.message.contains("first message of a stream must be the manifest"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn closing_before_the_manifest_is_failed_precondition() {
    let s = start(&[]).await;
    let mut st = open(&s).await;
    // Half-closes the request stream: the client's sender goes away, the call stays open.
    drop(std::mem::replace(&mut st.tx, mpsc::channel(1).0));
    let (seen, code) = st.finish().await;
    assert_eq!(code, Code::FailedPrecondition);
    match &seen[..] {
        [stream_response::Response::Error(e)] => {
            assert!(e.message.contains("closed its side of the stream before sending a manifest"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn a_second_manifest_is_failed_precondition() {
    let s = start(&[]).await;
    let mut st = open(&s).await;
    st.ready(gain_manifest()).await;
    st.send(manifest_msg(gain_manifest())).await;
    let (seen, code) = st.finish().await;
    assert_eq!(code, Code::FailedPrecondition);
    assert!(matches!(&seen[..], [stream_response::Response::Error(e)] if e.message.contains("second manifest")));
    s.wait_sessions(0).await;
    s.stop().await;
}

#[tokio::test]
async fn a_wrong_node_id_is_invalid_argument_listing_the_nodes() {
    let s = start(&[]).await;
    let mut st = open(&s).await;
    st.ready(gain_manifest()).await;
    st.send(chunk_msg("nope", 3, &[0.0])).await;
    let (seen, code) = st.finish().await;
    assert_eq!(code, Code::InvalidArgument);
    match &seen[..] {
        [stream_response::Response::Error(e)] => {
            assert_eq!(e.error_type, ErrorType::Validation as i32);
            assert!(
                e.message.contains("node_id `nope` is not a node of this pipeline (nodes: in, g)"),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
    s.wait_sessions(0).await;
    s.stop().await;
}

#[tokio::test]
async fn an_invalid_manifest_is_invalid_argument_with_every_violation() {
    let s = start(&[]).await;
    let mut st = open(&s).await;
    st.send(manifest_msg(manifest(vec![node("a", "Nope", ""), node("b", "GainNode", "x")], vec![]))).await;
    let (seen, code) = st.finish().await;
    assert_eq!(code, Code::InvalidArgument);
    match &seen[..] {
        [stream_response::Response::Error(e)] => {
            assert_eq!(e.error_type, ErrorType::Validation as i32);
            assert!(e.message.contains("2 problems"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.state.sessions.count(), 0);
    s.stop().await;
}

#[tokio::test]
async fn a_failing_chunk_gets_an_error_and_the_session_goes_on() {
    let s = start(&[]).await;
    let mut st = open(&s).await;
    st.ready(gain_manifest()).await;
    st.send(chunk_msg("in", 0, &[f32::NAN])).await;
    match st.next_response().await {
        stream_response::Response::Error(e) => {
            assert_eq!(e.error_type, ErrorType::NodeExecution as i32);
            assert_eq!(e.failing_node_id, "g");
            let ctx: serde_json::Value = serde_json::from_str(&e.context).unwrap();
            assert_eq!(ctx["sequence"], 0);
        }
        other => panic!("{other:?}"),
    }
    st.send(chunk_msg("in", 1, &[0.25])).await;
    match st.next_response().await {
        stream_response::Response::Result(r) => {
            assert_eq!(r.sequence, 1);
            assert_eq!(f32_samples(&r.audio_outputs["g"]), [0.5]);
        }
        other => panic!("{other:?}"),
    }
    st.send(control_msg(stream_control::Command::Close)).await;
    assert_eq!(st.finish().await.1, Code::Ok);
    s.stop().await;
}

#[tokio::test]
async fn an_idle_stream_is_closed_with_resource_exhausted() {
    let s = start(&[("stream_idle_timeout_ms", "100")]).await;
    let mut st = open(&s).await;
    st.ready(gain_manifest()).await;
    let (seen, code) = st.finish().await;
    assert_eq!(code, Code::ResourceExhausted);
    assert!(matches!(&seen[..], [stream_response::Response::Error(e)] if e.message.contains("stream_idle_timeout_ms")));
    s.wait_sessions(0).await;
    s.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_unavailable() {
    let mut s = start(&[]).await;
    let mut st = open(&s).await;
    st.ready(gain_manifest()).await;
    s.begin_shutdown();
    let (seen, code) = st.finish().await;
    assert_eq!(code, Code::Unavailable);
    assert!(matches!(seen.last(), Some(stream_response::Response::Metrics(_))), "final metrics first: {seen:?}");
    s.wait_sessions(0).await;
    s.stop().await;
}
