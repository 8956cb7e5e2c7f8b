//! What an execution measures: per-node time, CPU, memory and samples, and the pipeline's peak
//! memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::nodes::{Figure, Figures, PortValue, Ports, Runtime};

/// How a node fared in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    Success,
    /// Not called: its inputs produced nothing in this run.
    Skipped,
    /// Called, and it failed (its report reaches the node-time metrics of a failed run only).
    Failed,
}

/// Measurements of one node in one run.
#[derive(Debug, Clone)]
pub struct NodeReport {
    pub node_id: Arc<str>,
    pub node_type: Arc<str>,
    pub runtime: Runtime,
    pub status: NodeStatus,
    /// Time inside the node's calls, summed over attempts (backoff delays excluded).
    pub execution_time: Duration,
    /// CPU time of the node's calls: the thread CPU clock where a call ran on the blocking pool
    /// or a Python worker, the wall time of a light native call (which runs without blocking).
    pub cpu_time: Duration,
    /// Bytes held by the node's outputs.
    pub memory_bytes: u64,
    /// Samples (all channels) the node received.
    pub samples_processed: u64,
    pub attempts: u32,
    /// Figures a Python node reported, merged into `custom_metrics`.
    pub custom: Map<String, Value>,
    /// Figures a native node reported, merged into `custom_metrics`.
    pub figures: Figures,
}

impl NodeReport {
    /// The `custom_metrics` JSON object: the node's own figures, then always `runtime`,
    /// `attempts` and `cpu_time_ms`. It serialises without being built as a JSON value.
    pub fn custom_metrics(&self) -> impl serde::Serialize + '_ {
        CustomMetrics(self)
    }

    /// [`NodeReport::custom_metrics`] as a JSON value.
    pub fn custom_metrics_json(&self) -> Value {
        serde_json::to_value(CustomMetrics(self)).unwrap_or_default()
    }
}

/// Serialises a report's `custom_metrics` object. A node figure named like one of the
/// report's own (`runtime`, `attempts`, `cpu_time_ms`) takes the report's value in its place,
/// as inserting into a JSON object would.
struct CustomMetrics<'a>(&'a NodeReport);

impl serde::Serialize for CustomMetrics<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let r = self.0;
        let own = [
            ("runtime", Figure::Name(r.runtime.name())),
            ("attempts", Figure::Count(r.attempts.into())),
            ("cpu_time_ms", Figure::Real(r.cpu_time.as_secs_f64() * 1e3)),
        ];
        let own_value = |name: &str| own.iter().find(|(n, _)| *n == name).map(|(_, f)| *f);
        let mut map = s.serialize_map(None)?;
        for (name, value) in &r.custom {
            match own_value(name) {
                Some(f) => map.serialize_entry(name, &f)?,
                None => map.serialize_entry(name, value)?,
            }
        }
        for (name, figure) in &r.figures {
            map.serialize_entry(name, &own_value(name).unwrap_or(*figure))?;
        }
        for (name, figure) in &own {
            if !r.custom.contains_key(*name) && !r.figures.iter().any(|(n, _)| n == name) {
                map.serialize_entry(name, figure)?;
            }
        }
        map.end()
    }
}

/// The outputs one node contributes to the result.
#[derive(Debug, Clone)]
pub struct NodeOutput {
    pub node_id: Arc<str>,
    pub ports: Ports,
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Outputs of sinks and requested nodes (all ports), and unconsumed data ports of the others.
    pub outputs: Vec<NodeOutput>,
    /// One report per node considered, in execution order.
    pub nodes: Vec<NodeReport>,
    pub wall_time: Duration,
    pub cpu_time: Duration,
    pub peak_memory_bytes: u64,
}

/// CPU time consumed so far by the calling thread.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_THREAD_CPUTIME_ID is always supported
    // on Linux; on failure the zeroed value is returned.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Bytes held by the values a pipeline keeps alive. A buffer shared by several ports (fan-out,
/// pass-through) is counted once, however many ports hold it.
#[derive(Debug, Default)]
pub struct MemoryTracker {
    refs: HashMap<(usize, usize), u32>,
    live: u64,
    peak: u64,
}

impl MemoryTracker {
    fn key(v: &PortValue) -> ((usize, usize), u64) {
        match v {
            PortValue::Audio(a) => ((a.bytes().as_ptr() as usize, a.bytes().len()), a.bytes().len() as u64),
            PortValue::Data(d) => ((std::sync::Arc::as_ptr(d) as usize, 0), v.size_bytes()),
        }
    }

    pub fn hold(&mut self, ports: &Ports) {
        for (_, v) in ports.iter() {
            let (key, size) = Self::key(v);
            let count = self.refs.entry(key).or_insert(0);
            if *count == 0 {
                self.live += size;
            }
            *count += 1;
        }
        self.peak = self.peak.max(self.live);
    }

    pub fn release(&mut self, ports: &Ports) {
        for (_, v) in ports.iter() {
            let (key, size) = Self::key(v);
            if let Some(count) = self.refs.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    self.refs.remove(&key);
                    self.live -= size;
                }
            }
        }
    }

    /// Forgets every value, keeping the table's capacity.
    pub fn reset(&mut self) {
        self.refs.clear();
        self.live = 0;
        self.peak = 0;
    }

    pub fn live(&self) -> u64 {
        self.live
    }

    pub fn peak(&self) -> u64 {
        self.peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::AudioBuffer;
    use crate::nodes::OUTPUT;

    #[test]
    fn shared_buffers_are_counted_once() {
        let a = AudioBuffer::from_f32(vec![0.0; 100], 8_000, 1);
        let p1 = Ports::audio_output(a.clone());
        let p2 = Ports::new().with("copy", PortValue::Audio(a));
        let mut m = MemoryTracker::default();
        m.hold(&p1);
        m.hold(&p2);
        assert_eq!(m.live(), 400);
        m.release(&p1);
        assert_eq!(m.live(), 400, "still held by p2");
        m.release(&p2);
        assert_eq!(m.live(), 0);
        assert_eq!(m.peak(), 400);
    }

    #[test]
    fn distinct_buffers_add_up() {
        let mut m = MemoryTracker::default();
        m.hold(&Ports::audio_output(AudioBuffer::from_f32(vec![0.0; 10], 8_000, 1)));
        m.hold(&Ports::new().with(OUTPUT, PortValue::Audio(AudioBuffer::from_i16(vec![0; 10], 8_000, 1))));
        assert_eq!(m.live(), 60);
    }

    #[test]
    fn thread_cpu_time_advances_with_work() {
        let t0 = thread_cpu_time();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        assert!(thread_cpu_time() > t0);
    }
}
