//! Prometheus metrics and per-request tracing spans.
//!
//! Every label value comes from a closed set (RPC names, status codes, outcomes, registered node
//! types, limit names), so no label can grow without bound. Every family is registered at
//! start-up ([`init`]): counters and gauges at 0 for the label values known up front, so
//! `rate()` and absence alerts work from the first scrape. Process metrics (`process_*`, from
//! `metrics-process`) are refreshed on each scrape.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tonic::Code;
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::graph::{NodeReport, NodeStatus};
use crate::nodes::Runtime;

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
pub const BUILD_INFO: &str = "remotemedia_build_info";
pub const WEBSOCKET_HANDSHAKES_TOTAL: &str = "remotemedia_websocket_handshakes_total";
pub const HTTP2_WRITES_TOTAL: &str = "remotemedia_http2_writes_total";

/// The RPCs, as label values.
pub const RPCS: &[&str] = &["ExecutePipeline", "StreamPipeline", "GetVersion"];

/// What a call came to, as a user sees it: `success`, or what went wrong. In-band failures
/// (the call ended with status OK but carries an error) count as failures.
pub mod outcome {
    pub const SUCCESS: &str = "success";
    pub const VALIDATION: &str = "validation";
    pub const NODE_EXECUTION: &str = "node_execution";
    pub const RESOURCE_LIMIT: &str = "resource_limit";
    pub const AUTHENTICATION: &str = "authentication";
    pub const VERSION_MISMATCH: &str = "version_mismatch";
    pub const INTERNAL: &str = "internal";
    pub const CANCELLED: &str = "cancelled";
    pub const DEADLINE_EXCEEDED: &str = "deadline_exceeded";
    pub const UNAVAILABLE: &str = "unavailable";
}

/// The outcomes of `rpc="other"` calls: a method the server does not have, a wire format it
/// does not speak, a message a health or reflection call could not decode.
const OTHER_RESULTS: &[(Code, &str)] =
    &[(Code::Unimplemented, outcome::VALIDATION), (Code::InvalidArgument, outcome::VALIDATION)];

/// The (status code, outcome) pairs the service produces, registered at 0 for every RPC.
const KNOWN_RESULTS: &[(Code, &str)] = &[
    (Code::Ok, outcome::SUCCESS),
    (Code::Ok, outcome::VALIDATION),
    (Code::Ok, outcome::NODE_EXECUTION),
    (Code::Ok, outcome::RESOURCE_LIMIT),
    (Code::Ok, outcome::INTERNAL),
    (Code::InvalidArgument, outcome::VALIDATION),
    (Code::Unimplemented, outcome::VALIDATION),
    (Code::FailedPrecondition, outcome::VALIDATION),
    (Code::FailedPrecondition, outcome::VERSION_MISMATCH),
    (Code::Aborted, outcome::NODE_EXECUTION),
    (Code::ResourceExhausted, outcome::RESOURCE_LIMIT),
    (Code::Unauthenticated, outcome::AUTHENTICATION),
    (Code::PermissionDenied, outcome::AUTHENTICATION),
    (Code::Unavailable, outcome::UNAVAILABLE),
    (Code::Cancelled, outcome::CANCELLED),
    (Code::DeadlineExceeded, outcome::DEADLINE_EXCEEDED),
    (Code::Internal, outcome::INTERNAL),
];

/// Limit names, as label values of [`LIMIT_REJECTIONS_TOTAL`].
pub const LIMITS: &[&str] = &[
    "max_timeout_ms",
    "max_memory_bytes",
    "max_audio_samples",
    "max_message_bytes",
    "max_pipeline_nodes",
    "max_concurrent_executions",
    "max_concurrent_streams",
    "stream_idle_timeout_ms",
    "stream_max_duration_ms",
    crate::python::models::WAIT_LIMIT,
    crate::nodes::RESAMPLER_MEMORY_LIMIT,
];

/// What became of a WebSocket upgrade request, as values of [`WEBSOCKET_HANDSHAKES_TOTAL`]'s
/// `result` label. Refusals after the upgrade (token, version, cap) are counted as
/// `StreamPipeline` requests, like those of gRPC calls.
pub mod handshake {
    pub const UPGRADED: &str = "upgraded";
    pub const ORIGIN_REFUSED: &str = "origin_refused";
    pub const MALFORMED: &str = "malformed";
    pub const ALL: &[&str] = &[UPGRADED, ORIGIN_REFUSED, MALFORMED];
}

/// Reasons of [`AUTH_REJECTIONS_TOTAL`].
pub const AUTH_REASONS: &[&str] = &["missing", "malformed", "invalid"];

/// Latency buckets in seconds, dense below the 5 ms service objective.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

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

/// Registers every family with its known label values at 0, and the build information.
/// `implementations` are the registered node types with their runtimes (the values of the
/// `node_type` and `runtime` labels).
pub fn init(implementations: &[(String, crate::nodes::Runtime)]) {
    prometheus();
    for rpc in RPCS {
        for (code, outcome) in KNOWN_RESULTS {
            counter!(REQUESTS_TOTAL, "rpc" => *rpc, "code" => code_label(*code), "outcome" => *outcome).absolute(0);
        }
        let _ = histogram!(REQUEST_DURATION, "rpc" => *rpc);
    }
    // Calls to no method of the server, and those refused before any method (their wire format).
    for (code, outcome) in OTHER_RESULTS {
        counter!(REQUESTS_TOTAL, "rpc" => "other", "code" => code_label(*code), "outcome" => *outcome).absolute(0);
    }
    let _ = histogram!(REQUEST_DURATION, "rpc" => "other");
    for rpc in &RPCS[..2] {
        let _ = histogram!(CONVERSION_DURATION, "rpc" => *rpc);
    }
    gauge!(ACTIVE_EXECUTIONS).increment(0.0);
    gauge!(ACTIVE_STREAMS).increment(0.0);
    for outcome in CHUNK_OUTCOMES {
        counter!(STREAM_CHUNKS_TOTAL, "outcome" => outcome).absolute(0);
    }
    let _ = histogram!(STREAM_CHUNK_DURATION);
    for (node_type, runtime) in implementations {
        counter!(NODE_FAILURES_TOTAL, "node_type" => node_type.clone()).absolute(0);
        let _ = histogram!(NODE_DURATION, "node_type" => node_type.clone(), "runtime" => runtime.name());
    }
    for limit in LIMITS {
        counter!(LIMIT_REJECTIONS_TOTAL, "limit" => *limit).absolute(0);
    }
    for reason in AUTH_REASONS {
        counter!(AUTH_REJECTIONS_TOTAL, "reason" => *reason).absolute(0);
    }
    for direction in ["encode", "decode"] {
        let _ = histogram!(CODEC_DURATION, "direction" => direction);
    }
    for result in handshake::ALL {
        counter!(WEBSOCKET_HANDSHAKES_TOTAL, "result" => *result).absolute(0);
    }
    counter!(HTTP2_WRITES_TOTAL).absolute(0);
    gauge!(
        BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "protocol" => crate::grpc::interceptors::version::CURRENT,
        "build_timestamp" => env!("REMOTEMEDIA_BUILD_TIMESTAMP"),
    )
    .set(1.0);
    crate::python::models::register_metrics();
    process().describe();
    process().collect();
}

fn process() -> &'static metrics_process::Collector {
    PROCESS.get_or_init(metrics_process::Collector::default)
}

/// The metrics in the Prometheus text format, with the process metrics refreshed.
pub fn render() -> String {
    let handle = prometheus();
    process().collect();
    handle.run_upkeep();
    handle.render()
}

fn describe() {
    describe_counter!(
        REQUESTS_TOTAL,
        "RPCs finished, by rpc, gRPC status code and outcome (success, or the kind of failure, in-band failures included)"
    );
    describe_histogram!(REQUEST_DURATION, metrics::Unit::Seconds, "RPC latency by rpc (streams: whole session)");
    describe_gauge!(ACTIVE_EXECUTIONS, "ExecutePipeline calls running now");
    describe_gauge!(ACTIVE_STREAMS, "StreamPipeline sessions open now");
    describe_counter!(STREAM_CHUNKS_TOTAL, "audio chunks processed by streams, by outcome");
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
    describe_counter!(
        WEBSOCKET_HANDSHAKES_TOTAL,
        "WebSocket upgrade requests, by result: upgraded, origin_refused (403) or malformed"
    );
    describe_counter!(
        HTTP2_WRITES_TOTAL,
        "socket writes (system calls) on HTTP/2 connections; responses written together share one"
    );
    describe_gauge!(BUILD_INFO, "always 1; the labels name the server's version, protocol and build time");
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

/// Counts a finished RPC with its status code and outcome (see [`outcome`]).
pub fn request_finished(rpc: &'static str, code: Code, outcome: &'static str, elapsed: Duration) {
    counter!(REQUESTS_TOTAL, "rpc" => rpc, "code" => code_label(code), "outcome" => outcome).increment(1);
    histogram!(REQUEST_DURATION, "rpc" => rpc).record(elapsed.as_secs_f64());
}

/// Records an RPC's outcome exactly once: when it finishes, or if its handler is dropped first,
/// as DEADLINE_EXCEEDED when its deadline had passed and as CANCELLED otherwise (the client went
/// away).
pub struct RpcRecord {
    rpc: &'static str,
    started: std::time::Instant,
    deadline: Option<tokio::time::Instant>,
    done: bool,
    /// The call's span (its `request_id`), which a handler dropped by a client that went away
    /// has left when the drop logs.
    span: tracing::Span,
}

impl RpcRecord {
    /// Starts the record of `request`'s call, which from now on counts it (see
    /// [`crate::grpc::lifetime::Counted`]).
    pub fn start<T>(rpc: &'static str, request: &tonic::Request<T>) -> Self {
        crate::grpc::lifetime::Counted::claim(request);
        let deadline = crate::grpc::lifetime::CallDeadline::of(request);
        Self { rpc, started: std::time::Instant::now(), deadline, done: false, span: tracing::Span::current() }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn finish(mut self, code: Code, outcome: &'static str) {
        self.done = true;
        request_finished(self.rpc, code, outcome, self.started.elapsed());
    }
}

impl Drop for RpcRecord {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let _span = self.span.enter();
        let elapsed_ms = self.started.elapsed().as_secs_f64() * 1e3;
        let (code, outcome) = crate::grpc::lifetime::CallDeadline::abandoned(self.deadline);
        if code == Code::DeadlineExceeded {
            tracing::info!(rpc = self.rpc, elapsed_ms, "deadline passed; work cancelled");
        } else {
            tracing::info!(rpc = self.rpc, elapsed_ms, "abandoned by the client; work cancelled");
        }
        request_finished(self.rpc, code, outcome, self.started.elapsed());
    }
}

/// Logs a call that failed at the level its cause deserves: ERROR only for the server's own
/// faults (UNKNOWN, INTERNAL, DATA_LOSS, a broken response body). A client's mistake, a refusal
/// or a shutdown is an expected outcome; the handlers log those at INFO with their reason.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFailure;

impl tower_http::trace::OnFailure<tower_http::classify::GrpcFailureClass> for LogFailure {
    fn on_failure(
        &mut self,
        failure: tower_http::classify::GrpcFailureClass,
        latency: Duration,
        _span: &tracing::Span,
    ) {
        use tower_http::classify::GrpcFailureClass;
        let latency_ms = latency.as_secs_f64() * 1e3;
        match failure {
            GrpcFailureClass::Code(code) => {
                let code = Code::from_i32(code.get());
                if matches!(code, Code::Unknown | Code::Internal | Code::DataLoss) {
                    tracing::error!(code = code_label(code), latency_ms, "call failed");
                } else {
                    tracing::debug!(code = code_label(code), latency_ms, "call ended with an error status");
                }
            }
            GrpcFailureClass::Error(error) => {
                tracing::warn!(error = %crate::text::clip(&error, crate::text::MAX_MESSAGE_BYTES), latency_ms, "call failed");
            }
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

/// The outcomes of a stream chunk after which the session goes on: done, or refused by a node
/// in-band (a node failure, audio the node does not take, no model instance free in time).
pub const CHUNK_OUTCOMES: [&str; 4] =
    [outcome::SUCCESS, outcome::NODE_EXECUTION, outcome::VALIDATION, outcome::RESOURCE_LIMIT];

/// Counts a stream chunk by its outcome, one of [`CHUNK_OUTCOMES`].
pub fn chunk_processed(outcome: &'static str, elapsed: Duration) {
    counter!(STREAM_CHUNKS_TOTAL, "outcome" => outcome).increment(1);
    histogram!(STREAM_CHUNK_DURATION).record(elapsed.as_secs_f64());
}

/// The metrics a stream session records on every chunk, looked up once when it opens. A
/// look-up by name hashes the name and labels and, for a node type label, allocates it: four
/// look-ups per chunk through resample → VAD, which these handles save.
pub struct ChunkMetrics {
    succeeded: Counter,
    duration: Histogram,
    conversion: Histogram,
    /// Node duration histograms by node type and runtime; a pipeline has few node types.
    nodes: Vec<(Arc<str>, Runtime, Histogram)>,
}

impl ChunkMetrics {
    /// Handles for a session of `rpc` over nodes of the given types and runtimes.
    pub fn new<'a>(rpc: &'static str, nodes: impl IntoIterator<Item = (&'a Arc<str>, Runtime)>) -> Self {
        let mut handles: Vec<(Arc<str>, Runtime, Histogram)> = Vec::new();
        for (node_type, runtime) in nodes {
            if !handles.iter().any(|(t, r, _)| t == node_type && *r == runtime) {
                let h = histogram!(NODE_DURATION, "node_type" => node_type.to_string(), "runtime" => runtime.name());
                handles.push((node_type.clone(), runtime, h));
            }
        }
        Self {
            succeeded: counter!(STREAM_CHUNKS_TOTAL, "outcome" => outcome::SUCCESS),
            duration: histogram!(STREAM_CHUNK_DURATION),
            conversion: histogram!(CONVERSION_DURATION, "rpc" => rpc),
            nodes: handles,
        }
    }

    /// A chunk processed successfully in `elapsed`.
    pub fn chunk_succeeded(&self, elapsed: Duration) {
        self.succeeded.increment(1);
        self.duration.record(elapsed.as_secs_f64());
    }

    /// Time spent converting a chunk and its result between wire messages and buffers.
    pub fn converted(&self, elapsed: Duration) {
        self.conversion.record(elapsed.as_secs_f64());
    }

    /// The nodes of one run that were called (failed ones included); a node whose type the
    /// session was not opened with is recorded by name.
    pub fn nodes_ran(&self, reports: &[NodeReport]) {
        for r in reports.iter().filter(|r| r.status != NodeStatus::Skipped) {
            let handle = self
                .nodes
                .iter()
                .find(|(t, rt, _)| (Arc::ptr_eq(t, &r.node_type) || *t == r.node_type) && *rt == r.runtime);
            match handle {
                Some((_, _, h)) => h.record(r.execution_time.as_secs_f64()),
                None => nodes_ran(std::slice::from_ref(r)),
            }
        }
    }
}

/// Time inside every node of a run that was called, whether it succeeded or failed.
pub fn nodes_ran(reports: &[NodeReport]) {
    for r in reports.iter().filter(|r| r.status != NodeStatus::Skipped) {
        histogram!(NODE_DURATION, "node_type" => r.node_type.to_string(), "runtime" => r.runtime.name())
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

/// Counts an execution failure against its cause (node, limit) and logs it once, with the node
/// concerned. Validation errors and cancellations are the caller's and are not logged here.
pub fn exec_failed(e: &crate::graph::ExecError) {
    use crate::graph::ExecError;
    match e {
        // Not the node's fault: no model instance was free in time, or the server's
        // resamplers hold their most memory. The limit is named in the error's context.
        ExecError::Node { source, .. } if source.kind == crate::nodes::NodeErrorKind::ResourceLimit => {
            let named = source.context.as_deref().and_then(|c| c.get("limit")).and_then(serde_json::Value::as_str);
            limit_rejected(
                LIMITS.iter().copied().find(|l| Some(*l) == named).unwrap_or(crate::python::models::WAIT_LIMIT),
            );
            tracing::info!(error = %e, "a server-wide limit refused a node");
        }
        // Not the node's fault either: input it does not take (a rate, a layout, a JSON type).
        ExecError::Node { source, .. } if source.kind == crate::nodes::NodeErrorKind::Validation => {
            tracing::info!(error = %e, "input refused by a node");
        }
        ExecError::Node { node_type, .. } | ExecError::CircuitOpen { node_type, .. } => {
            node_failed(node_type);
            tracing::warn!(error = %e, "node failed");
        }
        ExecError::Timeout { .. } => {
            limit_rejected("max_timeout_ms");
            tracing::warn!(error = %e, "execution timed out");
        }
        ExecError::MemoryLimit { .. } => {
            limit_rejected("max_memory_bytes");
            tracing::warn!(error = %e, "execution over its memory limit");
        }
        ExecError::Internal(_) => tracing::warn!(error = %e, "internal error"),
        ExecError::Validation(_) | ExecError::Cancelled => {}
    }
}

pub fn limit_rejected(limit: &'static str) {
    counter!(LIMIT_REJECTIONS_TOTAL, "limit" => limit).increment(1);
}

/// The counter of socket writes on HTTP/2 connections, for one connection to keep.
pub fn http2_writes() -> Counter {
    counter!(HTTP2_WRITES_TOTAL)
}

pub fn websocket_handshake(result: &'static str) {
    counter!(WEBSOCKET_HANDSHAKES_TOTAL, "result" => result).increment(1);
}

pub fn auth_rejected(reason: &'static str) {
    counter!(AUTH_REJECTIONS_TOTAL, "reason" => reason).increment(1);
}

/// Generates `x-request-id` values for requests that arrive without one.
#[derive(Clone, Copy, Default)]
pub struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _request: &http::Request<B>) -> Option<RequestId> {
        http::HeaderValue::from_str(&new_request_id()).ok().map(RequestId::new)
    }
}

/// A new call id: a random UUID, 32 hex digits.
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Longest client-sent `x-request-id` kept.
const MAX_REQUEST_ID_BYTES: usize = 64;

/// The client's `x-request-id` when it is usable as the call's id: 1 to 64 visible ASCII
/// characters. Anything else is replaced by a generated id ([`keep_usable_request_id`]), so
/// the id in the logs is always the one echoed in the response.
pub fn usable_request_id(headers: &http::HeaderMap) -> Option<&str> {
    let id = headers.get("x-request-id")?.to_str().ok()?;
    (!id.is_empty() && id.len() <= MAX_REQUEST_ID_BYTES && id.bytes().all(|b| b.is_ascii_graphic())).then_some(id)
}

/// Drops an `x-request-id` the call cannot use as its id, for [`NewRequestId`] to replace.
pub fn keep_usable_request_id<B>(mut request: http::Request<B>) -> http::Request<B> {
    if usable_request_id(request.headers()).is_none() {
        request.headers_mut().remove("x-request-id");
    }
    request
}

/// The span every RPC runs in: its request id and method, so every log line carries both.
pub fn rpc_span<B>(request: &http::Request<B>) -> tracing::Span {
    let request_id = usable_request_id(request.headers()).unwrap_or_default();
    let path = request.uri().path();
    // The path is the client's: a long one is cut, as any quoted client text is. The method is
    // all that follows the service (`x/GetVersion` is not GetVersion).
    let (service, rpc) = path.trim_start_matches('/').split_once('/').unwrap_or((path.trim_start_matches('/'), ""));
    let (rpc, service) = (crate::text::quoted(rpc), crate::text::quoted(service));
    tracing::info_span!("rpc", request_id = %request_id, rpc = %rpc, service = %service)
}
