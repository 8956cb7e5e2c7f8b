//! Builds pipelines from manifests and runs them.
//!
//! A run walks the DAG as Kahn's algorithm does: every node whose predecessors have finished is
//! started at once, so independent branches run concurrently. Light native calls run on the
//! driving task; heavy ones go to the blocking pool; Python nodes are awaited on their worker.
//! Outputs are shared (`Bytes`/`Arc`) with every consumer and dropped as soon as the last
//! consumer has run, unless they belong to the result.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::breaker::{Admission, CircuitBreakers, Outcome};
use super::error::{ExecError, ValidationError, Violation};
use super::manifest::Manifest;
use super::metrics::{MemoryTracker, NodeOutput, NodeReport, NodeStatus, RunOutput, thread_cpu_time};
use super::retry::RetryPolicy;
use super::validate::{Plan, RequestShape, param_violation, validate};
use crate::audio::AudioBuffer;
use crate::nodes::{
    NodeContext, NodeError, NodeInstance, ParamError, PortError, PortName, PortValue, Ports, Registry, RuntimeChoice,
};

/// The node registry and the server-wide circuit breakers: everything needed to build pipelines.
#[derive(Clone)]
pub struct Engine {
    registry: Arc<Registry>,
    breakers: Arc<CircuitBreakers>,
}

impl Engine {
    pub fn new(registry: Registry, breakers: CircuitBreakers) -> Self {
        Self { registry: Arc::new(registry), breakers: Arc::new(breakers) }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn breakers(&self) -> &Arc<CircuitBreakers> {
        &self.breakers
    }

    /// Validates `manifest` against the request (node parameters included) and builds every
    /// node, reporting all problems together.
    pub async fn build(&self, manifest: &Manifest, shape: &RequestShape) -> Result<Pipeline, ValidationError> {
        let (plan, mut error) = validate(manifest, &self.registry, shape);
        let Some(plan) = plan else { return Err(error) };

        let created = futures::future::join_all(plan.nodes.iter().map(|n| async move {
            match &n.resolved.choice {
                RuntimeChoice::Native(f) => Ok(NodeInstance::Native(f.create(&n.params))),
                RuntimeChoice::Python => match self.registry.foreign() {
                    Some(py) => py.create(&n.resolved.node_type, &n.id, &n.params).await.map(NodeInstance::Async),
                    None => Err(vec![ParamError::new("", "the Python runtime is not enabled")]),
                },
            }
        }))
        .await;

        let mut slots = Vec::with_capacity(created.len());
        for (i, (node, result)) in plan.nodes.iter().zip(created).enumerate() {
            match result {
                Ok(instance) => slots.push(Some(instance)),
                Err(errors) => {
                    // The plan holds every manifest node, in manifest order.
                    for e in &errors {
                        error.violations.push(param_violation(i, &node.id, &node.resolved.node_type, e));
                    }
                }
            }
        }
        if !error.violations.is_empty() {
            return Err(error);
        }
        Ok(Pipeline { plan, slots, breakers: self.breakers.clone(), lost_nodes: false })
    }
}

/// How a run drives its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A whole request: each node processes its inputs then flushes.
    Once,
    /// One stream chunk: only nodes downstream of the fed nodes process.
    Chunk,
    /// The end of a stream: every node processes what upstream flushed, then flushes itself.
    Flush,
}

/// Limits on one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunLimits {
    pub timeout: Option<Duration>,
    pub max_memory_bytes: Option<u64>,
}

/// A built pipeline. For a stream it lives as long as the session and keeps node state between
/// chunks.
pub struct Pipeline {
    plan: Plan,
    /// Node instances by node index; `None` only while the node is running.
    slots: Vec<Option<NodeInstance>>,
    breakers: Arc<CircuitBreakers>,
    /// Set when a timed-out run abandoned running nodes: the pipeline can no longer run.
    lost_nodes: bool,
}

struct CallOk {
    outputs: Ports,
    report: NodeReport,
}

type CallResult = (usize, Option<NodeInstance>, Result<CallOk, ExecError>);

impl Pipeline {
    pub fn name(&self) -> &str {
        &self.plan.name
    }

    pub fn len(&self) -> usize {
        self.plan.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.plan.nodes.is_empty()
    }

    pub fn node_ids(&self) -> impl Iterator<Item = &str> {
        self.plan.nodes.iter().map(|n| n.id.as_str())
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.plan.index_of(id)
    }

    pub fn enable_metrics(&self) -> bool {
        self.plan.config.enable_metrics
    }

    /// Runs the pipeline over `inputs` (ports by node id).
    pub async fn run(
        &mut self,
        inputs: BTreeMap<String, Ports>,
        mode: Mode,
        limits: RunLimits,
        cancel: &CancellationToken,
    ) -> Result<RunOutput, ExecError> {
        if self.lost_nodes {
            return Err(ExecError::Internal(
                "the pipeline lost running nodes when an earlier run timed out; build it again".into(),
            ));
        }
        let mut external = BTreeMap::new();
        for (id, ports) in inputs {
            let idx = self.index_of(&id).ok_or_else(|| {
                ExecError::Validation(ValidationError::single(Violation::new(
                    "node_id",
                    format!("no node `{id}` in this pipeline"),
                )))
            })?;
            external.insert(idx, ports);
        }
        let token = cancel.child_token();
        let started = Instant::now();
        let result = match limits.timeout {
            None => self.drive(external, mode, limits.max_memory_bytes, &token).await,
            Some(limit) => {
                match tokio::time::timeout(limit, self.drive(external, mode, limits.max_memory_bytes, &token)).await {
                    Ok(r) => r,
                    Err(_) => {
                        token.cancel();
                        let running: Vec<String> = self
                            .slots
                            .iter()
                            .zip(&self.plan.nodes)
                            .filter(|(s, _)| s.is_none())
                            .map(|(_, n)| n.id.clone())
                            .collect();
                        self.lost_nodes = !running.is_empty();
                        Err(ExecError::Timeout { limit, running })
                    }
                }
            }
        };
        token.cancel();
        result.map(|mut out| {
            out.wall_time = started.elapsed();
            out
        })
    }

    async fn drive(
        &mut self,
        mut external: BTreeMap<usize, Ports>,
        mode: Mode,
        max_memory: Option<u64>,
        token: &CancellationToken,
    ) -> Result<RunOutput, ExecError> {
        let mut run = RunState::new(&self.plan, self.active_nodes(&external, mode));
        for ports in external.values() {
            run.memory.hold(ports);
        }
        check_memory(&run.memory, max_memory, "")?;
        let mut inflight = FuturesUnordered::new();

        loop {
            while let Some(i) = run.ready.pop_front() {
                let own = external.remove(&i);
                let inputs = match self.gather(i, own.clone(), &run.produced) {
                    Ok(p) => p,
                    Err(e) => {
                        token.cancel();
                        self.drain(&mut inflight).await;
                        return Err(self.node_error(i, 1, e.into()));
                    }
                };
                // A node's own inputs stay accounted until it has finished with them.
                run.held_inputs[i] = own;
                if inputs.is_empty() && mode != Mode::Flush {
                    run.skipped(&self.plan, i, self.skipped_report(i));
                    continue;
                }
                let instance = self.slots[i]
                    .take()
                    .ok_or_else(|| ExecError::Internal(format!("node `{}` is not available", self.plan.nodes[i].id)))?;
                inflight.push(self.invoke(i, instance, inputs, mode, token.clone()));
            }

            let Some((i, instance, result)) = inflight.next().await else { break };
            self.slots[i] = instance;
            let finished =
                result.and_then(|CallOk { outputs, report }| run.completed(&self.plan, i, outputs, report, max_memory));
            if let Err(e) = finished {
                token.cancel();
                self.drain(&mut inflight).await;
                return Err(e);
            }
        }
        Ok(run.into_output(&self.plan))
    }

    /// Nodes taking part in a run: all of them, or for a chunk those downstream of fed nodes.
    fn active_nodes(&self, external: &BTreeMap<usize, Ports>, mode: Mode) -> Vec<bool> {
        let n = self.plan.nodes.len();
        if mode != Mode::Chunk {
            return vec![true; n];
        }
        let mut active = vec![false; n];
        let mut stack: Vec<usize> = external.keys().copied().collect();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut active[i], true) {
                stack.extend(self.plan.outgoing[i].iter().copied());
            }
        }
        active
    }

    /// The inputs of node `i`: its own external inputs plus every connected output, with
    /// several connections into one port mixed (audio) or collected into an array (data).
    fn gather(&self, i: usize, own: Option<Ports>, produced: &[Option<Ports>]) -> Result<Ports, PortError> {
        // Port order: the node's own inputs first, then connections in manifest order.
        let mut by_port: Vec<(PortName, Vec<PortValue>)> = Vec::new();
        let mut add = |port: PortName, value: PortValue| match by_port.iter_mut().find(|(p, _)| *p == port) {
            Some((_, values)) => values.push(value),
            None => by_port.push((port, vec![value])),
        };
        for (port, value) in own.into_iter().flatten() {
            add(port, value);
        }
        for link in &self.plan.incoming[i] {
            if let Some(value) = produced[link.from].as_ref().and_then(|p| p.get(&link.output_key)) {
                add(link.input_key.clone(), value.clone());
            }
        }
        let mut inputs = Ports::new();
        for (port, mut values) in by_port {
            let value = if values.len() == 1 {
                values.pop().expect("one value")
            } else if values.iter().all(|v| matches!(v, PortValue::Audio(_))) {
                let buffers: Vec<AudioBuffer> = values.iter().filter_map(|v| v.as_audio().cloned()).collect();
                PortValue::Audio(
                    AudioBuffer::mix(&buffers).map_err(|source| PortError::Merge { port: port.to_string(), source })?,
                )
            } else if values.iter().all(|v| matches!(v, PortValue::Data(_))) {
                PortValue::data(Value::Array(values.iter().filter_map(|v| v.as_data().cloned()).collect()))
            } else {
                return Err(PortError::WrongKind {
                    port: port.to_string(),
                    expected: "values of one kind",
                    actual: "audio and data",
                });
            };
            inputs.insert(port, value);
        }
        Ok(inputs)
    }

    fn skipped_report(&self, i: usize) -> NodeReport {
        let node = &self.plan.nodes[i];
        NodeReport {
            node_id: node.id.clone(),
            node_type: node.resolved.node_type.clone(),
            runtime: node.resolved.runtime(),
            status: NodeStatus::Skipped,
            execution_time: Duration::ZERO,
            cpu_time: Duration::ZERO,
            memory_bytes: 0,
            samples_processed: 0,
            attempts: 0,
            custom: Map::new(),
        }
    }

    fn node_error(&self, i: usize, attempts: u32, source: NodeError) -> ExecError {
        let node = &self.plan.nodes[i];
        ExecError::Node {
            node_id: node.id.clone(),
            node_type: node.resolved.node_type.clone(),
            attempts,
            source: Box::new(source),
        }
    }

    /// Waits for in-flight nodes after a failure so their instances return to their slots.
    async fn drain(&mut self, inflight: &mut FuturesUnordered<impl Future<Output = CallResult>>) {
        while let Some((i, instance, _)) = inflight.next().await {
            self.slots[i] = instance;
        }
    }

    /// Runs node `i` with retries and its circuit breaker; hands the instance back.
    fn invoke(
        &self,
        i: usize,
        instance: NodeInstance,
        inputs: Ports,
        mode: Mode,
        token: CancellationToken,
    ) -> impl Future<Output = CallResult> + use<> {
        let node = &self.plan.nodes[i];
        let ctx = NodeContext::new(node.id.as_str(), node.resolved.node_type.as_str(), token);
        let policy: RetryPolicy = self.plan.config.retry;
        let threshold = self.plan.config.breaker_threshold;
        let breakers = self.breakers.clone();
        let runtime = node.resolved.runtime();
        async move {
            let mut instance = Some(instance);
            let mut report = NodeReport {
                node_id: ctx.node_id.to_string(),
                node_type: ctx.node_type.to_string(),
                runtime,
                status: NodeStatus::Success,
                execution_time: Duration::ZERO,
                cpu_time: Duration::ZERO,
                memory_bytes: 0,
                samples_processed: inputs.samples(),
                attempts: 0,
                custom: Map::new(),
            };
            loop {
                if let Admission::Rejected { retry_after, failures } = breakers.admit(&ctx.node_type, threshold) {
                    let err = ExecError::CircuitOpen {
                        node_id: ctx.node_id.to_string(),
                        node_type: ctx.node_type.to_string(),
                        failures,
                        retry_after,
                    };
                    return (i, instance, Err(err));
                }
                report.attempts += 1;
                let Some(current) = instance.take() else {
                    return (i, None, Err(ExecError::Internal(format!("node `{}` was lost", ctx.node_id))));
                };
                let started = Instant::now();
                let (back, result, cpu, custom) = call(current, inputs.clone(), mode, ctx.clone()).await;
                report.execution_time += started.elapsed();
                report.cpu_time += cpu;
                report.custom = custom;
                instance = back;
                let error = match result {
                    Ok(outputs) => {
                        breakers.record(&ctx.node_type, threshold, Outcome::Success);
                        return (i, instance, Ok(CallOk { outputs, report }));
                    }
                    Err(e) => e,
                };
                let counted = if error.counts_for_breaker() { Outcome::Failure } else { Outcome::NotCounted };
                breakers.record(&ctx.node_type, threshold, counted);
                let retry = error.is_retryable() && report.attempts <= policy.max_retries && instance.is_some();
                if !retry {
                    let err = if error.kind == crate::nodes::NodeErrorKind::Cancelled {
                        ExecError::Cancelled
                    } else {
                        ExecError::Node {
                            node_id: ctx.node_id.to_string(),
                            node_type: ctx.node_type.to_string(),
                            attempts: report.attempts,
                            source: Box::new(error),
                        }
                    };
                    return (i, instance, Err(err));
                }
                tokio::select! {
                    () = tokio::time::sleep(policy.delay(report.attempts)) => {}
                    () = ctx.cancel.cancelled() => return (i, instance, Err(ExecError::Cancelled)),
                }
            }
        }
    }
}

/// The bookkeeping of one run: which nodes take part, what each still waits for, what each
/// produced and who still needs it, the memory held, and the nodes ready to start.
struct RunState {
    active: Vec<bool>,
    /// Active predecessors each node still waits for.
    waiting: Vec<usize>,
    /// Active successors that have not yet consumed each node's outputs.
    consumers_left: Vec<usize>,
    produced: Vec<Option<Ports>>,
    /// Data outputs nothing consumed, kept for the result after the rest was dropped.
    kept: Vec<Option<Ports>>,
    /// Each node's own (request) inputs, accounted until it has run.
    held_inputs: Vec<Option<Ports>>,
    reports: Vec<NodeReport>,
    memory: MemoryTracker,
    ready: VecDeque<usize>,
}

impl RunState {
    fn new(plan: &Plan, active: Vec<bool>) -> Self {
        let n = plan.nodes.len();
        let waiting: Vec<usize> = (0..n).map(|i| distinct_preds(plan, i).filter(|&p| active[p]).count()).collect();
        let consumers_left = (0..n).map(|i| plan.outgoing[i].iter().filter(|&&s| active[s]).count()).collect();
        let ready = plan.order.iter().copied().filter(|&i| active[i] && waiting[i] == 0).collect();
        Self {
            active,
            waiting,
            consumers_left,
            produced: vec![None; n],
            kept: vec![None; n],
            held_inputs: vec![None; n],
            reports: Vec::new(),
            memory: MemoryTracker::default(),
            ready,
        }
    }

    /// Node `i` had nothing to process.
    fn skipped(&mut self, plan: &Plan, i: usize, report: NodeReport) {
        if let Some(own) = self.held_inputs[i].take() {
            self.memory.release(&own);
        }
        self.reports.push(report);
        self.finish_node(plan, i);
    }

    /// Node `i` ran and produced `outputs`; fails if they take the run over its memory limit.
    fn completed(
        &mut self,
        plan: &Plan,
        i: usize,
        outputs: Ports,
        mut report: NodeReport,
        max_memory: Option<u64>,
    ) -> Result<(), ExecError> {
        self.memory.hold(&outputs);
        report.memory_bytes = outputs.size_bytes();
        check_memory(&self.memory, max_memory, &plan.nodes[i].id)?;
        if let Some(own) = self.held_inputs[i].take() {
            self.memory.release(&own);
        }
        self.reports.push(report);
        self.produced[i] = Some(outputs);
        self.finish_node(plan, i);
        Ok(())
    }

    /// After node `i` has run (or been skipped): wakes its successors and drops the outputs of
    /// predecessors nobody needs any more, keeping their unconsumed data for the result.
    fn finish_node(&mut self, plan: &Plan, i: usize) {
        for &s in &plan.outgoing[i] {
            if self.active[s] {
                self.waiting[s] -= 1;
                if self.waiting[s] == 0 {
                    self.ready.push_back(s);
                }
            }
        }
        let preds: Vec<usize> = distinct_preds(plan, i).filter(|&p| self.active[p]).collect();
        for p in preds {
            self.consumers_left[p] -= 1;
            if self.consumers_left[p] > 0 || is_result_node(plan, p) {
                continue;
            }
            if let Some(ports) = self.produced[p].take() {
                self.memory.release(&ports);
                let consumed: BTreeSet<&str> = plan.outgoing[p]
                    .iter()
                    .flat_map(|&s| plan.incoming[s].iter().filter(|l| l.from == p).map(|l| l.output_key.as_ref()))
                    .collect();
                let leftover: Ports = ports
                    .into_iter()
                    .filter(|(port, v)| matches!(v, PortValue::Data(_)) && !consumed.contains(port.as_ref()))
                    .collect();
                if !leftover.is_empty() {
                    self.memory.hold(&leftover);
                    self.kept[p] = Some(leftover);
                }
            }
        }
    }

    /// What the run returns: the outputs of the result nodes (and kept data), in plan order.
    fn into_output(mut self, plan: &Plan) -> RunOutput {
        let cpu_time = self.reports.iter().map(|r| r.cpu_time).sum();
        let outputs = plan
            .order
            .iter()
            .filter_map(|&i| {
                let ports = self.produced[i].take().or_else(|| self.kept[i].take())?;
                (!ports.is_empty()).then(|| NodeOutput { node_id: plan.nodes[i].id.clone(), ports })
            })
            .collect();
        RunOutput {
            outputs,
            nodes: self.reports,
            wall_time: Duration::ZERO,
            cpu_time,
            peak_memory_bytes: self.memory.peak(),
        }
    }
}

/// The distinct nodes connected into node `i`.
fn distinct_preds(plan: &Plan, i: usize) -> impl Iterator<Item = usize> + '_ {
    plan.incoming[i].iter().map(|l| l.from).collect::<BTreeSet<_>>().into_iter()
}

/// Whether node `i`'s outputs belong to the result: a sink, or named in `output_nodes`.
fn is_result_node(plan: &Plan, i: usize) -> bool {
    plan.is_sink(i) || plan.output_nodes.contains(&i)
}

fn check_memory(memory: &MemoryTracker, limit: Option<u64>, node_id: &str) -> Result<(), ExecError> {
    match limit {
        Some(limit) if memory.live() > limit => Err(ExecError::MemoryLimit {
            limit,
            needed: memory.live(),
            node_id: if node_id.is_empty() { "(request inputs)".into() } else { node_id.to_owned() },
        }),
        _ => Ok(()),
    }
}

/// One call of a node in `mode`: native nodes inline or on the blocking pool, async nodes
/// awaited. Returns the instance (unless a blocking task was lost), the outputs, the CPU time
/// and the node's custom metrics.
async fn call(
    instance: NodeInstance,
    inputs: Ports,
    mode: Mode,
    ctx: NodeContext,
) -> (Option<NodeInstance>, Result<Ports, NodeError>, Duration, Map<String, Value>) {
    match instance {
        NodeInstance::Native(mut node) => {
            if node.is_heavy(&inputs) {
                let joined = tokio::task::spawn_blocking(move || {
                    let (result, cpu) = call_native(node.as_mut(), inputs, mode, &ctx);
                    (node, result, cpu)
                })
                .await;
                match joined {
                    Ok((node, result, cpu)) => {
                        let custom = node.custom_metrics();
                        (Some(NodeInstance::Native(node)), result, cpu, custom)
                    }
                    Err(e) => {
                        (None, Err(NodeError::internal(format!("node task failed: {e}"))), Duration::ZERO, Map::new())
                    }
                }
            } else {
                let (result, cpu) = call_native(node.as_mut(), inputs, mode, &ctx);
                let custom = node.custom_metrics();
                (Some(NodeInstance::Native(node)), result, cpu, custom)
            }
        }
        NodeInstance::Async(node) => {
            let result = async {
                let mut total = crate::nodes::AsyncOutput::default();
                if mode == Mode::Chunk || mode == Mode::Once || !inputs.is_empty() {
                    total = node.process(inputs, &ctx).await?;
                }
                if mode != Mode::Chunk {
                    let tail = node.flush(&ctx).await?;
                    total.outputs.append(tail.outputs)?;
                    total.cpu_time += tail.cpu_time;
                    total.custom_metrics.extend(tail.custom_metrics);
                }
                Ok::<_, NodeError>(total)
            }
            .await;
            match result {
                Ok(out) => (Some(NodeInstance::Async(node)), Ok(out.outputs), out.cpu_time, out.custom_metrics),
                Err(e) => (Some(NodeInstance::Async(node)), Err(e), Duration::ZERO, Map::new()),
            }
        }
    }
}

/// Runs a native node on the current thread, turning a panic into an internal error.
fn call_native(
    node: &mut dyn crate::nodes::Node,
    inputs: Ports,
    mode: Mode,
    ctx: &NodeContext,
) -> (Result<Ports, NodeError>, Duration) {
    let cpu_start = thread_cpu_time();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| -> Result<Ports, NodeError> {
        match mode {
            Mode::Chunk => node.process(inputs, ctx),
            Mode::Once => {
                let mut out = node.process(inputs, ctx)?;
                out.append(node.flush(ctx)?)?;
                Ok(out)
            }
            Mode::Flush => {
                let mut out = if inputs.is_empty() { Ports::new() } else { node.process(inputs, ctx)? };
                out.append(node.flush(ctx)?)?;
                Ok(out)
            }
        }
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(NodeError::internal(format!("panicked: {what}")))
    });
    (result, thread_cpu_time().saturating_sub(cpu_start))
}

/// An engine over the built-in nodes plus whatever `extra` registers (test-only node types).
#[cfg(test)]
pub(crate) fn engine_with(extra: impl FnOnce(&mut Registry)) -> Engine {
    let mut r = Registry::builtin();
    extra(&mut r);
    Engine::new(r, CircuitBreakers::default())
}

#[cfg(test)]
mod tests;
