//! The server's side of model hosting (`remotemedia_nodes.models`).
//!
//! The Python host keeps the models and their pools; this module gives it the server's
//! configuration, receives its measurements (through two functions it calls, installed at
//! start-up) as Prometheus metrics, and parks calls that found a pool busy: such a call waits
//! here, on the async side, for the pool's next release (no Python worker waits), then runs
//! again, until `model_wait_ms` has passed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyDict, PyTuple};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub const MODEL_LOADS_TOTAL: &str = "remotemedia_model_loads_total";
pub const MODEL_LOAD_DURATION: &str = "remotemedia_model_load_duration_seconds";
pub const MODEL_INSTANCES: &str = "remotemedia_model_instances";
pub const MODEL_INSTANCES_IN_USE: &str = "remotemedia_model_instances_in_use";
pub const MODEL_WAIT_DURATION: &str = "remotemedia_model_wait_duration_seconds";
pub const MODEL_POOL_EXHAUSTED_TOTAL: &str = "remotemedia_model_pool_exhausted_total";
pub const MODEL_INFERENCE_DURATION: &str = "remotemedia_model_inference_duration_seconds";

/// The limit named when a pool stays busy too long (a `remotemedia_limit_rejections_total` label).
pub const WAIT_LIMIT: &str = "model_wait_ms";

/// Model hosting settings from the server configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSettings {
    /// Instances of each named pooled model (the others keep their own default).
    pub pools: Vec<(String, usize)>,
    /// How long a call waits for a free instance before RESOURCE_LIMIT.
    pub wait: Duration,
    /// Models loaded before the server reports SERVING.
    pub preload: Vec<String>,
}

impl Default for ModelSettings {
    /// The configuration's defaults: every pool its own size, a 2 s wait, nothing preloaded.
    fn default() -> Self {
        Self { pools: Vec::new(), wait: Duration::from_millis(2_000), preload: Vec::new() }
    }
}

/// A registered model, as `remotemedia_nodes.registry.models_json` describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub pooled: bool,
    pub pool_size: usize,
    pub description: String,
    /// The node types that use it.
    pub node_types: Vec<String>,
}

/// The models of this process (known once the interpreter started): the only label values
/// the model metrics take.
static MODELS: OnceLock<Vec<ModelInfo>> = OnceLock::new();
/// The release count of each pool, as the host last reported it; busy calls wait on these.
static RELEASES: Mutex<Option<HashMap<String, watch::Sender<u64>>>> = Mutex::new(None);

pub fn set_models(models: Vec<ModelInfo>) {
    let _ = MODELS.set(models);
}

pub fn models() -> &'static [ModelInfo] {
    MODELS.get().map(Vec::as_slice).unwrap_or_default()
}

fn known(model: &str) -> bool {
    models().iter().any(|m| m.name == model)
}

fn releases<R>(f: impl FnOnce(&mut HashMap<String, watch::Sender<u64>>) -> R) -> R {
    let mut guard = RELEASES.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(HashMap::new))
}

/// The two functions the Python host reports through: `record(kind, model, value[, node_type])`
/// and `released(model, generation)`.
pub fn hooks(py: Python<'_>) -> PyResult<(Bound<'_, PyCFunction>, Bound<'_, PyCFunction>)> {
    let record = PyCFunction::new_closure(
        py,
        Some(c"record"),
        Some(c"Reports a model measurement to the server's metrics."),
        |args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>| -> PyResult<()> {
            let kind: String = args.get_item(0)?.extract()?;
            let model: String = args.get_item(1)?.extract()?;
            let value: f64 = args.get_item(2)?.extract()?;
            let node_type: Option<String> = args.get_item(3).ok().and_then(|v| v.extract().ok());
            record(&kind, &model, value, node_type.as_deref());
            Ok(())
        },
    )?;
    let released = PyCFunction::new_closure(
        py,
        Some(c"released"),
        Some(c"Wakes the calls waiting for an instance of a model."),
        |args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>| -> PyResult<()> {
            let model: String = args.get_item(0)?.extract()?;
            let generation: u64 = args.get_item(1)?.extract()?;
            released(&model, generation);
            Ok(())
        },
    )?;
    Ok((record, released))
}

fn record(kind: &str, model: &str, value: f64, node_type: Option<&str>) {
    if !known(model) {
        return;
    }
    let model = model.to_owned();
    match kind {
        "load" => {
            counter!(MODEL_LOADS_TOTAL, "model" => model.clone()).increment(1);
            histogram!(MODEL_LOAD_DURATION, "model" => model).record(value);
        }
        "instances" => gauge!(MODEL_INSTANCES, "model" => model).set(value),
        "in_use" => gauge!(MODEL_INSTANCES_IN_USE, "model" => model).set(value),
        "wait" => waited(&model, Duration::from_secs_f64(value.max(0.0))),
        "exhausted" => exhausted(&model, Duration::from_secs_f64(value.max(0.0))),
        "inference" => {
            let node_type = node_type.unwrap_or_default();
            if models().iter().any(|m| m.name == model && m.node_types.iter().any(|t| t == node_type)) {
                histogram!(MODEL_INFERENCE_DURATION, "model" => model, "node_type" => node_type.to_owned())
                    .record(value);
            }
        }
        _ => {}
    }
}

/// A call got an instance after waiting `wait` for one.
pub fn waited(model: &str, wait: Duration) {
    if known(model) {
        histogram!(MODEL_WAIT_DURATION, "model" => model.to_owned()).record(wait.as_secs_f64());
    }
}

/// A call waited `wait` in vain (the RPC layer counts the limit rejection when it fails).
pub fn exhausted(model: &str, wait: Duration) {
    if known(model) {
        waited(model, wait);
        counter!(MODEL_POOL_EXHAUSTED_TOTAL, "model" => model.to_owned()).increment(1);
    }
}

fn released(model: &str, generation: u64) {
    releases(|pools| match pools.get(model) {
        Some(tx) => {
            tx.send_if_modified(|g| {
                let newer = generation > *g;
                *g = (*g).max(generation);
                newer
            });
        }
        None => {
            pools.insert(model.to_owned(), watch::channel(generation).0);
        }
    });
}

/// Waits until `model`'s pool has released an instance since release count `generation`, at
/// most until `deadline`. `false` when the deadline passed or `cancel` fired first.
pub async fn wait_for_release(
    model: &str,
    generation: u64,
    deadline: tokio::time::Instant,
    cancel: &CancellationToken,
) -> bool {
    let mut rx = releases(|pools| pools.entry(model.to_owned()).or_insert_with(|| watch::channel(0).0).subscribe());
    tokio::select! {
        r = rx.wait_for(|g| *g > generation) => r.is_ok(),
        () = tokio::time::sleep_until(deadline) => false,
        () = cancel.cancelled() => false,
    }
}

/// Registers every model metric family at 0 for every model (and node type using it), so they
/// are all present from start-up.
pub fn register_metrics() {
    describe_counter!(MODEL_LOADS_TOTAL, "model instances loaded, by model");
    describe_histogram!(MODEL_LOAD_DURATION, metrics::Unit::Seconds, "time to load one model instance, by model");
    describe_gauge!(MODEL_INSTANCES, "model instances loaded now, by model");
    describe_gauge!(MODEL_INSTANCES_IN_USE, "pooled model instances leased now, by model");
    describe_histogram!(
        MODEL_WAIT_DURATION,
        metrics::Unit::Seconds,
        "time calls that found every instance of a pooled model in use waited for one, by model"
    );
    describe_counter!(MODEL_POOL_EXHAUSTED_TOTAL, "calls that found no free instance within model_wait_ms, by model");
    describe_histogram!(
        MODEL_INFERENCE_DURATION,
        metrics::Unit::Seconds,
        "time inside a model's inference, by model and node type"
    );
    for m in models() {
        let name = m.name.clone();
        counter!(MODEL_LOADS_TOTAL, "model" => name.clone()).absolute(0);
        gauge!(MODEL_INSTANCES, "model" => name.clone()).increment(0.0);
        let _ = histogram!(MODEL_LOAD_DURATION, "model" => name.clone());
        // Leases, waits and exhaustion only concern pooled models.
        if m.pooled {
            counter!(MODEL_POOL_EXHAUSTED_TOTAL, "model" => name.clone()).absolute(0);
            gauge!(MODEL_INSTANCES_IN_USE, "model" => name.clone()).increment(0.0);
            let _ = histogram!(MODEL_WAIT_DURATION, "model" => name.clone());
        }
        for node_type in m.node_types.iter().collect::<BTreeSet<_>>() {
            let _ = histogram!(MODEL_INFERENCE_DURATION, "model" => name.clone(), "node_type" => node_type.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{Duration as TokioDuration, Instant};

    #[tokio::test]
    async fn a_waiting_call_wakes_on_the_next_release_only() {
        let cancel = CancellationToken::new();
        let far = Instant::now() + TokioDuration::from_secs(30);
        released("wake-test", 3);
        // A release the call has not seen yet (3 > 2) wakes it at once.
        assert!(wait_for_release("wake-test", 2, far, &cancel).await);
        // One it has seen does not; the next one does.
        let waiter =
            tokio::spawn(async move { wait_for_release("wake-test", 3, far, &CancellationToken::new()).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        released("wake-test", 4);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_call_gives_up_at_its_deadline_or_when_cancelled() {
        let cancel = CancellationToken::new();
        let soon = Instant::now() + TokioDuration::from_millis(300);
        assert!(!wait_for_release("deadline-test", 0, soon, &cancel).await);
        assert!(Instant::now() >= soon);
        cancel.cancel();
        let far = Instant::now() + TokioDuration::from_secs(30);
        assert!(!wait_for_release("deadline-test", 0, far, &cancel).await);
    }
}
