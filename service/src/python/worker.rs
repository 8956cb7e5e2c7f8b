//! Dedicated threads that run Python, fed by a job queue.
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
    /// Likely done within [`CALLER_SPIN`]: poll for the result before sleeping, when a worker
    /// is awake to take the job at once.
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
    /// The job panicked, or the workers have stopped.
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
    /// inside `f`). A job still queued then is never run.
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
            // A caller that gave up (cancelled, or timed out) while the job was queued wants
            // nothing run: the job would only hold its node's lock and a worker.
            if !tx.is_closed() {
                let _ = tx.send(f(py));
            }
        });
        let prompt = self.queue.push(Job { id, work }).map_err(|_| JobError::Lost)?;
        let mut guard = InterruptOnDrop { workers: self.clone(), id, armed: true };
        // A quick job (a few microseconds of Python) with nothing queued before it and a worker
        // awake is usually done within the spin; picking its result up without sleeping saves
        // two thread wake-ups. A job that has to wake a worker (tens of microseconds) or wait
        // behind others is awaited asleep. The spin holds this runtime thread for at most CALLER_SPIN: yielding to the
        // scheduler between polls woke the other runtime thread each time (a futex call, 4 % of
        // the server's CPU with 20 live streams through a Python node).
        let spin = expect == Expect::Quick && prompt;
        if spin && let Some(r) = poll_for(&mut rx, Instant::now() + CALLER_SPIN, cancel).await {
            guard.armed = false;
            return Ok(r);
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

/// Polls `rx` for a result until `until` or until `cancel` fires; `None` if none came by then.
/// A result picked up here was never awaited, so the call is counted against the task's
/// budget: a loop of quick calls still lets its runtime thread serve the other tasks.
async fn poll_for<R>(rx: &mut oneshot::Receiver<R>, until: Instant, cancel: &CancellationToken) -> Option<R> {
    while Instant::now() < until && !cancel.is_cancelled() {
        match rx.try_recv() {
            Ok(r) => {
                tokio::task::coop::consume_budget().await;
                return Some(r);
            }
            Err(oneshot::error::TryRecvError::Closed) => break,
            Err(oneshot::error::TryRecvError::Empty) => std::hint::spin_loop(),
        }
    }
    None
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
/// microseconds) per job. A worker spins only while that pays (see [`SpinPolicy`]).
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
    /// Workers running a job: counted when they take it, under the lock, and out when it
    /// ends ([`Queue::done`]).
    busy: AtomicUsize,
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
            busy: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`, waking a sleeping worker unless the workers polling for work are enough to
    /// take every queued job (each takes one, or checks the queue once more before it sleeps).
    /// Says whether the job is likely to start at once: nothing queued before it and a worker
    /// neither asleep nor running a job (polling, or between a job and its next poll). Gives
    /// the job back once the queue is closed.
    fn push(&self, job: Job) -> Result<bool, Job> {
        let mut pending = self.lock();
        if pending.closed {
            return Err(job);
        }
        // A worker busy with a long job (an inference) would leave a quick job's caller spinning
        // in vain for CALLER_SPIN.
        let prompt = pending.jobs.is_empty() && pending.sleeping + self.busy.load(Ordering::Relaxed) < self.workers;
        pending.jobs.push_back(job);
        self.queued.fetch_add(1, Ordering::Relaxed);
        // A poller that stops polling counts itself out before it takes the lock to sleep, so
        // under this lock the pollers counted are workers that will each still take a job.
        let wake = pending.sleeping > 0 && pending.jobs.len() > self.polling.load(Ordering::Relaxed);
        drop(pending);
        if wake {
            self.ready.notify_one();
        }
        Ok(prompt)
    }

    /// Takes the first queued job for a worker, which runs it and then calls [`Queue::done`].
    fn pop(&self, pending: &mut Pending) -> Option<Job> {
        let job = pending.jobs.pop_front()?;
        self.queued.fetch_sub(1, Ordering::Relaxed);
        self.busy.fetch_add(1, Ordering::Relaxed);
        Some(job)
    }

    /// A worker finished the job it took.
    fn done(&self) {
        self.busy.fetch_sub(1, Ordering::Relaxed);
    }

    /// Stops the workers once they have taken the jobs already queued.
    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Takes the next job, polling the queue for `spin` first, then asleep; says whether the
    /// job came while polling. `None` once the queue is closed and empty.
    fn next(&self, spin: Duration) -> Option<(Job, bool)> {
        let started = Instant::now();
        if !spin.is_zero() {
            self.polling.fetch_add(1, Ordering::Relaxed);
            let until = started + spin;
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
                return Some((job, true));
            }
        }
        let mut pending = self.lock();
        loop {
            if let Some(job) = self.pop(&mut pending) {
                return Some((job, false));
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

/// How long a worker polls for its next job before it sleeps. Live streams hand a worker one
/// chunk every 20 ms or so, and a 50 µs spin after every job burnt that CPU per chunk in vain;
/// under load (jobs back to back) a spin saves each job's wake-up. So a worker spins
/// [`WORKER_SPIN`] only while its last job came while it polled, and besides probes with a
/// longer spin every [`SpinPolicy::PROBE_EVERY`]th wait. Without the probe a worker would never
/// find out that its jobs come close together again: once it sleeps, each wait includes its own
/// wake-up and its caller's (tens of microseconds each on a virtual machine), so back-to-back
/// calls took 77 µs each instead of 18 µs (`call_20ms_chunk` in `cargo bench --bench python`).
/// Server CPU per chunk of 20 live streams through a Python node: `python bench/ab_cost.py OLD
/// NEW --mode python`, BENCHMARKS.md.
struct SpinPolicy {
    /// Whether the last job came while the worker polled.
    caught: bool,
    /// Waits since the worker last probed.
    unprobed: u32,
}

impl Default for SpinPolicy {
    fn default() -> Self {
        Self { caught: true, unprobed: 0 }
    }
}

impl SpinPolicy {
    /// A probe every 16 waits costs a sparse load one probe's spin in 16 (about 12 µs a job).
    const PROBE_EVERY: u32 = 16;
    /// A probe outlasts a caller's wake-up after its previous result, so that the job it sends
    /// next comes while the worker still polls.
    const PROBE_SPIN: Duration = Duration::from_micros(200);

    /// How long to poll before sleeping on this wait.
    fn spin(&mut self) -> Duration {
        self.unprobed += 1;
        if self.unprobed >= Self::PROBE_EVERY {
            self.unprobed = 0;
            return Self::PROBE_SPIN;
        }
        if self.caught { WORKER_SPIN } else { Duration::ZERO }
    }

    /// Records whether the job came while the worker polled.
    fn took(&mut self, caught: bool) {
        self.caught = caught;
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
        while let Some((job, caught)) = py.detach(|| queue.next(spin.spin())) {
            spin.took(caught);
            slot.current.store(job.id, Ordering::SeqCst);
            // A panic in a job ends that job (its caller gets `Lost`), not the worker.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.work)(py)));
            // Drop an interruption that arrived after the job's last bytecode.
            let thread = slot.thread.load(Ordering::SeqCst) as std::ffi::c_long;
            // SAFETY: the GIL is held; a NULL exception clears the thread's pending one.
            unsafe { ffi::PyThreadState_SetAsyncExc(thread, std::ptr::null_mut()) };
            slot.current.store(0, Ordering::SeqCst);
            queue.done();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64) -> Job {
        Job { id, work: Box::new(|_| {}) }
    }

    /// Waits (yielding) until `queue` has `n` workers asleep.
    fn asleep(queue: &Queue, n: usize) {
        while queue.lock().sleeping != n {
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_job_queued_while_the_worker_polls_is_caught_by_the_poll() {
        let queue = Queue::new(1);
        assert!(queue.push(job(7)).ok().unwrap(), "an awake worker and nothing queued before it");
        assert!(!queue.push(job(70)).ok().unwrap(), "queued behind another job");
        assert_eq!(queue.next(WORKER_SPIN).map(|(j, caught)| (j.id, caught)), Some((7, true)));
        queue.done();
        assert_eq!(queue.next(WORKER_SPIN).map(|(j, caught)| (j.id, caught)), Some((70, true)));
        queue.done();
        assert_eq!(queue.polling.load(Ordering::Relaxed), 0, "no longer counted as polling");
        assert_eq!(queue.queued.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_job_that_comes_after_the_spin_wakes_the_sleeping_worker() {
        let queue = Arc::new(Queue::new(1));
        let pusher = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                asleep(&queue, 1);
                let prompt = queue.push(job(8)).ok().unwrap();
                assert!(!prompt, "the only worker is asleep: it takes a wake-up");
            })
        };
        let (taken, caught) = queue.next(WORKER_SPIN).unwrap();
        assert_eq!(taken.id, 8);
        assert!(!caught, "it came after the spin, so the worker does not spin before its next job");
        pusher.join().unwrap();
        assert_eq!(queue.lock().sleeping, 0);
    }

    #[test]
    fn a_polling_worker_holds_back_one_wake_up_per_job_it_can_take_and_no_more() {
        // One worker polling (counted by hand here) and one asleep: two jobs pushed together
        // are one too many for the poller, so the sleeper must be woken for the second.
        let queue = Arc::new(Queue::new(2));
        let (woke, woken) = std::sync::mpsc::channel();
        let sleeper = {
            let queue = queue.clone();
            std::thread::spawn(move || woke.send(queue.next(Duration::ZERO).map(|(j, _)| j.id)).unwrap())
        };
        asleep(&queue, 1);
        queue.polling.fetch_add(1, Ordering::Relaxed);
        queue.push(job(1)).ok().unwrap();
        assert_eq!(queue.lock().sleeping, 1, "the poller takes the first job: no wake-up");
        queue.push(job(2)).ok().unwrap();
        let woken = woken
            .recv_timeout(Duration::from_secs(30))
            .expect("the sleeper was woken for the second job")
            .expect("and took a job");
        sleeper.join().unwrap();
        let polled = queue.pop(&mut queue.lock()).expect("one job is left for the poller").id;
        let mut taken = [woken, polled];
        taken.sort_unstable();
        assert_eq!(taken, [1, 2], "each job taken once");
        queue.polling.fetch_sub(1, Ordering::Relaxed);
    }

    #[test]
    fn a_job_is_not_prompt_while_every_worker_is_running_one() {
        // Two workers, driven by hand: each `next` is a worker taking a job, each `done` one
        // finishing it.
        let queue = Queue::new(2);
        queue.push(job(1)).ok().unwrap();
        queue.next(Duration::ZERO).unwrap();
        assert!(queue.push(job(2)).ok().unwrap(), "the other worker is free");
        queue.next(Duration::ZERO).unwrap();
        assert!(!queue.push(job(3)).ok().unwrap(), "both workers are running a job");
        queue.done();
        queue.next(Duration::ZERO).unwrap();
        queue.done();
        queue.done();
        assert_eq!(queue.busy.load(Ordering::Relaxed), 0, "each job counted in once and out once");
        assert!(queue.push(job(4)).ok().unwrap(), "both workers free and nothing queued");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_result_picked_up_while_polling_counts_against_the_tasks_budget() {
        let none = CancellationToken::new();
        let mut calls = Box::pin(async {
            for _ in 0..1_000 {
                let (tx, mut rx) = oneshot::channel();
                tx.send(()).unwrap();
                assert!(poll_for(&mut rx, Instant::now() + Duration::from_secs(60), &none).await.is_some());
            }
        });
        let mut polls = 0;
        std::future::poll_fn(|cx| {
            polls += 1;
            calls.as_mut().poll(cx)
        })
        .await;
        assert!(polls > 1, "a thousand results that were ready never gave the runtime its thread back");
    }

    #[test]
    fn a_worker_whose_jobs_come_asleep_polls_only_to_probe_and_polls_again_once_one_is_caught() {
        let mut spin = SpinPolicy::default();
        assert_eq!(spin.spin(), WORKER_SPIN, "a new worker polls");
        let mut pattern = Vec::new();
        for _ in 0..2 * SpinPolicy::PROBE_EVERY {
            spin.took(false);
            pattern.push(spin.spin());
        }
        let probes = pattern.iter().filter(|&&d| d == SpinPolicy::PROBE_SPIN).count();
        assert_eq!(probes, 2, "one wait in {} probes: {pattern:?}", SpinPolicy::PROBE_EVERY);
        assert!(pattern.iter().all(|&d| d.is_zero() || d == SpinPolicy::PROBE_SPIN), "{pattern:?}");
        spin.took(true);
        assert_eq!(spin.spin(), WORKER_SPIN, "a job caught while polling turns polling back on");
    }

    #[test]
    fn closing_lets_the_workers_take_what_is_queued_then_ends_them_and_refuses_new_jobs() {
        let queue = Arc::new(Queue::new(1));
        queue.push(job(9)).ok().unwrap();
        queue.close();
        assert_eq!(queue.next(Duration::ZERO).unwrap().0.id, 9);
        assert!(queue.next(WORKER_SPIN).is_none());
        assert_eq!(queue.push(job(10)).err().map(|j| j.id), Some(10));
        // A worker asleep when the queue closes wakes and ends.
        let queue = Arc::new(Queue::new(1));
        let worker = {
            let queue = queue.clone();
            std::thread::spawn(move || queue.next(Duration::ZERO).is_none())
        };
        asleep(&queue, 1);
        queue.close();
        assert!(worker.join().unwrap());
    }
}
