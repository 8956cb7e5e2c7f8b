//! Errors of the executor: validation violations and execution failures.

use std::fmt;
use std::time::Duration;

use crate::nodes::NodeError;
use crate::text;

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
    /// A violation of `field`. Both are cut to a bounded length ([`text`]): they often quote
    /// what the client sent.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: bounded(field.into(), 2 * text::MAX_QUOTED_BYTES),
            node_id: None,
            message: bounded(message.into(), text::MAX_MESSAGE_BYTES),
        }
    }

    pub fn on_node(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = Some(bounded(node_id.into(), text::MAX_QUOTED_BYTES));
        self
    }
}

fn bounded(s: String, max: usize) -> String {
    match text::clip(&s, max) {
        std::borrow::Cow::Borrowed(_) => s,
        std::borrow::Cow::Owned(cut) => cut,
    }
}

/// Violations named in an error's message; the rest are counted (all of them are in the
/// error's details).
const LISTED_VIOLATIONS: usize = 8;
/// Node types named in an error's message.
const LISTED_NODE_TYPES: usize = 64;

/// Every violation found in a manifest and its inputs, reported together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidationError {
    pub violations: Vec<Violation>,
    /// The node types the server knows, when a violation names an unknown one: listed once per
    /// error, not once per violation.
    pub available_node_types: Vec<String>,
}

impl ValidationError {
    pub fn new(violations: Vec<Violation>) -> Self {
        Self { violations, available_node_types: Vec::new() }
    }

    pub fn single(v: Violation) -> Self {
        Self::new(vec![v])
    }

    /// Puts `earlier` (problems found while decoding the request) before this error's own.
    pub fn after(mut self, mut earlier: Vec<Violation>) -> Self {
        earlier.append(&mut self.violations);
        self.violations = earlier;
        self
    }
}

impl From<Vec<Violation>> for ValidationError {
    fn from(violations: Vec<Violation>) -> Self {
        Self::new(violations)
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.violations.as_slice() {
            [one] => write!(f, "invalid pipeline: {}", one.message)?,
            many => {
                write!(f, "invalid pipeline, {} problems:", many.len())?;
                let listed = many.len().min(LISTED_VIOLATIONS);
                for (i, v) in many[..listed].iter().enumerate() {
                    write!(f, " ({}) {}", i + 1, text::clip(&v.message, text::MAX_MESSAGE_BYTES / 4))?;
                    if i + 1 < many.len() {
                        f.write_str(";")?;
                    }
                }
                if many.len() > listed {
                    write!(f, " and {} more", many.len() - listed)?;
                }
            }
        }
        if !self.available_node_types.is_empty() {
            write!(f, " (available node types: {})", text::list(&self.available_node_types, LISTED_NODE_TYPES))?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationError {}

/// Why an execution did not produce a result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Validation(#[from] ValidationError),

    #[error("node `{}` ({node_type}) failed{}: {source}", text::quoted(node_id), attempts_note(*.attempts))]
    Node { node_id: String, node_type: String, attempts: u32, source: Box<NodeError> },

    #[error(
        "node `{}` skipped: the circuit breaker for {node_type} is open after {failures} consecutive failures; it half-opens in {} ms",
        text::quoted(node_id),
        retry_after.as_millis()
    )]
    CircuitOpen { node_id: String, node_type: String, failures: u32, retry_after: Duration },

    /// `running` is empty when the limit ran out while the pipeline's nodes were being built.
    #[error("execution exceeded its time limit of {} ms ({})", limit.as_millis(), running_note(running))]
    Timeout { limit: Duration, running: Vec<String> },

    /// `node_id` is the node whose outputs went over the limit, `None` for the request's inputs.
    #[error(
        "execution exceeded its memory limit of {limit} bytes: {} brought the pipeline to {needed} bytes",
        culprit(node_id.as_deref())
    )]
    MemoryLimit { limit: u64, needed: u64, node_id: Option<String> },

    #[error("execution cancelled")]
    Cancelled,

    #[error("internal error: {0}")]
    Internal(String),
}

fn running_note(running: &[String]) -> String {
    if running.is_empty() {
        "while its nodes were being built".to_owned()
    } else {
        format!("running: {}", text::list(running, text::MAX_LISTED))
    }
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 { format!(" after {attempts} attempts") } else { String::new() }
}

impl ExecError {
    /// Whether a stream session must end after this failure of one chunk (see
    /// [`NodeError::ends_stream`]); other node failures are reported and the session goes on.
    pub fn ends_stream(&self) -> bool {
        matches!(self, ExecError::Node { source, .. } if source.ends_stream())
    }

    /// The node the error is about, if any.
    pub fn node_id(&self) -> Option<&str> {
        match self {
            ExecError::Node { node_id, .. } | ExecError::CircuitOpen { node_id, .. } => Some(node_id),
            ExecError::MemoryLimit { node_id, .. } => node_id.as_deref(),
            _ => None,
        }
    }
}

/// Who took a run over its memory limit, for [`ExecError::MemoryLimit`]'s message.
fn culprit(node_id: Option<&str>) -> String {
    match node_id {
        Some(id) => format!("node `{}`", text::quoted(id)),
        None => "the request's inputs".to_owned(),
    }
}
