//! Tests against the real embedded interpreter (the project's Python environment).

use std::sync::{Arc, Barrier};
use std::time::Duration;

use bytes::Bytes;
use numpy::{PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::worker::{JobError, Workers};
use super::*;
use crate::audio::{AudioBuffer, SampleFormat};
use crate::graph::{CircuitBreakers, Engine, Manifest, Mode, RequestShape, RunLimits, RuntimeHint};
use crate::nodes::{DATA, INPUT, OUTPUT, PortValue, Ports, Registry};

fn runtime() -> Arc<PythonRuntime> {
    PythonRuntime::start(None, 2, &[], &Default::default())
        .expect("the project's Python environment is set up (make venv)")
}

fn data_pointer(array: &Bound<'_, PyUntypedArray>) -> usize {
    array.getattr("ctypes").and_then(|c| c.getattr("data")).and_then(|d| d.extract()).unwrap()
}

#[test]
fn numpy_views_point_at_the_buffer_and_are_read_only() {
    runtime();
    let audio = AudioBuffer::from_f32((0..960).map(|i| i as f32 / 960.0).collect(), 48_000, 2);
    Python::attach(|py| {
        let array = bridge::array(py, &audio).unwrap();
        assert_eq!(data_pointer(&array), audio.bytes().as_ptr() as usize, "no copy");
        assert_eq!(array.shape(), [480, 2]);
        let writeable: bool = array.getattr("flags").unwrap().getattr("writeable").unwrap().extract().unwrap();
        assert!(!writeable);
        assert!(array.call_method1("__setitem__", (0, 1.0)).is_err(), "Python cannot write into the server's buffer");
        assert!(array.call_method1("setflags", (true,)).is_err(), "nor make the view writeable again");
        let first: f32 = array.call_method1("__getitem__", ((1, 0),)).unwrap().extract().unwrap();
        assert_eq!(first, 2.0 / 960.0);
    });
}

#[test]
fn misaligned_integer_buffers_are_copied_once() {
    runtime();
    let mut raw = vec![0u8];
    for v in [1i16, -2, 3] {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    let audio = AudioBuffer::from_wire(Bytes::from(raw).slice(1..), SampleFormat::I16, 8_000, 1, 3).unwrap();
    Python::attach(|py| {
        let array = bridge::array(py, &audio).unwrap();
        let values: Vec<i16> = array.call_method0("ravel").unwrap().call_method0("tolist").unwrap().extract().unwrap();
        assert_eq!(values, [1, -2, 3]);
    });
}

/// Starts one job per worker (the shared runtime has two) that, with the GIL released, waits at
/// each of `barriers` in turn: jobs that can only all finish with every worker inside one.
fn on_each_worker(workers: &Arc<Workers>, barriers: &[Arc<Barrier>]) -> Vec<JoinHandle<Result<(), JobError>>> {
    assert_eq!(workers.count(), 2);
    (0..workers.count())
        .map(|_| {
            let (w, barriers) = (workers.clone(), barriers.to_vec());
            tokio::spawn(async move {
                w.run(&CancellationToken::new(), move |py| {
                    py.detach(|| {
                        for b in &barriers {
                            b.wait();
                        }
                    })
                })
                .await
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_is_lost_to_its_caller_and_the_workers_serve_on() {
    let rt = runtime();
    let none = CancellationToken::new();
    let lost = rt.workers.run(&none, |_| -> u32 { panic!("a job that panics") }).await;
    assert_eq!(lost.unwrap_err(), JobError::Lost);
    // Two jobs that can only finish together, so both workers must still be taking jobs.
    for job in on_each_worker(&rt.workers, &[Arc::new(Barrier::new(2))]) {
        let done = tokio::time::timeout(Duration::from_secs(30), job).await;
        assert!(matches!(done, Ok(Ok(Ok(())))), "every worker still takes jobs: {done:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_caller_gave_up_while_it_was_queued_is_not_run() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let rt = runtime();
    let workers = rt.workers.clone();
    // Both workers held inside a job, so the next job queues.
    let (entered, release) = (Arc::new(Barrier::new(3)), Arc::new(Barrier::new(3)));
    let held = on_each_worker(&workers, &[entered.clone(), release.clone()]);
    let wait = |b: Arc<Barrier>| {
        tokio::task::spawn_blocking(move || {
            b.wait();
        })
    };
    wait(entered).await.unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let cancel = CancellationToken::new();
    let queued = {
        let (w, ran, cancel) = (workers.clone(), ran.clone(), cancel.clone());
        tokio::spawn(async move { w.run(&cancel, move |_| ran.fetch_add(1, Ordering::SeqCst)).await })
    };
    cancel.cancel();
    assert_eq!(queued.await.unwrap().unwrap_err(), JobError::Cancelled);
    wait(release).await.unwrap();
    for h in held {
        h.await.unwrap().unwrap();
    }
    // Both workers inside one more job each: the cancelled job, queued before these, is behind
    // them both, taken and skipped.
    let after = Arc::new(Barrier::new(3));
    let last = on_each_worker(&workers, std::slice::from_ref(&after));
    wait(after).await.unwrap();
    for h in last {
        h.await.unwrap().unwrap();
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the job whose caller gave up never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_python_loop_is_interrupted_and_the_worker_serves_again() {
    let rt = runtime();
    let cancel = CancellationToken::new();
    let started = Arc::new(tokio::sync::Notify::new());
    let job = {
        let (cancel, started) = (cancel.clone(), started.clone());
        let workers = rt.workers.clone();
        tokio::spawn(async move {
            workers
                .run(&cancel, move |py| {
                    started.notify_one();
                    py.run(c"while True:\n    pass\n", None, None).map_err(|e| e.to_string())
                })
                .await
        })
    };
    started.notified().await;
    cancel.cancel();
    assert_eq!(job.await.unwrap().unwrap_err(), JobError::Cancelled);
    // Every worker takes jobs again (the interrupted one included), with no stray exception.
    for _ in 0..4 {
        let r = rt
            .workers
            .run(&CancellationToken::new(), |py| {
                py.eval(c"sum(range(10))", None, None).unwrap().extract::<i64>().unwrap()
            })
            .await;
        assert_eq!(r.unwrap(), 45);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_nodes_run_through_the_executor_with_their_errors_classified() {
    let mut registry = Registry::builtin();
    registry.attach_foreign(runtime()).expect("the twins agree with the native nodes");
    let engine = Engine::new(registry, CircuitBreakers::default());
    let mut m = Manifest::new("py").node("g", "GainNode", r#"{"gain": 0.5}"#);
    m.nodes[0].runtime = RuntimeHint::CPython;
    let shape = RequestShape { audio_inputs: Some(["g".to_owned()].into()), ..RequestShape::default() };
    let mut p = engine.build(&m, &shape).await.unwrap();
    let input = Ports::new().with(INPUT, PortValue::Audio(AudioBuffer::from_i16(vec![1_000, -1_000, 7], 8_000, 1)));
    let out = p
        .run([("g".to_owned(), input)].into(), Mode::Once, RunLimits::default(), &CancellationToken::new())
        .await
        .unwrap();
    let audio = out.outputs[0].ports.audio(OUTPUT).unwrap();
    assert_eq!(audio.i16_slice().unwrap(), &[500, -500, 4], "ties to even: 3.5 -> 4");
    assert_eq!(out.nodes[0].runtime, crate::nodes::Runtime::Python);
    assert!(out.nodes[0].cpu_time > Duration::ZERO);

    let only_data = Ports::new().with(DATA, PortValue::data(serde_json::json!({"not": "audio"})));
    let err = p
        .run([("g".to_owned(), only_data)].into(), Mode::Once, RunLimits::default(), &CancellationToken::new())
        .await
        .unwrap_err();
    match err {
        crate::graph::ExecError::Node { source, attempts, .. } => {
            assert_eq!(source.kind, crate::nodes::NodeErrorKind::InvalidInput, "{source:?}");
            assert!(source.message.contains("missing input port `input`"), "{}", source.message);
            assert!(source.stack_trace.as_deref().unwrap_or_default().contains("Traceback"), "{source:?}");
            assert_eq!(attempts, 1);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_nodes_are_declared_and_checked_like_native_ones() {
    let rt = runtime();
    let bandpass = rt.declarations().into_iter().find(|d| d.node_type == "BandpassFilterNode").unwrap();
    let params = serde_json::json!({"low_hz": 100, "hihg_hz": 200}).as_object().unwrap().clone();
    let errors = bandpass.check(&params).unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|t| t.contains("parameter `hihg_hz` is not accepted (accepted: high_hz, low_hz, order)")),
        "{text:?}"
    );
    assert!(text.iter().any(|t| t.contains("parameter `high_hz` is required")), "{text:?}");
    // A rule between parameters is declared (`Above`), so the declaration checks it.
    let crossed = serde_json::json!({"low_hz": 300, "high_hz": 200}).as_object().unwrap().clone();
    let errors = bandpass.check(&crossed).unwrap_err();
    assert_eq!(errors[0].to_string(), "parameter `high_hz` must be above `low_hz` (300), got 200");
    // What only the node can check (whether espeak-ng has a voice) comes back from its __init__.
    let tts = rt.declarations().into_iter().find(|d| d.node_type == "TextToSpeechNode").unwrap();
    let voice = serde_json::json!({"voice": "xx-nowhere"}).as_object().unwrap().clone();
    let errors = rt.create("TextToSpeechNode", "tts", &tts.check(&voice).unwrap()).await.err().unwrap();
    assert_eq!(errors[0].param, "voice", "{errors:?}");
}

/// Jobs submitted from many tasks at once, quick ones and ones that block their worker, all
/// complete, whether the workers were busy, spinning for the next job or asleep when each came
/// (a lost wake-up would leave this waiting until its time limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_is_taken_whoever_is_awake() {
    let rt = runtime();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2000u64 {
        let workers = rt.workers.clone();
        tasks.spawn(async move {
            workers
                .run(&CancellationToken::new(), move |py| {
                    if i % 100 == 0 {
                        // Holds the worker (GIL released) while the others queue up.
                        py.detach(|| std::thread::sleep(Duration::from_millis(2)));
                    }
                    i
                })
                .await
        });
    }
    let mut sum = 0;
    let all = async {
        while let Some(done) = tasks.join_next().await {
            sum += done.unwrap().unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all).await.expect("every job ran");
    assert_eq!(sum, (0..2000u64).sum::<u64>());
}
