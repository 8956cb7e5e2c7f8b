//! Checks that run before a pipeline RPC reaches its handler, as one small tower layer: the
//! request's codec and compression ([`wire`], `GetVersion` included), the browser `Origin`
//! ([`check_origin`]), authentication ([`auth`]) and the protocol version header ([`version`]).
//! Health, reflection and `GetVersion` need none of the last three. Because the layer sits in front of the
//! service, a stream is refused before its first message is read.
//!
//! Refusals are answered at once. An HTTP/2 stream is then reset with NO_ERROR, which stops the
//! client's upload while the connection stays up. HTTP/1.1 (gRPC-Web) has no way to stop an
//! upload but closing the connection, and a client still sending then fails with a broken pipe
//! before it reads the answer; so the unread rest of a refused HTTP/1.1 request (refused here,
//! or by the codec for its size) is read and discarded in the background, up to
//! [`LINGER_LIMIT_BYTES`] and [`LINGER_TIMEOUT`], while the answer goes out.
//!
//! On the way out the same layer rewrites the codec's statuses for bad request messages
//! (oversized, undecodable) into the service's documented errors (see
//! [`status::from_codec`](super::status::from_codec)).

pub mod auth;
pub mod version;
pub mod wire;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, ready};
use http_body::{Frame, SizeHint};
use tonic::body::Body;
use tower::{Layer, Service};

use super::status::{self, ServiceError};

/// Path prefix of the pipeline service's methods.
pub const PIPELINE_PATH_PREFIX: &str = "/remotemedia.v1.PipelineService/";
/// Methods open to everyone (the version handshake).
const PUBLIC_METHODS: &[&str] = &["GetVersion"];
/// Every method of the pipeline service.
const METHODS: &[&str] = &["ExecutePipeline", "StreamPipeline", "GetVersion"];

/// The most of a refused HTTP/1.1 request's unread body that is read and discarded, so the
/// client can finish sending and read the answer.
pub const LINGER_LIMIT_BYTES: usize = 256 << 20;
/// The longest a refused HTTP/1.1 request's unread body is read and discarded.
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the guard checks.
#[derive(Clone, Default)]
pub struct Guards {
    pub tokens: auth::Tokens,
    /// `cors_allowed_origins`: the pages whose scripts may call.
    pub origins: Vec<String>,
}

impl Guards {
    /// Runs every check that applies to `path`.
    pub fn check(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<(), ServiceError> {
        // The wire format first, for every service: it is the transport's rule.
        wire::check(headers, extensions)?;
        let Some(method) = path.strip_prefix(PIPELINE_PATH_PREFIX) else { return Ok(()) };
        if !METHODS.contains(&method) {
            // The router's own answer has no message at all. The methods are no secret
            // (reflection lists them), so no token is asked for first.
            return Err(ServiceError::Unsupported(crate::graph::Violation::new(
                ":path",
                format!(
                    "call one of {}: `{}` is not a method of remotemedia.v1.PipelineService",
                    crate::text::list(METHODS, METHODS.len()),
                    crate::text::quoted(method)
                ),
            )));
        }
        if PUBLIC_METHODS.contains(&method) {
            return Ok(());
        }
        // A page from another origin cannot read the answer (CORS), but the call would run:
        // refused before it does, as a WebSocket upgrade from such a page is.
        if let Err(origin) = check_origin(&self.origins, headers) {
            tracing::info!(origin = %crate::text::quoted(&origin), "call refused: origin not in cors_allowed_origins");
            return Err(ServiceError::Forbidden("this origin is not allowed (cors_allowed_origins)".to_owned()));
        }
        self.tokens.check(headers)?;
        version::check_header(headers)?;
        Ok(())
    }
}

#[derive(Clone)]
pub struct GuardLayer {
    guards: Arc<Guards>,
}

impl GuardLayer {
    pub fn new(guards: Guards) -> Self {
        Self { guards: Arc::new(guards) }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard { inner, guards: self.guards.clone() }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    guards: Arc<Guards>,
}

impl<S> Service<http::Request<Body>> for Guard<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let rpc = super::rpc_of_path(request.uri().path());
        if let Err(e) = self.guards.check(request.uri().path(), request.headers(), request.extensions()) {
            tracing::info!(error = %e, "request refused");
            let status = e.to_status();
            super::observe::request_finished(rpc, status.code(), e.outcome(), Duration::ZERO);
            if request.version() < http::Version::HTTP_2 {
                linger(request.into_body());
            }
            return ready(Ok(status.into_http())).boxed();
        }
        if request.version() >= http::Version::HTTP_2 {
            return self
                .inner
                .call(request)
                .map(move |r| r.map(|response| rewrite_codec_status(rpc, response)))
                .boxed();
        }
        // HTTP/1.1: the handler reads the body through a handle kept here, so that what a refused
        // call leaves unread can be drained once the refusal is known.
        let (parts, body) = request.into_parts();
        let shared = SharedBody(Arc::new(Mutex::new(Some(body))));
        let rest = SharedBody(shared.0.clone());
        self.inner
            .call(http::Request::from_parts(parts, Body::new(shared)))
            .map(move |r| {
                r.map(|response| {
                    if is_refusal(&response)
                        && let Some(body) = rest.take()
                    {
                        linger(body);
                    }
                    rewrite_codec_status(rpc, response)
                })
            })
            .boxed()
    }
}

/// A request body shared between the handler, which reads it, and the guard, which takes what is
/// left of it when the call is refused. Once taken, the handler sees the body end.
struct SharedBody(Arc<Mutex<Option<Body>>>);

impl SharedBody {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Body>> {
        // A panic while polling leaves the body as it was; reading on is as safe as before.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self) -> Option<Body> {
        self.lock().take()
    }
}

impl http_body::Body for SharedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let mut body = self.lock();
        match body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.lock().as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.lock().as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// A response that ends the call with an error before anything else (trailers-only): the
/// handler is done with the request body.
fn is_refusal(response: &http::Response<Body>) -> bool {
    tonic::Status::from_header_map(response.headers()).is_some_and(|s| s.code() != tonic::Code::Ok)
}

/// Reads and drops the rest of a refused HTTP/1.1 request in the background, bounded by
/// [`LINGER_LIMIT_BYTES`] and [`LINGER_TIMEOUT`]; the connection stays open meanwhile.
fn linger<B>(body: B)
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    if body.is_end_stream() {
        return;
    }
    tokio::spawn(async move {
        let _ = tokio::time::timeout(LINGER_TIMEOUT, discard(body, LINGER_LIMIT_BYTES)).await;
    });
}

/// Reads and drops up to `limit` bytes of `body`.
async fn discard<B: http_body::Body>(body: B, limit: usize) {
    use http_body_util::BodyExt;
    let mut body = std::pin::pin!(body);
    let mut seen = 0;
    while seen < limit {
        match body.frame().await {
            Some(Ok(frame)) => seen += frame.data_ref().map_or(0, bytes::Buf::remaining),
            _ => return,
        }
    }
}

/// A unary call whose request could not be decoded is answered by the codec with a
/// trailers-only response; its status is replaced by the service's own error.
fn rewrite_codec_status(
    rpc: &'static str,
    response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let Some(error) = tonic::Status::from_header_map(response.headers()).as_ref().and_then(status::from_codec) else {
        return response;
    };
    tracing::info!(error = %error, "request message refused");
    if let ServiceError::Limit { limit, .. } = &error {
        super::observe::limit_rejected(limit);
    }
    let status = error.to_status();
    super::observe::request_finished(rpc, status.code(), error.outcome(), Duration::ZERO);
    status.into_http()
}

/// `Err(origin)` when the request has an `Origin` outside `allowed` (browsers always send one;
/// other clients send none, and pass).
pub fn check_origin(allowed: &[String], headers: &http::HeaderMap) -> Result<(), String> {
    let Some(origin) = headers.get(http::header::ORIGIN) else { return Ok(()) };
    let origin = String::from_utf8_lossy(origin.as_bytes());
    if allowed.iter().any(|a| *a == origin) { Ok(()) } else { Err(origin.into_owned()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn only_pipeline_rpcs_other_than_get_version_are_guarded() {
        let g = Guards { tokens: auth::Tokens::new(vec![Secret::new("t")]), origins: Vec::new() };
        let none = http::HeaderMap::new();
        assert!(g.check("/grpc.health.v1.Health/Check", &none, &http::Extensions::new()).is_ok());
        assert!(
            g.check("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", &none, &http::Extensions::new())
                .is_ok()
        );
        assert!(g.check("/remotemedia.v1.PipelineService/GetVersion", &none, &http::Extensions::new()).is_ok());
        assert!(matches!(
            g.check("/remotemedia.v1.PipelineService/ExecutePipeline", &none, &http::Extensions::new()),
            Err(ServiceError::Unauthenticated(_))
        ));
        assert!(g.check("/remotemedia.v1.PipelineService/StreamPipeline", &none, &http::Extensions::new()).is_err());
    }

    #[test]
    fn the_wire_format_is_checked_on_every_rpc_first() {
        let g = Guards { tokens: auth::Tokens::new(vec![Secret::new("t")]), origins: Vec::new() };
        let mut h = http::HeaderMap::new();
        h.insert(wire::GRPC_ENCODING, "deflate".parse().unwrap());
        let none = http::Extensions::new();
        for rpc in ["GetVersion", "ExecutePipeline", "StreamPipeline"] {
            let path = format!("{PIPELINE_PATH_PREFIX}{rpc}");
            assert!(matches!(g.check(&path, &h, &none), Err(ServiceError::Unsupported(_))), "{rpc}");
        }
        // The other services too: the rule is the transport's.
        assert!(matches!(g.check("/grpc.health.v1.Health/Check", &h, &none), Err(ServiceError::Unsupported(_))));
    }

    #[test]
    fn the_version_header_is_checked_after_auth() {
        let g = Guards::default();
        let mut h = http::HeaderMap::new();
        h.insert(version::HEADER, "v7".parse().unwrap());
        assert!(matches!(
            g.check("/remotemedia.v1.PipelineService/ExecutePipeline", &h, &http::Extensions::new()),
            Err(ServiceError::VersionMismatch { .. })
        ));
    }

    #[test]
    fn a_browser_origin_outside_the_allow_list_is_forbidden_before_the_token_is_read() {
        let g =
            Guards { tokens: auth::Tokens::new(vec![Secret::new("t")]), origins: vec!["https://app.example".into()] };
        let mut h = http::HeaderMap::new();
        h.insert(http::header::ORIGIN, "https://evil.example".parse().unwrap());
        let path = "/remotemedia.v1.PipelineService/ExecutePipeline";
        assert!(matches!(g.check(path, &h, &http::Extensions::new()), Err(ServiceError::Forbidden(_))));
        assert!(g.check("/remotemedia.v1.PipelineService/GetVersion", &h, &http::Extensions::new()).is_ok());
        h.insert(http::header::ORIGIN, "https://app.example".parse().unwrap());
        assert!(
            matches!(g.check(path, &h, &http::Extensions::new()), Err(ServiceError::Unauthenticated(_))),
            "allowed: the token is checked next"
        );
        h.insert(http::header::AUTHORIZATION, "Bearer t".parse().unwrap());
        assert!(g.check(path, &h, &http::Extensions::new()).is_ok());
    }
}
