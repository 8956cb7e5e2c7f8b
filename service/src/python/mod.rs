//! The embedded CPython interpreter and the Python nodes it runs.
//!
//! - [`interpreter`]: starts CPython once, from the configured Python environment
//! - [`worker`]: dedicated threads that run Python, with interruption for time limits
//! - [`bridge`]: audio as zero-copy read-only numpy views, outputs back to buffers
//! - [`node`]: Python node instances as executor nodes; exceptions as node errors
//! - [`models`]: model hosting's server side: configuration, metrics, waits for busy pools
//!
//! [`PythonRuntime`] is what the registry sees: the Python node types and a way to build them.

mod api;
mod bridge;
pub mod interpreter;
pub mod models;
mod node;
mod worker;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use pyo3::prelude::*;
use serde_json::Value;
use tracing::info;

pub use bridge::RustBuffer;
pub use models::ModelSettings;
pub use node::PyNode;

use crate::nodes::{AsyncNode, ForeignNodes, NodeSpec, ParamError, Params};
use api::Api;
use worker::Workers;

/// Why the Python runtime could not start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PythonError {
    #[error("cannot start the embedded Python interpreter: {0}")]
    Start(String),
    #[error(
        "cannot import the Python node package remotemedia_nodes ({0}); install service/python into the Python environment (make venv does) or set python_home"
    )]
    Package(String),
    #[error("{0}")]
    Plugin(String),
    #[error("{0}")]
    Models(String),
    /// The configuration's model settings name models that do not exist: a configuration
    /// error, not a failure of the runtime.
    #[error("{0}")]
    ModelSettings(String),
}

/// What start-up learned about the interpreter.
#[derive(Debug, Clone)]
pub struct InterpreterInfo {
    pub version: String,
    pub prefix: String,
    pub numpy: String,
}

/// The running interpreter: its workers, the node package's API and the node types.
pub struct PythonRuntime {
    workers: Arc<Workers>,
    api: Arc<Api>,
    declarations: Vec<NodeSpec>,
    models: ModelSettings,
    pub info: InterpreterInfo,
}

/// One interpreter and one worker pool per process, shared by every server in it.
static SHARED: OnceLock<(Arc<Workers>, Arc<Api>, InterpreterInfo)> = OnceLock::new();
/// Plug-in directories already imported (importing one twice would register its nodes twice).
static LOADED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

impl PythonRuntime {
    /// Runs `f` on a Python worker (for benchmarks and tools that need the interpreter).
    pub async fn run<R: Send + 'static>(&self, f: impl FnOnce(Python<'_>) -> R + Send + 'static) -> Option<R> {
        self.workers.run(&tokio_util::sync::CancellationToken::new(), f).await.ok()
    }

    /// Starts the interpreter from `home` (the build's Python environment if `None`), imports
    /// `remotemedia_nodes` and every plug-in directory, starts `workers` threads and configures
    /// model hosting (an unknown model name is an error naming it).
    pub fn start(
        home: Option<&Path>,
        workers: usize,
        plugin_dirs: &[PathBuf],
        models: &ModelSettings,
    ) -> Result<Arc<Self>, PythonError> {
        interpreter::start(home).map_err(PythonError::Start)?;
        let (workers, api, info) = match SHARED.get() {
            Some(shared) => shared.clone(),
            None => {
                let (api, info) = Python::attach(|py| -> Result<_, PythonError> {
                    let api = Api::load(py).map_err(|e| PythonError::Package(describe(py, &e)))?;
                    Ok((api, interpreter_info(py)))
                })?;
                let api = Arc::new(api);
                let cancelled = Python::attach(|py| api.cancelled.clone_ref(py));
                let shared = (Workers::start(workers, cancelled), api, info);
                SHARED.get_or_init(|| shared).clone()
            }
        };
        Python::attach(|py| -> Result<(), PythonError> {
            let mut loaded = LOADED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for dir in plugin_dirs {
                let key = dir.canonicalize().unwrap_or_else(|_| dir.clone());
                if loaded.contains(&key) {
                    continue;
                }
                let modules = api
                    .load_dir
                    .bind(py)
                    .call1((dir.to_string_lossy().into_owned(),))
                    .map_err(|e| PythonError::Plugin(describe(py, &e)))?;
                info!(directory = %dir.display(), modules = %modules, "python plug-ins loaded");
                loaded.insert(key);
            }
            Ok(())
        })?;
        let declarations = Python::attach(|py| {
            let text = api.declarations.bind(py).call0().and_then(|t| t.extract::<String>());
            text.map_err(|e| PythonError::Plugin(format!("cannot declare the Python nodes: {}", describe(py, &e))))
        })?;
        let declarations: Vec<NodeSpec> = serde_json::from_str(&declarations)
            .map_err(|e| PythonError::Plugin(format!("the Python node declarations do not parse: {e}")))?;
        configure_models(&api, models)?;
        let node_types: Vec<&str> = declarations.iter().map(|d| d.node_type.as_str()).collect();
        info!(
            python_version = %info.version,
            sys_prefix = %info.prefix,
            numpy_version = %info.numpy,
            workers = workers.count(),
            node_types = %node_types.join(", "),
            "python runtime ready"
        );
        Ok(Arc::new(Self { workers, api, declarations, models: models.clone(), info }))
    }
}

/// Hands the model settings to `remotemedia_nodes.models`, installs its reporting hooks and
/// learns its models (the label values of the model metrics).
fn configure_models(api: &Api, settings: &ModelSettings) -> Result<(), PythonError> {
    let text = Python::attach(|py| -> PyResult<String> {
        let (record, released) = models::hooks(py)?;
        api.install_model_hooks.bind(py).call1((record, released))?;
        let pools = pyo3::types::PyDict::new(py);
        for (name, size) in &settings.pools {
            pools.set_item(name, size)?;
        }
        api.configure_models.bind(py).call1((pools, settings.wait.as_secs_f64(), settings.preload.clone()))?;
        api.models_json.bind(py).call0()?.extract()
    })
    .map_err(|e| {
        Python::attach(|py| PythonError::ModelSettings(format!("model configuration: {}", describe_value(py, &e))))
    })?;
    let known: Vec<models::ModelInfo> = serde_json::from_str(&text)
        .map_err(|e| PythonError::Models(format!("the model descriptions do not parse: {e}")))?;
    info!(
        models = %known.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", "),
        preload = %settings.preload.join(", "),
        "python models registered"
    );
    models::set_models(known);
    Ok(())
}

/// An exception's text alone (the configuration errors say what is wrong themselves).
fn describe_value(py: Python<'_>, e: &PyErr) -> String {
    e.value(py).str().map(|s| s.to_string()).unwrap_or_default()
}

fn describe(py: Python<'_>, e: &PyErr) -> String {
    let value = e.value(py);
    let text = value.str().map(|s| s.to_string()).unwrap_or_default();
    let name = e.get_type(py).name().map(|n| n.to_string()).unwrap_or_default();
    // Plug-in errors already name the file and line.
    if name == "PluginError" { text } else { format!("{name}: {text}") }
}

fn interpreter_info(py: Python<'_>) -> InterpreterInfo {
    let sys = py.import("sys").ok();
    let attr = |m: &Option<Bound<'_, PyModule>>, name: &str| {
        m.as_ref()
            .and_then(|m| m.getattr(name).ok())
            .and_then(|v| v.str().ok())
            .map(|s| s.to_string())
            .unwrap_or_default()
    };
    let numpy = py.import("numpy").ok();
    InterpreterInfo {
        version: attr(&sys, "version").replace('\n', " "),
        prefix: attr(&sys, "prefix"),
        numpy: attr(&numpy, "__version__"),
    }
}

#[async_trait]
impl ForeignNodes for PythonRuntime {
    fn declarations(&self) -> Vec<NodeSpec> {
        self.declarations.clone()
    }

    /// Loads the models named by `preload_models`; the error names the model and the cause.
    async fn warm_up(&self) -> Result<(), String> {
        if self.models.preload.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let api = self.api.clone();
        let job =
            move |py: Python<'_>| api.preload_models.bind(py).call0().map(|_| ()).map_err(|e| describe_value(py, &e));
        self.workers
            .run(&tokio_util::sync::CancellationToken::new(), job)
            .await
            .map_err(|e| format!("the Python worker stopped while preloading models ({e:?})"))??;
        info!(
            models = %self.models.preload.join(", "),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "models preloaded"
        );
        Ok(())
    }

    async fn create(
        &self,
        node_type: &str,
        _node_id: &str,
        params: &Params,
    ) -> Result<Arc<dyn AsyncNode>, Vec<ParamError>> {
        let (api, node_type, params) =
            (self.api.clone(), node_type.to_owned(), Value::Object(params.as_map().clone()).to_string());
        let job = move |py: Python<'_>| -> Result<Py<PyAny>, Vec<ParamError>> {
            let params =
                api.json_loads.bind(py).call1((params,)).map_err(|e| vec![ParamError::new("", e.to_string())])?;
            api.create
                .bind(py)
                .call1((node_type, params))
                .map(Bound::unbind)
                .map_err(|e| node::param_errors(py, &api, &e))
        };
        match self.workers.run(&tokio_util::sync::CancellationToken::new(), job).await {
            Ok(Ok(instance)) => {
                Ok(Arc::new(PyNode::new(instance, self.workers.clone(), self.api.clone(), &self.models)))
            }
            Ok(Err(errors)) => Err(errors),
            Err(e) => Err(vec![ParamError::new("", format!("could not be built: the Python worker stopped ({e:?})"))]),
        }
    }
}

#[cfg(test)]
mod tests;
