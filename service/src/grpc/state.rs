//! State shared by every RPC: the engine, limits, in-flight work, stream sessions and the
//! shutdown signals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::observe;
use super::status::ServiceError;
use crate::config::Config;
use crate::graph::{Engine, ExecError, Manifest, Pipeline, RequestShape, ValidationError};

/// Delay suggested to clients turned away because the server is at its concurrency cap.
pub const OVERLOAD_RETRY_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

pub struct AppState {
    pub engine: Engine,
    /// What `GetVersion` answers (built once: the catalogue does not change while serving).
    pub version_info: crate::proto::VersionInfo,
    pub config: Config,
    pub sessions: Sessions,
    pub inflight: InFlight,
    /// Cancelled when shutdown starts: new work is refused and streams wind down.
    pub draining: CancellationToken,
    /// Cancelled when the grace period runs out: everything still running is cancelled.
    pub abort: CancellationToken,
    executions: Arc<Semaphore>,
    streams: Arc<Semaphore>,
}

impl AppState {
    pub fn new(engine: Engine, config: Config) -> Self {
        let executions = Arc::new(Semaphore::new(config.limits.max_concurrent_executions));
        let streams = Arc::new(Semaphore::new(config.limits.max_concurrent_streams));
        Self {
            version_info: super::service::version_info(engine.registry()),
            engine,
            config,
            sessions: Sessions::default(),
            inflight: InFlight::default(),
            draining: CancellationToken::new(),
            abort: CancellationToken::new(),
            executions,
            streams,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Builds a request's or a stream's pipeline within `limit` (a Python node is made on a
    /// Python worker, which may wait for the GIL as long as another node's native call holds
    /// it): the time limit, counted and logged, or the end of a shutdown's grace period ends
    /// the wait. The inner result is what validation and building said.
    pub async fn build_within(
        &self,
        manifest: &Manifest,
        shape: &RequestShape,
        limit: Duration,
    ) -> Result<Result<Pipeline, ValidationError>, ServiceError> {
        tokio::select! {
            built = tokio::time::timeout(limit, self.engine.build(manifest, shape)) => built.map_err(|_| {
                let e = ExecError::Timeout { limit, running: Vec::new() };
                observe::exec_failed(&e);
                e.into()
            }),
            () = self.abort.cancelled() => Err(ServiceError::ShutDown),
        }
    }

    /// A slot for one execution, or `Overloaded` with a retry delay when all are taken.
    pub fn acquire_execution(&self) -> Result<OwnedSemaphorePermit, ServiceError> {
        self.executions.clone().try_acquire_owned().map_err(|_| {
            observe::limit_rejected("max_concurrent_executions");
            ServiceError::Overloaded {
                message: format!(
                    "the server is running its maximum of {} concurrent executions (max_concurrent_executions); retry shortly",
                    self.config.limits.max_concurrent_executions
                ),
                limit: "max_concurrent_executions",
                retry_after: OVERLOAD_RETRY_AFTER,
            }
        })
    }

    /// A slot for one stream session, or `Overloaded` with a retry delay when all are taken.
    pub fn acquire_stream(&self) -> Result<OwnedSemaphorePermit, ServiceError> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            observe::limit_rejected("max_concurrent_streams");
            ServiceError::Overloaded {
                message: format!(
                    "the server has its maximum of {} concurrent streams open (max_concurrent_streams); retry shortly",
                    self.config.limits.max_concurrent_streams
                ),
                limit: "max_concurrent_streams",
                retry_after: OVERLOAD_RETRY_AFTER,
            }
        })
    }
}

/// Counts RPCs in progress so shutdown can wait for them.
#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// Holds one in-flight slot; releasing it on drop keeps the count right on every exit path.
pub struct InFlightGuard<'a>(&'a InFlight);

impl InFlight {
    pub fn enter(&self) -> InFlightGuard<'_> {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self)
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Resolves once nothing is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// An open stream session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub pipeline: String,
    pub started: Instant,
    pub cancel: CancellationToken,
}

/// Open stream sessions by id.
#[derive(Default)]
pub struct Sessions {
    open: Arc<Mutex<HashMap<String, SessionInfo>>>,
}

/// Removes its session when dropped, whichever way the session ends.
pub struct SessionGuard {
    open: Arc<Mutex<HashMap<String, SessionInfo>>>,
    id: String,
}

/// The map of open sessions. Inserts and removes cannot leave it inconsistent, so a poisoned
/// lock is usable.
fn lock(open: &Mutex<HashMap<String, SessionInfo>>) -> std::sync::MutexGuard<'_, HashMap<String, SessionInfo>> {
    open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sessions {
    pub fn register(&self, id: String, info: SessionInfo) -> SessionGuard {
        lock(&self.open).insert(id.clone(), info);
        SessionGuard { open: self.open.clone(), id }
    }

    pub fn count(&self) -> usize {
        lock(&self.open).len()
    }

    pub fn ids(&self) -> Vec<String> {
        lock(&self.open).keys().cloned().collect()
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        lock(&self.open).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_idle_resolves_when_the_last_guard_drops() {
        let f = Arc::new(InFlight::default());
        let g1 = f.enter();
        let g2 = f.enter();
        assert_eq!(f.count(), 2);
        let waiter = {
            let f = f.clone();
            tokio::spawn(async move { f.wait_idle().await })
        };
        drop(g1);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(g2);
        waiter.await.unwrap();
        assert_eq!(f.count(), 0);
    }

    #[test]
    fn sessions_are_removed_by_their_guard() {
        let s = Sessions::default();
        let info = SessionInfo { pipeline: "p".into(), started: Instant::now(), cancel: CancellationToken::new() };
        let g = s.register("a".into(), info.clone());
        let h = s.register("b".into(), info);
        assert_eq!(s.count(), 2);
        drop(g);
        assert_eq!(s.ids(), ["b"]);
        drop(h);
        assert_eq!(s.count(), 0);
    }
}
