//! RemoteMedia: a gRPC service that runs audio and ML pipelines.
//!
//! Layout:
//! - [`audio`]: [`audio::AudioBuffer`] (shared little-endian samples) and sample conversions
//! - [`nodes`]: the node trait, the registry, and one file per native node type
//! - [`graph`]: manifest validation, the DAG executor, retries, circuit breakers, metrics
//! - [`grpc`]: the tonic service, interceptors, limits, error mapping, server life cycle
//! - [`config`]: typed configuration from flags, environment and a TOML file
//! - [`telemetry`], [`shutdown`], [`probe`]: logging, signals, the health probe
//! - [`json`]: strict parsing of client JSON (duplicate keys refused)
//! - [`text`]: bounded text for messages that quote what clients sent
//! - `proto`: the generated `remotemedia.v1` messages and service stubs
//!
//! [`run`] serves until a shutdown future resolves; tests call [`grpc::bind`] with port 0 and
//! stop the server with a oneshot.

pub mod audio;
pub mod config;
pub mod graph;
pub mod grpc;
pub mod json;
pub mod nodes;
pub mod probe;
pub mod python;
pub mod shutdown;
pub mod telemetry;
pub mod text;

pub use config::Config;
pub use grpc::{BoundServer, ServerError, bind, run};

/// Generated `remotemedia.v1` messages and tonic stubs (never edited by hand).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("remotemedia.v1");

    /// Encoded descriptors of `proto/remotemedia/v1/*.proto`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("remotemedia_descriptor");
}
