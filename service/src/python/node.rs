//! Python node instances as executor nodes.

use std::sync::Arc;

use async_trait::async_trait;
use pyo3::exceptions::{PyConnectionError, PyIndexError, PyKeyError, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use serde_json::{Map, json};
use tokio::sync::Mutex;

use super::api::Api;
use super::bridge;
use super::worker::{JobError, Workers};
use crate::graph::metrics::thread_cpu_time;
use crate::nodes::{AsyncNode, AsyncOutput, NodeContext, NodeError, NodeErrorKind, ParamError, Ports};

/// One instance of a Python node class.
pub struct PyNode {
    instance: Arc<Py<PyAny>>,
    workers: Arc<Workers>,
    api: Arc<Api>,
    /// Held by the running job (moved into it), so calls on this instance never overlap, even
    /// when an interrupted job is still finishing on its worker.
    busy: Arc<Mutex<()>>,
}

impl PyNode {
    pub fn new(instance: Py<PyAny>, workers: Arc<Workers>, api: Arc<Api>) -> Self {
        Self { instance: Arc::new(instance), workers, api, busy: Arc::new(Mutex::new(())) }
    }

    async fn call(
        &self,
        method: &'static str,
        inputs: Option<Ports>,
        ctx: &NodeContext,
    ) -> Result<AsyncOutput, NodeError> {
        let permit = tokio::select! {
            p = self.busy.clone().lock_owned() => p,
            () = ctx.cancel.cancelled() => return Err(NodeError::cancelled()),
        };
        let (instance, api) = (self.instance.clone(), self.api.clone());
        let job = move |py: Python<'_>| {
            let _permit = permit;
            let cpu = thread_cpu_time();
            let result = invoke(py, &api, &instance, method, inputs.as_ref()).map_err(|e| match e {
                Failure::Python(err) => node_error(py, &api, &err),
                Failure::Output(msg) => NodeError::internal(msg),
            });
            (result, thread_cpu_time().saturating_sub(cpu))
        };
        match self.workers.run(&ctx.cancel, job).await {
            Ok((Ok(outputs), cpu_time)) => Ok(AsyncOutput { outputs, cpu_time, custom_metrics: Map::new() }),
            Ok((Err(e), _)) => Err(e),
            Err(JobError::Cancelled) => Err(NodeError::cancelled()),
            Err(JobError::Lost) => Err(NodeError::internal("the Python worker stopped")),
        }
    }
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
) -> Result<Ports, Failure> {
    let args = match inputs {
        Some(ports) => bridge::inputs(py, api, ports).map_err(Failure::Python)?.into_any(),
        None => py.None().into_bound(py),
    };
    let result = api.call.bind(py).call1((instance.bind(py), method, args)).map_err(Failure::Python)?;
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
    } else if text.is_empty() {
        type_name.clone()
    } else {
        format!("{type_name}: {text}")
    };
    NodeError::new(kind, message).with_stack_trace(trace).with_context(json!({ "exception_type": type_name }))
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
