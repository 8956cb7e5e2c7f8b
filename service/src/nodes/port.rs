//! Values on node ports: named inputs and outputs, audio or JSON.
//!
//! [`Ports`] keeps up to four ports inline with `'static` names, so building a node's outputs on
//! the streaming hot path allocates nothing.

use std::borrow::Cow;
use std::sync::Arc;

use smallvec::SmallVec;

use serde_json::Value;

use crate::audio::{AudioBuffer, AudioError};

/// The default input port, fed by `audio_inputs[node_id]` and by connections without `input_key`.
pub const INPUT: &str = "input";
/// The default output port, returned in `audio_outputs` and used by connections without `output_key`.
pub const OUTPUT: &str = "output";
/// The port fed by `data_inputs[node_id]`.
pub const DATA: &str = "data";

/// One value on a port. Both variants are cheap to clone: the payload is shared.
#[derive(Debug, Clone, PartialEq)]
pub enum PortValue {
    Audio(AudioBuffer),
    Data(Arc<Value>),
}

impl PortValue {
    pub fn data(value: Value) -> Self {
        PortValue::Data(Arc::new(value))
    }

    pub fn as_audio(&self) -> Option<&AudioBuffer> {
        match self {
            PortValue::Audio(a) => Some(a),
            PortValue::Data(_) => None,
        }
    }

    pub fn as_data(&self) -> Option<&Value> {
        match self {
            PortValue::Data(d) => Some(d),
            PortValue::Audio(_) => None,
        }
    }

    /// Bytes this value holds: the samples of audio, the serialised size of data.
    pub fn size_bytes(&self) -> u64 {
        match self {
            PortValue::Audio(a) => a.bytes().len() as u64,
            PortValue::Data(d) => json_size(d),
        }
    }

    /// Samples this value carries (0 for data).
    pub fn samples(&self) -> u64 {
        match self {
            PortValue::Audio(a) => a.num_samples() as u64,
            PortValue::Data(_) => 0,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            PortValue::Audio(_) => "audio",
            PortValue::Data(_) => "data",
        }
    }
}

/// Approximate heap bytes of a JSON value, counted without serialising it.
fn json_size(v: &Value) -> u64 {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(s) => s.len() as u64 + 8,
        Value::Array(a) => 8 + a.iter().map(json_size).sum::<u64>(),
        Value::Object(o) => 8 + o.iter().map(|(k, v)| k.len() as u64 + json_size(v)).sum::<u64>(),
    }
}

/// Why a port did not hold what a node needed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PortError {
    #[error("missing input port `{0}`")]
    Missing(String),
    #[error("port `{port}` carries {actual}, expected {expected}")]
    WrongKind { port: String, expected: &'static str, actual: &'static str },
    #[error("cannot merge port `{port}`: {source}")]
    Merge { port: String, source: AudioError },
}

/// A port name; the built-in ones are `'static` and never allocate.
pub type PortName = Cow<'static, str>;

/// The name of a port, borrowed from the built-in names when it is one of them so that cloning
/// it is free.
pub fn port_name(name: &str) -> PortName {
    const KNOWN: &[&str] = &[INPUT, OUTPUT, DATA, "segments", "left", "right"];
    match KNOWN.iter().find(|k| **k == name) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(name.to_owned()),
    }
}

/// Named values, used both for a node's inputs and for its outputs, in insertion order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ports {
    values: SmallVec<[(PortName, PortValue); 4]>,
}

pub type NodeInputs = Ports;
pub type NodeOutputs = Ports;

impl Ports {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ports holding only `output` audio.
    pub fn audio_output(buffer: AudioBuffer) -> Self {
        let mut p = Self::new();
        p.insert(OUTPUT, PortValue::Audio(buffer));
        p
    }

    /// Sets `port`, replacing any value it had.
    pub fn insert(&mut self, port: impl Into<PortName>, value: PortValue) {
        let port = port.into();
        match self.values.iter_mut().find(|(k, _)| *k == port) {
            Some(slot) => slot.1 = value,
            None => self.values.push((port, value)),
        }
    }

    pub fn with(mut self, port: impl Into<PortName>, value: PortValue) -> Self {
        self.insert(port, value);
        self
    }

    pub fn get(&self, port: &str) -> Option<&PortValue> {
        self.values.iter().find(|(k, _)| k == port).map(|(_, v)| v)
    }

    pub fn remove(&mut self, port: &str) -> Option<PortValue> {
        let i = self.values.iter().position(|(k, _)| k == port)?;
        Some(self.values.remove(i).1)
    }

    pub fn contains(&self, port: &str) -> bool {
        self.get(port).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &PortValue)> {
        self.values.iter().map(|(k, v)| (k.as_ref(), v))
    }

    pub fn ports(&self) -> impl Iterator<Item = &str> {
        self.values.iter().map(|(k, _)| k.as_ref())
    }

    /// The audio on `port`, or an error naming the port.
    pub fn audio(&self, port: &str) -> Result<&AudioBuffer, PortError> {
        match self.get(port) {
            Some(PortValue::Audio(a)) => Ok(a),
            Some(other) => Err(PortError::WrongKind { port: port.to_owned(), expected: "audio", actual: other.kind() }),
            None => Err(PortError::Missing(port.to_owned())),
        }
    }

    /// The audio on `port` if there is any; an error if the port carries data.
    pub fn optional_audio(&self, port: &str) -> Result<Option<&AudioBuffer>, PortError> {
        match self.get(port) {
            None => Ok(None),
            Some(_) => self.audio(port).map(Some),
        }
    }

    pub fn size_bytes(&self) -> u64 {
        self.values.iter().map(|(_, v)| v.size_bytes()).sum()
    }

    pub fn samples(&self) -> u64 {
        self.values.iter().map(|(_, v)| v.samples()).sum()
    }

    /// Appends `later` after `self`, port by port: audio is concatenated, JSON arrays are joined,
    /// text is joined with a space, a later `null` removes the port, other data is replaced by
    /// the later value. Used to join a node's `process` and `flush` outputs.
    pub fn append(&mut self, later: Ports) -> Result<(), PortError> {
        for (port, value) in later.values {
            let merged = match (self.remove(&port), value) {
                (None, v) => v,
                (Some(PortValue::Audio(a)), PortValue::Audio(b)) => PortValue::Audio(
                    a.concat(&b).map_err(|source| PortError::Merge { port: port.to_string(), source })?,
                ),
                (Some(PortValue::Data(a)), PortValue::Data(b)) => match (&*a, &*b) {
                    (Value::Array(x), Value::Array(y)) => {
                        PortValue::data(Value::Array(x.iter().chain(y).cloned().collect()))
                    }
                    // Text told in parts (a transcript from process, its end from flush) reads as one.
                    (Value::String(x), Value::String(y)) => PortValue::data(Value::String(
                        [x.as_str(), y.as_str()].into_iter().filter(|t| !t.is_empty()).collect::<Vec<_>>().join(" "),
                    )),
                    // A later null withdraws the value (a partial hypothesis that the end of the
                    // input closed), so the merged answer has the port only if it has a value.
                    (_, Value::Null) => continue,
                    _ => PortValue::Data(b),
                },
                (Some(_), v) => v,
            };
            self.values.push((port, merged));
        }
        Ok(())
    }
}

impl<K: Into<PortName>> FromIterator<(K, PortValue)> for Ports {
    fn from_iter<I: IntoIterator<Item = (K, PortValue)>>(iter: I) -> Self {
        let mut p = Ports::new();
        for (k, v) in iter {
            p.insert(k, v);
        }
        p
    }
}

impl IntoIterator for Ports {
    type Item = (PortName, PortValue);
    type IntoIter = smallvec::IntoIter<[(PortName, PortValue); 4]>;

    fn into_iter(self) -> Self::IntoIter {
        self.values.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn audio_accessor_names_the_port_and_the_kind() {
        let p = Ports::new().with("data", PortValue::data(json!({"a": 1})));
        assert_eq!(p.audio("input").unwrap_err().to_string(), "missing input port `input`");
        assert_eq!(p.audio("data").unwrap_err().to_string(), "port `data` carries data, expected audio");
    }

    #[test]
    fn a_later_null_withdraws_an_earlier_value() {
        let mut a = Ports::new().with("partial", PortValue::data(json!({"text": "hel"})));
        a.append(Ports::new().with("partial", PortValue::data(Value::Null))).unwrap();
        assert!(a.get("partial").is_none(), "withdrawn");
        let mut b = Ports::new();
        b.append(Ports::new().with("partial", PortValue::data(Value::Null))).unwrap();
        assert_eq!(b.get("partial").unwrap().as_data().unwrap(), &Value::Null, "nothing to withdraw: kept");
    }

    #[test]
    fn append_concatenates_audio_and_joins_arrays() {
        let mut a = Ports::audio_output(AudioBuffer::from_f32(vec![1.0], 8_000, 1))
            .with("segments", PortValue::data(json!([1])));
        let b = Ports::audio_output(AudioBuffer::from_f32(vec![2.0], 8_000, 1))
            .with("segments", PortValue::data(json!([2])))
            .with("extra", PortValue::data(json!("x")));
        a.append(b).unwrap();
        assert_eq!(&*a.audio(OUTPUT).unwrap().as_f32(), &[1.0, 2.0]);
        assert_eq!(a.get("segments").unwrap().as_data().unwrap(), &json!([1, 2]));
        assert_eq!(a.get("extra").unwrap().as_data().unwrap(), &json!("x"));
    }

    #[test]
    fn append_joins_text_with_a_space_and_skips_empty_parts() {
        let text = |t: &str| Ports::new().with("text", PortValue::data(json!(t)));
        let mut a = text("it was the best of times");
        a.append(text("it was the worst")).unwrap();
        assert_eq!(a.get("text").unwrap().as_data().unwrap(), &json!("it was the best of times it was the worst"));
        a.append(text("")).unwrap();
        assert_eq!(a.get("text").unwrap().as_data().unwrap(), &json!("it was the best of times it was the worst"));
    }

    #[test]
    fn size_counts_audio_bytes() {
        let p = Ports::audio_output(AudioBuffer::from_i16(vec![0; 10], 8_000, 1));
        assert_eq!(p.size_bytes(), 20);
        assert_eq!(p.samples(), 10);
    }
}
