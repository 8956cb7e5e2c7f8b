//! The executor's own view of a pipeline manifest, independent of the wire format.

use super::retry::RetryPolicy;

/// The only manifest schema version this executor accepts.
pub const MANIFEST_VERSION: &str = "v1";

/// Default consecutive failures that open a node type's circuit breaker.
pub const DEFAULT_BREAKER_THRESHOLD: u32 = 5;

pub use crate::nodes::RuntimeHint;

#[derive(Debug, Clone, PartialEq)]
pub struct ManifestNode {
    pub id: String,
    pub node_type: String,
    /// JSON text of the parameters; empty means `{}`.
    pub params: String,
    pub runtime: RuntimeHint,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub output_key: String,
    pub input_key: String,
}

impl Edge {
    /// An edge between the default ports (`output` → `input`).
    pub fn new(from: impl Into<String>, to: impl Into<String>) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
            output_key: crate::nodes::OUTPUT.to_owned(),
            input_key: crate::nodes::INPUT.to_owned(),
        }
    }

    pub fn ports(mut self, output_key: impl Into<String>, input_key: impl Into<String>) -> Self {
        self.output_key = output_key.into();
        self.input_key = input_key.into();
        self
    }
}

/// Per-pipeline execution settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    pub enable_metrics: bool,
    pub retry: RetryPolicy,
    /// Consecutive failures that open a node type's breaker; 0 disables the breaker.
    pub breaker_threshold: u32,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self { enable_metrics: true, retry: RetryPolicy::default(), breaker_threshold: DEFAULT_BREAKER_THRESHOLD }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub version: String,
    pub name: String,
    pub nodes: Vec<ManifestNode>,
    pub connections: Vec<Edge>,
    pub config: PipelineConfig,
}

impl Manifest {
    /// A `v1` manifest with default configuration.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            version: MANIFEST_VERSION.to_owned(),
            name: name.into(),
            nodes: Vec::new(),
            connections: Vec::new(),
            config: PipelineConfig::default(),
        }
    }

    pub fn node(mut self, id: &str, node_type: &str, params: &str) -> Self {
        self.nodes.push(ManifestNode {
            id: id.to_owned(),
            node_type: node_type.to_owned(),
            params: params.to_owned(),
            runtime: RuntimeHint::Auto,
        });
        self
    }

    pub fn connect(mut self, from: &str, to: &str) -> Self {
        self.connections.push(Edge::new(from, to));
        self
    }

    pub fn edge(mut self, edge: Edge) -> Self {
        self.connections.push(edge);
        self
    }
}
