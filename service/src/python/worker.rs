//! Dedicated threads that run Python, fed by a channel.
//!
//! Async callers hand a job to the pool and await its result; no reactor thread ever holds the
//! GIL. A job can be interrupted while it runs: the canceller attaches to the interpreter and
//! raises `remotemedia_nodes.Cancelled` in the worker's thread (`PyThreadState_SetAsyncExc`),
//! which stops pure-Python loops at their next bytecode. The worker then clears any such
//! exception left over before it takes the next job.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use pyo3::ffi;
use pyo3::prelude::*;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

type Work = Box<dyn FnOnce(Python<'_>) + Send>;

struct Job {
    id: u64,
    work: Work,
}

/// What one worker is doing, readable by a canceller.
#[derive(Default)]
struct Slot {
    /// The worker's Python thread id.
    thread: AtomicU64,
    /// The job it is running (0: none).
    current: AtomicU64,
}

/// How long a job is expected to run, which decides whether its caller spins for the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Likely done within [`CALLER_SPIN`]: poll for the result before sleeping.
    Quick,
    /// Longer than [`CALLER_SPIN`]: sleep until the result arrives.
    Slow,
}

impl Expect {
    /// What a job that last took `took` is expected to take next time.
    pub fn after(took: Duration) -> Self {
        if took <= CALLER_SPIN { Expect::Quick } else { Expect::Slow }
    }
}

/// Why a job gave no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobError {
    /// Cancelled (or timed out) while queued or running.
    Cancelled,
    /// The worker went away (the job panicked).
    Lost,
}

pub struct Workers {
    tx: Sender<Job>,
    slots: Vec<Arc<Slot>>,
    next_id: AtomicU64,
    cancelled: Py<PyAny>,
}

impl Workers {
    /// Starts `count` worker threads. `cancelled` is the exception class raised to interrupt.
    pub fn start(count: usize, cancelled: Py<PyAny>) -> Arc<Self> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let slots: Vec<Arc<Slot>> = (0..count.max(1)).map(|_| Arc::new(Slot::default())).collect();
        for (i, slot) in slots.iter().enumerate() {
            let (rx, slot) = (rx.clone(), slot.clone());
            std::thread::Builder::new()
                .name(format!("python-{i}"))
                .spawn(move || run_worker(&rx, &slot))
                .expect("the OS can start a worker thread");
        }
        Arc::new(Self { tx, slots, next_id: AtomicU64::new(1), cancelled })
    }

    pub fn count(&self) -> usize {
        self.slots.len()
    }

    /// Runs `f` on a worker and awaits its result. If `cancel` fires (or this future is dropped)
    /// while the job runs, the job is interrupted and this returns at once; the job itself ends
    /// when its Python code next runs a bytecode (callers that must not overlap jobs hold a lock
    /// inside `f`).
    pub async fn run<R: Send + 'static>(
        self: &Arc<Self>,
        cancel: &CancellationToken,
        f: impl FnOnce(Python<'_>) -> R + Send + 'static,
    ) -> Result<R, JobError> {
        self.run_expecting(Expect::Quick, cancel, f).await
    }

    /// [`Workers::run`] for a caller that knows how long its jobs take: a [`Expect::Slow`] job
    /// (a model inference of milliseconds) is awaited asleep from the start, since spinning
    /// for its result would only burn [`CALLER_SPIN`] of CPU per call.
    pub async fn run_expecting<R: Send + 'static>(
        self: &Arc<Self>,
        expect: Expect,
        cancel: &CancellationToken,
        f: impl FnOnce(Python<'_>) -> R + Send + 'static,
    ) -> Result<R, JobError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = oneshot::channel();
        let work: Work = Box::new(move |py| {
            let _ = tx.send(f(py));
        });
        self.tx.send(Job { id, work }).map_err(|_| JobError::Lost)?;
        let mut guard = InterruptOnDrop { workers: self.clone(), id, armed: true };
        // A quick job (a few microseconds of Python) is usually done within the spin; picking its
        // result up without sleeping saves two thread wake-ups.
        let until = Instant::now() + if expect == Expect::Quick { CALLER_SPIN } else { Duration::ZERO };
        while Instant::now() < until && !cancel.is_cancelled() {
            match rx.try_recv() {
                Ok(r) => {
                    guard.armed = false;
                    return Ok(r);
                }
                Err(oneshot::error::TryRecvError::Closed) => break,
                Err(oneshot::error::TryRecvError::Empty) => tokio::task::yield_now().await,
            }
        }
        let result = tokio::select! {
            r = &mut rx => r.map_err(|_| JobError::Lost),
            () = cancel.cancelled() => {
                self.interrupt(id);
                Err(JobError::Cancelled)
            }
        };
        guard.armed = false;
        result
    }

    /// Raises `Cancelled` in the worker running job `id`, if one still is. Blocks for the GIL,
    /// so async callers go through [`InterruptOnDrop`] or `spawn_blocking`.
    fn interrupt_now(&self, id: u64) {
        Python::attach(|py| {
            for slot in &self.slots {
                // Checked with the GIL held: the worker only changes `current` with the GIL held,
                // so the job cannot finish between this check and the call below.
                if slot.current.load(Ordering::SeqCst) == id {
                    let thread = slot.thread.load(Ordering::SeqCst) as std::ffi::c_long;
                    // SAFETY: the GIL is held; `cancelled` is a live exception class.
                    unsafe { ffi::PyThreadState_SetAsyncExc(thread, self.cancelled.bind(py).as_ptr()) };
                }
            }
        });
    }

    fn interrupt(self: &Arc<Self>, id: u64) {
        let workers = self.clone();
        let blocking = move || workers.interrupt_now(id);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(blocking)),
            Err(_) => blocking(),
        }
    }
}

/// Interrupts the job if the awaiting future is dropped before it finishes (a timed-out or
/// abandoned execution).
struct InterruptOnDrop {
    workers: Arc<Workers>,
    id: u64,
    armed: bool,
}

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.workers.interrupt(self.id);
        }
    }
}

/// How long a worker that just finished a job keeps looking for the next one before it sleeps:
/// under load, jobs follow each other closely and a sleeping thread costs a wake-up (several
/// microseconds) per job.
const WORKER_SPIN: Duration = Duration::from_micros(50);
/// How long a caller keeps polling for a quick job's result before it sleeps on the channel.
/// A caller whose jobs take longer does not poll ([`Expect::Slow`]): `bench/speech.py`'s
/// recognition stream (about 2 ms of pocketsphinx per 20 ms chunk) spent this much CPU per
/// chunk polling in vain.
pub const CALLER_SPIN: Duration = Duration::from_micros(30);

fn next_job(rx: &Receiver<Job>) -> Result<Job, crossbeam_channel::RecvError> {
    let until = Instant::now() + WORKER_SPIN;
    while Instant::now() < until {
        match rx.try_recv() {
            Ok(job) => return Ok(job),
            Err(crossbeam_channel::TryRecvError::Disconnected) => return Err(crossbeam_channel::RecvError),
            Err(crossbeam_channel::TryRecvError::Empty) => std::hint::spin_loop(),
        }
    }
    rx.recv()
}

/// A worker stays attached to the interpreter for its whole life, releasing the GIL only while
/// it waits for a job: attaching afresh for every job would create and destroy a Python thread
/// state (and its frame stack mappings) each time.
fn run_worker(rx: &Receiver<Job>, slot: &Slot) {
    Python::attach(|py| {
        // SAFETY: the thread is attached to the interpreter.
        slot.thread.store(unsafe { ffi::PyThread_get_thread_ident() } as u64, Ordering::SeqCst);
        while let Ok(job) = py.detach(|| next_job(rx)) {
            slot.current.store(job.id, Ordering::SeqCst);
            (job.work)(py);
            // Drop an interruption that arrived after the job's last bytecode.
            let thread = slot.thread.load(Ordering::SeqCst) as std::ffi::c_long;
            // SAFETY: the GIL is held; a NULL exception clears the thread's pending one.
            unsafe { ffi::PyThreadState_SetAsyncExc(thread, std::ptr::null_mut()) };
            slot.current.store(0, Ordering::SeqCst);
        }
    });
}
