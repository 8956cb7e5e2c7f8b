//! The Python objects the server calls, looked up once after the node package is imported.

use pyo3::prelude::*;

/// Functions and classes of `remotemedia_nodes` (and `json.loads`).
pub struct Api {
    pub create: Py<PyAny>,
    pub call: Py<PyAny>,
    pub declarations: Py<PyAny>,
    pub format_exception: Py<PyAny>,
    pub load_dir: Py<PyAny>,
    pub audio: Py<PyAny>,
    pub json_loads: Py<PyAny>,
    pub node_error: Py<PyAny>,
    pub invalid_input: Py<PyAny>,
    pub transient: Py<PyAny>,
    pub cancelled: Py<PyAny>,
    pub param_errors: Py<PyAny>,
    pub invalid_request: Py<PyAny>,
    pub memory_limit_exceeded: Py<PyAny>,
    pub close: Py<PyAny>,
    pub model_busy: Py<PyAny>,
    pub model_pool_exhausted: Py<PyAny>,
    pub models_json: Py<PyAny>,
    pub configure_models: Py<PyAny>,
    pub install_model_hooks: Py<PyAny>,
    pub preload_models: Py<PyAny>,
}

impl Api {
    pub fn load(py: Python<'_>) -> PyResult<Self> {
        let pkg = py.import("remotemedia_nodes")?;
        let registry = py.import("remotemedia_nodes.registry")?;
        let plugins = py.import("remotemedia_nodes.plugins")?;
        let models = py.import("remotemedia_nodes.models")?;
        let get = |m: &Bound<'_, PyModule>, name: &str| -> PyResult<Py<PyAny>> { Ok(m.getattr(name)?.unbind()) };
        Ok(Self {
            create: get(&registry, "create")?,
            call: get(&registry, "call")?,
            declarations: get(&registry, "declarations_json")?,
            format_exception: get(&registry, "format_exception")?,
            load_dir: get(&plugins, "load_dir")?,
            audio: get(&pkg, "Audio")?,
            json_loads: get(&py.import("json")?, "loads")?,
            node_error: get(&pkg, "NodeError")?,
            invalid_input: get(&pkg, "InvalidInput")?,
            transient: get(&pkg, "TransientError")?,
            cancelled: get(&pkg, "Cancelled")?,
            param_errors: get(&pkg, "ParamErrors")?,
            invalid_request: get(&pkg, "InvalidRequest")?,
            memory_limit_exceeded: get(&pkg, "MemoryLimitExceeded")?,
            close: get(&registry, "close")?,
            model_busy: get(&models, "ModelBusy")?,
            model_pool_exhausted: get(&models, "ModelPoolExhausted")?,
            models_json: get(&registry, "models_json")?,
            configure_models: get(&models, "configure")?,
            install_model_hooks: get(&models, "install_hooks")?,
            preload_models: get(&models, "preload")?,
        })
    }
}
