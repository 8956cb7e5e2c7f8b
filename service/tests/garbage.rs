//! Garbage in: raw HTTP/2 requests with broken gRPC framing and random bytes, and property tests
//! of the decode and validation paths. Every case gets a clear answer, the server keeps
//! serving, and nothing is left running.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use proptest::prelude::*;
use prost::Message;
use remotemedia::graph::{CircuitBreakers, Engine, RequestShape};
use remotemedia::grpc::convert::{audio_from_proto, manifest_from_proto};
use remotemedia::nodes::Registry;
use remotemedia::proto;

const EXECUTE: &str = "/remotemedia.v1.PipelineService/ExecutePipeline";
const STREAM: &str = "/remotemedia.v1.PipelineService/StreamPipeline";

async fn still_serving(s: &TestServer) {
    let req =
        execute_request(manifest(vec![node("g", "GainNode", "")], vec![]), vec![("g", f32_audio(&[0.1; 4], 8_000, 1))]);
    expect_result(s.client().await.execute_pipeline(req).await.unwrap().into_inner());
    assert_eq!(s.state.inflight.count(), 0);
}

#[tokio::test]
async fn broken_frames_get_clear_statuses_and_the_server_keeps_serving() {
    let s = start(&[]).await;
    let valid =
        execute_request(manifest(vec![node("g", "GainNode", "")], vec![]), vec![("g", f32_audio(&[0.1; 4], 8_000, 1))])
            .encode_to_vec();
    let invalid_argument = tonic::Code::InvalidArgument as i32;
    let cases: Vec<(&str, Bytes, i32, &str)> = vec![
        ("truncated frame", frame(&valid[..valid.len() / 2], valid.len() as u32, 0), invalid_argument, "malformed"),
        (
            "random bytes",
            frame(&[0xde, 0xad, 0xbe, 0xef, 0x13, 0x37, 0xff, 0x00, 0x42], 9, 0),
            invalid_argument,
            "malformed",
        ),
        (
            "huge varint",
            frame(&[0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], 12, 0),
            invalid_argument,
            "malformed",
        ),
        ("length beyond the cap", frame(&[], u32::MAX, 0), tonic::Code::ResourceExhausted as i32, "max_message_bytes"),
        ("compressed flag without encoding", frame(&valid, valid.len() as u32, 1), invalid_argument, "malformed"),
        ("invalid compression flag", frame(&valid, valid.len() as u32, 7), invalid_argument, "malformed"),
    ];
    for (name, body, code, text) in cases {
        let a = raw(s.addr, EXECUTE, &[("content-type", "application/grpc")], body).await;
        assert_eq!(a.grpc_status, Some(code), "{name}: {a:?}");
        assert!(a.grpc_message.contains(text), "{name}: {a:?}");
        still_serving(&s).await;
    }
    s.stop().await;
}

/// Opens an `ExecutePipeline` call and sends part of its request: a frame that declares 1000
/// bytes and carries 10. Returns the response future and the request stream, still open.
async fn half_sent(s: &TestServer, headers: &[(&str, &str)]) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let call = half_sent_call(s, headers).await;
    (call.response, call.send)
}

/// A call [`half_sent`], with its connection.
struct HalfSent {
    response: h2::client::ResponseFuture,
    send: h2::SendStream<Bytes>,
    /// Answered by the server after the frames sent before the ping.
    ping_pong: h2::PingPong,
    /// The task driving the connection: aborting it closes the connection with no reset.
    connection: tokio::task::JoinHandle<()>,
    _client: h2::client::SendRequest<Bytes>,
}

async fn half_sent_call(s: &TestServer, headers: &[(&str, &str)]) -> HalfSent {
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let ping_pong = connection.ping_pong().expect("taken once");
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}{EXECUTE}", s.addr))
        .header("te", "trailers")
        .header("content-type", "application/grpc");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, mut send) = client.send_request(request.body(()).unwrap(), false).unwrap();
    send.send_data(frame(&[0; 10], 1_000, 0), false).unwrap();
    HalfSent { response, send, ping_pong, connection, _client: client }
}

/// Waits until `rpc` has been counted with `code` at least `at_least` times; false after 10 s.
async fn counted_at_least(s: &TestServer, rpc: &str, code: &str, at_least: f64) -> bool {
    for _ in 0..2_000 {
        if counter(&s.metrics_text().await, rpc, code) >= at_least {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    false
}

#[tokio::test]
async fn a_deadline_passing_while_the_request_arrives_is_answered_and_counted() {
    let s = start(&[]).await;
    let before = counter(&s.metrics_text().await, "ExecutePipeline", "DEADLINE_EXCEEDED");
    let (response, _send) = half_sent(&s, &[("grpc-timeout", "200m")]).await;
    let response = response.await.unwrap();
    let status = response.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(status.as_deref(), Some("4"), "{response:?}");
    // No handler ran: the call is counted where its deadline ended it.
    let text = s.metrics_text().await;
    assert!(counter(&text, "ExecutePipeline", "DEADLINE_EXCEEDED") >= before + 1.0, "the call is counted");
    still_serving(&s).await;
    s.stop().await;
}

#[tokio::test]
async fn a_client_closing_its_connection_while_the_request_arrives_is_cancelled_not_unknown() {
    let s = start(&[]).await;
    let text = s.metrics_text().await;
    let cancelled = counter(&text, "ExecutePipeline", "CANCELLED");
    let faults = counter(&text, "ExecutePipeline", "UNKNOWN") + counter(&text, "ExecutePipeline", "INTERNAL");
    let mut call = half_sent_call(&s, &[]).await;
    // Once the server has answered a ping sent after the call, it has the call. The connection
    // is then closed, with no reset.
    call.ping_pong.ping(h2::Ping::opaque()).await.unwrap();
    call.connection.abort();
    drop(call);
    assert!(counted_at_least(&s, "ExecutePipeline", "CANCELLED", cancelled + 1.0).await, "counted as CANCELLED");
    let text = s.metrics_text().await;
    let now = counter(&text, "ExecutePipeline", "UNKNOWN") + counter(&text, "ExecutePipeline", "INTERNAL");
    assert_eq!(now, faults, "not a server fault");
    still_serving(&s).await;
    s.stop().await;
}

#[tokio::test]
async fn a_client_resetting_its_call_while_the_request_arrives_is_cancelled_not_internal() {
    let s = start(&[]).await;
    let text = s.metrics_text().await;
    let (cancelled, internal) =
        (counter(&text, "ExecutePipeline", "CANCELLED"), counter(&text, "ExecutePipeline", "INTERNAL"));
    let (_response, mut send) = half_sent(&s, &[]).await;
    send.send_reset(h2::Reason::CANCEL);
    let counted = counted_at_least(&s, "ExecutePipeline", "CANCELLED", cancelled + 1.0).await;
    assert!(counted, "the reset call is counted as CANCELLED");
    assert_eq!(counter(&s.metrics_text().await, "ExecutePipeline", "INTERNAL"), internal, "no INTERNAL");
    still_serving(&s).await;
    s.stop().await;
}

#[tokio::test]
async fn a_wrong_content_type_is_refused_without_reaching_the_service() {
    let s = start(&[]).await;
    // A media type that is not gRPC's is named, even with a well-formed message that the service
    // would otherwise have answered.
    for (rpc, content_type, body) in [
        ("ExecutePipeline", "text/plain", Bytes::from_static(b"hello")),
        ("GetVersion", "application/grpcx+json", frame(&[], 0, 0)),
        ("GetVersion", "application/octet-stream", frame(&[], 0, 0)),
    ] {
        let a = raw(s.addr, &format!("/remotemedia.v1.PipelineService/{rpc}"), &[("content-type", content_type)], body)
            .await;
        assert_eq!(a.grpc_status, Some(tonic::Code::Unimplemented as i32), "{content_type}: {a:?}");
        assert!(
            a.grpc_message
                .replace("%60", "`")
                .replace("%20", " ")
                .contains(&format!("`{content_type}` is not a gRPC media type")),
            "{a:?}"
        );
    }
    // The Connect protocol gets a Connect error: HTTP 501 for a unary call, the end-of-stream
    // message under HTTP 200 for a streaming one; never a gRPC status. Like every answer, it
    // carries the call's id: the client's own when usable.
    for (content_type, http_status) in [
        ("application/json", 501),
        ("application/proto", 501),
        ("application/connect+proto", 200),
        ("application/connect+xyz", 200),
    ] {
        let a = raw(s.addr, EXECUTE, &[("content-type", content_type)], Bytes::from_static(b"{}")).await;
        assert_eq!((a.http_status, a.grpc_status), (http_status, None), "{content_type}: {a:?}");
        assert!(a.request_id.as_ref().is_some_and(|id| id.len() == 32), "{content_type}: {a:?}");
    }
    let a =
        raw(s.addr, EXECUTE, &[("content-type", "application/json"), ("x-request-id", "mine-1")], Bytes::new()).await;
    assert_eq!(a.request_id.as_deref(), Some("mine-1"));
    let a = raw(
        s.addr,
        "/remotemedia.v1.PipelineService/NoSuchMethod",
        &[("content-type", "application/grpc")],
        frame(&[], 0, 0),
    )
    .await;
    assert_eq!(a.grpc_status, Some(tonic::Code::Unimplemented as i32), "{a:?}");
    let named = "call one of ExecutePipeline, StreamPipeline, GetVersion: `NoSuchMethod` is not a method";
    assert!(a.grpc_message.replace("%60", "`").replace("%20", " ").starts_with(named), "{a:?}");
    // A service the server does not have is named too, with the ones it has, and counted.
    let other = counter(&s.metrics_text().await, "other", "UNIMPLEMENTED");
    let a = raw(s.addr, "/foo.Bar/Baz", &[("content-type", "application/grpc")], frame(&[], 0, 0)).await;
    assert!(counter(&s.metrics_text().await, "other", "UNIMPLEMENTED") > other, "counted as other");
    assert_eq!(a.grpc_status, Some(tonic::Code::Unimplemented as i32), "{a:?}");
    let message = a.grpc_message.replace("%60", "`").replace("%20", " ");
    assert!(message.starts_with("this server has no method `/foo.Bar/Baz`: its services are"), "{message}");
    let a = raw(s.addr, "/grpc.health.v1.Health/Nope", &[("content-type", "application/grpc")], frame(&[], 0, 0)).await;
    assert_eq!(a.grpc_status, Some(tonic::Code::Unimplemented as i32), "{a:?}");
    let message = a.grpc_message.replace("%60", "`").replace("%20", " ");
    assert!(message.starts_with("this server has no method `/grpc.health.v1.Health/Nope`"), "{message}");
    still_serving(&s).await;
    s.stop().await;
}

#[tokio::test]
async fn a_codec_or_compression_the_service_does_not_take_is_named_and_counted_once() {
    let s = start(&[]).await;
    let json = frame(b"{}", 2, 0);
    for (rpc, headers, named) in [
        ("ExecutePipeline", [("content-type", "application/grpc+json"), ("grpc-encoding", "identity")], "`json`"),
        ("StreamPipeline", [("content-type", "application/grpc+json"), ("grpc-encoding", "identity")], "`json`"),
        ("GetVersion", [("content-type", "application/grpc+json"), ("grpc-encoding", "identity")], "`json`"),
        ("ExecutePipeline", [("content-type", "application/grpc"), ("grpc-encoding", "deflate")], "`deflate`"),
        ("GetVersion", [("content-type", "application/grpc"), ("grpc-encoding", "br")], "`br`"),
    ] {
        let before = counter(&s.metrics_text().await, rpc, "UNIMPLEMENTED");
        let a = raw(s.addr, &format!("/remotemedia.v1.PipelineService/{rpc}"), &headers, json.clone()).await;
        assert_eq!(a.grpc_status, Some(tonic::Code::Unimplemented as i32), "{rpc} {headers:?}: {a:?}");
        assert!(a.grpc_message.replace("%60", "`").contains(named), "{rpc}: {a:?}");
        let text = s.metrics_text().await;
        assert!(
            text.contains(&format!(
                "remotemedia_requests_total{{rpc=\"{rpc}\",code=\"UNIMPLEMENTED\",outcome=\"validation\"}}"
            )),
            "{rpc}: a client's mistake"
        );
        assert_eq!(counter(&text, rpc, "UNIMPLEMENTED"), before + 1.0, "{rpc} {headers:?}: counted once");
    }
    still_serving(&s).await;
    s.stop().await;
}

#[tokio::test]
async fn garbage_on_a_stream_ends_it_with_an_error_and_frees_the_session() {
    let s = start(&[]).await;
    let manifest_msg = proto::StreamRequest {
        request: Some(proto::stream_request::Request::Manifest(manifest(vec![node("g", "GainNode", "")], vec![]))),
    }
    .encode_to_vec();
    let mut body = BytesMut::new();
    body.put_slice(&frame(&manifest_msg, manifest_msg.len() as u32, 0));
    body.put_slice(&frame(&[0xff; 7], 7, 0));
    let a = raw(s.addr, STREAM, &[("content-type", "application/grpc")], body.freeze()).await;
    assert_eq!(a.grpc_status, Some(tonic::Code::InvalidArgument as i32), "{a:?}");
    s.wait_sessions(0).await;
    still_serving(&s).await;
    s.stop().await;
}

fn engine() -> Engine {
    Engine::new(Registry::builtin(), CircuitBreakers::default())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes either fail to decode or convert and validate to errors: never a panic.
    #[test]
    fn arbitrary_bytes_never_panic_the_decode_and_validation_paths(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(req) = proto::ExecuteRequest::decode(&bytes[..]) {
            let (m, _) = manifest_from_proto(&req.manifest.unwrap_or_default());
            for (k, b) in &req.audio_inputs {
                let _ = audio_from_proto(b, k);
            }
            let shape = RequestShape { audio_inputs: Some(req.audio_inputs.keys().cloned().collect()), ..RequestShape::default() };
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let _ = rt.block_on(engine().build(&m, &shape));
        }
    }

    /// Random manifests over a small alphabet of ids and types: validation reports problems with
    /// a field and a message, and accepts exactly the manifests it can run.
    #[test]
    fn random_manifests_validate_without_panics(
        nodes in proptest::collection::vec((0u8..6, prop_oneof![Just("GainNode"), Just("PassThroughNode"), Just("VAD"), Just("Nope"), Just("")], prop_oneof![Just(""), Just("{}"), Just("{"), Just("[]"), Just(r#"{"gain": 2}"#), Just(r#"{"gain_db": "x"}"#)], 0i32..7), 0..8),
        edges in proptest::collection::vec((0u8..7, 0u8..7, prop_oneof![Just(""), Just("output"), Just("segments")], prop_oneof![Just(""), Just("input"), Just("data")]), 0..12),
        version in prop_oneof![Just("v1"), Just("v2"), Just("")],
    ) {
        let m = proto::PipelineManifest {
            version: version.to_string(),
            metadata: None,
            nodes: nodes.iter().map(|(id, t, p, hint)| proto::NodeManifest {
                id: format!("n{id}"), node_type: t.to_string(), params: p.to_string(), runtime_hint: *hint, ..Default::default()
            }).collect(),
            connections: edges.iter().map(|(a, b, o, i)| proto::Connection {
                from: format!("n{a}"), to: format!("n{b}"), output_key: o.to_string(), input_key: i.to_string(),
            }).collect(),
            config: None,
        };
        let (manifest, _) = manifest_from_proto(&m);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        match rt.block_on(engine().build(&manifest, &RequestShape::stream())) {
            Ok(p) => prop_assert_eq!(p.len(), m.nodes.len()),
            Err(e) => {
                prop_assert!(!e.violations.is_empty());
                for v in &e.violations {
                    prop_assert!(!v.field.is_empty() && !v.message.is_empty(), "{:?}", v);
                }
            }
        }
    }
}
