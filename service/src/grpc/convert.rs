//! Conversions between `remotemedia.v1` messages and the executor's types.
//!
//! Audio never gets copied here: request samples stay in the request's `Bytes`, and result
//! samples go out as the node's own buffers.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::audio::{AudioBuffer, SampleFormat};
use crate::graph::{
    Backoff, Edge, Manifest, ManifestNode, NodeReport, NodeStatus, PipelineConfig, RetryPolicy, RunOutput, RuntimeHint,
    Violation,
};
use crate::nodes::{CatalogueEntry, OUTPUT, PortKind, PortSpec, PortValue, Ports, Runtime};
use crate::proto;

/// Converts a wire manifest. Values the executor must check (retry policy bounds) are checked
/// here and returned as violations alongside the manifest.
pub fn manifest_from_proto(m: &proto::PipelineManifest) -> (Manifest, Vec<Violation>) {
    let mut violations = Vec::new();
    let nodes = m
        .nodes
        .iter()
        .map(|n| ManifestNode {
            id: n.id.clone(),
            node_type: n.node_type.clone(),
            params: n.params.clone(),
            runtime: runtime_hint(n.runtime_hint),
        })
        .collect();
    let connections = m
        .connections
        .iter()
        .map(|c| {
            let e = Edge::new(c.from.clone(), c.to.clone());
            let output_key = if c.output_key.is_empty() { e.output_key.clone() } else { c.output_key.clone() };
            let input_key = if c.input_key.is_empty() { e.input_key.clone() } else { c.input_key.clone() };
            e.ports(output_key, input_key)
        })
        .collect();
    let config = m.config.as_ref().map(|c| pipeline_config(c, &mut violations)).unwrap_or_default();
    let manifest = Manifest {
        version: m.version.clone(),
        name: m.metadata.as_ref().map(|md| md.name.clone()).unwrap_or_default(),
        nodes,
        connections,
        config,
    };
    (manifest, violations)
}

fn runtime_hint(value: i32) -> RuntimeHint {
    match proto::RuntimeHint::try_from(value) {
        Ok(proto::RuntimeHint::Unspecified | proto::RuntimeHint::Auto) => RuntimeHint::Auto,
        Ok(proto::RuntimeHint::Rust) => RuntimeHint::Rust,
        Ok(proto::RuntimeHint::Cpython) => RuntimeHint::CPython,
        Ok(proto::RuntimeHint::Rustpython) => RuntimeHint::Unsupported("RUNTIME_HINT_RUSTPYTHON"),
        Ok(proto::RuntimeHint::CpythonWasm) => RuntimeHint::Unsupported("RUNTIME_HINT_CPYTHON_WASM"),
        Err(_) => RuntimeHint::Unsupported("an unknown RuntimeHint value"),
    }
}

/// Most retries a pipeline may ask for.
pub const MAX_RETRIES: u32 = 10;

fn pipeline_config(c: &proto::PipelineConfig, violations: &mut Vec<Violation>) -> PipelineConfig {
    let defaults = PipelineConfig::default();
    let mut retry = defaults.retry;
    if let Some(r) = &c.retry {
        let max_retries = r.max_retries.unwrap_or(retry.max_retries);
        if max_retries > MAX_RETRIES {
            violations.push(Violation::new(
                "config.retry.max_retries",
                format!("config.retry.max_retries must be at most {MAX_RETRIES}, got {max_retries}"),
            ));
        }
        let initial = Duration::from_millis(r.initial_delay_ms.unwrap_or(100));
        if initial > Duration::from_secs(30) {
            violations.push(Violation::new(
                "config.retry.initial_delay_ms",
                format!("config.retry.initial_delay_ms must be at most 30000, got {}", initial.as_millis()),
            ));
        }
        let multiplier = r.multiplier.unwrap_or(2.0);
        if !(multiplier.is_finite() && (1.0..=10.0).contains(&multiplier)) {
            violations.push(Violation::new(
                "config.retry.multiplier",
                format!("config.retry.multiplier must be between 1 and 10, got {multiplier}"),
            ));
        }
        let backoff = match proto::retry_policy::Backoff::try_from(r.backoff) {
            Ok(proto::retry_policy::Backoff::Unspecified | proto::retry_policy::Backoff::Exponential) => {
                Backoff::Exponential { initial, multiplier: multiplier.clamp(1.0, 10.0) }
            }
            Ok(proto::retry_policy::Backoff::Fixed) => Backoff::Fixed(initial),
            Ok(proto::retry_policy::Backoff::None) => Backoff::None,
            Err(_) => {
                violations.push(Violation::new(
                    "config.retry.backoff",
                    format!("config.retry.backoff {} is not a known strategy", r.backoff),
                ));
                Backoff::None
            }
        };
        retry = RetryPolicy { max_retries: max_retries.min(MAX_RETRIES), backoff };
    }
    PipelineConfig {
        enable_metrics: c.enable_metrics.unwrap_or(defaults.enable_metrics),
        retry,
        breaker_threshold: c.circuit_breaker_threshold.unwrap_or(defaults.breaker_threshold),
    }
}

/// Turns a wire buffer into an executor buffer, without copying the samples. `field` names the
/// buffer in errors (`audio_inputs[mic]`); it is formatted only when there is one.
pub fn audio_from_proto(
    b: &proto::AudioBuffer,
    field: &(impl std::fmt::Display + ?Sized),
) -> Result<AudioBuffer, Violation> {
    let format = match proto::AudioFormat::try_from(b.format) {
        Ok(proto::AudioFormat::F32) => SampleFormat::F32,
        Ok(proto::AudioFormat::I16) => SampleFormat::I16,
        Ok(proto::AudioFormat::I32) => SampleFormat::I32,
        Ok(proto::AudioFormat::Unspecified) => {
            return Err(Violation::new(
                format!("{field}.format"),
                format!(
                    "{field}.format is AUDIO_FORMAT_UNSPECIFIED; set AUDIO_FORMAT_F32, AUDIO_FORMAT_I16 or AUDIO_FORMAT_I32"
                ),
            ));
        }
        Err(_) => {
            return Err(Violation::new(
                format!("{field}.format"),
                format!("{field}.format {} is not a known AudioFormat", b.format),
            ));
        }
    };
    AudioBuffer::from_wire(b.samples.clone(), format, b.sample_rate, b.channels, b.num_samples)
        .map_err(|e| Violation::new(field.to_string(), format!("{field}: {e}")))
}

pub fn audio_to_proto(a: &AudioBuffer) -> proto::AudioBuffer {
    proto::AudioBuffer {
        samples: a.bytes().clone(),
        sample_rate: a.sample_rate(),
        channels: a.channels(),
        format: match a.format() {
            SampleFormat::F32 => proto::AudioFormat::F32,
            SampleFormat::I16 => proto::AudioFormat::I16,
            SampleFormat::I32 => proto::AudioFormat::I32,
        } as i32,
        num_samples: a.num_samples() as u64,
    }
}

/// Parses `data_inputs[node]` JSON text.
pub fn data_from_proto(text: &str, node: &str) -> Result<Value, Violation> {
    crate::json::parse(text).map_err(|e| {
        let node = crate::text::quoted(node);
        Violation::new(
            format!("data_inputs[{node}]"),
            if e.is_data() {
                format!("data_inputs[{node}] has a {e}")
            } else {
                format!("data_inputs[{node}] is not valid JSON: {e}")
            },
        )
    })
}

/// Builds an `ExecutionResult` from a run: `output` audio into `audio_outputs`, other ports as
/// a JSON object in `data_outputs`, per-node results and metrics.
pub fn result_to_proto(
    out: &RunOutput,
    enable_metrics: bool,
    wall_time: Duration,
    serialization_time: Duration,
) -> proto::ExecutionResult {
    let mut audio_outputs = HashMap::new();
    let mut data_outputs = HashMap::new();
    for node in &out.outputs {
        let mut data = Map::new();
        for (port, value) in node.ports.iter() {
            match value {
                PortValue::Audio(a) if port == OUTPUT => {
                    audio_outputs.insert(node.node_id.to_string(), audio_to_proto(a));
                }
                PortValue::Audio(a) => {
                    data.insert(port.to_owned(), audio_summary(a));
                }
                PortValue::Data(d) => {
                    data.insert(port.to_owned(), (**d).clone());
                }
            }
        }
        if !data.is_empty() {
            data_outputs.insert(node.node_id.to_string(), Value::Object(data).to_string());
        }
    }
    let node_results = out.nodes.iter().map(|r| node_result(r, out)).collect();
    let node_metrics = if enable_metrics {
        out.nodes
            .iter()
            .filter(|r| r.status == NodeStatus::Success)
            .map(|r| (r.node_id.to_string(), node_metrics(r)))
            .collect()
    } else {
        HashMap::new()
    };
    proto::ExecutionResult {
        audio_outputs,
        data_outputs,
        metrics: Some(proto::ExecutionMetrics {
            wall_time_ms: ms(wall_time),
            cpu_time_ms: ms(out.cpu_time),
            memory_used_bytes: out.peak_memory_bytes,
            node_metrics,
            serialization_time_ms: ms(serialization_time),
        }),
        node_results,
        status: proto::ExecutionStatus::Success as i32,
        sequence: 0,
    }
}

fn audio_summary(a: &AudioBuffer) -> Value {
    json!({
        "kind": "audio",
        "sample_rate": a.sample_rate(),
        "channels": a.channels(),
        "format": a.format().name(),
        "num_samples": a.num_samples(),
    })
}

fn node_result(r: &NodeReport, out: &RunOutput) -> proto::NodeResult {
    let status = match r.status {
        NodeStatus::Success => proto::NodeStatus::Success,
        NodeStatus::Skipped => proto::NodeStatus::Skipped,
        NodeStatus::Failed => proto::NodeStatus::Failed,
    };
    let ports = out.outputs.iter().find(|o| o.node_id == r.node_id).map(|o| &o.ports);
    let metadata = OutputMetadata { node_type: &r.node_type, runtime: r.runtime.name(), outputs: PortSummaries(ports) };
    proto::NodeResult {
        node_id: r.node_id.to_string(),
        status: status as i32,
        error: None,
        output_metadata: crate::json::to_text(&metadata),
    }
}

/// `NodeResult.output_metadata`, serialised straight to text: building it as a JSON value
/// took about twenty allocations per node, on every stream chunk.
#[derive(serde::Serialize)]
struct OutputMetadata<'a> {
    node_type: &'a str,
    runtime: &'static str,
    outputs: PortSummaries<'a>,
}

/// Each output port's summary by port name: audio as [`audio_summary`] describes it, data as
/// `{"kind": "data"}`.
struct PortSummaries<'a>(Option<&'a Ports>);

impl serde::Serialize for PortSummaries<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        #[serde(tag = "kind", rename_all = "lowercase")]
        enum Summary {
            Audio { sample_rate: u32, channels: u32, format: &'static str, num_samples: usize },
            Data {},
        }
        let summary = |v: &PortValue| match v {
            PortValue::Audio(a) => Summary::Audio {
                sample_rate: a.sample_rate(),
                channels: a.channels(),
                format: a.format().name(),
                num_samples: a.num_samples(),
            },
            PortValue::Data(_) => Summary::Data {},
        };
        s.collect_map(self.0.into_iter().flat_map(|p| p.iter()).map(|(port, v)| (port, summary(v))))
    }
}

fn node_metrics(r: &NodeReport) -> proto::NodeMetrics {
    proto::NodeMetrics {
        execution_time_ms: ms(r.execution_time),
        memory_bytes: r.memory_bytes,
        samples_processed: r.samples_processed,
        custom_metrics: crate::json::to_text(&r.custom_metrics()),
    }
}

/// Milliseconds with microsecond precision.
pub fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1_000.0
}

/// A catalogue entry as `GetVersion` serves it.
pub fn node_type_info(entry: &CatalogueEntry) -> proto::NodeTypeInfo {
    let s = &entry.spec;
    let ports = |ports: &[PortSpec]| {
        ports
            .iter()
            .map(|p| proto::PortInfo {
                name: p.name.clone(),
                kind: match p.kind {
                    PortKind::Audio => proto::PortKind::Audio,
                    PortKind::Data => proto::PortKind::Data,
                } as i32,
                description: p.description.clone(),
            })
            .collect()
    };
    proto::NodeTypeInfo {
        name: s.node_type.clone(),
        aliases: s.aliases.clone(),
        description: s.description.clone(),
        params_schema: s.params_schema().to_string(),
        inputs: ports(&s.inputs),
        outputs: ports(&s.outputs),
        runtimes: entry
            .runtimes
            .iter()
            .map(|r| match r {
                Runtime::Rust => proto::RuntimeHint::Rust,
                Runtime::Python => proto::RuntimeHint::Cpython,
            } as i32)
            .collect(),
        details: s.details.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn connections_default_their_ports() {
        let m = proto::PipelineManifest {
            version: "v1".into(),
            connections: vec![proto::Connection { from: "a".into(), to: "b".into(), ..Default::default() }],
            ..Default::default()
        };
        let (manifest, v) = manifest_from_proto(&m);
        assert!(v.is_empty());
        assert_eq!(manifest.connections[0], Edge::new("a", "b"));
        assert_eq!(manifest.config, PipelineConfig::default());
    }

    #[test]
    fn runtime_hints_map_and_unsupported_ones_are_named() {
        assert_eq!(runtime_hint(proto::RuntimeHint::Rust as i32), RuntimeHint::Rust);
        assert_eq!(runtime_hint(0), RuntimeHint::Auto);
        assert_eq!(runtime_hint(1), RuntimeHint::Unsupported("RUNTIME_HINT_RUSTPYTHON"));
        assert_eq!(runtime_hint(3), RuntimeHint::Unsupported("RUNTIME_HINT_CPYTHON_WASM"));
    }

    #[test]
    fn retry_config_defaults_and_bounds() {
        let mut v = Vec::new();
        let c = pipeline_config(
            &proto::PipelineConfig {
                retry: Some(proto::RetryPolicy { max_retries: Some(0), ..Default::default() }),
                ..Default::default()
            },
            &mut v,
        );
        assert!(v.is_empty());
        assert_eq!(c.retry.max_retries, 0, "an explicit 0 disables retries");
        assert!(c.enable_metrics, "unset enable_metrics means true");
        assert_eq!(c.breaker_threshold, 5);

        pipeline_config(
            &proto::PipelineConfig {
                retry: Some(proto::RetryPolicy {
                    max_retries: Some(99),
                    multiplier: Some(f64::NAN),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &mut v,
        );
        let fields: Vec<&str> = v.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(fields, ["config.retry.max_retries", "config.retry.multiplier"]);
    }

    #[test]
    fn audio_round_trips_without_copying() {
        let samples = Bytes::from(vec![0u8; 8]);
        let ptr = samples.as_ptr();
        let b = proto::AudioBuffer {
            samples,
            sample_rate: 16_000,
            channels: 1,
            format: proto::AudioFormat::I16 as i32,
            num_samples: 4,
        };
        let a = audio_from_proto(&b, "audio_inputs[x]").unwrap();
        assert_eq!(a.bytes().as_ptr(), ptr);
        assert_eq!(audio_to_proto(&a), b);
    }

    #[test]
    fn bad_audio_names_the_field() {
        let b = proto::AudioBuffer {
            samples: Bytes::from(vec![0u8; 6]),
            sample_rate: 16_000,
            channels: 1,
            format: 1,
            num_samples: 2,
        };
        let v = audio_from_proto(&b, "audio_inputs[mic]").unwrap_err();
        assert_eq!(v.field, "audio_inputs[mic]");
        assert!(v.message.starts_with("audio_inputs[mic]: samples holds 6 bytes but num_samples 2"), "{}", v.message);
        let unspecified = proto::AudioBuffer { format: 0, ..b };
        let v = audio_from_proto(&unspecified, "audio_inputs[mic]").unwrap_err();
        assert!(v.message.contains("AUDIO_FORMAT_UNSPECIFIED"), "{}", v.message);
    }
}
