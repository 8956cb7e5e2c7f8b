//! Making the service safe to expose: authentication, version negotiation, every limit, and
//! cancellation when the client leaves or its deadline passes.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use remotemedia::proto::{self, ErrorType, StreamRequest, stream_request, stream_response};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

const TOKEN: &str = "test-token-5f1c";

fn gain_request() -> proto::ExecuteRequest {
    execute_request(manifest(vec![node("g", "GainNode", "")], vec![]), vec![("g", f32_audio(&[0.1; 16], 8_000, 1))])
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn assert_reason(status: &tonic::Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(status.get_error_details().error_info().expect("ErrorInfo").reason, reason, "{status:?}");
}

#[tokio::test]
async fn missing_and_wrong_tokens_are_unauthenticated_and_a_good_one_works() {
    let s = start(&[("auth_tokens", TOKEN)]).await;
    let mut c = s.client().await;
    let none = c.execute_pipeline(gain_request()).await.unwrap_err();
    assert_reason(&none, Code::Unauthenticated, "AUTHENTICATION");
    let wrong = c.execute_pipeline(with_token(gain_request(), "nope")).await.unwrap_err();
    assert_reason(&wrong, Code::Unauthenticated, "AUTHENTICATION");
    assert!(!wrong.message().contains("nope") && !wrong.message().contains(TOKEN), "{}", wrong.message());
    let ok = c.execute_pipeline(with_token(gain_request(), TOKEN)).await.unwrap().into_inner();
    assert!(matches!(ok.outcome, Some(proto::execute_response::Outcome::Result(_))));

    // Public: GetVersion and health.
    c.get_version(proto::VersionRequest::default()).await.unwrap();
    HealthClient::new(s.channel().await).check(HealthCheckRequest { service: String::new() }).await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn a_stream_without_a_token_is_refused_before_its_first_message() {
    let s = start(&[("auth_tokens", TOKEN)]).await;
    let (_tx, rx) = tokio::sync::mpsc::channel::<StreamRequest>(1);
    // Nothing is ever sent: the refusal must not wait for a message.
    let status = s.client().await.stream_pipeline(ReceiverStream::new(rx)).await.unwrap_err();
    assert_reason(&status, Code::Unauthenticated, "AUTHENTICATION");
    assert_eq!(s.state.sessions.count(), 0);
    s.stop().await;
}

/// Sends one gRPC-Web call over HTTP/1.1 with a body of `body_len` bytes and no token; returns
/// the response head.
async fn grpc_web_call_without_token(conn: &mut tokio::net::TcpStream, body_len: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "POST /remotemedia.v1.PipelineService/ExecutePipeline HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: {body_len}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&vec![0u8; body_len]).await.unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        assert_eq!(
            conn.read(&mut byte).await.unwrap(),
            1,
            "connection closed after {:?}",
            String::from_utf8_lossy(&response)
        );
        response.push(byte[0]);
    }
    String::from_utf8(response).unwrap()
}

#[tokio::test]
async fn a_refused_http1_call_is_answered_and_keeps_its_connection() {
    // Browsers upload the whole body before reading the answer; refusing before the body is
    // read would close the connection under them (a "failed to fetch" instead of the status).
    let s = start(&[("auth_tokens", "secret")]).await;
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    for _ in 0..2 {
        let head = grpc_web_call_without_token(&mut conn, 256 * 1024).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("grpc-status: 16"), "{head}");
        assert!(head.contains("content-length: 0"), "{head}");
    }
    s.stop().await;
}

#[tokio::test]
async fn the_version_header_is_checked_and_every_spelling_of_v1_passes() {
    let s = start(&[]).await;
    let mut c = s.client().await;
    for (v, ok) in [("v1", true), ("1", true), ("1.4.0", true), ("v2", false), ("2.0", false)] {
        let mut r = Request::new(gain_request());
        r.metadata_mut().insert("remotemedia-protocol-version", v.parse().unwrap());
        match c.execute_pipeline(r).await {
            Ok(_) => assert!(ok, "{v} should be refused"),
            Err(status) => {
                assert!(!ok, "{v} should pass: {status:?}");
                assert_reason(&status, Code::FailedPrecondition, "VERSION_MISMATCH");
                assert!(status.message().contains("supported versions: v1"));
                let info = status.get_error_details().error_info().unwrap().metadata.clone();
                assert_eq!(info["supported_versions"], "v1");
            }
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<StreamRequest>(1);
    let mut r = Request::new(ReceiverStream::new(rx));
    r.metadata_mut().insert("remotemedia-protocol-version", "v2".parse().unwrap());
    assert_reason(&c.stream_pipeline(r).await.unwrap_err(), Code::FailedPrecondition, "VERSION_MISMATCH");
    drop(tx);
    s.stop().await;
}

#[tokio::test]
async fn an_oversized_message_is_resource_exhausted_and_the_next_request_is_served() {
    let s = start(&[("max_message_bytes", "65536")]).await;
    let mut c = s.client().await;
    let big = execute_request(
        manifest(vec![node("g", "GainNode", "")], vec![]),
        vec![("g", f32_audio(&[0.1; 20_000], 8_000, 1))],
    );
    let status = c.execute_pipeline(big).await.unwrap_err();
    assert_reason(&status, Code::ResourceExhausted, "RESOURCE_LIMIT");
    assert!(status.message().contains("max_message_bytes"), "{}", status.message());
    c.execute_pipeline(gain_request()).await.unwrap();

    // The same in a stream: an in-band error, then RESOURCE_EXHAUSTED.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut responses = c.stream_pipeline(ReceiverStream::new(rx)).await.unwrap().into_inner();
    tx.send(StreamRequest {
        request: Some(stream_request::Request::Manifest(manifest(vec![node("g", "GainNode", "")], vec![]))),
    })
    .await
    .unwrap();
    assert!(matches!(
        responses.next().await,
        Some(Ok(proto::StreamResponse { response: Some(stream_response::Response::Ready(_)) }))
    ));
    let chunk =
        proto::AudioChunk { node_id: "g".into(), buffer: Some(f32_audio(&[0.1; 20_000], 8_000, 1)), sequence: 0 };
    tx.send(StreamRequest { request: Some(stream_request::Request::AudioChunk(chunk)) }).await.unwrap();
    let mut saw_error = false;
    let end = loop {
        match responses.next().await {
            Some(Ok(proto::StreamResponse { response: Some(stream_response::Response::Error(e)) })) => {
                assert_eq!(e.error_type, ErrorType::ResourceLimit as i32);
                saw_error = true;
            }
            Some(Ok(_)) => {}
            Some(Err(status)) => break status,
            None => panic!("the stream ended without a status"),
        }
    };
    assert!(saw_error);
    assert_eq!(end.code(), Code::ResourceExhausted);
    s.wait_sessions(0).await;
    s.stop().await;
}

#[tokio::test]
async fn the_memory_limit_and_a_huge_manifest_get_resource_limit_errors() {
    let s = start(&[]).await;
    let mut c = s.client().await;
    let mut req = execute_request(
        // Not at unity gain, which passes the input's buffer on: each node makes a new one.
        manifest(
            vec![node("a", "GainNode", r#"{"gain_db": -6}"#), node("b", "GainNode", r#"{"gain_db": -6}"#)],
            vec![connect("a", "b")],
        ),
        vec![("a", f32_audio(&[0.1; 1_000], 8_000, 1))],
    );
    req.resource_limits = Some(proto::ResourceLimits { max_memory_bytes: 6_000, ..Default::default() });
    let e = expect_error(c.execute_pipeline(req).await.unwrap().into_inner());
    assert_eq!(e.error_type, ErrorType::ResourceLimit as i32);
    assert!(e.message.contains("memory limit of 6000 bytes"), "{}", e.message);

    let nodes: Vec<_> = (0..10_000).map(|i| node(&format!("n{i}"), "PassThroughNode", "")).collect();
    let edges: Vec<_> = (1..10_000).map(|i| connect(&format!("n{}", i - 1), &format!("n{i}"))).collect();
    let req = execute_request(manifest(nodes, edges), vec![("n0", f32_audio(&[0.1; 16], 8_000, 1))]);
    let e = expect_error(c.execute_pipeline(req).await.unwrap().into_inner());
    assert_eq!(e.error_type, ErrorType::ResourceLimit as i32);
    assert!(e.message.contains("10000 nodes") && e.message.contains("max_pipeline_nodes"), "{}", e.message);

    // Within the limit, a long chain runs.
    let nodes: Vec<_> = (0..4_000).map(|i| node(&format!("n{i}"), "PassThroughNode", "")).collect();
    let edges: Vec<_> = (1..4_000).map(|i| connect(&format!("n{}", i - 1), &format!("n{i}"))).collect();
    let req = execute_request(manifest(nodes, edges), vec![("n0", f32_audio(&[0.5; 16], 8_000, 1))]);
    let r = expect_result(c.execute_pipeline(req).await.unwrap().into_inner());
    assert_eq!(f32_samples(&r.audio_outputs["n3999"]), [0.5; 16]);
    s.stop().await;
}

#[tokio::test]
async fn streams_over_the_cap_get_retry_info_and_long_streams_end_at_the_maximum_duration() {
    let s = start(&[("max_concurrent_streams", "1"), ("stream_max_duration_ms", "300")]).await;
    let mut c = s.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut first = c.stream_pipeline(ReceiverStream::new(rx)).await.unwrap().into_inner();
    tx.send(StreamRequest {
        request: Some(stream_request::Request::Manifest(manifest(vec![node("g", "GainNode", "")], vec![]))),
    })
    .await
    .unwrap();
    assert!(first.next().await.unwrap().is_ok(), "ready");

    let (_tx2, rx2) = tokio::sync::mpsc::channel::<StreamRequest>(1);
    let refused = c.stream_pipeline(ReceiverStream::new(rx2)).await.unwrap_err();
    assert_reason(&refused, Code::ResourceExhausted, "RESOURCE_LIMIT");
    assert!(refused.get_error_details().retry_info().unwrap().retry_delay.unwrap() > Duration::ZERO);

    let status = loop {
        match first.next().await {
            Some(Ok(_)) => {}
            Some(Err(status)) => break status,
            None => panic!("no status"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("stream_max_duration_ms"), "{}", status.message());
    s.wait_sessions(0).await;
    drop(tx);
    s.stop().await;
}

#[tokio::test]
async fn a_passed_deadline_stops_the_work_and_every_gauge_returns_to_zero() {
    let (s, gate) = gated_server(&[]).await;
    let before = counter(&s.metrics_text().await, "ExecutePipeline", "DEADLINE_EXCEEDED");
    let req =
        execute_request(manifest(vec![node("h", "TestGate", "")], vec![]), vec![("h", f32_audio(&[0.1; 8], 8_000, 1))]);
    let message = prost::Message::encode_to_vec(&req);
    let headers = [("content-type", "application/grpc"), ("grpc-timeout", "200m")];
    let answer = raw(
        s.addr,
        "/remotemedia.v1.PipelineService/ExecutePipeline",
        &headers,
        frame(&message, message.len() as u32, 0),
    )
    .await;
    assert_eq!(answer.grpc_status, Some(Code::DeadlineExceeded as i32), "{answer:?}");
    assert!(answer.grpc_message.contains("deadline"), "{answer:?}");
    wait_until(|| gate.cancelled.load(Ordering::SeqCst) == 1, "the node to see the cancellation").await;
    wait_until(|| s.state.inflight.count() == 0, "in-flight work to end").await;
    // Gauges are process-wide and other tests run beside this one; the real binary's gauges are
    // checked by the pytest suite. The call is counted as past its deadline.
    let text = s.metrics_text().await;
    assert!(counter(&text, "ExecutePipeline", "DEADLINE_EXCEEDED") >= before + 1.0, "the call is counted");
    s.stop().await;
}
