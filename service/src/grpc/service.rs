//! `remotemedia.v1.PipelineService`: `ExecutePipeline`, `GetVersion`, and the entry of
//! `StreamPipeline` (the session itself lives in [`super::stream`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::info;

use super::convert::{audio_from_proto, data_from_proto, manifest_from_proto, node_type_info, result_to_proto};
use super::interceptors::version;
use super::lifetime::{CallDeadline, Counted, RequestMessages, RequestReset};
use super::limits;
use super::observe;
use super::state::AppState;
use super::status::{self, Call, Delivery, ServiceError};
use super::stream;
use crate::graph::{ExecError, Mode, RequestShape, RunLimits, ValidationError};
use crate::nodes::{DATA, INPUT, PortValue, Ports, Registry};
use crate::proto::pipeline_service_server::PipelineService;
use crate::proto::{
    ErrorType, ExecuteRequest, ExecuteResponse, StreamRequest, VersionInfo, VersionRequest, VersionResponse,
    execute_response,
};

/// The service implementation; cheap to clone.
#[derive(Clone)]
pub struct Pipelines {
    state: Arc<AppState>,
}

impl Pipelines {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    /// Runs one `ExecutePipeline` call. `Ok` carries either a result or an in-band error;
    /// `Err` is a rejection answered with a status.
    async fn execute(&self, request: ExecuteRequest) -> Result<ExecuteResponse, ServiceError> {
        let received = Instant::now();
        let state = &self.state;
        if state.is_draining() {
            return Err(ServiceError::Draining);
        }
        version::check(&request.client_version)?;
        let _permit = state.acquire_execution()?;
        let _inflight = state.inflight.enter();
        let _active = observe::Active::new(observe::ACTIVE_EXECUTIONS);

        match self.run(request, received).await {
            Ok(result) => Ok(ExecuteResponse { outcome: Some(execute_response::Outcome::Result(result)) }),
            Err(e) if e.delivery(Call::Execute) == Delivery::InBand => {
                Ok(ExecuteResponse { outcome: Some(execute_response::Outcome::Error(e.to_error_response())) })
            }
            Err(e) => Err(e),
        }
    }

    async fn run(
        &self,
        request: ExecuteRequest,
        received: Instant,
    ) -> Result<crate::proto::ExecutionResult, ServiceError> {
        let state = &self.state;
        let limits = limits::resolve(request.resource_limits.as_ref(), &state.config.limits)?;

        let decode_started = Instant::now();
        let manifest_proto = request.manifest.unwrap_or_default();
        limits::check_manifest_size(&manifest_proto, &state.config.limits)?;
        let (manifest, mut violations) = manifest_from_proto(&manifest_proto);
        let mut inputs: BTreeMap<String, Ports> = BTreeMap::new();
        for (node, buffer) in &request.audio_inputs {
            let field = format!("audio_inputs[{}]", crate::text::quoted(node));
            match audio_from_proto(buffer, &field) {
                Ok(audio) => {
                    limits::check_audio(&audio, &field, &limits)?;
                    let audio = audio.into_aligned();
                    inputs.entry(node.clone()).or_default().insert(INPUT, PortValue::Audio(audio));
                }
                Err(v) => violations.push(v),
            }
        }
        for (node, text) in &request.data_inputs {
            match data_from_proto(text, node) {
                Ok(value) => inputs.entry(node.clone()).or_default().insert(DATA, PortValue::data(value)),
                Err(v) => violations.push(v),
            }
        }
        let decode_time = decode_started.elapsed();

        let shape = RequestShape {
            audio_inputs: Some(request.audio_inputs.keys().cloned().collect::<BTreeSet<_>>()),
            data_inputs: request.data_inputs.keys().cloned().collect(),
            output_nodes: request.output_nodes.clone(),
        };
        // The time limit covers building too.
        let limit_started = tokio::time::Instant::now();
        let mut pipeline = match state.build_within(&manifest, &shape, limits.timeout).await? {
            Ok(p) if violations.is_empty() => p,
            Ok(_) => return Err(ExecError::Validation(ValidationError::new(violations)).into()),
            Err(e) => return Err(ExecError::Validation(e.after(violations)).into()),
        };

        // Cancelled if the client goes away (this future is dropped) or shutdown runs out of time.
        let cancel = state.abort.child_token();
        let _cancel_on_drop = cancel.clone().drop_guard();
        let left = limits.timeout.saturating_sub(limit_started.elapsed());
        let run_limits = RunLimits { timeout: Some(left), max_memory_bytes: Some(limits.memory_bytes) };
        let outcome = match pipeline.run(inputs, Mode::Once, run_limits, &cancel).await {
            // The limit the request had, not what was left of it after building.
            Err(ExecError::Timeout { running, .. }) => Err(ExecError::Timeout { limit: limits.timeout, running }),
            other => other,
        };
        let out = match outcome {
            Ok(out) => out,
            // Shutdown ran out of grace: the call was cut, not abandoned by its client, and may
            // be retried elsewhere.
            Err(ExecError::Cancelled) if state.abort.is_cancelled() => return Err(ServiceError::ShutDown),
            Err(e) => {
                observe::nodes_ran(&pipeline.take_failed_reports());
                observe::exec_failed(&e);
                return Err(e.into());
            }
        };
        observe::nodes_ran(&out.nodes);

        let encode_started = Instant::now();
        let mut result = result_to_proto(&out, pipeline.enable_metrics(), Duration::ZERO, Duration::ZERO);
        let serialization = decode_time + encode_started.elapsed();
        observe::converted("ExecutePipeline", serialization);
        if let Some(m) = result.metrics.as_mut() {
            m.serialization_time_ms = super::convert::ms(serialization);
            m.wall_time_ms = super::convert::ms(received.elapsed());
        }
        Ok(result)
    }
}

/// `VersionInfo` for this build and this registry, the node catalogue included.
pub fn version_info(registry: &Registry) -> VersionInfo {
    VersionInfo {
        protocol_version: version::CURRENT.to_owned(),
        runtime_version: env!("CARGO_PKG_VERSION").to_owned(),
        supported_node_types: registry.node_types(),
        supported_protocols: version::SUPPORTED.iter().map(|s| (*s).to_owned()).collect(),
        build_timestamp: env!("REMOTEMEDIA_BUILD_TIMESTAMP").to_owned(),
        node_types: registry.catalogue().iter().map(node_type_info).collect(),
    }
}

#[tonic::async_trait]
impl PipelineService for Pipelines {
    async fn execute_pipeline(&self, request: Request<ExecuteRequest>) -> Result<Response<ExecuteResponse>, Status> {
        let record = observe::RpcRecord::start("ExecutePipeline", &request);
        let started = Instant::now();
        let messages = RequestMessages::of(&request);
        let request = request.into_inner();
        let nodes = request.manifest.as_ref().map_or(0, |m| m.nodes.len());
        let outcome = match one_message(messages) {
            Ok(()) => self.execute(request).await,
            Err(e) => Err(e),
        };
        match &outcome {
            Ok(ExecuteResponse { outcome: Some(execute_response::Outcome::Error(e)) }) => {
                let error_type = ErrorType::try_from(e.error_type).unwrap_or(ErrorType::Internal);
                record.finish(tonic::Code::Ok, status::outcome_of(error_type));
            }
            Ok(_) => record.finish(tonic::Code::Ok, observe::outcome::SUCCESS),
            Err(e) => record.finish(e.to_status().code(), e.outcome()),
        }
        match outcome {
            Ok(response) => {
                let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
                // `error` only when the run failed (in-band), as on every other line.
                match &response.outcome {
                    Some(execute_response::Outcome::Error(e)) => {
                        info!(nodes, elapsed_ms, error = e.message.as_str(), "ExecutePipeline finished");
                    }
                    _ => info!(nodes, elapsed_ms, "ExecutePipeline finished"),
                }
                Ok(Response::new(response))
            }
            Err(e) => {
                let status = e.to_status();
                if matches!(e, ServiceError::ShutDown) {
                    info!(error = %e, code = ?status.code(), "ExecutePipeline cut short by the shutdown");
                } else {
                    info!(error = %e, code = ?status.code(), "ExecutePipeline refused");
                }
                Err(status)
            }
        }
    }

    type StreamPipelineStream = stream::ResponseStream;

    async fn stream_pipeline(
        &self,
        request: Request<Streaming<StreamRequest>>,
    ) -> Result<Response<Self::StreamPipelineStream>, Status> {
        let deadline = CallDeadline::of(&request);
        // A client that resets the call (a cancel, its deadline) ends the request stream as one
        // that finished sending would; the reset is made an error here, so the session is
        // cancelled instead of closed (flushed and counted OK).
        let reset = RequestReset::of(&request);
        let ended_by_reset = futures::stream::once(async move { reset.happened() })
            .filter_map(|reset| async move { reset.then(|| Err(Status::cancelled("the client reset the stream"))) });
        let inbound: stream::Inbound = Box::pin(request.into_inner().chain(ended_by_reset));
        stream::start(self.state.clone(), inbound, deadline).map(Response::new).map_err(|e| {
            observe::request_finished("StreamPipeline", e.to_status().code(), e.outcome(), Duration::ZERO);
            info!(error = %e, "StreamPipeline refused");
            e.to_status()
        })
    }

    async fn get_version(&self, request: Request<VersionRequest>) -> Result<Response<VersionResponse>, Status> {
        Counted::claim(&request);
        let started = Instant::now();
        if let Err(e) = one_message(RequestMessages::of(&request)) {
            let status = e.to_status();
            observe::request_finished("GetVersion", status.code(), e.outcome(), started.elapsed());
            info!(error = %e, "GetVersion refused");
            return Err(status);
        }
        let client_version = request.into_inner().client_version;
        let (compatible, compatibility_message) = match version::check(&client_version) {
            Ok(()) => (true, format!("protocol {} is supported", version::CURRENT)),
            Err(e) => (false, e.to_string()),
        };
        let response =
            VersionResponse { version_info: Some(self.state.version_info.clone()), compatible, compatibility_message };
        observe::request_finished("GetVersion", tonic::Code::Ok, observe::outcome::SUCCESS, started.elapsed());
        Ok(Response::new(response))
    }
}

/// A unary call carries exactly one request message; tonic reads the first and drops the rest.
fn one_message(messages: usize) -> Result<(), ServiceError> {
    if messages > 1 {
        return Err(ServiceError::InvalidArgument(crate::graph::Violation::new(
            "request",
            format!("the call carried {messages} request messages; a unary call takes exactly one"),
        )));
    }
    Ok(())
}
