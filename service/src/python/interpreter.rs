//! Starting the embedded CPython interpreter, once per process.
//!
//! The interpreter is configured (PEP 587 `PyConfig`) before pyo3 touches it: its program name
//! is the Python environment's own `bin/python`, so `sys.prefix`, `site-packages` and a venv's
//! `pyvenv.cfg` resolve exactly as they would for that interpreter, and it installs no signal
//! handlers, so SIGINT and SIGTERM keep reaching the server's shutdown path.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pyo3::ffi;

static STARTED: OnceLock<Result<(), String>> = OnceLock::new();

/// The Python environment the server was built against (a venv's `sys.prefix`), used when
/// `python_home` is not configured.
pub fn default_home() -> Option<PathBuf> {
    let home = env!("REMOTEMEDIA_DEFAULT_PYTHON_HOME");
    (!home.is_empty()).then(|| PathBuf::from(home))
}

fn interpreter_in(home: &Path) -> Result<PathBuf, String> {
    ["bin/python3", "bin/python"]
        .iter()
        .map(|p| home.join(p))
        .find(|p| p.exists())
        .ok_or_else(|| format!("python_home {} has no bin/python3", home.display()))
}

/// Starts the interpreter for `home` (or the build's environment). Later calls return the
/// first call's outcome: CPython cannot be started twice in one process.
pub fn start(home: Option<&Path>) -> Result<(), String> {
    STARTED
        .get_or_init(|| {
            let home = home.map(Path::to_path_buf).or_else(default_home);
            // SAFETY: called once (OnceLock) before any other use of the Python C API; every
            // PyConfig call gets the config initialised by PyConfig_InitPythonConfig.
            unsafe { initialize(home.as_deref()) }
        })
        .clone()
}

unsafe fn check(status: ffi::PyStatus, what: &str) -> Result<(), String> {
    // SAFETY: `status` comes straight from a PyConfig/Py_Initialize call.
    if unsafe { ffi::PyStatus_Exception(status) } == 0 {
        return Ok(());
    }
    let msg = if status.err_msg.is_null() {
        "unknown error".to_owned()
    } else {
        // SAFETY: a non-null err_msg is a static NUL-terminated string set by CPython.
        unsafe { CStr::from_ptr(status.err_msg) }.to_string_lossy().into_owned()
    };
    Err(format!("{what}: {msg}"))
}

unsafe fn initialize(home: Option<&Path>) -> Result<(), String> {
    // SAFETY (whole function): PEP 587 initialisation sequence on a zeroed, then initialised,
    // config; the config is cleared on every path after initialisation.
    unsafe {
        if ffi::Py_IsInitialized() != 0 {
            return Ok(());
        }
        let mut config = std::mem::MaybeUninit::<ffi::PyConfig>::zeroed();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let config = config.assume_init_mut();
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        let result = (|| {
            if let Some(home) = home {
                let exe = interpreter_in(home)?;
                let exe = CString::new(exe.to_string_lossy().into_owned()).map_err(|e| e.to_string())?;
                let status = ffi::PyConfig_SetBytesString(config, &mut config.program_name, exe.as_ptr());
                check(status, "setting the Python program name")?;
            }
            check(ffi::Py_InitializeFromConfig(config), "starting Python")
        })();
        ffi::PyConfig_Clear(config);
        result?;
        // Hand the GIL back: every later use attaches through pyo3.
        ffi::PyEval_SaveThread();
    }
    pyo3::Python::initialize();
    Ok(())
}
