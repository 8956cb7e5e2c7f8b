//! Prometheus metrics and per-request tracing spans.
//!
//! Every label value comes from a closed set (RPC names, status codes, registered node types,
//! limit names), so no label can grow without bound.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tonic::Code;
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::graph::{NodeReport, NodeStatus};

pub const REQUESTS_TOTAL: &str = "remotemedia_requests_total";
pub const REQUEST_DURATION: &str = "remotemedia_request_duration_seconds";
pub const ACTIVE_EXECUTIONS: &str = "remotemedia_active_executions";
pub const ACTIVE_STREAMS: &str = "remotemedia_active_streams";
pub const STREAM_CHUNKS_TOTAL: &str = "remotemedia_stream_chunks_total";
pub const STREAM_CHUNK_DURATION: &str = "remotemedia_stream_chunk_duration_seconds";
pub const NODE_DURATION: &str = "remotemedia_node_duration_seconds";
pub const NODE_FAILURES_TOTAL: &str = "remotemedia_node_failures_total";
pub const LIMIT_REJECTIONS_TOTAL: &str = "remotemedia_limit_rejections_total";
pub const AUTH_REJECTIONS_TOTAL: &str = "remotemedia_auth_rejections_total";
pub const CODEC_DURATION: &str = "remotemedia_codec_duration_seconds";
pub const CONVERSION_DURATION: &str = "remotemedia_conversion_duration_seconds";

/// Latency buckets in seconds, dense below the 5 ms service objective.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Only fails if another recorder was installed first, in which case ours renders empty.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

fn describe() {
    describe_counter!(REQUESTS_TOTAL, "RPCs finished, by rpc and gRPC status code");
    describe_histogram!(REQUEST_DURATION, metrics::Unit::Seconds, "RPC latency by rpc (streams: whole session)");
    describe_gauge!(ACTIVE_EXECUTIONS, "ExecutePipeline calls running now");
    describe_gauge!(ACTIVE_STREAMS, "StreamPipeline sessions open now");
    describe_counter!(STREAM_CHUNKS_TOTAL, "audio chunks processed by streams");
    describe_histogram!(STREAM_CHUNK_DURATION, metrics::Unit::Seconds, "time to process one stream chunk");
    describe_histogram!(NODE_DURATION, metrics::Unit::Seconds, "time inside nodes, by node type and runtime");
    describe_counter!(NODE_FAILURES_TOTAL, "node failures, by node type");
    describe_counter!(LIMIT_REJECTIONS_TOTAL, "requests refused or stopped by a resource limit, by limit");
    describe_counter!(AUTH_REJECTIONS_TOTAL, "requests refused by authentication, by reason");
    describe_histogram!(
        CODEC_DURATION,
        metrics::Unit::Seconds,
        "protobuf encode and decode of one message, by direction"
    );
    describe_histogram!(
        CONVERSION_DURATION,
        metrics::Unit::Seconds,
        "turning request messages into pipeline inputs and results into responses, by rpc"
    );
}

/// gRPC status code names as Prometheus label values.
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

pub fn request_finished(rpc: &'static str, code: Code, elapsed: Duration) {
    counter!(REQUESTS_TOTAL, "rpc" => rpc, "code" => code_label(code)).increment(1);
    histogram!(REQUEST_DURATION, "rpc" => rpc).record(elapsed.as_secs_f64());
}

/// Records an RPC's outcome exactly once: with its code when it finishes, or as CANCELLED if its
/// handler is dropped first (the client went away or its deadline passed).
pub struct RpcRecord {
    rpc: &'static str,
    started: std::time::Instant,
    done: bool,
}

impl RpcRecord {
    pub fn start(rpc: &'static str) -> Self {
        Self { rpc, started: std::time::Instant::now(), done: false }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn finish(mut self, code: Code) {
        self.done = true;
        request_finished(self.rpc, code, self.started.elapsed());
    }
}

impl Drop for RpcRecord {
    fn drop(&mut self) {
        if !self.done {
            tracing::info!(
                rpc = self.rpc,
                elapsed_ms = self.started.elapsed().as_secs_f64() * 1e3,
                "abandoned by the client; work cancelled"
            );
            request_finished(self.rpc, Code::Cancelled, self.started.elapsed());
        }
    }
}

/// Adds one to a gauge for as long as it lives, so every exit path takes it back off.
pub struct Active(&'static str);

impl Active {
    pub fn new(gauge_name: &'static str) -> Self {
        gauge!(gauge_name).increment(1.0);
        Self(gauge_name)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        gauge!(self.0).decrement(1.0);
    }
}

pub fn chunk_processed(elapsed: Duration) {
    counter!(STREAM_CHUNKS_TOTAL).increment(1);
    histogram!(STREAM_CHUNK_DURATION).record(elapsed.as_secs_f64());
}

pub fn nodes_ran(reports: &[NodeReport]) {
    for r in reports.iter().filter(|r| r.status == NodeStatus::Success) {
        histogram!(NODE_DURATION, "node_type" => r.node_type.clone(), "runtime" => r.runtime.name())
            .record(r.execution_time.as_secs_f64());
    }
}

pub fn codec(direction: &'static str, elapsed: Duration) {
    histogram!(CODEC_DURATION, "direction" => direction).record(elapsed.as_secs_f64());
}

pub fn converted(rpc: &'static str, elapsed: Duration) {
    histogram!(CONVERSION_DURATION, "rpc" => rpc).record(elapsed.as_secs_f64());
}

pub fn node_failed(node_type: &str) {
    counter!(NODE_FAILURES_TOTAL, "node_type" => node_type.to_owned()).increment(1);
}

pub fn limit_rejected(limit: &'static str) {
    counter!(LIMIT_REJECTIONS_TOTAL, "limit" => limit).increment(1);
}

pub fn auth_rejected(reason: &'static str) {
    counter!(AUTH_REJECTIONS_TOTAL, "reason" => reason).increment(1);
}

/// Generates `x-request-id` values for requests that arrive without one.
#[derive(Clone, Copy, Default)]
pub struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _request: &http::Request<B>) -> Option<RequestId> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        http::HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// The span every RPC runs in: its request id and method, so every log line carries both.
pub fn rpc_span<B>(request: &http::Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(64).collect::<String>())
        .unwrap_or_default();
    let path = request.uri().path();
    let rpc = path.rsplit('/').next().unwrap_or(path);
    let service = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    tracing::info_span!("rpc", request_id = %request_id, rpc = %rpc, service = %service)
}
