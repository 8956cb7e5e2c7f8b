//! Server assembly and life cycle: bind, serve, and the one shutdown path.
//!
//! Shutdown: the signal arrives → health reports NOT_SERVING → new pipeline RPCs are refused
//! with UNAVAILABLE, open streams wind down and idle health watches end → in-flight work gets
//! the grace period to finish → whatever still runs is cancelled → connections get what is left
//! of the grace period to close → the server returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tonic::codec::CompressionEncoding;
use tonic_health::ServingStatus;
use tonic_reflection::server::Builder;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetRequestHeaderLayer;
use tower_http::trace::TraceLayer;
use tracing::{info, warn};

use super::compression;
use super::interceptors::{GuardLayer, Guards, PIPELINE_PATH_PREFIX, auth::Tokens, wire};
use super::lifetime::{DeadlineLayer, DrainLayer};
use super::observe::{self, NewRequestId};
use super::service::Pipelines;
use super::state::AppState;
use super::transport;
use super::websocket;
use crate::config::Config;
use crate::graph::{CircuitBreakers, Engine};
use crate::nodes::Registry;
use crate::proto::pipeline_service_server::PipelineServiceServer;
use crate::python::PythonRuntime;
use crate::telemetry::LIFECYCLE;

/// The largest HTTP/2 frame clients may send. A second of 48 kHz audio (192 KB) then arrives in
/// one frame instead of twelve 16 KB ones, which takes a fifth off a unary call's latency; the
/// price is that one large upload can delay other calls on the same connection by one frame.
const MAX_FRAME_BYTES: u32 = 256 * 1024;

/// Name under which health reports the pipeline service.
pub const SERVICE_NAME: &str = "remotemedia.v1.PipelineService";

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind { key: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error(
        "refusing to listen on {0} without authentication: configure auth_tokens or auth_tokens_file, \
         listen on a loopback address, or pass --allow-unauthenticated"
    )]
    Unauthenticated(SocketAddr),
    #[error("{0}")]
    Startup(String),
    /// A setting that start-up found wrong (a model name no model has): exit status 2, as for
    /// the errors found while reading the configuration.
    #[error("{0}")]
    Config(String),
}

/// A server whose sockets are bound; [`BoundServer::serve`] runs it.
pub struct BoundServer {
    state: Arc<AppState>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
}

/// Binds the gRPC and metrics sockets. Refuses a non-loopback address without tokens unless
/// `allow_unauthenticated` is set.
pub async fn bind(config: Config, registry: Registry) -> Result<BoundServer, ServerError> {
    if config.auth_tokens.is_empty() && !config.listen.ip().is_loopback() && !config.allow_unauthenticated {
        return Err(ServerError::Unauthenticated(config.listen));
    }
    let listener = TcpListener::bind(config.listen).await.map_err(|source| ServerError::Bind {
        key: "listen",
        addr: config.listen,
        source,
    })?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| ServerError::Bind {
            key: "metrics_listen",
            addr,
            source,
        })?),
        None => None,
    };
    observe::init(&registry.implementations());
    let engine = Engine::new(registry, CircuitBreakers::new(config.breaker_cooldown));
    Ok(BoundServer { state: Arc::new(AppState::new(engine, config)), listener, metrics_listener })
}

impl BoundServer {
    /// The bound gRPC address (with the real port when the configured one was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The bound metrics address, unless metrics are off.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    /// Shared state, for inspection by tests (open sessions, in-flight count).
    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then drains within the grace period and returns. A
    /// `shutdown` while the preloaded models load stops the server there, before it serves.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        tokio::pin!(shutdown);
        let addr = self.local_addr();
        let metrics_addr = self.metrics_addr();
        let state = self.state;
        let config = &state.config;

        let (health, health_service) = tonic_health::server::health_reporter();
        let health_service = health_service.accept_compressed(CompressionEncoding::Gzip);
        let tokens = Tokens::new(config.auth_tokens.clone());
        let grpc = ServiceBuilder::new()
            .layer(cors(&config.cors_allowed_origins))
            .layer(wire::RefuseConnectLayer)
            // A call in another codec than protobuf reaches the guard, which names the problem,
            // instead of the gRPC-Web layer's bare HTTP 400.
            .map_request(wire::route)
            // HTTP/1.1 carries gRPC-Web from browsers; HTTP/2 gRPC passes through unchanged.
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(SetRequestHeaderLayer::overriding(compression::GRPC_ACCEPT_ENCODING, {
                let policy = config.response_compression;
                move |req: &http::Request<tonic::body::Body>| compression::accept_encoding(policy, req.headers())
            }))
            .map_request(observe::keep_usable_request_id::<tonic::body::Body>)
            .layer(SetRequestIdLayer::x_request_id(NewRequestId))
            .layer(TraceLayer::new_for_grpc().make_span_with(observe::rpc_span).on_failure(observe::LogFailure))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(DeadlineLayer)
            .layer(DrainLayer::new(state.draining.clone(), PIPELINE_PATH_PREFIX))
            .layer(GuardLayer::new(Guards { tokens: tokens.clone(), origins: config.cors_allowed_origins.clone() }))
            .service(routes(&state, health_service)?);
        // WebSocket upgrades are answered before the gRPC-Web layer, which refuses every other
        // HTTP/1.1 request; the endpoint makes its own checks.
        let service = websocket::router(state.clone(), tokens).fallback_service(grpc);
        let settings = transport::Settings {
            keepalive_interval: config.keepalive_interval,
            keepalive_timeout: config.keepalive_timeout,
            max_frame_size: MAX_FRAME_BYTES,
            max_connection_age: config.max_connection_age,
        };
        // NOT_SERVING (not the reporter's default SERVING) until the preloaded models are ready.
        health.set_service_status("", ServingStatus::NotServing).await;
        health.set_service_status(SERVICE_NAME, ServingStatus::NotServing).await;
        let transport = transport::spawn(self.listener, service, settings);
        let metrics_stop = tokio_util::sync::CancellationToken::new();
        if let Some(listener) = self.metrics_listener {
            tokio::spawn(serve_metrics(listener, metrics_stop.clone()));
        }

        if let Some(foreign) = state.engine.registry().foreign() {
            if !config.models.preload.is_empty() {
                info!(target: LIFECYCLE, address = %addr, models = %config.models.preload.join(", "), "preloading models before serving");
            }
            // A signal does not wait for the models: loading one can take minutes, longer than
            // a supervisor waits before it kills. Dropping `warm_up` interrupts the Python job.
            let warmed = tokio::select! {
                r = foreign.warm_up() => Some(r),
                () = &mut shutdown => None,
            };
            let stopped = match warmed {
                Some(Ok(())) => None,
                Some(Err(e)) => Some(Err(ServerError::Startup(e))),
                None => {
                    info!(target: LIFECYCLE, address = %addr, "shutdown requested while preloading models; stopped before serving");
                    Some(Ok(()))
                }
            };
            if let Some(outcome) = stopped {
                metrics_stop.cancel();
                transport.shutdown(Duration::ZERO).await;
                return outcome;
            }
        }
        health.set_service_status("", ServingStatus::Serving).await;
        health.set_service_status(SERVICE_NAME, ServingStatus::Serving).await;
        info!(
            target: LIFECYCLE,
            address = %addr,
            metrics_address = metrics_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            auth = if config.auth_tokens.is_empty() { "off" } else { "bearer" },
            version = env!("CARGO_PKG_VERSION"),
            "remotemedia-server listening on {addr}"
        );

        shutdown.await;
        drain(&state, &health, transport).await;
        metrics_stop.cancel();
        Ok(())
    }
}

/// The services the server answers: health, reflection (v1 and v1alpha) and the pipeline
/// service, by path.
fn routes(state: &Arc<AppState>, health: impl HealthService) -> Result<tonic::service::Routes, ServerError> {
    let config = &state.config;
    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(super::bounded::Bounded(health))
        // gzip requests are accepted on every service, as the pipeline's refusal of another
        // compression says.
        .add_service(super::bounded::Bounded(
            reflection(Builder::build_v1)?.accept_compressed(CompressionEncoding::Gzip),
        ))
        .add_service(super::bounded::Bounded(
            reflection(Builder::build_v1alpha)?.accept_compressed(CompressionEncoding::Gzip),
        ))
        .add_service(
            PipelineServiceServer::new(Pipelines::new(state.clone()))
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(config.limits.max_message_bytes)
                .max_encoding_message_size(usize::MAX),
        );
    let mut routes = routes.routes();
    let router = routes.axum_router_mut();
    *router = std::mem::take(router).fallback(answer_no_such_method);
    Ok(routes.prepare())
}

/// Answers a call to a service this server does not have, naming it: the router's own
/// UNIMPLEMENTED has no message. (An unknown method of the pipeline service is refused by the
/// guard, which counts it.)
async fn answer_no_such_method(uri: http::Uri) -> http::Response<tonic::body::Body> {
    let (parts, ()) = no_such_method(uri.path()).into_http::<()>().into_parts();
    http::Response::from_parts(parts, tonic::body::Body::empty())
}

/// The status of a call to `path`, which no service of this server has. Logged and counted
/// (as `other`) like an unknown pipeline method, so that an operator sees such calls.
pub(super) fn no_such_method(path: &str) -> tonic::Status {
    let status = tonic::Status::unimplemented(format!(
        "this server has no method `{}`: its services are {SERVICE_NAME}, grpc.health.v1.Health and \
         grpc.reflection.v1.ServerReflection (and v1alpha)",
        crate::text::quoted(path)
    ));
    tracing::info!(error = status.message(), "request refused");
    observe::request_finished("other", status.code(), observe::outcome::VALIDATION, Duration::ZERO);
    status
}

/// The health service as tonic-health builds it.
trait HealthService:
    tower::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + tonic::server::NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> HealthService for T where
    T: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The one shutdown path: health reports NOT_SERVING, new work is refused and streams wind
/// down; in-flight work gets the grace period, then is cancelled; connections get what is left
/// of the grace period to deliver their last responses (at least a moment), then are closed.
async fn drain(state: &AppState, health: &tonic_health::server::HealthReporter, transport: transport::Transport) {
    let grace = state.config.grace_period;
    let started = Instant::now();
    info!(target: LIFECYCLE, grace_period_ms = grace.as_millis() as u64, in_flight = state.inflight.count(), "shutdown started; draining");
    health.set_service_status("", ServingStatus::NotServing).await;
    health.set_service_status(SERVICE_NAME, ServingStatus::NotServing).await;
    state.draining.cancel();
    if tokio::time::timeout(grace, state.inflight.wait_idle()).await.is_err() {
        warn!(in_flight = state.inflight.count(), "grace period over; cancelling what still runs");
        state.abort.cancel();
        let _ = tokio::time::timeout(CANCEL_WAIT, state.inflight.wait_idle()).await;
    }
    let left = grace.saturating_sub(started.elapsed()).max(CLOSE_WAIT_MIN.min(grace));
    if !transport.shutdown(left).await {
        warn!(waited_ms = left.as_millis() as u64, "connections did not close in time; closed them");
    }
    info!(target: LIFECYCLE, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "shutdown complete");
}

/// How long cancelled work may take to unwind once the grace period is over.
const CANCEL_WAIT: Duration = Duration::from_secs(2);
/// The least time connections get to deliver their last responses at shutdown.
const CLOSE_WAIT_MIN: Duration = Duration::from_millis(500);

/// The reflection service (v1 or v1alpha), serving the service's own descriptors, health's, and
/// the `google.rpc` error-detail types its statuses carry, so grpcurl decodes those too.
fn reflection<S>(
    build: impl FnOnce(Builder<'static>) -> Result<S, tonic_reflection::server::Error>,
) -> Result<S, ServerError> {
    let builder = Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET);
    build(builder).map_err(|e| ServerError::Startup(format!("reflection: {e}")))
}

/// CORS for gRPC-Web callers: only the configured origins, the headers the protocol and the
/// service use, and the response headers a client needs to read statuses and request ids.
fn cors(origins: &[String]) -> CorsLayer {
    let origins = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok());
    let allow = [
        "authorization",
        // Sent by Connect-protocol clients, which are refused with an answer a page can read.
        "connect-protocol-version",
        "connect-timeout-ms",
        "content-type",
        "grpc-accept-encoding",
        "grpc-encoding",
        "grpc-timeout",
        "remotemedia-protocol-version",
        "x-grpc-web",
        "x-request-id",
        "x-user-agent",
    ];
    let expose = [
        "grpc-accept-encoding",
        "grpc-encoding",
        "grpc-message",
        "grpc-status",
        "grpc-status-details-bin",
        "remotemedia-supported-versions",
        "x-request-id",
    ];
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([http::Method::POST])
        .allow_headers(allow.map(HeaderName::from_static))
        .expose_headers(expose.map(HeaderName::from_static))
        .max_age(Duration::from_secs(24 * 3600))
}

/// Serves `GET /metrics` in the Prometheus text format.
async fn serve_metrics(listener: TcpListener, stop: tokio_util::sync::CancellationToken) {
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|| async {
                ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], observe::render())
            }),
        )
        // Anything else is told where the metrics are, not given an empty 404.
        .fallback(|| async { (http::StatusCode::NOT_FOUND, "not found: this port serves GET /metrics only\n") });
    let shutdown = async move { stop.cancelled().await };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        warn!(error = %e, "metrics endpoint stopped");
    }
}

/// Builds the registry (native nodes, and the Python runtime unless `python` is off), binds and
/// serves until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    tokio::pin!(shutdown);
    // Starting the Python runtime (importing its nodes and plug-ins) can take seconds; a signal
    // meanwhile stops the server there instead of once it serves.
    let registry = tokio::select! {
        r = registry(&config) => r?,
        () = &mut shutdown => {
            info!(target: LIFECYCLE, "shutdown requested while starting; stopped before serving");
            return Ok(());
        }
    };
    let server = bind(config, registry).await?;
    server.serve(shutdown).await
}

/// The node registry of `config`: the native nodes, and the Python runtime's nodes (built-in
/// and plug-ins) unless `python` is off.
pub async fn registry(config: &Config) -> Result<Registry, ServerError> {
    let mut registry = Registry::builtin();
    if config.python_enabled {
        let (home, workers, paths, models) = (
            config.python_home.clone(),
            config.python_workers,
            config.python_nodes_paths.clone(),
            config.models.clone(),
        );
        let runtime =
            tokio::task::spawn_blocking(move || PythonRuntime::start(home.as_deref(), workers, &paths, &models))
                .await
                .map_err(|e| ServerError::Startup(format!("python start-up task failed: {e}")))?
                .map_err(|e| match e {
                    crate::python::PythonError::ModelSettings(m) => ServerError::Config(m),
                    e => ServerError::Startup(e.to_string()),
                })?;
        registry.attach_foreign(runtime).map_err(|e| ServerError::Startup(e.to_string()))?;
    }
    Ok(registry)
}
