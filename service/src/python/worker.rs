//! Dedicated threads that run Python, fed by a channel.
//!
//! Async callers hand a job to the pool and await its result; no reactor thread ever holds the
//! GIL. A job can be interrupted while it runs: the canceller attaches to the interpreter and
//! raises `remotemedia_nodes.Cancelled` in the worker's thread (`PyThreadState_SetAsyncExc`),
//! which stops pure-Python loops at their next bytecode. The worker then clears any such
//! exception left over before it takes the next job.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

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
    queue: Arc<Queue>,
    slots: Vec<Arc<Slot>>,
    next_id: AtomicU64,
    cancelled: Py<PyAny>,
}

impl Workers {
    /// Starts `count` worker threads. `cancelled` is the exception class raised to interrupt.
    pub fn start(count: usize, cancelled: Py<PyAny>) -> Arc<Self> {
        let slots: Vec<Arc<Slot>> = (0..count.max(1)).map(|_| Arc::new(Slot::default())).collect();
        let queue = Arc::new(Queue::new(slots.len()));
        for (i, slot) in slots.iter().enumerate() {
            let (queue, slot) = (queue.clone(), slot.clone());
            std::thread::Builder::new()
                .name(format!("python-{i}"))
                .spawn(move || run_worker(&queue, &slot))
                .expect("the OS can start a worker thread");
        }
        Arc::new(Self { queue, slots, next_id: AtomicU64::new(1), cancelled })
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
        let prompt = self.queue.push(Job { id, work }).map_err(|_| JobError::Lost)?;
        let mut guard = InterruptOnDrop { workers: self.clone(), id, armed: true };
        // A quick job (a few microseconds of Python) that an awake worker takes at once is usually
        // done within the spin; picking its result up without sleeping saves two thread wake-ups.
        // A job that has to wake a worker (tens of microseconds) or wait behind others is awaited
        // asleep. The spin holds this runtime thread for at most CALLER_SPIN: yielding to the
        // scheduler between polls woke the other runtime thread each time (a futex call, 4 % of
        // the server's CPU with 20 live streams through a Python node).
        let spin = expect == Expect::Quick && prompt;
        let until = Instant::now() + if spin { CALLER_SPIN } else { Duration::ZERO };
        while Instant::now() < until && !cancel.is_cancelled() {
            match rx.try_recv() {
                Ok(r) => {
                    guard.armed = false;
                    return Ok(r);
                }
                Err(oneshot::error::TryRecvError::Closed) => break,
                Err(oneshot::error::TryRecvError::Empty) => std::hint::spin_loop(),
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

impl Drop for Workers {
    /// Ends the worker threads once the queue is empty.
    fn drop(&mut self) {
        self.queue.close();
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
/// microseconds) per job. A worker spins only while that pays (see [`Queue::next`]).
const WORKER_SPIN: Duration = Duration::from_micros(50);
/// How long a caller keeps polling for a quick job's result before it sleeps on the channel.
/// A caller whose jobs take longer does not poll ([`Expect::Slow`]): `bench/speech.py`'s
/// recognition stream (about 2 ms of pocketsphinx per 20 ms chunk) spent this much CPU per
/// chunk polling in vain. Nor does one whose job has to wake a sleeping worker first.
pub const CALLER_SPIN: Duration = Duration::from_micros(30);

/// The jobs waiting for a worker: a mutex and a condition variable rather than a channel, so
/// that a worker with nothing to do goes to sleep at once (crossbeam's blocking receive first
/// yields its core several times, `sched_yield` calls that took 5 % of the server's CPU with 20
/// live streams through a Python node), and a job costs a wake-up only when no worker is polling.
struct Queue {
    /// The number of workers taking jobs from the queue.
    workers: usize,
    pending: Mutex<Pending>,
    ready: Condvar,
    /// Jobs in the queue, read without the lock by polling workers.
    queued: AtomicUsize,
    /// Workers polling for their next job (see [`Queue::next`]).
    polling: AtomicUsize,
}

#[derive(Default)]
struct Pending {
    jobs: VecDeque<Job>,
    /// Workers asleep on `ready`.
    sleeping: usize,
    closed: bool,
}

impl Queue {
    fn new(workers: usize) -> Self {
        Self {
            workers,
            pending: Mutex::default(),
            ready: Condvar::new(),
            queued: AtomicUsize::new(0),
            polling: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`, waking a sleeping worker unless one is polling for work (it takes the job,
    /// or checks the queue once more before it sleeps). Says whether the job is likely to start
    /// at once: nothing queued before it and a worker awake (polling, or finishing a job and
    /// about to poll). Gives the job back once the queue is closed.
    fn push(&self, job: Job) -> Result<bool, Job> {
        let mut pending = self.lock();
        if pending.closed {
            return Err(job);
        }
        let prompt = pending.jobs.is_empty() && pending.sleeping < self.workers;
        pending.jobs.push_back(job);
        self.queued.fetch_add(1, Ordering::Relaxed);
        // A poller that stops polling counts itself out before it takes the lock to sleep, so
        // under this lock a count of 0 means no worker would see the job without a wake-up.
        let wake = pending.sleeping > 0 && self.polling.load(Ordering::Relaxed) == 0;
        drop(pending);
        if wake {
            self.ready.notify_one();
        }
        Ok(prompt)
    }

    fn pop(&self, pending: &mut Pending) -> Option<Job> {
        let job = pending.jobs.pop_front()?;
        self.queued.fetch_sub(1, Ordering::Relaxed);
        Some(job)
    }

    /// Stops the workers once they have taken the jobs already queued.
    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Takes the next job, polling the queue for [`WORKER_SPIN`] first when `spin` is set, and
    /// says how long the wait took; `None` once the queue is closed and empty. A worker spins
    /// again only if its last wait was within [`WORKER_SPIN`], so that it would have caught that
    /// job: live streams hand a worker one chunk every 20 ms or so, and a spin after every job
    /// burnt 50 µs of CPU per chunk in vain, while under load (jobs queued back to back) the
    /// worker keeps spinning and saves each job's wake-up (`python bench/ab_cost.py OLD NEW
    /// --mode python`, BENCHMARKS.md).
    fn next(&self, spin: bool) -> Option<(Job, Duration)> {
        let started = Instant::now();
        if spin {
            self.polling.fetch_add(1, Ordering::Relaxed);
            let until = started + WORKER_SPIN;
            let polled = loop {
                if self.queued.load(Ordering::Relaxed) > 0
                    && let Some(job) = self.pop(&mut self.lock())
                {
                    break Some(job);
                }
                if Instant::now() >= until {
                    break None;
                }
                std::hint::spin_loop();
            };
            self.polling.fetch_sub(1, Ordering::Relaxed);
            if let Some(job) = polled {
                return Some((job, started.elapsed()));
            }
        }
        let mut pending = self.lock();
        loop {
            if let Some(job) = self.pop(&mut pending) {
                return Some((job, started.elapsed()));
            }
            if pending.closed {
                return None;
            }
            pending.sleeping += 1;
            pending = self.ready.wait(pending).unwrap_or_else(PoisonError::into_inner);
            pending.sleeping -= 1;
        }
    }
}

/// Whether a worker polls for its next job before it sleeps: after a wait that polling caught
/// (jobs coming back to back), and on every [`SpinPolicy::PROBE_EVERY`]th wait besides. Without
/// the probe a worker would never find out that its jobs come close together again: once it
/// sleeps, each wait includes its own wake-up and the caller's (tens of microseconds each on a
/// virtual machine) and looks long (back-to-back calls took 77 µs each instead of 18 µs,
/// `call_20ms_chunk` in `cargo bench --bench python`).
struct SpinPolicy {
    /// Whether the last wait was within [`WORKER_SPIN`].
    last_short: bool,
    /// Waits since the worker last polled.
    unpolled: u32,
}

impl Default for SpinPolicy {
    fn default() -> Self {
        Self { last_short: true, unpolled: 0 }
    }
}

impl SpinPolicy {
    /// A probe every 8 waits costs a sparse load one spin in 8 (about 6 µs a job on average).
    const PROBE_EVERY: u32 = 8;

    /// Whether to poll before sleeping on this wait.
    fn now(&mut self) -> bool {
        let spin = self.last_short || self.unpolled + 1 >= Self::PROBE_EVERY;
        self.unpolled = if spin { 0 } else { self.unpolled + 1 };
        spin
    }

    /// Records how long the wait took.
    fn waited(&mut self, waited: Duration) {
        self.last_short = waited <= WORKER_SPIN;
    }
}

/// A worker stays attached to the interpreter for its whole life, releasing the GIL only while
/// it waits for a job: attaching afresh for every job would create and destroy a Python thread
/// state (and its frame stack mappings) each time.
fn run_worker(queue: &Queue, slot: &Slot) {
    Python::attach(|py| {
        // SAFETY: the thread is attached to the interpreter.
        slot.thread.store(unsafe { ffi::PyThread_get_thread_ident() } as u64, Ordering::SeqCst);
        let mut spin = SpinPolicy::default();
        while let Some((job, waited)) = py.detach(|| queue.next(spin.now())) {
            spin.waited(waited);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64) -> Job {
        Job { id, work: Box::new(|_| {}) }
    }

    #[test]
    fn a_queued_job_is_taken_within_the_spin_so_the_worker_keeps_spinning() {
        let queue = Queue::new(1);
        assert!(queue.push(job(7)).ok().unwrap(), "an awake worker and nothing queued before it");
        assert!(!queue.push(job(70)).ok().unwrap(), "queued behind another job");
        assert_eq!(queue.next(true).unwrap().0.id, 7);
        let (taken, waited) = queue.next(true).unwrap();
        assert_eq!(taken.id, 70);
        assert!(waited <= WORKER_SPIN, "waited {waited:?}");
        assert_eq!(queue.polling.load(Ordering::Relaxed), 0, "no longer counted as polling");
        assert_eq!(queue.queued.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_job_that_comes_after_the_spin_wakes_the_sleeping_worker_and_ends_its_spinning() {
        let queue = Arc::new(Queue::new(1));
        // A job that comes well after the spin window, as a live stream's next chunk does; it is
        // pushed once the worker is asleep, so the push must wake it.
        let later = WORKER_SPIN * 40;
        let pusher = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let since = Instant::now();
                while queue.lock().sleeping == 0 || since.elapsed() < later {
                    std::thread::yield_now();
                }
                let prompt = queue.push(job(8)).ok().unwrap();
                assert!(!prompt, "the only worker is asleep: it takes a wake-up");
            })
        };
        let (taken, waited) = queue.next(true).unwrap();
        assert_eq!(taken.id, 8);
        assert!(waited >= later, "waited {waited:?}");
        assert!(waited > WORKER_SPIN, "so the worker does not spin before its next job");
        pusher.join().unwrap();
        assert_eq!(queue.lock().sleeping, 0);
    }

    #[test]
    fn a_worker_whose_waits_are_long_polls_only_to_probe_and_polls_again_once_they_are_short() {
        let mut spin = SpinPolicy::default();
        assert!(spin.now(), "a new worker polls");
        let mut pattern = Vec::new();
        for _ in 0..16 {
            spin.waited(WORKER_SPIN * 100);
            pattern.push(spin.now());
        }
        let probes = pattern.iter().filter(|&&p| p).count();
        assert_eq!(probes, 2, "one wait in {} polls: {pattern:?}", SpinPolicy::PROBE_EVERY);
        assert!(!pattern[0] && pattern[SpinPolicy::PROBE_EVERY as usize - 1]);
        spin.waited(WORKER_SPIN / 2);
        assert!(spin.now() && spin.now(), "a short wait turns polling back on");
    }

    #[test]
    fn closing_lets_the_workers_take_what_is_queued_then_ends_them_and_refuses_new_jobs() {
        let queue = Arc::new(Queue::new(1));
        queue.push(job(9)).ok().unwrap();
        queue.close();
        assert_eq!(queue.next(false).unwrap().0.id, 9);
        assert!(queue.next(true).is_none());
        assert_eq!(queue.push(job(10)).err().map(|j| j.id), Some(10));
        // A worker asleep when the queue closes wakes and ends.
        let queue = Arc::new(Queue::new(1));
        let worker = {
            let queue = queue.clone();
            std::thread::spawn(move || queue.next(false).is_none())
        };
        while queue.lock().sleeping == 0 {
            std::thread::yield_now();
        }
        queue.close();
        assert!(worker.join().unwrap());
    }
}
