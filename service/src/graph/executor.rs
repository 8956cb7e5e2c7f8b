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
use smallvec::SmallVec;
use tokio_util::sync::CancellationToken;

use super::breaker::{CircuitBreakers, Outcome};
use super::error::{ExecError, ValidationError, Violation};
use super::manifest::Manifest;
use super::metrics::{MemoryTracker, NodeOutput, NodeReport, NodeStatus, RunOutput, thread_cpu_time};
use super::retry::RetryPolicy;
use super::validate::{Plan, PlannedNode, RequestShape, param_violation, validate};
use crate::audio::AudioBuffer;
use crate::nodes::{
    Figures, MemoryBudget, NodeContext, NodeError, NodeInstance, ParamError, PortError, PortName, PortValue, Ports,
    Registry, RuntimeChoice,
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
    /// node, reporting all problems together: when validation fails, the nodes that passed
    /// their own checks are still built (and dropped), so that what only a node's construction
    /// can check (a voice espeak-ng does not have) is reported with the rest.
    pub async fn build(&self, manifest: &Manifest, shape: &RequestShape) -> Result<Pipeline, ValidationError> {
        let (plan, mut error) = validate(manifest, &self.registry, shape);
        // A valid plan holds every manifest node, in manifest order.
        let nodes: Vec<(usize, &PlannedNode)> = match &plan {
            Ok(plan) => plan.nodes.iter().enumerate().collect(),
            Err(checked) => checked.iter().enumerate().filter_map(|(i, n)| Some((i, n.as_ref()?))).collect(),
        };
        let mut slots = Vec::with_capacity(nodes.len());
        for (i, node, result) in self.create(nodes.into_iter()).await {
            match result {
                Ok(instance) => slots.push(Some(instance)),
                Err(errors) => error
                    .violations
                    .extend(errors.iter().map(|e| param_violation(i, &node.id, &node.resolved.node_type, e))),
            }
        }
        let plan = match plan {
            Ok(plan) if error.violations.is_empty() => plan,
            _ => return Err(error),
        };
        let names =
            plan.nodes.iter().map(|n| (Arc::from(n.id.as_str()), Arc::from(n.resolved.node_type.as_str()))).collect();
        let preds = (0..plan.nodes.len())
            .map(|i| plan.incoming[i].iter().map(|l| l.from).collect::<BTreeSet<_>>().into_iter().collect())
            .collect();
        let budget = Arc::new(MemoryBudget::new(slots.len()));
        Ok(Pipeline {
            plan,
            slots,
            names,
            preds,
            scratch: RunState::default(),
            run_token: None,
            breakers: self.breakers.clone(),
            lost_nodes: false,
            failed_reports: Vec::new(),
            budget,
        })
    }
}

impl Engine {
    /// Instantiates `nodes` (each with its manifest index), concurrently; each node's own
    /// construction checks come back as [`ParamError`]s.
    async fn create<'a>(
        &self,
        nodes: impl Iterator<Item = (usize, &'a PlannedNode)>,
    ) -> Vec<(usize, &'a PlannedNode, Result<NodeInstance, Vec<ParamError>>)> {
        futures::future::join_all(nodes.map(|(i, n)| async move {
            let instance = match &n.resolved.choice {
                RuntimeChoice::Native(f) => Ok(NodeInstance::Native(f.create(&n.params))),
                RuntimeChoice::Python => match self.registry.foreign() {
                    Some(py) => py.create(&n.resolved.node_type, &n.id, &n.params).await.map(NodeInstance::Async),
                    None => Err(vec![ParamError::new("", "the Python runtime is not enabled")]),
                },
            };
            (i, n, instance)
        }))
        .await
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

/// What a run is fed: ports by node index (see [`Pipeline::index_of`]).
pub type Feed = SmallVec<[(usize, Ports); 1]>;

/// A built pipeline. For a stream it lives as long as the session and keeps node state between
/// chunks.
///
/// Everything a run needs besides the nodes' own work is prepared once and reused: node names
/// are shared (`Arc<str>`), predecessor sets are computed at build time, and the run's
/// bookkeeping vectors live in `scratch`. A stream chunk through light native nodes therefore
/// allocates nothing in the executor (`tests/hot_path_allocations.rs` counts it).
pub struct Pipeline {
    plan: Plan,
    /// Node instances by node index; `None` only while the node is running.
    slots: Vec<Option<NodeInstance>>,
    /// Each node's id and type, shared with its reports, outputs and contexts.
    names: Vec<(Arc<str>, Arc<str>)>,
    /// The distinct nodes connected into each node.
    preds: Vec<Vec<usize>>,
    /// The bookkeeping of a run, kept between runs for its capacity.
    scratch: RunState,
    /// Cancels the nodes of the current run that run off the driving task (Python nodes, heavy
    /// native calls); made on the first such call of a run, so runs of light native nodes make
    /// none.
    run_token: Option<CancellationToken>,
    breakers: Arc<CircuitBreakers>,
    /// Set when a timed-out run abandoned running nodes: the pipeline can no longer run.
    lost_nodes: bool,
    /// The reports of the nodes a failed run called, until [`Pipeline::take_failed_reports`].
    failed_reports: Vec<NodeReport>,
    /// The memory limit of the current run as its running calls share it.
    budget: Arc<MemoryBudget>,
}

struct CallOk {
    outputs: Ports,
    report: NodeReport,
}

/// A failed call: the error, and the node's report when it was called.
struct CallFailed {
    error: ExecError,
    report: Option<NodeReport>,
}

impl From<ExecError> for CallFailed {
    fn from(error: ExecError) -> Self {
        Self { error, report: None }
    }
}

type CallResult = (usize, Option<NodeInstance>, Result<CallOk, CallFailed>);

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

    /// Whether node `index` takes audio on its `input` port, where stream chunks go; if not, a
    /// description naming the node and the ports it has.
    pub fn check_audio_input(&self, index: usize) -> Result<(), String> {
        let node = &self.plan.nodes[index];
        let spec = &node.resolved.spec;
        match spec.inputs.iter().find(|p| p.name == crate::nodes::INPUT) {
            Some(p) if p.kind == crate::nodes::PortKind::Audio => Ok(()),
            Some(_) => Err(format!(
                "node `{}` ({}) takes data, not audio, on its input port `input`",
                crate::text::quoted(&node.id),
                node.resolved.node_type
            )),
            None => Err(spec.missing_port(&node.id, crate::nodes::INPUT, false)),
        }
    }

    /// Each node's type, as its reports carry it, and runtime, in manifest order.
    pub fn node_types(&self) -> impl Iterator<Item = (&Arc<str>, crate::nodes::Runtime)> {
        self.names.iter().zip(&self.plan.nodes).map(|((_, t), n)| (t, n.resolved.runtime()))
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
        let mut feed = Feed::new();
        for (id, ports) in inputs {
            let idx = self.index_of(&id).ok_or_else(|| {
                ExecError::Validation(ValidationError::single(Violation::new(
                    "node_id",
                    format!("no node `{}` in this pipeline", crate::text::quoted(&id)),
                )))
            })?;
            feed.push((idx, ports));
        }
        self.run_fed(feed, mode, limits, cancel).await
    }

    /// Runs the pipeline over `feed` (ports by node index, each index at most once). Hand the
    /// output back with [`Pipeline::recycle`] once it has been read, so that the next run reuses
    /// its vectors.
    pub async fn run_fed(
        &mut self,
        feed: Feed,
        mode: Mode,
        limits: RunLimits,
        cancel: &CancellationToken,
    ) -> Result<RunOutput, ExecError> {
        if self.lost_nodes {
            return Err(ExecError::Internal(
                "the pipeline lost running nodes when an earlier run timed out; build it again".into(),
            ));
        }
        if let Some((i, _)) = feed.iter().find(|(i, _)| *i >= self.plan.nodes.len()) {
            return Err(ExecError::Internal(format!("node index {i} is out of range")));
        }
        let started = Instant::now();
        let result = self.drive(feed, mode, limits, cancel).await;
        self.cancel_run();
        result.map(|mut out| {
            out.wall_time = started.elapsed();
            out
        })
    }

    /// Hands back the output of a run once it has been read: its vectors keep their capacity
    /// for the next run (two allocations per stream chunk saved), and its buffers are dropped.
    pub fn recycle(&mut self, out: RunOutput) {
        let RunOutput { mut outputs, mut nodes, .. } = out;
        outputs.clear();
        nodes.clear();
        if outputs.capacity() > self.scratch.outputs.capacity() {
            self.scratch.outputs = outputs;
        }
        if nodes.capacity() > self.scratch.reports.capacity() {
            self.scratch.reports = nodes;
        }
    }

    /// Cancels the nodes of the run that are still running off the driving task, if any.
    fn cancel_run(&mut self) {
        if let Some(token) = self.run_token.take() {
            token.cancel();
        }
    }

    /// The context of node `i`'s call. A light native call runs on the driving task and
    /// cannot be interrupted, so it gets the caller's token; other calls share a token of
    /// the run, which a failure elsewhere in the run cancels.
    fn context(&mut self, i: usize, on_driving_task: bool, cancel: &CancellationToken) -> NodeContext {
        let token = if on_driving_task {
            cancel.clone()
        } else {
            self.run_token.get_or_insert_with(|| cancel.child_token()).clone()
        };
        let (id, node_type) = &self.names[i];
        NodeContext::new(id.clone(), node_type.clone(), token)
    }

    async fn drive(
        &mut self,
        mut feed: Feed,
        mode: Mode,
        limits: RunLimits,
        cancel: &CancellationToken,
    ) -> Result<RunOutput, ExecError> {
        let mut run = std::mem::take(&mut self.scratch);
        run.reset(&self.plan, &self.preds, &feed, mode);
        let max_memory = limits.max_memory_bytes;
        if let Some(limit) = max_memory {
            self.budget.reset(limit);
        }
        // The time limit is applied here, around the walk, so that the run's state (the reports
        // of the nodes that ran) outlives a timeout.
        let result = match limits.timeout {
            None => self.drive_with(&mut run, &mut feed, mode, max_memory, cancel).await,
            Some(limit) => {
                match tokio::time::timeout(limit, self.drive_with(&mut run, &mut feed, mode, max_memory, cancel)).await
                {
                    Ok(r) => r,
                    Err(_) => Err(self.timed_out(limit)),
                }
            }
        };
        let output = match result {
            Ok(()) => Ok(run.take_output(&self.plan, &self.names)),
            Err(e) => {
                self.failed_reports = std::mem::take(&mut run.reports);
                Err(e)
            }
        };
        run.clear();
        self.scratch = run;
        output
    }

    /// Ends a run past its time limit: cancels what still runs and names it.
    fn timed_out(&mut self, limit: Duration) -> ExecError {
        self.cancel_run();
        let running: Vec<String> =
            self.slots.iter().zip(&self.plan.nodes).filter(|(s, _)| s.is_none()).map(|(_, n)| n.id.clone()).collect();
        self.lost_nodes = !running.is_empty();
        ExecError::Timeout { limit, running }
    }

    /// The reports of the nodes the last failed run called (the failed ones included), for
    /// the node-time metrics; empty once taken.
    pub fn take_failed_reports(&mut self) -> Vec<NodeReport> {
        std::mem::take(&mut self.failed_reports)
    }

    async fn drive_with(
        &mut self,
        run: &mut RunState,
        feed: &mut Feed,
        mode: Mode,
        max_memory: Option<u64>,
        cancel: &CancellationToken,
    ) -> Result<(), ExecError> {
        for (_, ports) in feed.iter() {
            run.memory.hold(ports);
        }
        check_memory(&run.memory, max_memory, "")?;
        // Calls running off the driving task. Made on the first such call: making the set
        // allocates, and a run of light native nodes needs none.
        let mut inflight = None;
        let walk = async {
            loop {
                while let Some(i) = run.ready.pop_front() {
                    let own = feed.iter().position(|(n, _)| *n == i).map(|k| feed.swap_remove(k).1);
                    let inputs =
                        self.gather(i, own.clone(), &run.produced).map_err(|e| self.node_error(i, 1, e.into()))?;
                    // A node's own inputs stay accounted until it has finished with them.
                    run.held_inputs[i] = own;
                    if inputs.is_empty() && mode != Mode::Flush {
                        run.skipped(&self.plan, &self.preds, i, self.skipped_report(i));
                        continue;
                    }
                    let inline = matches!(&self.slots[i], Some(NodeInstance::Native(n)) if !n.is_heavy(&inputs));
                    if max_memory.is_some() {
                        // Calls running at once each make their output before any is counted, so a
                        // call first reserves its output's size: what the node says it will make,
                        // else its inputs' size, less what its predecessors' outputs free once it
                        // has run (running a chain's next node makes room). Without room beside
                        // the calls already running, it waits for one of them to finish, lets the
                        // nodes that one readied go first (consuming its output frees it), and tries
                        // again; with none running, it runs alone and is checked when it returns. A
                        // fan-out of a thousand heavy branches so runs as many at once as the limit
                        // has room for (`parallel_branches_share_the_memory_limit`,
                        // `a_fan_out_into_chains_runs_each_chain_on_and_fits_a_tight_limit`).
                        self.budget.set_live(run.memory.live());
                        let estimate = match &self.slots[i] {
                            Some(NodeInstance::Native(n)) => n.output_bytes(&inputs),
                            _ => None,
                        }
                        .unwrap_or_else(|| inputs.size_bytes())
                        .saturating_sub(run.freed_by(&self.plan, &self.preds, i));
                        if self.budget.reserve(i, estimate).is_err()
                            && let Some(calls) = inflight.as_mut().filter(|c: &&mut FuturesUnordered<_>| !c.is_empty())
                            && let Some(call) = calls.next().await
                        {
                            self.completed(run, call, max_memory)?;
                            if let Some(own) = run.held_inputs[i].take() {
                                feed.push((i, own));
                            }
                            run.ready.push_back(i);
                            continue;
                        }
                    }
                    let instance = self.slots[i].take().ok_or_else(|| {
                        ExecError::Internal(format!(
                            "node `{}` is not available",
                            crate::text::quoted(&self.plan.nodes[i].id)
                        ))
                    })?;
                    let mut ctx = self.context(i, inline, cancel);
                    if max_memory.is_some() {
                        ctx = ctx.with_memory(self.budget.clone(), i);
                    }
                    let call = self.invoke(i, instance, inputs, mode, ctx);
                    if inline {
                        // A light native call completes when first polled, so it is awaited here
                        // rather than pushed to `inflight`, which allocates a task per push.
                        self.completed(run, call.await, max_memory)?;
                    } else {
                        inflight.get_or_insert_with(FuturesUnordered::new).push(call);
                    }
                }
                let Some(call) = inflight.as_mut().map(StreamExt::next) else { break };
                let Some(call) = call.await else { break };
                self.completed(run, call, max_memory)?;
            }
            Ok(())
        };
        let result = walk.await;
        if result.is_err() {
            // Whatever failed, the calls still running are cancelled and awaited, so that every
            // instance is back in its slot and every report is kept.
            self.cancel_run();
            self.drain(&mut inflight, &mut run.reports).await;
        }
        result
    }

    /// Records a finished call and puts its node back in its slot.
    fn completed(&mut self, run: &mut RunState, call: CallResult, max_memory: Option<u64>) -> Result<(), ExecError> {
        let (i, instance, result) = call;
        self.slots[i] = instance;
        // The reservation ends as the output is counted. The output is checked against what the
        // run holds, not against what running calls reserved: those are room promised, which
        // the calls were admitted with (and a chain's next node, which frees its input, must
        // not fail for them).
        self.budget.release(i);
        let finished = match result {
            Ok(CallOk { outputs, report }) => run.completed(&self.plan, &self.preds, i, outputs, report, max_memory),
            Err(CallFailed { error, report }) => {
                run.reports.extend(report);
                Err(error)
            }
        };
        self.budget.set_live(run.memory.live());
        finished
    }

    /// The inputs of node `i`: its own external inputs plus every connected output, with
    /// several connections into one port mixed (audio) or collected into an array (data).
    fn gather(&self, i: usize, own: Option<Ports>, produced: &[Option<Ports>]) -> Result<Ports, PortError> {
        // Port order: the node's own inputs first, then connections in manifest order.
        // Inline capacity for the usual shapes, so gathering allocates nothing.
        let mut by_port: SmallVec<[(PortName, SmallVec<[PortValue; 1]>); 2]> = SmallVec::new();
        let mut add = |port: PortName, value: PortValue| match by_port.iter_mut().find(|(p, _)| *p == port) {
            Some((_, values)) => values.push(value),
            None => by_port.push((port, smallvec::smallvec![value])),
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
        let (id, node_type) = &self.names[i];
        NodeReport {
            node_id: id.clone(),
            node_type: node_type.clone(),
            runtime: self.plan.nodes[i].resolved.runtime(),
            status: NodeStatus::Skipped,
            execution_time: Duration::ZERO,
            cpu_time: Duration::ZERO,
            memory_bytes: 0,
            samples_processed: 0,
            attempts: 0,
            custom: Map::new(),
            figures: Figures::new(),
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
    async fn drain(
        &mut self,
        inflight: &mut Option<FuturesUnordered<impl Future<Output = CallResult>>>,
        reports: &mut Vec<NodeReport>,
    ) {
        let Some(inflight) = inflight else { return };
        while let Some((i, instance, result)) = inflight.next().await {
            self.slots[i] = instance;
            let report = match result {
                Ok(CallOk { report, .. }) => Some(report),
                Err(CallFailed { report, .. }) => report,
            };
            reports.extend(report);
        }
    }

    /// Runs node `i` with retries and its circuit breaker; hands the instance back.
    fn invoke(
        &self,
        i: usize,
        instance: NodeInstance,
        inputs: Ports,
        mode: Mode,
        ctx: NodeContext,
    ) -> impl Future<Output = CallResult> + use<> {
        let policy: RetryPolicy = self.plan.config.retry;
        let threshold = self.plan.config.breaker_threshold;
        let want_figures = self.plan.config.enable_metrics;
        let breakers = self.breakers.clone();
        let runtime = self.plan.nodes[i].resolved.runtime();
        async move {
            let mut instance = Some(instance);
            let mut report = NodeReport {
                node_id: ctx.node_id.clone(),
                node_type: ctx.node_type.clone(),
                runtime,
                status: NodeStatus::Success,
                execution_time: Duration::ZERO,
                cpu_time: Duration::ZERO,
                memory_bytes: 0,
                samples_processed: inputs.samples(),
                attempts: 0,
                custom: Map::new(),
                figures: Figures::new(),
            };
            loop {
                let attempt = match breakers.attempt(&ctx.node_type, threshold) {
                    Ok(attempt) => attempt,
                    Err((retry_after, failures)) => {
                        let err = ExecError::CircuitOpen {
                            node_id: ctx.node_id.to_string(),
                            node_type: ctx.node_type.to_string(),
                            failures,
                            retry_after,
                        };
                        return (i, instance, Err(err.into()));
                    }
                };
                report.attempts += 1;
                let Some(current) = instance.take() else {
                    return (
                        i,
                        None,
                        Err(ExecError::Internal(format!("node `{}` was lost", crate::text::quoted(&ctx.node_id)))
                            .into()),
                    );
                };
                let started = Instant::now();
                let (back, result, Measured { cpu, custom, figures }) =
                    call(current, inputs.clone(), mode, ctx.clone(), want_figures).await;
                report.execution_time += started.elapsed();
                report.cpu_time += cpu;
                report.custom = custom;
                report.figures = figures;
                instance = back;
                let error = match result {
                    Ok(outputs) => {
                        attempt.record(Outcome::Success);
                        return (i, instance, Ok(CallOk { outputs, report }));
                    }
                    Err(e) => e,
                };
                let counted = if error.counts_for_breaker() { Outcome::Failure } else { Outcome::NotCounted };
                attempt.record(counted);
                let retry = error.is_retryable() && report.attempts <= policy.max_retries && instance.is_some();
                if !retry {
                    let err = if error.kind == crate::nodes::NodeErrorKind::Cancelled {
                        ExecError::Cancelled
                    } else if let crate::nodes::NodeErrorKind::MemoryLimit {
                        limit_bytes: limit,
                        needed_bytes: needed,
                    } = error.kind
                    {
                        // Refused before the output was made: the run's memory limit, as if
                        // the output had been counted.
                        ExecError::MemoryLimit { limit, needed, node_id: Some(ctx.node_id.to_string()) }
                    } else {
                        ExecError::Node {
                            node_id: ctx.node_id.to_string(),
                            node_type: ctx.node_type.to_string(),
                            attempts: report.attempts,
                            source: Box::new(error),
                        }
                    };
                    report.status = NodeStatus::Failed;
                    return (i, instance, Err(CallFailed { error: err, report: Some(report) }));
                }
                tokio::select! {
                    () = tokio::time::sleep(policy.delay(report.attempts)) => {}
                    () = ctx.cancel.cancelled() => {
                        report.status = NodeStatus::Failed;
                        return (i, instance, Err(CallFailed { error: ExecError::Cancelled, report: Some(report) }));
                    }
                }
            }
        }
    }
}

/// The bookkeeping of one run: which nodes take part, what each still waits for, what each
/// produced and who still needs it, the memory held, and the nodes ready to start. It is reset,
/// not rebuilt, for each run, so its vectors keep their capacity.
#[derive(Default)]
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
    /// Spare capacity for the result's outputs (see [`Pipeline::recycle`]).
    outputs: Vec<NodeOutput>,
    memory: MemoryTracker,
    ready: VecDeque<usize>,
    /// Work list of the walk that finds the active nodes.
    stack: Vec<usize>,
}

impl RunState {
    /// Prepares a run over `feed`: in chunk mode only the nodes downstream of fed nodes take
    /// part, otherwise all of them.
    fn reset(&mut self, plan: &Plan, preds: &[Vec<usize>], feed: &Feed, mode: Mode) {
        let n = plan.nodes.len();
        self.active.clear();
        self.active.resize(n, mode != Mode::Chunk);
        if mode == Mode::Chunk {
            self.stack.clear();
            self.stack.extend(feed.iter().map(|(i, _)| *i));
            while let Some(i) = self.stack.pop() {
                if !std::mem::replace(&mut self.active[i], true) {
                    self.stack.extend(plan.outgoing[i].iter().copied());
                }
            }
        }
        let active = &self.active;
        self.waiting.clear();
        self.waiting.extend(preds.iter().map(|p| p.iter().filter(|&&p| active[p]).count()));
        self.consumers_left.clear();
        self.consumers_left.extend(plan.outgoing.iter().map(|out| out.iter().filter(|&&s| active[s]).count()));
        for v in [&mut self.produced, &mut self.kept, &mut self.held_inputs] {
            v.clear();
            v.resize_with(n, || None);
        }
        self.reports.clear();
        self.memory.reset();
        self.ready.clear();
        let waiting = &self.waiting;
        self.ready.extend(plan.order.iter().copied().filter(|&i| active[i] && waiting[i] == 0));
    }

    /// Drops whatever a run left behind, keeping the capacity.
    fn clear(&mut self) {
        for v in [&mut self.produced, &mut self.kept, &mut self.held_inputs] {
            v.clear();
        }
        self.reports.clear();
        self.memory.reset();
    }

    /// Node `i` had nothing to process.
    fn skipped(&mut self, plan: &Plan, preds: &[Vec<usize>], i: usize, report: NodeReport) {
        if let Some(own) = self.held_inputs[i].take() {
            self.memory.release(&own);
        }
        self.reports.push(report);
        self.finish_node(plan, preds, i);
    }

    /// Node `i` ran and produced `outputs`; fails if they take the run over its memory limit.
    fn completed(
        &mut self,
        plan: &Plan,
        preds: &[Vec<usize>],
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
        self.finish_node(plan, preds, i);
        Ok(())
    }

    /// Bytes node `i`'s predecessors' outputs hold that are freed once `i` has run: those it
    /// is the last active consumer of and that are not part of the result.
    fn freed_by(&self, plan: &Plan, preds: &[Vec<usize>], i: usize) -> u64 {
        preds[i]
            .iter()
            .filter(|&&p| self.active[p] && self.consumers_left[p] == 1 && !is_result_node(plan, p))
            .filter_map(|&p| self.produced[p].as_ref())
            .map(Ports::size_bytes)
            .sum()
    }

    /// After node `i` has run (or been skipped): wakes its successors and drops the outputs of
    /// predecessors nobody needs any more, keeping their unconsumed data for the result.
    fn finish_node(&mut self, plan: &Plan, preds: &[Vec<usize>], i: usize) {
        // Successors go first, ahead of the nodes already waiting (in their own order): a branch
        // runs on to the nodes that consume its outputs, which frees them, before more branches
        // start. A fan-out into chains under a tight memory limit then holds one output per
        // running branch, not every first stage's output at once.
        for &s in plan.outgoing[i].iter().rev() {
            if self.active[s] {
                self.waiting[s] -= 1;
                if self.waiting[s] == 0 {
                    self.ready.push_front(s);
                }
            }
        }
        for &p in &preds[i] {
            if !self.active[p] {
                continue;
            }
            self.consumers_left[p] -= 1;
            if self.consumers_left[p] > 0 || is_result_node(plan, p) {
                continue;
            }
            let Some(ports) = self.produced[p].take() else { continue };
            self.memory.release(&ports);
            if !ports.iter().any(|(_, v)| matches!(v, PortValue::Data(_))) {
                continue; // audio only: nothing to keep, no need to work out what was consumed
            }
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

    /// What the run returns: the outputs of the result nodes (and kept data), in plan order.
    fn take_output(&mut self, plan: &Plan, names: &[(Arc<str>, Arc<str>)]) -> RunOutput {
        let cpu_time = self.reports.iter().map(|r| r.cpu_time).sum();
        let mut outputs = std::mem::take(&mut self.outputs);
        for &i in &plan.order {
            let Some(ports) = self.produced[i].take().or_else(|| self.kept[i].take()) else { continue };
            if !ports.is_empty() {
                outputs.push(NodeOutput { node_id: names[i].0.clone(), ports });
            }
        }
        RunOutput {
            outputs,
            nodes: std::mem::take(&mut self.reports),
            wall_time: Duration::ZERO,
            cpu_time,
            peak_memory_bytes: self.memory.peak(),
        }
    }
}

/// Whether node `i`'s outputs belong to the result: a sink, or named in `output_nodes`.
fn is_result_node(plan: &Plan, i: usize) -> bool {
    plan.is_sink(i) || plan.output_nodes.contains(&i)
}

/// Fails when the run's values come to more than `limit` bytes.
fn check_memory(memory: &MemoryTracker, limit: Option<u64>, node_id: &str) -> Result<(), ExecError> {
    match limit {
        Some(limit) if memory.live() > limit => Err(ExecError::MemoryLimit {
            limit,
            needed: memory.live(),
            node_id: (!node_id.is_empty()).then(|| node_id.to_owned()),
        }),
        _ => Ok(()),
    }
}

/// What a node call measured besides its outputs: CPU time where it ran, and the node's own
/// figures (a Python node's JSON, a native node's [`Figures`]).
#[derive(Default)]
struct Measured {
    cpu: Duration,
    custom: Map<String, Value>,
    figures: Figures,
}

/// One call of a node in `mode`: native nodes inline or on the blocking pool, async nodes
/// awaited. Returns the instance (unless a blocking task was lost), the outputs and what was
/// measured; a native node's figures are read only when `want_figures`.
async fn call(
    instance: NodeInstance,
    inputs: Ports,
    mode: Mode,
    ctx: NodeContext,
    want_figures: bool,
) -> (Option<NodeInstance>, Result<Ports, NodeError>, Measured) {
    let measured = |node: &dyn crate::nodes::Node, cpu| Measured {
        cpu,
        custom: Map::new(),
        figures: if want_figures { node.custom_metrics() } else { Figures::new() },
    };
    match instance {
        NodeInstance::Native(mut node) => {
            if node.is_heavy(&inputs) {
                let joined = tokio::task::spawn_blocking(move || {
                    let cpu_start = thread_cpu_time();
                    let result = call_native(node.as_mut(), inputs, mode, &ctx);
                    (node, result, thread_cpu_time().saturating_sub(cpu_start))
                })
                .await;
                match joined {
                    Ok((node, result, cpu)) => {
                        let m = measured(node.as_ref(), cpu);
                        (Some(NodeInstance::Native(node)), result, m)
                    }
                    Err(e) => (None, Err(NodeError::internal(format!("node task failed: {e}"))), Measured::default()),
                }
            } else {
                // A light call runs to completion on this thread without blocking, so its wall
                // time is its CPU time. The thread CPU clock is a system call that takes the
                // scheduler's lock (about 3 % of the server's CPU on a stream chunk, two calls
                // per node, under `make bench-load`), the monotonic clock is not.
                let started = Instant::now();
                let result = call_native(node.as_mut(), inputs, mode, &ctx);
                let m = measured(node.as_ref(), started.elapsed());
                (Some(NodeInstance::Native(node)), result, m)
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
                Ok(out) => {
                    let m = Measured { cpu: out.cpu_time, custom: out.custom_metrics, figures: Figures::new() };
                    (Some(NodeInstance::Async(node)), Ok(out.outputs), m)
                }
                Err(e) => (Some(NodeInstance::Async(node)), Err(e), Measured::default()),
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
) -> Result<Ports, NodeError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| -> Result<Ports, NodeError> {
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
    })
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
