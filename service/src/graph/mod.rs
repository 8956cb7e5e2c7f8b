//! The executor core: manifest → validated graph → execution.
//!
//! - [`manifest`]: the executor's own manifest types (the gRPC layer converts wire messages to them)
//! - [`validate`]: every structural rule, all violations at once, Kahn's order, cycle paths
//! - [`executor`]: [`Engine`] builds pipelines, [`Pipeline::run`] executes them
//! - [`retry`], [`breaker`]: the retry policy and per-node-type circuit breakers
//! - [`metrics`]: per-node and per-run measurements
//!
//! Nothing here knows about gRPC.

pub mod breaker;
mod error;
pub mod executor;
pub mod manifest;
pub mod metrics;
pub mod retry;
pub mod validate;

pub use breaker::CircuitBreakers;
pub use error::{ExecError, ValidationError, Violation};
pub use executor::{Engine, Feed, Mode, Pipeline, RunLimits};
pub use manifest::{Edge, Manifest, ManifestNode, PipelineConfig, RuntimeHint};
pub use metrics::{NodeOutput, NodeReport, NodeStatus, RunOutput};
pub use retry::{Backoff, RetryPolicy};
pub use validate::RequestShape;
