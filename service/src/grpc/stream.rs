//! `StreamPipeline` sessions.
//!
//! One task per session reads a message, processes it, and writes its answer into a small
//! bounded channel before reading the next. A client that sends faster than the pipeline runs
//! therefore fills HTTP/2 flow-control windows and is slowed down; nothing queues without bound.
//! Results go out in arrival order, each carrying its chunk's `sequence`.
//!
//! Life cycle: manifest → `ready` → chunks → `COMMAND_CLOSE` (flush, final metrics, OK) or
//! `COMMAND_CANCEL` (CANCELLED) or disconnect (stop at once). The session's registry entry,
//! stream slot and gauge are released by guards, so every path frees them.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, Streaming};
use tracing::{Instrument, info};

use super::convert::{audio_from_proto, manifest_from_proto, ms, result_to_proto};
use super::lifetime::CallDeadline;
use super::limits::{self, Effective};
use super::observe;
use super::service::record_failure;
use super::state::{AppState, SessionInfo};
use super::status::{self, ServiceError};
use crate::graph::{ExecError, Mode, Pipeline, RequestShape, RunLimits, RunOutput, ValidationError};
use crate::nodes::{INPUT, PortValue, Ports};
use crate::proto::{
    self, StreamMetrics, StreamReady, StreamRequest, StreamResponse, stream_control, stream_request, stream_response,
};
use crate::text;

/// Responses buffered per session before the session waits for the client to read.
const RESPONSE_BUFFER: usize = 8;

pub type ResponseStream = Pin<Box<dyn Stream<Item = Result<StreamResponse, Status>> + Send + 'static>>;

/// Starts a session task and returns its response stream. Refusals (draining, too many
/// streams) happen here, before any message is read.
pub fn start(
    state: Arc<AppState>,
    inbound: Streaming<StreamRequest>,
    deadline: Option<tokio::time::Instant>,
) -> Result<ResponseStream, ServiceError> {
    if state.is_draining() {
        return Err(ServiceError::Draining);
    }
    let permit = state.acquire_stream()?;
    let limits = limits::resolve(None, &state.config.limits)?;
    let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
    let session = Session { state, tx, inbound, limits, deadline, stats: Stats::default(), last_sequence: None };
    tokio::spawn(session.run(permit).instrument(tracing::Span::current()));
    Ok(Box::pin(ReceiverStream::new(rx)))
}

#[derive(Default)]
struct Stats {
    chunks: u64,
    samples: u64,
    latency_total: Duration,
}

impl Stats {
    fn to_proto(&self) -> StreamMetrics {
        StreamMetrics {
            chunks_processed: self.chunks,
            average_latency_ms: if self.chunks == 0 { 0.0 } else { ms(self.latency_total) / self.chunks as f64 },
            total_samples: self.samples,
        }
    }
}

struct Session {
    state: Arc<AppState>,
    tx: mpsc::Sender<Result<StreamResponse, Status>>,
    inbound: Streaming<StreamRequest>,
    limits: Effective,
    /// The client's deadline for the whole stream, if it set one.
    deadline: Option<tokio::time::Instant>,
    stats: Stats,
    last_sequence: Option<u64>,
}

/// How a session ended.
enum End {
    /// Closed by the client: flushed, final metrics sent.
    Closed,
    /// Stopped with a status; `in_band` errors are also sent as a `StreamResponse.error` first.
    Failed { error: ServiceError, in_band: bool },
}

impl Session {
    async fn run(mut self, _permit: OwnedSemaphorePermit) {
        let started = Instant::now();
        let state = self.state.clone();
        let _inflight = state.inflight.enter();
        let end = self.serve().await;
        let (code, outcome) = match &end {
            End::Closed => (Code::Ok, observe::outcome::SUCCESS),
            // The call's deadline ended the response; the client saw DEADLINE_EXCEEDED.
            End::Failed { error: ServiceError::Cancelled(_), .. } if CallDeadline::passed(self.deadline) => {
                (Code::DeadlineExceeded, observe::outcome::DEADLINE_EXCEEDED)
            }
            End::Failed { error, in_band } => {
                if *in_band {
                    let _ = self.send(response(stream_response::Response::Error(error.to_error_response()))).await;
                }
                let status = error.to_status();
                let code = status.code();
                let _ = self.tx.send(Err(status)).await;
                (code, error.outcome())
            }
        };
        observe::request_finished("StreamPipeline", code, outcome, started.elapsed());
        info!(
            code = ?code,
            chunks = self.stats.chunks,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "StreamPipeline finished"
        );
    }

    async fn serve(&mut self) -> End {
        let idle = self.state.config.limits.stream_idle_timeout;
        let first = tokio::select! {
            m = self.inbound.next() => m,
            () = tokio::time::sleep(idle) => return idle_end(idle),
            () = self.state.draining.cancelled() => return End::Failed { error: ServiceError::Draining, in_band: false },
        };
        let manifest = match first {
            None => {
                return End::Failed {
                    error: ServiceError::Cancelled("the client closed the stream before sending a manifest".into()),
                    in_band: false,
                };
            }
            Some(Err(status)) => return client_gone(&status),
            Some(Ok(StreamRequest { request: Some(stream_request::Request::Manifest(m)) })) => m,
            Some(Ok(StreamRequest { request: Some(other) })) => {
                let what = match other {
                    stream_request::Request::AudioChunk(_) => "an audio_chunk",
                    _ => "a control command",
                };
                return protocol_error(ServiceError::OutOfOrder(format!(
                    "the first message of a stream must be the manifest; got {what}"
                )));
            }
            Some(Ok(StreamRequest { request: None })) => {
                return protocol_error(ServiceError::InvalidArgument(
                    "a StreamRequest must set manifest, audio_chunk or control".into(),
                ));
            }
        };

        if let Err(e) = limits::check_manifest_size(&manifest, &self.state.config.limits) {
            return End::Failed { error: e, in_band: true };
        }
        let (manifest, violations) = manifest_from_proto(&manifest);
        let mut pipeline = match self.state.engine.build(&manifest, &RequestShape::stream()).await {
            Ok(_) if !violations.is_empty() => {
                return protocol_error(ExecError::Validation(ValidationError::new(violations)).into());
            }
            Ok(p) => p,
            Err(e) => return protocol_error(ExecError::Validation(e.after(violations)).into()),
        };

        let session_id = uuid::Uuid::new_v4().to_string();
        let cancel = self.state.abort.child_token();
        let _cancel_on_exit = cancel.clone().drop_guard();
        let state = self.state.clone();
        let _session = state.sessions.register(
            session_id.clone(),
            SessionInfo { pipeline: pipeline.name().to_owned(), started: Instant::now(), cancel: cancel.clone() },
        );
        info!(session_id, pipeline = pipeline.name(), nodes = pipeline.len(), "stream ready");
        if self.send(response(stream_response::Response::Ready(StreamReady { session_id }))).await.is_err() {
            return client_left();
        }

        let max_duration = tokio::time::sleep(self.state.config.limits.stream_max_duration);
        tokio::pin!(max_duration);
        let mut idle_deadline = tokio::time::Instant::now() + idle;
        let mut ticker = tokio::time::interval(self.state.config.stream_metrics_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut reported_chunks = 0;

        loop {
            let message = tokio::select! {
                biased;
                () = self.state.draining.cancelled() => {
                    let _ = self.send(metrics_response(&self.stats)).await;
                    return End::Failed { error: ServiceError::Draining, in_band: false };
                }
                () = &mut max_duration => {
                    let limit = self.state.config.limits.stream_max_duration;
                    observe::limit_rejected("stream_max_duration_ms");
                    let _ = self.send(metrics_response(&self.stats)).await;
                    return End::Failed {
                        error: ServiceError::Limit {
                            message: format!("the stream reached its maximum duration of {} ms (stream_max_duration_ms)", limit.as_millis()),
                            limit: "stream_max_duration_ms",
                        },
                        in_band: true,
                    };
                }
                () = tokio::time::sleep_until(idle_deadline) => return idle_end(idle),
                _ = ticker.tick() => {
                    if self.stats.chunks != reported_chunks {
                        reported_chunks = self.stats.chunks;
                        if self.send(metrics_response(&self.stats)).await.is_err() {
                            return client_left();
                        }
                    }
                    continue;
                }
                m = self.inbound.next() => m,
            };
            idle_deadline = tokio::time::Instant::now() + idle;
            let request = match message {
                None => return self.close(&mut pipeline, &cancel).await,
                Some(Err(status)) => return client_gone(&status),
                Some(Ok(StreamRequest { request: Some(r) })) => r,
                Some(Ok(StreamRequest { request: None })) => {
                    return protocol_error(ServiceError::InvalidArgument(
                        "a StreamRequest must set manifest, audio_chunk or control".into(),
                    ));
                }
            };
            match request {
                stream_request::Request::Manifest(_) => {
                    return protocol_error(ServiceError::OutOfOrder(
                        "a second manifest was sent; a stream runs one pipeline (open a new stream for another)".into(),
                    ));
                }
                stream_request::Request::Control(c) => match stream_control::Command::try_from(c.command) {
                    Ok(stream_control::Command::Close) => return self.close(&mut pipeline, &cancel).await,
                    Ok(stream_control::Command::Cancel) => {
                        cancel.cancel();
                        return End::Failed {
                            error: ServiceError::Cancelled("the stream was cancelled by the client".into()),
                            in_band: false,
                        };
                    }
                    _ => {
                        return protocol_error(ServiceError::InvalidArgument(format!(
                            "control.command {} is not COMMAND_CLOSE or COMMAND_CANCEL",
                            c.command
                        )));
                    }
                },
                stream_request::Request::AudioChunk(chunk) => {
                    if let Some(end) = self.chunk(&mut pipeline, chunk, &cancel).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Processes one chunk. `Some(end)` stops the session.
    async fn chunk(
        &mut self,
        pipeline: &mut Pipeline,
        chunk: proto::AudioChunk,
        cancel: &CancellationToken,
    ) -> Option<End> {
        let started = Instant::now();
        let sequence = chunk.sequence;
        if pipeline.index_of(&chunk.node_id).is_none() {
            return Some(protocol_error(ServiceError::InvalidArgument(format!(
                "audio_chunk {sequence}: node_id `{}` is not a node of this pipeline (nodes: {})",
                text::quoted(&chunk.node_id),
                text::list(pipeline.node_ids(), text::MAX_LISTED)
            ))));
        }
        let Some(buffer) = chunk.buffer else {
            return Some(protocol_error(ServiceError::InvalidArgument(format!(
                "audio_chunk {sequence} has no buffer"
            ))));
        };
        let field = format!("audio_chunk {sequence}");
        let audio = match audio_from_proto(&buffer, &field) {
            Ok(a) => a,
            Err(v) => return Some(protocol_error(ExecError::Validation(ValidationError::single(v)).into())),
        };
        if let Err(e) = limits::check_audio(&audio, &field, &self.limits) {
            return Some(End::Failed { error: e, in_band: true });
        }
        let samples = audio.num_samples() as u64;
        let decode_time = started.elapsed();
        let inputs = [(chunk.node_id, Ports::new().with(INPUT, PortValue::Audio(audio)))].into_iter().collect();
        let run_limits =
            RunLimits { timeout: Some(self.limits.timeout), max_memory_bytes: Some(self.limits.memory_bytes) };

        let outcome = tokio::select! {
            r = pipeline.run(inputs, Mode::Chunk, run_limits, cancel) => r,
            () = self.tx.closed() => {
                cancel.cancel();
                return Some(client_left());
            }
        };
        self.last_sequence = Some(sequence);
        self.stats.chunks += 1;
        self.stats.samples += samples;
        match outcome {
            Ok(out) => {
                let message = self.result_message(&out, pipeline.enable_metrics(), sequence, started, decode_time);
                self.stats.latency_total += started.elapsed();
                observe::chunk_processed(observe::outcome::SUCCESS, started.elapsed());
                if self.send(message).await.is_err() {
                    return Some(client_left());
                }
                None
            }
            Err(e @ (ExecError::Node { .. } | ExecError::CircuitOpen { .. })) if !e.ends_stream() => {
                // The chunk failed but the session can go on: say so in-band and keep reading.
                record_failure(&e);
                self.stats.latency_total += started.elapsed();
                observe::chunk_processed(observe::outcome::NODE_EXECUTION, started.elapsed());
                let mut error = ServiceError::from(e).to_error_response();
                error.context = with_sequence(&error.context, sequence);
                if self.send(response(stream_response::Response::Error(error))).await.is_err() {
                    return Some(client_left());
                }
                None
            }
            Err(ExecError::Cancelled) => Some(client_left()),
            Err(e) => {
                record_failure(&e);
                Some(End::Failed { error: e.into(), in_band: true })
            }
        }
    }

    /// Flushes every node, sends what they emit and the final metrics, and ends with OK.
    async fn close(&mut self, pipeline: &mut Pipeline, cancel: &CancellationToken) -> End {
        let started = Instant::now();
        let run_limits =
            RunLimits { timeout: Some(self.limits.timeout), max_memory_bytes: Some(self.limits.memory_bytes) };
        let outcome = tokio::select! {
            r = pipeline.run(Default::default(), Mode::Flush, run_limits, cancel) => r,
            () = self.tx.closed() => return client_left(),
        };
        match outcome {
            Ok(out) if !out.outputs.is_empty() => {
                let sequence = self.last_sequence.map_or(0, |s| s.wrapping_add(1));
                let message = self.result_message(&out, pipeline.enable_metrics(), sequence, started, Duration::ZERO);
                if self.send(message).await.is_err() {
                    return client_left();
                }
            }
            Ok(_) => {}
            Err(e) => {
                record_failure(&e);
                return End::Failed { error: e.into(), in_band: true };
            }
        }
        if self.send(metrics_response(&self.stats)).await.is_err() {
            return client_left();
        }
        End::Closed
    }

    fn result_message(
        &self,
        out: &RunOutput,
        enable_metrics: bool,
        sequence: u64,
        started: Instant,
        decode_time: Duration,
    ) -> StreamResponse {
        observe::nodes_ran(&out.nodes);
        let encode_started = Instant::now();
        let mut result = result_to_proto(out, enable_metrics, Duration::ZERO, Duration::ZERO);
        result.sequence = sequence;
        let serialization = decode_time + encode_started.elapsed();
        observe::converted("StreamPipeline", serialization);
        if let Some(m) = result.metrics.as_mut() {
            m.serialization_time_ms = ms(serialization);
            m.wall_time_ms = ms(started.elapsed());
        }
        response(stream_response::Response::Result(result))
    }

    async fn send(&self, message: StreamResponse) -> Result<(), ()> {
        self.tx.send(Ok(message)).await.map_err(|_| ())
    }
}

fn response(r: stream_response::Response) -> StreamResponse {
    StreamResponse { response: Some(r) }
}

fn metrics_response(stats: &Stats) -> StreamResponse {
    response(stream_response::Response::Metrics(stats.to_proto()))
}

fn protocol_error(error: ServiceError) -> End {
    End::Failed { error, in_band: true }
}

fn client_left() -> End {
    End::Failed { error: ServiceError::Cancelled("the client went away".into()), in_band: false }
}

/// The inbound stream yielded an error: a message the codec refused (too large, malformed) is
/// answered in band and with its status; anything else means the client went away.
fn client_gone(status: &Status) -> End {
    match status::from_codec(status) {
        Some(error) => {
            if let ServiceError::Limit { limit, .. } = &error {
                observe::limit_rejected(limit);
            }
            End::Failed { error, in_band: true }
        }
        None => End::Failed {
            error: ServiceError::Cancelled(format!("the client stream failed: {}", status.message())),
            in_band: false,
        },
    }
}

fn idle_end(idle: Duration) -> End {
    observe::limit_rejected("stream_idle_timeout_ms");
    End::Failed {
        error: ServiceError::Limit {
            message: format!("no message for {} ms; the stream was closed (stream_idle_timeout_ms)", idle.as_millis()),
            limit: "stream_idle_timeout_ms",
        },
        in_band: true,
    }
}

/// Adds `"sequence"` to an error's JSON context.
fn with_sequence(context: &str, sequence: u64) -> String {
    let mut v: Value = serde_json::from_str(context).unwrap_or_else(|_| Value::Object(Default::default()));
    if !v.is_object() {
        v = Value::Object(Default::default());
    }
    v["sequence"] = Value::from(sequence);
    v.to_string()
}
