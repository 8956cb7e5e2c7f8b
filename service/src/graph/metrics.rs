//! What an execution measures: per-node time, CPU, memory and samples, and the pipeline's peak
//! memory.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::nodes::{PortValue, Ports, Runtime};

/// How a node fared in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    Success,
    /// Not called: its inputs produced nothing in this run.
    Skipped,
}

/// Measurements of one node in one run.
#[derive(Debug, Clone)]
pub struct NodeReport {
    pub node_id: String,
    pub node_type: String,
    pub runtime: Runtime,
    pub status: NodeStatus,
    /// Time inside the node's calls, summed over attempts (backoff delays excluded).
    pub execution_time: Duration,
    /// CPU time of the node's calls, from the OS clock of the thread that ran them.
    pub cpu_time: Duration,
    /// Bytes held by the node's outputs.
    pub memory_bytes: u64,
    /// Samples (all channels) the node received.
    pub samples_processed: u64,
    pub attempts: u32,
    /// Node-specific figures, merged into `custom_metrics`.
    pub custom: Map<String, Value>,
}

impl NodeReport {
    /// The `custom_metrics` JSON object: always `runtime`, plus `attempts` and node figures.
    pub fn custom_metrics_json(&self) -> Value {
        let mut m = self.custom.clone();
        m.insert("runtime".into(), Value::from(self.runtime.name()));
        m.insert("attempts".into(), Value::from(self.attempts));
        m.insert("cpu_time_ms".into(), Value::from(self.cpu_time.as_secs_f64() * 1e3));
        Value::Object(m)
    }
}

/// The outputs one node contributes to the result.
#[derive(Debug, Clone)]
pub struct NodeOutput {
    pub node_id: String,
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
