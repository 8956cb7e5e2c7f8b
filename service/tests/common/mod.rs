//! Shared helpers for the integration tests: an in-process server on port 0, a client, and
//! message builders.
#![allow(dead_code)]

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use remotemedia::Config;
use remotemedia::grpc::state::AppState;
use remotemedia::nodes::{
    INPUT, Node, NodeContext, NodeError, NodeFactory, NodeSpec, Params, PortSpec, Ports, Registry,
};
use remotemedia::proto::pipeline_service_client::PipelineServiceClient;
use remotemedia::proto::{self, AudioBuffer, AudioFormat, Connection, NodeManifest, PipelineManifest};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), remotemedia::ServerError>>,
}

/// Starts a server with the built-in nodes and `overrides` on top of the defaults.
pub async fn start(overrides: &[(&str, &str)]) -> TestServer {
    start_with(overrides, Registry::builtin()).await
}

/// Starts a server with a custom registry (for test-only node types).
pub async fn start_with(overrides: &[(&str, &str)], registry: Registry) -> TestServer {
    let mut all = vec![("listen", "127.0.0.1:0"), ("metrics_listen", "127.0.0.1:0")];
    all.extend_from_slice(overrides);
    let config = Config::with(&all).expect("test config is valid");
    let server = remotemedia::bind(config, registry).await.expect("server binds");
    let addr = server.local_addr();
    let metrics_addr = server.metrics_addr();
    let state = server.state();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    TestServer { addr, metrics_addr, state, stop: Some(stop), handle }
}

impl TestServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url()).unwrap().connect().await.expect("client connects")
    }

    pub async fn client(&self) -> PipelineServiceClient<Channel> {
        PipelineServiceClient::new(self.channel().await)
    }

    /// Starts the shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and waits for `serve` to return.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("server stops in time")
            .expect("serve task does not panic")
            .expect("serve returns Ok");
    }

    /// Waits (bounded) until the server's open stream count is `n`.
    pub async fn wait_sessions(&self, n: usize) {
        wait_until(|| self.state.sessions.count() == n, "open sessions").await;
    }

    pub async fn metrics_text(&self) -> String {
        let addr = self.metrics_addr.expect("metrics enabled");
        http_get(addr, "/metrics").await
    }
}

/// Polls `cond` every few milliseconds for up to 10 s; panics naming `what` if it never holds.
pub async fn wait_until(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A minimal HTTP/1.1 GET, enough for the metrics endpoint.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

pub fn node(id: &str, node_type: &str, params: &str) -> NodeManifest {
    NodeManifest { id: id.into(), node_type: node_type.into(), params: params.into(), ..Default::default() }
}

pub fn connect(from: &str, to: &str) -> Connection {
    Connection { from: from.into(), to: to.into(), ..Default::default() }
}

pub fn manifest(nodes: Vec<NodeManifest>, connections: Vec<Connection>) -> PipelineManifest {
    PipelineManifest {
        version: "v1".into(),
        metadata: Some(proto::ManifestMetadata { name: "test".into(), ..Default::default() }),
        nodes,
        connections,
        config: None,
    }
}

pub fn f32_audio(samples: &[f32], rate: u32, channels: u32) -> AudioBuffer {
    AudioBuffer {
        samples: Bytes::from(samples.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>()),
        sample_rate: rate,
        channels,
        format: AudioFormat::F32 as i32,
        num_samples: samples.len() as u64,
    }
}

pub fn i16_audio(samples: &[i16], rate: u32) -> AudioBuffer {
    AudioBuffer {
        samples: Bytes::from(samples.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>()),
        sample_rate: rate,
        channels: 1,
        format: AudioFormat::I16 as i32,
        num_samples: samples.len() as u64,
    }
}

pub fn f32_samples(b: &AudioBuffer) -> Vec<f32> {
    b.samples.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

pub fn execute_request(m: PipelineManifest, inputs: Vec<(&str, AudioBuffer)>) -> proto::ExecuteRequest {
    proto::ExecuteRequest {
        manifest: Some(m),
        audio_inputs: inputs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        ..Default::default()
    }
}

/// The result of an ExecuteResponse, panicking with the in-band error if there is one.
pub fn expect_result(r: proto::ExecuteResponse) -> proto::ExecutionResult {
    match r.outcome {
        Some(proto::execute_response::Outcome::Result(res)) => res,
        other => panic!("expected a result, got {other:?}"),
    }
}

pub fn expect_error(r: proto::ExecuteResponse) -> proto::ErrorResponse {
    match r.outcome {
        Some(proto::execute_response::Outcome::Error(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A test-only node that holds its request until the test opens the gate (or it is cancelled).
#[derive(Clone, Default)]
pub struct Gate {
    pub entered: Arc<AtomicUsize>,
    pub open: Arc<AtomicBool>,
    pub cancelled: Arc<AtomicUsize>,
}

struct GateNode(Gate);

impl Node for GateNode {
    fn process(&mut self, inputs: Ports, ctx: &NodeContext) -> Result<Ports, NodeError> {
        self.0.entered.fetch_add(1, Ordering::SeqCst);
        while !self.0.open.load(Ordering::SeqCst) {
            if ctx.check_cancelled().is_err() {
                self.0.cancelled.fetch_add(1, Ordering::SeqCst);
                return Err(NodeError::cancelled());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Ports::audio_output(inputs.audio(INPUT)?.clone()))
    }

    fn is_heavy(&self, _inputs: &Ports) -> bool {
        true
    }
}

pub struct GateFactory(pub Gate);

impl NodeFactory for GateFactory {
    fn spec(&self) -> NodeSpec {
        NodeSpec::new("TestGate", "waits at a gate")
            .input(PortSpec::audio(INPUT, "audio"))
            .output(PortSpec::audio(remotemedia::nodes::OUTPUT, "audio"))
    }
    fn create(&self, _params: &Params) -> Box<dyn Node> {
        Box::new(GateNode(self.0.clone()))
    }
}

/// A server whose registry also has the `TestGate` node.
pub async fn gated_server(overrides: &[(&str, &str)]) -> (TestServer, Gate) {
    let gate = Gate::default();
    let mut registry = Registry::builtin();
    registry.register(GateFactory(gate.clone()));
    (start_with(overrides, registry).await, gate)
}

/// What the server answered a raw request with.
#[derive(Debug)]
pub struct Answer {
    pub http_status: u16,
    pub grpc_status: Option<i32>,
    pub grpc_message: String,
    pub request_id: Option<String>,
}

/// Sends one raw HTTP/2 request with `headers` (besides `te: trailers`) and reads the whole
/// answer (headers, body, trailers). Unlike a gRPC client, it keeps no clock of its own, so a
/// status is always the server's.
pub async fn raw(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)], body: Bytes) -> Answer {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request =
        http::Request::builder().method("POST").uri(format!("http://{addr}{path}")).header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, mut send) = client.send_request(request.body(()).unwrap(), false).unwrap();
    send.send_data(body, true).unwrap();
    let response = response.await.unwrap();
    let (parts, mut body) = response.into_parts();
    let header = |map: &http::HeaderMap, name: &str| map.get(name).map(|v| v.to_str().unwrap().to_owned());
    let mut grpc_status = header(&parts.headers, "grpc-status").map(|s| s.parse().unwrap());
    let mut grpc_message = header(&parts.headers, "grpc-message").unwrap_or_default();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    if let Ok(Some(trailers)) = body.trailers().await {
        grpc_status = header(&trailers, "grpc-status").map(|s| s.parse().unwrap()).or(grpc_status);
        grpc_message = header(&trailers, "grpc-message").unwrap_or(grpc_message);
    }
    let request_id = header(&parts.headers, "x-request-id");
    Answer { http_status: parts.status.as_u16(), grpc_status, grpc_message, request_id }
}

/// `remotemedia_requests_total` for `rpc` and `code` in a metrics scrape, summed over outcomes.
pub fn counter(text: &str, rpc: &str, code: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("remotemedia_requests_total{"))
        .filter(|l| l.contains(&format!("rpc=\"{rpc}\"")) && l.contains(&format!("code=\"{code}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A gRPC length-prefixed frame around `payload`, with `declared` as its length field.
pub fn frame(payload: &[u8], declared: u32, compressed: u8) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(compressed);
    b.put_u32(declared);
    b.put_slice(payload);
    b.freeze()
}
