//! How long a call may live: its deadline, and the server's shutdown.
//!
//! - [`DeadlineLayer`] enforces the client's `grpc-timeout` on the whole call, the response
//!   future and (for streams) the response body. A call whose deadline passes ends with
//!   DEADLINE_EXCEEDED, on every transport: the layer sits inside the gRPC-Web translation, so
//!   browsers see the same status. The handler future is dropped, which cancels its work.
//!   Handlers read the deadline from the request's [`CallDeadline`] extension. It also watches
//!   the request body: a unary call whose client reset its stream before the request arrived
//!   (a deadline passing during a large upload) gets CANCELLED or DEADLINE_EXCEEDED, and is
//!   counted, instead of the INTERNAL "missing request message" tonic answers it with.
//! - [`DrainLayer`] ends the long-lived streams of the health and reflection services when
//!   shutdown starts, once they have nothing more to send: a `Health/Watch` sees its
//!   NOT_SERVING update and then UNAVAILABLE, so idle watchers never hold the shutdown for the
//!   whole grace period. A health or reflection call opened during the drain is answered
//!   first (grpcurl asks reflection before `Health/Check`). Pipeline streams drain themselves
//!   (they finish the chunk in flight).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::status::ServiceError;
use tower::{Layer, Service};

/// The request header carrying the client's deadline.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// How much earlier than the server's a client's deadline may fire: a call abandoned this close
/// to its deadline counts as DEADLINE_EXCEEDED, as its client saw it.
pub const DEADLINE_SLACK: std::time::Duration = std::time::Duration::from_millis(10);

/// Set by a unary call's handler once it counts the call itself; until then [`DeadlineLayer`]
/// counts it if the call ends early (its deadline passing or its client resetting it while the
/// request is still arriving, before any handler ran). A request extension.
#[derive(Debug, Clone, Default)]
pub struct Counted(Arc<AtomicBool>);

impl Counted {
    /// Marks the call of `request` as counted by its handler.
    pub fn claim<T>(request: &tonic::Request<T>) {
        if let Some(c) = request.extensions().get::<Counted>() {
            c.0.store(true, Ordering::Relaxed);
        }
    }

    fn is_claimed(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Whether the client reset the call's stream (RST_STREAM) while its request was arriving. tonic
/// ends a request stream reset with CANCEL as if the client had finished sending, so a stream
/// session asks this before it takes the end of its requests for a close. A request extension.
#[derive(Debug, Clone, Default)]
pub struct RequestReset(Arc<AtomicBool>, Arc<AtomicBool>);

impl RequestReset {
    /// The flag of `request`'s call (never set if the layer did not wrap it).
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        request.extensions().get::<Self>().cloned().unwrap_or_default()
    }

    /// Whether the request body failed: the client reset the stream or the connection broke.
    pub fn happened(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Whether the request body could not be decoded: gRPC-Web text that is not base64. The
    /// client sent it whole; it is malformed, not reset.
    pub fn malformed(&self) -> bool {
        self.1.load(Ordering::Relaxed)
    }

    fn note(&self, error: &Status) {
        // tonic-web prefixes every body error with `tonic-web: `: its base64 decoding errors
        // (its own `malformed base64 request`, the base64 crate's `Invalid symbol …`, `Invalid
        // padding`, …) and the connection's (a body cut short, a reset) alike. Its text is the
        // only sign which it was.
        let base64 = error
            .message()
            .strip_prefix("tonic-web: ")
            .is_some_and(|m| m.starts_with("malformed base64") || m.starts_with("Invalid "));
        let flag = if base64 { &self.1 } else { &self.0 };
        flag.store(true, Ordering::Relaxed);
    }
}

/// How many gRPC messages a unary call's request body carried. tonic decodes the first and
/// drops the rest, so a handler asks this to refuse a call that carried more than one (a
/// protocol violation, on HTTP/2 and gRPC-Web alike). A request extension of unary calls.
#[derive(Debug, Clone, Default)]
pub struct RequestMessages(Arc<AtomicUsize>);

impl RequestMessages {
    /// The count of `request`'s call (0 if the layer did not count it).
    pub fn of<T>(request: &tonic::Request<T>) -> usize {
        request.extensions().get::<Self>().map_or(0, |m| m.0.load(Ordering::Relaxed))
    }
}

/// Finds the messages in a request body: each is a 5-byte header (compression flag, then the
/// length, big-endian) and that many bytes, split across DATA frames anyhow.
struct Framing {
    header: [u8; 5],
    have: usize,
    skip: usize,
    count: RequestMessages,
}

impl Framing {
    fn new(count: RequestMessages) -> Self {
        Self { header: [0; 5], have: 0, skip: 0, count }
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (self.header.len() - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == self.header.len() {
                self.have = 0;
                let [_, a, b, c, d] = self.header;
                self.skip = u32::from_be_bytes([a, b, c, d]) as usize;
                self.count.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Counts a unary call that ends before its handler counted it: dropped (the client reset it),
/// or answered by the deadline while its request was still arriving.
struct Uncounted {
    rpc: Option<&'static str>,
    counted: Counted,
    deadline: Option<Instant>,
    started: std::time::Instant,
}

impl Uncounted {
    /// Counts the call as `code` unless its handler did.
    fn count(&mut self, code: tonic::Code, outcome: &'static str) {
        if let Some(rpc) = self.rpc.take()
            && !self.counted.is_claimed()
        {
            super::observe::request_finished(rpc, code, outcome, self.started.elapsed());
        }
    }

    /// The call got its answer from the handler or the codec, which count it.
    fn answered(&mut self) {
        self.rpc = None;
    }
}

impl Drop for Uncounted {
    fn drop(&mut self) {
        let (code, outcome) = CallDeadline::abandoned(self.deadline);
        self.count(code, outcome);
    }
}

/// The instant a call's deadline passes; set as a request extension by [`DeadlineLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallDeadline(pub Instant);

impl CallDeadline {
    /// The deadline of a tonic request, if the client set one.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<Instant> {
        request.extensions().get::<CallDeadline>().map(|d| d.0)
    }

    /// Whether `deadline` (if any) has passed.
    pub fn passed(deadline: Option<Instant>) -> bool {
        deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Whether a client that abandoned its call now did so because of its deadline: the deadline
    /// has passed or is at most [`DEADLINE_SLACK`] away. The client's own timer started when it
    /// sent the call, before the server's, so it fires (and resets the call) a little earlier.
    pub fn explains_abandon(deadline: Option<Instant>) -> bool {
        deadline.is_some_and(|d| Instant::now() + DEADLINE_SLACK >= d)
    }

    /// How a call its client abandoned now is counted: DEADLINE_EXCEEDED when its deadline
    /// explains it ([`CallDeadline::explains_abandon`]), else CANCELLED.
    pub fn abandoned(deadline: Option<Instant>) -> (tonic::Code, &'static str) {
        if Self::explains_abandon(deadline) {
            (tonic::Code::DeadlineExceeded, super::observe::outcome::DEADLINE_EXCEEDED)
        } else {
            (tonic::Code::Cancelled, super::observe::outcome::CANCELLED)
        }
    }
}

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3_600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Enforces `grpc-timeout`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, ResBody> Service<http::Request<tonic::body::Body>> for Deadline<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Cutoff<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let timeout = request.headers().get(GRPC_TIMEOUT).and_then(|v| v.to_str().ok()).and_then(parse_timeout);
        let deadline = timeout.map(|t| Instant::now() + t);
        let reset = RequestReset::default();
        let counted = Counted::default();
        let mut uncounted = Uncounted {
            rpc: pipeline_rpc(request.uri().path()),
            counted: counted.clone(),
            deadline,
            started: std::time::Instant::now(),
        };
        let messages = uncounted.rpc.filter(|rpc| *rpc != "StreamPipeline").map(|_| RequestMessages::default());
        let framing = messages.clone().map(Framing::new);
        let (parts, body) = request.into_parts();
        let mut request = http::Request::from_parts(
            parts,
            tonic::body::Body::new(Watched { inner: body, reset: reset.clone(), framing }),
        );
        request.extensions_mut().insert(counted);
        request.extensions_mut().insert(reset.clone());
        if let Some(messages) = messages {
            request.extensions_mut().insert(messages);
        }
        let Some((timeout, deadline)) = timeout.zip(deadline) else {
            let response = self.inner.call(request);
            return async move {
                let r = response.await;
                r.map(|res| {
                    reset_answer(res, &reset, &mut uncounted).map(|b| b.map_or_else(Cutoff::empty, Cutoff::never))
                })
            }
            .boxed();
        };
        request.extensions_mut().insert(CallDeadline(deadline));
        let response = self.inner.call(request);
        async move {
            tokio::select! {
                r = response => r.map(|res| {
                    reset_answer(res, &reset, &mut uncounted).map(|body| match body {
                        Some(body) => Cutoff::new(body, async move {
                            tokio::time::sleep_until(deadline).await;
                            deadline_exceeded(timeout)
                        }),
                        None => Cutoff::empty(),
                    })
                }),
                () = tokio::time::sleep_until(deadline) => {
                    uncounted.count(tonic::Code::DeadlineExceeded, super::observe::outcome::DEADLINE_EXCEEDED);
                    Ok(deadline_exceeded(timeout).into_http().map(|()| Cutoff::empty()))
                }
            }
        }
        .boxed()
    }
}

/// The pipeline service's RPC a path names, for its metrics.
fn pipeline_rpc(path: &str) -> Option<&'static str> {
    let method = path.strip_prefix("/remotemedia.v1.PipelineService/")?;
    super::observe::RPCS.iter().copied().find(|m| *m == method)
}

/// A request body that notes when it fails: the client reset the stream (or the connection
/// broke) before the whole request arrived.
struct Watched {
    inner: tonic::body::Body,
    reset: RequestReset,
    /// Unary calls only: their messages are counted.
    framing: Option<Framing>,
}

impl Body for Watched {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Err(error)) => self.reset.note(error),
            Some(Ok(f)) => {
                if let (Some(framing), Some(data)) = (self.framing.as_mut(), f.data_ref()) {
                    framing.feed(data);
                }
            }
            None => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The call's answer, which the handler or the codec counted; except that a unary call whose
/// request body failed is answered by tonic, before any handler runs, with INTERNAL ("missing
/// request message", a reset stream) or UNKNOWN (a closed connection): a server fault to its
/// logs and metrics, although the client went away.
/// Such an answer becomes CANCELLED, or DEADLINE_EXCEEDED when the deadline explains the reset,
/// and is counted here. The same answer to a request stream that ended cleanly without a
/// message is the client's mistake: INVALID_ARGUMENT (VALIDATION), counted here too.
fn reset_answer<B>(
    response: http::Response<B>,
    reset: &RequestReset,
    uncounted: &mut Uncounted,
) -> http::Response<Option<B>> {
    let status = Status::from_header_map(response.headers());
    // A reset stream leaves tonic's decoder without a message (INTERNAL); a connection closed
    // mid-request fails the body itself, which tonic answers as UNKNOWN.
    let Some(failed) = status.as_ref().filter(|s| matches!(s.code(), tonic::Code::Internal | tonic::Code::Unknown))
    else {
        // Refusals before the handler (a compression tonic does not take included: the guard
        // refuses it first, see `interceptors::wire`) were counted where they were made.
        uncounted.answered();
        return response.map(Some);
    };
    if reset.malformed() {
        let error = ServiceError::InvalidArgument(crate::graph::Violation::new(
            "request",
            "the request body is not valid gRPC-Web text: application/grpc-web-text carries the framed messages in \
             base64",
        ));
        tracing::info!(error = %error, "request message refused");
        let status = error.to_status();
        uncounted.count(status.code(), error.outcome());
        return status.into_http().map(|()| None);
    }
    if !reset.happened() {
        if failed.code() != tonic::Code::Internal || failed.message() != "Missing request message." {
            uncounted.answered();
            return response.map(Some);
        }
        let error = ServiceError::InvalidArgument(crate::graph::Violation::new(
            "request",
            "the call carried no request message; a unary call takes exactly one",
        ));
        tracing::info!(error = %error, "request message refused");
        let status = error.to_status();
        uncounted.count(status.code(), error.outcome());
        return status.into_http().map(|()| None);
    }
    let (code, outcome) = CallDeadline::abandoned(uncounted.deadline);
    tracing::info!(code = ?code, "request stream reset by the client; nothing ran");
    uncounted.count(code, outcome);
    Status::new(
        code,
        "the request ended before its message arrived whole (the client reset the call or closed its connection)",
    )
    .into_http()
    .map(|()| None)
}

pub fn deadline_exceeded(timeout: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the call's deadline passed (grpc-timeout {} ms); its work was cancelled",
        timeout.as_millis()
    ))
}

/// Ends idle health and reflection streams when shutdown starts.
#[derive(Debug, Clone)]
pub struct DrainLayer {
    draining: CancellationToken,
    /// Calls under this path prefix are left alone (they drain themselves).
    exempt: &'static str,
}

impl DrainLayer {
    pub fn new(draining: CancellationToken, exempt: &'static str) -> Self {
        Self { draining, exempt }
    }
}

impl<S> Layer<S> for DrainLayer {
    type Service = Drain<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Drain { inner, layer: self.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct Drain<S> {
    inner: S,
    layer: DrainLayer,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Drain<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Cutoff<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if request.uri().path().starts_with(self.layer.exempt) {
            return self.inner.call(request).map(|r| r.map(|res| res.map(Cutoff::never))).boxed();
        }
        let draining = self.layer.draining.clone();
        // A call opened during the drain (an operator's `grpcurl ... Health/Check`, which asks
        // reflection first) is answered: it is cut only once it has had time to be.
        let opened_draining = draining.is_cancelled();
        self.inner
            .call(request)
            .map(move |r| {
                r.map(|res| {
                    res.map(|body| {
                        let trigger = async move {
                            draining.cancelled().await;
                            if opened_draining {
                                tokio::time::sleep(ANSWER_DURING_DRAIN).await;
                            }
                            Status::unavailable("the server is shutting down; reconnect to another instance")
                        };
                        Cutoff::new(body, trigger).reading_out_when_cut()
                    })
                })
            })
            .boxed()
    }
}

/// How long a health or reflection call opened during the drain runs before it is ended: ample
/// for a reflection exchange (milliseconds), short beside any grace period.
const ANSWER_DURING_DRAIN: Duration = Duration::from_secs(1);

/// Reads `body` to its end on a task of its own. tonic-reflection answers from a task that
/// panics (`send: SendError`) if the response stream it writes to is dropped while it has a
/// reply to send; a cut reflection body is read out instead, and the task ends with its
/// request stream, when the client's stream closes.
fn read_out<B>(body: B)
where
    B: Body<Data = bytes::Bytes> + Send + Unpin + 'static,
{
    use http_body_util::BodyExt;
    tokio::spawn(async move {
        let mut body = body;
        while let Some(Ok(_)) = body.frame().await {}
    });
}

/// A response body that ends early, with the status its trigger yields, if the trigger fires
/// while the inner body has nothing ready. Whatever the inner body has ready is sent first.
pub struct Cutoff<B> {
    /// `None` once the body has ended (or was cut).
    inner: Option<B>,
    trigger: Option<BoxFuture<'static, Status>>,
    /// What becomes of the inner body when the trigger cuts it: dropped (which cancels a
    /// pipeline call's work), or [`read_out`].
    on_cut: fn(B),
}

impl<B> Cutoff<B> {
    fn new(inner: B, trigger: impl Future<Output = Status> + Send + 'static) -> Self {
        Self { inner: Some(inner), trigger: Some(trigger.boxed()), on_cut: drop }
    }

    fn never(inner: B) -> Self {
        Self { inner: Some(inner), trigger: None, on_cut: drop }
    }

    fn empty() -> Self {
        Self { inner: None, trigger: None, on_cut: drop }
    }

    /// A cut hands the inner body to [`read_out`] instead of dropping it.
    fn reading_out_when_cut(self) -> Self
    where
        B: Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    {
        Self { on_cut: read_out::<B>, ..self }
    }
}

impl<B> Body for Cutoff<B>
where
    B: Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(frame)) => return Poll::Ready(Some(frame.map_err(Into::into))),
            Poll::Ready(None) => {
                self.inner = None;
                self.trigger = None;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        let Some(trigger) = self.trigger.as_mut() else { return Poll::Pending };
        let status = ready!(trigger.as_mut().poll(cx));
        self.trigger = None;
        if let Some(inner) = self.inner.take() {
            (self.on_cut)(inner);
        }
        let mut trailers = HeaderMap::new();
        match status.add_header(&mut trailers) {
            Ok(()) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Err(_) => {
                trailers.insert("grpc-status", HeaderValue::from(status.code() as i32));
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
mod framing_tests {
    use super::*;

    #[test]
    fn messages_are_counted_however_the_frames_cut_them() {
        let message = |len: u32, flag: u8| {
            let mut m = vec![flag];
            m.extend(len.to_be_bytes());
            m.extend(std::iter::repeat_n(7u8, len as usize));
            m
        };
        let body: Vec<u8> = [message(3, 0), message(0, 0), message(300, 1)].concat();
        for cut in [1, 2, 4, 5, 6, 9, 64, body.len()] {
            let count = RequestMessages::default();
            let mut framing = Framing::new(count.clone());
            body.chunks(cut).for_each(|piece| framing.feed(piece));
            assert_eq!(count.0.load(Ordering::Relaxed), 3, "frames of {cut} bytes");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_abandoned_just_before_its_deadline_is_put_down_to_it() {
        let now = Instant::now();
        assert!(CallDeadline::explains_abandon(Some(now - Duration::from_millis(1))));
        assert!(CallDeadline::explains_abandon(Some(now + DEADLINE_SLACK / 2)));
        assert!(!CallDeadline::explains_abandon(Some(now + Duration::from_secs(1))));
        assert!(!CallDeadline::explains_abandon(None));
    }

    #[test]
    fn grpc_timeouts_parse_as_the_spec_says() {
        assert_eq!(parse_timeout("50m"), Some(Duration::from_millis(50)));
        assert_eq!(parse_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7_200)));
        assert_eq!(parse_timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "5x", "-5m", "5.0S", "五m"] {
            assert_eq!(parse_timeout(bad), None, "{bad}");
        }
    }
}
