//! The request's wire format: the message codec its `content-type` names and the compression
//! its `grpc-encoding` names. The service takes protobuf messages, compressed with gzip or not
//! at all. Anything else is refused by the guard as UNIMPLEMENTED with `ErrorInfo` reason
//! VALIDATION and a `BadRequest` naming the header, like every other refusal, where the
//! libraries below would answer a JSON gRPC-Web call (connect-web's default format) with a bare
//! HTTP 400, read a JSON gRPC call as a malformed protobuf message, and refuse a compression
//! without `ErrorInfo`, echoing the header's whole value into `grpc-message`.

use http::HeaderValue;
use http::header::{CONTENT_TYPE, HeaderName};

use crate::graph::Violation;
use crate::grpc::status::ServiceError;
use crate::text;

pub const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
/// The compressions a request may use, as the `grpc-accept-encoding` of a refusal lists them.
pub const ACCEPTED_ENCODINGS: &str = "gzip,identity";

/// The gRPC media types, longest first: each takes a `+codec` suffix (`application/grpc+proto`).
const GRPC_MEDIA_TYPES: &[&str] = &["application/grpc-web-text", "application/grpc-web", "application/grpc"];

/// The `content-type` of a call that asked for another codec than protobuf, kept by
/// [`route_codec`] for the guard to refuse.
#[derive(Debug, Clone)]
pub struct RequestedCodec(String);

/// Lets a call in another codec than protobuf reach the guard, which refuses it: its
/// `content-type` becomes the protobuf one (which tonic-web passes on) and the original is kept
/// as a [`RequestedCodec`] extension. Runs before the gRPC-Web layer.
pub fn route_codec<B>(mut request: http::Request<B>) -> http::Request<B> {
    let Some(asked) = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return request };
    let Some((media_type, codec)) = asked.split_once('+') else { return request };
    let codec = codec.split(';').next().unwrap_or_default().trim();
    let Some(base) = GRPC_MEDIA_TYPES.iter().find(|t| t.eq_ignore_ascii_case(media_type.trim())) else {
        return request;
    };
    if codec.eq_ignore_ascii_case("proto") {
        return request;
    }
    let asked = asked.to_owned();
    // Native gRPC names protobuf without a suffix; gRPC-Web's layer only knows the `+proto` forms.
    let protobuf = if *base == "application/grpc" { (*base).to_owned() } else { format!("{base}+proto") };
    request
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_str(&protobuf).expect("a media type is a header value"));
    request.extensions_mut().insert(RequestedCodec(asked));
    request
}

/// Refuses a call whose codec ([`route_codec`]) or compression the service does not take.
pub fn check(headers: &http::HeaderMap, extensions: &http::Extensions) -> Result<(), ServiceError> {
    if let Some(RequestedCodec(asked)) = extensions.get::<RequestedCodec>() {
        let codec = asked.split_once('+').map_or("", |(_, c)| c.split(';').next().unwrap_or_default().trim());
        let asked_for = if codec.is_empty() {
            format!("content-type `{}` names no message codec after its `+`", text::quoted(asked))
        } else {
            format!(
                "messages encoded as `{}` (content-type `{}`) are not supported",
                text::quoted(codec),
                text::quoted(asked)
            )
        };
        return Err(ServiceError::Unsupported(Violation::new(
            CONTENT_TYPE.as_str(),
            format!(
                "{asked_for}: this service takes protobuf (application/grpc, application/grpc-web+proto or \
                 application/grpc-web-text+proto; connect-web: useBinaryFormat: true)"
            ),
        )));
    }
    match headers.get(&GRPC_ENCODING).map(HeaderValue::as_bytes) {
        None | Some(b"identity" | b"gzip") => Ok(()),
        Some(other) => Err(ServiceError::Unsupported(Violation::new(
            GRPC_ENCODING.as_str(),
            format!(
                "requests compressed with `{}` are not supported: compress them with gzip, or not at all \
                 (grpc-accept-encoding: {ACCEPTED_ENCODINGS})",
                text::quoted(&String::from_utf8_lossy(other)),
            ),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(content_type: &str) -> http::Request<()> {
        route_codec(http::Request::builder().header(CONTENT_TYPE, content_type).body(()).unwrap())
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
            assert!(r.extensions().get::<RequestedCodec>().is_none(), "{ct}");
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
    fn a_plus_without_a_codec_is_named_as_such() {
        let r = routed("application/grpc-web+");
        let message = check(r.headers(), r.extensions()).unwrap_err().to_string();
        assert!(message.starts_with("content-type `application/grpc-web+` names no message codec"), "{message}");
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
