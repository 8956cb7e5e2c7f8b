//! Node plug-in interface and the registry of node types.
//!
//! A node type is a [`NodeFactory`]: its declaration ([`NodeSpec`]: parameters, ports, aliases)
//! and a way to build [`Node`] instances from parameters checked against it. Each native node
//! lives in its own file here, declaration included, and is registered by one line in
//! [`Registry::builtin`]. Nodes implemented outside Rust (the embedded Python interpreter)
//! come in through [`ForeignNodes`], declarations included, and run as [`AsyncNode`]s.

mod budget;
pub mod check;
mod error;
mod port;
mod registry;
pub mod spec;

mod chunker;
mod format;
mod gain;
mod mixer;
mod passthrough;
mod resample;
mod vad;

pub use budget::MemoryBudget;
pub use error::{NodeError, NodeErrorKind, ParamError};
pub use port::{DATA, INPUT, NodeInputs, NodeOutputs, OUTPUT, PortError, PortName, PortValue, Ports, port_name};
pub use registry::{
    CatalogueEntry, ForeignNodes, RegistrationError, Registry, ResolveError, Resolved, RuntimeChoice, RuntimeHint,
    catalogue_json,
};
pub use spec::{NodeSpec, ParamKind, ParamSpec, Params, PortKind, PortSpec};

pub use chunker::AudioChunkerNode;
pub use format::{FormatConverterNode, convert as convert_format};
pub use gain::GainNode;
pub use mixer::ChannelMixerNode;
pub use passthrough::PassThroughNode;
pub use resample::{
    MEMORY_LIMIT as RESAMPLER_MEMORY_LIMIT, MEMORY_MAX_BYTES as RESAMPLER_MEMORY_MAX_BYTES, Quality as ResampleQuality,
    ResampleNode,
};
pub use vad::{Segment as VadSegment, VadNode};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

/// Inputs at or below this many samples are processed on the calling task; larger ones move to
/// the blocking pool so long computations never stall the reactor. 65 536 samples is about 1.4 s
/// of 48 kHz mono: the costliest native node (high-quality resampling) takes about 150 µs on it,
/// less than the two thread hand-offs the blocking pool would add to the call.
pub const INLINE_MAX_SAMPLES: u64 = 65_536;

/// Where a node instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// Native Rust code in the executor.
    Rust,
    /// The embedded CPython interpreter.
    Python,
}

impl Runtime {
    pub const fn name(self) -> &'static str {
        match self {
            Runtime::Rust => "rust",
            Runtime::Python => "python",
        }
    }
}

/// What a node can see of the execution it runs in.
#[derive(Debug, Clone)]
pub struct NodeContext {
    pub node_id: Arc<str>,
    pub node_type: Arc<str>,
    pub cancel: CancellationToken,
    /// The run's memory budget and this call's node index in it; `None` without a limit.
    pub memory: Option<(Arc<MemoryBudget>, usize)>,
}

impl NodeContext {
    pub fn new(node_id: impl Into<Arc<str>>, node_type: impl Into<Arc<str>>, cancel: CancellationToken) -> Self {
        Self { node_id: node_id.into(), node_type: node_type.into(), cancel, memory: None }
    }

    /// The same context under the run's memory `budget`, for node `node`'s call.
    pub fn with_memory(mut self, budget: Arc<MemoryBudget>, node: usize) -> Self {
        self.memory = Some((budget, node));
        self
    }

    /// The run's memory limit and the bytes this call must count as taken (the run's values
    /// and what other running calls reserved), for a node that checks its output itself (a
    /// Python node's `reserve_output`); `None` without a limit.
    pub fn memory_snapshot(&self) -> Option<(u64, u64)> {
        self.memory.as_ref().map(|(budget, node)| (budget.limit(), budget.taken_for(*node)))
    }

    /// Refuses, before anything is allocated, an output of `bytes` that would take the run over
    /// its memory limit (RESOURCE_LIMIT). Nodes whose output can be many times their input
    /// (upmixing, upsampling, widening the sample format) call this first, so the limit holds
    /// before the memory is taken rather than only after the node returns.
    ///
    /// The room is reserved until the call returns, so calls running at the same time (the
    /// branches of a fan-out) cannot each take the same room ([`MemoryBudget`]).
    pub fn reserve_output(&self, bytes: u64) -> Result<(), NodeError> {
        let Some((budget, node)) = &self.memory else { return Ok(()) };
        let Err(needed) = budget.reserve(*node, bytes) else { return Ok(()) };
        let limit = budget.limit();
        Err(NodeError::memory_limit(
            limit,
            needed,
            format!(
                "its output of {bytes} bytes would bring the pipeline to {needed} bytes, over its limit of {limit}"
            ),
        ))
    }

    /// Returns `Err(Cancelled)` once the execution has been cancelled or timed out. Long loops
    /// call this every few thousand samples.
    pub fn check_cancelled(&self) -> Result<(), NodeError> {
        if self.cancel.is_cancelled() { Err(NodeError::cancelled()) } else { Ok(()) }
    }
}

/// A native node instance. One instance serves one execution, or one stream session, so it may
/// keep state between chunks.
pub trait Node: Send + 'static {
    /// Processes one set of inputs (a whole request, or one stream chunk).
    fn process(&mut self, inputs: NodeInputs, ctx: &NodeContext) -> Result<NodeOutputs, NodeError>;

    /// Emits whatever the node still holds at the end of the input (resampler tail, open VAD
    /// segment, chunker remainder). Called once, after the last `process`.
    fn flush(&mut self, _ctx: &NodeContext) -> Result<NodeOutputs, NodeError> {
        Ok(Ports::new())
    }

    /// Whether these inputs are heavy enough to run on the blocking pool.
    fn is_heavy(&self, inputs: &NodeInputs) -> bool {
        inputs.samples() > INLINE_MAX_SAMPLES
    }

    /// The bytes this call's output will take, for a node whose output can be larger than its
    /// input (an upmix, an upsampling, a wider format) and that reserves it with
    /// [`NodeContext::reserve_output`]. The executor reserves it before the call starts, so a
    /// call that has no room waits for the running ones instead of failing; `None` (the
    /// default): about the input's size.
    fn output_bytes(&self, _inputs: &NodeInputs) -> Option<u64> {
        None
    }

    /// Node-specific figures for `NodeMetrics.custom_metrics`, read after each call when the
    /// pipeline reports metrics.
    fn custom_metrics(&self) -> Figures {
        Figures::new()
    }
}

/// One of a native node's own figures in `custom_metrics`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Figure {
    Count(u64),
    Real(f64),
    Name(&'static str),
}

impl serde::Serialize for Figure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Figure::Count(n) => s.serialize_u64(n),
            Figure::Real(x) => s.serialize_f64(x),
            Figure::Name(name) => s.serialize_str(name),
        }
    }
}

/// A native node's figures by name, kept inline: reporting them on every stream chunk
/// allocates nothing (a JSON map of them took six to eight allocations per node and chunk).
pub type Figures = smallvec::SmallVec<[(&'static str, Figure); 6]>;

/// What an [`AsyncNode`] call returns: the outputs and the CPU time it used where it ran.
#[derive(Debug, Default)]
pub struct AsyncOutput {
    pub outputs: NodeOutputs,
    pub cpu_time: Duration,
    pub custom_metrics: Map<String, Value>,
}

/// A node that runs elsewhere (a Python worker thread) and is awaited, never blocking the caller.
#[async_trait]
pub trait AsyncNode: Send + Sync + 'static {
    async fn process(&self, inputs: NodeInputs, ctx: &NodeContext) -> Result<AsyncOutput, NodeError>;

    async fn flush(&self, ctx: &NodeContext) -> Result<AsyncOutput, NodeError>;
}

/// A built node, ready to run.
pub enum NodeInstance {
    Native(Box<dyn Node>),
    Async(Arc<dyn AsyncNode>),
}

impl NodeInstance {
    pub fn runtime(&self) -> Runtime {
        match self {
            NodeInstance::Native(_) => Runtime::Rust,
            NodeInstance::Async(_) => Runtime::Python,
        }
    }
}

/// Builds instances of one native node type, and declares it.
pub trait NodeFactory: Send + Sync + 'static {
    /// The node's declaration: type name, aliases, parameters, ports (see [`spec`]).
    fn spec(&self) -> NodeSpec;

    /// Builds an instance from parameters that passed [`NodeSpec::check`].
    fn create(&self, params: &Params) -> Box<dyn Node>;

    /// Checks `params` against the declaration, then builds an instance: the path every
    /// request takes, for tests and tools that build one node.
    fn build(&self, params: &Map<String, Value>) -> Result<Box<dyn Node>, Vec<ParamError>> {
        Ok(self.create(&self.spec().check(params)?))
    }
}
