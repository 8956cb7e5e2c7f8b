//! One upgraded socket carrying one `StreamPipeline` session.
//!
//! One task per socket moves frames both ways: client frames become the session's requests,
//! through a queue of [`INBOUND_QUEUE`] requests, and the session's responses become frames. A
//! frame is read only once the queue has room for it, so a client that sends faster than its
//! pipeline runs fills the TCP buffers and then its own send buffer; nothing queues without
//! bound here. Writes of responses wait for the socket the same way.
//!
//! The session ends with its status, sent as the close frame ([`super::close`]); the client's
//! close is then awaited for [`CLOSE_TIMEOUT`]. A client that goes away (its close frame, a
//! reset, a keepalive ping left unanswered) drops the session's response channel, which cancels
//! the session at once. A frame that is not a `StreamRequest` (text, undecodable, too large)
//! becomes the session's last request, as the error the gRPC codec would report, so the session
//! ends as a gRPC call would; a frame too large to read leaves the rest of it on the socket,
//! which is then read and dropped (bounded like a refused HTTP/1.1 body) so the client can
//! finish sending and read the close.
//!
//! Refusals before the session (token, version, cap, draining) are a session that answers with
//! the error and ends at once: the in-band error, then the close.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tonic::Status;
use tracing::{debug, info};

use super::super::interceptors::{LINGER_LIMIT_BYTES, LINGER_TIMEOUT};
use super::super::lifetime;
use super::super::observe;
use super::super::state::AppState;
use super::super::status::{self, ServiceError};
use super::super::stream::{self, Responses};
use super::RPC;
use super::close::Close;
use crate::proto::{StreamRequest, StreamResponse, stream_response};

pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Requests read from the socket ahead of the session.
pub const INBOUND_QUEUE: usize = 4;
/// How long, once the grace period of a shutdown ran out, the session's last status has to go
/// out as the close frame before the connection is dropped.
const ABORT_CLOSE_WAIT: Duration = Duration::from_millis(500);
/// How long the client has to answer the server's close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

type Request = Result<StreamRequest, Status>;

/// Serves `socket`: the session if `admission` allows it, else the refusal.
/// `deadline` is the client's (its instant and the timeout it gave): the session ends there with
/// DEADLINE_EXCEEDED, as a gRPC call's does.
pub async fn run(
    socket: Socket,
    state: Arc<AppState>,
    admission: Result<(), ServiceError>,
    deadline: Option<(Instant, Duration)>,
) {
    let _inflight = state.inflight.enter();
    let (inbound, requests) = mpsc::channel(INBOUND_QUEUE);
    let session = admission.and_then(|()| {
        stream::spawn(state.clone(), Box::pin(ReceiverStream::new(requests)), deadline.map(|(at, _)| at), RPC)
    });
    let responses = match session {
        Ok(responses) => responses,
        Err(error) => refusal(&error),
    };
    let mut connection = Connection {
        socket,
        abort: state.abort.clone(),
        keepalive_interval: state.config.keepalive_interval,
        keepalive_timeout: state.config.keepalive_timeout,
        reading: Reading::Frames,
        permit: None,
        closed_at: None,
        deadline,
    };
    let end = connection.pump(&inbound, responses).await;
    debug!(?end, "WebSocket connection finished");
}

/// A session refused before it started: its in-band error, then its status.
fn refusal(error: &ServiceError) -> Responses {
    let status = error.to_status();
    observe::request_finished(RPC, status.code(), error.outcome(), Duration::ZERO);
    info!(error = %error, code = ?status.code(), "{RPC} refused");
    let (tx, rx) = mpsc::channel(2);
    let in_band = StreamResponse { response: Some(stream_response::Response::Error(error.to_error_response())) };
    for message in [Ok(in_band), Err(status)] {
        tx.try_send(message).expect("the channel has room for both");
    }
    rx
}

/// How the socket is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Frame by frame, each once the inbound queue has room for it.
    Frames,
    /// Frame by frame, data dropped: the session has its last request.
    Discard,
    /// Raw bytes, dropped until `until` or `left` more: the framing is lost.
    Raw { until: Instant, left: usize },
    /// Not at all: the socket's read side is over.
    Stopped,
}

/// Why the connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The session's status went out in the close frame.
    Closed,
    /// The client went away, or stopped answering; the session is cancelled.
    Gone,
    /// The grace period of a shutdown ran out.
    Aborted,
}

struct Connection {
    socket: Socket,
    abort: tokio_util::sync::CancellationToken,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
    reading: Reading,
    /// Room in the inbound queue for the next frame's request.
    permit: Option<mpsc::OwnedPermit<Request>>,
    /// When the close frame went out.
    closed_at: Option<Instant>,
    /// The client's deadline and the timeout it gave.
    deadline: Option<(Instant, Duration)>,
}

impl Connection {
    /// Moves frames until the connection ends. `responses` is dropped before `inbound` on the
    /// way out, so a session whose client left sees it at once.
    async fn pump(&mut self, inbound: &mpsc::Sender<Request>, mut responses: Responses) -> End {
        let mut ping = tokio::time::interval_at(Instant::now() + self.keepalive_interval, self.keepalive_interval);
        let mut pong_due: Option<Instant> = None;
        let mut scratch = vec![0u8; 64 * 1024];
        // When the grace period of a shutdown ran out: the session ends then (its work
        // cancelled), and its status still goes out as the close frame if it comes in time.
        let mut aborted_at: Option<Instant> = None;
        loop {
            let waits_for_room = self.waits_for_room();
            let (reads, raw_until) = match self.reading {
                Reading::Frames => (self.permit.is_some() || self.closed_at.is_some(), None),
                Reading::Discard => (true, None),
                Reading::Raw { until, .. } => (true, Some(until)),
                Reading::Stopped => (false, None),
            };
            let close_due = self.closed_at.map(|at| at + CLOSE_TIMEOUT);
            if close_due.is_some() && self.reading == Reading::Stopped {
                return End::Closed;
            }
            tokio::select! {
                biased;
                () = self.abort.cancelled(), if aborted_at.is_none() => aborted_at = Some(Instant::now()),
                () = sleep_until(aborted_at.map_or_else(Instant::now, |at| at + ABORT_CLOSE_WAIT)), if aborted_at.is_some() => {
                    return End::Aborted;
                }
                response = responses.recv(), if self.closed_at.is_none() => {
                    let sent = match response {
                        Some(Ok(message)) => self.send_response(&message).await,
                        Some(Err(status)) => self.send_close(Close::for_status(&status)).await,
                        None => self.send_close(Close::ok()).await,
                    };
                    if sent.is_err() {
                        return End::Gone;
                    }
                }
                permit = inbound.clone().reserve_owned(), if waits_for_room => match permit {
                    Ok(permit) => self.permit = Some(permit),
                    // The session has ended and reads no more; its responses are still due.
                    Err(_) => self.reading = Reading::Discard,
                },
                input = next_input(&mut self.socket, raw_until.is_some(), &mut scratch), if reads => {
                    pong_due = None;
                    let end = match input {
                        Input::Frame(frame) => self.on_frame(frame).await,
                        Input::Raw(read) => self.discarded(read, &scratch),
                    };
                    if let Some(end) = end {
                        return end;
                    }
                }
                () = sleep_until(raw_until.unwrap_or_else(Instant::now)), if raw_until.is_some() => {
                    self.reading = Reading::Stopped;
                }
                () = sleep_until(pong_due.unwrap_or_else(Instant::now)), if pong_due.is_some() => {
                    // A client whose frames wait for the pipeline is alive; its pong waits too.
                    if !self.waits_for_room() {
                        info!(timeout_ms = self.keepalive_timeout.as_millis() as u64, "WebSocket keepalive ping unanswered; closing");
                        return End::Gone;
                    }
                    pong_due = Some(Instant::now() + self.keepalive_timeout);
                }
                _ = ping.tick(), if self.closed_at.is_none() => {
                    if self.write(Message::Ping(Bytes::new())).await.is_err() {
                        return End::Gone;
                    }
                    pong_due.get_or_insert(Instant::now() + self.keepalive_timeout);
                }
                () = sleep_until(close_due.unwrap_or_else(Instant::now)), if close_due.is_some() => return End::Closed,
                () = sleep_until(self.deadline.map_or_else(Instant::now, |(at, _)| at)),
                    if self.deadline.is_some() && self.closed_at.is_none() =>
                {
                    // The session, left without its socket, ends and counts the deadline.
                    let timeout = self.deadline.map(|(_, t)| t).unwrap_or_default();
                    if self.send_close(Close::for_status(&lifetime::deadline_exceeded(timeout))).await.is_err() {
                        return End::Gone;
                    }
                }
            }
        }
    }

    /// Whether reading waits for room in the inbound queue.
    fn waits_for_room(&self) -> bool {
        self.reading == Reading::Frames && self.permit.is_none() && self.closed_at.is_none()
    }

    /// Handles what the socket yielded; `Some` when the connection is over.
    async fn on_frame(&mut self, frame: Option<Result<Message, WsError>>) -> Option<End> {
        let request = match frame {
            Some(Ok(Message::Binary(data))) => decode(data),
            Some(Ok(Message::Text(_))) => Err(status::malformed_message("a text frame (binary frames only)")),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return None,
            Some(Ok(Message::Close(_))) if self.closed_at.is_some() => return Some(End::Closed),
            Some(Ok(Message::Close(frame))) => {
                // The client left without COMMAND_CLOSE: its close is answered, its session cancelled.
                debug!(code = frame.map(|f| u16::from(f.code)), "the client closed the WebSocket");
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.socket.flush()).await;
                return Some(End::Gone);
            }
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                self.linger();
                Err(status::oversized_message(size, max_size))
            }
            Some(Err(WsError::Protocol(e))) if e != ProtocolError::ResetWithoutClosingHandshake => {
                self.linger();
                Err(status::malformed_message(e))
            }
            Some(Err(WsError::Utf8(e))) => {
                self.linger();
                Err(status::malformed_message(e))
            }
            None | Some(Err(_)) if self.closed_at.is_some() => return Some(End::Closed),
            None | Some(Err(_)) => return Some(End::Gone),
        };
        if request.is_err() && self.reading == Reading::Frames {
            self.reading = Reading::Discard;
        }
        // After an error the session takes no further request; the rest is dropped.
        if let Some(permit) = self.permit.take() {
            permit.send(request);
        }
        None
    }

    /// Reads and drops what is left of a frame too large or too broken to read.
    fn linger(&mut self) {
        self.reading = Reading::Raw { until: Instant::now() + LINGER_TIMEOUT, left: LINGER_LIMIT_BYTES };
    }

    /// Counts raw bytes read (into `scratch`) and dropped; `Some` when the connection is over:
    /// the client closed its side, or answered the server's close frame.
    fn discarded(&mut self, read: std::io::Result<usize>, scratch: &[u8]) -> Option<End> {
        let Reading::Raw { until, left } = self.reading else { return None };
        if let Ok(n) = read
            && self.closed_at.is_some()
            && ends_with_client_close(&scratch[..n])
        {
            return Some(End::Closed);
        }
        match read {
            Ok(n) if n > 0 && n < left => self.reading = Reading::Raw { until, left: left - n },
            Ok(n) if n > 0 => self.reading = Reading::Stopped,
            // The client finished and closed its side.
            _ if self.closed_at.is_some() => return Some(End::Closed),
            _ => return Some(End::Gone),
        }
        None
    }

    async fn send_response(&mut self, message: &StreamResponse) -> Result<(), WsError> {
        let started = std::time::Instant::now();
        let data = Bytes::from(message.encode_to_vec());
        observe::codec("encode", started.elapsed());
        self.write(Message::Binary(data)).await
    }

    async fn send_close(&mut self, close: Close) -> Result<(), WsError> {
        self.closed_at = Some(Instant::now());
        let frame = CloseFrame { code: close.code.into(), reason: close.reason.into() };
        self.write(Message::Close(Some(frame))).await
    }

    /// Writes one message; a write that waits longer than a keepalive ping may means the client
    /// is gone.
    async fn write(&mut self, message: Message) -> Result<(), WsError> {
        let patience = self.keepalive_interval + self.keepalive_timeout;
        match tokio::time::timeout(patience, self.socket.send(message)).await {
            Ok(result) => result,
            Err(_) => Err(WsError::Io(std::io::ErrorKind::TimedOut.into())),
        }
    }
}

/// Whether `bytes` end with a whole close frame as a client sends it (FIN and opcode 8, masked,
/// a payload of at most 125 bytes). Once a frame too large to read has cost the framing, this is
/// how the client's answer to the server's close is recognised, so the connection ends at once
/// instead of after [`CLOSE_TIMEOUT`]. A dropped frame's bytes could end the same way by chance:
/// the connection then ends early, after the server's close went out, which costs nothing.
fn ends_with_client_close(bytes: &[u8]) -> bool {
    (0..=125u8).any(|len| {
        let total = 6 + usize::from(len);
        bytes.len() >= total && {
            let frame = &bytes[bytes.len() - total..];
            frame[0] == 0x88 && frame[1] == 0x80 | len
        }
    })
}

/// What reading the socket yielded: a frame, or raw bytes once the framing is lost.
enum Input {
    Frame(Option<Result<Message, WsError>>),
    Raw(std::io::Result<usize>),
}

async fn next_input(socket: &mut Socket, raw: bool, scratch: &mut [u8]) -> Input {
    if raw { Input::Raw(socket.get_mut().read(scratch).await) } else { Input::Frame(socket.next().await) }
}

/// A binary frame's request, timed like the gRPC codec's decoding.
fn decode(data: Bytes) -> Request {
    let started = std::time::Instant::now();
    let request =
        StreamRequest::decode(data).map_err(|e| status::malformed_message(format_args!("not a StreamRequest: {e}")));
    observe::codec("decode", started.elapsed());
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_close_frame_is_recognised_at_the_end_of_dropped_bytes() {
        // A masked close frame with code 1000 and no reason: 0x88, 0x80 | 2, mask, payload.
        let close = [0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2];
        let mut dropped = vec![0u8; 4096];
        assert!(!ends_with_client_close(&dropped));
        dropped.extend_from_slice(&close);
        assert!(ends_with_client_close(&dropped));
        assert!(ends_with_client_close(&close));
        // Cut short, or followed by more bytes, it is not (yet) a whole close frame at the end.
        assert!(!ends_with_client_close(&close[..7]));
        dropped.push(0);
        assert!(!ends_with_client_close(&dropped));
        // A server's (unmasked) close is not a client's.
        assert!(!ends_with_client_close(&[0x88, 0x02, 0x03, 0xe8]));
    }
}
