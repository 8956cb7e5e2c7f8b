//! A bound on the status messages of services the server hosts but did not write.
//!
//! The pipeline service cuts client text before it reaches a status ([`crate::text`]).
//! tonic-reflection does not: a lookup of an unknown 20 KB symbol answers NOT_FOUND with the
//! whole name in `grpc-message`, which gRPC clients refuse (metadata over 16 KiB). [`Bounded`]
//! wraps such a service and cuts a status message past
//! [`MAX_STATUS_MESSAGE_BYTES`](super::status::MAX_STATUS_MESSAGE_BYTES), in the response
//! headers (a trailers-only answer) and in the trailers. Their generated code also answers a
//! method they do not have with an UNIMPLEMENTED that has no message: [`Bounded`] names it.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tonic::Status;
use tonic::server::NamedService;

use super::status::MAX_STATUS_MESSAGE_BYTES;

/// `inner` with its statuses' messages bounded.
#[derive(Debug, Clone)]
pub struct Bounded<S>(pub S);

impl<S: NamedService> NamedService for Bounded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Bounded<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::MapOk<S::Future, Box<dyn FnOnce(Self::Response) -> Self::Response + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        use futures::TryFutureExt;
        let path = request.uri().path().to_owned();
        self.0.call(request).map_ok(Box::new(move |response| {
            let (mut parts, body) = response.into_parts();
            name_unknown_method(&mut parts.headers, &path);
            bound(&mut parts.headers);
            http::Response::from_parts(parts, tonic::body::Body::new(BoundedBody(body)))
        }))
    }
}

/// A response body whose trailers get [`bound`].
struct BoundedBody(tonic::body::Body);

impl Body for BoundedBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.0).poll_frame(cx));
        Poll::Ready(frame.map(|f| {
            f.map(|frame| match frame.into_trailers() {
                Ok(mut trailers) => {
                    bound(&mut trailers);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// Gives an UNIMPLEMENTED without a message (a method the service does not have, answered
/// trailers-only) the server's message for a call it has no method for.
fn name_unknown_method(headers: &mut HeaderMap, path: &str) {
    if headers.get("grpc-status").is_some_and(|s| s == "12") && headers.get("grpc-message").is_none_or(|m| m.is_empty())
    {
        headers.remove("grpc-message");
        if super::server::no_such_method(path).add_header(headers).is_err() {
            headers.remove("grpc-message");
        }
    }
}

/// Cuts the status message in `headers`, if any, to [`MAX_STATUS_MESSAGE_BYTES`] (before
/// percent-encoding); its code and details stay.
fn bound(headers: &mut HeaderMap) {
    if headers.get("grpc-message").is_none_or(|m| m.len() <= MAX_STATUS_MESSAGE_BYTES) {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else { return };
    let message = crate::text::clip(status.message(), MAX_STATUS_MESSAGE_BYTES);
    if message.len() == status.message().len() {
        return; // long only in its percent-encoding, which the bound does not count
    }
    let bounded = Status::with_details(status.code(), message.into_owned(), status.details().to_vec().into());
    headers.remove("grpc-message");
    headers.remove("grpc-status-details-bin");
    if bounded.add_header(headers).is_err() {
        headers.remove("grpc-message");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_the_service_does_not_have_is_named() {
        let mut headers = HeaderMap::new();
        Status::unimplemented("").add_header(&mut headers).unwrap();
        name_unknown_method(&mut headers, "/grpc.health.v1.Health/Nope");
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert!(status.message().starts_with("this server has no method `/grpc.health.v1.Health/Nope`"));
        let mut named = HeaderMap::new();
        Status::unimplemented("not yet").add_header(&mut named).unwrap();
        let before = named.clone();
        name_unknown_method(&mut named, "/a.B/C");
        assert_eq!(named, before, "a status with its own message keeps it");
    }

    #[test]
    fn a_long_status_message_is_cut_and_keeps_its_code() {
        let mut headers = HeaderMap::new();
        Status::not_found(format!("symbol '{}' not found", "x".repeat(20_000))).add_header(&mut headers).unwrap();
        bound(&mut headers);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(status.message().len() <= MAX_STATUS_MESSAGE_BYTES, "{}", status.message().len());
        assert!(status.message().starts_with("symbol 'xxx") && status.message().ends_with("more bytes)"));

        let mut short = HeaderMap::new();
        Status::not_found("symbol 'a.B' not found").add_header(&mut short).unwrap();
        let before = short.clone();
        bound(&mut short);
        assert_eq!(short, before, "a message within the bound is left as it is");
    }
}
