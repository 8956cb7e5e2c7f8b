//! Moving values between the executor and Python: audio as numpy views of the server's own
//! buffers (no copy, read-only), JSON data as Python objects, and node outputs back.

use bytes::Bytes;
use numpy::ndarray::ArrayView2;
use numpy::{PyArray2, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods, npyffi};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::api::Api;
use crate::audio::{AudioBuffer, SampleFormat};
use crate::nodes::{PortValue, Ports, port_name};

/// Keeps a buffer's samples alive while numpy views them; it is the views' `base`.
#[pyclass(frozen, module = "remotemedia_nodes")]
pub struct RustBuffer {
    bytes: Bytes,
}

#[pymethods]
impl RustBuffer {
    /// Address of the first sample, to check that a view really is the server's memory.
    #[getter]
    fn address(&self) -> usize {
        self.bytes.as_ptr() as usize
    }

    #[getter]
    fn nbytes(&self) -> usize {
        self.bytes.len()
    }
}

/// A read-only `frames × channels` numpy array over `audio`'s own memory when its bytes are
/// aligned for the sample type (always, for buffers the server made and for request audio,
/// see [`AudioBuffer::into_aligned`]), a copy otherwise.
pub fn array<'py>(py: Python<'py>, audio: &AudioBuffer) -> PyResult<Bound<'py, PyUntypedArray>> {
    let shape = (audio.frames(), audio.channels() as usize);
    let container = Bound::new(py, RustBuffer { bytes: audio.bytes().clone() })?.into_any();
    let array = match audio.format() {
        SampleFormat::F32 => view(py, audio.f32_slice(), || audio.as_f32().into_owned(), shape, container)?,
        SampleFormat::I16 => {
            view(py, audio.i16_slice(), || bytemuck::pod_collect_to_vec(audio.bytes()), shape, container)?
        }
        SampleFormat::I32 => {
            view(py, audio.i32_slice(), || bytemuck::pod_collect_to_vec(audio.bytes()), shape, container)?
        }
    };
    // Read-only, as `setflags(write=False)` makes it, set on the new array's flags directly,
    // which saves looking up and calling the method through Python for every input.
    // SAFETY: the GIL is held and nothing else has seen the array yet.
    unsafe { (*npyffi::_PyArray_GET_ITEM_DATA(array.as_array_ptr())).flags &= !npyffi::NPY_ARRAY_WRITEABLE };
    Ok(array)
}

fn view<'py, T: numpy::Element + Copy>(
    py: Python<'py>,
    slice: Option<&[T]>,
    copy: impl FnOnce() -> Vec<T>,
    shape: (usize, usize),
    container: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let array = match slice {
        Some(s) => {
            let v =
                ArrayView2::from_shape(shape, s).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
            // SAFETY: `container` owns a clone of the `Bytes` that `s` points into, so the memory
            // stays valid and unchanged (Bytes are immutable) as long as the array lives.
            unsafe { PyArray2::borrow_from_array(&v, container) }
        }
        None => {
            let v = numpy::ndarray::Array2::from_shape_vec(shape, copy())
                .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
            PyArray2::from_owned_array(py, v)
        }
    };
    Ok(array.into_any().cast_into::<PyUntypedArray>()?)
}

/// The node's inputs as a `dict`: audio ports as `Audio`, data ports as Python values.
pub fn inputs<'py>(py: Python<'py>, api: &Api, ports: &Ports) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (port, value) in ports.iter() {
        let v = match value {
            PortValue::Audio(a) => api.audio.bind(py).call1((array(py, a)?, a.sample_rate()))?,
            PortValue::Data(d) => api.json_loads.bind(py).call1((d.to_string(),))?,
        };
        dict.set_item(port, v)?;
    }
    Ok(dict)
}

/// Turns the `(audio_by_port, data_json)` a node call returns into ports.
pub fn outputs(result: &Bound<'_, PyAny>) -> Result<Ports, String> {
    let tuple = result.cast::<PyTuple>().map_err(|e| e.to_string())?;
    let mut ports = Ports::new();
    let audio = tuple.get_item(0).map_err(|e| e.to_string())?;
    for (port, value) in audio.cast::<PyDict>().map_err(|e| e.to_string())?.iter() {
        let port: String = port.extract().map_err(|e: PyErr| e.to_string())?;
        let buffer = audio_from(&value).map_err(|e| format!("output `{port}`: {e}"))?;
        ports.insert(port_name(&port), PortValue::Audio(buffer));
    }
    let data = tuple.get_item(1).map_err(|e| e.to_string())?;
    if !data.is_none() {
        let text: String = data.extract().map_err(|e: PyErr| e.to_string())?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if let serde_json::Value::Object(map) = value {
            for (port, v) in map {
                ports.insert(port_name(&port), PortValue::data(v));
            }
        }
    }
    Ok(ports)
}

/// An `Audio` object's samples as a buffer. The input's own view comes back as the same
/// buffer; anything else is copied, since Python code may still hold and change its array.
fn audio_from(audio: &Bound<'_, PyAny>) -> Result<AudioBuffer, String> {
    let rate: u32 = audio.getattr("sample_rate").and_then(|r| r.extract()).map_err(|e| e.to_string())?;
    let samples = audio.getattr("samples").map_err(|e| e.to_string())?;
    let array = samples.cast::<PyUntypedArray>().map_err(|_| "samples is not a numpy array".to_owned())?;
    let shape = array.shape();
    let (frames, channels) = match shape {
        [f] => (*f, 1usize),
        [f, c] => (*f, *c),
        other => return Err(format!("samples must be 1-D or frames × channels, got shape {other:?}")),
    };
    let dtype = array.dtype();
    let format = if dtype.is_equiv_to(&numpy::dtype::<f32>(audio.py())) {
        SampleFormat::F32
    } else if dtype.is_equiv_to(&numpy::dtype::<i16>(audio.py())) {
        SampleFormat::I16
    } else if dtype.is_equiv_to(&numpy::dtype::<i32>(audio.py())) {
        SampleFormat::I32
    } else {
        return Err(format!("samples must be float32, int16 or int32, got {dtype}"));
    };
    if channels == 0 {
        return Err("samples have 0 channels".to_owned());
    }
    // The input view handed back unchanged: reuse the server's buffer.
    if let Ok(base) = array.getattr("base")
        && let Ok(buffer) = base.cast::<RustBuffer>()
        && array.is_c_contiguous()
        && buffer.get().bytes.len() == frames * channels * format.bytes_per_sample()
    {
        let bytes = &buffer.get().bytes;
        // The array's first element, read from its header: `ndarray.ctypes.data` builds a ctypes
        // object per call (1.2 µs by `python -m timeit`).
        // SAFETY: `array` is a live numpy array and the GIL is held.
        let data = unsafe { (*npyffi::_PyArray_GET_ITEM_DATA(array.as_array_ptr())).data };
        if std::ptr::eq(data.cast_const().cast::<u8>(), bytes.as_ptr()) {
            return AudioBuffer::from_wire(bytes.clone(), format, rate, channels as u32, (frames * channels) as u64)
                .map_err(|e| e.to_string());
        }
    }
    let contiguous = audio
        .py()
        .import("numpy")
        .and_then(|np| np.call_method1("ascontiguousarray", (array,)))
        .map_err(|e| e.to_string())?;
    let raw: Vec<u8> = contiguous.call_method0("tobytes").and_then(|b| b.extract()).map_err(|e| e.to_string())?;
    AudioBuffer::from_wire(Bytes::from(raw), format, rate, channels as u32, (frames * channels) as u64)
        .map_err(|e| e.to_string())
}
