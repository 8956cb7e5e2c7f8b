//! Checks that run before a pipeline RPC reaches its handler, as one small tower layer:
//! authentication ([`auth`]) and the protocol version header ([`version`]). Health,
//! reflection and `GetVersion` pass through untouched. Because the layer sits in front of the
//! service, a stream is refused before its first message is read.
//!
//! A refused HTTP/1.1 call (gRPC-Web from a browser) has its request body read and discarded,
//! up to [`DRAIN_LIMIT_BYTES`] and [`DRAIN_TIMEOUT`], before the refusal is sent: answering
//! while the browser still uploads makes the server close the connection under it, and the
//! browser reports a network failure instead of the status. HTTP/2 calls are refused at once
//! (the stream is reset after the answer, the connection stays up).
//!
//! On the way out the same layer rewrites the codec's statuses for bad request messages
//! (oversized, undecodable) into the service's documented errors (see
//! [`status::from_codec`](super::status::from_codec)).

pub mod auth;
pub mod version;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, ready};
use tower::{Layer, Service};

use super::status::{self, ServiceError};

/// Path prefix of the pipeline service's methods.
const SERVICE_PREFIX: &str = "/remotemedia.v1.PipelineService/";
/// Methods open to everyone (the version handshake).
const PUBLIC_METHODS: &[&str] = &["GetVersion"];

/// The most of a refused HTTP/1.1 request body read before answering.
pub const DRAIN_LIMIT_BYTES: usize = 1 << 20;
/// The longest a refused HTTP/1.1 request body is read before answering.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// What the guard checks.
#[derive(Clone, Default)]
pub struct Guards {
    pub tokens: auth::Tokens,
}

impl Guards {
    /// Runs every check that applies to `path`.
    pub fn check(&self, path: &str, headers: &http::HeaderMap) -> Result<(), ServiceError> {
        let Some(method) = path.strip_prefix(SERVICE_PREFIX) else { return Ok(()) };
        if PUBLIC_METHODS.contains(&method) {
            return Ok(());
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

impl<S, B> Service<http::Request<B>> for Guard<S>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let rpc = super::rpc_name(request.uri().path().rsplit('/').next().unwrap_or_default());
        match self.guards.check(request.uri().path(), request.headers()) {
            Ok(()) => {
                self.inner.call(request).map(move |r| r.map(|response| rewrite_codec_status(rpc, response))).boxed()
            }
            Err(e) => {
                tracing::info!(error = %e, "request refused");
                super::observe::request_finished(rpc, e.to_status().code(), Duration::ZERO);
                let refusal = e.to_status().into_http();
                if request.version() >= http::Version::HTTP_2 {
                    return ready(Ok(refusal)).boxed();
                }
                let body = request.into_body();
                async move {
                    let _ = tokio::time::timeout(DRAIN_TIMEOUT, discard(body, DRAIN_LIMIT_BYTES)).await;
                    Ok(refusal)
                }
                .boxed()
            }
        }
    }
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
    let status = error.to_status();
    super::observe::request_finished(rpc, status.code(), Duration::ZERO);
    status.into_http()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn only_pipeline_rpcs_other_than_get_version_are_guarded() {
        let g = Guards { tokens: auth::Tokens::new(vec![Secret::new("t")]) };
        let none = http::HeaderMap::new();
        assert!(g.check("/grpc.health.v1.Health/Check", &none).is_ok());
        assert!(g.check("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", &none).is_ok());
        assert!(g.check("/remotemedia.v1.PipelineService/GetVersion", &none).is_ok());
        assert!(matches!(
            g.check("/remotemedia.v1.PipelineService/ExecutePipeline", &none),
            Err(ServiceError::Unauthenticated(_))
        ));
        assert!(g.check("/remotemedia.v1.PipelineService/StreamPipeline", &none).is_err());
    }

    #[test]
    fn the_version_header_is_checked_after_auth() {
        let g = Guards::default();
        let mut h = http::HeaderMap::new();
        h.insert(version::HEADER, "v7".parse().unwrap());
        assert!(matches!(
            g.check("/remotemedia.v1.PipelineService/ExecutePipeline", &h),
            Err(ServiceError::VersionMismatch { .. })
        ));
    }
}
