//! Per-request resource limits: a request's `ResourceLimits` may lower or raise the server
//! defaults up to the server caps; asking for more than a cap is an error that names it.

use std::time::Duration;

use super::observe;
use super::status::ServiceError;
use crate::audio::AudioBuffer;
use crate::config::Limits;
use crate::proto;

/// The limits one execution runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    pub timeout: Duration,
    pub memory_bytes: u64,
    pub audio_samples: u64,
}

/// The requested value of one limit (0: the default), or the problem when it is over its cap.
fn pick(requested: u64, default: u64, cap: u64, cap_key: &'static str, unit: &str) -> Result<u64, String> {
    match requested {
        0 => Ok(default),
        r if r <= cap => Ok(r),
        r => {
            observe::limit_rejected(cap_key);
            Err(format!(
                "resource_limits.{cap_key} = {r} {unit} exceeds the server cap of {cap} {unit} ({cap_key}); ask for at most {cap}"
            ))
        }
    }
}

/// Resolves a request's limits against the server's defaults and caps. Every limit over its
/// cap is named in the error; its `limit` (metrics and context) is the first of them.
pub fn resolve(requested: Option<&proto::ResourceLimits>, limits: &Limits) -> Result<Effective, ServiceError> {
    let r = requested.cloned().unwrap_or_default();
    let timeout_ms = pick(
        r.max_timeout_ms,
        limits.default_timeout.as_millis() as u64,
        limits.max_timeout.as_millis() as u64,
        "max_timeout_ms",
        "ms",
    );
    let memory_bytes =
        pick(r.max_memory_bytes, limits.default_memory_bytes, limits.max_memory_bytes, "max_memory_bytes", "bytes");
    let audio_samples = pick(
        r.max_audio_samples,
        limits.default_audio_samples,
        limits.max_audio_samples,
        "max_audio_samples",
        "samples",
    );
    match (timeout_ms, memory_bytes, audio_samples) {
        (Ok(timeout_ms), Ok(memory_bytes), Ok(audio_samples)) => {
            Ok(Effective { timeout: Duration::from_millis(timeout_ms), memory_bytes, audio_samples })
        }
        (timeout, memory, samples) => {
            let over: Vec<(&'static str, String)> = [
                ("max_timeout_ms", timeout.err()),
                ("max_memory_bytes", memory.err()),
                ("max_audio_samples", samples.err()),
            ]
            .into_iter()
            .filter_map(|(key, problem)| Some((key, problem?)))
            .collect();
            let message = over.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("; ");
            Err(ServiceError::Limit { message, limit: over[0].0 })
        }
    }
}

/// Refuses a manifest with more nodes, or more connections, than the server builds.
pub fn check_manifest_size(m: &proto::PipelineManifest, limits: &Limits) -> Result<(), ServiceError> {
    let max_nodes = limits.max_pipeline_nodes;
    let max_connections = 4 * max_nodes;
    let too_many = if m.nodes.len() > max_nodes {
        Some(format!(
            "the manifest has {} nodes; this server builds at most {max_nodes} (max_pipeline_nodes)",
            m.nodes.len()
        ))
    } else if m.connections.len() > max_connections {
        Some(format!(
            "the manifest has {} connections; this server accepts at most {max_connections} (4 × max_pipeline_nodes)",
            m.connections.len()
        ))
    } else {
        None
    };
    match too_many {
        Some(message) => {
            observe::limit_rejected("max_pipeline_nodes");
            Err(ServiceError::Limit { message, limit: "max_pipeline_nodes" })
        }
        None => Ok(()),
    }
}

/// Refuses a buffer with more samples than the execution allows.
pub fn check_audio(
    buffer: &AudioBuffer,
    field: &(impl std::fmt::Display + ?Sized),
    limits: &Effective,
) -> Result<(), ServiceError> {
    let n = buffer.num_samples() as u64;
    if n > limits.audio_samples {
        observe::limit_rejected("max_audio_samples");
        return Err(ServiceError::Limit {
            message: format!(
                "{field} has {n} samples, over the limit of {} samples per buffer (max_audio_samples); split it or raise resource_limits.max_audio_samples",
                limits.audio_samples
            ),
            limit: "max_audio_samples",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn limits() -> Limits {
        Config::with(&[]).unwrap().limits
    }

    #[test]
    fn unset_fields_take_the_defaults() {
        let e = resolve(None, &limits()).unwrap();
        assert_eq!(
            e,
            Effective { timeout: Duration::from_secs(5), memory_bytes: 100 << 20, audio_samples: 10_000_000 }
        );
    }

    #[test]
    fn requests_may_lower_or_raise_up_to_the_cap() {
        let r = proto::ResourceLimits { max_timeout_ms: 30_000, max_memory_bytes: 1_000, max_audio_samples: 0 };
        let e = resolve(Some(&r), &limits()).unwrap();
        assert_eq!(e.timeout, Duration::from_secs(30));
        assert_eq!(e.memory_bytes, 1_000);
    }

    #[test]
    fn above_a_cap_names_the_cap() {
        let r = proto::ResourceLimits { max_timeout_ms: 60_000, ..Default::default() };
        let err = resolve(Some(&r), &limits()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "resource_limits.max_timeout_ms = 60000 ms exceeds the server cap of 30000 ms (max_timeout_ms); ask for at most 30000"
        );
        let r = proto::ResourceLimits { max_memory_bytes: 2 << 30, ..Default::default() };
        assert!(resolve(Some(&r), &limits()).unwrap_err().to_string().contains("(max_memory_bytes)"));
    }

    #[test]
    fn every_limit_above_its_cap_is_named() {
        let r = proto::ResourceLimits { max_timeout_ms: 60_000, max_memory_bytes: 0, max_audio_samples: 1 << 40 };
        let err = resolve(Some(&r), &limits()).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("resource_limits.max_timeout_ms = 60000 ms exceeds"), "{text}");
        assert!(text.contains("; resource_limits.max_audio_samples = 1099511627776 samples exceeds"), "{text}");
        assert!(!text.contains("max_memory_bytes"), "{text}");
        assert!(matches!(err, ServiceError::Limit { limit: "max_timeout_ms", .. }));
    }

    #[test]
    fn oversized_manifests_are_refused_naming_the_limit() {
        let mut m =
            proto::PipelineManifest { nodes: vec![proto::NodeManifest::default(); 4_097], ..Default::default() };
        let err = check_manifest_size(&m, &limits()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the manifest has 4097 nodes; this server builds at most 4096 (max_pipeline_nodes)"
        );
        m.nodes.truncate(10);
        assert!(check_manifest_size(&m, &limits()).is_ok());
        m.connections = vec![proto::Connection::default(); 4 * 4096 + 1];
        let err = check_manifest_size(&m, &limits()).unwrap_err();
        assert!(err.to_string().starts_with("the manifest has 16385 connections"), "{err}");
    }

    #[test]
    fn oversized_audio_is_refused() {
        let e = Effective { timeout: Duration::from_secs(1), memory_bytes: 1 << 20, audio_samples: 4 };
        let a = AudioBuffer::from_f32(vec![0.0; 5], 8_000, 1);
        let err = check_audio(&a, "audio_inputs[mic]", &e).unwrap_err();
        assert!(err.to_string().starts_with("audio_inputs[mic] has 5 samples, over the limit of 4"), "{err}");
        assert!(check_audio(&AudioBuffer::from_f32(vec![0.0; 4], 8_000, 1), "x", &e).is_ok());
    }
}
