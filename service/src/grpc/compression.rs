//! Response compression policy ([`ResponseCompression`]).
//!
//! tonic compresses a response whenever the request's `grpc-accept-encoding` lists gzip. The
//! policy is applied by rewriting that header before tonic reads it: gzip is removed from it
//! unless the policy lets this call's response be compressed. Request decompression is not
//! affected: gzip requests are always accepted.

use http::HeaderValue;
use http::header::HeaderName;

use super::interceptors::wire::GRPC_ENCODING;
use crate::config::ResponseCompression;

pub(crate) const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");

/// The `grpc-accept-encoding` value tonic should see, or `None` to leave the header as it is.
pub(crate) fn accept_encoding(policy: ResponseCompression, headers: &http::HeaderMap) -> Option<HeaderValue> {
    let accepted = headers.get(&GRPC_ACCEPT_ENCODING)?.to_str().ok()?;
    let request_gzip = headers.get(&GRPC_ENCODING).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let allow_gzip = match policy {
        ResponseCompression::Accepted => true,
        ResponseCompression::Mirror => request_gzip,
        ResponseCompression::Off => false,
    };
    if allow_gzip {
        return None;
    }
    let rest: Vec<&str> =
        accepted.split(',').map(str::trim).filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("gzip")).collect();
    let value = if rest.is_empty() { "identity".to_owned() } else { rest.join(",") };
    HeaderValue::from_str(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn mirror_keeps_gzip_only_for_gzip_requests() {
        let plain = headers(&[("grpc-accept-encoding", "identity,deflate,gzip")]);
        assert_eq!(accept_encoding(ResponseCompression::Mirror, &plain).unwrap(), "identity,deflate");
        let gz = headers(&[("grpc-accept-encoding", "gzip"), ("grpc-encoding", "gzip")]);
        assert_eq!(accept_encoding(ResponseCompression::Mirror, &gz), None);
    }

    #[test]
    fn accepted_leaves_the_header_and_off_always_strips_gzip() {
        let gz = headers(&[("grpc-accept-encoding", "gzip"), ("grpc-encoding", "gzip")]);
        assert_eq!(accept_encoding(ResponseCompression::Accepted, &gz), None);
        assert_eq!(accept_encoding(ResponseCompression::Off, &gz).unwrap(), "identity");
    }

    #[test]
    fn no_header_means_nothing_to_rewrite() {
        assert_eq!(accept_encoding(ResponseCompression::Off, &http::HeaderMap::new()), None);
    }
}
