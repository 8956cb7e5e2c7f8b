//! `StreamPipeline` over WebSocket, for browsers, on the server's port: `GET /ws/StreamPipeline`
//! upgraded over HTTP/1.1. Each binary frame carries one `StreamRequest` (client → server) or one
//! `StreamResponse` (server → client); the session is the gRPC one ([`super::stream`]), and its
//! end travels as a close code and reason ([`close`]). The protocol is docs/websocket.md.
//!
//! Everything is checked before the upgrade, in the order of the gRPC guard:
//! - the `Origin`, when there is one (browsers always send it), must be one of
//!   `cors_allowed_origins`, the gRPC-Web allow-list; otherwise the answer is 403 and nothing is
//!   upgraded;
//! - the bearer token, from the `authorization` header or, since a browser cannot set headers
//!   on a WebSocket, from a `bearer.<base64url token>` entry of `Sec-WebSocket-Protocol`;
//! - the protocol version, from a `remotemedia.<version>` entry of `Sec-WebSocket-Protocol`
//!   (named in the answer) or the `remotemedia-protocol-version` header; none means v1.
//!
//! A refused token or version, the concurrency cap and a draining server are answered on the
//! upgraded socket, at once and before any message is read: the in-band error, then the close
//! that carries the status. A browser shows a page nothing of a refused handshake but a bare
//! failure, so only the Origin, which no page may get past, is refused before the upgrade.
//! Neither the token nor the `Sec-WebSocket-Protocol` header is ever logged.

pub mod close;
mod connection;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use data_encoding::BASE64URL_NOPAD;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::{Instrument, debug, info};

use super::interceptors::{PIPELINE_PATH_PREFIX, auth::Tokens, version};
use super::observe;
use super::state::AppState;
use super::status::ServiceError;
use crate::text;

/// Where the WebSocket endpoint listens.
pub const PATH: &str = "/ws/StreamPipeline";
/// `Sec-WebSocket-Protocol` entries naming a protocol version: `remotemedia.v1`.
pub const VERSION_PROTOCOL_PREFIX: &str = "remotemedia.";
/// `Sec-WebSocket-Protocol` entries carrying the bearer token, base64url without padding.
pub const TOKEN_PROTOCOL_PREFIX: &str = "bearer.";
/// `Sec-WebSocket-Protocol` entries carrying the stream's deadline as a `grpc-timeout` value
/// (`timeout.5000m`): a browser cannot set the header on a WebSocket.
pub const TIMEOUT_PROTOCOL_PREFIX: &str = "timeout.";
/// The RPC a WebSocket session is, in metrics and logs.
const RPC: &str = "StreamPipeline";

/// The WebSocket endpoint as a router, to sit in front of the gRPC services.
pub fn router(state: Arc<AppState>, tokens: Tokens) -> axum::Router {
    let endpoint = Arc::new(Endpoint { state, tokens });
    axum::Router::new().route(
        PATH,
        axum::routing::get(move |request: Request| {
            let endpoint = endpoint.clone();
            async move { endpoint.upgrade(request) }
        }),
    )
}

struct Endpoint {
    state: Arc<AppState>,
    tokens: Tokens,
}

impl Endpoint {
    /// Checks an upgrade request and answers it: 101 and a task serving the socket, or a refusal.
    fn upgrade(&self, mut request: Request) -> Response {
        let span = span(request.headers());
        let _entered = span.enter();
        let key = match handshake_key(&request) {
            Ok(key) => key,
            Err(refusal) => {
                observe::websocket_handshake(observe::handshake::MALFORMED);
                debug!(reason = refusal.1, "WebSocket handshake refused");
                return refusal.into_response();
            }
        };
        if let Err(origin) = self.check_origin(request.headers()) {
            observe::websocket_handshake(observe::handshake::ORIGIN_REFUSED);
            info!(origin = %text::quoted(&origin), "WebSocket upgrade refused: origin not in cors_allowed_origins");
            return Refusal(StatusCode::FORBIDDEN, "this origin is not allowed (cors_allowed_origins)").into_response();
        }
        let offer = Offer::parse(request.headers());
        let timeout = offer.timeout(request.headers());
        let admission = self.admit(&offer, request.headers()).and(timeout.as_ref().map(|_| ()).map_err(Clone::clone));
        let deadline = timeout.ok().flatten().map(|t| (tokio::time::Instant::now() + t, t));
        observe::websocket_handshake(observe::handshake::UPGRADED);

        let on_upgrade = hyper::upgrade::on(&mut request);
        let state = self.state.clone();
        let config = WebSocketConfig::default()
            .max_message_size(Some(state.config.limits.max_message_bytes))
            .max_frame_size(Some(state.config.limits.max_message_bytes));
        tokio::spawn(
            async move {
                match on_upgrade.await {
                    Ok(upgraded) => {
                        let socket =
                            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
                        connection::run(socket, state, admission, deadline).await;
                    }
                    Err(e) => debug!(error = %e, "WebSocket upgrade failed"),
                }
            }
            .instrument(span.clone()),
        );
        accept(&key, offer.answer.as_deref())
    }

    /// `Err(origin)` when the request has an `Origin` outside the allow-list.
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), String> {
        crate::grpc::interceptors::check_origin(&self.state.config.cors_allowed_origins, headers)
    }

    /// The token, then the protocol version, as the gRPC guard checks them.
    fn admit(&self, offer: &Offer, headers: &HeaderMap) -> Result<(), ServiceError> {
        if headers.contains_key(header::AUTHORIZATION) {
            self.tokens.check(headers)?;
        } else if self.tokens.is_enabled() {
            match &offer.token {
                Some(Ok(token)) => self.tokens.verify(token)?,
                Some(Err(())) => {
                    observe::auth_rejected("malformed");
                    return Err(ServiceError::Unauthenticated(format!(
                        "the `{TOKEN_PROTOCOL_PREFIX}` subprotocol entry must hold the token in base64url without padding"
                    )));
                }
                None => {
                    observe::auth_rejected("missing");
                    return Err(ServiceError::Unauthenticated(format!(
                        "missing bearer token: offer the subprotocol `{TOKEN_PROTOCOL_PREFIX}<base64url token>`"
                    )));
                }
            }
        }
        match (&offer.selected, offer.versions.first()) {
            (Some(_), _) => Ok(()),
            (None, Some(first)) => version::check(first),
            (None, None) => version::check_header(headers),
        }
    }
}

/// What the client offered in `Sec-WebSocket-Protocol`.
struct Offer {
    /// The versions of its `remotemedia.<version>` entries, in its order.
    versions: Vec<String>,
    /// The first entry whose version this server speaks.
    selected: Option<String>,
    /// The entry the answer names: the selected one, else the first version entry (whose
    /// session is then refused). Browsers fail a handshake whose answer names none of the
    /// entries they offered; the token's entry is never named.
    answer: Option<String>,
    /// The token of its `bearer.` entry; `Err` when that entry does not decode.
    token: Option<Result<String, ()>>,
    /// The values of its `timeout.` entries (one is allowed).
    timeouts: Vec<String>,
}

impl Offer {
    fn parse(headers: &HeaderMap) -> Self {
        let mut offer = Offer { versions: Vec::new(), selected: None, answer: None, token: None, timeouts: Vec::new() };
        let entries = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim);
        for entry in entries {
            if let Some(encoded) = entry.strip_prefix(TOKEN_PROTOCOL_PREFIX) {
                offer.token.get_or_insert_with(|| {
                    let bytes = BASE64URL_NOPAD.decode(encoded.as_bytes()).map_err(|_| ())?;
                    String::from_utf8(bytes).map_err(|_| ())
                });
            } else if let Some(t) = entry.strip_prefix(TIMEOUT_PROTOCOL_PREFIX) {
                offer.timeouts.push(t.to_owned());
            } else if let Some(v) = entry.strip_prefix(VERSION_PROTOCOL_PREFIX) {
                if offer.selected.is_none() && version::check(v).is_ok() {
                    offer.selected = Some(entry.to_owned());
                }
                offer.answer.get_or_insert_with(|| entry.to_owned());
                offer.versions.push(v.to_owned());
            }
        }
        if offer.selected.is_some() {
            offer.answer.clone_from(&offer.selected);
        }
        offer
    }

    /// The stream's time limit: the `timeout.` entry, else a `grpc-timeout` header (a client
    /// that can set headers), in `grpc-timeout`'s form; an INVALID_ARGUMENT naming it when it
    /// does not parse.
    fn timeout(&self, headers: &HeaderMap) -> Result<Option<std::time::Duration>, ServiceError> {
        if self.timeouts.len() > 1 {
            return Err(ServiceError::InvalidArgument(crate::graph::Violation::new(
                TIMEOUT_PROTOCOL_PREFIX,
                format!(
                    "{} `{TIMEOUT_PROTOCOL_PREFIX}` entries were offered; a stream has one deadline",
                    self.timeouts.len()
                ),
            )));
        }
        let (field, value) = match (self.timeouts.first(), headers.get("grpc-timeout")) {
            (Some(t), _) => (TIMEOUT_PROTOCOL_PREFIX, t.clone()),
            (None, Some(h)) => ("grpc-timeout", String::from_utf8_lossy(h.as_bytes()).into_owned()),
            (None, None) => return Ok(None),
        };
        match super::lifetime::parse_timeout(&value) {
            Some(t) => Ok(Some(t)),
            None => Err(ServiceError::InvalidArgument(crate::graph::Violation::new(
                field,
                format!(
                    "`{}` is not a timeout: up to 8 digits and a unit (H, M, S, m, u, n), as grpc-timeout writes it \
                     (`{TIMEOUT_PROTOCOL_PREFIX}5000m` for 5 s)",
                    text::quoted(&value)
                ),
            ))),
        }
    }
}

/// A handshake refused before the upgrade: its HTTP status and why.
struct Refusal(StatusCode, &'static str);

impl Refusal {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(format!("{}\n", self.1)));
        *response.status_mut() = self.0;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        if self.0 == StatusCode::UPGRADE_REQUIRED {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        response
    }
}

/// The `Sec-WebSocket-Key` of a well-formed RFC 6455 upgrade request.
fn handshake_key(request: &Request) -> Result<HeaderValue, Refusal> {
    let headers = request.headers();
    if request.version() != http::Version::HTTP_11 {
        return Err(Refusal(StatusCode::BAD_REQUEST, "WebSocket upgrades need HTTP/1.1"));
    }
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return Err(Refusal(StatusCode::UPGRADE_REQUIRED, "this endpoint speaks WebSocket only"));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v != "13") {
        return Err(Refusal(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 is the one supported"));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .cloned()
        .ok_or(Refusal(StatusCode::BAD_REQUEST, "the upgrade request has no Sec-WebSocket-Key"))
}

/// The 101 answer, with the selected subprotocol (never the token's entry).
fn accept(key: &HeaderValue, protocol: Option<&str>) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let accept = derive_accept_key(key.as_bytes());
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept).expect("base64 is a valid header"));
    if let Some(value) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    response
}

/// The span of a WebSocket session, shaped like the gRPC calls' (request id, rpc, service).
fn span(headers: &HeaderMap) -> tracing::Span {
    let request_id = crate::grpc::observe::usable_request_id(headers)
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
    let service = PIPELINE_PATH_PREFIX.trim_matches('/');
    tracing::info_span!("rpc", request_id = %request_id, rpc = RPC, service = %service, transport = "websocket")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_offer_names_versions_in_order_and_decodes_the_token() {
        let token = BASE64URL_NOPAD.encode("s3cret/+=token".as_bytes());
        let h = headers(&[
            ("sec-websocket-protocol", &format!("remotemedia.v2, {TOKEN_PROTOCOL_PREFIX}{token}")),
            ("sec-websocket-protocol", "remotemedia.1.4, chat"),
        ]);
        let offer = Offer::parse(&h);
        assert_eq!(offer.versions, ["v2", "1.4"]);
        assert_eq!(offer.selected.as_deref(), Some("remotemedia.1.4"));
        assert_eq!(offer.answer, offer.selected);
        assert_eq!(offer.token, Some(Ok("s3cret/+=token".to_owned())));

        let bad = Offer::parse(&headers(&[("sec-websocket-protocol", "bearer.%%%")]));
        assert_eq!(bad.token, Some(Err(())));
        assert!(bad.versions.is_empty() && bad.answer.is_none());

        // An unsupported version is still named in the answer; its session is then refused.
        let future = Offer::parse(&headers(&[("sec-websocket-protocol", "remotemedia.v7, remotemedia.v8")]));
        assert_eq!((future.selected, future.answer.as_deref()), (None, Some("remotemedia.v7")));
    }

    #[test]
    fn the_answer_never_echoes_the_token_entry() {
        let h = headers(&[("sec-websocket-protocol", "bearer.dG9rZW4, remotemedia.v1")]);
        let offer = Offer::parse(&h);
        let response = accept(&HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="), offer.answer.as_deref());
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(response.headers()[header::SEC_WEBSOCKET_PROTOCOL], "remotemedia.v1");
        // RFC 6455 section 1.3's example key and answer.
        assert_eq!(response.headers()[header::SEC_WEBSOCKET_ACCEPT], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
