//! The gRPC layer: `remotemedia.v1.PipelineService` over the executor.
//!
//! - [`server`]: binding, the tower layer stack, health, reflection, graceful shutdown
//! - [`transport`]: the HTTP/1.1 + HTTP/2 connection server; [`coalesce`]: its HTTP/2 writes;
//!   [`lifetime`]: deadlines and drain
//! - [`service`]: `ExecutePipeline` and `GetVersion`; [`stream`]: `StreamPipeline` sessions
//! - [`websocket`]: `StreamPipeline` sessions over WebSocket, for browsers
//! - [`interceptors`]: auth and protocol version checks in front of the service
//! - [`limits`]: per-request limits against server caps
//! - [`compression`]: when responses are gzip-compressed
//! - [`convert`]: wire messages ↔ executor types; [`status`]: every error → wire error;
//!   [`bounded`]: status messages of hosted services (reflection) cut to size
//! - [`observe`]: Prometheus metrics and request spans; [`state`]: shared server state

pub mod bounded;
pub mod coalesce;
pub mod codec;
pub mod compression;
pub mod convert;
pub mod interceptors;
pub mod lifetime;
pub mod limits;
pub mod observe;
pub mod server;
pub mod service;
pub mod state;
pub mod status;
pub mod stream;
pub mod transport;
pub mod websocket;

pub use server::{BoundServer, SERVICE_NAME, ServerError, bind, run};

/// The RPC names used as metric labels (a closed set).
pub(crate) fn rpc_name(method: &str) -> &'static str {
    match method {
        "ExecutePipeline" => "ExecutePipeline",
        "StreamPipeline" => "StreamPipeline",
        "GetVersion" => "GetVersion",
        _ => "other",
    }
}

/// The pipeline RPC `path` calls, for metric labels: `other` for any path that is not exactly
/// one of the pipeline service's methods (`/remotemedia.v1.PipelineService/x/GetVersion` too).
pub(crate) fn rpc_of_path(path: &str) -> &'static str {
    path.strip_prefix(interceptors::PIPELINE_PATH_PREFIX).map_or("other", rpc_name)
}
