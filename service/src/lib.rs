//! RemoteMedia: a gRPC service that runs audio and ML pipelines.
//!
//! Layout:
//! - [`audio`]: [`audio::AudioBuffer`] (shared little-endian samples) and sample conversions
//! - [`nodes`]: the node trait, the registry, and one file per native node type
//! - [`graph`]: manifest validation, the DAG executor, retries, circuit breakers, metrics
//! - `proto`: the generated `remotemedia.v1` messages and service stubs

pub mod audio;
pub mod graph;
pub mod nodes;

/// Generated `remotemedia.v1` messages and tonic stubs (never edited by hand).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("remotemedia.v1");

    /// Encoded descriptors of `proto/remotemedia/v1/*.proto`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("remotemedia_descriptor");
}
