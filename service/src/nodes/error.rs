//! Errors raised by nodes: while building (bad parameters) and while running.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use super::port::PortError;
use crate::audio::AudioError;
use crate::text;

/// Longest traceback kept from a Python node. A longer one keeps its start (the outer frames)
/// and its end (the innermost frame and the exception) and leaves out the middle.
pub const MAX_STACK_TRACE_BYTES: usize = 16 * 1024;

/// One bad parameter: which one, what was expected, what was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub param: String,
    pub message: String,
}

impl ParamError {
    /// A problem with `param`. Both are cut to a bounded length: a parameter name or a value
    /// quoted in the message comes from the client.
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        let param = param.into();
        let message = message.into();
        Self {
            param: text::clip(&param, text::MAX_QUOTED_BYTES).into_owned(),
            message: text::clip(&message, text::MAX_MESSAGE_BYTES).into_owned(),
        }
    }
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A failure of the parameters as a whole (a node whose constructor raised) names none.
        if self.param.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "parameter `{}` {}", self.param, self.message)
        }
    }
}

/// How a run-time node failure should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeErrorKind {
    /// The node's input is unusable (wrong rate, NaN samples, missing port). Not retried, and not
    /// counted by the circuit breaker: the caller must change the request.
    InvalidInput,
    /// A failure that may pass (a timeout or I/O error inside the node). Retried with backoff.
    Transient,
    /// A failure of the node itself (a bug, an exception). Not retried; counted by the breaker.
    Internal,
    /// The execution was cancelled or timed out while the node ran.
    Cancelled,
    /// The input is of a form the node does not take (audio at another sample rate or channel
    /// count): the request itself is invalid. Reported as VALIDATION; not retried.
    Validation,
    /// The node's output would take the run over its memory limit of `limit_bytes`, to
    /// `needed_bytes`; refused before it was allocated ([`super::NodeContext::reserve_output`]).
    /// The executor reports it as the run's memory limit (RESOURCE_LIMIT,
    /// `limit: "max_memory_bytes"`).
    MemoryLimit { limit_bytes: u64, needed_bytes: u64 },
    /// A shared resource the node needs stayed busy past its wait (every instance of a pooled
    /// model leased): RESOURCE_LIMIT, with `retry_after`. Not retried, not the node's fault.
    ResourceLimit,
}

/// A node failure, with what a person needs to act on it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeError {
    pub kind: NodeErrorKind,
    pub message: String,
    /// The input or parameter at fault, when there is one.
    pub field: Option<String>,
    /// A traceback, for Python nodes.
    pub stack_trace: Option<String>,
    /// Extra JSON context (exception type, offending values); boxed, as it is rare and a JSON
    /// value is large, to keep `Result<_, NodeError>` small on the hot path.
    pub context: Option<Box<Value>>,
    /// When a [`NodeErrorKind::ResourceLimit`] failure may pass: the delay clients are told, in
    /// milliseconds (a `u32` keeps `NodeError` small enough to return by value everywhere).
    pub retry_after_ms: Option<u32>,
}

impl NodeError {
    /// A failure of `kind`; the message is cut to a bounded length (a node may quote its input).
    pub fn new(kind: NodeErrorKind, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = text::clip(&message, text::MAX_MESSAGE_BYTES).into_owned();
        Self { kind, message, field: None, stack_trace: None, context: None, retry_after_ms: None }
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(NodeErrorKind::InvalidInput, message)
    }

    /// Audio of a form the node does not take (a sample rate or channel count it cannot work
    /// with, or a stream whose layout changed): [`NodeErrorKind::Validation`].
    pub fn unsupported_audio(message: impl Into<String>) -> Self {
        Self::new(NodeErrorKind::Validation, message)
    }

    /// An output that would bring the run to `needed_bytes`, over its memory limit of
    /// `limit_bytes` ([`NodeErrorKind::MemoryLimit`]).
    pub fn memory_limit(limit_bytes: u64, needed_bytes: u64, message: impl Into<String>) -> Self {
        Self::new(NodeErrorKind::MemoryLimit { limit_bytes, needed_bytes }, message)
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(NodeErrorKind::Transient, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(NodeErrorKind::Internal, message)
    }

    pub fn cancelled() -> Self {
        Self::new(NodeErrorKind::Cancelled, "execution cancelled")
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after_ms = Some(u32::try_from(delay.as_millis()).unwrap_or(u32::MAX));
        self
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after_ms.map(|ms| Duration::from_millis(u64::from(ms)))
    }

    pub fn with_context(mut self, context: Value) -> Self {
        self.context = Some(Box::new(context));
        self
    }

    /// Adds a traceback of at most [`MAX_STACK_TRACE_BYTES`], its middle left out if need be.
    pub fn with_stack_trace(mut self, trace: impl Into<String>) -> Self {
        let trace = trace.into();
        self.stack_trace = Some(if trace.len() <= MAX_STACK_TRACE_BYTES {
            trace
        } else {
            let head = trace.floor_char_boundary(MAX_STACK_TRACE_BYTES / 2);
            let tail = trace.ceil_char_boundary(trace.len() - MAX_STACK_TRACE_BYTES / 2);
            format!("{}\n… ({} bytes of traceback left out) …\n{}", &trace[..head], tail - head, &trace[tail..])
        });
        self
    }

    /// Whether another attempt might succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind == NodeErrorKind::Transient
    }

    /// Whether the failure says something about the node type's health (and so counts toward
    /// its circuit breaker) rather than about the request.
    pub fn counts_for_breaker(&self) -> bool {
        matches!(self.kind, NodeErrorKind::Transient | NodeErrorKind::Internal)
    }

    /// Whether a stream cannot go on after this failure: a node that could not get the model
    /// it needed dropped the chunk's audio, so later results would silently miss it.
    pub fn ends_stream(&self) -> bool {
        self.kind == NodeErrorKind::ResourceLimit
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NodeError {}

impl From<PortError> for NodeError {
    fn from(e: PortError) -> Self {
        match e {
            // Branches joined at one port with different rates or channel counts: the pipeline
            // gives the node audio it cannot take, as a chunk of another layout would.
            PortError::Merge { ref port, .. } => {
                let field = port.clone();
                NodeError::unsupported_audio(format!(
                    "{e}; the connections into one port must carry one rate and channel count: put an \
                     AudioResampleNode or a ChannelMixerNode on the branch that differs"
                ))
                .with_field(field)
            }
            PortError::Missing(ref p) | PortError::WrongKind { port: ref p, .. } => {
                let field = p.clone();
                NodeError::invalid_input(e.to_string()).with_field(field)
            }
        }
    }
}

impl From<AudioError> for NodeError {
    fn from(e: AudioError) -> Self {
        NodeError::invalid_input(e.to_string())
    }
}
