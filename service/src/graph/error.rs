//! Errors of the executor: validation violations and execution failures.

use std::fmt;
use std::time::Duration;

use crate::nodes::NodeError;

/// One thing wrong with a manifest or a request, with the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the offending field, e.g. `nodes[2].params.output_rate` or `connections[0].to`.
    pub field: String,
    /// The node concerned, when there is one.
    pub node_id: Option<String>,
    /// A sentence naming the culprit and what is expected.
    pub message: String,
}

impl Violation {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), node_id: None, message: message.into() }
    }

    pub fn on_node(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = Some(node_id.into());
        self
    }
}

/// Every violation found in a manifest and its inputs, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub violations: Vec<Violation>,
}

impl ValidationError {
    pub fn single(v: Violation) -> Self {
        Self { violations: vec![v] }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.violations.as_slice() {
            [one] => write!(f, "invalid pipeline: {}", one.message),
            many => {
                write!(f, "invalid pipeline, {} problems:", many.len())?;
                for (i, v) in many.iter().enumerate() {
                    write!(f, " ({}) {}", i + 1, v.message)?;
                    if i + 1 < many.len() {
                        f.write_str(";")?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ValidationError {}

/// Why an execution did not produce a result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Validation(#[from] ValidationError),

    #[error("node `{node_id}` ({node_type}) failed{}: {source}", attempts_note(*.attempts))]
    Node { node_id: String, node_type: String, attempts: u32, source: Box<NodeError> },

    #[error(
        "node `{node_id}` skipped: the circuit breaker for {node_type} is open after {failures} consecutive failures; it half-opens in {} ms",
        retry_after.as_millis()
    )]
    CircuitOpen { node_id: String, node_type: String, failures: u32, retry_after: Duration },

    #[error("execution exceeded its time limit of {} ms (running: {})", limit.as_millis(), running.join(", "))]
    Timeout { limit: Duration, running: Vec<String> },

    #[error(
        "execution exceeded its memory limit of {limit} bytes: node `{node_id}` brought the pipeline to {needed} bytes"
    )]
    MemoryLimit { limit: u64, needed: u64, node_id: String },

    #[error("execution cancelled")]
    Cancelled,

    #[error("internal error: {0}")]
    Internal(String),
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 { format!(" after {attempts} attempts") } else { String::new() }
}

impl ExecError {
    /// The node the error is about, if any.
    pub fn node_id(&self) -> Option<&str> {
        match self {
            ExecError::Node { node_id, .. }
            | ExecError::CircuitOpen { node_id, .. }
            | ExecError::MemoryLimit { node_id, .. } => Some(node_id),
            _ => None,
        }
    }
}
