//! The request's wire format: the media type and message codec its `content-type` names and
//! the compression its `grpc-encoding` names. The service takes gRPC (HTTP/2) and gRPC-Web
//! calls of protobuf messages, compressed with gzip or not at all. Anything else is refused by
//! the guard as UNIMPLEMENTED with `ErrorInfo` reason VALIDATION and a `BadRequest` naming the
//! header, like every other refusal, where the libraries below would serve an HTTP/2 call of any
//! media type as gRPC, answer an HTTP/1.1 call that is not gRPC-Web or a JSON gRPC-Web call
//! (connect-web's gRPC-Web transport with `useBinaryFormat: false`) with a bare HTTP 400, read
//! a JSON gRPC call as a malformed protobuf message, and refuse a compression without
//! `ErrorInfo`, echoing the header's whole value into `grpc-message`. Calls made with the
//! Connect protocol itself are answered as a Connect client reads errors
//! ([`RefuseConnectLayer`]). The rules are the transports', so they hold for every service on
//! the port, health and reflection included.

use http::HeaderValue;
use http::header::{CONTENT_TYPE, HeaderName};

use crate::graph::Violation;
use crate::grpc::status::ServiceError;
use crate::text;

pub const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The compressions a request may use, as the `grpc-accept-encoding` of a refusal lists them.
pub const ACCEPTED_ENCODINGS: &str = "gzip,identity";

/// The gRPC media types: each takes a `+codec` suffix (`application/grpc+proto`).
const GRPC_MEDIA_TYPES: &[&str] = &["application/grpc-web-text", "application/grpc-web", "application/grpc"];

/// The spellings of the gRPC-Web media types the gRPC-Web layer recognises.
const GRPC_WEB_SPELLINGS: &[&str] = &[
    "application/grpc-web",
    "application/grpc-web+proto",
    "application/grpc-web-text",
    "application/grpc-web-text+proto",
];

/// What is wrong with a call's `content-type`, found by [`route`] for the guard to refuse. Each
/// holds the `content-type` as sent.
#[derive(Debug, Clone)]
pub enum WrongContentType {
    /// None at all, on a POST (a gRPC call always names its media type).
    Missing,
    /// Not a gRPC media type (`text/plain`, `application/grpcx+json`).
    NotGrpc(String),
    /// Native gRPC (`application/grpc`) over HTTP/1.1, which carries only gRPC-Web.
    GrpcOverHttp1(String),
    /// A gRPC media type with another codec than protobuf (`application/grpc-web+json`).
    Codec(String),
}

/// Prepares a call's wire-format headers for the layers below, before the gRPC-Web layer:
/// - a call whose `content-type` the service does not take ([`WrongContentType`]) gets a
///   protobuf gRPC one (which tonic-web passes on) and keeps what was wrong as an extension, so
///   that it reaches the guard, which refuses it;
/// - a `grpc-encoding` of gzip or identity in other letter cases (content codings are
///   case-insensitive, RFC 9110 §8.4.1) is written in lower case, the only spelling tonic takes.
/// - a gRPC-Web type in another spelling gets the one the gRPC-Web layer knows, and a text
///   request an `accept` that asks for a text answer.
pub fn route<B>(mut request: http::Request<B>) -> http::Request<B> {
    if let Some(encoding) = request.headers().get(&GRPC_ENCODING)
        && let Some(lower) =
            ["gzip", "identity"].into_iter().find(|e| encoding.as_bytes().eq_ignore_ascii_case(e.as_bytes()))
    {
        request.headers_mut().insert(&GRPC_ENCODING, HeaderValue::from_static(lower));
    }
    // Connect-protocol calls are answered by [`RefuseConnectLayer`], above.
    if is_connect(&request) {
        return request;
    }
    let http2 = request.version() >= http::Version::HTTP_2;
    // Read leniently: a byte outside ASCII must not let another codec through unrefused.
    let Some(value) = request.headers().get(CONTENT_TYPE) else {
        // Served as gRPC over HTTP/2, a bare HTTP 400 over HTTP/1.1: refused by name instead.
        // Other methods (a CORS preflight) are left to the layers below.
        if request.method() == http::Method::POST {
            let protobuf = if http2 { "application/grpc" } else { "application/grpc-web+proto" };
            request.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(protobuf));
            request.extensions_mut().insert(WrongContentType::Missing);
        }
        return request;
    };
    let asked = String::from_utf8_lossy(value.as_bytes());
    let (base, wrong): (_, fn(String) -> WrongContentType) = match grpc_media_type(&asked) {
        Some(base) => {
            let codec = asked.split_once('+').map(|(_, codec)| codec_of(codec));
            if !codec.is_none_or(|c| c.eq_ignore_ascii_case("proto")) {
                (base, WrongContentType::Codec)
            } else if base == "application/grpc" && !http2 {
                (base, WrongContentType::GrpcOverHttp1)
            } else {
                // The gRPC-Web layer knows each gRPC-Web type in one spelling only; media types
                // are case-insensitive and may carry parameters (RFC 9110 §8.3.1).
                if base != "application/grpc" && !GRPC_WEB_SPELLINGS.contains(&&*asked) {
                    let canonical = if codec.is_some() { format!("{base}+proto") } else { base.to_owned() };
                    let canonical = HeaderValue::from_str(&canonical).expect("a media type is a header value");
                    request.headers_mut().insert(CONTENT_TYPE, canonical);
                }
                if base == "application/grpc-web-text" {
                    answer_in_text(request.headers_mut());
                }
                return request;
            }
        }
        // tonic serves an HTTP/2 call of any content-type as gRPC (`text/plain`,
        // `application/grpcx+json`) and the gRPC-Web layer answers an HTTP/1.1 one with a bare
        // HTTP 400: both are refused by the guard instead, in the form the client can read.
        None => ("application/grpc", WrongContentType::NotGrpc),
    };
    let wrong = wrong(asked.into_owned());
    // Native gRPC names protobuf without a suffix, and only HTTP/2 carries it; the gRPC-Web
    // layer only knows the `+proto` forms.
    let protobuf = match base {
        "application/grpc" if http2 => HeaderValue::from_static("application/grpc"),
        "application/grpc" => HeaderValue::from_static("application/grpc-web+proto"),
        web => HeaderValue::from_str(&format!("{web}+proto")).expect("a media type is a header value"),
    };
    request.headers_mut().insert(CONTENT_TYPE, protobuf);
    request.extensions_mut().insert(wrong);
    request
}

/// The Connect protocol's unary content types (connect-web's default transport,
/// `createConnectTransport`); its streaming ones are `application/connect+<codec>`.
const CONNECT_CONTENT_TYPES: &[&str] = &["application/proto", "application/json"];
const CONNECT_STREAMING_PREFIX: &str = "application/connect+";

/// Whether `media_type` is one of the Connect protocol's streaming types.
fn is_connect_streaming(media_type: &str) -> bool {
    media_type.get(..CONNECT_STREAMING_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(CONNECT_STREAMING_PREFIX))
}

/// What a Connect-protocol call is told.
pub const CONNECT_REFUSAL: &str = "this server speaks gRPC and gRPC-Web, not the Connect protocol: call it through \
     createGrpcWebTransport (browsers) or createGrpcTransport (Node) with useBinaryFormat: true, or through \
     @remotemedia/client";

/// Whether `request` is made with the Connect protocol (its version header, or one of its
/// content types).
fn is_connect<B>(request: &http::Request<B>) -> bool {
    if request.headers().contains_key("connect-protocol-version") {
        return true;
    }
    // A Connect unary GET carries its protocol version in the query (`connect=v1`).
    if request.method() == http::Method::GET
        && request.uri().query().is_some_and(|q| q.split('&').any(|p| p.starts_with("connect=")))
    {
        return true;
    }
    request.headers().get(CONTENT_TYPE).is_some_and(|v| {
        let media_type = String::from_utf8_lossy(v.as_bytes());
        let media_type = media_type.split(';').next().unwrap_or_default().trim();
        CONNECT_CONTENT_TYPES.iter().any(|t| t.eq_ignore_ascii_case(media_type)) || is_connect_streaming(media_type)
    })
}

/// Answers Connect-protocol calls, which the gRPC-Web layer would answer with a bare HTTP 400
/// and gRPC would misread, with a Connect error a Connect client shows as it is: HTTP 501 and
/// `{"code": "unimplemented", "message": ...}` naming the transports the server speaks.
/// Counted and logged as a refusal (UNIMPLEMENTED, a client's mistake). Sits inside the CORS
/// layer, so a page can read the answer.
#[derive(Clone, Default)]
pub struct RefuseConnectLayer;

impl<S> tower::Layer<S> for RefuseConnectLayer {
    type Service = RefuseConnect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RefuseConnect { inner }
    }
}

#[derive(Clone)]
pub struct RefuseConnect<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for RefuseConnect<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<S::Future, futures::future::Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !is_connect(&request) {
            return futures::future::Either::Left(self.inner.call(request));
        }
        let rpc = crate::grpc::rpc_of_path(request.uri().path());
        // The call's id, as every other answer carries it: the client's when usable, else a new one.
        let request_id = crate::grpc::observe::usable_request_id(request.headers())
            .map_or_else(crate::grpc::observe::new_request_id, str::to_owned);
        tracing::info!(rpc, request_id, error = CONNECT_REFUSAL, "request refused");
        crate::grpc::observe::request_finished(
            rpc,
            tonic::Code::Unimplemented,
            crate::grpc::observe::outcome::VALIDATION,
            std::time::Duration::ZERO,
        );
        let streaming = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|t| is_connect_streaming(t))
            .map(str::to_owned);
        if request.version() < http::Version::HTTP_2 {
            // The client may still be sending: what it sends is read and dropped, so it gets
            // to read the answer (see the guard's refusals).
            super::linger(request.into_body());
        }
        let error = serde_json::json!({ "code": "unimplemented", "message": CONNECT_REFUSAL });
        let response = match streaming {
            // A Connect stream's error is its end-of-stream message (flag 2, JSON), under
            // HTTP 200: a Connect client reads no body of another status.
            Some(content_type) => {
                let end = serde_json::json!({ "error": error }).to_string();
                let mut body = Vec::with_capacity(5 + end.len());
                body.push(2u8);
                body.extend_from_slice(&(end.len() as u32).to_be_bytes());
                body.extend_from_slice(end.as_bytes());
                http::Response::builder().header(CONTENT_TYPE, content_type).header(REQUEST_ID, &request_id).body(body)
            }
            None => http::Response::builder()
                .status(http::StatusCode::NOT_IMPLEMENTED)
                .header(CONTENT_TYPE, "application/json")
                .header(REQUEST_ID, &request_id)
                .body(error.to_string().into_bytes()),
        }
        .expect("a static response is valid")
        .map(|body| tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from(body))));
        futures::future::Either::Right(futures::future::ready(Ok(response)))
    }
}

/// Asks the gRPC-Web layer, which answers in base64 text only to an `accept` spelled exactly
/// `application/grpc-web-text`, for the text answer a text request's `accept` asks for in
/// another spelling or leaves open (none, `*/*`), as gRPC-Web proxies answer. An `accept` that
/// names another type keeps its answer.
fn answer_in_text(headers: &mut http::HeaderMap) {
    let wants_text = headers.get(http::header::ACCEPT).is_none_or(|accept| {
        let accept = String::from_utf8_lossy(accept.as_bytes());
        let media_type = accept.split([';', '+', ',']).next().unwrap_or_default().trim();
        media_type == "*/*" || media_type.eq_ignore_ascii_case("application/grpc-web-text")
    });
    if wants_text {
        headers.insert(http::header::ACCEPT, HeaderValue::from_static("application/grpc-web-text"));
    }
}

/// The gRPC media type `content_type` names (before its `+codec` suffix and parameters), if any.
fn grpc_media_type(content_type: &str) -> Option<&'static str> {
    let media_type = content_type.split([';', '+']).next().unwrap_or_default().trim();
    GRPC_MEDIA_TYPES.iter().find(|t| t.eq_ignore_ascii_case(media_type)).copied()
}

/// The codec of a `+codec` suffix, without parameters.
fn codec_of(suffix: &str) -> &str {
    suffix.split(';').next().unwrap_or_default().trim()
}

/// Refuses a call whose `content-type` ([`route`]) or compression the service does not take.
/// The remedy comes first in each message: a `BadRequest` description keeps its first 160 bytes.
pub fn check(headers: &http::HeaderMap, extensions: &http::Extensions) -> Result<(), ServiceError> {
    if let Some(wrong) = extensions.get::<WrongContentType>() {
        let message = match wrong {
            WrongContentType::Missing => "send gRPC calls with a content-type (application/grpc, or \
                 application/grpc-web+proto from a browser): the call has none"
                .to_owned(),
            WrongContentType::NotGrpc(asked) => format!(
                "send gRPC calls (content-type application/grpc, or application/grpc-web+proto from a browser): \
                 `{}` is not a gRPC media type",
                text::quoted(asked)
            ),
            WrongContentType::GrpcOverHttp1(asked) => format!(
                "send gRPC calls over HTTP/2, or gRPC-Web (application/grpc-web+proto) over HTTP/1.1: `{}` \
                 came over HTTP/1.1",
                text::quoted(asked)
            ),
            WrongContentType::Codec(asked) => match asked.split_once('+').map_or("", |(_, c)| codec_of(c)) {
                "" => format!(
                    "send protobuf messages (application/grpc, application/grpc-web+proto): content-type `{}` \
                     names no message codec after its `+`",
                    text::quoted(asked)
                ),
                codec => format!(
                    "send protobuf messages (connect-web: useBinaryFormat: true): messages encoded as `{}` are \
                     not supported (the call's content-type is `{}`)",
                    text::quoted(codec),
                    text::quoted(asked),
                ),
            },
        };
        return Err(ServiceError::Unsupported(Violation::new(CONTENT_TYPE.as_str(), message)));
    }
    let message = match headers.get(&GRPC_ENCODING).map(HeaderValue::as_bytes) {
        None | Some(b"identity" | b"gzip") => return Ok(()),
        Some(b"") => "grpc-encoding is empty: name gzip or identity, or leave the header out".to_owned(),
        Some(other) => format!(
            "compress requests with gzip, or not at all (grpc-accept-encoding: {ACCEPTED_ENCODINGS}): `{}` is not \
             supported",
            text::quoted(&String::from_utf8_lossy(other)),
        ),
    };
    Err(ServiceError::Unsupported(Violation::new(GRPC_ENCODING.as_str(), message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXECUTE: &str = "/remotemedia.v1.PipelineService/ExecutePipeline";

    fn routed(content_type: &str) -> http::Request<()> {
        let request = http::Request::builder().uri(EXECUTE).version(http::Version::HTTP_2);
        route(request.header(CONTENT_TYPE, content_type).body(()).unwrap())
    }

    fn content_type(r: &http::Request<()>) -> &str {
        r.headers()[CONTENT_TYPE].to_str().unwrap()
    }

    #[test]
    fn protobuf_passes_untouched() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text+proto",
            "application/json",
        ] {
            let r = routed(ct);
            assert_eq!(content_type(&r), ct);
            assert!(r.extensions().get::<WrongContentType>().is_none(), "{ct}");
            assert!(check(r.headers(), r.extensions()).is_ok(), "{ct}");
        }
    }

    #[test]
    fn another_codec_is_routed_as_protobuf_and_refused_by_name() {
        for (asked, routed_as) in [
            ("application/grpc-web+json", "application/grpc-web+proto"),
            ("application/grpc-web-text+json", "application/grpc-web-text+proto"),
            ("application/grpc+json", "application/grpc"),
            ("Application/gRPC-Web+JSON; charset=utf-8", "application/grpc-web+proto"),
        ] {
            let r = routed(asked);
            assert_eq!(content_type(&r), routed_as, "{asked}");
            let err = check(r.headers(), r.extensions()).unwrap_err();
            let status = err.to_status();
            assert_eq!(status.code(), tonic::Code::Unimplemented);
            assert!(status.message().contains("messages encoded as `"), "{}", status.message());
            assert!(status.message().contains(asked), "{}", status.message());
            assert_eq!(err.outcome(), crate::grpc::observe::outcome::VALIDATION);
        }
    }

    #[test]
    fn a_grpc_web_type_in_another_spelling_is_served_in_the_one_the_grpc_web_layer_knows() {
        for (sent, served) in [
            ("Application/Grpc-Web+Proto", "application/grpc-web+proto"),
            ("APPLICATION/GRPC-WEB", "application/grpc-web"),
            ("application/grpc-web; charset=utf-8", "application/grpc-web"),
            ("application/grpc-web+PROTO;q=1", "application/grpc-web+proto"),
            ("Application/Grpc-Web-Text", "application/grpc-web-text"),
            ("application/grpc-web-text+proto", "application/grpc-web-text+proto"),
        ] {
            let r = routed(sent);
            assert_eq!(content_type(&r), served, "{sent}");
            assert!(check(r.headers(), r.extensions()).is_ok(), "{sent}");
        }
        let r = routed("APPLICATION/GRPC; charset=utf-8");
        assert_eq!(content_type(&r), "APPLICATION/GRPC; charset=utf-8", "native gRPC is taken in any spelling");
    }

    #[test]
    fn a_text_request_is_answered_in_text_unless_its_accept_names_another_type() {
        for (accept, answered) in [
            (None, Some("application/grpc-web-text")),
            (Some("*/*"), Some("application/grpc-web-text")),
            (Some("Application/Grpc-Web-Text"), Some("application/grpc-web-text")),
            (Some("application/grpc-web-text+proto; q=1"), Some("application/grpc-web-text")),
            (Some("application/grpc-web"), Some("application/grpc-web")),
        ] {
            let mut request = http::Request::builder().uri(EXECUTE).header(CONTENT_TYPE, "APPLICATION/GRPC-WEB-TEXT");
            if let Some(accept) = accept {
                request = request.header(http::header::ACCEPT, accept);
            }
            let r = route(request.body(()).unwrap());
            let got = r.headers().get(http::header::ACCEPT).map(|v| v.to_str().unwrap());
            assert_eq!(got, answered, "{accept:?}");
        }
    }

    #[test]
    fn every_connect_streaming_type_is_a_connect_call() {
        for ct in ["application/connect+xyz", "Application/Connect+JSON; charset=utf-8", "application/json"] {
            let r = http::Request::builder().uri(EXECUTE).header(CONTENT_TYPE, ct).body(()).unwrap();
            assert!(is_connect(&r), "{ct}");
        }
        let get = format!("{EXECUTE}?connect=v1&encoding=proto&message=");
        assert!(is_connect(&http::Request::builder().method("GET").uri(&get).body(()).unwrap()));
        assert!(!is_connect(&http::Request::builder().method("GET").uri(EXECUTE).body(()).unwrap()));
    }

    #[test]
    fn a_media_type_that_is_not_grpc_is_refused_over_either_http_version() {
        for (version, routed_as) in
            [(http::Version::HTTP_2, "application/grpc"), (http::Version::HTTP_11, "application/grpc-web+proto")]
        {
            for asked in ["application/grpcx+json", "application/grpcx", "text/plain", "application/grpc-webx+proto"] {
                let r = route(
                    http::Request::builder()
                        .uri(EXECUTE)
                        .version(version)
                        .header(CONTENT_TYPE, asked)
                        .body(())
                        .unwrap(),
                );
                assert_eq!(content_type(&r), routed_as, "{asked}");
                let message = check(r.headers(), r.extensions()).unwrap_err().to_string();
                assert!(message.starts_with("send gRPC calls (content-type application/grpc"), "{message}");
                assert!(message.contains(&format!("`{asked}` is not a gRPC media type")), "{message}");
            }
        }
        // A POST without a content-type, over either version; a preflight is left alone.
        for version in [http::Version::HTTP_2, http::Version::HTTP_11] {
            let r = route(http::Request::builder().method("POST").uri(EXECUTE).version(version).body(()).unwrap());
            let message = check(r.headers(), r.extensions()).unwrap_err().to_string();
            assert!(message.ends_with("the call has none"), "{message}");
        }
        let r = route(http::Request::builder().method("OPTIONS").uri(EXECUTE).body(()).unwrap());
        assert!(r.headers().get(CONTENT_TYPE).is_none() && r.extensions().get::<WrongContentType>().is_none());
        // Parameters after a gRPC media type are not a codec.
        let r = routed("application/grpc; charset=utf-8");
        assert!(r.extensions().get::<WrongContentType>().is_none());
        // Native gRPC needs HTTP/2: over HTTP/1.1 the gRPC-Web layer would answer a bare 400.
        let r = route(
            http::Request::builder()
                .uri(EXECUTE)
                .version(http::Version::HTTP_11)
                .header(CONTENT_TYPE, "application/grpc")
                .body(())
                .unwrap(),
        );
        assert_eq!(content_type(&r), "application/grpc-web+proto");
        let message = check(r.headers(), r.extensions()).unwrap_err().to_string();
        assert!(message.starts_with("send gRPC calls over HTTP/2"), "{message}");
    }

    #[test]
    fn a_byte_outside_ascii_does_not_let_another_codec_through() {
        let value = HeaderValue::from_bytes(b"application/grpc+j\xe9son").unwrap();
        let request = http::Request::builder().uri(EXECUTE).version(http::Version::HTTP_2);
        let r = route(request.header(CONTENT_TYPE, value).body(()).unwrap());
        assert_eq!(content_type(&r), "application/grpc");
        assert!(matches!(check(r.headers(), r.extensions()), Err(ServiceError::Unsupported(_))));
    }

    #[test]
    fn other_services_follow_the_same_rules() {
        let health = |content_type: &str| {
            route(
                http::Request::builder()
                    .uri("/grpc.health.v1.Health/Check")
                    .version(http::Version::HTTP_11)
                    .header(CONTENT_TYPE, content_type)
                    .header(&GRPC_ENCODING, "GZIP")
                    .body(())
                    .unwrap(),
            )
        };
        let r = health("application/grpc-web+json");
        assert_eq!(content_type(&r), "application/grpc-web+proto");
        assert_eq!(r.headers()[&GRPC_ENCODING], "gzip");
        assert!(matches!(r.extensions().get::<WrongContentType>(), Some(WrongContentType::Codec(_))));
        let r = health("Application/Grpc-Web+Proto");
        assert_eq!(content_type(&r), "application/grpc-web+proto");
        assert!(r.extensions().get::<WrongContentType>().is_none());
        assert!(is_connect(&health("application/json")));
    }

    #[test]
    fn gzip_and_identity_in_any_case_are_taken_in_the_spelling_tonic_knows() {
        for (sent, taken) in [("GZIP", "gzip"), ("Gzip", "gzip"), ("IDENTITY", "identity"), ("gzip", "gzip")] {
            let r = route(http::Request::builder().uri(EXECUTE).header(&GRPC_ENCODING, sent).body(()).unwrap());
            assert_eq!(r.headers()[&GRPC_ENCODING], taken);
            assert!(check(r.headers(), r.extensions()).is_ok(), "{sent}");
        }
        let empty = route(http::Request::builder().uri(EXECUTE).header(&GRPC_ENCODING, "").body(()).unwrap());
        let message = check(empty.headers(), empty.extensions()).unwrap_err().to_string();
        assert!(message.starts_with("grpc-encoding is empty"), "{message}");
    }

    #[test]
    fn the_remedy_comes_first_so_the_bad_request_description_keeps_it() {
        let long = format!("application/grpc-web+{}", "j".repeat(5_000));
        let r = routed(&long);
        let message = check(r.headers(), r.extensions()).unwrap_err().to_string();
        assert!(message.starts_with("send protobuf messages (connect-web: useBinaryFormat: true): "), "{message}");
        let mut headers = http::HeaderMap::new();
        headers.insert(&GRPC_ENCODING, HeaderValue::from_str(&"z".repeat(5_000)).unwrap());
        let message = check(&headers, &http::Extensions::new()).unwrap_err().to_string();
        assert!(message.starts_with("compress requests with gzip, or not at all"), "{message}");
    }

    #[test]
    fn a_plus_without_a_codec_is_named_as_such() {
        let r = routed("application/grpc-web+");
        let message = check(r.headers(), r.extensions()).unwrap_err().to_string();
        assert!(message.contains("content-type `application/grpc-web+` names no message codec"), "{message}");
    }

    #[test]
    fn a_compression_other_than_gzip_is_refused_with_the_accepted_ones() {
        let mut headers = http::HeaderMap::new();
        for ok in ["gzip", "identity"] {
            headers.insert(&GRPC_ENCODING, HeaderValue::from_static(ok));
            assert!(check(&headers, &http::Extensions::new()).is_ok(), "{ok}");
        }
        headers.insert(&GRPC_ENCODING, HeaderValue::from_str(&"x".repeat(20_000)).unwrap());
        let status = check(&headers, &http::Extensions::new()).unwrap_err().to_status();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert!(status.message().len() < 1024, "the header's value is quoted cut: {}", status.message().len());
        assert_eq!(status.metadata().get("grpc-accept-encoding").unwrap(), ACCEPTED_ENCODINGS);
    }
}
