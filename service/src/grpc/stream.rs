//! `StreamPipeline` sessions, over any transport.
//!
//! One task per session reads a message, processes it, and writes its answer into a small
//! bounded channel before reading the next. A client that sends faster than the pipeline runs
//! therefore fills its transport's flow control (HTTP/2 windows; for WebSocket, the socket's
//! buffers once the server stops reading) and is slowed down; nothing queues without bound.
//! Results go out in arrival order, each carrying its chunk's `sequence`.
//!
//! Life cycle: [`Session::open`] waits for the manifest, builds the pipeline and answers
//! `ready`; [`Session::pump`] then processes chunks until `COMMAND_CLOSE` (flush, final
//! metrics, OK), `COMMAND_CANCEL` (CANCELLED), a disconnect (stop at once) or an error. The
//! session's registry entry, stream slot and gauge are released by guards, so every path frees
//! them. How each error reaches the client is decided by [`ServiceError::delivery`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::{Code, Status};
use tracing::{Instrument, info};

use super::convert::{audio_from_proto, manifest_from_proto, ms, result_to_proto};
use super::lifetime::CallDeadline;
use super::limits::{self, Effective};
use super::observe;
use super::state::{AppState, SessionGuard, SessionInfo};
use super::status::{self, Call, Delivery, ServiceError};
use crate::audio::OutputArena;
use crate::graph::{ExecError, Feed, Mode, Pipeline, RequestShape, RunLimits, RunOutput, ValidationError, Violation};
use crate::nodes::{INPUT, PortValue, Ports};
use crate::proto::{
    self, PipelineManifest, StreamMetrics, StreamReady, StreamRequest, StreamResponse, stream_control, stream_request,
    stream_response,
};
use crate::text;

/// Responses buffered per session before the session waits for the client to read, besides
/// the slot kept for the status that ends it ([`Session::last`]).
const RESPONSE_BUFFER: usize = 8;

/// Messages read ahead while a chunk runs off the session's task (a Python node, a heavy native
/// call), so that a `COMMAND_CANCEL` sent behind them stops that chunk at once instead of after
/// everything queued before it. Bounded in count and in bytes: past either bound the session
/// stops reading and the transport's flow control holds the client back, as without it.
const READ_AHEAD: usize = 8;
const READ_AHEAD_BYTES: usize = 4 << 20;

/// A session's requests, from whichever transport carries them (the gRPC request stream, a
/// WebSocket's frames). An `Err` is a message the transport could not decode, or the client
/// going away.
pub type Inbound = Pin<Box<dyn Stream<Item = Result<StreamRequest, Status>> + Send + Sync + 'static>>;

/// A session's responses; the last item is `Err(status)` unless the session ended with OK.
pub type Responses = mpsc::Receiver<Result<StreamResponse, Status>>;

pub type ResponseStream = Pin<Box<dyn Stream<Item = Result<StreamResponse, Status>> + Send + 'static>>;

/// Starts a session for a gRPC `StreamPipeline` call and returns its response stream.
pub fn start(
    state: Arc<AppState>,
    inbound: Inbound,
    deadline: Option<tokio::time::Instant>,
) -> Result<ResponseStream, ServiceError> {
    spawn(state, inbound, deadline, "StreamPipeline").map(|rx| Box::pin(ReceiverStream::new(rx)) as ResponseStream)
}

/// Starts a session task over `inbound` and returns the receiving end of its responses.
/// Refusals (draining, too many streams) happen here, before any message is read. `rpc` names
/// the session in metrics and logs.
pub fn spawn(
    state: Arc<AppState>,
    inbound: Inbound,
    deadline: Option<tokio::time::Instant>,
    rpc: &'static str,
) -> Result<Responses, ServiceError> {
    if state.is_draining() {
        return Err(ServiceError::Draining);
    }
    let permit = state.acquire_stream()?;
    let limits = limits::resolve(None, &state.config.limits)?;
    let (tx, rx) = mpsc::channel(RESPONSE_BUFFER + 1);
    let last = tx.clone().try_reserve_owned().ok();
    let session = Session {
        state,
        tx,
        last,
        inbound,
        limits,
        deadline,
        rpc,
        stats: Stats::default(),
        last_sequence: None,
        failed_chunks: None,
        cancel_requested: false,
        unread: false,
        ahead: ReadAhead::default(),
        inputs: OutputArena::new(),
    };
    tokio::spawn(session.run(permit).instrument(tracing::Span::current()));
    Ok(rx)
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
    /// A slot of the response queue kept from the start for the status that ends the session,
    /// so that it is queued at once even when a client that stopped reading filled the rest.
    last: Option<mpsc::OwnedPermit<Result<StreamResponse, Status>>>,
    inbound: Inbound,
    limits: Effective,
    /// The client's deadline for the whole stream, if it set one.
    deadline: Option<tokio::time::Instant>,
    rpc: &'static str,
    stats: Stats,
    last_sequence: Option<u64>,
    /// The outcome of the first chunk that failed in-band while the session went on: a stream
    /// that then ends OK counts with it, as the caller saw a failure.
    failed_chunks: Option<&'static str>,
    /// Whether the client sent `COMMAND_CANCEL` (rather than going away).
    cancel_requested: bool,
    /// Whether the session ended because its client read no response for the idle timeout.
    unread: bool,
    ahead: ReadAhead,
    /// Where a chunk whose samples arrive unaligned for their type is copied to, so every node
    /// (and the Python bridge) views it without a copy of its own; reused from chunk to chunk.
    inputs: OutputArena,
}

/// Messages taken from the transport while a chunk ran, in arrival order.
#[derive(Default)]
struct ReadAhead {
    /// `None` is the end of the request stream.
    messages: std::collections::VecDeque<Option<Result<StreamRequest, Status>>>,
    bytes: usize,
}

impl ReadAhead {
    fn has_room(&self) -> bool {
        self.messages.len() < READ_AHEAD
            && self.bytes < READ_AHEAD_BYTES
            && !matches!(self.messages.back(), Some(None | Some(Err(_))))
    }

    fn push(&mut self, message: Option<Result<StreamRequest, Status>>) {
        if let Some(Ok(m)) = &message {
            self.bytes += prost::Message::encoded_len(m);
        }
        self.messages.push_back(message);
    }

    fn pop(&mut self) -> Option<Option<Result<StreamRequest, Status>>> {
        let message = self.messages.pop_front()?;
        if let Some(Ok(m)) = &message {
            self.bytes -= prost::Message::encoded_len(m);
        }
        Some(message)
    }
}

/// Whether `message` is a `COMMAND_CANCEL`.
fn is_cancel(message: &Option<Result<StreamRequest, Status>>) -> bool {
    matches!(
        message,
        Some(Ok(StreamRequest { request: Some(stream_request::Request::Control(c)) }))
            if c.command == stream_control::Command::Cancel as i32
    )
}

/// An open session: its pipeline and what frees it.
struct Live {
    pipeline: Pipeline,
    metrics: observe::ChunkMetrics,
    cancel: CancellationToken,
    _cancel_on_exit: DropGuard,
    _registered: SessionGuard,
}

/// How a session ended: closed by the client (flushed, final metrics sent), or with an error
/// delivered as [`ServiceError::delivery`] says.
type End = Result<(), ServiceError>;

impl Session {
    async fn run(mut self, _permit: OwnedSemaphorePermit) {
        let started = Instant::now();
        let state = self.state.clone();
        let _inflight = state.inflight.enter();
        // Open from admission on, building included: the concurrency cap counts the session from
        // there, and the gauge is compared with that cap.
        let _active = observe::Active::new(observe::ACTIVE_STREAMS);
        let end = match self.open().await {
            Ok(mut live) => self.pump(&mut live).await,
            Err(e) => Err(e),
        };
        let (code, outcome) = self.finish(end).await;
        observe::request_finished(self.rpc, code, outcome, started.elapsed());
        info!(
            code = ?code,
            chunks = self.stats.chunks,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "{} finished",
            self.rpc
        );
    }

    /// Delivers how the session ended; returns its status code and outcome.
    async fn finish(&mut self, end: End) -> (Code, &'static str) {
        // Past the call's deadline the response has been (or is about to be) ended with
        // DEADLINE_EXCEEDED, whatever ended the session: the inbound stream cut with it, a
        // cancellation, or a close whose answer came too late.
        // A client that went away right before its deadline did so because of it.
        let abandoned = matches!(&end, Err(ServiceError::Cancelled(_))) && !self.cancel_requested;
        if CallDeadline::passed(self.deadline) || (abandoned && CallDeadline::explains_abandon(self.deadline)) {
            return (Code::DeadlineExceeded, observe::outcome::DEADLINE_EXCEEDED);
        }
        let error = match end {
            Ok(()) => return (Code::Ok, self.failed_chunks.unwrap_or(observe::outcome::SUCCESS)),
            Err(e) => e,
        };
        if error.delivery(Call::Stream) == Delivery::InBandThenStatus {
            let in_band = response(stream_response::Response::Error(error.to_error_response()));
            // A client that read nothing for the idle timeout, or one past the grace period,
            // gets no more waiting: the in-band copy goes only if there is room.
            if self.unread || self.state.abort.is_cancelled() {
                let _ = self.tx.try_send(Ok(in_band));
            } else {
                let _ = self.send(in_band).await;
            }
        }
        let status = error.to_status();
        let code = status.code();
        match self.last.take() {
            Some(slot) => drop(slot.send(Err(status))),
            None => drop(self.tx.try_send(Err(status))),
        }
        (code, error.outcome())
    }

    /// Waits for the manifest, builds the pipeline and answers `ready`.
    async fn open(&mut self) -> Result<Live, ServiceError> {
        let idle = self.state.config.limits.stream_idle_timeout;
        let first = tokio::select! {
            m = self.inbound.next() => m,
            () = tokio::time::sleep(idle) => return Err(idle_limit(idle)),
            () = self.state.draining.cancelled() => return Err(ServiceError::Draining),
        };
        // A WebSocket client that leaves drops the session's responses before its requests end.
        if first.is_none() && self.tx.is_closed() {
            return Err(client_left());
        }
        let manifest = first_manifest(first)?;
        limits::check_manifest_size(&manifest, &self.state.config.limits)?;
        let (manifest, violations) = manifest_from_proto(&manifest);
        // Building is bounded by the time limit of a chunk, as a request's build is by its own: a
        // Python node is made on a Python worker, which waits for the GIL (another node's native
        // call can hold it for minutes). A client that leaves meanwhile ends the build; its other
        // messages are read once the pipeline is built.
        let (limit, shape) = (self.limits.timeout, RequestShape::stream());
        let built = tokio::select! {
            built = self.state.build_within(&manifest, &shape, limit) => built?,
            () = self.tx.closed() => return Err(client_left()),
        };
        let pipeline = match built {
            Ok(_) if !violations.is_empty() => {
                return Err(ExecError::Validation(ValidationError::new(violations)).into());
            }
            Ok(p) => p,
            Err(e) => return Err(ExecError::Validation(e.after(violations)).into()),
        };

        let session_id = uuid::Uuid::new_v4().to_string();
        let cancel = self.state.abort.child_token();
        let info =
            SessionInfo { pipeline: pipeline.name().to_owned(), started: Instant::now(), cancel: cancel.clone() };
        let live = Live {
            metrics: observe::ChunkMetrics::new(self.rpc, pipeline.node_types()),
            _cancel_on_exit: cancel.clone().drop_guard(),
            _registered: self.state.sessions.register(session_id.clone(), info),
            pipeline,
            cancel,
        };
        info!(session_id, pipeline = live.pipeline.name(), nodes = live.pipeline.len(), "stream ready");
        self.send(response(stream_response::Response::Ready(StreamReady { session_id }))).await?;
        Ok(live)
    }

    /// Processes messages until the session ends.
    async fn pump(&mut self, live: &mut Live) -> End {
        let limits = &self.state.config.limits;
        let (idle, longest) = (limits.stream_idle_timeout, limits.stream_max_duration);
        let max_duration = tokio::time::sleep(longest);
        tokio::pin!(max_duration);
        // The futures of this loop live across its turns: made anew on every message, they
        // registered with the timer wheel and the drain token's waiter list (a lock each,
        // shared by every session) and left them again, per chunk.
        let drain = self.state.draining.child_token();
        let draining = drain.cancelled();
        tokio::pin!(draining);
        // One timer for idleness, moved on only when it fires: the session notes when it last
        // began to wait for the client (after each chunk's work, whose time is not the
        // client's silence), and a timer that fires early is set again.
        let mut waiting_since = tokio::time::Instant::now();
        let idle_timer = tokio::time::sleep(idle);
        tokio::pin!(idle_timer);
        let mut ticker = tokio::time::interval(self.state.config.stream_metrics_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut reported_chunks = 0;

        loop {
            // Messages read ahead while a chunk ran skip the wait below, and with it the drain
            // and the maximum duration: a client that keeps its pipeline busy would otherwise
            // have new chunks served for the whole grace period, and then be cut off.
            let message = if let Some(message) = self.ahead.pop() {
                if drain.is_cancelled() {
                    return self.end_with(ServiceError::Draining).await;
                }
                if max_duration.is_elapsed() {
                    return self.end_with(max_duration_limit(longest)).await;
                }
                message
            } else {
                tokio::select! {
                    biased;
                    () = &mut draining => {
                        return self.end_with(ServiceError::Draining).await;
                    }
                    () = &mut max_duration => {
                        return self.end_with(max_duration_limit(longest)).await;
                    }
                    () = &mut idle_timer => {
                        let due = waiting_since + idle;
                        if due <= tokio::time::Instant::now() {
                            return Err(idle_limit(idle));
                        }
                        idle_timer.as_mut().reset(due);
                        continue;
                    }
                    _ = ticker.tick() => {
                        if self.stats.chunks != reported_chunks {
                            reported_chunks = self.stats.chunks;
                            self.send(metrics_response(&self.stats)).await?;
                        }
                        continue;
                    }
                    m = self.inbound.next() => m,
                }
            };
            let request = match message {
                // A WebSocket client that leaves drops the session's responses before its
                // requests end: gone, not closing.
                None if self.tx.is_closed() => return Err(client_left()),
                None => return self.close(live).await,
                Some(Err(status)) => return Err(client_gone(&status)),
                Some(Ok(StreamRequest { request: Some(r) })) => r,
                Some(Ok(StreamRequest { request: None })) => return Err(empty_request()),
            };
            match request {
                stream_request::Request::Manifest(_) => {
                    return Err(ServiceError::OutOfOrder(Violation::new(
                        "manifest",
                        "a second manifest was sent; a stream runs one pipeline (open a new stream for another)",
                    )));
                }
                stream_request::Request::Control(c) => match stream_control::Command::try_from(c.command) {
                    Ok(stream_control::Command::Close) => return self.close(live).await,
                    Ok(stream_control::Command::Cancel) => {
                        live.cancel.cancel();
                        self.cancel_requested = true;
                        return Err(cancelled_by_client());
                    }
                    _ => {
                        return Err(ServiceError::InvalidArgument(Violation::new(
                            "control.command",
                            format!("control.command {} is not COMMAND_CLOSE or COMMAND_CANCEL", c.command),
                        )));
                    }
                },
                stream_request::Request::AudioChunk(chunk) => {
                    self.chunk(live, chunk).await?;
                    // A client waiting for a slow result is not idle: closed the moment the
                    // result arrived, it could not even send its close.
                    waiting_since = tokio::time::Instant::now();
                }
            }
        }
    }

    /// Processes one chunk and sends its result; a failure that ends the session is `Err`.
    async fn chunk(&mut self, live: &mut Live, chunk: proto::AudioChunk) -> End {
        let started = Instant::now();
        let sequence = chunk.sequence;
        let pipeline = &mut live.pipeline;
        let Some(index) = pipeline.index_of(&chunk.node_id) else {
            return Err(ServiceError::InvalidArgument(
                Violation::new(
                    "audio_chunk.node_id",
                    format!(
                        "audio_chunk {sequence}: node_id `{}` is not a node of this pipeline (nodes: {})",
                        text::quoted(&chunk.node_id),
                        text::list(pipeline.node_ids(), text::MAX_LISTED)
                    ),
                )
                .on_node(&chunk.node_id),
            ));
        };
        if let Err(why) = pipeline.check_audio_input(index) {
            return Err(ServiceError::InvalidArgument(
                Violation::new("audio_chunk.node_id", format!("audio_chunk {sequence}: {why}")).on_node(&chunk.node_id),
            ));
        }
        if sequence == u64::MAX {
            // The flush's result answers the number after the last chunk's; there is none.
            return Err(ServiceError::InvalidArgument(Violation::new(
                "audio_chunk.sequence",
                format!(
                    "audio_chunk {sequence}: sequence 2^64 - 1 is kept for the result of the close that follows it; \
                     number chunks below it"
                ),
            )));
        }
        let Some(buffer) = chunk.buffer else {
            return Err(ServiceError::InvalidArgument(Violation::new(
                "audio_chunk.buffer",
                format!("audio_chunk {sequence} has no buffer"),
            )));
        };
        let field = ChunkField(sequence);
        let audio = audio_from_proto(&buffer, &field).map_err(|v| {
            // Named by the request field's path, as the stream's other ending errors are; the
            // message keeps the chunk's sequence.
            let path = v.field.replacen(&field.to_string(), "audio_chunk.buffer", 1);
            ServiceError::InvalidArgument(Violation { field: path, ..v })
        })?;
        limits::check_audio(&audio, &field, &self.limits)?;
        let audio = self.inputs.aligned(audio);
        let samples = audio.num_samples() as u64;
        let decode_time = started.elapsed();
        let feed = Feed::from_buf([(index, Ports::new().with(INPUT, PortValue::Audio(audio)))]);
        let run_limits =
            RunLimits { timeout: Some(self.limits.timeout), max_memory_bytes: Some(self.limits.memory_bytes) };

        let outcome = {
            let run = pipeline.run_fed(feed, Mode::Chunk, run_limits, &live.cancel);
            tokio::pin!(run);
            loop {
                tokio::select! {
                    // A run of native nodes finishes at its first poll; the watch on the client,
                    // which takes the response channel's lock to register, and the read-ahead are
                    // then never polled.
                    biased;
                    r = &mut run => break r,
                    () = self.tx.closed() => {
                        live.cancel.cancel();
                        return Err(client_left());
                    }
                    m = self.inbound.next(), if self.ahead.has_room() => {
                        if is_cancel(&m) {
                            live.cancel.cancel();
                            self.cancel_requested = true;
                            return Err(cancelled_by_client());
                        }
                        self.ahead.push(m);
                    }
                }
            }
        };
        self.last_sequence = Some(sequence);
        self.stats.chunks += 1;
        self.stats.samples += samples;
        self.stats.latency_total += started.elapsed();
        match outcome {
            Ok(out) => {
                let message =
                    result_message(&out, pipeline.enable_metrics(), sequence, started, decode_time, &live.metrics);
                pipeline.recycle(out);
                live.metrics.chunk_succeeded(started.elapsed());
                self.send(message).await
            }
            // Shutdown ran out of grace while the chunk ran: the stream ends as a draining one
            // does (final metrics, UNAVAILABLE), not as if its client had left.
            Err(ExecError::Cancelled) if self.state.abort.is_cancelled() => self.end_with(ServiceError::ShutDown).await,
            Err(ExecError::Cancelled) => Err(client_left()),
            Err(e) => {
                live.metrics.nodes_ran(&pipeline.take_failed_reports());
                observe::exec_failed(&e);
                let error = ServiceError::from(e);
                if error.delivery(Call::StreamChunk) != Delivery::InBandAndContinue {
                    return Err(error);
                }
                // The chunk failed but the session can go on: say so in-band and keep reading.
                observe::chunk_processed(error.outcome(), started.elapsed());
                self.failed_chunks.get_or_insert(error.outcome());
                let mut in_band = error.to_error_response();
                in_band.context = with_sequence(&in_band.context, sequence);
                self.send(response(stream_response::Response::Error(in_band))).await
            }
        }
    }

    /// Flushes every node, sends what they emit and the final metrics, and ends with OK.
    async fn close(&mut self, live: &mut Live) -> End {
        let started = Instant::now();
        let run_limits =
            RunLimits { timeout: Some(self.limits.timeout), max_memory_bytes: Some(self.limits.memory_bytes) };
        let outcome = tokio::select! {
            // Nothing is flushed for a client that is gone.
            biased;
            () = self.tx.closed() => return Err(client_left()),
            r = live.pipeline.run(Default::default(), Mode::Flush, run_limits, &live.cancel) => r,
        };
        // What the flush emits answers the sequence after the last chunk's.
        // (No chunk is numbered u64::MAX: `chunk` refuses it.)
        let sequence = self.last_sequence.map_or(0, |s| s + 1);
        match outcome {
            Ok(out) if !out.outputs.is_empty() => {
                let enable_metrics = live.pipeline.enable_metrics();
                let message = result_message(&out, enable_metrics, sequence, started, Duration::ZERO, &live.metrics);
                self.send(message).await?;
            }
            Ok(_) => {}
            Err(e) => {
                live.metrics.nodes_ran(&live.pipeline.take_failed_reports());
                observe::exec_failed(&e);
                let error = ServiceError::from(e);
                if error.delivery(Call::StreamChunk) != Delivery::InBandAndContinue {
                    return Err(error);
                }
                // A node that fails while flushing fails as it would on a chunk: told in-band,
                // and the close still ends with the final metrics and OK.
                self.failed_chunks.get_or_insert(error.outcome());
                let mut in_band = error.to_error_response();
                in_band.context = with_sequence(&in_band.context, sequence);
                self.send(response(stream_response::Response::Error(in_band))).await?;
            }
        }
        self.send(metrics_response(&self.stats)).await
    }

    /// Sends the stream's final metrics, then ends it with `error` (a drain, a limit, the end of
    /// the grace period).
    async fn end_with(&mut self, error: ServiceError) -> End {
        let _ = self.send(metrics_response(&self.stats)).await;
        Err(error)
    }

    /// Queues a response; a closed channel means the client went away.
    async fn send(&mut self, message: StreamResponse) -> Result<(), ServiceError> {
        let message = match self.tx.try_send(Ok(message)) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(client_left()),
            Err(mpsc::error::TrySendError::Full(message)) => message,
        };
        // A client that reads nothing holds the session here for at most the idle timeout:
        // over gRPC its HTTP/2 window keeps the transport alive, and the session would hold its
        // pipeline, its model leases and its slot of max_concurrent_streams until the connection
        // closed. Past the grace period it ends as the shutdown it is (UNAVAILABLE).
        let idle = self.state.config.limits.stream_idle_timeout;
        tokio::select! {
            biased;
            sent = self.tx.send(message) => sent.map_err(|_| client_left()),
            () = self.state.abort.cancelled() => Err(ServiceError::ShutDown),
            () = tokio::time::sleep(idle) => {
                self.unread = true;
                observe::limit_rejected("stream_idle_timeout_ms");
                Err(ServiceError::Limit {
                    message: format!(
                        "the client read no response for {} ms; the stream was closed (stream_idle_timeout_ms)",
                        idle.as_millis()
                    ),
                    limit: "stream_idle_timeout_ms",
                })
            }
        }
    }
}

/// The result message of a run, recording its node and conversion times.
fn result_message(
    out: &RunOutput,
    enable_metrics: bool,
    sequence: u64,
    started: Instant,
    decode_time: Duration,
    metrics: &observe::ChunkMetrics,
) -> StreamResponse {
    metrics.nodes_ran(&out.nodes);
    let encode_started = Instant::now();
    let mut result = result_to_proto(out, enable_metrics, Duration::ZERO, Duration::ZERO);
    result.sequence = sequence;
    let serialization = decode_time + encode_started.elapsed();
    metrics.converted(serialization);
    if let Some(m) = result.metrics.as_mut() {
        m.serialization_time_ms = ms(serialization);
        m.wall_time_ms = ms(started.elapsed());
    }
    response(stream_response::Response::Result(result))
}

/// Names a chunk's buffer in errors (`audio_chunk 7`); formatted only when an error names it,
/// which saves an allocation per chunk.
struct ChunkField(u64);

impl std::fmt::Display for ChunkField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "audio_chunk {}", self.0)
    }
}

fn response(r: stream_response::Response) -> StreamResponse {
    StreamResponse { response: Some(r) }
}

fn metrics_response(stats: &Stats) -> StreamResponse {
    response(stream_response::Response::Metrics(stats.to_proto()))
}

/// The manifest from a stream's first message, or why there is none.
fn first_manifest(first: Option<Result<StreamRequest, Status>>) -> Result<PipelineManifest, ServiceError> {
    match first {
        None => Err(ServiceError::OutOfOrder(Violation::new(
            "manifest",
            "the client closed its side of the stream before sending a manifest; the first message of a stream must be \
             the manifest",
        ))),
        Some(Err(status)) => Err(client_gone(&status)),
        Some(Ok(StreamRequest { request: Some(stream_request::Request::Manifest(m)) })) => Ok(m),
        Some(Ok(StreamRequest { request: Some(other) })) => {
            let what = match other {
                stream_request::Request::AudioChunk(_) => "an audio_chunk",
                _ => "a control command",
            };
            Err(ServiceError::OutOfOrder(Violation::new(
                "manifest",
                format!("the first message of a stream must be the manifest; got {what}"),
            )))
        }
        Some(Ok(StreamRequest { request: None })) => Err(empty_request()),
    }
}

fn empty_request() -> ServiceError {
    ServiceError::InvalidArgument(Violation::new(
        "request",
        "a StreamRequest must set manifest, audio_chunk or control",
    ))
}

fn cancelled_by_client() -> ServiceError {
    ServiceError::Cancelled("the stream was cancelled by the client".into())
}

fn client_left() -> ServiceError {
    ServiceError::Cancelled("the client went away".into())
}

/// The inbound stream yielded an error: a message the transport refused (too large, malformed)
/// is answered with its own error; anything else means the client went away.
fn client_gone(status: &Status) -> ServiceError {
    match status::from_codec(status) {
        Some(error) => {
            if let ServiceError::Limit { limit, .. } = &error {
                observe::limit_rejected(limit);
            }
            error
        }
        None => ServiceError::Cancelled(format!(
            "the client stream failed: {}",
            text::clip(status.message(), text::MAX_MESSAGE_BYTES)
        )),
    }
}

fn max_duration_limit(longest: Duration) -> ServiceError {
    observe::limit_rejected("stream_max_duration_ms");
    ServiceError::Limit {
        message: format!(
            "the stream reached its maximum duration of {} ms (stream_max_duration_ms)",
            longest.as_millis()
        ),
        limit: "stream_max_duration_ms",
    }
}

fn idle_limit(idle: Duration) -> ServiceError {
    observe::limit_rejected("stream_idle_timeout_ms");
    ServiceError::Limit {
        message: format!("no message for {} ms; the stream was closed (stream_idle_timeout_ms)", idle.as_millis()),
        limit: "stream_idle_timeout_ms",
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
