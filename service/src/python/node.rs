//! Python node instances as executor nodes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pyo3::exceptions::{PyConnectionError, PyIndexError, PyKeyError, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use serde_json::{Map, json};
use tokio::sync::Mutex;

use super::api::Api;
use super::bridge;
use super::models::{self, ModelSettings};
use super::worker::{Expect, JobError, Workers};
use crate::graph::metrics::thread_cpu_time;
use crate::nodes::{AsyncNode, AsyncOutput, NodeContext, NodeError, NodeErrorKind, ParamError, Ports};
use crate::text;

/// One instance of a Python node class.
pub struct PyNode {
    instance: Arc<Py<PyAny>>,
    workers: Arc<Workers>,
    api: Arc<Api>,
    /// Held by the running job (moved into it), so calls on this instance never overlap, even
    /// when an interrupted job is still finishing on its worker.
    busy: Arc<Mutex<()>>,
    /// How long a call may wait for a free model instance.
    model_wait: Duration,
    /// Whether the last call was quick (see [`Expect`]): a model node's calls are not.
    quick: AtomicBool,
}

/// What a Python call came to: done (its outputs or its failure), or `Err` when a model pool
/// it needed was busy.
type Outcome = Result<Result<Ports, NodeError>, Busy>;

/// `remotemedia_nodes.models.ModelBusy`: every instance of `model` was leased at release count
/// `generation`.
struct Busy {
    model: String,
    generation: u64,
    pool_size: u64,
}

impl PyNode {
    pub fn new(instance: Py<PyAny>, workers: Arc<Workers>, api: Arc<Api>, models: &ModelSettings) -> Self {
        Self {
            instance: Arc::new(instance),
            workers,
            api,
            busy: Arc::new(Mutex::new(())),
            model_wait: models.wait,
            quick: AtomicBool::new(true),
        }
    }

    /// Runs `method`; a call that finds a model pool busy is run again when the pool releases
    /// an instance, for at most `model_wait` in all, and then fails with RESOURCE_LIMIT.
    async fn call(
        &self,
        method: &'static str,
        inputs: Option<Ports>,
        ctx: &NodeContext,
    ) -> Result<AsyncOutput, NodeError> {
        let mut waiting: Option<(tokio::time::Instant, String)> = None;
        loop {
            let (outcome, cpu_time) = self.attempt(method, inputs.clone(), ctx).await?;
            self.quick.store(Expect::after(cpu_time) == Expect::Quick, Ordering::Relaxed);
            let busy = match outcome {
                Ok(result) => {
                    if let Some((since, model)) = &waiting {
                        models::waited(model, since.elapsed());
                    }
                    return result.map(|outputs| AsyncOutput { outputs, cpu_time, custom_metrics: Map::new() });
                }
                Err(busy) => busy,
            };
            let since = waiting.get_or_insert_with(|| (tokio::time::Instant::now(), busy.model.clone())).0;
            let deadline = since + self.model_wait;
            if !models::wait_for_release(&busy.model, busy.generation, deadline, &ctx.cancel).await {
                if ctx.cancel.is_cancelled() {
                    return Err(NodeError::cancelled());
                }
                models::exhausted(&busy.model, since.elapsed());
                return Err(pool_exhausted(&busy, since.elapsed(), self.model_wait));
            }
        }
    }

    async fn attempt(
        &self,
        method: &'static str,
        inputs: Option<Ports>,
        ctx: &NodeContext,
    ) -> Result<(Outcome, Duration), NodeError> {
        let permit = tokio::select! {
            p = self.busy.clone().lock_owned() => p,
            () = ctx.cancel.cancelled() => return Err(NodeError::cancelled()),
        };
        let (instance, api, memory) = (self.instance.clone(), self.api.clone(), ctx.memory_snapshot());
        let job = move |py: Python<'_>| {
            let _permit = permit;
            let cpu = thread_cpu_time();
            let outcome: Outcome = match invoke(py, &api, &instance, method, inputs.as_ref(), memory) {
                Ok(outputs) => Ok(Ok(outputs)),
                Err(Failure::Python(err)) => match model_busy(py, &api, &err) {
                    Some(busy) => Err(busy),
                    None => Ok(Err(node_error(py, &api, &err))),
                },
                Err(Failure::Output(msg)) => Ok(Err(NodeError::internal(msg))),
            };
            (outcome, thread_cpu_time().saturating_sub(cpu))
        };
        let expect = if self.quick.load(Ordering::Relaxed) { Expect::Quick } else { Expect::Slow };
        match self.workers.run_expecting(expect, &ctx.cancel, job).await {
            Ok(done) => Ok(done),
            Err(JobError::Cancelled) => Err(NodeError::cancelled()),
            Err(JobError::Lost) => Err(NodeError::internal("the Python worker stopped")),
        }
    }
}

impl Drop for PyNode {
    /// Calls the instance's `close()` once its last call is over, so leased models go back to
    /// their pools however the execution or session ended.
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (instance, api, workers, busy) =
            (self.instance.clone(), self.api.clone(), self.workers.clone(), self.busy.clone());
        runtime.spawn(async move {
            let permit = busy.lock_owned().await;
            let job = move |py: Python<'_>| {
                let _permit = permit;
                if let Err(e) = api.close.bind(py).call1((instance.bind(py),)) {
                    tracing::warn!(error = %node_error(py, &api, &e), "a Python node's close() failed");
                }
            };
            let _ = workers.run(&tokio_util::sync::CancellationToken::new(), job).await;
        });
    }
}

/// The busy pool of a `ModelBusy` exception.
fn model_busy(py: Python<'_>, api: &Api, err: &PyErr) -> Option<Busy> {
    let value = err.value(py);
    if !value.is_instance(api.model_busy.bind(py)).unwrap_or(false) {
        return None;
    }
    Some(Busy {
        model: value.getattr("model").and_then(|m| m.extract()).ok()?,
        generation: value.getattr("generation").and_then(|g| g.extract()).ok()?,
        pool_size: value.getattr("pool_size").and_then(|g| g.extract()).unwrap_or(0),
    })
}

/// The failure of a call that waited `waited` for an instance of a busy pool.
fn pool_exhausted(busy: &Busy, waited: Duration, wait: Duration) -> NodeError {
    let retry_after = (wait / 2).max(Duration::from_millis(100));
    NodeError::new(
        NodeErrorKind::ResourceLimit,
        format!(
            "model {}: all {} instances stayed in use for {} ms (model_wait_ms); retry in {} ms, or raise model_pools for {}",
            busy.model,
            busy.pool_size,
            waited.as_millis(),
            retry_after.as_millis(),
            busy.model
        ),
    )
    .with_retry_after(retry_after)
    .with_context(json!({ "limit": models::WAIT_LIMIT, "model": busy.model, "pool_size": busy.pool_size }))
}

enum Failure {
    Python(PyErr),
    Output(String),
}

fn invoke(
    py: Python<'_>,
    api: &Api,
    instance: &Py<PyAny>,
    method: &str,
    inputs: Option<&Ports>,
    memory: Option<(u64, u64)>,
) -> Result<Ports, Failure> {
    let args = match inputs {
        Some(ports) => bridge::inputs(py, api, ports).map_err(Failure::Python)?.into_any(),
        None => py.None().into_bound(py),
    };
    // The run's memory limit and holdings, for the node's `reserve_output` calls.
    let result = api.call.bind(py).call1((instance.bind(py), method, args, memory)).map_err(Failure::Python)?;
    bridge::outputs(&result).map_err(Failure::Output)
}

#[async_trait]
impl AsyncNode for PyNode {
    async fn process(&self, inputs: Ports, ctx: &NodeContext) -> Result<AsyncOutput, NodeError> {
        self.call("process", Some(inputs), ctx).await
    }

    async fn flush(&self, ctx: &NodeContext) -> Result<AsyncOutput, NodeError> {
        self.call("flush", None, ctx).await
    }
}

/// Classifies a Python exception (see `remotemedia_nodes.errors`) and keeps its traceback.
pub fn node_error(py: Python<'_>, api: &Api, err: &PyErr) -> NodeError {
    let is = |class: &Py<PyAny>| err.value(py).is_instance(class.bind(py)).unwrap_or(false);
    let kind = if is(&api.cancelled) {
        NodeErrorKind::Cancelled
    } else if is(&api.model_pool_exhausted) {
        NodeErrorKind::ResourceLimit
    } else if is(&api.memory_limit_exceeded) {
        // Figures the exception carries (`remotemedia_nodes.reserve_output`); the executor
        // reports them as the run's memory limit.
        let value = err.value(py);
        let bytes = |name: &str| value.getattr(name).ok().and_then(|v| v.extract::<u64>().ok()).unwrap_or_default();
        NodeErrorKind::MemoryLimit { limit_bytes: bytes("limit_bytes"), needed_bytes: bytes("needed_bytes") }
    } else if is(&api.invalid_request) {
        NodeErrorKind::Validation
    } else if is(&api.transient)
        || err.is_instance_of::<PyTimeoutError>(py)
        || err.is_instance_of::<PyConnectionError>(py)
    {
        NodeErrorKind::Transient
    } else if is(&api.invalid_input)
        || err.is_instance_of::<PyValueError>(py)
        || err.is_instance_of::<PyTypeError>(py)
        || err.is_instance_of::<PyKeyError>(py)
        || err.is_instance_of::<PyIndexError>(py)
    {
        NodeErrorKind::InvalidInput
    } else {
        NodeErrorKind::Internal
    };
    let type_name = err.get_type(py).name().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
    let text = err.value(py).str().map(|s| s.to_string()).unwrap_or_default();
    let trace = api
        .format_exception
        .bind(py)
        .call1((err.value(py), err.traceback(py)))
        .and_then(|t| t.extract::<String>())
        .unwrap_or_default();
    let message = if kind == NodeErrorKind::Cancelled {
        "execution cancelled".to_owned()
    } else if kind == NodeErrorKind::ResourceLimit && !text.is_empty() {
        // Worded like the server's own pool-exhausted error, which it is to the client.
        text.clone()
    } else if text.is_empty() {
        type_name.clone()
    } else if is(&api.node_error) {
        // A node's own error (`remotemedia_nodes.NodeError`) says what happened in the words the
        // native nodes use; the class name stays in `context.exception_type`.
        text.clone()
    } else {
        format!("{type_name}: {text}")
    };
    let mut error = NodeError::new(kind, message);
    // The input or parameter at fault, when the node named it (`field=` on its exception).
    if let Some(field) = err.value(py).getattr("field").ok().and_then(|f| f.extract::<String>().ok()) {
        error = error.with_field(text::clip(&field, text::MAX_QUOTED_BYTES));
    }
    if matches!(kind, NodeErrorKind::MemoryLimit { .. }) {
        return error;
    }
    if kind == NodeErrorKind::ResourceLimit {
        let value = err.value(py);
        let attr = |name: &str| value.getattr(name).ok();
        let retry_after = attr("retry_after_s").and_then(|r| r.extract::<f64>().ok()).unwrap_or(0.0);
        let model = attr("model").and_then(|m| m.extract::<String>().ok()).unwrap_or_default();
        let pool_size = attr("pool_size").and_then(|p| p.extract::<u64>().ok()).unwrap_or_default();
        return error.with_retry_after(Duration::from_secs_f64(retry_after.clamp(0.0, 3600.0))).with_context(
            json!({ "exception_type": type_name, "limit": models::WAIT_LIMIT, "model": model, "pool_size": pool_size }),
        );
    }
    error.with_stack_trace(trace).with_context(json!({ "exception_type": type_name }))
}

/// Parameter problems from `remotemedia_nodes.registry.create`.
pub fn param_errors(py: Python<'_>, api: &Api, err: &PyErr) -> Vec<ParamError> {
    let value = err.value(py);
    if value.is_instance(api.param_errors.bind(py)).unwrap_or(false)
        && let Ok(list) = value.getattr("errors")
        && let Ok(items) = list.try_iter()
    {
        let found: Vec<ParamError> = items
            .flatten()
            .map(|e| {
                let param = e.getattr("param").and_then(|p| p.extract::<String>()).unwrap_or_default();
                let message = e.getattr("message").and_then(|m| m.extract::<String>()).unwrap_or_default();
                ParamError::new(param, message)
            })
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    let type_name = err.get_type(py).name().map(|n| n.to_string()).unwrap_or_default();
    vec![ParamError::new(
        "",
        format!("could not be built: {type_name}: {}", value.str().map(|s| s.to_string()).unwrap_or_default()),
    )]
}
